//! Phase0 and Altair consensus containers used by the attester, proposer and sync-committee
//! duties, with SSZ encoding, `hash_tree_root` and beacon-API JSON.
//!
//! JSON follows the beacon API exactly: integers are quoted decimal strings, byte vectors and
//! roots are `0x`-prefixed lowercase hex, bitlists and bitvectors are the `0x` hex of their SSZ
//! bytes. Containers whose size depends on the preset are generic over a [`Preset`]
//! ([`Minimal`] or [`Mainnet`]).
//!
//! The three block containers ([`SignedBeaconBlockAltair`], [`BeaconBlockAltair`],
//! [`BeaconBlockBodyAltair`]) keep JSON fields they do not know in an `extra` map that is
//! written back unchanged, so a block received from a beacon node or a validator client passes
//! through dvnode without loss. `extra` takes no part in SSZ or in the hash tree root.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ssz::{Decode, DecodeError, Encode};
use ssz_derive::{Decode, Encode};
use ssz_types::typenum::{self, Unsigned};
use ssz_types::{BitList, BitVector, FixedVector, VariableList};
use tree_hash::{Hash256, PackedEncoding, TreeHash, TreeHashType};
use tree_hash_derive::TreeHash;

/// A slot number.
pub type Slot = u64;
/// An epoch number.
pub type Epoch = u64;
/// A validator's index in the beacon state registry.
pub type ValidatorIndex = u64;
/// A committee's index within its slot.
pub type CommitteeIndex = u64;
/// An amount in Gwei.
pub type Gwei = u64;

/// The epoch that means "never" (`2**64 - 1`).
pub const FAR_FUTURE_EPOCH: Epoch = u64::MAX;
/// Depth of the deposit contract's Merkle tree (phase0 constant).
pub const DEPOSIT_CONTRACT_TREE_DEPTH: usize = 32;

/// Error parsing a fixed-length `0x` hex string into one of the byte types of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// The string does not start with `0x`.
    #[error("expected a 0x-prefixed hex string")]
    MissingPrefix,
    /// The string is not valid hex.
    #[error("invalid hex: {0}")]
    InvalidHex(String),
    /// The decoded byte count differs from the type's length.
    #[error("expected {expected} bytes, got {actual}")]
    WrongLength {
        /// Length of the type.
        expected: usize,
        /// Length of the decoded input.
        actual: usize,
    },
}

fn decode_fixed_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or(HexError::MissingPrefix)?;
    if digits.len() != 2 * N {
        // Report whole bytes when the digit count is even, so the message reads naturally.
        return Err(HexError::WrongLength {
            expected: N,
            actual: digits.len() / 2,
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out).map_err(|e| HexError::InvalidHex(e.to_string()))?;
    Ok(out)
}

/// Defines a fixed-length byte newtype with SSZ, tree hash (`Vector[byte, N]`), `0x`-hex
/// serde, `Display`/`Debug` as hex and `FromStr` from hex.
macro_rules! fixed_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;
            /// All zero bytes.
            pub const ZERO: Self = Self([0u8; $len]);

            /// The bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Builds the value from a slice of exactly [`Self::LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, HexError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| HexError::WrongLength {
                    expected: $len,
                    actual: bytes.len(),
                })?;
                Ok(Self(arr))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::ZERO
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{}", hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = HexError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                decode_fixed_hex::<$len>(s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct HexVisitor;
                impl serde::de::Visitor<'_> for HexVisitor {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a 0x-prefixed hex string of {} bytes", $len)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(HexVisitor)
            }
        }

        impl Encode for $name {
            fn is_ssz_fixed_len() -> bool {
                true
            }
            fn ssz_fixed_len() -> usize {
                $len
            }
            fn ssz_bytes_len(&self) -> usize {
                $len
            }
            fn ssz_append(&self, buf: &mut Vec<u8>) {
                buf.extend_from_slice(&self.0);
            }
        }

        impl Decode for $name {
            fn is_ssz_fixed_len() -> bool {
                true
            }
            fn ssz_fixed_len() -> usize {
                $len
            }
            fn from_ssz_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
                <[u8; $len]>::from_ssz_bytes(bytes).map(Self)
            }
        }

        impl TreeHash for $name {
            fn tree_hash_type() -> TreeHashType {
                <[u8; $len]>::tree_hash_type()
            }
            fn tree_hash_packed_encoding(&self) -> PackedEncoding {
                self.0.tree_hash_packed_encoding()
            }
            fn tree_hash_packing_factor() -> usize {
                <[u8; $len]>::tree_hash_packing_factor()
            }
            fn tree_hash_root(&self) -> Hash256 {
                self.0.tree_hash_root()
            }
        }
    };
}

