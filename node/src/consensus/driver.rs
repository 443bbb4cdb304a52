//! The consensus driver: runs many QBFT [`Instance`]s concurrently over the p2p network.
//!
//! [`Consensus`] is a cheap-to-clone handle to one tokio task that owns every instance of the
//! node. [`Consensus::propose`] starts the instance of a duty with this node's input value and
//! waits for its decision; the task
//!
//! - decodes the QBFT payloads of the [`Inbound`] stream (see [`crate::p2p::router`] for
//!   splitting the network's single receiver by protocol) and routes each message to its
//!   instance by [`InstanceId`];
//! - buffers messages for instances this node has not started yet (peers may be faster), bounded
//!   per instance ([`DriverConfig::max_buffered_per_instance`]), in total
//!   ([`DriverConfig::max_buffered_total`]) and in time ([`DriverConfig::buffer_ttl`]), and
//!   replays them when the instance starts;
//! - carries out the engine's [`Output`]s: `Broadcast` → [`Transport::broadcast`], `SendTo` →
//!   [`Transport::send`], `ScheduleTimeout` → a tokio timer (a newer one replaces the older),
//!   `ExtendTimeout` → that timer pushed back (a round whose proposal was accepted),
//!   `Decided` → the waiting `propose` call, `Dropped` → metrics and debug logs;
//! - keeps a decided instance for [`DriverConfig::retention`] so that it answers lagging or
//!   restarted peers with DECIDED, then forgets it, remembering its id for another `retention`
//!   so that late messages are dropped (`finished`) instead of buffered;
//! - stops an instance that has not decided by the deadline given to `propose`
//!   ([`ConsensusError::DeadlineExceeded`]).
//!
//! Dropping the future returned by `propose` only stops waiting: the instance keeps
//! participating until it decides or its deadline passes, because the other nodes may need this
//! node's votes.
//!
//! Messages are signed with the node's p2p key ([`P2pSigner`], [`P2pVerifier`]) under the
//! fixed domain [`SIGNING_DOMAIN`], which no other signature domain of the node prefixes.
//!
//! # Metrics
//! `consensus_decided_total`, `consensus_decided_rounds` (histogram of the deciding round),
//! `consensus_decide_duration_seconds` (from `propose` to decision),
//! `consensus_round_timeouts_total`, `consensus_failed_total{reason}` (`deadline`,
//! `shutdown`), `consensus_dropped_messages_total{reason}` (driver reasons `malformed`,
//! `source_mismatch`, `finished`, `buffer_full`, `buffer_expired`, plus the engine's
//! [`DropReason`]s in snake case) and `consensus_active_instances` (started, undecided).

use std::{
    any::type_name,
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use libp2p::identity::{Keypair, PeerId, PublicKey};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, info_span, Span};

use super::{
    msg::{Hash, InstanceId, MsgKind, QbftMsg, SignedMsg, SIGNING_DOMAIN},
    qbft::{self, ConfigError, DropReason, Instance, Output, Signer, Value, ValuePolicy, Verifier},
    timer::{LinearTimer, TimerStrategy},
};
use crate::p2p::{self, Inbound, NetworkHandle, Protocol, SendError};

/// Where the driver sends encoded QBFT messages. Implemented by [`NetworkHandle`] (protocol
/// [`Protocol::Qbft`]); tests may wrap it, e.g. to simulate a partition.
pub trait Transport: Send + Sync + 'static {
    /// Queues `payload` for every other node of the cluster.
    fn broadcast(&self, payload: Vec<u8>) -> Result<(), SendError>;
    /// Queues `payload` for node `to`.
    fn send(&self, to: usize, payload: Vec<u8>) -> Result<(), SendError>;
}

impl Transport for NetworkHandle {
    fn broadcast(&self, payload: Vec<u8>) -> Result<(), SendError> {
        NetworkHandle::broadcast(self, Protocol::Qbft, payload)
    }

    fn send(&self, to: usize, payload: Vec<u8>) -> Result<(), SendError> {
        NetworkHandle::send(self, to, Protocol::Qbft, payload)
    }
}

/// Signs QBFT messages with the node's p2p key: [`p2p::sign_bytes`] under [`SIGNING_DOMAIN`].
pub struct P2pSigner {
    key: Keypair,
}

impl P2pSigner {
    /// A signer for the node owning `key`.
    pub fn new(key: Keypair) -> Self {
        Self { key }
    }
}

impl Signer for P2pSigner {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        p2p::sign_bytes(&self.key, SIGNING_DOMAIN, msg)
    }
}

