//! Report: assertions → verdict, `report.json`, PNG + SVG plots (plotters) and a
//! self-contained `report.html` with the SVG plots inline.

use crate::analyse::{AggregationKind, Aggregations, Analysis, FaultStats, GroupStats};
use crate::data::{BeaconNodeMeta, RawData, RunMeta};
use crate::spec::{CmpOp, Comparison, Metric};
use anyhow::{Context, Result};
use plotters::prelude::*;
use polars::prelude::DataType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

/// Observed window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// First slot.
    pub first_slot: u64,
    /// Last slot (inclusive).
    pub last_slot: u64,
}

/// One evaluated assertion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssertionResult {
    /// Metric name.
    pub name: String,
    /// Expression, e.g. `>= 0.95`.
    pub expr: String,
    /// Measured value (null when there was no data, or the metric was not evaluated).
    pub value: Option<f64>,
    /// Whether it holds (false without data, and when not evaluated).
    pub passed: bool,
    /// Why the metric was not evaluated in this run: it does not apply to it (e.g. no DV
    /// cluster in remote-signer mode). Such an assertion neither holds nor fails the run
    /// ([`Report::passed`]); the report lists it as not evaluated.
    #[serde(default)]
    pub not_evaluated: Option<String>,
    /// Added by dvlab, not written in the devnet file ([`implied_assertions`]).
    #[serde(default)]
    pub implied: bool,
    /// An implied assertion's threshold and where it was taken from, e.g.
    /// `dv_inclusion_outside_faults >= 0.95` (`null` for the others).
    #[serde(default)]
    pub implied_from: Option<String>,
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Run name.
    pub run: String,
    /// Beacon nodes and their REST URLs.
    pub beacon_nodes: Vec<BeaconNodeMeta>,
    /// Analysed window.
    pub window: Window,
    /// Everything the analysis found (flattened: its keys are top-level keys of `report.json`).
    #[serde(flatten)]
    pub analysis: Analysis,
    /// Assertions.
    pub assertions: Vec<AssertionResult>,
    /// One line per fault saying what it cost ([`fault_summary`]).
    #[serde(default)]
    pub fault_lines: Vec<String>,
}

/// The slashing-freedom verdict, enforced in every run whether or not the devnet file
/// asserts it.
pub const MANDATORY_ASSERTIONS: &[(Metric, &str)] = &[(Metric::SlashableMessages, "== 0")];

/// What every run with a DV cluster in remote-signer mode is held to when its devnet file does
/// not name the metric itself: that the aggregations and sync contributions outside the fault
/// windows were done ([`implied_assertions`]).
pub const IMPLIED_FOR_REMOTE_SIGNER: [Metric; 2] = [
    Metric::DvAggregationOutsideFaults,
    Metric::DvSyncContributionOutsideFaults,
];

/// The bar of an implied assertion when the devnet file sets no minimum DV inclusion rate to take
/// it from: the bar the library's remote-signer scenario sets for aggregation itself
/// (`devnets/remote-signer.yaml`: `dv_aggregation_rate >= 0.95`) and its most common
/// attestation bar (`dv_inclusion_rate >= 0.95`, e.g. `devnets/basic.yaml`).
pub const DEFAULT_IMPLIED_BAR: &str = ">= 0.95";

/// An assertion dvlab adds to a run (see [`implied_assertions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implied {
    /// The metric.
    pub metric: Metric,
    /// Its expression, e.g. `>= 0.95`.
    pub expr: String,
    /// Where the threshold comes from, e.g. `dv_inclusion_outside_faults >= 0.95`.
    pub from: String,
}

/// The assertions dvlab adds to a run that has a DV cluster in remote-signer mode
/// ([`remote_clusters`]): each metric of [`IMPLIED_FOR_REMOTE_SIGNER`] the devnet file does not
/// name, with the bar the file sets for the DV attestations outside the faults — its
/// `dv_inclusion_outside_faults` minimum (`>=` or `>`), else its `dv_inclusion_rate` minimum,
/// else [`DEFAULT_IMPLIED_BAR`]. Aggregating is part of the duty a DV cluster in remote-signer
/// mode has, so a scenario's promise about its attestations is held for its aggregations too.
pub fn implied_assertions(meta: &RunMeta, a: &Analysis) -> Vec<Implied> {
    if remote_clusters(meta, a).is_empty() {
        return Vec::new();
    }
    let minimum = [Metric::DvInclusionOutsideFaults, Metric::DvInclusionRate]
        .into_iter()
        .find_map(|m| {
            let expr = meta.assertions.get(m.as_str())?.trim();
            Comparison::parse(expr)
                .is_ok_and(|c| matches!(c.op, CmpOp::Ge | CmpOp::Gt))
                .then(|| (expr.to_string(), format!("{m} {expr}")))
        });
    let (expr, from) = minimum.unwrap_or_else(|| {
        (
            DEFAULT_IMPLIED_BAR.to_string(),
            format!("no DV inclusion minimum in the devnet file: default {DEFAULT_IMPLIED_BAR}"),
        )
    });
    IMPLIED_FOR_REMOTE_SIGNER
        .into_iter()
        .filter(|m| !meta.assertions.contains_key(m.as_str()))
        .map(|metric| Implied {
            metric,
            expr: expr.clone(),
            from: from.clone(),
        })
        .collect()
}

/// The DV clusters in remote-signer mode: those the devnet runs so ([`RunMeta::remote_signer`]),
/// and those whose dvnodes combined selection proofs in the window (figures in the analysis:
/// the only sign of it in a run directory whose `meta.json` predates the field).
pub fn remote_clusters<'m>(meta: &'m RunMeta, a: &Analysis) -> Vec<&'m str> {
    meta.groups
        .iter()
        .filter(|g| g.distributed)
        .map(|g| g.name.as_str())
        .filter(|g| {
            meta.remote_signer.iter().any(|r| r == g)
                || a.groups.get(*g).is_some_and(|s| s.aggregation.is_remote())
        })
        .collect()
}

/// One line per fault: what it cost, e.g. `partition dv0-0,dv0-1 | dv0-2,dv0-3 from slot 24
/// to 40: dv0 inclusion 0% (16 duties, 16 missed: no_consensus 16) → recovered at slot 41`.
pub fn fault_summary(f: &FaultStats, meta: &RunMeta) -> String {
    let what = if f.detail.is_empty() {
        f.targets.join(",")
    } else {
        f.detail.clone()
    };
    let mut line = format!(
        "{} {what} from slot {} to {}:",
        f.kind,
        f.start_slot,
        f.end_slot.map_or("the end".into(), |e| e.to_string())
    );
    for g in meta.groups.iter().filter(|g| g.distributed) {
        let Some(w) = f.groups.get(&g.name) else {
            continue;
        };
        let reasons = counts(&w.missed_by_reason);
        line.push_str(&format!(
            " {} inclusion {} ({} duties, {} missed{})",
            g.name,
            w.tally
                .inclusion_rate
                .map_or("–".into(), |r| format!("{:.0}%", r * 100.0)),
            w.tally.duties,
            w.tally.duties - w.tally.included,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(": {reasons}")
            }
        ));
        if w.aggregation.is_remote() {
            line.push_str(&format!(
                ", aggregations {}, sync contributions {}",
                submitted_of(&w.aggregation, AggregationKind::Aggregation),
                submitted_of(&w.aggregation, AggregationKind::SyncContribution)
            ));
        }
    }
    match (f.heal_slot, f.recovery_slot) {
        (Some(_), Some(r)) => line.push_str(&format!(" → recovered at slot {r}")),
        (Some(_), None) => line.push_str(" → no recovery observed"),
        _ => {}
    }
    line
}

impl Report {
    /// Whether every assertion holds, leaving out those not evaluated (which the report lists
    /// as such: [`Report::not_evaluated`]).
    pub fn passed(&self) -> bool {
        self.assertions
            .iter()
            .all(|a| a.passed || a.not_evaluated.is_some())
    }

    /// The assertions not evaluated in this run.
    pub fn not_evaluated(&self) -> impl Iterator<Item = &AssertionResult> {
        self.assertions.iter().filter(|a| a.not_evaluated.is_some())
    }
}

