//! Validation of a devnet file: YAML syntax and shape through `serde_yaml` (which knows the
//! line), then the semantic checks (an unknown beacon node, `threshold > nodes`, a fault whose
//! fields do not fit its kind, …), each located with [`locate`]. Every problem found is
//! reported, in file order, not only the first.

use super::locate::locate;
use super::schema::{
    parse_offset, parse_rate, At, Comparison, DevnetSpec, FaultKind, FaultSpec, KeySource, Metric,
    Scalar, Span,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

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
        let problems = problems(&spec);
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
}

/// Semantic problems as (field path, message), in the order they are found.
#[derive(Debug, Default)]
struct Problems(Vec<(String, String)>);

impl Problems {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push((field.into(), message.into()));
    }
}

/// Upper bounds that keep every slot and time of a run far from u64 overflow (a year of
/// 12-second mainnet epochs is ≈ 82,000 epochs).
const MAX_EPOCHS: u64 = 1_000_000;
const MAX_SECONDS_PER_SLOT: u64 = 3_600;
const MAX_GENESIS_DELAY: u64 = 86_400;
/// Genesis delay a devnet with a `keys: dkg` cluster needs at least: the ceremony, the genesis
/// state and the beacon nodes' start all happen before genesis.
pub const MIN_DKG_GENESIS_DELAY: u64 = 45;

/// Every semantic problem of `spec`.
fn problems(spec: &DevnetSpec) -> Vec<(String, String)> {
    let mut p = Problems::default();
    name_and_network(spec, &mut p);
    let bn_names = beacon_nodes(spec, &mut p);
    keepers_and_baseline(spec, &bn_names, &mut p);
    clusters(spec, &bn_names, &mut p);
    validator_counts(spec, &mut p);
    if spec.duration.epochs == 0 {
        p.err("duration.epochs", "must be at least 1");
    }
    if spec.duration.epochs > MAX_EPOCHS {
        p.err("duration.epochs", format!("must be at most {MAX_EPOCHS}"));
    }
    faults(spec, &mut p);
    assertions(spec, &mut p);
    p.0
}

fn name_and_network(spec: &DevnetSpec, p: &mut Problems) {
    if !valid_name(&spec.name) {
        p.err(
            "name",
            format!(
                "`{}` must be 1-40 characters of a-z, 0-9 and '-', starting with a letter",
                spec.name
            ),
        );
    }
    if spec.network.seconds_per_slot == 0 {
        p.err("network.seconds_per_slot", "must be at least 1");
    }
    if spec.network.seconds_per_slot > MAX_SECONDS_PER_SLOT {
        p.err(
            "network.seconds_per_slot",
            format!("must be at most {MAX_SECONDS_PER_SLOT}"),
        );
    }
    if spec.network.genesis_delay > MAX_GENESIS_DELAY {
        p.err(
            "network.genesis_delay",
            format!("must be at most {MAX_GENESIS_DELAY} s (one day)"),
        );
    }
    if spec.network.genesis_delay < 10 {
        p.err(
            "network.genesis_delay",
            format!(
                "{} s is too short for the containers to start; use at least 10",
                spec.network.genesis_delay
            ),
        );
    }
}

/// Checks the beacon nodes; returns their names.
fn beacon_nodes<'a>(spec: &'a DevnetSpec, p: &mut Problems) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    if spec.beacon_nodes.is_empty() {
        p.err("beacon_nodes", "at least one beacon node is needed");
    }
    for (i, bn) in spec.beacon_nodes.iter().enumerate() {
        if !valid_name(&bn.name) {
            p.err(
                format!("beacon_nodes[{i}].name"),
                format!("`{}` is not a valid name (a-z, 0-9, '-')", bn.name),
            );
        }
        if !names.insert(bn.name.as_str()) {
            p.err(
                format!("beacon_nodes[{i}].name"),
                format!("duplicate beacon node `{}`", bn.name),
            );
        }
        if spec.prometheus && bn.name == "prometheus" {
            p.err(
                format!("beacon_nodes[{i}].name"),
                "`prometheus` is the Prometheus container's name (or set `prometheus: false`)",
            );
        }
    }
    names
}

