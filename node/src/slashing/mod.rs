//! EIP-3076 slashing protection.
//!
//! [`SlashingDb`] is a durable (every commit is fsync'd) [`redb`] database that records, per
//! distributed-validator BLS pubkey, every block and attestation this node agreed to sign, and
//! refuses anything that could get the validator slashed:
//!
//! - **blocks**: a second block at an already signed slot with a different signing root
//!   ([`SlashingError::DoubleBlockProposal`]), or a slot at or below the lowest recorded slot /
//!   imported watermark ([`SlashingError::BelowWatermark`]);
//! - **attestations**: a second vote for an already signed target with different data
//!   ([`SlashingError::DoubleVote`]), a vote that surrounds or is surrounded by a recorded one
//!   ([`SlashingError::SurroundingVote`], [`SlashingError::SurroundedVote`]), a source below the
//!   lowest recorded source, or a target at or below the lowest recorded target / watermark
//!   ([`SlashingError::BelowWatermark`]).
//!
//! Re-signing identical data (same slot, or same source and target, with the same non-zero signing
//! root) is reported as [`Safety::SameData`].
//!
//! # Storage layout and the surround check
//!
//! Attestations are keyed by `(pubkey, target_epoch)` with value `(source_epoch, signing_root)`.
//! Every record enters the table through the checks below, so the stored set never contains a
//! surround pair. For such a set, ordering by target also orders sources (non-decreasing): if
//! `t1 < t2` and `s1 > s2`, the second vote would surround the first. Hence
//!
//! - the new vote `(s, t)` is *surrounded* by a recorded one iff the first record with a target
//!   above `t` has a source below `s` (it has the smallest source of all records with target > t);
//! - it *surrounds* a recorded one iff the last record with a target below `t` has a source above
//!   `s` (it has the largest source of all records with target < t).
//!
//! Each check is therefore two B-tree seeks, O(log n) however many attestations are stored.
//!
//! Imports follow the minification approach of EIP-3076 (as Lighthouse does): imported history is
//! not copied record by record but folded into per-validator low watermarks (highest slot, highest
//! source and highest target seen in the interchange or already in the database). Anything at or
//! below a watermark is refused, which is safe regardless of what the imported history contained.

pub mod cli;
mod error;
pub mod interchange;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeSet,
    fmt,
    ops::Bound as RangeBound,
    path::{Path, PathBuf},
};

use redb::{Database, ReadableTable, TableDefinition};

pub use error::{LowerBound, SlashingError};
use interchange::{
    Interchange, InterchangeData, InterchangeMetadata, SignedAttestation, SignedBlock,
};

/// The interchange format version this implementation reads and writes.
pub const INTERCHANGE_FORMAT_VERSION: u64 = 5;

/// Version of the on-disk table layout, stored in the metadata table.
const SCHEMA_VERSION: u64 = 1;

/// A 48-byte compressed BLS public key.
type Pubkey = [u8; 48];
/// A 32-byte signing root.
type Root = [u8; 32];

/// Per-validator watermarks as stored: `(block_slot, attestation_source, attestation_target)`.
type WatermarkValue = (Option<u64>, Option<u64>, Option<u64>);

/// Metadata: `"schema_version"` (u64 LE) and `"genesis_validators_root"` (32 bytes).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Signed blocks: `(pubkey, slot)` → signing root (`None` when unknown).
const BLOCKS: TableDefinition<(Pubkey, u64), Option<Root>> = TableDefinition::new("signed_blocks");
/// Signed attestations: `(pubkey, target_epoch)` → `(source_epoch, signing root)`.
const ATTESTATIONS: TableDefinition<(Pubkey, u64), (u64, Option<Root>)> =
    TableDefinition::new("signed_attestations");
/// Known validators and their import watermarks: pubkey → `(block_slot, att_source, att_target)`.
const VALIDATORS: TableDefinition<Pubkey, WatermarkValue> = TableDefinition::new("validators");

const META_SCHEMA_VERSION: &str = "schema_version";
const META_GVR: &str = "genesis_validators_root";

