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
    /// Import or export EIP-3076 slashing protection data.
    #[command(subcommand)]
    Slashing(dvnode::slashing::cli::SlashingCmd),
    /// Run performance benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// QBFT consensus of an in-process cluster over loopback libp2p: decisions per second and
    /// decide latency, with all nodes up and with one node down.
    Consensus(ConsensusBenchArgs),
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
        Command::Slashing(cmd) => cmd.run(),
        Command::Bench(cmd) => bench(cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
