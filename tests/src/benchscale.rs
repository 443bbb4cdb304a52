//! `bench-scale` figures: one summary row per validator count and mode, computed from what the
//! simulated beacon node received ([`crate::simbn::Record`]), what the simulated VCs waited
//! for ([`crate::simvc::DataRequest`]), the dvnodes' duty logs and `/metrics`, and the
//! processes' CPU time and peak RSS.
//!
//! A row's `mode` is `middleware` (the VCs hold the key shares) or `remote` (dvnode is the VCs'
//! beacon node and Web3Signer, `dvnode run --signer remote`), the names of `--modes`.
//!
//! Definitions (`target/bench-scale/summary.json`, one object per row):
//! - `duties`: DV duties in the measured slots — one attestation per attesting DV and slot,
//!   one block per slot whose proposer is a DV, one sync committee message per DV member and
//!   slot; in remote mode also one aggregate per DV aggregator and slot and one sync
//!   contribution per DV sync aggregator and slot (any of its subcommittees), by kind
//!   `aggregation` and `sync_contribution`;
//! - `missed`: duties whose signed object never reached the beacon node valid; `late`: reached
//!   it after 2/3 of its slot (attestation, sync message: when aggregators aggregate), after
//!   1/3 of its slot (block: 4 s of a 12 s slot) or after its slot (aggregate, contribution);
//! - `vc_request_to_decided_ms`: how long a VC's request for data to sign (attestation data,
//!   block) took to be answered with the decided value (the goal figure, the same requests in
//!   both modes); `vc_request_by_kind` also shows, in remote mode, the aggregation requests
//!   (`aggregate_attestation`, `sync_committee_contribution`: sent at 2/3 of the slot, answered
//!   with the cluster's decided aggregate / contribution), which the goal figure leaves out;
//! - `sign_request_ms`, `sign_requests_by_type` (remote mode): the VCs' Web3Signer requests to
//!   their dvnode, request → combined signature answered (p50/p99 of those answered; count and
//!   failures per Web3Signer `type`);
//! - `last_partial_to_broadcast_ms`: from the threshold-th partial signature at a node (its duty
//!   log's `last_partial`) to that node's signed object arriving at the beacon node, per node
//!   and DV duty;
//! - `consensus_ms`: consensus duration per node and duty (duty log);
//! - `slashing_db_ms_per_duty`, `partial_verify_ms_per_slot`, `p2p_bytes_per_slot`: from each
//!   node's `/metrics` (mean per node; `null` when the node does not export them);
//!   `p2p_bytes_per_slot` is the increase of `p2p_message_bytes_sent_total` summed over its
//!   `protocol` series (request frames written to peer streams: length prefix + envelope) per
//!   slot, `p2p_bytes_received_per_slot` the same of `p2p_message_bytes_received_total`;
//! - `cpu_seconds_per_slot`: user + system CPU of a dvnode process over the measured slots, per
//!   slot, mean over the nodes; `rss_mib_max`: the largest peak RSS (`VmHWM`) of a node.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::dutylog::DutyLog;
use crate::simbn::{ObjectKind, Record};
use crate::simvc::{DataRequest, SignRecord};
use dvnode::duty::DutyKind;
use dvnode::tracker::Stage;

/// The goal of the issue, per row.
pub const GOAL_LAST_PARTIAL_TO_BROADCAST_P99_MS: f64 = 1000.0;
/// VC request → decided p99.
pub const GOAL_VC_REQUEST_TO_DECIDED_P99_MS: f64 = 500.0;
/// Peak RSS per node.
pub const GOAL_RSS_MIB: f64 = 300.0;

/// p50 and p99 of a sample (nearest rank), milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// Nearest-rank p50 and p99; `None` for an empty sample.
pub fn percentiles(samples: &[f64]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let r = ((p / 100.0) * s.len() as f64).ceil() as usize;
        s[r.clamp(1, s.len()) - 1]
    };
    Some(Percentiles {
        p50: rank(50.0),
        p99: rank(99.0),
    })
}

