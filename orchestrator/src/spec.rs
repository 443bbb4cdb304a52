//! Devnet specification: YAML parsing and validation.
//!
//! Syntax and shape errors come from `serde_yaml`, which knows the line; semantic errors
//! (an unknown beacon node, `threshold > nodes`, …) are located with [`locate`], a small
//! scanner that maps a field path such as `clusters[0].threshold` to its line in the source.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// Lodestar image used when a beacon node names none.
pub const DEFAULT_LODESTAR_IMAGE: &str = "dvlab/lodestar:1.5.1";

/// A whole devnet, as written in the YAML file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DevnetSpec {
    /// Run name: labels, container and network names derive from it.
    pub name: String,
    /// Chain parameters.
    pub network: NetworkSpec,
    /// Beacon nodes, the first one also runs the keepers.
    pub beacon_nodes: Vec<BeaconNodeSpec>,
    /// Validators that keep the chain final whatever the groups under test do.
    pub keepers: KeepersSpec,
    /// The control group: a plain validator client.
    #[serde(default)]
    pub baseline: Option<BaselineSpec>,
    /// Distributed-validator clusters under test.
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
    /// How long the run lasts.
    pub duration: DurationSpec,
    /// Faults, seeded and relative to genesis.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// Assertions gating the exit code: metric name → comparison such as `">= 0.95"`.
    #[serde(default)]
    pub assertions: BTreeMap<String, String>,
    /// Seed for everything random in the run.
    #[serde(default)]
    pub seed: u64,
}

/// Chain parameters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Consensus preset: `minimal` or `mainnet`.
    pub preset: Preset,
    /// Slot time in seconds.
    pub seconds_per_slot: u64,
    /// Altair fork epoch (sync committees exist from it on).
    #[serde(default)]
    pub altair_fork_epoch: u64,
    /// Seconds between `dvlab up` and genesis.
    pub genesis_delay: u64,
    /// Genesis validator count; defaults to keepers + baseline + cluster validators.
    #[serde(default)]
    pub genesis_validators: Option<u64>,
}

/// Consensus preset.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 8 slots per epoch.
    Minimal,
    /// 32 slots per epoch.
    Mainnet,
}

impl Preset {
    /// Slots per epoch of the preset.
    pub fn slots_per_epoch(self) -> u64 {
        match self {
            Preset::Minimal => 8,
            Preset::Mainnet => 32,
        }
    }
    /// Name as Lodestar's `LODESTAR_PRESET` wants it.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Minimal => "minimal",
            Preset::Mainnet => "mainnet",
        }
    }
}

/// Consensus client kind.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// ChainSafe Lodestar.
    Lodestar,
}

/// One beacon node.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BeaconNodeSpec {
    /// Unique name, e.g. `bn0`.
    pub name: String,
    /// Client implementation.
    pub client: Client,
    /// Image; defaults to [`DEFAULT_LODESTAR_IMAGE`].
    #[serde(default)]
    pub image: Option<String>,
}

/// Keeper validators.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeepersSpec {
    /// Number of keeper validators (indices `0..count`).
    pub count: u64,
    /// Beacon node that runs them (must be the first beacon node).
    pub beacon_node: String,
}

/// Baseline validator client.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BaselineSpec {
    /// Number of baseline validators.
    pub count: u64,
    /// Validator client implementation.
    pub client: Client,
    /// Beacon node it talks to.
    pub beacon_node: String,
}

/// A distributed-validator cluster.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Unique name, e.g. `dv0`.
    pub name: String,
    /// Number of dvnodes.
    pub nodes: u64,
    /// Signatures needed out of `nodes`.
    pub threshold: u64,
    /// Number of distributed validators.
    pub validators: u64,
    /// Validator client run next to each dvnode.
    pub vc: Client,
    /// Beacon node of each dvnode, one per node.
    pub beacon_nodes: Vec<String>,
}

/// Run length.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DurationSpec {
    /// Epochs after genesis to observe.
    pub epochs: u64,
}

/// Kind of a fault.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Split containers into groups that cannot talk (`groups`), or cut one off (`isolate`).
    Partition,
    /// Delay every packet a target sends (`delay`, optional `jitter`), or both directions of a
    /// `link`.
    Latency,
    /// Drop a `percent` share of the packets a target sends, or of both directions of a `link`.
    Loss,
    /// Limit a target's egress rate (`rate`, e.g. `1mbit`) with a token bucket.
    Bandwidth,
    /// SIGKILL a `target`; start it again after `restart_after` when given.
    Crash,
    /// Stop a `target` gracefully (SIGTERM, then SIGKILL after 10 s); start it again after
    /// `restart_after` when given.
    Stop,
    /// Freeze a `target` (cgroup freezer) for `for`.
    Pause,
    /// Shift a `target`'s clock by `offset` (libfaketime), from `at` for `for`.
    ClockSkew,
    /// Crash random `targets` at `rate` crashes per epoch (Poisson, drawn from the spec seed)
    /// during `for` (default: to the end of the run); each restarts after `restart_after`.
    RandomCrash,
    /// Like `random_crash` with graceful stops.
    RandomStop,
    /// Ends the fault whose `id` is `fault`.
    Heal,
}

impl FaultKind {
    /// Name as written in the YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Latency => "latency",
            FaultKind::Loss => "loss",
            FaultKind::Bandwidth => "bandwidth",
            FaultKind::Crash => "crash",
            FaultKind::Stop => "stop",
            FaultKind::Pause => "pause",
            FaultKind::ClockSkew => "clock_skew",
            FaultKind::RandomCrash => "random_crash",
            FaultKind::RandomStop => "random_stop",
            FaultKind::Heal => "heal",
        }
    }

    /// Fields (besides `at`, `kind` and `id`) the kind accepts.
    fn fields(self) -> &'static [&'static str] {
        match self {
            FaultKind::Partition => &["groups", "isolate", "for"],
            FaultKind::Latency => &["delay", "jitter", "targets", "link", "for"],
            FaultKind::Loss => &["percent", "targets", "link", "for"],
            FaultKind::Bandwidth => &["rate", "targets", "for"],
            FaultKind::Crash | FaultKind::Stop => &["target", "restart_after"],
            FaultKind::Pause => &["target", "for"],
            FaultKind::ClockSkew => &["target", "offset", "for"],
            FaultKind::RandomCrash | FaultKind::RandomStop => {
                &["rate", "targets", "restart_after", "for"]
            }
            FaultKind::Heal => &["fault"],
        }
    }

    /// Whether an explicit `heal` entry can end it.
    fn healable(self) -> bool {
        matches!(
            self,
            FaultKind::Partition
                | FaultKind::Latency
                | FaultKind::Loss
                | FaultKind::Bandwidth
                | FaultKind::Pause
                | FaultKind::ClockSkew
        )
    }
}

