//! The duty DB: decided values, and the duty definitions the scheduler resolved.
//!
//! The validator API blocks on it until the decided value of a duty exists (with a deadline),
//! and the partial-signature stage reads from it what a partial signature must be over. It never
//! holds two different values for the same duty: a conflicting store is refused. Values are
//! kept for [`DutyDb::prune`]'s retention only.
//!
//! In remote-signer mode it also holds the **combined** signatures the node produced, by DV
//! and signing root: the Web3Signer API answers from them (waiting for them with a deadline),
//! the aggregation duties read the combined selection proofs from them, and a VC's submission
//! of a fully signed object is recognised by them.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::duty::{AttesterDef, Duty, DutyDefs, DutyKind, ProposerDef, SyncDef, SyncSubnetDef};
use crate::eth::aggregate::SyncCommitteeContribution;
use crate::eth::types::{
    Attestation, AttestationData, BlsPubkey, BlsSignature, CommitteeIndex, Preset, Root, Slot,
    ValidatorIndex,
};
use crate::value::{AttesterEntry, DutyValue, ProposerEntry};

/// Duty DB errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DutyDbError {
    /// A different value is already stored for the duty.
    #[error("duty {duty}: conflicting {what} already stored")]
    Conflict {
        /// The duty.
        duty: Duty,
        /// What conflicts.
        what: String,
    },
    /// A different combined signature over the same root is stored (impossible for valid
    /// signatures: BLS signatures are unique).
    #[error("a different combined signature of {pubkey} over {signing_root} is stored")]
    CombinedConflict {
        /// The DV.
        pubkey: BlsPubkey,
        /// The signing root.
        signing_root: Root,
    },
    /// Nothing was stored before the deadline.
    #[error("no decided {what} before the deadline")]
    Timeout {
        /// What was awaited.
        what: String,
    },
}

struct State<P: Preset> {
    att_data: HashMap<(Slot, CommitteeIndex), AttestationData>,
    attesters: HashMap<(Slot, BlsPubkey), AttesterEntry>,
    by_bit: HashMap<(Slot, CommitteeIndex, u64), BlsPubkey>,
    blocks: HashMap<Slot, ProposerEntry<P>>,
    sync_roots: HashMap<Slot, Root>,
    randao: HashMap<Slot, BlsSignature>,
    defs: HashMap<Duty, DutyDefs>,
    /// The sync committee members of `defs` by (slot, DV): a lookup per partial, not a copy of
    /// the slot's (up to 512) members.
    sync_members: HashMap<(Slot, BlsPubkey), SyncDef>,
    aggregates: HashMap<(Slot, CommitteeIndex), Attestation<P>>,
    contributions: HashMap<(Slot, u64), SyncCommitteeContribution<P>>,
    /// Combined signatures by (DV, signing root), with the slot they are kept for.
    combined: HashMap<(BlsPubkey, Root), (Slot, BlsSignature)>,
    indices: HashMap<BlsPubkey, ValidatorIndex>,
}

impl<P: Preset> Default for State<P> {
    fn default() -> Self {
        State {
            att_data: HashMap::new(),
            attesters: HashMap::new(),
            by_bit: HashMap::new(),
            blocks: HashMap::new(),
            sync_roots: HashMap::new(),
            randao: HashMap::new(),
            defs: HashMap::new(),
            sync_members: HashMap::new(),
            aggregates: HashMap::new(),
            contributions: HashMap::new(),
            combined: HashMap::new(),
            indices: HashMap::new(),
        }
    }
}

/// See the [module docs](self).
pub struct DutyDb<P: Preset> {
    state: Mutex<State<P>>,
    changed: Notify,
}