/// The duty-log kind of an object kind.
pub fn duty_kind(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Attestation => "attester",
        ObjectKind::Block => "proposer",
        ObjectKind::SyncMessage => "sync_message",
        ObjectKind::Aggregate => "aggregation",
        ObjectKind::Contribution => "sync_contribution",
    }
}

/// When an object is late: its slot start plus this many ms.
pub fn late_after_ms(kind: ObjectKind, slot_ms: u64) -> u64 {
    match kind {
        ObjectKind::Attestation | ObjectKind::SyncMessage => slot_ms * 2 / 3,
        ObjectKind::Block => slot_ms / 3,
        // Aggregates and contributions are late after their slot ends (the next slot's
        // proposer packs them).
        ObjectKind::Aggregate | ObjectKind::Contribution => slot_ms,
    }
}

/// The sum of every sample of metric `name` (any labels) in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// One node's measurements over the window.
#[derive(Clone, Debug, Default)]
pub struct NodeFigures {
    /// CPU seconds (user + system) over the measured slots.
    pub cpu_seconds: f64,
    /// Peak RSS, KiB.
    pub peak_rss_kib: u64,
    /// `/metrics` text at the end of the run.
    pub metrics: String,
    /// `/metrics` text at the start of the measured slots.
    pub metrics_at_start: String,
    /// Duty log.
    pub duty_log: DutyLog,
}

impl NodeFigures {
    /// The increase of metric `name` over the window.
    fn delta(&self, name: &str) -> Option<f64> {
        let end = metric_sum(&self.metrics, name)?;
        Some(end - metric_sum(&self.metrics_at_start, name).unwrap_or(0.0))
    }
}

/// Everything a row is computed from.
pub struct RowInput<'a> {
    /// DV count.
    pub validators: u64,
    /// Validators of the simulated network.
    pub network_validators: u64,
    /// `middleware` or `remote`.
    pub mode: String,
    /// Measured slots `[first_slot, end_slot)`.
    pub first_slot: u64,
    /// End of the measured slots (exclusive).
    pub end_slot: u64,
    /// Slot duration (ms).
    pub slot_ms: u64,
    /// Start of slot 0 (Unix ms).
    pub genesis_ms: u64,
    /// The DV duties of the measured slots.
    pub expected: Vec<(ObjectKind, u64, u64)>,
    /// What the beacon node received.
    pub record: &'a Record,
    /// The VCs' requests for data to sign.
    pub vc_requests: Vec<DataRequest>,
    /// The VCs' Web3Signer sign requests (remote mode; empty in middleware mode).
    pub sign_requests: Vec<SignRecord>,
    /// Per node.
    pub nodes: Vec<NodeFigures>,
    /// CPU seconds of the harness itself (simulated BN and VCs) over the window.
    pub harness_cpu_seconds: f64,
}