/// Outcome of a successful slashing check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Safety {
    /// The message is new and safe to sign (and, for `check_and_insert_*`, is now recorded).
    Valid,
    /// Exactly this message (same non-zero signing root) was signed before; re-signing is safe.
    SameData,
}

/// Summary of an [`SlashingDb::import_interchange`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    /// Number of distinct validator pubkeys in the interchange.
    pub validators: usize,
    /// Number of signed block records read.
    pub blocks: usize,
    /// Number of signed attestation records read.
    pub attestations: usize,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} validator(s), {} signed block(s), {} signed attestation(s)",
            self.validators, self.blocks, self.attestations
        )
    }
}

/// Per-validator low watermarks set by imports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Watermarks {
    block_slot: Option<u64>,
    att_source: Option<u64>,
    att_target: Option<u64>,
}

impl Watermarks {
    fn from_value(v: WatermarkValue) -> Self {
        Watermarks {
            block_slot: v.0,
            att_source: v.1,
            att_target: v.2,
        }
    }

    fn to_value(self) -> WatermarkValue {
        (self.block_slot, self.att_source, self.att_target)
    }
}

/// The larger of two optional bounds.
fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// An all-zero signing root means "unknown" in the interchange format; treat it as absent.
fn normalize_root(root: Option<Root>) -> Option<Root> {
    root.filter(|r| r.iter().any(|&b| b != 0))
}

/// The whole key range of one validator in a `(pubkey, u64)`-keyed table.
fn validator_range(pubkey: &Pubkey) -> std::ops::RangeInclusive<(Pubkey, u64)> {
    (*pubkey, 0)..=(*pubkey, u64::MAX)
}

fn load_watermarks(
    validators: &impl ReadableTable<Pubkey, WatermarkValue>,
    pubkey: &Pubkey,
) -> Result<Watermarks, SlashingError> {
    Ok(validators
        .get(pubkey)?
        .map(|g| Watermarks::from_value(g.value()))
        .unwrap_or_default())
}

/// Lowest and highest recorded block slot of a validator.
fn block_slot_bounds(
    blocks: &impl ReadableTable<(Pubkey, u64), Option<Root>>,
    pubkey: &Pubkey,
) -> Result<Option<(u64, u64)>, SlashingError> {
    let mut range = blocks.range(validator_range(pubkey))?;
    let Some(first) = range.next().transpose()? else {
        return Ok(None);
    };
    let min = first.0.value().1;
    let max = match range.next_back().transpose()? {
        Some(last) => last.0.value().1,
        None => min,
    };
    Ok(Some((min, max)))
}

/// First and last (by target) recorded attestation `(source, target)` of a validator. Because the
/// stored set has no surround pair (see the module docs), the first one has the lowest source and
/// target and the last one the highest.
#[allow(clippy::type_complexity)]
fn attestation_bounds(
    atts: &impl ReadableTable<(Pubkey, u64), (u64, Option<Root>)>,
    pubkey: &Pubkey,
) -> Result<Option<((u64, u64), (u64, u64))>, SlashingError> {
    let mut range = atts.range(validator_range(pubkey))?;
    let Some((k, v)) = range.next().transpose()? else {
        return Ok(None);
    };
    let first = (v.value().0, k.value().1);
    let last = match range.next_back().transpose()? {
        Some((k, v)) => (v.value().0, k.value().1),
        None => first,
    };
    Ok(Some((first, last)))
}

fn check_block_in(
    blocks: &impl ReadableTable<(Pubkey, u64), Option<Root>>,
    validators: &impl ReadableTable<Pubkey, WatermarkValue>,
    pubkey: &Pubkey,
    slot: u64,
    signing_root: Option<Root>,
) -> Result<Safety, SlashingError> {
    let signing_root = normalize_root(signing_root);
    if let Some(existing) = blocks.get((*pubkey, slot))? {
        return match (existing.value(), signing_root) {
            (Some(a), Some(b)) if a == b => Ok(Safety::SameData),
            _ => Err(SlashingError::DoubleBlockProposal { slot }),
        };
    }
    let lowest_recorded = block_slot_bounds(blocks, pubkey)?.map(|(min, _)| min);
    let watermark = load_watermarks(validators, pubkey)?.block_slot;
    if let Some(limit) = max_opt(lowest_recorded, watermark) {
        if slot <= limit {
            return Err(SlashingError::BelowWatermark {
                bound: LowerBound::BlockSlot,
                value: slot,
                limit,
            });
        }
    }
    Ok(Safety::Valid)
}

