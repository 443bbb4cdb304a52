//! What the tracker outputs: one duty log line per closed outcome ([`DutyReport`], with the
//! [`Stage`] and [`Reason`] vocabulary it is written in) and the metrics.
//!
//! [`DutyReport`] is the one definition of the duty log format; the lab and the tests read the
//! log with it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::duty::Duty;
use crate::eth::types::{BlsPubkey, Slot, ValidatorIndex};

/// Workflow stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The scheduler fired the duty.
    Scheduled,
    /// The local validator client asked for the data to sign (attestation data, block).
    VcRequest,
    /// The unsigned data was fetched from the beacon node.
    Fetched,
    /// Consensus decided and the value is in the duty DB.
    Decided,
    /// The local VC's partial signature was accepted (per validator).
    LocalSigned,
    /// Threshold valid partial signatures were there (per validator).
    LastPartial,
    /// Threshold partial signatures were combined and verified (per validator).
    Aggregated,
    /// The signed object was accepted by the beacon node (per validator).
    Broadcast,
    /// The signed object was seen in a canonical block (per validator).
    Included,
}

impl Stage {
    /// Whether the duty as a whole reaches the stage (the later ones are per validator).
    pub fn is_duty_wide(self) -> bool {
        self <= Stage::Decided
    }
}

/// Why a duty failed for a validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The beacon node did not give the unsigned data.
    FetchBnError,
    /// Consensus did not decide in time (or refused to start).
    NoConsensus,
    /// The slashing DB refused the decided value; nothing was signed.
    SlashingRefused,
    /// The local validator client never sent its partial signature.
    NoLocalVcSignature,
    /// Fewer than threshold valid partial signatures arrived (or they did not combine).
    InsufficientPeerSignatures,
    /// The beacon node refused or did not take the signed object.
    BroadcastBnError,
    /// Broadcast, but not in any canonical block of the inclusion window.
    NotIncludedOnchain,
    /// Broadcast, but the inclusion window's blocks could not be read (beacon node unreachable,
    /// or the node stopped before the window ended).
    InclusionUnknown,
}

impl Reason {
    /// Snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::FetchBnError => "fetch_bn_error",
            Reason::NoConsensus => "no_consensus",
            Reason::SlashingRefused => "slashing_refused",
            Reason::NoLocalVcSignature => "no_local_vc_signature",
            Reason::InsufficientPeerSignatures => "insufficient_peer_signatures",
            Reason::BroadcastBnError => "broadcast_bn_error",
            Reason::NotIncludedOnchain => "not_included_onchain",
            Reason::InclusionUnknown => "inclusion_unknown",
        }
    }

    /// Whether the reason is about the duty as a whole rather than one validator's part.
    pub fn is_duty_wide(self) -> bool {
        matches!(
            self,
            Reason::FetchBnError | Reason::NoConsensus | Reason::SlashingRefused
        )
    }

    /// The reason implied by the last stage a duty reached without broadcasting.
    pub fn implied_by(stage: Option<Stage>) -> Reason {
        match stage {
            None | Some(Stage::Scheduled) | Some(Stage::VcRequest) => Reason::FetchBnError,
            Some(Stage::Fetched) => Reason::NoConsensus,
            Some(Stage::Decided) => Reason::NoLocalVcSignature,
            Some(Stage::LocalSigned) | Some(Stage::LastPartial) => {
                Reason::InsufficientPeerSignatures
            }
            Some(Stage::Aggregated) | Some(Stage::Broadcast) => Reason::BroadcastBnError,
            Some(Stage::Included) => Reason::NotIncludedOnchain,
        }
    }
}

/// One closed outcome of one DV validator in one duty, as written to the duty log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DutyReport {
    /// Close time (Unix milliseconds).
    pub ts_ms: u128,
    /// The duty.
    pub duty: Duty,
    /// The DV (absent for a duty no validator was known for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<BlsPubkey>,
    /// The DV's validator index, when known.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "quoted_opt")]
    pub validator_index: Option<ValidatorIndex>,
    /// `success` or the failure reason ([`Reason::as_str`]).
    pub outcome: String,
    /// Detail of the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Unix milliseconds at which each stage was reached (duty-wide stages and this
    /// validator's).
    pub stages: BTreeMap<Stage, u128>,
    /// Deciding consensus round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consensus_round: Option<u64>,
    /// Consensus duration (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consensus_seconds: Option<f64>,
    /// Share indices whose valid partial signatures for this validator arrived.
    pub shares: Vec<u64>,
    /// Delay from slot start to the first broadcast of the duty (seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcast_delay_seconds: Option<f64>,
    /// Slot of the first canonical block including the object.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "quoted_opt")]
    pub inclusion_slot: Option<Slot>,
    /// Inclusion delay in slots (`inclusion_slot - duty slot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inclusion_delay: Option<u64>,
}

