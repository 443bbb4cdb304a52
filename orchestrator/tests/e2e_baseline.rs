//! End to end: a short keepers + baseline devnet in real Docker, asserting on report.json.
//! Needs the images (`dvlab images build`) and a Docker daemon; runs only with DVLAB_E2E=1.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn baseline_only_devnet_end_to_end() {
    if std::env::var("DVLAB_E2E").as_deref() != Ok("1") {
        eprintln!("SKIPPED baseline_only_devnet_end_to_end: set DVLAB_E2E=1 to run it (needs Docker and `dvlab images build`)");
        return;
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let spec = manifest.join("../devnets/baseline-only.yaml");
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_dvlab"))
        .arg("run")
        .arg(&spec)
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("dvlab runs");
    // 0: assertions hold, 1: one failed; 2 would be a failed run.
    assert!(
        matches!(status.code(), Some(0) | Some(1)),
        "dvlab run failed: {status}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    let baseline = &report["groups"]["baseline"];
    assert_eq!(baseline["validators"], 8);
    // One attestation duty per validator and epoch over the analysed epochs 1..=3.
    assert_eq!(baseline["attestation_duties"], 8 * 3, "{baseline}");
    let rate = baseline["inclusion_rate"].as_f64().unwrap();
    assert!(rate > 0.8, "baseline inclusion rate {rate}");
    assert!(
        report["groups"]["keepers"]["inclusion_rate"]
            .as_f64()
            .unwrap()
            > 0.8
    );
    assert_eq!(report["beacon_nodes"].as_array().unwrap().len(), 2);
    assert!(report["beacon_nodes"][0]["api_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(
        report["slashing_audit"]["violations"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(
        report["slashing_audit"]["messages_checked"]
            .as_u64()
            .unwrap()
            > 0
    );
    for f in [
        "report.html",
        "meta.json",
        "raw/duties.csv",
        "raw/inclusions.csv",
        "raw/blocks.csv",
    ] {
        assert!(out.path().join(f).exists(), "{f} missing");
    }
    // Nothing of the run is left behind.
    let ps = Command::new("docker")
        .args(["ps", "-aq", "--filter", "label=dvlab.run=baseline-only"])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "containers left: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}
