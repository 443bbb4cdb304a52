//! The remote-signer checks of `e2e-local --signer remote`: which aggregation and sync
//! contribution duties the DVs have, computed independently of dvnode, and which the dvnodes
//! performed.
//!
//! The DV keys of the run are interop keys, so the harness knows each DV's whole secret key and
//! computes its selection proofs itself (BLS signatures are unique: they equal the proofs the
//! cluster combines from its shares). With the committees recorded from the beacon node this
//! gives the aggregator duties (`validator × slot`, `is_aggregator`) and the sync contribution
//! duties (`validator × slot` with at least one subcommittee whose proof elects it). The dvnodes'
//! duty logs say which duties they took (one line per DV and duty) and which they performed
//! (`success`: the beacon node accepted the signed aggregate / contribution, after validating the
//! selection proof, the aggregator's signature and the aggregate signature).

use std::collections::{BTreeMap, BTreeSet};

use dvnode::eth::aggregate::{
    is_aggregator, is_sync_committee_aggregator, sync_subcommittees, SyncAggregatorSelectionData,
};
use dvnode::eth::signing::ForkSchedule;
use dvnode::eth::types::{BlsSignature, Epoch, Preset, Slot, ValidatorIndex};
use dvnode::keys::{interop::interop_secret, tbls};
use serde::Serialize;

use crate::chain::ChainRecord;
use crate::dutylog::DutyLog;
use dvnode::duty::DutyKind;

/// `(slot, validator)`.
pub type SlotValidator = (Slot, ValidatorIndex);

fn sign(validator: ValidatorIndex, root: &[u8; 32]) -> BlsSignature {
    BlsSignature(tbls::sign(&interop_secret(validator), root).to_bytes())
}

/// The aggregation duties of the interop validators `validators` in `epochs`: committee
/// members whose selection proof elects them.
pub fn expected_aggregations<P: Preset>(
    chain: &ChainRecord<P>,
    schedule: &ForkSchedule,
    validators: &[ValidatorIndex],
    epochs: std::ops::RangeInclusive<Epoch>,
) -> BTreeSet<SlotValidator> {
    let mut out = BTreeSet::new();
    for epoch in epochs {
        for c in chain.committees.get(&epoch).into_iter().flatten() {
            for v in c.validators.iter().filter(|v| validators.contains(v)) {
                let proof = sign(*v, &schedule.selection_proof_signing_root(c.slot).0);
                if is_aggregator(c.validators.len() as u64, &proof) {
                    out.insert((c.slot, *v));
                }
            }
        }
    }
    out
}

/// The sync contribution duties of `validators` in `slots`: sync committee members with at
/// least one subcommittee whose selection proof elects them. The members signing at slot `s`
/// are those of the committee of slot `s + 1` (the next period's at the end of a period).
pub fn expected_contributions<P: Preset>(
    chain: &ChainRecord<P>,
    schedule: &ForkSchedule,
    validators: &[ValidatorIndex],
    slots: std::ops::RangeInclusive<Slot>,
) -> BTreeSet<SlotValidator> {
    let mut out = BTreeSet::new();
    for slot in slots {
        let period = chain.period_of(chain.epoch_of(slot + 1));
        let Some(committee) = chain.sync_committees.get(&period) else {
            continue;
        };
        for v in validators {
            let positions: Vec<u64> = committee
                .iter()
                .enumerate()
                .filter(|(_, m)| *m == v)
                .map(|(i, _)| i as u64)
                .collect();
            let elected = sync_subcommittees::<P>(&positions).into_iter().any(|sub| {
                let data = SyncAggregatorSelectionData {
                    slot,
                    subcommittee_index: sub,
                };
                let proof = sign(*v, &schedule.sync_selection_proof_signing_root(&data).0);
                is_sync_committee_aggregator::<P>(&proof)
            });
            if elected {
                out.insert((slot, *v));
            }
        }
    }
    out
}

/// The duties of `kind` the dvnodes logged (any outcome), and those some node performed.
pub fn logged(
    logs: &[DutyLog],
    kind: DutyKind,
) -> (BTreeSet<SlotValidator>, BTreeSet<SlotValidator>) {
    let mut all = BTreeSet::new();
    let mut ok = BTreeSet::new();
    for r in logs.iter().flat_map(|l| &l.records) {
        if r.duty.kind != kind {
            continue;
        }
        if let Some(v) = r.validator_index {
            all.insert((r.duty.slot, v));
            if r.outcome == "success" {
                ok.insert((r.duty.slot, v));
            }
        }
    }
    (all, ok)
}

