//! Consensus benchmark over real loopback libp2p (`dvnode bench consensus`).
//!
//! Starts `n` in-process nodes, each with its own [`Network`] (TCP on 127.0.0.1, noise,
//! yamux), [`Router`] and [`Consensus`] driver with the default timer, and measures:
//!
//! - **sequential**: one instance at a time; every node proposes its own value and the decide
//!   latency (`propose` → decision) of every node is recorded, giving p50/p99/max;
//! - **pipelined**: up to `window` instances in flight at once; decisions per second.
//!
//! Both run with all nodes up, then again after one node was shut down. With a node down, every
//! instance it would lead in round 1 (one in `n`) decides only after the round-1 timeout, which
//! dominates the tail latency by design.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures::{stream, StreamExt};
use libp2p::{identity::Keypair, Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use super::{
    driver::{BytesValue, Consensus, ConsensusMetrics, DriverConfig},
    msg::InstanceId,
    qbft::ValuePolicy,
};
use crate::p2p::{self, Network, NetworkHandle, Router};

/// Duty code used for benchmark instances.
const BENCH_DUTY: u64 = 1;

/// Benchmark parameters.
#[derive(Clone, Debug)]
pub struct Params {
    /// Cluster size.
    pub nodes: usize,
    /// Size of each proposed value in bytes (at least 16).
    pub value_bytes: usize,
    /// Sequential instances with all nodes up.
    pub sequential: usize,
    /// Pipelined instances with all nodes up.
    pub pipelined: usize,
    /// Sequential instances with one node down.
    pub sequential_degraded: usize,
    /// Pipelined instances with one node down.
    pub pipelined_degraded: usize,
    /// Instances in flight in the pipelined runs.
    pub window: usize,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            nodes: 4,
            value_bytes: 128,
            sequential: 1000,
            pipelined: 2000,
            sequential_degraded: 200,
            pipelined_degraded: 1000,
            window: 64,
        }
    }
}

/// Result of one benchmark run.
#[derive(Clone, Debug)]
pub struct Figures {
    /// Scenario name.
    pub scenario: String,
    /// Nodes running.
    pub nodes_up: usize,
    /// Instances decided (by every running node).
    pub instances: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Median decide latency over all nodes' decisions.
    pub p50: Duration,
    /// 99th percentile decide latency.
    pub p99: Duration,
    /// Largest decide latency.
    pub max: Duration,
}

impl Figures {
    /// Instances decided per second of wall time.
    pub fn per_second(&self) -> f64 {
        self.instances as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<22} nodes up {}  instances {:>5}  {:>8.1} decisions/s  latency p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            self.scenario,
            self.nodes_up,
            self.instances,
            self.per_second(),
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Accepts well-formed benchmark values of one slot.
struct BenchPolicy {
    slot: u64,
    len: usize,
}

impl ValuePolicy<BytesValue> for BenchPolicy {
    fn is_valid(&self, value: &BytesValue) -> bool {
        value.0.len() == self.len && value.0[..8] == self.slot.to_le_bytes()
    }
}

/// Node `node`'s input for `slot`: the slot, the node index, then a filler pattern.
fn input(slot: u64, node: usize, len: usize) -> BytesValue {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&slot.to_le_bytes());
    v.extend_from_slice(&(node as u64).to_le_bytes());
    v.extend((16..len).map(|i| (i as u8) ^ (node as u8)));
    BytesValue(v)
}

struct BenchNode {
    index: usize,
    network: NetworkHandle,
    consensus: Consensus,
}

impl BenchNode {
    async fn start(
        key: &Keypair,
        peers: &[PeerId],
        dial: Vec<(PeerId, Multiaddr)>,
    ) -> Result<Self> {
        let mut registry = Registry::default();
        let p2p_metrics = p2p::Metrics::new(&mut registry);
        let (network, inbound) = Network::start(p2p::Config {
            key: key.clone(),
            peers: peers.to_vec(),
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            dial_addrs: dial,
            metrics: p2p_metrics.clone(),
            limits: p2p::Limits::default(),
        })
        .await?;
        let router = Router::spawn(inbound, 4096, p2p_metrics);
        let consensus = Consensus::new(
            network.clone(),
            router.qbft,
            key.clone(),
            DriverConfig::default(),
            ConsensusMetrics::new(&mut registry),
        )?;
        Ok(Self {
            index: network.index(),
            network,
            consensus,
        })
    }

