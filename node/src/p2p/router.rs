//! Splits the network's single [`Inbound`] receiver into one receiver per [`Protocol`], so that
//! independent components (the consensus driver, the partial signature exchange) each consume
//! their own stream.
//!
//! [`Router::spawn`] starts a small task that forwards each message to the channel of its
//! protocol. A full channel does not block the other protocol: the message is dropped and
//! counted in `p2p_dropped_messages_total{protocol, reason="router_queue_full"}`; messages for a
//! protocol whose receiver was dropped are counted with `reason="no_consumer"`. The task ends
//! when the network's receiver closes (network shut down) or both receivers are dropped.

use tokio::{
    sync::mpsc::{self, error::TrySendError},
    task::JoinHandle,
};
use tracing::debug;

use super::{Inbound, Metrics, Protocol};

/// The per-protocol receivers produced by [`Router::spawn`].
#[derive(Debug)]
pub struct Router {
    /// Messages of [`Protocol::Qbft`].
    pub qbft: mpsc::Receiver<Inbound>,
    /// Messages of [`Protocol::Parsig`].
    pub parsig: mpsc::Receiver<Inbound>,
    /// The forwarding task.
    pub task: JoinHandle<()>,
}

impl Router {
    /// Spawns the forwarding task reading `inbound`; each protocol channel holds up to
    /// `capacity` messages. Drops are counted in `metrics` (the network's metric families).
    /// Must be called within a tokio runtime.
    pub fn spawn(inbound: mpsc::Receiver<Inbound>, capacity: usize, metrics: Metrics) -> Self {
        let (qbft_tx, qbft) = mpsc::channel(capacity.max(1));
        let (parsig_tx, parsig) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(forward(inbound, qbft_tx, parsig_tx, metrics));
        Self { qbft, parsig, task }
    }
}

async fn forward(
    mut inbound: mpsc::Receiver<Inbound>,
    qbft: mpsc::Sender<Inbound>,
    parsig: mpsc::Sender<Inbound>,
    metrics: Metrics,
) {
    while let Some(m) = inbound.recv().await {
        let protocol = m.protocol;
        let tx = match protocol {
            Protocol::Qbft => &qbft,
            Protocol::Parsig => &parsig,
            // The DKG has its own process (`dvnode dkg`); a running node takes no part.
            Protocol::Dkg => {
                metrics.dropped(protocol.label(), "no_consumer");
                continue;
            }
        };
        match tx.try_send(m) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                metrics.dropped(protocol.label(), "router_queue_full");
                debug!(from = m.from, %protocol, "router queue full, message dropped");
            }
            Err(TrySendError::Closed(_)) => {
                metrics.dropped(protocol.label(), "no_consumer");
                if qbft.is_closed() && parsig.is_closed() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    fn msg(protocol: Protocol, byte: u8) -> Inbound {
        Inbound {
            from: 1,
            protocol,
            payload: vec![byte],
        }
    }

    #[tokio::test]
    async fn splits_by_protocol_and_counts_drops() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let (tx, rx) = mpsc::channel(16);
        let mut router = Router::spawn(rx, 2, metrics);
        tx.send(msg(Protocol::Qbft, 1)).await.unwrap();
        tx.send(msg(Protocol::Parsig, 2)).await.unwrap();
        tx.send(msg(Protocol::Qbft, 3)).await.unwrap();
        // The qbft channel (capacity 2) is now full: the next qbft message is dropped, while
        // parsig traffic still flows.
        tx.send(msg(Protocol::Qbft, 4)).await.unwrap();
        tx.send(msg(Protocol::Parsig, 5)).await.unwrap();
        // Forwarding is in order: once parsig 5 is out, qbft 4 has been handled.
        assert_eq!(router.parsig.recv().await.unwrap().payload, [2]);
        assert_eq!(router.parsig.recv().await.unwrap().payload, [5]);
        assert_eq!(router.qbft.recv().await.unwrap().payload, [1]);
        assert_eq!(router.qbft.recv().await.unwrap().payload, [3]);
        assert!(router.qbft.try_recv().is_err());

        drop(router.parsig);
        tx.send(msg(Protocol::Parsig, 6)).await.unwrap();
        tx.send(msg(Protocol::Qbft, 7)).await.unwrap();
        assert_eq!(router.qbft.recv().await.unwrap().payload, [7]);
        drop(tx);
        assert!(router.qbft.recv().await.is_none(), "closes with the input");
        router.task.await.unwrap();

        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"p2p_dropped_messages_total{protocol="qbft",reason="router_queue_full"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"p2p_dropped_messages_total{protocol="parsig",reason="no_consumer"} 1"#
            ),
            "{text}"
        );
    }
}
