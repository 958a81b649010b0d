//! Extractors that turn every malformed request into the seeds' error
//! shape: JSON bodies, query strings and the authenticated caller.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use ferry_shared::domain::Principal;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;
use ferry_shared::Error;

/// A JSON body, with errors that name the offending field.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = header_text(&request, header::CONTENT_TYPE)
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"));
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// A header's value, when it is present and visible ASCII.
fn header_text(request: &Request, name: header::HeaderName) -> Option<&str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The whole body, within the configured limit (a larger one is 413).
async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    let limit = request.extensions().get::<BodyLimit>().map_or(0, |l| l.0);
    Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::validation("body", "the request body could not be read")
        }
    })
}

/// The configured body limit, placed in request extensions so that errors
/// can state it.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Deserializes a JSON document, naming the field at fault on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => Error::validation(
                "body",
                format!(
                    "malformed JSON at line {} column {}",
                    inner.line(),
                    inner.column()
                ),
            )
            .into(),
            Category::Data => field_error(&path, &inner.to_string()),
        }
    })
}

/// A query string, with errors that name the offending parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|error| field_error(&error.path().to_string(), &error.into_inner().to_string()))
    }
}

/// Turns a serde data error into `validation_error` with a field name: the
/// path where it happened, or the field serde reports as missing.
fn field_error(path: &str, message: &str) -> ApiError {
    let message = message.split(" at line ").next().unwrap_or(message).to_owned();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned);
    let field = match (missing, path) {
        (Some(name), "." | "") => name,
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "") => "body".to_owned(),
        (None, path) => path.to_owned(),
    };
    Error::validation(field, message).into()
}

/// The authenticated caller of an `/api` route.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        let principal = crate::auth::authenticate(state, token).await?;
        if let Some(limit) = state.rate_limit {
            let key = format!("{}:{}", principal.org_id, principal.user_id);
            match state.backends.bus.throttle(&key, limit).await {
                Ok(None) => {}
                Ok(Some(wait)) => return Err(ApiError::RateLimited(wait)),
                // The limit protects the API; it never takes it down: with
                // the bus unreachable, requests go ahead unlimited.
                Err(error) => tracing::warn!(%error, "rate limit unavailable; request allowed"),
            }
        }
        Ok(Caller(principal))
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::Domain(Error::Unauthorized(message.to_owned()))
}

/// A JSON body that may be absent: an empty body gives `None`; anything
/// else must be valid JSON, as for [`Json`].
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_empty = header_text(&request, header::CONTENT_LENGTH).is_some_and(|v| v.trim() == "0");
        let untyped = request.headers().get(header::CONTENT_TYPE).is_none();
        if declared_empty || untyped {
            let bytes = read_body(request, state).await?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJson(None));
            }
            return Err(ApiError::UnsupportedMediaType);
        }
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(value)| OptionalJson(Some(value)))
    }
}
