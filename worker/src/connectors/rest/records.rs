//! JSON pages into Arrow columns: the records `http_request::read_page`
//! finds in a response body (at `records_path`) typed as columns that
//! widen as records disagree.
//!
//! Values arrive as raw JSON text and are typed from it, so nothing is lost
//! on the way: an integer beyond 64 bits or a nested object keeps its exact
//! text. Column types (one per field, in order of first appearance):
//!
//! | values seen (nulls aside) | column |
//! |---|---|
//! | only `true`/`false` | Boolean |
//! | only integers that fit in 64 bits | Int64 |
//! | numbers with a fraction or exponent, and integers exact in a double | Float64 |
//! | only strings | Utf8 (the string) |
//! | objects, arrays, integers beyond 64 bits, or a mix of the kinds above | Utf8 holding each value's JSON text (strings quoted) |
//! | only nulls | Utf8, all null |
//!
//! A record that is not an object is read as `{"value": record}`. A field
//! absent from a record is null there; a key repeated in one record keeps
//! its first value.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, new_null_array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use ferry_shared::domain::ErrorKind;
use ferry_shared::steps::http_request::{self, PageError, PageFacts, RecordSink, ResponseShape, VALUE_FIELD};

use crate::extract::{ExtractError, Output};

/// The most distinct fields the records of one step may have: more means
/// `records_path` points at a map keyed by ids rather than at a list.
pub(crate) const MAX_COLUMNS: usize = 1000;

/// Integers beyond ±2^53 are not all exact in a double.
const EXACT_IN_DOUBLE: i64 = 1 << 53;

/// Why reading a page's records stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RecordError {
    /// The body is not JSON, or its records are not where the config says.
    Shape(String),
    /// The records have more than [`MAX_COLUMNS`] distinct fields.
    TooManyColumns,
    /// The batch could not be handed on (the writer stopped).
    Closed,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Shape(why) => f.write_str(why),
            RecordError::TooManyColumns => write!(
                f,
                "the records have more than {MAX_COLUMNS} distinct fields; does records_path point at a map \
                 keyed by ids rather than at a list of records?"
            ),
            RecordError::Closed => f.write_str("the result writer stopped"),
        }
    }
}

// ---------------------------------------------------------------- columns

/// What the values of a column have been so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Seen {
    boolean: bool,
    integer: bool,
    /// An integer beyond ±2^53 (not exact as a double).
    wide_integer: bool,
    float: bool,
    string: bool,
    /// Objects, arrays and integers beyond 64 bits: JSON text only.
    other: bool,
}

/// A column's type, from what it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Boolean,
    Int,
    Float,
    Text,
    Json,
}

impl Seen {
    fn kind(self) -> Kind {
        let number = self.integer || self.float;
        let kinds = usize::from(self.boolean) + usize::from(number) + usize::from(self.string);
        if self.other || kinds > 1 {
            return Kind::Json;
        }
        if self.boolean {
            Kind::Boolean
        } else if self.string {
            Kind::Text
        } else if self.float {
            if self.wide_integer {
                Kind::Json
            } else {
                Kind::Float
            }
        } else if self.integer {
            Kind::Int
        } else {
            Kind::Null
        }
    }

    fn add(&mut self, value: &Scalar) {
        match value {
            Scalar::Null => {}
            Scalar::Boolean(_) => self.boolean = true,
            Scalar::Int(n) => {
                self.integer = true;
                if !(-EXACT_IN_DOUBLE..=EXACT_IN_DOUBLE).contains(n) {
                    self.wide_integer = true;
                }
            }
            Scalar::Float(_) => self.float = true,
            Scalar::Text => self.string = true,
            Scalar::Other => self.other = true,
        }
    }
}

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::Boolean => DataType::Boolean,
            Kind::Int => DataType::Int64,
            Kind::Float => DataType::Float64,
            Kind::Null | Kind::Text | Kind::Json => DataType::Utf8,
        }
    }

    /// Whether batches written with `self` stay true once the column is
    /// `wider`: only an all-null column can become something else.
    fn admits(self, wider: Kind) -> bool {
        self == wider || (self == Kind::Null && wider.data_type() == DataType::Utf8)
    }
}

