//! `bench-scale`: how far one 4-node dvnode cluster scales on this machine.
//!
//! For each validator count (and mode): `dvnode create-cluster` (4 nodes, threshold 3, random
//! keys), a simulated beacon node ([`dvlab_tests::simbn`], one port per node), four real
//! release dvnode processes over loopback libp2p with their slashing DBs on disk, and one
//! simulated Lodestar-like validator client per node ([`dvlab_tests::simvc`]) signing with the
//! node's key shares (`--modes middleware`), or holding no key and asking its dvnode's
//! Web3Signer API for every signature (`--modes remote`: dvnodes run with `--signer remote`,
//! as `e2e-local --signer remote` starts them, and also perform the DVs' aggregation and sync
//! contribution duties). The chain starts at genesis a little after everything started; the
//! measured slots are the `--epochs` epochs from genesis. Prints a table and writes
//! `<out>/summary.json` (`{"rows": [...]}`, see [`dvlab_tests::benchscale`]) and, per row,
//! `<out>/v<N>-<mode>/` with the processes' logs, duty logs, metrics and details.
//!
//! In remote mode the expected aggregation and sync contribution duties are computed by the
//! harness, independently of dvnode: it recovers each DV's whole secret key from three nodes'
//! key shares (checked against the DV public key of the lock), signs the selection proofs
//! itself and applies `is_aggregator` / `is_sync_committee_aggregator` to the simulated chain's
//! committees (as `tests/src/remote.rs` does with interop keys).
//!
//! Exit code: 0 when every row ran (whether or not it meets the goal), 2 when a run failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use dvlab_tests::benchscale::{self, NodeFigures, Row, RowInput};
use dvlab_tests::dutylog::DutyLog;
use dvlab_tests::ports::PortAllocator;
use dvlab_tests::simbn::chain::{epoch_of, SLOTS_PER_EPOCH};
use dvlab_tests::simbn::{self, now_ms, ObjectKind, SimBn, SimBnConfig, P};
use dvlab_tests::simvc::{self, SimVc};
use dvlab_tests::supervisor::{self, Supervisor};
use dvnode::clock::unix_now;
use dvnode::cluster::lock::ClusterLock;
use dvnode::eth::aggregate::{
    is_aggregator, is_sync_committee_aggregator, sync_subcommittees, SyncAggregatorSelectionData,
};
use dvnode::eth::types::{BlsPubkey, BlsSignature, Root, ValidatorIndex};
use dvnode::keys::tbls::{self, SecretKey};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

const NODES: usize = 4;
const THRESHOLD: usize = 3;
/// The modes a row runs in (the `mode` of its summary row).
const MODES: [&str; 2] = ["middleware", "remote"];

/// Scale benchmark of a 4-node dvnode cluster (simulated beacon node and validator clients).
#[derive(Parser, Debug, Clone)]
#[command(name = "bench-scale")]
struct Args {
    /// Validator counts, one run each (comma-separated).
    #[arg(
        long,
        env = "BENCH_SCALE_VALIDATORS",
        value_delimiter = ',',
        default_value = "100,1000,3000,10000"
    )]
    validators: Vec<u64>,
    /// Epochs measured per run (from genesis).
    #[arg(long, env = "BENCH_SCALE_EPOCHS", default_value_t = 2)]
    epochs: u64,
    /// Seconds per slot (12 on mainnet; shorter slots are a quick check, not the benchmark).
    #[arg(long, env = "BENCH_SCALE_SECONDS_PER_SLOT", default_value_t = 12)]
    seconds_per_slot: u64,
    /// Modes (comma-separated): `middleware` (the VC holds the node's key shares and talks
    /// beacon API to dvnode), `remote` (dvnode is the VC's beacon node and Web3Signer).
    #[arg(
        long,
        env = "BENCH_SCALE_MODES",
        value_delimiter = ',',
        default_value = "middleware"
    )]
    modes: Vec<String>,
    /// Validators of the simulated network, the cluster's included (default: the cluster's
    /// only, the hardest case: every slot has a DV proposer and the whole sync committee is DVs).
    #[arg(long, env = "BENCH_SCALE_NETWORK_VALIDATORS")]
    network_validators: Option<u64>,
    /// Seconds from the start of the processes to genesis (default: 20 + 1 per 400 validators).
    #[arg(long)]
    genesis_delay: Option<u64>,
    /// Output directory (rows are added to its summary.json when `--append`).
    #[arg(long, default_value = "target/bench-scale")]
    out: PathBuf,
    /// Keep earlier rows of `<out>/summary.json` (other counts or modes) and replace only the
    /// rows run now.
    #[arg(long, env = "BENCH_SCALE_APPEND")]
    append: bool,
    /// dvnode binary (default: `dvnode` next to this executable).
    #[arg(long)]
    dvnode_bin: Option<PathBuf>,
    /// Keep each run's slashing DBs.
    #[arg(long)]
    keep: bool,
    /// Create the clusters anew instead of reusing those under `<out>/clusters/`.
    #[arg(long)]
    fresh_cluster: bool,
}

