//! `dvnode create-cluster`: splits validator keys into shares and writes one directory per node.
//!
//! Output layout:
//! ```text
//! OUT/cluster-lock.json
//! OUT/node{i}/cluster-lock.json            copy of the lock
//! OUT/node{i}/p2p-key                      secp256k1 identity (hex, 0600)
//! OUT/node{i}/validator_keys/keystore-{j}.json   EIP-2335 keystore of node i's share of DV j
//! OUT/node{i}/validator_keys/keystore-{j}.txt    its password (0600)
//! ```

use std::{
    fs,
    ops::Range,
    path::{Path, PathBuf},
};

use anyhow::{bail, ensure, Context, Result};
use rand::{rngs::OsRng, RngCore};

use super::lock::{
    check_threshold, parse_hex_array, to_hex, ClusterLock, DistributedValidator, LockContent,
    Operator, LOCK_VERSION,
};
use crate::{
    keys::{
        interop::interop_secret,
        keystore::{KdfChoice, Keystore},
        tbls,
    },
    p2p::key as p2p_key,
};

/// Where the validator keys of a new cluster come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The deterministic interop keys of these validator indices (what `lodestar dev` uses).
    Interop(Range<u64>),
    /// Existing EIP-2335 keystores (`*.json` in a directory), all with the password in a file.
    Keystores {
        /// Directory of the keystores.
        dir: PathBuf,
        /// File holding the password of every keystore.
        password_file: PathBuf,
    },
    /// This many new random keys.
    Random(usize),
}

/// Parameters of `create-cluster`.
#[derive(Debug, Clone)]
pub struct CreateParams {
    /// Cluster name.
    pub name: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Threshold.
    pub threshold: usize,
    /// Key source.
    pub keys: KeySource,
    /// Genesis fork version, 4 bytes.
    pub fork_version: [u8; 4],
    /// Genesis validators root.
    pub genesis_validators_root: [u8; 32],
    /// Optional p2p address per node (multiaddr strings), recorded in the lock.
    pub addresses: Vec<String>,
    /// Use a cheap KDF for share keystores (devnets only).
    pub insecure_keys: bool,
    /// Output directory (must not exist or be empty).
    pub out: PathBuf,
}

/// Parses `A..B` (end exclusive) or `A..=B` (inclusive).
pub fn parse_range(s: &str) -> Result<Range<u64>> {
    let bad = || {
        anyhow::anyhow!(
            "invalid index range {s:?}: expected START..END (end exclusive) or START..=END"
        )
    };
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(bad());
    };
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    let end = if inclusive {
        b.checked_add(1).ok_or_else(bad)?
    } else {
        b
    };
    ensure!(end > a, "index range {s:?} is empty");
    Ok(a..end)
}

