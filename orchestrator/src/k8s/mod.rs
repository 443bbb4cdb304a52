//! Kubernetes backend: the same devnet file as plain manifests, faults as Chaos Mesh objects.
//!
//! `dvlab k8s render FILE --out DIR` resolves the devnet into the same [`Plan`] and fault
//! [`Timeline`] the Docker backend runs, and writes:
//!
//! | file | objects |
//! | --- | --- |
//! | `00-namespace.yaml` | the run's Namespace |
//! | `10-secrets.yaml` | per dvnode its node directory, per DV validator client its share keystores (Secrets, mode 0600 on disk), made at render time by `create-cluster` (not for `keys: dkg` clusters) |
//! | `15-dkg.yaml` | only with `keys: dkg` clusters ([`dkg`]): RBAC, per cluster a setup Job and per operator a ceremony Job with its headless Service, writing that operator's key Secrets; the genesis Job building the genesis state ConfigMap the beacon nodes unpack |
//! | `20-services.yaml` | one headless Service per container serving a port, named like the Docker container |
//! | `30-workloads.yaml` | one StatefulSet per beacon node, validator client and dvnode, with the Docker backend's image, arguments and environment |
//! | `40-faults.yaml` | the fault timer: ServiceAccount, Role, RoleBinding, the ConfigMap `dvlab-faults` holding one Chaos Mesh object per fault, and the Job `dvlab-faults` creating each at its start |
//!
//! Every object carries `dvlab.run=<name>`. Fault kinds map as follows (Docker mechanism from
//! `crate::faults`):
//!
//! | fault | Docker | Chaos Mesh |
//! | --- | --- | --- |
//! | partition / isolate | iptables DROP both ways in a sidecar | NetworkChaos `partition`, `direction: both`, selector = a group, target = the others (one object per group but the largest when there are more than two) |
//! | latency / jitter | NFQUEUE + `dvlab-netem` delayer | NetworkChaos `delay` (`to` for targets' egress, `both` with a target for a link) |
//! | loss | iptables `statistic` DROP | NetworkChaos `loss` |
//! | bandwidth | TBF qdisc | NetworkChaos `bandwidth` (same rate, burst and queue) |
//! | crash (+ random_crash) | SIGKILL, start after `restart_after` | PodChaos `container-kill`; the kubelet restarts the container at once (no `restart_after` wait); a crash without `restart_after` is refused |
//! | stop (+ random_stop) | SIGTERM, start after `restart_after` | PodChaos `pod-failure` for `restart_after` |
//! | pause | cgroup freezer | PodChaos `pod-failure` for `for` (the processes are replaced, not frozen) |
//! | clock_skew | libfaketime offset file | TimeChaos `timeOffset` on `CLOCK_REALTIME` |

pub mod chaos;
pub mod collect;
pub mod dkg;
pub mod keys;
pub mod objects;
pub mod runner;
pub mod timer;

use crate::faults::{self, Timeline};
use crate::plan::{Plan, Role, RUN_LABEL};
use crate::spec::DevnetSpec;
use anyhow::{anyhow, Context, Result};
use chaos::{ChaosObject, ChaosRender, FaultSource, Target};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Image of the fault timer: `dvlab/base` plus the `dvlab` binary.
pub const DVLAB_IMAGE: &str = "dvlab/dvlab:latest";
/// Name of the fault timer's Job, ServiceAccount, Role, RoleBinding and ConfigMap.
pub const FAULTS_NAME: &str = "dvlab-faults";
/// Where the fault timer sees the Chaos Mesh objects.
pub const FAULTS_DIR: &str = "/faults";

/// Options of `dvlab k8s render`.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Namespace (default `dvlab-<name>`).
    pub namespace: Option<String>,
    /// Registry prefixed to every image (`R/dvlab/dvnode:latest`).
    pub image_registry: Option<String>,
    /// Seconds from now to genesis (default: the devnet's `genesis_delay`). Kubernetes pulls
    /// images and schedules pods before the chain starts: give it time.
    pub genesis_delay: Option<u64>,
}

