//! The admin endpoint of the worker and scheduler processes: `/healthz`,
//! `/readyz` (the metadata store answers) and `/metrics`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use ferry_shared::store::Store;
use prometheus::{Registry, TextEncoder};

use crate::Fatal;

#[derive(Clone)]
struct AdminState {
    store: Arc<dyn Store>,
    registry: Registry,
}

/// Serves the admin endpoint until `shutdown` resolves. Port 0 picks a free
/// port, which is logged.
pub async fn serve(
    address: SocketAddr,
    store: Arc<dyn Store>,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Fatal> {
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { store, registry });
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Fatal(format!("cannot listen on {address} (FERRY_ADMIN_LISTEN): {e}")))?;
    let bound = listener.local_addr().map_err(|e| Fatal(e.to_string()))?;
    tracing::info!(address = %bound, "admin endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Fatal(format!("the admin endpoint failed: {e}")))
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"}))),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "service_unavailable", "message": error.to_string()})),
        ),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match TextEncoder::new().encode_to_string(&state.registry.gather()) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
