//! REST APIs: one reqwest client per connector (per config version, kept by
//! the pool registry, so its connections are reused across pages and
//! steps), with the connector's auth (none, bearer, basic, API key header,
//! OAuth2 client credentials) and extra headers on every request, and the
//! `http_request` step runner ([`step`]).
//!
//! The network policy is enforced by the client's DNS resolver (every
//! connection, including the token endpoint's and a redirect's) and, for
//! IP-literal URLs that bypass resolution, when the URLs are checked: the
//! configured ones when the client is built, a redirect's target before it
//! is followed. Redirects are followed only within the same origin (a
//! credential header must not travel to another host); proxies from the
//! environment are ignored. `design.md` beside this file describes the
//! step runner.

mod paging;
pub(crate) mod records;
mod retry;
mod step;
#[cfg(test)]
mod step_tests;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ferry_shared::connectors::defaults;
use ferry_shared::domain::StepType;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::connectors::config::Config;
use crate::connectors::errors::{DriverError, ErrorType, Secrets};
use crate::connectors::http::{self, check_literal};
use crate::connectors::{ConnectorPool, Driver, StepRequest};
use crate::connectors::{ConnectorSpec, NetworkPolicy, TestDetails};
use crate::extract::{ExtractError, Output, ReadPath};

const MAX_REDIRECTS: usize = 5;
/// Tokens are renewed this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

/// Headers a connector may not set: they belong to the HTTP layer.
const FORBIDDEN_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

enum Auth {
    None,
    Bearer(HeaderValue),
    Basic(HeaderValue),
    ApiKey(HeaderName, HeaderValue),
    OAuth2 {
        token_url: Url,
        client_id: String,
        client_secret: String,
        scope: Option<String>,
    },
}

struct CachedToken {
    value: HeaderValue,
    expires_at: Instant,
}

pub(crate) struct RestHandle {
    pub client: reqwest::Client,
    pub base_url: Url,
    test_url: Url,
    auth: Auth,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    /// The connector's secrets, to keep them out of messages that quote a
    /// response.
    secrets: Secrets,
}

/// One request, as [`RestHandle::send`] sends it (again, if a revoked
/// OAuth2 token must be replaced).
pub(crate) struct Call<'a> {
    pub method: Method,
    pub url: &'a Url,
    /// Headers besides the connector's own and its auth.
    pub headers: &'a HeaderMap,
    pub body: Option<Bytes>,
    /// Replaces the connector's `timeout_seconds` for this request.
    pub timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    /// A plain `GET` of `url`.
    pub fn get(url: &'a Url) -> Call<'a> {
        static NONE: std::sync::OnceLock<HeaderMap> = std::sync::OnceLock::new();
        Call {
            method: Method::GET,
            url,
            headers: NONE.get_or_init(HeaderMap::new),
            body: None,
            timeout: None,
        }
    }
}

