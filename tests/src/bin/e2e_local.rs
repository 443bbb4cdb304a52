//! `e2e-local`: dvnode with real, unmodified Lodestar clients, as local processes.
//!
//! Starts a `lodestar dev` beacon node (64 interop genesis validators; 0..48 run inside it as
//! keepers), a baseline `lodestar validator` with interop keys 48..56 straight at the BN, and a
//! 4-node dvnode cluster (threshold 3) over interop keys 56..64 with one `lodestar validator`
//! per node talking to its dvnode. Runs `--epochs` epochs, SIGKILLs one dvnode for
//! `--kill-epochs` epochs and restarts it, records what the BN serves only near head, then
//! checks the chain and writes `<out>/summary.json`. Exit code: 0 all checks pass, 1 a check
//! failed, 2 the run itself failed.
//!
//! `--signer remote` runs the cluster in remote-signer mode: each dvnode decrypts its key
//! shares and each VC signs through its dvnode's Web3Signer API (`--externalSigner.url`) with
//! the DV keys. The run then also checks that every aggregation and sync contribution duty the
//! DVs' selection proofs imply (computed here from the interop keys) was performed, and that a
//! voluntary exit asked for by every running node's operator (`dvnode exit`) is accepted: the
//! validator's exit epoch is set on the beacon node.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use dvlab::{
    analyse::{Analysis, GroupStats},
    data::{BeaconNodeMeta, DvNodeMeta, FaultWindow, GroupMeta},
};
use dvlab_tests::{
    analysis::{self, SignatureStats},
    chain::{ChainRecord, Recorder},
    dutylog::{self, DutyLog, Latency},
    lodestar::{self, ChainParams, DevBeaconNode, ValidatorClient, VcKeys},
    ports::PortAllocator,
    record,
    remote::{self, AggregationStats},
    rundir::{self, RunFacts},
    supervisor::{self, Supervisor},
};
use dvnode::clock::unix_now;
use dvnode::duty::DutyKind;
use dvnode::eth::{
    beacon::{Genesis, SpecConfig, StateId, ValidatorId},
    signing::ForkSchedule,
    types::{BlsPubkey, Epoch, Minimal, Slot, ValidatorIndex, FAR_FUTURE_EPOCH},
};
use dvnode::node::SignerMode;
use dvnode::tracker::Stage;
use serde::{Deserialize, Serialize};
use serde_json::json;

type P = Minimal;

const GENESIS_VALIDATORS: u64 = 64;
const KEEPERS: std::ops::Range<u64> = 0..48;
const BASELINE: std::ops::Range<u64> = 48..56;
const DV: std::ops::Range<u64> = 56..64;
const NODES: usize = 4;
const THRESHOLD: usize = 3;

/// dvnode end-to-end test with local Lodestar processes.
#[derive(Parser, Debug, Clone)]
#[command(name = "e2e-local")]
struct Args {
    /// Epochs to run after genesis (the run ends with the last slot of this epoch).
    #[arg(long, default_value_t = 8)]
    epochs: u64,
    /// Seconds per slot.
    #[arg(long, default_value_t = 4)]
    seconds_per_slot: u64,
    /// Seconds from start to genesis (the BN takes ~10-20 s to come up on a busy machine).
    #[arg(long, default_value_t = 30)]
    genesis_delay: u64,
    /// Run only the beacon node, keepers and baseline (no dvnode cluster).
    #[arg(long)]
    no_dv: bool,
    /// Which dvnode (0-based) to SIGKILL.
    #[arg(long, default_value_t = 1)]
    kill_node: usize,
    /// Epoch at whose start the dvnode is killed.
    #[arg(long, default_value_t = 4)]
    kill_at_epoch: u64,
    /// Epochs the dvnode stays down (0: no kill).
    #[arg(long, default_value_t = 2)]
    kill_epochs: u64,
    /// Output directory (wiped first): logs, chain record, summary.
    #[arg(long, default_value = "target/e2e-local")]
    out: PathBuf,
    /// dvnode binary (default: `dvnode` next to this executable).
    #[arg(long)]
    dvnode_bin: Option<PathBuf>,
    /// dvlab binary that analyses the run (`dvlab report`; default: $DVLAB_BIN, then
    /// `target/debug/dvlab` beside this release build, then `dvlab` on PATH).
    #[arg(long)]
    dvlab_bin: Option<PathBuf>,
    /// Lodestar launcher (default: $LODESTAR_BIN, then `lodestar` on PATH).
    #[arg(long)]
    lodestar_bin: Option<PathBuf>,
    /// Only re-run the analysis on `<out>/chain.json` and `<out>/run.json` of a previous run.
    #[arg(long)]
    reanalyze: bool,
    /// Record real traffic of dvnode 0 for the fuzzers' seed corpora: its exchanges with the
    /// beacon node (`DIR/bn.jsonl`) and with its Lodestar VC (`DIR/vc.jsonl`), through
    /// recording proxies (see `dvlab_tests::record`).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Who signs for the DVs: `middleware` (each VC holds its node's key shares) or `remote`
    /// (each VC signs through its dvnode's Web3Signer API with the DV keys; aggregation, sync
    /// contributions and a voluntary exit are checked too).
    #[arg(long, value_enum, default_value_t = SignerMode::Middleware)]
    signer: SignerMode,
    /// Remote signer: epoch at whose second slot every running dvnode's operator asks for the
    /// exit of the first DV (default: the last epoch but one, so the DV exits after the run).
    #[arg(long)]
    exit_at_epoch: Option<u64>,
}

/// The voluntary exit of a remote-signer run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ExitRecord {
    /// The exiting DV.
    validator: ValidatorIndex,
    /// The exit's epoch.
    epoch: Epoch,
    /// Nodes whose `dvnode exit` succeeded.
    requested_by: Vec<usize>,
    /// `dvnode exit` failures.
    errors: Vec<String>,
    /// The validator's exit epoch on the beacon node at the end (none: not exiting).
    exit_epoch: Option<Epoch>,
}

