//! The HTTP side of the Databricks family: one reqwest client per
//! connector speaking the SQL Statement Execution API 2.0 with the
//! connector's bearer token, fetching presigned result links without it,
//! honouring `Retry-After` on 429/503 (bounded), and mapping every failure
//! to the driver error vocabulary.
//!
//! A [`Statement`] is one submitted statement driven to a terminal state;
//! whatever ends its use early (a failure, a cancelled step, a deadline, a
//! dropped future) cancels it on the warehouse.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connectors::NetworkPolicy;
use crate::connectors::errors::{DriverError, ErrorType, Secrets};
use crate::connectors::http::{self, cancelled, check_literal, pause, retry_after, shorten, target_of};

/// Where statements are submitted; every statement path starts with it.
pub(crate) const STATEMENTS: &str = "/api/2.0/sql/statements";

/// Attempts of one request that the server answers 429 or 503.
const MAX_ATTEMPTS: u32 = 5;
/// The first pause between status polls; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(5);
/// How long the server holds a submission before answering with the
/// statement still running (`wait_timeout`); the statement then continues
/// and is polled.
const SUBMIT_WAIT: Duration = Duration::from_secs(10);
/// Bound of a status, chunk or cancel request (beyond the connect timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound of the cancel call made when a statement is abandoned.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// One connector's HTTP client. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// `https://<server_hostname>/`.
    base: Url,
    /// `Bearer <access_token>`, marked sensitive.
    auth: HeaderValue,
    policy: NetworkPolicy,
    secrets: Secrets,
    connect_timeout: Duration,
}

/// How long a step (or test) may wait, and what stops it early.
pub(crate) struct Wait<'a> {
    pub cancel: &'a CancellationToken,
    pub deadline: Instant,
    /// The bound the deadline came from, for the timeout message.
    pub limit: Duration,
}

impl<'a> Wait<'a> {
    pub(crate) fn new(cancel: &'a CancellationToken, limit: Duration) -> Self {
        Wait {
            cancel,
            deadline: Instant::now() + limit,
            limit,
        }
    }