fn keepers_and_baseline(spec: &DevnetSpec, bn_names: &BTreeSet<&str>, p: &mut Problems) {
    if spec.keepers.count == 0 {
        p.err("keepers.count", "at least one keeper is needed");
    }
    if !bn_names.contains(spec.keepers.beacon_node.as_str()) {
        p.err(
            "keepers.beacon_node",
            format!("unknown beacon node `{}`", spec.keepers.beacon_node),
        );
    } else if spec.beacon_nodes.first().map(|b| b.name.as_str())
        != Some(spec.keepers.beacon_node.as_str())
    {
        p.err(
            "keepers.beacon_node",
            format!(
                "keepers run inside the first beacon node (`{}`), not `{}`",
                spec.beacon_nodes[0].name, spec.keepers.beacon_node
            ),
        );
    }
    if let Some(b) = &spec.baseline {
        if b.count == 0 {
            p.err("baseline.count", "must be at least 1");
        }
        if !bn_names.contains(b.beacon_node.as_str()) {
            p.err(
                "baseline.beacon_node",
                format!("unknown beacon node `{}`", b.beacon_node),
            );
        }
    }
}

fn clusters(spec: &DevnetSpec, bn_names: &BTreeSet<&str>, p: &mut Problems) {
    let mut cluster_names = BTreeSet::new();
    for (i, c) in spec.clusters.iter().enumerate() {
        let f = |k: &str| format!("clusters[{i}].{k}");
        if !valid_name(&c.name) || matches!(c.name.as_str(), "baseline" | "keepers") {
            p.err(
                f("name"),
                format!("`{}` is not a valid cluster name", c.name),
            );
        }
        if !cluster_names.insert(c.name.as_str()) || bn_names.contains(c.name.as_str()) {
            p.err(f("name"), format!("duplicate name `{}`", c.name));
        }
        if c.nodes < 3 {
            p.err(
                f("nodes"),
                format!("{} nodes; a cluster needs at least 3", c.nodes),
            );
        }
        if c.threshold * 2 <= c.nodes && c.threshold <= c.nodes {
            p.err(
                f("threshold"),
                format!(
                    "threshold {} must be more than half of {} nodes",
                    c.threshold, c.nodes
                ),
            );
        }
        if c.threshold == 0 || c.threshold > c.nodes {
            p.err(
                f("threshold"),
                format!(
                    "threshold {} is impossible with {} nodes (need 1 <= threshold <= nodes)",
                    c.threshold, c.nodes
                ),
            );
        }
        if c.validators == 0 {
            p.err(f("validators"), "must be at least 1");
        }
        if c.beacon_nodes.len() as u64 != c.nodes {
            p.err(
                f("beacon_nodes"),
                format!(
                    "lists {} beacon nodes for {} nodes (one per node)",
                    c.beacon_nodes.len(),
                    c.nodes
                ),
            );
        }
        if c.keys == KeySource::Dkg {
            // dvlab builds the genesis state itself (crate::genesis): Altair from genesis on,
            // and the ceremony (~10-30 s) runs before any beacon node starts.
            if spec.network.altair_fork_epoch != 0 {
                p.err(
                    f("keys"),
                    format!(
                        "`dkg` needs network.altair_fork_epoch: 0 (dvlab builds an Altair genesis \
                         state from the ceremony's deposits), not {}",
                        spec.network.altair_fork_epoch
                    ),
                );
            }
            if spec.network.genesis_delay < MIN_DKG_GENESIS_DELAY {
                p.err(
                    f("keys"),
                    format!(
                        "`dkg` runs the ceremony before genesis: network.genesis_delay must be at \
                         least {MIN_DKG_GENESIS_DELAY} s, not {}",
                        spec.network.genesis_delay
                    ),
                );
            }
        }
        for j in 0..c.beacon_nodes.len() {
            let names = c.beacon_nodes_of(j);
            for (k, bn) in names.iter().enumerate() {
                if !bn_names.contains(bn) {
                    p.err(
                        format!("clusters[{i}].beacon_nodes[{j}]"),
                        format!("unknown beacon node `{bn}`"),
                    );
                } else if names[..k].contains(bn) {
                    p.err(
                        format!("clusters[{i}].beacon_nodes[{j}]"),
                        format!("beacon node `{bn}` is listed twice"),
                    );
                }
            }
        }
    }
}

