//! The one mapping from errors to HTTP responses in the seeds' JSON shape:
//! `{"error": "<code>", "message": "...", "field"?: "...", "details"?: ...}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_shared::Error;
use ferry_shared::error::ErrorCode;
use serde_json::{Map, Value, json};

use crate::request_id;

/// Seconds a caller is told to wait after a 503.
const RETRY_AFTER_SECONDS: &str = "5";

/// An error on its way to becoming an HTTP response.
#[derive(Debug)]
pub enum ApiError {
    /// A domain error from `shared`.
    Domain(Error),
    /// The request body exceeds the configured limit.
    PayloadTooLarge(usize),
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// A connection test on create/update failed (400 `connection_failed`);
    /// `extra` carries `details` and `test_results`.
    ConnectionFailed {
        message: String,
        extra: Map<String, Value>,
    },
    /// The caller is over its request budget (429 `rate_limited`); the
    /// duration is how long until a request would be allowed.
    RateLimited(std::time::Duration),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError::Domain(error)
    }
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Domain(Error::validation(field, message))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::Domain(Error::not_found(message))
    }
}

fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::ValidationError | ErrorCode::ConnectionFailed => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error and every cause under it, outermost first, joined by
/// `": caused by: "` — for the log only, never for a response.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": caused by: ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

fn body(code: ErrorCode, message: &str) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("error".into(), code.as_str().into());
    map.insert("message".into(), message.into());
    map
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, fields) = match self {
            ApiError::PayloadTooLarge(limit) => (
                ErrorCode::PayloadTooLarge,
                body(
                    ErrorCode::PayloadTooLarge,
                    &format!("request body exceeds the limit of {limit} bytes"),
                ),
            ),
            ApiError::ConnectionFailed { message, extra } => {
                let mut map = body(ErrorCode::ConnectionFailed, &message);
                map.extend(extra);
                (ErrorCode::ConnectionFailed, map)
            }
            ApiError::RateLimited(wait) => {
                // Whole seconds, rounded up: a client that waits that long
                // is never refused again for the same reason.
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut map = body(
                    ErrorCode::RateLimited,
                    &format!("too many requests: retry in {seconds} s"),
                );
                map.insert("details".into(), json!({ "retry_after_seconds": seconds }));
                let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(map)).into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
            ApiError::MethodNotAllowed => (
                ErrorCode::MethodNotAllowed,
                body(ErrorCode::MethodNotAllowed, "method not allowed on this route"),
            ),
            ApiError::UnsupportedMediaType => {
                let mut map = body(
                    ErrorCode::ValidationError,
                    "request body must be JSON (Content-Type: application/json)",
                );
                map.insert("field".into(), "Content-Type".into());
                let mut response = (StatusCode::UNSUPPORTED_MEDIA_TYPE, axum::Json(map)).into_response();
                response
                    .headers_mut()
                    .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
                return response;
            }
            ApiError::Domain(error) => {
                let code = error.code();
                let mut map = match &error {
                    Error::Internal { .. } => {
                        let request_id = request_id::current();
                        tracing::error!(
                            request_id = %request_id,
                            error = %error_chain(&error),
                            "internal error"
                        );
                        let mut map = body(code, "an internal error occurred");
                        map.insert("details".into(), json!({ "request_id": request_id }));
                        map
                    }
                    other => body(code, &other.to_string()),
                };
                match error {
                    Error::Validation { field, details, .. } => {
                        if let Some(field) = field {
                            map.insert("field".into(), field.into());
                        }
                        if let Some(details) = details {
                            map.insert("details".into(), details.into());
                        }
                    }
                    Error::Conflict { extra, .. } => map.extend(extra),
                    _ => {}
                }
                (code, map)
            }
        };
        let status = status_of(code);
        let mut response = (status, axum::Json(Value::Object(fields))).into_response();
        let headers = response.headers_mut();
        match code {
            ErrorCode::ServiceUnavailable | ErrorCode::RateLimited => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
            }
            ErrorCode::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_names_every_cause_of_an_internal_error() {
        let error = Error::internal_with_source(
            "reading the manifest failed",
            std::io::Error::other("disk unplugged"),
        );
        let chain = error_chain(&error);
        assert!(chain.contains("reading the manifest failed"), "{chain}");
        assert!(chain.contains("caused by: disk unplugged"), "{chain}");
    }

    #[tokio::test]
    async fn an_internal_error_response_body_does_not_contain_its_cause() {
        let cause = std::io::Error::other("secret path /var/lib/ferry/master.key");
        let response = ApiError::Domain(Error::internal_from(cause)).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body is readable");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("an internal error occurred"), "{text}");
        assert!(!text.contains("master.key"), "{text}");
        assert!(!text.contains("secret path"), "{text}");
    }
}
