//! Coalesced submissions of signed objects to the beacon node's array endpoints
//! (`POST /eth/v1/beacon/pool/attestations`, `…/pool/sync_committees`,
//! `/eth/v1/validator/aggregate_and_proofs`, `…/contribution_and_proofs`), with an answer per
//! item.
//!
//! One [`PoolLane`] per endpoint. An item is sent at once while fewer than [`MAX_IN_FLIGHT`]
//! requests of the lane are in flight, so a quiet node keeps the latency of one POST per object;
//! otherwise it waits in the lane's queue, and when a request returns the queued items go out
//! together as one array of at most [`MAX_BATCH`]. A burst (a slot's hundreds of sync-committee
//! messages) so becomes a few POSTs instead of one per object.
//!
//! Each submitter gets its own item's outcome ([`ItemOutcome`]) from the answer to the request
//! that carried it:
//! - a 2xx: every item accepted;
//! - the beacon API's per-item answer (`400` with `failures: [{index, message}]`,
//!   [`ItemErrors::Indexed`]): the listed items refused (or already known), the others accepted;
//! - Lodestar 1.5.1's answer ([`ItemErrors::Unindexed`]: HTTP 500 with one failed item's message,
//!   or `Multiple errors on …` listing the failed items' messages without their positions):
//!   every item accepted when every message says "already known"; each item given the message
//!   when there is one identical message per item; otherwise the answer cannot be attributed
//!   and each item is resubmitted **alone** at once, so it gets its own answer (an item the
//!   node took the first time is then answered "already known");
//! - no answer (transport error, timeout) or the node unavailable (502/503/504, after
//!   [`super::fallback`] tried every beacon node): the whole array is tried again after
//!   [`RETRY_PAUSE`].
//!
//! An item refused with a 4xx is done (the node judged it); one failed with a 500 is tried again
//! alone after [`RETRY_PAUSE`] (as the broadcaster always did for single objects). Every retry
//! stops at the item's deadline. Accepted items are never sent again. The lane holds at most
//! [`MAX_HELD`] items (queued, in flight or waiting to be retried): beyond that a submission is
//! refused at once with an error naming the cap (metric `broadcast_pool_queue_full_total`).
//!
//! # Metrics
//! `broadcast_pool_requests_total{kind}` (POSTs), `broadcast_pool_items_total{kind, outcome}`
//! (`accepted`, `known`, `refused`, `failed`), `broadcast_pool_resubmitted_total{kind}` (items
//! resubmitted alone because an answer did not say which item it meant),
//! `broadcast_pool_queue_full_total{kind}`, `broadcast_pool_batch_items{kind}` (items per POST).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::client::{already_known, BeaconClient, BeaconError, ItemErrors};

/// Requests of one lane in flight at once; more items wait and go out together.
pub const MAX_IN_FLIGHT: usize = 4;
/// Items per request at most.
pub const MAX_BATCH: usize = 512;
/// Items a lane holds at most (queued, in flight or waiting to be retried): ~16 slots of a
/// 512-member sync committee, a few MiB.
pub const MAX_HELD: usize = 8_192;
/// Pause before an item whose request failed is tried again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The array endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// `POST /eth/v1/beacon/pool/attestations`.
    Attestations,
    /// `POST /eth/v1/beacon/pool/sync_committees`.
    SyncMessages,
    /// `POST /eth/v1/validator/aggregate_and_proofs`.
    Aggregates,
    /// `POST /eth/v1/validator/contribution_and_proofs`.
    Contributions,
}

impl PoolKind {
    /// The endpoint's path.
    pub fn path(self) -> &'static str {
        match self {
            PoolKind::Attestations => "/eth/v1/beacon/pool/attestations",
            PoolKind::SyncMessages => "/eth/v1/beacon/pool/sync_committees",
            PoolKind::Aggregates => "/eth/v1/validator/aggregate_and_proofs",
            PoolKind::Contributions => "/eth/v1/validator/contribution_and_proofs",
        }
    }

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::Attestations => "attestation",
            PoolKind::SyncMessages => "sync_message",
            PoolKind::Aggregates => "aggregate",
            PoolKind::Contributions => "contribution",
        }
    }
}

impl fmt::Display for PoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of one submitted item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    /// The beacon node has it: it accepted it (or, answering for several items at once without
    /// saying which, knew it already).
    Accepted,
    /// The beacon node had it already (another node of the cluster was first).
    Known,
    /// The beacon node refused it; why.
    Refused(String),
    /// Not taken before its deadline, or not queued (the lane is full); why.
    Failed(String),
}

impl ItemOutcome {
    /// Whether the beacon node has the item.
    pub fn is_ok(&self) -> bool {
        matches!(self, ItemOutcome::Accepted | ItemOutcome::Known)
    }

