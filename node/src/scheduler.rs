//! The scheduler: the DVs' duties per epoch, and firing each duty on time.
//!
//! Each epoch the scheduler resolves the DVs' validator indices (active ones) and asks the
//! beacon node for their attester, proposer and sync committee duties of the current and the
//! next epoch. It records the definitions in the [`DutyDb`] (peers may be ahead; their partial
//! signatures are checked against them) and fires each duty at its offset into the slot:
//! proposer at the slot start, attester and sync committee message at 1/3 of the slot or as soon
//! as the beacon node's head event announces the slot's block, whichever comes first.
//!
//! In remote-signer mode ([`Scheduler::with_remote_duties`]) the node signs with its own key
//! shares, and the scheduler also fires, as soon as an epoch's duties are known, the duties that
//! combine what the VC will ask for ahead of time — the attesters' and sync committee members'
//! selection proofs and the proposers' RANDAO reveals — and, at 2/3 of each slot with attesters
//! (sync committee members), the aggregation (sync contribution) duty. The DVs taking part in
//! those are the ones their combined selection proof elects, known only when they run: the stage
//! running them reports them to the tracker.
//!
//! # Reorgs
//! The scheduler follows the beacon node's `head` and `chain_reorg` events. Duties of an epoch
//! are valid for the block root they depend on (the `dependent_root` of the duties answers):
//! when a head event names another dependent root for an epoch already resolved (attester
//! duties of the head epoch: `previous_duty_dependent_root`; attester duties of the next epoch
//! and proposer duties of the head epoch: `current_duty_dependent_root`), or a `chain_reorg`
//! event arrives, that epoch's duties are fetched again and rescheduled. Only the stale part is
//! fetched again (attester and sync duties, or proposer duties), duties of the other part fire
//! on time meanwhile, and a duty whose definition did not change keeps its place (a slot's
//! attester duty made due by the slot's head event stays due). Duties that already fired are
//! never fired again.
//!
//! Lodestar 1.5.1 answers next-epoch proposer duties with the current epoch's decision root, so
//! the first head event of every epoch finds the proposer part stale; re-fetching it then turns
//! the prediction into the epoch's final proposers. (Before the part-wise refresh, that re-fetch
//! replaced the epoch's attester duties too and put the first slot's attester duty back to 1/3
//! of the slot, after its head event had made it due: measured in latency-200ms, every first
//! slot of an epoch broadcast 1.1 s later and missed the aggregation.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::clock::{Clock, SlotClock};
use crate::duty::{
    AttesterDef, Duty, DutyDefs, DutyKind, ProposerDef, ScheduledDuty, SyncDef, SyncSubnetDef,
};
use crate::dutydb::DutyDb;
use crate::eth::aggregate::sync_subcommittees;
use crate::eth::beacon::{
    BeaconClient, BeaconError, BeaconEvent, ChainReorgEvent, EventTopic, HeadEvent, StateId,
    SyncDuty, ValidatorId,
};
use crate::eth::heads::Heads;
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{BlsPubkey, Epoch, Preset, Root, Slot, ValidatorIndex};
use crate::tracker::Tracker;

/// When `duty` fires (Unix ms): proposer at the slot start, attester and sync committee
/// message at 1/3 of the slot, aggregation and sync contribution at 2/3 of it. What is combined
/// ahead of time (selection proofs, RANDAO reveals, exits) is due from the start of the epoch
/// before its slot's: it fires as soon as it is planned.
pub fn fire_at_ms(clock: &SlotClock, duty: Duty) -> u64 {
    let start = clock.slot_start_ms(duty.slot);
    let third = clock.slot_duration().as_millis() as u64 / 3;
    match duty.kind {
        DutyKind::Proposer => start,
        DutyKind::Attester | DutyKind::SyncMessage => start + third,
        DutyKind::Aggregation | DutyKind::SyncContribution => start + 2 * third,
        DutyKind::Randao
        | DutyKind::SelectionProof
        | DutyKind::SyncSelectionProof
        | DutyKind::Exit => {
            let epoch = clock.epoch_of(duty.slot);
            clock.slot_start_ms(clock.slots_of(epoch.saturating_sub(1)).start)
        }
    }
}

/// Attester duties grouped by slot, each slot's sorted by pubkey without repeats.
fn attesters_by_slot(
    attesters: &[AttesterDef],
    attester_slots: &[Slot],
) -> BTreeMap<Slot, Vec<AttesterDef>> {
    let mut by_slot: BTreeMap<Slot, Vec<AttesterDef>> = BTreeMap::new();
    for (d, slot) in attesters.iter().zip(attester_slots) {
        by_slot.entry(*slot).or_default().push(*d);
    }
    for defs in by_slot.values_mut() {
        defs.sort_by_key(|d| d.pubkey);
        defs.dedup_by_key(|d| d.pubkey);
    }
    by_slot
}

/// The remote-signer duties of one epoch (see the [module docs](self)), timed: what is combined
/// ahead of time fires at `now_ms` at the latest.
pub fn plan_remote_epoch(
    clock: &SlotClock,
    now_ms: u64,
    attesters: &[AttesterDef],
    attester_slots: &[Slot],
    proposers: &[(Slot, ProposerDef)],
    sync_seats: &[(Slot, Vec<SyncSubnetDef>)],
) -> Vec<(u64, ScheduledDuty)> {
    let mut out = Vec::new();
    for (slot, defs) in attesters_by_slot(attesters, attester_slots) {
        out.push(ScheduledDuty {
            duty: Duty::new(slot, DutyKind::SelectionProof),
            defs: DutyDefs::SelectionProof(defs.clone()),
        });
        out.push(ScheduledDuty {
            duty: Duty::new(slot, DutyKind::Aggregation),
            defs: DutyDefs::Aggregation(defs),
        });
    }
    for (slot, p) in proposers {
        out.push(ScheduledDuty {
            duty: Duty::new(*slot, DutyKind::Randao),
            defs: DutyDefs::Randao(*p),
        });
    }
    for (slot, seats) in sync_seats {
        if seats.is_empty() {
            continue;
        }
        let mut seats = seats.clone();
        seats.sort();
        seats.dedup();
        out.push(ScheduledDuty {
            duty: Duty::new(*slot, DutyKind::SyncSelectionProof),
            defs: DutyDefs::SyncSelectionProof(seats.clone()),
        });
        out.push(ScheduledDuty {
            duty: Duty::new(*slot, DutyKind::SyncContribution),
            defs: DutyDefs::SyncContribution(seats),
        });
    }
    let mut timed: Vec<(u64, ScheduledDuty)> = out
        .into_iter()
        .map(|d| {
            let t = fire_at_ms(clock, d.duty);
            let ahead = matches!(
                d.duty.kind,
                DutyKind::SelectionProof | DutyKind::SyncSelectionProof | DutyKind::Randao
            );
            (if ahead { t.max(now_ms) } else { t }, d)
        })
        .collect();
    timed.sort_by_key(|(t, d)| (*t, d.duty));
    timed
}

