//! `dvnode` command-line entry point.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use dvnode::cluster::create::{self, CreateParams, KeySource};

/// dvnode — an Ethereum distributed validator node.
///
/// One validator key is split t-of-n with threshold BLS. Each node runs beside its own beacon
/// node and an unmodified validator client holding only a key share; the nodes agree on what to
/// sign by QBFT consensus and combine partial signatures into one valid signature.
#[derive(Parser, Debug)]
#[command(name = "dvnode", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `dvnode=debug,libp2p=info`.
    #[arg(long, global = true, env = "DVNODE_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "DVNODE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Split validator keys into threshold shares and write one directory per node.
    CreateCluster(CreateClusterArgs),
    /// Run the distributed validator node.
    Run(Box<RunArgs>),
    /// Sign this operator's part of a distributed validator's voluntary exit and hand it to the
    /// running dvnode; the exit is combined and submitted once a threshold of operators did.
    Exit(ExitArgs),
    /// Import or export EIP-3076 slashing protection data.
    #[command(subcommand)]
    Slashing(dvnode::slashing::cli::SlashingCmd),
    /// Create or show the node's libp2p identity (`p2p-key`).
    #[command(subcommand)]
    P2pKey(dvnode::dkg::cli::P2pKeyCmd),
    /// Create or sign a cluster definition (the input of `dkg`).
    #[command(subcommand)]
    Definition(dvnode::dkg::cli::DefinitionCmd),
    /// Distributed key generation: run by every operator of a signed definition at once; writes
    /// the cluster lock, this node's key shares and the deposit data. No node ever holds a whole
    /// validator key.
    Dkg(dvnode::dkg::cli::DkgArgs),
    /// Run performance benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// QBFT consensus of an in-process cluster over loopback libp2p: decisions per second and
    /// decide latency, with all nodes up and with one node down.
    Consensus(ConsensusBenchArgs),
    /// Whole DKG ceremonies of in-process nodes over loopback libp2p, until every node wrote
    /// its outputs: wall time and per-round times for each (nodes, validators) case.
    Dkg(DkgBenchArgs),
}

#[derive(Args, Debug)]
struct DkgBenchArgs {
    /// Cluster sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "4,10")]
    nodes: Vec<usize>,
    /// Validator counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    validators: Vec<usize>,
}

#[derive(Args, Debug)]
struct ConsensusBenchArgs {
    /// Cluster size.
    #[arg(long, default_value_t = 4)]
    nodes: usize,
    /// Size of each proposed value in bytes (at least 16).
    #[arg(long, default_value_t = 128)]
    value_bytes: usize,
    /// Sequential instances (latency) with all nodes up.
    #[arg(long, default_value_t = 1000)]
    sequential: usize,
    /// Pipelined instances (throughput) with all nodes up.
    #[arg(long, default_value_t = 2000)]
    pipelined: usize,
    /// Sequential instances with one node down.
    #[arg(long, default_value_t = 200)]
    sequential_degraded: usize,
    /// Pipelined instances with one node down.
    #[arg(long, default_value_t = 500)]
    pipelined_degraded: usize,
    /// Instances in flight in the pipelined runs.
    #[arg(long, default_value_t = 16)]
    window: usize,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("key_source").required(true).args(["interop_indices", "split_keystores", "num_validators"])))]
struct CreateClusterArgs {
    /// Number of nodes (operators), at least 3.
    #[arg(long)]
    nodes: usize,
    /// Signatures needed to sign; must be more than half of the nodes. Default ⌈2n/3⌉.
    #[arg(long)]
    threshold: Option<usize>,
    /// Output directory; must not exist or be empty.
    #[arg(long)]
    out: PathBuf,
    /// Cluster name recorded in the lock.
    #[arg(long, default_value = "dvlab")]
    name: String,
    /// Use the standard interop keys of these validator indices, `A..B` (end exclusive) or `A..=B`.
    #[arg(long, value_name = "A..B")]
    interop_indices: Option<String>,
    /// Split the existing EIP-2335 keystores (`*.json`) in this directory.
    #[arg(long, value_name = "DIR", requires = "password_file")]
    split_keystores: Option<PathBuf>,
    /// File holding the password of the keystores given by `--split-keystores`.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Generate this many new random validator keys.
    #[arg(long, value_name = "K")]
    num_validators: Option<usize>,
    /// Genesis fork version of the network (default: the minimal preset's).
    #[arg(long, default_value = "0x00000001")]
    fork_version: String,
    /// Genesis validators root of the network.
    #[arg(
        long,
        default_value = "0x0000000000000000000000000000000000000000000000000000000000000000"
    )]
    genesis_validators_root: String,
    /// p2p multiaddress of each node, comma-separated in node order, recorded in the lock.
    #[arg(long, value_delimiter = ',', value_name = "MULTIADDR,...")]
    p2p_addresses: Vec<String>,
    /// Encrypt share keystores with a cheap KDF (devnets and tests only).
    #[arg(long)]
    insecure_keys: bool,
}

