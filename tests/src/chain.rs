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
