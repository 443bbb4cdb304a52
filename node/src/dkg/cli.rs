//! Command-line handlers of the key-generation workflow: `dvnode p2p-key create`,
//! `dvnode definition create|sign` and `dvnode dkg`.
//!
//! ```text
//! dvnode p2p-key create --node-dir D          # each operator; prints its peer id
//! dvnode definition create --operators ID,ID,… --threshold T --validators K \
//!     --fork-version 0x… [--withdrawal-address 0x…] --out cluster-definition.json
//! dvnode definition sign --definition F --node-dir D   # each operator, in turn
//! dvnode dkg --definition F --node-dir D --p2p-listen ADDR --p2p-peers ADDR,…   # all at once
//! ```

use std::{path::PathBuf, time::Duration};

use anyhow::{ensure, Context, Result};
use clap::{Args, Subcommand};

use super::{run, DkgConfig, Fault};
use crate::{
    cluster::{
        definition::{ClusterDefinition, CreateDefinition, Definition, FULL_DEPOSIT_GWEI},
        lock::default_threshold,
    },
    p2p::key as p2p_key,
};

/// `dvnode p2p-key …`.
#[derive(Debug, Clone, Subcommand)]
pub enum P2pKeyCmd {
    /// Create the node's libp2p identity `NODE_DIR/p2p-key` (secp256k1, 0600) and print its peer
    /// id (the operator's id in a cluster definition). Refuses to overwrite an existing key.
    Create {
        /// Node directory (created if missing).
        #[arg(long, value_name = "DIR")]
        node_dir: PathBuf,
    },
    /// Print the peer id of `NODE_DIR/p2p-key`.
    Show {
        /// Node directory.
        #[arg(long, value_name = "DIR")]
        node_dir: PathBuf,
    },
}

impl P2pKeyCmd {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        match self {
            P2pKeyCmd::Create { node_dir } => {
                let path = node_dir.join("p2p-key");
                ensure!(
                    !path.exists(),
                    "{} exists: refusing to overwrite a node identity",
                    path.display()
                );
                std::fs::create_dir_all(&node_dir)
                    .with_context(|| format!("creating {}", node_dir.display()))?;
                let key = p2p_key::generate();
                p2p_key::save(&key, &path)?;
                println!("{}", p2p_key::peer_id(&key));
                Ok(())
            }
            P2pKeyCmd::Show { node_dir } => {
                let key = p2p_key::load(&node_dir.join("p2p-key"))?;
                println!("{}", p2p_key::peer_id(&key));
                Ok(())
            }
        }
    }
}

/// `dvnode definition …`.
#[derive(Debug, Clone, Subcommand)]
pub enum DefinitionCmd {
    /// Write a new, unsigned cluster definition.
    Create(DefinitionCreateArgs),
    /// Add this operator's signature (with `NODE_DIR/p2p-key`) to the definition, in place.
    Sign {
        /// The definition file.
        #[arg(long, value_name = "FILE")]
        definition: PathBuf,
        /// The operator's node directory.
        #[arg(long, value_name = "DIR")]
        node_dir: PathBuf,
    },
}

/// `dvnode definition create` flags.
#[derive(Debug, Clone, Args)]
pub struct DefinitionCreateArgs {
    /// Cluster name.
    #[arg(long, default_value = "dvlab")]
    name: String,
    /// Operator peer ids in node order, comma-separated (from `dvnode p2p-key create`).
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "PEER_ID,..."
    )]
    operators: Vec<String>,
    /// Signatures needed to sign; more than half of the operators. Default ⌈2n/3⌉.
    #[arg(long)]
    threshold: Option<usize>,
    /// Number of distributed validators to create.
    #[arg(long, value_name = "K")]
    validators: usize,
    /// Genesis fork version of the network (deposit signatures are bound to it).
    #[arg(long, value_name = "0x…")]
    fork_version: String,
    /// Execution address for 0x01 withdrawal credentials. Without it: 0x00 credentials of each
    /// validator's own (distributed) key.
    #[arg(long, value_name = "0x…")]
    withdrawal_address: Option<String>,
    /// Deposit amount per validator in gwei.
    #[arg(long, default_value_t = FULL_DEPOSIT_GWEI)]
    deposit_amount_gwei: u64,
    /// Genesis validators root recorded in the lock (default zero: unknown, `dvnode run` takes
    /// the beacon node's).
    #[arg(
        long,
        default_value = "0x0000000000000000000000000000000000000000000000000000000000000000"
    )]
    genesis_validators_root: String,
    /// Output file; must not exist.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

