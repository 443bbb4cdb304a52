//! `keys: dkg` on Kubernetes: the key-generation ceremony as once-Jobs before genesis, and the
//! genesis state built in the cluster from its deposits.
//!
//! From the plan's [`DkgPlan`] (the Docker backend's setup script and `dvnode dkg` command
//! lines), per `keys: dkg` cluster:
//!
//! 1. Job `dvlab-<run>-dkg-setup-<cluster>` runs the setup script (every operator's
//!    `dvnode p2p-key create`, `dvnode definition create`, every `dvnode definition sign`) in the
//!    dvnode image as an init container into an `emptyDir`; its `publish` container (the dvlab
//!    image, `dvlab k8s publish`) writes each operator's p2p key and the signed definition into
//!    that operator's Secret `<ceremony>-input`. (As in Docker, this one pod makes every
//!    operator's p2p key; no validator key material exists yet.)
//! 2. Per operator, Job `<ceremony>` (the plan's ceremony container name, also its headless
//!    Service for the `/dns4/…` peers): it waits for its input Secret (the kubelet mounts it
//!    once it exists), copies it into a writable `emptyDir`, runs the plan's `dvnode dkg` as an
//!    init container, then `dvlab k8s publish` writes that operator's outputs: its node
//!    directory into the dvnode's Secret `<dvnode>-keys`, its shares re-encrypted for its
//!    validator client into `<dvnode>-vc-keys` (middleware clusters), and the public
//!    `cluster-lock.json` + `deposit-data.json` into the ConfigMap `<ceremony>-public`. No
//!    pod or object but the operator's own ever holds its shares.
//! 3. Job `dvlab-genesis` (`dvlab k8s genesis`) waits for every operator's public ConfigMap,
//!    checks the ceremony as the Docker runtime does ([`genesis::ceremony_deposits`]), builds
//!    the genesis state ([`genesis::state_with_ceremonies`]) and writes it gzip-compressed into
//!    the ConfigMap `dvlab-genesis` (a mainnet-preset state is ~2.7 MB, a ConfigMap holds
//!    1 MiB; the state is mostly zeros). Each beacon node's init container unpacks it for
//!    `--genesisStateFile`.
//!
//! The dvnode and validator-client StatefulSets are applied at once and mount the Secrets the
//! ceremony writes: their pods wait until the Secrets exist. Only the `publish` containers
//! see a service-account token (projected into them alone, not into `dvnode dkg`); the Roles
//! allow creating Secrets/ConfigMaps in the namespace (RBAC cannot restrict `create` by name)
//! and the genesis Job reading the ceremony's public ConfigMaps by name. Nothing can read a
//! Secret through the API.

use super::keys::Files;
use super::objects::{self, empty_dir, mount, Scope};
use crate::genesis;
use crate::plan::{ClusterPlan, ContainerPlan, DkgPlan, Plan, Role, DKG_KEYS_DIR, DVNODE_NODE_DIR};
use anyhow::{anyhow, bail, ensure, Context, Result};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile,
    KeyToPath, ObjectFieldSelector, PodSpec, PodTemplateSpec, ProjectedVolumeSource, Secret,
    SecretVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// ServiceAccount, Role and RoleBinding of the ceremony's `publish` containers.
pub const DKG_NAME: &str = "dvlab-dkg";
/// ServiceAccount, Role, RoleBinding and Job of the genesis step, and the ConfigMap it writes.
pub const GENESIS_NAME: &str = "dvlab-genesis";
/// Key of the gzip-compressed genesis state in the [`GENESIS_NAME`] ConfigMap.
pub const GENESIS_KEY: &str = "genesis.ssz.gz";
/// `dvlab.role` of the setup Job.
pub const SETUP_ROLE: &str = "dkg-setup";
/// `dvlab.role` of the genesis Job.
pub const GENESIS_ROLE: &str = "genesis";
/// Where a ceremony pod mounts its input Secret.
const INPUT_DIR: &str = "/input";
/// Where a `publish` container sees its service-account token (kube's in-cluster config).
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Files of the input Secret (made by the setup Job).
const INPUT_FILES: [&str; 2] = ["p2p-key", "cluster-definition.json"];
/// Public files of a ceremony's outputs (its ConfigMap).
pub const PUBLIC_FILES: [&str; 2] = ["cluster-lock.json", "deposit-data.json"];

