//! The swarm task and its handle. See the [module documentation](super) for the behaviour.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    io,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use futures::StreamExt;
use libp2p::{
    allow_block_list::{self, AllowedPeers, NotAllowed},
    connection_limits::{self, ConnectionLimits},
    core::{
        transport::{Transport as _, TransportError},
        upgrade::Version,
    },
    dns,
    identity::{Keypair, PeerId, PublicKey},
    noise, ping,
    request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport},
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, DialError, ListenError, NetworkBehaviour, SwarmEvent,
    },
    tcp, yamux, Multiaddr, StreamProtocol, Swarm,
};
use rand::Rng;
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    codec::{Ack, Frame, FrameCodec},
    envelope::{public_key, Envelope, Protocol},
    metrics::{Metrics, PeerLabel},
};

/// Upper bound of the SSZ envelope around a payload: 18 fixed bytes plus a signature of at most
/// 72 bytes (DER secp256k1; ed25519 signatures are 64 bytes).
pub const ENVELOPE_OVERHEAD: usize = 18 + 72;

/// Resource limits and timings of the network.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted `/dvlab/qbft/1.0.0` request frame (SSZ envelope), in bytes.
    pub max_qbft_frame: usize,
    /// Largest accepted `/dvlab/parsig/2.0.0` request frame (SSZ envelope), in bytes.
    pub max_parsig_frame: usize,
    /// Largest accepted `/dvlab/dkg/1.0.0` request frame (SSZ envelope), in bytes.
    pub max_dkg_frame: usize,
    /// Capacity of the command queue from [`NetworkHandle`] to the swarm task.
    pub outbound_queue: usize,
    /// Capacity of the [`Inbound`] channel; messages arriving while it is full are dropped.
    pub inbound_queue: usize,
    /// Messages held per disconnected peer until it connects (oldest dropped first).
    pub pending_per_peer: usize,
    /// Held messages older than this are dropped instead of sent on reconnection.
    pub pending_ttl: Duration,
    /// Timeout of one request (send + ack).
    pub request_timeout: Duration,
    /// Concurrent request streams per protocol and connection.
    pub max_concurrent_streams: usize,
    /// First reconnection delay after a connection drops or a dial fails.
    pub backoff_initial: Duration,
    /// Cap of the exponentially growing reconnection delay.
    pub backoff_max: Duration,
    /// Interval of liveness pings.
    pub ping_interval: Duration,
    /// A connection without an answered ping for this long is dead: it is closed and the peer
    /// redialed. TCP alone notices a silently dropped path only after minutes of
    /// retransmission backoff, during which everything sent on it is stuck (and libp2p's ping
    /// reports a failure only on the second one, the second after a 10 s stream negotiation).
    pub ping_timeout: Duration,
    /// Bound of one dial (TCP connect + noise + yamux). The kernel's SYN retries would
    /// otherwise keep a dial started during a partition pending for up to two minutes.
    pub dial_timeout: Duration,
    /// Incoming connections that may be in the handshake at once.
    pub max_pending_incoming: u32,
    /// Established connections allowed per peer (both sides may dial, so at least 2).
    pub max_connections_per_peer: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_qbft_frame: 1 << 20,
            max_parsig_frame: 4 << 20,
            // A deal for 10,000 validators at threshold 43 of 64 is ~25 MiB.
            max_dkg_frame: 32 << 20,
            outbound_queue: 1024,
            inbound_queue: 4096,
            pending_per_peer: 256,
            pending_ttl: Duration::from_secs(12),
            request_timeout: Duration::from_secs(10),
            max_concurrent_streams: 256,
            backoff_initial: Duration::from_millis(250),
            // A cluster has a handful of peers: redialing a missing one every ≤ 2 s costs
            // nothing, and bounds how long a healed partition stays unnoticed.
            backoff_max: Duration::from_secs(2),
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(3),
            dial_timeout: Duration::from_secs(3),
            max_pending_incoming: 32,
            max_connections_per_peer: 3,
        }
    }
}

impl Limits {
    /// Largest request frame of `protocol`.
    pub fn max_frame(&self, protocol: Protocol) -> usize {
        match protocol {
            Protocol::Qbft => self.max_qbft_frame,
            Protocol::Parsig => self.max_parsig_frame,
            Protocol::Dkg => self.max_dkg_frame,
        }
    }

    /// Largest payload that fits a `protocol` frame whatever the signature length.
    pub fn max_payload(&self, protocol: Protocol) -> usize {
        self.max_frame(protocol).saturating_sub(ENVELOPE_OVERHEAD)
    }

    /// Reconnection delay before attempt `attempt` (0-based): `backoff_initial · 2^attempt`
    /// capped at `backoff_max`, then jittered uniformly into `[d/2, d]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.backoff_initial.saturating_mul(1u32 << attempt.min(31));
        let d = exp.min(self.backoff_max);
        let half = d / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    fn validate(&self) -> Result<()> {
        for p in Protocol::ALL {
            let max = self.max_frame(p);
            ensure!(
                max > ENVELOPE_OVERHEAD && max <= u32::MAX as usize,
                "p2p limits: {p} frame limit {max} must be in {}..={}",
                ENVELOPE_OVERHEAD + 1,
                u32::MAX
            );
        }
        ensure!(
            self.outbound_queue > 0 && self.inbound_queue > 0 && self.pending_per_peer > 0,
            "p2p limits: queue capacities must be positive"
        );
        ensure!(
            self.max_connections_per_peer >= 2,
            "p2p limits: max_connections_per_peer must be at least 2 (both sides dial)"
        );
        ensure!(
            !self.backoff_initial.is_zero() && self.backoff_initial <= self.backoff_max,
            "p2p limits: need 0 < backoff_initial <= backoff_max"
        );
        ensure!(
            !self.ping_interval.is_zero()
                && self.ping_interval < self.ping_timeout
                && !self.dial_timeout.is_zero(),
            "p2p limits: need 0 < ping_interval < ping_timeout and a positive dial_timeout"
        );
        Ok(())
    }
}

