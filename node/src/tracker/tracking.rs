//! Stage tracking: the records of every duty and DV validator, the inclusion checks and the
//! verdicts (see the [module docs](super)).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use prometheus_client::registry::Registry;

use super::output::{DutyLog, DutyReport, KindLabel, KindShare, Metrics, Reason, Stage, SUCCESS};
use crate::clock::unix_now;
use crate::duty::{Duty, DutyDefs, ScheduledDuty};
use crate::eth::types::{AttestationData, BlsPubkey, Preset, Slot, ValidatorIndex};
use crate::value::Signed;

/// What the chain must show for a broadcast object to count as included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inclusion {
    /// A block attestation with this data and the DV's committee bit set, within the window.
    Attestation {
        /// The signed data.
        data: AttestationData,
        /// The DV's position in its committee.
        committee_bit: u64,
    },
    /// The canonical block of the duty's slot is by this proposer.
    Block {
        /// The DV's validator index.
        proposer_index: ValidatorIndex,
    },
    /// The DV's bit in the sync aggregate of the block at the duty's slot + 1.
    SyncMessage {
        /// The DV's validator index.
        validator_index: ValidatorIndex,
    },
}

impl Inclusion {
    /// What to look for on chain after broadcasting `signed` (`None` for a RANDAO reveal,
    /// which reaches the chain inside the block, and for what the chain does not show by its
    /// signer: selection proofs, aggregates, contributions, exits — those succeed when the
    /// beacon node accepts them).
    pub fn of<P: Preset>(signed: &Signed<P>) -> Option<Inclusion> {
        match signed {
            Signed::Attestation(a) => {
                a.aggregation_bits
                    .iter()
                    .position(|b| b)
                    .map(|bit| Inclusion::Attestation {
                        data: a.data,
                        committee_bit: bit as u64,
                    })
            }
            Signed::Block(b) => Some(Inclusion::Block {
                proposer_index: b.message.proposer_index,
            }),
            Signed::SyncMessage(m) => Some(Inclusion::SyncMessage {
                validator_index: m.validator_index,
            }),
            Signed::Randao(_)
            | Signed::SelectionProof(_)
            | Signed::SyncSelectionProof(_)
            | Signed::AggregateAndProof(_)
            | Signed::ContributionAndProof(_)
            | Signed::Exit(_) => None,
        }
    }

    /// First slot whose block may include the object of a duty at `slot`.
    fn first_slot(&self, slot: Slot) -> Slot {
        match self {
            Inclusion::Attestation { .. } | Inclusion::SyncMessage { .. } => slot + 1,
            Inclusion::Block { .. } => slot,
        }
    }

    /// Last slot whose block may include the object of a duty at `slot`.
    fn last_slot(&self, slot: Slot, window: u64) -> Slot {
        match self {
            Inclusion::Attestation { .. } => slot + window,
            Inclusion::Block { .. } => slot,
            Inclusion::SyncMessage { .. } => slot + 1,
        }
    }
}

/// What the chain watcher read from one canonical block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedBlock {
    /// Slot of the block.
    pub slot: Slot,
    /// Its proposer.
    pub proposer_index: ValidatorIndex,
    /// Its attestations: data and the set committee bits.
    pub attestations: Vec<(AttestationData, BTreeSet<u64>)>,
    /// Validators whose sync committee bit is set (`None`: committee unknown).
    pub sync_participants: Option<BTreeSet<ValidatorIndex>>,
}

/// Tracker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Slots after its slot at which a duty that was not broadcast is closed; also the grace
    /// after the inclusion window before an unobserved broadcast closes as unknown.
    pub track_slots: u64,
    /// Slots after its slot in which an attestation may be included (`SLOTS_PER_EPOCH`).
    pub inclusion_window: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            track_slots: 4,
            inclusion_window: 32,
        }
    }
}

#[derive(Default)]
struct ValRecord {
    index: Option<ValidatorIndex>,
    stages: BTreeMap<Stage, u128>,
    failures: Vec<(Reason, String)>,
    shares: BTreeSet<u64>,
    expect: Option<Inclusion>,
    included: Option<(Slot, u64)>,
    miss: Option<String>,
    closed: bool,
}

