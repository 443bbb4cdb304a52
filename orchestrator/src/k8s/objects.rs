//! Built-in Kubernetes objects of a plan: the namespace, one StatefulSet and one headless
//! Service per planned container (the Service is named like the Docker container, so the plan's
//! commands, which address `http://dvlab-<run>-bn0:9596`, work unchanged), and Secrets holding
//! the DV clusters' key material.

use super::dkg::{GENESIS_GZ_DIR, GENESIS_KEY, GENESIS_NAME};
use super::keys::{Files, NodeKeys};
use crate::plan::{
    ContainerPlan, Plan, Role, BN_GENESIS_DIR, BN_REST_PORT, DVNODE_API_PORT, DVNODE_METRICS_PORT,
    DVNODE_NODE_DIR, DVNODE_OUT_DIR, DVNODE_P2P_PORT, GENESIS_STATE_FILE, ROLE_LABEL, RUN_LABEL,
    VC_KEYS_DIR,
};
use anyhow::{bail, Result};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    KeyToPath, Namespace, PodSpec, PodTemplateSpec, Probe, Secret, SecretVolumeSource, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role as RbacRole, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use std::collections::BTreeMap;

use super::chaos::TARGET_LABEL;

/// Kubernetes Secrets hold at most 1 MiB of data.
pub const SECRET_LIMIT: usize = 1 << 20;

/// Where the Lodestar containers keep their data (the container's file system in Docker).
const DATA_DIR: &str = "/data";
/// Where a validator client's init container sees its key Secret.
const VC_SECRET_DIR: &str = "/secret";

/// Naming and labelling of one run's objects.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// Namespace.
    pub namespace: &'a str,
    /// Prefix for image references (`registry.example:5000/`), empty for none.
    pub image_prefix: String,
}

impl Scope<'_> {
    /// `dvlab.run=<run>` (+ `dvlab.role`).
    pub fn labels(&self, role: Option<&str>) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([(RUN_LABEL.to_string(), self.plan.run.clone())]);
        if let Some(r) = role {
            l.insert(ROLE_LABEL.to_string(), r.to_string());
        }
        l
    }

    /// Metadata of a namespaced object.
    pub fn meta(&self, name: &str, role: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.to_string()),
            labels: Some(self.labels(role)),
            ..Default::default()
        }
    }

    /// An image reference with the registry prefix.
    pub fn image(&self, image: &str) -> String {
        format!("{}{image}", self.image_prefix)
    }

    /// The short name faults use for a container (`dv0-1` of `dvlab-<run>-dv0-1`).
    pub fn short<'c>(&self, c: &'c ContainerPlan) -> &'c str {
        c.name
            .strip_prefix(&format!("dvlab-{}-", self.plan.run))
            .unwrap_or(&c.name)
    }
}

