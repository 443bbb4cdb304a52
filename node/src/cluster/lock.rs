//! The cluster lock file (`cluster-lock.json`).
//!
//! The lock binds a cluster together: threshold, fork version, genesis validators root, the ordered
//! operators (libp2p peer ids and optional addresses) and every distributed validator with its
//! ordered public key shares (`public_shares[i]` belongs to node `i`, share index `i + 1`).
//!
//! # Integrity
//! `lock_hash` is SHA-256 over the *canonical content*: the compact JSON serialisation of
//! [`LockContent`] (fixed field order, lowercase `0x` hex, no whitespace). Whitespace or key
//! order changes in the file therefore do not matter, while any change of content does.
//! Every operator signs `lock_hash` with its secp256k1 p2p key (`operators[i].signature`); the
//! peer id inlines the public key, so a node can check every signature from the lock alone.
//! [`ClusterLock::load`] refuses a lock whose hash, signatures, threshold or keys do not check out.
//!
//! A lock made by `dvnode dkg` also records the `definition_hash` of the cluster definition it
//! was generated from (part of the hashed content); `create-cluster` locks have none.

use std::{fs, path::Path};

use anyhow::{bail, ensure, Context, Result};
use libp2p::identity::{Keypair, PeerId, PublicKey as P2pPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::tbls;

/// Current lock format version.
pub const LOCK_VERSION: &str = "dvlab/v1";

/// Domain separating operator lock signatures from every other use of the p2p key.
const LOCK_SIG_DOMAIN: &[u8] = b"dvlab-cluster-lock-v1";

/// One operator (node) of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    /// libp2p peer id (secp256k1, base58).
    pub peer_id: String,
    /// Optional libp2p multiaddress the node listens on, e.g. `/ip4/127.0.0.1/tcp/3610`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// One distributed validator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributedValidator {
    /// The validator's (group) BLS public key, `0x` + 96 hex characters.
    pub distributed_public_key: String,
    /// Public key shares in node order.
    pub public_shares: Vec<String>,
}

/// The hashed content of a lock: everything except the hash and the operator signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockContent {
    /// Lock format version ([`LOCK_VERSION`]).
    pub version: String,
    /// Human-readable cluster name.
    pub name: String,
    /// Random cluster id.
    pub uuid: String,
    /// Number of partial signatures needed to sign.
    pub threshold: usize,
    /// Genesis fork version of the network, `0x` + 8 hex characters.
    pub fork_version: String,
    /// Genesis validators root of the network, `0x` + 64 hex characters.
    pub genesis_validators_root: String,
    /// Operators in node order.
    pub operators: Vec<Operator>,
    /// The distributed validators.
    pub distributed_validators: Vec<DistributedValidator>,
    /// Hash of the cluster definition the keys were generated from by `dvnode dkg`, `0x` hex;
    /// absent for clusters made by `create-cluster` (whose lock hashes are unchanged by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_hash: Option<String>,
}

/// The lock file as stored on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterLock {
    /// The hashed content (flattened into the top-level JSON object).
    #[serde(flatten)]
    pub content: LockContent,
    /// Operator signatures over `lock_hash`, in node order, `0x` hex.
    pub signatures: Vec<String>,
    /// SHA-256 of the canonical content, `0x` hex.
    pub lock_hash: String,
}

/// A validated lock with its keys parsed.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The lock as loaded.
    pub lock: ClusterLock,
    /// Operator peer ids in node order.
    pub peers: Vec<PeerId>,
    /// Threshold.
    pub threshold: usize,
    /// Genesis fork version.
    pub fork_version: [u8; 4],
    /// Genesis validators root.
    pub genesis_validators_root: [u8; 32],
    /// Distributed validators with parsed keys.
    pub validators: Vec<ValidatorKeys>,
}

/// Parsed keys of one distributed validator.
#[derive(Clone, Debug)]
pub struct ValidatorKeys {
    /// The group public key.
    pub pubkey: tbls::PublicKey,
    /// Public shares in node order.
    pub public_shares: Vec<tbls::PublicKey>,
}

