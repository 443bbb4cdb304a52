//! HTTP client for the beacon node behind the validator API.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method};

use super::error::BackendError;
use crate::eth::beacon::{Endpoints, RequestClass};

/// A beacon node round trip that failed before a response head arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UpstreamError {
    /// Connecting or sending failed.
    Connect(String),
    /// No response head within the timeout.
    Timeout(Duration),
}

impl UpstreamError {
    /// Short metric label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
        }
    }

    /// As a backend error naming the beacon node.
    pub(crate) fn into_backend(self, url: &str) -> BackendError {
        BackendError::BeaconNodeUnreachable {
            url: url.to_owned(),
            reason: match self {
                UpstreamError::Connect(e) => e,
                UpstreamError::Timeout(t) => format!("no response within {t:?}"),
            },
        }
    }
}

/// The beacon node (or nodes, failing over per request class: [`Endpoints`]): HTTP client and
/// the time allowed until a response head.
///
/// Only the wait for the response head is bounded: bodies are streamed without a deadline so
/// that long-lived event streams (`/eth/v1/events`) pass through.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    client: reqwest::Client,
    endpoints: Endpoints,
    timeout: Duration,
}

impl Upstream {
    /// A client for the beacon node at `bn_url` (`http://host:port[/prefix]`), or for a
    /// comma-separated list of them (primary first).
    pub(crate) fn new(bn_url: &str, connect_timeout: Duration, timeout: Duration) -> Result<Self> {
        let endpoints = Endpoints::parse(bn_url).map_err(anyhow::Error::msg)?;
        Self::with_endpoints(endpoints, connect_timeout, timeout)
    }

    /// A client of `endpoints`, sharing their health with their other users.
    pub(crate) fn with_endpoints(
        endpoints: Endpoints,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self> {
        for i in 0..endpoints.len() {
            let url = endpoints.url(i);
            if url.scheme() == "https" {
                bail!(
                    "beacon node URL {url}: https is not supported by this build; use http to a local beacon node"
                );
            }
        }
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .no_proxy()
            .build()
            .context("building the beacon node HTTP client")?;
        Ok(Upstream {
            client,
            endpoints,
            timeout,
        })
    }

    /// The beacon node base URLs, comma-separated (no trailing slashes).
    pub(crate) fn base(&self) -> String {
        self.endpoints.describe()
    }

    /// Sends `method path_and_query` (starting with `/`) with `headers` and `body` to the beacon
    /// nodes in order, waiting at most the timeout for each response head: a node that cannot
    /// be reached, times out or answers 5xx is marked failed and the next one is asked; the
    /// last one's answer or failure is returned.
    pub(crate) async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let class = RequestClass::of(&method, path_and_query);
        let order = self.endpoints.order(class);
        let mut last = None;
        for (n, &i) in order.iter().enumerate() {
            let base = self.endpoints.url(i).as_str().trim_end_matches('/');
            let mut req = self
                .client
                .request(method.clone(), format!("{base}{path_and_query}"))
                .headers(headers.clone());
            if let Some(body) = &body {
                req = req.body(body.clone());
            }
            let more = n + 1 < order.len();
            let timeout = self
                .endpoints
                .attempt_timeout(i, class, n)
                .map_or(self.timeout, |t| t.min(self.timeout));
            match tokio::time::timeout(timeout, req.send()).await {
                Ok(Ok(resp)) if resp.status().is_server_error() && more => {
                    self.endpoints.failed(i, class);
                }
                Ok(Ok(resp)) => {
                    if resp.status().is_server_error() {
                        self.endpoints.failed(i, class);
                    } else {
                        self.endpoints.succeeded(i, class, n == 0);
                    }
                    return Ok(resp);
                }
                Ok(Err(e)) => {
                    self.endpoints.failed(i, class);
                    last = Some(UpstreamError::Connect(error_chain(&e)));
                }
                Err(_) => {
                    self.endpoints.failed(i, class);
                    last = Some(UpstreamError::Timeout(timeout));
                }
            }
        }
        Err(last.unwrap_or(UpstreamError::Connect(
            "every beacon node answered with a server error".into(),
        )))
    }
}

/// `e: cause: cause…` on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus those named by `Connection`.
fn is_hop_by_hop(name: &str, connection_listed: &[String]) -> bool {
    const HOP: &[&str] = &[
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.contains(&name) || connection_listed.iter().any(|c| c == name)
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `headers` without hop-by-hop headers and without the names in `also_drop`.
pub(crate) fn end_to_end_headers(headers: &HeaderMap, also_drop: &[&str]) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        if !is_hop_by_hop(n, &listed) && !also_drop.contains(&n) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("host", HeaderValue::from_static("vc"));
        h.insert("accept", HeaderValue::from_static("application/json"));
        let out = end_to_end_headers(&h, &["host"]);
        assert_eq!(out.len(), 1);
        assert_eq!(out["accept"], "application/json");
    }

    #[test]
    fn bn_urls_are_validated() {
        let t = Duration::from_secs(1);
        assert!(Upstream::new("http://127.0.0.1:5052/", t, t).is_ok());
        assert_eq!(
            Upstream::new("http://127.0.0.1:5052/", t, t)
                .unwrap()
                .base(),
            "http://127.0.0.1:5052"
        );
        assert_eq!(
            Upstream::new("http://127.0.0.1:5052,http://bn2:5052", t, t)
                .unwrap()
                .base(),
            "http://127.0.0.1:5052,http://bn2:5052"
        );
        assert!(Upstream::new("https://bn:5052", t, t).is_err());
        assert!(Upstream::new("bn:5052", t, t).is_err());
        assert!(Upstream::new("http://bn:5052/?x=1", t, t).is_err());
    }
}