/// The whole-window `submitted / duties` of `kind` of each remote-signer DV cluster
/// ([`remote_clusters`]); one without figures or without a duty counts as unknown (the
/// assertion then fails: nothing was shown).
fn remote_rates(meta: &RunMeta, a: &Analysis, kind: AggregationKind) -> Vec<Option<f64>> {
    remote_clusters(meta, a)
        .into_iter()
        .map(|g| {
            let (duties, done) = a.groups.get(g)?.aggregation.of(kind)?;
            (duties > 0).then(|| done as f64 / duties as f64)
        })
        .collect()
}

/// `dv_aggregation_outside_faults` / `dv_sync_contribution_outside_faults`: the lowest
/// `submitted / duties` of `kind` outside every fault window over the remote-signer DV
/// clusters that had such a duty there; `Ok(None)` (unknown, fails) when a remote-signer cluster
/// has no figures there; `Err(why)` — not evaluated — without a remote-signer cluster, or when
/// none had such a duty outside the fault windows.
fn outside_faults_rate(
    meta: &RunMeta,
    a: &Analysis,
    kind: AggregationKind,
) -> Result<Option<f64>, String> {
    let remote = remote_clusters(meta, a);
    if remote.is_empty() {
        return Err("no DV cluster in remote-signer mode".into());
    }
    let mut rates = Vec::new();
    for g in &remote {
        match a
            .outside_faults
            .get(*g)
            .and_then(|w| w.aggregation.of(kind))
        {
            Some((0, _)) => {}
            Some((duties, done)) => rates.push(Some(done as f64 / duties as f64)),
            None => rates.push(None),
        }
    }
    if rates.is_empty() {
        return Err(format!(
            "no {} duty outside the fault windows ({}: 0)",
            kind.as_str(),
            remote.join(", ")
        ));
    }
    Ok(rates
        .into_iter()
        .try_fold(f64::INFINITY, |m, v| v.map(|v| m.min(v))))
}

/// Why metric `m` is not evaluated in this run (it does not apply to it); `None` when it is.
pub fn not_evaluated(m: Metric, meta: &RunMeta, a: &Analysis) -> Option<String> {
    match m {
        Metric::DvAggregationOutsideFaults => {
            outside_faults_rate(meta, a, AggregationKind::Aggregation).err()
        }
        Metric::DvSyncContributionOutsideFaults => {
            outside_faults_rate(meta, a, AggregationKind::SyncContribution).err()
        }
        _ => None,
    }
}

/// Value of an assertion metric.
pub fn metric(m: Metric, meta: &RunMeta, a: &Analysis) -> Option<f64> {
    let rate = |g: &str| a.groups.get(g).and_then(|s| s.inclusion_rate);
    let dv: Vec<&str> = meta
        .groups
        .iter()
        .filter(|g| g.distributed)
        .map(|g| g.name.as_str())
        .collect();
    let min = |it: Vec<Option<f64>>| -> Option<f64> {
        if it.is_empty() {
            return None;
        }
        it.into_iter()
            .try_fold(f64::INFINITY, |m, v| v.map(|v| m.min(v)))
    };
    match m {
        Metric::BaselineInclusionRate => rate("baseline"),
        Metric::KeepersInclusionRate => rate("keepers"),
        Metric::DvInclusionRate => min(dv.iter().map(|g| rate(g)).collect()),
        Metric::DvVsBaselineRatio => {
            let b = rate("baseline").filter(|b| *b > 0.0)?;
            min(dv.iter().map(|g| rate(g).map(|r| r / b)).collect())
        }
        Metric::SlashableMessages => Some(a.slashing_audit.violations.len() as f64),
        Metric::FinalizedEpoch => a.finalized_epoch.map(|e| e as f64),
        Metric::BaselineInclusionDistanceP99 => a
            .groups
            .get("baseline")
            .and_then(|s| s.inclusion_distance.p99),
        Metric::DvInclusionOutsideFaults => min(dv
            .iter()
            .map(|g| {
                a.outside_faults
                    .get(*g)
                    .and_then(|w| w.tally.inclusion_rate)
            })
            .collect()),
        Metric::DvInclusionDuringFaults => min(dv
            .iter()
            .map(|g| a.during_faults.get(*g).and_then(|w| w.tally.inclusion_rate))
            .collect()),
        Metric::DvInclusionSteady => min(dv
            .iter()
            .map(|g| a.steady.get(*g).and_then(|w| w.tally.inclusion_rate))
            .collect()),
        Metric::BaselineInclusionOutsideFaults => a
            .outside_faults
            .get("baseline")
            .and_then(|w| w.tally.inclusion_rate),
        Metric::BaselineInclusionDuringFaults => a
            .during_faults
            .get("baseline")
            .and_then(|w| w.tally.inclusion_rate),
        // The slot-matched gap against every plain validator (analyse::FaultControl); the
        // worst cluster's, unknown when one has none.
        Metric::DvBaselineGapDuringFaults => dv
            .iter()
            .map(|g| a.fault_control.clusters.get(*g).and_then(|c| c.matched_gap))
            .try_fold(None, |worst: Option<f64>, v| {
                v.map(|v| Some(worst.map_or(v, |w| w.max(v))))
            })?,
        Metric::DvPartialParticipationDuringFaults => min(a
            .faults
            .iter()
            .flat_map(|f| f.nodes.values())
            .filter_map(|n| n.partial_participation)
            .map(Some)
            .collect()),
        Metric::DvAttestationsDuringPartition => Some(
            a.faults
                .iter()
                .filter(|f| f.kind == "partition")
                .flat_map(|f| dv.iter().filter_map(|g| f.groups.get(*g)))
                .map(|w| w.included_during)
                .sum::<u64>() as f64,
        ),
        Metric::MaxRecoverySlots => {
            // Faults healed inside the analysed window; one without recovery makes it unknown.
            let mut worst = 0u64;
            for f in a
                .faults
                .iter()
                .filter(|f| f.heal_slot.is_some_and(|h| h <= meta.last_slot))
            {
                worst = worst.max(f.recovery_slots?);
            }
            Some(worst as f64)
        }
        Metric::FaultsExecuted => Some(a.faults.len() as f64),
        Metric::FaultErrors => Some(a.faults.iter().filter(|f| f.error.is_some()).count() as f64),
        Metric::CorrectTargetRate => min(worst_participation(a, |p| p.target)),
        Metric::CorrectHeadRate => min(worst_participation(a, |p| p.head)),
        Metric::ReorgsPerEpoch => {
            let slots = (meta.last_slot + 1).saturating_sub(meta.first_slot);
            (slots > 0)
                .then(|| a.reorgs.count as f64 * meta.slots_per_epoch.max(1) as f64 / slots as f64)
        }
        Metric::UnfinalizedEpochs => a.finality.max_delay_epochs.map(|e| e as f64),
        Metric::HeadAgreement => a.head_agreement,
        Metric::DvEffectiveness => min(dv
            .iter()
            .map(|g| a.groups.get(*g).and_then(|s| s.effectiveness))
            .collect()),
        Metric::DvAggregationRate => min(remote_rates(meta, a, AggregationKind::Aggregation)),
        Metric::DvSyncContributionRate => {
            min(remote_rates(meta, a, AggregationKind::SyncContribution))
        }
        Metric::DvAggregationOutsideFaults => {
            outside_faults_rate(meta, a, AggregationKind::Aggregation)
                .ok()
                .flatten()
        }
        Metric::DvSyncContributionOutsideFaults => {
            outside_faults_rate(meta, a, AggregationKind::SyncContribution)
                .ok()
                .flatten()
        }
    }
}

/// One participation flag of every group with attestation duties.
fn worst_participation(
    a: &Analysis,
    flag: impl Fn(&crate::analyse::Participation) -> f64,
) -> Vec<Option<f64>> {
    a.groups
        .values()
        .filter(|g| g.attestation_duties > 0)
        .map(|g| g.participation.as_ref().map(&flag))
        .collect()
}

