//! Partial signatures: verification, storage and exchange with the peers.
//!
//! A [`ParSigMsg`] carries one share's signature for one duty and DV, with the object it signs
//! ([`SignedObject`]). Every partial — from the local VC or from a peer over
//! [`Protocol::Parsig`] — is checked the same way before it is stored:
//!
//! 1. the DV is one of the cluster's and the share index is the sender's (a peer can only speak
//!    for its own share);
//! 2. the duty is known: the decided value exists in the [`DutyDb`] (waiting for it a short
//!    while, peers may be ahead), or for RANDAO the DV is the scheduled proposer; selection
//!    proofs are accepted for any DV of the cluster and a slot near the current one (they are
//!    not slashable, and peers may resolve their duties a moment earlier); an exit must name
//!    the DV's validator index;
//! 3. the object equals what was decided (local partials for anything else are refused); an
//!    aggregate and proof must be the decided aggregate with the DV's index and its combined
//!    selection proof (and likewise for a sync contribution);
//! 4. the signature verifies against the sender's public share over the signing root computed
//!    **here** from the decided data — a peer's claim about the root is never used.
//!
//! The partials of one submission (a VC request, a peer's message) are checked together: step 4
//! for all of them in one batch verification ([`BatchVerifier::verify_many`]).
//!
//! Refusals are counted by reason (`parsig_rejected_total{source,reason,kind}`). Accepted local
//! partials are broadcast to the peers (a repeated local partial is not sent again): all new
//! partials of one submission in one message ([`encode_partials`]: a JSON array of at most
//! [`MAX_PARTIALS_PER_MESSAGE`] [`ParSigMsg`]s in one signed envelope), so a slot costs a peer a
//! few streams and envelope signatures, not one per DV. A peer's message is refused whole only
//! if it is not such a list; otherwise each partial is accepted or refused on its own. When
//! `threshold` partials over the same signing root exist for a duty and DV, one [`Threshold`]
//! is emitted for aggregation. A peer whose partial arrives after that (it was down or late:
//! e.g. a restarted node asking for next epoch's selection proofs again) is sent this node's
//! own partial for it, so it can combine too: once, and again when the peer repeats its
//! partial later (it restarted; [`CATCH_UP_AGAIN`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cluster::shares::ShareKeys;
use crate::duty::{Duty, DutyKind};
use crate::dutydb::DutyDb;
use crate::eth::aggregate::{
    AggregateAndProof, ContributionAndProof, SyncAggregatorSelectionData,
    SYNC_COMMITTEE_SUBNET_COUNT,
};
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{
    AttestationData, BlsPubkey, BlsSignature, Epoch, Preset, Root, Slot, VoluntaryExit,
};
use crate::keys::batch::{BatchItem, BatchVerifier};
use crate::keys::tbls;
use crate::p2p::{NetworkHandle, Protocol, SendError};
use crate::tracker::{Stage, Tracker};

/// Most peer messages verified concurrently; more are refused as `overloaded`. A slot of a
/// 10,000-validator cluster brings up to (512 sync members + 313 attesters + a block) × 3 peers
/// ≈ 2,500 partials at once; waiting ones cost a small task each (they are verified in batches).
const MAX_INFLIGHT: usize = 8192;

/// What a partial signature signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignedObject {
    /// Attestation data.
    Attestation {
        /// The data.
        data: AttestationData,
    },
    /// A block, by its root (`hash_tree_root` of the unsigned block).
    Block {
        /// Block root.
        block_root: Root,
    },
    /// The RANDAO reveal of an epoch.
    Randao {
        /// The epoch.
        #[serde(with = "serde_utils::quoted_u64")]
        epoch: Epoch,
    },
    /// A sync committee message over a head block root.
    SyncMessage {
        /// The head block root.
        block_root: Root,
    },
    /// An aggregator selection proof (a signature over the slot).
    SelectionProof {
        /// The slot.
        #[serde(with = "serde_utils::quoted_u64")]
        slot: Slot,
    },
    /// A sync committee selection proof.
    SyncSelectionProof {
        /// What is signed.
        data: SyncAggregatorSelectionData,
    },
    /// An aggregate and proof, by its `hash_tree_root`.
    AggregateAndProof {
        /// `hash_tree_root` of the `AggregateAndProof` message.
        message_root: Root,
    },
    /// A sync committee contribution and proof, by its `hash_tree_root`.
    ContributionAndProof {
        /// The subcommittee.
        #[serde(with = "serde_utils::quoted_u64")]
        subcommittee_index: u64,
        /// `hash_tree_root` of the `ContributionAndProof` message.
        message_root: Root,
    },
    /// A voluntary exit.
    Exit {
        /// The exit.
        exit: VoluntaryExit,
    },
}

/// One partial signature (an element of the exchange's wire format, [`encode_partials`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParSigMsg {
    /// The duty.
    pub duty: Duty,
    /// The DV.
    pub pubkey: BlsPubkey,
    /// 1-based share index of the signer.
    #[serde(with = "serde_utils::quoted_u64")]
    pub share_index: u64,
    /// What is signed.
    pub object: SignedObject,
    /// The share's signature.
    pub signature: BlsSignature,
}

/// Most partial signatures in one p2p message. A sender splits larger sets (a VC request with
/// more items) into several messages; a receiver refuses a longer list as `malformed` without
/// decoding past the limit. A slot of a 10,000-validator cluster has at most 512 sync committee
/// messages and ~313 attestations per node; 1,024 of the largest partial (an attestation, ~0.8
/// KiB of JSON) fit the 4 MiB frame of the protocol with room to spare.
pub const MAX_PARTIALS_PER_MESSAGE: usize = 1024;

/// The payload of one [`Protocol::Parsig`] message: `msgs` (1 to
/// [`MAX_PARTIALS_PER_MESSAGE`]) as a JSON array of [`ParSigMsg`].
pub fn encode_partials(msgs: &[ParSigMsg]) -> Vec<u8> {
    serde_json::to_vec(msgs).expect("partial signatures serialize to JSON")
}

/// The partials of one [`Protocol::Parsig`] payload ([`encode_partials`]). An empty list, or
/// one longer than [`MAX_PARTIALS_PER_MESSAGE`], is `malformed`; the element after the limit is
/// skipped, never stored, so memory stays bounded by the limit whatever the frame holds.
pub fn decode_partials(payload: &[u8]) -> Result<Vec<ParSigMsg>, Rejection> {
    let Bounded(msgs) =
        serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(e.to_string()))?;
    if msgs.is_empty() {
        return Err(Rejection::Malformed(
            "a message without partial signatures".into(),
        ));
    }
    Ok(msgs)
}

/// A list of at most [`MAX_PARTIALS_PER_MESSAGE`] partials.
struct Bounded(Vec<ParSigMsg>);

impl<'de> Deserialize<'de> for Bounded {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Bounded;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(
                    f,
                    "a list of at most {MAX_PARTIALS_PER_MESSAGE} partial signatures"
                )
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Bounded, A::Error> {
                let mut msgs = Vec::new();
                while msgs.len() < MAX_PARTIALS_PER_MESSAGE {
                    match seq.next_element()? {
                        Some(m) => msgs.push(m),
                        None => return Ok(Bounded(msgs)),
                    }
                }
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_PARTIALS_PER_MESSAGE} partial signatures in one message"
                    )));
                }
                Ok(Bounded(msgs))
            }
        }
        d.deserialize_seq(Visitor)
    }
}

