//! The QBFT state machine for one consensus instance (sans-IO).
//!
//! See the [module documentation](super) for the protocol, the API shape and the caller's duties.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Debug,
    sync::Arc,
    time::Duration,
};

use thiserror::Error;

use super::{
    msg::{Hash, InstanceId, MsgBody, MsgKind, QbftMsg, SignedMsg, MAX_VALUES, ZERO_HASH},
    timer::{LinearTimer, TimerStrategy},
};

/// Largest supported cluster size.
pub const MAX_NODES: u64 = 256;

/// Default number of rounds ahead of the current one for which messages are buffered.
pub const DEFAULT_MAX_FUTURE_ROUNDS: u64 = 64;

/// Default number of DECIDED replies sent to one lagging peer.
pub const DEFAULT_MAX_DECIDED_REPLIES: u32 = 32;

/// Quorum size for `n` nodes: ⌈2n/3⌉.
///
/// With `f = ⌊(n−1)/3⌋` this guarantees that two quorums intersect in at least `f + 1` nodes
/// (so in an honest node) and that the `n − f` honest nodes form a quorum on their own.
pub const fn quorum(n: u64) -> u64 {
    (2 * n).div_ceil(3)
}

/// Number of byzantine nodes tolerated among `n`: ⌊(n−1)/3⌋.
pub const fn max_faulty(n: u64) -> u64 {
    n.saturating_sub(1) / 3
}

/// Leader of `round` in `instance` among `n` nodes: `(slot + duty + round) mod n`, so leadership
/// rotates with the round and consecutive duties start with different leaders.
pub fn leader(instance: InstanceId, round: u64, n: u64) -> u64 {
    instance
        .slot
        .wrapping_add(instance.duty)
        .wrapping_add(round)
        % n.max(1)
}

/// Verifies a decision proof (e.g. from [`Output::Decided`] or a DECIDED message): `commits` is a
/// quorum of validly signed COMMITs from distinct members of `config`'s cluster for `instance`,
/// `round` and `value_hash`.
pub fn verify_decision(
    config: &Config,
    instance: InstanceId,
    round: u64,
    value_hash: Hash,
    commits: &[SignedMsg],
) -> Result<(), DropReason> {
    check_quorum(
        config,
        instance,
        commits,
        MsgKind::Commit,
        round,
        value_hash,
        "not a quorum of COMMITs",
    )
}

/// Checks an embedded message: kind, member source, instance, signature.
fn check_embedded(
    cfg: &Config,
    id: InstanceId,
    m: &SignedMsg,
    kind: MsgKind,
    what: &'static str,
) -> Result<(), DropReason> {
    if m.body.kind != kind.code() {
        return Err(DropReason::Unjustified(what));
    }
    if m.body.source >= cfg.nodes {
        return Err(DropReason::UnknownSource(m.body.source));
    }
    if m.body.instance != id {
        return Err(DropReason::WrongInstance(m.body.instance));
    }
    if cfg
        .verifier
        .verify(m.body.source, &m.body.signing_bytes(), &m.signature)
    {
        Ok(())
    } else {
        Err(DropReason::InvalidSignature(m.body.source))
    }
}

/// Checks that `msgs` are a quorum of valid `kind` votes from distinct members for
/// (`round`, `hash`). Cheap structural checks run before any signature is verified.
fn check_quorum(
    cfg: &Config,
    id: InstanceId,
    msgs: &[SignedMsg],
    kind: MsgKind,
    round: u64,
    hash: Hash,
    what: &'static str,
) -> Result<(), DropReason> {
    if (msgs.len() as u64) < quorum(cfg.nodes) {
        return Err(DropReason::Unjustified(what));
    }
    let mut sources = BTreeSet::new();
    for m in msgs {
        let b = &m.body;
        if b.kind != kind.code()
            || b.round != round
            || b.value_hash != hash
            || b.prepared_round != 0
            || b.prepared_value_hash != ZERO_HASH
            || !sources.insert(b.source)
        {
            return Err(DropReason::Unjustified(what));
        }
    }
    msgs.iter()
        .try_for_each(|m| check_embedded(cfg, id, m, kind, what))
}

/// A value consensus can decide on. Consensus itself only handles [`Value::value_hash`]; the
/// full value travels alongside in the messages that need it, encoded with [`Value::to_bytes`].
pub trait Value: Clone + Eq + Debug + Send {
    /// Collision-resistant hash of the value (e.g. SHA-256 of its canonical encoding, or its
    /// SSZ hash tree root). All nodes must compute the same hash for equal values.
    fn value_hash(&self) -> Hash;
    /// Encodes the value for the wire.
    fn to_bytes(&self) -> Vec<u8>;
    /// Decodes a value received from a peer (untrusted input: must not panic).
    fn from_bytes(bytes: &[u8]) -> Result<Self, String>;
}

/// Caller-supplied checks on proposed values.
pub trait ValuePolicy<V>: Send {
    /// Whether `value` may be decided (well-formed, for this duty, allowed by slashing
    /// protection, …). Checked on every proposal before this node PREPAREs it and on every
    /// value before this node decides it.
    fn is_valid(&self, value: &V) -> bool;

    /// Whether this node agrees to a fresh `leader_value` given its own input `own_value`
    /// (e.g. both attestation data agree on source and target). Checked before PREPARE of a
    /// proposal from another node that is not locked by a prepared certificate. Default: accept.
    ///
    /// Liveness: a node that refuses does not PREPARE, so a round only succeeds if a quorum
    /// accepts the leader's value. If honest nodes' views diverge permanently, rounds rotate
    /// leaders until one proposes a value a quorum accepts, and consensus may time out.
    fn compare(&self, leader_value: &V, own_value: &V) -> bool {
        let _ = (leader_value, own_value);
        true
    }
}

/// Signs messages as this node (e.g. with its secp256k1 p2p key).
pub trait Signer: Send + Sync {
    /// Signature over `msg` (the [`MsgBody::signing_bytes`]).
    fn sign(&self, msg: &[u8]) -> Vec<u8>;
}

/// Verifies signatures of cluster members.
pub trait Verifier: Send + Sync {
    /// Whether `signature` is node `source`'s valid signature over `msg`. Must return `false`
    /// (not panic) for unknown sources and malformed signatures.
    fn verify(&self, source: u64, msg: &[u8], signature: &[u8]) -> bool;
}

/// Node-wide consensus configuration, shared by all instances (cheap to clone).
#[derive(Clone)]
pub struct Config {
    /// Number of nodes in the cluster.
    pub nodes: u64,
    /// Signs this node's messages.
    pub signer: Arc<dyn Signer>,
    /// Verifies every received message and justification.
    pub verifier: Arc<dyn Verifier>,
    /// Round timeouts.
    pub timer: Arc<dyn TimerStrategy>,
    /// Messages for rounds further ahead than this are dropped (ROUND-CHANGEs are still
    /// remembered, one per sender, for the f+1 rule).
    pub max_future_rounds: u64,
    /// After deciding, at most this many DECIDED replies are sent to one peer.
    pub max_decided_replies: u32,
}

impl Config {
    /// A configuration with the default timer ([`LinearTimer::default`]) and limits.
    pub fn new(nodes: u64, signer: Arc<dyn Signer>, verifier: Arc<dyn Verifier>) -> Self {
        Self {
            nodes,
            signer,
            verifier,
            timer: Arc::new(LinearTimer::default()),
            max_future_rounds: DEFAULT_MAX_FUTURE_ROUNDS,
            max_decided_replies: DEFAULT_MAX_DECIDED_REPLIES,
        }
    }

    /// Replaces the timer strategy.
    pub fn with_timer(mut self, timer: Arc<dyn TimerStrategy>) -> Self {
        self.timer = timer;
        self
    }
}

impl Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("nodes", &self.nodes)
            .field("timer", &self.timer)
            .field("max_future_rounds", &self.max_future_rounds)
            .field("max_decided_replies", &self.max_decided_replies)
            .finish_non_exhaustive()
    }
}

/// Invalid [`Instance::new`] arguments.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// `nodes` is 0 or above [`MAX_NODES`].
    #[error("qbft cluster size {0} is outside 1..={MAX_NODES}")]
    ClusterSize(u64),
    /// `own_index` is not a node of the cluster.
    #[error("qbft own index {own} is not below the cluster size {nodes}")]
    OwnIndex {
        /// Given index.
        own: u64,
        /// Cluster size.
        nodes: u64,
    },
    /// `max_future_rounds` is 0.
    #[error("qbft max_future_rounds must be at least 1")]
    FutureRounds,
}

