//! The Web3Signer API dvnode serves in remote-signer mode.
//!
//! An unmodified validator client (VC) started with `--externalSigner.url` at dvnode asks it
//! for every signature:
//!
//! - `GET /api/v1/eth2/publicKeys`: the DV public keys (a JSON array of `0x…` strings);
//! - `POST /api/v1/eth2/sign/{pubkey}`: sign the object in the body, answered with
//!   `{"signature": "0x…"}` — the DV's **combined** signature, never a share's;
//! - `GET /upcheck`: `{"status": "OK"}`.
//!
//! Every request is parsed ([`request::parse`]: errors name the field), then checked against
//! this node's chain ([`request::check`]): the genesis validators root and fork version of
//! `fork_info`, and the client's `signingRoot`, which must equal the root recomputed here from
//! the object (the client's root is never signed). Only then does the [`Signer`] see it; the
//! distributed-validator signer signs only what consensus decided and combines partial
//! signatures with the other nodes.
//!
//! Answers: 400 for malformed bodies, unknown or unsupported types and requests for another
//! chain or fork (the message names the field), 404 for a key this node does not serve, 412 for
//! an object the cluster did not decide, 503 when no combined signature was ready in time.
//!
//! # Metrics
//! `remote_sign_requests_total{type,outcome}` (`outcome` is `ok` or the refusal reason) and
//! `remote_sign_duration_seconds{type}`: from the request to the combined signature.

pub mod request;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::eth::signing::ForkSchedule;
use crate::eth::types::Preset;
use crate::eth::types::{BlsPubkey, BlsSignature, Root};
pub use request::{check, parse, SignError, SignObject, SignRequest, SignType};

/// Largest signing request body accepted (an Altair block with full operation lists fits).
pub const MAX_BODY: usize = 4 << 20;

/// Signs checked requests (the distributed validator; a whole key in tests).
#[async_trait]
pub trait Signer<P: Preset>: Send + Sync + 'static {
    /// The public keys served, in a stable order.
    fn pubkeys(&self) -> Vec<BlsPubkey>;

    /// Whether `pubkey` is served.
    fn serves(&self, pubkey: &BlsPubkey) -> bool {
        self.pubkeys().contains(pubkey)
    }

    /// Signs `req` for `pubkey`. `signing_root` was recomputed from the object and matched the
    /// client's; `pubkey` is one of [`Signer::pubkeys`].
    async fn sign(
        &self,
        pubkey: BlsPubkey,
        req: SignRequest<P>,
        signing_root: Root,
    ) -> Result<BlsSignature, SignError>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeOutcome {
    r#type: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

/// The remote-signer metric families. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<TypeOutcome, Counter>,
    duration: Family<TypeLabel, Histogram, fn() -> Histogram>,
}

fn sign_histogram() -> Histogram {
    // 1 ms .. ~65 s: a request may wait for consensus and the peers' partial signatures.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(sign_histogram),
        }
    }
}

impl Metrics {
    /// Creates the families and registers them into `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "remote_sign_requests",
            "Web3Signer signing requests by type and outcome (ok or the refusal reason)",
            m.requests.clone(),
        );
        registry.register(
            "remote_sign_duration_seconds",
            "Time from a signing request to its answer (the combined signature), by type",
            m.duration.clone(),
        );
        m
    }

    fn count(&self, sign_type: &str, outcome: &str) {
        self.requests
            .get_or_create(&TypeOutcome {
                r#type: sign_type.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

struct Inner<P: Preset> {
    schedule: Arc<ForkSchedule>,
    signer: Arc<dyn Signer<P>>,
    metrics: Metrics,
}

/// The Web3Signer routes. See the [module docs](self).
pub struct Web3Signer<P: Preset> {
    inner: Arc<Inner<P>>,
}

impl<P: Preset> Web3Signer<P> {
    /// The API over `signer` for the chain of `schedule`.
    pub fn new(schedule: Arc<ForkSchedule>, signer: Arc<dyn Signer<P>>, metrics: Metrics) -> Self {
        Web3Signer {
            inner: Arc::new(Inner {
                schedule,
                signer,
                metrics,
            }),
        }
    }

    /// The routes, to be merged into the validator API's router.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        Router::new()
            .route("/api/v1/eth2/publicKeys", get(public_keys::<P>))
            .route("/api/v1/eth2/sign/{identifier}", post(sign::<P>))
            .route("/upcheck", get(upcheck))
            .with_state(self.inner.clone())
    }
}

fn error_response(e: &SignError) -> Response {
    (
        e.status,
        Json(json!({"code": e.status.as_u16(), "message": e.message})),
    )
        .into_response()
}

async fn upcheck() -> Response {
    Json(json!({"status": "OK"})).into_response()
}

async fn public_keys<P: Preset>(State(s): State<Arc<Inner<P>>>) -> Response {
    let keys: Vec<String> = s.signer.pubkeys().iter().map(|k| k.to_string()).collect();
    Json(keys).into_response()
}

/// Whether the client asked for a plain-text signature (`Accept: text/plain` without JSON).
fn wants_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/plain") && !a.contains("json"))
}

async fn sign<P: Preset>(
    State(s): State<Arc<Inner<P>>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let start = Instant::now();
    let result = async {
        let pubkey: BlsPubkey = identifier.parse().map_err(|e| {
            SignError::malformed(
                "path parameter `identifier`",
                format!("expected a 0x-prefixed 48-byte BLS public key: {e}"),
            )
        })?;
        if !s.signer.serves(&pubkey) {
            return Err((
                None,
                SignError::unknown_key(format!("no key for {pubkey} on this node")),
            ));
        }
        let bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|_| SignError::malformed("body", format!("larger than {MAX_BODY} bytes")))?;
        let req = parse::<P>(&bytes)?;
        let sign_type = req.object.sign_type();
        let root = check(&req, &s.schedule).map_err(|e| (Some(sign_type), e))?;
        s.signer
            .sign(pubkey, req, root)
            .await
            .map(|sig| (sign_type, sig))
            .map_err(|e| (Some(sign_type), e))
    }
    .await;
    match result {
        Ok((sign_type, sig)) => {
            let label = sign_type.label();
            s.metrics.count(&label, "ok");
            s.metrics
                .duration
                .get_or_create(&TypeLabel { r#type: label })
                .observe(start.elapsed().as_secs_f64());
            if wants_text(&headers) {
                (StatusCode::OK, sig.to_string()).into_response()
            } else {
                Json(json!({"signature": sig.to_string()})).into_response()
            }
        }
        Err((sign_type, e)) => {
            let label = sign_type.map_or_else(|| "unknown".to_owned(), SignType::label);
            s.metrics.count(&label, e.reason);
            if e.status.is_server_error() || e.status == StatusCode::PRECONDITION_FAILED {
                tracing::warn!(r#type = %label, status = e.status.as_u16(), error = %e, "signing request refused");
            } else {
                tracing::debug!(r#type = %label, status = e.status.as_u16(), error = %e, "signing request refused");
            }
            error_response(&e)
        }
    }
}

#[cfg(test)]
mod tests;

impl From<SignError> for (Option<SignType>, SignError) {
    fn from(e: SignError) -> Self {
        (None, e)
    }
}
