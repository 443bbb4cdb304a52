//! What the harness records from the beacon node: per-epoch committees, proposer duties and
//! sync committees (served only near head, so they are recorded while the chain runs), the
//! validator registry, and every canonical block (fetched at the end).

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use dvnode::eth::{
    beacon::{normalize_committees, BeaconClient, BlockId, Committee, StateId, ValidatorId},
    types::{BlsPubkey, Epoch, Preset, SignedBeaconBlockAltair, Slot, ValidatorIndex},
};
use serde::{Deserialize, Serialize};

/// Everything the analysis needs about the chain of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ChainRecord<P: Preset> {
    /// Slots per epoch of the chain.
    pub slots_per_epoch: u64,
    /// `EPOCHS_PER_SYNC_COMMITTEE_PERIOD`.
    pub epochs_per_sync_period: u64,
    /// Validator registry: index → public key.
    pub pubkeys: Vec<BlsPubkey>,
    /// Spec-shaped committees per epoch.
    pub committees: BTreeMap<Epoch, Vec<Committee>>,
    /// Proposer per slot (from proposer duties).
    pub proposers: BTreeMap<Slot, ValidatorIndex>,
    /// Sync committee per period: position → validator index.
    pub sync_committees: BTreeMap<u64, Vec<ValidatorIndex>>,
    /// Canonical blocks by slot (empty slots absent).
    pub blocks: BTreeMap<Slot, SignedBeaconBlockAltair<P>>,
}

impl<P: Preset> ChainRecord<P> {
    /// An empty record.
    pub fn new(epochs_per_sync_period: u64, pubkeys: Vec<BlsPubkey>) -> Self {
        Self {
            slots_per_epoch: P::SLOTS_PER_EPOCH,
            epochs_per_sync_period,
            pubkeys,
            committees: BTreeMap::new(),
            proposers: BTreeMap::new(),
            sync_committees: BTreeMap::new(),
            blocks: BTreeMap::new(),
        }
    }

    /// The epoch of `slot`.
    pub fn epoch_of(&self, slot: Slot) -> Epoch {
        slot / self.slots_per_epoch
    }

    /// The sync committee period of `epoch`.
    pub fn period_of(&self, epoch: Epoch) -> u64 {
        epoch / self.epochs_per_sync_period.max(1)
    }

    /// The committee `(slot, index)`, if recorded.
    pub fn committee(&self, slot: Slot, index: u64) -> Option<&Committee> {
        self.committees
            .get(&self.epoch_of(slot))?
            .iter()
            .find(|c| c.slot == slot && c.index == index)
    }
}

#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
struct SyncCommitteeData {
    #[serde(with = "serde_utils_quoted_vec")]
    validators: Vec<u64>,
}

