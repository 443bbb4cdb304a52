//! `dvnode run`: wires the duty workflow together (the one place that does).
//!
//! ```text
//! scheduler ─► fetcher ─► consensus (DutyRunner) ─► dutydb ─► validator API ◄─► VC
//!                                                       │ partial signatures
//! broadcast ◄─ sigagg ◄─ parsig (local + peers) ◄───────┘ ◄─► p2p Protocol::Parsig
//! ```
//!
//! With `--signer remote` ([`SignerMode::Remote`]) the node decrypts its key shares, the
//! validator API also serves the Web3Signer API ([`crate::remote`]) and the VC works with the
//! DV keys: the partial signatures are this node's own, made when the VC asks for a signature
//! (or ahead of time for selection proofs and RANDAO reveals), and the VC gets the combined
//! signature; the scheduler and fetch stage run the aggregation and sync contribution duties.
//!
//! Every stage reports to the tracker, whose chain watcher checks inclusion once per slot. The
//! loops that drive the stages live with them ([`Scheduler::run`], [`FetchStage::run`],
//! [`ParSig::run_inbound`], [`SigAgg::run`], [`ChainWatcher::run`]); this module creates the
//! stages, connects them and starts those loops.
//!
//! Startup: load and verify the cluster lock, find this node's index from its p2p key, wait
//! for the beacon node (retrying with a clear log line), check the chain's preset and genesis
//! validators root, open the slashing DB, start p2p, consensus, the workflow stages, the
//! validator API and the metrics server. SIGINT/SIGTERM stop everything gracefully.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use libp2p::Multiaddr;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::broadcast::Broadcaster;
use crate::clock::follow::{self, ClockMetrics, Follower};
use crate::clock::{self as time, Clock, SlotClock, SlotTicker, SystemClock, UncorrectedClock};
use crate::cluster::lock::ClusterLock;
use crate::cluster::shares::ShareKeys;
use crate::cluster::Cluster;
use crate::consensus::driver::{Consensus, ConsensusMetrics, DriverConfig};
use crate::decide::DutyRunner;
use crate::duty::ScheduledDuty;
use crate::dutydb::DutyDb;
use crate::eth::beacon::BeaconClient;
use crate::eth::heads::Heads;
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{BlsPubkey, Mainnet, Minimal, Preset, Root};
use crate::fetcher::{FetchStage, Fetcher};
use crate::p2p;
use crate::parsig::{DvShares, ParSig, ParSigMetrics, Threshold};
use crate::remote::{DvSigner, SignerMetrics};
use crate::scheduler::Scheduler;
use crate::sigagg::SigAgg;
use crate::slashing::SlashingDb;
use crate::tracker::{ChainWatcher, Tracker, TrackerConfig};
use crate::validator_api::{PubkeyMap, ValidatorApi, ValidatorApiConfig};
use crate::vc_backend::WorkflowBackend;
use crate::web3signer::Web3Signer;

/// Slots after which a duty that was not broadcast is closed and logged (and the grace after
/// the inclusion window for a broadcast one whose blocks could not be read).
const TRACK_SLOTS: u64 = 4;
/// Slots of decided values and partials kept.
const KEEP_SLOTS: u64 = 64;

/// Configuration of `dvnode run`.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Cluster lock file.
    pub lock_file: PathBuf,
    /// Node directory (`p2p-key`, `validator_keys/`).
    pub node_dir: PathBuf,
    /// Beacon node URL, or a comma-separated list of them: primary first, then fallbacks
    /// ([`crate::eth::beacon::fallback`]).
    pub beacon_node_url: String,
    /// Validator API listen address.
    pub validator_api_addr: SocketAddr,
    /// p2p listen address.
    pub p2p_listen: Multiaddr,
    /// Peer addresses in node order (this node's own entry is ignored); empty: the lock's.
    pub p2p_peers: Vec<Multiaddr>,
    /// Directory of the slashing DB.
    pub data_dir: PathBuf,
    /// Metrics/health listen address.
    pub metrics_addr: SocketAddr,
    /// JSON-lines duty log.
    pub duty_log: Option<PathBuf>,
    /// Who signs: the VC with this node's key shares, or this node as the VC's remote signer.
    pub signer: SignerMode,
    /// The node's clock follows the beacon node's while the local clock is off it by more
    /// ([`crate::clock::follow`]); zero only measures.
    pub clock_follow_bound: Duration,
    /// Longest drain after a stop signal ([`drain_until_ms`]); zero stops at once.
    pub shutdown_grace: Duration,
}

