//! Step results served back from object storage: JSON or CSV pages read
//! with the Parquet reader (only the row groups a page needs), or the whole
//! Parquet object streamed as it is.

use arrow::array::{Array, RecordBatch};
use std::ops::Range;
use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ferry_shared::Error;
use ferry_shared::objects::ObjectTarget;
use futures::FutureExt;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use serde_json::{Map, Value, json};

use crate::error::ApiResult;

/// Response formats of a step result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Parquet,
}

/// Integers beyond this are sent as strings in JSON (2^53).
const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_992;

fn read_error(error: impl std::fmt::Display) -> Error {
    Error::internal(format!("cannot read the step result: {error}"))
}

pub async fn respond(
    target: &ObjectTarget,
    path: &Path,
    format: Format,
    offset: usize,
    limit: usize,
) -> ApiResult<Response> {
    if format == Format::Parquet {
        let result = target.store.get(path).await.map_err(read_error)?;
        let size = result.meta.size;
        let body = Body::from_stream(result.into_stream());
        return Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/vnd.apache.parquet".to_owned()),
                (header::CONTENT_LENGTH, size.to_string()),
            ],
            body,
        )
            .into_response());
    }
    let size = target.store.head(path).await.map_err(read_error)?.size;
    let reader = ObjectFile {
        store: target.store.clone(),
        path: path.clone(),
        size,
    };
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(read_error)?;
    let total_rows = builder.metadata().file_metadata().num_rows();
    let schema = builder.schema().clone();
    let stream = builder
        .with_offset(offset)
        .with_limit(limit)
        .build()
        .map_err(read_error)?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(read_error)?;
    match format {
        Format::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                if batches.is_empty() {
                    writer
                        .write(&RecordBatch::new_empty(schema.clone()))
                        .map_err(read_error)?;
                }
                for batch in &batches {
                    writer.write(batch).map_err(read_error)?;
                }
            }
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
                out,
            )
                .into_response())
        }
        _ => {
            let columns: Vec<Value> = schema
                .fields()
                .iter()
                .map(|f| json!({"name": f.name(), "type": type_name(f.data_type())}))
                .collect();
            let mut data = Vec::new();
            for batch in &batches {
                data.extend(rows_of(batch)?);
            }
            Ok(axum::Json(json!({
                "columns": columns,
                "data": data,
                "offset": offset,
                "limit": limit,
                "total_rows": total_rows,
            }))
            .into_response())
        }
    }
}

/// A Parquet file in object storage, read by ranges: a page of a result
/// fetches the footer and only the row groups it needs.
struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl AsyncFileReader for ObjectFile {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// A short, stable name for a column type.
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => "integer".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "integer".into(),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "number".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::FixedSizeBinary(_) | DataType::BinaryView => {
            "binary".into()
        }
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::List(item) | DataType::LargeList(item) => format!("list<{}>", type_name(item.data_type())),
        other => other.to_string().to_lowercase(),
    }
}

/// Rows as JSON objects: integers as numbers when they fit in 2^53, else
/// strings; decimals as strings; timestamps RFC 3339; binary as base64;
/// lists as arrays.
fn rows_of(batch: &RecordBatch) -> ApiResult<Vec<Value>> {
    let schema = batch.schema();
    let mut rows: Vec<Map<String, Value>> = vec![Map::new(); batch.num_rows()];
    for (index, field) in schema.fields().iter().enumerate() {
        let column = batch.column(index);
        for (row, object) in rows.iter_mut().enumerate() {
            object.insert(field.name().clone(), cell(column.as_ref(), row)?);
        }
    }
    Ok(rows.into_iter().map(Value::Object).collect())
}

fn cell(column: &dyn Array, row: usize) -> ApiResult<Value> {
    use arrow::array::AsArray;
    use arrow::datatypes::*;
    if column.is_null(row) {
        return Ok(Value::Null);
    }
    let integer = |v: i64| {
        if v.abs() <= MAX_SAFE_INTEGER {
            Value::from(v)
        } else {
            Value::from(v.to_string())
        }
    };
    let float =
        |v: f64| serde_json::Number::from_f64(v).map_or_else(|| Value::from(v.to_string()), Value::Number);
    let b64 = |bytes: &[u8]| Value::from(base64::engine::general_purpose::STANDARD.encode(bytes));
    Ok(match column.data_type() {
        DataType::Int8 => integer(i64::from(column.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => integer(i64::from(column.as_primitive::<Int16Type>().value(row))),
        DataType::Int32 => integer(i64::from(column.as_primitive::<Int32Type>().value(row))),
        DataType::Int64 => integer(column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::from(column.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => Value::from(column.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => Value::from(column.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => {
            let v = column.as_primitive::<UInt64Type>().value(row);
            if v <= MAX_SAFE_INTEGER as u64 {
                Value::from(v)
            } else {
                Value::from(v.to_string())
            }
        }
        DataType::Float32 => float(f64::from(column.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => Value::from(column.as_boolean().value(row)),
        DataType::Utf8 => Value::from(column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(column.as_string::<i64>().value(row)),
        DataType::Binary => b64(column.as_binary::<i32>().value(row)),
        DataType::LargeBinary => b64(column.as_binary::<i64>().value(row)),
        DataType::FixedSizeBinary(_) => b64(column.as_fixed_size_binary().value(row)),
        DataType::Timestamp(unit, zone) => {
            let nanos = match unit {
                TimeUnit::Second => column
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000_000),
                TimeUnit::Millisecond => column
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Microsecond => column
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(row)
                    .saturating_mul(1_000),
                TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(row),
            };
            let at = chrono::DateTime::from_timestamp_nanos(nanos);
            if zone.is_some() {
                Value::from(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            } else {
                Value::from(at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string())
            }
        }
        DataType::List(_) => {
            let values = column.as_list::<i32>().value(row);
            Value::Array(
                (0..values.len())
                    .map(|i| cell(values.as_ref(), i))
                    .collect::<ApiResult<_>>()?,
            )
        }
        DataType::LargeList(_) => {
            let values = column.as_list::<i64>().value(row);
            Value::Array(
                (0..values.len())
                    .map(|i| cell(values.as_ref(), i))
                    .collect::<ApiResult<_>>()?,
            )
        }
        _ => {
            let formatter = ArrayFormatter::try_new(column, &FormatOptions::default()).map_err(read_error)?;
            Value::from(formatter.value(row).to_string())
        }
    })
}
