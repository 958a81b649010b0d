//! Salesforce: SOQL through the REST API's query resource
//! (`GET <instance_url>/services/data/<version>/query?q=<SOQL>`), with
//! `Sforce-Query-Options: batchSize=<page_size>`, following
//! `nextRecordsUrl` (a path on the same instance) until `done`. An
//! `object` step builds `SELECT <fields> FROM <object> [WHERE <where>]
//! [LIMIT <limit>]`, `FIELDS(STANDARD)` when no fields are given. Each
//! record's `attributes` (its type and URL) is left out. The instance URL
//! is the one the token response gave; the connection test reads
//! `GET /services/data/<version>/limits`.

use async_trait::async_trait;
use ferry_shared::domain::ErrorKind;
use ferry_shared::domain::params::ParamValue;
use ferry_shared::steps::saas_extract::{Query as StepQuery, SaasExtract, Vendor};
use reqwest::header::HeaderName;
use reqwest::{Method, Url};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Api, Pages, Record, records_and, unexpected};
use crate::connectors::errors::DriverError;
use crate::connectors::{StepRequest, TestDetails};
use crate::extract::ExtractError;

/// The connector's default `api_version` (its declaration says the same).
pub(super) const DEFAULT_API_VERSION: &str = "v59.0";

/// `https://<instance>/`: an http(s) URL without credentials, query or
/// fragment (the declaration checked its shape; this is the worker's own).
pub(super) fn base_url(instance: &str) -> Result<Url, DriverError> {
    let url = Url::parse(instance)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .filter(|u| u.username().is_empty() && u.password().is_none() && u.query().is_none())
        .ok_or_else(|| DriverError::invalid_config("config.instance_url is not an http(s) URL"))?;
    let text = url.as_str().trim_end_matches('/');
    Url::parse(&format!("{text}/"))
        .map_err(|_| DriverError::invalid_config("config.instance_url is not a URL"))
}

/// `vNN.N`.
pub(super) fn api_version(text: &str) -> Result<String, DriverError> {
    let ok = text
        .strip_prefix('v')
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(major, minor)| {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        });
    if ok {
        Ok(text.to_owned())
    } else {
        Err(DriverError::invalid_config(
            "config.api_version is a REST API version like v59.0",
        ))
    }
}

pub(super) async fn test(
    api: &Api,
    version: &str,
    cancel: &CancellationToken,
) -> Result<TestDetails, DriverError> {
    api.check(
        &format!("services/data/{version}/limits"),
        "GET /limits",
        format!("Salesforce REST API {version}"),
        cancel,
    )
    .await
}

/// The SOQL of an `object` step.
pub(super) fn soql(config: &SaasExtract) -> String {
    let fields = config
        .fields
        .as_ref()
        .map_or_else(|| "FIELDS(STANDARD)".to_owned(), |fields| fields.join(", "));
    let mut soql = format!(
        "SELECT {fields} FROM {}",
        config.object.as_deref().unwrap_or_default()
    );
    if let Some(condition) = &config.condition {
        soql.push_str(&format!(" WHERE {condition}"));
    }
    if let Some(limit) = config.limit {
        soql.push_str(&format!(" LIMIT {limit}"));
    }
    soql
}

/// One query's pages.
pub(super) struct Query {
    soql: String,
    version: String,
    batch: String,
    /// The path of the next page; `None` before the first.
    next: Option<String>,
    done: bool,
}

impl Query {
    /// The pages of `config`'s SOQL, the step's parameters bound in it as
    /// SOQL literals.
    pub(super) fn new(
        config: &SaasExtract,
        version: &str,
        step: &StepRequest<'_>,
    ) -> Result<Query, ExtractError> {
        let soql = match &config.query {
            Some(StepQuery::Soql(text)) => text.trim().to_owned(),
            _ => soql(config),
        };
        let size = config.page_size.unwrap_or(Vendor::Salesforce.page_bounds().0);
        Ok(Query {
            soql: bind(&soql, |name| step.param(name))?,
            version: version.to_owned(),
            batch: format!("batchSize={size}"),
            next: None,
            done: false,
        })
    }
}

