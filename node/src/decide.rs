//! Consensus on duty values, under the five rules of the DV spec.
//!
//! The value decided is a [`DutyValue`](crate::value::DutyValue) (defined beneath the stages,
//! with its consensus encoding).
//! - [`DutyPolicy`]: the validity predicate every node applies to every proposal: well-formed,
//!   for this duty's slot and DVs, and **allowed by the slashing DB for every DV** (rules 1, 2).
//!   Aggregates and sync contributions are not slashable: a proposal must aggregate over the
//!   attestation data (sync root) this node decided for the slot ([`DecidedData`]).
//!   The proposal guard (its compare hook): a node whose own attestation data already votes
//!   for the block of the duty's slot, as its beacon node announced it, refuses a leader's data
//!   voting for another head. A leader whose clock runs ahead fetches before the slot's block
//!   exists and proposes a vote for the parent, which the committee's aggregators never pick up
//!   (measured: +2 s on one node of four lost every duty it led); with the guard, the honest
//!   nodes that saw the block refuse it and the round fails over to the next leader. It only
//!   acts before a node PREPAREs a fresh proposal: values locked by a prepared certificate are
//!   never refused, so it cannot cost safety, and a node that fetched before the block arrived
//!   accepts either vote.
//! - [`Gate`]: one consensus at a time per DV (rule 3), attester consensus started in increasing
//!   slot order (rule 5).
//! - [`DutyRunner`]: runs one duty: takes the gate, checks its own input against the slashing DB
//!   when consensus starts (rule 1), runs consensus through a [`Decide`] implementation, then —
//!   still holding the DVs' locks, consensus finished — checks every decided entry against the
//!   slashing DB and records it (`check_and_insert`, rules 2 and 4), and only then stores the
//!   accepted entries in the [`DutyDb`]. An entry the DB refuses is never released.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::consensus::qbft::ValuePolicy;
use crate::duty::{Duty, DutyKind};
use crate::dutydb::DutyDb;
use crate::eth::aggregate::{SyncCommitteeContribution, SYNC_COMMITTEE_SUBNET_COUNT};
use crate::eth::heads::Heads;
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{AttestationData, BlsPubkey, CommitteeIndex, Preset, Root, Slot};
use crate::slashing::interchange::SignedAttestation;
use crate::slashing::{SlashingDb, SlashingError};
use crate::tracker::{Reason, Stage, Tracker};
use crate::value::{AggregateEntry, AttesterEntry, DutyValue, ProposerEntry};

/// Largest committee the beacon chain allows (`MAX_VALIDATORS_PER_COMMITTEE`).
const MAX_COMMITTEE: u64 = 2048;

/// Why a value is not valid for a duty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    /// The value is for another kind of duty.
    #[error("value for a {got} duty, expected {expected}")]
    WrongKind {
        /// Expected kind.
        expected: DutyKind,
        /// Kind of the value.
        got: DutyKind,
    },
    /// Structurally wrong (empty, unsorted, inconsistent, wrong slot...).
    #[error("malformed value: {0}")]
    Malformed(String),
    /// A DV in the value is not one of this cluster's.
    #[error("validator {0} is not a DV of this cluster")]
    UnknownValidator(BlsPubkey),
    /// The slashing DB refuses the value for a DV.
    #[error("slashing protection refuses {pubkey}: {reason}")]
    Slashable {
        /// The DV.
        pubkey: BlsPubkey,
        /// The DB's reason.
        reason: String,
    },
    /// The slashing DB could not be read.
    #[error("slashing DB error: {0}")]
    Db(String),
}

/// This node's decided values that aggregation proposals are checked against.
pub trait DecidedData: Send + Sync + 'static {
    /// The decided attestation data of a committee.
    fn attestation_data(
        &self,
        slot: Slot,
        committee_index: CommitteeIndex,
    ) -> Option<AttestationData>;
    /// The decided sync committee root of a slot.
    fn sync_root(&self, slot: Slot) -> Option<Root>;
}

impl<P: Preset> DecidedData for DutyDb<P> {
    fn attestation_data(
        &self,
        slot: Slot,
        committee_index: CommitteeIndex,
    ) -> Option<AttestationData> {
        DutyDb::attestation_data(self, slot, committee_index)
    }

    fn sync_root(&self, slot: Slot) -> Option<Root> {
        DutyDb::sync_root(self, slot)
    }
}

/// The validity predicate of one duty (see the [module docs](self)).
#[derive(Clone)]
pub struct DutyPolicy {
    duty: Duty,
    schedule: Arc<ForkSchedule>,
    slashing: Arc<SlashingDb>,
    dvs: Arc<HashSet<BlsPubkey>>,
    decided: Option<Arc<dyn DecidedData>>,
    heads: Option<Heads>,
}

impl DutyPolicy {
    /// The predicate for `duty` of the cluster whose DVs are `dvs`.
    pub fn new(
        duty: Duty,
        schedule: Arc<ForkSchedule>,
        slashing: Arc<SlashingDb>,
        dvs: Arc<HashSet<BlsPubkey>>,
    ) -> DutyPolicy {
        DutyPolicy {
            duty,
            schedule,
            slashing,
            dvs,
            decided: None,
            heads: None,
        }
    }

    /// Checks aggregation proposals against `decided` (without it they are refused).
    pub fn with_decided(mut self, decided: Arc<dyn DecidedData>) -> DutyPolicy {
        self.decided = Some(decided);
        self
    }

