//! Analysis + report of a synthetic 10,000-slot × 1,000-validator dataset.
#![allow(missing_docs)] // criterion_group! generates an undocumented public function

use criterion::{criterion_group, criterion_main, Criterion};
use dvlab::data::{synthetic::Builder, GroupMeta, RunMeta};
use std::collections::BTreeMap;

const SLOTS: u64 = 10_000;
const VALIDATORS: u64 = 1_000;
const SPE: u64 = 8;

fn dataset() -> (RunMeta, dvlab::data::RawData) {
    let mut b = Builder::default();
    for slot in 0..SLOTS {
        // Every validator attests once per epoch: validators v with v % SPE == slot % SPE.
        for v in (slot % SPE..VALIDATORS).step_by(SPE as usize) {
            b.duty(slot, v);
            if (v * 31 + slot * 17) % 100 < 97 {
                let d = 1 + (v + slot) % 3 / 2;
                b.inclusion(v, slot, slot + d, (v + slot) % 50 != 0, true);
                b.vote(v, slot / SPE, slot / SPE + 1, "r");
            }
        }
        b.proposer(slot, (slot * 7) % VALIDATORS);
        if slot % 40 != 0 {
            b.block(slot, (slot * 7) % VALIDATORS, "b");
        }
        b.head(slot * 4, "bn0", slot, slot / SPE, 1);
    }
    let meta = RunMeta {
        run: "bench".into(),
        genesis_time: 0,
        seconds_per_slot: 4,
        slots_per_epoch: SPE,
        first_slot: SPE,
        last_slot: SLOTS - 1,
        groups: vec![
            GroupMeta {
                name: "keepers".into(),
                first: 0,
                count: 700,
                distributed: false,
                indices: Vec::new(),
            },
            GroupMeta {
                name: "baseline".into(),
                first: 700,
                count: 150,
                distributed: false,
                indices: Vec::new(),
            },
            GroupMeta {
                name: "dv0".into(),
                first: 850,
                count: 150,
                distributed: true,
                indices: Vec::new(),
            },
        ],
        beacon_nodes: vec![],
        assertions: BTreeMap::from([("dv_inclusion_rate".to_string(), ">= 0.95".to_string())]),
        dvnodes: vec![],
        remote_signer: vec![],
    };
    (meta, b.build().expect("frames"))
}

fn bench(c: &mut Criterion) {
    let (meta, raw) = dataset();
    let mut g = c.benchmark_group("analysis");
    g.sample_size(10);
    g.bench_function("analyse_10k_slots_1k_validators", |b| {
        b.iter(|| dvlab::analyse::analyse(&meta, &raw).expect("analysis"))
    });
    let a = dvlab::analyse::analyse(&meta, &raw).expect("analysis");
    let dir = tempfile::tempdir().expect("tempdir");
    g.bench_function("report_10k_slots_1k_validators", |b| {
        b.iter(|| dvlab::report::write(dir.path(), &meta, &raw, &a).expect("report"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