impl fmt::Debug for P2pSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P2pSigner")
            .field("peer", &self.key.public().to_peer_id())
            .finish()
    }
}

/// Verifies [`P2pSigner`] signatures of the cluster's nodes, node `i` being `peers[i]`.
#[derive(Clone, Debug)]
pub struct P2pVerifier {
    keys: Vec<PublicKey>,
}

impl P2pVerifier {
    /// A verifier for the cluster `peers` (in cluster lock order). Fails if a peer id does not
    /// inline its public key.
    pub fn new(peers: &[PeerId]) -> Result<Self, ConsensusError> {
        let keys = peers
            .iter()
            .enumerate()
            .map(|(index, peer)| {
                p2p::public_key(peer).ok_or(ConsensusError::PeerKey { index, peer: *peer })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }
}

impl Verifier for P2pVerifier {
    fn verify(&self, source: u64, msg: &[u8], signature: &[u8]) -> bool {
        usize::try_from(source)
            .ok()
            .and_then(|i| self.keys.get(i))
            .is_some_and(|key| p2p::verify_bytes_with_key(key, SIGNING_DOMAIN, msg, signature))
    }
}

/// An opaque byte-string value, hashed with SHA-256. Useful when the caller already has a
/// canonical encoding of what to agree on (and for tests and benchmarks).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BytesValue(pub Vec<u8>);

impl Value for BytesValue {
    fn value_hash(&self) -> Hash {
        Sha256::digest(&self.0).into()
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.0.clone()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        Ok(Self(bytes.to_vec()))
    }
}

/// Driver limits and timings.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Round timeouts of every instance.
    pub timer: Arc<dyn TimerStrategy>,
    /// How long a decided instance is kept to answer lagging peers with DECIDED; its id is then
    /// remembered for as long again so that late messages are dropped.
    pub retention: Duration,
    /// Buffered messages for instances not started yet older than this are dropped.
    pub buffer_ttl: Duration,
    /// Most messages buffered for one instance that is not started yet.
    pub max_buffered_per_instance: usize,
    /// Most messages buffered for all instances that are not started yet.
    pub max_buffered_total: usize,
    /// Capacity of the queue of `propose` calls to the driver task.
    pub command_queue: usize,
    /// Interval of the garbage collection of finished instances and expired buffers.
    pub gc_interval: Duration,
    /// Engine limit: rounds ahead of the current one for which messages are kept.
    pub max_future_rounds: u64,
    /// Engine limit: DECIDED replies sent to one lagging peer per instance.
    pub max_decided_replies: u32,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            timer: Arc::new(LinearTimer::default()),
            retention: Duration::from_secs(120),
            buffer_ttl: Duration::from_secs(24),
            max_buffered_per_instance: 256,
            max_buffered_total: 16_384,
            command_queue: 1024,
            gc_interval: Duration::from_secs(1),
            max_future_rounds: qbft::DEFAULT_MAX_FUTURE_ROUNDS,
            max_decided_replies: qbft::DEFAULT_MAX_DECIDED_REPLIES,
        }
    }
}

/// A decision of one consensus instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided<V> {
    /// The instance.
    pub instance: InstanceId,
    /// The decided value.
    pub value: V,
    /// Round of the decision.
    pub round: u64,
    /// Quorum of signed COMMITs proving the decision (see [`qbft::verify_decision`]).
    pub commits: Vec<SignedMsg>,
    /// Time from the `propose` call to the decision.
    pub elapsed: Duration,
}

/// Why a consensus instance did not (or could not) decide.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConsensusError {
    /// `propose` was called for an instance that is already running or decided on this node.
    #[error("consensus instance {0} is already running or decided on this node")]
    AlreadyRunning(InstanceId),
    /// `propose` was called for an instance that finished and was discarded recently.
    #[error("consensus instance {0} finished earlier and was discarded")]
    Finished(InstanceId),
    /// The instance did not decide before the deadline given to `propose`.
    #[error("consensus instance {0} did not decide before its deadline")]
    DeadlineExceeded(InstanceId),
    /// The engine refused the configuration.
    #[error("invalid consensus configuration: {0}")]
    Config(#[from] ConfigError),
    /// A cluster peer id does not inline its public key, so its signatures cannot be checked.
    #[error("cluster peer {index} ({peer}) does not inline its public key")]
    PeerKey {
        /// Node index.
        index: usize,
        /// The peer id.
        peer: PeerId,
    },
    /// This node's index is not in the cluster.
    #[error("own index {own} is not below the cluster size {nodes}")]
    OwnIndex {
        /// Given index.
        own: usize,
        /// Cluster size.
        nodes: usize,
    },
    /// The driver was shut down.
    #[error("consensus driver is shut down")]
    Shutdown,
}

