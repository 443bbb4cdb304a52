//! The cluster definition (`cluster-definition.json`): what the operators agree on before a
//! distributed key generation (`dvnode dkg`).
//!
//! It names the operators (libp2p peer ids, in node order), the threshold, how many validators
//! to create, the network's genesis fork version, the withdrawal address and the deposit amount.
//!
//! # Integrity
//! `definition_hash` is SHA-256 over the canonical content: the compact JSON of
//! [`DefinitionContent`] (fixed field order, lowercase `0x` hex, no whitespace; the operators'
//! signatures are not part of it). Every operator signs the hash with its p2p key
//! (`dvnode definition sign`, `operators[i].signature`), in the same style as the lock's
//! signatures; the peer id inlines the public key, so every node checks every signature from the
//! file alone. [`ClusterDefinition::verify`] refuses a definition whose content does not match
//! its hash, that an operator has not signed or whose signature does not verify, naming the
//! operator or the field.

use std::{collections::HashSet, fs, path::Path};

use anyhow::{anyhow, bail, ensure, Context, Result};
use libp2p::identity::{Keypair, PeerId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lock::{check_threshold, parse_hex, parse_hex_array, peer_public_key, to_hex};

/// Current definition format version.
pub const DEFINITION_VERSION: &str = "dvlab-definition/v1";

/// Domain separating definition signatures from every other use of the p2p key.
const DEFINITION_SIG_DOMAIN: &[u8] = b"dvlab-cluster-definition-v1";

/// The deposit amount of a full validator: 32 ETH in gwei.
pub const FULL_DEPOSIT_GWEI: u64 = 32_000_000_000;

/// The smallest deposit the deposit contract accepts: 1 ETH in gwei.
pub const MIN_DEPOSIT_GWEI: u64 = 1_000_000_000;

/// Most validators one ceremony creates (bounds message sizes and memory).
pub const MAX_VALIDATORS: usize = 10_000;

/// Most operators of one cluster.
pub const MAX_OPERATORS: usize = 64;

/// One operator of the cluster to be created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionOperator {
    /// libp2p peer id (base58) of the operator's `p2p-key`.
    pub peer_id: String,
    /// The operator's signature over `definition_hash` with its p2p key, `0x` hex; absent until
    /// the operator ran `dvnode definition sign`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The hashed content of a definition. Field order is the canonical order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionContent {
    /// Format version ([`DEFINITION_VERSION`]).
    pub version: String,
    /// Cluster name (copied into the lock).
    pub name: String,
    /// Random cluster id (copied into the lock).
    pub uuid: String,
    /// Creation time, UNIX seconds.
    pub created_at: u64,
    /// Operator peer ids in node order.
    pub operators: Vec<String>,
    /// Partial signatures needed to sign.
    pub threshold: usize,
    /// Number of distributed validators to create.
    pub num_validators: usize,
    /// Genesis fork version of the network, `0x` + 8 hex characters (deposit signatures and the
    /// lock).
    pub fork_version: String,
    /// Genesis validators root recorded in the lock (zero: unknown, `dvnode run` takes the beacon
    /// node's).
    pub genesis_validators_root: String,
    /// Execution address for `0x01` withdrawal credentials, `0x` + 40 hex characters. `None`:
    /// `0x00` credentials of the distributed validator key itself, so the cluster controls
    /// withdrawals jointly and can later sign a change to an execution address.
    pub withdrawal_address: Option<String>,
    /// Deposit amount per validator, in gwei.
    pub deposit_amount_gwei: u64,
}

/// The definition file as stored on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDefinition {
    /// Format version.
    pub version: String,
    /// Cluster name.
    pub name: String,
    /// Random cluster id.
    pub uuid: String,
    /// Creation time, UNIX seconds.
    pub created_at: u64,
    /// Operators in node order, with their signatures.
    pub operators: Vec<DefinitionOperator>,
    /// Threshold.
    pub threshold: usize,
    /// Number of distributed validators.
    pub num_validators: usize,
    /// Genesis fork version.
    pub fork_version: String,
    /// Genesis validators root for the lock.
    pub genesis_validators_root: String,
    /// Withdrawal address (see [`DefinitionContent::withdrawal_address`]).
    #[serde(default)]
    pub withdrawal_address: Option<String>,
    /// Deposit amount per validator, in gwei.
    pub deposit_amount_gwei: u64,
    /// SHA-256 of the canonical content, `0x` hex.
    pub definition_hash: String,
}

