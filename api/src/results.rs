//! Step results served back from object storage: JSON or CSV pages read
//! with the Parquet reader (only the row groups a page needs), or the whole
//! Parquet object streamed as it is.
//!
//! JSON and CSV pages stream: record batches are read one at a time and
//! written to the response body in chunks of about [`CHUNK_BYTES`], so the
//! API holds one decoded batch and one chunk, whatever the width of the
//! rows. The body never exceeds the configured byte cap: a page that would
//! cross it stops at a row boundary (see [`respond`]).
//!
//! Both formats render a value with the same function, [`cell`], so they
//! agree on every type:
//!
//! | Arrow | JSON | CSV |
//! |---|---|---|
//! | Int8…Int64, UInt8…UInt64 | number when \|v\| ≤ 2^53, else string | digits |
//! | Float16/32/64 | number; NaN, ±Infinity as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` | the same text |
//! | Decimal | string (`"12.50"`, the scale's digits kept) | the same text |
//! | Utf8 | string | text (RFC 4180 quoting) |
//! | Binary, FixedSizeBinary | base64 string (standard alphabet, padded) | base64 |
//! | Boolean | `true` / `false` | `true` / `false` |
//! | Date | `"2024-01-31"` | the same |
//! | Time | `"13:45:00.5"` | the same |
//! | Timestamp without zone | `"2024-01-31T13:45:00.123456"` | the same |
//! | Timestamp with zone | RFC 3339, `Z` for UTC, else the zone's fixed offset | the same |
//! | ±infinity dates and timestamps (i32::MAX / i64::MAX sentinels) | `"infinity"`, `"-infinity"` | the same |
//! | Interval, Duration | ISO 8601 duration as PostgreSQL's `iso_8601` style writes it (`"P1Y2M3DT4H5M6.5S"`, `"PT0S"`) | the same |
//! | List, Struct, Map | array, object, array of `{key, value}` | the JSON text |
//! | Null | `null` | empty field |
//!
//! A null is `null` in JSON and an empty field in CSV; an empty string is a
//! quoted `""` in CSV, so the two stay distinct.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::*;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use ferry_shared::Error;
use ferry_shared::objects::ObjectTarget;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStream};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use serde_json::{Map, Number, Value, json};

use crate::error::ApiResult;

/// Response formats of a step result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Parquet,
}

/// Default cap on the body of a JSON or CSV result page (64 MiB).
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Integers beyond this are sent as strings in JSON (2^53).
const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_992;

/// Size at which a chunk of rendered rows is handed to the response body.
const CHUNK_BYTES: usize = 64 * 1024;

/// Rows per decoded record batch.
const BATCH_ROWS: usize = 1024;

/// Room kept under the byte cap for the end of a JSON document
/// (`],"offset":…,"limit":…,"total_rows":…,"truncated":…,"next_offset":…}`).
const JSON_TRAILER_RESERVE: usize = 160;

/// Headers of a CSV page, sent before the rows.
const TOTAL_ROWS_HEADER: &str = "x-ferry-total-rows";
const EXPECTED_ROWS_HEADER: &str = "x-ferry-expected-rows";
const MAX_BYTES_HEADER: &str = "x-ferry-max-bytes";

fn read_error(error: impl std::fmt::Display) -> Error {
    Error::internal(format!("cannot read the step result: {error}"))
}

/// A page of a result: the rows to skip, how many to send, and the cap on
/// the response body in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
    pub max_bytes: usize,
}

/// Answers a step result in `format`.
///
/// JSON is `{"columns", "data", "offset", "limit", "total_rows",
/// "truncated", "next_offset"}`: `truncated` is true when the byte cap
/// stopped the page before `limit` rows (the document stays valid and
/// `data` holds whole rows only); `next_offset` is the offset of the first
/// row not sent, or null when the page reached the last row.
///
/// CSV sends `X-Ferry-Total-Rows`, `X-Ferry-Expected-Rows` (the rows the
/// page holds unless the cap stops it) and `X-Ferry-Max-Bytes` up front; a
/// capped page ends at a row boundary with fewer rows than expected.
pub async fn respond(target: &ObjectTarget, path: &Path, format: Format, page: Page) -> ApiResult<Response> {
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
    let (total_rows, batches) = open(reader, page).await?;
    let expected = total_rows.saturating_sub(page.offset).min(page.limit);
    let schema = batches.schema().clone();
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        _ => "application/json",
    };
    let mut headers = vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))];
    if format == Format::Csv {
        for (name, value) in [
            (TOTAL_ROWS_HEADER, total_rows),
            (EXPECTED_ROWS_HEADER, expected),
            (MAX_BYTES_HEADER, page.max_bytes),
        ] {
            headers.push((HeaderName::from_static(name), HeaderValue::from(value)));
        }
    }
    let writer = Writer::new(format, &schema, page, total_rows);
    let body = Body::from_stream(render(batches, writer));
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}

/// Opens the Parquet reader on the rows of `page`: the result's row count,
/// and a stream of record batches.
async fn open(reader: ObjectFile, page: Page) -> ApiResult<(usize, ParquetRecordBatchStream<ObjectFile>)> {
    let builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(read_error)?;
    let total_rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let stream = builder
        .with_batch_size(BATCH_ROWS)
        .with_offset(page.offset)
        .with_limit(page.limit)
        .build()
        .map_err(read_error)?;
    Ok((total_rows, stream))
}

