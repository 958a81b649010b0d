//! What the OAuth warehouse families (`snowflake/`, `bigquery/`) share: an
//! HTTP client for a vendor's API sending the connector's OAuth access
//! token, which
//!
//! - applies the network policy to every connection (the HTTP families'
//!   client, [`super::http`]) and never follows a redirect, so the token
//!   goes nowhere else;
//! - waits and tries again when the vendor says to slow down (the family
//!   decides which answers mean that), after `Retry-After` (capped) or an
//!   exponential pause, a bounded number of times;
//! - answers a 401 by asking for a new token once ([`Bearer::renew`]: the
//!   shared refresher, under the connector's refresh lease, so a rotating
//!   refresh token is spent once across every process) and sending the
//!   request again with it;
//! - reads gzip-encoded answers (Snowflake compresses result partitions).
//!
//! Vendor base URLs are the real ones; [`testing::serve_at`] lets a test
//! process reach a stand-in server for a vendor host instead.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_shared::oauth_refresh::{Need, Outcome, Refresher};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use crate::connectors::errors::{DriverError, ErrorType};
use crate::connectors::http::{self, retry_after, target_of};
pub(crate) use crate::connectors::http::{cancelled, pause};
use crate::connectors::{ConnectorSpec, NetworkPolicy};

/// Attempts of one request that the vendor answers with a throttle.
const MAX_ATTEMPTS: u32 = 6;
/// The longest body (decompressed) read from one answer.
const MAX_BODY: u64 = 512 * 1024 * 1024;
/// How long a 401 waits for a refresh lease held elsewhere.
const RENEW_WAIT: Duration = Duration::from_secs(35);

/// The config fields the OAuth flow stores sealed with a connector (see
/// `api/src/routes/oauth/`): not declared by the type, never refused.
pub(crate) const TOKEN_FIELDS: &[&str] = &[
    "access_token",
    "refresh_token",
    "token_type",
    "scope",
    "expires_at",
];

/// The connector's current access token, and how to get a new one.
pub(crate) struct Bearer {
    org_id: String,
    uuid: String,
    /// `Bearer <token>` (marked sensitive) and the connector config
    /// version it was read at.
    current: RwLock<(HeaderValue, i64)>,
    /// One renewal at a time per handle; the others wait for its result.
    renewing: Mutex<()>,
    refresher: std::sync::OnceLock<Refresher>,
}

