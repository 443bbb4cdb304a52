//! The validator API's settings.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Result;

use super::pubkeys::PubkeyMap;
use crate::cluster::Cluster;

/// Default listen address of the validator API.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 3600);

/// Configuration of the validator API.
#[derive(Debug, Clone)]
pub struct ValidatorApiConfig {
    /// Listen address (default [`DEFAULT_LISTEN`], loopback).
    pub listen: SocketAddr,
    /// Beacon node base URL (`http://host:port`), or a comma-separated list of them (primary
    /// first, then fallbacks).
    pub bn_url: String,
    /// This node's 1-based share index.
    pub share_index: u64,
    /// Share pubkey ↔ DV pubkey of this node.
    pub pubkeys: PubkeyMap,
    /// Time allowed to connect to the beacon node.
    pub connect_timeout: Duration,
    /// Time allowed until the beacon node's response head arrives (bodies are streamed
    /// without a deadline, for event streams).
    pub bn_timeout: Duration,
    /// Time allowed for a [`DutyBackend`] call before answering 503.
    pub backend_timeout: Duration,
    /// Largest request body accepted (413 above).
    pub max_request_body: usize,
    /// Largest beacon node response the API buffers to rewrite pubkeys in (502 above).
    pub max_response_body: usize,
}

impl ValidatorApiConfig {
    /// Defaults for node `share_index` (1-based) of `cluster`, talking to the beacon node at
    /// `bn_url`.
    pub fn new(bn_url: &str, cluster: &Cluster, share_index: u64) -> Result<ValidatorApiConfig> {
        Ok(ValidatorApiConfig {
            listen: DEFAULT_LISTEN,
            bn_url: bn_url.to_owned(),
            share_index,
            pubkeys: PubkeyMap::from_cluster(cluster, share_index)?,
            connect_timeout: Duration::from_secs(5),
            bn_timeout: Duration::from_secs(30),
            backend_timeout: Duration::from_secs(30),
            max_request_body: 16 << 20,
            max_response_body: 64 << 20,
        })
    }
}
