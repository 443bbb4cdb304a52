//! Async client for the standard beacon-node REST API (the subset dvnode needs), and the API's
//! response types.
//!
//! Every error names the method and endpoint (path and query) and, for HTTP errors, the status
//! and the start of the body. Requests have a timeout; the SSE event stream has only a connect
//! timeout. See the [module docs](super) for the Lodestar quirks this client works around.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::stream::{BoxStream, StreamExt};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::signing::{ForkName, ForkSchedule};
use super::types::{
    from_json_slice, from_json_str, from_json_value, Attestation, AttestationData,
    BeaconBlockAltair, BlsPubkey, BlsSignature, CommitteeIndex, Epoch, Fork, Graffiti, Preset,
    Root, SignedBeaconBlockAltair, SignedBeaconBlockHeader, SignedVoluntaryExit, Slot,
    SyncCommitteeMessage, ValidatorIndex, Version,
};

/// Default timeout of one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default timeout to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How many bytes of an error body an error message keeps.
const BODY_SNIPPET_LEN: usize = 512;

/// A failed beacon-node call.
#[derive(Debug, thiserror::Error)]
pub enum BeaconError {
    /// The base URL or a derived URL is invalid.
    #[error("invalid beacon node URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The request could not be sent or its response not read.
    #[error("{method} {endpoint}: request failed: {source}")]
    Transport {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
        /// Underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// No response within the timeout.
    #[error("{method} {endpoint}: timed out")]
    Timeout {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
    },
    /// The beacon node answered with a non-success status.
    #[error("{method} {endpoint}: HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
        /// HTTP status.
        status: StatusCode,
        /// Start of the response body.
        body: String,
    },
    /// The response body is not what the API specifies.
    #[error("{method} {endpoint}: invalid response at `{path}`: {message} (body starts: {body})")]
    Decode {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
        /// JSON path of the offending field.
        path: String,
        /// What is wrong.
        message: String,
        /// Start of the response body.
        body: String,
    },
    /// The response is well-formed but not usable (wrong fork, inconsistent data).
    #[error("{method} {endpoint}: {message}")]
    Unexpected {
        /// HTTP method.
        method: Method,
        /// Path and query.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The SSE event stream failed or sent an event that does not decode.
    #[error("event stream {endpoint}: {message}")]
    EventStream {
        /// Path and query.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
}

impl BeaconError {
    /// The HTTP status, when the beacon node answered with an error status.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            BeaconError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the beacon node answered 404 (unknown block, state, ...).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }
}

type Result<T, E = BeaconError> = std::result::Result<T, E>;

/// A block identifier of the API (`head`, `genesis`, `finalized`, a slot or a root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockId {
    /// Canonical head.
    Head,
    /// Genesis block.
    Genesis,
    /// Latest finalized block.
    Finalized,
    /// Canonical block at a slot.
    Slot(Slot),
    /// Block by root.
    Root(Root),
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockId::Head => f.write_str("head"),
            BlockId::Genesis => f.write_str("genesis"),
            BlockId::Finalized => f.write_str("finalized"),
            BlockId::Slot(slot) => write!(f, "{slot}"),
            BlockId::Root(root) => write!(f, "{root}"),
        }
    }
}

/// A state identifier of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateId {
    /// Head state.
    Head,
    /// Genesis state.
    Genesis,
    /// Latest finalized state.
    Finalized,
    /// Latest justified state.
    Justified,
    /// Canonical state at a slot.
    Slot(Slot),
    /// State by state root.
    Root(Root),
}

impl fmt::Display for StateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateId::Head => f.write_str("head"),
            StateId::Genesis => f.write_str("genesis"),
            StateId::Finalized => f.write_str("finalized"),
            StateId::Justified => f.write_str("justified"),
            StateId::Slot(slot) => write!(f, "{slot}"),
            StateId::Root(root) => write!(f, "{root}"),
        }
    }
}

/// A validator identifier: registry index or public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidatorId {
    /// Registry index.
    Index(ValidatorIndex),
    /// Public key.
    Pubkey(BlsPubkey),
}

impl fmt::Display for ValidatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidatorId::Index(i) => write!(f, "{i}"),
            ValidatorId::Pubkey(pk) => write!(f, "{pk}"),
        }
    }
}

/// `{"data": T, ...}` envelope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Data<T> {
    /// Payload.
    pub data: T,
    /// Whether the response refers to an optimistically imported block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

/// `{"version": "...", "data": T, ...}` envelope of fork-dependent responses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Versioned<T> {
    /// Fork name (`"phase0"`, `"altair"`, ...).
    pub version: String,
    /// Payload.
    pub data: T,
    /// Whether the response refers to an optimistically imported block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

impl<T> Versioned<T> {
    /// The fork of the payload, `None` for a fork this code does not know.
    pub fn fork_name(&self) -> Option<ForkName> {
        self.version.parse().ok()
    }
}

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

/// `GET /eth/v1/node/syncing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncingStatus {
    /// Head slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub head_slot: Slot,
    /// Slots behind the wall clock.
    #[serde(with = "serde_utils::quoted_u64")]
    pub sync_distance: u64,
    /// Whether the node is syncing.
    pub is_syncing: bool,
    /// Whether the head is optimistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_optimistic: Option<bool>,
    /// Whether the execution client is offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub el_offline: Option<bool>,
}

