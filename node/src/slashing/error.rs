//! Why the slashing DB refuses a message or cannot be used (beneath the DB and the
//! interchange format, which both report these errors).

use std::fmt;
use std::path::PathBuf;

/// Which lower bound a message violated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowerBound {
    /// Block slot must be above the lowest recorded slot and the imported slot watermark.
    BlockSlot,
    /// Attestation source must be at least the lowest recorded source and the imported watermark.
    AttestationSource,
    /// Attestation target must be above the lowest recorded target and the imported watermark.
    AttestationTarget,
}

impl fmt::Display for LowerBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LowerBound::BlockSlot => "block slot must be greater than",
            LowerBound::AttestationSource => "attestation source epoch must be at least",
            LowerBound::AttestationTarget => "attestation target epoch must be greater than",
        })
    }
}

/// Why a message was refused, or why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SlashingError {
    /// An attestation with the same target but different data was already signed.
    #[error(
        "double vote: attestation (source {source_epoch}, target {target_epoch}) conflicts with the already \
         signed attestation (source {existing_source_epoch}, target {target_epoch}) with different data"
    )]
    DoubleVote {
        /// Source epoch of the refused attestation.
        source_epoch: u64,
        /// Target epoch shared by both attestations.
        target_epoch: u64,
        /// Source epoch of the recorded attestation.
        existing_source_epoch: u64,
    },
    /// The attestation would surround an already signed one.
    #[error(
        "surround vote: attestation (source {source_epoch}, target {target_epoch}) would surround the already \
         signed attestation (source {existing_source_epoch}, target {existing_target_epoch})"
    )]
    SurroundingVote {
        /// Source epoch of the refused attestation.
        source_epoch: u64,
        /// Target epoch of the refused attestation.
        target_epoch: u64,
        /// Source epoch of the recorded attestation.
        existing_source_epoch: u64,
        /// Target epoch of the recorded attestation.
        existing_target_epoch: u64,
    },
    /// The attestation would be surrounded by an already signed one.
    #[error(
        "surround vote: attestation (source {source_epoch}, target {target_epoch}) would be surrounded by the \
         already signed attestation (source {existing_source_epoch}, target {existing_target_epoch})"
    )]
    SurroundedVote {
        /// Source epoch of the refused attestation.
        source_epoch: u64,
        /// Target epoch of the refused attestation.
        target_epoch: u64,
        /// Source epoch of the recorded attestation.
        existing_source_epoch: u64,
        /// Target epoch of the recorded attestation.
        existing_target_epoch: u64,
    },
    /// A different block was already signed at this slot.
    #[error("double block proposal: a different block was already signed at slot {slot}")]
    DoubleBlockProposal {
        /// The slot of both blocks.
        slot: u64,
    },
    /// The attestation's source epoch is greater than its target epoch.
    #[error(
        "invalid attestation: source epoch {source_epoch} exceeds target epoch {target_epoch}"
    )]
    SourceExceedsTarget {
        /// Source epoch of the refused attestation.
        source_epoch: u64,
        /// Target epoch of the refused attestation.
        target_epoch: u64,
    },
    /// The message is at or below a low watermark (lowest recorded message or imported history).
    #[error("below low watermark: {bound} {limit}, got {value}")]
    BelowWatermark {
        /// Which bound was violated.
        bound: LowerBound,
        /// The offending slot or epoch.
        value: u64,
        /// The watermark.
        limit: u64,
    },
    /// The genesis validators root differs from the one stored in the database.
    #[error(
        "genesis validators root mismatch: database has 0x{}, got 0x{}",
        hex::encode(.stored),
        hex::encode(.provided)
    )]
    GenesisValidatorsRootMismatch {
        /// The root stored in the database.
        stored: [u8; 32],
        /// The root that was provided.
        provided: [u8; 32],
    },
    /// The database has no genesis validators root yet (needed for export).
    #[error("the slashing database has no genesis validators root yet")]
    MissingGenesisValidatorsRoot,
    /// The interchange document is malformed or unsupported.
    #[error("invalid interchange: {0}")]
    InvalidInterchange(String),
    /// The database file could not be opened or created.
    #[error("cannot open slashing database {}: {source}", .path.display())]
    Open {
        /// Database path.
        path: PathBuf,
        /// Underlying error.
        source: Box<redb::Error>,
    },
    /// A database operation failed.
    #[error("slashing database error: {0}")]
    Db(#[source] Box<redb::Error>),
}

impl SlashingError {
    /// True if the error is a refusal to sign (the message would or could be slashable, or is
    /// invalid), as opposed to a database, configuration or input-format failure.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            SlashingError::DoubleVote { .. }
                | SlashingError::SurroundingVote { .. }
                | SlashingError::SurroundedVote { .. }
                | SlashingError::DoubleBlockProposal { .. }
                | SlashingError::SourceExceedsTarget { .. }
                | SlashingError::BelowWatermark { .. }
        )
    }
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for SlashingError {
            fn from(e: $t) -> Self {
                SlashingError::Db(Box::new(e.into()))
            }
        }
    )*};
}
db_error_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
