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
//! - aggregation endpoints: the validator API's default (a clear "unsupported" error).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::time::Instant;

use crate::clock::SlotClock;
use crate::duty::{Duty, DutyKind};
use crate::dutydb::DutyDb;
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{
    from_json_value, Attestation, BlsSignature, Preset, Root, SignedBeaconBlockAltair, Slot,
    SyncCommitteeMessage,
};
use crate::parsig::{ParSig, ParSigMsg, Rejection, SignedObject};
use crate::tracker::{Stage, Tracker};
use crate::validator_api::{BackendError, DutyBackend, ProducedBlock};

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

/// Submits every item of a batch in order and answers the first failure (a bad request names
/// the item's index), after trying them all.
async fn submit_each<F, Fut>(items: Vec<Value>, mut submit: F) -> Result<(), BackendError>
where
    F: FnMut(Value) -> Fut,
    Fut: std::future::Future<Output = Result<(), BackendError>>,
{
    let mut first_error = None;
    for (i, v) in items.into_iter().enumerate() {
        if let Err(e) = submit(v).await {
            first_error.get_or_insert(match e {
                BackendError::BadRequest(m) => BackendError::BadRequest(format!("[{i}]: {m}")),
                other => other,
            });
        }
    }
    first_error.map_or(Ok(()), Err)
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

    async fn submit_sync_message(&self, share_index: u64, v: Value) -> Result<(), BackendError> {
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
        let msg = ParSigMsg {
            duty: Duty::new(m.slot, DutyKind::SyncMessage),
            pubkey: def.pubkey,
            share_index,
            object: SignedObject::SyncMessage {
                block_root: m.beacon_block_root,
            },
            signature: m.signature,
        };
        self.parsig
            .submit_local(msg, self.deadline(m.slot, 1))
            .await
            .map_err(rejected)
    }

    async fn submit_attestation(&self, share_index: u64, v: Value) -> Result<(), BackendError> {
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
        let msg = ParSigMsg {
            duty: Duty::new(slot, DutyKind::Attester),
            pubkey: entry.def.pubkey,
            share_index,
            object: SignedObject::Attestation { data: att.data },
            signature: att.signature,
        };
        self.parsig
            .submit_local(msg, self.deadline(slot, 1))
            .await
            .map_err(rejected)
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
        let msg = ParSigMsg {
            duty: Duty::new(slot, DutyKind::Randao),
            pubkey: proposer.pubkey,
            share_index,
            object: SignedObject::Randao {
                epoch: self.schedule.epoch_at_slot(slot),
            },
            signature: reveal,
        };
        let deadline = self.deadline(slot, 1);
        self.parsig
            .submit_local(msg, deadline)
            .await
            .map_err(rejected)?;
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
        submit_each(attestations, |v| self.submit_attestation(share_index, v)).await
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
        let msg = ParSigMsg {
            duty: Duty::new(slot, DutyKind::Proposer),
            pubkey: decided.pubkey,
            share_index,
            object: SignedObject::Block { block_root },
            signature: signed.signature,
        };
        self.parsig
            .submit_local(msg, self.deadline(slot, 1))
            .await
            .map_err(rejected)
    }

    async fn submit_sync_committee_messages(
        &self,
        share_index: u64,
        messages: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.check_share(share_index)?;
        submit_each(messages, |v| self.submit_sync_message(share_index, v)).await
    }
}
