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
use crate::eth::aggregate::{
    SignedAggregateAndProof, SignedContributionAndProof, SyncCommitteeContribution,
};
use crate::eth::types::{
    Attestation, AttestationData, BeaconBlockAltair, BlsPubkey, BlsSignature, CommitteeIndex,
    Preset, Root, SignedBeaconBlockAltair, SignedVoluntaryExit, SyncCommitteeMessage,
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

/// The aggregate of one committee that the cluster's aggregators sign.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct AggregateEntry<P: Preset> {
    /// The committee.
    pub committee_index: CommitteeIndex,
    /// The aggregate attestation (its data is the committee's decided attestation data).
    pub aggregate: Attestation<P>,
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
    /// One aggregate per committee with a DV aggregator, sorted by committee index.
    Aggregation(Vec<AggregateEntry<P>>),
    /// One contribution per subcommittee with a DV aggregator, sorted by subcommittee index.
    SyncContribution(Vec<SyncCommitteeContribution<P>>),
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
            DutyValue::Aggregation(_) => DutyKind::Aggregation,
            DutyValue::SyncContribution(_) => DutyKind::SyncContribution,
        }
    }

    /// The DVs whose slashable signatures this value asks for: the DVs whose consensus must
    /// not overlap (rule 3). Empty for values that are not slashable (sync messages,
    /// aggregates, contributions: their signers come from the duty definitions).
    pub fn pubkeys(&self) -> Vec<BlsPubkey> {
        match self {
            DutyValue::Attester(e) => e.iter().map(|e| e.def.pubkey).collect(),
            DutyValue::Proposer(p) => vec![p.pubkey],
            DutyValue::SyncMessage(_)
            | DutyValue::Aggregation(_)
            | DutyValue::SyncContribution(_) => Vec::new(),
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
            DutyValue::Aggregation(a) => out.extend(a.as_ssz_bytes()),
            DutyValue::SyncContribution(c) => out.extend(c.as_ssz_bytes()),
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
            Some(DutyKind::Aggregation) => Vec::<AggregateEntry<P>>::from_ssz_bytes(body)
                .map(DutyValue::Aggregation)
                .map_err(|e| err("aggregation", e)),
            Some(DutyKind::SyncContribution) => {
                Vec::<SyncCommitteeContribution<P>>::from_ssz_bytes(body)
                    .map(DutyValue::SyncContribution)
                    .map_err(|e| err("sync contribution", e))
            }
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
    /// A combined aggregator selection proof.
    SelectionProof(BlsSignature),
    /// A combined sync committee selection proof.
    SyncSelectionProof(BlsSignature),
    /// A signed aggregate and proof.
    AggregateAndProof(Box<SignedAggregateAndProof<P>>),
    /// A signed sync committee contribution and proof.
    ContributionAndProof(Box<SignedContributionAndProof<P>>),
    /// A signed voluntary exit.
    Exit(SignedVoluntaryExit),
}

impl<P: Preset> Signed<P> {
    /// The DV's (combined) signature in the object.
    pub fn signature(&self) -> BlsSignature {
        match self {
            Signed::Attestation(a) => a.signature,
            Signed::Block(b) => b.signature,
            Signed::Randao(s) | Signed::SelectionProof(s) | Signed::SyncSelectionProof(s) => *s,
            Signed::SyncMessage(m) => m.signature,
            Signed::AggregateAndProof(a) => a.signature,
            Signed::ContributionAndProof(c) => c.signature,
            Signed::Exit(e) => e.signature,
        }
    }
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
