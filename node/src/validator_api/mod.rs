//! The validator API: the beacon API an unmodified validator client (VC) talks to.
//!
//! The VC holds only this node's key shares and treats dvnode as its beacon node. The API:
//! - maps pubkeys between the VC's world (share pubkeys) and the beacon node's (DV pubkeys) on
//!   validator lookups and duties;
//! - hands the duty endpoints (attestation data, block production, submissions, aggregation) to
//!   a [`DutyBackend`], the duty workflow;
//! - proxies everything else to the beacon node unchanged, event streams included.
//!
//! ```no_run
//! # async fn run(cluster: dvnode::cluster::Cluster) -> anyhow::Result<()> {
//! use std::{sync::Arc, time::Duration};
//! use dvnode::validator_api::{PassthroughBackend, ValidatorApi, ValidatorApiConfig};
//!
//! let config = ValidatorApiConfig::new("http://127.0.0.1:5052", &cluster, 1)?;
//! let backend = Arc::new(PassthroughBackend::new(&config.bn_url, Duration::from_secs(10))?);
//! ValidatorApi::new(config, backend)?
//!     .serve(async { tokio::signal::ctrl_c().await.ok(); })
//!     .await
//! # }
//! ```

mod backend;
mod config;
mod error;
mod handlers;
mod metrics;
mod pubkeys;
mod upstream;

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use axum::{
    routing::{get, post},
    Router,
};
use tokio::{net::TcpListener, sync::watch};

pub use backend::{
    unsupported, DutyBackend, PassthroughBackend, ProducedBlock, NEEDS_DV_SELECTIONS,
};
pub use config::{ValidatorApiConfig, DEFAULT_LISTEN};
pub use error::{ApiError, BackendError};
pub use metrics::Metrics;
pub use pubkeys::PubkeyMap;

use crate::eth::beacon::Endpoints;
use handlers::Inner;
use upstream::Upstream;

/// How long open streams may take to finish after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The validator API server.
pub struct ValidatorApi {
    config: ValidatorApiConfig,
    bn: Upstream,
    backend: Arc<dyn DutyBackend>,
    metrics: Metrics,
    shutdown_tx: watch::Sender<bool>,
    extra: Router,
}

impl ValidatorApi {
    /// A validator API with unregistered metrics (see [`ValidatorApi::with_metrics`]).
    pub fn new(config: ValidatorApiConfig, backend: Arc<dyn DutyBackend>) -> Result<ValidatorApi> {
        ensure!(
            config.share_index >= 1,
            "share index must be at least 1 (share indices are 1-based)"
        );
        ensure!(
            config.max_request_body > 0,
            "max_request_body must be positive"
        );
        let bn = Upstream::new(&config.bn_url, config.connect_timeout, config.bn_timeout)?;
        Ok(ValidatorApi {
            config,
            bn,
            backend,
            metrics: Metrics::default(),
            shutdown_tx: watch::channel(false).0,
            extra: Router::new(),
        })
    }

    /// Serves `routes` on the same address too (the Web3Signer API in remote-signer mode).
    /// They must not overlap the beacon API paths.
    pub fn with_routes(mut self, routes: Router) -> ValidatorApi {
        self.extra = self.extra.merge(routes);
        self
    }

    /// Proxies to `endpoints` instead of the config's `bn_url`, sharing their health record
    /// with the node's own beacon client (one view of which beacon node is up).
    pub fn with_beacon_endpoints(mut self, endpoints: Endpoints) -> Result<ValidatorApi> {
        self.bn = Upstream::with_endpoints(
            endpoints,
            self.config.connect_timeout,
            self.config.bn_timeout,
        )?;
        Ok(self)
    }

    /// Uses `metrics` (e.g. from [`Metrics::new`] on the node's registry).
    pub fn with_metrics(mut self, metrics: Metrics) -> ValidatorApi {
        self.metrics = metrics;
        self
    }