    /// `future`, unless the step is cancelled or the deadline passes first.
    pub(crate) async fn run<T>(&self, future: impl Future<Output = T>) -> Result<T, DriverError> {
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Err(cancelled()),
            () = tokio::time::sleep_until(self.deadline) => Err(self.timed_out()),
            value = future => Ok(value),
        }
    }

    fn timed_out(&self) -> DriverError {
        DriverError::new(
            ErrorType::Timeout,
            format!(
                "the statement did not finish within {} s (statement_timeout_seconds)",
                self.limit.as_secs().max(1)
            ),
        )
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

impl Client {
    pub(crate) fn new(
        base: Url,
        token: &str,
        policy: &NetworkPolicy,
        secrets: Secrets,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Result<Client, DriverError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| DriverError::invalid_config("config.access_token is not a valid header value"))?;
        auth.set_sensitive(true);
        let http = http::client_builder(policy, connect_timeout)
            // The API never redirects; a redirect must not carry the token
            // (nor a presigned fetch be steered) anywhere else.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(max_idle)
            .build()
            .map_err(|_| DriverError::unknown("the HTTP client could not be built"))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                policy: policy.clone(),
                secrets,
                connect_timeout,
            }),
        })
    }

    /// `host:port` of the workspace, for messages.
    fn target(&self) -> String {
        target_of(&self.inner.base)
    }

    /// One API call with the bearer token: the JSON body of a 2xx answer,
    /// else the error in the vocabulary. 429 and 503 are retried up to
    /// [`MAX_ATTEMPTS`] times, after `Retry-After` (capped) or an
    /// exponential pause.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, DriverError> {
        let url = self
            .inner
            .base
            .join(path)
            .map_err(|_| DriverError::unknown("the API path is not valid"))?;
        let mut attempt = 1;
        loop {
            let mut request = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header(header::AUTHORIZATION, self.inner.auth.clone())
                .header(header::ACCEPT, "application/json")
                .timeout(self.inner.connect_timeout + timeout);
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|error| http::reading_error(&error, &url))?;
            let status = response.status();
            if status.is_success() {
                let text = response
                    .text()
                    .await
                    .map_err(|error| http::reading_error(&error, &url))?;
                if text.trim().is_empty() {
                    return Ok(Value::Object(Map::new()));
                }
                return serde_json::from_str(&text).map_err(|_| {
                    DriverError::unknown(format!("{} answered with a body that is not JSON", self.target()))
                });
            }
            let retry_after = retry_after(response.headers());
            if is_throttle(status) && attempt < MAX_ATTEMPTS {
                tokio::time::sleep(pause(retry_after, attempt)).await;
                attempt += 1;
                continue;
            }
            let text = response.text().await.unwrap_or_default();
            return Err(api_error(status, &text, &self.inner.secrets));
        }
    }

    /// Submits a statement (`POST /api/2.0/sql/statements`).
    async fn submit(&self, body: &Value, wait: Duration) -> Result<Value, DriverError> {
        self.call(Method::POST, STATEMENTS, Some(body), wait + CALL_TIMEOUT)
            .await
            .map_err(|error| match error.kind() {
                ErrorType::NotFound => DriverError::new(
                    ErrorType::DatabaseNotFound,
                    format!(
                        "the workspace has no SQL warehouse of this id: {}",
                        error.message()
                    ),
                )
                .with_code(error.code().unwrap_or("404").to_owned()),
                _ => error,
            })
    }

    /// The statement's current status (and, once it succeeded, its
    /// manifest and first chunk).
    async fn status(&self, id: &str) -> Result<Value, DriverError> {
        self.call(Method::GET, &format!("{STATEMENTS}/{id}"), None, CALL_TIMEOUT)
            .await
    }

    /// One result chunk, by the server's `next_chunk_internal_link` or by
    /// its index.
    pub(crate) async fn chunk(&self, id: &str, next: &Next) -> Result<Value, DriverError> {
        let path = match next {
            Next::Link(path) => path.clone(),
            Next::Index(index) => format!("{STATEMENTS}/{id}/result/chunks/{index}"),
        };
        self.call(Method::GET, &path, None, CALL_TIMEOUT).await
    }

    /// Asks the warehouse to cancel statement `id`; failures are logged
    /// (the statement then ends by itself).
    pub(crate) async fn cancel(&self, id: &str) {
        let (path, empty) = (format!("{STATEMENTS}/{id}/cancel"), json!({}));
        let call = self.call(Method::POST, &path, Some(&empty), CANCEL_TIMEOUT);
        match tokio::time::timeout(CANCEL_TIMEOUT + self.inner.connect_timeout, call).await {
            Ok(Ok(_)) => tracing::debug!(statement_id = id, "databricks statement cancelled"),
            Ok(Err(error)) => {
                tracing::warn!(statement_id = id, %error, "cancelling a databricks statement failed")
            }
            Err(_) => tracing::warn!(statement_id = id, "cancelling a databricks statement timed out"),
        }
    }

    /// Fetches a presigned result link: no token (the link is its own
    /// credential), the link's own `http_headers`, the network policy
    /// applied to its host. 429/503 are retried like API calls; a 403 or
    /// 404 (an expired link) is [`LinkError::Expired`].
    pub(crate) async fn download(
        &self,
        url: &Url,
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<reqwest::Response, LinkError> {
        check_literal(url, &self.inner.policy).map_err(LinkError::Failed)?;
        let mut attempt = 1;
        loop {
            let response = self
                .inner
                .http
                .get(url.clone())
                .headers(headers.clone())
                .timeout(self.inner.connect_timeout + timeout)
                .send()
                .await
                .map_err(|error| LinkError::Failed(http::reading_error(&error, url)))?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if is_throttle(status) && attempt < MAX_ATTEMPTS {
                tokio::time::sleep(pause(retry_after(response.headers()), attempt)).await;
                attempt += 1;
                continue;
            }
            if matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
                return Err(LinkError::Expired(status));
            }
            let code = status.as_u16().to_string();
            let kind = if status == StatusCode::TOO_MANY_REQUESTS {
                ErrorType::RateLimited
            } else {
                ErrorType::HttpError
            };
            return Err(LinkError::Failed(
                DriverError::new(
                    kind,
                    format!(
                        "fetching a result chunk from {} answered HTTP {code}",
                        target_of(url)
                    ),
                )
                .with_code(code),
            ));
        }
    }

    /// Where the next chunk is, checked to stay on this workspace's
    /// statement API (the token goes with that request).
    pub(crate) fn next_link(&self, path: &str) -> Option<Next> {
        (path.starts_with(STATEMENTS) && !path.contains("..") && !path.contains("://"))
            .then(|| Next::Link(path.to_owned()))
    }
}

