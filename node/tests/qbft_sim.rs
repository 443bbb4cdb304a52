//! Seeded deterministic simulations of the QBFT engine (see `dvnode::consensus::sim`).
//!
//! Every test runs `QBFT_SIM_SEEDS` seeds (default 1000); `QBFT_SIM_SEED=<seed>` runs one seed.
//! Each seed builds a scenario (cluster size, inputs, network faults, crashes, byzantine nodes —
//! always within `f = ⌊(n−1)/3⌋` faulty nodes), runs it and checks agreement, validity and
//! termination after GST. A failing seed prints the command that replays it exactly.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    time::Duration,
};

use dvnode::consensus::{
    msg::{InstanceId, MsgKind},
    qbft::max_faulty,
    sim::{
        check, run, scenario_leader, within_fault_bound, Behaviour, CrashAt, CrashPlan, NetConfig,
        NodeSpec, Outcome, Scenario, SimValue, INVALID_VALUE_BASE, STALE_VALUE_BIT,
    },
    timer::LinearTimer,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Seeds to run: `QBFT_SIM_SEED` alone, else `0..QBFT_SIM_SEEDS` (default 1000).
fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("QBFT_SIM_SEED") {
        return vec![s
            .trim()
            .parse()
            .expect("QBFT_SIM_SEED must be an unsigned integer")];
    }
    let count = std::env::var("QBFT_SIM_SEEDS")
        .map(|s| {
            s.trim()
                .parse()
                .expect("QBFT_SIM_SEEDS must be an unsigned integer")
        })
        .unwrap_or(1000u64);
    (0..count).collect()
}

