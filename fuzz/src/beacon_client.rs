//! Beacon-node answers: dvnode's real [`BeaconClient`] calls an endpoint of a beacon node on
//! loopback that answers with the input (status, body in chunks), through reqwest and every
//! parser the client applies (JSON with field paths, Lodestar 1.5.1 quirks: committees and
//! proposer duties normalised, Altair blocks out of versioned answers).
//!
//! Input: `endpoint byte, status byte, pieces byte` (see [`Canned::chunked`]) + body.
//!
//! Properties: no panic; errors render (they name the endpoint and carry a bounded snippet).

use dvnode::eth::beacon::{BlockId, StateId, ValidatorId};
use dvnode::eth::types::{BlsSignature, Graffiti};

use crate::fakebn::{self, Canned};
use crate::fixture::P;

/// Endpoints, in input-byte order.
pub const ENDPOINTS: &[&str] = &[
    "genesis",
    "spec",
    "fork_schedule",
    "fork",
    "node_syncing",
    "node_version",
    "attester_duties",
    "proposer_duties",
    "sync_duties",
    "attestation_data",
    "produce_block",
    "block",
    "header",
    "state_validators",
    "sync_committee",
    "committees",
];

fn done<T: std::fmt::Debug>(r: Result<T, dvnode::eth::beacon::BeaconError>) {
    match r {
        Ok(v) => {
            let _ = format!("{v:?}");
        }
        Err(e) => {
            let _ = (e.to_string(), e.status(), e.is_not_found());
        }
    }
}

/// One execution.
pub fn run(data: &[u8]) {
    let [endpoint, status, chunk, ref body @ ..] = *data else {
        return;
    };
    fakebn::get().set(Canned {
        status: Canned::status_from(status),
        content_type: "application/json",
        chunks: Canned::chunked(body, chunk),
    });
    let c = fakebn::client();
    let reveal = BlsSignature::infinity();
    let graffiti = Graffiti::default();
    fakebn::runtime().block_on(async {
        match usize::from(endpoint) % ENDPOINTS.len() {
            0 => done(c.genesis().await),
            1 => done(c.spec().await),
            2 => done(c.fork_schedule().await),
            3 => done(c.fork(StateId::Head).await),
            4 => done(c.node_syncing().await),
            5 => done(c.node_version().await),
            6 => done(c.attester_duties(3, &[1, 2, 3]).await),
            7 => done(c.proposer_duties::<P>(3).await),
            8 => done(c.sync_duties(3, &[1, 2]).await),
            9 => done(c.attestation_data(24, 0).await),
            10 => done(c.produce_block::<P>(24, &reveal, Some(&graffiti)).await),
            11 => done(c.block::<P>(BlockId::Head).await),
            12 => done(c.header(BlockId::Slot(20)).await),
            13 => done(
                c.state_validators(StateId::Head, &[ValidatorId::Index(1)])
                    .await,
            ),
            14 => done(c.sync_committee(StateId::Head, 3).await),
            _ => done(c.committees::<P>(StateId::Head, 3).await),
        }
    });
}

fn seed(endpoint: &str, body: &[u8]) -> Vec<u8> {
    let i = ENDPOINTS
        .iter()
        .position(|e| *e == endpoint)
        .expect("endpoint") as u8;
    [&[i, 0, 0][..], body].concat()
}

/// The endpoint of [`ENDPOINTS`] a request path of the client calls.
fn endpoint_of(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or_default();
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match seg[..] {
        ["eth", "v1", "beacon", "genesis"] => "genesis",
        ["eth", "v1", "config", "spec"] => "spec",
        ["eth", "v1", "config", "fork_schedule"] => "fork_schedule",
        ["eth", "v1", "beacon", "states", _, "fork"] => "fork",
        ["eth", "v1", "node", "syncing"] => "node_syncing",
        ["eth", "v1", "node", "version"] => "node_version",
        ["eth", "v1", "validator", "duties", "attester", _] => "attester_duties",
        ["eth", "v1", "validator", "duties", "proposer", _] => "proposer_duties",
        ["eth", "v1", "validator", "duties", "sync", _] => "sync_duties",
        ["eth", "v1", "validator", "attestation_data"] => "attestation_data",
        ["eth", "v2", "validator", "blocks", _] => "produce_block",
        ["eth", "v2", "beacon", "blocks", _] => "block",
        ["eth", "v1", "beacon", "headers", _] => "header",
        ["eth", "v1", "beacon", "states", _, "validators", ..] => "state_validators",
        ["eth", "v1", "beacon", "states", _, "sync_committees"] => "sync_committee",
        ["eth", "v1", "beacon", "states", _, "committees"] => "committees",
        _ => return None,
    })
}

/// Answers of a real Lodestar 1.5.1 beacon node: the node's test data and the answers
/// recorded in an end-to-end run ([`crate::recorded`]).
pub fn seeds() -> Vec<Vec<u8>> {
    let testdata = crate::repo_root().join("node/src/eth/testdata");
    let read = |f: &str| std::fs::read(testdata.join(f)).unwrap_or_default();
    let recorded = crate::recorded::beacon_node().into_iter().filter_map(|e| {
        let endpoint = endpoint_of(&e.path)?;
        let mut s = seed(endpoint, e.response_body.as_bytes());
        s[1] = if e.status == 200 { 0 } else { 5 };
        Some(s)
    });
    let mut out = vec![
        seed("spec", &read("spec.json")),
        seed("block", &read("block20.json")),
        seed("header", &read("header20.json")),
        seed(
            "genesis",
            br#"{"data":{"genesis_time":"1796587614","genesis_validators_root":"0x05d79a31a8e69ecd78114c50ce73116be33027d8431b82fff6c0b3cd9c2cbb1f","genesis_fork_version":"0x01000001"}}"#,
        ),
        seed("node_version", br#"{"data":{"version":"Lodestar/v1.5.1/56ac3a2"}}"#),
        seed(
            "node_syncing",
            br#"{"data":{"head_slot":"20","sync_distance":"0","is_syncing":false,"is_optimistic":false}}"#,
        ),
    ];
    out.extend(recorded);
    out
}
