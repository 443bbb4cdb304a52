//! Analysis of collected raw data: per validator group, per epoch window and per fault, and
//! the chain-health figures.
//!
//! The figures ([`Analysis`] and its parts, the keys of `report.json`) are plain types, built
//! without polars, so that harnesses reading a report (e.g. `e2e-local`) need not compile it;
//! the polars computation ([`analyse`], [`audit`]; `frames.rs` and `frames/health.rs`) is part
//! of the `lab` feature.

#[cfg(feature = "lab")]
mod aggregation;
#[cfg(feature = "lab")]
mod control;
#[cfg(feature = "lab")]
mod frames;
#[cfg(feature = "lab")]
mod health;
#[cfg(feature = "lab")]
mod warm_up;

#[cfg(feature = "lab")]
pub use frames::{analyse, audit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
#[cfg(feature = "lab")]
pub use warm_up::{warm_up, WarmUp};

/// Inclusion-distance summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distance {
    /// Mean distance in slots.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// Results of one validator group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    /// Validators in the group.
    pub validators: u64,
    /// Attestation duties in the window.
    pub attestation_duties: u64,
    /// Duties whose attestation was included on chain.
    pub attestations_included: u64,
    /// `attestations_included / attestation_duties`.
    pub inclusion_rate: Option<f64>,
    /// Inclusion distance (inclusion slot − attestation slot).
    pub inclusion_distance: Distance,
    /// Histogram of inclusion distance: distance → count.
    pub distance_histogram: BTreeMap<u64, u64>,
    /// Share of included attestations with the canonical head vote.
    pub correct_head_rate: Option<f64>,
    /// Share of included attestations with the canonical target vote.
    pub correct_target_rate: Option<f64>,
    /// Share of included attestations with a correct source (always 1 on chain).
    pub correct_source_rate: Option<f64>,
    /// Proposer duties in the window.
    pub proposals_expected: u64,
    /// Proposals that made it into the canonical chain.
    pub proposals_included: u64,
    /// Sync-committee duties (validator × slot) in the window.
    pub sync_duties: u64,
    /// Share of sync-committee duties that signed.
    pub sync_participation: Option<f64>,
    /// Mean attestation effectiveness (SSV's formula; a missed duty counts 0).
    #[serde(default)]
    pub effectiveness: Option<f64>,
    /// Timely participation by flag over the window's attestation duties.
    #[serde(default)]
    pub participation: Option<Participation>,
    /// DV clusters in remote-signer mode: aggregation and sync-contribution duties and
    /// submissions over the window (flattened: keys of the group's object).
    #[serde(flatten)]
    pub aggregation: Aggregations,
}

/// Aggregation duties of a DV cluster in remote-signer mode over a set of slots, from the
/// dvnodes' duty logs (`analyse::aggregation`). Every field is `None` for a group whose dvnodes
/// combined no selection proof in the analysed window: plain validators, and DV clusters in
/// middleware mode, in which a DV never aggregates. In `report.json` these are keys of the
/// group's object (`groups.<g>`) and of each window's (`outside_faults.<g>`,
/// `during_faults.<g>`, `steady.<g>`, `faults[i].groups.<g>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Aggregations {
    /// Aggregation duties (validator × slot) for slots of the set: those for which the
    /// cluster's combined selection proof makes the DV an aggregator (one `aggregation` line
    /// per elected DV in the duty logs).
    pub aggregation_duties: Option<u64>,
    /// Of those, aggregates some dvnode submitted and its beacon node accepted.
    pub aggregations_submitted: Option<u64>,
    /// Sync-committee contribution duties (validator × slot, with at least one subcommittee
    /// whose combined selection proof elects the DV), as `aggregation_duties`.
    pub sync_contribution_duties: Option<u64>,
    /// Of those, contributions some dvnode submitted and its beacon node accepted.
    pub sync_contributions_submitted: Option<u64>,
}

/// The two duties [`Aggregations`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AggregationKind {
    /// Aggregate attestations (`aggregation` in the duty logs).
    Aggregation,
    /// Sync-committee contributions (`sync_contribution` in the duty logs).
    SyncContribution,
}

impl AggregationKind {
    /// Both, in report order.
    pub const ALL: [AggregationKind; 2] = [
        AggregationKind::Aggregation,
        AggregationKind::SyncContribution,
    ];

