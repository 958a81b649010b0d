//! A Snowflake result set into the step's output: columns typed from
//! `resultSetMetaData.rowType`, rows from partition 0 (in the answer) and
//! then each further partition of `partitionInfo`, one partition in memory
//! at a time. Values arrive as text in the SQL API's documented forms:
//!
//! | rowType `type` | text | Arrow |
//! |---|---|---|
//! | fixed, scale 0, precision ≤ 18 | integer | Int64 |
//! | fixed, otherwise | decimal | Decimal128(precision, scale) |
//! | real | float (`inf`, `NaN` too) | Float64 |
//! | boolean | `true` / `false` (or `1` / `0`) | Boolean |
//! | date | days since the epoch | Date32 |
//! | time | seconds since midnight, 9 decimals | Time64(ns) |
//! | timestamp_ntz | seconds since the epoch, 9 decimals | Timestamp(µs) |
//! | timestamp_ltz | the same, an instant | Timestamp(µs, UTC) |
//! | timestamp_tz | seconds and the offset in minutes + 1440 | Timestamp(µs, UTC) (the instant) |
//! | binary | hex | Binary |
//! | text, variant, object, array, geography, anything else | text | Utf8 |

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, StringBuilder, Time64NanosecondBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Date32Type, Field, Float64Type, Int64Type, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Executed, SnowflakeHandle};
use crate::connectors::warehouse::{cast_texts, parsed, rows_batch, unreadable};
use crate::extract::{ExtractError, Output};

/// How a column's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Decimal,
    Float,
    Bool,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Binary,
    Text,
}

/// A `rowType` entry as its Arrow field and reading.
pub(crate) fn column(index: usize, column: &Value) -> (Field, Kind) {
    let name = column
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("column_{}", index + 1), str::to_owned);
    let number = |key: &str| column.get(key).and_then(Value::as_u64);
    let kind_name = column
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("text")
        .to_ascii_lowercase();
    let (data_type, kind) = match kind_name.as_str() {
        "fixed" => {
            let precision = number("precision").unwrap_or(38).clamp(1, 38);
            let scale = number("scale").unwrap_or(0).min(precision);
            if scale == 0 && precision <= 18 {
                (DataType::Int64, Kind::Int)
            } else {
                (DataType::Decimal128(precision as u8, scale as i8), Kind::Decimal)
            }
        }
        "real" | "float" | "double" => (DataType::Float64, Kind::Float),
        "boolean" => (DataType::Boolean, Kind::Bool),
        "date" => (DataType::Date32, Kind::Date),
        "time" => (DataType::Time64(TimeUnit::Nanosecond), Kind::Time),
        "timestamp_ntz" => (DataType::Timestamp(TimeUnit::Microsecond, None), Kind::Timestamp),
        "timestamp_ltz" => (
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            Kind::Timestamp,
        ),
        "timestamp_tz" => (
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            Kind::TimestampTz,
        ),
        "binary" => (DataType::Binary, Kind::Binary),
        _ => (DataType::Utf8, Kind::Text),
    };
    (Field::new(name, data_type, true), kind)
}

/// Writes the result of `executed` to `out`.
pub(super) async fn read(
    handle: &SnowflakeHandle,
    executed: &Executed,
    out: &mut Output<'_>,
    cancel: &CancellationToken,
) -> Result<(), ExtractError> {
    let meta = executed
        .result
        .get("resultSetMetaData")
        .ok_or_else(|| ExtractError::internal("Snowflake answered a result set without resultSetMetaData"))?;
    let columns: Vec<(Field, Kind)> = meta
        .get("rowType")
        .and_then(Value::as_array)
        .map(|row_type| row_type.iter().enumerate().map(|(i, c)| column(i, c)).collect())
        .unwrap_or_default();
    let kinds: Vec<Kind> = columns.iter().map(|(_, kind)| *kind).collect();
    let schema = out.start(columns.into_iter().map(|(field, _)| field).collect())?;
    let partitions = meta
        .get("partitionInfo")
        .and_then(Value::as_array)
        .map_or(1, |info| info.len().max(1));
    let first = executed
        .result
        .get("data")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    write_rows(out, &schema, &kinds, first).await?;
    for index in 1..partitions {
        let rows = handle.partition(&executed.handle, index, cancel).await?;
        write_rows(out, &schema, &kinds, &rows).await?;
    }
    Ok(())
}

