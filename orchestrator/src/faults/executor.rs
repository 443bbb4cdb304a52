//! The executor: makes each action of a [`Timeline`] really happen in Docker on this kernel
//! (iptables rules and `tc` qdiscs from a `NET_ADMIN` sidecar in the target's network
//! namespace, `dvlab-netem` delayers, kill / stop / pause, offset files), re-applies network
//! faults to restarted containers, re-peers Lodestar beacon nodes, heals everything at
//! teardown, and logs every action to `faults.jsonl`.

use super::skew::{clock_dir, write_offset, FAKETIME_LIB};
use super::timeline::{slot_at, Action, Fault, Phase, Timeline};
use crate::data::{partition_sides, Effect, FaultLogLine, LogPhase, Scope};
use crate::plan::{Plan, Role, BN_REST_PORT, NETEM_IMAGE, ROLE_LABEL, RUN_LABEL};
use crate::runtime::exec;
use anyhow::{anyhow, bail, Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use dvnode::clock::{unix_now, SlotClock};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Port of the `bn_errors` fault's failing server in the dvnode's namespace.
const BN_ERRORS_PORT: u16 = 39_596;

/// Role label value of fault sidecars and delayers.
pub const SIDECAR_ROLE: &str = "fault-sidecar";

/// A container faults may target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultContainer {
    /// Short name (`dv0-1`, `bn0`).
    pub short: String,
    /// Docker container name.
    pub name: String,
    /// Whether it is a Lodestar beacon node (re-peered after partitions and restarts).
    pub beacon_node: bool,
}

impl FaultContainer {
    /// The containers of a plan.
    pub fn from_plan(plan: &Plan) -> Vec<FaultContainer> {
        let prefix = format!("dvlab-{}-", plan.run);
        plan.containers
            .iter()
            .map(|c| FaultContainer {
                short: c.name.strip_prefix(&prefix).unwrap_or(&c.name).to_string(),
                name: c.name.clone(),
                beacon_node: matches!(c.role, Role::BeaconNode { .. }),
            })
            .collect()
    }
}

/// An iptables rule installed in a container's network namespace.
#[derive(Debug, Clone)]
struct Rule {
    container: String,
    /// `filter` or `nat`.
    table: &'static str,
    chain: &'static str,
    spec: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    /// Active faults by id.
    active: BTreeMap<u16, Fault>,
    /// Rules installed per fault.
    rules: BTreeMap<u16, Vec<Rule>>,
    /// Delayer containers per fault.
    delayers: BTreeMap<u16, Vec<String>>,
    /// Sidecar per short name: (sidecar container name, target's StartedAt).
    sidecars: BTreeMap<String, (String, String)>,
    /// Active clock offsets per short name and fault.
    skews: BTreeMap<String, BTreeMap<u16, f64>>,
    /// Where the log goes, once `run` started.
    log: Option<PathBuf>,
}

struct Inner {
    docker: Docker,
    run: String,
    containers: BTreeMap<String, FaultContainer>,
    clock: SlotClock,
    run_dir: PathBuf,
    http: reqwest::Client,
    state: Mutex<State>,
}

