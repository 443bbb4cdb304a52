//! Aggregation duties of the DV clusters in remote-signer mode, from the dvnodes' duty logs.
//!
//! A dvnode in remote-signer mode combines each DV's selection proofs (attester and per sync
//! subcommittee) from the threshold partials; BLS signatures are unique, so every node holds the
//! same proof and derives the same `is_aggregator`. For every DV the proofs elect it logs one
//! `aggregation` (validator × slot) or `sync_contribution` (validator × slot, one line however
//! many subcommittees elect it) duty, closed `success` once its beacon node accepted the signed
//! aggregate / contribution, or with the reason it was not. The duties of a cluster are the
//! union over its nodes; a duty is submitted when some node's line says `success`.
//!
//! What this does not show: whether another beacon node saw the object over gossip or a block
//! includes it. Lodestar 1.5.1 emits no event for a gossip aggregate or contribution (its
//! `attestation` event fires only for the attestations of imported blocks), and a block's
//! aggregate attestation or sync aggregate does not name the aggregator whose object it was
//! built from.
//!
//! That the duties are exactly those the combined proofs imply is checked where the DV keys
//! are known: `e2e-local --signer remote` recomputes the proofs from the interop keys and
//! compares them with these figures.

use super::frames::{miss_reason, str_at, u64_col};
use super::{GroupStats, MissedDuties};
use crate::data::{RawData, RunMeta};
use polars::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The duty-log kinds this module reads: the two duties and the selection proofs they come from.
const AGGREGATION: &str = "aggregation";
const SYNC_CONTRIBUTION: &str = "sync_contribution";
const SELECTION_PROOFS: [&str; 2] = ["selection_proof", "sync_selection_proof"];

