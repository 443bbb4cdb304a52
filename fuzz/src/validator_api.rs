//! The validator API: requests of a validator client into dvnode's real axum router
//! ([`ValidatorApi::router`]) backed by the real duty workflow ([`WorkflowBackend`] over the
//! fixture's duty DB and partial-signature stage, node 0 = share 1), with the beacon node on
//! loopback answering whatever the input says (for the proxied routes and the pubkey-mapped
//! duties and validator queries).
//!
//! Input: `route byte` + `path-or-query NUL body NUL beacon-node answer`, where the answer is
//! `status byte, pieces byte, body`. Routes: the intercepted duty endpoints (attestation
//! data, block production, attestation / block / sync message submissions, the aggregation
//! endpoints), the duties and validator queries the API rewrites, and a raw `METHOD /path`
//! for the transparent proxy.
//!
//! Properties: no panic; the intercepted endpoints never answer 500 (an internal error means a
//! request reached a state the API did not foresee); every response body can be read.
//!
//! The router (with its beacon-node HTTP client and connection pool) is built once per process,
//! as a node builds it once; every execution gets a fresh workflow (duty DB, partial-signature
//! stage, tracker) behind it through [`Fresh`].

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode, Uri};
use dvnode::eth::types::{
    Attestation, BlsPubkey, BlsSignature, SignedBeaconBlockAltair, SyncCommitteeMessage,
};
use dvnode::validator_api::{
    BackendError, DutyBackend, ProducedBlock, PubkeyMap, ValidatorApi, ValidatorApiConfig,
};
use dvnode::vc_backend::WorkflowBackend;
use serde_json::Value;
use tower::ServiceExt;

use crate::fakebn::{self, Canned};
use crate::fixture::{self, P};

/// (method, path template with `{}` for the input's first part, intercepted by dvnode?)
const ROUTES: &[(&str, &str, bool)] = &[
    ("GET", "/eth/v1/validator/attestation_data?{}", true),
    ("GET", "/eth/v2/validator/blocks/{}", true),
    ("POST", "/eth/v1/beacon/pool/attestations", true),
    ("POST", "/eth/v1/beacon/blocks", true),
    ("POST", "/eth/v1/beacon/pool/sync_committees", true),
    ("GET", "/eth/v1/validator/aggregate_attestation?{}", true),
    (
        "GET",
        "/eth/v1/validator/sync_committee_contribution?{}",
        true,
    ),
    ("POST", "/eth/v1/validator/aggregate_and_proofs", true),
    ("POST", "/eth/v1/validator/contribution_and_proofs", true),
    ("POST", "/eth/v1/validator/duties/attester/{}", false),
    ("GET", "/eth/v1/validator/duties/proposer/{}", false),
    ("POST", "/eth/v1/validator/duties/sync/{}", false),
    ("GET", "/eth/v1/beacon/states/{}", false),
    ("POST", "/eth/v1/beacon/states/head/validators", false),
    ("RAW", "{}", false),
];

/// Share 1's public key of DV `i` (what the VC knows the DV as).
pub fn share_pubkey(i: usize) -> BlsPubkey {
    BlsPubkey(fixture::dvs()[i].public_shares[0].to_bytes())
}

fn config() -> ValidatorApiConfig {
    let pubkeys = PubkeyMap::new(fixture::dvs().iter().map(|d| {
        (
            d.public_shares[0],
            dvnode::keys::tbls::PublicKey::from_bytes(&d.pubkey.0).expect("DV pubkey"),
        )
    }))
    .expect("pubkey map");
    ValidatorApiConfig {
        listen: dvnode::validator_api::DEFAULT_LISTEN,
        bn_url: fakebn::get().url.clone(),
        share_index: 1,
        pubkeys,
        connect_timeout: Duration::from_secs(5),
        bn_timeout: Duration::from_secs(5),
        // Requests for undecided duties of future slots wait this long (the rest end at once:
        // their slots have passed): tokio's timer resolution, so that the wait is taken.
        backend_timeout: Duration::from_millis(1),
        max_request_body: 1 << 20,
        max_response_body: 1 << 20,
    }
}

/// The execution's [`WorkflowBackend`], behind the router built once per process: forwards every
/// call, defaults included, to the backend [`run`] installed for the current input.
#[derive(Default)]
pub struct Fresh(Mutex<Option<Arc<WorkflowBackend<P>>>>);

impl Fresh {
    fn set(&self, backend: Option<Arc<WorkflowBackend<P>>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = backend;
    }

    fn get(&self) -> Arc<WorkflowBackend<P>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .expect("a backend for the execution")
    }
}

#[async_trait]
impl DutyBackend for Fresh {
    async fn attestation_data(&self, slot: u64, index: u64) -> Result<Value, BackendError> {
        self.get().attestation_data(slot, index).await
    }

    async fn produce_block(
        &self,
        share: u64,
        slot: u64,
        randao_reveal: String,
        graffiti: Option<String>,
    ) -> Result<ProducedBlock, BackendError> {
        let b = self.get();
        b.produce_block(share, slot, randao_reveal, graffiti).await
    }

