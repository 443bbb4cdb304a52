//! Broadcast: hands signed objects to the beacon node, retrying within the duty's deadline.
//!
//! A combined RANDAO reveal does not go to the beacon node: it is stored in the [`DutyDb`],
//! where the proposer duty waits for it to produce the block. Neither do combined selection
//! proofs: they wait in the duty DB (see [`crate::sigagg`]) for the VC and the aggregation
//! duties.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::clock::unix_now;
use crate::duty::Duty;
use crate::dutydb::DutyDb;
use crate::eth::aggregate::{SignedAggregateAndProof, SignedContributionAndProof};
use crate::eth::beacon::{already_known, BeaconClient};
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{
    Attestation, BlsSignature, Preset, SignedBeaconBlockAltair, SignedVoluntaryExit,
    SyncCommitteeMessage,
};
use crate::tracker::{Reason, Tracker};
use crate::value::Signed;

/// Pause between submission attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

enum Submit<P: Preset> {
    Attestation(Box<Attestation<P>>),
    Block(Box<SignedBeaconBlockAltair<P>>),
    SyncMessage(SyncCommitteeMessage),
    Aggregate(Box<SignedAggregateAndProof<P>>),
    Contribution(Box<SignedContributionAndProof<P>>),
    Exit(SignedVoluntaryExit),
}

/// Submits signed objects. See the [module docs](self).
pub struct Broadcaster<P: Preset> {
    bn: BeaconClient,
    schedule: Arc<ForkSchedule>,
    dutydb: Arc<DutyDb<P>>,
    tracker: Tracker,
}

impl<P: Preset> Broadcaster<P> {
    /// A broadcaster to `bn`.
    pub fn new(
        bn: BeaconClient,
        schedule: Arc<ForkSchedule>,
        dutydb: Arc<DutyDb<P>>,
        tracker: Tracker,
    ) -> Broadcaster<P> {
        Broadcaster {
            bn,
            schedule,
            dutydb,
            tracker,
        }
    }

    /// Unix time after which submitting `duty` is pointless: two slots after its slot starts.
    fn deadline(&self, duty: Duty) -> Duration {
        Duration::from_secs(self.schedule.slot_start_time(duty.slot.saturating_add(2)))
    }

    /// Submits `signed` for `duty`; returns whether the beacon node took it.
    pub async fn broadcast(&self, duty: Duty, signed: Signed<P>) -> bool {
        let signed = match signed {
            Signed::Randao(reveal) => return self.store_randao(duty, reveal),
            Signed::SelectionProof(_) | Signed::SyncSelectionProof(_) => {
                // Kept in the duty DB by signature aggregation; nothing goes to the BN.
                self.tracker.broadcast(duty, self.delay(duty));
                return true;
            }
            Signed::Attestation(a) => Submit::Attestation(a),
            Signed::Block(b) => Submit::Block(b),
            Signed::SyncMessage(m) => Submit::SyncMessage(m),
            Signed::AggregateAndProof(a) => Submit::Aggregate(a),
            Signed::ContributionAndProof(c) => Submit::Contribution(c),
            Signed::Exit(e) => Submit::Exit(e),
        };
        let deadline = self.deadline(duty);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match &signed {
                Submit::Attestation(a) => {
                    self.bn
                        .submit_attestations(std::slice::from_ref(a.as_ref()))
                        .await
                }
                Submit::Block(b) => self.bn.submit_block(b).await,
                Submit::SyncMessage(m) => {
                    self.bn
                        .submit_sync_committee_messages(std::slice::from_ref(m))
                        .await
                }
                Submit::Aggregate(a) => {
                    self.bn
                        .submit_aggregate_and_proofs(std::slice::from_ref(a.as_ref()))
                        .await
                }
                Submit::Contribution(c) => {
                    self.bn
                        .submit_contribution_and_proofs(std::slice::from_ref(c.as_ref()))
                        .await
                }
                Submit::Exit(e) => self.bn.submit_voluntary_exit(e).await,
            };
            match result {
                Ok(()) => {
                    let delay = self.delay(duty);
                    info!(%duty, attempt, delay_ms = delay.as_millis() as u64, "broadcast to the beacon node");
                    self.tracker.broadcast(duty, delay);
                    return true;
                }
                // Another node of the cluster was first: the object is on the beacon node.
                Err(e) if already_known(&e.to_string()) => {
                    let delay = self.delay(duty);
                    debug!(%duty, delay_ms = delay.as_millis() as u64, "beacon node already has the signed object");
                    self.tracker.broadcast(duty, delay);
                    return true;
                }
                // A 4xx is the beacon node judging the object: retrying will not help.
                Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {
                    warn!(%duty, error = %e, "beacon node refused the signed object");
                    self.tracker
                        .fail(duty, Reason::BroadcastBnError, &e.to_string());
                    return false;
                }
                Err(e) if unix_now() + RETRY_PAUSE >= deadline => {
                    warn!(%duty, attempt, error = %e, "broadcast failed; duty deadline passed");
                    self.tracker
                        .fail(duty, Reason::BroadcastBnError, &e.to_string());
                    return false;
                }
                Err(e) => {
                    debug!(%duty, attempt, error = %e, "broadcast failed; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    fn store_randao(&self, duty: Duty, reveal: BlsSignature) -> bool {
        match self.dutydb.store_randao(duty.slot, reveal) {
            Ok(()) => {
                self.tracker.broadcast(duty, self.delay(duty));
                true
            }
            Err(e) => {
                self.tracker
                    .fail(duty, Reason::BroadcastBnError, &e.to_string());
                false
            }
        }
    }

    fn delay(&self, duty: Duty) -> Duration {
        unix_now().saturating_sub(Duration::from_secs(
            self.schedule.slot_start_time(duty.slot),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::eth::beacon::already_known;

    #[test]
    fn duplicate_answers_of_lodestar_count_as_broadcast() {
        for e in [
            r#"HTTP 500: {"message":"ATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN"}"#,
            r#"HTTP 500: {"message":"PublishError.Duplicate"}"#,
            r#"HTTP 500: {"message":"SYNC_COMMITTEE_ERROR_PRIOR_SYNC_COMMITTEE_MESSAGE_KNOWN"}"#,
            r#"HTTP 500: {"message":"ATTESTATION_ERROR_AGGREGATOR_ALREADY_KNOWN"}"#,
            r#"HTTP 500: {"message":"SYNC_COMMITTEE_ERROR_SYNC_COMMITTEE_AGGREGATOR_ALREADY_KNOWN"}"#,
            r#"HTTP 400: {"message":"VOLUNTARY_EXIT_ERROR_ALREADY_EXISTS"}"#,
        ] {
            assert!(already_known(e), "{e}");
        }
        assert!(!already_known(
            r#"HTTP 400: {"message":"INVALID_SIGNATURE"}"#
        ));
    }
}
