//! The consensus spec's swap-or-not shuffle, beneath the phases that sample validators with it:
//! [`crate::genesis`] (a genesis state's sync committees) and [`crate::collect`] (attester
//! committees of past epochs). No Rust crate implements it apart from client internals.

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
    fn is_a_permutation() {
        let seed = [0x42u8; 32];
        for count in [0usize, 1, 2, 5, 64, 100] {
            let mut seen = shuffled_positions(count, &seed, 10);
            seen.sort_unstable();
            assert_eq!(seen, (0..count).collect::<Vec<_>>(), "count {count}");
        }
    }
}
