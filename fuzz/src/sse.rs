//! Beacon-node event streams: `GET /eth/v1/events` through dvnode's real client
//! ([`BeaconClient::events`]): the server-sent-events framing of a body that arrives in
//! arbitrary chunks, and the decoding of every event (`head`, `block`, `attestation`,
//! `voluntary_exit`, `finalized_checkpoint`, `chain_reorg`, others kept as JSON).
//!
//! Input: `pieces byte` (see [`Canned::chunked`]) + the body of the stream.
//!
//! Properties: no panic; the stream ends when the body ends; each undecodable event is an
//! error item that names the endpoint, and the stream goes on.

use dvnode::eth::beacon::{BeaconEvent, EventTopic};
use futures::StreamExt;

use crate::fakebn::{self, Canned};
use crate::fixture::P;

const TOPICS: [EventTopic; 7] = [
    EventTopic::Head,
    EventTopic::Block,
    EventTopic::Attestation,
    EventTopic::VoluntaryExit,
    EventTopic::FinalizedCheckpoint,
    EventTopic::ChainReorg,
    EventTopic::ContributionAndProof,
];

/// One execution.
pub fn run(data: &[u8]) {
    let Some((&chunk, body)) = data.split_first() else {
        return;
    };
    fakebn::get().set(Canned {
        status: axum::http::StatusCode::OK,
        content_type: "text/event-stream",
        chunks: Canned::chunked(body, chunk),
    });
    fakebn::runtime().block_on(async {
        let mut stream = fakebn::client()
            .events::<P>(&TOPICS)
            .await
            .expect("the stream opens (status 200)");
        // Each event needs at least a blank line: a body of n bytes yields at most n items.
        let mut items = 0;
        while let Some(item) = stream.next().await {
            items += 1;
            assert!(
                items <= body.len() + 1,
                "more events than the body can hold"
            );
            match item {
                Ok(BeaconEvent::Other { event, data }) => {
                    let _ = (event, data.to_string());
                }
                Ok(e) => {
                    let _ = format!("{e:?}");
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    });
}

/// Streams a real Lodestar 1.5.1 beacon node sent (`node/src/eth/testdata/sse.txt` and the
/// event streams recorded in an end-to-end run, [`crate::recorded`]), whole and in pieces,
/// and events of every decoded kind.
pub fn seeds() -> Vec<Vec<u8>> {
    let sample =
        std::fs::read(crate::repo_root().join("node/src/eth/testdata/sse.txt")).unwrap_or_default();
    let root = format!("0x{}", "ab".repeat(32));
    let extra = format!(
        "event: finalized_checkpoint\ndata: {{\"block\":\"{root}\",\"state\":\"{root}\",\"epoch\":\"2\"}}\n\n\
         event: chain_reorg\ndata: {{\"slot\":\"9\",\"depth\":\"1\",\"old_head_block\":\"{root}\",\"new_head_block\":\"{root}\",\"old_head_state\":\"{root}\",\"new_head_state\":\"{root}\",\"epoch\":\"1\"}}\n\n\
         event: voluntary_exit\ndata: {{\"message\":{{\"epoch\":\"1\",\"validator_index\":\"3\"}},\"signature\":\"0x{sig}\"}}\n\n\
         event: contribution_and_proof\ndata: {{\"a\":1}}\n\n:comment\nid: 7\nretry: 10\n\n",
        sig = "c0".to_owned() + &"00".repeat(95)
    );
    let mut out = vec![
        [&[0u8][..], &sample].concat(),
        [&[7u8][..], &sample].concat(),
        [&[0u8][..], extra.as_bytes()].concat(),
        [&[3u8][..], extra.as_bytes()].concat(),
    ];
    for e in crate::recorded::beacon_node() {
        if e.path.starts_with("/eth/v1/events") {
            out.push([&[0u8][..], e.response_body.as_bytes()].concat());
        }
    }
    out
}
