//! The OAuth SaaS vendors (`stripe`, `hubspot`, `salesforce`,
//! `google_analytics`): one client per connector and config version over
//! the OAuth HTTP client the warehouse families share
//! ([`super::oauth_http`]: network policy on every connection, no
//! redirects, throttles waited out, a 401 renewed once through the shared
//! refresher), the vendor's documented limit signals read after every
//! answer ([`limits`]), and the `saas_extract` step runner: each vendor
//! file pages through its API and hands records (JSON objects) to
//! [`read_records`], which types them into Arrow batches as
//! `http_request` does (`rest/records.rs`).
//!
//! `design.md` beside this file has each vendor's requests, paging, limits
//! and errors.

mod google_analytics;
mod hubspot;
mod limits;
mod salesforce;
mod stripe;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ferry_shared::domain::{ErrorKind, StepType};
use ferry_shared::steps::http_request::{self, RecordSink, ResponseShape};
use ferry_shared::steps::saas_extract::{SaasExtract, Vendor};
use reqwest::header::{HeaderMap, HeaderName};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::connectors::errors::{DriverError, ErrorType, Secrets};
use crate::connectors::oauth_http::{Answer, ApiClient};
use crate::connectors::rest::records::{
    MAX_PASSES, RecordError, Table, fields_kept_changing, read_again_widened, read_page,
};
use crate::connectors::{
    ConnectorPool, ConnectorSpec, Driver, NetworkPolicy, PoolSettings, StepRequest, TestDetails,
};
use crate::extract::{ExtractError, Output, ReadPath};

/// How long one API call may take once connected.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Characters of a vendor's error message quoted in a step's error.
const MESSAGE_CHARS: usize = 300;

/// The SaaS family's driver.
pub(crate) struct Saas;

#[async_trait]
impl Driver for Saas {
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        let (decl, _) = spec.driver()?;
        let vendor = Vendor::of(decl.type_id).ok_or_else(|| {
            DriverError::invalid_config(format!(
                "{} connectors are not served by the SaaS family",
                decl.type_id
            ))
        })?;
        Ok(Box::new(SaasHandle::open(vendor, spec, policy)?))
    }
}

/// What a vendor's requests need from the connector's config.
#[derive(Debug, Clone)]
pub(crate) enum Account {
    Stripe,
    Hubspot,
    /// The REST API version (`v59.0`).
    Salesforce {
        api_version: String,
    },
    /// The numeric GA4 property id.
    GoogleAnalytics {
        property_id: String,
    },
}

/// One connector's client.
pub(crate) struct SaasHandle {
    pub(crate) vendor: Vendor,
    pub(crate) account: Account,
    pub(crate) api: Api,
}

impl SaasHandle {
    fn open(vendor: Vendor, spec: &ConnectorSpec, policy: &NetworkPolicy) -> Result<SaasHandle, DriverError> {
        let text = |name: &str| {
            spec.config
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|value| !value.is_empty())
        };
        let (base, account) = match vendor {
            Vendor::Stripe => (stripe::base_url()?, Account::Stripe),
            Vendor::Hubspot => (hubspot::base_url()?, Account::Hubspot),
            Vendor::Salesforce => {
                let instance = text("instance_url").ok_or_else(|| {
                    DriverError::invalid_config(
                        "config.instance_url is not set (Salesforce gives it with the token): authorize the connector again",
                    )
                })?;
                let api_version = text("api_version").unwrap_or(salesforce::DEFAULT_API_VERSION);
                (
                    salesforce::base_url(instance)?,
                    Account::Salesforce {
                        api_version: salesforce::api_version(api_version)?,
                    },
                )
            }
            Vendor::GoogleAnalytics => {
                let property_id = text("property_id")
                    .filter(|id| id.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        DriverError::invalid_config("config.property_id must be the numeric GA4 property id")
                    })?;
                (
                    google_analytics::base_url()?,
                    Account::GoogleAnalytics {
                        property_id: property_id.to_owned(),
                    },
                )
            }
        };
        let pool = PoolSettings {
            max_connections: 4,
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_lifetime: Duration::from_secs(3600),
            statement_timeout: CALL_TIMEOUT,
        };
        let client = ApiClient::new(spec, base, HeaderMap::new(), policy, &pool, limits::is_throttle)?;
        let mut secrets = spec.secrets();
        if let Some(refresh) = text("refresh_token") {
            secrets.add(refresh);
        }
        Ok(SaasHandle {
            vendor,
            account,
            api: Api {
                client,
                vendor,
                secrets: Arc::new(secrets),
                pace: Arc::new(limits::Pace::default()),
            },
        })
    }
}

