//! The fault log `faults.jsonl`: one [`FaultLogLine`] per start, stop, re-application or
//! re-peering of a fault, written by the fault executor while a run goes on and read back
//! into [`FaultWindow`]s for the `faults` frame. The fault [`Effect`]s it carries are the
//! vocabulary the fault timeline and executor share.

use super::FaultWindow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which packets a network fault acts on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "containers")]
pub enum Scope {
    /// Everything these containers send.
    Egress(Vec<String>),
    /// Both directions between two containers.
    Link(String, String),
    /// What the first containers send to the second ones only (one direction).
    To(Vec<String>, Vec<String>),
}

impl Scope {
    pub(crate) fn containers(&self) -> Vec<String> {
        match self {
            Scope::Egress(v) => v.clone(),
            Scope::Link(a, b) => vec![a.clone(), b.clone()],
            Scope::To(from, to) => from.iter().chain(to).cloned().collect(),
        }
    }

    /// (container whose OUTPUT is shaped, optional peer it sends to).
    #[cfg_attr(not(feature = "lab"), allow(dead_code))] // used by the fault executor
    pub(crate) fn legs(&self) -> Vec<(String, Option<String>)> {
        match self {
            Scope::Egress(v) => v.iter().map(|t| (t.clone(), None)).collect(),
            Scope::Link(a, b) => vec![(a.clone(), Some(b.clone())), (b.clone(), Some(a.clone()))],
            Scope::To(from, to) => from
                .iter()
                .flat_map(|f| to.iter().map(move |t| (f.clone(), Some(t.clone()))))
                .collect(),
        }
    }
}

/// What a fault does, with targets as container short names (`dv0-1`, `bn0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Effect {
    /// Groups that cannot reach each other.
    Partition {
        /// Groups of short names.
        groups: Vec<Vec<String>>,
    },
    /// Added delay.
    Latency {
        /// Affected packets.
        #[serde(flatten)]
        scope: Scope,
        /// Mean delay in ms.
        delay_ms: f64,
        /// Jitter in ms (uniform ±).
        jitter_ms: f64,
    },
    /// Random packet loss.
    Loss {
        /// Affected packets.
        #[serde(flatten)]
        scope: Scope,
        /// Percent dropped.
        percent: f64,
    },
    /// Egress rate limit.
    Bandwidth {
        /// Limited containers.
        targets: Vec<String>,
        /// Bits per second.
        bits_per_sec: u64,
    },
    /// SIGKILL (stop phase: start again).
    Crash {
        /// Container.
        target: String,
    },
    /// Graceful stop (stop phase: start again).
    Stop {
        /// Container.
        target: String,
    },
    /// Freeze.
    Pause {
        /// Container.
        target: String,
    },
    /// Clock offset.
    ClockSkew {
        /// Container.
        target: String,
        /// Seconds added to the container's clock.
        offset_secs: f64,
    },
    /// A dvnode's beacon node answers with HTTP errors (to that dvnode only).
    BnErrors {
        /// The dvnode.
        target: String,
        /// Its beacon node.
        beacon_node: String,
        /// HTTP status of every answer.
        status: u16,
    },
}

/// The index of the largest group of a partition (the last of equal ones: `max_by_key`): the group that
/// is left alone, so that isolating one container touches only it.
fn largest_group(groups: &[Vec<String>]) -> usize {
    groups
        .iter()
        .enumerate()
        .max_by_key(|(_, g)| g.len())
        .map_or(0, |(i, _)| i)
}

/// One side of a partition: a group that gets the blocking rules, and every member of the
/// other groups it is cut from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSide<'a> {
    /// Index of the group in the partition.
    pub index: usize,
    /// Its members (short names).
    pub group: &'a [String],
    /// The members of every other group.
    pub others: Vec<&'a String>,
}

/// The sides of a partition that carry its rules, both backends alike: every group but the
/// largest (rules on one side block both directions, so isolating one container touches only
/// it), each cut from all the other groups.
pub fn partition_sides(groups: &[Vec<String>]) -> Vec<PartitionSide<'_>> {
    let largest = largest_group(groups);
    groups
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != largest)
        .map(|(index, group)| PartitionSide {
            index,
            group,
            others: groups
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != index)
                .flat_map(|(_, g)| g)
                .collect(),
        })
        .collect()
}