/// One summary row. The first fields are the issue's contract; the rest explain them.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// DVs in the cluster.
    pub validators: u64,
    /// `middleware` or `remote`.
    pub mode: String,
    /// DV duties in the measured slots.
    pub duties: u64,
    /// Duties whose object never reached the beacon node.
    pub missed: u64,
    /// Duties whose object reached it after the deadline.
    pub late: u64,
    /// VC request → decided value answered.
    pub vc_request_to_decided_ms: Option<Percentiles>,
    /// Last partial → signed object at the beacon node.
    pub last_partial_to_broadcast_ms: Option<Percentiles>,
    /// Consensus duration.
    pub consensus_ms: Option<Percentiles>,
    /// Slashing DB time per duty (ms).
    pub slashing_db_ms_per_duty: Option<f64>,
    /// Partial signature verification per slot (ms, per node).
    pub partial_verify_ms_per_slot: Option<f64>,
    /// dvnode CPU per slot (seconds, mean per node).
    pub cpu_seconds_per_slot: f64,
    /// Largest peak RSS of a node (MiB).
    pub rss_mib_max: f64,
    /// p2p bytes sent per slot (mean per node).
    pub p2p_bytes_per_slot: Option<f64>,
    /// Validators of the simulated network (the cluster's and others').
    pub network_validators: u64,
    /// Measured slots.
    pub slots: u64,
    /// Slot duration (seconds).
    pub seconds_per_slot: f64,
    /// Duties, missed and late by kind (`attester`, `proposer`, `sync_message`; remote mode also
    /// `aggregation`, `sync_contribution`).
    pub by_kind: BTreeMap<String, KindFigures>,
    /// VC request → decided by request kind.
    pub vc_request_by_kind: BTreeMap<String, Percentiles>,
    /// VC requests for data that failed.
    pub vc_request_errors: u64,
    /// Web3Signer request → signature (remote mode; `None` without a sign request).
    pub sign_request_ms: Option<Percentiles>,
    /// Web3Signer requests by `type` (remote mode).
    pub sign_requests_by_type: BTreeMap<String, SignFigures>,
    /// dvnode CPU per slot per 1,000 validators (seconds).
    pub cpu_seconds_per_slot_per_1000_validators: f64,
    /// CPU per slot of the harness (simulated BN and VCs, seconds).
    pub harness_cpu_seconds_per_slot: f64,
    /// p2p bytes received per slot (mean per node).
    pub p2p_bytes_received_per_slot: Option<f64>,
    /// Objects the beacon node refused, by kind.
    pub refused: BTreeMap<String, u64>,
    /// Whether the row meets every goal figure of the issue.
    pub meets_goal: bool,
    /// Which goal figures it misses.
    pub misses_goal: Vec<String>,
}

/// Duties of one kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindFigures {
    /// Expected.
    pub duties: u64,
    /// Never arrived.
    pub missed: u64,
    /// Arrived late.
    pub late: u64,
    /// Arrival after the slot start, p50/p99 (ms).
    pub arrival_ms: Option<Percentiles>,
}

/// Sign requests of one Web3Signer `type`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SignFigures {
    /// Requests sent (in the measured slots).
    pub requests: u64,
    /// Of those, failed (no signature).
    pub errors: u64,
    /// Request → signature of those answered, p50/p99 (ms).
    pub latency_ms: Option<Percentiles>,
}

