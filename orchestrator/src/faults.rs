//! Faults: the spec's `faults` list turned into a seeded timeline, and an executor that makes
//! each fault really happen in Docker on this kernel (which has no `sch_netem`).
//!
//! | kind | how |
//! | --- | --- |
//! | partition / isolate | iptables DROP on INPUT (from) and OUTPUT (to) the other groups' IPs, installed from a `NET_ADMIN` sidecar sharing the container's network namespace |
//! | loss | iptables `-m statistic --mode random --probability p -j DROP` on OUTPUT |
//! | latency / jitter | iptables `-j NFQUEUE` on OUTPUT and the `dvlab-netem` delayer in a sidecar, holding each packet for delay ± jitter before ACCEPT |
//! | bandwidth | TBF root qdisc on the container's `eth0` |
//! | crash | SIGKILL, then start again after `restart_after` |
//! | stop | graceful stop (SIGTERM, 10 s), then start again after `restart_after` |
//! | pause | `docker pause` (cgroup freezer), then unpause |
//! | clock skew | libfaketime preloaded at container start ([`prepare_containers`]); the executor rewrites the offset file mid-run |
//!
//! Latency and loss act on the packets a target sends (as netem on one host does); on a
//! `link: [a, b]` they act on both directions between `a` and `b`. A restarted container has
//! a new network namespace (and maybe a new IP): every active network fault involving it is
//! re-applied. After a partition involving beacon nodes heals, and after a beacon node
//! restarts, the executor re-peers them explicitly (`POST /eth/v1/lodestar/connect_peer`),
//! because Lodestar 1.5.1 does not re-peer by itself. Every fault start and stop is logged
//! with wall time, slot, kind and targets to `faults.jsonl` in the run's output directory.

use crate::plan::{ContainerPlan, Plan, Role, BN_REST_PORT, ROLE_LABEL, RUN_LABEL};
use crate::spec::{parse_offset, parse_rate, At, DevnetSpec, FaultKind, FaultSpec, Scalar, Span};
use anyhow::{anyhow, bail, Context, Result};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// Image of the fault sidecars: `dvlab/base` plus the `dvlab-netem` delayer.
pub const NETEM_IMAGE: &str = "dvlab/netem:latest";
/// Role label value of fault sidecars and delayers.
pub const SIDECAR_ROLE: &str = "fault-sidecar";
/// libfaketime's preload library in the Debian base image.
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Directory inside a skewed container holding the offset file (bind mount, read-only).
pub const CLOCK_DIR: &str = "/dvlab-clock";
/// Name of the offset file in [`CLOCK_DIR`] and in the host clock directory.
pub const CLOCK_FILE: &str = "offset";

/// Slot arithmetic of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlotClock {
    /// Genesis UNIX time.
    pub genesis_time: u64,
    /// Seconds per slot.
    pub seconds_per_slot: u64,
    /// Slots per epoch.
    pub slots_per_epoch: u64,
}

impl SlotClock {
    /// The clock of a plan.
    pub fn of(plan: &Plan) -> SlotClock {
        SlotClock {
            genesis_time: plan.genesis_time,
            seconds_per_slot: plan.seconds_per_slot,
            slots_per_epoch: plan.slots_per_epoch,
        }
    }

    /// Slot at UNIX time `t` (0 before genesis).
    pub fn slot_at(&self, t: f64) -> u64 {
        let since = t - self.genesis_time as f64;
        if since <= 0.0 || self.seconds_per_slot == 0 {
            0
        } else {
            (since / self.seconds_per_slot as f64) as u64
        }
    }
}

/// Which packets a network fault acts on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "containers")]
pub enum Scope {
    /// Everything these containers send.
    Egress(Vec<String>),
    /// Both directions between two containers.
    Link(String, String),
}

impl Scope {
    fn containers(&self) -> Vec<String> {
        match self {
            Scope::Egress(v) => v.clone(),
            Scope::Link(a, b) => vec![a.clone(), b.clone()],
        }
    }