/// Why a partial signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Undecodable message.
    #[error("malformed partial signature message: {0}")]
    Malformed(String),
    /// The share index is not the sender's.
    #[error("share index {got} sent by the node of share {expected}")]
    WrongShareIndex {
        /// Sender's share index.
        expected: u64,
        /// Index in the message.
        got: u64,
    },
    /// Not a DV of the cluster.
    #[error("unknown DV {0}")]
    UnknownPubkey(BlsPubkey),
    /// No such duty for this DV (nothing decided in time, or not scheduled).
    #[error("unknown duty {duty} for {pubkey}: {detail}")]
    UnknownDuty {
        /// The duty.
        duty: Duty,
        /// The DV.
        pubkey: BlsPubkey,
        /// Why.
        detail: String,
    },
    /// The signed object differs from the decided one.
    #[error("{duty} for {pubkey}: signed object differs from the decided value")]
    MismatchingData {
        /// The duty.
        duty: Duty,
        /// The DV.
        pubkey: BlsPubkey,
    },
    /// The signature does not verify against the share's public key.
    #[error("{duty} for {pubkey}: invalid signature of share {share_index}")]
    InvalidSignature {
        /// The duty.
        duty: Duty,
        /// The DV.
        pubkey: BlsPubkey,
        /// The share.
        share_index: u64,
    },
    /// The same share sent a different signature for the same duty and DV.
    #[error("{duty} for {pubkey}: share {share_index} sent a second, different signature")]
    Equivocation {
        /// The duty.
        duty: Duty,
        /// The DV.
        pubkey: BlsPubkey,
        /// The share.
        share_index: u64,
    },
    /// Too many messages in flight.
    #[error("too many partial signatures being verified")]
    Overloaded,
}

impl Rejection {
    /// The duty the refused partial named, if it got that far.
    pub fn duty(&self) -> Option<Duty> {
        match self {
            Rejection::UnknownDuty { duty, .. }
            | Rejection::MismatchingData { duty, .. }
            | Rejection::InvalidSignature { duty, .. }
            | Rejection::Equivocation { duty, .. } => Some(*duty),
            Rejection::Malformed(_)
            | Rejection::WrongShareIndex { .. }
            | Rejection::UnknownPubkey(_)
            | Rejection::Overloaded => None,
        }
    }

    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::WrongShareIndex { .. } => "wrong_share_index",
            Rejection::UnknownPubkey(_) => "unknown_pubkey",
            Rejection::UnknownDuty { .. } => "unknown_duty",
            Rejection::MismatchingData { .. } => "mismatching_data",
            Rejection::InvalidSignature { .. } => "invalid_signature",
            Rejection::Equivocation { .. } => "equivocation",
            Rejection::Overloaded => "overloaded",
        }
    }
}

/// Threshold partial signatures of one duty and DV, ready to combine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Threshold {
    /// The duty.
    pub duty: Duty,
    /// The DV.
    pub pubkey: BlsPubkey,
    /// The signed object.
    pub object: SignedObject,
    /// The signing root every partial verified against.
    pub signing_root: Root,
    /// Exactly threshold many, by ascending (distinct) share index.
    pub partials: Vec<VerifiedPartial>,
}

/// One partial signature of a [`Threshold`]: as it was sent and as the point that was verified
/// against its share's public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedPartial {
    /// The signer's share index (1-based).
    pub share_index: u64,
    /// The signature as sent.
    pub signature: BlsSignature,
    /// `signature` decompressed (the point that was verified): combining needs no second
    /// decompression (a G2 square root each, the node's costliest step after the pairings at
    /// 1,000 validators).
    pub point: tbls::Signature,
}

/// Where accepted local partials go (implemented by [`NetworkHandle`]).
pub trait ParSigTransport: Send + Sync + 'static {
    /// Sends `payload` to every peer.
    fn broadcast(&self, payload: Vec<u8>) -> Result<(), SendError>;

    /// Sends `payload` to the peer at node index `to`.
    fn send(&self, to: usize, payload: Vec<u8>) -> Result<(), SendError>;
}

impl ParSigTransport for NetworkHandle {
    fn broadcast(&self, payload: Vec<u8>) -> Result<(), SendError> {
        NetworkHandle::broadcast(self, Protocol::Parsig, payload)
    }

