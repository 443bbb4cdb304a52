//! Web3Signer signing requests: body parsing with field-named errors, and the checks every
//! request passes before anything is signed (chain, fork version, signing root).

use std::fmt;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::eth::aggregate::{AggregateAndProof, ContributionAndProof, SyncAggregatorSelectionData};
use crate::eth::signing::{ForkName, ForkSchedule};
use crate::eth::types::{
    from_json_value, AttestationData, BeaconBlockAltair, BeaconBlockHeader, Epoch, Fork, Preset,
    Root, Slot, VoluntaryExit,
};

/// Why a signing request is refused: an HTTP status and a message that names the offending
/// field (`attestation.target.epoch: …`, `fork_info.genesis_validators_root: …`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SignError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// What is wrong.
    pub message: String,
    /// Short reason for metrics (`malformed`, `unknown_type`, `wrong_fork`, …).
    pub reason: &'static str,
}

impl SignError {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> SignError {
        SignError {
            status,
            message: message.into(),
            reason,
        }
    }

    /// 400: the body is malformed at `field`.
    pub fn malformed(field: &str, what: impl fmt::Display) -> SignError {
        SignError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("{field}: {what}"),
        )
    }

    /// 400: the request is well-formed but wrong for this chain at `field` (`reason` names
    /// the kind).
    pub fn wrong(reason: &'static str, field: &str, what: impl fmt::Display) -> SignError {
        SignError::new(StatusCode::BAD_REQUEST, reason, format!("{field}: {what}"))
    }

    /// 404: the key is not served here.
    pub fn unknown_key(message: impl Into<String>) -> SignError {
        SignError::new(StatusCode::NOT_FOUND, "unknown_key", message)
    }

    /// 412: the object is not what the cluster decided (or the slashing DB refuses it), so it
    /// is never signed (Web3Signer answers slashing-protection refusals with 412 too).
    pub fn refused(message: impl Into<String>) -> SignError {
        SignError::new(StatusCode::PRECONDITION_FAILED, "not_decided", message)
    }

    /// 503: nothing to answer in time (no decided value, too few partial signatures).
    pub fn unavailable(message: impl Into<String>) -> SignError {
        SignError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> SignError {
        SignError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

/// The signing request types a distributed validator signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignType {
    /// Attestation aggregator selection proof (a signature over the slot).
    AggregationSlot,
    /// An aggregate attestation with its selection proof.
    AggregateAndProof,
    /// Attestation data.
    Attestation,
    /// A block (Altair body, or a header for any fork).
    BlockV2,
    /// The RANDAO reveal of an epoch.
    RandaoReveal,
    /// A voluntary exit.
    VoluntaryExit,
    /// A sync committee message over a block root.
    SyncCommitteeMessage,
    /// Sync committee aggregator selection proof.
    SyncCommitteeSelectionProof,
    /// A sync committee contribution with its selection proof.
    SyncCommitteeContributionAndProof,
}

impl SignType {
    /// All supported types.
    pub const ALL: [SignType; 9] = [
        SignType::AggregationSlot,
        SignType::AggregateAndProof,
        SignType::Attestation,
        SignType::BlockV2,
        SignType::RandaoReveal,
        SignType::VoluntaryExit,
        SignType::SyncCommitteeMessage,
        SignType::SyncCommitteeSelectionProof,
        SignType::SyncCommitteeContributionAndProof,
    ];

    /// The `type` value of the request.
    pub const fn as_str(self) -> &'static str {
        match self {
            SignType::AggregationSlot => "AGGREGATION_SLOT",
            SignType::AggregateAndProof => "AGGREGATE_AND_PROOF",
            SignType::Attestation => "ATTESTATION",
            SignType::BlockV2 => "BLOCK_V2",
            SignType::RandaoReveal => "RANDAO_REVEAL",
            SignType::VoluntaryExit => "VOLUNTARY_EXIT",
            SignType::SyncCommitteeMessage => "SYNC_COMMITTEE_MESSAGE",
            SignType::SyncCommitteeSelectionProof => "SYNC_COMMITTEE_SELECTION_PROOF",
            SignType::SyncCommitteeContributionAndProof => "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
        }
    }

    /// The body key holding the object to sign.
    pub const fn object_key(self) -> &'static str {
        match self {
            SignType::AggregationSlot => "aggregation_slot",
            SignType::AggregateAndProof => "aggregate_and_proof",
            SignType::Attestation => "attestation",
            SignType::BlockV2 => "beacon_block",
            SignType::RandaoReveal => "randao_reveal",
            SignType::VoluntaryExit => "voluntary_exit",
            SignType::SyncCommitteeMessage => "sync_committee_message",
            SignType::SyncCommitteeSelectionProof => "sync_aggregator_selection_data",
            SignType::SyncCommitteeContributionAndProof => "contribution_and_proof",
        }
    }

    /// Snake-case label for metrics.
    pub fn label(self) -> String {
        self.as_str().to_ascii_lowercase()
    }

    /// Whether the slashing rules (or the cluster's consensus on the value) guard this type:
    /// such objects are signed only if they equal what the cluster decided.
    pub const fn is_decided(self) -> bool {
        matches!(
            self,
            SignType::Attestation
                | SignType::BlockV2
                | SignType::AggregateAndProof
                | SignType::SyncCommitteeContributionAndProof
                | SignType::SyncCommitteeMessage
        )
    }
}

