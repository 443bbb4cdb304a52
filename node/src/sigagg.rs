//! Signature aggregation: threshold partials → the DV's signature → the signed object.
//!
//! Partials are Lagrange-combined ([`tbls::combine`]) and the result is verified against the DV
//! pubkey over the signing root before anything leaves the node; it is kept in the [`DutyDb`]
//! by DV and signing root (the remote-signer answers and the combined selection proofs come from
//! there). The signed object is built from the decided value in the [`DutyDb`], never from what
//! a peer sent.
//!
//! [`SigAgg::run`] runs the stage: every [`Threshold`] the partial-signature stage emits is
//! aggregated and handed to the [`Broadcaster`]; the tracker learns each validator's outcome.

use std::sync::Arc;

use ssz_types::BitList;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

use crate::broadcast::Broadcaster;

use crate::duty::DutyKind;
use crate::dutydb::DutyDb;
use crate::eth::aggregate::{SignedAggregateAndProof, SignedContributionAndProof};
use crate::eth::types::{
    Attestation, BlsPubkey, BlsSignature, Preset, Root, SignedBeaconBlockAltair,
    SignedVoluntaryExit, SyncCommitteeMessage,
};
use crate::keys::tbls;
use crate::parsig::{ParSig, SignedObject, Threshold};
use crate::tracker::{Inclusion, Reason, Stage, Tracker};
use crate::value::Signed;

/// Why aggregation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigAggError {
    /// Combining failed (too few or duplicate shares, undecodable signature).
    #[error("cannot combine partial signatures: {0}")]
    Combine(String),
    /// The combined signature does not verify against the DV pubkey.
    #[error("combined signature does not verify against DV {0}")]
    Verify(BlsPubkey),
    /// The decided value needed to build the signed object is gone.
    #[error("cannot build the signed object: {0}")]
    Build(String),
}

