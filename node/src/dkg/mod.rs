//! Distributed key generation (`dvnode dkg`): the operators of a cluster create its validator
//! keys together, so that no machine ever holds a whole validator key.
//!
//! # Inputs
//! A signed [cluster definition](crate::cluster::definition) (operators, threshold `t`,
//! number of validators `K`, fork version, withdrawal address, deposit amount) and each
//! operator's node directory with its `p2p-key`.
//!
//! # Transport
//! The nodes connect with the same libp2p stack as `dvnode run` ([`crate::p2p`]: TCP, noise,
//! yamux; only the definition's peer ids may connect) and speak `/dvlab/dkg/1.0.0`. Every
//! message is sent point to point on a noise-encrypted connection to its recipient only, in an
//! envelope signed by the sender's p2p key.
//!
//! # Protocol (joint-Feldman / Pedersen VSS with proofs of knowledge, as FROST key generation)
//! Each node `i` (share index `i + 1`) runs [`Ceremony`] through five rounds; it sends one message
//! per round to every other node and moves on once it holds a valid one from every node:
//!
//! 1. **hello** — the definition hash (and canonical content): a peer running another
//!    definition is named together with the fields that differ.
//! 2. **deal** — for every validator `j` the node draws a random polynomial `f_ij` of degree
//!    `t − 1` and sends every node `m`: the Feldman commitments `a_ijk·G` of all validators with
//!    a Schnorr proof of knowledge of `a_ij0` bound to (definition hash, dealer, validator), signed
//!    by the dealer's p2p key; and node `m`'s shares `f_ij(m + 1)`, signed for that recipient.
//!    The recipient verifies signatures, proofs and every share against the commitments (one
//!    multi-scalar multiplication over a random combination). An invalid deal makes it send a
//!    *complaint* carrying the dealer's signed deal to everybody: each node re-checks it and
//!    aborts naming the dealer — or the complainer, if the deal was valid.
//! 3. **echo** — every node echoes `sha256` of every dealer's commitments with the dealer's
//!    signature. A differing hash signed by the dealer proves it sent different commitments to
//!    different nodes (named); an unsigned one names the echoing node.
//! 4. **finish** — all nodes now hold the same commitments. Each sums, per validator, the
//!    commitments (the joint public key is the sum of the constant terms, each node's public
//!    share the sum of the committed polynomials at its index) and its received shares (its key
//!    share). It signs the lock hash with its p2p key and the validator's deposit message with
//!    its key share, and sends both. Partial deposit signatures are checked against the public
//!    shares (an invalid one is named), combined by Lagrange interpolation and verified against
//!    the joint key; the lock is assembled with every operator's signature and verified.
//! 5. **done** — the node has written its outputs; it waits (briefly) for everybody's, re-sending
//!    its finish message to nodes that have not confirmed.
//!
//! No node ever holds more than its own shares: the joint secret exists only as the sum of the
//! nodes' secret constant terms. Messages that may have been lost are re-sent every second to
//! the nodes that have not proven (by a later round's message) to have received them; a round
//! that does not complete within the round timeout aborts naming the silent operators. An
//! operator the ceremony still needs (any, until the outputs are written) that was connected
//! and left — its connection closed and a redial was refused (its process exited), or it stayed
//! away 10 s — is named at once instead (the hello round's connect timeout is long: operators
//! start at different times). Any abort is broadcast to the others, who abort too. Outputs are written only at the end, the lock last.
//!
//! # Outputs (in the node directory)
//! `cluster-lock.json` (the create-cluster format plus `definition_hash`; identical on every
//! node), `validator_keys/keystore-{j}.json` + `.txt` (EIP-2335, the node's share of validator
//! `j`) and `deposit-data.json` (the staking deposit CLI's format, one entry per validator,
//! signed by the joint key).

pub mod bench;
pub mod ceremony;
pub mod cli;
pub mod message;
pub mod run;

pub use ceremony::{Ceremony, DkgError, Fault, Outcome};
pub use message::Round;
pub use run::{run, DkgConfig, DkgSummary};