    fn label(&self) -> &'static str {
        match self {
            ItemOutcome::Accepted => "accepted",
            ItemOutcome::Known => "known",
            ItemOutcome::Refused(_) => "refused",
            ItemOutcome::Failed(_) => "failed",
        }
    }
}

/// What to do with one item of a request after the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// Its outcome is known.
    Done(ItemOutcome),
    /// Resubmit it alone at once: the answer did not say whether it concerns this item.
    Split,
    /// The node failed this item with a server error: try it again, alone, after a pause.
    RetryAlone(String),
    /// The request failed as a whole: try again (in an array) after a pause.
    RetryBatch(String),
}

/// The verdict on an item the answer is known to concern: `message` is the node's word on it,
/// `why` the text to report.
fn verdict_on_item(status: Option<reqwest::StatusCode>, message: &str, why: String) -> Verdict {
    if already_known(message) {
        Verdict::Done(ItemOutcome::Known)
    } else if status.is_some_and(|s| s.is_client_error()) {
        Verdict::Done(ItemOutcome::Refused(why))
    } else if status == Some(reqwest::StatusCode::INTERNAL_SERVER_ERROR) {
        // Lodestar answers 500 for an object its gossip validation rejected.
        Verdict::RetryAlone(why)
    } else {
        Verdict::RetryBatch(why)
    }
}

/// The verdicts on the `n` items of one request, from its `answer`. See the
/// [module docs](self).
fn judge(n: usize, answer: &Result<(), BeaconError>) -> Vec<Verdict> {
    let e = match answer {
        Ok(()) => return vec![Verdict::Done(ItemOutcome::Accepted); n],
        Err(e) => e,
    };
    let status = e.status();
    let text = e.to_string();
    if n == 1 {
        // The whole answer is about the one item (the broadcaster's old rule), its item
        // messages read whole (the error text keeps only the start of the body).
        let mut message = text.clone();
        let messages: Vec<&str> = match e.item_errors() {
            Some(ItemErrors::Indexed(v)) => v.iter().map(|(_, m)| m.as_str()).collect(),
            Some(ItemErrors::Unindexed(v)) => v.iter().map(String::as_str).collect(),
            None => Vec::new(),
        };
        for m in messages {
            message.push('\n');
            message.push_str(m);
        }
        return vec![verdict_on_item(status, &message, text)];
    }
    let Some(status) = status else {
        // No answer at all.
        return vec![Verdict::RetryBatch(text); n];
    };
    let unattributed = || {
        if status.is_client_error() || status == reqwest::StatusCode::INTERNAL_SERVER_ERROR {
            vec![Verdict::Split; n]
        } else {
            vec![Verdict::RetryBatch(text.clone()); n]
        }
    };
    match e.item_errors() {
        Some(ItemErrors::Indexed(failures)) if failures.iter().all(|(i, _)| *i < n) => {
            let mut by_item: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
            for (i, m) in failures {
                by_item.entry(*i).or_default().push(m.as_str());
            }
            (0..n)
                .map(|i| match by_item.get(&i) {
                    None => Verdict::Done(ItemOutcome::Accepted),
                    Some(m) => {
                        let m = m.join("; ");
                        let why = format!(
                            "{} {}: HTTP {status}: item {i} of {n}: {m}",
                            reqwest::Method::POST,
                            endpoint_of(e)
                        );
                        verdict_on_item(Some(status), &m, why)
                    }
                })
                .collect()
        }
        Some(ItemErrors::Unindexed(messages)) if !messages.is_empty() => {
            if messages.iter().all(|m| already_known(m)) {
                vec![Verdict::Done(ItemOutcome::Accepted); n]
            } else if messages.len() == n && messages.iter().all(|m| *m == messages[0]) {
                let why = format!(
                    "{} {}: HTTP {status}: every item of {n}: {}",
                    reqwest::Method::POST,
                    endpoint_of(e),
                    messages[0]
                );
                vec![verdict_on_item(Some(status), &messages[0], why); n]
            } else {
                unattributed()
            }
        }
        _ => unattributed(),
    }
}

