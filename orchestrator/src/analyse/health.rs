//! Chain-health figures client teams gate on, as Assertoor, Prysm's e2e and Lodestar's sim
//! define them: timely participation by source / target / head, attestation effectiveness,
//! head agreement across beacon nodes, reorgs, finality delay, and per-dvnode recovery after
//! a fault.

use super::frames::{str_at, u64_col, DutyRowView};
use super::{Finality, Participation, Reorgs};
use crate::data::{RawData, RunMeta};
use polars::prelude::PolarsResult;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Inclusion-distance limits of the (source, target, head) flags.
fn timely_limits(slots_per_epoch: u64) -> (u64, u64, u64) {
    (slots_per_epoch.isqrt(), slots_per_epoch, 1)
}

/// Participation of the duties in `rows`, grouped by `key`.
pub(super) fn participation<K: Ord>(
    rows: &[DutyRowView],
    slots_per_epoch: u64,
    key: impl Fn(&DutyRowView) -> K,
) -> BTreeMap<K, Participation> {
    let (src, tgt, head) = timely_limits(slots_per_epoch);
    let mut counts: BTreeMap<K, [u64; 4]> = BTreeMap::new();
    for r in rows {
        let c = counts.entry(key(r)).or_default();
        c[0] += 1;
        if let Some(at) = r.inclusion_slot {
            let d = at.saturating_sub(r.slot);
            c[1] += u64::from(r.source_ok && d <= src);
            c[2] += u64::from(r.target_ok && d <= tgt);
            c[3] += u64::from(r.head_ok && d <= head);
        }
    }
    counts
        .into_iter()
        .map(|(k, [n, s, t, h])| {
            let share = |x: u64| x as f64 / n as f64;
            (
                k,
                Participation {
                    source: share(s),
                    target: share(t),
                    head: share(h),
                },
            )
        })
        .collect()
}

/// Mean attestation effectiveness per group (SSV's formula): for each duty, (earliest
/// possible inclusion slot − slot) / (actual inclusion slot − slot), where the earliest
/// possible inclusion slot is the first canonical block after the duty's slot; a missed duty
/// counts 0.
pub(super) fn effectiveness(
    rows: &[DutyRowView],
    raw: &RawData,
) -> PolarsResult<BTreeMap<String, f64>> {
    let b = &raw.blocks;
    let mut blocks = BTreeSet::new();
    for i in 0..b.height() {
        if let Some(s) = u64_col(b, "slot", i)? {
            blocks.insert(s);
        }
    }
    let mut sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for r in rows {
        let e = sums.entry(r.group.clone()).or_default();
        e.1 += 1;
        if let Some(at) = r.inclusion_slot.filter(|at| *at > r.slot) {
            let earliest = blocks
                .range(r.slot + 1..)
                .next()
                .copied()
                .unwrap_or(r.slot + 1);
            let best = earliest.min(at) - r.slot;
            e.0 += best as f64 / (at - r.slot) as f64;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(g, (sum, n))| (g, sum / n as f64))
        .collect())
}

/// Whether UNIX `time` falls in a slot of the analysed window.
fn in_window(meta: &RunMeta, time: u64) -> bool {
    let Some(since) = time.checked_sub(meta.genesis_time) else {
        return false;
    };
    let slot = since / meta.seconds_per_slot.max(1);
    slot >= meta.first_slot && slot <= meta.last_slot
}

/// Share of the sampled instants in the analysed window at which every beacon node that
/// answered reported the same head block (its root; its slot for samples without a root).
/// `None` without samples.
pub(super) fn head_agreement(meta: &RunMeta, raw: &RawData) -> PolarsResult<Option<f64>> {
    let h = &raw.heads;
    let mut by_time: BTreeMap<u64, HashSet<String>> = BTreeMap::new();
    for i in 0..h.height() {
        let (Some(t), Some(slot)) = (u64_col(h, "time", i)?, u64_col(h, "head_slot", i)?) else {
            continue;
        };
        if !in_window(meta, t) {
            continue;
        }
        let root = str_at(h, "head_root", i)?;
        let id = if root.is_empty() {
            format!("slot {slot}")
        } else {
            root
        };
        by_time.entry(t).or_default().insert(id);
    }
    if by_time.is_empty() {
        return Ok(None);
    }
    let agreed = by_time.values().filter(|heads| heads.len() == 1).count();
    Ok(Some(agreed as f64 / by_time.len() as f64))
}

