//! The optional operations listener (`server.listen`): `/healthz`
//! (liveness), `/readyz` (readiness) and `/metrics` (Prometheus text
//! format). Off unless configured. Knows HTTP, [`Status`] and [`Metrics`];
//! nothing of events or Pub/Sub.

use super::health::Status;
use super::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::sync::Arc;

#[derive(Clone)]
struct Shared {
    status: Arc<Status>,
    metrics: Arc<Metrics>,
}

/// The listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on server.listen {listen} (CHATWORKER_SERVER__LISTEN): {source}")]
pub struct ServerError {
    listen: std::net::SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds `listen` now (so that a port in use fails the start), then
/// serves until `shutdown` completes.
pub(crate) async fn start(
    listen: std::net::SocketAddr,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<std::net::SocketAddr, ServerError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError { listen, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError { listen, source })?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(serve_metrics))
        .with_state(Shared { status, metrics });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "operations listener stopped");
        }
    });
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    Ok(addr)
}

fn answer(result: Result<String, String>) -> Response {
    match result {
        Ok(detail) => (StatusCode::OK, format!("{detail}\n")).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn healthz(State(s): State<Shared>) -> Response {
    answer(s.status.liveness())
}

async fn readyz(State(s): State<Shared>) -> Response {
    answer(s.status.readiness())
}

async fn serve_metrics(State(s): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}
