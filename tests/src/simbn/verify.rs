//! Batch verification of BLS signatures (real blst): one random-linear-combination check for a
//! whole batch, each signature on its own only when the batch fails.

use blst::{blst_scalar, BLST_ERROR};
use dvnode::keys::tbls::{self, PublicKey, Signature, DST};
use rand::RngCore;

/// One signature to check.
pub struct Item {
    /// Signer.
    pub pubkey: PublicKey,
    /// Signing root.
    pub message: [u8; 32],
    /// Signature (already decoded; decoding failures are invalid before batching).
    pub signature: Signature,
}

/// Whether each item verifies. The batch is checked at once (64-bit random weights, group
/// checks on every signature and key); when that fails every item is verified alone to find
/// the bad ones.
pub fn verify_batch(items: &[Item]) -> Vec<bool> {
    match items {
        [] => return Vec::new(),
        [one] => return vec![tbls::verify(&one.pubkey, &one.message, &one.signature)],
        _ => {}
    }
    let mut rng = rand::thread_rng();
    let rands: Vec<blst_scalar> = items
        .iter()
        .map(|_| {
            let mut s = blst_scalar::default();
            s.b[..8].copy_from_slice(&(rng.next_u64() | 1).to_le_bytes());
            s
        })
        .collect();
    let msgs: Vec<&[u8]> = items.iter().map(|i| i.message.as_slice()).collect();
    let pks: Vec<&PublicKey> = items.iter().map(|i| &i.pubkey).collect();
    let sigs: Vec<&Signature> = items.iter().map(|i| &i.signature).collect();
    let ok = Signature::verify_multiple_aggregate_signatures(
        &msgs, DST, &pks, true, &sigs, true, &rands, 64,
    ) == BLST_ERROR::BLST_SUCCESS;
    if ok {
        vec![true; items.len()]
    } else {
        items
            .iter()
            .map(|i| tbls::verify(&i.pubkey, &i.message, &i.signature))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_batch_with_one_bad_signature_names_exactly_that_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let keys: Vec<_> = (0..5).map(|_| tbls::random_secret(&mut rng)).collect();
        let mut items: Vec<Item> = keys
            .iter()
            .enumerate()
            .map(|(i, sk)| {
                let message = [i as u8; 32];
                Item {
                    pubkey: sk.sk_to_pk(),
                    message,
                    signature: tbls::sign(sk, &message),
                }
            })
            .collect();
        assert_eq!(verify_batch(&items), vec![true; 5]);
        items[2].message = [9; 32];
        assert_eq!(verify_batch(&items), vec![true, true, false, true, true]);
        assert_eq!(verify_batch(&items[2..3]), vec![false]);
        assert!(verify_batch(&[]).is_empty());
    }
}
