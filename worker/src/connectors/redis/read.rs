//! The `redis_read` runner: the keys matching the step's pattern, found by
//! `SCAN` (on every master of a cluster), their values read in pipelined
//! batches, one row per key with `key` first. How values become columns,
//! and why the read may run more than once, is in `design.md` beside this
//! file.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use deadpool_redis::redis::{self, RedisResult};
use ferry_shared::domain::ErrorKind;
use ferry_shared::steps::redis_read::{RedisRead, ValueType, escape_glob};
use serde_json::Value as Json;

use super::RedisHandle;
use super::scan::{Conn, Found, Node};
use crate::connectors::{StepRequest, network};
use crate::extract::{Cancellable, ExtractError, Output, ReadPath};

/// Keys a `SCAN` call is asked to look at (its `COUNT`).
pub(super) const SCAN_COUNT: usize = 1000;
/// Keys whose values are read in one round trip.
pub(super) const FETCH_KEYS: usize = 250;
/// Rows that decide the columns before anything is written.
pub(super) const SAMPLE_ROWS: usize = 1000;
/// Reads of the keyspace at most: the first, one after a widening, and a
/// few more for keys that change shape while they are read.
const MAX_PASSES: usize = 4;
/// Columns a result may have (the key's included).
pub(super) const MAX_COLUMNS: usize = 10_000;
/// Integers beyond ±2^53 are not exact as `Float64`.
const EXACT_IN_F64: u64 = 1 << 53;

/// Runs a `redis_read` step on one pooled connection of `handle`.
pub(super) async fn run(
    handle: &RedisHandle,
    step: &StepRequest<'_>,
    out: &mut Output<'_>,
) -> Result<ReadPath, ExtractError> {
    let config = RedisRead::parse(step.config).map_err(|error| match error {
        ferry_shared::Error::Validation {
            field: Some(field),
            message,
            ..
        } => ExtractError::new(ErrorKind::InvalidConfig, format!("{field}: {message}")),
        other => ExtractError::new(ErrorKind::InvalidConfig, other.to_string()),
    })?;
    let pattern = substitute_escaped(step, &config.pattern)?;
    let mut cancel = Cancellable::new(out.cancel());
    let conn = match &handle.cluster {
        Some(cluster) => Conn::Cluster(
            cancel
                .run(cluster.get())
                .await?
                .map_err(|error| handle.map_pool_error(error))?,
        ),
        None => Conn::Server(
            cancel
                .run(handle.pool.get())
                .await?
                .map_err(|error| handle.map_pool_error(error))?,
        ),
    };
    let mut session = Session {
        conn,
        handle,
        cancel,
        limit: handle.settings.statement_timeout,
    };
    let nodes = session.nodes(step).await?;
    let mut shape = Shape::new(config.value_type());
    let mut known = false;
    for pass in 1..=MAX_PASSES {
        match session.pass(out, &nodes, &pattern, &mut shape, known).await? {
            Pass::Complete(stats) => {
                let skipped = stats.wrong_type + stats.gone + stats.not_json;
                if skipped > 0 {
                    tracing::warn!(
                        rows = stats.rows,
                        skipped_wrong_type = stats.wrong_type,
                        skipped_deleted = stats.gone,
                        skipped_not_json = stats.not_json,
                        passes = pass,
                        "redis keys skipped"
                    );
                }
                tracing::info!(
                    rows = stats.rows,
                    columns = shape.columns.len(),
                    nodes = nodes.len(),
                    passes = pass,
                    "redis keys read"
                );
                return Ok(ReadPath::Redis);
            }
            Pass::Widened => {
                tracing::info!(
                    pass,
                    columns = shape.columns.len(),
                    "keys brought fields or values the columns did not fit; reading again with them widened"
                );
                out.restart().await;
                known = true;
            }
        }
    }
    Err(ExtractError::new(
        ErrorKind::InvalidQuery,
        format!(
            "the matching keys kept changing shape while they were read ({MAX_PASSES} reads); try again \
             when they are not being rewritten"
        ),
    ))
}

/// `pattern` with each `{{name}}` replaced by its parameter's value as
/// [`StepRequest::substitute`] writes it, with the glob characters of the
/// value escaped: a parameter matches itself literally and cannot widen
/// the pattern. The pattern's own text keeps its glob meaning.
pub(super) fn substitute_escaped(step: &StepRequest<'_>, pattern: &str) -> Result<String, ExtractError> {
    let mut escaped = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let end = start + 2 + len + 2;
        escaped.push_str(&rest[..start]);
        escaped.push_str(&escape_glob(&step.substitute(&rest[start..end])?));
        rest = &rest[end..];
    }
    escaped.push_str(rest);
    Ok(escaped)
}