/// A verified definition with its values parsed.
#[derive(Clone, Debug)]
pub struct Definition {
    /// The file as loaded.
    pub file: ClusterDefinition,
    /// The definition hash.
    pub hash: [u8; 32],
    /// Operator peer ids in node order.
    pub peers: Vec<PeerId>,
    /// Threshold.
    pub threshold: usize,
    /// Number of validators.
    pub num_validators: usize,
    /// Genesis fork version.
    pub fork_version: [u8; 4],
    /// Genesis validators root.
    pub genesis_validators_root: [u8; 32],
    /// The validators' withdrawal credentials are `0x01 ‖ 0¹¹ ‖ address` if set, else `0x00` ones
    /// of each validator's own key.
    pub withdrawal_address: Option<[u8; 20]>,
    /// Deposit amount in gwei.
    pub deposit_amount_gwei: u64,
}

/// Parameters of `dvnode definition create`.
#[derive(Clone, Debug)]
pub struct CreateDefinition {
    /// Cluster name.
    pub name: String,
    /// Operator peer ids in node order.
    pub operators: Vec<String>,
    /// Threshold.
    pub threshold: usize,
    /// Number of validators.
    pub num_validators: usize,
    /// Genesis fork version, `0x…`.
    pub fork_version: String,
    /// Genesis validators root, `0x…` (zero if unknown).
    pub genesis_validators_root: String,
    /// Withdrawal address, `0x…`.
    pub withdrawal_address: Option<String>,
    /// Deposit amount per validator in gwei.
    pub deposit_amount_gwei: u64,
}

fn signing_message(hash: &[u8; 32]) -> Vec<u8> {
    [DEFINITION_SIG_DOMAIN, hash.as_slice()].concat()
}

impl DefinitionContent {
    /// Canonical serialisation that `definition_hash` commits to.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("definition content serialises")
    }

    /// SHA-256 of the canonical content.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// Checks every field (names the first bad one) and returns the parsed definition values
    /// (with `file` still to be filled in by the caller).
    fn parse(&self) -> Result<Parsed> {
        ensure!(
            self.version == DEFINITION_VERSION,
            "version: unsupported definition version {:?} (expected {DEFINITION_VERSION:?})",
            self.version
        );
        ensure!(!self.name.trim().is_empty(), "name: must not be empty");
        uuid::Uuid::parse_str(&self.uuid)
            .with_context(|| format!("uuid: {:?} is not a UUID", self.uuid))?;
        let n = self.operators.len();
        ensure!(
            n <= MAX_OPERATORS,
            "operators: {n} operators exceed the maximum of {MAX_OPERATORS}"
        );
        check_threshold(n, self.threshold).context("threshold")?;
        let mut peers = Vec::with_capacity(n);
        let mut seen = HashSet::new();
        for (i, p) in self.operators.iter().enumerate() {
            let peer: PeerId = p
                .parse()
                .map_err(|e| anyhow!("operators[{i}]: {p:?} is not a libp2p peer id ({e})"))?;
            peer_public_key(&peer).with_context(|| format!("operators[{i}]: peer id {peer}"))?;
            ensure!(
                seen.insert(peer),
                "operators[{i}]: peer id {peer} appears twice"
            );
            peers.push(peer);
        }
        ensure!(
            (1..=MAX_VALIDATORS).contains(&self.num_validators),
            "num_validators: {} is not in 1..={MAX_VALIDATORS}",
            self.num_validators
        );
        let fork_version = parse_hex_array(&self.fork_version, "fork_version")?;
        let genesis_validators_root =
            parse_hex_array(&self.genesis_validators_root, "genesis_validators_root")?;
        let withdrawal_address = self
            .withdrawal_address
            .as_deref()
            .map(|a| parse_hex_array::<20>(a, "withdrawal_address"))
            .transpose()?;
        ensure!(
            self.deposit_amount_gwei >= MIN_DEPOSIT_GWEI,
            "deposit_amount_gwei: {} is below the minimum deposit of {MIN_DEPOSIT_GWEI} gwei (1 ETH)",
            self.deposit_amount_gwei
        );
        Ok(Parsed {
            peers,
            fork_version,
            genesis_validators_root,
            withdrawal_address,
        })
    }
}

