//! The consensus driver in a 4-node cluster over real loopback libp2p sockets: many
//! consecutive instances, a stopped node, a restarted node and a healed partition.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use dvnode::{
    consensus::{
        driver::{
            BytesValue, Consensus, ConsensusError, ConsensusMetrics, Decided, DriverConfig,
            P2pSigner, P2pVerifier, Transport,
        },
        msg::InstanceId,
        qbft::{verify_decision, Config, Value, ValuePolicy},
        timer::LinearTimer,
    },
    p2p::{self, Inbound, Network, NetworkHandle, Router, SendError},
};
use futures::{future::join_all, stream, StreamExt};
use libp2p::{identity::Keypair, Multiaddr, PeerId};
use prometheus_client::{encoding::text::encode, registry::Registry};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

const N: usize = 4;
const DUTY: u64 = 1;
const VALUE_BYTES: usize = 96;

fn timer() -> LinearTimer {
    LinearTimer::new(Duration::from_millis(200), Duration::from_millis(100))
}

/// The tests share the machine's cores with four nodes each: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn driver_config(timer: LinearTimer) -> DriverConfig {
    DriverConfig {
        timer: Arc::new(timer),
        retention: Duration::from_secs(60),
        gc_interval: Duration::from_millis(100),
        ..DriverConfig::default()
    }
}

fn limits() -> p2p::Limits {
    p2p::Limits {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ping_interval: Duration::from_millis(500),
        ..p2p::Limits::default()
    }
}

fn id(slot: u64) -> InstanceId {
    InstanceId { slot, duty: DUTY }
}

/// Node `node`'s input for `slot`: distinct per node, so agreement is meaningful.
fn input(slot: u64, node: usize) -> BytesValue {
    let mut v = slot.to_le_bytes().to_vec();
    v.push(node as u8);
    v.resize(VALUE_BYTES, 0xa5 ^ node as u8);
    BytesValue(v)
}

/// Valid: a well-formed value of this slot proposed by a cluster node.
struct Policy(u64);

impl ValuePolicy<BytesValue> for Policy {
    fn is_valid(&self, v: &BytesValue) -> bool {
        v.0.len() == VALUE_BYTES && v.0[..8] == self.0.to_le_bytes() && (v.0[8] as usize) < N
    }
}

/// A transport that can be cut, simulating a partition of one node (both directions, together
/// with the inbound filter of [`TestNode::start`]).
struct Gated {
    net: NetworkHandle,
    open: Arc<AtomicBool>,
}

impl Transport for Gated {
    fn broadcast(&self, payload: Vec<u8>) -> Result<(), SendError> {
        if self.open.load(Ordering::SeqCst) {
            self.net.broadcast(p2p::Protocol::Qbft, payload)
        } else {
            Ok(())
        }
    }

    fn send(&self, to: usize, payload: Vec<u8>) -> Result<(), SendError> {
        if self.open.load(Ordering::SeqCst) {
            self.net.send(to, p2p::Protocol::Qbft, payload)
        } else {
            Ok(())
        }
    }
}

struct TestNode {
    index: usize,
    network: NetworkHandle,
    consensus: Consensus,
    registry: Registry,
    open: Arc<AtomicBool>,
    filter: JoinHandle<()>,
}

