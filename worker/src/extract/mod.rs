//! Extraction: runs one step (a `sql_query` against a pooled PostgreSQL,
//! Redshift, MySQL/MariaDB or SQLite connection, or any other family's step
//! through [`StepRead`]) and streams the result into Arrow record batches
//! and out as one Parquet object, in bounded memory.
//!
//! Parameters are always bound as typed driver parameters, never spliced
//! into the SQL text. PostgreSQL uses `COPY (query) TO STDOUT (FORMAT
//! binary)` when the query has no parameters and falls back to the binary
//! extended protocol otherwise; both decode the same wire format into the
//! same Arrow builders. The type mapping and its policies are in
//! `design.md` beside this file.

pub(crate) mod columns;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use ferry_shared::domain::ErrorKind;
use ferry_shared::domain::params::BoundQuery;
use ferry_shared::objects::ObjectTarget;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::connectors::postgres::close_pool;
use crate::sink::{ParquetSink, SinkError, SinkOptions, UploadJournal};

/// A pooled SQL connection source, as the pool registry hands it out.
#[derive(Debug, Clone)]
pub enum SqlSource {
    /// PostgreSQL and Redshift.
    Postgres(sqlx::PgPool),
    /// MySQL and MariaDB.
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

impl SqlSource {
    /// Closes the pool in the background: idle connections close now,
    /// in-use ones when they are returned.
    pub(crate) fn close(self) {
        match self {
            SqlSource::Postgres(pool) => close_pool(pool),
            SqlSource::MySql(pool) => close_pool(pool),
            SqlSource::Sqlite(pool) => close_pool(pool),
        }
    }
}

/// How the rows were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPath {
    /// PostgreSQL binary `COPY … TO STDOUT`.
    PostgresCopy,
    /// PostgreSQL binary extended protocol (parameterised queries, and
    /// queries `COPY` refuses).
    PostgresExtended,
    MySql,
    Sqlite,
    /// MongoDB `find` or `aggregate` (`mongo_query`).
    MongoDb,
    /// Redis keys by `SCAN` (`redis_read`).
    Redis,
    /// HTTP requests, page by page (`http_request`).
    Http,
    /// The Databricks SQL Statement Execution API.
    Databricks,
    /// The Snowflake SQL API v2, partition by partition.
    Snowflake,
    /// BigQuery `jobs.query` and `getQueryResults`, page by page.
    Bigquery,
    /// An OAuth SaaS vendor's API, page by page (`saas_extract`).
    Saas,
    /// The embedded query engine over earlier steps' results (`transform`).
    Transform,
}

/// What a completed step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutput {
    pub rows: i64,
    /// Size of the Parquet object.
    pub bytes: i64,
    pub e_tag: Option<String>,
    /// Multipart parts uploaded (0: the object was small enough for one PUT).
    pub parts: usize,
    pub row_groups: usize,
    pub read_path: ReadPath,
}

/// Why a step failed. `error_type` is one of `invalid_query`,
/// `connection_failed`, `timeout`, `cancelled`, `upload_failed`,
/// `unsupported_type`, `fenced`, `internal`; `message` is safe to show
/// (server error text, never credentials); `code` is the server's own code
/// (SQLSTATE) when it gave one, which decides, with the kind, whether the
/// step is retried (see [`crate::connectors::errors::disposition`]). An
/// `internal` error keeps the error that caused it as its `source`, for the
/// log; it is never shown to users.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct ExtractError {
    pub error_type: ErrorKind,
    pub message: String,
    pub code: Option<String>,
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// Equal when kind, message and code are (the source is for the log).
impl PartialEq for ExtractError {
    fn eq(&self, other: &Self) -> bool {
        self.error_type == other.error_type && self.message == other.message && self.code == other.code
    }
}

impl Eq for ExtractError {}

impl ExtractError {
    pub fn new(error_type: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            error_type,
            message: message.into(),
            code: None,
            source: None,
        }
    }

    /// An `internal` error caused by `source`.
    pub(crate) fn internal_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            source: Some(Arc::new(source)),
            ..Self::internal(message)
        }
    }

    /// Attaches the server's own error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub(crate) fn cancelled() -> Self {
        Self::new(ErrorKind::Cancelled, "the step was cancelled")
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UnsupportedType, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn is_cancelled(&self) -> bool {
        self.error_type == ErrorKind::Cancelled
    }
}