/// A YAML scalar that may be a number or a string (`rate: 0.5` or `rate: 1mbit`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    /// A number.
    Number(f64),
    /// A string.
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Number(n) => write!(f, "{n}"),
            Scalar::Text(s) => write!(f, "{s}"),
        }
    }
}

/// One scheduled fault. Which fields apply depends on [`FaultKind`]; see `dvlab::faults` for
/// what each kind does on this kernel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Name a later `heal` entry refers to.
    #[serde(default)]
    pub id: Option<String>,
    /// When: `slot N`, `epoch N` or a time after genesis such as `30s`.
    pub at: String,
    /// What.
    pub kind: FaultKind,
    /// Partition groups of container short names (`dv0-0`, `bn1`, `dv0-2-vc`, `baseline`).
    #[serde(default)]
    pub groups: Vec<Vec<String>>,
    /// Partition that cuts one container off from all others.
    #[serde(default)]
    pub isolate: Option<String>,
    /// Single target (crash, stop, pause, clock skew).
    #[serde(default)]
    pub target: Option<String>,
    /// Targets (latency, loss, bandwidth, random faults).
    #[serde(default)]
    pub targets: Vec<String>,
    /// The two ends of a link (latency, loss).
    #[serde(default)]
    pub link: Option<Vec<String>>,
    /// Added one-way delay, e.g. `200ms`.
    #[serde(default)]
    pub delay: Option<String>,
    /// Delay jitter, e.g. `20ms` (uniform in delay ± jitter).
    #[serde(default)]
    pub jitter: Option<String>,
    /// Packet loss in percent (0 < p <= 100).
    #[serde(default)]
    pub percent: Option<f64>,
    /// Bandwidth (`1mbit`, `500kbit`) or, for random faults, events per epoch.
    #[serde(default)]
    pub rate: Option<Scalar>,
    /// Clock offset, e.g. `+3s`, `-2s`, `+500ms`.
    #[serde(default)]
    pub offset: Option<String>,
    /// How long, e.g. `2 epochs`, `3 slots`, `40s`.
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// Restart delay of a crash or stop, e.g. `30s`.
    #[serde(default)]
    pub restart_after: Option<String>,
    /// The `id` of the fault a `heal` entry ends.
    #[serde(default)]
    pub fault: Option<String>,
}

impl FaultSpec {
    /// Names of the optional fields that are set.
    fn set_fields(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut f = |set: bool, name: &'static str| {
            if set {
                v.push(name);
            }
        };
        f(!self.groups.is_empty(), "groups");
        f(self.isolate.is_some(), "isolate");
        f(self.target.is_some(), "target");
        f(!self.targets.is_empty(), "targets");
        f(self.link.is_some(), "link");
        f(self.delay.is_some(), "delay");
        f(self.jitter.is_some(), "jitter");
        f(self.percent.is_some(), "percent");
        f(self.rate.is_some(), "rate");
        f(self.offset.is_some(), "offset");
        f(self.for_.is_some(), "for");
        f(self.restart_after.is_some(), "restart_after");
        f(self.fault.is_some(), "fault");
        v
    }
}

/// When a fault happens, relative to genesis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    /// Start of a slot.
    Slot(u64),
    /// Start of an epoch.
    Epoch(u64),
    /// Seconds after genesis.
    Secs(f64),
}

impl At {
    /// Parses `slot N`, `epoch N` or a duration such as `30s` (after genesis).
    pub fn parse(s: &str) -> Result<At, String> {
        let t = s.trim();
        let mut words = t.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("slot"), Some(n), None) => n
                .parse()
                .map(At::Slot)
                .map_err(|_| format!("`{n}` in `{s}` is not a slot number")),
            (Some("epoch"), Some(n), None) => n
                .parse()
                .map(At::Epoch)
                .map_err(|_| format!("`{n}` in `{s}` is not an epoch number")),
            _ => match Span::parse(t) {
                Ok(Span::Secs(x)) => Ok(At::Secs(x)),
                _ => Err(format!(
                    "`{s}` is not a time; use `slot N`, `epoch N` or a time after genesis such as `30s`"
                )),
            },
        }
    }

    /// Seconds after genesis.
    pub fn seconds(self, seconds_per_slot: u64, slots_per_epoch: u64) -> f64 {
        match self {
            At::Slot(n) => (n * seconds_per_slot) as f64,
            At::Epoch(n) => (n * slots_per_epoch * seconds_per_slot) as f64,
            At::Secs(x) => x,
        }
    }
}

/// A length of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Span {
    /// Seconds.
    Secs(f64),
    /// Slots.
    Slots(u64),
    /// Epochs.
    Epochs(u64),
}

impl Span {
    /// Parses `40s`, `1500ms`, `2m`, `1h`, `3 slots`, `1 slot`, `2 epochs`, `1 epoch`.
    pub fn parse(s: &str) -> Result<Span, String> {
        let t = s.trim();
        let bad = || {
            format!(
                "`{s}` is not a duration; use e.g. `40s`, `1500ms`, `2m`, `3 slots`, `2 epochs`"
            )
        };
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, unit) = (&t[..split], t[split..].trim());
        if num.is_empty() {
            return Err(bad());
        }
        let count = || num.parse::<u64>().map_err(|_| bad());
        let x: f64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "slot" | "slots" => return Ok(Span::Slots(count()?)),
            "epoch" | "epochs" => return Ok(Span::Epochs(count()?)),
            "ms" => x / 1000.0,
            "s" => x,
            "m" | "min" => x * 60.0,
            "h" => x * 3600.0,
            _ => return Err(bad()),
        };
        if !secs.is_finite() {
            return Err(bad());
        }
        Ok(Span::Secs(secs))
    }

    /// Length in seconds.
    pub fn seconds(self, seconds_per_slot: u64, slots_per_epoch: u64) -> f64 {
        match self {
            Span::Secs(x) => x,
            Span::Slots(n) => (n * seconds_per_slot) as f64,
            Span::Epochs(n) => (n * slots_per_epoch * seconds_per_slot) as f64,
        }
    }
}

/// Parses a clock offset such as `+3s`, `-2s`, `+500ms`, `-1.5s` into seconds.
pub fn parse_offset(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1.0, &t[1..]),
        Some(b'-') => (-1.0, &t[1..]),
        _ => {
            return Err(format!(
                "offset `{s}` must start with + or - (e.g. `+3s`, `-2s`)"
            ))
        }
    };
    match Span::parse(rest) {
        Ok(Span::Secs(x)) => Ok(sign * x),
        _ => Err(format!(
            "offset `{s}` must be a signed time such as `+3s`, `-2s` or `+500ms`"
        )),
    }
}

