//! The pipeline behind `dvlab up`, `dvlab run` and `dvlab report`: the one place that wires
//! the phases together — plan → containers → fault timeline with collection → analysis →
//! report → teardown, with healing and teardown on failure and on Ctrl-C or SIGTERM; and
//! behind `dvlab analyze` ([`analyze`]): collection of any chain's past epochs from a beacon
//! node ([`History`]) into the same analysis and report.

use crate::analyse;
use crate::collect::history::History;
use crate::collect::Collector;
use crate::data::{self, BeaconNodeMeta, DvNodeMeta, GroupMeta, RawData, RunMeta};
use crate::faults::{self, Executor, Timeline};
use crate::k8s;
use crate::plan::{Plan, Role};
use crate::report::{self, Report};
use crate::runtime;
use crate::spec::analyze::{EpochRange, ValidatorSpec};
use crate::spec::DevnetSpec;
use anyhow::{anyhow, Result};
use bollard::Docker;
use dvnode::clock::unix_now;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::Duration;

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM (`kill`, a CI job's timeout, `docker
/// stop` of a container running dvlab): both interrupt a run, which then heals and tears down.
pub async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C interrupts.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// What the collection loop needs from the backend running a devnet; everything else of a
/// run (plan, fault timeline, collection, analysis, report) is the same on both.
#[allow(async_fn_in_trait)] // used with the crate's two backends only, never as `dyn`
pub trait Backend {
    /// Fails, naming the container and its last log lines, when a container of the run is
    /// down that no fault of `timeline` intends down (checked once per epoch, at `now`).
    async fn check_alive(&mut self, plan: &Plan, timeline: &Timeline, now: f64) -> Result<()>;
    /// Brings what the containers wrote into `out` before collection: each dvnode's duty log
    /// into `OUT/nodes/<container>/`, the fault log into `OUT/faults.jsonl`.
    async fn fetch_outputs(&mut self, plan: &Plan, out: &Path) -> Result<()>;
    /// Whether the run has the plan's Prometheus (the loop writes its fault targets).
    fn prometheus(&self, plan: &Plan) -> bool;
}

/// Seconds after a crash, stop or pause fault's end during which its container may still be
/// down (restarting).
fn restart_grace(plan: &Plan) -> f64 {
    2.0 * plan.seconds_per_slot as f64
}

/// Docker: `runtime::check_alive`; the containers write into the run directory's bind mounts
/// and the fault executor runs in this process, so there is nothing to fetch.
impl Backend for Docker {
    async fn check_alive(&mut self, plan: &Plan, timeline: &Timeline, now: f64) -> Result<()> {
        let exempt = faults::intended_down(plan, timeline, now, restart_grace(plan));
        runtime::check_alive(self, &plan.run, &exempt).await
    }

    async fn fetch_outputs(&mut self, _: &Plan, _: &Path) -> Result<()> {
        Ok(())
    }

    fn prometheus(&self, plan: &Plan) -> bool {
        plan.prometheus().is_some()
    }
}

/// Kubernetes: pod states and restart counts (the kubelet restarts a crashed container at
/// once, so every fault intending a container down since the previous check exempts it); duty
/// logs by exec and the fault timer Job's log through the API. No Prometheus is rendered.
pub struct Kubernetes {
    cluster: k8s::collect::Cluster,
    last_check: Option<f64>,
}

impl Backend for Kubernetes {
    async fn check_alive(&mut self, plan: &Plan, timeline: &Timeline, now: f64) -> Result<()> {
        let from = self.last_check.replace(now).unwrap_or(now);
        let exempt = faults::intended_down_between(plan, timeline, from, now, restart_grace(plan));
        self.cluster.check_alive(plan, &exempt).await
    }

    async fn fetch_outputs(&mut self, plan: &Plan, out: &Path) -> Result<()> {
        self.cluster.fetch_outputs(plan, out).await
    }

    fn prometheus(&self, _: &Plan) -> bool {
        false
    }
}

/// What `dvlab up` started: the plan, its fault timeline, the beacon nodes' and the
/// dvnodes' host URLs.
#[derive(Debug, Clone)]
pub struct Devnet {
    /// The plan.
    pub plan: Plan,
    /// The spec's faults, scheduled relative to the plan's genesis.
    pub timeline: Timeline,
    /// Beacon nodes.
    pub beacon_nodes: Vec<BeaconNodeMeta>,
    /// dvnodes.
    pub dvnodes: Vec<DvNodeMeta>,
    /// Host URL of the run's Prometheus (`http://127.0.0.1:PORT`), if it has one.
    pub prometheus: Option<String>,
}

/// Metadata of a planned run, for analysis.
pub fn run_meta(plan: &Plan, bns: Vec<BeaconNodeMeta>, dvnodes: Vec<DvNodeMeta>) -> RunMeta {
    let spe = plan.slots_per_epoch;
    RunMeta {
        run: plan.run.clone(),
        genesis_time: plan.genesis_time,
        seconds_per_slot: plan.seconds_per_slot,
        slots_per_epoch: spe,
        // Epoch 0 is warm-up (validator clients connect) unless it is all there is; a devnet
        // whose plain validator clients start later moves it after the run (analyse::warm_up).
        first_slot: if plan.epochs > 1 { spe } else { 1 },
        last_slot: plan.last_slot(),
        groups: plan
            .groups
            .iter()
            .map(|g| GroupMeta {
                name: g.name.clone(),
                first: g.indices.start,
                count: g.indices.end - g.indices.start,
                distributed: g.distributed,
                indices: Vec::new(),
            })
            .collect(),
        beacon_nodes: bns,
        assertions: plan.assertions.clone(),
        dvnodes,
        remote_signer: plan
            .clusters
            .iter()
            .filter(|c| c.remote_signer)
            .map(|c| c.name.clone())
            .collect(),
    }
}

/// Starts the devnet of `spec` (dvnode output under `run_dir`, key material in the run's
/// private state directory, [`runtime::state`]). The fault
/// timeline is built (and checked) before any container starts; containers with a clock-skew
/// fault start with libfaketime. Faults are not started here: see [`start_faults`].
pub async fn up(docker: &Docker, spec: &DevnetSpec, run_dir: &Path) -> Result<Devnet> {
    let mut plan = Plan::new(spec, unix_now().as_secs());
    faults::prepare_containers(spec, &mut plan, run_dir)?;
    let timeline = faults::timeline(spec, &plan)?;
    let started = runtime::up(docker, &plan, run_dir).await?;
    let beacon_nodes = started
        .iter()
        .filter_map(|s| {
            Some(BeaconNodeMeta {
                name: s.beacon_node.clone()?,
                api_url: s.api_url.clone()?,
            })
        })
        .collect();
    let dvnodes = dvnode_metas(&plan, |name| {
        started
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.metrics_url.clone())
    });
    let prometheus = plan.prometheus().and_then(|p| {
        started
            .iter()
            .find(|s| s.name == p.name)
            .and_then(|s| s.api_url.clone())
    });
    Ok(Devnet {
        plan,
        timeline,
        beacon_nodes,
        dvnodes,
        prometheus,
    })
}