/// One JSON value, typed from its text.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Null,
    Boolean(bool),
    Int(i64),
    Float(f64),
    /// A string; its text is unescaped when appended.
    Text,
    /// An object, an array or a number no Int64/Float64 holds exactly.
    Other,
}

/// Types `raw`, one JSON value as serde_json validated it.
fn classify(raw: &str) -> Scalar {
    match raw.as_bytes().first() {
        None | Some(b'n') => Scalar::Null,
        Some(b't') => Scalar::Boolean(true),
        Some(b'f') => Scalar::Boolean(false),
        Some(b'"') => Scalar::Text,
        Some(b'{' | b'[') => Scalar::Other,
        Some(_) if raw.contains(['.', 'e', 'E']) => match raw.parse::<f64>() {
            Ok(x) if x.is_finite() => Scalar::Float(x),
            _ => Scalar::Other,
        },
        Some(_) => raw.parse::<i64>().map_or(Scalar::Other, Scalar::Int),
    }
}

/// The text of a JSON string literal `raw` (quotes included).
fn unescape(raw: &str) -> Cow<'_, str> {
    match raw.get(1..raw.len().saturating_sub(1)) {
        Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
        _ => Cow::Owned(serde_json::from_str::<String>(raw).unwrap_or_default()),
    }
}

/// A column's values in the batch being built.
enum Data {
    /// Only nulls so far: how many.
    Null(usize),
    Boolean(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Text(StringBuilder),
    Json(StringBuilder),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::Null(n) => *n,
            Data::Boolean(b) => b.len(),
            Data::Int(b) => b.len(),
            Data::Float(b) => b.len(),
            Data::Text(b) | Data::Json(b) => b.len(),
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Data::Null(_) => Kind::Null,
            Data::Boolean(_) => Kind::Boolean,
            Data::Int(_) => Kind::Int,
            Data::Float(_) => Kind::Float,
            Data::Text(_) => Kind::Text,
            Data::Json(_) => Kind::Json,
        }
    }

    fn push_null(&mut self) {
        match self {
            Data::Null(n) => *n += 1,
            Data::Boolean(b) => b.append_null(),
            Data::Int(b) => b.append_null(),
            Data::Float(b) => b.append_null(),
            Data::Text(b) | Data::Json(b) => b.append_null(),
        }
    }

    /// Appends `value` (raw text `raw`) to a column of `kind`, converting
    /// the values so far when the column just widened.
    fn push(&mut self, kind: Kind, value: Scalar, raw: &str) {
        if self.kind() != kind {
            self.widen(kind);
        }
        match (self, value) {
            (data, Scalar::Null) => data.push_null(),
            (Data::Boolean(b), Scalar::Boolean(v)) => b.append_value(v),
            (Data::Int(b), Scalar::Int(v)) => b.append_value(v),
            (Data::Float(b), Scalar::Float(v)) => b.append_value(v),
            // Exact: a Float column holds only integers within ±2^53.
            (Data::Float(b), Scalar::Int(v)) => b.append_value(v as f64),
            (Data::Text(b), Scalar::Text) => b.append_value(unescape(raw)),
            (Data::Json(b), _) => b.append_value(raw),
            // `kind` comes from every value seen, this one included, so the
            // pairs above are the only ones; keep the text if not.
            (data, _) => {
                data.widen(Kind::Json);
                if let Data::Json(b) = data {
                    b.append_value(raw);
                }
            }
        }
    }

    /// Rewrites the values so far as `kind` (always a widening: nulls to
    /// anything, Int to Float, anything to JSON text).
    fn widen(&mut self, kind: Kind) {
        let old = std::mem::replace(self, Data::Null(0));
        let mut wider = Data::empty(kind, old.len());
        match old {
            Data::Null(n) => (0..n).for_each(|_| wider.push_null()),
            Data::Boolean(mut b) => {
                let values = b.finish();
                values
                    .iter()
                    .for_each(|v| wider.push_json(v.map(|v| v.to_string())));
            }
            Data::Int(mut b) => {
                let values = b.finish();
                values.iter().for_each(|v| match (&mut wider, v) {
                    // Exact: only integers within ±2^53 reach a Float column.
                    (Data::Float(floats), Some(v)) => floats.append_value(v as f64),
                    (wider, v) => wider.push_json(v.map(|v| v.to_string())),
                });
            }
            Data::Float(mut b) => {
                let values = b.finish();
                values
                    .iter()
                    .for_each(|v| wider.push_json(v.and_then(|v| serde_json::to_string(&v).ok())));
            }
            Data::Text(mut b) => {
                let values = b.finish();
                values
                    .iter()
                    .for_each(|v| wider.push_json(v.and_then(|v| serde_json::to_string(v).ok())));
            }
            json @ Data::Json(_) => wider = json,
        }
        *self = wider;
    }

    /// Appends JSON text to a JSON column (null for `None`).
    fn push_json(&mut self, text: Option<String>) {
        match (self, text) {
            (Data::Json(b), Some(text)) => b.append_value(text),
            (data, _) => data.push_null(),
        }
    }

    fn empty(kind: Kind, capacity: usize) -> Data {
        match kind {
            Kind::Null => Data::Null(0),
            Kind::Boolean => Data::Boolean(BooleanBuilder::with_capacity(capacity)),
            Kind::Int => Data::Int(Int64Builder::with_capacity(capacity)),
            Kind::Float => Data::Float(Float64Builder::with_capacity(capacity)),
            Kind::Text => Data::Text(StringBuilder::with_capacity(capacity, capacity * 16)),
            Kind::Json => Data::Json(StringBuilder::with_capacity(capacity, capacity * 16)),
        }
    }

    /// The values as an array of `data_type`; the column starts over empty
    /// with room for as many values.
    fn finish(&mut self, data_type: &DataType) -> ArrayRef {
        let len = self.len();
        let array: ArrayRef = match self {
            Data::Null(n) => new_null_array(data_type, *n),
            Data::Boolean(b) => Arc::new(b.finish()),
            Data::Int(b) => Arc::new(b.finish()),
            Data::Float(b) => Arc::new(b.finish()),
            Data::Text(b) | Data::Json(b) => Arc::new(b.finish()),
        };
        *self = Data::empty(self.kind(), len);
        array
    }
}

