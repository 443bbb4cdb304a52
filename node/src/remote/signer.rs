//! The distributed validator's [`Signer`]: what dvnode answers a VC's signing request with.
//!
//! Per request (already parsed, and checked against this chain by the Web3Signer API, its
//! signing root recomputed here):
//!
//! - slashable and decided objects — `ATTESTATION`, `BLOCK_V2`, `AGGREGATE_AND_PROOF`,
//!   `SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF`, and `SYNC_COMMITTEE_MESSAGE` — must equal what the
//!   cluster decided for the duty (the decided value is in the duty DB only once the slashing
//!   DB recorded it). An aggregate and proof must carry the decided aggregate, the DV's
//!   validator index and the **combined** selection proof. Anything else: 412, never signed.
//!   A sync message over another head than the decided one is refused too, but this node still
//!   makes its partial of the decided message: the VC takes its head from the beacon node's
//!   event stream, which may move between the cluster's decision and the request;
//! - `RANDAO_REVEAL` needs a scheduled proposal of the DV in the epoch; `VOLUNTARY_EXIT` must
//!   name the DV's validator index;
//! - then this node's partial signature is made with its share ([`ParSig::sign_own`]: it
//!   verifies the object again, and is a no-op if made before), exchanged with the peers over
//!   the partial-signature protocol, and the answer is the **combined** signature once a
//!   threshold of partials combined and verified against the DV key (503 if that does not happen
//!   by the duty's deadline).
//!
//! Selection proofs (`AGGREGATION_SLOT`, `SYNC_COMMITTEE_SELECTION_PROOF`) are combined ahead
//! of time by the fetch stage as soon as the duties are known; a request takes the combined
//! proof (making this node's partial first if that has not happened yet) and waits for it a
//! bounded time. A VC drops every duty of an epoch (attestation selection proofs) or of a slot
//! (sync selection proofs) when one such request fails, so a proof that cannot be combined in
//! time is **not** answered with an error: the answer is a placeholder that the VC's
//! aggregator rule reads as "not an aggregator" wherever the committee size allows (counted in
//! `remote_sign_selection_placeholders_total`, logged). The placeholder is not a signature; it
//! never reaches the chain — an aggregate or contribution carrying it is refused (412), as it
//! is not the combined proof — and the validator keeps its attestation and sync message duties.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::warn;

use crate::clock::{unix_now, SlotClock};
use crate::duty::{Duty, DutyKind};
use crate::dutydb::DutyDb;
use crate::eth::aggregate::{is_aggregator, is_sync_committee_aggregator};
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{BlsPubkey, BlsSignature, Preset, Root, Slot};
use crate::parsig::{ParSig, Rejection, SignedObject};
use crate::web3signer::request::BlockToSign;
use crate::web3signer::{SignError, SignObject, SignRequest, Signer};

/// How long a selection proof request waits for the combined proof at most (in slots).
const SELECTION_WAIT_SLOTS: u64 = 1;
/// How long a voluntary exit request waits for the other operators' partials (in epochs).
const EXIT_WAIT_EPOCHS: u64 = 1;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

/// Metrics of the DV signer.
#[derive(Clone, Debug, Default)]
pub struct SignerMetrics {
    placeholders: Family<TypeLabel, Counter>,
}

impl SignerMetrics {
    /// Registers the families into `registry`.
    pub fn new(registry: &mut Registry) -> SignerMetrics {
        let m = SignerMetrics::default();
        registry.register(
            "remote_sign_selection_placeholders",
            "Selection proof requests answered with a placeholder because the combined proof was not ready in time",
            m.placeholders.clone(),
        );
        m
    }
}

/// See the [module docs](self).
pub struct DvSigner<P: Preset> {
    dutydb: Arc<DutyDb<P>>,
    parsig: Arc<ParSig<P>>,
    schedule: Arc<ForkSchedule>,
    clock: SlotClock,
    pubkeys: Vec<BlsPubkey>,
    served: HashSet<BlsPubkey>,
    metrics: SignerMetrics,
}

