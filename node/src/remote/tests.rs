//! The DV signer of four in-process nodes (threshold 3) whose partial-signature stages talk
//! over an in-memory network: combined answers, refusals of anything not decided, selection
//! proofs (ahead of time, re-asked, placeholders), aggregates, catch-up of a node that was away.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::registry::Registry;
use ssz_types::BitList;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::clock::unix_now;
use crate::cluster::shares::ShareKeys;
use crate::duty::fixtures::{self, attester, Dv};
use crate::duty::{Duty, DutyDefs, DutyKind};
use crate::dutydb::DutyDb;
use crate::eth::aggregate::{is_aggregator, AggregateAndProof};
use crate::eth::signing::ForkSchedule;
use crate::eth::types::{Attestation, BlsSignature, Minimal, Root};
use crate::keys::tbls;
use crate::p2p::SendError;
use crate::parsig::{ParSig, ParSigMetrics, ParSigTransport, SignedObject};
use crate::sigagg::SigAgg;
use crate::tracker::Tracker;
use crate::value::{AggregateEntry, DutyValue};
use crate::web3signer::request::{ForkInfo, SignObject, SignRequest};
use crate::web3signer::Signer;

type P = Minimal;

/// Where a node's messages go: `(from, to (None: everyone), payload)`.
type Wire = mpsc::UnboundedSender<(usize, Option<usize>, Vec<u8>)>;

struct Link {
    from: usize,
    wire: Wire,
}

impl ParSigTransport for Link {
    fn broadcast(&self, payload: Vec<u8>) -> Result<(), SendError> {
        self.wire
            .send((self.from, None, payload))
            .map_err(|_| SendError::Closed)
    }

    fn send(&self, to: usize, payload: Vec<u8>) -> Result<(), SendError> {
        self.wire
            .send((self.from, Some(to), payload))
            .map_err(|_| SendError::Closed)
    }
}

struct Node {
    dutydb: Arc<DutyDb<P>>,
    parsig: Arc<ParSig<P>>,
    signer: DvSigner<P>,
    registry: Registry,
}

struct Cluster {
    nodes: Vec<Node>,
    dv: Dv,
    schedule: Arc<ForkSchedule>,
    /// Messages to and from node 3 are dropped while set.
    node3_away: Arc<AtomicBool>,
}

/// A chain whose current slot is about 100 (1-second slots).
fn schedule() -> Arc<ForkSchedule> {
    Arc::new(fixtures::altair_schedule(unix_now().as_secs() - 100, 1))
}

fn cluster() -> Cluster {
    let schedule = schedule();
    let dv = fixtures::dvs(1).remove(0);
    let (wire, mut wired) = mpsc::unbounded_channel();
    let mut nodes = Vec::new();
    for i in 0..fixtures::N {
        let mut registry = Registry::default();
        let tracker = Tracker::new(&mut registry, None).unwrap();
        let dutydb = Arc::new(DutyDb::<P>::new());
        dutydb.store_indices([(dv.pubkey, 17)]);
        let (out, mut ready) = mpsc::channel(64);
        let keys = ShareKeys::from_secrets(
            i as u64 + 1,
            [(dv.pubkey, dv.shares[i].clone())].into_iter().collect(),
        );
        let parsig = Arc::new(
            ParSig::new(
                i as u64 + 1,
                fixtures::T,
                fixtures::dv_shares(std::slice::from_ref(&dv)),
                schedule.clone(),
                dutydb.clone(),
                Arc::new(Link {
                    from: i,
                    wire: wire.clone(),
                }),
                out,
                ParSigMetrics::new(&mut registry),
                tracker,
            )
            .with_share_keys(Arc::new(keys)),
        );
        let sigagg = SigAgg::new(fixtures::T, dutydb.clone(), &mut registry)
            .with_aggregation(parsig.clone());
        tokio::spawn(async move {
            while let Some(th) = ready.recv().await {
                let _ = sigagg.aggregate(&th).await;
            }
        });
        let signer = DvSigner::new(
            dutydb.clone(),
            parsig.clone(),
            schedule.clone(),
            vec![dv.pubkey],
            SignerMetrics::new(&mut registry),
        );
        nodes.push(Node {
            dutydb,
            parsig,
            signer,
            registry,
        });
    }
    let node3_away = Arc::new(AtomicBool::new(false));
    let parsigs: Vec<_> = nodes.iter().map(|n| n.parsig.clone()).collect();
    let away = node3_away.clone();
    tokio::spawn(async move {
        while let Some((from, to, payload)) = wired.recv().await {
            for (i, p) in parsigs.iter().enumerate() {
                let addressed = to.map_or(i != from, |t| t == i);
                let cut = away.load(Ordering::SeqCst) && (i == 3 || from == 3);
                if addressed && !cut {
                    let (p, payload) = (p.clone(), payload.clone());
                    tokio::spawn(async move { p.handle_peer(from, &payload).await });
                }
            }
        }
    });
    Cluster {
        nodes,
        dv,
        schedule,
        node3_away,
    }
}

