//! libp2p cluster networking.
//!
//! [`Network::start`] spawns a tokio task owning a libp2p swarm (TCP + noise + yamux, ping for
//! liveness) and returns a [`NetworkHandle`] plus the receiver of verified [`Inbound`]
//! messages.
//!
//! # Peers
//! The cluster is the ordered list of peer ids from the cluster lock; a node's index is its
//! position. Connections from any other peer are closed as soon as the noise handshake reveals
//! its id (before any protocol stream is opened) and counted in `p2p_rejected_peers_total`.
//! Configured addresses are dialed at start; when the last connection to a peer drops or a
//! dial fails, the peer is redialed after `backoff_initial · 2^attempt` (capped at
//! `backoff_max`, jittered into `[d/2, d]`), counted in `p2p_reconnect_attempts_total{peer}`.
//! Every connection is pinged each `ping_interval`; a connection with no answered ping for
//! `ping_timeout` is closed (`p2p_dead_connections_total{peer}`) — TCP alone would keep a
//! silently dropped path (partition, frozen peer) open for minutes of retransmission backoff.
//! Dials are bounded by `dial_timeout`. A request lost with its connection, or whose ack timed
//! out, is sent again on the next connection (at most 3 sends in all) while younger than
//! `pending_ttl` (`p2p_messages_resent_total{protocol}`); messages are idempotent, so a
//! duplicate is harmless.
//! `p2p_peer_connected{peer}` and `p2p_ping_rtt_seconds{peer}` report liveness.
//!
//! # Protocols and wire format
//! Three request-response protocols, `/dvlab/qbft/1.0.0` (consensus, frame limit 1 MiB by
//! default), `/dvlab/parsig/2.0.0` (partial signatures, 4 MiB) and `/dvlab/dkg/1.0.0` (the key
//! generation ceremony of `dvnode dkg`, 32 MiB; a running node drops these). Each message is one
//! request on its own stream. A parsig message carries all of a node's new partials of one
//! validator-client request or duty (up to 1,024, `parsig::MAX_PARTIALS_PER_MESSAGE`): version
//! 1.0.0 sent one message per partial, and a slot of 1,000 validators (512 sync committee
//! partials per peer) ran into the request-response limit of 256 concurrent inbound streams
//! per connection (streams beyond it are dropped) and yamux's stream limit.
//!
//! Streams are opened with multistream-select V1Lazy: the dialer proposes the protocol and
//! writes the request at once instead of waiting a round trip for the confirmation, so one
//! message costs one one-way delay (with V1 it cost 1.5 RTT, and 200 ms of path latency kept
//! QBFT from deciding at all).
//!
//! - request: `u32` big-endian length `L`, then `L` bytes of SSZ envelope. If `L` exceeds the
//!   protocol's limit the body is never read: the receiver answers `rejected` and drops the
//!   stream (reason `oversized`); a stream that ends early is `truncated`.
//! - response: one byte, `0` = accepted (verified and delivered), `1` = rejected.
//!
//! The envelope is the SSZ container [`Envelope`]
//! `{ version: uint8, protocol: uint8, sender: uint64, payload: List[uint8], signature:
//! List[uint8] }`, i.e. little-endian fixed part `version (1) | protocol (1) | sender (8) |
//! payload offset (4) | signature offset (4)` followed by the payload bytes and the signature
//! bytes. `version` is 1; `protocol` is 1 for qbft, 2 for parsig and 3 for dkg; `sender` is the sender's
//! node index. `signature` is the sender's p2p key signature ([`libp2p::identity::Keypair::sign`],
//! DER-encoded ECDSA for secp256k1) over the 32-byte digest
//! `sha256("dvlab-p2p-v1" || protocol || payload)`, on the parsig and dkg protocols. On the qbft
//! protocol the envelope signature is empty: every QBFT message body is already signed by the
//! sender's p2p key (it must be, so that justifications can be relayed and checked by third
//! parties), so a second signature would double the ECDSA work on the consensus critical path
//! without adding authenticity; the connection's noise session still authenticates the peer and
//! the sender index is checked against it. A qbft envelope that carries a signature is refused.
//!
//! The receiver checks, in order: SSZ well-formedness (`malformed`), version (`bad_version`),
//! protocol byte against the stream's protocol (`protocol_mismatch`), sender index against the
//! authenticated peer of the connection (`sender_mismatch`) and the signature under the public
//! key inlined in that peer's id (`bad_signature`). Rejected input is dropped, counted in
//! `p2p_dropped_messages_total{protocol,reason}` and logged at debug level; nothing panics.
//!
//! # Sending
//! [`NetworkHandle::send`] and [`NetworkHandle::broadcast`] sign on the caller's task and queue
//! the frame on a bounded queue; delivery is fire-and-forget (failures go to
//! `p2p_send_failures_total{protocol,reason}`). Messages for a disconnected peer are held, up
//! to `pending_per_peer` and `pending_ttl`, and sent when it connects. A message sent to the
//! node's own index is looped back into the local [`Inbound`] channel (`from` = own index)
//! without signing or touching the network, so higher layers can treat every node alike;
//! `broadcast` goes to the *other* nodes only.
//!
//! # Traffic
//! `p2p_message_bytes_sent_total{protocol}` and `p2p_message_bytes_received_total{protocol}`
//! (`qbft`, `parsig`, `dkg`; every series exists from start at 0) count the request frames on
//! the wire — 4-byte length prefix plus SSZ envelope — as the frame codec writes and reads them:
//! a sent frame counts once written and flushed to its stream (not when queued; a re-sent
//! request counts again), a received one with every byte read (frames rejected afterwards
//! included, so `oversized` counts its 4-byte prefix). Between two nodes the sender's sent bytes
//! equal the receiver's received bytes. Loopback messages, acks, multistream-select, noise and
//! yamux overhead are not counted. Message counts are `p2p_messages_sent_total{protocol}`
//! (requests handed to a connection, re-sends included) and
//! `p2p_messages_received_total{protocol}` (verified messages delivered, loopback included).
//!
//! Consensus drivers multiplex duty instances inside the payload: the handle is cheap to clone
//! and can be shared by every instance, with one task demultiplexing the [`Inbound`] stream.
//!
//! [`sign_bytes`] / [`verify_bytes`] expose the same key for application-level signatures
//! (e.g. relayable QBFT justifications).

mod codec;
mod envelope;
pub mod key;
mod metrics;
mod network;
pub mod router;

pub use codec::{Ack, Frame, FrameCodec, FrameError};
pub use envelope::{
    public_key, sign_bytes, verify_bytes, verify_bytes_with_key, Envelope, EnvelopeError, Protocol,
    ENVELOPE_DOMAIN, ENVELOPE_VERSION,
};
pub use metrics::{Metrics, PeerLabel, ProtocolLabel, ReasonLabel};
pub use network::{
    Config, Inbound, Limits, LostPeer, Network, NetworkHandle, SendError, ENVELOPE_OVERHEAD,
};
pub use router::Router;