/// Label set with a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Reason label.
    pub reason: String,
}

/// The driver's metric families (cheap to clone; clones share the series).
#[derive(Clone, Debug)]
pub struct ConsensusMetrics {
    /// `consensus_decided_total`: instances decided.
    pub decided: Counter,
    /// `consensus_decided_rounds`: round in which instances decided.
    pub decided_rounds: Histogram,
    /// `consensus_decide_duration_seconds`: time from `propose` to decision.
    pub decide_duration: Histogram,
    /// `consensus_round_timeouts_total`: round timers that expired.
    pub timeouts: Counter,
    /// `consensus_failed_total{reason}`: instances that stopped without a decision.
    pub failed: Family<ReasonLabel, Counter>,
    /// `consensus_dropped_messages_total{reason}`: messages ignored, by reason.
    pub dropped: Family<ReasonLabel, Counter>,
    /// `consensus_active_instances`: started instances that have not decided.
    pub active: Gauge,
}

impl Default for ConsensusMetrics {
    fn default() -> Self {
        Self {
            decided: Counter::default(),
            decided_rounds: Histogram::new([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0]),
            // 0.5 ms … ~16 s.
            decide_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            timeouts: Counter::default(),
            failed: Family::default(),
            dropped: Family::default(),
            active: Gauge::default(),
        }
    }
}

impl ConsensusMetrics {
    /// Creates the metric families and registers them into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "consensus_decided",
            "Consensus instances decided",
            m.decided.clone(),
        );
        registry.register(
            "consensus_decided_rounds",
            "Round in which consensus instances decided",
            m.decided_rounds.clone(),
        );
        registry.register(
            "consensus_decide_duration_seconds",
            "Time from proposing to deciding a consensus instance",
            m.decide_duration.clone(),
        );
        registry.register(
            "consensus_round_timeouts",
            "QBFT round timers that expired",
            m.timeouts.clone(),
        );
        registry.register(
            "consensus_failed",
            "Consensus instances stopped without a decision, by reason",
            m.failed.clone(),
        );
        registry.register(
            "consensus_dropped_messages",
            "QBFT messages ignored, by reason",
            m.dropped.clone(),
        );
        registry.register(
            "consensus_active_instances",
            "Started consensus instances that have not decided",
            m.active.clone(),
        );
        m
    }

    fn drop(&self, reason: &str) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    fn fail(&self, reason: &str) {
        self.failed
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Metric label of an engine [`DropReason`].
fn drop_label(reason: &DropReason) -> &'static str {
    match reason {
        DropReason::UnknownKind(_) => "unknown_kind",
        DropReason::UnknownSource(_) => "unknown_source",
        DropReason::OwnSource => "own_source",
        DropReason::WrongInstance(_) => "wrong_instance",
        DropReason::ZeroRound => "zero_round",
        DropReason::InvalidSignature(_) => "invalid_signature",
        DropReason::Malformed(_) => "ill_formed",
        DropReason::TooManyJustifications { .. } => "too_many_justifications",
        DropReason::Duplicate => "duplicate",
        DropReason::Equivocation => "equivocation",
        DropReason::OldRound { .. } => "old_round",
        DropReason::TooFarAhead { .. } => "too_far_ahead",
        DropReason::NotLeader { .. } => "not_leader",
        DropReason::Unjustified(_) => "unjustified",
        DropReason::MissingValue => "missing_value",
        DropReason::ValueDecode(_) => "value_decode",
        DropReason::InvalidValue => "invalid_value",
        DropReason::CompareRejected => "compare_rejected",
        DropReason::AlreadyDecided => "already_decided",
    }
}

/// Value-type-independent form of an engine [`Output`] (the decided value itself goes to the
/// waiting `propose` call through `notify`, once the driver has recorded the decision).
enum Action {
    Broadcast(QbftMsg),
    SendTo(u64, QbftMsg),
    Schedule {
        round: u64,
        after: Duration,
    },
    Extend {
        round: u64,
        by: Duration,
    },
    Decided {
        round: u64,
        elapsed: Duration,
        notify: Box<dyn FnOnce() + Send>,
    },
    Dropped {
        source: u64,
        reason: DropReason,
    },
}

/// An instance with its value type erased, so that one driver runs instances of any values.
trait Driven: Send {
    fn start(&mut self) -> Vec<Action>;
    fn handle_message(&mut self, msg: QbftMsg) -> Vec<Action>;
    fn handle_timeout(&mut self, round: u64) -> Vec<Action>;
    /// Ends the instance without a decision, telling the waiter why.
    fn fail(&mut self, err: ConsensusError);
    fn value_type(&self) -> &'static str;
}

