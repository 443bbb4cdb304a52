//! Fetcher: the unsigned data of a duty, from this node's beacon node.
//!
//! - attester: attestation data once per committee of the slot (concurrently), one entry per
//!   DV;
//! - proposer: the block, produced with the combined RANDAO reveal;
//! - sync message: the head block root;
//! - aggregation: for each committee with a DV aggregator, the beacon node's aggregate of the
//!   committee's attestations over the decided attestation data;
//! - sync contribution: for each subcommittee with a DV aggregator, the beacon node's
//!   contribution over the decided sync committee root.
//!
//! Requests are retried until the caller's deadline (the beacon node may be briefly
//! unreachable or still processing the slot's block).
//!
//! [`FetchStage`] runs the stage: it takes each duty the scheduler fires, fetches its data and
//! hands it to consensus ([`DutyRunner`]). In remote-signer mode
//! ([`FetchStage::with_own_signatures`]) it also makes this node's partial signatures of what
//! is combined ahead of time (selection proofs, RANDAO reveals: no consensus, the signed
//! object is fixed) and picks the aggregators of an aggregation duty from the combined
//! selection proofs, reporting only those to the tracker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::clock::SlotClock;
use crate::decide::DutyRunner;
use crate::duty::{AttesterDef, Duty, DutyDefs, DutyKind, ProposerDef, ScheduledDuty};
use crate::dutydb::DutyDb;
use crate::eth::aggregate::{
    is_aggregator, is_sync_committee_aggregator, SyncAggregatorSelectionData,
    SyncCommitteeContribution,
};
use crate::eth::beacon::{BeaconClient, BeaconError, BlockId};
use crate::eth::heads::{Heads, OwnBlock};
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{Attestation, BlsPubkey, BlsSignature, CommitteeIndex, Preset, Root, Slot};
use crate::parsig::{ParSig, SignedObject};
use crate::tracker::{Reason, Stage, Tracker};
use crate::value::{AggregateEntry, AttesterEntry, DutyValue, ProposerEntry};

/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Fetcher {
    bn: BeaconClient,
}

