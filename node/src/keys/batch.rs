//! Batch verification of many BLS signatures at once (random linear combination).
//!
//! Signatures `σ_i` by public keys `pk_i` over messages `m_i` are checked together: with random
//! non-zero 64-bit weights `r_i`,
//!
//! ```text
//! e(g1, Σ r_i·σ_i) == Π_m e(Σ_{i: m_i = m} r_i·pk_i, H(m))
//! ```
//!
//! one multi-scalar multiplication in G2 and one in G1 per distinct message, one Miller loop per
//! distinct message plus one, and a single final exponentiation — instead of two Miller loops and
//! a final exponentiation per signature. Partial signatures of a duty mostly share a few signing
//! roots (all sync committee messages of a slot one, attestations one per committee), so a batch
//! of hundreds costs little more than one verification. If any signature is invalid the equation
//! fails except with probability below 2⁻⁶³; the batch is then split into halves, recursively, so
//! that a few bad signatures among many cost a few dozen checks rather than one each.
//!
//! Soundness needs every signature in the prime-order subgroup (checked here, as
//! [`tbls::verify`] does) and every public key valid: keys are the caller's, validated when they
//! were loaded (a cluster lock's keys are, see `cluster::lock`).

use std::collections::HashMap;

use blst::{blst_p2_affine, MultiPoint, BLST_ERROR};
use prometheus_client::metrics::histogram::Histogram;
use rand::RngCore;

use super::tbls::{self, PublicKey, Signature, DST};

/// Weights are 64-bit: a forged batch passes with probability below 2⁻⁶³.
const WEIGHT_BITS: usize = 64;
/// Below this size a failed batch is checked one signature at a time.
const SPLIT_BELOW: usize = 4;

/// One signature to check.
#[derive(Clone, Copy, Debug)]
pub struct BatchItem {
    /// Signer's public key (valid: in G1 and not the point at infinity).
    pub public_key: PublicKey,
    /// Signed message (a signing root).
    pub message: [u8; 32],
    /// Signature.
    pub signature: Signature,
}

fn in_subgroup(sig: &Signature) -> bool {
    let point: &blst_p2_affine = sig.into();
    // SAFETY: `point` references a valid affine point.
    !unsafe { blst::blst_p2_affine_is_inf(point) } && sig.subgroup_check()
}

/// The combined check of `items` (all in the subgroup) with fresh random weights.
fn combined_check(items: &[&BatchItem]) -> bool {
    if let [one] = items {
        return one
            .signature
            .verify(false, &one.message, DST, &[], &one.public_key, false)
            == BLST_ERROR::BLST_SUCCESS;
    }
    let mut rng = rand::thread_rng();
    let weights: Vec<[u8; 8]> = items
        .iter()
        .map(|_| (rng.next_u64() | 1).to_le_bytes())
        .collect();
    let sigs: Vec<Signature> = items.iter().map(|i| i.signature).collect();
    let all_weights: Vec<u8> = weights.iter().flatten().copied().collect();
    let sig_sum = sigs
        .as_slice()
        .mult(&all_weights, WEIGHT_BITS)
        .to_signature();
    let mut groups: HashMap<[u8; 32], (Vec<PublicKey>, Vec<u8>)> = HashMap::new();
    for (item, w) in items.iter().zip(&weights) {
        let g = groups.entry(item.message).or_default();
        g.0.push(item.public_key);
        g.1.extend_from_slice(w);
    }
    let mut messages = Vec::with_capacity(groups.len());
    let mut keys = Vec::with_capacity(groups.len());
    for (m, (pks, w)) in &groups {
        messages.push(m.as_slice());
        keys.push(pks.as_slice().mult(w, WEIGHT_BITS).to_public_key());
    }
    let key_refs: Vec<&PublicKey> = keys.iter().collect();
    // Subgroup membership of the inputs is preserved by the combination (checked by the caller).
    sig_sum.aggregate_verify(false, &messages, DST, &key_refs, false) == BLST_ERROR::BLST_SUCCESS
}

/// Marks the valid items of `idx` in `out`: the whole set at once, halves when that fails.
fn check_split(items: &[BatchItem], idx: &[usize], out: &mut [bool]) {
    let refs: Vec<&BatchItem> = idx.iter().map(|&i| &items[i]).collect();
    if combined_check(&refs) {
        for &i in idx {
            out[i] = true;
        }
        return;
    }
    if idx.len() < SPLIT_BELOW {
        for &i in idx {
            out[i] = tbls::verify(&items[i].public_key, &items[i].message, &items[i].signature);
        }
        return;
    }
    let (a, b) = idx.split_at(idx.len() / 2);
    check_split(items, a, out);
    check_split(items, b, out);
}

/// Whether each item's signature is valid (see the [module docs](self)).
pub fn verify_batch(items: &[BatchItem]) -> Vec<bool> {
    let mut out = vec![false; items.len()];
    let candidates: Vec<usize> = (0..items.len())
        .filter(|&i| in_subgroup(&items[i].signature))
        .collect();
    if !candidates.is_empty() {
        check_split(items, &candidates, &mut out);
    }
    out
}

/// Most signatures checked in one batch.
const MAX_BATCH: usize = 1024;

/// Items submitted together, and where their answers go (in the same order).
type Job = (Vec<BatchItem>, tokio::sync::oneshot::Sender<Vec<bool>>);

/// Verifies signatures submitted from many tasks in batches, on a thread of its own (off the
/// async runtime). While one batch is checked, new submissions queue up; the next batch takes
/// all of them (whole submissions, until they hold at least [`MAX_BATCH`] signatures). A lone
/// signature costs what a single verification costs; the partial signatures of a slot's many DVs
/// arriving together (or submitted together, [`BatchVerifier::verify_many`]) cost little more
/// than one.
/// The thread ends when the last clone of the verifier is dropped.
#[derive(Clone, Debug)]
pub struct BatchVerifier {
    /// `None` under the fuzzer: batches are verified on the caller's thread.
    jobs: Option<std::sync::mpsc::Sender<Job>>,
}