/// The body as a stream of chunks: the head, rows in chunks of about
/// [`CHUNK_BYTES`], then the tail. A read error mid-way ends the body
/// early (the client sees an incomplete response, never a wrong one).
fn render<S>(batches: S, writer: Writer) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = Result<RecordBatch, ParquetError>> + Send + Unpin + 'static,
{
    futures::stream::unfold(
        (batches, writer, None::<(RecordBatch, usize)>),
        |(mut batches, mut writer, mut current)| async move {
            loop {
                match writer.phase {
                    Phase::Done => return None,
                    Phase::Head => {
                        writer.phase = Phase::Rows;
                        let head = writer.head();
                        return Some((Ok(head), (batches, writer, current)));
                    }
                    Phase::Tail => {
                        writer.phase = Phase::Done;
                        let tail = writer.tail();
                        if tail.is_empty() {
                            return None;
                        }
                        return Some((Ok(tail), (batches, writer, current)));
                    }
                    Phase::Rows => {}
                }
                let (batch, row) = match current.take() {
                    Some(position) => position,
                    None => match batches.next().await {
                        Some(Ok(batch)) => (batch, 0),
                        Some(Err(error)) => {
                            tracing::warn!(%error, "a step result stopped while streaming");
                            writer.phase = Phase::Done;
                            return Some((
                                Err(std::io::Error::other(format!(
                                    "cannot read the step result: {error}"
                                ))),
                                (batches, writer, None),
                            ));
                        }
                        None => {
                            writer.phase = Phase::Tail;
                            continue;
                        }
                    },
                };
                let mut chunk = Vec::with_capacity(CHUNK_BYTES);
                let next = writer.rows(&batch, row, &mut chunk);
                if next < batch.num_rows() && writer.phase == Phase::Rows {
                    current = Some((batch, next));
                }
                if !chunk.is_empty() {
                    return Some((Ok(Bytes::from(chunk)), (batches, writer, current)));
                }
            }
        },
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Rows,
    Tail,
    Done,
}

/// Renders a page as JSON or CSV and keeps its count of bytes and rows.
struct Writer {
    format: Format,
    phase: Phase,
    page: Page,
    total_rows: usize,
    /// The column list of the JSON head, or the CSV header row.
    columns: Vec<u8>,
    /// Each column name as a JSON key with its colon.
    keys: Vec<Vec<u8>>,
    written: usize,
    rows: usize,
    truncated: bool,
    row: Vec<u8>,
}

impl Writer {
    fn new(format: Format, schema: &SchemaRef, page: Page, total_rows: usize) -> Writer {
        let fields = schema.fields();
        let columns = match format {
            Format::Csv => {
                let mut line = Vec::new();
                for (index, field) in fields.iter().enumerate() {
                    if index > 0 {
                        line.push(b',');
                    }
                    csv_text(field.name(), &mut line);
                }
                line.push(b'\n');
                line
            }
            _ => {
                let columns: Vec<Value> = fields
                    .iter()
                    .map(|f| json!({"name": f.name(), "type": type_name(f.data_type())}))
                    .collect();
                Value::Array(columns).to_string().into_bytes()
            }
        };
        let keys = fields
            .iter()
            .map(|f| {
                let mut key = Value::from(f.name().as_str()).to_string().into_bytes();
                key.push(b':');
                key
            })
            .collect();
        Writer {
            format,
            phase: Phase::Head,
            page,
            total_rows,
            columns,
            keys,
            written: 0,
            rows: 0,
            truncated: false,
            row: Vec::new(),
        }
    }

    fn head(&mut self) -> Bytes {
        let head = match self.format {
            Format::Csv => std::mem::take(&mut self.columns),
            _ => {
                let mut head = b"{\"columns\":".to_vec();
                head.append(&mut self.columns);
                head.extend_from_slice(b",\"data\":[");
                head
            }
        };
        self.written += head.len();
        Bytes::from(head)
    }

    /// Renders rows of `batch` from `start` into `chunk` until the chunk is
    /// full, the batch ends or the byte cap is reached (then the phase moves
    /// to the tail); answers the next row to render.
    fn rows(&mut self, batch: &RecordBatch, start: usize, chunk: &mut Vec<u8>) -> usize {
        let reserve = match self.format {
            Format::Csv => 0,
            _ => JSON_TRAILER_RESERVE,
        };
        let mut row = start;
        while row < batch.num_rows() && chunk.len() < CHUNK_BYTES {
            self.row.clear();
            self.render_row(batch, row);
            let size = self.written + chunk.len() + self.row.len() + reserve;
            if size > self.page.max_bytes {
                self.truncated = true;
                self.phase = Phase::Tail;
                break;
            }
            chunk.extend_from_slice(&self.row);
            self.rows += 1;
            row += 1;
        }
        self.written += chunk.len();
        row
    }

    fn render_row(&mut self, batch: &RecordBatch, row: usize) {
        let out = &mut self.row;
        match self.format {
            Format::Csv => {
                for (index, column) in batch.columns().iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    csv_field(&cell(column.as_ref(), row), out);
                }
                out.push(b'\n');
            }
            _ => {
                if self.rows > 0 {
                    out.push(b',');
                }
                out.push(b'{');
                for (index, column) in batch.columns().iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&self.keys[index]);
                    out.extend_from_slice(cell(column.as_ref(), row).to_string().as_bytes());
                }
                out.push(b'}');
            }
        }
    }

    fn tail(&mut self) -> Bytes {
        if self.format == Format::Csv {
            return Bytes::new();
        }
        let end = self.page.offset.saturating_add(self.rows);
        let next_offset =
            (end < self.total_rows && (self.truncated || self.rows == self.page.limit)).then_some(end);
        let tail = format!(
            "],\"offset\":{},\"limit\":{},\"total_rows\":{},\"truncated\":{},\"next_offset\":{}}}",
            self.page.offset,
            self.page.limit,
            self.total_rows,
            self.truncated,
            next_offset.map_or_else(|| "null".to_owned(), |n| n.to_string()),
        );
        self.written += tail.len();
        Bytes::from(tail)
    }
}