/// Why a message was ignored, or a proposal refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DropReason {
    /// Unknown message kind code.
    #[error("unknown message kind code {0}")]
    UnknownKind(u8),
    /// The source index is not a cluster member.
    #[error("unknown source node {0}")]
    UnknownSource(u64),
    /// The message claims to come from this node.
    #[error("message claims to come from this node")]
    OwnSource,
    /// The message belongs to another consensus instance.
    #[error("message for another instance ({0})")]
    WrongInstance(InstanceId),
    /// Round 0 does not exist.
    #[error("round 0 is invalid")]
    ZeroRound,
    /// A signature (of the message or of an embedded justification) does not verify.
    #[error("invalid signature of node {0}")]
    InvalidSignature(u64),
    /// Fields inconsistent with the message kind.
    #[error("ill-formed message: {0}")]
    Malformed(&'static str),
    /// More justification messages than any valid message carries.
    #[error("{count} justification messages, more than the maximum {max}")]
    TooManyJustifications {
        /// Count found.
        count: usize,
        /// Maximum (2n).
        max: usize,
    },
    /// The same message was already received.
    #[error("duplicate message")]
    Duplicate,
    /// The sender already sent a different message of this kind for this round.
    #[error("equivocation: conflicting message of the same kind and round from this sender")]
    Equivocation,
    /// The message is for a round this node has left.
    #[error("message for old round {round} (current {current})")]
    OldRound {
        /// Message round.
        round: u64,
        /// This node's round.
        current: u64,
    },
    /// The message is too far ahead to buffer.
    #[error("message for round {round} too far ahead of current round {current}")]
    TooFarAhead {
        /// Message round.
        round: u64,
        /// This node's round.
        current: u64,
    },
    /// A PRE-PREPARE from a node that does not lead its round.
    #[error(
        "PRE-PREPARE for round {round} from a node that is not its leader (leader is {leader})"
    )]
    NotLeader {
        /// Message round.
        round: u64,
        /// The round's leader.
        leader: u64,
    },
    /// The justification does not justify the message.
    #[error("unjustified message: {0}")]
    Unjustified(&'static str),
    /// A referenced full value is missing from the message.
    #[error("referenced value missing from message")]
    MissingValue,
    /// A carried value could not be decoded.
    #[error("value does not decode: {0}")]
    ValueDecode(String),
    /// The proposal fails the validity predicate (never prepared, never decided).
    #[error("value fails the validity predicate")]
    InvalidValue,
    /// The proposal conflicts with this node's own input (the compare hook refused it).
    #[error("leader value refused by the compare hook")]
    CompareRejected,
    /// The instance already decided; the message is no longer needed.
    #[error("instance already decided")]
    AlreadyDecided,
}

/// An action the caller must carry out, returned by the [`Instance`] methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<V> {
    /// Send the message to every other node of the cluster (the instance has already applied
    /// it to itself).
    Broadcast(QbftMsg),
    /// Send the message to one node only (DECIDED replies to lagging nodes).
    SendTo {
        /// Recipient node index.
        peer: u64,
        /// The message.
        msg: QbftMsg,
    },
    /// Call [`Instance::handle_timeout`]`(round)` after `after`. Supersedes earlier timers (a
    /// stale timer firing is ignored, so cancelling is optional).
    ScheduleTimeout {
        /// Round the timer belongs to.
        round: u64,
        /// Delay from now.
        after: Duration,
    },
    /// Push the pending timer of `round` back by `by` (from its current expiry, not from now).
    /// Emitted at most once per round, when this node accepts the round's proposal (a leader
    /// is alive and the round needs only PREPAREs and COMMITs more) and
    /// [`TimerStrategy::proposal_extension`] is not zero (by default: round 1 only).
    /// Ignored if that round's timer is no longer pending.
    ExtendTimeout {
        /// Round the timer belongs to.
        round: u64,
        /// Added to the timer's expiry.
        by: Duration,
    },
    /// Consensus decided `value` in `round`; `commits` is the quorum of COMMITs proving it.
    /// Emitted exactly once per instance.
    Decided {
        /// The decided value.
        value: V,
        /// Round of the decision.
        round: u64,
        /// Quorum of signed COMMITs.
        commits: Vec<SignedMsg>,
    },
    /// A message was ignored, or a proposal refused, for `reason` (for logs and metrics).
    Dropped {
        /// Claimed sender of the message.
        source: u64,
        /// Why.
        reason: DropReason,
    },
}

/// A ROUND-CHANGE with the PREPAREs justifying its prepared round/value.
#[derive(Clone, Debug)]
struct StoredRc {
    msg: SignedMsg,
    certificate: Vec<SignedMsg>,
}

/// A justified PRE-PREPARE.
#[derive(Clone, Debug)]
struct Proposal {
    msg: SignedMsg,
    /// Whether the value is locked by a prepared certificate (then `compare` is not consulted).
    locked: bool,
}

/// Messages received for one round, one per sender and kind.
#[derive(Default, Debug)]
struct RoundState {
    proposal: Option<Proposal>,
    prepares: BTreeMap<u64, SignedMsg>,
    commits: BTreeMap<u64, SignedMsg>,
    round_changes: BTreeMap<u64, StoredRc>,
}

impl RoundState {
    fn is_empty(&self) -> bool {
        self.proposal.is_none()
            && self.prepares.is_empty()
            && self.commits.is_empty()
            && self.round_changes.is_empty()
    }
}

/// This node's prepared certificate: a quorum of PREPAREs for `hash` in `round`.
#[derive(Clone, Debug)]
struct Prepared {
    round: u64,
    hash: Hash,
    prepares: Vec<SignedMsg>,
}

#[derive(Clone, Debug)]
struct Decision<V> {
    value: V,
    /// The DECIDED message sent to lagging peers.
    msg: QbftMsg,
}

/// One QBFT consensus instance (one duty) at one node. Pure state machine: feed it messages
/// and timer expiries, carry out the returned [`Output`]s.
pub struct Instance<V: Value> {
    cfg: Config,
    id: InstanceId,
    own: u64,
    policy: Box<dyn ValuePolicy<V>>,
    quorum: usize,
    faulty: usize,
    input: Option<V>,
    round: u64,
    /// Current round if this node PREPAREd its proposal.
    accepted_round: Option<u64>,
    /// Current round if this node refused its proposal.
    refused_round: Option<u64>,
    /// Current round if this node sent its COMMIT.
    committed_round: Option<u64>,
    /// Last round this node proposed in.
    proposed_round: Option<u64>,
    prepared: Option<Prepared>,
    rounds: BTreeMap<u64, RoundState>,
    /// Highest ROUND-CHANGE per sender for rounds beyond the buffer window.
    far_round_changes: BTreeMap<u64, StoredRc>,
    /// Full values seen in justified messages, by hash.
    values: HashMap<Hash, V>,
    /// Hashes with a commit quorum that fail the validity predicate (reported once).
    invalid_decisions: BTreeSet<Hash>,
    decision: Option<Decision<V>>,
    /// DECIDED replies sent per peer.
    replies: BTreeMap<u64, u32>,
}

impl<V: Value> Debug for Instance<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("own", &self.own)
            .field("round", &self.round)
            .field("started", &self.input.is_some())
            .field("prepared_round", &self.prepared.as_ref().map(|p| p.round))
            .field("decided", &self.decision.as_ref().map(|d| &d.value))
            .finish_non_exhaustive()
    }
}

impl<V: Value> Instance<V> {
    /// Creates the instance `id` for node `own_index`. `config.signer` must sign as
    /// `own_index`. Nothing is sent until [`Instance::start`]; messages received before are
    /// buffered (and a DECIDED is honoured).
    pub fn new(
        config: Config,
        id: InstanceId,
        own_index: u64,
        policy: Box<dyn ValuePolicy<V>>,
    ) -> Result<Self, ConfigError> {
        if config.nodes == 0 || config.nodes > MAX_NODES {
            return Err(ConfigError::ClusterSize(config.nodes));
        }
        if own_index >= config.nodes {
            return Err(ConfigError::OwnIndex {
                own: own_index,
                nodes: config.nodes,
            });
        }
        if config.max_future_rounds == 0 {
            return Err(ConfigError::FutureRounds);
        }
        let n = config.nodes;
        Ok(Self {
            quorum: quorum(n) as usize,
            faulty: max_faulty(n) as usize,
            cfg: config,
            id,
            own: own_index,
            policy,
            input: None,
            round: 1,
            accepted_round: None,
            refused_round: None,
            committed_round: None,
            proposed_round: None,
            prepared: None,
            rounds: BTreeMap::new(),
            far_round_changes: BTreeMap::new(),
            values: HashMap::new(),
            invalid_decisions: BTreeSet::new(),
            decision: None,
            replies: BTreeMap::new(),
        })
    }

    /// Starts round 1 with this node's input value: the round-1 leader proposes it, every node
    /// arms the round timer. A second call is ignored (returns nothing).
    pub fn start(&mut self, input: V) -> Vec<Output<V>> {
        let mut out = Vec::new();
        if self.input.is_some() {
            return out;
        }
        self.input = Some(input);
        if self.decision.is_none() {
            out.push(Output::ScheduleTimeout {
                round: self.round,
                after: self.cfg.timer.round_timeout(self.round),
            });
            self.progress(&mut out);
        }
        out
    }

    /// Handles a message from a peer.
    pub fn handle_message(&mut self, msg: QbftMsg) -> Vec<Output<V>> {
        let mut out = Vec::new();
        let source = msg.msg.body.source;
        if let Err(reason) = self.ingest(msg, &mut out) {
            out.push(Output::Dropped { source, reason });
        }
        self.progress(&mut out);
        out
    }

    /// Handles expiry of the timer of `round` (from [`Output::ScheduleTimeout`]). Stale timers
    /// (another round, or after the decision) are ignored.
    pub fn handle_timeout(&mut self, round: u64) -> Vec<Output<V>> {
        let mut out = Vec::new();
        if self.decision.is_some() || self.input.is_none() || round != self.round {
            return out;
        }
        self.change_round(self.round.saturating_add(1), &mut out);
        self.broadcast_round_change(&mut out);
        self.progress(&mut out);
        out
    }

