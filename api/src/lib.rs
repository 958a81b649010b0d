//! Ferry's HTTP API role: validates, authorizes, writes metadata and (later)
//! enqueues jobs. It never connects to a user's database.
//!
//! [`router`] builds the whole application for a given [`AppState`], so the
//! role can be served on any listener (port 0 in tests).

pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod metrics;
pub mod request_id;
pub mod results;
pub mod routes;
pub mod views;

use std::future::Future;
use std::sync::Arc;

use crate::auth::{JwtSettings, Verifier};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension};
use axum::response::{IntoResponse, Response};
use ferry_shared::Error;
use ferry_shared::queue::RateLimit;
use prometheus::Registry;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::extract::BodyLimit;
use crate::metrics::HttpMetrics;

/// Everything a request handler may use.
#[derive(Clone)]
pub struct AppState {
    /// The store, queue, bus, vault and object store.
    pub backends: Backends,
    pub verifier: Arc<Verifier>,
    pub registry: Registry,
    /// How long `mode: "sync"` waits for an execution to finish.
    pub sync_timeout: std::time::Duration,
    /// Each caller's request budget on `/api` routes (None: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Cap on the body of a JSON or CSV step result page, in bytes.
    pub result_max_bytes: usize,
    /// Bounds on event streams and connection tests.
    pub limits: limits::Limits,
    /// Event streams open now, by user; connection tests running, by org.
    pub(crate) sse_slots: limits::Slots,
    pub(crate) test_slots: limits::Slots,
    /// OAuth clients, endpoints and redirect settings.
    pub oauth: Arc<routes::oauth::OAuthSettings>,
    http_metrics: HttpMetrics,
    /// Set when the process begins to stop: `/readyz` answers 503 while
    /// in-flight requests finish.
    draining: Arc<std::sync::atomic::AtomicBool>,
}

/// The backends the API role talks to.
pub use ferry_shared::backends::Backends;

/// How long `mode: "sync"` executions are waited for, by default.
pub const DEFAULT_SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The largest accepted request body, by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The flags of the HTTP API role (`ferry api`, and the api of `ferry up`).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "api_config")]
pub struct Args {
    /// Address the API listens on.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "FERRY_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// How long `mode: "sync"` executions are waited for before answering
    /// 202 with the running state.
    #[arg(long, env = "FERRY_SYNC_TIMEOUT_SECONDS", default_value_t = DEFAULT_SYNC_TIMEOUT.as_secs())]
    pub sync_timeout_seconds: u64,

    /// Requests a minute each user may make on /api routes, counted across
    /// every API replica sharing the Redis (0 disables the limit). Over it:
    /// 429 `rate_limited` with Retry-After.
    #[arg(long, env = "FERRY_RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,

    /// Requests a user may make at once above the steady rate.
    #[arg(long, env = "FERRY_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,

    /// Largest body of a JSON or CSV step result page, in bytes; a page
    /// that would cross it ends early at a row boundary.
    #[arg(long, env = "FERRY_RESULT_MAX_BYTES", default_value_t = results::DEFAULT_MAX_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub result_max_bytes: u64,

    /// Seconds after which an execution's event stream (SSE) ends cleanly;
    /// a client that still wants events reconnects.
    #[arg(long, env = "FERRY_SSE_MAX_LIFETIME_SECONDS", default_value_t = limits::Limits::default().sse_max_lifetime.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sse_max_lifetime_seconds: u64,

    /// Event streams one user may hold open at once on each API process
    /// (0: no limit). Over it: 429 `rate_limited`.
    #[arg(long, env = "FERRY_SSE_MAX_STREAMS_PER_USER", default_value_t = limits::Limits::default().sse_streams_per_user)]
    pub sse_max_streams_per_user: usize,

    /// Connection tests one organization may run at once on each API
    /// process (0: no limit). Over it: 429 `rate_limited` with Retry-After.
    #[arg(long, env = "FERRY_CONNECTION_TESTS_PER_ORG", default_value_t = limits::Limits::default().connection_tests_per_org)]
    pub connection_tests_per_org: usize,

    /// Seconds a stopping API keeps serving with `/readyz` at 503 before it
    /// stops accepting connections, so that load balancers take it out of
    /// rotation first.
    #[arg(long, env = "FERRY_SHUTDOWN_DRAIN_SECONDS", default_value_t = 0)]
    pub shutdown_drain_seconds: u64,

