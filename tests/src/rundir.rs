//! A recorded run as dvlab's run directory (`raw/*.csv` + `meta.json`, written with
//! [`dvlab::data::synthetic::Builder`], the one definition of that format), and the analysis of
//! it by dvlab's own analyser (`dvlab report DIR`, the polars pipeline every devnet run uses).
//!
//! The harness thus does not compute inclusion rates and distances, proposal and sync
//! figures, fault windows or the slashing audit itself: dvlab does, and the harness reads them
//! back from `report.json` as [`Analysis`] (a plain type: this crate's release binaries do not
//! compile polars). What dvlab does not compute — BLS verification of everything on chain,
//! tracker agreement, aggregation duties — stays in the harness ([`crate::analysis`],
//! [`crate::remote`]).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use dvlab::{
    analyse::Analysis,
    data::{
        synthetic::Builder, BeaconNodeMeta, DutyRow, DvNodeMeta, FaultWindow, GroupMeta, RunMeta,
    },
};
use dvnode::eth::types::{Preset, Root, Slot};
use tree_hash::TreeHash;

use crate::{chain::ChainRecord, dutylog::DutyLog};

/// What dvlab needs to know about a run besides its chain.
#[derive(Clone, Debug)]
pub struct RunFacts<'a> {
    /// Run name.
    pub run: String,
    /// Genesis UNIX time.
    pub genesis_time: u64,
    /// Seconds per slot.
    pub seconds_per_slot: u64,
    /// First and last (inclusive) slot of the analysed duties.
    pub window: (Slot, Slot),
    /// Validator groups.
    pub groups: Vec<GroupMeta>,
    /// The beacon node (name, REST URL).
    pub beacon_node: BeaconNodeMeta,
    /// dvnodes with their duty logs.
    pub dvnodes: Vec<(DvNodeMeta, &'a DutyLog)>,
    /// Fault windows (e.g. the time a dvnode was killed).
    pub faults: Vec<FaultWindow>,
    /// Head samples of the beacon node: (UNIX time, head slot, finalized epoch).
    pub heads: Vec<(u64, Slot, u64)>,
}

fn hex_root(r: &Root) -> String {
    format!("0x{}", hex::encode(r.0))
}

/// The rows of a run: the chain record's committees, proposer duties, canonical blocks (with
/// the inclusions, votes, sync-committee bits and slashings they carry) and the facts.
pub fn rows<P: Preset>(chain: &ChainRecord<P>, facts: &RunFacts<'_>) -> Builder {
    let mut b = Builder::default();
    for c in chain.committees.values().flatten() {
        for v in &c.validators {
            b.duty_in(c.slot, c.index, *v);
        }
    }
    for (slot, v) in &chain.proposers {
        b.proposer(*slot, *v);
    }
    // Block roots: each block's root is its child's parent root; the last one is hashed.
    let slots: Vec<Slot> = chain.blocks.keys().copied().collect();
    let mut roots: BTreeMap<Slot, Root> = BTreeMap::new();
    for (i, slot) in slots.iter().enumerate() {
        let root = match slots.get(i + 1) {
            Some(next) => chain.blocks[next].message.parent_root,
            None => Root(chain.blocks[slot].message.tree_hash_root().0),
        };
        roots.insert(*slot, root);
    }
    let root_at = |slot: Slot| roots.range(..=slot).next_back().map(|(_, r)| *r);
    for (&slot, block) in &chain.blocks {
        let body = &block.message.body;
        b.block(slot, block.message.proposer_index, &hex_root(&roots[&slot]));
        for ps in body.proposer_slashings.iter() {
            b.slashing(slot, ps.signed_header_1.message.proposer_index, "proposer");
        }
        for a in body.attester_slashings.iter() {
            for v in a.attestation_1.attesting_indices.iter() {
                if a.attestation_2.attesting_indices.contains(v) {
                    b.slashing(slot, *v, "attester");
                }
            }
        }
        for att in body.attestations.iter() {
            let data = &att.data;
            let Some(committee) = chain.committee(data.slot, data.index) else {
                continue;
            };
            let head_ok = root_at(data.slot) == Some(data.beacon_block_root);
            let target_ok =
                root_at(data.target.epoch * chain.slots_per_epoch) == Some(data.target.root);
            let data_root = hex_root(&Root(data.tree_hash_root().0));
            for (pos, v) in committee.validators.iter().enumerate() {
                if att.aggregation_bits.get(pos).unwrap_or(false) {
                    b.inclusion(*v, data.slot, slot, head_ok, target_ok);
                    b.vote(*v, data.source.epoch, data.target.epoch, &data_root);
                }
            }
        }
        // The aggregate in the block at `slot` is signed by its period's sync committee, for
        // the previous slot.
        let period = chain.period_of(chain.epoch_of(slot));
        if let (Some(committee), true) = (chain.sync_committees.get(&period), slot > 0) {
            let bits = &body.sync_aggregate.sync_committee_bits;
            for (pos, v) in committee.iter().enumerate() {
                b.sync(slot - 1, *v, bits.get(pos).unwrap_or(false));
            }
        }
    }
    for (time, head, finalized) in &facts.heads {
        b.head(*time, &facts.beacon_node.name, *head, *finalized, 0);
    }
    for (node, log) in &facts.dvnodes {
        for r in &log.records {
            b.duty_record(DutyRow::from_report(&node.name, r));
        }
    }
    for f in &facts.faults {
        b.fault(f.clone());
    }
    b
}