#[async_trait]
impl ConnectorPool for SaasHandle {
    fn attach_refresher(&self, refresher: &ferry_shared::oauth_refresh::Refresher) {
        self.api.client.bearer().attach(refresher);
    }

    async fn test(&self, _addrs: &[SocketAddr], _policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        let cancel = CancellationToken::new();
        match &self.account {
            Account::Stripe => stripe::test(&self.api, &cancel).await,
            Account::Hubspot => hubspot::test(&self.api, &cancel).await,
            Account::Salesforce { api_version } => salesforce::test(&self.api, api_version, &cancel).await,
            Account::GoogleAnalytics { property_id } => {
                google_analytics::test(&self.api, property_id, &cancel).await
            }
        }
    }

    async fn run(&self, step: &StepRequest<'_>, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        if step.step_type != StepType::SaasExtract {
            return Err(step.unsupported());
        }
        let (config, _) = SaasExtract::parse_for(step.config, self.vendor.type_id()).map_err(invalid_step)?;
        let cancel = out.cancel().clone();
        let make = || -> Result<Box<dyn Pages + '_>, ExtractError> {
            Ok(match &self.account {
                Account::Stripe => Box::new(stripe::Lister::new(&config, step)?),
                Account::Hubspot => Box::new(hubspot::Lister::new(&config)),
                Account::Salesforce { api_version } => {
                    Box::new(salesforce::Query::new(&config, api_version, step)?)
                }
                Account::GoogleAnalytics { property_id } => {
                    Box::new(google_analytics::Report::new(&config, property_id, step)?)
                }
            })
        };
        read_records(&self.api, make, config.limit, out, &cancel).await?;
        Ok(ReadPath::Saas)
    }
}

/// A step's config refused when it runs: `invalid_query` naming the field.
fn invalid_step(error: ferry_shared::Error) -> ExtractError {
    match error {
        ferry_shared::Error::Validation { field, message, .. } => ExtractError::new(
            ErrorKind::InvalidQuery,
            format!("{}: {message}", field.unwrap_or_else(|| "config".into())),
        ),
        other => ExtractError::new(ErrorKind::InvalidQuery, other.to_string()),
    }
}

/// A vendor's API as the family calls it: the OAuth client, the vendor's
/// limit signals, and its error bodies.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) client: ApiClient,
    vendor: Vendor,
    /// The connector's secrets: never quoted in a message.
    secrets: Arc<Secrets>,
    pace: Arc<limits::Pace>,
}

impl Api {
    /// `path` (with its query) under the vendor's base URL.
    pub(crate) fn url(&self, path: &str) -> Result<Url, DriverError> {
        self.client.url(path)
    }

    /// A connection test: one cheap documented GET of `path` (`what` in
    /// errors), reported as the vendor's API `version`.
    pub(crate) async fn check(
        &self,
        path: &str,
        what: &str,
        version: String,
        cancel: &CancellationToken,
    ) -> Result<TestDetails, DriverError> {
        let url = self.url(path)?;
        self.call(Method::GET, &url, None, &[], what, cancel).await?;
        Ok(TestDetails {
            version: Some(version),
            ..TestDetails::default()
        })
    }

