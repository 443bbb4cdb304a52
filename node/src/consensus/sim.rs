//! Seeded deterministic discrete-event simulation of a cluster running the QBFT engine.
//!
//! Virtual time, one event queue ordered by (time, insertion sequence), and one
//! [`StdRng`] seeded from the run's seed drive everything, so a seed replays exactly. The
//! network carries encoded bytes (so the wire codec is exercised on every hop); before GST it
//! drops, duplicates and delays (hence reorders) messages at random, after GST it delivers every
//! message within a bounded delay. Nodes can crash (at a time or right after sending a given
//! message kind to only some peers) and restart as a fresh [`Instance`] with the same input.
//! Byzantine nodes run the honest engine internally and corrupt what it sends:
//! [`Behaviour::Equivocator`] sends conflicting proposals and votes to different peers and bogus
//! justifications; [`Behaviour::Garbage`] sends random bytes and ill-formed messages. Signatures
//! are HMAC-SHA256 with a per-node key ([`KeyedHashSigner`]): a node can only sign as itself.
//!
//! [`run`] executes a [`Scenario`]; [`check`] verifies agreement, validity and termination on the
//! resulting [`Outcome`].

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet, BinaryHeap},
    sync::Arc,
    time::Duration,
};

use hmac::{Hmac, Mac};
use rand::{rngs::StdRng, Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::{
    msg::{Hash, InstanceId, MsgKind, QbftMsg, SignedMsg, ZERO_HASH},
    qbft::{
        leader, max_faulty, quorum, verify_decision, Config, Instance, Output, Signer, Value,
        ValuePolicy, Verifier,
    },
    timer::LinearTimer,
};

/// Values at or above this are invalid under [`SimPolicy`].
pub const INVALID_VALUE_BASE: u64 = 1 << 40;

/// Valid values with this bit set are "stale": data fetched before the slot's block, as a node
/// whose clock runs ahead proposes it. [`SimPolicy`]'s compare hook is the proposal guard: a
/// node whose own input is fresh refuses a stale proposal (`decide::DutyPolicy` does the same
/// with attestation data voting for an older head).
pub const STALE_VALUE_BIT: u64 = 1 << 39;

impl SimValue {
    /// Whether the value is stale ([`STALE_VALUE_BIT`]).
    pub fn is_stale(&self) -> bool {
        self.0 & STALE_VALUE_BIT != 0
    }
}

/// Simulated value: a number, valid below [`INVALID_VALUE_BASE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimValue(pub u64);

impl Value for SimValue {
    fn value_hash(&self) -> Hash {
        Sha256::new()
            .chain_update(b"dvnode-sim-value")
            .chain_update(self.0.to_le_bytes())
            .finalize()
            .into()
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.0.to_le_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let arr: [u8; 8] = bytes
            .try_into()
            .map_err(|_| format!("sim value must be 8 bytes, got {}", bytes.len()))?;
        Ok(Self(u64::from_le_bytes(arr)))
    }
}

/// Validity predicate of the simulation: values below [`INVALID_VALUE_BASE`] are valid; the
/// compare hook (the proposal guard) refuses a stale leader value when one's own is fresh.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimPolicy;

impl ValuePolicy<SimValue> for SimPolicy {
    fn is_valid(&self, value: &SimValue) -> bool {
        value.0 < INVALID_VALUE_BASE
    }

    fn compare(&self, leader_value: &SimValue, own_value: &SimValue) -> bool {
        !leader_value.is_stale() || own_value.is_stale()
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Deterministic keyed-hash signer: HMAC-SHA256 under the node's own key.
#[derive(Clone)]
pub struct KeyedHashSigner {
    key: [u8; 32],
}

impl KeyedHashSigner {
    /// A signer holding one node's key.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }
}

impl Signer for KeyedHashSigner {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(msg);
        mac.finalize().into_bytes().to_vec()
    }
}

/// Verifier for [`KeyedHashSigner`] signatures (knows every node's key).
#[derive(Clone)]
pub struct KeyedHashVerifier {
    keys: Vec<[u8; 32]>,
}

impl KeyedHashVerifier {
    /// A verifier for nodes `0..keys.len()`.
    pub fn new(keys: Vec<[u8; 32]>) -> Self {
        Self { keys }
    }
}

impl Verifier for KeyedHashVerifier {
    fn verify(&self, source: u64, msg: &[u8], signature: &[u8]) -> bool {
        let Some(key) = usize::try_from(source).ok().and_then(|i| self.keys.get(i)) else {
            return false;
        };
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
        mac.update(msg);
        mac.verify_slice(signature).is_ok()
    }
}

/// Per-node keys derived from a seed.
pub fn sim_keys(n: usize, seed: u64) -> Vec<[u8; 32]> {
    (0..n as u64)
        .map(|i| {
            Sha256::new()
                .chain_update(b"dvnode-sim-key")
                .chain_update(seed.to_le_bytes())
                .chain_update(i.to_le_bytes())
                .finalize()
                .into()
        })
        .collect()
}

/// How a node behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Runs the engine faithfully.
    Honest,
    /// Byzantine: conflicting proposals/votes to different peers, bogus justifications, fake
    /// DECIDED and far-future ROUND-CHANGEs.
    Equivocator,
    /// Byzantine: random bytes, truncated/corrupted encodings and ill-formed messages.
    Garbage,
}

/// When a node crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashAt {
    /// At a virtual time, before anything else the simulation does at that time: a node whose
    /// crash time is at or before its start time never starts in this incarnation (so never
    /// sends a message).
    Time(Duration),
    /// While broadcasting its first message of `kind`: only `deliver_to` peers get it.
    AfterSending {
        /// Message kind that triggers the crash.
        kind: MsgKind,
        /// How many peers (chosen at random) receive that message.
        deliver_to: usize,
    },
}

