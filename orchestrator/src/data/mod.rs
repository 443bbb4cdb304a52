//! Raw run data: the frames `collect` fills, saved as CSV beside `meta.json` so
//! `dvlab report DIR` can re-render without the devnet; and the fault log
//! ([`fault_log`]: `faults.jsonl`) the executor writes and the run reads back into the
//! `faults` frame.

pub mod fault_log;

pub use fault_log::{
    fault_windows_from_log, partition_sides, Effect, FaultLogLine, LogPhase, PartitionSide, Scope,
};

#[cfg(feature = "lab")]
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
#[cfg(feature = "lab")]
use std::path::Path;

/// A validator group as the analysis sees it: the index range `first..first + count` of a
/// devnet's group, or any set of indices (`indices`, e.g. `dvlab analyze --validators FILE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMeta {
    /// Name.
    pub name: String,
    /// First validator index.
    pub first: u64,
    /// Number of validators.
    pub count: u64,
    /// Whether it is a DV cluster.
    pub distributed: bool,
    /// The members when they are not one range (sorted, distinct; `first`/`count` are then
    /// their lowest index and number). Empty: the range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indices: Vec<u64>,
}

impl GroupMeta {
    /// The group of the `count` validators from index `first` on.
    pub fn range(name: &str, first: u64, count: u64, distributed: bool) -> Self {
        GroupMeta {
            name: name.to_string(),
            first,
            count,
            distributed,
            indices: Vec::new(),
        }
    }

    /// A group of the indices `members` (a range when they are consecutive).
    pub fn of(name: &str, members: &std::collections::BTreeSet<u64>, distributed: bool) -> Self {
        let first = members.first().copied().unwrap_or(0);
        let count = members.len() as u64;
        let consecutive = members.last().is_none_or(|l| l - first + 1 == count);
        GroupMeta {
            name: name.to_string(),
            first,
            count,
            distributed,
            indices: if consecutive {
                Vec::new()
            } else {
                members.iter().copied().collect()
            },
        }
    }

    /// Its validator indices, ascending.
    pub fn members(&self) -> Box<dyn Iterator<Item = u64> + '_> {
        if self.indices.is_empty() {
            Box::new(self.first..self.first + self.count)
        } else {
            Box::new(self.indices.iter().copied())
        }
    }

    /// Whether validator `v` belongs to it.
    pub fn contains(&self, v: u64) -> bool {
        if self.indices.is_empty() {
            v >= self.first && v < self.first + self.count
        } else {
            self.indices.binary_search(&v).is_ok()
        }
    }
}

/// A beacon node of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconNodeMeta {
    /// Spec name.
    pub name: String,
    /// REST API URL on the host.
    pub api_url: String,
}

/// A dvnode of a DV cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DvNodeMeta {
    /// Container name.
    pub name: String,
    /// Cluster (group) name.
    pub cluster: String,
    /// Node index in the cluster (0-based; its share index is `index + 1`).
    pub index: u64,
    /// Host URL of its `/metrics` endpoint, if published.
    #[serde(default)]
    pub metrics_url: Option<String>,
}

/// What the analysis and report need to know about the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run name.
    pub run: String,
    /// Genesis UNIX time.
    pub genesis_time: u64,
    /// Seconds per slot.
    pub seconds_per_slot: u64,
    /// Slots per epoch.
    pub slots_per_epoch: u64,
    /// First analysed slot.
    pub first_slot: u64,
    /// Last analysed slot (duties), inclusive.
    pub last_slot: u64,
    /// Validator groups.
    pub groups: Vec<GroupMeta>,
    /// Beacon nodes.
    pub beacon_nodes: Vec<BeaconNodeMeta>,
    /// Assertions (metric → expression).
    pub assertions: BTreeMap<String, String>,
    /// dvnodes of the DV clusters.
    #[serde(default)]
    pub dvnodes: Vec<DvNodeMeta>,
    /// DV clusters whose devnet runs them in remote-signer mode (`signer: remote`, or `dvlab
    /// run --signer remote`). Empty in a `meta.json` written before dvlab recorded it and in
    /// `dvlab analyze`: the report then knows such a cluster by its duty logs alone
    /// (`dvlab::report::remote_clusters`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_signer: Vec<String>,
}

impl RunMeta {
    /// dvnode container name → its cluster's name (what the duty logs are grouped by).
    pub fn cluster_of_dvnode(&self) -> HashMap<&str, &str> {
        self.dvnodes
            .iter()
            .map(|n| (n.name.as_str(), n.cluster.as_str()))
            .collect()
    }
}

