//! Several beacon nodes for one dvnode: failover (and back) per request class, with health
//! tracking.
//!
//! `dvnode run --beacon-node-url A,B` makes A the primary and B its fallback, for the node's
//! own requests ([`super::BeaconClient`]) and for the validator client's requests it proxies
//! (`validator_api`), which share one [`Endpoints`] and so one view of which node is healthy.
//!
//! A request goes to the endpoints in their configured order, skipping those that failed
//! recently for its [`RequestClass`]; a transport error, a timeout or an HTTP 5xx answer marks
//! the endpoint failed for that class and the same request goes on to the next one (4xx answers
//! are the request's fault and would be the same anywhere). A failed endpoint is skipped for a
//! backoff (1 s, doubling per consecutive failure up to 30 s); after it the next request of the
//! class tries it first again, and a success restores it — so the node fails back to its
//! primary once it recovers. That retry is a probe: while an endpoint's last request of the
//! class failed, an attempt on it that has another endpoint behind it is cut after
//! [`PROBE_TIMEOUT`], so a node that is still down (a stopped host takes the whole 3 s connect
//! timeout to refuse) costs a request that much at most, once per backoff. Endpoints still
//! backing off are tried last rather than never, so with every node failing a request still
//! gets every chance.
//!
//! Classes fail over independently because beacon nodes fail partly: one that lags can still
//! serve duties but not fresh attestation data, one restarting may accept submissions before
//! its event stream works.
//!
//! # Metrics
//! `beacon_node_requests_total{bn, class, result}` (`ok`, `error`) and
//! `beacon_node_failovers_total{class}` (requests answered by another endpoint than the first
//! one tried).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use reqwest::{Method, Url};
use tokio::time::Instant;

/// First backoff of a failed endpoint.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest attempt on an endpoint whose last request of the class failed, when another
/// endpoint could answer instead (a healthy beacon node answers in tens of milliseconds).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(750);

/// What a request is for; endpoints fail over per class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestClass {
    /// Duties, validators, headers, blocks, spec: anything read that is not time-critical.
    Read,
    /// Unsigned data to sign now: attestation data, blocks to propose, aggregates.
    Data,
    /// Signed objects submitted to the pools and blocks published.
    Submit,
    /// The server-sent event stream.
    Events,
}

impl RequestClass {
    /// The class of `method path` (path without the base URL's prefix).
    pub fn of(method: &Method, path: &str) -> RequestClass {
        let path = path.split('?').next().unwrap_or(path);
        if path.ends_with("/eth/v1/events") {
            RequestClass::Events
        } else if *method == Method::POST
            && (path.contains("/beacon/pool/")
                || path.ends_with("/beacon/blocks")
                || path.ends_with("/validator/aggregate_and_proofs")
                || path.ends_with("/validator/contribution_and_proofs"))
        {
            RequestClass::Submit
        } else if *method == Method::GET
            && (path.ends_with("/validator/attestation_data")
                || path.contains("/validator/blocks/")
                || path.ends_with("/validator/aggregate_attestation")
                || path.ends_with("/validator/sync_committee_contribution"))
        {
            RequestClass::Data
        } else {
            RequestClass::Read
        }
    }

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestClass::Read => "read",
            RequestClass::Data => "data",
            RequestClass::Submit => "submit",
            RequestClass::Events => "events",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Health of one endpoint for one class.
#[derive(Clone, Copy, Debug, Default)]
struct Health {
    /// Consecutive failures.
    failures: u32,
    /// Skipped until then.
    retry_at: Option<Instant>,
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    bn: String,
    class: String,
    result: String,
}

/// Labels of the failover counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

#[derive(Debug, Default)]
struct Metrics {
    requests: Family<RequestLabels, Counter>,
    failovers: Family<ClassLabel, Counter>,
}

#[derive(Debug)]
struct Inner {
    urls: Vec<Url>,
    /// First backoff ([`BACKOFF_MIN`]; shorter in tests).
    backoff_min: Duration,
    /// [`PROBE_TIMEOUT`] (shorter in tests).
    probe_timeout: Duration,
    health: Mutex<Vec<[Health; 4]>>,
    metrics: OnceLock<Metrics>,
}

/// The beacon nodes of a dvnode in preference order, with their health (cheap to clone; clones
/// share it). See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Endpoints {
    inner: Arc<Inner>,
}

impl Endpoints {
    /// Endpoints for `urls` (primary first; at least one). Each base URL's path gets a trailing
    /// `/` so that API paths join beneath it.
    pub fn new(urls: Vec<Url>) -> Result<Endpoints, String> {
        if urls.is_empty() {
            return Err("no beacon node URL".into());
        }
        let urls = urls
            .into_iter()
            .map(|mut u| {
                if !u.path().ends_with('/') {
                    let path = format!("{}/", u.path());
                    u.set_path(&path);
                }
                u
            })
            .collect::<Vec<_>>();
        let health = vec![[Health::default(); 4]; urls.len()];
        Ok(Endpoints {
            inner: Arc::new(Inner {
                urls,
                backoff_min: BACKOFF_MIN,
                probe_timeout: PROBE_TIMEOUT,
                health: Mutex::new(health),
                metrics: OnceLock::new(),
            }),
        })
    }

