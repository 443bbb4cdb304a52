//! The duty backend behind the intercepted endpoints, and a pass-through implementation.

use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use super::{
    error::BackendError,
    upstream::{error_chain, Upstream},
};

/// The message of every request a DV cannot serve with a VC that lacks DV selections.
pub const NEEDS_DV_SELECTIONS: &str =
    "distributed validators need the DV selections endpoints (not in this VC)";

/// The error the default [`DutyBackend`] methods answer for aggregation duties.
pub fn unsupported(what: &str) -> BackendError {
    BackendError::Unsupported(format!(
        "{NEEDS_DV_SELECTIONS}: {what} needs a selection proof combined from all shares, which \
         this validator client cannot ask for; the request was not forwarded to the beacon node"
    ))
}

/// A block produced for the VC to sign: the fork name and the (unsigned) block.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducedBlock {
    /// Fork name (`phase0`, `altair`, `bellatrix`, …), answered as `version` and in the
    /// `Eth-Consensus-Version` header.
    pub version: String,
    /// The `BeaconBlock` JSON object.
    pub data: Value,
}

/// What the validator API asks of the duty workflow for the endpoints it intercepts.
///
/// Values are beacon-API JSON objects (the `data` of the corresponding response, or the items
/// the VC submitted). Calls that carry a partial signature made with this node's key share
/// (randao reveal, submissions) receive `share_index`, the 1-based share index of this node;
/// pubkeys and validator indices in them are those the VC knows (share pubkeys, DV indices).
///
/// The validator API bounds each call by its backend timeout and answers a timeout with 503.
/// The four aggregation methods have default implementations that answer
/// [`BackendError::Unsupported`]: a Lodestar 1.5.1 VC computes selection proofs with its key
/// share, so its aggregation requests cannot be served by a distributed validator.
#[async_trait]
pub trait DutyBackend: Send + Sync + 'static {
    /// `GET /eth/v1/validator/attestation_data`: the `AttestationData` to sign.
    async fn attestation_data(
        &self,
        slot: u64,
        committee_index: u64,
    ) -> Result<Value, BackendError>;

    /// `GET /eth/v2/validator/blocks/{slot}`: the block to sign. `randao_reveal` is this node's
    /// partial randao reveal (`0x…` hex signature).
    async fn produce_block(
        &self,
        share_index: u64,
        slot: u64,
        randao_reveal: String,
        graffiti: Option<String>,
    ) -> Result<ProducedBlock, BackendError>;

    /// `POST /eth/v1/beacon/pool/attestations`: partially signed `Attestation`s.
    async fn submit_attestations(
        &self,
        share_index: u64,
        attestations: Vec<Value>,
    ) -> Result<(), BackendError>;

    /// `POST /eth/v1/beacon/blocks`: a partially signed `SignedBeaconBlock`.
    async fn submit_block(&self, share_index: u64, block: Value) -> Result<(), BackendError>;

    /// `POST /eth/v1/beacon/pool/sync_committees`: partially signed `SyncCommitteeMessage`s.
    async fn submit_sync_committee_messages(
        &self,
        share_index: u64,
        messages: Vec<Value>,
    ) -> Result<(), BackendError>;

    /// `POST /eth/v1/beacon/pool/voluntary_exits`: a `SignedVoluntaryExit` (partially signed
    /// with this node's share, or the combined exit of a remote-signer VC).
    async fn submit_voluntary_exit(
        &self,
        share_index: u64,
        exit: Value,
    ) -> Result<(), BackendError>;

    /// `GET /eth/v1/validator/aggregate_attestation`. Unsupported by default.
    async fn aggregate_attestation(
        &self,
        slot: u64,
        attestation_data_root: String,
    ) -> Result<Value, BackendError> {
        let _ = (slot, attestation_data_root);
        Err(unsupported("aggregate_attestation"))
    }

    /// `GET /eth/v1/validator/sync_committee_contribution`. Unsupported by default.
    async fn sync_committee_contribution(
        &self,
        slot: u64,
        subcommittee_index: u64,
        beacon_block_root: String,
    ) -> Result<Value, BackendError> {
        let _ = (slot, subcommittee_index, beacon_block_root);
        Err(unsupported("sync_committee_contribution"))
    }

    /// `POST /eth/v1/validator/aggregate_and_proofs`. Unsupported by default.
    async fn submit_aggregate_and_proofs(
        &self,
        share_index: u64,
        aggregates: Vec<Value>,
    ) -> Result<(), BackendError> {
        let _ = (share_index, aggregates);
        Err(unsupported("submit_aggregate_and_proofs"))
    }

    /// `POST /eth/v1/validator/contribution_and_proofs`. Unsupported by default.
    async fn submit_contribution_and_proofs(
        &self,
        share_index: u64,
        contributions: Vec<Value>,
    ) -> Result<(), BackendError> {
        let _ = (share_index, contributions);
        Err(unsupported("submit_contribution_and_proofs"))
    }
}

