//! Request identifiers and response types of the beacon-node API, and the Lodestar 1.5.1
//! answers normalised to the spec's shape ([`normalize_committees`],
//! [`normalize_proposer_duties`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::eth::signing::ForkName;
use crate::eth::types::{
    BlsPubkey, CommitteeIndex, Epoch, Root, SignedBeaconBlockHeader, Slot, ValidatorIndex,
};

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

impl std::str::FromStr for ValidatorId {
    type Err = String;

    /// A `0x…` public key or a decimal validator index.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("0x") || s.starts_with("0X") {
            s.parse()
                .map(ValidatorId::Pubkey)
                .map_err(|e| format!("invalid public key: {e}"))
        } else {
            s.parse().map(ValidatorId::Index).map_err(|_| {
                format!("expected a 0x-prefixed public key or a validator index, got {s:?}")
            })
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

/// The registry record of a validator (beacon-API JSON; SSZ and tree hash as in the state).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    ssz_derive::Encode,
    ssz_derive::Decode,
    tree_hash_derive::TreeHash,
)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::config::Genesis;
    use crate::eth::types::from_json_str;

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
}
