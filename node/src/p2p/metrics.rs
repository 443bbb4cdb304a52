//! Prometheus metrics of the p2p layer.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Label set naming a peer by its peer id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// Base58 peer id.
    pub peer: String,
}

/// Label set naming a protocol (`qbft`, `parsig`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    /// Protocol label.
    pub protocol: String,
}

/// Label set naming a protocol and a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Protocol label.
    pub protocol: String,
    /// Reason label.
    pub reason: String,
}

/// The p2p metric families. Cheap to clone (all clones share the same series), so one
/// `Metrics` can outlive and be reused by successive [`Network`](super::Network) instances.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// `p2p_peer_connected{peer}`: 1 while at least one connection to the peer is open.
    pub peer_connected: Family<PeerLabel, Gauge>,
    /// `p2p_ping_rtt_seconds{peer}`: last ping round-trip time.
    pub ping_rtt_seconds: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    /// `p2p_reconnect_attempts_total{peer}`: redials after a lost connection or failed dial.
    pub reconnect_attempts: Family<PeerLabel, Counter>,
    /// `p2p_rejected_peers_total`: connections from peers outside the cluster, closed.
    pub rejected_peers: Counter,
    /// `p2p_messages_sent_total{protocol}`: requests handed to a connection.
    pub messages_sent: Family<ProtocolLabel, Counter>,
    /// `p2p_messages_received_total{protocol}`: verified messages delivered (incl. loopback).
    pub messages_received: Family<ProtocolLabel, Counter>,
    /// `p2p_dropped_messages_total{protocol,reason}`: inbound messages dropped.
    pub dropped_messages: Family<ReasonLabel, Counter>,
    /// `p2p_send_failures_total{protocol,reason}`: outbound messages that were not delivered.
    pub send_failures: Family<ReasonLabel, Counter>,
    /// `p2p_messages_resent_total{protocol}`: requests sent again after their connection was
    /// lost or their ack timed out.
    pub messages_resent: Family<ProtocolLabel, Counter>,
    /// `p2p_dead_connections_total{peer}`: connections closed because a ping went unanswered.
    pub dead_connections: Family<PeerLabel, Counter>,
    /// `p2p_message_bytes_sent_total{protocol}`: bytes of request frames (4-byte length prefix
    /// plus SSZ envelope) written to peer streams; a frame counts once its write and flush
    /// succeeded, once per send (a re-sent request counts again).
    pub message_bytes_sent: Family<ProtocolLabel, Counter>,
    /// `p2p_message_bytes_received_total{protocol}`: bytes of request frames read from peer
    /// streams (length prefix plus the body bytes read, also of frames then rejected).
    pub message_bytes_received: Family<ProtocolLabel, Counter>,
}

impl Metrics {
    /// Creates the metric families and registers them into `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        registry.register(
            "p2p_peer_connected",
            "Whether a connection to the cluster peer is open (1) or not (0)",
            m.peer_connected.clone(),
        );
        registry.register(
            "p2p_ping_rtt_seconds",
            "Last ping round-trip time to the cluster peer",
            m.ping_rtt_seconds.clone(),
        );
        registry.register(
            "p2p_reconnect_attempts",
            "Redial attempts to a cluster peer after a lost connection or failed dial",
            m.reconnect_attempts.clone(),
        );
        registry.register(
            "p2p_rejected_peers",
            "Connections from peers outside the cluster that were closed",
            m.rejected_peers.clone(),
        );
        registry.register(
            "p2p_messages_sent",
            "Messages handed to a peer connection",
            m.messages_sent.clone(),
        );
        registry.register(
            "p2p_messages_received",
            "Verified inbound messages delivered to the node (including loopback)",
            m.messages_received.clone(),
        );
        registry.register(
            "p2p_dropped_messages",
            "Inbound messages dropped, by reason",
            m.dropped_messages.clone(),
        );
        registry.register(
            "p2p_send_failures",
            "Outbound messages that were not delivered, by reason",
            m.send_failures.clone(),
        );
        registry.register(
            "p2p_messages_resent",
            "Requests sent again after their connection was lost or their ack timed out",
            m.messages_resent.clone(),
        );
        registry.register(
            "p2p_dead_connections",
            "Connections to the cluster peer closed because a ping went unanswered",
            m.dead_connections.clone(),
        );
        registry.register(
            "p2p_message_bytes_sent",
            "Bytes of request frames (length prefix and envelope) written to peer streams",
            m.message_bytes_sent.clone(),
        );
        registry.register(
            "p2p_message_bytes_received",
            "Bytes of request frames (length prefix and envelope) read from peer streams",
            m.message_bytes_received.clone(),
        );
        m
    }

    /// The byte counters of `protocol` (sent, received), created at zero if new: handed to the
    /// protocol's [`FrameCodec`](super::FrameCodec), which counts what it writes and reads.
    pub(crate) fn byte_counters(&self, protocol: &str) -> (Counter, Counter) {
        let label = ProtocolLabel {
            protocol: protocol.to_owned(),
        };
        let sent = self.message_bytes_sent.get_or_create(&label).clone();
        let received = self.message_bytes_received.get_or_create(&label).clone();
        (sent, received)
    }

    pub(crate) fn dropped(&self, protocol: &str, reason: &str) {
        self.dropped_messages
            .get_or_create(&ReasonLabel {
                protocol: protocol.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub(crate) fn send_failed(&self, protocol: &str, reason: &str) {
        self.send_failures
            .get_or_create(&ReasonLabel {
                protocol: protocol.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub(crate) fn resent(&self, protocol: &str) {
        self.messages_resent
            .get_or_create(&ProtocolLabel {
                protocol: protocol.to_owned(),
            })
            .inc();
    }

    pub(crate) fn sent(&self, protocol: &str) {
        self.messages_sent
            .get_or_create(&ProtocolLabel {
                protocol: protocol.to_owned(),
            })
            .inc();
    }

    pub(crate) fn received(&self, protocol: &str) {
        self.messages_received
            .get_or_create(&ProtocolLabel {
                protocol: protocol.to_owned(),
            })
            .inc();
    }
}