/// Parses a `tc` rate such as `1mbit`, `500kbit`, `100kbps` (bytes) into bits per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let num: f64 = t[..split]
        .parse()
        .map_err(|_| format!("`{s}` is not a rate; use e.g. `1mbit`, `500kbit`"))?;
    let mult = match &t[split..] {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        _ => {
            return Err(format!(
                "`{s}` has no known unit; use bit, kbit, mbit, gbit, bps, kbps or mbps"
            ))
        }
    };
    let bits = num * mult;
    if !(bits.is_finite() && (8_000.0..=100e9).contains(&bits)) {
        return Err(format!("rate `{s}` must be between 8kbit and 100gbit"));
    }
    Ok(bits as u64)
}

/// A validation or parse error, naming the field and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// File name or `<input>`.
    pub source_name: String,
    /// Field path, e.g. `clusters[0].threshold`; empty for syntax errors.
    pub field: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source_name)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SpecError {}

/// All errors found in one spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Assertion metrics `dvlab` knows how to compute.
pub const ASSERTION_METRICS: &[&str] = &[
    "baseline_inclusion_rate",
    "keepers_inclusion_rate",
    "dv_inclusion_rate",
    "dv_vs_baseline_ratio",
    "slashable_messages",
    "finalized_epoch",
    "baseline_inclusion_distance_p99",
    "dv_inclusion_outside_faults",
    "dv_inclusion_during_faults",
    "dv_inclusion_steady",
    "baseline_inclusion_outside_faults",
    "baseline_inclusion_during_faults",
    "dv_attestations_during_partition",
    "max_recovery_slots",
    "faults_executed",
    "fault_errors",
];

/// Comparison operator of an assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// A parsed assertion expression like `>= 0.95`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Operator.
    pub op: CmpOp,
    /// Right-hand side.
    pub rhs: f64,
}

impl Comparison {
    /// Parses `OP NUMBER`.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let e = expr.trim();
        let (op, rest) = [
            (">=", CmpOp::Ge),
            ("<=", CmpOp::Le),
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            (">", CmpOp::Gt),
            ("<", CmpOp::Lt),
        ]
        .iter()
        .find_map(|(s, op)| e.strip_prefix(s).map(|r| (*op, r)))
        .ok_or_else(|| format!("`{expr}` must start with one of >=, >, <=, <, ==, !="))?;
        let rhs: f64 = rest
            .trim()
            .parse()
            .map_err(|_| format!("`{}` in `{expr}` is not a number", rest.trim()))?;
        if !rhs.is_finite() {
            return Err(format!("`{expr}` compares with a non-finite number"));
        }
        Ok(Comparison { op, rhs })
    }

    /// Whether `value` satisfies the comparison.
    pub fn holds(&self, value: f64) -> bool {
        match self.op {
            CmpOp::Ge => value >= self.rhs,
            CmpOp::Gt => value > self.rhs,
            CmpOp::Le => value <= self.rhs,
            CmpOp::Lt => value < self.rhs,
            CmpOp::Eq => value == self.rhs,
            CmpOp::Ne => value != self.rhs,
        }
    }
}