impl LockContent {
    /// Canonical serialisation that `lock_hash` commits to.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("lock content serialises")
    }

    /// SHA-256 of the canonical content.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// One operator's `signatures` entry: its p2p key's signature over the lock hash, `0x` hex.
    pub fn sign(&self, key: &Keypair) -> Result<String> {
        let sig = key
            .sign(&signing_message(&self.hash()))
            .context("signing the lock hash")?;
        Ok(to_hex(&sig))
    }
}

/// Whether `sig` is `peer`'s signature over `lock_hash` (as [`LockContent::sign`] makes it).
pub fn verify_lock_signature(lock_hash: &[u8; 32], peer: &PeerId, sig: &[u8]) -> bool {
    peer_public_key(peer).is_ok_and(|pk| pk.verify(&signing_message(lock_hash), sig))
}

fn signing_message(lock_hash: &[u8; 32]) -> Vec<u8> {
    [LOCK_SIG_DOMAIN, lock_hash.as_slice()].concat()
}

impl ClusterLock {
    /// Seals `content`: computes the hash and has every operator sign it. `keys` must be the
    /// operators' p2p keys in node order.
    pub fn seal(content: LockContent, keys: &[Keypair]) -> Result<Self> {
        ensure!(
            keys.len() == content.operators.len(),
            "need one p2p key per operator ({} keys for {} operators)",
            keys.len(),
            content.operators.len()
        );
        let signatures = keys
            .iter()
            .map(|k| content.sign(k))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_signatures(content, signatures))
    }

    /// The lock of `content` with the operators' `signatures` (node order), e.g. collected from
    /// the operators in a DKG. Nothing is verified here: see [`verify`](Self::verify).
    pub fn from_signatures(content: LockContent, signatures: Vec<String>) -> Self {
        let lock_hash = to_hex(&content.hash());
        Self {
            content,
            signatures,
            lock_hash,
        }
    }

    /// Reads and fully verifies a lock file.
    pub fn load(path: &Path) -> Result<Cluster> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading cluster lock {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid cluster lock {}", path.display()))
    }

    /// Parses and fully verifies lock JSON.
    pub fn parse(text: &str) -> Result<Cluster> {
        let lock: ClusterLock = serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "malformed JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            )
        })?;
        lock.verify()
    }

    /// Writes the lock as pretty JSON (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        crate::util::write_file(path, &bytes, 0o644)
    }

    /// Verifies hash, signatures and every field; returns the parsed cluster.
    pub fn verify(self) -> Result<Cluster> {
        let c = &self.content;
        ensure!(
            c.version == LOCK_VERSION,
            "unsupported lock version {:?} (expected {LOCK_VERSION:?})",
            c.version
        );
        let n = c.operators.len();
        check_threshold(n, c.threshold)?;
        let fork_version: [u8; 4] = parse_hex_array(&c.fork_version, "fork_version")?;
        if let Some(h) = &c.definition_hash {
            parse_hex_array::<32>(h, "definition_hash")?;
        }
        let genesis_validators_root: [u8; 32] =
            parse_hex_array(&c.genesis_validators_root, "genesis_validators_root")?;

        let expected = c.hash();
        let stated: [u8; 32] = parse_hex_array(&self.lock_hash, "lock_hash")?;
        ensure!(
            stated == expected,
            "lock_hash mismatch: file says {} but its content hashes to 0x{} (the lock was modified)",
            self.lock_hash,
            hex::encode(expected)
        );

        ensure!(
            self.signatures.len() == n,
            "expected {n} operator signatures, found {}",
            self.signatures.len()
        );
        let msg = signing_message(&expected);
        let mut peers = Vec::with_capacity(n);
        for (i, (op, sig)) in c.operators.iter().zip(&self.signatures).enumerate() {
            let peer: PeerId = op.peer_id.parse().with_context(|| {
                format!("operators[{i}].peer_id {:?} is not a peer id", op.peer_id)
            })?;
            ensure!(
                !peers.contains(&peer),
                "operators[{i}].peer_id {peer} appears twice"
            );
            let pk =
                peer_public_key(&peer).with_context(|| format!("operators[{i}].peer_id {peer}"))?;
            let sig = parse_hex(sig, &format!("signatures[{i}]"))?;
            ensure!(
                pk.verify(&msg, &sig),
                "signatures[{i}] by operator {peer} does not verify"
            );
            if let Some(addr) = &op.address {
                addr.parse::<libp2p::Multiaddr>().with_context(|| {
                    format!("operators[{i}].address {addr:?} is not a multiaddr")
                })?;
            }
            peers.push(peer);
        }

        ensure!(
            !c.distributed_validators.is_empty(),
            "distributed_validators is empty"
        );
        let mut validators = Vec::with_capacity(c.distributed_validators.len());
        for (j, dv) in c.distributed_validators.iter().enumerate() {
            let pubkey = parse_pubkey(
                &dv.distributed_public_key,
                &format!("distributed_validators[{j}].distributed_public_key"),
            )?;
            ensure!(
                dv.public_shares.len() == n,
                "distributed_validators[{j}].public_shares has {} entries, expected {n}",
                dv.public_shares.len()
            );
            let public_shares = dv
                .public_shares
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    parse_pubkey(
                        s,
                        &format!("distributed_validators[{j}].public_shares[{i}]"),
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            validators.push(ValidatorKeys {
                pubkey,
                public_shares,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for (j, dv) in c.distributed_validators.iter().enumerate() {
            ensure!(
                seen.insert(dv.distributed_public_key.to_lowercase()),
                "distributed_validators[{j}] repeats pubkey {}",
                dv.distributed_public_key
            );
        }
        Ok(Cluster {
            threshold: c.threshold,
            fork_version,
            genesis_validators_root,
            peers,
            validators,
            lock: self,
        })
    }
}

/// Refuses unsafe cluster sizes: n ≥ 3 and n/2 < t ≤ n.
pub fn check_threshold(n: usize, t: usize) -> Result<()> {
    ensure!(n >= 3, "a cluster needs at least 3 nodes (got {n})");
    ensure!(t <= n, "threshold {t} exceeds the number of nodes {n}");
    ensure!(
        2 * t > n,
        "threshold {t} is unsafe for {n} nodes: it must be more than half ({}..={n}); two disjoint groups could each sign",
        n / 2 + 1
    );
    Ok(())
}

/// The default threshold ⌈2n/3⌉.
pub fn default_threshold(n: usize) -> usize {
    (2 * n).div_ceil(3)
}

/// Extracts the public key inlined in a secp256k1/ed25519 peer id.
pub fn peer_public_key(peer: &PeerId) -> Result<P2pPublicKey> {
    let mh = peer.as_ref();
    ensure!(
        mh.code() == 0x00,
        "peer id does not inline its public key (not secp256k1/ed25519)"
    );
    P2pPublicKey::try_decode_protobuf(mh.digest()).context("peer id holds an invalid public key")
}

/// Parses `0x`-prefixed (or bare) hex.
pub fn parse_hex(s: &str, field: &str) -> Result<Vec<u8>> {
    hex::decode(s.strip_prefix("0x").unwrap_or(s))
        .with_context(|| format!("{field}: {s:?} is not hex"))
}

/// Parses hex into a fixed-size array.
pub fn parse_hex_array<const N: usize>(s: &str, field: &str) -> Result<[u8; N]> {
    let v = parse_hex(s, field)?;
    let len = v.len();
    v.try_into()
        .map_err(|_| anyhow::anyhow!("{field}: expected {N} bytes, found {len}"))
}

fn parse_pubkey(s: &str, field: &str) -> Result<tbls::PublicKey> {
    let bytes = parse_hex(s, field)?;
    if bytes.len() != 48 {
        bail!(
            "{field}: expected a 48-byte BLS public key, found {} bytes",
            bytes.len()
        );
    }
    let pk = tbls::PublicKey::key_validate(&bytes)
        .map_err(|e| anyhow::anyhow!("{field}: invalid BLS public key ({e:?})"))?;
    Ok(pk)
}

/// `0x`-prefixed lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}
