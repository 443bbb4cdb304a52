//! dvnode duty logs (JSON lines, one per closed outcome of one DV validator in one duty):
//! outcomes, miss reasons, inclusion and node-added latency.
//!
//! A line looks like
//! `{"ts_ms":…,"duty":{"slot":"12","kind":"attester"},"pubkey":"0x…","validator_index":"57",
//! "outcome":"success","stages":{"scheduled":…,"vc_request":…,"fetched":…,"decided":…,
//! "local_signed":…,"last_partial":…,"aggregated":…,"broadcast":…,"included":…},
//! "inclusion_slot":"13","inclusion_delay":1,…}` with stage times in Unix milliseconds (see
//! `dvnode::tracker`). Unknown fields are ignored; a line that does not parse is counted, not
//! fatal.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One duty record of a duty log.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DutyRecord {
    /// The duty.
    pub duty: DutyId,
    /// `success` or a failure reason.
    pub outcome: String,
    /// Failure detail.
    #[serde(default)]
    pub detail: Option<String>,
    /// Stage → Unix milliseconds.
    #[serde(default)]
    pub stages: BTreeMap<String, u64>,
    /// The DV validator (absent on lines of a duty without known validators).
    #[serde(default, deserialize_with = "opt_quoted_or_number")]
    pub validator_index: Option<u64>,
    /// Slot of the first canonical block including the object.
    #[serde(default, deserialize_with = "opt_quoted_or_number")]
    pub inclusion_slot: Option<u64>,
    /// Inclusion delay (slots).
    #[serde(default)]
    pub inclusion_delay: Option<u64>,
    /// Duration of the duty's consensus (seconds).
    #[serde(default)]
    pub consensus_seconds: Option<f64>,
}

fn opt_quoted_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        N(u64),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(None),
        Some(N::N(n)) => Ok(Some(n)),
        Some(N::S(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Slot and kind of a duty.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct DutyId {
    /// Slot (quoted or not).
    #[serde(deserialize_with = "quoted_or_number")]
    pub slot: u64,
    /// Kind (`attester`, `proposer`, `randao`, `sync_message`, …).
    pub kind: String,
}

fn quoted_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        N(u64),
    }
    match N::deserialize(d)? {
        N::N(n) => Ok(n),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// A parsed duty log.
#[derive(Clone, Debug, Default)]
pub struct DutyLog {
    /// Records in file order.
    pub records: Vec<DutyRecord>,
    /// Lines that did not parse (1-based line numbers).
    pub bad_lines: Vec<usize>,
}

impl DutyLog {
    /// Parses JSON-lines text.
    pub fn parse(text: &str) -> Self {
        let mut log = DutyLog::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<DutyRecord>(line) {
                Ok(r) => log.records.push(r),
                Err(_) => log.bad_lines.push(i + 1),
            }
        }
        log
    }

    /// Reads and parses a file; a missing file is an empty log.
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Self::parse(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading duty log {}", path.display())),
        }
    }

    /// The first record of `(slot, kind)`, if any.
    pub fn find(&self, slot: u64, kind: &str) -> Option<&DutyRecord> {
        self.records
            .iter()
            .find(|r| r.duty.slot == slot && r.duty.kind == kind)
    }

    /// The record of validator `validator` in `(slot, kind)`, if any.
    pub fn find_validator(&self, slot: u64, kind: &str, validator: u64) -> Option<&DutyRecord> {
        self.records.iter().find(|r| {
            r.duty.slot == slot && r.duty.kind == kind && r.validator_index == Some(validator)
        })
    }
}

/// Percentiles of a latency sample (milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Stage pair measured, `from→to`.
    pub span: String,
    /// Samples.
    pub samples: usize,
    /// Median (ms).
    pub p50_ms: Option<u64>,
    /// 99th percentile (ms).
    pub p99_ms: Option<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latency from the first present stage of `from` (tried in order) to stage `to`, over the
/// records of `kinds` (all kinds if empty). With `per_duty`, a duty's span is counted once per
/// log (duty-wide stages repeat on every validator line of the duty).
pub fn latency(
    logs: &[DutyLog],
    kinds: &[&str],
    from: &[&str],
    to: &str,
    per_duty: bool,
) -> Latency {
    let mut used = None;
    let mut samples = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, log) in logs.iter().enumerate() {
        for r in &log.records {
            if !kinds.is_empty() && !kinds.contains(&r.duty.kind.as_str()) {
                continue;
            }
            let Some(&end) = r.stages.get(to) else {
                continue;
            };
            let Some((name, &start)) = from.iter().find_map(|f| r.stages.get(*f).map(|t| (*f, t)))
            else {
                continue;
            };
            if per_duty && !seen.insert((i, r.duty.clone())) {
                continue;
            }
            used.get_or_insert(name);
            samples.push(end.saturating_sub(start));
        }
    }
    summarize(
        format!(
            "{}→{to}",
            used.unwrap_or(from.first().copied().unwrap_or("?"))
        ),
        samples,
    )
}

fn summarize(span: String, mut samples: Vec<u64>) -> Latency {
    samples.sort_unstable();
    Latency {
        span,
        samples: samples.len(),
        p50_ms: percentile(&samples, 50.0),
        p99_ms: percentile(&samples, 99.0),
    }
}

