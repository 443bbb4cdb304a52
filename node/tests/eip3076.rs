//! Runs the EIP-3076 slashing protection interchange test vectors against [`SlashingDb`].
//!
//! Every `*.json` in `$EIP3076_VECTORS_DIR` (default: `shared/vectors/.../tests/generated` beside
//! the repository checkout) is run in a fresh database: per step, the interchange is imported
//! (which must succeed iff `should_succeed`), then every block and attestation is checked and
//! inserted (which must succeed iff its `should_succeed`). `should_succeed` is the expectation for
//! minifying implementations, which this one is (`should_succeed_complete` is for implementations
//! that keep every imported record). Steps with `contains_slashable_data` are imported too: the
//! vectors expect a minifying importer to accept them and stay safe.

use std::path::{Path, PathBuf};

use dvnode::slashing::{
    interchange::{parse_hex, Interchange},
    SlashingDb,
};
use serde::Deserialize;

const DEFAULT_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/slashing-protection-interchange/tests/generated"
);

#[derive(Deserialize)]
struct Vector {
    name: String,
    genesis_validators_root: String,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    should_succeed: bool,
    contains_slashable_data: bool,
    interchange: serde_json::Value,
    blocks: Vec<BlockCase>,
    attestations: Vec<AttestationCase>,
}

#[derive(Deserialize)]
struct BlockCase {
    pubkey: String,
    slot: String,
    signing_root: Option<String>,
    should_succeed: bool,
}

#[derive(Deserialize)]
struct AttestationCase {
    pubkey: String,
    source_epoch: String,
    target_epoch: String,
    signing_root: Option<String>,
    should_succeed: bool,
}

fn vectors_dir() -> PathBuf {
    std::env::var_os("EIP3076_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_DIR.into())
}

fn num(s: &str, what: &str) -> Result<u64, String> {
    s.parse().map_err(|e| format!("bad {what} {s:?}: {e}"))
}

fn outcome<T: std::fmt::Debug, E: std::fmt::Display>(r: &Result<T, E>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e})"),
    }
}

/// Runs one vector file in a fresh database; returns a description of every mismatch.
fn run_vector(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read(path).map_err(|e| format!("reading: {e}"))?;
    let vector: Vector = serde_json::from_slice(&text).map_err(|e| format!("parsing: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db = SlashingDb::open(&dir.path().join("slashing.redb")).map_err(|e| e.to_string())?;
    db.set_genesis_validators_root(parse_hex(&vector.genesis_validators_root)?)
        .map_err(|e| e.to_string())?;

    let mut failures = Vec::new();
    for (i, step) in vector.steps.iter().enumerate() {
        let imported = serde_json::to_vec(&step.interchange)
            .map_err(|e| e.to_string())
            .and_then(|b| Interchange::from_json_slice(&b).map_err(|e| e.to_string()))
            .and_then(|ic| db.import_interchange(&ic).map_err(|e| e.to_string()));
        if imported.is_ok() != step.should_succeed {
            failures.push(format!(
                "step {i}: import (contains_slashable_data={}) should_succeed={} but got {}",
                step.contains_slashable_data,
                step.should_succeed,
                outcome(&imported)
            ));
        }

        for (j, b) in step.blocks.iter().enumerate() {
            let pubkey = parse_hex::<48>(&b.pubkey)?;
            let root = b.signing_root.as_deref().map(parse_hex::<32>).transpose()?;
            let slot = num(&b.slot, "slot")?;
            let res = db.check_and_insert_block(&pubkey, slot, root);
            if res.is_ok() != b.should_succeed {
                failures.push(format!(
                    "step {i} block {j} (slot {slot}): should_succeed={} but got {}",
                    b.should_succeed,
                    outcome(&res)
                ));
            }
            if let Err(e) = &res {
                if !e.is_refusal() {
                    failures.push(format!("step {i} block {j}: unexpected error kind: {e}"));
                }
            }
        }

        for (j, a) in step.attestations.iter().enumerate() {
            let pubkey = parse_hex::<48>(&a.pubkey)?;
            let root = a.signing_root.as_deref().map(parse_hex::<32>).transpose()?;
            let (source, target) = (
                num(&a.source_epoch, "source")?,
                num(&a.target_epoch, "target")?,
            );
            let res = db.check_and_insert_attestation(&pubkey, source, target, root);
            if res.is_ok() != a.should_succeed {
                failures.push(format!(
                    "step {i} attestation {j} ({source}, {target}): should_succeed={} but got {}",
                    a.should_succeed,
                    outcome(&res)
                ));
            }
            if let Err(e) = &res {
                if !e.is_refusal() {
                    failures.push(format!(
                        "step {i} attestation {j}: unexpected error kind: {e}"
                    ));
                }
            }
        }
    }

    // The final state must export, and the export must import into a fresh database.
    let exported = db
        .export_interchange()
        .map_err(|e| format!("export: {e}"))?;
    let json = exported
        .to_json_pretty()
        .map_err(|e| format!("export: {e}"))?;
    let reparsed = Interchange::from_json_slice(&json).map_err(|e| format!("re-parse: {e}"))?;
    let fresh = SlashingDb::open(&dir.path().join("fresh.redb")).map_err(|e| e.to_string())?;
    if let Err(e) = fresh.import_interchange(&reparsed) {
        failures.push(format!("re-importing the final export failed: {e}"));
    }
    if vector.name.is_empty() {
        failures.push("vector has no name".into());
    }
    Ok(failures)
}

#[test]
fn eip3076_interchange_vectors() {
    let dir = vectors_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "EIP-3076 vectors directory {} is not readable ({e}); set EIP3076_VECTORS_DIR to the \
             slashing-protection-interchange tests/generated directory",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("listing vectors directory").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.json vectors found in {}",
        dir.display()
    );

    let mut failed = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        match run_vector(file) {
            Ok(f) if f.is_empty() => {}
            Ok(f) => failed.push(format!("{name}:\n    {}", f.join("\n    "))),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    println!(
        "ran {} EIP-3076 vectors from {}",
        files.len(),
        dir.display()
    );
    assert!(
        failed.is_empty(),
        "{} of {} EIP-3076 vectors failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}
