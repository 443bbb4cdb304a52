//! Duties: what the cluster must do in a slot, and for which distributed validators (DVs).
//!
//! A [`Duty`] is a slot and a [`DutyKind`]; the whole cluster runs one duty for all its DVs at
//! once (one consensus instance, one decided value covering every DV with that duty in the
//! slot). The per-DV details the beacon node assigned are the *definitions*
//! ([`AttesterDef`], [`ProposerDef`], [`SyncDef`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use ssz_derive::{Decode, Encode};

use crate::consensus::msg::InstanceId;
use crate::eth::beacon::{AttesterDuty, ProposerDuty, SyncDuty};
use crate::eth::types::{BlsPubkey, CommitteeIndex, Slot, ValidatorIndex};

/// The kinds of duty the workflow runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DutyKind {
    /// Attest to the head in a slot (consensus on the attestation data).
    Attester,
    /// Propose a block (consensus on the unsigned block).
    Proposer,
    /// Combine the proposer's RANDAO reveal (no consensus: the signed epoch is fixed).
    Randao,
    /// Sync committee message over the head block root (consensus on the root).
    SyncMessage,
    /// Combine the attesters' aggregator selection proofs of a slot (no consensus: the signed
    /// slot is fixed). Remote-signer mode.
    SelectionProof,
    /// Combine the sync committee members' selection proofs of a slot, one per subcommittee
    /// (no consensus). Remote-signer mode.
    SyncSelectionProof,
    /// Aggregate the attestations of a slot's committees with a DV aggregator (consensus on
    /// the aggregates). Remote-signer mode.
    Aggregation,
    /// Aggregate the sync committee messages of a slot's subcommittees with a DV aggregator
    /// (consensus on the contributions). Remote-signer mode.
    SyncContribution,
    /// Combine a voluntary exit (no consensus: every operator asks for the same exit; it only
    /// combines when a threshold of them did).
    Exit,
}

impl DutyKind {
    /// All kinds.
    pub const ALL: [DutyKind; 9] = [
        DutyKind::Attester,
        DutyKind::Proposer,
        DutyKind::Randao,
        DutyKind::SyncMessage,
        DutyKind::SelectionProof,
        DutyKind::SyncSelectionProof,
        DutyKind::Aggregation,
        DutyKind::SyncContribution,
        DutyKind::Exit,
    ];

    /// Code used in consensus instance ids and on the wire.
    pub const fn code(self) -> u64 {
        match self {
            DutyKind::Attester => 1,
            DutyKind::Proposer => 2,
            DutyKind::Randao => 3,
            DutyKind::SyncMessage => 4,
            DutyKind::SelectionProof => 5,
            DutyKind::SyncSelectionProof => 6,
            DutyKind::Aggregation => 7,
            DutyKind::SyncContribution => 8,
            DutyKind::Exit => 9,
        }
    }

    /// The kind of a wire code.
    pub fn from_code(code: u64) -> Option<DutyKind> {
        DutyKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// Snake-case name used in metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            DutyKind::Attester => "attester",
            DutyKind::Proposer => "proposer",
            DutyKind::Randao => "randao",
            DutyKind::SyncMessage => "sync_message",
            DutyKind::SelectionProof => "selection_proof",
            DutyKind::SyncSelectionProof => "sync_selection_proof",
            DutyKind::Aggregation => "aggregation",
            DutyKind::SyncContribution => "sync_contribution",
            DutyKind::Exit => "exit",
        }
    }

    /// Whether the duty's participants are known when it is scheduled. Aggregation duties are
    /// scheduled for every attester (sync member), but only the DVs whose combined selection
    /// proof elects them aggregate: the stage that runs them reports those to the tracker.
    pub const fn participants_known_when_scheduled(self) -> bool {
        !matches!(self, DutyKind::Aggregation | DutyKind::SyncContribution)
    }
}

impl fmt::Display for DutyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One duty of the cluster: a slot and a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Duty {
    /// Slot of the duty.
    #[serde(with = "serde_utils::quoted_u64")]
    pub slot: Slot,
    /// Kind of the duty.
    pub kind: DutyKind,
}

impl Duty {
    /// A duty.
    pub const fn new(slot: Slot, kind: DutyKind) -> Duty {
        Duty { slot, kind }
    }