/// `soql` with each `{{name}}` replaced by its value as a SOQL literal.
pub(super) fn bind(
    soql: &str,
    mut param: impl FnMut(&str) -> Result<ParamValue, ExtractError>,
) -> Result<String, ExtractError> {
    let mut out = String::with_capacity(soql.len());
    let mut rest = soql;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&literal(&param(rest[start + 2..start + 2 + len].trim())?));
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A value as a SOQL literal: strings quoted with `\`, `'`, `"` and
/// control characters escaped; numbers and booleans as they are; dates
/// `YYYY-MM-DD`; date-times in UTC, `YYYY-MM-DDThh:mm:ssZ`.
pub(super) fn literal(value: &ParamValue) -> String {
    match value {
        ParamValue::Text(text) => {
            let mut out = String::with_capacity(text.len() + 2);
            out.push('\'');
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\'' => out.push_str("\\'"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if c.is_control() => {}
                    c => out.push(c),
                }
            }
            out.push('\'');
            out
        }
        ParamValue::Integer(n) => n.to_string(),
        ParamValue::Number(x) => x.to_string(),
        ParamValue::Boolean(b) => b.to_string(),
        ParamValue::Date(d) => d.format("%Y-%m-%d").to_string(),
        ParamValue::Timestamp(t) => t
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
    }
}

#[async_trait]
impl Pages for Query {
    async fn next(
        &mut self,
        api: &Api,
        _wanted: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<Record>>, ExtractError> {
        if self.done {
            return Ok(None);
        }
        let url = match &self.next {
            None => {
                let mut url = api.url(&format!("services/data/{}/query", self.version))?;
                url.query_pairs_mut().append_pair("q", &self.soql);
                url
            }
            Some(path) => api.url(path)?,
        };
        let options = HeaderName::from_static("sforce-query-options");
        let answer = api
            .call(
                Method::GET,
                &url,
                None,
                &[(options, self.batch.as_str())],
                "query",
                cancel,
            )
            .await?;
        // `nextRecordsUrl` is given exactly while `done` is false.
        let (records, next) = records_and(&answer.body, Some("records"), Some("nextRecordsUrl"))
            .ok_or_else(|| unexpected(Vendor::Salesforce, "query"))?;
        let next = next.as_ref().and_then(Value::as_str);
        match next {
            Some(path) => {
                // A path on the instance: never another host, which would
                // receive the token.
                if !path.starts_with("/services/data/") || path.contains("://") || path.starts_with("//") {
                    return Err(ExtractError::new(
                        ErrorKind::HttpError,
                        "Salesforce gave a nextRecordsUrl that is not a path of the query resource",
                    ));
                }
                self.next = Some(path.to_owned());
            }
            _ => self.done = true,
        }
        Ok(Some(
            records
                .into_iter()
                .map(|mut record| {
                    record.take("attributes");
                    record
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(value: Value) -> SaasExtract {
        let mut map = value.as_object().cloned().expect("object");
        map.insert("connector_uuid".into(), json!("conn_01"));
        SaasExtract::parse(&map).expect("config")
    }

    #[test]
    fn an_object_step_is_a_select_of_its_fields() {
        assert_eq!(
            soql(&config(json!({"object": "Account"}))),
            "SELECT FIELDS(STANDARD) FROM Account"
        );
        assert_eq!(
            soql(&config(
                json!({"object": "Contact", "fields": ["Id", "Account.Name"], "where": "IsDeleted = false", "limit": 10})
            )),
            "SELECT Id, Account.Name FROM Contact WHERE IsDeleted = false LIMIT 10"
        );
    }

    #[test]
    fn parameters_are_bound_as_soql_literals() {
        let values = |name: &str| -> Result<ParamValue, ExtractError> {
            Ok(match name {
                "name" => ParamValue::Text("O'Brien \\ \"x\"\n".into()),
                "n" => ParamValue::Integer(5),
                "since" => ParamValue::Date(chrono::NaiveDate::from_ymd_opt(2024, 3, 1).expect("date")),
                "at" => ParamValue::Timestamp(
                    chrono::DateTime::parse_from_rfc3339("2024-03-01T10:00:00+02:00").expect("time"),
                ),
                _ => ParamValue::Boolean(true),
            })
        };
        assert_eq!(
            bind(
                "SELECT Id FROM Contact WHERE LastName = {{name}} AND N__c > {{ n }}",
                values
            )
            .expect("bound"),
            "SELECT Id FROM Contact WHERE LastName = 'O\\'Brien \\\\ \\\"x\\\"\\n' AND N__c > 5"
        );
        assert_eq!(
            bind(
                "WHERE CloseDate >= {{since}} AND CreatedDate < {{at}} AND X = {{flag}}",
                values
            )
            .expect("bound"),
            "WHERE CloseDate >= 2024-03-01 AND CreatedDate < 2024-03-01T08:00:00Z AND X = true"
        );
    }

    #[test]
    fn instance_urls_and_versions_are_checked() {
        assert_eq!(
            base_url("https://acme.my.salesforce.com").expect("url").as_str(),
            "https://acme.my.salesforce.com/"
        );
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://u:p@x.example").is_err());
        assert_eq!(api_version("v59.0").expect("version"), "v59.0");
        assert!(api_version("59").is_err());
        assert!(api_version("v59.0/../x").is_err());
    }
}
