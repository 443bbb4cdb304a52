//! Plan: resolves a validated [`DevnetSpec`] into containers, a network, ports, key material
//! and commands. Pure: the clock is an input, nothing touches Docker.

use crate::spec::{DevnetSpec, KeySource, Signer, DEFAULT_LODESTAR_IMAGE};
use dvnode::clock::SlotClock;
use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Range;

/// Label every Docker object created for a run carries: `dvlab.run=<name>`.
pub const RUN_LABEL: &str = "dvlab.run";
/// Label naming the role of a container.
pub const ROLE_LABEL: &str = "dvlab.role";
/// Beacon-node REST port inside containers.
pub const BN_REST_PORT: u16 = 9596;
/// dvnode validator-API port inside containers.
pub const DVNODE_API_PORT: u16 = 3600;
/// dvnode libp2p port inside containers.
pub const DVNODE_P2P_PORT: u16 = 3610;
/// dvnode `/metrics` and `/health` port inside containers.
pub const DVNODE_METRICS_PORT: u16 = 3620;
/// Where a dvnode container sees its node directory from `dvnode create-cluster` (read-only).
pub const DVNODE_NODE_DIR: &str = "/node";
/// Where a dvnode container writes its data dir and duty log (a writable bind mount).
pub const DVNODE_OUT_DIR: &str = "/out";
/// Duty log file name inside a dvnode's output directory.
pub const DUTY_LOG_FILE: &str = "duty-log.jsonl";
/// Where a DV validator client sees its share keystores (read-only).
pub const VC_KEYS_DIR: &str = "/keys";
/// Run-directory folder of the genesis state dvlab builds when a cluster's keys come from a
/// DKG ceremony ([`GENESIS_STATE_FILE`] in it; public data, part of the run output).
pub const GENESIS_RUN_DIR: &str = "genesis";
/// File name of that genesis state (SSZ, Lodestar's `--genesisStateFile` format).
pub const GENESIS_STATE_FILE: &str = "genesis.ssz";
/// Where beacon nodes see [`GENESIS_RUN_DIR`] (read-only).
pub const BN_GENESIS_DIR: &str = "/genesis";
/// Where a DKG ceremony's setup container sees the run's key directory (`STATE_DIR/keys`).
pub const DKG_KEYS_DIR: &str = "/keys";
/// Image of dvnode containers.
pub const DVNODE_IMAGE: &str = "dvlab/dvnode:latest";
/// Image of the fault sidecars: `dvlab/base` plus the `dvlab-netem` delayer.
pub const NETEM_IMAGE: &str = "dvlab/netem:latest";
/// Image of the run's Prometheus: `dvlab/base` plus Debian's `prometheus` binary.
pub const PROMETHEUS_IMAGE: &str = "dvlab/prometheus:latest";
/// Short name of the Prometheus container (`dvlab-<run>-prometheus`).
pub const PROMETHEUS_NAME: &str = "prometheus";
/// Prometheus HTTP port inside its container (published on 127.0.0.1).
pub const PROMETHEUS_PORT: u16 = 9090;
/// Where the Prometheus container sees its run-directory folder: `prometheus.yml` and `data/`.
pub const PROMETHEUS_DIR: &str = "/prometheus";
/// Run-directory folder of Prometheus: its scrape config and its data directory.
pub const PROMETHEUS_RUN_DIR: &str = "prometheus";
/// File (in [`PROMETHEUS_RUN_DIR`]) listing the active faults as scrape targets of the job
/// `dvlab_faults` ([`prometheus_fault_targets`]): `up{job="dvlab_faults"}` is 1 while a fault
/// is active, for dashboards' fault annotations.
pub const PROMETHEUS_FAULTS_FILE: &str = "faults.json";
/// Lodestar beacon-node metrics port (its default with `--metrics`).
pub const BN_METRICS_PORT: u16 = 8008;
/// Lodestar validator-client metrics port (its default with `--metrics`; also the keepers'
/// validator client inside the first beacon node's container).
pub const VC_METRICS_PORT: u16 = 5064;

/// What a container does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Role {
    /// A beacon node (the first one also runs the keepers).
    BeaconNode {
        /// Spec name (`bn0`).
        name: String,
    },
    /// The baseline validator client.
    BaselineVc,
    /// One dvnode of a cluster.
    DvNode {
        /// Cluster name.
        cluster: String,
        /// Node index.
        node: u64,
    },
    /// The validator client beside one dvnode.
    DvVc {
        /// Cluster name.
        cluster: String,
        /// Node index.
        node: u64,
    },
    /// The run's Prometheus.
    Prometheus,
    /// One operator's `dvnode dkg` during a cluster's key-generation ceremony (before
    /// genesis; removed once the ceremony ends).
    Dkg {
        /// Cluster name.
        cluster: String,
        /// Node index.
        node: u64,
    },
}

impl Role {
    /// Short label value.
    pub fn label(&self) -> &'static str {
        match self {
            Role::BeaconNode { .. } => "beacon-node",
            Role::BaselineVc => "baseline-vc",
            Role::DvNode { .. } => "dvnode",
            Role::DvVc { .. } => "dv-vc",
            Role::Prometheus => "prometheus",
            Role::Dkg { .. } => "dkg",
        }
    }
}

/// One container to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerPlan {
    /// Docker container name, also its DNS name on the run network.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Image reference.
    pub image: String,
    /// Command (entrypoint arguments).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Container TCP ports published on 127.0.0.1 (host port chosen by Docker).
    pub publish: Vec<u16>,
    /// Bind mounts of directories under the run directory.
    pub mounts: Vec<Mount>,
    /// Host number in the run network's static address range (dvnodes, whose peers dial
    /// them by the address recorded in the cluster lock); `None`: Docker assigns one.
    pub static_host: Option<u32>,
    /// Run as the owner of the run directory (containers writing into bind mounts).
    pub run_as_owner: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A bind mount of a directory under the run directory, or under the run's private state
/// directory for key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Host directory, relative to the run directory (the state directory when `secret`).
    pub host: String,
    /// Path inside the container.
    pub container: String,
    /// Writable (and created by the runtime when missing) rather than read-only.
    pub writable: bool,
    /// Key material: under the run's private state directory, never the report directory.
    pub secret: bool,
}