/// Why a presigned link could not be read.
pub(crate) enum LinkError {
    /// 403/404: the link expired (it is valid for minutes); fetch the chunk
    /// again for a fresh one.
    Expired(StatusCode),
    Failed(DriverError),
}

/// The next chunk of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// A `next_chunk_internal_link` (a path of the statement API).
    Link(String),
    Index(u64),
}

fn is_throttle(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
}

/// An error answer of the API (`{"error_code", "message"}`) in the
/// vocabulary: 401/403 `authentication_failed`, 429 `rate_limited`, 404
/// `not_found`, 400 `invalid_query` with the server's `error_code`, other
/// statuses `http_error` with the status as code. The server's message is
/// shown unless it contains a secret.
pub(crate) fn api_error(status: StatusCode, body: &str, secrets: &Secrets) -> DriverError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error_code = parsed
        .as_ref()
        .and_then(|b| b.get("error_code"))
        .and_then(Value::as_str)
        .filter(|code| code.len() <= 100)
        .map(str::to_owned);
    let message = parsed
        .as_ref()
        .and_then(|b| b.get("message"))
        .and_then(Value::as_str)
        .and_then(|text| secrets.scrub(&shorten(text)));
    let http = status.as_u16().to_string();
    let detail = match (&error_code, &message) {
        (Some(code), Some(text)) => format!(" ({code}): {text}"),
        (Some(code), None) => format!(" ({code})"),
        (None, Some(text)) => format!(": {text}"),
        (None, None) => String::new(),
    };
    let (kind, code) = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => (ErrorType::AuthenticationFailed, http.clone()),
        StatusCode::TOO_MANY_REQUESTS => (ErrorType::RateLimited, http.clone()),
        StatusCode::NOT_FOUND => (ErrorType::NotFound, http.clone()),
        StatusCode::BAD_REQUEST => (
            ErrorType::InvalidQuery,
            error_code.clone().unwrap_or_else(|| http.clone()),
        ),
        _ => (ErrorType::HttpError, http.clone()),
    };
    let lead = match kind {
        ErrorType::AuthenticationFailed => "Databricks refused the access token",
        ErrorType::RateLimited => "Databricks is rate limiting this connector",
        _ => "Databricks answered",
    };
    DriverError::new(kind, format!("{lead} (HTTP {http}){detail}")).with_code(code)
}

/// The `http_headers` a presigned link must be fetched with (some clouds
/// require them). Credential headers are never taken from the server.
pub(crate) fn link_headers(link: &Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(given) = link.get("http_headers").and_then(Value::as_object) {
        for (name, value) in given {
            let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) else {
                continue;
            };
            if name != header::AUTHORIZATION && name != header::COOKIE && name != header::HOST {
                headers.insert(name, value);
            }
        }
    }
    headers
}

/// The states of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceled,
    Closed,
}

fn state_of(response: &Value) -> Option<State> {
    Some(match response.pointer("/status/state")?.as_str()? {
        "PENDING" => State::Pending,
        "RUNNING" => State::Running,
        "SUCCEEDED" => State::Succeeded,
        "FAILED" => State::Failed,
        "CANCELED" => State::Canceled,
        "CLOSED" => State::Closed,
        _ => return None,
    })
}

