//! The beacon node's recent head blocks, as its `head` events announced them.
//!
//! The scheduler records every head event it follows; the proposal guard
//! ([`crate::decide::DutyPolicy`]) asks whether this node's own attestation data already votes
//! for the block of the duty's slot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::eth::types::{Root, Slot};

/// Head blocks kept (the newest by slot).
const KEEP: usize = 64;

/// Recent head blocks by slot (cheap to clone; clones share the record).
#[derive(Clone, Debug, Default)]
pub struct Heads {
    by_slot: Arc<Mutex<BTreeMap<Slot, Root>>>,
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
        while m.len() > KEEP {
            m.pop_first();
        }
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
}
