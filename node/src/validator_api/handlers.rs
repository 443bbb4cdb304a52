//! Request handlers: the transparent proxy, the pubkey-mapping endpoints and the intercepted
//! duty endpoints.

use std::{collections::HashMap, future::Future, sync::Arc, time::Instant};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Path, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{
    backend::DutyBackend,
    config::ValidatorApiConfig,
    error::{ApiError, BackendError},
    metrics::{method_label, EndpointLabel, Metrics, RequestLabels},
    upstream::{end_to_end_headers, error_chain, Upstream, UpstreamError},
};

/// Shared state of the request handlers.
pub(super) struct Inner {
    pub(super) config: ValidatorApiConfig,
    pub(super) bn: Upstream,
    pub(super) backend: Arc<dyn DutyBackend>,
    pub(super) metrics: Metrics,
    pub(super) shutdown: watch::Receiver<bool>,
}

pub(super) type AppState = Arc<Inner>;

// ---------------------------------------------------------------------------------------------
// Logging and metrics

/// Logs every request at debug (method, path, status, duration) and counts it.
pub(super) async fn track(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| s.metrics.proxied_endpoint(&path));
    let resp = next.run(req).await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    tracing::debug!(%method, %path, status, duration_ms = elapsed.as_secs_f64() * 1e3, "validator API request");
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            endpoint: endpoint.clone(),
            method: method_label(&method),
            status,
        })
        .inc();
    s.metrics
        .request_duration
        .get_or_create(&EndpointLabel { endpoint })
        .observe(elapsed.as_secs_f64());
    resp
}

// ---------------------------------------------------------------------------------------------
// Beacon node round trips

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| uri.path().to_owned())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn too_large(s: &AppState, what: &str) -> ApiError {
    s.metrics.proxy_error("request_too_large");
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "{what} exceeds the limit of {} bytes",
            s.config.max_request_body
        ),
    )
}

fn upstream_failed(s: &AppState, e: UpstreamError) -> ApiError {
    s.metrics.proxy_error(e.reason());
    let status = match e {
        UpstreamError::Connect(_) => StatusCode::BAD_GATEWAY,
        UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
    };
    let err = e.into_backend(&s.bn.base());
    ApiError::new(status, err.to_string())
}

/// Sends a request to the beacon node(s), counting failures.
async fn send(
    s: &AppState,
    method: Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: Option<Bytes>,
) -> Result<reqwest::Response, ApiError> {
    s.bn.send(method, path_and_query, headers, body)
        .await
        .map_err(|e| upstream_failed(s, e))
}

/// Streams the beacon node's response to the VC, ending the stream at shutdown.
fn stream_response(s: &AppState, resp: reqwest::Response) -> Response {
    let status = resp.status();
    let headers = end_to_end_headers(resp.headers(), &[]);
    let metrics = s.metrics.clone();
    let mut shutdown = s.shutdown.clone();
    let stream = resp
        .bytes_stream()
        .inspect_err(move |e| {
            metrics.proxy_error("upstream_body");
            tracing::debug!(error = %error_chain(e), "beacon node response body failed");
        })
        .take_until(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        });
    let mut out = Response::new(Body::from_stream(stream));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// The transparent proxy: method, path, query, end-to-end headers and the body; the answer is
/// streamed back. The request body is read first (at most the configured size) so that it can
/// go to a fallback beacon node if the first one fails.
pub(super) async fn proxy(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let limit = s.config.max_request_body;
    let declared = content_length(&parts.headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(&s, "request body").into_response();
    }
    let has_body =
        declared.is_some_and(|n| n > 0) || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let body = if has_body {
        match read_body(&s, body).await {
            Ok(b) => Some(b),
            Err(e) => return e.into_response(),
        }
    } else {
        None
    };
    let pq = path_and_query(&parts.uri);
    let headers = end_to_end_headers(&parts.headers, &["host", "content-length"]);
    match send(&s, parts.method, &pq, headers, body).await {
        Ok(resp) => stream_response(&s, resp),
        Err(e) => e.into_response(),
    }
}

