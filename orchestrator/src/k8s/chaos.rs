//! Faults as Chaos Mesh objects (`chaos-mesh.org/v1alpha1`), one per fault occurrence of the
//! seeded timeline (random faults are expanded exactly as for Docker, from the same seed).
//!
//! Chaos Mesh starts an experiment when its object is created and stops it `duration` after
//! that (its objects have no start time; its `Schedule` is a cron of minute resolution). Each
//! object therefore carries its genesis-derived start and end as annotations
//! ([`START_ANNOTATION`], [`END_ANNOTATION`]) and its `duration` is the fault's window: the
//! fault timer ([`super::timer`]) creates it at its start.

use crate::data::{partition_sides, Effect, Scope};
use crate::faults::{slot_at, Fault, Timeline};
use anyhow::{bail, Result};
use dvnode::clock::SlotClock;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// API version of every Chaos Mesh object.
pub const CHAOS_API_VERSION: &str = "chaos-mesh.org/v1alpha1";
/// Annotation: UNIX time (seconds, fractional) at which the fault timer creates the object.
pub const START_ANNOTATION: &str = "dvlab/start-unix";
/// Annotation: UNIX time at which the fault ends (absent: it lasts to the end of the run).
pub const END_ANNOTATION: &str = "dvlab/end-unix";
/// Annotation: slot at the start.
pub const SLOT_ANNOTATION: &str = "dvlab/start-slot";
/// Annotation: the fault occurrence's number in the timeline (as in `faults.jsonl`).
pub const FAULT_ANNOTATION: &str = "dvlab/fault";
/// Annotation: the timeline's JSON form of the fault (kind, targets, parameters), which the
/// fault timer logs to `faults.jsonl` as the Docker executor does.
pub const EFFECT_ANNOTATION: &str = "dvlab/effect";
/// Annotation: index of the devnet file's `faults` entry the fault comes from.
pub const ENTRY_ANNOTATION: &str = "dvlab/entry";
/// Annotation: the entry's `id`, if it has one.
pub const ID_ANNOTATION: &str = "dvlab/id";
/// Annotation: where in the devnet file the fault comes from.
pub const SOURCE_ANNOTATION: &str = "dvlab/source";
/// Pod label holding the short name faults target (`dv0-1`, `bn0`, `baseline`).
pub const TARGET_LABEL: &str = "dvlab.target";

/// Where a fault comes from in the devnet file, for errors and annotations.
pub trait FaultSource {
    /// `FILE:LINE: faults[i]` of spec entry `i`.
    fn describe(&self, index: usize) -> String;
}

/// A pod faults may target: its short name and the name of its main container.
#[derive(Debug, Clone)]
pub struct Target {
    /// Short name (`dv0-1`).
    pub short: String,
    /// Name of the container processes run in.
    pub container: String,
}

