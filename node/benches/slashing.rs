//! Slashing protection database throughput.
//!
//! - `attestation_check_and_insert/{10k,1M}`: durable (fsync'd) check + insert of the next
//!   attestation with 10 000 or 1 000 000 attestations already stored for the validator;
//! - `attestation_check/{10k,1M}`: read-only check of a vote in the middle of that history (the
//!   surround lookups, without the fsync);
//! - `block_check_and_insert`: durable check + insert of the next block.
//!
//! The history is stored with one bulk transaction, so setup takes seconds. Set
//! `SLASHING_BENCH_SKIP_1M=1` to skip the 1M-attestation cases (about 150 MB of disk).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dvnode::slashing::{interchange::SignedAttestation, SlashingDb};

const PK: [u8; 48] = [0x99; 48];

fn root(i: u64) -> Option<[u8; 32]> {
    let mut r = [0xab; 32];
    r[..8].copy_from_slice(&i.to_be_bytes());
    Some(r)
}

/// A database with attestations (i, i + 1) for i in 0..n, stored in bulk.
fn populated(dir: &tempfile::TempDir, n: u64) -> SlashingDb {
    let db = SlashingDb::open(&dir.path().join("slashing.redb")).expect("open");
    let history: Vec<SignedAttestation> = (0..n)
        .map(|i| SignedAttestation {
            source_epoch: i,
            target_epoch: i + 1,
            signing_root: root(i),
        })
        .collect();
    db.check_and_insert_attestations(&PK, &history)
        .expect("bulk insert");
    db
}

fn attestations(c: &mut Criterion) {
    let mut sizes = vec![("10k", 10_000u64)];
    if std::env::var_os("SLASHING_BENCH_SKIP_1M").is_none() {
        sizes.push(("1M", 1_000_000));
    }
    for (label, n) in sizes {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = populated(&dir, n);

        let mut group = c.benchmark_group("attestation_check");
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            // (m - 1, m + 2) surrounds the stored (m, m + 1): found via the neighbour lookup.
            let m = n / 2;
            b.iter(|| {
                let r = db.check_attestation(&PK, m - 1, m + 2, root(0));
                assert!(r.is_err());
            })
        });
        group.finish();

        let mut group = c.benchmark_group("attestation_check_and_insert");
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(8));
        let mut next = n;
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                let r = db.check_and_insert_attestation(&PK, next, next + 1, root(next));
                assert!(r.is_ok());
                next += 1;
            })
        });
        group.finish();
    }
}

fn blocks(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = SlashingDb::open(&dir.path().join("slashing.redb")).expect("open");
    let mut group = c.benchmark_group("block_check_and_insert");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    let mut slot = 0u64;
    group.bench_function("sequential", |b| {
        b.iter(|| {
            let r = db.check_and_insert_block(&PK, slot, root(slot));
            assert!(r.is_ok());
            slot += 1;
        })
    });
    group.finish();
}

// Private: `criterion_group!` generates a public function without documentation.
mod harness {
    use super::*;
    criterion_group!(benches, attestations, blocks);
}

criterion_main!(harness::benches);