    /// The consensus instance deciding this duty's value.
    pub fn instance_id(&self) -> InstanceId {
        InstanceId {
            slot: self.slot,
            duty: self.kind.code(),
        }
    }
}

impl fmt::Display for Duty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.slot, self.kind)
    }
}

/// One DV's attester duty in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Encode, Decode)]
pub struct AttesterDef {
    /// DV pubkey.
    pub pubkey: BlsPubkey,
    /// Validator index of the DV.
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
    /// Position in the committee (the aggregation bit).
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_committee_index: u64,
}

impl From<&AttesterDuty> for AttesterDef {
    fn from(d: &AttesterDuty) -> Self {
        AttesterDef {
            pubkey: d.pubkey,
            validator_index: d.validator_index,
            committee_index: d.committee_index,
            committee_length: d.committee_length,
            committees_at_slot: d.committees_at_slot,
            validator_committee_index: d.validator_committee_index,
        }
    }
}

/// One DV's proposer duty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProposerDef {
    /// DV pubkey.
    pub pubkey: BlsPubkey,
    /// Validator index of the DV.
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_index: ValidatorIndex,
}

impl From<&ProposerDuty> for ProposerDef {
    fn from(d: &ProposerDuty) -> Self {
        ProposerDef {
            pubkey: d.pubkey,
            validator_index: d.validator_index,
        }
    }
}

/// One DV's sync committee membership (for the whole period).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyncDef {
    /// DV pubkey.
    pub pubkey: BlsPubkey,
    /// Validator index of the DV.
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_index: ValidatorIndex,
}

impl From<&SyncDuty> for SyncDef {
    fn from(d: &SyncDuty) -> Self {
        SyncDef {
            pubkey: d.pubkey,
            validator_index: d.validator_index,
        }
    }
}

/// One DV's seat in one sync subcommittee (a subnet): what its sync selection proof and
/// contribution are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SyncSubnetDef {
    /// DV pubkey.
    pub pubkey: BlsPubkey,
    /// Validator index of the DV.
    #[serde(with = "serde_utils::quoted_u64")]
    pub validator_index: ValidatorIndex,
    /// The subcommittee (subnet) index.
    #[serde(with = "serde_utils::quoted_u64")]
    pub subcommittee_index: u64,
}

/// The DVs taking part in one duty, with their definitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DutyDefs {
    /// Attesters of the slot (at least one).
    Attester(Vec<AttesterDef>),
    /// The proposer of the slot (also the signer of the RANDAO reveal).
    Proposer(ProposerDef),
    /// Sync committee members (at least one).
    SyncMessage(Vec<SyncDef>),
    /// Attesters of the slot whose selection proofs are combined.
    SelectionProof(Vec<AttesterDef>),
    /// Sync committee seats (DV and subcommittee) whose selection proofs are combined.
    SyncSelectionProof(Vec<SyncSubnetDef>),
    /// Attesters of the slot that may aggregate (those the combined proof elects do).
    Aggregation(Vec<AttesterDef>),
    /// Sync committee seats that may aggregate their subcommittee.
    SyncContribution(Vec<SyncSubnetDef>),
    /// The proposer whose RANDAO reveal is combined ahead of the slot.
    Randao(ProposerDef),
}

impl DutyDefs {
    /// The kind of duty these definitions are for.
    pub fn kind(&self) -> DutyKind {
        match self {
            DutyDefs::Attester(_) => DutyKind::Attester,
            DutyDefs::Proposer(_) => DutyKind::Proposer,
            DutyDefs::SyncMessage(_) => DutyKind::SyncMessage,
            DutyDefs::SelectionProof(_) => DutyKind::SelectionProof,
            DutyDefs::SyncSelectionProof(_) => DutyKind::SyncSelectionProof,
            DutyDefs::Aggregation(_) => DutyKind::Aggregation,
            DutyDefs::SyncContribution(_) => DutyKind::SyncContribution,
            DutyDefs::Randao(_) => DutyKind::Randao,
        }
    }

    /// The DV pubkeys taking part.
    pub fn pubkeys(&self) -> Vec<BlsPubkey> {
        let mut out: Vec<BlsPubkey> = match self {
            DutyDefs::Attester(d) | DutyDefs::SelectionProof(d) | DutyDefs::Aggregation(d) => {
                d.iter().map(|d| d.pubkey).collect()
            }
            DutyDefs::Proposer(d) | DutyDefs::Randao(d) => vec![d.pubkey],
            DutyDefs::SyncMessage(d) => d.iter().map(|d| d.pubkey).collect(),
            DutyDefs::SyncSelectionProof(d) | DutyDefs::SyncContribution(d) => {
                d.iter().map(|d| d.pubkey).collect()
            }
        };
        out.dedup();
        out
    }
}