#[derive(Default)]
struct Record {
    stages: BTreeMap<Stage, u128>,
    failures: Vec<(Reason, String)>,
    consensus: Option<(u64, f64)>,
    broadcast_delay: Option<f64>,
    validators: BTreeMap<BlsPubkey, ValRecord>,
}

#[derive(Default)]
struct State {
    records: HashMap<Duty, Record>,
    /// Every canonical block up to this slot was handed to [`Tracker::observe`].
    observed_through: Option<Slot>,
}

struct Inner {
    config: TrackerConfig,
    state: Mutex<State>,
    metrics: Metrics,
    log: Option<DutyLog>,
}

/// Cheaply cloneable handle; see the [module docs](super).
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

fn now_ms() -> u128 {
    unix_now().as_millis()
}

/// How [`Tracker`] closes validators.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Close what is due at this wall-clock slot.
    Due(Slot),
    /// Close everything (shutdown).
    All,
}

impl Tracker {
    /// A tracker with the default [`TrackerConfig`] registering its metrics in `registry`,
    /// appending closed outcomes to `duty_log` (JSON lines) if given.
    pub fn new(registry: &mut Registry, duty_log: Option<&Path>) -> Result<Tracker> {
        Tracker::with_config(registry, duty_log, TrackerConfig::default())
    }