/// One closed duty of a dvnode's duty log.
#[derive(Debug, Clone, PartialEq)]
pub struct DutyRow {
    /// dvnode container name.
    pub node: String,
    /// Slot of the duty.
    pub slot: u64,
    /// `attester`, `proposer`, `randao`, `sync_message`, `aggregation`, `sync_contribution`, …
    /// ([`dvnode::duty::DutyKind`]).
    pub kind: String,
    /// The DV's validator index, when the log line names one.
    pub validator: Option<u64>,
    /// `success` or the tracker's failure reason.
    pub outcome: String,
    /// Failure detail.
    pub detail: Option<String>,
    /// Deciding consensus round.
    pub consensus_round: Option<u64>,
    /// Consensus duration in seconds.
    pub consensus_seconds: Option<f64>,
    /// Share indices whose partial signatures the node received, comma-separated.
    pub shares: String,
}

impl DutyRow {
    /// The row of one closed duty `r` of dvnode `node`'s duty log.
    pub fn from_report(node: &str, r: &dvnode::tracker::DutyReport) -> DutyRow {
        DutyRow {
            node: node.to_string(),
            slot: r.duty.slot,
            kind: r.duty.kind.as_str().to_string(),
            validator: r.validator_index,
            outcome: r.outcome.clone(),
            detail: r.detail.clone(),
            consensus_round: r.consensus_round,
            consensus_seconds: r.consensus_seconds,
            shares: r
                .shares
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// One executed fault occurrence (from the executor's `faults.jsonl`).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    /// Fault id within the run's timeline.
    pub fault: u64,
    /// Kind (`partition`, `crash`, …).
    pub kind: String,
    /// Targets (container short names), comma-separated.
    pub targets: String,
    /// Short description of the parameters, e.g. `dv0-0,dv0-1 | dv0-2,dv0-3` or `200ms`.
    pub detail: String,
    /// Wall time the fault started (UNIX seconds).
    pub start_time: f64,
    /// Slot the fault started in.
    pub start_slot: u64,
    /// Wall time the fault ended; `None`: lasted to the end of the run.
    pub end_time: Option<f64>,
    /// Slot the fault ended in.
    pub end_slot: Option<u64>,
    /// Errors the executor reported for it.
    pub error: Option<String>,
}

/// The raw frames of a run.
///
/// Columns: `duties` (slot, committee_index, validator); `inclusions` (validator, slot,
/// inclusion_slot, head_ok, target_ok, source_ok); `proposer_duties` (slot, validator);
/// `blocks` — canonical chain (slot, proposer, root); `blocks_seen` — every block any BN
/// saw (bn, slot, proposer, root, parent; parent empty when unknown); `sync` (slot,
/// validator, participated); `heads` (time, bn, head_slot, finalized_epoch, peers,
/// head_root; head_root empty when unknown); `votes` — attestations any BN saw, per
/// validator (validator, source_epoch, target_epoch, data_root); `duty_log` — every
/// dvnode's closed duties (node, slot, kind, outcome, detail, consensus_round,
/// consensus_seconds, shares, validator — null when the line names none); `faults` — executed fault windows (fault, kind, targets,
/// detail, start_time, start_slot, end_time, end_slot, error); `slashings` — slashings
/// included in canonical blocks, one row per slashed validator (slot of the including
/// block, validator, kind `proposer` or `attester`).
#[cfg(feature = "lab")]
#[derive(Debug, Clone)]
pub struct RawData {
    /// Attestation duties.
    pub duties: DataFrame,
    /// On-chain inclusions, one row per validator and including block.
    pub inclusions: DataFrame,
    /// Expected proposers.
    pub proposer_duties: DataFrame,
    /// Canonical blocks.
    pub blocks: DataFrame,
    /// All blocks seen.
    pub blocks_seen: DataFrame,
    /// Sync-committee duties.
    pub sync: DataFrame,
    /// Beacon-node head/finality samples.
    pub heads: DataFrame,
    /// Signed attestation data per validator.
    pub votes: DataFrame,
    /// dvnode duty logs.
    pub duty_log: DataFrame,
    /// Executed fault windows.
    pub faults: DataFrame,
    /// Slashings included in canonical blocks.
    pub slashings: DataFrame,
}

#[cfg(feature = "lab")]
const FRAMES: [&str; 11] = [
    "duties",
    "inclusions",
    "proposer_duties",
    "blocks",
    "blocks_seen",
    "sync",
    "heads",
    "votes",
    "duty_log",
    "faults",
    "slashings",
];

/// Frames a run directory may lack (written by later versions); read as empty.
#[cfg(feature = "lab")]
const OPTIONAL_FRAMES: [&str; 3] = ["duty_log", "faults", "slashings"];

#[cfg(feature = "lab")]
impl RawData {
    fn frames_mut(&mut self) -> [&mut DataFrame; 11] {
        [
            &mut self.duties,
            &mut self.inclusions,
            &mut self.proposer_duties,
            &mut self.blocks,
            &mut self.blocks_seen,
            &mut self.sync,
            &mut self.heads,
            &mut self.votes,
            &mut self.duty_log,
            &mut self.faults,
            &mut self.slashings,
        ]
    }

    /// Writes `DIR/raw/<frame>.csv` and `DIR/meta.json`.
    pub fn save(&mut self, meta: &RunMeta, dir: &Path) -> anyhow::Result<()> {
        let raw = dir.join("raw");
        std::fs::create_dir_all(&raw)?;
        for (name, df) in FRAMES.iter().zip(self.frames_mut()) {
            let path = raw.join(format!("{name}.csv"));
            let mut f = std::fs::File::create(&path)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            CsvWriter::new(&mut f).finish(df)?;
        }
        std::fs::write(dir.join("meta.json"), serde_json::to_vec_pretty(meta)?)?;
        Ok(())
    }

    /// Reads what [`RawData::save`] wrote.
    pub fn load(dir: &Path) -> anyhow::Result<(RunMeta, RawData)> {
        let meta_path = dir.join("meta.json");
        let meta: RunMeta = serde_json::from_slice(
            &std::fs::read(&meta_path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", meta_path.display()))?,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", meta_path.display()))?;
        let mut data = empty()?;
        let schemas = empty()?;
        for ((name, df), schema_df) in FRAMES
            .iter()
            .zip(data.frames_mut())
            .zip(schemas.clone().frames_mut())
        {
            let path = dir.join("raw").join(format!("{name}.csv"));
            if OPTIONAL_FRAMES.contains(name) && !path.exists() {
                continue;
            }
            *df = read_frame(&path, schema_df)?;
        }
        Ok((meta, data))
    }
}

/// Reads one frame's CSV with the schema of `empty` (an empty frame of the current version).
/// Columns later versions added and the file lacks are filled with nulls, so a run directory
/// written by an older dvlab still loads.
#[cfg(feature = "lab")]
fn read_frame(path: &Path, empty: &DataFrame) -> anyhow::Result<DataFrame> {
    let cannot = |e: &dyn std::fmt::Display| anyhow::anyhow!("cannot read {}: {e}", path.display());
    let full = empty.schema();
    let header = std::fs::read_to_string(path).map_err(|e| cannot(&e))?;
    let header: Vec<&str> = header
        .lines()
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim_matches('"'))
        .collect();
    let mut schema = Schema::default();
    for name in &header {
        if let Some(dtype) = full.get(name) {
            schema.with_column((*name).into(), dtype.clone());
        }
    }
    let mut df = CsvReadOptions::default()
        .with_has_header(true)
        .with_schema(Some(Arc::new(schema)))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(|e| cannot(&e))?;
    let height = df.height();
    for (name, dtype) in full.iter() {
        if !header.contains(&name.as_str()) {
            df.with_column(Series::full_null(name.clone(), height, dtype).into())
                .map_err(|e| cannot(&e))?;
        }
    }
    df.select(full.iter_names().cloned())
        .map_err(|e| cannot(&e))
}

/// Empty frames with the right schemas.
#[cfg(feature = "lab")]
pub fn empty() -> PolarsResult<RawData> {
    synthetic::Builder::default().build()
}

/// The `faults` frame of executed fault windows.
#[cfg(feature = "lab")]
pub fn fault_frame(f: &[FaultWindow]) -> PolarsResult<DataFrame> {
    synthetic::frame(synthetic::fault_columns(f))
}

/// Reads the fault windows back from a `faults` frame.
#[cfg(feature = "lab")]
pub fn fault_windows(df: &DataFrame) -> PolarsResult<Vec<FaultWindow>> {
    let u = |name: &str| -> PolarsResult<Vec<Option<u64>>> {
        Ok(df
            .column(name)?
            .as_materialized_series()
            .cast(&DataType::UInt64)?
            .u64()?
            .iter()
            .collect())
    };
    let f = |name: &str| -> PolarsResult<Vec<Option<f64>>> {
        Ok(df
            .column(name)?
            .as_materialized_series()
            .cast(&DataType::Float64)?
            .f64()?
            .iter()
            .collect())
    };
    let s = |name: &str| -> PolarsResult<Vec<Option<String>>> {
        Ok(df
            .column(name)?
            .as_materialized_series()
            .cast(&DataType::String)?
            .str()?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect())
    };
    let (fault, kind, targets, detail) = (u("fault")?, s("kind")?, s("targets")?, s("detail")?);
    let (start_time, start_slot, end_time, end_slot, error) = (
        f("start_time")?,
        u("start_slot")?,
        f("end_time")?,
        u("end_slot")?,
        s("error")?,
    );
    Ok((0..df.height())
        .map(|i| FaultWindow {
            fault: fault[i].unwrap_or(0),
            kind: kind[i].clone().unwrap_or_default(),
            targets: targets[i].clone().unwrap_or_default(),
            detail: detail[i].clone().unwrap_or_default(),
            start_time: start_time[i].unwrap_or(0.0),
            start_slot: start_slot[i].unwrap_or(0),
            end_time: end_time[i],
            end_slot: end_slot[i],
            error: error[i].clone().filter(|e| !e.is_empty()),
        })
        .collect())
}

/// Row-wise construction of the raw frames, used by `collect`, by tests and (without polars)
/// by harnesses that record a chain themselves, e.g. `e2e-local`, which writes a run
/// directory with [`Builder::save`] for `dvlab report` to analyse.
pub mod synthetic {
    use super::*;

