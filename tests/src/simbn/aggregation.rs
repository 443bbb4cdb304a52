//! Aggregation on the simulated beacon node (remote-signer mode, where dvnode aggregates):
//! `GET /eth/v1/validator/aggregate_attestation`, `GET …/sync_committee_contribution` (built
//! from the verified unaggregated attestations and sync committee messages the node received)
//! and `POST /eth/v1/validator/aggregate_and_proofs`, `POST …/contribution_and_proofs`.
//!
//! Submissions are validated like gossip validation does (phase0 `beacon_aggregate_and_proof`,
//! Altair `sync_committee_contribution_and_proof`): the aggregator is a member of the committee
//! (subcommittee), its selection proof elects it, at least one participant, and three signatures
//! per item — the selection proof, the aggregator's signature over the `AggregateAndProof`
//! (`ContributionAndProof`) and the aggregate signature over the data by the participants' keys
//! (a sync committee member holding several positions counted once per position) — all verified
//! with real blst in one batch per request ([`verify_batch`]). A copy of an object already
//! accepted (every node of a cluster broadcasts the same signed aggregate) is accepted without
//! verifying it again; arrivals are recorded per node as [`ObjectKind::Aggregate`] /
//! [`ObjectKind::Contribution`] keyed by the aggregator. Refused items are answered with their
//! index, the others of the request accepted.

use dvnode::eth::aggregate::{
    is_aggregator, is_sync_committee_aggregator, SignedAggregateAndProof,
    SignedContributionAndProof, SyncAggregatorSelectionData, SyncCommitteeContribution,
};
use dvnode::eth::types::{Attestation, BlsSignature, Root, Slot, ValidatorIndex};
use dvnode::keys::tbls::{PublicKey, Signature};
use ssz_types::{BitList, BitVector};

use super::chain::{epoch_of, SLOTS_PER_EPOCH, SYNC_COMMITTEE_SIZE, SYNC_COMMITTEE_SUBNET_COUNT};
use super::verify::{verify_batch, Item};
use super::{ApiFailure, ItemFailures, ObjectKind, SimBn, State, P};

/// Items of one `aggregate_and_proofs` / `contribution_and_proofs` request at most (dvnode
/// sends at most 512; beyond this the whole request is refused before any verification).
pub const MAX_AGGREGATION_ITEMS: usize = 1024;
/// Members of one sync subcommittee.
const SUBCOMMITTEE_SIZE: usize = SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT;
/// Slots an aggregate or contribution is accepted after its slot
/// (`ATTESTATION_PROPAGATION_SLOT_RANGE`).
const PROPAGATION_SLOTS: u64 = SLOTS_PER_EPOCH;

/// The three signatures of one aggregation item, in batch order.
const CHECKS: [&str; 3] = [
    "selection proof",
    "aggregator signature",
    "aggregate signature",
];

/// One item that passed the structural checks, waiting for its signatures' verification.
struct Pending {
    /// Position in the request.
    index: usize,
    slot: Slot,
    aggregator: ValidatorIndex,
    /// `hash_tree_root` of the signed object (the duplicate key).
    root: Root,
    /// Participants (validator indices, with repeats for sync members holding several
    /// positions).
    participants: Vec<ValidatorIndex>,
    /// Signing roots of the selection proof, the aggregator's message and the aggregate.
    messages: [Root; 3],
    /// The corresponding signatures.
    signatures: [BlsSignature; 3],
}

/// What the structural checks say of an item.
enum Checked {
    /// Refused (message).
    Refused(String),
    /// The same signed object was accepted before.
    Duplicate {
        slot: Slot,
        aggregator: ValidatorIndex,
    },
    /// To verify.
    Fresh(Box<Pending>),
}

fn aggregate_signatures(sigs: &[&Signature]) -> Option<BlsSignature> {
    blst::min_pk::AggregateSignature::aggregate(sigs, false)
        .ok()
        .map(|a| BlsSignature(a.to_signature().to_bytes()))
}

impl SimBn {
    fn aggregate_pubkey(&self, validators: &[ValidatorIndex]) -> Result<PublicKey, String> {
        let keys = validators
            .iter()
            .map(|v| {
                self.signer_key(*v)
                    .ok_or_else(|| format!("participant {v} is not a simulated signer"))
            })
            .collect::<Result<Vec<PublicKey>, String>>()?;
        let refs: Vec<&PublicKey> = keys.iter().collect();
        blst::min_pk::AggregatePublicKey::aggregate(&refs, false)
            .map(|a| a.to_public_key())
            .map_err(|e| format!("participants' keys do not aggregate: {e:?}"))
    }

