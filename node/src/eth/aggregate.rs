//! Aggregation duties: the aggregator containers of phase0 (attestation aggregates) and Altair
//! (sync committee contributions), the aggregator selection rules and their signing roots.
//!
//! A validator learns whether it aggregates from its *selection proof*, a signature over the
//! slot (attestations) or over [`SyncAggregatorSelectionData`] (sync committees): the first
//! eight bytes of the proof's SHA-256, as a little-endian integer, modulo a committee-dependent
//! number, must be zero ([`is_aggregator`], [`is_sync_committee_aggregator`]). BLS signatures
//! are unique, so a distributed validator's combined proof — and with it the decision — is the
//! same on every node.
//!
//! JSON follows the beacon API like [`super::types`]: quoted integers, `0x` hex bytes and
//! bitfields.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ssz_derive::{Decode, Encode};
use ssz_types::typenum::Unsigned;
use ssz_types::BitVector;
use tree_hash_derive::TreeHash;

use super::signing::{compute_signing_root, ForkSchedule};
use super::types::{Attestation, BlsSignature, DomainType, Preset, Root, Slot, ValidatorIndex};

/// `TARGET_AGGREGATORS_PER_COMMITTEE`.
pub const TARGET_AGGREGATORS_PER_COMMITTEE: u64 = 16;
/// `TARGET_AGGREGATORS_PER_SYNC_SUBCOMMITTEE`.
pub const TARGET_AGGREGATORS_PER_SYNC_SUBCOMMITTEE: u64 = 16;
/// `SYNC_COMMITTEE_SUBNET_COUNT`.
pub const SYNC_COMMITTEE_SUBNET_COUNT: u64 = 4;

/// The number of members of one sync subcommittee of preset `P`.
pub fn sync_subcommittee_size<P: Preset>() -> u64 {
    P::SyncSubcommitteeSize::to_u64()
}

/// `bytes_to_uint64(hash(proof)[0:8]) % modulo == 0`.
fn selected(proof: &BlsSignature, modulo: u64) -> bool {
    let hash = Sha256::digest(proof.0);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first) % modulo.max(1) == 0
}

/// `is_aggregator`: whether the holder of `selection_proof` aggregates its committee of
/// `committee_length` members (modulo `max(1, committee_length / 16)`).
pub fn is_aggregator(committee_length: u64, selection_proof: &BlsSignature) -> bool {
    selected(
        selection_proof,
        committee_length / TARGET_AGGREGATORS_PER_COMMITTEE,
    )
}

/// `is_sync_committee_aggregator`: whether the holder of `selection_proof` aggregates its sync
/// subcommittee (modulo `max(1, SYNC_COMMITTEE_SIZE / 4 / 16)`).
pub fn is_sync_committee_aggregator<P: Preset>(selection_proof: &BlsSignature) -> bool {
    selected(
        selection_proof,
        sync_subcommittee_size::<P>() / TARGET_AGGREGATORS_PER_SYNC_SUBCOMMITTEE,
    )
}

/// The sync subcommittees (subnets) a member sits in, from its positions in the committee
/// (`validator_sync_committee_indices` of its sync duty), ascending and without repeats.
pub fn sync_subcommittees<P: Preset>(committee_positions: &[u64]) -> Vec<u64> {
    let size = sync_subcommittee_size::<P>();
    let mut out: Vec<u64> = committee_positions.iter().map(|p| p / size).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// An aggregate attestation with the aggregator's proof of selection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct AggregateAndProof<P: Preset> {
    /// The aggregator.
    #[serde(with = "serde_utils::quoted_u64")]
    pub aggregator_index: ValidatorIndex,
    /// The aggregate.
    pub aggregate: Attestation<P>,
    /// The aggregator's signature over the slot.
    pub selection_proof: BlsSignature,
}

/// An [`AggregateAndProof`] signed by the aggregator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct SignedAggregateAndProof<P: Preset> {
    /// The message.
    pub message: AggregateAndProof<P>,
    /// The aggregator's signature.
    pub signature: BlsSignature,
}