/// Fills the aggregation figures of each DV group whose dvnodes combined selection proofs in
/// the window (`aggregation_duties`, `aggregations_submitted`, `sync_contribution_duties`,
/// `sync_contributions_submitted`), and adds their misses to `missed` under the kinds
/// `aggregation` and `sync_contribution` with the reason most of the nodes logged. Groups
/// without selection proofs (plain validators; DV clusters in middleware mode, whose VCs
/// hold the shares and which never aggregate) keep `None`.
pub(super) fn fill(
    meta: &RunMeta,
    raw: &RawData,
    groups: &mut BTreeMap<String, GroupStats>,
    missed: &mut MissedDuties,
) -> PolarsResult<()> {
    let cluster_of = meta.cluster_of_dvnode();
    let d = &raw.duty_log;
    let mut remote: BTreeSet<String> = BTreeSet::new();
    // (cluster, kind, slot, validator) → the outcome each node logged.
    let mut outcomes: BTreeMap<(String, String, u64, u64), Vec<String>> = BTreeMap::new();
    for i in 0..d.height() {
        let Some(slot) = u64_col(d, "slot", i)? else {
            continue;
        };
        let node = str_at(d, "node", i)?;
        let Some(cluster) = cluster_of.get(node.as_str()) else {
            continue;
        };
        if slot < meta.first_slot || slot > meta.last_slot {
            continue;
        }
        let kind = str_at(d, "kind", i)?;
        if SELECTION_PROOFS.contains(&kind.as_str()) {
            remote.insert(cluster.to_string());
        } else if kind == AGGREGATION || kind == SYNC_CONTRIBUTION {
            remote.insert(cluster.to_string());
            if let Some(v) = u64_col(d, "validator", i)? {
                outcomes
                    .entry((cluster.to_string(), kind, slot, v))
                    .or_default()
                    .push(str_at(d, "outcome", i)?);
            }
        }
    }
    for g in meta
        .groups
        .iter()
        .filter(|g| g.distributed && remote.contains(&g.name))
    {
        let Some(s) = groups.get_mut(&g.name) else {
            continue;
        };
        for kind in [AGGREGATION, SYNC_CONTRIBUTION] {
            let (mut duties, mut submitted) = (0u64, 0u64);
            for (_, list) in outcomes
                .iter()
                .filter(|((c, k, _, _), _)| *c == g.name && k == kind)
            {
                duties += 1;
                if list.iter().any(|o| o == "success") {
                    submitted += 1;
                } else {
                    *missed
                        .entry(g.name.clone())
                        .or_default()
                        .entry(kind.to_string())
                        .or_default()
                        .entry(miss_reason(list))
                        .or_default() += 1;
                }
            }
            if kind == AGGREGATION {
                s.aggregation_duties = Some(duties);
                s.aggregations_submitted = Some(submitted);
            } else {
                s.sync_contribution_duties = Some(duties);
                s.sync_contributions_submitted = Some(submitted);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{synthetic, DutyRow, DvNodeMeta, GroupMeta};

    fn meta() -> RunMeta {
        let node = |name: &str, cluster: &str, index| DvNodeMeta {
            name: name.into(),
            cluster: cluster.into(),
            index,
            metrics_url: None,
        };
        let mut m = synthetic::run_meta(
            8,
            23,
            vec![
                GroupMeta::range("baseline", 0, 4, false),
                GroupMeta::range("remote", 4, 4, true),
                GroupMeta::range("middleware", 8, 4, true),
            ],
        );
        m.dvnodes = vec![
            node("r0", "remote", 0),
            node("r1", "remote", 1),
            node("m0", "middleware", 0),
        ];
        m
    }

    fn row(node: &str, slot: u64, kind: &str, validator: Option<u64>, outcome: &str) -> DutyRow {
        DutyRow {
            node: node.into(),
            slot,
            kind: kind.into(),
            validator,
            outcome: outcome.into(),
            detail: None,
            consensus_round: None,
            consensus_seconds: None,
            shares: String::new(),
        }
    }

    /// The groups of [`meta`] and the misses after [`fill`] over the duty log of `b`.
    fn filled(b: synthetic::Builder) -> (BTreeMap<String, GroupStats>, MissedDuties) {
        let m = meta();
        let mut groups: BTreeMap<String, GroupStats> = m
            .groups
            .iter()
            .map(|g| (g.name.clone(), GroupStats::default()))
            .collect();
        let mut missed = MissedDuties::new();
        fill(&m, &b.build().unwrap(), &mut groups, &mut missed).unwrap();
        (groups, missed)
    }

    /// Cluster `remote` (nodes r0, r1): aggregation duties at slot 9 (v4: r0 fails, r1
    /// succeeds → submitted once), slot 10 (v5: both fail, r0 and r1 with different reasons,
    /// a third line tips the majority), slot 30 (outside the window: ignored); a sync
    /// contribution duty at slot 12 (v6) that both nodes performed, one at slot 13 (v7) only
    /// r1 logged, failed. The `middleware` cluster logged attester duties only: no figures.
    #[test]
    fn duties_and_submissions_per_cluster_from_the_duty_logs() {
        let mut b = synthetic::Builder::default();
        for r in [
            row("r0", 8, "selection_proof", Some(4), "success"),
            row("r0", 9, "aggregation", Some(4), "broadcast_bn_error"),
            row("r1", 9, "aggregation", Some(4), "success"),
            row("r0", 10, "aggregation", Some(5), "fetch_bn_error"),
            row("r1", 10, "aggregation", Some(5), "no_consensus"),
            row("r1", 10, "aggregation", Some(5), "no_consensus"),
            row("r0", 30, "aggregation", Some(4), "success"),
            row("r0", 12, "sync_contribution", Some(6), "success"),
            row("r1", 12, "sync_contribution", Some(6), "success"),
            row(
                "r1",
                13,
                "sync_contribution",
                Some(7),
                "insufficient_peer_signatures",
            ),
            row("r0", 12, "attester", Some(6), "success"),
            row("m0", 12, "attester", Some(8), "success"),
        ] {
            b.duty_record(r);
        }
        let (groups, missed) = filled(b);
        let r = &groups["remote"];
        assert_eq!(r.aggregation_duties, Some(2));
        assert_eq!(r.aggregations_submitted, Some(1));
        assert_eq!(r.sync_contribution_duties, Some(2));
        assert_eq!(r.sync_contributions_submitted, Some(1));
        assert_eq!(missed["remote"]["aggregation"]["no_consensus"], 1);
        assert_eq!(missed["remote"]["aggregation"].len(), 1);
        assert_eq!(
            missed["remote"]["sync_contribution"]["insufficient_peer_signatures"],
            1
        );
        for g in ["baseline", "middleware"] {
            assert_eq!(groups[g].aggregation_duties, None, "{g}");
            assert_eq!(groups[g].sync_contributions_submitted, None, "{g}");
            assert!(!missed.contains_key(g), "{g}");
        }
    }

    /// A cluster in remote-signer mode whose selection proofs elected no aggregator in the
    /// window reports 0 duties (not `None`): the figures exist and are zero.
    #[test]
    fn a_remote_cluster_without_aggregators_reports_zero() {
        let mut b = synthetic::Builder::default();
        b.duty_record(row("r0", 8, "sync_selection_proof", Some(4), "success"));
        let (groups, _) = filled(b);
        assert_eq!(groups["remote"].aggregation_duties, Some(0));
        assert_eq!(groups["remote"].sync_contributions_submitted, Some(0));
    }
}
