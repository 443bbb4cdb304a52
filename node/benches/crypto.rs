//! Benchmarks of the threshold-BLS hot paths (partial verification, combination, splitting) and
//! keystore decryption. Throughput is reported per element, so criterion prints operations/s.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dvnode::keys::batch::{verify_batch, BatchItem};
use dvnode::keys::keystore::{KdfChoice, Keystore};
use dvnode::keys::tbls::{
    combine, combine_full_width, combine_public_keys, combine_public_keys_full_width,
    random_secret, sign, split, verify, verify_and_combine, PublicKey, Signature,
};
use rand::{rngs::StdRng, SeedableRng};

const MSG: &[u8] = b"0123456789abcdef0123456789abcdef";

fn partials(n: usize, t: usize) -> (Vec<(u64, Signature)>, Vec<PublicKey>) {
    let mut rng = StdRng::seed_from_u64(1);
    let sk = random_secret(&mut rng);
    let shares = split(&sk, n, t, &mut rng).unwrap();
    let partials = shares
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, sign(s, MSG)))
        .collect();
    (partials, shares.iter().map(|s| s.sk_to_pk()).collect())
}

fn bench_tbls(c: &mut Criterion) {
    let (parts, pubs) = partials(4, 3);
    let mut g = c.benchmark_group("tbls");
    g.throughput(Throughput::Elements(1));
    g.bench_function("partial_verify", |b| {
        b.iter(|| assert!(verify(&pubs[0], black_box(MSG), &parts[0].1)))
    });
    g.bench_function("partial_sign", |b| {
        let sk = random_secret(&mut StdRng::seed_from_u64(2));
        b.iter(|| sign(&sk, black_box(MSG)))
    });
    for (n, t) in [(4, 3), (10, 7)] {
        let (parts, pubs) = partials(n, t);
        g.bench_function(format!("verify_and_combine_t{t}_n{n}"), |b| {
            b.iter(|| verify_and_combine(black_box(&parts[..t]), &pubs, MSG, t).unwrap())
        });
        let mut rng = StdRng::seed_from_u64(3);
        let sk = random_secret(&mut rng);
        g.bench_function(format!("split_t{t}_n{n}"), |b| {
            b.iter(|| split(&sk, n, t, &mut rng).unwrap())
        });
    }
    g.finish();
}

/// Share-index subsets of each kind for the combination benchmarks: `(name, n, indices)`.
/// Consecutive indices give integer Lagrange coefficients (common denominator D = 1), others a
/// denominator (one extra scalar multiplication by D⁻¹), spread indices of a large cluster
/// coefficients of 128 bits (the limit of the small-integer path) or more (the full-width path).
const COMBINE_SUBSETS: &[(&str, usize, &[u64])] = &[
    ("t3_n4", 4, &[2, 3, 4]),
    ("t3_n4_d3", 4, &[1, 2, 4]),
    ("t7_n10", 10, &[4, 5, 6, 7, 8, 9, 10]),
    ("t7_n10_d108", 10, &[1, 2, 4, 5, 6, 7, 10]),
    (
        "t7_n1000_128bit",
        1000,
        &[188, 286, 589, 827, 857, 859, 885],
    ),
    (
        "t7_n1000_fallback",
        1000,
        &[183, 301, 349, 666, 734, 969, 980],
    ),
];

/// Combination of partial signatures and of public key shares, each right after the full-width
/// implementation it replaced (`…_full_width_…`), for every kind of index subset.
fn bench_combine(c: &mut Criterion) {
    let mut g = c.benchmark_group("tbls");
    g.throughput(Throughput::Elements(1));
    for &(name, n, indices) in COMBINE_SUBSETS {
        let t = indices.len();
        let mut rng = StdRng::seed_from_u64(6);
        let sk = random_secret(&mut rng);
        let shares = split(&sk, n, t, &mut rng).unwrap();
        let share = |i: u64| &shares[i as usize - 1];
        let parts: Vec<(u64, Signature)> =
            indices.iter().map(|&i| (i, sign(share(i), MSG))).collect();
        let pubs: Vec<(u64, PublicKey)> =
            indices.iter().map(|&i| (i, share(i).sk_to_pk())).collect();
        assert_eq!(
            combine(&parts, t).unwrap(),
            combine_full_width(&parts, t).unwrap()
        );
        g.bench_function(format!("combine_full_width_{name}"), |b| {
            b.iter(|| combine_full_width(black_box(&parts), t).unwrap())
        });
        g.bench_function(format!("combine_{name}"), |b| {
            b.iter(|| combine(black_box(&parts), t).unwrap())
        });
        g.bench_function(format!("combine_public_keys_full_width_{name}"), |b| {
            b.iter(|| combine_public_keys_full_width(black_box(&pubs), t).unwrap())
        });
        g.bench_function(format!("combine_public_keys_{name}"), |b| {
            b.iter(|| combine_public_keys(black_box(&pubs), t).unwrap())
        });
    }
    g.finish();
}

/// `n` signatures by distinct keys over `messages` distinct messages (partials of a slot: one
/// message per committee, one for all sync committee members).
fn batch(n: usize, messages: usize) -> Vec<BatchItem> {
    let mut rng = StdRng::seed_from_u64(5);
    (0..n)
        .map(|i| {
            let sk = random_secret(&mut rng);
            let message = [(i % messages) as u8; 32];
            BatchItem {
                public_key: sk.sk_to_pk(),
                message,
                signature: sign(&sk, &message),
            }
        })
        .collect()
}

fn bench_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_verify");
    g.sample_size(10);
    for (n, m) in [(64, 1), (512, 1), (512, 2), (512, 64)] {
        let items = batch(n, m);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}_sigs_{m}_messages"), |b| {
            b.iter(|| assert!(verify_batch(black_box(&items)).iter().all(|ok| *ok)))
        });
    }
    let mut items = batch(512, 2);
    items[100].message = [9; 32];
    g.throughput(Throughput::Elements(512));
    g.bench_function("512_sigs_2_messages_one_invalid", |b| {
        b.iter(|| verify_batch(black_box(&items)))
    });
    g.finish();
}

fn bench_keystore(c: &mut Criterion) {
    let sk = random_secret(&mut StdRng::seed_from_u64(4));
    let ks = Keystore::encrypt(&sk, "password", "", KdfChoice::Insecure).unwrap();
    let mut g = c.benchmark_group("keystore");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decrypt_insecure", |b| {
        b.iter(|| ks.decrypt(black_box("password")).unwrap())
    });
    g.bench_function("encrypt_insecure", |b| {
        b.iter(|| Keystore::encrypt(&sk, black_box("password"), "", KdfChoice::Insecure).unwrap())
    });
    g.finish();
}

// Private: `criterion_group!` generates a public function without documentation.
mod harness {
    use super::*;
    criterion_group!(
        benches,
        bench_tbls,
        bench_combine,
        bench_batch,
        bench_keystore
    );
}

criterion_main!(harness::benches);