    /// Whether `slot` is within the propagation range now (started, at most
    /// [`PROPAGATION_SLOTS`] ago).
    fn check_propagation_slot(&self, slot: Slot) -> Result<(), String> {
        if !self.slot_started(slot) {
            return Err(format!("slot {slot} has not started"));
        }
        let current = self.current_slot();
        if slot + PROPAGATION_SLOTS < current {
            return Err(format!(
                "slot {slot} is more than {PROPAGATION_SLOTS} slots before the current slot {current}"
            ));
        }
        Ok(())
    }

    fn check_aggregate(
        &self,
        st: &mut State,
        index: usize,
        s: &SignedAggregateAndProof<P>,
    ) -> Checked {
        let m = &s.message;
        let a = &m.aggregate;
        let slot = a.data.slot;
        let aggregator = m.aggregator_index;
        let root = Root::of(s);
        if st.seen_aggregates.contains_key(&root) {
            return Checked::Duplicate { slot, aggregator };
        }
        if let Err(e) = self.check_propagation_slot(slot) {
            return Checked::Refused(e);
        }
        if a.data.target.epoch != epoch_of(slot) {
            return Checked::Refused(format!(
                "target epoch {} for slot {slot}",
                a.data.target.epoch
            ));
        }
        let shuffling = st.chain.shuffling(epoch_of(slot));
        let committee = shuffling.committee(slot, a.data.index);
        if committee.is_empty() || a.aggregation_bits.len() != committee.len() {
            return Checked::Refused(format!(
                "aggregation bits of length {} for committee {} of slot {slot} (size {})",
                a.aggregation_bits.len(),
                a.data.index,
                committee.len()
            ));
        }
        if !committee.contains(&aggregator) {
            return Checked::Refused(format!(
                "aggregator {aggregator} is not in committee {} of slot {slot}",
                a.data.index
            ));
        }
        if !is_aggregator(committee.len() as u64, &m.selection_proof) {
            return Checked::Refused(format!(
                "the selection proof of validator {aggregator} does not select it as an aggregator of committee {} at slot {slot}",
                a.data.index
            ));
        }
        let participants: Vec<ValidatorIndex> = a
            .aggregation_bits
            .iter()
            .zip(committee)
            .filter(|(set, _)| *set)
            .map(|(_, v)| *v)
            .collect();
        if participants.is_empty() {
            return Checked::Refused(format!("aggregate of slot {slot} without participants"));
        }
        Checked::Fresh(Box::new(Pending {
            index,
            slot,
            aggregator,
            root,
            participants,
            messages: [
                self.schedule.selection_proof_signing_root(slot),
                self.schedule.aggregate_and_proof_signing_root(m),
                self.schedule.attestation_signing_root(&a.data),
            ],
            signatures: [m.selection_proof, s.signature, a.signature],
        }))
    }

    fn check_contribution(
        &self,
        st: &mut State,
        index: usize,
        s: &SignedContributionAndProof<P>,
    ) -> Checked {
        let m = &s.message;
        let c = &m.contribution;
        let slot = c.slot;
        let aggregator = m.aggregator_index;
        let root = Root::of(s);
        if st.seen_contributions.contains_key(&root) {
            return Checked::Duplicate { slot, aggregator };
        }
        if let Err(e) = self.check_propagation_slot(slot) {
            return Checked::Refused(e);
        }
        let sub = c.subcommittee_index;
        if sub >= SYNC_COMMITTEE_SUBNET_COUNT as u64 {
            return Checked::Refused(format!(
                "subcommittee index {sub}: there are {SYNC_COMMITTEE_SUBNET_COUNT}"
            ));
        }
        let committee = st.chain.sync_committee(epoch_of(slot));
        let lo = sub as usize * SUBCOMMITTEE_SIZE;
        let members = &committee[lo..lo + SUBCOMMITTEE_SIZE];
        if !members.contains(&aggregator) {
            return Checked::Refused(format!(
                "aggregator {aggregator} is not in sync subcommittee {sub} of slot {slot}"
            ));
        }
        if !is_sync_committee_aggregator::<P>(&m.selection_proof) {
            return Checked::Refused(format!(
                "the selection proof of validator {aggregator} does not select it as an aggregator of sync subcommittee {sub} at slot {slot}"
            ));
        }
        let participants: Vec<ValidatorIndex> = c
            .aggregation_bits
            .iter()
            .zip(members)
            .filter(|(set, _)| *set)
            .map(|(_, v)| *v)
            .collect();
        if participants.is_empty() {
            return Checked::Refused(format!(
                "contribution of slot {slot} subcommittee {sub} without participants"
            ));
        }
        Checked::Fresh(Box::new(Pending {
            index,
            slot,
            aggregator,
            root,
            participants,
            messages: [
                self.schedule
                    .sync_selection_proof_signing_root(&SyncAggregatorSelectionData {
                        slot,
                        subcommittee_index: sub,
                    }),
                self.schedule.contribution_and_proof_signing_root(m),
                self.schedule
                    .sync_committee_signing_root(c.beacon_block_root, slot),
            ],
            signatures: [m.selection_proof, s.signature, c.signature],
        }))
    }

