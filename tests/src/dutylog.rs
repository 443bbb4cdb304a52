//! dvnode duty logs: outcomes, miss reasons, inclusion and node-added latency.
//!
//! A duty log holds JSON lines of [`DutyReport`], dvnode's one definition of the format (one
//! line per closed outcome of one DV validator in one duty, stage times in Unix milliseconds);
//! a line that does not parse is counted, not fatal.

use std::{collections::BTreeMap, path::Path};

use anyhow::{Context, Result};
use dvnode::duty::DutyKind;
use dvnode::tracker::{DutyReport, Stage};
use serde::{Deserialize, Serialize};

/// A parsed duty log.
#[derive(Clone, Debug, Default)]
pub struct DutyLog {
    /// Records in file order.
    pub records: Vec<DutyReport>,
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
            match serde_json::from_str::<DutyReport>(line) {
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
    pub fn find(&self, slot: u64, kind: DutyKind) -> Option<&DutyReport> {
        self.records
            .iter()
            .find(|r| r.duty.slot == slot && r.duty.kind == kind)
    }

    /// The record of validator `validator` in `(slot, kind)`, if any.
    pub fn find_validator(&self, slot: u64, kind: DutyKind, validator: u64) -> Option<&DutyReport> {
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
    kinds: &[DutyKind],
    from: &[Stage],
    to: Stage,
    per_duty: bool,
) -> Latency {
    let mut used = None;
    let mut samples = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, log) in logs.iter().enumerate() {
        for r in &log.records {
            if !kinds.is_empty() && !kinds.contains(&r.duty.kind) {
                continue;
            }
            let Some(&end) = r.stages.get(&to) else {
                continue;
            };
            let Some((name, &start)) = from.iter().find_map(|f| r.stages.get(f).map(|t| (*f, t)))
            else {
                continue;
            };
            if per_duty && !seen.insert((i, r.duty)) {
                continue;
            }
            used.get_or_insert(name);
            samples.push(ms(end.saturating_sub(start)));
        }
    }
    summarize(
        format!(
            "{}→{}",
            used.or(from.first().copied())
                .map_or("?".into(), stage_name),
            stage_name(to)
        ),
        samples,
    )
}

/// The snake-case name a stage has in the duty log.
pub fn stage_name(s: Stage) -> String {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(n)) => n,
        _ => format!("{s:?}"),
    }
}

/// Milliseconds of a duty-log time span (saturating).
fn ms(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
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
pub fn node_added(logs: &[DutyLog], kinds: &[DutyKind]) -> Latency {
    let samples = logs
        .iter()
        .flat_map(|l| &l.records)
        .filter(|r| kinds.is_empty() || kinds.contains(&r.duty.kind))
        .filter_map(|r| {
            let t = |s: Stage| r.stages.get(&s).copied();
            let (req, dec, last, bc) = (
                t(Stage::VcRequest)?,
                t(Stage::Decided)?,
                t(Stage::LastPartial)?,
                t(Stage::Broadcast)?,
            );
            Some(ms(dec.saturating_sub(req) + bc.saturating_sub(last)))
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
        *m.entry(r.duty.kind.as_str().to_string())
            .or_default()
            .entry(r.outcome.clone())
            .or_default() += 1;
    }
    m
}

/// Why a proposer duty at `slot` produced no block, from each node's record
/// (`node i: outcome (detail)`, or `node i: no record`).
pub fn miss_reason(logs: &[DutyLog], slot: u64, kind: DutyKind) -> String {
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
{"ts_ms":6,"duty":{"slot":"13","kind":"proposer"},"outcome":"no_consensus","detail":"round timeout","stages":{"scheduled":2000,"fetched":2100},"shares":[]}
not json
{"ts_ms":7,"duty":{"slot":"14","kind":"attester"},"outcome":"success","stages":{"fetched":3000,"decided":3300,"aggregated":3400,"broadcast":3401},"shares":[1,2,4]}
"#;

    #[test]
    fn parses_and_measures() {
        let log = DutyLog::parse(LOG);
        assert_eq!(log.records.len(), 3);
        assert_eq!(log.bad_lines, vec![3]);
        assert_eq!(log.records[2].duty.slot, 14);
        let logs = vec![log, DutyLog::default()];
        let l = latency(
            &logs,
            &[],
            &[Stage::VcRequest, Stage::Fetched],
            Stage::Decided,
            true,
        );
        assert_eq!(l.span, "fetched→decided");
        assert_eq!(l.samples, 2);
        assert_eq!(l.p50_ms, Some(40));
        assert_eq!(l.p99_ms, Some(300));
        let b = latency(&logs, &[], &[Stage::Aggregated], Stage::Broadcast, false);
        assert_eq!((b.p50_ms, b.p99_ms), (Some(1), Some(30)));
        let o = outcomes(&logs);
        assert_eq!(o["attester"]["success"], 2);
        assert_eq!(o["proposer"]["no_consensus"], 1);
        assert_eq!(
            miss_reason(&logs, 13, DutyKind::Proposer),
            "node0: no_consensus (round timeout); node1: no record"
        );
    }

    /// Lines as dvnode's tracker writes them: one per validator of a duty.
    const PER_VALIDATOR: &str = r#"{"ts_ms":9,"duty":{"slot":"20","kind":"attester"},"pubkey":"0x{AA}","validator_index":"57","outcome":"success","stages":{"scheduled":1000,"vc_request":1001,"fetched":1005,"decided":1021,"local_signed":1300,"last_partial":1400,"aggregated":1404,"broadcast":1410,"included":5000},"shares":[1,2,3],"inclusion_slot":"21","inclusion_delay":1}
{"ts_ms":9,"duty":{"slot":"20","kind":"attester"},"pubkey":"0x{BB}","validator_index":"58","outcome":"not_included_onchain","detail":"not in any canonical block of slots 21..=28","stages":{"scheduled":1000,"vc_request":1001,"fetched":1005,"decided":1021,"local_signed":1310,"last_partial":1420,"aggregated":1425,"broadcast":1440},"shares":[1,2,3]}
"#;

    #[test]
    fn per_validator_lines_count_duty_spans_once() {
        let text = PER_VALIDATOR
            .replace("{AA}", &"aa".repeat(48))
            .replace("{BB}", &"bb".repeat(48));
        let logs = vec![DutyLog::parse(&text)];
        assert!(logs[0].bad_lines.is_empty());
        let att = DutyKind::Attester;
        let r = logs[0].find_validator(20, att, 57).unwrap();
        assert_eq!((r.inclusion_slot, r.inclusion_delay), (Some(21), Some(1)));
        assert!(logs[0].find_validator(20, att, 59).is_none());
        let d = latency(&logs, &[att], &[Stage::VcRequest], Stage::Decided, true);
        assert_eq!(
            (d.span.as_str(), d.samples, d.p50_ms),
            ("vc_request→decided", 1, Some(20))
        );
        let b = latency(
            &logs,
            &[att],
            &[Stage::LastPartial],
            Stage::Broadcast,
            false,
        );
        assert_eq!((b.samples, b.p50_ms, b.p99_ms), (2, Some(10), Some(20)));
        let p = DutyKind::Proposer;
        assert_eq!(
            latency(&logs, &[p], &[Stage::VcRequest], Stage::Decided, true).samples,
            0
        );
        let n = node_added(&logs, &[att]);
        assert_eq!((n.samples, n.p50_ms, n.p99_ms), (2, Some(30), Some(40)));
        assert_eq!(outcomes(&logs)["attester"]["not_included_onchain"], 1);
    }
}