/// Configuration of a [`Network`].
#[derive(Clone)]
pub struct Config {
    /// The node's p2p identity (from the `p2p-key` file).
    pub key: Keypair,
    /// The cluster's peers in lock order; a node's index is its position. Must contain `key`'s
    /// peer id. Only these peers may connect.
    pub peers: Vec<PeerId>,
    /// Addresses to listen on (`/ip4/127.0.0.1/tcp/0` picks a free port; see
    /// [`NetworkHandle::local_addrs`]).
    pub listen_addrs: Vec<Multiaddr>,
    /// Addresses of cluster peers to dial (a peer may appear several times). Peers without an
    /// address are not dialed; they are expected to dial this node.
    pub dial_addrs: Vec<(PeerId, Multiaddr)>,
    /// Metric families, from [`Metrics::new`].
    pub metrics: Metrics,
    /// Limits and timings.
    pub limits: Limits,
}

/// A verified message from a cluster node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// Sender's node index (this node's own index for loopback messages).
    pub from: usize,
    /// Protocol the message arrived on.
    pub protocol: Protocol,
    /// The application payload.
    pub payload: Vec<u8>,
}

/// Why a message could not be queued for sending.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The destination index is outside the cluster.
    #[error("node index {index} is not in the cluster of {nodes} nodes")]
    UnknownPeer {
        /// Requested index.
        index: usize,
        /// Cluster size.
        nodes: usize,
    },
    /// The payload does not fit the protocol's frame limit.
    #[error("{protocol} payload of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Protocol.
        protocol: Protocol,
        /// Payload size.
        size: usize,
        /// [`Limits::max_payload`].
        max: usize,
    },
    /// The outbound queue is full (the swarm task is falling behind).
    #[error("p2p outbound queue is full")]
    QueueFull,
    /// The network was shut down.
    #[error("p2p network is shut down")]
    Closed,
}

enum Command {
    Send {
        to: usize,
        protocol: Protocol,
        frame: Vec<u8>,
    },
    Broadcast {
        protocol: Protocol,
        frame: Vec<u8>,
    },
    Loopback {
        protocol: Protocol,
        payload: Vec<u8>,
    },
    /// Answer once nothing queued before this command is waiting for an acknowledgement.
    Flush(oneshot::Sender<()>),
}

#[derive(Default)]
struct Shared {
    connected: BTreeSet<usize>,
    lost: BTreeMap<usize, LostPeer>,
    listen_addrs: Vec<Multiaddr>,
}

/// A cluster peer that was connected and has no connection any more
/// ([`NetworkHandle::lost_peers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LostPeer {
    /// When its last connection closed.
    pub since: Instant,
    /// A redial since then was refused: nothing listens at its address any more (its process
    /// exited, or was restarted and does not listen yet).
    pub refused: bool,
}