impl DevnetSpec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read devnet file {}: {e}", path.display()))?;
        Ok(Self::parse(&text, &path.display().to_string())?)
    }

    /// Parses and validates YAML text; `source_name` appears in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, SpecErrors> {
        let spec: DevnetSpec = serde_yaml::from_str(text).map_err(|e| {
            let (field, message) = split_serde_message(&e.to_string());
            SpecErrors(vec![SpecError {
                source_name: source_name.to_string(),
                field,
                line: e.location().map(|l| l.line()),
                message,
            }])
        })?;
        let problems = spec.problems();
        if problems.is_empty() {
            return Ok(spec);
        }
        Err(SpecErrors(
            problems
                .into_iter()
                .map(|(field, message)| SpecError {
                    source_name: source_name.to_string(),
                    line: locate(text, &field),
                    field,
                    message,
                })
                .collect(),
        ))
    }

    /// Total validators run by keepers, baseline and clusters.
    pub fn used_validators(&self) -> u64 {
        self.keepers.count
            + self.baseline.as_ref().map_or(0, |b| b.count)
            + self.clusters.iter().map(|c| c.validators).sum::<u64>()
    }

    /// Genesis validator count.
    pub fn genesis_validators(&self) -> u64 {
        self.network
            .genesis_validators
            .unwrap_or_else(|| self.used_validators())
    }

    /// Short names of the containers a run has, as fault targets name them: beacon nodes by
    /// name, `baseline`, dvnodes `<cluster>-<i>` and their validator clients `<cluster>-<i>-vc`.
    /// The container of short name `x` is `dvlab-<run>-x`.
    pub fn container_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.beacon_nodes.iter().map(|b| b.name.clone()).collect();
        if self.baseline.is_some() {
            v.push("baseline".into());
        }
        for c in &self.clusters {
            for n in 0..c.nodes {
                v.push(format!("{}-{n}", c.name));
                v.push(format!("{}-{n}-vc", c.name));
            }
        }
        v
    }

    /// Seconds from genesis to the end of the observed window.
    pub fn run_seconds(&self) -> f64 {
        (self.duration.epochs
            * self.network.preset.slots_per_epoch()
            * self.network.seconds_per_slot) as f64
    }

    /// Problems of the `faults` list as (field path, message).
    fn fault_problems(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let names: BTreeSet<String> = self.container_names().into_iter().collect();
        let (sps, spe) = (
            self.network.seconds_per_slot,
            self.network.preset.slots_per_epoch(),
        );
        let end = self.run_seconds();
        // id → (index, kind, start seconds, has `for`)
        let mut ids: BTreeMap<&str, (usize, FaultKind, Option<f64>, bool)> = BTreeMap::new();
        let mut healed: BTreeSet<&str> = BTreeSet::new();
        for (i, f) in self.faults.iter().enumerate() {
            let field = |k: &str| format!("faults[{i}].{k}");
            let mut err = |k: String, m: String| p.push((k, m));
            let kind = f.kind.as_str();
            for set in f.set_fields() {
                if !f.kind.fields().contains(&set) {
                    err(
                        field(set),
                        format!(
                            "`{set}` does not apply to a {kind} fault (it takes: {})",
                            f.kind.fields().join(", ")
                        ),
                    );
                }
            }
            let start = match At::parse(&f.at) {
                Ok(a) => {
                    let t = a.seconds(sps, spe);
                    if t >= end {
                        err(
                            field("at"),
                            format!(
                                "`{}` is at or after the end of the run ({} epochs = {end} s after genesis)",
                                f.at, self.duration.epochs
                            ),
                        );
                    }
                    Some(t)
                }
                Err(m) => {
                    err(field("at"), m);
                    None
                }
            };
            let span = |k: &str, v: &Option<String>, err: &mut dyn FnMut(String, String)| {
                let v = v.as_ref()?;
                match Span::parse(v) {
                    Ok(s) if s.seconds(sps, spe) > 0.0 => Some(s.seconds(sps, spe)),
                    Ok(_) => {
                        err(field(k), format!("`{v}` must be longer than zero"));
                        None
                    }
                    Err(m) => {
                        err(field(k), m);
                        None
                    }
                }
            };
            span("for", &f.for_, &mut err);
            span("restart_after", &f.restart_after, &mut err);
            let known = |k: String, name: &str, err: &mut dyn FnMut(String, String)| {
                if !names.contains(name) {
                    err(
                        k,
                        format!(
                            "unknown container `{name}`; targets are: {}",
                            names.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    );
                }
            };
            let need = |set: bool, k: &str, what: &str, err: &mut dyn FnMut(String, String)| {
                if !set {
                    err(field(k), format!("a {kind} fault needs `{k}` ({what})"));
                }
            };
            if let Some(id) = &f.id {
                if !valid_name(id) {
                    err(
                        field("id"),
                        format!("`{id}` is not a valid id (a-z, 0-9, '-')"),
                    );
                } else if f.kind == FaultKind::Heal {
                    err(field("id"), "a heal entry has no id".into());
                } else if ids
                    .insert(id, (i, f.kind, start, f.for_.is_some()))
                    .is_some()
                {
                    err(field("id"), format!("duplicate fault id `{id}`"));
                }
            }
            if let Some(t) = &f.target {
                known(field("target"), t, &mut err);
            }
            for (j, t) in f.targets.iter().enumerate() {
                known(format!("faults[{i}].targets[{j}]"), t, &mut err);
            }
            let one_of =
                |a: bool, b: bool, (x, y): (&str, &str), err: &mut dyn FnMut(String, String)| {
                    if a == b {
                        err(
                            field(x),
                            format!("a {kind} fault needs exactly one of `{x}` and `{y}`"),
                        );
                    }
                };
            match f.kind {
                FaultKind::Partition => {
                    one_of(
                        !f.groups.is_empty(),
                        f.isolate.is_some(),
                        ("groups", "isolate"),
                        &mut err,
                    );
                    if let Some(x) = &f.isolate {
                        known(field("isolate"), x, &mut err);
                    }
                    if !f.groups.is_empty() && f.groups.len() < 2 {
                        err(
                            field("groups"),
                            "a partition needs at least two groups".into(),
                        );
                    }
                    let mut seen = BTreeSet::new();
                    for (g, group) in f.groups.iter().enumerate() {
                        if group.is_empty() {
                            err(format!("faults[{i}].groups[{g}]"), "empty group".into());
                        }
                        for (j, name) in group.iter().enumerate() {
                            let k = format!("faults[{i}].groups[{g}][{j}]");
                            known(k.clone(), name, &mut err);
                            if !seen.insert(name.as_str()) {
                                err(k, format!("`{name}` is in more than one group"));
                            }
                        }
                    }
                }
                FaultKind::Latency | FaultKind::Loss => {
                    one_of(
                        !f.targets.is_empty(),
                        f.link.is_some(),
                        ("targets", "link"),
                        &mut err,
                    );
                    if let Some(link) = &f.link {
                        if link.len() != 2 || link[0] == link[1] {
                            err(
                                field("link"),
                                "a link is two different containers, e.g. [dv0-0, dv0-1]".into(),
                            );
                        }
                        for (j, name) in link.iter().enumerate() {
                            known(format!("faults[{i}].link[{j}]"), name, &mut err);
                        }
                    }
                    if f.kind == FaultKind::Latency {
                        need(f.delay.is_some(), "delay", "e.g. `200ms`", &mut err);
                        for (k, v) in [("delay", &f.delay), ("jitter", &f.jitter)] {
                            if let Some(v) = v {
                                match Span::parse(v) {
                                    Ok(Span::Secs(x)) if (0.0..=60.0).contains(&x) => {}
                                    _ => err(
                                        field(k),
                                        format!(
                                            "`{v}` must be a time between 0 and 60s, e.g. `200ms`"
                                        ),
                                    ),
                                }
                            }
                        }
                    } else {
                        match f.percent {
                            None => need(false, "percent", "e.g. `10`", &mut err),
                            Some(x) if !(x > 0.0 && x <= 100.0) => err(
                                field("percent"),
                                format!("{x} is not a percentage in (0, 100]"),
                            ),
                            Some(_) => {}
                        }
                    }
                }
                FaultKind::Bandwidth => {
                    need(
                        !f.targets.is_empty(),
                        "targets",
                        "container names",
                        &mut err,
                    );
                    match &f.rate {
                        None => need(false, "rate", "e.g. `1mbit`", &mut err),
                        Some(Scalar::Text(r)) => {
                            if let Err(m) = parse_rate(r) {
                                err(field("rate"), m);
                            }
                        }
                        Some(Scalar::Number(n)) => err(
                            field("rate"),
                            format!("`{n}` has no unit; use e.g. `1mbit` or `500kbit`"),
                        ),
                    }
                }
                FaultKind::Crash | FaultKind::Stop | FaultKind::Pause => {
                    need(f.target.is_some(), "target", "a container name", &mut err);
                }
                FaultKind::ClockSkew => {
                    need(f.target.is_some(), "target", "a container name", &mut err);
                    match &f.offset {
                        None => need(false, "offset", "e.g. `+3s`", &mut err),
                        Some(o) => match parse_offset(o) {
                            Ok(x) if x.abs() > 86_400.0 * 365.0 => {
                                err(field("offset"), format!("`{o}` is more than a year"))
                            }
                            Ok(_) => {}
                            Err(m) => err(field("offset"), m),
                        },
                    }
                }
                FaultKind::RandomCrash | FaultKind::RandomStop => {
                    need(
                        !f.targets.is_empty(),
                        "targets",
                        "container names",
                        &mut err,
                    );
                    need(
                        f.restart_after.is_some(),
                        "restart_after",
                        "random faults always restart, e.g. `20s`",
                        &mut err,
                    );
                    match &f.rate {
                        None => need(false, "rate", "events per epoch, e.g. `0.5`", &mut err),
                        Some(Scalar::Number(x)) if *x > 0.0 && *x <= 100.0 => {}
                        Some(r) => err(
                            field("rate"),
                            format!("`{r}` must be events per epoch, a number in (0, 100]"),
                        ),
                    }
                }
                FaultKind::Heal => match &f.fault {
                    None => need(false, "fault", "the id of the fault to heal", &mut err),
                    Some(id) => match ids.get(id.as_str()) {
                        None => err(field("fault"), format!("no earlier fault has id `{id}`")),
                        Some((j, k, _, _)) if !k.healable() => err(
                            field("fault"),
                            format!(
                                "faults[{j}] (`{id}`) is a {} fault, which a heal entry cannot end",
                                k.as_str()
                            ),
                        ),
                        Some((j, _, _, true)) => err(
                            field("fault"),
                            format!("faults[{j}] (`{id}`) already ends by its `for`"),
                        ),
                        Some((j, _, t0, _)) => {
                            if !healed.insert(id) {
                                err(field("fault"), format!("`{id}` is healed twice"));
                            }
                            if let (Some(t0), Some(t1)) = (t0, start) {
                                if t1 <= *t0 {
                                    err(
                                        field("at"),
                                        format!(
                                            "the heal of `{id}` must come after faults[{j}] starts"
                                        ),
                                    );
                                }
                            }
                        }
                    },
                },
            }
        }
        p
    }

    /// Semantic problems as (field path, message).
    fn problems(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut err = |f: String, m: String| p.push((f, m));
        if !valid_name(&self.name) {
            err(
                "name".into(),
                format!(
                    "`{}` must be 1-40 characters of a-z, 0-9 and '-', starting with a letter",
                    self.name
                ),
            );
        }
        if self.network.seconds_per_slot == 0 {
            err(
                "network.seconds_per_slot".into(),
                "must be at least 1".into(),
            );
        }
        if self.network.genesis_delay < 10 {
            err(
                "network.genesis_delay".into(),
                format!(
                    "{} s is too short for the containers to start; use at least 10",
                    self.network.genesis_delay
                ),
            );
        }
        let mut bn_names = BTreeSet::new();
        if self.beacon_nodes.is_empty() {
            err(
                "beacon_nodes".into(),
                "at least one beacon node is needed".into(),
            );
        }
        for (i, bn) in self.beacon_nodes.iter().enumerate() {
            if !valid_name(&bn.name) {
                err(
                    format!("beacon_nodes[{i}].name"),
                    format!("`{}` is not a valid name (a-z, 0-9, '-')", bn.name),
                );
            }
            if !bn_names.insert(bn.name.as_str()) {
                err(
                    format!("beacon_nodes[{i}].name"),
                    format!("duplicate beacon node `{}`", bn.name),
                );
            }
        }
        let known = |name: &str| bn_names.contains(name);
        if self.keepers.count == 0 {
            err(
                "keepers.count".into(),
                "at least one keeper is needed".into(),
            );
        }
        if !known(&self.keepers.beacon_node) {
            err(
                "keepers.beacon_node".into(),
                format!("unknown beacon node `{}`", self.keepers.beacon_node),
            );
        } else if self.beacon_nodes.first().map(|b| b.name.as_str())
            != Some(self.keepers.beacon_node.as_str())
        {
            err(
                "keepers.beacon_node".into(),
                format!(
                    "keepers run inside the first beacon node (`{}`), not `{}`",
                    self.beacon_nodes[0].name, self.keepers.beacon_node
                ),
            );
        }
        if let Some(b) = &self.baseline {
            if b.count == 0 {
                err("baseline.count".into(), "must be at least 1".into());
            }
            if !known(&b.beacon_node) {
                err(
                    "baseline.beacon_node".into(),
                    format!("unknown beacon node `{}`", b.beacon_node),
                );
            }
        }
        let mut cluster_names = BTreeSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let f = |k: &str| format!("clusters[{i}].{k}");
            if !valid_name(&c.name) || matches!(c.name.as_str(), "baseline" | "keepers") {
                err(
                    f("name"),
                    format!("`{}` is not a valid cluster name", c.name),
                );
            }
            if !cluster_names.insert(c.name.as_str()) || bn_names.contains(c.name.as_str()) {
                err(f("name"), format!("duplicate name `{}`", c.name));
            }
            if c.nodes < 3 {
                err(
                    f("nodes"),
                    format!("{} nodes; a cluster needs at least 3", c.nodes),
                );
            }
            if c.threshold * 2 <= c.nodes && c.threshold <= c.nodes {
                err(
                    f("threshold"),
                    format!(
                        "threshold {} must be more than half of {} nodes",
                        c.threshold, c.nodes
                    ),
                );
            }
            if c.threshold == 0 || c.threshold > c.nodes {
                err(
                    f("threshold"),
                    format!(
                        "threshold {} is impossible with {} nodes (need 1 <= threshold <= nodes)",
                        c.threshold, c.nodes
                    ),
                );
            }
            if c.validators == 0 {
                err(f("validators"), "must be at least 1".into());
            }
            if c.beacon_nodes.len() as u64 != c.nodes {
                err(
                    f("beacon_nodes"),
                    format!(
                        "lists {} beacon nodes for {} nodes (one per node)",
                        c.beacon_nodes.len(),
                        c.nodes
                    ),
                );
            }
            for (j, bn) in c.beacon_nodes.iter().enumerate() {
                if !known(bn) {
                    err(
                        format!("clusters[{i}].beacon_nodes[{j}]"),
                        format!("unknown beacon node `{bn}`"),
                    );
                }
            }
        }
        let used = self.used_validators();
        if let Some(g) = self.network.genesis_validators {
            if g < used {
                err(
                    "network.genesis_validators".into(),
                    format!(
                        "{g} genesis validators but keepers, baseline and clusters need {used}"
                    ),
                );
            }
        }
        let total = self.genesis_validators();
        if self.keepers.count * 3 <= total * 2 {
            err(
                "keepers.count".into(),
                format!(
                    "{} keepers of {total} validators do not hold more than 2/3 of the stake; \
                     the chain would not finalise on its own",
                    self.keepers.count
                ),
            );
        }
        if self.duration.epochs == 0 {
            err("duration.epochs".into(), "must be at least 1".into());
        }
        p.extend(self.fault_problems());
        let mut err = |f: String, m: String| p.push((f, m));
        for (name, expr) in &self.assertions {
            let field = format!("assertions.{name}");
            if !ASSERTION_METRICS.contains(&name.as_str()) {
                err(
                    field,
                    format!(
                        "unknown assertion `{name}`; known: {}",
                        ASSERTION_METRICS.join(", ")
                    ),
                );
                continue;
            }
            if let Err(m) = Comparison::parse(expr) {
                err(field.clone(), m);
            }
            if name.starts_with("dv_") && self.clusters.is_empty() {
                err(
                    field.clone(),
                    format!("`{name}` needs at least one cluster"),
                );
            }
            if (name.starts_with("baseline") || name == "dv_vs_baseline_ratio")
                && self.baseline.is_none()
            {
                err(field, format!("`{name}` needs a baseline"));
            }
        }
        p
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Splits serde_yaml's "path: message at line L column C" into (path, message).
fn split_serde_message(msg: &str) -> (String, String) {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.is_empty() && path != "invalid type" => {
            (path.to_string(), rest.to_string())
        }
        _ => (String::new(), msg.to_string()),
    }
}

