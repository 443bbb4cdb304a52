//! Real traffic recorded from an end-to-end run with real Lodestar (`e2e-local --record DIR`,
//! see `dvlab_tests::record`): dvnode 0's exchanges with its beacon node (`bn.jsonl`) and
//! with its validator client (`vc.jsonl`), committed under `fuzz/seeds/recorded/`. The
//! targets that read HTTP turn them into seeds of their own input format.

use std::path::PathBuf;

pub use dvlab_tests::record::Exchange;

fn dir() -> PathBuf {
    crate::repo_root().join("fuzz/seeds/recorded")
}

fn read(file: &str) -> Vec<Exchange> {
    let path = dir().join(file);
    if !path.exists() {
        return Vec::new();
    }
    dvlab_tests::record::read(&path).unwrap_or_else(|e| panic!("{e:#}"))
}

/// dvnode 0's requests to its beacon node and the answers of a real Lodestar 1.5.1 BN.
pub fn beacon_node() -> Vec<Exchange> {
    read("bn.jsonl")
}

/// Requests of a real Lodestar 1.5.1 VC to dvnode 0's validator API and dvnode's answers.
pub fn validator_client() -> Vec<Exchange> {
    read("vc.jsonl")
}