    /// The instance this state machine runs.
    pub fn id(&self) -> InstanceId {
        self.id
    }

    /// This node's index.
    pub fn own_index(&self) -> u64 {
        self.own
    }

    /// The current round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The decided value, once decided.
    pub fn decided(&self) -> Option<&V> {
        self.decision.as_ref().map(|d| &d.value)
    }

    /// Whether this node leads `round`.
    pub fn is_leader(&self, round: u64) -> bool {
        leader(self.id, round, self.cfg.nodes) == self.own
    }

    // ===== Ingestion: validation and storage =====

    fn ingest(&mut self, msg: QbftMsg, out: &mut Vec<Output<V>>) -> Result<(), DropReason> {
        let body = &msg.msg.body;
        let kind = MsgKind::from_code(body.kind).ok_or(DropReason::UnknownKind(body.kind))?;
        if body.source >= self.cfg.nodes {
            return Err(DropReason::UnknownSource(body.source));
        }
        if body.source == self.own {
            return Err(DropReason::OwnSource);
        }
        if body.instance != self.id {
            return Err(DropReason::WrongInstance(body.instance));
        }
        if body.round == 0 {
            return Err(DropReason::ZeroRound);
        }
        let max = 2 * self.cfg.nodes as usize;
        if msg.justification.len() > max {
            return Err(DropReason::TooManyJustifications {
                count: msg.justification.len(),
                max,
            });
        }
        if msg.values.len() > MAX_VALUES {
            return Err(DropReason::Malformed("too many values"));
        }
        self.check_signature(&msg.msg)?;

        if self.decision.is_some() {
            return self.reply_decided(kind, body.source, out);
        }
        match kind {
            MsgKind::PrePrepare => self.ingest_pre_prepare(msg),
            MsgKind::Prepare | MsgKind::Commit => self.ingest_vote(kind, msg),
            MsgKind::RoundChange => self.ingest_round_change(msg),
            MsgKind::Decided => self.ingest_decided(msg, out),
        }
    }

    fn ingest_pre_prepare(&mut self, msg: QbftMsg) -> Result<(), DropReason> {
        let body = &msg.msg.body;
        if body.prepared_round != 0 || body.prepared_value_hash != ZERO_HASH {
            return Err(DropReason::Malformed(
                "PRE-PREPARE with prepared round/value",
            ));
        }
        self.check_window(body.round, false)?;
        let expected = leader(self.id, body.round, self.cfg.nodes);
        if body.source != expected {
            return Err(DropReason::NotLeader {
                round: body.round,
                leader: expected,
            });
        }
        if let Some(existing) = self
            .rounds
            .get(&body.round)
            .and_then(|r| r.proposal.as_ref())
        {
            return Err(if existing.msg == msg.msg {
                DropReason::Duplicate
            } else {
                DropReason::Equivocation
            });
        }
        let locked = if body.round == 1 {
            if !msg.justification.is_empty() {
                return Err(DropReason::Malformed(
                    "round-1 PRE-PREPARE with a justification",
                ));
            }
            false
        } else {
            self.check_pre_prepare_justification(body, &msg.justification)?
        };
        let value = self.extract_value(&msg.values, body.value_hash)?;
        self.values.insert(body.value_hash, value);
        let round = body.round;
        self.rounds.entry(round).or_default().proposal = Some(Proposal {
            msg: msg.msg,
            locked,
        });
        Ok(())
    }

    fn ingest_vote(&mut self, kind: MsgKind, msg: QbftMsg) -> Result<(), DropReason> {
        let body = &msg.msg.body;
        if body.prepared_round != 0 || body.prepared_value_hash != ZERO_HASH {
            return Err(DropReason::Malformed("vote with prepared round/value"));
        }
        if !msg.justification.is_empty() || !msg.values.is_empty() {
            return Err(DropReason::Malformed("vote with justification or values"));
        }
        // COMMITs of earlier rounds still prove a decision; PREPAREs of earlier rounds are useless.
        self.check_window(body.round, kind == MsgKind::Commit)?;
        let rs = self.rounds.entry(body.round).or_default();
        let votes = if kind == MsgKind::Prepare {
            &mut rs.prepares
        } else {
            &mut rs.commits
        };
        if let Some(existing) = votes.get(&body.source) {
            return Err(if *existing == msg.msg {
                DropReason::Duplicate
            } else {
                DropReason::Equivocation
            });
        }
        votes.insert(body.source, msg.msg);
        Ok(())
    }

    fn ingest_round_change(&mut self, msg: QbftMsg) -> Result<(), DropReason> {
        let body = &msg.msg.body;
        let (round, source) = (body.round, body.source);
        if body.value_hash != ZERO_HASH {
            return Err(DropReason::Malformed("ROUND-CHANGE with a value hash"));
        }
        if body.prepared_round >= round {
            return Err(DropReason::Malformed(
                "ROUND-CHANGE prepared in a round not below its own",
            ));
        }
        if body.prepared_round == 0
            && (body.prepared_value_hash != ZERO_HASH || !msg.justification.is_empty())
        {
            return Err(DropReason::Malformed(
                "unprepared ROUND-CHANGE with a prepared value or justification",
            ));
        }
        if round < self.round {
            return Err(DropReason::OldRound {
                round,
                current: self.round,
            });
        }
        let far = round > self.round.saturating_add(self.cfg.max_future_rounds);
        // Cheap duplicate/equivocation checks before verifying the certificate.
        if far {
            if let Some(existing) = self.far_round_changes.get(&source) {
                if existing.msg == msg.msg {
                    return Err(DropReason::Duplicate);
                }
                if existing.msg.body.round >= round {
                    return Err(DropReason::OldRound {
                        round,
                        current: existing.msg.body.round,
                    });
                }
            }
        } else if let Some(existing) = self
            .rounds
            .get(&round)
            .and_then(|r| r.round_changes.get(&source))
        {
            return Err(if existing.msg == msg.msg {
                DropReason::Duplicate
            } else {
                DropReason::Equivocation
            });
        }
        if body.prepared_round > 0 {
            self.check_quorum(
                &msg.justification,
                MsgKind::Prepare,
                body.prepared_round,
                body.prepared_value_hash,
                "ROUND-CHANGE prepared certificate",
            )?;
            let value = self.extract_value(&msg.values, body.prepared_value_hash)?;
            self.values.insert(body.prepared_value_hash, value);
        } else if !msg.values.is_empty() {
            return Err(DropReason::Malformed("unprepared ROUND-CHANGE with values"));
        }
        let stored = StoredRc {
            msg: msg.msg,
            certificate: msg.justification,
        };
        if far {
            self.far_round_changes.insert(source, stored);
        } else {
            self.rounds
                .entry(round)
                .or_default()
                .round_changes
                .insert(source, stored);
        }
        Ok(())
    }

    fn ingest_decided(&mut self, msg: QbftMsg, out: &mut Vec<Output<V>>) -> Result<(), DropReason> {
        let body = &msg.msg.body;
        if body.prepared_round != 0 || body.prepared_value_hash != ZERO_HASH {
            return Err(DropReason::Malformed("DECIDED with prepared round/value"));
        }
        self.check_quorum(
            &msg.justification,
            MsgKind::Commit,
            body.round,
            body.value_hash,
            "DECIDED commits",
        )?;
        let value = self.extract_value(&msg.values, body.value_hash)?;
        if !self.policy.is_valid(&value) {
            return Err(DropReason::InvalidValue);
        }
        self.decide(value, body.round, msg.justification, out);
        Ok(())
    }

    /// After deciding: answer a lagging peer's ROUND-CHANGE or PRE-PREPARE with DECIDED.
    fn reply_decided(
        &mut self,
        kind: MsgKind,
        peer: u64,
        out: &mut Vec<Output<V>>,
    ) -> Result<(), DropReason> {
        let Some(decision) = &self.decision else {
            return Err(DropReason::AlreadyDecided);
        };
        if !matches!(kind, MsgKind::RoundChange | MsgKind::PrePrepare) {
            return Err(DropReason::AlreadyDecided);
        }
        // Every request is answered (a restarted peer asks again from round 1), up to a budget.
        let count = self.replies.entry(peer).or_insert(0);
        if *count >= self.cfg.max_decided_replies {
            return Err(DropReason::AlreadyDecided);
        }
        *count += 1;
        out.push(Output::SendTo {
            peer,
            msg: decision.msg.clone(),
        });
        Ok(())
    }

    // ===== Validation helpers =====

    /// Rejects rounds outside the buffer window (and old rounds unless `allow_old`).
    fn check_window(&self, round: u64, allow_old: bool) -> Result<(), DropReason> {
        if round < self.round && !allow_old {
            return Err(DropReason::OldRound {
                round,
                current: self.round,
            });
        }
        if round > self.round.saturating_add(self.cfg.max_future_rounds) {
            return Err(DropReason::TooFarAhead {
                round,
                current: self.round,
            });
        }
        Ok(())
    }

    fn check_signature(&self, m: &SignedMsg) -> Result<(), DropReason> {
        if self
            .cfg
            .verifier
            .verify(m.body.source, &m.body.signing_bytes(), &m.signature)
        {
            Ok(())
        } else {
            Err(DropReason::InvalidSignature(m.body.source))
        }
    }

