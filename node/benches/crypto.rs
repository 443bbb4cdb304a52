//! Benchmarks of the threshold-BLS hot paths (partial verification, combination, splitting) and
//! keystore decryption. Throughput is reported per element, so criterion prints operations/s.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dvnode::keys::keystore::{KdfChoice, Keystore};
use dvnode::keys::tbls::{
    combine, random_secret, sign, split, verify, verify_and_combine, PublicKey, Signature,
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
        g.bench_function(format!("combine_t{t}_n{n}"), |b| {
            b.iter(|| combine(black_box(&parts[n - t..]), t).unwrap())
        });
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

criterion_group!(benches, bench_tbls, bench_keystore);
criterion_main!(benches);