/// `GET /eth/v1/node/version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeVersion {
    /// Version string, e.g. `Lodestar/v1.5.1/2115aa7`.
    pub version: String,
}

/// Duties response: dependent root and the duties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duties<T> {
    /// Block root the duties depend on (absent for sync duties).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependent_root: Option<Root>,
    /// Whether the response refers to an optimistically imported block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
    /// Duties.
    pub data: Vec<T>,
}

/// One attester duty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttesterDuty {
    /// Validator public key.
    pub pubkey: BlsPubkey,
    /// Validator index.
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_index: ValidatorIndex,
    /// Committee index within the slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub committee_index: CommitteeIndex,
    /// Committee size.
    #[serde(with = "serde_utils::quoted_u64")]
    pub committee_length: u64,
    /// Committees in the slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub committees_at_slot: u64,
    /// Position of the validator in its committee (its aggregation bit).
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_committee_index: u64,
    /// Slot to attest in.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
}

/// One proposer duty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposerDuty {
    /// Validator public key.
    pub pubkey: BlsPubkey,
    /// Validator index.
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_index: ValidatorIndex,
    /// Slot to propose in.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
}

/// One sync committee duty (for a whole sync committee period).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDuty {
    /// Validator public key.
    pub pubkey: BlsPubkey,
    /// Validator index.
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_index: ValidatorIndex,
    /// Positions of the validator in the sync committee.
    #[serde(with = "serde_utils::quoted_u64_vec")]
    pub validator_sync_committee_indices: Vec<u64>,
}

/// `GET /eth/v1/beacon/headers/{block_id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeaderData {
    /// Block root.
    pub root: Root,
    /// Whether the block is canonical.
    pub canonical: bool,
    /// Signed header.
    pub header: SignedBeaconBlockHeader,
}

/// A validator's status (beacon API names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidatorStatus {
    /// Deposited, not yet eligible.
    PendingInitialized,
    /// Eligible, waiting in the activation queue.
    PendingQueued,
    /// Active.
    ActiveOngoing,
    /// Active, exit initiated.
    ActiveExiting,
    /// Active, slashed.
    ActiveSlashed,
    /// Exited, not slashed.
    ExitedUnslashed,
    /// Exited, slashed.
    ExitedSlashed,
    /// Withdrawable.
    WithdrawalPossible,
    /// Withdrawn.
    WithdrawalDone,
}

impl ValidatorStatus {
    /// Whether the validator has attestation duties.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            ValidatorStatus::ActiveOngoing
                | ValidatorStatus::ActiveExiting
                | ValidatorStatus::ActiveSlashed
        )
    }
}

/// The registry record of a validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    /// Public key.
    pub pubkey: BlsPubkey,
    /// Withdrawal credentials.
    pub withdrawal_credentials: Root,
    /// Effective balance (Gwei).
    #[serde(with = "serde_utils::quoted_u64")]
    pub effective_balance: u64,
    /// Whether slashed.
    pub slashed: bool,
    /// Activation eligibility epoch.
    #[serde(with = "serde_utils::quoted_u64")]
    pub activation_eligibility_epoch: Epoch,
    /// Activation epoch.
    #[serde(with = "serde_utils::quoted_u64")]
    pub activation_epoch: Epoch,
    /// Exit epoch.
    #[serde(with = "serde_utils::quoted_u64")]
    pub exit_epoch: Epoch,
    /// Withdrawable epoch.
    #[serde(with = "serde_utils::quoted_u64")]
    pub withdrawable_epoch: Epoch,
}

/// One entry of `GET /eth/v1/beacon/states/{state_id}/validators`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorData {
    /// Registry index.
    #[serde(with = "serde_utils::quoted_u64")]
    pub index: ValidatorIndex,
    /// Balance (Gwei).
    #[serde(with = "serde_utils::quoted_u64")]
    pub balance: u64,
    /// Status.
    pub status: ValidatorStatus,
    /// Registry record.
    pub validator: Validator,
}

/// A beacon committee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    /// Committee index within its slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub index: CommitteeIndex,
    /// Slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Members in committee order (bit `i` of an aggregation bitlist is `validators[i]`).
    #[serde(with = "serde_utils::quoted_u64_vec")]
    pub validators: Vec<ValidatorIndex>,
}