    /// Seconds a stopping API lets in-flight requests (sync waits, event
    /// streams) finish after it stopped accepting connections; then it
    /// exits, closing them.
    #[arg(long, env = "FERRY_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    #[command(flatten)]
    pub oauth: routes::oauth::OAuthArgs,
}

impl Args {
    /// The per-user request budget, None when disabled.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        (self.rate_limit_per_minute > 0).then_some(RateLimit {
            per_minute: self.rate_limit_per_minute,
            burst: self.rate_limit_burst,
        })
    }

    /// The bounds on event streams and connection tests.
    pub fn limits(&self) -> limits::Limits {
        limits::Limits {
            sse_max_lifetime: std::time::Duration::from_secs(self.sse_max_lifetime_seconds),
            sse_streams_per_user: self.sse_max_streams_per_user,
            connection_tests_per_org: self.connection_tests_per_org,
        }
    }

    /// `state` with this configuration's timeouts and limits.
    pub fn apply(&self, state: AppState) -> AppState {
        state
            .with_sync_timeout(std::time::Duration::from_secs(self.sync_timeout_seconds))
            .with_rate_limit(self.rate_limit())
            .with_result_max_bytes(usize::try_from(self.result_max_bytes).unwrap_or(usize::MAX))
            .with_limits(self.limits())
            .with_oauth(self.oauth.settings(self.listen))
    }
}

/// Everything the API role runs with: its flags, how it verifies tokens,
/// and what its process opened for every role it runs.
pub struct Config {
    pub args: Args,
    pub jwt: JwtSettings,
    pub backends: Backends,
    /// Where the API registers its metrics, and what `/metrics` serves.
    pub registry: Registry,
}

/// Runs the API role as `config` says until `shutdown` resolves: builds
/// the token verifier and the state, listens on `args.listen` and serves
/// [`router`], then finishes the requests in flight. A verifier or state
/// that cannot be built fails with the error's own message.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let Config {
        args,
        jwt,
        backends,
        registry,
    } = config;
    let verifier = Verifier::new(jwt).await.map_err(std::io::Error::other)?;
    let state = AppState::new(backends, Arc::new(verifier), registry).map_err(std::io::Error::other)?;
    run_with(&args, state, shutdown).await
}

/// [`run`] over a state built by hand: applies `args` to `state`, listens
/// on `args.listen` and serves [`router`] until `shutdown` resolves.
pub async fn run_with(
    args: &Args,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let draining = state.draining.clone();
    let app = router(
        args.apply(state),
        &ApiConfig {
            max_body_bytes: args.max_body_bytes,
        },
    );
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "api listening");
    let drain = Drain {
        flag: draining,
        delay: std::time::Duration::from_secs(args.shutdown_drain_seconds),
        grace: std::time::Duration::from_secs(args.shutdown_grace_seconds),
    };
    serve_draining(listener, app, shutdown, drain)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("the api server failed: {e}")))
}

impl AppState {
    /// Builds the state and registers the API's metrics in `registry`.
    pub fn new(
        backends: Backends,
        verifier: Arc<Verifier>,
        registry: Registry,
    ) -> ferry_shared::Result<Self> {
        let http_metrics = HttpMetrics::register(&registry).map_err(Error::internal_from)?;
        Ok(AppState {
            backends,
            verifier,
            registry,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            rate_limit: None,
            result_max_bytes: results::DEFAULT_MAX_BYTES,
            limits: limits::Limits::default(),
            sse_slots: limits::Slots::default(),
            test_slots: limits::Slots::default(),
            oauth: Arc::default(),
            http_metrics,
            draining: Arc::default(),
        })
    }

    /// Whether the process is stopping (`/readyz` then answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How [`serve_draining`] stops a server of this state: unready at
    /// once, serving for `delay`, then `grace` for the requests in flight.
    pub fn drain(&self, delay: std::time::Duration, grace: std::time::Duration) -> Drain {
        Drain {
            flag: self.draining.clone(),
            delay,
            grace,
        }
    }

    /// Sets the OAuth clients, endpoints and redirect settings.
    pub fn with_oauth(mut self, settings: routes::oauth::OAuthSettings) -> Self {
        self.oauth = Arc::new(settings);
        self
    }