/// A duty due now, with its definitions (what the scheduler fires).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledDuty {
    /// The duty.
    pub duty: Duty,
    /// Its participants.
    pub defs: DutyDefs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for k in DutyKind::ALL {
            assert_eq!(DutyKind::from_code(k.code()), Some(k));
        }
        assert_eq!(DutyKind::from_code(0), None);
        let d = Duty::new(7, DutyKind::SyncMessage);
        assert_eq!(d.instance_id(), InstanceId { slot: 7, duty: 4 });
        assert_eq!(d.to_string(), "7/sync_message");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"slot":"7","kind":"sync_message"}"#);
        assert_eq!(serde_json::from_str::<Duty>(&json).unwrap(), d);
    }
}

/// Shared fixtures of the workflow unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::HashMap;
    use std::sync::Arc;

    use rand::SeedableRng;

    use crate::duty::AttesterDef;
    use crate::eth::signing::{ForkName, ForkSchedule, ScheduledFork};
    use crate::eth::types::{AttestationData, BlsPubkey, Checkpoint, Root, Version};
    use crate::keys::tbls;
    use crate::parsig::DvShares;
    use crate::value::AttesterEntry;

    /// Nodes and threshold of the test cluster.
    pub const N: usize = 4;
    /// Threshold.
    pub const T: usize = 3;

    /// An Altair-from-genesis chain with 8-slot epochs.
    pub fn altair_schedule(genesis_time: u64, seconds_per_slot: u64) -> ForkSchedule {
        ForkSchedule::new(
            genesis_time,
            Root([9; 32]),
            seconds_per_slot,
            8,
            vec![ScheduledFork {
                name: ForkName::Altair,
                version: Version([1, 0, 0, 1]),
                epoch: 0,
            }],
        )
        .unwrap()
    }

    /// A 1-second-slot Altair chain.
    pub fn schedule() -> Arc<ForkSchedule> {
        Arc::new(altair_schedule(1_000, 1))
    }

    /// A DV: its secret, pubkey and secret shares (index i → share i + 1).
    pub struct Dv {
        pub secret: tbls::SecretKey,
        pub pubkey: BlsPubkey,
        pub shares: Vec<tbls::SecretKey>,
    }

    /// `count` DVs split 3-of-4.
    pub fn dvs(count: usize) -> Vec<Dv> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let mut out: Vec<Dv> = (0..count)
            .map(|_| {
                let secret = tbls::random_secret(&mut rng);
                let shares = tbls::split(&secret, N, T, &mut rng).unwrap();
                Dv {
                    pubkey: BlsPubkey(secret.sk_to_pk().to_bytes()),
                    secret,
                    shares,
                }
            })
            .collect();
        out.sort_by_key(|d| d.pubkey);
        out
    }

    /// The public shares of `dvs`.
    pub fn dv_shares(dvs: &[Dv]) -> DvShares {
        DvShares {
            shares: dvs
                .iter()
                .map(|d| (d.pubkey, d.shares.iter().map(|s| s.sk_to_pk()).collect()))
                .collect::<HashMap<_, _>>(),
        }
    }

    /// An attester entry of `pubkey` at `slot` (8 slots per epoch), committee 0, bit `bit`,
    /// voting for head `head`.
    pub fn attester(pubkey: BlsPubkey, slot: u64, bit: u64, head: u8) -> AttesterEntry {
        let epoch = slot / 8;
        AttesterEntry {
            def: AttesterDef {
                pubkey,
                validator_index: 10 + bit,
                committee_index: 0,
                committee_length: 16,
                committees_at_slot: 1,
                validator_committee_index: bit,
            },
            data: AttestationData {
                slot,
                index: 0,
                beacon_block_root: Root([head; 32]),
                source: Checkpoint {
                    epoch: epoch.saturating_sub(1),
                    root: Root([1; 32]),
                },
                target: Checkpoint {
                    epoch,
                    root: Root([2; 32]),
                },
            },
        }
    }
}