struct Inner {
    key: Keypair,
    index: usize,
    peers: Vec<PeerId>,
    limits: Limits,
    metrics: Metrics,
    cmd_tx: mpsc::Sender<Command>,
    shared: Arc<Mutex<Shared>>,
    shutdown_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Cheaply cloneable handle to a running [`Network`]. The network stops when
/// [`shutdown`](Self::shutdown) is called or the last handle is dropped.
#[derive(Clone)]
pub struct NetworkHandle {
    inner: Arc<Inner>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The state is plain data updated in single assignments; a poisoned lock is still usable.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl NetworkHandle {
    /// This node's index in the cluster.
    pub fn index(&self) -> usize {
        self.inner.index
    }

    /// Number of cluster nodes (including this one).
    pub fn nodes(&self) -> usize {
        self.inner.peers.len()
    }

    /// The cluster peer ids in index order.
    pub fn peers(&self) -> &[PeerId] {
        &self.inner.peers
    }

    /// Largest payload accepted by [`send`](Self::send) / [`broadcast`](Self::broadcast).
    pub fn max_payload(&self, protocol: Protocol) -> usize {
        self.inner.limits.max_payload(protocol)
    }

    /// Queues `payload` for node `to`. Sending to this node's own index delivers the payload to
    /// the local [`Inbound`] channel (loopback) without touching the network.
    ///
    /// Delivery is fire-and-forget: an error here means the message was not queued; failures
    /// after queuing are counted in `p2p_send_failures_total{protocol,reason}` and logged. A
    /// message for a disconnected peer is held (bounded, [`Limits::pending_ttl`]) until it
    /// connects.
    pub fn send(&self, to: usize, protocol: Protocol, payload: Vec<u8>) -> Result<(), SendError> {
        let nodes = self.nodes();
        if to >= nodes {
            return Err(SendError::UnknownPeer { index: to, nodes });
        }
        self.check_size(protocol, &payload)?;
        let cmd = if to == self.inner.index {
            Command::Loopback { protocol, payload }
        } else {
            Command::Send {
                to,
                protocol,
                frame: self.seal(protocol, payload),
            }
        };
        self.enqueue(protocol, cmd)
    }

    /// Queues `payload` for every other cluster node (not this one; use
    /// [`send`](Self::send) to the own index for a local copy). Signs once. Same delivery
    /// semantics as [`send`](Self::send).
    pub fn broadcast(&self, protocol: Protocol, payload: Vec<u8>) -> Result<(), SendError> {
        self.check_size(protocol, &payload)?;
        let frame = self.seal(protocol, payload);
        self.enqueue(protocol, Command::Broadcast { protocol, frame })
    }

    /// Indices of the cluster nodes with an open connection, ascending.
    pub fn connected_peers(&self) -> Vec<usize> {
        lock(&self.inner.shared).connected.iter().copied().collect()
    }

    /// The cluster nodes that were connected and are not any more (a peer that never
    /// connected is not listed; one that reconnects leaves the list).
    pub fn lost_peers(&self) -> BTreeMap<usize, LostPeer> {
        lock(&self.inner.shared).lost.clone()
    }

    /// The addresses the node actually listens on (with the real port when listening on 0).
    pub fn local_addrs(&self) -> Vec<Multiaddr> {
        lock(&self.inner.shared).listen_addrs.clone()
    }

    /// Waits until every message queued so far was acknowledged by its peer, failed for good or
    /// expired (at most `timeout`). Returns whether that happened in time. For a node about to
    /// stop that wants its last messages delivered (e.g. a DKG's final round).
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.inner.cmd_tx.try_send(Command::Flush(tx)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(())))
    }

    /// Stops the swarm task and waits until it has closed its listeners and connections.
    /// Idempotent; later sends fail with [`SendError::Closed`].
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown_tx.send(true);
        crate::util::join_task(&self.inner.task, "p2p").await;
    }

    fn check_size(&self, protocol: Protocol, payload: &[u8]) -> Result<(), SendError> {
        let max = self.max_payload(protocol);
        if payload.len() > max {
            self.inner
                .metrics
                .send_failed(protocol.label(), "too_large");
            return Err(SendError::TooLarge {
                protocol,
                size: payload.len(),
                max,
            });
        }
        Ok(())
    }

    fn seal(&self, protocol: Protocol, payload: Vec<u8>) -> Vec<u8> {
        Envelope::signed(&self.inner.key, protocol, self.inner.index as u64, payload).encode()
    }

    fn enqueue(&self, protocol: Protocol, cmd: Command) -> Result<(), SendError> {
        if *self.inner.shutdown_tx.borrow() {
            return Err(SendError::Closed);
        }
        self.inner.cmd_tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.inner
                    .metrics
                    .send_failed(protocol.label(), "outbound_queue_full");
                warn!(%protocol, "p2p outbound queue full, message dropped");
                SendError::QueueFull
            }
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<AllowedPeers>,
    conn_limits: connection_limits::Behaviour,
    ping: ping::Behaviour,
    qbft: request_response::Behaviour<FrameCodec>,
    parsig: request_response::Behaviour<FrameCodec>,
    dkg: request_response::Behaviour<FrameCodec>,
}

impl Behaviour {
    fn rr(&mut self, protocol: Protocol) -> &mut request_response::Behaviour<FrameCodec> {
        match protocol {
            Protocol::Qbft => &mut self.qbft,
            Protocol::Parsig => &mut self.parsig,
            Protocol::Dkg => &mut self.dkg,
        }
    }
}

struct Pending {
    queued: Instant,
    protocol: Protocol,
    frame: Vec<u8>,
    /// Times handed to a connection so far.
    sends: u8,
}

/// Most times one message is handed to a connection: a request failing fast (e.g. streams
/// refused by the peer) must not loop until `pending_ttl`.
const MAX_SENDS: u8 = 3;

/// A request handed to a connection and not yet acknowledged: kept so that a request lost with
/// its connection is sent again once the peer is back (within `pending_ttl` of `queued`).
struct InFlight {
    to: usize,
    msg: Pending,
}

struct PeerSlot {
    id: PeerId,
    key: PublicKey,
    label: PeerLabel,
    addrs: Vec<Multiaddr>,
    connected: bool,
    attempt: u32,
    next_dial: Option<Instant>,
    pending: VecDeque<Pending>,
}

/// The libp2p cluster network: a tokio task owning the swarm. See the module docs.
pub struct Network {
    swarm: Swarm<Behaviour>,
    index: usize,
    slots: Vec<PeerSlot>,
    by_id: HashMap<PeerId, usize>,
    inbound_tx: mpsc::Sender<Inbound>,
    metrics: Metrics,
    limits: Limits,
    shared: Arc<Mutex<Shared>>,
    in_flight: HashMap<(Protocol, OutboundRequestId), InFlight>,
    /// Open cluster connections and their liveness.
    live: HashMap<ConnectionId, Liveness>,
    /// [`Command::Flush`] callers waiting for `in_flight` and the pending queues to empty.
    flush_waiters: Vec<oneshot::Sender<()>>,
}

