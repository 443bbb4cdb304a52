//! The chain's configuration as a beacon node serves it: genesis and the spec constants.
//!
//! Beneath both the [`signing`](super::signing) rules (the fork schedule is built from them)
//! and the [`beacon`](super::beacon) client that fetches them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{Root, Version};

/// `GET /eth/v1/beacon/genesis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Genesis time (unix seconds).
    #[serde(with = "serde_utils::quoted_u64")]
    pub genesis_time: u64,
    /// Genesis validators root.
    pub genesis_validators_root: Root,
    /// Fork version of the genesis state (Lodestar: the version of the fork active at genesis).
    pub genesis_fork_version: Version,
}

/// `GET /eth/v1/config/spec`: the beacon node's preset and configuration, every key as
/// returned (values are strings in the API).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecConfig(pub BTreeMap<String, serde_json::Value>);

impl SpecConfig {
    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The value of `key` as a string.
    pub fn string(&self, key: &str) -> Result<String, String> {
        match self.0.get(key) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("expected a string, got {other}")),
            None => Err("missing".to_string()),
        }
    }

    /// The value of `key` as a decimal `u64` (quoted or not).
    pub fn u64(&self, key: &str) -> Result<u64, String> {
        match self.0.get(key) {
            Some(serde_json::Value::String(s)) => s
                .parse()
                .map_err(|e| format!("expected a decimal u64, got {s:?}: {e}")),
            Some(serde_json::Value::Number(n)) => {
                n.as_u64().ok_or_else(|| format!("expected a u64, got {n}"))
            }
            Some(other) => Err(format!("expected a decimal u64, got {other}")),
            None => Err("missing".to_string()),
        }
    }

    /// The value of `key` as a 4-byte fork version.
    pub fn version(&self, key: &str) -> Result<Version, String> {
        let s = self.string(key)?;
        s.parse()
            .map_err(|e| format!("expected a 0x fork version, got {s:?}: {e}"))
    }
}
