//! The devnet file's schema: the types a devnet YAML deserializes into, the small value
//! grammars inside it (times, durations, clock offsets, rates, comparisons) and the assertion
//! metrics it may name.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

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
    /// Run a Prometheus scraping every dvnode, beacon node and validator client (default
    /// `true`; `false` also leaves the Lodestar metrics servers off).
    #[serde(default = "yes")]
    pub prometheus: bool,
}

fn yes() -> bool {
    true
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
    /// Beacon node of each dvnode, one per node: a name, or a list of names — the primary,
    /// then fallbacks (`dvnode run --beacon-node-url A,B`) — kept as `a,b` (see
    /// [`ClusterSpec::beacon_nodes_of`]).
    #[serde(deserialize_with = "name_or_names")]
    pub beacon_nodes: Vec<String>,
    /// Who signs for the DVs (default `middleware`).
    #[serde(default)]
    pub signer: Signer,
    /// Where the DV keys come from (default `interop`).
    #[serde(default)]
    pub keys: KeySource,
}

/// Where a cluster's validator keys come from.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// Interop keys split by a trusted dealer (`dvnode create-cluster`) once the first beacon
    /// node serves its genesis.
    #[default]
    Interop,
    /// A distributed key generation ceremony (`dvnode dkg` in the dvnode containers) before
    /// genesis: no party ever holds a validator key; the genesis state, built by dvlab from the
    /// ceremony's deposit data, holds the distributed keys.
    Dkg,
}

impl ClusterSpec {
    /// The beacon nodes of the cluster's node `n` in preference order (primary first); empty
    /// when there is no such node.
    pub fn beacon_nodes_of(&self, n: usize) -> Vec<&str> {
        self.beacon_nodes
            .get(n)
            .map(|e| e.split(',').collect())
            .unwrap_or_default()
    }
}

/// A list whose entries are a name or a list of names; a list is joined with `,`.
fn name_or_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        One(String),
        Many(Vec<String>),
    }
    Ok(Vec::<Entry>::deserialize(d)?
        .into_iter()
        .map(|e| match e {
            Entry::One(s) => s,
            Entry::Many(v) => v.join(","),
        })
        .collect())
}