fn check_attestation_in(
    atts: &impl ReadableTable<(Pubkey, u64), (u64, Option<Root>)>,
    validators: &impl ReadableTable<Pubkey, WatermarkValue>,
    pubkey: &Pubkey,
    source: u64,
    target: u64,
    signing_root: Option<Root>,
) -> Result<Safety, SlashingError> {
    if source > target {
        return Err(SlashingError::SourceExceedsTarget {
            source_epoch: source,
            target_epoch: target,
        });
    }
    let signing_root = normalize_root(signing_root);

    // Double vote / same data: a record with the same target.
    if let Some(existing) = atts.get((*pubkey, target))? {
        let (existing_source, existing_root) = existing.value();
        if existing_source == source && existing_root.is_some() && existing_root == signing_root {
            return Ok(Safety::SameData);
        }
        return Err(SlashingError::DoubleVote {
            source_epoch: source,
            target_epoch: target,
            existing_source_epoch: existing_source,
        });
    }

    // Surrounded by a recorded vote: only the successor by target needs checking.
    let after = (
        RangeBound::Excluded((*pubkey, target)),
        RangeBound::Included((*pubkey, u64::MAX)),
    );
    if let Some((k, v)) = atts.range(after)?.next().transpose()? {
        let (existing_source, existing_target) = (v.value().0, k.value().1);
        if existing_source < source {
            return Err(SlashingError::SurroundedVote {
                source_epoch: source,
                target_epoch: target,
                existing_source_epoch: existing_source,
                existing_target_epoch: existing_target,
            });
        }
    }

    // Surrounding a recorded vote: only the predecessor by target needs checking.
    if let Some((k, v)) = atts
        .range((*pubkey, 0)..(*pubkey, target))?
        .next_back()
        .transpose()?
    {
        let (existing_source, existing_target) = (v.value().0, k.value().1);
        if existing_source > source {
            return Err(SlashingError::SurroundingVote {
                source_epoch: source,
                target_epoch: target,
                existing_source_epoch: existing_source,
                existing_target_epoch: existing_target,
            });
        }
    }

    // Lower bounds: lowest recorded vote and imported watermarks.
    let lowest = attestation_bounds(atts, pubkey)?.map(|(first, _)| first);
    let wm = load_watermarks(validators, pubkey)?;
    if let Some(limit) = max_opt(lowest.map(|(s, _)| s), wm.att_source) {
        if source < limit {
            return Err(SlashingError::BelowWatermark {
                bound: LowerBound::AttestationSource,
                value: source,
                limit,
            });
        }
    }
    if let Some(limit) = max_opt(lowest.map(|(_, t)| t), wm.att_target) {
        if target <= limit {
            return Err(SlashingError::BelowWatermark {
                bound: LowerBound::AttestationTarget,
                value: target,
                limit,
            });
        }
    }
    Ok(Safety::Valid)
}

/// Makes sure `pubkey` has a row in the validators table (so that it is exported).
fn register_validator(
    validators: &mut redb::Table<Pubkey, WatermarkValue>,
    pubkey: &Pubkey,
) -> Result<(), SlashingError> {
    if validators.get(pubkey)?.is_none() {
        validators.insert(pubkey, Watermarks::default().to_value())?;
    }
    Ok(())
}

