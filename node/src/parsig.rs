//! Partial signatures: verification, storage and exchange with the peers.
//!
//! A [`ParSigMsg`] carries one share's signature for one duty and DV, with the object it signs
//! ([`SignedObject`]). Every partial — from the local VC or from a peer over
//! [`Protocol::Parsig`] — is checked the same way before it is stored:
//!
//! 1. the DV is one of the cluster's and the share index is the sender's (a peer can only speak
//!    for its own share);
//! 2. the duty is known: the decided value exists in the [`DutyDb`] (waiting for it a short
//!    while, peers may be ahead), or for RANDAO the DV is the scheduled proposer;
//! 3. the object equals what was decided (local partials for anything else are refused);
//! 4. the signature verifies against the sender's public share over the signing root computed
//!    **here** from the decided data — a peer's claim about the root is never used.
//!
//! Refusals are counted by reason (`parsig_rejected_total{source,reason}`). Accepted local
//! partials are broadcast to the peers. When `threshold` partials over the same signing root
//! exist for a duty and DV, one [`Threshold`] is emitted for aggregation.

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

use crate::duty::{Duty, DutyDefs, DutyKind};
use crate::dutydb::DutyDb;
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{AttestationData, BlsPubkey, BlsSignature, Epoch, Preset, Root};
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
}

impl ParSigTransport for NetworkHandle {
    fn broadcast(&self, payload: Vec<u8>) -> Result<(), SendError> {
        NetworkHandle::broadcast(self, Protocol::Parsig, payload)
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

#[derive(Default)]
struct Entry {
    partials: BTreeMap<u64, (BlsSignature, Root)>,
    done: bool,
}

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
    entries: Mutex<HashMap<(Duty, BlsPubkey), Entry>>,
    inflight: Arc<Semaphore>,
    verifier: BatchVerifier,
    metrics: ParSigMetrics,
    tracker: Tracker,
    peer_wait: Duration,
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
        }
    }

    /// This node's share index.
    pub fn own_share(&self) -> u64 {
        self.own_share
    }

    /// The signed object and signing root that partials of `duty` for `pubkey` must have,
    /// waiting for the decided value until `deadline`.
    pub async fn expected(
        &self,
        duty: Duty,
        pubkey: BlsPubkey,
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
            DutyKind::Randao => match self.dutydb.proposer(slot) {
                Some(p) if p.pubkey == pubkey => {
                    let epoch = self.schedule.epoch_at_slot(slot);
                    Ok((
                        SignedObject::Randao { epoch },
                        self.schedule.randao_signing_root(epoch),
                    ))
                }
                _ => Err(unknown("not the scheduled proposer of the slot".into())),
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
        }
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
        let (object, root) = self.expected(msg.duty, msg.pubkey, deadline).await?;
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

    fn store(&self, msg: &ParSigMsg, root: Root) -> Result<Option<Threshold>, Rejection> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry((msg.duty, msg.pubkey)).or_default();
        if let Some((sig, _)) = entry.partials.get(&msg.share_index) {
            if *sig != msg.signature {
                return Err(Rejection::Equivocation {
                    duty: msg.duty,
                    pubkey: msg.pubkey,
                    share_index: msg.share_index,
                });
            }
            return Ok(None);
        }
        entry
            .partials
            .insert(msg.share_index, (msg.signature, root));
        if entry.done {
            return Ok(None);
        }
        let partials: Vec<(u64, BlsSignature)> = entry
            .partials
            .iter()
            .filter(|(_, (_, r))| *r == root)
            .map(|(i, (s, _))| (*i, *s))
            .take(self.threshold)
            .collect();
        if partials.len() < self.threshold {
            return Ok(None);
        }
        entry.done = true;
        Ok(Some(Threshold {
            duty: msg.duty,
            pubkey: msg.pubkey,
            object: msg.object,
            signing_root: root,
            partials,
        }))
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
            let ready = self.store(&msg, root)?;
            self.tracker
                .validator_stage(msg.duty, msg.pubkey, Stage::LocalSigned);
            self.tracker.partial(msg.duty, msg.pubkey, msg.share_index);
            let payload = serde_json::to_vec(&msg).map_err(|e| Rejection::Malformed(e.to_string()))?;
            if let Err(e) = self.transport.broadcast(payload) {
                warn!(duty = %msg.duty, error = %e, "cannot send the partial signature to the peers");
            }
            self.emit(ready).await;
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
            let ready = self.store(&msg, root)?;
            self.tracker.partial(msg.duty, msg.pubkey, msg.share_index);
            self.emit(ready).await;
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

    /// Forgets partials of slots before `slot`.
    pub fn prune(&self, slot: u64) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(d, _), _| d.slot >= slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duty::fixtures::{self, attester, Dv};
    use crate::eth::types::Minimal;
    use crate::sigagg;
    use crate::value::DutyValue;
    use prometheus_client::registry::Registry;

    struct Outbox(mpsc::UnboundedSender<Vec<u8>>);

    impl ParSigTransport for Outbox {
        fn broadcast(&self, payload: Vec<u8>) -> Result<(), SendError> {
            self.0.send(payload).map_err(|_| SendError::Closed)
        }
    }

    struct Node {
        parsig: Arc<ParSig<Minimal>>,
        outbox: mpsc::UnboundedReceiver<Vec<u8>>,
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
            while let Ok(payload) = nodes[from].outbox.try_recv() {
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
