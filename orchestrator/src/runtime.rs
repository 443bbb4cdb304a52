//! Runtime: Docker network and containers of a plan, via bollard. Everything created
//! carries the label `dvlab.run=<name>`; teardown removes only what carries it, and the
//! run's private state directory ([`state`]: key material, outside the report directory).

pub mod state;

use crate::genesis;
use crate::plan::{
    ClusterPlan, ContainerPlan, DkgPlan, Plan, Role, DKG_KEYS_DIR, DVNODE_API_PORT, DVNODE_IMAGE,
    DVNODE_METRICS_PORT, DVNODE_P2P_PORT, GENESIS_RUN_DIR, GENESIS_STATE_FILE, PROMETHEUS_IMAGE,
    PROMETHEUS_PORT, PROMETHEUS_RUN_DIR, ROLE_LABEL, RUN_LABEL,
};
use anyhow::{anyhow, bail, ensure, Context, Result};
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use dvnode::cluster::lock::ClusterLock;
use dvnode::eth::beacon::BeaconClient;
use dvnode::eth::types::DepositData;
use dvnode::keys::keystore::{reencrypt_dir, KdfChoice};
use futures::StreamExt;
use rand::RngCore;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Connects to the local Docker daemon and negotiates the API version (Docker 20.10 speaks
/// API 1.41).
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults()
        .context("cannot connect to Docker (is DOCKER_HOST valid?)")?;
    let docker = docker.negotiate_version().await.map_err(|e| {
        anyhow!("cannot reach the Docker daemon at /var/run/docker.sock ({e}); is dockerd running?")
    })?;
    docker
        .ping()
        .await
        .map_err(|e| anyhow!("Docker daemon does not answer ping: {e}"))?;
    Ok(docker)
}

/// A started container.
#[derive(Debug, Clone)]
pub struct Started {
    /// Container name.
    pub name: String,
    /// Spec name of a beacon node, if it is one.
    pub beacon_node: Option<String>,
    /// Host URL of the REST API for beacon nodes and of Prometheus (`http://127.0.0.1:PORT`).
    pub api_url: Option<String>,
    /// Host URL of a dvnode's `/metrics` and `/health` (`http://127.0.0.1:PORT`).
    pub metrics_url: Option<String>,
}

/// How long a beacon node may take to serve its REST API after its container starts.
const BN_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a dvnode may take to serve its validator API after its container starts.
const DVNODE_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates the network and all containers of `plan` and starts them: beacon nodes; once the
/// first one serves the chain's genesis, the DV clusters' key material (`dvnode
/// create-cluster` in the dvnode image, with the chain's genesis validators root and fork
/// version); the dvnodes; their validator clients once each dvnode serves its validator
/// API; then every other container. On any failure the run is torn down before the error
/// is returned. `run_dir` anchors relative mounts.
pub async fn up(docker: &Docker, plan: &Plan, run_dir: &Path) -> Result<Vec<Started>> {
    let existing = list(docker, Some(&plan.run)).await?;
    if !existing.is_empty() {
        bail!(
            "run `{}` already has {} container(s); `dvlab down {}` first",
            plan.run,
            existing.len(),
            plan.run
        );
    }
    for image in plan.containers.iter().map(|c| c.image.as_str()) {
        if docker.inspect_image(image).await.is_err() {
            let or = if image == PROMETHEUS_IMAGE {
                " (or set `prometheus: false` in the devnet)"
            } else {
                ""
            };
            bail!("image `{image}` is missing; build it with `dvlab images build`{or}");
        }
    }
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("creating run directory {}", run_dir.display()))?;
    // Key material of an earlier run of the same name (its chain is gone), and of runs
    // before key material moved out of the report directory.
    state::remove(Some(&plan.run))?;
    let old_keys = run_dir.join("keys");
    if old_keys.exists() {
        std::fs::remove_dir_all(&old_keys)
            .with_context(|| format!("removing old key material {}", old_keys.display()))?;
    }
    let state_dir = state::state_dir(&plan.run);
    state::create_private(&state_dir)?;
    if state_dir.starts_with(std::path::absolute(run_dir)?) {
        bail!(
            "the state directory {} lies inside the report directory {}: set DVLAB_STATE_DIR \
             elsewhere",
            state_dir.display(),
            run_dir.display()
        );
    }
    // dvnode output and Prometheus data of an earlier run of the same name.
    for old in ["nodes", PROMETHEUS_RUN_DIR] {
        let old = run_dir.join(old);
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("removing old output {}", old.display()))?;
        }
    }
    match up_inner(docker, plan, run_dir).await {
        Ok(s) => Ok(s),
        Err(e) => {
            let _ = down(docker, Some(&plan.run)).await;
            Err(e)
        }
    }
}