/// A connector's pool that could not be had (or a driver failure), as the
/// step's error: same kind, message and server code.
impl From<crate::connectors::DriverError> for ExtractError {
    fn from(error: crate::connectors::DriverError) -> Self {
        let failure = error.failure;
        let mapped = ExtractError::new(failure.error_type, failure.message);
        match failure.code {
            Some(code) => mapped.with_code(code),
            None => mapped,
        }
    }
}

impl From<SinkError> for ExtractError {
    fn from(error: SinkError) -> Self {
        match error {
            SinkError::Cancelled => ExtractError::cancelled(),
            SinkError::Fenced => ExtractError::new(ErrorKind::Fenced, error.to_string()),
            SinkError::Upload(e) => ExtractError::new(
                ErrorKind::UploadFailed,
                format!("writing the result to object storage failed: {e}"),
            ),
            SinkError::Encode(e) => {
                ExtractError::internal_from(format!("encoding the result as Parquet failed: {e}"), e)
            }
        }
    }
}

/// Where a step's result goes: `path` in `target`, and, for stores whose
/// multipart uploads have ids (S3), who records an upload's id before its
/// first part (see [`UploadJournal`]).
#[derive(Clone)]
pub struct Destination<'a> {
    pub target: &'a ObjectTarget,
    pub path: &'a Path,
    pub journal: Option<UploadJournal>,
}

impl<'a> Destination<'a> {
    pub fn new(target: &'a ObjectTarget, path: &'a Path) -> Self {
        Self {
            target,
            path,
            journal: None,
        }
    }

    /// Records every multipart upload through `journal` (used only where the
    /// target exposes upload ids).
    pub fn journaled(self, journal: UploadJournal) -> Self {
        Self {
            journal: Some(journal),
            ..self
        }
    }
}

/// Tuning of a step. The defaults are what the benchmark was run with.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Rows per record batch. Default 16 384 (64 k measured 12 % slower).
    pub batch_rows: usize,
    /// A batch is also cut once its rows took this many wire bytes, so that
    /// wide rows keep memory bounded. Default 16 MiB.
    pub batch_bytes: usize,
    /// Use binary `COPY` for PostgreSQL queries without parameters.
    /// Default true; false forces the extended protocol.
    pub postgres_copy: bool,
    pub sink: SinkOptions,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            batch_rows: 16 * 1024,
            batch_bytes: 16 * 1024 * 1024,
            postgres_copy: true,
            sink: SinkOptions::default(),
        }
    }
}

/// Runs `query` (placeholders already rewritten, values in order) against
/// `source` and writes the result as Parquet to `destination`: the SQL case
/// of [`run_step_with`], which tells what the arguments do.
pub async fn run_sql_step_with(
    options: &ExtractOptions,
    source: &SqlSource,
    query: &BoundQuery,
    destination: &Destination<'_>,
    progress: &(dyn Fn(i64, i64) + Send + Sync),
    cancel: &CancellationToken,
    fence: impl Fence,
) -> Result<StepOutput, ExtractError> {
    let read = SqlRead { source, query };
    run_step_with(options, &read, destination, progress, cancel, fence).await
}

/// What a step awaits right before its result object is completed: false
/// when the execution is no longer this worker's (the upload is then
/// aborted and the step `fenced`). Any `FnOnce() -> impl Future<Output =
/// bool>` that can move between threads is one.
pub trait Fence: Send {
    fn check(self) -> impl Future<Output = bool> + Send;
}

impl<F, Fut> Fence for F
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = bool> + Send,
{
    fn check(self) -> impl Future<Output = bool> + Send {
        self()
    }
}

/// One step's read: describes the result's columns to an [`Output`] and
/// writes its batches there. Each connector family's step runners, and the
/// transform engine, are one.
#[async_trait::async_trait]
pub(crate) trait StepRead: Send + Sync {
    async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError>;
}