    /// The duty kind as the dvnodes' duty logs and `missed_duties` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregationKind::Aggregation => "aggregation",
            AggregationKind::SyncContribution => "sync_contribution",
        }
    }
}

impl Aggregations {
    /// `(duties, submitted)` of `kind`; `None` for a group without figures.
    pub fn of(&self, kind: AggregationKind) -> Option<(u64, u64)> {
        match kind {
            AggregationKind::Aggregation => {
                self.aggregation_duties.zip(self.aggregations_submitted)
            }
            AggregationKind::SyncContribution => self
                .sync_contribution_duties
                .zip(self.sync_contributions_submitted),
        }
    }

    /// Sets the figures of `kind`.
    pub fn set(&mut self, kind: AggregationKind, duties: u64, submitted: u64) {
        match kind {
            AggregationKind::Aggregation => {
                self.aggregation_duties = Some(duties);
                self.aggregations_submitted = Some(submitted);
            }
            AggregationKind::SyncContribution => {
                self.sync_contribution_duties = Some(duties);
                self.sync_contributions_submitted = Some(submitted);
            }
        }
    }

    /// Whether the group has figures (its dvnodes are in remote-signer mode).
    pub fn is_remote(&self) -> bool {
        AggregationKind::ALL.iter().any(|k| self.of(*k).is_some())
    }
}

/// Inclusion rate of one group in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRate {
    /// Group name.
    pub group: String,
    /// Epoch.
    pub epoch: u64,
    /// Duties.
    pub duties: u64,
    /// Included.
    pub included: u64,
    /// Timely participation by flag.
    #[serde(default)]
    pub participation: Participation,
}

/// One slashable pair found by the audit, or a DV validator slashed on chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// `double_vote`, `surround_vote`, `double_proposal` (messages seen on the beacon nodes),
    /// `onchain_proposer_slashing` or `onchain_attester_slashing` (a DV validator slashed by a
    /// canonical block).
    pub kind: String,
    /// Validator index.
    pub validator: u64,
    /// Group of the validator.
    pub group: String,
    /// Human-readable description of the two messages.
    pub detail: String,
}

/// A slashing included in a canonical block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnchainSlashing {
    /// Slot of the including block.
    pub slot: u64,
    /// Slashed validator.
    pub validator: u64,
    /// `proposer` or `attester`.
    pub kind: String,
    /// Group of the validator (`other` when in none).
    pub group: String,
}

/// Slashing-freedom audit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlashingAudit {
    /// Distinct signed messages examined.
    pub messages_checked: u64,
    /// Slashable pairs, and on-chain slashings of DV validators.
    pub violations: Vec<Violation>,
    /// Every slashing on the canonical chain, whatever the group.
    #[serde(default)]
    pub onchain_slashings: Vec<OnchainSlashing>,
}

/// Consensus and signing figures of one dvnode, from its duty log (duties in the window).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Cluster.
    pub cluster: String,
    /// Closed duties the node logged.
    pub duties_logged: u64,
    /// Outcome (`success` or the tracker's reason) → count.
    pub outcomes: BTreeMap<String, u64>,
    /// Duties with a consensus decision.
    pub consensus_decided: u64,
    /// Mean deciding round.
    pub consensus_round_mean: Option<f64>,
    /// Highest deciding round.
    pub consensus_round_max: Option<u64>,
    /// Median consensus duration (seconds).
    pub consensus_seconds_p50: Option<f64>,
    /// 99th percentile of the consensus duration (seconds).
    pub consensus_seconds_p99: Option<f64>,
    /// Share of the cluster's successful duty records (on every node) that hold this node's
    /// partial signature.
    pub partial_participation: Option<f64>,
}

/// Attestation figures of one group over a set of slots (a fault window, or outside all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// Attestation duties, those whose attestation was included on chain, and the rate
    /// (flattened: `duties`, `included`, `inclusion_rate` are keys of the window's object).
    #[serde(flatten)]
    pub tally: Tally,
    /// Missed attestation duties of a DV cluster by the dvnode tracker's reason.
    pub missed_by_reason: BTreeMap<String, u64>,
    /// DV clusters: attestations of duties inside the window that were included in a block
    /// of the window itself, i.e. signed while the fault was active.
    pub included_during: u64,
    /// First slot at or after the heal whose attestation duties of the group were all
    /// included (`None`: not within the analysed window, or the fault never healed).
    pub recovery_slot: Option<u64>,
    /// DV clusters in remote-signer mode: aggregation and sync-contribution duties for slots
    /// of the window and those submitted (flattened, after the fields above; `null` for the
    /// other groups, as at group level).
    #[serde(flatten)]
    pub aggregation: Aggregations,
}