fn rejected(field: &str, e: Rejection) -> SignError {
    match e {
        Rejection::Overloaded => SignError::unavailable(format!("{field}: {e}")),
        other => SignError::refused(format!("{field}: {other}")),
    }
}

/// A stand-in selection proof: bytes derived from the signing root that the aggregator rule
/// `selected` reads as "not selected", if any of the first tries does (with committees below
/// the aggregator target everyone is selected, whatever the proof).
fn placeholder(root: &Root, selected: impl Fn(&BlsSignature) -> bool) -> BlsSignature {
    let mut first = None;
    for i in 0u8..64 {
        let mut bytes = [0u8; 96];
        for (k, chunk) in bytes.chunks_mut(32).enumerate() {
            let h = Sha256::new()
                .chain_update(b"dvnode selection proof placeholder")
                .chain_update(root.0)
                .chain_update([i, k as u8])
                .finalize();
            chunk.copy_from_slice(&h);
        }
        let sig = BlsSignature(bytes);
        if !selected(&sig) {
            return sig;
        }
        first.get_or_insert(sig);
    }
    first.expect("at least one try")
}

impl<P: Preset> DvSigner<P> {
    /// A signer for the DVs `pubkeys` over the workflow's duty DB and partial-signature stage
    /// (which must hold this node's share keys).
    pub fn new(
        dutydb: Arc<DutyDb<P>>,
        parsig: Arc<ParSig<P>>,
        schedule: Arc<ForkSchedule>,
        pubkeys: Vec<BlsPubkey>,
        metrics: SignerMetrics,
    ) -> DvSigner<P> {
        DvSigner {
            clock: SlotClock::of(&schedule),
            served: pubkeys.iter().copied().collect(),
            dutydb,
            parsig,
            schedule,
            pubkeys,
            metrics,
        }
    }

    /// `Instant` at which `slots` slots after the start of `slot` begin.
    fn deadline(&self, slot: Slot, slots: u64) -> Instant {
        let end = self.clock.slot_start_ms(slot.saturating_add(slots));
        let now = unix_now().as_millis() as u64;
        Instant::now() + Duration::from_millis(end.saturating_sub(now))
    }

    /// Makes this node's partial of `object` and waits for the combined signature.
    async fn combine(
        &self,
        field: &str,
        duty: Duty,
        pubkey: BlsPubkey,
        object: SignedObject,
        root: Root,
        deadline: Instant,
    ) -> Result<BlsSignature, SignError> {
        if let Some(sig) = self.dutydb.combined(pubkey, root) {
            return Ok(sig);
        }
        let expected = self
            .parsig
            .sign_own(duty, pubkey, object, deadline)
            .await
            .map_err(|e| rejected(field, e))?;
        if expected != root {
            return Err(SignError::internal(format!(
                "{field}: the partial signature is over {expected}, the request over {root}"
            )));
        }
        self.dutydb
            .await_combined(pubkey, root, deadline)
            .await
            .map_err(|_| {
                SignError::unavailable(format!(
                    "{field}: no combined signature of {duty} for {pubkey} by the duty's deadline \
                     (fewer than a threshold of the cluster's nodes signed it)"
                ))
            })
    }

    /// A selection proof: the combined one (`combined`), or a placeholder if it was not
    /// there in time.
    fn or_placeholder(
        &self,
        duty: Duty,
        pubkey: BlsPubkey,
        root: &Root,
        combined: Result<BlsSignature, SignError>,
        selected: impl Fn(&BlsSignature) -> bool,
    ) -> Result<BlsSignature, SignError> {
        match combined {
            Ok(sig) => Ok(sig),
            Err(e) if e.status.is_server_error() => {
                warn!(%duty, %pubkey, error = %e, "selection proof not combined in time; answering a non-aggregator placeholder so the VC keeps its duties");
                self.metrics
                    .placeholders
                    .get_or_create(&TypeLabel {
                        r#type: duty.kind.as_str().to_owned(),
                    })
                    .inc();
                Ok(placeholder(root, selected))
            }
            Err(e) => Err(e),
        }
    }