    /// (container whose OUTPUT is shaped, optional peer it sends to).
    fn legs(&self) -> Vec<(String, Option<String>)> {
        match self {
            Scope::Egress(v) => v.iter().map(|t| (t.clone(), None)).collect(),
            Scope::Link(a, b) => vec![(a.clone(), Some(b.clone())), (b.clone(), Some(a.clone()))],
        }
    }
}

/// What a fault does, with targets as container short names (`dv0-1`, `bn0`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Effect {
    /// Groups that cannot reach each other.
    Partition {
        /// Groups of short names.
        groups: Vec<Vec<String>>,
    },
    /// Added delay.
    Latency {
        /// Affected packets.
        #[serde(flatten)]
        scope: Scope,
        /// Mean delay in ms.
        delay_ms: f64,
        /// Jitter in ms (uniform ±).
        jitter_ms: f64,
    },
    /// Random packet loss.
    Loss {
        /// Affected packets.
        #[serde(flatten)]
        scope: Scope,
        /// Percent dropped.
        percent: f64,
    },
    /// Egress rate limit.
    Bandwidth {
        /// Limited containers.
        targets: Vec<String>,
        /// Bits per second.
        bits_per_sec: u64,
    },
    /// SIGKILL (stop phase: start again).
    Crash {
        /// Container.
        target: String,
    },
    /// Graceful stop (stop phase: start again).
    Stop {
        /// Container.
        target: String,
    },
    /// Freeze.
    Pause {
        /// Container.
        target: String,
    },
    /// Clock offset.
    ClockSkew {
        /// Container.
        target: String,
        /// Seconds added to the container's clock.
        offset_secs: f64,
    },
}

impl Effect {
    /// Kind name as in the spec.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Partition { .. } => "partition",
            Effect::Latency { .. } => "latency",
            Effect::Loss { .. } => "loss",
            Effect::Bandwidth { .. } => "bandwidth",
            Effect::Crash { .. } => "crash",
            Effect::Stop { .. } => "stop",
            Effect::Pause { .. } => "pause",
            Effect::ClockSkew { .. } => "clock_skew",
        }
    }

    /// Every container the fault involves.
    pub fn targets(&self) -> Vec<String> {
        match self {
            Effect::Partition { groups } => groups.concat(),
            Effect::Latency { scope, .. } | Effect::Loss { scope, .. } => scope.containers(),
            Effect::Bandwidth { targets, .. } => targets.clone(),
            Effect::Crash { target }
            | Effect::Stop { target }
            | Effect::Pause { target }
            | Effect::ClockSkew { target, .. } => vec![target.clone()],
        }
    }

    fn is_network(&self) -> bool {
        matches!(
            self,
            Effect::Partition { .. }
                | Effect::Latency { .. }
                | Effect::Loss { .. }
                | Effect::Bandwidth { .. }
        )
    }
}

/// One concrete fault occurrence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// Unique number within the timeline (also the NFQUEUE number of a latency fault).
    pub id: u16,
    /// Index of the spec entry it comes from.
    pub source: usize,
    /// The spec entry's `id`, if any.
    pub name: Option<String>,
    /// What it does.
    pub effect: Effect,
    /// UNIX time it starts.
    pub start: f64,
    /// UNIX time it ends (heal / restart); `None`: lasts to the end of the run.
    pub end: Option<f64>,
}

/// Start or end of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The fault ends (heal, restart, unpause). Sorted first at equal times.
    Stop,
    /// The fault begins.
    Start,
}

/// One thing the executor does at a moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// UNIX time.
    pub time: f64,
    /// Slot at that time.
    pub slot: u64,
    /// Start or stop.
    pub phase: Phase,
    /// The fault.
    pub fault: Fault,
}

/// A run's faults and the sorted actions that apply and heal them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Every fault occurrence (random faults expanded).
    pub faults: Vec<Fault>,
    /// Actions in execution order.
    pub actions: Vec<Action>,
}

/// Builds the timeline of `spec`'s faults for a run whose genesis is at `plan.genesis_time`.
/// Pure and deterministic: random faults draw from `spec.seed`.
pub fn timeline(spec: &DevnetSpec, plan: &Plan) -> Result<Timeline> {
    build_timeline(&spec.faults, spec, SlotClock::of(plan))
}

