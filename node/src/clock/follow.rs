//! The node's clock against its beacon node's: offset estimation, a metric, and a slot clock
//! that follows the beacon node when the local clock is off by more than a bound.
//!
//! A DV node does everything by the slot clock: when a duty starts, when its round timers end,
//! when it gives up. A node whose clock is 2 s ahead fetches attestation data before the slot's
//! block exists; when it leads consensus the cluster signs a vote for the parent block that no
//! aggregator picks up (measured: 7 of 24 attestations lost, docs/PERFORMANCE.md). The beacon
//! node it fetches from is the reference that matters: its fork choice decides what the data
//! says.
//!
//! # Estimation
//! Every HTTP answer of the beacon node carries a `Date` header (RFC 9110, one-second
//! resolution). An answer stamped `D` that was requested at local time `s` and received at local
//! time `r` bounds the offset (local − beacon node) to `(s − D·1000 − 1000, r − D·1000]` ms: the
//! beacon node stamped it at some local time in `[s, r]`, at its own time in `[D, D + 1 s)`. The
//! [`OffsetEstimator`] intersects these bounds over the newest samples that agree (an older sample
//! that contradicts newer ones means the clock was changed since, and it is forgotten), and
//! schedules each probe so that the beacon node's next second boundary falls in the middle of
//! the current interval ([`OffsetEstimator::next_probe_ms`]): every answer halves the interval
//! until it is as narrow as the round trip, so a few probes pin the offset to milliseconds
//! despite the header's one-second resolution. A jump of the local clock shows in the first
//! probe after it.
//!
//! # Following
//! [`Follower`] sets the node's clock correction ([`super::correction`], which [`super::unix_now`]
//! and everything reading the time subtract from the system clock) while the node follows the
//! beacon node. It starts following when the whole interval lies beyond `bound` (the offset is
//! certainly larger) and corrects by the offset in the interval nearest to zero (never more than
//! the evidence demands); it stops when the estimate is back within `bound / 2`.
//!
//! # Metrics
//! `clock_offset_seconds` (estimate, local − beacon node), `clock_offset_uncertainty_seconds`
//! (half the interval's width), `clock_follows_beacon_node` (1 while the slot clock follows the
//! beacon node), `clock_offset_probes_total{result}` (`ok`, `error`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::Clock;
use crate::eth::beacon::BeaconClient;

/// One answer of the beacon node: local send and receive times (Unix ms) and its `Date` (Unix s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Local time the request was sent.
    pub sent_ms: i64,
    /// Local time the answer arrived.
    pub received_ms: i64,
    /// The answer's `Date` header.
    pub date_s: i64,
}

impl Sample {
    /// The offset interval (local − beacon node, ms, both ends inclusive) this sample allows.
    pub fn bounds(&self) -> (i64, i64) {
        let stamp = self.date_s.saturating_mul(1000);
        (
            self.sent_ms.saturating_sub(stamp).saturating_sub(999),
            self.received_ms.saturating_sub(stamp),
        )
    }
}

/// The current estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Lowest offset the samples allow (ms).
    pub lo_ms: i64,
    /// Highest offset the samples allow (ms).
    pub hi_ms: i64,
    /// Samples that agree on it.
    pub samples: usize,
}

impl Estimate {
    /// Midpoint of the interval: local − beacon node, ms.
    pub fn offset_ms(&self) -> i64 {
        self.lo_ms + (self.hi_ms - self.lo_ms) / 2
    }

    /// Half the interval's width, ms.
    pub fn uncertainty_ms(&self) -> i64 {
        (self.hi_ms - self.lo_ms + 1) / 2
    }
}

/// Probes whose round trips are remembered.
const RTT_WINDOW: usize = 8;

/// Intersects the offset bounds of the newest agreeing samples (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct OffsetEstimator {
    samples: VecDeque<Sample>,
    max_samples: usize,
    max_age_ms: i64,
    /// Round trips of the last probes.
    rtts: VecDeque<i64>,
}

impl Default for OffsetEstimator {
    fn default() -> Self {
        Self::new(64, Duration::from_secs(600))
    }
}