    /// Checks an aggregator's message `got` (index, selection proof, aggregate) against the one
    /// the cluster signs, `want`, naming the first field that differs. `body` names the
    /// aggregate field and what it aggregates.
    fn check_aggregator<T: PartialEq>(
        &self,
        f: &str,
        pubkey: BlsPubkey,
        got: (u64, &BlsSignature, &T),
        want: (u64, &BlsSignature, &T),
        body: (&str, String),
    ) -> Result<(), SignError> {
        if got.0 != want.0 {
            return Err(self.refuse(
                &format!("{f}.aggregator_index"),
                format!("{} is not {pubkey}'s index {}", got.0, want.0),
            ));
        }
        if got.1 != want.1 {
            return Err(self.refuse(
                &format!("{f}.selection_proof"),
                "not the cluster's combined selection proof",
            ));
        }
        if got.2 != want.2 {
            let (field, of) = body;
            return Err(self.refuse(
                &format!("{f}.{field}"),
                format!("not the {field} the cluster decided for {of}"),
            ));
        }
        Ok(())
    }

    fn refuse(&self, field: &str, what: impl std::fmt::Display) -> SignError {
        SignError::refused(format!("{field}: {what}"))
    }
}

#[async_trait]
impl<P: Preset> Signer<P> for DvSigner<P> {
    fn pubkeys(&self) -> Vec<BlsPubkey> {
        self.pubkeys.clone()
    }

    fn serves(&self, pubkey: &BlsPubkey) -> bool {
        self.served.contains(pubkey)
    }