/// A crash and optional restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashPlan {
    /// When the crash happens.
    pub at: CrashAt,
    /// Restart this long after the crash (`None`: stays down).
    pub restart_after: Option<Duration>,
}

/// One node of a scenario.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Behaviour.
    pub behaviour: Behaviour,
    /// Consensus input.
    pub input: SimValue,
    /// Optional crash.
    pub crash: Option<CrashPlan>,
    /// When the node starts its instance.
    pub start_at: Duration,
}

impl NodeSpec {
    /// An honest node with `input`, starting at time 0.
    pub fn honest(input: SimValue) -> Self {
        Self {
            behaviour: Behaviour::Honest,
            input,
            crash: None,
            start_at: Duration::ZERO,
        }
    }
}

/// Network model.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    /// Global stabilisation time: from then on no drops or duplicates, delays in
    /// `min_delay..=max_delay`.
    pub gst: Duration,
    /// Drop probability before GST.
    pub drop_prob: f64,
    /// Duplication probability before GST.
    pub dup_prob: f64,
    /// Maximum delay before GST (minimum is 0).
    pub max_delay_before_gst: Duration,
    /// Minimum delay after GST.
    pub min_delay: Duration,
    /// Maximum delay after GST.
    pub max_delay: Duration,
}

impl NetConfig {
    /// A synchronous network from time 0 (1–50 ms delays).
    pub fn synchronous() -> Self {
        Self {
            gst: Duration::ZERO,
            drop_prob: 0.0,
            dup_prob: 0.0,
            max_delay_before_gst: Duration::ZERO,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(50),
        }
    }
}

/// A simulation setup.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Consensus instance (determines leaders).
    pub instance: InstanceId,
    /// The nodes (index = node index).
    pub nodes: Vec<NodeSpec>,
    /// Network model.
    pub net: NetConfig,
    /// Round timers.
    pub timer: LinearTimer,
    /// Every honest node that is up must have decided this long after GST.
    pub deadline_after_gst: Duration,
}

/// One decision by one node incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    /// Node index.
    pub node: usize,
    /// Incarnation (0 = first run, +1 per restart).
    pub incarnation: u32,
    /// Decided value.
    pub value: SimValue,
    /// Decision round.
    pub round: u64,
    /// Virtual time of the decision.
    pub at: Duration,
}

/// What happened in a run.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Decisions of honest nodes, in order.
    pub decisions: Vec<DecisionRecord>,
    /// Violations detected while running (double decisions, unverifiable proofs).
    pub violations: Vec<String>,
    /// Per node: up at the end of the run.
    pub up_at_end: Vec<bool>,
    /// Per node: decided in its current incarnation.
    pub decided_at_end: Vec<bool>,
    /// Values byzantine nodes proposed (allowed by validity besides honest inputs).
    pub byzantine_values: BTreeSet<SimValue>,
    /// Engine drop reasons at honest nodes, by reason name.
    pub drops: BTreeMap<String, usize>,
    /// Received byte strings that failed to decode at honest nodes.
    pub wire_errors: usize,
    /// Messages delivered.
    pub delivered: usize,
    /// Virtual time at the end.
    pub end: Duration,
}