fn span_secs(v: &str, clock: SlotClock) -> Result<f64> {
    Span::parse(v)
        .map(|s| s.seconds(clock.seconds_per_slot, clock.slots_per_epoch))
        .map_err(|e| anyhow!(e))
}

fn build_timeline(faults: &[FaultSpec], spec: &DevnetSpec, clock: SlotClock) -> Result<Timeline> {
    let g = clock.genesis_time as f64;
    let run_end = g + spec.run_seconds();
    let all = spec.container_names();
    let mut out: Vec<Fault> = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut next_id = 1u16;
    let mut push = |out: &mut Vec<Fault>, f: Fault| -> Result<usize> {
        out.push(Fault { id: next_id, ..f });
        next_id = next_id
            .checked_add(1)
            .ok_or_else(|| anyhow!("more than 65534 fault occurrences"))?;
        Ok(out.len() - 1)
    };
    for (i, f) in faults.iter().enumerate() {
        let ctx = || format!("faults[{i}]");
        let start = g + At::parse(&f.at)
            .map_err(|e| anyhow!(e))
            .with_context(ctx)?
            .seconds(clock.seconds_per_slot, clock.slots_per_epoch);
        let end = match &f.for_ {
            Some(d) => Some(start + span_secs(d, clock).with_context(ctx)?),
            None => None,
        };
        let target = || {
            f.target
                .clone()
                .ok_or_else(|| anyhow!("{}: no target", ctx()))
        };
        let scope = || match &f.link {
            Some(l) if l.len() == 2 => Scope::Link(l[0].clone(), l[1].clone()),
            _ => Scope::Egress(f.targets.clone()),
        };
        let ms = |v: &Option<String>| -> Result<f64> {
            match v {
                Some(v) => Ok(span_secs(v, clock)? * 1000.0),
                None => Ok(0.0),
            }
        };
        let restart = match &f.restart_after {
            Some(d) => Some(span_secs(d, clock).with_context(ctx)?),
            None => None,
        };
        let base = |effect: Effect, end: Option<f64>| Fault {
            id: 0,
            source: i,
            name: f.id.clone(),
            effect,
            start,
            end,
        };
        let effect = match f.kind {
            FaultKind::Partition => Effect::Partition {
                groups: match &f.isolate {
                    Some(x) => vec![
                        vec![x.clone()],
                        all.iter().filter(|n| *n != x).cloned().collect(),
                    ],
                    None => f.groups.clone(),
                },
            },
            FaultKind::Latency => Effect::Latency {
                scope: scope(),
                delay_ms: ms(&f.delay).with_context(ctx)?,
                jitter_ms: ms(&f.jitter).with_context(ctx)?,
            },
            FaultKind::Loss => Effect::Loss {
                scope: scope(),
                percent: f.percent.unwrap_or(0.0),
            },
            FaultKind::Bandwidth => Effect::Bandwidth {
                targets: f.targets.clone(),
                bits_per_sec: match &f.rate {
                    Some(Scalar::Text(r)) => {
                        parse_rate(r).map_err(|e| anyhow!("{}: {e}", ctx()))?
                    }
                    _ => bail!("{}: bandwidth needs a rate such as 1mbit", ctx()),
                },
            },
            FaultKind::Crash => Effect::Crash { target: target()? },
            FaultKind::Stop => Effect::Stop { target: target()? },
            FaultKind::Pause => Effect::Pause { target: target()? },
            FaultKind::ClockSkew => Effect::ClockSkew {
                target: target()?,
                offset_secs: parse_offset(f.offset.as_deref().unwrap_or(""))
                    .map_err(|e| anyhow!("{}: {e}", ctx()))?,
            },
            FaultKind::RandomCrash | FaultKind::RandomStop => {
                let rate = match f.rate {
                    Some(Scalar::Number(r)) if r > 0.0 => r,
                    _ => bail!("{}: a random fault needs a positive rate", ctx()),
                };
                let restart = restart.ok_or_else(|| anyhow!("{}: no restart_after", ctx()))?;
                let window_end = end.unwrap_or(run_end).min(run_end);
                let epoch_secs = (clock.seconds_per_slot * clock.slots_per_epoch) as f64;
                // One stream per entry: adding an entry does not reshuffle the others.
                let mut rng = ChaCha8Rng::seed_from_u64(
                    spec.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let mut down_until: BTreeMap<&str, f64> = BTreeMap::new();
                let mut t = start;
                loop {
                    // Exponential inter-arrival times: a Poisson process of `rate` per epoch.
                    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                    t += -u.ln() * epoch_secs / rate;
                    if t >= window_end {
                        break;
                    }
                    let up: Vec<&str> = f
                        .targets
                        .iter()
                        .map(String::as_str)
                        .filter(|n| down_until.get(n).is_none_or(|u| *u <= t))
                        .collect();
                    if up.is_empty() {
                        continue;
                    }
                    let victim = up[rng.gen_range(0..up.len())];
                    down_until.insert(victim, t + restart);
                    let effect = if f.kind == FaultKind::RandomCrash {
                        Effect::Crash {
                            target: victim.to_string(),
                        }
                    } else {
                        Effect::Stop {
                            target: victim.to_string(),
                        }
                    };
                    push(
                        &mut out,
                        Fault {
                            start: t,
                            ..base(effect, Some(t + restart))
                        },
                    )?;
                }
                continue;
            }
            FaultKind::Heal => {
                let name = f.fault.as_deref().unwrap_or("");
                let idx = *by_name
                    .get(name)
                    .ok_or_else(|| anyhow!("{}: heals unknown fault `{name}`", ctx()))?;
                if start <= out[idx].start {
                    bail!("{}: heal of `{name}` before it starts", ctx());
                }
                out[idx].end = Some(start);
                continue;
            }
        };
        let end = match f.kind {
            FaultKind::Crash | FaultKind::Stop => restart.map(|r| start + r),
            _ => end,
        };
        let idx = push(&mut out, base(effect, end))?;
        if let Some(n) = &f.id {
            by_name.insert(n.as_str(), idx);
        }
    }
    let mut actions: Vec<Action> = Vec::new();
    for f in &out {
        actions.push(Action {
            time: f.start,
            slot: clock.slot_at(f.start),
            phase: Phase::Start,
            fault: f.clone(),
        });
        if let Some(e) = f.end {
            actions.push(Action {
                time: e,
                slot: clock.slot_at(e),
                phase: Phase::Stop,
                fault: f.clone(),
            });
        }
    }
    actions.sort_by(|a, b| {
        a.time
            .total_cmp(&b.time)
            .then(a.phase.cmp(&b.phase))
            .then(a.fault.id.cmp(&b.fault.id))
    });
    Ok(Timeline {
        faults: out,
        actions,
    })
}

/// Host directory (relative to the run directory) holding the clock offset file of `short`.
pub fn clock_dir(short: &str) -> String {
    format!("faults/clock/{short}")
}

/// Environment that preloads libfaketime reading its offset from [`CLOCK_DIR`]/[`CLOCK_FILE`].
/// The monotonic clock stays real (timers keep working); the offset is re-read at most once a
/// second.
pub fn faketime_env() -> Vec<String> {
    vec![
        format!("LD_PRELOAD={FAKETIME_LIB}"),
        format!("FAKETIME_TIMESTAMP_FILE={CLOCK_DIR}/{CLOCK_FILE}"),
        "FAKETIME_CACHE_DURATION=1".into(),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
    ]
}

/// Writes a libfaketime offset file atomically (write + rename in the same directory).
pub fn write_offset(dir: &Path, offset_secs: f64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{CLOCK_FILE}.tmp"));
    // libfaketime reads "+N" / "-N" (seconds, fractions allowed) as a relative offset.
    let text = if offset_secs == 0.0 {
        "+0\n".to_string()
    } else {
        format!("{offset_secs:+.3}\n")
    };
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(CLOCK_FILE))
        .with_context(|| format!("replacing the offset file in {}", dir.display()))?;
    Ok(())
}