    /// The metrics this API updates.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The axum router: intercepted routes, everything else proxied. Proxied streams end when
    /// the server of [`ValidatorApi::bind`] shuts down.
    pub fn router(&self) -> Router {
        use handlers as h;
        let state = Arc::new(Inner {
            config: self.config.clone(),
            bn: self.bn.clone(),
            backend: self.backend.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown_tx.subscribe(),
        });
        // Every route falls back to the proxy for other methods (e.g. GET of a pool).
        Router::new()
            .route(
                "/eth/v1/beacon/states/{state_id}/validators",
                get(h::validators_get)
                    .post(h::validators_post)
                    .fallback(h::proxy),
            )
            .route(
                "/eth/v1/beacon/states/{state_id}/validators/{validator_id}",
                get(h::validator_get).fallback(h::proxy),
            )
            .route(
                "/eth/v1/validator/duties/attester/{epoch}",
                post(h::duties).fallback(h::proxy),
            )
            .route(
                "/eth/v1/validator/duties/proposer/{epoch}",
                get(h::duties).fallback(h::proxy),
            )
            .route(
                "/eth/v1/validator/duties/sync/{epoch}",
                post(h::duties).fallback(h::proxy),
            )
            .route(
                "/eth/v1/validator/attestation_data",
                get(h::attestation_data).fallback(h::proxy),
            )
            .route(
                "/eth/v2/validator/blocks/{slot}",
                get(h::produce_block).fallback(h::proxy),
            )
            .route(
                "/eth/v1/beacon/pool/attestations",
                post(h::submit_attestations).fallback(h::proxy),
            )
            .route(
                "/eth/v1/beacon/blocks",
                post(h::submit_block).fallback(h::proxy),
            )
            .route(
                "/eth/v1/beacon/pool/sync_committees",
                post(h::submit_sync_committee_messages).fallback(h::proxy),
            )
            .route(
                "/eth/v1/beacon/pool/voluntary_exits",
                post(h::submit_voluntary_exit).fallback(h::proxy),
            )
            .route(
                "/eth/v1/validator/aggregate_attestation",
                get(h::aggregate_attestation).fallback(h::proxy),
            )
            .route(
                "/eth/v1/validator/sync_committee_contribution",
                get(h::sync_committee_contribution).fallback(h::proxy),
            )
            .route(
                "/eth/v1/validator/aggregate_and_proofs",
                post(h::submit_aggregate_and_proofs).fallback(h::proxy),
            )
            .route(
                "/eth/v1/validator/contribution_and_proofs",
                post(h::submit_contribution_and_proofs).fallback(h::proxy),
            )
            .fallback(h::proxy)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                h::track,
            ))
            .with_state(state)
            .merge(self.extra.clone())
    }

    /// Binds the listen address.
    pub async fn bind(self) -> Result<BoundValidatorApi> {
        let addr = self.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the validator API to {addr}"))?;
        let local_addr = listener.local_addr()?;
        Ok(BoundValidatorApi {
            router: self.router(),
            listener,
            local_addr,
            shutdown_tx: self.shutdown_tx,
        })
    }

    /// Binds and serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        self.bind().await?.serve(shutdown).await
    }
}

/// A validator API bound to its listen address.
pub struct BoundValidatorApi {
    router: Router,
    listener: TcpListener,
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
}

impl BoundValidatorApi {
    /// The bound address (the actual port if the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then ends open streams (event streams included) and
    /// waits up to a few seconds for in-flight requests.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let addr = self.local_addr;
        tracing::info!(%addr, "validator API listening");
        let shutdown_tx = self.shutdown_tx;
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            // Ends proxied streams, so the graceful shutdown does not wait on them forever.
            shutdown_tx.send_replace(true);
            let _ = stopped_tx.send(());
        };
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(signal);
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            res = &mut server => res.context("validator API server")?,
            _ = async {
                if stopped_rx.await.is_ok() {
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(%addr, "validator API: requests still open {SHUTDOWN_GRACE:?} after shutdown, dropping them");
            }
        }
        tracing::info!(%addr, "validator API stopped");
        Ok(())
    }
}
