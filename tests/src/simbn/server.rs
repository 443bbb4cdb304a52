//! The HTTP side of the simulated beacon node (axum): routes, JSON envelopes, the event
//! stream. One listener per dvnode; the listener's position is the node recorded on arrivals.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dvnode::eth::aggregate::{SignedAggregateAndProof, SignedContributionAndProof};
use dvnode::eth::types::{
    from_json_slice, Attestation, BlsSignature, Graffiti, Root, SignedBeaconBlockAltair,
    SyncCommitteeMessage,
};
use futures::Stream;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::aggregation::MAX_AGGREGATION_ITEMS;
use super::{now_ms, ApiFailure, ItemFailures, SimBn, MAX_URI_BYTES, P};

#[derive(Clone)]
struct Ctx {
    bn: Arc<SimBn>,
    node: usize,
}

type Params = Query<Vec<(String, String)>>;

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Values of a list parameter given repeated and/or comma-separated.
fn list_param(q: &[(String, String)], name: &str) -> Vec<String> {
    q.iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn error(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        Json(json!({"code": status.as_u16(), "message": message.into()})),
    )
        .into_response()
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        error(self.status, self.message)
    }
}

fn data(v: impl serde::Serialize) -> Response {
    Json(json!({"data": v, "execution_optimistic": false})).into_response()
}

fn item_failures(f: ItemFailures) -> Response {
    let failures: Vec<Value> = f
        .into_iter()
        .map(|(i, m)| json!({"index": i, "message": m}))
        .collect();
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"code": 400, "message": "some items failed", "failures": failures})),
    )
        .into_response()
}

fn parse_u64(s: Option<&str>, what: &str) -> Result<u64, ApiFailure> {
    s.ok_or_else(|| ApiFailure::bad(format!("{what} is required")))?
        .parse()
        .map_err(|_| ApiFailure::bad(format!("{what} must be an unsigned integer")))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiFailure> {
    from_json_slice(body).map_err(|e| ApiFailure::bad(format!("body: {e}")))
}

/// String ids of a duties request body (`["1", "2"]`; numbers accepted too).
fn ids_body(body: &[u8]) -> Result<Vec<String>, ApiFailure> {
    let v: Vec<Value> = parse_json(body)?;
    v.into_iter()
        .map(|x| match x {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(ApiFailure::bad(format!("invalid validator index {other}"))),
        })
        .collect()
}

/// Runs CPU-heavy work (signature checks) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("simulated beacon node task panicked")
}

async fn track(State(c): State<Ctx>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| format!("{} {}", req.method(), m.as_str()));
    if req.uri().to_string().len() > MAX_URI_BYTES {
        c.bn.count_request("header_too_large", false);
        return error(
            431,
            format!("request header (URI) longer than {MAX_URI_BYTES} bytes"),
        );
    }
    match route {
        Some(r) => c.bn.count_request(&r, true),
        None => {
            c.bn.count_request(&format!("{} {}", req.method(), req.uri().path()), false)
        }
    }
    next.run(req).await
}

async fn genesis(State(c): State<Ctx>) -> Response {
    data(c.bn.genesis())
}

async fn spec(State(c): State<Ctx>) -> Response {
    data(c.bn.spec())
}

async fn fork(State(c): State<Ctx>) -> Response {
    data(c.bn.fork())
}

async fn syncing(State(c): State<Ctx>) -> Response {
    let head = c.bn.head().slot;
    data(json!({
        "head_slot": head.to_string(),
        "sync_distance": c.bn.current_slot().saturating_sub(head).to_string(),
        "is_syncing": false,
        "is_optimistic": false,
        "el_offline": false,
    }))
}

async fn version() -> Response {
    data(json!({"version": concat!("dvlab-simbn/", env!("CARGO_PKG_VERSION"))}))
}

async fn ok() -> Response {
    StatusCode::OK.into_response()
}

