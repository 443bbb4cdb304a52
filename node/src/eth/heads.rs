//! The beacon node's recent head blocks, as its `head` events announced them, and the blocks
//! this cluster decided to propose.
//!
//! The scheduler records every head event it follows; the proposal guard
//! ([`crate::decide::DutyPolicy`]) asks whether this node's own attestation data already votes
//! for the block of the duty's slot.
//!
//! In remote-signer mode the fetch stage records the cluster's own block as soon as consensus
//! decides it ([`Heads::record_own`]): the node signs it at once, so the block exists as soon as
//! a quorum is up — the quorum the slot's attestation consensus needs anyway. The scheduler then
//! starts the slot's attester duty without waiting for the beacon node's head event, and the
//! fetcher votes for that block while the beacon node does not have it yet (measured in
//! latency-200ms --signer remote: the head event of the cluster's own block came 1.31 s into
//! the slot, after the block's consensus, signature exchange and broadcast, and that slot's
//! attestation missed the 2/3-slot aggregation).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::eth::types::{Root, Slot};

/// A block this cluster decided to propose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnBlock {
    /// Its root.
    pub root: Root,
    /// Its parent's root.
    pub parent_root: Root,
}

/// Head blocks kept (the newest by slot).
const KEEP: usize = 64;

/// Recent head blocks by slot (cheap to clone; clones share the record).
#[derive(Clone, Debug, Default)]
pub struct Heads {
    by_slot: Arc<Mutex<BTreeMap<Slot, Root>>>,
    own: Arc<Mutex<BTreeMap<Slot, OwnBlock>>>,
    own_decided: Arc<Notify>,
}

fn keep_newest<V>(m: &mut BTreeMap<Slot, V>) {
    while m.len() > KEEP {
        m.pop_first();
    }
}

impl Heads {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The beacon node announced `root`, the block of `slot`, as its head.
    pub fn record(&self, slot: Slot, root: Root) {
        let mut m = self.by_slot.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(slot, root);
        keep_newest(&mut m);
    }

    /// This cluster decided `block` as the block of `slot`; wakes [`Heads::own_block_decided`].
    pub fn record_own(&self, slot: Slot, block: OwnBlock) {
        let mut m = self.own.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(slot, block);
        keep_newest(&mut m);
        drop(m);
        self.own_decided.notify_one();
    }

    /// The block of `slot` this cluster decided, if it did.
    pub fn own_block(&self, slot: Slot) -> Option<OwnBlock> {
        self.own
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .copied()
    }

    /// Returns once [`Heads::record_own`] was called since the last return (one waiter).
    pub async fn own_block_decided(&self) {
        self.own_decided.notified().await
    }

    /// The block of `slot` the beacon node announced as its head, if it did.
    pub fn block_at(&self, slot: Slot) -> Option<Root> {
        self.by_slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_slots() {
        let h = Heads::new();
        for s in 0..100u64 {
            h.record(s, Root([s as u8; 32]));
        }
        assert_eq!(h.block_at(99), Some(Root([99; 32])));
        assert_eq!(h.block_at(36), Some(Root([36; 32])));
        assert_eq!(h.block_at(35), None, "only {KEEP} kept");
        // A reorg to another block of the same slot replaces it.
        h.record(99, Root([7; 32]));
        assert_eq!(h.block_at(99), Some(Root([7; 32])));
    }

    #[tokio::test]
    async fn an_own_block_recorded_before_the_wait_still_wakes_it() {
        let h = Heads::new();
        let block = OwnBlock {
            root: Root([2; 32]),
            parent_root: Root([1; 32]),
        };
        h.record_own(9, block);
        tokio::time::timeout(std::time::Duration::from_secs(1), h.own_block_decided())
            .await
            .expect("woken");
        assert_eq!(h.own_block(9), Some(block));
        assert_eq!(h.own_block(8), None);
        assert_eq!(h.block_at(9), None, "not a head the beacon node announced");
    }
}
