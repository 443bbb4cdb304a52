//! The simulated chain: validator registry, mainnet-preset committee structure, proposers, sync
//! committees and the block tree (a single canonical chain, no forks).
//!
//! Committees follow the phase0 spec's *shape* for `n` active validators: `committees_per_slot =
//! max(1, min(64, n / 32 / 128))`, every active validator in exactly one committee per epoch,
//! committee `k` of the epoch (`k = slot_in_epoch · committees_per_slot + index`) being the slice
//! `[n·k/c, n·(k+1)/c)` of a per-epoch permutation (`c` = committees in the epoch). The
//! permutation is a seeded Fisher–Yates shuffle instead of the spec's swap-or-not: only the
//! structure matters to a distributed validator, not which validators share a committee.
//! Proposers are drawn uniformly per slot (all balances are equal), sync committees as 512
//! uniform draws with replacement per period, like the spec's balance-weighted sampling with
//! equal balances.
//!
//! Duties never depend on blocks here, so their dependent roots are synthetic, fixed per epoch
//! (`R(e) = sha256("dependent" ‖ e)`): attester duties of epoch `e` depend on `R(e - 1)`,
//! proposer duties of `e` on `R(e)`, and a head event in epoch `e` names
//! `previous_duty_dependent_root = R(e - 1)` and `current_duty_dependent_root = R(e)` — the
//! relations the beacon API defines, without reorgs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dvnode::eth::types::{BlsPubkey, Epoch, Root, Slot, ValidatorIndex};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// `SLOTS_PER_EPOCH` (mainnet).
pub const SLOTS_PER_EPOCH: u64 = 32;
/// `TARGET_COMMITTEE_SIZE`.
pub const TARGET_COMMITTEE_SIZE: u64 = 128;
/// `MAX_COMMITTEES_PER_SLOT`.
pub const MAX_COMMITTEES_PER_SLOT: u64 = 64;
/// `SYNC_COMMITTEE_SIZE` (mainnet).
pub const SYNC_COMMITTEE_SIZE: usize = 512;
/// `EPOCHS_PER_SYNC_COMMITTEE_PERIOD` (mainnet).
pub const EPOCHS_PER_SYNC_COMMITTEE_PERIOD: u64 = 256;
/// `SYNC_COMMITTEE_SUBNET_COUNT`.
pub const SYNC_COMMITTEE_SUBNET_COUNT: usize = 4;

/// The epoch of `slot`.
pub fn epoch_of(slot: Slot) -> Epoch {
    slot / SLOTS_PER_EPOCH
}

/// The first slot of `epoch`.
pub fn start_slot(epoch: Epoch) -> Slot {
    epoch * SLOTS_PER_EPOCH
}

/// The sync committee period of `epoch`.
pub fn sync_period(epoch: Epoch) -> u64 {
    epoch / EPOCHS_PER_SYNC_COMMITTEE_PERIOD
}

/// `committees_per_slot` for `active` validators.
pub fn committees_per_slot(active: u64) -> u64 {
    (active / SLOTS_PER_EPOCH / TARGET_COMMITTEE_SIZE).clamp(1, MAX_COMMITTEES_PER_SLOT)
}

fn seeded(seed: &[u8; 32], domain: &[u8], n: u64) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(domain);
    h.update(n.to_le_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

/// The synthetic dependent root `R(e)` (see the [module docs](self)).
pub fn dependent_root(epoch: Epoch) -> Root {
    let mut h = Sha256::new();
    h.update(b"dependent");
    h.update(epoch.to_le_bytes());
    Root(h.finalize().into())
}

/// One validator's attester duty in an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttesterAssignment {
    /// Slot.
    pub slot: Slot,
    /// Committee index within the slot.
    pub committee_index: u64,
    /// Committee size.
    pub committee_length: u64,
    /// Committees in the slot.
    pub committees_at_slot: u64,
    /// Position in the committee.
    pub position: u64,
}

/// The committees of one epoch.
#[derive(Debug)]
pub struct Shuffling {
    /// Committees per slot.
    pub committees_per_slot: u64,
    /// Committee `k` of the epoch (`k = slot_in_epoch · committees_per_slot + index`).
    committees: Vec<Vec<ValidatorIndex>>,
    /// Each validator's assignment, by validator index.
    assignments: Vec<AttesterAssignment>,
}

