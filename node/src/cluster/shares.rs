//! A node's secret key shares, decrypted from its node directory (remote-signer mode).
//!
//! `create-cluster` writes `validator_keys/keystore-{j}.json` (EIP-2335) with its password in
//! `keystore-{j}.txt` beside it. [`ShareKeys::load`] decrypts every keystore, matches each share
//! to the DV whose public share for this node it is (from the verified cluster lock), and refuses
//! to start on a keystore it cannot open or a DV without a share. Secrets live only in memory
//! (blst zeroizes them on drop), never appear in logs or `Debug` output, and passwords are wiped
//! after use.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use zeroize::Zeroizing;

use super::Cluster;
use crate::eth::types::{BlsPubkey, BlsSignature, Root};
use crate::keys::keystore::Keystore;
use crate::keys::tbls::{self, SecretKey};

/// This node's secret share of every DV of the cluster. See the [module docs](self).
pub struct ShareKeys {
    share_index: u64,
    keys: HashMap<BlsPubkey, SecretKey>,
}

impl fmt::Debug for ShareKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareKeys")
            .field("share_index", &self.share_index)
            .field("validators", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The `*.json` keystores of `dir`, sorted.
fn keystore_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the key share directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading the key share directory {}", dir.display()))?;
    files.retain(|p| p.extension().and_then(|e| e.to_str()) == Some("json"));
    files.sort();
    Ok(files)
}

/// Decrypts the keystore at `path` with the password in the sibling `.txt` file.
fn decrypt(path: &Path) -> Result<SecretKey> {
    let pw_path = path.with_extension("txt");
    let password = Zeroizing::new(
        std::fs::read_to_string(&pw_path)
            .with_context(|| format!("reading the password file {}", pw_path.display()))?,
    );
    let keystore = Keystore::from_file(path)?;
    keystore
        .decrypt(password.trim_end_matches(['\n', '\r']))
        .with_context(|| {
            format!(
                "decrypting {} with the password in {}",
                path.display(),
                pw_path.display()
            )
        })
}

