//! Reading a succeeded statement's result into the step's output, one
//! chunk at a time: `ARROW_STREAM` chunks are Arrow IPC streams decoded as
//! their bytes arrive from the presigned link; `JSON_ARRAY` chunks (inline
//! or linked) are rows of strings typed by the manifest's schema. Memory
//! holds at most one chunk.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use arrow::buffer::Buffer;
use arrow::compute::cast_with_options;
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use ferry_shared::domain::ErrorKind;
use reqwest::Url;
use serde_json::Value;

use super::client::{LinkError, Next, Statement, Wait, link_headers};
use crate::connectors::http;
use crate::connectors::warehouse::{base64_binary, parsed, rows_batch, strict, unreadable};
use crate::extract::{ExtractError, Output};

/// How the chunks of a result are encoded (`manifest.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    ArrowStream,
    JsonArray,
}

impl Format {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Format::ArrowStream => "ARROW_STREAM",
            Format::JsonArray => "JSON_ARRAY",
        }
    }
}

/// Writes the result of `statement` (asked for in `requested` format) to
/// `out`. `download` bounds each presigned fetch.
pub(crate) async fn read(
    statement: &Statement,
    requested: Format,
    out: &mut Output<'_>,
    wait: &Wait<'_>,
    download: Duration,
) -> Result<(), ExtractError> {
    let manifest = statement
        .response
        .get("manifest")
        .ok_or_else(|| ExtractError::internal("Databricks answered SUCCEEDED without a manifest"))?;
    let format = match manifest.get("format").and_then(Value::as_str) {
        Some("ARROW_STREAM") => Format::ArrowStream,
        Some("JSON_ARRAY") => Format::JsonArray,
        None => requested,
        Some(other) => {
            return Err(ExtractError::unsupported(format!(
                "Databricks answered in format {other}, which this worker does not read"
            )));
        }
    };
    if manifest.get("truncated").and_then(Value::as_bool) == Some(true) {
        tracing::warn!(statement_id = %statement.id, "databricks truncated the statement's result");
    }
    let columns = fields(manifest);
    let mut reader = Reader {
        statement,
        format,
        columns,
        schema: None,
        wait,
        download,
    };
    if format == Format::JsonArray {
        reader.start(out, None)?;
    }
    let total = manifest.get("total_chunk_count").and_then(Value::as_u64);
    let first = statement
        .response
        .get("result")
        .filter(|result| result.get("data_array").is_some() || result.get("external_links").is_some())
        .cloned();
    let mut chunk = match (first, total) {
        (Some(first), _) => Some(first),
        (None, Some(count)) if count > 0 => Some(reader.fetch(&Next::Index(0)).await?),
        (None, _) => None,
    };
    let mut read = 0u64;
    while let Some(data) = chunk.take() {
        read += 1;
        if total.is_some_and(|total| read > total.max(1)) {
            return Err(ExtractError::internal(
                "Databricks pointed to more result chunks than its manifest lists",
            ));
        }
        let mut next = reader.next_of(&data);
        if let Some(rows) = data.get("data_array").and_then(Value::as_array) {
            reader.json_rows(out, rows).await?;
        }
        if let Some(links) = data.get("external_links").and_then(Value::as_array) {
            for link in links {
                reader.link(out, link).await?;
                if let Some(after) = reader.next_of(link) {
                    next = Some(after);
                }
            }
        }
        chunk = match next {
            Some(next) => Some(reader.fetch(&next).await?),
            None => None,
        };
    }
    if reader.schema.is_none() {
        // No chunk at all (an empty Arrow result): the manifest's columns.
        reader.start(out, None)?;
    }
    Ok(())
}

struct Reader<'r> {
    statement: &'r Statement,
    format: Format,
    /// The manifest's columns as Arrow fields.
    columns: Vec<Field>,
    /// The output's schema once started.
    schema: Option<SchemaRef>,
    wait: &'r Wait<'r>,
    download: Duration,
}