    fn check_embedded(
        &self,
        m: &SignedMsg,
        kind: MsgKind,
        what: &'static str,
    ) -> Result<(), DropReason> {
        check_embedded(&self.cfg, self.id, m, kind, what)
    }

    fn check_quorum(
        &self,
        msgs: &[SignedMsg],
        kind: MsgKind,
        round: u64,
        hash: Hash,
        what: &'static str,
    ) -> Result<(), DropReason> {
        check_quorum(&self.cfg, self.id, msgs, kind, round, hash, what)
    }

    /// Justification of a PRE-PREPARE of round > 1: a quorum of ROUND-CHANGEs for its round and,
    /// unless none of them is prepared, a quorum of PREPAREs for the highest prepared round and
    /// value, which must be the proposed value. Returns whether the value is locked.
    fn check_pre_prepare_justification(
        &self,
        body: &MsgBody,
        justification: &[SignedMsg],
    ) -> Result<bool, DropReason> {
        let mut rcs = Vec::new();
        let mut prepares = Vec::new();
        let mut rc_sources = BTreeSet::new();
        for m in justification {
            match m.body.msg_kind() {
                Some(MsgKind::RoundChange) => {
                    let b = &m.body;
                    if b.round != body.round {
                        return Err(DropReason::Unjustified(
                            "ROUND-CHANGE of another round in PRE-PREPARE justification",
                        ));
                    }
                    if b.value_hash != ZERO_HASH
                        || b.prepared_round >= b.round
                        || (b.prepared_round == 0 && b.prepared_value_hash != ZERO_HASH)
                    {
                        return Err(DropReason::Unjustified(
                            "ill-formed ROUND-CHANGE in PRE-PREPARE justification",
                        ));
                    }
                    if !rc_sources.insert(b.source) {
                        return Err(DropReason::Unjustified(
                            "duplicate ROUND-CHANGE sender in PRE-PREPARE justification",
                        ));
                    }
                    rcs.push(m);
                }
                Some(MsgKind::Prepare) => prepares.push(m.clone()),
                _ => {
                    return Err(DropReason::Unjustified(
                        "unexpected message kind in PRE-PREPARE justification",
                    ))
                }
            }
        }
        if rcs.len() < self.quorum {
            return Err(DropReason::Unjustified(
                "PRE-PREPARE justification has fewer than a quorum of ROUND-CHANGEs",
            ));
        }
        let highest = rcs.iter().map(|m| m.body.prepared_round).max().unwrap_or(0);
        if highest == 0 {
            if !prepares.is_empty() {
                return Err(DropReason::Unjustified(
                    "PRE-PREPARE justification has PREPAREs but no prepared ROUND-CHANGE",
                ));
            }
        } else {
            if !rcs.iter().any(|m| {
                m.body.prepared_round == highest && m.body.prepared_value_hash == body.value_hash
            }) {
                return Err(DropReason::Unjustified(
                    "PRE-PREPARE does not propose the highest prepared value",
                ));
            }
            self.check_quorum(
                &prepares,
                MsgKind::Prepare,
                highest,
                body.value_hash,
                "PRE-PREPARE justification lacks a quorum of PREPAREs for the highest prepared value",
            )?;
        }
        for m in rcs {
            self.check_embedded(
                m,
                MsgKind::RoundChange,
                "invalid ROUND-CHANGE in PRE-PREPARE justification",
            )?;
        }
        Ok(highest > 0)
    }

    /// Finds and decodes the carried value with the given hash.
    fn extract_value(&self, values: &[Vec<u8>], hash: Hash) -> Result<V, DropReason> {
        let mut decode_error = None;
        for bytes in values {
            match V::from_bytes(bytes) {
                Ok(v) if v.value_hash() == hash => return Ok(v),
                Ok(_) => {}
                Err(e) => decode_error = Some(e),
            }
        }
        Err(decode_error.map_or(DropReason::MissingValue, DropReason::ValueDecode))
    }

    // ===== Upon rules =====

    /// Applies the upon-rules until none fires.
    fn progress(&mut self, out: &mut Vec<Output<V>>) {
        while self.decision.is_none() {
            if self.try_decide(out) || self.input.is_none() {
                return;
            }
            let fired = self.try_jump_to_proposal(out)
                || self.try_f_plus_1(out)
                || self.try_propose(out)
                || self.try_accept_proposal(out)
                || self.try_commit(out);
            if !fired {
                return;
            }
        }
    }