    /// Parses a comma-separated list of `http(s)://` URLs (the `--beacon-node-url` flag); an
    /// error names the entry and why it is invalid.
    pub fn parse(list: &str) -> Result<Endpoints, String> {
        let mut urls = Vec::new();
        for (i, raw) in list.split(',').map(str::trim).enumerate() {
            if raw.is_empty() {
                return Err(format!("beacon node URL #{} of {list:?} is empty", i + 1));
            }
            let url = Url::parse(raw).map_err(|e| format!("beacon node URL {raw:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                return Err(format!(
                    "beacon node URL {raw:?}: expected an http:// or https:// URL"
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(format!(
                    "beacon node URL {raw:?} must not have a query or fragment"
                ));
            }
            urls.push(url);
        }
        Endpoints::new(urls)
    }

    /// The same endpoints with a first backoff of `min` instead of 1 s (tests).
    #[cfg(test)]
    pub(crate) fn with_backoff(self, min: Duration) -> Endpoints {
        let inner = Arc::try_unwrap(self.inner).expect("not shared yet");
        Endpoints {
            inner: Arc::new(Inner {
                backoff_min: min,
                ..inner
            }),
        }
    }

    /// The same endpoints with a probe timeout of `t` instead of [`PROBE_TIMEOUT`] (tests).
    #[cfg(test)]
    pub(crate) fn with_probe_timeout(self, t: Duration) -> Endpoints {
        let inner = Arc::try_unwrap(self.inner).expect("not shared yet");
        Endpoints {
            inner: Arc::new(Inner {
                probe_timeout: t,
                ..inner
            }),
        }
    }

    /// Registers the metrics in `registry` (once; later calls do nothing).
    pub fn register_metrics(&self, registry: &mut Registry) {
        let m = Metrics::default();
        registry.register(
            "beacon_node_requests",
            "Requests to each beacon node, by request class and result",
            m.requests.clone(),
        );
        registry.register(
            "beacon_node_failovers",
            "Requests answered by another beacon node than the first one tried, by class",
            m.failovers.clone(),
        );
        let _ = self.inner.metrics.set(m);
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.inner.urls.len()
    }

    /// Whether there is no endpoint (never: [`Endpoints::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.inner.urls.is_empty()
    }

    /// Base URL of endpoint `i`.
    pub fn url(&self, i: usize) -> &Url {
        &self.inner.urls[i]
    }