    /// Accumulates rows, then [`Builder::build`]s the frames or [`Builder::save`]s them.
    #[derive(Debug, Default, Clone)]
    pub struct Builder {
        duty_slot: Vec<u64>,
        duty_committee: Vec<u64>,
        duty_validator: Vec<u64>,
        inc_validator: Vec<u64>,
        inc_slot: Vec<u64>,
        inc_at: Vec<u64>,
        inc_head: Vec<bool>,
        inc_target: Vec<bool>,
        prop_slot: Vec<u64>,
        prop_validator: Vec<u64>,
        block_slot: Vec<u64>,
        block_proposer: Vec<u64>,
        block_root: Vec<String>,
        seen_bn: Vec<String>,
        seen_slot: Vec<u64>,
        seen_proposer: Vec<u64>,
        seen_root: Vec<String>,
        seen_parent: Vec<String>,
        sync_slot: Vec<u64>,
        sync_validator: Vec<u64>,
        sync_ok: Vec<bool>,
        head_time: Vec<u64>,
        head_bn: Vec<String>,
        head_slot: Vec<u64>,
        head_fin: Vec<u64>,
        head_peers: Vec<u64>,
        head_root: Vec<String>,
        vote_validator: Vec<u64>,
        vote_source: Vec<u64>,
        vote_target: Vec<u64>,
        vote_root: Vec<String>,
        duty_rows: Vec<DutyRow>,
        fault_rows: Vec<FaultWindow>,
        slash_slot: Vec<u64>,
        slash_validator: Vec<u64>,
        slash_kind: Vec<String>,
    }