/// Name of the setup Job of `cluster`.
pub fn setup_job(plan: &Plan, cluster: &ClusterPlan) -> String {
    format!("dvlab-{}-dkg-setup-{}", plan.run, cluster.name)
}

/// Name of the Secret a ceremony pod gets its p2p key and signed definition from.
pub fn input_secret(ceremony: &ContainerPlan) -> String {
    format!("{}-input", ceremony.name)
}

/// Name of the ConfigMap with a ceremony's public outputs.
pub fn public_config_map(ceremony: &ContainerPlan) -> String {
    format!("{}-public", ceremony.name)
}

/// The files of a dvnode's node directory after `dvnode dkg` that `dvnode run` reads.
pub fn node_files(validators: u64) -> Vec<String> {
    let mut v = vec!["cluster-lock.json".to_string(), "p2p-key".to_string()];
    for j in 0..validators {
        v.push(format!("validator_keys/keystore-{j}.json"));
        v.push(format!("validator_keys/keystore-{j}.txt"));
    }
    v
}

/// The files of a validator client's keys ([`crate::runtime::reencrypt_keystores`]).
pub fn vc_files(validators: u64) -> Vec<String> {
    let mut v = vec!["password.txt".to_string()];
    v.extend((0..validators).map(|j| format!("keystores/keystore-{j}.json")));
    v
}

fn validators(c: &ClusterPlan) -> u64 {
    c.indices.end - c.indices.start
}

/// One once-Job of a rendered devnet, for `dvlab run` to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnceJob {
    /// Job name.
    pub name: String,
    /// Value of its pods' `dvlab.target` label.
    pub target: String,
    /// What it is, for messages (`cluster dv0 node 2`, `genesis`).
    pub what: String,
    /// The container whose log tells what happened.
    pub container: &'static str,
}

/// The once-Jobs of `plan` in the order they run: per `keys: dkg` cluster its setup and its
/// operators' ceremonies, then the genesis step. Empty without DKG.
pub fn once_jobs(s: &Scope) -> Vec<OnceJob> {
    let mut v = Vec::new();
    for c in &s.plan.clusters {
        let Some(dkg) = &c.dkg else { continue };
        let name = setup_job(s.plan, c);
        v.push(OnceJob {
            target: name.clone(),
            name,
            what: format!("cluster {} setup", c.name),
            container: "setup",
        });
        for (n, cer) in dkg.ceremony.iter().enumerate() {
            v.push(OnceJob {
                name: cer.name.clone(),
                target: s.short(cer).to_string(),
                what: format!("cluster {} node {n}", c.name),
                container: "dkg",
            });
        }
    }
    if s.plan.genesis_state {
        v.push(OnceJob {
            name: GENESIS_NAME.into(),
            target: GENESIS_NAME.into(),
            what: "genesis".into(),
            container: "genesis",
        });
    }
    v
}

/// A volume mounting `files` (relative paths) of Secret `secret` (keys: `/` → `.`), owner
/// read-only. The pod waits until the Secret exists.
pub fn secret_volume(volume: &str, secret: &str, files: &[String]) -> Volume {
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(
                files
                    .iter()
                    .map(|p| KeyToPath {
                        key: p.replace('/', "."),
                        path: p.clone(),
                        mode: None,
                    })
                    .collect(),
            ),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The service-account token, CA and namespace as the kubelet would mount them, for the one
/// container that talks to the API (`automountServiceAccountToken` is off in the pod).
fn token_volume() -> Volume {
    Volume {
        name: "api-token".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3600),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Default::default()
    }
}

fn strings<const N: usize>(a: [&str; N]) -> Vec<String> {
    a.map(String::from).to_vec()
}

