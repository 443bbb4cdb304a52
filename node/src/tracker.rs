//! The tracker: which stage each duty reached, and why it failed.
//!
//! Every workflow stage reports to a [`Tracker`] (a cheap clone). When a duty's slot is old
//! enough ([`Tracker::finish_before`]), its record is closed: the outcome is `success` if the
//! signed object was broadcast, otherwise the first failure reported, or — if no stage reported
//! one — the reason implied by the last stage reached (fetched but not decided:
//! `no_consensus`; decided but no partial signature from the local VC: `no_local_vc_signature`;
//! local partial but no threshold: `insufficient_peer_signatures`; …). A closed record goes to
//! the metrics and, as one JSON line with per-stage timestamps, to the duty log.
//!
//! # Metrics
//! `duty_total{kind,outcome}`, `duty_failures_total{kind,reason}`,
//! `duty_consensus_rounds{kind}` and `duty_consensus_duration_seconds{kind}` (histograms),
//! `duty_partial_signatures_total{kind,share}` (participation per peer share index),
//! `duty_broadcast_delay_seconds{kind}` (from slot start).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tracing::warn;

use crate::duty::Duty;
use crate::eth::types::Slot;

/// Workflow stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The scheduler fired the duty.
    Scheduled,
    /// The unsigned data was fetched from the beacon node.
    Fetched,
    /// Consensus decided and the value is in the duty DB.
    Decided,
    /// The local VC's partial signature was accepted.
    LocalSigned,
    /// Threshold partial signatures were combined and verified.
    Aggregated,
    /// The signed object was accepted by the beacon node.
    Broadcast,
}

/// Why a duty failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The beacon node did not give the unsigned data.
    FetchBnError,
    /// Consensus did not decide in time (or refused to start).
    NoConsensus,
    /// The slashing DB refused the decided value; nothing was signed.
    SlashingRefused,
    /// The local validator client never sent its partial signature.
    NoLocalVcSignature,
    /// Fewer than threshold valid partial signatures arrived.
    InsufficientPeerSignatures,
    /// The beacon node refused or did not take the signed object.
    BroadcastBnError,
    /// Broadcast, but not seen on chain.
    NotIncludedOnchain,
}

impl Reason {
    /// Snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::FetchBnError => "fetch_bn_error",
            Reason::NoConsensus => "no_consensus",
            Reason::SlashingRefused => "slashing_refused",
            Reason::NoLocalVcSignature => "no_local_vc_signature",
            Reason::InsufficientPeerSignatures => "insufficient_peer_signatures",
            Reason::BroadcastBnError => "broadcast_bn_error",
            Reason::NotIncludedOnchain => "not_included_onchain",
        }
    }

    /// The reason implied by the last stage a duty reached without broadcasting.
    pub fn implied_by(stage: Option<Stage>) -> Reason {
        match stage {
            None | Some(Stage::Scheduled) => Reason::FetchBnError,
            Some(Stage::Fetched) => Reason::NoConsensus,
            Some(Stage::Decided) => Reason::NoLocalVcSignature,
            Some(Stage::LocalSigned) => Reason::InsufficientPeerSignatures,
            Some(Stage::Aggregated) | Some(Stage::Broadcast) => Reason::BroadcastBnError,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindReason {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindShare {
    kind: String,
    share: String,
}

#[derive(Clone)]
struct Metrics {
    duties: Family<KindOutcome, Counter>,
    failures: Family<KindReason, Counter>,
    rounds: Family<KindLabel, Histogram>,
    consensus_duration: Family<KindLabel, Histogram>,
    partials: Family<KindShare, Counter>,
    broadcast_delay: Family<KindLabel, Histogram>,
}

impl Metrics {
    fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            duties: Family::default(),
            failures: Family::default(),
            rounds: Family::new_with_constructor(|| Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0])),
            consensus_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
            partials: Family::default(),
            broadcast_delay: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.25, 1.5, 12))
            }),
        };
        registry.register(
            "duty",
            "Duties closed, by kind and outcome",
            m.duties.clone(),
        );
        registry.register(
            "duty_failures",
            "Failed duties by kind and reason",
            m.failures.clone(),
        );
        registry.register(
            "duty_consensus_rounds",
            "Round in which duty consensus decided",
            m.rounds.clone(),
        );
        registry.register(
            "duty_consensus_duration_seconds",
            "Time from consensus start to decision",
            m.consensus_duration.clone(),
        );
        registry.register(
            "duty_partial_signatures",
            "Valid partial signatures received, by share index (peer participation)",
            m.partials.clone(),
        );
        registry.register(
            "duty_broadcast_delay_seconds",
            "Time from slot start to the beacon node accepting the signed object",
            m.broadcast_delay.clone(),
        );
        m
    }
}

#[derive(Default)]
struct Record {
    stages: BTreeMap<Stage, u128>,
    failures: Vec<(Reason, String)>,
    consensus: Option<(u64, f64)>,
    shares: BTreeSet<u64>,
    broadcast_delay: Option<f64>,
}

struct Inner {
    records: Mutex<HashMap<Duty, Record>>,
    metrics: Metrics,
    log: Option<Mutex<File>>,
}

/// Cheaply cloneable handle; see the [module docs](self).
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