    fn send(&self, to: usize, payload: Vec<u8>) -> Result<(), SendError> {
        NetworkHandle::send(self, to, Protocol::Parsig, payload)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceReason {
    source: String,
    reason: String,
    /// The duty kind the refused partial named (`none` when it named none, e.g. malformed).
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// Partial-signature metrics.
#[derive(Clone, Debug)]
pub struct ParSigMetrics {
    rejected: Family<SourceReason, Counter>,
    accepted: Family<SourceLabel, Counter>,
    verify_seconds: Histogram,
}

impl ParSigMetrics {
    /// Registers the metric families.
    pub fn new(registry: &mut Registry) -> ParSigMetrics {
        let m = ParSigMetrics {
            rejected: Family::default(),
            accepted: Family::default(),
            // 0.1 ms … ~3 s.
            verify_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
        };
        registry.register(
            "parsig_verify_seconds",
            "Time of each batch verification of partial signatures (local and peers', all DVs)",
            m.verify_seconds.clone(),
        );
        registry.register(
            "parsig_rejected",
            "Refused partial signatures by source (local, peer), reason and the duty kind they named",
            m.rejected.clone(),
        );
        registry.register(
            "parsig_accepted",
            "Verified and stored partial signatures by source",
            m.accepted.clone(),
        );
        m
    }
}

/// The partials of one duty, DV and signing root.
struct Entry {
    object: SignedObject,
    /// Share index → the signature as sent and as the verified point.
    partials: BTreeMap<u64, (BlsSignature, tbls::Signature)>,
    done: bool,
    /// Peers already sent this node's partial because theirs came after the threshold, and
    /// when.
    caught_up: BTreeMap<u64, Instant>,
}

/// A peer that sends a partial it sent before has lost it (it restarted) and is sent this
/// node's partial again, but at most this often (two restarted nodes would otherwise answer
/// each other's answers for ever). Measured in rolling-restarts --signer remote: a node
/// restarted mid-epoch re-signs the current and next epoch's selection proofs; the peers that
/// had caught it up before the restart never answered again, so it combined none of them and
/// the cluster's aggregations failed while the next node was down (12 of 64 lost).
const CATCH_UP_AGAIN: Duration = Duration::from_secs(2);

/// What storing a partial did.
#[derive(Default)]
struct Stored {
    /// The partial was not stored before.
    new: bool,
    /// The threshold it completed.
    threshold: Option<Threshold>,
    /// This node's own partial, to send to a peer that is behind.
    catch_up: Option<ParSigMsg>,
}

/// A partial after [`ParSig::check_all`]: its position in the submission, and what storing it
/// did (or why it was refused).
struct Checked {
    pos: usize,
    msg: ParSigMsg,
    stored: Result<Stored, Rejection>,
}

fn invalid_signature(msg: &ParSigMsg) -> Rejection {
    Rejection::InvalidSignature {
        duty: msg.duty,
        pubkey: msg.pubkey,
        share_index: msg.share_index,
    }
}

/// Slots around the current one for which selection proofs are accepted.
const SELECTION_WINDOW_EPOCHS: u64 = 2;
/// How long partial exits are kept (they combine only once a threshold of operators asked for
/// the exit, which may take a while): about a day of slots, at least.
const EXIT_KEEP_SECS: u64 = 24 * 3600;

/// The DV keys the partials are checked against.
#[derive(Clone, Debug)]
pub struct DvShares {
    /// DV pubkey → public shares in share-index order (index 1 first).
    pub shares: HashMap<BlsPubkey, Vec<tbls::PublicKey>>,
}

/// The partial signature DB and exchange. See the [module docs](self).
pub struct ParSig<P: Preset> {
    own_share: u64,
    threshold: usize,
    keys: DvShares,
    schedule: Arc<ForkSchedule>,
    dutydb: Arc<DutyDb<P>>,
    transport: Arc<dyn ParSigTransport>,
    out: mpsc::Sender<Threshold>,
    entries: Mutex<HashMap<(Duty, BlsPubkey, Root), Entry>>,
    inflight: Arc<Semaphore>,
    verifier: BatchVerifier,
    metrics: ParSigMetrics,
    tracker: Tracker,
    peer_wait: Duration,
    /// This node's secret shares (remote-signer mode: the node signs itself).
    shares: Option<Arc<ShareKeys>>,
}

impl<P: Preset> ParSig<P> {
    /// A partial-signature stage for the node of share `own_share` (1-based), emitting
    /// [`Threshold`]s on `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        own_share: u64,
        threshold: usize,
        keys: DvShares,
        schedule: Arc<ForkSchedule>,
        dutydb: Arc<DutyDb<P>>,
        transport: Arc<dyn ParSigTransport>,
        out: mpsc::Sender<Threshold>,
        metrics: ParSigMetrics,
        tracker: Tracker,
    ) -> ParSig<P> {
        let peer_wait = Duration::from_secs(schedule.seconds_per_slot().max(1) * 2);
        ParSig {
            own_share,
            threshold,
            keys,
            schedule,
            dutydb,
            transport,
            out,
            entries: Mutex::new(HashMap::new()),
            inflight: Arc::new(Semaphore::new(MAX_INFLIGHT)),
            verifier: BatchVerifier::new(Some(metrics.verify_seconds.clone())),
            metrics,
            tracker,
            peer_wait,
            shares: None,
        }
    }

    /// Lets this node make its own partial signatures with `shares` ([`ParSig::sign_own`]):
    /// remote-signer mode, where no validator client holds the shares.
    pub fn with_share_keys(mut self, shares: Arc<ShareKeys>) -> ParSig<P> {
        self.shares = Some(shares);
        self
    }

    /// Whether this node signs with its own shares (remote-signer mode).
    pub fn signs_itself(&self) -> bool {
        self.shares.is_some()
    }

    /// Makes this node's partial signature of `object` for `duty` and DV `pubkey` with its own
    /// share — only if `object` is what the duty must sign ([`ParSig::expected`], waiting for
    /// the decided value until `deadline`) — and submits it like a VC's partial. A partial
    /// made before is not made or sent again. Returns the signing root.
    pub async fn sign_own(
        &self,
        duty: Duty,
        pubkey: BlsPubkey,
        object: SignedObject,
        deadline: Instant,
    ) -> Result<Root, Rejection> {
        self.sign_own_many(duty, vec![(pubkey, object)], deadline)
            .await
            .pop()
            .unwrap_or(Err(Rejection::UnknownPubkey(pubkey)))
    }

    /// [`ParSig::sign_own`] for several DVs' objects of one duty at once: the new partials go
    /// to the peers together ([`ParSig::submit_local_many`]). Results in the order of
    /// `objects`.
    pub async fn sign_own_many(
        &self,
        duty: Duty,
        objects: Vec<(BlsPubkey, SignedObject)>,
        deadline: Instant,
    ) -> Vec<Result<Root, Rejection>> {
        let Some(shares) = &self.shares else {
            let e = Rejection::Malformed("this node holds no key shares (middleware mode)".into());
            return vec![Err(e); objects.len()];
        };
        let signed =
            futures::future::join_all(objects.into_iter().map(|(pubkey, object)| async move {
                let (expected, root) = self.expected(duty, pubkey, &object, deadline).await?;
                if expected != object {
                    let rejection = Rejection::MismatchingData { duty, pubkey };
                    self.count("local", &Err(rejection.clone()));
                    return Err(rejection);
                }
                if self.has_own(duty, pubkey, root) {
                    return Ok((root, None));
                }
                let signature = shares
                    .sign(&pubkey, &root)
                    .ok_or(Rejection::UnknownPubkey(pubkey))?;
                let msg = ParSigMsg {
                    duty,
                    pubkey,
                    share_index: self.own_share,
                    object,
                    signature,
                };
                Ok((root, Some(msg)))
            }))
            .await;
        let new: Vec<(ParSigMsg, Instant)> = signed
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(|(_, m)| *m))
            .map(|m| (m, deadline))
            .collect();
        let mut submitted = self.submit_local_many(new).await.into_iter();
        signed
            .into_iter()
            .map(|r| {
                let (root, msg) = r?;
                match msg {
                    Some(_) => submitted.next().unwrap_or(Ok(())).map(|()| root),
                    None => Ok(root),
                }
            })
            .collect()
    }

    /// This node's share index.
    pub fn own_share(&self) -> u64 {
        self.own_share
    }

    /// The signed object and signing root that partials of `duty` for `pubkey` must have,
    /// waiting for the decided value until `deadline`. `claimed` is the object a partial names:
    /// it picks among several valid objects of one duty (the subcommittee of a sync selection
    /// proof or contribution, the exit), and is otherwise ignored.
    pub async fn expected(
        &self,
        duty: Duty,
        pubkey: BlsPubkey,
        claimed: &SignedObject,
        deadline: Instant,
    ) -> Result<(SignedObject, Root), Rejection> {
        let unknown = |detail: String| Rejection::UnknownDuty {
            duty,
            pubkey,
            detail,
        };
        let slot = duty.slot;
        match duty.kind {
            DutyKind::Attester => {
                let e = self
                    .dutydb
                    .await_attester(slot, pubkey, deadline)
                    .await
                    .map_err(|e| unknown(e.to_string()))?;
                Ok((
                    SignedObject::Attestation { data: e.data },
                    self.schedule.attestation_signing_root(&e.data),
                ))
            }
            DutyKind::Proposer => {
                let p = self
                    .dutydb
                    .await_block(slot, deadline)
                    .await
                    .map_err(|e| unknown(e.to_string()))?;
                if p.pubkey != pubkey {
                    return Err(unknown(format!("the decided block is {}'s", p.pubkey)));
                }
                Ok((
                    SignedObject::Block {
                        block_root: Root::of(&p.block),
                    },
                    self.schedule.block_signing_root(&p.block),
                ))
            }
            // Waits for the proposer duties: peers combine RANDAO ahead at the epoch start, and
            // a partial refused because this node's scheduler had not fetched them yet was lost
            // for good (remote-signer.yaml in Docker: two nodes never combined slot 48's reveal
            // after a restart, and the DV's block was missed).
            DutyKind::Randao => match self.dutydb.await_proposer(slot, deadline).await {
                Ok(p) if p.pubkey == pubkey => {
                    let epoch = self.schedule.epoch_at_slot(slot);
                    Ok((
                        SignedObject::Randao { epoch },
                        self.schedule.randao_signing_root(epoch),
                    ))
                }
                Ok(_) => Err(unknown("not the scheduled proposer of the slot".into())),
                Err(e) => Err(unknown(format!(
                    "not the scheduled proposer of the slot ({e})"
                ))),
            },
            DutyKind::SyncMessage => {
                if self.dutydb.sync_member_by_key(slot, pubkey).is_none() {
                    return Err(unknown("not a scheduled sync committee member".into()));
                }
                let root = self
                    .dutydb
                    .await_sync_root(slot, deadline)
                    .await
                    .map_err(|e| unknown(e.to_string()))?;
                Ok((
                    SignedObject::SyncMessage { block_root: root },
                    self.schedule.sync_committee_signing_root(root, slot),
                ))
            }
            DutyKind::SelectionProof => {
                self.check_selection_window(slot).map_err(unknown)?;
                Ok((
                    SignedObject::SelectionProof { slot },
                    self.schedule.selection_proof_signing_root(slot),
                ))
            }
            DutyKind::SyncSelectionProof => {
                self.check_selection_window(slot).map_err(unknown)?;
                let SignedObject::SyncSelectionProof { data } = *claimed else {
                    return Err(unknown("not a sync selection proof".into()));
                };
                if data.slot != slot || data.subcommittee_index >= SYNC_COMMITTEE_SUBNET_COUNT {
                    return Err(unknown(format!(
                        "selection data for slot {} subcommittee {}",
                        data.slot, data.subcommittee_index
                    )));
                }
                Ok((
                    SignedObject::SyncSelectionProof { data },
                    self.schedule.sync_selection_proof_signing_root(&data),
                ))
            }
            DutyKind::Aggregation => {
                let m = self.aggregate_and_proof(slot, pubkey, deadline).await?;
                Ok((
                    SignedObject::AggregateAndProof {
                        message_root: Root::of(&m),
                    },
                    self.schedule.aggregate_and_proof_signing_root(&m),
                ))
            }
            DutyKind::SyncContribution => {
                let SignedObject::ContributionAndProof {
                    subcommittee_index, ..
                } = *claimed
                else {
                    return Err(unknown("not a contribution and proof".into()));
                };
                let m = self
                    .contribution_and_proof(slot, pubkey, subcommittee_index, deadline)
                    .await?;
                Ok((
                    SignedObject::ContributionAndProof {
                        subcommittee_index,
                        message_root: Root::of(&m),
                    },
                    self.schedule.contribution_and_proof_signing_root(&m),
                ))
            }
            DutyKind::Exit => {
                let SignedObject::Exit { exit } = *claimed else {
                    return Err(unknown("not a voluntary exit".into()));
                };
                if slot != self.schedule.epoch_start_slot(exit.epoch) {
                    return Err(unknown(format!(
                        "exit at epoch {} in the duty of slot {slot}",
                        exit.epoch
                    )));
                }
                match self.dutydb.index_of(pubkey) {
                    Some(i) if i == exit.validator_index => {}
                    Some(i) => {
                        return Err(unknown(format!(
                            "the exit names validator {}, the DV is validator {i}",
                            exit.validator_index
                        )))
                    }
                    None => {
                        return Err(unknown(
                            "the DV's validator index is not known (not active?)".into(),
                        ))
                    }
                }
                let current = self.current_slot().map(|s| self.schedule.epoch_at_slot(s));
                if current.is_some_and(|c| exit.epoch > c + 1) {
                    return Err(unknown(format!(
                        "exit epoch {} is in the future",
                        exit.epoch
                    )));
                }
                Ok((
                    SignedObject::Exit { exit },
                    self.schedule.voluntary_exit_signing_root(&exit),
                ))
            }
        }
    }

    /// The current slot by the wall clock (`None` before genesis).
    fn current_slot(&self) -> Option<Slot> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.schedule.slot_at_time(now)
    }