impl ShareKeys {
    /// Decrypts the keystores in `dir` and keeps those that are share `share_index` (1-based)
    /// of a DV of `cluster`. Fails if a keystore cannot be read or decrypted, if one belongs to
    /// no DV of the cluster, or if a DV has no share here.
    pub fn load(dir: &Path, cluster: &Cluster, share_index: u64) -> Result<ShareKeys> {
        let own = usize::try_from(share_index)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .filter(|i| *i < cluster.peers.len())
            .with_context(|| format!("share index {share_index} is not a node of the cluster"))?;
        // Public share → DV pubkey.
        let ours: HashMap<[u8; 48], BlsPubkey> = cluster
            .validators
            .iter()
            .filter_map(|v| {
                v.public_shares
                    .get(own)
                    .map(|s| (s.to_bytes(), BlsPubkey(v.pubkey.to_bytes())))
            })
            .collect();
        let mut keys = HashMap::new();
        for path in keystore_files(dir)? {
            let secret = decrypt(&path)?;
            let public = secret.sk_to_pk().to_bytes();
            let Some(dv) = ours.get(&public) else {
                bail!(
                    "{} holds the key 0x{}, which is not this node's share of any DV in the cluster lock",
                    path.display(),
                    hex::encode(public)
                );
            };
            if keys.insert(*dv, secret).is_some() {
                bail!(
                    "two keystores in {} hold the share of DV {dv}",
                    dir.display()
                );
            }
        }
        let missing: Vec<String> = ours
            .values()
            .filter(|dv| !keys.contains_key(*dv))
            .map(|dv| dv.to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} has no key share of DV(s) {} (share {share_index} of each is needed)",
                dir.display(),
                missing.join(", ")
            );
        }
        Ok(ShareKeys { share_index, keys })
    }

    /// Share keys from secrets already in memory (tests and tools).
    pub fn from_secrets(share_index: u64, keys: HashMap<BlsPubkey, SecretKey>) -> ShareKeys {
        ShareKeys { share_index, keys }
    }

    /// This node's 1-based share index.
    pub fn share_index(&self) -> u64 {
        self.share_index
    }

    /// Number of DVs.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether this node holds a share of `dv`.
    pub fn contains(&self, dv: &BlsPubkey) -> bool {
        self.keys.contains_key(dv)
    }

    /// This node's partial signature of `signing_root` for DV `dv`, `None` if it holds no share
    /// of it.
    pub fn sign(&self, dv: &BlsPubkey, signing_root: &Root) -> Option<BlsSignature> {
        self.keys
            .get(dv)
            .map(|sk| BlsSignature(tbls::sign(sk, &signing_root.0).to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::create::{create_cluster, CreateParams, KeySource};
    use crate::cluster::ClusterLock;

    fn cluster(dir: &Path) -> Cluster {
        create_cluster(&CreateParams {
            name: "t".into(),
            nodes: 4,
            threshold: 3,
            keys: KeySource::Interop(0..3),
            fork_version: [0, 0, 0, 1],
            genesis_validators_root: [0; 32],
            addresses: vec![],
            insecure_keys: true,
            out: dir.to_path_buf(),
        })
        .unwrap();
        ClusterLock::load(&dir.join("cluster-lock.json")).unwrap()
    }

    #[test]
    fn loads_every_share_and_signs_verifiably() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cluster(tmp.path());
        let keys = ShareKeys::load(&tmp.path().join("node2/validator_keys"), &c, 3).unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.share_index(), 3);
        let root = Root([7; 32]);
        for v in &c.validators {
            let dv = BlsPubkey(v.pubkey.to_bytes());
            let sig = keys.sign(&dv, &root).unwrap();
            let sig = tbls::Signature::from_bytes(&sig.0).unwrap();
            assert!(tbls::verify(&v.public_shares[2], &root.0, &sig));
        }
        assert!(keys.sign(&BlsPubkey([1; 48]), &root).is_none());
        // Debug shows no key material.
        let dbg = format!("{keys:?}");
        assert!(
            dbg.contains("validators: 3") && !dbg.contains("0x"),
            "{dbg}"
        );
    }

    #[test]
    fn refuses_wrong_passwords_foreign_and_missing_shares() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cluster(tmp.path());
        let dir = tmp.path().join("node0/validator_keys");
        // Another node's share directory: every keystore is foreign to share 1.
        let err = ShareKeys::load(&tmp.path().join("node1/validator_keys"), &c, 1).unwrap_err();
        assert!(
            format!("{err:#}").contains("not this node's share"),
            "{err:#}"
        );
        // A missing keystore.
        std::fs::rename(dir.join("keystore-1.json"), tmp.path().join("k1.json")).unwrap();
        let err = ShareKeys::load(&dir, &c, 1).unwrap_err();
        assert!(format!("{err:#}").contains("has no key share"), "{err:#}");
        std::fs::rename(tmp.path().join("k1.json"), dir.join("keystore-1.json")).unwrap();
        // A wrong password names the keystore and the password file.
        std::fs::write(dir.join("keystore-0.txt"), "hunter2-not-it").unwrap();
        let err = format!("{:#}", ShareKeys::load(&dir, &c, 1).unwrap_err());
        assert!(
            err.contains("keystore-0.json") && err.contains("keystore-0.txt"),
            "{err}"
        );
        assert!(
            !err.contains("hunter2"),
            "the password is not echoed: {err}"
        );
        // No password file.
        std::fs::remove_file(dir.join("keystore-0.txt")).unwrap();
        let err = format!("{:#}", ShareKeys::load(&dir, &c, 1).unwrap_err());
        assert!(err.contains("password file"), "{err}");
        // A share index outside the cluster.
        assert!(ShareKeys::load(&dir, &c, 5).is_err());
    }
}