/// Reads a request body of at most the configured size.
async fn read_body(s: &AppState, body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, s.config.max_request_body)
        .await
        .map_err(|_| too_large(s, "request body"))
}

/// Forwards a request to the beacon node, buffers its JSON answer and rewrites it with `map`
/// (on success only; errors pass unchanged).
async fn forward_mapped(
    s: &AppState,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Option<Bytes>,
    map: impl FnOnce(&mut Value),
) -> Result<Response, ApiError> {
    let mut headers = end_to_end_headers(
        headers,
        &["host", "content-length", "accept-encoding", "accept"],
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let resp = send(s, method, path_and_query, headers, body).await?;
    if !resp.status().is_success() {
        return Ok(stream_response(s, resp));
    }
    let status = resp.status();
    let mut headers = end_to_end_headers(
        resp.headers(),
        &["content-length", "content-encoding", "content-type"],
    );
    let bad_answer = |what: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "beacon node {} answered {path_and_query}: {what}",
                s.bn.base()
            ),
        )
    };
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            s.metrics.proxy_error("upstream_body");
            bad_answer(format!("reading the body failed: {}", error_chain(&e)))
        })?;
        if buf.len() + chunk.len() > s.config.max_response_body {
            s.metrics.proxy_error("response_too_large");
            return Err(bad_answer(format!(
                "body exceeds the limit of {} bytes",
                s.config.max_response_body
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    let mut value: Value =
        serde_json::from_slice(&buf).map_err(|e| bad_answer(format!("invalid JSON: {e}")))?;
    map(&mut value);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok((status, headers, Json(value)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Pubkey mapping

/// Rewrites one validator id share → DV, counting unknown pubkeys.
fn map_id(s: &AppState, id: &str) -> String {
    s.config.pubkeys.request_id(id).unwrap_or_else(|unknown| {
        s.metrics.unknown_pubkeys.inc();
        tracing::debug!(pubkey = %unknown, "request names a pubkey that is not one of this node's shares");
        unknown
    })
}

/// Rewrites the `id` query parameters (repeated and/or comma-separated) share → DV.
fn map_id_query(s: &AppState, query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "id" {
            let ids: Vec<String> = v.split(',').map(|id| map_id(s, id.trim())).collect();
            out.append_pair(&k, &ids.join(","));
        } else {
            out.append_pair(&k, &v);
        }
    }
    out.finish()
}

/// Maps `data[].validator.pubkey` (or `data.validator.pubkey`) DV → share.
fn map_validators_response(s: &AppState, v: &mut Value) {
    let pubkeys = &s.config.pubkeys;
    match v.get_mut("data") {
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(validator) = item.get_mut("validator") {
                    pubkeys.map_response_field(validator, "pubkey");
                }
            }
        }
        Some(item @ Value::Object(_)) => {
            if let Some(validator) = item.get_mut("validator") {
                pubkeys.map_response_field(validator, "pubkey");
            }
        }
        _ => {}
    }
}

/// Maps `data[].pubkey` DV → share (only the cluster's pubkeys; others stay).
fn map_duties_response(s: &AppState, v: &mut Value) {
    if let Some(Value::Array(items)) = v.get_mut("data") {
        for item in items {
            s.config.pubkeys.map_response_field(item, "pubkey");
        }
    }
}

/// `GET /eth/v1/beacon/states/{state_id}/validators?id=…`.
pub(super) async fn validators_get(State(s): State<AppState>, req: Request) -> Response {
    let uri = req.uri();
    let pq = match uri.query() {
        Some(q) => format!("{}?{}", uri.path(), map_id_query(&s, q)),
        None => uri.path().to_owned(),
    };
    forward_mapped(&s, Method::GET, &pq, req.headers(), None, |v| {
        map_validators_response(&s, v)
    })
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /eth/v1/beacon/states/{state_id}/validators` with `{"ids": […], "statuses": […]}`.
pub(super) async fn validators_post(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let result = async {
        let bytes = read_body(&s, body).await?;
        let mut value = parse_json(&bytes)?;
        if let Some(ids) = value.get_mut("ids") {
            let Value::Array(ids) = ids else {
                return Err(ApiError::bad_request(
                    "body.ids: expected an array of validator ids",
                ));
            };
            for (i, id) in ids.iter_mut().enumerate() {
                let Some(text) = id.as_str() else {
                    return Err(ApiError::bad_request(format!(
                        "body.ids[{i}]: expected a string (pubkey or index)"
                    )));
                };
                *id = Value::String(map_id(&s, text));
            }
        }
        let body = Bytes::from(serde_json::to_vec(&value).expect("JSON values serialize"));
        let mut headers = parts.headers.clone();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        forward_mapped(
            &s,
            Method::POST,
            &path_and_query(&parts.uri),
            &headers,
            Some(body),
            |v| map_validators_response(&s, v),
        )
        .await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /eth/v1/beacon/states/{state_id}/validators/{validator_id}`.
pub(super) async fn validator_get(State(s): State<AppState>, req: Request) -> Response {
    let uri = req.uri();
    let path = uri.path();
    let (prefix, id) = path.rsplit_once('/').unwrap_or(("", path));
    let mut pq = format!("{prefix}/{}", map_id(&s, id));
    if let Some(q) = uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    forward_mapped(&s, Method::GET, &pq, req.headers(), None, |v| {
        map_validators_response(&s, v)
    })
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// Attester (POST), proposer (GET) and sync (POST) duties: `data[].pubkey` DV → share.
pub(super) async fn duties(State(s): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let result = async {
        let body = if parts.method == Method::GET {
            None
        } else {
            Some(read_body(&s, body).await?)
        };
        forward_mapped(
            &s,
            parts.method.clone(),
            &path_and_query(&parts.uri),
            &parts.headers,
            body,
            |v| map_duties_response(&s, v),
        )
        .await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

// ---------------------------------------------------------------------------------------------
// Request parsing

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "body: invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// Checks that `item` (at `at`, e.g. `body[2]`) is an object with `fields`.
fn require_fields(item: &Value, at: &str, fields: &[&str]) -> Result<(), ApiError> {
    let Value::Object(map) = item else {
        return Err(ApiError::bad_request(format!(
            "{at}: expected a JSON object"
        )));
    };
    match fields.iter().find(|f| !map.contains_key(**f)) {
        Some(missing) => Err(ApiError::bad_request(format!(
            "{at}: missing field `{missing}`"
        ))),
        None => Ok(()),
    }
}

/// A JSON array body whose items are objects with `fields`.
fn parse_array(bytes: &[u8], fields: &[&str]) -> Result<Vec<Value>, ApiError> {
    let Value::Array(items) = parse_json(bytes)? else {
        return Err(ApiError::bad_request("body: expected a JSON array"));
    };
    for (i, item) in items.iter().enumerate() {
        require_fields(item, &format!("body[{i}]"), fields)?;
    }
    Ok(items)
}

/// Query parameters by name (last wins).
fn query_params(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn required<'a>(q: &'a HashMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    q.get(name)
        .map(String::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("query parameter `{name}` is required")))
}

fn parse_u64(value: &str, what: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{what}: expected an unsigned integer, got {value:?}"
        ))
    })
}

/// A `0x`-prefixed hex string of exactly `len` bytes.
fn check_hex(value: &str, len: usize, what: &str) -> Result<(), ApiError> {
    let ok = value
        .strip_prefix("0x")
        .is_some_and(|h| h.len() == 2 * len && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what}: expected 0x-prefixed hex of {len} bytes, got {value:?}"
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Intercepted duty endpoints

/// Runs a backend call under the backend timeout; counts unsupported requests.
async fn call<T>(
    s: &AppState,
    endpoint: &str,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(s.config.backend_timeout, fut).await {
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{}: no decided value within {:?} (no consensus yet)",
                what(),
                s.config.backend_timeout
            ),
        )),
        Ok(Err(e)) => {
            if matches!(e, BackendError::Unsupported(_)) {
                s.metrics
                    .unsupported_requests
                    .get_or_create(&EndpointLabel {
                        endpoint: endpoint.to_owned(),
                    })
                    .inc();
                tracing::warn!(endpoint, "{e}");
            } else {
                tracing::debug!(endpoint, error = %e, "duty backend error");
            }
            Err(e.into())
        }
        Ok(Ok(v)) => Ok(v),
    }
}

