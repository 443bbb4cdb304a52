//! The control of the DV clusters during faults ([`FaultControl`]): the plain validators of
//! the same slots.

use super::frames::DutyRowView;
use super::{ClusterGap, FaultControl, Tally};
use crate::data::RunMeta;
use std::collections::BTreeMap;

/// The DV clusters' attestation duties in the slots `inside` keeps, each against the plain
/// validators' duties of its own slot, the baseline's and all plain validators' pooled.
pub(super) fn fault_control(
    meta: &RunMeta,
    rows: &[DutyRowView],
    inside: impl Fn(u64) -> bool,
) -> FaultControl {
    let distributed = |g: &str| {
        meta.groups
            .iter()
            .find(|m| m.name == g)
            .map(|m| m.distributed)
    };
    let rows: Vec<&DutyRowView> = rows.iter().filter(|r| inside(r.slot)).collect();
    let (mut baseline, mut plain) = (Tally::default(), Tally::default());
    let mut plain_by_slot: BTreeMap<u64, Tally> = BTreeMap::new();
    for r in rows.iter().filter(|r| distributed(&r.group) == Some(false)) {
        let included = r.inclusion_slot.is_some();
        plain.add(included);
        plain_by_slot.entry(r.slot).or_default().add(included);
        if r.group == "baseline" {
            baseline.add(included);
        }
    }
    let (baseline, plain) = (baseline.close(), plain.close());
    let mut clusters: BTreeMap<String, (Tally, f64, u64)> = meta
        .groups
        .iter()
        .filter(|g| g.distributed)
        .map(|g| (g.name.clone(), Default::default()))
        .collect();
    for r in &rows {
        let Some((own, expected, unmatched)) = clusters.get_mut(&r.group) else {
            continue;
        };
        own.add(r.inclusion_slot.is_some());
        match plain_by_slot.get(&r.slot) {
            Some(p) if p.duties > 0 => *expected += p.included as f64 / p.duties as f64,
            _ => {
                *expected += 1.0;
                *unmatched += 1;
            }
        }
    }
    let gap = |reference: Option<f64>, own: Option<f64>| Some(reference? - own?);
    FaultControl {
        asserted: "matched_gap".into(),
        baseline,
        plain,
        clusters: clusters
            .into_iter()
            .map(|(name, (own, expected, unmatched_duties))| {
                let own = own.close();
                let matched_expected_rate =
                    (own.duties > 0 && plain.duties > 0).then(|| expected / own.duties as f64);
                let cluster = ClusterGap {
                    own,
                    matched_expected_rate,
                    unmatched_duties,
                    baseline_gap: gap(baseline.inclusion_rate, own.inclusion_rate),
                    plain_gap: gap(plain.inclusion_rate, own.inclusion_rate),
                    matched_gap: gap(matched_expected_rate, own.inclusion_rate),
                };
                (name, cluster)
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use crate::analyse::analyse;
    use crate::data::{synthetic, FaultWindow, GroupMeta, RunMeta};
    use crate::spec::Metric;

    /// clock-skew-two's devnet (56 plain validators: 48 keepers, 8 baseline; a DV cluster of 8)
    /// over slots 8..64, 8-slot epochs, every validator one duty per epoch at offset v % 8 —
    /// except that the baseline has none at offset 2 (its duty moves to offset 3), as in the
    /// measured run where the baseline had no duty in the slot the devnet lost. A fault covers
    /// slots 24..48. In `lost_slot` the keepers miss `keepers_missed` of their 6 duties; the DV
    /// misses its duties in `dv_missed` slots.
    fn run(
        lost_slot: u64,
        keepers_missed: u64,
        dv_missed: &[u64],
    ) -> (RunMeta, crate::analyse::Analysis) {
        let mut m = synthetic::run_meta(
            8,
            63,
            vec![
                GroupMeta::range("keepers", 0, 48, false),
                GroupMeta::range("baseline", 48, 8, false),
                GroupMeta::range("dv0", 56, 8, true),
            ],
        );
        m.assertions
            .insert("dv_baseline_gap_during_faults".into(), "<= 0.03".into());
        let mut b = synthetic::Builder::default();
        for epoch in 1..8u64 {
            let mut keepers_lost = 0;
            for v in 0..64u64 {
                let offset = if (48..56).contains(&v) && v % 8 == 2 {
                    3
                } else {
                    v % 8
                };
                let slot = epoch * 8 + offset;
                b.duty(slot, v);
                let missed = match v {
                    0..48 if slot == lost_slot && keepers_lost < keepers_missed => {
                        keepers_lost += 1;
                        true
                    }
                    56.. => dv_missed.contains(&slot),
                    _ => false,
                };
                if !missed {
                    b.inclusion(v, slot, slot + 1, true, true);
                }
            }
        }
        b.fault(fault());
        let a = analyse(&m, &b.build().unwrap()).unwrap();
        (m, a)
    }

    /// A fault over slots 24..48 (from the start of slot 24 to the start of slot 48).
    fn fault() -> FaultWindow {
        FaultWindow {
            fault: 1,
            kind: "clock_skew".into(),
            targets: "dv0-1,dv0-3".into(),
            detail: String::new(),
            start_time: 96.0,
            start_slot: 24,
            end_time: Some(192.0),
            end_slot: Some(48),
            error: None,
        }
    }

    fn gap(m: &RunMeta, a: &crate::analyse::Analysis) -> (Option<f64>, bool) {
        let r = crate::report::build(m, a);
        let passed = r
            .assertions
            .iter()
            .find(|x| x.name == "dv_baseline_gap_during_faults")
            .unwrap()
            .passed;
        (
            crate::report::metric(Metric::DvBaselineGapDuringFaults, m, a),
            passed,
        )
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    /// The measured clock-skew-two failure: slot 26 lost devnet-wide (5 of its 6 keepers and
    /// the DV's validator), the baseline without a duty in it. Against the baseline alone the
    /// DV is 1/24 = 0.042 behind and would fail; against the plain validators of slot 26 it
    /// lost only what they lost there (1/6 of them kept it): passes.
    #[test]
    fn a_devnet_wide_slot_loss_is_not_counted_against_the_dv() {
        let (m, a) = run(26, 5, &[26]);
        let c = &a.fault_control;
        assert_eq!(c.asserted, "matched_gap");
        assert_eq!((c.baseline.duties, c.baseline.included), (24, 24));
        assert_eq!((c.plain.duties, c.plain.included), (168, 163));
        let dv = &c.clusters["dv0"];
        assert_eq!(
            (dv.own.duties, dv.own.included, dv.unmatched_duties),
            (24, 23, 0)
        );
        assert!(close(dv.baseline_gap, 1.0 / 24.0), "{dv:?}");
        assert!(dv.baseline_gap.unwrap() > 0.03, "the old reference fails");
        assert!(close(dv.plain_gap, 163.0 / 168.0 - 23.0 / 24.0), "{dv:?}");
        assert!(
            close(dv.matched_expected_rate, (23.0 + 1.0 / 6.0) / 24.0),
            "{dv:?}"
        );
        assert!(close(dv.matched_gap, 1.0 / 144.0), "{dv:?}");
        let (value, passed) = gap(&m, &a);
        assert!(close(value, 1.0 / 144.0) && passed, "{value:?}");
    }

    /// A loss of the DV alone in a slot every plain validator kept counts in full (1/24 >
    /// 0.03): fails, as before.
    #[test]
    fn a_dv_only_loss_still_fails() {
        let (m, a) = run(26, 0, &[26]);
        let dv = &a.fault_control.clusters["dv0"];
        assert!(close(dv.matched_expected_rate, 1.0), "{dv:?}");
        let (value, passed) = gap(&m, &a);
        assert!(close(value, 1.0 / 24.0) && !passed, "{value:?}");
        // A devnet-wide loss does not excuse a DV-only loss elsewhere: 26 lost by all, 30 by
        // the DV alone.
        let (m, a) = run(26, 5, &[26, 30]);
        let (value, passed) = gap(&m, &a);
        assert!(
            close(value, 1.0 / 144.0 + 1.0 / 24.0) && !passed,
            "{value:?}"
        );
    }

    /// Without plain duties in the windows there is nothing to compare with: unknown, and the
    /// assertion fails.
    #[test]
    fn without_plain_duties_the_gap_is_unknown() {
        let mut m = synthetic::run_meta(8, 63, vec![GroupMeta::range("dv0", 56, 8, true)]);
        m.assertions
            .insert("dv_baseline_gap_during_faults".into(), "<= 0.03".into());
        let mut b = synthetic::Builder::default();
        for slot in 24..48u64 {
            b.duty(slot, 56 + slot % 8);
            b.inclusion(56 + slot % 8, slot, slot + 1, true, true);
        }
        b.fault(fault());
        let a = analyse(&m, &b.build().unwrap()).unwrap();
        let dv = &a.fault_control.clusters["dv0"];
        assert_eq!((dv.own.duties, dv.unmatched_duties), (24, 24));
        assert_eq!(dv.matched_gap, None);
        assert_eq!(gap(&m, &a), (None, false));
    }
}
