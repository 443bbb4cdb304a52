//! The pure half of faults: a devnet file's `faults` list turned into a seeded, sorted
//! timeline of start and stop actions, relative to genesis. Nothing here touches Docker.

use crate::data::{Effect, LogPhase, Scope};
use crate::plan::Plan;
use crate::spec::{parse_offset, parse_rate, At, DevnetSpec, FaultKind, FaultSpec, Scalar, Span};
use anyhow::{anyhow, bail, Context, Result};
use dvnode::clock::SlotClock;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The slot at UNIX time `t` in seconds (slot 0 before genesis).
pub fn slot_at(clock: &SlotClock, t: f64) -> u64 {
    clock.slot_at(Duration::try_from_secs_f64(t).unwrap_or_default())
}

/// One concrete fault occurrence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// Unique number within the timeline (also the NFQUEUE number of a latency fault).
    pub id: u16,
    /// Index of the spec entry it comes from.
    pub source: usize,
    /// The spec entry's `id`, if any.
    pub name: Option<String>,
    /// What it does.
    pub effect: Effect,
    /// UNIX time it starts.
    pub start: f64,
    /// UNIX time it ends (heal / restart); `None`: lasts to the end of the run.
    pub end: Option<f64>,
}

/// Start or end of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The fault ends (heal, restart, unpause). Sorted first at equal times.
    Stop,
    /// The fault begins.
    Start,
}

impl From<Phase> for LogPhase {
    fn from(p: Phase) -> LogPhase {
        match p {
            Phase::Start => LogPhase::Start,
            Phase::Stop => LogPhase::Stop,
        }
    }
}

/// One thing the executor does at a moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    /// UNIX time.
    pub time: f64,
    /// Slot at that time.
    pub slot: u64,
    /// Start or stop.
    pub phase: Phase,
    /// The fault.
    pub fault: Fault,
}

/// A run's faults and the sorted actions that apply and heal them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Every fault occurrence (random faults expanded).
    pub faults: Vec<Fault>,
    /// Actions in execution order.
    pub actions: Vec<Action>,
}

/// Builds the timeline of `spec`'s faults for a run whose genesis is at `plan.genesis_time`.
/// Pure and deterministic: random faults draw from `spec.seed`.
pub fn timeline(spec: &DevnetSpec, plan: &Plan) -> Result<Timeline> {
    build_timeline(&spec.faults, spec, plan.slot_clock())
}

fn span_secs(v: &str, clock: SlotClock) -> Result<f64> {
    Span::parse(v)
        .map(|s| s.seconds(clock.seconds_per_slot(), clock.slots_per_epoch()))
        .map_err(|e| anyhow!(e))
}