struct Liveness {
    peer: usize,
    /// Last answered ping, or the establishment.
    last_ok: Instant,
    /// Closed for silence; waiting for the close to complete.
    closing: bool,
}

impl Network {
    /// Validates `config`, binds the listeners, dials the configured peers and spawns the
    /// swarm task. Returns once every listener has a bound address.
    pub async fn start(config: Config) -> Result<(NetworkHandle, mpsc::Receiver<Inbound>)> {
        let Config {
            key,
            peers,
            listen_addrs,
            dial_addrs,
            metrics,
            limits,
        } = config;
        limits.validate()?;
        ensure!(
            !peers.is_empty(),
            "p2p config: the cluster peer list is empty"
        );
        let mut seen = HashSet::new();
        for p in &peers {
            ensure!(seen.insert(*p), "p2p config: peer {p} is listed twice");
        }
        let local = key.public().to_peer_id();
        let index = peers
            .iter()
            .position(|p| *p == local)
            .ok_or_else(|| anyhow!("p2p config: own peer id {local} is not in the cluster"))?;
        let by_id: HashMap<PeerId, usize> =
            peers.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let mut slots = peers
            .iter()
            .map(|p| {
                let key = public_key(p).ok_or_else(|| {
                    anyhow!("p2p config: peer id {p} does not inline its public key")
                })?;
                Ok(PeerSlot {
                    id: *p,
                    key,
                    label: PeerLabel {
                        peer: p.to_string(),
                    },
                    addrs: Vec::new(),
                    connected: false,
                    attempt: 0,
                    next_dial: None,
                    pending: VecDeque::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for (p, addr) in dial_addrs {
            let i = *by_id
                .get(&p)
                .ok_or_else(|| anyhow!("p2p config: dial address {addr} for unknown peer {p}"))?;
            ensure!(
                i != index,
                "p2p config: dial address {addr} is for this node itself"
            );
            if !slots[i].addrs.contains(&addr) {
                slots[i].addrs.push(addr);
            }
        }
        for (i, s) in slots.iter().enumerate() {
            if i != index {
                metrics.peer_connected.get_or_create(&s.label).set(0);
            }
        }

        let swarm = build_swarm(&key, &peers, &limits, &metrics)?;
        let (inbound_tx, inbound_rx) = mpsc::channel(limits.inbound_queue);
        let (cmd_tx, cmd_rx) = mpsc::channel(limits.outbound_queue);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut net = Network {
            swarm,
            index,
            slots,
            by_id,
            inbound_tx,
            metrics: metrics.clone(),
            limits: limits.clone(),
            shared: shared.clone(),
            in_flight: HashMap::new(),
            live: HashMap::new(),
            flush_waiters: Vec::new(),
        };
        net.listen(&listen_addrs).await?;
        for i in 0..net.slots.len() {
            if !net.slots[i].addrs.is_empty() {
                net.dial(i, false);
            }
        }
        info!(index, peer = %local, nodes = peers.len(), addrs = ?lock(&shared).listen_addrs, "p2p network started");
        let task = tokio::spawn(net.run(cmd_rx, shutdown_rx));
        let handle = NetworkHandle {
            inner: Arc::new(Inner {
                key,
                index,
                peers,
                limits,
                metrics,
                cmd_tx,
                shared,
                shutdown_tx,
                task: Mutex::new(Some(task)),
            }),
        };
        Ok((handle, inbound_rx))
    }

    async fn listen(&mut self, addrs: &[Multiaddr]) -> Result<()> {
        let mut waiting = HashSet::new();
        for addr in addrs {
            let id = self
                .swarm
                .listen_on(addr.clone())
                .with_context(|| format!("p2p: cannot listen on {addr}"))?;
            waiting.insert(id);
        }
        let wait = async {
            while !waiting.is_empty() {
                let ev = self.swarm.select_next_some().await;
                match &ev {
                    SwarmEvent::NewListenAddr { listener_id, .. } => {
                        waiting.remove(listener_id);
                    }
                    SwarmEvent::ListenerClosed {
                        listener_id,
                        reason,
                        ..
                    } if waiting.contains(listener_id) => {
                        bail!("p2p: listener closed during startup: {reason:?}");
                    }
                    _ => {}
                }
                self.on_swarm_event(ev);
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| anyhow!("p2p: timed out waiting for listen addresses {addrs:?}"))?
    }

    async fn run(mut self, mut cmd_rx: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        let mut liveness =
            tokio::time::interval((self.limits.ping_timeout / 4).max(Duration::from_millis(20)));
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_dial = self.slots.iter().filter_map(|s| s.next_dial).min();
            let redial = async {
                match next_dial {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                cmd = cmd_rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                () = redial => self.dial_due(),
                _ = liveness.tick() => self.close_silent(),
            }
            if !self.flush_waiters.is_empty()
                && self.in_flight.is_empty()
                && self.slots.iter().all(|s| s.pending.is_empty())
            {
                for w in self.flush_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        }
        info!(index = self.index, "p2p network stopped");
        for (i, s) in self.slots.iter().enumerate() {
            if i != self.index {
                self.metrics.peer_connected.get_or_create(&s.label).set(0);
            }
        }
        let mut shared = lock(&self.shared);
        shared.connected.clear();
        shared.lost.clear();
        shared.listen_addrs.clear();
        // Dropping `self` drops the swarm: listeners close now, connections right after.
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Send {
                to,
                protocol,
                frame,
            } => self.send_frame(to, protocol, frame),
            Command::Broadcast { protocol, frame } => {
                for i in 0..self.slots.len() {
                    if i != self.index {
                        self.send_frame(i, protocol, frame.clone());
                    }
                }
            }
            Command::Loopback { protocol, payload } => {
                self.deliver(self.index, protocol, payload);
            }
            Command::Flush(tx) => self.flush_waiters.push(tx),
        }
    }

    fn send_frame(&mut self, to: usize, protocol: Protocol, frame: Vec<u8>) {
        self.send_pending(
            to,
            Pending {
                queued: Instant::now(),
                protocol,
                frame,
                sends: 0,
            },
        );
    }

    /// Sends `msg` if the peer is connected (remembering it until acknowledged), else holds it
    /// until the peer connects. `msg.queued` is when it was first handed to the network: a
    /// message re-sent after a lost connection keeps its age, so `pending_ttl` bounds its life.
    fn send_pending(&mut self, to: usize, mut msg: Pending) {
        let slot = &mut self.slots[to];
        if slot.connected {
            msg.sends += 1;
            let id = self
                .swarm
                .behaviour_mut()
                .rr(msg.protocol)
                .send_request(&slot.id, Frame::Body(msg.frame.clone()));
            self.metrics.sent(msg.protocol.label());
            self.in_flight
                .insert((msg.protocol, id), InFlight { to, msg });
            return;
        }
        let now = Instant::now();
        while slot
            .pending
            .front()
            .is_some_and(|p| now.duration_since(p.queued) > self.limits.pending_ttl)
        {
            if let Some(p) = slot.pending.pop_front() {
                self.metrics.send_failed(p.protocol.label(), "expired");
            }
        }
        if slot.pending.len() >= self.limits.pending_per_peer {
            if let Some(p) = slot.pending.pop_front() {
                self.metrics.send_failed(p.protocol.label(), "pending_full");
                debug!(peer = to, protocol = %p.protocol, "pending queue full, oldest message dropped");
            }
        }
        slot.pending.push_back(msg);
    }

    fn flush_pending(&mut self, i: usize) {
        let now = Instant::now();
        let pending = std::mem::take(&mut self.slots[i].pending);
        for p in pending {
            if now.duration_since(p.queued) > self.limits.pending_ttl {
                self.metrics.send_failed(p.protocol.label(), "expired");
            } else {
                self.send_pending(i, p);
            }
        }
    }

    fn deliver(&mut self, from: usize, protocol: Protocol, payload: Vec<u8>) -> bool {
        let msg = Inbound {
            from,
            protocol,
            payload,
        };
        match self.inbound_tx.try_send(msg) {
            Ok(()) => {
                self.metrics.received(protocol.label());
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.dropped(protocol.label(), "inbound_queue_full");
                warn!(from, %protocol, "p2p inbound queue full, message dropped");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.dropped(protocol.label(), "receiver_closed");
                debug!(from, %protocol, "p2p inbound receiver closed, message dropped");
                false
            }
        }
    }

    fn on_request(&mut self, protocol: Protocol, peer: PeerId, frame: Frame) -> Ack {
        let frame = match frame {
            Frame::Body(b) => b,
            Frame::Invalid(e) => {
                self.metrics.dropped(protocol.label(), e.reason());
                debug!(%peer, %protocol, error = %e, "invalid frame dropped");
                return Ack::Rejected;
            }
        };
        let Some(&i) = self.by_id.get(&peer) else {
            self.metrics.dropped(protocol.label(), "unknown_peer");
            debug!(%peer, %protocol, "message from a peer outside the cluster dropped");
            return Ack::Rejected;
        };
        match Envelope::decode_verified(&frame, protocol, i, &self.slots[i].key) {
            Ok(env) => {
                if self.deliver(i, protocol, env.payload) {
                    Ack::Accepted
                } else {
                    Ack::Rejected
                }
            }
            Err(e) => {
                self.metrics.dropped(protocol.label(), e.reason());
                debug!(from = i, %protocol, error = %e, "invalid message dropped");
                Ack::Rejected
            }
        }
    }

    fn on_rr_event(&mut self, protocol: Protocol, ev: request_response::Event<Frame, Ack>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let ack = self.on_request(protocol, peer, request);
                // Fails only if the stream is already gone; the message was handled either way.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rr(protocol)
                    .send_response(channel, ack);
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                self.in_flight.remove(&(protocol, request_id));
                if response == Ack::Rejected {
                    self.metrics.send_failed(protocol.label(), "rejected");
                    debug!(%peer, %protocol, "peer rejected our message");
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let reason = match &error {
                    OutboundFailure::DialFailure => "dial_failure",
                    OutboundFailure::Timeout => "timeout",
                    OutboundFailure::ConnectionClosed => "connection_closed",
                    OutboundFailure::UnsupportedProtocols => "unsupported_protocol",
                    OutboundFailure::Io(_) => "io",
                };
                let sent = self.in_flight.remove(&(protocol, request_id));
                // Lost with its connection (or stuck on a dead one): send it again on the next
                // connection while it is young enough. Receivers treat a duplicate (the request
                // may have arrived without its ack) as the idempotent message it is.
                let retry = !matches!(error, OutboundFailure::UnsupportedProtocols);
                match sent {
                    Some(InFlight { to, msg })
                        if retry
                            && msg.sends < MAX_SENDS
                            && msg.queued.elapsed() <= self.limits.pending_ttl =>
                    {
                        self.metrics.resent(protocol.label());
                        debug!(%peer, %protocol, %error, "p2p send failed, message will be sent again");
                        self.send_pending(to, msg);
                    }
                    _ => {
                        self.metrics.send_failed(protocol.label(), reason);
                        debug!(%peer, %protocol, %error, "p2p send failed");
                    }
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %protocol, %error, "inbound request stream failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Qbft(ev)) => self.on_rr_event(Protocol::Qbft, ev),
            SwarmEvent::Behaviour(BehaviourEvent::Parsig(ev)) => {
                self.on_rr_event(Protocol::Parsig, ev)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dkg(ev)) => self.on_rr_event(Protocol::Dkg, ev),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result,
            })) => {
                let Some(&i) = self.by_id.get(&peer) else {
                    return;
                };
                match result {
                    Ok(rtt) => {
                        self.metrics
                            .ping_rtt_seconds
                            .get_or_create(&self.slots[i].label)
                            .set(rtt.as_secs_f64());
                        if let Some(l) = self.live.get_mut(&connection) {
                            l.last_ok = Instant::now();
                        }
                    }
                    // A peer without ping (none in a dvnode cluster) is not a dead one.
                    Err(ping::Failure::Unsupported) => {
                        self.live.remove(&connection);
                    }
                    // Silence is judged by `close_silent`.
                    Err(error) => debug!(peer = i, %error, "ping failed"),
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Allow(never))
            | SwarmEvent::Behaviour(BehaviourEvent::ConnLimits(never)) => match never {},
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                let Some(&i) = self.by_id.get(&peer_id) else {
                    // The allow list denies these before establishment; close defensively.
                    self.metrics.rejected_peers.inc();
                    warn!(peer = %peer_id, "connection from a peer outside the cluster closed");
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                };
                self.live.insert(
                    connection_id,
                    Liveness {
                        peer: i,
                        last_ok: Instant::now(),
                        closing: false,
                    },
                );
                if num_established.get() == 1 {
                    let slot = &mut self.slots[i];
                    slot.connected = true;
                    slot.attempt = 0;
                    slot.next_dial = None;
                    self.metrics
                        .peer_connected
                        .get_or_create(&slot.label)
                        .set(1);
                    let mut shared = lock(&self.shared);
                    shared.connected.insert(i);
                    shared.lost.remove(&i);
                    drop(shared);
                    info!(peer = i, id = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    self.flush_pending(i);
                }
            }
            SwarmEvent::ConnectionClosed {
                connection_id,
                num_established,
                ..
            } if num_established > 0 => {
                self.live.remove(&connection_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                self.live.remove(&connection_id);
                if let Some(&i) = self.by_id.get(&peer_id) {
                    let slot = &mut self.slots[i];
                    slot.connected = false;
                    self.metrics
                        .peer_connected
                        .get_or_create(&slot.label)
                        .set(0);
                    let mut shared = lock(&self.shared);
                    shared.connected.remove(&i);
                    shared.lost.insert(
                        i,
                        LostPeer {
                            since: Instant::now(),
                            refused: false,
                        },
                    );
                    drop(shared);
                    info!(peer = i, id = %peer_id, cause = ?cause, "peer disconnected");
                    self.schedule_redial(i);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer_id),
                error,
                ..
            } => {
                if let Some(&i) = self.by_id.get(&peer_id) {
                    debug!(peer = i, %error, "dial failed");
                    if dial_refused(&error) {
                        if let Some(lost) = lock(&self.shared).lost.get_mut(&i) {
                            lost.refused = true;
                        }
                    }
                    self.schedule_redial(i);
                }
            }
            SwarmEvent::IncomingConnectionError {
                error: ListenError::Denied { cause },
                peer_id,
                send_back_addr,
                ..
            } => {
                if cause.downcast_ref::<NotAllowed>().is_some() {
                    self.metrics.rejected_peers.inc();
                    debug!(peer = ?peer_id, addr = %send_back_addr, "peer outside the cluster disconnected");
                } else {
                    debug!(peer = ?peer_id, addr = %send_back_addr, %cause, "incoming connection denied");
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "p2p listening");
                lock(&self.shared).listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                lock(&self.shared).listen_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "p2p listener error"),
            _ => {}
        }
    }

    /// Closes every connection whose pings have gone unanswered for `ping_timeout`. libp2p
    /// keeps such a connection; on a silently dropped path (partition, frozen peer) it would
    /// swallow messages for minutes. Its requests come back as failures and are re-sent, and
    /// the peer is redialed.
    fn close_silent(&mut self) {
        let now = Instant::now();
        for (&id, l) in self.live.iter_mut() {
            let silent = now.duration_since(l.last_ok);
            if l.closing || silent <= self.limits.ping_timeout {
                continue;
            }
            l.closing = true;
            let slot = &self.slots[l.peer];
            self.metrics
                .dead_connections
                .get_or_create(&slot.label)
                .inc();
            info!(
                peer = l.peer,
                ?silent,
                "no ping answered, closing the connection"
            );
            self.swarm.close_connection(id);
        }
    }

    fn dial(&mut self, i: usize, retry: bool) {
        let slot = &self.slots[i];
        if retry {
            self.metrics
                .reconnect_attempts
                .get_or_create(&slot.label)
                .inc();
        }
        let opts = DialOpts::peer_id(slot.id)
            .addresses(slot.addrs.clone())
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(error) => {
                debug!(peer = i, %error, "dial failed");
                self.schedule_redial(i);
            }
        }
    }

    fn schedule_redial(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if slot.connected || slot.addrs.is_empty() || slot.next_dial.is_some() {
            return;
        }
        let delay = self.limits.backoff(slot.attempt);
        slot.attempt = slot.attempt.saturating_add(1);
        slot.next_dial = Some(Instant::now() + delay);
        debug!(peer = i, attempt = slot.attempt, ?delay, "redial scheduled");
    }

    fn dial_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i].next_dial.is_some_and(|t| t <= now) {
                self.slots[i].next_dial = None;
                self.dial(i, true);
            }
        }
    }
}

fn build_swarm(
    key: &Keypair,
    peers: &[PeerId],
    limits: &Limits,
    metrics: &Metrics,
) -> Result<Swarm<Behaviour>> {
    let dial_timeout = limits.dial_timeout;
    let noise = noise::Config::new(key).context("p2p: noise configuration")?;
    let mut allow = allow_block_list::Behaviour::<AllowedPeers>::default();
    for p in peers {
        allow.allow_peer(*p);
    }
    let conn_limits = connection_limits::Behaviour::new(
        ConnectionLimits::default()
            .with_max_pending_incoming(Some(limits.max_pending_incoming))
            .with_max_established_per_peer(Some(limits.max_connections_per_peer)),
    );
    let rr_config = request_response::Config::default()
        .with_request_timeout(limits.request_timeout)
        .with_max_concurrent_streams(limits.max_concurrent_streams);
    let rr = |protocol: Protocol| {
        let (sent, received) = metrics.byte_counters(protocol.label());
        request_response::Behaviour::with_codec(
            FrameCodec::counted(limits.max_frame(protocol), sent, received),
            [(
                StreamProtocol::new(protocol.stream_protocol()),
                ProtocolSupport::Full,
            )],
            rr_config.clone(),
        )
    };
    let behaviour = Behaviour {
        allow,
        conn_limits,
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(limits.ping_interval)
                .with_timeout(limits.ping_timeout),
        ),
        qbft: rr(Protocol::Qbft),
        parsig: rr(Protocol::Parsig),
        dkg: rr(Protocol::Dkg),
    };
    // DNS resolves `/dns4/NAME/tcp/PORT` peer addresses (Kubernetes Service names) with the
    // system resolver (`/etc/resolv.conf`: search domains, hosts file) at every dial, so a peer
    // whose address changed (a restarted pod) is found again.
    let tcp = dns::tokio::Transport::system(tcp::tokio::Transport::new(
        tcp::Config::default().nodelay(true),
    ))
    .context("p2p: reading the system DNS configuration (/etc/resolv.conf)")?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        // What `with_tcp` + `with_dns` build, plus a bound on connection setup
        // (`Limits::dial_timeout`).
        .with_other_transport(move |_| {
            tcp.upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(dial_timeout)
        })
        .map_err(|e| anyhow!("p2p: building the TCP/DNS/noise/yamux transport: {e}"))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| anyhow!("p2p: building the behaviour: {e}"))?
        // Cluster connections are permanent; liveness is checked by ping. Every message is a
        // request on a new stream: with multistream-select V1 the dialer waits a round trip
        // for the protocol confirmation before writing, so one message would cost 1.5 RTT.
        // Both ends are dvnodes speaking the protocol, so propose it and write at once (V1Lazy):
        // one QBFT step costs one one-way delay, which is what the round timers are sized for.
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(u64::MAX))
                .with_substream_upgrade_protocol_override(Version::V1Lazy)
        })
        .build();
    Ok(swarm)
}