fn load_secrets(source: &KeySource) -> Result<Vec<tbls::SecretKey>> {
    match source {
        KeySource::Interop(range) => {
            ensure!(
                range.end - range.start <= 100_000,
                "interop range {range:?} is too large"
            );
            Ok(range.clone().map(interop_secret).collect())
        }
        KeySource::Random(k) => {
            ensure!(*k >= 1, "--num-validators must be at least 1");
            ensure!(*k <= 100_000, "--num-validators {k} is too large");
            Ok((0..*k).map(|_| tbls::random_secret(&mut OsRng)).collect())
        }
        KeySource::Keystores { dir, password_file } => {
            let password = fs::read_to_string(password_file)
                .with_context(|| format!("reading password file {}", password_file.display()))?;
            let password = password.trim_end_matches(['\n', '\r']);
            let mut files: Vec<PathBuf> = fs::read_dir(dir)
                .with_context(|| format!("reading keystore directory {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            ensure!(
                !files.is_empty(),
                "no *.json keystores in {}",
                dir.display()
            );
            files
                .iter()
                .map(|f| {
                    let ks = Keystore::from_file(f)?;
                    ks.decrypt(password)
                        .with_context(|| format!("decrypting keystore {}", f.display()))
                })
                .collect()
        }
    }
}

fn random_password() -> String {
    let mut b = [0u8; 24];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn prepare_out_dir(out: &Path) -> Result<()> {
    if out.exists() {
        let mut entries = fs::read_dir(out)
            .with_context(|| format!("reading output directory {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "output directory {} is not empty: refusing to overwrite an existing cluster",
                out.display()
            );
        }
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

/// Writes one node's share keystores into `keys_dir` (which must exist): share `j` (of
/// distributed validator `j`) as `keystore-{j}.json`, encrypted under a random password stored in
/// `keystore-{j}.txt` (0600). The files are written unsynced and their paths returned, for the
/// caller to make durable together with [`crate::util::sync_files`].
pub fn write_share_keystores<'a>(
    keys_dir: &Path,
    shares: impl IntoIterator<Item = &'a tbls::SecretKey>,
    kdf: KdfChoice,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (j, share) in shares.into_iter().enumerate() {
        let password = random_password();
        // EIP-2334 path of the signing key; DV shares have no derivation path of their own.
        let ks = Keystore::encrypt(share, &password, "", kdf)
            .with_context(|| format!("encrypting the share of validator {j}"))?;
        let ks_path = keys_dir.join(format!("keystore-{j}.json"));
        crate::util::write_new_file_unsynced(&ks_path, ks.to_json_string().as_bytes(), 0o600)?;
        let pw_path = keys_dir.join(format!("keystore-{j}.txt"));
        crate::util::write_new_file_unsynced(&pw_path, password.as_bytes(), 0o600)?;
        written.push(ks_path);
        written.push(pw_path);
    }
    Ok(written)
}

/// Creates the cluster and writes every node's directory. Returns the sealed lock.
pub fn create_cluster(p: &CreateParams) -> Result<ClusterLock> {
    check_threshold(p.nodes, p.threshold)?;
    ensure!(
        p.addresses.is_empty() || p.addresses.len() == p.nodes,
        "{} p2p addresses given for {} nodes",
        p.addresses.len(),
        p.nodes
    );
    for a in &p.addresses {
        a.parse::<libp2p::Multiaddr>()
            .with_context(|| format!("p2p address {a:?} is not a multiaddr"))?;
    }
    let secrets = load_secrets(&p.keys)?;
    prepare_out_dir(&p.out)?;

    let kdf = if p.insecure_keys {
        KdfChoice::Insecure
    } else {
        KdfChoice::Scrypt
    };
    let p2p_keys: Vec<_> = (0..p.nodes).map(|_| p2p_key::generate()).collect();
    let operators = p2p_keys
        .iter()
        .enumerate()
        .map(|(i, k)| Operator {
            peer_id: p2p_key::peer_id(k).to_string(),
            address: p.addresses.get(i).cloned(),
        })
        .collect();

    // shares[j][i]: node i's share of DV j.
    let mut validators = Vec::with_capacity(secrets.len());
    let mut shares = Vec::with_capacity(secrets.len());
    for sk in &secrets {
        let s = tbls::split(sk, p.nodes, p.threshold, &mut OsRng)?;
        validators.push(DistributedValidator {
            distributed_public_key: to_hex(&sk.sk_to_pk().to_bytes()),
            public_shares: s.iter().map(|x| to_hex(&x.sk_to_pk().to_bytes())).collect(),
        });
        shares.push(s);
    }

    let content = LockContent {
        version: LOCK_VERSION.to_string(),
        name: p.name.clone(),
        uuid: uuid::Uuid::new_v4().to_string(),
        threshold: p.threshold,
        fork_version: to_hex(&p.fork_version),
        genesis_validators_root: to_hex(&p.genesis_validators_root),
        operators,
        distributed_validators: validators,
        definition_hash: None,
    };
    let lock = ClusterLock::seal(content, &p2p_keys)?;
    lock.save(&p.out.join("cluster-lock.json"))?;

    // Share keystores and passwords are written unsynced into the fresh output directory and
    // made durable together at the end: an fsync per file (and per rename) took ~17 min for
    // 10,000 validators on a VM disk.
    let mut written = Vec::with_capacity(2 * p.nodes * shares.len());
    for (i, key) in p2p_keys.iter().enumerate() {
        let node_dir = p.out.join(format!("node{i}"));
        let keys_dir = node_dir.join("validator_keys");
        fs::create_dir_all(&keys_dir)
            .with_context(|| format!("creating {}", keys_dir.display()))?;
        lock.save(&node_dir.join("cluster-lock.json"))?;
        p2p_key::save(key, &node_dir.join("p2p-key"))?;
        written.extend(
            write_share_keystores(&keys_dir, shares.iter().map(|s| &s[i]), kdf)
                .with_context(|| format!("node {i}"))?,
        );
    }
    crate::util::sync_files(&written)?;
    // Re-load what was written: the lock must verify exactly as a node will see it.
    ClusterLock::load(&p.out.join("cluster-lock.json"))?;
    Ok(lock)
}

/// Parses a `0x…` fork version argument.
pub fn parse_fork_version(s: &str) -> Result<[u8; 4]> {
    parse_hex_array(s, "--fork-version")
}

/// Parses a `0x…` genesis validators root argument.
pub fn parse_root(s: &str) -> Result<[u8; 32]> {
    parse_hex_array(s, "--genesis-validators-root")
}
