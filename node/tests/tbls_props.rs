//! Property tests of threshold BLS: any t partials combine to the group signature, t−1 do not,
//! corrupted partials are detected and excluded, and shares recover the secret.

use dvnode::keys::tbls::{
    combine, random_secret, recover_secret, sign, split, verify, verify_and_combine, PublicKey,
    SecretKey, Signature, TblsError,
};
use proptest::prelude::*;
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

/// A random cluster: n ≤ 10 shares with threshold t in (n/2, n], plus a seed for everything
/// else that is random.
fn cluster() -> impl Strategy<Value = (usize, usize, u64)> {
    (1usize..=10).prop_flat_map(|n| (Just(n), (n / 2 + 1)..=n, any::<u64>()))
}

struct Setup {
    sk: SecretKey,
    pk: PublicKey,
    shares: Vec<SecretKey>,
    public_shares: Vec<PublicKey>,
    msg: Vec<u8>,
    /// (share index, partial signature) for every node.
    partials: Vec<(u64, Signature)>,
}

fn setup(n: usize, t: usize, rng: &mut StdRng) -> Setup {
    let sk = random_secret(rng);
    let shares = split(&sk, n, t, rng).expect("valid parameters");
    let msg: Vec<u8> = (0..32).map(|_| rng.gen()).collect();
    let partials = shares
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, sign(s, &msg)))
        .collect();
    Setup {
        pk: sk.sk_to_pk(),
        public_shares: shares.iter().map(SecretKey::sk_to_pk).collect(),
        sk,
        shares,
        msg,
        partials,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_threshold_subset_combines_to_group_signature((n, t, seed) in cluster()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let s = setup(n, t, &mut rng);
        let direct = sign(&s.sk, &s.msg);
        prop_assert!(verify(&s.pk, &s.msg, &direct));

        // A random subset of size k ≥ t in random order.
        let k = rng.gen_range(t..=n);
        let mut subset = s.partials.clone();
        subset.shuffle(&mut rng);
        subset.truncate(k);
        let combined = combine(&subset, t).unwrap();
        prop_assert!(verify(&s.pk, &s.msg, &combined));
        prop_assert_eq!(combined, direct);

        // The secret itself is recovered from any t shares.
        let mut share_subset: Vec<(u64, SecretKey)> =
            s.shares.iter().enumerate().map(|(i, sh)| (i as u64 + 1, sh.clone())).collect();
        share_subset.shuffle(&mut rng);
        let recovered = recover_secret(&share_subset[..t], t).unwrap();
        prop_assert_eq!(recovered.to_bytes(), s.sk.to_bytes());
    }

    #[test]
    fn fewer_than_threshold_do_not_combine((n, t, seed) in cluster()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let s = setup(n, t, &mut rng);
        let mut shuffled = s.partials.clone();
        shuffled.shuffle(&mut rng);
        let below = &shuffled[..t - 1];

        // Asking for t with only t−1 partials is an error.
        prop_assert_eq!(
            combine(below, t).unwrap_err(),
            TblsError::NotEnoughShares { got: t - 1, needed: t }
        );
        let secret_below: Vec<(u64, SecretKey)> =
            below.iter().map(|(i, _)| (*i, s.shares[*i as usize - 1].clone())).collect();
        prop_assert!(recover_secret(&secret_below, t).is_err());

        // Interpolating t−1 partials as if the threshold were t−1 yields a wrong signature.
        if t >= 2 {
            let wrong = combine(below, t - 1).unwrap();
            prop_assert!(!verify(&s.pk, &s.msg, &wrong));
        }

        // t−1 genuine partials plus a forged one (wrong key) at an unused index do not verify.
        if t - 1 < n {
            let forged_index = shuffled[t - 1].0;
            let forger = random_secret(&mut rng);
            let mut with_forgery = below.to_vec();
            with_forgery.push((forged_index, sign(&forger, &s.msg)));
            let combined = combine(&with_forgery, t).unwrap();
            prop_assert!(!verify(&s.pk, &s.msg, &combined));
        }
    }

    #[test]
    fn corrupted_partials_are_detected_and_excluded((n, t, seed) in cluster(), corrupt in 0usize..=10) {
        let mut rng = StdRng::seed_from_u64(seed);
        let s = setup(n, t, &mut rng);
        let corrupt = corrupt.min(n);
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut partials = s.partials.clone();
        for &victim in &order[..corrupt] {
            partials[victim].1 = if rng.gen_bool(0.5) {
                // Signed with a wrong key.
                sign(&random_secret(&mut rng), &s.msg)
            } else {
                // An unrelated random G2 point.
                let junk: [u8; 32] = rng.gen();
                sign(&random_secret(&mut rng), &junk)
            };
        }
        partials.shuffle(&mut rng);
        let expected_rejected: Vec<u64> = partials
            .iter()
            .filter(|(i, _)| order[..corrupt].contains(&(*i as usize - 1)))
            .map(|(i, _)| *i)
            .collect();

        match verify_and_combine(&partials, &s.public_shares, &s.msg, t) {
            Ok((sig, rejected)) => {
                prop_assert!(n - corrupt >= t);
                prop_assert_eq!(rejected, expected_rejected);
                prop_assert!(verify(&s.pk, &s.msg, &sig));
                prop_assert_eq!(sig, sign(&s.sk, &s.msg));
            }
            Err(err) => {
                prop_assert!(n - corrupt < t, "unexpected error {}", err);
                prop_assert_eq!(
                    err,
                    TblsError::NotEnoughValidPartials {
                        valid: n - corrupt,
                        needed: t,
                        rejected: expected_rejected,
                    }
                );
            }
        }
    }
}