/// One segment of a field path.
#[derive(Debug, PartialEq)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn parse_path(path: &str) -> Option<Vec<Seg<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            out.push(Seg::Index(r[..end].parse().ok()?));
            rest = &r[end + 1..];
        }
    }
    Some(out)
}

/// A region of the source holding one YAML node.
#[derive(Debug, Clone, Copy)]
enum Region {
    /// Block node: byte range and the column its keys / `-` items start at.
    Block {
        start: usize,
        end: usize,
        col: usize,
    },
    /// Inside of a flow collection (between its brackets).
    Flow { start: usize, end: usize },
}

/// Finds the 1-based line of a field path (`clusters[0].threshold`) in YAML text.
///
/// Handles the block and flow styles a devnet file uses; when a segment is not found the
/// line of the deepest enclosing node found is returned.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    let segs = parse_path(path)?;
    let line_of = |pos: usize| text[..pos].matches('\n').count() + 1;
    let mut region = Region::Block {
        start: 0,
        end: text.len(),
        col: 0,
    };
    let mut best: Option<usize> = None;
    for seg in segs {
        let found = match seg {
            Seg::Key(k) => find_key(text, region, k),
            Seg::Index(i) => find_item(text, region, i),
        };
        match found {
            Some((pos, next)) => {
                best = Some(line_of(pos));
                region = next;
            }
            None => return best,
        }
    }
    best
}

