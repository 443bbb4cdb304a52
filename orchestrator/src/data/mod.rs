//! Raw run data: the frames `collect` fills, saved as CSV beside `meta.json` so
//! `dvlab report DIR` can re-render without the devnet; and the fault log
//! ([`fault_log`]: `faults.jsonl`) the executor writes and the run reads back into the
//! `faults` frame.

pub mod fault_log;

pub use fault_log::{fault_windows_from_log, largest_group, Effect, FaultLogLine, LogPhase, Scope};

#[cfg(feature = "lab")]
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
#[cfg(feature = "lab")]
use std::path::Path;

/// A validator group as the analysis sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMeta {
    /// Name.
    pub name: String,
    /// First validator index.
    pub first: u64,
    /// Number of validators.
    pub count: u64,
    /// Whether it is a DV cluster.
    pub distributed: bool,
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
}

/// One closed duty of a dvnode's duty log.
#[derive(Debug, Clone, PartialEq)]
pub struct DutyRow {
    /// dvnode container name.
    pub node: String,
    /// Slot of the duty.
    pub slot: u64,
    /// `attester`, `proposer`, `randao`, `sync_message`.
    pub kind: String,
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
/// consensus_seconds, shares); `faults` — executed fault windows (fault, kind, targets,
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
    df!(
        "fault" => f.iter().map(|w| w.fault).collect::<Vec<_>>(),
        "kind" => f.iter().map(|w| w.kind.clone()).collect::<Vec<_>>(),
        "targets" => f.iter().map(|w| w.targets.clone()).collect::<Vec<_>>(),
        "detail" => f.iter().map(|w| w.detail.clone()).collect::<Vec<_>>(),
        "start_time" => f.iter().map(|w| w.start_time).collect::<Vec<_>>(),
        "start_slot" => f.iter().map(|w| w.start_slot).collect::<Vec<_>>(),
        "end_time" => f.iter().map(|w| w.end_time).collect::<Vec<_>>(),
        "end_slot" => f.iter().map(|w| w.end_slot).collect::<Vec<_>>(),
        "error" => f.iter().map(|w| w.error.clone()).collect::<Vec<_>>()
    )
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

/// Row-wise construction of [`RawData`], used by `collect` and by tests.
#[cfg(feature = "lab")]
pub mod synthetic {
    use super::*;

    /// Accumulates rows, then [`Builder::build`]s the frames.
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

        /// Builds the frames.
        pub fn build(self) -> PolarsResult<RawData> {
            let n = self.inc_validator.len();
            let d = &self.duty_rows;
            let duty_log = df!(
                "node" => d.iter().map(|r| r.node.clone()).collect::<Vec<_>>(),
                "slot" => d.iter().map(|r| r.slot).collect::<Vec<_>>(),
                "kind" => d.iter().map(|r| r.kind.clone()).collect::<Vec<_>>(),
                "outcome" => d.iter().map(|r| r.outcome.clone()).collect::<Vec<_>>(),
                "detail" => d.iter().map(|r| r.detail.clone()).collect::<Vec<_>>(),
                "consensus_round" => d.iter().map(|r| r.consensus_round).collect::<Vec<_>>(),
                "consensus_seconds" => d.iter().map(|r| r.consensus_seconds).collect::<Vec<_>>(),
                "shares" => d.iter().map(|r| r.shares.clone()).collect::<Vec<_>>()
            )?;
            let faults = fault_frame(&self.fault_rows)?;
            Ok(RawData {
                duties: df!(
                    "slot" => self.duty_slot,
                    "committee_index" => self.duty_committee,
                    "validator" => self.duty_validator
                )?,
                inclusions: df!(
                    "validator" => self.inc_validator,
                    "slot" => self.inc_slot,
                    "inclusion_slot" => self.inc_at,
                    "head_ok" => self.inc_head,
                    "target_ok" => self.inc_target,
                    "source_ok" => vec![true; n]
                )?,
                proposer_duties: df!("slot" => self.prop_slot, "validator" => self.prop_validator)?,
                blocks: df!(
                    "slot" => self.block_slot,
                    "proposer" => self.block_proposer,
                    "root" => self.block_root
                )?,
                blocks_seen: df!(
                    "bn" => self.seen_bn,
                    "slot" => self.seen_slot,
                    "proposer" => self.seen_proposer,
                    "root" => self.seen_root,
                    "parent" => self.seen_parent
                )?,
                sync: df!(
                    "slot" => self.sync_slot,
                    "validator" => self.sync_validator,
                    "participated" => self.sync_ok
                )?,
                heads: df!(
                    "time" => self.head_time,
                    "bn" => self.head_bn,
                    "head_slot" => self.head_slot,
                    "finalized_epoch" => self.head_fin,
                    "peers" => self.head_peers,
                    "head_root" => self.head_root
                )?,
                votes: df!(
                    "validator" => self.vote_validator,
                    "source_epoch" => self.vote_source,
                    "target_epoch" => self.vote_target,
                    "data_root" => self.vote_root
                )?,
                duty_log,
                faults,
                slashings: df!(
                    "slot" => self.slash_slot,
                    "validator" => self.slash_validator,
                    "kind" => self.slash_kind
                )?,
            })
        }
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
    }
}