/// The open tables of one write transaction.
struct WriteTables<'txn> {
    blocks: redb::Table<'txn, (Pubkey, u64), Option<Root>>,
    atts: redb::Table<'txn, (Pubkey, u64), (u64, Option<Root>)>,
    validators: redb::Table<'txn, Pubkey, WatermarkValue>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, SlashingError> {
        Ok(WriteTables {
            blocks: txn.open_table(BLOCKS)?,
            atts: txn.open_table(ATTESTATIONS)?,
            validators: txn.open_table(VALIDATORS)?,
        })
    }

    fn check_and_insert_block(
        &mut self,
        pubkey: &Pubkey,
        slot: u64,
        signing_root: Option<Root>,
    ) -> Result<Safety, SlashingError> {
        let safety = check_block_in(&self.blocks, &self.validators, pubkey, slot, signing_root)?;
        if safety == Safety::Valid {
            self.blocks
                .insert((*pubkey, slot), normalize_root(signing_root))?;
            register_validator(&mut self.validators, pubkey)?;
        }
        Ok(safety)
    }

    fn check_and_insert_attestation(
        &mut self,
        pubkey: &Pubkey,
        source: u64,
        target: u64,
        signing_root: Option<Root>,
    ) -> Result<Safety, SlashingError> {
        let safety = check_attestation_in(
            &self.atts,
            &self.validators,
            pubkey,
            source,
            target,
            signing_root,
        )?;
        if safety == Safety::Valid {
            self.atts
                .insert((*pubkey, target), (source, normalize_root(signing_root)))?;
            register_validator(&mut self.validators, pubkey)?;
        }
        Ok(safety)
    }

    /// Folds one interchange record into the validator's watermarks (minified import).
    fn import_record(&mut self, record: &InterchangeData) -> Result<(), SlashingError> {
        let pubkey = &record.pubkey;
        let mut wm = load_watermarks(&self.validators, pubkey)?;
        if let Some(max_slot) = record.signed_blocks.iter().map(|b| b.slot).max() {
            let recorded_max = block_slot_bounds(&self.blocks, pubkey)?.map(|(_, max)| max);
            wm.block_slot = max_opt(max_opt(wm.block_slot, recorded_max), Some(max_slot));
        }
        let atts = &record.signed_attestations;
        if let (Some(max_source), Some(max_target)) = (
            atts.iter().map(|a| a.source_epoch).max(),
            atts.iter().map(|a| a.target_epoch).max(),
        ) {
            let recorded_last = attestation_bounds(&self.atts, pubkey)?.map(|(_, last)| last);
            wm.att_source = max_opt(
                max_opt(wm.att_source, recorded_last.map(|(s, _)| s)),
                Some(max_source),
            );
            wm.att_target = max_opt(
                max_opt(wm.att_target, recorded_last.map(|(_, t)| t)),
                Some(max_target),
            );
        }
        self.validators.insert(pubkey, wm.to_value())?;
        Ok(())
    }
}

/// The EIP-3076 slashing protection database (see the module docs).
///
/// All methods take `&self`; the database is `Send + Sync` and serialises writers internally, so
/// a check-and-insert from one thread can never interleave with another's.
pub struct SlashingDb {
    db: Database,
    path: PathBuf,
}

impl fmt::Debug for SlashingDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlashingDb")
            .field("path", &self.path)
            .finish()
    }
}

