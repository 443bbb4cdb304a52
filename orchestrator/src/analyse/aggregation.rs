//! Aggregation duties of the DV clusters in remote-signer mode, from the dvnodes' duty logs.
//!
//! A dvnode in remote-signer mode combines each DV's selection proofs (attester and per sync
//! subcommittee) from the threshold partials; BLS signatures are unique, so every node holds the
//! same proof and derives the same `is_aggregator`. For every DV the proofs elect it logs one
//! `aggregation` (validator × slot) or `sync_contribution` (validator × slot, one line however
//! many subcommittees elect it) duty, closed `success` once its beacon node accepted the signed
//! aggregate / contribution, or with the reason it was not. The duties of a cluster are the
//! union over its nodes; a duty is submitted when some node's line says `success`. The figures
//! are counted over the analysed window (`groups.<g>`) and, by the duty's slot, over each set of
//! slots the fault windows make (`outside_faults`, `during_faults`, `steady`, each fault's
//! `groups`: `frames::window_stats`), the slot sets of the attestation figures: an aggregation
//! or contribution is made 2/3 into its slot, after the 1/3 deadline that decides whether a
//! heal counts the slot outside, so a slot counted outside a fault is outside it for these too.
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
use super::{AggregationKind, Aggregations, MissedDuties};
use crate::data::{RawData, RunMeta};
use polars::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The duty-log kinds of the selection proofs the duties come from.
const SELECTION_PROOFS: [&str; 2] = ["selection_proof", "sync_selection_proof"];

/// The aggregation and sync-contribution duties of the DV clusters whose dvnodes combined
/// selection proofs in the analysed window (remote-signer mode), each with the outcome every
/// node logged. Groups without selection proofs (plain validators; DV clusters in middleware
/// mode, whose VCs hold the shares and which never aggregate) have no figures.
pub(super) struct RemoteDuties {
    /// Clusters in remote-signer mode.
    remote: BTreeSet<String>,
    /// (cluster, kind, slot, validator) → the outcome each node logged.
    outcomes: BTreeMap<(String, AggregationKind, u64, u64), Vec<String>>,
}

impl RemoteDuties {
    /// Reads the duties of slots in the analysed window from the dvnodes' duty logs.
    pub(super) fn new(meta: &RunMeta, raw: &RawData) -> PolarsResult<Self> {
        let cluster_of = meta.cluster_of_dvnode();
        let d = &raw.duty_log;
        let mut remote: BTreeSet<String> = BTreeSet::new();
        let mut outcomes: BTreeMap<_, Vec<String>> = BTreeMap::new();
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
            } else if let Some(k) = AggregationKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
            {
                remote.insert(cluster.to_string());
                if let Some(v) = u64_col(d, "validator", i)? {
                    outcomes
                        .entry((cluster.to_string(), k, slot, v))
                        .or_default()
                        .push(str_at(d, "outcome", i)?);
                }
            }
        }
        Ok(RemoteDuties { remote, outcomes })
    }

    /// The duties of `cluster` for slots that satisfy `keep`: `(duties, submitted)` of each
    /// kind, a duty being submitted when some node's line says `success` (all `None` for a
    /// cluster not in remote-signer mode).
    pub(super) fn figures(&self, cluster: &str, keep: impl Fn(u64) -> bool) -> Aggregations {
        let mut out = Aggregations::default();
        if !self.remote.contains(cluster) {
            return out;
        }
        for kind in AggregationKind::ALL {
            let (mut duties, mut submitted) = (0u64, 0u64);
            for (_, list) in self
                .outcomes
                .iter()
                .filter(|((c, k, slot, _), _)| c == cluster && *k == kind && keep(*slot))
            {
                duties += 1;
                submitted += u64::from(list.iter().any(|o| o == "success"));
            }
            out.set(kind, duties, submitted);
        }
        out
    }

    /// Adds the duties no node performed to `missed` under the kinds `aggregation` and
    /// `sync_contribution`, with the reason most of the nodes logged.
    pub(super) fn add_misses(&self, missed: &mut MissedDuties) {
        for ((cluster, kind, _, _), list) in &self.outcomes {
            if !list.iter().any(|o| o == "success") {
                *missed
                    .entry(cluster.clone())
                    .or_default()
                    .entry(kind.as_str().to_string())
                    .or_default()
                    .entry(miss_reason(list))
                    .or_default() += 1;
            }
        }
    }
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

    /// The figures of each group of [`meta`] over the whole window, and the misses, from the
    /// duty log of `b`.
    fn filled(b: synthetic::Builder) -> (BTreeMap<String, Aggregations>, MissedDuties) {
        let m = meta();
        let duties = RemoteDuties::new(&m, &b.build().unwrap()).unwrap();
        let groups = m
            .groups
            .iter()
            .map(|g| (g.name.clone(), duties.figures(&g.name, |_| true)))
            .collect();
        let mut missed = MissedDuties::new();
        duties.add_misses(&mut missed);
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

    /// The figures of a set of slots count only the duties of those slots: slots 9-10 (two
    /// aggregations, one submitted) against slots 11-13 (two contributions, one submitted;
    /// no aggregation, which is 0, not `None`); a middleware cluster has none in any set.
    #[test]
    fn figures_of_a_set_of_slots() {
        let mut b = synthetic::Builder::default();
        for r in [
            row("r0", 9, "aggregation", Some(4), "success"),
            row("r0", 10, "aggregation", Some(5), "no_consensus"),
            row("r1", 12, "sync_contribution", Some(6), "success"),
            row("r1", 13, "sync_contribution", Some(7), "no_consensus"),
            row("m0", 12, "attester", Some(8), "success"),
        ] {
            b.duty_record(r);
        }
        let m = meta();
        let duties = RemoteDuties::new(&m, &b.build().unwrap()).unwrap();
        let early = duties.figures("remote", |s| s <= 10);
        assert_eq!(early.of(AggregationKind::Aggregation), Some((2, 1)));
        assert_eq!(early.of(AggregationKind::SyncContribution), Some((0, 0)));
        let late = duties.figures("remote", |s| s > 10);
        assert_eq!(late.of(AggregationKind::Aggregation), Some((0, 0)));
        assert_eq!(late.of(AggregationKind::SyncContribution), Some((2, 1)));
        assert!(late.is_remote());
        let none = duties.figures("middleware", |_| true);
        assert_eq!(none, Aggregations::default());
        assert!(!none.is_remote());
    }
}