/// Brings a committees response for `epoch` into spec shape.
///
/// Spec-shaped responses (every slot inside the epoch, every index below the committees per
/// slot) are returned as they are. Lodestar v1.5.1 swaps the two fields in slot-major order:
/// `index` holds the slot's position within the epoch and `slot` the committee's position within
/// its slot (so with one committee per slot it looks like `slot` 0 and epoch-wide indices; with
/// 64 validators on the minimal preset, two per slot, it is `index` 0,0,1,1,… and `slot`
/// 0,1,0,1,…, measured against the BN's attester duties). For that shape slot and index are
/// rebuilt from the position. Anything else is an error.
pub fn normalize_committees(
    mut committees: Vec<Committee>,
    epoch: Epoch,
    slots_per_epoch: u64,
) -> Result<Vec<Committee>, String> {
    let n = committees.len() as u64;
    if n == 0 {
        return Ok(committees);
    }
    if n % slots_per_epoch != 0 {
        return Err(format!(
            "{n} committees is not a multiple of {slots_per_epoch} slots per epoch"
        ));
    }
    let per_slot = n / slots_per_epoch;
    let start = epoch.saturating_mul(slots_per_epoch);
    let end = start.saturating_add(slots_per_epoch);
    let spec_shaped = committees
        .iter()
        .all(|c| (start..end).contains(&c.slot) && c.index < per_slot);
    if spec_shaped {
        return Ok(committees);
    }
    let lodestar_shaped = committees.iter().enumerate().all(|(i, c)| {
        let i = i as u64;
        c.index == i / per_slot && c.slot == i % per_slot
    });
    if !lodestar_shaped {
        return Err(format!(
            "committees of epoch {epoch} have neither the spec nor the Lodestar v1.5.1 shape"
        ));
    }
    for (i, c) in committees.iter_mut().enumerate() {
        let i = i as u64;
        c.slot = start + i / per_slot;
        c.index = i % per_slot;
    }
    Ok(committees)
}

/// Brings proposer duties for `epoch` into spec shape.
///
/// Duties whose slots all lie in `epoch` are returned as they are. Lodestar v1.5.1 answers a
/// request for the *next* epoch with the right proposers but the slots of the current epoch
/// (`startSlot` of the head state's epoch); a full epoch of consecutive slots starting at an
/// epoch boundary is moved into `epoch`. Anything else is an error.
pub fn normalize_proposer_duties(
    mut duties: Vec<ProposerDuty>,
    epoch: Epoch,
    slots_per_epoch: u64,
) -> Result<Vec<ProposerDuty>, String> {
    let start = epoch.saturating_mul(slots_per_epoch);
    let end = start.saturating_add(slots_per_epoch);
    if duties.iter().all(|d| (start..end).contains(&d.slot)) {
        return Ok(duties);
    }
    let first = duties.first().map_or(0, |d| d.slot);
    let shifted_epoch = duties.len() as u64 == slots_per_epoch
        && first % slots_per_epoch == 0
        && duties
            .iter()
            .enumerate()
            .all(|(i, d)| d.slot == first + i as u64);
    if !shifted_epoch {
        return Err(format!(
            "proposer duties of epoch {epoch} have slots outside {start}..{end}"
        ));
    }
    for (i, d) in duties.iter_mut().enumerate() {
        d.slot = start + i as u64;
    }
    Ok(duties)
}

/// `head` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadEvent {
    /// Head slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Head block root.
    pub block: Root,
    /// Head state root.
    pub state: Root,
    /// Whether the head crossed an epoch boundary.
    pub epoch_transition: bool,
    /// Dependent root of the previous epoch's duties.
    pub previous_duty_dependent_root: Root,
    /// Dependent root of the current epoch's duties.
    pub current_duty_dependent_root: Root,
    /// Whether the head is optimistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

/// `block` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockEvent {
    /// Slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Block root.
    pub block: Root,
    /// Whether the block is optimistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

/// `finalized_checkpoint` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizedCheckpointEvent {
    /// Finalized block root.
    pub block: Root,
    /// Finalized state root.
    pub state: Root,
    /// Finalized epoch.
    #[serde(with = "serde_utils::quoted_u64")]
    pub epoch: Epoch,
    /// Whether optimistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

/// `chain_reorg` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReorgEvent {
    /// Slot of the new head.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Reorg depth in slots.
    #[serde(with = "serde_utils::quoted_u64")]
    pub depth: u64,
    /// Old head block.
    pub old_head_block: Root,
    /// New head block.
    pub new_head_block: Root,
    /// Old head state.
    pub old_head_state: Root,
    /// New head state.
    pub new_head_state: Root,
    /// Epoch.
    #[serde(with = "serde_utils::quoted_u64")]
    pub epoch: Epoch,
    /// Whether optimistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_optimistic: Option<bool>,
}

/// Topics of `GET /eth/v1/events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventTopic {
    /// New head.
    Head,
    /// New block imported.
    Block,
    /// Attestation received (gossip or API).
    Attestation,
    /// Voluntary exit received.
    VoluntaryExit,
    /// Finalized checkpoint changed.
    FinalizedCheckpoint,
    /// Chain reorganisation.
    ChainReorg,
    /// Sync committee contribution received.
    ContributionAndProof,
}

impl EventTopic {
    /// The topic name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EventTopic::Head => "head",
            EventTopic::Block => "block",
            EventTopic::Attestation => "attestation",
            EventTopic::VoluntaryExit => "voluntary_exit",
            EventTopic::FinalizedCheckpoint => "finalized_checkpoint",
            EventTopic::ChainReorg => "chain_reorg",
            EventTopic::ContributionAndProof => "contribution_and_proof",
        }
    }
}

/// A decoded server-sent event.
#[derive(Clone, Debug, PartialEq)]
pub enum BeaconEvent<P: Preset> {
    /// `head`.
    Head(HeadEvent),
    /// `block`.
    Block(BlockEvent),
    /// `attestation`.
    Attestation(Box<Attestation<P>>),
    /// `voluntary_exit`.
    VoluntaryExit(SignedVoluntaryExit),
    /// `finalized_checkpoint`.
    FinalizedCheckpoint(FinalizedCheckpointEvent),
    /// `chain_reorg`.
    ChainReorg(ChainReorgEvent),
    /// Any other event (e.g. `contribution_and_proof`), undecoded.
    Other {
        /// Event name.
        event: String,
        /// Event data.
        data: serde_json::Value,
    },
}