/// What a sync committee selection proof signs.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Encode,
    Decode,
    TreeHash,
)]
pub struct SyncAggregatorSelectionData {
    /// Slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Subcommittee (subnet) index.
    #[serde(with = "serde_utils::quoted_u64")]
    pub subcommittee_index: u64,
}

/// The aggregate of one sync subcommittee's messages over a block root (Altair).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct SyncCommitteeContribution<P: Preset> {
    /// Slot.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// The block root signed.
    pub beacon_block_root: Root,
    /// Subcommittee index.
    #[serde(with = "serde_utils::quoted_u64")]
    pub subcommittee_index: u64,
    /// Participating subcommittee members (bitvector, JSON: 0x hex of the SSZ bytes).
    pub aggregation_bits: BitVector<P::SyncSubcommitteeSize>,
    /// Aggregate signature.
    pub signature: BlsSignature,
}

/// A contribution with the aggregator's proof of selection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct ContributionAndProof<P: Preset> {
    /// The aggregator.
    #[serde(with = "serde_utils::quoted_u64")]
    pub aggregator_index: ValidatorIndex,
    /// The contribution.
    pub contribution: SyncCommitteeContribution<P>,
    /// The aggregator's signature over [`SyncAggregatorSelectionData`].
    pub selection_proof: BlsSignature,
}

/// A [`ContributionAndProof`] signed by the aggregator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode, TreeHash)]
#[serde(bound = "")]
pub struct SignedContributionAndProof<P: Preset> {
    /// The message.
    pub message: ContributionAndProof<P>,
    /// The aggregator's signature.
    pub signature: BlsSignature,
}

impl ForkSchedule {
    /// Signing root of an [`AggregateAndProof`] (domain `AGGREGATE_AND_PROOF` at the epoch of
    /// the aggregate's slot).
    pub fn aggregate_and_proof_signing_root<P: Preset>(&self, m: &AggregateAndProof<P>) -> Root {
        let epoch = self.epoch_at_slot(m.aggregate.data.slot);
        compute_signing_root(m, self.domain(DomainType::AGGREGATE_AND_PROOF, epoch))
    }

    /// Signing root of a sync committee selection proof (domain
    /// `SYNC_COMMITTEE_SELECTION_PROOF` at the epoch of the slot).
    pub fn sync_selection_proof_signing_root(&self, d: &SyncAggregatorSelectionData) -> Root {
        let epoch = self.epoch_at_slot(d.slot);
        compute_signing_root(
            d,
            self.domain(DomainType::SYNC_COMMITTEE_SELECTION_PROOF, epoch),
        )
    }