fn respond<T>(result: Result<T, ApiError>, ok: impl FnOnce(T) -> Response) -> Response {
    match result {
        Ok(v) => ok(v),
        Err(e) => e.into_response(),
    }
}

fn data(v: Value) -> Response {
    Json(json!({ "data": v })).into_response()
}

fn empty_ok(_: ()) -> Response {
    StatusCode::OK.into_response()
}

/// `GET /eth/v1/validator/attestation_data?slot&committee_index`.
pub(super) async fn attestation_data(State(s): State<AppState>, uri: Uri) -> Response {
    let result = async {
        let q = query_params(&uri);
        let slot = parse_u64(required(&q, "slot")?, "query parameter `slot`")?;
        let index = parse_u64(
            required(&q, "committee_index")?,
            "query parameter `committee_index`",
        )?;
        call(
            &s,
            "attestation_data",
            || format!("attestation data for slot {slot} committee {index}"),
            s.backend.attestation_data(slot, index),
        )
        .await
    }
    .await;
    respond(result, data)
}

/// `GET /eth/v2/validator/blocks/{slot}?randao_reveal&graffiti`.
pub(super) async fn produce_block(
    State(s): State<AppState>,
    Path(slot): Path<String>,
    uri: Uri,
) -> Response {
    let result = async {
        let slot = parse_u64(&slot, "path parameter `slot`")?;
        let q = query_params(&uri);
        let randao = required(&q, "randao_reveal")?;
        check_hex(randao, 96, "query parameter `randao_reveal`")?;
        // Lodestar 1.5.1 sends its graffiti as text ("Lodestar-v1.5.1/…"), not as 32-byte hex;
        // it is passed on as given.
        let graffiti = q.get("graffiti").cloned();
        call(
            &s,
            "produce_block",
            || format!("block for slot {slot}"),
            s.backend
                .produce_block(s.config.share_index, slot, randao.to_owned(), graffiti),
        )
        .await
    }
    .await;
    respond(result, |block| {
        // Lodestar 1.5.1's VC requires `block_value` (it compares engine and builder blocks);
        // the decided block's value is not known here, and there is no builder to compare with.
        let mut resp =
            Json(json!({"version": block.version, "data": block.data, "block_value": "0"}))
                .into_response();
        if let Ok(v) = HeaderValue::from_str(&block.version) {
            resp.headers_mut().insert("eth-consensus-version", v);
        }
        resp
    })
}

