//! Google Analytics 4: the Data API's `runReport`
//! (`POST /v1beta/properties/<id>:runReport`) with the step's report
//! request as the body, paged with `limit` (the step's `page_size`,
//! default 10,000) and `offset` until `rowCount` rows were read. Each row
//! is one record: a column per dimension (its string value), then a column
//! per metric typed by its `metricHeaders` type (`TYPE_INTEGER` as an
//! integer, the other numeric types as floats). `returnPropertyQuota` is
//! asked for, so the quota a page reports can end the read before Google
//! refuses the next one (`limits`). The connection test reads the
//! property's `getMetadata`.

use arrow::datatypes::{DataType, Field};
use async_trait::async_trait;
use ferry_shared::domain::ErrorKind;
use ferry_shared::steps::saas_extract::{Query, SaasExtract, Vendor};
use reqwest::{Method, Url};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::{Api, Pages, Record, unexpected};
use crate::connectors::errors::DriverError;
use crate::connectors::oauth_http::vendor_url;
use crate::connectors::{StepRequest, TestDetails};
use crate::extract::ExtractError;

pub(crate) const HOST: &str = "analyticsdata.googleapis.com";

pub(super) fn base_url() -> Result<Url, DriverError> {
    vendor_url(HOST, "/")
}

pub(super) async fn test(
    api: &Api,
    property_id: &str,
    cancel: &CancellationToken,
) -> Result<TestDetails, DriverError> {
    api.check(
        &format!("v1beta/properties/{property_id}/metadata"),
        "getMetadata",
        "Google Analytics Data API v1beta".into(),
        cancel,
    )
    .await
}

/// One report's pages.
pub(super) struct Report {
    path: String,
    body: Map<String, Value>,
    page_size: u64,
    offset: u64,
    done: bool,
    /// The columns the last answer's headers name.
    columns: Vec<Field>,
}

impl Report {
    /// The pages of `config`'s report, the step's parameters in its
    /// strings (a string that is exactly one placeholder becomes the typed
    /// JSON value).
    pub(super) fn new(
        config: &SaasExtract,
        property_id: &str,
        step: &StepRequest<'_>,
    ) -> Result<Report, ExtractError> {
        let Some(Query::Report(body)) = &config.query else {
            return Err(ExtractError::new(
                ErrorKind::InvalidQuery,
                "config.query: a google_analytics step runs a report request",
            ));
        };
        let mut body = match step.substitute_json(&Value::Object(body.clone()))? {
            Value::Object(body) => body,
            _ => Map::new(),
        };
        let property = match body.remove("property") {
            Some(Value::String(property)) => property,
            _ => format!("properties/{property_id}"),
        };
        body.insert("returnPropertyQuota".into(), Value::Bool(true));
        Ok(Report {
            path: format!("v1beta/{property}:runReport"),
            body,
            page_size: u64::from(
                config
                    .page_size
                    .unwrap_or(Vendor::GoogleAnalytics.page_bounds().0),
            ),
            offset: 0,
            done: false,
            columns: Vec::new(),
        })
    }
}

/// A metric's value as JSON text of its type: integers and finite numbers
/// as numbers, anything else as a string.
fn metric(value: &str, kind: &str) -> String {
    let number = match kind {
        "TYPE_INTEGER" => value.parse::<i64>().ok().map(|n| n.to_string()),
        "TYPE_STRING" | "METRIC_TYPE_UNSPECIFIED" => None,
        _ => value
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .and_then(|x| serde_json::Number::from_f64(x).map(|n| n.to_string())),
    };
    number.unwrap_or_else(|| Value::String(value.to_owned()).to_string())
}

