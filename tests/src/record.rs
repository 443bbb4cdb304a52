//! A recording HTTP proxy for seed corpora (`e2e-local --record DIR`): put between a Lodestar
//! VC and its dvnode, or between a dvnode and the beacon node, it forwards every request
//! unchanged (bodies and event streams streamed both ways) and appends real exchanges to a
//! JSON-lines file: `{method, path, request_body, status, content_type, response_body}`.
//!
//! Only test harnesses use it; dvnode's own code paths are untouched. To keep the recording
//! small it keeps at most [`PER_ENDPOINT`] exchanges per endpoint (method and path with
//! numbers, hex and pubkeys folded), request and response bodies up to [`MAX_BODY`] bytes, and
//! the first [`MAX_STREAM`] bytes of an event stream.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// Exchanges kept per endpoint.
pub const PER_ENDPOINT: usize = 3;
/// Largest body recorded (larger exchanges are forwarded but not recorded).
pub const MAX_BODY: usize = 256 << 10;
/// Bytes of an event stream recorded.
pub const MAX_STREAM: usize = 16 << 10;

/// One recorded exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Request body (UTF-8; bodies that are not are not recorded).
    pub request_body: String,
    /// Response status.
    pub status: u16,
    /// Response `Content-Type`.
    pub content_type: String,
    /// Response body (an event stream's first bytes).
    pub response_body: String,
}

impl Exchange {
    /// The endpoint an exchange is counted under: method and path with every run of digits,
    /// hex and long tokens folded, e.g. `GET /eth/v2/validator/blocks/N?randao_reveal=X`.
    pub fn endpoint(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        let folded: Vec<&str> = path
            .split('/')
            .map(|seg| {
                if seg.starts_with("0x")
                    || (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
                {
                    "N"
                } else {
                    seg
                }
            })
            .collect();
        format!("{} {}", self.method, folded.join("/"))
    }
}

/// Reads a recording.
pub fn read(path: &Path) -> Result<Vec<Exchange>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

struct Recorder {
    out: Mutex<(std::fs::File, HashMap<String, usize>)>,
}

impl Recorder {
    fn record(&self, e: Exchange) {
        let mut g = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let (file, counts) = &mut *g;
        let n = counts.entry(e.endpoint()).or_default();
        if *n >= PER_ENDPOINT {
            return;
        }
        *n += 1;
        if let Ok(line) = serde_json::to_string(&e) {
            let _ = writeln!(file, "{line}");
        }
    }
}

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    recorder: Recorder,
}

/// A running proxy.
pub struct RecordingProxy {
    /// `http://127.0.0.1:PORT` to give the client instead of the upstream.
    pub url: String,
    /// The recording file.
    pub file: PathBuf,
}

/// Starts a proxy to `upstream` (`http://host:port`) appending to `file` (created). Must run
/// inside a tokio runtime; the proxy lives as long as the runtime.
pub async fn start(upstream: &str, file: &Path) -> Result<RecordingProxy> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .with_context(|| format!("creating {}", file.display()))?;
    let state = Arc::new(Proxy {
        upstream: upstream.trim_end_matches('/').to_owned(),
        http: reqwest::Client::new(),
        recorder: Recorder {
            out: Mutex::new((f, HashMap::new())),
        },
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(forward).with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "recording proxy stopped");
        }
    });
    Ok(RecordingProxy {
        url: format!("http://{addr}"),
        file: file.to_owned(),
    })
}