    /// A run of 4 s slots and 8-slot epochs from genesis time 0 that analyses slots
    /// `first_slot..=last_slot` of the validator `groups`; no beacon nodes, dvnodes or
    /// assertions (fixtures add what they need).
    pub fn run_meta(first_slot: u64, last_slot: u64, groups: Vec<GroupMeta>) -> RunMeta {
        RunMeta {
            run: "t".into(),
            genesis_time: 0,
            seconds_per_slot: 4,
            slots_per_epoch: 8,
            first_slot,
            last_slot,
            groups,
            beacon_nodes: vec![],
            assertions: BTreeMap::new(),
            dvnodes: vec![],
            remote_signer: vec![],
        }
    }

    impl Builder {
        /// Validator `v` must attest at `slot` in committee `committee`.
        pub fn duty_in(&mut self, slot: u64, committee: u64, v: u64) {
            self.duty_slot.push(slot);
            self.duty_committee.push(committee);
            self.duty_validator.push(v);
        }
        /// Validator `v` must attest at `slot` (committee 0).
        pub fn duty(&mut self, slot: u64, v: u64) {
            self.duty_in(slot, 0, v);
        }
        /// `v`'s vote for `slot` was included in the block at `at`.
        pub fn inclusion(&mut self, v: u64, slot: u64, at: u64, head_ok: bool, target_ok: bool) {
            self.inc_validator.push(v);
            self.inc_slot.push(slot);
            self.inc_at.push(at);
            self.inc_head.push(head_ok);
            self.inc_target.push(target_ok);
        }
        /// `v` should propose at `slot`.
        pub fn proposer(&mut self, slot: u64, v: u64) {
            self.prop_slot.push(slot);
            self.prop_validator.push(v);
        }
        /// Canonical block at `slot` by `proposer`.
        pub fn block(&mut self, slot: u64, proposer: u64, root: &str) {
            self.block_slot.push(slot);
            self.block_proposer.push(proposer);
            self.block_root.push(root.to_string());
            self.block_seen(slot, proposer, root);
        }
        /// A block some BN saw (not necessarily canonical).
        pub fn block_seen(&mut self, slot: u64, proposer: u64, root: &str) {
            self.block_seen_by("", slot, proposer, root);
        }
        /// A block beacon node `bn` saw.
        pub fn block_seen_by(&mut self, bn: &str, slot: u64, proposer: u64, root: &str) {
            self.block_seen_with_parent(bn, slot, proposer, root, "");
        }
        /// A block beacon node `bn` saw, with its parent root (empty: unknown).
        pub fn block_seen_with_parent(
            &mut self,
            bn: &str,
            slot: u64,
            proposer: u64,
            root: &str,
            parent: &str,
        ) {
            self.seen_bn.push(bn.to_string());
            self.seen_slot.push(slot);
            self.seen_proposer.push(proposer);
            self.seen_root.push(root.to_string());
            self.seen_parent.push(parent.to_string());
        }
        /// Sync-committee member `v` at `slot` signed or not.
        pub fn sync(&mut self, slot: u64, v: u64, participated: bool) {
            self.sync_slot.push(slot);
            self.sync_validator.push(v);
            self.sync_ok.push(participated);
        }
        /// A head/finality sample of beacon node `bn` at UNIX `time`.
        pub fn head(&mut self, time: u64, bn: &str, slot: u64, finalized: u64, peers: u64) {
            self.head_at(time, bn, slot, "", finalized, peers);
        }
        /// A head/finality sample of beacon node `bn` at UNIX `time` with its head block root.
        pub fn head_at(
            &mut self,
            time: u64,
            bn: &str,
            slot: u64,
            root: &str,
            finalized: u64,
            peers: u64,
        ) {
            self.head_time.push(time);
            self.head_bn.push(bn.to_string());
            self.head_slot.push(slot);
            self.head_fin.push(finalized);
            self.head_peers.push(peers);
            self.head_root.push(root.to_string());
        }
        /// Validator `v` signed attestation data `root` with `source → target`.
        pub fn vote(&mut self, v: u64, source: u64, target: u64, root: &str) {
            self.vote_validator.push(v);
            self.vote_source.push(source);
            self.vote_target.push(target);
            self.vote_root.push(root.to_string());
        }