impl Bearer {
    /// The token of `spec` (its sealed `access_token`).
    pub(crate) fn of(spec: &ConnectorSpec) -> Result<Bearer, DriverError> {
        let token = spec
            .config
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                DriverError::new(
                    ErrorType::AuthenticationFailed,
                    "the connector holds no OAuth access token: authorize it again",
                )
            })?;
        Ok(Bearer {
            org_id: spec.org_id.clone(),
            uuid: spec.uuid.clone(),
            current: RwLock::new((header_of(token)?, spec.version)),
            renewing: Mutex::new(()),
            refresher: std::sync::OnceLock::new(),
        })
    }

    /// The refresher a 401 asks for a new token; without one, a 401 fails
    /// with `authentication_failed`.
    pub(crate) fn attach(&self, refresher: &Refresher) {
        let _ = self.refresher.set(refresher.clone());
    }

    pub(crate) async fn header(&self) -> HeaderValue {
        self.current.read().await.0.clone()
    }

    /// After `refused` was answered 401: the stored token if someone
    /// already refreshed it, else a refresh through the shared refresher
    /// (under the connector's lease, only if nobody refreshed since this
    /// token's config version). Concurrent calls on one handle make one
    /// renewal.
    pub(crate) async fn renew(&self, refused: &HeaderValue) -> Result<(), DriverError> {
        let _one = self.renewing.lock().await;
        if self.current.read().await.0 != *refused {
            return Ok(());
        }
        let refresher = self.refresher.get().ok_or_else(|| {
            DriverError::new(
                ErrorType::AuthenticationFailed,
                "the provider refused the connector's access token (HTTP 401) and this worker cannot refresh it",
            )
            .with_code("401")
        })?;
        for _ in 0..2 {
            let version = self.current.read().await.1;
            let outcome = refresher
                .refresh(&self.org_id, &self.uuid, Need::Unchanged(version), RENEW_WAIT)
                .await
                .map_err(|error| {
                    DriverError::new(
                        ErrorType::ConnectionFailed,
                        format!("the connector's token could not be refreshed: {error}"),
                    )
                })?;
            match outcome {
                Outcome::Refreshed { .. } | Outcome::NotNeeded => {}
                Outcome::Busy => {
                    return Err(DriverError::new(
                        ErrorType::ConnectionFailed,
                        "another refresh of the connector's token did not finish in time",
                    ));
                }
                Outcome::Failed(why) => {
                    return Err(DriverError::new(
                        ErrorType::ConnectionFailed,
                        format!("the connector's token could not be refreshed: {why}"),
                    ));
                }
                Outcome::NotConfigured => {
                    return Err(auth_failed(
                        "the access token was refused and OAuth is not configured on this worker \
                         (FERRY_OAUTH_<PROVIDER>_CLIENT_ID and _CLIENT_SECRET)",
                    ));
                }
                Outcome::InvalidGrant(_) => {
                    return Err(auth_failed(
                        "the provider refused the connector's refresh token; authorize the connector again",
                    ));
                }
                Outcome::Skipped => {
                    return Err(auth_failed(
                        "the connector is no longer an active OAuth connector",
                    ));
                }
            }
            let connector = refresher
                .store()
                .get_connector(&self.org_id, &self.uuid)
                .await
                .map_err(|error| DriverError::new(ErrorType::ConnectionFailed, error.to_string()))?
                .ok_or_else(|| auth_failed("the connector was deleted"))?;
            let secrets = refresher
                .vault()
                .open(&connector.uuid, &connector.secrets)
                .map_err(|_| {
                    DriverError::invalid_config("the connector's credentials could not be decrypted")
                })?;
            let token = secrets
                .expose_secret()
                .get("access_token")
                .and_then(Value::as_str)
                .map(header_of)
                .transpose()?;
            let mut current = self.current.write().await;
            current.1 = connector.config_version;
            if let Some(token) = token
                && token != *refused
            {
                current.0 = token;
                tracing::info!(connector_uuid = %self.uuid, "access token renewed after a 401");
                return Ok(());
            }
            // Same token under a newer version (another change to the
            // connector): refresh against that version.
        }
        Err(auth_failed(
            "the provider refused the connector's access token and a refreshed one too",
        ))
    }
}

fn auth_failed(message: &str) -> DriverError {
    DriverError::new(ErrorType::AuthenticationFailed, message).with_code("401")
}

fn header_of(token: &str) -> Result<HeaderValue, DriverError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        DriverError::invalid_config("the connector's access token is not a valid header value")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// An answer of the vendor's API: status, headers and the whole body
/// (decompressed).
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when it is empty or not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Whether an answer asks the client to slow down and try again.
pub(crate) type IsThrottle = fn(StatusCode, &[u8]) -> bool;

/// One connector's client for one vendor API. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ApiClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    bearer: Bearer,
    /// Sent with every request (Snowflake's token type header).
    headers: HeaderMap,
    connect_timeout: Duration,
    is_throttle: IsThrottle,
}

