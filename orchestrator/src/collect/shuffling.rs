//! Attester committees of a past epoch, computed as the consensus spec's
//! `get_beacon_committee` does from a later state: the epoch's active validators (their
//! activation and exit epochs stay in the registry) and the RANDAO mix the epoch's seed is
//! drawn from (kept in `randao_mixes` for `EPOCHS_PER_HISTORICAL_VECTOR` epochs).
//!
//! Why: a beacon node's committees endpoint needs a state of the epoch (or the next) in
//! memory; Lodestar 1.5.1 answers it only for epochs near its head (its state cache drops
//! states before the finalized epoch, archived states carry no shuffling), so `dvlab analyze`
//! of older epochs computes them. No Rust crate implements the swap-or-not shuffle apart from
//! client internals; [`shuffled_positions`] (shared with the genesis state's sync committee) is
//! checked against Lodestar's `computeShuffledIndex`, and `dvlab analyze` compares computed committees with the beacon
//! node's wherever the node serves them.

use super::Committees;
use crate::shuffle::{sample_by_balance, shuffled_positions};
use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The chain constants committee computation needs (from `/eth/v1/config/spec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShufflingParams {
    /// `SLOTS_PER_EPOCH`.
    pub slots_per_epoch: u64,
    /// `SHUFFLE_ROUND_COUNT`.
    pub shuffle_round_count: u8,
    /// `TARGET_COMMITTEE_SIZE`.
    pub target_committee_size: u64,
    /// `MAX_COMMITTEES_PER_SLOT`.
    pub max_committees_per_slot: u64,
    /// `EPOCHS_PER_HISTORICAL_VECTOR`.
    pub epochs_per_historical_vector: u64,
    /// `MIN_SEED_LOOKAHEAD`.
    pub min_seed_lookahead: u64,
    /// `DOMAIN_BEACON_ATTESTER`.
    pub domain_beacon_attester: [u8; 4],
    /// `DOMAIN_BEACON_PROPOSER`.
    pub domain_beacon_proposer: [u8; 4],
    /// `MAX_EFFECTIVE_BALANCE` (gwei).
    pub max_effective_balance: u64,
    /// `DOMAIN_SYNC_COMMITTEE`.
    pub domain_sync_committee: [u8; 4],
    /// `SYNC_COMMITTEE_SIZE`.
    pub sync_committee_size: u64,
    /// `EPOCHS_PER_SYNC_COMMITTEE_PERIOD`.
    pub epochs_per_sync_committee_period: u64,
    /// `ALTAIR_FORK_EPOCH`.
    pub altair_fork_epoch: u64,
}

/// What committee computation reads from a state.
#[derive(Debug, Clone, Default)]
pub struct RegistryView {
    /// Epoch of the state.
    pub epoch: u64,
    /// (activation epoch, exit epoch) of every validator, by index.
    pub validators: Vec<(u64, u64)>,
    /// `randao_mixes`.
    pub randao_mixes: Vec<[u8; 32]>,
    /// Effective balance (gwei) of every validator, by index, as the state has them.
    pub effective_balances: Vec<u64>,
}

impl RegistryView {
    /// The attester seed of `epoch` (`get_seed(state, epoch, DOMAIN_BEACON_ATTESTER)`), or
    /// why this state cannot give it (its mix not yet final, or already overwritten).
    pub fn attester_seed(&self, p: &ShufflingParams, epoch: u64) -> Result<[u8; 32]> {
        self.seed(p, epoch, p.domain_beacon_attester)
    }

    /// `get_seed(state, epoch, domain)`.
    fn seed(&self, p: &ShufflingParams, epoch: u64, domain: [u8; 4]) -> Result<[u8; 32]> {
        let n = p.epochs_per_historical_vector;
        if epoch > self.epoch + p.min_seed_lookahead {
            bail!(
                "the state of epoch {} cannot give the shuffling of the later epoch {epoch}",
                self.epoch
            );
        }
        if epoch + n <= self.epoch + p.min_seed_lookahead + 1 {
            bail!(
                "epoch {epoch} is more than EPOCHS_PER_HISTORICAL_VECTOR ({n}) epochs behind the \
                 state (epoch {}): its RANDAO mix is overwritten",
                self.epoch
            );
        }
        if self.randao_mixes.len() as u64 != n {
            bail!(
                "the state has {} RANDAO mixes, EPOCHS_PER_HISTORICAL_VECTOR is {n}",
                self.randao_mixes.len()
            );
        }
        let mix = &self.randao_mixes[((epoch + n - p.min_seed_lookahead - 1) % n) as usize];
        let mut h = Sha256::new();
        h.update(domain);
        h.update(epoch.to_le_bytes());
        h.update(mix);
        Ok(h.finalize().into())
    }

    /// `get_active_validator_indices(state, epoch)`.
    fn active(&self, epoch: u64) -> Vec<u64> {
        self.validators
            .iter()
            .enumerate()
            .filter(|(_, (act, exit))| *act <= epoch && epoch < *exit)
            .map(|(i, _)| i as u64)
            .collect()
    }

    /// The validators active at `epoch` (ascending) and their effective balances in this state.
    fn active_balances(&self, epoch: u64) -> Result<(Vec<u64>, Vec<u64>)> {
        if self.effective_balances.len() != self.validators.len() {
            bail!("the state has no effective balances");
        }
        let active = self.active(epoch);
        let balances = active
            .iter()
            .map(|v| self.effective_balances[*v as usize])
            .collect();
        Ok((active, balances))
    }

    /// The proposer of every slot of `epoch` (slot 0, the genesis block's, has none), as
    /// `get_beacon_proposer_index` gives them — with this state's effective balances, which
    /// are the epoch's only if they have not changed since: callers check the result against
    /// the epoch's blocks.
    pub fn proposers(&self, p: &ShufflingParams, epoch: u64) -> Result<BTreeMap<u64, u64>> {
        let seed = self.seed(p, epoch, p.domain_beacon_proposer)?;
        let (active, balances) = self.active_balances(epoch)?;
        let spe = p.slots_per_epoch;
        let mut out = BTreeMap::new();
        for slot in (epoch * spe..(epoch + 1) * spe).filter(|s| *s > 0) {
            let slot_seed: [u8; 32] = Sha256::new()
                .chain_update(seed)
                .chain_update(slot.to_le_bytes())
                .finalize()
                .into();
            let pick = sample_by_balance(
                &balances,
                p.max_effective_balance,
                &slot_seed,
                p.shuffle_round_count,
                1,
            );
            if let Some(i) = pick.first() {
                out.insert(slot, active[*i]);
            }
        }
        Ok(out)
    }

    /// The sync committee of sync-committee `period` (member indices in committee order), as
    /// `get_next_sync_committee_indices` chose it: at the start of period − 1 (epoch
    /// `(period − 1) · EPOCHS_PER_SYNC_COMMITTEE_PERIOD`), or for the Altair fork's period and
    /// the next one at the fork (epoch `ALTAIR_FORK_EPOCH + 1`) — with this state's effective
    /// balances, which are that epoch's only if they have not changed since.
    pub fn sync_committee(&self, p: &ShufflingParams, period: u64) -> Result<Vec<u64>> {
        let len = p.epochs_per_sync_committee_period.max(1);
        let fork_period = p.altair_fork_epoch / len;
        if period < fork_period {
            bail!("sync-committee period {period} is before the Altair fork");
        }
        let epoch = if period <= fork_period + 1 {
            p.altair_fork_epoch + 1
        } else {
            (period - 1) * len
        };
        let seed = self.seed(p, epoch, p.domain_sync_committee)?;
        let (active, balances) = self.active_balances(epoch)?;
        Ok(sample_by_balance(
            &balances,
            p.max_effective_balance,
            &seed,
            p.shuffle_round_count,
            p.sync_committee_size as usize,
        )
        .into_iter()
        .map(|i| active[i])
        .collect())
    }

    /// Every attester committee of `epoch`: (slot, committee index) → validator indices.
    pub fn committees(&self, p: &ShufflingParams, epoch: u64) -> Result<Committees> {
        let seed = self.attester_seed(p, epoch)?;
        let active = self.active(epoch);
        let len = active.len() as u64;
        let spe = p.slots_per_epoch;
        let per_slot = (len / spe / p.target_committee_size).clamp(1, p.max_committees_per_slot);
        let count = per_slot * spe;
        let shuffled = shuffled_positions(active.len(), &seed, p.shuffle_round_count);
        let mut out = Committees::new();
        for k in 0..count {
            let (start, end) = (len * k / count, len * (k + 1) / count);
            let members = (start..end).map(|i| active[shuffled[i as usize]]).collect();
            out.insert((epoch * spe + k / per_slot, k % per_slot), members);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ShufflingParams {
        ShufflingParams {
            slots_per_epoch: 8,
            shuffle_round_count: 10,
            target_committee_size: 4,
            max_committees_per_slot: 4,
            epochs_per_historical_vector: 64,
            min_seed_lookahead: 1,
            domain_beacon_attester: [1, 0, 0, 0],
            domain_beacon_proposer: [0, 0, 0, 0],
            max_effective_balance: 32_000_000_000,
            domain_sync_committee: [7, 0, 0, 0],
            sync_committee_size: 32,
            epochs_per_sync_committee_period: 8,
            altair_fork_epoch: 0,
        }
    }

    #[test]
    fn committees_cover_the_active_validators_once() {
        let far = u64::MAX;
        let mut view = RegistryView {
            epoch: 10,
            validators: vec![(0, far); 100],
            randao_mixes: (0..64u8).map(|i| [i; 32]).collect(),
            effective_balances: vec![32_000_000_000; 100],
        };
        view.validators[7] = (0, 5); // exited at epoch 5
        view.validators[8] = (12, far); // not yet active
        let p = params();
        let c = view.committees(&p, 9).unwrap();
        // 98 active (7 exited, 8 not yet active) / 8 slots / 4 = 3 committees per slot.
        assert_eq!(c.len(), 24);
        assert_eq!(c.keys().next(), Some(&(72, 0)));
        assert_eq!(c.keys().last(), Some(&(79, 2)));
        let mut all: Vec<u64> = c.values().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..100).filter(|v| *v != 7 && *v != 8).collect::<Vec<_>>()
        );
        // Epoch 4: validator 7 is still active.
        assert_eq!(
            view.committees(&p, 4).unwrap().values().flatten().count(),
            99
        );
        // The seed of epoch e uses the mix of epoch e - 2.
        let s9 = view.attester_seed(&p, 9).unwrap();
        view.randao_mixes[7] = [0xff; 32];
        assert_ne!(view.attester_seed(&p, 9).unwrap(), s9);
        // Too late (the mix is not final) and too old (overwritten).
        assert!(view.committees(&p, 12).is_err());
        assert!(view.committees(&p, 11).is_ok());
        assert!(view.attester_seed(&p, 0).is_ok());
        view.epoch = 70;
        let e = view.attester_seed(&p, 3).unwrap_err().to_string();
        assert!(e.contains("overwritten"), "{e}");
        // Epoch 8 needs epoch 6's mix, overwritten when epoch 70 began; epoch 9's is kept.
        assert!(view.attester_seed(&p, 8).is_err());
        assert!(view.attester_seed(&p, 9).is_ok());
    }

    /// A real Lodestar 1.5.1 `lodestar dev` chain (minimal preset, 64 validators, 8 of them
    /// offline), recorded at slot 92: its head state's registry and mixes, the sync committees
    /// it served in periods 0 and 1, and every canonical block's proposer. Proposers and the
    /// past period's sync committee computed from the head state equal Lodestar's.
    #[test]
    fn proposers_and_sync_committees_of_a_real_lodestar_chain() {
        let rec: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/golden/lodestar-dev-chain.json"))
                .unwrap();
        let nums = |v: &serde_json::Value| -> Vec<u64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect()
        };
        let validators: Vec<Vec<u64>> = rec["validators"]
            .as_array()
            .unwrap()
            .iter()
            .map(nums)
            .collect();
        let view = RegistryView {
            epoch: rec["slot"].as_u64().unwrap() / 8,
            validators: validators.iter().map(|v| (v[0], v[1])).collect(),
            effective_balances: validators.iter().map(|v| v[2]).collect(),
            randao_mixes: rec["randao_mixes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    hex::decode(m.as_str().unwrap().trim_start_matches("0x"))
                        .unwrap()
                        .try_into()
                        .unwrap()
                })
                .collect(),
        };
        // The minimal preset's constants, as Lodestar's /eth/v1/config/spec gives them.
        let p = params();
        let mut computed = BTreeMap::new();
        for epoch in 0..=11 {
            computed.extend(view.proposers(&p, epoch).unwrap());
        }
        let blocks = rec["block_proposers"].as_array().unwrap();
        assert!(blocks.len() > 70, "{} blocks", blocks.len());
        for b in blocks {
            let (slot, proposer) = (b[0].as_u64().unwrap(), b[1].as_u64().unwrap());
            assert_eq!(computed[&slot], proposer, "slot {slot}");
        }
        // Slots without a block were the offline validators' (56..63).
        let with_block: Vec<u64> = blocks.iter().map(|b| b[0].as_u64().unwrap()).collect();
        for (slot, v) in computed.range(1..=90) {
            if !with_block.contains(slot) {
                assert!(*v >= 56, "slot {slot}: no block, proposer {v} was online");
            }
        }
        assert_eq!(
            view.sync_committee(&p, 0).unwrap(),
            nums(&rec["sync_period0"])
        );
        // The fork's period and the next share the committee chosen at the fork (epoch 1);
        // later periods' (chosen at the start of the period before) are checked at run time:
        // a past one is used only if the head's period computes as the node serves it.
        assert_eq!(view.sync_committee(&p, 1).unwrap(), nums(&rec["sync_head"]));
        assert_ne!(view.sync_committee(&p, 2).unwrap(), nums(&rec["sync_head"]));
    }
}