/// Builds the report (evaluating assertions: the devnet file's, the mandatory ones, the
/// implied ones).
pub fn build(meta: &RunMeta, a: &Analysis) -> Report {
    // name → (expression, where an implied one's threshold comes from)
    let mut all: BTreeMap<String, (String, Option<String>)> = meta
        .assertions
        .iter()
        .map(|(name, expr)| (name.clone(), (expr.clone(), None)))
        .collect();
    for (m, expr) in MANDATORY_ASSERTIONS {
        // Zero tolerance: a devnet file cannot relax it.
        all.insert(m.as_str().to_string(), (expr.to_string(), None));
    }
    for i in implied_assertions(meta, a) {
        all.entry(i.metric.as_str().to_string())
            .or_insert((i.expr, Some(i.from)));
    }
    let assertions = all
        .into_iter()
        .map(|(name, (expr, implied_from))| {
            let m = Metric::parse(&name);
            let not_evaluated = m.and_then(|m| not_evaluated(m, meta, a));
            let value = m
                .filter(|_| not_evaluated.is_none())
                .and_then(|m| metric(m, meta, a));
            let passed = match (Comparison::parse(&expr), value) {
                (Ok(c), Some(v)) => c.holds(v),
                _ => false,
            };
            AssertionResult {
                name,
                expr,
                value,
                passed,
                not_evaluated,
                implied: implied_from.is_some(),
                implied_from,
            }
        })
        .collect();
    Report {
        run: meta.run.clone(),
        beacon_nodes: meta.beacon_nodes.clone(),
        window: Window {
            first_slot: meta.first_slot,
            last_slot: meta.last_slot,
        },
        analysis: a.clone(),
        assertions,
        fault_lines: a.faults.iter().map(|f| fault_summary(f, meta)).collect(),
    }
}

/// Registers a system TTF font for plot text; false when none is found.
fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        ];
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type Series = Vec<(String, Vec<(f64, f64)>)>;

/// Axis labels at whole numbers (slots, epochs) on a range padded by half a unit: one more
/// label than the whole numbers in it (at most 12), so the step (1, 2, 5, … ×10ⁿ) is never a
/// fraction.
fn integer_labels(lo: f64, hi: f64) -> usize {
    ((hi.floor() - lo.ceil()).max(0.0) as usize + 2).clamp(2, 12)
}

/// A label: whole numbers without decimals.
fn label(v: &f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{}", (v * 1000.0).round() / 1000.0)
    }
}

/// Which axes count whole units (slots, epochs).
#[derive(Clone, Copy)]
struct IntegerAxes {
    x: bool,
    y: bool,
}

