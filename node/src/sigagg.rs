//! Signature aggregation: threshold partials → the DV's signature → the signed object.
//!
//! Partials are Lagrange-combined ([`tbls::combine`]). For a DV whose public shares interpolate
//! to its key (checked once at start, [`SigAgg::trusting_verified_partials`]) the combination
//! *is* the DV signature and is not checked again, because of what [`ParSig`] guarantees about
//! every [`Threshold`]: each partial (the VC's, this node's own in remote-signer mode, the
//! peers') was verified against the lock's public share of its index over the signing root
//! computed locally from the decided value, with the subgroup check; the indices are distinct
//! (one partial per share index). A subgroup signature that verifies under `pk_i = sk_i·G` is
//! exactly `sk_i·H(m)` (the pairing is non-degenerate), so `Σ λ_i·σ_i = (Σ λ_i·sk_i)·H(m)`, and
//! the start-up check makes `Σ λ_i·pk_i` the DV key for every `t` distinct indices, i.e.
//! `Σ λ_i·sk_i = sk`. The result is the same bytes the second check would have accepted; a bad
//! partial is refused before it can be combined (parsig tests). Charon (`sigagg.NewVerifier`)
//! and SSV (`VerifyReconstructedSignature`) verify the reconstruction as a second line of
//! defence; here that check was the node's busiest queue at 1,000 validators
//! (docs/PERFORMANCE.md). For any other DV the result is
//! verified against the DV pubkey over the signing root before anything leaves the node — in
//! random-linear-combination batches with the other DVs' combined signatures on a thread of its
//! own ([`BatchVerifier`]), against DV public keys decompressed once and cached. The signature
//! is kept in the [`DutyDb`]
//! by DV and signing root (the remote-signer answers and the combined selection proofs come from
//! there). The signed object is built from the decided value in the [`DutyDb`], never from what
//! a peer sent.
//!
//! [`SigAgg::run`] runs the stage: every [`Threshold`] the partial-signature stage emits is
//! aggregated and handed to the [`Broadcaster`]; the tracker learns each validator's outcome.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
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
use crate::keys::batch::{BatchItem, BatchVerifier};
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