/// How the dvnodes did on one kind of aggregation duty.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AggregationStats {
    /// Duties computed from the selection proofs (in the analysed slots).
    pub expected: usize,
    /// Of those, performed by some node (the beacon node accepted the signed object).
    pub performed: usize,
    /// Expected duties no node performed, with the outcomes the nodes logged.
    pub missed: Vec<String>,
    /// Duties the dvnodes took (in the analysed slots) that the selection proofs do not imply.
    pub unexpected: Vec<SlotValidator>,
    /// Expected duties no dvnode took.
    pub not_taken: Vec<SlotValidator>,
}

impl AggregationStats {
    /// Compares `expected` with what `logs` show for `kind`, within `slots`.
    pub fn of(
        expected: &BTreeSet<SlotValidator>,
        logs: &[DutyLog],
        kind: DutyKind,
        slots: std::ops::RangeInclusive<Slot>,
    ) -> AggregationStats {
        let (taken, ok) = logged(logs, kind);
        let taken: BTreeSet<SlotValidator> = taken
            .into_iter()
            .filter(|(s, _)| slots.contains(s))
            .collect();
        let mut outcomes: BTreeMap<SlotValidator, Vec<String>> = BTreeMap::new();
        for r in logs.iter().flat_map(|l| &l.records) {
            if r.duty.kind == kind {
                if let Some(v) = r.validator_index {
                    outcomes
                        .entry((r.duty.slot, v))
                        .or_default()
                        .push(r.outcome.clone());
                }
            }
        }
        AggregationStats {
            expected: expected.len(),
            performed: expected.iter().filter(|d| ok.contains(d)).count(),
            missed: expected
                .iter()
                .filter(|d| !ok.contains(d))
                .map(|(s, v)| {
                    format!(
                        "slot {s} validator {v}: {}",
                        outcomes
                            .get(&(*s, *v))
                            .map(|o| o.join(", "))
                            .unwrap_or_else(|| "no record".into())
                    )
                })
                .collect(),
            unexpected: taken.difference(expected).copied().collect(),
            not_taken: expected.difference(&taken).copied().collect(),
        }
    }

    /// Every expected duty performed, and the nodes took exactly the expected duties.
    pub fn complete(&self) -> bool {
        self.expected > 0
            && self.performed == self.expected
            && self.unexpected.is_empty()
            && self.not_taken.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dutylog::DutyLog;

    #[test]
    fn compares_expected_with_logged_duties() {
        let logs = vec![
            DutyLog::parse(concat!(
                r#"{"ts_ms":1,"duty":{"slot":"9","kind":"aggregation"},"validator_index":"56","outcome":"success","stages":{},"shares":[]}"#,
                "\n",
                r#"{"ts_ms":1,"duty":{"slot":"10","kind":"aggregation"},"validator_index":"57","outcome":"broadcast_bn_error","stages":{},"shares":[]}"#,
                "\n",
                r#"{"ts_ms":1,"duty":{"slot":"11","kind":"aggregation"},"validator_index":"58","outcome":"success","stages":{},"shares":[]}"#,
            )),
            DutyLog::parse(
                r#"{"ts_ms":1,"duty":{"slot":"10","kind":"attester"},"validator_index":"57","outcome":"success","stages":{},"shares":[]}"#,
            ),
        ];
        let expected: BTreeSet<SlotValidator> = [(9, 56), (10, 57), (12, 59)].into();
        let s = AggregationStats::of(&expected, &logs, DutyKind::Aggregation, 9..=12);
        assert_eq!(s.expected, 3);
        assert_eq!(s.performed, 1);
        assert_eq!(s.unexpected, vec![(11, 58)]);
        assert_eq!(s.not_taken, vec![(12, 59)]);
        assert!(s.missed[0].contains("broadcast_bn_error"), "{:?}", s.missed);
        assert!(s.missed[1].contains("no record"), "{:?}", s.missed);
        assert!(!s.complete());
        let all: BTreeSet<SlotValidator> = [(9, 56)].into();
        assert!(AggregationStats::of(&all, &logs, DutyKind::Aggregation, 9..=9).complete());
    }
}