    /// One call, whose answer is a success: waits first when the vendor's
    /// limit headers asked to, reads them from the answer, and maps a
    /// failure to the error vocabulary (`what` names the call in messages).
    pub(crate) async fn call(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        extra: &[(HeaderName, &str)],
        what: &str,
        cancel: &CancellationToken,
    ) -> Result<Answer, DriverError> {
        let mut tries = 0;
        loop {
            self.pace.wait(self.vendor, cancel).await?;
            let answer = self
                .client
                .send(method.clone(), url, body, extra, CALL_TIMEOUT, cancel)
                .await?;
            self.pace.observe(self.vendor, &answer);
            if answer.status.is_success() {
                return Ok(answer);
            }
            tries += 1;
            if let Some(wait) = limits::retry_hint(self.vendor, &answer, tries) {
                tracing::debug!(
                    status = answer.status.as_u16(),
                    tries,
                    "the vendor asked for another try"
                );
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Err(crate::connectors::oauth_http::cancelled()),
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            return Err(self.failure(&answer, what));
        }
    }

    /// A vendor's error answer as the step's error: 401/403
    /// `authentication_failed` (Salesforce's `REQUEST_LIMIT_EXCEEDED` 403
    /// is `rate_limited`), 429 `rate_limited`, 400/404/422
    /// `invalid_query`, others `http_error`; the code is the status (or
    /// the vendor's limit code), the message the vendor's own when it
    /// holds no secret.
    fn failure(&self, answer: &Answer, what: &str) -> DriverError {
        let body = answer.json();
        let (vendor_code, vendor_message) = limits::error_of(self.vendor, &body);
        let status = answer.status;
        let exhausted = vendor_code.as_deref() == Some("REQUEST_LIMIT_EXCEEDED");
        let kind = match status {
            _ if exhausted => ErrorType::RateLimited,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorType::AuthenticationFailed,
            StatusCode::TOO_MANY_REQUESTS => ErrorType::RateLimited,
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => {
                ErrorType::InvalidQuery
            }
            _ => ErrorType::HttpError,
        };
        let mut message = format!(
            "{} {what} answered HTTP {} {}",
            vendor_name(self.vendor),
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_owned();
        if let Some(code) = &vendor_code {
            message.push_str(&format!(" ({})", clean(code, 64)));
        }
        if let Some(text) = vendor_message.map(|m| clean(&m, MESSAGE_CHARS))
            && !text.is_empty()
            && !self.secrets.contains_any(&text)
        {
            message.push_str(": ");
            message.push_str(&text);
        }
        if status == StatusCode::UNAUTHORIZED {
            message
                .push_str("; the token was refreshed once and still refused: authorize the connector again");
        }
        let code = if exhausted {
            "REQUEST_LIMIT_EXCEEDED".to_owned()
        } else {
            status.as_u16().to_string()
        };
        DriverError::new(kind, message).with_code(code)
    }
}

fn vendor_name(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Stripe => "Stripe",
        Vendor::Hubspot => "HubSpot",
        Vendor::Salesforce => "Salesforce",
        Vendor::GoogleAnalytics => "Google Analytics",
    }
}

/// `text` on one line without control characters, at most `max` characters.
pub(crate) fn clean(text: &str, max: usize) -> String {
    let line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let short: String = line.chars().take(max).collect();
    if short.len() < line.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// A vendor's pages, read one at a time.
#[async_trait]
pub(crate) trait Pages: Send {
    /// The next page's records (JSON objects, in the vendor's order);
    /// `None` after the last. `wanted` is how many more records the step
    /// takes (a page may ask for no more).
    async fn next(
        &mut self,
        api: &Api,
        wanted: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<Record>>, ExtractError>;

    /// The columns of a read that found no record, when the vendor said
    /// what they would have been (a report's headers); empty: one `value`
    /// column.
    fn columns_if_empty(&self) -> Vec<arrow::datatypes::Field> {
        Vec::new()
    }
}

/// One record as the vendor wrote it: its fields in order, each value's
/// JSON text untouched (so that columns keep the vendor's order and values
/// their exact text).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Record(pub(crate) Vec<(String, String)>);

impl Record {
    /// The raw JSON text of field `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Removes field `key` and gives its raw JSON text.
    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    /// Adds `key` unless the record has it already.
    pub(crate) fn push(&mut self, key: String, raw: String) {
        if self.get(&key).is_none() {
            self.0.push((key, raw));
        }
    }

    /// The string value of field `key`.
    pub(crate) fn text(&self, key: &str) -> Option<String> {
        serde_json::from_str::<String>(self.get(key)?).ok()
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (key, raw)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(raw.as_bytes());
        }
        out.push(b'}');
    }
}

/// Collects the records of a page as [`Record`]s.
#[derive(Default)]
struct Collect {
    records: Vec<Record>,
    current: Record,
}

impl RecordSink for Collect {
    type Error = std::convert::Infallible;

    fn field(&mut self, _position: usize, key: &str, raw: &str) -> Result<(), Self::Error> {
        self.current.push(key.to_owned(), raw.to_owned());
        Ok(())
    }

    fn end(&mut self, _bytes: usize) -> Result<(), Self::Error> {
        self.records.push(std::mem::take(&mut self.current));
        Ok(())
    }
}

/// The records at `path` (a dot path; `None`: the body is the array) of
/// a JSON `body`, each field's value as its exact JSON text; `None` when
/// the body is not JSON or has no array there.
pub(crate) fn records_at(body: &[u8], path: Option<&str>) -> Option<Vec<Record>> {
    records_and(body, path, None).map(|(records, _)| records)
}

/// [`records_at`], and the value at dot path `other` of the same body
/// (its paging field), read in the same pass.
pub(crate) fn records_and(
    body: &[u8],
    path: Option<&str>,
    other: Option<&str>,
) -> Option<(Vec<Record>, Option<Value>)> {
    let mut collect = Collect::default();
    let facts = http_request::read_page(body, &ResponseShape::new(path, other), &mut collect).ok()?;
    facts.found.then_some((collect.records, facts.cursor))
}

/// Reads every page `make` lists into `out`, at most `limit` records: the
/// records typed into columns as `http_request` types them; when a later
/// record does not fit the columns written, the pages are read again with
/// the columns widened (at most [`MAX_PASSES`] reads).
pub(crate) async fn read_records<'a>(
    api: &Api,
    make: impl Fn() -> Result<Box<dyn Pages + 'a>, ExtractError>,
    limit: Option<u64>,
    out: &mut Output<'_>,
    cancel: &CancellationToken,
) -> Result<u64, ExtractError> {
    let shape = Arc::new(ResponseShape::new(None, None));
    let mut table = Table::new(out.options().batch_rows, out.options().batch_bytes);
    for pass in 1..=MAX_PASSES {
        let mut pages = make()?;
        let mut started = false;
        let mut read: u64 = 0;
        loop {
            let wanted = limit.map(|limit| limit.saturating_sub(read));
            if wanted == Some(0) {
                break;
            }
            let Some(mut records) = pages.next(api, wanted, cancel).await? else {
                break;
            };
            if let Some(wanted) = wanted {
                records.truncate(usize::try_from(wanted).unwrap_or(usize::MAX));
            }
            read += records.len() as u64;
            let (back, batches) = parse(records, table, shape.clone()).await?;
            table = back;
            for batch in batches {
                if !started {
                    out.start(fields(&batch.schema()))?;
                    started = true;
                }
                out.write(batch).await?;
            }
        }
        if !table.scanning() {
            if let Some(batch) = table.flush().map_err(record_error)? {
                if !started {
                    out.start(fields(&batch.schema()))?;
                    started = true;
                }
                out.write(batch).await?;
            }
            if !started {
                let declared = pages.columns_if_empty();
                if read == 0 && !declared.is_empty() {
                    out.start(declared)?;
                } else {
                    out.start(fields(&table.schema()))?;
                }
            }
            return Ok(read);
        }
        read_again_widened(pass, &mut table, out).await;
    }
    Err(fields_kept_changing())
}

/// One page's records into `table` on a blocking thread; the table back
/// with the page's full batches.
async fn parse(
    records: Vec<Record>,
    mut table: Table,
    shape: Arc<ResponseShape>,
) -> Result<(Table, Vec<arrow::record_batch::RecordBatch>), ExtractError> {
    let (table, result) = tokio::task::spawn_blocking(move || {
        let mut body = Vec::with_capacity(records.len() * 256);
        body.push(b'[');
        for (i, record) in records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            record.write(&mut body);
        }
        body.push(b']');
        let mut batches = Vec::new();
        let result = read_page(&body, &shape, &mut table, &mut |batch| {
            batches.push(batch);
            Ok(())
        })
        .map(|_| batches);
        (table, result)
    })
    .await
    .map_err(|e| ExtractError::internal_from("reading a page failed unexpectedly", e))?;
    Ok((table, result.map_err(record_error)?))
}

fn record_error(error: RecordError) -> ExtractError {
    match error {
        RecordError::Shape(why) => ExtractError::new(ErrorKind::HttpError, why),
        RecordError::TooManyColumns => ExtractError::new(ErrorKind::UnsupportedType, error.to_string()),
        RecordError::Closed => ExtractError::internal("the result writer stopped before the page was read"),
    }
}

fn fields(schema: &arrow::datatypes::Schema) -> Vec<arrow::datatypes::Field> {
    schema
        .fields()
        .iter()
        .map(|field| field.as_ref().clone())
        .collect()
}

/// An answer whose body is not what the vendor documents.
pub(crate) fn unexpected(vendor: Vendor, what: &str) -> ExtractError {
    ExtractError::new(
        ErrorKind::HttpError,
        format!(
            "{} answered {what} with a body that is not its documented shape",
            vendor_name(vendor)
        ),
    )
}