fn per_node_mean(nodes: &[NodeFigures], f: impl Fn(&NodeFigures) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = nodes.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Computes a row (see the [module docs](self)).
pub fn compute_row(input: RowInput<'_>) -> Row {
    let slots = input.end_slot.saturating_sub(input.first_slot).max(1);
    let in_window = |slot: u64| (input.first_slot..input.end_slot).contains(&slot);
    let mut by_kind: BTreeMap<String, KindFigures> = BTreeMap::new();
    let mut arrivals_by_kind: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for &(kind, slot, v) in &input.expected {
        let k = by_kind.entry(duty_kind(kind).to_string()).or_default();
        k.duties += 1;
        let start = input.genesis_ms + slot * input.slot_ms;
        match input.record.arrivals.get(&(kind, slot, v)) {
            None => k.missed += 1,
            Some(a) => {
                if a.first_ms > start + late_after_ms(kind, input.slot_ms) {
                    k.late += 1;
                }
                arrivals_by_kind
                    .entry(duty_kind(kind))
                    .or_default()
                    .push(a.first_ms.saturating_sub(start) as f64);
            }
        }
    }
    for (kind, samples) in arrivals_by_kind {
        if let Some(k) = by_kind.get_mut(kind) {
            k.arrival_ms = percentiles(&samples);
        }
    }
    let duties = by_kind.values().map(|k| k.duties).sum();
    let missed = by_kind.values().map(|k| k.missed).sum();
    let late = by_kind.values().map(|k| k.late).sum();

    let ok_requests: Vec<&DataRequest> = input
        .vc_requests
        .iter()
        .filter(|r| in_window(r.slot) && r.error.is_none())
        .collect();
    let vc_request_errors = input
        .vc_requests
        .iter()
        .filter(|r| in_window(r.slot) && r.error.is_some())
        .count() as u64;
    const GOAL_KINDS: [&str; 2] = ["attestation_data", "block"];
    let all: Vec<f64> = ok_requests
        .iter()
        .filter(|r| GOAL_KINDS.contains(&r.kind))
        .map(|r| r.latency_ms)
        .collect();
    let mut vc_request_by_kind = BTreeMap::new();
    for kind in GOAL_KINDS
        .into_iter()
        .chain(["aggregate_attestation", "sync_committee_contribution"])
    {
        let s: Vec<f64> = ok_requests
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.latency_ms)
            .collect();
        if let Some(p) = percentiles(&s) {
            vc_request_by_kind.insert(kind.to_string(), p);
        }
    }

    let signs: Vec<&SignRecord> = input
        .sign_requests
        .iter()
        .filter(|r| in_window(r.slot))
        .collect();
    let sign_request_ms = percentiles(
        &signs
            .iter()
            .filter(|r| r.error.is_none())
            .map(|r| r.latency_ms)
            .collect::<Vec<_>>(),
    );
    let mut sign_requests_by_type: BTreeMap<String, SignFigures> = BTreeMap::new();
    let mut sign_samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in &signs {
        let f = sign_requests_by_type.entry(r.kind.to_string()).or_default();
        f.requests += 1;
        if r.error.is_some() {
            f.errors += 1;
        } else {
            sign_samples.entry(r.kind).or_default().push(r.latency_ms);
        }
    }
    for (kind, samples) in sign_samples {
        if let Some(f) = sign_requests_by_type.get_mut(kind) {
            f.latency_ms = percentiles(&samples);
        }
    }

    let kind_of = |k: DutyKind| match k {
        DutyKind::Attester => Some(ObjectKind::Attestation),
        DutyKind::Proposer => Some(ObjectKind::Block),
        DutyKind::SyncMessage => Some(ObjectKind::SyncMessage),
        DutyKind::Aggregation => Some(ObjectKind::Aggregate),
        DutyKind::SyncContribution => Some(ObjectKind::Contribution),
        _ => None,
    };
    let mut broadcast = Vec::new();
    let mut consensus = Vec::new();
    for (node, n) in input.nodes.iter().enumerate() {
        let mut seen_duty = std::collections::HashSet::new();
        for r in &n.duty_log.records {
            if !in_window(r.duty.slot) {
                continue;
            }
            let Some(kind) = kind_of(r.duty.kind) else {
                continue;
            };
            if let (Some(lp), Some(v)) = (r.stages.get(&Stage::LastPartial), r.validator_index) {
                let arrived = input
                    .record
                    .arrivals
                    .get(&(kind, r.duty.slot, v))
                    .and_then(|a| a.nodes.get(node).copied().flatten());
                if let Some(t) = arrived {
                    broadcast.push(t.saturating_sub(*lp as u64) as f64);
                }
            }
            if let Some(secs) = r.consensus_seconds {
                if seen_duty.insert(r.duty) {
                    consensus.push(secs * 1000.0);
                }
            }
        }
    }

    let slashing_db_ms_per_duty = per_node_mean(&input.nodes, |n| {
        let secs = n.delta("decide_slashing_db_seconds_sum")?;
        let count = n.delta("decide_slashing_db_seconds_count")?;
        (count > 0.0).then(|| secs * 1000.0 / count)
    });
    let partial_verify_ms_per_slot = per_node_mean(&input.nodes, |n| {
        n.delta("parsig_verify_seconds_sum")
            .map(|s| s * 1000.0 / slots as f64)
    });
    let p2p_bytes_per_slot = per_node_mean(&input.nodes, |n| {
        n.delta("p2p_message_bytes_sent_total")
            .map(|b| b / slots as f64)
    });
    let p2p_bytes_received_per_slot = per_node_mean(&input.nodes, |n| {
        n.delta("p2p_message_bytes_received_total")
            .map(|b| b / slots as f64)
    });
    let cpu_seconds_per_slot =
        per_node_mean(&input.nodes, |n| Some(n.cpu_seconds / slots as f64)).unwrap_or_default();
    let rss_mib_max = input
        .nodes
        .iter()
        .map(|n| n.peak_rss_kib as f64 / 1024.0)
        .fold(0.0, f64::max);

    let vc = percentiles(&all);
    let lp = percentiles(&broadcast);
    let mut misses_goal = Vec::new();
    if missed > 0 {
        misses_goal.push(format!("{missed} duties missed"));
    }
    if late > 0 {
        misses_goal.push(format!("{late} duties late"));
    }
    match lp {
        Some(p) if p.p99 <= GOAL_LAST_PARTIAL_TO_BROADCAST_P99_MS => {}
        Some(p) => misses_goal.push(format!(
            "last partial → broadcast p99 {:.0} ms > {GOAL_LAST_PARTIAL_TO_BROADCAST_P99_MS} ms",
            p.p99
        )),
        None => misses_goal.push("no last partial → broadcast sample".into()),
    }
    match vc {
        Some(p) if p.p99 <= GOAL_VC_REQUEST_TO_DECIDED_P99_MS => {}
        Some(p) => misses_goal.push(format!(
            "VC request → decided p99 {:.0} ms > {GOAL_VC_REQUEST_TO_DECIDED_P99_MS} ms",
            p.p99
        )),
        None => misses_goal.push("no VC request sample".into()),
    }
    if rss_mib_max > GOAL_RSS_MIB {
        misses_goal.push(format!(
            "peak RSS {rss_mib_max:.0} MiB > {GOAL_RSS_MIB} MiB"
        ));
    }
    Row {
        validators: input.validators,
        mode: input.mode,
        duties,
        missed,
        late,
        vc_request_to_decided_ms: vc,
        last_partial_to_broadcast_ms: lp,
        consensus_ms: percentiles(&consensus),
        slashing_db_ms_per_duty,
        partial_verify_ms_per_slot,
        cpu_seconds_per_slot,
        rss_mib_max,
        p2p_bytes_per_slot,
        network_validators: input.network_validators,
        slots,
        seconds_per_slot: input.slot_ms as f64 / 1000.0,
        by_kind,
        vc_request_by_kind,
        vc_request_errors,
        sign_request_ms,
        sign_requests_by_type,
        cpu_seconds_per_slot_per_1000_validators: cpu_seconds_per_slot * 1000.0
            / input.validators.max(1) as f64,
        harness_cpu_seconds_per_slot: input.harness_cpu_seconds / slots as f64,
        p2p_bytes_received_per_slot,
        refused: input.record.invalid.clone(),
        meets_goal: misses_goal.is_empty(),
        misses_goal,
    }
}