struct Column {
    name: String,
    seen: Seen,
    /// The kind the sink was started with; `None` before it started.
    written: Option<Kind>,
    data: Data,
}

/// How many times a step reads its pages at most: a record that does not
/// fit the columns written so far makes it read them again, widened.
pub(crate) const MAX_PASSES: usize = 3;

/// Ends pass `pass` over records that did not fit the columns written so
/// far: what was written is dropped and the next pass writes the widened
/// columns.
pub(crate) async fn read_again_widened(pass: usize, table: &mut Table, out: &mut Output<'_>) {
    tracing::info!(
        pass,
        "a record does not fit the columns written so far; reading the pages again with them widened"
    );
    out.restart().await;
    table.next_pass();
}

/// The error of a step whose records' fields changed on every pass.
pub(crate) fn fields_kept_changing() -> ExtractError {
    ExtractError::new(
        ErrorKind::UnsupportedType,
        format!(
            "the records' fields kept changing while the pages were read ({MAX_PASSES} reads); retry the step"
        ),
    )
}

/// The records of one read, as columns: batches are cut every
/// `batch_rows` records or `batch_bytes` bytes of record text.
///
/// The first batch fixes the sink's schema. A later record that needs a
/// new column, or a wider type than a written column has, cannot be
/// written: the table then only learns (`scanning`), and the read is done
/// again, with the columns learnt, once this pass has seen every record.
pub(crate) struct Table {
    columns: Vec<Column>,
    by_name: HashMap<String, usize>,
    /// The column of the previous record's n-th field: records mostly list
    /// their fields in the same order.
    hint: Vec<usize>,
    schema: Option<SchemaRef>,
    scanning: bool,
    rows: usize,
    bytes: usize,
    batch_rows: usize,
    batch_bytes: usize,
}

impl Table {
    pub(crate) fn new(batch_rows: usize, batch_bytes: usize) -> Table {
        Table {
            columns: Vec::new(),
            by_name: HashMap::new(),
            hint: Vec::new(),
            schema: None,
            scanning: false,
            rows: 0,
            bytes: 0,
            batch_rows: batch_rows.max(1),
            batch_bytes: batch_bytes.max(1),
        }
    }