/// Groups raw duties of one epoch into [`ScheduledDuty`]s, sorted by fire time. `sync` are the
/// epoch's sync committee members and `sync_last` those signing in its last slot: a message of
/// slot `s` is for the committee of slot `s + 1`, the next period's at the end of a period
/// (the members of the next epoch's duties).
pub fn plan_epoch(
    clock: &SlotClock,
    epoch: Epoch,
    attesters: &[AttesterDef],
    attester_slots: &[Slot],
    proposers: &[(Slot, ProposerDef)],
    sync: &[SyncDef],
    sync_last: &[SyncDef],
) -> Vec<(u64, ScheduledDuty)> {
    let mut out = Vec::new();
    for (slot, defs) in attesters_by_slot(attesters, attester_slots) {
        out.push(ScheduledDuty {
            duty: Duty::new(slot, DutyKind::Attester),
            defs: DutyDefs::Attester(defs),
        });
    }
    for (slot, p) in proposers {
        out.push(ScheduledDuty {
            duty: Duty::new(*slot, DutyKind::Proposer),
            defs: DutyDefs::Proposer(*p),
        });
    }
    let sorted = |defs: &[SyncDef]| {
        let mut m = defs.to_vec();
        m.sort_by_key(|d| d.pubkey);
        m
    };
    let (members, last_members) = (sorted(sync), sorted(sync_last));
    let slots = clock.slots_of(epoch);
    let last = slots.end - 1;
    for slot in slots {
        let m = if slot == last {
            &last_members
        } else {
            &members
        };
        if !m.is_empty() {
            out.push(ScheduledDuty {
                duty: Duty::new(slot, DutyKind::SyncMessage),
                defs: DutyDefs::SyncMessage(m.clone()),
            });
        }
    }
    let mut timed: Vec<(u64, ScheduledDuty)> = out
        .into_iter()
        .map(|d| (fire_at_ms(clock, d.duty), d))
        .collect();
    timed.sort_by_key(|(t, d)| (*t, d.duty));
    timed
}

/// See the [module docs](self).
pub struct Scheduler<P: Preset> {
    bn: BeaconClient,
    clock: SlotClock,
    time: Arc<dyn Clock>,
    dvs: Vec<BlsPubkey>,
    indices: HashMap<BlsPubkey, ValidatorIndex>,
    dutydb: Arc<DutyDb<P>>,
    tracker: Tracker,
    out: mpsc::Sender<ScheduledDuty>,
    resolved: BTreeSet<Epoch>,
    /// Resolved epochs with a part to fetch again.
    stale: BTreeMap<Epoch, Parts>,
    queue: Vec<(u64, ScheduledDuty)>,
    /// Dependent roots of the resolved epochs' duties.
    dependent: BTreeMap<Epoch, DependentRoots>,
    /// Duties fired (kept for the current and the previous epoch).
    fired: BTreeSet<Duty>,
    /// Whether the remote-signer duties are scheduled too.
    remote: bool,
    /// Slot of the last head event.
    head_slot: Option<Slot>,
    /// Where head blocks are recorded for the proposal guard.
    heads: Heads,
}

/// Parts of an epoch's duties, which depend on different block roots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    /// Attester duties (with the sync committee duties, fetched alongside).
    pub attester: bool,
    /// Proposer duties.
    pub proposer: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        attester: true,
        proposer: true,
    };

    fn covers(self, kind: DutyKind) -> bool {
        match kind {
            DutyKind::Proposer | DutyKind::Randao => self.proposer,
            _ => self.attester,
        }
    }
}

/// The block roots one epoch's duties depend on, as the beacon node answered them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DependentRoots {
    attester: Option<Root>,
    proposer: Option<Root>,
}

/// Chain events the scheduler reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainEvent {
    /// A new head.
    Head(HeadEvent),
    /// A reorganisation.
    Reorg(ChainReorgEvent),
}

impl<P: Preset> Scheduler<P> {
    /// A scheduler for the DVs `dvs`, sending due duties to `out`.
    pub fn new(
        bn: BeaconClient,
        schedule: &ForkSchedule,
        time: Arc<dyn Clock>,
        dvs: Vec<BlsPubkey>,
        dutydb: Arc<DutyDb<P>>,
        tracker: Tracker,
        out: mpsc::Sender<ScheduledDuty>,
    ) -> Scheduler<P> {
        Scheduler {
            bn,
            clock: SlotClock::of(schedule),
            time,
            dvs,
            indices: HashMap::new(),
            dutydb,
            tracker,
            out,
            resolved: BTreeSet::new(),
            stale: BTreeMap::new(),
            queue: Vec::new(),
            dependent: BTreeMap::new(),
            fired: BTreeSet::new(),
            remote: false,
            head_slot: None,
            heads: Heads::new(),
        }
    }

    /// Schedules the remote-signer duties too (selection proofs, RANDAO reveals ahead of the
    /// slot, aggregations, sync contributions).
    pub fn with_remote_duties(mut self) -> Scheduler<P> {
        self.remote = true;
        self
    }

    /// Records the head blocks of the beacon node's events in `heads`.
    pub fn with_heads(mut self, heads: Heads) -> Scheduler<P> {
        self.heads = heads;
        self
    }

