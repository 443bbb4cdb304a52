//! The consensus spec's swap-or-not shuffle, beneath the phases that sample validators with it:
//! [`crate::genesis`] (a genesis state's sync committees) and [`crate::collect`] (attester
//! committees, proposers and sync committees of past epochs). No Rust crate implements it apart
//! from client internals.

use sha2::{Digest, Sha256};

/// `out[i]` = the spec's `compute_shuffled_index(i, count, seed)` for every `i < count`,
/// computing each round's pivot once and each 256-position source hash once.
pub fn shuffled_positions(count: usize, seed: &[u8; 32], rounds: u8) -> Vec<usize> {
    let mut cur: Vec<usize> = (0..count).collect();
    if count <= 1 {
        return cur;
    }
    let n = count as u64;
    for round in 0..rounds {
        let mut h = Sha256::new();
        h.update(seed);
        h.update([round]);
        let p = h.finalize();
        let pivot = u64::from_le_bytes(p[..8].try_into().expect("8 bytes")) % n;
        let mut sources: Vec<Option<[u8; 32]>> = vec![None; count / 256 + 1];
        for c in cur.iter_mut() {
            let index = *c as u64;
            let flip = (pivot + n - index) % n;
            let position = index.max(flip);
            let source = sources[(position / 256) as usize].get_or_insert_with(|| {
                let mut h = Sha256::new();
                h.update(seed);
                h.update([round]);
                h.update(((position / 256) as u32).to_le_bytes());
                h.finalize().into()
            });
            let byte = source[((position % 256) / 8) as usize];
            if (byte >> (position % 8)) & 1 == 1 {
                *c = flip as usize;
            }
        }
    }
    cur
}

/// The spec's `compute_shuffled_index(index, count, seed)` for one position (`index < count`).
pub fn shuffled_index(index: usize, count: usize, seed: &[u8; 32], rounds: u8) -> usize {
    assert!(
        index < count,
        "shuffled_index: {index} is not below {count}"
    );
    let n = count as u64;
    let mut index = index as u64;
    for round in 0..rounds {
        let p = Sha256::new()
            .chain_update(seed)
            .chain_update([round])
            .finalize();
        let pivot = u64::from_le_bytes(p[..8].try_into().expect("8 bytes")) % n;
        let flip = (pivot + n - index) % n;
        let position = index.max(flip);
        let source = Sha256::new()
            .chain_update(seed)
            .chain_update([round])
            .chain_update(((position / 256) as u32).to_le_bytes())
            .finalize();
        let byte = source[((position % 256) / 8) as usize];
        if (byte >> (position % 8)) & 1 == 1 {
            index = flip;
        }
    }
    index as usize
}