/// Facts about a run that the analysis needs, saved next to the chain record.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RunInfo {
    epochs: u64,
    seconds_per_slot: u64,
    dv_enabled: bool,
    genesis: Genesis,
    spec: SpecConfig,
    keepers: Vec<ValidatorIndex>,
    baseline: Vec<ValidatorIndex>,
    dv: Vec<ValidatorIndex>,
    dv_pubkeys: Vec<BlsPubkey>,
    /// Killed dvnode and the epochs it was down (`[from, to)`), if a kill happened.
    kill: Option<(usize, Epoch, Epoch)>,
    /// Epochs whose committees were cross-checked against attester duties.
    #[serde(default)]
    committee_checked_epochs: Vec<Epoch>,
    /// Committee cross-check failures (committees endpoint vs attester duties).
    committee_check_errors: Vec<String>,
    /// Epochs whose committees could not be recorded, with the error.
    record_errors: Vec<String>,
    /// Peak RSS (KiB) per dvnode process instance, `dvnode{i}#{n}`.
    dvnode_peak_rss_kib: BTreeMap<String, u64>,
    /// Head slot and finalized epoch at the end.
    final_head_slot: Slot,
    final_finalized_epoch: Epoch,
    /// Remote-signer mode.
    #[serde(default)]
    remote: bool,
    /// The voluntary exit asked for (remote-signer mode).
    #[serde(default)]
    exit: Option<ExitRecord>,
}

fn now_secs() -> u64 {
    unix_now().as_secs()
}

fn now_f64() -> f64 {
    unix_now().as_secs_f64()
}

struct DvNode {
    dir: PathBuf,
    api_port: u16,
    p2p_port: u16,
    metrics_port: u16,
    signer: SignerMode,
}

impl DvNode {
    fn duty_log(&self) -> PathBuf {
        self.dir.join("duty-log.jsonl")
    }

    fn command(&self, bin: &Path, bn_url: &str) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--node-dir")
            .arg(&self.dir)
            .arg("--beacon-node-url")
            .arg(bn_url)
            .arg("--validator-api-addr")
            .arg(format!("127.0.0.1:{}", self.api_port))
            .arg("--p2p-listen")
            .arg(format!("/ip4/127.0.0.1/tcp/{}", self.p2p_port))
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{}", self.metrics_port))
            .arg("--duty-log")
            .arg(self.duty_log())
            .arg("--signer")
            .arg(match self.signer {
                SignerMode::Middleware => "middleware",
                SignerMode::Remote => "remote",
            })
            .env("DVNODE_LOG", "info");
        cmd
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }
}

/// Runs `dvnode exit` for `node` (its operator's part of the exit of `validator` at `epoch`).
async fn request_exit(
    bin: &Path,
    node: &DvNode,
    validator: &BlsPubkey,
    epoch: Epoch,
    log: &Path,
) -> Result<()> {
    let output = tokio::process::Command::new(bin)
        .arg("exit")
        .arg("--node-dir")
        .arg(&node.dir)
        .arg("--validator")
        .arg(validator.to_string())
        .arg("--epoch")
        .arg(epoch.to_string())
        .arg("--validator-api-url")
        .arg(node.api_url())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), output)
        .await
        .context("dvnode exit did not finish within 30 s")?
        .context("running dvnode exit")?;
    fs::write(log, [&output.stdout[..], &output.stderr[..]].concat())?;
    ensure!(
        output.status.success(),
        "dvnode exit failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn default_dvnode_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    Ok(exe.with_file_name("dvnode"))
}