fn validator_counts(spec: &DevnetSpec, p: &mut Problems) {
    let used = spec.used_validators();
    if let Some(g) = spec.network.genesis_validators {
        if g < used {
            p.err(
                "network.genesis_validators",
                format!("{g} genesis validators but keepers, baseline and clusters need {used}"),
            );
        }
    }
    let total = spec.genesis_validators();
    if spec.keepers.count * 3 <= total * 2 {
        p.err(
            "keepers.count",
            format!(
                "{} keepers of {total} validators do not hold more than 2/3 of the stake; \
                 the chain would not finalise on its own",
                spec.keepers.count
            ),
        );
    }
}

fn assertions(spec: &DevnetSpec, p: &mut Problems) {
    for (name, expr) in &spec.assertions {
        let field = format!("assertions.{name}");
        let Some(metric) = Metric::parse(name) else {
            let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            p.err(
                field,
                format!("unknown assertion `{name}`; known: {}", known.join(", ")),
            );
            continue;
        };
        if let Err(m) = Comparison::parse(expr) {
            p.err(field.clone(), m);
        }
        if metric.needs_cluster() && spec.clusters.is_empty() {
            p.err(
                field.clone(),
                format!("`{name}` needs at least one cluster"),
            );
        }
        if metric.needs_baseline() && spec.baseline.is_none() {
            p.err(field, format!("`{name}` needs a baseline"));
        }
    }
}

/// What a fault entry with an `id` declared: (its index, kind, start in seconds after
/// genesis, whether it has a `for`).
type Declared = (usize, FaultKind, Option<f64>, bool);

/// Checks the `faults` list: each entry on its own, and `heal` entries against the ids declared
/// before them.
fn faults(spec: &DevnetSpec, p: &mut Problems) {
    let names: BTreeSet<String> = spec.container_names().into_iter().collect();
    let mut ids: BTreeMap<&str, Declared> = BTreeMap::new();
    let mut healed: BTreeSet<&str> = BTreeSet::new();
    for (i, f) in spec.faults.iter().enumerate() {
        let mut c = FaultCheck {
            spec,
            names: &names,
            i,
            f,
            p: &mut *p,
        };
        c.fields_fit_kind();
        let start = c.start();
        c.span("for", &f.for_);
        c.span("restart_after", &f.restart_after);
        c.id(&mut ids, start);
        if let Some(t) = &f.target {
            c.known(c.field("target"), t);
        }
        for (j, t) in f.targets.iter().enumerate() {
            c.known(format!("faults[{i}].targets[{j}]"), t);
        }
        match f.kind {
            FaultKind::Partition => c.partition(),
            FaultKind::Latency | FaultKind::Loss => c.latency_or_loss(),
            FaultKind::Bandwidth => c.bandwidth(),
            FaultKind::Crash | FaultKind::Stop | FaultKind::Pause => {
                c.need(f.target.is_some(), "target", "a container name");
            }
            FaultKind::ClockSkew => c.clock_skew(),
            FaultKind::RandomCrash | FaultKind::RandomStop => c.random(),
            FaultKind::Heal => c.heal(&ids, &mut healed, start),
            FaultKind::BnErrors | FaultKind::BnLatency => c.beacon_node_path(),
        }
    }
}

/// The checks of one fault entry, `faults[i]`.
struct FaultCheck<'a, 'p> {
    spec: &'a DevnetSpec,
    /// Container short names a fault may target.
    names: &'a BTreeSet<String>,
    i: usize,
    f: &'a FaultSpec,
    p: &'p mut Problems,
}