    /// Checks the aggregates of an aggregation proposal: one per committee, sorted, for this
    /// slot, with at least one attester, over the attestation data this node decided.
    fn check_aggregates<P: Preset>(
        &self,
        entries: &[AggregateEntry<P>],
    ) -> Result<(), InvalidValue> {
        let slot = self.duty.slot;
        if entries.is_empty() {
            return Err(InvalidValue::Malformed("no aggregates".into()));
        }
        if !entries
            .windows(2)
            .all(|w| w[0].committee_index < w[1].committee_index)
        {
            return Err(InvalidValue::Malformed(
                "aggregates not sorted by distinct committees".into(),
            ));
        }
        for e in entries {
            let data = &e.aggregate.data;
            if data.slot != slot || data.index != e.committee_index {
                return Err(InvalidValue::Malformed(format!(
                    "aggregate of slot {} committee {} filed under slot {slot} committee {}",
                    data.slot, data.index, e.committee_index
                )));
            }
            if e.aggregate.aggregation_bits.num_set_bits() == 0 {
                return Err(InvalidValue::Malformed(format!(
                    "empty aggregate for committee {}",
                    e.committee_index
                )));
            }
            let decided = self
                .decided
                .as_ref()
                .and_then(|d| d.attestation_data(slot, e.committee_index));
            if decided.as_ref() != Some(data) {
                return Err(InvalidValue::Malformed(format!(
                    "aggregate of committee {} is not over the attestation data decided for it ({})",
                    e.committee_index,
                    if decided.is_some() { "different data" } else { "none decided here" }
                )));
            }
        }
        Ok(())
    }

    /// Checks the contributions of a sync contribution proposal: one per subcommittee, sorted,
    /// for this slot, non-empty, over the sync committee root this node decided.
    fn check_contributions<P: Preset>(
        &self,
        entries: &[SyncCommitteeContribution<P>],
    ) -> Result<(), InvalidValue> {
        let slot = self.duty.slot;
        if entries.is_empty() {
            return Err(InvalidValue::Malformed("no contributions".into()));
        }
        if !entries
            .windows(2)
            .all(|w| w[0].subcommittee_index < w[1].subcommittee_index)
        {
            return Err(InvalidValue::Malformed(
                "contributions not sorted by distinct subcommittees".into(),
            ));
        }
        let decided = self.decided.as_ref().and_then(|d| d.sync_root(slot));
        for c in entries {
            if c.slot != slot || c.subcommittee_index >= SYNC_COMMITTEE_SUBNET_COUNT {
                return Err(InvalidValue::Malformed(format!(
                    "contribution of slot {} subcommittee {} in the duty of slot {slot}",
                    c.slot, c.subcommittee_index
                )));
            }
            if c.aggregation_bits.num_set_bits() == 0 {
                return Err(InvalidValue::Malformed(format!(
                    "empty contribution for subcommittee {}",
                    c.subcommittee_index
                )));
            }
            if decided != Some(c.beacon_block_root) {
                return Err(InvalidValue::Malformed(format!(
                    "contribution of subcommittee {} is not over the sync committee root decided for slot {slot}",
                    c.subcommittee_index
                )));
            }
        }
        Ok(())
    }

    /// Enables the proposal guard with the beacon node's head blocks `heads` (see the
    /// [module docs](self)).
    pub fn with_heads(mut self, heads: Heads) -> DutyPolicy {
        self.heads = Some(heads);
        self
    }

    /// The proposal guard: why `leader`'s attestation data is refused given this node's `own`
    /// data, if it is (own data votes for the slot's block its beacon node announced, the
    /// leader's for another head).
    pub fn stale_head<P: Preset>(
        &self,
        leader: &DutyValue<P>,
        own: &DutyValue<P>,
    ) -> Option<String> {
        let (DutyValue::Attester(leader), DutyValue::Attester(own)) = (leader, own) else {
            return None;
        };
        let block = self.heads.as_ref()?.block_at(self.duty.slot)?;
        if !own.iter().any(|e| e.data.beacon_block_root == block) {
            return None;
        }
        leader
            .iter()
            .find(|e| e.data.beacon_block_root != block)
            .map(|e| {
                format!(
                    "the proposal votes for head {} but this node's beacon node had the block {block} of slot {} when it fetched",
                    e.data.beacon_block_root, self.duty.slot
                )
            })
    }