impl Default for BatchVerifier {
    fn default() -> Self {
        Self::new(None)
    }
}

impl BatchVerifier {
    /// Starts the verifying thread; `batch_seconds`, if given, observes the time of each batch.
    pub fn new(batch_seconds: Option<Histogram>) -> BatchVerifier {
        // Under `cargo fuzz` (`--cfg fuzzing`: one execution after the other on one thread, a
        // fresh parsig stage each) the same `verify_batch` runs on the caller's thread: a thread
        // spawned per execution and a hand-over per verification cost more than the checks.
        if cfg!(fuzzing) {
            return BatchVerifier { jobs: None };
        }
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("bls-batch-verify".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut items = first.0;
                    let mut replies = vec![(items.len(), first.1)];
                    while items.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok((more, reply)) => {
                                replies.push((more.len(), reply));
                                items.extend(more);
                            }
                            Err(_) => break,
                        }
                    }
                    let started = std::time::Instant::now();
                    let mut valid = verify_batch(&items).into_iter();
                    if let Some(h) = &batch_seconds {
                        h.observe(started.elapsed().as_secs_f64());
                    }
                    for (n, reply) in replies {
                        // The submitter may have given up waiting.
                        let _ = reply.send(valid.by_ref().take(n).collect());
                    }
                }
            })
            .expect("spawning the BLS batch verification thread");
        BatchVerifier { jobs: Some(jobs) }
    }

    /// Whether `item`'s signature is valid (checked in the next batch).
    pub async fn verify(&self, item: BatchItem) -> bool {
        self.verify_many(vec![item]).await.first() == Some(&true)
    }

    /// Whether each of `items`' signatures is valid, in order: checked together (in one batch,
    /// with whatever else is queued).
    pub async fn verify_many(&self, items: Vec<BatchItem>) -> Vec<bool> {
        if items.is_empty() {
            return Vec::new();
        }
        let Some(jobs) = &self.jobs else {
            return verify_batch(&items);
        };
        let n = items.len();
        let (reply, result) = tokio::sync::oneshot::channel();
        if jobs.send((items, reply)).is_err() {
            return vec![false; n];
        }
        result.await.unwrap_or_else(|_| vec![false; n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn items(n: usize, messages: usize) -> Vec<BatchItem> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
        (0..n)
            .map(|i| {
                let sk = tbls::random_secret(&mut rng);
                let message = [(i % messages) as u8; 32];
                BatchItem {
                    public_key: sk.sk_to_pk(),
                    message,
                    signature: tbls::sign(&sk, &message),
                }
            })
            .collect()
    }

    #[test]
    fn valid_batches_pass_with_one_or_many_messages() {
        assert!(verify_batch(&[]).is_empty());
        for (n, m) in [(1, 1), (2, 1), (37, 1), (37, 3), (64, 64)] {
            assert_eq!(
                verify_batch(&items(n, m)),
                vec![true; n],
                "{n} items, {m} messages"
            );
        }
    }

    #[test]
    fn invalid_signatures_are_named_exactly() {
        let mut batch = items(50, 2);
        // Wrong message, a signature by another key, and a swap that keeps the sum intact.
        batch[3].message = [9; 32];
        batch[17].signature = batch[18].signature;
        let (a, b) = (batch[30].signature, batch[31].signature);
        batch[30].signature = b;
        batch[31].signature = a;
        let expected: Vec<bool> = (0..50).map(|i| ![3, 17, 30, 31].contains(&i)).collect();
        assert_eq!(verify_batch(&batch), expected);
    }

    #[test]
    fn points_outside_the_subgroup_and_infinity_are_refused() {
        let mut batch = items(4, 1);
        let mut inf = [0u8; 96];
        inf[0] = 0xc0;
        batch[1].signature = Signature::from_bytes(&inf).unwrap();
        assert_eq!(verify_batch(&batch), vec![true, false, true, true]);
    }

    #[test]
    fn agrees_with_single_verification_on_random_corruption() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        for round in 0..8 {
            let mut batch = items(24, 1 + round % 4);
            for item in batch.iter_mut() {
                if rng.next_u32() % 5 == 0 {
                    item.message[0] ^= 1;
                }
            }
            let single: Vec<bool> = batch
                .iter()
                .map(|i| tbls::verify(&i.public_key, &i.message, &i.signature))
                .collect();
            assert_eq!(verify_batch(&batch), single, "round {round}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifier_answers_each_submitter_from_shared_batches() {
        let mut batch = items(200, 3);
        batch[7].message = [9; 32];
        batch[150].signature = batch[151].signature;
        let verifier = BatchVerifier::default();
        // Singles and groups of several sizes at once: each submitter gets its own answers,
        // in order, whatever batch they were checked in.
        let mut tasks = Vec::new();
        let mut rest = &batch[..];
        for size in [1, 37, 1, 1, 62, 0, 5].into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (group, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            let (v, group) = (verifier.clone(), group.to_vec());
            tasks.push(tokio::spawn(async move {
                if let [one] = group[..] {
                    vec![v.verify(one).await]
                } else {
                    v.verify_many(group).await
                }
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.extend(t.await.unwrap());
        }
        let expected: Vec<bool> = (0..200).map(|i| i != 7 && i != 150).collect();
        assert_eq!(got, expected);
        assert!(verifier.verify_many(Vec::new()).await.is_empty());
    }
}