    /// Sets the bounds on event streams and connection tests.
    pub fn with_limits(mut self, limits: limits::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Limits each caller (user of an organization) to `limit` across every
    /// API replica sharing the bus; None turns the limit off (the default).
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Sets the cap on the body of a JSON or CSV step result page (default
    /// 64 MiB); a page stops at a row boundary before it.
    pub fn with_result_max_bytes(mut self, max_bytes: usize) -> Self {
        self.result_max_bytes = max_bytes;
        self
    }

    /// Sets how long `mode: "sync"` waits (default 300 s).
    pub fn with_sync_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.sync_timeout = timeout;
        self
    }
}

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(base_document())
        .merge(routes::health::router())
        .merge(routes::projects::router())
        .merge(routes::steps::router())
        .merge(routes::connectors::router())
        .merge(routes::permissions::router())
        .merge(routes::executions::router())
        .merge(routes::api_keys::router())
        .merge(routes::webhooks::router())
        .merge(routes::oauth::router())
}

fn base_document() -> OpenApi {
    let mut doc = utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("Ferry API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(description()))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    let mut bearer = Http::new(HttpAuthScheme::Bearer);
    bearer.bearer_format = Some("JWT".into());
    components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    // Every operation requires the bearer token unless it says otherwise
    // (`security(())`: the health, metrics and OAuth callback routes).
    doc.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    doc
}

/// The document's description: the contract choices, then every connector
/// type's help text under an anchor its `documentation_url` points to.
fn description() -> String {
    let mut text = include_str!("../openapi-description.md").to_owned();
    text.push_str("\n## Connector types\n");
    for t in ferry_shared::connectors::registry() {
        text.push_str(&format!(
            "\n### <a id=\"connector-{id}\"></a>{name} (`{id}`, {auth})\n\n{doc}\n",
            id = t.type_id,
            name = t.name,
            auth = t.auth_type.as_str(),
            doc = t.documentation
        ));
    }
    text
}

/// The OpenAPI 3.1 document of every route.
pub fn openapi() -> OpenApi {
    api_routes().into_openapi()
}

/// The whole HTTP application: routes, `/docs`, `/api/openapi.json`, error
/// fallbacks, and the request-hygiene layers.
pub fn router(state: AppState, config: &ApiConfig) -> Router {
    let (routes, document) = api_routes().split_for_parts();
    let limit = config.max_body_bytes;
    routes
        .merge(SwaggerUi::new("/docs").url("/api/openapi.json", document))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(BodyLimit(limit)))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(request_id::scope))
        .layer(axum::middleware::from_fn_with_state(state.http_metrics.clone(), metrics::track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    let request_id = request
                        .headers()
                        .get(request_id::HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(request_id::MakeUlid))
        .layer(axum::middleware::from_fn(request_id::sanitize))
        .with_state(state)
}

async fn route_not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::Domain(Error::internal("a request handler panicked")).into_response()
}

/// Renders a registry in the Prometheus text format.
pub fn render_metrics(registry: &Registry) -> Result<String, prometheus::Error> {
    ferry_admin::render(registry)
}

/// How a stopping API drains (see [`serve_draining`]).
#[derive(Debug, Clone)]
pub struct Drain {
    /// Set at shutdown: `/readyz` answers 503 from then on.
    pub flag: Arc<std::sync::atomic::AtomicBool>,
    /// How long the API keeps accepting requests, unready, first.
    pub delay: std::time::Duration,
    /// How long in-flight requests then get before they are closed.
    pub grace: std::time::Duration,
}

/// Serves like [`serve`], stopping in three moves when `shutdown`
/// resolves: readiness turns to 503 at once while requests are still
/// served for `drain.delay`; then no new connection is accepted and the
/// requests in flight get `drain.grace` to finish; then it returns even if
/// some still run (a long sync wait, an event stream), and the process's
/// exit closes them.
pub async fn serve_draining(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> std::io::Result<()> {
    let (closing, mut closed) = tokio::sync::watch::channel(false);
    let graceful = {
        async move {
            shutdown.await;
            drain.flag.store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                delay_ms = u64::try_from(drain.delay.as_millis()).unwrap_or(u64::MAX),
                "api draining: readiness answers 503"
            );
            tokio::time::sleep(drain.delay).await;
            tracing::info!("api stops accepting connections; in-flight requests finish");
            let _ = closing.send(true);
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    tokio::select! {
        result = server => result,
        () = async {
            if closed.wait_for(|closed| *closed).await.is_err() {
                return std::future::pending().await;
            }
            tokio::time::sleep(drain.grace).await;
        } => {
            tracing::warn!("requests still in flight after the shutdown grace period are abandoned");
            Ok(())
        }
    }
}

/// Serves the application on `listener` until `shutdown` resolves, then
/// finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