/// The plan's dvnodes, with the host URL of each one's metrics server.
fn dvnode_metas(plan: &Plan, metrics_url: impl Fn(&str) -> Option<String>) -> Vec<DvNodeMeta> {
    plan.containers
        .iter()
        .filter_map(|c| match &c.role {
            Role::DvNode { cluster, node } => Some(DvNodeMeta {
                name: c.name.clone(),
                cluster: cluster.clone(),
                index: *node,
                metrics_url: metrics_url(&c.name),
            }),
            _ => None,
        })
        .collect()
}

/// Fault executor of a running devnet and the task running its timeline.
pub struct FaultRun {
    /// The executor (heal with [`Executor::heal_all`]).
    pub executor: Executor,
    /// The task executing the timeline, logging to `OUT/faults.jsonl`.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// Starts executing `timeline` against the containers of `plan`: each action at its time
/// (they are scheduled relative to genesis), logged to `out/faults.jsonl`.
pub fn start_faults(
    docker: &Docker,
    plan: &Plan,
    timeline: &Timeline,
    out: &Path,
) -> Result<FaultRun> {
    let executor = Executor::for_plan(docker.clone(), plan, out)?;
    let task = executor.run(timeline.clone(), out);
    Ok(FaultRun { executor, task })
}

impl FaultRun {
    /// Stops the timeline task and heals every active fault (removing sidecars).
    pub async fn heal(self) -> Result<()> {
        self.task.abort();
        self.executor.heal_all().await
    }
}

/// Reads `out/faults.jsonl` (if faults ran) into fault windows.
fn read_fault_log(out: &Path) -> Vec<data::FaultWindow> {
    let path = out.join("faults.jsonl");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (w, bad) = data::fault_windows_from_log(&text);
            if bad > 0 {
                eprintln!("warning: {}: {bad} line(s) did not parse", path.display());
            }
            w
        }
        Err(_) => Vec::new(),
    }
}

