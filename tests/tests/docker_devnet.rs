//! Docker end-to-end test: a short chaos devnet with a 4-node / threshold-3 DV cluster, run by
//! the `dvlab` library exactly as `dvlab run` does (images → up → fault timeline alongside
//! collection → analyse → report → heal → down): healthy, then a 2|2 partition of the dvnodes
//! for 2 epochs, then healed. Checks `report.json` (the DV attests outside the partition,
//! signs nothing during it, nothing slashable, recovers within a few slots, baseline
//! unaffected, the chain-health figures; in middleware mode, which `make test` covers only here,
//! every DV proposal and the DVs' sync messages outside the partition are on chain), that the
//! report directory holds no secret of the run's private state directory, and that `dvlab down`
//! leaves nothing of the run in Docker nor its key material on disk.
//!
//! Runs only with `DVLAB_E2E=1` (`make e2e-docker` sets it and prepares Docker, Lodestar and
//! the release dvnode binary); with it set, a missing Docker engine, Lodestar install or
//! dvnode binary fails the test with the cause.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::query_parameters::ListNetworksOptionsBuilder;
use dvlab::images::{self, ImageInputs};
use dvlab::pipeline::Outcome;
use dvlab::plan::RUN_LABEL;
use dvlab::runtime;
use dvlab::spec::DevnetSpec;
use serde_json::Value;

/// Reasons the dvnode tracker gives for a failed duty.
const TRACKER_REASONS: [&str; 7] = [
    "fetch_bn_error",
    "no_consensus",
    "slashing_refused",
    "no_local_vc_signature",
    "insufficient_peer_signatures",
    "broadcast_bn_error",
    "not_included_onchain",
];

/// One devnet at a time: the tests of this file share the machine's cores.
static ONE_DEVNET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Image inputs from the environment `make e2e-docker` sets up.
fn image_inputs() -> ImageInputs {
    let root = workspace_root();
    let lodestar_dir = std::env::var_os("DVLAB_LODESTAR_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // $LODESTAR_BIN is DIR/bin/lodestar.
            std::env::var_os("LODESTAR_BIN")
                .map(PathBuf::from)
                .and_then(|b| b.parent()?.parent().map(Path::to_path_buf))
        })
        .expect(
            "DVLAB_E2E=1 needs the Lodestar install: set DVLAB_LODESTAR_DIR (or LODESTAR_BIN), \
             or run `make e2e-docker`",
        );
    // `make e2e-docker` points DVLAB_DVNODE_BINARY at the unit stage's target/debug/dvnode
    // (dvlab-netem beside it); without it the release build goes into the images.
    let dvnode_binary = std::env::var_os("DVLAB_DVNODE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/dvnode"));
    assert!(
        dvnode_binary.exists(),
        "DVLAB_E2E=1 needs the dvnode binary at {} (DVLAB_DVNODE_BINARY, default the release \
         build: `cargo build --release -p dvnode -p dvlab-netem`, or run `make e2e-docker`)",
        dvnode_binary.display()
    );
    ImageInputs {
        mirror: "http://deb.debian.org/debian".into(),
        shared_dir: std::env::var_os("SHARED_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../shared")),
        lodestar_dir,
        dvnode_binary,
        cache_dir: std::env::var_os("DVLAB_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/dvlab")),
    }
}

/// The devnet: healthy, with `faults` (YAML list) on top.
fn spec(name: &str, epochs: u64, faults: &str, assertions: &str) -> DevnetSpec {
    let yaml = format!(
        "name: {name}
network: {{preset: minimal, seconds_per_slot: 4, altair_fork_epoch: 0, genesis_delay: 25}}
beacon_nodes: [{{name: bn0, client: lodestar}}]
keepers: {{count: 48, beacon_node: bn0}}
baseline: {{count: 8, client: lodestar, beacon_node: bn0}}
clusters:
  - {{name: dv0, nodes: 4, threshold: 3, validators: 8, vc: lodestar,
     beacon_nodes: [bn0, bn0, bn0, bn0]}}
duration: {{epochs: {epochs}}}
faults: {faults}
assertions: {assertions}
seed: 7
"
    );
    DevnetSpec::parse(&yaml, "docker_devnet.rs").expect("the test devnet is valid")
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

/// The first `cluster-lock.json` under `dir`.
fn find_lock(dir: &Path) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "cluster-lock.json") {
            return Some(p);
        }
        if p.is_dir() {
            if let Some(l) = find_lock(&p) {
                return Some(l);
            }
        }
    }
    None
}

