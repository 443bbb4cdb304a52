//! Prometheus metrics of the validator API.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::http::Method;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// Most distinct proxied endpoint labels: further paths are counted as `other`. The beacon API has
/// fewer endpoints than this; without a bound, every new path a client sends (`/eth/v1/a`,
/// `/eth/v1/b`, ...) would add series to the families below for the life of the process.
pub const MAX_PROXIED_ENDPOINTS: usize = 128;

/// Label set of one request: route, method and answered status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route template (`/eth/v1/validator/duties/attester/{epoch}`), or the proxied path with
    /// numbers and hex values replaced by `{}`.
    pub endpoint: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status code answered.
    pub status: u16,
}

/// Label set naming an endpoint.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// Route template or normalised path.
    pub endpoint: String,
}

/// Label set naming a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `connect`, `timeout`, `request_too_large`, `response_too_large`, `upstream_body`.
    pub reason: String,
}

type HistogramFamily = Family<EndpointLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The validator API metric families. Cheap to clone; clones share the series.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `vapi_requests_total{endpoint,method,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `vapi_request_duration_seconds{endpoint}`: time until the response head was ready.
    pub request_duration: HistogramFamily,
    /// `vapi_proxy_errors_total{reason}`: beacon node round trips that failed.
    pub proxy_errors: Family<ReasonLabel, Counter>,
    /// `vapi_unknown_pubkeys_total`: pubkeys in requests that are not one of this node's shares.
    pub unknown_pubkeys: Counter,
    /// `vapi_unsupported_requests_total{endpoint}`: requests a DV cannot serve (aggregation
    /// duties without DV selections), answered with an error and not forwarded.
    pub unsupported_requests: Family<EndpointLabel, Counter>,
    /// The proxied endpoint labels in use (at most [`MAX_PROXIED_ENDPOINTS`]).
    proxied_endpoints: Arc<Mutex<HashSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            proxy_errors: Family::default(),
            unknown_pubkeys: Counter::default(),
            unsupported_requests: Family::default(),
            proxied_endpoints: Arc::default(),
        }
    }
}

impl Metrics {
    /// Creates the metric families and registers them into `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "vapi_requests",
            "Validator API requests by endpoint, method and answered status",
            m.requests.clone(),
        );
        registry.register(
            "vapi_request_duration_seconds",
            "Validator API time until the response head was ready",
            m.request_duration.clone(),
        );
        registry.register(
            "vapi_proxy_errors",
            "Beacon node round trips of the validator API that failed, by reason",
            m.proxy_errors.clone(),
        );
        registry.register(
            "vapi_unknown_pubkeys",
            "Pubkeys in validator API requests that are not one of this node's key shares",
            m.unknown_pubkeys.clone(),
        );
        registry.register(
            "vapi_unsupported_requests",
            "Requests a distributed validator cannot serve (aggregation without DV selections)",
            m.unsupported_requests.clone(),
        );
        m
    }

    /// Counts one failed beacon node round trip.
    pub(crate) fn proxy_error(&self, reason: &str) {
        self.proxy_errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The endpoint label of a request no route matched: its [`normalise_path`], or `other`
    /// once [`MAX_PROXIED_ENDPOINTS`] distinct labels are in use.
    pub(crate) fn proxied_endpoint(&self, path: &str) -> String {
        let label = normalise_path(path);
        let mut seen = self
            .proxied_endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.contains(&label) {
            return label;
        }
        if seen.len() >= MAX_PROXIED_ENDPOINTS {
            return "other".to_owned();
        }
        seen.insert(label.clone());
        label
    }
}

/// Normalises a proxied path for a metric label: segments that are numbers or `0x` hex become
/// `{}`, so slots, roots and indices do not create new series.
pub(crate) fn normalise_path(path: &str) -> String {
    if !path.starts_with("/eth/") {
        return "other".to_owned();
    }
    path.split('/')
        .map(|seg| {
            if (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit())) || seg.starts_with("0x")
            {
                "{}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The method label: the method's name if HTTP defines it, else `other` (extension methods are
/// any token a client chooses).
pub(crate) fn method_label(method: &Method) -> String {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::CONNECT,
        Method::TRACE,
    ];
    if KNOWN.contains(method) {
        method.as_str().to_owned()
    } else {
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised() {
        assert_eq!(
            normalise_path("/eth/v1/beacon/blocks/123/root"),
            "/eth/v1/beacon/blocks/{}/root"
        );
        assert_eq!(
            normalise_path("/eth/v1/beacon/states/0xabc/finality_checkpoints"),
            "/eth/v1/beacon/states/{}/finality_checkpoints"
        );
        assert_eq!(
            normalise_path("/eth/v1/node/version"),
            "/eth/v1/node/version"
        );
        assert_eq!(normalise_path("/favicon.ico"), "other");
    }

    #[test]
    fn labels_of_unrouted_requests_are_bounded() {
        let m = Metrics::default();
        // Paths a client makes up: each would be a new series without the bound.
        let labels: HashSet<String> = (0..10 * MAX_PROXIED_ENDPOINTS)
            .map(|i| m.proxied_endpoint(&format!("/eth/v1/made_up_{i}/x")))
            .collect();
        assert_eq!(labels.len(), MAX_PROXIED_ENDPOINTS + 1);
        assert!(labels.contains("other"));
        // Labels admitted before the bound keep being used; numbers still fold into `{}`.
        assert_eq!(
            m.proxied_endpoint("/eth/v1/made_up_0/x"),
            "/eth/v1/made_up_0/x"
        );
        assert_eq!(m.proxied_endpoint("/eth/v1/made_up_1000/x"), "other");
        let fresh = Metrics::default();
        assert_eq!(
            fresh.proxied_endpoint("/eth/v1/beacon/blocks/123/root"),
            "/eth/v1/beacon/blocks/{}/root"
        );
        // Clones share the set, as they share the series.
        let clone = m.clone();
        assert_eq!(clone.proxied_endpoint("/eth/v1/node/version"), "other");

        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let made_up = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&made_up), "other");
    }
}