/// A once-Job: one attempt, never restarted (a ceremony cannot be re-run by one operator).
fn once_job(s: &Scope, name: &str, role: &str, target: &str, account: &str, pod: PodSpec) -> Job {
    let mut labels = s.labels(Some(role));
    labels.insert(super::chaos::TARGET_LABEL.into(), target.into());
    Job {
        metadata: s.meta(name, Some(role)),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(account.into()),
                    restart_policy: Some("Never".into()),
                    enable_service_links: Some(false),
                    ..pod
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `publish` container: `dvlab k8s publish` with `args` after the namespace and run.
fn publish_container(
    s: &Scope,
    role: &str,
    args: Vec<String>,
    mounts: Vec<VolumeMount>,
) -> Container {
    let mut a = strings(["k8s", "publish", "--namespace"]);
    a.extend([s.namespace.to_string(), "--run".into(), s.plan.run.clone()]);
    a.extend(["--role".into(), role.into()]);
    a.extend(args);
    let mut mounts = mounts;
    mounts.push(mount("api-token", TOKEN_DIR, true));
    Container {
        name: "publish".into(),
        image: Some(s.image(super::DVLAB_IMAGE)),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(a),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

fn rule(resources: &[&str], verbs: &[&str], names: Option<Vec<String>>) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|r| r.to_string()).collect(),
        resource_names: names,
        ..Default::default()
    }
}

/// What the render of a devnet with `keys: dkg` clusters adds.
pub struct DkgObjects {
    /// The objects of `15-dkg.yaml`: RBAC, the once-Jobs and the ceremony pods' Services.
    pub objects: Vec<serde_json::Value>,
    /// Key volumes of the DKG clusters' dvnodes and validator clients, by container name
    /// (mounting the Secrets the ceremony writes).
    pub volumes: BTreeMap<String, Volume>,
}

/// The ceremony and genesis objects of `s.plan` (nothing without `keys: dkg`).
pub fn render(s: &Scope) -> Result<DkgObjects> {
    let plan = s.plan;
    let mut objects = Vec::new();
    let mut volumes = BTreeMap::new();
    let mut public = Vec::new();
    let mut clusters = Vec::new();
    let any = plan.clusters.iter().any(|c| c.dkg.is_some());
    if any {
        objects.extend(objects::service_account(
            s,
            DKG_NAME,
            "dkg",
            vec![rule(&["secrets", "configmaps"], &["create"], None)],
        )?);
    }
    for c in &plan.clusters {
        let Some(dkg) = &c.dkg else { continue };
        objects.push(serde_json::to_value(setup(s, c, dkg))?);
        for (n, cer) in dkg.ceremony.iter().enumerate() {
            if let Some(svc) = objects::service(s, cer) {
                objects.push(serde_json::to_value(svc)?);
            }
            let dvnode = &c.node_containers[n];
            let vc = plan
                .containers
                .iter()
                .find(|x| matches!(&x.role, Role::DvVc { cluster, node } if *cluster == c.name && *node == n as u64))
                .ok_or_else(|| anyhow!("cluster {} node {n} has no validator client", c.name))?;
            let vc_secret = objects::needs_vc_keys(vc).then(|| objects::secret_name(vc));
            objects.push(serde_json::to_value(ceremony(
                s,
                cer,
                &format!("{dvnode}-keys"),
                vc_secret.as_deref(),
            ))?);
            volumes.insert(
                dvnode.clone(),
                secret_volume(
                    "keys",
                    &format!("{dvnode}-keys"),
                    &node_files(validators(c)),
                ),
            );
            if let Some(v) = vc_secret {
                volumes.insert(
                    vc.name.clone(),
                    secret_volume("keys", &v, &vc_files(validators(c))),
                );
            }
            public.push(public_config_map(cer));
        }
        clusters.push(CeremonyOutputs {
            cluster: c.name.clone(),
            indices: c.indices.clone(),
            config_maps: dkg.ceremony.iter().map(public_config_map).collect(),
        });
    }
    if plan.genesis_state {
        let mut names = public.clone();
        names.push(GENESIS_NAME.into());
        objects.extend(objects::service_account(
            s,
            GENESIS_NAME,
            GENESIS_ROLE,
            vec![
                rule(&["configmaps"], &["get"], Some(names)),
                rule(&["configmaps"], &["create"], None),
            ],
        )?);
        let mut args = strings(["k8s", "genesis", "--namespace"]);
        args.extend([
            s.namespace.to_string(),
            "--run".into(),
            plan.run.clone(),
            "--preset".into(),
            plan.preset.clone(),
            "--genesis-time".into(),
            plan.genesis_time.to_string(),
            "--genesis-validators".into(),
            plan.genesis_validators.to_string(),
        ]);
        for c in &clusters {
            args.extend(["--cluster".into(), c.to_string()]);
        }
        let pod = PodSpec {
            containers: vec![Container {
                name: "genesis".into(),
                image: Some(s.image(super::DVLAB_IMAGE)),
                image_pull_policy: Some("IfNotPresent".into()),
                args: Some(args),
                ..Default::default()
            }],
            ..Default::default()
        };
        objects.push(serde_json::to_value(once_job(
            s,
            GENESIS_NAME,
            GENESIS_ROLE,
            GENESIS_NAME,
            GENESIS_NAME,
            pod,
        ))?);
    }
    Ok(DkgObjects { objects, volumes })
}

/// The setup Job of cluster `c`.
fn setup(s: &Scope, c: &ClusterPlan, dkg: &DkgPlan) -> Job {
    let name = setup_job(s.plan, c);
    let dir = format!(
        "{DKG_KEYS_DIR}/{}",
        c.key_dir.strip_prefix("keys/").unwrap_or(&c.key_dir)
    );
    let mut args = Vec::new();
    for (n, cer) in dkg.ceremony.iter().enumerate() {
        args.extend([
            "--secret".into(),
            format!("{}={dir}/node{n}", input_secret(cer)),
        ]);
    }
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        init_containers: Some(vec![Container {
            name: "setup".into(),
            image: Some(s.image(crate::plan::DVNODE_IMAGE)),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                dkg.setup_script.clone(),
            ]),
            volume_mounts: Some(vec![mount("keys", DKG_KEYS_DIR, false)]),
            ..Default::default()
        }]),
        containers: vec![publish_container(
            s,
            SETUP_ROLE,
            args,
            vec![mount("keys", DKG_KEYS_DIR, true)],
        )],
        volumes: Some(vec![empty_dir("keys"), token_volume()]),
        ..Default::default()
    };
    once_job(s, &name, SETUP_ROLE, &name, DKG_NAME, pod)
}

