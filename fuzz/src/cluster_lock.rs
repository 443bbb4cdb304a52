//! Cluster lock files: [`ClusterLock::parse`] (JSON, version, threshold, hex fields, lock hash,
//! operator signatures, peer ids, multiaddrs, BLS keys and shares) and what a node derives
//! from a verified lock (its validator API's share ↔ DV pubkey map).
//!
//! Input: `mode byte` + lock JSON. Mode bit 0 clear: the text as read from disk. Set: the
//! content is re-sealed first — its hash recomputed and signed by the fixture's operators
//! whose peer ids appear in it (one secp256k1 key, three ed25519 keys) — so that the fuzzer
//! reaches every check behind the hash and the signatures.
//!
//! Properties: a lock that verifies has a hash equal to its content's, one valid signature per
//! operator, distinct operators, a safe threshold (n ≥ 3, n/2 < t ≤ n), distinct DV keys with
//! one share per operator; every node's pubkey map builds from it.

use std::sync::OnceLock;

use dvnode::cluster::lock::{check_threshold, Cluster, ClusterLock, LockContent};
use dvnode::validator_api::PubkeyMap;
use libp2p::identity::{secp256k1, Keypair, PeerId};

/// The fixture's operator keys: node 0 secp256k1 (what `create-cluster` makes), 1..3 ed25519.
pub fn operators() -> &'static [(PeerId, Keypair)] {
    static K: OnceLock<Vec<(PeerId, Keypair)>> = OnceLock::new();
    K.get_or_init(|| {
        let mut keys: Vec<Keypair> = vec![secp256k1::Keypair::from(
            secp256k1::SecretKey::try_from_bytes([0x21; 32]).expect("key"),
        )
        .into()];
        for i in 1..4u8 {
            keys.push(Keypair::ed25519_from_bytes([0x30 + i; 32]).expect("key"));
        }
        keys.into_iter()
            .map(|k| (k.public().to_peer_id(), k))
            .collect()
    })
}

fn reseal(text: &str) -> Option<String> {
    let mut lock: ClusterLock = serde_json::from_str(text).ok()?;
    // At most a handful of operators are re-signed (signing is the expensive part).
    let keys: Vec<Keypair> = lock
        .content
        .operators
        .iter()
        .take(8)
        .map(|op| {
            operators()
                .iter()
                .find(|(id, _)| id.to_string() == op.peer_id)
                .map(|(_, k)| k.clone())
        })
        .collect::<Option<_>>()?;
    if keys.len() != lock.content.operators.len() {
        return None;
    }
    let content: LockContent = lock.content.clone();
    let sealed = ClusterLock::seal(content, &keys).ok()?;
    lock.lock_hash = sealed.lock_hash;
    // Keep extra or missing signatures the input has beyond the operators.
    for (i, s) in sealed.signatures.into_iter().enumerate() {
        match lock.signatures.get_mut(i) {
            Some(slot) => *slot = s,
            None => lock.signatures.push(s),
        }
    }
    serde_json::to_string(&lock).ok()
}

fn check(cluster: &Cluster) {
    let c = &cluster.lock.content;
    let n = c.operators.len();
    assert_eq!(
        cluster.lock.lock_hash,
        format!("0x{}", hex::encode(c.hash())),
        "verified lock with a wrong hash"
    );
    assert!(
        check_threshold(n, c.threshold).is_ok(),
        "unsafe threshold accepted"
    );
    assert_eq!(cluster.peers.len(), n);
    assert_eq!(cluster.lock.signatures.len(), n);
    let mut peers = cluster.peers.clone();
    peers.sort();
    peers.dedup();
    assert_eq!(peers.len(), n, "duplicate operators accepted");
    assert!(!cluster.validators.is_empty());
    for v in &cluster.validators {
        assert_eq!(v.public_shares.len(), n);
    }
    for share in 1..=n as u64 {
        PubkeyMap::from_cluster(cluster, share).expect("every node's pubkey map builds");
    }
}

/// One execution.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let text = if mode & 1 == 1 {
        match reseal(text) {
            Some(t) => t,
            None => return,
        }
    } else {
        text.to_owned()
    };
    match ClusterLock::parse(&text) {
        Ok(cluster) => check(&cluster),
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
}

/// A lock of the fixture's DVs and operators, sealed, raw and to be re-sealed.
pub fn seeds() -> Vec<Vec<u8>> {
    let dvs = crate::fixture::dvs();
    let content = LockContent {
        version: dvnode::cluster::lock::LOCK_VERSION.to_string(),
        name: "fuzz".into(),
        uuid: "4ad4b4d6-2a36-4b7e-9d4c-6a0c3c2b8f11".into(),
        threshold: 3,
        fork_version: "0x00000001".into(),
        genesis_validators_root: format!("0x{}", hex::encode(crate::fixture::GVR.0)),
        operators: operators()
            .iter()
            .enumerate()
            .map(|(i, (id, _))| dvnode::cluster::lock::Operator {
                peer_id: id.to_string(),
                address: (i % 2 == 0).then(|| format!("/ip4/127.0.0.1/tcp/{}", 3610 + i)),
            })
            .collect(),
        definition_hash: None,
        distributed_validators: dvs
            .iter()
            .map(|d| dvnode::cluster::lock::DistributedValidator {
                distributed_public_key: d.pubkey.to_string(),
                public_shares: d
                    .public_shares
                    .iter()
                    .map(|s| format!("0x{}", hex::encode(s.to_bytes())))
                    .collect(),
            })
            .collect(),
    };
    let keys: Vec<Keypair> = operators().iter().map(|(_, k)| k.clone()).collect();
    let lock = ClusterLock::seal(content, &keys).expect("seal");
    let pretty = serde_json::to_vec_pretty(&lock).expect("JSON");
    vec![
        [&[0u8][..], &pretty].concat(),
        [&[1u8][..], &pretty].concat(),
        [&[1u8][..], &serde_json::to_vec(&lock).expect("JSON")].concat(),
    ]
}
