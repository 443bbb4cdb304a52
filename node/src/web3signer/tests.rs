//! Unit tests of the Web3Signer API against request bodies a real Lodestar v1.5.1 validator
//! client sent (`testdata/lodestar.json`, recorded by `tests/web3signer_lodestar.rs`: every
//! `signingRoot` in it is Lodestar's own computation).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use serde_json::{json, Value};

use super::request::{check, parse, BlockToSign, SignObject};
use super::*;
use crate::eth::beacon::{Genesis, SpecConfig};
use crate::eth::types::{Minimal, VoluntaryExit};

const FIXTURE: &str = include_str!("testdata/lodestar.json");

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).unwrap()
}

fn schedule() -> ForkSchedule {
    let f = fixture();
    let genesis: Genesis = serde_json::from_value(f["genesis"].clone()).unwrap();
    let spec: SpecConfig = serde_json::from_value(f["spec"].clone()).unwrap();
    ForkSchedule::from_spec(&spec, &genesis).unwrap()
}

fn request(sign_type: &str) -> Value {
    fixture()["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == sign_type)
        .unwrap_or_else(|| panic!("no {sign_type} in the fixture"))
        .clone()
}

fn parse_value(v: &Value) -> Result<SignRequest<Minimal>, SignError> {
    parse::<Minimal>(&serde_json::to_vec(v).unwrap())
}

fn checked(v: &Value) -> Result<Root, SignError> {
    check(&parse_value(v)?, &schedule())
}

/// The error of `v`, which must be a 400 naming `field`.
fn assert_names(v: &Value, field: &str) -> SignError {
    let err = checked(v).unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err.message.starts_with(&format!("{field}:")),
        "error does not name `{field}`: {err}"
    );
    err
}

#[test]
fn every_lodestar_request_type_recomputes_to_lodestars_signing_root() {
    let requests = fixture()["requests"].as_array().unwrap().clone();
    let mut types = Vec::new();
    for body in &requests {
        let req = parse_value(body).unwrap_or_else(|e| panic!("{}: {e}", body["type"]));
        let lodestar: Root = body["signingRoot"].as_str().unwrap().parse().unwrap();
        assert_eq!(req.signing_root, Some(lodestar));
        // Recomputed from the object with our schedule: equal to Lodestar's.
        assert_eq!(
            req.object.signing_root(&schedule()),
            lodestar,
            "{}",
            body["type"]
        );
        assert_eq!(check(&req, &schedule()), Ok(lodestar));
        assert_eq!(req.object.sign_type().as_str(), body["type"]);
        types.push(req.object.sign_type());
    }
    types.sort();
    assert_eq!(
        types,
        vec![
            SignType::AggregationSlot,
            SignType::AggregateAndProof,
            SignType::Attestation,
            SignType::BlockV2,
            SignType::RandaoReveal,
            SignType::SyncCommitteeMessage,
            SignType::SyncCommitteeSelectionProof,
            SignType::SyncCommitteeContributionAndProof,
        ],
        "the fixture covers every type the VC sends"
    );
}

