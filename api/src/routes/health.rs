//! Service endpoints: liveness, readiness and Prometheus metrics. None of
//! them requires authentication.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::views::ErrorBody;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Liveness and readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthStatus {
    #[schema(example = "ok")]
    pub status: String,
}

/// The process is alive.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "Alive", body = HealthStatus)),
    security(()))]
async fn healthz() -> axum::Json<HealthStatus> {
    axum::Json(HealthStatus { status: "ok".into() })
}

/// The process can reach its backends (the metadata store and the queue).
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready", body = HealthStatus),
        (status = 503, description = "A backend is unreachable", body = ErrorBody),
    ),
    security(()))]
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<HealthStatus>, crate::error::ApiError> {
    if state.is_draining() {
        return Err(ferry_shared::Error::Unavailable("the api is shutting down".into()).into());
    }
    state.backends.store.ping().await?;
    state.backends.queue.ping().await?;
    Ok(axum::Json(HealthStatus {
        status: "ready".into(),
    }))
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")),
    security(()))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match crate::render_metrics(&state.registry) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Err(error) => {
            crate::error::ApiError::Domain(ferry_shared::Error::internal_from(error)).into_response()
        }
    }
}
