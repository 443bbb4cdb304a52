//! The [`DutyBackend`] of the validator API backed by the duty workflow.
//!
//! - `attestation_data`: waits for the decided data in the [`DutyDb`].
//! - every request for data to sign (attestation data, block) is reported to the tracker
//!   (stage `vc_request`), so the node-added latency from the VC's request is measured.
//! - `submit_attestations`: each attestation carries this node's share signature and one
//!   aggregation bit; the bit and committee identify the DV through the decided duty, then the
//!   partial goes to [`ParSig`] (which checks it against the decided data and this node's
//!   public share).
//! - `produce_block`: the VC's RANDAO reveal is a partial over the epoch → RANDAO duty →
//!   combined with the peers' → the proposer duty produces the block with it and runs consensus
//!   → the decided block is returned to the VC.
//! - `submit_block`: must be the decided block; the share signature goes to [`ParSig`].
//! - `submit_sync_committee_messages`: must sign the decided head root; to [`ParSig`].
//! - `submit_voluntary_exit`: a partial exit (signed with this node's share, by a VC or by
//!   `dvnode exit`) goes to [`ParSig`]; the combined exit this node made is acknowledged.
//! - aggregation endpoints: the validator API's default (a clear "unsupported" error).
//!
//! # Remote-signer mode
//! When the node signs with its own shares ([`ParSig::signs_itself`]), the VC works with DV
//! keys and gets the combined signatures from the Web3Signer API ([`crate::remote`]):
//! - `produce_block`: the RANDAO reveal must be the combined one;
//! - submissions carry combined signatures: each must be the one this node combined for the
//!   decided object (the workflow broadcasts it already: the submission is acknowledged and
//!   not sent again, so n VCs submitting the same object cost the beacon node nothing);
//! - `aggregate_attestation` / `sync_committee_contribution`: the aggregate (contribution) the
//!   cluster decided (a contribution over the decided sync root even if the VC's head moved); `aggregate_and_proofs` / `contribution_and_proofs` are acknowledged like
//!   the other submissions.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use crate::clock::SlotClock;
use crate::duty::{Duty, DutyKind};
use crate::dutydb::DutyDb;
use crate::eth::aggregate::{SignedAggregateAndProof, SignedContributionAndProof};
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{
    from_json_value, Attestation, BlsPubkey, BlsSignature, Preset, Root, SignedBeaconBlockAltair,
    SignedVoluntaryExit, Slot, SyncCommitteeMessage,
};
use crate::parsig::{ParSig, ParSigMsg, Rejection, SignedObject};
use crate::tracker::{Stage, Tracker};
use crate::validator_api::{unsupported, BackendError, DutyBackend, ProducedBlock};

/// See the [module docs](self).
pub struct WorkflowBackend<P: Preset> {
    dutydb: Arc<DutyDb<P>>,
    parsig: Arc<ParSig<P>>,
    schedule: Arc<ForkSchedule>,
    clock: SlotClock,
    tracker: Tracker,
}

fn rejected(e: Rejection) -> BackendError {
    match e {
        Rejection::UnknownDuty { .. } => BackendError::Unavailable(e.to_string()),
        Rejection::Overloaded => BackendError::Unavailable(e.to_string()),
        _ => BackendError::BadRequest(e.to_string()),
    }
}

/// A signature from the VC: of `object` for `duty` and DV `pubkey`, taken until `deadline`.
struct Signed {
    duty: Duty,
    pubkey: BlsPubkey,
    object: SignedObject,
    signature: BlsSignature,
    deadline: Instant,
}