fixed_bytes!(
    /// A 32-byte SSZ root (`Root`, `Bytes32`, `Hash32`).
    Root,
    32
);
fixed_bytes!(
    /// A 4-byte fork version.
    Version,
    4
);
fixed_bytes!(
    /// A 4-byte signature domain type.
    DomainType,
    4
);
fixed_bytes!(
    /// A 32-byte signature domain (domain type ‖ fork data root prefix).
    Domain,
    32
);
fixed_bytes!(
    /// A compressed BLS12-381 public key (48 bytes).
    BlsPubkey,
    48
);
fixed_bytes!(
    /// A compressed BLS12-381 signature (96 bytes).
    BlsSignature,
    96
);
fixed_bytes!(
    /// A block's 32-byte graffiti.
    Graffiti,
    32
);

impl From<Hash256> for Root {
    fn from(hash: Hash256) -> Self {
        Self(hash.0)
    }
}

impl From<Root> for Hash256 {
    fn from(root: Root) -> Self {
        Hash256::from(root.0)
    }
}

impl Root {
    /// `hash_tree_root` of any SSZ value, as a [`Root`].
    pub fn of<T: TreeHash + ?Sized>(value: &T) -> Self {
        value.tree_hash_root().into()
    }
}

impl BlsSignature {
    /// The point at infinity (`0xc0` followed by zeros), the "empty" signature of a sync
    /// aggregate without participants.
    pub fn infinity() -> Self {
        let mut bytes = [0u8; 96];
        bytes[0] = 0xc0;
        Self(bytes)
    }
}

/// The list limits and vector lengths of a consensus preset.
///
/// Only the values that shape the containers of this module appear here; runtime
/// configuration (fork epochs, slot time) comes from the beacon node, see
/// [`crate::eth::signing::ForkSchedule`].
pub trait Preset:
    'static + Clone + Copy + fmt::Debug + Default + PartialEq + Eq + Send + Sync
{
    /// Preset name as in `PRESET_BASE` (`"minimal"`, `"mainnet"`).
    const NAME: &'static str;
    /// `SLOTS_PER_EPOCH`.
    const SLOTS_PER_EPOCH: u64;
    /// `MAX_VALIDATORS_PER_COMMITTEE`.
    type MaxValidatorsPerCommittee: Unsigned + Clone + fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `MAX_PROPOSER_SLASHINGS`.
    type MaxProposerSlashings: Unsigned + Clone + fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `MAX_ATTESTER_SLASHINGS`.
    type MaxAttesterSlashings: Unsigned + Clone + fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `MAX_ATTESTATIONS`.
    type MaxAttestations: Unsigned + Clone + fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `MAX_DEPOSITS`.
    type MaxDeposits: Unsigned + Clone + fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `MAX_VOLUNTARY_EXITS`.
    type MaxVoluntaryExits: Unsigned + Clone + fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `SYNC_COMMITTEE_SIZE`.
    type SyncCommitteeSize: Unsigned + Clone + fmt::Debug + PartialEq + Eq + Send + Sync;
    /// `SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT`: members of one sync subcommittee
    /// (the length of a contribution's bitvector).
    type SyncSubcommitteeSize: Unsigned + Clone + fmt::Debug + PartialEq + Eq + Send + Sync;
}

/// The `minimal` preset (what `LODESTAR_PRESET=minimal` runs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Minimal;

impl Preset for Minimal {
    const NAME: &'static str = "minimal";
    const SLOTS_PER_EPOCH: u64 = 8;
    type MaxValidatorsPerCommittee = typenum::U2048;
    type MaxProposerSlashings = typenum::U16;
    type MaxAttesterSlashings = typenum::U2;
    type MaxAttestations = typenum::U128;
    type MaxDeposits = typenum::U16;
    type MaxVoluntaryExits = typenum::U16;
    type SyncCommitteeSize = typenum::U32;
    type SyncSubcommitteeSize = typenum::U8;
}

/// The `mainnet` preset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mainnet;

impl Preset for Mainnet {
    const NAME: &'static str = "mainnet";
    const SLOTS_PER_EPOCH: u64 = 32;
    type MaxValidatorsPerCommittee = typenum::U2048;
    type MaxProposerSlashings = typenum::U16;
    type MaxAttesterSlashings = typenum::U2;
    type MaxAttestations = typenum::U128;
    type MaxDeposits = typenum::U16;
    type MaxVoluntaryExits = typenum::U16;
    type SyncCommitteeSize = typenum::U512;
    type SyncSubcommitteeSize = typenum::U128;
}