    /// Whether a record disagreed with the written schema in this pass.
    pub(crate) fn scanning(&self) -> bool {
        self.scanning
    }

    /// Starts another pass over the records: what was learnt is kept (the
    /// columns, in order, with every kind of value they have seen), the
    /// batch being built is dropped and the schema will be fixed again.
    pub(crate) fn next_pass(&mut self) {
        for column in &mut self.columns {
            column.written = None;
            column.data = Data::Null(0);
        }
        self.schema = None;
        self.scanning = false;
        self.rows = 0;
        self.bytes = 0;
    }

    /// Adds the `position`-th field of the current record.
    fn field(&mut self, position: usize, key: &str, raw: &str) -> Result<(), RecordError> {
        let index = match self.hint.get(position) {
            Some(&index) if self.columns[index].name == key => index,
            _ => {
                let index = match self.by_name.get(key) {
                    Some(&index) => index,
                    None => self.add_column(key)?,
                };
                if position < self.hint.len() {
                    self.hint[position] = index;
                } else if position == self.hint.len() {
                    self.hint.push(index);
                }
                index
            }
        };
        let column = &mut self.columns[index];
        if !self.scanning && column.data.len() > self.rows {
            // A key repeated within one record: the first value stays, and
            // the second does not count towards the column's type either.
            return Ok(());
        }
        let value = classify(raw);
        column.seen.add(&value);
        if self.scanning {
            return Ok(());
        }
        let kind = column.seen.kind();
        match column.written {
            Some(written) if !written.admits(kind) => {
                self.start_scanning();
                return Ok(());
            }
            Some(_) => column.written = Some(kind),
            None if self.schema.is_some() => {
                self.start_scanning();
                return Ok(());
            }
            None => {}
        }
        column.data.push(kind, value, raw);
        Ok(())
    }

    fn add_column(&mut self, key: &str) -> Result<usize, RecordError> {
        if self.columns.len() >= MAX_COLUMNS {
            return Err(RecordError::TooManyColumns);
        }
        let index = self.columns.len();
        self.columns.push(Column {
            name: key.to_owned(),
            seen: Seen::default(),
            written: None,
            data: Data::Null(self.rows),
        });
        self.by_name.insert(key.to_owned(), index);
        Ok(index)
    }

    fn start_scanning(&mut self) {
        self.scanning = true;
        for column in &mut self.columns {
            column.data = Data::Null(0);
        }
        self.rows = 0;
        self.bytes = 0;
    }

    fn end_record(&mut self, bytes: usize) -> Result<Option<RecordBatch>, RecordError> {
        if self.scanning {
            return Ok(None);
        }
        for column in &mut self.columns {
            if column.data.len() == self.rows {
                column.data.push_null();
            }
        }
        self.rows += 1;
        self.bytes += bytes;
        if self.rows >= self.batch_rows || self.bytes >= self.batch_bytes {
            return self.cut().map(Some);
        }
        Ok(None)
    }

    /// The batch built so far, if it has rows (none while scanning).
    pub(crate) fn flush(&mut self) -> Result<Option<RecordBatch>, RecordError> {
        if self.scanning || self.rows == 0 {
            return Ok(None);
        }
        self.cut().map(Some)
    }

    /// The columns as they stand (the written schema once there is one);
    /// a single `value` column when no record was seen.
    pub(crate) fn schema(&self) -> SchemaRef {
        if let Some(schema) = &self.schema {
            return schema.clone();
        }
        let fields: Vec<Field> = if self.columns.is_empty() {
            vec![Field::new(VALUE_FIELD, DataType::Utf8, true)]
        } else {
            self.columns
                .iter()
                .map(|column| Field::new(&column.name, column.seen.kind().data_type(), true))
                .collect()
        };
        Arc::new(Schema::new(fields))
    }

    fn cut(&mut self) -> Result<RecordBatch, RecordError> {
        let schema = match &self.schema {
            Some(schema) => schema.clone(),
            None => {
                for column in &mut self.columns {
                    column.written = Some(column.seen.kind());
                }
                let schema = self.schema();
                self.schema = Some(schema.clone());
                schema
            }
        };
        let columns = self
            .columns
            .iter_mut()
            .zip(schema.fields())
            .map(|(column, field)| column.data.finish(field.data_type()))
            .collect();
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(schema, columns)
            .map_err(|e| RecordError::Shape(format!("the records could not be assembled: {e}")))
    }
}

