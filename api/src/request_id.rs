//! Request ids: every request gets one (or keeps a well-formed one the
//! caller sent in `x-request-id`), every response carries it, and errors and
//! logs name it.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, RequestId};

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled on this task (`-` outside one).
pub fn current() -> String {
    CURRENT.try_with(Clone::clone).unwrap_or_else(|_| "-".into())
}

/// Makes ULID request ids.
#[derive(Clone, Copy, Default)]
pub struct MakeUlid;

impl MakeRequestId for MakeUlid {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Replaces an incoming `x-request-id` that is too long or not printable,
/// so that ids in logs stay trustworthy.
pub async fn sanitize(mut request: Request, next: Next) -> Response {
    let bad = request.headers().get(HEADER).is_some_and(|value| {
        let bytes = value.as_bytes();
        bytes.is_empty() || bytes.len() > 64 || !bytes.iter().all(|b| b.is_ascii_graphic())
    });
    if bad {
        request.headers_mut().remove(HEADER);
    }
    next.run(request).await
}

/// Makes the request id available to [`current`] while the request runs.
pub async fn scope(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    CURRENT.scope(id, next.run(request)).await
}
