//! Snowflake through its SQL API v2 with the connector's OAuth access
//! token: connection tests and `sql_query` steps (see `design.md` beside
//! this file for a statement's life).
//!
//! `account` names the account's host
//! (`https://<account>.snowflakecomputing.com`, underscores written as
//! hyphens as Snowflake's URLs want them); `warehouse`, `database`,
//! `schema` and `role` go with every statement. `{{name}}` parameters
//! become `?` bindings (`"1": {"type", "value"}`); their values never enter
//! the statement text.

mod results;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use ferry_shared::connectors::ConnectorType;
use ferry_shared::domain::StepType;
use ferry_shared::domain::params::{ParamValue, Placeholder};
use ferry_shared::oauth_refresh::Refresher;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::connectors::config::{Fields, PoolSettings};
use crate::connectors::errors::{DriverError, ErrorType, Secrets};
use crate::connectors::http::{cancelled, shorten};
use crate::connectors::oauth_http::{Answer, ApiClient, TOKEN_FIELDS, vendor_url};
use crate::connectors::warehouse::{bound_query, test_limit, within_statement_timeout};
use crate::connectors::{ConnectorPool, ConnectorSpec, Driver, NetworkPolicy, StepRequest, TestDetails};
use crate::extract::{ExtractError, Output, ReadPath};

/// Where statements are submitted; every statement path starts with it.
const STATEMENTS: &str = "api/v2/statements";
/// The first pause between status polls; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(5);
/// Bound of one status, partition or cancel request.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A `snowflake` connector's typed config.
#[derive(Debug)]
pub(crate) struct SnowflakeConfig {
    /// The account identifier as its host spells it (lowercase, `_` → `-`).
    pub account_host: String,
    pub warehouse: String,
    pub database: String,
    pub schema: Option<String>,
    pub role: Option<String>,
    /// `connection_timeout_seconds` bounds connecting and a test;
    /// `statement_timeout_seconds` a statement (sent as its `timeout` too).
    pub pool: PoolSettings,
}

impl SnowflakeConfig {
    /// Reads the config of a connector declared by `decl`; a field the
    /// type does not declare (other than the sealed OAuth tokens) is
    /// refused.
    pub(crate) fn read(decl: &'static ConnectorType, map: &Map<String, Value>) -> Result<Self, DriverError> {
        Fields::parse(decl, map, |fields| {
            let account = fields.name("account")?;
            let account_host = account_host(&account)?;
            for token in TOKEN_FIELDS {
                fields.str(token)?;
            }
            Ok(SnowflakeConfig {
                account_host,
                warehouse: fields.name("warehouse")?,
                database: fields.name("database")?,
                schema: fields.str("schema")?.map(str::to_owned),
                role: fields.str("role")?.map(str::to_owned),
                pool: PoolSettings::read(fields)?,
            })
        })
    }
}

/// The host of an account identifier: `orgname-accountname` or a locator
/// with its region (`xy12345.us-east-1`, `xy12345.eu-west-1.aws`), letters,
/// digits, `-`, `_` and `.` only.
fn account_host(account: &str) -> Result<String, DriverError> {
    let account = account.trim().to_ascii_lowercase();
    let fits = !account.is_empty()
        && account.len() <= 200
        && account.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !fits {
        return Err(DriverError::invalid_config(
            "config.account must be an account identifier (orgname-accountname or xy12345.us-east-1)",
        ));
    }
    Ok(format!("{}.snowflakecomputing.com", account.replace('_', "-")))
}

/// The Snowflake family.
pub(crate) struct Snowflake;

#[async_trait]
impl Driver for Snowflake {
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        Ok(Box::new(SnowflakeHandle::open(spec, policy)?))
    }
}

/// One connector's client and settings.
pub(crate) struct SnowflakeHandle {
    client: ApiClient,
    config: SnowflakeConfig,
    secrets: Secrets,
}

/// 429 (too many requests) and 503 (service unavailable) are Snowflake's
/// signals to slow down.
fn is_throttle(status: StatusCode, _body: &[u8]) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
}