/// Slot of the first block including an attestation of a DV validator.
fn first_dv_inclusion(meta: &RunMeta, raw: &RawData) -> Result<Option<u64>> {
    use polars::prelude::*;
    let mut first: Option<u64> = None;
    for g in meta.groups.iter().filter(|g| g.distributed) {
        let v = raw
            .inclusions
            .clone()
            .lazy()
            .filter(
                col("validator")
                    .gt_eq(lit(g.first))
                    .and(col("validator").lt(lit(g.first + g.count))),
            )
            .select([col("inclusion_slot").min()])
            .collect()?;
        let s = v
            .column("inclusion_slot")?
            .as_materialized_series()
            .cast(&DataType::UInt64)?
            .u64()?
            .get(0);
        first = match (first, s) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(first)
}

async fn sleep_until(t: u64) {
    let now = unix_now().as_secs_f64();
    if (t as f64) > now {
        tokio::time::sleep(Duration::from_secs_f64(t as f64 - now)).await;
    }
}

/// Runs the timeline: duties each epoch, heads, a live line, container health.
async fn timeline(
    backend: &mut impl Backend,
    plan: &Plan,
    faults_timeline: &Timeline,
    meta: &RunMeta,
    out: &Path,
    up_started: f64,
) -> Result<(RawData, analyse::WarmUp)> {
    let mut c = Collector::new(meta.beacon_nodes.clone(), plan.slots_per_epoch)?;
    c.wait_ready(Duration::from_secs(
        plan.genesis_time.saturating_sub(unix_now().as_secs()) + 60,
    ))
    .await
    .map_err(|e| anyhow!("{e} (check `dvlab logs bn0`)"))?;
    c.start_events();
    c.record_duties(0).await?;
    let spe = plan.slots_per_epoch;
    // One extra epoch after the window so late attestations are included.
    let end_slot = plan.last_slot() + spe + 1;
    let pb = ProgressBar::new(end_slot);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] slot {pos}/{len} {wide_bar} {msg}",
        )
        .expect("valid template"),
    );
    let first_block_wait = unix_now().as_secs();
    let mut time_to_first_block: Option<u64> = None;
    let mut fault_targets = String::new();
    for slot in 0..=end_slot {
        sleep_until(plan.slot_time(slot) + plan.seconds_per_slot / 2).await;
        pb.set_position(slot);
        if backend.prometheus(plan) && !faults_timeline.faults.is_empty() {
            // Active faults as Prometheus targets (dashboards' fault annotations).
            let t = crate::plan::prometheus_fault_targets(&read_fault_log(out));
            if t != fault_targets {
                let path = out
                    .join(crate::plan::PROMETHEUS_RUN_DIR)
                    .join(crate::plan::PROMETHEUS_FAULTS_FILE);
                if let Err(e) = std::fs::write(&path, &t) {
                    eprintln!("warning: writing {}: {e}", path.display());
                }
                fault_targets = t;
            }
        }
        let samples = c.sample_heads(unix_now().as_secs()).await;
        if time_to_first_block.is_none() && samples.iter().any(|s| s.head_slot > 0) {
            time_to_first_block = Some(unix_now().as_secs().saturating_sub(first_block_wait));
        }
        if slot % spe == 1 {
            let epoch = slot / spe;
            c.record_duties(epoch).await?;
            backend
                .check_alive(plan, faults_timeline, unix_now().as_secs_f64())
                .await?;
            if epoch >= 1 {
                let chain = c.sync_chain().await?;
                let mut parts = Vec::new();
                for g in &meta.groups {
                    let (inc, duties) = c.live_inclusion(
                        &chain,
                        g.first..g.first + g.count,
                        meta.first_slot.min((epoch - 1) * spe),
                        epoch * spe - 1,
                    );
                    parts.push(format!("{} {inc}/{duties}", g.name));
                }
                let heads: Vec<String> = samples
                    .iter()
                    .map(|s| {
                        format!(
                            "{} head {} fin {} peers {}",
                            s.bn, s.head_slot, s.finalized_epoch, s.peers
                        )
                    })
                    .collect();
                let line = format!(
                    "epoch {epoch:>3} | {} | included so far: {}",
                    heads.join(" | "),
                    parts.join(", ")
                );
                if pb.is_hidden() {
                    println!("{line}");
                } else {
                    pb.println(line);
                }
            }
        }
    }
    pb.finish_and_clear();
    backend.fetch_outputs(plan, out).await?;
    c.collect_dvnodes(&meta.dvnodes, out).await;
    let mut raw = c.finish().await?;
    raw.faults = data::fault_frame(&read_fault_log(out))?;
    let first_dv = first_dv_inclusion(meta, &raw)?;
    let up_to_first_dv = first_dv.map(|s| plan.slot_time(s) as f64 - up_started);
    if let Some(t) = up_to_first_dv {
        println!("first DV attestation included {t:.0} s after `dvlab up`");
    }
    let warm_up = analyse::warm_up(meta, &raw)?;
    if let Some(miss) = warm_up.last_start_up_miss {
        println!(
            "analysed window starts at slot {} instead of {}: a plain validator client was still \
             starting (its group missed slot {miss} before its first attestation on chain)",
            warm_up.first_slot, meta.first_slot
        );
    }
    let stats = serde_json::json!({
        "time_to_first_block_s": time_to_first_block,
        "genesis_time": plan.genesis_time,
        "up_started": up_started,
        "first_dv_inclusion_slot": first_dv,
        "up_to_first_dv_attestation_included_s": up_to_first_dv,
        "planned_first_slot": meta.first_slot,
        "first_slot": warm_up.first_slot,
        "last_start_up_miss_slot": warm_up.last_start_up_miss,
    });
    std::fs::write(out.join("timing.json"), serde_json::to_vec_pretty(&stats)?)?;
    Ok((raw, warm_up))
}