impl ApiClient {
    /// A client of the API at `base` with `spec`'s access token.
    pub(crate) fn new(
        spec: &ConnectorSpec,
        base: Url,
        headers: HeaderMap,
        policy: &NetworkPolicy,
        pool: &crate::connectors::PoolSettings,
        is_throttle: IsThrottle,
    ) -> Result<ApiClient, DriverError> {
        http::check_literal(&base, policy)?;
        let http = http::client_builder(policy, pool.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(pool.idle_timeout)
            .pool_max_idle_per_host(pool.max_connections as usize)
            .build()
            .map_err(|_| DriverError::unknown("the HTTP client could not be built"))?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                http,
                base,
                bearer: Bearer::of(spec)?,
                headers,
                connect_timeout: pool.connect_timeout,
                is_throttle,
            }),
        })
    }

    pub(crate) fn bearer(&self) -> &Bearer {
        &self.inner.bearer
    }

    /// `path` (with its query) under the base URL.
    pub(crate) fn url(&self, path: &str) -> Result<Url, DriverError> {
        self.inner
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|_| DriverError::unknown("the API path is not valid"))
    }

    /// `host:port` of the API, for messages.
    pub(crate) fn target(&self) -> String {
        target_of(&self.inner.base)
    }

    /// Sends one API call and reads its whole answer, whatever its status:
    /// throttles are waited out and sent again (up to [`MAX_ATTEMPTS`]),
    /// a 401 renews the token and is sent again once, unless `cancel`
    /// fires first. The caller maps a non-2xx answer to an error.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        extra: &[(HeaderName, &str)],
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Answer, DriverError> {
        let mut attempt = 1;
        let mut renewed = false;
        loop {
            let auth = self.inner.bearer.header().await;
            let mut request = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .headers(self.inner.headers.clone())
                .header(header::AUTHORIZATION, auth.clone())
                .header(header::ACCEPT, "application/json")
                .timeout(self.inner.connect_timeout + timeout);
            for (name, value) in extra {
                request = request.header(name.clone(), *value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let answer = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(cancelled()),
                answer = self.read(request, url) => answer?,
            };
            if answer.status == StatusCode::UNAUTHORIZED && !renewed {
                renewed = true;
                self.inner.bearer.renew(&auth).await?;
                continue;
            }
            if (self.inner.is_throttle)(answer.status, &answer.body) && attempt < MAX_ATTEMPTS {
                let wait = pause(retry_after(&answer.headers), attempt);
                tracing::debug!(
                    status = answer.status.as_u16(),
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    "the vendor asked to slow down"
                );
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Err(cancelled()),
                    () = tokio::time::sleep(wait) => {}
                }
                attempt += 1;
                continue;
            }
            return Ok(answer);
        }
    }

    async fn read(&self, request: reqwest::RequestBuilder, url: &Url) -> Result<Answer, DriverError> {
        let response = request
            .send()
            .await
            .map_err(|error| http::reading_error(&error, url))?;
        let status = response.status();
        let headers = response.headers().clone();
        if response.content_length().is_some_and(|len| len > MAX_BODY) {
            return Err(too_large(url));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| http::reading_error(&error, url))?
        {
            if (body.len() + chunk.len()) as u64 > MAX_BODY {
                return Err(too_large(url));
            }
            body.extend_from_slice(&chunk);
        }
        let gzip = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        let body = if gzip { gunzip(&body, url)? } else { body };
        Ok(Answer {
            status,
            headers,
            body: Bytes::from(body),
        })
    }
}

fn too_large(url: &Url) -> DriverError {
    DriverError::new(
        ErrorType::HttpError,
        format!(
            "an answer of {} is larger than {} MiB",
            target_of(url),
            MAX_BODY >> 20
        ),
    )
}

/// A gzip body, decompressed (at most [`MAX_BODY`] bytes).
fn gunzip(body: &[u8], url: &Url) -> Result<Vec<u8>, DriverError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(MAX_BODY + 1)
        .read_to_end(&mut out)
        .map_err(|_| {
            DriverError::new(
                ErrorType::ConnectionFailed,
                format!("a gzip answer of {} could not be decompressed", target_of(url)),
            )
        })?;
    if out.len() as u64 > MAX_BODY {
        return Err(too_large(url));
    }
    Ok(out)
}

