//! Google BigQuery through its REST API v2 with the connector's OAuth
//! access token: connection tests and `sql_query` steps (see `design.md`
//! beside this file for a query's life).
//!
//! `project_id` runs (and is billed for) the jobs, `location` is where they
//! run, `dataset` is the default dataset for unqualified table names.
//! Queries are GoogleSQL; `{{name}}` parameters become positional `?`
//! query parameters bound with their declared type, never entering the
//! query text.

mod results;

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use ferry_shared::connectors::ConnectorType;
use ferry_shared::domain::StepType;
use ferry_shared::domain::params::{ParamValue, Placeholder};
use ferry_shared::oauth_refresh::Refresher;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::connectors::config::{Fields, PoolSettings};
use crate::connectors::errors::{DriverError, ErrorType, Secrets};
use crate::connectors::http::shorten;
use crate::connectors::oauth_http::{Answer, ApiClient, TOKEN_FIELDS, vendor_url};
use crate::connectors::warehouse::{bound_query, test_limit, within_statement_timeout};
use crate::connectors::{ConnectorPool, ConnectorSpec, Driver, NetworkPolicy, StepRequest, TestDetails};
use crate::extract::{ExtractError, Output, ReadPath};

/// The API's host; tests reach a stand-in for it
/// ([`crate::connectors::oauth_http::testing::serve_at`]).
pub const API_HOST: &str = "bigquery.googleapis.com";
/// Rows asked for per page (BigQuery also cuts pages at 10 MB).
const PAGE_ROWS: u64 = 10_000;
/// How long BigQuery holds a `jobs.query` or `getQueryResults` call
/// waiting for the job before answering `jobComplete: false`.
const HOLD_MS: u64 = 10_000;
/// Bound of one API call (beyond the hold).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A `bigquery` connector's typed config.
#[derive(Debug)]
pub(crate) struct BigqueryConfig {
    pub project_id: String,
    pub dataset: Option<String>,
    pub location: String,
    /// `connection_timeout_seconds` bounds connecting and a test;
    /// `statement_timeout_seconds` a query (sent as `jobTimeoutMs` too).
    pub pool: PoolSettings,
}

impl BigqueryConfig {
    pub(crate) fn read(decl: &'static ConnectorType, map: &Map<String, Value>) -> Result<Self, DriverError> {
        Fields::parse(decl, map, |fields| {
            let project_id = fields.name("project_id")?;
            if !project_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
            {
                return Err(DriverError::invalid_config(
                    "config.project_id must be a Google Cloud project id",
                ));
            }
            for token in TOKEN_FIELDS {
                fields.str(token)?;
            }
            Ok(BigqueryConfig {
                project_id,
                dataset: fields.str("dataset")?.map(str::to_owned),
                location: fields.name("location")?,
                pool: PoolSettings::read(fields)?,
            })
        })
    }
}

/// The BigQuery family.
pub(crate) struct Bigquery;

#[async_trait]
impl Driver for Bigquery {
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        Ok(Box::new(BigqueryHandle::open(spec, policy)?))
    }
}

pub(crate) struct BigqueryHandle {
    client: ApiClient,
    config: BigqueryConfig,
    secrets: Secrets,
}

/// BigQuery's signals to slow down: 429, 503, a 403 whose reason is
/// `rateLimitExceeded`, and a 500 `backendError` (to be retried with
/// backoff, as Google's error table says).
fn is_throttle(status: StatusCode, body: &[u8]) -> bool {
    match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => true,
        StatusCode::FORBIDDEN => reason(body).as_deref() == Some("rateLimitExceeded"),
        StatusCode::INTERNAL_SERVER_ERROR => reason(body).as_deref() == Some("backendError"),
        _ => false,
    }
}

/// The first `error.errors[].reason` of an error body.
fn reason(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    body.pointer("/error/errors/0/reason")?
        .as_str()
        .filter(|r| r.len() <= 64)
        .map(str::to_owned)
}

impl BigqueryHandle {
    fn open(spec: &ConnectorSpec, policy: &NetworkPolicy) -> Result<Self, DriverError> {
        let (decl, _) = spec.driver()?;
        let config = BigqueryConfig::read(decl, &spec.config)?;
        let base = vendor_url(API_HOST, "/bigquery/v2/")?;
        let client = ApiClient::new(spec, base, HeaderMap::new(), policy, &config.pool, is_throttle)?;
        Ok(BigqueryHandle {
            client,
            config,
            secrets: spec.secrets(),
        })
    }

    fn project_path(&self, rest: &str) -> String {
        format!("projects/{}/{rest}", self.config.project_id)
    }

