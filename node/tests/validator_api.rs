//! Validator API tests: against a small in-test beacon node for precise assertions, and against
//! a real Lodestar 1.5.1 beacon node + validator client (env `LODESTAR_BIN`).

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{any, get, post},
    Json, Router,
};
use dvnode::{
    cluster::{
        create::{create_cluster, CreateParams, KeySource},
        Cluster, ClusterLock,
    },
    keys::{
        keystore::{KdfChoice, Keystore},
        tbls,
    },
    validator_api::{
        BackendError, DutyBackend, Metrics, PassthroughBackend, ProducedBlock, ValidatorApi,
        ValidatorApiConfig,
    },
};
use futures::StreamExt;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

// ---------------------------------------------------------------------------------------------
// Cluster fixture

struct Fixture {
    _dir: tempfile::TempDir,
    out: PathBuf,
    cluster: Cluster,
}

/// A 4-node, threshold-3 cluster over interop validators 12..16.
fn cluster() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cluster");
    create_cluster(&CreateParams {
        name: "test".into(),
        nodes: 4,
        threshold: 3,
        keys: KeySource::Interop(12..16),
        fork_version: [0, 0, 0, 1],
        genesis_validators_root: [0; 32],
        addresses: vec![],
        insecure_keys: true,
        out: out.clone(),
    })
    .unwrap();
    let cluster = ClusterLock::load(&out.join("cluster-lock.json")).unwrap();
    Fixture {
        _dir: dir,
        out,
        cluster,
    }
}

fn hex_pk(pk: &tbls::PublicKey) -> String {
    format!("0x{}", hex::encode(pk.to_bytes()))
}

/// DV pubkey and node-1 share pubkey of validator `j`.
fn dv_and_share(c: &Cluster, j: usize) -> (String, String) {
    let v = &c.validators[j];
    (hex_pk(&v.pubkey), hex_pk(&v.public_shares[0]))
}

const FOREIGN: &str = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";

// ---------------------------------------------------------------------------------------------
// In-test beacon node

/// One request the fake beacon node received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct FakeBn {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The event stream waits on this before sending its second event.
    release_second_event: Arc<Notify>,
    /// DV pubkeys of the cluster (index 12 + position).
    dvs: Arc<Vec<String>>,
}

impl FakeBn {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

async fn record(State(bn): State<FakeBn>, req: Request) -> Result<(Seen, FakeBn), Response> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers: parts.headers,
        body,
    };
    bn.seen.lock().unwrap().push(seen.clone());
    Ok((seen, bn))
}

fn query_ids(query: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "id")
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn validator_json(index: usize, pubkey: &str) -> Value {
    json!({"index": index.to_string(), "balance": "32000000000", "status": "active_ongoing",
           "validator": {"pubkey": pubkey, "effective_balance": "32000000000", "slashed": false}})
}

async fn fake_validators(state: State<FakeBn>, req: Request) -> Response {
    let (seen, bn) = match record(state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let ids: Vec<String> = if seen.method == "POST" {
        let v: Value = serde_json::from_slice(&seen.body).unwrap();
        v["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    } else {
        query_ids(&seen.query)
    };
    // Known: the DV pubkeys (indices 12..) and FOREIGN (index 0); unknown ids are left out.
    let data: Vec<Value> = ids
        .iter()
        .filter_map(|id| {
            if id == FOREIGN {
                Some(validator_json(0, FOREIGN))
            } else {
                bn.dvs
                    .iter()
                    .position(|d| d == id)
                    .map(|i| validator_json(12 + i, id))
            }
        })
        .collect();
    Json(json!({"execution_optimistic": false, "data": data})).into_response()
}

async fn fake_validator(state: State<FakeBn>, req: Request) -> Response {
    let (seen, bn) = match record(state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let id = seen.path.rsplit('/').next().unwrap().to_owned();
    match bn.dvs.iter().position(|d| *d == id) {
        Some(i) => Json(json!({"data": validator_json(12 + i, &id)})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"code": 404, "message": "Validator not found"})),
        )
            .into_response(),
    }
}