/// Abandoned branches among the blocks any beacon node saw in the analysed window.
pub(super) fn reorgs(meta: &RunMeta, raw: &RawData) -> PolarsResult<Reorgs> {
    let canonical: HashSet<String> = {
        let b = &raw.blocks;
        (0..b.height())
            .map(|i| str_at(b, "root", i))
            .collect::<PolarsResult<_>>()?
    };
    // Non-canonical root → parent root (empty: unknown).
    let mut orphans: HashMap<String, String> = HashMap::new();
    let s = &raw.blocks_seen;
    for i in 0..s.height() {
        let Some(slot) = u64_col(s, "slot", i)? else {
            continue;
        };
        let root = str_at(s, "root", i)?;
        if slot < meta.first_slot || slot > meta.last_slot || canonical.contains(&root) {
            continue;
        }
        let parent = str_at(s, "parent", i)?;
        let e = orphans.entry(root).or_default();
        if e.is_empty() {
            *e = parent;
        }
    }
    let parents: HashSet<&String> = orphans.values().collect();
    let mut out = Reorgs::default();
    for tip in orphans.keys().filter(|r| !parents.contains(r)) {
        let mut depth = 1u64;
        let mut r = &orphans[tip];
        while let Some(p) = orphans.get(r) {
            depth += 1;
            r = p;
            if depth as usize > orphans.len() {
                break; // a cycle in malformed data
            }
        }
        out.count += 1;
        out.max_depth = out.max_depth.max(depth);
    }
    Ok(out)
}

/// Finality delay and time to the first finalized epoch from the head samples.
pub(super) fn finality(meta: &RunMeta, raw: &RawData) -> PolarsResult<Finality> {
    let h = &raw.heads;
    let mut by_time: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..h.height() {
        if let (Some(t), Some(f)) = (u64_col(h, "time", i)?, u64_col(h, "finalized_epoch", i)?) {
            let e = by_time.entry(t).or_default();
            *e = (*e).max(f);
        }
    }
    let epoch_secs = (meta.seconds_per_slot * meta.slots_per_epoch).max(1);
    let delay =
        |t: u64, f: u64| (t.saturating_sub(meta.genesis_time) / epoch_secs).saturating_sub(f);
    let delays: Vec<u64> = by_time
        .iter()
        .filter(|(t, _)| in_window(meta, **t))
        .map(|(t, f)| delay(*t, *f))
        .collect();
    Ok(Finality {
        first_finalized_seconds: by_time
            .iter()
            .find(|(_, f)| **f > 0)
            .map(|(t, _)| t.saturating_sub(meta.genesis_time) as f64),
        max_delay_epochs: delays.iter().copied().max(),
        end_delay_epochs: delays.last().copied(),
    })
}

/// (first slot a node's partials are used again, slots its cluster went on without them).
pub(super) type NodeRecovery = (Option<u64>, Option<u64>);