/// The epoch containing `slot`.
pub fn epoch_at_slot<P: Preset>(slot: Slot) -> Epoch {
    slot / P::SLOTS_PER_EPOCH
}

/// The first slot of `epoch`.
pub fn epoch_start_slot<P: Preset>(epoch: Epoch) -> Slot {
    epoch.saturating_mul(P::SLOTS_PER_EPOCH)
}

/// A checkpoint (epoch boundary block root).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct Checkpoint {
    /// Epoch.
    #[serde(with = "serde_utils::quoted_u64")]
    pub epoch: Epoch,
    /// Block root at the epoch boundary.
    pub root: Root,
}

/// The data an attester votes on.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct AttestationData {
    /// Slot of the attestation.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Committee index within the slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub index: CommitteeIndex,
    /// LMD GHOST vote.
    pub beacon_block_root: Root,
    /// FFG source.
    pub source: Checkpoint,
    /// FFG target.
    pub target: Checkpoint,
}

/// An (aggregate) attestation: committee members' bits and their aggregate signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct Attestation<P: Preset> {
    /// Which committee members signed (bitlist, JSON: 0x hex of the SSZ bytes).
    pub aggregation_bits: BitList<P::MaxValidatorsPerCommittee>,
    /// What they signed.
    pub data: AttestationData,
    /// Aggregate BLS signature.
    pub signature: BlsSignature,
}

/// An attestation with its attesters as sorted validator indices (used in slashings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct IndexedAttestation<P: Preset> {
    /// Attesting validator indices (quoted decimal strings in JSON).
    #[serde(with = "ssz_types::serde_utils::quoted_u64_var_list")]
    pub attesting_indices: VariableList<u64, P::MaxValidatorsPerCommittee>,
    /// What they signed.
    pub data: AttestationData,
    /// Aggregate BLS signature.
    pub signature: BlsSignature,
}

/// The fork a beacon state is on.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct Fork {
    /// Version before `epoch`.
    pub previous_version: Version,
    /// Version from `epoch` on.
    pub current_version: Version,
    /// Activation epoch of `current_version`.
    #[serde(with = "serde_utils::quoted_u64")]
    pub epoch: Epoch,
}

/// Input of `compute_fork_data_root`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct ForkData {
    /// Fork version.
    pub current_version: Version,
    /// Genesis validators root of the chain.
    pub genesis_validators_root: Root,
}

/// Input of `compute_signing_root`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct SigningData {
    /// `hash_tree_root` of the signed object.
    pub object_root: Root,
    /// Signature domain.
    pub domain: Domain,
}

/// A block header (the block with its body replaced by the body root).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct BeaconBlockHeader {
    /// Slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Proposer's validator index.
    #[serde(with = "serde_utils::quoted_u64")]
    pub proposer_index: ValidatorIndex,
    /// Parent block root.
    pub parent_root: Root,
    /// Post-state root.
    pub state_root: Root,
    /// `hash_tree_root` of the block body.
    pub body_root: Root,
}

/// A signed block header. Its signature is the block's signature: a block and its header
/// have the same `hash_tree_root`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct SignedBeaconBlockHeader {
    /// Header.
    pub message: BeaconBlockHeader,
    /// Proposer's signature.
    pub signature: BlsSignature,
}

/// The eth1 chain vote of a block.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct Eth1Data {
    /// Deposit tree root.
    pub deposit_root: Root,
    /// Number of deposits.
    #[serde(with = "serde_utils::quoted_u64")]
    pub deposit_count: u64,
    /// Eth1 block hash.
    pub block_hash: Root,
}

/// Two conflicting signed headers of one proposer.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct ProposerSlashing {
    /// First header.
    pub signed_header_1: SignedBeaconBlockHeader,
    /// Second header.
    pub signed_header_2: SignedBeaconBlockHeader,
}

/// Two conflicting (double or surround) indexed attestations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct AttesterSlashing<P: Preset> {
    /// First attestation.
    pub attestation_1: IndexedAttestation<P>,
    /// Second attestation.
    pub attestation_2: IndexedAttestation<P>,
}