/// Node-added latency of each broadcast object of `kinds`: the time the VC waited for the
/// decided value (`decided − vc_request`, 0 if decided first) plus the time from the last
/// partial signature to the broadcast (`broadcast − last_partial`). What lies between — the
/// VCs signing and their partials crossing the network — is the VCs' own time.
pub fn node_added(logs: &[DutyLog], kinds: &[&str]) -> Latency {
    let samples = logs
        .iter()
        .flat_map(|l| &l.records)
        .filter(|r| kinds.is_empty() || kinds.contains(&r.duty.kind.as_str()))
        .filter_map(|r| {
            let t = |s: &str| r.stages.get(s).copied();
            let (req, dec, last, bc) = (
                t("vc_request")?,
                t("decided")?,
                t("last_partial")?,
                t("broadcast")?,
            );
            Some(dec.saturating_sub(req) + bc.saturating_sub(last))
        })
        .collect();
    summarize(
        "(decided−vc_request)+(broadcast−last_partial)".into(),
        samples,
    )
}

/// Outcome counts per kind over all logs: kind → outcome → count.
pub fn outcomes(logs: &[DutyLog]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut m: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for r in logs.iter().flat_map(|l| &l.records) {
        *m.entry(r.duty.kind.clone())
            .or_default()
            .entry(r.outcome.clone())
            .or_default() += 1;
    }
    m
}

/// Why a proposer duty at `slot` produced no block, from each node's record
/// (`node i: outcome (detail)`, or `node i: no record`).
pub fn miss_reason(logs: &[DutyLog], slot: u64, kind: &str) -> String {
    logs.iter()
        .enumerate()
        .map(|(i, l)| match l.find(slot, kind) {
            Some(r) => match &r.detail {
                Some(d) => format!("node{i}: {} ({d})", r.outcome),
                None => format!("node{i}: {}", r.outcome),
            },
            None => format!("node{i}: no record"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"{"ts_ms":5,"duty":{"slot":"12","kind":"attester"},"outcome":"success","stages":{"scheduled":1000,"fetched":1010,"decided":1050,"local_signed":1100,"aggregated":1200,"broadcast":1230},"shares":[1,2,3]}
{"ts_ms":6,"duty":{"slot":"13","kind":"proposer"},"outcome":"no_consensus","detail":"round timeout","stages":{"scheduled":2000,"fetched":2100}}
not json
{"duty":{"slot":14,"kind":"attester"},"outcome":"success","stages":{"fetched":3000,"decided":3300,"aggregated":3400,"broadcast":3401}}
"#;

    #[test]
    fn parses_and_measures() {
        let log = DutyLog::parse(LOG);
        assert_eq!(log.records.len(), 3);
        assert_eq!(log.bad_lines, vec![3]);
        assert_eq!(log.records[2].duty.slot, 14);
        let logs = vec![log, DutyLog::default()];
        let l = latency(&logs, &[], &["vc_request", "fetched"], "decided", true);
        assert_eq!(l.span, "fetched→decided");
        assert_eq!(l.samples, 2);
        assert_eq!(l.p50_ms, Some(40));
        assert_eq!(l.p99_ms, Some(300));
        let b = latency(&logs, &[], &["aggregated"], "broadcast", false);
        assert_eq!((b.p50_ms, b.p99_ms), (Some(1), Some(30)));
        let o = outcomes(&logs);
        assert_eq!(o["attester"]["success"], 2);
        assert_eq!(o["proposer"]["no_consensus"], 1);
        assert_eq!(
            miss_reason(&logs, 13, "proposer"),
            "node0: no_consensus (round timeout); node1: no record"
        );
    }

    /// Lines as dvnode's tracker writes them: one per validator of a duty.
    const PER_VALIDATOR: &str = r#"{"ts_ms":9,"duty":{"slot":"20","kind":"attester"},"pubkey":"0xaa","validator_index":"57","outcome":"success","stages":{"scheduled":1000,"vc_request":1001,"fetched":1005,"decided":1021,"local_signed":1300,"last_partial":1400,"aggregated":1404,"broadcast":1410,"included":5000},"shares":[1,2,3],"inclusion_slot":"21","inclusion_delay":1}
{"ts_ms":9,"duty":{"slot":"20","kind":"attester"},"pubkey":"0xbb","validator_index":"58","outcome":"not_included_onchain","detail":"not in any canonical block of slots 21..=28","stages":{"scheduled":1000,"vc_request":1001,"fetched":1005,"decided":1021,"local_signed":1310,"last_partial":1420,"aggregated":1425,"broadcast":1440},"shares":[1,2,3]}
"#;

    #[test]
    fn per_validator_lines_count_duty_spans_once() {
        let logs = vec![DutyLog::parse(PER_VALIDATOR)];
        assert!(logs[0].bad_lines.is_empty());
        let r = logs[0].find_validator(20, "attester", 57).unwrap();
        assert_eq!((r.inclusion_slot, r.inclusion_delay), (Some(21), Some(1)));
        assert!(logs[0].find_validator(20, "attester", 59).is_none());
        let d = latency(&logs, &["attester"], &["vc_request"], "decided", true);
        assert_eq!((d.samples, d.p50_ms), (1, Some(20)));
        let b = latency(&logs, &["attester"], &["last_partial"], "broadcast", false);
        assert_eq!((b.samples, b.p50_ms, b.p99_ms), (2, Some(10), Some(20)));
        assert_eq!(
            latency(&logs, &["proposer"], &["vc_request"], "decided", true).samples,
            0
        );
        let n = node_added(&logs, &["attester"]);
        assert_eq!((n.samples, n.p50_ms, n.p99_ms), (2, Some(30), Some(40)));
        assert_eq!(outcomes(&logs)["attester"]["not_included_onchain"], 1);
    }
}