async fn retry<T, F, Fut>(deadline: Instant, what: &str, mut f: F) -> Result<T, BeaconError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BeaconError>>,
{
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() + RETRY_PAUSE < deadline => {
                debug!(what, error = %e, "fetch failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Fetcher {
    /// A fetcher using `bn`.
    pub fn new(bn: BeaconClient) -> Fetcher {
        Fetcher { bn }
    }

    /// Attestation data for every DV of `defs` at `slot`, sorted by pubkey (one beacon node
    /// request per committee, all at once: one after the other, a slot whose DVs sit in k
    /// committees waited k round trips; measured with 200 ms links in latency-200ms, such slots
    /// were fetched ~250 ms later than the one-committee slots).
    pub async fn attester(
        &self,
        slot: Slot,
        defs: &[AttesterDef],
        deadline: Instant,
    ) -> Result<Vec<AttesterEntry>, BeaconError> {
        let committees: BTreeSet<CommitteeIndex> = defs.iter().map(|d| d.committee_index).collect();
        let answers =
            futures::future::try_join_all(committees.iter().map(|&committee| async move {
                let data = retry(deadline, "attestation data", || {
                    self.bn.attestation_data(slot, committee)
                })
                .await?;
                Ok::<_, BeaconError>((committee, data))
            }))
            .await?;
        let per_committee: BTreeMap<CommitteeIndex, _> = answers.into_iter().collect();
        let mut entries: Vec<AttesterEntry> = defs
            .iter()
            .filter_map(|d| {
                per_committee
                    .get(&d.committee_index)
                    .map(|data| AttesterEntry {
                        def: *d,
                        data: *data,
                    })
            })
            .collect();
        entries.sort_by_key(|e| e.def.pubkey);
        entries.dedup_by_key(|e| e.def.pubkey);
        Ok(entries)
    }

    /// The block of `slot` for `proposer`, produced with the combined `randao_reveal`.
    pub async fn proposer<P: Preset>(
        &self,
        slot: Slot,
        proposer: &ProposerDef,
        randao_reveal: &BlsSignature,
        deadline: Instant,
    ) -> Result<DutyValue<P>, BeaconError> {
        let block = retry(deadline, "block", || {
            self.bn.produce_block::<P>(slot, randao_reveal, None)
        })
        .await?;
        Ok(DutyValue::Proposer(Box::new(ProposerEntry {
            pubkey: proposer.pubkey,
            block,
        })))
    }

    /// The beacon node's aggregate of the attestations over the data with root `data_root`.
    pub async fn aggregate<P: Preset>(
        &self,
        slot: Slot,
        data_root: Root,
        deadline: Instant,
    ) -> Result<Attestation<P>, BeaconError> {
        retry(deadline, "aggregate attestation", || {
            self.bn.aggregate_attestation::<P>(slot, data_root)
        })
        .await
    }

    /// The beacon node's contribution of `subcommittee_index` over `block_root`.
    pub async fn contribution<P: Preset>(
        &self,
        slot: Slot,
        subcommittee_index: u64,
        block_root: Root,
        deadline: Instant,
    ) -> Result<SyncCommitteeContribution<P>, BeaconError> {
        retry(deadline, "sync committee contribution", || {
            self.bn
                .sync_committee_contribution::<P>(slot, subcommittee_index, block_root)
        })
        .await
    }

    /// The head block root, for the sync committee messages.
    pub async fn sync_root<P: Preset>(
        &self,
        deadline: Instant,
    ) -> Result<DutyValue<P>, BeaconError> {
        let head = retry(deadline, "head header", || self.bn.header(BlockId::Head)).await?;
        Ok(DutyValue::SyncMessage(head.root))
    }
}

/// The fetcher stage: runs each due duty — fetch its data, then consensus into the duty DB.
pub struct FetchStage<P: Preset> {
    /// The chain's slots (a duty's deadline is the end of its slot).
    pub clock: SlotClock,
    /// Where the data comes from.
    pub fetcher: Fetcher,
    /// Consensus under the slashing rules, into the duty DB.
    pub runner: Arc<DutyRunner<P>>,
    /// Where a proposer duty waits for its combined RANDAO reveal.
    pub dutydb: Arc<DutyDb<P>>,
    /// Told when a duty's data was fetched, or why not.
    pub tracker: Tracker,
    /// Remote-signer mode: this node's partial signatures, and the chain's signing roots
    /// (none: middleware mode).
    pub signing: Option<(Arc<ParSig<P>>, Arc<ForkSchedule>)>,
    /// Where remote mode records the cluster's decided blocks, for the slot's attestation.
    pub heads: Heads,
}

impl<P: Preset> FetchStage<P> {
    /// Remote-signer mode: `parsig` (holding this node's key shares) makes this node's
    /// partial signatures of what is combined ahead of time.
    pub fn with_own_signatures(
        mut self,
        parsig: Arc<ParSig<P>>,
        schedule: Arc<ForkSchedule>,
    ) -> FetchStage<P> {
        self.signing = Some((parsig, schedule));
        self
    }

    /// Makes this node's partial signature of each `(pubkey, object)` of `duty` (selection
    /// proofs, RANDAO reveal): combined with the peers', they wait in the duty DB for the VC.
    async fn sign_ahead(&self, duty: Duty, objects: Vec<(BlsPubkey, SignedObject)>) {
        let Some((parsig, _)) = &self.signing else {
            return;
        };
        let deadline = self.clock.deadline(duty.slot, 1);
        let pubkeys: Vec<_> = objects.iter().map(|(pubkey, _)| *pubkey).collect();
        // All of them in one batch verification and one message to the peers.
        let results = parsig.sign_own_many(duty, objects, deadline).await;
        for (pubkey, result) in pubkeys.into_iter().zip(results) {
            if let Err(e) = result {
                warn!(%duty, %pubkey, error = %e, "cannot make this node's partial signature");
                self.tracker.fail_validator(
                    duty,
                    pubkey,
                    Reason::NoLocalVcSignature,
                    &e.to_string(),
                );
            }
        }
    }

    /// The aggregators among `defs` (their combined selection proof elects them), reported to
    /// the tracker as the duty's participants, with the committees' aggregates to decide on.
    async fn aggregates(
        &self,
        duty: Duty,
        defs: &[AttesterDef],
        schedule: &ForkSchedule,
        deadline: Instant,
    ) -> Option<Result<DutyValue<P>, String>> {
        let slot = duty.slot;
        let root = schedule.selection_proof_signing_root(slot);
        let aggregators: Vec<AttesterDef> = defs
            .iter()
            .filter(|d| {
                self.dutydb
                    .combined(d.pubkey, root)
                    .is_some_and(|proof| is_aggregator(d.committee_length, &proof))
            })
            .copied()
            .collect();
        if aggregators.is_empty() {
            debug!(%duty, "no DV aggregates this slot");
            return None;
        }
        self.tracker.scheduled(&ScheduledDuty {
            duty,
            defs: DutyDefs::Aggregation(aggregators.clone()),
        });
        let committees: std::collections::BTreeSet<u64> =
            aggregators.iter().map(|d| d.committee_index).collect();
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for committee_index in committees {
            // The attester consensus of the slot may still run (a round change): wait for it
            // rather than give the duty up (latency-200ms --signer remote: slot 40's attester
            // duty decided in round 3 at 3.1 s, and its aggregation, due at 2.67 s, failed
            // `no decided attestation data` on every node).
            let data = match self
                .dutydb
                .await_attestation(slot, committee_index, deadline)
                .await
            {
                Ok(data) => data,
                Err(e) => {
                    errors.push(format!("committee {committee_index}: {e}"));
                    continue;
                }
            };
            match self
                .fetcher
                .aggregate::<P>(slot, Root::of(&data), deadline)
                .await
            {
                Ok(aggregate) => entries.push(AggregateEntry {
                    committee_index,
                    aggregate,
                }),
                Err(e) => errors.push(format!("committee {committee_index}: {e}")),
            }
        }
        Some(if entries.is_empty() {
            Err(errors.join("; "))
        } else {
            Ok(DutyValue::Aggregation(entries))
        })
    }

    /// Like [`FetchStage::aggregates`], for the sync subcommittees.
    async fn contributions(
        &self,
        duty: Duty,
        seats: &[crate::duty::SyncSubnetDef],
        schedule: &ForkSchedule,
        deadline: Instant,
    ) -> Option<Result<DutyValue<P>, String>> {
        let slot = duty.slot;
        let aggregators: Vec<crate::duty::SyncSubnetDef> = seats
            .iter()
            .filter(|d| {
                let data = SyncAggregatorSelectionData {
                    slot,
                    subcommittee_index: d.subcommittee_index,
                };
                self.dutydb
                    .combined(d.pubkey, schedule.sync_selection_proof_signing_root(&data))
                    .is_some_and(|proof| is_sync_committee_aggregator::<P>(&proof))
            })
            .copied()
            .collect();
        if aggregators.is_empty() {
            debug!(%duty, "no DV aggregates a sync subcommittee this slot");
            return None;
        }
        self.tracker.scheduled(&ScheduledDuty {
            duty,
            defs: DutyDefs::SyncContribution(aggregators.clone()),
        });
        let Some(block_root) = self.dutydb.sync_root(slot) else {
            return Some(Err("no decided sync committee root for the slot".into()));
        };
        let subcommittees: std::collections::BTreeSet<u64> =
            aggregators.iter().map(|d| d.subcommittee_index).collect();
        let mut entries = Vec::new();
        let mut errors = Vec::new();
        for sub in subcommittees {
            match self
                .fetcher
                .contribution::<P>(slot, sub, block_root, deadline)
                .await
            {
                Ok(c) => entries.push(c),
                Err(e) => errors.push(format!("subcommittee {sub}: {e}")),
            }
        }
        Some(if entries.is_empty() {
            Err(errors.join("; "))
        } else {
            Ok(DutyValue::SyncContribution(entries))
        })
    }

    /// Runs every duty of `due` in its own task, until the channel closes.
    pub async fn run(self: Arc<Self>, mut due: mpsc::Receiver<ScheduledDuty>) {
        while let Some(d) = due.recv().await {
            let this = self.clone();
            tokio::spawn(async move { this.execute(d).await });
        }
    }

    async fn execute(&self, d: ScheduledDuty) {
        let duty = d.duty;
        let deadline = self.clock.deadline(duty.slot, 1);
        let input: Result<DutyValue<P>, String> = match &d.defs {
            DutyDefs::Attester(defs) => {
                let own = self.heads.own_block(duty.slot);
                let epoch_start = self.clock.slots_of(self.clock.epoch_of(duty.slot)).start;
                self.fetcher
                    .attester(duty.slot, defs, deadline)
                    .await
                    .map(|mut entries| {
                        if let Some(own) = own {
                            vote_for_own_block(&mut entries, own, duty.slot == epoch_start);
                        }
                        DutyValue::Attester(entries)
                    })
                    .map_err(|e| e.to_string())
            }
            DutyDefs::SyncMessage(_) => self
                .fetcher
                .sync_root::<P>(deadline)
                .await
                .map_err(|e| e.to_string()),
            DutyDefs::SelectionProof(defs) => {
                let object = SignedObject::SelectionProof { slot: duty.slot };
                let objects = defs.iter().map(|d| (d.pubkey, object)).collect();
                return self.sign_ahead(duty, objects).await;
            }
            DutyDefs::SyncSelectionProof(seats) => {
                let objects = seats
                    .iter()
                    .map(|d| {
                        let data = SyncAggregatorSelectionData {
                            slot: duty.slot,
                            subcommittee_index: d.subcommittee_index,
                        };
                        (d.pubkey, SignedObject::SyncSelectionProof { data })
                    })
                    .collect();
                return self.sign_ahead(duty, objects).await;
            }
            DutyDefs::Randao(p) => {
                let epoch = self.clock.epoch_of(duty.slot);
                let objects = vec![(p.pubkey, SignedObject::Randao { epoch })];
                return self.sign_ahead(duty, objects).await;
            }
            DutyDefs::Aggregation(defs) => {
                let Some((_, schedule)) = &self.signing else {
                    return;
                };
                match self.aggregates(duty, defs, schedule, deadline).await {
                    Some(input) => input,
                    None => return,
                }
            }
            DutyDefs::SyncContribution(seats) => {
                let Some((_, schedule)) = &self.signing else {
                    return;
                };
                match self.contributions(duty, seats, schedule, deadline).await {
                    Some(input) => input,
                    None => return,
                }
            }
            DutyDefs::Proposer(p) => match self.dutydb.await_randao(duty.slot, deadline).await {
                Ok(reveal) => self
                    .fetcher
                    .proposer::<P>(duty.slot, p, &reveal, deadline)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => {
                    warn!(%duty, error = %e, "no combined RANDAO reveal; cannot propose");
                    self.tracker
                        .fail(duty, Reason::InsufficientPeerSignatures, &e.to_string());
                    return;
                }
            },
        };
        let input = match input {
            Ok(v) => v,
            Err(e) => {
                warn!(%duty, error = %e, "cannot fetch the duty's data from the beacon node");
                self.tracker.fail(duty, Reason::FetchBnError, &e);
                return;
            }
        };
        self.tracker.stage(duty, Stage::Fetched);
        let kind = duty.kind;
        match self.runner.run(duty, input, deadline).await {
            Ok(v) => {
                let values = match &v {
                    DutyValue::Aggregation(a) => a.len(),
                    DutyValue::SyncContribution(c) => c.len(),
                    v => v
                        .pubkeys()
                        .len()
                        .max(usize::from(kind == DutyKind::SyncMessage)),
                };
                info!(%duty, dvs = values, "duty decided");
                if let (Some(_), DutyValue::Proposer(p)) = (&self.signing, &v) {
                    // Remote mode signs it right below: the slot's attestation may start.
                    self.heads.record_own(
                        duty.slot,
                        OwnBlock {
                            root: Root::of(&p.block),
                            parent_root: p.block.parent_root,
                        },
                    );
                }
                self.sign_decided(duty, &d.defs, &v).await;
            }
            Err(reason) => warn!(%duty, reason = reason.as_str(), "duty not decided"),
        }
    }

    /// Remote-signer mode: this node's partials of what the cluster just decided
    /// ([`decided_objects`]), made without waiting for the VC. The VC's own requests then find
    /// the combined signature (or are refused: another root).
    async fn sign_decided(&self, duty: Duty, defs: &DutyDefs, value: &DutyValue<P>) {
        let Some((parsig, _)) = &self.signing else {
            return;
        };
        let deadline = self.clock.deadline(duty.slot, 1);
        let objects = decided_objects(parsig, duty, defs, value, deadline).await;
        if !objects.is_empty() {
            self.sign_ahead(duty, objects).await;
        }
    }
}

/// Attestation data for the slot of `own`, the block this cluster decided to propose, voting
/// for it while the beacon node's head is still its parent (the node has not imported it yet):
/// the head vote becomes `own.root`, and so does the target at the epoch's first slot
/// (`epoch_start`) — what Lodestar 1.5.1's `produceAttestationData` answers once the block is
/// its head (the source is the state's justified checkpoint advanced to the slot's epoch,
/// which the block does not change). Data already voting for another head is left alone.
pub(crate) fn vote_for_own_block(entries: &mut [AttesterEntry], own: OwnBlock, epoch_start: bool) {
    for e in entries {
        if e.data.beacon_block_root != own.parent_root {
            continue;
        }
        e.data.beacon_block_root = own.root;
        if epoch_start && e.data.target.root == own.parent_root {
            e.data.target.root = own.root;
        }
    }
}

/// What this node signs as soon as `duty` is decided, in remote-signer mode: the decided value
/// itself, which is in the duty DB only once the slashing DB accepted it (rules 2 and 4), so
/// no partial is ever made of anything else.
///
/// - attestations of the DVs the decided value names, blocks, aggregates and proofs: a Lodestar
///   VC runs its attestation task (attest, then aggregate at 2/3 of the slot) at most once at
///   a time; when the aggregation ends after the next slot's start — 200 ms of latency on every
///   hop made it end 0.45-0.6 s into it — the VC skips that slot, and a cluster that waited
///   for its VCs' requests lost every other slot's attestation and aggregation
///   (latency-200ms --signer remote: 0.708 during the fault, every loss
///   `no_local_vc_signature`);
/// - sync messages over the decided root, the contributions and proofs of the DV sync
///   aggregators: the VC's sync task skips slots the same way (measured in e2e-local-remote:
///   the VCs of a healthy cluster locked into signing every third slot, 39 % participation).
///
/// Aggregates and contributions are signed only with the **combined** selection proof that
/// elects the DV.
pub(crate) async fn decided_objects<P: Preset>(
    parsig: &ParSig<P>,
    duty: Duty,
    defs: &DutyDefs,
    value: &DutyValue<P>,
    deadline: Instant,
) -> Vec<(BlsPubkey, SignedObject)> {
    match (defs, value) {
        (DutyDefs::Attester(_), DutyValue::Attester(entries)) => entries
            .iter()
            .map(|e| (e.def.pubkey, SignedObject::Attestation { data: e.data }))
            .collect(),
        (DutyDefs::Proposer(_), DutyValue::Proposer(p)) => vec![(
            p.pubkey,
            SignedObject::Block {
                block_root: Root::of(&p.block),
            },
        )],
        (DutyDefs::SyncMessage(members), DutyValue::SyncMessage(root)) => members
            .iter()
            .map(|m| (m.pubkey, SignedObject::SyncMessage { block_root: *root }))
            .collect(),
        (DutyDefs::Aggregation(aggregators), DutyValue::Aggregation(decided)) => {
            let mut objects = Vec::new();
            for a in aggregators {
                if !decided
                    .iter()
                    .any(|e| e.committee_index == a.committee_index)
                {
                    continue;
                }
                match parsig
                    .aggregate_and_proof(duty.slot, a.pubkey, deadline)
                    .await
                {
                    Ok(m) if is_aggregator(a.committee_length, &m.selection_proof) => {
                        objects.push((
                            a.pubkey,
                            SignedObject::AggregateAndProof {
                                message_root: Root::of(&m),
                            },
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(%duty, pubkey = %a.pubkey, error = %e, "no aggregate and proof to sign")
                    }
                }
            }
            objects
        }
        (DutyDefs::SyncContribution(seats), DutyValue::SyncContribution(decided)) => {
            let mut objects = Vec::new();
            for s in seats {
                let sub = s.subcommittee_index;
                if !decided.iter().any(|c| c.subcommittee_index == sub) {
                    continue;
                }
                match parsig
                    .contribution_and_proof(duty.slot, s.pubkey, sub, deadline)
                    .await
                {
                    Ok(m) if is_sync_committee_aggregator::<P>(&m.selection_proof) => {
                        objects.push((
                            s.pubkey,
                            SignedObject::ContributionAndProof {
                                subcommittee_index: sub,
                                message_root: Root::of(&m),
                            },
                        ))
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(%duty, pubkey = %s.pubkey, error = %e, "no contribution and proof to sign")
                    }
                }
            }
            objects
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::{Query, State};
    use axum::routing::get;
    use axum::{Json, Router};
    use serde_json::{json, Value};

    use super::*;
    use crate::eth::types::AttestationData;

    /// In flight now and at most, of the attestation data requests.
    #[derive(Default)]
    struct Load {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    async fn attestation_data(
        State(load): State<Arc<Load>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Json<Value> {
        let n = load.now.fetch_add(1, Ordering::SeqCst) + 1;
        load.max.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        load.now.fetch_sub(1, Ordering::SeqCst);
        let data = AttestationData {
            slot: q["slot"].parse().unwrap(),
            index: q["committee_index"].parse().unwrap(),
            ..AttestationData::default()
        };
        Json(json!({ "data": data }))
    }

    #[test]
    fn the_clusters_own_block_is_voted_for_while_the_beacon_node_has_its_parent() {
        let def = |pk: u8| AttesterDef {
            pubkey: BlsPubkey([pk; 48]),
            validator_index: u64::from(pk),
            committee_index: 0,
            committee_length: 16,
            committees_at_slot: 1,
            validator_committee_index: 1,
        };
        let (parent, own_root, other) = (Root([1; 32]), Root([2; 32]), Root([3; 32]));
        let data = |head: Root, target: Root| {
            let mut d = AttestationData {
                slot: 16,
                beacon_block_root: head,
                ..AttestationData::default()
            };
            d.target.epoch = 2;
            d.target.root = target;
            d
        };
        let own = OwnBlock {
            root: own_root,
            parent_root: parent,
        };
        let entries = || {
            vec![
                AttesterEntry {
                    def: def(1),
                    data: data(parent, parent),
                },
                AttesterEntry {
                    def: def(2),
                    data: data(other, other),
                },
                AttesterEntry {
                    def: def(3),
                    data: data(own_root, own_root),
                },
            ]
        };
        let votes = |e: &[AttesterEntry]| -> Vec<(Root, Root)> {
            e.iter()
                .map(|e| (e.data.beacon_block_root, e.data.target.root))
                .collect()
        };
        // The epoch's first slot: the parent was the target too.
        let mut first = entries();
        vote_for_own_block(&mut first, own, true);
        assert_eq!(
            votes(&first),
            vec![(own_root, own_root), (other, other), (own_root, own_root)]
        );
        // Later in the epoch the target is the epoch's first block, whatever it is.
        let mut later = entries();
        vote_for_own_block(&mut later, own, false);
        assert_eq!(
            votes(&later),
            vec![(own_root, parent), (other, other), (own_root, own_root)]
        );
        assert!(later
            .iter()
            .all(|e| e.data.source == AttestationData::default().source));
    }

    /// A slot whose DVs sit in three committees costs one beacon node round trip, not three.
    #[tokio::test]
    async fn attestation_data_of_all_committees_is_fetched_at_once() {
        let load = Arc::new(Load::default());
        let app = Router::new()
            .route("/eth/v1/validator/attestation_data", get(attestation_data))
            .with_state(load.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let fetcher = Fetcher::new(BeaconClient::new(&url).unwrap());
        let def = |pk: u8, committee_index: u64| AttesterDef {
            pubkey: BlsPubkey([pk; 48]),
            validator_index: u64::from(pk),
            committee_index,
            committee_length: 16,
            committees_at_slot: 3,
            validator_committee_index: 1,
        };
        let defs = [def(4, 2), def(1, 0), def(3, 1), def(2, 0)];
        let start = Instant::now();
        let entries = fetcher
            .attester(9, &defs, start + Duration::from_secs(5))
            .await
            .unwrap();
        let took = start.elapsed();
        assert_eq!(
            load.max.load(Ordering::SeqCst),
            3,
            "one request per committee, together"
        );
        assert!(took < Duration::from_millis(600), "took {took:?}");
        let got: Vec<(u8, u64, u64)> = entries
            .iter()
            .map(|e| (e.def.pubkey.0[0], e.def.committee_index, e.data.index))
            .collect();
        assert_eq!(got, vec![(1, 0, 0), (2, 0, 0), (3, 1, 1), (4, 2, 2)]);
        assert!(entries.iter().all(|e| e.data.slot == 9));
    }
}