impl Effect {
    /// Kind name as in the spec.
    pub fn kind(&self) -> &'static str {
        match self {
            Effect::Partition { .. } => "partition",
            Effect::Latency { .. } => "latency",
            Effect::Loss { .. } => "loss",
            Effect::Bandwidth { .. } => "bandwidth",
            Effect::Crash { .. } => "crash",
            Effect::Stop { .. } => "stop",
            Effect::Pause { .. } => "pause",
            Effect::ClockSkew { .. } => "clock_skew",
            Effect::BnErrors { .. } => "bn_errors",
        }
    }

    /// Every container the fault involves.
    pub fn targets(&self) -> Vec<String> {
        match self {
            Effect::Partition { groups } => groups.concat(),
            Effect::Latency { scope, .. } | Effect::Loss { scope, .. } => scope.containers(),
            Effect::Bandwidth { targets, .. } => targets.clone(),
            Effect::Crash { target }
            | Effect::Stop { target }
            | Effect::Pause { target }
            | Effect::ClockSkew { target, .. } => vec![target.clone()],
            Effect::BnErrors {
                target,
                beacon_node,
                ..
            } => vec![target.clone(), beacon_node.clone()],
        }
    }

    /// Whether it acts on the network (rules, delayers, qdiscs) rather than on a process.
    #[cfg_attr(not(feature = "lab"), allow(dead_code))] // used by the fault executor
    pub(crate) fn is_network(&self) -> bool {
        matches!(
            self,
            Effect::Partition { .. }
                | Effect::Latency { .. }
                | Effect::Loss { .. }
                | Effect::Bandwidth { .. }
                | Effect::BnErrors { .. }
        )
    }

    /// Short description of the parameters, e.g. `dv0-0,dv0-1 | dv0-2,dv0-3` for a
    /// partition, `200ms ± 20ms`, `10%`, `1000000 bit/s`, `+3s`; empty for crash, stop and
    /// pause (their target says it all).
    pub fn detail(&self) -> String {
        match self {
            Effect::Partition { groups } => groups
                .iter()
                .map(|g| g.join(","))
                .collect::<Vec<_>>()
                .join(" | "),
            Effect::Latency {
                delay_ms,
                jitter_ms,
                ..
            } => {
                if *jitter_ms > 0.0 {
                    format!("{delay_ms:.0}ms ± {jitter_ms:.0}ms")
                } else {
                    format!("{delay_ms:.0}ms")
                }
            }
            Effect::Loss { percent, .. } => format!("{percent}%"),
            Effect::Bandwidth { bits_per_sec, .. } => format!("{bits_per_sec} bit/s"),
            Effect::ClockSkew { offset_secs, .. } => format!("{offset_secs:+}s"),
            Effect::BnErrors {
                beacon_node,
                status,
                ..
            } => format!("{beacon_node} answers {status}"),
            Effect::Crash { .. } | Effect::Stop { .. } | Effect::Pause { .. } => String::new(),
        }
    }
}

/// What a line of `faults.jsonl` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogPhase {
    /// The fault began.
    Start,
    /// The fault ended (healed, restarted, unpaused).
    Stop,
    /// A network fault was re-applied to a restarted container.
    Reapply,
    /// Beacon nodes were re-peered after a heal or a restart.
    Repeer,
}

/// One line of `faults.jsonl`. Fields a line may lack (hand-written or cut lines) default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultLogLine {
    /// Wall time the action ran (UNIX seconds).
    pub time: f64,
    /// Scheduled time (UNIX seconds).
    #[serde(default)]
    pub scheduled: f64,
    /// Slot at `time`.
    pub slot: u64,
    /// Fault id within the run's timeline.
    pub fault: u64,
    /// Index of the devnet file's `faults` entry it comes from.
    #[serde(default)]
    pub source: usize,
    /// The entry's `id`, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// Kind (`partition`, `crash`, …).
    #[serde(default)]
    pub kind: String,
    /// What happened.
    pub phase: LogPhase,
    /// Every container the fault involves (short names).
    #[serde(default)]
    pub targets: Vec<String>,
    /// What the fault does.
    #[serde(default)]
    pub effect: Option<Effect>,
    /// The executor's error, if the action failed.
    #[serde(default)]
    pub error: Option<String>,
}