impl Outcome {
    /// Number of drops recorded under `reason` (the `DropReason` variant name).
    pub fn drop_count(&self, reason: &str) -> usize {
        self.drops.get(reason).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
enum Event {
    Start(usize),
    Deliver {
        to: usize,
        bytes: Vec<u8>,
    },
    Timeout {
        node: usize,
        incarnation: u32,
        round: u64,
        /// Which arming of the node's timer this is: a newer (or extended) one supersedes it.
        generation: u64,
    },
    Crash(usize),
    Restart(usize),
}

struct Scheduled {
    time: u64,
    seq: u64,
    event: Event,
}

impl Scheduled {
    /// Order of events: by time; at equal times crashes first (see [`CrashAt::Time`]), then in
    /// the order they were scheduled.
    fn key(&self) -> (u64, bool, u64) {
        (self.time, !matches!(self.event, Event::Crash(_)), self.seq)
    }
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap, the earliest event must come first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

struct Node {
    spec: NodeSpec,
    instance: Option<Instance<SimValue>>,
    signer: KeyedHashSigner,
    up: bool,
    started: bool,
    incarnation: u32,
    decided: bool,
    crash_pending: Option<CrashPlan>,
    /// The pending round timer: (round, expiry, generation), as the driver keeps it.
    timer: Option<(u64, u64, u64)>,
    timer_generation: u64,
}

struct Sim<'a> {
    sc: &'a Scenario,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    config_verifier: Arc<KeyedHashVerifier>,
    out: Outcome,
    pending_restarts: usize,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Runs `scenario` with `seed` (which drives keys, network and byzantine choices).
pub fn run(scenario: &Scenario, seed: u64) -> Outcome {
    let n = scenario.nodes.len();
    let keys = sim_keys(n, seed);
    let verifier = Arc::new(KeyedHashVerifier::new(keys.clone()));
    let nodes = scenario
        .nodes
        .iter()
        .zip(&keys)
        .map(|(spec, key)| Node {
            spec: spec.clone(),
            instance: None,
            signer: KeyedHashSigner::new(*key),
            up: true,
            started: false,
            incarnation: 0,
            decided: false,
            crash_pending: spec.crash,
            timer: None,
            timer_generation: 0,
        })
        .collect();
    let mut sim = Sim {
        sc: scenario,
        rng: StdRng::seed_from_u64(seed),
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        nodes,
        config_verifier: verifier,
        out: Outcome::default(),
        pending_restarts: 0,
    };
    sim.out.byzantine_values = scenario
        .nodes
        .iter()
        .filter(|s| s.behaviour != Behaviour::Honest)
        .map(|s| s.input)
        .collect();
    for i in 0..n {
        sim.nodes[i].instance = Some(sim.new_instance(i));
        sim.schedule(micros(scenario.nodes[i].start_at), Event::Start(i));
        if let Some(CrashPlan {
            at: CrashAt::Time(t),
            ..
        }) = scenario.nodes[i].crash
        {
            sim.schedule(micros(t), Event::Crash(i));
        }
    }
    let deadline = micros(scenario.net.gst.saturating_add(scenario.deadline_after_gst));
    while let Some(Scheduled { time, event, .. }) = sim.queue.pop() {
        if time > deadline {
            break;
        }
        sim.now = time;
        sim.handle(event);
        if sim.pending_restarts == 0 && sim.all_honest_up_decided() {
            break;
        }
    }
    sim.out.end = Duration::from_micros(sim.now);
    sim.out.up_at_end = sim.nodes.iter().map(|n| n.up).collect();
    sim.out.decided_at_end = sim.nodes.iter().map(|n| n.decided).collect();
    sim.out
}

impl Sim<'_> {
    fn n(&self) -> usize {
        self.nodes.len()
    }

    fn config(&self, node: usize) -> Config {
        Config::new(
            self.n() as u64,
            Arc::new(self.nodes[node].signer.clone()),
            self.config_verifier.clone(),
        )
        .with_timer(Arc::new(self.sc.timer))
    }

    fn new_instance(&self, node: usize) -> Instance<SimValue> {
        Instance::new(
            self.config(node),
            self.sc.instance,
            node as u64,
            Box::new(SimPolicy),
        )
        .expect("scenario has a valid cluster size")
    }

    fn schedule(&mut self, time: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            time,
            seq: self.seq,
            event,
        });
    }