    /// Selection proofs are accepted for slots from the previous epoch to two epochs ahead.
    fn check_selection_window(&self, slot: Slot) -> Result<(), String> {
        let now = self.current_slot().unwrap_or(0);
        let per_epoch = self.schedule.slots_per_epoch();
        let lo = now.saturating_sub(per_epoch);
        let hi = now.saturating_add(SELECTION_WINDOW_EPOCHS * per_epoch);
        if (lo..=hi).contains(&slot) {
            Ok(())
        } else {
            Err(format!(
                "selection proof for slot {slot}, outside slots {lo}..={hi} around the current one"
            ))
        }
    }

    /// The aggregate and proof DV `pubkey` signs at `slot`: the decided aggregate of its
    /// committee, its validator index and its combined selection proof (waiting for the
    /// decided aggregate until `deadline`).
    pub async fn aggregate_and_proof(
        &self,
        slot: Slot,
        pubkey: BlsPubkey,
        deadline: Instant,
    ) -> Result<AggregateAndProof<P>, Rejection> {
        let duty = Duty::new(slot, DutyKind::Aggregation);
        let unknown = |detail: String| Rejection::UnknownDuty {
            duty,
            pubkey,
            detail,
        };
        let def = self
            .dutydb
            .attester_def(slot, pubkey)
            .ok_or_else(|| unknown("no attester duty at the slot".into()))?;
        let selection_proof = self
            .dutydb
            .combined(pubkey, self.schedule.selection_proof_signing_root(slot))
            .ok_or_else(|| unknown("no combined selection proof".into()))?;
        let aggregate = self
            .dutydb
            .await_committee_aggregate(slot, def.committee_index, deadline)
            .await
            .map_err(|e| unknown(e.to_string()))?;
        Ok(AggregateAndProof {
            aggregator_index: def.validator_index,
            aggregate,
            selection_proof,
        })
    }

    /// The contribution and proof DV `pubkey` signs for `subcommittee_index` at `slot` (see
    /// [`ParSig::aggregate_and_proof`]).
    pub async fn contribution_and_proof(
        &self,
        slot: Slot,
        pubkey: BlsPubkey,
        subcommittee_index: u64,
        deadline: Instant,
    ) -> Result<ContributionAndProof<P>, Rejection> {
        let duty = Duty::new(slot, DutyKind::SyncContribution);
        let unknown = |detail: String| Rejection::UnknownDuty {
            duty,
            pubkey,
            detail,
        };
        let def = self
            .dutydb
            .sync_subnet_def(slot, pubkey, subcommittee_index)
            .ok_or_else(|| unknown(format!("no seat in sync subcommittee {subcommittee_index}")))?;
        let data = SyncAggregatorSelectionData {
            slot,
            subcommittee_index,
        };
        let selection_proof = self
            .dutydb
            .combined(
                pubkey,
                self.schedule.sync_selection_proof_signing_root(&data),
            )
            .ok_or_else(|| unknown("no combined sync selection proof".into()))?;
        let contribution = self
            .dutydb
            .await_contribution(slot, subcommittee_index, deadline)
            .await
            .map_err(|e| unknown(e.to_string()))?;
        Ok(ContributionAndProof {
            aggregator_index: def.validator_index,
            contribution,
            selection_proof,
        })
    }

    /// Checks everything about `msg` but its signature (steps 1–3 of the [module docs](self)),
    /// waiting for the decided value until `deadline`: the signing root, and the signature to
    /// verify.
    async fn prepare(
        &self,
        msg: &ParSigMsg,
        sender_share: u64,
        deadline: Instant,
    ) -> Result<(Root, BatchItem), Rejection> {
        if msg.share_index != sender_share {
            return Err(Rejection::WrongShareIndex {
                expected: sender_share,
                got: msg.share_index,
            });
        }
        let shares = self
            .keys
            .shares
            .get(&msg.pubkey)
            .ok_or(Rejection::UnknownPubkey(msg.pubkey))?;
        let (object, root) = self
            .expected(msg.duty, msg.pubkey, &msg.object, deadline)
            .await?;
        if object != msg.object {
            return Err(Rejection::MismatchingData {
                duty: msg.duty,
                pubkey: msg.pubkey,
            });
        }
        let share = usize::try_from(sender_share.saturating_sub(1))
            .ok()
            .and_then(|i| shares.get(i))
            .ok_or_else(|| invalid_signature(msg))?;
        let sig =
            tbls::Signature::from_bytes(&msg.signature.0).map_err(|_| invalid_signature(msg))?;
        Ok((
            root,
            BatchItem {
                public_key: *share,
                message: root.0,
                signature: sig,
            },
        ))
    }