impl OffsetEstimator {
    /// An estimator keeping at most `max_samples` samples no older than `max_age`.
    pub fn new(max_samples: usize, max_age: Duration) -> Self {
        Self {
            samples: VecDeque::new(),
            max_samples: max_samples.max(1),
            max_age_ms: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
            rtts: VecDeque::new(),
        }
    }

    /// Adds a sample; samples that contradict it (the clock changed since) are forgotten.
    pub fn add(&mut self, sample: Sample) {
        self.rtts
            .push_back((sample.received_ms - sample.sent_ms).max(0));
        if self.rtts.len() > RTT_WINDOW {
            self.rtts.pop_front();
        }
        self.samples.push_back(sample);
        let newest = sample.received_ms;
        self.samples
            .retain(|s| newest.saturating_sub(s.received_ms) <= self.max_age_ms);
        while self.samples.len() > self.max_samples {
            self.samples.pop_front();
        }
        // Keep the newest suffix whose bounds intersect.
        let (mut lo, mut hi) = sample.bounds();
        let mut keep = 0;
        for s in self.samples.iter().rev() {
            let (l, h) = s.bounds();
            let (nl, nh) = (lo.max(l), hi.min(h));
            if nl > nh {
                break;
            }
            (lo, hi) = (nl, nh);
            keep += 1;
        }
        let drop = self.samples.len() - keep;
        self.samples.drain(..drop);
    }

    /// The interval allowed by every kept sample, if any.
    pub fn estimate(&self) -> Option<Estimate> {
        let mut it = self.samples.iter();
        let (mut lo, mut hi) = it.next()?.bounds();
        for s in it {
            let (l, h) = s.bounds();
            lo = lo.max(l);
            hi = hi.min(h);
        }
        Some(Estimate {
            lo_ms: lo,
            hi_ms: hi,
            samples: self.samples.len(),
        })
    }

    /// Shortest round trip of the last probes (ms): a late answer says nothing about when
    /// the next one is stamped.
    pub fn rtt_ms(&self) -> i64 {
        self.rtts.iter().copied().min().unwrap_or(0)
    }

    /// Local time (Unix ms) to send the next probe, not before `earliest_ms`: such that the
    /// beacon node answers when, by the current estimate's midpoint, its clock turns a second.
    /// The answer then tells on which side of the midpoint the offset lies.
    pub fn next_probe_ms(&self, earliest_ms: i64) -> i64 {
        let Some(e) = self.estimate() else {
            return earliest_ms;
        };
        // The beacon node's second k begins at local time k·1000 + offset.
        let lead = e.offset_ms() - self.rtt_ms() / 2;
        let k = (earliest_ms - lead).div_euclid(1000) + 1;
        k * 1000 + lead
    }
}

/// Decides whether and by how much the clock follows the beacon node, and applies it to a
/// correction cell (see the [module docs](self)); as a [`Clock`] it reads the uncorrected
/// clock minus that correction. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Follower {
    inner: Arc<FollowState>,
}

struct FollowState {
    /// The uncorrected clock the probes measure.
    system: Arc<dyn Clock>,
    bound_ms: i64,
    /// Offset subtracted from the system clock (0 while not following).
    applied_ms: &'static AtomicI64,
    following: AtomicBool,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("bound_ms", &self.inner.bound_ms)
            .field("applied_ms", &self.applied_ms())
            .finish()
    }
}

/// What [`Follower::update`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowChange {
    /// Nothing.
    None,
    /// Started following the beacon node.
    Started,
    /// Stopped following it.
    Stopped,
}

impl Follower {
    /// A follower measuring the uncorrected clock `system` and writing its correction to
    /// `correction` (the node's is [`super::correction`]) once the beacon node is off by more
    /// than `bound` (`Duration::ZERO`: never follow, only measure).
    pub fn new(system: Arc<dyn Clock>, bound: Duration, correction: &'static AtomicI64) -> Self {
        correction.store(0, Ordering::Relaxed);
        Self {
            inner: Arc::new(FollowState {
                system,
                bound_ms: i64::try_from(bound.as_millis()).unwrap_or(i64::MAX),
                applied_ms: correction,
                following: AtomicBool::new(false),
            }),
        }
    }

    /// Offset currently subtracted from the system clock (ms).
    pub fn applied_ms(&self) -> i64 {
        self.inner.applied_ms.load(Ordering::Relaxed)
    }