impl Shuffling {
    fn compute(seed: &[u8; 32], epoch: Epoch, active: u64) -> Shuffling {
        let mut order: Vec<ValidatorIndex> = (0..active).collect();
        order.shuffle(&mut seeded(seed, b"shuffle", epoch));
        let cps = committees_per_slot(active);
        let count = cps * SLOTS_PER_EPOCH;
        let mut committees = Vec::with_capacity(count as usize);
        let mut assignments = vec![
            AttesterAssignment {
                slot: 0,
                committee_index: 0,
                committee_length: 0,
                committees_at_slot: 0,
                position: 0,
            };
            active as usize
        ];
        for k in 0..count {
            let lo = (active * k / count) as usize;
            let hi = (active * (k + 1) / count) as usize;
            let members = order[lo..hi].to_vec();
            let slot = start_slot(epoch) + k / cps;
            for (pos, v) in members.iter().enumerate() {
                assignments[*v as usize] = AttesterAssignment {
                    slot,
                    committee_index: k % cps,
                    committee_length: members.len() as u64,
                    committees_at_slot: cps,
                    position: pos as u64,
                };
            }
            committees.push(members);
        }
        Shuffling {
            committees_per_slot: cps,
            committees,
            assignments,
        }
    }

    /// The members of committee `index` at `slot` (empty if there is no such committee).
    pub fn committee(&self, slot: Slot, index: u64) -> &[ValidatorIndex] {
        if index >= self.committees_per_slot {
            return &[];
        }
        let k = (slot % SLOTS_PER_EPOCH) * self.committees_per_slot + index;
        self.committees
            .get(k as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The attester duty of validator `v`.
    pub fn assignment(&self, v: ValidatorIndex) -> Option<AttesterAssignment> {
        self.assignments.get(v as usize).copied()
    }
}

/// A block of the canonical chain.
#[derive(Clone, Debug)]
pub struct ChainBlock {
    /// Slot.
    pub slot: Slot,
    /// Block root.
    pub root: Root,
}

/// Validators, duties and the canonical chain. Not synchronised: the server wraps it.
pub struct Chain {
    seed: [u8; 32],
    /// Validator pubkeys by index (the cluster's DVs first, then other validators).
    pubkeys: Vec<BlsPubkey>,
    by_pubkey: HashMap<BlsPubkey, ValidatorIndex>,
    shufflings: BTreeMap<Epoch, Arc<Shuffling>>,
    sync_committees: BTreeMap<u64, Arc<Vec<ValidatorIndex>>>,
    /// Canonical blocks by slot (the genesis block at slot 0).
    blocks: BTreeMap<Slot, ChainBlock>,
}

impl Chain {
    /// A chain whose registry is `pubkeys` (all active from genesis), with the genesis block
    /// root `genesis_root`.
    pub fn new(seed: [u8; 32], pubkeys: Vec<BlsPubkey>, genesis_root: Root) -> Chain {
        let by_pubkey = pubkeys
            .iter()
            .enumerate()
            .map(|(i, pk)| (*pk, i as ValidatorIndex))
            .collect();
        let mut blocks = BTreeMap::new();
        blocks.insert(
            0,
            ChainBlock {
                slot: 0,
                root: genesis_root,
            },
        );
        Chain {
            seed,
            pubkeys,
            by_pubkey,
            shufflings: BTreeMap::new(),
            sync_committees: BTreeMap::new(),
            blocks,
        }
    }

    /// Number of validators.
    pub fn validator_count(&self) -> u64 {
        self.pubkeys.len() as u64
    }

    /// The pubkey of validator `index`.
    pub fn pubkey(&self, index: ValidatorIndex) -> Option<BlsPubkey> {
        self.pubkeys.get(index as usize).copied()
    }

    /// The index of `pubkey`.
    pub fn index_of(&self, pubkey: &BlsPubkey) -> Option<ValidatorIndex> {
        self.by_pubkey.get(pubkey).copied()
    }

    /// The committees of `epoch` (computed once, the last few epochs kept).
    pub fn shuffling(&mut self, epoch: Epoch) -> Arc<Shuffling> {
        if let Some(s) = self.shufflings.get(&epoch) {
            return s.clone();
        }
        let s = Arc::new(Shuffling::compute(
            &self.seed,
            epoch,
            self.validator_count(),
        ));
        self.shufflings.insert(epoch, s.clone());
        while self.shufflings.len() > 6 {
            self.shufflings.pop_first();
        }
        s
    }

    /// The proposer of `slot` (`None` for slot 0, the genesis block).
    pub fn proposer(&self, slot: Slot) -> Option<ValidatorIndex> {
        if slot == 0 || self.pubkeys.is_empty() {
            return None;
        }
        Some(seeded(&self.seed, b"proposer", slot).gen_range(0..self.validator_count()))
    }

    /// The sync committee (512 validator indices by position) of `epoch`'s period.
    pub fn sync_committee(&mut self, epoch: Epoch) -> Arc<Vec<ValidatorIndex>> {
        let period = sync_period(epoch);
        if let Some(c) = self.sync_committees.get(&period) {
            return c.clone();
        }
        let n = self.validator_count().max(1);
        let mut rng = seeded(&self.seed, b"sync", period);
        let c = Arc::new(
            (0..SYNC_COMMITTEE_SIZE)
                .map(|_| rng.gen_range(0..n))
                .collect(),
        );
        self.sync_committees.insert(period, Arc::clone(&c));
        c
    }

    /// Positions of validator `v` in the sync committee of `epoch`'s period.
    pub fn sync_positions(&mut self, epoch: Epoch, v: ValidatorIndex) -> Vec<u64> {
        self.sync_committee(epoch)
            .iter()
            .enumerate()
            .filter(|(_, m)| **m == v)
            .map(|(p, _)| p as u64)
            .collect()
    }

    /// The head block.
    pub fn head(&self) -> ChainBlock {
        self.blocks
            .last_key_value()
            .map(|(_, b)| b.clone())
            .expect("the genesis block is always there")
    }

    /// The latest block at or before `slot`.
    pub fn block_at_or_before(&self, slot: Slot) -> ChainBlock {
        self.blocks
            .range(..=slot)
            .next_back()
            .map(|(_, b)| b.clone())
            .expect("the genesis block is always there")
    }

    /// The block of exactly `slot`.
    pub fn block_at(&self, slot: Slot) -> Option<&ChainBlock> {
        self.blocks.get(&slot)
    }

    /// The block with `root`.
    pub fn block_by_root(&self, root: &Root) -> Option<&ChainBlock> {
        self.blocks.values().rev().find(|b| b.root == *root)
    }

    /// Appends a block after the head. Refuses a slot at or before the head's.
    pub fn append(&mut self, slot: Slot, root: Root) -> Result<(), String> {
        let head = self.head();
        if slot <= head.slot {
            return Err(format!(
                "block at slot {slot} does not extend the head at slot {}",
                head.slot
            ));
        }
        self.blocks.insert(slot, ChainBlock { slot, root });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Chain {
        let pks = (0..n)
            .map(|i| {
                let mut b = [0u8; 48];
                b[..8].copy_from_slice(&i.to_le_bytes());
                BlsPubkey(b)
            })
            .collect();
        Chain::new([7; 32], pks, Root([1; 32]))
    }

    #[test]
    fn every_validator_attests_once_per_epoch_in_mainnet_shaped_committees() {
        for (n, cps) in [(100, 1), (4095, 1), (10_000, 2), (300_000, 64)] {
            let mut c = chain(n);
            let s = c.shuffling(3);
            assert_eq!(s.committees_per_slot, cps, "{n} validators");
            let mut seen = vec![0u32; n as usize];
            for slot in start_slot(3)..start_slot(4) {
                for ci in 0..cps {
                    for (pos, v) in s.committee(slot, ci).iter().enumerate() {
                        seen[*v as usize] += 1;
                        let a = s.assignment(*v).unwrap();
                        assert_eq!(
                            (a.slot, a.committee_index, a.position),
                            (slot, ci, pos as u64)
                        );
                        assert_eq!(a.committee_length, s.committee(slot, ci).len() as u64);
                    }
                }
            }
            assert!(seen.iter().all(|c| *c == 1), "{n}: one duty each");
            let sizes: Vec<usize> = (0..cps)
                .map(|i| s.committee(start_slot(3), i).len())
                .collect();
            let expected = n as f64 / (cps * SLOTS_PER_EPOCH) as f64;
            assert!(
                sizes.iter().all(|s| (*s as f64 - expected).abs() <= 1.0),
                "{sizes:?}"
            );
        }
    }

    #[test]
    fn proposers_and_sync_committees_are_deterministic_and_in_range() {
        let mut a = chain(1000);
        let mut b = chain(1000);
        assert_eq!(a.proposer(0), None);
        for slot in 1..100 {
            assert_eq!(a.proposer(slot), b.proposer(slot));
            assert!(a.proposer(slot).unwrap() < 1000);
        }
        let sc = a.sync_committee(5);
        assert_eq!(sc.len(), SYNC_COMMITTEE_SIZE);
        assert_eq!(sc, b.sync_committee(200), "same period");
        assert_ne!(sc, a.sync_committee(256), "next period");
        let v = sc[17];
        assert!(a.sync_positions(5, v).contains(&17));
    }

    #[test]
    fn the_chain_only_grows_at_its_head() {
        let mut c = chain(10);
        assert_eq!(c.head().slot, 0);
        c.append(3, Root([3; 32])).unwrap();
        assert!(c.append(3, Root([4; 32])).is_err());
        assert!(c.append(2, Root([4; 32])).is_err());
        assert_eq!(c.block_at_or_before(2).root, Root([1; 32]));
        assert_eq!(c.block_at_or_before(9).root, Root([3; 32]));
        assert_eq!(c.block_by_root(&Root([3; 32])).unwrap().slot, 3);
    }
}
