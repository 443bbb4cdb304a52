//! Key material of the DV clusters for Kubernetes Secrets, created at render time with
//! `dvnode create-cluster`'s library function (the Docker backend runs the same command in the
//! dvnode image once the chain is up): the lock records the chain's fork version and genesis
//! validators root ([`crate::genesis`]) and the dvnodes' Service DNS names
//! (`/dns4/<service>/tcp/3610`).

use crate::genesis;
use crate::plan::{ClusterPlan, DVNODE_P2P_PORT};
use crate::spec::Preset;
use anyhow::{anyhow, Context, Result};
use dvnode::cluster::create::{create_cluster, CreateParams, KeySource};
use std::collections::BTreeMap;
use std::path::Path;

/// Files of one node, by path relative to the directory they are mounted at.
pub type Files = BTreeMap<String, Vec<u8>>;

/// One node's key material.
#[derive(Debug, Clone)]
pub struct NodeKeys {
    /// The dvnode's node directory (`cluster-lock.json`, `p2p-key`, `validator_keys/…`).
    pub node_dir: Files,
    /// Its validator client's share keystores under one password (`keystores/…`,
    /// `password.txt`), as Lodestar's `--importKeystores` wants them.
    pub vc: Files,
}

/// The libp2p address of a dvnode reached through its Service.
pub fn dns_address(service: &str) -> String {
    format!("/dns4/{service}/tcp/{DVNODE_P2P_PORT}")
}

/// Every file under `root`, by path relative to it.
pub fn read_tree(root: &Path) -> Result<Files> {
    fn walk(root: &Path, dir: &Path, out: &mut Files) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = e?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| anyhow!("{} is outside {}", path.display(), root.display()))?;
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                out.insert(rel.to_string_lossy().into_owned(), data);
            }
        }
        Ok(())
    }
    let mut out = Files::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// Creates `cluster`'s key material for a chain of `genesis_validators` interop validators
/// under `preset`; node `i` is reached at the Service named `cluster.node_containers[i]`.
/// `dvlab_genesis`: the devnet's genesis state is built from a DKG ceremony's deposits in the
/// cluster, so its validators root is unknown at render time: the lock records none and
/// dvnode takes the beacon node's.
pub fn cluster_keys(
    cluster: &ClusterPlan,
    preset: Preset,
    genesis_validators: u64,
    dvlab_genesis: bool,
) -> Result<Vec<NodeKeys>> {
    let tmp = tempfile::tempdir().context("creating a temporary directory for key material")?;
    let out = tmp.path().join(&cluster.name);
    create_cluster(&CreateParams {
        name: cluster.name.clone(),
        nodes: cluster.nodes as usize,
        threshold: cluster.threshold as usize,
        keys: KeySource::Interop(cluster.indices.clone()),
        fork_version: genesis::genesis_fork_version(preset).0,
        genesis_validators_root: if dvlab_genesis {
            [0; 32]
        } else {
            genesis::interop_genesis_validators_root(genesis_validators).0
        },
        addresses: cluster
            .node_containers
            .iter()
            .map(|s| dns_address(s))
            .collect(),
        insecure_keys: true,
        out: out.clone(),
    })
    .with_context(|| format!("creating the key material of cluster {}", cluster.name))?;
    (0..cluster.nodes)
        .map(|n| {
            let node_dir = out.join(format!("node{n}"));
            let vc_dir = out.join(format!("vc{n}"));
            crate::runtime::reencrypt_keystores(&node_dir.join("validator_keys"), &vc_dir)?;
            Ok(NodeKeys {
                node_dir: read_tree(&node_dir)?,
                vc: read_tree(&vc_dir)?,
            })
        })
        .collect()
}
