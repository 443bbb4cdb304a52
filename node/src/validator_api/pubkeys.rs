//! Share pubkey ↔ DV pubkey mapping.
//!
//! The VC knows only this node's share pubkeys; the beacon node knows only the DV pubkeys.
//! Requests are rewritten share → DV, responses DV → share.

use std::collections::HashMap;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::{cluster::Cluster, keys::tbls::PublicKey};

/// Length of a compressed BLS public key.
const PUBKEY_LEN: usize = 48;

type PubkeyBytes = [u8; PUBKEY_LEN];

/// The bidirectional map between this node's share pubkeys and the DV pubkeys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PubkeyMap {
    share_to_dv: HashMap<PubkeyBytes, PubkeyBytes>,
    dv_to_share: HashMap<PubkeyBytes, PubkeyBytes>,
}

impl PubkeyMap {
    /// The map of node `share_index` (1-based) of `cluster`.
    pub fn from_cluster(cluster: &Cluster, share_index: u64) -> Result<PubkeyMap> {
        let nodes = cluster.peers.len() as u64;
        ensure!(
            (1..=nodes).contains(&share_index),
            "share index {share_index} out of range: the cluster has {nodes} nodes (share indices 1..={nodes})"
        );
        let pairs = cluster
            .validators
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let share = v
                    .public_shares
                    .get(share_index as usize - 1)
                    .with_context(|| {
                        format!(
                            "validator {j} of the cluster lock has no public share {share_index}"
                        )
                    })?;
                Ok((*share, v.pubkey))
            })
            .collect::<Result<Vec<_>>>()?;
        PubkeyMap::new(pairs)
    }

    /// The identity map over the cluster's DV pubkeys: in remote-signer mode the VC knows the
    /// DV keys themselves, so nothing is rewritten (and they do not count as unknown).
    pub fn identity(cluster: &Cluster) -> Result<PubkeyMap> {
        PubkeyMap::new(cluster.validators.iter().map(|v| (v.pubkey, v.pubkey)))
    }

    /// A map from `(share pubkey, DV pubkey)` pairs. Fails on a duplicate share or DV pubkey.
    pub fn new(pairs: impl IntoIterator<Item = (PublicKey, PublicKey)>) -> Result<PubkeyMap> {
        let mut map = PubkeyMap::default();
        for (share, dv) in pairs {
            let (share, dv) = (share.to_bytes(), dv.to_bytes());
            ensure!(
                map.share_to_dv.insert(share, dv).is_none(),
                "share pubkey 0x{} appears twice",
                hex::encode(share)
            );
            ensure!(
                map.dv_to_share.insert(dv, share).is_none(),
                "DV pubkey 0x{} appears twice",
                hex::encode(dv)
            );
        }
        Ok(map)
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.share_to_dv.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.share_to_dv.is_empty()
    }

    /// The DV pubkey (`0x…` lowercase hex) of a share pubkey given as hex, if it is one of ours.
    pub fn share_to_dv(&self, share_hex: &str) -> Option<String> {
        parse_pubkey_hex(share_hex)
            .and_then(|k| self.share_to_dv.get(&k))
            .map(|dv| format!("0x{}", hex::encode(dv)))
    }

    /// The share pubkey (`0x…` lowercase hex) of a DV pubkey given as hex, if it is one of ours.
    pub fn dv_to_share(&self, dv_hex: &str) -> Option<String> {
        parse_pubkey_hex(dv_hex)
            .and_then(|k| self.dv_to_share.get(&k))
            .map(|share| format!("0x{}", hex::encode(share)))
    }

    /// Rewrites one validator id of a request (a pubkey or an index) share → DV.
    ///
    /// Indices pass unchanged. Pubkeys that are not one of our shares pass unchanged too (the
    /// beacon node reports them as unknown) and are returned as `Err` so the caller can count them.
    pub(crate) fn request_id(&self, id: &str) -> Result<String, String> {
        if !looks_like_pubkey(id) {
            return Ok(id.to_owned());
        }
        self.share_to_dv(id).ok_or_else(|| id.to_owned())
    }

    /// Replaces the string at `value[key]` DV → share if it is one of our DV pubkeys.
    /// Returns whether it was replaced.
    pub(crate) fn map_response_field(&self, value: &mut Value, key: &str) -> bool {
        let Some(field) = value.get_mut(key) else {
            return false;
        };
        let Some(share) = field.as_str().and_then(|s| self.dv_to_share(s)) else {
            return false;
        };
        *field = Value::String(share);
        true
    }
}

/// Whether `s` has the shape of a hex pubkey (`0x` + 96 hex digits), as opposed to an index.
fn looks_like_pubkey(s: &str) -> bool {
    s.starts_with("0x") || s.starts_with("0X")
}

fn parse_pubkey_hex(s: &str) -> Option<PubkeyBytes> {
    let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    let mut out = [0u8; PUBKEY_LEN];
    hex::decode_to_slice(h, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::interop::interop_secret;
    use serde_json::json;

    fn pk(i: u64) -> PublicKey {
        interop_secret(i).sk_to_pk()
    }

    fn hexpk(i: u64) -> String {
        format!("0x{}", hex::encode(pk(i).to_bytes()))
    }

    #[test]
    fn maps_both_directions_case_insensitively() {
        let m = PubkeyMap::new([(pk(1), pk(2)), (pk(3), pk(4))]).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.share_to_dv(&hexpk(1)), Some(hexpk(2)));
        assert_eq!(m.dv_to_share(&hexpk(4)), Some(hexpk(3)));
        assert_eq!(
            m.share_to_dv(&hexpk(1).to_uppercase().replacen("0X", "0x", 1)),
            Some(hexpk(2))
        );
        assert_eq!(m.share_to_dv(&hexpk(2)), None, "a DV pubkey is not a share");
        assert_eq!(m.share_to_dv("0x12"), None);
        assert_eq!(m.share_to_dv("12"), None);
    }

    #[test]
    fn request_ids_keep_indices_and_report_unknown_pubkeys() {
        let m = PubkeyMap::new([(pk(1), pk(2))]).unwrap();
        assert_eq!(m.request_id("17"), Ok("17".into()));
        assert_eq!(m.request_id(&hexpk(1)), Ok(hexpk(2)));
        assert_eq!(m.request_id(&hexpk(9)), Err(hexpk(9)));
    }

    #[test]
    fn response_field_mapping_leaves_foreign_keys() {
        let m = PubkeyMap::new([(pk(1), pk(2))]).unwrap();
        let mut ours = json!({"pubkey": hexpk(2)});
        let mut theirs = json!({"pubkey": hexpk(5)});
        assert!(m.map_response_field(&mut ours, "pubkey"));
        assert!(!m.map_response_field(&mut theirs, "pubkey"));
        assert_eq!(ours["pubkey"], hexpk(1));
        assert_eq!(theirs["pubkey"], hexpk(5));
    }

    #[test]
    fn duplicates_are_rejected() {
        assert!(PubkeyMap::new([(pk(1), pk(2)), (pk(1), pk(3))]).is_err());
        assert!(PubkeyMap::new([(pk(1), pk(2)), (pk(3), pk(2))]).is_err());
    }
}