#[test]
fn objects_parse_to_the_containers_the_vc_signed() {
    let block = parse_value(&request("BLOCK_V2")).unwrap();
    let SignObject::Block(BlockToSign::Altair(b)) = &block.object else {
        panic!("{:?}", block.object)
    };
    // The header of the block signs to the same root (what clients send from Bellatrix on).
    let mut as_header = request("BLOCK_V2");
    as_header["beacon_block"] = json!({"version": "ALTAIR", "block_header": b.header()});
    assert_eq!(checked(&as_header), checked(&request("BLOCK_V2")));
    let header = parse_value(&as_header).unwrap();
    let SignObject::Block(h) = &header.object else {
        panic!()
    };
    assert_eq!(h.block_root(), Root::of(b.as_ref()));

    match parse_value(&request("SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF"))
        .unwrap()
        .object
    {
        SignObject::ContributionAndProof(c) => {
            assert_eq!(c.aggregator_index, 14);
            assert_eq!(c.contribution.aggregation_bits.num_set_bits(), 8);
        }
        other => panic!("{other:?}"),
    }
    // signingRoot is optional in the Web3Signer API: the root is computed either way.
    let mut no_root = request("ATTESTATION");
    no_root.as_object_mut().unwrap().remove("signingRoot");
    assert_eq!(checked(&no_root), checked(&request("ATTESTATION")));

    // A voluntary exit (Lodestar 1.5.1 signs its exits locally; other clients send this).
    let mut exit = request("RANDAO_REVEAL");
    let exit = exit.as_object_mut().unwrap();
    exit.remove("randao_reveal");
    exit.remove("signingRoot");
    exit.insert("type".into(), json!("VOLUNTARY_EXIT"));
    exit.insert(
        "voluntary_exit".into(),
        json!({"epoch": "2", "validator_index": "14"}),
    );
    let req = parse_value(&Value::Object(exit.clone())).unwrap();
    let e = VoluntaryExit {
        epoch: 2,
        validator_index: 14,
    };
    assert_eq!(req.object, SignObject::VoluntaryExit(e));
    assert_eq!(
        check(&req, &schedule()),
        Ok(schedule().voluntary_exit_signing_root(&e))
    );
}

#[test]
fn forged_signing_root_is_refused() {
    for t in [
        "ATTESTATION",
        "BLOCK_V2",
        "AGGREGATION_SLOT",
        "AGGREGATE_AND_PROOF",
    ] {
        let mut v = request(t);
        v["signingRoot"] = json!(format!("0x{}", "ab".repeat(32)));
        let err = assert_names(&v, "signingRoot");
        assert_eq!(err.reason, "wrong_signing_root");
    }
    // The object changed under the client's root: the root no longer matches.
    let mut v = request("ATTESTATION");
    v["attestation"]["beacon_block_root"] = json!(format!("0x{}", "11".repeat(32)));
    assert_names(&v, "signingRoot");
}

#[test]
fn wrong_fork_info_is_refused_naming_the_field() {
    let mut v = request("ATTESTATION");
    v["fork_info"]["genesis_validators_root"] = json!(format!("0x{}", "00".repeat(32)));
    let err = assert_names(&v, "fork_info.genesis_validators_root");
    assert_eq!(err.reason, "wrong_chain");

    let mut v = request("ATTESTATION");
    v["fork_info"]["fork"]["current_version"] = json!("0x02000001");
    let err = assert_names(&v, "fork_info.fork.current_version");
    assert_eq!(err.reason, "wrong_fork");

    // A fork epoch after the signed epoch makes the previous (genesis) version sign: wrong.
    let mut v = request("BLOCK_V2");
    v["fork_info"]["fork"]["epoch"] = json!("1000");
    assert_names(&v, "fork_info.fork.previous_version");

    // The real fork epoch (0) with the Altair version is right too.
    let mut v = request("BLOCK_V2");
    v["fork_info"]["fork"]["epoch"] = json!("0");
    assert!(checked(&v).is_ok());

    let mut v = request("ATTESTATION");
    v.as_object_mut().unwrap().remove("fork_info");
    assert_names(&v, "fork_info");
    let mut v = request("ATTESTATION");
    v["fork_info"]["fork"]["epoch"] = json!("soon");
    assert_names(&v, "fork_info.fork.epoch");
}

