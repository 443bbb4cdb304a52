//! The metrics and health endpoints: `GET /metrics` (Prometheus text) and `GET /health`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::{extract::State, http::header, response::IntoResponse, routing::get, Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;

use crate::p2p::NetworkHandle;

struct Inner {
    registry: Registry,
    network: NetworkHandle,
}

/// A bound metrics server.
pub struct MetricsServer {
    listener: TcpListener,
    router: Router,
}

async fn metrics(State(s): State<Arc<Inner>>) -> impl IntoResponse {
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        text = format!("# encoding failed: {e}\n");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn health(State(s): State<Arc<Inner>>) -> impl IntoResponse {
    let peers = s.network.connected_peers();
    Json(json!({
        "status": "ok",
        "node_index": s.network.index(),
        "peers_connected": peers,
        "nodes": s.network.nodes(),
    }))
}

/// Binds the server on `addr`, serving `registry` and the p2p state of `network`.
pub async fn bind(addr: SocketAddr, registry: Registry, network: NetworkHandle) -> Result<MetricsServer> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(Arc::new(Inner { registry, network }));
    Ok(MetricsServer { listener, router })
}

impl MetricsServer {
    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("metrics server")
    }
}
