//! Partial signatures from peers: payloads of `/dvlab/parsig/2.0.0` into the real
//! [`ParSig::handle_peer`](dvnode::parsig::ParSig::handle_peer) of node 0 (share 1) of the
//! fixture cluster, with its duty DB of decided duties: JSON decoding of the list of partials
//! (at most `MAX_PARTIALS_PER_MESSAGE`), sender/share check,
//! decided-object match, BLS verification against the public share, storage, equivocation and
//! threshold detection. The clock is paused, so waits for undecided duties end at once.
//!
//! Input: messages separated by NUL bytes, each `sender byte` + JSON payload (a list of
//! partials; the sender is the authenticated node index, byte % 4).
//!
//! Properties: every emitted threshold holds exactly `t` partials of distinct shares, each
//! valid, combining into the DV's valid signature over the signing root; at most one threshold
//! per duty and DV.

use std::collections::HashSet;
use std::sync::OnceLock;

use dvnode::duty::{Duty, DutyKind};
use dvnode::parsig::{encode_partials, ParSigMsg, SignedObject};

use crate::fixture::{self, Dv};

/// One execution.
pub fn run(data: &[u8]) {
    // One runtime per process (a paused clock: waits for undecided duties end at once).
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let mut wf = fixture::workflow(1);
    RT.get_or_init(crate::paused_runtime).block_on(async {
        for msg in data.split(|b| *b == 0).take(64) {
            let Some((&sender, payload)) = msg.split_first() else {
                continue;
            };
            if let Err(e) = wf
                .parsig
                .handle_peer(usize::from(sender % 4), payload)
                .await
            {
                let _ = (e.reason(), e.to_string());
            }
        }
    });
    let mut seen = HashSet::new();
    while let Ok(t) = wf.out.try_recv() {
        assert!(
            seen.insert((t.duty, t.pubkey)),
            "second threshold for {t:?}"
        );
        fixture::check_threshold(&t);
    }
}

/// A valid partial of `dv` by `share` for `duty` over `object`.
fn msg(dv: &Dv, share: u64, duty: Duty, object: SignedObject) -> ParSigMsg {
    let s = fixture::schedule();
    let root = match object {
        SignedObject::Attestation { data } => s.attestation_signing_root(&data),
        SignedObject::Block { .. } => s.block_signing_root(&fixture::block()),
        SignedObject::Randao { epoch } => s.randao_signing_root(epoch),
        SignedObject::SyncMessage { block_root } => {
            s.sync_committee_signing_root(block_root, duty.slot)
        }
        other => unreachable!("the fuzzer makes no partial of {other:?}"),
    };
    ParSigMsg {
        duty,
        pubkey: dv.pubkey,
        share_index: share,
        object,
        signature: fixture::partial(dv, share, root),
    }
}

/// Valid partials of every decided duty of the fixture, by each share.
pub fn seed_msgs() -> Vec<Vec<ParSigMsg>> {
    let dv = fixture::dvs();
    let schedule = fixture::schedule();
    let att = Duty::new(fixture::ATT_SLOT, DutyKind::Attester);
    let prop = Duty::new(fixture::PROPOSER_SLOT, DutyKind::Proposer);
    let randao = Duty::new(fixture::PROPOSER_SLOT, DutyKind::Randao);
    let sync = Duty::new(fixture::SYNC_SLOT, DutyKind::SyncMessage);
    let data = fixture::attestation_data();
    let objects = [
        (&dv[0], att, SignedObject::Attestation { data }),
        (&dv[1], att, SignedObject::Attestation { data }),
        (
            &dv[0],
            prop,
            SignedObject::Block {
                block_root: dvnode::eth::types::Root::of(&fixture::block()),
            },
        ),
        (
            &dv[0],
            randao,
            SignedObject::Randao {
                epoch: schedule.epoch_at_slot(fixture::PROPOSER_SLOT),
            },
        ),
        (
            &dv[1],
            sync,
            SignedObject::SyncMessage {
                block_root: fixture::SYNC_ROOT,
            },
        ),
    ];
    objects
        .iter()
        .map(|(d, duty, object)| (1..=4).map(|share| msg(d, share, *duty, *object)).collect())
        .collect()
}

/// Payloads of valid partials (for the p2p seeds): one partial each, then all of share 2's.
pub fn seed_payloads() -> Vec<Vec<u8>> {
    let msgs = seed_msgs();
    let mut out: Vec<Vec<u8>> = msgs.iter().map(|m| encode_partials(&m[1..2])).collect();
    let share2: Vec<ParSigMsg> = msgs.iter().map(|m| m[1]).collect();
    out.push(encode_partials(&share2));
    out
}

fn frame(sender: u64, msgs: &[ParSigMsg]) -> Vec<u8> {
    let mut f = vec![(sender - 1) as u8];
    f.extend(encode_partials(msgs));
    f
}

/// Per decided duty: the partials of shares 2..4 from their nodes (a threshold), and one with
/// a share sent by the wrong node and an equivocation; then every duty's partials of shares 2..4
/// in one message per node, one of them with a partial of another share among them.
pub fn seeds() -> Vec<Vec<u8>> {
    let msgs = seed_msgs();
    let mut out = Vec::new();
    for m in &msgs {
        let frames: Vec<Vec<u8>> = m[1..].iter().map(|p| frame(p.share_index, &[*p])).collect();
        out.push(frames.join(&0u8));
        let mut wrong = vec![1u8];
        wrong.extend(encode_partials(&m[2..3]));
        let mut equivocation = m[1];
        equivocation.signature = m[2].signature;
        out.push([frames[0].clone(), wrong, frame(2, &[equivocation])].join(&0u8));
    }
    let by_share = |share: usize| -> Vec<ParSigMsg> { msgs.iter().map(|m| m[share]).collect() };
    let mut mixed = by_share(3);
    mixed.insert(1, msgs[0][1]);
    out.push(
        [
            frame(2, &by_share(1)),
            frame(3, &by_share(2)),
            frame(4, &mixed),
        ]
        .join(&0u8),
    );
    out
}