/// Who makes this node's partial signatures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SignerMode {
    /// The VC holds this node's key shares and sends partial signatures through the beacon
    /// API (`middleware`). Aggregation duties need DV selection endpoints the VC lacks.
    #[default]
    Middleware,
    /// The VC signs through this node's Web3Signer API with the DV keys; this node holds its
    /// key shares and answers with combined signatures (`remote`). Every duty, aggregation and
    /// sync contributions included.
    Remote,
}

/// Waits for the beacon node and returns its fork schedule and preset name.
async fn wait_for_bn(
    bn: &BeaconClient,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(ForkSchedule, String)> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let res = async {
            let spec = bn.spec().await?;
            let schedule = bn.fork_schedule().await?;
            let preset = spec
                .string("PRESET_BASE")
                .unwrap_or_else(|_| "mainnet".into());
            Ok::<_, crate::eth::beacon::BeaconError>((schedule, preset))
        }
        .await;
        match res {
            Ok(v) => return Ok(v),
            Err(e) => {
                warn!(url = %bn.base_url(), attempt, error = %e, "beacon node not reachable; retrying in 2s");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => bail!("shut down while waiting for the beacon node"),
        }
    }
}

fn dial_addrs(
    cluster: &Cluster,
    own: usize,
    flags: &[Multiaddr],
) -> Result<Vec<(libp2p::PeerId, Multiaddr)>> {
    let n = cluster.peers.len();
    let addrs: Vec<Option<Multiaddr>> = if flags.is_empty() {
        cluster
            .lock
            .content
            .operators
            .iter()
            .map(|o| o.address.as_deref().map(str::parse).transpose())
            .collect::<Result<_, _>>()
            .context("invalid operator address in the cluster lock")?
    } else {
        ensure!(
            flags.len() == n,
            "--p2p-peers needs one address per node in lock order ({n}), got {}",
            flags.len()
        );
        flags.iter().cloned().map(Some).collect()
    };
    Ok(addrs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != own)
        .filter_map(|(i, a)| a.map(|a| (cluster.peers[i], a)))
        .collect())
}

/// Warns about keystores whose pubkey is not this node's public share of any DV.
fn check_keystores(cluster: &Cluster, own: usize, node_dir: &std::path::Path) {
    let dir = node_dir.join("validator_keys");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let ours: HashSet<String> = cluster
        .validators
        .iter()
        .filter_map(|v| v.public_shares.get(own))
        .map(|pk| hex::encode(pk.to_bytes()))
        .collect();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let pubkey = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v.get("pubkey")
                    .and_then(|p| p.as_str())
                    .map(|s| s.trim_start_matches("0x").to_lowercase())
            });
        match pubkey {
            Some(pk) if ours.contains(&pk) => {}
            _ => {
                warn!(keystore = %path.display(), "keystore is not one of this node's key shares in the lock")
            }
        }
    }
}