fn now_secs() -> u64 {
    unix_now().as_secs()
}

/// User + system CPU seconds of process `pid` (`"self"` for this one).
fn cpu_seconds(pid: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let after = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((tick(11)? + tick(12)?) / hz)
}

async fn scrape(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn sleep_until_ms(t: u64) {
    let now = now_ms();
    if t > now {
        tokio::time::sleep(Duration::from_millis(t - now)).await;
    }
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
        })
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    })
}

struct NodePorts {
    api: u16,
    p2p: u16,
    metrics: u16,
}

/// The cluster of `validators` DVs under `<out>/clusters/` (4 nodes, threshold 3, random keys,
/// no p2p addresses: the nodes get theirs with `--p2p-peers`), created with `dvnode
/// create-cluster` unless an earlier run left a complete one. Returns its directory and the
/// seconds creation took (`None` when reused).
fn cluster(
    bin: &Path,
    out: &Path,
    validators: u64,
    gvr: Root,
    fresh: bool,
) -> Result<(PathBuf, Option<f64>)> {
    let dir = out.join("clusters").join(format!("v{validators}"));
    let complete = dir.join("complete");
    if complete.exists() && !fresh {
        return Ok((dir, None));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.parent().expect("has a parent"))?;
    let started = std::time::Instant::now();
    let output = Command::new(bin)
        .arg("create-cluster")
        .args(["--nodes", &NODES.to_string()])
        .args(["--threshold", &THRESHOLD.to_string()])
        .args(["--num-validators", &validators.to_string()])
        .arg("--insecure-keys")
        .args(["--fork-version", &simbn::GENESIS_FORK_VERSION.to_string()])
        .args(["--genesis-validators-root", &gvr.to_string()])
        .arg("--out")
        .arg(&dir)
        .output()
        .with_context(|| format!("running {} create-cluster", bin.display()))?;
    let log = out.join("clusters").join(format!("v{validators}.log"));
    std::fs::write(&log, [&output.stdout[..], &output.stderr[..]].concat())?;
    ensure!(
        output.status.success(),
        "create-cluster failed ({}); see {}",
        output.status,
        log.display()
    );
    let secs = started.elapsed().as_secs_f64();
    std::fs::write(&complete, format!("{secs:.1}\n"))?;
    eprintln!("  cluster of {validators} validators created in {secs:.1} s");
    Ok((dir, Some(secs)))
}

