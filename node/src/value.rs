//! The values that flow between the workflow stages, beneath all of them.
//!
//! - [`DutyValue`]: the unsigned data a duty signs, for every DV in the duty — what the fetcher
//!   produces, consensus decides (with a deterministic encoding: a kind byte and SSZ, and its
//!   SHA-256 as the consensus hash) and the duty DB stores.
//! - [`Signed`]: a fully signed duty object — what signature aggregation builds, broadcast
//!   submits and the tracker watches the chain for.

use sha2::{Digest, Sha256};
use ssz::{Decode, Encode};
use ssz_derive::{Decode, Encode};

use crate::consensus::msg::Hash;
use crate::consensus::qbft::Value;
use crate::duty::{AttesterDef, DutyKind};
use crate::eth::types::{
    Attestation, AttestationData, BeaconBlockAltair, BlsPubkey, BlsSignature, Preset, Root,
    SignedBeaconBlockAltair, SyncCommitteeMessage,
};

/// One DV's attestation data, with its attester duty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct AttesterEntry {
    /// The DV's duty.
    pub def: AttesterDef,
    /// The data to sign.
    pub data: AttestationData,
}

/// The block a DV proposes.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub struct ProposerEntry<P: Preset> {
    /// The proposing DV.
    pub pubkey: BlsPubkey,
    /// The unsigned block.
    pub block: BeaconBlockAltair<P>,
}

/// The value one duty's consensus decides.
#[derive(Clone, Debug, PartialEq)]
pub enum DutyValue<P: Preset> {
    /// Attestation data of every attesting DV, sorted by pubkey, one entry per DV.
    Attester(Vec<AttesterEntry>),
    /// The proposed block.
    Proposer(Box<ProposerEntry<P>>),
    /// The head block root the sync committee members sign.
    SyncMessage(Root),
}

// Blocks decoded from SSZ have no unknown JSON fields; equality is total on what remains.
impl<P: Preset> Eq for DutyValue<P> {}

impl<P: Preset> DutyValue<P> {
    /// The duty kind this value is for.
    pub fn kind(&self) -> DutyKind {
        match self {
            DutyValue::Attester(_) => DutyKind::Attester,
            DutyValue::Proposer(_) => DutyKind::Proposer,
            DutyValue::SyncMessage(_) => DutyKind::SyncMessage,
        }
    }

    /// The DVs whose signatures this value asks for (empty for sync messages: the root is
    /// shared, members come from the duty definitions).
    pub fn pubkeys(&self) -> Vec<BlsPubkey> {
        match self {
            DutyValue::Attester(e) => e.iter().map(|e| e.def.pubkey).collect(),
            DutyValue::Proposer(p) => vec![p.pubkey],
            DutyValue::SyncMessage(_) => Vec::new(),
        }
    }
}

impl<P: Preset> Value for DutyValue<P> {
    fn value_hash(&self) -> Hash {
        Sha256::digest(self.to_bytes()).into()
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.kind().code() as u8];
        match self {
            DutyValue::Attester(e) => out.extend(e.as_ssz_bytes()),
            DutyValue::Proposer(p) => out.extend(p.as_ssz_bytes()),
            DutyValue::SyncMessage(r) => out.extend(r.as_ssz_bytes()),
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let (&tag, body) = bytes.split_first().ok_or("empty duty value")?;
        let err = |what: &str, e: ssz::DecodeError| format!("invalid {what} value: {e:?}");
        match DutyKind::from_code(u64::from(tag)) {
            Some(DutyKind::Attester) => Vec::<AttesterEntry>::from_ssz_bytes(body)
                .map(DutyValue::Attester)
                .map_err(|e| err("attester", e)),
            Some(DutyKind::Proposer) => ProposerEntry::<P>::from_ssz_bytes(body)
                .map(|p| DutyValue::Proposer(Box::new(p)))
                .map_err(|e| err("proposer", e)),
            Some(DutyKind::SyncMessage) => Root::from_ssz_bytes(body)
                .map(DutyValue::SyncMessage)
                .map_err(|e| err("sync message", e)),
            _ => Err(format!("unknown duty value tag {tag}")),
        }
    }
}

/// A fully signed duty object.
#[derive(Clone, Debug, PartialEq)]
pub enum Signed<P: Preset> {
    /// An attestation with one aggregation bit.
    Attestation(Box<Attestation<P>>),
    /// A signed block.
    Block(Box<SignedBeaconBlockAltair<P>>),
    /// The combined RANDAO reveal.
    Randao(BlsSignature),
    /// A sync committee message.
    SyncMessage(SyncCommitteeMessage),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duty::fixtures::attester;
    use crate::eth::types::Minimal;

    type V = DutyValue<Minimal>;

    #[test]
    fn value_encoding_round_trips_and_rejects_garbage() {
        let pk = BlsPubkey([3; 48]);
        let v = V::Attester(vec![attester(pk, 9, 1, 5)]);
        let bytes = v.to_bytes();
        assert_eq!(V::from_bytes(&bytes).unwrap(), v);
        assert_eq!(v.value_hash(), V::from_bytes(&bytes).unwrap().value_hash());
        assert_ne!(v.value_hash(), V::SyncMessage(Root([5; 32])).value_hash());
        assert!(V::from_bytes(&[]).is_err());
        assert!(V::from_bytes(&[9, 1, 2]).is_err());
        assert!(V::from_bytes(&bytes[..bytes.len() - 3]).is_err());
    }
}