/// Runs the node until `shutdown` resolves.
pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (signal_tx, mut signal_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down");
        let _ = signal_tx.send(true);
    });

    let cluster = ClusterLock::load(&config.lock_file)?;
    let key = p2p::key::load(&config.node_dir.join("p2p-key"))
        .with_context(|| format!("loading the p2p key of {}", config.node_dir.display()))?;
    let me = key.public().to_peer_id();
    let own = cluster.peers.iter().position(|p| *p == me).ok_or_else(|| {
        anyhow!("this node's peer id {me} is not an operator of the cluster lock")
    })?;
    check_keystores(&cluster, own, &config.node_dir);
    info!(node = own, peer = %me, nodes = cluster.peers.len(), threshold = cluster.threshold,
        validators = cluster.validators.len(), "cluster lock loaded");

    let bn = BeaconClient::new(&config.beacon_node_url)?;
    let (schedule, preset) = wait_for_bn(&bn, &mut signal_rx).await?;
    match preset.as_str() {
        "minimal" => {
            run_preset::<Minimal>(config, cluster, own, key, bn, schedule, signal_rx).await
        }
        "mainnet" => {
            run_preset::<Mainnet>(config, cluster, own, key, bn, schedule, signal_rx).await
        }
        other => bail!("beacon node runs the unsupported preset {other:?}"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_preset<P: Preset>(
    config: NodeConfig,
    cluster: Cluster,
    own: usize,
    key: libp2p::identity::Keypair,
    bn: BeaconClient,
    schedule: ForkSchedule,
    signal: watch::Receiver<bool>,
) -> Result<()> {
    schedule.ensure_preset::<P>()?;
    let gvr = schedule.genesis_validators_root();
    if cluster.genesis_validators_root == [0; 32] {
        warn!(%gvr, "the cluster lock has no genesis validators root; using the beacon node's");
    } else if Root(cluster.genesis_validators_root) != gvr {
        bail!(
            "the beacon node's genesis validators root {gvr} differs from the cluster lock's {}",
            Root(cluster.genesis_validators_root)
        );
    }
    let schedule = Arc::new(schedule);
    let slashing = Arc::new(SlashingDb::open(&config.data_dir.join("slashing.redb"))?);
    slashing.set_genesis_validators_root(gvr.0)?;

    let mut registry = Registry::default();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(drain_then_stop(
        signal,
        SlotClock::of(&schedule),
        config.shutdown_grace,
        stop_tx,
    ));
    tokio::spawn(follow::run(
        bn.clone(),
        Follower::new(
            Arc::new(UncorrectedClock),
            config.clock_follow_bound,
            time::correction(),
        ),
        ClockMetrics::new(&mut registry),
        stop_rx.clone(),
    ));
    let heads = Heads::new();
    bn.endpoints().register_metrics(&mut registry);
    let p2p_metrics = p2p::Metrics::new(&mut registry);
    let (network, inbound) = p2p::Network::start(p2p::Config {
        key: key.clone(),
        peers: cluster.peers.clone(),
        listen_addrs: vec![config.p2p_listen.clone()],
        dial_addrs: dial_addrs(&cluster, own, &config.p2p_peers)?,
        metrics: p2p_metrics.clone(),
        limits: p2p::Limits::default(),
    })
    .await?;
    info!(addrs = ?network.local_addrs(), "p2p listening");
    let router = p2p::router::Router::spawn(inbound, 1024, p2p_metrics);
    let consensus = Consensus::new(
        network.clone(),
        router.qbft,
        key,
        DriverConfig::default(),
        ConsensusMetrics::new(&mut registry),
    )?;

    let tracker = Tracker::with_config(
        &mut registry,
        config.duty_log.as_deref(),
        TrackerConfig {
            track_slots: TRACK_SLOTS,
            inclusion_window: schedule.slots_per_epoch(),
        },
    )?;
    let dutydb = Arc::new(DutyDb::<P>::new());
    let dv_pubkeys: Vec<BlsPubkey> = cluster
        .validators
        .iter()
        .map(|v| BlsPubkey(v.pubkey.to_bytes()))
        .collect();
    let shares = DvShares {
        shares: cluster
            .validators
            .iter()
            .map(|v| (BlsPubkey(v.pubkey.to_bytes()), v.public_shares.clone()))
            .collect(),
    };
    let remote = config.signer == SignerMode::Remote;
    let (ready_tx, ready_rx) = mpsc::channel::<Threshold>(1024);
    let mut parsig = ParSig::new(
        own as u64 + 1,
        cluster.threshold,
        shares,
        schedule.clone(),
        dutydb.clone(),
        Arc::new(network.clone()),
        ready_tx,
        ParSigMetrics::new(&mut registry),
        tracker.clone(),
    );
    if remote {
        let keys = ShareKeys::load(
            &config.node_dir.join("validator_keys"),
            &cluster,
            own as u64 + 1,
        )?;
        info!(
            validators = keys.len(),
            share = own + 1,
            "key shares decrypted (remote-signer mode)"
        );
        parsig = parsig.with_share_keys(Arc::new(keys));
    }
    let parsig = Arc::new(parsig);
    tokio::spawn(parsig.clone().run_inbound(router.parsig));
    let (mut sigagg, rechecked) = SigAgg::new(cluster.threshold, dutydb.clone(), &mut registry)
        .trusting_verified_partials(
            cluster
                .validators
                .iter()
                .map(|v| (&v.pubkey, v.public_shares.as_slice())),
        );
    if rechecked > 0 {
        warn!(
            validators = rechecked,
            "public shares that do not interpolate to their validator key: combined signatures of these validators are verified again (check the cluster lock)"
        );
    }
    if remote {
        sigagg = sigagg.with_aggregation(parsig.clone());
    }
    let sigagg = Arc::new(sigagg);
    let broadcaster = Arc::new(Broadcaster::new(
        bn.clone(),
        schedule.clone(),
        dutydb.clone(),
        tracker.clone(),
        &mut registry,
    ));
    tokio::spawn(sigagg.run(ready_rx, broadcaster, tracker.clone()));

    let runner = Arc::new(
        DutyRunner::new(
            Arc::new(consensus.clone()),
            schedule.clone(),
            slashing.clone(),
            Arc::new(dv_pubkeys.iter().copied().collect()),
            dutydb.clone(),
            tracker.clone(),
        )
        .with_metrics(&mut registry)
        .with_heads(heads.clone()),
    );
    let (due_tx, due_rx) = mpsc::channel::<ScheduledDuty>(256);
    let mut scheduler = Scheduler::<P>::new(
        bn.clone(),
        &schedule,
        Arc::new(SystemClock),
        dv_pubkeys.clone(),
        dutydb.clone(),
        tracker.clone(),
        due_tx,
    )
    .with_heads(heads.clone());
    let clock = SlotClock::of(&schedule);
    let fetch = FetchStage {
        clock,
        fetcher: Fetcher::new(bn.clone()),
        runner,
        dutydb: dutydb.clone(),
        tracker: tracker.clone(),
        signing: remote.then(|| (parsig.clone(), schedule.clone())),
        heads,
    };
    if remote {
        scheduler = scheduler.with_remote_duties();
    }
    tokio::spawn(scheduler.run(stop_rx.clone()));
    tokio::spawn(Arc::new(fetch).run(due_rx));
    tokio::spawn(ChainWatcher::<P>::new(bn.clone(), tracker.clone()).run(clock, stop_rx.clone()));
    tokio::spawn(retain_recent(
        clock,
        dutydb.clone(),
        parsig.clone(),
        stop_rx.clone(),
    ));

    let mut api_config =
        ValidatorApiConfig::new(&config.beacon_node_url, &cluster, own as u64 + 1)?;
    api_config.listen = config.validator_api_addr;
    if remote {
        api_config.pubkeys = PubkeyMap::identity(&cluster)?;
    }
    let mut api = ValidatorApi::new(
        api_config,
        Arc::new(WorkflowBackend::new(
            dutydb.clone(),
            parsig.clone(),
            schedule.clone(),
            tracker.clone(),
        )),
    )?
    .with_beacon_endpoints(bn.endpoints().clone())?
    .with_metrics(crate::validator_api::Metrics::new(&mut registry));
    if remote {
        let signer = DvSigner::new(
            dutydb,
            parsig,
            schedule.clone(),
            dv_pubkeys,
            SignerMetrics::new(&mut registry),
        );
        let web3signer = Web3Signer::<P>::new(
            schedule.clone(),
            Arc::new(signer),
            crate::web3signer::Metrics::new(&mut registry),
        );
        api = api.with_routes(web3signer.router());
        info!("Web3Signer API served on the validator API address (remote-signer mode)");
    }
    let api = api.bind().await?;
    info!(addr = %api.local_addr(), "validator API listening");
    let metrics =
        crate::metrics_server::bind(config.metrics_addr, registry, network.clone()).await?;
    info!(addr = %config.metrics_addr, "metrics listening on /metrics and /health");

    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api_task = tokio::spawn(api.serve(stop(stop_rx.clone())));
    let metrics_task = tokio::spawn(metrics.serve(stop(stop_rx.clone())));
    let _ = stop_rx.wait_for(|s| *s).await;
    consensus.shutdown().await;
    network.shutdown().await;
    for (name, task) in [("validator API", api_task), ("metrics", metrics_task)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "{name} server failed"),
            Err(e) => error!(error = %e, "{name} task failed"),
        }
    }
    // Outcomes still open (broadcast objects awaiting inclusion, duties in progress).
    tracker.close_all();
    info!("stopped");
    Ok(())
}