/// Whether every address of a failed dial refused the connection (TCP RST to the SYN: the host
/// is up, nothing listens on the port).
fn dial_refused(error: &DialError) -> bool {
    match error {
        DialError::Transport(errors) => {
            !errors.is_empty()
                && errors.iter().all(|(_, e)| match e {
                    TransportError::Other(e) => refused(e),
                    TransportError::MultiaddrNotSupported(_) => false,
                })
        }
        _ => false,
    }
}

/// Whether `error` or an error it wraps is an [`io::ErrorKind::ConnectionRefused`] (the transport
/// stack — timeout, upgrade, DNS, TCP — wraps the TCP connect error).
fn refused(error: &io::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::ConnectionRefused {
                return true;
            }
            // An `io::Error` wrapping another error reports that error's source, not the error.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let limits = Limits {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            ..Limits::default()
        };
        for _ in 0..50 {
            let d0 = limits.backoff(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = limits.backoff(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            for attempt in [5, 31, 32, u32::MAX] {
                let d = limits.backoff(attempt);
                assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
            }
        }
        let spread: HashSet<Duration> = (0..20).map(|_| limits.backoff(4)).collect();
        assert!(spread.len() > 1, "backoff is not jittered");
    }

    fn config(key: &Keypair, peers: Vec<PeerId>) -> Config {
        Config {
            key: key.clone(),
            peers,
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            dial_addrs: Vec::new(),
            metrics: Metrics::default(),
            limits: Limits::default(),
        }
    }

    async fn start_err(cfg: Config) -> String {
        match Network::start(cfg).await {
            Ok(_) => panic!("config accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[tokio::test]
    async fn invalid_configs_are_refused() {
        let key = Keypair::generate_secp256k1();
        let me = key.public().to_peer_id();
        let other = Keypair::generate_secp256k1().public().to_peer_id();

        let err = start_err(config(&key, vec![other])).await;
        assert!(err.contains("own peer id"), "{err}");
        let err = start_err(config(&key, vec![me, other, me])).await;
        assert!(err.contains("listed twice"), "{err}");

        let mut cfg = config(&key, vec![me, other]);
        let stranger = Keypair::generate_secp256k1().public().to_peer_id();
        cfg.dial_addrs = vec![(stranger, "/ip4/127.0.0.1/tcp/1".parse().unwrap())];
        let err = start_err(cfg).await;
        assert!(err.contains("unknown peer"), "{err}");

        let mut cfg = config(&key, vec![me, other]);
        cfg.dial_addrs = vec![(me, "/ip4/127.0.0.1/tcp/1".parse().unwrap())];
        let err = start_err(cfg).await;
        assert!(err.contains("this node itself"), "{err}");

        let mut cfg = config(&key, vec![me, other]);
        cfg.limits.max_qbft_frame = 10;
        let err = start_err(cfg).await;
        assert!(err.contains("qbft frame limit"), "{err}");

        let mut cfg = config(&key, vec![me, other]);
        cfg.listen_addrs = vec!["/ip4/127.0.0.1/udp/1".parse().unwrap()];
        let err = start_err(cfg).await;
        assert!(err.contains("cannot listen"), "{err}");
    }

    #[tokio::test]
    async fn flush_waits_for_acknowledgements() {
        let a = Keypair::generate_secp256k1();
        let b = Keypair::generate_secp256k1();
        let peers = vec![a.public().to_peer_id(), b.public().to_peer_id()];
        let (hb, mut rx_b) = Network::start(config(&b, peers.clone())).await.unwrap();
        let mut cfg = config(&a, peers.clone());
        cfg.dial_addrs = vec![(peers[1], hb.local_addrs()[0].clone())];
        let (ha, _rx_a) = Network::start(cfg).await.unwrap();
        // Nothing queued: flushed at once.
        assert!(ha.flush(Duration::from_secs(1)).await);
        for i in 0..20u8 {
            ha.send(1, Protocol::Dkg, vec![i; 1000]).unwrap();
        }
        // Sent before the connection is up: held, then sent and acknowledged.
        assert!(ha.flush(Duration::from_secs(10)).await);
        for i in 0..20u8 {
            let m = rx_b
                .try_recv()
                .expect("acknowledged messages were delivered");
            assert_eq!(m.payload, vec![i; 1000]);
        }
        hb.shutdown().await;
        ha.send(1, Protocol::Dkg, vec![1]).unwrap();
        // The peer is gone: the message is held for it and the flush times out.
        assert!(!ha.flush(Duration::from_millis(300)).await);
        ha.shutdown().await;
        assert!(!ha.flush(Duration::from_millis(100)).await);
    }

    #[test]
    fn a_refused_connect_is_found_inside_the_transport_errors() {
        use libp2p::core::transport::timeout::TransportTimeoutError;
        // How the boxed TCP/DNS/noise/yamux stack wraps the TCP connect error.
        let tcp = io::Error::from(io::ErrorKind::ConnectionRefused);
        let dial = io::Error::other(TransportTimeoutError::Other(io::Error::other(tcp)));
        assert!(refused(&dial));
        let timeout = io::Error::other(TransportTimeoutError::<io::Error>::Timeout);
        assert!(!refused(&timeout));
        assert!(!refused(&io::Error::from(io::ErrorKind::ConnectionReset)));
    }

    #[tokio::test]
    async fn loopback_and_shutdown() {
        let key = Keypair::generate_secp256k1();
        let other = Keypair::generate_secp256k1().public().to_peer_id();
        let (handle, mut rx) = Network::start(config(&key, vec![other, key.public().to_peer_id()]))
            .await
            .unwrap();
        assert_eq!(handle.index(), 1);
        assert_eq!(handle.nodes(), 2);
        assert!(handle.local_addrs()[0]
            .to_string()
            .starts_with("/ip4/127.0.0.1/tcp/"));
        assert!(!handle.local_addrs()[0].to_string().ends_with("/tcp/0"));
        handle.send(1, Protocol::Parsig, b"me".to_vec()).unwrap();
        let m = rx.recv().await.unwrap();
        assert_eq!(
            m,
            Inbound {
                from: 1,
                protocol: Protocol::Parsig,
                payload: b"me".to_vec()
            }
        );
        handle.shutdown().await;
        handle.shutdown().await;
        assert!(handle.local_addrs().is_empty());
        assert_eq!(
            handle.send(1, Protocol::Qbft, vec![]),
            Err(SendError::Closed)
        );
        assert!(
            rx.recv().await.is_none(),
            "inbound channel closes on shutdown"
        );
    }
}