    fn all_honest_up_decided(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.spec.behaviour == Behaviour::Honest && n.up)
            .all(|n| n.decided)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Start(i) => {
                if !self.nodes[i].up || self.nodes[i].started {
                    return;
                }
                self.nodes[i].started = true;
                let input = self.nodes[i].spec.input;
                self.step(i, |inst| inst.start(input));
            }
            Event::Deliver { to, bytes } => {
                if !self.nodes[to].up {
                    return;
                }
                self.out.delivered += 1;
                let msg = match QbftMsg::decode(&bytes) {
                    Ok(m) => m,
                    Err(_) => {
                        if self.nodes[to].spec.behaviour == Behaviour::Honest {
                            self.out.wire_errors += 1;
                        }
                        return;
                    }
                };
                self.step(to, |inst| inst.handle_message(msg));
            }
            Event::Timeout {
                node,
                incarnation,
                round,
                generation,
            } => {
                let nd = &mut self.nodes[node];
                if !nd.up
                    || nd.incarnation != incarnation
                    || nd.timer.map(|t| t.2) != Some(generation)
                {
                    return;
                }
                nd.timer = None;
                self.step(node, |inst| inst.handle_timeout(round));
            }
            Event::Crash(i) => self.crash(i),
            Event::Restart(i) => {
                self.pending_restarts -= 1;
                let fresh = self.new_instance(i);
                let nd = &mut self.nodes[i];
                nd.up = true;
                nd.incarnation += 1;
                nd.decided = false;
                nd.started = true;
                nd.instance = Some(fresh);
                let input = nd.spec.input;
                self.step(i, |inst| inst.start(input));
            }
        }
    }

    /// Runs `f` on the node's engine instance (if it has one) and carries out its outputs.
    fn step(
        &mut self,
        node: usize,
        f: impl FnOnce(&mut Instance<SimValue>) -> Vec<Output<SimValue>>,
    ) {
        let outputs = self.nodes[node]
            .instance
            .as_mut()
            .map(f)
            .unwrap_or_default();
        self.apply(node, outputs);
    }

    /// Arms `node`'s round timer to fire at `at`, superseding the pending one (as the driver does).
    fn arm_timer(&mut self, node: usize, round: u64, at: u64) {
        let nd = &mut self.nodes[node];
        nd.timer_generation += 1;
        let generation = nd.timer_generation;
        nd.timer = Some((round, at, generation));
        let incarnation = nd.incarnation;
        self.schedule(
            at,
            Event::Timeout {
                node,
                incarnation,
                round,
                generation,
            },
        );
    }

    fn crash(&mut self, i: usize) {
        let nd = &mut self.nodes[i];
        if !nd.up {
            return;
        }
        nd.up = false;
        nd.decided = false;
        nd.instance = None;
        let plan = nd.crash_pending.take();
        if let Some(after) = plan.and_then(|p| p.restart_after) {
            self.pending_restarts += 1;
            self.schedule(self.now.saturating_add(micros(after)), Event::Restart(i));
        }
    }

    /// Carries out a node's outputs.
    fn apply(&mut self, node: usize, outputs: Vec<Output<SimValue>>) {
        for output in outputs {
            if !self.nodes[node].up {
                return; // crashed mid-batch
            }
            match output {
                Output::Broadcast(msg) => self.broadcast(node, msg),
                Output::SendTo { peer, msg } => self.send_from(node, peer as usize, msg),
                Output::ScheduleTimeout { round, after } => {
                    self.arm_timer(node, round, self.now.saturating_add(micros(after)));
                }
                Output::ExtendTimeout { round, by } => {
                    if let Some((r, at, _)) = self.nodes[node].timer {
                        if r == round {
                            self.arm_timer(node, round, at.saturating_add(micros(by)));
                        }
                    }
                }
                Output::Decided {
                    value,
                    round,
                    commits,
                } => self.record_decision(node, value, round, &commits),
                Output::Dropped { reason, .. } => {
                    if self.nodes[node].spec.behaviour == Behaviour::Honest {
                        let name = format!("{reason:?}");
                        let name = name
                            .split(['(', ' ', '{'])
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        *self.out.drops.entry(name).or_default() += 1;
                    }
                }
            }
        }
    }

    fn record_decision(&mut self, node: usize, value: SimValue, round: u64, commits: &[SignedMsg]) {
        let nd = &mut self.nodes[node];
        if nd.spec.behaviour != Behaviour::Honest {
            return;
        }
        if nd.decided {
            self.out.violations.push(format!(
                "node {node} decided twice in incarnation {}",
                nd.incarnation
            ));
        }
        nd.decided = true;
        let incarnation = nd.incarnation;
        let cfg = self.config(node);
        if let Err(e) = verify_decision(&cfg, self.sc.instance, round, value.value_hash(), commits)
        {
            self.out.violations.push(format!(
                "node {node} decided with an invalid commit proof: {e}"
            ));
        }
        self.out.decisions.push(DecisionRecord {
            node,
            incarnation,
            value,
            round,
            at: Duration::from_micros(self.now),
        });
    }

    fn broadcast(&mut self, node: usize, msg: QbftMsg) {
        let mut peers: Vec<usize> = (0..self.n()).filter(|&p| p != node).collect();
        // Crash-after-sending: deliver to a random subset, then crash.
        let mut crash_now = false;
        if let Some(CrashPlan {
            at: CrashAt::AfterSending { kind, deliver_to },
            ..
        }) = self.nodes[node].crash_pending
        {
            if msg.kind() == Some(kind) {
                for i in (1..peers.len()).rev() {
                    let j = self.rng.gen_range(0..=i);
                    peers.swap(i, j);
                }
                peers.truncate(deliver_to);
                crash_now = true;
            }
        }
        for p in peers {
            self.send_from(node, p, msg.clone());
        }
        if crash_now {
            self.crash(node);
        }
    }

    /// Sends a message from `node`, through its byzantine filter if it has one.
    fn send_from(&mut self, node: usize, to: usize, msg: QbftMsg) {
        match self.nodes[node].spec.behaviour {
            Behaviour::Honest => {
                let bytes = msg.encode();
                self.transmit(to, bytes);
            }
            Behaviour::Equivocator => {
                for bytes in self.equivocate(node, msg) {
                    self.transmit(to, bytes);
                }
            }
            Behaviour::Garbage => {
                for bytes in self.garbage(node, msg) {
                    self.transmit(to, bytes);
                }
            }
        }
    }

    /// The network: loss, duplication and delay before GST; bounded delay after.
    fn transmit(&mut self, to: usize, bytes: Vec<u8>) {
        let net = self.sc.net;
        let copies = if self.now < micros(net.gst) {
            if self.rng.gen_bool(net.drop_prob) {
                0
            } else if self.rng.gen_bool(net.dup_prob) {
                2
            } else {
                1
            }
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.now < micros(net.gst) {
                self.rng.gen_range(0..=micros(net.max_delay_before_gst))
            } else {
                self.rng.gen_range(
                    micros(net.min_delay)..=micros(net.max_delay).max(micros(net.min_delay)),
                )
            };
            self.schedule(
                self.now.saturating_add(delay),
                Event::Deliver {
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn resign(&self, node: usize, mut m: SignedMsg) -> SignedMsg {
        m.signature = self.nodes[node].signer.sign(&m.body.signing_bytes());
        m
    }

    /// One of two valid alternative values for byzantine equivocation (two groups of peers
    /// seeing the same alternative make a conflicting quorum possible).
    fn alt_value(&mut self, node: usize) -> SimValue {
        let v = SimValue(1_000_000 + (node as u64) * 1000 + self.rng.gen_range(0..2));
        self.out.byzantine_values.insert(v);
        v
    }

    /// Equivocating byzantine node: what it sends to `to` instead of `msg`.
    fn equivocate(&mut self, node: usize, msg: QbftMsg) -> Vec<Vec<u8>> {
        let n = self.n();
        let q = quorum(n as u64) as usize;
        let choice = self.rng.gen_range(0..100);
        let mut out = Vec::new();
        match msg.kind() {
            Some(MsgKind::PrePrepare) if choice < 70 => {
                // Different proposal per peer.
                let v = self.alt_value(node);
                let mut m = msg.clone();
                m.msg.body.value_hash = v.value_hash();
                m.msg = self.resign(node, m.msg);
                m.values = vec![v.to_bytes()];
                out.push(m.encode());
            }
            Some(MsgKind::Prepare | MsgKind::Commit) if choice < 50 => {
                // Conflicting vote.
                let v = self.alt_value(node);
                let mut m = msg.clone();
                m.msg.body.value_hash = v.value_hash();
                m.msg = self.resign(node, m.msg);
                out.push(m.encode());
            }
            Some(MsgKind::RoundChange) if choice < 30 && msg.round() > 1 => {
                // Claims a prepared value with a bogus certificate (its own PREPARE repeated).
                let v = self.alt_value(node);
                let mut m = msg.clone();
                m.msg.body.prepared_round = msg.round() - 1;
                m.msg.body.prepared_value_hash = v.value_hash();
                m.msg = self.resign(node, m.msg);
                let mut prep = m.msg.clone();
                prep.body.kind = MsgKind::Prepare.code();
                prep.body.round = msg.round() - 1;
                prep.body.value_hash = v.value_hash();
                prep.body.prepared_round = 0;
                prep.body.prepared_value_hash = ZERO_HASH;
                let prep = self.resign(node, prep);
                m.justification = vec![prep; q];
                m.values = vec![v.to_bytes()];
                out.push(m.encode());
            }
            _ if choice < 80 => out.push(msg.encode()),
            _ if choice < 88 => {} // withhold
            _ if choice < 94 => {
                // Tampered justification: flip a signature byte of one embedded message, or
                // forge a DECIDED from its own COMMIT relabelled as other nodes'.
                let mut m = msg.clone();
                if let Some(j) = m.justification.first_mut() {
                    if let Some(b) = j.signature.first_mut() {
                        *b ^= 1;
                    }
                    out.push(m.encode());
                } else {
                    let v = self.alt_value(node);
                    let mut commit = self.resign(
                        node,
                        SignedMsg {
                            body: super::msg::MsgBody {
                                kind: MsgKind::Commit.code(),
                                instance: self.sc.instance,
                                source: node as u64,
                                round: msg.round(),
                                value_hash: v.value_hash(),
                                prepared_round: 0,
                                prepared_value_hash: ZERO_HASH,
                            },
                            signature: Vec::new(),
                        },
                    );
                    let mut commits = Vec::new();
                    for s in 0..q {
                        commit.body.source = s as u64;
                        commits.push(commit.clone());
                    }
                    let mut decided = commit.clone();
                    decided.body.kind = MsgKind::Decided.code();
                    decided.body.source = node as u64;
                    let decided = self.resign(node, decided);
                    out.push(
                        QbftMsg {
                            msg: decided,
                            justification: commits,
                            values: vec![v.to_bytes()],
                        }
                        .encode(),
                    );
                }
            }
            _ => {
                // Far-future ROUND-CHANGE, then the original.
                let mut rc = msg.msg.clone();
                rc.body.kind = MsgKind::RoundChange.code();
                rc.body.round = msg.round().saturating_add(self.rng.gen_range(1..500));
                rc.body.value_hash = ZERO_HASH;
                rc.body.prepared_round = 0;
                rc.body.prepared_value_hash = ZERO_HASH;
                let rc = self.resign(node, rc);
                out.push(
                    QbftMsg {
                        msg: rc,
                        justification: Vec::new(),
                        values: Vec::new(),
                    }
                    .encode(),
                );
                out.push(msg.encode());
            }
        }
        out
    }

    /// Garbage byzantine node: what it sends instead of `msg`.
    fn garbage(&mut self, node: usize, msg: QbftMsg) -> Vec<Vec<u8>> {
        let n = self.n() as u64;
        let good = msg.encode();
        let mut m = msg.clone();
        let bytes = match self.rng.gen_range(0..14) {
            0 | 1 => good,
            2 => (0..self.rng.gen_range(0..300))
                .map(|_| self.rng.gen())
                .collect(),
            3 => {
                let len = self.rng.gen_range(0..good.len());
                good[..len].to_vec()
            }
            4 => {
                let mut b = good;
                for _ in 0..self.rng.gen_range(1..6) {
                    let i = self.rng.gen_range(0..b.len());
                    b[i] = self.rng.gen();
                }
                b
            }
            5 => {
                m.msg.body.kind = if self.rng.gen_bool(0.5) { 0 } else { 9 };
                m.encode()
            }
            6 => {
                m.msg.body.round = 0;
                m.msg = self.resign(node, m.msg);
                m.encode()
            }
            7 => {
                m.msg.body.instance.slot = m.msg.body.instance.slot.wrapping_add(1);
                m.msg = self.resign(node, m.msg);
                m.encode()
            }
            8 => {
                // Impersonation: signed with its own key, claims another source.
                m.msg.body.source = (node as u64 + 1 + self.rng.gen_range(0..n - 1)) % n;
                m.encode()
            }
            9 => {
                m.msg.body.source = n + self.rng.gen_range(0..10);
                m.msg = self.resign(node, m.msg);
                m.encode()
            }
            10 => {
                m.values = vec![(0..self.rng.gen_range(0..20))
                    .map(|_| self.rng.gen())
                    .collect()];
                m.encode()
            }
            11 => {
                let filler = m.msg.clone();
                m.justification = vec![filler; 3 * n as usize];
                m.encode()
            }
            12 => {
                m.msg.body.prepared_round = m.msg.body.round.saturating_add(3);
                m.msg.body.prepared_value_hash = [7; 32];
                m.msg = self.resign(node, m.msg);
                m.encode()
            }
            _ => {
                // Duplicate delivery of the genuine message.
                return vec![good.clone(), good];
            }
        };
        vec![bytes]
    }
}

/// Checks agreement, validity and termination of an outcome. Honest nodes are those with
/// [`Behaviour::Honest`] (crashing and restarting ones included).
pub fn check(scenario: &Scenario, outcome: &Outcome) -> Result<(), String> {
    let policy = SimPolicy;
    if let Some(v) = outcome.violations.first() {
        return Err(v.clone());
    }
    // Agreement.
    if let Some(first) = outcome.decisions.first() {
        if let Some(other) = outcome.decisions.iter().find(|d| d.value != first.value) {
            return Err(format!(
                "agreement violated: node {} decided {:?} in round {} but node {} decided {:?} in round {}",
                first.node, first.value, first.round, other.node, other.value, other.round
            ));
        }
    }
    // Validity.
    let honest_inputs: BTreeSet<SimValue> = scenario
        .nodes
        .iter()
        .filter(|s| s.behaviour == Behaviour::Honest)
        .map(|s| s.input)
        .collect();
    for d in &outcome.decisions {
        if !policy.is_valid(&d.value) {
            return Err(format!(
                "validity violated: node {} decided invalid {:?}",
                d.node, d.value
            ));
        }
        if !honest_inputs.contains(&d.value) && !outcome.byzantine_values.contains(&d.value) {
            return Err(format!(
                "validity violated: node {} decided {:?}, nobody's input or proposal",
                d.node, d.value
            ));
        }
    }
    // Termination: every honest node that is up has decided by GST + deadline.
    for (i, spec) in scenario.nodes.iter().enumerate() {
        if spec.behaviour == Behaviour::Honest && outcome.up_at_end[i] && !outcome.decided_at_end[i]
        {
            return Err(format!(
                "termination violated: honest node {i} undecided at {:?} (GST {:?}, deadline {:?} after GST)",
                outcome.end, scenario.net.gst, scenario.deadline_after_gst
            ));
        }
    }
    Ok(())
}

/// Number of faulty nodes in a scenario: byzantine ones plus those that crash (a restarted node
/// has forgotten its votes, so it counts as faulty).
pub fn faulty_count(scenario: &Scenario) -> usize {
    scenario
        .nodes
        .iter()
        .filter(|s| s.behaviour != Behaviour::Honest || s.crash.is_some())
        .count()
}

/// Whether a scenario stays within the fault bound `f = ⌊(n−1)/3⌋`.
pub fn within_fault_bound(scenario: &Scenario) -> bool {
    faulty_count(scenario) as u64 <= max_faulty(scenario.nodes.len() as u64)
}

/// Leader of `round` in a scenario.
pub fn scenario_leader(scenario: &Scenario, round: u64) -> usize {
    leader(scenario.instance, round, scenario.nodes.len() as u64) as usize
}