impl fmt::Display for SignType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Web3Signer types a distributed validator refuses, with the reason.
const REFUSED_TYPES: [(&str, &str); 4] = [
    (
        "BLOCK",
        "the phase0 block type is not signed; send BLOCK_V2",
    ),
    (
        "DEPOSIT",
        "deposits are signed with the whole key when the validator is created, never by the cluster",
    ),
    (
        "VALIDATOR_REGISTRATION",
        "builder registrations are not supported (this chain has no builder)",
    ),
    (
        "BLS_TO_EXECUTION_CHANGE",
        "withdrawal credential changes are not signed by a distributed validator",
    ),
];

/// `fork_info` of a request: the fork and the chain it signs for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct ForkInfo {
    /// The fork. Lodestar 1.5.1 puts the *signed epoch* in `fork.epoch`, not the fork's
    /// activation epoch; see [`check`].
    pub fork: Fork,
    /// Genesis validators root of the chain.
    pub genesis_validators_root: Root,
}

/// The block of a `BLOCK_V2` request.
#[derive(Clone, Debug, PartialEq)]
pub enum BlockToSign<P: Preset> {
    /// A full Altair block.
    Altair(Box<BeaconBlockAltair<P>>),
    /// The block's header (what Web3Signer clients send from Bellatrix on).
    Header(BeaconBlockHeader),
}

impl<P: Preset> BlockToSign<P> {
    /// The block's slot.
    pub fn slot(&self) -> Slot {
        match self {
            BlockToSign::Altair(b) => b.slot,
            BlockToSign::Header(h) => h.slot,
        }
    }

    /// The block root (`hash_tree_root` of the block, equal to that of its header).
    pub fn block_root(&self) -> Root {
        match self {
            BlockToSign::Altair(b) => Root::of(b.as_ref()),
            BlockToSign::Header(h) => Root::of(h),
        }
    }
}

/// The object a request asks to sign.
#[derive(Clone, Debug, PartialEq)]
pub enum SignObject<P: Preset> {
    /// `AGGREGATION_SLOT`.
    AggregationSlot {
        /// The slot.
        slot: Slot,
    },
    /// `AGGREGATE_AND_PROOF`.
    AggregateAndProof(Box<AggregateAndProof<P>>),
    /// `ATTESTATION`.
    Attestation(AttestationData),
    /// `BLOCK_V2`.
    Block(BlockToSign<P>),
    /// `RANDAO_REVEAL`.
    RandaoReveal {
        /// The epoch.
        epoch: Epoch,
    },
    /// `VOLUNTARY_EXIT`.
    VoluntaryExit(VoluntaryExit),
    /// `SYNC_COMMITTEE_MESSAGE`.
    SyncCommitteeMessage {
        /// The head block root.
        beacon_block_root: Root,
        /// The slot.
        slot: Slot,
    },
    /// `SYNC_COMMITTEE_SELECTION_PROOF`.
    SyncSelectionProof(SyncAggregatorSelectionData),
    /// `SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF`.
    ContributionAndProof(Box<ContributionAndProof<P>>),
}

