//! dvlab devnet files: YAML into [`DevnetSpec::parse`] (schema, every validation, errors located
//! at their line), then [`Plan::new`] (containers, keys, clusters, ports) and the seeded fault
//! [`timeline`] — everything `dvlab plan` and `dvlab run` derive from the file before any
//! container starts — and the plan as JSON as `dvlab plan` prints it.
//!
//! Input: the YAML text.
//!
//! Properties: no panic, no unbounded allocation; every error names the file.

use dvlab::faults::timeline;
use dvlab::plan::Plan;
use dvlab::spec::DevnetSpec;

/// A fixed "now" (so that runs reproduce).
const NOW: u64 = 1_800_000_000;

/// One execution.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let spec = match DevnetSpec::parse(text, "fuzz.yaml") {
        Ok(spec) => spec,
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("fuzz.yaml"),
                "error does not name the file: {msg}"
            );
            return;
        }
    };
    let plan = Plan::new(&spec, NOW);
    serde_json::to_string(&plan).expect("plans serialise");
    match timeline(&spec, &plan) {
        Ok(t) => {
            let _ = serde_json::to_string(&t);
        }
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
}

/// Every devnet file of the repository (`devnets/*.yaml`, the scenario library).
pub fn seeds() -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(crate::repo_root().join("devnets"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}