/// When a node told to stop at `now_ms` stops: two thirds into the current slot (when the slot's
/// attestations are aggregated), so that the slot's duties and the validator client's requests
/// in flight complete — among them the epoch-start duty poll of a Lodestar VC, which polls the
/// next epoch only then and would otherwise miss that epoch's first slot — but at most `grace`
/// later, and at once after that point of the slot.
pub fn drain_until_ms(clock: &SlotClock, now_ms: u64, grace: Duration) -> u64 {
    let slot = clock.slot_at_ms(now_ms);
    let two_thirds = clock.slot_start_ms(slot) + clock.slot_duration().as_millis() as u64 * 2 / 3;
    two_thirds
        .min(now_ms.saturating_add(grace.as_millis() as u64))
        .max(now_ms)
}

/// Waits for the stop `signal`, drains ([`drain_until_ms`]) and stops the node.
async fn drain_then_stop(
    mut signal: watch::Receiver<bool>,
    clock: SlotClock,
    grace: Duration,
    stop: watch::Sender<bool>,
) {
    if signal.wait_for(|s| *s).await.is_err() {
        return;
    }
    let now = SystemClock.now_ms();
    let until = drain_until_ms(&clock, now, grace);
    if until > now {
        info!(
            drain_ms = until - now,
            "finishing the current slot's duties before stopping"
        );
        tokio::time::sleep(Duration::from_millis(until - now)).await;
    }
    let _ = stop.send(true);
}