/// Runs one row: `validators` DVs in `mode`.
async fn run_row(args: &Args, bin: &Path, validators: u64, mode: &str) -> Result<Row> {
    ensure!(
        MODES.contains(&mode),
        "unknown mode {mode:?}: the modes are {}",
        MODES.join(", ")
    );
    let remote = mode == "remote";
    let dir = args.out.join(format!("v{validators}-{mode}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let gvr = Root(Sha256::digest(format!("dvlab bench-scale {validators}")).into());
    let (cluster_dir, create_seconds) =
        cluster(bin, &args.out, validators, gvr, args.fresh_cluster)?;
    let cluster = ClusterLock::load(&cluster_dir.join("cluster-lock.json"))?;
    ensure!(
        cluster.validators.len() as u64 == validators,
        "the lock has {} validators",
        cluster.validators.len()
    );
    let started = std::time::Instant::now();
    let mut keys = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let node_dir = cluster_dir.join(format!("node{i}"));
        let n = validators as usize;
        keys.push(
            tokio::task::spawn_blocking(move || simvc::load_share_keys(&node_dir, n)).await??,
        );
    }
    eprintln!(
        "  share keys of {NODES} nodes decrypted in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let network = args
        .network_validators
        .unwrap_or(validators)
        .max(validators);
    let delay = args.genesis_delay.unwrap_or(20 + validators / 400);
    let genesis_time = now_secs() + delay;
    let mut listeners = Vec::new();
    for _ in 0..NODES {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    }
    let bn_ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    let bn = SimBn::new(SimBnConfig {
        genesis_time,
        seconds_per_slot: args.seconds_per_slot,
        genesis_validators_root: gvr,
        signers: cluster.validators.iter().map(|v| v.pubkey).collect(),
        other_validators: network - validators,
        seed: Sha256::digest(format!("bench-scale seed {validators}")).into(),
        nodes: NODES,
    })?;
    let servers = simbn::server::serve(bn.clone(), listeners);

    // Allocated just before the nodes bind them (the cluster and its keys can take minutes).
    let mut alloc = PortAllocator::new();
    let ports: Vec<NodePorts> = (0..NODES)
        .map(|_| {
            Ok(NodePorts {
                api: alloc.allocate()?,
                p2p: alloc.allocate()?,
                metrics: alloc.allocate()?,
            })
        })
        .collect::<Result<_>>()?;
    let sup = Supervisor::new(dir.join("logs"))?;
    let peers: String = ports
        .iter()
        .map(|p| format!("/ip4/127.0.0.1/tcp/{}", p.p2p))
        .collect::<Vec<_>>()
        .join(",");
    for (i, p) in ports.iter().enumerate() {
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--node-dir")
            .arg(cluster_dir.join(format!("node{i}")))
            .arg("--beacon-node-url")
            .arg(format!("http://127.0.0.1:{}", bn_ports[i]))
            .arg("--validator-api-addr")
            .arg(format!("127.0.0.1:{}", p.api))
            .arg("--p2p-listen")
            .arg(format!("/ip4/127.0.0.1/tcp/{}", p.p2p))
            .arg("--p2p-peers")
            .arg(&peers)
            .arg("--data-dir")
            .arg(dir.join(format!("data{i}")))
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{}", p.metrics))
            .arg("--duty-log")
            .arg(dir.join(format!("duty-log-{i}.jsonl")))
            .env("DVNODE_LOG", "info");
        if remote {
            cmd.args(["--signer", "remote"]);
        }
        sup.spawn(&format!("dvnode{i}"), cmd)?;
    }
    let pids: Vec<u32> = (0..NODES)
        .map(|i| {
            sup.pid(&format!("dvnode{i}"))
                .context("dvnode exited at start")
        })
        .collect::<Result<_>>()?;
    let schedule = Arc::new(bn.schedule().clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Remote mode: the harness keeps the shares (for the expected aggregation duties); the
    // VCs get only the DV public keys.
    let dv_pubkeys: Vec<BlsPubkey> = cluster
        .validators
        .iter()
        .map(|v| BlsPubkey(v.pubkey.to_bytes()))
        .collect();
    let (vc_keys, shares) = if remote {
        (vec![None; NODES], Some(keys))
    } else {
        (keys.into_iter().map(Some).collect(), None)
    };
    let mut vcs = Vec::new();
    for (i, k) in vc_keys.into_iter().enumerate() {
        let url = format!("http://127.0.0.1:{}", ports[i].api);
        let vc = match k {
            Some(k) => SimVc::new(i, &url, schedule.clone(), k)?,
            None => SimVc::new_remote(i, &url, schedule.clone(), dv_pubkeys.clone())?,
        };
        tokio::spawn(vc.clone().run(stop_rx.clone()));
        vcs.push(vc);
    }

    let genesis_ms = genesis_time * 1000;
    let slot_ms = args.seconds_per_slot * 1000;
    let end_slot = args.epochs * SLOTS_PER_EPOCH;
    eprintln!(
        "  {NODES} dvnodes and VCs started; genesis in {:.1} s, measuring {} epochs ({} slots of {} s)",
        genesis_ms.saturating_sub(now_ms()) as f64 / 1000.0,
        args.epochs,
        end_slot,
        args.seconds_per_slot
    );
    let result = async {
        sleep_until_ms(genesis_ms).await;
        sup.check_alive()?;
        let not_ready: Vec<usize> = vcs
            .iter()
            .enumerate()
            .filter(|(_, v)| v.stats().ready_ms.is_none())
            .map(|(i, _)| i)
            .collect();
        if !not_ready.is_empty() {
            eprintln!("  warning: VC(s) {not_ready:?} had not resolved their duties at genesis (raise --genesis-delay)");
        }
        let cpu_start: Vec<f64> = pids
            .iter()
            .map(|p| cpu_seconds(&p.to_string()))
            .collect::<Result<_>>()?;
        let harness_start = cpu_seconds("self")?;
        let mut metrics_start = Vec::new();
        for p in &ports {
            metrics_start.push(scrape(&format!("http://127.0.0.1:{}/metrics", p.metrics)).await);
        }
        for epoch in 0..args.epochs {
            let until = genesis_ms + (epoch + 1) * SLOTS_PER_EPOCH * slot_ms;
            while now_ms() < until {
                tokio::time::sleep(Duration::from_millis(slot_ms.min(until - now_ms()).max(1))).await;
                sup.check_alive()?;
            }
            let rec = bn.record();
            let count = |kind: ObjectKind| {
                rec.arrivals
                    .keys()
                    .filter(|(k, s, _)| *k == kind && s / SLOTS_PER_EPOCH == epoch)
                    .count()
            };
            let att = count(ObjectKind::Attestation);
            let aggregation = if remote {
                format!(
                    ", {} aggregates, {} contributions",
                    count(ObjectKind::Aggregate),
                    count(ObjectKind::Contribution)
                )
            } else {
                String::new()
            };
            eprintln!(
                "  epoch {epoch} done: {att} DV attestations of the epoch at the beacon node{aggregation}, {} refused objects",
                rec.invalid.values().sum::<u64>()
            );
        }
        let cpu_end: Vec<f64> = pids
            .iter()
            .map(|p| cpu_seconds(&p.to_string()))
            .collect::<Result<_>>()?;
        let harness_cpu = cpu_seconds("self")? - harness_start;
        let mut metrics_end = Vec::new();
        for p in &ports {
            metrics_end.push(scrape(&format!("http://127.0.0.1:{}/metrics", p.metrics)).await);
        }
        // One more slot for the last slot's objects to arrive (late, if they do).
        sleep_until_ms(genesis_ms + (end_slot + 1) * slot_ms).await;
        let rss: Vec<u64> = pids
            .iter()
            .map(|p| supervisor::peak_rss_kib(*p))
            .collect::<Result<_>>()?;
        Ok::<_, anyhow::Error>((cpu_start, cpu_end, harness_cpu, metrics_start, metrics_end, rss))
    }
    .await;
    let _ = stop_tx.send(true);
    tokio::task::block_in_place(|| sup.shutdown());
    for s in servers {
        s.abort();
    }
    let (cpu_start, cpu_end, harness_cpu, metrics_start, metrics_end, rss) = result?;

    let mut expected = Vec::new();
    for slot in 0..end_slot {
        let (attesters, proposer, sync) = bn.duties_at(slot);
        expected.extend(
            attesters
                .into_iter()
                .map(|v| (ObjectKind::Attestation, slot, v)),
        );
        expected.extend(proposer.map(|v| (ObjectKind::Block, slot, v)));
        expected.extend(sync.into_iter().map(|v| (ObjectKind::SyncMessage, slot, v)));
    }
    let mut aggregation_check = serde_json::Value::Null;
    if let Some(shares) = shares {
        let started = std::time::Instant::now();
        let secrets = Arc::new(recover_secrets(&shares, &dv_pubkeys)?);
        let duties = expected_aggregation_duties(&bn, secrets, end_slot).await?;
        eprintln!(
            "  expected aggregation duties: {} aggregations, {} sync contributions (computed in {:.1} s)",
            duties.iter().filter(|d| d.0 == ObjectKind::Aggregate).count(),
            duties.iter().filter(|d| d.0 == ObjectKind::Contribution).count(),
            started.elapsed().as_secs_f64()
        );
        aggregation_check = vc_aggregation_check(&vcs, &duties, end_slot);
        expected.extend(duties);
    }
    let record = bn.record();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        nodes.push(NodeFigures {
            cpu_seconds: cpu_end[i] - cpu_start[i],
            peak_rss_kib: rss[i],
            metrics: metrics_end[i].clone(),
            metrics_at_start: metrics_start[i].clone(),
            duty_log: DutyLog::read(&dir.join(format!("duty-log-{i}.jsonl")))?,
        });
        std::fs::write(dir.join(format!("metrics-{i}.txt")), &metrics_end[i])?;
    }
    let vc_stats: Vec<simvc::VcStats> = vcs.iter().map(|v| v.stats()).collect();
    let row = benchscale::compute_row(RowInput {
        validators,
        network_validators: network,
        mode: mode.to_string(),
        first_slot: 0,
        end_slot,
        slot_ms,
        genesis_ms,
        expected,
        record: &record,
        vc_requests: vc_stats
            .iter()
            .flat_map(|s| s.data_requests.clone())
            .collect(),
        sign_requests: vc_stats
            .iter()
            .flat_map(|s| s.sign_requests.clone())
            .collect(),
        nodes,
        harness_cpu_seconds: harness_cpu,
    });
    let details = json!({
        "row": row,
        "create_cluster_seconds": create_seconds,
        "beacon_node": {
            "requests": record.requests,
            "unserved": record.unserved,
            "refused": record.invalid,
            "refused_samples": record.invalid_samples,
        },
        "validator_clients": vc_stats.iter().map(|s| json!({
            "indices_resolved": s.indices_resolved,
            "ready_ms_before_genesis": s.ready_ms.map(|t| genesis_ms as i64 - t as i64),
            "published": s.published,
            "errors": s.errors,
            "error_samples": s.error_samples,
            "sign_requests": s.sign_requests.len(),
            "aggregators_taken": s.aggregators.len(),
            "sync_aggregators_taken": s.sync_aggregators.len(),
        })).collect::<Vec<_>>(),
        "aggregation_check": aggregation_check,
    });
    std::fs::write(
        dir.join("details.json"),
        serde_json::to_vec_pretty(&details)?,
    )?;
    if !args.keep {
        for i in 0..NODES {
            let _ = std::fs::remove_dir_all(dir.join(format!("data{i}")));
        }
    }
    Ok(row)
}

/// Each DV's whole secret key, recovered from the key shares of nodes `0..THRESHOLD` (share
/// indices `1..=THRESHOLD`) and checked against its public key in the lock.
fn recover_secrets(shares: &[Vec<SecretKey>], dv_pubkeys: &[BlsPubkey]) -> Result<Vec<SecretKey>> {
    dv_pubkeys
        .iter()
        .enumerate()
        .map(|(j, pk)| {
            let parts: Vec<(u64, SecretKey)> = (0..THRESHOLD)
                .map(|i| (i as u64 + 1, shares[i][j].clone()))
                .collect();
            let sk = tbls::recover_secret(&parts, THRESHOLD)
                .with_context(|| format!("recovering the secret key of DV {j}"))?;
            ensure!(
                sk.sk_to_pk().to_bytes() == pk.0,
                "the secret recovered from the shares of DV {j} does not match its public key {pk}"
            );
            Ok(sk)
        })
        .collect()
}

/// The DVs' aggregation duties (committee members whose selection proof elects them) and sync
/// contribution duties (sync committee members with a subcommittee whose proof elects them;
/// the members signing at slot `s` are those of the committee of `s + 1`) in `0..end_slot`,
/// from the simulated chain's committees and selection proofs signed with the whole keys.
async fn expected_aggregation_duties(
    bn: &Arc<SimBn>,
    secrets: Arc<Vec<SecretKey>>,
    end_slot: u64,
) -> Result<Vec<(ObjectKind, u64, ValidatorIndex)>> {
    let ids: Vec<String> = (0..secrets.len()).map(|v| v.to_string()).collect();
    let schedule = Arc::new(bn.schedule().clone());
    let sign = |sk: &SecretKey, root: Root| BlsSignature(tbls::sign(sk, &root.0).to_bytes());
    let mut out = Vec::new();
    for epoch in 0..=epoch_of(end_slot.saturating_sub(1)) {
        let duties = bn
            .attester_duties(epoch, &ids)
            .map_err(|e| anyhow::anyhow!("attester duties of epoch {epoch}: {e:?}"))?;
        for d in duties.data.iter().filter(|d| d.slot < end_slot) {
            let proof = sign(
                &secrets[d.validator_index as usize],
                schedule.selection_proof_signing_root(d.slot),
            );
            if is_aggregator(d.committee_length, &proof) {
                out.push((ObjectKind::Aggregate, d.slot, d.validator_index));
            }
        }
    }
    // Sync: one blocking task per slot (up to 512 positions × 4 subcommittees of proofs).
    let mut tasks = Vec::new();
    for slot in 0..end_slot {
        let duties = bn
            .sync_duties(epoch_of(slot + 1), &ids)
            .map_err(|e| anyhow::anyhow!("sync duties for slot {slot}: {e:?}"))?;
        let secrets = secrets.clone();
        let schedule = schedule.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            duties
                .data
                .iter()
                .filter(|d| {
                    sync_subcommittees::<P>(&d.validator_sync_committee_indices)
                        .into_iter()
                        .any(|sub| {
                            let data = SyncAggregatorSelectionData {
                                slot,
                                subcommittee_index: sub,
                            };
                            let proof = sign(
                                &secrets[d.validator_index as usize],
                                schedule.sync_selection_proof_signing_root(&data),
                            );
                            is_sync_committee_aggregator::<P>(&proof)
                        })
                })
                .map(|d| (ObjectKind::Contribution, slot, d.validator_index))
                .collect::<Vec<_>>()
        }));
    }
    for t in tasks {
        out.extend(t.await?);
    }
    Ok(out)
}