    fn slashing_verdict(
        &self,
        pubkey: BlsPubkey,
        result: Result<crate::slashing::Safety, SlashingError>,
    ) -> Result<(), InvalidValue> {
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.is_refusal() => Err(InvalidValue::Slashable {
                pubkey,
                reason: e.to_string(),
            }),
            Err(e) => Err(InvalidValue::Db(e.to_string())),
        }
    }

    /// Checks one attester entry: well-formed for this slot and allowed by the slashing DB.
    pub fn check_attester_entry(&self, e: &AttesterEntry) -> Result<(), InvalidValue> {
        let slot = self.duty.slot;
        let d = &e.data;
        if !self.dvs.contains(&e.def.pubkey) {
            return Err(InvalidValue::UnknownValidator(e.def.pubkey));
        }
        if d.slot != slot {
            return Err(InvalidValue::Malformed(format!(
                "attestation data for slot {} in the duty of slot {slot}",
                d.slot
            )));
        }
        if d.index != e.def.committee_index {
            return Err(InvalidValue::Malformed(format!(
                "attestation data for committee {} but the duty is in committee {}",
                d.index, e.def.committee_index
            )));
        }
        if e.def.committee_length == 0
            || e.def.committee_length > MAX_COMMITTEE
            || e.def.validator_committee_index >= e.def.committee_length
        {
            return Err(InvalidValue::Malformed(format!(
                "committee position {} of {} is impossible",
                e.def.validator_committee_index, e.def.committee_length
            )));
        }
        let epoch = self.schedule.epoch_at_slot(slot);
        if d.target.epoch != epoch || d.source.epoch > d.target.epoch {
            return Err(InvalidValue::Malformed(format!(
                "source {} / target {} do not fit epoch {epoch}",
                d.source.epoch, d.target.epoch
            )));
        }
        let root = self.schedule.attestation_signing_root(d);
        self.slashing_verdict(
            e.def.pubkey,
            self.slashing.check_attestation(
                e.def.pubkey.as_bytes(),
                d.source.epoch,
                d.target.epoch,
                Some(root.0),
            ),
        )
    }

    /// Checks a proposal: well-formed for this slot and allowed by the slashing DB.
    pub fn check_proposer(&self, p: &ProposerEntry<impl Preset>) -> Result<(), InvalidValue> {
        if !self.dvs.contains(&p.pubkey) {
            return Err(InvalidValue::UnknownValidator(p.pubkey));
        }
        if p.block.slot != self.duty.slot {
            return Err(InvalidValue::Malformed(format!(
                "block for slot {} in the duty of slot {}",
                p.block.slot, self.duty.slot
            )));
        }
        let root = self.schedule.block_signing_root(&p.block);
        self.slashing_verdict(
            p.pubkey,
            self.slashing
                .check_block(p.pubkey.as_bytes(), p.block.slot, Some(root.0)),
        )
    }

    /// The full predicate.
    pub fn check<P: Preset>(&self, value: &DutyValue<P>) -> Result<(), InvalidValue> {
        if value.kind() != self.duty.kind {
            return Err(InvalidValue::WrongKind {
                expected: self.duty.kind,
                got: value.kind(),
            });
        }
        match value {
            DutyValue::Attester(entries) => {
                if entries.is_empty() {
                    return Err(InvalidValue::Malformed("no attester entries".into()));
                }
                if !entries
                    .windows(2)
                    .all(|w| w[0].def.pubkey < w[1].def.pubkey)
                {
                    return Err(InvalidValue::Malformed(
                        "attester entries not sorted by distinct pubkeys".into(),
                    ));
                }
                // One data per committee: the VC asks for data by committee index.
                let mut per_committee: HashMap<u64, &AttestationData> = HashMap::new();
                for e in entries {
                    if let Some(other) = per_committee.insert(e.def.committee_index, &e.data) {
                        if *other != e.data {
                            return Err(InvalidValue::Malformed(format!(
                                "two different data for committee {}",
                                e.def.committee_index
                            )));
                        }
                    }
                    self.check_attester_entry(e)?;
                }
                Ok(())
            }
            DutyValue::Proposer(p) => self.check_proposer(p),
            DutyValue::SyncMessage(root) => {
                if *root == Root::ZERO {
                    Err(InvalidValue::Malformed("zero sync committee root".into()))
                } else {
                    Ok(())
                }
            }
            DutyValue::Aggregation(entries) => self.check_aggregates(entries),
            DutyValue::SyncContribution(entries) => self.check_contributions(entries),
        }
    }
}

impl<P: Preset> ValuePolicy<DutyValue<P>> for DutyPolicy {
    fn is_valid(&self, value: &DutyValue<P>) -> bool {
        match self.check(value) {
            Ok(()) => true,
            Err(e) => {
                warn!(duty = %self.duty, error = %e, "consensus proposal refused");
                false
            }
        }
    }

    fn compare(&self, leader_value: &DutyValue<P>, own_value: &DutyValue<P>) -> bool {
        match self.stale_head(leader_value, own_value) {
            Some(why) => {
                warn!(duty = %self.duty, "consensus proposal refused by the proposal guard: {why}");
                false
            }
            None => true,
        }
    }
}

/// A decision of consensus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<P: Preset> {
    /// The decided value.
    pub value: DutyValue<P>,
    /// The round it was decided in.
    pub round: u64,
    /// Time from start to decision.
    pub elapsed: Duration,
}

/// Runs consensus on a duty value (implemented by the consensus driver).
#[async_trait]
pub trait Decide<P: Preset>: Send + Sync + 'static {
    /// Runs the instance of `duty` with `input`, checking proposals with `policy`; returns the
    /// decision or why there is none by `deadline`.
    async fn decide(
        &self,
        duty: Duty,
        input: DutyValue<P>,
        policy: DutyPolicy,
        deadline: Instant,
    ) -> Result<Decision<P>, String>;
}

#[async_trait]
impl<P: Preset> Decide<P> for crate::consensus::driver::Consensus {
    async fn decide(
        &self,
        duty: Duty,
        input: DutyValue<P>,
        policy: DutyPolicy,
        deadline: Instant,
    ) -> Result<Decision<P>, String> {
        let d = self
            .propose(duty.instance_id(), input, policy, deadline)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Decision {
            value: d.value,
            round: d.round,
            elapsed: d.elapsed,
        })
    }
}