/// The run network's IPv4 subnet. Docker assigns addresses dynamically from its lower half;
/// the upper half holds the static addresses of containers with a
/// [`ContainerPlan::static_host`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    base: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/p` (p between 8 and 28).
    pub fn parse(cidr: &str) -> Result<Subnet> {
        let (ip, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| anyhow!("subnet `{cidr}` has no prefix length"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| anyhow!("subnet `{cidr}`: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|e| anyhow!("subnet `{cidr}`: {e}"))?;
        if !(8..=28).contains(&prefix) {
            bail!("subnet `{cidr}`: prefix length must be between 8 and 28");
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Subnet {
            base: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    /// `a.b.c.d/p`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.base, self.prefix)
    }

    /// The lower half, where Docker assigns addresses dynamically.
    pub fn dynamic_range(&self) -> String {
        format!("{}/{}", self.base, self.prefix + 1)
    }

    /// Static address number `host` (1-based) of the upper half.
    pub fn static_ip(&self, host: u32) -> Result<Ipv4Addr> {
        let half = 1u32 << (32 - self.prefix - 1);
        // The last address of the subnet is its broadcast address.
        if host == 0 || host >= half - 1 {
            bail!(
                "static address {host} does not fit the upper half of {}",
                self.cidr()
            );
        }
        Ok(Ipv4Addr::from(u32::from(self.base) + half + host))
    }
}

/// Creates the run network with a subnet Docker considers free (it avoids its other
/// networks and the host's routes) and a static range for dvnodes.
async fn create_network(docker: &Docker, plan: &Plan) -> Result<Subnet> {
    let labels = HashMap::from([(RUN_LABEL.to_string(), plan.run.clone())]);
    let request = |ipam: Option<Ipam>| NetworkCreateRequest {
        name: plan.network.clone(),
        driver: Some("bridge".into()),
        labels: Some(labels.clone()),
        ipam,
        ..Default::default()
    };
    let mut last_err = None;
    for _ in 0..3 {
        // Docker picks a free pool for a network without IPAM configuration; static
        // addresses need a configured subnet, so the network is re-created with that pool.
        docker
            .create_network(request(None))
            .await
            .with_context(|| format!("creating network {}", plan.network))?;
        let info = docker
            .inspect_network(&plan.network, None)
            .await
            .with_context(|| format!("inspecting network {}", plan.network))?;
        docker
            .remove_network(&plan.network)
            .await
            .with_context(|| format!("re-creating network {}", plan.network))?;
        let cidr = info
            .ipam
            .and_then(|i| i.config)
            .into_iter()
            .flatten()
            .filter_map(|c| c.subnet)
            .find(|s| s.contains('.'))
            .ok_or_else(|| anyhow!("Docker gave network {} no IPv4 subnet", plan.network))?;
        let subnet = Subnet::parse(&cidr)?;
        let ipam = Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.cidr()),
                ip_range: Some(subnet.dynamic_range()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        match docker.create_network(request(Some(ipam))).await {
            Ok(_) => return Ok(subnet),
            // Another network took the pool in between: try again.
            Err(e) => last_err = Some(e),
        }
    }
    Err(anyhow!(
        "creating network {}: {}",
        plan.network,
        last_err.map_or_else(String::new, |e| e.to_string())
    ))
}

/// Owner (`uid:gid`) of the run directory, for containers writing into it.
fn owner_of(dir: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(format!("{}:{}", m.uid(), m.gid()))
}

async fn up_inner(docker: &Docker, plan: &Plan, run_dir: &Path) -> Result<Vec<Started>> {
    let subnet = create_network(docker, plan).await?;
    let owner = owner_of(run_dir)?;
    let state_dir = state::state_dir(&plan.run);
    let ctx = StartCtx {
        plan,
        run_dir,
        state_dir: &state_dir,
        subnet,
        owner: &owner,
    };
    let mut started = Vec::new();
    let by_role = |pred: fn(&Role) -> bool| plan.containers.iter().filter(move |c| pred(&c.role));
    if plan.genesis_state {
        let mut dkg = Vec::new();
        for cluster in &plan.clusters {
            if let Some(ceremony) = &cluster.dkg {
                dkg.push((cluster, run_dkg(&ctx, docker, cluster, ceremony).await?));
            }
        }
        write_genesis_state(plan, run_dir, &dkg)?;
    }
    for c in by_role(|r| matches!(r, Role::BeaconNode { .. })) {
        started.push(ctx.start(docker, c).await?);
    }
    if !plan.clusters.is_empty() {
        let dealt: Vec<&ClusterPlan> = plan.clusters.iter().filter(|c| c.dkg.is_none()).collect();
        if !dealt.is_empty() {
            let bn0 = started
                .first()
                .and_then(|s| s.api_url.clone())
                .ok_or_else(|| anyhow!("DV clusters need a beacon node"))?;
            let chain = wait_for_chain(docker, &started[0].name, &bn0).await?;
            for cluster in dealt {
                create_cluster(&ctx, docker, cluster, &chain).await?;
            }
        }
        let mut apis = Vec::new();
        for c in by_role(|r| matches!(r, Role::DvNode { .. })) {
            let s = ctx.start(docker, c).await?;
            let port = host_port(docker, &c.name, DVNODE_API_PORT).await?;
            apis.push((c.name.clone(), format!("http://127.0.0.1:{port}")));
            started.push(s);
        }
        for (name, api) in &apis {
            wait_http(
                docker,
                name,
                &format!("{api}/eth/v1/beacon/genesis"),
                DVNODE_READY_TIMEOUT,
            )
            .await
            .with_context(|| format!("validator API of dvnode {name}"))?;
        }
        for c in by_role(|r| matches!(r, Role::DvVc { .. })) {
            started.push(ctx.start(docker, c).await?);
        }
    }
    if let Some(config) = plan.prometheus_config() {
        let dir = run_dir.join(PROMETHEUS_RUN_DIR);
        std::fs::create_dir_all(dir.join("data"))
            .with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("prometheus.yml"), config)
            .with_context(|| format!("writing {}/prometheus.yml", dir.display()))?;
        std::fs::write(
            dir.join(crate::plan::PROMETHEUS_FAULTS_FILE),
            crate::plan::prometheus_fault_targets(&[]),
        )?;
    }
    for c in by_role(|r| {
        !matches!(
            r,
            Role::BeaconNode { .. } | Role::DvNode { .. } | Role::DvVc { .. }
        )
    }) {
        started.push(ctx.start(docker, c).await?);
    }
    Ok(started)
}

/// What key material of a DV cluster binds to: the chain as the first beacon node serves it.
#[derive(Debug, Clone)]
pub struct ChainId {
    /// `GENESIS_FORK_VERSION` (`0x…`).
    pub fork_version: String,
    /// Genesis validators root (`0x…`).
    pub genesis_validators_root: String,
}

/// Waits until the beacon node at `url` (container `name`) serves its genesis, then reads
/// the fork version from its spec.
async fn wait_for_chain(docker: &Docker, name: &str, url: &str) -> Result<ChainId> {
    let bn = BeaconClient::new(url)?;
    let deadline = Instant::now() + BN_READY_TIMEOUT;
    let genesis = loop {
        match bn.genesis().await {
            Ok(g) => break g,
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "beacon node {name} did not serve its genesis within {BN_READY_TIMEOUT:?}: {e}"
                )
            }
            Err(_) => {
                ensure_running(docker, name).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let spec = bn
        .spec()
        .await
        .with_context(|| format!("reading the spec of beacon node {name}"))?;
    let fork_version = spec
        .string("GENESIS_FORK_VERSION")
        .map_err(|e| anyhow!("beacon node {name}: GENESIS_FORK_VERSION: {e}"))?;
    Ok(ChainId {
        fork_version,
        genesis_validators_root: genesis.genesis_validators_root.to_string(),
    })
}

/// Polls `url` until it answers with success; fails early, with the container's last log
/// lines, when container `name` stops.
async fn wait_http(docker: &Docker, name: &str, url: &str, timeout: Duration) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()?;
    let deadline = Instant::now() + timeout;
    loop {
        match http.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            _ if Instant::now() >= deadline => bail!("{url} did not answer within {timeout:?}"),
            _ => {
                ensure_running(docker, name).await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Fails with the exit code and last log lines when container `name` is not running.
async fn ensure_running(docker: &Docker, name: &str) -> Result<()> {
    let info = docker.inspect_container(name, None).await?;
    let state = info.state.unwrap_or_default();
    if state.running != Some(true) {
        let logs = logs(docker, name, Some(15)).await.unwrap_or_default();
        bail!(
            "container {name} stopped (exit code {}); last log lines:\n{}",
            state
                .exit_code
                .map_or_else(|| "?".into(), |c| c.to_string()),
            logs.trim_end()
        );
    }
    Ok(())
}

/// Runs `dvnode create-cluster` for `cluster` in the dvnode image (as the run directory's
/// owner, writing into `STATE_DIR/keys/`), then gives each node's VC its share keystores
/// re-encrypted under one password, as Lodestar's `--importKeystoresPassword` needs.
async fn create_cluster(
    ctx: &StartCtx<'_>,
    docker: &Docker,
    cluster: &ClusterPlan,
    chain: &ChainId,
) -> Result<()> {
    let key_dir = ctx.state_dir.join(&cluster.key_dir);
    std::fs::create_dir_all(&key_dir)?;
    let keys_root = ctx.state_dir.join("keys");
    let addresses: Vec<String> = cluster
        .node_containers
        .iter()
        .map(|name| {
            let c = ctx
                .plan
                .containers
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| anyhow!("dvnode {name} is not planned"))?;
            let host = c
                .static_host
                .ok_or_else(|| anyhow!("dvnode {name} has no static address"))?;
            Ok(format!(
                "/ip4/{}/tcp/{DVNODE_P2P_PORT}",
                ctx.subnet.static_ip(host)?
            ))
        })
        .collect::<Result<_>>()?;
    let mut cmd = cluster.create_cluster_args.clone();
    cmd.extend([
        "--fork-version".into(),
        chain.fork_version.clone(),
        "--genesis-validators-root".into(),
        chain.genesis_validators_root.clone(),
        "--p2p-addresses".into(),
        addresses.join(","),
    ]);
    let name = format!("dvlab-{}-create-{}", ctx.plan.run, cluster.name);
    let body = ContainerCreateBody {
        image: Some(DVNODE_IMAGE.into()),
        cmd: Some(cmd),
        user: Some(ctx.owner.to_string()),
        labels: Some(HashMap::from([
            (RUN_LABEL.to_string(), ctx.plan.run.clone()),
            (ROLE_LABEL.to_string(), "create-cluster".to_string()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            binds: Some(vec![format!("{}:/keys", abs(&keys_root)?.display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    run_container(docker, &name, body).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (code, logs) = wait_exit(docker, &name, deadline, Some(20)).await?;
    std::fs::write(key_dir.join("create-cluster.log"), &logs)?;
    if code != 0 {
        bail!(
            "dvnode create-cluster for cluster {} failed (exit code {code}):\n{}",
            cluster.name,
            logs.trim_end()
        );
    }
    vc_keystores(cluster, &key_dir)
}

/// Waits (until `deadline`) for the one-off container `name` to exit, then removes it; returns
/// its exit code and its logs (the last `tail` lines).
async fn wait_exit(
    docker: &Docker,
    name: &str,
    deadline: Instant,
    tail: Option<usize>,
) -> Result<(i64, String)> {
    let code = loop {
        let state = docker
            .inspect_container(name, None)
            .await?
            .state
            .unwrap_or_default();
        if state.running != Some(true) {
            break state.exit_code.unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let logs = logs(docker, name, Some(20)).await.unwrap_or_default();
            let _ = remove_container(docker, name).await;
            bail!(
                "container {name} did not finish in time; last log lines:\n{}",
                logs.trim_end()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs = logs(docker, name, tail).await.unwrap_or_default();
    remove_container(docker, name).await?;
    Ok((code, logs))
}

async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    docker
        .remove_container(
            name,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await
        .with_context(|| format!("removing container {name}"))
}

/// Gives each node's VC of `cluster` its share keystores (`KEY_DIR/node{n}/validator_keys`,
/// as `dvnode create-cluster` and `dvnode dkg` write them) re-encrypted under one password,
/// as Lodestar's `--importKeystoresPassword` needs.
fn vc_keystores(cluster: &ClusterPlan, key_dir: &Path) -> Result<()> {
    for n in 0..cluster.nodes {
        let count = reencrypt_keystores(
            &key_dir.join(format!("node{n}/validator_keys")),
            &key_dir.join(format!("vc{n}")),
        )?;
        let want = cluster.indices.end - cluster.indices.start;
        if count as u64 != want {
            bail!(
                "cluster {} node {n} has {count} share keystores, expected {want}",
                cluster.name
            );
        }
    }
    Ok(())
}

/// How long a cluster's DKG (setup and ceremony) may take.
const DKG_TIMEOUT: Duration = Duration::from_secs(150);

/// Runs the key-generation ceremony of `keys: dkg` cluster `cluster`: the setup script (every
/// operator's p2p key, the definition they all sign) in the dvnode image without a network,
/// then one `dvnode dkg` container per operator on the run network, all at once. Every node's
/// log goes to `KEY_DIR/dkg-node{n}.log`; a failed ceremony fails the run with the nodes'
/// errors (they name the operator at fault). Checks that every node wrote the same lock, gives
/// the VCs their share keystores and returns the cluster's deposits (verified), in validator
/// order.
async fn run_dkg(
    ctx: &StartCtx<'_>,
    docker: &Docker,
    cluster: &ClusterPlan,
    dkg: &DkgPlan,
) -> Result<Vec<DepositData>> {
    let start = Instant::now();
    let deadline = start + DKG_TIMEOUT;
    let key_dir = ctx.state_dir.join(&cluster.key_dir);
    std::fs::create_dir_all(&key_dir)?;
    let keys_root = ctx.state_dir.join("keys");
    let name = format!("dvlab-{}-dkg-setup-{}", ctx.plan.run, cluster.name);
    let body = ContainerCreateBody {
        image: Some(DVNODE_IMAGE.into()),
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec![dkg.setup_script.clone()]),
        user: Some(ctx.owner.to_string()),
        labels: Some(HashMap::from([
            (RUN_LABEL.to_string(), ctx.plan.run.clone()),
            (ROLE_LABEL.to_string(), "dkg-setup".to_string()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            binds: Some(vec![format!(
                "{}:{DKG_KEYS_DIR}",
                abs(&keys_root)?.display()
            )]),
            ..Default::default()
        }),
        ..Default::default()
    };
    run_container(docker, &name, body).await?;
    let (code, logs) = wait_exit(docker, &name, deadline, None).await?;
    std::fs::write(key_dir.join("dkg-setup.log"), &logs)?;
    if code != 0 {
        bail!(
            "cluster {}: the DKG setup (p2p keys, cluster definition) failed (exit code \
             {code}):\n{}",
            cluster.name,
            logs.trim_end()
        );
    }
    for c in &dkg.ceremony {
        create_and_start(docker, ctx, c).await?;
    }
    let mut failed = Vec::new();
    for (n, c) in dkg.ceremony.iter().enumerate() {
        let (code, logs) = wait_exit(docker, &c.name, deadline, None).await?;
        std::fs::write(key_dir.join(format!("dkg-node{n}.log")), &logs)?;
        if code != 0 {
            let tail: Vec<&str> = logs.lines().rev().take(5).collect();
            failed.push(format!(
                "node {n} ({}) exit code {code}:\n  {}",
                c.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
            ));
        }
    }
    if !failed.is_empty() {
        bail!(
            "cluster {}: the DKG ceremony failed on {} of {} nodes (logs in {}):\n{}",
            cluster.name,
            failed.len(),
            dkg.ceremony.len(),
            key_dir.display(),
            failed.join("\n")
        );
    }
    let locks = (0..cluster.nodes)
        .map(|n| ClusterLock::load(&key_dir.join(format!("node{n}/cluster-lock.json"))))
        .collect::<Result<Vec<_>>>()?;
    let text = std::fs::read_to_string(key_dir.join("node0/deposit-data.json"))
        .context("reading node 0's deposit-data.json")?;
    let want = cluster.indices.end - cluster.indices.start;
    let deposits = genesis::ceremony_deposits(&cluster.name, want, &locks, &text)?;
    vc_keystores(cluster, &key_dir)?;
    eprintln!(
        "cluster {}: DKG of {want} validators among {} nodes in {:.1} s",
        cluster.name,
        cluster.nodes,
        start.elapsed().as_secs_f64()
    );
    Ok(deposits)
}

/// Writes the run's genesis state (`RUN_DIR/GENESIS_RUN_DIR/GENESIS_STATE_FILE`): every genesis
/// validator is interop key `i` except those of `keys: dkg` clusters, which are their
/// ceremony's deposits. Fails when genesis is too close for the beacon nodes to start.
fn write_genesis_state(
    plan: &Plan,
    run_dir: &Path,
    dkg: &[(&ClusterPlan, Vec<DepositData>)],
) -> Result<()> {
    let dkg: Vec<_> = dkg
        .iter()
        .map(|(c, d)| (c.indices.clone(), d.clone()))
        .collect();
    let ssz = genesis::state_with_ceremonies(
        &plan.preset,
        plan.genesis_time,
        plan.genesis_validators,
        &dkg,
    )?;
    let dir = run_dir.join(GENESIS_RUN_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(GENESIS_STATE_FILE);
    std::fs::write(&file, ssz).with_context(|| format!("writing {}", file.display()))?;
    let left = plan.genesis_time as i64 - dvnode::clock::unix_now().as_secs() as i64;
    ensure!(
        left >= MIN_START_BEFORE_GENESIS,
        "genesis is {left} s away once the DKG is done: too little for the beacon nodes to \
         start; raise network.genesis_delay"
    );
    Ok(())
}

/// Seconds the beacon nodes need at least between the genesis state and genesis.
pub const MIN_START_BEFORE_GENESIS: i64 = 10;

/// Gives a validator client the share keystores of `src` (as `dvnode create-cluster` writes
/// them, each with its password beside it) re-encrypted under one fresh random password:
/// `DST/keystores/` and `DST/password.txt` (0600). Returns the number of keystores.
pub fn reencrypt_keystores(src: &Path, dst: &Path) -> Result<usize> {
    let password = {
        let mut b = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    };
    let n = reencrypt_dir(src, &dst.join("keystores"), &password, KdfChoice::Insecure)?;
    dvnode::util::write_secret_file(&dst.join("password.txt"), password.as_bytes())?;
    Ok(n)
}

fn abs(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// What starting a container of the plan needs.
struct StartCtx<'a> {
    plan: &'a Plan,
    run_dir: &'a Path,
    state_dir: &'a Path,
    subnet: Subnet,
    owner: &'a str,
}

impl StartCtx<'_> {
    /// Creates and starts `c`; returns its published API URLs.
    async fn start(&self, docker: &Docker, c: &ContainerPlan) -> Result<Started> {
        create_and_start(docker, self, c).await?;
        let url = |port: u16| async move {
            host_port(docker, &c.name, port)
                .await
                .map(|p| format!("http://127.0.0.1:{p}"))
        };
        let (beacon_node, api_url, metrics_url) = match &c.role {
            Role::BeaconNode { name } => (Some(name.clone()), Some(url(c.publish[0]).await?), None),
            Role::DvNode { .. } => (None, None, Some(url(DVNODE_METRICS_PORT).await?)),
            Role::Prometheus => (None, Some(url(PROMETHEUS_PORT).await?), None),
            _ => (None, None, None),
        };
        Ok(Started {
            name: c.name.clone(),
            beacon_node,
            api_url,
            metrics_url,
        })
    }
}

async fn create_and_start(docker: &Docker, ctx: &StartCtx<'_>, c: &ContainerPlan) -> Result<()> {
    let plan = ctx.plan;
    let exposed: Vec<String> = c.publish.iter().map(|p| format!("{p}/tcp")).collect();
    let bindings: HashMap<String, Option<Vec<PortBinding>>> = c
        .publish
        .iter()
        .map(|p| {
            (
                format!("{p}/tcp"),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )
        })
        .collect();
    let mut binds = Vec::new();
    for m in &c.mounts {
        let base = if m.secret { ctx.state_dir } else { ctx.run_dir };
        let host = abs(&base.join(&m.host))?;
        if m.writable {
            std::fs::create_dir_all(&host)
                .with_context(|| format!("creating {}", host.display()))?;
            binds.push(format!("{}:{}", host.display(), m.container));
        } else {
            binds.push(format!("{}:{}:ro", host.display(), m.container));
        }
    }
    let networking_config = match c.static_host {
        Some(h) => Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                plan.network.clone(),
                EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig {
                        ipv4_address: Some(ctx.subnet.static_ip(h)?.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )])),
        }),
        None => None,
    };
    let body = ContainerCreateBody {
        image: Some(c.image.clone()),
        cmd: Some(c.cmd.clone()),
        env: Some(c.env.clone()),
        user: c.run_as_owner.then(|| ctx.owner.to_string()),
        labels: Some(c.labels.clone().into_iter().collect()),
        exposed_ports: Some(exposed),
        networking_config,
        host_config: Some(HostConfig {
            network_mode: Some(plan.network.clone()),
            port_bindings: Some(bindings),
            binds: Some(binds),
            ..Default::default()
        }),
        ..Default::default()
    };
    run_container(docker, &c.name, body).await
}

/// Creates the container `name` from `body` and starts it.
pub async fn run_container(docker: &Docker, name: &str, body: ContainerCreateBody) -> Result<()> {
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await
        .with_context(|| format!("creating container {name}"))?;
    docker
        .start_container(name, None)
        .await
        .with_context(|| format!("starting container {name}"))?;
    Ok(())
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

async fn host_port(docker: &Docker, name: &str, port: u16) -> Result<u16> {
    let info = docker.inspect_container(name, None).await?;
    let key = format!("{port}/tcp");
    info.network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get(&key).cloned().flatten())
        .and_then(|b| b.into_iter().find_map(|b| b.host_port))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("container {name} has no published port for {key}"))
}

/// A container dvlab labelled.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Name without the leading `/`.
    pub name: String,
    /// Run it belongs to.
    pub run: String,
    /// Role label.
    pub role: String,
    /// `running`, `exited`, …
    pub state: String,
    /// Docker's human status.
    pub status: String,
    /// Published ports `127.0.0.1:HOST->CONTAINER`.
    pub ports: Vec<String>,
}

fn label_filter(run: Option<&str>) -> HashMap<String, Vec<String>> {
    let v = match run {
        Some(r) => format!("{RUN_LABEL}={r}"),
        None => RUN_LABEL.to_string(),
    };
    HashMap::from([("label".to_string(), vec![v])])
}

/// Lists containers labelled by dvlab (of one run, or all).
pub async fn list(docker: &Docker, run: Option<&str>) -> Result<Vec<Listed>> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&label_filter(run))
        .build();
    let mut out: Vec<Listed> = docker
        .list_containers(Some(opts))
        .await?
        .into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            Listed {
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                run: labels.get(RUN_LABEL).cloned().unwrap_or_default(),
                role: labels
                    .get(crate::plan::ROLE_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                status: c.status.unwrap_or_default(),
                ports: c
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| {
                        Some(format!("{}:{}->{}", p.ip?, p.public_port?, p.private_port))
                    })
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Host URLs (`http://127.0.0.1:PORT`) of the running Prometheus containers in `list`, with
/// their runs.
pub fn prometheus_urls(list: &[Listed]) -> Vec<(String, String)> {
    let suffix = format!("->{PROMETHEUS_PORT}");
    list.iter()
        .filter(|c| c.role == Role::Prometheus.label() && c.state == "running")
        .filter_map(|c| {
            let p = c.ports.iter().find_map(|p| p.strip_suffix(&suffix))?;
            Some((c.run.clone(), format!("http://{p}")))
        })
        .collect()
}

/// Host URL of the Prometheus of `run`, while it runs.
pub async fn prometheus_url(docker: &Docker, run: &str) -> Result<Option<String>> {
    let list = list(docker, Some(run)).await?;
    Ok(prometheus_urls(&list).into_iter().next().map(|(_, u)| u))
}

/// Removes the containers and networks labelled for `run` (or for every run) and the run's
/// private state directory ([`state::remove`]). Returns the number of containers removed.
pub async fn down(docker: &Docker, run: Option<&str>) -> Result<usize> {
    let containers = list(docker, run).await?;
    let mut errors = Vec::new();
    // Key material goes whatever else fails.
    if let Err(e) = state::remove(run) {
        errors.push(format!("{e:#}"));
    }
    let opts = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    for c in &containers {
        if let Err(e) = docker.remove_container(&c.name, Some(opts.clone())).await {
            errors.push(format!("{}: {e}", c.name));
        }
    }
    let nets = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&label_filter(run))
                .build(),
        ))
        .await?;
    for n in nets {
        if let Some(name) = n.name {
            if let Err(e) = docker.remove_network(&name).await {
                errors.push(format!("network {name}: {e}"));
            }
        }
    }
    if !errors.is_empty() {
        bail!("teardown incomplete: {}", errors.join("; "));
    }
    Ok(containers.len())
}

/// A container's output: all of it, or its last `tail` lines.
pub async fn logs(docker: &Docker, name: &str, tail: Option<usize>) -> Result<String> {
    let mut opts = LogsOptionsBuilder::default().stdout(true).stderr(true);
    if let Some(lines) = tail {
        opts = opts.tail(&lines.to_string());
    }
    let mut s = docker.logs(name, Some(opts.build()));
    let mut out = String::new();
    while let Some(chunk) = s.next().await {
        out.push_str(&chunk?.to_string());
    }
    Ok(out)
}

/// Streams a container's logs to stdout; `follow` keeps streaming.
pub async fn print_logs(docker: &Docker, name: &str, follow: bool) -> Result<()> {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .follow(follow)
        .build();
    let mut s = docker.logs(name, Some(opts));
    while let Some(chunk) = s.next().await {
        print!("{}", chunk.with_context(|| format!("logs of {name}"))?);
    }
    Ok(())
}

/// Resolves a short name (`bn0`, `baseline`) or full container name within the labelled
/// containers.
pub async fn resolve(docker: &Docker, name: &str) -> Result<String> {
    let all = list(docker, None).await?;
    if let Some(c) = all.iter().find(|c| c.name == name) {
        return Ok(c.name.clone());
    }
    let matches: Vec<_> = all
        .iter()
        .filter(|c| c.name == format!("dvlab-{}-{name}", c.run))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => bail!(
            "no dvlab container named `{name}`; running: {}",
            all.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => bail!("`{name}` is ambiguous across runs; use the full container name"),
    }
}

/// Fails with the cause when a container of the run is no longer running: names the
/// container, its exit code and its last log lines. Containers in `intended_down` (full
/// names: targets of a crash, stop or pause fault inside its window) may be down or paused.
pub async fn check_alive(docker: &Docker, run: &str, intended_down: &[String]) -> Result<()> {
    for c in list(docker, Some(run)).await? {
        if c.state != "running" && !intended_down.contains(&c.name) {
            let info = docker.inspect_container(&c.name, None).await.ok();
            let code = info
                .and_then(|i| i.state)
                .and_then(|s| s.exit_code)
                .map_or_else(|| "?".into(), |c| c.to_string());
            let logs = logs(docker, &c.name, Some(15)).await.unwrap_or_default();
            bail!(
                "container {} stopped ({}, exit code {code}); last log lines:\n{}",
                c.name,
                c.status,
                logs.trim_end()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(name: &str, run: &str, role: &str, state: &str, ports: &[&str]) -> Listed {
        Listed {
            name: name.into(),
            run: run.into(),
            role: role.into(),
            state: state.into(),
            status: String::new(),
            ports: ports.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn status_lists_the_published_url_of_each_running_prometheus() {
        let list = [
            listed(
                "dvlab-a-bn0",
                "a",
                "beacon-node",
                "running",
                &["127.0.0.1:32801->9596"],
            ),
            listed(
                "dvlab-a-prometheus",
                "a",
                "prometheus",
                "running",
                &["127.0.0.1:32817->9090"],
            ),
            listed("dvlab-b-prometheus", "b", "prometheus", "exited", &[]),
        ];
        assert_eq!(
            prometheus_urls(&list),
            [("a".to_string(), "http://127.0.0.1:32817".to_string())]
        );
    }
}