/// The Job of one operator's ceremony `cer`, publishing its node directory into Secret
/// `node_secret` and (middleware clusters) its validator client's keys into `vc_secret`.
fn ceremony(s: &Scope, cer: &ContainerPlan, node_secret: &str, vc_secret: Option<&str>) -> Job {
    let mut args = vec![
        "--secret".into(),
        format!("{node_secret}={DVNODE_NODE_DIR}"),
    ];
    if let Some(v) = vc_secret {
        args.extend([
            "--vc-secret".into(),
            format!("{v}={DVNODE_NODE_DIR}/validator_keys"),
        ]);
    }
    args.extend([
        "--config-map".into(),
        format!(
            "{}={}",
            public_config_map(cer),
            PUBLIC_FILES
                .map(|f| format!("{DVNODE_NODE_DIR}/{f}"))
                .join(",")
        ),
    ]);
    let pod = PodSpec {
        automount_service_account_token: Some(false),
        init_containers: Some(vec![
            objects::shell_init(
                s,
                "copy-input",
                &cer.image,
                format!(
                    "cp {} {DVNODE_NODE_DIR}/",
                    INPUT_FILES.map(|f| format!("{INPUT_DIR}/{f}")).join(" ")
                ),
                vec![
                    mount("input", INPUT_DIR, true),
                    mount("node", DVNODE_NODE_DIR, false),
                ],
            ),
            Container {
                name: "dkg".into(),
                image: Some(s.image(&cer.image)),
                image_pull_policy: Some("IfNotPresent".into()),
                args: Some(cer.cmd.clone()),
                env: objects::env_vars(cer),
                volume_mounts: Some(vec![mount("node", DVNODE_NODE_DIR, false)]),
                ..Default::default()
            },
        ]),
        containers: vec![publish_container(
            s,
            "dkg",
            args,
            vec![mount("node", DVNODE_NODE_DIR, true)],
        )],
        volumes: Some(vec![
            secret_volume("input", &input_secret(cer), &strings(INPUT_FILES)),
            empty_dir("node"),
            token_volume(),
        ]),
        ..Default::default()
    };
    once_job(s, &cer.name, "dkg", s.short(cer), DKG_NAME, pod)
}