async fn write_rows(
    out: &mut Output<'_>,
    schema: &SchemaRef,
    kinds: &[Kind],
    rows: &[Value],
) -> Result<(), ExtractError> {
    let size = out.options().batch_rows.max(1);
    for slice in rows.chunks(size) {
        let batch = batch(schema, kinds, slice)?;
        out.write(batch).await?;
    }
    Ok(())
}

/// A batch of rows (arrays of text or null) under `schema`.
pub(crate) fn batch(schema: &SchemaRef, kinds: &[Kind], rows: &[Value]) -> Result<RecordBatch, ExtractError> {
    let mut arrays = Vec::with_capacity(kinds.len());
    for (index, (field, kind)) in schema.fields().iter().zip(kinds).enumerate() {
        let mut cells = Vec::with_capacity(rows.len());
        for row in rows {
            let row = row
                .as_array()
                .ok_or_else(|| ExtractError::internal("a Snowflake result row is not an array"))?;
            cells.push(match row.get(index) {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text.as_str()),
                Some(_) => {
                    return Err(ExtractError::internal(
                        "a Snowflake result value is neither text nor null",
                    ));
                }
            });
        }
        arrays.push(array(field, *kind, &cells)?);
    }
    rows_batch(schema, arrays, rows.len())
}

fn array(field: &Field, kind: Kind, cells: &[Option<&str>]) -> Result<ArrayRef, ExtractError> {
    let invalid = || unreadable(field);
    let texts = || cells.iter().copied();
    Ok(match kind {
        Kind::Int => parsed::<Int64Type>(field, texts())?,
        Kind::Float => parsed::<Float64Type>(field, texts())?,
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(cells.len());
            for cell in cells {
                b.append_option(match cell.map(str::to_ascii_lowercase).as_deref() {
                    None => None,
                    Some("true" | "1") => Some(true),
                    Some("false" | "0") => Some(false),
                    Some(_) => return Err(invalid()),
                });
            }
            Arc::new(b.finish())
        }
        Kind::Date => parsed::<Date32Type>(field, texts())?,
        Kind::Time => {
            let mut b = Time64NanosecondBuilder::with_capacity(cells.len());
            for cell in cells {
                b.append_option(cell.map(|t| nanos(t).ok_or_else(invalid)).transpose()?);
            }
            Arc::new(b.finish())
        }
        Kind::Timestamp | Kind::TimestampTz => {
            let mut b = TimestampMicrosecondBuilder::with_capacity(cells.len())
                .with_data_type(field.data_type().clone());
            for cell in cells {
                let micros = cell
                    .map(|text| {
                        // timestamp_tz: "<seconds> <offset minutes + 1440>";
                        // the seconds are the instant already.
                        let seconds = text.split_whitespace().next().unwrap_or_default();
                        nanos(seconds).map(|n| n.div_euclid(1000)).ok_or_else(invalid)
                    })
                    .transpose()?;
                b.append_option(micros);
            }
            Arc::new(b.finish())
        }
        Kind::Binary => {
            let mut b = BinaryBuilder::with_capacity(cells.len(), 0);
            for cell in cells {
                match cell {
                    None => b.append_null(),
                    Some(hex) => b.append_value(unhex(hex).ok_or_else(invalid)?),
                }
            }
            Arc::new(b.finish())
        }
        Kind::Decimal => cast_texts(field, texts())?,
        Kind::Text => {
            let mut b = StringBuilder::with_capacity(cells.len(), 0);
            for cell in cells {
                b.append_option(*cell);
            }
            Arc::new(b.finish())
        }
    })
}