/// A `sql_query` read on a pooled SQL connection.
pub(crate) struct SqlRead<'a> {
    pub(crate) source: &'a SqlSource,
    pub(crate) query: &'a BoundQuery,
}

#[async_trait::async_trait]
impl StepRead for SqlRead<'_> {
    async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        match self.source {
            SqlSource::Postgres(pool) => {
                crate::connectors::postgres::extract::extract(pool, self.query, out).await
            }
            // Columns widened because a value did not fit their type (a
            // TIME duration, bytes that are not UTF-8, a number too wide):
            // the statement is read again with them.
            SqlSource::MySql(pool) => read_widening(pool, self.query, out).await,
            SqlSource::Sqlite(pool) => {
                crate::connectors::sqlite::extract::extract(pool, self.query, out).await
            }
        }
    }
}

/// Runs one step's `read` and writes its result as Parquet (zstd level 1)
/// to `destination` via a multipart upload.
///
/// Memory stays bounded: readers hand over batches of ~16k rows, row groups
/// are flushed and parts uploaded as they fill. `progress(rows, bytes)` is
/// called after every batch with the running totals (rows read, Parquet
/// bytes flushed). `cancel` aborts the read and the upload (no object, no
/// open multipart upload). `fence()` is awaited right before completing the
/// upload; if it returns false the upload is aborted and `fenced` returned.
/// An empty result still writes a valid Parquet file with the schema.
/// `options` tunes the step ([`ExtractOptions::default`] is what jobs use).
pub(crate) async fn run_step_with(
    options: &ExtractOptions,
    read: &dyn StepRead,
    destination: &Destination<'_>,
    progress: &(dyn Fn(i64, i64) + Send + Sync),
    cancel: &CancellationToken,
    fence: impl Fence,
) -> Result<StepOutput, ExtractError> {
    if cancel.is_cancelled() {
        return Err(ExtractError::cancelled());
    }
    let mut out = Output {
        destination,
        options,
        progress,
        cancel,
        sink: None,
    };
    let read = read.read(&mut out).await;
    let sink = out.sink.take();
    let read_path = match read {
        Ok(read_path) => read_path,
        Err(error) => {
            if let Some(sink) = sink {
                sink.abort().await;
            }
            return Err(error);
        }
    };
    let Some(sink) = sink else {
        return Err(ExtractError::internal(
            "the step finished without describing its columns",
        ));
    };
    let output = sink.finish(cancel, move || fence.check()).await?;
    let rows = i64::try_from(output.rows).unwrap_or(i64::MAX);
    let bytes = i64::try_from(output.bytes).unwrap_or(i64::MAX);
    progress(rows, bytes);
    Ok(StepOutput {
        rows,
        bytes,
        e_tag: output.e_tag,
        parts: output.parts,
        row_groups: output.row_groups,
        read_path,
    })
}

/// What a driver writes its batches to.
pub(crate) struct Output<'a> {
    destination: &'a Destination<'a>,
    options: &'a ExtractOptions,
    progress: &'a (dyn Fn(i64, i64) + Send + Sync),
    cancel: &'a CancellationToken,
    sink: Option<ParquetSink>,
}