/// A CSV field from a rendered value: null is an empty field, strings are
/// quoted when they need it (and always when empty), nested values are
/// their JSON text.
fn csv_field(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => {}
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => csv_text(s, out),
        Value::Array(_) | Value::Object(_) => csv_text(&value.to_string(), out),
    }
}

/// RFC 4180 quoting: a field holding a comma, a quote, a line break or
/// nothing at all is quoted, with its quotes doubled.
fn csv_text(text: &str, out: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    let special = |b: &u8| matches!(b, b',' | b'"' | b'\n' | b'\r');
    if !bytes.is_empty() && !bytes.iter().any(special) {
        out.extend_from_slice(bytes);
        return;
    }
    out.push(b'"');
    for part in bytes.split_inclusive(|b| *b == b'"') {
        out.extend_from_slice(part);
        if part.last() == Some(&b'"') {
            out.push(b'"');
        }
    }
    out.push(b'"');
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
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary | DataType::LargeBinary | DataType::FixedSizeBinary(_) | DataType::BinaryView => {
            "binary".into()
        }
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Interval(_) => "interval".into(),
        DataType::Duration(_) => "duration".into(),
        DataType::Null => "null".into(),
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            format!("list<{}>", type_name(item.data_type()))
        }
        DataType::Struct(_) => "struct".into(),
        DataType::Map(_, _) => "map".into(),
        DataType::Dictionary(_, value) => type_name(value),
        other => other.to_string().to_lowercase(),
    }
}

