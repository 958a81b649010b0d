//! A BigQuery query result into the step's output: columns typed from
//! `schema.fields`, rows (`{"f": [{"v": …}]}`) from the first page and
//! then each `pageToken` page, one page in memory at a time. Values arrive
//! as text in the API's forms (timestamps as microseconds since the epoch,
//! asked for with `formatOptions.useInt64Timestamp`):
//!
//! | field `type` | Arrow |
//! |---|---|
//! | INTEGER, INT64 | Int64 |
//! | FLOAT, FLOAT64 | Float64 (`NaN`, `Infinity` too) |
//! | NUMERIC | Decimal128(38, 9) |
//! | BOOLEAN, BOOL | Boolean |
//! | DATE | Date32 |
//! | TIME | Time64(µs) |
//! | DATETIME | Timestamp(µs) |
//! | TIMESTAMP | Timestamp(µs, UTC) |
//! | BYTES | Binary (base64 in the API) |
//! | STRING, BIGNUMERIC, JSON, GEOGRAPHY, INTERVAL, RANGE | Utf8 |
//! | RECORD / STRUCT, or mode REPEATED | Utf8: the value as JSON |

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, StringBuilder, Time64MicrosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::{BigqueryHandle, Job};
use crate::connectors::warehouse::{base64_binary, cast_texts, parsed, rows_batch, unreadable};
use crate::extract::{ExtractError, Output};

/// Pages read before a result is taken for endless (a page token that
/// never ends).
const MAX_PAGES: usize = 1_000_000;

/// How a column's values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Float,
    Numeric,
    Bool,
    Date,
    Time,
    DateTime,
    Timestamp,
    Bytes,
    Text,
    /// A RECORD or a REPEATED field: the value as JSON text.
    Json,
}

/// A schema field as its Arrow field and reading.
pub(crate) fn column(index: usize, field: &Value) -> (Field, Kind) {
    let name = field
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("column_{}", index + 1), str::to_owned);
    let repeated = field.get("mode").and_then(Value::as_str) == Some("REPEATED");
    let type_name = field
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("STRING")
        .to_ascii_uppercase();
    let (data_type, kind) = match type_name.as_str() {
        _ if repeated => (DataType::Utf8, Kind::Json),
        "RECORD" | "STRUCT" => (DataType::Utf8, Kind::Json),
        "INTEGER" | "INT64" => (DataType::Int64, Kind::Int),
        "FLOAT" | "FLOAT64" => (DataType::Float64, Kind::Float),
        "NUMERIC" => (DataType::Decimal128(38, 9), Kind::Numeric),
        "BOOLEAN" | "BOOL" => (DataType::Boolean, Kind::Bool),
        "DATE" => (DataType::Date32, Kind::Date),
        "TIME" => (DataType::Time64(TimeUnit::Microsecond), Kind::Time),
        "DATETIME" => (DataType::Timestamp(TimeUnit::Microsecond, None), Kind::DateTime),
        "TIMESTAMP" => (
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            Kind::Timestamp,
        ),
        "BYTES" => (DataType::Binary, Kind::Bytes),
        _ => (DataType::Utf8, Kind::Text),
    };
    (Field::new(name, data_type, true), kind)
}

/// Writes the rows of `job`, starting with `first` (its first page).
pub(super) async fn read(
    handle: &BigqueryHandle,
    job: &Job,
    first: Value,
    out: &mut Output<'_>,
    cancel: &CancellationToken,
) -> Result<(), ExtractError> {
    let columns: Vec<(Field, Kind)> = first
        .pointer("/schema/fields")
        .and_then(Value::as_array)
        .map(|fields| fields.iter().enumerate().map(|(i, f)| column(i, f)).collect())
        .unwrap_or_default();
    let kinds: Vec<Kind> = columns.iter().map(|(_, kind)| *kind).collect();
    let schema = out.start(columns.into_iter().map(|(field, _)| field).collect())?;
    let mut page = first;
    for _ in 0..MAX_PAGES {
        let rows = page
            .get("rows")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let size = out.options().batch_rows.max(1);
        for slice in rows.chunks(size) {
            out.write(batch(&schema, &kinds, slice)?).await?;
        }
        let token = page
            .get("pageToken")
            .and_then(Value::as_str)
            .filter(|token| !token.is_empty())
            .map(str::to_owned);
        match token {
            Some(token) => page = handle.results(job, Some(&token), cancel).await?,
            None => return Ok(()),
        }
    }
    Err(ExtractError::internal("BigQuery kept answering with more pages"))
}