/// The output is passed to each method rather than held: `Output` is not
/// `Sync`, and a reader borrowed across an await must be.
impl Reader<'_> {
    /// Starts the output with `fields` (an Arrow stream's own), else the
    /// manifest's columns. Every column is nullable: a later chunk may
    /// carry nulls the first did not.
    fn start(&mut self, out: &mut Output<'_>, fields: Option<Vec<Field>>) -> Result<(), ExtractError> {
        let fields = fields
            .unwrap_or_else(|| self.columns.clone())
            .into_iter()
            .map(|field| field.with_nullable(true))
            .collect();
        self.schema = Some(out.start(fields)?);
        Ok(())
    }

    fn schema(&self) -> Result<SchemaRef, ExtractError> {
        self.schema
            .clone()
            .ok_or_else(|| ExtractError::internal("a result chunk arrived before its columns"))
    }

    /// The chunk after `data` (a chunk or one of its external links).
    fn next_of(&self, data: &Value) -> Option<Next> {
        let client = self.statement.client();
        data.get("next_chunk_internal_link")
            .and_then(Value::as_str)
            .and_then(|path| client.next_link(path))
            .or_else(|| {
                data.get("next_chunk_index")
                    .and_then(Value::as_u64)
                    .map(Next::Index)
            })
    }

    async fn fetch(&self, next: &Next) -> Result<Value, ExtractError> {
        let client = self.statement.client();
        Ok(self.wait.run(client.chunk(&self.statement.id, next)).await??)
    }

    /// Writes rows of a `JSON_ARRAY` chunk, in batches of the output's size.
    async fn json_rows(&mut self, out: &mut Output<'_>, rows: &[Value]) -> Result<(), ExtractError> {
        let schema = self.schema()?;
        let size = out.options().batch_rows.max(1);
        for slice in rows.chunks(size) {
            let batch = json_batch(&schema, slice)?;
            out.write(batch).await?;
        }
        Ok(())
    }

    /// Reads one presigned link (fetching the chunk again once for a fresh
    /// link when it expired).
    async fn link(&mut self, out: &mut Output<'_>, link: &Value) -> Result<(), ExtractError> {
        let client = self.statement.client().clone();
        let mut link = link.clone();
        let mut refreshed = false;
        let response = loop {
            let url = link_url(&link)?;
            let headers = link_headers(&link);
            match self
                .wait
                .run(client.download(&url, &headers, self.download))
                .await?
            {
                Ok(response) => break (response, url),
                Err(LinkError::Failed(error)) => return Err(error.into()),
                Err(LinkError::Expired(status)) if refreshed => {
                    return Err(ExtractError::new(
                        ErrorKind::HttpError,
                        format!(
                            "a fresh presigned link to a result chunk was refused too (HTTP {})",
                            status.as_u16()
                        ),
                    )
                    .with_code(status.as_u16().to_string()));
                }
                Err(LinkError::Expired(_)) => {
                    refreshed = true;
                    let index = link.get("chunk_index").and_then(Value::as_u64).unwrap_or(0);
                    let fresh = self.fetch(&Next::Index(index)).await?;
                    link = fresh
                        .get("external_links")
                        .and_then(Value::as_array)
                        .and_then(|links| {
                            links
                                .iter()
                                .find(|l| l.get("chunk_index").and_then(Value::as_u64) == Some(index))
                                .or(links.first())
                        })
                        .cloned()
                        .ok_or_else(|| ExtractError::internal("Databricks gave no fresh link for a chunk"))?;
                }
            }
        };
        match self.format {
            Format::ArrowStream => self.arrow_stream(out, response).await,
            Format::JsonArray => self.json_body(out, response).await,
        }
    }

    /// Decodes an Arrow IPC stream as its bytes arrive and writes its
    /// batches; the first stream's schema starts the output.
    async fn arrow_stream(
        &mut self,
        out: &mut Output<'_>,
        (mut response, url): (reqwest::Response, Url),
    ) -> Result<(), ExtractError> {
        let mut decoder = StreamDecoder::new();
        while let Some(bytes) = self
            .wait
            .run(response.chunk())
            .await?
            .map_err(|error| http::reading_error(&error, &url))?
        {
            let mut buffer = Buffer::from(bytes);
            while !buffer.is_empty() {
                let batch = decoder.decode(&mut buffer).map_err(ipc_error)?;
                self.start_arrow(out, &decoder)?;
                if let Some(batch) = batch {
                    self.arrow_batch(out, batch).await?;
                }
            }
        }
        decoder.finish().map_err(ipc_error)?;
        self.start_arrow(out, &decoder)
    }

    /// Starts the output with the stream's schema once the decoder has read
    /// it, unless it was started already.
    fn start_arrow(&mut self, out: &mut Output<'_>, decoder: &StreamDecoder) -> Result<(), ExtractError> {
        if self.schema.is_none()
            && let Some(schema) = decoder.schema()
        {
            self.start(
                out,
                Some(schema.fields().iter().map(|f| f.as_ref().clone()).collect()),
            )?;
        }
        Ok(())
    }

    /// Writes a decoded batch under the output's schema (a later chunk's
    /// columns are cast to the first one's types), cut to the output's
    /// batch size.
    async fn arrow_batch(&mut self, out: &mut Output<'_>, batch: RecordBatch) -> Result<(), ExtractError> {
        let schema = self.schema()?;
        if batch.num_columns() != schema.fields().len() {
            return Err(ExtractError::internal(format!(
                "a result chunk has {} columns where the first had {}",
                batch.num_columns(),
                schema.fields().len()
            )));
        }
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    cast_with_options(column, field.data_type(), &strict()).map_err(|_| {
                        ExtractError::unsupported(format!(
                            "column {} changed type between result chunks ({} then {})",
                            field.name(),
                            field.data_type(),
                            column.data_type()
                        ))
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows = batch.num_rows();
        let batch = RecordBatch::try_new_with_options(
            schema,
            columns,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| ExtractError::internal_from("a result chunk does not fit its columns", e))?;
        let size = out.options().batch_rows.max(1);
        let mut offset = 0;
        while offset < rows {
            let len = size.min(rows - offset);
            out.write(batch.slice(offset, len)).await?;
            offset += len;
        }
        Ok(())
    }

    /// A linked `JSON_ARRAY` chunk: one JSON array of rows.
    async fn json_body(
        &mut self,
        out: &mut Output<'_>,
        (response, url): (reqwest::Response, Url),
    ) -> Result<(), ExtractError> {
        let bytes = self
            .wait
            .run(response.bytes())
            .await?
            .map_err(|error| http::reading_error(&error, &url))?;
        let rows: Value = serde_json::from_slice(&bytes)
            .map_err(|_| ExtractError::internal("a JSON_ARRAY result chunk is not JSON"))?;
        let rows = rows
            .as_array()
            .ok_or_else(|| ExtractError::internal("a JSON_ARRAY result chunk is not an array of rows"))?;
        self.json_rows(out, rows).await
    }
}

/// The `external_link` of a link, which must be an http(s) URL.
fn link_url(link: &Value) -> Result<Url, ExtractError> {
    link.get("external_link")
        .and_then(Value::as_str)
        .and_then(|text| Url::parse(text).ok())
        .filter(|url| matches!(url.scheme(), "https" | "http") && url.host_str().is_some())
        .ok_or_else(|| ExtractError::internal("Databricks gave a result link that is not an http(s) URL"))
}

fn ipc_error(error: ArrowError) -> ExtractError {
    ExtractError::new(
        ErrorKind::ConnectionFailed,
        format!("a result chunk is not a readable Arrow stream: {error}"),
    )
}

/// The manifest's columns (`schema.columns`, by `position`) as Arrow
/// fields.
pub(crate) fn fields(manifest: &Value) -> Vec<Field> {
    let mut columns: Vec<&Value> = manifest
        .pointer("/schema/columns")
        .and_then(Value::as_array)
        .map(|columns| columns.iter().collect())
        .unwrap_or_default();
    columns.sort_by_key(|column| column.get("position").and_then(Value::as_u64).unwrap_or(u64::MAX));
    columns
        .into_iter()
        .enumerate()
        .map(|(index, column)| {
            let name = column
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("column_{}", index + 1), str::to_owned);
            Field::new(name, arrow_type(column), true)
        })
        .collect()
}