struct Parsed {
    peers: Vec<PeerId>,
    fork_version: [u8; 4],
    genesis_validators_root: [u8; 32],
    withdrawal_address: Option<[u8; 20]>,
}

impl ClusterDefinition {
    /// A new, unsigned definition (checked like a loaded one, except for the signatures).
    pub fn create(p: &CreateDefinition) -> Result<Self> {
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let canonical_hex =
            |s: &str, field: &str| -> Result<String> { Ok(to_hex(&parse_hex(s, field)?)) };
        let content = DefinitionContent {
            version: DEFINITION_VERSION.to_string(),
            name: p.name.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            created_at,
            operators: p.operators.iter().map(|o| o.trim().to_string()).collect(),
            threshold: p.threshold,
            num_validators: p.num_validators,
            fork_version: canonical_hex(&p.fork_version, "--fork-version")?,
            genesis_validators_root: canonical_hex(
                &p.genesis_validators_root,
                "--genesis-validators-root",
            )?,
            withdrawal_address: p
                .withdrawal_address
                .as_deref()
                .map(|a| canonical_hex(a, "--withdrawal-address"))
                .transpose()?,
            deposit_amount_gwei: p.deposit_amount_gwei,
        };
        content.parse()?;
        Ok(Self::from_content(&content))
    }

    fn from_content(c: &DefinitionContent) -> Self {
        ClusterDefinition {
            version: c.version.clone(),
            name: c.name.clone(),
            uuid: c.uuid.clone(),
            created_at: c.created_at,
            operators: c
                .operators
                .iter()
                .map(|p| DefinitionOperator {
                    peer_id: p.clone(),
                    signature: None,
                })
                .collect(),
            threshold: c.threshold,
            num_validators: c.num_validators,
            fork_version: c.fork_version.clone(),
            genesis_validators_root: c.genesis_validators_root.clone(),
            withdrawal_address: c.withdrawal_address.clone(),
            deposit_amount_gwei: c.deposit_amount_gwei,
            definition_hash: to_hex(&c.hash()),
        }
    }

    /// The hashed content of this file.
    pub fn content(&self) -> DefinitionContent {
        DefinitionContent {
            version: self.version.clone(),
            name: self.name.clone(),
            uuid: self.uuid.clone(),
            created_at: self.created_at,
            operators: self.operators.iter().map(|o| o.peer_id.clone()).collect(),
            threshold: self.threshold,
            num_validators: self.num_validators,
            fork_version: self.fork_version.clone(),
            genesis_validators_root: self.genesis_validators_root.clone(),
            withdrawal_address: self.withdrawal_address.clone(),
            deposit_amount_gwei: self.deposit_amount_gwei,
        }
    }

    /// Reads a definition file (JSON only; nothing is verified yet).
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading cluster definition {}", path.display()))?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow!(
                "invalid cluster definition {}: field `{}`: {}",
                path.display(),
                e.path(),
                e.inner()
            )
        })
    }

    /// Writes the definition as pretty JSON (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        crate::util::write_file(path, &bytes, 0o644)
    }

    /// Checks the content against `definition_hash`, every field, and that the hash is the one
    /// the content hashes to; returns the parsed definition. Signatures are checked only if
    /// `require_signatures`; present signatures are always checked.
    fn check(&self, require_signatures: bool) -> Result<Definition> {
        let content = self.content();
        let parsed = content.parse()?;
        let hash = content.hash();
        let stated: [u8; 32] = parse_hex_array(&self.definition_hash, "definition_hash")?;
        ensure!(
            stated == hash,
            "definition_hash: the file says {} but its content hashes to {}: the definition was \
             altered after it was created",
            self.definition_hash,
            to_hex(&hash)
        );
        let msg = signing_message(&hash);
        for (i, (op, peer)) in self.operators.iter().zip(&parsed.peers).enumerate() {
            match &op.signature {
                None if require_signatures => bail!(
                    "operators[{i}] ({peer}) has not signed the definition (run `dvnode \
                     definition sign` with that operator's node directory)"
                ),
                None => {}
                Some(sig) => {
                    let sig = parse_hex(sig, &format!("operators[{i}].signature"))?;
                    let pk = peer_public_key(peer)?;
                    ensure!(
                        pk.verify(&msg, &sig),
                        "operators[{i}].signature by {peer} does not verify over definition_hash \
                         {}: it was made for other content, or by another key",
                        self.definition_hash
                    );
                }
            }
        }
        Ok(Definition {
            hash,
            peers: parsed.peers,
            threshold: self.threshold,
            num_validators: self.num_validators,
            fork_version: parsed.fork_version,
            genesis_validators_root: parsed.genesis_validators_root,
            withdrawal_address: parsed.withdrawal_address,
            deposit_amount_gwei: self.deposit_amount_gwei,
            file: self.clone(),
        })
    }

    /// Fully verifies a definition for the ceremony: hash, fields and every operator's
    /// signature.
    pub fn verify(&self) -> Result<Definition> {
        self.check(true)
    }

    /// Adds the signature of the operator whose p2p key is `key` (checking the hash and any
    /// signatures already present first). Signing again replaces that operator's signature.
    pub fn sign(&mut self, key: &Keypair) -> Result<usize> {
        let def = self.check(false)?;
        let me = key.public().to_peer_id();
        let i = def.peers.iter().position(|p| *p == me).ok_or_else(|| {
            anyhow!("this node's peer id {me} is not an operator of the definition")
        })?;
        let sig = key
            .sign(&signing_message(&def.hash))
            .context("signing the definition hash")?;
        self.operators[i].signature = Some(to_hex(&sig));
        Ok(i)
    }
}