/// The spec's balance-weighted sampling, shared by `compute_proposer_index` (`take` 1) and
/// `get_next_sync_committee_indices` (`take` SYNC_COMMITTEE_SIZE, repeats allowed): candidate
/// `i` = 0, 1, … is `balances[compute_shuffled_index(i % n, n, seed)]`, kept when
/// `effective_balance * 255 >= max_effective_balance * hash(seed ‖ i / 32)[i % 32]`.
/// `balances` are the active validators' effective balances (in index order); returns the
/// kept positions into it.
pub fn sample_by_balance(
    balances: &[u64],
    max_effective_balance: u64,
    seed: &[u8; 32],
    rounds: u8,
    take: usize,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(take);
    if balances.is_empty() {
        return out;
    }
    let n = balances.len();
    let mut random = [0u8; 32];
    let mut i: u64 = 0;
    while out.len() < take {
        let candidate = shuffled_index((i % n as u64) as usize, n, seed, rounds);
        if i % 32 == 0 {
            random = Sha256::new()
                .chain_update(seed)
                .chain_update((i / 32).to_le_bytes())
                .finalize()
                .into();
        }
        let byte = u64::from(random[(i % 32) as usize]);
        if balances[candidate].saturating_mul(255) >= max_effective_balance.saturating_mul(byte) {
            out.push(candidate);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lodestar 1.5.1's `computeShuffledIndex` (@lodestar/state-transition, run under node with
    /// LODESTAR_PRESET=minimal, 10 rounds, and mainnet, 90 rounds) for seed sha256("dvlab").
    #[test]
    fn matches_lodestar_compute_shuffled_index() {
        let seed: [u8; 32] = Sha256::digest(b"dvlab").into();
        assert_eq!(
            hex::encode(seed),
            "3c6f461a44aae1fe56c3ef9ea9774ccbde9b7f98891a8af1ac52b5edb1946345"
        );
        assert_eq!(
            shuffled_positions(20, &seed, 10),
            [15, 3, 13, 8, 14, 4, 12, 19, 10, 11, 0, 6, 17, 2, 1, 5, 7, 16, 18, 9]
        );
        assert_eq!(
            shuffled_positions(20, &seed, 90),
            [13, 4, 15, 17, 6, 0, 9, 11, 5, 16, 1, 18, 2, 8, 14, 12, 10, 7, 19, 3]
        );
        // 1000 positions span four source hashes.
        let big = shuffled_positions(1000, &seed, 10);
        assert_eq!(
            [0, 1, 299, 600, 999].map(|i| big[i]),
            [552, 24, 522, 266, 732]
        );
        let big = shuffled_positions(1000, &seed, 90);
        assert_eq!(
            [0, 1, 299, 600, 999].map(|i| big[i]),
            [716, 345, 684, 220, 956]
        );
        let mut sorted = big.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn one_position_equals_the_whole_permutation() {
        let seed: [u8; 32] = Sha256::digest(b"dvlab").into();
        for (count, rounds) in [(1usize, 10u8), (20, 10), (20, 90), (1000, 10)] {
            let all = shuffled_positions(count, &seed, rounds);
            for (i, want) in all.iter().enumerate() {
                assert_eq!(
                    shuffled_index(i, count, &seed, rounds),
                    *want,
                    "{count}/{i}"
                );
            }
        }
    }

    /// Lodestar 1.5.1's `computeProposerIndex` (@lodestar/state-transition, under node with
    /// LODESTAR_PRESET=minimal and mainnet) for 20 validators of effective balance
    /// 32, 25, 18, 11, 4, 32, … ETH and the seeds sha256(sha256("dvlab") ‖ slot), slots 0–15.
    #[test]
    fn proposer_sampling_matches_lodestar() {
        let seed: [u8; 32] = Sha256::digest(b"dvlab").into();
        let balances: Vec<u64> = (0..20u64)
            .map(|i| (32 - (i % 5) * 7) * 1_000_000_000)
            .collect();
        let picks = |rounds: u8| -> Vec<usize> {
            (0..16u64)
                .map(|slot| {
                    let s: [u8; 32] = Sha256::new()
                        .chain_update(seed)
                        .chain_update(slot.to_le_bytes())
                        .finalize()
                        .into();
                    sample_by_balance(&balances, 32_000_000_000, &s, rounds, 1)[0]
                })
                .collect()
        };
        assert_eq!(
            picks(10),
            [5, 10, 5, 8, 10, 10, 12, 15, 16, 16, 11, 5, 2, 9, 15, 0]
        );
        assert_eq!(
            picks(90),
            [0, 0, 10, 16, 11, 11, 11, 5, 16, 6, 11, 18, 0, 12, 6, 5]
        );
    }

    #[test]
    fn sampling_follows_effective_balance() {
        let seed = [7u8; 32];
        let max = 32_000_000_000;
        // Full balances: every candidate is kept, in shuffled order.
        let full = vec![max; 50];
        let kept = sample_by_balance(&full, max, &seed, 10, 60);
        let order = shuffled_positions(50, &seed, 10);
        assert_eq!(kept[..50], order[..]);
        assert_eq!(kept[50..], order[..10]);
        // A validator at half the maximum is skipped about half of the time; one at zero only
        // on a zero random byte.
        let mut half = full.clone();
        half[order[0]] = max / 2;
        half[order[1]] = 0;
        let many = sample_by_balance(&half, max, &seed, 10, 5000);
        let share = |p: usize| many.iter().filter(|x| **x == p).count();
        assert!(
            share(order[0]) < share(order[2]),
            "{} {}",
            share(order[0]),
            share(order[2])
        );
        assert!(share(order[1]) < share(order[2]) / 10);
        assert!(sample_by_balance(&[], max, &seed, 10, 1).is_empty());
    }

    #[test]
    fn is_a_permutation() {
        let seed = [0x42u8; 32];
        for count in [0usize, 1, 2, 5, 64, 100] {
            let mut seen = shuffled_positions(count, &seed, 10);
            seen.sort_unstable();
            assert_eq!(seen, (0..count).collect::<Vec<_>>(), "count {count}");
        }
    }
}