/// `dvnode run` flags (each also settable by its environment variable).
#[derive(Args, Debug)]
struct RunArgs {
    /// Node directory created by `create-cluster` (holds `p2p-key`, `cluster-lock.json` and
    /// `validator_keys/`, of which only the share pubkeys are read).
    #[arg(long, env = "DVNODE_NODE_DIR", value_name = "DIR")]
    node_dir: PathBuf,
    /// Cluster lock file (default: `NODE_DIR/cluster-lock.json`).
    #[arg(long, env = "DVNODE_LOCK_FILE", value_name = "FILE")]
    lock_file: Option<PathBuf>,
    /// Beacon node REST API URL, or a comma-separated list `A,B,…`: A is the primary, the others
    /// fallbacks, failed over (and back) per request class with health tracking.
    #[arg(
        long,
        env = "DVNODE_BEACON_NODE_URL",
        default_value = "http://127.0.0.1:5052"
    )]
    beacon_node_url: String,
    /// Address of the beacon API served to the validator client.
    #[arg(
        long,
        env = "DVNODE_VALIDATOR_API_ADDR",
        default_value = "127.0.0.1:3600"
    )]
    validator_api_addr: std::net::SocketAddr,
    /// libp2p listen multiaddress.
    #[arg(
        long,
        env = "DVNODE_P2P_LISTEN",
        default_value = "/ip4/127.0.0.1/tcp/3610"
    )]
    p2p_listen: libp2p::Multiaddr,
    /// Peer multiaddresses in node order, comma-separated (default: those in the lock).
    #[arg(
        long,
        env = "DVNODE_P2P_PEERS",
        value_delimiter = ',',
        value_name = "MULTIADDR,..."
    )]
    p2p_peers: Vec<libp2p::Multiaddr>,
    /// Data directory (slashing protection DB; default: `NODE_DIR/data`).
    #[arg(long, env = "DVNODE_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the `/metrics` and `/health` endpoints.
    #[arg(long, env = "DVNODE_METRICS_ADDR", default_value = "127.0.0.1:3620")]
    metrics_addr: std::net::SocketAddr,
    /// Append one JSON line per closed duty (stages, timestamps, outcome) to this file.
    #[arg(long, env = "DVNODE_DUTY_LOG", value_name = "FILE")]
    duty_log: Option<PathBuf>,
    /// Who signs. `middleware`: the validator client holds this node's key shares (its
    /// keystores) and talks to the validator API as its beacon node. `remote`: dvnode decrypts
    /// its key shares (`validator_keys/`, password files beside them) and also serves the
    /// Web3Signer API on the validator API address; start the validator client with
    /// `--externalSigner.url` at it and the DV public keys. Only `remote` performs aggregation
    /// and sync contribution duties.
    #[arg(long, env = "DVNODE_SIGNER", value_enum, default_value_t = dvnode::node::SignerMode::Middleware)]
    signer: dvnode::node::SignerMode,
    /// Follow the beacon node's clock (measured from its `Date` headers) while the local clock
    /// is off it by more than this many milliseconds; 0 only measures (`clock_offset_seconds`).
    #[arg(
        long,
        env = "DVNODE_CLOCK_FOLLOW_BOUND_MS",
        value_name = "MS",
        default_value_t = 500
    )]
    clock_follow_bound_ms: u64,
    /// On SIGTERM/SIGINT keep running until two thirds into the current slot (the slot's
    /// duties and the validator client's requests complete), at most this many milliseconds;
    /// 0 stops at once.
    #[arg(
        long,
        env = "DVNODE_SHUTDOWN_GRACE_MS",
        value_name = "MS",
        default_value_t = 8000
    )]
    shutdown_grace_ms: u64,
}

/// `dvnode exit` flags.
#[derive(Args, Debug)]
struct ExitArgs {
    /// Node directory (holds `p2p-key`, `cluster-lock.json` and `validator_keys/`).
    #[arg(long, env = "DVNODE_NODE_DIR", value_name = "DIR")]
    node_dir: PathBuf,
    /// Cluster lock file (default: `NODE_DIR/cluster-lock.json`).
    #[arg(long, env = "DVNODE_LOCK_FILE", value_name = "FILE")]
    lock_file: Option<PathBuf>,
    /// The distributed validator to exit: its public key (`0x…`) or validator index.
    #[arg(long, value_name = "PUBKEY|INDEX")]
    validator: String,
    /// Exit epoch (default: the current epoch). Every operator must use the same one.
    #[arg(long, value_name = "EPOCH")]
    epoch: Option<u64>,
    /// The running dvnode's validator API.
    #[arg(
        long,
        env = "DVNODE_VALIDATOR_API_URL",
        default_value = "http://127.0.0.1:3600"
    )]
    validator_api_url: String,
    /// Wait up to this many seconds for the exit epoch to be set on the beacon node.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
}