/// A started devnet, as either backend hands it to the collection.
struct Running {
    plan: Plan,
    timeline: Timeline,
    beacon_nodes: Vec<BeaconNodeMeta>,
    dvnodes: Vec<DvNodeMeta>,
    /// When `dvlab up` (or the apply) started.
    up_started: f64,
}

/// The part of a run both backends share: the plan saved, the timeline collected, the raw
/// data saved, analysed and reported.
async fn collect_and_report(backend: &mut impl Backend, s: Running, out: &Path) -> Result<Report> {
    std::fs::write(out.join("plan.json"), serde_json::to_vec_pretty(&s.plan)?)?;
    let mut meta = run_meta(&s.plan, s.beacon_nodes, s.dvnodes);
    let (mut raw, warm_up) =
        timeline(backend, &s.plan, &s.timeline, &meta, out, s.up_started).await?;
    meta.first_slot = warm_up.first_slot;
    raw.save(&meta, out)?;
    let analysis = analyse::analyse(&meta, &raw)?;
    report::write(out, &meta, &raw, &analysis)
}

/// Outcome of `dvlab run`.
pub enum Outcome {
    /// The run completed; the report says whether assertions held.
    Done(Box<Report>),
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted,
}

/// `dvlab run`: the whole pipeline. Tears the devnet down unless `keep`, also on errors and
/// Ctrl-C.
pub async fn run(docker: &Docker, spec: &DevnetSpec, out: &Path, keep: bool) -> Result<Outcome> {
    std::fs::create_dir_all(out)?;
    let fault_run: std::sync::Mutex<Option<FaultRun>> = std::sync::Mutex::new(None);
    let body = async {
        let up_started = unix_now().as_secs_f64();
        let Devnet {
            plan,
            timeline: faults_timeline,
            beacon_nodes,
            dvnodes,
            prometheus,
        } = up(docker, spec, out).await?;
        if !faults_timeline.faults.is_empty() {
            println!(
                "{} fault(s) scheduled; executor log: {}",
                faults_timeline.faults.len(),
                out.join("faults.jsonl").display()
            );
            *fault_run.lock().expect("fault-run lock") =
                Some(start_faults(docker, &plan, &faults_timeline, out)?);
        }
        for bn in &beacon_nodes {
            println!("{}: {}", bn.name, bn.api_url);
        }
        for n in &dvnodes {
            println!("{}: cluster {} node {}", n.name, n.cluster, n.index);
        }
        if let Some(url) = &prometheus {
            println!("prometheus: {url}");
        }
        let mut docker = docker.clone();
        let started = Running {
            plan,
            timeline: faults_timeline,
            beacon_nodes,
            dvnodes,
            up_started,
        };
        collect_and_report(&mut docker, started, out).await
    };
    let result = tokio::select! {
        r = body => r.map(|r| Outcome::Done(Box::new(r))),
        () = interrupted() => Ok(Outcome::Interrupted),
    };
    let interrupted = matches!(result, Ok(Outcome::Interrupted));
    let fr = fault_run.lock().expect("fault-run lock").take();
    if let Some(fr) = fr {
        if let Err(e) = fr.heal().await {
            eprintln!("warning: {e:#}");
        }
    }
    if !keep || result.is_err() || interrupted {
        match runtime::down(docker, Some(&spec.name)).await {
            Ok(n) => println!("removed {n} container(s) of run `{}`", spec.name),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    result
}

/// What `dvlab run --backend kubernetes` is asked.
pub struct KubernetesRun<'a> {
    /// The devnet.
    pub spec: &'a DevnetSpec,
    /// Its file's path and text (error locations of the rendering).
    pub path: &'a str,
    /// The file's text.
    pub text: &'a str,
    /// Namespace, image registry, genesis delay.
    pub options: k8s::RenderOptions,
    /// Leave the run on the cluster afterwards.
    pub keep: bool,
}

/// `dvlab run --backend kubernetes`: the devnet rendered from the same plan and fault
/// timeline as Docker, applied (server-side), waited for, collected through the API
/// (port-forwards of each beacon node's REST port and each dvnode's metrics port, duty logs
/// and the fault timer's log) into the same raw data, analysed and reported as a Docker run;
/// the run's namespace (everything labelled for the run; Chaos Mesh heals the faults of
/// deleted objects) is deleted unless `keep`, and always on errors and when `stop` resolves
/// (Ctrl-C or SIGTERM: pass [`interrupted`]). The fault timer Job in the cluster creates the
/// Chaos Mesh objects; nothing here injects faults.
pub async fn run_kubernetes(
    client: kube::Client,
    req: KubernetesRun<'_>,
    out: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Outcome> {
    std::fs::create_dir_all(out)?;
    let up_started = unix_now().as_secs_f64();
    let r = k8s::render(
        req.spec,
        req.path,
        req.text,
        up_started as u64,
        &req.options,
    )?;
    let (namespace, run) = (r.namespace.clone(), r.plan.run.clone());
    let body = async {
        let n = k8s::runner::apply_rendered(&client, &r).await?;
        println!(
            "applied {n} objects in namespace {namespace}; genesis in {} s",
            r.plan.genesis_time.saturating_sub(unix_now().as_secs())
        );
        if !r.timeline.faults.is_empty() {
            println!(
                "{} fault(s) scheduled: {} Chaos Mesh object(s), created by the Job {}",
                r.timeline.faults.len(),
                r.chaos.len(),
                k8s::FAULTS_NAME
            );
        }
        if !r.once_jobs.is_empty() {
            println!(
                "waiting for {} once-Job(s): the DKG ceremony, then the genesis state",
                r.once_jobs.len()
            );
            k8s::dkg::wait_once_jobs(
                &client,
                &namespace,
                &run,
                &r.once_jobs,
                r.plan.genesis_time,
                Duration::from_secs(2),
            )
            .await?;
            k8s::dkg::save_genesis_state(&client, &namespace, out).await?;
        }
        let wait = r.plan.genesis_time.saturating_sub(unix_now().as_secs()) + 300;
        k8s::runner::wait_ready(&client, &namespace, &run, Duration::from_secs(wait)).await?;
        let mut forwards = Vec::new();
        let mut beacon_nodes = Vec::new();
        let mut metrics = std::collections::HashMap::new();
        for c in &r.plan.containers {
            let pod = k8s::collect::pod_name(c);
            match &c.role {
                Role::BeaconNode { name } => {
                    let f =
                        k8s::collect::forward(&client, &namespace, &pod, crate::plan::BN_REST_PORT)
                            .await?;
                    println!("{name}: {} (port-forward to {pod})", f.url);
                    beacon_nodes.push(BeaconNodeMeta {
                        name: name.clone(),
                        api_url: f.url.clone(),
                    });
                    forwards.push(f);
                }
                Role::DvNode { .. } => {
                    let f = k8s::collect::forward(
                        &client,
                        &namespace,
                        &pod,
                        crate::plan::DVNODE_METRICS_PORT,
                    )
                    .await?;
                    metrics.insert(c.name.clone(), f.url.clone());
                    forwards.push(f);
                }
                _ => {}
            }
        }
        let dvnodes = dvnode_metas(&r.plan, |name| metrics.get(name).cloned());
        let mut backend = Kubernetes {
            cluster: k8s::collect::Cluster::new(client.clone(), &namespace),
            last_check: None,
        };
        let started = Running {
            plan: r.plan.clone(),
            timeline: r.timeline.clone(),
            beacon_nodes,
            dvnodes,
            up_started,
        };
        let report = collect_and_report(&mut backend, started, out).await;
        drop(forwards);
        report
    };
    let result = tokio::select! {
        r = body => r.map(|r| Outcome::Done(Box::new(r))),
        () = stop => Ok(Outcome::Interrupted),
    };
    let interrupted = matches!(result, Ok(Outcome::Interrupted));
    if !req.keep || result.is_err() || interrupted {
        match k8s::runner::delete_run(&client, &namespace, &run).await {
            Ok(true) => println!("deleting namespace {namespace} of run `{run}`"),
            Ok(false) => {}
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    result
}

/// `dvlab report DIR`: re-renders the report from saved raw data.
pub fn rerender(dir: &Path) -> Result<Report> {
    let (meta, raw) = RawData::load(dir)?;
    let analysis = analyse::analyse(&meta, &raw)?;
    report::write(dir, &meta, &raw, &analysis)
}

/// What `dvlab analyze` is asked: validators of any chain one beacon node serves.
#[derive(Debug, Clone)]
pub struct AnalyzeRequest {
    /// Beacon node REST URL.
    pub beacon_node: String,
    /// The validators analysed (the report's DV role: `dv_*` metrics).
    pub validators: ValidatorSpec,
    /// A comparison group (the report's `baseline`).
    pub compare: Option<ValidatorSpec>,
    /// Epochs; with `follow`, optional (from the head epoch on).
    pub epochs: Option<EpochRange>,
    /// Keep collecting as the chain grows, re-rendering every epoch, until Ctrl-C (or the end
    /// of `epochs`).
    pub follow: bool,
    /// Assertions (metric → expression).
    pub assertions: std::collections::BTreeMap<String, String>,
    /// dvnode duty logs (`--duty-log DIR`).
    pub duty_log: Option<std::path::PathBuf>,
}

/// Resolves the request's groups through the beacon node.
async fn analyze_groups(h: &History, req: &AnalyzeRequest) -> Result<Vec<GroupMeta>> {
    let ours = h.resolve(&req.validators).await?;
    let name = if req.validators.name.is_empty() {
        "validators".to_string()
    } else {
        req.validators.name.clone()
    };
    let mut groups = vec![GroupMeta::of(&name, &ours, true)];
    if let Some(c) = &req.compare {
        let theirs = h.resolve(c).await?;
        if let Some(v) = ours.intersection(&theirs).next() {
            anyhow::bail!(
                "validator {v} is in both --validators {} and --compare {}: the groups must not overlap",
                req.validators.source,
                c.source
            );
        }
        groups.push(GroupMeta::of("baseline", &theirs, false));
    }
    Ok(groups)
}

/// Collects `epochs` and writes the report (as a run's: report.json / report.html / plots /
/// raw CSV, plus `collection.json`: where the committees and proposers came from and what was
/// not served).
async fn analyze_once(
    h: &mut History,
    meta: &mut RunMeta,
    epochs: EpochRange,
    out: &Path,
) -> Result<Report> {
    let spe = h.facts.params.slots_per_epoch;
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] slot {pos}/{len} {wide_bar} {msg}",
        )
        .expect("valid template"),
    );
    pb.set_message(format!("epochs {}..{}", epochs.first, epochs.end));
    h.collect(epochs, &pb).await?;
    pb.finish_and_clear();
    h.head().await?;
    meta.first_slot = epochs.first_slot(spe);
    meta.last_slot = epochs.last_slot(spe);
    let mut raw = h.raw().await?;
    raw.save(meta, out)?;
    let collection = serde_json::json!({
        "beacon_node": h.url(),
        "epochs": format!("{}..{}", epochs.first, epochs.end),
        "committees": h.committee_sources,
        "proposers": h.proposer_sources,
        "sync_committee_periods": h.sync_sources,
        "not_served": h.notes,
    });
    std::fs::write(
        out.join("collection.json"),
        serde_json::to_vec_pretty(&collection)?,
    )?;
    let analysis = analyse::analyse(meta, &raw)?;
    report::write(out, meta, &raw, &analysis)
}

/// `dvlab analyze`: the run's analysis and report for validators of any chain. Bad input
/// (unknown key or index, a range beyond the head, an unreachable node) is an error.
pub async fn analyze(req: &AnalyzeRequest, out: &Path) -> Result<Outcome> {
    // The request's own mistakes first, before asking the node anything.
    if !req.follow && req.epochs.is_none() {
        anyhow::bail!("--epochs A..B is needed without --follow");
    }
    if let Some(dir) = &req.duty_log {
        if !dir.is_dir() {
            anyhow::bail!("--duty-log {}: not a directory", dir.display());
        }
    }
    let mut h = History::connect(&req.beacon_node).await?;
    let groups = analyze_groups(&h, req).await?;
    let spe = h.facts.params.slots_per_epoch;
    let head_slot = h.complete_slot().await?;
    let mut dvnodes = Vec::new();
    if let Some(dir) = &req.duty_log {
        for (i, name) in h.read_duty_logs(dir)?.into_iter().enumerate() {
            dvnodes.push(DvNodeMeta {
                name,
                cluster: groups[0].name.clone(),
                index: i as u64,
                metrics_url: None,
            });
        }
    }
    let mut meta = RunMeta {
        run: "analyze".into(),
        genesis_time: h.facts.genesis_time,
        seconds_per_slot: h.facts.seconds_per_slot,
        slots_per_epoch: spe,
        first_slot: 0,
        last_slot: 0,
        groups,
        beacon_nodes: vec![h.meta()],
        assertions: req.assertions.clone(),
        dvnodes,
        remote_signer: Vec::new(),
    };
    std::fs::create_dir_all(out)?;
    if !req.follow {
        let epochs = req
            .epochs
            .ok_or_else(|| anyhow!("--epochs A..B is needed without --follow"))?;
        epochs.check_head(spe, head_slot)?;
        let r = analyze_once(&mut h, &mut meta, epochs, out).await?;
        print_notes(&h);
        return Ok(Outcome::Done(Box::new(r)));
    }
    // --follow: from the range's first epoch (default: the head's), every epoch whose
    // inclusion window has passed, until Ctrl-C or the range's end.
    let first = req.epochs.map_or(head_slot / spe, |e| e.first);
    let end = req.epochs.map(|e| e.end);
    let mut last: Option<Report> = None;
    let mut done_to = first;
    let body = async {
        loop {
            let head = h.complete_slot().await?;
            let ready = ((head + 1) / spe)
                .saturating_sub(1)
                .min(end.unwrap_or(u64::MAX));
            if ready > done_to {
                let epochs = EpochRange { first, end: ready };
                let r = analyze_once(&mut h, &mut meta, epochs, out).await?;
                println!("{}", follow_line(&r, &epochs));
                last = Some(r);
                done_to = ready;
            }
            if Some(done_to) == end {
                return Ok::<_, anyhow::Error>(());
            }
            // Next epoch boundary plus half a slot.
            let slot = (head / spe + 1) * spe;
            sleep_until(
                h.facts.genesis_time
                    + slot * h.facts.seconds_per_slot
                    + h.facts.seconds_per_slot / 2,
            )
            .await;
        }
    };
    tokio::select! {
        r = body => r?,
        () = interrupted() => println!("interrupted: the report covers the epochs collected so far"),
    }
    print_notes(&h);
    match last {
        Some(r) => Ok(Outcome::Done(Box::new(r))),
        None => Ok(Outcome::Interrupted),
    }
}

fn print_notes(h: &History) {
    for n in &h.notes {
        eprintln!("note: {n}");
    }
}

/// One line per re-render in `--follow` mode.
fn follow_line(r: &Report, epochs: &EpochRange) -> String {
    let parts: Vec<String> = r
        .analysis
        .groups
        .iter()
        .map(|(n, g)| format!("{n} {}/{}", g.attestations_included, g.attestation_duties))
        .collect();
    format!(
        "epochs {}..{} | attestations included: {}",
        epochs.first,
        epochs.end,
        parts.join(", ")
    )
}