/// Decimal-string list (`["1","2"]`) as `Vec<u64>`.
mod serde_utils_quoted_vec {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        v.iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Reads the endpoints [`BeaconClient`] does not cover or that need the quirk handling above.
#[derive(Clone, Debug)]
pub struct Recorder {
    bn: BeaconClient,
    http: reqwest::Client,
    base: String,
}

impl Recorder {
    /// A recorder for the beacon node at `base_url`.
    pub fn new(base_url: &str) -> Result<Self> {
        Ok(Self {
            bn: BeaconClient::new(base_url)?,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?,
            base: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// The typed client.
    pub fn client(&self) -> &BeaconClient {
        &self.bn
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
        serde_json::from_slice(&body).with_context(|| format!("decoding GET {path}"))
    }

    /// Spec-shaped committees of `epoch` from the head state.
    pub async fn committees(&self, epoch: Epoch, slots_per_epoch: u64) -> Result<Vec<Committee>> {
        let raw: Data<Vec<Committee>> = self
            .get_json(&format!(
                "/eth/v1/beacon/states/head/committees?epoch={epoch}"
            ))
            .await?;
        normalize_committees(raw.data, epoch, slots_per_epoch).map_err(|e| anyhow!(e))
    }

    /// Cross-checks committees against the attester duties the node serves for `epoch`
    /// (current or next epoch only) for `indices`. `Err` when the duties could not be read;
    /// otherwise the list of mismatches (empty when everything agrees).
    pub async fn check_committees_against_duties(
        &self,
        epoch: Epoch,
        committees: &[Committee],
        indices: &[ValidatorIndex],
    ) -> Result<Vec<String>> {
        let duties = self.bn.attester_duties(epoch, indices).await?;
        let mut mismatches = Vec::new();
        for d in duties.data {
            let Some(c) = committees
                .iter()
                .find(|c| c.slot == d.slot && c.index == d.committee_index)
            else {
                mismatches.push(format!(
                    "validator {} has a duty at slot {} committee {} that has no recorded committee",
                    d.validator_index, d.slot, d.committee_index
                ));
                continue;
            };
            let pos = d.validator_committee_index as usize;
            if c.validators.get(pos) != Some(&d.validator_index) {
                mismatches.push(format!(
                    "validator {} duty says slot {} committee {} position {pos}, committee has {:?}",
                    d.validator_index,
                    d.slot,
                    d.committee_index,
                    c.validators.get(pos)
                ));
            }
        }
        Ok(mismatches)
    }

    /// Proposers of `epoch` (served for the current epoch).
    pub async fn proposers<P: Preset>(&self, epoch: Epoch) -> Result<Vec<(Slot, ValidatorIndex)>> {
        let duties = self.bn.proposer_duties::<P>(epoch).await?;
        Ok(duties
            .data
            .into_iter()
            .map(|d| (d.slot, d.validator_index))
            .collect())
    }

    /// The sync committee (position → validator) of the period containing `epoch`.
    pub async fn sync_committee(&self, epoch: Epoch) -> Result<Vec<ValidatorIndex>> {
        let d: Data<SyncCommitteeData> = self
            .get_json(&format!(
                "/eth/v1/beacon/states/head/sync_committees?epoch={epoch}"
            ))
            .await?;
        Ok(d.data.validators)
    }

    /// Head slot and finalized epoch of the head state.
    pub async fn progress(&self) -> Result<(Slot, Epoch)> {
        #[derive(Deserialize)]
        struct Cp {
            #[serde(deserialize_with = "quoted")]
            epoch: u64,
        }
        #[derive(Deserialize)]
        struct Finality {
            finalized: Cp,
        }
        fn quoted<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        }
        let head = self.bn.header(BlockId::Head).await?.header.message.slot;
        let f: Data<Finality> = self
            .get_json("/eth/v1/beacon/states/head/finality_checkpoints")
            .await?;
        Ok((head, f.data.finalized.epoch))
    }

    /// Public keys of the whole registry, by index.
    pub async fn pubkeys(&self) -> Result<Vec<BlsPubkey>> {
        let mut vals = self.bn.state_validators(StateId::Head, &[]).await?;
        vals.sort_by_key(|v| v.index);
        for (i, v) in vals.iter().enumerate() {
            if v.index != i as u64 {
                bail!("validator registry has a gap at index {i}");
            }
        }
        Ok(vals.into_iter().map(|v| v.validator.pubkey).collect())
    }

    /// Registry indices of `pubkeys` (fails on an unknown key).
    pub async fn indices_of(&self, pubkeys: &[BlsPubkey]) -> Result<Vec<ValidatorIndex>> {
        let ids: Vec<ValidatorId> = pubkeys.iter().map(|p| ValidatorId::Pubkey(*p)).collect();
        let vals = self.bn.state_validators(StateId::Head, &ids).await?;
        pubkeys
            .iter()
            .map(|p| {
                vals.iter()
                    .find(|v| v.validator.pubkey == *p)
                    .map(|v| v.index)
                    .ok_or_else(|| anyhow!("validator {p} is not in the registry"))
            })
            .collect()
    }

    /// The canonical block at `slot`, `None` for an empty slot.
    pub async fn block<P: Preset>(&self, slot: Slot) -> Result<Option<SignedBeaconBlockAltair<P>>> {
        match self.bn.block::<P>(BlockId::Slot(slot)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e).with_context(|| format!("fetching the block of slot {slot}")),
        }
    }
}

/// A small signed chain for tests: two epochs of 16 interop validators (see [`fixture::record`]).
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use dvnode::{
        eth::{
            signing::{ForkName, ForkSchedule, ScheduledFork},
            types::{
                Attestation, AttestationData, BeaconBlockAltair, BeaconBlockBodyAltair,
                BlsSignature, Checkpoint, Eth1Data, Graffiti, Minimal, Root, SyncAggregate,
                Version,
            },
        },
        keys::{interop::interop_secret, tbls::DST},
    };
    use ssz_types::{BitList, BitVector, VariableList};

    const N: u64 = 16;

    pub(crate) fn schedule() -> ForkSchedule {
        ForkSchedule::new(
            1000,
            Root([7; 32]),
            4,
            8,
            vec![ScheduledFork {
                name: ForkName::Altair,
                version: Version([1, 0, 0, 1]),
                epoch: 0,
            }],
        )
        .unwrap()
    }

    pub(crate) fn sign(v: u64, root: &Root) -> blst::min_pk::Signature {
        interop_secret(v).sign(root.as_bytes(), DST, &[])
    }

    pub(crate) fn aggregate(sigs: &[blst::min_pk::Signature]) -> BlsSignature {
        if sigs.is_empty() {
            return BlsSignature::infinity();
        }
        let refs: Vec<&blst::min_pk::Signature> = sigs.iter().collect();
        let agg = blst::min_pk::AggregateSignature::aggregate(&refs, true).unwrap();
        BlsSignature(agg.to_signature().to_bytes())
    }