/// Forwards each intercepted call to the beacon node unchanged (for tests and tools).
///
/// Submissions reach the beacon node with the share signatures the VC made, which the beacon
/// node rejects; aggregation duties keep the unsupported defaults.
#[derive(Debug, Clone)]
pub struct PassthroughBackend {
    bn: Upstream,
}

impl PassthroughBackend {
    /// A pass-through to the beacon node at `bn_url`, waiting at most `timeout` per call.
    pub fn new(bn_url: &str, timeout: Duration) -> Result<PassthroughBackend> {
        Ok(PassthroughBackend {
            bn: Upstream::new(bn_url, timeout, timeout)?,
        })
    }

    async fn round_trip(
        &self,
        method: Method,
        path_and_query: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Value, BackendError> {
        let url = self.bn.base();
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("application/json"));
        if json.is_some() {
            headers.insert("content-type", HeaderValue::from_static("application/json"));
        }
        let resp = self
            .bn
            .send(method, path_and_query, headers, json.map(Bytes::from))
            .await
            .map_err(|e| e.into_backend(&url))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| BackendError::BeaconNodeUnreachable {
                url: url.clone(),
                reason: format!("reading the response: {}", error_chain(&e)),
            })?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if !status.is_success() {
            return Err(BackendError::BeaconNode {
                status: status.as_u16(),
                body,
            });
        }
        Ok(body)
    }

    async fn get_data(&self, path_and_query: &str) -> Result<Value, BackendError> {
        let mut body = self.round_trip(Method::GET, path_and_query, None).await?;
        match body.get_mut("data") {
            Some(data) => Ok(data.take()),
            None => Err(BackendError::BeaconNodeUnreachable {
                url: self.bn.base(),
                reason: format!("answer to {path_and_query} has no `data` field"),
            }),
        }
    }

    async fn post(&self, path: &str, body: &impl serde::Serialize) -> Result<(), BackendError> {
        let json = serde_json::to_vec(body)
            .map_err(|e| BackendError::Internal(format!("cannot encode the body: {e}")))?;
        self.round_trip(Method::POST, path, Some(json))
            .await
            .map(drop)
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

#[async_trait]
impl DutyBackend for PassthroughBackend {
    async fn attestation_data(
        &self,
        slot: u64,
        committee_index: u64,
    ) -> Result<Value, BackendError> {
        let q = query(&[
            ("slot", &slot.to_string()),
            ("committee_index", &committee_index.to_string()),
        ]);
        self.get_data(&format!("/eth/v1/validator/attestation_data?{q}"))
            .await
    }

    async fn produce_block(
        &self,
        _share_index: u64,
        slot: u64,
        randao_reveal: String,
        graffiti: Option<String>,
    ) -> Result<ProducedBlock, BackendError> {
        let mut pairs = vec![("randao_reveal", randao_reveal.as_str())];
        if let Some(g) = &graffiti {
            pairs.push(("graffiti", g));
        }
        let path = format!("/eth/v2/validator/blocks/{slot}?{}", query(&pairs));
        let mut body = self.round_trip(Method::GET, &path, None).await?;
        let version = body
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match (version, body.get_mut("data")) {
            (Some(version), Some(data)) => Ok(ProducedBlock {
                version,
                data: data.take(),
            }),
            _ => Err(BackendError::BeaconNodeUnreachable {
                url: self.bn.base(),
                reason: format!("answer to {path} lacks `version` or `data`"),
            }),
        }
    }

    async fn submit_attestations(
        &self,
        _share_index: u64,
        attestations: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.post("/eth/v1/beacon/pool/attestations", &attestations)
            .await
    }

    async fn submit_block(&self, _share_index: u64, block: Value) -> Result<(), BackendError> {
        self.post("/eth/v1/beacon/blocks", &block).await
    }

    async fn submit_sync_committee_messages(
        &self,
        _share_index: u64,
        messages: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.post("/eth/v1/beacon/pool/sync_committees", &messages)
            .await
    }

    async fn submit_voluntary_exit(
        &self,
        _share_index: u64,
        exit: Value,
    ) -> Result<(), BackendError> {
        self.post("/eth/v1/beacon/pool/voluntary_exits", &exit)
            .await
    }
}