fn column(text: &str, pos: usize) -> usize {
    pos - text[..pos].rfind('\n').map_or(0, |i| i + 1)
}

/// Splits a flow region into top-level entries (start offset, end offset).
fn flow_entries(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    let mut entry_start = start;
    for (i, &b) in bytes.iter().enumerate().take(end).skip(start) {
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
            continue;
        }
        match b {
            b'"' | b'\'' => quote = Some(b),
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => {
                out.push((entry_start, i));
                entry_start = i + 1;
            }
            _ => {}
        }
    }
    if text[entry_start..end].trim().is_empty() {
        if out.is_empty() {
            return out;
        }
    } else {
        out.push((entry_start, end));
    }
    out
}

/// Skips whitespace from `pos`, returning the first non-space offset (bounded by `end`).
fn skip_ws(text: &str, mut pos: usize, end: usize) -> usize {
    let b = text.as_bytes();
    while pos < end && (b[pos] as char).is_whitespace() {
        pos += 1;
    }
    pos
}

/// Offset of the bracket matching the one at `open`.
fn matching_bracket(text: &str, open: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0i32;
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate().skip(open) {
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
            continue;
        }
        match b {
            b'"' | b'\'' => quote = Some(b),
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Region of the value that starts at `pos` (just after `:` or `- `); `owner_col` is the
/// column of the key or dash owning it, `limit` the end of the enclosing region.
fn value_region(text: &str, pos: usize, owner_col: usize, limit: usize) -> Region {
    let line_end = text[pos..limit].find('\n').map_or(limit, |i| pos + i);
    let first = skip_ws(text, pos, line_end);
    if first < line_end {
        let c = text.as_bytes()[first];
        if c == b'{' || c == b'[' {
            let close = matching_bracket(text, first).unwrap_or(limit).min(limit);
            return Region::Flow {
                start: first + 1,
                end: close,
            };
        }
        if c != b'#' {
            // Scalar, or (after `- `) an inline block mapping continuing below.
            let end = block_end(text, line_end, owner_col, limit);
            return Region::Block {
                start: first,
                end,
                col: column(text, first),
            };
        }
    }
    // Value on the following lines.
    let end = block_end(text, line_end, owner_col, limit);
    let start = (line_end + 1).min(end);
    let content = text[start..end]
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map_or(owner_col + 2, |l| l.len() - l.trim_start().len());
    Region::Block {
        start,
        end,
        col: content,
    }
}

/// End of a block node whose owner sits at `owner_col`: the first later line indented at
/// most `owner_col` (a `-` at exactly `owner_col` continues a sequence under a key).
fn block_end(text: &str, from: usize, owner_col: usize, limit: usize) -> usize {
    let mut pos = from;
    while pos < limit {
        let line_start = pos + 1;
        if line_start >= limit {
            return limit;
        }
        let line_end = text[line_start..limit]
            .find('\n')
            .map_or(limit, |i| line_start + i);
        let line = &text[line_start..line_end];
        let trimmed = line.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            let indent = line.len() - trimmed.len();
            if indent < owner_col
                || (indent == owner_col && !(trimmed.starts_with("- ") || trimmed == "-"))
            {
                return pos;
            }
        }
        pos = line_end;
    }
    limit
}

fn find_key(text: &str, region: Region, key: &str) -> Option<(usize, Region)> {
    match region {
        Region::Flow { start, end } => {
            for (a, b) in flow_entries(text, start, end) {
                let s = skip_ws(text, a, b);
                let entry = &text[s..b];
                if let Some(rest) = entry.strip_prefix(key) {
                    let r = rest.trim_start();
                    if r.starts_with(':') {
                        let colon = b - r.len();
                        return Some((s, value_region(text, colon + 1, column(text, s), b)));
                    }
                }
            }
            None
        }
        Region::Block { start, end, col } => {
            let mut pos = start;
            while pos < end {
                let line_end = text[pos..end].find('\n').map_or(end, |i| pos + i);
                let c = column(text, pos);
                // Position of the key candidate on this line at column `col`.
                let cand = if c <= col && pos + (col - c) <= line_end {
                    Some(pos + (col - c))
                } else {
                    None
                };
                if let Some(k) = cand {
                    let rest = &text[k..line_end];
                    if let Some(after) = rest.strip_prefix(key) {
                        let t = after.trim_start();
                        if t.starts_with(':') && text[pos..k].trim().is_empty() {
                            let colon = line_end - t.len();
                            return Some((k, value_region(text, colon + 1, col, end)));
                        }
                    }
                }
                pos = line_end + 1;
            }
            None
        }
    }
}

fn find_item(text: &str, region: Region, index: usize) -> Option<(usize, Region)> {
    match region {
        Region::Flow { start, end } => {
            let (a, b) = *flow_entries(text, start, end).get(index)?;
            let s = skip_ws(text, a, b);
            let c = text.as_bytes().get(s)?;
            let r = if *c == b'{' || *c == b'[' {
                Region::Flow {
                    start: s + 1,
                    end: matching_bracket(text, s).unwrap_or(b),
                }
            } else {
                Region::Flow { start: s, end: b }
            };
            Some((s, r))
        }
        Region::Block { start, end, col } => {
            let mut pos = start;
            let mut seen = 0;
            while pos < end {
                let line_end = text[pos..end].find('\n').map_or(end, |i| pos + i);
                let c = column(text, pos);
                if c <= col {
                    let dash = pos + (col - c);
                    if dash < line_end
                        && text[pos..dash].trim().is_empty()
                        && text[dash..].starts_with('-')
                    {
                        if seen == index {
                            return Some((dash, value_region(text, dash + 1, col, end)));
                        }
                        seen += 1;
                    }
                }
                pos = line_end + 1;
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const BASIC: &str = include_str!("../../devnets/basic.yaml");
    const BASELINE_ONLY: &str = include_str!("../../devnets/baseline-only.yaml");

    fn errors(text: &str) -> Vec<SpecError> {
        DevnetSpec::parse(text, "t.yaml").unwrap_err().0
    }

    #[test]
    fn shipped_devnets_parse() {
        let basic = DevnetSpec::parse(BASIC, "basic.yaml").unwrap();
        assert_eq!(basic.clusters.len(), 1);
        assert_eq!(basic.clusters[0].beacon_nodes, ["bn0", "bn0", "bn1", "bn1"]);
        assert_eq!(basic.genesis_validators(), 64);
        let b = DevnetSpec::parse(BASELINE_ONLY, "baseline-only.yaml").unwrap();
        assert!(b.clusters.is_empty());
    }

    #[test]
    fn unknown_key_names_field_and_line() {
        let text = BASIC.replace("seed: 42", "seed: 42\nsede: 1");
        let e = &errors(&text)[0];
        assert!(e.message.contains("unknown field `sede`"), "{e}");
        assert_eq!(
            e.line,
            Some(text.lines().position(|l| l == "sede: 1").unwrap() + 1)
        );
    }

    #[test]
    fn unknown_nested_key_in_flow_mapping() {
        let text = BASIC.replace("keepers: {count: 48,", "keepers: {cuont: 48,");
        let e = &errors(&text)[0];
        assert!(e.message.contains("unknown field `cuont`"), "{e}");
        assert_eq!(e.field, "keepers");
        assert_eq!(
            e.line,
            Some(
                text.lines()
                    .position(|l| l.starts_with("keepers:"))
                    .unwrap()
                    + 1
            )
        );
    }

    #[test]
    fn threshold_above_nodes_is_located() {
        let text = BASIC.replace("threshold: 3", "threshold: 5");
        let errs = errors(&text);
        let e = errs
            .iter()
            .find(|e| e.field == "clusters[0].threshold")
            .unwrap();
        assert!(
            e.message.contains("threshold 5 is impossible with 4 nodes"),
            "{e}"
        );
        let want = text
            .lines()
            .position(|l| l.contains("threshold: 5"))
            .unwrap()
            + 1;
        assert_eq!(e.line, Some(want));
        assert!(e
            .to_string()
            .contains(&format!("t.yaml:{want}: field `clusters[0].threshold`")));
    }

    #[test]
    fn unknown_beacon_node_in_block_style() {
        let text =
            "name: x\nnetwork:\n  preset: minimal\n  seconds_per_slot: 4\n  genesis_delay: 20\n\
beacon_nodes:\n  - name: bn0\n    client: lodestar\nkeepers:\n  count: 48\n  beacon_node: bn0\n\
baseline:\n  count: 8\n  client: lodestar\n  beacon_node: bn9\nduration:\n  epochs: 3\n";
        let errs = errors(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "baseline.beacon_node");
        assert_eq!(errs[0].line, Some(15));
        assert!(errs[0].message.contains("`bn9`"));
    }

    #[test]
    fn unknown_beacon_node_of_a_cluster_node_is_located() {
        let text = BASIC.replace(
            "beacon_nodes: [bn0, bn0, bn1, bn1]",
            "beacon_nodes: [bn0, bn0, bn1, bn7]",
        );
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "clusters[0].beacon_nodes[3]");
        assert!(errs[0].message.contains("unknown beacon node `bn7`"));
        let want = text.lines().position(|l| l.contains("bn7")).unwrap() + 1;
        assert_eq!(errs[0].line, Some(want));
    }

    #[test]
    fn block_sequence_items_are_located() {
        let text = "name: x\nnetwork: {preset: minimal, seconds_per_slot: 4, genesis_delay: 20}\n\
beacon_nodes:\n- name: bn0\n  client: lodestar\n- name: bn0\n  client: lodestar\n\
keepers: {count: 48, beacon_node: bn0}\nduration: {epochs: 2}\n";
        let errs = errors(text);
        assert_eq!(errs[0].field, "beacon_nodes[1].name");
        assert_eq!(errs[0].line, Some(6));
    }

    #[test]
    fn more_validators_than_genesis() {
        let text = BASIC.replace(
            "genesis_delay: 20}",
            "genesis_delay: 20, genesis_validators: 60}",
        );
        let errs = errors(&text);
        let e = errs
            .iter()
            .find(|e| e.field == "network.genesis_validators")
            .unwrap();
        assert!(e
            .message
            .contains("60 genesis validators but keepers, baseline and clusters need 64"));
        assert_eq!(
            e.line,
            Some(
                text.lines()
                    .position(|l| l.starts_with("network:"))
                    .unwrap()
                    + 1
            )
        );
    }

    #[test]
    fn keepers_must_hold_two_thirds() {
        let text = BASIC.replace("count: 48", "count: 16");
        let errs = errors(&text);
        assert!(errs
            .iter()
            .any(|e| e.field == "keepers.count" && e.message.contains("2/3")));
    }

    #[test]
    fn bad_assertions() {
        let text = BASIC.replace(
            "slashable_messages: \"== 0\"",
            "slashable_messages: \"about 0\", foo: \">= 1\"",
        );
        let errs = errors(&text);
        assert!(errs
            .iter()
            .any(|e| e.field == "assertions.foo" && e.message.contains("unknown assertion")));
        assert!(errs
            .iter()
            .any(|e| e.field == "assertions.slashable_messages"));
        let dv = BASELINE_ONLY.replace(
            "assertions: {",
            "assertions: {dv_inclusion_rate: \">= 0.9\", ",
        );
        let errs = errors(&dv);
        assert!(
            errs.iter()
                .any(|e| e.message.contains("needs at least one cluster")),
            "{errs:?}"
        );
    }

    #[test]
    fn wrong_type_is_located() {
        let text = BASIC.replace("duration: {epochs: 10}", "duration: {epochs: ten}");
        let e = &errors(&text)[0];
        assert_eq!(
            e.line,
            Some(
                text.lines()
                    .position(|l| l.starts_with("duration"))
                    .unwrap()
                    + 1
            )
        );
        assert!(e.to_string().contains("duration"), "{e}");
    }

    #[test]
    fn comparisons() {
        assert!(Comparison::parse(">= 0.95").unwrap().holds(0.95));
        assert!(!Comparison::parse("> 0.95").unwrap().holds(0.95));
        assert!(Comparison::parse("== 0").unwrap().holds(0.0));
        assert!(Comparison::parse("=< 1").is_err());
        assert!(Comparison::parse(">= x").is_err());
    }

    fn with_faults(faults: &str) -> String {
        BASIC.replace("faults: []", &format!("faults:\n{faults}"))
    }

    fn line_of(text: &str, needle: &str) -> Option<usize> {
        text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
    }

    #[test]
    fn design_example_faults_parse() {
        let text = with_faults(
            "  - {at: epoch 3, kind: partition, groups: [[dv0-0, dv0-1], [dv0-2, dv0-3]], for: 2 epochs}\n\
             \x20 - {at: epoch 6, kind: crash, target: dv0-1, restart_after: 30s}\n",
        );
        let spec = DevnetSpec::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.faults[0].kind, FaultKind::Partition);
        assert_eq!(spec.faults[1].restart_after.as_deref(), Some("30s"));
    }

    #[test]
    fn every_kind_parses() {
        let text = with_faults(
            "  - {id: cut, at: slot 9, kind: partition, isolate: bn1}\n\
             \x20 - {at: slot 30, kind: heal, fault: cut}\n\
             \x20 - {at: 30s, kind: latency, delay: 200ms, jitter: 20ms, targets: [dv0-0], for: 1 epoch}\n\
             \x20 - {at: epoch 2, kind: latency, delay: 50ms, link: [dv0-1, bn0], for: 3 slots}\n\
             \x20 - {at: epoch 2, kind: loss, percent: 10, targets: [dv0-2, dv0-3], for: 2 epochs}\n\
             \x20 - {at: epoch 2, kind: bandwidth, rate: 1mbit, targets: [bn1], for: 40s}\n\
             \x20 - {at: epoch 3, kind: stop, target: dv0-3-vc, restart_after: 2 slots}\n\
             \x20 - {at: epoch 4, kind: pause, target: baseline, for: 1500ms}\n\
             \x20 - {at: epoch 4, kind: clock_skew, target: dv0-0, offset: -2s, for: 1 epoch}\n\
             \x20 - {at: epoch 1, kind: random_crash, rate: 0.5, targets: [dv0-0, dv0-1], restart_after: 20s}\n\
             \x20 - {at: epoch 1, kind: random_stop, rate: 1, targets: [bn1], restart_after: 1 epoch, for: 4 epochs}\n",
        );
        let spec = DevnetSpec::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.faults.len(), 11);
    }

    #[test]
    fn unknown_fault_target_names_field_and_line() {
        let text = with_faults(
            "  - {at: epoch 3, kind: partition, groups: [[dv0-0, dv0-9], [dv0-2]], for: 2 epochs}\n\
             \x20 - at: epoch 6\n    kind: crash\n    target: bn7\n",
        );
        let errs = errors(&text);
        let e = errs
            .iter()
            .find(|e| e.field == "faults[0].groups[0][1]")
            .unwrap_or_else(|| panic!("{errs:?}"));
        assert!(e.message.contains("unknown container `dv0-9`"), "{e}");
        assert!(e.message.contains("dv0-3-vc"), "{e}");
        assert_eq!(e.line, line_of(&text, "dv0-9"));
        let e = errs.iter().find(|e| e.field == "faults[1].target").unwrap();
        assert!(e.message.contains("`bn7`"), "{e}");
        assert_eq!(e.line, line_of(&text, "target: bn7"));
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn fault_field_errors() {
        let text = with_faults(
            "  - {at: epoch 99, kind: crash, target: dv0-1, delay: 10ms}\n\
             \x20 - {at: soon, kind: pause, target: dv0-1, for: 2 fortnights}\n\
             \x20 - {at: slot 3, kind: loss, percent: 150, targets: [dv0-1], link: [dv0-1, dv0-2]}\n\
             \x20 - {at: slot 3, kind: bandwidth, rate: 1, targets: [dv0-1]}\n\
             \x20 - {at: slot 3, kind: clock_skew, target: dv0-1, offset: 3s}\n\
             \x20 - {at: slot 3, kind: random_crash, rate: 0.5, targets: [dv0-1]}\n\
             \x20 - {id: p, at: slot 9, kind: partition, groups: [[dv0-0], [dv0-0]], for: 1 slot}\n\
             \x20 - {at: slot 5, kind: heal, fault: p}\n\
             \x20 - {at: slot 5, kind: heal, fault: q}\n",
        );
        let errs = errors(&text);
        let has = |field: &str, msg: &str| {
            assert!(
                errs.iter()
                    .any(|e| e.field == field && e.message.contains(msg) && e.line.is_some()),
                "no `{msg}` on {field}: {errs:#?}"
            )
        };
        has("faults[0].at", "after the end of the run");
        has("faults[0].delay", "does not apply to a crash");
        has("faults[1].at", "is not a time");
        has("faults[1].for", "not a duration");
        has("faults[2].percent", "not a percentage");
        has("faults[2].targets", "exactly one of `targets` and `link`");
        has("faults[3].rate", "has no unit");
        has("faults[4].offset", "must start with + or -");
        has("faults[5].restart_after", "random faults always restart");
        has("faults[6].groups[1][0]", "more than one group");
        has("faults[7].fault", "already ends by its `for`");
        has("faults[8].fault", "no earlier fault has id `q`");
        let e = errs.iter().find(|e| e.field == "faults[3].rate").unwrap();
        assert_eq!(e.line, line_of(&text, "rate: 1,"));
    }

    #[test]
    fn heal_must_follow_its_fault() {
        let text = with_faults(
            "  - {id: p, at: slot 9, kind: pause, target: bn1}\n\
             \x20 - {at: slot 8, kind: heal, fault: p}\n",
        );
        let errs = errors(&text);
        assert!(errs
            .iter()
            .any(|e| e.field == "faults[1].at" && e.message.contains("must come after")));
    }

    #[test]
    fn times_durations_offsets_rates() {
        assert_eq!(At::parse("slot 12"), Ok(At::Slot(12)));
        assert_eq!(At::parse("epoch 3"), Ok(At::Epoch(3)));
        assert_eq!(At::parse("30s"), Ok(At::Secs(30.0)));
        assert_eq!(At::Epoch(3).seconds(4, 8), 96.0);
        assert!(At::parse("epoch x").is_err());
        assert!(At::parse("3 slots").is_err());
        assert_eq!(Span::parse("2 epochs"), Ok(Span::Epochs(2)));
        assert_eq!(Span::parse("1 slot"), Ok(Span::Slots(1)));
        assert_eq!(Span::parse("1500ms"), Ok(Span::Secs(1.5)));
        assert_eq!(Span::parse("2m"), Ok(Span::Secs(120.0)));
        assert!(Span::parse("1.5 slots").is_err());
        assert!(Span::parse("ms").is_err());
        assert_eq!(parse_offset("+3s"), Ok(3.0));
        assert_eq!(parse_offset("-2s"), Ok(-2.0));
        assert_eq!(parse_offset("+500ms"), Ok(0.5));
        assert!(parse_offset("+2 slots").is_err());
        assert_eq!(parse_rate("1mbit"), Ok(1_000_000));
        assert_eq!(parse_rate("500kbit"), Ok(500_000));
        assert_eq!(parse_rate("100kbps"), Ok(800_000));
        assert!(parse_rate("1 parsec").is_err());
        assert!(parse_rate("1bit").is_err());
    }

    #[test]
    fn locate_paths() {
        assert_eq!(locate(BASIC, "clusters[0].beacon_nodes[2]"), Some(8));
        assert_eq!(locate(BASIC, "beacon_nodes[1].client"), Some(3));
        assert_eq!(locate(BASIC, "seed"), Some(BASIC.lines().count()));
    }
}
