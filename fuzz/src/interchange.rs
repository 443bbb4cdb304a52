//! EIP-3076 slashing-protection interchange import ([`SlashingDb::import_interchange`]) into a
//! database that already holds history (in memory, fresh for every execution).
//!
//! Input: interchange JSON.
//!
//! Properties: all or nothing — after a refused import the database exports exactly as before;
//! after an accepted one it is at least as strict as the history it was given (no block at or
//! below a validator's highest imported or recorded slot, no attestation with a target at or
//! below its highest target, is signable) and a second import of the same file changes
//! nothing.

use std::path::PathBuf;
use std::sync::OnceLock;

use dvnode::slashing::interchange::Interchange;
use dvnode::slashing::SlashingDb;

/// Genesis validators root of the database.
const GVR: [u8; 32] = [0; 32];
/// A signing root no interchange of the corpus uses.
const FRESH_ROOT: [u8; 32] = [0xfe; 32];

/// History recorded before the import: a validator of the EIP-3076 vectors and one other.
fn base() -> &'static Interchange {
    static B: OnceLock<Interchange> = OnceLock::new();
    B.get_or_init(base_parsed)
}

fn base_parsed() -> Interchange {
    let json = format!(
        r#"{{"metadata":{{"interchange_format_version":"5","genesis_validators_root":"0x{}"}},
        "data":[{{"pubkey":"0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c",
          "signed_blocks":[{{"slot":"81952","signing_root":"0x4ff6f743a43f3b4f95350831aeaf0a122a1a392922c45d804280284a69eb850b"}}],
          "signed_attestations":[{{"source_epoch":"2290","target_epoch":"3007","signing_root":"0x587d6a4f59a58fe24f406e0502413e77fe1babddee641fda30034ed37ecc884d"}}]}},
         {{"pubkey":"0xb845089a1457f811bfc000588fbb4e713669be8ce060ea6be3c6ece09afc3794106c91ca73acda5e5457122d58723bed",
          "signed_blocks":[],"signed_attestations":[{{"source_epoch":"5","target_epoch":"6"}}]}}]}}"#,
        hex::encode(GVR)
    );
    Interchange::from_json_slice(json.as_bytes()).expect("base interchange")
}

/// The database's full content, as an interchange.
fn export(db: &SlashingDb) -> Interchange {
    db.export_interchange().expect("export")
}

/// One execution.
pub fn run(data: &[u8]) {
    let interchange = match Interchange::from_json_slice(data) {
        Ok(i) => i,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let db = SlashingDb::in_memory().expect("in-memory DB");
    db.import_interchange(base()).expect("base import");
    let before = export(&db);
    match db.import_interchange(&interchange) {
        Err(e) => {
            let _ = e.to_string();
            assert_eq!(export(&db), before, "a refused import changed the database");
        }
        Ok(_) => {
            for record in before.data.iter().chain(&interchange.data) {
                let pk = &record.pubkey;
                if let Some(max) = record.signed_blocks.iter().map(|b| b.slot).max() {
                    assert!(
                        db.check_block(pk, max, Some(FRESH_ROOT)).is_err(),
                        "block at imported slot {max} is signable"
                    );
                }
                if let Some(a) = record
                    .signed_attestations
                    .iter()
                    .max_by_key(|a| a.target_epoch)
                {
                    assert!(
                        db.check_attestation(pk, a.source_epoch, a.target_epoch, Some(FRESH_ROOT))
                            .is_err(),
                        "attestation at imported target {} is signable",
                        a.target_epoch
                    );
                }
            }
            let after = export(&db);
            db.import_interchange(&interchange)
                .expect("the same interchange imports again");
            assert_eq!(export(&db), after, "a repeated import changed the database");
        }
    }
}

/// Where the EIP-3076 test vectors are (`$EIP3076_VECTORS_DIR`, else under `$SHARED_DIR` or
/// `../shared`).
fn vectors_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EIP3076_VECTORS_DIR") {
        return d.into();
    }
    let shared = std::env::var_os("SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("../shared"));
    shared.join("vectors/slashing-protection-interchange/tests/generated")
}

/// Every interchange of every step of the EIP-3076 test vectors (read from the shared
/// directory, never copied into the repository).
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(vectors_dir()) else {
        eprintln!(
            "interchange: no EIP-3076 vectors at {}",
            vectors_dir().display()
        );
        return out;
    };
    let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read(&f) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        for step in v["steps"].as_array().into_iter().flatten() {
            out.push(serde_json::to_vec(&step["interchange"]).expect("JSON"));
        }
    }
    out
}