impl SnowflakeHandle {
    fn open(spec: &ConnectorSpec, policy: &NetworkPolicy) -> Result<Self, DriverError> {
        let (decl, _) = spec.driver()?;
        let config = SnowflakeConfig::read(decl, &spec.config)?;
        let base = vendor_url(&config.account_host, "/")?;
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("x-snowflake-authorization-token-type"),
            HeaderValue::from_static("OAUTH"),
        );
        let client = ApiClient::new(spec, base, headers, policy, &config.pool, is_throttle)?;
        Ok(SnowflakeHandle {
            client,
            config,
            secrets: spec.secrets(),
        })
    }

    /// The body of a statement: its text, bindings, `timeout` (seconds)
    /// and the connector's namespace.
    fn body(&self, statement: &str, bindings: Option<Value>, timeout: Duration) -> Value {
        let mut body = json!({
            "statement": statement,
            "timeout": timeout.as_secs().max(1),
            "warehouse": self.config.warehouse,
            "database": self.config.database,
        });
        if let Some(schema) = &self.config.schema {
            body["schema"] = json!(schema);
        }
        if let Some(role) = &self.config.role {
            body["role"] = json!(role);
        }
        if let Some(bindings) = bindings {
            body["bindings"] = bindings;
        }
        body
    }

    /// Runs `body` to its end: submitted asynchronously (202 with a
    /// statement handle), polled (100 ms doubling to 5 s) until it answers
    /// 200 with its result set or fails. A statement abandoned on the way
    /// (cancelled step, deadline, failure) is cancelled on Snowflake.
    async fn execute(&self, body: &Value, cancel: &CancellationToken) -> Result<Executed, DriverError> {
        let mut running = Running {
            client: self.client.clone(),
            handle: None,
        };
        let url = self
            .client
            .url(&format!("{STATEMENTS}?async=true&requestId={}", uuid_v4()))?;
        let mut answer = self
            .client
            .send(Method::POST, &url, Some(body), &[], CALL_TIMEOUT, cancel)
            .await?;
        let mut delay = POLL_FIRST;
        loop {
            match answer.status {
                StatusCode::OK => {
                    let result = answer.json();
                    let handle = handle_of(&result).or(running.handle.take()).ok_or_else(|| {
                        DriverError::unknown("Snowflake answered a result set without a statement handle")
                    })?;
                    running.handle = None;
                    return Ok(Executed { handle, result });
                }
                StatusCode::ACCEPTED => {
                    let status = answer.json();
                    let handle = handle_of(&status).ok_or_else(|| {
                        DriverError::unknown("Snowflake accepted the statement without a statement handle")
                    })?;
                    running.handle = Some(handle.clone());
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => return Err(cancelled()),
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(POLL_MAX);
                    let url = self.client.url(&format!("{STATEMENTS}/{handle}"))?;
                    answer = self
                        .client
                        .send(Method::GET, &url, None, &[], CALL_TIMEOUT, cancel)
                        .await?;
                }
                _ => {
                    if answer.status == StatusCode::UNPROCESSABLE_ENTITY
                        || answer.status == StatusCode::REQUEST_TIMEOUT
                    {
                        // The statement ended on Snowflake: nothing to cancel.
                        running.handle = None;
                    }
                    return Err(api_error(&answer, &self.secrets));
                }
            }
        }
    }

    /// Result partition `index` (> 0) of statement `handle`: its rows.
    async fn partition(
        &self,
        handle: &str,
        index: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<Value>, DriverError> {
        let url = self
            .client
            .url(&format!("{STATEMENTS}/{handle}?partition={index}"))?;
        let answer = self
            .client
            .send(
                Method::GET,
                &url,
                None,
                &[(header::ACCEPT_ENCODING, "gzip")],
                CALL_TIMEOUT,
                cancel,
            )
            .await?;
        if answer.status != StatusCode::OK {
            return Err(api_error(&answer, &self.secrets));
        }
        match answer.json() {
            Value::Object(mut object) => match object.remove("data") {
                Some(Value::Array(rows)) => Ok(rows),
                _ => Err(DriverError::unknown(format!(
                    "Snowflake answered result partition {index} without rows"
                ))),
            },
            Value::Array(rows) => Ok(rows),
            _ => Err(DriverError::unknown(format!(
                "Snowflake answered result partition {index} with a body that is not JSON"
            ))),
        }
    }
}