        /// A closed duty of a dvnode's duty log.
        pub fn duty_record(&mut self, row: DutyRow) {
            self.duty_rows.push(row);
        }

        /// An executed fault window.
        pub fn fault(&mut self, w: FaultWindow) {
            self.fault_rows.push(w);
        }

        /// Validator `v` was slashed (`kind`: `proposer` or `attester`) by the canonical block
        /// at `slot`.
        pub fn slashing(&mut self, slot: u64, v: u64, kind: &str) {
            self.slash_slot.push(slot);
            self.slash_validator.push(v);
            self.slash_kind.push(kind.to_string());
        }

        /// Number of vote rows so far.
        pub fn votes_len(&self) -> usize {
            self.vote_validator.len()
        }

        /// The frames as named columns, in [`RawData`]'s order: the one definition of the
        /// raw frames' columns, for [`Builder::build`] and [`Builder::save`].
        fn frames(self) -> Vec<(&'static str, Vec<(&'static str, Col)>)> {
            use Col::*;
            let n = self.inc_validator.len();
            let d = self.duty_rows;
            vec![
                (
                    "duties",
                    vec![
                        ("slot", U64(self.duty_slot)),
                        ("committee_index", U64(self.duty_committee)),
                        ("validator", U64(self.duty_validator)),
                    ],
                ),
                (
                    "inclusions",
                    vec![
                        ("validator", U64(self.inc_validator)),
                        ("slot", U64(self.inc_slot)),
                        ("inclusion_slot", U64(self.inc_at)),
                        ("head_ok", Bool(self.inc_head)),
                        ("target_ok", Bool(self.inc_target)),
                        ("source_ok", Bool(vec![true; n])),
                    ],
                ),
                (
                    "proposer_duties",
                    vec![
                        ("slot", U64(self.prop_slot)),
                        ("validator", U64(self.prop_validator)),
                    ],
                ),
                (
                    "blocks",
                    vec![
                        ("slot", U64(self.block_slot)),
                        ("proposer", U64(self.block_proposer)),
                        ("root", Str(self.block_root)),
                    ],
                ),
                (
                    "blocks_seen",
                    vec![
                        ("bn", Str(self.seen_bn)),
                        ("slot", U64(self.seen_slot)),
                        ("proposer", U64(self.seen_proposer)),
                        ("root", Str(self.seen_root)),
                        ("parent", Str(self.seen_parent)),
                    ],
                ),
                (
                    "sync",
                    vec![
                        ("slot", U64(self.sync_slot)),
                        ("validator", U64(self.sync_validator)),
                        ("participated", Bool(self.sync_ok)),
                    ],
                ),
                (
                    "heads",
                    vec![
                        ("time", U64(self.head_time)),
                        ("bn", Str(self.head_bn)),
                        ("head_slot", U64(self.head_slot)),
                        ("finalized_epoch", U64(self.head_fin)),
                        ("peers", U64(self.head_peers)),
                        ("head_root", Str(self.head_root)),
                    ],
                ),
                (
                    "votes",
                    vec![
                        ("validator", U64(self.vote_validator)),
                        ("source_epoch", U64(self.vote_source)),
                        ("target_epoch", U64(self.vote_target)),
                        ("data_root", Str(self.vote_root)),
                    ],
                ),
                (
                    "duty_log",
                    vec![
                        ("node", Str(d.iter().map(|r| r.node.clone()).collect())),
                        ("slot", U64(d.iter().map(|r| r.slot).collect())),
                        ("kind", Str(d.iter().map(|r| r.kind.clone()).collect())),
                        (
                            "outcome",
                            Str(d.iter().map(|r| r.outcome.clone()).collect()),
                        ),
                        (
                            "detail",
                            OptStr(d.iter().map(|r| r.detail.clone()).collect()),
                        ),
                        (
                            "consensus_round",
                            OptU64(d.iter().map(|r| r.consensus_round).collect()),
                        ),
                        (
                            "consensus_seconds",
                            OptF64(d.iter().map(|r| r.consensus_seconds).collect()),
                        ),
                        ("shares", Str(d.iter().map(|r| r.shares.clone()).collect())),
                        ("validator", OptU64(d.iter().map(|r| r.validator).collect())),
                    ],
                ),
                ("faults", fault_columns(&self.fault_rows)),
                (
                    "slashings",
                    vec![
                        ("slot", U64(self.slash_slot)),
                        ("validator", U64(self.slash_validator)),
                        ("kind", Str(self.slash_kind)),
                    ],
                ),
            ]
        }

