//! Fuzz targets of dvnode and dvlab: every byte they take from outside (see docs/FUZZING.md).
//!
//! Each target is a module with `run(data)` — one execution, which panics (a crash) on any
//! broken property — and `seeds()` — the inputs generated from real keys and recorded data that
//! start its corpus. `fuzz_targets/<name>.rs` binds them to libFuzzer with [`target!`]. Inputs
//! that carry several parts (request, body, beacon-node answer, …) separate them with NUL bytes
//! ([`parts`]): JSON and YAML never contain a raw NUL, and libFuzzer mutates such inputs well.

pub mod beacon_client;
pub mod cluster_lock;
pub mod devnet_yaml;
pub mod fakebn;
pub mod fixture;
pub mod interchange;
pub mod keystore;
pub mod p2p_envelope;
pub mod parsig;
pub mod qbft;
pub mod recorded;
pub mod sse;
pub mod ssz;
pub mod validator_api;
pub mod web3signer;

use std::path::Path;

/// Binds a target module to libFuzzer: `dvlab_fuzz::target!(qbft);` in `fuzz_targets/qbft.rs`.
/// With `DVFUZZ_SEED_DIR` set, the module's [`seeds`](crate::qbft::seeds) are written there
/// (the first corpus directory) before libFuzzer reads its corpus.
#[macro_export]
macro_rules! target {
    ($module:ident) => {
        libfuzzer_sys::fuzz_target!(
            init: $crate::write_seeds(stringify!($module), $crate::$module::seeds),
            |data: &[u8]| $crate::$module::run(data)
        );
    };
}

/// Writes the generated seeds of target `name` into `$DVFUZZ_SEED_DIR`, if set.
pub fn write_seeds(name: &str, seeds: fn() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os("DVFUZZ_SEED_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).expect("creating the seed directory");
    let seeds = seeds();
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("gen-{name}-{i:03}")), seed).expect("writing a seed");
    }
    eprintln!(
        "{name}: {} generated seeds in {}",
        seeds.len(),
        dir.display()
    );
}

/// Splits `data` at its first `n - 1` NUL bytes into at most `n` parts (missing parts empty).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0).collect();
    out.resize(n, &[]);
    out
}

/// The inverse of [`parts`] for seeds: joins `parts` with NUL bytes.
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

/// A current-thread tokio runtime with time and I/O, for targets that run async code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}

/// A current-thread runtime whose clock is paused and jumps to the next timer whenever every
/// task waits: waits for decided values (seconds of chain time) cost nothing. Only for targets
/// without real I/O (a paused clock would fire I/O timeouts at once).
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("building a tokio runtime")
}

/// The repository root (seeds read real files from it: devnets, test data).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}