    /// Whether the clock follows the beacon node.
    pub fn following(&self) -> bool {
        self.inner.following.load(Ordering::Relaxed)
    }

    /// Takes a new estimate into account.
    ///
    /// While following, the correction is the offset in the estimate's interval nearest to
    /// zero: the smallest correction the evidence demands, so a fresh, wide estimate (just
    /// after the local clock jumped) never over-corrects, and each further probe brings the
    /// correction closer.
    pub fn update(&self, e: &Estimate) -> FollowChange {
        let s = &self.inner;
        if s.bound_ms == 0 {
            return FollowChange::None;
        }
        let nearest = 0i64.clamp(e.lo_ms, e.hi_ms);
        let following = self.following();
        let back_within =
            e.offset_ms().abs() <= s.bound_ms / 2 && e.uncertainty_ms() <= s.bound_ms / 2;
        if following && back_within {
            s.applied_ms.store(0, Ordering::Relaxed);
            s.following.store(false, Ordering::Relaxed);
            FollowChange::Stopped
        } else if following || nearest.abs() > s.bound_ms {
            s.applied_ms.store(nearest, Ordering::Relaxed);
            s.following.store(true, Ordering::Relaxed);
            if following {
                FollowChange::None
            } else {
                FollowChange::Started
            }
        } else {
            FollowChange::None
        }
    }
}

impl Clock for Follower {
    fn now_ms(&self) -> u64 {
        let now = self.inner.system.now_ms() as i64;
        now.saturating_sub(self.applied_ms()).max(0) as u64
    }
}

/// Label of a probe result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: String,
}

/// The clock metrics (see the [module docs](self)).
#[derive(Clone, Debug, Default)]
pub struct ClockMetrics {
    offset: Gauge<f64, AtomicU64>,
    uncertainty: Gauge<f64, AtomicU64>,
    following: Gauge,
    probes: Family<ResultLabel, Counter>,
}