/// Who makes a dvnode's partial signatures.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Signer {
    /// Each VC holds its node's key shares and signs partials (`dvnode run --signer
    /// middleware`); DVs do not aggregate.
    #[default]
    Middleware,
    /// Each VC signs through its dvnode's Web3Signer API (`--externalSigner.url`), which holds
    /// the shares and answers with combined signatures (`dvnode run --signer remote`): every
    /// duty, aggregation and sync contributions included.
    Remote,
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
    /// A dvnode's (`target`'s) beacon node answers every request with an HTTP error `status`
    /// (default 503) for `for`: its connections to the beacon node's REST port go to a
    /// failing server instead (the beacon node itself stays healthy for everyone else).
    BnErrors,
    /// A dvnode's (`target`'s) beacon node answers `delay` (± `jitter`) late for `for`: every
    /// packet from the beacon node to the dvnode is held that long (answers and events).
    BnLatency,
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
            FaultKind::BnErrors => "bn_errors",
            FaultKind::BnLatency => "bn_latency",
        }
    }

    /// Fields (besides `at`, `kind` and `id`) the kind accepts.
    pub(super) fn fields(self) -> &'static [&'static str] {
        match self {
            FaultKind::Partition => &["groups", "isolate", "for"],
            FaultKind::Latency => &["delay", "jitter", "targets", "to", "link", "for"],
            FaultKind::Loss => &["percent", "targets", "to", "link", "for"],
            FaultKind::Bandwidth => &["rate", "targets", "for"],
            FaultKind::Crash | FaultKind::Stop => &["target", "restart_after"],
            FaultKind::Pause => &["target", "for"],
            FaultKind::ClockSkew => &["target", "offset", "for"],
            FaultKind::RandomCrash | FaultKind::RandomStop => {
                &["rate", "targets", "restart_after", "for"]
            }
            FaultKind::Heal => &["fault"],
            FaultKind::BnErrors => &["target", "status", "for"],
            FaultKind::BnLatency => &["target", "delay", "jitter", "for"],
        }
    }

    /// Whether an explicit `heal` entry can end it.
    pub(super) fn healable(self) -> bool {
        matches!(
            self,
            FaultKind::Partition
                | FaultKind::Latency
                | FaultKind::Loss
                | FaultKind::Bandwidth
                | FaultKind::Pause
                | FaultKind::ClockSkew
                | FaultKind::BnErrors
                | FaultKind::BnLatency
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
    /// Only what `targets` send to these containers (latency, loss). A loss with `to` is
    /// one-way: it drops the targets' messages (TCP segments carrying data, and any non-TCP
    /// packet) but lets their bare acknowledgements through, so they keep hearing those peers
    /// while not being heard.
    #[serde(default)]
    pub to: Vec<String>,
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
    /// HTTP status of a `bn_errors` fault's answers (400-599, default 503).
    #[serde(default)]
    pub status: Option<u16>,
}

impl FaultSpec {
    /// Names of the optional fields that are set.
    pub(super) fn set_fields(&self) -> Vec<&'static str> {
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
        f(!self.to.is_empty(), "to");
        f(self.link.is_some(), "link");
        f(self.delay.is_some(), "delay");
        f(self.jitter.is_some(), "jitter");
        f(self.percent.is_some(), "percent");
        f(self.rate.is_some(), "rate");
        f(self.offset.is_some(), "offset");
        f(self.for_.is_some(), "for");
        f(self.restart_after.is_some(), "restart_after");
        f(self.fault.is_some(), "fault");
        f(self.status.is_some(), "status");
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
            // In f64: a slot or epoch number from the file may be any u64 (`epoch
            // 99999999999999999`), and the product must not overflow; validation then reports
            // it as outside the run.
            At::Slot(n) => n as f64 * seconds_per_slot as f64,
            At::Epoch(n) => n as f64 * slots_per_epoch as f64 * seconds_per_slot as f64,
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
            // In f64, as in [`At::seconds`]: the count is any u64 the file names.
            Span::Slots(n) => n as f64 * seconds_per_slot as f64,
            Span::Epochs(n) => n as f64 * slots_per_epoch as f64 * seconds_per_slot as f64,
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

    /// The (primary) beacon node a dvnode (short name `dv0-2`) talks to; `None` for any other
    /// name.
    pub fn beacon_node_of(&self, dvnode: &str) -> Option<&str> {
        self.clusters.iter().find_map(|c| {
            let n: usize = dvnode
                .strip_prefix(&c.name)?
                .strip_prefix('-')?
                .parse()
                .ok()?;
            c.beacon_nodes_of(n).first().copied()
        })
    }

    /// Seconds from genesis to the end of the observed window.
    pub fn run_seconds(&self) -> f64 {
        self.duration.epochs as f64
            * self.network.preset.slots_per_epoch() as f64
            * self.network.seconds_per_slot as f64
    }
}

/// An assertion metric: what a devnet file's `assertions` may name, and what the report
/// evaluates (`dvlab::report::metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// `baseline_inclusion_rate`: the baseline's attestation inclusion rate.
    BaselineInclusionRate,
    /// `keepers_inclusion_rate`: the keepers' attestation inclusion rate.
    KeepersInclusionRate,
    /// `dv_inclusion_rate`: the lowest inclusion rate of the DV clusters.
    DvInclusionRate,
    /// `dv_vs_baseline_ratio`: the lowest DV cluster inclusion rate over the baseline's.
    DvVsBaselineRatio,
    /// `slashable_messages`: violations found by the slashing audit.
    SlashableMessages,
    /// `finalized_epoch`: the highest finalized epoch any beacon node reported.
    FinalizedEpoch,
    /// `baseline_inclusion_distance_p99`: the baseline's 99th-percentile inclusion distance.
    BaselineInclusionDistanceP99,
    /// `dv_inclusion_outside_faults`: the lowest DV inclusion rate outside every fault window.
    DvInclusionOutsideFaults,
    /// `dv_inclusion_during_faults`: the lowest DV inclusion rate inside any fault window.
    DvInclusionDuringFaults,
    /// `dv_inclusion_steady`: the lowest DV inclusion rate outside faults and recoveries.
    DvInclusionSteady,
    /// `baseline_inclusion_outside_faults`: the baseline's, outside every fault window.
    BaselineInclusionOutsideFaults,
    /// `baseline_inclusion_during_faults`: the baseline's, inside any fault window.
    BaselineInclusionDuringFaults,
    /// `dv_baseline_gap_during_faults`: how far the worst DV cluster's inclusion rate inside
    /// the fault windows falls below what every plain (non-DV) validator — baseline and keepers
    /// — did in the same slots (slot-matched: `analyse::FaultControl`; ≤ 0 when the DV does as
    /// well).
    DvBaselineGapDuringFaults,
    /// `dv_partial_participation_during_faults`: the lowest, over the fault windows and the
    /// DV clusters' nodes, share of the cluster's successful duty records (any node's, any
    /// kind) for slots in the window that hold the node's partial signature — whether each node
    /// itself kept contributing, not only its cluster.
    DvPartialParticipationDuringFaults,
    /// `dv_attestations_during_partition`: DV attestations signed while partitioned.
    DvAttestationsDuringPartition,
    /// `max_recovery_slots`: the worst recovery after a heal, in slots.
    MaxRecoverySlots,
    /// `faults_executed`: fault occurrences executed.
    FaultsExecuted,
    /// `fault_errors`: fault occurrences with an executor error.
    FaultErrors,
    /// `correct_target_rate` (Assertoor gate `>= 0.98`): the lowest, over the groups, share
    /// of attestation duties included in time with the correct target.
    CorrectTargetRate,
    /// `correct_head_rate` (Assertoor gate `>= 0.8`): the same with the correct head.
    CorrectHeadRate,
    /// `reorgs_per_epoch` (Assertoor gate `<= 2`): abandoned branches per epoch of the window.
    ReorgsPerEpoch,
    /// `unfinalized_epochs` (Assertoor gate `<= 3`): the highest finality delay in epochs.
    UnfinalizedEpochs,
    /// `head_agreement`: share of sampled instants at which all beacon nodes had one head.
    HeadAgreement,
    /// `dv_effectiveness`: the lowest mean attestation effectiveness of the DV clusters.
    DvEffectiveness,
    /// `dv_aggregation_rate`: the lowest, over the DV clusters in remote-signer mode, share of
    /// aggregation duties whose aggregate a beacon node accepted.
    DvAggregationRate,
    /// `dv_sync_contribution_rate`: the same for sync-committee contribution duties.
    DvSyncContributionRate,
    /// `dv_aggregation_outside_faults`: the lowest, over the DV clusters in remote-signer mode
    /// with an aggregation duty outside every fault window, share of those duties whose
    /// aggregate a beacon node accepted. Not evaluated (neither holds nor fails the run) without
    /// a remote-signer cluster or without any such duty; implied in every run with a
    /// remote-signer cluster whose file does not name it (`dvlab::report::implied_assertions`).
    DvAggregationOutsideFaults,
    /// `dv_sync_contribution_outside_faults`: the same for sync-committee contribution duties.
    DvSyncContributionOutsideFaults,
}