/// One closed duty, as written to the duty log.
#[derive(Debug, Serialize)]
pub struct DutyReport {
    /// Close time (Unix milliseconds).
    pub ts_ms: u128,
    /// The duty.
    pub duty: Duty,
    /// `success` or the failure reason.
    pub outcome: String,
    /// Detail of the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unix milliseconds at which each stage was reached.
    pub stages: BTreeMap<Stage, u128>,
    /// Deciding consensus round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consensus_round: Option<u64>,
    /// Consensus duration (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consensus_seconds: Option<f64>,
    /// Share indices whose valid partial signatures arrived.
    pub shares: Vec<u64>,
    /// Broadcast delay from slot start (seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broadcast_delay_seconds: Option<f64>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

impl Tracker {
    /// A tracker registering its metrics in `registry`, appending closed duties to `duty_log`
    /// (JSON lines) if given.
    pub fn new(registry: &mut Registry, duty_log: Option<&Path>) -> Result<Tracker> {
        let log = match duty_log {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open duty log {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Tracker {
            inner: Arc::new(Inner {
                records: Mutex::new(HashMap::new()),
                metrics: Metrics::new(registry),
                log,
            }),
        })
    }

    fn with(&self, duty: Duty, f: impl FnOnce(&mut Record)) {
        let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        f(records.entry(duty).or_default());
    }

    /// `duty` reached `stage` now.
    pub fn stage(&self, duty: Duty, stage: Stage) {
        self.with(duty, |r| {
            r.stages.entry(stage).or_insert_with(now_ms);
        });
    }

    /// `duty` failed for `reason`.
    pub fn fail(&self, duty: Duty, reason: Reason, detail: &str) {
        self.with(duty, |r| r.failures.push((reason, detail.to_string())));
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

    /// A valid partial signature of `share_index` arrived for `duty`.
    pub fn partial(&self, duty: Duty, share_index: u64) {
        let mut first = false;
        self.with(duty, |r| first = r.shares.insert(share_index));
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

    /// The beacon node accepted `duty`'s signed object `delay` after the slot started.
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
        });
        self.stage(duty, Stage::Broadcast);
    }

    /// Closes every duty of a slot before `slot` and returns their reports.
    pub fn finish_before(&self, slot: Slot) -> Vec<DutyReport> {
        let closed: Vec<(Duty, Record)> = {
            let mut records = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
            let old: Vec<Duty> = records.keys().filter(|d| d.slot < slot).copied().collect();
            old.into_iter()
                .filter_map(|d| records.remove(&d).map(|r| (d, r)))
                .collect()
        };
        let mut reports: Vec<DutyReport> = closed
            .into_iter()
            .map(|(duty, r)| self.close(duty, r))
            .collect();
        reports.sort_by_key(|r| r.duty);
        if let Some(log) = &self.inner.log {
            let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
            for report in &reports {
                let line = serde_json::to_string(report).unwrap_or_default();
                if let Err(e) = writeln!(file, "{line}") {
                    warn!(error = %e, "cannot write the duty log");
                    break;
                }
            }
        }
        reports
    }

    fn close(&self, duty: Duty, r: Record) -> DutyReport {
        let success = r.stages.contains_key(&Stage::Broadcast);
        let (outcome, detail) = if success {
            ("success".to_string(), None)
        } else if let Some((reason, detail)) = r.failures.first() {
            (reason.as_str().to_string(), Some(detail.clone()))
        } else {
            let last = r.stages.keys().next_back().copied();
            (Reason::implied_by(last).as_str().to_string(), None)
        };
        let kind = duty.kind.to_string();
        self.inner
            .metrics
            .duties
            .get_or_create(&KindOutcome {
                kind: kind.clone(),
                outcome: if success { "success" } else { "failed" }.into(),
            })
            .inc();
        if !success {
            self.inner
                .metrics
                .failures
                .get_or_create(&KindReason {
                    kind,
                    reason: outcome.clone(),
                })
                .inc();
        }
        DutyReport {
            ts_ms: now_ms(),
            duty,
            outcome,
            detail,
            stages: r.stages,
            consensus_round: r.consensus.map(|c| c.0),
            consensus_seconds: r.consensus.map(|c| c.1),
            shares: r.shares.into_iter().collect(),
            broadcast_delay_seconds: r.broadcast_delay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duty::DutyKind;

    #[test]
    fn outcomes_follow_stages_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("duties.jsonl");
        let mut registry = Registry::default();
        let t = Tracker::new(&mut registry, Some(&log)).unwrap();
        let ok = Duty::new(3, DutyKind::Attester);
        t.stage(ok, Stage::Scheduled);
        t.stage(ok, Stage::Fetched);
        t.consensus(ok, 1, Duration::from_millis(30));
        t.stage(ok, Stage::Decided);
        t.partial(ok, 1);
        t.partial(ok, 2);
        t.broadcast(ok, Duration::from_millis(1500));
        let no_vc = Duty::new(3, DutyKind::SyncMessage);
        t.stage(no_vc, Stage::Decided);
        let fetch = Duty::new(4, DutyKind::Attester);
        t.stage(fetch, Stage::Scheduled);
        t.fail(fetch, Reason::FetchBnError, "connection refused");
        let later = Duty::new(9, DutyKind::Attester);
        t.stage(later, Stage::Scheduled);

        let reports = t.finish_before(5);
        let outcomes: Vec<(Duty, &str)> = reports
            .iter()
            .map(|r| (r.duty, r.outcome.as_str()))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (ok, "success"),
                (no_vc, "no_local_vc_signature"),
                (fetch, "fetch_bn_error")
            ]
        );
        assert_eq!(reports[0].shares, vec![1, 2]);
        assert_eq!(reports[0].consensus_round, Some(1));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains("\"outcome\":\"fetch_bn_error\""));
        assert!(text.contains("connection refused"));
        let mut metrics = String::new();
        prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
        assert!(
            metrics.contains("duty_failures_total{kind=\"attester\",reason=\"fetch_bn_error\"} 1")
        );
        // The later duty is still open.
        assert_eq!(t.finish_before(10).len(), 1);
    }
}