impl Mount {
    fn read_only(host: impl Into<String>, container: &str) -> Mount {
        Mount {
            host: host.into(),
            container: container.into(),
            writable: false,
            secret: false,
        }
    }

    fn writable(host: impl Into<String>, container: &str) -> Mount {
        Mount {
            host: host.into(),
            container: container.into(),
            writable: true,
            secret: false,
        }
    }

    /// The same mount under the private state directory.
    fn secret(self) -> Mount {
        Mount {
            secret: true,
            ..self
        }
    }
}

/// A validator group analysed separately.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupPlan {
    /// `keepers`, `baseline` or a cluster name.
    pub name: String,
    /// Validator indices.
    pub indices: Range<u64>,
    /// Whether the group is a DV cluster.
    pub distributed: bool,
}

/// Key material and containers of a DV cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterPlan {
    /// Cluster name.
    pub name: String,
    /// Nodes.
    pub nodes: u64,
    /// Threshold.
    pub threshold: u64,
    /// Validator indices: interop keys split into shares, or the genesis validators the
    /// cluster's DKG deposits become.
    pub indices: Range<u64>,
    /// Host directory `dvnode create-cluster` writes to (relative to the run directory);
    /// node `i`'s directory is `KEY_DIR/node{i}`, its VC's keystores `KEY_DIR/vc{i}`.
    pub key_dir: String,
    /// The `dvnode create-cluster` arguments (run in the dvnode image with the run
    /// directory's `keys/` mounted at `/keys`); the runtime appends the chain's
    /// `--fork-version`, `--genesis-validators-root` and the nodes' `--p2p-addresses`.
    pub create_cluster_args: Vec<String>,
    /// dvnode container names in node order.
    pub node_containers: Vec<String>,
    /// The key-generation ceremony of a `keys: dkg` cluster (`create_cluster_args` is then
    /// unused).
    pub dkg: Option<DkgPlan>,
    /// Whether its dvnodes sign for the DVs (`signer: remote`): they then perform the
    /// aggregation and sync-contribution duties.
    pub remote_signer: bool,
}

/// The distributed key generation of a `keys: dkg` cluster, run before any beacon node starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DkgPlan {
    /// Shell script run once in the dvnode image (no network, `STATE_DIR/keys` at
    /// [`DKG_KEYS_DIR`]): each operator's `dvnode p2p-key create`, `dvnode definition create`
    /// with their peer ids and the chain's fork version, each operator's `dvnode definition
    /// sign`, and a copy of the signed definition into every node directory.
    pub setup_script: String,
    /// One `dvnode dkg` container per operator on the run network, its node directory mounted
    /// writable at [`DVNODE_NODE_DIR`]; peers dial each other by container name.
    pub ceremony: Vec<ContainerPlan>,
}

/// A fully resolved devnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Run name (value of the [`RUN_LABEL`]).
    pub run: String,
    /// Docker network name.
    pub network: String,
    /// Genesis UNIX time.
    pub genesis_time: u64,
    /// Genesis validator count.
    pub genesis_validators: u64,
    /// Preset name.
    pub preset: String,
    /// Seconds per slot.
    pub seconds_per_slot: u64,
    /// Slots per epoch.
    pub slots_per_epoch: u64,
    /// Altair fork epoch.
    pub altair_fork_epoch: u64,
    /// Epochs to observe after genesis.
    pub epochs: u64,
    /// Containers in start order (beacon nodes first).
    pub containers: Vec<ContainerPlan>,
    /// Validator groups.
    pub groups: Vec<GroupPlan>,
    /// DV clusters.
    pub clusters: Vec<ClusterPlan>,
    /// Assertions (metric → expression).
    pub assertions: BTreeMap<String, String>,
    /// Whether dvlab builds the genesis state (`GENESIS_RUN_DIR/GENESIS_STATE_FILE`, loaded by
    /// every beacon node with `--genesisStateFile`) instead of `lodestar dev` deriving it from
    /// interop keys: when a cluster's keys come from a DKG ceremony.
    pub genesis_state: bool,
}