/// The Arrow type of a manifest column (`type_name`, with `type_precision`
/// / `type_scale` or `type_text` for decimals):
///
/// | type_name | Arrow |
/// |---|---|
/// | BOOLEAN | Boolean |
/// | BYTE, SHORT, INT, LONG | Int8, Int16, Int32, Int64 |
/// | FLOAT, DOUBLE | Float32, Float64 |
/// | DECIMAL(p,s) | Decimal128(p,s) |
/// | DATE | Date32 |
/// | TIMESTAMP | Timestamp(µs, UTC) |
/// | TIMESTAMP_NTZ | Timestamp(µs) |
/// | BINARY | Binary (base64 in JSON) |
/// | STRING, CHAR, INTERVAL, ARRAY, MAP, STRUCT, anything else | Utf8 (the server's text) |
pub(crate) fn arrow_type(column: &Value) -> DataType {
    let name = column
        .get("type_name")
        .and_then(Value::as_str)
        .unwrap_or("STRING")
        .to_ascii_uppercase();
    match name.as_str() {
        "BOOLEAN" => DataType::Boolean,
        "BYTE" | "TINYINT" => DataType::Int8,
        "SHORT" | "SMALLINT" => DataType::Int16,
        "INT" | "INTEGER" => DataType::Int32,
        "LONG" | "BIGINT" => DataType::Int64,
        "FLOAT" => DataType::Float32,
        "DOUBLE" => DataType::Float64,
        "DECIMAL" => decimal(column).unwrap_or(DataType::Utf8),
        "DATE" => DataType::Date32,
        "TIMESTAMP" => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
        "TIMESTAMP_NTZ" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "BINARY" => DataType::Binary,
        _ => DataType::Utf8,
    }
}