    /// The `jobs.query` request of `query` with its positional parameters.
    fn request(&self, query: &str, parameters: Vec<Value>, timeout: Duration) -> Value {
        let mut body = json!({
            "query": query,
            "useLegacySql": false,
            "location": self.config.location,
            "maxResults": PAGE_ROWS,
            "timeoutMs": HOLD_MS,
            "jobTimeoutMs": timeout.as_millis().to_string(),
            "requestId": ulid::Ulid::new().to_string(),
            "formatOptions": {"useInt64Timestamp": true},
        });
        if let Some(dataset) = &self.config.dataset {
            body["defaultDataset"] = json!({"projectId": self.config.project_id, "datasetId": dataset});
        }
        if !parameters.is_empty() {
            body["parameterMode"] = json!("POSITIONAL");
            body["queryParameters"] = Value::Array(parameters);
        }
        body
    }

    /// Runs a query to its first page of rows: `jobs.query`, then
    /// `getQueryResults` while the job is not complete (each call held up
    /// to 10 s by BigQuery). A job abandoned on the way (cancelled step,
    /// deadline, failure) is cancelled.
    async fn execute(&self, body: &Value, cancel: &CancellationToken) -> Result<(Job, Value), DriverError> {
        let url = self.client.url(&self.project_path("queries"))?;
        let answer = self
            .client
            .send(Method::POST, &url, Some(body), &[], CALL_TIMEOUT, cancel)
            .await?;
        let mut page = self.ok(answer)?;
        let job = Job::of(&page)
            .ok_or_else(|| DriverError::unknown("BigQuery answered without a job reference"))?;
        let mut running = Running {
            client: self.client.clone(),
            project: self.config.project_id.clone(),
            job: Some(job.clone()),
        };
        while page.get("jobComplete").and_then(Value::as_bool) != Some(true) {
            page = self.results(&job, None, cancel).await?;
        }
        running.job = None;
        Ok((job, page))
    }

    /// One `getQueryResults` call (a page after `page_token`, or the first
    /// once the job completes).
    async fn results(
        &self,
        job: &Job,
        page_token: Option<&str>,
        cancel: &CancellationToken,
    ) -> Result<Value, DriverError> {
        let mut url = self
            .client
            .url(&self.project_path(&format!("queries/{}", job.id)))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("location", &job.location)
                .append_pair("maxResults", &PAGE_ROWS.to_string())
                .append_pair("timeoutMs", &HOLD_MS.to_string())
                .append_pair("formatOptions.useInt64Timestamp", "true");
            if let Some(token) = page_token {
                query.append_pair("pageToken", token);
            }
        }
        let answer = self
            .client
            .send(Method::GET, &url, None, &[], CALL_TIMEOUT, cancel)
            .await?;
        self.ok(answer)
    }

    fn ok(&self, answer: Answer) -> Result<Value, DriverError> {
        if answer.status.is_success() {
            match answer.json() {
                Value::Object(object) => Ok(Value::Object(object)),
                _ => Err(DriverError::unknown(format!(
                    "{} answered with a body that is not a JSON object",
                    self.client.target()
                ))),
            }
        } else {
            Err(api_error(&answer, &self.secrets))
        }
    }
}

/// A query job, as its `jobReference` names it.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: String,
    pub location: String,
}

impl Job {
    fn of(page: &Value) -> Option<Job> {
        let reference = page.get("jobReference")?;
        let id = reference.get("jobId")?.as_str().filter(|id| {
            !id.is_empty()
                && id.len() <= 1024
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })?;
        let location = reference.get("location").and_then(Value::as_str).unwrap_or("US");
        Some(Job {
            id: id.to_owned(),
            location: location.to_owned(),
        })
    }
}

/// A job not yet complete: dropping it cancels the job in the background.
struct Running {
    client: ApiClient,
    project: String,
    job: Option<Job>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        let client = self.client.clone();
        let path = format!(
            "projects/{}/jobs/{}/cancel?location={}",
            self.project, job.id, job.location
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let never = CancellationToken::new();
                let Ok(url) = client.url(&path) else {
                    return;
                };
                let call = client.send(Method::POST, &url, None, &[], Duration::from_secs(10), &never);
                match tokio::time::timeout(Duration::from_secs(30), call).await {
                    Ok(Ok(answer)) if answer.status.is_success() => {
                        tracing::debug!(job_id = %job.id, "bigquery job cancelled")
                    }
                    _ => tracing::warn!(job_id = %job.id, "cancelling a bigquery job failed"),
                }
            });
        }
    }
}