    /// A tracker with `config`; see [`Tracker::new`].
    pub fn with_config(
        registry: &mut Registry,
        duty_log: Option<&Path>,
        config: TrackerConfig,
    ) -> Result<Tracker> {
        let log = duty_log.map(DutyLog::open).transpose()?;
        Ok(Tracker {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                metrics: Metrics::new(registry),
                log,
            }),
        })
    }

    fn with<T>(&self, duty: Duty, f: impl FnOnce(&mut Record) -> T) -> T {
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        f(state.records.entry(duty).or_default())
    }

    fn with_validator<T>(
        &self,
        duty: Duty,
        pubkey: BlsPubkey,
        f: impl FnOnce(&mut ValRecord) -> T,
    ) -> T {
        self.with(duty, |r| f(r.validators.entry(pubkey).or_default()))
    }

    /// The scheduler fired `d`: records the stage and the duty's DV validators.
    pub fn scheduled(&self, d: &ScheduledDuty) {
        let validators: Vec<(BlsPubkey, ValidatorIndex)> = match &d.defs {
            DutyDefs::Attester(defs)
            | DutyDefs::SelectionProof(defs)
            | DutyDefs::Aggregation(defs) => {
                defs.iter().map(|x| (x.pubkey, x.validator_index)).collect()
            }
            DutyDefs::Proposer(p) | DutyDefs::Randao(p) => vec![(p.pubkey, p.validator_index)],
            DutyDefs::SyncMessage(defs) => {
                defs.iter().map(|x| (x.pubkey, x.validator_index)).collect()
            }
            DutyDefs::SyncSelectionProof(defs) | DutyDefs::SyncContribution(defs) => {
                defs.iter().map(|x| (x.pubkey, x.validator_index)).collect()
            }
        };
        self.with(d.duty, |r| {
            r.stages.entry(Stage::Scheduled).or_insert_with(now_ms);
            for (pubkey, index) in validators {
                r.validators.entry(pubkey).or_default().index = Some(index);
            }
        });
    }

    /// `duty` reached `stage` now. Per-validator stages given here count for the duty only
    /// (timing metrics); use [`Tracker::validator_stage`] for them.
    pub fn stage(&self, duty: Duty, stage: Stage) {
        self.with(duty, |r| {
            r.stages.entry(stage).or_insert_with(now_ms);
        });
    }

    /// `pubkey`'s part of `duty` reached `stage` now.
    pub fn validator_stage(&self, duty: Duty, pubkey: BlsPubkey, stage: Stage) {
        self.with_validator(duty, pubkey, |v| {
            v.stages.entry(stage).or_insert_with(now_ms);
        });
    }

    /// `duty` failed for `reason` (for every validator without a failure of its own).
    pub fn fail(&self, duty: Duty, reason: Reason, detail: &str) {
        self.with(duty, |r| r.failures.push((reason, detail.to_string())));
    }

    /// `duty` failed for `reason` for the validator `pubkey`.
    pub fn fail_validator(&self, duty: Duty, pubkey: BlsPubkey, reason: Reason, detail: &str) {
        self.with_validator(duty, pubkey, |v| {
            v.failures.push((reason, detail.to_string()))
        });
    }

    /// Consensus of `duty` decided in `round` after `elapsed`.
    pub fn consensus(&self, duty: Duty, round: u64, elapsed: Duration) {
        let kind = KindLabel {
            kind: duty.kind.to_string(),
        };
        self.inner
            .metrics
            .rounds
            .get_or_create(&kind)
            .observe(round as f64);
        self.inner
            .metrics
            .consensus_duration
            .get_or_create(&kind)
            .observe(elapsed.as_secs_f64());
        self.with(duty, |r| r.consensus = Some((round, elapsed.as_secs_f64())));
    }

    /// A valid partial signature of `share_index` for `pubkey` arrived for `duty`.
    pub fn partial(&self, duty: Duty, pubkey: BlsPubkey, share_index: u64) {
        let first = self.with_validator(duty, pubkey, |v| v.shares.insert(share_index));
        if first {
            self.inner
                .metrics
                .partials
                .get_or_create(&KindShare {
                    kind: duty.kind.to_string(),
                    share: share_index.to_string(),
                })
                .inc();
        }
    }

    /// The beacon node accepted a signed object of `duty` `delay` after the slot started
    /// (duty-wide: the broadcast delay metric).
    pub fn broadcast(&self, duty: Duty, delay: Duration) {
        self.inner
            .metrics
            .broadcast_delay
            .get_or_create(&KindLabel {
                kind: duty.kind.to_string(),
            })
            .observe(delay.as_secs_f64());
        self.with(duty, |r| {
            r.broadcast_delay.get_or_insert(delay.as_secs_f64());
            r.stages.entry(Stage::Broadcast).or_insert_with(now_ms);
        });
    }

    /// `pubkey`'s signed object of `duty` was broadcast; `expect` is what the chain watcher
    /// looks for (`None`: nothing to watch, the broadcast is the success).
    pub fn broadcast_validator(&self, duty: Duty, pubkey: BlsPubkey, expect: Option<Inclusion>) {
        self.with_validator(duty, pubkey, |v| {
            v.stages.entry(Stage::Broadcast).or_insert_with(now_ms);
            if v.expect.is_none() {
                v.expect = expect;
            }
        });
    }

    /// The first slot whose canonical block the tracker still needs, if any.
    pub fn watch_from(&self) -> Option<Slot> {
        let state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .records
            .iter()
            .flat_map(|(duty, r)| {
                r.validators.values().filter_map(move |v| match v.expect {
                    Some(e) if !v.closed && v.included.is_none() => Some(e.first_slot(duty.slot)),
                    _ => None,
                })
            })
            .min()
    }

    /// The canonical block of `slot` (`None`: the slot is empty) was read. Blocks must be given
    /// in increasing slot order, none skipped.
    pub fn observe(&self, slot: Slot, block: Option<&ObservedBlock>) {
        let window = self.inner.config.inclusion_window;
        let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        state.observed_through = Some(state.observed_through.map_or(slot, |s| s.max(slot)));
        for (duty, r) in state.records.iter_mut() {
            for v in r.validators.values_mut() {
                let Some(expect) = v.expect else { continue };
                if v.closed || v.included.is_some() {
                    continue;
                }
                if slot < expect.first_slot(duty.slot) || slot > expect.last_slot(duty.slot, window)
                {
                    continue;
                }
                let seen = match (expect, block) {
                    (
                        Inclusion::Attestation {
                            data,
                            committee_bit,
                        },
                        Some(b),
                    ) => b
                        .attestations
                        .iter()
                        .any(|(d, bits)| *d == data && bits.contains(&committee_bit)),
                    (Inclusion::Attestation { .. }, None) => false,
                    (Inclusion::Block { proposer_index }, Some(b)) => {
                        if b.proposer_index != proposer_index {
                            v.miss = Some(format!(
                                "the canonical block of slot {slot} is by validator {}",
                                b.proposer_index
                            ));
                        }
                        b.proposer_index == proposer_index
                    }
                    (Inclusion::Block { .. }, None) => {
                        v.miss = Some(format!("no canonical block at slot {slot}"));
                        false
                    }
                    (Inclusion::SyncMessage { validator_index }, Some(b)) => {
                        match &b.sync_participants {
                            Some(p) if p.contains(&validator_index) => true,
                            Some(_) => {
                                v.miss = Some(format!(
                                    "bit not set in the sync aggregate of the block at slot {slot}"
                                ));
                                false
                            }
                            None => {
                                v.miss = Some(format!(
                                    "sync committee of the block at slot {slot} unknown"
                                ));
                                false
                            }
                        }
                    }
                    (Inclusion::SyncMessage { .. }, None) => {
                        v.miss = Some(format!("no canonical block at slot {slot}"));
                        false
                    }
                };
                if seen {
                    v.included = Some((slot, slot.saturating_sub(duty.slot)));
                    v.stages.entry(Stage::Included).or_insert_with(now_ms);
                }
            }
        }
    }

    /// Closes and logs every outcome due when the wall clock is at `slot`, and returns them.
    pub fn close_due(&self, slot: Slot) -> Vec<DutyReport> {
        self.close(Closing::Due(slot))
    }

    /// Closes and logs every open outcome (at shutdown), and returns them.
    pub fn close_all(&self) -> Vec<DutyReport> {
        self.close(Closing::All)
    }

    fn close(&self, closing: Closing) -> Vec<DutyReport> {
        let config = self.inner.config;
        let mut reports = Vec::new();
        {
            let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            let observed = state.observed_through;
            let mut done = Vec::new();
            for (duty, r) in state.records.iter_mut() {
                let stale = match closing {
                    Closing::Due(now) => duty.slot.saturating_add(config.track_slots) < now,
                    Closing::All => true,
                };
                if r.validators.is_empty() {
                    if stale {
                        reports.push(report(*duty, r, None, None, &outcome_of(r, None)));
                        done.push(*duty);
                    }
                    continue;
                }
                let mut closed_now = Vec::new();
                for (pubkey, v) in r.validators.iter() {
                    if v.closed {
                        continue;
                    }
                    if let Some(o) = verdict(*duty, r, v, closing, stale, observed, config) {
                        closed_now.push((*pubkey, o));
                    }
                }
                for (pubkey, o) in closed_now {
                    let line = report(*duty, r, Some(pubkey), r.validators.get(&pubkey), &o);
                    reports.push(line);
                    if let Some(v) = r.validators.get_mut(&pubkey) {
                        v.closed = true;
                    }
                }
                // Kept until stale: late reports (a peer's partial after the threshold) must
                // not open a new record.
                if stale && r.validators.values().all(|v| v.closed) {
                    done.push(*duty);
                }
            }
            for d in done {
                state.records.remove(&d);
            }
        }
        reports.sort_by_key(|r| (r.duty, r.pubkey));
        for rep in &reports {
            self.inner.metrics.count(rep);
        }
        if let Some(log) = &self.inner.log {
            log.append(&reports);
        }
        reports
    }

    /// The chain watcher could not read a canonical block.
    pub(super) fn watch_error(&self) {
        self.inner.metrics.watch_errors.inc();
    }
}