impl TestNode {
    async fn start(
        key: &Keypair,
        peers: &[PeerId],
        dial: Vec<(PeerId, Multiaddr)>,
        timer: LinearTimer,
    ) -> TestNode {
        let mut registry = Registry::default();
        let p2p_metrics = p2p::Metrics::new(&mut registry);
        let (network, inbound) = Network::start(p2p::Config {
            key: key.clone(),
            peers: peers.to_vec(),
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            dial_addrs: dial,
            metrics: p2p_metrics.clone(),
            limits: limits(),
        })
        .await
        .expect("network starts");
        let mut router = Router::spawn(inbound, 4096, p2p_metrics);
        let open = Arc::new(AtomicBool::new(true));
        // Inbound half of the partition switch.
        let (tx, rx) = mpsc::channel::<Inbound>(4096);
        let gate = open.clone();
        let filter = tokio::spawn(async move {
            while let Some(m) = router.qbft.recv().await {
                if gate.load(Ordering::SeqCst) && tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let index = network.index();
        let consensus = Consensus::with_transport(
            Arc::new(Gated {
                net: network.clone(),
                open: open.clone(),
            }),
            rx,
            index,
            peers.len(),
            Arc::new(P2pSigner::new(key.clone())),
            Arc::new(P2pVerifier::new(peers).unwrap()),
            driver_config(timer),
            ConsensusMetrics::new(&mut registry),
        )
        .unwrap();
        TestNode {
            index,
            network,
            consensus,
            registry,
            open,
            filter,
        }
    }

    async fn propose(
        &self,
        slot: u64,
        deadline: Duration,
    ) -> Result<Decided<BytesValue>, ConsensusError> {
        self.consensus
            .propose(
                id(slot),
                input(slot, self.index),
                Policy(slot),
                Instant::now() + deadline,
            )
            .await
    }

    fn spawn_propose(
        &self,
        slot: u64,
        deadline: Duration,
    ) -> JoinHandle<Result<Decided<BytesValue>, ConsensusError>> {
        let c = self.consensus.clone();
        let index = self.index;
        tokio::spawn(async move {
            c.propose(
                id(slot),
                input(slot, index),
                Policy(slot),
                Instant::now() + deadline,
            )
            .await
        })
    }

    /// Value of the metric series `series`, 0 when absent.
    fn metric(&self, series: &str) -> f64 {
        let mut text = String::new();
        encode(&mut text, &self.registry).unwrap();
        text.lines()
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(name, _)| *name == series)
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0.0)
    }

    async fn stop(self) {
        self.consensus.shutdown().await;
        self.network.shutdown().await;
        self.filter.abort();
    }
}

struct Cluster {
    timer: LinearTimer,
    keys: Vec<Keypair>,
    peers: Vec<PeerId>,
    nodes: Vec<Option<TestNode>>,
}

impl Cluster {
    async fn start(timer: LinearTimer) -> Cluster {
        let keys: Vec<Keypair> = (0..N).map(|_| p2p::key::generate()).collect();
        let peers: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
        let mut cluster = Cluster {
            timer,
            keys,
            peers,
            nodes: Vec::new(),
        };
        for i in 0..N {
            let node = cluster.start_node(i).await;
            cluster.nodes.push(Some(node));
        }
        cluster.wait_connected().await;
        cluster
    }

    /// Starts node `i`, dialing every other running node.
    async fn start_node(&self, i: usize) -> TestNode {
        let dial = self
            .nodes
            .iter()
            .flatten()
            .filter(|n| n.index != i)
            .map(|n| (self.peers[n.index], n.network.local_addrs()[0].clone()))
            .collect();
        TestNode::start(&self.keys[i], &self.peers, dial, self.timer).await
    }

    fn node(&self, i: usize) -> &TestNode {
        self.nodes[i].as_ref().expect("node is running")
    }

    fn running(&self) -> Vec<&TestNode> {
        self.nodes.iter().flatten().collect()
    }

    async fn wait_connected(&self) {
        let running = self.running();
        let want = running.len() - 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        while running.iter().any(|n| {
            n.network
                .connected_peers()
                .iter()
                .filter(|&&p| self.nodes[p].is_some())
                .count()
                < want
        }) {
            assert!(Instant::now() < deadline, "cluster did not connect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(n) = n.take() {
                n.stop().await;
            }
        }
    }