/// `POST /eth/v1/beacon/pool/attestations`.
pub(super) async fn submit_attestations(State(s): State<AppState>, body: Body) -> Response {
    let result = async {
        let items = parse_array(
            &read_body(&s, body).await?,
            &["aggregation_bits", "data", "signature"],
        )?;
        let n = items.len();
        call(
            &s,
            "submit_attestations",
            move || format!("submitting {n} attestations"),
            s.backend.submit_attestations(s.config.share_index, items),
        )
        .await
    }
    .await;
    respond(result, empty_ok)
}

/// `POST /eth/v1/beacon/blocks`.
pub(super) async fn submit_block(State(s): State<AppState>, body: Body) -> Response {
    let result = async {
        let block = parse_json(&read_body(&s, body).await?)?;
        require_fields(&block, "body", &["message", "signature"])?;
        require_fields(
            &block["message"],
            "body.message",
            &["slot", "proposer_index", "body"],
        )?;
        call(
            &s,
            "submit_block",
            || "submitting a block".to_owned(),
            s.backend.submit_block(s.config.share_index, block),
        )
        .await
    }
    .await;
    respond(result, empty_ok)
}

/// `POST /eth/v1/beacon/pool/sync_committees`.
pub(super) async fn submit_sync_committee_messages(
    State(s): State<AppState>,
    body: Body,
) -> Response {
    let result = async {
        let items = parse_array(
            &read_body(&s, body).await?,
            &["slot", "beacon_block_root", "validator_index", "signature"],
        )?;
        let n = items.len();
        call(
            &s,
            "submit_sync_committee_messages",
            move || format!("submitting {n} sync committee messages"),
            s.backend
                .submit_sync_committee_messages(s.config.share_index, items),
        )
        .await
    }
    .await;
    respond(result, empty_ok)
}

