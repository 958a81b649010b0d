//! The `http_request` step runner: requests built from the step's config
//! and parameters, sent through the connector's pooled client (its auth on
//! every request), retried on throttling and server errors, paged, and the
//! records of each page written as Arrow batches as they arrive.
//!
//! Memory stays flat in the number of pages: one page body is held at a
//! time (at most [`MAX_BODY_BYTES`]), its records are parsed on a blocking
//! thread into column builders, and full batches go to the sink through a
//! channel of two while the parse goes on. See `design.md` beside this
//! file for the columns, the passes and the limits.

use std::hash::{DefaultHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::Field;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::Utc;
use ferry_shared::domain::ErrorKind;
use ferry_shared::steps::http_request::{HttpRequest, PageFacts, ResponseShape};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::paging::{Page, Pager};
use super::records::{MAX_PASSES, RecordError, Table, fields_kept_changing, read_again_widened, read_page};
use super::retry::{ATTEMPTS, MAX_WAIT, backoff, retry_after, retryable_error, retryable_status};
use super::{Call, RestHandle, append_path};
use crate::connectors::{StepRequest, http};
use crate::extract::{ExtractError, Output, ReadPath};

/// The largest response body a page may have: a bigger one fails the step
/// (page through it with a smaller limit).
pub(crate) const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// Characters of an error response's body quoted in the step's error.
const EXCERPT_CHARS: usize = 200;

/// Runs an `http_request` step on `handle`'s client.
pub(crate) async fn run(
    handle: &RestHandle,
    step: &StepRequest<'_>,
    out: &mut Output<'_>,
) -> Result<ReadPath, ExtractError> {
    let config = HttpRequest::parse(step.config).map_err(|error| match error {
        ferry_shared::Error::Validation { field, message, .. } => ExtractError::new(
            ErrorKind::InvalidQuery,
            format!("{}: {message}", field.unwrap_or_else(|| "config".into())),
        ),
        other => ExtractError::new(ErrorKind::InvalidQuery, other.to_string()),
    })?;
    let request = Request::build(handle, &config, step)?;
    let shape = Arc::new(ResponseShape::of(&config));
    let mut table = Table::new(out.options().batch_rows, out.options().batch_bytes);
    for pass in 1..=MAX_PASSES {
        let mut reader = Reader {
            handle,
            request: &request,
            shape: shape.clone(),
            records_path: config.records_path.as_deref(),
            started: false,
        };
        table = reader
            .read(Pager::new(config.pagination.as_ref()), table, out)
            .await?;
        if !table.scanning() {
            if let Some(batch) = table.flush().map_err(record_error)? {
                reader.write(out, batch).await?;
            }
            if !reader.started {
                let schema = table.schema();
                out.start(fields(&schema))?;
            }
            return Ok(ReadPath::Http);
        }
        read_again_widened(pass, &mut table, out).await;
    }
    Err(fields_kept_changing())
}

/// The request of a step, parameters substituted, before paging.
struct Request {
    method: Method,
    /// `base_url` + path + query.
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    timeout: Option<Duration>,
    /// `GET /v1/items`: how messages name the request (no query: it is the
    /// step's, but a next link's may carry tokens).
    label: String,
}

impl Request {
    fn build(
        handle: &RestHandle,
        config: &HttpRequest,
        step: &StepRequest<'_>,
    ) -> Result<Request, ExtractError> {
        let path = substitute_path(&config.path, step)?;
        let mut url = append_path(&handle.base_url, &path, "path")?;
        if !config.query.is_empty() {
            let mut query = url.query_pairs_mut();
            for (name, value) in &config.query {
                query.append_pair(name, &step.substitute(value)?);
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            let invalid = |why: &str| {
                ExtractError::new(
                    ErrorKind::InvalidParameters,
                    format!("config.headers.{name}: {why}"),
                )
            };
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("not a header name"))?;
            let value = HeaderValue::from_str(&step.substitute(value)?)
                .map_err(|_| invalid("the value with its parameters is not a valid header value"))?;
            headers.insert(name, value);
        }
        if !headers.contains_key(header::ACCEPT) {
            headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        }
        let body = match &config.body {
            Some(body) => {
                if !headers.contains_key(header::CONTENT_TYPE) {
                    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                let body = step.substitute_json(body)?;
                Some(Bytes::from(serde_json::to_vec(&body).map_err(|e| {
                    ExtractError::internal_from("the request body could not be encoded", e)
                })?))
            }
            None => None,
        };
        Ok(Request {
            method: Method::from_bytes(config.method.as_str().as_bytes())
                .map_err(|e| ExtractError::internal_from("the request method was refused", e))?,
            label: format!("{} {}", config.method.as_str(), url.path()),
            url,
            headers,
            body,
            timeout: config.timeout_seconds.map(Duration::from_secs),
        })
    }
}

/// `path` with each `{{name}}` replaced by its value escaped as one URL
/// path segment (or query component, after a `?`): a value cannot add
/// segments, a query or a fragment. `.` and `..` are refused: URL
/// normalisation would move up the path.
fn substitute_path(path: &str, step: &StepRequest<'_>) -> Result<String, ExtractError> {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + 2 + len].trim();
        let value = step.param(name)?.to_text();
        if !out.contains('?') && (value == "." || value == "..") {
            return Err(ExtractError::new(
                ErrorKind::InvalidParameters,
                format!("parameter {name} is {value:?}, which would change the path's folder"),
            ));
        }
        escape_component(&value, &mut out);
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Percent-escapes everything but RFC 3986's unreserved characters.
fn escape_component(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// A response read to its end.
struct Fetched {
    headers: HeaderMap,
    /// Where the response came from, after redirects.
    url: Url,
    body: Bytes,
}

/// One pass over the pages.
struct Reader<'a> {
    handle: &'a RestHandle,
    request: &'a Request,
    shape: Arc<ResponseShape>,
    records_path: Option<&'a str>,
    /// Whether the sink was started in this pass.
    started: bool,
}

impl Reader<'_> {
    /// Reads every page into `table` (returned), writing full batches.
    async fn read(
        &mut self,
        mut pager: Pager,
        mut table: Table,
        out: &mut Output<'_>,
    ) -> Result<Table, ExtractError> {
        let origin = self.handle.base_url.origin();
        loop {
            let url = pager.url(&self.request.url);
            let Fetched {
                headers,
                url: answered,
                body,
            } = self.fetch(&url, out.cancel()).await?;
            let (back, facts, body_hash) = self.parse(body, table, out).await?;
            table = back;
            if pager.pages() == 0
                && !facts.found
                && let Some(path) = self.records_path
            {
                return Err(self.missing_records(path, &facts).await);
            }
            tracing::debug!(
                page = pager.pages() + 1,
                records = facts.records,
                "http_request page read"
            );
            let page = Page {
                records: facts.records,
                cursor: facts.cursor.as_ref(),
                headers: &headers,
                url: &answered,
                body_hash,
            };
            if !pager.advance(&page, &origin)? {
                return Ok(table);
            }
        }
    }

    /// Parses one page on a blocking thread while its full batches are
    /// written here; returns the table, what the page held and its hash.
    async fn parse(
        &mut self,
        body: Bytes,
        mut table: Table,
        out: &mut Output<'_>,
    ) -> Result<(Table, PageFacts, u64), ExtractError> {
        let (sender, mut batches) = mpsc::channel::<RecordBatch>(2);
        let shape = self.shape.clone();
        let parse = tokio::task::spawn_blocking(move || {
            let mut hasher = DefaultHasher::new();
            hasher.write(&body);
            let mut send = |batch| sender.blocking_send(batch).map_err(|_| RecordError::Closed);
            let facts = read_page(&body, &shape, &mut table, &mut send);
            (table, facts, hasher.finish())
        });
        let mut written = Ok(());
        while let Some(batch) = batches.recv().await {
            if let Err(error) = self.write(out, batch).await {
                written = Err(error);
                break;
            }
        }
        // The parse stops at its next batch once nobody receives.
        drop(batches);
        let (table, facts, hash) = parse
            .await
            .map_err(|e| ExtractError::internal_from("parsing a page failed unexpectedly", e))?;
        written?;
        Ok((table, facts.map_err(record_error)?, hash))
    }

    async fn write(&mut self, out: &mut Output<'_>, batch: RecordBatch) -> Result<(), ExtractError> {
        if !self.started {
            out.start(fields(&batch.schema()))?;
            self.started = true;
        }
        out.write(batch).await
    }

    /// Fetches `url`, trying again on throttling, server errors and
    /// transient connection failures (see [`super::retry`]).
    async fn fetch(&self, url: &Url, cancel: &CancellationToken) -> Result<Fetched, ExtractError> {
        let call = Call {
            method: self.request.method.clone(),
            url,
            headers: &self.request.headers,
            body: self.request.body.clone(),
            timeout: self.request.timeout,
        };
        let mut failed = 0;
        loop {
            let exchange = tokio::select! {
                exchange = self.exchange(&call) => exchange,
                () = cancel.cancelled() => return Err(ExtractError::cancelled()),
            };
            let (error, asked) = match exchange {
                Ok(Ok(fetched)) => return Ok(fetched),
                Ok(Err((status, headers, error))) => {
                    if !retryable_status(status) {
                        return Err(error);
                    }
                    (error, retry_after(&headers, Utc::now()))
                }
                Err(error) if retryable_error(&error) => (ExtractError::from(error), None),
                Err(error) => return Err(error.into()),
            };
            failed += 1;
            if failed >= ATTEMPTS {
                return Err(after_attempts(error, failed));
            }
            let wait = asked.unwrap_or_else(|| backoff(failed));
            if wait > MAX_WAIT {
                let message = format!(
                    "{}; the server asked to wait {} s, longer than the {} s a step waits",
                    error.message,
                    wait.as_secs(),
                    MAX_WAIT.as_secs()
                );
                return Err(ExtractError { message, ..error });
            }
            tracing::info!(
                attempt = failed,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %error.message,
                "http_request trying again"
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Err(ExtractError::cancelled()),
            }
        }
    }

    /// One request: the body of a success, or the status, headers and
    /// error of a failure (`Err` when no response came).
    #[allow(clippy::type_complexity)]
    async fn exchange(
        &self,
        call: &Call<'_>,
    ) -> Result<Result<Fetched, (StatusCode, HeaderMap, ExtractError)>, crate::connectors::DriverError> {
        let mut response = self.handle.send(call).await?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let url = response.url().clone();
        if !status.is_success() {
            let excerpt = self.excerpt(response).await;
            let error = self.status_error(status, &headers, excerpt.as_deref());
            return Ok(Err((status, headers, error)));
        }
        if response
            .content_length()
            .is_some_and(|length| length > MAX_BODY_BYTES as u64)
        {
            return Ok(Err((status, headers, too_large(&self.request.label))));
        }
        let mut body = Vec::with_capacity(response.content_length().map_or(64 * 1024, |n| n as usize));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| http::request_error(&error, call.url))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Ok(Err((status, headers, too_large(&self.request.label))));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Ok(Fetched {
            headers,
            url,
            body: Bytes::from(body),
        }))
    }

    /// The start of an error response's body, on one line, if it holds no
    /// secret.
    async fn excerpt(&self, mut response: reqwest::Response) -> Option<String> {
        let mut bytes = Vec::new();
        while bytes.len() < 4 * EXCERPT_CHARS
            && let Ok(Some(chunk)) = response.chunk().await
        {
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&bytes);
        let line: String = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        if line.is_empty() {
            return None;
        }
        let short: String = line.chars().take(EXCERPT_CHARS).collect();
        let short = if short.len() < line.len() {
            format!("{short}…")
        } else {
            short
        };
        // Checked whole: a secret cut in half by the excerpt would still show.
        self.handle.scrub(&line).await.map(|_| short)
    }

    /// A failed response as the step's error: 401/403 are
    /// `authentication_failed`, 429 `rate_limited`, others `http_error`,
    /// all with the status as code (which decides the job's retry).
    fn status_error(&self, status: StatusCode, headers: &HeaderMap, excerpt: Option<&str>) -> ExtractError {
        let code = status.as_u16().to_string();
        let label = &self.request.label;
        let reason = status.canonical_reason().unwrap_or("");
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::AuthenticationFailed,
            StatusCode::TOO_MANY_REQUESTS => ErrorKind::RateLimited,
            _ => ErrorKind::HttpError,
        };
        let mut message = format!("{label} answered HTTP {code} {reason}")
            .trim_end()
            .to_owned();
        if status.is_redirection() {
            let target = headers
                .get(header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|location| self.request.url.join(location).ok())
                .map(|url| url.origin().ascii_serialization())
                .unwrap_or_else(|| "an unreadable location".into());
            message.push_str(&format!(
                ", a redirect to {target}, which is not followed: the connector's credentials stay on its \
                 base_url origin"
            ));
        } else if let Some(excerpt) = excerpt {
            message.push_str(": ");
            message.push_str(excerpt);
        }
        ExtractError::new(kind, message).with_code(code)
    }

    /// The error for a first page without `records_path`.
    async fn missing_records(&self, path: &str, facts: &PageFacts) -> ExtractError {
        let keys = if facts.keys.is_empty() {
            "none (the body is not an object)".to_owned()
        } else {
            facts.keys.join(", ")
        };
        let keys = self
            .handle
            .scrub(&keys)
            .await
            .unwrap_or_else(|| "not shown".into());
        ExtractError::new(
            ErrorKind::HttpError,
            format!(
                "the response of {} has no {path} (records_path); its top-level keys: {keys}",
                self.request.label
            ),
        )
    }
}

fn too_large(label: &str) -> ExtractError {
    ExtractError::new(
        ErrorKind::HttpError,
        format!(
            "the response of {label} is larger than {} MiB; page through it with a smaller limit",
            MAX_BODY_BYTES / (1024 * 1024)
        ),
    )
}

fn after_attempts(error: ExtractError, attempts: u32) -> ExtractError {
    let message = format!("{} (after {attempts} attempts)", error.message);
    ExtractError { message, ..error }
}

fn record_error(error: RecordError) -> ExtractError {
    match error {
        RecordError::Shape(why) => ExtractError::new(ErrorKind::HttpError, why),
        RecordError::TooManyColumns => ExtractError::new(ErrorKind::UnsupportedType, error.to_string()),
        RecordError::Closed => ExtractError::internal("the result writer stopped before the page was read"),
    }
}

fn fields(schema: &arrow::datatypes::Schema) -> Vec<Field> {
    schema
        .fields()
        .iter()
        .map(|field| field.as_ref().clone())
        .collect()
}