/// The aggregation duties the VCs took (from dvnode's selection proofs) against the expected
/// ones, in the measured slots: every VC should have taken exactly the expected duties.
fn vc_aggregation_check(
    vcs: &[Arc<SimVc>],
    expected: &[(ObjectKind, u64, ValidatorIndex)],
    end_slot: u64,
) -> serde_json::Value {
    use std::collections::BTreeSet;
    let want = |kind| -> BTreeSet<(u64, u64)> {
        expected
            .iter()
            .filter(|d| d.0 == kind)
            .map(|d| (d.1, d.2))
            .collect()
    };
    let (agg, sync) = (want(ObjectKind::Aggregate), want(ObjectKind::Contribution));
    let per_vc: Vec<serde_json::Value> = vcs
        .iter()
        .map(|vc| {
            let s = vc.stats();
            let took: BTreeSet<(u64, u64)> = s
                .aggregators
                .iter()
                .copied()
                .filter(|(slot, _)| *slot < end_slot)
                .collect();
            let took_sync: BTreeSet<(u64, u64)> = s
                .sync_aggregators
                .iter()
                .filter(|(slot, _, _)| *slot < end_slot)
                .map(|(slot, v, _)| (*slot, *v))
                .collect();
            json!({
                "aggregations_taken": took.len(),
                "aggregations_not_taken": agg.difference(&took).count(),
                "aggregations_unexpected": took.difference(&agg).count(),
                "contributions_taken": took_sync.len(),
                "contributions_not_taken": sync.difference(&took_sync).count(),
                "contributions_unexpected": took_sync.difference(&sync).count(),
            })
        })
        .collect();
    json!({"expected_aggregations": agg.len(), "expected_contributions": sync.len(), "vcs": per_vc})
}