/// `dvlab analyze` against the kept devnet of the run in `out` (key material in `state`): the
/// DV cluster named by its cluster-lock.json (public keys resolved through the beacon node)
/// against the baseline's index range, over the run's analysed epochs; returns its
/// report.json. Also checks that bad input is refused with the cause: an unknown public key,
/// epochs beyond the head, an unreachable beacon node.
async fn analyze_kept(out: &Path, state: &Path) -> Result<Value, String> {
    use dvlab::pipeline::{analyze, AnalyzeRequest};
    use dvlab::spec::analyze::{EpochRange, ValidatorSpec};
    let meta: Value = serde_json::from_slice(
        &std::fs::read(out.join("meta.json")).map_err(|e| format!("meta.json: {e}"))?,
    )
    .map_err(|e| e.to_string())?;
    let bn = meta["beacon_nodes"][0]["api_url"]
        .as_str()
        .ok_or("no beacon node in meta.json")?
        .to_string();
    let spe = num(&meta["slots_per_epoch"]) as u64;
    let epochs = EpochRange {
        first: num(&meta["first_slot"]) as u64 / spe,
        end: (num(&meta["last_slot"]) as u64 + 1) / spe,
    };
    let baseline = meta["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "baseline"))
        .ok_or("no baseline group")?;
    let first = num(&baseline["first"]) as u64;
    let base_range = format!("{first}..{}", first + num(&baseline["count"]) as u64);
    let lock = find_lock(state)
        .ok_or_else(|| format!("no cluster-lock.json under {}", state.display()))?;
    let spec = |s: &str| ValidatorSpec::parse(s).map_err(|e| format!("{e:#}"));
    let req = AnalyzeRequest {
        beacon_node: bn.clone(),
        validators: spec(lock.to_str().ok_or("lock path")?)?,
        compare: Some(spec(&base_range)?),
        epochs: Some(epochs),
        follow: false,
        assertions: Default::default(),
        duty_log: None,
    };
    let dir = out.join("analyze");
    match analyze(&req, &dir).await.map_err(|e| format!("{e:#}"))? {
        Outcome::Done(r) => assert!(r.passed(), "{:?}", r.assertions),
        Outcome::Interrupted => return Err("interrupted".into()),
    }
    // --follow over the same (past) epochs renders once and ends by itself with the same
    // figures (a live --follow over several epochs is recorded in orchestrator/README.md).
    let mut follow = req.clone();
    follow.follow = true;
    let follow_dir = dir.join("follow");
    match analyze(&follow, &follow_dir)
        .await
        .map_err(|e| format!("--follow: {e:#}"))?
    {
        Outcome::Done(r) => assert!(r.passed(), "{:?}", r.assertions),
        Outcome::Interrupted => return Err("--follow: interrupted".into()),
    }
    let groups = |d: &Path| -> Result<Value, String> {
        let v: Value = serde_json::from_slice(
            &std::fs::read(d.join("report.json")).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        Ok(v["groups"].clone())
    };
    assert_eq!(
        groups(&follow_dir)?,
        groups(&dir)?,
        "dvlab analyze --follow vs without"
    );
    let bad_dir = dir.join("bad");
    let fails = |r: AnalyzeRequest, what: &'static str| {
        let bad_dir = bad_dir.clone();
        async move {
            let e = match analyze(&r, &bad_dir).await {
                Ok(_) => panic!("dvlab analyze accepted {what}"),
                Err(e) => format!("{e:#}"),
            };
            println!("docker_devnet: dvlab analyze refuses {what}: {e}");
            e
        }
    };
    let mut unknown = req.clone();
    unknown.validators.pubkeys = vec![(format!("0x{}", "a1".repeat(48)), "test:1".into())];
    assert!(fails(unknown, "an unknown public key")
        .await
        .contains("test:1"));
    let mut beyond = req.clone();
    beyond.epochs = Some(EpochRange {
        first: 1,
        end: 1000,
    });
    assert!(fails(beyond, "epochs beyond the head")
        .await
        .contains("beyond the head"));
    let mut gone = req.clone();
    gone.beacon_node = "http://127.0.0.1:9".into();
    assert!(fails(gone, "an unreachable beacon node")
        .await
        .contains("unreachable"));
    serde_json::from_slice(
        &std::fs::read(out.join("analyze/report.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())
}

/// Partition: epochs 2 and 3 (slots 16–31).
const PARTITION: &str =
    "[{at: epoch 2, kind: partition, groups: [[dv0-0, dv0-1], [dv0-2, dv0-3]], \
                         for: 2 epochs}]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dv_cluster_partition_2_2_in_docker() {
    if std::env::var("DVLAB_E2E").as_deref() != Ok("1") {
        eprintln!("docker_devnet: skipped (set DVLAB_E2E=1, or run `make e2e-docker`)");
        return;
    }
    let docker = runtime::connect().await.unwrap_or_else(|e| {
        panic!("DVLAB_E2E=1 but Docker is not usable: {e:#} (run scripts/setup-docker.sh)")
    });
    let _one = ONE_DEVNET.lock().await;
    images::build_all(&docker, &image_inputs())
        .await
        .expect("building the images");

    let name = format!("e2e-docker-{}", std::process::id());
    let spec = spec(
        &name,
        6,
        PARTITION,
        "{dv_inclusion_steady: \">= 0.9\", dv_attestations_during_partition: \"== 0\", \
         max_recovery_slots: \"<= 2\"}",
    );
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&name);
    let _ = std::fs::remove_dir_all(&out);
    println!("docker_devnet: run `{name}`, output in {}", out.display());
    // As `dvlab run --keep`: the devnet and its key material stay until `dvlab down`.
    let outcome = dvlab::pipeline::run(&docker, &spec, &out, true).await;
    let state = runtime::state::state_dir(&name);
    // `dvlab analyze` on the kept devnet's beacon node, before `dvlab down`.
    let analyze_started = std::time::Instant::now();
    let analyzed = analyze_kept(&out, &state).await;
    let analyze_seconds = analyze_started.elapsed().as_secs_f64();
    let state_mode = std::fs::metadata(&state).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    let secrets = runtime::state::secrets(&state);
    let leaks = runtime::state::leaks(&out, &secrets);
    // The kept devnet's Prometheus, before teardown (asserted after it).
    let prometheus = check_prometheus(&docker, &spec).await;
    let removed = runtime::down(&docker, Some(&name)).await;

    // Nothing labelled with the run remains, whatever the outcome.
    let left = runtime::list(&docker, Some(&name))
        .await
        .expect("listing containers");
    let nets = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&HashMap::from([(
                    "label".to_string(),
                    vec![format!("{RUN_LABEL}={name}")],
                )]))
                .build(),
        ))
        .await
        .expect("listing networks");
    assert!(
        left.is_empty(),
        "containers left: {:?}",
        left.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    assert!(nets.is_empty(), "networks left: {nets:?}");
    assert!(!state.exists(), "key material left in {}", state.display());

    let report = match outcome.expect("the run itself succeeds") {
        Outcome::Done(r) => r,
        Outcome::Interrupted => panic!("interrupted"),
    };
    let json: Value = serde_json::from_slice(
        &std::fs::read(out.join("report.json")).expect("report.json is written"),
    )
    .expect("report.json parses");
    println!(
        "docker_devnet: groups {}",
        serde_json::to_string_pretty(&json["groups"]).unwrap_or_default()
    );
    println!(
        "docker_devnet: missed DV duties {}; dvnodes {}",
        json["missed_duties"],
        serde_json::to_string_pretty(&json["dvnodes"]).unwrap_or_default()
    );

    println!(
        "docker_devnet: faults {}; outside faults {}",
        serde_json::to_string_pretty(&json["faults"]).unwrap_or_default(),
        json["outside_faults"]
    );
    let dv = &json["groups"]["dv0"];
    let base = &json["groups"]["baseline"];
    assert!(num(&dv["attestation_duties"]) >= 8.0 * 4.0, "dv0: {dv}");
    assert!(num(&base["attestation_duties"]) > 0.0, "baseline: {base}");
    assert_eq!(
        json["slashing_audit"]["violations"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "slashing audit: {}",
        json["slashing_audit"]
    );
    assert!(num(&json["slashing_audit"]["messages_checked"]) > 0.0);

    // The partition really ran (executor log → faults frame → report), without errors.
    let log = std::fs::read_to_string(out.join("faults.jsonl")).expect("faults.jsonl");
    assert!(log.contains("\"phase\":\"start\"") && log.contains("\"phase\":\"stop\""));
    let faults = json["faults"].as_array().expect("faults in report.json");
    assert_eq!(faults.len(), 1, "{faults:?}");
    let p = &faults[0];
    assert_eq!(p["kind"], "partition");
    assert!(p["error"].is_null(), "executor error: {}", p["error"]);
    assert_eq!(num(&p["start_slot"]), 16.0, "{p}");
    assert!((32.0..=33.0).contains(&num(&p["end_slot"])), "{p}");

    // Outside the partition and its recovery the DV attests; during it, with no quorum on
    // either side, it signs nothing that lands on chain; every miss has a tracker reason.
    let steady = &json["steady"]["dv0"];
    assert!(num(&steady["duties"]) >= 8.0, "{steady}");
    assert!(
        num(&steady["inclusion_rate"]) >= 0.9,
        "DV steady state: {steady}"
    );
    let outside = &json["outside_faults"]["dv0"];
    assert!(
        num(&outside["duties"]) >= num(&steady["duties"]),
        "{outside}"
    );
    let during = &p["groups"]["dv0"];
    // The window is slots first_duty_slot..32: 17..32 when the partition took effect after
    // slot 16 began (slot 16 is then a transition slot, in neither count), else 16..32. Either
    // way epoch 3 (slots 24..32) lies inside, so each of the 8 DV validators has a duty in it.
    assert!((16.0..=17.0).contains(&num(&p["first_duty_slot"])), "{p}");
    assert!(num(&during["duties"]) >= 8.0, "{during}");
    assert_eq!(
        num(&during["included_during"]),
        0.0,
        "DV attested during the partition: {during}"
    );
    let missed = num(&during["duties"]) - num(&during["included"]);
    let by_reason = during["missed_by_reason"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(by_reason.values().map(num).sum::<f64>(), missed, "{during}");
    for reason in by_reason.keys() {
        assert!(
            TRACKER_REASONS.contains(&reason.as_str()),
            "reason {reason}"
        );
    }
    // Full recovery within 2 slots of the heal (measured: the heal slot itself).
    let heal = num(&p["heal_slot"]);
    let recovered = num(&p["recovery_slot"]);
    assert!(
        recovered >= heal && recovered - heal <= 2.0,
        "recovery at slot {recovered}, heal at {heal}"
    );
    // The baseline (not partitioned) is unaffected.
    for w in [
        &json["outside_faults"]["baseline"],
        &p["groups"]["baseline"],
    ] {
        assert!(num(&w["inclusion_rate"]) >= 0.9, "baseline: {w}");
    }
    middleware_duties_outside(&out, &json, p);
    // `dvlab analyze` of the DV group and the baseline gives the run's inclusion figures.
    let analyzed = analyzed.expect("dvlab analyze on the kept devnet");
    println!(
        "docker_devnet: dvlab analyze took {analyze_seconds:.1} s; groups {}",
        serde_json::to_string_pretty(&analyzed["groups"]).unwrap_or_default()
    );
    for g in ["dv0", "baseline"] {
        for k in [
            "attestation_duties",
            "attestations_included",
            "inclusion_rate",
            "inclusion_distance",
            // Past proposers are computed from the head state (Lodestar serves proposer
            // duties for the current and next epoch only), checked against the blocks.
            "proposals_expected",
            "proposals_included",
        ] {
            assert_eq!(
                analyzed["groups"][g][k], json["groups"][g][k],
                "{g}.{k}: dvlab analyze vs the run's report.json"
            );
        }
    }
    // The slashing-freedom verdict is enforced although the spec did not assert it.
    assert!(report
        .assertions
        .iter()
        .any(|a| a.name == "slashable_messages" && a.passed));

    // Each dvnode logged its duties and decided by consensus.
    let nodes = json["dvnodes"].as_object().expect("dvnodes in report.json");
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    for (node, s) in nodes {
        assert!(num(&s["duties_logged"]) > 0.0, "{node}: {s}");
        assert!(num(&s["outcomes"]["success"]) > 0.0, "{node}: {s}");
        assert!(num(&s["consensus_decided"]) > 0.0, "{node}: {s}");
    }
    // The run directory is safe to publish: the key material (4 nodes × 8 share keystores
    // and their passwords, 4 × the VC's keystores and password, 4 libp2p keys) was in a
    // private directory outside it, and none of it, nor any keystore, is under it.
    removed.expect("dvlab down");
    assert_eq!(state_mode.ok(), Some(0o700), "{}", state.display());
    let kinds = |k: &str| secrets.iter().filter(|s| s.kind == k).count();
    assert_eq!(kinds("p2p key"), 4, "{secrets:?}");
    assert!(kinds("keystore ciphertext") >= 4 * 8 * 2, "{secrets:?}");
    assert!(kinds("password") >= 4 * 8 + 4, "{secrets:?}");
    assert!(
        leaks.is_empty(),
        "secrets under {}: {leaks:#?}",
        out.display()
    );
    assert!(!out.join("keys").exists());

    // Chain health (issue 17's names).
    println!(
        "docker_devnet: head_agreement {}, reorgs {}, finality {}, dv0 effectiveness {}, \
         participation {}",
        json["head_agreement"],
        json["reorgs"],
        json["finality"],
        dv["effectiveness"],
        dv["participation"]
    );
    let share = |v: &Value| (0.0..=1.0).contains(&num(v));
    assert!(share(&json["head_agreement"]), "{}", json["head_agreement"]);
    assert!(num(&json["reorgs"]["count"]) >= 0.0 && num(&json["reorgs"]["max_depth"]) >= 0.0);
    let fin = &json["finality"];
    assert!(num(&fin["first_finalized_seconds"]) > 0.0, "{fin}");
    assert!(
        num(&fin["max_delay_epochs"]) >= num(&fin["end_delay_epochs"]),
        "{fin}"
    );
    for g in [dv, base] {
        assert!(share(&g["effectiveness"]), "{g}");
    }
    assert!(num(&base["participation"]["target"]) >= 0.9, "{base}");
    let epochs = json["epochs"].as_array().expect("epochs");
    assert!(!epochs.is_empty());
    for e in epochs {
        for flag in ["source", "target", "head"] {
            assert!(share(&e["participation"][flag]), "{e}");
        }
    }
    // After the heal, the cluster uses the partials of at least a threshold of its nodes.
    let back = p["nodes"]
        .as_object()
        .expect("nodes of the fault")
        .values()
        .filter(|n| n["recovery_slot"].is_number())
        .count();
    assert!(back >= 3, "per-node recovery: {}", p["nodes"]);

    // Prometheus of the kept devnet: every target up, every dashboard query answered, the
    // partition as a fault annotation; its data directory is in the run output.
    let prom = prometheus.unwrap_or_else(|e| panic!("Prometheus of the kept devnet: {e}"));
    println!(
        "docker_devnet: prometheus {} — {} targets up, {} dashboard queries and {} variables \
         answered, fault annotations {:?}, checked in {:.2} s",
        prom.url,
        prom.up.len(),
        prom.queries,
        prom.variables,
        prom.fault_annotations,
        prom.took.as_secs_f64()
    );
    assert!(prom.down.is_empty(), "targets not up: {:?}", prom.down);
    assert!(
        prom.empty.is_empty(),
        "dashboard queries without series: {:#?}",
        prom.empty
    );
    assert_eq!(
        prom.fault_annotations,
        [format!("partition #{}", p["fault"])],
        "fault annotations (up{{job=\"dvlab_faults\"}})"
    );
    assert!(
        out.join("prometheus/data/wal").is_dir(),
        "Prometheus data directory in the run output"
    );

    // The HTML report in headless Chromium: no console error, every plot visible.
    let t0 = std::time::Instant::now();
    let page = report_in_chromium(&out.join("report.html"));
    let plots = std::fs::read_dir(&out)
        .expect("run dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "svg"))
        })
        .count();
    println!(
        "docker_devnet: report.html in chromium ({:.1} s): {} console error(s), plots {:?}",
        t0.elapsed().as_secs_f64(),
        page.errors.len(),
        page.plots
    );
    assert!(page.errors.is_empty(), "console errors: {:#?}", page.errors);
    assert!(plots >= 4, "{plots} plot files");
    assert_eq!(page.plots.len(), plots, "plots on the page vs plot files");
    for (i, p) in page.plots.iter().enumerate() {
        assert!(
            p.visible && p.width > 100.0 && p.height > 100.0 && p.marks > 10,
            "plot {i} not visible: {p:?}"
        );
    }
    assert!(report.passed(), "assertions: {:?}", report.assertions);
}

/// One inline SVG plot of the report as Chromium laid it out.
#[derive(Debug, serde::Deserialize)]
struct PlotOnPage {
    width: f64,
    height: f64,
    /// `Element.checkVisibility` (display, visibility, opacity) and inside the page.
    visible: bool,
    /// Drawn elements (paths, lines, circles, rects, texts).
    marks: usize,
}

/// What Chromium saw of the report.
#[derive(Debug, serde::Deserialize)]
struct ReportPage {
    /// Console messages and page/resource errors.
    errors: Vec<String>,
    plots: Vec<PlotOnPage>,
}

/// Opens `report` in headless Chromium (Debian's `chromium`; `make e2e-docker` installs it)
/// and reads back, from the DOM it dumps after the load event, the errors a probe script
/// caught (page errors, failed resources, `console.error`) and the layout of every plot;
/// console messages Chromium logs count as errors too. The probe goes into a copy of the
/// report, beside it, so that relative links resolve as in the original.
fn report_in_chromium(report: &Path) -> ReportPage {
    const PROBE: &str = "<script>\
window.__dvlab = [];\
addEventListener('error', e => __dvlab.push(String(e.message || (e.target && e.target.outerHTML || '').slice(0, 200))), true);\
addEventListener('unhandledrejection', e => __dvlab.push(String(e.reason)));\
for (const k of ['error', 'warn']) { const f = console[k]; console[k] = (...a) => { __dvlab.push(a.join(' ')); f(...a); }; }\
addEventListener('load', () => {\
  const plots = [...document.querySelectorAll('svg')].map(s => { const r = s.getBoundingClientRect();\
    return { width: r.width, height: r.height, marks: s.querySelectorAll('path,polyline,polygon,line,circle,rect,text').length,\
      visible: s.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true }) && r.bottom > 0 && r.right > 0 }; });\
  const pre = document.createElement('pre'); pre.id = 'dvlab-probe';\
  pre.textContent = JSON.stringify({ errors: __dvlab, plots }); document.body.appendChild(pre);\
});\
</script>";
    let html = std::fs::read_to_string(report).expect("report.html");
    let at = html.find("<head>").map_or(0, |i| i + "<head>".len());
    let probed = report.with_file_name("report-probe.html");
    std::fs::write(&probed, format!("{}{PROBE}{}", &html[..at], &html[at..])).expect("probe copy");
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", std::path::absolute(&probed).unwrap().display()))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}): `make e2e-docker` installs it (apt-get install chromium)")
        });
    let _ = std::fs::remove_file(&probed);
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let json = dom
        .split_once("<pre id=\"dvlab-probe\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(j, _)| {
            j.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
        .unwrap_or_else(|| panic!("the probe did not run; DOM: {}", &dom[..dom.len().min(500)]));
    let mut page: ReportPage = serde_json::from_str(&json).expect("probe JSON");
    // Console messages Chromium logged ("INFO:CONSOLE…] \"msg\", source: …").
    page.errors.extend(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_string),
    );
    page
}