/// A batch of rows (`{"f": [{"v": …}]}`) under `schema`.
pub(crate) fn batch(schema: &SchemaRef, kinds: &[Kind], rows: &[Value]) -> Result<RecordBatch, ExtractError> {
    let mut arrays = Vec::with_capacity(kinds.len());
    for (index, (field, kind)) in schema.fields().iter().zip(kinds).enumerate() {
        let mut cells = Vec::with_capacity(rows.len());
        for row in rows {
            let cell = row
                .get("f")
                .and_then(Value::as_array)
                .ok_or_else(|| ExtractError::internal("a BigQuery result row has no cells"))?
                .get(index)
                .and_then(|cell| cell.get("v"))
                .unwrap_or(&Value::Null);
            cells.push(cell);
        }
        arrays.push(array(field, *kind, &cells)?);
    }
    rows_batch(schema, arrays, rows.len())
}

fn array(field: &Field, kind: Kind, cells: &[&Value]) -> Result<ArrayRef, ExtractError> {
    let invalid = || unreadable(field);
    let texts = || -> Result<Vec<Option<&str>>, ExtractError> {
        cells
            .iter()
            .map(|cell| match cell {
                Value::Null => Ok(None),
                Value::String(text) => Ok(Some(text.as_str())),
                _ => Err(invalid()),
            })
            .collect()
    };
    Ok(match kind {
        Kind::Json => {
            let mut b = StringBuilder::with_capacity(cells.len(), 0);
            for cell in cells {
                match cell {
                    Value::Null => b.append_null(),
                    value => b.append_value(plain(value).to_string()),
                }
            }
            Arc::new(b.finish())
        }
        Kind::Text => {
            let mut b = StringBuilder::with_capacity(cells.len(), 0);
            for text in texts()? {
                b.append_option(text);
            }
            Arc::new(b.finish())
        }
        Kind::Int => parsed::<Int64Type>(field, texts()?)?,
        Kind::Float => parsed::<Float64Type>(field, texts()?)?,
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(cells.len());
            for text in texts()? {
                b.append_option(match text.map(str::to_ascii_lowercase).as_deref() {
                    None => None,
                    Some("true") => Some(true),
                    Some("false") => Some(false),
                    Some(_) => return Err(invalid()),
                });
            }
            Arc::new(b.finish())
        }
        Kind::Date => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).ok_or_else(invalid)?;
            let mut b = Date32Builder::with_capacity(cells.len());
            for text in texts()? {
                let days = text
                    .map(|t| {
                        NaiveDate::parse_from_str(t, "%Y-%m-%d")
                            .map(|d| (d - epoch).num_days() as i32)
                            .map_err(|_| invalid())
                    })
                    .transpose()?;
                b.append_option(days);
            }
            Arc::new(b.finish())
        }
        Kind::Time => {
            let mut b = Time64MicrosecondBuilder::with_capacity(cells.len());
            for text in texts()? {
                let micros = text
                    .map(|t| {
                        NaiveTime::parse_from_str(t, "%H:%M:%S%.f")
                            .map(|t| {
                                i64::from(t.num_seconds_from_midnight()) * 1_000_000
                                    + i64::from(t.nanosecond() / 1000)
                            })
                            .map_err(|_| invalid())
                    })
                    .transpose()?;
                b.append_option(micros);
            }
            Arc::new(b.finish())
        }
        Kind::DateTime => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(cells.len());
            for text in texts()? {
                let micros = text
                    .map(|t| {
                        NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f")
                            .or_else(|_| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f"))
                            .map(|at| at.and_utc().timestamp_micros())
                            .map_err(|_| invalid())
                    })
                    .transpose()?;
                b.append_option(micros);
            }
            Arc::new(b.finish())
        }
        Kind::Timestamp => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(cells.len())
                .with_data_type(field.data_type().clone());
            for text in texts()? {
                let micros = text
                    .map(|t| {
                        // Microseconds (useInt64Timestamp), else the older
                        // float seconds ("1.709201472345E9").
                        t.parse::<i64>()
                            .ok()
                            .or_else(|| t.parse::<f64>().ok().map(|s| (s * 1e6).round() as i64))
                            .ok_or_else(invalid)
                    })
                    .transpose()?;
                b.append_option(micros);
            }
            Arc::new(b.finish())
        }
        Kind::Bytes => base64_binary(field, texts()?)?,
        Kind::Numeric => cast_texts(field, texts()?)?,
    })
}