/// The namespace of the run.
pub fn namespace(s: &Scope) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(s.namespace.to_string()),
            labels: Some(s.labels(None)),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A Secret key for a relative path (`validator_keys/keystore-0.json` →
/// `validator_keys.keystore-0.json`) and the item mounting it back at that path.
fn secret_items(files: &Files) -> (BTreeMap<String, ByteString>, Vec<KeyToPath>) {
    let mut data = BTreeMap::new();
    let mut items = Vec::new();
    for (path, bytes) in files {
        let key = path.replace('/', ".");
        data.insert(key.clone(), ByteString(bytes.clone()));
        items.push(KeyToPath {
            key,
            path: path.clone(),
            mode: None,
        });
    }
    (data, items)
}

/// A Secret holding `files`, and the volume mounting them with their relative paths.
pub fn secret(s: &Scope, name: &str, role: &str, files: &Files) -> Result<(Secret, Volume)> {
    let size: usize = files.values().map(Vec::len).sum();
    if size > SECRET_LIMIT {
        bail!(
            "the key material of {name} is {size} bytes; a Kubernetes Secret holds at most \
             {SECRET_LIMIT}: split the cluster's validators over more clusters"
        );
    }
    let (data, items) = secret_items(files);
    let secret = Secret {
        metadata: s.meta(name, Some(role)),
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    };
    let volume = Volume {
        name: "keys".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.to_string()),
            items: Some(items),
            // Owner read-only: the p2p key and keystore passwords are secrets.
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((secret, volume))
}

/// An `emptyDir` volume.
pub fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// A volume mount.
pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn http_probe(path: &str, port: u16) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port.into()),
            ..Default::default()
        }),
        period_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Ports a container serves (published ports, and a dvnode's libp2p port).
pub fn ports(c: &ContainerPlan) -> Vec<(String, u16)> {
    let name = |p: u16| match p {
        BN_REST_PORT => "rest",
        DVNODE_API_PORT => "validator-api",
        DVNODE_METRICS_PORT => "metrics",
        DVNODE_P2P_PORT => "p2p",
        _ => "port",
    };
    let mut v: Vec<u16> = c.publish.clone();
    if matches!(c.role, Role::DvNode { .. } | Role::Dkg { .. }) {
        v.push(DVNODE_P2P_PORT);
    }
    v.sort_unstable();
    v.dedup();
    v.into_iter()
        .map(|p| (format!("{}-{p}", name(p)), p))
        .collect()
}

/// The headless Service giving container `c` its stable DNS name (`None`: it serves nothing).
/// Not-ready pods are published too: dvnodes dial each other before they are ready.
pub fn service(s: &Scope, c: &ContainerPlan) -> Option<Service> {
    let ports = ports(c);
    if ports.is_empty() {
        return None;
    }
    Some(Service {
        metadata: s.meta(&c.name, Some(c.role.label())),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([
                (RUN_LABEL.to_string(), s.plan.run.clone()),
                (TARGET_LABEL.to_string(), s.short(c).to_string()),
            ])),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, p)| ServicePort {
                        name: Some(name),
                        port: p.into(),
                        target_port: Some(IntOrString::Int(p.into())),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The name of the container processes run in, in the pod of `c` (faults target it).
pub fn container_name(c: &ContainerPlan) -> &'static str {
    c.role.label()
}

/// Name of the Secret holding a container's key material.
pub fn secret_name(c: &ContainerPlan) -> String {
    format!("{}-keys", c.name)
}

/// The StatefulSet running container `c` with the plan's image, arguments and environment.
/// `keys` is the container's key-material volume (dvnodes and DV validator clients).
pub fn stateful_set(s: &Scope, c: &ContainerPlan, keys: Option<Volume>) -> Result<StatefulSet> {
    let short = s.short(c).to_string();
    let mut pod_labels = s.labels(Some(c.role.label()));
    pod_labels.insert(TARGET_LABEL.into(), short.clone());
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut init = Vec::new();
    let mut probe = None;
    match &c.role {
        Role::BeaconNode { .. } | Role::BaselineVc => {
            volumes.push(empty_dir("data"));
            mounts.push(mount("data", DATA_DIR, false));
            if matches!(c.role, Role::BeaconNode { .. }) {
                probe = Some(http_probe("/eth/v1/node/version", BN_REST_PORT));
            }
            if c.mounts.iter().any(|m| m.container == BN_GENESIS_DIR) {
                // `keys: dkg`: the genesis Job's state, unpacked for `--genesisStateFile`
                // (the pod waits until the ConfigMap exists).
                volumes.push(Volume {
                    name: "genesis-gz".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: GENESIS_NAME.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                volumes.push(empty_dir("genesis"));
                mounts.push(mount("genesis", BN_GENESIS_DIR, true));
                init.push(shell_init(
                    s,
                    "unpack-genesis",
                    &c.image,
                    format!(
                        "gzip -dc {GENESIS_GZ_DIR}/{GENESIS_KEY} > {BN_GENESIS_DIR}/{GENESIS_STATE_FILE}"
                    ),
                    vec![
                        mount("genesis-gz", GENESIS_GZ_DIR, true),
                        mount("genesis", BN_GENESIS_DIR, false),
                    ],
                ));
            }
        }
        Role::Prometheus | Role::Dkg { .. } => bail!("{} is not rendered for Kubernetes", c.name),
        Role::DvNode { .. } => {
            volumes.push(empty_dir("out"));
            mounts.push(mount("out", DVNODE_OUT_DIR, false));
            match keys {
                Some(v) => volumes.push(v),
                None => bail!("dvnode {} has no key material", c.name),
            }
            mounts.push(mount("keys", DVNODE_NODE_DIR, true));
            probe = Some(http_probe("/eth/v1/beacon/genesis", DVNODE_API_PORT));
        }
        Role::DvVc { .. } => {
            volumes.push(empty_dir("data"));
            mounts.push(mount("data", DATA_DIR, false));
            // Lodestar writes a lock file beside each keystore it imports: the Secret is
            // copied into a writable directory first. A remote-signer VC has no keys.
            let dvnode = c.name.strip_suffix("-vc").unwrap_or(&c.name);
            if needs_vc_keys(c) {
                match keys {
                    Some(v) => volumes.push(v),
                    None => bail!("validator client {} has no key material", c.name),
                }
                volumes.push(empty_dir("vc-keys"));
                mounts.push(mount("vc-keys", VC_KEYS_DIR, false));
                init.push(shell_init(
                    s,
                    "copy-keys",
                    &c.image,
                    format!("cp -RL {VC_SECRET_DIR}/. {VC_KEYS_DIR}/"),
                    vec![
                        mount("keys", VC_SECRET_DIR, true),
                        mount("vc-keys", VC_KEYS_DIR, false),
                    ],
                ));
            }
            // As in Docker, the validator client starts once its dvnode serves the API.
            init.push(Container {
                name: "wait-for-dvnode".into(),
                image: Some(s.image(&c.image)),
                image_pull_policy: Some("IfNotPresent".into()),
                command: Some(vec![
                    "bash".into(),
                    "-c".into(),
                    format!(
                        "until (exec 3<>/dev/tcp/{dvnode}/{DVNODE_API_PORT}) 2>/dev/null; do sleep 1; done"
                    ),
                ]),
                ..Default::default()
            });
        }
    }
    for m in &c.mounts {
        if !mounts.iter().any(|v| v.mount_path == m.container) {
            bail!(
                "container {} mounts {} at {}, which has no Kubernetes volume",
                c.name,
                m.host,
                m.container
            );
        }
    }
    let container = Container {
        name: container_name(c).into(),
        image: Some(s.image(&c.image)),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(c.cmd.clone()),
        env: env_vars(c),
        ports: Some(
            ports(c)
                .into_iter()
                .map(|(name, p)| ContainerPort {
                    name: Some(name.chars().take(15).collect()),
                    container_port: p.into(),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        )
        .filter(|v: &Vec<_>| !v.is_empty()),
        volume_mounts: Some(mounts),
        readiness_probe: probe,
        ..Default::default()
    };
    let selector = BTreeMap::from([
        (RUN_LABEL.to_string(), s.plan.run.clone()),
        (TARGET_LABEL.to_string(), short),
    ]);
    Ok(StatefulSet {
        metadata: s.meta(&c.name, Some(c.role.label())),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(c.name.clone()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    init_containers: (!init.is_empty()).then_some(init),
                    containers: vec![container],
                    volumes: Some(volumes),
                    // As `docker stop -t 10`.
                    termination_grace_period_seconds: Some(10),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// An init container running `script` with `sh -c` in `image` (registry-prefixed).
pub fn shell_init(
    s: &Scope,
    name: &str,
    image: &str,
    script: String,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: name.into(),
        image: Some(s.image(image)),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["sh".into(), "-c".into(), script]),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// The plan's `KEY=VALUE` environment of `c` (`None` if empty).
pub fn env_vars(c: &ContainerPlan) -> Option<Vec<EnvVar>> {
    let v: Vec<EnvVar> = c
        .env
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            EnvVar {
                name: k.into(),
                value: Some(v.into()),
                ..Default::default()
            }
        })
        .collect();
    (!v.is_empty()).then_some(v)
}

/// A ServiceAccount `name`, a Role `name` with `rules` and the RoleBinding between them
/// (labelled `role`), in the namespace.
pub fn service_account(
    s: &Scope,
    name: &str,
    role: &str,
    rules: Vec<PolicyRule>,
) -> Result<Vec<serde_json::Value>> {
    let meta = || s.meta(name, Some(role));
    Ok(vec![
        serde_json::to_value(k8s_openapi::api::core::v1::ServiceAccount {
            metadata: meta(),
            ..Default::default()
        })?,
        serde_json::to_value(RbacRole {
            metadata: meta(),
            rules: Some(rules),
        })?,
        serde_json::to_value(RoleBinding {
            metadata: meta(),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: name.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: name.into(),
                namespace: Some(s.namespace.to_string()),
                ..Default::default()
            }]),
        })?,
    ])
}

/// Whether validator client `c` imports share keystores (the plan mounts them): not in a
/// remote-signer cluster, whose VCs fetch the keys from their dvnode's Web3Signer API.
pub fn needs_vc_keys(c: &ContainerPlan) -> bool {
    c.mounts.iter().any(|m| m.container == VC_KEYS_DIR)
}

/// The Secrets of a node's key material and the volumes mounting them in the dvnode's and (if
/// it imports keystores) its validator client's pods.
pub fn key_secrets(
    s: &Scope,
    dvnode: &ContainerPlan,
    vc: &ContainerPlan,
    keys: &NodeKeys,
) -> Result<Vec<(String, Secret, Volume)>> {
    let (a, av) = secret(s, &secret_name(dvnode), dvnode.role.label(), &keys.node_dir)?;
    let mut out = vec![(dvnode.name.clone(), a, av)];
    if needs_vc_keys(vc) {
        let (b, bv) = secret(s, &secret_name(vc), vc.role.label(), &keys.vc)?;
        out.push((vc.name.clone(), b, bv));
    }
    Ok(out)
}
