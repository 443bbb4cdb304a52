//! Where a devnet run's analysed window starts: after the devnet's start-up, read from the
//! chain rather than assumed.
//!
//! A run skips epoch 0 (its validator clients connect). On a loaded machine the containers can
//! take longer than that: then every validator client of the devnet — plain ones included —
//! misses its first duties, and those misses are the devnet's start-up, not the behaviour
//! under test. The devnet's plain (non-DV) validator groups are the reference: a duty such a
//! group missed *before its first attestation on chain* means its client was not running yet.
//! The window then starts at the epoch after the last such miss. DV groups never move it (a
//! DV cluster that starts late is measured), nor does a plain group that never attests (a
//! broken devnet is reported, not skipped), and the window never starts after the first fault.

use super::frames::u64_col;
use crate::data::{fault_windows, RawData, RunMeta};
use polars::prelude::PolarsResult;
use std::collections::HashSet;

/// The start of the analysed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmUp {
    /// First analysed slot.
    pub first_slot: u64,
    /// The last slot of the window as planned in which a plain validator group missed a duty
    /// before its first attestation on chain (what moved the window), if any.
    pub last_start_up_miss: Option<u64>,
}

/// The window's start for `raw` (`meta.first_slot` is the planned one).
pub fn warm_up(meta: &RunMeta, raw: &RawData) -> PolarsResult<WarmUp> {
    let planned = WarmUp {
        first_slot: meta.first_slot,
        last_start_up_miss: None,
    };
    let reference: Vec<_> = meta.groups.iter().filter(|g| !g.distributed).collect();
    let group_of = |v: u64| reference.iter().position(|g| g.contains(v));
    let mut first_attested: Vec<Option<u64>> = vec![None; reference.len()];
    let mut included = HashSet::new();
    let inc = &raw.inclusions;
    for i in 0..inc.height() {
        let (Some(v), Some(slot)) = (u64_col(inc, "validator", i)?, u64_col(inc, "slot", i)?)
        else {
            continue;
        };
        if let Some(g) = group_of(v) {
            let f = &mut first_attested[g];
            *f = Some(f.map_or(slot, |f| f.min(slot)));
            included.insert((v, slot));
        }
    }
    if reference.is_empty() || first_attested.iter().any(Option::is_none) {
        return Ok(planned);
    }
    let mut last_miss: Option<u64> = None;
    let duties = &raw.duties;
    for i in 0..duties.height() {
        let (Some(v), Some(slot)) = (
            u64_col(duties, "validator", i)?,
            u64_col(duties, "slot", i)?,
        ) else {
            continue;
        };
        let Some(g) = group_of(v) else { continue };
        let in_window = slot >= meta.first_slot && slot <= meta.last_slot;
        if in_window
            && first_attested[g].is_some_and(|f| slot < f)
            && !included.contains(&(v, slot))
        {
            last_miss = Some(last_miss.map_or(slot, |m| m.max(slot)));
        }
    }
    let Some(miss) = last_miss else {
        return Ok(planned);
    };
    let spe = meta.slots_per_epoch.max(1);
    let first_fault = fault_windows(&raw.faults)?
        .iter()
        .map(|f| f.start_slot)
        .min()
        .unwrap_or(u64::MAX);
    let latest = (first_fault.min(meta.last_slot) / spe) * spe;
    Ok(WarmUp {
        first_slot: ((miss / spe + 1) * spe).min(latest).max(meta.first_slot),
        last_start_up_miss: Some(miss),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{synthetic, FaultWindow, GroupMeta};

    /// keepers 0-3, baseline 4-5, dv0 6-7; 8 slots per epoch, window 8..=47 as planned.
    fn meta() -> RunMeta {
        synthetic::run_meta(
            8,
            47,
            vec![
                GroupMeta::range("keepers", 0, 4, false),
                GroupMeta::range("baseline", 4, 2, false),
                GroupMeta::range("dv0", 6, 2, true),
            ],
        )
    }

    /// Every validator has a duty every slot; validator `v` attests from slot `start(v)` on.
    fn raw(start: impl Fn(u64) -> u64, fault_at: Option<u64>) -> RawData {
        let mut d = synthetic::Builder::default();
        for slot in 0..48u64 {
            for v in 0..8u64 {
                d.duty(slot, v);
                if slot >= start(v) {
                    d.inclusion(v, slot, slot + 1, true, true);
                }
            }
        }
        if let Some(at) = fault_at {
            d.fault(FaultWindow {
                fault: 1,
                kind: "clock_skew".into(),
                targets: "dv0-2".into(),
                detail: "-2s".into(),
                start_time: 0.0,
                start_slot: at,
                end_time: None,
                end_slot: Some(at + 8),
                error: None,
            });
        }
        d.build().unwrap()
    }

    #[test]
    fn a_devnet_up_in_epoch_0_keeps_the_planned_window() {
        let w = warm_up(&meta(), &raw(|v| if v < 4 { 0 } else { 5 }, Some(24))).unwrap();
        assert_eq!(
            w,
            WarmUp {
                first_slot: 8,
                last_start_up_miss: None
            }
        );
    }

    #[test]
    fn plain_clients_still_starting_move_the_window_to_the_next_epoch() {
        // The measured clock-skew-behind start: the baseline's client attests from slot 12,
        // the DV's from 13 (misses at 8-12), the keepers' from the start.
        let start = |v: u64| match v {
            0..4 => 2,
            4..6 => 12,
            _ => 13,
        };
        let w = warm_up(&meta(), &raw(start, Some(24))).unwrap();
        assert_eq!(
            w,
            WarmUp {
                first_slot: 16,
                last_start_up_miss: Some(11)
            }
        );
    }

    #[test]
    fn a_late_dv_cluster_alone_does_not_move_the_window() {
        let start = |v: u64| if v < 6 { 0 } else { 20 };
        let w = warm_up(&meta(), &raw(start, Some(24))).unwrap();
        assert_eq!(w.first_slot, 8);
    }

    #[test]
    fn a_plain_group_that_never_attests_is_reported_not_skipped() {
        let start = |v: u64| if (4..6).contains(&v) { 100 } else { 0 };
        let w = warm_up(&meta(), &raw(start, None)).unwrap();
        assert_eq!(w.first_slot, 8);
    }

    #[test]
    fn the_window_never_starts_after_the_first_fault() {
        let start = |v: u64| if v < 6 { 30 } else { 0 };
        let w = warm_up(&meta(), &raw(start, Some(20))).unwrap();
        assert_eq!(
            w,
            WarmUp {
                first_slot: 16,
                last_start_up_miss: Some(29)
            }
        );
    }

    #[test]
    fn misses_after_the_first_attestation_are_not_start_up() {
        // The baseline attests at slot 8, then misses 10-14: the misses count, the window stays.
        let mut d = synthetic::Builder::default();
        for slot in 0..48u64 {
            for v in 0..8u64 {
                d.duty(slot, v);
                let baseline_gap = (4..6).contains(&v) && (10..15).contains(&slot);
                if !baseline_gap && (!(4..6).contains(&v) || slot >= 8) {
                    d.inclusion(v, slot, slot + 1, true, true);
                }
            }
        }
        let w = warm_up(&meta(), &d.build().unwrap()).unwrap();
        assert_eq!(
            w,
            WarmUp {
                first_slot: 8,
                last_start_up_miss: None
            }
        );
    }
}