async fn fake_duties(state: State<FakeBn>, req: Request) -> Response {
    let (seen, bn) = match record(state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let data: Vec<Value> = if seen.path.contains("/proposer/") {
        // All proposers of the epoch: one of ours, one foreign.
        vec![
            json!({"pubkey": bn.dvs[1], "validator_index": "13", "slot": "8"}),
            json!({"pubkey": FOREIGN, "validator_index": "0", "slot": "9"}),
        ]
    } else {
        let indices: Vec<String> = serde_json::from_slice(&seen.body).unwrap();
        indices
            .iter()
            .map(|i| {
                let n: usize = i.parse().unwrap();
                json!({"pubkey": bn.dvs[n - 12], "validator_index": i, "slot": "9",
                       "committee_index": "0", "committee_length": "4",
                       "committees_at_slot": "1", "validator_committee_index": (n - 12).to_string()})
            })
            .collect()
    };
    Json(
        json!({"dependent_root": format!("0x{}", "ab".repeat(32)), "execution_optimistic": false,
                "data": data}),
    )
    .into_response()
}

async fn fake_events(state: State<FakeBn>, req: Request) -> Response {
    let (_, bn) = match record(state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let release = bn.release_second_event.clone();
    let events = futures::stream::unfold(0u32, move |n| {
        let release = release.clone();
        async move {
            match n {
                0 => Some((
                    Ok::<_, std::io::Error>(Bytes::from("event: head\ndata: {\"slot\":\"1\"}\n\n")),
                    1,
                )),
                1 => {
                    release.notified().await;
                    Some((
                        Ok(Bytes::from("event: head\ndata: {\"slot\":\"2\"}\n\n")),
                        2,
                    ))
                }
                _ => None,
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events))
        .unwrap()
}

async fn fake_attestation_data(state: State<FakeBn>, req: Request) -> Response {
    let (seen, _) = match record(state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let q: std::collections::HashMap<String, String> =
        form_urlencoded::parse(seen.query.as_bytes())
            .into_owned()
            .collect();
    Json(
        json!({"data": {"slot": q["slot"], "index": q["committee_index"],
        "beacon_block_root": format!("0x{}", "11".repeat(32)),
        "source": {"epoch": "0", "root": format!("0x{}", "00".repeat(32))},
        "target": {"epoch": "1", "root": format!("0x{}", "22".repeat(32))}}}),
    )
    .into_response()
}

async fn fake_block(state: State<FakeBn>, req: Request) -> Response {
    let (seen, _) = match record(state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let slot = seen.path.rsplit('/').next().unwrap().to_owned();
    Json(json!({"version": "altair", "data": {"slot": slot, "proposer_index": "13",
        "parent_root": format!("0x{}", "33".repeat(32)), "state_root": format!("0x{}", "44".repeat(32)),
        "body": {}}}))
    .into_response()
}

/// Echoes method, query, selected headers and body; answers 202 with a custom header.
async fn fake_echo(state: State<FakeBn>, req: Request) -> Response {
    let (seen, _) = match record(state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    (
        StatusCode::ACCEPTED,
        [("x-upstream", "fake-bn")],
        Json(
            json!({"method": seen.method, "path": seen.path, "query": seen.query,
                    "body": String::from_utf8_lossy(&seen.body)}),
        ),
    )
        .into_response()
}

/// Accepts and records anything (pool submissions, subscriptions, …).
async fn fake_ok(state: State<FakeBn>, req: Request) -> Response {
    match record(state, req).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(r) => r,
    }
}

async fn start_fake_bn(cluster: &Cluster) -> (FakeBn, String) {
    let bn = FakeBn {
        dvs: Arc::new(
            cluster
                .validators
                .iter()
                .map(|v| hex_pk(&v.pubkey))
                .collect(),
        ),
        ..FakeBn::default()
    };
    let app = Router::new()
        .route(
            "/eth/v1/beacon/states/{state}/validators",
            get(fake_validators).post(fake_validators),
        )
        .route(
            "/eth/v1/beacon/states/{state}/validators/{id}",
            get(fake_validator),
        )
        .route(
            "/eth/v1/validator/duties/attester/{epoch}",
            post(fake_duties),
        )
        .route(
            "/eth/v1/validator/duties/proposer/{epoch}",
            get(fake_duties),
        )
        .route("/eth/v1/validator/duties/sync/{epoch}", post(fake_duties))
        .route("/eth/v1/events", get(fake_events))
        .route(
            "/eth/v1/validator/attestation_data",
            get(fake_attestation_data),
        )
        .route("/eth/v2/validator/blocks/{slot}", get(fake_block))
        .route("/echo/{*rest}", any(fake_echo))
        .fallback(fake_ok)
        .with_state(bn.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (bn, url)
}

// ---------------------------------------------------------------------------------------------
// Backends

/// Passes each call through to the beacon node and records it (name, share index).
struct Recording {
    inner: PassthroughBackend,
    calls: Mutex<Vec<(String, Option<u64>)>>,
}

impl Recording {
    fn new(bn_url: &str) -> Arc<Recording> {
        Arc::new(Recording {
            inner: PassthroughBackend::new(bn_url, Duration::from_secs(5)).unwrap(),
            calls: Mutex::default(),
        })
    }

    fn note(&self, name: &str, share: Option<u64>) {
        self.calls.lock().unwrap().push((name.to_owned(), share));
    }

    fn calls(&self) -> Vec<(String, Option<u64>)> {
        self.calls.lock().unwrap().clone()
    }

    fn called(&self, name: &str) -> bool {
        self.calls().iter().any(|(n, _)| n == name)
    }
}

#[async_trait]
impl DutyBackend for Recording {
    async fn attestation_data(&self, slot: u64, index: u64) -> Result<Value, BackendError> {
        self.note("attestation_data", None);
        self.inner.attestation_data(slot, index).await
    }

    async fn produce_block(
        &self,
        share: u64,
        slot: u64,
        randao: String,
        graffiti: Option<String>,
    ) -> Result<ProducedBlock, BackendError> {
        self.note("produce_block", Some(share));
        self.inner
            .produce_block(share, slot, randao, graffiti)
            .await
    }

    async fn submit_attestations(&self, share: u64, a: Vec<Value>) -> Result<(), BackendError> {
        self.note("submit_attestations", Some(share));
        self.inner.submit_attestations(share, a).await
    }

    async fn submit_block(&self, share: u64, b: Value) -> Result<(), BackendError> {
        self.note("submit_block", Some(share));
        self.inner.submit_block(share, b).await
    }

    async fn submit_sync_committee_messages(
        &self,
        share: u64,
        m: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.note("submit_sync_committee_messages", Some(share));
        self.inner.submit_sync_committee_messages(share, m).await
    }

    async fn submit_voluntary_exit(&self, share: u64, e: Value) -> Result<(), BackendError> {
        self.note("submit_voluntary_exit", Some(share));
        self.inner.submit_voluntary_exit(share, e).await
    }
}

/// A backend that never decides (to exercise the backend timeout).
struct Undecided;

#[async_trait]
impl DutyBackend for Undecided {
    async fn attestation_data(&self, _: u64, _: u64) -> Result<Value, BackendError> {
        std::future::pending().await
    }
    async fn produce_block(
        &self,
        _: u64,
        slot: u64,
        _: String,
        _: Option<String>,
    ) -> Result<ProducedBlock, BackendError> {
        Err(BackendError::NotFound(format!(
            "no proposer duty at slot {slot}"
        )))
    }
    async fn submit_attestations(&self, _: u64, _: Vec<Value>) -> Result<(), BackendError> {
        Err(BackendError::Unavailable(
            "no consensus yet for slot 5".into(),
        ))
    }
    async fn submit_block(&self, _: u64, _: Value) -> Result<(), BackendError> {
        Ok(())
    }
    async fn submit_sync_committee_messages(
        &self,
        _: u64,
        _: Vec<Value>,
    ) -> Result<(), BackendError> {
        Ok(())
    }
    async fn submit_voluntary_exit(&self, _: u64, _: Value) -> Result<(), BackendError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Harness

struct Api {
    url: String,
    metrics: Metrics,
    registry: Arc<Registry>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Api {
    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().get(format!("{}{path}", self.url))
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new().post(format!("{}{path}", self.url))
    }

    fn metrics_text(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }

    /// Requests shutdown and waits for the server to return.
    async fn stop(mut self) -> Duration {
        let start = Instant::now();
        self.stop.take().unwrap().send(()).unwrap();
        self.done.take().unwrap().await.unwrap().unwrap();
        start.elapsed()
    }
}

async fn start_api(
    cluster: &Cluster,
    bn_url: &str,
    backend: Arc<dyn DutyBackend>,
    tweak: impl FnOnce(&mut ValidatorApiConfig),
) -> Api {
    let mut config = ValidatorApiConfig::new(bn_url, cluster, 1).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    tweak(&mut config);
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let bound = ValidatorApi::new(config, backend)
        .unwrap()
        .with_metrics(metrics.clone())
        .bind()
        .await
        .unwrap();
    let url = format!("http://{}", bound.local_addr());
    let (tx, rx) = oneshot::channel();
    let done = tokio::spawn(bound.serve(async {
        let _ = rx.await;
    }));
    Api {
        url,
        metrics,
        registry: Arc::new(registry),
        stop: Some(tx),
        done: Some(done),
    }
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let body = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body));
    });
    (status, value)
}

fn pubkeys_at(v: &Value, pointer: &str) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.pointer(pointer).unwrap().as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests against the in-test beacon node

#[tokio::test]
async fn validator_lookup_maps_share_to_dv_and_back() {
    let f = cluster();
    let (bn, bn_url) = start_fake_bn(&f.cluster).await;
    let backend = Recording::new(&bn_url);
    let api = start_api(&f.cluster, &bn_url, backend, |_| {}).await;
    let (dv0, share0) = dv_and_share(&f.cluster, 0);
    let (dv3, share3) = dv_and_share(&f.cluster, 3);
    let share_of_node2 = hex_pk(&f.cluster.validators[1].public_shares[1]);

    // GET with comma-separated and repeated ids, an index, a foreign and an unknown pubkey.
    let q = format!("id={share0},{share3}&id=15&id={FOREIGN}&id={share_of_node2}");
    let (status, v) = json_of(
        api.get(&format!("/eth/v1/beacon/states/head/validators?{q}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let seen = bn.seen_path("/eth/v1/beacon/states/head/validators");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        query_ids(&seen[0].query),
        vec![
            dv0.clone(),
            dv3.clone(),
            "15".into(),
            FOREIGN.into(),
            share_of_node2.clone()
        ],
        "share pubkeys rewritten to DV pubkeys, everything else unchanged"
    );
    assert_eq!(
        pubkeys_at(&v, "/validator/pubkey"),
        vec![share0.clone(), share3.clone(), FOREIGN.to_string()],
        "DV pubkeys rewritten back to share pubkeys, foreign ones unchanged"
    );
    assert_eq!(v["data"][0]["index"], "12");
    assert_eq!(
        api.metrics.unknown_pubkeys.get(),
        2,
        "FOREIGN and another node's share are not ours"
    );

    // POST variant.
    let (status, v) = json_of(
        api.post("/eth/v1/beacon/states/head/validators")
            .json(&json!({"ids": [share3, "12"], "statuses": ["active_ongoing"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let posted = bn
        .seen_path("/eth/v1/beacon/states/head/validators")
        .into_iter()
        .find(|s| s.method == "POST")
        .unwrap();
    let posted: Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(posted["ids"], json!([dv3, "12"]));
    assert_eq!(posted["statuses"], json!(["active_ongoing"]));
    assert_eq!(pubkeys_at(&v, "/validator/pubkey"), vec![share3.clone()]);

    // Single validator by share pubkey.
    let (status, v) = json_of(
        api.get(&format!("/eth/v1/beacon/states/head/validators/{share0}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["validator"]["pubkey"], share0);
    assert_eq!(
        bn.seen().last().unwrap().path,
        format!("/eth/v1/beacon/states/head/validators/{dv0}")
    );

    // BN errors pass through unchanged.
    let (status, v) = json_of(
        api.get(&format!("/eth/v1/beacon/states/head/validators/{FOREIGN}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(v["message"], "Validator not found");
    api.stop().await;
}

#[tokio::test]
async fn duties_map_dv_to_share_for_cluster_pubkeys_only() {
    let f = cluster();
    let (bn, bn_url) = start_fake_bn(&f.cluster).await;
    let api = start_api(&f.cluster, &bn_url, Recording::new(&bn_url), |_| {}).await;
    let shares: Vec<String> = (0..4).map(|j| dv_and_share(&f.cluster, j).1).collect();

    for kind in ["attester", "sync"] {
        let (status, v) = json_of(
            api.post(&format!("/eth/v1/validator/duties/{kind}/1"))
                .json(&json!(["12", "14"]))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            pubkeys_at(&v, "/pubkey"),
            vec![shares[0].clone(), shares[2].clone()]
        );
        assert_eq!(v["data"][1]["validator_index"], "14");
        assert!(v["dependent_root"].is_string(), "other fields kept: {v}");
        let seen = bn.seen_path(&format!("/eth/v1/validator/duties/{kind}/1"));
        assert_eq!(
            seen[0].body.as_ref(),
            br#"["12","14"]"#,
            "body forwarded unchanged"
        );
    }

    let (status, v) = json_of(
        api.get("/eth/v1/validator/duties/proposer/1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        pubkeys_at(&v, "/pubkey"),
        vec![shares[1].clone(), FOREIGN.to_string()],
        "only the cluster's proposer pubkeys are mapped"
    );
    assert_eq!(api.metrics.unknown_pubkeys.get(), 0);
    api.stop().await;
}

#[tokio::test]
async fn everything_else_is_proxied_transparently() {
    let f = cluster();
    let (bn, bn_url) = start_fake_bn(&f.cluster).await;
    let api = start_api(&f.cluster, &bn_url, Recording::new(&bn_url), |_| {}).await;

    let resp = api
        .post("/echo/eth/v1/some/thing?x=1&y=a%20b")
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .header("content-type", "text/plain")
        .body("hello beacon")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-upstream"], "fake-bn");
    let (_, v) = json_of(resp).await;
    assert_eq!(
        v,
        json!({"method": "POST", "path": "/echo/eth/v1/some/thing", "query": "x=1&y=a%20b",
               "body": "hello beacon"})
    );
    let seen = bn.seen_path("/echo/eth/v1/some/thing").pop().unwrap();
    assert_eq!(seen.headers["x-custom"], "kept");
    assert!(
        !seen.headers.contains_key("x-hop"),
        "hop-by-hop header dropped"
    );
    assert_eq!(seen.headers["content-type"], "text/plain");

    // A GET on an intercepted POST route is proxied too (the pool of attestations).
    let resp = api
        .get("/eth/v1/beacon/pool/attestations?slot=3")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = bn.seen().pop().unwrap();
    assert_eq!(
        (
            seen.method.as_str(),
            seen.path.as_str(),
            seen.query.as_str()
        ),
        ("GET", "/eth/v1/beacon/pool/attestations", "slot=3")
    );

    // Large streamed upload, chunked.
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..64)
        .map(|i| Ok(Bytes::from(vec![b'a' + (i % 26) as u8; 4096])))
        .collect();
    let resp = api
        .post("/echo/upload")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(bn.seen_path("/echo/upload")[0].body.len(), 64 * 4096);

    let text = api.metrics_text();
    assert!(
        text.contains(r#"vapi_requests_total{endpoint="other",method="POST",status="202"}"#),
        "{text}"
    );
    api.stop().await;
}

#[tokio::test]
async fn event_stream_is_streamed_chunk_by_chunk_and_ends_at_shutdown() {
    let f = cluster();
    let (bn, bn_url) = start_fake_bn(&f.cluster).await;
    let api = start_api(&f.cluster, &bn_url, Recording::new(&bn_url), |_| {}).await;

    let resp = api
        .get("/eth/v1/events?topics=head")
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(bn.seen_path("/eth/v1/events")[0].query, "topics=head");
    let mut stream = resp.bytes_stream();
    // The first event arrives while the BN holds back the second one: nothing is buffered.
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("first event not passed on before the stream continued")
        .unwrap()
        .unwrap();
    assert_eq!(first.as_ref(), b"event: head\ndata: {\"slot\":\"1\"}\n\n");
    bn.release_second_event.notify_one();
    let second = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.as_ref(), b"event: head\ndata: {\"slot\":\"2\"}\n\n");

    // A second stream stays open; shutdown ends it instead of waiting on it forever.
    let open = api.get("/eth/v1/events?topics=block").send().await.unwrap();
    let mut open = open.bytes_stream();
    open.next().await.unwrap().unwrap();
    let took = api.stop().await;
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = open.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "open event stream not ended at shutdown");
}

#[tokio::test]
async fn unreachable_bn_gives_502_naming_it() {
    let f = cluster();
    // A port that was free a moment ago and has no listener now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bn_url = format!("http://127.0.0.1:{port}");
    let api = start_api(&f.cluster, &bn_url, Recording::new(&bn_url), |_| {}).await;
    for path in [
        "/eth/v1/node/version".to_owned(),
        format!(
            "/eth/v1/beacon/states/head/validators?id={}",
            dv_and_share(&f.cluster, 0).1
        ),
        "/eth/v1/validator/attestation_data?slot=1&committee_index=0".to_owned(),
    ] {
        let (status, v) = json_of(api.get(&path).send().await.unwrap()).await;
        assert_eq!(status, 502, "{path}: {v}");
        assert_eq!(v["code"], 502);
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains(&bn_url),
            "{path}: message does not name the BN: {msg}"
        );
    }
    let text = api.metrics_text();
    assert!(
        text.contains(r#"vapi_proxy_errors_total{reason="connect"} 2"#),
        "{text}"
    );
    api.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_400_naming_the_field_and_are_not_forwarded() {
    let f = cluster();
    let (bn, bn_url) = start_fake_bn(&f.cluster).await;
    let backend = Recording::new(&bn_url);
    let api = start_api(&f.cluster, &bn_url, backend.clone(), |c| {
        c.max_request_body = 4096
    })
    .await;

    let cases: Vec<(reqwest::RequestBuilder, &str)> = vec![
        (
            api.post("/eth/v1/beacon/pool/attestations").json(
                &json!([{"aggregation_bits": "0x01", "data": {}, "signature": "0x00"},
                              {"aggregation_bits": "0x01", "data": {}}]),
            ),
            "body[1]: missing field `signature`",
        ),
        (
            api.post("/eth/v1/beacon/pool/attestations").body("[{"),
            "body: invalid JSON at line 1 column 2",
        ),
        (
            api.post("/eth/v1/beacon/pool/attestations")
                .json(&json!({"aggregation_bits": "0x01"})),
            "body: expected a JSON array",
        ),
        (
            api.post("/eth/v1/beacon/blocks")
                .json(&json!({"message": {"slot": "1", "body": {}}, "signature": "0x00"})),
            "body.message: missing field `proposer_index`",
        ),
        (
            api.post("/eth/v1/beacon/pool/sync_committees")
                .json(&json!([{"slot": "1", "beacon_block_root": "0x00", "signature": "0x00"}])),
            "body[0]: missing field `validator_index`",
        ),
        (
            api.get("/eth/v1/validator/attestation_data?committee_index=0"),
            "query parameter `slot` is required",
        ),
        (
            api.get("/eth/v1/validator/attestation_data?slot=x1&committee_index=0"),
            "query parameter `slot`: expected an unsigned integer, got \"x1\"",
        ),
        (
            api.get("/eth/v2/validator/blocks/9?randao_reveal=0x1234"),
            "query parameter `randao_reveal`: expected 0x-prefixed hex of 96 bytes",
        ),
        (
            api.get("/eth/v2/validator/blocks/nine?randao_reveal=0x1234"),
            "path parameter `slot`: expected an unsigned integer",
        ),
        (
            api.post("/eth/v1/beacon/states/head/validators")
                .json(&json!({"ids": "12"})),
            "body.ids: expected an array",
        ),
    ];
    for (req, expected) in cases {
        let (status, v) = json_of(req.send().await.unwrap()).await;
        assert_eq!(status, 400, "{expected}: {v}");
        assert_eq!(v["code"], 400);
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
    }

    // Too large: intercepted and proxied bodies.
    let big = format!("[{}]", "1,".repeat(4096) + "1");
    let (status, v) = json_of(
        api.post("/eth/v1/beacon/pool/attestations")
            .body(big.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413, "{v}");
    let (status, _) = json_of(api.post("/echo/big").body(big).send().await.unwrap()).await;
    assert_eq!(status, 413);

    assert!(backend.calls().is_empty(), "{:?}", backend.calls());
    assert!(
        bn.seen().is_empty(),
        "forwarded: {:?}",
        bn.seen().iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    api.stop().await;
}

#[tokio::test]
async fn aggregation_endpoints_are_refused_and_nothing_is_forwarded() {
    let f = cluster();
    let (bn, bn_url) = start_fake_bn(&f.cluster).await;
    let api = start_api(&f.cluster, &bn_url, Recording::new(&bn_url), |_| {}).await;
    let root = format!("0x{}", "ab".repeat(32));
    let item = json!([{"message": {}, "signature": format!("0x{}", "00".repeat(96))}]);
    let requests = [
        api.get(&format!(
            "/eth/v1/validator/aggregate_attestation?attestation_data_root={root}&slot=3"
        )),
        api.get(&format!(
            "/eth/v1/validator/sync_committee_contribution?slot=3&subcommittee_index=0&beacon_block_root={root}"
        )),
        api.post("/eth/v1/validator/aggregate_and_proofs").json(&item),
        api.post("/eth/v1/validator/contribution_and_proofs").json(&item),
    ];
    for req in requests {
        let (status, v) = json_of(req.send().await.unwrap()).await;
        assert_eq!(status, 501, "{v}");
        assert_eq!(v["code"], 501);
        assert!(
            v["message"].as_str().unwrap().starts_with(
                "distributed validators need the DV selections endpoints (not in this VC)"
            ),
            "{v}"
        );
    }
    assert!(bn.seen().is_empty(), "nothing reaches the BN");
    let text = api.metrics_text();
    for ep in [
        "aggregate_attestation",
        "sync_committee_contribution",
        "submit_aggregate_and_proofs",
        "submit_contribution_and_proofs",
    ] {
        assert!(
            text.contains(&format!(
                r#"vapi_unsupported_requests_total{{endpoint="{ep}"}} 1"#
            )),
            "{ep}: {text}"
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn duty_endpoints_reach_the_backend_with_the_share_index() {
    let f = cluster();
    let (bn, bn_url) = start_fake_bn(&f.cluster).await;
    let backend = Recording::new(&bn_url);
    let api = start_api(&f.cluster, &bn_url, backend.clone(), |c| c.share_index = 3).await;

    let (status, v) = json_of(
        api.get("/eth/v1/validator/attestation_data?slot=7&committee_index=2")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["slot"], "7");
    assert_eq!(v["data"]["index"], "2");

    let randao = format!("0x{}", "cd".repeat(96));
    let graffiti = format!("0x{}", "00".repeat(32));
    let resp = api
        .get(&format!(
            "/eth/v2/validator/blocks/9?randao_reveal={randao}&graffiti={graffiti}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["eth-consensus-version"], "altair");
    let (status, v) = json_of(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], "altair");
    assert_eq!(v["data"]["slot"], "9");
    let seen = bn.seen_path("/eth/v2/validator/blocks/9").pop().unwrap();
    assert_eq!(
        seen.query,
        format!("randao_reveal={randao}&graffiti={graffiti}")
    );

    let att = json!([{"aggregation_bits": "0x03", "data": {"slot": "7"}, "signature": "0x01"}]);
    let resp = api
        .post("/eth/v1/beacon/pool/attestations")
        .json(&att)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = bn
        .seen_path("/eth/v1/beacon/pool/attestations")
        .pop()
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&seen.body).unwrap(), att);

    let block =
        json!({"message": {"slot": "9", "proposer_index": "13", "body": {}}, "signature": "0x02"});
    let resp = api
        .post("/eth/v1/beacon/blocks")
        .json(&block)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let msgs = json!([{"slot": "9", "beacon_block_root": "0x00", "validator_index": "13", "signature": "0x03"}]);
    let resp = api
        .post("/eth/v1/beacon/pool/sync_committees")
        .json(&msgs)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    assert_eq!(
        backend.calls(),
        vec![
            ("attestation_data".to_owned(), None),
            ("produce_block".to_owned(), Some(3)),
            ("submit_attestations".to_owned(), Some(3)),
            ("submit_block".to_owned(), Some(3)),
            ("submit_sync_committee_messages".to_owned(), Some(3)),
        ]
    );
    let text = api.metrics_text();
    assert!(
        text.contains(r#"vapi_requests_total{endpoint="/eth/v2/validator/blocks/{slot}",method="GET",status="200"} 1"#),
        "{text}"
    );
    api.stop().await;
}

#[tokio::test]
async fn backend_errors_and_timeouts_map_to_statuses() {
    let f = cluster();
    let (bn, bn_url) = start_fake_bn(&f.cluster).await;
    let api = start_api(&f.cluster, &bn_url, Arc::new(Undecided), |c| {
        c.backend_timeout = Duration::from_millis(300)
    })
    .await;

    let start = Instant::now();
    let (status, v) = json_of(
        api.get("/eth/v1/validator/attestation_data?slot=5&committee_index=1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    assert!(start.elapsed() < Duration::from_secs(3));
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("slot 5 committee 1") && msg.contains("no consensus yet"),
        "{msg}"
    );

    let (status, v) = json_of(
        api.get(&format!(
            "/eth/v2/validator/blocks/4?randao_reveal=0x{}",
            "00".repeat(96)
        ))
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v),
        (
            404,
            json!({"code": 404, "message": "no proposer duty at slot 4"})
        )
    );

    let (status, v) = json_of(
        api.post("/eth/v1/beacon/pool/attestations")
            .json(&json!([]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status.as_u16(), v["message"].as_str().unwrap()),
        (503, "no consensus yet for slot 5")
    );
    assert!(bn.seen().is_empty());
    api.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Against real Lodestar 1.5.1

/// A child process in its own process group, killed with the group on drop (also on panic).
struct ProcessGroup {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl ProcessGroup {
    fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> ProcessGroup {
        use std::os::unix::process::CommandExt;
        // Lodestar's CLI reads every `LODESTAR_*` variable as a flag (`LODESTAR_BIN` would
        // become the unknown `--bin`); only the preset is meant for it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LODESTAR_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("LODESTAR_PRESET", "minimal");
        // `lodestar dev` writes genesis.ssz into its working directory: keep it in the temp dir.
        cmd.current_dir(log.parent().expect("log files live in the test's temp dir"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        ProcessGroup { child, name, log }
    }

    fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: VecDeque<&str> = text.lines().collect();
        let skip = all.len().saturating_sub(lines);
        format!(
            "--- last {lines} lines of {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            all.iter()
                .skip(skip)
                .copied()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}\n{}", self.name, self.tail(40));
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let pgid = self.child.id();
        // Kill the whole group: Lodestar may start helpers.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lodestar_bin() -> Option<PathBuf> {
    match std::env::var_os("LODESTAR_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "LODESTAR_BIN is not set but CI is: the Lodestar integration test must run in CI"
            )
        }
        None => {
            eprintln!(
                "\n*** SKIPPING lodestar_vc_through_validator_api: set LODESTAR_BIN to a Lodestar \
                 1.5.1 binary (e.g. /work/cache/lodestar/bin/lodestar) to run it ***\n"
            );
            None
        }
    }
}

/// Re-encrypts node 0's share keystores under one password (Lodestar's
/// `--importKeystoresPassword` takes a single password file).
fn reencrypt_node0_keys(cluster_dir: &Path, dest: &Path, password: &str) -> usize {
    let src = cluster_dir.join("node0/validator_keys");
    std::fs::create_dir_all(dest).unwrap();
    let mut n = 0;
    for j in 0.. {
        let ks_path = src.join(format!("keystore-{j}.json"));
        if !ks_path.exists() {
            break;
        }
        let pw = std::fs::read_to_string(src.join(format!("keystore-{j}.txt"))).unwrap();
        let secret = Keystore::from_file(&ks_path)
            .unwrap()
            .decrypt(pw.trim_end())
            .unwrap();
        Keystore::encrypt(&secret, password, "", KdfChoice::Insecure)
            .unwrap()
            .to_file(&dest.join(format!("keystore-{j}.json")))
            .unwrap();
        n += 1;
    }
    n
}

/// Records every request the VC makes (method, path, query, body) in front of the API router.
#[derive(Clone, Default)]
struct VcLog(Arc<Mutex<Vec<VcRequest>>>);

/// Method, path, query, body and answered status of one VC request.
type VcRequest = (String, String, String, String, u16);

impl VcLog {
    fn entries(&self) -> Vec<VcRequest> {
        self.0.lock().unwrap().clone()
    }
}

async fn log_vc_request(
    State(log): State<VcLog>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let (method, path) = (parts.method.to_string(), parts.uri.path().to_owned());
    let query = parts.uri.query().unwrap_or("").to_owned();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = resp.status().as_u16();
    log.0
        .lock()
        .unwrap()
        .push((method, path, query, text, status));
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lodestar_vc_through_validator_api() {
    let Some(lodestar) = lodestar_bin() else {
        return;
    };
    let started = Instant::now();
    let f = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let (rest_port, p2p_port) = (free_port(), free_port());
    let bn_url = format!("http://127.0.0.1:{rest_port}");
    let params = [
        "--params.ALTAIR_FORK_EPOCH",
        "0",
        "--params.SECONDS_PER_SLOT",
        "2",
    ];
    let genesis_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 8;

    let mut bn_cmd = Command::new(&lodestar);
    bn_cmd
        .args([
            "dev",
            "--genesisValidators",
            "16",
            "--startValidators",
            "0..11",
        ])
        .args(params)
        .args(["--genesisTime", &genesis_time.to_string()])
        .args([
            "--rest",
            "--rest.address",
            "127.0.0.1",
            "--rest.port",
            &rest_port.to_string(),
        ])
        .args([
            "--port",
            &p2p_port.to_string(),
            "--listenAddress",
            "127.0.0.1",
            "--discv5",
            "false",
        ])
        // The dev command's own validators must use this BN, not the default port.
        .args(["--beaconNodes", &bn_url])
        .arg("--dataDir")
        .arg(tmp.path().join("bn"))
        .arg("--reset");
    let mut bn = ProcessGroup::spawn("lodestar dev (BN)", bn_cmd, tmp.path().join("bn.log"));

    // dvnode validator API for node 0 (share index 1) in front of the BN.
    let backend = Recording::new(&bn_url);
    let mut config = ValidatorApiConfig::new(&bn_url, &f.cluster, 1).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let api = ValidatorApi::new(config, backend.clone()).unwrap();
    let vc_log = VcLog::default();
    let router = api.router().layer(axum::middleware::from_fn_with_state(
        vc_log.clone(),
        log_vc_request,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    // Wait for the BN's REST API.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        bn.assert_running();
        let ok = http
            .get(format!("{bn_url}/eth/v1/node/version"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "BN REST not up\n{}", bn.tail(40));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("BN up after {:?}", started.elapsed());

    // The BN knows the DV pubkeys at interop indices 12..15. (Lodestar 1.5.1 wants repeated
    // `id=` parameters: it answers an empty list for comma-separated ids.)
    let dv_ids: Vec<String> = (0..4)
        .map(|j| format!("id={}", dv_and_share(&f.cluster, j).0))
        .collect();
    let v: Value = http
        .get(format!(
            "{bn_url}/eth/v1/beacon/states/head/validators?{}",
            dv_ids.join("&")
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut indices: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["index"].as_str().unwrap().to_owned())
        .collect();
    indices.sort();
    assert_eq!(indices, ["12", "13", "14", "15"], "{v}");

    // The real VC with node 0's share keys, talking to dvnode.
    let password = "vc-test-password";
    let keys_dir = tmp.path().join("vc-keys");
    assert_eq!(reencrypt_node0_keys(&f.out, &keys_dir, password), 4);
    let pw_file = tmp.path().join("vc-password.txt");
    std::fs::write(&pw_file, password).unwrap();
    let mut vc_cmd = Command::new(&lodestar);
    vc_cmd
        .args(["validator", "--network", "dev"])
        .args(params)
        .args(["--beaconNodes", &api_url])
        .arg("--importKeystores")
        .arg(&keys_dir)
        .arg("--importKeystoresPassword")
        .arg(&pw_file)
        .arg("--dataDir")
        .arg(tmp.path().join("vc"));
    let mut vc = ProcessGroup::spawn("lodestar validator (VC)", vc_cmd, tmp.path().join("vc.log"));

    let shares: Vec<String> = (0..4).map(|j| dv_and_share(&f.cluster, j).1).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut looked_up, mut duties, mut data, mut submitted, mut refused) =
        (false, false, false, false, false);
    while !(looked_up && duties && data && submitted && refused) {
        bn.assert_running();
        vc.assert_running();
        let log = vc_log.entries();
        looked_up = log.iter().any(|(m, p, q, _, status)| {
            m == "GET"
                && p == "/eth/v1/beacon/states/head/validators"
                && *status == 200
                && shares.iter().all(|s| q.contains(s.as_str()))
        });
        // Attester duties asked for exactly the DV indices: the VC found its 4 validators
        // through the mapped status lookup.
        duties = log.iter().any(|(m, p, _, body, _)| {
            m == "POST"
                && p.starts_with("/eth/v1/validator/duties/attester/")
                && serde_json::from_str::<Vec<String>>(body).is_ok_and(|mut ids| {
                    ids.sort();
                    ids == ["12", "13", "14", "15"]
                })
        });
        data = backend.called("attestation_data");
        // The VC signs an attestation only for a duty whose pubkey it holds: the duties'
        // pubkeys were mapped back to its shares.
        submitted = backend.called("submit_attestations");
        // In the minimal preset every attester aggregates: the VC asks for the aggregate,
        // which a DV cannot serve with this VC; the API refuses it.
        refused = log.iter().any(|(_, p, _, _, status)| {
            p == "/eth/v1/validator/aggregate_attestation" && *status == 501
        });
        if Instant::now() > deadline {
            let paths: Vec<String> = log
                .iter()
                .map(|(m, p, _, _, status)| format!("{m} {p} -> {status}"))
                .collect();
            panic!(
                "after {:?}: looked_up={looked_up} duties={duties} attestation_data={data} \
                 submitted={submitted} aggregate_refused={refused}\nVC requests: {paths:#?}\n\
                 backend: {:?}\n{}\n{}",
                started.elapsed(),
                backend.calls(),
                vc.tail(60),
                bn.tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let calls = backend.calls();
    assert!(calls
        .iter()
        .filter(|(n, _)| n == "submit_attestations")
        .all(|(_, share)| *share == Some(1)));
    let entries = vc_log.entries();
    let lookup_query = entries
        .iter()
        .find(|(_, p, _, _, _)| p == "/eth/v1/beacon/states/head/validators")
        .map(|(_, _, q, _, _)| q.clone())
        .unwrap_or_default();
    eprintln!("VC validator lookup query: {lookup_query}");
    let mut kinds: Vec<String> = entries
        .iter()
        .map(|(m, p, _, _, status)| format!("{m} {p} -> {status}"))
        .collect();
    kinds.sort();
    kinds.dedup();
    eprintln!(
        "Lodestar VC went through dvnode in {:?}; distinct requests: {kinds:#?}\nbackend calls: {calls:?}",
        started.elapsed()
    );
}