    /// Engine configuration able to verify decision proofs of this cluster.
    fn engine_config(&self) -> Config {
        Config::new(
            N as u64,
            Arc::new(P2pSigner::new(self.keys[0].clone())),
            Arc::new(P2pVerifier::new(&self.peers).unwrap()),
        )
    }
}

/// Runs `slot` on the given nodes and checks agreement, validity and the decision proofs.
async fn decide_on(cluster: &Cluster, nodes: &[&TestNode], slot: u64) -> BytesValue {
    let results = join_all(
        nodes
            .iter()
            .map(|n| n.propose(slot, Duration::from_secs(20))),
    )
    .await;
    let mut value = None;
    for (n, r) in nodes.iter().zip(results) {
        let d = r.unwrap_or_else(|e| panic!("node {} slot {slot}: {e}", n.index));
        assert_eq!(d.instance, id(slot));
        verify_decision(
            &cluster.engine_config(),
            id(slot),
            d.round,
            d.value.value_hash(),
            &d.commits,
        )
        .unwrap_or_else(|e| panic!("node {} slot {slot}: bad decision proof: {e}", n.index));
        let v = value.get_or_insert_with(|| d.value.clone());
        assert_eq!(*v, d.value, "node {} disagrees in slot {slot}", n.index);
    }
    let v = value.expect("at least one node");
    assert!(Policy(slot).is_valid(&v), "decided value is not a proposal");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_decide_1000_consecutive_instances() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    // A round-1 timeout well above the decide latency: this test is about the happy path, and
    // on a loaded machine a short timer would add round changes.
    let cluster = Cluster::start(LinearTimer::new(
        Duration::from_secs(2),
        Duration::from_millis(500),
    ))
    .await;
    let nodes = cluster.running();
    let run = stream::iter(0..1000u64)
        .map(|slot| {
            let nodes = &nodes;
            let cluster = &cluster;
            async move { (slot, decide_on(cluster, nodes, slot).await) }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>();
    let decided = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("1000 instances decide within 120 s");
    assert_eq!(decided.len(), 1000);
    for n in &nodes {
        assert_eq!(
            n.metric("consensus_decided_total"),
            1000.0,
            "node {}",
            n.index
        );
        assert_eq!(n.metric("consensus_active_instances"), 0.0);
    }
    // Leadership rotates: every node's value was decided for some instance.
    let mut leaders = [0usize; N];
    for (_, v) in &decided {
        leaders[v.0[8] as usize] += 1;
    }
    assert!(leaders.iter().all(|&c| c > 0), "{leaders:?}");
    cluster.stop().await;
    eprintln!("1000 instances on 4 nodes took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_node_decides_from_buffered_messages() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(timer()).await;
    let late = cluster.node(3);
    // Nodes 0-2 form a quorum and decide while node 3 has not started the instance; their
    // messages to node 3 are buffered by its driver and replayed when it starts.
    for slot in [100, 101, 102, 103] {
        let early: Vec<&TestNode> = (0..3).map(|i| cluster.node(i)).collect();
        let v = decide_on(&cluster, &early, slot).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let d = late.propose(slot, Duration::from_secs(5)).await.unwrap();
        assert_eq!(d.value, v);
        assert!(
            d.elapsed < timer().base,
            "slot {slot}: decided after {:?}, so not from the buffer",
            d.elapsed
        );
    }
    assert_eq!(late.metric("consensus_round_timeouts_total"), 0.0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_then_restarted_node_catches_up() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(timer()).await;
    let nodes = cluster.running();
    for slot in 0..20 {
        decide_on(&cluster, &nodes, slot).await;
    }

    // Node 3 shuts down: the other three still decide every instance (a quarter of them after
    // a round change, as node 3 would have led round 1).
    cluster.nodes[3].take().unwrap().stop().await;
    let three = cluster.running();
    let missed: Vec<(u64, BytesValue)> = stream::iter(20..80u64)
        .map(|slot| {
            let (three, cluster) = (&three, &cluster);
            async move { (slot, decide_on(cluster, three, slot).await) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(missed.len(), 60);
    assert!(three[0].metric("consensus_round_timeouts_total") > 0.0);

    // Node 3 restarts with a fresh driver and asks for the instances it missed: the others
    // still retain them and answer with DECIDED.
    let restarted = cluster.start_node(3).await;
    cluster.nodes[3] = Some(restarted);
    cluster.wait_connected().await;
    let node3 = cluster.node(3);
    let results = join_all(
        missed
            .iter()
            .map(|(slot, _)| node3.propose(*slot, Duration::from_secs(10))),
    )
    .await;
    for ((slot, v), r) in missed.iter().zip(results) {
        let d = r.unwrap_or_else(|e| panic!("restarted node, slot {slot}: {e}"));
        assert_eq!(d.value, *v, "slot {slot}");
    }
    // And it takes part in new instances again.
    let all = cluster.running();
    for slot in 80..90 {
        decide_on(&cluster, &all, slot).await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals_and_lagging_node_catches_up() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(timer()).await;
    let node3 = cluster.node(3);
    node3.open.store(false, Ordering::SeqCst);

    // All four start 30 instances; node 3 is cut off and cannot decide.
    let lagging: Vec<_> = (0..30)
        .map(|slot| node3.spawn_propose(slot, Duration::from_secs(30)))
        .collect();
    let majority: Vec<&TestNode> = (0..3).map(|i| cluster.node(i)).collect();
    let decided: Vec<(u64, BytesValue)> = stream::iter(0..30u64)
        .map(|slot| {
            let (majority, cluster) = (&majority, &cluster);
            async move { (slot, decide_on(cluster, majority, slot).await) }
        })
        .buffer_unordered(30)
        .collect()
        .await;
    // Instances node 3 never started while cut off.
    let mut missed = Vec::new();
    for slot in 30..40 {
        missed.push((slot, decide_on(&cluster, &majority, slot).await));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        lagging.iter().all(|h| !h.is_finished()),
        "node 3 decided while partitioned"
    );
    assert_eq!(node3.metric("consensus_decided_total"), 0.0);
    assert_eq!(node3.metric("consensus_active_instances"), 30.0);

    // An instance only node 3 runs cannot decide: it fails at its deadline.
    let err = node3
        .propose(1000, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err, ConsensusError::DeadlineExceeded(id(1000)));
    assert_eq!(
        node3
            .propose(1000, Duration::from_secs(1))
            .await
            .unwrap_err(),
        ConsensusError::Finished(id(1000))
    );
    assert_eq!(
        node3.metric(r#"consensus_failed_total{reason="deadline"}"#),
        1.0
    );

    // Heal: node 3's round changes reach the others, which answer with DECIDED.
    node3.open.store(true, Ordering::SeqCst);
    let healed = Instant::now();
    let by_slot: std::collections::HashMap<u64, BytesValue> = decided.into_iter().collect();
    for (slot, h) in (0..30u64).zip(lagging) {
        let d = h
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("node 3 slot {slot}: {e}"));
        assert_eq!(d.value, by_slot[&slot], "slot {slot}");
    }
    assert!(
        healed.elapsed() < Duration::from_secs(10),
        "catch-up took {:?}",
        healed.elapsed()
    );
    // Instances it missed entirely are answered with DECIDED when it starts them.
    for (slot, v) in &missed {
        let d = node3.propose(*slot, Duration::from_secs(10)).await.unwrap();
        assert_eq!(d.value, *v, "slot {slot}");
    }
    // A second proposal for a retained instance is refused.
    assert_eq!(
        node3.propose(0, Duration::from_secs(1)).await.unwrap_err(),
        ConsensusError::AlreadyRunning(id(0))
    );
    assert_eq!(node3.metric("consensus_decided_total"), 40.0);
    assert_eq!(node3.metric("consensus_active_instances"), 0.0);
    cluster.stop().await;
}