/// A page's records into a table, each full batch to `send`.
struct PageSink<'a> {
    table: &'a mut Table,
    send: &'a mut dyn FnMut(RecordBatch) -> Result<(), RecordError>,
}

impl RecordSink for PageSink<'_> {
    type Error = RecordError;

    fn field(&mut self, position: usize, key: &str, raw: &str) -> Result<(), RecordError> {
        self.table.field(position, key, raw)
    }

    fn end(&mut self, bytes: usize) -> Result<(), RecordError> {
        match self.table.end_record(bytes)? {
            Some(batch) => (self.send)(batch),
            None => Ok(()),
        }
    }
}

/// Reads one page `body` (see [`http_request::read_page`]): each record
/// goes into `table`, each full batch to `send`.
pub(crate) fn read_page(
    body: &[u8],
    shape: &ResponseShape,
    table: &mut Table,
    send: &mut dyn FnMut(RecordBatch) -> Result<(), RecordError>,
) -> Result<PageFacts, RecordError> {
    http_request::read_page(body, shape, &mut PageSink { table, send }).map_err(|error| match error {
        PageError::Shape(why) => RecordError::Shape(why),
        PageError::Sink(error) => error,
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type};

    use super::*;

    /// Reads `pages` (each a JSON body) through one table; returns the
    /// batches and whether the read must be done again.
    fn read(pages: &[&str], shape: &ResponseShape, batch_rows: usize) -> (Vec<RecordBatch>, bool, Table) {
        let mut table = Table::new(batch_rows, usize::MAX);
        let mut batches = Vec::new();
        for page in pages {
            read_page(page.as_bytes(), shape, &mut table, &mut |batch| {
                batches.push(batch);
                Ok(())
            })
            .expect("page");
        }
        batches.extend(table.flush().expect("flush"));
        let again = table.scanning();
        (batches, again, table)
    }

    fn texts(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
        let array = batch.column_by_name(column).expect("column");
        let array = array.as_string::<i32>();
        (0..array.len())
            .map(|i| array.is_valid(i).then(|| array.value(i).to_owned()))
            .collect()
    }

    #[test]
    fn fields_become_typed_columns_in_order_of_first_appearance() {
        let body = r#"[{"id": 1, "name": "a\"b", "score": 1.5, "ok": true},
                       {"name": "c", "id": 2, "extra": null}]"#;
        let (batches, again, _) = read(&[body], &ResponseShape::new(None, None), 100);
        assert!(!again);
        let batch = &batches[0];
        let schema = batch.schema();
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "name", "score", "ok", "extra"]);
        let types: Vec<_> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::Utf8,
                DataType::Float64,
                DataType::Boolean,
                DataType::Utf8
            ]
        );
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), [1, 2]);
        assert_eq!(texts(batch, "name"), [Some("a\"b".into()), Some("c".into())]);
        let scores = batch.column(2).as_primitive::<Float64Type>();
        assert!(scores.is_valid(0) && scores.is_null(1));
        assert_eq!(texts(batch, "extra"), [None, None]);
    }

    #[test]
    fn a_batch_widens_in_place_and_nested_or_mixed_values_keep_their_json_text() {
        let body = r#"[{"n": 1, "m": "x", "o": {"a": [1, 2]}, "big": 1},
                       {"n": 2.5, "m": 3, "o": null, "big": 123456789012345678901234567890}]"#;
        let (batches, again, _) = read(&[body], &ResponseShape::new(None, None), 100);
        assert!(!again, "nothing was written before the batch widened");
        let batch = &batches[0];
        let n = batch
            .column_by_name("n")
            .expect("n")
            .as_primitive::<Float64Type>();
        assert_eq!(n.values().to_vec(), [1.0, 2.5]);
        assert_eq!(texts(batch, "m"), [Some("\"x\"".into()), Some("3".into())]);
        assert_eq!(texts(batch, "o"), [Some(r#"{"a": [1, 2]}"#.into()), None]);
        assert_eq!(
            texts(batch, "big"),
            [Some("1".into()), Some("123456789012345678901234567890".into())]
        );
    }

    #[test]
    fn integers_beyond_a_double_with_floats_become_json_text_not_rounded_floats() {
        let body = r#"[{"n": 9007199254740993}, {"n": 0.5}]"#;
        let (batches, _, _) = read(&[body], &ResponseShape::new(None, None), 100);
        assert_eq!(
            texts(&batches[0], "n"),
            [Some("9007199254740993".into()), Some("0.5".into())]
        );
    }

    #[test]
    fn a_record_disagreeing_after_the_first_batch_asks_for_another_pass_that_fits_everything() {
        let shape = ResponseShape::new(None, None);
        let pages = [r#"[{"a": 1}, {"a": 2}]"#, r#"[{"a": 3, "b": "new"}, {"a": 4.5}]"#];
        let (batches, again, mut table) = read(&pages, &shape, 2);
        assert!(again, "a new field and a float after the first batch was cut");
        assert_eq!(batches.len(), 1);
        table.next_pass();
        let mut second = Vec::new();
        for page in pages {
            read_page(page.as_bytes(), &shape, &mut table, &mut |batch| {
                second.push(batch);
                Ok(())
            })
            .expect("page");
        }
        second.extend(table.flush().expect("flush"));
        assert!(!table.scanning());
        let schema = second[0].schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Float64);
        assert_eq!(schema.field(1).name(), "b");
        let a: Vec<f64> = second
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Float64Type>().values().to_vec())
            .collect();
        assert_eq!(a, [1.0, 2.0, 3.0, 4.5]);
    }

    #[test]
    fn an_all_null_written_column_may_still_take_strings() {
        let shape = ResponseShape::new(None, None);
        let (batches, again, _) = read(&[r#"[{"a": null}]"#, r#"[{"a": "x"}]"#], &shape, 1);
        assert!(!again);
        assert_eq!(texts(&batches[1], "a"), [Some("x".into())]);
    }

    #[test]
    fn scalars_are_a_value_column_and_a_single_object_one_record() {
        let (batches, _, _) = read(&[r#"[1, "two", null]"#], &ResponseShape::new(None, None), 100);
        assert_eq!(
            texts(&batches[0], "value"),
            [Some("1".into()), Some("\"two\"".into()), None]
        );
        let (batches, _, _) = read(
            &[r#"{"data": {"id": 7}}"#],
            &ResponseShape::new(Some("data"), None),
            100,
        );
        assert_eq!(batches[0].num_rows(), 1);
        assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 7);
    }

    #[test]
    fn a_repeated_key_keeps_its_first_value_and_too_many_fields_are_refused() {
        let (batches, _, _) = read(
            &[r#"[{"a": 1, "a": "two"}, {"a": 3}]"#],
            &ResponseShape::new(None, None),
            100,
        );
        assert_eq!(
            batches[0].column(0).as_primitive::<Int64Type>().values().to_vec(),
            [1, 3]
        );
        let wide: Vec<String> = (0..=MAX_COLUMNS).map(|i| format!("\"k{i}\": {i}")).collect();
        let body = format!("[{{{}}}]", wide.join(","));
        let mut table = Table::new(100, usize::MAX);
        let result = read_page(
            body.as_bytes(),
            &ResponseShape::new(None, None),
            &mut table,
            &mut |_| Ok(()),
        );
        assert_eq!(result, Err(RecordError::TooManyColumns));
    }

    #[test]
    fn a_writer_that_stops_stops_the_page() {
        let mut table = Table::new(1, usize::MAX);
        let result = read_page(
            br#"[{"a": 1}, {"a": 2}]"#,
            &ResponseShape::new(None, None),
            &mut table,
            &mut |_| Err(RecordError::Closed),
        );
        assert_eq!(result, Err(RecordError::Closed));
    }

    #[test]
    fn no_records_is_one_value_column() {
        let table = Table::new(10, 10);
        let schema = table.schema();
        assert_eq!(schema.fields().len(), 1);
        assert_eq!(schema.field(0).name(), VALUE_FIELD);
    }
}