fn fmt_p(p: &Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{:.0}/{:.0}", p.p50, p.p99),
        None => "-".into(),
    }
}

fn fmt_o(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The summary table (one line per row).
pub fn table(rows: &[Row]) -> String {
    let header = [
        "validators",
        "mode",
        "duties",
        "missed",
        "late",
        "vc→decided p50/p99",
        "partial→bcast p50/p99",
        "consensus p50/p99",
        "slashdb ms/duty",
        "verify ms/slot",
        "cpu s/slot",
        "cpu s/slot/1k",
        "rss MiB",
        "p2p KB/slot",
        "goal",
    ];
    let mut lines = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for r in rows {
        lines.push(vec![
            r.validators.to_string(),
            r.mode.clone(),
            r.duties.to_string(),
            r.missed.to_string(),
            r.late.to_string(),
            fmt_p(&r.vc_request_to_decided_ms),
            fmt_p(&r.last_partial_to_broadcast_ms),
            fmt_p(&r.consensus_ms),
            fmt_o(r.slashing_db_ms_per_duty, 2),
            fmt_o(r.partial_verify_ms_per_slot, 0),
            format!("{:.2}", r.cpu_seconds_per_slot),
            format!("{:.3}", r.cpu_seconds_per_slot_per_1000_validators),
            format!("{:.0}", r.rss_mib_max),
            fmt_o(r.p2p_bytes_per_slot.map(|b| b / 1000.0), 0),
            if r.meets_goal {
                "met".into()
            } else {
                "MISSED".into()
            },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    lines
        .iter()
        .map(|l| {
            l.iter()
                .zip(&widths)
                .map(|(s, w)| format!("{s:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simbn::Arrival;

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentiles(&[]), None);
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            percentiles(&s),
            Some(Percentiles {
                p50: 50.0,
                p99: 99.0
            })
        );
        assert_eq!(
            percentiles(&[7.0]),
            Some(Percentiles { p50: 7.0, p99: 7.0 })
        );
    }

    #[test]
    fn metrics_are_summed_over_labels_and_exact_names() {
        let text = "# HELP x\nparsig_verify_seconds_sum{source=\"local\"} 1.5\nparsig_verify_seconds_sum{source=\"peer\"} 2\nparsig_verify_seconds_sum_other 9\nparsig_verify_seconds_count 4\n";
        assert_eq!(metric_sum(text, "parsig_verify_seconds_sum"), Some(3.5));
        assert_eq!(metric_sum(text, "parsig_verify_seconds_count"), Some(4.0));
        assert_eq!(metric_sum(text, "absent"), None);
    }

    #[test]
    fn p2p_bytes_per_slot_sums_the_protocol_series_of_each_node() {
        // As dvnode exports them (prometheus-client, OpenMetrics text).
        let exposition = |qbft: u64, parsig: u64, dkg: u64, received: u64| {
            format!(
                "# HELP p2p_message_bytes_sent Bytes of request frames written to peer streams.\n\
                 # TYPE p2p_message_bytes_sent counter\n\
                 p2p_message_bytes_sent_total{{protocol=\"qbft\"}} {qbft}\n\
                 p2p_message_bytes_sent_total{{protocol=\"parsig\"}} {parsig}\n\
                 p2p_message_bytes_sent_total{{protocol=\"dkg\"}} {dkg}\n\
                 # TYPE p2p_message_bytes_received counter\n\
                 p2p_message_bytes_received_total{{protocol=\"qbft\"}} {received}\n\
                 p2p_messages_sent_total{{protocol=\"qbft\"}} 99999\n\
                 # EOF\n"
            )
        };
        let node = |start: String, end: String| NodeFigures {
            metrics_at_start: start,
            metrics: end,
            ..Default::default()
        };
        let row = |nodes: Vec<NodeFigures>| {
            compute_row(RowInput {
                validators: 1,
                network_validators: 1,
                mode: "middleware".into(),
                first_slot: 10,
                end_slot: 14,
                slot_ms: 12_000,
                genesis_ms: 0,
                expected: Vec::new(),
                record: &Record::default(),
                vc_requests: Vec::new(),
                sign_requests: Vec::new(),
                nodes,
                harness_cpu_seconds: 0.0,
            })
        };
        let r = row(vec![
            // (100 + 300 + 0) sent, 200 received over 4 slots.
            node(
                exposition(1_000, 500, 0, 700),
                exposition(1_100, 800, 0, 900),
            ),
            // A series that appeared during the window counts from 0.
            node("# EOF\n".into(), exposition(2_000, 2_000, 400, 1_600)),
        ]);
        assert_eq!(r.p2p_bytes_per_slot, Some((100.0 + 1_100.0) / 2.0));
        assert_eq!(r.p2p_bytes_received_per_slot, Some((50.0 + 400.0) / 2.0));
        // A node that does not export the counters is left out of the mean; none: null.
        let r = row(vec![
            node(String::new(), "# EOF\n".into()),
            node(exposition(0, 0, 0, 0), exposition(40, 0, 0, 0)),
        ]);
        assert_eq!(r.p2p_bytes_per_slot, Some(10.0));
        let r = row(vec![node(String::new(), "up 1\n".into())]);
        assert_eq!(
            (r.p2p_bytes_per_slot, r.p2p_bytes_received_per_slot),
            (None, None)
        );
    }

    #[test]
    fn missed_late_and_broadcast_latency_follow_the_definitions() {
        let mut record = Record::default();
        let slot_ms = 12_000;
        let genesis = 1_000_000;
        // Slot 1: attestation of v5 at 2 s (node 0) and 3 s (node 1); v6 at 9 s (late);
        // v7 never. Block of slot 1 at 5 s (late: after 4 s).
        let start = genesis + slot_ms;
        let arrive = |ms: Vec<Option<u64>>| Arrival {
            first_ms: ms.iter().flatten().min().copied().unwrap(),
            nodes: ms,
        };
        record.arrivals.insert(
            (ObjectKind::Attestation, 1, 5),
            arrive(vec![Some(start + 2000), Some(start + 3000)]),
        );
        record.arrivals.insert(
            (ObjectKind::Attestation, 1, 6),
            arrive(vec![Some(start + 9000), None]),
        );
        record.arrivals.insert(
            (ObjectKind::Block, 1, 2),
            arrive(vec![None, Some(start + 5000)]),
        );
        let log = |lines: &[String]| DutyLog::parse(&lines.join("\n"));
        let line = |v: u64, lp: u64, cs: f64| {
            format!(
                r#"{{"ts_ms":0,"duty":{{"slot":"1","kind":"attester"}},"outcome":"success","validator_index":"{v}","stages":{{"last_partial":{lp}}},"consensus_seconds":{cs},"shares":[1,2,3]}}"#
            )
        };
        let nodes = vec![
            NodeFigures {
                cpu_seconds: 6.0,
                peak_rss_kib: 100 * 1024,
                duty_log: log(&[line(5, start + 1500, 0.2), line(6, start + 8000, 0.2)]),
                ..Default::default()
            },
            NodeFigures {
                cpu_seconds: 2.0,
                peak_rss_kib: 400 * 1024,
                duty_log: log(&[line(5, start + 1000, 0.4)]),
                ..Default::default()
            },
        ];
        let row = compute_row(RowInput {
            validators: 8,
            network_validators: 8,
            mode: "middleware".into(),
            first_slot: 1,
            end_slot: 2,
            slot_ms,
            genesis_ms: genesis,
            expected: vec![
                (ObjectKind::Attestation, 1, 5),
                (ObjectKind::Attestation, 1, 6),
                (ObjectKind::Attestation, 1, 7),
                (ObjectKind::Block, 1, 2),
            ],
            record: &record,
            vc_requests: vec![DataRequest {
                slot: 1,
                kind: "attestation_data",
                sent_ms: start,
                latency_ms: 120.0,
                error: None,
            }],
            sign_requests: Vec::new(),
            nodes,
            harness_cpu_seconds: 1.0,
        });
        assert_eq!((row.duties, row.missed, row.late), (4, 1, 2));
        assert_eq!(row.by_kind["proposer"].late, 1);
        // node 0: v5 2000-1500, v6 9000-8000; node 1: v5 3000-1000.
        let lp = row.last_partial_to_broadcast_ms.unwrap();
        assert_eq!((lp.p50, lp.p99), (1000.0, 2000.0));
        // One consensus sample per node and duty.
        assert_eq!(row.consensus_ms.unwrap().p99, 400.0);
        assert_eq!(row.cpu_seconds_per_slot, 4.0);
        assert_eq!(row.rss_mib_max, 400.0);
        assert!(!row.meets_goal);
        assert!(row.misses_goal.iter().any(|m| m.contains("RSS")));
        assert!(table(&[row]).contains("MISSED"));
    }

    #[test]
    fn remote_rows_count_aggregations_late_after_their_slot_and_sign_requests() {
        let mut record = Record::default();
        let slot_ms = 12_000;
        let genesis = 1_000_000;
        let start = genesis + 2 * slot_ms;
        let arrive = |ms: u64| Arrival {
            first_ms: ms,
            nodes: vec![Some(ms)],
        };
        // Slot 2: aggregate of v3 at 8.5 s (in time: 2/3 is 8 s but aggregates are late only
        // after the slot), of v4 at 12.1 s (late, in the next slot), v5 never; contribution of
        // v6 at 11 s (in time), of v7 at 13 s (late). The attestation of v3 at 8.5 s is late.
        record
            .arrivals
            .insert((ObjectKind::Aggregate, 2, 3), arrive(start + 8_500));
        record
            .arrivals
            .insert((ObjectKind::Aggregate, 2, 4), arrive(start + 12_100));
        record
            .arrivals
            .insert((ObjectKind::Contribution, 2, 6), arrive(start + 11_000));
        record
            .arrivals
            .insert((ObjectKind::Contribution, 2, 7), arrive(start + 13_000));
        record
            .arrivals
            .insert((ObjectKind::Attestation, 2, 3), arrive(start + 8_500));
        let req = |kind, latency_ms, error: Option<&str>| DataRequest {
            slot: 2,
            kind,
            sent_ms: start,
            latency_ms,
            error: error.map(str::to_string),
        };
        let sign = |kind, latency_ms, error: Option<&str>| SignRecord {
            slot: 2,
            kind,
            sent_ms: start,
            latency_ms,
            error: error.map(str::to_string),
        };
        let row = compute_row(RowInput {
            validators: 8,
            network_validators: 8,
            mode: "remote".into(),
            first_slot: 2,
            end_slot: 3,
            slot_ms,
            genesis_ms: genesis,
            expected: vec![
                (ObjectKind::Attestation, 2, 3),
                (ObjectKind::Aggregate, 2, 3),
                (ObjectKind::Aggregate, 2, 4),
                (ObjectKind::Aggregate, 2, 5),
                (ObjectKind::Contribution, 2, 6),
                (ObjectKind::Contribution, 2, 7),
            ],
            record: &record,
            vc_requests: vec![
                req("attestation_data", 100.0, None),
                // Slow aggregation requests do not enter the goal figure.
                req("aggregate_attestation", 3_000.0, None),
                req("sync_committee_contribution", 2_000.0, Some("503")),
            ],
            sign_requests: vec![
                sign("ATTESTATION", 40.0, None),
                sign("ATTESTATION", 60.0, None),
                sign("AGGREGATE_AND_PROOF", 900.0, None),
                sign("AGGREGATION_SLOT", 5.0, Some("HTTP 503")),
            ],
            nodes: vec![NodeFigures::default()],
            harness_cpu_seconds: 0.0,
        });
        let agg = &row.by_kind["aggregation"];
        assert_eq!((agg.duties, agg.missed, agg.late), (3, 1, 1));
        let sc = &row.by_kind["sync_contribution"];
        assert_eq!((sc.duties, sc.missed, sc.late), (2, 0, 1));
        assert_eq!(row.by_kind["attester"].late, 1);
        assert_eq!((row.duties, row.missed, row.late), (6, 1, 3));
        assert_eq!(row.vc_request_to_decided_ms.unwrap().p99, 100.0);
        assert_eq!(row.vc_request_by_kind["aggregate_attestation"].p99, 3_000.0);
        assert!(!row
            .vc_request_by_kind
            .contains_key("sync_committee_contribution"));
        assert_eq!(row.vc_request_errors, 1);
        assert_eq!(row.sign_request_ms.unwrap().p99, 900.0);
        assert_eq!(row.sign_requests_by_type["ATTESTATION"].requests, 2);
        assert_eq!(
            row.sign_requests_by_type["ATTESTATION"]
                .latency_ms
                .unwrap()
                .p50,
            40.0
        );
        let slot_proofs = &row.sign_requests_by_type["AGGREGATION_SLOT"];
        assert_eq!((slot_proofs.requests, slot_proofs.errors), (1, 1));
        assert_eq!(slot_proofs.latency_ms, None);
        assert!(row.misses_goal.iter().any(|m| m.contains("3 duties late")));
    }
}