/// One value as JSON, the single rendering both formats share (see the
/// table at the top of this file). Never fails: a type this function does
/// not know is rendered as Arrow displays it.
pub(crate) fn cell(column: &dyn Array, row: usize) -> Value {
    if matches!(column.data_type(), DataType::Null) || column.is_null(row) {
        return Value::Null;
    }
    let b64 = |bytes: &[u8]| Value::from(base64::engine::general_purpose::STANDARD.encode(bytes));
    match column.data_type() {
        DataType::Int8 => integer(i64::from(column.as_primitive::<Int8Type>().value(row))),
        DataType::Int16 => integer(i64::from(column.as_primitive::<Int16Type>().value(row))),
        DataType::Int32 => integer(i64::from(column.as_primitive::<Int32Type>().value(row))),
        DataType::Int64 => integer(column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => Value::from(column.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => Value::from(column.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => Value::from(column.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => {
            let v = column.as_primitive::<UInt64Type>().value(row);
            match i64::try_from(v) {
                Ok(v) => integer(v),
                Err(_) => Value::from(v.to_string()),
            }
        }
        DataType::Float16 => float(column.as_primitive::<Float16Type>().value(row).to_f64()),
        DataType::Float32 => float32(column.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Decimal32(_, scale) => decimal(
            column.as_primitive::<Decimal32Type>().value(row).to_string(),
            *scale,
        ),
        DataType::Decimal64(_, scale) => decimal(
            column.as_primitive::<Decimal64Type>().value(row).to_string(),
            *scale,
        ),
        DataType::Decimal128(_, scale) => decimal(
            column.as_primitive::<Decimal128Type>().value(row).to_string(),
            *scale,
        ),
        DataType::Decimal256(_, scale) => decimal(
            column.as_primitive::<Decimal256Type>().value(row).to_string(),
            *scale,
        ),
        DataType::Boolean => Value::from(column.as_boolean().value(row)),
        DataType::Utf8 => Value::from(column.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(column.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(column.as_string_view().value(row)),
        DataType::Binary => b64(column.as_binary::<i32>().value(row)),
        DataType::LargeBinary => b64(column.as_binary::<i64>().value(row)),
        DataType::BinaryView => b64(column.as_binary_view().value(row)),
        DataType::FixedSizeBinary(_) => b64(column.as_fixed_size_binary().value(row)),
        DataType::Date32 => {
            let days = column.as_primitive::<Date32Type>().value(row);
            Value::from(match days {
                i32::MAX => "infinity".to_owned(),
                i32::MIN | -2_147_483_647 => "-infinity".to_owned(),
                days => date_text(i64::from(days)),
            })
        }
        DataType::Date64 => {
            let millis = column.as_primitive::<Date64Type>().value(row);
            Value::from(match infinity(millis) {
                Some(text) => text.to_owned(),
                None => date_text(millis.div_euclid(86_400_000)),
            })
        }
        DataType::Time32(unit) => {
            let v = i128::from(match unit {
                TimeUnit::Second => column.as_primitive::<Time32SecondType>().value(row),
                _ => column.as_primitive::<Time32MillisecondType>().value(row),
            });
            Value::from(time_text(v * nanos_per(*unit)))
        }
        DataType::Time64(unit) => {
            let v = i128::from(match unit {
                TimeUnit::Nanosecond => column.as_primitive::<Time64NanosecondType>().value(row),
                _ => column.as_primitive::<Time64MicrosecondType>().value(row),
            });
            Value::from(time_text(v * nanos_per(*unit)))
        }
        DataType::Timestamp(unit, zone) => {
            let v = match unit {
                TimeUnit::Second => column.as_primitive::<TimestampSecondType>().value(row),
                TimeUnit::Millisecond => column.as_primitive::<TimestampMillisecondType>().value(row),
                TimeUnit::Microsecond => column.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => column.as_primitive::<TimestampNanosecondType>().value(row),
            };
            Value::from(match infinity(v) {
                Some(text) => text.to_owned(),
                None => timestamp_text(i128::from(v) * nanos_per(*unit), zone.as_deref()),
            })
        }
        DataType::Duration(unit) => {
            let v = match unit {
                TimeUnit::Second => column.as_primitive::<DurationSecondType>().value(row),
                TimeUnit::Millisecond => column.as_primitive::<DurationMillisecondType>().value(row),
                TimeUnit::Microsecond => column.as_primitive::<DurationMicrosecondType>().value(row),
                TimeUnit::Nanosecond => column.as_primitive::<DurationNanosecondType>().value(row),
            };
            Value::from(iso_duration(0, 0, i128::from(v) * nanos_per(*unit)))
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            let months = column.as_primitive::<IntervalYearMonthType>().value(row);
            Value::from(iso_duration(i64::from(months), 0, 0))
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = column.as_primitive::<IntervalDayTimeType>().value(row);
            Value::from(iso_duration(
                0,
                i64::from(v.days),
                i128::from(v.milliseconds) * 1_000_000,
            ))
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = column.as_primitive::<IntervalMonthDayNanoType>().value(row);
            Value::from(iso_duration(
                i64::from(v.months),
                i64::from(v.days),
                i128::from(v.nanoseconds),
            ))
        }
        DataType::List(_) => items(column.as_list::<i32>().value(row).as_ref()),
        DataType::LargeList(_) => items(column.as_list::<i64>().value(row).as_ref()),
        DataType::FixedSizeList(_, _) => items(column.as_fixed_size_list().value(row).as_ref()),
        DataType::Map(_, _) => items(&column.as_map().value(row)),
        DataType::Struct(fields) => {
            let structure = column.as_struct();
            let object: Map<String, Value> = fields
                .iter()
                .zip(structure.columns())
                .map(|(field, child)| (field.name().clone(), cell(child.as_ref(), row)))
                .collect();
            Value::Object(object)
        }
        DataType::Dictionary(_, value_type) => {
            match arrow::compute::cast(&column.slice(row, 1), value_type) {
                Ok(values) => cell(values.as_ref(), 0),
                Err(_) => displayed(column, row),
            }
        }
        _ => displayed(column, row),
    }
}

/// The values of a list as a JSON array.
fn items(values: &dyn Array) -> Value {
    Value::Array((0..values.len()).map(|i| cell(values, i)).collect())
}

/// A value as Arrow displays it; empty when Arrow cannot display it.
fn displayed(column: &dyn Array, row: usize) -> Value {
    ArrayFormatter::try_new(column, &FormatOptions::default())
        .map(|f| Value::from(f.value(row).to_string()))
        .unwrap_or(Value::Null)
}

fn integer(v: i64) -> Value {
    if v.unsigned_abs() <= MAX_SAFE_INTEGER.unsigned_abs() {
        Value::from(v)
    } else {
        Value::from(v.to_string())
    }
}

/// Finite floats are numbers; NaN and ±Infinity, which JSON cannot hold,
/// are the strings PostgreSQL writes for them.
fn float(v: f64) -> Value {
    match Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::from("NaN"),
        None if v > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

/// A float32 with its own shortest digits (0.1, not 0.10000000149011612).
fn float32(v: f32) -> Value {
    if !v.is_finite() {
        return float(f64::from(v));
    }
    float(v.to_string().parse::<f64>().unwrap_or(f64::from(v)))
}

/// An unscaled integer's digits with the decimal point put back.
fn decimal(digits: String, scale: i8) -> Value {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits.as_str()),
    };
    let text = if scale <= 0 {
        format!("{sign}{digits}{}", "0".repeat(usize::from(scale.unsigned_abs())))
    } else {
        let scale = usize::from(scale.unsigned_abs());
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, fraction) = padded.split_at(padded.len() - scale);
        format!("{sign}{whole}.{fraction}")
    };
    Value::from(text)
}

/// The ±infinity sentinels of 64-bit dates and timestamps.
fn infinity(v: i64) -> Option<&'static str> {
    match v {
        i64::MAX => Some("infinity"),
        i64::MIN | -9_223_372_036_854_775_807 => Some("-infinity"),
        _ => None,
    }
}

fn nanos_per(unit: TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// Proleptic Gregorian year, month and day of a day count from 1970-01-01
/// (H. Hinnant's algorithm: exact for every i64 day count in range).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// ISO 8601 date; years outside 0000–9999 carry a sign (astronomical
/// numbering: year 0 is 1 BC).
fn date_text(days: i64) -> String {
    let (year, month, day) = civil(days);
    match year {
        0..=9999 => format!("{year:04}-{month:02}-{day:02}"),
        10000.. => format!("+{year}-{month:02}-{day:02}"),
        _ => format!("-{:04}-{month:02}-{day:02}", year.unsigned_abs()),
    }
}

/// Fractional seconds with 3, 6 or 9 digits, whichever is exact; nothing
/// for a whole second.
fn fraction(nanos: i128) -> String {
    if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    }
}

/// A time of day (`24:00:00` stays as PostgreSQL allows it).
fn time_text(nanos: i128) -> String {
    let seconds = nanos.div_euclid(1_000_000_000);
    let rest = nanos.rem_euclid(1_000_000_000);
    format!(
        "{:02}:{:02}:{:02}{}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        fraction(rest)
    )
}

/// RFC 3339. Without a zone, a local date-time; with UTC, `Z`; with a fixed
/// offset (`+02:00`), the local time and that offset; a named zone other
/// than UTC is written in UTC with `Z` (the instant is exact).
fn timestamp_text(nanos: i128, zone: Option<&str>) -> String {
    let (shift, suffix) = match zone {
        None => (0, String::new()),
        Some(zone) => match fixed_offset(zone) {
            Some(0) | None => (0, "Z".to_owned()),
            Some(seconds) => {
                let sign = if seconds < 0 { '-' } else { '+' };
                let abs = seconds.unsigned_abs();
                (seconds, format!("{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60))
            }
        },
    };
    let nanos = nanos + i128::from(shift) * 1_000_000_000;
    let seconds = nanos.div_euclid(1_000_000_000);
    let rest = nanos.rem_euclid(1_000_000_000);
    let days = seconds.div_euclid(86_400);
    let time = time_text(seconds.rem_euclid(86_400) * 1_000_000_000 + rest);
    let date = i64::try_from(days).map_or_else(|_| days.to_string(), date_text);
    format!("{date}T{time}{suffix}")
}

/// Seconds east of UTC of a zone written as an offset (`+02:00`, `-0530`,
/// `+05`); None for a named zone.
fn fixed_offset(zone: &str) -> Option<i32> {
    let (sign, rest) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !matches!(digits.len(), 2 | 4) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    Some(sign * (hours * 3600 + minutes * 60))
}

/// An ISO 8601 duration as PostgreSQL's `intervalstyle = iso_8601` writes
/// it: `P1Y2M3DT4H5M6.5S`, each field with its own sign, `PT0S` for zero.
fn iso_duration(months: i64, days: i64, nanos: i128) -> String {
    if months == 0 && days == 0 && nanos == 0 {
        return "PT0S".to_owned();
    }
    let mut text = String::from("P");
    let (years, months) = (months / 12, months % 12);
    for (value, unit) in [(years, 'Y'), (months, 'M'), (days, 'D')] {
        if value != 0 {
            text.push_str(&format!("{value}{unit}"));
        }
    }
    if nanos != 0 {
        text.push('T');
        let sign = if nanos < 0 { "-" } else { "" };
        let abs = nanos.unsigned_abs();
        let (hours, minutes, seconds, rest) = (
            abs / 3_600_000_000_000,
            abs / 60_000_000_000 % 60,
            abs / 1_000_000_000 % 60,
            abs % 1_000_000_000,
        );
        if hours != 0 {
            text.push_str(&format!("{sign}{hours}H"));
        }
        if minutes != 0 {
            text.push_str(&format!("{sign}{minutes}M"));
        }
        if seconds != 0 || rest != 0 {
            let digits = format!("{rest:09}");
            let digits = digits.trim_end_matches('0');
            let point = if digits.is_empty() { "" } else { "." };
            text.push_str(&format!("{sign}{seconds}{point}{digits}S"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::*;
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::{Field, Fields, Schema};

    const BOTH: [Format; 2] = [Format::Json, Format::Csv];

    fn page(max_bytes: usize) -> Page {
        Page {
            offset: 0,
            limit: 10_000,
            max_bytes,
        }
    }

    /// The whole body of `batches` rendered as `format`.
    fn body(format: Format, batches: Vec<RecordBatch>, page: Page, total_rows: usize) -> String {
        let schema = batches[0].schema();
        let writer = Writer::new(format, &schema, page, total_rows);
        let chunks: Vec<Result<Bytes, std::io::Error>> = futures::executor::block_on(
            render(futures::stream::iter(batches.into_iter().map(Ok)), writer).collect(),
        );
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&chunk.expect("no read error"));
        }
        String::from_utf8(out).expect("UTF-8")
    }

    /// Three rows of every type an extractor produces (and a few more):
    /// an ordinary value, an edge value, and a null or a second edge.
    fn every_type() -> RecordBatch {
        let interval = |months, days, nanoseconds| IntervalMonthDayNano {
            months,
            days,
            nanoseconds,
        };
        let list = ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, true)),
            OffsetBuffer::from_lengths([3, 0, 0]),
            Arc::new(Int32Array::from(vec![Some(1), None, Some(3)])),
            Some(vec![true, true, false].into()),
        );
        let large_list = LargeListArray::new(
            Arc::new(Field::new("item", DataType::Utf8, true)),
            OffsetBuffer::from_lengths([2, 1, 0]),
            Arc::new(StringArray::from(vec![Some("x"), None, Some("y,z")])),
            None,
        );
        let structure = StructArray::new(
            Fields::from(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("b", DataType::Utf8, true),
            ]),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])),
            ],
            Some(vec![true, true, false].into()),
        );
        let dictionary: DictionaryArray<Int32Type> =
            vec![Some("red"), Some("blue"), None].into_iter().collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "i8",
                Arc::new(Int8Array::from(vec![Some(1), Some(i8::MIN), None])),
            ),
            (
                "i16",
                Arc::new(Int16Array::from(vec![Some(2), Some(i16::MAX), None])),
            ),
            (
                "i32",
                Arc::new(Int32Array::from(vec![Some(3), Some(i32::MIN), None])),
            ),
            (
                "i64",
                Arc::new(Int64Array::from(vec![
                    Some(MAX_SAFE_INTEGER),
                    Some(-MAX_SAFE_INTEGER - 1),
                    Some(i64::MIN),
                ])),
            ),
            (
                "u8",
                Arc::new(UInt8Array::from(vec![Some(1), Some(u8::MAX), None])),
            ),
            (
                "u16",
                Arc::new(UInt16Array::from(vec![Some(2), Some(u16::MAX), None])),
            ),
            (
                "u32",
                Arc::new(UInt32Array::from(vec![Some(3), Some(u32::MAX), None])),
            ),
            (
                "u64",
                Arc::new(UInt64Array::from(vec![Some(1 << 53), Some(u64::MAX), None])),
            ),
            (
                "f32",
                Arc::new(Float32Array::from(vec![Some(0.1), Some(f32::NAN), None])),
            ),
            (
                "f64",
                Arc::new(Float64Array::from(vec![
                    Some(1.5),
                    Some(f64::INFINITY),
                    Some(f64::NEG_INFINITY),
                ])),
            ),
            (
                "dec",
                Arc::new(
                    Decimal128Array::from(vec![Some(1_234_500), Some(-5), None])
                        .with_precision_and_scale(10, 3)
                        .expect("decimal"),
                ),
            ),
            (
                "dec_negative_scale",
                Arc::new(
                    Decimal128Array::from(vec![Some(12), Some(-3), None])
                        .with_precision_and_scale(5, -2)
                        .expect("decimal"),
                ),
            ),
            (
                "text",
                Arc::new(StringArray::from(vec![
                    Some("a,b"),
                    Some("say \"hi\"\nbye"),
                    Some(""),
                ])),
            ),
            (
                "large_text",
                Arc::new(LargeStringArray::from(vec![Some("é"), Some(" x "), None])),
            ),
            (
                "bin",
                Arc::new(BinaryArray::from(vec![
                    Some(&[0u8, 255, 16][..]),
                    Some(&[][..]),
                    None,
                ])),
            ),
            (
                "large_bin",
                Arc::new(LargeBinaryArray::from(vec![Some(&b"hi"[..]), None, None])),
            ),
            (
                "fixed_bin",
                Arc::new(
                    FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                        vec![Some(vec![1u8, 2]), None, Some(vec![255, 255])].into_iter(),
                        2,
                    )
                    .expect("fixed"),
                ),
            ),
            (
                "flag",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            ),
            (
                "day",
                Arc::new(Date32Array::from(vec![19_753, i32::MAX, -i32::MAX])),
            ),
            (
                "clock",
                Arc::new(Time64MicrosecondArray::from(vec![
                    Some(49_506_250_000),
                    Some(86_400_000_000),
                    None,
                ])),
            ),
            (
                "at",
                Arc::new(TimestampMicrosecondArray::from(vec![
                    1_706_708_700_123_456,
                    i64::MAX,
                    -i64::MAX,
                ])),
            ),
            (
                "at_utc",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_706_701_500_500_000, i64::MAX, -i64::MAX])
                        .with_timezone("UTC"),
                ),
            ),
            (
                "at_offset",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_706_701_500_500_000, 0, -1])
                        .with_timezone("+02:00"),
                ),
            ),
            (
                "span",
                Arc::new(IntervalMonthDayNanoArray::from(vec![
                    interval(14, 3, 14_706_500_000_000),
                    interval(0, -1, -7_200_000_000_000),
                    interval(0, 0, 0),
                ])),
            ),
            (
                "span_day_time",
                Arc::new(IntervalDayTimeArray::from(vec![
                    Some(IntervalDayTime::new(1, 1500)),
                    Some(IntervalDayTime::new(0, -250)),
                    None,
                ])),
            ),
            (
                "span_year_month",
                Arc::new(IntervalYearMonthArray::from(vec![Some(14), Some(-1), None])),
            ),
            (
                "elapsed",
                Arc::new(DurationMicrosecondArray::from(vec![
                    Some(90_000_000),
                    Some(i64::MAX),
                    None,
                ])),
            ),
            ("ints", Arc::new(list)),
            ("texts", Arc::new(large_list)),
            ("pair", Arc::new(structure)),
            ("colour", Arc::new(dictionary)),
            ("nothing", Arc::new(NullArray::new(3))),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        let arrays = columns.into_iter().map(|(_, array)| array).collect();
        RecordBatch::try_new(Arc::new(schema), arrays).expect("batch")
    }

    /// What every column of [`every_type`] renders as, row by row.
    fn expected() -> Vec<(&'static str, [Value; 3])> {
        vec![
            ("i8", [json!(1), json!(-128), Value::Null]),
            ("i16", [json!(2), json!(32767), Value::Null]),
            ("i32", [json!(3), json!(-2_147_483_648), Value::Null]),
            (
                "i64",
                [
                    json!(9_007_199_254_740_992_i64),
                    json!("-9007199254740993"),
                    json!("-9223372036854775808"),
                ],
            ),
            ("u8", [json!(1), json!(255), Value::Null]),
            ("u16", [json!(2), json!(65535), Value::Null]),
            ("u32", [json!(3), json!(4_294_967_295_u32), Value::Null]),
            (
                "u64",
                [
                    json!(9_007_199_254_740_992_u64),
                    json!("18446744073709551615"),
                    Value::Null,
                ],
            ),
            ("f32", [json!(0.1), json!("NaN"), Value::Null]),
            ("f64", [json!(1.5), json!("Infinity"), json!("-Infinity")]),
            ("dec", [json!("1234.500"), json!("-0.005"), Value::Null]),
            ("dec_negative_scale", [json!("1200"), json!("-300"), Value::Null]),
            ("text", [json!("a,b"), json!("say \"hi\"\nbye"), json!("")]),
            ("large_text", [json!("é"), json!(" x "), Value::Null]),
            ("bin", [json!("AP8Q"), json!(""), Value::Null]),
            ("large_bin", [json!("aGk="), Value::Null, Value::Null]),
            ("fixed_bin", [json!("AQI="), Value::Null, json!("//8=")]),
            ("flag", [json!(true), json!(false), Value::Null]),
            (
                "day",
                [json!("2024-01-31"), json!("infinity"), json!("-infinity")],
            ),
            ("clock", [json!("13:45:06.250"), json!("24:00:00"), Value::Null]),
            (
                "at",
                [
                    json!("2024-01-31T13:45:00.123456"),
                    json!("infinity"),
                    json!("-infinity"),
                ],
            ),
            (
                "at_utc",
                [
                    json!("2024-01-31T11:45:00.500Z"),
                    json!("infinity"),
                    json!("-infinity"),
                ],
            ),
            (
                "at_offset",
                [
                    json!("2024-01-31T13:45:00.500+02:00"),
                    json!("1970-01-01T02:00:00+02:00"),
                    json!("1970-01-01T01:59:59.999999+02:00"),
                ],
            ),
            (
                "span",
                [json!("P1Y2M3DT4H5M6.5S"), json!("P-1DT-2H"), json!("PT0S")],
            ),
            (
                "span_day_time",
                [json!("P1DT1.5S"), json!("PT-0.25S"), Value::Null],
            ),
            ("span_year_month", [json!("P1Y2M"), json!("P-1M"), Value::Null]),
            (
                "elapsed",
                [json!("PT1M30S"), json!("PT2562047788H54.775807S"), Value::Null],
            ),
            ("ints", [json!([1, null, 3]), json!([]), Value::Null]),
            ("texts", [json!(["x", null]), json!(["y,z"]), json!([])]),
            (
                "pair",
                [
                    json!({"a": 1, "b": "x"}),
                    json!({"a": null, "b": "y"}),
                    Value::Null,
                ],
            ),
            ("colour", [json!("red"), json!("blue"), Value::Null]),
            ("nothing", [Value::Null, Value::Null, Value::Null]),
        ]
    }

    /// The CSV text of a rendered value: None for null.
    fn csv_of(value: &Value) -> Option<String> {
        match value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    #[test]
    fn every_arrow_type_renders_to_json_value_for_value() {
        let text = body(Format::Json, vec![every_type()], page(DEFAULT_MAX_BYTES), 3);
        let document: Value = serde_json::from_str(&text).expect("valid JSON");
        let rows = document["data"].as_array().expect("data");
        assert_eq!(rows.len(), 3);
        for (name, values) in expected() {
            for (row, value) in values.iter().enumerate() {
                assert_eq!(&rows[row][name], value, "column {name}, row {row}");
            }
        }
        assert_eq!(document["truncated"], false);
        assert_eq!(document["next_offset"], Value::Null);
        assert_eq!(document["total_rows"], 3);
        let types: Vec<&str> = document["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert!(
            types.contains(&"interval") && types.contains(&"timestamptz") && types.contains(&"list<integer>")
        );
    }

    #[test]
    fn every_arrow_type_renders_to_csv_value_for_value() {
        let text = body(Format::Csv, vec![every_type()], page(DEFAULT_MAX_BYTES), 3);
        let records = ferry_testkit::csv::parse(&text);
        assert_eq!(records.len(), 4, "{text}");
        let expected = expected();
        let names: Vec<Option<String>> = expected
            .iter()
            .map(|(name, _)| Some((*name).to_owned()))
            .collect();
        assert_eq!(records[0], names);
        for (column, (name, values)) in expected.iter().enumerate() {
            for (row, value) in values.iter().enumerate() {
                assert_eq!(
                    records[row + 1][column],
                    csv_of(value),
                    "column {name}, row {row}"
                );
            }
        }
    }

    #[test]
    fn a_csv_field_is_quoted_only_when_it_must_be_and_an_empty_string_is_not_null() {
        let mut out = Vec::new();
        for (value, expected) in [
            (json!("plain"), "plain"),
            (json!("a,b"), "\"a,b\""),
            (json!("say \"hi\""), "\"say \"\"hi\"\"\""),
            (json!("two\r\nlines"), "\"two\r\nlines\""),
            (json!(""), "\"\""),
            (Value::Null, ""),
            (json!([1, "a,b"]), "\"[1,\"\"a,b\"\"]\""),
        ] {
            out.clear();
            csv_field(&value, &mut out);
            assert_eq!(String::from_utf8_lossy(&out), expected);
        }
    }

    #[test]
    fn dates_and_times_far_from_today_render_without_panicking() {
        assert_eq!(date_text(0), "1970-01-01");
        assert_eq!(date_text(-719_528), "0000-01-01");
        assert_eq!(date_text(-719_529), "-0001-12-31");
        assert_eq!(date_text(2_932_897), "+10000-01-01");
        for days in [i32::MAX - 1, i32::MIN + 2] {
            assert!(!date_text(i64::from(days)).is_empty());
        }
        for v in [i64::MAX - 1, i64::MIN + 2] {
            for unit in [TimeUnit::Second, TimeUnit::Nanosecond] {
                assert!(!timestamp_text(i128::from(v) * nanos_per(unit), Some("UTC")).is_empty());
            }
        }
        assert_eq!(iso_duration(-14, 0, 0), "P-1Y-2M");
        assert_eq!(iso_duration(0, 0, 1), "PT0.000000001S");
    }

    fn numbered(rows: i64) -> RecordBatch {
        let ids: Vec<i64> = (0..rows).collect();
        let labels: Vec<String> = (0..rows).map(|i| format!("row {i:04}, padded")).collect();
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("label", Arc::new(StringArray::from(labels)) as ArrayRef),
        ])
        .expect("batch")
    }

    #[test]
    fn the_byte_cap_ends_a_json_page_at_a_row_boundary_with_a_valid_document() {
        let cap = 1000;
        let page = Page {
            offset: 40,
            limit: 100,
            max_bytes: cap,
        };
        let text = body(Format::Json, vec![numbered(60), numbered(40)], page, 1_000);
        assert!(text.len() <= cap, "{} bytes", text.len());
        let document: Value = serde_json::from_str(&text).expect("a capped page is valid JSON");
        let rows = document["data"].as_array().expect("data");
        assert!(!rows.is_empty() && rows.len() < 100, "{} rows", rows.len());
        for (index, row) in rows.iter().enumerate() {
            assert_eq!(row["id"], json!(index), "whole rows, in order");
            assert_eq!(row["label"], json!(format!("row {index:04}, padded")));
        }
        assert_eq!(document["truncated"], true);
        assert_eq!(document["next_offset"], json!(40 + rows.len()));
        assert_eq!(document["limit"], 100);
        assert_eq!(document["offset"], 40);
        assert_eq!(document["total_rows"], 1_000);
    }

    #[test]
    fn the_byte_cap_ends_a_csv_page_at_a_row_boundary() {
        let cap = 1000;
        let text = body(Format::Csv, vec![numbered(100)], page(cap), 100);
        assert!(text.len() <= cap, "{} bytes", text.len());
        assert!(text.ends_with('\n'));
        let records = ferry_testkit::csv::parse(&text);
        assert!(
            records.len() > 1 && records.len() < 101,
            "{} records",
            records.len()
        );
        for (index, record) in records.iter().skip(1).enumerate() {
            assert_eq!(record[0].as_deref(), Some(index.to_string().as_str()));
            assert_eq!(record[1], Some(format!("row {index:04}, padded")));
        }
    }

    #[test]
    fn a_cap_smaller_than_one_row_still_answers_a_valid_empty_page() {
        for format in BOTH {
            let text = body(format, vec![numbered(5)], page(10), 5);
            match format {
                Format::Csv => assert_eq!(text, "id,label\n"),
                _ => {
                    let document: Value = serde_json::from_str(&text).expect("valid JSON");
                    assert_eq!(document["data"], json!([]));
                    assert_eq!(document["truncated"], true);
                    assert_eq!(document["next_offset"], 0);
                }
            }
        }
    }

    #[test]
    fn a_page_spanning_many_batches_streams_in_bounded_chunks() {
        let schema = numbered(1).schema();
        let batches: Vec<RecordBatch> = (0..50).map(|_| numbered(1024)).collect();
        for format in BOTH {
            let writer = Writer::new(format, &schema, page(DEFAULT_MAX_BYTES), 51_200);
            let chunks: Vec<Bytes> = futures::executor::block_on(
                render(futures::stream::iter(batches.clone().into_iter().map(Ok)), writer)
                    .map(|c| c.expect("chunk"))
                    .collect(),
            );
            assert!(chunks.len() > 50, "{} chunks", chunks.len());
            let largest = chunks.iter().map(Bytes::len).max().unwrap_or(0);
            assert!(largest < CHUNK_BYTES + 1024, "a chunk of {largest} bytes");
            let total: usize = chunks.iter().map(Bytes::len).sum();
            assert!(total > 1_000_000, "{total} bytes");
        }
    }
}
