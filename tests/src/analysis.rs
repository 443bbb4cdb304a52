//! What the harness checks on the chain that dvlab's analyser (see [`crate::rundir`]) does not:
//! signature verification of everything on chain, and the dvnode trackers' duty-log outcomes
//! against the chain (with the inclusion distances they need).

use std::{
    collections::{BTreeSet, HashMap},
    ops::RangeInclusive,
};

use blst::{
    min_pk::{PublicKey, Signature},
    BLST_ERROR,
};
use dvnode::{
    eth::{
        signing::ForkSchedule,
        types::{BlsPubkey, BlsSignature, Epoch, Preset, Root, Slot, ValidatorIndex},
    },
    keys::tbls::DST,
};
use serde::{Deserialize, Serialize};

use crate::chain::ChainRecord;
use crate::dutylog::DutyLog;

/// Signature verification results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignatureStats {
    /// Blocks proposed by the group, signature checked.
    pub group_blocks: u64,
    /// Blocks by other proposers, signature checked.
    pub other_blocks: u64,
    /// On-chain aggregate attestations with at least one group member among the participants.
    pub group_attestations: u64,
    /// Other aggregate attestations checked.
    pub other_attestations: u64,
    /// Sync aggregates with a group member participating.
    pub group_sync_aggregates: u64,
    /// Other non-empty sync aggregates checked.
    pub other_sync_aggregates: u64,
    /// Every failure, as text (`slot N: what`); failures involving the group come first.
    pub group_failures: Vec<String>,
    /// Failures not involving the group.
    pub other_failures: Vec<String>,
}

/// The smallest distance at which each `(attestation slot, validator)` vote was included.
pub fn inclusion_distances<P: Preset>(
    rec: &ChainRecord<P>,
) -> HashMap<(Slot, ValidatorIndex), u64> {
    let mut best: HashMap<(Slot, ValidatorIndex), u64> = HashMap::new();
    for (&block_slot, block) in &rec.blocks {
        for att in block.message.body.attestations.iter() {
            let Some(committee) = rec.committee(att.data.slot, att.data.index) else {
                continue;
            };
            if block_slot <= att.data.slot {
                continue;
            }
            let distance = block_slot - att.data.slot;
            for (pos, v) in committee.validators.iter().enumerate() {
                if att.aggregation_bits.get(pos).unwrap_or(false) {
                    let e = best.entry((att.data.slot, *v)).or_insert(distance);
                    *e = (*e).min(distance);
                }
            }
        }
    }
    best
}

/// Public keys parsed once (and validated) for verification.
struct Keys<'a> {
    raw: &'a [BlsPubkey],
    parsed: HashMap<ValidatorIndex, Option<PublicKey>>,
}

impl<'a> Keys<'a> {
    fn new(raw: &'a [BlsPubkey]) -> Self {
        Self {
            raw,
            parsed: HashMap::new(),
        }
    }

    fn get(&mut self, v: ValidatorIndex) -> Result<PublicKey, String> {
        let raw = self.raw;
        self.parsed
            .entry(v)
            .or_insert_with(|| {
                raw.get(v as usize)
                    .and_then(|pk| PublicKey::key_validate(pk.as_bytes()).ok())
            })
            .ok_or_else(|| format!("validator {v}: unknown or invalid public key"))
    }
}

fn verify_aggregate(pks: &[PublicKey], msg: &Root, sig: &BlsSignature) -> Result<(), String> {
    let sig = Signature::sig_validate(sig.as_bytes(), true)
        .map_err(|e| format!("signature does not decode: {e:?}"))?;
    let refs: Vec<&PublicKey> = pks.iter().collect();
    match sig.fast_aggregate_verify(true, msg.as_bytes(), DST, &refs) {
        BLST_ERROR::BLST_SUCCESS => Ok(()),
        e => Err(format!("does not verify ({e:?})")),
    }
}