type Waiter<V> = oneshot::Sender<Result<Decided<V>, ConsensusError>>;

struct Typed<V: Value> {
    inst: Instance<V>,
    input: Option<V>,
    waiter: Option<Waiter<V>>,
    created: Instant,
}

impl<V: Value + 'static> Typed<V> {
    fn convert(&mut self, outputs: Vec<Output<V>>) -> Vec<Action> {
        outputs
            .into_iter()
            .map(|o| match o {
                Output::Broadcast(m) => Action::Broadcast(m),
                Output::SendTo { peer, msg } => Action::SendTo(peer, msg),
                Output::ScheduleTimeout { round, after } => Action::Schedule { round, after },
                Output::ExtendTimeout { round, by } => Action::Extend { round, by },
                Output::Dropped { source, reason } => Action::Dropped { source, reason },
                Output::Decided {
                    value,
                    round,
                    commits,
                } => {
                    let elapsed = self.created.elapsed();
                    let waiter = self.waiter.take();
                    let decided = Decided {
                        instance: self.inst.id(),
                        value,
                        round,
                        commits,
                        elapsed,
                    };
                    Action::Decided {
                        round,
                        elapsed,
                        notify: Box::new(move || {
                            // The caller may have stopped waiting; the decision stands regardless.
                            if let Some(w) = waiter {
                                let _ = w.send(Ok(decided));
                            }
                        }),
                    }
                }
            })
            .collect()
    }
}

impl<V: Value + 'static> Driven for Typed<V> {
    fn start(&mut self) -> Vec<Action> {
        match self.input.take() {
            Some(input) => {
                let out = self.inst.start(input);
                self.convert(out)
            }
            None => Vec::new(),
        }
    }

    fn handle_message(&mut self, msg: QbftMsg) -> Vec<Action> {
        let out = self.inst.handle_message(msg);
        self.convert(out)
    }

    fn handle_timeout(&mut self, round: u64) -> Vec<Action> {
        let out = self.inst.handle_timeout(round);
        self.convert(out)
    }

    fn fail(&mut self, err: ConsensusError) {
        if let Some(w) = self.waiter.take() {
            let _ = w.send(Err(err));
        }
    }

    fn value_type(&self) -> &'static str {
        type_name::<V>()
    }
}

enum Command {
    Start {
        id: InstanceId,
        inst: Box<dyn Driven>,
        deadline: Instant,
    },
}

struct Inner {
    own: usize,
    engine: qbft::Config,
    cmd_tx: mpsc::Sender<Command>,
    stop_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to the consensus driver task (cheap to clone). See the [module docs](self).
///
/// The task stops on [`Consensus::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct Consensus {
    inner: Arc<Inner>,
}

impl fmt::Debug for Consensus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consensus")
            .field("own", &self.inner.own)
            .field("nodes", &self.inner.engine.nodes)
            .finish_non_exhaustive()
    }
}

impl Consensus {
    /// Spawns the driver for the node owning `key` on `network`, consuming the QBFT messages of
    /// `inbound` (the [`Protocol::Qbft`] stream of a [`crate::p2p::router`]). The cluster and
    /// this node's index are the network's; messages are signed with `key` and verified against
    /// the cluster's peer ids. Must be called within a tokio runtime.
    pub fn new(
        network: NetworkHandle,
        inbound: mpsc::Receiver<Inbound>,
        key: Keypair,
        config: DriverConfig,
        metrics: ConsensusMetrics,
    ) -> Result<Self, ConsensusError> {
        let own = network.index();
        let verifier = P2pVerifier::new(network.peers())?;
        let nodes = network.nodes();
        Self::with_transport(
            Arc::new(network),
            inbound,
            own,
            nodes,
            Arc::new(P2pSigner::new(key)),
            Arc::new(verifier),
            config,
            metrics,
        )
    }