    async fn sign(
        &self,
        pubkey: BlsPubkey,
        req: SignRequest<P>,
        root: Root,
    ) -> Result<BlsSignature, SignError> {
        match req.object {
            SignObject::Attestation(data) => {
                let f = "attestation";
                let slot = data.slot;
                let duty = Duty::new(slot, DutyKind::Attester);
                if self.dutydb.attester_def(slot, pubkey).is_none() {
                    return Err(
                        self.refuse(f, format!("{pubkey} has no attester duty at slot {slot}"))
                    );
                }
                let deadline = self.deadline(slot, 2);
                let decided = self
                    .dutydb
                    .await_attester(slot, pubkey, deadline)
                    .await
                    .map_err(|e| SignError::unavailable(format!("{f}: {e} (no consensus)")))?;
                if decided.data != data {
                    return Err(self.refuse(
                        f,
                        format!(
                            "not the attestation data the cluster decided for {pubkey} at slot {slot} (decided head {}, target {}; asked head {}, target {})",
                            decided.data.beacon_block_root, decided.data.target.epoch,
                            data.beacon_block_root, data.target.epoch
                        ),
                    ));
                }
                self.combine(
                    f,
                    duty,
                    pubkey,
                    SignedObject::Attestation { data },
                    root,
                    deadline,
                )
                .await
            }
            SignObject::Block(block) => {
                let f = "beacon_block";
                let slot = block.slot();
                let duty = Duty::new(slot, DutyKind::Proposer);
                if self.dutydb.proposer(slot).map(|p| p.pubkey) != Some(pubkey) {
                    return Err(self.refuse(f, format!("{pubkey} does not propose at slot {slot}")));
                }
                let deadline = self.deadline(slot, 1);
                let decided = self
                    .dutydb
                    .await_block(slot, deadline)
                    .await
                    .map_err(|e| SignError::unavailable(format!("{f}: {e} (no consensus)")))?;
                let block_root = block.block_root();
                let decided_root = Root::of(&decided.block);
                if block_root != decided_root {
                    let what = match block {
                        BlockToSign::Altair(_) => "block",
                        BlockToSign::Header(_) => "block header",
                    };
                    return Err(self.refuse(
                        f,
                        format!("{what} {block_root} is not the block decided for slot {slot} ({decided_root})"),
                    ));
                }
                self.combine(
                    f,
                    duty,
                    pubkey,
                    SignedObject::Block { block_root },
                    root,
                    deadline,
                )
                .await
            }
            SignObject::RandaoReveal { epoch } => {
                let f = "randao_reveal";
                let slot = self
                    .clock
                    .slots_of(epoch)
                    .find(|s| self.dutydb.proposer(*s).map(|p| p.pubkey) == Some(pubkey))
                    .ok_or_else(|| {
                        self.refuse(f, format!("{pubkey} has no proposer duty in epoch {epoch}"))
                    })?;
                let duty = Duty::new(slot, DutyKind::Randao);
                self.combine(
                    f,
                    duty,
                    pubkey,
                    SignedObject::Randao { epoch },
                    root,
                    self.deadline(slot, 1),
                )
                .await
            }
            SignObject::AggregationSlot { slot } => {
                let f = "aggregation_slot";
                let duty = Duty::new(slot, DutyKind::SelectionProof);
                let committee_length = self
                    .dutydb
                    .attester_def(slot, pubkey)
                    .map(|d| d.committee_length)
                    .unwrap_or(0);
                let deadline = self
                    .deadline(slot, 0)
                    .min(Instant::now() + self.clock.slot_duration() * SELECTION_WAIT_SLOTS as u32);
                let object = SignedObject::SelectionProof { slot };
                let combined = self.combine(f, duty, pubkey, object, root, deadline).await;
                self.or_placeholder(duty, pubkey, &root, combined, |p| {
                    is_aggregator(committee_length, p)
                })
            }
            SignObject::SyncSelectionProof(data) => {
                let f = "sync_aggregator_selection_data";
                let duty = Duty::new(data.slot, DutyKind::SyncSelectionProof);
                let third = self.clock.slot_duration() / 3;
                let deadline = (self.deadline(data.slot, 0) + third)
                    .min(Instant::now() + self.clock.slot_duration() * SELECTION_WAIT_SLOTS as u32);
                let object = SignedObject::SyncSelectionProof { data };
                let combined = self.combine(f, duty, pubkey, object, root, deadline).await;
                self.or_placeholder(
                    duty,
                    pubkey,
                    &root,
                    combined,
                    is_sync_committee_aggregator::<P>,
                )
            }
            SignObject::AggregateAndProof(m) => {
                let f = "aggregate_and_proof";
                let slot = m.aggregate.data.slot;
                let duty = Duty::new(slot, DutyKind::Aggregation);
                let deadline = self.deadline(slot, 2);
                let expected = self
                    .parsig
                    .aggregate_and_proof(slot, pubkey, deadline)
                    .await
                    .map_err(|e| rejected(f, e))?;
                self.check_aggregator(
                    f,
                    pubkey,
                    (m.aggregator_index, &m.selection_proof, &m.aggregate),
                    (
                        expected.aggregator_index,
                        &expected.selection_proof,
                        &expected.aggregate,
                    ),
                    ("aggregate", format!("committee {}", m.aggregate.data.index)),
                )?;
                let object = SignedObject::AggregateAndProof {
                    message_root: Root::of(m.as_ref()),
                };
                self.combine(f, duty, pubkey, object, root, deadline).await
            }
            SignObject::ContributionAndProof(m) => {
                let f = "contribution_and_proof";
                let slot = m.contribution.slot;
                let sub = m.contribution.subcommittee_index;
                let duty = Duty::new(slot, DutyKind::SyncContribution);
                let deadline = self.deadline(slot, 2);
                let expected = self
                    .parsig
                    .contribution_and_proof(slot, pubkey, sub, deadline)
                    .await
                    .map_err(|e| rejected(f, e))?;
                self.check_aggregator(
                    f,
                    pubkey,
                    (m.aggregator_index, &m.selection_proof, &m.contribution),
                    (
                        expected.aggregator_index,
                        &expected.selection_proof,
                        &expected.contribution,
                    ),
                    ("contribution", format!("subcommittee {sub}")),
                )?;
                let object = SignedObject::ContributionAndProof {
                    subcommittee_index: sub,
                    message_root: Root::of(m.as_ref()),
                };
                self.combine(f, duty, pubkey, object, root, deadline).await
            }
            SignObject::SyncCommitteeMessage {
                beacon_block_root,
                slot,
            } => {
                let f = "sync_committee_message";
                let duty = Duty::new(slot, DutyKind::SyncMessage);
                if self.dutydb.sync_member_by_key(slot, pubkey).is_none() {
                    return Err(self.refuse(
                        f,
                        format!("{pubkey} is not a sync committee member at slot {slot}"),
                    ));
                }
                let deadline = self.deadline(slot, 1);
                let decided = self
                    .dutydb
                    .await_sync_root(slot, deadline)
                    .await
                    .map_err(|e| SignError::unavailable(format!("{f}: {e} (no consensus)")))?;
                let object = SignedObject::SyncMessage {
                    block_root: decided,
                };
                if decided != beacon_block_root {
                    // The VC takes the head from the beacon node's head events, which can move
                    // between the cluster's decision and its request. It asked for the duty,
                    // so this node still adds its partial to the message the cluster decided
                    // (sync messages are not slashable; without it a cluster with a node down
                    // misses the slot), but never signs the VC's other root.
                    if let Err(e) = self.parsig.sign_own(duty, pubkey, object, deadline).await {
                        warn!(%duty, %pubkey, error = %e, "sync message: no partial over the decided root");
                    }
                    return Err(self.refuse(
                        "sync_committee_message.beacon_block_root",
                        format!("{beacon_block_root} is not the root the cluster decided for slot {slot} ({decided}); this node signed the decided one"),
                    ));
                }
                self.combine(f, duty, pubkey, object, root, deadline).await
            }
            SignObject::VoluntaryExit(exit) => {
                let f = "voluntary_exit";
                match self.dutydb.index_of(pubkey) {
                    Some(i) if i == exit.validator_index => {}
                    Some(i) => {
                        return Err(self.refuse(
                            "voluntary_exit.validator_index",
                            format!("{} is not {pubkey}'s index {i}", exit.validator_index),
                        ))
                    }
                    None => {
                        return Err(SignError::unavailable(format!(
                            "{f}: the validator index of {pubkey} is not known yet"
                        )))
                    }
                }
                let duty = Duty::new(self.schedule.epoch_start_slot(exit.epoch), DutyKind::Exit);
                let deadline = Instant::now()
                    + self.clock.slot_duration()
                        * (EXIT_WAIT_EPOCHS * self.schedule.slots_per_epoch()) as u32;
                self.combine(f, duty, pubkey, SignedObject::Exit { exit }, root, deadline)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eth::types::{Mainnet, Minimal};

    #[test]
    fn placeholders_read_as_non_aggregators_where_the_committee_allows() {
        let root = Root([3; 32]);
        let p = placeholder(&root, |s| is_aggregator(512, s));
        assert!(!is_aggregator(512, &p));
        assert_eq!(
            p,
            placeholder(&root, |s| is_aggregator(512, s)),
            "deterministic"
        );
        assert!(!is_sync_committee_aggregator::<Mainnet>(&placeholder(
            &root,
            is_sync_committee_aggregator::<Mainnet>
        )));
        // Small committees: everyone aggregates; a placeholder is still answered.
        let small = placeholder(&root, |s| is_aggregator(8, s));
        assert!(is_aggregator(8, &small));
        assert!(is_sync_committee_aggregator::<Minimal>(&small));
    }
}