    /// Marks the parts of resolved epochs whose duties `event` invalidates as stale (they are
    /// fetched again) and returns them.
    pub fn on_event(&mut self, event: &ChainEvent) -> Vec<(Epoch, Parts)> {
        let mut stale: BTreeMap<Epoch, Parts> = BTreeMap::new();
        match event {
            ChainEvent::Head(h) => {
                let epoch = self.clock.epoch_of(h.slot);
                let changed = |known: Option<Root>, now: Root| known.is_some_and(|k| k != now);
                if let Some(d) = self.dependent.get(&epoch) {
                    let parts = Parts {
                        attester: changed(d.attester, h.previous_duty_dependent_root),
                        proposer: changed(d.proposer, h.current_duty_dependent_root),
                    };
                    if parts != Parts::default() {
                        stale.insert(epoch, parts);
                    }
                }
                if let Some(d) = self.dependent.get(&(epoch + 1)) {
                    if changed(d.attester, h.current_duty_dependent_root) {
                        stale.insert(
                            epoch + 1,
                            Parts {
                                attester: true,
                                proposer: false,
                            },
                        );
                    }
                }
            }
            ChainEvent::Reorg(r) => {
                let epoch = self.clock.epoch_of(r.slot);
                for e in [epoch, epoch + 1] {
                    if self.resolved.contains(&e) {
                        stale.insert(e, Parts::ALL);
                    }
                }
            }
        }
        for (e, parts) in &stale {
            info!(epoch = e, ?parts, event = ?event, "duties depend on another block now; fetching them again");
            let entry = self.stale.entry(*e).or_default();
            entry.attester |= parts.attester;
            entry.proposer |= parts.proposer;
        }
        stale.into_iter().collect()
    }

    async fn resolve_indices(&mut self) -> Result<(), BeaconError> {
        let missing: Vec<ValidatorId> = self
            .dvs
            .iter()
            .filter(|pk| !self.indices.contains_key(*pk))
            .map(|pk| ValidatorId::Pubkey(*pk))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for v in self.bn.state_validators(StateId::Head, &missing).await? {
            if v.status.is_active() {
                self.indices.insert(v.validator.pubkey, v.index);
            }
        }
        self.dutydb
            .store_indices(self.indices.iter().map(|(pk, i)| (*pk, *i)));
        info!(
            active = self.indices.len(),
            total = self.dvs.len(),
            "resolved DV validator indices"
        );
        Ok(())
    }

    /// The block of the current slot arrived: its attester and sync-committee-message duties
    /// become due now instead of at 1/3 of the slot, as an unmodified validator client does
    /// (it asks for attestation data as soon as it sees the block). Duties of other slots keep
    /// their time, so attester consensus still starts in increasing slot order (rule 5): every
    /// earlier slot's duties were due by 1/3 of that slot, before this slot began.
    pub fn advance_on_head(&mut self, head_slot: Slot, now_ms: u64) {
        self.advance(
            head_slot,
            now_ms,
            &[DutyKind::Attester, DutyKind::SyncMessage],
        );
    }

    /// This cluster decided the block of the current slot ([`Heads::record_own`]): the slot's
    /// attester duty becomes due now, before the beacon node's head event (the fetcher votes
    /// for that block). The sync committee message still waits for the head event: it signs
    /// the beacon node's head root. Rule 5 holds as in [`Scheduler::advance_on_head`].
    pub fn advance_on_own_block(&mut self, slot: Slot, now_ms: u64) {
        if self.heads.own_block(slot).is_some() {
            self.advance(slot, now_ms, &[DutyKind::Attester]);
        }
    }

    fn advance(&mut self, head_slot: Slot, now_ms: u64, kinds: &[DutyKind]) {
        if self.clock.slot_at_ms(now_ms) != head_slot {
            return;
        }
        let mut moved = false;
        for (t, d) in self.queue.iter_mut() {
            if d.duty.slot == head_slot && kinds.contains(&d.duty.kind) && *t > now_ms {
                *t = now_ms;
                moved = true;
            }
        }
        if moved {
            self.queue.sort_by_key(|(t, d)| (*t, d.duty));
        }
    }

    /// The sync committee duties of the DVs (`ours`: index → pubkey) for `epoch`; none if the
    /// beacon node cannot tell.
    async fn sync_duties(
        &self,
        epoch: Epoch,
        indices: &[ValidatorIndex],
        ours: &HashMap<ValidatorIndex, BlsPubkey>,
    ) -> Vec<SyncDuty> {
        match self.bn.sync_duties(epoch, indices).await {
            Ok(s) => s
                .data
                .into_iter()
                .filter(|d| ours.get(&d.validator_index) == Some(&d.pubkey))
                .collect(),
            Err(e) => {
                warn!(epoch, error = %e, "cannot get sync committee duties; none scheduled");
                Vec::new()
            }
        }
    }