/// A statement that reached its result.
struct Executed {
    handle: String,
    /// The 200 answer: `resultSetMetaData` and partition 0's `data`.
    result: Value,
}

/// A submitted statement not yet finished: dropping it with a handle
/// cancels the statement in the background.
struct Running {
    client: ApiClient,
    handle: Option<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let never = CancellationToken::new();
                let Ok(url) = client.url(&format!("{STATEMENTS}/{handle}/cancel")) else {
                    return;
                };
                let empty = json!({});
                let call = client.send(
                    Method::POST,
                    &url,
                    Some(&empty),
                    &[],
                    Duration::from_secs(10),
                    &never,
                );
                match tokio::time::timeout(Duration::from_secs(30), call).await {
                    Ok(Ok(answer)) if answer.status.is_success() => {
                        tracing::debug!(statement_handle = %handle, "snowflake statement cancelled")
                    }
                    _ => {
                        tracing::warn!(statement_handle = %handle, "cancelling a snowflake statement failed")
                    }
                }
            });
        }
    }
}

/// A statement handle as it may appear in a path (a UUID).
fn handle_of(body: &Value) -> Option<String> {
    body.get("statementHandle")
        .and_then(Value::as_str)
        .filter(|id| {
            !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_owned)
}

/// A random request id (UUID v4 text) for `requestId`.
fn uuid_v4() -> String {
    let bytes: [u8; 16] = rand_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        ["8", "9", "a", "b"][usize::from(bytes[8] & 3)],
        &hex[17..20],
        &hex[20..32]
    )
}

fn rand_bytes() -> [u8; 16] {
    ulid::Ulid::new().to_bytes()
}

/// An error answer of the SQL API in the vocabulary, with Snowflake's
/// `code` (and `sqlState`) and its message (unless it holds a secret):
///
/// | status | kind |
/// |---|---|
/// | 400 | `invalid_query` |
/// | 401, 403 | `authentication_failed` |
/// | 404 | `http_error` (no such statement or account) |
/// | 408 | `timeout` (the statement ran past its `timeout`) |
/// | 422 | `invalid_query` (the statement failed; code: its SQLSTATE) |
/// | 429 | `rate_limited` |
/// | other | `http_error` with the status as code |
fn api_error(answer: &Answer, secrets: &Secrets) -> DriverError {
    let body = answer.json();
    let text = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .filter(|text| text.len() <= 2000)
    };
    let code = text("code").filter(|code| code.len() <= 20);
    let sql_state = text("sqlState").filter(|code| code.len() <= 10);
    let message = text("message").and_then(|text| secrets.scrub(&shorten(text.trim())));
    let http = answer.status.as_u16().to_string();
    let (kind, lead) = match answer.status {
        StatusCode::BAD_REQUEST => (ErrorType::InvalidQuery, "Snowflake refused the request"),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => (
            ErrorType::AuthenticationFailed,
            "Snowflake refused the connector's OAuth token",
        ),
        StatusCode::REQUEST_TIMEOUT => (
            ErrorType::Timeout,
            "the statement ran longer than statement_timeout_seconds on Snowflake",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => (ErrorType::InvalidQuery, "the statement failed"),
        StatusCode::TOO_MANY_REQUESTS => (
            ErrorType::RateLimited,
            "Snowflake is rate limiting this connector",
        ),
        _ => (ErrorType::HttpError, "Snowflake answered"),
    };
    let mut full = format!("{lead} (HTTP {http})");
    if let Some(code) = code {
        full.push_str(&format!(" [{code}]"));
    }
    if let Some(message) = message {
        full.push_str(": ");
        full.push_str(&message);
    }
    if let Some(state) = sql_state {
        full.push_str(&format!(" (SQLSTATE {state})"));
    }
    let code = match kind {
        ErrorType::InvalidQuery => sql_state.or(code).unwrap_or(&http).to_owned(),
        _ => http,
    };
    DriverError::new(kind, full).with_code(code)
}