#[allow(clippy::too_many_arguments)]
fn line_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &Series,
    y_range: Option<(f64, f64)>,
    shade: &[(f64, f64)],
    integer: IntegerAxes,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    if let Some((a, b)) = y_range {
        (y0, y1) = (a, b);
    }
    if integer.x {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let pad = (y1 - y0) * 0.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&label)
        .y_label_formatter(&label);
    if integer.x {
        mesh.x_labels(integer_labels(x0, x1));
    }
    if integer.y {
        mesh.y_labels(integer_labels(y0 - pad, y1 + pad));
    }
    mesh.draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Fault windows, shaded behind the lines.
    let (ylo, yhi) = (y0 - pad, y1 + pad);
    chart
        .draw_series(shade.iter().map(|(a, b)| {
            Rectangle::new(
                [(a.max(x0), ylo), (b.min(x1), yhi)],
                RGBColor(214, 39, 40).mix(0.12).filled(),
            )
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Series that coincide stay apart: each has its own colour, every other one is dashed,
    // and each point carries a marker whose shape differs from series to series.
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let line = c.stroke_width(2);
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("{e}");
        if i % 2 == 0 {
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), line))
                .map_err(err)?;
        } else {
            chart
                .draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, line))
                .map_err(err)?;
        }
        let dots = pts.len() <= 200;
        let pts = pts.iter().copied().filter(|_| dots);
        let anno = match i % 4 {
            0 => chart.draw_series(pts.map(|p| Circle::new(p, 3, c.filled()))),
            1 => chart.draw_series(pts.map(|p| TriangleMarker::new(p, 4, c.filled()))),
            2 => chart.draw_series(pts.map(|p| Cross::new(p, 3, c.stroke_width(2)))),
            _ => chart.draw_series(pts.map(|p| Circle::new(p, 3, c.stroke_width(2)))),
        }
        .map_err(err)?;
        anno.label(name.clone()).legend(move |(x, y)| {
            let path = if i % 2 == 0 {
                vec![(x, y), (x + 18, y)]
            } else {
                vec![(x, y), (x + 7, y)]
            };
            EmptyElement::at((x, y))
                + PathElement::new(path, c.stroke_width(2))
                + Circle::new((9, 0), 3, c.filled())
        });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn histogram<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    groups: &BTreeMap<String, GroupStats>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let max_d = groups
        .values()
        .flat_map(|g| g.distance_histogram.keys())
        .copied()
        .max()
        .unwrap_or(1)
        .max(4);
    // Shares so groups of different size compare.
    let shares: Vec<(&String, Vec<(u64, f64)>)> = groups
        .iter()
        .map(|(n, g)| {
            let total: u64 = g.distance_histogram.values().sum();
            (
                n,
                g.distance_histogram
                    .iter()
                    .map(|(d, c)| (*d, *c as f64 / total.max(1) as f64))
                    .collect(),
            )
        })
        .collect();
    let k = shares.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5f64..(max_d as f64 + 0.5), 0f64..1.05f64)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("inclusion distance (slots)")
        .y_desc("share of included attestations")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, bars)) in shares.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let w = 0.8 / k;
        let off = -0.4 + w * i as f64;
        chart
            .draw_series(bars.iter().map(|(d, s)| {
                let x = *d as f64 + off;
                Rectangle::new([(x, 0.0), (x + w, *s)], c.filled())
            }))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label((*name).clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// One plot: PNG and SVG files plus the SVG text for inlining, and the one-line verdict
/// shown under it.
struct Plot {
    title: String,
    svg: String,
    verdict: String,
}

/// The one-line verdict under each plot of [`render_plots`], by plot name.
fn plot_verdict(name: &str, report: &Report) -> String {
    let a = &report.analysis;
    let pct = |v: f64| format!("{:.0}%", v * 100.0);
    match name {
        "inclusion_rate" => {
            let mut worst: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
            for e in a.epochs.iter().filter(|e| e.duties > 0) {
                let r = e.included as f64 / e.duties as f64;
                let w = worst.entry(&e.group).or_insert((r, e.epoch));
                if r < w.0 {
                    *w = (r, e.epoch);
                }
            }
            let parts: Vec<String> = worst
                .iter()
                .map(|(g, (r, e))| format!("{g} {} (epoch {e})", pct(*r)))
                .collect();
            format!("Lowest epoch inclusion: {}.", or_none(&parts))
        }
        "inclusion_per_slot" => {
            let mut missed: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for s in a.slots.iter().filter(|s| s.duties > 0) {
                let m = missed.entry(&s.group).or_default();
                m.1 += 1;
                m.0 += u64::from(s.included < s.duties);
            }
            let parts: Vec<String> = missed
                .iter()
                .map(|(g, (m, n))| format!("{g} {m} of {n}"))
                .collect();
            format!(
                "Slots with a missed attestation: {}; {} fault window(s) shaded.",
                or_none(&parts),
                a.faults.len()
            )
        }
        "inclusion_distance" => {
            let parts: Vec<String> = a
                .groups
                .iter()
                .filter_map(|(g, s)| {
                    Some(format!(
                        "{g} mean {:.2}, p99 {:.0}",
                        s.inclusion_distance.mean?, s.inclusion_distance.p99?
                    ))
                })
                .collect();
            format!("Inclusion distance in slots: {}.", or_none(&parts))
        }
        _ => format!(
            "Head agreement {}; finality delay max {} epochs, {} at the end; {} reorg(s), \
             deepest {} block(s).",
            a.head_agreement.map_or("–".into(), pct),
            a.finality
                .max_delay_epochs
                .map_or("–".into(), |d| d.to_string()),
            a.finality
                .end_delay_epochs
                .map_or("–".into(), |d| d.to_string()),
            a.reorgs.count,
            a.reorgs.max_depth
        ),
    }
}

fn or_none(parts: &[String]) -> String {
    if parts.is_empty() {
        "no data".into()
    } else {
        parts.join(", ")
    }
}

fn render_plots(dir: &Path, report: &Report, raw: &RawData, meta: &RunMeta) -> Result<Vec<Plot>> {
    let mut plots = Vec::new();
    let size = (900u32, 420u32);
    // Inclusion rate per epoch.
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for e in &report.analysis.epochs {
        if e.duties > 0 {
            series
                .entry(e.group.clone())
                .or_default()
                .push((e.epoch as f64, e.included as f64 / e.duties as f64));
        }
    }
    let rate: Series = series.into_iter().collect();
    let mut per_slot: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in &analysis_slots(report) {
        per_slot
            .entry(r.0.clone())
            .or_default()
            .push((r.1 as f64, r.2));
    }
    let slot_rate: Series = per_slot.into_iter().collect();
    let last = meta.last_slot as f64 + 1.0;
    let spe = meta.slots_per_epoch as f64;
    let slot_shade: Vec<(f64, f64)> = report
        .analysis
        .faults
        .iter()
        .map(|f| {
            (
                f.first_duty_slot as f64,
                f.heal_slot.map_or(last, |h| h as f64),
            )
        })
        .collect();
    let epoch_shade: Vec<(f64, f64)> = slot_shade.iter().map(|(a, b)| (a / spe, b / spe)).collect();
    let g = meta.genesis_time as f64;
    let time_shade: Vec<(f64, f64)> = report
        .analysis
        .faults
        .iter()
        .map(|f| {
            (
                f.start_time - g,
                f.end_time
                    .map_or(last * meta.seconds_per_slot as f64, |e| e - g),
            )
        })
        .collect();
    let shades = Shades {
        slot: slot_shade,
        epoch: epoch_shade,
        time: time_shade,
    };
    // Head slot and finalized epoch per BN over time since genesis.
    let mut heads: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut fins: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let h = &raw.heads;
    if h.height() > 0 {
        let t = h
            .column("time")?
            .as_materialized_series()
            .cast(&DataType::Float64)?;
        let s = h
            .column("head_slot")?
            .as_materialized_series()
            .cast(&DataType::Float64)?;
        let f = h
            .column("finalized_epoch")?
            .as_materialized_series()
            .cast(&DataType::Float64)?;
        let bn = h.column("bn")?.as_materialized_series().str()?.clone();
        let (t, s, f) = (t.f64()?, s.f64()?, f.f64()?);
        for i in 0..h.height() {
            if let (Some(t), Some(s), Some(f), Some(b)) = (t.get(i), s.get(i), f.get(i), bn.get(i))
            {
                let x = t - meta.genesis_time as f64;
                heads
                    .entry(format!("{b} head slot"))
                    .or_default()
                    .push((x, s));
                fins.entry(format!("{b} finalized slot"))
                    .or_default()
                    .push((x, f * meta.slots_per_epoch as f64));
            }
        }
    }
    let mut progress: Series = heads.into_iter().collect();
    progress.extend(fins);

    let charts: [(&'static str, String); 4] = [
        (
            "inclusion_rate",
            "Attestation inclusion rate per epoch".into(),
        ),
        (
            "inclusion_per_slot",
            "Attestation inclusion rate per slot (fault windows shaded)".into(),
        ),
        ("inclusion_distance", "Inclusion distance".into()),
        ("chain_progress", "Head and finality per beacon node".into()),
    ];
    for (name, title) in charts {
        let png = dir.join(format!("{name}.png"));
        {
            let root = BitMapBackend::new(&png, size).into_drawing_area();
            draw_one(
                root,
                name,
                &title,
                &[&rate, &slot_rate, &progress],
                &shades,
                &report.analysis.groups,
            )?;
        }
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            draw_one(
                root,
                name,
                &title,
                &[&rate, &slot_rate, &progress],
                &shades,
                &report.analysis.groups,
            )?;
        }
        std::fs::write(dir.join(format!("{name}.svg")), &svg)?;
        let verdict = plot_verdict(name, report);
        plots.push(Plot {
            title,
            svg,
            verdict,
        });
    }
    Ok(plots)
}

/// Fault windows in each plot's x unit.
struct Shades {
    slot: Vec<(f64, f64)>,
    epoch: Vec<(f64, f64)>,
    time: Vec<(f64, f64)>,
}

/// (group, slot, inclusion rate) of every slot with duties.
fn analysis_slots(report: &Report) -> Vec<(String, u64, f64)> {
    report
        .analysis
        .slots
        .iter()
        .filter(|s| s.duties > 0)
        .map(|s| (s.group.clone(), s.slot, s.included as f64 / s.duties as f64))
        .collect()
}

fn draw_one<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    name: &str,
    title: &str,
    [rate, slot_rate, progress]: &[&Series; 3],
    shades: &Shades,
    groups: &BTreeMap<String, GroupStats>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    match name {
        "inclusion_rate" => line_chart(
            root,
            title,
            "epoch",
            "included / duties",
            rate,
            Some((0.0, 1.0)),
            &shades.epoch,
            IntegerAxes { x: true, y: false },
        ),
        "inclusion_per_slot" => line_chart(
            root,
            title,
            "slot",
            "included / duties",
            slot_rate,
            Some((0.0, 1.0)),
            &shades.slot,
            IntegerAxes { x: true, y: false },
        ),
        "inclusion_distance" => histogram(root, title, groups),
        _ => line_chart(
            root,
            title,
            "seconds since genesis",
            "slot",
            progress,
            None,
            &shades.time,
            IntegerAxes { x: true, y: true },
        ),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// `<table><tr><th>…</th>…</tr>`: a table's opening with its header row.
fn table_head(columns: &[&str]) -> String {
    let mut h = String::from("<table><tr>");
    for c in columns {
        h.push_str(&format!("<th>{c}</th>"));
    }
    h.push_str("</tr>");
    h
}

/// `<tr><td>…</td>…</tr>` of cells already escaped.
fn table_row(cells: &[String]) -> String {
    let mut h = String::from("<tr>");
    for c in cells {
        h.push_str(&format!("<td>{c}</td>"));
    }
    h.push_str("</tr>");
    h
}

/// `report.html`: the verdict, then one section per part of the report.
fn html(report: &Report, plots: &[Plot], note: &str) -> String {
    let mut h = String::new();
    html_head(&mut h, report);
    assertions_section(&mut h, report);
    if !report.analysis.faults.is_empty() {
        faults_section(&mut h, report);
    }
    groups_section(&mut h, report);
    chain_health_section(&mut h, report);
    if !report.analysis.missed_duties.is_empty() {
        missed_duties_section(&mut h, report);
    }
    if !report.analysis.dvnodes.is_empty() {
        dvnodes_section(&mut h, report);
    }
    slashing_section(&mut h, report);
    plots_section(&mut h, plots, note);
    h.push_str("<h2>Beacon nodes</h2><ul>");
    for bn in &report.beacon_nodes {
        h.push_str(&format!("<li>{}: {}</li>", esc(&bn.name), esc(&bn.api_url)));
    }
    h.push_str("</ul></body></html>\n");
    h
}

/// Document head with the style sheet, the title with the verdict, the window.
fn html_head(h: &mut String, report: &Report) {
    h.push_str(&format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>dvlab report: {}</title>\
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}.pass{{color:#1a7f37;font-weight:bold}}\
.fail{{color:#c62828;font-weight:bold}}.ne{{color:#8a6d00;font-weight:bold}}figure{{margin:1em 0}}</style></head><body>",
        esc(&report.run)
    ));
    let mut verdict = if report.passed() {
        "<span class=pass>PASS</span>".to_string()
    } else {
        "<span class=fail>FAIL</span>".to_string()
    };
    let unevaluated = report.not_evaluated().count();
    if unevaluated > 0 {
        verdict.push_str(&format!(
            " <span class=ne>({unevaluated} assertion(s) not evaluated)</span>"
        ));
    }
    h.push_str(&format!(
        "<h1>dvlab report: {} — {verdict}</h1><p>Window: slots {}–{}; highest finalized epoch: {}.</p>",
        esc(&report.run),
        report.window.first_slot,
        report.window.last_slot,
        report.analysis.finalized_epoch.map_or("none".into(), |e| e.to_string())
    ));
}

/// The assertions with their values and results; an implied one says where its threshold
/// comes from, one not evaluated says why.
fn assertions_section(h: &mut String, report: &Report) {
    h.push_str("<h2>Assertions</h2>");
    h.push_str(&table_head(&[
        "assertion",
        "expression",
        "value",
        "result",
        "implied",
    ]));
    for a in &report.assertions {
        let (class, result) = match &a.not_evaluated {
            Some(why) => ("ne", format!("not evaluated: {}", esc(why))),
            None if a.passed => ("pass", "pass".into()),
            None => ("fail", "FAIL".into()),
        };
        let source = a.implied_from.as_ref().map_or(String::new(), |from| {
            format!("yes: threshold of {}", esc(from))
        });
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class={class}>{result}</td><td>{source}</td></tr>",
            esc(&a.name),
            esc(&a.expr),
            fmt_opt(a.value, 4),
        ));
    }
    h.push_str("</table>");
    if report.assertions.iter().any(|a| a.implied) {
        h.push_str(&format!(
            "<p>Implied assertions are added by dvlab, not written in the devnet file: every run \
             with a DV cluster in remote-signer mode is held to its aggregations and sync \
             contributions outside the fault windows (<code>dv_aggregation_outside_faults</code>, \
             <code>dv_sync_contribution_outside_faults</code>) when the file does not name them, \
             with the bar the file sets for the DV attestations: its \
             <code>dv_inclusion_outside_faults</code> minimum, else its \
             <code>dv_inclusion_rate</code> minimum, else <code>{}</code>.</p>",
            esc(DEFAULT_IMPLIED_BAR)
        ));
    }
}

/// What each fault cost per group, the fault lines, the figures outside faults and in the
/// steady state, and consensus per dvnode during each fault.
fn faults_section(h: &mut String, report: &Report) {
    h.push_str("<h2>Faults</h2>");
    h.push_str(&table_head(&[
        "fault",
        "kind",
        "targets / parameters",
        "slots",
        "group",
        "duties",
        "included",
        "rate",
        "missed by reason",
        "recovery slot",
        "aggregations",
        "sync contributions",
    ]));
    for f in &report.analysis.faults {
        let what = if f.detail.is_empty() {
            f.targets.join(",")
        } else {
            f.detail.clone()
        };
        let slots = format!(
            "{}–{}",
            f.start_slot,
            f.end_slot.map_or("end".into(), |e| e.to_string())
        );
        for (g, w) in &f.groups {
            h.push_str(&table_row(&[
                f.fault.to_string(),
                esc(&f.kind),
                esc(&what),
                slots.clone(),
                esc(g),
                w.tally.duties.to_string(),
                w.tally.included.to_string(),
                fmt_opt(w.tally.inclusion_rate, 3),
                esc(&counts(&w.missed_by_reason)),
                w.recovery_slot.map_or("–".into(), |r| r.to_string()),
                submitted_of(&w.aggregation, AggregationKind::Aggregation),
                submitted_of(&w.aggregation, AggregationKind::SyncContribution),
            ]));
        }
        if let Some(e) = &f.error {
            h.push_str(&format!(
                "<tr><td colspan=12 class=fail>fault {}: executor error: {}</td></tr>",
                f.fault,
                esc(e)
            ));
        }
    }
    h.push_str("</table><ul>");
    for line in &report.fault_lines {
        h.push_str(&format!("<li>{}</li>", esc(line)));
    }
    h.push_str("</ul>");
    h.push_str(&table_head(&[
        "group, slots",
        "duties",
        "included",
        "rate",
        "missed by reason",
        "aggregations",
        "sync contributions",
    ]));
    let a = &report.analysis;
    let rows = a
        .outside_faults
        .iter()
        .map(|(g, w)| (format!("{g} outside faults"), w))
        .chain(
            a.during_faults
                .iter()
                .map(|(g, w)| (format!("{g} during faults"), w)),
        )
        .chain(
            a.steady
                .iter()
                .map(|(g, w)| (format!("{g} steady (outside faults and recoveries)"), w)),
        );
    for (g, w) in rows {
        h.push_str(&table_row(&[
            esc(&g),
            w.tally.duties.to_string(),
            w.tally.included.to_string(),
            fmt_opt(w.tally.inclusion_rate, 3),
            esc(&counts(&w.missed_by_reason)),
            submitted_of(&w.aggregation, AggregationKind::Aggregation),
            submitted_of(&w.aggregation, AggregationKind::SyncContribution),
        ]));
    }
    h.push_str("</table>");
    control_section(h, &report.analysis.fault_control);
    h.push_str("<h3>Consensus per dvnode during faults</h3>");
    h.push_str(&table_head(&[
        "fault",
        "node",
        "duties logged",
        "decided",
        "round mean",
        "round max",
        "partials used again at slot",
        "slots without its partials",
    ]));
    let opt = |v: Option<u64>| v.map_or("–".into(), |x| x.to_string());
    for f in &report.analysis.faults {
        for (n, r) in &f.nodes {
            h.push_str(&table_row(&[
                format!("{} {}", f.fault, esc(&f.kind)),
                esc(n),
                r.duties_logged.to_string(),
                r.decided.to_string(),
                fmt_opt(r.round_mean, 2),
                opt(r.round_max),
                opt(r.recovery_slot),
                opt(r.recovery_slots),
            ]));
        }
    }
    h.push_str("</table>");
}

/// The DV clusters inside the fault windows against their controls, naming the one
/// `dv_baseline_gap_during_faults` asserts.
fn control_section(h: &mut String, c: &crate::analyse::FaultControl) {
    if c.clusters.values().all(|g| g.own.duties == 0) {
        return;
    }
    let rate = |t: &crate::analyse::Tally| {
        format!(
            "{} ({}/{})",
            fmt_opt(t.inclusion_rate, 3),
            t.included,
            t.duties
        )
    };
    h.push_str(&format!(
        "<h3>DV against the plain validators during faults</h3><p>Asserted by \
         <code>dv_baseline_gap_during_faults</code>: the <b>slot-matched gap</b> — each DV duty \
         expects the inclusion rate the plain (non-DV) validators had in its own slot (1 in a slot \
         without plain duties), so a slot the whole devnet lost is not counted against the DV and a \
         miss of the DV alone is. Shown for comparison: the gap to the baseline group alone (the \
         reference before, {}) and to all plain validators pooled ({}).</p>",
        rate(&c.baseline),
        rate(&c.plain)
    ));
    h.push_str(&table_head(&[
        "cluster",
        "rate during faults",
        "gap to the baseline",
        "gap to all plain, pooled",
        "slot-matched expected rate",
        "slot-matched gap (asserted)",
        "duties without a plain duty in their slot",
    ]));
    for (g, x) in &c.clusters {
        h.push_str(&table_row(&[
            esc(g),
            rate(&x.own),
            fmt_opt(x.baseline_gap, 3),
            fmt_opt(x.plain_gap, 3),
            fmt_opt(x.matched_expected_rate, 3),
            fmt_opt(x.matched_gap, 3),
            x.unmatched_duties.to_string(),
        ]));
    }
    h.push_str("</table>");
}

fn groups_section(h: &mut String, report: &Report) {
    h.push_str("<h2>Groups</h2>");
    h.push_str(&table_head(&[
        "group",
        "validators",
        "duties",
        "included",
        "rate",
        "dist. mean",
        "p50",
        "p99",
        "head ok",
        "target ok",
        "source ok",
        "proposals",
        "sync participation",
        "aggregations",
        "sync contributions",
    ]));
    for (n, g) in &report.analysis.groups {
        h.push_str(&table_row(&[
            esc(n),
            g.validators.to_string(),
            g.attestation_duties.to_string(),
            g.attestations_included.to_string(),
            fmt_opt(g.inclusion_rate, 4),
            fmt_opt(g.inclusion_distance.mean, 2),
            fmt_opt(g.inclusion_distance.p50, 1),
            fmt_opt(g.inclusion_distance.p99, 1),
            fmt_opt(g.correct_head_rate, 3),
            fmt_opt(g.correct_target_rate, 3),
            fmt_opt(g.correct_source_rate, 3),
            format!("{}/{}", g.proposals_included, g.proposals_expected),
            fmt_opt(g.sync_participation, 3),
            submitted_of(&g.aggregation, AggregationKind::Aggregation),
            submitted_of(&g.aggregation, AggregationKind::SyncContribution),
        ]));
    }
    h.push_str("</table>");
}

/// `submitted/duties` of `kind`, or `–` for a group without aggregation figures.
fn submitted_of(a: &Aggregations, kind: AggregationKind) -> String {
    a.of(kind).map_or("–".into(), |(duties, submitted)| {
        format!("{submitted}/{duties}")
    })
}

/// Head agreement, reorgs, finality; effectiveness and timely participation per group and
/// per epoch.
fn chain_health_section(h: &mut String, report: &Report) {
    let a = &report.analysis;
    let opt = |v: Option<u64>| v.map_or("–".into(), |x| x.to_string());
    h.push_str(&format!(
        "<h2>Chain health</h2><p>Head agreement across beacon nodes: {}. Reorgs: {} (deepest {} blocks). Finality: first finalized epoch after {} s; delay max {} epochs, at the end {}.</p>",
        fmt_opt(a.head_agreement, 3),
        a.reorgs.count,
        a.reorgs.max_depth,
        fmt_opt(a.finality.first_finalized_seconds, 0),
        opt(a.finality.max_delay_epochs),
        opt(a.finality.end_delay_epochs),
    ));
    h.push_str(&table_head(&[
        "group, epoch",
        "effectiveness",
        "timely source",
        "timely target",
        "timely head",
    ]));
    let flags = |p: Option<&crate::analyse::Participation>| {
        [
            fmt_opt(p.map(|p| p.source), 3),
            fmt_opt(p.map(|p| p.target), 3),
            fmt_opt(p.map(|p| p.head), 3),
        ]
    };
    for (n, g) in &a.groups {
        let mut row = vec![format!("{} (window)", esc(n)), fmt_opt(g.effectiveness, 3)];
        row.extend(flags(g.participation.as_ref()));
        h.push_str(&table_row(&row));
    }
    for e in &a.epochs {
        let mut row = vec![format!("{} epoch {}", esc(&e.group), e.epoch), "".into()];
        row.extend(flags(Some(&e.participation)));
        h.push_str(&table_row(&row));
    }
    h.push_str("</table>");
}

fn missed_duties_section(h: &mut String, report: &Report) {
    h.push_str("<h2>Missed DV duties by reason</h2>");
    h.push_str(&table_head(&["cluster", "duty", "reason", "missed"]));
    for (g, kinds) in &report.analysis.missed_duties {
        for (k, reasons) in kinds {
            for (r, n) in reasons {
                h.push_str(&table_row(&[esc(g), esc(k), esc(r), n.to_string()]));
            }
        }
    }
    h.push_str("</table>");
}

fn dvnodes_section(h: &mut String, report: &Report) {
    h.push_str("<h2>dvnodes</h2>");
    h.push_str(&table_head(&[
        "node",
        "cluster",
        "duties logged",
        "outcomes",
        "decided",
        "round mean",
        "round max",
        "consensus p50 (s)",
        "consensus p99 (s)",
        "partial participation",
    ]));
    for (n, s) in &report.analysis.dvnodes {
        h.push_str(&table_row(&[
            esc(n),
            esc(&s.cluster),
            s.duties_logged.to_string(),
            esc(&counts(&s.outcomes)),
            s.consensus_decided.to_string(),
            fmt_opt(s.consensus_round_mean, 2),
            s.consensus_round_max.map_or("–".into(), |r| r.to_string()),
            fmt_opt(s.consensus_seconds_p50, 3),
            fmt_opt(s.consensus_seconds_p99, 3),
            fmt_opt(s.partial_participation, 3),
        ]));
    }
    h.push_str("</table>");
}

/// The audit's verdict, its violations and every slashing on the canonical chain.
fn slashing_section(h: &mut String, report: &Report) {
    let audit = &report.analysis.slashing_audit;
    h.push_str("<h2>Slashing audit</h2>");
    h.push_str(&format!(
        "<p>{} signed messages checked; {} slashable.</p>",
        audit.messages_checked,
        audit.violations.len()
    ));
    if !audit.violations.is_empty() {
        h.push_str(&table_head(&["kind", "validator", "group", "detail"]));
        for v in &audit.violations {
            h.push_str(&table_row(&[
                esc(&v.kind),
                v.validator.to_string(),
                esc(&v.group),
                esc(&v.detail),
            ]));
        }
        h.push_str("</table>");
    }
    let onchain = &audit.onchain_slashings;
    if onchain.is_empty() {
        h.push_str("<p>on-chain slashings: none</p>");
    } else {
        h.push_str(&format!("<p>on-chain slashings: {}</p>", onchain.len()));
        h.push_str(&table_head(&["block slot", "validator", "kind", "group"]));
        for o in onchain {
            h.push_str(&table_row(&[
                o.slot.to_string(),
                o.validator.to_string(),
                esc(&o.kind),
                esc(&o.group),
            ]));
        }
        h.push_str("</table>");
    }
}

/// The plots, inline SVG, or the note saying why there are none.
fn plots_section(h: &mut String, plots: &[Plot], note: &str) {
    h.push_str("<h2>Plots</h2>");
    if !note.is_empty() {
        h.push_str(&format!("<p>{}</p>", esc(note)));
    }
    for p in plots {
        h.push_str(&format!(
            "<figure><figcaption>{}</figcaption>{}<p class=verdict>{}</p></figure>",
            esc(&p.title),
            p.svg,
            esc(&p.verdict)
        ));
    }
}

/// Writes `report.json`, plots and `report.html` into `dir`; returns the report.
pub fn write(dir: &Path, meta: &RunMeta, raw: &RawData, analysis: &Analysis) -> Result<Report> {
    std::fs::create_dir_all(dir)?;
    let report = build(meta, analysis);
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)
        .context("writing report.json")?;
    let (plots, note) = if font_ready() {
        (render_plots(dir, &report, raw, meta)?, String::new())
    } else {
        (
            Vec::new(),
            "No TrueType font (DejaVu Sans) found on this machine: plots were not rendered.".into(),
        )
    };
    std::fs::write(dir.join("report.html"), html(&report, &plots, &note))
        .context("writing report.html")?;
    Ok(report)
}

/// `"a 3, b 1"`: a count per key, in key order.
fn counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyse::{Distance, NodeStats, SlashingAudit, Violation};
    use crate::data::{synthetic, GroupMeta};

    fn meta(assertions: &[(&str, &str)]) -> RunMeta {
        let mut m = synthetic::run_meta(
            8,
            31,
            vec![
                GroupMeta::range("baseline", 0, 8, false),
                GroupMeta::range("dv0", 8, 8, true),
                GroupMeta::range("dv1", 16, 8, true),
            ],
        );
        m.assertions = assertions
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        m
    }

    fn analysis(rates: &[(&str, f64)], violations: usize) -> Analysis {
        Analysis {
            groups: rates
                .iter()
                .map(|(n, r)| {
                    (
                        n.to_string(),
                        GroupStats {
                            inclusion_rate: Some(*r),
                            inclusion_distance: Distance {
                                mean: Some(1.0),
                                p50: Some(1.0),
                                p99: Some(2.0),
                            },
                            distance_histogram: BTreeMap::from([(1, 10), (2, 1)]),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
            epochs: vec![],
            slashing_audit: SlashingAudit {
                messages_checked: 10,
                violations: (0..violations)
                    .map(|i| Violation {
                        kind: "double_vote".into(),
                        validator: i as u64,
                        group: "dv0".into(),
                        detail: String::new(),
                    })
                    .collect(),
                onchain_slashings: vec![],
            },
            finalized_epoch: Some(2),
            missed_duties: BTreeMap::new(),
            dvnodes: BTreeMap::new(),
            ..Default::default()
        }
    }

    #[test]
    fn dv_metrics_take_the_worst_cluster() {
        let m = meta(&[]);
        let a = analysis(&[("baseline", 0.9), ("dv0", 0.99), ("dv1", 0.45)], 0);
        assert_eq!(metric(Metric::DvInclusionRate, &m, &a), Some(0.45));
        assert_eq!(metric(Metric::DvVsBaselineRatio, &m, &a), Some(0.5));
        assert_eq!(metric(Metric::SlashableMessages, &m, &a), Some(0.0));
        assert_eq!(metric(Metric::FinalizedEpoch, &m, &a), Some(2.0));
        // A cluster without data makes the DV metric unknown.
        let a = analysis(&[("baseline", 0.9), ("dv0", 0.99)], 0);
        assert_eq!(metric(Metric::DvInclusionRate, &m, &a), None);
    }

    /// The aggregation metrics look only at clusters with figures (remote-signer mode): the
    /// worst of them; a remote cluster without any duty is unknown; none at all is unknown.
    #[test]
    fn aggregation_metrics_take_the_worst_remote_cluster() {
        let m = meta(&[]);
        let mut a = analysis(&[("baseline", 0.9), ("dv0", 0.99), ("dv1", 0.45)], 0);
        assert_eq!(metric(Metric::DvAggregationRate, &m, &a), None);
        let dv0 = a.groups.get_mut("dv0").unwrap();
        dv0.aggregation.aggregation_duties = Some(8);
        dv0.aggregation.aggregations_submitted = Some(6);
        dv0.aggregation.sync_contribution_duties = Some(0);
        dv0.aggregation.sync_contributions_submitted = Some(0);
        assert_eq!(metric(Metric::DvAggregationRate, &m, &a), Some(0.75));
        assert_eq!(metric(Metric::DvSyncContributionRate, &m, &a), None);
        let dv1 = a.groups.get_mut("dv1").unwrap();
        dv1.aggregation.aggregation_duties = Some(4);
        dv1.aggregation.aggregations_submitted = Some(4);
        assert_eq!(metric(Metric::DvAggregationRate, &m, &a), Some(0.75));
        assert_eq!(
            Metric::parse("dv_sync_contribution_rate"),
            Some(Metric::DvSyncContributionRate)
        );
    }

    /// Sets the figures of `kind` of group `g` outside the faults.
    fn outside(a: &mut Analysis, g: &str, kind: AggregationKind, duties: u64, submitted: u64) {
        a.outside_faults
            .entry(g.to_string())
            .or_default()
            .aggregation
            .set(kind, duties, submitted);
    }

    /// The outside-faults aggregation metrics: the worst remote-signer cluster with duties
    /// there; not evaluated without a remote-signer cluster or without any duty; unknown for a
    /// cluster the devnet runs in remote-signer mode that has no figures.
    #[test]
    fn outside_faults_aggregation_metrics() {
        use AggregationKind::{Aggregation, SyncContribution};
        let mut m = meta(&[]);
        let mut a = analysis(&[("baseline", 0.9), ("dv0", 0.99), ("dv1", 0.45)], 0);
        for metric_ in [
            Metric::DvAggregationOutsideFaults,
            Metric::DvSyncContributionOutsideFaults,
        ] {
            assert_eq!(metric(metric_, &m, &a), None);
            assert_eq!(
                not_evaluated(metric_, &m, &a).as_deref(),
                Some("no DV cluster in remote-signer mode")
            );
        }
        // dv0 shows remote-signer figures (whole window) and has 4 aggregation duties, 0 sync
        // contribution duties outside the faults.
        a.groups
            .get_mut("dv0")
            .unwrap()
            .aggregation
            .set(Aggregation, 10, 9);
        outside(&mut a, "dv0", Aggregation, 4, 3);
        outside(&mut a, "dv0", SyncContribution, 0, 0);
        assert_eq!(
            metric(Metric::DvAggregationOutsideFaults, &m, &a),
            Some(0.75)
        );
        assert_eq!(
            not_evaluated(Metric::DvAggregationOutsideFaults, &m, &a),
            None
        );
        assert_eq!(
            metric(Metric::DvSyncContributionOutsideFaults, &m, &a),
            None
        );
        assert_eq!(
            not_evaluated(Metric::DvSyncContributionOutsideFaults, &m, &a).as_deref(),
            Some("no sync_contribution duty outside the fault windows (dv0: 0)")
        );
        // dv1 in remote-signer mode too, worse: the minimum.
        outside(&mut a, "dv1", Aggregation, 8, 2);
        outside(&mut a, "dv1", SyncContribution, 4, 4);
        a.groups.get_mut("dv1").unwrap().aggregation = a.outside_faults["dv1"].aggregation;
        assert_eq!(
            metric(Metric::DvAggregationOutsideFaults, &m, &a),
            Some(0.25)
        );
        // A cluster with 0 duties is left out; the other one is measured.
        assert_eq!(
            metric(Metric::DvSyncContributionOutsideFaults, &m, &a),
            Some(1.0)
        );
        // A cluster the devnet runs in remote-signer mode without any figure: unknown (fails),
        // not "not evaluated".
        let mut b = analysis(&[("baseline", 0.9), ("dv0", 0.99), ("dv1", 0.45)], 0);
        m.remote_signer = vec!["dv1".into()];
        assert_eq!(remote_clusters(&m, &b), vec!["dv1"]);
        assert_eq!(metric(Metric::DvAggregationOutsideFaults, &m, &b), None);
        assert_eq!(
            not_evaluated(Metric::DvAggregationOutsideFaults, &m, &b),
            None
        );
        assert_eq!(metric(Metric::DvAggregationRate, &m, &b), None);
        outside(&mut b, "dv1", Aggregation, 2, 2);
        assert_eq!(
            metric(Metric::DvAggregationOutsideFaults, &m, &b),
            Some(1.0)
        );
        assert_eq!(
            Metric::parse("dv_sync_contribution_outside_faults"),
            Some(Metric::DvSyncContributionOutsideFaults)
        );
    }

    /// The implied assertions: only with a remote-signer cluster; the bar of the file's
    /// `dv_inclusion_outside_faults` minimum, else its `dv_inclusion_rate` minimum, else the
    /// default; never over a metric the file names.
    #[test]
    fn implied_assertions_take_the_devnets_attestation_bar() {
        let a = analysis(&[("baseline", 0.9), ("dv0", 0.99), ("dv1", 0.45)], 0);
        let with = |assertions: &[(&str, &str)], remote: &[&str]| {
            let mut m = meta(assertions);
            m.remote_signer = remote.iter().map(|r| r.to_string()).collect();
            implied_assertions(&m, &a)
                .into_iter()
                .map(|i| (i.metric.as_str(), i.expr, i.from))
                .collect::<Vec<_>>()
        };
        let both = [
            ("dv_inclusion_outside_faults", ">= 0.9"),
            ("dv_inclusion_rate", ">= 0.8"),
        ];
        assert_eq!(with(&both, &[]), vec![]);
        let from = "dv_inclusion_outside_faults >= 0.9".to_string();
        assert_eq!(
            with(&both, &["dv0"]),
            vec![
                (
                    "dv_aggregation_outside_faults",
                    ">= 0.9".into(),
                    from.clone()
                ),
                ("dv_sync_contribution_outside_faults", ">= 0.9".into(), from),
            ]
        );
        let rate = with(&[("dv_inclusion_rate", "> 0.8 ")], &["dv0"]);
        assert_eq!(rate[0].1, "> 0.8");
        assert_eq!(rate[0].2, "dv_inclusion_rate > 0.8");
        // Not a minimum (partition-2-2's `dv_inclusion_during_faults <= 0.1` kind): skipped.
        let upper = with(
            &[
                ("dv_inclusion_outside_faults", "<= 0.5"),
                ("dv_inclusion_during_faults", ">= 0.99"),
            ],
            &["dv0"],
        );
        assert_eq!(upper[0].1, DEFAULT_IMPLIED_BAR);
        assert!(upper[0].2.contains("default"), "{upper:?}");
        let named = with(
            &[
                ("dv_inclusion_rate", ">= 0.8"),
                ("dv_aggregation_outside_faults", ">= 0.5"),
            ],
            &["dv0"],
        );
        assert_eq!(
            named.iter().map(|i| i.0).collect::<Vec<_>>(),
            vec!["dv_sync_contribution_outside_faults"]
        );
    }

    /// In the report an implied assertion is marked and says where its threshold comes from;
    /// one not evaluated neither holds nor fails the run and says why, in report.json and
    /// report.html; an evaluated one below the bar fails the run.
    #[test]
    fn implied_and_not_evaluated_assertions_in_the_report() {
        let mut m = meta(&[("dv_inclusion_rate", ">= 0.95")]);
        m.remote_signer = vec!["dv0".into()];
        let mut a = analysis(&[("baseline", 0.9), ("dv0", 0.99), ("dv1", 0.96)], 0);
        outside(&mut a, "dv0", AggregationKind::Aggregation, 20, 19);
        outside(&mut a, "dv0", AggregationKind::SyncContribution, 0, 0);
        let r = build(&m, &a);
        assert!(r.passed(), "{:?}", r.assertions);
        let json = serde_json::to_value(&r).unwrap();
        let find = |name: &str| {
            json["assertions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["name"] == name)
                .unwrap_or_else(|| panic!("no {name} in {json}"))
                .clone()
        };
        let agg = find("dv_aggregation_outside_faults");
        assert_eq!(agg["implied"], true);
        assert_eq!(agg["implied_from"], "dv_inclusion_rate >= 0.95");
        assert_eq!(agg["expr"], ">= 0.95");
        assert_eq!(agg["value"], 0.95);
        assert_eq!(agg["passed"], true);
        assert_eq!(agg["not_evaluated"], serde_json::Value::Null);
        let sync = find("dv_sync_contribution_outside_faults");
        assert_eq!(sync["implied"], true);
        assert_eq!(sync["passed"], false);
        assert_eq!(sync["value"], serde_json::Value::Null);
        assert_eq!(
            sync["not_evaluated"],
            "no sync_contribution duty outside the fault windows (dv0: 0)"
        );
        assert_eq!(find("dv_inclusion_rate")["implied"], false);
        let page = html(&r, &[], "");
        assert!(page.contains("(1 assertion(s) not evaluated)"), "{page}");
        assert!(page.contains(
            "<td class=ne>not evaluated: no sync_contribution duty outside the fault windows \
             (dv0: 0)</td><td>yes: threshold of dv_inclusion_rate &gt;= 0.95</td>"
        ));
        assert!(page.contains("Implied assertions are added by dvlab"));
        // One aggregation fewer: 18/20 < 0.95 fails the run.
        outside(&mut a, "dv0", AggregationKind::Aggregation, 20, 18);
        let r = build(&m, &a);
        assert!(!r.passed());
        assert_eq!(r.not_evaluated().count(), 1);
        // Named in the file, it is the file's and not implied; middleware runs imply nothing.
        let m = meta(&[("dv_aggregation_outside_faults", ">= 0.5")]);
        let r = build(&m, &analysis(&[("dv0", 0.99), ("dv1", 0.96)], 0));
        let named = &r.assertions[0];
        assert_eq!(named.name, "dv_aggregation_outside_faults");
        assert!(!named.implied && !named.passed && named.not_evaluated.is_some());
        assert!(r.passed());
        assert_eq!(r.assertions.len(), 2, "{:?}", r.assertions);
    }

    #[test]
    fn verdict_follows_assertions() {
        let m = meta(&[
            ("dv_inclusion_rate", ">= 0.95"),
            ("slashable_messages", "== 0"),
        ]);
        let ok = build(
            &m,
            &analysis(&[("baseline", 0.9), ("dv0", 0.99), ("dv1", 0.96)], 0),
        );
        assert!(ok.passed(), "{:?}", ok.assertions);
        let bad = build(
            &m,
            &analysis(&[("baseline", 0.9), ("dv0", 0.99), ("dv1", 0.96)], 1),
        );
        assert!(!bad.passed());
        let slash = bad
            .assertions
            .iter()
            .find(|a| a.name == "slashable_messages")
            .unwrap();
        assert_eq!((slash.value, slash.passed), (Some(1.0), false));
        let missing = build(&m, &analysis(&[("baseline", 0.9)], 0));
        let dv = missing
            .assertions
            .iter()
            .find(|a| a.name == "dv_inclusion_rate")
            .unwrap();
        assert_eq!((dv.value, dv.passed), (None, false));
    }

    #[test]
    fn writes_json_html_and_plots() {
        let m = meta(&[("dv_inclusion_rate", ">= 0.95")]);
        let mut a = analysis(&[("baseline", 0.9), ("dv0", 0.99), ("dv1", 0.96)], 0);
        a.epochs = vec![
            crate::analyse::EpochRate {
                group: "dv0".into(),
                epoch: 1,
                duties: 8,
                included: 8,
                participation: Default::default(),
            },
            crate::analyse::EpochRate {
                group: "dv0".into(),
                epoch: 2,
                duties: 8,
                included: 7,
                participation: crate::analyse::Participation {
                    source: 0.875,
                    target: 0.875,
                    head: 0.75,
                },
            },
        ];
        a.head_agreement = Some(0.75);
        a.reorgs = crate::analyse::Reorgs {
            count: 3,
            max_depth: 2,
        };
        a.finality = crate::analyse::Finality {
            first_finalized_seconds: Some(70.0),
            max_delay_epochs: Some(3),
            end_delay_epochs: Some(2),
        };
        a.groups.get_mut("dv0").unwrap().effectiveness = Some(0.5);
        a.missed_duties = BTreeMap::from([(
            "dv0".to_string(),
            BTreeMap::from([(
                "attester".to_string(),
                BTreeMap::from([("no_consensus".to_string(), 1)]),
            )]),
        )]);
        a.dvnodes = BTreeMap::from([(
            "dvlab-t-dv0-0".to_string(),
            NodeStats {
                cluster: "dv0".into(),
                duties_logged: 16,
                consensus_round_mean: Some(1.0),
                ..Default::default()
            },
        )]);
        let mut b = crate::data::synthetic::Builder::default();
        b.head(4, "bn0", 1, 0, 1);
        b.head(40, "bn0", 10, 0, 1);
        let raw = b.build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let r = write(dir.path(), &m, &raw, &a).unwrap();
        assert!(r.passed());
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["groups"]["dv0"]["inclusion_rate"], 0.99);
        assert_eq!(json["window"]["first_slot"], 8);
        assert_eq!(
            json["slashing_audit"]["violations"]
                .as_array()
                .unwrap()
                .len(),
            0
        );
        assert_eq!(json["assertions"][0]["passed"], true);
        assert_eq!(json["missed_duties"]["dv0"]["attester"]["no_consensus"], 1);
        assert_eq!(json["dvnodes"]["dvlab-t-dv0-0"]["duties_logged"], 16);
        // The names issue 17 promises to tools.
        assert_eq!(json["epochs"][1]["participation"]["target"], 0.875);
        assert_eq!(json["groups"]["dv0"]["effectiveness"], 0.5);
        assert_eq!(json["head_agreement"], 0.75);
        assert_eq!(json["reorgs"]["count"], 3);
        assert_eq!(json["reorgs"]["max_depth"], 2);
        assert_eq!(json["finality"]["first_finalized_seconds"], 70.0);
        assert_eq!(json["finality"]["max_delay_epochs"], 3);
        assert_eq!(json["finality"]["end_delay_epochs"], 2);
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("PASS"));
        assert!(html.contains("Missed DV duties by reason"));
        assert!(html.contains("Head agreement across beacon nodes: 0.750. Reorgs: 3 (deepest 2"));
        assert!(html.contains("<td>dv0 epoch 2</td><td></td><td>0.875</td>"));
        assert!(html.contains("dvlab-t-dv0-0"));
        assert!(html.contains("on-chain slashings: none"));
        assert_eq!(
            json["slashing_audit"]["onchain_slashings"],
            serde_json::json!([])
        );
        // With a slashing on chain, the section lists it.
        a.slashing_audit
            .onchain_slashings
            .push(crate::analyse::OnchainSlashing {
                slot: 17,
                validator: 3,
                kind: "proposer".into(),
                group: "baseline".into(),
            });
        let page = super::html(&build(&m, &a), &[], "");
        assert!(page.contains("on-chain slashings: 1"), "{page}");
        assert!(
            page.contains("<tr><td>17</td><td>3</td><td>proposer</td><td>baseline</td></tr>"),
            "{page}"
        );
        // A one-line verdict under each plot.
        assert!(
            html.contains("<p class=verdict>Lowest epoch inclusion: dv0 88% (epoch 2).</p>"),
            "{html}"
        );
        assert!(html.contains(
            "<p class=verdict>Head agreement 75%; finality delay max 3 epochs, 2 at the end; \
             3 reorg(s), deepest 2 block(s).</p>"
        ));
        assert_eq!(html.matches("<p class=verdict>").count(), 4);
        // Points carry markers; the epoch axis has whole-number labels only.
        let svg = std::fs::read_to_string(dir.path().join("inclusion_rate.svg")).unwrap();
        assert!(svg.contains("<circle"), "no markers");
        // (plotters writes each label on a line of its own.)
        let labels: Vec<&str> = svg.lines().filter(|l| l.len() < 8).collect();
        assert!(
            !labels.contains(&"1.5"),
            "fractional epoch label: {labels:?}"
        );
        if font_ready() {
            assert!(labels.contains(&"2"), "no epoch label 2: {labels:?}");
            assert!(html.contains("<svg"));
            for f in ["inclusion_rate", "inclusion_distance", "chain_progress"] {
                let png = std::fs::read(dir.path().join(format!("{f}.png"))).unwrap();
                assert_eq!(&png[1..4], b"PNG");
                assert!(dir.path().join(format!("{f}.svg")).exists());
            }
        }
    }
}