fn decimal(column: &Value) -> Option<DataType> {
    let from_text = || {
        let text = column.get("type_text")?.as_str()?;
        let inner = text.split_once('(')?.1.strip_suffix(')')?;
        let (p, s) = inner.split_once(',')?;
        Some((p.trim().parse::<u64>().ok()?, s.trim().parse::<u64>().ok()?))
    };
    let (precision, scale) = match (
        column.get("type_precision").and_then(Value::as_u64),
        column.get("type_scale").and_then(Value::as_u64),
    ) {
        (Some(p), s) => (p, s.unwrap_or(0)),
        (None, _) => from_text()?,
    };
    (1..=38)
        .contains(&precision)
        .then_some(())
        .filter(|()| scale <= precision)
        .map(|()| DataType::Decimal128(precision as u8, scale as i8))
}

/// A batch of `JSON_ARRAY` rows (arrays of strings or nulls) under
/// `schema`.
pub(crate) fn json_batch(schema: &SchemaRef, rows: &[Value]) -> Result<RecordBatch, ExtractError> {
    let mut arrays = Vec::with_capacity(schema.fields().len());
    for (index, field) in schema.fields().iter().enumerate() {
        let mut texts = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
        for row in rows {
            let Some(row) = row.as_array() else {
                return Err(ExtractError::internal("a JSON_ARRAY result row is not an array"));
            };
            match row.get(index) {
                None | Some(Value::Null) => texts.append_null(),
                Some(Value::String(text)) => texts.append_value(text),
                Some(other) => texts.append_value(other.to_string()),
            }
        }
        arrays.push(typed(&texts.finish(), field)?);
    }
    rows_batch(schema, arrays, rows.len())
}