/// An error answer (`{"error": {code, message, errors: [{reason}], status}}`)
/// in the vocabulary, with the first reason as code:
///
/// | answer | kind |
/// |---|---|
/// | 400 (`invalidQuery`, `invalid`, …) | `invalid_query` |
/// | 401, 403 (other than rate limits) | `authentication_failed` |
/// | 403/429 `rateLimitExceeded`, 429 | `rate_limited` |
/// | 403 `quotaExceeded` | `rate_limited` (a quota: not retried quickly by BigQuery) |
/// | 404 | `database_not_found` (project, dataset or job) |
/// | other | `http_error` with the status as code |
fn api_error(answer: &Answer, secrets: &Secrets) -> DriverError {
    let body = answer.json();
    let reason = body
        .pointer("/error/errors/0/reason")
        .and_then(Value::as_str)
        .filter(|r| r.len() <= 64);
    let message = body
        .pointer("/error/message")
        .and_then(Value::as_str)
        .and_then(|text| secrets.scrub(&shorten(text.trim())));
    let http = answer.status.as_u16().to_string();
    let (kind, lead) = match (answer.status, reason) {
        (_, Some("rateLimitExceeded" | "quotaExceeded")) | (StatusCode::TOO_MANY_REQUESTS, _) => {
            (ErrorType::RateLimited, "BigQuery is rate limiting this connector")
        }
        (StatusCode::BAD_REQUEST, _) => (ErrorType::InvalidQuery, "BigQuery refused the query"),
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => (
            ErrorType::AuthenticationFailed,
            "BigQuery refused the connector's OAuth token",
        ),
        (StatusCode::NOT_FOUND, _) => (
            ErrorType::DatabaseNotFound,
            "BigQuery found no such project, dataset or job",
        ),
        _ => (ErrorType::HttpError, "BigQuery answered"),
    };
    let mut full = format!("{lead} (HTTP {http})");
    if let Some(reason) = reason {
        full.push_str(&format!(" [{reason}]"));
    }
    if let Some(message) = message {
        full.push_str(": ");
        full.push_str(&message);
    }
    let code = match kind {
        ErrorType::InvalidQuery | ErrorType::DatabaseNotFound => reason.unwrap_or(&http).to_owned(),
        _ => http,
    };
    DriverError::new(kind, full).with_code(code)
}

/// The query of a `sql_query` step with its `{{name}}` placeholders as `?`
/// and one positional query parameter per occurrence: STRING, INT64,
/// FLOAT64, BOOL, DATE, TIMESTAMP.
fn bound_parameters(step: &StepRequest<'_>) -> Result<(String, Vec<Value>), ExtractError> {
    let (_, bound) = bound_query(step, Placeholder::Question)?;
    Ok((bound.sql, bound.params.iter().map(parameter).collect()))
}

fn parameter(value: &ParamValue) -> Value {
    let (kind, text) = match value {
        ParamValue::Text(text) => ("STRING", text.clone()),
        ParamValue::Integer(n) => ("INT64", n.to_string()),
        ParamValue::Number(x) => ("FLOAT64", x.to_string()),
        ParamValue::Boolean(b) => ("BOOL", b.to_string()),
        ParamValue::Date(day) => ("DATE", day.format("%Y-%m-%d").to_string()),
        ParamValue::Timestamp(at) => ("TIMESTAMP", at.format("%Y-%m-%d %H:%M:%S%.f%:z").to_string()),
    };
    json!({"parameterType": {"type": kind}, "parameterValue": {"value": text}})
}

#[async_trait]
impl ConnectorPool for BigqueryHandle {
    /// Runs `SELECT 1` in the connector's project and location within
    /// `connection_timeout_seconds`: it proves the token, the project and
    /// the right to run jobs in it.
    async fn test(&self, _addrs: &[SocketAddr], _policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        let budget = self.config.pool.connect_timeout;
        let limit = test_limit(budget);
        let cancel = CancellationToken::new();
        let body = self.request("SELECT 1", Vec::new(), budget);
        let (_, page) = tokio::time::timeout(limit, self.execute(&body, &cancel))
            .await
            .map_err(|_| {
                DriverError::new(
                    ErrorType::Timeout,
                    format!(
                        "BigQuery did not answer SELECT 1 within {} s",
                        limit.as_secs().max(1)
                    ),
                )
            })??;
        match page.pointer("/rows/0/f/0/v").and_then(Value::as_str) {
            Some("1") => Ok(TestDetails {
                version: Some("BigQuery (GoogleSQL)".into()),
                ..TestDetails::default()
            }),
            _ => Err(DriverError::unknown(
                "BigQuery answered SELECT 1 with something else",
            )),
        }
    }

    /// Runs a `sql_query` step: `jobs.query` with its parameters, waits
    /// for the job (bounded by `statement_timeout_seconds`, cancelled with
    /// the step), then writes its rows page by page (`pageToken`).
    async fn run(&self, step: &StepRequest<'_>, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        if step.step_type != StepType::SqlQuery {
            return Err(step.unsupported());
        }
        let (query, parameters) = bound_parameters(step)?;
        let limit = self.config.pool.statement_timeout;
        let cancel = out.cancel().clone();
        let body = self.request(&query, parameters, limit);
        let read = async {
            let (job, first) = self.execute(&body, &cancel).await?;
            results::read(self, &job, first, out, &cancel).await
        };
        within_statement_timeout(limit, "the query", read).await?;
        Ok(ReadPath::Bigquery)
    }

    fn attach_refresher(&self, refresher: &Refresher) {
        self.client.bearer().attach(refresher);
    }
}

#[cfg(test)]
mod tests;