/// Rule 3 (one consensus per DV at a time) and rule 5 (attester consensus in increasing slot
/// order).
#[derive(Debug, Default)]
pub struct Gate {
    locks: Mutex<HashMap<BlsPubkey, Arc<tokio::sync::Mutex<()>>>>,
    last_attester_slot: Mutex<Option<Slot>>,
}

/// Held while a duty's consensus and its slashing DB update run.
#[derive(Debug)]
pub struct GateGuard {
    _locks: Vec<OwnedMutexGuard<()>>,
}

impl Gate {
    /// Rule 5: records that attester consensus for `slot` starts; refuses if one for this or a
    /// later slot started already.
    pub fn begin_attester(&self, slot: Slot) -> Result<(), Slot> {
        let mut last = self
            .last_attester_slot
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(l) if l >= slot => Err(l),
            _ => {
                *last = Some(slot);
                Ok(())
            }
        }
    }

    /// Rule 3: waits until no other consensus runs for any of `pubkeys`, and holds them. Locks
    /// are taken in pubkey order, so two duties never wait on each other.
    pub async fn lock(&self, pubkeys: &[BlsPubkey]) -> GateGuard {
        let sorted: BTreeSet<BlsPubkey> = pubkeys.iter().copied().collect();
        let mutexes: Vec<_> = {
            let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            sorted
                .iter()
                .map(|pk| map.entry(*pk).or_default().clone())
                .collect()
        };
        let mut locks = Vec::with_capacity(mutexes.len());
        for m in mutexes {
            locks.push(m.lock_owned().await);
        }
        GateGuard { _locks: locks }
    }
}

/// Runs duties through consensus into the duty DB (see the [module docs](self)).
pub struct DutyRunner<P: Preset> {
    decider: Arc<dyn Decide<P>>,
    schedule: Arc<ForkSchedule>,
    slashing: Arc<SlashingDb>,
    dvs: Arc<HashSet<BlsPubkey>>,
    gate: Gate,
    dutydb: Arc<DutyDb<P>>,
    tracker: Tracker,
    slashing_db_seconds: Histogram,
    heads: Option<Heads>,
}

impl<P: Preset> DutyRunner<P> {
    /// A runner for the cluster whose DVs are `dvs`.
    pub fn new(
        decider: Arc<dyn Decide<P>>,
        schedule: Arc<ForkSchedule>,
        slashing: Arc<SlashingDb>,
        dvs: Arc<HashSet<BlsPubkey>>,
        dutydb: Arc<DutyDb<P>>,
        tracker: Tracker,
    ) -> DutyRunner<P> {
        DutyRunner {
            decider,
            schedule,
            slashing,
            dvs,
            gate: Gate::default(),
            dutydb,
            tracker,
            // 0.1 ms … ~3 s.
            slashing_db_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            heads: None,
        }
    }

    /// Registers `decide_slashing_db_seconds` (time of each duty's slashing-DB check-and-record
    /// transaction) into `registry`.
    pub fn with_metrics(self, registry: &mut Registry) -> Self {
        registry.register(
            "decide_slashing_db_seconds",
            "Time of one duty's slashing-DB check-and-record transaction (all its DVs)",
            self.slashing_db_seconds.clone(),
        );
        self
    }

    /// Guards proposals with the beacon node's head blocks `heads` ([`DutyPolicy::with_heads`]).
    pub fn with_heads(mut self, heads: Heads) -> DutyRunner<P> {
        self.heads = Some(heads);
        self
    }

    /// The validity predicate of `duty`.
    pub fn policy(&self, duty: Duty) -> DutyPolicy {
        let policy = DutyPolicy::new(
            duty,
            self.schedule.clone(),
            self.slashing.clone(),
            self.dvs.clone(),
        )
        .with_decided(self.dutydb.clone());
        match &self.heads {
            Some(h) => policy.with_heads(h.clone()),
            None => policy,
        }
    }