impl<P: Preset> SignObject<P> {
    /// The request type of this object.
    pub fn sign_type(&self) -> SignType {
        match self {
            SignObject::AggregationSlot { .. } => SignType::AggregationSlot,
            SignObject::AggregateAndProof(_) => SignType::AggregateAndProof,
            SignObject::Attestation(_) => SignType::Attestation,
            SignObject::Block(_) => SignType::BlockV2,
            SignObject::RandaoReveal { .. } => SignType::RandaoReveal,
            SignObject::VoluntaryExit(_) => SignType::VoluntaryExit,
            SignObject::SyncCommitteeMessage { .. } => SignType::SyncCommitteeMessage,
            SignObject::SyncSelectionProof(_) => SignType::SyncCommitteeSelectionProof,
            SignObject::ContributionAndProof(_) => SignType::SyncCommitteeContributionAndProof,
        }
    }

    /// The epoch whose fork version signs the object (the epoch of its domain).
    pub fn signing_epoch(&self, schedule: &ForkSchedule) -> Epoch {
        let at = |slot: Slot| schedule.epoch_at_slot(slot);
        match self {
            SignObject::AggregationSlot { slot } => at(*slot),
            SignObject::AggregateAndProof(a) => at(a.aggregate.data.slot),
            SignObject::Attestation(d) => d.target.epoch,
            SignObject::Block(b) => at(b.slot()),
            SignObject::RandaoReveal { epoch } => *epoch,
            SignObject::VoluntaryExit(e) => e.epoch,
            SignObject::SyncCommitteeMessage { slot, .. } => at(*slot),
            SignObject::SyncSelectionProof(d) => at(d.slot),
            SignObject::ContributionAndProof(c) => at(c.contribution.slot),
        }
    }

    /// The slot the object belongs to (the first slot of the epoch for epoch-wide objects).
    pub fn slot(&self, schedule: &ForkSchedule) -> Slot {
        match self {
            SignObject::AggregationSlot { slot } => *slot,
            SignObject::AggregateAndProof(a) => a.aggregate.data.slot,
            SignObject::Attestation(d) => d.slot,
            SignObject::Block(b) => b.slot(),
            SignObject::RandaoReveal { epoch } => schedule.epoch_start_slot(*epoch),
            SignObject::VoluntaryExit(e) => schedule.epoch_start_slot(e.epoch),
            SignObject::SyncCommitteeMessage { slot, .. } => *slot,
            SignObject::SyncSelectionProof(d) => d.slot,
            SignObject::ContributionAndProof(c) => c.contribution.slot,
        }
    }

    /// The signing root, computed with this node's fork schedule and genesis validators root.
    pub fn signing_root(&self, schedule: &ForkSchedule) -> Root {
        match self {
            SignObject::AggregationSlot { slot } => schedule.selection_proof_signing_root(*slot),
            SignObject::AggregateAndProof(a) => schedule.aggregate_and_proof_signing_root(a),
            SignObject::Attestation(d) => schedule.attestation_signing_root(d),
            SignObject::Block(BlockToSign::Altair(b)) => schedule.block_signing_root(b),
            SignObject::Block(BlockToSign::Header(h)) => schedule.block_header_signing_root(h),
            SignObject::RandaoReveal { epoch } => schedule.randao_signing_root(*epoch),
            SignObject::VoluntaryExit(e) => schedule.voluntary_exit_signing_root(e),
            SignObject::SyncCommitteeMessage {
                beacon_block_root,
                slot,
            } => schedule.sync_committee_signing_root(*beacon_block_root, *slot),
            SignObject::SyncSelectionProof(d) => schedule.sync_selection_proof_signing_root(d),
            SignObject::ContributionAndProof(c) => schedule.contribution_and_proof_signing_root(c),
        }
    }
}