fn load_rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("rows").and_then(|r| r.as_array()).cloned())
        .unwrap_or_default()
}

fn write_summary(args: &Args, rows: &[Row]) -> Result<()> {
    let path = args.out.join("summary.json");
    let mut all: Vec<serde_json::Value> = if args.append {
        load_rows(&path)
            .into_iter()
            .filter(|r| {
                !rows.iter().any(|n| {
                    r.get("validators").and_then(|v| v.as_u64()) == Some(n.validators)
                        && r.get("mode").and_then(|m| m.as_str()) == Some(n.mode.as_str())
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    all.extend(
        rows.iter()
            .map(|r| serde_json::to_value(r).expect("rows serialize")),
    );
    all.sort_by_key(|r| {
        (
            r.get("mode")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string(),
            r.get("validators").and_then(|v| v.as_u64()).unwrap_or(0),
        )
    });
    let largest = all
        .iter()
        .filter(|r| r.get("meets_goal").and_then(|m| m.as_bool()) == Some(true))
        .filter_map(|r| r.get("validators").and_then(|v| v.as_u64()))
        .max();
    let summary = json!({
        "rows": all,
        "largest_validators_meeting_goal": largest,
        "goal": {
            "missed": 0,
            "late": 0,
            "last_partial_to_broadcast_ms_p99_max": benchscale::GOAL_LAST_PARTIAL_TO_BROADCAST_P99_MS,
            "vc_request_to_decided_ms_p99_max": benchscale::GOAL_VC_REQUEST_TO_DECIDED_P99_MS,
            "rss_mib_max": benchscale::GOAL_RSS_MIB,
        },
        "machine": machine(),
        "epochs_per_row": args.epochs,
        "seconds_per_slot": args.seconds_per_slot,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    let bin = match &args.dvnode_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("dvnode"),
    };
    ensure!(
        bin.exists(),
        "dvnode binary not found at {} (build it: cargo build --release -p dvnode)",
        bin.display()
    );
    ensure!(args.epochs >= 1, "--epochs must be at least 1");
    ensure!(
        args.seconds_per_slot >= 2,
        "--seconds-per-slot must be at least 2"
    );
    std::fs::create_dir_all(&args.out)?;
    let mut rows = Vec::new();
    let mut failures = BTreeMap::new();
    for mode in &args.modes {
        for &n in &args.validators {
            if n == 0 {
                bail!("a validator count must be positive");
            }
            eprintln!("bench-scale: {n} validators, {mode}");
            match run_row(&args, &bin, n, mode).await {
                Ok(row) => {
                    println!("{}", benchscale::table(std::slice::from_ref(&row)));
                    rows.push(row);
                    write_summary(&args, &rows)?;
                }
                Err(e) => {
                    eprintln!("  run failed: {e:#}");
                    failures.insert(format!("{n} {mode}"), format!("{e:#}"));
                }
            }
        }
    }
    println!("\n{}", benchscale::table(&rows));
    if !failures.is_empty() {
        bail!("runs failed: {failures:?}");
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