impl Plan {
    /// Resolves `spec` with genesis at `now + genesis_delay`.
    pub fn new(spec: &DevnetSpec, now: u64) -> Plan {
        let run = spec.name.clone();
        let genesis_time = now + spec.network.genesis_delay;
        let genesis_validators = spec.genesis_validators();
        let preset = spec.network.preset.as_str().to_string();
        let params = [
            "--params.SECONDS_PER_SLOT".to_string(),
            spec.network.seconds_per_slot.to_string(),
            "--params.ALTAIR_FORK_EPOCH".to_string(),
            spec.network.altair_fork_epoch.to_string(),
        ];
        let env = vec![format!("LODESTAR_PRESET={preset}")];
        // Lodestar's metrics servers (BN on 8008; VC, also bn0's keepers VC, on 5064) for
        // the run's Prometheus. `--metrics.port` stays unset: bn0's in-process keepers VC
        // takes the same arguments, and one port for both would collide.
        let metrics: Vec<String> = if spec.prometheus {
            ["--metrics", "--metrics.address", "0.0.0.0"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            Vec::new()
        };
        let cname = |s: &str| format!("dvlab-{run}-{s}");
        let labels = |role: &Role| {
            BTreeMap::from([
                (RUN_LABEL.to_string(), run.clone()),
                (ROLE_LABEL.to_string(), role.label().to_string()),
            ])
        };
        let bn_url = |bn: &str| format!("http://{}:{BN_REST_PORT}", cname(bn));
        let genesis_state = spec.clusters.iter().any(|c| c.keys == KeySource::Dkg);

        let mut groups = Vec::new();
        let mut next = 0u64;
        let mut take = |n: u64| {
            let r = next..next + n;
            next += n;
            r
        };
        let keepers = take(spec.keepers.count);
        groups.push(GroupPlan {
            name: "keepers".into(),
            indices: keepers.clone(),
            distributed: false,
        });
        if let Some(b) = &spec.baseline {
            groups.push(GroupPlan {
                name: "baseline".into(),
                indices: take(b.count),
                distributed: false,
            });
        }
        for c in &spec.clusters {
            groups.push(GroupPlan {
                name: c.name.clone(),
                indices: take(c.validators),
                distributed: true,
            });
        }

        let mut containers = Vec::new();
        for (i, bn) in spec.beacon_nodes.iter().enumerate() {
            let role = Role::BeaconNode {
                name: bn.name.clone(),
            };
            let genesis_args = if genesis_state {
                vec![
                    "--genesisStateFile".to_string(),
                    format!("{BN_GENESIS_DIR}/{GENESIS_STATE_FILE}"),
                ]
            } else {
                vec![
                    "--genesisValidators".to_string(),
                    genesis_validators.to_string(),
                    "--genesisTime".to_string(),
                    genesis_time.to_string(),
                ]
            };
            let mut cmd: Vec<String> = ["dev", "--dataDir", "/data"]
                .iter()
                .map(|s| s.to_string())
                .chain(genesis_args)
                .collect();
            cmd.extend(
                [
                    "--rest.address",
                    "0.0.0.0",
                    "--rest.port",
                    &BN_REST_PORT.to_string(),
                    "--rest.namespace",
                    "*",
                    "--mdns",
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            if i == 0 {
                cmd.push("--startValidators".into());
                cmd.push(format!("{}..{}", keepers.start, keepers.end - 1));
            }
            cmd.extend(params.iter().cloned());
            cmd.extend(metrics.iter().cloned());
            containers.push(ContainerPlan {
                name: cname(&bn.name),
                labels: labels(&role),
                role,
                image: bn
                    .image
                    .clone()
                    .unwrap_or_else(|| DEFAULT_LODESTAR_IMAGE.to_string()),
                cmd,
                env: env.clone(),
                publish: vec![BN_REST_PORT],
                mounts: if genesis_state {
                    vec![Mount::read_only(GENESIS_RUN_DIR, BN_GENESIS_DIR)]
                } else {
                    vec![]
                },
                static_host: None,
                run_as_owner: false,
            });
        }
        let vc_image = DEFAULT_LODESTAR_IMAGE.to_string();
        if let Some(b) = &spec.baseline {
            let idx = &groups[1].indices;
            let mut cmd: Vec<String> = vec![
                "validator".into(),
                "--network".into(),
                "dev".into(),
                "--dataDir".into(),
                "/data".into(),
                "--interopIndexes".into(),
                format!("{}..{}", idx.start, idx.end - 1),
                "--beaconNodes".into(),
                bn_url(&b.beacon_node),
            ];
            cmd.extend(params.iter().cloned());
            cmd.extend(metrics.iter().cloned());
            containers.push(ContainerPlan {
                name: cname("baseline"),
                labels: labels(&Role::BaselineVc),
                role: Role::BaselineVc,
                image: vc_image.clone(),
                cmd,
                env: env.clone(),
                publish: vec![],
                mounts: vec![],
                static_host: None,
                run_as_owner: false,
            });
        }
        let mut clusters = Vec::new();
        let mut static_host = 0u32;
        for c in &spec.clusters {
            let g = groups
                .iter()
                .find(|g| g.name == c.name)
                .expect("group added above");
            let key_dir = format!("keys/{}", c.name);
            let node_containers: Vec<String> = (0..c.nodes)
                .map(|n| cname(&format!("{}-{n}", c.name)))
                .collect();
            clusters.push(ClusterPlan {
                name: c.name.clone(),
                nodes: c.nodes,
                threshold: c.threshold,
                indices: g.indices.clone(),
                key_dir: key_dir.clone(),
                create_cluster_args: vec![
                    "create-cluster".into(),
                    "--name".into(),
                    c.name.clone(),
                    "--interop-indices".into(),
                    format!("{}..{}", g.indices.start, g.indices.end),
                    "--nodes".into(),
                    c.nodes.to_string(),
                    "--threshold".into(),
                    c.threshold.to_string(),
                    "--insecure-keys".into(),
                    "--out".into(),
                    format!("/{key_dir}"),
                ],
                node_containers: node_containers.clone(),
                dkg: (c.keys == KeySource::Dkg).then(|| {
                    dkg_plan(spec, c, &key_dir, &node_containers, &|role: &Role| {
                        labels(role)
                    })
                }),
                remote_signer: c.signer == Signer::Remote,
            });
            // A DKG lock records no addresses: the dvnodes dial each other by name.
            let dkg_peers = (c.keys == KeySource::Dkg).then(|| p2p_peers(&node_containers));
            for (n, node_name) in node_containers.iter().enumerate() {
                // Primary first, then fallbacks: `--beacon-node-url A,B`.
                let bn_urls = c
                    .beacon_nodes_of(n)
                    .into_iter()
                    .map(&bn_url)
                    .collect::<Vec<_>>()
                    .join(",");
                let n = n as u64;
                static_host += 1;
                let role = Role::DvNode {
                    cluster: c.name.clone(),
                    node: n,
                };
                let duty_log = format!("{DVNODE_OUT_DIR}/{DUTY_LOG_FILE}");
                let mut cmd: Vec<String> = [
                    "run",
                    "--node-dir",
                    DVNODE_NODE_DIR,
                    "--beacon-node-url",
                    &bn_urls,
                    "--validator-api-addr",
                    &format!("0.0.0.0:{DVNODE_API_PORT}"),
                    "--p2p-listen",
                    &format!("/ip4/0.0.0.0/tcp/{DVNODE_P2P_PORT}"),
                    "--data-dir",
                    &format!("{DVNODE_OUT_DIR}/data"),
                    "--metrics-addr",
                    &format!("0.0.0.0:{DVNODE_METRICS_PORT}"),
                    "--duty-log",
                    &duty_log,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                if let Some(peers) = &dkg_peers {
                    cmd.extend(["--p2p-peers".into(), peers.clone()]);
                }
                if c.signer == Signer::Remote {
                    // Decrypts the share keystores of its node directory (passwords beside).
                    cmd.extend(["--signer".into(), "remote".into()]);
                }
                containers.push(ContainerPlan {
                    name: node_name.clone(),
                    labels: labels(&role),
                    role,
                    image: DVNODE_IMAGE.into(),
                    cmd,
                    // Plain log lines: `dvlab logs` and run errors show their tail.
                    env: vec!["DVNODE_LOG=info".into(), "NO_COLOR=1".into()],
                    // Published on 127.0.0.1 only: dvlab waits for the validator API before
                    // starting the VC and scrapes the metrics.
                    publish: vec![DVNODE_API_PORT, DVNODE_METRICS_PORT],
                    mounts: vec![
                        Mount::read_only(format!("{key_dir}/node{n}"), DVNODE_NODE_DIR).secret(),
                        Mount::writable(format!("nodes/{node_name}"), DVNODE_OUT_DIR),
                    ],
                    static_host: Some(static_host),
                    run_as_owner: true,
                });
                let role = Role::DvVc {
                    cluster: c.name.clone(),
                    node: n,
                };
                let mut cmd: Vec<String> = vec![
                    "validator".into(),
                    "--network".into(),
                    "dev".into(),
                    "--dataDir".into(),
                    "/data".into(),
                    "--beaconNodes".into(),
                    format!("http://{node_name}:{DVNODE_API_PORT}"),
                ];
                match c.signer {
                    Signer::Middleware => cmd.extend([
                        "--importKeystores".into(),
                        format!("{VC_KEYS_DIR}/keystores"),
                        "--importKeystoresPassword".into(),
                        format!("{VC_KEYS_DIR}/password.txt"),
                    ]),
                    // The DV keys are read once at start from the dvnode's Web3Signer API,
                    // which is up before the VC starts (dvlab waits for the validator API).
                    Signer::Remote => cmd.extend([
                        "--externalSigner.url".into(),
                        format!("http://{node_name}:{DVNODE_API_PORT}"),
                        "--externalSigner.fetch".into(),
                    ]),
                }
                cmd.extend(params.iter().cloned());
                cmd.extend(metrics.iter().cloned());
                containers.push(ContainerPlan {
                    name: format!("{node_name}-vc"),
                    labels: labels(&role),
                    role,
                    image: vc_image.clone(),
                    cmd,
                    env: env.clone(),
                    publish: vec![],
                    // Writable: Lodestar puts a lock file beside each keystore it imports. A
                    // VC of a remote-signer cluster holds no key material at all.
                    mounts: match c.signer {
                        Signer::Middleware => {
                            vec![Mount::writable(format!("{key_dir}/vc{n}"), VC_KEYS_DIR).secret()]
                        }
                        Signer::Remote => vec![],
                    },
                    static_host: None,
                    run_as_owner: false,
                });
            }
        }
        if spec.prometheus {
            let role = Role::Prometheus;
            containers.push(ContainerPlan {
                name: cname(PROMETHEUS_NAME),
                labels: labels(&role),
                role,
                image: PROMETHEUS_IMAGE.into(),
                cmd: vec![
                    format!("--config.file={PROMETHEUS_DIR}/prometheus.yml"),
                    format!("--storage.tsdb.path={PROMETHEUS_DIR}/data"),
                    format!("--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}"),
                ],
                env: vec![],
                publish: vec![PROMETHEUS_PORT],
                // Its data directory is part of the run output (no secrets in it).
                mounts: vec![Mount::writable(PROMETHEUS_RUN_DIR, PROMETHEUS_DIR)],
                static_host: None,
                run_as_owner: true,
            });
        }
        Plan {
            network: format!("dvlab-{run}"),
            run,
            genesis_time,
            genesis_validators,
            preset,
            seconds_per_slot: spec.network.seconds_per_slot,
            slots_per_epoch: spec.network.preset.slots_per_epoch(),
            altair_fork_epoch: spec.network.altair_fork_epoch,
            epochs: spec.duration.epochs,
            containers,
            groups,
            clusters,
            assertions: spec.assertions.clone(),
            genesis_state,
        }
    }

    /// Beacon-node containers, in spec order.
    pub fn beacon_nodes(&self) -> impl Iterator<Item = &ContainerPlan> {
        self.containers
            .iter()
            .filter(|c| matches!(c.role, Role::BeaconNode { .. }))
    }

    /// Last slot of the observed window.
    pub fn last_slot(&self) -> u64 {
        self.epochs * self.slots_per_epoch - 1
    }

    /// UNIX time at which `slot` starts.
    pub fn slot_time(&self, slot: u64) -> u64 {
        self.genesis_time + slot * self.seconds_per_slot
    }

    /// The run's slot clock.
    pub fn slot_clock(&self) -> SlotClock {
        SlotClock::new(
            self.genesis_time,
            self.seconds_per_slot,
            self.slots_per_epoch,
        )
    }

    /// The Prometheus container, if the run has one.
    pub fn prometheus(&self) -> Option<&ContainerPlan> {
        self.containers.iter().find(|c| c.role == Role::Prometheus)
    }

    /// Short name of container `c` (`dvlab-<run>-x` → `x`).
    pub fn short_name<'c>(&self, c: &'c ContainerPlan) -> &'c str {
        c.name
            .strip_prefix(&format!("dvlab-{}-", self.run))
            .unwrap_or(&c.name)
    }

    /// The scrape targets of the run's Prometheus: every dvnode (`job="dvnode"`), beacon node
    /// (`beacon_node`), validator client (`validator_client`, the keepers' one inside the first
    /// beacon node's container) and Prometheus itself, by container DNS name on the run
    /// network. Labels: `node` (the short name faults use), `cluster` and `group` (the
    /// validator group the report analyses).
    pub fn scrape_targets(&self) -> Vec<ScrapeTarget> {
        let mut v = Vec::new();
        let mut add = |job: &str, c: &ContainerPlan, port: u16, labels: &[(&str, &str)]| {
            let mut l = BTreeMap::from([("node".to_string(), self.short_name(c).to_string())]);
            l.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            v.push(ScrapeTarget {
                job: job.into(),
                address: format!("{}:{port}", c.name),
                labels: l,
            });
        };
        for (i, c) in self.beacon_nodes().enumerate() {
            add("beacon_node", c, BN_METRICS_PORT, &[]);
            if i == 0 {
                add(
                    "validator_client",
                    c,
                    VC_METRICS_PORT,
                    &[("group", "keepers")],
                );
            }
        }
        for c in &self.containers {
            match &c.role {
                Role::BaselineVc => add(
                    "validator_client",
                    c,
                    VC_METRICS_PORT,
                    &[("group", "baseline")],
                ),
                Role::DvNode { cluster, .. } => add(
                    "dvnode",
                    c,
                    DVNODE_METRICS_PORT,
                    &[("cluster", cluster), ("group", cluster)],
                ),
                Role::DvVc { cluster, .. } => add(
                    "validator_client",
                    c,
                    VC_METRICS_PORT,
                    &[("cluster", cluster), ("group", cluster)],
                ),
                Role::Prometheus | Role::BeaconNode { .. } | Role::Dkg { .. } => {}
            }
        }
        if self.prometheus().is_some() {
            v.push(ScrapeTarget {
                job: "prometheus".into(),
                address: format!("localhost:{PROMETHEUS_PORT}"),
                labels: BTreeMap::from([("node".into(), PROMETHEUS_NAME.into())]),
            });
        }
        v
    }

    /// The run's `prometheus.yml` (`None` without Prometheus): every [`Self::scrape_targets`]
    /// once per slot (at most every 15 s), the run name as the external label `run`.
    pub fn prometheus_config(&self) -> Option<String> {
        self.prometheus()?;
        let interval = format!("{}s", self.seconds_per_slot.clamp(1, 15));
        let mut jobs: Vec<ScrapeJob> = Vec::new();
        for t in self.scrape_targets() {
            let cfg = StaticConfig {
                targets: vec![t.address],
                labels: t.labels,
            };
            match jobs.iter_mut().find(|j| j.job_name == t.job) {
                Some(j) => j.static_configs.push(cfg),
                None => jobs.push(ScrapeJob {
                    job_name: t.job,
                    static_configs: vec![cfg],
                    file_sd_configs: vec![],
                }),
            }
        }
        jobs.push(ScrapeJob {
            job_name: "dvlab_faults".into(),
            static_configs: vec![],
            file_sd_configs: vec![FileSdConfig {
                files: vec![format!("{PROMETHEUS_DIR}/{PROMETHEUS_FAULTS_FILE}")],
                refresh_interval: interval.clone(),
            }],
        });
        let file = PrometheusConfig {
            global: PrometheusGlobal {
                scrape_interval: interval.clone(),
                scrape_timeout: interval.clone(),
                evaluation_interval: interval,
                external_labels: BTreeMap::from([("run".into(), self.run.clone())]),
            },
            scrape_configs: jobs,
        };
        Some(serde_yaml::to_string(&file).expect("a Prometheus config serializes"))
    }
}

/// `--p2p-peers` of a cluster whose nodes dial each other by container name (DNS on the run
/// network), in node order.
fn p2p_peers(containers: &[String]) -> String {
    containers
        .iter()
        .map(|n| format!("/dns4/{n}/tcp/{DVNODE_P2P_PORT}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The ceremony of `keys: dkg` cluster `c` (its node directories `KEY_DIR/node{i}`): a setup
/// script with the operators' key and definition commands, and one `dvnode dkg` container per
/// operator, named after the dvnode with a `-dkg` suffix.
fn dkg_plan(
    spec: &DevnetSpec,
    c: &crate::spec::ClusterSpec,
    key_dir: &str,
    node_containers: &[String],
    labels: &dyn Fn(&Role) -> BTreeMap<String, String>,
) -> DkgPlan {
    // Relative to the mount of `STATE_DIR/keys`: key_dir is `keys/<cluster>`.
    let dir = format!(
        "{DKG_KEYS_DIR}/{}",
        key_dir.strip_prefix("keys/").unwrap_or(key_dir)
    );
    let definition = format!("{dir}/cluster-definition.json");
    let mut script = String::from("set -eu\nids=\n");
    for n in 0..c.nodes {
        script.push_str(&format!(
            "id=$(dvnode --log warn p2p-key create --node-dir {dir}/node{n})\n\
             ids=\"${{ids:+$ids,}}$id\"\n"
        ));
    }
    script.push_str(&format!(
        "dvnode --log warn definition create --name {} --operators \"$ids\" --threshold {} \
         --validators {} --fork-version {} --out {definition}\n",
        c.name,
        c.threshold,
        c.validators,
        crate::genesis::genesis_fork_version(spec.network.preset),
    ));
    for n in 0..c.nodes {
        script.push_str(&format!(
            "dvnode --log warn definition sign --definition {definition} --node-dir {dir}/node{n}\n"
        ));
    }
    // Each ceremony container sees only its own node directory.
    for n in 0..c.nodes {
        script.push_str(&format!(
            "cp {definition} {dir}/node{n}/cluster-definition.json\n"
        ));
    }
    let ceremony_names: Vec<String> = node_containers.iter().map(|n| format!("{n}-dkg")).collect();
    let peers = p2p_peers(&ceremony_names);
    let ceremony = ceremony_names
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let role = Role::Dkg {
                cluster: c.name.clone(),
                node: n as u64,
            };
            ContainerPlan {
                name: name.clone(),
                labels: labels(&role),
                role,
                image: DVNODE_IMAGE.into(),
                cmd: [
                    "dkg",
                    "--definition",
                    &format!("{DVNODE_NODE_DIR}/cluster-definition.json"),
                    "--node-dir",
                    DVNODE_NODE_DIR,
                    "--p2p-listen",
                    &format!("/ip4/0.0.0.0/tcp/{DVNODE_P2P_PORT}"),
                    "--p2p-peers",
                    &peers,
                    "--connect-timeout",
                    "60",
                    "--round-timeout",
                    "30",
                    "--insecure-keys",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                env: vec!["DVNODE_LOG=info".into(), "NO_COLOR=1".into()],
                publish: vec![],
                mounts: vec![
                    Mount::writable(format!("{key_dir}/node{n}"), DVNODE_NODE_DIR).secret(),
                ],
                static_host: None,
                run_as_owner: true,
            }
        })
        .collect();
    DkgPlan {
        setup_script: script,
        ceremony,
    }
}

/// One scrape target of the run's Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScrapeTarget {
    /// `job` label: `dvnode`, `beacon_node`, `validator_client` or `prometheus`.
    pub job: String,
    /// `host:port` on the run network.
    pub address: String,
    /// Target labels (`node`, and `cluster`/`group` where they apply).
    pub labels: BTreeMap<String, String>,
}

/// `prometheus.yml`: the subset of Prometheus's configuration file dvlab writes.
#[derive(Serialize)]
struct PrometheusConfig {
    global: PrometheusGlobal,
    scrape_configs: Vec<ScrapeJob>,
}

#[derive(Serialize)]
struct PrometheusGlobal {
    scrape_interval: String,
    scrape_timeout: String,
    evaluation_interval: String,
    external_labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ScrapeJob {
    job_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    static_configs: Vec<StaticConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    file_sd_configs: Vec<FileSdConfig>,
}

#[derive(Serialize)]
struct FileSdConfig {
    files: Vec<String>,
    refresh_interval: String,
}

/// A target group of a static config or of a `file_sd` file.
#[derive(Serialize)]
struct StaticConfig {
    targets: Vec<String>,
    labels: BTreeMap<String, String>,
}

/// The [`PROMETHEUS_FAULTS_FILE`] for the faults of `windows` still active (no end): one
/// target group per fault, scraping Prometheus itself, labelled `fault` (id), `kind`,
/// `targets` and `detail`.
pub fn prometheus_fault_targets(windows: &[crate::data::FaultWindow]) -> String {
    let groups: Vec<StaticConfig> = windows
        .iter()
        .filter(|w| w.end_time.is_none())
        .map(|w| StaticConfig {
            targets: vec![format!("localhost:{PROMETHEUS_PORT}")],
            labels: BTreeMap::from([
                ("fault".into(), w.fault.to_string()),
                ("kind".into(), w.kind.clone()),
                ("targets".into(), w.targets.clone()),
                ("detail".into(), w.detail.clone()),
            ]),
        })
        .collect();
    serde_json::to_string_pretty(&groups).expect("target groups serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic() -> DevnetSpec {
        DevnetSpec::parse(include_str!("../../devnets/basic.yaml"), "basic.yaml").unwrap()
    }

    #[test]
    fn validator_layout_is_keepers_baseline_clusters() {
        let plan = Plan::new(&basic(), 1_000);
        let g: Vec<_> = plan
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.indices.clone(), g.distributed))
            .collect();
        assert_eq!(
            g,
            [
                ("keepers", 0..48, false),
                ("baseline", 48..56, false),
                ("dv0", 56..64, true)
            ]
        );
        assert_eq!(plan.genesis_validators, 64);
        assert_eq!(plan.genesis_time, 1_020);
        assert_eq!(plan.last_slot(), 79);
        assert_eq!(plan.slot_time(2), 1_028);
    }

    #[test]
    fn beacon_nodes_share_genesis_and_only_first_runs_keepers() {
        let plan = Plan::new(&basic(), 1_000);
        let bns: Vec<_> = plan.beacon_nodes().collect();
        assert_eq!(bns.len(), 2);
        for bn in &bns {
            let s = bn.cmd.join(" ");
            assert!(s.starts_with("dev "), "{s}");
            assert!(
                s.contains("--genesisValidators 64 --genesisTime 1020"),
                "{s}"
            );
            assert!(s.contains("--rest.address 0.0.0.0"), "{s}");
            assert!(s.contains("--mdns"), "{s}");
            assert!(s.contains("--params.SECONDS_PER_SLOT 4"), "{s}");
            assert_eq!(bn.publish, [BN_REST_PORT]);
            assert_eq!(bn.labels[RUN_LABEL], "basic");
            assert!(bn.env.contains(&"LODESTAR_PRESET=minimal".to_string()));
        }
        assert!(bns[0].cmd.join(" ").contains("--startValidators 0..47"));
        assert!(!bns[1].cmd.join(" ").contains("--startValidators"));
        assert_eq!(bns[0].name, "dvlab-basic-bn0");
        assert_eq!(bns[0].image, "dvlab/lodestar:1.5.1");
        assert_eq!(bns[1].image, DEFAULT_LODESTAR_IMAGE);
    }

    #[test]
    fn baseline_uses_interop_keys_on_its_beacon_node() {
        let plan = Plan::new(&basic(), 0);
        let vc = plan
            .containers
            .iter()
            .find(|c| c.role == Role::BaselineVc)
            .unwrap();
        let s = vc.cmd.join(" ");
        assert!(s.contains("--interopIndexes 48..55"), "{s}");
        assert!(
            s.contains("--beaconNodes http://dvlab-basic-bn1:9596"),
            "{s}"
        );
        assert!(vc.publish.is_empty());
    }

    #[test]
    fn a_remote_signer_cluster_runs_its_vcs_against_the_dvnodes_web3signer_api() {
        let spec = DevnetSpec::parse(
            include_str!("../../devnets/remote-signer.yaml"),
            "remote-signer.yaml",
        )
        .unwrap();
        let plan = Plan::new(&spec, 0);
        let of = |pred: fn(&Role) -> bool| -> Vec<String> {
            plan.containers
                .iter()
                .filter(|c| pred(&c.role))
                .map(|c| c.cmd.join(" "))
                .collect()
        };
        let nodes = of(|r| matches!(r, Role::DvNode { .. }));
        assert_eq!(nodes.len(), 4);
        assert!(
            nodes.iter().all(|c| c.ends_with("--signer remote")),
            "{nodes:?}"
        );
        let vcs = of(|r| matches!(r, Role::DvVc { .. }));
        assert!(
            vcs[2].contains(
                "--beaconNodes http://dvlab-remote-signer-dv0-2:3600 \
                 --externalSigner.url http://dvlab-remote-signer-dv0-2:3600 --externalSigner.fetch"
            ),
            "{}",
            vcs[2]
        );
        assert!(
            vcs.iter().all(|c| !c.contains("importKeystores")),
            "{vcs:?}"
        );
        // No share keystores for the VCs: the dvnodes sign.
        assert!(plan
            .containers
            .iter()
            .filter(|c| matches!(c.role, Role::DvVc { .. }))
            .all(|c| c.mounts.is_empty()));
    }

    #[test]
    fn prometheus_scrapes_every_dvnode_beacon_node_and_validator_client() {
        let plan = Plan::new(&basic(), 0);
        let p = plan.prometheus().expect("Prometheus is on by default");
        assert_eq!(p.name, "dvlab-basic-prometheus");
        assert_eq!(p.image, PROMETHEUS_IMAGE);
        assert_eq!(p.publish, [PROMETHEUS_PORT]);
        assert_eq!(p.mounts, [Mount::writable("prometheus", "/prometheus")]);
        assert!(p.run_as_owner);
        assert!(p
            .cmd
            .contains(&"--storage.tsdb.path=/prometheus/data".to_string()));
        // Every Lodestar process serves metrics on all interfaces of its container, on its
        // default port (bn0 also runs the keepers' VC: one --metrics.port would collide).
        for c in plan
            .containers
            .iter()
            .filter(|c| c.role != Role::Prometheus)
        {
            let cmd = c.cmd.join(" ");
            if c.image == DVNODE_IMAGE {
                assert!(cmd.contains("--metrics-addr 0.0.0.0:3620"), "{cmd}");
            } else {
                assert!(
                    cmd.ends_with("--metrics --metrics.address 0.0.0.0"),
                    "{cmd}"
                );
                assert!(!cmd.contains("--metrics.port"), "{cmd}");
            }
        }
        let targets: Vec<(String, String, String)> = plan
            .scrape_targets()
            .into_iter()
            .map(|t| (t.job, t.address, t.labels["node"].clone()))
            .collect();
        let t = |job: &str, addr: &str, node: &str| (job.into(), addr.into(), node.into());
        let mut want = vec![
            t("beacon_node", "dvlab-basic-bn0:8008", "bn0"),
            t("validator_client", "dvlab-basic-bn0:5064", "bn0"),
            t("beacon_node", "dvlab-basic-bn1:8008", "bn1"),
            t("validator_client", "dvlab-basic-baseline:5064", "baseline"),
        ];
        for n in 0..4 {
            want.push(t(
                "dvnode",
                &format!("dvlab-basic-dv0-{n}:3620"),
                &format!("dv0-{n}"),
            ));
            want.push(t(
                "validator_client",
                &format!("dvlab-basic-dv0-{n}-vc:5064"),
                &format!("dv0-{n}-vc"),
            ));
        }
        want.push(t("prometheus", "localhost:9090", "prometheus"));
        assert_eq!(targets, want);

        // The config file: one job per kind, scraped once per slot, the run as external label.
        let cfg: serde_yaml::Value =
            serde_yaml::from_str(&plan.prometheus_config().unwrap()).unwrap();
        assert_eq!(cfg["global"]["scrape_interval"], "4s");
        assert_eq!(cfg["global"]["scrape_timeout"], "4s");
        assert_eq!(cfg["global"]["external_labels"]["run"], "basic");
        let jobs = cfg["scrape_configs"].as_sequence().unwrap();
        let names: Vec<_> = jobs
            .iter()
            .map(|j| j["job_name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "beacon_node",
                "validator_client",
                "dvnode",
                "prometheus",
                "dvlab_faults"
            ]
        );
        assert_eq!(
            jobs[4]["file_sd_configs"][0]["files"][0],
            "/prometheus/faults.json"
        );
        let vcs = jobs[1]["static_configs"].as_sequence().unwrap();
        assert_eq!(vcs.len(), 6);
        assert_eq!(vcs[0]["labels"]["group"], "keepers");
        assert_eq!(vcs[2]["targets"][0], "dvlab-basic-dv0-0-vc:5064");
        assert_eq!(vcs[2]["labels"]["cluster"], "dv0");
    }

    #[test]
    fn active_faults_become_prometheus_targets() {
        let w = |fault: u64, end: Option<f64>| crate::data::FaultWindow {
            fault,
            kind: "partition".into(),
            targets: "dv0-0,dv0-1".into(),
            detail: "dv0-0,dv0-1 | dv0-2,dv0-3".into(),
            start_time: 100.0,
            start_slot: 16,
            end_time: end,
            end_slot: end.map(|_| 32),
            error: None,
        };
        let groups: serde_json::Value =
            serde_json::from_str(&prometheus_fault_targets(&[w(0, Some(160.0)), w(1, None)]))
                .unwrap();
        assert_eq!(
            groups,
            serde_json::json!([{
                "targets": ["localhost:9090"],
                "labels": {"fault": "1", "kind": "partition", "targets": "dv0-0,dv0-1",
                           "detail": "dv0-0,dv0-1 | dv0-2,dv0-3"}
            }])
        );
        assert_eq!(prometheus_fault_targets(&[]), "[]");
    }

    #[test]
    fn prometheus_false_leaves_prometheus_and_lodestar_metrics_off() {
        let yaml = format!(
            "{}prometheus: false\n",
            include_str!("../../devnets/basic.yaml")
        );
        let plan = Plan::new(&DevnetSpec::parse(&yaml, "basic.yaml").unwrap(), 0);
        assert!(plan.prometheus().is_none());
        assert!(plan.prometheus_config().is_none());
        assert!(plan
            .containers
            .iter()
            .all(|c| !c.cmd.contains(&"--metrics".to_string())));
    }

    #[test]
    fn a_dvnode_with_fallback_beacon_nodes_gets_them_in_order() {
        let text = include_str!("../../devnets/basic.yaml").replace(
            "beacon_nodes: [bn0, bn0, bn1, bn1]",
            "beacon_nodes: [bn0, bn0, bn1, [bn1, bn0]]",
        );
        let plan = Plan::new(&DevnetSpec::parse(&text, "t.yaml").unwrap(), 0);
        let cmd = |name: &str| {
            plan.containers
                .iter()
                .find(|c| c.name == name)
                .unwrap()
                .cmd
                .join(" ")
        };
        assert!(cmd("dvlab-basic-dv0-3").contains(
            "--beacon-node-url http://dvlab-basic-bn1:9596,http://dvlab-basic-bn0:9596 "
        ));
        assert!(cmd("dvlab-basic-dv0-2").contains("--beacon-node-url http://dvlab-basic-bn1:9596 "));
    }

    #[test]
    fn clusters_get_nodes_vcs_and_key_material() {
        let plan = Plan::new(&basic(), 0);
        let c = &plan.clusters[0];
        assert_eq!(
            c.create_cluster_args.join(" "),
            "create-cluster --name dv0 --interop-indices 56..64 --nodes 4 --threshold 3 \
             --insecure-keys --out /keys/dv0"
        );
        assert_eq!(
            c.node_containers,
            [
                "dvlab-basic-dv0-0",
                "dvlab-basic-dv0-1",
                "dvlab-basic-dv0-2",
                "dvlab-basic-dv0-3"
            ]
        );
        let nodes: Vec<_> = plan
            .containers
            .iter()
            .filter(|c| matches!(c.role, Role::DvNode { .. }))
            .collect();
        assert_eq!(nodes.len(), 4);
        assert!(nodes[2]
            .cmd
            .join(" ")
            .contains("--beacon-node-url http://dvlab-basic-bn1:9596 "));
        let n3 = nodes[3];
        assert_eq!(
            n3.mounts,
            [
                Mount::read_only("keys/dv0/node3", "/node").secret(),
                Mount::writable("nodes/dvlab-basic-dv0-3", "/out")
            ]
        );
        let cmd = n3.cmd.join(" ");
        for flag in [
            "run --node-dir /node",
            "--validator-api-addr 0.0.0.0:3600",
            "--p2p-listen /ip4/0.0.0.0/tcp/3610",
            "--data-dir /out/data",
            "--metrics-addr 0.0.0.0:3620",
            "--duty-log /out/duty-log.jsonl",
        ] {
            assert!(cmd.contains(flag), "{cmd}");
        }
        assert!(n3.run_as_owner);
        // Distinct static addresses for the p2p addresses in the lock.
        let hosts: Vec<_> = nodes.iter().map(|n| n.static_host).collect();
        assert_eq!(hosts, [Some(1), Some(2), Some(3), Some(4)]);
        let vcs: Vec<_> = plan
            .containers
            .iter()
            .filter(|c| matches!(c.role, Role::DvVc { .. }))
            .collect();
        assert_eq!(vcs.len(), 4);
        let vc = vcs[1].cmd.join(" ");
        assert!(
            vc.contains("--beaconNodes http://dvlab-basic-dv0-1:3600"),
            "{vc}"
        );
        assert!(
            vc.contains(
                "--importKeystores /keys/keystores --importKeystoresPassword /keys/password.txt"
            ),
            "{vc}"
        );
        assert_eq!(
            vcs[1].mounts,
            [Mount::writable("keys/dv0/vc1", "/keys").secret()]
        );
        assert!(
            !cmd.contains("--signer"),
            "middleware is dvnode's default: {cmd}"
        );
        assert!(!vc.contains("externalSigner"), "{vc}");
        assert!(vcs
            .iter()
            .all(|c| c.static_host.is_none() && c.publish.is_empty()));
        assert!(plan
            .containers
            .iter()
            .all(|c| c.labels[RUN_LABEL] == "basic"));
    }

    #[test]
    fn a_dkg_cluster_runs_its_ceremony_and_the_beacon_nodes_load_dvlabs_genesis() {
        let spec = DevnetSpec::parse(include_str!("../../devnets/dkg.yaml"), "dkg.yaml").unwrap();
        let plan = Plan::new(&spec, 1_000);
        assert!(plan.genesis_state);
        for bn in plan.beacon_nodes() {
            let cmd = bn.cmd.join(" ");
            assert!(
                cmd.contains("--genesisStateFile /genesis/genesis.ssz"),
                "{cmd}"
            );
            assert!(!cmd.contains("--genesisValidators"), "{cmd}");
            assert_eq!(bn.mounts, [Mount::read_only("genesis", "/genesis")]);
        }
        let c = &plan.clusters[0];
        assert_eq!(c.indices, 56..64);
        let dkg = c.dkg.as_ref().expect("a DKG plan");
        let script = &dkg.setup_script;
        assert_eq!(
            script
                .matches("p2p-key create --node-dir /keys/dv0/node")
                .count(),
            4
        );
        assert!(script.contains(
            "definition create --name dv0 --operators \"$ids\" --threshold 3 --validators 8 \
             --fork-version 0x00000001 --out /keys/dv0/cluster-definition.json"
        ));
        assert_eq!(script.matches("definition sign --definition").count(), 4);
        // Every node gets the definition once all operators signed it.
        let last_sign = script.rfind("definition sign").unwrap();
        let first_copy = script.find("cp /keys/dv0/cluster-definition.json").unwrap();
        assert!(last_sign < first_copy, "{script}");
        assert!(script.contains("cp /keys/dv0/cluster-definition.json /keys/dv0/node3/"));
        let peers = "/dns4/dvlab-dkg-dv0-0-dkg/tcp/3610,/dns4/dvlab-dkg-dv0-1-dkg/tcp/3610,\
                     /dns4/dvlab-dkg-dv0-2-dkg/tcp/3610,/dns4/dvlab-dkg-dv0-3-dkg/tcp/3610";
        assert_eq!(dkg.ceremony.len(), 4);
        for (n, node) in dkg.ceremony.iter().enumerate() {
            assert_eq!(node.name, format!("dvlab-dkg-dv0-{n}-dkg"));
            let cmd = node.cmd.join(" ");
            assert!(
                cmd.starts_with("dkg --definition /node/cluster-definition.json --node-dir /node"),
                "{cmd}"
            );
            assert!(cmd.contains(&format!("--p2p-peers {peers}")), "{cmd}");
            assert!(cmd.contains("--insecure-keys"), "{cmd}");
            assert_eq!(
                node.mounts,
                [Mount::writable(format!("keys/dv0/node{n}"), "/node").secret()]
            );
            assert_eq!(node.labels[ROLE_LABEL], "dkg");
        }
        // The ceremony's containers are not the run's: they are gone before genesis.
        assert!(!plan
            .containers
            .iter()
            .any(|c| matches!(c.role, Role::Dkg { .. })));
        // The lock of a DKG records no addresses: the dvnodes dial each other by name.
        let run_peers = peers.replace("-dkg/", "/");
        for node in plan
            .containers
            .iter()
            .filter(|c| matches!(c.role, Role::DvNode { .. }))
        {
            let cmd = node.cmd.join(" ");
            assert!(cmd.contains(&format!("--p2p-peers {run_peers}")), "{cmd}");
        }
        // A devnet without DKG keeps `lodestar dev`'s interop genesis.
        let basic = Plan::new(&basic(), 1_000);
        assert!(!basic.genesis_state && basic.clusters[0].dkg.is_none());
        let cmd = basic.containers[0].cmd.join(" ");
        assert!(
            cmd.contains("--genesisValidators 64 --genesisTime 1020"),
            "{cmd}"
        );
        assert!(!cmd.contains("--p2p-peers"));
    }
}
