//! The admin endpoint of Ferry's long-running roles: `/healthz` (the
//! process answers), `/readyz` (its readiness check passes) and `/metrics`
//! (its registry in the Prometheus text format).
//!
//! It lives in its own small crate so that `shared` stays free of HTTP
//! routing while the worker and the scheduler (and any later role) start
//! the same endpoint: [`serve`] takes a bound listener, so a test serves it
//! on port 0 in-process.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus::{Registry, TextEncoder};
use tokio::net::TcpListener;

/// What `/readyz` asks: Ok when the role can do its work, otherwise a
/// message for the 503 body (no secret may appear in it).
#[derive(Clone)]
pub struct Readiness(Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>);

impl Readiness {
    /// A readiness check running `check` on every `/readyz` request.
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Readiness(Arc::new(move || Box::pin(check())))
    }

    async fn check(&self) -> Result<(), String> {
        (self.0)().await
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Readiness")
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    readiness: Readiness,
}

/// The commit Ferry was built from: `FERRY_BUILD_COMMIT` in the build's
/// environment (the container build passes it), else `unknown`.
pub const BUILD_COMMIT: &str = match option_env!("FERRY_BUILD_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// The registry a role serves on `/metrics`, holding from the start
/// `ferry_build_info{role, version, commit} 1` (the role's own families
/// are registered, with zero values, as it starts).
pub fn registry(role: &str) -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "ferry_build_info",
            "Always 1, labelled with the role this process plays, the Ferry version and the commit it was built from",
        ),
        &["role", "version", "commit"],
    )?;
    registry.register(Box::new(info.clone()))?;
    info.with_label_values(&[role, env!("CARGO_PKG_VERSION"), BUILD_COMMIT])
        .set(1);
    Ok(registry)
}

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, prometheus::Error> {
    TextEncoder::new().encode_to_string(&registry.gather())
}

/// The admin routes: `/healthz`, `/readyz` and `/metrics`.
pub fn router(registry: Registry, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState { registry, readiness })
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "admin endpoint listening");
    }
    axum::serve(listener, router(registry, readiness))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.readiness.check().await {
        Ok(()) => (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"}))).into_response(),
        Err(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "service_unavailable", "message": message})),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    match render(&state.registry) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