/// `POST /eth/v1/beacon/pool/voluntary_exits`.
pub(super) async fn submit_voluntary_exit(State(s): State<AppState>, body: Body) -> Response {
    let result = async {
        let exit = parse_json(&read_body(&s, body).await?)?;
        require_fields(&exit, "body", &["message", "signature"])?;
        require_fields(
            &exit["message"],
            "body.message",
            &["epoch", "validator_index"],
        )?;
        call(
            &s,
            "submit_voluntary_exit",
            || "submitting a voluntary exit".to_owned(),
            s.backend.submit_voluntary_exit(s.config.share_index, exit),
        )
        .await
    }
    .await;
    respond(result, empty_ok)
}

/// `GET /eth/v1/validator/aggregate_attestation?attestation_data_root&slot`.
pub(super) async fn aggregate_attestation(State(s): State<AppState>, uri: Uri) -> Response {
    let result = async {
        let q = query_params(&uri);
        let slot = parse_u64(required(&q, "slot")?, "query parameter `slot`")?;
        let root = required(&q, "attestation_data_root")?;
        check_hex(root, 32, "query parameter `attestation_data_root`")?;
        call(
            &s,
            "aggregate_attestation",
            || format!("aggregate attestation for slot {slot}"),
            s.backend.aggregate_attestation(slot, root.to_owned()),
        )
        .await
    }
    .await;
    respond(result, data)
}

/// `GET /eth/v1/validator/sync_committee_contribution?slot&subcommittee_index&beacon_block_root`.
pub(super) async fn sync_committee_contribution(State(s): State<AppState>, uri: Uri) -> Response {
    let result = async {
        let q = query_params(&uri);
        let slot = parse_u64(required(&q, "slot")?, "query parameter `slot`")?;
        let sub = parse_u64(
            required(&q, "subcommittee_index")?,
            "query parameter `subcommittee_index`",
        )?;
        let root = required(&q, "beacon_block_root")?;
        check_hex(root, 32, "query parameter `beacon_block_root`")?;
        call(
            &s,
            "sync_committee_contribution",
            || format!("sync committee contribution for slot {slot}"),
            s.backend
                .sync_committee_contribution(slot, sub, root.to_owned()),
        )
        .await
    }
    .await;
    respond(result, data)
}

/// `POST /eth/v1/validator/aggregate_and_proofs`.
pub(super) async fn submit_aggregate_and_proofs(State(s): State<AppState>, body: Body) -> Response {
    let result = async {
        let items = parse_array(&read_body(&s, body).await?, &["message", "signature"])?;
        let n = items.len();
        call(
            &s,
            "submit_aggregate_and_proofs",
            move || format!("submitting {n} aggregates"),
            s.backend
                .submit_aggregate_and_proofs(s.config.share_index, items),
        )
        .await
    }
    .await;
    respond(result, empty_ok)
}

/// `POST /eth/v1/validator/contribution_and_proofs`.
pub(super) async fn submit_contribution_and_proofs(
    State(s): State<AppState>,
    body: Body,
) -> Response {
    let result = async {
        let items = parse_array(&read_body(&s, body).await?, &["message", "signature"])?;
        let n = items.len();
        call(
            &s,
            "submit_contribution_and_proofs",
            move || format!("submitting {n} contributions"),
            s.backend
                .submit_contribution_and_proofs(s.config.share_index, items),
        )
        .await
    }
    .await;
    respond(result, empty_ok)
}