#[test]
fn malformed_bodies_and_types_are_refused_naming_the_field() {
    // Not JSON, not an object.
    let err = parse::<Minimal>(b"{\"type\":").unwrap_err();
    assert!(err.message.starts_with("body: invalid JSON"), "{err}");
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert!(parse::<Minimal>(b"[1,2]")
        .unwrap_err()
        .message
        .starts_with("body:"));

    // Type: missing, not a string, unknown, refused.
    let mut v = request("ATTESTATION");
    v.as_object_mut().unwrap().remove("type");
    assert_names(&v, "type");
    v["type"] = json!(7);
    assert_names(&v, "type");
    v["type"] = json!("ATTESTATION_V9");
    let err = assert_names(&v, "type");
    assert!(err.message.contains("ATTESTATION_V9"), "{err}");
    assert_eq!(err.reason, "unknown_type");
    for refused in [
        "DEPOSIT",
        "VALIDATOR_REGISTRATION",
        "BLOCK",
        "BLS_TO_EXECUTION_CHANGE",
    ] {
        v["type"] = json!(refused);
        let err = assert_names(&v, "type");
        assert!(err.message.contains(refused), "{err}");
        assert_eq!(err.reason, "unsupported_type");
    }

    // The object: missing, or a bad field deep inside.
    let mut v = request("ATTESTATION");
    v.as_object_mut().unwrap().remove("attestation");
    let err = assert_names(&v, "attestation");
    assert!(
        err.message.contains("required for type ATTESTATION"),
        "{err}"
    );
    let mut v = request("ATTESTATION");
    v["attestation"]["target"]["epoch"] = json!("x");
    assert_names(&v, "attestation.target.epoch");
    let mut v = request("AGGREGATE_AND_PROOF");
    v["aggregate_and_proof"]["selection_proof"] = json!("0x1234");
    assert_names(&v, "aggregate_and_proof.selection_proof");
    let mut v = request("SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF");
    v["contribution_and_proof"]["contribution"]["aggregation_bits"] = json!("0xffff");
    assert_names(&v, "contribution_and_proof.contribution.aggregation_bits");
    let mut v = request("SYNC_COMMITTEE_SELECTION_PROOF");
    v["sync_aggregator_selection_data"]
        .as_object_mut()
        .unwrap()
        .remove("subcommittee_index");
    assert_names(&v, "sync_aggregator_selection_data");
    let mut v = request("ATTESTATION");
    v["signingRoot"] = json!("0xzz");
    assert_names(&v, "signingRoot");

    // Blocks: version missing or unknown, a full non-Altair block, neither block nor header.
    let mut v = request("BLOCK_V2");
    v["beacon_block"].as_object_mut().unwrap().remove("version");
    assert_names(&v, "beacon_block.version");
    let mut v = request("BLOCK_V2");
    v["beacon_block"]["version"] = json!("SHANGHAI");
    assert_names(&v, "beacon_block.version");
    let mut v = request("BLOCK_V2");
    v["beacon_block"]["version"] = json!("BELLATRIX");
    let err = assert_names(&v, "beacon_block.version");
    assert!(err.message.contains("block_header"), "{err}");
    let mut v = request("BLOCK_V2");
    v["beacon_block"].as_object_mut().unwrap().remove("block");
    assert_names(&v, "beacon_block.block");
    let mut v = request("BLOCK_V2");
    v["beacon_block"]["block"]["body"]["randao_reveal"] = json!(1);
    assert_names(&v, "beacon_block.block.body.randao_reveal");
}

/// Signs with a whole key; refuses (412) when told to.
struct Whole {
    sk: crate::keys::tbls::SecretKey,
    refuse: bool,
    calls: AtomicUsize,
}

#[async_trait]
impl Signer<Minimal> for Whole {
    fn pubkeys(&self) -> Vec<BlsPubkey> {
        vec![BlsPubkey(self.sk.sk_to_pk().to_bytes())]
    }

    async fn sign(
        &self,
        _pubkey: BlsPubkey,
        _req: SignRequest<Minimal>,
        root: Root,
    ) -> Result<BlsSignature, SignError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.refuse {
            return Err(SignError::refused(
                "attestation: not what the cluster decided",
            ));
        }
        Ok(BlsSignature(
            crate::keys::tbls::sign(&self.sk, &root.0).to_bytes(),
        ))
    }
}

fn app(refuse: bool) -> (axum::Router, Arc<Whole>, BlsPubkey, Registry) {
    let whole = Arc::new(Whole {
        sk: crate::keys::interop::interop_secret(14),
        refuse,
        calls: AtomicUsize::new(0),
    });
    let pk = whole.pubkeys()[0];
    let mut registry = Registry::default();
    let api = Web3Signer::<Minimal>::new(
        Arc::new(schedule()),
        whole.clone(),
        Metrics::new(&mut registry),
    );
    (api.router(), whole, pk, registry)
}