pub(crate) fn open(spec: &ConnectorSpec, policy: &NetworkPolicy) -> Result<RestHandle, DriverError> {
    let config = Config::new(&spec.config);
    let base_url = http_url("base_url", config.required_str("base_url")?)?;
    check_literal(&base_url, policy)?;
    let test_url = match config.str("test_path")? {
        Some(path) => append_path(&base_url, path, "test_path")?,
        None => base_url.clone(),
    };
    let timeout = config.seconds("timeout_seconds", defaults::REST_TIMEOUT_SECONDS)?;
    let required_secret = |key: &str| {
        config
            .secret(key)?
            .ok_or_else(|| DriverError::invalid_config(format!("config.{key} is required")))
    };
    let auth = match config.str("auth_type")?.unwrap_or("none") {
        "none" => Auth::None,
        "bearer" => Auth::Bearer(sensitive(
            "auth_token",
            &format!("Bearer {}", required_secret("auth_token")?),
        )?),
        "basic" => {
            let username = config.required_name("username")?;
            let password = config.secret("password")?.unwrap_or("");
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            Auth::Basic(sensitive("password", &format!("Basic {encoded}"))?)
        }
        "api_key" => {
            let name = config.required_name("api_key_header")?;
            let name = header_name("api_key_header", name)?;
            Auth::ApiKey(
                name,
                sensitive("api_key_value", required_secret("api_key_value")?)?,
            )
        }
        "oauth2" => {
            let token_url = http_url("token_url", config.required_str("token_url")?)?;
            check_literal(&token_url, policy)?;
            Auth::OAuth2 {
                token_url,
                client_id: config.required_name("client_id")?.to_owned(),
                client_secret: required_secret("client_secret")?.to_owned(),
                scope: config.name("scope")?.map(str::to_owned),
            }
        }
        _ => {
            return Err(DriverError::invalid_config(
                "config.auth_type must be one of none, bearer, basic, api_key, oauth2",
            ));
        }
    };

    let mut headers = HeaderMap::new();
    if let Some(extra) = config.object("headers")? {
        for (name, value) in extra {
            let Value::String(value) = value else {
                return Err(DriverError::invalid_config(format!(
                    "config.headers.{name} must be a string"
                )));
            };
            let header = header_name("headers", name)?;
            if FORBIDDEN_HEADERS.contains(&header.as_str()) {
                return Err(DriverError::invalid_config(format!(
                    "config.headers may not set {name}"
                )));
            }
            headers.insert(header, sensitive("headers", value)?);
        }
    }

    let origin = base_url.origin();
    let redirect_policy = policy.clone();
    let client = http::client_builder(policy, timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            // The policy first: a redirect to a refused address is
            // `blocked_address` whatever its origin. (Names are checked by
            // the resolver when a followed redirect connects.)
            if let Err(blocked) = check_literal(attempt.url(), &redirect_policy) {
                return attempt.error(blocked);
            }
            if attempt.previous().len() > MAX_REDIRECTS || attempt.url().origin() != origin {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .pool_idle_timeout(Duration::from_secs(90))
        .default_headers(headers)
        .build()
        .map_err(|_| DriverError::unknown("the HTTP client could not be built"))?;
    Ok(RestHandle {
        client,
        base_url,
        test_url,
        auth,
        token: tokio::sync::Mutex::new(None),
        secrets: spec.secrets(),
    })
}

fn http_url(field: &str, text: &str) -> Result<Url, DriverError> {
    let invalid = |why: &str| DriverError::invalid_config(format!("config.{field} {why}"));
    let url = Url::parse(text).map_err(|_| invalid("is not a valid URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be an http or https URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not contain credentials (use the auth fields)"));
    }
    Ok(url)
}

/// `base` with `path` (and its query, if any) appended to its path;
/// refusals name `config.<field>`.
fn append_path(base: &Url, path: &str, field: &str) -> Result<Url, DriverError> {
    if path.contains("://") || path.starts_with("//") || path.contains(['#', '\\']) {
        return Err(DriverError::invalid_config(format!(
            "config.{field} must be a path such as /health"
        )));
    }
    let (path_part, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let mut url = base.clone();
    let joined = format!(
        "{}/{}",
        base.path().trim_end_matches('/'),
        path_part.trim_start_matches('/')
    );
    url.set_path(&joined);
    url.set_query(query.or(base.query()));
    if url.origin() != base.origin() {
        return Err(DriverError::invalid_config(format!(
            "config.{field} must stay on the base_url's host"
        )));
    }
    Ok(url)
}

fn header_name(field: &str, name: &str) -> Result<HeaderName, DriverError> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        DriverError::invalid_config(format!("config.{field}: {name:?} is not a valid header name"))
    })
}

fn sensitive(field: &str, value: &str) -> Result<HeaderValue, DriverError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| DriverError::invalid_config(format!("config.{field} is not a valid header value")))?;
    value.set_sensitive(true);
    Ok(value)
}

impl RestHandle {
    /// Sends `call` with the connector's headers and auth. An OAuth2
    /// connector whose token is refused (401) fetches a new token and sends
    /// the request once more: the cached one may have been revoked.
    pub async fn send(&self, call: &Call<'_>) -> Result<reqwest::Response, DriverError> {
        let response = self.send_once(call).await?;
        if response.status() == StatusCode::UNAUTHORIZED && matches!(self.auth, Auth::OAuth2 { .. }) {
            *self.token.lock().await = None;
            return self.send_once(call).await;
        }
        Ok(response)
    }

    async fn send_once(&self, call: &Call<'_>) -> Result<reqwest::Response, DriverError> {
        let mut request = self
            .client
            .request(call.method.clone(), call.url.clone())
            .headers(call.headers.clone());
        request = match &self.auth {
            Auth::None => request,
            Auth::Bearer(value) | Auth::Basic(value) => request.header(header::AUTHORIZATION, value.clone()),
            Auth::ApiKey(name, value) => request.header(name.clone(), value.clone()),
            Auth::OAuth2 { .. } => request.header(header::AUTHORIZATION, self.access_token().await?),
        };
        if let Some(body) = &call.body {
            request = request.body(body.clone());
        }
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        request
            .send()
            .await
            .map_err(|error| http::request_error(&error, call.url))
    }

    /// `text` if it holds none of the connector's secrets (nor the current
    /// OAuth2 access token), else `None`.
    pub(crate) async fn scrub(&self, text: &str) -> Option<String> {
        let token = self.token.lock().await;
        let leaks_token = token.as_ref().is_some_and(|token| {
            token
                .value
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .is_some_and(|access| text.contains(access))
        });
        if leaks_token {
            return None;
        }
        self.secrets.scrub(text)
    }