/// The statement of a `sql_query` step with its `{{name}}` placeholders
/// as `?` and its bindings (`"1": {"type", "value"}`, values as text):
/// FIXED, REAL, TEXT, BOOLEAN; dates and timestamps as ISO 8601 TEXT,
/// which Snowflake converts where a DATE or TIMESTAMP is expected.
fn bound_statement(step: &StepRequest<'_>) -> Result<(String, Option<Value>), ExtractError> {
    let (_, bound) = bound_query(step, Placeholder::Question)?;
    if bound.params.is_empty() {
        return Ok((bound.sql, None));
    }
    let bindings: Map<String, Value> = bound
        .params
        .iter()
        .enumerate()
        .map(|(index, value)| ((index + 1).to_string(), binding(value)))
        .collect();
    Ok((bound.sql, Some(Value::Object(bindings))))
}

fn binding(value: &ParamValue) -> Value {
    let (kind, text) = match value {
        ParamValue::Text(text) => ("TEXT", text.clone()),
        ParamValue::Integer(n) => ("FIXED", n.to_string()),
        ParamValue::Number(x) => ("REAL", x.to_string()),
        ParamValue::Boolean(b) => ("BOOLEAN", b.to_string()),
        ParamValue::Date(day) => ("TEXT", day.format("%Y-%m-%d").to_string()),
        ParamValue::Timestamp(at) => ("TEXT", at.to_rfc3339()),
    };
    json!({"type": kind, "value": text})
}

#[async_trait]
impl ConnectorPool for SnowflakeHandle {
    /// Runs `SELECT CURRENT_VERSION()` through the statement path steps
    /// use, within `connection_timeout_seconds`: it proves the token, the
    /// account, the warehouse and the role.
    async fn test(&self, _addrs: &[SocketAddr], _policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        let budget = self.config.pool.connect_timeout;
        let cancel = CancellationToken::new();
        let body = self.body("SELECT CURRENT_VERSION()", None, budget);
        let limit = test_limit(budget);
        let executed = tokio::time::timeout(limit, self.execute(&body, &cancel))
            .await
            .map_err(|_| {
                DriverError::new(
                    ErrorType::Timeout,
                    format!(
                        "Snowflake did not answer SELECT CURRENT_VERSION() within {} s (a suspended warehouse may still be resuming)",
                        limit.as_secs().max(1)
                    ),
                )
            })??;
        let version = executed
            .result
            .pointer("/data/0/0")
            .and_then(Value::as_str)
            .filter(|v| v.len() <= 64)
            .map(|v| format!("Snowflake {v}"));
        Ok(TestDetails {
            version,
            ..TestDetails::default()
        })
    }

    /// Runs a `sql_query` step: submits the statement with its bindings,
    /// polls it (bounded by `statement_timeout_seconds`, cancelled with the
    /// step) and writes its result partition by partition.
    async fn run(&self, step: &StepRequest<'_>, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        if step.step_type != StepType::SqlQuery {
            return Err(step.unsupported());
        }
        let (statement, bindings) = bound_statement(step)?;
        let limit = self.config.pool.statement_timeout;
        let cancel = out.cancel().clone();
        let body = self.body(&statement, bindings, limit);
        let read = async {
            let executed = self.execute(&body, &cancel).await?;
            results::read(self, &executed, out, &cancel).await
        };
        within_statement_timeout(limit, "the statement", read).await?;
        Ok(ReadPath::Snowflake)
    }

    fn attach_refresher(&self, refresher: &Refresher) {
        self.client.bearer().attach(refresher);
    }
}

#[cfg(test)]
mod tests;