impl Cluster {
    fn current_slot(&self) -> u64 {
        self.schedule.slot_at_time(unix_now().as_secs()).unwrap()
    }

    /// Records an attester duty of the DV at `slot` (and its decided data) on every node.
    fn decide_attestation(&self, slot: u64, head: u8) -> crate::value::AttesterEntry {
        let mut e = attester(self.dv.pubkey, slot, 1, head);
        e.def.validator_index = 17;
        for n in &self.nodes {
            n.dutydb.store_defs(
                Duty::new(slot, DutyKind::Attester),
                DutyDefs::Attester(vec![e.def]),
            );
            n.dutydb
                .store(
                    Duty::new(slot, DutyKind::Attester),
                    &DutyValue::Attester(vec![e]),
                )
                .unwrap();
        }
        e
    }

    fn request(&self, object: SignObject<P>) -> (SignRequest<P>, Root) {
        let epoch = object.signing_epoch(&self.schedule);
        let root = object.signing_root(&self.schedule);
        let fork = self.schedule.fork_at_epoch(epoch);
        (
            SignRequest {
                object,
                signing_root: Some(root),
                fork_info: ForkInfo {
                    fork,
                    genesis_validators_root: self.schedule.genesis_validators_root(),
                },
            },
            root,
        )
    }

    /// Asks nodes `which` to sign `object` concurrently.
    async fn sign_on(
        &self,
        which: &[usize],
        object: SignObject<P>,
    ) -> Vec<Result<BlsSignature, crate::web3signer::SignError>> {
        let (req, root) = self.request(object);
        let calls = which.iter().map(|&i| {
            let req = req.clone();
            let signer = &self.nodes[i].signer;
            async move { signer.sign(self.dv.pubkey, req, root).await }
        });
        futures::future::join_all(calls).await
    }