/// The plan hook: containers targeted by a `clock_skew` fault start with libfaketime
/// preloaded and the (read-only) bind mount of their offset directory; the offset files are
/// created in `run_dir` with `+0`. Call after [`Plan::new`] and before the containers start.
pub fn prepare_containers(spec: &DevnetSpec, plan: &mut Plan, run_dir: &Path) -> Result<()> {
    let skewed: BTreeSet<&str> = spec
        .faults
        .iter()
        .filter(|f| f.kind == FaultKind::ClockSkew)
        .filter_map(|f| f.target.as_deref())
        .collect();
    for short in skewed {
        let name = format!("dvlab-{}-{short}", plan.run);
        let c: &mut ContainerPlan = plan
            .containers
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or_else(|| anyhow!("clock_skew target `{short}` is not a planned container"))?;
        c.env.extend(faketime_env());
        c.mounts.push(crate::plan::Mount {
            host: clock_dir(short),
            container: CLOCK_DIR.into(),
            writable: false,
        });
        write_offset(&run_dir.join(clock_dir(short)), 0.0)?;
    }
    Ok(())
}

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

/// One line of `faults.jsonl`.
#[derive(Debug, Clone, Serialize)]
struct LogLine<'a> {
    /// Wall time the action ran (UNIX seconds).
    time: f64,
    /// Scheduled time.
    scheduled: f64,
    slot: u64,
    fault: u16,
    source: usize,
    name: Option<&'a str>,
    kind: &'static str,
    /// `start`, `stop`, `reapply` or `repeer`.
    phase: &'a str,
    targets: Vec<String>,
    effect: &'a Effect,
    error: Option<String>,
}