/// A ceremony's public outputs for the genesis step: `CLUSTER=START..END=CM,CM,…` (the
/// cluster's genesis indices and its operators' ConfigMaps in node order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyOutputs {
    /// Cluster name.
    pub cluster: String,
    /// Genesis validator indices of its deposits.
    pub indices: Range<u64>,
    /// Its operators' public ConfigMaps, in node order.
    pub config_maps: Vec<String>,
}

impl std::fmt::Display for CeremonyOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={}..{}={}",
            self.cluster,
            self.indices.start,
            self.indices.end,
            self.config_maps.join(",")
        )
    }
}

impl FromStr for CeremonyOutputs {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || anyhow!("`{s}`: expected CLUSTER=START..END=CONFIGMAP,CONFIGMAP,…");
        let mut parts = s.splitn(3, '=');
        let (Some(cluster), Some(range), Some(cms)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let (a, b) = range.split_once("..").ok_or_else(bad)?;
        let indices = a.parse().map_err(|_| bad())?..b.parse().map_err(|_| bad())?;
        let config_maps: Vec<String> = cms.split(',').map(String::from).collect();
        ensure!(
            !cluster.is_empty()
                && indices.start < indices.end
                && config_maps.iter().all(|c| !c.is_empty()),
            bad()
        );
        Ok(CeremonyOutputs {
            cluster: cluster.into(),
            indices,
            config_maps,
        })
    }
}

/// `NAME=VALUE` of a command-line option.
pub fn name_value(s: &str) -> Result<(String, String)> {
    let (a, b) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("`{s}`: expected NAME=VALUE"))?;
    ensure!(!a.is_empty() && !b.is_empty(), "`{s}`: expected NAME=VALUE");
    Ok((a.into(), b.into()))
}

/// What `dvlab k8s publish` writes.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// Namespace.
    pub namespace: String,
    /// Run name (`dvlab.run` of every object).
    pub run: String,
    /// `dvlab.role` of every object.
    pub role: String,
    /// Secrets: name, and the directory whose every file it holds.
    pub secrets: Vec<(String, PathBuf)>,
    /// Validator-client Secrets: name, and the directory of share keystores (each with its
    /// password beside it) it holds re-encrypted under one password.
    pub vc_secrets: Vec<(String, PathBuf)>,
    /// ConfigMaps of public files: name, and the files (by file name).
    pub config_maps: Vec<(String, Vec<PathBuf>)>,
}

fn secret_data(files: &Files) -> BTreeMap<String, ByteString> {
    files
        .iter()
        .map(|(p, b)| (p.replace('/', "."), ByteString(b.clone())))
        .collect()
}