impl Definition {
    /// Reads and fully verifies a definition file.
    pub fn load(path: &Path) -> Result<Definition> {
        ClusterDefinition::read(path)?
            .verify()
            .with_context(|| format!("invalid cluster definition {}", path.display()))
    }

    /// Number of operators.
    pub fn nodes(&self) -> usize {
        self.peers.len()
    }

    /// The canonical content bytes (what `hash` is the SHA-256 of).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        self.file.content().canonical_bytes()
    }

    /// The 32-byte withdrawal credentials of a validator with public key `pubkey`.
    pub fn withdrawal_credentials(&self, pubkey: &[u8; 48]) -> [u8; 32] {
        let mut wc = [0u8; 32];
        match self.withdrawal_address {
            Some(addr) => {
                wc[0] = 0x01;
                wc[12..].copy_from_slice(&addr);
            }
            None => {
                wc.copy_from_slice(&Sha256::digest(pubkey));
                wc[0] = 0x00;
            }
        }
        wc
    }
}

/// Names the top-level fields in which two canonical definition contents differ (for the error
/// when peers run different definitions). Unparseable input is reported as such.
pub fn differing_fields(mine: &[u8], theirs: &[u8]) -> Vec<String> {
    let (Ok(a), Ok(b)) = (
        serde_json::from_slice::<serde_json::Value>(mine),
        serde_json::from_slice::<serde_json::Value>(theirs),
    ) else {
        return vec!["(unparseable definition)".into()];
    };
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["(not a JSON object)".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| {
                v.map_or("(absent)".to_string(), |v| {
                    let s = v.to_string();
                    if s.len() > 80 {
                        format!("{}…", &s[..80])
                    } else {
                        s
                    }
                })
            };
            format!("{k} (ours {}, theirs {})", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::key as p2p_key;

    fn params(keys: &[Keypair]) -> CreateDefinition {
        CreateDefinition {
            name: "test".into(),
            operators: keys
                .iter()
                .map(|k| p2p_key::peer_id(k).to_string())
                .collect(),
            threshold: 3,
            num_validators: 2,
            fork_version: "0x00000001".into(),
            genesis_validators_root: to_hex(&[0; 32]),
            withdrawal_address: None,
            deposit_amount_gwei: FULL_DEPOSIT_GWEI,
        }
    }

    fn keys(n: usize) -> Vec<Keypair> {
        (0..n).map(|_| p2p_key::generate()).collect()
    }

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn create_sign_verify_roundtrip() {
        let keys = keys(4);
        let mut def = ClusterDefinition::create(&params(&keys)).unwrap();
        let e = err(def.verify());
        assert!(
            e.contains("operators[0]") && e.contains("has not signed"),
            "{e}"
        );
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(def.sign(k).unwrap(), i);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("def.json");
        def.save(&path).unwrap();
        let loaded = Definition::load(&path).unwrap();
        assert_eq!(loaded.nodes(), 4);
        assert_eq!(loaded.threshold, 3);
        assert_eq!(loaded.fork_version, [0, 0, 0, 1]);
        assert_eq!(to_hex(&loaded.hash), def.definition_hash);
        assert_eq!(
            Sha256::digest(loaded.canonical_bytes()).as_slice(),
            loaded.hash
        );
        // A stranger cannot sign.
        let e = err(def.sign(&p2p_key::generate()));
        assert!(e.contains("not an operator"), "{e}");
    }

    #[test]
    fn altered_definitions_are_refused_naming_the_field_or_operator() {
        let keys = keys(4);
        let mut def = ClusterDefinition::create(&params(&keys)).unwrap();
        for k in &keys {
            def.sign(k).unwrap();
        }
        def.verify().unwrap();

        let mut altered = def.clone();
        altered.num_validators = 3;
        let e = err(altered.verify());
        assert!(
            e.contains("definition_hash") && e.contains("altered"),
            "{e}"
        );
        // Re-hashing the altered content does not help: the signatures no longer verify.
        altered.definition_hash = to_hex(&altered.content().hash());
        let e = err(altered.verify());
        assert!(
            e.contains("operators[0].signature") && e.contains("does not verify"),
            "{e}"
        );

        let mut swapped = def.clone();
        swapped.operators[2].signature = swapped.operators[1].signature.clone();
        let e = err(swapped.verify());
        assert!(e.contains("operators[2].signature"), "{e}");

        let mut bad = def.clone();
        bad.threshold = 2;
        bad.definition_hash = to_hex(&bad.content().hash());
        let e = err(bad.verify());
        assert!(e.contains("threshold"), "{e}");

        let mut bad = def.clone();
        bad.fork_version = "0x0102".into();
        bad.definition_hash = to_hex(&bad.content().hash());
        let e = err(bad.verify());
        assert!(e.contains("fork_version"), "{e}");

        let mut bad = def;
        bad.operators[3].peer_id = bad.operators[0].peer_id.clone();
        bad.definition_hash = to_hex(&bad.content().hash());
        let e = err(bad.verify());
        assert!(e.contains("operators[3]") && e.contains("twice"), "{e}");
    }

    #[test]
    fn create_rejects_bad_parameters() {
        let keys = keys(4);
        let mut p = params(&keys);
        p.threshold = 5;
        assert!(err(ClusterDefinition::create(&p)).contains("threshold"));
        let mut p = params(&keys);
        p.num_validators = 0;
        assert!(err(ClusterDefinition::create(&p)).contains("num_validators"));
        let mut p = params(&keys);
        p.operators[1] = "not-a-peer".into();
        assert!(err(ClusterDefinition::create(&p)).contains("operators[1]"));
        let mut p = params(&keys);
        p.withdrawal_address = Some("0x1234".into());
        assert!(err(ClusterDefinition::create(&p)).contains("withdrawal_address"));
        let mut p = params(&keys);
        p.deposit_amount_gwei = 1;
        assert!(err(ClusterDefinition::create(&p)).contains("deposit_amount_gwei"));
    }

    #[test]
    fn withdrawal_credentials() {
        let keys = keys(3);
        let mut p = params(&keys);
        p.threshold = 2;
        let mut def = ClusterDefinition::create(&p).unwrap();
        for k in &keys {
            def.sign(k).unwrap();
        }
        let pk = [7u8; 48];
        let wc = def.verify().unwrap().withdrawal_credentials(&pk);
        assert_eq!(wc[0], 0);
        assert_eq!(wc[1..], Sha256::digest(pk)[1..]);

        p.withdrawal_address = Some("0x00000000000000000000000000000000000000AB".into());
        let mut def = ClusterDefinition::create(&p).unwrap();
        assert_eq!(
            def.withdrawal_address.as_deref(),
            Some("0x00000000000000000000000000000000000000ab")
        );
        for k in &keys {
            def.sign(k).unwrap();
        }
        let wc = def.verify().unwrap().withdrawal_credentials(&pk);
        assert_eq!(wc[0], 1);
        assert_eq!(wc[1..31], [0; 30]);
        assert_eq!(wc[31], 0xab);
    }

    #[test]
    fn differing_fields_names_them() {
        let a = br#"{"name":"a","threshold":3,"x":1}"#;
        let b = br#"{"name":"a","threshold":4}"#;
        let d = differing_fields(a, b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("threshold (ours 3, theirs 4)"), "{d:?}");
        assert!(d[1].starts_with("x (ours 1, theirs (absent))"), "{d:?}");
    }
}
