//! QBFT consensus engine (pure logic: no I/O, no async runtime, no clocks).
//!
//! The n nodes of a cluster agree, per duty, on one value (e.g. the attestation data or the block
//! to sign) with QBFT, the Istanbul BFT variant of Moniz' "The Istanbul BFT Consensus Algorithm"
//! (arXiv:2002.03613) as specified by the EEA/Consensys QBFT formal specification and used by
//! Charon. It tolerates `f = ⌊(n−1)/3⌋` byzantine nodes with quorums of `q = ⌈2n/3⌉`
//! ([`qbft::quorum`], [`qbft::max_faulty`]).
//!
//! # Protocol
//!
//! One [`qbft::Instance`] runs per node and duty ([`msg::InstanceId`] = slot + duty type). Rounds
//! start at 1; the leader of a round is `(slot + duty + round) mod n` ([`qbft::leader`]).
//!
//! 1. The round leader broadcasts PRE-PREPARE(value). In round 1 it proposes its own input. In a
//!    later round it needs a quorum of ROUND-CHANGEs for that round; it proposes the value of the
//!    highest prepared certificate among them (or its own input if none is prepared) and attaches
//!    the ROUND-CHANGEs plus that certificate's quorum of PREPAREs as justification.
//! 2. A node accepts a justified PRE-PREPARE of its current or a later round (moving to that round),
//!    checks the value with the caller's validity predicate and — for fresh, unlocked values from
//!    another node — the compare hook, and broadcasts PREPARE(hash).
//! 3. On a quorum of PREPAREs for the accepted proposal the node is *prepared* (it keeps the
//!    PREPAREs as its certificate) and broadcasts COMMIT(hash).
//! 4. On a quorum of COMMITs for one round and value (any round) it decides. Afterwards it answers
//!    each ROUND-CHANGE or PRE-PREPARE of a lagging peer with DECIDED(value + quorum of COMMITs),
//!    which makes a lagging or restarted node decide at once.
//! 5. On round timeout a node moves to the next round and broadcasts ROUND-CHANGE carrying its
//!    prepared round/value and their PREPAREs. On ROUND-CHANGEs from f+1 distinct nodes for
//!    higher rounds it jumps to the smallest of those rounds (one honest node is at least
//!    there) and sends its own ROUND-CHANGE (the "f+1 rule").
//!
//! Consensus is on 32-byte value hashes ([`qbft::Value::value_hash`]); full values travel in
//! PRE-PREPARE, prepared ROUND-CHANGE and DECIDED messages and are checked against the hash. A
//! node never PREPAREs or decides a value its [`qbft::ValuePolicy::is_valid`] rejects.
//!
//! Every message is signed by its source ([`qbft::Signer`]) and checked with a
//! [`qbft::Verifier`]; justifications embed the original signed messages, so a byzantine node
//! cannot forge another node's votes. Ill-formed, duplicate, equivocating, unknown-source,
//! wrong-instance, unjustified or out-of-window messages are ignored and reported as
//! [`qbft::Output::Dropped`] with a [`qbft::DropReason`]; no input makes the engine panic.
//!
//! # API shape (sans-IO)
//!
//! ```text
//! let mut inst = Instance::new(config, instance_id, own_index, Box::new(policy))?;
//! outputs = inst.start(input_value);            // when the duty's own input is known
//! outputs = inst.handle_message(qbft_msg);      // for every message from the network
//! outputs = inst.handle_timeout(round);         // when a scheduled timer fires
//! ```
//!
//! Each call returns [`qbft::Output`]s for the caller to carry out, in order:
//! - `Broadcast(msg)`: send `msg.encode()` to all other nodes (the instance already applied it
//!   to itself; never loop own messages back in, they are dropped as `OwnSource`);
//! - `SendTo { peer, msg }`: send to one node (DECIDED replies);
//! - `ScheduleTimeout { round, after }`: call `handle_timeout(round)` after `after`; a new one
//!   supersedes the previous, stale ones are ignored, none is scheduled after the decision;
//! - `ExtendTimeout { round, by }`: push the pending timer of `round` back by `by` (when the
//!   node accepted the round's proposal; by default round 1 only); ignore it if that timer is gone;
//! - `Decided { value, round, commits }`: exactly once per instance;
//! - `Dropped { source, reason }`: for logs and metrics.
//!
//! Received bytes are decoded with [`msg::QbftMsg::decode`] (size and structure limits) before
//! `handle_message`. Messages that arrive before `start` are buffered; a DECIDED is honoured even
//! then. Messages for future rounds are buffered up to [`qbft::Config::max_future_rounds`] ahead
//! (one per sender, kind and round); beyond that only each sender's highest ROUND-CHANGE is kept
//! for the f+1 rule. Round timeouts come from a [`timer::TimerStrategy`]; the default
//! [`timer::LinearTimer`] and the reasons for it are documented in [`timer`].
//!
//! A restarted node runs a fresh instance with the same input: it has forgotten its earlier
//! votes, so until it decides it must be counted among the `f` faulty nodes (as in the
//! simulation), unless the caller persists the instance's outputs.
//!
//! [`driver::Consensus`] runs the instances of a node over the p2p network (routing, buffering,
//! timers, retention, metrics); [`mod@bench`] measures it on a loopback cluster
//! (`dvnode bench consensus`).
//!
//! [`sim`] is a seeded deterministic discrete-event simulator of a cluster running the engine
//! under message loss, delay, reordering, duplication, crashes, restarts and byzantine nodes.

pub mod bench;
pub mod driver;
pub mod msg;
pub mod qbft;
pub mod sim;
pub mod timer;