/// Verifies every signature on chain: block signatures against the proposer's key,
/// aggregate attestations over their participants' keys, sync aggregates over the
/// participating sync committee members' keys. `group` selects which results count as the
/// group's (a DV key among the signers).
pub fn verify_signatures<P: Preset>(
    rec: &ChainRecord<P>,
    schedule: &ForkSchedule,
    group: &[ValidatorIndex],
) -> SignatureStats {
    let group: BTreeSet<ValidatorIndex> = group.iter().copied().collect();
    let mut keys = Keys::new(&rec.pubkeys);
    let mut s = SignatureStats::default();
    for (&slot, block) in &rec.blocks {
        let proposer = block.message.proposer_index;
        let in_group = group.contains(&proposer);
        let result = keys.get(proposer).and_then(|pk| {
            verify_aggregate(
                &[pk],
                &schedule.block_signing_root(&block.message),
                &block.signature,
            )
        });
        if in_group {
            s.group_blocks += 1;
        } else {
            s.other_blocks += 1;
        }
        if let Err(e) = result {
            let msg = format!("slot {slot}: block by validator {proposer}: {e}");
            if in_group {
                s.group_failures.push(msg);
            } else {
                s.other_failures.push(msg);
            }
        }

        for (i, att) in block.message.body.attestations.iter().enumerate() {
            let Some(committee) = rec.committee(att.data.slot, att.data.index) else {
                s.other_failures.push(format!(
                    "slot {slot}: attestation {i} for slot {} committee {}: committee not recorded",
                    att.data.slot, att.data.index
                ));
                continue;
            };
            if att.aggregation_bits.len() != committee.validators.len() {
                s.other_failures.push(format!(
                    "slot {slot}: attestation {i}: {} bits for a committee of {}",
                    att.aggregation_bits.len(),
                    committee.validators.len()
                ));
                continue;
            }
            let participants: Vec<ValidatorIndex> = committee
                .validators
                .iter()
                .enumerate()
                .filter(|(p, _)| att.aggregation_bits.get(*p).unwrap_or(false))
                .map(|(_, v)| *v)
                .collect();
            let in_group = participants.iter().any(|v| group.contains(v));
            let result = participants
                .iter()
                .map(|v| keys.get(*v))
                .collect::<Result<Vec<_>, _>>()
                .and_then(|pks| {
                    verify_aggregate(
                        &pks,
                        &schedule.attestation_signing_root(&att.data),
                        &att.signature,
                    )
                });
            if in_group {
                s.group_attestations += 1;
            } else {
                s.other_attestations += 1;
            }
            if let Err(e) = result {
                let msg = format!(
                    "slot {slot}: attestation {i} (slot {}, committee {}, participants {participants:?}): {e}",
                    att.data.slot, att.data.index
                );
                if in_group {
                    s.group_failures.push(msg);
                } else {
                    s.other_failures.push(msg);
                }
            }
        }

        let agg = &block.message.body.sync_aggregate;
        if slot == 0 || agg.sync_committee_bits.num_set_bits() == 0 {
            continue;
        }
        let period = rec.period_of(rec.epoch_of(slot));
        let Some(committee) = rec.sync_committees.get(&period) else {
            s.other_failures.push(format!(
                "slot {slot}: sync aggregate: committee of period {period} not recorded"
            ));
            continue;
        };
        let participants: Vec<ValidatorIndex> = committee
            .iter()
            .enumerate()
            .filter(|(p, _)| agg.sync_committee_bits.get(*p).unwrap_or(false))
            .map(|(_, v)| *v)
            .collect();
        let in_group = participants.iter().any(|v| group.contains(v));
        // Signed: the block root at the previous slot, i.e. this block's parent.
        let root = schedule.sync_committee_signing_root(block.message.parent_root, slot - 1);
        let result = participants
            .iter()
            .map(|v| keys.get(*v))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|pks| verify_aggregate(&pks, &root, &agg.sync_committee_signature));
        if in_group {
            s.group_sync_aggregates += 1;
        } else {
            s.other_sync_aggregates += 1;
        }
        if let Err(e) = result {
            let msg = format!("slot {slot}: sync aggregate: {e}");
            if in_group {
                s.group_failures.push(msg);
            } else {
                s.other_failures.push(msg);
            }
        }
    }
    s
}

/// How the dvnode trackers' duty-log outcomes compare with the chain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackerAgreement {
    /// Lines compared: DV attester / proposer / sync message lines that reached broadcast
    /// (outcome `success` or `not_included_onchain`).
    pub compared: u64,
    /// Of those, lines whose verdict the chain confirms.
    pub agreeing: u64,
    /// Lines saying `success` the chain does not show, or `not_included_onchain` it shows.
    pub disagreements: Vec<String>,
    /// DV duties included on chain that no node tracked as included (nor as unknown).
    pub untracked_inclusions: Vec<String>,
    /// Included lines whose inclusion delay differs from the chain's smallest distance.
    pub delay_mismatches: Vec<String>,
    /// Lines with `inclusion_unknown` (the node stopped or could not read the blocks).
    pub unknown: u64,
    /// Lines of duties the chain misses, each with a failure reason.
    pub misses_with_reason: u64,
    /// Lines of duties the chain shows included although this node failed before broadcasting
    /// (another node broadcast).
    pub included_by_others: u64,
}

impl TrackerAgreement {
    /// Whether the trackers and the chain agree on everything compared.
    pub fn agrees(&self) -> bool {
        self.compared > 0
            && self.disagreements.is_empty()
            && self.untracked_inclusions.is_empty()
            && self.delay_mismatches.is_empty()
    }
}