/// The error a terminal state other than SUCCEEDED stands for, with the
/// server's `error_code` as code and its message (secrets scrubbed).
///
/// - `FAILED`: `invalid_query` (the statement is wrong: syntax, missing
///   table, a runtime error), except the server's transient codes
///   (`TEMPORARILY_UNAVAILABLE`, `SERVICE_UNDER_MAINTENANCE`,
///   `WORKSPACE_TEMPORARILY_UNAVAILABLE`: `connection_failed`, retried) and
///   `DEADLINE_EXCEEDED` (`timeout`);
/// - `CANCELED` (by someone else: an administrator, the warehouse):
///   `invalid_query`, not retried;
/// - `CLOSED` (the result was closed before it was read):
///   `connection_failed`, retried with a new statement.
fn state_error(state: State, response: &Value, secrets: &Secrets) -> DriverError {
    let error = response.pointer("/status/error");
    let error_code = error
        .and_then(|e| e.get("error_code"))
        .and_then(Value::as_str)
        .filter(|code| code.len() <= 100);
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .and_then(|text| secrets.scrub(&shorten(text)));
    let sql_state = response
        .pointer("/status/sql_state")
        .and_then(Value::as_str)
        .filter(|code| code.len() <= 10);
    let (kind, lead, fallback) = match state {
        State::Failed => match error_code {
            Some(
                "TEMPORARILY_UNAVAILABLE" | "SERVICE_UNDER_MAINTENANCE" | "WORKSPACE_TEMPORARILY_UNAVAILABLE",
            ) => (
                ErrorType::ConnectionFailed,
                "the warehouse is temporarily unavailable",
                "FAILED",
            ),
            Some("DEADLINE_EXCEEDED") => (
                ErrorType::Timeout,
                "the statement timed out on the warehouse",
                "FAILED",
            ),
            _ => (ErrorType::InvalidQuery, "the statement failed", "FAILED"),
        },
        State::Canceled => (
            ErrorType::InvalidQuery,
            "the statement was canceled on the warehouse",
            "CANCELED",
        ),
        _ => (
            ErrorType::ConnectionFailed,
            "the statement's result was closed before it was read",
            "CLOSED",
        ),
    };
    let mut text = lead.to_owned();
    if let Some(message) = message {
        text.push_str(": ");
        text.push_str(&message);
    }
    if let Some(sql_state) = sql_state {
        text.push_str(&format!(" (SQLSTATE {sql_state})"));
    }
    DriverError::new(kind, text).with_code(error_code.unwrap_or(fallback).to_owned())
}

/// A statement id as it may appear in a path.
fn statement_id(response: &Value) -> Option<String> {
    response
        .get("statement_id")
        .and_then(Value::as_str)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
}

/// The request body of a statement. `wait` is the time left: the server
/// holds the submission up to [`SUBMIT_WAIT`] when that much is left (the
/// statement continues afterwards: `on_wait_timeout: CONTINUE`), else it
/// answers at once.
pub(crate) fn statement_body(
    warehouse_id: &str,
    statement: &str,
    parameters: Vec<Value>,
    disposition: &str,
    format: &str,
    namespace: (Option<&str>, Option<&str>),
    wait: Duration,
) -> Value {
    let wait_timeout = if wait > SUBMIT_WAIT + Duration::from_secs(2) {
        format!("{}s", SUBMIT_WAIT.as_secs())
    } else {
        "0s".to_owned()
    };
    let mut body = json!({
        "warehouse_id": warehouse_id,
        "statement": statement,
        "wait_timeout": wait_timeout,
        "on_wait_timeout": "CONTINUE",
        "disposition": disposition,
        "format": format,
    });
    if !parameters.is_empty() {
        body["parameters"] = Value::Array(parameters);
    }
    if let Some(catalog) = namespace.0 {
        body["catalog"] = json!(catalog);
    }
    if let Some(schema) = namespace.1 {
        body["schema"] = json!(schema);
    }
    body
}

/// A submission in flight: if it is abandoned (cancelled step, deadline,
/// dropped future), the statement it creates is cancelled once its id is
/// known.
struct Submission {
    client: Client,
    task: Option<tokio::task::JoinHandle<Result<Value, DriverError>>>,
}

impl Drop for Submission {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Ok(response)) = task.await
                    && let Some(id) = statement_id(&response)
                    && matches!(state_of(&response), Some(State::Pending | State::Running))
                {
                    client.cancel(&id).await;
                }
            });
        }
    }
}

