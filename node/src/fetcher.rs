//! Fetcher: the unsigned data of a duty, from this node's beacon node.
//!
//! - attester: attestation data once per committee of the slot, one entry per DV;
//! - proposer: the block, produced with the combined RANDAO reveal;
//! - sync message: the head block root.
//!
//! Requests are retried until the caller's deadline (the beacon node may be briefly
//! unreachable or still processing the slot's block).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::duty::{AttesterDef, ProposerDef};
use crate::eth::beacon::{BeaconClient, BeaconError, BlockId};
use crate::eth::types::{BlsSignature, Preset, Slot};
use crate::value::{AttesterEntry, DutyValue, ProposerEntry};

/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Fetcher {
    bn: BeaconClient,
}

async fn retry<T, F, Fut>(deadline: Instant, what: &str, mut f: F) -> Result<T, BeaconError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BeaconError>>,
{
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() + RETRY_PAUSE < deadline => {
                debug!(what, error = %e, "fetch failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Fetcher {
    /// A fetcher using `bn`.
    pub fn new(bn: BeaconClient) -> Fetcher {
        Fetcher { bn }
    }

    /// Attestation data for every DV of `defs` at `slot`, sorted by pubkey (one beacon node
    /// request per committee).
    pub async fn attester(
        &self,
        slot: Slot,
        defs: &[AttesterDef],
        deadline: Instant,
    ) -> Result<Vec<AttesterEntry>, BeaconError> {
        let mut per_committee = BTreeMap::new();
        for d in defs {
            if per_committee.contains_key(&d.committee_index) {
                continue;
            }
            let data = retry(deadline, "attestation data", || {
                self.bn.attestation_data(slot, d.committee_index)
            })
            .await?;
            per_committee.insert(d.committee_index, data);
        }
        let mut entries: Vec<AttesterEntry> = defs
            .iter()
            .filter_map(|d| {
                per_committee
                    .get(&d.committee_index)
                    .map(|data| AttesterEntry {
                        def: *d,
                        data: *data,
                    })
            })
            .collect();
        entries.sort_by_key(|e| e.def.pubkey);
        entries.dedup_by_key(|e| e.def.pubkey);
        Ok(entries)
    }

    /// The block of `slot` for `proposer`, produced with the combined `randao_reveal`.
    pub async fn proposer<P: Preset>(
        &self,
        slot: Slot,
        proposer: &ProposerDef,
        randao_reveal: &BlsSignature,
        deadline: Instant,
    ) -> Result<DutyValue<P>, BeaconError> {
        let block = retry(deadline, "block", || {
            self.bn.produce_block::<P>(slot, randao_reveal, None)
        })
        .await?;
        Ok(DutyValue::Proposer(Box::new(ProposerEntry {
            pubkey: proposer.pubkey,
            block,
        })))
    }

    /// The head block root, for the sync committee messages.
    pub async fn sync_root<P: Preset>(
        &self,
        deadline: Instant,
    ) -> Result<DutyValue<P>, BeaconError> {
        let head = retry(deadline, "head header", || self.bn.header(BlockId::Head)).await?;
        Ok(DutyValue::SyncMessage(head.root))
    }
}