    async fn submit_attestations(&self, share: u64, a: Vec<Value>) -> Result<(), BackendError> {
        self.get().submit_attestations(share, a).await
    }

    async fn submit_block(&self, share: u64, block: Value) -> Result<(), BackendError> {
        self.get().submit_block(share, block).await
    }

    async fn submit_sync_committee_messages(
        &self,
        share: u64,
        m: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.get().submit_sync_committee_messages(share, m).await
    }

    async fn submit_voluntary_exit(&self, share: u64, exit: Value) -> Result<(), BackendError> {
        self.get().submit_voluntary_exit(share, exit).await
    }

    async fn aggregate_attestation(&self, slot: u64, root: String) -> Result<Value, BackendError> {
        self.get().aggregate_attestation(slot, root).await
    }

    async fn sync_committee_contribution(
        &self,
        slot: u64,
        subcommittee: u64,
        root: String,
    ) -> Result<Value, BackendError> {
        let b = self.get();
        b.sync_committee_contribution(slot, subcommittee, root)
            .await
    }

    async fn submit_aggregate_and_proofs(
        &self,
        share: u64,
        a: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.get().submit_aggregate_and_proofs(share, a).await
    }

    async fn submit_contribution_and_proofs(
        &self,
        share: u64,
        c: Vec<Value>,
    ) -> Result<(), BackendError> {
        self.get().submit_contribution_and_proofs(share, c).await
    }
}

/// The process's router over [`Fresh`].
fn api() -> &'static (axum::Router, Arc<Fresh>) {
    static API: OnceLock<(axum::Router, Arc<Fresh>)> = OnceLock::new();
    API.get_or_init(|| {
        let fresh = Arc::new(Fresh::default());
        let _guard = fakebn::runtime().enter();
        let api = ValidatorApi::new(config(), fresh.clone()).expect("validator API");
        (api.router(), fresh)
    })
}

fn request(route: u8, target: &[u8], body: &[u8]) -> Option<(Request<Body>, bool)> {
    let (method, template, intercepted) = ROUTES[usize::from(route) % ROUTES.len()];
    let target = std::str::from_utf8(target).ok()?;
    let (method, uri) = if method == "RAW" {
        let (m, path) = target.split_once(' ')?;
        (Method::from_bytes(m.as_bytes()).ok()?, path.to_owned())
    } else {
        (
            Method::from_bytes(method.as_bytes()).ok()?,
            template.replace("{}", target),
        )
    };
    let uri: Uri = uri.parse().ok()?;
    // Only what a server would route: an origin-form target.
    if uri.scheme().is_some() || !uri.path().starts_with('/') {
        return None;
    }
    let mut req = Request::builder().method(method).uri(uri);
    if !body.is_empty() {
        req = req
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len());
    }
    Some((req.body(Body::from(body.to_vec())).ok()?, intercepted))
}

/// One execution.
pub fn run(data: &[u8]) {
    let Some((&route, rest)) = data.split_first() else {
        return;
    };
    let [target, body, bn] = crate::parts(rest, 3)[..] else {
        unreachable!()
    };
    let Some((req, intercepted)) = request(route, target, body) else {
        return;
    };
    let (status, chunk, bn_body) = match bn {
        [s, c, rest @ ..] => (*s, *c, rest),
        _ => (0, 0, &[][..]),
    };
    let bn_status = Canned::status_from(status);
    fakebn::get().set(Canned {
        status: bn_status,
        content_type: "application/json",
        chunks: Canned::chunked(bn_body, chunk),
    });
    let bn_answered = fakebn::get().answered();
    let (router, fresh) = api();
    let wf = fixture::workflow(1);
    fresh.set(Some(Arc::new(WorkflowBackend::new(
        wf.dutydb.clone(),
        wf.parsig.clone(),
        fixture::schedule(),
        wf.tracker.clone(),
    ))));
    fakebn::runtime().block_on(async {
        let resp = router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .expect("reading the response body");
        // A request the intercepted route does not take (e.g. `/eth/v2/validator/blocks/`
        // without a slot) goes to the beacon node through the proxy, which passes the beacon
        // node's 500 on unchanged: only a 500 the beacon node did not send is dvnode's own.
        let proxied_500 = bn_status == StatusCode::INTERNAL_SERVER_ERROR
            && fakebn::get().answered() > bn_answered;
        if intercepted && !proxied_500 {
            assert_ne!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "an intercepted endpoint failed internally: {}",
                String::from_utf8_lossy(&body)
            );
        }
    });
    fresh.set(None);
}

fn route(path: &str) -> u8 {
    ROUTES
        .iter()
        .position(|(_, t, _)| *t == path)
        .expect("route") as u8
}

fn seed(path: &str, target: &str, body: &[u8], bn: &[u8]) -> Vec<u8> {
    let mut s = vec![route(path)];
    s.extend(crate::join(&[target.as_bytes(), body, bn]));
    s
}