fn build_timeline(faults: &[FaultSpec], spec: &DevnetSpec, clock: SlotClock) -> Result<Timeline> {
    let g = clock.genesis_time() as f64;
    let run_end = g + spec.run_seconds();
    let all = spec.container_names();
    let mut out: Vec<Fault> = Vec::new();
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut next_id = 1u16;
    let mut push = |out: &mut Vec<Fault>, f: Fault| -> Result<usize> {
        // An end at or after the end of the run (`for: 1000 epochs`, a restart after the
        // run) is no end: the fault lasts to the end of the run, as `end: None` says.
        let end = f.end.filter(|e| *e < run_end);
        out.push(Fault {
            id: next_id,
            end,
            ..f
        });
        next_id = next_id
            .checked_add(1)
            .ok_or_else(|| anyhow!("more than 65534 fault occurrences"))?;
        Ok(out.len() - 1)
    };
    for (i, f) in faults.iter().enumerate() {
        let ctx = || format!("faults[{i}]");
        let start = g + At::parse(&f.at)
            .map_err(|e| anyhow!(e))
            .with_context(ctx)?
            .seconds(clock.seconds_per_slot(), clock.slots_per_epoch());
        let end = match &f.for_ {
            Some(d) => Some(start + span_secs(d, clock).with_context(ctx)?),
            None => None,
        };
        let target = || {
            f.target
                .clone()
                .ok_or_else(|| anyhow!("{}: no target", ctx()))
        };
        let scope = || match &f.link {
            Some(l) if l.len() == 2 => Scope::Link(l[0].clone(), l[1].clone()),
            _ if !f.to.is_empty() => Scope::To(f.targets.clone(), f.to.clone()),
            _ => Scope::Egress(f.targets.clone()),
        };
        let beacon_node = || -> Result<(String, String)> {
            let t = target()?;
            let bn = spec
                .beacon_node_of(&t)
                .ok_or_else(|| anyhow!("{}: `{t}` is not a dvnode", ctx()))?;
            Ok((t, bn.to_string()))
        };
        let ms = |v: &Option<String>| -> Result<f64> {
            match v {
                Some(v) => Ok(span_secs(v, clock)? * 1000.0),
                None => Ok(0.0),
            }
        };
        let restart = match &f.restart_after {
            Some(d) => Some(span_secs(d, clock).with_context(ctx)?),
            None => None,
        };
        let base = |effect: Effect, end: Option<f64>| Fault {
            id: 0,
            source: i,
            name: f.id.clone(),
            effect,
            start,
            end,
        };
        let effect = match f.kind {
            FaultKind::Partition => Effect::Partition {
                groups: match &f.isolate {
                    Some(x) => vec![
                        vec![x.clone()],
                        all.iter().filter(|n| *n != x).cloned().collect(),
                    ],
                    None => f.groups.clone(),
                },
            },
            FaultKind::Latency => Effect::Latency {
                scope: scope(),
                delay_ms: ms(&f.delay).with_context(ctx)?,
                jitter_ms: ms(&f.jitter).with_context(ctx)?,
            },
            FaultKind::Loss => Effect::Loss {
                scope: scope(),
                percent: f.percent.unwrap_or(0.0),
            },
            FaultKind::BnErrors => {
                let (target, beacon_node) = beacon_node()?;
                Effect::BnErrors {
                    target,
                    beacon_node,
                    status: f.status.unwrap_or(503),
                }
            }
            // Late answers: every packet the beacon node sends to the dvnode waits.
            FaultKind::BnLatency => {
                let (target, beacon_node) = beacon_node()?;
                Effect::Latency {
                    scope: Scope::To(vec![beacon_node], vec![target]),
                    delay_ms: ms(&f.delay).with_context(ctx)?,
                    jitter_ms: ms(&f.jitter).with_context(ctx)?,
                }
            }
            FaultKind::Bandwidth => Effect::Bandwidth {
                targets: f.targets.clone(),
                bits_per_sec: match &f.rate {
                    Some(Scalar::Text(r)) => {
                        parse_rate(r).map_err(|e| anyhow!("{}: {e}", ctx()))?
                    }
                    _ => bail!("{}: bandwidth needs a rate such as 1mbit", ctx()),
                },
            },
            FaultKind::Crash => Effect::Crash { target: target()? },
            FaultKind::Stop => Effect::Stop { target: target()? },
            FaultKind::Pause => Effect::Pause { target: target()? },
            FaultKind::ClockSkew => Effect::ClockSkew {
                target: target()?,
                offset_secs: parse_offset(f.offset.as_deref().unwrap_or(""))
                    .map_err(|e| anyhow!("{}: {e}", ctx()))?,
            },
            FaultKind::RandomCrash | FaultKind::RandomStop => {
                let rate = match f.rate {
                    Some(Scalar::Number(r)) if r > 0.0 => r,
                    _ => bail!("{}: a random fault needs a positive rate", ctx()),
                };
                let restart = restart.ok_or_else(|| anyhow!("{}: no restart_after", ctx()))?;
                let window_end = end.unwrap_or(run_end).min(run_end);
                let epoch_secs = (clock.seconds_per_slot() * clock.slots_per_epoch()) as f64;
                // One stream per entry: adding an entry does not reshuffle the others.
                let mut rng = ChaCha8Rng::seed_from_u64(
                    spec.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let mut down_until: BTreeMap<&str, f64> = BTreeMap::new();
                let mut t = start;
                loop {
                    // Exponential inter-arrival times: a Poisson process of `rate` per epoch.
                    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                    t += -u.ln() * epoch_secs / rate;
                    if t >= window_end {
                        break;
                    }
                    let up: Vec<&str> = f
                        .targets
                        .iter()
                        .map(String::as_str)
                        .filter(|n| down_until.get(n).is_none_or(|u| *u <= t))
                        .collect();
                    if up.is_empty() {
                        continue;
                    }
                    let victim = up[rng.gen_range(0..up.len())];
                    down_until.insert(victim, t + restart);
                    let effect = if f.kind == FaultKind::RandomCrash {
                        Effect::Crash {
                            target: victim.to_string(),
                        }
                    } else {
                        Effect::Stop {
                            target: victim.to_string(),
                        }
                    };
                    push(
                        &mut out,
                        Fault {
                            start: t,
                            ..base(effect, Some(t + restart))
                        },
                    )?;
                }
                continue;
            }
            FaultKind::Heal => {
                let name = f.fault.as_deref().unwrap_or("");
                let idx = *by_name
                    .get(name)
                    .ok_or_else(|| anyhow!("{}: heals unknown fault `{name}`", ctx()))?;
                if start <= out[idx].start {
                    bail!("{}: heal of `{name}` before it starts", ctx());
                }
                out[idx].end = Some(start);
                continue;
            }
        };
        let end = match f.kind {
            FaultKind::Crash | FaultKind::Stop => restart.map(|r| start + r),
            _ => end,
        };
        let idx = push(&mut out, base(effect, end))?;
        if let Some(n) = &f.id {
            by_name.insert(n.as_str(), idx);
        }
    }
    let mut actions: Vec<Action> = Vec::new();
    for f in &out {
        actions.push(Action {
            time: f.start,
            slot: slot_at(&clock, f.start),
            phase: Phase::Start,
            fault: f.clone(),
        });
        if let Some(e) = f.end {
            actions.push(Action {
                time: e,
                slot: slot_at(&clock, e),
                phase: Phase::Stop,
                fault: f.clone(),
            });
        }
    }
    actions.sort_by(|a, b| {
        a.time
            .total_cmp(&b.time)
            .then(a.phase.cmp(&b.phase))
            .then(a.fault.id.cmp(&b.fault.id))
    });
    Ok(Timeline {
        faults: out,
        actions,
    })
}

/// Containers that may be down (crashed, stopped, paused) at UNIX time `now` because a
/// fault of `timeline` intends it: inside the fault's window, plus `grace` seconds after it
/// for the restart. Full Docker names.
pub fn intended_down(plan: &Plan, timeline: &Timeline, now: f64, grace: f64) -> Vec<String> {
    intended_down_between(plan, timeline, now, now, grace)
}

/// Containers that a fault of `timeline` intends down (as [`intended_down`]) at any time
/// from `from` to `to`: a Kubernetes pod restarted by a crash fault between two checks is
/// running again at the second.
pub fn intended_down_between(
    plan: &Plan,
    timeline: &Timeline,
    from: f64,
    to: f64,
    grace: f64,
) -> Vec<String> {
    timeline
        .faults
        .iter()
        .filter(|f| to >= f.start && f.end.is_none_or(|e| from <= e + grace))
        .filter_map(|f| match &f.effect {
            Effect::Crash { target } | Effect::Stop { target } | Effect::Pause { target } => {
                Some(format!("dvlab-{}-{target}", plan.run))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::test_support::spec_with;

    fn tl(spec: &DevnetSpec) -> Timeline {
        timeline(spec, &Plan::new(spec, 1_000)).unwrap()
    }

    /// (slot, phase, kind) of every action, in timeline order.
    fn steps(t: &Timeline) -> Vec<(u64, Phase, &'static str)> {
        t.actions
            .iter()
            .map(|a| (a.slot, a.phase, a.fault.effect.kind()))
            .collect()
    }

    /// A restart or an end after the run (here u64::MAX epochs or slots, which overflowed
    /// before) is no end: the fault lasts to the end of the run and has no stop action.
    #[test]
    fn end_after_the_run_is_no_end() {
        let big = u64::MAX;
        for faults in [
            format!("  - {{at: epoch 3, kind: crash, target: dv0-1, restart_after: {big} epochs}}\n"),
            format!("  - {{at: epoch 3, kind: loss, percent: 10, targets: [dv0-2], for: {big} slots}}\n"),
            "  - {at: epoch 3, kind: loss, percent: 10, targets: [dv0-2], for: 100 epochs}\n".into(),
        ] {
            let t = tl(&spec_with(&faults, 1));
            assert_eq!(t.faults[0].end, None, "{faults}");
            assert_eq!(steps(&t).len(), 1, "{faults}: only the start");
        }
    }

    #[test]
    fn design_example_timeline() {
        let spec = spec_with(
            "  - {at: epoch 3, kind: partition, groups: [[dv0-0, dv0-1], [dv0-2, dv0-3]], for: 2 epochs}\n\
             \x20 - {at: epoch 6, kind: crash, target: dv0-1, restart_after: 30s}\n",
            42,
        );
        let t = tl(&spec);
        // genesis 1020, 4 s slots, 8 slots per epoch: epoch 3 = 1116, epoch 5 = 1180, epoch 6 = 1212.
        let got: Vec<_> = t
            .actions
            .iter()
            .map(|a| (a.time, a.slot, a.phase, a.fault.effect.kind()))
            .collect();
        assert_eq!(
            got,
            [
                (1116.0, 24, Phase::Start, "partition"),
                (1180.0, 40, Phase::Stop, "partition"),
                (1212.0, 48, Phase::Start, "crash"),
                (1242.0, 55, Phase::Stop, "crash"),
            ]
        );
    }

    const RANDOM: &str = "  - {at: epoch 1, kind: random_crash, rate: 1.5, targets: [dv0-0, dv0-1, dv0-2, dv0-3], restart_after: 20s, for: 6 epochs}\n";

    #[test]
    fn same_seed_same_timeline_different_seed_differs() {
        let a = tl(&spec_with(RANDOM, 7));
        let b = tl(&spec_with(RANDOM, 7));
        let c = tl(&spec_with(RANDOM, 8));
        assert_eq!(a, b);
        assert!(a.faults.len() >= 3, "{} crashes", a.faults.len());
        assert_ne!(a.actions, c.actions);
        // Inside the window, restart 20 s after each crash, never crashing a node that is down.
        for f in &a.faults {
            assert!(f.start >= 1020.0 + 32.0 && f.start < 1020.0 + 7.0 * 32.0);
            assert_eq!(f.end, Some(f.start + 20.0));
            let t = &f.effect.targets()[0];
            assert!(!a.faults.iter().any(|g| g.id != f.id
                && &g.effect.targets()[0] == t
                && g.start >= f.start
                && g.start < f.start + 20.0));
        }
    }

    #[test]
    fn overlapping_faults_and_explicit_heal() {
        let spec = spec_with(
            "  - {id: p, at: slot 10, kind: partition, isolate: bn1}\n\
             \x20 - {at: slot 12, kind: latency, delay: 200ms, jitter: 20ms, targets: [dv0-0], for: 4 slots}\n\
             \x20 - {at: slot 12, kind: clock_skew, target: dv0-0, offset: -2s}\n\
             \x20 - {at: slot 20, kind: heal, fault: p}\n",
            1,
        );
        let t = tl(&spec);
        assert_eq!(
            steps(&t),
            [
                (10, Phase::Start, "partition"),
                (12, Phase::Start, "latency"),
                (12, Phase::Start, "clock_skew"),
                (16, Phase::Stop, "latency"),
                (20, Phase::Stop, "partition"),
            ]
        );
        match &t.faults[0].effect {
            Effect::Partition { groups } => {
                assert_eq!(groups[0], ["bn1"]);
                assert!(groups[1].contains(&"dv0-3-vc".to_string()));
                assert!(!groups[1].contains(&"bn1".to_string()));
            }
            e => panic!("{e:?}"),
        }
        match &t.faults[1].effect {
            Effect::Latency {
                delay_ms,
                jitter_ms,
                ..
            } => assert_eq!((*delay_ms, *jitter_ms), (200.0, 20.0)),
            e => panic!("{e:?}"),
        }
        assert_eq!(t.faults[2].end, None);
    }

    /// `bn_latency` delays what the dvnode's beacon node sends to it; `bn_errors` names the
    /// beacon node; a loss with `to` has one leg per (target, peer).
    #[test]
    fn beacon_node_faults_and_one_way_loss() {
        let spec = spec_with(
            "  - {at: slot 8, kind: bn_latency, target: dv0-2, delay: 5s, for: 2 epochs}\n\
             \x20 - {at: slot 8, kind: bn_errors, target: dv0-1, for: 2 epochs}\n\
             \x20 - {at: slot 8, kind: loss, percent: 100, targets: [dv0-2], to: [dv0-0, dv0-3], for: 2 epochs}\n",
            1,
        );
        let t = tl(&spec);
        let bn_of = |n: &str| spec.beacon_node_of(n).unwrap().to_string();
        match &t.faults[0].effect {
            Effect::Latency {
                scope, delay_ms, ..
            } => {
                assert_eq!(*delay_ms, 5000.0);
                assert_eq!(scope.legs(), [(bn_of("dv0-2"), Some("dv0-2".to_string()))]);
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            t.faults[1].effect,
            Effect::BnErrors {
                target: "dv0-1".into(),
                beacon_node: bn_of("dv0-1"),
                status: 503
            }
        );
        assert_eq!(t.faults[1].end, Some(t.faults[1].start + 64.0));
        match &t.faults[2].effect {
            Effect::Loss { scope, .. } => assert_eq!(
                scope.legs(),
                [
                    ("dv0-2".to_string(), Some("dv0-0".to_string())),
                    ("dv0-2".to_string(), Some("dv0-3".to_string()))
                ]
            ),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn heal_after_restart_is_ordered_after_it() {
        // The crash restarts dv0-1 while it is partitioned; the partition heals later.
        let spec = spec_with(
            "  - {at: slot 8, kind: partition, groups: [[dv0-0, dv0-1], [dv0-2, dv0-3]], for: 10 slots}\n\
             \x20 - {at: slot 10, kind: crash, target: dv0-1, restart_after: 2 slots}\n",
            1,
        );
        let t = tl(&spec);
        assert_eq!(
            steps(&t),
            [
                (8, Phase::Start, "partition"),
                (10, Phase::Start, "crash"),
                (12, Phase::Stop, "crash"),
                (18, Phase::Stop, "partition"),
            ]
        );
    }

    #[test]
    fn stop_sorts_before_start_at_the_same_time() {
        let spec = spec_with(
            "  - {at: slot 4, kind: pause, target: bn1, for: 2 slots}\n\
             \x20 - {at: slot 6, kind: pause, target: bn1, for: 1 slot}\n",
            1,
        );
        let t = tl(&spec);
        assert_eq!(t.actions[1].phase, Phase::Stop);
        assert_eq!(t.actions[2].phase, Phase::Start);
        assert_eq!(t.actions[1].time, t.actions[2].time);
    }

    /// A crash from t to t + 30 s: down inside its window and `grace` after it; between two
    /// checks that straddle it (Kubernetes restarts at once), also when neither check falls
    /// inside it.
    #[test]
    fn intended_down_between_covers_every_fault_window_the_interval_touches() {
        let spec = spec_with(
            "  - {at: epoch 6, kind: crash, target: dv0-1, restart_after: 30s}\n",
            1,
        );
        let plan = Plan::new(&spec, 1_000);
        let t = tl(&spec);
        let f = &t.faults[0];
        let (start, end) = (f.start, f.end.unwrap());
        let name = vec![format!("dvlab-{}-dv0-1", plan.run)];
        assert!(intended_down(&plan, &t, start - 1.0, 5.0).is_empty());
        assert_eq!(intended_down(&plan, &t, start, 5.0), name);
        assert_eq!(intended_down(&plan, &t, end + 5.0, 5.0), name);
        assert!(intended_down(&plan, &t, end + 5.1, 5.0).is_empty());
        assert_eq!(
            intended_down_between(&plan, &t, start - 100.0, end + 100.0, 5.0),
            name
        );
        assert!(intended_down_between(&plan, &t, start - 100.0, start - 1.0, 5.0).is_empty());
        assert!(intended_down_between(&plan, &t, end + 6.0, end + 100.0, 5.0).is_empty());
    }
}