impl<'a> Output<'a> {
    pub(crate) fn options(&self) -> &'a ExtractOptions {
        self.options
    }

    pub(crate) fn cancel(&self) -> &'a CancellationToken {
        self.cancel
    }

    /// Opens the sink once the result's columns are known. Column names are
    /// made unique (`a`, `a_2`, …): Parquet readers reject duplicates.
    pub(crate) fn start(&mut self, fields: Vec<Field>) -> Result<SchemaRef, ExtractError> {
        if fields.is_empty() {
            return Err(ExtractError::new(
                ErrorKind::InvalidQuery,
                "the query returns no columns",
            ));
        }
        let schema = Arc::new(Schema::new(unique_names(fields)));
        let destination = self.destination;
        let mut sink = ParquetSink::new(
            destination.target.store.clone(),
            destination.path.clone(),
            schema.clone(),
            self.options.sink.clone(),
        );
        if let (Some(multipart), Some(journal)) = (&destination.target.multipart, &destination.journal) {
            sink = sink.with_journal(multipart.clone(), journal.clone());
        }
        self.sink = Some(sink);
        Ok(schema)
    }

    /// Drops what was written so far (nothing was published: the object
    /// appears only at finish), so that the read can start again with other
    /// columns.
    pub(crate) async fn restart(&mut self) {
        if let Some(sink) = self.sink.take() {
            sink.abort().await;
        }
    }

    /// Encodes and uploads one batch and reports progress.
    pub(crate) async fn write(&mut self, batch: RecordBatch) -> Result<(), ExtractError> {
        // Checked per batch too: a stream that is always ready never lets
        // the cancellation future be polled.
        if self.cancel.is_cancelled() {
            return Err(ExtractError::cancelled());
        }
        let Some(sink) = self.sink.as_mut() else {
            return Err(ExtractError::internal(
                "a batch arrived before the columns were described",
            ));
        };
        sink.write(&batch, self.cancel).await?;
        let rows = i64::try_from(sink.rows()).unwrap_or(i64::MAX);
        let bytes = i64::try_from(sink.bytes()).unwrap_or(i64::MAX);
        (self.progress)(rows, bytes);
        Ok(())
    }
}

fn unique_names(fields: Vec<Field>) -> Vec<Field> {
    let mut seen = std::collections::HashSet::new();
    fields
        .into_iter()
        .map(|field| {
            if seen.insert(field.name().clone()) {
                return field;
            }
            let mut n = 2;
            loop {
                let candidate = format!("{}_{n}", field.name());
                if seen.insert(candidate.clone()) {
                    return field.with_name(candidate);
                }
                n += 1;
            }
        })
        .collect()
}

/// Why one read of a statement stopped, for families that widen a column
/// when one of its values does not fit the type it was read as.
pub(crate) enum Read<K> {
    /// A value of column `.0` does not fit its type: read again with `.1`.
    Widen(usize, K),
    Failed(ExtractError),
}

impl<K> From<ExtractError> for Read<K> {
    fn from(error: ExtractError) -> Self {
        Read::Failed(error)
    }
}

/// A family that widens a column when one of its values does not fit the
/// type it was read as (MySQL, SQLite): its database's reads of a
/// statement, for [`read_widening`].
pub(crate) trait WideningRead: sqlx::Database {
    /// How a column is read; a widening names the column's new one.
    type Kind: Clone + PartialEq + std::fmt::Debug;

    /// How the family's rows are read, for the step's output.
    const PATH: ReadPath;

    /// Reads the statement once, with the columns in `attempt.widened`
    /// read as given.
    async fn read(attempt: Attempt<'_, '_, Self>) -> Result<(), Read<Self::Kind>>;
}

/// One read of a statement, as [`read_widening`] hands it to the family:
/// a connection of `pool` acquired for it, where it writes, and the columns
/// widened so far.
pub(crate) struct Attempt<'a, 'o, DB: WideningRead> {
    pub(crate) pool: &'a sqlx::Pool<DB>,
    pub(crate) query: &'a BoundQuery,
    pub(crate) conn: sqlx::pool::PoolConnection<DB>,
    pub(crate) out: &'a mut Output<'o>,
    pub(crate) cancel: &'a mut Cancellable<'o>,
    pub(crate) widened: &'a [(usize, DB::Kind)],
}