/// What [`check_prometheus`] found.
struct PrometheusCheck {
    url: String,
    /// `job/node` of every target answering `up == 1`.
    up: Vec<String>,
    /// Planned targets missing from `up` or not 1.
    down: Vec<String>,
    /// Dashboard queries (panel title: PromQL) that returned no series.
    empty: Vec<String>,
    queries: usize,
    variables: usize,
    /// `kind #fault` of each series of the dashboard's fault annotation over the run.
    fault_annotations: Vec<String>,
    took: std::time::Duration,
}

/// One call of the Prometheus HTTP API (`/api/v1/PATH?PARAMS`); its `data`.
async fn prom_api(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    params: &[(&str, &str)],
) -> Result<Value, String> {
    let qs = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let body: Value = client
        .get(format!("{url}/api/v1/{path}?{qs}"))
        .send()
        .await
        .map_err(|e| format!("{path} {params:?}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{path} {params:?}: {e}"))?;
    if body["status"] != "success" {
        return Err(format!("{path} {params:?}: {body}"));
    }
    Ok(body["data"].clone())
}

/// Queries the Prometheus of the kept devnet `spec`: `up` of every target the plan scrapes
/// (every dvnode, beacon node and validator client, and Prometheus itself), every query and
/// template variable of `dashboards/dvnode.json` (variables as "All", `$__rate_interval` as
/// 1m), and the dashboard's fault annotation over the last hour.
async fn check_prometheus(
    docker: &bollard::Docker,
    spec: &DevnetSpec,
) -> Result<PrometheusCheck, String> {
    let url = runtime::prometheus_url(docker, &spec.name)
        .await
        .map_err(|e| format!("{e:#}"))?
        .ok_or("no running Prometheus container")?;
    let t0 = std::time::Instant::now();
    let client = reqwest::Client::new();
    let q = |expr: String| {
        let (client, url) = (&client, &url);
        async move { prom_api(client, url, "query", &[("query", &expr)]).await }
    };
    let up = q("up".into()).await?;
    let up: HashMap<(String, String), String> = up["result"]
        .as_array()
        .ok_or("up: no result")?
        .iter()
        .map(|r| {
            let l = |k: &str| r["metric"][k].as_str().unwrap_or_default().to_string();
            (
                (l("job"), l("node")),
                r["value"][1].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let mut check = PrometheusCheck {
        url: url.clone(),
        up: Vec::new(),
        down: Vec::new(),
        empty: Vec::new(),
        queries: 0,
        variables: 0,
        fault_annotations: Vec::new(),
        took: Default::default(),
    };
    let planned = dvlab::plan::Plan::new(spec, 0).scrape_targets();
    for jobs in ["dvnode", "beacon_node", "validator_client", "prometheus"] {
        assert!(
            planned.iter().any(|t| t.job == jobs),
            "no {jobs} target planned"
        );
    }
    for t in planned {
        let id = format!("{}/{}", t.job, t.labels["node"]);
        match up.get(&(t.job.clone(), t.labels["node"].clone())) {
            Some(v) if v == "1" => check.up.push(id),
            other => check.down.push(format!("{id}: {other:?}")),
        }
    }
    let dash: Value = serde_json::from_str(include_str!("../../dashboards/dvnode.json"))
        .map_err(|e| format!("dashboards/dvnode.json: {e}"))?;
    let fill = |e: &str| {
        e.replace("$__rate_interval", "1m")
            .replace("$cluster", ".*")
            .replace("$node", ".*")
    };
    for panel in dash["panels"]
        .as_array()
        .ok_or("dashboard without panels")?
    {
        for target in panel["targets"].as_array().ok_or("panel without targets")? {
            let expr = target["expr"].as_str().ok_or("target without expr")?;
            check.queries += 1;
            let data = q(fill(expr)).await?;
            if data["result"].as_array().is_none_or(Vec::is_empty) {
                check.empty.push(format!("{}: {expr}", panel["title"]));
            }
        }
    }
    for var in dash["templating"]["list"]
        .as_array()
        .ok_or("no templating")?
    {
        let Some(def) = var["definition"].as_str() else {
            continue;
        };
        // label_values(SELECTOR, LABEL)
        let (sel, label) = def
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .and_then(|d| d.rsplit_once(", "))
            .ok_or_else(|| format!("variable {}: {def}", var["name"]))?;
        check.variables += 1;
        let data = prom_api(
            &client,
            &url,
            &format!("label/{label}/values"),
            &[("match[]", &fill(sel))],
        )
        .await?;
        if data.as_array().is_none_or(Vec::is_empty) {
            check.empty.push(format!("variable {}: {def}", var["name"]));
        }
    }
    let now = dvnode::clock::unix_now().as_secs();
    let (start, end) = ((now - 3600).to_string(), now.to_string());
    for a in dash["annotations"]["list"]
        .as_array()
        .ok_or("no annotations")?
    {
        let Some(expr) = a["expr"].as_str() else {
            continue;
        };
        let data = prom_api(
            &client,
            &url,
            "query_range",
            &[
                ("query", expr),
                ("start", &start),
                ("end", &end),
                ("step", "4"),
            ],
        )
        .await?;
        for s in data["result"].as_array().ok_or("annotation: no result")? {
            let m = &s["metric"];
            check.fault_annotations.push(format!(
                "{} #{}",
                m["kind"].as_str().unwrap_or("?"),
                m["fault"].as_str().unwrap_or("?")
            ));
        }
    }
    check.took = t0.elapsed();
    Ok(check)
}

/// Rows of the run's `raw/NAME.csv` (plain values, no quoting) by header name.
fn raw_csv(out: &Path, name: &str) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(out.join("raw").join(format!("{name}.csv")))
        .unwrap_or_else(|e| panic!("raw/{name}.csv: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The cluster of this devnet runs in middleware mode (each Lodestar VC holds its node's key
/// shares); `make test` runs the real-Lodestar e2e-local in remote-signer mode, so this is where
/// middleware proposals and sync messages are checked end to end: outside the partition and
/// its recovery, every proposer duty of the DVs has its block on chain, and the DVs' sync
/// committee participation is at least 90 % of the baseline's over the same slots.
fn middleware_duties_outside(out: &Path, json: &Value, partition: &Value) {
    let meta: Value = serde_json::from_slice(&std::fs::read(out.join("meta.json")).unwrap())
        .expect("meta.json parses");
    let group = |name: &str| {
        let g = meta["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["name"] == name))
            .unwrap_or_else(|| panic!("group {name} in meta.json"));
        let first = num(&g["first"]) as u64;
        first..first + num(&g["count"]) as u64
    };
    let (dv, baseline) = (group("dv0"), group("baseline"));
    let window =
        num(&json["window"]["first_slot"]) as u64..=num(&json["window"]["last_slot"]) as u64;
    // A sync aggregate in block s + 1 carries the messages of slot s: one more slot excluded.
    let fault = num(&partition["start_slot"]) as u64..=num(&partition["recovery_slot"]) as u64 + 1;
    let field = |r: &HashMap<String, String>, k: &str| -> u64 {
        r[k].parse()
            .unwrap_or_else(|e| panic!("{k} = {}: {e}", r[k]))
    };
    let outside = |slot: u64| window.contains(&slot) && !fault.contains(&slot);

    let blocks: std::collections::HashSet<(u64, u64)> = raw_csv(out, "blocks")
        .iter()
        .map(|r| (field(r, "slot"), field(r, "proposer")))
        .collect();
    let duties: Vec<(u64, u64)> = raw_csv(out, "proposer_duties")
        .iter()
        .map(|r| (field(r, "slot"), field(r, "validator")))
        .filter(|&(slot, v)| dv.contains(&v) && outside(slot))
        .collect();
    let missed: Vec<_> = duties.iter().filter(|d| !blocks.contains(*d)).collect();
    println!(
        "docker_devnet: middleware DV proposals outside the partition: {}/{} (missed {missed:?})",
        duties.len() - missed.len(),
        duties.len()
    );
    assert!(
        !duties.is_empty(),
        "no DV proposer duty outside the partition"
    );
    assert!(
        missed.is_empty(),
        "DV proposals missed outside the partition: {missed:?}"
    );

    let sync = raw_csv(out, "sync");
    let rate = |range: &std::ops::Range<u64>| {
        let rows: Vec<_> = sync
            .iter()
            .filter(|r| range.contains(&field(r, "validator")) && outside(field(r, "slot")))
            .collect();
        let signed = rows.iter().filter(|r| r["participated"] == "true").count();
        (signed, rows.len())
    };
    let ((dv_signed, dv_duties), (b_signed, b_duties)) = (rate(&dv), rate(&baseline));
    println!(
        "docker_devnet: middleware DV sync messages outside the partition: {dv_signed}/{dv_duties} \
         (baseline {b_signed}/{b_duties})"
    );
    if dv_duties > 0 {
        let reference = if b_duties > 0 {
            b_signed as f64 / b_duties as f64
        } else {
            1.0
        };
        assert!(
            dv_signed as f64 >= 0.9 * reference * dv_duties as f64,
            "DV sync participation {dv_signed}/{dv_duties} < 90 % of baseline {b_signed}/{b_duties}"
        );
    }
}

/// A dvnode that exits mid-run fails the run (naming the container and its last log lines)
/// and the devnet is torn down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dvnode_exit_fails_the_run_and_tears_down() {
    if std::env::var("DVLAB_E2E").as_deref() != Ok("1") {
        eprintln!("docker_devnet: skipped (set DVLAB_E2E=1, or run `make e2e-docker`)");
        return;
    }
    let docker = runtime::connect().await.unwrap_or_else(|e| {
        panic!("DVLAB_E2E=1 but Docker is not usable: {e:#} (run scripts/setup-docker.sh)")
    });
    let _one = ONE_DEVNET.lock().await;
    images::build_all(&docker, &image_inputs())
        .await
        .expect("building the images");
    let name = format!("e2e-docker-exit-{}", std::process::id());
    let spec = spec(&name, 5, "[]", "{dv_inclusion_rate: \">= 0.9\"}");
    let victim = format!("dvlab-{name}-dv0-2");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&name);
    let _ = std::fs::remove_dir_all(&out);
    let killer = {
        let docker = docker.clone();
        let victim = victim.clone();
        async move {
            // Once the dvnode's validator client runs, the devnet is up: kill the dvnode.
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let running = runtime::list(&docker, None)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .any(|c| c.name == format!("{victim}-vc") && c.state == "running");
                if running {
                    break;
                }
            }
            docker
                .kill_container(&victim, None)
                .await
                .expect("killing the dvnode");
            std::future::pending::<()>().await
        }
    };
    let result = tokio::select! {
        r = dvlab::pipeline::run(&docker, &spec, &out, false) => r,
        _ = killer => unreachable!("the killer never finishes"),
    };
    let err = match result {
        Ok(_) => panic!("the run succeeded although {victim} was killed"),
        Err(e) => format!("{e:#}"),
    };
    println!("docker_devnet: run failed as expected: {err}");
    assert!(err.contains(&victim), "error does not name {victim}: {err}");
    assert!(
        err.contains("exit code 137"),
        "error lacks the exit code: {err}"
    );
    assert!(
        err.contains("last log lines"),
        "error lacks the log tail: {err}"
    );
    let left = runtime::list(&docker, Some(&name))
        .await
        .expect("listing containers");
    assert!(
        left.is_empty(),
        "containers left: {:?}",
        left.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
}