impl<P: Preset> Default for DutyDb<P> {
    fn default() -> Self {
        DutyDb {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }
}

impl<P: Preset> DutyDb<P> {
    /// An empty DB.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<P>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the decided `value` of `duty`. Storing the same value again is a no-op; a
    /// different one is refused (nothing of it is stored).
    pub fn store(&self, duty: Duty, value: &DutyValue<P>) -> Result<(), DutyDbError> {
        let conflict = |what: String| DutyDbError::Conflict { duty, what };
        if value.kind() != duty.kind {
            return Err(conflict(format!("{} value for this duty", value.kind())));
        }
        let mut s = self.lock();
        match value {
            DutyValue::Attester(entries) => {
                for e in entries {
                    let key = (duty.slot, e.def.committee_index);
                    if matches!(s.att_data.get(&key), Some(d) if *d != e.data) {
                        return Err(conflict(format!(
                            "attestation data for committee {}",
                            e.def.committee_index
                        )));
                    }
                    if matches!(s.attesters.get(&(duty.slot, e.def.pubkey)), Some(x) if x != e) {
                        return Err(conflict(format!("attestation of {}", e.def.pubkey)));
                    }
                    let bit = (
                        duty.slot,
                        e.def.committee_index,
                        e.def.validator_committee_index,
                    );
                    if matches!(s.by_bit.get(&bit), Some(pk) if *pk != e.def.pubkey) {
                        return Err(conflict(format!(
                            "committee position {} of committee {}",
                            e.def.validator_committee_index, e.def.committee_index
                        )));
                    }
                }
                for e in entries {
                    s.att_data
                        .insert((duty.slot, e.def.committee_index), e.data);
                    s.attesters.insert((duty.slot, e.def.pubkey), *e);
                    s.by_bit.insert(
                        (
                            duty.slot,
                            e.def.committee_index,
                            e.def.validator_committee_index,
                        ),
                        e.def.pubkey,
                    );
                }
            }
            DutyValue::Proposer(p) => match s.blocks.get(&duty.slot) {
                Some(existing) if existing != p.as_ref() => return Err(conflict("block".into())),
                Some(_) => {}
                None => {
                    s.blocks.insert(duty.slot, p.as_ref().clone());
                }
            },
            DutyValue::SyncMessage(root) => match s.sync_roots.get(&duty.slot) {
                Some(existing) if existing != root => {
                    return Err(conflict("sync committee root".into()))
                }
                _ => {
                    s.sync_roots.insert(duty.slot, *root);
                }
            },
            DutyValue::Aggregation(entries) => {
                for e in entries {
                    let key = (duty.slot, e.committee_index);
                    if matches!(s.aggregates.get(&key), Some(a) if *a != e.aggregate) {
                        return Err(conflict(format!(
                            "aggregate of committee {}",
                            e.committee_index
                        )));
                    }
                }
                for e in entries {
                    s.aggregates
                        .insert((duty.slot, e.committee_index), e.aggregate.clone());
                }
            }
            DutyValue::SyncContribution(entries) => {
                for c in entries {
                    let key = (duty.slot, c.subcommittee_index);
                    if matches!(s.contributions.get(&key), Some(x) if x != c) {
                        return Err(conflict(format!(
                            "contribution of subcommittee {}",
                            c.subcommittee_index
                        )));
                    }
                }
                for c in entries {
                    s.contributions
                        .insert((duty.slot, c.subcommittee_index), c.clone());
                }
            }
        }
        drop(s);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Stores the aggregated RANDAO reveal of the proposer of `slot`.
    pub fn store_randao(&self, slot: Slot, reveal: BlsSignature) -> Result<(), DutyDbError> {
        let mut s = self.lock();
        match s.randao.get(&slot) {
            Some(existing) if *existing != reveal => {
                return Err(DutyDbError::Conflict {
                    duty: Duty::new(slot, DutyKind::Randao),
                    what: "randao reveal".into(),
                })
            }
            _ => {
                s.randao.insert(slot, reveal);
            }
        }
        drop(s);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Records the definitions of a scheduled duty (replacing earlier ones, e.g. after a
    /// reorg changed the duties).
    pub fn store_defs(&self, duty: Duty, defs: DutyDefs) {
        {
            let mut s = self.lock();
            if duty.kind == DutyKind::SyncMessage {
                s.sync_members.retain(|(slot, _), _| *slot != duty.slot);
                if let DutyDefs::SyncMessage(members) = &defs {
                    for m in members {
                        s.sync_members.insert((duty.slot, m.pubkey), *m);
                    }
                }
            }
            s.defs.insert(duty, defs);
        }
        self.changed.notify_waiters();
    }

    /// The definitions of a scheduled duty.
    pub fn defs(&self, duty: Duty) -> Option<DutyDefs> {
        self.lock().defs.get(&duty).cloned()
    }

    /// The proposer scheduled for `slot`, if it is one of the cluster's DVs.
    pub fn proposer(&self, slot: Slot) -> Option<ProposerDef> {
        match self.lock().defs.get(&Duty::new(slot, DutyKind::Proposer)) {
            Some(DutyDefs::Proposer(p)) => Some(*p),
            _ => None,
        }
    }

    /// The proposer scheduled for `slot` (one of the cluster's DVs), waiting until `deadline`:
    /// a peer's partial made ahead of time (RANDAO at the epoch start) can arrive before this
    /// node's scheduler has fetched the epoch's proposer duties.
    pub async fn await_proposer(
        &self,
        slot: Slot,
        deadline: Instant,
    ) -> Result<ProposerDef, DutyDbError> {
        self.await_with(
            deadline,
            || format!("a DV proposer duty at slot {slot}"),
            |s| match s.defs.get(&Duty::new(slot, DutyKind::Proposer)) {
                Some(DutyDefs::Proposer(p)) => Some(*p),
                _ => None,
            },
        )
        .await
    }

    /// The DV sync committee member with `validator_index` at `slot`, if scheduled.
    pub fn sync_member(&self, slot: Slot, validator_index: ValidatorIndex) -> Option<SyncDef> {
        match self
            .lock()
            .defs
            .get(&Duty::new(slot, DutyKind::SyncMessage))
        {
            Some(DutyDefs::SyncMessage(m)) => m
                .iter()
                .find(|d| d.validator_index == validator_index)
                .copied(),
            _ => None,
        }
    }

    /// The DV `pubkey`'s sync committee duty at `slot`, if scheduled.
    pub fn sync_member_by_key(&self, slot: Slot, pubkey: BlsPubkey) -> Option<SyncDef> {
        self.lock().sync_members.get(&(slot, pubkey)).copied()
    }

    /// Waits until `f` finds something in the state, or `deadline`.
    async fn await_with<T>(
        &self,
        deadline: Instant,
        what: impl Fn() -> String,
        f: impl Fn(&State<P>) -> Option<T>,
    ) -> Result<T, DutyDbError> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = f(&self.lock()) {
                return Ok(v);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(DutyDbError::Timeout { what: what() });
            }
        }
    }

    /// The decided attestation data of committee `committee_index` at `slot`, waiting for it
    /// until `deadline`.
    pub async fn await_attestation(
        &self,
        slot: Slot,
        committee_index: CommitteeIndex,
        deadline: Instant,
    ) -> Result<AttestationData, DutyDbError> {
        self.await_with(
            deadline,
            || format!("attestation data for slot {slot} committee {committee_index}"),
            |s| s.att_data.get(&(slot, committee_index)).copied(),
        )
        .await
    }

    /// The decided attester entry of DV `pubkey` at `slot`, waiting until `deadline`.
    pub async fn await_attester(
        &self,
        slot: Slot,
        pubkey: BlsPubkey,
        deadline: Instant,
    ) -> Result<AttesterEntry, DutyDbError> {
        self.await_with(
            deadline,
            || format!("attestation of {pubkey} at slot {slot}"),
            |s| s.attesters.get(&(slot, pubkey)).copied(),
        )
        .await
    }

    /// The DV whose decided attestation at `slot` sits at `validator_committee_index` of
    /// committee `committee_index` (the single aggregation bit a VC sets), with its entry.
    pub fn attester_by_bit(
        &self,
        slot: Slot,
        committee_index: CommitteeIndex,
        validator_committee_index: u64,
    ) -> Option<AttesterEntry> {
        let s = self.lock();
        let pk = s
            .by_bit
            .get(&(slot, committee_index, validator_committee_index))?;
        s.attesters.get(&(slot, *pk)).copied()
    }

    /// The decided block of `slot`, waiting until `deadline`.
    pub async fn await_block(
        &self,
        slot: Slot,
        deadline: Instant,
    ) -> Result<ProposerEntry<P>, DutyDbError> {
        self.await_with(
            deadline,
            || format!("block for slot {slot}"),
            |s| s.blocks.get(&slot).cloned(),
        )
        .await
    }

    /// The decided sync committee root of `slot`, waiting until `deadline`.
    pub async fn await_sync_root(
        &self,
        slot: Slot,
        deadline: Instant,
    ) -> Result<Root, DutyDbError> {
        self.await_with(
            deadline,
            || format!("sync committee root for slot {slot}"),
            |s| s.sync_roots.get(&slot).copied(),
        )
        .await
    }

    /// The aggregated RANDAO reveal for `slot`, waiting until `deadline`.
    pub async fn await_randao(
        &self,
        slot: Slot,
        deadline: Instant,
    ) -> Result<BlsSignature, DutyDbError> {
        self.await_with(
            deadline,
            || format!("randao reveal for slot {slot}"),
            |s| s.randao.get(&slot).copied(),
        )
        .await
    }

    /// Stores the DV's combined `signature` over `signing_root`, kept while slot `keep_for`
    /// is retained. The same signature again is a no-op; another one for the same root cannot
    /// exist (BLS signatures are unique) and is refused.
    pub fn store_combined(
        &self,
        pubkey: BlsPubkey,
        signing_root: Root,
        keep_for: Slot,
        signature: BlsSignature,
    ) -> Result<(), DutyDbError> {
        let mut s = self.lock();
        match s.combined.get(&(pubkey, signing_root)) {
            Some((_, existing)) if *existing != signature => {
                return Err(DutyDbError::CombinedConflict {
                    pubkey,
                    signing_root,
                })
            }
            Some(_) => return Ok(()),
            None => {
                s.combined
                    .insert((pubkey, signing_root), (keep_for, signature));
            }
        }
        drop(s);
        self.changed.notify_waiters();
        Ok(())
    }

    /// The DV's combined signature over `signing_root`, if this node has it.
    pub fn combined(&self, pubkey: BlsPubkey, signing_root: Root) -> Option<BlsSignature> {
        self.lock()
            .combined
            .get(&(pubkey, signing_root))
            .map(|(_, s)| *s)
    }

    /// The DV's combined signature over `signing_root`, waiting for it until `deadline`.
    pub async fn await_combined(
        &self,
        pubkey: BlsPubkey,
        signing_root: Root,
        deadline: Instant,
    ) -> Result<BlsSignature, DutyDbError> {
        self.await_with(
            deadline,
            || format!("combined signature of {pubkey} over {signing_root}"),
            |s| s.combined.get(&(pubkey, signing_root)).map(|(_, s)| *s),
        )
        .await
    }

    /// The decided attestation data of committee `committee_index` at `slot`, if any.
    pub fn attestation_data(
        &self,
        slot: Slot,
        committee_index: CommitteeIndex,
    ) -> Option<AttestationData> {
        self.lock().att_data.get(&(slot, committee_index)).copied()
    }

    /// The decided sync committee root of `slot`, if any.
    pub fn sync_root(&self, slot: Slot) -> Option<Root> {
        self.lock().sync_roots.get(&slot).copied()
    }

    /// The decided aggregate of committee `committee_index` at `slot`.
    pub fn aggregate(&self, slot: Slot, committee_index: CommitteeIndex) -> Option<Attestation<P>> {
        self.lock()
            .aggregates
            .get(&(slot, committee_index))
            .cloned()
    }

    /// The decided aggregate of committee `committee_index` at `slot`, waiting until
    /// `deadline`.
    pub async fn await_committee_aggregate(
        &self,
        slot: Slot,
        committee_index: CommitteeIndex,
        deadline: Instant,
    ) -> Result<Attestation<P>, DutyDbError> {
        self.await_with(
            deadline,
            || format!("aggregate of committee {committee_index} at slot {slot}"),
            |s| s.aggregates.get(&(slot, committee_index)).cloned(),
        )
        .await
    }

    /// The decided aggregate at `slot` whose attestation data has root
    /// `attestation_data_root`, waiting until `deadline`.
    pub async fn await_aggregate(
        &self,
        slot: Slot,
        attestation_data_root: Root,
        deadline: Instant,
    ) -> Result<Attestation<P>, DutyDbError> {
        self.await_with(
            deadline,
            || format!("aggregate of attestation data {attestation_data_root} at slot {slot}"),
            |s| {
                s.aggregates
                    .iter()
                    .find(|((sl, _), a)| *sl == slot && Root::of(&a.data) == attestation_data_root)
                    .map(|(_, a)| a.clone())
            },
        )
        .await
    }

    /// The decided contribution of `subcommittee_index` at `slot`, waiting until `deadline`.
    pub async fn await_contribution(
        &self,
        slot: Slot,
        subcommittee_index: u64,
        deadline: Instant,
    ) -> Result<SyncCommitteeContribution<P>, DutyDbError> {
        self.await_with(
            deadline,
            || format!("contribution of subcommittee {subcommittee_index} at slot {slot}"),
            |s| s.contributions.get(&(slot, subcommittee_index)).cloned(),
        )
        .await
    }

    /// Records the validator indices of the cluster's (active) DVs.
    pub fn store_indices(&self, indices: impl IntoIterator<Item = (BlsPubkey, ValidatorIndex)>) {
        self.lock().indices.extend(indices);
        self.changed.notify_waiters();
    }

    /// The DV with validator index `index`, once the scheduler resolved it.
    pub fn pubkey_of(&self, index: ValidatorIndex) -> Option<BlsPubkey> {
        self.lock()
            .indices
            .iter()
            .find(|(_, i)| **i == index)
            .map(|(pk, _)| *pk)
    }

    /// The validator index of DV `pubkey`, once the scheduler resolved it.
    pub fn index_of(&self, pubkey: BlsPubkey) -> Option<ValidatorIndex> {
        self.lock().indices.get(&pubkey).copied()
    }

    /// The DV `pubkey`'s attester duty at `slot`, if scheduled.
    pub fn attester_def(&self, slot: Slot, pubkey: BlsPubkey) -> Option<AttesterDef> {
        match self.lock().defs.get(&Duty::new(slot, DutyKind::Attester)) {
            Some(DutyDefs::Attester(d)) => d.iter().find(|d| d.pubkey == pubkey).copied(),
            _ => None,
        }
    }

    /// The DV `pubkey`'s seat in sync subcommittee `subcommittee_index` at `slot`, if
    /// scheduled.
    pub fn sync_subnet_def(
        &self,
        slot: Slot,
        pubkey: BlsPubkey,
        subcommittee_index: u64,
    ) -> Option<SyncSubnetDef> {
        match self
            .lock()
            .defs
            .get(&Duty::new(slot, DutyKind::SyncContribution))
        {
            Some(DutyDefs::SyncContribution(d)) => d
                .iter()
                .find(|d| d.pubkey == pubkey && d.subcommittee_index == subcommittee_index)
                .copied(),
            _ => None,
        }
    }

    /// Forgets everything of slots before `slot`.
    pub fn prune(&self, slot: Slot) {
        let mut s = self.lock();
        s.aggregates.retain(|(sl, _), _| *sl >= slot);
        s.contributions.retain(|(sl, _), _| *sl >= slot);
        s.combined.retain(|_, (sl, _)| *sl >= slot);
        s.att_data.retain(|(sl, _), _| *sl >= slot);
        s.attesters.retain(|(sl, _), _| *sl >= slot);
        s.by_bit.retain(|(sl, _, _), _| *sl >= slot);
        s.blocks.retain(|sl, _| *sl >= slot);
        s.sync_roots.retain(|sl, _| *sl >= slot);
        s.randao.retain(|sl, _| *sl >= slot);
        s.defs.retain(|d, _| d.slot >= slot);
        s.sync_members.retain(|(sl, _), _| *sl >= slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duty::AttesterDef;
    use crate::eth::types::{Checkpoint, Minimal};
    use std::sync::Arc;
    use std::time::Duration;

    fn entry(pk: u8, committee: u64, bit: u64, root: u8) -> AttesterEntry {
        AttesterEntry {
            def: AttesterDef {
                pubkey: BlsPubkey([pk; 48]),
                validator_index: u64::from(pk),
                committee_index: committee,
                committee_length: 8,
                committees_at_slot: 2,
                validator_committee_index: bit,
            },
            data: AttestationData {
                slot: 5,
                index: committee,
                beacon_block_root: Root([root; 32]),
                source: Checkpoint::default(),
                target: Checkpoint {
                    epoch: 0,
                    root: Root([root; 32]),
                },
            },
        }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(200)
    }

    #[tokio::test]
    async fn await_returns_when_stored_and_times_out_otherwise() {
        let db = Arc::new(DutyDb::<Minimal>::new());
        let duty = Duty::new(5, DutyKind::Attester);
        let waiter = {
            let db = db.clone();
            tokio::spawn(async move { db.await_attestation(5, 1, soon()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let e = entry(1, 1, 3, 9);
        db.store(duty, &DutyValue::Attester(vec![e])).unwrap();
        assert_eq!(waiter.await.unwrap().unwrap(), e.data);
        assert_eq!(db.attester_by_bit(5, 1, 3), Some(e));
        assert_eq!(db.attester_by_bit(5, 1, 4), None);
        let err = db.await_attestation(5, 0, soon()).await.unwrap_err();
        assert!(matches!(err, DutyDbError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("slot 5 committee 0"));
    }

    #[tokio::test]
    async fn conflicting_stores_are_refused_and_same_value_is_idempotent() {
        let db = DutyDb::<Minimal>::new();
        let duty = Duty::new(5, DutyKind::Attester);
        let a = entry(1, 1, 3, 9);
        db.store(duty, &DutyValue::Attester(vec![a])).unwrap();
        db.store(duty, &DutyValue::Attester(vec![a])).unwrap();
        // Same committee, different data.
        let b = entry(2, 1, 4, 7);
        let err = db.store(duty, &DutyValue::Attester(vec![b])).unwrap_err();
        assert!(err.to_string().contains("committee 1"), "{err}");
        assert_eq!(
            db.attester_by_bit(5, 1, 4),
            None,
            "nothing of a refused value is stored"
        );
        // Another DV at the same committee position.
        let c = entry(3, 1, 3, 9);
        assert!(db.store(duty, &DutyValue::Attester(vec![c])).is_err());
        // Sync roots and randao.
        let sduty = Duty::new(5, DutyKind::SyncMessage);
        db.store(sduty, &DutyValue::SyncMessage(Root([1; 32])))
            .unwrap();
        assert!(db
            .store(sduty, &DutyValue::SyncMessage(Root([2; 32])))
            .is_err());
        assert_eq!(db.await_sync_root(5, soon()).await.unwrap(), Root([1; 32]));
        db.store_randao(5, BlsSignature([1; 96])).unwrap();
        assert!(db.store_randao(5, BlsSignature([2; 96])).is_err());
        // Wrong kind for the duty.
        assert!(db.store(sduty, &DutyValue::Attester(vec![a])).is_err());
        db.prune(6);
        assert_eq!(db.attester_by_bit(5, 1, 3), None);
    }

    #[test]
    fn sync_members_are_looked_up_by_key() {
        let db = DutyDb::<Minimal>::new();
        let member = |pk: u8| SyncDef {
            pubkey: BlsPubkey([pk; 48]),
            validator_index: u64::from(pk) + 100,
        };
        let members: Vec<SyncDef> = (0..=255).map(member).collect();
        db.store_defs(
            Duty::new(5, DutyKind::SyncMessage),
            DutyDefs::SyncMessage(members.clone()),
        );
        db.store_defs(
            Duty::new(6, DutyKind::SyncMessage),
            DutyDefs::SyncMessage(vec![member(1)]),
        );
        assert_eq!(
            db.sync_member_by_key(5, BlsPubkey([7; 48])),
            Some(member(7))
        );
        assert_eq!(db.sync_member_by_key(6, BlsPubkey([7; 48])), None);
        assert_eq!(db.sync_member_by_key(4, BlsPubkey([7; 48])), None);
        // Other kinds of the slot are not members.
        db.store_defs(
            Duty::new(7, DutyKind::SyncContribution),
            DutyDefs::SyncContribution(Vec::new()),
        );
        assert_eq!(db.sync_member_by_key(7, BlsPubkey([1; 48])), None);
        // Replaced definitions (a reorg) replace the members.
        db.store_defs(
            Duty::new(5, DutyKind::SyncMessage),
            DutyDefs::SyncMessage(vec![member(9)]),
        );
        assert_eq!(db.sync_member_by_key(5, BlsPubkey([7; 48])), None);
        assert_eq!(
            db.sync_member_by_key(5, BlsPubkey([9; 48])),
            Some(member(9))
        );
        assert_eq!(db.sync_member(5, 109), Some(member(9)));
        db.prune(6);
        assert_eq!(db.sync_member_by_key(5, BlsPubkey([9; 48])), None);
        assert_eq!(
            db.sync_member_by_key(6, BlsPubkey([1; 48])),
            Some(member(1))
        );
    }
}