    /// Fetches the `parts` of `epoch`'s duties and queues them: a queued duty whose definition
    /// is unchanged keeps its fire time, what fired already stays fired.
    async fn resolve_epoch(&mut self, epoch: Epoch, parts: Parts) -> Result<(), BeaconError> {
        self.resolve_indices().await?;
        let mut indices: Vec<ValidatorIndex> = self.indices.values().copied().collect();
        indices.sort_unstable();
        if indices.is_empty() {
            self.resolved.insert(epoch);
            self.stale.remove(&epoch);
            return Ok(());
        }
        let ours: HashMap<ValidatorIndex, BlsPubkey> =
            self.indices.iter().map(|(pk, i)| (*i, *pk)).collect();
        let mut roots = self.dependent.get(&epoch).copied().unwrap_or_default();
        // The parts' requests go out at once: one after the other they took 4 beacon node
        // round trips (attester, sync, next epoch's sync, proposer duties).
        let attester_part = async {
            if !parts.attester {
                return Ok(None);
            }
            let (answer, sync, next_sync) = tokio::join!(
                self.bn.attester_duties(epoch, &indices),
                self.sync_duties(epoch, &indices, &ours),
                // The last slot signs for the next slot's committee (the next period's at a
                // boundary).
                self.sync_duties(epoch + 1, &indices, &ours),
            );
            answer.map(|a| Some((a, sync, next_sync)))
        };
        let proposer_part = async {
            if !parts.proposer {
                return Ok(None);
            }
            self.bn.proposer_duties::<P>(epoch).await.map(Some)
        };
        let (attester_answer, proposer_answer) = tokio::try_join!(attester_part, proposer_part)?;
        let (mut attesters, mut slots, mut proposers) = (Vec::new(), Vec::new(), Vec::new());
        let (mut sync_duties, mut next_sync_duties) = (Vec::new(), Vec::new());
        if let Some((answer, sync, next_sync)) = attester_answer {
            for d in answer
                .data
                .iter()
                .filter(|d| ours.get(&d.validator_index) == Some(&d.pubkey))
            {
                attesters.push(AttesterDef::from(d));
                slots.push(d.slot);
            }
            roots.attester = answer.dependent_root;
            (sync_duties, next_sync_duties) = (sync, next_sync);
        }
        if let Some(answer) = proposer_answer {
            proposers = answer
                .data
                .iter()
                .filter(|d| ours.get(&d.validator_index) == Some(&d.pubkey))
                .map(|d| (d.slot, ProposerDef::from(d)))
                .collect();
            roots.proposer = answer.dependent_root;
        }
        let sync: Vec<SyncDef> = sync_duties.iter().map(SyncDef::from).collect();
        let sync_last: Vec<SyncDef> = next_sync_duties.iter().map(SyncDef::from).collect();
        let mut planned = plan_epoch(
            &self.clock,
            epoch,
            &attesters,
            &slots,
            &proposers,
            &sync,
            &sync_last,
        );
        if self.remote {
            let seats = |duties: &[SyncDuty]| -> Vec<SyncSubnetDef> {
                duties
                    .iter()
                    .flat_map(|d| {
                        sync_subcommittees::<P>(&d.validator_sync_committee_indices)
                            .into_iter()
                            .map(|subcommittee_index| SyncSubnetDef {
                                pubkey: d.pubkey,
                                validator_index: d.validator_index,
                                subcommittee_index,
                            })
                    })
                    .collect()
            };
            let (current, last) = (seats(&sync_duties), seats(&next_sync_duties));
            let epoch_slots = self.clock.slots_of(epoch);
            let last_slot = epoch_slots.end - 1;
            let sync_seats: Vec<(Slot, Vec<SyncSubnetDef>)> = epoch_slots
                .map(|s| {
                    (
                        s,
                        if s == last_slot {
                            last.clone()
                        } else {
                            current.clone()
                        },
                    )
                })
                .collect();
            planned.extend(plan_remote_epoch(
                &self.clock,
                self.time.now_ms(),
                &attesters,
                &slots,
                &proposers,
                &sync_seats,
            ));
            planned.sort_by_key(|(t, d)| (*t, d.duty));
        }
        // A re-fetched epoch (reorg): what fired already stays fired.
        planned.retain(|(_, d)| !self.fired.contains(&d.duty));
        info!(
            epoch,
            ?parts,
            attester_slots = planned
                .iter()
                .filter(|(_, d)| d.duty.kind == DutyKind::Attester)
                .count(),
            proposals = proposers.len(),
            sync_members = sync.len(),
            "scheduled epoch duties"
        );
        for (_, d) in &planned {
            self.dutydb.store_defs(d.duty, d.defs.clone());
        }
        let clock = self.clock;
        let replaced =
            |d: &ScheduledDuty| clock.epoch_of(d.duty.slot) == epoch && parts.covers(d.duty.kind);
        let mut previous: HashMap<Duty, (u64, ScheduledDuty)> = HashMap::new();
        self.queue.retain(|(t, d)| {
            if replaced(d) {
                previous.insert(d.duty, (*t, d.clone()));
                false
            } else {
                true
            }
        });
        for (t, d) in planned {
            let t = match previous.get(&d.duty) {
                Some((old_t, old)) if old.defs == d.defs => *old_t,
                _ => t,
            };
            self.queue.push((t, d));
        }
        self.queue.sort_by_key(|(t, d)| (*t, d.duty));
        self.resolved.insert(epoch);
        self.dependent.insert(epoch, roots);
        if let Some(left) = self.stale.get_mut(&epoch) {
            left.attester &= !parts.attester;
            left.proposer &= !parts.proposer;
            if *left == Parts::default() {
                self.stale.remove(&epoch);
            }
        }
        // A duty that changed and is planned anew is still due at its slot's head event.
        if let Some(head) = self.head_slot {
            self.advance_on_head(head, self.time.now_ms());
        }
        Ok(())
    }

    /// Whether an attester or sync committee message duty of `slot` is still queued, to fire at
    /// the slot's head event.
    fn awaiting_head(&self, slot: Slot) -> bool {
        self.queue.iter().any(|(_, d)| {
            d.duty.slot == slot && matches!(d.duty.kind, DutyKind::Attester | DutyKind::SyncMessage)
        })
    }