    /// Verifies the pending items' signatures in one batch; the items whose three signatures
    /// all verify, the others added to `failures`.
    fn verify_pending(&self, pending: Vec<Pending>, failures: &mut ItemFailures) -> Vec<Pending> {
        let mut items = Vec::with_capacity(3 * pending.len());
        let mut kept = Vec::with_capacity(pending.len());
        for p in pending {
            let Some(aggregator_key) = self.signer_key(p.aggregator) else {
                failures.push((
                    p.index,
                    format!("aggregator {} is not a simulated signer", p.aggregator),
                ));
                continue;
            };
            let participants_key = match self.aggregate_pubkey(&p.participants) {
                Ok(k) => k,
                Err(e) => {
                    failures.push((p.index, e));
                    continue;
                }
            };
            let mut sigs = Vec::with_capacity(3);
            for (what, sig) in CHECKS.iter().zip(&p.signatures) {
                match Signature::from_bytes(&sig.0) {
                    Ok(s) => sigs.push(s),
                    Err(e) => {
                        failures.push((p.index, format!("{what} is not a G2 point: {e:?}")));
                        break;
                    }
                }
            }
            if sigs.len() < 3 {
                continue;
            }
            let keys = [aggregator_key, aggregator_key, participants_key];
            for ((pubkey, message), signature) in keys.into_iter().zip(p.messages).zip(sigs) {
                items.push(Item {
                    pubkey,
                    message: message.0,
                    signature,
                });
            }
            kept.push(p);
        }
        let valid = verify_batch(&items);
        kept.into_iter()
            .zip(valid.chunks(3))
            .filter_map(|(p, ok)| match ok.iter().position(|ok| !ok) {
                None => Some(p),
                Some(bad) => {
                    failures.push((
                        p.index,
                        format!(
                            "invalid {} of aggregator {} at slot {}",
                            CHECKS[bad], p.aggregator, p.slot
                        ),
                    ));
                    None
                }
            })
            .collect()
    }

    /// Checks, verifies and records a request's items (`kind` names the seen-set and the
    /// arrival kind).
    fn submit_aggregation<T>(
        &self,
        node: usize,
        t: u64,
        items: &[T],
        kind: ObjectKind,
        check: fn(&SimBn, &mut State, usize, &T) -> Checked,
    ) -> Result<(), ItemFailures> {
        let mut failures: ItemFailures = Vec::new();
        let mut duplicates = Vec::new();
        let mut pending = Vec::new();
        {
            let mut st = self.state();
            for (i, item) in items.iter().enumerate() {
                match check(self, &mut st, i, item) {
                    Checked::Refused(m) => failures.push((i, m)),
                    Checked::Duplicate { slot, aggregator } => duplicates.push((slot, aggregator)),
                    Checked::Fresh(p) => pending.push(*p),
                }
            }
        }
        let valid = self.verify_pending(pending, &mut failures);
        let oldest = self.current_slot().saturating_sub(2 * PROPAGATION_SLOTS);
        let mut st = self.state();
        let seen = match kind {
            ObjectKind::Aggregate => &mut st.seen_aggregates,
            _ => &mut st.seen_contributions,
        };
        for p in &valid {
            seen.insert(p.root, p.slot);
        }
        seen.retain(|_, s| *s >= oldest);
        drop(st);
        let mut rec = self.record_mut();
        for (slot, aggregator) in duplicates
            .into_iter()
            .chain(valid.iter().map(|p| (p.slot, p.aggregator)))
        {
            rec.arrive(self.config.nodes, (kind, slot, aggregator), node, t);
        }
        failures.sort_by_key(|(i, _)| *i);
        let what = match kind {
            ObjectKind::Aggregate => "aggregate",
            _ => "contribution",
        };
        rec.refuse_items(what, node, failures)
    }