        /// Builds the frames.
        #[cfg(feature = "lab")]
        pub fn build(self) -> PolarsResult<RawData> {
            let mut frames = self
                .frames()
                .into_iter()
                .map(|(_, cols)| frame(cols))
                .collect::<PolarsResult<Vec<_>>>()?
                .into_iter();
            let mut next = || frames.next().expect("one frame per field");
            Ok(RawData {
                duties: next(),
                inclusions: next(),
                proposer_duties: next(),
                blocks: next(),
                blocks_seen: next(),
                sync: next(),
                heads: next(),
                votes: next(),
                duty_log: next(),
                faults: next(),
                slashings: next(),
            })
        }

        /// Writes `DIR/raw/<frame>.csv` and `DIR/meta.json` as [`RawData::save`] does, without
        /// polars: what [`RawData::load`] and `dvlab report DIR` read.
        pub fn save(self, meta: &RunMeta, dir: &std::path::Path) -> anyhow::Result<()> {
            let raw = dir.join("raw");
            std::fs::create_dir_all(&raw)?;
            for (name, cols) in self.frames() {
                let path = raw.join(format!("{name}.csv"));
                std::fs::write(&path, csv(&cols))
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            }
            std::fs::write(dir.join("meta.json"), serde_json::to_vec_pretty(meta)?)?;
            Ok(())
        }
    }

    /// One column of a raw frame.
    pub(super) enum Col {
        U64(Vec<u64>),
        OptU64(Vec<Option<u64>>),
        F64(Vec<f64>),
        OptF64(Vec<Option<f64>>),
        Bool(Vec<bool>),
        Str(Vec<String>),
        OptStr(Vec<Option<String>>),
    }

    impl Col {
        fn len(&self) -> usize {
            match self {
                Col::U64(v) => v.len(),
                Col::OptU64(v) => v.len(),
                Col::F64(v) => v.len(),
                Col::OptF64(v) => v.len(),
                Col::Bool(v) => v.len(),
                Col::Str(v) => v.len(),
                Col::OptStr(v) => v.len(),
            }
        }

        /// Row `i` as a CSV field (null: empty; strings quoted where CSV needs it and when
        /// empty, so that an empty string is not read back as null).
        fn field(&self, i: usize) -> String {
            let text = |s: &str| {
                if s.is_empty() || s.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s.to_string()
                }
            };
            match self {
                Col::U64(v) => v[i].to_string(),
                Col::OptU64(v) => v[i].map(|x| x.to_string()).unwrap_or_default(),
                Col::F64(v) => v[i].to_string(),
                Col::OptF64(v) => v[i].map(|x| x.to_string()).unwrap_or_default(),
                Col::Bool(v) => v[i].to_string(),
                Col::Str(v) => text(&v[i]),
                Col::OptStr(v) => v[i].as_deref().map(text).unwrap_or_default(),
            }
        }