    async fn stop(&self) {
        self.consensus.shutdown().await;
        self.network.shutdown().await;
    }
}

/// Runs one instance on every node in `nodes` and returns their decide latencies, checking that
/// they agree.
async fn run_instance(nodes: &[BenchNode], slot: u64, len: usize) -> Result<Vec<Duration>> {
    let id = InstanceId {
        slot,
        duty: BENCH_DUTY,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let results = futures::future::join_all(nodes.iter().map(|n| {
        n.consensus.propose(
            id,
            input(slot, n.index, len),
            BenchPolicy { slot, len },
            deadline,
        )
    }))
    .await;
    let mut latencies = Vec::with_capacity(results.len());
    let mut value = None;
    for (node, r) in nodes.iter().zip(results) {
        let d = r.with_context(|| format!("node {} in {id}", node.index))?;
        if *value.get_or_insert_with(|| d.value.clone()) != d.value {
            bail!("nodes decided different values in {id}");
        }
        latencies.push(d.elapsed);
    }
    Ok(latencies)
}

async fn scenario(
    name: &str,
    nodes: &[BenchNode],
    first_slot: u64,
    instances: usize,
    window: usize,
    len: usize,
) -> Result<Figures> {
    let start = Instant::now();
    let mut latencies: Vec<Duration> = Vec::with_capacity(instances * nodes.len());
    let mut runs = stream::iter(0..instances as u64)
        .map(|k| run_instance(nodes, first_slot + k, len))
        .buffer_unordered(window.max(1));
    while let Some(r) = runs.next().await {
        latencies.extend(r?);
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    Ok(Figures {
        scenario: name.to_owned(),
        nodes_up: nodes.len(),
        instances,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

/// Runs the benchmark, calling `report` with each scenario's figures as they are measured.
pub async fn run(params: &Params, mut report: impl FnMut(&Figures)) -> Result<Vec<Figures>> {
    if params.nodes < 2 {
        bail!("consensus benchmark needs at least 2 nodes");
    }
    if params.value_bytes < 16 {
        bail!("consensus benchmark values must be at least 16 bytes");
    }
    let keys: Vec<Keypair> = (0..params.nodes).map(|_| p2p::key::generate()).collect();
    let peers: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let mut nodes: Vec<BenchNode> = Vec::with_capacity(params.nodes);
    for key in &keys {
        // Each node dials the ones started before it.
        let dial = nodes
            .iter()
            .map(|n| (peers[n.index], n.network.local_addrs()[0].clone()))
            .collect();
        nodes.push(BenchNode::start(key, &peers, dial).await?);
    }
    let connected = async {
        while nodes
            .iter()
            .any(|n| n.network.connected_peers().len() + 1 < params.nodes)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .context("cluster did not connect within 10 s")?;
    // Warm up connections and streams.
    scenario("warm-up", &nodes, 1 << 40, 50, 8, params.value_bytes).await?;

    let mut all = Vec::new();
    let mut slot = 0;
    let runs = [
        ("sequential", params.sequential, 1),
        ("pipelined", params.pipelined, params.window),
    ];
    for (name, count, window) in runs {
        let f = scenario(name, &nodes, slot, count, window, params.value_bytes).await?;
        slot += count as u64;
        report(&f);
        all.push(f);
    }
    if let Some(down) = nodes.pop() {
        down.stop().await;
    }
    let runs = [
        ("sequential, 1 down", params.sequential_degraded, 1),
        (
            "pipelined, 1 down",
            params.pipelined_degraded,
            params.window,
        ),
    ];
    for (name, count, window) in runs {
        let f = scenario(name, &nodes, slot, count, window, params.value_bytes).await?;
        slot += count as u64;
        report(&f);
        all.push(f);
    }
    for n in &nodes {
        n.stop().await;
    }
    Ok(all)
}