/// A statement that succeeded and whose result is being read. Until
/// [`Statement::finish`] it is live: [`Statement::abandon`] (or dropping
/// it) cancels it on the warehouse, which also releases its result.
pub(crate) struct Statement {
    client: Client,
    pub id: String,
    /// The SUCCEEDED answer: `manifest` and the first chunk in `result`.
    pub response: Value,
    live: bool,
}

impl Statement {
    /// Submits `body` and polls (100 ms doubling to 5 s) while the
    /// statement is PENDING or RUNNING, until it succeeds, fails, the step
    /// is cancelled or the deadline passes; in the last two cases the
    /// statement is cancelled before this returns (in the background while
    /// the submission itself is still in flight).
    pub(crate) async fn run(client: &Client, body: Value, wait: &Wait<'_>) -> Result<Statement, DriverError> {
        let held = Duration::from_secs(
            body.get("wait_timeout")
                .and_then(Value::as_str)
                .and_then(|text| text.trim_end_matches('s').parse().ok())
                .unwrap_or(0),
        );
        let submitter = client.clone();
        let mut submission = Submission {
            client: client.clone(),
            task: Some(tokio::spawn(async move { submitter.submit(&body, held).await })),
        };
        let Some(task) = submission.task.as_mut() else {
            return Err(DriverError::unknown("the statement submission was lost"));
        };
        let joined = wait.run(task).await?;
        submission.task = None;
        let first =
            joined.map_err(|_| DriverError::unknown("the statement submission failed unexpectedly"))??;
        let Some(id) = statement_id(&first) else {
            return Err(DriverError::unknown(
                "Databricks accepted the statement without a statement id",
            ));
        };
        let mut statement = Statement {
            client: client.clone(),
            id,
            response: first,
            live: true,
        };
        let mut delay = POLL_FIRST;
        loop {
            match state_of(&statement.response) {
                Some(State::Succeeded) => return Ok(statement),
                Some(State::Pending | State::Running) => {}
                Some(state) => {
                    statement.live = false;
                    return Err(state_error(state, &statement.response, &client.inner.secrets));
                }
                None => {
                    statement.abandon().await;
                    return Err(DriverError::unknown(
                        "Databricks answered with an unknown statement state",
                    ));
                }
            }
            let step = delay.min(wait.remaining());
            let polled = match wait.run(tokio::time::sleep(step)).await {
                Ok(()) => wait.run(client.status(&statement.id)).await,
                Err(error) => Err(error),
            };
            match polled {
                Ok(Ok(response)) => statement.response = response,
                Ok(Err(error)) | Err(error) => {
                    statement.abandon().await;
                    return Err(error);
                }
            }
            delay = (delay * 2).min(POLL_MAX);
        }
    }

    /// The result was read: nothing to cancel.
    pub(crate) fn finish(mut self) {
        self.live = false;
    }