/// Combines `partials` (`(share index, signature)`) with threshold `t` (not verified).
fn combine(partials: &[(u64, BlsSignature)], t: usize) -> Result<tbls::Signature, SigAggError> {
    let sigs = partials
        .iter()
        .map(|(i, s)| {
            tbls::Signature::from_bytes(&s.0)
                .map(|s| (*i, s))
                .map_err(|e| SigAggError::Combine(format!("share {i}: {e:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    tbls::combine(&sigs, t).map_err(|e| SigAggError::Combine(e.to_string()))
}

/// Combines `partials` (`(share index, signature)`) with threshold `t` and verifies the result
/// against `pubkey` over `signing_root` (one signature on its own; [`SigAgg`] verifies many in
/// batches).
pub fn aggregate(
    partials: &[(u64, BlsSignature)],
    t: usize,
    pubkey: &BlsPubkey,
    signing_root: &Root,
) -> Result<BlsSignature, SigAggError> {
    let combined = combine(partials, t)?;
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
    /// Checks the combined signatures (a thread of its own, `sigagg_verify_seconds`).
    verifier: BatchVerifier,
    /// DV public keys, decompressed and validated once.
    keys: RwLock<HashMap<BlsPubkey, tbls::PublicKey>>,
    /// DVs whose public shares interpolate to their key ([`SigAgg::trusting_verified_partials`]):
    /// their combined signatures are not checked again.
    consistent: HashSet<BlsPubkey>,
    /// Rebuilds aggregate and contribution messages from the decided values (remote-signer
    /// mode).
    parsig: Option<Arc<ParSig<P>>>,
}

impl<P: Preset> SigAgg<P> {
    /// An aggregator with threshold `t`; registers `sigagg_verify_seconds` in `registry`.
    pub fn new(threshold: usize, dutydb: Arc<DutyDb<P>>, registry: &mut Registry) -> SigAgg<P> {
        // 0.1 ms … ~3 s.
        let verify_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "sigagg_verify_seconds",
            "Time of each batch verification of combined signatures (all DVs)",
            verify_seconds.clone(),
        );
        SigAgg {
            threshold,
            dutydb,
            verifier: BatchVerifier::new(Some(verify_seconds)),
            keys: RwLock::new(HashMap::new()),
            consistent: HashSet::new(),
            parsig: None,
        }
    }

    /// Skips the check of the combined signature for every DV of `dvs` (`(DV key, public shares
    /// in share-index order)`) whose public shares lie on one polynomial with the DV key at 0
    /// ([`tbls::shares_interpolate_to`]). Sound only when every partial is verified against its
    /// public share before it reaches this stage, as [`ParSig`] does: the Lagrange combination
    /// of `t` such partials is then the DV's signature. The other DVs (a broken lock) keep the
    /// check. Returns the aggregator and how many DVs keep it.
    pub fn trusting_verified_partials<'a>(
        mut self,
        dvs: impl IntoIterator<Item = (&'a tbls::PublicKey, &'a [tbls::PublicKey])>,
    ) -> (SigAgg<P>, usize) {
        let mut checked = 0;
        for (group, shares) in dvs {
            if tbls::shares_interpolate_to(group, shares, self.threshold) {
                self.consistent.insert(BlsPubkey(group.to_bytes()));
            } else {
                checked += 1;
            }
        }
        (self, checked)
    }

    /// Builds signed aggregates and contributions too (remote-signer mode), with the messages
    /// `parsig` verified the partials against.
    pub fn with_aggregation(mut self, parsig: Arc<ParSig<P>>) -> SigAgg<P> {
        self.parsig = Some(parsig);
        self
    }

    /// The validated public key of DV `pubkey` (decompressed on first use).
    fn key(&self, pubkey: &BlsPubkey) -> Result<tbls::PublicKey, SigAggError> {
        if let Some(pk) = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(pubkey)
        {
            return Ok(*pk);
        }
        let pk =
            tbls::PublicKey::key_validate(&pubkey.0).map_err(|_| SigAggError::Verify(*pubkey))?;
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*pubkey, pk);
        Ok(pk)
    }

    /// Combines `th`'s partials and, unless the DV's shares were found consistent, verifies the
    /// result against the DV key (in a batch with the other DVs' combined signatures checked
    /// meanwhile).
    async fn combine_verified(&self, th: &Threshold) -> Result<BlsSignature, SigAggError> {
        // The points parsig verified: no second decompression.
        let points: Vec<(u64, tbls::Signature)> = th
            .partials
            .iter()
            .map(|p| (p.share_index, p.point))
            .collect();
        let combined = tbls::combine(&points, self.threshold)
            .map_err(|e| SigAggError::Combine(e.to_string()))?;
        if self.consistent.contains(&th.pubkey) {
            return Ok(BlsSignature(combined.to_bytes()));
        }
        let item = BatchItem {
            public_key: self.key(&th.pubkey)?,
            message: th.signing_root.0,
            signature: combined,
        };
        if !self.verifier.verify(item).await {
            return Err(SigAggError::Verify(th.pubkey));
        }
        Ok(BlsSignature(combined.to_bytes()))
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
                        match broadcaster.broadcast(th.duty, signed).await {
                            Ok(()) => tracker.broadcast_validator(th.duty, th.pubkey, expect),
                            Err(why) => tracker.fail_validator(
                                th.duty,
                                th.pubkey,
                                Reason::BroadcastBnError,
                                &format!("the beacon node did not take the signed object: {why}"),
                            ),
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
        let sig = self.combine_verified(th).await?;
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
                let def = self
                    .dutydb
                    .sync_member_by_key(slot, th.pubkey)
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
    use crate::parsig::VerifiedPartial;
    use rand::SeedableRng;

    /// `partials` with their decompressed points (what parsig hands over).
    fn with_points(partials: &[(u64, BlsSignature)]) -> Vec<VerifiedPartial> {
        partials
            .iter()
            .map(|&(share_index, signature)| VerifiedPartial {
                share_index,
                signature,
                point: tbls::Signature::from_bytes(&signature.0).unwrap(),
            })
            .collect()
    }

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batch_verified_aggregation_names_each_bad_dv() {
        use crate::duty::Duty;
        use crate::eth::types::Minimal;
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut registry = Registry::default();
        let sigagg = Arc::new(SigAgg::<Minimal>::new(
            3,
            Arc::new(DutyDb::new()),
            &mut registry,
        ));
        let root = Root([7; 32]);
        let duty = Duty {
            slot: 5,
            kind: DutyKind::Randao,
        };
        // 12 DVs' thresholds checked concurrently (so in shared batches); DV 4's partials sign
        // another root and DV 9's come from another key's shares.
        let mut tasks = Vec::new();
        for dv in 0..12 {
            let sk = tbls::random_secret(&mut rng);
            let pubkey = BlsPubkey(sk.sk_to_pk().to_bytes());
            let signer = if dv == 9 {
                tbls::random_secret(&mut rng)
            } else {
                sk.clone()
            };
            let shares = tbls::split(&signer, 4, 3, &mut rng).unwrap();
            let msg = if dv == 4 { [8; 32] } else { root.0 };
            let partials: Vec<_> = [0, 1, 3]
                .iter()
                .map(|&i| {
                    (
                        i as u64 + 1,
                        BlsSignature(tbls::sign(&shares[i], &msg).to_bytes()),
                    )
                })
                .collect();
            let th = Threshold {
                duty,
                pubkey,
                object: SignedObject::Randao { epoch: 0 },
                signing_root: root,
                partials: with_points(&partials),
            };
            let sigagg = sigagg.clone();
            let expected = BlsSignature(tbls::sign(&sk, &root.0).to_bytes());
            tasks.push(tokio::spawn(async move {
                (dv, sigagg.aggregate(&th).await, expected, pubkey)
            }));
        }
        for t in tasks {
            let (dv, got, expected, pubkey) = t.await.unwrap();
            match dv {
                4 | 9 => assert_eq!(got, Err(SigAggError::Verify(pubkey)), "DV {dv}"),
                _ => assert_eq!(got, Ok(Signed::Randao(expected)), "DV {dv}"),
            }
        }
        let text = {
            let mut t = String::new();
            prometheus_client::encoding::text::encode(&mut t, &registry).unwrap();
            t
        };
        assert!(text.contains("sigagg_verify_seconds_count"), "{text}");
    }

    #[tokio::test]
    async fn dvs_with_consistent_shares_skip_the_second_check_the_others_keep_it() {
        use crate::duty::Duty;
        use crate::eth::types::Minimal;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut registry = Registry::default();
        let root = Root([3; 32]);
        let duty = Duty {
            slot: 2,
            kind: DutyKind::Randao,
        };
        // DV 0: a proper split. DV 1: its lock's share 4 belongs to another key, so its
        // combinations keep being checked; its partials here come from another key entirely.
        let keys: Vec<_> = (0..2).map(|_| tbls::random_secret(&mut rng)).collect();
        let groups: Vec<_> = keys.iter().map(|k| k.sk_to_pk()).collect();
        let mut lock_shares = Vec::new();
        let mut ths = Vec::new();
        for (dv, sk) in keys.iter().enumerate() {
            let split = tbls::split(sk, 4, 3, &mut rng).unwrap();
            let mut public: Vec<_> = split.iter().map(|s| s.sk_to_pk()).collect();
            let signing = if dv == 1 {
                public[3] = tbls::random_secret(&mut rng).sk_to_pk();
                tbls::split(&tbls::random_secret(&mut rng), 4, 3, &mut rng).unwrap()
            } else {
                split
            };
            lock_shares.push(public);
            let partials: Vec<_> = [0, 1, 2]
                .iter()
                .map(|&i| {
                    let sig = tbls::sign(&signing[i], &root.0);
                    (i as u64 + 1, BlsSignature(sig.to_bytes()))
                })
                .collect();
            ths.push(Threshold {
                duty,
                pubkey: BlsPubkey(groups[dv].to_bytes()),
                object: SignedObject::Randao { epoch: 0 },
                signing_root: root,
                partials: with_points(&partials),
            });
        }
        let (sigagg, rechecked) = SigAgg::<Minimal>::new(3, Arc::new(DutyDb::new()), &mut registry)
            .trusting_verified_partials(
                groups
                    .iter()
                    .zip(&lock_shares)
                    .map(|(g, s)| (g, s.as_slice())),
            );
        assert_eq!(rechecked, 1);
        assert_eq!(
            sigagg.aggregate(&ths[0]).await,
            Ok(Signed::Randao(BlsSignature(
                tbls::sign(&keys[0], &root.0).to_bytes()
            )))
        );
        let verified = |registry: &Registry| {
            let mut t = String::new();
            prometheus_client::encoding::text::encode(&mut t, registry).unwrap();
            t.lines()
                .find_map(|l| l.strip_prefix("sigagg_verify_seconds_count "))
                .map(str::to_owned)
        };
        // No batch was checked for DV 0 ...
        assert_eq!(verified(&registry).as_deref(), Some("0"));
        // ... DV 1 is checked and refused.
        assert_eq!(
            sigagg.aggregate(&ths[1]).await,
            Err(SigAggError::Verify(ths[1].pubkey))
        );
        assert_eq!(verified(&registry).as_deref(), Some("1"));
    }
}