/// Reads `query` on a connection of `pool` until one read completes. A
/// read that meets a value its column's type cannot hold asks for the
/// column widened; the statement is then read again, on a newly acquired
/// connection, with every column widened so far (the aborted read
/// published nothing). Asking twice for the same widening is an error.
pub(crate) async fn read_widening<DB: WideningRead>(
    pool: &sqlx::Pool<DB>,
    query: &BoundQuery,
    out: &mut Output<'_>,
) -> Result<ReadPath, ExtractError> {
    let mut cancel = Cancellable::new(out.cancel());
    let mut widened: Vec<(usize, DB::Kind)> = Vec::new();
    loop {
        let conn = cancel.run(pool.acquire()).await?.map_err(database_error)?;
        let attempt = Attempt {
            pool,
            query,
            conn,
            out: &mut *out,
            cancel: &mut cancel,
            widened: &widened,
        };
        match DB::read(attempt).await {
            Err(Read::Widen(index, kind)) if !widened.contains(&(index, kind.clone())) => {
                tracing::info!(
                    index,
                    ?kind,
                    "a value does not fit its column's type; reading again with it widened"
                );
                widened.retain(|(i, _)| *i != index);
                widened.push((index, kind));
                out.restart().await;
            }
            Err(Read::Widen(index, _)) => {
                return Err(ExtractError::internal(format!(
                    "column {index} was widened and still does not fit"
                )));
            }
            Err(Read::Failed(error)) => return Err(error),
            Ok(()) => return Ok(DB::PATH),
        }
    }
}

/// Polls a stream and a cancellation together, touching the cancellation
/// only when the stream has nothing ready, so the per-row cost is one poll.
pub(crate) struct Cancellable<'a> {
    cancelled: Pin<Box<WaitForCancellationFuture<'a>>>,
}

impl<'a> Cancellable<'a> {
    pub(crate) fn new(token: &'a CancellationToken) -> Self {
        Self {
            cancelled: Box::pin(token.cancelled()),
        }
    }

    /// The stream's next item, or `Err` once cancelled.
    pub(crate) async fn next<S: Stream + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<Option<S::Item>, ExtractError> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(item) = stream.poll_next_unpin(cx) {
                return Poll::Ready(Ok(item));
            }
            match self.cancelled.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(ExtractError::cancelled())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Runs `future` unless cancelled first.
    pub(crate) async fn run<T>(&mut self, future: impl Future<Output = T>) -> Result<T, ExtractError> {
        tokio::select! {
            biased;
            () = self.cancelled.as_mut() => Err(ExtractError::cancelled()),
            value = future => Ok(value),
        }
    }
}

/// Maps a driver error to the step error vocabulary. Messages are the
/// server's own text plus its SQLSTATE; connection options never appear.
pub(crate) fn database_error(error: sqlx::Error) -> ExtractError {
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = if code.is_empty() {
                db.message().to_owned()
            } else {
                format!("{} (SQLSTATE {code})", db.message())
            };
            let timeout = matches!(code.as_str(), "57014" | "55P03" | "70100")
                || (code == "HY000" && is_timeout_message(db.message()));
            let error_type = if timeout {
                // statement_timeout, lock_timeout, MySQL/MariaDB max execution time
                ErrorKind::Timeout
            } else if code.starts_with("08") || code.starts_with("28") || code.starts_with("57P") {
                ErrorKind::ConnectionFailed
            } else {
                ErrorKind::InvalidQuery
            };
            let error = ExtractError::new(error_type, message);
            if code.is_empty() {
                error
            } else {
                error.with_code(code)
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => ExtractError::new(
            ErrorKind::ConnectionFailed,
            format!("the database connection failed: {error}"),
        ),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => {
            ExtractError::unsupported(error.to_string())
        }
        _ => ExtractError::internal_from(format!("the database driver failed: {error}"), error),
    }
}

fn is_timeout_message(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("timeout")
        || message.contains("max_statement_time")
        || message.contains("maximum statement")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

    #[test]
    fn an_internal_error_keeps_the_driver_error_as_its_source() {
        let error = database_error(sqlx::Error::RowNotFound);
        assert_eq!(error.error_type, ErrorKind::Internal);
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), sqlx::Error::RowNotFound.to_string());
        let broken = database_error(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()));
        assert_eq!(broken.error_type, ErrorKind::ConnectionFailed);
        assert!(std::error::Error::source(&broken).is_none());
    }

    #[test]
    fn duplicate_column_names_get_suffixes() {
        let fields = vec![
            Field::new("a", DataType::Int32, true),
            Field::new("a", DataType::Int32, true),
            Field::new("a_2", DataType::Int32, true),
            Field::new("a", DataType::Int32, true),
        ];
        let names: Vec<String> = unique_names(fields).iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["a", "a_2", "a_2_2", "a_3"]);
    }
}