    /// Sends the due duties (at most a slot late; older ones are dropped), except — with
    /// `skip_stale` — those whose part of their epoch is to be fetched again; returns `false`
    /// when the receiver is gone.
    async fn fire_due(&mut self, slot_ms: u64, skip_stale: bool) -> bool {
        let now = self.time.now_ms();
        let clock = self.clock;
        let stale = &self.stale;
        let blocked = |d: &ScheduledDuty| {
            skip_stale
                && stale
                    .get(&clock.epoch_of(d.duty.slot))
                    .is_some_and(|p| p.covers(d.duty.kind))
        };
        let mut due = Vec::new();
        let mut rest = Vec::with_capacity(self.queue.len());
        for (t, d) in self.queue.drain(..) {
            if t > now || blocked(&d) {
                rest.push((t, d));
            } else if now.saturating_sub(t) > slot_ms {
                debug!(duty = %d.duty, "duty missed while starting up; skipped");
            } else {
                due.push(d);
            }
        }
        self.queue = rest;
        for d in due {
            self.fired.insert(d.duty);
            if d.duty.kind.participants_known_when_scheduled() {
                self.tracker.scheduled(&d);
            }
            if self.out.send(d).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Runs until `shutdown` turns true or the receiver of due duties is gone, following the
    /// beacon node's head and reorg events.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(follow_events::<P>(self.bn.clone(), tx, shutdown.clone()));
        self.run_with_events(rx, shutdown).await
    }

    /// [`Scheduler::run`] with chain events from `events` instead of the beacon node's stream.
    pub async fn run_with_events(
        mut self,
        mut events: mpsc::Receiver<ChainEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let slot_ms = self.clock.slot_duration().as_millis() as u64;
        let mut events_open = true;
        loop {
            let now = self.time.now_ms();
            let slot = self.clock.slot_at_ms(now);
            let epoch = self.clock.epoch_of(slot);
            // What is due and not stale fires before any beacon node round trip.
            if !self.fire_due(slot_ms, true).await {
                return;
            }
            // The next epoch's duties wait while this slot's attester or sync committee duty
            // waits for the slot's head event (at most until 1/3 of the slot): fetching them
            // holds the loop for a few beacon node round trips, and the first slot of every
            // epoch, whose block arrives just then, fired that much later (measured in
            // latency-200ms: 0.65–0.83 s into slot 40 instead of ~0.06 s, broadcast after the
            // aggregation point).
            let awaiting_head = self.awaiting_head(slot);
            for e in [epoch, epoch + 1] {
                if e > epoch && awaiting_head {
                    continue;
                }
                let parts = if self.resolved.contains(&e) {
                    self.stale.get(&e).copied()
                } else {
                    Some(Parts::ALL)
                };
                if let Some(parts) = parts {
                    if let Err(err) = self.resolve_epoch(e, parts).await {
                        warn!(epoch = e, error = %err, "cannot resolve duties from the beacon node; retrying");
                    }
                }
            }
            self.resolved.retain(|e| *e + 1 >= epoch);
            self.stale.retain(|e, _| *e + 1 >= epoch);
            self.dependent.retain(|e, _| *e + 1 >= epoch);
            let first_kept = self.clock.slots_of(epoch.saturating_sub(1)).start;
            self.fired.retain(|d| d.slot >= first_kept);
            // Whether or not a re-fetch succeeded, nothing due waits any longer (a failed one
            // leaves the previous definitions, which are still the best known).
            if !self.fire_due(slot_ms, false).await {
                return;
            }
            let next_slot_ms = self.clock.slot_start_ms(slot + 1);
            let next = self
                .queue
                .first()
                .map(|(t, _)| (*t).min(next_slot_ms))
                .unwrap_or(next_slot_ms);
            let wait = Duration::from_millis(next.saturating_sub(self.time.now_ms()).max(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                ev = events.recv(), if events_open => match ev {
                    Some(ev) => {
                        self.on_event(&ev);
                        match &ev {
                            ChainEvent::Head(h) => self.heads.record(h.slot, h.block),
                            ChainEvent::Reorg(r) => self.heads.record(r.slot, r.new_head_block),
                        }
                        if let ChainEvent::Head(h) = &ev {
                            self.head_slot = Some(h.slot);
                            self.advance_on_head(h.slot, self.time.now_ms());
                        }
                    }
                    None => events_open = false,
                },
                _ = self.heads.own_block_decided() => {
                    let now = self.time.now_ms();
                    self.advance_on_own_block(self.clock.slot_at_ms(now), now);
                }
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

/// Forwards the beacon node's `head` and `chain_reorg` events to `out`, reconnecting when the
/// stream ends, until `shutdown` turns true or `out` is gone.
async fn follow_events<P: Preset>(
    bn: BeaconClient,
    out: mpsc::Sender<ChainEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        match bn
            .events::<P>(&[EventTopic::Head, EventTopic::ChainReorg])
            .await
        {
            Ok(mut stream) => {
                failures = 0;
                loop {
                    let item = tokio::select! {
                        item = stream.next() => item,
                        _ = shutdown.changed() => return,
                    };
                    let ev = match item {
                        None => break,
                        Some(Ok(BeaconEvent::Head(h))) => ChainEvent::Head(h),
                        Some(Ok(BeaconEvent::ChainReorg(r))) => ChainEvent::Reorg(r),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            debug!(error = %e, "undecodable beacon node event");
                            continue;
                        }
                    };
                    if out.send(ev).await.is_err() {
                        return;
                    }
                }
                debug!("beacon node event stream ended; reconnecting");
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures % 30 == 0 {
                    warn!(error = %e, failures, "cannot follow the beacon node's head events; retrying");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::types::BlsPubkey;

    struct FakeClock(std::sync::atomic::AtomicU64);
    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn fire_offsets_follow_the_slot_time() {
        let clock = SlotClock::new(1_000, 4, 8);
        assert_eq!(clock.slot_start_ms(0), 1_000_000);
        assert_eq!(
            fire_at_ms(&clock, Duty::new(3, DutyKind::Proposer)),
            1_012_000
        );
        assert_eq!(
            fire_at_ms(&clock, Duty::new(3, DutyKind::Attester)),
            1_013_333
        );
        assert_eq!(
            fire_at_ms(&clock, Duty::new(3, DutyKind::SyncMessage)),
            1_013_333
        );
        let fake = FakeClock(std::sync::atomic::AtomicU64::new(1_013_999));
        assert_eq!(clock.slot_at_ms(fake.now_ms()), 3);
        assert_eq!(clock.slot_at_ms(999_000), 0, "before genesis");
        assert_eq!(clock.epoch_of(17), 2);
        assert_eq!(clock.slots_of(2), 16..24);
    }

    #[test]
    fn the_last_slot_of_an_epoch_signs_for_the_next_slots_sync_committee() {
        let clock = SlotClock::new(0, 6, 8);
        let member = |pk: u8| SyncDef {
            pubkey: BlsPubkey([pk; 48]),
            validator_index: u64::from(pk),
        };
        let plan = plan_epoch(&clock, 1, &[], &[], &[], &[member(4)], &[member(5)]);
        let members: Vec<(u64, u8)> = plan
            .iter()
            .map(|(_, d)| match &d.defs {
                DutyDefs::SyncMessage(m) => (d.duty.slot, m[0].pubkey.0[0]),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(members.len(), 8);
        assert!(members[..7].iter().all(|(_, pk)| *pk == 4));
        assert_eq!(members[7], (15, 5), "slot 15 signs for slot 16's committee");
        // No DV in the next slot's committee: no duty in the last slot.
        let plan = plan_epoch(&clock, 1, &[], &[], &[], &[member(4)], &[]);
        assert_eq!(plan.len(), 7);
        assert!(plan.iter().all(|(_, d)| d.duty.slot < 15));
    }

    #[test]
    fn plan_groups_attesters_per_slot_and_orders_by_fire_time() {
        let clock = SlotClock::new(0, 6, 8);
        let def = |pk: u8, committee| AttesterDef {
            pubkey: BlsPubkey([pk; 48]),
            validator_index: u64::from(pk),
            committee_index: committee,
            committee_length: 4,
            committees_at_slot: 1,
            validator_committee_index: 0,
        };
        let atts = [def(2, 0), def(1, 0), def(3, 0)];
        let slots = [9, 9, 8];
        let prop = ProposerDef {
            pubkey: BlsPubkey([1; 48]),
            validator_index: 1,
        };
        let sync = [SyncDef {
            pubkey: BlsPubkey([4; 48]),
            validator_index: 4,
        }];
        let plan = plan_epoch(&clock, 1, &atts, &slots, &[(9, prop)], &sync, &sync);
        // 2 attester slots + 1 proposer + 8 sync.
        assert_eq!(plan.len(), 11);
        assert!(plan.windows(2).all(|w| w[0].0 <= w[1].0));
        let slot9: Vec<_> = plan
            .iter()
            .filter(|(_, d)| d.duty == Duty::new(9, DutyKind::Attester))
            .collect();
        match &slot9[0].1.defs {
            DutyDefs::Attester(d) => {
                assert_eq!(
                    d.iter().map(|d| d.pubkey.0[0]).collect::<Vec<_>>(),
                    vec![1, 2]
                )
            }
            other => panic!("unexpected {other:?}"),
        }
        let p = plan
            .iter()
            .position(|(_, d)| d.duty.kind == DutyKind::Proposer)
            .unwrap();
        let a = plan
            .iter()
            .position(|(_, d)| d.duty == Duty::new(9, DutyKind::Attester))
            .unwrap();
        assert!(p < a, "proposer fires before the attester of its slot");
        assert_eq!(plan[p].0, 54_000);
        assert_eq!(plan[a].0, 56_000);
    }
}

/// The scheduler against a simulated beacon node on loopback (real HTTP, scripted answers).
#[cfg(test)]
mod reorg_tests {
    use crate::eth::heads::OwnBlock;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use axum::extract::{Path, State};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use prometheus_client::registry::Registry;
    use serde_json::{json, Value};

    use super::*;
    use crate::clock::SystemClock;
    use crate::duty::fixtures::altair_schedule;
    use crate::eth::beacon::{AttesterDuty, Validator, ValidatorData, ValidatorStatus};
    use crate::eth::types::Minimal;

    const DV: BlsPubkey = BlsPubkey([7; 48]);

    /// A scheduler for the one DV [`DV`] against the BN at `url`.
    fn dv_scheduler(
        url: &str,
        schedule: &ForkSchedule,
        out: mpsc::Sender<ScheduledDuty>,
    ) -> Scheduler<Minimal> {
        Scheduler::<Minimal>::new(
            BeaconClient::new(url).unwrap(),
            schedule,
            Arc::new(SystemClock),
            vec![DV],
            Arc::new(DutyDb::new()),
            Tracker::new(&mut Registry::default(), None).unwrap(),
            out,
        )
    }
    const INDEX: ValidatorIndex = 5;

    /// The simulated chain: the DV's attester slot in epoch 1 and the root it depends on.
    struct Sim {
        slot: AtomicU64,
        root: Mutex<Root>,
        attester_calls: AtomicUsize,
        /// Dependent root of the proposer duties (default: `root`).
        proposer_root: Mutex<Option<Root>>,
        proposer_calls: AtomicUsize,
        /// How long the proposer duties take to answer.
        proposer_delay_ms: AtomicU64,
    }

    impl Sim {
        fn new(slot: Slot, root: Root) -> Arc<Sim> {
            Arc::new(Sim {
                slot: AtomicU64::new(slot),
                root: Mutex::new(root),
                attester_calls: AtomicUsize::new(0),
                proposer_root: Mutex::new(None),
                proposer_calls: AtomicUsize::new(0),
                proposer_delay_ms: AtomicU64::new(0),
            })
        }

        async fn serve(self: &Arc<Self>) -> String {
            let app = Router::new()
                .route("/eth/v1/beacon/states/head/validators", get(validators))
                .route("/eth/v1/validator/duties/attester/{epoch}", post(attester))
                .route("/eth/v1/validator/duties/proposer/{epoch}", get(proposer))
                .route("/eth/v1/validator/duties/sync/{epoch}", post(sync))
                .with_state(self.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            url
        }
    }

    fn head(slot: Slot, previous: Root, current: Root) -> ChainEvent {
        ChainEvent::Head(HeadEvent {
            slot,
            block: Root([slot as u8; 32]),
            state: Root::ZERO,
            epoch_transition: false,
            previous_duty_dependent_root: previous,
            current_duty_dependent_root: current,
            execution_optimistic: None,
        })
    }

    async fn validators() -> Json<Value> {
        Json(json!({ "data": [ValidatorData {
            index: INDEX,
            balance: 32_000_000_000,
            status: ValidatorStatus::ActiveOngoing,
            validator: Validator {
                pubkey: DV,
                withdrawal_credentials: Root::ZERO,
                effective_balance: 32_000_000_000,
                slashed: false,
                activation_eligibility_epoch: 0,
                activation_epoch: 0,
                exit_epoch: u64::MAX,
                withdrawable_epoch: u64::MAX,
            },
        }]}))
    }

    async fn attester(State(sim): State<Arc<Sim>>, Path(epoch): Path<u64>) -> Json<Value> {
        sim.attester_calls.fetch_add(1, Ordering::SeqCst);
        if epoch != 1 {
            return Json(json!({"dependent_root": Root([1; 32]), "data": []}));
        }
        let root = *sim.root.lock().unwrap();
        Json(json!({"dependent_root": root, "data": [AttesterDuty {
            pubkey: DV,
            validator_index: INDEX,
            committee_index: 0,
            committee_length: 4,
            committees_at_slot: 1,
            validator_committee_index: 2,
            slot: sim.slot.load(Ordering::SeqCst),
        }]}))
    }

    async fn proposer(State(sim): State<Arc<Sim>>) -> Json<Value> {
        sim.proposer_calls.fetch_add(1, Ordering::SeqCst);
        let delay = sim.proposer_delay_ms.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let root = sim
            .proposer_root
            .lock()
            .unwrap()
            .unwrap_or(*sim.root.lock().unwrap());
        Json(json!({"dependent_root": root, "data": []}))
    }

    async fn sync() -> Json<Value> {
        Json(json!({"data": []}))
    }

    #[tokio::test]
    async fn a_changed_dependent_root_reschedules_the_epoch_without_firing_twice() {
        let sim = Sim::new(12, Root([2; 32]));
        let url = sim.serve().await;

        // 1-second slots; now is slot 6 of epoch 0: the DV attests in epoch 1.
        let genesis = SystemClock.now_ms() / 1000 - 6;
        let schedule = altair_schedule(genesis, 1);
        let clock = SlotClock::of(&schedule);
        let (out, mut fired) = mpsc::channel(16);
        let scheduler = dv_scheduler(&url, &schedule, out);
        let (events, events_rx) = mpsc::channel(4);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(scheduler.run_with_events(events_rx, stop_rx));

        let calls = || sim.attester_calls.load(Ordering::SeqCst);
        let settle = || tokio::time::sleep(Duration::from_millis(300));
        while calls() < 2 {
            settle().await;
        }
        // The same dependent roots: nothing is fetched again.
        events
            .send(head(6, Root([1; 32]), Root([2; 32])))
            .await
            .unwrap();
        settle().await;
        assert_eq!(calls(), 2);
        // Reorg: epoch 1's duties now depend on another root and the DV attests at slot 9.
        sim.slot.store(9, Ordering::SeqCst);
        *sim.root.lock().unwrap() = Root([3; 32]);
        events
            .send(head(6, Root([1; 32]), Root([3; 32])))
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(6), fired.recv())
            .await
            .expect("a duty fires")
            .unwrap();
        assert_eq!(first.duty, Duty::new(9, DutyKind::Attester));
        match &first.defs {
            DutyDefs::Attester(d) => assert_eq!(d[0].validator_index, INDEX),
            other => panic!("unexpected {other:?}"),
        }
        assert!(calls() >= 3, "epoch 1 fetched again");
        // A chain_reorg event re-fetches too; slot 9 is not fired again and the old slot 12
        // never fires.
        let before = calls();
        events
            .send(ChainEvent::Reorg(ChainReorgEvent {
                slot: 9,
                depth: 1,
                old_head_block: Root([8; 32]),
                new_head_block: Root([9; 32]),
                old_head_state: Root::ZERO,
                new_head_state: Root::ZERO,
                epoch: 1,
                execution_optimistic: None,
            }))
            .await
            .unwrap();
        let until = clock.slot_start_ms(13);
        while SystemClock.now_ms() < until {
            if let Ok(Some(d)) =
                tokio::time::timeout(Duration::from_millis(200), fired.recv()).await
            {
                panic!("{} fired after the reorg", d.duty);
            }
        }
        assert!(calls() > before, "chain_reorg re-fetches the epoch");
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// The first head event of an epoch finds the proposer duties' dependent root changed (as
    /// Lodestar 1.5.1's next-epoch proposer duties always do): only the proposer duties are
    /// fetched again, and the slot's attester duty fires at the head event, not at 1/3 of the
    /// slot after the re-fetch.
    #[tokio::test]
    async fn a_stale_proposer_part_neither_delays_nor_resets_the_heads_attester_duty() {
        // 3-second slots: the 1/3-slot fallback is 1 s after the slot start.
        let now_s = SystemClock.now_ms() / 1000;
        let schedule = altair_schedule(now_s + 1 - 9 * 3, 3);
        let clock = SlotClock::of(&schedule);
        // Slot 8 (the first of epoch 1) is a slot or less away; the DV attests in slot 9.
        let sim = Sim::new(9, Root([2; 32]));
        *sim.proposer_root.lock().unwrap() = Some(Root([4; 32]));
        let url = sim.serve().await;
        let (out, mut fired) = mpsc::channel(16);
        let scheduler = dv_scheduler(&url, &schedule, out);
        let (events, events_rx) = mpsc::channel(4);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(scheduler.run_with_events(events_rx, stop_rx));
        while sim.attester_calls.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let proposer_calls = sim.proposer_calls.load(Ordering::SeqCst);
        // The proposer re-fetch takes 2 s.
        sim.proposer_delay_ms.store(2_000, Ordering::SeqCst);
        let start = clock.slot_start_ms(9);
        while SystemClock.now_ms() < start + 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Slot 9's head: the attester roots of epochs 1 and 2 are unchanged, epoch 1's proposer
        // root is not.
        events
            .send(head(9, Root([2; 32]), Root([1; 32])))
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(3), fired.recv())
            .await
            .expect("a duty fires")
            .unwrap();
        let at = SystemClock.now_ms();
        assert_eq!(first.duty, Duty::new(9, DutyKind::Attester));
        assert!(
            at < start + 600,
            "fired {} ms into the slot, not at its head event",
            at - start
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            sim.proposer_calls.load(Ordering::SeqCst),
            proposer_calls + 1,
            "the proposer duties are fetched again"
        );
        assert_eq!(
            sim.attester_calls.load(Ordering::SeqCst),
            2,
            "the attester duties are not"
        );
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// At an epoch's start the next epoch's duties are fetched only after the first slot's
    /// attester duty fired at its head event: the slow next-epoch answers do not hold it back.
    #[tokio::test]
    async fn the_next_epochs_duties_wait_for_the_first_slots_head_event() {
        // 3-second slots; slot 8, the first of epoch 1, starts in about a second.
        let now_s = SystemClock.now_ms() / 1000;
        let schedule = altair_schedule(now_s + 1 - 8 * 3, 3);
        let clock = SlotClock::of(&schedule);
        // The DV attests in slot 8.
        let sim = Sim::new(8, Root([2; 32]));
        let url = sim.serve().await;
        let (out, mut fired) = mpsc::channel(16);
        let scheduler = dv_scheduler(&url, &schedule, out);
        let (events, events_rx) = mpsc::channel(4);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(scheduler.run_with_events(events_rx, stop_rx));
        // Epochs 0 and 1 resolved.
        while sim.attester_calls.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // From now on the beacon node takes 2 s to answer proposer duties (epoch 2's).
        sim.proposer_delay_ms.store(2_000, Ordering::SeqCst);
        let start = clock.slot_start_ms(8);
        while SystemClock.now_ms() < start + 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            sim.attester_calls.load(Ordering::SeqCst),
            2,
            "epoch 2 is not fetched before slot 8's attester duty fired"
        );
        events
            .send(head(8, Root([2; 32]), Root([2; 32])))
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(3), fired.recv())
            .await
            .expect("a duty fires")
            .unwrap();
        let at = SystemClock.now_ms();
        assert_eq!(first.duty, Duty::new(8, DutyKind::Attester));
        assert!(
            at < start + 600,
            "fired {} ms into the slot, not at its head event",
            at - start
        );
        // Then epoch 2 is fetched.
        let deadline = SystemClock.now_ms() + 2_000;
        while sim.attester_calls.load(Ordering::SeqCst) < 3 {
            assert!(
                SystemClock.now_ms() < deadline,
                "epoch 2 is fetched after the duty"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// A scheduler queue of `duties` (slot, kind) at their usual times, in firing order.
    fn queue_of(clock: &SlotClock, duties: &[(Slot, DutyKind)]) -> Vec<(u64, ScheduledDuty)> {
        let mut queue: Vec<_> = duties
            .iter()
            .map(|&(slot, kind)| {
                let duty = Duty::new(slot, kind);
                let defs = match kind {
                    DutyKind::SyncMessage => DutyDefs::SyncMessage(vec![]),
                    _ => DutyDefs::Attester(vec![]),
                };
                (fire_at_ms(clock, duty), ScheduledDuty { duty, defs })
            })
            .collect();
        queue.sort_by_key(|(t, d)| (*t, d.duty));
        queue
    }

    #[test]
    fn the_slots_head_event_makes_its_attester_and_sync_duties_due_now() {
        let schedule = altair_schedule(1_000, 3);
        let clock = SlotClock::of(&schedule);
        let (out, _fired) = mpsc::channel(16);
        let mut scheduler = dv_scheduler("http://127.0.0.1:9", &schedule, out);
        scheduler.queue = queue_of(
            &clock,
            &[
                (3, DutyKind::Proposer),
                (3, DutyKind::Attester),
                (3, DutyKind::SyncMessage),
                (4, DutyKind::Attester),
            ],
        );
        let before = scheduler.queue.clone();
        let now = clock.slot_start_ms(3) + 150;

        // A head for the next slot seen early (skewed BN) changes nothing.
        scheduler.advance_on_head(4, now);
        assert_eq!(scheduler.queue, before);

        scheduler.advance_on_head(3, now);
        let times: Vec<(Duty, u64)> = scheduler.queue.iter().map(|(t, d)| (d.duty, *t)).collect();
        assert_eq!(
            times,
            vec![
                (Duty::new(3, DutyKind::Proposer), clock.slot_start_ms(3)),
                (Duty::new(3, DutyKind::Attester), now),
                (Duty::new(3, DutyKind::SyncMessage), now),
                (
                    Duty::new(4, DutyKind::Attester),
                    fire_at_ms(&clock, Duty::new(4, DutyKind::Attester))
                ),
            ]
        );
    }
    #[test]
    fn the_clusters_own_block_makes_only_its_slots_attester_duty_due_now() {
        let schedule = altair_schedule(1_000, 3);
        let clock = SlotClock::of(&schedule);
        let (out, _fired) = mpsc::channel(16);
        let heads = Heads::new();
        let mut scheduler =
            dv_scheduler("http://127.0.0.1:9", &schedule, out).with_heads(heads.clone());
        scheduler.queue = queue_of(
            &clock,
            &[
                (3, DutyKind::Attester),
                (3, DutyKind::SyncMessage),
                (4, DutyKind::Attester),
            ],
        );
        let before = scheduler.queue.clone();
        let now = clock.slot_start_ms(3) + 150;
        let block = OwnBlock {
            root: Root([2; 32]),
            parent_root: Root([1; 32]),
        };

        // No block of ours for the slot: nothing moves.
        scheduler.advance_on_own_block(3, now);
        assert_eq!(scheduler.queue, before);
        // Our block of the next slot (decided early by a skewed clock) moves nothing either.
        heads.record_own(4, block);
        scheduler.advance_on_own_block(4, now);
        assert_eq!(scheduler.queue, before);

        heads.record_own(3, block);
        scheduler.advance_on_own_block(3, now);
        let times: Vec<(Duty, u64)> = scheduler.queue.iter().map(|(t, d)| (d.duty, *t)).collect();
        let at = |slot, kind| fire_at_ms(&clock, Duty::new(slot, kind));
        assert_eq!(
            times,
            vec![
                (Duty::new(3, DutyKind::Attester), now),
                (
                    Duty::new(3, DutyKind::SyncMessage),
                    at(3, DutyKind::SyncMessage)
                ),
                (Duty::new(4, DutyKind::Attester), at(4, DutyKind::Attester)),
            ]
        );
    }
}
