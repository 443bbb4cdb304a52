//! Broadcast: hands signed objects to the beacon node, retrying within the duty's deadline.
//!
//! Attestations, sync-committee messages, aggregates and contributions go through one
//! [`PoolLane`] per endpoint: sent at once while the node is quiet, coalesced into arrays under
//! load, with each object's own outcome ([`crate::eth::beacon::pool`]). Blocks and exits go one
//! per request.
//!
//! A combined RANDAO reveal does not go to the beacon node: it is stored in the [`DutyDb`],
//! where the proposer duty waits for it to produce the block. Neither do combined selection
//! proofs: they wait in the duty DB (see [`crate::sigagg`]) for the VC and the aggregation
//! duties.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tracing::{debug, info, warn};

use crate::clock::unix_now;
use crate::duty::Duty;
use crate::dutydb::DutyDb;
use crate::eth::aggregate::{SignedAggregateAndProof, SignedContributionAndProof};
use crate::eth::beacon::{
    already_known, BeaconClient, ItemOutcome, PoolKind, PoolLane, PoolMetrics,
};
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{
    Attestation, BlsSignature, Preset, SignedBeaconBlockAltair, SignedVoluntaryExit,
    SyncCommitteeMessage,
};
use crate::tracker::{Reason, Tracker};
use crate::value::Signed;

/// Pause between submission attempts of a block or an exit.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The objects that go to the beacon node one per request.
enum Single<P: Preset> {
    Block(Box<SignedBeaconBlockAltair<P>>),
    Exit(SignedVoluntaryExit),
}

/// Submits signed objects. See the [module docs](self).
pub struct Broadcaster<P: Preset> {
    bn: BeaconClient,
    schedule: Arc<ForkSchedule>,
    dutydb: Arc<DutyDb<P>>,
    tracker: Tracker,
    attestations: Arc<PoolLane<Attestation<P>>>,
    sync_messages: Arc<PoolLane<SyncCommitteeMessage>>,
    aggregates: Arc<PoolLane<SignedAggregateAndProof<P>>>,
    contributions: Arc<PoolLane<SignedContributionAndProof<P>>>,
}

impl<P: Preset> Broadcaster<P> {
    /// A broadcaster to `bn`; registers the `broadcast_pool_*` metrics in `registry`.
    pub fn new(
        bn: BeaconClient,
        schedule: Arc<ForkSchedule>,
        dutydb: Arc<DutyDb<P>>,
        tracker: Tracker,
        registry: &mut Registry,
    ) -> Broadcaster<P> {
        let metrics = PoolMetrics::registered(registry);
        Broadcaster {
            attestations: PoolLane::new(PoolKind::Attestations, bn.clone(), metrics.clone()),
            sync_messages: PoolLane::new(PoolKind::SyncMessages, bn.clone(), metrics.clone()),
            aggregates: PoolLane::new(PoolKind::Aggregates, bn.clone(), metrics.clone()),
            contributions: PoolLane::new(PoolKind::Contributions, bn.clone(), metrics),
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

    /// Submits `signed` for `duty`; returns whether the beacon node took it, and if not why
    /// (also recorded in the tracker).
    pub async fn broadcast(&self, duty: Duty, signed: Signed<P>) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.deadline(duty).saturating_sub(unix_now());
        let outcome = match signed {
            Signed::Randao(reveal) => return self.store_randao(duty, reveal),
            Signed::SelectionProof(_) | Signed::SyncSelectionProof(_) => {
                // Kept in the duty DB by signature aggregation; nothing goes to the BN.
                self.tracker.broadcast(duty, self.delay(duty));
                return Ok(());
            }
            Signed::Block(b) => return self.single(duty, Single::Block(b)).await,
            Signed::Exit(e) => return self.single(duty, Single::Exit(e)).await,
            Signed::Attestation(a) => self.attestations.submit(*a, deadline).await,
            Signed::SyncMessage(m) => self.sync_messages.submit(m, deadline).await,
            Signed::AggregateAndProof(a) => self.aggregates.submit(*a, deadline).await,
            Signed::ContributionAndProof(c) => self.contributions.submit(*c, deadline).await,
        };
        let delay = self.delay(duty);
        match outcome {
            ItemOutcome::Accepted => {
                info!(%duty, delay_ms = delay.as_millis() as u64, "broadcast to the beacon node");
                self.tracker.broadcast(duty, delay);
                Ok(())
            }
            ItemOutcome::Known => {
                debug!(%duty, delay_ms = delay.as_millis() as u64, "beacon node already has the signed object");
                self.tracker.broadcast(duty, delay);
                Ok(())
            }
            ItemOutcome::Refused(why) => {
                warn!(%duty, error = %why, "beacon node refused the signed object");
                self.tracker.fail(duty, Reason::BroadcastBnError, &why);
                Err(why)
            }
            ItemOutcome::Failed(why) => {
                warn!(%duty, error = %why, "broadcast failed");
                self.tracker.fail(duty, Reason::BroadcastBnError, &why);
                Err(why)
            }
        }
    }

    /// Submits a block or an exit (one per request), retrying until `duty`'s deadline.
    async fn single(&self, duty: Duty, signed: Single<P>) -> Result<(), String> {
        let deadline = self.deadline(duty);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match &signed {
                Single::Block(b) => self.bn.submit_block(b).await,
                Single::Exit(e) => self.bn.submit_voluntary_exit(e).await,
            };
            match result {
                Ok(()) => {
                    let delay = self.delay(duty);
                    info!(%duty, attempt, delay_ms = delay.as_millis() as u64, "broadcast to the beacon node");
                    self.tracker.broadcast(duty, delay);
                    return Ok(());
                }
                // Another node of the cluster was first: the object is on the beacon node.
                Err(e) if already_known(&e.to_string()) => {
                    let delay = self.delay(duty);
                    debug!(%duty, delay_ms = delay.as_millis() as u64, "beacon node already has the signed object");
                    self.tracker.broadcast(duty, delay);
                    return Ok(());
                }
                // A 4xx is the beacon node judging the object: retrying will not help.
                Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {
                    warn!(%duty, error = %e, "beacon node refused the signed object");
                    let why = e.to_string();
                    self.tracker.fail(duty, Reason::BroadcastBnError, &why);
                    return Err(why);
                }
                Err(e) if unix_now() + RETRY_PAUSE >= deadline => {
                    warn!(%duty, attempt, error = %e, "broadcast failed; duty deadline passed");
                    let why = e.to_string();
                    self.tracker.fail(duty, Reason::BroadcastBnError, &why);
                    return Err(why);
                }
                Err(e) => {
                    debug!(%duty, attempt, error = %e, "broadcast failed; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    fn store_randao(&self, duty: Duty, reveal: BlsSignature) -> Result<(), String> {
        match self.dutydb.store_randao(duty.slot, reveal) {
            Ok(()) => {
                self.tracker.broadcast(duty, self.delay(duty));
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                self.tracker.fail(duty, Reason::BroadcastBnError, &why);
                Err(why)
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