    /// Quorum of COMMITs for one (round, value) in any round: decide (if the value is known and
    /// valid).
    fn try_decide(&mut self, out: &mut Vec<Output<V>>) -> bool {
        let mut found = None;
        'rounds: for (&round, rs) in &self.rounds {
            if rs.commits.len() < self.quorum {
                continue;
            }
            let mut counts: BTreeMap<Hash, usize> = BTreeMap::new();
            for c in rs.commits.values() {
                *counts.entry(c.body.value_hash).or_default() += 1;
            }
            for (hash, count) in counts {
                if count >= self.quorum
                    && self.values.contains_key(&hash)
                    && !self.invalid_decisions.contains(&hash)
                {
                    found = Some((round, hash));
                    break 'rounds;
                }
            }
        }
        let Some((round, hash)) = found else {
            return false;
        };
        let value = self.values[&hash].clone();
        if !self.policy.is_valid(&value) {
            // A quorum committed a value this node considers invalid: never decide it.
            self.invalid_decisions.insert(hash);
            let source = leader(self.id, round, self.cfg.nodes);
            out.push(Output::Dropped {
                source,
                reason: DropReason::InvalidValue,
            });
            return false;
        }
        let commits: Vec<SignedMsg> = self.rounds[&round]
            .commits
            .values()
            .filter(|c| c.body.value_hash == hash)
            .cloned()
            .collect();
        self.decide(value, round, commits, out);
        true
    }

    fn decide(&mut self, value: V, round: u64, commits: Vec<SignedMsg>, out: &mut Vec<Output<V>>) {
        let hash = value.value_hash();
        let body = self.body(MsgKind::Decided, round, hash, 0, ZERO_HASH);
        let msg = QbftMsg {
            msg: self.sign(body),
            justification: commits.clone(),
            values: vec![value.to_bytes()],
        };
        self.decision = Some(Decision {
            value: value.clone(),
            msg,
        });
        // Free the buffers; only the decision is needed from now on.
        self.rounds.clear();
        self.far_round_changes.clear();
        self.values.clear();
        out.push(Output::Decided {
            value,
            round,
            commits,
        });
    }

    /// A justified PRE-PREPARE for a future round: move there (its justification proves a
    /// quorum asked for that round).
    fn try_jump_to_proposal(&mut self, out: &mut Vec<Output<V>>) -> bool {
        let target = self
            .rounds
            .range(self.round + 1..)
            .rev()
            .find(|(_, rs)| rs.proposal.is_some())
            .map(|(r, _)| *r);
        match target {
            Some(r) => {
                self.change_round(r, out);
                true
            }
            None => false,
        }
    }

    /// f+1 ROUND-CHANGEs for rounds above the current one: move to the smallest round of the
    /// f+1 senders' highest requested rounds (at least one honest node is there) and send a
    /// ROUND-CHANGE for it.
    fn try_f_plus_1(&mut self, out: &mut Vec<Output<V>>) -> bool {
        let mut highest: BTreeMap<u64, u64> = BTreeMap::new();
        for (&round, rs) in self.rounds.range(self.round + 1..) {
            for &source in rs.round_changes.keys() {
                highest.insert(source, round); // ascending rounds: the last insert is the highest
            }
        }
        for (&source, rc) in &self.far_round_changes {
            highest.insert(source, rc.msg.body.round);
        }
        if highest.len() <= self.faulty {
            return false;
        }
        let mut rounds: Vec<u64> = highest.into_values().collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let target = rounds[self.faulty];
        self.change_round(target, out);
        self.broadcast_round_change(out);
        true
    }

    /// Leader of the current round with its justification: send the PRE-PREPARE.
    fn try_propose(&mut self, out: &mut Vec<Output<V>>) -> bool {
        let round = self.round;
        if self.proposed_round == Some(round) || !self.is_leader(round) {
            return false;
        }
        let Some(input) = self.input.clone() else {
            return false;
        };
        let (value, justification, locked) = if round == 1 {
            (input, Vec::new(), false)
        } else {
            let Some(rs) = self.rounds.get(&round) else {
                return false;
            };
            if rs.round_changes.len() < self.quorum {
                return false;
            }
            let highest = rs
                .round_changes
                .values()
                .max_by_key(|rc| rc.msg.body.prepared_round);
            let mut justification: Vec<SignedMsg> =
                rs.round_changes.values().map(|rc| rc.msg.clone()).collect();
            match highest.filter(|rc| rc.msg.body.prepared_round > 0) {
                Some(rc) => {
                    let Some(value) = self.values.get(&rc.msg.body.prepared_value_hash).cloned()
                    else {
                        return false; // unreachable: stored with the ROUND-CHANGE
                    };
                    justification.extend(rc.certificate.iter().cloned());
                    (value, justification, true)
                }
                None => (input, justification, false),
            }
        };
        self.proposed_round = Some(round);
        let hash = value.value_hash();
        let body = self.body(MsgKind::PrePrepare, round, hash, 0, ZERO_HASH);
        let signed = self.sign(body);
        out.push(Output::Broadcast(QbftMsg {
            msg: signed.clone(),
            justification,
            values: vec![value.to_bytes()],
        }));
        self.values.insert(hash, value);
        self.rounds.entry(round).or_default().proposal = Some(Proposal {
            msg: signed,
            locked,
        });
        true
    }

    /// The current round's proposal: check it and PREPARE it.
    fn try_accept_proposal(&mut self, out: &mut Vec<Output<V>>) -> bool {
        let round = self.round;
        if self.accepted_round == Some(round) || self.refused_round == Some(round) {
            return false;
        }
        let Some(proposal) = self.rounds.get(&round).and_then(|rs| rs.proposal.as_ref()) else {
            return false;
        };
        let (hash, source, locked) = (
            proposal.msg.body.value_hash,
            proposal.msg.body.source,
            proposal.locked,
        );
        let Some(value) = self.values.get(&hash) else {
            return false;
        };
        let refusal = if !self.policy.is_valid(value) {
            Some(DropReason::InvalidValue)
        } else if !locked
            && source != self.own
            && !self
                .input
                .as_ref()
                .is_some_and(|own| self.policy.compare(value, own))
        {
            Some(DropReason::CompareRejected)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.refused_round = Some(round);
            out.push(Output::Dropped { source, reason });
            return true;
        }
        self.accepted_round = Some(round);
        let by = self.cfg.timer.proposal_extension(round);
        if !by.is_zero() {
            out.push(Output::ExtendTimeout { round, by });
        }
        let body = self.body(MsgKind::Prepare, round, hash, 0, ZERO_HASH);
        let signed = self.emit(body, Vec::new(), Vec::new(), out);
        self.rounds
            .entry(round)
            .or_default()
            .prepares
            .insert(self.own, signed);
        true
    }

    /// A quorum of PREPAREs for the accepted proposal: become prepared and COMMIT.
    fn try_commit(&mut self, out: &mut Vec<Output<V>>) -> bool {
        let round = self.round;
        if self.accepted_round != Some(round) || self.committed_round == Some(round) {
            return false;
        }
        let Some(rs) = self.rounds.get(&round) else {
            return false;
        };
        let Some(hash) = rs.proposal.as_ref().map(|p| p.msg.body.value_hash) else {
            return false;
        };
        let prepares: Vec<SignedMsg> = rs
            .prepares
            .values()
            .filter(|p| p.body.value_hash == hash)
            .cloned()
            .collect();
        if prepares.len() < self.quorum {
            return false;
        }
        self.prepared = Some(Prepared {
            round,
            hash,
            prepares,
        });
        self.committed_round = Some(round);
        let body = self.body(MsgKind::Commit, round, hash, 0, ZERO_HASH);
        let signed = self.emit(body, Vec::new(), Vec::new(), out);
        self.rounds
            .entry(round)
            .or_default()
            .commits
            .insert(self.own, signed);
        true
    }

    // ===== Round changes and sending =====

    /// Moves to `round` (> current): arms its timer, pulls in buffered far ROUND-CHANGEs and
    /// frees state of earlier rounds (keeping their COMMITs, which can still prove a decision).
    fn change_round(&mut self, round: u64, out: &mut Vec<Output<V>>) {
        self.round = round;
        self.accepted_round = None;
        self.refused_round = None;
        self.committed_round = None;
        out.push(Output::ScheduleTimeout {
            round,
            after: self.cfg.timer.round_timeout(round),
        });

        let horizon = round.saturating_add(self.cfg.max_future_rounds);
        let near: Vec<u64> = self
            .far_round_changes
            .iter()
            .filter(|(_, rc)| rc.msg.body.round <= horizon)
            .map(|(s, _)| *s)
            .collect();
        for source in near {
            if let Some(rc) = self.far_round_changes.remove(&source) {
                if rc.msg.body.round >= round {
                    self.rounds
                        .entry(rc.msg.body.round)
                        .or_default()
                        .round_changes
                        .entry(source)
                        .or_insert(rc);
                }
            }
        }
        let old: Vec<u64> = self.rounds.range(..round).map(|(r, _)| *r).collect();
        for r in old {
            if let Some(rs) = self.rounds.get_mut(&r) {
                rs.proposal = None;
                rs.prepares.clear();
                rs.round_changes.clear();
                if rs.is_empty() {
                    self.rounds.remove(&r);
                }
            }
        }
    }

    /// Sends a ROUND-CHANGE for the current round with this node's prepared certificate.
    fn broadcast_round_change(&mut self, out: &mut Vec<Output<V>>) {
        let round = self.round;
        let (body, certificate, values) = match &self.prepared {
            Some(p) => {
                let value = self.values.get(&p.hash).map(|v| v.to_bytes());
                (
                    self.body(MsgKind::RoundChange, round, ZERO_HASH, p.round, p.hash),
                    p.prepares.clone(),
                    value.into_iter().collect(),
                )
            }
            None => (
                self.body(MsgKind::RoundChange, round, ZERO_HASH, 0, ZERO_HASH),
                Vec::new(),
                Vec::new(),
            ),
        };
        let signed = self.emit(body, certificate.clone(), values, out);
        self.rounds.entry(round).or_default().round_changes.insert(
            self.own,
            StoredRc {
                msg: signed,
                certificate,
            },
        );
    }

    fn body(
        &self,
        kind: MsgKind,
        round: u64,
        value_hash: Hash,
        prepared_round: u64,
        prepared_value_hash: Hash,
    ) -> MsgBody {
        MsgBody {
            kind: kind.code(),
            instance: self.id,
            source: self.own,
            round,
            value_hash,
            prepared_round,
            prepared_value_hash,
        }
    }

    fn sign(&self, body: MsgBody) -> SignedMsg {
        let signature = self.cfg.signer.sign(&body.signing_bytes());
        SignedMsg { body, signature }
    }

    /// Signs and broadcasts; returns the signed message for local storage.
    fn emit(
        &self,
        body: MsgBody,
        justification: Vec<SignedMsg>,
        values: Vec<Vec<u8>>,
        out: &mut Vec<Output<V>>,
    ) -> SignedMsg {
        let signed = self.sign(body);
        out.push(Output::Broadcast(QbftMsg {
            msg: signed.clone(),
            justification,
            values,
        }));
        signed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::sim::{
        sim_keys, KeyedHashSigner, KeyedHashVerifier, SimPolicy, SimValue, INVALID_VALUE_BASE,
    };

    const ID: InstanceId = InstanceId { slot: 100, duty: 1 };

    /// A 4- (or n-) node test cluster with keyed-hash signatures.
    struct Cluster {
        keys: Vec<[u8; 32]>,
        n: u64,
    }

    impl Cluster {
        fn new(n: u64) -> Self {
            Self {
                keys: sim_keys(n as usize, 7),
                n,
            }
        }

        fn config(&self, own: u64) -> Config {
            Config::new(
                self.n,
                Arc::new(KeyedHashSigner::new(self.keys[own as usize])),
                Arc::new(KeyedHashVerifier::new(self.keys.clone())),
            )
        }

        fn instance(&self, own: u64) -> Instance<SimValue> {
            Instance::new(self.config(own), ID, own, Box::new(SimPolicy)).unwrap()
        }

        fn sign(&self, body: MsgBody) -> SignedMsg {
            let signature =
                KeyedHashSigner::new(self.keys[body.source as usize]).sign(&body.signing_bytes());
            SignedMsg { body, signature }
        }

        fn vote(&self, kind: MsgKind, source: u64, round: u64, value: SimValue) -> SignedMsg {
            self.sign(body(kind, source, round, value.value_hash(), 0, ZERO_HASH))
        }

        fn rc(&self, source: u64, round: u64, prepared: Option<(u64, SimValue)>) -> SignedMsg {
            let (pr, ph) = prepared.map_or((0, ZERO_HASH), |(r, v)| (r, v.value_hash()));
            self.sign(body(MsgKind::RoundChange, source, round, ZERO_HASH, pr, ph))
        }
    }

    fn body(
        kind: MsgKind,
        source: u64,
        round: u64,
        value_hash: Hash,
        pr: u64,
        ph: Hash,
    ) -> MsgBody {
        MsgBody {
            kind: kind.code(),
            instance: ID,
            source,
            round,
            value_hash,
            prepared_round: pr,
            prepared_value_hash: ph,
        }
    }

    fn plain(msg: SignedMsg) -> QbftMsg {
        QbftMsg {
            msg,
            justification: Vec::new(),
            values: Vec::new(),
        }
    }

    fn dropped<V>(out: &[Output<V>]) -> Vec<DropReason> {
        out.iter()
            .filter_map(|o| match o {
                Output::Dropped { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }

    fn broadcasts<V>(out: &[Output<V>]) -> Vec<&QbftMsg> {
        out.iter()
            .filter_map(|o| match o {
                Output::Broadcast(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    fn sent_kind<V>(out: &[Output<V>], kind: MsgKind) -> bool {
        broadcasts(out).iter().any(|m| m.kind() == Some(kind))
    }

    /// A node index that is not the leader of `round` (and not `not`).
    fn follower(round: u64, n: u64, not: u64) -> u64 {
        (0..n)
            .find(|&i| i != leader(ID, round, n) && i != not)
            .unwrap()
    }

    #[test]
    fn quorum_math() {
        let table = [
            (1, 1, 0),
            (2, 2, 0),
            (3, 2, 0),
            (4, 3, 1),
            (5, 4, 1),
            (6, 4, 1),
            (7, 5, 2),
            (10, 7, 3),
            (13, 9, 4),
        ];
        for (n, q, f) in table {
            assert_eq!((quorum(n), max_faulty(n)), (q, f), "n = {n}");
        }
        for n in 1..=MAX_NODES {
            let (q, f) = (quorum(n), max_faulty(n));
            assert!(
                2 * q > n + f,
                "n = {n}: two quorums must share an honest node"
            );
            assert!(q <= n - f, "n = {n}: honest nodes alone must form a quorum");
            assert!(
                3 * q >= 2 * n && 3 * (q - 1) < 2 * n,
                "n = {n}: q = ceil(2n/3)"
            );
        }
    }

    #[test]
    fn leader_rotates_over_all_nodes() {
        for n in [1, 4, 7] {
            let leaders: BTreeSet<u64> = (1..=n).map(|r| leader(ID, r, n)).collect();
            assert_eq!(leaders.len() as u64, n);
        }
        assert_ne!(
            leader(ID, 1, 4),
            leader(InstanceId { slot: 101, duty: 1 }, 1, 4)
        );
        assert_ne!(
            leader(ID, 1, 4),
            leader(InstanceId { slot: 100, duty: 2 }, 1, 4)
        );
        assert!(
            leader(
                InstanceId {
                    slot: u64::MAX,
                    duty: u64::MAX
                },
                u64::MAX,
                7
            ) < 7
        );
    }

    #[test]
    fn new_rejects_bad_config() {
        let c = Cluster::new(4);
        let err = Instance::<SimValue>::new(c.config(0), ID, 4, Box::new(SimPolicy)).unwrap_err();
        assert_eq!(err, ConfigError::OwnIndex { own: 4, nodes: 4 });
        let mut cfg = c.config(0);
        cfg.nodes = 0;
        assert_eq!(
            Instance::<SimValue>::new(cfg, ID, 0, Box::new(SimPolicy)).unwrap_err(),
            ConfigError::ClusterSize(0)
        );
        let mut cfg = c.config(0);
        cfg.max_future_rounds = 0;
        assert_eq!(
            Instance::<SimValue>::new(cfg, ID, 0, Box::new(SimPolicy)).unwrap_err(),
            ConfigError::FutureRounds
        );
    }

    /// Runs a synchronous cluster to completion by delivering every broadcast in FIFO order.
    #[test]
    fn happy_path_decides_leader_value_in_round_one() {
        let c = Cluster::new(4);
        let mut nodes: Vec<_> = (0..4).map(|i| c.instance(i)).collect();
        let mut queue = std::collections::VecDeque::new();
        let mut decided = Vec::new();
        let mut extended = Vec::new();
        for (i, node) in nodes.iter_mut().enumerate() {
            queue.extend(
                node.start(SimValue(10 + i as u64))
                    .into_iter()
                    .map(|o| (i, o)),
            );
        }
        while let Some((from, o)) = queue.pop_front() {
            match o {
                Output::Broadcast(m) => {
                    for (to, node) in nodes.iter_mut().enumerate().filter(|(to, _)| *to != from) {
                        let bytes = m.encode();
                        let out = node.handle_message(QbftMsg::decode(&bytes).unwrap());
                        // Only late COMMITs after the decision are ignored.
                        let drops = dropped(&out);
                        assert!(
                            drops.iter().all(|d| *d == DropReason::AlreadyDecided),
                            "{drops:?}"
                        );
                        queue.extend(
                            out.into_iter()
                                .filter(|o| !matches!(o, Output::Dropped { .. }))
                                .map(|o| (to, o)),
                        );
                    }
                }
                Output::Decided {
                    value,
                    round,
                    commits,
                } => {
                    verify_decision(&c.config(0), ID, round, value.value_hash(), &commits).unwrap();
                    decided.push((from, value, round));
                }
                Output::ExtendTimeout { round, by } => extended.push((from, round, by)),
                Output::ScheduleTimeout { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let l = leader(ID, 1, 4);
        assert_eq!(decided.len(), 4);
        // Every node accepted the round-1 proposal, and so doubled its round 1 (750 ms more).
        extended.sort();
        assert_eq!(
            extended,
            (0..4)
                .map(|i| (i, 1, Duration::from_millis(750)))
                .collect::<Vec<_>>()
        );
        assert!(
            decided
                .iter()
                .all(|(_, v, r)| *v == SimValue(10 + l) && *r == 1),
            "{decided:?}"
        );
    }

    #[test]
    fn rejects_bad_envelopes() {
        let c = Cluster::new(4);
        let own = 1;
        let mut inst = c.instance(own);
        inst.start(SimValue(1));
        let v = SimValue(5);
        let other = (own + 1) % 4;

        let mut m = c.vote(MsgKind::Prepare, other, 1, v);
        m.body.kind = 42;
        assert_eq!(
            dropped(&inst.handle_message(plain(m))),
            vec![DropReason::UnknownKind(42)]
        );

        let m = SignedMsg {
            body: body(MsgKind::Prepare, 9, 1, v.value_hash(), 0, ZERO_HASH),
            signature: vec![],
        };
        assert_eq!(
            dropped(&inst.handle_message(plain(m))),
            vec![DropReason::UnknownSource(9)]
        );

        let m = c.vote(MsgKind::Prepare, own, 1, v);
        assert_eq!(
            dropped(&inst.handle_message(plain(m))),
            vec![DropReason::OwnSource]
        );

        let mut m = c.vote(MsgKind::Prepare, other, 1, v);
        m.body.instance.slot += 1;
        let m = c.sign(m.body);
        assert_eq!(
            dropped(&inst.handle_message(plain(m))),
            vec![DropReason::WrongInstance(InstanceId { slot: 101, duty: 1 })]
        );

        let m = c.vote(MsgKind::Prepare, other, 0, v);
        assert_eq!(
            dropped(&inst.handle_message(plain(m))),
            vec![DropReason::ZeroRound]
        );

        // Signed by another node's key: forgery.
        let mut m = c.vote(MsgKind::Prepare, other, 1, v);
        m.body.source = (other + 1) % 4;
        assert_eq!(
            dropped(&inst.handle_message(plain(m))),
            vec![DropReason::InvalidSignature((other + 1) % 4)]
        );

        let m = c.vote(MsgKind::Prepare, other, 1, v);
        assert!(dropped(&inst.handle_message(plain(m.clone()))).is_empty());
        assert_eq!(
            dropped(&inst.handle_message(plain(m))),
            vec![DropReason::Duplicate]
        );
        let m = c.vote(MsgKind::Prepare, other, 1, SimValue(6));
        assert_eq!(
            dropped(&inst.handle_message(plain(m))),
            vec![DropReason::Equivocation]
        );

        let m = c.vote(MsgKind::Commit, other, 1 + DEFAULT_MAX_FUTURE_ROUNDS + 1, v);
        assert!(matches!(
            dropped(&inst.handle_message(plain(m)))[..],
            [DropReason::TooFarAhead { .. }]
        ));

        let mut m = plain(c.vote(MsgKind::Commit, other, 1, v));
        m.values = vec![v.to_bytes()];
        assert!(matches!(
            dropped(&inst.handle_message(m))[..],
            [DropReason::Malformed(_)]
        ));

        let mut m = plain(c.vote(MsgKind::Commit, other, 1, v));
        m.justification = vec![c.vote(MsgKind::Commit, other, 1, v); 9];
        assert_eq!(
            dropped(&inst.handle_message(m)),
            vec![DropReason::TooManyJustifications { count: 9, max: 8 }]
        );
    }

    /// Node `own` at round 1 receives a PRE-PREPARE for round 2 with the given justification.
    fn pre_prepare_round2(
        c: &Cluster,
        value: SimValue,
        justification: Vec<SignedMsg>,
        policy: Box<dyn ValuePolicy<SimValue>>,
    ) -> (Vec<Output<SimValue>>, Instance<SimValue>) {
        let l2 = leader(ID, 2, c.n);
        let own = follower(2, c.n, u64::MAX);
        let mut inst = Instance::new(c.config(own), ID, own, policy).unwrap();
        inst.start(SimValue(3));
        let pp = c.sign(body(
            MsgKind::PrePrepare,
            l2,
            2,
            value.value_hash(),
            0,
            ZERO_HASH,
        ));
        let out = inst.handle_message(QbftMsg {
            msg: pp,
            justification,
            values: vec![value.to_bytes()],
        });
        (out, inst)
    }

    #[test]
    fn pre_prepare_justification_null_round_changes() {
        let c = Cluster::new(4);
        let v = SimValue(77);
        let rcs: Vec<_> = (0..3).map(|s| c.rc(s, 2, None)).collect();
        let (out, inst) = pre_prepare_round2(&c, v, rcs.clone(), Box::new(SimPolicy));
        assert!(dropped(&out).is_empty(), "{:?}", dropped(&out));
        assert_eq!(inst.round(), 2);
        let prepare = broadcasts(&out)
            .into_iter()
            .find(|m| m.kind() == Some(MsgKind::Prepare))
            .unwrap();
        assert_eq!(prepare.msg.body.value_hash, v.value_hash());
        assert!(out.contains(&Output::ScheduleTimeout {
            round: 2,
            after: Duration::from_millis(1000)
        }));
        // Only round 1 is extended on an accepted proposal (see `TimerStrategy::proposal_extension`).
        assert!(!out
            .iter()
            .any(|o| matches!(o, Output::ExtendTimeout { .. })));

        // Fewer than a quorum of ROUND-CHANGEs.
        let (out, inst) = pre_prepare_round2(&c, v, rcs[..2].to_vec(), Box::new(SimPolicy));
        assert!(
            matches!(dropped(&out)[..], [DropReason::Unjustified(_)]),
            "{:?}",
            dropped(&out)
        );
        assert_eq!(inst.round(), 1);
        assert!(!sent_kind(&out, MsgKind::Prepare));
        // No proposal accepted: the round keeps its plain timeout.
        assert!(!out
            .iter()
            .any(|o| matches!(o, Output::ExtendTimeout { .. })));

        // Duplicate sender padding the quorum.
        let dup = vec![rcs[0].clone(), rcs[1].clone(), rcs[1].clone()];
        let (out, _) = pre_prepare_round2(&c, v, dup, Box::new(SimPolicy));
        assert!(matches!(dropped(&out)[..], [DropReason::Unjustified(_)]));

        // ROUND-CHANGEs for another round.
        let other: Vec<_> = (0..3).map(|s| c.rc(s, 3, None)).collect();
        let (out, _) = pre_prepare_round2(&c, v, other, Box::new(SimPolicy));
        assert!(matches!(dropped(&out)[..], [DropReason::Unjustified(_)]));

        // A forged ROUND-CHANGE.
        let mut forged = rcs.clone();
        forged[2].signature[0] ^= 1;
        let (out, _) = pre_prepare_round2(&c, v, forged, Box::new(SimPolicy));
        assert_eq!(dropped(&out), vec![DropReason::InvalidSignature(2)]);

        // Round 1 PRE-PREPARE must not carry a justification; wrong leader is refused.
        let mut inst = c.instance(follower(1, 4, u64::MAX));
        inst.start(SimValue(1));
        let l1 = leader(ID, 1, 4);
        let pp = c.sign(body(
            MsgKind::PrePrepare,
            l1,
            1,
            v.value_hash(),
            0,
            ZERO_HASH,
        ));
        let out = inst.handle_message(QbftMsg {
            msg: pp,
            justification: rcs,
            values: vec![v.to_bytes()],
        });
        assert!(matches!(dropped(&out)[..], [DropReason::Malformed(_)]));
        let not_leader = (l1 + 1) % 4;
        let pp = c.sign(body(
            MsgKind::PrePrepare,
            not_leader,
            1,
            v.value_hash(),
            0,
            ZERO_HASH,
        ));
        let out = inst.handle_message(QbftMsg {
            msg: pp,
            justification: vec![],
            values: vec![v.to_bytes()],
        });
        assert_eq!(
            dropped(&out),
            vec![DropReason::NotLeader {
                round: 1,
                leader: l1
            }]
        );
        // Value missing or not matching its hash.
        let pp = c.sign(body(
            MsgKind::PrePrepare,
            l1,
            1,
            v.value_hash(),
            0,
            ZERO_HASH,
        ));
        let out = inst.handle_message(QbftMsg {
            msg: pp.clone(),
            justification: vec![],
            values: vec![],
        });
        assert_eq!(dropped(&out), vec![DropReason::MissingValue]);
        let out = inst.handle_message(QbftMsg {
            msg: pp.clone(),
            justification: vec![],
            values: vec![SimValue(8).to_bytes()],
        });
        assert_eq!(dropped(&out), vec![DropReason::MissingValue]);
        let out = inst.handle_message(QbftMsg {
            msg: pp,
            justification: vec![],
            values: vec![vec![1, 2]],
        });
        assert!(matches!(dropped(&out)[..], [DropReason::ValueDecode(_)]));
    }

    #[test]
    fn pre_prepare_justification_with_prepared_certificate() {
        let c = Cluster::new(4);
        let locked = SimValue(55);
        let prepares: Vec<_> = (0..3)
            .map(|s| c.vote(MsgKind::Prepare, s, 1, locked))
            .collect();
        let rcs = vec![
            c.rc(0, 2, Some((1, locked))),
            c.rc(1, 2, None),
            c.rc(2, 2, None),
        ];

        // A policy whose compare hook refuses everything: a locked value is still prepared.
        struct Refuse;
        impl ValuePolicy<SimValue> for Refuse {
            fn is_valid(&self, v: &SimValue) -> bool {
                v.0 < INVALID_VALUE_BASE
            }
            fn compare(&self, _: &SimValue, _: &SimValue) -> bool {
                false
            }
        }
        let mut just = rcs.clone();
        just.extend(prepares.iter().cloned());
        let (out, _) = pre_prepare_round2(&c, locked, just.clone(), Box::new(Refuse));
        assert!(dropped(&out).is_empty(), "{:?}", dropped(&out));
        assert!(sent_kind(&out, MsgKind::Prepare));

        // Proposing another value than the highest prepared one.
        let mut other_just = rcs.clone();
        other_just.extend(prepares.iter().cloned());
        let (out, _) = pre_prepare_round2(&c, SimValue(56), other_just, Box::new(SimPolicy));
        assert!(matches!(dropped(&out)[..], [DropReason::Unjustified(_)]));

        // Prepared ROUND-CHANGE without the PREPARE quorum.
        let mut short = rcs.clone();
        short.extend(prepares[..2].iter().cloned());
        let (out, _) = pre_prepare_round2(&c, locked, short, Box::new(SimPolicy));
        assert!(matches!(dropped(&out)[..], [DropReason::Unjustified(_)]));

        // PREPAREs for the wrong round.
        let mut wrong = rcs.clone();
        wrong.extend((0..3).map(|s| c.vote(MsgKind::Prepare, s, 2, locked)));
        let (out, _) = pre_prepare_round2(&c, locked, wrong, Box::new(SimPolicy));
        assert!(matches!(dropped(&out)[..], [DropReason::Unjustified(_)]));

        // Fresh (unlocked) value: the compare hook is consulted and refuses it.
        let nulls: Vec<_> = (0..3).map(|s| c.rc(s, 2, None)).collect();
        let (out, _) = pre_prepare_round2(&c, SimValue(9), nulls.clone(), Box::new(Refuse));
        assert_eq!(dropped(&out), vec![DropReason::CompareRejected]);
        assert!(!sent_kind(&out, MsgKind::Prepare));

        // Invalid value: never prepared.
        let (out, _) = pre_prepare_round2(
            &c,
            SimValue(INVALID_VALUE_BASE + 1),
            nulls,
            Box::new(SimPolicy),
        );
        assert_eq!(dropped(&out), vec![DropReason::InvalidValue]);
        assert!(!sent_kind(&out, MsgKind::Prepare));
    }

    #[test]
    fn round_change_justification() {
        let c = Cluster::new(4);
        let own = 3;
        let v = SimValue(12);
        let new = || {
            let mut inst = c.instance(own);
            inst.start(SimValue(1));
            inst
        };
        let prepares: Vec<_> = (0..3).map(|s| c.vote(MsgKind::Prepare, s, 1, v)).collect();
        let rc = c.rc(0, 2, Some((1, v)));

        let mut inst = new();
        let out = inst.handle_message(QbftMsg {
            msg: rc.clone(),
            justification: prepares.clone(),
            values: vec![v.to_bytes()],
        });
        assert!(dropped(&out).is_empty(), "{:?}", dropped(&out));

        let mut inst = new();
        let out = inst.handle_message(QbftMsg {
            msg: rc.clone(),
            justification: prepares[..2].to_vec(),
            values: vec![v.to_bytes()],
        });
        assert!(matches!(dropped(&out)[..], [DropReason::Unjustified(_)]));

        let mut inst = new();
        let out = inst.handle_message(QbftMsg {
            msg: rc.clone(),
            justification: prepares.clone(),
            values: vec![],
        });
        assert_eq!(dropped(&out), vec![DropReason::MissingValue]);

        let mut inst = new();
        let mut forged = prepares.clone();
        forged[1].body.source = 3;
        let out = inst.handle_message(QbftMsg {
            msg: rc,
            justification: forged,
            values: vec![v.to_bytes()],
        });
        assert_eq!(dropped(&out), vec![DropReason::InvalidSignature(3)]);

        // Prepared round must be below the round; unprepared must not carry a certificate.
        let mut inst = new();
        let bad = c.rc(0, 2, Some((2, v)));
        let out = inst.handle_message(QbftMsg {
            msg: bad,
            justification: prepares.clone(),
            values: vec![v.to_bytes()],
        });
        assert!(matches!(dropped(&out)[..], [DropReason::Malformed(_)]));
        let mut inst = new();
        let out = inst.handle_message(QbftMsg {
            msg: c.rc(0, 2, None),
            justification: prepares,
            values: vec![],
        });
        assert!(matches!(dropped(&out)[..], [DropReason::Malformed(_)]));
    }

    #[test]
    fn f_plus_1_rule_jumps_to_smallest_of_highest_rounds() {
        let c = Cluster::new(4);
        let own = 0;
        let mut inst = c.instance(own);
        inst.start(SimValue(1));
        // One ROUND-CHANGE (f = 1) is not enough.
        let out = inst.handle_message(plain(c.rc(1, 5, None)));
        assert_eq!(inst.round(), 1);
        assert!(!sent_kind(&out, MsgKind::RoundChange));
        // A second sender for round 3: jump to 3 (an honest node is at least there).
        let out = inst.handle_message(plain(c.rc(2, 3, None)));
        assert_eq!(inst.round(), 3);
        let rc = broadcasts(&out)
            .into_iter()
            .find(|m| m.kind() == Some(MsgKind::RoundChange))
            .unwrap();
        assert_eq!(rc.round(), 3);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::ScheduleTimeout { round: 3, .. })));
        // Stale timer of round 1 is ignored; a timeout of round 3 moves to 4 with a ROUND-CHANGE.
        assert!(inst.handle_timeout(1).is_empty());
        let out = inst.handle_timeout(3);
        assert_eq!(inst.round(), 4);
        assert!(sent_kind(&out, MsgKind::RoundChange));
        // Old-round messages are refused.
        let out = inst.handle_message(plain(c.rc(3, 2, None)));
        assert_eq!(
            dropped(&out),
            vec![DropReason::OldRound {
                round: 2,
                current: 4
            }]
        );
    }

    #[test]
    fn far_future_round_changes_still_count_for_f_plus_1() {
        let c = Cluster::new(4);
        let mut inst = c.instance(0);
        inst.start(SimValue(1));
        let far = 1 + DEFAULT_MAX_FUTURE_ROUNDS + 50;
        assert!(dropped(&inst.handle_message(plain(c.rc(1, far, None)))).is_empty());
        assert!(dropped(&inst.handle_message(plain(c.rc(2, far + 1, None)))).is_empty());
        assert_eq!(inst.round(), far);
    }

    #[test]
    fn leader_proposes_highest_prepared_value_after_round_change() {
        let c = Cluster::new(4);
        let l2 = leader(ID, 2, 4);
        let mut inst = c.instance(l2);
        inst.start(SimValue(1000 + l2));
        let locked = SimValue(55);
        let prepares: Vec<_> = (0..3)
            .map(|s| c.vote(MsgKind::Prepare, s, 1, locked))
            .collect();
        let senders: Vec<u64> = (0..4).filter(|&s| s != l2).collect();
        let mut out = Vec::new();
        for (i, &s) in senders.iter().enumerate() {
            let (msg, justification, values) = if i == 0 {
                (
                    c.rc(s, 2, Some((1, locked))),
                    prepares.clone(),
                    vec![locked.to_bytes()],
                )
            } else {
                (c.rc(s, 2, None), vec![], vec![])
            };
            out.extend(inst.handle_message(QbftMsg {
                msg,
                justification,
                values,
            }));
        }
        assert_eq!(inst.round(), 2);
        let pp = broadcasts(&out)
            .into_iter()
            .find(|m| m.kind() == Some(MsgKind::PrePrepare))
            .unwrap()
            .clone();
        assert_eq!(pp.msg.body.value_hash, locked.value_hash());
        assert_eq!(pp.values, vec![locked.to_bytes()]);
        // Another node accepts that PRE-PREPARE as justified.
        let own = follower(2, 4, u64::MAX);
        let mut other = c.instance(own);
        other.start(SimValue(2));
        let out = other.handle_message(pp);
        assert!(dropped(&out).is_empty(), "{:?}", dropped(&out));
        assert!(sent_kind(&out, MsgKind::Prepare));
    }

    #[test]
    fn decided_message_justification() {
        let c = Cluster::new(4);
        let v = SimValue(31);
        let commits: Vec<_> = (0..3).map(|s| c.vote(MsgKind::Commit, s, 2, v)).collect();
        let decided = |source: u64, value: SimValue, commits: Vec<SignedMsg>| QbftMsg {
            msg: c.sign(body(
                MsgKind::Decided,
                source,
                2,
                value.value_hash(),
                0,
                ZERO_HASH,
            )),
            justification: commits,
            values: vec![value.to_bytes()],
        };

        // Before start: a valid DECIDED is honoured; start afterwards does nothing.
        let mut inst = c.instance(3);
        let out = inst.handle_message(decided(0, v, commits.clone()));
        assert!(
            matches!(&out[..], [Output::Decided { value, round: 2, .. }] if *value == v),
            "{out:?}"
        );
        assert!(inst.start(SimValue(1)).is_empty());
        assert_eq!(inst.decided(), Some(&v));

        let mut inst = c.instance(3);
        inst.start(SimValue(1));
        let out = inst.handle_message(decided(0, v, commits[..2].to_vec()));
        assert!(matches!(dropped(&out)[..], [DropReason::Unjustified(_)]));
        let mut mixed = commits.clone();
        mixed[2] = c.vote(MsgKind::Commit, 2, 1, v);
        let out = inst.handle_message(decided(0, v, mixed));
        assert!(matches!(dropped(&out)[..], [DropReason::Unjustified(_)]));
        assert!(inst.decided().is_none());

        // A quorum committed a value this node considers invalid: never decided.
        let bad = SimValue(INVALID_VALUE_BASE + 5);
        let bad_commits: Vec<_> = (0..3).map(|s| c.vote(MsgKind::Commit, s, 2, bad)).collect();
        let out = inst.handle_message(decided(0, bad, bad_commits));
        assert_eq!(dropped(&out), vec![DropReason::InvalidValue]);
        assert!(inst.decided().is_none());
    }

    #[test]
    fn decided_node_answers_laggards_with_decided() {
        let c = Cluster::new(4);
        let v = SimValue(31);
        let commits: Vec<_> = (0..3).map(|s| c.vote(MsgKind::Commit, s, 1, v)).collect();
        let mut done = c.instance(3);
        done.start(SimValue(1));
        let mut out = Vec::new();
        for m in &commits {
            out.extend(done.handle_message(plain(m.clone())));
        }
        // Commits alone do not decide without the value; the proposal brings it.
        assert!(done.decided().is_none());
        let l1 = leader(ID, 1, 4);
        let pp = c.sign(body(
            MsgKind::PrePrepare,
            l1,
            1,
            v.value_hash(),
            0,
            ZERO_HASH,
        ));
        let out = done.handle_message(QbftMsg {
            msg: pp,
            justification: vec![],
            values: vec![v.to_bytes()],
        });
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Decided { value, round: 1, .. } if *value == v)),
            "{out:?}"
        );

        // A laggard's ROUND-CHANGE gets a DECIDED reply that makes a fresh node decide.
        let out = done.handle_message(plain(c.rc(0, 2, None)));
        let reply = match &out[..] {
            [Output::SendTo { peer: 0, msg }] => msg.clone(),
            other => panic!("expected a DECIDED reply, got {other:?}"),
        };
        assert_eq!(reply.kind(), Some(MsgKind::Decided));
        let mut lag = c.instance(0);
        lag.start(SimValue(2));
        let out = lag.handle_message(QbftMsg::decode(&reply.encode()).unwrap());
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Decided { value, .. } if *value == v)));
        // Other messages after the decision are ignored.
        let out = done.handle_message(plain(c.vote(MsgKind::Prepare, 1, 3, v)));
        assert_eq!(dropped(&out), vec![DropReason::AlreadyDecided]);
        assert!(done.handle_timeout(done.round()).is_empty());
    }

    #[test]
    fn mutated_messages_never_panic() {
        use rand::{Rng, SeedableRng};
        let c = Cluster::new(4);
        let v = SimValue(5);
        let mut samples = vec![
            QbftMsg {
                msg: c.rc(1, 2, Some((1, v))),
                justification: (0..3).map(|s| c.vote(MsgKind::Prepare, s, 1, v)).collect(),
                values: vec![v.to_bytes()],
            },
            QbftMsg {
                msg: c.sign(body(
                    MsgKind::PrePrepare,
                    leader(ID, 2, 4),
                    2,
                    v.value_hash(),
                    0,
                    ZERO_HASH,
                )),
                justification: (0..3).map(|s| c.rc(s, 2, None)).collect(),
                values: vec![v.to_bytes()],
            },
        ];
        samples.push(plain(c.vote(MsgKind::Commit, 2, 1, v)));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut inst = c.instance(3);
        inst.start(SimValue(9));
        for _ in 0..3000 {
            let mut m = samples[rng.gen_range(0..samples.len())].clone();
            let target = if m.justification.is_empty() || rng.gen_bool(0.5) {
                &mut m.msg
            } else {
                let i = rng.gen_range(0..m.justification.len());
                &mut m.justification[i]
            };
            match rng.gen_range(0..7) {
                0 => target.body.kind = rng.gen_range(0..8),
                1 => target.body.round = rng.gen(),
                2 => target.body.source = rng.gen_range(0..6),
                3 => target.body.prepared_round = rng.gen_range(0..4),
                4 => target.body.value_hash = rng.gen(),
                5 => target.signature = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect(),
                _ => m.values = vec![(0..rng.gen_range(0..12)).map(|_| rng.gen()).collect()],
            }
            let _ = inst.handle_message(m);
            if rng.gen_bool(0.01) {
                let _ = inst.handle_timeout(inst.round());
            }
        }
    }
}