/// Consensus of one dvnode during a fault window, from its duty log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRounds {
    /// Closed duties the node logged for slots in the window.
    pub duties_logged: u64,
    /// Of those, decided by consensus.
    pub decided: u64,
    /// Mean deciding round.
    pub round_mean: Option<f64>,
    /// Highest deciding round.
    pub round_max: Option<u64>,
    /// First slot at or after the heal whose successful duty record in the node's cluster
    /// holds its partial signature (`None`: not seen again, or the fault never healed).
    #[serde(default)]
    pub recovery_slot: Option<u64>,
    /// `recovery_slot` − the cluster's first slot at or after the heal with a successful
    /// duty: slots the cluster went on without this node's partials.
    #[serde(default)]
    pub recovery_slots: Option<u64>,
    /// Share of the node's cluster's successful duty records (any node's) for slots in the
    /// window that hold the node's partial signature (`None`: the cluster had none).
    #[serde(default)]
    pub partial_participation: Option<f64>,
}

/// What one fault cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultStats {
    /// Fault id in the run's timeline.
    pub fault: u64,
    /// Kind (`partition`, `crash`, …).
    pub kind: String,
    /// Targets (container short names).
    pub targets: Vec<String>,
    /// Parameters, e.g. partition groups or delay.
    pub detail: String,
    /// Slot the fault started in.
    pub start_slot: u64,
    /// Slot the fault ended (healed, restarted) in; `None`: lasted to the end.
    pub end_slot: Option<u64>,
    /// Wall time (UNIX seconds) it started.
    pub start_time: f64,
    /// Wall time it ended.
    pub end_time: Option<f64>,
    /// First attestation slot counted inside the window: the start slot when the fault was in
    /// effect from its start, else the next one (the start slot is then a transition slot,
    /// counted neither inside nor outside any window).
    pub first_duty_slot: u64,
    /// First attestation slot after the window, by the same rule (`None`: never healed).
    pub heal_slot: Option<u64>,
    /// Figures per group for duties inside the window.
    pub groups: BTreeMap<String, WindowStats>,
    /// Latest recovery slot over the DV clusters (`None` when one did not recover).
    pub recovery_slot: Option<u64>,
    /// Worst, over the DV clusters, of (recovery slot − the cluster's first duty slot at or
    /// after the heal): slots a cluster with something to do took to be whole again. Slots
    /// after the heal in which it had no duty do not count against it. `None` as above.
    #[serde(default)]
    pub recovery_slots: Option<u64>,
    /// Consensus per dvnode during the window.
    pub nodes: BTreeMap<String, NodeRounds>,
    /// Errors the executor reported for this fault.
    pub error: Option<String>,
}

/// Missed duties of the DV clusters: group → duty kind → reason → count.
pub type MissedDuties = BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>;

/// Everything the report shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Per group.
    pub groups: BTreeMap<String, GroupStats>,
    /// Per group and epoch.
    pub epochs: Vec<EpochRate>,
    /// Audit.
    pub slashing_audit: SlashingAudit,
    /// Highest finalized epoch any beacon node reported.
    pub finalized_epoch: Option<u64>,
    /// Missed duties of the DV clusters with the tracker's reason: group → duty kind
    /// (`attester`, `proposer`, `sync_message`; in remote-signer mode also `aggregation` and
    /// `sync_contribution`, whose reason is the outcome most of the nodes logged) → reason →
    /// count. The reason of a miss is
    /// `not_included_onchain` when some dvnode broadcast the duty, else the outcome most of
    /// the nodes logged, else `no_duty_record`.
    #[serde(default)]
    pub missed_duties: MissedDuties,
    /// Per dvnode (container name).
    #[serde(default)]
    pub dvnodes: BTreeMap<String, NodeStats>,
    /// Per executed fault: what it cost.
    #[serde(default)]
    pub faults: Vec<FaultStats>,
    /// Per group: duties outside every fault window.
    #[serde(default)]
    pub outside_faults: BTreeMap<String, WindowStats>,
    /// Per group: duties inside any fault window.
    #[serde(default)]
    pub during_faults: BTreeMap<String, WindowStats>,
    /// The control the DV clusters are compared with inside the fault windows
    /// (`dv_baseline_gap_during_faults`).
    #[serde(default)]
    pub fault_control: FaultControl,
    /// Per group: duties outside every fault window and every recovery period (heal slot up
    /// to the recovery slot; to the end when a fault never recovered): the steady state.
    #[serde(default)]
    pub steady: BTreeMap<String, WindowStats>,
    /// Per group and slot: attestation duties and inclusions (for the per-slot plot).
    #[serde(default)]
    pub slots: Vec<SlotRate>,
    /// Share of sampled instants in the window at which every beacon node reported the same
    /// head.
    #[serde(default)]
    pub head_agreement: Option<f64>,
    /// Abandoned branches.
    #[serde(default)]
    pub reorgs: Reorgs,
    /// Finality delay and time to the first finalized epoch.
    #[serde(default)]
    pub finality: Finality,
}