/// Runs `build` for every seed, checks the properties plus `extra`, and fails listing replay
/// commands for failing seeds. Returns the outcomes for aggregate checks.
fn run_seeds(
    test: &str,
    build: impl Fn(&mut StdRng) -> Scenario,
    extra: impl Fn(&Scenario, &Outcome) -> Result<(), String>,
) -> Vec<Outcome> {
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for seed in seeds() {
        let result = catch_unwind(AssertUnwindSafe(|| {
            // The scenario and the run use independent streams derived from the seed.
            let scenario = build(&mut StdRng::seed_from_u64(seed ^ 0x5eed_5eed_5eed_5eed));
            assert!(
                within_fault_bound(&scenario),
                "scenario exceeds the fault bound: {scenario:?}"
            );
            let outcome = run(&scenario, seed);
            check(&scenario, &outcome)
                .and_then(|()| extra(&scenario, &outcome))
                .map(|()| outcome)
        }));
        let error = match result {
            Ok(Ok(outcome)) => {
                outcomes.push(outcome);
                continue;
            }
            Ok(Err(e)) => e,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .map_or("panic".to_string(), |p| format!("panic: {p}")),
        };
        let line = format!("seed {seed}: {error}\n  replay: QBFT_SIM_SEED={seed} cargo test -p dvnode --test qbft_sim -- {test}");
        eprintln!("{line}");
        failures.push(line);
    }
    assert!(
        failures.is_empty(),
        "{} failing seed(s):\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    outcomes
}

/// A random lossy network: GST in 0–8 s, before it up to 30 % loss, 20 % duplication and
/// 1.5 s delay; after it 1 ms – 200 ms delay.
fn lossy_net(rng: &mut StdRng) -> NetConfig {
    NetConfig {
        gst: ms(rng.gen_range(0..8000)),
        drop_prob: rng.gen_range(0.0..0.3),
        dup_prob: rng.gen_range(0.0..0.2),
        max_delay_before_gst: ms(rng.gen_range(0..1500)),
        min_delay: ms(1),
        max_delay: ms(rng.gen_range(20..200)),
    }
}

/// `n` honest nodes with random instance, inputs (all equal or all distinct) and start jitter.
fn base(rng: &mut StdRng, n: usize, net: NetConfig) -> Scenario {
    let same = rng.gen_bool(0.3);
    let nodes = (0..n)
        .map(|i| NodeSpec {
            start_at: ms(rng.gen_range(0..300)),
            ..NodeSpec::honest(SimValue(if same { 100 } else { 100 + i as u64 }))
        })
        .collect();
    Scenario {
        instance: InstanceId {
            slot: rng.gen_range(0..1_000_000),
            duty: rng.gen_range(0..8),
        },
        nodes,
        net,
        timer: LinearTimer::new(ms(1000), ms(500)),
        deadline_after_gst: Duration::from_secs(60),
    }
}

fn random_crash(rng: &mut StdRng, gst: Duration) -> CrashPlan {
    let at = if rng.gen_bool(0.7) {
        CrashAt::Time(ms(rng.gen_range(0..(gst.as_millis() as u64 + 3000))))
    } else {
        let kind = [
            MsgKind::PrePrepare,
            MsgKind::Prepare,
            MsgKind::Commit,
            MsgKind::RoundChange,
        ][rng.gen_range(0..4)];
        CrashAt::AfterSending {
            kind,
            deliver_to: rng.gen_range(0..4),
        }
    };
    let restart_after = rng.gen_bool(0.7).then(|| ms(rng.gen_range(100..6000)));
    CrashPlan { at, restart_after }
}

/// Picks `count` distinct node indices, preferring the round-1 leader with probability 1/2.
fn pick_nodes(rng: &mut StdRng, sc: &Scenario, count: usize) -> Vec<usize> {
    let n = sc.nodes.len();
    let mut picked = Vec::new();
    if count > 0 && rng.gen_bool(0.5) {
        picked.push(scenario_leader(sc, 1));
    }
    while picked.len() < count {
        let i = rng.gen_range(0..n);
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked
}

fn no_extra(_: &Scenario, _: &Outcome) -> Result<(), String> {
    Ok(())
}

fn total_drops(outcomes: &[Outcome], reason: &str) -> usize {
    outcomes.iter().map(|o| o.drop_count(reason)).sum()
}

#[test]
fn random_faults_n4() {
    run_seeds(
        "random_faults_n4",
        |rng| {
            let net = lossy_net(rng);
            let mut sc = base(rng, 4, net);
            if rng.gen_bool(0.5) {
                let i = pick_nodes(rng, &sc, 1)[0];
                sc.nodes[i].crash = Some(random_crash(rng, net.gst));
            }
            sc
        },
        no_extra,
    );
}

#[test]
fn random_faults_n7() {
    run_seeds(
        "random_faults_n7",
        |rng| {
            let net = lossy_net(rng);
            let mut sc = base(rng, 7, net);
            let faults = rng.gen_range(0..=2);
            for i in pick_nodes(rng, &sc, faults) {
                match rng.gen_range(0..3) {
                    0 => sc.nodes[i].crash = Some(random_crash(rng, net.gst)),
                    1 => sc.nodes[i].behaviour = Behaviour::Equivocator,
                    _ => sc.nodes[i].behaviour = Behaviour::Garbage,
                }
            }
            sc
        },
        no_extra,
    );
}

#[test]
fn crash_restart() {
    let outcomes = run_seeds(
        "crash_restart",
        |rng| {
            let n = if rng.gen_bool(0.5) { 4 } else { 7 };
            let net = lossy_net(rng);
            let mut sc = base(rng, n, net);
            let f = max_faulty(n as u64) as usize;
            for i in pick_nodes(rng, &sc, f) {
                let mut plan = random_crash(rng, net.gst);
                plan.restart_after = Some(ms(rng.gen_range(100..6000)));
                sc.nodes[i].crash = Some(plan);
            }
            sc
        },
        |sc, out| {
            // Every crashed node restarted and decided in its new incarnation.
            for (i, spec) in sc.nodes.iter().enumerate() {
                if spec.crash.is_some() && !out.decided_at_end[i] {
                    return Err(format!("restarted node {i} did not decide"));
                }
            }
            Ok(())
        },
    );
    let restarted = outcomes
        .iter()
        .flat_map(|o| &o.decisions)
        .filter(|d| d.incarnation > 0)
        .count();
    assert!(
        restarted > 0 || seeds().len() < 10,
        "no restarted node ever decided"
    );
}

#[test]
fn leader_crash_every_phase() {
    const PHASES: [Option<MsgKind>; 4] = [
        None,
        Some(MsgKind::PrePrepare),
        Some(MsgKind::Prepare),
        Some(MsgKind::Commit),
    ];
    run_seeds(
        "leader_crash_every_phase",
        |rng| {
            let n = if rng.gen_bool(0.5) { 4 } else { 7 };
            let net = if rng.gen_bool(0.5) {
                NetConfig::synchronous()
            } else {
                lossy_net(rng)
            };
            let mut sc = base(rng, n, net);
            let l = scenario_leader(&sc, 1);
            let at = match PHASES[rng.gen_range(0..PHASES.len())] {
                None => CrashAt::Time(Duration::ZERO),
                Some(kind) => CrashAt::AfterSending {
                    kind,
                    deliver_to: rng.gen_range(0..n),
                },
            };
            let restart_after = rng.gen_bool(0.5).then(|| ms(rng.gen_range(100..5000)));
            sc.nodes[l].crash = Some(CrashPlan { at, restart_after });
            if n == 7 && rng.gen_bool(0.5) {
                // The round-2 leader crashes too, at a random time.
                let l2 = scenario_leader(&sc, 2);
                sc.nodes[l2].crash = Some(random_crash(rng, sc.net.gst));
            }
            sc
        },
        |sc, out| {
            // On a synchronous network, a leader that never proposed cannot have its round decide.
            let l = scenario_leader(sc, 1);
            let crash = sc.nodes[l].crash.expect("leader crash planned");
            // A crash at or before the start comes first (see `CrashAt::Time`).
            let never_proposed = match crash.at {
                CrashAt::Time(t) => t <= sc.nodes[l].start_at,
                CrashAt::AfterSending { kind, deliver_to } => {
                    kind == MsgKind::PrePrepare && deliver_to == 0
                }
            };
            if sc.net.gst.is_zero() && never_proposed && crash.restart_after.is_none() {
                if let Some(d) = out.decisions.iter().find(|d| d.round == 1) {
                    return Err(format!(
                        "node {} decided in round 1 without a proposal",
                        d.node
                    ));
                }
            }
            Ok(())
        },
    );
}

/// Skewed clocks with the proposal guard: up to f honest nodes run their clocks up to 2 s off.
/// One running ahead starts its instance early and holds stale data (fetched before the slot's
/// block); one running behind starts late. The others start together at 2.2 s (± 150 ms) with
/// fresh inputs and refuse a stale proposal (the compare hook). Besides agreement, validity and
/// termination: no stale value is ever decided (a quorum needs a fresh node's PREPARE), and on a
/// synchronous network a stale round-1 leader's proposal is refused.
#[test]
fn skewed_clocks_with_proposal_guard() {
    let outcomes = run_seeds(
        "skewed_clocks_with_proposal_guard",
        |rng| {
            let n = if rng.gen_bool(0.5) { 4 } else { 7 };
            let net = if rng.gen_bool(0.5) {
                NetConfig::synchronous()
            } else {
                lossy_net(rng)
            };
            let mut sc = base(rng, n, net);
            for node in sc.nodes.iter_mut() {
                node.start_at = ms(rng.gen_range(2050..2350));
            }
            let skewed = rng.gen_range(1..=max_faulty(n as u64) as usize);
            for i in pick_nodes(rng, &sc, skewed) {
                let offset = rng.gen_range(300..=2000);
                if rng.gen_bool(0.6) {
                    sc.nodes[i].start_at -= ms(offset);
                    sc.nodes[i].input = SimValue(STALE_VALUE_BIT | sc.nodes[i].input.0);
                } else {
                    sc.nodes[i].start_at += ms(offset);
                }
            }
            sc
        },
        |sc, out| {
            if let Some(d) = out.decisions.iter().find(|d| d.value.is_stale()) {
                return Err(format!("node {} decided stale {:?}", d.node, d.value));
            }
            let leader = scenario_leader(sc, 1);
            if sc.net.gst.is_zero()
                && sc.nodes[leader].input.is_stale()
                && out.drop_count("CompareRejected") == 0
            {
                return Err("the stale round-1 proposal was never refused".into());
            }
            Ok(())
        },
    );
    assert!(outcomes.iter().all(|o| !o.decisions.is_empty()));
}

#[test]
fn byzantine_equivocator() {
    let outcomes = run_seeds(
        "byzantine_equivocator",
        |rng| {
            let n = if rng.gen_bool(0.5) { 4 } else { 7 };
            let net = if rng.gen_bool(0.3) {
                NetConfig::synchronous()
            } else {
                lossy_net(rng)
            };
            let mut sc = base(rng, n, net);
            let f = max_faulty(n as u64) as usize;
            let picked = pick_nodes(rng, &sc, f);
            sc.nodes[picked[0]].behaviour = Behaviour::Equivocator;
            if let Some(&second) = picked.get(1) {
                if rng.gen_bool(0.5) {
                    sc.nodes[second].behaviour = Behaviour::Equivocator;
                } else {
                    sc.nodes[second].crash = Some(random_crash(rng, sc.net.gst));
                }
            }
            sc
        },
        no_extra,
    );
    if seeds().len() >= 50 {
        // The byzantine behaviour was exercised and caught.
        assert!(
            total_drops(&outcomes, "Unjustified") > 0,
            "no unjustified message was ever caught"
        );
        assert!(
            total_drops(&outcomes, "InvalidSignature") > 0,
            "no forged signature was ever caught"
        );
        let byz_proposal_decided = outcomes
            .iter()
            .any(|o| o.decisions.iter().any(|d| d.value.0 >= 1_000_000));
        assert!(
            byz_proposal_decided,
            "no equivocated (valid) proposal was ever decided: equivocation not exercised"
        );
    }
}

#[test]
fn byzantine_garbage() {
    let outcomes = run_seeds(
        "byzantine_garbage",
        |rng| {
            let n = if rng.gen_bool(0.5) { 4 } else { 7 };
            let net = if rng.gen_bool(0.3) {
                NetConfig::synchronous()
            } else {
                lossy_net(rng)
            };
            let mut sc = base(rng, n, net);
            let picked = pick_nodes(rng, &sc, max_faulty(n as u64) as usize);
            sc.nodes[picked[0]].behaviour = Behaviour::Garbage;
            if let Some(&second) = picked.get(1) {
                sc.nodes[second].behaviour = if rng.gen_bool(0.5) {
                    Behaviour::Equivocator
                } else {
                    Behaviour::Garbage
                };
            }
            sc
        },
        no_extra,
    );
    if seeds().len() >= 50 {
        let wire_errors: usize = outcomes.iter().map(|o| o.wire_errors).sum();
        assert!(
            wire_errors > 0,
            "garbage bytes never reached an honest node"
        );
        for reason in [
            "WrongInstance",
            "ZeroRound",
            "UnknownSource",
            "InvalidSignature",
            "Duplicate",
            "Malformed",
        ] {
            assert!(
                total_drops(&outcomes, reason) > 0,
                "no {reason} drop was ever recorded"
            );
        }
    }
}

#[test]
fn invalid_leader_value_never_decided() {
    let outcomes = run_seeds(
        "invalid_leader_value_never_decided",
        |rng| {
            let n = if rng.gen_bool(0.5) { 4 } else { 7 };
            let net = if rng.gen_bool(0.5) {
                NetConfig::synchronous()
            } else {
                lossy_net(rng)
            };
            let mut sc = base(rng, n, net);
            // The leaders of the first one or two rounds hold invalid inputs.
            let bad_rounds = rng.gen_range(1..=2);
            for r in 1..=bad_rounds {
                let l = scenario_leader(&sc, r);
                sc.nodes[l].input = SimValue(INVALID_VALUE_BASE + r);
            }
            sc
        },
        |sc, out| {
            if let Some(d) = out
                .decisions
                .iter()
                .find(|d| d.value.0 >= INVALID_VALUE_BASE)
            {
                return Err(format!("node {} decided invalid {:?}", d.node, d.value));
            }
            // Synchronous network: the invalid round-1 proposal is refused, so no round-1 decision.
            if sc.net.gst.is_zero() {
                if let Some(d) = out.decisions.iter().find(|d| d.round == 1) {
                    return Err(format!(
                        "node {} decided in round 1 despite an invalid proposal",
                        d.node
                    ));
                }
                if out.drop_count("InvalidValue") == 0 {
                    return Err("the invalid proposal was never refused".into());
                }
            }
            Ok(())
        },
    );
    assert!(outcomes.iter().all(|o| !o.decisions.is_empty()));
}

/// A WAN of 200–220 ms per hop (the latency-200ms scenario) with a leader whose input came
/// 300–400 ms after the others' (its beacon node answered later): with dvnode's default timer
/// (750 ms + 250 ms per round) the others' round 1 ends before a quorum of PREPAREs reaches
/// them (PRE-PREPARE ≥ 500 ms, PREPAREs ≥ 700 ms + processing), and round 2 needs four hops in
/// 1 s. A round whose proposal was accepted is extended by its own timeout (1.5 s), so every
/// node decides in round 1, before the attestation's 1/3 + 2/3-slot marks of a 4 s slot.
/// Fails without the extension (decisions in rounds 2–3).
#[test]
fn slow_wan_and_late_leader_decide_in_round_one() {
    run_seeds(
        "slow_wan_and_late_leader_decide_in_round_one",
        |rng| {
            let net = NetConfig {
                min_delay: ms(200),
                max_delay: ms(220),
                ..NetConfig::synchronous()
            };
            let mut sc = base(rng, 4, net);
            sc.timer = LinearTimer::default();
            for node in sc.nodes.iter_mut() {
                node.start_at = ms(rng.gen_range(0..50));
            }
            let leader = scenario_leader(&sc, 1);
            sc.nodes[leader].start_at = ms(rng.gen_range(300..400));
            sc
        },
        |_, out| {
            if out.decisions.len() != 4 {
                return Err(format!("{} of 4 nodes decided", out.decisions.len()));
            }
            match out
                .decisions
                .iter()
                .find(|d| d.round != 1 || d.at > ms(1600))
            {
                Some(d) => Err(format!(
                    "node {} decided in round {} at {:?}",
                    d.node, d.round, d.at
                )),
                None => Ok(()),
            }
        },
    );
}