impl<P: Preset> BeaconEvent<P> {
    /// Decodes the `data` of an SSE event named `event`.
    pub fn decode(event: &str, data: &str) -> Result<Self, String> {
        let err = |e: super::types::JsonError| format!("`{event}` event: {e}");
        Ok(match event {
            "head" => BeaconEvent::Head(from_json_str(data).map_err(err)?),
            "block" => BeaconEvent::Block(from_json_str(data).map_err(err)?),
            "attestation" => BeaconEvent::Attestation(Box::new(from_json_str(data).map_err(err)?)),
            "voluntary_exit" => BeaconEvent::VoluntaryExit(from_json_str(data).map_err(err)?),
            "finalized_checkpoint" => {
                BeaconEvent::FinalizedCheckpoint(from_json_str(data).map_err(err)?)
            }
            "chain_reorg" => BeaconEvent::ChainReorg(from_json_str(data).map_err(err)?),
            other => BeaconEvent::Other {
                event: other.to_string(),
                data: from_json_str(data).map_err(err)?,
            },
        })
    }
}

/// An async client of one beacon node's REST API.
#[derive(Clone, Debug)]
pub struct BeaconClient {
    http: reqwest::Client,
    base: Url,
    request_timeout: Duration,
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(BODY_SNIPPET_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut s = text[..end].trim().to_string();
    if end < text.len() {
        s.push('…');
    }
    s
}

fn endpoint_of(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

impl BeaconClient {
    /// A client for the beacon node at `base_url` (e.g. `http://127.0.0.1:5052`) with the
    /// default timeouts.
    pub fn new(base_url: &str) -> Result<Self> {
        Self::with_timeouts(base_url, DEFAULT_REQUEST_TIMEOUT, DEFAULT_CONNECT_TIMEOUT)
    }

    /// A client with explicit per-request and connect timeouts.
    pub fn with_timeouts(
        base_url: &str,
        request_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self> {
        let invalid = |reason: String| BeaconError::InvalidUrl {
            url: base_url.to_string(),
            reason,
        };
        let mut base = Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("expected an http:// URL".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| invalid(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            request_timeout,
        })
    }

    /// The beacon node's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url> {
        let mut url =
            self.base
                .join(path.trim_start_matches('/'))
                .map_err(|e| BeaconError::InvalidUrl {
                    url: format!("{}{path}", self.base),
                    reason: e.to_string(),
                })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    fn transport_error(method: &Method, endpoint: &str, e: reqwest::Error) -> BeaconError {
        if e.is_timeout() {
            BeaconError::Timeout {
                method: method.clone(),
                endpoint: endpoint.to_string(),
            }
        } else {
            BeaconError::Transport {
                method: method.clone(),
                endpoint: endpoint.to_string(),
                source: e,
            }
        }
    }

    /// Sends a request and returns the body of a 2xx response.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(String, Vec<u8>)> {
        let endpoint = endpoint_of(&url);
        let mut req = self
            .http
            .request(method.clone(), url)
            .timeout(self.request_timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Self::transport_error(&method, &endpoint, e))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Self::transport_error(&method, &endpoint, e))?;
        if !status.is_success() {
            return Err(BeaconError::Status {
                method,
                endpoint,
                status,
                body: snippet(&bytes),
            });
        }
        Ok((endpoint, bytes.to_vec()))
    }

    fn decode<T: DeserializeOwned>(method: Method, endpoint: &str, body: &[u8]) -> Result<T> {
        from_json_slice(body).map_err(|e| BeaconError::Decode {
            method,
            endpoint: endpoint.to_string(),
            path: e.path,
            message: e.message,
            body: snippet(body),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let url = self.url(path, query)?;
        let (endpoint, body) = self.call(Method::GET, url, None).await?;
        Self::decode(Method::GET, &endpoint, &body)
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let url = self.url(path, &[])?;
        let (endpoint, resp) = self.post_raw(url, body).await?;
        Self::decode(Method::POST, &endpoint, &resp)
    }

    async fn post_raw<B: Serialize + ?Sized>(
        &self,
        url: Url,
        body: &B,
    ) -> Result<(String, Vec<u8>)> {
        let json = serde_json::to_vec(body).map_err(|e| BeaconError::Unexpected {
            method: Method::POST,
            endpoint: endpoint_of(&url),
            message: format!("cannot encode request body: {e}"),
        })?;
        self.call(Method::POST, url, Some(json)).await
    }

    async fn post_no_content<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<()> {
        let url = self.url(path, &[])?;
        self.post_raw(url, body).await.map(|_| ())
    }

    /// `GET /eth/v1/beacon/genesis`.
    pub async fn genesis(&self) -> Result<Genesis> {
        Ok(self
            .get::<Data<Genesis>>("/eth/v1/beacon/genesis", &[])
            .await?
            .data)
    }

    /// `GET /eth/v1/config/spec`.
    pub async fn spec(&self) -> Result<SpecConfig> {
        Ok(self
            .get::<Data<SpecConfig>>("/eth/v1/config/spec", &[])
            .await?
            .data)
    }

    /// The chain's [`ForkSchedule`], from `config/spec` and `beacon/genesis`.
    pub async fn fork_schedule(&self) -> Result<ForkSchedule> {
        let spec = self.spec().await?;
        let genesis = self.genesis().await?;
        ForkSchedule::from_spec(&spec, &genesis).map_err(|e| BeaconError::Unexpected {
            method: Method::GET,
            endpoint: "/eth/v1/config/spec".to_string(),
            message: e.to_string(),
        })
    }

    /// `GET /eth/v1/beacon/states/{state_id}/fork`.
    pub async fn fork(&self, state: StateId) -> Result<Fork> {
        Ok(self
            .get::<Data<Fork>>(&format!("/eth/v1/beacon/states/{state}/fork"), &[])
            .await?
            .data)
    }

    /// `GET /eth/v1/node/syncing`.
    pub async fn node_syncing(&self) -> Result<SyncingStatus> {
        Ok(self
            .get::<Data<SyncingStatus>>("/eth/v1/node/syncing", &[])
            .await?
            .data)
    }

    /// `GET /eth/v1/node/version`: the version string.
    pub async fn node_version(&self) -> Result<String> {
        Ok(self
            .get::<Data<NodeVersion>>("/eth/v1/node/version", &[])
            .await?
            .data
            .version)
    }

    /// `POST /eth/v1/validator/duties/attester/{epoch}` for `indices`.
    pub async fn attester_duties(
        &self,
        epoch: Epoch,
        indices: &[ValidatorIndex],
    ) -> Result<Duties<AttesterDuty>> {
        let body: Vec<String> = indices.iter().map(u64::to_string).collect();
        self.post(&format!("/eth/v1/validator/duties/attester/{epoch}"), &body)
            .await
    }

    /// `GET /eth/v1/validator/duties/proposer/{epoch}` (all proposers of the epoch), with slots
    /// inside `epoch` whatever the node answers (see [`normalize_proposer_duties`]).
    pub async fn proposer_duties<P: Preset>(&self, epoch: Epoch) -> Result<Duties<ProposerDuty>> {
        let url = self.url(&format!("/eth/v1/validator/duties/proposer/{epoch}"), &[])?;
        let (endpoint, body) = self.call(Method::GET, url, None).await?;
        let mut duties: Duties<ProposerDuty> = Self::decode(Method::GET, &endpoint, &body)?;
        duties.data = normalize_proposer_duties(duties.data, epoch, P::SLOTS_PER_EPOCH).map_err(
            |message| BeaconError::Unexpected {
                method: Method::GET,
                endpoint,
                message,
            },
        )?;
        Ok(duties)
    }

    /// `POST /eth/v1/validator/duties/sync/{epoch}` for `indices`.
    pub async fn sync_duties(
        &self,
        epoch: Epoch,
        indices: &[ValidatorIndex],
    ) -> Result<Duties<SyncDuty>> {
        let body: Vec<String> = indices.iter().map(u64::to_string).collect();
        self.post(&format!("/eth/v1/validator/duties/sync/{epoch}"), &body)
            .await
    }

    /// `GET /eth/v1/validator/attestation_data?slot&committee_index`.
    pub async fn attestation_data(
        &self,
        slot: Slot,
        committee_index: CommitteeIndex,
    ) -> Result<AttestationData> {
        let query = [
            ("slot", slot.to_string()),
            ("committee_index", committee_index.to_string()),
        ];
        Ok(self
            .get::<Data<AttestationData>>("/eth/v1/validator/attestation_data", &query)
            .await?
            .data)
    }

    /// `GET /eth/v2/validator/blocks/{slot}`: an unsigned block of any fork, as JSON.
    pub async fn produce_block_raw(
        &self,
        slot: Slot,
        randao_reveal: &BlsSignature,
        graffiti: Option<&Graffiti>,
    ) -> Result<Versioned<serde_json::Value>> {
        let mut query = vec![("randao_reveal", randao_reveal.to_string())];
        if let Some(g) = graffiti {
            query.push(("graffiti", g.to_string()));
        }
        self.get(&format!("/eth/v2/validator/blocks/{slot}"), &query)
            .await
    }

    /// `GET /eth/v2/validator/blocks/{slot}`, requiring an Altair block.
    pub async fn produce_block<P: Preset>(
        &self,
        slot: Slot,
        randao_reveal: &BlsSignature,
        graffiti: Option<&Graffiti>,
    ) -> Result<BeaconBlockAltair<P>> {
        let endpoint = format!("/eth/v2/validator/blocks/{slot}");
        let raw = self
            .produce_block_raw(slot, randao_reveal, graffiti)
            .await?;
        Self::altair_data(raw, &endpoint)
    }

    fn altair_data<T: DeserializeOwned>(
        raw: Versioned<serde_json::Value>,
        endpoint: &str,
    ) -> Result<T> {
        if raw.fork_name() != Some(ForkName::Altair) {
            return Err(BeaconError::Unexpected {
                method: Method::GET,
                endpoint: endpoint.to_string(),
                message: format!("expected an altair block, got version {:?}", raw.version),
            });
        }
        from_json_value(raw.data).map_err(|e| BeaconError::Decode {
            method: Method::GET,
            endpoint: endpoint.to_string(),
            path: if e.path == "." {
                "data".to_string()
            } else {
                format!("data.{}", e.path)
            },
            message: e.message,
            body: String::new(),
        })
    }

    /// `POST /eth/v1/beacon/pool/attestations`.
    pub async fn submit_attestations<P: Preset>(
        &self,
        attestations: &[Attestation<P>],
    ) -> Result<()> {
        self.post_no_content("/eth/v1/beacon/pool/attestations", attestations)
            .await
    }

    /// `POST /eth/v1/beacon/blocks` with an Altair block.
    pub async fn submit_block<P: Preset>(&self, block: &SignedBeaconBlockAltair<P>) -> Result<()> {
        self.post_no_content("/eth/v1/beacon/blocks", block).await
    }

    /// `POST /eth/v1/beacon/blocks` with a signed block of any fork, as JSON.
    pub async fn submit_block_raw(&self, block: &serde_json::Value) -> Result<()> {
        self.post_no_content("/eth/v1/beacon/blocks", block).await
    }

    /// `POST /eth/v1/beacon/pool/sync_committees`.
    pub async fn submit_sync_committee_messages(
        &self,
        messages: &[SyncCommitteeMessage],
    ) -> Result<()> {
        self.post_no_content("/eth/v1/beacon/pool/sync_committees", messages)
            .await
    }

    /// `GET /eth/v2/beacon/blocks/{block_id}`: a signed block of any fork, as JSON.
    pub async fn block_raw(&self, id: BlockId) -> Result<Versioned<serde_json::Value>> {
        self.get(&format!("/eth/v2/beacon/blocks/{id}"), &[]).await
    }

    /// `GET /eth/v2/beacon/blocks/{block_id}`, requiring an Altair block.
    pub async fn block<P: Preset>(&self, id: BlockId) -> Result<SignedBeaconBlockAltair<P>> {
        let raw = self.block_raw(id).await?;
        Self::altair_data(raw, &format!("/eth/v2/beacon/blocks/{id}"))
    }

    /// `GET /eth/v1/beacon/headers/{block_id}`.
    pub async fn header(&self, id: BlockId) -> Result<BlockHeaderData> {
        Ok(self
            .get::<Data<BlockHeaderData>>(&format!("/eth/v1/beacon/headers/{id}"), &[])
            .await?
            .data)
    }

    /// `GET /eth/v1/beacon/states/{state_id}/validators?id=..` (one `id=` per validator, which
    /// Lodestar v1.5.1 needs; an empty `ids` lists all validators).
    pub async fn state_validators(
        &self,
        state: StateId,
        ids: &[ValidatorId],
    ) -> Result<Vec<ValidatorData>> {
        let query: Vec<(&str, String)> = ids.iter().map(|id| ("id", id.to_string())).collect();
        Ok(self
            .get::<Data<Vec<ValidatorData>>>(
                &format!("/eth/v1/beacon/states/{state}/validators"),
                &query,
            )
            .await?
            .data)
    }

    /// `GET /eth/v1/beacon/states/{state_id}/sync_committees?epoch=..`: the validator index at
    /// each position of the sync committee of `epoch`'s period.
    pub async fn sync_committee(
        &self,
        state: StateId,
        epoch: Epoch,
    ) -> Result<Vec<ValidatorIndex>> {
        #[derive(Deserialize)]
        struct SyncCommittee {
            #[serde(with = "serde_utils::quoted_u64_vec")]
            validators: Vec<ValidatorIndex>,
        }
        Ok(self
            .get::<Data<SyncCommittee>>(
                &format!("/eth/v1/beacon/states/{state}/sync_committees"),
                &[("epoch", epoch.to_string())],
            )
            .await?
            .data
            .validators)
    }

    /// `GET /eth/v1/beacon/states/{state_id}/committees?epoch=..`: all committees of `epoch`,
    /// in spec shape whatever the node answers (see [`normalize_committees`]).
    pub async fn committees<P: Preset>(
        &self,
        state: StateId,
        epoch: Epoch,
    ) -> Result<Vec<Committee>> {
        let url = self.url(
            &format!("/eth/v1/beacon/states/{state}/committees"),
            &[("epoch", epoch.to_string())],
        )?;
        let (endpoint, body) = self.call(Method::GET, url, None).await?;
        let data: Data<Vec<Committee>> = Self::decode(Method::GET, &endpoint, &body)?;
        normalize_committees(data.data, epoch, P::SLOTS_PER_EPOCH).map_err(|message| {
            BeaconError::Unexpected {
                method: Method::GET,
                endpoint,
                message,
            }
        })
    }

    /// `GET /eth/v1/events?topics=..`: a stream of decoded events. The stream ends when the
    /// beacon node closes the connection; an undecodable event yields an error item and the
    /// stream goes on.
    pub async fn events<P: Preset>(
        &self,
        topics: &[EventTopic],
    ) -> Result<BoxStream<'static, Result<BeaconEvent<P>>>> {
        let query: Vec<(&str, String)> = topics
            .iter()
            .map(|t| ("topics", t.as_str().to_string()))
            .collect();
        let url = self.url("/eth/v1/events", &query)?;
        let endpoint = endpoint_of(&url);
        let method = Method::GET;
        let resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| Self::transport_error(&method, &endpoint, e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(BeaconError::Status {
                method,
                endpoint,
                status,
                body: snippet(&body),
            });
        }
        let stream = resp
            .bytes_stream()
            .eventsource()
            .map(move |item| match item {
                Ok(ev) => BeaconEvent::<P>::decode(&ev.event, &ev.data).map_err(|message| {
                    BeaconError::EventStream {
                        endpoint: endpoint.clone(),
                        message,
                    }
                }),
                Err(e) => Err(BeaconError::EventStream {
                    endpoint: endpoint.clone(),
                    message: e.to_string(),
                }),
            });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::types::Minimal;
    use serde_json::json;

    fn committee(index: u64, slot: u64, validators: &[u64]) -> Committee {
        Committee {
            index,
            slot,
            validators: validators.to_vec(),
        }
    }

    #[test]
    fn lodestar_committees_get_slot_and_index_back() {
        // Lodestar v1.5.1, epoch 1, 16 validators: one committee per slot, "slot": "0",
        // indices numbered across the epoch.
        let body = r#"{"data":[{"index":"0","slot":"0","validators":["8","0"]},{"index":"1","slot":"0","validators":["12","6"]},{"index":"2","slot":"0","validators":["11","15"]},{"index":"3","slot":"0","validators":["13","1"]},{"index":"4","slot":"0","validators":["4","9"]},{"index":"5","slot":"0","validators":["3","2"]},{"index":"6","slot":"0","validators":["10","5"]},{"index":"7","slot":"0","validators":["7","14"]}],"execution_optimistic":false}"#;
        let data: Data<Vec<Committee>> = from_json_str(body).unwrap();
        let fixed = normalize_committees(data.data, 1, 8).unwrap();
        assert_eq!(fixed[0], committee(0, 8, &[8, 0]));
        assert_eq!(fixed[7], committee(0, 15, &[7, 14]));

        // Two committees per slot (64 validators): `index` = slot in epoch, `slot` = position.
        let raw: Vec<Committee> = (0..16).map(|i| committee(i / 2, i % 2, &[i])).collect();
        let fixed = normalize_committees(raw, 2, 8).unwrap();
        assert_eq!(fixed[3], committee(1, 17, &[3]));
        assert_eq!(fixed[15], committee(1, 23, &[15]));
    }

    #[test]
    fn spec_shaped_committees_are_kept_and_garbage_refused() {
        let spec: Vec<Committee> = (0..8).map(|i| committee(0, 8 + i, &[i])).collect();
        assert_eq!(normalize_committees(spec.clone(), 1, 8).unwrap(), spec);
        let odd: Vec<Committee> = (0..7).map(|i| committee(i, 0, &[i])).collect();
        assert!(normalize_committees(odd, 1, 8).is_err());
        let shuffled: Vec<Committee> = (0..8).map(|i| committee(7 - i, 0, &[i])).collect();
        assert!(normalize_committees(shuffled, 1, 8).is_err());
        assert!(normalize_committees(vec![], 1, 8).unwrap().is_empty());
    }

    #[test]
    fn lodestar_next_epoch_proposer_duties_get_their_slots_back() {
        let duty = |slot, validator_index| ProposerDuty {
            pubkey: BlsPubkey::ZERO,
            validator_index,
            slot,
        };
        // Lodestar v1.5.1 during epoch 0, asked for epoch 1.
        let raw: Vec<ProposerDuty> = (0..8).map(|i| duty(i, 10 + i)).collect();
        let fixed = normalize_proposer_duties(raw, 1, 8).unwrap();
        assert_eq!(fixed[0], duty(8, 10));
        assert_eq!(fixed[7], duty(15, 17));
        let current: Vec<ProposerDuty> = (16..24).map(|i| duty(i, i)).collect();
        assert_eq!(
            normalize_proposer_duties(current.clone(), 2, 8).unwrap(),
            current
        );
        assert!(normalize_proposer_duties(current[1..].to_vec(), 1, 8).is_err());
        let gappy: Vec<ProposerDuty> = (0..8).map(|i| duty(2 * i, i)).collect();
        assert!(normalize_proposer_duties(gappy, 3, 8).is_err());
    }

    #[tokio::test]
    async fn lodestar_sse_sample_decodes() {
        let raw = include_str!("testdata/sse.txt");
        // Split the body at awkward places, as TCP may.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            raw.as_bytes().chunks(97).map(|c| Ok(c.to_vec())).collect();
        let events: Vec<BeaconEvent<Minimal>> = futures::stream::iter(chunks)
            .eventsource()
            .map(|e| {
                let e = e.unwrap();
                BeaconEvent::decode(&e.event, &e.data).unwrap()
            })
            .collect()
            .await;
        assert_eq!(events.len(), 6);
        let BeaconEvent::Block(block) = &events[0] else {
            panic!("{:?}", events[0])
        };
        assert_eq!(block.slot, 29);
        let BeaconEvent::Attestation(att) = &events[1] else {
            panic!("{:?}", events[1])
        };
        assert_eq!(att.data.slot, 28);
        let BeaconEvent::Head(head) = &events[2] else {
            panic!("{:?}", events[2])
        };
        assert_eq!(head.block, block.block);
        assert!(!head.epoch_transition);
    }

    #[test]
    fn bad_events_are_errors_naming_event_and_field() {
        let err = BeaconEvent::<Minimal>::decode("head", r#"{"slot":"x"}"#).unwrap_err();
        assert!(
            err.contains("`head` event") && err.contains("slot"),
            "{err}"
        );
        let other = BeaconEvent::<Minimal>::decode("contribution_and_proof", r#"{"a":1}"#).unwrap();
        assert_eq!(
            other,
            BeaconEvent::Other {
                event: "contribution_and_proof".into(),
                data: json!({"a": 1})
            }
        );
    }

    #[test]
    fn lodestar_api_samples_decode() {
        let duties: Duties<AttesterDuty> = from_json_str(r#"{"execution_optimistic":false,"data":[{"pubkey":"0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b","validator_index":"1","committee_index":"0","committee_length":"2","committees_at_slot":"1","validator_committee_index":"1","slot":"22"}],"dependent_root":"0xe985fefd64ec4defb034b6c7dfb77c4bb8c7a94851ed7c8fd5530f7f1afe7521"}"#).unwrap();
        assert_eq!(duties.data[0].slot, 22);
        assert_eq!(duties.data[0].validator_committee_index, 1);
        assert!(duties.dependent_root.is_some());

        let sync: Duties<SyncDuty> = from_json_str(r#"{"data":[{"pubkey":"0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b","validator_index":"1","validator_sync_committee_indices":["13","29"]}],"execution_optimistic":false}"#).unwrap();
        assert_eq!(sync.data[0].validator_sync_committee_indices, vec![13, 29]);
        assert_eq!(sync.dependent_root, None);

        let vals: Data<Vec<ValidatorData>> = from_json_str(r#"{"data":[{"index":"1","balance":"32003029823","status":"active_ongoing","validator":{"pubkey":"0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b","withdrawal_credentials":"0x00ec7ef7780c9d151597924036262dd28dc60e1228f4da6fecf9d402cb3f3594","effective_balance":"32000000000","slashed":false,"activation_eligibility_epoch":"0","activation_epoch":"0","exit_epoch":"18446744073709551615","withdrawable_epoch":"18446744073709551615"}}],"execution_optimistic":false}"#).unwrap();
        assert!(vals.data[0].status.is_active());
        assert_eq!(vals.data[0].validator.exit_epoch, u64::MAX);

        let genesis: Data<Genesis> = from_json_str(r#"{"data":{"genesis_validators_root":"0x05d79a31a8e69ecd78114c50ce73116be33027d8431b82fff6c0b3cd9c2cbb1f","genesis_time":"1795701979","genesis_fork_version":"0x01000001"}}"#).unwrap();
        assert_eq!(genesis.data.genesis_time, 1_795_701_979);

        let syncing: Data<SyncingStatus> = from_json_str(r#"{"data":{"head_slot":"16","sync_distance":"0","is_syncing":false,"is_optimistic":false}}"#).unwrap();
        assert_eq!(syncing.data.head_slot, 16);

        let err = from_json_str::<Data<Vec<ValidatorData>>>(
            r#"{"data":[{"index":"1","balance":"1","status":"sleeping","validator":{}}]}"#,
        )
        .unwrap_err();
        assert_eq!(err.path, "data[0].status");
    }

    #[test]
    fn urls_repeat_list_parameters_and_keep_base_path() {
        let c = BeaconClient::new("http://127.0.0.1:5052/proxy").unwrap();
        let url = c
            .url(
                "/eth/v1/beacon/states/head/validators",
                &[("id", "1".into()), ("id", BlsPubkey::ZERO.to_string())],
            )
            .unwrap();
        assert_eq!(url.path(), "/proxy/eth/v1/beacon/states/head/validators");
        assert_eq!(url.query_pairs().filter(|(k, _)| k == "id").count(), 2);
        assert_eq!(
            endpoint_of(&url),
            format!(
                "/proxy/eth/v1/beacon/states/head/validators?id=1&id={}",
                BlsPubkey::ZERO
            )
        );
        assert!(BeaconClient::new("not a url").is_err());
        assert!(BeaconClient::new("ftp://127.0.0.1/").is_err());
        assert_eq!(
            BlockId::Root(Root::ZERO).to_string(),
            Root::ZERO.to_string()
        );
        assert_eq!(StateId::Slot(7).to_string(), "7");
    }

    #[tokio::test]
    async fn unreachable_node_error_names_the_endpoint() {
        // Bind then drop a listener to get a local port with nothing behind it.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = BeaconClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = c.attestation_data(5, 1).await.unwrap_err();
        assert!(matches!(err, BeaconError::Transport { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("GET /eth/v1/validator/attestation_data?slot=5&committee_index=1"),
            "{err}"
        );
    }

    #[test]
    fn snippets_are_bounded_and_utf8_safe() {
        let long = "é".repeat(600);
        let s = snippet(long.as_bytes());
        assert!(s.ends_with('…'));
        assert!(s.len() <= BODY_SNIPPET_LEN + '…'.len_utf8());
    }
}