/// Executes a [`Timeline`] against the containers of a run. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl Executor {
    /// An executor for `containers` of run `run` (the value of its `dvlab.run` label).
    /// `run_dir` holds the clock offset directories ([`clock_dir`]).
    pub fn new(
        docker: Docker,
        run: &str,
        containers: Vec<FaultContainer>,
        clock: SlotClock,
        run_dir: &Path,
    ) -> Result<Executor> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Executor {
            inner: Arc::new(Inner {
                docker,
                run: run.to_string(),
                containers: containers
                    .into_iter()
                    .map(|c| (c.short.clone(), c))
                    .collect(),
                clock,
                run_dir: run_dir.to_path_buf(),
                http,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// An executor for every container of `plan`.
    pub fn for_plan(docker: Docker, plan: &Plan, run_dir: &Path) -> Result<Executor> {
        Executor::new(
            docker,
            &plan.run,
            FaultContainer::from_plan(plan),
            plan.slot_clock(),
            run_dir,
        )
    }

    /// Runs the timeline in a task: sleeps until each action, executes it and logs it to
    /// `out_dir/faults.jsonl`. A failed action is logged with its error and the task goes on;
    /// it then returns an error naming every failed action. Abort the handle to stop early,
    /// and call [`Executor::heal_all`] at teardown either way.
    pub fn run(&self, timeline: Timeline, out_dir: &Path) -> JoinHandle<Result<()>> {
        let this = self.clone();
        let out = out_dir.to_path_buf();
        tokio::spawn(async move {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            this.inner.state.lock().await.log = Some(out.join("faults.jsonl"));
            let mut failures = Vec::new();
            for a in timeline.actions {
                let wait = a.time - unix_now().as_secs_f64();
                if wait > 0.0 {
                    // try_: a wait too long for a Duration is a wait past the run.
                    tokio::time::sleep(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
                        .await;
                }
                if let Err(e) = this.execute(&a).await {
                    failures.push(format!(
                        "fault {} ({} {:?}) at slot {}: {e:#}",
                        a.fault.id,
                        a.fault.effect.kind(),
                        a.phase,
                        a.slot
                    ));
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                bail!(
                    "{} fault action(s) failed:\n{}",
                    failures.len(),
                    failures.join("\n")
                )
            }
        })
    }

    /// Starts or stops one fault now and logs it.
    pub async fn execute(&self, a: &Action) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        let res = match a.phase {
            Phase::Start => self.start(&mut st, &a.fault).await,
            Phase::Stop => self.stop(&mut st, &a.fault).await,
        };
        self.log(&st, a.time, &a.fault, a.phase.into(), res.as_ref().err());
        res
    }

    /// Appends one line to `faults.jsonl` (once [`Executor::run`] set where it goes).
    fn log(
        &self,
        st: &State,
        scheduled: f64,
        f: &Fault,
        phase: LogPhase,
        err: Option<&anyhow::Error>,
    ) {
        let Some(path) = &st.log else { return };
        let now = unix_now().as_secs_f64();
        let line = FaultLogLine {
            time: now,
            scheduled,
            slot: slot_at(&self.inner.clock, now),
            fault: f.id.into(),
            source: f.source,
            name: f.name.clone(),
            kind: f.effect.kind().into(),
            phase,
            targets: f.effect.targets(),
            effect: Some(f.effect.clone()),
            error: err.map(|e| format!("{e:#}")),
        };
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            let text = serde_json::to_string(&line).map_err(std::io::Error::other)?;
            writeln!(file, "{text}")
        };
        if let Err(e) = write() {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }

    fn container(&self, short: &str) -> Result<&FaultContainer> {
        self.inner
            .containers
            .get(short)
            .ok_or_else(|| anyhow!("`{short}` is not a container of run {}", self.inner.run))
    }

    async fn start(&self, st: &mut State, f: &Fault) -> Result<()> {
        st.active.insert(f.id, f.clone());
        let d = &self.inner.docker;
        match &f.effect {
            e if e.is_network() => self.apply_network(st, f).await,
            Effect::Crash { target } => {
                let name = &self.container(target)?.name;
                d.kill_container(
                    name,
                    Some(
                        KillContainerOptionsBuilder::default()
                            .signal("SIGKILL")
                            .build(),
                    ),
                )
                .await
                .with_context(|| format!("killing {name}"))
            }
            Effect::Stop { target } => {
                let name = &self.container(target)?.name;
                d.stop_container(
                    name,
                    Some(StopContainerOptionsBuilder::default().t(10).build()),
                )
                .await
                .with_context(|| format!("stopping {name}"))
            }
            Effect::Pause { target } => {
                let name = &self.container(target)?.name;
                d.pause_container(name)
                    .await
                    .with_context(|| format!("pausing {name}"))
            }
            Effect::ClockSkew {
                target,
                offset_secs,
            } => {
                // An image without libfaketime would turn the skew into a silent no-op.
                let name = &self.container(target)?.name;
                let state = self.inspect_target(target).await?.state;
                if state.is_some_and(|s| s.running == Some(true) && s.paused != Some(true)) {
                    exec(d, name, &["test".into(), "-e".into(), FAKETIME_LIB.into()])
                        .await
                        .with_context(|| {
                            format!("{name} has no {FAKETIME_LIB}; rebuild images (`dvlab images build`)")
                        })?;
                }
                st.skews
                    .entry(target.clone())
                    .or_default()
                    .insert(f.id, *offset_secs);
                self.write_skew(st, target)
            }
            _ => unreachable!("network effects handled above"),
        }
    }

    async fn stop(&self, st: &mut State, f: &Fault) -> Result<()> {
        st.active.remove(&f.id);
        let d = &self.inner.docker;
        match &f.effect {
            e if e.is_network() => {
                self.heal_network(st, f).await?;
                if let Effect::Partition { groups } = &f.effect {
                    self.repeer_groups(st, f, groups).await;
                }
                Ok(())
            }
            Effect::Crash { target } | Effect::Stop { target } => {
                let name = self.container(target)?.name.clone();
                d.start_container(&name, None)
                    .await
                    .with_context(|| format!("starting {name} again"))?;
                self.after_restart(st, target).await
            }
            Effect::Pause { target } => {
                let name = &self.container(target)?.name;
                d.unpause_container(name)
                    .await
                    .with_context(|| format!("unpausing {name}"))
            }
            Effect::ClockSkew { target, .. } => {
                if let Some(m) = st.skews.get_mut(target) {
                    m.remove(&f.id);
                }
                self.write_skew(st, target)
            }
            _ => unreachable!("network effects handled above"),
        }
    }

    fn write_skew(&self, st: &State, target: &str) -> Result<()> {
        let total: f64 = st.skews.get(target).map_or(0.0, |m| m.values().sum());
        write_offset(&self.inner.run_dir.join(clock_dir(target)), total)
    }

    /// Re-applies active network faults involving a container that (re)started with a new
    /// network namespace, and re-peers it if it is a beacon node.
    async fn after_restart(&self, st: &mut State, short: &str) -> Result<()> {
        let involved: Vec<Fault> = st
            .active
            .values()
            .filter(|f| f.effect.is_network() && f.effect.targets().iter().any(|t| t == short))
            .cloned()
            .collect();
        let mut errors = Vec::new();
        for f in involved {
            // Rules and delayers in the old namespace vanished with it.
            if let Some(rules) = st.rules.get_mut(&f.id) {
                rules.retain(|r| r.container != short);
            }
            let res = async {
                self.heal_network(st, &f).await?;
                self.apply_network(st, &f).await
            }
            .await;
            self.log(
                st,
                unix_now().as_secs_f64(),
                &f,
                LogPhase::Reapply,
                res.as_ref().err(),
            );
            if let Err(e) = res {
                errors.push(format!("{e:#}"));
            }
        }
        if self.container(short)?.beacon_node {
            self.repeer(st, short).await;
        }
        if !errors.is_empty() {
            bail!("re-applying faults to {short}: {}", errors.join("; "));
        }
        Ok(())
    }

    /// Installs the rules / delayers / qdiscs of a network fault. Containers that are down
    /// are skipped: the fault is re-applied when they start again.
    async fn apply_network(&self, st: &mut State, f: &Fault) -> Result<()> {
        let mut rules: Vec<Rule> = Vec::new();
        let comment = format!("dvlab-fault-{}", f.id);
        let mut add_to = |container: &str, table, chain: &'static str, spec: Vec<String>| {
            let mut spec = spec;
            spec.extend(["-m", "comment", "--comment", &comment].map(String::from));
            rules.push(Rule {
                container: container.to_string(),
                table,
                chain,
                spec,
            });
        };
        let mut add = |container: &str, chain: &'static str, spec: Vec<String>| {
            add_to(container, "filter", chain, spec)
        };
        let mut delayers: Vec<(String, u16, f64, f64)> = Vec::new();
        let mut error_servers: Vec<(String, u16)> = Vec::new();
        match &f.effect {
            Effect::Partition { groups } => {
                // Rules on INPUT and OUTPUT of one side block both directions; they go on every
                // group but the largest, so isolating one container touches only it.
                for side in partition_sides(groups) {
                    for m in side.group {
                        if !self.running(m).await? {
                            continue;
                        }
                        for o in &side.others {
                            let Some(ip) = self.ip(o).await? else {
                                continue;
                            };
                            add(
                                m,
                                "INPUT",
                                vec!["-s".into(), ip.clone(), "-j".into(), "DROP".into()],
                            );
                            add(
                                m,
                                "OUTPUT",
                                vec!["-d".into(), ip, "-j".into(), "DROP".into()],
                            );
                        }
                    }
                }
            }
            Effect::Loss { scope, percent } => {
                // One-way (`to`): only what carries data is lost: TCP segments with PSH or
                // longer than any bare ACK (20 + 20 + 40 bytes of options), and every
                // non-TCP packet. The targets' acknowledgements pass, so the peers' data keeps
                // reaching them over the same connections while theirs never arrives.
                let matches: Vec<Vec<&str>> = if matches!(scope, Scope::To(..)) {
                    vec![
                        vec!["-p", "tcp", "--tcp-flags", "PSH", "PSH"],
                        vec!["-p", "tcp", "-m", "length", "--length", "81:65535"],
                        vec!["!", "-p", "tcp"],
                    ]
                } else {
                    vec![vec![]]
                };
                for (t, peer) in scope.legs() {
                    let Some(base) = self.egress_match(&t, peer).await? else {
                        continue;
                    };
                    for m in &matches {
                        let mut spec = base.clone();
                        spec.extend(m.iter().map(|s| s.to_string()));
                        spec.extend(
                            [
                                "-m",
                                "statistic",
                                "--mode",
                                "random",
                                "--probability",
                                &format!("{:.6}", percent / 100.0),
                                "-j",
                                "DROP",
                            ]
                            .map(String::from),
                        );
                        add(&t, "OUTPUT", spec);
                    }
                }
            }
            Effect::BnErrors {
                target,
                beacon_node,
                status,
            } => {
                // A dvnode that is down gets the fault when it starts again.
                let bn = match self.running(target).await? {
                    true => self.ip(beacon_node).await?,
                    false => None,
                };
                if let Some(bn) = bn {
                    let to_bn = ["-p", "tcp", "-d", &bn, "--dport", &BN_REST_PORT.to_string()]
                        .map(String::from)
                        .to_vec();
                    // New connections to the beacon node's REST port go to the failing
                    // server in the dvnode's namespace...
                    let mut redirect = to_bn.clone();
                    redirect.extend(
                        ["-j", "REDIRECT", "--to-ports", &BN_ERRORS_PORT.to_string()]
                            .map(String::from),
                    );
                    add_to(target, "nat", "OUTPUT", redirect);
                    // ...and those opened before (pooled keep-alive connections, the event
                    // stream) are reset, so that they reconnect there. Redirected packets
                    // no longer match: their destination is already the local port.
                    let mut reset = to_bn;
                    reset.extend(["-j", "REJECT", "--reject-with", "tcp-reset"].map(String::from));
                    add_to(target, "filter", "OUTPUT", reset);
                    error_servers.push((target.clone(), *status));
                }
            }
            Effect::Latency {
                scope,
                delay_ms,
                jitter_ms,
            } => {
                for (t, peer) in scope.legs() {
                    let Some(mut spec) = self.egress_match(&t, peer).await? else {
                        continue;
                    };
                    spec.extend(
                        ["-j", "NFQUEUE", "--queue-num", &f.id.to_string()].map(String::from),
                    );
                    add(&t, "OUTPUT", spec);
                    if !delayers.iter().any(|d| d.0 == t) {
                        delayers.push((t.clone(), f.id, *delay_ms, *jitter_ms));
                    }
                }
            }
            Effect::Bandwidth { targets, .. } => {
                for t in targets {
                    if self.running(t).await? {
                        self.set_tbf(st, t).await?;
                    }
                }
            }
            _ => {}
        }
        // The delayer must be bound before packets are queued to it (no bypass: a missing
        // delayer drops traffic rather than silently removing the fault).
        for (t, queue, delay, jitter) in delayers {
            let name = self.start_delayer(t.as_str(), queue, delay, jitter).await?;
            st.delayers.entry(f.id).or_default().push(name);
        }
        // Likewise the failing server listens before connections are redirected to it.
        for (t, status) in error_servers {
            let name = format!("dvlab-{}-fx-{t}-e{}", self.inner.run, f.id);
            let cmd = [
                "dvlab-netem",
                "--http-error-port",
                &BN_ERRORS_PORT.to_string(),
                "--status",
                &status.to_string(),
            ]
            .map(String::from)
            .to_vec();
            self.start_helper(&t, &name, cmd, "dvlab-netem: http-error")
                .await?;
            st.delayers.entry(f.id).or_default().push(name);
        }
        for r in &rules {
            // DROP rules go first: an NFQUEUE ACCEPT verdict ends the chain.
            let op = if r.spec.iter().any(|s| s == "NFQUEUE") {
                "-A"
            } else {
                "-I"
            };
            let mut cmd = vec![
                "iptables".to_string(),
                "-w".into(),
                "-t".into(),
                r.table.into(),
                op.into(),
                r.chain.into(),
            ];
            cmd.extend(r.spec.iter().cloned());
            self.sidecar_exec(st, &r.container, &cmd).await?;
            st.rules.entry(f.id).or_default().push(r.clone());
        }
        Ok(())
    }

    /// Removes what [`Self::apply_network`] installed; best effort on containers that are
    /// down (their namespace is gone with them).
    async fn heal_network(&self, st: &mut State, f: &Fault) -> Result<()> {
        let mut errors = Vec::new();
        for r in st.rules.remove(&f.id).unwrap_or_default() {
            if !self.running(&r.container).await.unwrap_or(false) {
                continue;
            }
            let mut cmd = vec![
                "iptables".to_string(),
                "-w".into(),
                "-t".into(),
                r.table.into(),
                "-D".into(),
                r.chain.into(),
            ];
            cmd.extend(r.spec);
            if let Err(e) = self.sidecar_exec(st, &r.container, &cmd).await {
                errors.push(format!("{e:#}"));
            }
        }
        for name in st.delayers.remove(&f.id).unwrap_or_default() {
            self.remove(&name).await;
        }
        if let Effect::Bandwidth { targets, .. } = &f.effect {
            for t in targets {
                if self.running(t).await.unwrap_or(false) {
                    if let Err(e) = self.set_tbf(st, t).await {
                        errors.push(format!("{e:#}"));
                    }
                }
            }
        }
        if !errors.is_empty() {
            bail!("healing fault {}: {}", f.id, errors.join("; "));
        }
        Ok(())
    }

    /// Sets the TBF of `short` to the lowest active bandwidth limit on it, or removes it.
    async fn set_tbf(&self, st: &mut State, short: &str) -> Result<()> {
        let rate = st
            .active
            .values()
            .filter_map(|f| match &f.effect {
                Effect::Bandwidth {
                    targets,
                    bits_per_sec,
                } if targets.iter().any(|t| t == short) => Some(*bits_per_sec),
                _ => None,
            })
            .min();
        let cmd: Vec<String> = match rate {
            Some(bits) => {
                // Burst: 20 ms worth of traffic, at least a few full frames.
                let burst = (bits / 8 / 50).max(16_000);
                [
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    "eth0",
                    "root",
                    "tbf",
                    "rate",
                    &format!("{bits}bit"),
                    "burst",
                    &burst.to_string(),
                    "latency",
                    "400ms",
                ]
                .map(String::from)
                .to_vec()
            }
            None => ["sh", "-c", "tc qdisc del dev eth0 root 2>/dev/null || true"]
                .map(String::from)
                .to_vec(),
        };
        self.sidecar_exec(st, short, &cmd).await.map(|_| ())
    }

    async fn inspect_target(
        &self,
        short: &str,
    ) -> Result<bollard::models::ContainerInspectResponse> {
        let name = &self.container(short)?.name;
        self.inner
            .docker
            .inspect_container(name, None)
            .await
            .with_context(|| format!("inspecting {name}"))
    }

    async fn running(&self, short: &str) -> Result<bool> {
        let info = self.inspect_target(short).await?;
        Ok(info.state.is_some_and(|s| s.running == Some(true)))
    }

    /// iptables OUTPUT match for traffic `target` sends (to `peer` only, if given), leaving
    /// loopback alone; `None` when `target` is not running or `peer` has no address now.
    async fn egress_match(
        &self,
        target: &str,
        peer: Option<String>,
    ) -> Result<Option<Vec<String>>> {
        if !self.running(target).await? {
            return Ok(None);
        }
        let mut spec = vec!["!".into(), "-o".into(), "lo".into()];
        if let Some(p) = peer {
            let Some(ip) = self.ip(&p).await? else {
                return Ok(None);
            };
            spec.extend(["-d".into(), ip]);
        }
        Ok(Some(spec))
    }

    /// IP of a container on its (only) network, `None` when it is down.
    async fn ip(&self, short: &str) -> Result<Option<String>> {
        let info = self.inspect_target(short).await?;
        Ok(info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| {
                n.into_values()
                    .find_map(|e| e.ip_address.filter(|ip| !ip.is_empty()))
            }))
    }

    fn sidecar_labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (RUN_LABEL.to_string(), self.inner.run.clone()),
            (ROLE_LABEL.to_string(), SIDECAR_ROLE.to_string()),
        ])
    }

    /// Creates and starts a `NET_ADMIN` container in `short`'s network namespace.
    async fn start_in_netns(&self, short: &str, name: &str, cmd: Vec<String>) -> Result<()> {
        let target = &self.container(short)?.name;
        let d = &self.inner.docker;
        self.remove(name).await;
        let body = ContainerCreateBody {
            image: Some(NETEM_IMAGE.into()),
            cmd: Some(cmd),
            labels: Some(self.sidecar_labels()),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{target}")),
                cap_add: Some(vec!["NET_ADMIN".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        crate::runtime::run_container(d, name, body)
            .await
            .with_context(|| format!("fault sidecar (is {NETEM_IMAGE} built?)"))
    }

    /// The sidecar of `short`, (re)created when the target restarted since.
    async fn sidecar(&self, st: &mut State, short: &str) -> Result<String> {
        let started = self
            .inspect_target(short)
            .await?
            .state
            .and_then(|s| s.started_at)
            .unwrap_or_default();
        if let Some((name, at)) = st.sidecars.get(short) {
            if *at == started {
                return Ok(name.clone());
            }
        }
        let name = format!("dvlab-{}-fx-{short}", self.inner.run);
        self.start_in_netns(
            short,
            &name,
            ["sleep", "infinity"].map(String::from).to_vec(),
        )
        .await?;
        st.sidecars
            .insert(short.to_string(), (name.clone(), started));
        Ok(name)
    }

    /// Runs a command in `short`'s sidecar; fails with its output on a non-zero exit.
    async fn sidecar_exec(&self, st: &mut State, short: &str, cmd: &[String]) -> Result<String> {
        let sidecar = self.sidecar(st, short).await?;
        exec(&self.inner.docker, &sidecar, cmd).await
    }

    /// Starts a delayer for `short` and waits until it has bound its queue.
    async fn start_delayer(
        &self,
        short: &str,
        queue: u16,
        delay_ms: f64,
        jitter_ms: f64,
    ) -> Result<String> {
        let name = format!("dvlab-{}-fx-{short}-q{queue}", self.inner.run);
        let cmd = vec![
            "dvlab-netem".to_string(),
            "--queue".into(),
            queue.to_string(),
            "--delay-ms".into(),
            format!("{delay_ms}"),
            "--jitter-ms".into(),
            format!("{jitter_ms}"),
        ];
        self.start_helper(short, &name, cmd, "dvlab-netem: queue")
            .await?;
        Ok(name)
    }

    /// Starts `dvlab-netem` helper `name` in `short`'s namespace and waits until its log says
    /// `ready` (queue bound, port listening).
    async fn start_helper(
        &self,
        short: &str,
        name: &str,
        cmd: Vec<String>,
        ready: &str,
    ) -> Result<()> {
        self.start_in_netns(short, name, cmd).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let logs = crate::runtime::logs(&self.inner.docker, name, None).await?;
            if logs.contains(ready) {
                return Ok(());
            }
            let state = self
                .inner
                .docker
                .inspect_container(name, None)
                .await?
                .state
                .and_then(|s| s.running);
            if state != Some(true) || tokio::time::Instant::now() > deadline {
                self.remove(name).await;
                bail!("fault helper {name} did not start: {}", logs.trim());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn remove(&self, name: &str) {
        let _ = self
            .inner
            .docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
    }

    /// After a partition heals: connect every beacon node to the beacon nodes it was cut off
    /// from.
    async fn repeer_groups(&self, st: &State, f: &Fault, groups: &[Vec<String>]) {
        let bn = |s: &String| self.inner.containers.get(s).is_some_and(|c| c.beacon_node);
        for (i, g) in groups.iter().enumerate() {
            for a in g.iter().filter(|s| bn(s)) {
                for b in groups[i + 1..].iter().flatten().filter(|s| bn(s)) {
                    let res = self.connect_peer(a, b).await;
                    self.log(
                        st,
                        unix_now().as_secs_f64(),
                        f,
                        LogPhase::Repeer,
                        res.as_ref().err(),
                    );
                }
            }
        }
    }

    /// Connects a (re)started beacon node to every other beacon node.
    async fn repeer(&self, st: &State, short: &str) {
        let others: Vec<String> = self
            .inner
            .containers
            .values()
            .filter(|c| c.beacon_node && c.short != short)
            .map(|c| c.short.clone())
            .collect();
        for o in others {
            if let Err(e) = self.connect_peer(short, &o).await {
                if let Some(path) = &st.log {
                    eprintln!(
                        "re-peering {short} with {o} failed: {e:#} (see {})",
                        path.display()
                    );
                }
            }
        }
    }

    /// Host URL of a beacon node's REST API.
    async fn rest_url(&self, short: &str) -> Result<String> {
        let info = self.inspect_target(short).await?;
        let key = format!("{BN_REST_PORT}/tcp");
        let port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get(&key).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .ok_or_else(|| anyhow!("{short} publishes no {key}"))?;
        Ok(format!("http://127.0.0.1:{port}"))
    }

    /// `POST /eth/v1/lodestar/connect_peer` on `a` with `b`'s peer id and container address.
    async fn connect_peer(&self, a: &str, b: &str) -> Result<()> {
        let http = &self.inner.http;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        // A restarted node needs a while before its API answers.
        let identity: serde_json::Value = loop {
            let res = async {
                let url = format!("{}/eth/v1/node/identity", self.rest_url(b).await?);
                anyhow::Ok(
                    http.get(&url)
                        .send()
                        .await?
                        .error_for_status()?
                        .json()
                        .await?,
                )
            }
            .await;
            match res {
                Ok(v) => break v,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(e.context(format!("identity of {b}")))
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        };
        let data = &identity["data"];
        let peer_id = data["peer_id"]
            .as_str()
            .ok_or_else(|| anyhow!("{b}: identity has no peer_id"))?;
        let tcp = data["p2p_addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .find_map(|a| a.split("/tcp/").nth(1).and_then(|p| p.split('/').next()))
            .unwrap_or("9000")
            .to_string();
        let ip = self
            .ip(b)
            .await?
            .ok_or_else(|| anyhow!("{b} has no IP (down?)"))?;
        let multiaddr = format!("/ip4/{ip}/tcp/{tcp}");
        let url = reqwest::Url::parse_with_params(
            &format!("{}/eth/v1/lodestar/connect_peer", self.rest_url(a).await?),
            &[("peerId", peer_id), ("multiaddr", multiaddr.as_str())],
        )?;
        let resp = http
            .post(url)
            .send()
            .await
            .with_context(|| format!("connect_peer on {a}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            bail!("connect_peer on {a} to {b} ({multiaddr}): {status} {body}");
        }
        Ok(())
    }

    /// Ends every active fault (removes rules and delayers, unpauses, resets clocks; crashed
    /// or stopped containers stay down) and removes all sidecars of the run. For teardown:
    /// call it even when the run failed or the task was aborted.
    pub async fn heal_all(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        let active: Vec<Fault> = st.active.values().rev().cloned().collect();
        let mut errors = Vec::new();
        for f in active {
            let res = match &f.effect {
                e if e.is_network() => self.heal_network(&mut st, &f).await,
                Effect::Pause { .. } | Effect::ClockSkew { .. } => self.stop(&mut st, &f).await,
                _ => Ok(()),
            };
            st.active.remove(&f.id);
            self.log(
                &st,
                unix_now().as_secs_f64(),
                &f,
                LogPhase::Stop,
                res.as_ref().err(),
            );
            if let Err(e) = res {
                errors.push(format!("{e:#}"));
            }
        }
        st.sidecars.clear();
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{RUN_LABEL}={}", self.inner.run),
                format!("{ROLE_LABEL}={SIDECAR_ROLE}"),
            ],
        )]);
        let list = self
            .inner
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .context("listing fault sidecars")?;
        for c in list {
            if let Some(id) = c.id {
                self.remove(&id).await;
            }
        }
        if !errors.is_empty() {
            bail!("healing faults at teardown: {}", errors.join("; "));
        }
        Ok(())
    }
}
