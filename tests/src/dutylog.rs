//! dvnode duty logs (JSON lines, one per closed duty): outcomes, miss reasons and node-added
//! latency.
//!
//! A line looks like
//! `{"ts_ms":…,"duty":{"slot":"12","kind":"attester"},"outcome":"success","stages":{"scheduled":…,
//! "fetched":…,"decided":…,"local_signed":…,"aggregated":…,"broadcast":…},…}` with stage times in
//! Unix milliseconds. Unknown fields are ignored; a line that does not parse is counted, not
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

    /// The record of `(slot, kind)`, if any.
    pub fn find(&self, slot: u64, kind: &str) -> Option<&DutyRecord> {
        self.records
            .iter()
            .find(|r| r.duty.slot == slot && r.duty.kind == kind)
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
/// successful duties of `logs`.
pub fn latency(logs: &[DutyLog], from: &[&str], to: &str) -> Latency {
    let mut used = None;
    let mut samples = Vec::new();
    for r in logs.iter().flat_map(|l| &l.records) {
        let Some(&end) = r.stages.get(to) else {
            continue;
        };
        let Some((name, &start)) = from.iter().find_map(|f| r.stages.get(*f).map(|t| (*f, t)))
        else {
            continue;
        };
        used.get_or_insert(name);
        samples.push(end.saturating_sub(start));
    }
    samples.sort_unstable();
    Latency {
        span: format!(
            "{}→{to}",
            used.unwrap_or(from.first().copied().unwrap_or("?"))
        ),
        samples: samples.len(),
        p50_ms: percentile(&samples, 50.0),
        p99_ms: percentile(&samples, 99.0),
    }
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
        let l = latency(&logs, &["vc_request", "fetched"], "decided");
        assert_eq!(l.span, "fetched→decided");
        assert_eq!(l.samples, 2);
        assert_eq!(l.p50_ms, Some(40));
        assert_eq!(l.p99_ms, Some(300));
        let b = latency(&logs, &["aggregated"], "broadcast");
        assert_eq!((b.p50_ms, b.p99_ms), (Some(1), Some(30)));
        let o = outcomes(&logs);
        assert_eq!(o["attester"]["success"], 2);
        assert_eq!(o["proposer"]["no_consensus"], 1);
        assert_eq!(
            miss_reason(&logs, 13, "proposer"),
            "node0: no_consensus (round timeout); node1: no record"
        );
    }
}