    /// `POST /eth/v1/validator/aggregate_and_proofs` from node `node`, received at `t`.
    pub fn submit_aggregates(
        &self,
        node: usize,
        t: u64,
        items: &[SignedAggregateAndProof<P>],
    ) -> Result<(), ItemFailures> {
        self.submit_aggregation(node, t, items, ObjectKind::Aggregate, Self::check_aggregate)
    }

    /// `POST /eth/v1/validator/contribution_and_proofs` from node `node`, received at `t`.
    pub fn submit_contributions(
        &self,
        node: usize,
        t: u64,
        items: &[SignedContributionAndProof<P>],
    ) -> Result<(), ItemFailures> {
        self.submit_aggregation(
            node,
            t,
            items,
            ObjectKind::Contribution,
            Self::check_contribution,
        )
    }

    /// `GET /eth/v1/validator/aggregate_attestation`: the aggregate of every verified
    /// unaggregated attestation received with data root `data_root` at `slot`.
    pub fn aggregate_attestation(
        &self,
        slot: Slot,
        data_root: Root,
    ) -> Result<Attestation<P>, ApiFailure> {
        let none = || {
            ApiFailure::not_found(format!(
                "no attestation with data root {data_root} at slot {slot}"
            ))
        };
        let st = self.state();
        let e = st
            .att_pool
            .get(&data_root)
            .filter(|e| e.data.slot == slot && !e.sigs.is_empty())
            .ok_or_else(none)?;
        let mut bits = BitList::with_capacity(e.committee_len)
            .map_err(|e| ApiFailure::bad(format!("committee size: {e:?}")))?;
        let mut sigs = Vec::with_capacity(e.sigs.len());
        for (p, s) in &e.sigs {
            bits.set(*p as usize, true)
                .map_err(|e| ApiFailure::bad(format!("committee position: {e:?}")))?;
            sigs.push(*s);
        }
        let data = e.data;
        drop(st);
        let refs: Vec<&Signature> = sigs.iter().collect();
        let signature = aggregate_signatures(&refs).ok_or_else(none)?;
        Ok(Attestation {
            aggregation_bits: bits,
            data,
            signature,
        })
    }