/// Writes the run directory `dir` (`raw/*.csv`, `meta.json`) of `chain` and `facts`.
pub fn write<P: Preset>(dir: &Path, chain: &ChainRecord<P>, facts: &RunFacts<'_>) -> Result<()> {
    let meta = RunMeta {
        run: facts.run.clone(),
        genesis_time: facts.genesis_time,
        seconds_per_slot: facts.seconds_per_slot,
        slots_per_epoch: chain.slots_per_epoch,
        first_slot: facts.window.0,
        last_slot: facts.window.1,
        groups: facts.groups.clone(),
        beacon_nodes: vec![facts.beacon_node.clone()],
        assertions: BTreeMap::new(),
        dvnodes: facts.dvnodes.iter().map(|(m, _)| m.clone()).collect(),
        remote_signer: vec![],
    };
    rows(chain, facts)
        .save(&meta, dir)
        .with_context(|| format!("writing the run directory {}", dir.display()))
}

/// The dvlab binary: `explicit`, else `$DVLAB_BIN`, else the debug build beside this
/// executable's release directory (`target/debug/dvlab`), else `dvlab` on `PATH`.
pub fn dvlab_bin(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("DVLAB_BIN") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("debug").join("dvlab")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "dvlab".into())
}

/// Runs `dvlab report DIR` (analysis, `report.json`, plots, `report.html`; its output goes
/// to `DIR/dvlab-report.log`) and reads the analysis back from `report.json`. A failed
/// assertion (exit code 1) still yields the analysis; the caller checks what it needs.
pub fn analyse(dvlab: &Path, dir: &Path) -> Result<Analysis> {
    let log = dir.join("dvlab-report.log");
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let status = Command::new(dvlab)
        .arg("report")
        .arg(dir)
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| {
            format!(
                "running `{} report` (build it with `cargo build -p dvlab`, or pass --dvlab-bin / DVLAB_BIN)",
                dvlab.display()
            )
        })?;
    if !matches!(status.code(), Some(0 | 1)) {
        bail!(
            "`{} report {}` failed ({status}); see {}",
            dvlab.display(),
            dir.display(),
            log.display()
        );
    }
    let path = dir.join("report.json");
    serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::fixture::three_blocks;
    use dvlab::data::RawData;

    fn group(name: &str, first: u64, count: u64) -> GroupMeta {
        GroupMeta {
            name: name.into(),
            first,
            count,
            distributed: false,
            indices: Vec::new(),
        }
    }

    /// The figures the harness used to compute itself, now from dvlab's analysis of the run
    /// directory written from a chain record.
    #[test]
    fn dvlab_analyses_a_recorded_chain() {
        // Slots 11..15 of epoch 1 have no votes: missed.
        let rec = three_blocks();
        let facts = |window: (Slot, Slot)| RunFacts {
            run: "t".into(),
            genesis_time: 1000,
            seconds_per_slot: 4,
            window,
            // Validators 0..6 attest at slots 8, 9, 10; 9..12 propose at 9, 10, 11; 15 is in
            // no sync committee.
            groups: vec![group("a", 0, 6), group("p", 9, 3), group("z", 15, 1)],
            beacon_node: BeaconNodeMeta {
                name: "bn".into(),
                api_url: String::new(),
            },
            dvnodes: vec![],
            faults: vec![],
            heads: vec![(1100, 12, 0)],
        };
        let analyse = |window| {
            let dir = tempfile::tempdir().unwrap();
            write(dir.path(), &rec, &facts(window)).unwrap();
            let (meta, raw) = RawData::load(dir.path()).unwrap();
            dvlab::analyse::analyse(&meta, &raw).unwrap()
        };

        let a = analyse((8, 15));
        let g = &a.groups["a"];
        assert_eq!((g.attestation_duties, g.attestations_included), (6, 5));
        assert!((g.inclusion_rate.unwrap() - 5.0 / 6.0).abs() < 1e-9);
        assert!((g.inclusion_distance.mean.unwrap() - 6.0 / 5.0).abs() < 1e-9);
        assert_eq!(g.inclusion_distance.p50, Some(1.0));
        // Linear interpolation between the 4th and 5th of 1, 1, 1, 1, 2.
        assert!((g.inclusion_distance.p99.unwrap() - 1.96).abs() < 1e-9);
        assert_eq!(g.distance_histogram, BTreeMap::from([(1, 4), (2, 1)]));
        // Votes for the canonical head: slot 8's and 10's name root [9; 32], not a block here.
        assert_eq!(g.correct_head_rate, Some(0.0));
        assert_eq!(a.missed_duties.len(), 0, "no DV group");
        // Proposals of 9, 10, 11 at slots 9, 10, 11: blocks only at 9 and 11.
        let p = &a.groups["p"];
        assert_eq!((p.proposals_expected, p.proposals_included), (3, 2));
        // Sync: the committee is validators 0..4 twice, all in group a; blocks 9, 11 and 12
        // (signing slots 8, 10, 11) carry bits 0 and 1, none, and 0: 3 of 3 × 8 positions.
        assert_eq!(g.sync_duties, 24);
        assert!((g.sync_participation.unwrap() - 3.0 / 24.0).abs() < 1e-9);
        assert_eq!(a.groups["z"].sync_participation, None);
        assert_eq!(a.finalized_epoch, Some(0));
        assert!(a.slashing_audit.violations.is_empty());
        assert!(a.slashing_audit.onchain_slashings.is_empty());
        // Distinct votes of validators 0, 1, 2, 4, 5 (slot 12 re-includes 5's) and 3 blocks.
        assert_eq!(a.slashing_audit.messages_checked, 8);

        // Epoch 2 has committees but no blocks: all missed. Slots past the recorded committees
        // have no duties.
        let a = analyse((8, 47));
        let g = &a.groups["a"];
        assert_eq!((g.attestation_duties, g.attestations_included), (12, 5));
        let per_epoch: Vec<(u64, u64, u64)> = a
            .epochs
            .iter()
            .filter(|e| e.group == "a")
            .map(|e| (e.epoch, e.duties, e.included))
            .collect();
        assert_eq!(per_epoch, vec![(1, 6, 5), (2, 6, 0)]);
    }
}