/// Creates the Secrets and ConfigMaps of `p` (an object that exists already is an error: a
/// ceremony's outputs are written once). Returns the names written.
pub async fn publish(client: &kube::Client, p: &Publish) -> Result<Vec<String>> {
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: Some(p.namespace.clone()),
        labels: Some(BTreeMap::from([
            (crate::plan::RUN_LABEL.to_string(), p.run.clone()),
            (crate::plan::ROLE_LABEL.to_string(), p.role.clone()),
        ])),
        ..Default::default()
    };
    let mut secrets = Vec::new();
    for (name, dir) in &p.secrets {
        secrets.push((name, super::keys::read_tree(dir)?));
    }
    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    for (k, (name, dir)) in p.vc_secrets.iter().enumerate() {
        let out = tmp.path().join(k.to_string());
        let n = crate::runtime::reencrypt_keystores(dir, &out)
            .with_context(|| format!("re-encrypting the keystores of {}", dir.display()))?;
        ensure!(n > 0, "no share keystores in {}", dir.display());
        secrets.push((name, super::keys::read_tree(&out)?));
    }
    let mut config_maps = Vec::new();
    for (name, files) in &p.config_maps {
        let mut data = BTreeMap::new();
        for f in files {
            let file = f
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow!("{} has no file name", f.display()))?;
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            data.insert(file.to_string(), text);
        }
        config_maps.push(ConfigMap {
            metadata: meta(name),
            data: Some(data),
            ..Default::default()
        });
    }
    let pp = PostParams::default();
    let mut written = Vec::new();
    let api: Api<Secret> = Api::namespaced(client.clone(), &p.namespace);
    for (name, files) in secrets {
        let size: usize = files.values().map(Vec::len).sum();
        ensure!(
            size <= objects::SECRET_LIMIT,
            "the files for Secret {name} are {size} bytes; a Secret holds at most {}",
            objects::SECRET_LIMIT
        );
        let secret = Secret {
            metadata: meta(name),
            type_: Some("Opaque".into()),
            data: Some(secret_data(&files)),
            ..Default::default()
        };
        api.create(&pp, &secret)
            .await
            .with_context(|| format!("creating Secret {name} in {}", p.namespace))?;
        written.push(format!("Secret {name} ({} files)", files.len()));
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &p.namespace);
    for cm in config_maps {
        let name = cm.metadata.name.clone().unwrap_or_default();
        api.create(&pp, &cm)
            .await
            .with_context(|| format!("creating ConfigMap {name} in {}", p.namespace))?;
        written.push(format!("ConfigMap {name}"));
    }
    Ok(written)
}

/// What `dvlab k8s genesis` builds.
#[derive(Debug, Clone)]
pub struct GenesisJob {
    /// Namespace.
    pub namespace: String,
    /// Run name.
    pub run: String,
    /// Preset name.
    pub preset: String,
    /// Genesis UNIX time.
    pub genesis_time: u64,
    /// Genesis validator count.
    pub genesis_validators: u64,
    /// The ceremonies whose deposits replace interop keys.
    pub clusters: Vec<CeremonyOutputs>,
    /// How often to look for the ceremonies' outputs.
    pub poll: Duration,
}

/// Waits for every ceremony's public outputs (until genesis is [`MIN_START`] s away), checks
/// them, builds the genesis state and writes it (gzip) into the ConfigMap `dvlab-genesis`.
/// Returns the state's size in bytes.
///
/// [`MIN_START`]: crate::runtime::MIN_START_BEFORE_GENESIS
pub async fn genesis(client: &kube::Client, g: &GenesisJob) -> Result<usize> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &g.namespace);
    let deadline = g.genesis_time as i64 - crate::runtime::MIN_START_BEFORE_GENESIS;
    let mut outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    loop {
        for c in &g.clusters {
            for cm in &c.config_maps {
                if outputs.contains_key(cm) {
                    continue;
                }
                if let Some(found) = api
                    .get_opt(cm)
                    .await
                    .with_context(|| format!("reading ConfigMap {cm}"))?
                {
                    outputs.insert(cm.clone(), found.data.unwrap_or_default());
                }
            }
        }
        let missing: Vec<String> = g
            .clusters
            .iter()
            .flat_map(|c| {
                c.config_maps
                    .iter()
                    .enumerate()
                    .filter(|(_, cm)| !outputs.contains_key(*cm))
                    .map(move |(n, cm)| format!("cluster {} node {n} (ConfigMap {cm})", c.cluster))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        if dvnode::clock::unix_now().as_secs() as i64 >= deadline {
            bail!(
                "no ceremony outputs by genesis - {} s from: {} (see the logs of their Jobs)",
                crate::runtime::MIN_START_BEFORE_GENESIS,
                missing.join(", ")
            );
        }
        tokio::time::sleep(g.poll).await;
    }
    let mut dkg = Vec::new();
    for c in &g.clusters {
        let file = |n: usize, f: &str| -> Result<&String> {
            let cm = &c.config_maps[n];
            outputs[cm]
                .get(f)
                .ok_or_else(|| anyhow!("cluster {} node {n}: ConfigMap {cm} has no {f}", c.cluster))
        };
        let locks = (0..c.config_maps.len())
            .map(|n| {
                dvnode::cluster::lock::ClusterLock::parse(file(n, PUBLIC_FILES[0])?)
                    .with_context(|| format!("cluster {} node {n}'s cluster-lock.json", c.cluster))
            })
            .collect::<Result<Vec<_>>>()?;
        let deposits = genesis::ceremony_deposits(
            &c.cluster,
            c.indices.end - c.indices.start,
            &locks,
            file(0, PUBLIC_FILES[1])?,
        )?;
        dkg.push((c.indices.clone(), deposits));
    }
    let ssz =
        genesis::state_with_ceremonies(&g.preset, g.genesis_time, g.genesis_validators, &dkg)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&ssz)?;
    let gz = gz.finish()?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(GENESIS_NAME.into()),
            namespace: Some(g.namespace.clone()),
            labels: Some(BTreeMap::from([
                (crate::plan::RUN_LABEL.to_string(), g.run.clone()),
                (
                    crate::plan::ROLE_LABEL.to_string(),
                    GENESIS_ROLE.to_string(),
                ),
            ])),
            ..Default::default()
        },
        binary_data: Some(BTreeMap::from([(GENESIS_KEY.to_string(), ByteString(gz))])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm)
        .await
        .with_context(|| format!("creating ConfigMap {GENESIS_NAME} in {}", g.namespace))?;
    let left = g.genesis_time as i64 - dvnode::clock::unix_now().as_secs() as i64;
    ensure!(
        left >= crate::runtime::MIN_START_BEFORE_GENESIS,
        "genesis is {left} s away once the genesis state is written: too little for the beacon \
         nodes to start; raise network.genesis_delay (or --genesis-delay)"
    );
    Ok(ssz.len())
}