/// The names (and metric types) of a report's headers.
fn headers(body: &Value, key: &str) -> Vec<(String, String)> {
    body.get(key)
        .and_then(Value::as_array)
        .map(|headers| {
            headers
                .iter()
                .map(|h| {
                    let text = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
                    (text("name"), text("type"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rows of a `runReport` answer as records.
pub(super) fn rows(body: &Value) -> Option<Vec<Record>> {
    let dimensions = headers(body, "dimensionHeaders");
    let metrics = headers(body, "metricHeaders");
    let rows = match body.get("rows") {
        None | Some(Value::Null) => return Some(Vec::new()),
        Some(Value::Array(rows)) => rows,
        Some(_) => return None,
    };
    let values = |row: &Value, key: &str| -> Vec<Option<String>> {
        row.get(key)
            .and_then(Value::as_array)
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.get("value").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let mut record = Record::default();
        let dimension_values = values(row, "dimensionValues");
        for (i, (name, _)) in dimensions.iter().enumerate() {
            let value = dimension_values.get(i).cloned().flatten();
            record.push(
                name.clone(),
                value.map_or_else(|| "null".into(), |v| Value::String(v).to_string()),
            );
        }
        let metric_values = values(row, "metricValues");
        for (i, (name, kind)) in metrics.iter().enumerate() {
            let value = metric_values.get(i).cloned().flatten();
            record.push(
                name.clone(),
                value.map_or_else(|| "null".into(), |v| metric(&v, kind)),
            );
        }
        records.push(record);
    }
    Some(records)
}

/// The columns a report's headers name: dimensions as text, metrics by
/// type (as [`metric`] writes their values).
fn columns(body: &Value) -> Vec<Field> {
    let dimensions = headers(body, "dimensionHeaders")
        .into_iter()
        .map(|(name, _)| Field::new(name, DataType::Utf8, true));
    let metrics = headers(body, "metricHeaders").into_iter().map(|(name, kind)| {
        let data_type = match kind.as_str() {
            "TYPE_INTEGER" => DataType::Int64,
            "TYPE_STRING" | "METRIC_TYPE_UNSPECIFIED" => DataType::Utf8,
            _ => DataType::Float64,
        };
        Field::new(name, data_type, true)
    });
    dimensions.chain(metrics).collect()
}

#[async_trait]
impl Pages for Report {
    async fn next(
        &mut self,
        api: &Api,
        wanted: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<Record>>, ExtractError> {
        if self.done {
            return Ok(None);
        }
        let limit = wanted.map_or(self.page_size, |w| self.page_size.min(w));
        let mut body = self.body.clone();
        body.insert("limit".into(), Value::from(limit));
        body.insert("offset".into(), Value::from(self.offset));
        let url = api.url(&self.path)?;
        let answer = api
            .call(
                Method::POST,
                &url,
                Some(&Value::Object(body)),
                &[],
                "runReport",
                cancel,
            )
            .await?;
        let body = answer.json();
        if let Some(quota) = body.get("propertyQuota") {
            api.pace.observe_quota(quota);
        }
        let records = rows(&body).ok_or_else(|| unexpected(Vendor::GoogleAnalytics, "runReport"))?;
        self.columns = columns(&body);
        let total = body.get("rowCount").and_then(Value::as_u64).unwrap_or(0);
        self.offset += records.len() as u64;
        if records.is_empty() || self.offset >= total {
            self.done = true;
        }
        Ok(Some(records))
    }

    fn columns_if_empty(&self) -> Vec<Field> {
        self.columns.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rows_become_records_with_typed_metrics() {
        let body = json!({
            "dimensionHeaders": [{"name": "date"}, {"name": "country"}],
            "metricHeaders": [{"name": "activeUsers", "type": "TYPE_INTEGER"}, {"name": "bounceRate", "type": "TYPE_FLOAT"}],
            "rows": [{"dimensionValues": [{"value": "20240101"}, {"value": "France"}],
                      "metricValues": [{"value": "42"}, {"value": "0.25"}]}],
            "rowCount": 1
        });
        let records = rows(&body).expect("rows");
        assert_eq!(
            records[0].0,
            [
                ("date".to_owned(), "\"20240101\"".to_owned()),
                ("country".to_owned(), "\"France\"".to_owned()),
                ("activeUsers".to_owned(), "42".to_owned()),
                ("bounceRate".to_owned(), "0.25".to_owned()),
            ]
        );
        assert_eq!(rows(&json!({"rowCount": 0})).expect("empty"), []);
        assert_eq!(metric("n/a", "TYPE_INTEGER"), "\"n/a\"");
    }
}
