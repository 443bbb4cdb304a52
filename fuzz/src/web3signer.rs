//! Remote-signer mode: Web3Signer requests of a validator client into dvnode's real routes
//! ([`Web3Signer::router`]: `POST /api/v1/eth2/sign/{identifier}`, `GET publicKeys`,
//! `GET /upcheck`) for the chain of the requests a real Lodestar 1.5.1 VC sent
//! (`node/src/web3signer/testdata/lodestar.json`, which also seeds the corpus). The signer
//! behind the routes holds the two whole keys, standing for the cluster's combined signature.
//!
//! Input: `identifier byte` (0, 1: the served keys; 2: a key not served; 3: the raw text of
//! part 0; 4: publicKeys; 5: upcheck) + `identifier NUL body NUL Accept header`.
//!
//! Properties: no panic; a 200 carries a signature by the requested key over the signing root
//! dvnode recomputes from the body, never one over anything else.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use dvnode::eth::signing::ForkSchedule;
use dvnode::eth::types::{BlsPubkey, BlsSignature, Minimal, Root};
use dvnode::keys::{interop, tbls};
use dvnode::web3signer::{check, parse, Metrics, SignError, SignRequest, Signer, Web3Signer};
use serde_json::Value;
use tower::ServiceExt;

type P = Minimal;

fn fixture() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        serde_json::from_str(include_str!(
            "../../node/src/web3signer/testdata/lodestar.json"
        ))
        .expect("lodestar.json")
    })
}

fn schedule() -> Arc<ForkSchedule> {
    static S: OnceLock<Arc<ForkSchedule>> = OnceLock::new();
    S.get_or_init(|| {
        let f = fixture();
        let genesis = serde_json::from_value(f["genesis"].clone()).expect("genesis");
        let spec = serde_json::from_value(f["spec"].clone()).expect("spec");
        Arc::new(ForkSchedule::from_spec(&spec, &genesis).expect("schedule"))
    })
    .clone()
}

/// The interop keys of the recorded requests' pubkeys.
fn keys() -> &'static [(BlsPubkey, tbls::SecretKey)] {
    static K: OnceLock<Vec<(BlsPubkey, tbls::SecretKey)>> = OnceLock::new();
    K.get_or_init(|| {
        let wanted: Vec<BlsPubkey> = fixture()["pubkeys"]
            .as_array()
            .expect("pubkeys")
            .iter()
            .map(|p| p.as_str().expect("pubkey").parse().expect("pubkey hex"))
            .collect();
        let keys: Vec<_> = (0..256)
            .map(interop::interop_secret)
            .map(|sk| (BlsPubkey(sk.sk_to_pk().to_bytes()), sk))
            .filter(|(pk, _)| wanted.contains(pk))
            .collect();
        assert_eq!(
            keys.len(),
            wanted.len(),
            "recorded pubkeys are interop keys"
        );
        keys
    })
}

struct WholeKeys;

#[async_trait]
impl Signer<P> for WholeKeys {
    fn pubkeys(&self) -> Vec<BlsPubkey> {
        keys().iter().map(|(pk, _)| *pk).collect()
    }

    async fn sign(
        &self,
        pubkey: BlsPubkey,
        _req: SignRequest<P>,
        root: Root,
    ) -> Result<BlsSignature, SignError> {
        let (_, sk) = keys()
            .iter()
            .find(|(pk, _)| *pk == pubkey)
            .ok_or_else(|| SignError::unknown_key(format!("{pubkey}")))?;
        Ok(BlsSignature(tbls::sign(sk, &root.0).to_bytes()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(crate::runtime)
}

fn router() -> &'static axum::Router {
    static R: OnceLock<axum::Router> = OnceLock::new();
    R.get_or_init(|| {
        Web3Signer::<P>::new(schedule(), Arc::new(WholeKeys), Metrics::default()).router()
    })
}

/// One execution.
pub fn run(data: &[u8]) {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let [raw_id, body, accept] = crate::parts(rest, 3)[..] else {
        unreachable!()
    };
    let identifier = match choice % 6 {
        c @ (0 | 1) => Some(keys()[usize::from(c)].0.to_string()),
        2 => Some(BlsPubkey(interop::interop_secret(300).sk_to_pk().to_bytes()).to_string()),
        3 => match std::str::from_utf8(raw_id) {
            Ok(s) => Some(s.to_owned()),
            Err(_) => return,
        },
        _ => None,
    };
    let uri = match (&identifier, choice % 6) {
        (Some(id), _) => format!("/api/v1/eth2/sign/{id}"),
        (None, 4) => "/api/v1/eth2/publicKeys".to_owned(),
        _ => "/upcheck".to_owned(),
    };
    let mut req = Request::builder()
        .method(if identifier.is_some() { "POST" } else { "GET" })
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Ok(accept) = std::str::from_utf8(accept) {
        req = req.header(header::ACCEPT, accept);
    }
    let Ok(req) = req.body(Body::from(body.to_vec())) else {
        return;
    };
    let (status, bytes) = runtime().block_on(async {
        let resp = router()
            .clone()
            .oneshot(req)
            .await
            .expect("infallible router");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("response body");
        (status, bytes)
    });
    let Some(id) = identifier else {
        return;
    };
    if status != StatusCode::OK {
        return;
    }
    // A signature was given: it must be the requested key's over the recomputed root.
    // (A raw identifier may be percent-encoded; the router decoded it.)
    let Ok(pubkey) = id.parse::<BlsPubkey>() else {
        return;
    };
    let req = parse::<P>(body).expect("a 200 has a valid body");
    let root = check(&req, &schedule()).expect("a 200 passed the chain checks");
    let text = String::from_utf8(bytes.to_vec()).expect("UTF-8 answer");
    let sig_hex = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["signature"].as_str().map(str::to_owned))
        .unwrap_or(text);
    let sig: BlsSignature = sig_hex.parse().expect("the answer is a signature");
    let sig = tbls::Signature::from_bytes(&sig.0).expect("signature decodes");
    let pk = tbls::PublicKey::from_bytes(&pubkey.0).expect("pubkey");
    assert!(
        tbls::verify(&pk, &root.0, &sig),
        "signed something else than the recomputed root"
    );
}

/// Every request the Lodestar VC sent, for both keys, and the other routes.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, r) in fixture()["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .enumerate()
    {
        let body = serde_json::to_vec(r).expect("JSON");
        let mut s = vec![(i % 2) as u8];
        s.extend(crate::join(&[b"", &body, b"application/json"]));
        out.push(s);
    }
    let mut text = vec![3u8];
    let first = serde_json::to_vec(&fixture()["requests"][2]).expect("JSON");
    text.extend(crate::join(&[
        keys()[0].0.to_string().as_bytes(),
        &first,
        b"text/plain",
    ]));
    out.push(text);
    out.push(vec![4]);
    out.push(vec![5]);
    out
}
