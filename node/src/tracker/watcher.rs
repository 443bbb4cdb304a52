//! The chain watcher: reads canonical blocks for the tracker's inclusion checks.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use tracing::{debug, warn};

use super::tracking::{ObservedBlock, Tracker};
use crate::clock::{SlotClock, SlotTicker};
use crate::eth::beacon::{BeaconClient, BlockId, StateId};
use crate::eth::types::{
    from_json_value, Attestation, Preset, Slot, SyncAggregate, ValidatorIndex,
};

/// The parts of a signed block (any fork from Altair on) the watcher reads.
#[derive(Deserialize)]
#[serde(bound = "")]
struct WatchedBlock<P: Preset> {
    message: WatchedMessage<P>,
}

#[derive(Deserialize)]
#[serde(bound = "")]
struct WatchedMessage<P: Preset> {
    #[serde(with = "serde_utils::quoted_u64")]
    slot: Slot,
    #[serde(with = "serde_utils::quoted_u64")]
    proposer_index: ValidatorIndex,
    body: WatchedBody<P>,
}

#[derive(Deserialize)]
#[serde(bound = "")]
struct WatchedBody<P: Preset> {
    attestations: Vec<Attestation<P>>,
    #[serde(default)]
    sync_aggregate: Option<SyncAggregate<P>>,
}

/// Decodes the signed block `data` read for `slot`: the observed block (sync participants:
/// none yet) and the set sync committee positions. `None` if the block is of another slot.
fn decode_block<P: Preset>(
    data: serde_json::Value,
    slot: Slot,
) -> Result<Option<(ObservedBlock, Vec<usize>)>, String> {
    let block: WatchedBlock<P> =
        from_json_value(data).map_err(|e| format!("block of slot {slot} does not decode: {e}"))?;
    let m = block.message;
    if m.slot != slot {
        return Ok(None);
    }
    let attestations = m
        .body
        .attestations
        .iter()
        .map(|a| {
            let bits = a
                .aggregation_bits
                .iter()
                .enumerate()
                .filter(|(_, b)| *b)
                .map(|(i, _)| i as u64)
                .collect();
            (a.data, bits)
        })
        .collect();
    let sync_positions: Vec<usize> = m
        .body
        .sync_aggregate
        .map(|agg| {
            agg.sync_committee_bits
                .iter()
                .enumerate()
                .filter(|(_, b)| *b)
                .map(|(i, _)| i)
                .collect()
        })
        .unwrap_or_default();
    Ok(Some((
        ObservedBlock {
            slot,
            proposer_index: m.proposer_index,
            attestations,
            sync_participants: Some(BTreeSet::new()),
        },
        sync_positions,
    )))
}

/// Reads canonical blocks from the beacon node for the [`Tracker`]'s inclusion checks.
///
/// [`ChainWatcher::poll`] runs once per slot: it reads `GET /eth/v2/beacon/blocks/{slot}` for
/// every slot the tracker still needs, in order, up to the previous slot (an empty previous
/// slot is read again on the next poll, its block may be late), and the sync committee of each
/// epoch it reads (`GET /eth/v1/beacon/states/head/sync_committees?epoch=`). Nothing is read
/// while no broadcast object awaits inclusion. A read error stops the poll; the next one
/// retries from the same slot.
pub struct ChainWatcher<P: Preset> {
    bn: BeaconClient,
    tracker: Tracker,
    next: Option<Slot>,
    sync_committees: BTreeMap<u64, Vec<ValidatorIndex>>,
    _preset: std::marker::PhantomData<P>,
}

impl<P: Preset> ChainWatcher<P> {
    /// A watcher feeding `tracker` from `bn`.
    pub fn new(bn: BeaconClient, tracker: Tracker) -> ChainWatcher<P> {
        ChainWatcher {
            bn,
            tracker,
            next: None,
            sync_committees: BTreeMap::new(),
            _preset: std::marker::PhantomData,
        }
    }