/// When each dvnode's partial signatures were used again after a fault healed at slot
/// `heal`: per dvnode of `meta`, (the first slot at or after `heal` with a successful duty
/// record of its cluster, on any of its nodes, that holds its share; that slot minus the
/// cluster's first slot at or after `heal` with any successful duty record).
pub(super) fn node_recovery(
    meta: &RunMeta,
    raw: &RawData,
    heal: u64,
) -> PolarsResult<BTreeMap<String, NodeRecovery>> {
    let cluster_of = meta.cluster_of_dvnode();
    // cluster → slot → share indices in successful records of that slot.
    let mut used: HashMap<&str, BTreeMap<u64, HashSet<u64>>> = HashMap::new();
    let d = &raw.duty_log;
    for i in 0..d.height() {
        let Some(slot) = u64_col(d, "slot", i)?.filter(|s| *s >= heal) else {
            continue;
        };
        let Some(cluster) = cluster_of.get(str_at(d, "node", i)?.as_str()) else {
            continue;
        };
        if str_at(d, "outcome", i)? != "success" {
            continue;
        }
        used.entry(cluster)
            .or_default()
            .entry(slot)
            .or_default()
            .extend(
                str_at(d, "shares", i)?
                    .split(',')
                    .filter_map(|x| x.trim().parse::<u64>().ok()),
            );
    }
    Ok(meta
        .dvnodes
        .iter()
        .map(|n| {
            let slots = used.get(n.cluster.as_str());
            let first = slots.and_then(|s| s.keys().next().copied());
            let back = slots.and_then(|s| {
                s.iter()
                    .find(|(_, shares)| shares.contains(&(n.index + 1)))
                    .map(|(slot, _)| *slot)
            });
            let took = back.zip(first).map(|(b, f)| b - f);
            (n.name.clone(), (back, took))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::analyse;
    use crate::data::{synthetic, DutyRow, DvNodeMeta, FaultWindow, GroupMeta, RunMeta};
    use crate::report::metric;
    use crate::spec::Metric;

    /// 8 slots per epoch, 4 s slots, genesis at 1000; window slots 8..=23 (epochs 1 and 2).
    fn meta() -> RunMeta {
        let mut m = synthetic::run_meta(
            8,
            23,
            vec![
                GroupMeta::range("baseline", 0, 1, false),
                GroupMeta::range("dv0", 1, 1, true),
            ],
        );
        m.genesis_time = 1000;
        m.dvnodes = (0..3)
            .map(|i| DvNodeMeta {
                name: format!("n{i}"),
                cluster: "dv0".into(),
                index: i,
                metrics_url: None,
            })
            .collect();
        m
    }

    /// A hand-made chain, slots 8..=23. Canonical blocks in every slot but 12 and 13.
    /// Baseline validator 0 attests every slot and is included in the next block. DV
    /// validator 1: in epoch 1 (slots 8..=15) included at the next block, with a wrong head
    /// at slot 9 and a wrong target at slot 10; in epoch 2 (16..=23) slots 16 and 17 are
    /// missed, 18 is included at 21 (distance 3), the rest at the next slot.
    fn chain() -> synthetic::Builder {
        let mut b = synthetic::Builder::default();
        let canonical = |s: u64| s != 12 && s != 13;
        let next_block = |s: u64| (s + 1..).find(|x| canonical(*x)).unwrap();
        for slot in 8..24u64 {
            if canonical(slot) {
                b.block(slot, 0, &format!("c{slot}"));
            }
            b.duty(slot, 0);
            b.duty(slot, 1);
            b.inclusion(0, slot, next_block(slot), true, true);
            match slot {
                16 | 17 => {}
                18 => b.inclusion(1, slot, 21, true, true),
                _ => b.inclusion(1, slot, next_block(slot), slot != 9, slot != 10),
            }
        }
        b
    }

    #[test]
    fn participation_by_flag_per_epoch() {
        let a = analyse(&meta(), &chain().build().unwrap()).unwrap();
        let p = |g: &str, e: u64| {
            a.epochs
                .iter()
                .find(|r| r.group == g && r.epoch == e)
                .unwrap()
                .participation
        };
        // Baseline epoch 1: slots 11 and 12 are included at 14 (distances 3 and 2): not
        // timely for head (> 1) and slot 11 not for source (√8 = 2): source 7/8, head 6/8.
        assert_eq!(
            p("baseline", 1),
            super::Participation {
                source: 7.0 / 8.0,
                target: 1.0,
                head: 6.0 / 8.0
            }
        );
        // dv0 epoch 1: as baseline, minus slot 9's head and slot 10's target.
        assert_eq!(
            p("dv0", 1),
            super::Participation {
                source: 7.0 / 8.0,
                target: 7.0 / 8.0,
                head: 5.0 / 8.0
            }
        );
        // dv0 epoch 2: 16, 17 missed; 18 at distance 3 (target only).
        assert_eq!(
            p("dv0", 2),
            super::Participation {
                source: 5.0 / 8.0,
                target: 6.0 / 8.0,
                head: 5.0 / 8.0
            }
        );
        // Whole window, and the Assertoor gates take the worst group.
        assert_eq!(
            a.groups["dv0"].participation,
            Some(super::Participation {
                source: 12.0 / 16.0,
                target: 13.0 / 16.0,
                head: 10.0 / 16.0
            })
        );
        let m = meta();
        assert_eq!(metric(Metric::CorrectTargetRate, &m, &a), Some(13.0 / 16.0));
        assert_eq!(metric(Metric::CorrectHeadRate, &m, &a), Some(10.0 / 16.0));
    }

    #[test]
    fn effectiveness_forgives_empty_slots() {
        let a = analyse(&meta(), &chain().build().unwrap()).unwrap();
        // Baseline: always in the first block after its slot: 1.
        assert_eq!(a.groups["baseline"].effectiveness, Some(1.0));
        // dv0: 13 duties at 1, two missed (0), slot 18 at 21 where 19 had a block: 1/3.
        let want = (13.0 + 1.0 / 3.0) / 16.0;
        assert!((a.groups["dv0"].effectiveness.unwrap() - want).abs() < 1e-12);
        assert!((metric(Metric::DvEffectiveness, &meta(), &a).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn reorgs_are_abandoned_branches() {
        let mut b = chain();
        // Branch of depth 2 off c14: o15 → o16; a lone orphan at 20; one at 30 (outside the
        // window); and one with an unknown parent at 22. Seen by two BNs: counted once.
        for bn in ["bn0", "bn1"] {
            b.block_seen_with_parent(bn, 15, 3, "o15", "c14");
            b.block_seen_with_parent(bn, 16, 3, "o16", "o15");
        }
        b.block_seen_with_parent("bn0", 20, 3, "o20", "c19");
        b.block_seen_with_parent("bn0", 30, 3, "o30", "c29");
        b.block_seen_with_parent("bn1", 22, 3, "o22", "");
        let m = meta();
        let a = analyse(&m, &b.build().unwrap()).unwrap();
        assert_eq!(
            a.reorgs,
            super::Reorgs {
                count: 3,
                max_depth: 2
            }
        );
        // 3 reorgs over the 2 epochs of the window.
        assert_eq!(metric(Metric::ReorgsPerEpoch, &m, &a), Some(1.5));
    }

    #[test]
    fn head_agreement_and_finality_from_samples() {
        let mut b = chain();
        let at = |slot: u64| 1000 + slot * 4 + 2;
        // Slot 5 (before the window): disagreement that does not count.
        b.head_at(at(5), "bn0", 5, "c5", 0, 1);
        b.head_at(at(5), "bn1", 4, "c4", 0, 1);
        for slot in 8..24u64 {
            // Finalized epoch: 0 until slot 18 (epoch 2), then 1 (first seen at slot 18 by
            // bn1 only), 2 from slot 22 on bn0 only.
            let fin = |bn: u64| match slot {
                ..18 => 0,
                18..22 => u64::from(bn == 1 || slot > 18),
                _ => {
                    if bn == 0 {
                        2
                    } else {
                        1
                    }
                }
            };
            b.head_at(at(slot), "bn0", slot, &format!("c{slot}"), fin(0), 1);
            // bn1 lags a block at slots 10 and 11 and is on the other branch at 15.
            let (s1, r1) = match slot {
                10 | 11 => (slot - 1, format!("c{}", slot - 1)),
                15 => (15, "o15".to_string()),
                _ => (slot, format!("c{slot}")),
            };
            b.head_at(at(slot), "bn1", s1, &r1, fin(1), 1);
        }
        let m = meta();
        let a = analyse(&m, &b.build().unwrap()).unwrap();
        assert_eq!(a.head_agreement, Some(13.0 / 16.0));
        assert_eq!(metric(Metric::HeadAgreement, &m, &a), Some(13.0 / 16.0));
        // First finalized at slot 18: 18 × 4 + 2 seconds after genesis. Delays: epoch 1
        // with 0 → 1; epoch 2 with 0 → 2 (slots 16, 17), with 1 → 1; with 2 at slot 23 → 0.
        assert_eq!(
            a.finality,
            super::Finality {
                first_finalized_seconds: Some(74.0),
                max_delay_epochs: Some(2),
                end_delay_epochs: Some(0),
            }
        );
        assert_eq!(metric(Metric::UnfinalizedEpochs, &m, &a), Some(2.0));
    }

    /// After a crash of n2 healed at slot 16, n0 and n1 sign from 16 on; n2's share is first
    /// used at slot 19 (3 slots after the cluster's first success); n1 logged nothing itself
    /// but its share appears in n0's records.
    #[test]
    fn per_node_recovery_after_a_fault() {
        let mut b = chain();
        for slot in 8..24u64 {
            let shares = match slot {
                12..16 => None,
                16..19 => Some("1,2"),
                _ => Some("1,2,3"),
            };
            let (outcome, shares) = match shares {
                Some(s) => ("success", s),
                None => ("no_consensus", ""),
            };
            b.duty_record(DutyRow {
                node: "n0".into(),
                slot,
                kind: "attester".into(),
                validator: None,
                outcome: outcome.into(),
                detail: None,
                consensus_round: Some(1),
                consensus_seconds: Some(0.1),
                shares: shares.into(),
            });
        }
        b.fault(FaultWindow {
            fault: 1,
            kind: "crash".into(),
            targets: "dv0-2".into(),
            detail: String::new(),
            start_time: 1000.0 + 12.0 * 4.0,
            start_slot: 12,
            end_time: Some(1000.0 + 16.0 * 4.0),
            end_slot: Some(16),
            error: None,
        });
        let a = analyse(&meta(), &b.build().unwrap()).unwrap();
        let f = &a.faults[0];
        assert_eq!(f.heal_slot, Some(16));
        let rec = |n: &str| (f.nodes[n].recovery_slot, f.nodes[n].recovery_slots);
        assert_eq!(rec("n0"), (Some(16), Some(0)));
        assert_eq!(rec("n1"), (Some(16), Some(0)));
        assert_eq!(rec("n2"), (Some(19), Some(3)));
    }
}