/// The vendor API hosts an operator may serve from elsewhere (a private
/// endpoint such as Google's Private Service Connect, an egress gateway)
/// with `FERRY_OAUTH_<PROVIDER>_API_URL`, and that provider's name there.
const API_URL_SETTINGS: &[(&str, &str)] = &[
    ("bigquery.googleapis.com", "FERRY_OAUTH_BIGQUERY_API_URL"),
    ("api.stripe.com", "FERRY_OAUTH_STRIPE_API_URL"),
    ("api.hubapi.com", "FERRY_OAUTH_HUBSPOT_API_URL"),
    (
        "analyticsdata.googleapis.com",
        "FERRY_OAUTH_GOOGLE_ANALYTICS_API_URL",
    ),
];

/// The API URL set for `host` in this process's environment, read once.
fn api_url_setting(host: &str) -> Option<&'static str> {
    static SET: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    let set = SET.get_or_init(|| {
        API_URL_SETTINGS
            .iter()
            .filter_map(|(host, variable)| {
                let url = std::env::var(variable).ok()?;
                let url = url.trim().trim_end_matches('/');
                (!url.is_empty()).then(|| (*host, url.to_owned()))
            })
            .collect()
    });
    set.iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(host))
        .map(|(_, url)| url.as_str())
}

/// The base URL of a vendor host: `https://<host>/<path>`; the
/// `FERRY_OAUTH_<PROVIDER>_API_URL` set for it, followed by `path`; or
/// where a stand-in for `host` listens in tests ([`testing::serve_at`]).
/// Every request still goes through the network policy.
pub(crate) fn vendor_url(host: &str, path: &str) -> Result<Url, DriverError> {
    let text = match (api_url_setting(host), testing::origin(host)) {
        (Some(base), _) => format!("{base}{path}"),
        (None, Some((scheme, port))) => format!("{scheme}://{host}:{port}{path}"),
        (None, None) => format!("https://{host}{path}"),
    };
    Url::parse(&text).map_err(|_| DriverError::invalid_config(format!("{host} does not make a valid URL")))
}

/// Process-wide stand-ins for vendor hosts, filled only by tests. Nothing
/// in the worker calls the setter.
#[doc(hidden)]
pub mod testing {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Mutex, OnceLock};

    fn table() -> &'static Mutex<HashMap<String, (&'static str, u16)>> {
        static TABLE: OnceLock<Mutex<HashMap<String, (&'static str, u16)>>> = OnceLock::new();
        TABLE.get_or_init(|| Mutex::new(HashMap::new()))
    }

    /// Makes this process reach vendor host `host` at `addr` over plain
    /// HTTP: `host` resolves to `addr`'s address (the network policy still
    /// applies) and requests go to `addr`'s port.
    pub fn serve_at(host: &str, addr: SocketAddr) {
        crate::connectors::network::testing::resolve_as(host, &[addr.ip()]);
        if let Ok(mut table) = table().lock() {
            table.insert(host.to_ascii_lowercase(), ("http", addr.port()));
        }
    }

    pub(super) fn origin(host: &str) -> Option<(&'static str, u16)> {
        table().lock().ok()?.get(&host.to_ascii_lowercase()).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_urls_are_https_unless_a_stand_in_serves_the_host() {
        let url = vendor_url("bigquery.googleapis.com", "/bigquery/v2/").expect("url");
        assert_eq!(url.as_str(), "https://bigquery.googleapis.com/bigquery/v2/");
        testing::serve_at("standin.example.test", "127.0.0.1:4999".parse().expect("addr"));
        let url = vendor_url("standin.example.test", "/").expect("url");
        assert_eq!(url.as_str(), "http://standin.example.test:4999/");
    }

    #[test]
    fn gzip_bodies_are_read_and_garbage_is_connection_failed() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"[[\"1\"]]").expect("write");
        let gz = encoder.finish().expect("finish");
        let url = Url::parse("https://x.example/").expect("url");
        assert_eq!(gunzip(&gz, &url).expect("gunzip"), b"[[\"1\"]]");
        let error = gunzip(b"not gzip", &url).expect_err("garbage");
        assert_eq!(error.kind(), ErrorType::ConnectionFailed);
    }
}