/// A rendered devnet.
pub struct Rendered {
    /// The plan both backends share.
    pub plan: Plan,
    /// The fault timeline both backends share.
    pub timeline: Timeline,
    /// Namespace.
    pub namespace: String,
    /// Output files in apply order: (file name, objects).
    pub files: Vec<(&'static str, Vec<Value>)>,
    /// The Chaos Mesh objects (also inside the `dvlab-faults` ConfigMap).
    pub chaos: Vec<ChaosObject>,
    /// The Jobs that run once before genesis (`keys: dkg`: ceremonies and genesis), in order.
    pub once_jobs: Vec<dkg::OnceJob>,
}

/// Locates faults in a devnet file's text.
struct SpecSource<'a> {
    path: &'a str,
    text: &'a str,
}

impl FaultSource for SpecSource<'_> {
    fn describe(&self, index: usize) -> String {
        let field = format!("faults[{index}]");
        match crate::spec::locate(self.text, &field) {
            Some(line) => format!("{}:{line}: {field}", self.path),
            None => format!("{}: {field}", self.path),
        }
    }
}

fn json<T: Serialize>(o: &T) -> Result<Value> {
    Ok(serde_json::to_value(o)?)
}

/// Renders `spec` (whose YAML `text` was read from `path`, for error locations) with genesis
/// `opts.genesis_delay` seconds after `now`.
pub fn render(
    spec: &DevnetSpec,
    path: &str,
    text: &str,
    now: u64,
    opts: &RenderOptions,
) -> Result<Rendered> {
    let delay = opts.genesis_delay.unwrap_or(spec.network.genesis_delay);
    let plan = Plan::new(
        spec,
        (now + delay).saturating_sub(spec.network.genesis_delay),
    );
    let timeline = faults::timeline(spec, &plan)?;
    let namespace = opts
        .namespace
        .clone()
        .unwrap_or_else(|| format!("dvlab-{}", plan.run));
    let scope = objects::Scope {
        plan: &plan,
        namespace: &namespace,
        image_prefix: opts
            .image_registry
            .as_deref()
            .map(|r| format!("{}/", r.trim_end_matches('/')))
            .unwrap_or_default(),
    };
    let source = SpecSource { path, text };
    let chaos = ChaosRender {
        namespace: &namespace,
        run: &plan.run,
        targets: plan
            .containers
            .iter()
            .map(|c| {
                let short = scope.short(c).to_string();
                (
                    short.clone(),
                    Target {
                        short,
                        container: objects::container_name(c).to_string(),
                    },
                )
            })
            .collect(),
        clock: plan.slot_clock(),
        source: &source,
    }
    .timeline(&timeline)?;

    // Key material: Secrets, and the volumes mounting them.
    let mut secrets = Vec::new();
    let mut volumes: BTreeMap<String, k8s_openapi::api::core::v1::Volume> = BTreeMap::new();
    let dkg = dkg::render(&scope)?;
    volumes.extend(dkg.volumes);
    for cluster in plan.clusters.iter().filter(|c| c.dkg.is_none()) {
        let nodes = keys::cluster_keys(
            cluster,
            spec.network.preset,
            plan.genesis_validators,
            plan.genesis_state,
        )?;
        for (n, node_keys) in nodes.iter().enumerate() {
            let find = |pred: &dyn Fn(&Role) -> bool| {
                plan.containers
                    .iter()
                    .find(|c| pred(&c.role))
                    .ok_or_else(|| anyhow!("cluster {} node {n} is not planned", cluster.name))
            };
            let dvnode = find(
                &|r| matches!(r, Role::DvNode { cluster: c, node } if *c == cluster.name && *node == n as u64),
            )?;
            let vc = find(
                &|r| matches!(r, Role::DvVc { cluster: c, node } if *c == cluster.name && *node == n as u64),
            )?;
            for (name, secret, volume) in objects::key_secrets(&scope, dvnode, vc, node_keys)? {
                secrets.push(json(&secret)?);
                volumes.insert(name, volume);
            }
        }
    }
    let mut services = Vec::new();
    let mut workloads = Vec::new();
    // The Docker runs' Prometheus container is not rendered: a Kubernetes cluster has its own
    // monitoring (e.g. kube-prometheus), and the Lodestar `--metrics` servers and dvnodes'
    // `/metrics` (port 3620, in each dvnode Service) are there for it to scrape.
    for c in plan
        .containers
        .iter()
        .filter(|c| c.role != Role::Prometheus)
    {
        if let Some(s) = objects::service(&scope, c) {
            services.push(json(&s)?);
        }
        workloads.push(json(&objects::stateful_set(
            &scope,
            c,
            volumes.remove(&c.name),
        )?)?);
    }
    let mut files = vec![
        (
            "00-namespace.yaml",
            vec![json(&objects::namespace(&scope))?],
        ),
        ("10-secrets.yaml", secrets),
    ];
    if !dkg.objects.is_empty() {
        files.push(("15-dkg.yaml", dkg.objects));
    }
    files.extend([
        ("20-services.yaml", services),
        ("30-workloads.yaml", workloads),
    ]);
    if !chaos.is_empty() {
        files.push(("40-faults.yaml", fault_timer(&scope, &chaos)?));
    }
    // No empty files (a devnet whose only cluster makes its keys by DKG has no Secrets).
    files.retain(|(_, objects)| !objects.is_empty());
    let once_jobs = dkg::once_jobs(&scope);
    Ok(Rendered {
        once_jobs,
        plan,
        timeline,
        namespace,
        files,
        chaos,
    })
}