/// Serves `app` on a loopback port; returns its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let bytes = resp.bytes().await.unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, v)
}

fn post(url: &str, path: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body)
}

fn get(url: &str, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().get(format!("{url}{path}"))
}

#[tokio::test]
async fn http_api_signs_lists_keys_and_refuses_bad_requests_without_stopping() {
    let (app, whole, pk, registry) = app(false);
    let url = serve(app).await;
    let (s, v) = call(get(&url, "/upcheck")).await;
    assert_eq!((s, v), (StatusCode::OK, json!({"status": "OK"})));
    let (s, v) = call(get(&url, "/api/v1/eth2/publicKeys")).await;
    assert_eq!((s, v), (StatusCode::OK, json!([pk.to_string()])));

    let path = format!("/api/v1/eth2/sign/{pk}");
    let body = request("ATTESTATION");
    let (s, v) = call(post(&url, &path, body.to_string())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let sig: BlsSignature = v["signature"].as_str().unwrap().parse().unwrap();
    let root: Root = body["signingRoot"].as_str().unwrap().parse().unwrap();
    let pkey = crate::keys::tbls::PublicKey::from_bytes(&pk.0).unwrap();
    let sig = crate::keys::tbls::Signature::from_bytes(&sig.0).unwrap();
    assert!(crate::keys::tbls::verify(&pkey, &root.0, &sig));

    // Plain text when asked for.
    let (s, v) = call(post(&url, &path, body.to_string()).header("accept", "text/plain")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.as_str().unwrap().starts_with("0x"), "{v}");

    // Refusals: a key not served (404), a malformed key (400), a malformed body, a forged
    // root (400) — none reaches the signer.
    let other = BlsPubkey(
        crate::keys::interop::interop_secret(3)
            .sk_to_pk()
            .to_bytes(),
    );
    let (s, v) = call(post(
        &url,
        &format!("/api/v1/eth2/sign/{other}"),
        body.to_string(),
    ))
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["message"].as_str().unwrap().contains(&other.to_string()));
    let (s, v) = call(post(&url, "/api/v1/eth2/sign/0x1234", body.to_string())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("path parameter `identifier`"));
    let (s, v) = call(post(&url, &path, "{\"type\":\"ATTESTATION\"")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().starts_with("body:"), "{v}");
    let mut forged = body.clone();
    forged["signingRoot"] = json!(format!("0x{}", "cd".repeat(32)));
    let (s, v) = call(post(&url, &path, forged.to_string())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["code"], 400);
    assert!(
        v["message"].as_str().unwrap().starts_with("signingRoot:"),
        "{v}"
    );
    let mut unknown = body.clone();
    unknown["type"] = json!("DEPOSIT");
    let (s, v) = call(post(&url, &path, unknown.to_string())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("DEPOSIT"), "{v}");
    assert_eq!(
        whole.calls.load(Ordering::SeqCst),
        2,
        "only the two good requests were signed"
    );

    // Still serving.
    let (s, _) = call(post(&url, &path, request("AGGREGATION_SLOT").to_string())).await;
    assert_eq!(s, StatusCode::OK);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "remote_sign_requests_total{type=\"attestation\",outcome=\"ok\"} 2",
        "remote_sign_requests_total{type=\"attestation\",outcome=\"wrong_signing_root\"} 1",
        "remote_sign_requests_total{type=\"unknown\",outcome=\"unknown_key\"} 1",
        "remote_sign_requests_total{type=\"unknown\",outcome=\"unsupported_type\"} 1",
        "remote_sign_duration_seconds_count{type=\"aggregation_slot\"} 1",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[tokio::test]
async fn objects_the_signer_refuses_answer_412() {
    let (app, whole, pk, _registry) = app(true);
    let url = serve(app).await;
    let (s, v) = call(post(
        &url,
        &format!("/api/v1/eth2/sign/{pk}"),
        request("ATTESTATION").to_string(),
    ))
    .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert!(
        v["message"].as_str().unwrap().starts_with("attestation:"),
        "{v}"
    );
    assert_eq!(whole.calls.load(Ordering::SeqCst), 1);
}