/// Keeps the decided values and partial signatures of the last [`KEEP_SLOTS`] slots.
async fn retain_recent<P: Preset>(
    clock: SlotClock,
    dutydb: Arc<DutyDb<P>>,
    parsig: Arc<ParSig<P>>,
    stop: watch::Receiver<bool>,
) {
    let mut slots = SlotTicker::new(clock, stop);
    while let Some(slot) = slots.tick().await {
        dutydb.prune(slot.saturating_sub(KEEP_SLOTS));
        parsig.prune(slot.saturating_sub(KEEP_SLOTS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_drains_to_two_thirds_of_the_slot_at_most_the_grace() {
        // 4-second slots from t = 1000 s: slot 3 runs 1012 s..1016 s, 2/3 at 1014.666 s.
        let clock = SlotClock::new(1_000, 4, 8);
        let grace = Duration::from_secs(8);
        assert_eq!(drain_until_ms(&clock, 1_012_100, grace), 1_014_666);
        assert_eq!(drain_until_ms(&clock, 1_014_000, grace), 1_014_666);
        // After two thirds: at once.
        assert_eq!(drain_until_ms(&clock, 1_015_000, grace), 1_015_000);
        // Bounded by the grace, and no grace means at once.
        assert_eq!(
            drain_until_ms(&clock, 1_012_100, Duration::from_secs(1)),
            1_013_100
        );
        assert_eq!(drain_until_ms(&clock, 1_012_100, Duration::ZERO), 1_012_100);
    }
}