    /// Signing root of a [`ContributionAndProof`] (domain `CONTRIBUTION_AND_PROOF` at the
    /// epoch of the contribution's slot).
    pub fn contribution_and_proof_signing_root<P: Preset>(
        &self,
        m: &ContributionAndProof<P>,
    ) -> Root {
        let epoch = self.epoch_at_slot(m.contribution.slot);
        compute_signing_root(m, self.domain(DomainType::CONTRIBUTION_AND_PROOF, epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::types::{from_json_str, AttestationData, Checkpoint, Mainnet, Minimal};
    use crate::keys::{interop::interop_secret, tbls};
    use ssz::{Decode, Encode};
    use ssz_types::BitList;

    fn proof_with_hash_prefix(want_zero_mod: u64, zero: bool) -> BlsSignature {
        // Search a byte string whose hash is (not) divisible, to pin the rule's arithmetic.
        for i in 0u32.. {
            let mut sig = [0u8; 96];
            sig[..4].copy_from_slice(&i.to_le_bytes());
            let s = BlsSignature(sig);
            if selected(&s, want_zero_mod) == zero {
                return s;
            }
        }
        unreachable!()
    }

    #[test]
    fn aggregator_selection_follows_the_spec_modulo() {
        // Committees below 32 members: everyone aggregates.
        let any = BlsSignature([7; 96]);
        assert!(is_aggregator(1, &any));
        assert!(is_aggregator(31, &any));
        // 128 members: modulo 8.
        let yes = proof_with_hash_prefix(8, true);
        let no = proof_with_hash_prefix(8, false);
        assert!(is_aggregator(128, &yes));
        assert!(!is_aggregator(128, &no));
        let h = Sha256::digest(yes.0);
        assert_eq!(u64::from_le_bytes(h[..8].try_into().unwrap()) % 8, 0);
        // Minimal sync subcommittees (8 members): everyone; mainnet (128): modulo 8.
        assert!(is_sync_committee_aggregator::<Minimal>(&no));
        assert!(!is_sync_committee_aggregator::<Mainnet>(&no));
        assert!(is_sync_committee_aggregator::<Mainnet>(&yes));
        assert_eq!(
            sync_subcommittees::<Minimal>(&[3, 17, 20, 9]),
            vec![0, 1, 2]
        );
        assert_eq!(sync_subcommittees::<Mainnet>(&[511, 0, 130]), vec![0, 1, 3]);
    }

    fn aggregate() -> AggregateAndProof<Minimal> {
        let mut bits = BitList::with_capacity(5).unwrap();
        bits.set(1, true).unwrap();
        bits.set(4, true).unwrap();
        AggregateAndProof {
            aggregator_index: 17,
            aggregate: Attestation {
                aggregation_bits: bits,
                data: AttestationData {
                    slot: 9,
                    index: 0,
                    beacon_block_root: Root([1; 32]),
                    source: Checkpoint {
                        epoch: 0,
                        root: Root([2; 32]),
                    },
                    target: Checkpoint {
                        epoch: 1,
                        root: Root([3; 32]),
                    },
                },
                signature: BlsSignature([4; 96]),
            },
            selection_proof: BlsSignature([5; 96]),
        }
    }

    #[test]
    fn containers_round_trip_json_and_ssz() {
        let a = aggregate();
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains(r#""aggregator_index":"17""#), "{json}");
        assert!(json.contains(r#""aggregation_bits":"0x32""#), "{json}");
        assert_eq!(
            from_json_str::<AggregateAndProof<Minimal>>(&json).unwrap(),
            a
        );
        assert_eq!(
            AggregateAndProof::<Minimal>::from_ssz_bytes(&a.as_ssz_bytes()).unwrap(),
            a
        );
        let mut bits = BitVector::new();
        bits.set(0, true).unwrap();
        bits.set(7, true).unwrap();
        let c = ContributionAndProof::<Minimal> {
            aggregator_index: 3,
            contribution: SyncCommitteeContribution {
                slot: 12,
                beacon_block_root: Root([8; 32]),
                subcommittee_index: 2,
                aggregation_bits: bits,
                signature: BlsSignature([6; 96]),
            },
            selection_proof: BlsSignature([9; 96]),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""aggregation_bits":"0x81""#), "{json}");
        assert!(json.contains(r#""subcommittee_index":"2""#), "{json}");
        assert_eq!(
            from_json_str::<ContributionAndProof<Minimal>>(&json).unwrap(),
            c
        );
        // A mainnet contribution has 128 bits: a minimal-sized bitvector does not fit.
        let err = from_json_str::<ContributionAndProof<Mainnet>>(&json).unwrap_err();
        assert!(err.path.contains("aggregation_bits"), "{err}");
    }

    #[test]
    fn signing_roots_verify_with_the_signers_key() {
        let schedule = crate::duty::fixtures::altair_schedule(0, 6);
        let sk = interop_secret(3);
        let pk = sk.sk_to_pk();
        let a = aggregate();
        let root = schedule.aggregate_and_proof_signing_root(&a);
        let sig = tbls::sign(&sk, &root.0);
        assert!(tbls::verify(&pk, &root.0, &sig));
        // Another domain gives another root.
        let sel = SyncAggregatorSelectionData {
            slot: 9,
            subcommittee_index: 0,
        };
        assert_ne!(schedule.sync_selection_proof_signing_root(&sel), root);
        assert_ne!(
            schedule.sync_selection_proof_signing_root(&sel),
            schedule.selection_proof_signing_root(9)
        );
    }
}