/// The genesis state of a ConfigMap written by [`genesis`] (un-gzipped).
pub fn genesis_state(cm: &ConfigMap) -> Result<Vec<u8>> {
    let gz = cm
        .binary_data
        .as_ref()
        .and_then(|d| d.get(GENESIS_KEY))
        .ok_or_else(|| anyhow!("ConfigMap {GENESIS_NAME} has no {GENESIS_KEY}"))?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz.0[..]), &mut out)
        .context("un-gzipping the genesis state")?;
    Ok(out)
}

/// Where a beacon node's init container sees the `dvlab-genesis` ConfigMap.
pub const GENESIS_GZ_DIR: &str = "/genesis-gz";

/// State of a once-Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Not yet complete (or not yet created).
    Running,
    /// Completed.
    Succeeded,
    /// Failed (one attempt: never retried).
    Failed,
}

fn job_state(j: Option<&Job>) -> JobState {
    let Some(st) = j.and_then(|j| j.status.as_ref()) else {
        return JobState::Running;
    };
    let failed_condition = st
        .conditions
        .iter()
        .flatten()
        .any(|c| (c.type_ == "Failed" || c.type_ == "FailureTarget") && c.status == "True");
    if st.succeeded.unwrap_or(0) >= 1 {
        JobState::Succeeded
    } else if st.failed.unwrap_or(0) >= 1 || failed_condition {
        JobState::Failed
    } else {
        JobState::Running
    }
}

/// How long `dvlab run` lets the other once-Jobs end after one failed (a ceremony aborts on
/// every node within a round timeout), so that each operator's last lines say why.
pub const FAILURE_GRACE: Duration = Duration::from_secs(35);

