//! The fault timer: creates each Chaos Mesh object of a run at its genesis-derived start time and
//! logs every start and end to `faults.jsonl` lines (the Docker executor's format), so the run's
//! fault windows are analysed as in Docker. It runs in the cluster as the Job `dvlab-faults`
//! (`dvlab k8s fault-timer`, image `dvlab/dvlab`), so `kubectl apply -f DIR` needs nothing else.
//! Injection, the `duration` and recovery are Chaos Mesh's: deleting an object (or the
//! namespace) heals its fault.

use super::chaos::{
    ChaosObject, CHAOS_API_VERSION, EFFECT_ANNOTATION, END_ANNOTATION, ENTRY_ANNOTATION,
    FAULT_ANNOTATION, ID_ANNOTATION, START_ANNOTATION,
};
use crate::data::{Effect, FaultLogLine, LogPhase};
use crate::faults::slot_at;
use anyhow::{anyhow, bail, Context, Result};
use dvnode::clock::{unix_now, SlotClock};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The API resource of a Chaos Mesh kind.
pub fn resource(kind: &str) -> Result<ApiResource> {
    let plural = match kind {
        "NetworkChaos" => "networkchaos",
        "PodChaos" => "podchaos",
        "TimeChaos" => "timechaos",
        "StressChaos" => "stresschaos",
        "Schedule" => "schedules",
        _ => bail!("`{kind}` is not a Chaos Mesh kind dvlab creates"),
    };
    let (group, version) = CHAOS_API_VERSION.split_once('/').expect("group/version");
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

/// One scheduled step of the timer.
#[derive(Debug, Clone)]
struct Step {
    time: f64,
    start: bool,
    object: DynamicObject,
}

fn annotation(o: &DynamicObject, key: &str) -> Option<String> {
    o.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Reads the Chaos Mesh objects (YAML, one per `*.yaml` file) of `dir`.
pub fn read_dir(dir: &Path) -> Result<Vec<DynamicObject>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", p.display()))
        })
        .collect()
}

/// The rendered objects as the API's dynamic objects.
pub fn dynamic(objects: &[ChaosObject]) -> Result<Vec<DynamicObject>> {
    objects
        .iter()
        .map(|o| Ok(serde_json::from_value(serde_json::to_value(o)?)?))
        .collect()
}

fn steps(objects: Vec<DynamicObject>) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for o in objects {
        let name = o.metadata.name.clone().unwrap_or_default();
        let time = |key: &str| -> Result<Option<f64>> {
            annotation(&o, key)
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| anyhow!("{name}: annotation {key} `{v}` is not a time"))
                })
                .transpose()
        };
        let start = time(START_ANNOTATION)?
            .ok_or_else(|| anyhow!("{name}: no {START_ANNOTATION} annotation"))?;
        if let Some(end) = time(END_ANNOTATION)? {
            steps.push(Step {
                time: end,
                start: false,
                object: o.clone(),
            });
        }
        steps.push(Step {
            time: start,
            start: true,
            object: o,
        });
    }
    // Ends before starts at equal times, as in the Docker timeline.
    steps.sort_by(|a, b| a.time.total_cmp(&b.time).then(a.start.cmp(&b.start)));
    Ok(steps)
}

/// One `faults.jsonl` line for a step (the Docker executor's type).
pub fn log_line(
    clock: &SlotClock,
    time: f64,
    o: &DynamicObject,
    start: bool,
    scheduled: f64,
    error: Option<String>,
) -> FaultLogLine {
    let effect: Option<Effect> =
        annotation(o, EFFECT_ANNOTATION).and_then(|e| serde_json::from_str(&e).ok());
    FaultLogLine {
        time,
        scheduled,
        slot: slot_at(clock, time),
        fault: annotation(o, FAULT_ANNOTATION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        source: annotation(o, ENTRY_ANNOTATION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        name: annotation(o, ID_ANNOTATION),
        kind: effect.as_ref().map_or("", Effect::kind).to_string(),
        phase: if start {
            LogPhase::Start
        } else {
            LogPhase::Stop
        },
        targets: effect.as_ref().map(Effect::targets).unwrap_or_default(),
        effect,
        error,
    }
}

/// Runs the timeline of `objects`: creates each object in `namespace` at its start and logs its
/// start and its end (when Chaos Mesh's `duration` ends it) to `log`. Returns an error naming
/// every object that could not be created, after the last step.
///
/// A restarted timer (the Job's pod retried; the kubelet keeps only the newest log) replays the
/// whole timeline, so its log alone holds every step: an object that exists already is left
/// alone and its start logged at its creation time, an end already past at its scheduled time.
pub async fn run(
    client: kube::Client,
    namespace: &str,
    clock: SlotClock,
    objects: Vec<DynamicObject>,
    log: &mut (dyn Write + Send),
) -> Result<()> {
    let mut failures = Vec::new();
    for step in steps(objects)? {
        let wait = step.time - unix_now().as_secs_f64();
        if wait > 0.0 {
            // try_: a wait too long for a Duration is a wait past the run.
            tokio::time::sleep(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX)).await;
        }
        let (error, at) = if step.start {
            match create(&client, namespace, &step.object).await {
                Ok(created) => (None, created),
                Err(e) => (Some(e), None),
            }
        } else {
            // More than a second late: a replay after a restart, not this run's own delay.
            (None, (wait < -1.0).then_some(step.time))
        };
        if let Some(e) = &error {
            failures.push(format!(
                "{}: {e:#}",
                step.object.metadata.name.as_deref().unwrap_or("?")
            ));
        }
        let line = log_line(
            &clock,
            at.unwrap_or_else(|| unix_now().as_secs_f64()),
            &step.object,
            step.start,
            step.time,
            error.map(|e| format!("{e:#}")),
        );
        let text = serde_json::to_string(&line)?;
        writeln!(log, "{text}").context("writing the fault log")?;
        log.flush().ok();
    }
    if !failures.is_empty() {
        bail!(
            "{} fault object(s) not created:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// Creates one Chaos Mesh object (without its annotations' status fields). `Some(time)`: it
/// existed already, created at that Unix time (a restarted timer's earlier instance).
pub async fn create(
    client: &kube::Client,
    namespace: &str,
    o: &DynamicObject,
) -> Result<Option<f64>> {
    let kind = o
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .ok_or_else(|| anyhow!("object without a kind"))?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &resource(&kind)?);
    let name = o.metadata.name.as_deref().unwrap_or("?");
    match api.create(&PostParams::default(), o).await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Its creation time, if the API tells it; else "now" as before.
            let existing = api.get(name).await.ok();
            Ok(existing
                .and_then(|x| x.metadata.creation_timestamp)
                .map(|t| t.0.timestamp_millis() as f64 / 1000.0))
        }
        Err(e) => Err(e).with_context(|| format!("creating {kind} {name}")),
    }
}