/// A nested value of the API (`{"f": [{"v": …}]}` records, `[{"v": …}]`
/// arrays) as plain JSON: records become arrays of their values (the
/// schema's field names are not repeated in every row), arrays of values.
fn plain(value: &Value) -> Value {
    match value {
        Value::Object(object) => match (object.get("f"), object.get("v")) {
            (Some(Value::Array(cells)), _) => Value::Array(cells.iter().map(plain).collect()),
            (_, Some(inner)) => plain(inner),
            _ => Value::Object(Map::new()),
        },
        Value::Array(items) => Value::Array(items.iter().map(plain).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        Date32Type, Decimal128Type, Float64Type, Int64Type, Schema, Time64MicrosecondType,
        TimestampMicrosecondType,
    };
    use serde_json::json;

    use ferry_shared::domain::ErrorKind;

    use super::*;

    fn typed(fields: Value) -> (SchemaRef, Vec<Kind>) {
        let (fields, kinds): (Vec<Field>, Vec<Kind>) = fields
            .as_array()
            .expect("array")
            .iter()
            .enumerate()
            .map(|(i, f)| column(i, f))
            .unzip();
        (Arc::new(Schema::new(fields)), kinds)
    }

    fn row(values: Value) -> Value {
        let cells: Vec<Value> = values
            .as_array()
            .expect("values")
            .iter()
            .map(|v| json!({"v": v}))
            .collect();
        json!({"f": cells})
    }

    #[test]
    fn schema_types_map_to_arrow_types_and_values_read_as_them() {
        let (schema, kinds) = typed(json!([
            {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
            {"name": "x", "type": "FLOAT"},
            {"name": "amount", "type": "NUMERIC"},
            {"name": "ok", "type": "BOOLEAN"},
            {"name": "day", "type": "DATE"},
            {"name": "t", "type": "TIME"},
            {"name": "dt", "type": "DATETIME"},
            {"name": "at", "type": "TIMESTAMP"},
            {"name": "raw", "type": "BYTES"},
            {"name": "tags", "type": "STRING", "mode": "REPEATED"},
            {"name": "address", "type": "RECORD", "fields": [{"name": "city", "type": "STRING"}]},
        ]));
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(
            types,
            [
                "Int64",
                "Float64",
                "Decimal128(38, 9)",
                "Boolean",
                "Date32",
                "Time64(µs)",
                "Timestamp(µs)",
                "Timestamp(µs, \"UTC\")",
                "Binary",
                "Utf8",
                "Utf8"
            ]
        );
        let rows = [
            row(json!([
                "9007199254740993",
                "1.5",
                "12.34",
                "true",
                "2024-02-29",
                "10:30:00.5",
                "2024-02-29T10:11:12.345",
                "1709201472345000",
                "AAEC",
                [{"v": "a"}, {"v": "b"}],
                {"f": [{"v": "Berlin"}]}
            ])),
            row(json!([
                null,
                "Infinity",
                null,
                "false",
                null,
                null,
                null,
                "1.709201472E9",
                null,
                [],
                null
            ])),
        ];
        let batch = batch(&schema, &kinds, &rows).expect("batch");
        assert_eq!(
            batch.column(0).as_primitive::<Int64Type>().value(0),
            9_007_199_254_740_993
        );
        assert!(batch.column(0).is_null(1));
        assert_eq!(
            batch.column(1).as_primitive::<Float64Type>().value(1),
            f64::INFINITY
        );
        assert_eq!(
            batch.column(2).as_primitive::<Decimal128Type>().value(0),
            12_340_000_000
        );
        assert!(!batch.column(3).as_boolean().value(1));
        assert_eq!(batch.column(4).as_primitive::<Date32Type>().value(0), 19_782);
        assert_eq!(
            batch.column(5).as_primitive::<Time64MicrosecondType>().value(0),
            37_800_500_000
        );
        assert_eq!(
            batch
                .column(6)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_709_201_472_345_000
        );
        let at = batch.column(7).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            (at.value(0), at.value(1)),
            (1_709_201_472_345_000, 1_709_201_472_000_000)
        );
        assert_eq!(batch.column(8).as_binary::<i32>().value(0), &[0, 1, 2]);
        assert_eq!(batch.column(9).as_string::<i32>().value(0), r#"["a","b"]"#);
        assert_eq!(batch.column(10).as_string::<i32>().value(0), r#"["Berlin"]"#);
    }

    #[test]
    fn a_value_that_does_not_read_as_its_type_names_the_column() {
        let (schema, kinds) = typed(json!([{"name": "n", "type": "INT64"}]));
        let error = batch(&schema, &kinds, &[row(json!(["twelve"]))]).expect_err("bad");
        assert_eq!(error.error_type, ErrorKind::UnsupportedType);
        assert!(error.message.contains("column n"), "{}", error.message);
    }
}
