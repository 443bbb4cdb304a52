//! Fetcher: the unsigned data of a duty, from this node's beacon node.
//!
//! - attester: attestation data once per committee of the slot, one entry per DV;
//! - proposer: the block, produced with the combined RANDAO reveal;
//! - sync message: the head block root.
//!
//! Requests are retried until the caller's deadline (the beacon node may be briefly
//! unreachable or still processing the slot's block).
//!
//! [`FetchStage`] runs the stage: it takes each duty the scheduler fires, fetches its data and
//! hands it to consensus ([`DutyRunner`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::clock::SlotClock;
use crate::decide::DutyRunner;
use crate::duty::{AttesterDef, DutyDefs, DutyKind, ProposerDef, ScheduledDuty};
use crate::dutydb::DutyDb;
use crate::eth::beacon::{BeaconClient, BeaconError, BlockId};
use crate::eth::types::{BlsSignature, Preset, Slot};
use crate::tracker::{Reason, Stage, Tracker};
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

/// The fetcher stage: runs each due duty — fetch its data, then consensus into the duty DB.
pub struct FetchStage<P: Preset> {
    /// The chain's slots (a duty's deadline is the end of its slot).
    pub clock: SlotClock,
    /// Where the data comes from.
    pub fetcher: Fetcher,
    /// Consensus under the slashing rules, into the duty DB.
    pub runner: Arc<DutyRunner<P>>,
    /// Where a proposer duty waits for its combined RANDAO reveal.
    pub dutydb: Arc<DutyDb<P>>,
    /// Told when a duty's data was fetched, or why not.
    pub tracker: Tracker,
}

impl<P: Preset> FetchStage<P> {
    /// Runs every duty of `due` in its own task, until the channel closes.
    pub async fn run(self: Arc<Self>, mut due: mpsc::Receiver<ScheduledDuty>) {
        while let Some(d) = due.recv().await {
            let this = self.clone();
            tokio::spawn(async move { this.execute(d).await });
        }
    }

    async fn execute(&self, d: ScheduledDuty) {
        let duty = d.duty;
        let deadline = self.clock.deadline(duty.slot, 1);
        let input: Result<DutyValue<P>, String> = match &d.defs {
            DutyDefs::Attester(defs) => self
                .fetcher
                .attester(duty.slot, defs, deadline)
                .await
                .map(DutyValue::Attester)
                .map_err(|e| e.to_string()),
            DutyDefs::SyncMessage(_) => self
                .fetcher
                .sync_root::<P>(deadline)
                .await
                .map_err(|e| e.to_string()),
            DutyDefs::Proposer(p) => match self.dutydb.await_randao(duty.slot, deadline).await {
                Ok(reveal) => self
                    .fetcher
                    .proposer::<P>(duty.slot, p, &reveal, deadline)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => {
                    warn!(%duty, error = %e, "no combined RANDAO reveal; cannot propose");
                    self.tracker
                        .fail(duty, Reason::InsufficientPeerSignatures, &e.to_string());
                    return;
                }
            },
        };
        let input = match input {
            Ok(v) => v,
            Err(e) => {
                warn!(%duty, error = %e, "cannot fetch the duty's data from the beacon node");
                self.tracker.fail(duty, Reason::FetchBnError, &e);
                return;
            }
        };
        self.tracker.stage(duty, Stage::Fetched);
        let kind = duty.kind;
        match self.runner.run(duty, input, deadline).await {
            Ok(v) => {
                info!(%duty, dvs = v.pubkeys().len().max(usize::from(kind == DutyKind::SyncMessage)), "duty decided")
            }
            Err(reason) => warn!(%duty, reason = reason.as_str(), "duty not decided"),
        }
    }
}