/// An outcome: `success` or a reason with its detail.
type Outcome = Result<(), (Reason, String)>;

/// The failure of a validator (or of a duty without validators) that was not broadcast.
fn outcome_of(r: &Record, v: Option<&ValRecord>) -> Outcome {
    // A duty-wide failure report of a per-validator kind (aggregation, broadcast) names
    // another validator's failure unless the duty has only one validator.
    let single = r.validators.len() <= 1;
    if let Some((reason, detail)) = v.and_then(|v| v.failures.first()).or_else(|| {
        r.failures
            .iter()
            .find(|(reason, _)| single || reason.is_duty_wide())
    }) {
        return Err((*reason, detail.clone()));
    }
    let last = r
        .stages
        .keys()
        .filter(|s| s.is_duty_wide())
        .chain(v.into_iter().flat_map(|v| v.stages.keys()))
        .max()
        .copied();
    Err((Reason::implied_by(last), String::new()))
}

/// Whether validator `v` of `duty` closes now, and how.
fn verdict(
    duty: Duty,
    r: &Record,
    v: &ValRecord,
    closing: Closing,
    stale: bool,
    observed: Option<Slot>,
    config: TrackerConfig,
) -> Option<Outcome> {
    if v.included.is_some() {
        return Some(Ok(()));
    }
    if !v.stages.contains_key(&Stage::Broadcast) {
        return stale.then(|| outcome_of(r, Some(v)));
    }
    let Some(expect) = v.expect else {
        // Nothing to watch (RANDAO): the broadcast is the success.
        return Some(Ok(()));
    };
    let first = expect.first_slot(duty.slot);
    let last = expect.last_slot(duty.slot, config.inclusion_window);
    if observed.is_some_and(|o| o >= last) {
        let detail = v.miss.clone().unwrap_or_else(|| match expect {
            Inclusion::Attestation { .. } => {
                format!("not in any canonical block of slots {first}..={last}")
            }
            _ => format!("not in the canonical block of slot {last}"),
        });
        return Some(Err((Reason::NotIncludedOnchain, detail)));
    }
    match closing {
        Closing::All => Some(Err((
            Reason::InclusionUnknown,
            format!("the node stopped before the blocks up to slot {last} were read"),
        ))),
        Closing::Due(now) if now > last.saturating_add(config.track_slots) => Some(Err((
            Reason::InclusionUnknown,
            format!(
                "canonical blocks up to slot {last} could not be read from the beacon node \
                 (read through {})",
                observed.map_or("none".to_string(), |o| o.to_string())
            ),
        ))),
        Closing::Due(_) => None,
    }
}

