//! Plan: resolves a validated [`DevnetSpec`] into containers, a network, ports, key material
//! and commands. Pure: the clock is an input, nothing touches Docker.

use crate::spec::{DevnetSpec, Signer, DEFAULT_LODESTAR_IMAGE};
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
/// Image of dvnode containers.
pub const DVNODE_IMAGE: &str = "dvlab/dvnode:latest";
/// Image of the fault sidecars: `dvlab/base` plus the `dvlab-netem` delayer.
pub const NETEM_IMAGE: &str = "dvlab/netem:latest";

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
}

impl Role {
    /// Short label value.
    pub fn label(&self) -> &'static str {
        match self {
            Role::BeaconNode { .. } => "beacon-node",
            Role::BaselineVc => "baseline-vc",
            Role::DvNode { .. } => "dvnode",
            Role::DvVc { .. } => "dv-vc",
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
    /// Interop validator indices split into shares.
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
        let cname = |s: &str| format!("dvlab-{run}-{s}");
        let labels = |role: &Role| {
            BTreeMap::from([
                (RUN_LABEL.to_string(), run.clone()),
                (ROLE_LABEL.to_string(), role.label().to_string()),
            ])
        };
        let bn_url = |bn: &str| format!("http://{}:{BN_REST_PORT}", cname(bn));

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
            let mut cmd: Vec<String> = [
                "dev",
                "--dataDir",
                "/data",
                "--genesisValidators",
                &genesis_validators.to_string(),
                "--genesisTime",
                &genesis_time.to_string(),
                "--rest.address",
                "0.0.0.0",
                "--rest.port",
                &BN_REST_PORT.to_string(),
                "--rest.namespace",
                "*",
                "--mdns",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if i == 0 {
                cmd.push("--startValidators".into());
                cmd.push(format!("{}..{}", keepers.start, keepers.end - 1));
            }
            cmd.extend(params.iter().cloned());
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
                mounts: vec![],
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
            });
            for (n, (bn, node_name)) in c.beacon_nodes.iter().zip(&node_containers).enumerate() {
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
                    &bn_url(bn),
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
                containers.push(ContainerPlan {
                    name: format!("{node_name}-vc"),
                    labels: labels(&role),
                    role,
                    image: vc_image.clone(),
                    cmd,
                    env: env.clone(),
                    publish: vec![],
                    // Writable: Lodestar puts a lock file beside each keystore it imports.
                    mounts: vec![Mount::writable(format!("{key_dir}/vc{n}"), VC_KEYS_DIR).secret()],
                    static_host: None,
                    run_as_owner: false,
                });
            }
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
            .contains("http://dvlab-basic-bn1:9596"));
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
}