        #[cfg(feature = "lab")]
        fn series(self, name: &str) -> Column {
            let name = PlSmallStr::from(name);
            match self {
                Col::U64(v) => Column::new(name, v),
                Col::OptU64(v) => Column::new(name, v),
                Col::F64(v) => Column::new(name, v),
                Col::OptF64(v) => Column::new(name, v),
                Col::Bool(v) => Column::new(name, v),
                Col::Str(v) => Column::new(name, v),
                Col::OptStr(v) => Column::new(name, v),
            }
        }
    }

    /// The columns of the `faults` frame.
    pub(super) fn fault_columns(f: &[FaultWindow]) -> Vec<(&'static str, Col)> {
        use Col::*;
        vec![
            ("fault", U64(f.iter().map(|w| w.fault).collect())),
            ("kind", Str(f.iter().map(|w| w.kind.clone()).collect())),
            (
                "targets",
                Str(f.iter().map(|w| w.targets.clone()).collect()),
            ),
            ("detail", Str(f.iter().map(|w| w.detail.clone()).collect())),
            ("start_time", F64(f.iter().map(|w| w.start_time).collect())),
            ("start_slot", U64(f.iter().map(|w| w.start_slot).collect())),
            ("end_time", OptF64(f.iter().map(|w| w.end_time).collect())),
            ("end_slot", OptU64(f.iter().map(|w| w.end_slot).collect())),
            ("error", OptStr(f.iter().map(|w| w.error.clone()).collect())),
        ]
    }

    /// A frame of `cols`.
    #[cfg(feature = "lab")]
    pub(super) fn frame(cols: Vec<(&'static str, Col)>) -> PolarsResult<DataFrame> {
        DataFrame::new_infer_height(cols.into_iter().map(|(n, c)| c.series(n)).collect())
    }

    /// `cols` as CSV text with a header line.
    fn csv(cols: &[(&'static str, Col)]) -> String {
        let mut out = cols.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(",");
        out.push('\n');
        for i in 0..cols.first().map_or(0, |(_, c)| c.len()) {
            let row: Vec<String> = cols.iter().map(|(_, c)| c.field(i)).collect();
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let mut b = synthetic::Builder::default();
        b.duty(3, 7);
        b.inclusion(7, 3, 4, true, false);
        b.head(10, "bn0", 4, 0, 1);
        b.vote(7, 0, 1, "0xab");
        b.duty_record(DutyRow {
            node: "dvlab-x-dv0-0".into(),
            slot: 9,
            kind: "attester".into(),
            validator: None,
            outcome: "no_consensus".into(),
            detail: Some("round timeout, then \"gave up\"".into()),
            consensus_round: None,
            consensus_seconds: None,
            shares: String::new(),
        });
        b.duty_record(DutyRow {
            node: "dvlab-x-dv0-0".into(),
            slot: 10,
            kind: "attester".into(),
            validator: Some(61),
            outcome: "success".into(),
            detail: None,
            consensus_round: Some(1),
            consensus_seconds: Some(0.25),
            shares: "1,2,4".into(),
        });
        b.fault(FaultWindow {
            fault: 1,
            kind: "partition".into(),
            targets: "dv0-0,dv0-1,dv0-2,dv0-3".into(),
            detail: "dv0-0,dv0-1 | dv0-2,dv0-3".into(),
            start_time: 100.5,
            start_slot: 24,
            end_time: None,
            end_slot: None,
            error: None,
        });
        b.slashing(12, 7, "proposer");
        b.slashing(12, 9, "attester");
        let mut raw = b.build().unwrap();
        let meta = RunMeta {
            run: "x".into(),
            genesis_time: 5,
            seconds_per_slot: 4,
            slots_per_epoch: 8,
            first_slot: 0,
            last_slot: 7,
            groups: vec![],
            beacon_nodes: vec![BeaconNodeMeta {
                name: "bn0".into(),
                api_url: "http://127.0.0.1:1".into(),
            }],
            assertions: BTreeMap::new(),
            dvnodes: vec![],
            remote_signer: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        raw.save(&meta, dir.path()).unwrap();
        let (m2, r2) = RawData::load(dir.path()).unwrap();
        assert_eq!(m2, meta);
        assert!(r2.inclusions.equals(&raw.inclusions));
        assert!(r2.votes.equals(&raw.votes));
        assert!(r2.blocks.equals(&raw.blocks));
        assert_eq!(r2.duties.height(), 1);
        assert!(r2.duty_log.equals_missing(&raw.duty_log), "{}", r2.duty_log);
        assert!(r2.faults.equals_missing(&raw.faults), "{}", r2.faults);
        assert_eq!(r2.slashings.height(), 2);
        assert!(r2.slashings.equals(&raw.slashings), "{}", r2.slashings);
        // A run directory written before duty logs or slashings were collected still loads,
        // with those frames empty but correctly typed.
        std::fs::remove_file(dir.path().join("raw/duty_log.csv")).unwrap();
        std::fs::remove_file(dir.path().join("raw/slashings.csv")).unwrap();
        let (_, r3) = RawData::load(dir.path()).unwrap();
        assert_eq!(r3.duty_log.height(), 0);
        assert_eq!(r3.slashings.height(), 0);
        assert_eq!(
            r3.slashings.schema(),
            empty().unwrap().slashings.schema(),
            "{}",
            r3.slashings
        );
        assert!(r3.votes.equals(&raw.votes));
        // Columns added later (heads.head_root) are null when an older file lacks them.
        std::fs::write(
            dir.path().join("raw/heads.csv"),
            "time,bn,head_slot,finalized_epoch,peers\n10,bn0,4,0,1\n",
        )
        .unwrap();
        let (_, r4) = RawData::load(dir.path()).unwrap();
        assert_eq!(r4.heads.schema(), raw.heads.schema());
        assert_eq!(r4.heads.height(), 1);
        assert_eq!(r4.heads.column("head_root").unwrap().null_count(), 1);
        // A duty log written before the validator column existed: the column is null.
        std::fs::write(
            dir.path().join("raw/duty_log.csv"),
            "node,slot,kind,outcome,detail,consensus_round,consensus_seconds,shares\nn,9,attester,success,,1,0.2,\"1,2\"\n",
        )
        .unwrap();
        let (_, r5) = RawData::load(dir.path()).unwrap();
        assert_eq!(r5.duty_log.schema(), raw.duty_log.schema());
        assert_eq!(r5.duty_log.column("validator").unwrap().null_count(), 1);
    }

    /// The polars-free writer (what harnesses without polars use) writes the format
    /// `RawData::load` reads: every frame loads back equal to the polars frames of the same rows.
    #[test]
    fn rows_saved_without_polars_load_as_the_frames() {
        let mut b = synthetic::Builder::default();
        b.duty_in(3, 1, 7);
        b.inclusion(7, 3, 4, true, false);
        b.proposer(3, 9);
        b.block(4, 9, "0xaa");
        b.block_seen_by("bn1", 4, 9, "0xbb");
        b.sync(3, 7, true);
        b.sync(3, 8, false);
        b.head(10, "bn0", 4, 0, 1);
        b.vote(7, 0, 1, "0xab");
        for (detail, round, seconds, shares) in [
            (
                Some("a \"quoted\", comma\nand a line".to_string()),
                None,
                None,
                "",
            ),
            (None, Some(2), Some(0.125), "1,2,4"),
            (Some(String::new()), Some(1), Some(3.0), "3"),
        ] {
            b.duty_record(DutyRow {
                node: "dvnode0".into(),
                slot: 9,
                kind: "attester".into(),
                validator: None,
                outcome: "success".into(),
                detail,
                consensus_round: round,
                consensus_seconds: seconds,
                shares: shares.into(),
            });
        }
        b.fault(FaultWindow {
            fault: 0,
            kind: "crash".into(),
            targets: "dvnode1".into(),
            detail: String::new(),
            start_time: 100.5,
            start_slot: 24,
            end_time: Some(132.0),
            end_slot: Some(32),
            error: Some("x, y".into()),
        });
        b.slashing(12, 7, "proposer");
        let meta = RunMeta {
            run: "rows".into(),
            genesis_time: 5,
            seconds_per_slot: 4,
            slots_per_epoch: 8,
            first_slot: 0,
            last_slot: 7,
            groups: vec![],
            beacon_nodes: vec![],
            assertions: BTreeMap::new(),
            dvnodes: vec![],
            remote_signer: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        b.clone().save(&meta, dir.path()).unwrap();
        let (m2, mut loaded) = RawData::load(dir.path()).unwrap();
        assert_eq!(m2, meta);
        let mut built = b.build().unwrap();
        for (name, (l, f)) in FRAMES
            .iter()
            .zip(loaded.frames_mut().into_iter().zip(built.frames_mut()))
        {
            assert!(l.height() > 0, "{name} is empty");
            assert!(l.equals_missing(f), "{name}: loaded {l}, built {f}");
        }
    }
}