/// The data of a deposit.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct DepositData {
    /// Validator public key.
    pub pubkey: BlsPubkey,
    /// Withdrawal credentials.
    pub withdrawal_credentials: Root,
    /// Amount in Gwei.
    #[serde(with = "serde_utils::quoted_u64")]
    pub amount: Gwei,
    /// Proof of possession.
    pub signature: BlsSignature,
}

/// A deposit with its Merkle proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
pub struct Deposit {
    /// Branch (`DEPOSIT_CONTRACT_TREE_DEPTH + 1` roots, the last mixes in the count).
    pub proof: FixedVector<Root, typenum::U33>,
    /// Deposit data.
    pub data: DepositData,
}

/// A voluntary exit request.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct VoluntaryExit {
    /// Earliest epoch the exit is processed.
    #[serde(with = "serde_utils::quoted_u64")]
    pub epoch: Epoch,
    /// Exiting validator.
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_index: ValidatorIndex,
}

/// A signed voluntary exit.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct SignedVoluntaryExit {
    /// The exit.
    pub message: VoluntaryExit,
    /// Validator's signature.
    pub signature: BlsSignature,
}

/// The sync committee's aggregate vote on the parent block (Altair).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct SyncAggregate<P: Preset> {
    /// Participating members (bitvector, JSON: 0x hex of the SSZ bytes).
    pub sync_committee_bits: BitVector<P::SyncCommitteeSize>,
    /// Aggregate signature over the previous slot's block root.
    pub sync_committee_signature: BlsSignature,
}

/// One sync committee member's vote on the head block root (Altair).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct SyncCommitteeMessage {
    /// Slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Head block root signed.
    pub beacon_block_root: Root,
    /// Signer.
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_index: ValidatorIndex,
    /// Signature.
    pub signature: BlsSignature,
}

/// JSON fields a block container does not know, kept in their original order and written back
/// unchanged.
pub type ExtraFields = serde_json::Map<String, serde_json::Value>;

/// An Altair block body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct BeaconBlockBodyAltair<P: Preset> {
    /// Proposer's RANDAO reveal (signature over the epoch).
    pub randao_reveal: BlsSignature,
    /// Eth1 vote.
    pub eth1_data: Eth1Data,
    /// Graffiti.
    pub graffiti: Graffiti,
    /// Proposer slashings.
    pub proposer_slashings: VariableList<ProposerSlashing, P::MaxProposerSlashings>,
    /// Attester slashings.
    pub attester_slashings: VariableList<AttesterSlashing<P>, P::MaxAttesterSlashings>,
    /// Attestations.
    pub attestations: VariableList<Attestation<P>, P::MaxAttestations>,
    /// Deposits.
    pub deposits: VariableList<Deposit, P::MaxDeposits>,
    /// Voluntary exits.
    pub voluntary_exits: VariableList<SignedVoluntaryExit, P::MaxVoluntaryExits>,
    /// Sync committee aggregate.
    pub sync_aggregate: SyncAggregate<P>,
    /// Unknown JSON fields (not part of SSZ or the tree hash).
    #[serde(flatten)]
    #[ssz(skip_serializing, skip_deserializing)]
    #[tree_hash(skip_hashing)]
    pub extra: ExtraFields,
}

/// An Altair block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct BeaconBlockAltair<P: Preset> {
    /// Slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Proposer's validator index.
    #[serde(with = "serde_utils::quoted_u64")]
    pub proposer_index: ValidatorIndex,
    /// Parent block root.
    pub parent_root: Root,
    /// Post-state root.
    pub state_root: Root,
    /// Body.
    pub body: BeaconBlockBodyAltair<P>,
    /// Unknown JSON fields (not part of SSZ or the tree hash).
    #[serde(flatten)]
    #[ssz(skip_serializing, skip_deserializing)]
    #[tree_hash(skip_hashing)]
    pub extra: ExtraFields,
}

impl<P: Preset> BeaconBlockAltair<P> {
    /// The block's header (same `hash_tree_root` as the block).
    pub fn header(&self) -> BeaconBlockHeader {
        BeaconBlockHeader {
            slot: self.slot,
            proposer_index: self.proposer_index,
            parent_root: self.parent_root,
            state_root: self.state_root,
            body_root: Root::of(&self.body),
        }
    }
}

/// A signed Altair block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct SignedBeaconBlockAltair<P: Preset> {
    /// Block.
    pub message: BeaconBlockAltair<P>,
    /// Proposer's signature.
    pub signature: BlsSignature,
    /// Unknown JSON fields (not part of SSZ or the tree hash).
    #[serde(flatten)]
    #[ssz(skip_serializing, skip_deserializing)]
    #[tree_hash(skip_hashing)]
    pub extra: ExtraFields,
}

