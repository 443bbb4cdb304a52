//! The tracker: which stage each duty reached, why it failed, and whether it landed on chain.
//!
//! Every workflow stage reports to a [`Tracker`] (a cheap clone). Duty-wide stages (scheduled,
//! VC request, fetched, decided) are kept per duty; the stages after that (local signature,
//! last partial, aggregated, broadcast, included) are kept per DV validator of the duty. Each
//! DV validator of a duty gets its own outcome:
//!
//! - broadcast and seen on chain by the [`ChainWatcher`] within the inclusion window:
//!   `success`, with the inclusion delay in slots (attestation: first block including the DV's
//!   committee bit for the decided data; block: the canonical block of the slot is by the DV;
//!   sync committee message: the DV's bit in the sync aggregate of the block at slot + 1);
//! - broadcast but not seen once the watcher has read every block of the window:
//!   `not_included_onchain` (the detail names what the chain showed);
//! - broadcast, but the window's blocks could not be read before the record expired or the
//!   node stopped: `inclusion_unknown`;
//! - not broadcast: the first failure reported for the validator, else the first reported for
//!   the duty, else the reason implied by the last stage reached (fetched but not decided:
//!   `no_consensus`; decided but no local partial: `no_local_vc_signature`; local partial but
//!   no threshold: `insufficient_peer_signatures`; …).
//!
//! A closed outcome goes to the metrics and, as one JSON line per validator with per-stage
//! timestamps, to the duty log, once. A duty's record is forgotten when all its validators are
//! closed and its slot is [`TrackerConfig::track_slots`] old (late reports for it are then
//! ignored rather than opening a new record), so memory is bounded by the duties of the last
//! `track_slots` + inclusion-window slots.
//!
//! # Duty log line
//! ```json
//! {"ts_ms":1700000000123,"duty":{"slot":"42","kind":"attester"},
//!  "pubkey":"0xa99a…","validator_index":"57","outcome":"success",
//!  "stages":{"scheduled":…,"vc_request":…,"fetched":…,"decided":…,"local_signed":…,
//!            "last_partial":…,"aggregated":…,"broadcast":…,"included":…},
//!  "consensus_round":1,"consensus_seconds":0.012,"shares":[1,2,4],
//!  "broadcast_delay_seconds":1.41,"inclusion_slot":"43","inclusion_delay":1}
//! ```
//! Stage times are Unix milliseconds; absent stages are omitted. `detail` is present on
//! failures; `pubkey`/`validator_index` are absent only for a duty no validator was known for;
//! `inclusion_slot`/`inclusion_delay` only when included.
//!
//! # Metrics
//! `duty_total{kind,outcome}` (per validator; outcome `success` or the reason),
//! `duty_failures_total{kind,reason}`, `duty_inclusion_delay_slots{kind}` (histogram),
//! `duty_consensus_rounds{kind}` and `duty_consensus_duration_seconds{kind}` (histograms),
//! `duty_partial_signatures_total{kind,share}` (participation per peer share index),
//! `duty_broadcast_delay_seconds{kind}` (from slot start),
//! `duty_chain_watch_errors_total` (blocks the watcher could not read).

mod output;
mod tracking;
mod watcher;

pub use self::output::{DutyReport, Reason, Stage, SUCCESS};
pub use self::tracking::{Inclusion, ObservedBlock, Tracker, TrackerConfig};
pub use self::watcher::ChainWatcher;