/// A parsed signing request.
#[derive(Clone, Debug, PartialEq)]
pub struct SignRequest<P: Preset> {
    /// What to sign.
    pub object: SignObject<P>,
    /// The root the client computed (`signingRoot`, optional in the Web3Signer API); never
    /// trusted, only compared.
    pub signing_root: Option<Root>,
    /// The chain and fork the client signs for.
    pub fork_info: ForkInfo,
}

/// Decodes `value` (found at `field`) into `T`, naming the offending sub-field on failure.
fn decode<T: serde::de::DeserializeOwned>(value: Value, field: &str) -> Result<T, SignError> {
    from_json_value(value).map_err(|e| {
        let at = if e.path == "." || e.path.is_empty() {
            field.to_owned()
        } else {
            format!("{field}.{}", e.path)
        };
        SignError::malformed(&at, e.message)
    })
}

fn take(body: &mut Map<String, Value>, field: &str, sign_type: &str) -> Result<Value, SignError> {
    body.remove(field).ok_or_else(|| {
        SignError::malformed(field, format!("missing (required for type {sign_type})"))
    })
}

#[derive(Deserialize)]
struct Slotted {
    #[serde(with = "serde_utils::quoted_u64")]
    slot: Slot,
}

#[derive(Deserialize)]
struct Epoched {
    #[serde(with = "serde_utils::quoted_u64")]
    epoch: Epoch,
}

#[derive(Deserialize)]
struct SyncMessageJson {
    beacon_block_root: Root,
    #[serde(with = "serde_utils::quoted_u64")]
    slot: Slot,
}

fn parse_block<P: Preset>(mut v: Value, key: &str) -> Result<BlockToSign<P>, SignError> {
    let Value::Object(map) = &mut v else {
        return Err(SignError::malformed(key, "expected a JSON object"));
    };
    let version = match map.remove("version") {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(SignError::malformed(
                &format!("{key}.version"),
                "expected a fork name string",
            ))
        }
        None => {
            return Err(SignError::malformed(
                &format!("{key}.version"),
                "missing (required for type BLOCK_V2)",
            ))
        }
    };
    let fork: ForkName = version
        .parse()
        .map_err(|e| SignError::malformed(&format!("{key}.version"), e))?;
    if let Some(header) = map.remove("block_header") {
        return Ok(BlockToSign::Header(decode(
            header,
            &format!("{key}.block_header"),
        )?));
    }
    let Some(block) = map.remove("block") else {
        return Err(SignError::malformed(
            &format!("{key}.block"),
            "missing (BLOCK_V2 needs `block` or `block_header`)",
        ));
    };
    if fork != ForkName::Altair {
        return Err(SignError::wrong(
            "unsupported_fork",
            &format!("{key}.version"),
            format!(
                "full {version} blocks are not signed (send ALTAIR blocks, or a `block_header`)"
            ),
        ));
    }
    Ok(BlockToSign::Altair(Box::new(decode(
        block,
        &format!("{key}.block"),
    )?)))
}