fn report(
    duty: Duty,
    r: &Record,
    pubkey: Option<BlsPubkey>,
    v: Option<&ValRecord>,
    outcome: &Outcome,
) -> DutyReport {
    let mut stages: BTreeMap<Stage, u128> = r
        .stages
        .iter()
        .filter(|(s, _)| s.is_duty_wide())
        .map(|(s, t)| (*s, *t))
        .collect();
    if let Some(v) = v {
        stages.extend(v.stages.iter().map(|(s, t)| (*s, *t)));
    }
    let (outcome, detail) = match outcome {
        Ok(()) => (SUCCESS.to_string(), None),
        Err((reason, detail)) => (
            reason.as_str().to_string(),
            (!detail.is_empty()).then(|| detail.clone()),
        ),
    };
    DutyReport {
        ts_ms: now_ms(),
        duty,
        pubkey,
        validator_index: v.and_then(|v| v.index),
        outcome,
        detail,
        stages,
        consensus_round: r.consensus.map(|c| c.0),
        consensus_seconds: r.consensus.map(|c| c.1),
        shares: v
            .map(|v| v.shares.iter().copied().collect())
            .unwrap_or_default(),
        broadcast_delay_seconds: r.broadcast_delay,
        inclusion_slot: v.and_then(|v| v.included.map(|i| i.0)),
        inclusion_delay: v.and_then(|v| v.included.map(|i| i.1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duty::{AttesterDef, DutyKind, ProposerDef, SyncDef};
    use crate::eth::types::{Checkpoint, Root};

    fn data(slot: Slot) -> AttestationData {
        AttestationData {
            slot,
            index: 0,
            beacon_block_root: Root([slot as u8; 32]),
            source: Checkpoint::default(),
            target: Checkpoint {
                epoch: slot / 8,
                root: Root([2; 32]),
            },
        }
    }

    fn attester(pk: u8, index: ValidatorIndex, bit: u64) -> AttesterDef {
        AttesterDef {
            pubkey: BlsPubkey([pk; 48]),
            validator_index: index,
            committee_index: 0,
            committee_length: 16,
            committees_at_slot: 1,
            validator_committee_index: bit,
        }
    }

    fn metrics(r: &Registry) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, r).unwrap();
        s
    }

    fn config() -> TrackerConfig {
        TrackerConfig {
            track_slots: 4,
            inclusion_window: 8,
        }
    }

    #[test]
    fn each_validator_gets_an_outcome_from_its_stages_and_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("duties.jsonl");
        let mut registry = Registry::default();
        let t = Tracker::with_config(&mut registry, Some(&log), config()).unwrap();
        let (a, b) = (attester(1, 10, 2), attester(2, 11, 5));
        let att = Duty::new(3, DutyKind::Attester);
        t.scheduled(&ScheduledDuty {
            duty: att,
            defs: DutyDefs::Attester(vec![a, b]),
        });
        t.stage(att, Stage::VcRequest);
        t.stage(att, Stage::Fetched);
        t.consensus(att, 1, Duration::from_millis(30));
        t.stage(att, Stage::Decided);
        t.validator_stage(att, a.pubkey, Stage::LocalSigned);
        for share in [1, 2, 4] {
            t.partial(att, a.pubkey, share);
        }
        t.validator_stage(att, a.pubkey, Stage::LastPartial);
        t.validator_stage(att, a.pubkey, Stage::Aggregated);
        t.broadcast(att, Duration::from_millis(1500));
        t.broadcast_validator(
            att,
            a.pubkey,
            Some(Inclusion::Attestation {
                data: data(3),
                committee_bit: 2,
            }),
        );
        // B's VC never signed.
        let sync = Duty::new(3, DutyKind::SyncMessage);
        let c = SyncDef {
            pubkey: BlsPubkey([3; 48]),
            validator_index: 12,
        };
        t.scheduled(&ScheduledDuty {
            duty: sync,
            defs: DutyDefs::SyncMessage(vec![c]),
        });
        t.broadcast_validator(
            sync,
            c.pubkey,
            Some(Inclusion::SyncMessage {
                validator_index: 12,
            }),
        );
        let prop = Duty::new(4, DutyKind::Proposer);
        let d = ProposerDef {
            pubkey: BlsPubkey([4; 48]),
            validator_index: 13,
        };
        t.scheduled(&ScheduledDuty {
            duty: prop,
            defs: DutyDefs::Proposer(d),
        });
        t.broadcast_validator(
            prop,
            d.pubkey,
            Some(Inclusion::Block { proposer_index: 13 }),
        );
        let fetch = Duty::new(4, DutyKind::Attester);
        t.scheduled(&ScheduledDuty {
            duty: fetch,
            defs: DutyDefs::Attester(vec![attester(5, 14, 0)]),
        });
        t.fail(fetch, Reason::FetchBnError, "connection refused");

        assert_eq!(t.watch_from(), Some(4), "the proposer's block slot");
        // Slot 4: a block by validator 99 with A's bit for the decided data (another
        // attestation with A's bit for other data does not count) and C's sync bit.
        let mut other = data(3);
        other.beacon_block_root = Root([7; 32]);
        t.observe(
            4,
            Some(&ObservedBlock {
                slot: 4,
                proposer_index: 99,
                attestations: vec![(other, [2].into()), (data(3), [1, 2].into())],
                sync_participants: Some([12].into()),
            }),
        );
        // A and C are decided by the chain; the proposer's slot is read: not included.
        let early = t.close_due(5);
        let outcomes = |reports: &[DutyReport]| -> Vec<(Slot, DutyKind, Option<u64>, String)> {
            reports
                .iter()
                .map(|r| {
                    (
                        r.duty.slot,
                        r.duty.kind,
                        r.validator_index,
                        r.outcome.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(
            outcomes(&early),
            vec![
                (3, DutyKind::Attester, Some(10), "success".into()),
                (3, DutyKind::SyncMessage, Some(12), "success".into()),
                (
                    4,
                    DutyKind::Proposer,
                    Some(13),
                    "not_included_onchain".into()
                ),
            ]
        );
        assert_eq!(early[0].inclusion_delay, Some(1));
        assert_eq!(early[0].inclusion_slot, Some(4));
        assert_eq!(early[0].shares, vec![1, 2, 4]);
        assert_eq!(early[0].consensus_round, Some(1));
        assert!(early[0].stages.contains_key(&Stage::VcRequest));
        assert!(early[0].stages.contains_key(&Stage::LastPartial));
        assert!(early[0].stages.contains_key(&Stage::Included));
        assert_eq!(
            early[2].detail.as_deref(),
            Some("the canonical block of slot 4 is by validator 99")
        );
        // Late partials of closed validators (the sync duty is closed entirely) change nothing.
        t.partial(att, a.pubkey, 3);
        t.partial(sync, c.pubkey, 2);
        // B and the failed fetch close once their slots are old.
        assert!(t.close_due(7).is_empty());
        let late = t.close_due(9);
        assert_eq!(
            outcomes(&late),
            vec![
                (
                    3,
                    DutyKind::Attester,
                    Some(11),
                    "no_local_vc_signature".into()
                ),
                (4, DutyKind::Attester, Some(14), "fetch_bn_error".into()),
            ]
        );
        assert!(
            !late[0].stages.contains_key(&Stage::Broadcast),
            "A's broadcast is not B's"
        );
        assert_eq!(t.watch_from(), None);
        assert!(t.inner.state.lock().unwrap().records.is_empty());

        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<DutyReport> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], early[0]);
        assert!(text.contains(r#""validator_index":"10""#));
        assert!(text.contains(r#""inclusion_slot":"4","inclusion_delay":1"#));
        assert!(text.contains("\"detail\":\"connection refused\""));
        let m = metrics(&registry);
        for line in [
            "duty_total{kind=\"attester\",outcome=\"success\"} 1",
            "duty_total{kind=\"attester\",outcome=\"no_local_vc_signature\"} 1",
            "duty_failures_total{kind=\"attester\",reason=\"fetch_bn_error\"} 1",
            "duty_failures_total{kind=\"proposer\",reason=\"not_included_onchain\"} 1",
            "duty_inclusion_delay_slots_count{kind=\"sync_message\"} 1",
        ] {
            assert!(m.contains(line), "{line} missing in\n{m}");
        }
    }

    #[test]
    fn attestations_wait_for_the_window_and_unread_blocks_are_unknown() {
        let mut registry = Registry::default();
        let t = Tracker::with_config(&mut registry, None, config()).unwrap();
        let a = attester(1, 10, 2);
        let duty = Duty::new(10, DutyKind::Attester);
        t.scheduled(&ScheduledDuty {
            duty,
            defs: DutyDefs::Attester(vec![a]),
        });
        let expect = Some(Inclusion::Attestation {
            data: data(10),
            committee_bit: 2,
        });
        t.broadcast_validator(duty, a.pubkey, expect);
        // Empty blocks through slot 17: the window (11..=18) is not over.
        for slot in 11..=17 {
            t.observe(slot, None);
        }
        assert!(t.close_due(18).is_empty());
        t.observe(18, None);
        let r = t.close_due(19);
        assert_eq!(r[0].outcome, "not_included_onchain");
        assert_eq!(
            r[0].detail.as_deref(),
            Some("not in any canonical block of slots 11..=18")
        );

        // Nothing read: unknown after the window and the grace, or at shutdown.
        let t = Tracker::with_config(&mut Registry::default(), None, config()).unwrap();
        let late = Duty::new(30, DutyKind::Attester);
        t.broadcast_validator(late, a.pubkey, expect);
        let stop = Duty::new(31, DutyKind::Attester);
        t.broadcast_validator(stop, a.pubkey, expect);
        assert!(t.close_due(42).is_empty());
        let r = t.close_due(43);
        assert_eq!(
            (r[0].duty, r[0].outcome.as_str()),
            (late, "inclusion_unknown")
        );
        let r = t.close_all();
        assert_eq!(
            (r[0].duty, r[0].outcome.as_str()),
            (stop, "inclusion_unknown")
        );
        assert!(r[0].detail.as_deref().unwrap().contains("stopped"));
    }
}