    /// Spawns the driver over any [`Transport`] with any signature scheme: node `own` of
    /// `nodes`. Must be called within a tokio runtime.
    #[allow(clippy::too_many_arguments)]
    pub fn with_transport(
        transport: Arc<dyn Transport>,
        inbound: mpsc::Receiver<Inbound>,
        own: usize,
        nodes: usize,
        signer: Arc<dyn Signer>,
        verifier: Arc<dyn Verifier>,
        config: DriverConfig,
        metrics: ConsensusMetrics,
    ) -> Result<Self, ConsensusError> {
        if own >= nodes {
            return Err(ConsensusError::OwnIndex { own, nodes });
        }
        let mut engine =
            qbft::Config::new(nodes as u64, signer, verifier).with_timer(config.timer.clone());
        engine.max_future_rounds = config.max_future_rounds;
        engine.max_decided_replies = config.max_decided_replies;
        if engine.nodes > qbft::MAX_NODES {
            return Err(ConfigError::ClusterSize(engine.nodes).into());
        }
        if engine.max_future_rounds == 0 {
            return Err(ConfigError::FutureRounds.into());
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue.max(1));
        let (stop_tx, stop_rx) = watch::channel(false);
        let driver = Driver::new(own, transport, metrics, config);
        let task = tokio::spawn(driver.run(cmd_rx, inbound, stop_rx));
        Ok(Self {
            inner: Arc::new(Inner {
                own,
                engine,
                cmd_tx,
                stop_tx,
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// This node's index.
    pub fn own_index(&self) -> usize {
        self.inner.own
    }

    /// Runs consensus instance `instance` with this node's input `value`, checking proposals
    /// with `policy`, and returns the decision, or [`ConsensusError::DeadlineExceeded`] if there
    /// is none by `deadline`.
    ///
    /// Dropping the returned future stops waiting but not the instance (see the
    /// [module docs](self)). Each instance can be proposed once per node.
    pub async fn propose<V, P>(
        &self,
        instance: InstanceId,
        value: V,
        policy: P,
        deadline: Instant,
    ) -> Result<Decided<V>, ConsensusError>
    where
        V: Value + 'static,
        P: ValuePolicy<V> + 'static,
    {
        if deadline <= Instant::now() {
            return Err(ConsensusError::DeadlineExceeded(instance));
        }
        let inst = Instance::new(
            self.inner.engine.clone(),
            instance,
            self.inner.own as u64,
            Box::new(policy),
        )?;
        let (tx, rx) = oneshot::channel();
        let typed = Typed {
            inst,
            input: Some(value),
            waiter: Some(tx),
            created: Instant::now(),
        };
        self.inner
            .cmd_tx
            .send(Command::Start {
                id: instance,
                inst: Box::new(typed),
                deadline,
            })
            .await
            .map_err(|_| ConsensusError::Shutdown)?;
        rx.await.unwrap_or(Err(ConsensusError::Shutdown))
    }

    /// Stops the driver task (pending `propose` calls fail with [`ConsensusError::Shutdown`])
    /// and waits for it. Idempotent.
    pub async fn shutdown(&self) {
        let _ = self.inner.stop_tx.send(true);
        crate::util::join_task(&self.inner.task, "consensus driver").await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TimerKind {
    Round(u64),
    Deadline,
}

type TimerKey = (Instant, u64);

enum State {
    Running {
        round_timer: Option<TimerKey>,
        deadline: TimerKey,
    },
    Decided {
        at: Instant,
    },
}

struct Slot {
    inst: Box<dyn Driven>,
    span: Span,
    state: State,
}

struct Buffered {
    first: Instant,
    msgs: Vec<QbftMsg>,
}

struct Driver {
    own: usize,
    transport: Arc<dyn Transport>,
    metrics: ConsensusMetrics,
    cfg: DriverConfig,
    instances: HashMap<InstanceId, Slot>,
    pending: HashMap<InstanceId, Buffered>,
    pending_total: usize,
    /// Instances forgotten (decided and retained, or failed), with the time they were.
    finished: HashMap<InstanceId, Instant>,
    timers: BTreeMap<TimerKey, (InstanceId, TimerKind)>,
    seq: u64,
}

impl Driver {
    /// A driver of node `own` without any instance yet.
    fn new(
        own: usize,
        transport: Arc<dyn Transport>,
        metrics: ConsensusMetrics,
        cfg: DriverConfig,
    ) -> Driver {
        Driver {
            own,
            transport,
            metrics,
            cfg,
            instances: HashMap::new(),
            pending: HashMap::new(),
            pending_total: 0,
            finished: HashMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
        }
    }

    async fn run(
        mut self,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut gc = tokio::time::interval(self.cfg.gc_interval.max(Duration::from_millis(10)));
        gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inbound_open = true;
        loop {
            let next_timer = self.timers.keys().next().map(|(t, _)| *t);
            tokio::select! {
                _ = stop.changed() => break,
                cmd = cmd_rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                m = inbound.recv(), if inbound_open => match m {
                    Some(m) => {
                        self.on_inbound(m);
                        // Drain what is already queued before polling the other sources.
                        for _ in 0..64 {
                            match inbound.try_recv() {
                                Ok(m) => self.on_inbound(m),
                                Err(_) => break,
                            }
                        }
                    }
                    None => inbound_open = false,
                },
                () = tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)),
                    if next_timer.is_some() => self.fire_timers(),
                _ = gc.tick() => self.gc(),
            }
        }
        for (_, mut slot) in self.instances.drain() {
            if matches!(slot.state, State::Running { .. }) {
                self.metrics.fail("shutdown");
                self.metrics.active.dec();
                slot.inst.fail(ConsensusError::Shutdown);
            }
        }
        debug!(own = self.own, "consensus driver stopped");
    }

    fn next_key(&mut self, at: Instant) -> TimerKey {
        self.seq += 1;
        (at, self.seq)
    }

    fn on_command(&mut self, cmd: Command) {
        let Command::Start {
            id,
            mut inst,
            deadline,
        } = cmd;
        if self.instances.contains_key(&id) {
            inst.fail(ConsensusError::AlreadyRunning(id));
            return;
        }
        if self.finished.contains_key(&id) {
            inst.fail(ConsensusError::Finished(id));
            return;
        }
        let span = info_span!("qbft", slot = id.slot, duty = id.duty);
        let deadline = self.next_key(deadline);
        self.timers.insert(deadline, (id, TimerKind::Deadline));
        debug!(parent: &span, value_type = inst.value_type(), "consensus instance started");
        self.metrics.active.inc();
        self.instances.insert(
            id,
            Slot {
                inst,
                span,
                state: State::Running {
                    round_timer: None,
                    deadline,
                },
            },
        );
        self.with_instance(id, |inst| inst.start());
        if let Some(buffered) = self.pending.remove(&id) {
            self.pending_total -= buffered.msgs.len();
            for msg in buffered.msgs {
                self.with_instance(id, |inst| inst.handle_message(msg));
            }
        }
    }

    fn on_inbound(&mut self, m: Inbound) {
        if m.protocol != Protocol::Qbft {
            self.metrics.drop("wrong_protocol");
            return;
        }
        let msg = match QbftMsg::decode(&m.payload) {
            Ok(msg) => msg,
            Err(e) => {
                self.metrics.drop("malformed");
                debug!(from = m.from, error = %e, "undecodable qbft message dropped");
                return;
            }
        };
        if msg.source() != m.from as u64 {
            self.metrics.drop("source_mismatch");
            debug!(
                from = m.from,
                source = msg.source(),
                "qbft message source is not its sender"
            );
            return;
        }
        let id = msg.msg.body.instance;
        if let Some(slot) = self.instances.get(&id) {
            // A decided instance only answers PRE-PREPAREs and ROUND-CHANGEs (with DECIDED);
            // skip verifying the signatures of the late votes it would ignore anyway.
            let answerable = matches!(msg.kind(), Some(MsgKind::PrePrepare | MsgKind::RoundChange));
            if matches!(slot.state, State::Decided { .. }) && !answerable {
                self.metrics.drop(drop_label(&DropReason::AlreadyDecided));
                return;
            }
            self.with_instance(id, |inst| inst.handle_message(msg));
        } else if self.finished.contains_key(&id) {
            self.metrics.drop("finished");
        } else {
            self.buffer(id, msg);
        }
    }

    fn buffer(&mut self, id: InstanceId, msg: QbftMsg) {
        if self.pending_total >= self.cfg.max_buffered_total {
            self.metrics.drop("buffer_full");
            debug!(%id, "qbft buffer full, message for an instance not started dropped");
            return;
        }
        let entry = self.pending.entry(id).or_insert_with(|| Buffered {
            first: Instant::now(),
            msgs: Vec::new(),
        });
        if entry.msgs.len() >= self.cfg.max_buffered_per_instance {
            self.metrics.drop("buffer_full");
            debug!(%id, "qbft instance buffer full, message dropped");
            return;
        }
        entry.msgs.push(msg);
        self.pending_total += 1;
    }

    /// Runs `f` on instance `id` (if present) inside its span and carries out the actions.
    fn with_instance(&mut self, id: InstanceId, f: impl FnOnce(&mut dyn Driven) -> Vec<Action>) {
        let Some(slot) = self.instances.get_mut(&id) else {
            return;
        };
        let span = slot.span.clone();
        let _entered = span.enter();
        let actions = f(slot.inst.as_mut());
        for action in actions {
            self.apply(id, action);
        }
    }

    fn apply(&mut self, id: InstanceId, action: Action) {
        match action {
            Action::Broadcast(msg) => {
                if let Err(e) = self.transport.broadcast(msg.encode()) {
                    debug!(error = %e, kind = ?msg.kind(), "qbft broadcast not queued");
                }
            }
            Action::SendTo(peer, msg) => {
                let peer = usize::try_from(peer).unwrap_or(usize::MAX);
                if let Err(e) = self.transport.send(peer, msg.encode()) {
                    debug!(peer, error = %e, kind = ?msg.kind(), "qbft message not queued");
                }
            }
            Action::Schedule { round, after } => {
                let key = self.next_key(Instant::now() + after);
                let Some(Slot {
                    state: State::Running { round_timer, .. },
                    ..
                }) = self.instances.get_mut(&id)
                else {
                    return;
                };
                if let Some(old) = round_timer.replace(key) {
                    self.timers.remove(&old);
                }
                self.timers.insert(key, (id, TimerKind::Round(round)));
            }
            Action::Extend { round, by } => {
                let Some(Slot {
                    state:
                        State::Running {
                            round_timer: Some(key),
                            ..
                        },
                    ..
                }) = self.instances.get(&id)
                else {
                    return;
                };
                let key = *key;
                if self.timers.get(&key) != Some(&(id, TimerKind::Round(round))) {
                    return;
                }
                self.timers.remove(&key);
                let new = self.next_key(key.0 + by);
                if let Some(Slot {
                    state: State::Running { round_timer, .. },
                    ..
                }) = self.instances.get_mut(&id)
                {
                    *round_timer = Some(new);
                }
                self.timers.insert(new, (id, TimerKind::Round(round)));
            }
            Action::Decided {
                round,
                elapsed,
                notify,
            } => {
                let Some(slot) = self.instances.get_mut(&id) else {
                    notify();
                    return;
                };
                if let State::Running {
                    round_timer,
                    deadline,
                } = &slot.state
                {
                    if let Some(t) = round_timer {
                        self.timers.remove(t);
                    }
                    self.timers.remove(deadline);
                    self.metrics.active.dec();
                }
                slot.state = State::Decided { at: Instant::now() };
                self.metrics.decided.inc();
                self.metrics.decided_rounds.observe(round as f64);
                self.metrics.decide_duration.observe(elapsed.as_secs_f64());
                debug!(round, ?elapsed, "consensus decided");
                // After the bookkeeping: whoever waits sees the metrics and state it implies.
                notify();
            }
            Action::Dropped { source, reason } => {
                self.metrics.drop(drop_label(&reason));
                debug!(source, %reason, "qbft message dropped");
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (id, kind) = entry.remove();
            match kind {
                TimerKind::Round(round) => {
                    if let Some(Slot {
                        state: State::Running { round_timer, .. },
                        span,
                        ..
                    }) = self.instances.get_mut(&id)
                    {
                        *round_timer = None;
                        // A late duty's first clue: which instance changed round, and when.
                        info!(parent: &*span, round, "consensus round timed out");
                    }
                    self.metrics.timeouts.inc();
                    self.with_instance(id, |inst| inst.handle_timeout(round));
                }
                TimerKind::Deadline => self.expire(id),
            }
        }
    }

    /// Stops a running instance whose deadline passed.
    fn expire(&mut self, id: InstanceId) {
        let Some(mut slot) = self.instances.remove(&id) else {
            return;
        };
        if let State::Running { round_timer, .. } = slot.state {
            if let Some(t) = round_timer {
                self.timers.remove(&t);
            }
            self.metrics.active.dec();
            self.metrics.fail("deadline");
            debug!(parent: &slot.span, "consensus instance reached its deadline undecided");
            slot.inst.fail(ConsensusError::DeadlineExceeded(id));
        }
        self.finished.insert(id, Instant::now());
    }

    fn gc(&mut self) {
        let now = Instant::now();
        let retention = self.cfg.retention;
        let expired: Vec<InstanceId> = self
            .instances
            .iter()
            .filter_map(|(id, slot)| match slot.state {
                State::Decided { at } if now.duration_since(at) >= retention => Some(*id),
                _ => None,
            })
            .collect();
        for id in expired {
            self.instances.remove(&id);
            self.finished.insert(id, now);
        }
        self.finished
            .retain(|_, at| now.duration_since(*at) < retention);
        let ttl = self.cfg.buffer_ttl;
        let mut dropped = 0;
        self.pending.retain(|_, b| {
            let keep = now.duration_since(b.first) < ttl;
            if !keep {
                dropped += b.msgs.len();
            }
            keep
        });
        if dropped > 0 {
            self.pending_total -= dropped;
            self.metrics
                .dropped
                .get_or_create(&ReasonLabel {
                    reason: "buffer_expired".to_owned(),
                })
                .inc_by(dropped as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::msg::{MsgBody, ZERO_HASH};

    /// Transport of a driver that is only fed messages for instances it has not started: it
    /// must never send anything.
    struct Silent;

    impl Transport for Silent {
        fn broadcast(&self, _: Vec<u8>) -> Result<(), SendError> {
            panic!("nothing to broadcast before an instance starts")
        }
        fn send(&self, _: usize, _: Vec<u8>) -> Result<(), SendError> {
            panic!("nothing to send before an instance starts")
        }
    }

    fn driver(cfg: DriverConfig) -> Driver {
        Driver::new(0, Arc::new(Silent), ConsensusMetrics::default(), cfg)
    }

    fn inbound(from: usize, slot: u64) -> Inbound {
        let msg = QbftMsg {
            msg: SignedMsg {
                body: MsgBody {
                    kind: MsgKind::Prepare.code(),
                    instance: InstanceId { slot, duty: 1 },
                    source: from as u64,
                    round: 1,
                    value_hash: [7; 32],
                    prepared_round: 0,
                    prepared_value_hash: ZERO_HASH,
                },
                signature: vec![1; 64],
            },
            justification: vec![],
            values: vec![],
        };
        Inbound {
            from,
            protocol: Protocol::Qbft,
            payload: msg.encode(),
        }
    }

    fn dropped(d: &Driver, reason: &str) -> u64 {
        d.metrics
            .dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .get()
    }

    #[tokio::test]
    async fn buffers_are_bounded_and_expire() {
        let mut d = driver(DriverConfig {
            max_buffered_per_instance: 2,
            max_buffered_total: 3,
            ..DriverConfig::default()
        });
        for from in 1..=3 {
            d.on_inbound(inbound(from, 10));
        }
        assert_eq!(d.pending_total, 2, "per-instance bound");
        assert_eq!(dropped(&d, "buffer_full"), 1);
        d.on_inbound(inbound(1, 11));
        d.on_inbound(inbound(2, 11));
        assert_eq!(d.pending_total, 3, "total bound");
        assert_eq!(dropped(&d, "buffer_full"), 2);

        // Bad input is dropped before buffering.
        d.on_inbound(Inbound {
            from: 1,
            protocol: Protocol::Qbft,
            payload: vec![0xff; 9],
        });
        assert_eq!(dropped(&d, "malformed"), 1);
        let mut forged = inbound(2, 12);
        forged.from = 3;
        d.on_inbound(forged);
        assert_eq!(dropped(&d, "source_mismatch"), 1);
        assert_eq!(d.pending_total, 3);

        // Messages for recently finished instances are not buffered.
        d.finished
            .insert(InstanceId { slot: 13, duty: 1 }, Instant::now());
        d.on_inbound(inbound(1, 13));
        assert_eq!(dropped(&d, "finished"), 1);

        // Expired buffers are released by the garbage collection.
        d.cfg.buffer_ttl = Duration::ZERO;
        d.gc();
        assert_eq!(d.pending_total, 0);
        assert!(d.pending.is_empty());
        assert_eq!(dropped(&d, "buffer_expired"), 3);
        // The finished marker outlives the (default) retention window only.
        assert!(!d.finished.is_empty());
        d.cfg.retention = Duration::ZERO;
        d.gc();
        assert!(d.finished.is_empty());
    }

    #[test]
    fn p2p_signatures_verify_per_node_and_domain() {
        let keys: Vec<Keypair> = (0..2).map(|_| p2p::key::generate()).collect();
        let peers: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
        let verifier = P2pVerifier::new(&peers).unwrap();
        let sig = P2pSigner::new(keys[1].clone()).sign(b"body");
        assert!(verifier.verify(1, b"body", &sig));
        assert!(
            !verifier.verify(0, b"body", &sig),
            "signed by node 1, not 0"
        );
        assert!(!verifier.verify(2, b"body", &sig), "unknown node");
        assert!(!verifier.verify(1, b"bodY", &sig));
        // Bound to the QBFT domain: a signature under another domain does not verify.
        let other = p2p::sign_bytes(&keys[1], p2p::ENVELOPE_DOMAIN, b"body");
        assert!(!verifier.verify(1, b"body", &other));
    }

    #[test]
    fn bytes_value_roundtrip_and_hash() {
        let v = BytesValue(b"attestation".to_vec());
        assert_eq!(BytesValue::from_bytes(&v.to_bytes()).unwrap(), v);
        assert_eq!(
            v.value_hash(),
            <[u8; 32]>::from(Sha256::digest(b"attestation"))
        );
        assert_ne!(v.value_hash(), BytesValue(vec![]).value_hash());
    }
}