    /// `GET /eth/v1/validator/sync_committee_contribution`: the contribution of the verified
    /// sync committee messages over `block_root` at `slot` by the members of subcommittee
    /// `sub` (each position of a member set, its signature counted once per position).
    pub fn sync_committee_contribution(
        &self,
        slot: Slot,
        sub: u64,
        block_root: Root,
    ) -> Result<SyncCommitteeContribution<P>, ApiFailure> {
        if sub >= SYNC_COMMITTEE_SUBNET_COUNT as u64 {
            return Err(ApiFailure::bad(format!(
                "subcommittee_index {sub}: there are {SYNC_COMMITTEE_SUBNET_COUNT}"
            )));
        }
        let none = || {
            ApiFailure::not_found(format!(
                "no sync committee message over {block_root} at slot {slot} in subcommittee {sub}"
            ))
        };
        let mut st = self.state();
        let committee = st.chain.sync_committee(epoch_of(slot));
        let lo = sub as usize * SUBCOMMITTEE_SIZE;
        let mut bits = BitVector::new();
        let mut sigs = Vec::new();
        if let Some(messages) = st.sync_pool.get(&slot) {
            for (j, v) in committee[lo..lo + SUBCOMMITTEE_SIZE].iter().enumerate() {
                if let Some((root, sig)) = messages.get(v) {
                    if *root == block_root {
                        if let Ok(s) = Signature::from_bytes(&sig.0) {
                            bits.set(j, true)
                                .map_err(|e| ApiFailure::bad(format!("position: {e:?}")))?;
                            sigs.push(s);
                        }
                    }
                }
            }
        }
        drop(st);
        let refs: Vec<&Signature> = sigs.iter().collect();
        let signature = if refs.is_empty() {
            return Err(none());
        } else {
            aggregate_signatures(&refs).ok_or_else(none)?
        };
        Ok(SyncCommitteeContribution {
            slot,
            beacon_block_root: block_root,
            subcommittee_index: sub,
            aggregation_bits: bits,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use dvnode::eth::aggregate::{
        AggregateAndProof, ContributionAndProof, SignedAggregateAndProof,
        SignedContributionAndProof, SyncAggregatorSelectionData,
    };
    use dvnode::eth::beacon::{BeaconClient, ItemErrors, PoolKind};
    use dvnode::eth::types::{
        Attestation, AttestationData, BlsSignature, Mainnet, Root, Slot, SyncCommitteeMessage,
        ValidatorIndex,
    };
    use dvnode::keys::tbls;
    use rand::SeedableRng;
    use ssz_types::BitList;

    use super::super::chain::epoch_of;
    use super::super::{now_ms, ObjectKind, SimBn, SimBnConfig};
    use super::{is_aggregator, is_sync_committee_aggregator, P, SUBCOMMITTEE_SIZE};

    const SIGNERS: usize = 64;
    /// The wall-clock slot when the test starts: slots 1..=18 are past and still accepted.
    const NOW_SLOT: u64 = 20;

    fn sign(sk: &tbls::SecretKey, root: Root) -> BlsSignature {
        BlsSignature(tbls::sign(sk, &root.0).to_bytes())
    }

    /// 64 signing validators among 4,064 (committees of 127, so aggregators are elected modulo
    /// 7 and sync aggregators modulo 8), the wall clock at slot 20, two listeners' worth of
    /// nodes.
    fn setup() -> (Vec<tbls::SecretKey>, std::sync::Arc<SimBn>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let keys: Vec<tbls::SecretKey> = (0..SIGNERS)
            .map(|_| tbls::random_secret(&mut rng))
            .collect();
        let seconds_per_slot = 2;
        let bn = SimBn::new(SimBnConfig {
            genesis_time: now_ms() / 1000 - NOW_SLOT * seconds_per_slot,
            seconds_per_slot,
            genesis_validators_root: Root([4; 32]),
            signers: keys.iter().map(|k| k.sk_to_pk()).collect(),
            other_validators: 4000,
            seed: [5; 32],
            nodes: 2,
        })
        .unwrap();
        (keys, bn)
    }

    fn committee(bn: &SimBn, slot: Slot) -> Vec<ValidatorIndex> {
        bn.state()
            .chain
            .shuffling(epoch_of(slot))
            .committee(slot, 0)
            .to_vec()
    }

    fn sync_members(bn: &SimBn, slot: Slot, sub: u64) -> Vec<ValidatorIndex> {
        let c = bn.state().chain.sync_committee(epoch_of(slot));
        let lo = sub as usize * SUBCOMMITTEE_SIZE;
        c[lo..lo + SUBCOMMITTEE_SIZE].to_vec()
    }

    fn aggregate_key(keys: &[tbls::SecretKey], vs: &[ValidatorIndex]) -> tbls::PublicKey {
        let pks: Vec<tbls::PublicKey> = vs.iter().map(|v| keys[*v as usize].sk_to_pk()).collect();
        let refs: Vec<&tbls::PublicKey> = pks.iter().collect();
        blst::min_pk::AggregatePublicKey::aggregate(&refs, false)
            .unwrap()
            .to_public_key()
    }

    fn verifies(pk: &tbls::PublicKey, root: Root, sig: &BlsSignature) -> bool {
        tbls::Signature::from_bytes(&sig.0).is_ok_and(|s| tbls::verify(pk, &root.0, &s))
    }

    async fn serve(
        bn: &std::sync::Arc<SimBn>,
    ) -> (Vec<BeaconClient>, Vec<tokio::task::JoinHandle<()>>) {
        let mut listeners = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..2 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            clients
                .push(BeaconClient::new(&format!("http://{}", l.local_addr().unwrap())).unwrap());
            listeners.push(l);
        }
        (clients, super::super::server::serve(bn.clone(), listeners))
    }

    fn indexed(e: &dvnode::eth::beacon::BeaconError) -> Vec<(usize, String)> {
        assert_eq!(e.status().map(|s| s.as_u16()), Some(400), "{e}");
        match e.item_errors() {
            Some(ItemErrors::Indexed(v)) => v.clone(),
            other => panic!("not a per-item answer: {other:?} ({e})"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn aggregates_are_served_from_received_attestations_and_verified_on_submission() {
        let (keys, bn) = setup();
        let schedule = bn.schedule().clone();
        let selection = |v: ValidatorIndex, slot: Slot| {
            sign(
                &keys[v as usize],
                schedule.selection_proof_signing_root(slot),
            )
        };
        // A slot where a signer is elected, and a signer somewhere that is not.
        let mut elected = None;
        let mut not_elected = None;
        for slot in 1..=18 {
            let c = committee(&bn, slot);
            for v in c.iter().filter(|v| (**v as usize) < SIGNERS) {
                let chosen = is_aggregator(c.len() as u64, &selection(*v, slot));
                if chosen && elected.is_none() {
                    elected = Some((slot, *v));
                } else if !chosen && not_elected.is_none() {
                    not_elected = Some((slot, *v));
                }
            }
        }
        let (slot, agg) = elected.expect("an elected signer in 18 slots");
        let (other_slot, non) = not_elected.expect("a signer not elected");
        let members = committee(&bn, slot);
        let signers: Vec<(usize, ValidatorIndex)> = members
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, v)| (*v as usize) < SIGNERS)
            .collect();

        // The committee's signers attest (through node 0).
        let data = bn.attestation_data(slot, 0).unwrap();
        let single = |pos: usize, v: ValidatorIndex, data: &AttestationData| {
            let mut bits = BitList::with_capacity(members.len()).unwrap();
            bits.set(pos, true).unwrap();
            Attestation::<P> {
                aggregation_bits: bits,
                data: *data,
                signature: sign(&keys[v as usize], schedule.attestation_signing_root(data)),
            }
        };
        let atts: Vec<_> = signers.iter().map(|(p, v)| single(*p, *v, &data)).collect();
        bn.submit_attestations(0, now_ms(), atts).unwrap();

        let (clients, servers) = serve(&bn).await;
        // The aggregate: the OR of the received bits, a signature by exactly those keys.
        let aggregate = clients[0]
            .aggregate_attestation::<Mainnet>(slot, Root::of(&data))
            .await
            .unwrap();
        assert_eq!(aggregate.data, data);
        let set: Vec<usize> = aggregate
            .aggregation_bits
            .iter()
            .enumerate()
            .filter(|(_, b)| *b)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(set, signers.iter().map(|(p, _)| *p).collect::<Vec<_>>());
        assert_eq!(aggregate.aggregation_bits.len(), members.len());
        let participants: Vec<ValidatorIndex> = signers.iter().map(|(_, v)| *v).collect();
        let participants_key = aggregate_key(&keys, &participants);
        assert!(verifies(
            &participants_key,
            schedule.attestation_signing_root(&data),
            &aggregate.signature
        ));
        let unknown = clients[0]
            .aggregate_attestation::<Mainnet>(slot, Root([0xab; 32]))
            .await
            .unwrap_err();
        assert!(unknown.is_not_found(), "{unknown}");

        let signed = |m: AggregateAndProof<P>, signer: ValidatorIndex| SignedAggregateAndProof {
            signature: sign(
                &keys[signer as usize],
                schedule.aggregate_and_proof_signing_root(&m),
            ),
            message: m,
        };
        let good = signed(
            AggregateAndProof {
                aggregator_index: agg,
                aggregate: aggregate.clone(),
                selection_proof: selection(agg, slot),
            },
            agg,
        );
        // Elected by its proof's hash, but the proof is another signer's signature.
        let forger = (0..SIGNERS as u64)
            .find(|v| *v != agg && is_aggregator(members.len() as u64, &selection(*v, slot)))
            .expect("another key whose proof would elect");
        let wrong_proof = signed(
            AggregateAndProof {
                selection_proof: selection(forger, slot),
                ..good.message.clone()
            },
            agg,
        );
        let non_members = committee(&bn, other_slot);
        let non_pos = non_members.iter().position(|v| *v == non).unwrap();
        let other_data = bn.attestation_data(other_slot, 0).unwrap();
        let non_aggregator = signed(
            AggregateAndProof {
                aggregator_index: non,
                aggregate: single(non_pos, non, &other_data),
                selection_proof: selection(non, other_slot),
            },
            non,
        );
        let wrong_signer = SignedAggregateAndProof {
            signature: sign(
                &keys[forger as usize],
                schedule.aggregate_and_proof_signing_root(&good.message),
            ),
            ..good.clone()
        };
        // The aggregator signs an aggregate whose data the participants did not sign.
        let mut moved = aggregate.clone();
        moved.data.beacon_block_root = Root([0xcd; 32]);
        let wrong_aggregate = signed(
            AggregateAndProof {
                aggregate: moved,
                ..good.message.clone()
            },
            agg,
        );
        let request = [
            &good,
            &non_aggregator,
            &wrong_signer,
            &wrong_aggregate,
            &wrong_proof,
        ];
        let err = clients[0]
            .submit_array(PoolKind::Aggregates.path(), &request)
            .await
            .unwrap_err();
        let failures = indexed(&err);
        assert_eq!(
            failures.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "{failures:?}"
        );
        assert!(failures[0].1.contains("does not select"), "{failures:?}");
        assert!(
            failures[1].1.contains("invalid aggregator signature"),
            "{failures:?}"
        );
        assert!(
            failures[2].1.contains("invalid aggregate signature"),
            "{failures:?}"
        );
        assert!(
            failures[3].1.contains("invalid selection proof"),
            "{failures:?}"
        );
        // The valid item of that request was taken; another node's copy is accepted too.
        let rec = bn.record();
        let key = (ObjectKind::Aggregate, slot, agg);
        assert!(rec.arrivals[&key].nodes[0].is_some());
        assert!(rec.arrivals[&key].nodes[1].is_none());
        assert_eq!(rec.invalid.get("aggregate"), Some(&4));
        clients[1]
            .submit_array(PoolKind::Aggregates.path(), &[&good])
            .await
            .unwrap();
        let rec = bn.record();
        assert!(rec.arrivals[&key].nodes[1].is_some());
        assert!(!rec
            .arrivals
            .contains_key(&(ObjectKind::Aggregate, other_slot, non)));
        for s in servers {
            s.abort();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn contributions_are_served_from_received_messages_and_verified_on_submission() {
        let (keys, bn) = setup();
        let schedule = bn.schedule().clone();
        let selection = |v: ValidatorIndex, slot: Slot, sub: u64| {
            sign(
                &keys[v as usize],
                schedule.sync_selection_proof_signing_root(&SyncAggregatorSelectionData {
                    slot,
                    subcommittee_index: sub,
                }),
            )
        };
        let mut elected = None;
        let mut not_elected = None;
        for slot in 1..=18 {
            for sub in 0..4 {
                for v in sync_members(&bn, slot, sub)
                    .into_iter()
                    .filter(|v| (*v as usize) < SIGNERS)
                {
                    let chosen = is_sync_committee_aggregator::<P>(&selection(v, slot, sub));
                    if chosen && elected.is_none() {
                        elected = Some((slot, sub, v));
                    } else if !chosen && not_elected.is_none() {
                        not_elected = Some((slot, sub, v));
                    }
                }
            }
        }
        let (slot, sub, agg) = elected.expect("an elected sync aggregator in 18 slots");
        let (other_slot, other_sub, non) = not_elected.expect("a member not elected");
        let members = sync_members(&bn, slot, sub);
        // Every signer of the sync committee signs the block root (through node 1).
        let root = Root([9; 32]);
        let committee = bn.state().chain.sync_committee(epoch_of(slot));
        let mut signers: Vec<ValidatorIndex> = committee
            .iter()
            .copied()
            .filter(|v| (*v as usize) < SIGNERS)
            .collect();
        signers.sort_unstable();
        signers.dedup();
        let msgs: Vec<SyncCommitteeMessage> = signers
            .iter()
            .map(|v| SyncCommitteeMessage {
                slot,
                beacon_block_root: root,
                validator_index: *v,
                signature: sign(
                    &keys[*v as usize],
                    schedule.sync_committee_signing_root(root, slot),
                ),
            })
            .collect();
        bn.submit_sync_messages(1, now_ms(), msgs).unwrap();

        let (clients, servers) = serve(&bn).await;
        let contribution = clients[0]
            .sync_committee_contribution::<Mainnet>(slot, sub, root)
            .await
            .unwrap();
        assert_eq!(
            (
                contribution.slot,
                contribution.subcommittee_index,
                contribution.beacon_block_root
            ),
            (slot, sub, root)
        );
        // Every position of a signing member set (a member holding two counts twice).
        let positions: Vec<usize> = (0..SUBCOMMITTEE_SIZE)
            .filter(|j| (members[*j] as usize) < SIGNERS)
            .collect();
        let set: Vec<usize> = contribution
            .aggregation_bits
            .iter()
            .enumerate()
            .filter(|(_, b)| *b)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(set, positions);
        let participants: Vec<ValidatorIndex> = positions.iter().map(|j| members[*j]).collect();
        assert!(verifies(
            &aggregate_key(&keys, &participants),
            schedule.sync_committee_signing_root(root, slot),
            &contribution.signature
        ));
        let none = clients[0]
            .sync_committee_contribution::<Mainnet>(slot, sub, Root([1; 32]))
            .await
            .unwrap_err();
        assert!(none.is_not_found(), "{none}");

        let signed =
            |m: ContributionAndProof<P>, signer: ValidatorIndex| SignedContributionAndProof {
                signature: sign(
                    &keys[signer as usize],
                    schedule.contribution_and_proof_signing_root(&m),
                ),
                message: m,
            };
        let good = signed(
            ContributionAndProof {
                aggregator_index: agg,
                contribution: contribution.clone(),
                selection_proof: selection(agg, slot, sub),
            },
            agg,
        );
        let forger = (0..SIGNERS as u64)
            .find(|v| *v != agg && is_sync_committee_aggregator::<P>(&selection(*v, slot, sub)))
            .expect("another key whose proof would elect");
        let wrong_proof = signed(
            ContributionAndProof {
                selection_proof: selection(forger, slot, sub),
                ..good.message.clone()
            },
            agg,
        );
        let mut elsewhere = contribution.clone();
        elsewhere.slot = other_slot;
        elsewhere.subcommittee_index = other_sub;
        let non_aggregator = signed(
            ContributionAndProof {
                aggregator_index: non,
                contribution: elsewhere,
                selection_proof: selection(non, other_slot, other_sub),
            },
            non,
        );
        let wrong_signer = SignedContributionAndProof {
            signature: sign(
                &keys[forger as usize],
                schedule.contribution_and_proof_signing_root(&good.message),
            ),
            ..good.clone()
        };
        let mut moved = contribution.clone();
        moved.beacon_block_root = Root([0xcd; 32]);
        let wrong_contribution = signed(
            ContributionAndProof {
                contribution: moved,
                ..good.message.clone()
            },
            agg,
        );
        let request = [
            &wrong_proof,
            &good,
            &non_aggregator,
            &wrong_contribution,
            &wrong_signer,
        ];
        let err = clients[1]
            .submit_array(PoolKind::Contributions.path(), &request)
            .await
            .unwrap_err();
        let failures = indexed(&err);
        assert_eq!(
            failures.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 2, 3, 4],
            "{failures:?}"
        );
        assert!(
            failures[0].1.contains("invalid selection proof"),
            "{failures:?}"
        );
        assert!(failures[1].1.contains("does not select"), "{failures:?}");
        assert!(
            failures[2].1.contains("invalid aggregate signature"),
            "{failures:?}"
        );
        assert!(
            failures[3].1.contains("invalid aggregator signature"),
            "{failures:?}"
        );
        let key = (ObjectKind::Contribution, slot, agg);
        let rec = bn.record();
        assert!(rec.arrivals[&key].nodes[1].is_some());
        assert!(rec.arrivals[&key].nodes[0].is_none());
        assert_eq!(rec.invalid.get("contribution"), Some(&4));
        clients[0]
            .submit_array(PoolKind::Contributions.path(), &[&good])
            .await
            .unwrap();
        assert!(bn.record().arrivals[&key].nodes[0].is_some());
        // A request beyond the item bound is refused whole.
        let many = vec![&good; super::MAX_AGGREGATION_ITEMS + 1];
        let err = clients[0]
            .submit_array(PoolKind::Contributions.path(), &many)
            .await
            .unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{err}");
        for s in servers {
            s.abort();
        }
    }
}
