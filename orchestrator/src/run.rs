//! `dvlab up` and `dvlab run`: plan → containers → timeline with collection → analysis →
//! report → teardown, with teardown on failure and on Ctrl-C.

use crate::analyse;
use crate::collect::Collector;
use crate::data::{BeaconNodeMeta, GroupMeta, RawData, RunMeta};
use crate::plan::Plan;
use crate::report::{self, Report};
use crate::runtime;
use crate::spec::DevnetSpec;
use anyhow::{anyhow, Result};
use bollard::Docker;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Current UNIX time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Metadata of a planned run, for analysis.
pub fn run_meta(plan: &Plan, bns: Vec<BeaconNodeMeta>) -> RunMeta {
    let spe = plan.slots_per_epoch;
    RunMeta {
        run: plan.run.clone(),
        genesis_time: plan.genesis_time,
        seconds_per_slot: plan.seconds_per_slot,
        slots_per_epoch: spe,
        // Epoch 0 is warm-up (validator clients connect) unless it is all there is.
        first_slot: if plan.epochs > 1 { spe } else { 1 },
        last_slot: plan.last_slot(),
        groups: plan
            .groups
            .iter()
            .map(|g| GroupMeta {
                name: g.name.clone(),
                first: g.indices.start,
                count: g.indices.end - g.indices.start,
                distributed: g.distributed,
            })
            .collect(),
        beacon_nodes: bns,
        assertions: plan.assertions.clone(),
    }
}

/// Starts the devnet of `spec` and returns its plan and beacon nodes.
pub async fn up(
    docker: &Docker,
    spec: &DevnetSpec,
    run_dir: &Path,
) -> Result<(Plan, Vec<BeaconNodeMeta>)> {
    let plan = Plan::new(spec, unix_now());
    let started = runtime::up(docker, &plan, run_dir).await?;
    let bns = started
        .into_iter()
        .filter_map(|s| {
            Some(BeaconNodeMeta {
                name: s.beacon_node?,
                api_url: s.api_url?,
            })
        })
        .collect();
    Ok((plan, bns))
}

async fn sleep_until(t: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    if (t as f64) > now {
        tokio::time::sleep(Duration::from_secs_f64(t as f64 - now)).await;
    }
}

/// Runs the timeline: duties each epoch, heads, a live line, container health.
async fn timeline(docker: &Docker, plan: &Plan, meta: &RunMeta, out: &Path) -> Result<RawData> {
    let mut c = Collector::new(meta.beacon_nodes.clone(), plan.slots_per_epoch)?;
    c.wait_ready(Duration::from_secs(
        plan.genesis_time.saturating_sub(unix_now()) + 60,
    ))
    .await
    .map_err(|e| anyhow!("{e} (check `dvlab logs bn0`)"))?;
    c.start_events();
    c.record_duties(0).await?;
    let spe = plan.slots_per_epoch;
    // One extra epoch after the window so late attestations are included.
    let end_slot = plan.last_slot() + spe + 1;
    let pb = ProgressBar::new(end_slot);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] slot {pos}/{len} {wide_bar} {msg}",
        )
        .expect("valid template"),
    );
    let first_block_wait = unix_now();
    let mut time_to_first_block: Option<u64> = None;
    for slot in 0..=end_slot {
        sleep_until(plan.slot_time(slot) + plan.seconds_per_slot / 2).await;
        pb.set_position(slot);
        let samples = c.sample_heads(unix_now()).await;
        if time_to_first_block.is_none() && samples.iter().any(|s| s.head_slot > 0) {
            time_to_first_block = Some(unix_now().saturating_sub(first_block_wait));
        }
        if slot % spe == 1 {
            let epoch = slot / spe;
            c.record_duties(epoch).await?;
            runtime::check_alive(docker, &plan.run).await?;
            if epoch >= 1 {
                let chain = c.sync_chain().await?;
                let mut parts = Vec::new();
                for g in &meta.groups {
                    let (inc, duties) = c.live_inclusion(
                        &chain,
                        g.first..g.first + g.count,
                        meta.first_slot.min((epoch - 1) * spe),
                        epoch * spe - 1,
                    );
                    parts.push(format!("{} {inc}/{duties}", g.name));
                }
                let heads: Vec<String> = samples
                    .iter()
                    .map(|s| {
                        format!(
                            "{} head {} fin {} peers {}",
                            s.bn, s.head_slot, s.finalized_epoch, s.peers
                        )
                    })
                    .collect();
                let line = format!(
                    "epoch {epoch:>3} | {} | included so far: {}",
                    heads.join(" | "),
                    parts.join(", ")
                );
                if pb.is_hidden() {
                    println!("{line}");
                } else {
                    pb.println(line);
                }
            }
        }
    }
    pb.finish_and_clear();
    let raw = c.finish().await?;
    let stats = serde_json::json!({
        "time_to_first_block_s": time_to_first_block,
        "genesis_time": plan.genesis_time,
    });
    std::fs::write(out.join("timing.json"), serde_json::to_vec_pretty(&stats)?)?;
    Ok(raw)
}

/// Outcome of `dvlab run`.
pub enum Outcome {
    /// The run completed; the report says whether assertions held.
    Done(Report),
    /// Interrupted by Ctrl-C.
    Interrupted,
}

/// `dvlab run`: the whole pipeline. Tears the devnet down unless `keep`, also on errors and
/// Ctrl-C.
pub async fn run(docker: &Docker, spec: &DevnetSpec, out: &Path, keep: bool) -> Result<Outcome> {
    std::fs::create_dir_all(out)?;
    let body = async {
        let (plan, bns) = up(docker, spec, out).await?;
        for bn in &bns {
            println!("{}: {}", bn.name, bn.api_url);
        }
        std::fs::write(out.join("plan.json"), serde_json::to_vec_pretty(&plan)?)?;
        let meta = run_meta(&plan, bns);
        let mut raw = timeline(docker, &plan, &meta, out).await?;
        raw.save(&meta, out)?;
        let analysis = analyse::analyse(&meta, &raw)?;
        let report = report::write(out, &meta, &raw, &analysis)?;
        Ok::<_, anyhow::Error>(report)
    };
    let result = tokio::select! {
        r = body => r.map(Outcome::Done),
        _ = tokio::signal::ctrl_c() => Ok(Outcome::Interrupted),
    };
    let interrupted = matches!(result, Ok(Outcome::Interrupted));
    if !keep || result.is_err() || interrupted {
        match runtime::down(docker, Some(&spec.name)).await {
            Ok(n) => println!("removed {n} container(s) of run `{}`", spec.name),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    result
}

/// `dvlab report DIR`: re-renders the report from saved raw data.
pub fn rerender(dir: &Path) -> Result<Report> {
    let (meta, raw) = RawData::load(dir)?;
    let analysis = analyse::analyse(&meta, &raw)?;
    report::write(dir, &meta, &raw, &analysis)
}