impl ClockMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "clock_offset_seconds",
            "Local clock minus the beacon node's (estimate from its Date headers)",
            m.offset.clone(),
        );
        registry.register(
            "clock_offset_uncertainty_seconds",
            "Half the width of the interval the clock offset is known to lie in",
            m.uncertainty.clone(),
        );
        registry.register(
            "clock_follows_beacon_node",
            "1 while the slot clock follows the beacon node's clock",
            m.following.clone(),
        );
        registry.register(
            "clock_offset_probes",
            "Clock probes sent to the beacon node, by result",
            m.probes.clone(),
        );
        m
    }

    fn probe(&self, result: &str) {
        self.probes
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// Pause before the next probe while the offset is known to within [`SETTLED`].
const PROBE_GAP: Duration = Duration::from_millis(1000);
/// Pause before the next probe while it is not (after a start or a clock jump).
const FAST_PROBE_GAP: Duration = Duration::from_millis(250);
/// Uncertainty below which the estimate is settled (ms).
const SETTLED: i64 = 20;

/// Probes the beacon node's clock (about once a second), keeps `clock` following it and the
/// metrics up to date, until `shutdown` turns true.
pub async fn run(
    bn: BeaconClient,
    clock: Follower,
    metrics: ClockMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let system = clock.inner.system.clone();
    let now = || system.now_ms() as i64;
    let mut est = OffsetEstimator::default();
    let mut warned = false;
    loop {
        let settled = est
            .estimate()
            .is_some_and(|e| e.uncertainty_ms() <= SETTLED);
        let gap = if settled { PROBE_GAP } else { FAST_PROBE_GAP };
        let at = est.next_probe_ms(now() + gap.as_millis() as i64);
        let wait = Duration::from_millis(at.saturating_sub(now()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let sent_ms = now();
        let date = bn.server_date().await;
        let received_ms = now();
        let date_s = match date {
            Ok(d) => d,
            Err(e) => {
                metrics.probe("error");
                debug!(error = %e, "clock probe of the beacon node failed");
                continue;
            }
        };
        metrics.probe("ok");
        est.add(Sample {
            sent_ms,
            received_ms,
            date_s,
        });
        let Some(e) = est.estimate() else { continue };
        let offset = e.offset_ms() as f64 / 1000.0;
        metrics.offset.set(offset);
        metrics.uncertainty.set(e.uncertainty_ms() as f64 / 1000.0);
        let bound = clock.inner.bound_ms;
        match clock.update(&e) {
            FollowChange::Started => warn!(
                offset_ms = e.offset_ms(),
                uncertainty_ms = e.uncertainty_ms(),
                bound_ms = bound,
                "the local clock is off the beacon node's by more than the bound; the slot clock now follows the beacon node"
            ),
            FollowChange::Stopped => info!(
                offset_ms = e.offset_ms(),
                "the local clock agrees with the beacon node's again; the slot clock follows the local clock"
            ),
            FollowChange::None => {}
        }
        metrics.following.set(i64::from(clock.following()));
        let off = e.lo_ms > 250 || e.hi_ms < -250;
        if off && !warned && bound == 0 {
            warn!(
                offset_ms = e.offset_ms(),
                uncertainty_ms = e.uncertainty_ms(),
                "the local clock is off the beacon node's (not corrected: following is disabled)"
            );
        }
        warned = off;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A beacon node whose clock is `offset` ms behind local time answering after `rtt` ms.
    fn sample(local_send: i64, offset: i64, rtt: i64) -> Sample {
        let stamp_local = local_send + rtt / 2;
        Sample {
            sent_ms: local_send,
            received_ms: local_send + rtt,
            date_s: (stamp_local - offset).div_euclid(1000),
        }
    }

    #[test]
    fn one_sample_bounds_the_offset_to_a_second() {
        let s = sample(10_000_300, 0, 2);
        let (lo, hi) = s.bounds();
        assert!(lo <= 0 && 0 <= hi, "{lo}..{hi}");
        assert!(hi - lo <= 1001);
    }

    #[test]
    fn bisecting_probes_pin_the_offset_to_the_round_trip() {
        for offset in [-2_000, -1_537, -3, 0, 250, 1_499, 2_000, 12_345] {
            let mut est = OffsetEstimator::default();
            let mut now = 1_700_000_000_123;
            for _ in 0..12 {
                let at = est.next_probe_ms(now + 700);
                assert!(at >= now + 700);
                est.add(sample(at, offset, 4));
                now = at + 4;
            }
            let e = est.estimate().unwrap();
            assert!(e.lo_ms <= offset && offset <= e.hi_ms, "{offset}: {e:?}");
            assert!(e.uncertainty_ms() <= 4, "{offset}: {e:?}");
        }
    }

    #[test]
    fn a_clock_jump_shows_in_the_next_probe_and_is_pinned_soon() {
        let mut est = OffsetEstimator::default();
        let mut now = 1_700_000_000_000;
        let probe = |est: &mut OffsetEstimator, offset: i64, now: &mut i64| {
            let at = est.next_probe_ms(*now + 700);
            est.add(sample(at, offset, 2));
            *now = at + 2;
        };
        for _ in 0..10 {
            probe(&mut est, 0, &mut now);
        }
        assert!(est.estimate().unwrap().uncertainty_ms() <= 2);
        // The local clock jumps 2 s ahead.
        now += 2_000;
        probe(&mut est, 2_000, &mut now);
        let e = est.estimate().unwrap();
        assert_eq!(e.samples, 1, "older samples contradict the jump");
        assert!(e.lo_ms >= 1_000 && e.hi_ms >= 2_000, "{e:?}");
        for _ in 0..10 {
            probe(&mut est, 2_000, &mut now);
        }
        let e = est.estimate().unwrap();
        assert!((e.offset_ms() - 2_000).abs() <= 2, "{e:?}");
    }

    #[test]
    fn delayed_answers_widen_nothing() {
        // Answers 5 s late still bound the offset; the interval never widens.
        let mut est = OffsetEstimator::default();
        let mut now = 1_700_000_000_000;
        for i in 0..20 {
            let rtt = if i % 3 == 0 { 5_000 } else { 3 };
            let at = est.next_probe_ms(now + 700);
            est.add(sample(at, 1_200, rtt));
            now = at + rtt;
        }
        let e = est.estimate().unwrap();
        assert!(e.lo_ms <= 1_200 && 1_200 <= e.hi_ms, "{e:?}");
        assert!(e.uncertainty_ms() <= 10, "{e:?}");
    }

    /// A correction cell of a test's own (the node's is global).
    fn cell() -> &'static AtomicI64 {
        Box::leak(Box::new(AtomicI64::new(0)))
    }

    struct Fixed(u64);
    impl Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }

    fn est(lo: i64, hi: i64) -> Estimate {
        Estimate {
            lo_ms: lo,
            hi_ms: hi,
            samples: 1,
        }
    }

    #[test]
    fn follows_beyond_the_bound_and_stops_back_within_half_of_it() {
        let clock = Follower::new(Arc::new(Fixed(10_000)), Duration::from_millis(500), cell());
        // Within the bound, or not certainly beyond it: the local clock.
        assert_eq!(clock.update(&est(-10, 10)), FollowChange::None);
        assert_eq!(clock.update(&est(300, 1_300)), FollowChange::None);
        assert_eq!(clock.now_ms(), 10_000);
        // Certainly more than 1.1 s ahead: follow, correcting by what is certain.
        assert_eq!(clock.update(&est(1_100, 2_100)), FollowChange::Started);
        assert_eq!(clock.now_ms(), 10_000 - 1_100);
        assert_eq!(clock.update(&est(1_998, 2_002)), FollowChange::None);
        assert_eq!(clock.now_ms(), 8_002);
        // 400 ms off: still following (hysteresis).
        assert_eq!(clock.update(&est(398, 402)), FollowChange::None);
        assert_eq!(clock.now_ms(), 9_602);
        // The local clock jumped back: a wide interval around zero corrects nothing, and
        // following stops once the interval is narrow.
        assert_eq!(clock.update(&est(-999, 1)), FollowChange::None);
        assert_eq!(clock.now_ms(), 10_000);
        assert_eq!(clock.update(&est(-2, 2)), FollowChange::Stopped);
        assert_eq!(clock.now_ms(), 10_000);
        // Behind works alike.
        assert_eq!(clock.update(&est(-2_002, -1_998)), FollowChange::Started);
        assert_eq!(clock.now_ms(), 11_998);
        // A zero bound only measures.
        let off = Follower::new(Arc::new(Fixed(10_000)), Duration::ZERO, cell());
        assert_eq!(off.update(&est(1_998, 2_002)), FollowChange::None);
        assert_eq!(off.now_ms(), 10_000);
    }

    /// The system clock shifted by a fixed offset.
    struct Shifted(i64);
    impl Clock for Shifted {
        fn now_ms(&self) -> u64 {
            (crate::clock::UncorrectedClock.now_ms() as i64 + self.0) as u64
        }
    }

    /// Against a beacon node on loopback (hyper stamps every answer with `Date`), a node whose
    /// clock is 2 s ahead follows it within a few probes, to a few milliseconds.
    #[tokio::test]
    async fn follows_a_real_http_servers_clock() {
        let app = axum::Router::new().route(
            "/eth/v1/node/version",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({"data": {"version": "x"}}))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let bn = BeaconClient::new(&url).unwrap();
        assert!(bn.server_date().await.unwrap() > 1_700_000_000);

        let clock = Follower::new(Arc::new(Shifted(2_000)), Duration::from_millis(500), cell());
        let mut registry = Registry::default();
        let metrics = ClockMetrics::new(&mut registry);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(bn, clock.clone(), metrics.clone(), stop_rx));
        let t0 = std::time::Instant::now();
        while !(clock.following() && (clock.applied_ms() - 2_000).abs() <= 20) {
            assert!(
                t0.elapsed() < Duration::from_secs(8),
                "not following after 8 s: applied {} ms",
                clock.applied_ms()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let behind = crate::clock::UncorrectedClock.now_ms() as i64 - clock.now_ms() as i64;
        assert!(behind.abs() <= 25, "corrected clock off by {behind} ms");
        assert_eq!(metrics.following.get(), 1);
        // The latest estimate may be a later probe's than the applied one: within its own
        // uncertainty (round trips grow on a loaded machine).
        let (offset, uncertainty) = (metrics.offset.get(), metrics.uncertainty.get());
        assert!(
            (offset - 2.0).abs() <= 0.02 + uncertainty,
            "offset {offset} s ± {uncertainty} s"
        );
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}