/// A rendered Chaos Mesh object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosObject {
    /// Always [`CHAOS_API_VERSION`].
    pub api_version: &'static str,
    /// `NetworkChaos`, `PodChaos` or `TimeChaos`.
    pub kind: &'static str,
    /// Name, namespace, labels, timing annotations.
    pub metadata: ObjectMeta,
    /// The kind's spec.
    pub spec: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Selector {
    namespaces: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    expression_selectors: Vec<LabelSelectorRequirement>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodSet {
    mode: &'static str,
    selector: Selector,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NetworkChaosSpec {
    action: &'static str,
    mode: &'static str,
    selector: Selector,
    direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<PodSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay: Option<Delay>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss: Option<Loss>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth: Option<Bandwidth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
}

#[derive(Serialize)]
struct Delay {
    latency: String,
    jitter: String,
    correlation: String,
}

#[derive(Serialize)]
struct Loss {
    loss: String,
    correlation: String,
}

#[derive(Serialize)]
struct Bandwidth {
    rate: String,
    limit: u32,
    buffer: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PodChaosSpec {
    action: &'static str,
    mode: &'static str,
    selector: Selector,
    container_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TimeChaosSpec {
    mode: &'static str,
    selector: Selector,
    time_offset: String,
    clock_ids: Vec<&'static str>,
    container_names: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
}

/// A Go duration (`time.ParseDuration`) of `secs` seconds, at millisecond precision.
pub fn go_duration(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// What turns a timeline into Chaos Mesh objects.
pub struct ChaosRender<'a> {
    /// Namespace of the run.
    pub namespace: &'a str,
    /// Value of the `dvlab.run` label.
    pub run: &'a str,
    /// Pods by short name.
    pub targets: BTreeMap<String, Target>,
    /// Slot arithmetic of the run.
    pub clock: SlotClock,
    /// Locates faults in the devnet file.
    pub source: &'a dyn FaultSource,
}

impl ChaosRender<'_> {
    fn selector(&self, shorts: &[String]) -> Selector {
        Selector {
            namespaces: vec![self.namespace.to_string()],
            expression_selectors: vec![LabelSelectorRequirement {
                key: TARGET_LABEL.into(),
                operator: "In".into(),
                values: Some(shorts.to_vec()),
            }],
        }
    }

    fn container(&self, short: &str, f: &Fault) -> Result<String> {
        match self.targets.get(short) {
            Some(t) => Ok(t.container.clone()),
            None => bail!(
                "{}: `{short}` is not a pod of this devnet",
                self.source.describe(f.source)
            ),
        }
    }

    fn object(
        &self,
        f: &Fault,
        part: Option<usize>,
        kind: &'static str,
        spec: Value,
    ) -> ChaosObject {
        let targets = f.effect.targets();
        let mut name = format!(
            "f{:03}-{}-{}",
            f.id,
            f.effect.kind().replace('_', "-"),
            targets.join("-")
        );
        if let Some(p) = part {
            name = format!("f{:03}-{}-part{p}", f.id, f.effect.kind().replace('_', "-"));
        }
        name.truncate(63);
        let name = name.trim_end_matches('-').to_string();
        let mut annotations = BTreeMap::from([
            (START_ANNOTATION.to_string(), format!("{:.3}", f.start)),
            (
                SLOT_ANNOTATION.to_string(),
                slot_at(&self.clock, f.start).to_string(),
            ),
            (FAULT_ANNOTATION.to_string(), f.id.to_string()),
            (
                EFFECT_ANNOTATION.to_string(),
                serde_json::to_string(&f.effect).expect("effects serialize"),
            ),
            (
                SOURCE_ANNOTATION.to_string(),
                self.source.describe(f.source),
            ),
        ]);
        if let Some(end) = f.end {
            annotations.insert(END_ANNOTATION.to_string(), format!("{end:.3}"));
        }
        ChaosObject {
            api_version: CHAOS_API_VERSION,
            kind,
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(self.namespace.to_string()),
                labels: Some(BTreeMap::from([
                    (crate::plan::RUN_LABEL.to_string(), self.run.to_string()),
                    ("dvlab.fault".to_string(), f.id.to_string()),
                ])),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec,
        }
    }

    fn scope(&self, scope: &Scope) -> (Selector, &'static str, Option<PodSet>) {
        match scope {
            Scope::Egress(v) => (self.selector(v), "to", None),
            Scope::Link(a, b) => (
                self.selector(std::slice::from_ref(a)),
                "both",
                Some(PodSet {
                    mode: "all",
                    selector: self.selector(std::slice::from_ref(b)),
                }),
            ),
            Scope::To(from, to) => (
                self.selector(from),
                "to",
                Some(PodSet {
                    mode: "all",
                    selector: self.selector(to),
                }),
            ),
        }
    }

    /// The Chaos Mesh objects of one fault occurrence: one, except a partition into more than
    /// two groups (one per group but the largest, cutting it from all others, as in Docker).
    /// A fault Chaos Mesh cannot express is an error naming it and its line.
    pub fn fault(&self, f: &Fault) -> Result<Vec<ChaosObject>> {
        let duration = f.end.map(|e| go_duration(e - f.start));
        for t in f.effect.targets() {
            self.container(&t, f)?;
        }
        let network =
            |selector, direction, target, delay, loss, bandwidth, action| NetworkChaosSpec {
                action,
                mode: "all",
                selector,
                direction,
                target,
                delay,
                loss,
                bandwidth,
                duration: duration.clone(),
            };
        let one = |kind, spec: Value| Ok(vec![self.object(f, None, kind, spec)]);
        match &f.effect {
            Effect::Partition { groups } => {
                let mut out = Vec::new();
                for side in partition_sides(groups) {
                    let others: Vec<String> = side.others.into_iter().cloned().collect();
                    let spec = network(
                        self.selector(side.group),
                        "both",
                        Some(PodSet {
                            mode: "all",
                            selector: self.selector(&others),
                        }),
                        None,
                        None,
                        None,
                        "partition",
                    );
                    let part = (groups.len() > 2).then_some(side.index);
                    out.push(self.object(f, part, "NetworkChaos", value(&spec)));
                }
                Ok(out)
            }
            Effect::Latency {
                scope,
                delay_ms,
                jitter_ms,
            } => {
                let (sel, dir, target) = self.scope(scope);
                let delay = Delay {
                    latency: go_duration(delay_ms / 1000.0),
                    jitter: go_duration(jitter_ms / 1000.0),
                    correlation: "0".into(),
                };
                one(
                    "NetworkChaos",
                    value(&network(sel, dir, target, Some(delay), None, None, "delay")),
                )
            }
            Effect::Loss {
                scope: Scope::To(..),
                ..
            } => bail!(
                "{}: a loss with `to` is one-way (the targets' data is lost, their \
                 acknowledgements pass), which Chaos Mesh cannot express: its loss drops every \
                 packet in the direction, acknowledgements included",
                self.source.describe(f.source)
            ),
            Effect::BnErrors { target, .. } => bail!(
                "{}: bn_errors answers errors to `{target}` only, which Chaos Mesh cannot \
                 express: its HTTPChaos acts on the beacon node's port for every client",
                self.source.describe(f.source)
            ),
            Effect::Loss { scope, percent } => {
                let (sel, dir, target) = self.scope(scope);
                let loss = Loss {
                    loss: format!("{percent}"),
                    correlation: "0".into(),
                };
                one(
                    "NetworkChaos",
                    value(&network(sel, dir, target, None, Some(loss), None, "loss")),
                )
            }
            Effect::Bandwidth {
                targets,
                bits_per_sec,
            } => {
                // The token bucket of the Docker backend: a 20 ms burst (at least 16 kB) and a
                // queue of 400 ms of traffic.
                let burst = (bits_per_sec / 8 / 50).max(16_000);
                let limit = bits_per_sec / 8 * 2 / 5 + burst;
                let bw = Bandwidth {
                    rate: format!("{bits_per_sec}bit"),
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                    buffer: u32::try_from(burst).unwrap_or(u32::MAX),
                };
                one(
                    "NetworkChaos",
                    value(&network(
                        self.selector(targets),
                        "to",
                        None,
                        None,
                        None,
                        Some(bw),
                        "bandwidth",
                    )),
                )
            }
            Effect::Crash { target } => {
                if f.end.is_none() {
                    bail!(
                        "{}: a crash without `restart_after` keeps `{target}` down to the end of \
                         the run, which Chaos Mesh cannot express: its container-kill is restarted \
                         by the kubelet at once. Use `kind: stop` (PodChaos pod-failure, down \
                         until the run ends) or give `restart_after`",
                        self.source.describe(f.source)
                    );
                }
                let spec = PodChaosSpec {
                    action: "container-kill",
                    mode: "all",
                    selector: self.selector(std::slice::from_ref(target)),
                    container_names: vec![self.container(target, f)?],
                    duration: None,
                };
                one("PodChaos", value(&spec))
            }
            Effect::Stop { target } | Effect::Pause { target } => {
                let spec = PodChaosSpec {
                    action: "pod-failure",
                    mode: "all",
                    selector: self.selector(std::slice::from_ref(target)),
                    container_names: vec![self.container(target, f)?],
                    duration: duration.clone(),
                };
                one("PodChaos", value(&spec))
            }
            Effect::ClockSkew {
                target,
                offset_secs,
            } => {
                let offset = go_duration(offset_secs.abs());
                let spec = TimeChaosSpec {
                    mode: "all",
                    selector: self.selector(std::slice::from_ref(target)),
                    time_offset: if *offset_secs < 0.0 {
                        format!("-{offset}")
                    } else {
                        offset
                    },
                    clock_ids: vec!["CLOCK_REALTIME"],
                    container_names: vec![self.container(target, f)?],
                    duration: duration.clone(),
                };
                one("TimeChaos", value(&spec))
            }
        }
    }

    /// The objects of every fault of `timeline`, in timeline order.
    pub fn timeline(&self, timeline: &Timeline) -> Result<Vec<ChaosObject>> {
        let mut out = Vec::new();
        for f in &timeline.faults {
            out.extend(self.fault(f)?);
        }
        Ok(out)
    }
}

fn value<T: Serialize>(spec: &T) -> Value {
    serde_json::to_value(spec).expect("chaos specs serialize")
}
