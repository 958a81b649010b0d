//! HTTP metrics of the API role: request count and latency by route
//! template (never a raw path), method (the standard ones, else `other`)
//! and status; `mode: "sync"` waits; open event streams.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The API's metric families, registered in the process registry.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    /// `ferry_api_sync_waits_total{outcome}`: `completed` (answered 200)
    /// or `timeout` (answered 202).
    sync_waits: IntCounterVec,
    sync_wait_duration: Histogram,
    /// `ferry_api_sse_streams`: event streams open now.
    sse_open: IntGauge,
    sse_opened: IntCounter,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let labels = ["method", "route", "status"];
        let requests = IntCounterVec::new(
            Opts::new(
                "ferry_http_requests_total",
                "HTTP requests answered, by route template, method and status",
            ),
            &labels,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ferry_http_request_duration_seconds",
                "HTTP request latency in seconds",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &labels,
        )?;
        let sync_waits = IntCounterVec::new(
            Opts::new(
                "ferry_api_sync_waits_total",
                "Executions a mode: sync request waited for, by outcome (completed, timeout)",
            ),
            &["outcome"],
        )?;
        let sync_wait_duration = Histogram::with_opts(
            HistogramOpts::new(
                "ferry_api_sync_wait_duration_seconds",
                "Time a mode: sync request waited for its execution",
            )
            .buckets(vec![
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
        )?;
        let sse_open = IntGauge::new(
            "ferry_api_sse_streams",
            "Execution event streams (SSE) open now on this API process",
        )?;
        let sse_opened = IntCounter::new(
            "ferry_api_sse_streams_opened_total",
            "Execution event streams (SSE) opened on this API process",
        )?;
        for outcome in ["completed", "timeout"] {
            sync_waits.with_label_values(&[outcome]);
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(sync_waits.clone()))?;
        registry.register(Box::new(sync_wait_duration.clone()))?;
        registry.register(Box::new(sse_open.clone()))?;
        registry.register(Box::new(sse_opened.clone()))?;
        Ok(HttpMetrics {
            requests,
            duration,
            sync_waits,
            sync_wait_duration,
            sse_open,
            sse_opened,
        })
    }

    /// A `mode: "sync"` wait that began at `started` ended; `completed`
    /// when the execution was terminal by then.
    pub fn sync_waited(&self, completed: bool, started: Instant) {
        let outcome = if completed { "completed" } else { "timeout" };
        self.sync_waits.with_label_values(&[outcome]).inc();
        self.sync_wait_duration.observe(started.elapsed().as_secs_f64());
    }

    /// An event stream opens; it counts as open until the guard drops.
    pub fn sse_stream(&self) -> OpenStream {
        self.sse_opened.inc();
        self.sse_open.inc();
        OpenStream(self.sse_open.clone())
    }
}

/// An open event stream, counted in `ferry_api_sse_streams` until dropped.
pub struct OpenStream(IntGauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `method` label: the standard methods by name, anything else (an
/// extension method a client made up) as `other`, so that no client can
/// grow the number of series.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Middleware recording one observation per request.
pub async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [method, route.as_str(), status.as_str()];
    metrics.requests.with_label_values(&labels).inc();
    metrics
        .duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}