/// Whether the chain includes the `kind` duty of validator `v` at `slot`: `Some(Some(delay))`
/// included, `Some(None)` not included, `None` unknown (sync committee not recorded).
fn chain_inclusion<P: Preset>(
    rec: &ChainRecord<P>,
    distances: &HashMap<(Slot, ValidatorIndex), u64>,
    kind: &str,
    slot: Slot,
    v: ValidatorIndex,
) -> Option<Option<u64>> {
    match kind {
        "attester" => Some(distances.get(&(slot, v)).copied()),
        "proposer" => Some(
            rec.blocks
                .get(&slot)
                .filter(|b| b.message.proposer_index == v)
                .map(|_| 0),
        ),
        "sync_message" => {
            let next = slot + 1;
            let committee = rec
                .sync_committees
                .get(&rec.period_of(rec.epoch_of(next)))?;
            let Some(block) = rec.blocks.get(&next) else {
                return Some(None);
            };
            let bits = &block.message.body.sync_aggregate.sync_committee_bits;
            let set = committee
                .iter()
                .enumerate()
                .any(|(p, m)| *m == v && bits.get(p).unwrap_or(false));
            Some(set.then_some(1))
        }
        _ => None,
    }
}

/// Compares the duty logs of the dvnodes (`logs[i]` of node i) with the chain, for the DV
/// validators `dv` and the duties of `epochs`.
pub fn tracker_agreement<P: Preset>(
    rec: &ChainRecord<P>,
    dv: &[ValidatorIndex],
    epochs: RangeInclusive<Epoch>,
    distances: &HashMap<(Slot, ValidatorIndex), u64>,
    logs: &[DutyLog],
) -> TrackerAgreement {
    const KINDS: [&str; 3] = ["attester", "proposer", "sync_message"];
    let group: BTreeSet<ValidatorIndex> = dv.iter().copied().collect();
    let mut a = TrackerAgreement::default();
    // (kind, slot, validator) tracked by some node as success / as unknown.
    let mut tracked: BTreeSet<(String, Slot, ValidatorIndex)> = BTreeSet::new();
    let mut sync_lines: BTreeSet<(Slot, ValidatorIndex)> = BTreeSet::new();
    for (node, log) in logs.iter().enumerate() {
        for r in &log.records {
            let kind = r.duty.kind.as_str();
            let slot = r.duty.slot;
            let Some(v) = r.validator_index else { continue };
            if !KINDS.contains(&kind)
                || !group.contains(&v)
                || !epochs.contains(&rec.epoch_of(slot))
            {
                continue;
            }
            if kind == "sync_message" {
                sync_lines.insert((slot, v));
            }
            let Some(chain) = chain_inclusion(rec, distances, kind, slot, v) else {
                continue;
            };
            let what = format!("node{node} {kind} slot {slot} validator {v}");
            match r.outcome.as_str() {
                "inclusion_unknown" => {
                    a.unknown += 1;
                    tracked.insert((kind.to_string(), slot, v));
                }
                "success" | "not_included_onchain" => {
                    a.compared += 1;
                    let says = r.outcome == "success";
                    if says != chain.is_some() {
                        a.disagreements.push(format!(
                            "{what}: tracker {}, chain {}",
                            r.outcome,
                            if chain.is_some() {
                                "included"
                            } else {
                                "not included"
                            }
                        ));
                        continue;
                    }
                    a.agreeing += 1;
                    if says {
                        tracked.insert((kind.to_string(), slot, v));
                        if r.inclusion_delay != chain {
                            a.delay_mismatches.push(format!(
                                "{what}: tracker delay {:?}, chain {:?}",
                                r.inclusion_delay, chain
                            ));
                        }
                    }
                }
                _ if chain.is_some() => a.included_by_others += 1,
                _ => a.misses_with_reason += 1,
            }
        }
    }
    // Chain side: every DV inclusion is tracked by some node.
    let mut duties: Vec<(&str, Slot, ValidatorIndex)> = Vec::new();
    for epoch in epochs.clone() {
        for c in rec.committees.get(&epoch).into_iter().flatten() {
            for v in c.validators.iter().filter(|v| group.contains(v)) {
                duties.push(("attester", c.slot, *v));
            }
        }
    }
    let first = *epochs.start() * rec.slots_per_epoch;
    let end = (*epochs.end() + 1) * rec.slots_per_epoch;
    for (&slot, &v) in rec.proposers.range(first..end) {
        if group.contains(&v) {
            duties.push(("proposer", slot, v));
        }
    }
    duties.extend(sync_lines.iter().map(|(s, v)| ("sync_message", *s, *v)));
    for (kind, slot, v) in duties {
        if chain_inclusion(rec, distances, kind, slot, v)
            .flatten()
            .is_some()
            && !tracked.contains(&(kind.to_string(), slot, v))
        {
            a.untracked_inclusions
                .push(format!("{kind} slot {slot} validator {v}"));
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::fixture::{block, record, schedule, sign, three_blocks};

    #[test]
    fn inclusion_distances_and_signatures() {
        let rec = three_blocks();
        let d = inclusion_distances(&rec);
        assert_eq!(d[&(8, 0)], 1);
        assert_eq!(d[&(9, 2)], 2);
        assert_eq!(d[&(10, 5)], 1);
        assert!(!d.contains_key(&(9, 3)));

        // All signatures verify; the group {0} sees its attestations and sync aggregates.
        let v = verify_signatures(&rec, &schedule(), &[0, 9]);
        assert!(v.group_failures.is_empty(), "{:?}", v.group_failures);
        assert!(v.other_failures.is_empty(), "{:?}", v.other_failures);
        assert_eq!(v.group_blocks, 1);
        assert_eq!(v.other_blocks, 2);
        assert_eq!(v.group_attestations, 1);
        assert_eq!(v.other_attestations, 3);
        assert_eq!(v.group_sync_aggregates, 2);
    }

    #[test]
    fn bad_signatures_are_caught() {
        let mut rec = record();
        rec.blocks
            .insert(9, block(&rec, 9, &[(8, &[0, 1])], &[1], true));
        let mut b10 = block(&rec, 10, &[], &[], false);
        b10.signature = BlsSignature(sign(3, &Root([1; 32])).to_bytes());
        rec.blocks.insert(10, b10);
        let v = verify_signatures(&rec, &schedule(), &[0, 10]);
        assert_eq!(v.group_failures.len(), 2, "{:?}", v.group_failures);
        assert!(v.group_failures[0].contains("attestation 0"));
        assert!(v.group_failures[1].contains("block by validator 10"));
        assert!(v.other_failures.is_empty(), "{:?}", v.other_failures);

        // The wrong committee mapping (shifted) makes an honest aggregate fail too.
        let mut rec2 = record();
        rec2.blocks
            .insert(9, block(&rec2, 9, &[(8, &[0])], &[], false));
        rec2.committees.get_mut(&1).unwrap()[0].validators = vec![1, 0];
        let v = verify_signatures(&rec2, &schedule(), &[1]);
        assert_eq!(v.group_failures.len(), 1, "{:?}", v.group_failures);
    }

    #[test]
    fn tracker_outcomes_are_compared_with_the_chain() {
        let mut rec = record();
        // Slot 8's committee (validators 0, 1) is included at slot 9; slot 9's (2, 3) never.
        rec.blocks
            .insert(9, block(&rec, 9, &[(8, &[0, 1])], &[], false));
        let d = inclusion_distances(&rec);
        let line = |slot: u64, v: u64, outcome: &str, delay: Option<u64>| {
            let delay = delay.map_or(String::new(), |d| format!(r#","inclusion_delay":{d}"#));
            format!(
                r#"{{"ts_ms":0,"duty":{{"slot":"{slot}","kind":"attester"}},"validator_index":"{v}","outcome":"{outcome}","stages":{{}},"shares":[]{delay}}}"#
            )
        };
        let wrong = DutyLog::parse(
            &[
                line(8, 0, "success", Some(1)),
                line(8, 1, "not_included_onchain", None),
                line(9, 2, "no_local_vc_signature", None),
                line(9, 3, "success", Some(1)),
            ]
            .join("\n"),
        );
        let a = tracker_agreement(&rec, &[0, 1, 2, 3], 1..=1, &d, &[wrong]);
        assert_eq!((a.compared, a.agreeing, a.misses_with_reason), (3, 1, 1));
        assert_eq!(a.disagreements.len(), 2, "{:?}", a.disagreements);
        assert!(a.disagreements[1].contains("node0 attester slot 9 validator 3"));
        assert_eq!(a.untracked_inclusions, vec!["attester slot 8 validator 1"]);
        assert!(!a.agrees());

        let right = DutyLog::parse(
            &[
                line(8, 0, "success", Some(1)),
                line(9, 2, "not_included_onchain", None),
                line(9, 3, "no_consensus", None),
            ]
            .join("\n"),
        );
        // Validator 1's inclusion is tracked by the other node; node 0 has no line for it.
        let other = DutyLog::parse(&line(8, 1, "success", Some(1)));
        let a = tracker_agreement(&rec, &[0, 1, 2, 3], 1..=1, &d, &[right, other]);
        assert!(a.agrees(), "{a:?}");
        assert_eq!((a.compared, a.misses_with_reason), (3, 1));
        // A wrong delay is caught.
        let late = DutyLog::parse(&line(8, 0, "success", Some(2)));
        let a = tracker_agreement(&rec, &[0], 1..=1, &d, &[late]);
        assert_eq!(a.delay_mismatches.len(), 1);
    }
}