/// Parses `faults.jsonl` into one window per fault, start to stop. A fault without a stop
/// line lasted to the end of the run; errors of every line of a fault are joined. Lines that
/// do not parse are counted in the second value.
pub fn fault_windows_from_log(text: &str) -> (Vec<FaultWindow>, usize) {
    let mut windows: BTreeMap<u64, FaultWindow> = BTreeMap::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(l) = serde_json::from_str::<FaultLogLine>(line) else {
            bad += 1;
            continue;
        };
        match l.phase {
            LogPhase::Start => {
                windows.insert(
                    l.fault,
                    FaultWindow {
                        fault: l.fault,
                        kind: l.kind,
                        targets: l.targets.join(","),
                        detail: l.effect.as_ref().map(Effect::detail).unwrap_or_default(),
                        start_time: l.time,
                        start_slot: l.slot,
                        end_time: None,
                        end_slot: None,
                        error: l.error,
                    },
                );
            }
            LogPhase::Stop | LogPhase::Reapply | LogPhase::Repeer => {
                let Some(w) = windows.get_mut(&l.fault) else {
                    continue;
                };
                if l.phase == LogPhase::Stop && w.end_time.is_none() {
                    w.end_time = Some(l.time);
                    w.end_slot = Some(l.slot);
                }
                if let Some(e) = l.error {
                    w.error = Some(match w.error.take() {
                        Some(p) => format!("{p}; {e}"),
                        None => e,
                    });
                }
            }
        }
    }
    (windows.into_values().collect(), bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_log_becomes_windows() {
        let text = r#"{"time":100.2,"scheduled":100.0,"slot":24,"fault":1,"source":0,"name":"p","kind":"partition","phase":"start","targets":["dv0-0","dv0-1","dv0-2","dv0-3"],"effect":{"kind":"partition","groups":[["dv0-0","dv0-1"],["dv0-2","dv0-3"]]},"error":null}
{"time":110.0,"scheduled":110.0,"slot":26,"fault":2,"source":1,"name":null,"kind":"crash","phase":"start","targets":["bn1"],"effect":{"kind":"crash","target":"bn1"},"error":null}
{"time":164.1,"scheduled":164.0,"slot":40,"fault":1,"source":0,"name":"p","kind":"partition","phase":"stop","targets":["dv0-0","dv0-1","dv0-2","dv0-3"],"effect":{"kind":"partition","groups":[["dv0-0","dv0-1"],["dv0-2","dv0-3"]]},"error":null}
{"time":164.5,"slot":40,"fault":1,"kind":"partition","phase":"repeer","error":"bn0: refused"}
cut mid-li"#;
        let (w, bad) = fault_windows_from_log(text);
        assert_eq!(bad, 1);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].kind, "partition");
        assert_eq!(w[0].detail, "dv0-0,dv0-1 | dv0-2,dv0-3");
        assert_eq!((w[0].start_slot, w[0].end_slot), (24, Some(40)));
        assert_eq!(w[0].end_time, Some(164.1));
        assert_eq!(w[0].error.as_deref(), Some("bn0: refused"));
        assert_eq!((w[1].targets.as_str(), w[1].end_slot), ("bn1", None));
    }

    /// What the executor writes reads back as the same line, for every kind of effect.
    #[test]
    fn log_lines_round_trip() {
        let link = Scope::Link("dv0-0".into(), "bn1".into());
        let effects = [
            Effect::Partition {
                groups: vec![vec!["a".into()], vec!["b".into(), "c".into()]],
            },
            Effect::Latency {
                scope: link.clone(),
                delay_ms: 200.0,
                jitter_ms: 20.0,
            },
            Effect::Loss {
                scope: Scope::Egress(vec!["dv0-2".into()]),
                percent: 10.0,
            },
            Effect::Bandwidth {
                targets: vec!["bn1".into()],
                bits_per_sec: 1_000_000,
            },
            Effect::Crash { target: "x".into() },
            Effect::Stop { target: "x".into() },
            Effect::Pause { target: "x".into() },
            Effect::ClockSkew {
                target: "x".into(),
                offset_secs: -2.5,
            },
            Effect::Loss {
                scope: Scope::To(vec!["dv0-3".into()], vec!["dv0-0".into(), "dv0-1".into()]),
                percent: 100.0,
            },
            Effect::BnErrors {
                target: "dv0-3".into(),
                beacon_node: "bn1".into(),
                status: 503,
            },
        ];
        let details = [
            "a | b,c",
            "200ms ± 20ms",
            "10%",
            "1000000 bit/s",
            "",
            "",
            "",
            "-2.5s",
            "100%",
            "bn1 answers 503",
        ];
        for (i, (e, detail)) in effects.into_iter().zip(details).enumerate() {
            assert_eq!(e.detail(), detail);
            let line = FaultLogLine {
                time: 10.5,
                scheduled: 10.0,
                slot: 2,
                fault: i as u64,
                source: i,
                name: None,
                kind: e.kind().into(),
                phase: LogPhase::Start,
                targets: e.targets(),
                effect: Some(e),
                error: None,
            };
            let text = serde_json::to_string(&line).unwrap();
            assert_eq!(
                serde_json::from_str::<FaultLogLine>(&text).unwrap(),
                line,
                "{text}"
            );
        }
    }

    #[test]
    fn partition_sides_are_every_group_but_the_largest_cut_from_all_others() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let groups = vec![g(&["a"]), g(&["b", "c", "d"]), g(&["e", "f"])];
        let sides = partition_sides(&groups);
        let got: Vec<(usize, Vec<&str>, Vec<&str>)> = sides
            .iter()
            .map(|s| {
                (
                    s.index,
                    s.group.iter().map(String::as_str).collect(),
                    s.others.iter().map(|o| o.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, vec!["a"], vec!["b", "c", "d", "e", "f"]),
                (2, vec!["e", "f"], vec!["a", "b", "c", "d"]),
            ]
        );
        // Isolating one container touches only it; of equal groups the last is left alone.
        let two = vec![g(&["x", "y"]), g(&["z"])];
        assert_eq!(partition_sides(&two).len(), 1);
        assert_eq!(partition_sides(&two)[0].group, ["z".to_string()]);
        let even = vec![g(&["x"]), g(&["z"])];
        assert_eq!(partition_sides(&even)[0].index, 0);
    }
}