impl Metric {
    /// Every metric, in the order error messages list them.
    pub const ALL: [Metric; 28] = [
        Metric::BaselineInclusionRate,
        Metric::KeepersInclusionRate,
        Metric::DvInclusionRate,
        Metric::DvVsBaselineRatio,
        Metric::SlashableMessages,
        Metric::FinalizedEpoch,
        Metric::BaselineInclusionDistanceP99,
        Metric::DvInclusionOutsideFaults,
        Metric::DvInclusionDuringFaults,
        Metric::DvInclusionSteady,
        Metric::BaselineInclusionOutsideFaults,
        Metric::BaselineInclusionDuringFaults,
        Metric::DvBaselineGapDuringFaults,
        Metric::DvPartialParticipationDuringFaults,
        Metric::DvAttestationsDuringPartition,
        Metric::MaxRecoverySlots,
        Metric::FaultsExecuted,
        Metric::FaultErrors,
        Metric::CorrectTargetRate,
        Metric::CorrectHeadRate,
        Metric::ReorgsPerEpoch,
        Metric::UnfinalizedEpochs,
        Metric::HeadAgreement,
        Metric::DvEffectiveness,
        Metric::DvAggregationRate,
        Metric::DvSyncContributionRate,
        Metric::DvAggregationOutsideFaults,
        Metric::DvSyncContributionOutsideFaults,
    ];