    fn whole(&self, root: Root) -> BlsSignature {
        BlsSignature(tbls::sign(&self.dv.secret, &root.0).to_bytes())
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decided_attestations_get_the_combined_signature_anything_else_is_refused() {
    let c = cluster();
    let slot = c.current_slot() + 2;
    let e = c.decide_attestation(slot, 5);
    let object = SignObject::Attestation(e.data);
    let root = object.signing_root(&c.schedule);
    // Three of four VCs ask (node 3's VC is down): each gets the DV's own signature.
    let answers = within(c.sign_on(&[0, 1, 2], object)).await;
    for a in answers {
        assert_eq!(a.unwrap(), c.whole(root));
    }
    // The node whose VC did not ask combined it too (from its peers' partials).
    within(c.nodes[3].dutydb.await_combined(
        c.dv.pubkey,
        root,
        Instant::now() + Duration::from_secs(5),
    ))
    .await
    .unwrap();

    // Another head for the same duty: not decided, never signed.
    let mut other = e.data;
    other.beacon_block_root = Root([6; 32]);
    let err = within(c.sign_on(&[0], SignObject::Attestation(other)))
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(err.status, StatusCode::PRECONDITION_FAILED, "{err}");
    assert!(err.message.starts_with("attestation:"), "{err}");
    assert!(
        !c.nodes[0].parsig.has_own(
            Duty::new(slot, DutyKind::Attester),
            c.dv.pubkey,
            SignObject::<P>::Attestation(other).signing_root(&c.schedule)
        ),
        "no partial was made"
    );
    // A slot without a duty of the DV.
    let mut stray = e.data;
    stray.slot = slot + 1;
    let err = within(c.sign_on(&[1], SignObject::Attestation(stray)))
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(err.status, StatusCode::PRECONDITION_FAILED);
    assert!(err.message.contains("no attester duty"), "{err}");
    // A block nobody decided.
    let block =
        crate::web3signer::request::BlockToSign::Header(crate::eth::types::BeaconBlockHeader {
            slot,
            ..Default::default()
        });
    let err = within(c.sign_on(&[2], SignObject::Block(block)))
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(err.status, StatusCode::PRECONDITION_FAILED);
    assert!(err.message.starts_with("beacon_block:"), "{err}");
    // An exit naming another validator index.
    let exit = crate::eth::types::VoluntaryExit {
        epoch: 1,
        validator_index: 18,
    };
    let err = within(c.sign_on(&[0], SignObject::VoluntaryExit(exit)))
        .await
        .remove(0)
        .unwrap_err();
    assert!(
        err.message.starts_with("voluntary_exit.validator_index:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_proofs_are_combined_ahead_and_answered_at_once() {
    let c = cluster();
    let slot = c.current_slot() + 9;
    let e = c.decide_attestation(slot, 5);
    let duty = Duty::new(slot, DutyKind::SelectionProof);
    let object = SignedObject::SelectionProof { slot };
    // The fetch stage of every node signs ahead of the VC.
    for n in &c.nodes {
        let deadline = Instant::now() + Duration::from_secs(5);
        within(n.parsig.sign_own(duty, c.dv.pubkey, object, deadline))
            .await
            .unwrap();
    }
    let root = c.schedule.selection_proof_signing_root(slot);
    let start = Instant::now();
    let answers = within(c.sign_on(&[0, 1, 2, 3], SignObject::AggregationSlot { slot })).await;
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    for a in answers {
        assert_eq!(a.unwrap(), c.whole(root), "the DV's unique selection proof");
    }
    // Asked again (the VC re-polls after a reorg): the same answer, nothing new sent.
    let again = within(c.sign_on(&[0], SignObject::AggregationSlot { slot }))
        .await
        .remove(0);
    assert_eq!(again.unwrap(), c.whole(root));
    let proof = c.nodes[0].dutydb.combined(c.dv.pubkey, root).unwrap();
    assert!(
        is_aggregator(e.def.committee_length, &proof),
        "committee of 16: always"
    );

    // An aggregate and proof over the decided aggregate with the combined proof.
    let mut bits = BitList::with_capacity(16).unwrap();
    bits.set(1, true).unwrap();
    bits.set(3, true).unwrap();
    let aggregate = Attestation::<P> {
        aggregation_bits: bits,
        data: e.data,
        signature: BlsSignature([0xc0; 96]),
    };
    for n in &c.nodes {
        n.dutydb
            .store(
                Duty::new(slot, DutyKind::Aggregation),
                &DutyValue::Aggregation(vec![AggregateEntry {
                    committee_index: 0,
                    aggregate: aggregate.clone(),
                }]),
            )
            .unwrap();
    }
    let message = AggregateAndProof {
        aggregator_index: 17,
        aggregate,
        selection_proof: proof,
    };
    let msg_root = c.schedule.aggregate_and_proof_signing_root(&message);
    let answers = within(c.sign_on(
        &[0, 1, 3],
        SignObject::AggregateAndProof(Box::new(message.clone())),
    ))
    .await;
    for a in answers {
        assert_eq!(a.unwrap(), c.whole(msg_root));
    }
    // With another selection proof, index or aggregate: refused, naming the field.
    let mut forged = message.clone();
    forged.selection_proof = BlsSignature([7; 96]);
    let err = within(c.sign_on(&[2], SignObject::AggregateAndProof(Box::new(forged))))
        .await
        .remove(0)
        .unwrap_err();
    assert!(
        err.message
            .starts_with("aggregate_and_proof.selection_proof:"),
        "{err}"
    );
    let mut forged = message.clone();
    forged.aggregator_index = 3;
    let err = within(c.sign_on(&[2], SignObject::AggregateAndProof(Box::new(forged))))
        .await
        .remove(0)
        .unwrap_err();
    assert!(
        err.message
            .starts_with("aggregate_and_proof.aggregator_index:"),
        "{err}"
    );
    let mut forged = message;
    forged.aggregate.aggregation_bits.set(5, true).unwrap();
    let err = within(c.sign_on(&[2], SignObject::AggregateAndProof(Box::new(forged))))
        .await
        .remove(0)
        .unwrap_err();
    assert!(
        err.message.starts_with("aggregate_and_proof.aggregate:"),
        "{err}"
    );
    assert_eq!(err.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_proof_that_cannot_combine_is_answered_with_a_placeholder() {
    let c = cluster();
    let slot = c.current_slot() + 1;
    c.decide_attestation(slot, 5);
    // Only node 0's VC asks; its peers never sign: no threshold.
    let start = Instant::now();
    let answer = within(c.sign_on(&[0], SignObject::AggregationSlot { slot }))
        .await
        .remove(0)
        .unwrap();
    let root = c.schedule.selection_proof_signing_root(slot);
    assert_ne!(answer, c.whole(root));
    assert!(
        start.elapsed() <= Duration::from_secs(2),
        "bounded wait: {:?}",
        start.elapsed()
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &c.nodes[0].registry).unwrap();
    assert!(
        text.contains("remote_sign_selection_placeholders_total{type=\"selection_proof\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_away_gets_the_partials_it_missed() {
    let c = cluster();
    let slot = c.current_slot() + 12;
    let duty = Duty::new(slot, DutyKind::SelectionProof);
    let object = SignedObject::SelectionProof { slot };
    let root = c.schedule.selection_proof_signing_root(slot);
    c.node3_away.store(true, Ordering::SeqCst);
    for n in &c.nodes[..3] {
        let deadline = Instant::now() + Duration::from_secs(5);
        within(n.parsig.sign_own(duty, c.dv.pubkey, object, deadline))
            .await
            .unwrap();
    }
    let soon = || Instant::now() + Duration::from_secs(5);
    within(c.nodes[0].dutydb.await_combined(c.dv.pubkey, root, soon()))
        .await
        .unwrap();
    // Node 3 comes back (restarted) and signs: the others are past their threshold and send it
    // their partials, so it combines too.
    c.node3_away.store(false, Ordering::SeqCst);
    within(
        c.nodes[3]
            .parsig
            .sign_own(duty, c.dv.pubkey, object, soon()),
    )
    .await
    .unwrap();
    let sig = within(c.nodes[3].dutydb.await_combined(c.dv.pubkey, root, soon()))
        .await
        .unwrap();
    assert_eq!(sig, c.whole(root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_selection_proofs_of_two_subcommittees_do_not_collide() {
    let c = cluster();
    let slot = c.current_slot() + 3;
    let duty = Duty::new(slot, DutyKind::SyncSelectionProof);
    let mut roots = HashSet::new();
    for sub in [0, 2] {
        let data = crate::eth::aggregate::SyncAggregatorSelectionData {
            slot,
            subcommittee_index: sub,
        };
        let answers = within(c.sign_on(&[0, 1, 2], SignObject::SyncSelectionProof(data))).await;
        let root = c.schedule.sync_selection_proof_signing_root(&data);
        for a in answers {
            assert_eq!(a.unwrap(), c.whole(root), "subcommittee {sub}");
        }
        roots.insert(root);
        assert!(c.nodes[0].parsig.has_own(duty, c.dv.pubkey, root));
    }
    assert_eq!(roots.len(), 2);
    // Outside the window around the current slot: refused (412), not signed.
    let far = crate::eth::aggregate::SyncAggregatorSelectionData {
        slot: c.current_slot() + 100,
        subcommittee_index: 0,
    };
    let err = within(c.sign_on(&[0], SignObject::SyncSelectionProof(far)))
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(err.status, StatusCode::PRECONDITION_FAILED, "{err}");
}

/// Lodestar's VC signs the head of its beacon node's event stream, which can move between the
/// cluster's decision and the VC's request (measured in the real-Lodestar e2e: with one node
/// down, one VC's other head left the decided message one partial short of the threshold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vc_on_another_head_still_adds_its_partial_to_the_decided_sync_message() {
    let c = cluster();
    let slot = c.current_slot() + 2;
    let duty = Duty::new(slot, DutyKind::SyncMessage);
    let decided = Root([7; 32]);
    for n in &c.nodes {
        n.dutydb.store_defs(
            duty,
            DutyDefs::SyncMessage(vec![crate::duty::SyncDef {
                pubkey: c.dv.pubkey,
                validator_index: 17,
            }]),
        );
        n.dutydb
            .store(duty, &DutyValue::SyncMessage(decided))
            .unwrap();
    }
    let message = |beacon_block_root| SignObject::<P>::SyncCommitteeMessage {
        beacon_block_root,
        slot,
    };
    let root = message(decided).signing_root(&c.schedule);
    let other = Root([8; 32]);
    // Node 3 is down; the VCs of nodes 0 and 1 saw the decided head, node 2's VC a newer one.
    let (agreeing, moved) = within(async {
        tokio::join!(
            c.sign_on(&[0, 1], message(decided)),
            c.sign_on(&[2], message(other))
        )
    })
    .await;
    for a in agreeing {
        assert_eq!(a.unwrap(), c.whole(root));
    }
    let err = moved.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.status, StatusCode::PRECONDITION_FAILED, "{err}");
    assert!(
        err.message
            .starts_with("sync_committee_message.beacon_block_root:"),
        "{err}"
    );
    // Node 2 never signed its VC's root, and combined the decided message like the others.
    assert!(!c.nodes[2].parsig.has_own(
        duty,
        c.dv.pubkey,
        message(other).signing_root(&c.schedule)
    ));
    let combined = within(c.nodes[2].dutydb.await_combined(
        c.dv.pubkey,
        root,
        Instant::now() + Duration::from_secs(5),
    ))
    .await
    .unwrap();
    assert_eq!(combined, c.whole(root));
}

/// What the fetch stage signs as soon as a duty is decided ([`crate::fetcher::decided_objects`]):
/// with no VC asking at all the cluster combines the decided attestation and the aggregate
/// and proof; a VC that asks later gets the same signatures at once; nothing but the decided
/// value is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decided_attestations_and_aggregates_combine_without_any_vc_request() {
    use crate::fetcher::decided_objects;
    let c = cluster();
    let slot = c.current_slot() + 9;
    let e = c.decide_attestation(slot, 5);
    let deadline = || Instant::now() + Duration::from_secs(5);
    let attester = Duty::new(slot, DutyKind::Attester);
    let defs = DutyDefs::Attester(vec![e.def]);
    let value = DutyValue::<P>::Attester(vec![e]);
    // Node 3 is down: three nodes sign what they decided.
    for n in &c.nodes[..3] {
        let objects = decided_objects(&n.parsig, attester, &defs, &value, deadline()).await;
        assert_eq!(
            objects,
            vec![(c.dv.pubkey, SignedObject::Attestation { data: e.data })],
            "exactly the decided data"
        );
        for r in within(n.parsig.sign_own_many(attester, objects, deadline())).await {
            r.unwrap();
        }
    }
    let root = c.schedule.attestation_signing_root(&e.data);
    for n in &c.nodes[..3] {
        let sig = within(n.dutydb.await_combined(c.dv.pubkey, root, deadline()))
            .await
            .unwrap();
        assert_eq!(sig, c.whole(root), "the DV's own signature, no VC asked");
    }
    // A VC asking afterwards is answered from the combined signature.
    let start = Instant::now();
    let answer = within(c.sign_on(&[1], SignObject::Attestation(e.data)))
        .await
        .remove(0);
    assert_eq!(answer.unwrap(), c.whole(root));
    assert!(start.elapsed() < Duration::from_millis(500));

    // Aggregation: the combined selection proof elects the DV (committee below the target).
    let proof_duty = Duty::new(slot, DutyKind::SelectionProof);
    for n in &c.nodes[..3] {
        within(n.parsig.sign_own(
            proof_duty,
            c.dv.pubkey,
            SignedObject::SelectionProof { slot },
            deadline(),
        ))
        .await
        .unwrap();
    }
    let proof_root = c.schedule.selection_proof_signing_root(slot);
    let mut bits = BitList::with_capacity(16).unwrap();
    bits.set(2, true).unwrap();
    let aggregate = Attestation::<P> {
        aggregation_bits: bits,
        data: e.data,
        signature: BlsSignature([0xc0; 96]),
    };
    let aggregation = Duty::new(slot, DutyKind::Aggregation);
    let defs = DutyDefs::Aggregation(vec![e.def]);
    let value = DutyValue::<P>::Aggregation(vec![AggregateEntry {
        committee_index: e.def.committee_index,
        aggregate: aggregate.clone(),
    }]);
    let mut message_root = None;
    for n in &c.nodes[..3] {
        let proof = within(n.dutydb.await_combined(c.dv.pubkey, proof_root, deadline()))
            .await
            .unwrap();
        n.dutydb.store(aggregation, &value).unwrap();
        let want = AggregateAndProof {
            aggregator_index: e.def.validator_index,
            aggregate: aggregate.clone(),
            selection_proof: proof,
        };
        let objects = decided_objects(&n.parsig, aggregation, &defs, &value, deadline()).await;
        assert_eq!(
            objects,
            vec![(
                c.dv.pubkey,
                SignedObject::AggregateAndProof {
                    message_root: Root::of(&want),
                }
            )]
        );
        message_root = Some(c.schedule.aggregate_and_proof_signing_root(&want));
        for r in within(n.parsig.sign_own_many(aggregation, objects, deadline())).await {
            r.unwrap();
        }
    }
    let message_root = message_root.unwrap();
    let sig = within(
        c.nodes[0]
            .dutydb
            .await_combined(c.dv.pubkey, message_root, deadline()),
    )
    .await
    .unwrap();
    assert_eq!(sig, c.whole(message_root));

    // A committee the cluster decided no aggregate for: nothing to sign.
    let other = DutyValue::<P>::Aggregation(vec![AggregateEntry {
        committee_index: e.def.committee_index + 1,
        aggregate,
    }]);
    let objects = decided_objects(&c.nodes[0].parsig, aggregation, &defs, &other, deadline()).await;
    assert!(objects.is_empty());
}