const HOP: [HeaderName; 3] = [header::HOST, header::CONNECTION, header::TRANSFER_ENCODING];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !HOP.contains(k) && k != header::CONTENT_LENGTH {
            to.append(k.clone(), v.clone());
        }
    }
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return status(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    let resp = match p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.upstream))
        .headers(headers)
        .body(body.clone())
        .send()
        .await
    {
        Ok(r) => r,
        Err(_) => return status(StatusCode::BAD_GATEWAY),
    };
    let code = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut out_headers = HeaderMap::new();
    copy_headers(resp.headers(), &mut out_headers);
    let request_body = String::from_utf8(body.to_vec())
        .ok()
        .filter(|b| b.len() <= MAX_BODY);
    let exchange = move |response_body: String| Exchange {
        method: parts.method.to_string(),
        path,
        request_body: request_body.clone().unwrap_or_default(),
        status: code.as_u16(),
        content_type: content_type.clone(),
        response_body,
    };
    let streaming = out_headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut response = if streaming {
        // Forward the stream as it comes; record its first bytes once there are enough, or
        // when the stream ends first.
        let mut tap = StreamTap {
            seen: Vec::new(),
            pending: Some((Box::new(exchange), p.clone())),
        };
        let stream = resp.bytes_stream().map(move |chunk| {
            if let Ok(c) = &chunk {
                tap.add(c);
            }
            chunk
        });
        Response::new(Body::from_stream(stream))
    } else {
        let bytes: Bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(_) => return status(StatusCode::BAD_GATEWAY),
        };
        if bytes.len() <= MAX_BODY {
            if let Ok(text) = std::str::from_utf8(&bytes) {
                p.recorder.record(exchange(text.to_owned()));
            }
        }
        Response::new(Body::from(bytes))
    };
    *response.status_mut() = code;
    *response.headers_mut() = out_headers;
    response
}

type Pending = (Box<dyn FnOnce(String) -> Exchange + Send>, Arc<Proxy>);

/// The first bytes of an event stream, recorded at [`MAX_STREAM`] or when dropped.
struct StreamTap {
    seen: Vec<u8>,
    pending: Option<Pending>,
}

impl StreamTap {
    fn add(&mut self, chunk: &[u8]) {
        if self.pending.is_some() {
            self.seen.extend_from_slice(chunk);
            if self.seen.len() >= MAX_STREAM {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        if let Some((exchange, p)) = self.pending.take() {
            self.seen.truncate(MAX_STREAM);
            let text = String::from_utf8_lossy(&self.seen).into_owned();
            p.recorder.record(exchange(text));
        }
    }
}

impl Drop for StreamTap {
    fn drop(&mut self) {
        if !self.seen.is_empty() {
            self.flush();
        }
    }
}

fn status(code: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_fold_numbers_and_keys() {
        let e = |m: &str, p: &str| Exchange {
            method: m.into(),
            path: p.into(),
            request_body: String::new(),
            status: 200,
            content_type: String::new(),
            response_body: String::new(),
        };
        assert_eq!(
            e("GET", "/eth/v2/validator/blocks/17?randao_reveal=0xab").endpoint(),
            "GET /eth/v2/validator/blocks/N"
        );
        assert_eq!(
            e("GET", "/eth/v1/beacon/states/head/validators/0xa99a").endpoint(),
            "GET /eth/v1/beacon/states/head/validators/N"
        );
        assert_ne!(
            e("POST", "/eth/v1/beacon/pool/attestations").endpoint(),
            e("GET", "/eth/v1/beacon/pool/attestations").endpoint()
        );
    }

    #[tokio::test]
    async fn records_and_forwards() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = format!("http://{}", upstream.local_addr().unwrap());
        let app = axum::Router::new().fallback(|body: Bytes| async move {
            (
                [(header::CONTENT_TYPE, "application/json")],
                format!("{{\"got\":{}}}", body.len()),
            )
        });
        tokio::spawn(async move { axum::serve(upstream, app).await.unwrap() });
        let dir = tempfile::tempdir().unwrap();
        let proxy = start(&up, &dir.path().join("r.jsonl")).await.unwrap();
        let client = reqwest::Client::new();
        for i in 0..5 {
            let r = client
                .post(format!("{}/eth/v1/x/{i}?a=b", proxy.url))
                .body("[1,2]")
                .send()
                .await
                .unwrap();
            assert_eq!(r.text().await.unwrap(), "{\"got\":5}");
        }
        let rec = read(&proxy.file).unwrap();
        assert_eq!(rec.len(), PER_ENDPOINT, "kept per endpoint");
        assert_eq!(rec[0].path, "/eth/v1/x/0?a=b");
        assert_eq!(rec[0].request_body, "[1,2]");
        assert_eq!(rec[0].response_body, "{\"got\":5}");
        assert_eq!(rec[0].content_type, "application/json");
    }
}