    /// Checks and stores `items` (`(position, partial, deadline)`, all from the node of share
    /// `sender_share`) concurrently, yielding them in groups as they are done: the partials
    /// whose duties are known (all of them, usually) form one group, verified in one batch with
    /// whatever else the verifier has queued; partials still waiting for their decided value
    /// come in later groups, so that one of them never holds back the others.
    fn check_all(
        &self,
        items: Vec<(usize, ParSigMsg, Instant)>,
        sender_share: u64,
    ) -> impl futures::Stream<Item = Vec<Checked>> + '_ {
        use futures::StreamExt;
        items
            .into_iter()
            .map(|(pos, msg, deadline)| async move {
                let prepared = self.prepare(&msg, sender_share, deadline).await;
                (pos, msg, prepared)
            })
            .collect::<futures::stream::FuturesUnordered<_>>()
            .ready_chunks(MAX_PARTIALS_PER_MESSAGE)
            .then(move |ready| async move {
                let items: Vec<BatchItem> = ready
                    .iter()
                    .filter_map(|(_, _, p)| p.as_ref().ok().map(|(_, item)| *item))
                    .collect();
                let mut valid = self.verifier.verify_many(items).await.into_iter();
                ready
                    .into_iter()
                    .map(|(pos, msg, prepared)| {
                        let stored = prepared.and_then(|(root, item)| {
                            if valid.next() == Some(true) {
                                self.store(&msg, root, item.signature)
                            } else {
                                Err(invalid_signature(&msg))
                            }
                        });
                        Checked { pos, msg, stored }
                    })
                    .collect()
            })
    }

    /// Sends `msgs` to the peer at index `to`, or to every peer: one message per
    /// [`MAX_PARTIALS_PER_MESSAGE`] partials.
    fn send_partials(&self, to: Option<usize>, msgs: &[ParSigMsg]) {
        for chunk in msgs.chunks(MAX_PARTIALS_PER_MESSAGE) {
            let payload = encode_partials(chunk);
            let sent = match to {
                Some(peer) => self.transport.send(peer, payload),
                None => self.transport.broadcast(payload),
            };
            if let Err(e) = sent {
                warn!(peer = ?to, partials = chunk.len(), duty = %chunk[0].duty, error = %e, "cannot send partial signatures");
            }
        }
    }

    /// Stores a verified partial. Returns whether it was new, the threshold it completed, and
    /// — for a peer's partial arriving after the threshold — this node's own partial for that
    /// peer (once per peer and entry).
    fn store(
        &self,
        msg: &ParSigMsg,
        root: Root,
        point: tbls::Signature,
    ) -> Result<Stored, Rejection> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries
            .entry((msg.duty, msg.pubkey, root))
            .or_insert_with(|| Entry {
                object: msg.object,
                partials: BTreeMap::new(),
                done: false,
                caught_up: BTreeMap::new(),
            });
        let late = entry.done;
        let mut stored = Stored::default();
        match entry.partials.get(&msg.share_index) {
            Some((sig, _)) if *sig != msg.signature => {
                return Err(Rejection::Equivocation {
                    duty: msg.duty,
                    pubkey: msg.pubkey,
                    share_index: msg.share_index,
                })
            }
            Some(_) => {}
            None => {
                entry
                    .partials
                    .insert(msg.share_index, (msg.signature, point));
                stored.new = true;
            }
        }
        let now = Instant::now();
        let answer = match entry.caught_up.get(&msg.share_index) {
            None => true,
            // A repeat: the peer lost what it had (restarted).
            Some(at) => !stored.new && now.duration_since(*at) >= CATCH_UP_AGAIN,
        };
        if late && msg.share_index != self.own_share && answer {
            entry.caught_up.insert(msg.share_index, now);
            stored.catch_up = entry
                .partials
                .get(&self.own_share)
                .map(|(signature, _)| ParSigMsg {
                    duty: msg.duty,
                    pubkey: msg.pubkey,
                    share_index: self.own_share,
                    object: entry.object,
                    signature: *signature,
                });
        }
        if entry.done || entry.partials.len() < self.threshold {
            return Ok(stored);
        }
        entry.done = true;
        stored.threshold = Some(Threshold {
            duty: msg.duty,
            pubkey: msg.pubkey,
            object: entry.object,
            signing_root: root,
            partials: entry
                .partials
                .iter()
                .take(self.threshold)
                .map(|(&share_index, &(signature, point))| VerifiedPartial {
                    share_index,
                    signature,
                    point,
                })
                .collect(),
        });
        Ok(stored)
    }

    fn count(&self, source: &str, result: &Result<(), Rejection>) {
        match result {
            Ok(()) => self
                .metrics
                .accepted
                .get_or_create(&SourceLabel {
                    source: source.into(),
                })
                .inc(),
            Err(e) => self
                .metrics
                .rejected
                .get_or_create(&SourceReason {
                    source: source.into(),
                    reason: e.reason().into(),
                    kind: e.duty().map_or("none", |d| d.kind.as_str()).into(),
                })
                .inc(),
        };
    }

    async fn emit(&self, threshold: Option<Threshold>) {
        if let Some(t) = threshold {
            debug!(duty = %t.duty, pubkey = %t.pubkey, "threshold partial signatures");
            self.tracker
                .validator_stage(t.duty, t.pubkey, Stage::LastPartial);
            if self.out.send(t).await.is_err() {
                warn!("aggregation stage is gone; dropping a threshold of partial signatures");
            }
        }
    }

    /// Accepts a partial made by the local VC: checks it (waiting for the decided value until
    /// `deadline`), stores it and sends it to the peers.
    pub async fn submit_local(&self, msg: ParSigMsg, deadline: Instant) -> Result<(), Rejection> {
        self.submit_local_many(vec![(msg, deadline)])
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Accepts the partials of one VC request (e.g. all attestations of a POST), each checked
    /// until its deadline like [`ParSig::submit_local`]: the new ones go to the peers in one
    /// message (more when they exceed [`MAX_PARTIALS_PER_MESSAGE`] or some wait longer for
    /// their decided value than others). The results are in the order of `items`.
    pub async fn submit_local_many(
        &self,
        items: Vec<(ParSigMsg, Instant)>,
    ) -> Vec<Result<(), Rejection>> {
        use futures::StreamExt;
        let mut results: Vec<Result<(), Rejection>> = vec![Ok(()); items.len()];
        let items = items
            .into_iter()
            .enumerate()
            .map(|(pos, (msg, deadline))| (pos, msg, deadline))
            .collect();
        let mut groups = std::pin::pin!(self.check_all(items, self.own_share));
        while let Some(group) = groups.next().await {
            let mut fresh = Vec::new();
            let mut thresholds = Vec::new();
            for Checked { pos, msg, stored } in group {
                let result = match stored {
                    // Signed and sent before (a repeated request): nothing to do.
                    Ok(stored) if !stored.new => Ok(()),
                    Ok(stored) => {
                        self.tracker
                            .validator_stage(msg.duty, msg.pubkey, Stage::LocalSigned);
                        self.tracker.partial(msg.duty, msg.pubkey, msg.share_index);
                        fresh.push(msg);
                        thresholds.extend(stored.threshold);
                        Ok(())
                    }
                    Err(e) => {
                        warn!(error = %e, "local partial signature refused");
                        Err(e)
                    }
                };
                self.count("local", &result);
                results[pos] = result;
            }
            self.send_partials(None, &fresh);
            for t in thresholds {
                self.emit(Some(t)).await;
            }
        }
        results
    }

    /// Handles a message of partials from the peer at node index `from` (share `from + 1`).
    /// Returns the first refusal, if any (each one is counted).
    pub async fn handle_peer(&self, from: usize, payload: &[u8]) -> Result<(), Rejection> {
        match decode_partials(payload) {
            Ok(msgs) => self.handle_peer_partials(from, msgs).await,
            Err(e) => {
                debug!(peer = from, error = %e, "peer partial signatures refused");
                self.count("peer", &Err(e.clone()));
                Err(e)
            }
        }
    }

    /// Handles the decoded partials of one message from the peer at node index `from`: each is
    /// checked (waiting for its decided value up to two slots: peers may be ahead) and stored;
    /// this node's own partials for the ones arriving after their threshold go back to the
    /// peer in one message. Returns the first refusal, if any (each one is counted).
    pub async fn handle_peer_partials(
        &self,
        from: usize,
        msgs: Vec<ParSigMsg>,
    ) -> Result<(), Rejection> {
        use futures::StreamExt;
        let deadline = Instant::now() + self.peer_wait;
        let items = msgs
            .into_iter()
            .enumerate()
            .map(|(pos, msg)| (pos, msg, deadline))
            .collect();
        let mut first_refusal: Option<(usize, Rejection)> = None;
        let mut groups = std::pin::pin!(self.check_all(items, from as u64 + 1));
        while let Some(group) = groups.next().await {
            let mut catch_up = Vec::new();
            let mut thresholds = Vec::new();
            for Checked { pos, msg, stored } in group {
                let result = match stored {
                    Ok(stored) => {
                        if stored.new {
                            self.tracker.partial(msg.duty, msg.pubkey, msg.share_index);
                        }
                        catch_up.extend(stored.catch_up);
                        thresholds.extend(stored.threshold);
                        Ok(())
                    }
                    Err(e) => {
                        debug!(peer = from, error = %e, "peer partial signature refused");
                        if first_refusal.as_ref().is_none_or(|(p, _)| pos < *p) {
                            first_refusal = Some((pos, e.clone()));
                        }
                        Err(e)
                    }
                };
                self.count("peer", &result);
            }
            if !catch_up.is_empty() {
                debug!(
                    peer = from,
                    partials = catch_up.len(),
                    "peer is behind; sending it this node's partials"
                );
                self.send_partials(Some(from), &catch_up);
            }
            for t in thresholds {
                self.emit(Some(t)).await;
            }
        }
        first_refusal.map_or(Ok(()), |(_, e)| Err(e))
    }

    /// Handles peers' messages from `inbound` until it closes, each in its own task. At most
    /// [`MAX_INFLIGHT`] partials are being handled at once: a message that would exceed it is
    /// refused whole (its partials counted as `overloaded`).
    pub async fn run_inbound(self: Arc<Self>, mut inbound: mpsc::Receiver<crate::p2p::Inbound>) {
        while let Some(msg) = inbound.recv().await {
            let msgs = match decode_partials(&msg.payload) {
                Ok(msgs) => msgs,
                Err(e) => {
                    debug!(peer = msg.from, error = %e, "peer partial signatures refused");
                    self.count("peer", &Err(e));
                    continue;
                }
            };
            // At most MAX_PARTIALS_PER_MESSAGE (decode_partials), so this fits a u32.
            let Ok(permit) = self
                .inflight
                .clone()
                .try_acquire_many_owned(msgs.len() as u32)
            else {
                for _ in &msgs {
                    self.count("peer", &Err(Rejection::Overloaded));
                }
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.handle_peer_partials(msg.from, msgs).await;
                drop(permit);
            });
        }
    }

    /// Whether this node's own partial of `duty` for `pubkey` over `signing_root` is stored.
    pub fn has_own(&self, duty: Duty, pubkey: BlsPubkey, signing_root: Root) -> bool {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(duty, pubkey, signing_root))
            .is_some_and(|e| e.partials.contains_key(&self.own_share))
    }

    /// Forgets partials of slots before `slot`; partial exits are kept about a day longer
    /// (their operators may ask for the exit hours apart).
    pub fn prune(&self, slot: u64) {
        let exit_slots = EXIT_KEEP_SECS / self.schedule.seconds_per_slot().max(1);
        let current = self.current_slot().unwrap_or(slot);
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(d, _, _), _| {
                if d.kind == DutyKind::Exit {
                    d.slot.saturating_add(exit_slots) >= current
                } else {
                    d.slot >= slot
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duty::fixtures::{self, attester, Dv};
    use crate::duty::{DutyDefs, ProposerDef};
    use crate::eth::types::Minimal;
    use crate::sigagg;
    use crate::value::DutyValue;
    use prometheus_client::registry::Registry;

    /// Broadcasts go to `.0` (as `usize::MAX`), direct sends to `.0` with the peer index.
    struct Outbox(mpsc::UnboundedSender<(usize, Vec<u8>)>);

    impl ParSigTransport for Outbox {
        fn broadcast(&self, payload: Vec<u8>) -> Result<(), SendError> {
            self.0
                .send((usize::MAX, payload))
                .map_err(|_| SendError::Closed)
        }

        fn send(&self, to: usize, payload: Vec<u8>) -> Result<(), SendError> {
            self.0.send((to, payload)).map_err(|_| SendError::Closed)
        }
    }

    struct Node {
        parsig: Arc<ParSig<Minimal>>,
        outbox: mpsc::UnboundedReceiver<(usize, Vec<u8>)>,
        ready: mpsc::Receiver<Threshold>,
        registry: Registry,
    }

    fn node(index: usize, dvs: &[Dv], dutydb: Arc<DutyDb<Minimal>>) -> Node {
        let mut registry = Registry::default();
        let (tx, outbox) = mpsc::unbounded_channel();
        let (out, ready) = mpsc::channel(16);
        let parsig = Arc::new(ParSig::new(
            index as u64 + 1,
            fixtures::T,
            fixtures::dv_shares(dvs),
            fixtures::schedule(),
            dutydb,
            Arc::new(Outbox(tx)),
            out,
            ParSigMetrics::new(&mut registry),
            Tracker::new(&mut registry, None).unwrap(),
        ));
        Node {
            parsig,
            outbox,
            ready,
            registry,
        }
    }

    fn partial(dv: &Dv, node: usize, duty: Duty, data: AttestationData) -> ParSigMsg {
        let root = fixtures::schedule().attestation_signing_root(&data);
        ParSigMsg {
            duty,
            pubkey: dv.pubkey,
            share_index: node as u64 + 1,
            object: SignedObject::Attestation { data },
            signature: BlsSignature(tbls::sign(&dv.shares[node], &root.0).to_bytes()),
        }
    }

    fn metrics(r: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, r).unwrap();
        s
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(100)
    }

    /// A peer whose partial comes after the threshold gets this node's partial; once it
    /// restarted (it sends the same partial again) it gets it again, but not for an immediate
    /// repeat (two restarted nodes must not answer each other for ever).
    #[tokio::test]
    async fn a_restarted_late_peer_is_caught_up_again() {
        let dvs = fixtures::dvs(1);
        let duty = Duty::new(9, DutyKind::Attester);
        let entry = attester(dvs[0].pubkey, 9, 3, 5);
        let db = Arc::new(DutyDb::new());
        db.store(duty, &DutyValue::Attester(vec![entry])).unwrap();
        let mut n = node(0, &dvs, db);
        n.parsig
            .submit_local(partial(&dvs[0], 0, duty, entry.data), soon())
            .await
            .unwrap();
        assert!(n.outbox.try_recv().is_ok(), "own partial broadcast");
        for peer in [1, 2] {
            let payload = encode_partials(&[partial(&dvs[0], peer, duty, entry.data)]);
            n.parsig.handle_peer(peer, &payload).await.unwrap();
        }
        assert!(n.ready.try_recv().is_ok(), "threshold reached");
        assert!(n.outbox.try_recv().is_err(), "nobody was behind");
        let late = encode_partials(&[partial(&dvs[0], 3, duty, entry.data)]);
        let answers = |n: &mut Node| {
            let mut to = Vec::new();
            while let Ok((peer, payload)) = n.outbox.try_recv() {
                let msgs = decode_partials(&payload).unwrap();
                assert!(
                    msgs.iter().all(|m| m.share_index == 1),
                    "this node's own partial"
                );
                to.push(peer);
            }
            to
        };
        n.parsig.handle_peer(3, &late).await.unwrap();
        assert_eq!(answers(&mut n), vec![3], "late peer caught up");
        n.parsig.handle_peer(3, &late).await.unwrap();
        assert_eq!(
            answers(&mut n),
            Vec::<usize>::new(),
            "an immediate repeat is not answered"
        );
        tokio::time::sleep(CATCH_UP_AGAIN).await; // 2 s of this test's time
        n.parsig.handle_peer(3, &late).await.unwrap();
        assert_eq!(
            answers(&mut n),
            vec![3],
            "the restarted peer is caught up again"
        );
        // A partial of a peer that was part of the threshold, repeated: that peer restarted too.
        let early = encode_partials(&[partial(&dvs[0], 1, duty, entry.data)]);
        n.parsig.handle_peer(1, &early).await.unwrap();
        assert_eq!(answers(&mut n), vec![1]);
        assert!(n.ready.try_recv().is_err(), "one threshold per duty and DV");
    }

    #[tokio::test]
    async fn threshold_partials_exchange_and_combine_to_the_dv_signature() {
        let dvs = fixtures::dvs(1);
        let duty = Duty::new(9, DutyKind::Attester);
        let entry = attester(dvs[0].pubkey, 9, 3, 5);
        let mut nodes: Vec<Node> = (0..fixtures::N)
            .map(|i| {
                let db = Arc::new(DutyDb::new());
                db.store(duty, &DutyValue::Attester(vec![entry])).unwrap();
                node(i, &dvs, db)
            })
            .collect();
        // Nodes 0, 1 and 3 have their VC's partial; node 2's VC is down.
        for i in [0, 1, 3] {
            let msg = partial(&dvs[0], i, duty, entry.data);
            nodes[i].parsig.submit_local(msg, soon()).await.unwrap();
        }
        // Deliver every broadcast to every other node.
        for from in 0..fixtures::N {
            while let Ok((_, payload)) = nodes[from].outbox.try_recv() {
                for to in (0..fixtures::N).filter(|&to| to != from) {
                    nodes[to].parsig.handle_peer(from, &payload).await.unwrap();
                }
            }
        }
        let root = fixtures::schedule().attestation_signing_root(&entry.data);
        for n in &mut nodes {
            let th = n.ready.try_recv().expect("threshold reached");
            assert_eq!(th.partials.len(), fixtures::T);
            assert_eq!(th.signing_root, root);
            // Each point is its signature's decoding, under the same share index.
            for p in &th.partials {
                assert_eq!(p.point.to_bytes(), p.signature.0, "share {}", p.share_index);
            }
            let sent: Vec<(u64, BlsSignature)> = th
                .partials
                .iter()
                .map(|p| (p.share_index, p.signature))
                .collect();
            let sig = sigagg::aggregate(&sent, fixtures::T, &dvs[0].pubkey, &root).unwrap();
            assert_eq!(sig.0, tbls::sign(&dvs[0].secret, &root.0).to_bytes());
            assert!(n.ready.try_recv().is_err(), "one threshold per duty and DV");
        }
        // Node 2 saw three valid peer partials and no local one.
        assert!(metrics(&nodes[2].registry).contains("parsig_accepted_total{source=\"peer\"} 3"));
    }

    /// Sigagg does not check again the combination of partials of a DV whose public shares are
    /// consistent (`SigAgg::trusting_verified_partials`): that is sound only because no bad
    /// partial gets past this stage. Bad partials from peers and from the local VC are refused,
    /// the threshold is formed from valid ones only, and their combination (never verified in
    /// sigagg) is exactly the DV's signature.
    #[tokio::test]
    async fn bad_partials_never_reach_the_unchecked_combination() {
        use rand::SeedableRng;
        let dvs = fixtures::dvs(1);
        let dv = &dvs[0];
        let duty = Duty::new(9, DutyKind::Attester);
        let entry = attester(dv.pubkey, 9, 3, 5);
        let db = Arc::new(DutyDb::new());
        db.store(duty, &DutyValue::Attester(vec![entry])).unwrap();
        let mut n = node(0, &dvs, db.clone());
        let root = fixtures::schedule().attestation_signing_root(&entry.data);
        let sign = |sk: &tbls::SecretKey| BlsSignature(tbls::sign(sk, &root.0).to_bytes());
        let stranger = tbls::random_secret(&mut rand::rngs::StdRng::seed_from_u64(5));
        let mut infinity = [0u8; 96];
        infinity[0] = 0xc0;
        // The local VC signs with another share; peer 1 with share 3's key; peer 2 with a key
        // outside the cluster; peer 3 sends the infinity point.
        let mut vc = partial(dv, 0, duty, entry.data);
        vc.signature = sign(&dv.shares[2]);
        let err = n.parsig.submit_local(vc, soon()).await.unwrap_err();
        assert_eq!(err.reason(), "invalid_signature");
        let bad = [
            (1, sign(&dv.shares[2])),
            (2, sign(&stranger)),
            (3, BlsSignature(infinity)),
        ];
        for (from, signature) in bad {
            let mut m = partial(dv, from, duty, entry.data);
            m.signature = signature;
            let err = n.parsig.handle_peer(from, &encode_partials(&[m])).await;
            assert_eq!(
                err.unwrap_err().reason(),
                "invalid_signature",
                "peer {from}"
            );
        }
        assert!(n.ready.is_empty(), "no threshold from bad partials");
        // Valid partials of the VC and of peers 1 and 3: now the threshold.
        let vc = partial(dv, 0, duty, entry.data);
        n.parsig.submit_local(vc, soon()).await.unwrap();
        for from in [1, 3] {
            let m = partial(dv, from, duty, entry.data);
            n.parsig
                .handle_peer(from, &encode_partials(&[m]))
                .await
                .unwrap();
        }
        let th = n.ready.try_recv().expect("threshold of valid partials");
        let valid: Vec<u64> = th.partials.iter().map(|p| p.share_index).collect();
        assert_eq!(valid, [1, 2, 4]);
        let public: Vec<tbls::PublicKey> = dv.shares.iter().map(|s| s.sk_to_pk()).collect();
        let group = dv.secret.sk_to_pk();
        let mut registry = Registry::default();
        let (agg, rechecked) = sigagg::SigAgg::<Minimal>::new(fixtures::T, db, &mut registry)
            .trusting_verified_partials([(&group, public.as_slice())]);
        assert_eq!(rechecked, 0, "the fixture's shares are consistent");
        match agg.aggregate(&th).await {
            Ok(crate::value::Signed::Attestation(a)) => {
                assert_eq!(a.signature.0, tbls::sign(&dv.secret, &root.0).to_bytes())
            }
            other => panic!("not the DV's attestation: {other:?}"),
        }
        assert!(
            metrics(&registry).contains("sigagg_verify_seconds_count 0"),
            "the combination was not checked again"
        );
    }

    /// A peer's RANDAO partial (made ahead at the epoch start) that arrives before this node
    /// knows the epoch's proposer duties waits for them instead of being refused and lost; one
    /// for a slot whose scheduled proposer is another DV is still refused.
    #[tokio::test]
    async fn an_early_randao_partial_waits_for_the_proposer_duty() {
        let dvs = fixtures::dvs(2);
        let db = Arc::new(DutyDb::new());
        let n = node(0, &dvs, db.clone());
        let slot = 16;
        let epoch = fixtures::schedule().epoch_at_slot(slot);
        let root = fixtures::schedule().randao_signing_root(epoch);
        let randao = |dv: &Dv| ParSigMsg {
            duty: Duty::new(slot, DutyKind::Randao),
            pubkey: dv.pubkey,
            share_index: 2,
            object: SignedObject::Randao { epoch },
            signature: BlsSignature(tbls::sign(&dv.shares[1], &root.0).to_bytes()),
        };
        let payload = encode_partials(&[randao(&dvs[0])]);
        let early = {
            let p = n.parsig.clone();
            tokio::spawn(async move { p.handle_peer(1, &payload).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!early.is_finished(), "waits for the proposer duty");
        db.store_defs(
            Duty::new(slot, DutyKind::Proposer),
            DutyDefs::Proposer(ProposerDef {
                pubkey: dvs[0].pubkey,
                validator_index: 0,
            }),
        );
        early
            .await
            .unwrap()
            .expect("accepted once the duty is known");
        assert!(metrics(&n.registry).contains("parsig_accepted_total{source=\"peer\"} 1"));
        let other = encode_partials(&[randao(&dvs[1])]);
        assert!(matches!(
            n.parsig.handle_peer(1, &other).await,
            Err(Rejection::UnknownDuty { .. })
        ));
    }

    #[tokio::test]
    async fn bad_partials_are_refused_and_counted() {
        let dvs = fixtures::dvs(2);
        let duty = Duty::new(9, DutyKind::Attester);
        let entry = attester(dvs[0].pubkey, 9, 3, 5);
        let db = Arc::new(DutyDb::new());
        db.store(duty, &DutyValue::Attester(vec![entry])).unwrap();
        let n = node(0, &dvs, db);
        let p = &n.parsig;
        let encode = |m: &ParSigMsg| encode_partials(&[*m]);

        // A peer speaking for another share.
        let m = partial(&dvs[0], 2, duty, entry.data);
        let err = p.handle_peer(1, &encode(&m)).await.unwrap_err();
        assert_eq!(err.reason(), "wrong_share_index");
        // The right share index with another share's signature.
        let mut forged = partial(&dvs[0], 2, duty, entry.data);
        forged.share_index = 2;
        let err = p.handle_peer(1, &encode(&forged)).await.unwrap_err();
        assert_eq!(err.reason(), "invalid_signature");
        // Signed over other data than decided (the root a peer would claim is never used).
        let mut other = entry.data;
        other.beacon_block_root = Root([7; 32]);
        let m = partial(&dvs[0], 1, duty, other);
        let err = p.handle_peer(1, &encode(&m)).await.unwrap_err();
        assert_eq!(err.reason(), "mismatching_data");
        // A DV outside the cluster.
        let mut stranger = partial(&dvs[0], 1, duty, entry.data);
        stranger.pubkey = BlsPubkey([1; 48]);
        let err = p.handle_peer(1, &encode(&stranger)).await.unwrap_err();
        assert_eq!(err.reason(), "unknown_pubkey");
        // A duty nothing was decided for (DV 1 has no attestation at slot 9).
        let m = partial(&dvs[1], 1, duty, entry.data);
        let err = p.handle_peer(1, &encode(&m)).await.unwrap_err();
        assert_eq!(err.reason(), "unknown_duty");
        // Garbage, an empty list, and a lone partial that is not in a list (version 1.0.0).
        let err = p.handle_peer(1, b"[{\"duty\":").await.unwrap_err();
        assert_eq!(err.reason(), "malformed");
        let err = p.handle_peer(1, b"[]").await.unwrap_err();
        assert_eq!(err.reason(), "malformed");
        let lone = serde_json::to_vec(&partial(&dvs[0], 1, duty, entry.data)).unwrap();
        let err = p.handle_peer(1, &lone).await.unwrap_err();
        assert_eq!(err.reason(), "malformed");
        // A local VC partial over data that was not decided.
        let m = partial(&dvs[0], 0, duty, other);
        let err = p.submit_local(m, soon()).await.unwrap_err();
        assert_eq!(err.reason(), "mismatching_data");
        // A valid partial is stored once; a replay is harmless; a second signature of the
        // same share over other data fails verification.
        let good = partial(&dvs[0], 1, duty, entry.data);
        p.handle_peer(1, &encode(&good)).await.unwrap();
        p.handle_peer(1, &encode(&good)).await.unwrap();
        let mut twin = good;
        twin.signature = partial(&dvs[0], 1, duty, other).signature;
        let err = p.handle_peer(1, &encode(&twin)).await.unwrap_err();
        assert_eq!(err.reason(), "invalid_signature");

        let text = metrics(&n.registry);
        let counted = |source: &str, reason: &str, kind: &str, n: u64| {
            let line =
                format!("parsig_rejected_total{{source=\"{source}\",reason=\"{reason}\",kind=\"{kind}\"}} {n}");
            assert!(text.contains(&line), "{line} not counted:\n{text}");
        };
        counted("peer", "invalid_signature", "attester", 2);
        counted("peer", "malformed", "none", 3);
        counted("peer", "wrong_share_index", "none", 1);
        counted("peer", "unknown_pubkey", "none", 1);
        // Early partials are told apart by the duty kind they name.
        counted("peer", "unknown_duty", "attester", 1);
        counted("local", "mismatching_data", "attester", 1);
        assert!(n.ready.is_empty(), "no threshold from one valid partial");
    }
    #[test]
    fn partial_lists_are_bounded_and_fit_the_frame() {
        let dvs = fixtures::dvs(1);
        let duty = Duty::new(9, DutyKind::Attester);
        // The largest partial: attestation data with the biggest numbers JSON can hold here.
        let mut data = attester(dvs[0].pubkey, 9, 3, 0xff).data;
        data.slot = u64::MAX;
        data.index = u64::MAX;
        data.source.epoch = u64::MAX;
        data.target.epoch = u64::MAX;
        let mut msg = partial(&dvs[0], 1, duty, data);
        msg.duty = Duty::new(u64::MAX, DutyKind::SyncContribution);
        msg.share_index = u64::MAX;
        let full = vec![msg; MAX_PARTIALS_PER_MESSAGE];
        let payload = encode_partials(&full);
        let room = crate::p2p::Limits::default().max_payload(Protocol::Parsig);
        assert!(
            payload.len() <= room,
            "{} partials take {} bytes, the frame holds {room}",
            full.len(),
            payload.len()
        );
        assert_eq!(decode_partials(&payload).unwrap(), full);
        // One more is refused, naming the limit.
        let over = encode_partials(&vec![msg; MAX_PARTIALS_PER_MESSAGE + 1]);
        let err = decode_partials(&over).unwrap_err();
        assert_eq!(err.reason(), "malformed");
        assert!(err.to_string().contains("more than 1024"), "{err}");
        // The element past the limit is not decoded into memory, whatever it holds.
        let mut tail = encode_partials(&full);
        tail.pop();
        tail.extend(b",{\"not\":\"a partial\"}]");
        assert!(decode_partials(&tail)
            .unwrap_err()
            .to_string()
            .contains("more than 1024"));
    }

    /// Delivers every message in the nodes' outboxes to its peers (broadcasts to all others),
    /// until none is left; returns how many messages were delivered.
    async fn deliver_all(nodes: &mut [Node]) -> usize {
        let mut delivered = 0;
        loop {
            let mut any = false;
            for from in 0..nodes.len() {
                while let Ok((to, payload)) = nodes[from].outbox.try_recv() {
                    any = true;
                    delivered += 1;
                    for peer in
                        (0..nodes.len()).filter(|&p| p != from && (to == usize::MAX || to == p))
                    {
                        let _ = nodes[peer].parsig.handle_peer(from, &payload).await;
                    }
                }
            }
            if !any {
                return delivered;
            }
        }
    }

    #[tokio::test]
    async fn one_message_carries_a_requests_partials_and_each_is_judged_alone() {
        let dvs = fixtures::dvs(6);
        let duty = Duty::new(9, DutyKind::Attester);
        let entries: Vec<_> = dvs
            .iter()
            .enumerate()
            .map(|(i, dv)| attester(dv.pubkey, 9, i as u64, 5))
            .collect();
        let mut nodes: Vec<Node> = (0..fixtures::N)
            .map(|i| {
                let db = Arc::new(DutyDb::new());
                db.store(duty, &DutyValue::Attester(entries.clone()))
                    .unwrap();
                node(i, &dvs, db)
            })
            .collect();
        let mut other = entries[2].data;
        other.beacon_block_root = Root([7; 32]);
        for (i, n) in nodes.iter_mut().enumerate().take(3) {
            let mut items: Vec<(ParSigMsg, Instant)> = dvs
                .iter()
                .zip(&entries)
                .map(|(dv, e)| (partial(dv, i, duty, e.data), soon()))
                .collect();
            if i == 0 {
                // Node 0's VC signed DV 2 over data that was not decided.
                items[2].0 = partial(&dvs[2], 0, duty, other);
            }
            let results = n.parsig.submit_local_many(items).await;
            let refused: Vec<_> = results
                .iter()
                .enumerate()
                .filter_map(|(k, r)| r.as_ref().err().map(|e| (k, e.reason())))
                .collect();
            let expected = if i == 0 {
                vec![(2, "mismatching_data")]
            } else {
                vec![]
            };
            assert_eq!(refused, expected, "node {i}");
            // All accepted partials of the request in one broadcast.
            let (to, payload) = n.outbox.try_recv().expect("a broadcast");
            assert_eq!(to, usize::MAX);
            let sent = decode_partials(&payload).unwrap();
            assert_eq!(sent.len(), if i == 0 { 5 } else { 6 }, "node {i}");
            assert!(n.outbox.try_recv().is_err(), "one message per request");
            // Put it back for delivery.
            n.parsig.transport.broadcast(payload).unwrap();
        }
        assert_eq!(deliver_all(&mut nodes).await, 3);
        // Every node combines the five DVs with three valid partials; DV 2 has two (shares 2
        // and 3) anywhere, node 0's refused one was never sent.
        for (i, n) in nodes.iter_mut().enumerate() {
            let mut combined = Vec::new();
            while let Ok(t) = n.ready.try_recv() {
                combined.push(t.pubkey);
            }
            assert_eq!(combined.len(), 5, "node {i}: {combined:?}");
            assert!(!combined.contains(&dvs[2].pubkey), "node {i}");
        }
        // A repeated request sends nothing.
        let again = vec![(partial(&dvs[0], 1, duty, entries[0].data), soon())];
        assert_eq!(nodes[1].parsig.submit_local_many(again).await, vec![Ok(())]);
        assert!(nodes[1].outbox.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_partial_waiting_for_its_decision_holds_back_no_other() {
        let dvs = fixtures::dvs(2);
        let decided = Duty::new(9, DutyKind::Attester);
        let pending = Duty::new(10, DutyKind::Attester);
        let e0 = attester(dvs[0].pubkey, 9, 0, 5);
        let e1 = attester(dvs[1].pubkey, 10, 1, 5);
        let db = Arc::new(DutyDb::new());
        db.store(decided, &DutyValue::Attester(vec![e0])).unwrap();
        let mut n = node(0, &dvs, db.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        let items = vec![
            (partial(&dvs[1], 0, pending, e1.data), deadline),
            (partial(&dvs[0], 0, decided, e0.data), deadline),
        ];
        let p = n.parsig.clone();
        let task = tokio::spawn(async move { p.submit_local_many(items).await });
        // DV 0's partial goes out while DV 1's waits for slot 10's decision.
        let (_, first) = n.outbox.recv().await.unwrap();
        assert_eq!(decode_partials(&first).unwrap()[0].pubkey, dvs[0].pubkey);
        assert!(!task.is_finished());
        db.store(pending, &DutyValue::Attester(vec![e1])).unwrap();
        assert_eq!(task.await.unwrap(), vec![Ok(()), Ok(())]);
        let (_, second) = n.outbox.recv().await.unwrap();
        assert_eq!(decode_partials(&second).unwrap()[0].pubkey, dvs[1].pubkey);
    }
}