async fn validators_get(State(c): State<Ctx>, Query(q): Params) -> Response {
    match c.bn.validators(&list_param(&q, "id")) {
        Ok(v) => data(v),
        Err(e) => e.into_response(),
    }
}

async fn validators_post(State(c): State<Ctx>, body: Bytes) -> Response {
    let ids = parse_json::<Value>(&body).map(|v| {
        v.get("ids")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    });
    match ids.and_then(|ids| c.bn.validators(&ids)) {
        Ok(v) => data(v),
        Err(e) => e.into_response(),
    }
}

async fn validator_get(
    State(c): State<Ctx>,
    Path((_state, id)): Path<(String, String)>,
) -> Response {
    match c.bn.validators(std::slice::from_ref(&id)) {
        Ok(v) if !v.is_empty() => data(v[0]),
        Ok(_) => error(404, format!("validator {id} not found")),
        Err(e) => e.into_response(),
    }
}

async fn sync_committees(State(c): State<Ctx>, Query(q): Params) -> Response {
    let epoch = param(&q, "epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| super::chain::epoch_of(c.bn.current_slot()));
    data(c.bn.sync_committee_json(epoch))
}

fn duties_json<T: serde::Serialize>(r: Result<T, ApiFailure>) -> Response {
    match r {
        Ok(d) => Json(d).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn attester_duties(State(c): State<Ctx>, Path(epoch): Path<u64>, body: Bytes) -> Response {
    duties_json(ids_body(&body).and_then(|ids| c.bn.attester_duties(epoch, &ids)))
}

async fn proposer_duties(State(c): State<Ctx>, Path(epoch): Path<u64>) -> Response {
    duties_json(c.bn.proposer_duties(epoch))
}

async fn sync_duties(State(c): State<Ctx>, Path(epoch): Path<u64>, body: Bytes) -> Response {
    duties_json(ids_body(&body).and_then(|ids| c.bn.sync_duties(epoch, &ids)))
}

async fn attestation_data(State(c): State<Ctx>, Query(q): Params) -> Response {
    let r = parse_u64(param(&q, "slot"), "slot").and_then(|slot| {
        let index = parse_u64(param(&q, "committee_index"), "committee_index")?;
        c.bn.attestation_data(slot, index)
    });
    match r {
        Ok(d) => data(d),
        Err(e) => e.into_response(),
    }
}

async fn produce_block(State(c): State<Ctx>, Path(slot): Path<u64>, Query(q): Params) -> Response {
    let reveal: Result<BlsSignature, ApiFailure> = param(&q, "randao_reveal")
        .ok_or_else(|| ApiFailure::bad("randao_reveal is required"))
        .and_then(|r| {
            r.parse()
                .map_err(|e| ApiFailure::bad(format!("randao_reveal: {e}")))
        });
    let reveal = match reveal {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // Graffiti as 32-byte hex; anything else (Lodestar sends text) counts as empty.
    let graffiti: Graffiti = param(&q, "graffiti")
        .and_then(|g| g.parse().ok())
        .unwrap_or_default();
    let bn = c.bn.clone();
    match blocking(move || bn.produce_block(slot, reveal, graffiti)).await {
        Ok(block) => {
            let mut resp = Json(json!({
                "version": "altair",
                "execution_optimistic": false,
                "block_value": "0",
                "data": block,
            }))
            .into_response();
            resp.headers_mut()
                .insert("eth-consensus-version", "altair".parse().expect("static"));
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn header(State(c): State<Ctx>, Path(id): Path<String>) -> Response {
    match c.bn.resolve_block_id(&id) {
        Ok(slot) => match c.bn.header_json(slot) {
            Some(h) => data(h),
            None => error(404, format!("block {id} not found")),
        },
        Err(e) => e.into_response(),
    }
}

async fn block_root(State(c): State<Ctx>, Path(id): Path<String>) -> Response {
    match c.bn.resolve_block_id(&id) {
        Ok(slot) => match c.bn.block_root(slot) {
            Some(root) => data(json!({"root": root})),
            None => error(404, format!("block {id} not found")),
        },
        Err(e) => e.into_response(),
    }
}

async fn block_v2(State(c): State<Ctx>, Path(id): Path<String>) -> Response {
    match c.bn.resolve_block_id(&id) {
        Ok(slot) => match c.bn.signed_block(slot) {
            Some(b) => Json(json!({"version": "altair", "execution_optimistic": false, "data": b}))
                .into_response(),
            None => error(404, format!("block {id} not found")),
        },
        Err(e) => e.into_response(),
    }
}

/// Decodes a submission and hands it to `f` off the async workers, with its arrival time.
async fn submit<T: serde::de::DeserializeOwned + Send + 'static>(
    c: Ctx,
    body: Bytes,
    f: fn(&SimBn, usize, u64, T) -> Response,
) -> Response {
    let t = now_ms();
    let value: T = match parse_json(&body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let (bn, node) = (c.bn.clone(), c.node);
    blocking(move || f(&bn, node, t, value)).await
}

fn pool_answer(r: Result<(), ItemFailures>) -> Response {
    match r {
        Ok(()) => StatusCode::OK.into_response(),
        Err(f) => item_failures(f),
    }
}

async fn submit_attestations(State(c): State<Ctx>, body: Bytes) -> Response {
    submit(c, body, |bn, node, t, atts: Vec<Attestation<P>>| {
        pool_answer(bn.submit_attestations(node, t, atts))
    })
    .await
}

async fn submit_sync_messages(State(c): State<Ctx>, body: Bytes) -> Response {
    submit(c, body, |bn, node, t, msgs: Vec<SyncCommitteeMessage>| {
        pool_answer(bn.submit_sync_messages(node, t, msgs))
    })
    .await
}

fn too_many(n: usize) -> Option<Response> {
    (n > MAX_AGGREGATION_ITEMS).then(|| {
        error(
            400,
            format!("{n} items in one request: at most {MAX_AGGREGATION_ITEMS}"),
        )
    })
}

async fn submit_aggregates(State(c): State<Ctx>, body: Bytes) -> Response {
    submit(
        c,
        body,
        |bn, node, t, items: Vec<SignedAggregateAndProof<P>>| {
            too_many(items.len())
                .unwrap_or_else(|| pool_answer(bn.submit_aggregates(node, t, &items)))
        },
    )
    .await
}

async fn submit_contributions(State(c): State<Ctx>, body: Bytes) -> Response {
    submit(
        c,
        body,
        |bn, node, t, items: Vec<SignedContributionAndProof<P>>| {
            too_many(items.len())
                .unwrap_or_else(|| pool_answer(bn.submit_contributions(node, t, &items)))
        },
    )
    .await
}

fn parse_root(s: Option<&str>, what: &str) -> Result<Root, ApiFailure> {
    s.ok_or_else(|| ApiFailure::bad(format!("{what} is required")))?
        .parse()
        .map_err(|e| ApiFailure::bad(format!("{what}: {e}")))
}

async fn aggregate_attestation(State(c): State<Ctx>, Query(q): Params) -> Response {
    let r = parse_u64(param(&q, "slot"), "slot").and_then(|slot| {
        let root = parse_root(param(&q, "attestation_data_root"), "attestation_data_root")?;
        Ok((slot, root))
    });
    let (slot, root) = match r {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let bn = c.bn.clone();
    match blocking(move || bn.aggregate_attestation(slot, root)).await {
        Ok(a) => data(a),
        Err(e) => e.into_response(),
    }
}

async fn sync_committee_contribution(State(c): State<Ctx>, Query(q): Params) -> Response {
    let r = parse_u64(param(&q, "slot"), "slot").and_then(|slot| {
        let sub = parse_u64(param(&q, "subcommittee_index"), "subcommittee_index")?;
        let root = parse_root(param(&q, "beacon_block_root"), "beacon_block_root")?;
        Ok((slot, sub, root))
    });
    let (slot, sub, root) = match r {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let bn = c.bn.clone();
    match blocking(move || bn.sync_committee_contribution(slot, sub, root)).await {
        Ok(a) => data(a),
        Err(e) => e.into_response(),
    }
}

async fn submit_block(State(c): State<Ctx>, body: Bytes) -> Response {
    submit(
        c,
        body,
        |bn, node, t, block: SignedBeaconBlockAltair<P>| match bn.submit_block(node, t, block) {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => e.into_response(),
        },
    )
    .await
}

async fn events(
    State(c): State<Ctx>,
    Query(q): Params,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let wants_head = list_param(&q, "topics").iter().any(|t| t == "head");
    let rx = c.bn.subscribe_heads();
    let stream = futures::stream::unfold((rx, wants_head), |(mut rx, wants)| async move {
        if !wants {
            std::future::pending::<()>().await;
        }
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    let event = Event::default()
                        .event("head")
                        .json_data(ev)
                        .expect("head events serialize");
                    return Some((Ok(event), (rx, wants)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/eth/v1/beacon/genesis", get(genesis))
        .route("/eth/v1/config/spec", get(spec))
        .route("/eth/v1/node/syncing", get(syncing))
        .route("/eth/v1/node/version", get(version))
        .route("/eth/v1/node/health", get(ok))
        .route("/eth/v1/beacon/states/{state}/fork", get(fork))
        .route(
            "/eth/v1/beacon/states/{state}/validators",
            get(validators_get).post(validators_post),
        )
        .route(
            "/eth/v1/beacon/states/{state}/validators/{id}",
            get(validator_get),
        )
        .route(
            "/eth/v1/beacon/states/{state}/sync_committees",
            get(sync_committees),
        )
        .route(
            "/eth/v1/validator/duties/attester/{epoch}",
            post(attester_duties),
        )
        .route(
            "/eth/v1/validator/duties/proposer/{epoch}",
            get(proposer_duties),
        )
        .route("/eth/v1/validator/duties/sync/{epoch}", post(sync_duties))
        .route("/eth/v1/validator/attestation_data", get(attestation_data))
        .route("/eth/v2/validator/blocks/{slot}", get(produce_block))
        .route("/eth/v1/beacon/headers/{id}", get(header))
        .route("/eth/v1/beacon/blocks/{id}/root", get(block_root))
        .route("/eth/v2/beacon/blocks/{id}", get(block_v2))
        .route(
            "/eth/v1/beacon/pool/attestations",
            post(submit_attestations),
        )
        .route(
            "/eth/v1/beacon/pool/sync_committees",
            post(submit_sync_messages),
        )
        .route("/eth/v1/beacon/blocks", post(submit_block))
        .route(
            "/eth/v1/validator/aggregate_attestation",
            get(aggregate_attestation),
        )
        .route(
            "/eth/v1/validator/sync_committee_contribution",
            get(sync_committee_contribution),
        )
        .route(
            "/eth/v1/validator/aggregate_and_proofs",
            post(submit_aggregates),
        )
        .route(
            "/eth/v1/validator/contribution_and_proofs",
            post(submit_contributions),
        )
        .route("/eth/v1/validator/beacon_committee_subscriptions", post(ok))
        .route("/eth/v1/validator/sync_committee_subscriptions", post(ok))
        .route("/eth/v1/validator/prepare_beacon_proposer", post(ok))
        .route("/eth/v1/events", get(events))
        .fallback(|| async { error(404, "route not served by the simulated beacon node") })
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), track))
        .layer(axum::extract::DefaultBodyLimit::max(10 << 20))
        .with_state(ctx)
}

/// Serves `bn` on each listener (listener `i` is node `i`) until the returned tasks are
/// aborted.
pub fn serve(bn: Arc<SimBn>, listeners: Vec<TcpListener>) -> Vec<JoinHandle<()>> {
    listeners
        .into_iter()
        .enumerate()
        .map(|(node, l)| {
            let app = router(Ctx {
                bn: bn.clone(),
                node,
            });
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::error!(node, error = %e, "simulated beacon node server failed");
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dvnode::eth::beacon::{
        BeaconClient, BeaconEvent, BlockId, EventTopic, StateId, ValidatorId,
    };
    use dvnode::eth::types::{
        Attestation, BlsPubkey, BlsSignature, Mainnet, SignedBeaconBlockAltair,
    };
    use dvnode::keys::tbls;
    use futures::StreamExt;
    use rand::SeedableRng;
    use ssz_types::BitList;

    use super::super::chain::epoch_of;
    use super::super::{now_ms, ObjectKind, SimBn, SimBnConfig, MAX_URI_BYTES};

    fn sign(sk: &tbls::SecretKey, root: dvnode::eth::types::Root) -> BlsSignature {
        BlsSignature(tbls::sign(sk, &root.0).to_bytes())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_duties_verifies_submissions_and_imports_blocks() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let keys: Vec<tbls::SecretKey> = (0..64).map(|_| tbls::random_secret(&mut rng)).collect();
        let seconds_per_slot = 2;
        // Slot 3 is under way.
        let genesis_time = now_ms() / 1000 - 3 * seconds_per_slot;
        let bn = SimBn::new(SimBnConfig {
            genesis_time,
            seconds_per_slot,
            genesis_validators_root: dvnode::eth::types::Root([4; 32]),
            signers: keys.iter().map(|k| k.sk_to_pk()).collect(),
            other_validators: 0,
            seed: [1; 32],
            nodes: 2,
        })
        .unwrap();
        let l0 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = |l: &tokio::net::TcpListener| format!("http://{}", l.local_addr().unwrap());
        let (c0, c1) = (
            BeaconClient::new(&url(&l0)).unwrap(),
            BeaconClient::new(&url(&l1)).unwrap(),
        );
        let base0 = url(&l0);
        let servers = super::serve(bn.clone(), vec![l0, l1]);

        let schedule = c0.fork_schedule().await.unwrap();
        schedule.ensure_preset::<Mainnet>().unwrap();
        assert_eq!(schedule.forks(), bn.schedule().forks());
        assert_eq!(
            schedule.genesis_validators_root(),
            bn.schedule().genesis_validators_root()
        );
        let ids: Vec<ValidatorId> = keys[..3]
            .iter()
            .map(|k| ValidatorId::Pubkey(BlsPubkey(k.sk_to_pk().to_bytes())))
            .collect();
        let found = c0.state_validators(StateId::Head, &ids).await.unwrap();
        assert_eq!(
            found.iter().map(|v| v.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        // A URI beyond 16 KiB is refused, as by a Node.js beacon node…
        let long = format!(
            "{base0}/eth/v1/beacon/states/head/validators?id={}",
            "1,".repeat(MAX_URI_BYTES / 2)
        );
        let status = reqwest::get(&long).await.unwrap().status();
        assert_eq!(status.as_u16(), 431);
        // …so the client looks 200 pubkeys (one URI of ~20 KB) up in chunks: the 64 known
        // ones, spread over the chunks, are all found.
        let many: Vec<ValidatorId> = (0..200)
            .map(|i| match keys.get(i / 3) {
                Some(k) if i % 3 == 0 => ValidatorId::Pubkey(BlsPubkey(k.sk_to_pk().to_bytes())),
                _ => ValidatorId::Pubkey(BlsPubkey([i as u8; 48])),
            })
            .collect();
        let found = c0.state_validators(StateId::Head, &many).await.unwrap();
        assert_eq!(
            found.iter().map(|v| v.index).collect::<Vec<_>>(),
            (0..64).collect::<Vec<u64>>()
        );

        let all: Vec<u64> = (0..64).collect();
        let duties = c0.attester_duties(0, &all).await.unwrap();
        assert_eq!(duties.data.len(), 64);
        assert!(c0.attester_duties(5, &all).await.is_err(), "too far ahead");
        let proposers = c0.proposer_duties::<Mainnet>(0).await.unwrap();
        assert_eq!(proposers.data.len(), 31, "no proposer at the genesis slot");
        let sync = c0.sync_duties(0, &all).await.unwrap();
        assert_eq!(
            sync.data
                .iter()
                .map(|d| d.validator_sync_committee_indices.len())
                .sum::<usize>(),
            512
        );

        // Attestations of slot 2 (a past slot): valid ones are taken, a forged one refused.
        let slot = 2;
        let att_duties: Vec<_> = duties.data.iter().filter(|d| d.slot == slot).collect();
        assert_eq!(att_duties.len(), 2, "64 validators, 32 slots");
        let data = c0.attestation_data(slot, 0).await.unwrap();
        assert!(
            c0.attestation_data(slot + 5, 0).await.is_err(),
            "future slot"
        );
        let att = |d: &dvnode::eth::beacon::AttesterDuty, key: &tbls::SecretKey| {
            let mut bits = BitList::with_capacity(d.committee_length as usize).unwrap();
            bits.set(d.validator_committee_index as usize, true)
                .unwrap();
            Attestation::<Mainnet> {
                aggregation_bits: bits,
                data,
                signature: sign(key, schedule.attestation_signing_root(&data)),
            }
        };
        let good: Vec<_> = att_duties
            .iter()
            .map(|d| att(d, &keys[d.validator_index as usize]))
            .collect();
        c0.submit_attestations(&good).await.unwrap();
        c1.submit_attestations(&good[..1]).await.unwrap();
        let forged = att(att_duties[0], &keys[63]);
        assert!(c1.submit_attestations(&[forged]).await.is_err());
        let rec = bn.record();
        let a = &rec.arrivals[&(ObjectKind::Attestation, slot, att_duties[0].validator_index)];
        assert!(a.nodes[0].is_some() && a.nodes[1].is_some());
        assert_eq!(rec.invalid.get("attestation"), Some(&1));

        // The block of slot 3: RANDAO checked, attestations of slot 2 aggregated into it, and
        // once signed and published it is the head, announced on the event stream.
        let block_slot = 3;
        let proposer = proposers
            .data
            .iter()
            .find(|d| d.slot == block_slot)
            .unwrap();
        let key = &keys[proposer.validator_index as usize];
        let reveal = sign(key, schedule.randao_signing_root(epoch_of(block_slot)));
        assert!(c0
            .produce_block::<Mainnet>(
                block_slot,
                &sign(
                    &keys[(proposer.validator_index as usize + 1) % 64],
                    schedule.randao_signing_root(0)
                ),
                None
            )
            .await
            .is_err());
        let block = c0
            .produce_block::<Mainnet>(block_slot, &reveal, None)
            .await
            .unwrap();
        assert_eq!(block.body.attestations.len(), 1);
        assert_eq!(
            block.body.attestations[0].aggregation_bits.num_set_bits(),
            2
        );
        let mut events = c1.events::<Mainnet>(&[EventTopic::Head]).await.unwrap();
        let signed = SignedBeaconBlockAltair {
            signature: sign(key, schedule.block_signing_root(&block)),
            message: block,
            extra: Default::default(),
        };
        c0.submit_block(&signed).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let BeaconEvent::Head(head) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!((head.slot, head.block), (block_slot, signed.block_root()));
        assert_eq!(
            c1.header(BlockId::Head).await.unwrap().root,
            signed.block_root()
        );
        let stored = c1
            .block::<Mainnet>(BlockId::Slot(block_slot))
            .await
            .unwrap();
        assert_eq!(stored, signed);
        let again = c1.submit_block(&signed).await;
        assert!(again.is_ok(), "the same block again is fine: {again:?}");
        assert!(
            bn.record().arrivals[&(ObjectKind::Block, block_slot, proposer.validator_index)].nodes
                [1]
            .is_some()
        );
        for s in servers {
            s.abort();
        }
    }
}