impl DefinitionCmd {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        match self {
            DefinitionCmd::Create(a) => {
                ensure!(
                    !a.out.exists(),
                    "{} exists: refusing to overwrite a definition",
                    a.out.display()
                );
                let n = a.operators.len();
                let def = ClusterDefinition::create(&CreateDefinition {
                    name: a.name,
                    threshold: a.threshold.unwrap_or_else(|| default_threshold(n)),
                    operators: a.operators,
                    num_validators: a.validators,
                    fork_version: a.fork_version,
                    genesis_validators_root: a.genesis_validators_root,
                    withdrawal_address: a.withdrawal_address,
                    deposit_amount_gwei: a.deposit_amount_gwei,
                })?;
                def.save(&a.out)?;
                println!(
                    "wrote {}: {} operators, threshold {}, {} validators, definition_hash {}",
                    a.out.display(),
                    def.operators.len(),
                    def.threshold,
                    def.num_validators,
                    def.definition_hash
                );
                Ok(())
            }
            DefinitionCmd::Sign {
                definition,
                node_dir,
            } => {
                let key = p2p_key::load(&node_dir.join("p2p-key"))?;
                let mut def = ClusterDefinition::read(&definition)?;
                let i = def
                    .sign(&key)
                    .with_context(|| format!("signing {}", definition.display()))?;
                def.save(&definition)?;
                let unsigned = def
                    .operators
                    .iter()
                    .filter(|o| o.signature.is_none())
                    .count();
                println!(
                    "operator {i} ({}) signed {} ({unsigned} signature(s) missing)",
                    p2p_key::peer_id(&key),
                    definition.display()
                );
                Ok(())
            }
        }
    }
}

/// `dvnode dkg` flags.
#[derive(Debug, Clone, Args)]
pub struct DkgArgs {
    /// The signed cluster definition.
    #[arg(long, value_name = "FILE")]
    definition: PathBuf,
    /// This operator's node directory (holds `p2p-key`; receives `cluster-lock.json`,
    /// `validator_keys/` and `deposit-data.json`).
    #[arg(long, value_name = "DIR")]
    node_dir: PathBuf,
    /// libp2p listen multiaddress.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/3610")]
    p2p_listen: libp2p::Multiaddr,
    /// Every operator's multiaddress in definition order, comma-separated (this node's own entry
    /// is not dialed).
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "MULTIADDR,..."
    )]
    p2p_peers: Vec<libp2p::Multiaddr>,
    /// Encrypt the share keystores with a cheap KDF (devnets and tests only).
    #[arg(long)]
    insecure_keys: bool,
    /// Seconds to wait for every operator to connect and agree on the definition.
    #[arg(long, default_value_t = 600)]
    connect_timeout: u64,
    /// Seconds each later round may take before the silent operators are named and the
    /// ceremony aborts; also how long a node that completed waits for the others to confirm.
    #[arg(long, default_value_t = 60)]
    round_timeout: u64,
    /// Testing only: make this node misbehave (bad-share, equivocate, stall-after-deal,
    /// false-complaint) so that the others must abort naming it.
    #[arg(long, hide = true)]
    test_fault: Option<Fault>,
}

impl DkgArgs {
    /// Runs the ceremony (on its own tokio runtime) and prints a summary.
    pub fn run(self) -> Result<()> {
        let key = p2p_key::load(&self.node_dir.join("p2p-key"))?;
        let definition = Definition::load(&self.definition)?;
        let cfg = DkgConfig {
            definition,
            node_dir: self.node_dir.clone(),
            key,
            listen: self.p2p_listen,
            peers: self.p2p_peers,
            insecure_keys: self.insecure_keys,
            connect_timeout: Duration::from_secs(self.connect_timeout),
            round_timeout: Duration::from_secs(self.round_timeout),
            done_timeout: Duration::from_secs(self.round_timeout),
            fault: self.test_fault,
            limits: super::run::limits(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let summary = rt.block_on(run(cfg))?;
        println!(
            "DKG complete: operator {}, {} validators, lock_hash {}, {:.2} s; wrote {}",
            summary.index,
            summary.validators.len(),
            summary.lock_hash,
            summary.total.as_secs_f64(),
            self.node_dir.display()
        );
        Ok(())
    }
}