fn endpoint_of(e: &BeaconError) -> &str {
    match e {
        BeaconError::Status { endpoint, .. }
        | BeaconError::Transport { endpoint, .. }
        | BeaconError::Timeout { endpoint, .. }
        | BeaconError::Decode { endpoint, .. }
        | BeaconError::Unexpected { endpoint, .. }
        | BeaconError::EventStream { endpoint, .. } => endpoint,
        BeaconError::InvalidUrl { url, .. } => url,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: String,
    outcome: String,
}

/// The lanes' metrics (cheap to clone; clones share the series).
#[derive(Clone, Debug)]
pub struct PoolMetrics {
    requests: Family<KindLabel, Counter>,
    items: Family<OutcomeLabels, Counter>,
    resubmitted: Family<KindLabel, Counter>,
    queue_full: Family<KindLabel, Counter>,
    batch_items: Family<KindLabel, Histogram>,
}

fn batch_histogram() -> Histogram {
    // 1 … 512 items.
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

impl Default for PoolMetrics {
    fn default() -> Self {
        PoolMetrics {
            requests: Family::default(),
            items: Family::default(),
            resubmitted: Family::default(),
            queue_full: Family::default(),
            batch_items: Family::new_with_constructor(batch_histogram),
        }
    }
}

impl PoolMetrics {
    /// New metrics, registered in `registry`.
    pub fn registered(registry: &mut Registry) -> PoolMetrics {
        let m = PoolMetrics::default();
        registry.register(
            "broadcast_pool_requests",
            "POSTs of signed objects to the beacon node's array endpoints, by kind",
            m.requests.clone(),
        );
        registry.register(
            "broadcast_pool_items",
            "Signed objects submitted to the beacon node's array endpoints, by kind and outcome",
            m.items.clone(),
        );
        registry.register(
            "broadcast_pool_resubmitted",
            "Objects resubmitted alone because the beacon node's answer to their array did not say which object it meant",
            m.resubmitted.clone(),
        );
        registry.register(
            "broadcast_pool_queue_full",
            "Objects refused because their lane already held the most it may hold",
            m.queue_full.clone(),
        );
        registry.register(
            "broadcast_pool_batch_items",
            "Objects per POST to the beacon node's array endpoints",
            m.batch_items.clone(),
        );
        m
    }

    fn kind(kind: PoolKind) -> KindLabel {
        KindLabel {
            kind: kind.as_str().into(),
        }
    }
}

struct Pending<T> {
    item: T,
    /// When sending it becomes pointless.
    deadline: Instant,
    reply: oneshot::Sender<ItemOutcome>,
}

struct LaneState<T> {
    /// Items that may go out together.
    batch: VecDeque<Pending<T>>,
    /// Items that go out one per request.
    alone: VecDeque<Pending<T>>,
    in_flight: usize,
    alone_in_flight: usize,
    /// Items queued, in flight or waiting to be retried.
    held: usize,
}

/// One array endpoint's queue. See the [module docs](self).
pub struct PoolLane<T> {
    kind: PoolKind,
    bn: BeaconClient,
    metrics: PoolMetrics,
    state: Mutex<LaneState<T>>,
}

impl<T: Serialize + Send + Sync + 'static> PoolLane<T> {
    /// A lane for `kind` on `bn`.
    pub fn new(kind: PoolKind, bn: BeaconClient, metrics: PoolMetrics) -> Arc<PoolLane<T>> {
        Arc::new(PoolLane {
            kind,
            bn,
            metrics,
            state: Mutex::new(LaneState {
                batch: VecDeque::new(),
                alone: VecDeque::new(),
                in_flight: 0,
                alone_in_flight: 0,
                held: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests in flight and items held (tests, diagnostics).
    pub fn load(&self) -> (usize, usize) {
        let s = self.lock();
        (s.in_flight, s.held)
    }

    /// Submits `item`, giving up at `deadline`; returns what became of it.
    pub async fn submit(self: &Arc<Self>, item: T, deadline: Instant) -> ItemOutcome {
        let (reply, answer) = oneshot::channel();
        {
            let mut s = self.lock();
            if s.held >= MAX_HELD {
                drop(s);
                self.metrics
                    .queue_full
                    .get_or_create(&PoolMetrics::kind(self.kind))
                    .inc();
                let outcome = ItemOutcome::Failed(format!(
                    "POST {}: not queued: {MAX_HELD} {} objects already wait for the beacon node",
                    self.kind.path(),
                    self.kind
                ));
                self.count(&outcome);
                return outcome;
            }
            s.held += 1;
            s.batch.push_back(Pending {
                item,
                deadline,
                reply,
            });
        }
        self.pump();
        answer.await.unwrap_or_else(|_| {
            ItemOutcome::Failed(format!(
                "POST {}: the submission was dropped",
                self.kind.path()
            ))
        })
    }

    fn count(&self, outcome: &ItemOutcome) {
        self.metrics
            .items
            .get_or_create(&OutcomeLabels {
                kind: self.kind.as_str().into(),
                outcome: outcome.label().into(),
            })
            .inc();
    }

    /// Answers `p` (and forgets it).
    fn finish(&self, p: Pending<T>, outcome: ItemOutcome) {
        self.count(&outcome);
        let _ = p.reply.send(outcome);
    }

    /// Sends what is queued while fewer than [`MAX_IN_FLIGHT`] requests are in flight.
    fn pump(self: &Arc<Self>) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut s = self.lock();
            while s.in_flight < MAX_IN_FLIGHT {
                // Items to send alone take turns with arrays: at most all but one request.
                let alone_turn = !s.alone.is_empty()
                    && (s.batch.is_empty() || s.alone_in_flight + 1 < MAX_IN_FLIGHT);
                let (mut items, alone) = if alone_turn {
                    (s.alone.pop_front().into_iter().collect::<Vec<_>>(), true)
                } else if !s.batch.is_empty() {
                    let n = s.batch.len().min(MAX_BATCH);
                    (s.batch.drain(..n).collect(), false)
                } else {
                    break;
                };
                let (live, dead): (Vec<_>, Vec<_>) =
                    items.drain(..).partition(|p| p.deadline > now);
                s.held -= dead.len();
                expired.extend(dead);
                if live.is_empty() {
                    continue;
                }
                s.in_flight += 1;
                s.alone_in_flight += usize::from(alone);
                tokio::spawn(self.clone().send(live, alone));
            }
        }
        for p in expired {
            let why = format!(
                "POST {}: deadline passed while queued for the beacon node",
                self.kind.path()
            );
            self.finish(p, ItemOutcome::Failed(why));
        }
    }

    /// Sends `items` in one request and deals with the answer.
    async fn send(self: Arc<Self>, items: Vec<Pending<T>>, alone: bool) {
        let kind = PoolMetrics::kind(self.kind);
        self.metrics.requests.get_or_create(&kind).inc();
        self.metrics
            .batch_items
            .get_or_create(&kind)
            .observe(items.len() as f64);
        let answer = {
            let refs: Vec<&T> = items.iter().map(|p| &p.item).collect();
            self.bn.submit_array(self.kind.path(), &refs).await
        };
        let verdicts = judge(items.len(), &answer);
        if let Err(e) = &answer {
            debug!(kind = %self.kind, items = items.len(), error = %e, "beacon node answered an array submission with an error");
        }
        let now = Instant::now();
        let (mut split, mut later_alone, mut later_batch) = (Vec::new(), Vec::new(), Vec::new());
        let mut finished = Vec::new();
        for (p, verdict) in items.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Done(outcome) => finished.push((p, outcome)),
                Verdict::Split => split.push(p),
                Verdict::RetryAlone(why) | Verdict::RetryBatch(why)
                    if now + RETRY_PAUSE >= p.deadline =>
                {
                    let why = format!("{why} (deadline passed; no more attempts)");
                    finished.push((p, ItemOutcome::Failed(why)));
                }
                Verdict::RetryAlone(_) => later_alone.push(p),
                Verdict::RetryBatch(_) => later_batch.push(p),
            }
        }
        if !split.is_empty() {
            warn!(kind = %self.kind, items = split.len(), "the beacon node's answer does not say which objects it refused: resubmitting each alone");
            self.metrics
                .resubmitted
                .get_or_create(&kind)
                .inc_by(split.len() as u64);
        }
        {
            let mut s = self.lock();
            s.in_flight -= 1;
            s.alone_in_flight -= usize::from(alone);
            s.held -= finished.len();
            s.alone.extend(split);
        }
        for (p, outcome) in finished {
            self.finish(p, outcome);
        }
        if !later_alone.is_empty() || !later_batch.is_empty() {
            let lane = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY_PAUSE).await;
                {
                    let mut s = lane.lock();
                    s.alone.extend(later_alone);
                    // Ahead of newer items: they are older.
                    for p in later_batch.into_iter().rev() {
                        s.batch.push_front(p);
                    }
                }
                lane.pump();
            });
        }
        self.pump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tokio::time::Instant;

    use reqwest::{Method, StatusCode};

    fn status(code: u16, body: &str) -> Result<(), BeaconError> {
        Err(BeaconError::Status {
            method: Method::POST,
            endpoint: "/eth/v1/beacon/pool/attestations".into(),
            status: StatusCode::from_u16(code).unwrap(),
            body: body.into(),
            items: super::super::client::parse_item_errors(body.as_bytes()).map(Box::new),
        })
    }

    fn refused(v: &Verdict) -> &str {
        match v {
            Verdict::Done(ItemOutcome::Refused(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn item_errors_of_the_standard_answer_and_of_lodestar() {
        use super::super::client::parse_item_errors;
        assert_eq!(
            parse_item_errors(
                br#"{"code":400,"message":"some failed","failures":[{"index":2,"message":"bad sig"},{"index":"0","message":"late"}]}"#
            ),
            Some(ItemErrors::Indexed(vec![
                (2, "bad sig".into()),
                (0, "late".into())
            ]))
        );
        // Lodestar 1.5.1 (fastify's error shape): several failed items.
        assert_eq!(
            parse_item_errors(
                br#"{"statusCode":500,"error":"Internal Server Error","message":"Multiple errors on submitPoolAttestations\nATTESTATION_ERROR_INVALID_SIGNATURE\nATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN"}"#
            ),
            Some(ItemErrors::Unindexed(vec![
                "ATTESTATION_ERROR_INVALID_SIGNATURE".into(),
                "ATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN".into()
            ]))
        );
        // One failed item: its own message.
        assert_eq!(
            parse_item_errors(
                br#"{"statusCode":500,"error":"Internal Server Error","message":"SYNC_COMMITTEE_ERROR_INVALID_SIGNATURE"}"#
            ),
            Some(ItemErrors::Unindexed(vec![
                "SYNC_COMMITTEE_ERROR_INVALID_SIGNATURE".into()
            ]))
        );
        // A position that is not a number: only the messages count.
        assert_eq!(
            parse_item_errors(br#"{"failures":[{"index":null,"message":"x"}]}"#),
            Some(ItemErrors::Unindexed(vec!["x".into()]))
        );
        assert_eq!(parse_item_errors(b"Bad Gateway"), None);
    }

    #[test]
    fn each_item_gets_the_answer_that_concerns_it() {
        // Standard per-item answer: the listed items refused (or known), the others accepted.
        let v = judge(
            4,
            &status(
                400,
                r#"{"code":400,"message":"x","failures":[{"index":1,"message":"INVALID_SIGNATURE"},{"index":3,"message":"ATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN"}]}"#,
            ),
        );
        assert_eq!(v[0], Verdict::Done(ItemOutcome::Accepted));
        let why = refused(&v[1]);
        assert!(why.contains("item 1 of 4: INVALID_SIGNATURE"), "{why}");
        assert!(why.contains("/eth/v1/beacon/pool/attestations"), "{why}");
        assert_eq!(v[2], Verdict::Done(ItemOutcome::Accepted));
        assert_eq!(v[3], Verdict::Done(ItemOutcome::Known));

        // Lodestar: every listed error "already known" — the node has every item.
        let v = judge(
            3,
            &status(
                500,
                r#"{"statusCode":500,"message":"Multiple errors on submitPoolAttestations\nATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN\nATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN"}"#,
            ),
        );
        assert_eq!(v, vec![Verdict::Done(ItemOutcome::Accepted); 3]);
        // Lodestar: one identical error per item — each item has it (a 500: tried again alone).
        let v = judge(
            2,
            &status(
                500,
                r#"{"statusCode":500,"message":"Multiple errors on publishAggregateAndProofs\nPublishError.InsufficientPeers\nPublishError.InsufficientPeers"}"#,
            ),
        );
        assert!(
            v.iter().all(|v| matches!(v, Verdict::RetryAlone(why) if why.contains("every item of 2: PublishError.InsufficientPeers"))),
            "{v:?}"
        );
        // Lodestar: fewer errors than items, or different ones — nobody knows whose: each alone.
        for body in [
            r#"{"statusCode":500,"message":"ATTESTATION_ERROR_INVALID_SIGNATURE"}"#,
            r#"{"statusCode":500,"message":"Multiple errors on submitPoolAttestations\nATTESTATION_ERROR_INVALID_SIGNATURE\nATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN"}"#,
        ] {
            assert_eq!(
                judge(3, &status(500, body)),
                vec![Verdict::Split; 3],
                "{body}"
            );
        }
        // A 4xx about the whole body, and an unreadable body: each alone.
        assert_eq!(
            judge(2, &status(400, r#"{"message":"invalid body"}"#)),
            vec![Verdict::Split; 2]
        );
        assert_eq!(judge(2, &status(500, "oops")), vec![Verdict::Split; 2]);
        // The node unavailable: the array again, later.
        assert!(judge(
            2,
            &status(503, r#"{"statusCode":503,"message":"Node is syncing"}"#)
        )
        .iter()
        .all(|v| matches!(v, Verdict::RetryBatch(why) if why.contains("503"))));
        // A position out of range: not trusted.
        assert_eq!(
            judge(
                2,
                &status(400, r#"{"failures":[{"index":5,"message":"x"}]}"#)
            ),
            vec![Verdict::Split; 2]
        );
        // One item: the answer is its own (the broadcaster's old rule).
        assert_eq!(
            judge(
                1,
                &status(
                    500,
                    r#"{"message":"SYNC_COMMITTEE_ERROR_PRIOR_SYNC_COMMITTEE_MESSAGE_KNOWN"}"#
                )
            ),
            vec![Verdict::Done(ItemOutcome::Known)]
        );
        assert!(refused(&judge(1, &status(400, r#"{"message":"bad"}"#))[0]).contains("bad"));
        assert!(matches!(
            &judge(
                1,
                &status(500, r#"{"message":"ATTESTATION_ERROR_INVALID_SIGNATURE"}"#)
            )[0],
            Verdict::RetryAlone(_)
        ));
        assert_eq!(
            judge(5, &Ok(())),
            vec![Verdict::Done(ItemOutcome::Accepted); 5]
        );
    }

    /// What the test beacon node saw.
    #[derive(Default)]
    struct Record {
        /// Items of each request, in arrival order, with the arrival time.
        requests: Vec<(Instant, Vec<u64>)>,
        in_flight: usize,
        max_in_flight: usize,
        /// Items the node took (Lodestar's seen caches).
        taken: HashSet<u64>,
    }

    type Answer = fn(&[u64], &mut Record) -> (u16, String);

    /// A beacon node on loopback whose pool endpoints answer with `answer`, each request after
    /// `hold` and once `gate` can be read-locked.
    async fn pool_bn(
        answer: Answer,
        hold: Duration,
        gate: Arc<tokio::sync::RwLock<()>>,
    ) -> (String, Arc<Mutex<Record>>) {
        let record = Arc::new(Mutex::new(Record::default()));
        let r = record.clone();
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (r, gate) = (r.clone(), gate.clone());
            async move {
                let items: Vec<u64> = serde_json::from_slice(&body).unwrap();
                {
                    let mut r = r.lock().unwrap();
                    r.requests.push((Instant::now(), items.clone()));
                    r.in_flight += 1;
                    r.max_in_flight = r.max_in_flight.max(r.in_flight);
                }
                tokio::time::sleep(hold).await;
                let _open = gate.read().await;
                let mut r = r.lock().unwrap();
                r.in_flight -= 1;
                let (code, body) = answer(&items, &mut r);
                (StatusCode::from_u16(code).unwrap(), body)
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, record)
    }

    fn open() -> Arc<tokio::sync::RwLock<()>> {
        Arc::new(tokio::sync::RwLock::new(()))
    }

    fn accept_all(items: &[u64], r: &mut Record) -> (u16, String) {
        r.taken.extend(items);
        (200, String::new())
    }

    fn lane(url: &str, registry: &mut Registry) -> Arc<PoolLane<u64>> {
        PoolLane::new(
            PoolKind::Attestations,
            BeaconClient::new(url).unwrap(),
            PoolMetrics::registered(registry),
        )
    }

    fn soon(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    async fn submit_all(
        lane: &Arc<PoolLane<u64>>,
        items: impl Iterator<Item = u64>,
        deadline: Instant,
    ) -> Vec<(u64, ItemOutcome)> {
        futures::future::join_all(items.map(|i| {
            let lane = lane.clone();
            async move { (i, lane.submit(i, deadline).await) }
        }))
        .await
    }

    fn metrics_text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn a_quiet_lane_sends_an_item_at_once_alone() {
        let (url, record) = pool_bn(accept_all, Duration::ZERO, open()).await;
        let mut registry = Registry::default();
        let lane = lane(&url, &mut registry);
        for i in 0..3u64 {
            let t = Instant::now();
            assert_eq!(lane.submit(i, soon(60)).await, ItemOutcome::Accepted);
            let r = record.lock().unwrap();
            let (arrived, items) = r.requests.last().unwrap();
            assert_eq!(items, &vec![i]);
            // No waiting for company: the request left as soon as the item came.
            assert!(
                arrived.duration_since(t) < Duration::from_millis(500),
                "{:?}",
                arrived.duration_since(t)
            );
        }
        assert_eq!(record.lock().unwrap().requests.len(), 3);
        assert_eq!(lane.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_burst_becomes_few_arrays_within_the_in_flight_cap() {
        let (url, record) = pool_bn(accept_all, Duration::from_millis(40), open()).await;
        let mut registry = Registry::default();
        let lane = lane(&url, &mut registry);
        let outcomes = submit_all(&lane, 0..3_000, soon(60)).await;
        assert!(outcomes.iter().all(|(_, o)| *o == ItemOutcome::Accepted));
        let r = record.lock().unwrap();
        assert!(r.max_in_flight <= MAX_IN_FLIGHT, "{}", r.max_in_flight);
        assert!(r.requests.iter().all(|(_, items)| items.len() <= MAX_BATCH));
        let sent: Vec<u64> = r
            .requests
            .iter()
            .flat_map(|(_, i)| i.iter().copied())
            .collect();
        assert_eq!(sent.len(), 3_000, "each item sent once");
        assert_eq!(r.taken.len(), 3_000);
        // 3,000 objects in a handful of POSTs: the first few alone, then full arrays.
        assert!(r.requests.len() <= 16, "{} requests", r.requests.len());
        assert!(r.requests.iter().any(|(_, i)| i.len() == MAX_BATCH));
        let text = metrics_text(&registry);
        assert!(
            text.contains(&format!(
                "broadcast_pool_requests_total{{kind=\"attestation\"}} {}",
                r.requests.len()
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "broadcast_pool_items_total{kind=\"attestation\",outcome=\"accepted\"} 3000"
            ),
            "{text}"
        );
        assert_eq!(lane.load(), (0, 0));
    }

    /// The beacon API's answer: multiples of 7 refused, multiples of 11 already known.
    fn standard(items: &[u64], r: &mut Record) -> (u16, String) {
        let mut failures = Vec::new();
        for (i, v) in items.iter().enumerate() {
            if v % 7 == 0 {
                failures.push(
                    serde_json::json!({"index": i, "message": format!("invalid signature of {v}")}),
                );
            } else if v % 11 == 0 {
                failures.push(serde_json::json!({"index": i, "message": "ATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN"}));
            } else {
                r.taken.insert(*v);
            }
        }
        if failures.is_empty() {
            return (200, String::new());
        }
        (
            400,
            serde_json::json!({"code": 400, "message": "some failed", "failures": failures})
                .to_string(),
        )
    }

    #[tokio::test]
    async fn a_partly_refused_array_answers_each_item_from_the_failures_list() {
        let (url, record) = pool_bn(standard, Duration::from_millis(30), open()).await;
        let mut registry = Registry::default();
        let lane = lane(&url, &mut registry);
        let outcomes = submit_all(&lane, 1..=1_000, soon(60)).await;
        for (v, o) in &outcomes {
            match o {
                ItemOutcome::Refused(why) if v % 7 == 0 => {
                    assert!(why.contains(&format!("invalid signature of {v}")), "{why}");
                    assert!(why.contains("HTTP 400"), "{why}");
                }
                ItemOutcome::Known if v % 7 != 0 && v % 11 == 0 => {}
                ItemOutcome::Accepted if v % 7 != 0 && v % 11 != 0 => {}
                other => panic!("{v}: {other:?}"),
            }
        }
        let r = record.lock().unwrap();
        // Arrays were refused in part, and no item was sent twice.
        assert!(r
            .requests
            .iter()
            .any(|(_, i)| i.len() > 1 && i.iter().any(|v| v % 7 == 0)));
        let sent: Vec<u64> = r
            .requests
            .iter()
            .flat_map(|(_, i)| i.iter().copied())
            .collect();
        assert_eq!(sent.len(), 1_000);
        assert!(!metrics_text(&registry).contains("broadcast_pool_resubmitted_total{"));
    }

    /// Lodestar 1.5.1's pool: multiples of 37 fail gossip validation (500, every time), items it
    /// took before are "already known"; one failure answers its message, several
    /// `Multiple errors on …` without positions.
    fn lodestar(items: &[u64], r: &mut Record) -> (u16, String) {
        let mut errors = Vec::new();
        for v in items {
            if v % 37 == 0 {
                errors.push("ATTESTATION_ERROR_INVALID_SIGNATURE".to_string());
            } else if !r.taken.insert(*v) {
                errors.push("ATTESTATION_ERROR_ATTESTATION_ALREADY_KNOWN".to_string());
            }
        }
        let message = match errors.len() {
            0 => return (200, String::new()),
            1 => errors.remove(0),
            _ => format!(
                "Multiple errors on submitPoolAttestations\n{}",
                errors.join("\n")
            ),
        };
        (
            500,
            serde_json::json!({"statusCode": 500, "error": "Internal Server Error", "message": message}).to_string(),
        )
    }

    #[tokio::test]
    async fn lodestar_answers_without_positions_make_each_item_go_again_alone() {
        let (url, record) = pool_bn(lodestar, Duration::from_millis(5), open()).await;
        let mut registry = Registry::default();
        let lane = lane(&url, &mut registry);
        // Some items the node has already (another node of the cluster was first).
        record.lock().unwrap().taken.extend([2, 3, 5]);
        let outcomes = submit_all(&lane, 1..=200, soon(8)).await;
        for (v, o) in &outcomes {
            match o {
                // Refused with a 500 every time: tried again until the deadline.
                ItemOutcome::Failed(why) if v % 37 == 0 => {
                    assert!(
                        why.contains("ATTESTATION_ERROR_INVALID_SIGNATURE"),
                        "{v}: {why}"
                    );
                    assert!(why.contains("deadline"), "{why}");
                }
                ItemOutcome::Accepted | ItemOutcome::Known if v % 37 != 0 => {}
                other => panic!("{v}: {other:?}"),
            }
        }
        let r = record.lock().unwrap();
        assert_eq!(r.taken.len(), 200 - 200 / 37);
        // Each item of an array refused without positions went again alone; good items at
        // most twice (once in the array, once alone), and never again once answered alone.
        let mut alone: HashSet<u64> = HashSet::new();
        let mut times = std::collections::HashMap::<u64, usize>::new();
        for (_, items) in &r.requests {
            for v in items {
                *times.entry(*v).or_default() += 1;
            }
            if let [v] = items.as_slice() {
                alone.insert(*v);
            }
        }
        let split_arrays: Vec<&Vec<u64>> = r
            .requests
            .iter()
            .map(|(_, i)| i)
            .filter(|i| i.len() > 1 && i.iter().any(|v| v % 37 == 0))
            .collect();
        assert!(!split_arrays.is_empty(), "some array held a refused item");
        for a in &split_arrays {
            assert!(
                a.iter().all(|v| alone.contains(v)),
                "{a:?} not resubmitted alone"
            );
        }
        for (v, n) in &times {
            if v % 37 != 0 {
                assert!(*n <= 2, "{v} sent {n} times");
            }
        }
        let text = metrics_text(&registry);
        assert!(
            text.contains("broadcast_pool_resubmitted_total{kind=\"attestation\"}"),
            "{text}"
        );
        assert_eq!(lane.load(), (0, 0));
    }

    #[tokio::test]
    async fn an_array_of_known_items_is_not_resubmitted() {
        let (url, record) = pool_bn(lodestar, Duration::from_millis(30), open()).await;
        let mut registry = Registry::default();
        let lane = lane(&url, &mut registry);
        // Every item known already but a few: the node answers "Multiple errors" of
        // "already known" only.
        record
            .lock()
            .unwrap()
            .taken
            .extend((1..=300).filter(|v| v % 5 != 0));
        let outcomes = submit_all(&lane, (1..=300).filter(|v| v % 37 != 0), soon(60)).await;
        assert!(outcomes.iter().all(|(_, o)| o.is_ok()), "{outcomes:?}");
        let r = record.lock().unwrap();
        let sent: usize = r.requests.iter().map(|(_, i)| i.len()).sum();
        assert_eq!(sent, outcomes.len(), "nothing sent twice");
        assert!(r.requests.iter().any(|(_, i)| i.len() > 1));
    }

    #[tokio::test]
    async fn a_full_lane_refuses_at_once_and_says_so() {
        let gate = open();
        let closed = gate.clone().write_owned().await;
        let (url, record) = pool_bn(accept_all, Duration::ZERO, gate).await;
        let mut registry = Registry::default();
        let lane = lane(&url, &mut registry);
        let waiting: Vec<_> = (0..MAX_HELD as u64)
            .map(|i| {
                let lane = lane.clone();
                tokio::spawn(async move { lane.submit(i, soon(60)).await })
            })
            .collect();
        let t = Instant::now();
        while lane.load().1 < MAX_HELD {
            assert!(t.elapsed() < Duration::from_secs(20), "{:?}", lane.load());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(lane.load().0, MAX_IN_FLIGHT);
        match lane.submit(u64::MAX, soon(60)).await {
            ItemOutcome::Failed(why) => {
                assert!(why.contains(&MAX_HELD.to_string()), "{why}");
                assert!(why.contains("/eth/v1/beacon/pool/attestations"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let text = metrics_text(&registry);
        assert!(
            text.contains("broadcast_pool_queue_full_total{kind=\"attestation\"} 1"),
            "{text}"
        );
        drop(closed);
        for w in waiting {
            assert_eq!(w.await.unwrap(), ItemOutcome::Accepted);
        }
        assert_eq!(record.lock().unwrap().taken.len(), MAX_HELD);
        assert_eq!(lane.load(), (0, 0));
    }

    #[tokio::test]
    async fn arrays_fail_over_to_the_fallback_beacon_node() {
        fn unavailable(_: &[u64], _: &mut Record) -> (u16, String) {
            (
                503,
                r#"{"statusCode":503,"message":"Node is syncing"}"#.into(),
            )
        }
        let (down, down_record) = pool_bn(unavailable, Duration::ZERO, open()).await;
        let (up, up_record) = pool_bn(accept_all, Duration::from_millis(20), open()).await;
        let mut registry = Registry::default();
        let client = BeaconClient::new(&format!("{down},{up}")).unwrap();
        let lane: Arc<PoolLane<u64>> = PoolLane::new(
            PoolKind::SyncMessages,
            client.clone(),
            PoolMetrics::registered(&mut registry),
        );
        let outcomes = submit_all(&lane, 0..1_000, soon(60)).await;
        assert!(outcomes.iter().all(|(_, o)| *o == ItemOutcome::Accepted));
        assert_eq!(up_record.lock().unwrap().taken.len(), 1_000);
        assert!(up_record
            .lock()
            .unwrap()
            .requests
            .iter()
            .any(|(_, i)| i.len() > 1));
        // The primary failed the first request and is skipped for submissions meanwhile.
        assert!(!down_record.lock().unwrap().requests.is_empty());
        assert!(client
            .endpoints()
            .backing_off(0, super::super::RequestClass::Submit));

        // Every node down: the items are tried again (as arrays) until their deadline, and
        // each is told why.
        let (dead, _) = pool_bn(unavailable, Duration::ZERO, open()).await;
        let lane: Arc<PoolLane<u64>> = PoolLane::new(
            PoolKind::SyncMessages,
            BeaconClient::new(&dead).unwrap(),
            PoolMetrics::default(),
        );
        let t = Instant::now();
        let outcomes =
            submit_all(&lane, 0..20, Instant::now() + Duration::from_millis(1_200)).await;
        assert!(
            t.elapsed() >= Duration::from_millis(700),
            "{:?}",
            t.elapsed()
        );
        for (_, o) in outcomes {
            assert!(
                matches!(&o, ItemOutcome::Failed(why) if why.contains("503") && why.contains("pool/sync_committees")),
                "{o:?}"
            );
        }
    }
}