/// The VC's requests for the fixture's decided duties, with valid partial signatures of share
/// 1, and the duties queries answered with the DV keys.
pub fn seeds() -> Vec<Vec<u8>> {
    let dv = fixture::dvs();
    let s = fixture::schedule();
    let data = fixture::attestation_data();
    let mut att = Attestation::<P> {
        aggregation_bits: ssz_types::BitList::with_capacity(fixture::COMMITTEE_LENGTH as usize)
            .expect("bits"),
        data,
        signature: fixture::partial(&dv[0], 1, s.attestation_signing_root(&data)),
    };
    att.aggregation_bits
        .set(fixture::committee_position(0) as usize, true)
        .expect("bit");
    let block = fixture::block();
    let signed = SignedBeaconBlockAltair::<P> {
        signature: fixture::partial(&dv[0], 1, s.block_signing_root(&block)),
        message: block,
        extra: Default::default(),
    };
    let sync = SyncCommitteeMessage {
        slot: fixture::SYNC_SLOT,
        beacon_block_root: fixture::SYNC_ROOT,
        validator_index: fixture::validator_index(1),
        signature: fixture::partial(
            &dv[1],
            1,
            s.sync_committee_signing_root(fixture::SYNC_ROOT, fixture::SYNC_SLOT),
        ),
    };
    let randao: BlsSignature = fixture::partial(
        &dv[0],
        1,
        s.randao_signing_root(s.epoch_at_slot(fixture::PROPOSER_SLOT)),
    );
    let json = |v: serde_json::Value| serde_json::to_vec(&v).expect("JSON");
    let duties = serde_json::json!({
        "dependent_root": "0x0000000000000000000000000000000000000000000000000000000000000001",
        "execution_optimistic": false,
        "data": [{"pubkey": dv[0].pubkey, "validator_index": "20", "committee_index": "0",
                  "committee_length": "16", "committees_at_slot": "1",
                  "validator_committee_index": "3", "slot": "1000"},
                 {"pubkey": dv[1].pubkey, "validator_index": "21", "slot": "1001"}]
    });
    let validators = serde_json::json!({"data": [{"index": "20", "balance": "32000000000",
        "status": "active_ongoing", "validator": {"pubkey": dv[0].pubkey,
        "withdrawal_credentials": "0x00", "effective_balance": "32000000000", "slashed": false,
        "activation_eligibility_epoch": "0", "activation_epoch": "0",
        "exit_epoch": "18446744073709551615", "withdrawable_epoch": "18446744073709551615"}}]});
    let ok = |v: &serde_json::Value| [&[0u8, 0][..], v.to_string().as_bytes()].concat();
    let sp = share_pubkey(0).to_string();
    let mut out = vec![
        seed(ROUTES[0].1, "slot=1000&committee_index=0", b"", b""),
        seed(ROUTES[0].1, "slot=1003&committee_index=0", b"", b""),
        seed(
            ROUTES[1].1,
            &format!("1001?randao_reveal={randao}&graffiti=Lodestar-v1.5.1"),
            b"",
            b"",
        ),
        seed(ROUTES[2].1, "", &json(serde_json::json!([att])), b""),
        seed(ROUTES[3].1, "", &json(serde_json::json!(signed)), b""),
        seed(ROUTES[4].1, "", &json(serde_json::json!([sync])), b""),
        seed(
            ROUTES[5].1,
            &format!(
                "slot=1000&attestation_data_root={}",
                dvnode::eth::types::Root::of(&data)
            ),
            b"",
            b"",
        ),
        seed(ROUTES[9].1, "125", br#"["20","21"]"#, &ok(&duties)),
        seed(ROUTES[10].1, "125", b"", &ok(&duties)),
        seed(ROUTES[11].1, "125", br#"["21"]"#, &ok(&duties)),
        seed(
            ROUTES[12].1,
            &format!("head/validators?id={sp},21"),
            b"",
            &ok(&validators),
        ),
        seed(
            ROUTES[12].1,
            &format!("head/validators/{sp}"),
            b"",
            &ok(&validators),
        ),
        seed(
            ROUTES[13].1,
            "",
            format!(r#"{{"ids":["{sp}","20"],"statuses":["active"]}}"#).as_bytes(),
            &ok(&validators),
        ),
        seed(
            ROUTES[14].1,
            "GET /eth/v1/node/version",
            b"",
            b"\0\x05{\"data\":{\"version\":\"Lodestar/v1.5.1\"}}",
        ),
        seed(
            ROUTES[14].1,
            "GET /eth/v1/events?topics=head",
            b"",
            b"\0\x10event: head\ndata: {}\n\n",
        ),
    ];
    // Requests of a real Lodestar VC (recorded, see [`crate::recorded`]) as raw requests,
    // the beacon node answering what dvnode answered.
    for e in crate::recorded::validator_client() {
        let answer = [&[0u8, 0][..], e.response_body.as_bytes()].concat();
        let target = format!("{} {}", e.method, e.path);
        out.push(seed(
            ROUTES[14].1,
            &target,
            e.request_body.as_bytes(),
            &answer,
        ));
    }
    out
}
