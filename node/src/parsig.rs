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
//! Refusals are counted by reason (`parsig_rejected_total{source,reason}`). Accepted local
//! partials are broadcast to the peers (a repeated local partial is not sent again). When
//! `threshold` partials over the same signing root exist for a duty and DV, one [`Threshold`]
//! is emitted for aggregation. A peer whose partial arrives after that (it was down or late:
//! e.g. a restarted node asking for next epoch's selection proofs again) is sent this node's
//! own partial for it, once, so it can combine too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use crate::duty::{Duty, DutyDefs, DutyKind};
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

/// One partial signature (the wire format of the exchange: JSON).
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
    /// `(share index, signature)`, exactly threshold many.
    pub partials: Vec<(u64, BlsSignature)>,
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
            "Refused partial signatures by source (local, peer) and reason",
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
    partials: BTreeMap<u64, BlsSignature>,
    done: bool,
    /// Peers already sent this node's partial because theirs came after the threshold.
    caught_up: BTreeSet<u64>,
}

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
        let Some(shares) = &self.shares else {
            return Err(Rejection::Malformed(
                "this node holds no key shares (middleware mode)".into(),
            ));
        };
        let (expected, root) = self.expected(duty, pubkey, &object, deadline).await?;
        if expected != object {
            let rejection = Rejection::MismatchingData { duty, pubkey };
            self.count("local", &Err(rejection.clone()));
            return Err(rejection);
        }
        if self.has_own(duty, pubkey, root) {
            return Ok(root);
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
        self.submit_local(msg, deadline).await.map(|()| root)
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
                let member = matches!(
                    self.dutydb.defs(Duty::new(slot, DutyKind::SyncMessage)),
                    Some(DutyDefs::SyncMessage(m)) if m.iter().any(|d| d.pubkey == pubkey)
                );
                if !member {
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

    async fn verify(
        &self,
        msg: &ParSigMsg,
        sender_share: u64,
        deadline: Instant,
    ) -> Result<Root, Rejection> {
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
        let invalid = || Rejection::InvalidSignature {
            duty: msg.duty,
            pubkey: msg.pubkey,
            share_index: msg.share_index,
        };
        let share = usize::try_from(sender_share.saturating_sub(1))
            .ok()
            .and_then(|i| shares.get(i))
            .ok_or_else(invalid)?;
        let sig = tbls::Signature::from_bytes(&msg.signature.0).map_err(|_| invalid())?;
        // Checked together with the other partials arriving meanwhile (all DVs, local and
        // peers'), on the verifier's thread.
        let item = BatchItem {
            public_key: *share,
            message: root.0,
            signature: sig,
        };
        if !self.verifier.verify(item).await {
            return Err(invalid());
        }
        Ok(root)
    }

    /// Stores a verified partial. Returns whether it was new, the threshold it completed, and
    /// — for a peer's partial arriving after the threshold — this node's own partial for that
    /// peer (once per peer and entry).
    fn store(&self, msg: &ParSigMsg, root: Root) -> Result<Stored, Rejection> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries
            .entry((msg.duty, msg.pubkey, root))
            .or_insert_with(|| Entry {
                object: msg.object,
                partials: BTreeMap::new(),
                done: false,
                caught_up: BTreeSet::new(),
            });
        let late = entry.done;
        let mut stored = Stored::default();
        match entry.partials.get(&msg.share_index) {
            Some(sig) if *sig != msg.signature => {
                return Err(Rejection::Equivocation {
                    duty: msg.duty,
                    pubkey: msg.pubkey,
                    share_index: msg.share_index,
                })
            }
            Some(_) => {}
            None => {
                entry.partials.insert(msg.share_index, msg.signature);
                stored.new = true;
            }
        }
        if late && msg.share_index != self.own_share && entry.caught_up.insert(msg.share_index) {
            stored.catch_up = entry
                .partials
                .get(&self.own_share)
                .map(|signature| ParSigMsg {
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
                .map(|(i, s)| (*i, *s))
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
        let result = async {
            let root = self.verify(&msg, self.own_share, deadline).await?;
            let stored = self.store(&msg, root)?;
            if !stored.new {
                // Signed and sent before (a repeated request): nothing to do.
                return Ok(());
            }
            self.tracker
                .validator_stage(msg.duty, msg.pubkey, Stage::LocalSigned);
            self.tracker.partial(msg.duty, msg.pubkey, msg.share_index);
            let payload = serde_json::to_vec(&msg).map_err(|e| Rejection::Malformed(e.to_string()))?;
            if let Err(e) = self.transport.broadcast(payload) {
                warn!(duty = %msg.duty, error = %e, "cannot send the partial signature to the peers");
            }
            self.emit(stored.threshold).await;
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            warn!(error = %e, "local partial signature refused");
        }
        self.count("local", &result);
        result
    }

    /// Handles a partial from the peer at node index `from` (share `from + 1`).
    pub async fn handle_peer(&self, from: usize, payload: &[u8]) -> Result<(), Rejection> {
        let result = async {
            let msg: ParSigMsg =
                serde_json::from_slice(payload).map_err(|e| Rejection::Malformed(e.to_string()))?;
            let deadline = Instant::now() + self.peer_wait;
            let root = self.verify(&msg, from as u64 + 1, deadline).await?;
            let stored = self.store(&msg, root)?;
            if stored.new {
                self.tracker.partial(msg.duty, msg.pubkey, msg.share_index);
            }
            if let Some(own) = stored.catch_up {
                debug!(peer = from, duty = %own.duty, pubkey = %own.pubkey, "peer is behind; sending it this node's partial");
                let payload =
                    serde_json::to_vec(&own).map_err(|e| Rejection::Malformed(e.to_string()))?;
                if let Err(e) = self.transport.send(from, payload) {
                    debug!(peer = from, error = %e, "cannot send the partial signature to the peer");
                }
            }
            self.emit(stored.threshold).await;
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            debug!(peer = from, error = %e, "peer partial signature refused");
        }
        self.count("peer", &result);
        result
    }

    /// Handles peers' messages from `inbound` until it closes, each in its own task (bounded).
    pub async fn run_inbound(self: Arc<Self>, mut inbound: mpsc::Receiver<crate::p2p::Inbound>) {
        while let Some(msg) = inbound.recv().await {
            let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
                self.count("peer", &Err(Rejection::Overloaded));
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.handle_peer(msg.from, &msg.payload).await;
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
    use crate::duty::ProposerDef;
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
            let sig = sigagg::aggregate(&th.partials, fixtures::T, &dvs[0].pubkey, &root).unwrap();
            assert_eq!(sig.0, tbls::sign(&dvs[0].secret, &root.0).to_bytes());
            assert!(n.ready.try_recv().is_err(), "one threshold per duty and DV");
        }
        // Node 2 saw three valid peer partials and no local one.
        assert!(metrics(&nodes[2].registry).contains("parsig_accepted_total{source=\"peer\"} 3"));
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
        let payload = serde_json::to_vec(&randao(&dvs[0])).unwrap();
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
        let other = serde_json::to_vec(&randao(&dvs[1])).unwrap();
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
        let encode = |m: &ParSigMsg| serde_json::to_vec(m).unwrap();

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
        // Garbage.
        let err = p.handle_peer(1, b"{\"duty\":").await.unwrap_err();
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
        assert!(
            text.contains("parsig_rejected_total{source=\"peer\",reason=\"invalid_signature\"} 2")
        );
        for reason in [
            "wrong_share_index",
            "unknown_pubkey",
            "unknown_duty",
            "malformed",
        ] {
            assert!(
                text.contains(&format!(
                    "parsig_rejected_total{{source=\"peer\",reason=\"{reason}\"}} 1"
                )),
                "{reason} not counted:\n{text}"
            );
        }
        assert!(
            text.contains("parsig_rejected_total{source=\"local\",reason=\"mismatching_data\"} 1")
        );
        assert!(n.ready.is_empty(), "no threshold from one valid partial");
    }
}