/// One step's connection and the bounds on each of its round trips.
struct Session<'a> {
    conn: Conn,
    handle: &'a RedisHandle,
    cancel: Cancellable<'a>,
    /// The connector's statement timeout, per round trip.
    limit: Duration,
}

/// How one read of the keyspace ended.
enum Pass {
    Complete(Stats),
    /// Some key did not fit the columns written so far; the shape now
    /// holds every key's fields and kinds.
    Widened,
}

/// Rows written and keys skipped in one read.
#[derive(Debug, Default)]
struct Stats {
    rows: u64,
    wrong_type: u64,
    gone: u64,
    not_json: u64,
}

/// Where a read is: sampling the first rows to decide the columns,
/// writing, or (after a key that does not fit) only learning the shape.
enum Mode {
    Sampling { rows: Vec<Row>, bytes: usize },
    Writing(Batch),
    Discovering,
}

impl Session<'_> {
    /// What to `SCAN`: the server, or every master of the cluster (each
    /// announced address checked against the network policy). A server
    /// that turns out to be a cluster node is refused: scanning it alone
    /// would miss the keys of the other nodes.
    async fn nodes(&mut self, step: &StepRequest<'_>) -> Result<Vec<Node>, ExtractError> {
        if let Conn::Server(conn) = &mut self.conn {
            let info = bounded(
                &mut self.cancel,
                self.limit,
                self.handle,
                redis::cmd("INFO").arg("cluster").query_async::<String>(conn),
            )
            .await;
            return match info {
                Ok(info) if info.lines().any(|line| line.trim() == "cluster_enabled:1") => {
                    Err(ExtractError::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "{} is a Redis Cluster node: reading it as a single server would miss the keys \
                             of the other nodes",
                            self.handle.endpoint.target()
                        ),
                    ))
                }
                // A server whose ACL refuses INFO is read as a single server.
                Ok(_) => Ok(vec![Node::Server]),
                Err(error) if error.code.is_some() => Ok(vec![Node::Server]),
                Err(error) => Err(error),
            };
        }
        let seed = self.handle.endpoint.connect_host();
        let masters = bounded(
            &mut self.cancel,
            self.limit,
            self.handle,
            self.conn.masters(&seed),
        )
        .await?;
        if masters.is_empty() {
            return Err(ExtractError::new(
                ErrorKind::ConnectionFailed,
                "the cluster has no slots assigned to any master",
            ));
        }
        for node in &masters {
            if let Node::Master { host, port } = node {
                network::resolve(host, *port, step.policy).await?;
            }
        }
        Ok(masters)
    }

    /// Reads every matching key once. With `known`, the columns are
    /// `shape`'s from the start; otherwise the first rows decide them.
    async fn pass(
        &mut self,
        out: &mut Output<'_>,
        nodes: &[Node],
        pattern: &str,
        shape: &mut Shape,
        known: bool,
    ) -> Result<Pass, ExtractError> {
        let options = out.options();
        let mut stats = Stats::default();
        let mut mode = if known {
            Mode::Writing(Batch::start(out, shape)?)
        } else {
            Mode::Sampling {
                rows: Vec::new(),
                bytes: 0,
            }
        };
        for node in nodes {
            let mut cursor = 0;
            loop {
                let scan = self.conn.scan(node, cursor, pattern, SCAN_COUNT);
                let (next, mut keys) = bounded(&mut self.cancel, self.limit, self.handle, scan).await?;
                while !keys.is_empty() {
                    let rest = keys.split_off(keys.len().min(FETCH_KEYS));
                    let chunk = std::mem::replace(&mut keys, rest);
                    let fetch = self.conn.fetch(node, shape.value_type, &chunk);
                    let found = bounded(&mut self.cancel, self.limit, self.handle, fetch).await?;
                    for (key, found) in chunk.into_iter().zip(found) {
                        let Some(row) = shape.row(key, found, &mut stats)? else {
                            continue;
                        };
                        mode = match mode {
                            Mode::Sampling { mut rows, mut bytes } => {
                                shape.merge(&row);
                                bytes += row.bytes;
                                rows.push(row);
                                if rows.len() >= SAMPLE_ROWS || bytes >= options.batch_bytes {
                                    Mode::Writing(Batch::from_sample(out, shape, rows, &mut stats).await?)
                                } else {
                                    Mode::Sampling { rows, bytes }
                                }
                            }
                            Mode::Writing(mut batch) => {
                                // Merged even when it fits: a column learns
                                // of its inexact integers before a float
                                // widens it.
                                shape.merge(&row);
                                if batch.holds(&row) {
                                    batch.append(row, &mut stats)?;
                                    if batch.is_full(out) {
                                        batch.flush(out).await?;
                                    }
                                    Mode::Writing(batch)
                                } else {
                                    Mode::Discovering
                                }
                            }
                            Mode::Discovering => {
                                shape.merge(&row);
                                Mode::Discovering
                            }
                        };
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let mut batch = match mode {
            Mode::Discovering => return Ok(Pass::Widened),
            Mode::Sampling { rows, .. } => Batch::from_sample(out, shape, rows, &mut stats).await?,
            Mode::Writing(batch) => batch,
        };
        batch.flush(out).await?;
        Ok(Pass::Complete(stats))
    }
}

/// Runs one round trip, bounded by `limit` and `cancel`.
async fn bounded<T>(
    cancel: &mut Cancellable<'_>,
    limit: Duration,
    handle: &RedisHandle,
    round_trip: impl Future<Output = RedisResult<T>>,
) -> Result<T, ExtractError> {
    match cancel.run(tokio::time::timeout(limit, round_trip)).await? {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(handle.map_error(&error).into()),
        Err(_) => Err(ExtractError::new(
            ErrorKind::Timeout,
            format!(
                "{} did not answer within the connector's statement_timeout_seconds ({} s)",
                handle.endpoint.target(),
                limit.as_secs()
            ),
        )),
    }
}

// ---------------------------------------------------------------- columns

/// How a column is stored. Values only ever move up: `Null` (nothing but
/// nulls yet) to anything; `Int64` to `Float64` (while every integer is
/// exact in it); anything else that disagrees to `Utf8` (JSON text), and
/// text to `Binary` when some value is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Boolean,
    Int64,
    Float64,
    Utf8,
    Binary,
}

impl Kind {
    fn data_type(self) -> DataType {
        match self {
            Kind::Null | Kind::Utf8 => DataType::Utf8,
            Kind::Boolean => DataType::Boolean,
            Kind::Int64 => DataType::Int64,
            Kind::Float64 => DataType::Float64,
            Kind::Binary => DataType::Binary,
        }
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    /// A string or hash value (or a key) that is UTF-8.
    Text(String),
    /// One that is not.
    Bytes(Vec<u8>),
    /// A top-level field of a JSON object.
    Json(Json),
}

impl Cell {
    fn from_bytes(bytes: Vec<u8>) -> Cell {
        match String::from_utf8(bytes) {
            Ok(text) => Cell::Text(text),
            Err(error) => Cell::Bytes(error.into_bytes()),
        }
    }

    /// Whether a column of `kind` holds this value as it is.
    fn fits(&self, kind: Kind) -> bool {
        match (self, kind) {
            (Cell::Text(_), Kind::Utf8 | Kind::Binary) | (Cell::Bytes(_), Kind::Binary) => true,
            (Cell::Json(Json::Null), _) | (Cell::Json(_), Kind::Utf8) => true,
            (Cell::Json(Json::Bool(_)), Kind::Boolean) => true,
            (Cell::Json(Json::Number(n)), Kind::Int64) => n.is_i64(),
            (Cell::Json(Json::Number(n)), Kind::Float64) => {
                n.is_f64() || n.as_i64().is_some_and(|i| i.unsigned_abs() <= EXACT_IN_F64)
            }
            _ => false,
        }
    }

    /// The kind this value would have on its own, and whether it is an
    /// integer that `Float64` would round.
    fn kind(&self) -> (Kind, bool) {
        match self {
            Cell::Text(_) => (Kind::Utf8, false),
            Cell::Bytes(_) => (Kind::Binary, false),
            Cell::Json(Json::Null) => (Kind::Null, false),
            Cell::Json(Json::Bool(_)) => (Kind::Boolean, false),
            Cell::Json(Json::Number(n)) => match n.as_i64() {
                Some(i) => (Kind::Int64, i.unsigned_abs() > EXACT_IN_F64),
                None if n.is_f64() => (Kind::Float64, false),
                // Beyond i64: text keeps every digit.
                None => (Kind::Utf8, false),
            },
            Cell::Json(_) => (Kind::Utf8, false),
        }
    }
}

/// A column and what its values so far need.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
    /// Some integer of it is not exact as `Float64`.
    inexact_ints: bool,
}

impl Column {
    fn new(name: String, kind: Kind) -> Column {
        Column {
            name,
            kind,
            inexact_ints: false,
        }
    }

    /// Widens the column so that it holds `cell` (and still every value it
    /// held before).
    fn widen(&mut self, cell: &Cell) {
        let (kind, inexact) = cell.kind();
        self.inexact_ints |= inexact;
        if cell.fits(self.kind) {
            return;
        }
        self.kind = match (self.kind, kind) {
            (Kind::Null, kind) => kind,
            (Kind::Int64, Kind::Float64) | (Kind::Float64, Kind::Int64) if !self.inexact_ints => {
                Kind::Float64
            }
            (_, Kind::Binary) | (Kind::Binary, _) => Kind::Binary,
            _ => Kind::Utf8,
        };
    }
}

/// A row: its key, and its values by column.
#[derive(Debug)]
struct Row {
    key: Cell,
    cells: Vec<(usize, Cell)>,
    /// The bytes it brought (keys and values), to bound a batch's size.
    bytes: usize,
}

/// The columns of a result as the keys read so far need them: `key`
/// first, then each field in the order it was first seen.
struct Shape {
    value_type: ValueType,
    columns: Vec<Column>,
    /// Field name to column.
    index: HashMap<Vec<u8>, usize>,
}

impl Shape {
    fn new(value_type: ValueType) -> Shape {
        let mut shape = Shape {
            value_type,
            columns: vec![Column::new("key".to_owned(), Kind::Utf8)],
            index: HashMap::new(),
        };
        if value_type == ValueType::String {
            shape.columns.push(Column::new("value".to_owned(), Kind::Utf8));
        }
        shape
    }

    /// The column of field `name`, added if new.
    fn column(&mut self, name: &[u8]) -> Result<usize, ExtractError> {
        if let Some(&index) = self.index.get(name) {
            return Ok(index);
        }
        if self.columns.len() >= MAX_COLUMNS {
            return Err(ExtractError::new(
                ErrorKind::InvalidQuery,
                format!(
                    "the matching keys have more than {} distinct fields; narrow the pattern",
                    MAX_COLUMNS - 1
                ),
            ));
        }
        let index = self.columns.len();
        self.columns.push(Column::new(
            String::from_utf8_lossy(name).into_owned(),
            Kind::Null,
        ));
        self.index.insert(name.to_vec(), index);
        Ok(index)
    }

    /// The row of `key`, or `None` (counted in `stats`) for a key that is
    /// gone, of another Redis type, or (for `json`) not a JSON object.
    fn row(&mut self, key: Vec<u8>, found: Found, stats: &mut Stats) -> Result<Option<Row>, ExtractError> {
        let mut bytes = key.len();
        let key = Cell::from_bytes(key);
        let cells = match (self.value_type, found) {
            (_, Found::Gone) => {
                stats.gone += 1;
                return Ok(None);
            }
            (_, Found::WrongType) => {
                stats.wrong_type += 1;
                return Ok(None);
            }
            (ValueType::String, Found::Value(value)) => {
                bytes += value.len();
                vec![(1, Cell::from_bytes(value))]
            }
            (ValueType::Hash, Found::Fields(fields)) => {
                let mut cells = Vec::with_capacity(fields.len());
                for (field, value) in fields {
                    bytes += field.len() + value.len();
                    cells.push((self.column(&field)?, Cell::from_bytes(value)));
                }
                cells
            }
            (ValueType::Json, Found::Value(text)) => {
                bytes += text.len();
                let Ok(Json::Object(fields)) = serde_json::from_slice::<Json>(&text) else {
                    stats.not_json += 1;
                    return Ok(None);
                };
                let mut cells = Vec::with_capacity(fields.len());
                for (field, value) in fields {
                    cells.push((self.column(field.as_bytes())?, Cell::Json(value)));
                }
                cells
            }
            (_, Found::Value(_) | Found::Fields(_)) => {
                stats.wrong_type += 1;
                return Ok(None);
            }
        };
        Ok(Some(Row { key, cells, bytes }))
    }

    /// Widens the columns so that they hold `row`.
    fn merge(&mut self, row: &Row) {
        self.columns[0].widen(&row.key);
        for (index, cell) in &row.cells {
            self.columns[*index].widen(cell);
        }
    }

    fn fields(&self) -> Vec<Field> {
        self.columns
            .iter()
            .enumerate()
            .map(|(index, column)| Field::new(column.name.clone(), column.kind.data_type(), index != 0))
            .collect()
    }
}

// ---------------------------------------------------------------- batches

enum ColumnBuilder {
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
}

impl ColumnBuilder {
    fn new(kind: Kind) -> ColumnBuilder {
        match kind {
            Kind::Boolean => ColumnBuilder::Boolean(BooleanBuilder::new()),
            Kind::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            Kind::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            Kind::Null | Kind::Utf8 => ColumnBuilder::Utf8(StringBuilder::new()),
            Kind::Binary => ColumnBuilder::Binary(BinaryBuilder::new()),
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Boolean(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Utf8(b) => b.append_null(),
            ColumnBuilder::Binary(b) => b.append_null(),
        }
    }

    /// Appends `cell`, which [`Cell::fits`] this column's kind.
    fn append(&mut self, cell: Cell) -> Result<(), ExtractError> {
        match (self, cell) {
            (builder, Cell::Json(Json::Null)) => builder.append_null(),
            (ColumnBuilder::Utf8(b), Cell::Text(text) | Cell::Json(Json::String(text))) => {
                b.append_value(text)
            }
            (ColumnBuilder::Utf8(b), Cell::Json(value)) => b.append_value(value.to_string()),
            (ColumnBuilder::Binary(b), Cell::Text(text)) => b.append_value(text.as_bytes()),
            (ColumnBuilder::Binary(b), Cell::Bytes(bytes)) => b.append_value(bytes),
            (ColumnBuilder::Boolean(b), Cell::Json(Json::Bool(flag))) => b.append_value(flag),
            (ColumnBuilder::Int64(b), Cell::Json(Json::Number(n))) if n.is_i64() => {
                b.append_option(n.as_i64())
            }
            (ColumnBuilder::Float64(b), Cell::Json(Json::Number(n))) => b.append_option(n.as_f64()),
            _ => {
                return Err(ExtractError::internal(
                    "a Redis value reached a column that does not hold it",
                ));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(b) => Arc::new(b.finish()),
        }
    }
}

/// The rows being gathered into the next record batch.
struct Batch {
    schema: SchemaRef,
    /// The kind of each column, as written.
    kinds: Vec<Kind>,
    builders: Vec<ColumnBuilder>,
    /// One slot per column, reused row after row.
    slots: Vec<Option<Cell>>,
    rows: usize,
    bytes: usize,
}

impl Batch {
    /// Describes `shape`'s columns to `out` and starts the first batch.
    fn start(out: &mut Output<'_>, shape: &Shape) -> Result<Batch, ExtractError> {
        let schema = out.start(shape.fields())?;
        Ok(Batch {
            schema,
            kinds: shape.columns.iter().map(|c| c.kind).collect(),
            builders: shape.columns.iter().map(|c| ColumnBuilder::new(c.kind)).collect(),
            slots: vec![None; shape.columns.len()],
            rows: 0,
            bytes: 0,
        })
    }

    /// Starts writing with the columns the sampled `rows` decided, and
    /// writes them.
    async fn from_sample(
        out: &mut Output<'_>,
        shape: &Shape,
        rows: Vec<Row>,
        stats: &mut Stats,
    ) -> Result<Batch, ExtractError> {
        let mut batch = Batch::start(out, shape)?;
        for row in rows {
            batch.append(row, stats)?;
            if batch.is_full(out) {
                batch.flush(out).await?;
            }
        }
        Ok(batch)
    }

    /// Whether the columns, as written, hold `row`.
    fn holds(&self, row: &Row) -> bool {
        row.key.fits(self.kinds[0])
            && row
                .cells
                .iter()
                .all(|(index, cell)| self.kinds.get(*index).is_some_and(|kind| cell.fits(*kind)))
    }

    fn append(&mut self, row: Row, stats: &mut Stats) -> Result<(), ExtractError> {
        self.builders[0].append(row.key)?;
        for (index, cell) in row.cells {
            self.slots[index] = Some(cell);
        }
        for (builder, slot) in self.builders.iter_mut().zip(self.slots.iter_mut()).skip(1) {
            match slot.take() {
                Some(cell) => builder.append(cell)?,
                None => builder.append_null(),
            }
        }
        self.rows += 1;
        self.bytes += row.bytes;
        stats.rows += 1;
        Ok(())
    }

    fn is_full(&self, out: &Output<'_>) -> bool {
        self.rows >= out.options().batch_rows || self.bytes >= out.options().batch_bytes
    }

    /// Writes the gathered rows as one record batch, if there are any.
    async fn flush(&mut self, out: &mut Output<'_>) -> Result<(), ExtractError> {
        if self.rows == 0 {
            return Ok(());
        }
        let columns = self.builders.iter_mut().map(ColumnBuilder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|error| ExtractError::internal_from("building a record batch failed", error))?;
        self.rows = 0;
        self.bytes = 0;
        out.write(batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn json_row(shape: &mut Shape, key: &str, value: Json) -> Row {
        let mut stats = Stats::default();
        shape
            .row(
                key.as_bytes().to_vec(),
                Found::Value(value.to_string().into_bytes()),
                &mut stats,
            )
            .expect("a row")
            .expect("not skipped")
    }

    fn kinds_after(values: &[Json]) -> Kind {
        let mut shape = Shape::new(ValueType::Json);
        for value in values {
            let row = json_row(&mut shape, "k", json!({ "f": value }));
            shape.merge(&row);
        }
        shape.columns[1].kind
    }

    #[test]
    fn json_kinds_widen_the_same_whatever_the_order() {
        let big = json!(9_007_199_254_740_993_i64);
        let cases = [
            (vec![json!(1), json!(2)], Kind::Int64),
            (vec![json!(1), json!(2.5)], Kind::Float64),
            (vec![big.clone(), json!(2.5)], Kind::Utf8),
            (vec![json!(true), json!(null)], Kind::Boolean),
            (vec![json!(null)], Kind::Null),
            (vec![json!(1), json!("one")], Kind::Utf8),
            (vec![json!({"a": 1}), json!([1])], Kind::Utf8),
            (vec![json!(18_446_744_073_709_551_615_u64)], Kind::Utf8),
        ];
        for (values, expected) in cases {
            assert_eq!(kinds_after(&values), expected, "{values:?}");
            let reversed: Vec<Json> = values.iter().rev().cloned().collect();
            assert_eq!(kinds_after(&reversed), expected, "{reversed:?}");
        }
    }

    #[test]
    fn a_widened_column_fits_every_value_it_was_widened_by() {
        let values = [
            json!(9_007_199_254_740_993_i64),
            json!(2.5),
            json!(3),
            json!(null),
        ];
        let mut shape = Shape::new(ValueType::Json);
        let rows: Vec<Row> = values
            .iter()
            .map(|value| json_row(&mut shape, "k", json!({ "f": value })))
            .collect();
        for row in &rows {
            shape.merge(row);
        }
        for row in &rows {
            assert!(row.key.fits(shape.columns[0].kind));
            assert!(
                row.cells
                    .iter()
                    .all(|(i, cell)| cell.fits(shape.columns[*i].kind))
            );
        }
    }

    #[test]
    fn text_becomes_binary_when_a_value_is_not_utf8() {
        let mut shape = Shape::new(ValueType::String);
        let mut stats = Stats::default();
        for value in [b"plain".to_vec(), vec![0xff, 0x00]] {
            let row = shape
                .row(b"k".to_vec(), Found::Value(value), &mut stats)
                .expect("row")
                .expect("kept");
            shape.merge(&row);
        }
        assert_eq!(shape.columns[1].kind, Kind::Binary);
        assert_eq!(shape.columns[0].kind, Kind::Utf8);
    }

    #[test]
    fn skipped_keys_are_counted_by_reason() {
        let mut shape = Shape::new(ValueType::Json);
        let mut stats = Stats::default();
        for found in [
            Found::Gone,
            Found::WrongType,
            Found::Value(b"[1, 2]".to_vec()),
            Found::Value(b"not json".to_vec()),
        ] {
            assert!(shape.row(b"k".to_vec(), found, &mut stats).expect("ok").is_none());
        }
        assert_eq!((stats.gone, stats.wrong_type, stats.not_json), (1, 1, 2));
    }
}