    /// Cancels the statement on the warehouse (a failed or cancelled read).
    pub(crate) async fn abandon(mut self) {
        if self.live {
            self.live = false;
            self.client.cancel(&self.id).await;
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for Statement {
    fn drop(&mut self) {
        if !self.live {
            return;
        }
        let (client, id) = (self.client.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { client.cancel(&id).await });
        }
    }
}

/// Whether a refused submission says the requested format or disposition
/// is not offered (so that another one may be asked for): a 400/501 whose
/// message names a format or disposition word.
pub(crate) fn refuses_format(error: &DriverError) -> bool {
    let status_fits = matches!(error.kind(), ErrorType::InvalidQuery | ErrorType::HttpError)
        && matches!(
            error.code(),
            Some("INVALID_PARAMETER_VALUE" | "NOT_IMPLEMENTED" | "BAD_REQUEST" | "400" | "501")
        );
    let message = error.message().to_ascii_uppercase();
    status_fits
        && ["ARROW_STREAM", "EXTERNAL_LINKS", "DISPOSITION", "FORMAT"]
            .iter()
            .any(|word| message.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_map_to_the_vocabulary_with_the_servers_code() {
        let secrets = Secrets::default();
        let body = r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"bad wait_timeout"}"#;
        let bad = api_error(StatusCode::BAD_REQUEST, body, &secrets);
        assert_eq!(
            (bad.kind(), bad.code()),
            (ErrorType::InvalidQuery, Some("INVALID_PARAMETER_VALUE"))
        );
        assert!(bad.message().contains("bad wait_timeout"), "{}", bad.message());
        for (status, kind) in [
            (StatusCode::UNAUTHORIZED, ErrorType::AuthenticationFailed),
            (StatusCode::FORBIDDEN, ErrorType::AuthenticationFailed),
            (StatusCode::TOO_MANY_REQUESTS, ErrorType::RateLimited),
            (StatusCode::SERVICE_UNAVAILABLE, ErrorType::HttpError),
            (StatusCode::NOT_FOUND, ErrorType::NotFound),
        ] {
            let error = api_error(status, "not json", &secrets);
            assert_eq!(error.kind(), kind, "{status}");
            assert_eq!(error.code(), Some(status.as_str()), "{status}");
        }
    }

    #[test]
    fn a_server_message_quoting_the_token_is_not_shown() {
        let mut secrets = Secrets::default();
        secrets.add("dapi-secret");
        let body = r#"{"error_code":"UNAUTHENTICATED","message":"token dapi-secret is invalid"}"#;
        let error = api_error(StatusCode::UNAUTHORIZED, body, &secrets);
        assert!(!error.message().contains("dapi-secret"), "{}", error.message());
        assert!(error.message().contains("UNAUTHENTICATED"), "{}", error.message());
    }

    #[test]
    fn terminal_states_carry_the_servers_error_code_and_message() {
        let secrets = Secrets::default();
        let failed = json!({"status": {"state": "FAILED", "sql_state": "42601",
            "error": {"error_code": "BAD_REQUEST", "message": "[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'"}}});
        let error = state_error(State::Failed, &failed, &secrets);
        assert_eq!(
            (error.kind(), error.code()),
            (ErrorType::InvalidQuery, Some("BAD_REQUEST"))
        );
        assert!(error.message().contains("PARSE_SYNTAX_ERROR") && error.message().contains("42601"));
        let transient = json!({"status": {"state": "FAILED",
            "error": {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "try later"}}});
        assert_eq!(
            state_error(State::Failed, &transient, &secrets).kind(),
            ErrorType::ConnectionFailed
        );
        let canceled = state_error(
            State::Canceled,
            &json!({"status": {"state": "CANCELED"}}),
            &secrets,
        );
        assert_eq!(
            (canceled.kind(), canceled.code()),
            (ErrorType::InvalidQuery, Some("CANCELED"))
        );
        let closed = state_error(State::Closed, &json!({"status": {"state": "CLOSED"}}), &secrets);
        assert_eq!(closed.code(), Some("CLOSED"));
    }

    #[test]
    fn a_format_refusal_is_told_apart_from_a_query_error() {
        let arrow = DriverError::new(
            ErrorType::InvalidQuery,
            "Databricks answered (HTTP 400) (INVALID_PARAMETER_VALUE): ARROW_STREAM is not supported",
        )
        .with_code("INVALID_PARAMETER_VALUE");
        assert!(refuses_format(&arrow));
        let syntax = DriverError::new(ErrorType::InvalidQuery, "syntax error").with_code("BAD_REQUEST");
        assert!(!refuses_format(&syntax));
    }

    #[test]
    fn short_waits_submit_without_holding_the_request() {
        let long = statement_body(
            "w",
            "SELECT 1",
            Vec::new(),
            "INLINE",
            "JSON_ARRAY",
            (None, None),
            Duration::from_secs(300),
        );
        assert_eq!(long["wait_timeout"], "10s");
        assert_eq!(long["on_wait_timeout"], "CONTINUE");
        assert!(long.get("parameters").is_none() && long.get("catalog").is_none());
        let short = statement_body(
            "w",
            "SELECT 1",
            Vec::new(),
            "INLINE",
            "JSON_ARRAY",
            (Some("main"), None),
            Duration::from_secs(5),
        );
        assert_eq!(short["wait_timeout"], "0s");
        assert_eq!(short["catalog"], "main");
    }
}