    /// Runs `duty` with this node's `input`: gate, rule-1 check, consensus, rule-2/4 record,
    /// duty DB. Returns what was stored (the decided value minus any entry the slashing DB
    /// refused).
    pub async fn run(
        &self,
        duty: Duty,
        input: DutyValue<P>,
        deadline: Instant,
    ) -> Result<DutyValue<P>, Reason> {
        if duty.kind == DutyKind::Attester {
            if let Err(last) = self.gate.begin_attester(duty.slot) {
                warn!(%duty, last_started = last, "attester consensus out of slot order refused (rule 5)");
                self.tracker
                    .fail(duty, Reason::NoConsensus, "started out of slot order");
                return Err(Reason::NoConsensus);
            }
        }
        let policy = self.policy(duty);
        // Lock every DV the duty may touch: ours and any a peer might propose.
        let pubkeys: Vec<BlsPubkey> = match &input {
            DutyValue::SyncMessage(_) => Vec::new(),
            v => v.pubkeys(),
        };
        let guard = self.gate.lock(&pubkeys).await;
        // Rule 1: the slashing DB must allow our input when consensus starts.
        let input = match self.restrict_to_allowed(&policy, input) {
            Some(v) => v,
            None => {
                self.tracker.fail(
                    duty,
                    Reason::SlashingRefused,
                    "slashing DB refuses the input for every DV",
                );
                return Err(Reason::SlashingRefused);
            }
        };
        let decision = match self
            .decider
            .decide(duty, input, policy.clone(), deadline)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                warn!(%duty, error = %e, "no consensus");
                self.tracker.fail(duty, Reason::NoConsensus, &e);
                return Err(Reason::NoConsensus);
            }
        };
        self.tracker
            .consensus(duty, decision.round, decision.elapsed);
        // Rules 2 and 4: consensus for these DVs has finished and we still hold their locks;
        // record each decided entry, and release only what the DB accepts.
        let stored = self.record(duty, &policy, decision.value)?;
        drop(guard);
        if let Err(e) = self.dutydb.store(duty, &stored) {
            warn!(%duty, error = %e, "duty DB refused the decided value");
            self.tracker.fail(duty, Reason::NoConsensus, &e.to_string());
            return Err(Reason::NoConsensus);
        }
        self.tracker.stage(duty, Stage::Decided);
        Ok(stored)
    }

    /// Drops attester entries the slashing DB refuses now; `None` if nothing valid is left.
    fn restrict_to_allowed(
        &self,
        policy: &DutyPolicy,
        input: DutyValue<P>,
    ) -> Option<DutyValue<P>> {
        match input {
            DutyValue::Attester(entries) => {
                let allowed: Vec<AttesterEntry> = entries
                    .into_iter()
                    .filter(|e| match policy.check_attester_entry(e) {
                        Ok(()) => true,
                        Err(err) => {
                            warn!(pubkey = %e.def.pubkey, slot = e.data.slot, error = %err,
                                "own attestation data refused when consensus starts (rule 1)");
                            false
                        }
                    })
                    .collect();
                (!allowed.is_empty()).then_some(DutyValue::Attester(allowed))
            }
            other => match policy.check(&other) {
                Ok(()) => Some(other),
                Err(err) => {
                    warn!(error = %err, "own input refused when consensus starts (rule 1)");
                    None
                }
            },
        }
    }

    fn record(
        &self,
        duty: Duty,
        policy: &DutyPolicy,
        value: DutyValue<P>,
    ) -> Result<DutyValue<P>, Reason> {
        let refused = |pubkey: BlsPubkey, e: String| {
            warn!(%duty, %pubkey, error = %e, "slashing DB refuses the decided value; not signing (rule 2)");
            self.tracker
                .fail(duty, Reason::SlashingRefused, &format!("{pubkey}: {e}"));
        };
        match value {
            DutyValue::Attester(entries) => {
                // One durable transaction for every DV of the duty (an fsync each cost ~3.8 ms:
                // 1.2 s for the 312 DVs of a slot at 10,000 validators); each DV is still
                // checked on its own, and nothing is released before the commit.
                let mut candidates = Vec::with_capacity(entries.len());
                for e in entries {
                    match policy.check_attester_entry(&e) {
                        Ok(()) => candidates.push(e),
                        Err(err) => refused(e.def.pubkey, err.to_string()),
                    }
                }
                let records: Vec<([u8; 48], SignedAttestation)> = candidates
                    .iter()
                    .map(|e| {
                        let root = self.schedule.attestation_signing_root(&e.data);
                        (
                            *e.def.pubkey.as_bytes(),
                            SignedAttestation {
                                source_epoch: e.data.source.epoch,
                                target_epoch: e.data.target.epoch,
                                signing_root: Some(root.0),
                            },
                        )
                    })
                    .collect();
                let started = std::time::Instant::now();
                let verdicts = self
                    .slashing
                    .check_and_insert_attestations_of_many(&records);
                self.slashing_db_seconds
                    .observe(started.elapsed().as_secs_f64());
                let verdicts = match verdicts {
                    Ok(v) => v,
                    Err(err) => {
                        for e in &candidates {
                            refused(e.def.pubkey, err.to_string());
                        }
                        return Err(Reason::SlashingRefused);
                    }
                };
                let mut kept = Vec::with_capacity(candidates.len());
                for (e, verdict) in candidates.into_iter().zip(verdicts) {
                    match verdict {
                        Ok(_) => kept.push(e),
                        Err(err) => refused(e.def.pubkey, err.to_string()),
                    }
                }
                if kept.is_empty() {
                    return Err(Reason::SlashingRefused);
                }
                debug!(%duty, dvs = kept.len(), "attestation data recorded in the slashing DB");
                Ok(DutyValue::Attester(kept))
            }
            DutyValue::Proposer(p) => {
                let res = policy.check_proposer(&p).and_then(|()| {
                    let root = self.schedule.block_signing_root(&p.block);
                    let started = std::time::Instant::now();
                    let res = self.slashing.check_and_insert_block(
                        p.pubkey.as_bytes(),
                        p.block.slot,
                        Some(root.0),
                    );
                    self.slashing_db_seconds
                        .observe(started.elapsed().as_secs_f64());
                    res.map(drop)
                        .map_err(|err| InvalidValue::Db(err.to_string()))
                });
                match res {
                    Ok(()) => Ok(DutyValue::Proposer(p)),
                    Err(err) => {
                        refused(p.pubkey, err.to_string());
                        Err(Reason::SlashingRefused)
                    }
                }
            }
            v @ (DutyValue::SyncMessage(_)
            | DutyValue::Aggregation(_)
            | DutyValue::SyncContribution(_)) => policy
                .check(&v)
                .map(|()| v)
                .map_err(|_| Reason::NoConsensus),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duty::fixtures::{self, attester};
    use crate::eth::types::Minimal;
    use prometheus_client::registry::Registry;
    use tokio::sync::{mpsc, oneshot};

    type V = DutyValue<Minimal>;

    /// Stands in for the cluster's consensus: reports each call, optionally waits for a
    /// release, and decides either the input or a value a peer's leader would have proposed.
    #[derive(Default)]
    struct Scripted {
        calls: Mutex<Option<mpsc::UnboundedSender<Duty>>>,
        gates: Mutex<HashMap<Duty, oneshot::Receiver<()>>>,
        decide_instead: Mutex<HashMap<Duty, V>>,
    }

    #[async_trait]
    impl Decide<Minimal> for Scripted {
        async fn decide(
            &self,
            duty: Duty,
            input: V,
            _policy: DutyPolicy,
            _deadline: Instant,
        ) -> Result<Decision<Minimal>, String> {
            if let Some(tx) = self.calls.lock().unwrap().as_ref() {
                tx.send(duty).unwrap();
            }
            let gate = self.gates.lock().unwrap().remove(&duty);
            if let Some(gate) = gate {
                gate.await.map_err(|_| "gate dropped".to_string())?;
            }
            let value = self
                .decide_instead
                .lock()
                .unwrap()
                .remove(&duty)
                .unwrap_or(input);
            Ok(Decision {
                value,
                round: 1,
                elapsed: Duration::from_millis(1),
            })
        }
    }

    struct Setup {
        runner: Arc<DutyRunner<Minimal>>,
        scripted: Arc<Scripted>,
        slashing: Arc<SlashingDb>,
        dutydb: Arc<DutyDb<Minimal>>,
        calls: mpsc::UnboundedReceiver<Duty>,
        pks: Vec<BlsPubkey>,
        _dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let slashing = Arc::new(SlashingDb::open(&dir.path().join("slashing.redb")).unwrap());
        let pks: Vec<BlsPubkey> = fixtures::dvs(2).iter().map(|d| d.pubkey).collect();
        let scripted = Arc::new(Scripted::default());
        let (tx, calls) = mpsc::unbounded_channel();
        *scripted.calls.lock().unwrap() = Some(tx);
        let dutydb = Arc::new(DutyDb::new());
        let tracker = Tracker::new(&mut Registry::default(), None).unwrap();
        let runner = Arc::new(DutyRunner::new(
            scripted.clone(),
            fixtures::schedule(),
            slashing.clone(),
            Arc::new(pks.iter().copied().collect()),
            dutydb.clone(),
            tracker,
        ));
        Setup {
            runner,
            scripted,
            slashing,
            dutydb,
            calls,
            pks,
            _dir: dir,
        }
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    async fn within<T>(f: impl std::future::Future<Output = T>, what: &str) -> T {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .unwrap_or_else(|_| panic!("{what} timed out"))
    }

    fn root(e: &AttesterEntry) -> [u8; 32] {
        fixtures::schedule().attestation_signing_root(&e.data).0
    }

    #[tokio::test]
    async fn aggregates_must_be_over_the_decided_data_and_need_no_gate() {
        let s = setup();
        let entry = attester(s.pks[0], 9, 1, 5);
        s.dutydb
            .store(Duty::new(9, DutyKind::Attester), &V::Attester(vec![entry]))
            .unwrap();
        let duty = Duty::new(9, DutyKind::Aggregation);
        let policy = s.runner.policy(duty);
        let aggregate = |data: AttestationData, bits: &[usize]| {
            let mut b = ssz_types::BitList::with_capacity(16).unwrap();
            for i in bits {
                b.set(*i, true).unwrap();
            }
            AggregateEntry {
                committee_index: data.index,
                aggregate: crate::eth::types::Attestation {
                    aggregation_bits: b,
                    data,
                    signature: crate::eth::types::BlsSignature([0xc0; 96]),
                },
            }
        };
        let good = aggregate(entry.data, &[1, 4]);
        assert_eq!(policy.check(&V::Aggregation(vec![good.clone()])), Ok(()));
        // Another head: not the data this node decided.
        let mut other = entry.data;
        other.beacon_block_root = Root([8; 32]);
        let err = policy
            .check(&V::Aggregation(vec![aggregate(other, &[1])]))
            .unwrap_err();
        assert!(err.to_string().contains("decided"), "{err}");
        // Nobody attested; no entries; a committee nothing was decided for.
        assert!(policy
            .check(&V::Aggregation(vec![aggregate(entry.data, &[])]))
            .is_err());
        assert!(policy.check(&V::Aggregation(vec![])).is_err());
        let mut c1 = entry.data;
        c1.index = 1;
        assert!(policy
            .check(&V::Aggregation(vec![aggregate(c1, &[0])]))
            .is_err());
        // Without this node's decided values nothing is valid.
        let blind = DutyPolicy::new(
            duty,
            fixtures::schedule(),
            s.slashing.clone(),
            Arc::new(s.pks.iter().copied().collect()),
        );
        assert!(blind.check(&V::Aggregation(vec![good.clone()])).is_err());

        // Aggregation does not take the DVs' locks: it decides while an attester duty of the
        // same DV waits in consensus.
        let (release, gate) = oneshot::channel();
        let next = Duty::new(17, DutyKind::Attester);
        s.scripted.gates.lock().unwrap().insert(next, gate);
        let held = {
            let runner = s.runner.clone();
            let e = attester(s.pks[0], 17, 1, 5);
            tokio::spawn(async move { runner.run(next, V::Attester(vec![e]), deadline()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stored = within(
            s.runner
                .run(duty, V::Aggregation(vec![good.clone()]), deadline()),
            "aggregation",
        )
        .await
        .unwrap();
        assert_eq!(stored, V::Aggregation(vec![good.clone()]));
        assert_eq!(s.dutydb.aggregate(9, 0), Some(good.aggregate));
        release.send(()).unwrap();
        assert!(within(held, "attester").await.unwrap().is_ok());
    }

    #[test]
    fn policy_refuses_malformed_and_slashable_values() {
        let s = setup();
        let duty = Duty::new(9, DutyKind::Attester);
        let policy = s.runner.policy(duty);
        let good = attester(s.pks[0], 9, 1, 5);
        assert_eq!(policy.check(&V::Attester(vec![good])), Ok(()));
        let mut wrong_slot = good;
        wrong_slot.data.slot = 10;
        assert!(policy.check(&V::Attester(vec![wrong_slot])).is_err());
        let stranger = attester(BlsPubkey([7; 48]), 9, 1, 5);
        assert!(matches!(
            policy.check(&V::Attester(vec![stranger])),
            Err(InvalidValue::UnknownValidator(_))
        ));
        let unsorted = vec![attester(s.pks[1], 9, 2, 5), attester(s.pks[0], 9, 1, 5)];
        assert!(policy.check(&V::Attester(unsorted)).is_err());
        let split_view = vec![attester(s.pks[0], 9, 1, 5), attester(s.pks[1], 9, 2, 6)];
        assert!(
            policy.check(&V::Attester(split_view)).is_err(),
            "two data for one committee"
        );
        assert!(matches!(
            policy.check(&V::SyncMessage(Root([1; 32]))),
            Err(InvalidValue::WrongKind { .. })
        ));
        // Slashing DB: a signed different vote for the same target makes it a double vote.
        let mut other = good;
        other.data.beacon_block_root = Root([6; 32]);
        s.slashing
            .check_and_insert_attestation(
                s.pks[0].as_bytes(),
                other.data.source.epoch,
                other.data.target.epoch,
                Some(root(&other)),
            )
            .unwrap();
        assert!(matches!(
            policy.check(&V::Attester(vec![good])),
            Err(InvalidValue::Slashable { .. })
        ));
        assert!(!ValuePolicy::<V>::is_valid(
            &policy,
            &V::Attester(vec![good])
        ));
        assert!(ValuePolicy::<V>::is_valid(
            &policy,
            &V::Attester(vec![other])
        ));
    }

    #[test]
    fn proposal_guard_refuses_a_vote_for_an_older_head_only_when_own_data_has_the_slots_block() {
        let s = setup();
        let duty = Duty::new(9, DutyKind::Attester);
        let heads = Heads::new();
        let policy = s.runner.policy(duty).with_heads(heads.clone());
        // Head 5 is the block of slot 9 (own data after the head event), 4 its parent.
        let fresh = V::Attester(vec![
            attester(s.pks[0], 9, 1, 5),
            attester(s.pks[1], 9, 2, 5),
        ]);
        let stale = V::Attester(vec![
            attester(s.pks[0], 9, 1, 4),
            attester(s.pks[1], 9, 2, 4),
        ]);
        let compare = |leader: &V, own: &V| ValuePolicy::<V>::compare(&policy, leader, own);
        // The beacon node has not announced slot 9's block: no opinion.
        assert!(compare(&stale, &fresh));
        heads.record(8, Root([4; 32]));
        assert!(compare(&stale, &fresh));
        heads.record(9, Root([5; 32]));
        // Own data votes for slot 9's block: a proposal voting for the parent is refused…
        assert!(!compare(&stale, &fresh));
        assert!(policy
            .stale_head(&stale, &fresh)
            .unwrap()
            .contains("slot 9"));
        // …a proposal voting for it accepted…
        assert!(compare(&fresh, &fresh));
        // …and a node that fetched before the block arrived accepts either.
        assert!(compare(&stale, &stale));
        assert!(compare(&fresh, &stale));
        // The validity predicate itself is unchanged: the stale vote is not invalid.
        assert!(ValuePolicy::<V>::is_valid(&policy, &stale));
        // Other duties are not guarded.
        let sync = DutyPolicy::new(
            Duty::new(9, DutyKind::SyncMessage),
            fixtures::schedule(),
            s.slashing.clone(),
            Arc::new(s.pks.iter().copied().collect()),
        )
        .with_heads(heads);
        assert!(ValuePolicy::<V>::compare(
            &sync,
            &V::SyncMessage(Root([4; 32])),
            &V::SyncMessage(Root([5; 32]))
        ));
    }

    #[tokio::test]
    async fn rule1_input_refused_by_the_db_does_not_start_consensus() {
        let mut s = setup();
        let signed = attester(s.pks[0], 9, 1, 6);
        s.slashing
            .check_and_insert_attestation(
                s.pks[0].as_bytes(),
                signed.data.source.epoch,
                signed.data.target.epoch,
                Some(root(&signed)),
            )
            .unwrap();
        let duty = Duty::new(9, DutyKind::Attester);
        // Only DV 0, whose vote would be a double vote: nothing to agree on.
        let res = s
            .runner
            .run(
                duty,
                V::Attester(vec![attester(s.pks[0], 9, 1, 5)]),
                deadline(),
            )
            .await;
        assert_eq!(res, Err(Reason::SlashingRefused));
        assert!(s.calls.try_recv().is_err(), "consensus never started");
        // DV 0 and DV 1: DV 0's entry is dropped from the input, DV 1 goes ahead.
        let duty = Duty::new(10, DutyKind::Attester);
        let input = V::Attester(vec![
            attester(s.pks[0], 10, 1, 5),
            attester(s.pks[1], 10, 2, 5),
        ]);
        let stored = s.runner.run(duty, input, deadline()).await.unwrap();
        assert_eq!(stored.pubkeys(), vec![s.pks[1]]);
        assert_eq!(s.calls.try_recv().unwrap(), duty);
    }

    #[tokio::test]
    async fn rule2_decided_value_the_db_refuses_is_never_released() {
        let s = setup();
        let duty = Duty::new(9, DutyKind::Attester);
        let ours = attester(s.pks[0], 9, 1, 5);
        // The cluster decides another head for DV 0 and DV 1, but DV 0 already signed a
        // different vote for that target (its record must win).
        let mut theirs0 = ours;
        theirs0.data.beacon_block_root = Root([8; 32]);
        let theirs1 = attester(s.pks[1], 9, 2, 8);
        s.slashing
            .check_and_insert_attestation(
                s.pks[0].as_bytes(),
                ours.data.source.epoch,
                ours.data.target.epoch,
                Some(root(&ours)),
            )
            .unwrap();
        s.scripted
            .decide_instead
            .lock()
            .unwrap()
            .insert(duty, V::Attester(vec![theirs0, theirs1]));
        let stored = s
            .runner
            .run(duty, V::Attester(vec![ours, theirs1]), deadline())
            .await
            .unwrap();
        assert_eq!(
            stored,
            V::Attester(vec![theirs1]),
            "DV 0's entry is withheld"
        );
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(s.dutydb.await_attester(9, s.pks[0], soon).await.is_err());
        assert_eq!(
            s.dutydb.await_attester(9, s.pks[1], soon).await.unwrap(),
            theirs1
        );
        // DV 1's decided vote is now recorded: a different vote for its target is refused.
        let mut conflicting = theirs1;
        conflicting.data.beacon_block_root = Root([3; 32]);
        assert!(s
            .slashing
            .check_attestation(
                s.pks[1].as_bytes(),
                conflicting.data.source.epoch,
                conflicting.data.target.epoch,
                Some(root(&conflicting)),
            )
            .is_err());
    }

    #[tokio::test]
    async fn rules3_and_4_one_consensus_per_dv_and_no_db_write_while_it_runs() {
        let mut s = setup();
        let first = Duty::new(9, DutyKind::Attester);
        // The next epoch: one attestation per DV and epoch.
        let second = Duty::new(17, DutyKind::Attester);
        let (release, gate) = oneshot::channel();
        s.scripted.gates.lock().unwrap().insert(first, gate);
        let a = attester(s.pks[0], 9, 1, 5);
        let b = attester(s.pks[0], 17, 1, 5);
        let r1 = {
            let runner = s.runner.clone();
            tokio::spawn(async move { runner.run(first, V::Attester(vec![a]), deadline()).await })
        };
        assert_eq!(within(s.calls.recv(), "first call").await.unwrap(), first);
        let r2 = {
            let runner = s.runner.clone();
            tokio::spawn(async move { runner.run(second, V::Attester(vec![b]), deadline()).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Rule 3: the second duty of the same DV has not started consensus.
        assert!(s.calls.try_recv().is_err());
        // Rule 4: nothing was written while the first consensus runs — a conflicting vote for
        // the first target is still allowed by the DB.
        let mut conflicting = a;
        conflicting.data.beacon_block_root = Root([4; 32]);
        let check = |e: &AttesterEntry| {
            s.slashing.check_attestation(
                s.pks[0].as_bytes(),
                e.data.source.epoch,
                e.data.target.epoch,
                Some(root(e)),
            )
        };
        assert!(check(&conflicting).is_ok());
        release.send(()).unwrap();
        assert!(within(r1, "first duty").await.unwrap().is_ok());
        assert_eq!(within(s.calls.recv(), "second call").await.unwrap(), second);
        assert!(within(r2, "second duty").await.unwrap().is_ok());
        assert!(
            check(&conflicting).is_err(),
            "the decided vote was recorded afterwards"
        );
    }

    #[tokio::test]
    async fn rule5_attester_consensus_starts_in_increasing_slot_order() {
        let mut s = setup();
        let later = Duty::new(12, DutyKind::Attester);
        let earlier = Duty::new(11, DutyKind::Attester);
        s.runner
            .run(
                later,
                V::Attester(vec![attester(s.pks[0], 12, 1, 5)]),
                deadline(),
            )
            .await
            .unwrap();
        assert_eq!(s.calls.try_recv().unwrap(), later);
        let res = s
            .runner
            .run(
                earlier,
                V::Attester(vec![attester(s.pks[1], 11, 1, 5)]),
                deadline(),
            )
            .await;
        assert_eq!(res, Err(Reason::NoConsensus));
        assert!(
            s.calls.try_recv().is_err(),
            "slot 11 after slot 12 never starts"
        );
        // The same slot twice is refused as well; other duty kinds are not ordered.
        assert!(s.runner.gate.begin_attester(12).is_err());
        s.runner
            .run(
                Duty::new(11, DutyKind::SyncMessage),
                V::SyncMessage(Root([1; 32])),
                deadline(),
            )
            .await
            .unwrap();
    }
}