impl SlashingDb {
    /// Opens the database at `path`, creating it (and its parent directory) if missing. A database
    /// left behind by a crash is recovered to its last committed state.
    pub fn open(path: &Path) -> Result<Self, SlashingError> {
        let open_err = |source: redb::Error| SlashingError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_err(redb::Error::Io(e)))?;
        }
        let db = Database::create(path).map_err(|e| open_err(e.into()))?;
        let this = SlashingDb {
            db,
            path: path.to_path_buf(),
        };
        this.init_schema().map_err(|e| match e {
            SlashingError::Db(source) => open_err(*source),
            other => other,
        })?;
        Ok(this)
    }

    /// A database held in memory only (nothing survives the process), for tests and the fuzzer.
    pub fn in_memory() -> Result<Self, SlashingError> {
        #[allow(unused_mut)]
        let mut builder = Database::builder();
        // Under the fuzzer (`--cfg fuzzing`, which also opens this redb knob): 1 MiB regions
        // instead of 4 GiB. redb writes its allocator state, sized by the region, on creation,
        // commit and drop; with coverage instrumentation a fresh database per input cost ~50 ms,
        // almost all of it there. The tables, transactions and every check above are the same.
        #[cfg(fuzzing)]
        builder.set_region_size(1 << 20);
        let db = builder.create_with_backend(redb::backends::InMemoryBackend::new())?;
        let this = SlashingDb {
            db,
            path: PathBuf::from(":memory:"),
        };
        this.init_schema()?;
        Ok(this)
    }

    /// Creates the tables and checks the schema version.
    fn init_schema(&self) -> Result<(), SlashingError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get(META_SCHEMA_VERSION)?.map(|g| g.value().to_vec());
            match stored {
                None => {
                    meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
                Some(bytes) => {
                    let version = <[u8; 8]>::try_from(bytes.as_slice()).map(u64::from_le_bytes);
                    if version.ok() != Some(SCHEMA_VERSION) {
                        return Err(SlashingError::from(redb::Error::Corrupted(format!(
                            "{}: unsupported slashing database schema version {:?} (expected {})",
                            self.path.display(),
                            bytes,
                            SCHEMA_VERSION
                        ))));
                    }
                }
            }
            txn.open_table(BLOCKS)?;
            txn.open_table(ATTESTATIONS)?;
            txn.open_table(VALIDATORS)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The path this database was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The genesis validators root this database is bound to, if set.
    pub fn genesis_validators_root(&self) -> Result<Option<[u8; 32]>, SlashingError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        read_gvr(&meta)
    }

    /// Binds the database to `gvr`. Setting the same value again is a no-op; a different value is
    /// refused with [`SlashingError::GenesisValidatorsRootMismatch`].
    pub fn set_genesis_validators_root(&self, gvr: [u8; 32]) -> Result<(), SlashingError> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            match read_gvr(&meta)? {
                Some(stored) if stored == gvr => return Ok(()),
                Some(stored) => {
                    return Err(SlashingError::GenesisValidatorsRootMismatch {
                        stored,
                        provided: gvr,
                    })
                }
                None => {
                    meta.insert(META_GVR, gvr.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Runs `f` on the tables of one write transaction and commits it (durably) if `f` succeeds
    /// and `commit` says so; otherwise nothing is written.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut WriteTables<'_>) -> Result<T, SlashingError>,
        commit: impl FnOnce(&T) -> bool,
    ) -> Result<T, SlashingError> {
        let txn = self.db.begin_write()?;
        let out = f(&mut WriteTables::open(&txn)?)?;
        if commit(&out) {
            txn.commit()?;
        }
        Ok(out)
    }

    /// Checks, without recording it, whether signing a block at `slot` is safe.
    pub fn check_block(
        &self,
        pubkey: &[u8; 48],
        slot: u64,
        signing_root: Option<[u8; 32]>,
    ) -> Result<Safety, SlashingError> {
        let txn = self.db.begin_read()?;
        let blocks = txn.open_table(BLOCKS)?;
        let validators = txn.open_table(VALIDATORS)?;
        check_block_in(&blocks, &validators, pubkey, slot, signing_root)
    }

    /// Checks a block and, if it is new and safe, records it — atomically, in one durable commit.
    /// When this returns `Ok(Safety::Valid)` the record is on disk.
    pub fn check_and_insert_block(
        &self,
        pubkey: &[u8; 48],
        slot: u64,
        signing_root: Option<[u8; 32]>,
    ) -> Result<Safety, SlashingError> {
        self.write(
            |tables| tables.check_and_insert_block(pubkey, slot, signing_root),
            |safety| *safety == Safety::Valid,
        )
    }

    /// Checks and records several blocks of one validator in a single durable transaction: either
    /// all of them are safe (and the new ones recorded) or nothing is written.
    pub fn check_and_insert_blocks(
        &self,
        pubkey: &[u8; 48],
        blocks: &[SignedBlock],
    ) -> Result<Vec<Safety>, SlashingError> {
        self.write(
            |tables| {
                blocks
                    .iter()
                    .map(|b| tables.check_and_insert_block(pubkey, b.slot, b.signing_root))
                    .collect()
            },
            |_| true,
        )
    }

    /// Checks, without recording it, whether signing an attestation is safe.
    pub fn check_attestation(
        &self,
        pubkey: &[u8; 48],
        source: u64,
        target: u64,
        signing_root: Option<[u8; 32]>,
    ) -> Result<Safety, SlashingError> {
        let txn = self.db.begin_read()?;
        let atts = txn.open_table(ATTESTATIONS)?;
        let validators = txn.open_table(VALIDATORS)?;
        check_attestation_in(&atts, &validators, pubkey, source, target, signing_root)
    }

    /// Checks an attestation and, if it is new and safe, records it — atomically, in one durable
    /// commit. When this returns `Ok(Safety::Valid)` the record is on disk.
    pub fn check_and_insert_attestation(
        &self,
        pubkey: &[u8; 48],
        source: u64,
        target: u64,
        signing_root: Option<[u8; 32]>,
    ) -> Result<Safety, SlashingError> {
        self.write(
            |tables| tables.check_and_insert_attestation(pubkey, source, target, signing_root),
            |safety| *safety == Safety::Valid,
        )
    }

    /// Checks and records several attestations of one validator in a single durable transaction:
    /// either all of them are safe (and the new ones recorded) or nothing is written. Each
    /// attestation is checked against the database and the ones before it in `attestations`.
    pub fn check_and_insert_attestations(
        &self,
        pubkey: &[u8; 48],
        attestations: &[SignedAttestation],
    ) -> Result<Vec<Safety>, SlashingError> {
        self.write(
            |tables| {
                attestations
                    .iter()
                    .map(|a| {
                        tables.check_and_insert_attestation(
                            pubkey,
                            a.source_epoch,
                            a.target_epoch,
                            a.signing_root,
                        )
                    })
                    .collect()
            },
            |_| true,
        )
    }

    /// Checks and records one attestation for each of many validators (a duty's DVs) in a single
    /// durable transaction. Each is checked on its own: a refusal (slashable, below a watermark)
    /// is returned in its slot and writes nothing for that validator, the others are recorded.
    /// When this returns `Ok`, every `Ok(Safety::Valid)` record is on disk; a storage error
    /// writes nothing at all.
    pub fn check_and_insert_attestations_of_many(
        &self,
        attestations: &[([u8; 48], SignedAttestation)],
    ) -> Result<Vec<Result<Safety, SlashingError>>, SlashingError> {
        let txn = self.db.begin_write()?;
        let mut results = Vec::with_capacity(attestations.len());
        {
            let mut tables = WriteTables::open(&txn)?;
            for (pubkey, a) in attestations {
                match tables.check_and_insert_attestation(
                    pubkey,
                    a.source_epoch,
                    a.target_epoch,
                    a.signing_root,
                ) {
                    Err(e) if !e.is_refusal() => return Err(e),
                    r => results.push(r),
                }
            }
        }
        if results.iter().any(|r| matches!(r, Ok(Safety::Valid))) {
            txn.commit()?;
        }
        Ok(results)
    }

    /// Imports an EIP-3076 interchange (format version 5) atomically: everything or nothing.
    ///
    /// The interchange's genesis validators root must equal the database's; if the database has
    /// none yet, it is bound to the interchange's. The history is merged by minification: per
    /// validator, the highest imported (or already recorded) block slot, attestation source and
    /// attestation target become low watermarks, so the database never becomes less safe, even
    /// when the interchange itself contains slashable data.
    pub fn import_interchange(
        &self,
        interchange: &Interchange,
    ) -> Result<ImportSummary, SlashingError> {
        let version = interchange.metadata.interchange_format_version;
        if version != INTERCHANGE_FORMAT_VERSION {
            return Err(SlashingError::InvalidInterchange(format!(
                "unsupported interchange_format_version {version} (supported: \
                 {INTERCHANGE_FORMAT_VERSION})"
            )));
        }
        let provided = interchange.metadata.genesis_validators_root;
        let txn = self.db.begin_write()?;
        let mut summary = ImportSummary::default();
        {
            let mut meta = txn.open_table(META)?;
            match read_gvr(&meta)? {
                Some(stored) if stored != provided => {
                    return Err(SlashingError::GenesisValidatorsRootMismatch { stored, provided })
                }
                Some(_) => {}
                None => {
                    meta.insert(META_GVR, provided.as_slice())?;
                }
            }
            let mut tables = WriteTables::open(&txn)?;
            let mut pubkeys = BTreeSet::new();
            for (index, record) in interchange.data.iter().enumerate() {
                import_fail_point(index)?;
                tables.import_record(record)?;
                pubkeys.insert(record.pubkey);
                summary.blocks += record.signed_blocks.len();
                summary.attestations += record.signed_attestations.len();
            }
            summary.validators = pubkeys.len();
        }
        txn.commit()?;
        Ok(summary)
    }

    /// Exports the database as an EIP-3076 interchange (format version 5).
    ///
    /// Every recorded block and attestation is exported. Where an import watermark is higher
    /// than the recorded history, one extra record without signing root stands for it (a block at
    /// the slot watermark, an attestation at the source/target watermarks), so that importing the
    /// export elsewhere is at least as strict as this database.
    pub fn export_interchange(&self) -> Result<Interchange, SlashingError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let gvr = read_gvr(&meta)?.ok_or(SlashingError::MissingGenesisValidatorsRoot)?;
        let blocks = txn.open_table(BLOCKS)?;
        let atts = txn.open_table(ATTESTATIONS)?;
        let validators = txn.open_table(VALIDATORS)?;
        let mut data = Vec::new();
        for entry in validators.iter()? {
            let (k, v) = entry?;
            let pubkey = k.value();
            let wm = Watermarks::from_value(v.value());

            let mut signed_blocks = Vec::new();
            for entry in blocks.range(validator_range(&pubkey))? {
                let (k, v) = entry?;
                signed_blocks.push(SignedBlock {
                    slot: k.value().1,
                    signing_root: v.value(),
                });
            }
            if let Some(slot) = wm.block_slot {
                if signed_blocks.last().is_none_or(|b| b.slot < slot) {
                    signed_blocks.push(SignedBlock {
                        slot,
                        signing_root: None,
                    });
                }
            }

            let mut signed_attestations = Vec::new();
            for entry in atts.range(validator_range(&pubkey))? {
                let (k, v) = entry?;
                let (source_epoch, signing_root) = v.value();
                signed_attestations.push(SignedAttestation {
                    source_epoch,
                    target_epoch: k.value().1,
                    signing_root,
                });
            }
            if wm.att_source.is_some() || wm.att_target.is_some() {
                let last = signed_attestations
                    .last()
                    .map(|a| (a.source_epoch, a.target_epoch));
                let source = max_opt(wm.att_source, last.map(|(s, _)| s)).unwrap_or(0);
                let target = max_opt(wm.att_target, last.map(|(_, t)| t)).unwrap_or(0);
                if last != Some((source, target)) {
                    // The synthetic record supersedes a recorded one with the same target.
                    signed_attestations.retain(|a| a.target_epoch != target);
                    signed_attestations.push(SignedAttestation {
                        source_epoch: source,
                        target_epoch: target,
                        signing_root: None,
                    });
                }
            }

            data.push(InterchangeData {
                pubkey,
                signed_blocks,
                signed_attestations,
            });
        }
        Ok(Interchange {
            metadata: InterchangeMetadata {
                interchange_format_version: INTERCHANGE_FORMAT_VERSION,
                genesis_validators_root: gvr,
            },
            data,
        })
    }
}

/// Test-only fault injection proving that a failed import leaves no trace.
#[cfg(test)]
fn import_fail_point(index: usize) -> Result<(), SlashingError> {
    if tests::FAIL_IMPORT_AFTER.with(|f| f.get()) == Some(index) {
        return Err(SlashingError::InvalidInterchange("injected failure".into()));
    }
    Ok(())
}

#[cfg(not(test))]
#[inline(always)]
fn import_fail_point(_index: usize) -> Result<(), SlashingError> {
    Ok(())
}

fn read_gvr(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<Root>, SlashingError> {
    match meta.get(META_GVR)? {
        None => Ok(None),
        Some(g) => <[u8; 32]>::try_from(g.value()).map(Some).map_err(|_| {
            SlashingError::from(redb::Error::Corrupted(format!(
                "stored genesis validators root has {} bytes, expected 32",
                g.value().len()
            )))
        }),
    }
}