/// Parses a signing request body. Errors name the offending field; an unknown or refused
/// `type` is named in the error.
pub fn parse<P: Preset>(body: &[u8]) -> Result<SignRequest<P>, SignError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        SignError::malformed(
            "body",
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err(SignError::malformed("body", "expected a JSON object"));
    };
    let type_name = match map.remove("type") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(SignError::malformed(
                "type",
                format!("expected a string, got {other}"),
            ))
        }
        None => return Err(SignError::malformed("type", "missing")),
    };
    let Some(sign_type) = SignType::ALL
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(&type_name))
    else {
        if let Some((_, why)) = REFUSED_TYPES
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(&type_name))
        {
            return Err(SignError::wrong(
                "unsupported_type",
                "type",
                format!("{type_name} is not supported: {why}"),
            ));
        }
        return Err(SignError::wrong(
            "unknown_type",
            "type",
            format!("unknown signing type {type_name:?}"),
        ));
    };
    let signing_root = match map
        .remove("signingRoot")
        .or_else(|| map.remove("signing_root"))
    {
        None | Some(Value::Null) => None,
        Some(v) => Some(decode::<Root>(v, "signingRoot")?),
    };
    let fork_info: ForkInfo = decode(
        take(&mut map, "fork_info", sign_type.as_str())?,
        "fork_info",
    )?;
    let key = sign_type.object_key();
    let v = take(&mut map, key, sign_type.as_str())?;
    let object = match sign_type {
        SignType::AggregationSlot => SignObject::AggregationSlot {
            slot: decode::<Slotted>(v, key)?.slot,
        },
        SignType::AggregateAndProof => SignObject::AggregateAndProof(Box::new(decode(v, key)?)),
        SignType::Attestation => SignObject::Attestation(decode(v, key)?),
        SignType::BlockV2 => SignObject::Block(parse_block(v, key)?),
        SignType::RandaoReveal => SignObject::RandaoReveal {
            epoch: decode::<Epoched>(v, key)?.epoch,
        },
        SignType::VoluntaryExit => SignObject::VoluntaryExit(decode(v, key)?),
        SignType::SyncCommitteeMessage => {
            let m: SyncMessageJson = decode(v, key)?;
            SignObject::SyncCommitteeMessage {
                beacon_block_root: m.beacon_block_root,
                slot: m.slot,
            }
        }
        SignType::SyncCommitteeSelectionProof => SignObject::SyncSelectionProof(decode(v, key)?),
        SignType::SyncCommitteeContributionAndProof => {
            SignObject::ContributionAndProof(Box::new(decode(v, key)?))
        }
    };
    Ok(SignRequest {
        object,
        signing_root,
        fork_info,
    })
}

/// Checks a request against this node's chain and returns the signing root recomputed from
/// the object:
///
/// - `fork_info.genesis_validators_root` must be this chain's;
/// - the fork version `fork_info` implies for the signed epoch must be the one this chain signs
///   that epoch with. (Web3Signer derives the domain as `get_domain(fork, type, epoch)`:
///   `previous_version` before `fork.epoch`, `current_version` from it on. Lodestar 1.5.1 sends
///   the signed epoch as `fork.epoch` and, for a fork active at genesis, the genesis version as
///   `previous_version`; both conventions lead to the same version here.)
/// - the client's `signingRoot`, if given, must equal the recomputed root.
pub fn check<P: Preset>(req: &SignRequest<P>, schedule: &ForkSchedule) -> Result<Root, SignError> {
    let gvr = schedule.genesis_validators_root();
    if req.fork_info.genesis_validators_root != gvr {
        return Err(SignError::wrong(
            "wrong_chain",
            "fork_info.genesis_validators_root",
            format!(
                "{} is not this chain's genesis validators root {gvr}",
                req.fork_info.genesis_validators_root
            ),
        ));
    }
    let epoch = req.object.signing_epoch(schedule);
    let fork = &req.fork_info.fork;
    let (field, version) = if epoch < fork.epoch {
        ("fork_info.fork.previous_version", fork.previous_version)
    } else {
        ("fork_info.fork.current_version", fork.current_version)
    };
    let ours = schedule.version_at_epoch(epoch);
    if version != ours {
        return Err(SignError::wrong(
            "wrong_fork",
            field,
            format!(
                "{version} would sign epoch {epoch} (fork_info.fork.epoch {}), but this chain signs it with {ours} ({})",
                fork.epoch,
                schedule.fork_name_at_epoch(epoch)
            ),
        ));
    }
    let root = req.object.signing_root(schedule);
    if let Some(claimed) = req.signing_root {
        if claimed != root {
            return Err(SignError::wrong(
                "wrong_signing_root",
                "signingRoot",
                format!(
                    "{claimed} is not the signing root of the {} object ({root}, computed here)",
                    req.object.sign_type()
                ),
            ));
        }
    }
    Ok(root)
}