/// `texts` read as `field`'s type.
fn typed(texts: &StringArray, field: &Field) -> Result<ArrayRef, ExtractError> {
    Ok(match field.data_type() {
        DataType::Utf8 => Arc::new(texts.clone()),
        // Rust's parser reads NaN, Infinity and -Infinity as Databricks writes them.
        DataType::Float64 => parsed::<Float64Type>(field, texts)?,
        DataType::Float32 => parsed::<Float32Type>(field, texts)?,
        DataType::Binary => base64_binary(field, texts)?,
        other => cast_with_options(texts, other, &strict()).map_err(|_| unreadable(field))?,
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        Date32Type, Decimal128Type, Int32Type, Int64Type, Schema, TimestampMicrosecondType,
    };
    use serde_json::json;

    use super::*;

    fn schema_of(columns: Value) -> SchemaRef {
        Arc::new(Schema::new(fields(&json!({"schema": {"columns": columns}}))))
    }

    #[test]
    fn manifest_types_map_to_arrow_types() {
        let schema = schema_of(json!([
            {"name": "b", "position": 1, "type_name": "BOOLEAN"},
            {"name": "a", "position": 0, "type_name": "LONG", "type_text": "BIGINT"},
            {"name": "d", "position": 2, "type_name": "DECIMAL", "type_text": "DECIMAL(10,2)", "type_precision": 10, "type_scale": 2},
            {"name": "e", "position": 3, "type_name": "DECIMAL", "type_text": "DECIMAL(38,6)"},
            {"name": "t", "position": 4, "type_name": "TIMESTAMP"},
            {"name": "n", "position": 5, "type_name": "TIMESTAMP_NTZ"},
            {"name": "s", "position": 6, "type_name": "ARRAY", "type_text": "ARRAY<INT>"},
            {"name": "x", "position": 7, "type_name": "BYTE"},
        ]));
        let types: Vec<(&str, &DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type()))
            .collect();
        assert_eq!(
            types,
            [
                ("a", &DataType::Int64),
                ("b", &DataType::Boolean),
                ("d", &DataType::Decimal128(10, 2)),
                ("e", &DataType::Decimal128(38, 6)),
                (
                    "t",
                    &DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
                ),
                ("n", &DataType::Timestamp(TimeUnit::Microsecond, None)),
                ("s", &DataType::Utf8),
                ("x", &DataType::Int8),
            ]
        );
    }

    #[test]
    fn json_rows_read_as_their_columns_types() {
        let schema = schema_of(json!([
            {"name": "i", "position": 0, "type_name": "INT"},
            {"name": "l", "position": 1, "type_name": "LONG"},
            {"name": "f", "position": 2, "type_name": "DOUBLE"},
            {"name": "d", "position": 3, "type_name": "DECIMAL", "type_precision": 10, "type_scale": 2},
            {"name": "day", "position": 4, "type_name": "DATE"},
            {"name": "at", "position": 5, "type_name": "TIMESTAMP"},
            {"name": "ok", "position": 6, "type_name": "BOOLEAN"},
            {"name": "bin", "position": 7, "type_name": "BINARY"},
            {"name": "s", "position": 8, "type_name": "STRING"},
        ]));
        let rows = json!([
            [
                "1",
                "9007199254740993",
                "1.5",
                "12.34",
                "2024-02-29",
                "2024-02-29T10:11:12.345Z",
                "true",
                "AAEC",
                "é"
            ],
            [
                null,
                null,
                "NaN",
                "-0.01",
                null,
                "2024-01-01T00:00:00.000+00:00",
                "false",
                null,
                null
            ],
            ["-3", "0", "-Infinity", "0", "1970-01-01", null, null, "", ""],
        ]);
        let batch = json_batch(&schema, rows.as_array().expect("rows")).expect("batch");
        assert_eq!(batch.num_rows(), 3);
        let ints = batch.column(0).as_primitive::<Int32Type>();
        assert_eq!((ints.value(0), ints.is_null(1), ints.value(2)), (1, true, -3));
        assert_eq!(
            batch.column(1).as_primitive::<Int64Type>().value(0),
            9_007_199_254_740_993
        );
        let floats = batch.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(floats.value(0), 1.5);
        assert!(floats.value(1).is_nan());
        assert_eq!(floats.value(2), f64::NEG_INFINITY);
        let decimals = batch.column(3).as_primitive::<Decimal128Type>();
        assert_eq!((decimals.value(0), decimals.value(1)), (1234, -1));
        assert_eq!(batch.column(4).as_primitive::<Date32Type>().value(0), 19_782);
        let stamps = batch.column(5).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(stamps.value(0), 1_709_201_472_345_000);
        assert_eq!(stamps.value(1), 1_704_067_200_000_000);
        let flags = batch.column(6).as_boolean();
        assert!(flags.value(0) && !flags.value(1) && flags.is_null(2));
        let bin = batch.column(7).as_binary::<i32>();
        assert_eq!(
            (bin.value(0), bin.is_null(1), bin.value(2)),
            (&[0u8, 1, 2][..], true, &[][..])
        );
        assert_eq!(batch.column(8).as_string::<i32>().value(0), "é");
    }

    #[test]
    fn a_value_that_does_not_read_as_its_type_is_unsupported_type() {
        let schema = schema_of(json!([{"name": "n", "position": 0, "type_name": "INT"}]));
        let error =
            json_batch(&schema, json!([["twelve"]]).as_array().expect("rows")).expect_err("not an int");
        assert_eq!(error.error_type, ErrorKind::UnsupportedType);
        assert!(error.message.contains("column n"), "{}", error.message);
    }
}