/// Runs `dvnode create-cluster` and returns the DV pubkeys from the lock.
fn create_cluster(
    bin: &Path,
    out: &Path,
    log: &Path,
    spec: &SpecConfig,
    genesis: &Genesis,
    p2p_ports: &[u16],
) -> Result<Vec<BlsPubkey>> {
    let fork_version = spec
        .string("GENESIS_FORK_VERSION")
        .map_err(|e| anyhow::anyhow!("GENESIS_FORK_VERSION: {e}"))?;
    let addrs: Vec<String> = p2p_ports
        .iter()
        .map(|p| format!("/ip4/127.0.0.1/tcp/{p}"))
        .collect();
    let output = Command::new(bin)
        .arg("create-cluster")
        .args(["--nodes", &NODES.to_string()])
        .args(["--threshold", &THRESHOLD.to_string()])
        .arg("--interop-indices")
        .arg(format!("{}..{}", DV.start, DV.end))
        .arg("--insecure-keys")
        .arg("--fork-version")
        .arg(&fork_version)
        .arg("--genesis-validators-root")
        .arg(genesis.genesis_validators_root.to_string())
        .arg("--p2p-addresses")
        .arg(addrs.join(","))
        .arg("--out")
        .arg(out)
        .output()
        .with_context(|| format!("running {} create-cluster", bin.display()))?;
    fs::write(log, [&output.stdout[..], &output.stderr[..]].concat())?;
    if !output.status.success() {
        bail!(
            "dvnode create-cluster failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let cluster = dvnode::cluster::lock::ClusterLock::load(&out.join("cluster-lock.json"))?;
    Ok(cluster
        .validators
        .iter()
        .map(|v| BlsPubkey(v.pubkey.to_bytes()))
        .collect())
}

/// Starts everything, runs the chain, records it. Returns the record and run facts.
async fn run(args: &Args, sup: &Supervisor) -> Result<(ChainRecord<P>, RunInfo)> {
    let out = &args.out;
    let lodestar = lodestar::lodestar_bin(args.lodestar_bin.clone())?;
    let dvnode_bin = match &args.dvnode_bin {
        Some(b) => b.clone(),
        None => default_dvnode_bin()?,
    };
    if !args.no_dv {
        ensure!(
            dvnode_bin.exists(),
            "dvnode binary {} not found (build it or pass --dvnode-bin)",
            dvnode_bin.display()
        );
        ensure!(args.kill_node < NODES, "--kill-node must be below {NODES}");
    }
    let remote = !args.no_dv && args.signer == SignerMode::Remote;
    let params = ChainParams {
        preset: "minimal".into(),
        seconds_per_slot: args.seconds_per_slot,
        altair_fork_epoch: 0,
        // A remote-signer run exits a DV within minutes of genesis.
        shard_committee_period: remote.then_some(0),
    };
    let mut ports = PortAllocator::new();

    // Beacon node with keepers.
    let bn = DevBeaconNode {
        data_dir: out.join("bn"),
        genesis_validators: GENESIS_VALIDATORS,
        start_validators: KEEPERS,
        genesis_time: now_secs() + args.genesis_delay,
        rest_port: ports.allocate()?,
        p2p_port: ports.allocate()?,
    };
    fs::create_dir_all(&bn.data_dir)?;
    sup.spawn("beacon", bn.command(&lodestar, &params))?;
    let bn_url = bn.url();
    let rec = Recorder::new(&bn_url)?;
    let genesis = lodestar::wait_for_genesis(rec.client(), Duration::from_secs(90)).await?;
    ensure!(
        genesis.genesis_time == bn.genesis_time,
        "beacon node reports genesis time {} but was started with {}",
        genesis.genesis_time,
        bn.genesis_time
    );
    let spec = rec.client().spec().await?;
    let schedule = ForkSchedule::from_spec(&spec, &genesis)?;
    schedule.ensure_preset::<P>()?;
    let sync_period = spec
        .u64("EPOCHS_PER_SYNC_COMMITTEE_PERIOD")
        .map_err(|e| anyhow::anyhow!("EPOCHS_PER_SYNC_COMMITTEE_PERIOD: {e}"))?;
    println!(
        "beacon node up at {bn_url}: genesis {} (in {} s), genesis validators root {}",
        genesis.genesis_time,
        genesis.genesis_time.saturating_sub(now_secs()),
        genesis.genesis_validators_root
    );

    // DV cluster: created now that the genesis validators root is known.
    let mut dvnodes = Vec::new();
    let mut dv_pubkeys = Vec::new();
    let mut node_bn_urls = vec![bn_url.clone(); NODES];
    if !args.no_dv {
        let cluster_dir = out.join("cluster");
        let nodes: Vec<DvNode> = (0..NODES)
            .map(|i| -> Result<DvNode> {
                Ok(DvNode {
                    dir: cluster_dir.join(format!("node{i}")),
                    api_port: ports.allocate()?,
                    p2p_port: ports.allocate()?,
                    metrics_port: ports.allocate()?,
                    signer: args.signer,
                })
            })
            .collect::<Result<_>>()?;
        let p2p: Vec<u16> = nodes.iter().map(|n| n.p2p_port).collect();
        dv_pubkeys = create_cluster(
            &dvnode_bin,
            &cluster_dir,
            &sup.log_path("create-cluster"),
            &spec,
            &genesis,
            &p2p,
        )?;
        // dvnode 0 talks to the beacon node (and its VC to it) through recording proxies.
        let mut recording_vc = None;
        if let Some(dir) = &args.record {
            let bn_proxy = record::start(&bn_url, &dir.join("bn.jsonl")).await?;
            let api = format!("http://127.0.0.1:{}", nodes[0].api_port);
            recording_vc = Some(record::start(&api, &dir.join("vc.jsonl")).await?.url);
            node_bn_urls[0] = bn_proxy.url;
            println!("recording dvnode0's traffic to {}", dir.display());
        }
        for (i, node) in nodes.iter().enumerate() {
            sup.spawn(
                &format!("dvnode{i}"),
                node.command(&dvnode_bin, &node_bn_urls[i]),
            )?;
        }
        for (i, node) in nodes.iter().enumerate() {
            // The VC needs a live beacon API at start: wait for the dvnode's.
            let api = format!("http://127.0.0.1:{}", node.api_port);
            lodestar::wait_for_genesis(
                &dvnode::eth::beacon::BeaconClient::new(&api)?,
                Duration::from_secs(60),
            )
            .await
            .with_context(|| format!("dvnode{i} validator API"))?;
            let vc_dir = out.join(format!("vc{i}"));
            let keys = if remote {
                // The VC signs through its dvnode with the DV keys.
                VcKeys::Remote {
                    url: node.api_url(),
                    pubkeys: dv_pubkeys.iter().map(|k| k.to_string()).collect(),
                }
            } else {
                let (n, pw_file) = lodestar::reencrypt_keystores(
                    &node.dir.join("validator_keys"),
                    &vc_dir.join("keystores"),
                    "dvlab-e2e-local",
                )?;
                ensure!(n == dv_pubkeys.len(), "node {i} has {n} share keystores");
                VcKeys::Keystores {
                    dir: vc_dir.join("keystores"),
                    password_file: pw_file,
                }
            };
            let vc = ValidatorClient {
                data_dir: vc_dir.join("data"),
                beacon_url: match (i, &recording_vc) {
                    (0, Some(url)) => url.clone(),
                    _ => node.api_url(),
                },
                keys,
            };
            sup.spawn(&format!("vc{i}"), vc.command(&lodestar, &params))?;
        }
        dvnodes = nodes;
    }

    // Baseline: a plain Lodestar VC straight at the beacon node.
    let baseline_vc = ValidatorClient {
        data_dir: out.join("vc-baseline"),
        beacon_url: bn_url.clone(),
        keys: VcKeys::Interop(BASELINE),
    };
    sup.spawn("vc-baseline", baseline_vc.command(&lodestar, &params))?;

    // Registry and groups.
    let pubkeys = rec.pubkeys().await?;
    ensure!(
        pubkeys.len() as u64 == GENESIS_VALIDATORS,
        "registry has {} validators, expected {GENESIS_VALIDATORS}",
        pubkeys.len()
    );
    let dv: Vec<ValidatorIndex> = if args.no_dv {
        DV.collect()
    } else {
        rec.indices_of(&dv_pubkeys).await?
    };
    let all: Vec<ValidatorIndex> = (0..GENESIS_VALIDATORS).collect();
    let mut chain = ChainRecord::<P>::new(sync_period, pubkeys);
    let mut info = RunInfo {
        committee_checked_epochs: Vec::new(),
        epochs: args.epochs,
        seconds_per_slot: args.seconds_per_slot,
        dv_enabled: !args.no_dv,
        genesis,
        spec: spec.clone(),
        keepers: KEEPERS.collect(),
        baseline: BASELINE.collect(),
        dv,
        dv_pubkeys,
        kill: None,
        committee_check_errors: Vec::new(),
        record_errors: Vec::new(),
        dvnode_peak_rss_kib: BTreeMap::new(),
        final_head_slot: 0,
        final_finalized_epoch: 0,
        remote,
        exit: None,
    };
    let exit_epoch = remote.then(|| {
        args.exit_at_epoch
            .unwrap_or_else(|| args.epochs.saturating_sub(1))
    });

    // Run: record near-head data every half slot; crash and restart one dvnode.
    let slots_per_epoch = schedule.slots_per_epoch();
    let sps = args.seconds_per_slot as f64;
    let epoch_start = |e: Epoch| genesis.genesis_time as f64 + (e * slots_per_epoch) as f64 * sps;
    let end_time = epoch_start(args.epochs + 1) + 1.0;
    let kill_window = (!args.no_dv && args.kill_epochs > 0)
        .then(|| (args.kill_at_epoch, args.kill_at_epoch + args.kill_epochs));
    let mut killed = false;
    let mut restarted = false;
    let mut instances: BTreeMap<usize, u32> = BTreeMap::new();
    let mut last_epoch_printed = None;
    let mut checked_epochs = std::collections::BTreeSet::new();
    loop {
        let now = now_f64();
        if now >= end_time {
            break;
        }
        sup.check_alive()?;
        let wall_slot = if now < genesis.genesis_time as f64 {
            0
        } else {
            ((now - genesis.genesis_time as f64) / sps) as u64
        };
        let epoch = wall_slot / slots_per_epoch;

        if let Some((from, to)) = kill_window {
            let victim = format!("dvnode{}", args.kill_node);
            if !killed && now >= epoch_start(from) {
                if let Some(pid) = sup.pid(&victim) {
                    let n = instances.entry(args.kill_node).or_insert(0);
                    if let Ok(kib) = supervisor::peak_rss_kib(pid) {
                        info.dvnode_peak_rss_kib
                            .insert(format!("{victim}#{n}"), kib);
                    }
                    *n += 1;
                }
                sup.kill(&victim)?;
                killed = true;
                println!("epoch {epoch}: SIGKILLed {victim}");
            }
            if killed && !restarted && now >= epoch_start(to) {
                let node = &dvnodes[args.kill_node];
                sup.spawn(
                    &victim,
                    node.command(&dvnode_bin, &node_bn_urls[args.kill_node]),
                )?;
                restarted = true;
                info.kill = Some((args.kill_node, from, to));
                println!("epoch {epoch}: restarted {victim} with the same data dir");
            }
        }

        // Remote signer: every running node's operator asks for the exit of the first DV.
        if let (Some(e), None) = (exit_epoch, &info.exit) {
            if now >= epoch_start(e) + sps {
                let mut record = ExitRecord {
                    validator: info.dv[0],
                    epoch: e,
                    ..Default::default()
                };
                for (i, node) in dvnodes.iter().enumerate() {
                    if sup.pid(&format!("dvnode{i}")).is_none() {
                        continue;
                    }
                    let log = sup.log_path(&format!("exit-dvnode{i}"));
                    match request_exit(&dvnode_bin, node, &info.dv_pubkeys[0], e, &log).await {
                        Ok(()) => record.requested_by.push(i),
                        Err(err) => record.errors.push(format!("dvnode{i}: {err:#}")),
                    }
                }
                println!(
                    "epoch {epoch}: exit of validator {} at epoch {e} asked for by dvnodes {:?}{}",
                    record.validator,
                    record.requested_by,
                    if record.errors.is_empty() {
                        String::new()
                    } else {
                        format!(" (failed: {:?})", record.errors)
                    }
                );
                info.exit = Some(record);
            }
        }

        for e in [epoch, epoch + 1] {
            if let std::collections::btree_map::Entry::Vacant(slot) = chain.committees.entry(e) {
                match rec.committees(e, slots_per_epoch).await {
                    Ok(c) => {
                        slot.insert(c);
                    }
                    Err(err) if e == epoch => {
                        info.record_errors
                            .push(format!("committees of epoch {e}: {err:#}"));
                    }
                    Err(_) => {}
                }
            }
            let period = chain.period_of(e);
            if let std::collections::btree_map::Entry::Vacant(slot) =
                chain.sync_committees.entry(period)
            {
                if let Ok(sc) = rec.sync_committee(e).await {
                    slot.insert(sc);
                }
            }
        }
        // Cross-check the current epoch's committees against attester duties, once.
        if !checked_epochs.contains(&epoch) {
            if let Some(c) = chain.committees.get(&epoch) {
                match rec.check_committees_against_duties(epoch, c, &all).await {
                    Ok(mismatches) => {
                        info.committee_check_errors.extend(
                            mismatches
                                .into_iter()
                                .map(|m| format!("epoch {epoch}: {m}")),
                        );
                        checked_epochs.insert(epoch);
                    }
                    Err(err) => info
                        .record_errors
                        .push(format!("attester duties of epoch {epoch}: {err:#}")),
                }
            }
        }
        // Proposer duties of the current epoch; the last answer in the epoch wins.
        match rec.proposers::<P>(epoch).await {
            Ok(ps) => {
                for (slot, v) in ps {
                    chain.proposers.insert(slot, v);
                }
            }
            Err(err) => info
                .record_errors
                .push(format!("proposers of epoch {epoch}: {err:#}")),
        }
        if last_epoch_printed != Some(epoch) && now >= genesis.genesis_time as f64 {
            if let Ok((head, fin)) = rec.progress().await {
                println!("epoch {epoch}: head slot {head}, finalized epoch {fin}");
            }
            last_epoch_printed = Some(epoch);
        }
        tokio::time::sleep(Duration::from_secs_f64(sps / 2.0)).await;
    }
    info.committee_checked_epochs = checked_epochs.into_iter().collect();
    if killed && !restarted {
        info.kill = Some((args.kill_node, args.kill_at_epoch, args.epochs + 1));
    }

    // Peak RSS of the dvnodes still running.
    for (name, pid) in sup.running("dvnode") {
        let i: usize = name.trim_start_matches("dvnode").parse().unwrap_or(0);
        let n = instances.get(&i).copied().unwrap_or(0);
        if let Ok(kib) = supervisor::peak_rss_kib(pid) {
            info.dvnode_peak_rss_kib.insert(format!("{name}#{n}"), kib);
        }
    }
    // Final metrics and health of each dvnode, saved with the logs.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    for (i, node) in dvnodes.iter().enumerate() {
        for path in ["metrics", "health"] {
            let url = format!("http://127.0.0.1:{}/{path}", node.metrics_port);
            let text = match http.get(&url).send().await {
                Ok(r) => format!(
                    "HTTP {}\n{}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(e) => format!("error: {e}"),
            };
            fs::write(out.join("logs").join(format!("dvnode{i}-{path}.txt")), text)?;
        }
    }
    let (head, fin) = rec.progress().await?;
    info.final_head_slot = head;
    info.final_finalized_epoch = fin;
    if let Some(exit) = &mut info.exit {
        let v = rec
            .client()
            .state_validators(StateId::Head, &[ValidatorId::Index(exit.validator)])
            .await?;
        exit.exit_epoch = v
            .first()
            .map(|v| v.validator.exit_epoch)
            .filter(|e| *e != FAR_FUTURE_EPOCH);
    }

    // Every canonical block of the run.
    let last_slot = (args.epochs + 1) * slots_per_epoch - 1;
    for slot in 1..=last_slot {
        if let Some(b) = rec.block::<P>(slot).await? {
            chain.blocks.insert(slot, b);
        }
    }
    println!(
        "recorded {} blocks over {} slots, committees of {} epochs, {} proposer slots",
        chain.blocks.len(),
        last_slot,
        chain.committees.len(),
        chain.proposers.len()
    );
    Ok((chain, info))
}

/// One check of the verdict.
#[derive(Clone, Debug, Serialize)]
struct Check {
    name: String,
    value: String,
    expected: String,
    pass: bool,
}

fn check(name: &str, value: String, expected: &str, pass: bool) -> Check {
    Check {
        name: name.into(),
        value,
        expected: expected.into(),
        pass,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// `rate` as a percentage, `-` without duties.
fn pct_or_dash(rate: Option<f64>) -> String {
    rate.map(pct).unwrap_or_else(|| "-".into())
}

/// The first epoch whose duties are analysed (the chain settles in epochs 0 and 1) and the last
/// one (its attestations' inclusion window is on the record: the run ends one epoch later).
/// `done/of` of a report's figures, `–` when it has none.
fn fraction((done, of): (Option<u64>, Option<u64>)) -> String {
    match (done, of) {
        (Some(d), Some(o)) => format!("{d}/{o}"),
        _ => "–".into(),
    }
}

fn analysed_epochs(epochs: u64) -> std::ops::RangeInclusive<Epoch> {
    2..=epochs.saturating_sub(1).max(2)
}

/// Writes the run as dvlab's run directory into `out` and has dvlab analyse it: the one
/// analyser of attestation inclusion, proposals, sync participation, the kill window and the
/// slashing audit (`out/report.json`, `out/report.html`).
fn dvlab_analysis(
    out: &Path,
    chain: &ChainRecord<P>,
    info: &RunInfo,
    duty_logs: &[DutyLog],
    dvlab_bin: &Path,
) -> Result<Analysis> {
    let spe = chain.slots_per_epoch;
    let epochs = analysed_epochs(info.epochs);
    let slot_time =
        |slot: Slot| info.genesis.genesis_time as f64 + (slot * info.seconds_per_slot) as f64;
    let group = |name: &str, v: &[ValidatorIndex], distributed: bool| GroupMeta {
        name: name.into(),
        first: v.first().copied().unwrap_or(0),
        count: v.len() as u64,
        distributed,
        indices: Vec::new(),
    };
    let mut groups = vec![
        group("keepers", &info.keepers, false),
        group("baseline", &info.baseline, false),
    ];
    if info.dv_enabled {
        groups.push(group("dv", &info.dv, true));
    }
    let dvnodes = duty_logs
        .iter()
        .enumerate()
        .map(|(i, log)| {
            let meta = DvNodeMeta {
                name: format!("dvnode{i}"),
                cluster: "dv".into(),
                index: i as u64,
                metrics_url: None,
            };
            (meta, log)
        })
        .collect();
    // The kill as a fault window: dvlab measures the DVs' inclusion during it.
    let faults = info
        .kill
        .iter()
        .map(|&(node, from, to)| {
            let restarted = to <= info.epochs;
            FaultWindow {
                fault: 0,
                kind: "crash".into(),
                targets: format!("dvnode{node}"),
                detail: format!("dvnode{node} SIGKILLed, restarted at epoch {to}"),
                start_time: slot_time(from * spe),
                start_slot: from * spe,
                end_time: restarted.then(|| slot_time(to * spe)),
                end_slot: restarted.then_some(to * spe),
                error: None,
            }
        })
        .collect();
    let end_slot = (info.epochs + 1) * spe;
    let facts = RunFacts {
        run: "e2e-local".into(),
        genesis_time: info.genesis.genesis_time,
        seconds_per_slot: info.seconds_per_slot,
        window: (epochs.start() * spe, (epochs.end() + 1) * spe - 1),
        groups,
        beacon_node: BeaconNodeMeta {
            name: "beacon".into(),
            api_url: String::new(),
        },
        dvnodes,
        faults,
        heads: vec![(
            slot_time(end_slot) as u64,
            info.final_head_slot,
            info.final_finalized_epoch,
        )],
    };
    rundir::write(out, chain, &facts)?;
    rundir::analyse(dvlab_bin, out)
}

/// Analyses a run and writes the summary; returns whether every check passed.
fn analyse(out: &Path, chain: &ChainRecord<P>, info: &RunInfo, dvlab_bin: &Path) -> Result<bool> {
    let schedule = ForkSchedule::from_spec(&info.spec, &info.genesis)?;
    let distances = analysis::inclusion_distances(chain);
    let focus = if info.dv_enabled {
        &info.dv
    } else {
        &info.baseline
    };
    let sigs: SignatureStats = analysis::verify_signatures(chain, &schedule, focus);

    // Duty logs of the dvnodes (copied next to the process logs by the caller).
    let duty_logs: Vec<DutyLog> = if info.dv_enabled {
        (0..NODES)
            .map(|i| DutyLog::read(&out.join("logs").join(format!("dvnode{i}-duty.jsonl"))))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };

    let a = dvlab_analysis(out, chain, info, &duty_logs, dvlab_bin)?;
    let no_group = GroupStats::default();
    let stats = |name: &str| a.groups.get(name).unwrap_or(&no_group);
    let (keepers, baseline, dv) = (stats("keepers"), stats("baseline"), stats("dv"));
    let onchain_slashings = a.slashing_audit.onchain_slashings.len();

    let mut checks = Vec::new();
    checks.push(check(
        "committees endpoint agrees with attester duties",
        format!(
            "{} mismatches over {} epochs",
            info.committee_check_errors.len(),
            info.committee_checked_epochs.len()
        ),
        "0, every epoch checked",
        info.committee_check_errors.is_empty()
            && info.committee_checked_epochs.len() as u64 > info.epochs,
    ));
    let b = baseline;
    checks.push(check(
        "baseline attestation inclusion (sanity)",
        format!(
            "{} ({}/{})",
            pct_or_dash(b.inclusion_rate),
            b.attestations_included,
            b.attestation_duties
        ),
        ">= 95%",
        b.inclusion_rate.is_some_and(|r| r >= 0.95),
    ));
    let all_sig_failures = sigs.group_failures.len() + sigs.other_failures.len();
    checks.push(check(
        "every on-chain signature verifies",
        format!(
            "{} failures over {} blocks, {} attestations, {} sync aggregates",
            all_sig_failures,
            sigs.group_blocks + sigs.other_blocks,
            sigs.group_attestations + sigs.other_attestations,
            sigs.group_sync_aggregates + sigs.other_sync_aggregates
        ),
        "0 failures",
        all_sig_failures == 0 && sigs.group_attestations > 0,
    ));
    checks.push(check(
        "slashings in blocks",
        onchain_slashings.to_string(),
        "0",
        onchain_slashings == 0,
    ));
    checks.push(check(
        "no slashable votes among those on chain (dvlab audit)",
        format!(
            "{} violations over {} signed messages",
            a.slashing_audit.violations.len(),
            a.slashing_audit.messages_checked
        ),
        "0",
        a.slashing_audit.violations.is_empty() && a.slashing_audit.messages_checked > 0,
    ));

    let mut proposal_misses = Vec::new();
    if info.dv_enabled {
        let d = dv;
        checks.push(check(
            "DV attestation inclusion (epochs 2..)",
            format!(
                "{} ({}/{})",
                pct_or_dash(d.inclusion_rate),
                d.attestations_included,
                d.attestation_duties
            ),
            ">= 95%",
            d.inclusion_rate.is_some_and(|r| r >= 0.95),
        ));
        let (dm, bm) = (d.inclusion_distance.mean, b.inclusion_distance.mean);
        checks.push(check(
            "DV mean inclusion distance",
            format!(
                "{:.3} (baseline {:.3})",
                dm.unwrap_or(f64::NAN),
                bm.unwrap_or(f64::NAN)
            ),
            "<= baseline + 0.1",
            matches!((dm, bm), (Some(dm), Some(bm)) if dm <= bm + 0.1),
        ));
        // Proposals: a miss fails unless it lies in the kill window and the duty logs name
        // its reason. dvlab counts them; the slots, for the reasons, are the DV proposer duties
        // of the analysed window without a block by that proposer.
        let spe = chain.slots_per_epoch;
        let epochs = analysed_epochs(info.epochs);
        let window = epochs.start() * spe..(epochs.end() + 1) * spe;
        let missed: Vec<(Slot, ValidatorIndex)> = chain
            .proposers
            .range(window)
            .filter(|(slot, v)| {
                info.dv.contains(v)
                    && chain
                        .blocks
                        .get(slot)
                        .is_none_or(|b| b.message.proposer_index != **v)
            })
            .map(|(s, v)| (*s, *v))
            .collect();
        let mut unexplained = 0;
        for &(slot, v) in &missed {
            let reason = dutylog::miss_reason(&duty_logs, slot, DutyKind::Proposer);
            let epoch = slot / spe;
            let in_window = info
                .kill
                .is_some_and(|(_, from, to)| (from..to).contains(&epoch));
            let explained = reason.split("; ").any(|r| !r.ends_with("no record"));
            if !(in_window && explained) {
                unexplained += 1;
            }
            proposal_misses.push(json!({"slot": slot, "validator": v, "in_kill_window": in_window, "reason": reason}));
        }
        let dvlab_missed = d.proposals_expected.saturating_sub(d.proposals_included);
        checks.push(check(
            "DV proposer slots with a block",
            format!(
                "{}/{} ({} missed)",
                d.proposals_included, d.proposals_expected, dvlab_missed
            ),
            "all (kill-window misses with a logged reason allowed)",
            unexplained == 0 && dvlab_missed == missed.len() as u64,
        ));
        let sync_ref = baseline.sync_participation.or(keepers.sync_participation);
        let (value, pass) = match (dv.sync_participation, sync_ref) {
            (Some(r), Some(base)) => (
                format!("{} vs baseline {}", pct(r), pct(base)),
                r >= 0.9 * base,
            ),
            (None, _) => ("DV not in the sync committee".into(), true),
            (Some(r), None) => (format!("{} (no reference)", pct(r)), r >= 0.9),
        };
        checks.push(check(
            "DV sync committee participation",
            value,
            ">= 90% of baseline",
            pass,
        ));
        checks.push(check(
            "DV signatures on chain verify against DV pubkeys",
            format!(
                "{} failures; {} blocks, {} attestations, {} sync aggregates by DV keys",
                sigs.group_failures.len(),
                sigs.group_blocks,
                sigs.group_attestations,
                sigs.group_sync_aggregates
            ),
            "0 failures, > 0 attestations",
            sigs.group_failures.is_empty() && sigs.group_attestations > 0,
        ));
        if let Some((node, from, to)) = info.kill {
            let w = a
                .faults
                .first()
                .and_then(|f| f.groups.get("dv"))
                .cloned()
                .unwrap_or_default();
            checks.push(check(
                &format!("DV attests while dvnode{node} is down (epochs {from}..{to})"),
                format!(
                    "{} ({}/{})",
                    pct_or_dash(w.tally.inclusion_rate),
                    w.tally.included,
                    w.tally.duties
                ),
                ">= 90%",
                w.tally.inclusion_rate.is_some_and(|r| r >= 0.9),
            ));
        }
    }

    // Remote signer: the aggregation duties the selection proofs imply, performed; the exit.
    let mut remote_summary = serde_json::Value::Null;
    if info.dv_enabled && info.remote {
        let epochs = analysed_epochs(info.epochs);
        let slots =
            epochs.start() * chain.slots_per_epoch..=(epochs.end() + 1) * chain.slots_per_epoch - 1;
        let expected = remote::expected_aggregations(chain, &schedule, &info.dv, epochs.clone());
        let aggs =
            AggregationStats::of(&expected, &duty_logs, DutyKind::Aggregation, slots.clone());
        // dvlab's report carries the same figures (from the duty logs): they must equal the
        // recomputation from the interop keys.
        let dv = a.groups.get("dv").cloned().unwrap_or_default();
        let report_aggs = (
            dv.aggregation.aggregations_submitted,
            dv.aggregation.aggregation_duties,
        );
        checks.push(check(
            &format!("DV aggregation duties performed (epochs {}..={})", epochs.start(), epochs.end()),
            format!(
                "{}/{} performed; taken vs implied by the selection proofs: {} unexpected, {} not taken; dvlab report {}",
                aggs.performed,
                aggs.expected,
                aggs.unexpected.len(),
                aggs.not_taken.len(),
                fraction(report_aggs)
            ),
            "all, exactly the implied duties; the report says the same",
            aggs.complete() && report_aggs == (Some(aggs.performed as u64), Some(aggs.expected as u64)),
        ));
        let expected = remote::expected_contributions(chain, &schedule, &info.dv, slots.clone());
        let contribs = AggregationStats::of(
            &expected,
            &duty_logs,
            DutyKind::SyncContribution,
            slots.clone(),
        );
        let report_contribs = (
            dv.aggregation.sync_contributions_submitted,
            dv.aggregation.sync_contribution_duties,
        );
        checks.push(check(
            &format!(
                "DV sync contributions submitted (epochs {}..={})",
                epochs.start(),
                epochs.end()
            ),
            format!(
                "{}/{} submitted; taken vs implied: {} unexpected, {} not taken; dvlab report {}",
                contribs.performed,
                contribs.expected,
                contribs.unexpected.len(),
                contribs.not_taken.len(),
                fraction(report_contribs)
            ),
            "all, exactly the implied duties; the report says the same",
            contribs.complete()
                && report_contribs
                    == (
                        Some(contribs.performed as u64),
                        Some(contribs.expected as u64),
                    ),
        ));
        let exit = info.exit.clone().unwrap_or_default();
        checks.push(check(
            "voluntary exit of a DV accepted by the beacon node",
            match exit.exit_epoch {
                Some(e) => format!(
                    "validator {} exits at epoch {e} (asked by dvnodes {:?})",
                    exit.validator, exit.requested_by
                ),
                None => format!(
                    "validator {} has no exit epoch (asked by dvnodes {:?}; errors {:?})",
                    exit.validator, exit.requested_by, exit.errors
                ),
            },
            "exit epoch set",
            info.exit.is_some() && exit.exit_epoch.is_some(),
        ));
        for m in aggs.missed.iter().chain(&contribs.missed).take(10) {
            println!("  missed aggregation duty: {m}");
        }
        remote_summary = json!({
            "aggregations": aggs,
            "sync_contributions": contribs,
            "exit": info.exit,
        });
    }

    // The trackers against the chain: attestations of the analysed epochs, proposals and sync
    // messages of epochs 2.. (their blocks are on the record).
    let agreement = analysis::tracker_agreement(
        chain,
        &info.dv,
        analysed_epochs(info.epochs),
        &distances,
        &duty_logs,
    );
    if info.dv_enabled {
        checks.push(check(
            "dvnode trackers agree with the chain",
            format!(
                "{}/{} lines agree; {} disagree, {} inclusions untracked, {} delay mismatches, {} unknown",
                agreement.agreeing,
                agreement.compared,
                agreement.disagreements.len(),
                agreement.untracked_inclusions.len(),
                agreement.delay_mismatches.len(),
                agreement.unknown
            ),
            "all agree; every inclusion tracked",
            agreement.agrees(),
        ));
    }

    let (att, prop) = (DutyKind::Attester, DutyKind::Proposer);
    let latency_vc: Latency = dutylog::latency(
        &duty_logs,
        &[att],
        &[Stage::VcRequest],
        Stage::Decided,
        true,
    );
    let latency_vc_block: Latency = dutylog::latency(
        &duty_logs,
        &[prop],
        &[Stage::VcRequest],
        Stage::Decided,
        true,
    );
    let latency_bcast: Latency = dutylog::latency(
        &duty_logs,
        &[att, prop, DutyKind::SyncMessage],
        &[Stage::LastPartial],
        Stage::Broadcast,
        false,
    );
    let node_added: Latency = dutylog::node_added(&duty_logs, &[att, prop]);
    let all_pass = checks.iter().all(|c| c.pass);

    // Table.
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>8} {:>9} {:>5} {:>10} {:>10}",
        "group", "att.duty", "included", "rate", "mean.dist", "p99", "proposals", "sync.rate"
    );
    for (name, g) in [("keepers", keepers), ("baseline", baseline), ("dv", dv)] {
        if name == "dv" && !info.dv_enabled {
            continue;
        }
        println!(
            "{:<10} {:>9} {:>9} {:>8} {:>9.3} {:>5} {:>10} {:>10}",
            name,
            g.attestation_duties,
            g.attestations_included,
            pct_or_dash(g.inclusion_rate),
            g.inclusion_distance.mean.unwrap_or(f64::NAN),
            g.inclusion_distance
                .p99
                .map_or("-".into(), |p| format!("{p:.2}")),
            format!("{}/{}", g.proposals_included, g.proposals_expected),
            pct_or_dash(g.sync_participation),
        );
    }
    if info.dv_enabled {
        for (what, l) in [
            ("attester", &latency_vc),
            ("proposer", &latency_vc_block),
            ("signed objects", &latency_bcast),
            ("attester+proposer total", &node_added),
        ] {
            println!(
                "node-added latency, {what}: {} p50 {:?} ms p99 {:?} ms ({} samples)",
                l.span, l.p50_ms, l.p99_ms, l.samples
            );
        }
        println!(
            "tracker outcomes per kind (all nodes): {:?}",
            dutylog::outcomes(&duty_logs)
        );
        println!("dvnode peak RSS (KiB): {:?}", info.dvnode_peak_rss_kib);
    }
    println!();
    println!("{:<58} {:<6} {:<45} expected", "check", "result", "value");
    for c in &checks {
        println!(
            "{:<58} {:<6} {:<45} {}",
            c.name,
            if c.pass { "PASS" } else { "FAIL" },
            c.value,
            c.expected
        );
    }
    for f in sigs
        .group_failures
        .iter()
        .chain(&sigs.other_failures)
        .take(10)
    {
        println!("  signature failure: {f}");
    }
    for e in info.committee_check_errors.iter().take(5) {
        println!("  committee mismatch: {e}");
    }
    for m in &proposal_misses {
        println!("  missed DV proposal: {m}");
    }
    for d in agreement
        .disagreements
        .iter()
        .chain(&agreement.untracked_inclusions)
        .chain(&agreement.delay_mismatches)
        .take(10)
    {
        println!("  tracker vs chain: {d}");
    }

    let summary = json!({
        "pass": all_pass,
        "checks": checks,
        "run": {
            "epochs": info.epochs,
            "seconds_per_slot": info.seconds_per_slot,
            "dv_enabled": info.dv_enabled,
            "genesis_time": info.genesis.genesis_time,
            "genesis_validators_root": info.genesis.genesis_validators_root,
            "kill": info.kill.map(|(n, f, t)| json!({"node": n, "from_epoch": f, "to_epoch": t})),
            "final_head_slot": info.final_head_slot,
            "final_finalized_epoch": info.final_finalized_epoch,
            "record_errors": info.record_errors,
        },
        "analysed_epochs": analysed_epochs(info.epochs),
        "groups": {"keepers": keepers, "baseline": baseline, "dv": if info.dv_enabled { json!(dv) } else { json!(null) }},
        "attestations_by_epoch": a.epochs,
        "kill_window": a.faults.first(),
        "missed_duties": a.missed_duties,
        "dvnodes": a.dvnodes,
        "signatures": sigs,
        "slashings": a.slashing_audit.onchain_slashings,
        "slashing_audit": {
            "messages_checked": a.slashing_audit.messages_checked,
            "violations": a.slashing_audit.violations,
        },
        "dvlab_report": out.join("report.html"),
        "dv_proposal_misses": proposal_misses,
        "duty_outcomes": dutylog::outcomes(&duty_logs),
        "tracker": {
            "outcomes_per_node": duty_logs.iter().map(|l| dutylog::outcomes(std::slice::from_ref(l))).collect::<Vec<_>>(),
            "bad_lines": duty_logs.iter().map(|l| l.bad_lines.len()).sum::<usize>(),
            "agreement": agreement,
        },
        "node_added_latency": {
            "vc_request_to_decided": latency_vc,
            "vc_request_to_decided_proposer": latency_vc_block,
            "last_partial_to_broadcast": latency_bcast,
            "node_added_total": node_added,
        },
        "dvnode_peak_rss_kib": info.dvnode_peak_rss_kib,
        "remote_signer": remote_summary,
    });
    let path = out.join("summary.json");
    fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "\n{}: summary in {}",
        if all_pass { "PASS" } else { "FAIL" },
        path.display()
    );
    Ok(all_pass)
}

fn save(out: &Path, chain: &ChainRecord<P>, info: &RunInfo) -> Result<()> {
    fs::write(out.join("chain.json"), serde_json::to_vec(chain)?)?;
    fs::write(out.join("run.json"), serde_json::to_vec_pretty(info)?)?;
    Ok(())
}

fn load(out: &Path) -> Result<(ChainRecord<P>, RunInfo)> {
    let read = |name: &str| -> Result<Vec<u8>> {
        let p = out.join(name);
        fs::read(&p).with_context(|| format!("reading {}", p.display()))
    };
    Ok((
        serde_json::from_slice(&read("chain.json")?).context("chain.json")?,
        serde_json::from_slice(&read("run.json")?).context("run.json")?,
    ))
}

/// Copies the dvnode duty logs next to the process logs.
fn copy_duty_logs(out: &Path) {
    for i in 0..NODES {
        let src = out
            .join("cluster")
            .join(format!("node{i}"))
            .join("duty-log.jsonl");
        if src.exists() {
            let dst = out.join("logs").join(format!("dvnode{i}-duty.jsonl"));
            if let Err(e) = fs::copy(&src, &dst) {
                eprintln!("warning: copying {}: {e}", src.display());
            }
        }
    }
}

async fn shutdown_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("E2E_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let dvlab_bin = rundir::dvlab_bin(args.dvlab_bin.as_deref());

    if args.reanalyze {
        return match load(&args.out).and_then(|(c, i)| analyse(&args.out, &c, &i, &dvlab_bin)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        };
    }

    if args.out.exists() {
        if let Err(e) = fs::remove_dir_all(&args.out) {
            eprintln!("error: cannot clear {}: {e}", args.out.display());
            return ExitCode::from(2);
        }
    }
    let sup = match Supervisor::new(args.out.join("logs")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::select! {
        r = run(&args, &sup) => r,
        sig = shutdown_signal() => Err(anyhow::anyhow!("interrupted by {sig}")),
    };
    // Stop everything before reading the duty logs, so they are complete.
    sup.shutdown();
    drop(sup);
    copy_duty_logs(&args.out);
    let (chain, info) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            eprintln!("logs: {}", args.out.join("logs").display());
            return ExitCode::from(2);
        }
    };
    if let Err(e) = save(&args.out, &chain, &info) {
        eprintln!("error: saving the chain record: {e:#}");
    }
    match analyse(&args.out, &chain, &info, &dvlab_bin) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