/// Combines `partials` (`(share index, signature)`) with threshold `t` and verifies the result
/// against `pubkey` over `signing_root`.
pub fn aggregate(
    partials: &[(u64, BlsSignature)],
    t: usize,
    pubkey: &BlsPubkey,
    signing_root: &Root,
) -> Result<BlsSignature, SigAggError> {
    let sigs = partials
        .iter()
        .map(|(i, s)| {
            tbls::Signature::from_bytes(&s.0)
                .map(|s| (*i, s))
                .map_err(|e| SigAggError::Combine(format!("share {i}: {e:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let combined = tbls::combine(&sigs, t).map_err(|e| SigAggError::Combine(e.to_string()))?;
    let pk = tbls::PublicKey::from_bytes(&pubkey.0).map_err(|_| SigAggError::Verify(*pubkey))?;
    if !tbls::verify(&pk, &signing_root.0, &combined) {
        return Err(SigAggError::Verify(*pubkey));
    }
    Ok(BlsSignature(combined.to_bytes()))
}

/// Aggregates [`Threshold`]s into [`Signed`] objects.
pub struct SigAgg<P: Preset> {
    threshold: usize,
    dutydb: Arc<DutyDb<P>>,
    /// Rebuilds aggregate and contribution messages from the decided values (remote-signer
    /// mode).
    parsig: Option<Arc<ParSig<P>>>,
}

impl<P: Preset> SigAgg<P> {
    /// An aggregator with threshold `t`.
    pub fn new(threshold: usize, dutydb: Arc<DutyDb<P>>) -> SigAgg<P> {
        SigAgg {
            threshold,
            dutydb,
            parsig: None,
        }
    }

    /// Builds signed aggregates and contributions too (remote-signer mode), with the messages
    /// `parsig` verified the partials against.
    pub fn with_aggregation(mut self, parsig: Arc<ParSig<P>>) -> SigAgg<P> {
        self.parsig = Some(parsig);
        self
    }

    fn messages(&self) -> Result<&ParSig<P>, SigAggError> {
        self.parsig
            .as_deref()
            .ok_or_else(|| SigAggError::Build("aggregation is not enabled".into()))
    }

    /// Aggregates every threshold of `ready` (one task each) and broadcasts the signed object,
    /// until the channel closes.
    pub async fn run(
        self: Arc<Self>,
        mut ready: mpsc::Receiver<Threshold>,
        broadcaster: Arc<Broadcaster<P>>,
        tracker: Tracker,
    ) {
        while let Some(th) = ready.recv().await {
            let sigagg = self.clone();
            let broadcaster = broadcaster.clone();
            let tracker = tracker.clone();
            tokio::spawn(async move {
                match sigagg.aggregate(&th).await {
                    Ok(signed) => {
                        tracker.validator_stage(th.duty, th.pubkey, Stage::Aggregated);
                        let expect = Inclusion::of(&signed);
                        if broadcaster.broadcast(th.duty, signed).await {
                            tracker.broadcast_validator(th.duty, th.pubkey, expect);
                        } else {
                            tracker.fail_validator(
                                th.duty,
                                th.pubkey,
                                Reason::BroadcastBnError,
                                "the beacon node did not take the signed object",
                            );
                        }
                    }
                    Err(e) => {
                        warn!(duty = %th.duty, pubkey = %th.pubkey, error = %e, "aggregation failed");
                        tracker.fail_validator(
                            th.duty,
                            th.pubkey,
                            Reason::InsufficientPeerSignatures,
                            &e.to_string(),
                        );
                    }
                }
            });
        }
    }

    /// Combines, verifies and builds the signed object of `th`.
    pub async fn aggregate(&self, th: &Threshold) -> Result<Signed<P>, SigAggError> {
        let sig = aggregate(&th.partials, self.threshold, &th.pubkey, &th.signing_root)?;
        let slot = th.duty.slot;
        // Exits are kept until the node stops (one per validator, ever); the rest with its slot.
        let keep_for = if th.duty.kind == DutyKind::Exit {
            u64::MAX
        } else {
            slot
        };
        self.dutydb
            .store_combined(th.pubkey, th.signing_root, keep_for, sig)
            .map_err(|e| SigAggError::Build(e.to_string()))?;
        // The decided value is there: every partial was verified against it.
        let now = Instant::now();
        let build = |e: crate::dutydb::DutyDbError| SigAggError::Build(e.to_string());
        match (th.duty.kind, th.object) {
            (DutyKind::Attester, SignedObject::Attestation { data }) => {
                let e = self
                    .dutydb
                    .await_attester(slot, th.pubkey, now)
                    .await
                    .map_err(build)?;
                if e.data != data {
                    return Err(SigAggError::Build("decided data changed".into()));
                }
                let mut bits = BitList::with_capacity(e.def.committee_length as usize)
                    .map_err(|e| SigAggError::Build(format!("aggregation bits: {e:?}")))?;
                bits.set(e.def.validator_committee_index as usize, true)
                    .map_err(|e| SigAggError::Build(format!("aggregation bit: {e:?}")))?;
                Ok(Signed::Attestation(Box::new(Attestation {
                    aggregation_bits: bits,
                    data,
                    signature: sig,
                })))
            }
            (DutyKind::Proposer, SignedObject::Block { block_root }) => {
                let p = self.dutydb.await_block(slot, now).await.map_err(build)?;
                if Root::of(&p.block) != block_root {
                    return Err(SigAggError::Build("decided block changed".into()));
                }
                Ok(Signed::Block(Box::new(SignedBeaconBlockAltair {
                    message: p.block,
                    signature: sig,
                    extra: Default::default(),
                })))
            }
            (DutyKind::Randao, SignedObject::Randao { .. }) => Ok(Signed::Randao(sig)),
            (DutyKind::SyncMessage, SignedObject::SyncMessage { block_root }) => {
                let def = match self.dutydb.defs(th.duty) {
                    Some(crate::duty::DutyDefs::SyncMessage(m)) => {
                        m.into_iter().find(|d| d.pubkey == th.pubkey)
                    }
                    _ => None,
                }
                .ok_or_else(|| SigAggError::Build("sync committee duty is gone".into()))?;
                Ok(Signed::SyncMessage(SyncCommitteeMessage {
                    slot,
                    beacon_block_root: block_root,
                    validator_index: def.validator_index,
                    signature: sig,
                }))
            }
            (DutyKind::SelectionProof, SignedObject::SelectionProof { .. }) => {
                Ok(Signed::SelectionProof(sig))
            }
            (DutyKind::SyncSelectionProof, SignedObject::SyncSelectionProof { .. }) => {
                Ok(Signed::SyncSelectionProof(sig))
            }
            (DutyKind::Aggregation, SignedObject::AggregateAndProof { message_root }) => {
                let message = self
                    .messages()?
                    .aggregate_and_proof(slot, th.pubkey, now)
                    .await
                    .map_err(|e| SigAggError::Build(e.to_string()))?;
                if Root::of(&message) != message_root {
                    return Err(SigAggError::Build("decided aggregate changed".into()));
                }
                Ok(Signed::AggregateAndProof(Box::new(
                    SignedAggregateAndProof {
                        message,
                        signature: sig,
                    },
                )))
            }
            (
                DutyKind::SyncContribution,
                SignedObject::ContributionAndProof {
                    subcommittee_index,
                    message_root,
                },
            ) => {
                let message = self
                    .messages()?
                    .contribution_and_proof(slot, th.pubkey, subcommittee_index, now)
                    .await
                    .map_err(|e| SigAggError::Build(e.to_string()))?;
                if Root::of(&message) != message_root {
                    return Err(SigAggError::Build("decided contribution changed".into()));
                }
                Ok(Signed::ContributionAndProof(Box::new(
                    SignedContributionAndProof {
                        message,
                        signature: sig,
                    },
                )))
            }
            (DutyKind::Exit, SignedObject::Exit { exit }) => {
                Ok(Signed::Exit(SignedVoluntaryExit {
                    message: exit,
                    signature: sig,
                }))
            }
            (kind, object) => Err(SigAggError::Build(format!(
                "{kind} duty with a {object:?} object"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn combines_threshold_partials_and_rejects_wrong_ones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sk = tbls::random_secret(&mut rng);
        let pk = BlsPubkey(sk.sk_to_pk().to_bytes());
        let shares = tbls::split(&sk, 4, 3, &mut rng).unwrap();
        let root = Root([5; 32]);
        let partial = |i: usize, msg: &[u8]| {
            (
                i as u64 + 1,
                BlsSignature(tbls::sign(&shares[i], msg).to_bytes()),
            )
        };
        let good: Vec<_> = [0, 2, 3].iter().map(|&i| partial(i, &root.0)).collect();
        let sig = aggregate(&good, 3, &pk, &root).unwrap();
        assert_eq!(sig.0, tbls::sign(&sk, &root.0).to_bytes());
        // Too few.
        assert!(matches!(
            aggregate(&good[..2], 3, &pk, &root),
            Err(SigAggError::Combine(_))
        ));
        // One partial over another root: the combined signature does not verify.
        let mut bad = good.clone();
        bad[1] = partial(2, &[6; 32]);
        assert_eq!(aggregate(&bad, 3, &pk, &root), Err(SigAggError::Verify(pk)));
        // Garbage bytes.
        bad[1] = (3, BlsSignature([0xff; 96]));
        assert!(matches!(
            aggregate(&bad, 3, &pk, &root),
            Err(SigAggError::Combine(_))
        ));
    }
}