/// `[-]seconds[.fraction]` (up to 9 decimals) as nanoseconds.
pub(crate) fn nanos(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || fraction.len() > 9 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: i64 = whole.parse().ok()?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<9}").parse().ok()?
    };
    let total = seconds.checked_mul(1_000_000_000)?.checked_add(fraction)?;
    Some(if negative { -total } else { total })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        Date32Type, Decimal128Type, Float64Type, Int64Type, Schema, Time64NanosecondType,
        TimestampMicrosecondType,
    };
    use serde_json::json;

    use ferry_shared::domain::ErrorKind;

    use super::*;

    fn typed(row_type: Value) -> (SchemaRef, Vec<Kind>) {
        let (fields, kinds): (Vec<Field>, Vec<Kind>) = row_type
            .as_array()
            .expect("array")
            .iter()
            .enumerate()
            .map(|(i, c)| column(i, c))
            .unzip();
        (Arc::new(Schema::new(fields)), kinds)
    }

    #[test]
    fn row_types_map_to_arrow_types() {
        let (schema, _) = typed(json!([
            {"name": "ID", "type": "fixed", "precision": 18, "scale": 0},
            {"name": "BIG", "type": "fixed", "precision": 38, "scale": 0},
            {"name": "AMOUNT", "type": "fixed", "precision": 10, "scale": 2},
            {"name": "R", "type": "real"},
            {"name": "T", "type": "text"},
            {"name": "D", "type": "date"},
            {"name": "TM", "type": "time"},
            {"name": "NTZ", "type": "timestamp_ntz"},
            {"name": "TZ", "type": "timestamp_tz"},
            {"name": "V", "type": "variant"},
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
                "Decimal128(38, 0)",
                "Decimal128(10, 2)",
                "Float64",
                "Utf8",
                "Date32",
                "Time64(ns)",
                "Timestamp(µs)",
                "Timestamp(µs, \"UTC\")",
                "Utf8"
            ]
        );
    }

    #[test]
    fn values_in_the_sql_apis_forms_read_as_their_types() {
        let (schema, kinds) = typed(json!([
            {"name": "ID", "type": "fixed", "precision": 18, "scale": 0},
            {"name": "AMOUNT", "type": "fixed", "precision": 10, "scale": 2},
            {"name": "R", "type": "real"},
            {"name": "OK", "type": "boolean"},
            {"name": "D", "type": "date"},
            {"name": "TM", "type": "time"},
            {"name": "NTZ", "type": "timestamp_ntz"},
            {"name": "TZ", "type": "timestamp_tz"},
            {"name": "B", "type": "binary"},
        ]));
        let rows = json!([
            [
                "1",
                "12.34",
                "1.5",
                "true",
                "19782",
                "37800.500000000",
                "1709201472.345000000",
                "1709201472.000000000 1500",
                "0aff"
            ],
            [
                null,
                "-0.01",
                "NaN",
                "false",
                "-1",
                "0.000000001",
                "-1.500000000",
                null,
                ""
            ],
        ]);
        let batch = batch(&schema, &kinds, rows.as_array().expect("rows")).expect("batch");
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert!(ids.value(0) == 1 && ids.is_null(1));
        let amounts = batch.column(1).as_primitive::<Decimal128Type>();
        assert_eq!((amounts.value(0), amounts.value(1)), (1234, -1));
        assert!(batch.column(2).as_primitive::<Float64Type>().value(1).is_nan());
        assert!(batch.column(3).as_boolean().value(0));
        let days = batch.column(4).as_primitive::<Date32Type>();
        assert_eq!((days.value(0), days.value(1)), (19_782, -1));
        let times = batch.column(5).as_primitive::<Time64NanosecondType>();
        assert_eq!((times.value(0), times.value(1)), (37_800_500_000_000, 1));
        let ntz = batch.column(6).as_primitive::<TimestampMicrosecondType>();
        assert_eq!((ntz.value(0), ntz.value(1)), (1_709_201_472_345_000, -1_500_000));
        let tz = batch.column(7).as_primitive::<TimestampMicrosecondType>();
        assert!(tz.value(0) == 1_709_201_472_000_000 && tz.is_null(1));
        let bin = batch.column(8).as_binary::<i32>();
        assert_eq!((bin.value(0), bin.value(1)), (&[0x0a, 0xff][..], &[][..]));
    }

    #[test]
    fn a_value_that_does_not_read_as_its_type_names_the_column() {
        let (schema, kinds) = typed(json!([{"name": "N", "type": "fixed", "precision": 9, "scale": 0}]));
        let error = batch(&schema, &kinds, json!([["twelve"]]).as_array().expect("rows")).expect_err("bad");
        assert_eq!(error.error_type, ErrorKind::UnsupportedType);
        assert!(error.message.contains("column N"), "{}", error.message);
    }
}