fn exit(a: ExitArgs) -> Result<()> {
    let params = dvnode::exit::ExitParams {
        lock_file: a
            .lock_file
            .unwrap_or_else(|| a.node_dir.join("cluster-lock.json")),
        node_dir: a.node_dir,
        validator: a.validator,
        epoch: a.epoch,
        api_url: a.validator_api_url,
        wait: a.wait.map(std::time::Duration::from_secs),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(dvnode::exit::run(&params, |m| println!("{m}")))
}

fn run_node(a: RunArgs) -> Result<()> {
    let config = dvnode::node::NodeConfig {
        lock_file: a
            .lock_file
            .unwrap_or_else(|| a.node_dir.join("cluster-lock.json")),
        data_dir: a.data_dir.unwrap_or_else(|| a.node_dir.join("data")),
        node_dir: a.node_dir,
        beacon_node_url: a.beacon_node_url,
        validator_api_addr: a.validator_api_addr,
        p2p_listen: a.p2p_listen,
        p2p_peers: a.p2p_peers,
        metrics_addr: a.metrics_addr,
        duty_log: a.duty_log,
        signer: a.signer,
        clock_follow_bound: std::time::Duration::from_millis(a.clock_follow_bound_ms),
        shutdown_grace: std::time::Duration::from_millis(a.shutdown_grace_ms),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(dvnode::node::run(config, shutdown_signal()))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(filter: &str, json: bool) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid --log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn create_cluster(a: CreateClusterArgs) -> Result<()> {
    let keys = if let Some(r) = &a.interop_indices {
        KeySource::Interop(create::parse_range(r)?)
    } else if let Some(dir) = a.split_keystores {
        KeySource::Keystores {
            dir,
            password_file: a.password_file.expect("required by clap"),
        }
    } else {
        KeySource::Random(
            a.num_validators
                .expect("one key source is required by clap"),
        )
    };
    let params = CreateParams {
        name: a.name,
        nodes: a.nodes,
        threshold: a
            .threshold
            .unwrap_or_else(|| dvnode::cluster::lock::default_threshold(a.nodes)),
        keys,
        fork_version: create::parse_fork_version(&a.fork_version)?,
        genesis_validators_root: create::parse_root(&a.genesis_validators_root)?,
        addresses: a.p2p_addresses,
        insecure_keys: a.insecure_keys,
        out: a.out,
    };
    let lock = create::create_cluster(&params)?;
    println!(
        "created cluster {:?}: {} nodes, threshold {}, {} validators, lock_hash {}",
        lock.content.name,
        lock.content.operators.len(),
        lock.content.threshold,
        lock.content.distributed_validators.len(),
        lock.lock_hash
    );
    println!("wrote {}", params.out.display());
    Ok(())
}

fn bench(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Dkg(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            println!("DKG benchmark: in-process nodes over loopback libp2p, threshold ⌈2n/3⌉");
            rt.block_on(dvnode::dkg::bench::run_bench(
                &a.nodes,
                &a.validators,
                |l| println!("{l}"),
            ))
        }
        BenchCmd::Consensus(a) => {
            let params = dvnode::consensus::bench::Params {
                nodes: a.nodes,
                value_bytes: a.value_bytes,
                sequential: a.sequential,
                pipelined: a.pipelined,
                sequential_degraded: a.sequential_degraded,
                pipelined_degraded: a.pipelined_degraded,
                window: a.window,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            println!(
                "consensus benchmark: {} nodes over loopback libp2p, {}-byte values, window {}",
                params.nodes, params.value_bytes, params.window
            );
            rt.block_on(dvnode::consensus::bench::run(&params, |f| println!("{f}")))?;
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.log, cli.log_json) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    let result = match cli.command {
        Command::CreateCluster(a) => create_cluster(a),
        Command::Run(a) => run_node(*a),
        Command::Exit(a) => exit(a),
        Command::Slashing(cmd) => cmd.run(),
        Command::P2pKey(cmd) => cmd.run(),
        Command::Definition(cmd) => cmd.run(),
        Command::Dkg(a) => a.run(),
        Command::Bench(cmd) => bench(cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