/// An iptables rule installed in a container's network namespace.
#[derive(Debug, Clone)]
struct Rule {
    container: String,
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

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
            SlotClock::of(plan),
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
                let wait = a.time - unix_now();
                if wait > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
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
        let phase = match a.phase {
            Phase::Start => "start",
            Phase::Stop => "stop",
        };
        self.log(&st, a.time, &a.fault, phase, res.as_ref().err());
        res
    }

    fn log(&self, st: &State, scheduled: f64, f: &Fault, phase: &str, err: Option<&anyhow::Error>) {
        let Some(path) = &st.log else { return };
        let now = unix_now();
        let line = LogLine {
            time: now,
            scheduled,
            slot: self.inner.clock.slot_at(now),
            fault: f.id,
            source: f.source,
            name: f.name.as_deref(),
            kind: f.effect.kind(),
            phase,
            targets: f.effect.targets(),
            effect: &f.effect,
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
            self.log(st, unix_now(), &f, "reapply", res.as_ref().err());
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
        let mut add = |container: &str, chain: &'static str, spec: Vec<String>| {
            let mut spec = spec;
            spec.extend(["-m", "comment", "--comment", &comment].map(String::from));
            rules.push(Rule {
                container: container.to_string(),
                chain,
                spec,
            });
        };
        let mut delayers: Vec<(String, u16, f64, f64)> = Vec::new();
        match &f.effect {
            Effect::Partition { groups } => {
                // Rules on INPUT and OUTPUT of one side block both directions; they go on every
                // group but the largest, so isolating one container touches only it.
                let largest = groups
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, g)| g.len())
                    .map_or(0, |(i, _)| i);
                for (gi, group) in groups.iter().enumerate() {
                    if gi == largest {
                        continue;
                    }
                    let others: Vec<&String> = groups
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != gi)
                        .flat_map(|(_, g)| g)
                        .collect();
                    for m in group {
                        if !self.running(m).await? {
                            continue;
                        }
                        for o in &others {
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
                for (t, peer) in scope.legs() {
                    let Some(mut spec) = self.egress_match(&t, peer).await? else {
                        continue;
                    };
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
        self.start_in_netns(short, &name, cmd).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let logs = crate::runtime::logs(&self.inner.docker, &name, None).await?;
            if logs.contains("dvlab-netem: queue") {
                return Ok(name);
            }
            let state = self
                .inner
                .docker
                .inspect_container(&name, None)
                .await?
                .state
                .and_then(|s| s.running);
            if state != Some(true) || tokio::time::Instant::now() > deadline {
                self.remove(&name).await;
                bail!("delayer {name} did not start: {}", logs.trim());
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
                    self.log(st, unix_now(), f, "repeer", res.as_ref().err());
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
            self.log(&st, unix_now(), &f, "stop", res.as_ref().err());
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

/// Runs `cmd` in a running container and returns its output; a non-zero exit is an error
/// carrying the output.
pub async fn exec(docker: &Docker, container: &str, cmd: &[String]) -> Result<String> {
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(cmd.to_vec()),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("exec in {container}"))?;
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await?
    {
        while let Some(chunk) = output.next().await {
            match chunk? {
                LogOutput::StdOut { message } | LogOutput::StdErr { message } => {
                    out.push_str(&String::from_utf8_lossy(&message))
                }
                _ => {}
            }
        }
    }
    let code = docker.inspect_exec(&created.id).await?.exit_code;
    if code != Some(0) {
        bail!(
            "`{}` in {container} exited with {}: {}",
            cmd.join(" "),
            code.map_or("?".into(), |c| c.to_string()),
            out.trim()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = include_str!("../../devnets/basic.yaml");

    fn spec_with(faults: &str, seed: u64) -> DevnetSpec {
        let text = BASIC
            .replace("faults: []", &format!("faults:\n{faults}"))
            .replace("seed: 42", &format!("seed: {seed}"));
        DevnetSpec::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn tl(spec: &DevnetSpec) -> Timeline {
        timeline(spec, &Plan::new(spec, 1_000)).unwrap()
    }

    /// (slot, phase, kind) of every action, in timeline order.
    fn steps(t: &Timeline) -> Vec<(u64, Phase, &'static str)> {
        t.actions
            .iter()
            .map(|a| (a.slot, a.phase, a.fault.effect.kind()))
            .collect()
    }

    #[test]
    fn design_example_timeline() {
        let spec = spec_with(
            "  - {at: epoch 3, kind: partition, groups: [[dv0-0, dv0-1], [dv0-2, dv0-3]], for: 2 epochs}\n\
             \x20 - {at: epoch 6, kind: crash, target: dv0-1, restart_after: 30s}\n",
            42,
        );
        let t = tl(&spec);
        // genesis 1020, 4 s slots, 8 slots per epoch: epoch 3 = 1116, epoch 5 = 1180, epoch 6 = 1212.
        let got: Vec<_> = t
            .actions
            .iter()
            .map(|a| (a.time, a.slot, a.phase, a.fault.effect.kind()))
            .collect();
        assert_eq!(
            got,
            [
                (1116.0, 24, Phase::Start, "partition"),
                (1180.0, 40, Phase::Stop, "partition"),
                (1212.0, 48, Phase::Start, "crash"),
                (1242.0, 55, Phase::Stop, "crash"),
            ]
        );
    }

    const RANDOM: &str = "  - {at: epoch 1, kind: random_crash, rate: 1.5, targets: [dv0-0, dv0-1, dv0-2, dv0-3], restart_after: 20s, for: 6 epochs}\n";

    #[test]
    fn same_seed_same_timeline_different_seed_differs() {
        let a = tl(&spec_with(RANDOM, 7));
        let b = tl(&spec_with(RANDOM, 7));
        let c = tl(&spec_with(RANDOM, 8));
        assert_eq!(a, b);
        assert!(a.faults.len() >= 3, "{} crashes", a.faults.len());
        assert_ne!(a.actions, c.actions);
        // Inside the window, restart 20 s after each crash, never crashing a node that is down.
        for f in &a.faults {
            assert!(f.start >= 1020.0 + 32.0 && f.start < 1020.0 + 7.0 * 32.0);
            assert_eq!(f.end, Some(f.start + 20.0));
            let t = &f.effect.targets()[0];
            assert!(!a.faults.iter().any(|g| g.id != f.id
                && &g.effect.targets()[0] == t
                && g.start >= f.start
                && g.start < f.start + 20.0));
        }
    }

    #[test]
    fn overlapping_faults_and_explicit_heal() {
        let spec = spec_with(
            "  - {id: p, at: slot 10, kind: partition, isolate: bn1}\n\
             \x20 - {at: slot 12, kind: latency, delay: 200ms, jitter: 20ms, targets: [dv0-0], for: 4 slots}\n\
             \x20 - {at: slot 12, kind: clock_skew, target: dv0-0, offset: -2s}\n\
             \x20 - {at: slot 20, kind: heal, fault: p}\n",
            1,
        );
        let t = tl(&spec);
        assert_eq!(
            steps(&t),
            [
                (10, Phase::Start, "partition"),
                (12, Phase::Start, "latency"),
                (12, Phase::Start, "clock_skew"),
                (16, Phase::Stop, "latency"),
                (20, Phase::Stop, "partition"),
            ]
        );
        match &t.faults[0].effect {
            Effect::Partition { groups } => {
                assert_eq!(groups[0], ["bn1"]);
                assert!(groups[1].contains(&"dv0-3-vc".to_string()));
                assert!(!groups[1].contains(&"bn1".to_string()));
            }
            e => panic!("{e:?}"),
        }
        match &t.faults[1].effect {
            Effect::Latency {
                delay_ms,
                jitter_ms,
                ..
            } => assert_eq!((*delay_ms, *jitter_ms), (200.0, 20.0)),
            e => panic!("{e:?}"),
        }
        assert_eq!(t.faults[2].end, None);
    }

    #[test]
    fn heal_after_restart_is_ordered_after_it() {
        // The crash restarts dv0-1 while it is partitioned; the partition heals later.
        let spec = spec_with(
            "  - {at: slot 8, kind: partition, groups: [[dv0-0, dv0-1], [dv0-2, dv0-3]], for: 10 slots}\n\
             \x20 - {at: slot 10, kind: crash, target: dv0-1, restart_after: 2 slots}\n",
            1,
        );
        let t = tl(&spec);
        assert_eq!(
            steps(&t),
            [
                (8, Phase::Start, "partition"),
                (10, Phase::Start, "crash"),
                (12, Phase::Stop, "crash"),
                (18, Phase::Stop, "partition"),
            ]
        );
    }

    #[test]
    fn stop_sorts_before_start_at_the_same_time() {
        let spec = spec_with(
            "  - {at: slot 4, kind: pause, target: bn1, for: 2 slots}\n\
             \x20 - {at: slot 6, kind: pause, target: bn1, for: 1 slot}\n",
            1,
        );
        let t = tl(&spec);
        assert_eq!(t.actions[1].phase, Phase::Stop);
        assert_eq!(t.actions[2].phase, Phase::Start);
        assert_eq!(t.actions[1].time, t.actions[2].time);
    }

    #[test]
    fn prepare_adds_faketime_to_skewed_containers_only() {
        let spec = spec_with(
            "  - {at: 30s, kind: clock_skew, target: dv0-2, offset: +3s, for: 1 epoch}\n",
            1,
        );
        let mut plan = Plan::new(&spec, 0);
        let dir = tempfile::tempdir().unwrap();
        prepare_containers(&spec, &mut plan, dir.path()).unwrap();
        let c = plan
            .containers
            .iter()
            .find(|c| c.name == "dvlab-basic-dv0-2")
            .unwrap();
        assert!(c
            .env
            .iter()
            .any(|e| e.starts_with("LD_PRELOAD=") && e.contains("libfaketime")));
        assert!(c
            .env
            .contains(&"FAKETIME_DONT_FAKE_MONOTONIC=1".to_string()));
        assert_eq!(
            c.mounts.last().unwrap(),
            &crate::plan::Mount {
                host: "faults/clock/dv0-2".to_string(),
                container: CLOCK_DIR.to_string(),
                writable: false,
            }
        );
        let n = plan
            .containers
            .iter()
            .filter(|c| c.env.iter().any(|e| e.starts_with("LD_PRELOAD")))
            .count();
        assert_eq!(n, 1);
        let text = std::fs::read_to_string(dir.path().join("faults/clock/dv0-2/offset")).unwrap();
        assert_eq!(text, "+0\n");
        write_offset(&dir.path().join("faults/clock/dv0-2"), -2.5).unwrap();
        let text = std::fs::read_to_string(dir.path().join("faults/clock/dv0-2/offset")).unwrap();
        assert_eq!(text, "-2.500\n");
    }
}