    /// Name as written in a devnet file and in `report.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::BaselineInclusionRate => "baseline_inclusion_rate",
            Metric::KeepersInclusionRate => "keepers_inclusion_rate",
            Metric::DvInclusionRate => "dv_inclusion_rate",
            Metric::DvVsBaselineRatio => "dv_vs_baseline_ratio",
            Metric::SlashableMessages => "slashable_messages",
            Metric::FinalizedEpoch => "finalized_epoch",
            Metric::BaselineInclusionDistanceP99 => "baseline_inclusion_distance_p99",
            Metric::DvInclusionOutsideFaults => "dv_inclusion_outside_faults",
            Metric::DvInclusionDuringFaults => "dv_inclusion_during_faults",
            Metric::DvInclusionSteady => "dv_inclusion_steady",
            Metric::BaselineInclusionOutsideFaults => "baseline_inclusion_outside_faults",
            Metric::BaselineInclusionDuringFaults => "baseline_inclusion_during_faults",
            Metric::DvBaselineGapDuringFaults => "dv_baseline_gap_during_faults",
            Metric::DvPartialParticipationDuringFaults => "dv_partial_participation_during_faults",
            Metric::DvAttestationsDuringPartition => "dv_attestations_during_partition",
            Metric::MaxRecoverySlots => "max_recovery_slots",
            Metric::FaultsExecuted => "faults_executed",
            Metric::FaultErrors => "fault_errors",
            Metric::CorrectTargetRate => "correct_target_rate",
            Metric::CorrectHeadRate => "correct_head_rate",
            Metric::ReorgsPerEpoch => "reorgs_per_epoch",
            Metric::UnfinalizedEpochs => "unfinalized_epochs",
            Metric::HeadAgreement => "head_agreement",
            Metric::DvEffectiveness => "dv_effectiveness",
            Metric::DvAggregationRate => "dv_aggregation_rate",
            Metric::DvSyncContributionRate => "dv_sync_contribution_rate",
            Metric::DvAggregationOutsideFaults => "dv_aggregation_outside_faults",
            Metric::DvSyncContributionOutsideFaults => "dv_sync_contribution_outside_faults",
        }
    }

    /// The metric named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether it measures DV clusters (a devnet without one cannot assert it).
    pub fn needs_cluster(self) -> bool {
        matches!(
            self,
            Metric::DvInclusionRate
                | Metric::DvVsBaselineRatio
                | Metric::DvInclusionOutsideFaults
                | Metric::DvInclusionDuringFaults
                | Metric::DvInclusionSteady
                | Metric::DvBaselineGapDuringFaults
                | Metric::DvPartialParticipationDuringFaults
                | Metric::DvAttestationsDuringPartition
                | Metric::DvEffectiveness
                | Metric::DvAggregationRate
                | Metric::DvSyncContributionRate
                | Metric::DvAggregationOutsideFaults
                | Metric::DvSyncContributionOutsideFaults
        )
    }

    /// Whether it measures the baseline (a devnet without one cannot assert it).
    pub fn needs_baseline(self) -> bool {
        matches!(
            self,
            Metric::BaselineInclusionRate
                | Metric::BaselineInclusionDistanceP99
                | Metric::BaselineInclusionOutsideFaults
                | Metric::BaselineInclusionDuringFaults
                | Metric::DvBaselineGapDuringFaults
                | Metric::DvVsBaselineRatio
        )
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons() {
        assert!(Comparison::parse(">= 0.95").unwrap().holds(0.95));
        assert!(!Comparison::parse("> 0.95").unwrap().holds(0.95));
        assert!(Comparison::parse("== 0").unwrap().holds(0.0));
        assert!(Comparison::parse("=< 1").is_err());
        assert!(Comparison::parse(">= x").is_err());
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
}