/// File name of a Chaos Mesh object inside the `dvlab-faults` ConfigMap.
pub fn chaos_file(o: &ChaosObject) -> String {
    format!("{}.yaml", o.metadata.name.as_deref().unwrap_or("fault"))
}

/// The fault timer's objects: RBAC to create Chaos Mesh objects in the namespace, the
/// ConfigMap of objects and the Job.
fn fault_timer(s: &objects::Scope, chaos: &[ChaosObject]) -> Result<Vec<Value>> {
    let meta = || s.meta(FAULTS_NAME, Some("fault-timer"));
    let mut data = BTreeMap::new();
    for o in chaos {
        data.insert(chaos_file(o), serde_yaml::to_string(o)?);
    }
    let mut objects = objects::service_account(
        s,
        FAULTS_NAME,
        "fault-timer",
        vec![PolicyRule {
            api_groups: Some(vec!["chaos-mesh.org".into()]),
            resources: Some(
                ["networkchaos", "podchaos", "timechaos"]
                    .map(String::from)
                    .to_vec(),
            ),
            verbs: ["create", "get", "list", "delete"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        }],
    )?;
    let config = ConfigMap {
        metadata: meta(),
        data: Some(data),
        ..Default::default()
    };
    let plan = s.plan;
    let last = chaos
        .iter()
        .filter_map(|o| {
            let a = o.metadata.annotations.as_ref()?;
            a.get(chaos::END_ANNOTATION)
                .or_else(|| a.get(chaos::START_ANNOTATION))?
                .parse::<f64>()
                .ok()
        })
        .fold(plan.genesis_time as f64, f64::max);
    let job = Job {
        metadata: meta(),
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            // Past the last fault's end, the Job is pointless.
            active_deadline_seconds: Some((last - plan.genesis_time as f64).ceil() as i64 + 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(s.labels(Some("fault-timer"))),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(FAULTS_NAME.into()),
                    restart_policy: Some("OnFailure".into()),
                    containers: vec![Container {
                        name: "fault-timer".into(),
                        image: Some(s.image(DVLAB_IMAGE)),
                        image_pull_policy: Some("IfNotPresent".into()),
                        args: Some(
                            [
                                "k8s",
                                "fault-timer",
                                "--dir",
                                FAULTS_DIR,
                                "--namespace",
                                s.namespace,
                                "--genesis-time",
                                &plan.genesis_time.to_string(),
                                "--seconds-per-slot",
                                &plan.seconds_per_slot.to_string(),
                            ]
                            .map(String::from)
                            .to_vec(),
                        ),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "faults".into(),
                            mount_path: FAULTS_DIR.into(),
                            read_only: Some(true),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "faults".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: FAULTS_NAME.into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    objects.extend([json(&config)?, json(&job)?]);
    Ok(objects)
}

/// YAML of several objects (`---` separated).
pub fn to_yaml(objects: &[Value]) -> Result<String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o)?);
    }
    Ok(out)
}

/// Writes the rendered files into `dir` (created; files of an earlier render replaced). The
/// Secrets file is written owner-only.
pub fn write(r: &Rendered, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == "yaml") {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    for (name, objects) in &r.files {
        let text = to_yaml(objects)?;
        let path = dir.join(name);
        if *name == "10-secrets.yaml" {
            dvnode::util::write_secret_file(&path, text.as_bytes())?;
        } else {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// The label selector of everything a run created (`dvlab.run=<run>`).
pub fn run_selector(run: &str) -> String {
    format!("{RUN_LABEL}={run}")
}