/// The first failure by position (a bad request names the item's index), if any.
fn first_failure(results: Vec<Result<(), BackendError>>) -> Result<(), BackendError> {
    match results.into_iter().enumerate().find(|(_, r)| r.is_err()) {
        Some((i, Err(BackendError::BadRequest(m)))) => {
            Err(BackendError::BadRequest(format!("[{i}]: {m}")))
        }
        Some((_, r)) => r,
        None => Ok(()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, BackendError> {
    from_json_value(v).map_err(|e| BackendError::BadRequest(format!("invalid {what}: {e}")))
}

impl<P: Preset> WorkflowBackend<P> {
    /// A backend over the workflow's duty DB and partial signature stage, reporting the VC's
    /// requests (stage [`Stage::VcRequest`]) to `tracker`.
    pub fn new(
        dutydb: Arc<DutyDb<P>>,
        parsig: Arc<ParSig<P>>,
        schedule: Arc<ForkSchedule>,
        tracker: Tracker,
    ) -> WorkflowBackend<P> {
        let clock = SlotClock::of(&schedule);
        WorkflowBackend {
            dutydb,
            parsig,
            schedule,
            clock,
            tracker,
        }
    }

    /// How long a call for `slot` may wait: until `slots` slots after the slot starts.
    fn deadline(&self, slot: Slot, slots: u64) -> Instant {
        self.clock.deadline(slot, slots)
    }

    fn check_share(&self, share_index: u64) -> Result<(), BackendError> {
        if share_index != self.parsig.own_share() {
            return Err(BackendError::Internal(format!(
                "validator API runs for share {share_index}, the workflow for share {}",
                self.parsig.own_share()
            )));
        }
        Ok(())
    }

    fn sync_message(&self, v: Value) -> Result<Signed, BackendError> {
        let m: SyncCommitteeMessage = parse(v, "sync committee message")?;
        let def = self
            .dutydb
            .sync_member(m.slot, m.validator_index)
            .ok_or_else(|| {
                BackendError::BadRequest(format!(
                    "validator {} is not a DV sync committee member at slot {}",
                    m.validator_index, m.slot
                ))
            })?;
        Ok(Signed {
            duty: Duty::new(m.slot, DutyKind::SyncMessage),
            pubkey: def.pubkey,
            object: SignedObject::SyncMessage {
                block_root: m.beacon_block_root,
            },
            signature: m.signature,
            deadline: self.deadline(m.slot, 1),
        })
    }

    /// Takes a signature from the VC (see [`WorkflowBackend::take_all`]).
    async fn take(&self, share_index: u64, signed: Signed) -> Result<(), BackendError> {
        self.take_all(share_index, vec![Ok(signed)]).await
    }

    /// Takes the signatures of one VC request (`items`: each parsed, or why not) and answers the
    /// first failure by position, after trying them all. Partials (the VC holds this node's
    /// share) go to [`ParSig`] together, so that they are verified in one batch and reach the
    /// peers in one message; in remote-signer mode each must be the combined signature this
    /// node made for exactly that object.
    async fn take_all(
        &self,
        share_index: u64,
        items: Vec<Result<Signed, BackendError>>,
    ) -> Result<(), BackendError> {
        if self.parsig.signs_itself() {
            let checked = items
                .into_iter()
                .map(|item| async move { self.check_combined(item?).await });
            return first_failure(futures::future::join_all(checked).await);
        }
        let partials = items
            .iter()
            .filter_map(|item| item.as_ref().ok())
            .map(|s| {
                let msg = ParSigMsg {
                    duty: s.duty,
                    pubkey: s.pubkey,
                    share_index,
                    object: s.object,
                    signature: s.signature,
                };
                (msg, s.deadline)
            })
            .collect();
        let mut submitted = self.parsig.submit_local_many(partials).await.into_iter();
        let results = items
            .into_iter()
            .map(|item| {
                item?;
                submitted.next().unwrap_or(Ok(())).map_err(rejected)
            })
            .collect();
        first_failure(results)
    }

    /// Remote-signer mode: `signed` must carry the combined signature this node made for
    /// exactly the decided object.
    async fn check_combined(&self, signed: Signed) -> Result<(), BackendError> {
        let Signed {
            duty,
            pubkey,
            object,
            signature,
            deadline,
        } = signed;
        let (expected, root) = self
            .parsig
            .expected(duty, pubkey, &object, deadline)
            .await
            .map_err(rejected)?;
        if expected != object {
            return Err(BackendError::BadRequest(format!(
                "{duty} for {pubkey}: the signed object is not the one the cluster decided"
            )));
        }
        match self.dutydb.combined(pubkey, root) {
            Some(s) if s == signature => Ok(()),
            Some(_) => Err(BackendError::BadRequest(format!(
                "{duty} for {pubkey}: the signature is not the cluster's combined signature"
            ))),
            None => Err(BackendError::BadRequest(format!(
                "{duty} for {pubkey}: this node combined no signature over {root}"
            ))),
        }
    }

    fn attestation(&self, v: Value) -> Result<Signed, BackendError> {
        let att: Attestation<P> = parse(v, "attestation")?;
        let mut bits = att.aggregation_bits.iter().enumerate().filter(|(_, b)| *b);
        let bit = match (bits.next(), bits.next()) {
            (Some((i, _)), None) => i as u64,
            _ => {
                return Err(BackendError::BadRequest(
                    "a partially signed attestation must have exactly one aggregation bit".into(),
                ))
            }
        };
        let slot = att.data.slot;
        let entry = self
            .dutydb
            .attester_by_bit(slot, att.data.index, bit)
            .ok_or_else(|| {
                BackendError::BadRequest(format!(
                    "no decided DV attestation at slot {slot}, committee {}, position {bit}",
                    att.data.index
                ))
            })?;
        Ok(Signed {
            duty: Duty::new(slot, DutyKind::Attester),
            pubkey: entry.def.pubkey,
            object: SignedObject::Attestation { data: att.data },
            signature: att.signature,
            deadline: self.deadline(slot, 1),
        })
    }

    /// The DV with validator index `index`.
    fn dv_of(&self, index: u64, what: &str) -> Result<BlsPubkey, BackendError> {
        self.dutydb.pubkey_of(index).ok_or_else(|| {
            BackendError::BadRequest(format!(
                "{what}: validator {index} is not an active DV of this cluster"
            ))
        })
    }

    /// Remote-signer mode only: aggregation needs the combined selection proofs.
    fn check_remote(&self, what: &str) -> Result<(), BackendError> {
        if self.parsig.signs_itself() {
            Ok(())
        } else {
            Err(unsupported(what))
        }
    }
}

#[async_trait]
impl<P: Preset> DutyBackend for WorkflowBackend<P> {
    async fn attestation_data(
        &self,
        slot: u64,
        committee_index: u64,
    ) -> Result<Value, BackendError> {
        self.tracker
            .stage(Duty::new(slot, DutyKind::Attester), Stage::VcRequest);
        let data = self
            .dutydb
            .await_attestation(slot, committee_index, self.deadline(slot, 1))
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        serde_json::to_value(data).map_err(|e| BackendError::Internal(e.to_string()))
    }

    async fn produce_block(
        &self,
        share_index: u64,
        slot: u64,
        randao_reveal: String,
        _graffiti: Option<String>,
    ) -> Result<ProducedBlock, BackendError> {
        self.check_share(share_index)?;
        self.tracker
            .stage(Duty::new(slot, DutyKind::Proposer), Stage::VcRequest);
        let proposer = self.dutydb.proposer(slot).ok_or_else(|| {
            BackendError::BadRequest(format!("no DV of this cluster proposes at slot {slot}"))
        })?;
        let reveal: BlsSignature = randao_reveal
            .parse()
            .map_err(|e| BackendError::BadRequest(format!("invalid randao_reveal: {e}")))?;
        let deadline = self.deadline(slot, 1);
        if self.parsig.signs_itself() {
            // Remote-signer mode: the VC got the combined reveal from this node.
            let combined = self
                .dutydb
                .await_randao(slot, deadline)
                .await
                .map_err(|e| BackendError::Unavailable(e.to_string()))?;
            if combined != reveal {
                return Err(BackendError::BadRequest(
                    "randao_reveal: not the cluster's combined RANDAO reveal for the slot".into(),
                ));
            }
        } else {
            let msg = ParSigMsg {
                duty: Duty::new(slot, DutyKind::Randao),
                pubkey: proposer.pubkey,
                share_index,
                object: SignedObject::Randao {
                    epoch: self.schedule.epoch_at_slot(slot),
                },
                signature: reveal,
            };
            self.parsig
                .submit_local(msg, deadline)
                .await
                .map_err(rejected)?;
        }
        let decided = self
            .dutydb
            .await_block(slot, deadline)
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        Ok(ProducedBlock {
            version: self
                .schedule
                .fork_name_at_epoch(self.schedule.epoch_at_slot(slot))
                .to_string(),
            data: serde_json::to_value(&decided.block)
                .map_err(|e| BackendError::Internal(e.to_string()))?,
        })
    }

    async fn submit_attestations(
        &self,
        share_index: u64,
        attestations: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.check_share(share_index)?;
        let items = attestations
            .into_iter()
            .map(|v| self.attestation(v))
            .collect();
        self.take_all(share_index, items).await
    }

    async fn submit_block(&self, share_index: u64, block: Value) -> Result<(), BackendError> {
        self.check_share(share_index)?;
        let signed: SignedBeaconBlockAltair<P> = parse(block, "signed block")?;
        let slot = signed.message.slot;
        let decided = self
            .dutydb
            .await_block(slot, self.deadline(slot, 1))
            .await
            .map_err(|e| BackendError::BadRequest(format!("no decided block: {e}")))?;
        let block_root = Root::of(&signed.message);
        if block_root != Root::of(&decided.block) {
            return Err(BackendError::BadRequest(format!(
                "block {block_root} is not the block decided for slot {slot}"
            )));
        }
        let signed = Signed {
            duty: Duty::new(slot, DutyKind::Proposer),
            pubkey: decided.pubkey,
            object: SignedObject::Block { block_root },
            signature: signed.signature,
            deadline: self.deadline(slot, 1),
        };
        self.take(share_index, signed).await
    }

    async fn submit_sync_committee_messages(
        &self,
        share_index: u64,
        messages: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.check_share(share_index)?;
        let items = messages.into_iter().map(|v| self.sync_message(v)).collect();
        self.take_all(share_index, items).await
    }

    async fn aggregate_attestation(
        &self,
        slot: u64,
        attestation_data_root: String,
    ) -> Result<Value, BackendError> {
        self.check_remote("aggregate_attestation")?;
        let root: Root = attestation_data_root
            .parse()
            .map_err(|e| BackendError::BadRequest(format!("attestation_data_root: {e}")))?;
        let aggregate = self
            .dutydb
            .await_aggregate(slot, root, self.deadline(slot, 1))
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        serde_json::to_value(aggregate).map_err(|e| BackendError::Internal(e.to_string()))
    }

    async fn sync_committee_contribution(
        &self,
        slot: u64,
        subcommittee_index: u64,
        beacon_block_root: String,
    ) -> Result<Value, BackendError> {
        self.check_remote("sync_committee_contribution")?;
        let root: Root = beacon_block_root
            .parse()
            .map_err(|e| BackendError::BadRequest(format!("beacon_block_root: {e}")))?;
        let c = self
            .dutydb
            .await_contribution(slot, subcommittee_index, self.deadline(slot, 1))
            .await
            .map_err(|e| BackendError::Unavailable(e.to_string()))?;
        if c.beacon_block_root != root {
            // The VC's head moved after the cluster decided the slot's sync root (it follows
            // the beacon node's head events): the DV's contribution is the decided one.
            tracing::debug!(slot, subcommittee_index, asked = %root, decided = %c.beacon_block_root, "sync committee contribution over the decided root, not the VC's head");
        }
        serde_json::to_value(c).map_err(|e| BackendError::Internal(e.to_string()))
    }

    async fn submit_aggregate_and_proofs(
        &self,
        share_index: u64,
        aggregates: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.check_share(share_index)?;
        self.check_remote("submit_aggregate_and_proofs")?;
        let items = aggregates
            .into_iter()
            .map(|v| {
                let a: SignedAggregateAndProof<P> = parse(v, "signed aggregate and proof")?;
                let slot = a.message.aggregate.data.slot;
                let pubkey = self.dv_of(a.message.aggregator_index, "message.aggregator_index")?;
                let object = SignedObject::AggregateAndProof {
                    message_root: Root::of(&a.message),
                };
                let duty = Duty::new(slot, DutyKind::Aggregation);
                Ok(Signed {
                    duty,
                    pubkey,
                    object,
                    signature: a.signature,
                    deadline: self.deadline(slot, 1),
                })
            })
            .collect();
        self.take_all(share_index, items).await
    }

    async fn submit_contribution_and_proofs(
        &self,
        share_index: u64,
        contributions: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.check_share(share_index)?;
        self.check_remote("submit_contribution_and_proofs")?;
        let items = contributions
            .into_iter()
            .map(|v| {
                let c: SignedContributionAndProof<P> = parse(v, "signed contribution and proof")?;
                let slot = c.message.contribution.slot;
                let pubkey = self.dv_of(c.message.aggregator_index, "message.aggregator_index")?;
                let object = SignedObject::ContributionAndProof {
                    subcommittee_index: c.message.contribution.subcommittee_index,
                    message_root: Root::of(&c.message),
                };
                let duty = Duty::new(slot, DutyKind::SyncContribution);
                Ok(Signed {
                    duty,
                    pubkey,
                    object,
                    signature: c.signature,
                    deadline: self.deadline(slot, 1),
                })
            })
            .collect();
        self.take_all(share_index, items).await
    }

    async fn submit_voluntary_exit(
        &self,
        share_index: u64,
        exit: Value,
    ) -> Result<(), BackendError> {
        self.check_share(share_index)?;
        let e: SignedVoluntaryExit = parse(exit, "signed voluntary exit")?;
        let pubkey = self.dv_of(e.message.validator_index, "message.validator_index")?;
        let root = self.schedule.voluntary_exit_signing_root(&e.message);
        // The combined exit (a remote-signer VC submitting what it got): already broadcast.
        if self.dutydb.combined(pubkey, root) == Some(e.signature) {
            return Ok(());
        }
        // A partial exit of this node's share (a VC holding the share, or `dvnode exit`).
        let msg = ParSigMsg {
            duty: Duty::new(
                self.schedule.epoch_start_slot(e.message.epoch),
                DutyKind::Exit,
            ),
            pubkey,
            share_index,
            object: SignedObject::Exit { exit: e.message },
            signature: e.signature,
        };
        let deadline = Instant::now() + Duration::from_secs(self.schedule.seconds_per_slot());
        self.parsig
            .submit_local(msg, deadline)
            .await
            .map_err(rejected)
    }
}