/// What the DV clusters' attestations inside the fault windows are compared with. Every plain
/// (non-DV) validator — the baseline and the keepers, unmodified Lodestar VCs on the same beacon
/// nodes — is a control, and a DV duty is compared only with the plain duties of its own slot:
/// a DV duty's *expected* inclusion is the plain validators' inclusion rate in that slot (1 in
/// a slot without any plain duty: no excuse without evidence). A slot the whole devnet lost then
/// costs the DV only what it cost the plain validators; a miss of the DV alone counts in full.
/// The baseline-only and the pooled all-plain figures are kept beside it for comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultControl {
    /// Which gap `dv_baseline_gap_during_faults` asserts (`matched_gap`).
    pub asserted: String,
    /// The baseline group inside the fault windows (the reference before the slot match).
    pub baseline: Tally,
    /// Every plain validator (baseline and keepers) inside the fault windows, pooled.
    pub plain: Tally,
    /// Per DV cluster.
    pub clusters: BTreeMap<String, ClusterGap>,
}

/// Attestation duties and inclusions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// Duties.
    pub duties: u64,
    /// Included on chain.
    pub included: u64,
    /// `included / duties`.
    pub inclusion_rate: Option<f64>,
}

// Counting is the lab's fault-control analysis (control.rs); without `lab` only the type is used.
#[cfg(feature = "lab")]
impl Tally {
    /// Counts one duty.
    pub(crate) fn add(&mut self, included: bool) {
        self.duties += 1;
        self.included += u64::from(included);
    }

    /// With the inclusion rate of the duties counted (`None` without any).
    pub(crate) fn close(mut self) -> Tally {
        self.inclusion_rate = (self.duties > 0).then(|| self.included as f64 / self.duties as f64);
        self
    }
}

/// One DV cluster inside the fault windows against its controls; each gap is
/// reference − the cluster's rate (≤ 0: the cluster did as well as the reference).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterGap {
    /// The cluster's duties inside the fault windows.
    pub own: Tally,
    /// Mean, over the cluster's duties, of the plain validators' inclusion rate in the duty's
    /// slot.
    pub matched_expected_rate: Option<f64>,
    /// The cluster's duties in slots without any plain duty (expected to be included).
    pub unmatched_duties: u64,
    /// Baseline's rate − the cluster's.
    pub baseline_gap: Option<f64>,
    /// All plain validators' pooled rate − the cluster's.
    pub plain_gap: Option<f64>,
    /// `matched_expected_rate` − the cluster's rate: what `dv_baseline_gap_during_faults`
    /// asserts (`None` without any plain duty inside the windows: nothing to compare with).
    pub matched_gap: Option<f64>,
}

/// Attestation duties and inclusions of one group in one slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotRate {
    /// Group.
    pub group: String,
    /// Slot.
    pub slot: u64,
    /// Duties.
    pub duties: u64,
    /// Included.
    pub included: u64,
}

/// Share of attestation duties whose attestation was included on chain in time with a
/// correct vote, flag by flag as the beacon state's Altair participation flags count them:
/// `source` within ⌊√SLOTS_PER_EPOCH⌋ slots, `target` within SLOTS_PER_EPOCH slots, `head`
/// in the next slot with the canonical head. A missed duty counts against all three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Participation {
    /// Timely correct source.
    pub source: f64,
    /// Timely correct target.
    pub target: f64,
    /// Timely correct head.
    pub head: f64,
}