    /// The OAuth2 access token as an `Authorization` value, from the cache
    /// or the token endpoint (client credentials grant, HTTP Basic client
    /// authentication as RFC 6749 §2.3.1 requires servers to support).
    async fn access_token(&self) -> Result<HeaderValue, DriverError> {
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            scope,
        } = &self.auth
        else {
            return Err(DriverError::unknown("the connector does not use OAuth2"));
        };
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && token.expires_at > Instant::now() + TOKEN_MARGIN
        {
            return Ok(token.value.clone());
        }
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let response = self
            .client
            .post(token_url.clone())
            .basic_auth(client_id, Some(client_secret))
            .header(header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|error| http::request_error(&error, token_url))?;
        let status = response.status();
        if !status.is_success() {
            return Err(match status {
                StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    DriverError::new(
                        ErrorType::AuthenticationFailed,
                        format!(
                            "the token endpoint refused the client credentials (HTTP {})",
                            status.as_u16()
                        ),
                    )
                    .with_code(status.as_u16().to_string())
                }
                _ => status_error(status, "the token endpoint"),
            });
        }
        let body: Value = response.json().await.map_err(|_| {
            DriverError::new(
                ErrorType::AuthenticationFailed,
                "the token endpoint did not answer with a JSON token",
            )
        })?;
        let Some(access_token) = body.get("access_token").and_then(Value::as_str) else {
            return Err(DriverError::new(
                ErrorType::AuthenticationFailed,
                "the token endpoint answered without an access_token",
            ));
        };
        let lifetime = body.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
        let value = sensitive("access_token", &format!("Bearer {access_token}"))?;
        *cached = Some(CachedToken {
            value: value.clone(),
            expires_at: Instant::now() + Duration::from_secs(lifetime),
        });
        Ok(value)
    }
}

fn status_error(status: StatusCode, who: &str) -> DriverError {
    let code = status.as_u16().to_string();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => DriverError::new(
            ErrorType::AuthenticationFailed,
            format!("{who} refused the credentials (HTTP {code})"),
        ),
        _ => DriverError::new(ErrorType::HttpError, format!("{who} answered HTTP {code}")),
    }
    .with_code(code)
}

/// The REST API family.
pub(crate) struct Rest;

#[async_trait]
impl Driver for Rest {
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        Ok(Box::new(open(spec, policy)?))
    }
}

/// Dropping the client closes its idle connections: nothing to close.
#[async_trait]
impl ConnectorPool for RestHandle {
    /// `GET`s the test URL with the connector's auth: 2xx/3xx succeed
    /// (version = `Server` header, server time = `Date` header), 401/403 are
    /// `authentication_failed`, other statuses `http_error`, all with the
    /// status as code.
    async fn test(&self, _addrs: &[SocketAddr], _policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        let response = self.send(&Call::get(&self.test_url)).await?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            let header_text = |name: header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            };
            let version = header_text(header::SERVER).map(|server| server.chars().take(100).collect());
            let server_time = header_text(header::DATE)
                .and_then(|date| DateTime::parse_from_rfc2822(&date).ok())
                .map(|date| date.with_timezone(&Utc));
            return Ok(TestDetails {
                version,
                server_time,
                schemas: None,
            });
        }
        Err(status_error(status, "the API"))
    }

    /// Runs an `http_request` step (see [`step`]).
    async fn run(&self, step: &StepRequest<'_>, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        match step.step_type {
            StepType::HttpRequest => step::run(self, step, out).await,
            _ => Err(step.unsupported()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_path_is_appended_to_the_base_path_and_cannot_leave_the_host() {
        let base = Url::parse("https://api.example.com/v1/").expect("url");
        assert_eq!(
            append_path(&base, "/health", "test_path")
                .expect("joined")
                .as_str(),
            "https://api.example.com/v1/health"
        );
        assert_eq!(
            append_path(&base, "status?deep=1", "test_path")
                .expect("joined")
                .as_str(),
            "https://api.example.com/v1/status?deep=1"
        );
        for bad in ["//evil.example/x", "http://evil.example/", "/a#b"] {
            let error = append_path(&base, bad, "path").expect_err(bad);
            assert!(error.message().contains("config.path"), "{}", error.message());
        }
    }

    #[test]
    fn urls_must_be_http_without_credentials() {
        assert!(http_url("base_url", "https://api.example.com").is_ok());
        for bad in [
            "ftp://x.example",
            "https://user:pw@api.example.com",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(http_url("base_url", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statuses_map_to_authentication_failed_or_http_error() {
        let unauthorized = status_error(StatusCode::UNAUTHORIZED, "the API");
        assert_eq!(
            (unauthorized.kind(), unauthorized.code()),
            (ErrorType::AuthenticationFailed, Some("401"))
        );
        let broken = status_error(StatusCode::INTERNAL_SERVER_ERROR, "the API");
        assert_eq!(
            (broken.kind(), broken.code()),
            (ErrorType::HttpError, Some("500"))
        );
    }
}