/// The outcome of a validator that succeeded.
pub const SUCCESS: &str = "success";

/// The duty log: JSON lines appended to a file.
pub(super) struct DutyLog(Mutex<File>);

impl DutyLog {
    /// Opens `path` for appending (created if missing).
    pub(super) fn open(path: &Path) -> Result<DutyLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open duty log {}", path.display()))?;
        Ok(DutyLog(Mutex::new(file)))
    }

    /// Appends one line per report.
    pub(super) fn append(&self, reports: &[DutyReport]) {
        let mut file = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for rep in reports {
            let line = serde_json::to_string(rep).unwrap_or_default();
            if let Err(e) = writeln!(file, "{line}") {
                warn!(error = %e, "cannot write the duty log");
                break;
            }
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindOutcome {
    pub(super) kind: String,
    pub(super) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindReason {
    pub(super) kind: String,
    pub(super) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabel {
    pub(super) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindShare {
    pub(super) kind: String,
    pub(super) share: String,
}

/// The tracker's metrics (see the [module docs](super)).
#[derive(Clone)]
pub(super) struct Metrics {
    pub(super) duties: Family<KindOutcome, Counter>,
    pub(super) failures: Family<KindReason, Counter>,
    pub(super) inclusion_delay: Family<KindLabel, Histogram>,
    pub(super) rounds: Family<KindLabel, Histogram>,
    pub(super) consensus_duration: Family<KindLabel, Histogram>,
    pub(super) partials: Family<KindShare, Counter>,
    pub(super) broadcast_delay: Family<KindLabel, Histogram>,
    pub(super) watch_errors: Counter,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub(super) fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            duties: Family::default(),
            failures: Family::default(),
            inclusion_delay: Family::new_with_constructor(|| {
                Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0])
            }),
            rounds: Family::new_with_constructor(|| Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0])),
            consensus_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
            partials: Family::default(),
            broadcast_delay: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.25, 1.5, 12))
            }),
            watch_errors: Counter::default(),
        };
        registry.register(
            "duty",
            "Closed duty outcomes per DV validator, by kind and outcome (success or the reason)",
            m.duties.clone(),
        );
        registry.register(
            "duty_failures",
            "Failed duties per DV validator, by kind and reason",
            m.failures.clone(),
        );
        registry.register(
            "duty_inclusion_delay_slots",
            "Slots from the duty's slot to the first canonical block including it",
            m.inclusion_delay.clone(),
        );
        registry.register(
            "duty_consensus_rounds",
            "Round in which duty consensus decided",
            m.rounds.clone(),
        );
        registry.register(
            "duty_consensus_duration_seconds",
            "Time from consensus start to decision",
            m.consensus_duration.clone(),
        );
        registry.register(
            "duty_partial_signatures",
            "Valid partial signatures received, by share index (peer participation)",
            m.partials.clone(),
        );
        registry.register(
            "duty_broadcast_delay_seconds",
            "Time from slot start to the beacon node accepting the signed object",
            m.broadcast_delay.clone(),
        );
        registry.register(
            "duty_chain_watch_errors",
            "Canonical blocks the tracker's chain watcher could not read",
            m.watch_errors.clone(),
        );
        m
    }

    /// Counts a closed outcome.
    pub(super) fn count(&self, rep: &DutyReport) {
        let kind = rep.duty.kind.to_string();
        let m = self;
        m.duties
            .get_or_create(&KindOutcome {
                kind: kind.clone(),
                outcome: rep.outcome.clone(),
            })
            .inc();
        if rep.outcome != SUCCESS {
            m.failures
                .get_or_create(&KindReason {
                    kind: kind.clone(),
                    reason: rep.outcome.clone(),
                })
                .inc();
        }
        if let Some(delay) = rep.inclusion_delay {
            m.inclusion_delay
                .get_or_create(&KindLabel { kind })
                .observe(delay as f64);
        }
    }
}

/// `Option<u64>` as a quoted decimal (`"57"`), the beacon API's convention; a bare number is
/// accepted too.
mod quoted_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum N {
            S(String),
            N(u64),
        }
        match Option::<N>::deserialize(d)? {
            None => Ok(None),
            Some(N::N(n)) => Ok(Some(n)),
            Some(N::S(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}