    /// Two epochs of a 16-validator chain: committee per slot = the two validators
    /// `2*(slot%8)`, `2*(slot%8)+1`; sync committee = validators 0..4 twice.
    pub(crate) fn record() -> ChainRecord<Minimal> {
        let pubkeys = (0..N)
            .map(|v| BlsPubkey(interop_secret(v).sk_to_pk().to_bytes()))
            .collect();
        let mut rec = ChainRecord::<Minimal>::new(8, pubkeys);
        for epoch in 0..3 {
            rec.committees.insert(
                epoch,
                (0..8)
                    .map(|i| Committee {
                        index: 0,
                        slot: epoch * 8 + i,
                        validators: vec![2 * i, 2 * i + 1],
                    })
                    .collect(),
            );
            for i in 0..8 {
                rec.proposers.insert(epoch * 8 + i, 8 + i);
            }
        }
        rec.sync_committees.insert(0, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        rec
    }

    /// A block at `slot` including attestations `(att_slot, positions)` and sync bits.
    pub(crate) fn block(
        rec: &ChainRecord<Minimal>,
        slot: u64,
        atts: &[(u64, &[usize])],
        sync: &[usize],
        corrupt_att: bool,
    ) -> SignedBeaconBlockAltair<Minimal> {
        let sch = schedule();
        let mut attestations = Vec::new();
        for (att_slot, positions) in atts {
            let data = AttestationData {
                slot: *att_slot,
                index: 0,
                beacon_block_root: Root([9; 32]),
                source: Checkpoint::default(),
                target: Checkpoint {
                    epoch: att_slot / 8,
                    root: Root([3; 32]),
                },
            };
            let committee = rec.committee(*att_slot, 0).unwrap();
            let mut bits = BitList::with_capacity(committee.validators.len()).unwrap();
            let mut sigs = Vec::new();
            for &p in *positions {
                bits.set(p, true).unwrap();
                let mut root = sch.attestation_signing_root(&data);
                if corrupt_att {
                    root.0[0] ^= 1;
                }
                sigs.push(sign(committee.validators[p], &root));
            }
            attestations.push(Attestation {
                aggregation_bits: bits,
                data,
                signature: aggregate(&sigs),
            });
        }
        let parent_root = Root([slot as u8; 32]);
        let committee = &rec.sync_committees[&0];
        let mut sync_bits = BitVector::new();
        let mut sync_sigs = Vec::new();
        for &p in sync {
            sync_bits.set(p, true).unwrap();
            sync_sigs.push(sign(
                committee[p],
                &sch.sync_committee_signing_root(parent_root, slot - 1),
            ));
        }
        let proposer = rec.proposers[&slot];
        let message = BeaconBlockAltair {
            slot,
            proposer_index: proposer,
            parent_root,
            state_root: Root::ZERO,
            body: BeaconBlockBodyAltair {
                randao_reveal: BlsSignature::infinity(),
                eth1_data: Eth1Data::default(),
                graffiti: Graffiti::ZERO,
                proposer_slashings: VariableList::empty(),
                attester_slashings: VariableList::empty(),
                attestations: VariableList::new(attestations).unwrap(),
                deposits: VariableList::empty(),
                voluntary_exits: VariableList::empty(),
                sync_aggregate: SyncAggregate {
                    sync_committee_bits: sync_bits,
                    sync_committee_signature: aggregate(&sync_sigs),
                },
                extra: Default::default(),
            },
            extra: Default::default(),
        };
        let signature = BlsSignature(sign(proposer, &sch.block_signing_root(&message)).to_bytes());
        SignedBeaconBlockAltair {
            message,
            signature,
            extra: Default::default(),
        }
    }

    /// [`record`] with blocks at slots 9, 11 and 12. Epoch 1 = slots 8..16; validators 2k,
    /// 2k+1 attest at slot 8+k. Slot 9 includes slot 8 fully (distance 1) with sync bits 0
    /// and 1; slot 11 includes slot 9 position 0 only (distance 2) and slot 10 fully (distance
    /// 1); slot 12 re-includes slot 10 position 1 (distance 2, not the smallest) with sync
    /// bit 0.
    pub(crate) fn three_blocks() -> ChainRecord<Minimal> {
        let mut rec = record();
        let b9 = block(&rec, 9, &[(8, &[0, 1])], &[0, 1], false);
        let b11 = block(&rec, 11, &[(9, &[0]), (10, &[0, 1])], &[], false);
        let b12 = block(&rec, 12, &[(10, &[1])], &[0], false);
        rec.blocks.insert(9, b9);
        rec.blocks.insert(11, b11);
        rec.blocks.insert(12, b12);
        rec
    }
}