/// Waits until every once-Job of `jobs` succeeded. A failed Job (or genesis only
/// [`MIN_START`] s away) fails with every unfinished or failed Job named with its state, the
/// exit code of its failed container and that container's last log lines.
///
/// [`MIN_START`]: crate::runtime::MIN_START_BEFORE_GENESIS
pub async fn wait_once_jobs(
    client: &kube::Client,
    namespace: &str,
    run: &str,
    jobs: &[OnceJob],
    genesis_time: u64,
    poll: Duration,
) -> Result<()> {
    let api: Api<Job> = Api::namespaced(client.clone(), namespace);
    let deadline = genesis_time as i64 - crate::runtime::MIN_START_BEFORE_GENESIS;
    let mut first_failure: Option<std::time::Instant> = None;
    loop {
        let mut states = Vec::new();
        for j in jobs {
            let found = api
                .get_opt(&j.name)
                .await
                .with_context(|| format!("reading Job {}", j.name))?;
            states.push(job_state(found.as_ref()));
        }
        if states.iter().all(|s| *s == JobState::Succeeded) {
            return Ok(());
        }
        let failed = states.contains(&JobState::Failed);
        if failed && first_failure.is_none() {
            first_failure = Some(std::time::Instant::now());
        }
        // After a ceremony node failed, the others still running get the grace to fail
        // too (their own errors name the operator at fault); any other failure is final.
        let ceremony = |want: JobState| {
            jobs.iter()
                .zip(&states)
                .any(|(j, s)| j.container == "dkg" && *s == want)
        };
        let wait_for_others = ceremony(JobState::Failed) && ceremony(JobState::Running);
        let late = dvnode::clock::unix_now().as_secs() as i64 >= deadline;
        let grace_over = first_failure.is_some_and(|t| t.elapsed() >= FAILURE_GRACE);
        if late || (failed && (!wait_for_others || grace_over)) {
            let mut lines = Vec::new();
            for (j, st) in jobs.iter().zip(&states) {
                if *st == JobState::Succeeded {
                    lines.push(format!("{} (Job {}): succeeded", j.what, j.name));
                    continue;
                }
                lines.push(job_report(client, namespace, run, j, *st).await);
            }
            let why = if failed {
                "the DKG ceremony or the genesis step failed".to_string()
            } else {
                format!(
                    "the DKG ceremony and the genesis step are not done {} s before genesis",
                    crate::runtime::MIN_START_BEFORE_GENESIS
                )
            };
            bail!("{why} (namespace {namespace}):\n{}", lines.join("\n"));
        }
        tokio::time::sleep(poll).await;
    }
}

/// One Job's line of a failure: its state, its failed container (or its main one) with the
/// exit code and the last log lines.
async fn job_report(
    client: &kube::Client,
    namespace: &str,
    run: &str,
    j: &OnceJob,
    st: JobState,
) -> String {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{},{}={}",
        super::run_selector(run),
        super::chaos::TARGET_LABEL,
        j.target
    );
    let state = match st {
        JobState::Failed => "failed",
        _ => "not done",
    };
    let list = match pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
    {
        Ok(l) => l,
        Err(e) => return format!("{} (Job {}): {state}; listing its pod: {e}", j.what, j.name),
    };
    let Some(pod) = list.items.first() else {
        return format!("{} (Job {}): {state}; no pod", j.what, j.name);
    };
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let statuses: Vec<_> = pod
        .status
        .iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .collect();
    let failed = statuses.iter().find_map(|s| {
        let t = s.state.as_ref()?.terminated.as_ref()?;
        (t.exit_code != 0).then(|| (s.name.clone(), t.exit_code))
    });
    let (container, code) = match &failed {
        Some((c, code)) => (c.clone(), format!(", container {c} exit code {code}")),
        None => (j.container.to_string(), String::new()),
    };
    let logs = pods
        .logs(
            &pod_name,
            &kube::api::LogParams {
                container: Some(container.clone()),
                tail_lines: Some(8),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| format!("(no log of {container}: {e})"));
    let logs: Vec<&str> = logs.lines().collect();
    format!(
        "{} (Job {}, pod {pod_name}): {state}{code}; last lines of {container}:\n    {}",
        j.what,
        j.name,
        logs.join("\n    ")
    )
}

/// Writes the genesis state of the run's `dvlab-genesis` ConfigMap into
/// `OUT/genesis/genesis.ssz`, where the Docker backend puts it.
pub async fn save_genesis_state(
    client: &kube::Client,
    namespace: &str,
    out: &std::path::Path,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api
        .get(GENESIS_NAME)
        .await
        .with_context(|| format!("reading ConfigMap {GENESIS_NAME}"))?;
    let dir = out.join(crate::plan::GENESIS_RUN_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(crate::plan::GENESIS_STATE_FILE);
    std::fs::write(&file, genesis_state(&cm)?)
        .with_context(|| format!("writing {}", file.display()))
}