    /// The base URLs, comma-separated (for messages).
    pub fn describe(&self) -> String {
        self.inner
            .urls
            .iter()
            .map(|u| u.as_str().trim_end_matches('/'))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The order in which to try the endpoints for a request of `class` now: those not backing
    /// off in configured order, then those backing off, soonest retry first.
    pub fn order(&self, class: RequestClass) -> Vec<usize> {
        let now = Instant::now();
        let health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
        let (mut ready, mut waiting): (Vec<usize>, Vec<usize>) = (0..self.len())
            .partition(|&i| health[i][class.index()].retry_at.is_none_or(|t| t <= now));
        waiting.sort_by_key(|&i| health[i][class.index()].retry_at);
        ready.append(&mut waiting);
        ready
    }

    /// Endpoint `i` answered a request of `class`; `first` is whether it was the first one tried.
    pub fn succeeded(&self, i: usize, class: RequestClass, first: bool) {
        {
            let mut health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
            health[i][class.index()] = Health::default();
        }
        if let Some(m) = self.inner.metrics.get() {
            m.requests.get_or_create(&self.labels(i, class, "ok")).inc();
            if !first {
                m.failovers
                    .get_or_create(&ClassLabel {
                        class: class.as_str().into(),
                    })
                    .inc();
            }
        }
    }

    /// Endpoint `i` failed a request of `class` (transport error, timeout or 5xx).
    pub fn failed(&self, i: usize, class: RequestClass) {
        let backoff = {
            let mut health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
            let h = &mut health[i][class.index()];
            h.failures = h.failures.saturating_add(1);
            let backoff = self
                .inner
                .backoff_min
                .saturating_mul(1u32 << (h.failures - 1).min(5))
                .min(BACKOFF_MAX);
            h.retry_at = Some(Instant::now() + backoff);
            backoff
        };
        if let Some(m) = self.inner.metrics.get() {
            m.requests
                .get_or_create(&self.labels(i, class, "error"))
                .inc();
        }
        if self.len() > 1 {
            tracing::debug!(bn = %self.url(i), class = class.as_str(), ?backoff, "beacon node failed a request; trying the others first meanwhile");
        }
    }

    /// How long an attempt on endpoint `i` (the `n`-th in [`Endpoints::order`]) may take
    /// before the next endpoint is asked: [`PROBE_TIMEOUT`] while its last request of `class`
    /// failed and another endpoint follows it, else unbounded (the request's own timeout).
    pub fn attempt_timeout(&self, i: usize, class: RequestClass, n: usize) -> Option<Duration> {
        if n + 1 >= self.len() {
            return None;
        }
        let health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
        (health[i][class.index()].failures > 0).then_some(self.inner.probe_timeout)
    }

    /// How often a stream held on a fallback asks the endpoints before it whether they are
    /// healthy again (twice the first backoff), and how long each ask may take.
    pub fn fail_back_probe(&self) -> (Duration, Duration) {
        (self.inner.backoff_min * 2, self.inner.probe_timeout)
    }

    /// Whether endpoint `i` is currently skipped for `class`.
    pub fn backing_off(&self, i: usize, class: RequestClass) -> bool {
        let health = self.inner.health.lock().unwrap_or_else(|e| e.into_inner());
        health[i][class.index()]
            .retry_at
            .is_some_and(|t| t > Instant::now())
    }

    fn labels(&self, i: usize, class: RequestClass, result: &str) -> RequestLabels {
        RequestLabels {
            bn: self.url(i).as_str().trim_end_matches('/').to_owned(),
            class: class.as_str().into(),
            result: result.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_the_api_paths() {
        let c = |m: Method, p: &str| RequestClass::of(&m, p);
        assert_eq!(
            c(
                Method::GET,
                "/eth/v1/validator/attestation_data?slot=1&committee_index=0"
            ),
            RequestClass::Data
        );
        assert_eq!(
            c(Method::GET, "/eth/v2/validator/blocks/9?randao_reveal=0x00"),
            RequestClass::Data
        );
        assert_eq!(
            c(Method::POST, "/eth/v1/beacon/pool/attestations"),
            RequestClass::Submit
        );
        assert_eq!(
            c(Method::POST, "/eth/v1/beacon/blocks"),
            RequestClass::Submit
        );
        assert_eq!(
            c(Method::POST, "/eth/v1/validator/duties/attester/3"),
            RequestClass::Read
        );
        assert_eq!(
            c(Method::GET, "/eth/v1/events?topics=head"),
            RequestClass::Events
        );
        assert_eq!(c(Method::GET, "/eth/v1/node/version"), RequestClass::Read);
    }

    #[test]
    fn parse_names_the_bad_entry() {
        let e = Endpoints::parse("http://a:1, http://b:2/x").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e.url(1).as_str(), "http://b:2/x/");
        assert_eq!(e.describe(), "http://a:1,http://b:2/x");
        assert!(Endpoints::parse("http://a:1,,http://b")
            .unwrap_err()
            .contains("#2"));
        assert!(Endpoints::parse("http://a:1,ftp://b")
            .unwrap_err()
            .contains("ftp://b"));
        assert!(Endpoints::parse("http://a:1?x=1")
            .unwrap_err()
            .contains("query"));
    }

    #[tokio::test]
    async fn fails_over_per_class_and_back_after_the_backoff() {
        let ms = Duration::from_millis;
        let e = Endpoints::parse("http://a,http://b")
            .unwrap()
            .with_backoff(ms(40));
        assert_eq!(e.order(RequestClass::Data), vec![0, 1]);
        e.failed(0, RequestClass::Data);
        // Data goes to b first now; the other classes still prefer a.
        assert_eq!(e.order(RequestClass::Data), vec![1, 0]);
        assert_eq!(e.order(RequestClass::Read), vec![0, 1]);
        assert!(e.backing_off(0, RequestClass::Data));
        // After the backoff a is tried first again; a second failure doubles it.
        tokio::time::sleep(ms(50)).await;
        assert_eq!(e.order(RequestClass::Data), vec![0, 1]);
        e.failed(0, RequestClass::Data);
        tokio::time::sleep(ms(50)).await;
        assert_eq!(e.order(RequestClass::Data), vec![1, 0], "80 ms backoff");
        tokio::time::sleep(ms(40)).await;
        assert_eq!(e.order(RequestClass::Data), vec![0, 1]);
        // A success restores it at once.
        e.failed(0, RequestClass::Data);
        e.succeeded(0, RequestClass::Data, true);
        assert!(!e.backing_off(0, RequestClass::Data));
        // Everything failing: still every endpoint, soonest retry first.
        e.failed(1, RequestClass::Submit);
        tokio::time::sleep(ms(5)).await;
        e.failed(0, RequestClass::Submit);
        assert_eq!(e.order(RequestClass::Submit), vec![1, 0]);
        // Probes: an endpoint whose last request of the class failed gets a short attempt,
        // unless nothing follows it.
        assert_eq!(e.attempt_timeout(0, RequestClass::Data, 0), None);
        assert_eq!(
            e.attempt_timeout(0, RequestClass::Submit, 0),
            Some(PROBE_TIMEOUT)
        );
        assert_eq!(e.attempt_timeout(0, RequestClass::Submit, 1), None);
        // Backoff is capped at 32 times the first.
        for _ in 0..20 {
            e.failed(0, RequestClass::Read);
        }
        assert!(e.backing_off(0, RequestClass::Read));
        tokio::time::sleep(ms(40 * 32 + 20)).await;
        assert!(!e.backing_off(0, RequestClass::Read));
    }
}