    /// Polls once per slot (see [`ChainWatcher::poll`]) and closes the tracker's due outcomes
    /// ([`Tracker::close_due`]) until `stop` changes; then closes every open outcome.
    pub async fn run(mut self, clock: SlotClock, stop: tokio::sync::watch::Receiver<bool>) {
        let mut slots = SlotTicker::new(clock, stop);
        while let Some(slot) = slots.tick().await {
            self.poll(slot).await;
            self.tracker.close_due(slot);
        }
        self.tracker.close_all();
    }

    /// Reads the blocks the tracker needs, up to the slot before `now_slot`.
    pub async fn poll(&mut self, now_slot: Slot) {
        let Some(from) = self.tracker.watch_from() else {
            return;
        };
        let mut slot = self.next.map_or(from, |n| n.max(from));
        while slot < now_slot {
            match self.read(slot).await {
                Ok(Some(block)) => self.tracker.observe(slot, Some(&block)),
                // The previous slot's block may still come.
                Ok(None) if slot + 1 >= now_slot => break,
                Ok(None) => self.tracker.observe(slot, None),
                Err(e) => {
                    self.tracker.watch_error();
                    warn!(slot, error = %e, "cannot read the canonical block for the duty tracker");
                    break;
                }
            }
            slot += 1;
        }
        self.next = Some(slot);
    }

    async fn read(&mut self, slot: Slot) -> Result<Option<ObservedBlock>, String> {
        let raw = match self.bn.block_raw(BlockId::Slot(slot)).await {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let Some((mut block, sync_positions)) = decode_block::<P>(raw.data, slot)? else {
            return Ok(None);
        };
        if !sync_positions.is_empty() {
            let epoch = slot / P::SLOTS_PER_EPOCH;
            block.sync_participants = self.sync_committee(epoch).await.map(|committee| {
                sync_positions
                    .iter()
                    .filter_map(|pos| committee.get(*pos).copied())
                    .collect()
            });
        }
        Ok(Some(block))
    }

    async fn sync_committee(&mut self, epoch: u64) -> Option<Vec<ValidatorIndex>> {
        if let Some(c) = self.sync_committees.get(&epoch) {
            return Some(c.clone());
        }
        match self.bn.sync_committee(StateId::Head, epoch).await {
            Ok(c) => {
                self.sync_committees.insert(epoch, c.clone());
                while self.sync_committees.len() > 4 {
                    self.sync_committees.pop_first();
                }
                Some(c)
            }
            Err(e) => {
                debug!(epoch, error = %e, "cannot read the sync committee");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::types::{AttestationData, Minimal};

    #[test]
    fn lodestar_blocks_decode_into_what_the_watcher_checks() {
        // `GET /eth/v2/beacon/blocks/20` from Lodestar v1.5.1 (minimal, Altair at genesis).
        let body: serde_json::Value =
            serde_json::from_str(include_str!("../eth/testdata/block20.json")).unwrap();
        let data = body["data"].clone();
        let (block, sync) = decode_block::<Minimal>(data.clone(), 20).unwrap().unwrap();
        assert_eq!(block.proposer_index, 13);
        let raw = data["message"]["body"]["attestations"].as_array().unwrap();
        assert_eq!(block.attestations.len(), raw.len());
        assert!(block.attestations.iter().all(|(_, bits)| !bits.is_empty()));
        let first: AttestationData = from_json_value(raw[0]["data"].clone()).unwrap();
        assert_eq!(block.attestations[0].0, first);
        assert!(sync.iter().all(|p| *p < 32));
        // Asked for slot 21, the node answered the block of 20: slot 21 is empty.
        assert!(decode_block::<Minimal>(data, 21).unwrap().is_none());
        let err = decode_block::<Minimal>(serde_json::json!({"message": {}}), 20).unwrap_err();
        assert!(err.contains("block of slot 20 does not decode"), "{err}");
    }
}
