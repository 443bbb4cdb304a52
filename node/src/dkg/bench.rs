//! `dvnode bench dkg`: whole ceremonies of `n` in-process nodes over loopback libp2p (real
//! sockets, noise, the full protocol and the output files with cheap keystore encryption),
//! timed from start until every node has written its outputs.

use std::{path::Path, time::Instant};

use anyhow::{ensure, Context, Result};
use libp2p::{identity::Keypair, Multiaddr};

use super::{run, DkgConfig, DkgSummary, Round};
use crate::{
    cluster::{
        definition::{ClusterDefinition, CreateDefinition, Definition, FULL_DEPOSIT_GWEI},
        lock::{default_threshold, to_hex},
    },
    p2p::key as p2p_key,
};

/// Creates `n` node directories with p2p keys under `dir` (`node{i}/p2p-key`) and a definition
/// signed by all of them; returns the keys and the verified definition.
pub fn local_cluster(
    dir: &Path,
    n: usize,
    validators: usize,
    fork_version: &str,
) -> Result<(Vec<Keypair>, Definition)> {
    let keys: Vec<Keypair> = (0..n).map(|_| p2p_key::generate()).collect();
    for (i, k) in keys.iter().enumerate() {
        let node = dir.join(format!("node{i}"));
        std::fs::create_dir_all(&node)?;
        p2p_key::save(k, &node.join("p2p-key"))?;
    }
    let mut def = ClusterDefinition::create(&CreateDefinition {
        name: format!("bench-{n}x{validators}"),
        operators: keys
            .iter()
            .map(|k| p2p_key::peer_id(k).to_string())
            .collect(),
        threshold: default_threshold(n),
        num_validators: validators,
        fork_version: fork_version.into(),
        genesis_validators_root: to_hex(&[0; 32]),
        withdrawal_address: None,
        deposit_amount_gwei: FULL_DEPOSIT_GWEI,
    })?;
    for k in &keys {
        def.sign(k)?;
    }
    let path = dir.join("cluster-definition.json");
    def.save(&path)?;
    Ok((keys, Definition::load(&path)?))
}

/// `n` free loopback TCP addresses (bound to port 0 and released).
pub fn free_addrs(n: usize) -> Result<Vec<Multiaddr>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| {
            let port = l.local_addr()?.port();
            Ok(format!("/ip4/127.0.0.1/tcp/{port}").parse()?)
        })
        .collect()
}

/// Runs one ceremony of `n` nodes for `validators` validators in `dir`; returns every node's
/// summary and the wall time.
pub async fn ceremony(dir: &Path, n: usize, validators: usize) -> Result<(Vec<DkgSummary>, f64)> {
    let (keys, definition) = local_cluster(dir, n, validators, "0x00000001")?;
    let addrs = free_addrs(n)?;
    let start = Instant::now();
    let tasks: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let cfg = DkgConfig {
                definition: definition.clone(),
                node_dir: dir.join(format!("node{i}")),
                key,
                listen: addrs[i].clone(),
                peers: addrs.clone(),
                insecure_keys: true,
                connect_timeout: std::time::Duration::from_secs(60),
                round_timeout: std::time::Duration::from_secs(300),
                done_timeout: std::time::Duration::from_secs(300),
                fault: None,
                limits: super::run::limits(),
            };
            tokio::spawn(run(cfg))
        })
        .collect();
    let mut summaries = Vec::with_capacity(n);
    for t in tasks {
        summaries.push(t.await??);
    }
    let wall = start.elapsed().as_secs_f64();
    ensure!(
        summaries
            .iter()
            .all(|s| s.lock_hash == summaries[0].lock_hash),
        "the nodes wrote different locks"
    );
    Ok((summaries, wall))
}

/// CPU time (user + system) this process has used so far, from `/proc/self/stat` (Linux; `None`
/// elsewhere).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux configuration in use.
    Some(ticks / 100.0)
}

/// Runs every (nodes, validators) case and reports one line each through `report`.
pub async fn run_bench(
    nodes: &[usize],
    validators: &[usize],
    mut report: impl FnMut(String),
) -> Result<()> {
    report(format!(
        "{:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "nodes",
        "validators",
        "total_s",
        "cpu_s",
        "hello_s",
        "deal_s",
        "echo_s",
        "finish_s",
        "write_s"
    ));
    for &n in nodes {
        for &k in validators {
            let dir = std::env::temp_dir()
                .join(format!("dvnode-bench-dkg-{}-{n}x{k}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let cpu_start = process_cpu_seconds();
            let result = ceremony(&dir, n, k).await;
            let cpu = match (cpu_start, process_cpu_seconds()) {
                (Some(a), Some(b)) => format!("{:.2}", b - a),
                _ => "-".into(),
            };
            let _ = std::fs::remove_dir_all(&dir);
            let (summaries, wall) = result?;
            // Per-round times: the slowest node's (the round ends for all when the last node
            // sends its message).
            let round = |r: Round| {
                summaries
                    .iter()
                    .filter_map(|s| s.rounds.iter().find(|(x, _)| *x == r))
                    .map(|(_, d)| d.as_secs_f64())
                    .fold(0.0, f64::max)
            };
            let write = summaries
                .iter()
                .map(|s| s.write.as_secs_f64())
                .fold(0.0, f64::max);
            report(format!(
                "{n:>5} {k:>10} {wall:>9.3} {cpu:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {write:>9.3}",
                round(Round::Hello),
                round(Round::Deal),
                round(Round::Echo),
                round(Round::Finish),
            ));
        }
    }
    Ok(())
}