impl<P: Preset> SignedBeaconBlockAltair<P> {
    /// The block root (`hash_tree_root` of the message).
    pub fn block_root(&self) -> Root {
        Root::of(&self.message)
    }

    /// The signed header of this block.
    pub fn signed_header(&self) -> SignedBeaconBlockHeader {
        SignedBeaconBlockHeader {
            message: self.message.header(),
            signature: self.signature,
        }
    }
}

/// A JSON value that did not decode, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at `{path}`: {message}")]
pub struct JsonError {
    /// Path of the field, e.g. `data.message.body.attestations[0].data.slot` (`.` for the root).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// Decodes JSON into `T`, naming the offending field's path on failure.
pub fn from_json_slice<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| JsonError {
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    })?;
    de.end().map_err(|e| JsonError {
        path: ".".to_string(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// Decodes a JSON string into `T`, naming the offending field's path on failure.
pub fn from_json_str<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, JsonError> {
    from_json_slice(s.as_bytes())
}

/// Decodes an already parsed JSON value into `T`, naming the offending field's path on failure.
pub fn from_json_value<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, JsonError> {
    serde_path_to_error::deserialize(value).map_err(|e| JsonError {
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// `GET /eth/v2/beacon/blocks/20` from Lodestar v1.5.1 (minimal, Altair at genesis).
    const BLOCK20: &str = include_str!("testdata/block20.json");
    /// `GET /eth/v1/beacon/headers/20` of the same chain.
    const HEADER20: &str = include_str!("testdata/header20.json");

    fn block20_value() -> Value {
        serde_json::from_str::<Value>(BLOCK20).unwrap()["data"].clone()
    }

    fn block20() -> SignedBeaconBlockAltair<Minimal> {
        from_json_value(block20_value()).unwrap()
    }

    fn header20_root() -> Root {
        let v: Value = serde_json::from_str(HEADER20).unwrap();
        v["data"]["root"].as_str().unwrap().parse().unwrap()
    }

    #[test]
    fn lodestar_block_json_round_trips_exactly() {
        let block = block20();
        assert_eq!(serde_json::to_value(&block).unwrap(), block20_value());
        assert!(block.extra.is_empty() && block.message.extra.is_empty());
        assert_eq!(block.message.slot, 20);
        assert_eq!(block.message.proposer_index, 13);
        assert_eq!(block.message.body.attestations.len(), 1);
    }

    #[test]
    fn lodestar_block_hashes_to_the_reported_root() {
        let block = block20();
        assert_eq!(block.block_root(), header20_root());
        let header: Value = serde_json::from_str(HEADER20).unwrap();
        let reported: SignedBeaconBlockHeader =
            from_json_value(header["data"]["header"].clone()).unwrap();
        assert_eq!(block.signed_header(), reported);
        assert_eq!(Root::of(&reported.message), header20_root());
    }

    #[test]
    fn block_ssz_round_trip_keeps_the_root() {
        let block = block20();
        let bytes = block.as_ssz_bytes();
        let decoded = SignedBeaconBlockAltair::<Minimal>::from_ssz_bytes(&bytes).unwrap();
        assert_eq!(decoded, block);
        assert_eq!(decoded.block_root(), header20_root());
        // Truncated input is an error, not a panic.
        assert!(
            SignedBeaconBlockAltair::<Minimal>::from_ssz_bytes(&bytes[..bytes.len() - 1]).is_err()
        );
    }

    #[test]
    fn unknown_block_fields_pass_through_without_touching_the_root() {
        let mut value = block20_value();
        value["future_top"] = json!({"a": ["1", "2"]});
        value["message"]["proposer_hint"] = json!("0x01");
        value["message"]["body"]["execution_payload_x"] = json!({"block_number": "7"});
        let block: SignedBeaconBlockAltair<Minimal> = from_json_value(value.clone()).unwrap();
        assert_eq!(block.extra.len(), 1);
        assert_eq!(block.message.extra.len(), 1);
        assert_eq!(block.message.body.extra.len(), 1);
        assert_eq!(serde_json::to_value(&block).unwrap(), value);
        assert_eq!(block.block_root(), header20_root());
    }

    #[test]
    fn malformed_json_names_the_field() {
        let mut value = block20_value();
        value["message"]["body"]["attestations"][0]["data"]["slot"] = json!("nineteen");
        let err =
            from_json_str::<SignedBeaconBlockAltair<Minimal>>(&value.to_string()).unwrap_err();
        assert_eq!(err.path, "message.body.attestations[0].data.slot");

        let mut value = block20_value();
        value["message"]["parent_root"] = json!("0x1234");
        let err =
            from_json_str::<SignedBeaconBlockAltair<Minimal>>(&value.to_string()).unwrap_err();
        assert_eq!(err.path, "message.parent_root");
        assert!(err.message.contains("expected 32 bytes"), "{err}");

        let mut value = block20_value();
        value["message"]["body"]["sync_aggregate"]
            .as_object_mut()
            .unwrap()
            .remove("sync_committee_signature");
        let err =
            from_json_str::<SignedBeaconBlockAltair<Minimal>>(&value.to_string()).unwrap_err();
        assert_eq!(err.path, "message.body.sync_aggregate");
        assert!(err.message.contains("sync_committee_signature"), "{err}");

        let err = from_json_str::<Checkpoint>(r#"{"epoch":"1","root":"0x00"}"#).unwrap_err();
        assert_eq!(err.path, "root");
        let trailing = format!(r#"{{"epoch":"1","root":"{}"}} trailing"#, Root::ZERO);
        let err = from_json_str::<Checkpoint>(&trailing).unwrap_err();
        assert_eq!(err.path, ".");
    }

    #[test]
    fn sync_aggregate_size_follows_the_preset() {
        let minimal = json!({
            "sync_committee_bits": "0xffffffff",
            "sync_committee_signature": BlsSignature::infinity().to_string(),
        });
        let agg: SyncAggregate<Minimal> = from_json_value(minimal.clone()).unwrap();
        assert_eq!(agg.sync_committee_bits.num_set_bits(), 32);
        assert!(from_json_value::<SyncAggregate<Mainnet>>(minimal).is_err());
    }

    #[test]
    fn bitlist_json_is_hex_of_ssz_bytes() {
        // 0x07 = bits 0 and 1 set, length bit at position 2: a committee of 2, both attested.
        let att: Attestation<Minimal> =
            from_json_value(block20_value()["message"]["body"]["attestations"][0].clone()).unwrap();
        assert_eq!(att.aggregation_bits.len(), 2);
        assert_eq!(att.aggregation_bits.num_set_bits(), 2);
        let mut bits = BitList::<typenum::U2048>::with_capacity(3).unwrap();
        bits.set(1, true).unwrap();
        assert_eq!(serde_json::to_value(&bits).unwrap(), json!("0x0a"));
    }

    #[test]
    fn indexed_attestation_uses_quoted_indices() {
        let v = json!({
            "attesting_indices": ["3", "9"],
            "data": {"slot": "1", "index": "0", "beacon_block_root": Root::ZERO,
                     "source": {"epoch": "0", "root": Root::ZERO},
                     "target": {"epoch": "0", "root": Root::ZERO}},
            "signature": BlsSignature::infinity(),
        });
        let ia: IndexedAttestation<Minimal> = from_json_value(v.clone()).unwrap();
        assert_eq!(&ia.attesting_indices[..], &[3, 9]);
        assert_eq!(serde_json::to_value(&ia).unwrap(), v);
    }

    #[test]
    fn fixed_bytes_parse_and_reject() {
        let root: Root = "0x9fca38ea7b8451644d8855412abb316ec06e519406bdba8f688749d1d2507fea"
            .parse()
            .unwrap();
        assert_eq!(root.0[0], 0x9f);
        assert_eq!(Root::of(&root), root, "a root is its own hash_tree_root");
        assert_eq!("00".parse::<Version>(), Err(HexError::MissingPrefix));
        assert_eq!(
            "0x0000".parse::<Version>(),
            Err(HexError::WrongLength {
                expected: 4,
                actual: 2
            })
        );
        assert!(matches!(
            "0xzz000000".parse::<Version>(),
            Err(HexError::InvalidHex(_))
        ));
        assert!(from_json_str::<Root>("12").is_err());
    }

    #[test]
    fn quoted_integers_in_json() {
        let cp = Checkpoint {
            epoch: 18446744073709551615,
            root: Root::ZERO,
        };
        let v = serde_json::to_value(cp).unwrap();
        assert_eq!(v["epoch"], json!("18446744073709551615"));
        assert_eq!(from_json_value::<Checkpoint>(v).unwrap(), cp);
    }
}