impl<'a> FaultCheck<'a, '_> {
    fn field(&self, k: &str) -> String {
        format!("faults[{}].{k}", self.i)
    }

    fn err(&mut self, k: &str, message: impl Into<String>) {
        let field = self.field(k);
        self.p.err(field, message);
    }

    fn kind(&self) -> &'static str {
        self.f.kind.as_str()
    }

    fn seconds(&self, s: Span) -> f64 {
        s.seconds(
            self.spec.network.seconds_per_slot,
            self.spec.network.preset.slots_per_epoch(),
        )
    }

    /// Fields set on the entry that its kind does not take.
    fn fields_fit_kind(&mut self) {
        let fields = self.f.kind.fields();
        for set in self.f.set_fields() {
            if !fields.contains(&set) {
                let kind = self.kind();
                self.err(
                    set,
                    format!(
                        "`{set}` does not apply to a {kind} fault (it takes: {})",
                        fields.join(", ")
                    ),
                );
            }
        }
    }

    /// `at`, in seconds after genesis (`None` when it does not parse).
    fn start(&mut self) -> Option<f64> {
        let (sps, spe) = (
            self.spec.network.seconds_per_slot,
            self.spec.network.preset.slots_per_epoch(),
        );
        let end = self.spec.run_seconds();
        match At::parse(&self.f.at) {
            Ok(a) => {
                let t = a.seconds(sps, spe);
                if t >= end {
                    let message = format!(
                        "`{}` is at or after the end of the run ({} epochs = {end} s after genesis)",
                        self.f.at, self.spec.duration.epochs
                    );
                    self.err("at", message);
                }
                Some(t)
            }
            Err(m) => {
                self.err("at", m);
                None
            }
        }
    }

    /// A duration field, when set, must parse and be longer than zero.
    fn span(&mut self, k: &str, v: &Option<String>) {
        let Some(v) = v else { return };
        match Span::parse(v) {
            Ok(s) if self.seconds(s) > 0.0 => {}
            Ok(_) => self.err(k, format!("`{v}` must be longer than zero")),
            Err(m) => self.err(k, m),
        }
    }

    /// The entry's `id`: valid, not on a heal entry, not declared twice.
    fn id(&mut self, ids: &mut BTreeMap<&'a str, Declared>, start: Option<f64>) {
        let f = self.f;
        let Some(id) = &f.id else { return };
        if !valid_name(id) {
            self.err("id", format!("`{id}` is not a valid id (a-z, 0-9, '-')"));
        } else if f.kind == FaultKind::Heal {
            self.err("id", "a heal entry has no id");
        } else if ids
            .insert(id, (self.i, f.kind, start, f.for_.is_some()))
            .is_some()
        {
            self.err("id", format!("duplicate fault id `{id}`"));
        }
    }

    /// `name` must be a container of the run; `k` is the full field path.
    fn known(&mut self, k: String, name: &str) {
        if !self.names.contains(name) {
            let all: Vec<&str> = self.names.iter().map(String::as_str).collect();
            self.p.err(
                k,
                format!(
                    "unknown container `{name}`; targets are: {}",
                    all.join(", ")
                ),
            );
        }
    }

    fn need(&mut self, set: bool, k: &str, what: &str) {
        if !set {
            let kind = self.kind();
            self.err(k, format!("a {kind} fault needs `{k}` ({what})"));
        }
    }

    fn one_of(&mut self, a: bool, b: bool, (x, y): (&str, &str)) {
        if a == b {
            let kind = self.kind();
            self.err(
                x,
                format!("a {kind} fault needs exactly one of `{x}` and `{y}`"),
            );
        }
    }

    fn partition(&mut self) {
        let (f, i) = (self.f, self.i);
        self.one_of(
            !f.groups.is_empty(),
            f.isolate.is_some(),
            ("groups", "isolate"),
        );
        if let Some(x) = &f.isolate {
            self.known(self.field("isolate"), x);
        }
        if !f.groups.is_empty() && f.groups.len() < 2 {
            self.err("groups", "a partition needs at least two groups");
        }
        let mut seen = BTreeSet::new();
        for (g, group) in f.groups.iter().enumerate() {
            if group.is_empty() {
                self.p
                    .err(format!("faults[{i}].groups[{g}]"), "empty group");
            }
            for (j, name) in group.iter().enumerate() {
                let k = format!("faults[{i}].groups[{g}][{j}]");
                self.known(k.clone(), name);
                if !seen.insert(name.as_str()) {
                    self.p.err(k, format!("`{name}` is in more than one group"));
                }
            }
        }
    }

    fn latency_or_loss(&mut self) {
        let (f, i) = (self.f, self.i);
        self.one_of(!f.targets.is_empty(), f.link.is_some(), ("targets", "link"));
        if let Some(link) = &f.link {
            if link.len() != 2 || link[0] == link[1] {
                self.err(
                    "link",
                    "a link is two different containers, e.g. [dv0-0, dv0-1]",
                );
            }
            for (j, name) in link.iter().enumerate() {
                self.known(format!("faults[{i}].link[{j}]"), name);
            }
        }
        if !f.to.is_empty() {
            if f.link.is_some() {
                self.err(
                    "to",
                    "`to` narrows `targets`; a `link` already names both ends",
                );
            }
            for (j, name) in f.to.iter().enumerate() {
                let k = format!("faults[{i}].to[{j}]");
                self.known(k.clone(), name);
                if f.targets.contains(name) {
                    self.p.err(
                        k,
                        format!("`{name}` is both a target and a peer it sends to"),
                    );
                }
            }
        }
        if f.kind == FaultKind::Latency {
            self.delay();
        } else {
            match f.percent {
                None => self.need(false, "percent", "e.g. `10`"),
                Some(x) if !(x > 0.0 && x <= 100.0) => {
                    self.err("percent", format!("{x} is not a percentage in (0, 100]"))
                }
                Some(_) => {}
            }
        }
    }

    /// `delay` (required) and `jitter`: times between 0 and 60 s.
    fn delay(&mut self) {
        let f = self.f;
        self.need(f.delay.is_some(), "delay", "e.g. `200ms`");
        for (k, v) in [("delay", &f.delay), ("jitter", &f.jitter)] {
            if let Some(v) = v {
                match Span::parse(v) {
                    Ok(Span::Secs(x)) if (0.0..=60.0).contains(&x) => {}
                    _ => self.err(
                        k,
                        format!("`{v}` must be a time between 0 and 60s, e.g. `200ms`"),
                    ),
                }
            }
        }
    }

    /// `bn_errors` / `bn_latency`: the target is a dvnode (whose beacon node is known), the
    /// status an HTTP error, the delay a time.
    fn beacon_node_path(&mut self) {
        let f = self.f;
        self.need(f.target.is_some(), "target", "a dvnode, e.g. `dv0-1`");
        if let Some(t) = &f.target {
            if self.names.contains(t) && self.spec.beacon_node_of(t).is_none() {
                let kind = self.kind();
                self.err(
                    "target",
                    format!("`{t}` is not a dvnode; a {kind} fault acts on a dvnode's beacon node"),
                );
            }
        }
        if let Some(s) = f.status {
            if !(400..=599).contains(&s) {
                self.err(
                    "status",
                    format!("{s} is not an HTTP error status (400-599)"),
                );
            }
        }
        if f.kind == FaultKind::BnLatency {
            self.delay();
        }
    }

    fn bandwidth(&mut self) {
        let f = self.f;
        self.need(!f.targets.is_empty(), "targets", "container names");
        match &f.rate {
            None => self.need(false, "rate", "e.g. `1mbit`"),
            Some(Scalar::Text(r)) => {
                if let Err(m) = parse_rate(r) {
                    self.err("rate", m);
                }
            }
            Some(Scalar::Number(n)) => self.err(
                "rate",
                format!("`{n}` has no unit; use e.g. `1mbit` or `500kbit`"),
            ),
        }
    }

    fn clock_skew(&mut self) {
        let f = self.f;
        self.need(f.target.is_some(), "target", "a container name");
        match &f.offset {
            None => self.need(false, "offset", "e.g. `+3s`"),
            Some(o) => match parse_offset(o) {
                Ok(x) if x.abs() > 86_400.0 * 365.0 => {
                    self.err("offset", format!("`{o}` is more than a year"))
                }
                Ok(_) => {}
                Err(m) => self.err("offset", m),
            },
        }
    }

    fn random(&mut self) {
        let f = self.f;
        self.need(!f.targets.is_empty(), "targets", "container names");
        self.need(
            f.restart_after.is_some(),
            "restart_after",
            "random faults always restart, e.g. `20s`",
        );
        match &f.rate {
            None => self.need(false, "rate", "events per epoch, e.g. `0.5`"),
            Some(Scalar::Number(x)) if *x > 0.0 && *x <= 100.0 => {}
            Some(r) => self.err(
                "rate",
                format!("`{r}` must be events per epoch, a number in (0, 100]"),
            ),
        }
    }

    /// A heal entry names an earlier, healable fault without a `for`, once, and comes after
    /// it starts.
    fn heal(
        &mut self,
        ids: &BTreeMap<&str, Declared>,
        healed: &mut BTreeSet<&'a str>,
        start: Option<f64>,
    ) {
        let f = self.f;
        let Some(id) = &f.fault else {
            self.need(false, "fault", "the id of the fault to heal");
            return;
        };
        match ids.get(id.as_str()) {
            None => self.err("fault", format!("no earlier fault has id `{id}`")),
            Some((j, k, _, _)) if !k.healable() => self.err(
                "fault",
                format!(
                    "faults[{j}] (`{id}`) is a {} fault, which a heal entry cannot end",
                    k.as_str()
                ),
            ),
            Some((j, _, _, true)) => self.err(
                "fault",
                format!("faults[{j}] (`{id}`) already ends by its `for`"),
            ),
            Some((j, _, t0, _)) => {
                if !healed.insert(id) {
                    self.err("fault", format!("`{id}` is healed twice"));
                }
                if let (Some(t0), Some(t1)) = (t0, start) {
                    if t1 <= *t0 {
                        self.err(
                            "at",
                            format!("the heal of `{id}` must come after faults[{j}] starts"),
                        );
                    }
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FaultKind;

    const BASIC: &str = include_str!("../../../devnets/basic.yaml");
    const BASELINE_ONLY: &str = include_str!("../../../devnets/baseline-only.yaml");

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
    fn a_dkg_cluster_needs_an_altair_genesis_and_time_for_its_ceremony() {
        let dkg = BASIC.replace("vc: lodestar,", "vc: lodestar, keys: dkg,");
        assert_ne!(dkg, BASIC);
        // basic.yaml: genesis_delay 20 < 45.
        let errs = errors(&dkg);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "clusters[0].keys");
        assert!(
            errs[0]
                .message
                .contains("genesis_delay must be at least 45"),
            "{errs:?}"
        );
        let dkg = dkg
            .replace("genesis_delay: 20", "genesis_delay: 60")
            .replace("altair_fork_epoch: 0", "altair_fork_epoch: 2");
        let errs = errors(&dkg);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("altair_fork_epoch: 0"), "{errs:?}");
        let ok = dkg.replace("altair_fork_epoch: 2", "altair_fork_epoch: 0");
        DevnetSpec::parse(&ok, "t.yaml").unwrap();
        assert!(
            errors(&BASIC.replace("vc: lodestar,", "vc: lodestar, keys: shared,"))
                .iter()
                .any(|e| e.message.contains("unknown variant `shared`"))
        );
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
    fn fallback_beacon_nodes_are_a_list_checked_name_by_name() {
        let spec = DevnetSpec::parse(
            &BASIC.replace(
                "beacon_nodes: [bn0, bn0, bn1, bn1]",
                "beacon_nodes: [bn0, bn0, bn1, [bn1, bn0]]",
            ),
            "t.yaml",
        )
        .unwrap();
        assert_eq!(spec.clusters[0].beacon_nodes_of(3), ["bn1", "bn0"]);
        assert_eq!(spec.clusters[0].beacon_nodes_of(0), ["bn0"]);
        assert_eq!(spec.beacon_node_of("dv0-3"), Some("bn1"));
        for (list, message) in [
            ("[bn1, bn7]", "unknown beacon node `bn7`"),
            ("[bn1, bn1]", "beacon node `bn1` is listed twice"),
        ] {
            let text = BASIC.replace(
                "beacon_nodes: [bn0, bn0, bn1, bn1]",
                &format!("beacon_nodes: [bn0, bn0, bn1, {list}]"),
            );
            let errs = errors(&text);
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert_eq!(errs[0].field, "clusters[0].beacon_nodes[3]");
            assert!(errs[0].message.contains(message), "{errs:?}");
        }
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
        // The aggregation metrics outside the faults: known names, DV metrics.
        let agg = "dv_aggregation_outside_faults: \">= 0.9\", \
                   dv_sync_contribution_outside_faults: \">= 0.9\", ";
        let with_cluster = BASIC.replace("assertions: {", &format!("assertions: {{{agg}"));
        let spec = DevnetSpec::parse(&with_cluster, "t.yaml").unwrap();
        assert_eq!(spec.assertions["dv_aggregation_outside_faults"], ">= 0.9");
        let without = BASELINE_ONLY.replace("assertions: {", &format!("assertions: {{{agg}"));
        let errs = errors(&without);
        for m in [
            "dv_aggregation_outside_faults",
            "dv_sync_contribution_outside_faults",
        ] {
            assert!(
                errs.iter().any(|e| e.field == format!("assertions.{m}")
                    && e.message.contains("needs at least one cluster")),
                "{errs:?}"
            );
        }
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

    fn with_faults(faults: &str) -> String {
        BASIC.replace("faults: []", &format!("faults:\n{faults}"))
    }

    fn line_of(text: &str, needle: &str) -> Option<usize> {
        text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
    }

    /// Found by fuzz-smoke on CI: a slot, epoch or span count near u64::MAX overflowed while
    /// being converted to seconds (a panic in validation). Every such number is now an error
    /// naming its field, never a panic.
    #[test]
    fn huge_numbers_are_errors_not_panics() {
        let big = u64::MAX;
        for faults in [
            format!("  - {{at: epoch {big}, kind: crash, target: dv0-1, restart_after: 30s}}\n"),
            format!("  - {{at: slot {big}, kind: crash, target: dv0-1}}\n"),
        ] {
            let errs = errors(&with_faults(&faults));
            assert!(
                errs.iter().any(|e| e.field == "faults[0].at"),
                "{faults}: {errs:?}"
            );
        }
        for (from, to, field) in [
            (
                "duration: {epochs: 10}",
                format!("duration: {{epochs: {big}}}"),
                "duration.epochs",
            ),
            (
                "seconds_per_slot: 4",
                format!("seconds_per_slot: {big}"),
                "network.seconds_per_slot",
            ),
            (
                "genesis_delay: 20",
                format!("genesis_delay: {big}"),
                "network.genesis_delay",
            ),
        ] {
            assert!(BASIC.contains(from), "{from}");
            let errs = errors(&BASIC.replace(from, &to));
            assert!(errs.iter().any(|e| e.field == field), "{to}: {errs:?}");
        }
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
             \x20 - {at: epoch 1, kind: random_stop, rate: 1, targets: [bn1], restart_after: 1 epoch, for: 4 epochs}\n\
             \x20 - {at: epoch 3, kind: loss, percent: 100, targets: [dv0-2], to: [dv0-0, dv0-1, dv0-3], for: 2 epochs}\n\
             \x20 - {at: epoch 3, kind: bn_errors, target: dv0-1, for: 2 epochs}\n\
             \x20 - {at: epoch 3, kind: bn_latency, target: dv0-1, delay: 5s, for: 2 epochs}\n",
        );
        let spec = DevnetSpec::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.faults.len(), 14);
        assert_eq!(spec.beacon_node_of("dv0-1"), Some("bn0"));
        assert_eq!(spec.beacon_node_of("dv0-1-vc"), None);
        assert_eq!(spec.beacon_node_of("dv0-9"), None);
    }

    #[test]
    fn beacon_node_faults_and_one_way_loss_are_checked() {
        let text = with_faults(
            "  - {at: epoch 3, kind: bn_errors, target: bn0, status: 200, for: 2 epochs}\n\
             \x20 - {at: epoch 3, kind: bn_latency, target: dv0-1, for: 2 epochs}\n\
             \x20 - {at: epoch 3, kind: loss, percent: 100, targets: [dv0-2], to: [dv0-2, dv0-9], for: 2 epochs}\n\
             \x20 - {at: epoch 3, kind: loss, percent: 100, link: [dv0-1, dv0-2], to: [dv0-0], for: 2 epochs}\n\
             \x20 - {at: epoch 3, kind: bn_errors, target: dv0-1, to: [dv0-0], for: 2 epochs}\n",
        );
        let errs = errors(&text);
        let has = |field: &str, needle: &str| {
            assert!(
                errs.iter()
                    .any(|e| e.field == field && e.message.contains(needle)),
                "{field}: {needle}: {errs:?}"
            )
        };
        has("faults[0].target", "`bn0` is not a dvnode");
        has("faults[0].status", "200 is not an HTTP error status");
        has("faults[1].delay", "needs `delay`");
        has("faults[2].to[0]", "both a target and a peer");
        has("faults[2].to[1]", "unknown container `dv0-9`");
        has("faults[3].to", "a `link` already names both ends");
        has("faults[4].to", "does not apply to a bn_errors fault");
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
}