/// Abandoned branches: blocks some beacon node imported that are not on the final canonical
/// chain, grouped by parent into branches (a branch is a chain of such blocks ending in one
/// without a non-canonical child; its depth is its length in blocks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reorgs {
    /// Branches abandoned (blocks of the analysed window).
    pub count: u64,
    /// Longest branch abandoned, in blocks (0 without any).
    pub max_depth: u64,
}

/// Finality as the beacon nodes reported it (sampled once per slot; at each instant the
/// highest finalized epoch any beacon node reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Finality {
    /// Seconds from genesis to the first sample with a finalized epoch above 0 (`None`:
    /// never finalized).
    pub first_finalized_seconds: Option<f64>,
    /// Highest (current epoch − finalized epoch) over the samples in the analysed window.
    pub max_delay_epochs: Option<u64>,
    /// (current epoch − finalized epoch) at the last sample in the analysed window.
    pub end_delay_epochs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window's object in report.json keeps the keys and order it had before [`Tally`] was
    /// embedded — `duties`, `included`, `inclusion_rate` first, then the window's own fields —
    /// and ends with the aggregation figures under the names they have at group level
    /// (`null` for a group without them).
    #[test]
    fn window_stats_serialise_as_before_the_tally_was_embedded() {
        let mut w = WindowStats {
            missed_by_reason: BTreeMap::from([("no_consensus".into(), 1)]),
            included_during: 1,
            recovery_slot: Some(27),
            ..WindowStats::default()
        };
        for included in [true, true, false] {
            w.tally.add(included);
        }
        w.tally = w.tally.close();
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(
            json,
            r#"{"duties":3,"included":2,"inclusion_rate":0.6666666666666666,"missed_by_reason":{"no_consensus":1},"included_during":1,"recovery_slot":27,"aggregation_duties":null,"aggregations_submitted":null,"sync_contribution_duties":null,"sync_contributions_submitted":null}"#
        );
        assert_eq!(serde_json::from_str::<WindowStats>(&json).unwrap(), w);
        // A remote-signer cluster's window.
        w.aggregation.set(AggregationKind::Aggregation, 4, 3);
        w.aggregation.set(AggregationKind::SyncContribution, 0, 0);
        let json = serde_json::to_string(&w).unwrap();
        assert!(
            json.ends_with(
                r#""recovery_slot":27,"aggregation_duties":4,"aggregations_submitted":3,"sync_contribution_duties":0,"sync_contributions_submitted":0}"#
            ),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<WindowStats>(&json).unwrap(), w);
        // Pretty (as report.json is written) and without duties: a null rate.
        let empty = serde_json::to_string_pretty(&WindowStats::default()).unwrap();
        assert_eq!(
            empty,
            "{\n  \"duties\": 0,\n  \"included\": 0,\n  \"inclusion_rate\": null,\n  \
             \"missed_by_reason\": {},\n  \"included_during\": 0,\n  \"recovery_slot\": null,\n  \
             \"aggregation_duties\": null,\n  \"aggregations_submitted\": null,\n  \
             \"sync_contribution_duties\": null,\n  \"sync_contributions_submitted\": null\n}"
        );
        assert_eq!(
            serde_json::from_str::<WindowStats>(&empty).unwrap(),
            WindowStats::default()
        );
        // A window of a report.json written before the figures existed reads as without them.
        let old = r#"{"duties":3,"included":2,"inclusion_rate":0.6666666666666666,"missed_by_reason":{"no_consensus":1},"included_during":1,"recovery_slot":27}"#;
        let read = serde_json::from_str::<WindowStats>(old).unwrap();
        assert_eq!(read.aggregation, Aggregations::default());
        assert_eq!(read.tally, w.tally);
    }

    /// A group's object keeps its keys and their order: the aggregation figures, now one
    /// embedded [`Aggregations`], are still its last four keys.
    #[test]
    fn group_stats_keep_the_aggregation_keys_last() {
        let mut g = GroupStats::default();
        g.aggregation.set(AggregationKind::Aggregation, 8, 6);
        let v = serde_json::to_value(&g).unwrap();
        let json = serde_json::to_string(&g).unwrap();
        assert!(
            json.ends_with(
                r#""participation":null,"aggregation_duties":8,"aggregations_submitted":6,"sync_contribution_duties":null,"sync_contributions_submitted":null}"#
            ),
            "{json}"
        );
        assert_eq!(v["aggregation_duties"], 8);
        assert_eq!(serde_json::from_value::<GroupStats>(v).unwrap(), g);
    }
}
