//! PostgreSQL and Redshift extraction.
//!
//! A query without parameters runs as `COPY (query) TO STDOUT WITH (FORMAT
//! binary)`; one with parameters, or one `COPY` refuses (utility statements,
//! Redshift), runs through the extended protocol with binary results. Both
//! paths hand every field's binary wire value to the same [`Decoder`], so
//! they give identical Arrow arrays. Column types come from preparing the
//! query; numeric precision and scale from the source table column's type
//! modifier (`pg_attribute.atttypmod`) when the column is a plain table
//! column.
//!
//! A query abandoned half-way (cancel, a decode or upload error) is cancelled
//! on the server with `pg_cancel_backend` from another connection, and its
//! connection is closed rather than returned to the pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::NullBufferBuilder;
use arrow::array::{
    ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListArray, StringArray, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use ferry_shared::domain::ErrorKind;
use ferry_shared::domain::params::{BoundQuery, ParamValue};
use futures::Stream;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgColumn, PgConnection, PgPool, PgTypeInfo, PgTypeKind, Postgres};
use sqlx::{
    AssertSqlSafe, Column, Connection, Executor, Row, SqlSafeStr, Statement, Type, TypeInfo, ValueRef,
};

use crate::connectors::sql::{TimestampParam, bind_params};
use crate::extract::columns::{MAX_DECIMAL128_PRECISION, UNCONSTRAINED_DECIMAL, pow10};
use crate::extract::{Cancellable, ExtractError, Output, ReadPath, database_error};

/// Microseconds between 1970-01-01 and PostgreSQL's epoch 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// How long cleaning up an abandoned query may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn extract(
    pool: &PgPool,
    query: &BoundQuery,
    out: &mut Output<'_>,
) -> Result<ReadPath, ExtractError> {
    let mut cancel = Cancellable::new(out.cancel());
    // Numeric columns read as exact text because a value had no decimal
    // form (NaN, ±Infinity, too many digits): see `design.md`.
    let mut exact_text: Vec<usize> = Vec::new();
    loop {
        match read(pool, query, out, &mut cancel, &exact_text).await {
            Ok(path) => return Ok(path),
            Err(Attempt::Widen(column)) if !exact_text.contains(&column) => {
                tracing::info!(
                    column,
                    "a numeric value has no decimal form; reading again with the column as exact text"
                );
                exact_text.push(column);
                // Nothing was published: the object appears only at finish.
                out.restart().await;
            }
            Err(Attempt::Widen(column)) => {
                return Err(ExtractError::internal(format!(
                    "column {column} was already read as text and still has no text form"
                )));
            }
            Err(Attempt::Refused(reason)) => {
                return Err(ExtractError::internal(format!("COPY refused: {reason}")));
            }
            Err(Attempt::Failed(error)) => return Err(error),
        }
    }
}

/// One read of the query: describe, then COPY or the extended protocol.
async fn read(
    pool: &PgPool,
    query: &BoundQuery,
    out: &mut Output<'_>,
    cancel: &mut Cancellable<'_>,
    exact_text: &[usize],
) -> Result<ReadPath, Attempt> {
    let mut session = Session::open(pool, cancel).await?;
    let use_copy = !query.is_parameterised() && out.options().postgres_copy && session.copy_capable();
    let plan = session.describe(query, use_copy, exact_text, cancel).await?;
    let schema = out.start(plan.columns.iter().map(ColumnSpec::field).collect())?;
    if use_copy {
        match session.copy(&plan, &schema, out, cancel).await {
            Err(Attempt::Refused(reason)) => {
                tracing::debug!(%reason, "COPY refused; reading through the extended protocol");
                // A refused COPY leaves a ReadyForQuery sqlx does not expect:
                // that connection is closed and a fresh one used.
                session.discard().await;
                session = Session::open(pool, cancel).await?;
            }
            Err(other) => return Err(other),
            Ok(()) => return Ok(ReadPath::PostgresCopy),
        }
    }
    session.extended(query, &plan, &schema, out, cancel).await?;
    Ok(ReadPath::PostgresExtended)
}

#[derive(Debug)]
enum Attempt {
    /// COPY was refused before any row was read: try the extended protocol.
    Refused(String),
    /// A value of this numeric column has no decimal form: read again with
    /// the column as exact text.
    Widen(usize),
    Failed(ExtractError),
}

impl From<ExtractError> for Attempt {
    fn from(error: ExtractError) -> Self {
        Attempt::Failed(error)
    }
}

/// What to run and how to decode it: the query as written, or, when some
/// columns have no native mapping, the query wrapped so that the server
/// casts exactly those columns to text.
struct Plan {
    columns: Vec<ColumnSpec>,
    /// The statement to run (no trailing `;` or comment).
    sql: String,
}

/// One pooled connection and the server process behind it.
struct Session<'p> {
    pool: &'p PgPool,
    conn: Option<PoolConnection<Postgres>>,
    pid: i32,
    /// A query is running whose result has not been read to the end.
    busy: bool,
}

impl<'p> Session<'p> {
    async fn open(pool: &'p PgPool, cancel: &mut Cancellable<'_>) -> Result<Session<'p>, ExtractError> {
        let mut conn = cancel.run(pool.acquire()).await?.map_err(database_error)?;
        let pid: i32 = cancel
            .run(sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn))
            .await?
            .map_err(database_error)?;
        Ok(Session {
            pool,
            conn: Some(conn),
            pid,
            busy: false,
        })
    }

    /// `COPY (query) … (FORMAT binary)` needs PostgreSQL 9.0; Redshift
    /// reports 8.0.2 and has no COPY TO STDOUT, so it goes straight to the
    /// extended protocol.
    fn copy_capable(&self) -> bool {
        self.conn
            .as_deref()
            .and_then(PgConnection::server_version_num)
            .is_none_or(|v| v >= 90_000)
    }

    fn conn(&mut self) -> Result<&mut PgConnection, ExtractError> {
        self.conn
            .as_deref_mut()
            .ok_or_else(|| ExtractError::internal("the database connection is gone"))
    }

    /// Prepares the query to learn its columns and maps them to Arrow.
    /// Columns without a native mapping are cast to text by the server: the
    /// query is wrapped (`SELECT c1, c2::text FROM (query) AS q(c1, c2)`)
    /// and that statement prepared too, so the rows are still read once.
    /// `exact_text` lists numeric columns to read as exact text.
    ///
    /// sqlx reuses a cached statement's columns, which go stale when a
    /// table's column types change under a live connection. Executing a
    /// stale statement fails safely (`cached plan must not change result
    /// type`), but COPY never executes it and would decode new values with
    /// old types, so before COPY (`fresh`) the cache is cleared.
    async fn describe(
        &mut self,
        query: &BoundQuery,
        fresh: bool,
        exact_text: &[usize],
        cancel: &mut Cancellable<'_>,
    ) -> Result<Plan, ExtractError> {
        let types: Vec<PgTypeInfo> = query.params.iter().map(param_type).collect();
        let conn = self.conn()?;
        if fresh {
            cancel
                .run(conn.clear_cached_statements())
                .await?
                .map_err(database_error)?;
        }
        let prepared = cancel
            .run(conn.prepare_with(
                AssertSqlSafe(statement_text(&query.sql, &types)).into_sql_str(),
                &types,
            ))
            .await?;
        // The result columns: name, type, type modifier, and a cast already
        // decided on.
        let described: Vec<(String, PgTypeInfo, i32, Option<Cast>)> = match prepared {
            Ok(statement) => {
                let typmods = cancel.run(typmods(conn, statement.columns())).await?;
                statement
                    .columns()
                    .iter()
                    .map(|c| {
                        let typmod = typmods.get(&c.ordinal()).copied().unwrap_or(-1);
                        (c.name().to_owned(), c.type_info().clone(), typmod, None)
                    })
                    .collect()
            }
            Err(error @ sqlx::Error::Database(_)) => return Err(database_error(error)),
            Err(error) if unresolvable_type(&error) => {
                tracing::debug!(%error, "sqlx cannot look up a column type; describing through the simple protocol");
                let untyped = cancel.run(describe_untyped(conn, query, &types)).await??;
                let casts: Vec<Option<Cast>> = untyped.iter().map(|(_, _, cast)| *cast).collect();
                let sql = wrap_with_casts(&query.sql, &casts);
                let statement = cancel
                    .run(
                        conn.prepare_with(AssertSqlSafe(statement_text(&sql, &types)).into_sql_str(), &types),
                    )
                    .await?
                    .map_err(database_error)?;
                if statement.columns().len() != untyped.len() {
                    return Err(ExtractError::internal(
                        "the wrapped query describes other columns",
                    ));
                }
                untyped
                    .into_iter()
                    .zip(statement.columns())
                    .map(|((name, typmod, cast), c)| (name, c.type_info().clone(), typmod, cast))
                    .collect()
            }
            Err(error) => return Err(database_error(error)),
        };
        let money_scale = if described.iter().any(|(_, info, _, _)| involves_money(info)) {
            cancel.run(money_scale(conn)).await??
        } else {
            2
        };
        let columns: Vec<ColumnSpec> = described
            .into_iter()
            .enumerate()
            .map(|(ordinal, (name, info, typmod, cast))| {
                let (mut kind, cast) = match cast {
                    Some(Cast::Text) => (PgKind::Text, cast),
                    Some(Cast::TextArray) => (PgKind::text_array(), cast),
                    None => PgKind::resolve(&info, typmod, money_scale),
                };
                if exact_text.contains(&ordinal) {
                    kind = kind.numeric_as_text();
                }
                ColumnSpec {
                    name,
                    type_name: info.name().to_owned(),
                    kind,
                    cast,
                }
            })
            .collect();
        if columns.iter().all(|c| c.cast.is_none()) {
            return Ok(Plan {
                columns,
                sql: trim_statement(&query.sql).to_owned(),
            });
        }
        let casts: Vec<Option<Cast>> = columns.iter().map(|c| c.cast).collect();
        let sql = wrap_with_casts(&query.sql, &casts);
        let wrapped = cancel
            .run(conn.prepare_with(AssertSqlSafe(statement_text(&sql, &types)).into_sql_str(), &types))
            .await?;
        let cast_ok = |statement: &sqlx::postgres::PgStatement| {
            statement.columns().len() == columns.len()
                && statement
                    .columns()
                    .iter()
                    .zip(&columns)
                    .all(|(c, spec)| match spec.cast {
                        None => true,
                        Some(Cast::Text) => c.type_info().oid().map(|o| o.0) == Some(oid::TEXT),
                        Some(Cast::TextArray) => c.type_info().oid().map(|o| o.0) == Some(oid::TEXT_ARRAY),
                    })
        };
        match wrapped {
            Ok(statement) if cast_ok(&statement) => Ok(Plan { columns, sql }),
            outcome => {
                let reason = match outcome {
                    Err(error) => database_error(error).message,
                    Ok(_) => "the wrapped query describes other columns".to_owned(),
                };
                let Some(column) = columns.iter().find(|c| c.cast.is_some()) else {
                    return Err(ExtractError::internal("no column needed a cast"));
                };
                Err(ExtractError::unsupported(format!(
                    "column \"{}\" has type {}, which is exported as the server's text, but this statement \
                     cannot be wrapped to cast it ({reason}); cast it in the query (for example \"{}\"::text)",
                    column.name, column.type_name, column.name
                )))
            }
        }
    }

    /// Binary COPY of the query, decoded as it streams.
    async fn copy(
        &mut self,
        plan: &Plan,
        schema: &SchemaRef,
        out: &mut Output<'_>,
        cancel: &mut Cancellable<'_>,
    ) -> Result<(), Attempt> {
        let statement = format!("COPY (\n{}\n) TO STDOUT WITH (FORMAT binary)", plan.sql);
        let mut clean = false;
        self.busy = true;
        let result = async {
            let conn = self.conn()?;
            let stream = match cancel.run(conn.copy_out_raw(&statement)).await? {
                Ok(stream) => stream,
                Err(sqlx::Error::Database(error)) => {
                    clean = true;
                    return Err(Attempt::Refused(error.message().to_owned()));
                }
                Err(error) => return Err(Attempt::Failed(database_error(error))),
            };
            let mut batch = BatchDecoder::new(&plan.columns, schema.clone());
            let mut parser = CopyParser::default();
            stream_batches(stream, &mut clean, cancel, out, &mut batch, |chunk, batch| {
                parser.feed(chunk, batch)
            })
            .await?;
            if !parser.finished {
                return Err(ExtractError::internal("the COPY stream ended without its trailer").into());
            }
            Ok(())
        }
        .await;
        self.settle(clean).await;
        result
    }

    /// The extended protocol with binary results and bound parameters.
    async fn extended(
        &mut self,
        query: &BoundQuery,
        plan: &Plan,
        schema: &SchemaRef,
        out: &mut Output<'_>,
        cancel: &mut Cancellable<'_>,
    ) -> Result<(), Attempt> {
        let types: Vec<PgTypeInfo> = query.params.iter().map(param_type).collect();
        // The query as written unless it had to be wrapped (a trailing
        // comment or `;` is harmless here, and utility statements such as
        // SHOW cannot be wrapped).
        let sql = if plan.columns.iter().any(|c| c.cast.is_some()) {
            plan.sql.as_str()
        } else {
            query.sql.as_str()
        };
        let mut clean = false;
        self.busy = true;
        let result = async {
            let conn = self.conn()?;
            let statement = cancel
                .run(conn.prepare_with(AssertSqlSafe(statement_text(sql, &types)).into_sql_str(), &types))
                .await?
                .map_err(database_error)?;
            let bound = bind_params(statement.query(), &query.params);
            let stream = bound.fetch(&mut *conn);
            let mut batch = BatchDecoder::new(&plan.columns, schema.clone());
            stream_batches(
                stream,
                &mut clean,
                cancel,
                out,
                &mut batch,
                |row: sqlx::postgres::PgRow, batch| batch.push_row(&row),
            )
            .await
        }
        .await;
        self.settle(clean).await;
        result
    }

    /// After a query: a connection whose result was read to the end goes
    /// back to the pool; otherwise the query is cancelled and the connection
    /// closed.
    async fn settle(&mut self, clean: bool) {
        if clean {
            self.busy = false;
        } else {
            self.kill().await;
        }
    }

    async fn kill(&mut self) {
        self.busy = false;
        if let Some(conn) = self.conn.take() {
            let raw = conn.detach();
            cancel_backend(self.pool, self.pid).await;
            let _ = tokio::time::timeout(CANCEL_TIMEOUT, raw.close_hard()).await;
        }
    }

    /// Closes the connection without returning it to the pool.
    async fn discard(&mut self) {
        self.busy = false;
        if let Some(conn) = self.conn.take() {
            let _ = tokio::time::timeout(CANCEL_TIMEOUT, conn.detach().close_hard()).await;
        }
    }
}

impl Drop for Session<'_> {
    /// Dropped mid-query (the step's task was cancelled): cancel the query
    /// and close the connection from a spawned task.
    fn drop(&mut self) {
        if !self.busy {
            return;
        }
        let (Some(conn), Ok(handle)) = (self.conn.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let raw = conn.detach();
        let pool = self.pool.clone();
        let pid = self.pid;
        handle.spawn(async move {
            cancel_backend(&pool, pid).await;
            drop(raw);
        });
    }
}

/// `pg_cancel_backend(pid)` from another connection: an idle pooled one if
/// there is one, else a fresh one with the pool's options (the pool may be
/// exhausted by the very steps being cancelled).
async fn cancel_backend(pool: &PgPool, pid: i32) {
    let cancel = async {
        let statement = sqlx::query("SELECT pg_cancel_backend($1)").bind(pid);
        match pool.try_acquire() {
            Some(mut conn) => statement.execute(&mut *conn).await.map(|_| ()),
            None => {
                let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
                statement.execute(&mut conn).await?;
                conn.close().await
            }
        }
    };
    match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(pid, %error, "cancelling an abandoned query failed"),
        Err(_) => tracing::warn!(pid, "cancelling an abandoned query timed out"),
    }
}

/// Reads `stream` to the end, decoding items with `decode` into `batch` and
/// writing a record batch whenever it is full. `clean` is set when the
/// stream ended by itself (fully read, or with a server error after which
/// the driver resynchronised the connection).
async fn stream_batches<S, T, D>(
    mut stream: S,
    clean: &mut bool,
    cancel: &mut Cancellable<'_>,
    out: &mut Output<'_>,
    batch: &mut BatchDecoder,
    mut decode: D,
) -> Result<(), Attempt>
where
    S: Stream<Item = Result<T, sqlx::Error>> + Unpin,
    D: FnMut(T, &mut BatchDecoder) -> Result<(), Attempt>,
{
    let (batch_rows, batch_bytes) = (out.options().batch_rows.max(1), out.options().batch_bytes.max(1));
    loop {
        match cancel.next(&mut stream).await? {
            Some(Ok(item)) => {
                decode(item, batch)?;
                if batch.rows >= batch_rows || batch.bytes >= batch_bytes {
                    out.write(batch.finish()?).await?;
                }
            }
            Some(Err(error)) => {
                // A server error leaves the connection resynchronised; but
                // one caused by a stale cached statement (0A000) would recur
                // on it, so that connection is closed instead.
                *clean = matches!(&error, sqlx::Error::Database(db) if db.code().as_deref() != Some("0A000"));
                return Err(database_error(error).into());
            }
            None => {
                *clean = true;
                break;
            }
        }
    }
    drop(stream);
    if batch.rows > 0 {
        out.write(batch.finish()?).await?;
    }
    Ok(())
}

/// What a stretch of SQL text is, for [`lex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Whitespace or a comment (`--`, nested `/* */`).
    Blank,
    /// A `;`.
    Semicolon,
    /// A string, quoted name or dollar-quoted string, whole.
    Quoted,
    /// A parameter (`$1`).
    Param,
    /// Anything else, one character at a time.
    Code,
}

/// Splits PostgreSQL SQL text into tokens, enough to tell code from
/// strings, quoted names, dollar quotes and comments.
fn lex(sql: &str) -> Vec<(std::ops::Range<usize>, Token)> {
    let bytes = sql.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        let start = i;
        let token = match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                i += 1;
                Token::Blank
            }
            b';' => {
                i += 1;
                Token::Semicolon
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1);
                Token::Blank
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                // An unterminated comment is left to the server.
                if depth > 0 { Token::Code } else { Token::Blank }
            }
            b'\'' | b'"' => {
                let escapes = c == b'\''
                    && i > 0
                    && bytes[i - 1].eq_ignore_ascii_case(&b'e')
                    && (i < 2 || !is_word(bytes[i - 2]));
                i += 1;
                while let Some(&b) = bytes.get(i) {
                    i += 1;
                    if escapes && b == b'\\' {
                        i += 1;
                    } else if b == c {
                        if bytes.get(i) == Some(&c) {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
                i = i.min(bytes.len());
                Token::Quoted
            }
            b'$' if i == 0 || !is_word(bytes[i - 1]) => {
                let mut t = i + 1;
                while bytes.get(t).is_some_and(|&b| is_word(b) && b != b'$') {
                    t += 1;
                }
                if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    // `$1`: a parameter.
                    i += 1;
                    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                    Token::Param
                } else if bytes.get(t) == Some(&b'$') {
                    // `$tag$ … $tag$`
                    let tag = &sql[i..=t];
                    i = sql[t + 1..]
                        .find(tag)
                        .map_or(bytes.len(), |p| t + 1 + p + tag.len());
                    Token::Quoted
                } else {
                    i += 1;
                    Token::Code
                }
            }
            _ => {
                // Identifiers and numbers whole, so `a$1` stays one word.
                i += 1;
                if is_word(c) {
                    while bytes.get(i).is_some_and(|&b| is_word(b)) {
                        i += 1;
                    }
                }
                Token::Code
            }
        };
        tokens.push((start..i, token));
    }
    tokens
}

/// The statement without what follows its last token: whitespace, `;` and
/// comments (`--` or `/* */`), so that it can sit inside `COPY ( … )` or a
/// subquery. Strings, quoted names and dollar quotes are skipped whole, so
/// a `;` or `--` inside them does not count.
fn trim_statement(sql: &str) -> &str {
    let end = lex(sql)
        .iter()
        .rev()
        .find(|(_, token)| !matches!(token, Token::Blank | Token::Semicolon))
        .map_or(0, |(range, _)| range.end);
    &sql[..end]
}

/// The statement with each parameter `$n` replaced by `(NULL::type)`, for
/// describing it through the simple protocol (which has no parameters).
fn with_null_params(sql: &str, types: &[PgTypeInfo]) -> Result<String, ExtractError> {
    let mut out = String::with_capacity(sql.len());
    for (range, token) in lex(sql) {
        let text = &sql[range];
        if token != Token::Param {
            out.push_str(text);
            continue;
        }
        let ty = text[1..]
            .parse::<usize>()
            .ok()
            .and_then(|n| types.get(n.checked_sub(1)?))
            .ok_or_else(|| {
                ExtractError::new(ErrorKind::InvalidQuery, format!("there is no parameter {text}"))
            })?;
        out.push_str(&format!("(NULL::{})", ty.name()));
    }
    Ok(out)
}

/// `SELECT c1, c2::text, c3::text[] FROM (<query>) AS ferry_q(c1, c2, c3)`:
/// the server casts the columns without a native mapping. The alias list
/// names every column, so duplicate or odd names in the query do not matter.
fn wrap_with_casts(sql: &str, casts: &[Option<Cast>]) -> String {
    let select: Vec<String> = casts
        .iter()
        .enumerate()
        .map(|(i, cast)| match cast {
            None => format!("c{}", i + 1),
            Some(Cast::Text) => format!("c{}::text", i + 1),
            Some(Cast::TextArray) => format!("c{}::text[]", i + 1),
        })
        .collect();
    let names: Vec<String> = (1..=casts.len()).map(|i| format!("c{i}")).collect();
    format!(
        "SELECT {} FROM (\n{}\n) AS ferry_q({})",
        select.join(", "),
        trim_statement(sql),
        names.join(", ")
    )
}

/// The text the statement is prepared under. sqlx caches prepared
/// statements by SQL text alone, with the parameter types of their first
/// preparation; a parameterised query therefore carries its parameter types
/// in a trailing comment, so that the same SQL bound with other types (a
/// step whose parameter declaration changed) is prepared anew. The comment
/// holds type names only, never values.
fn statement_text(sql: &str, types: &[PgTypeInfo]) -> String {
    if types.is_empty() {
        return sql.to_owned();
    }
    let names: Vec<&str> = types.iter().map(TypeInfo::name).collect();
    format!("{sql}\n/* ferry parameters: {} */", names.join(", "))
}

/// Whether preparing failed because sqlx could not look up a column's type
/// (it refuses internal-use types such as `pg_node_tree`, category `Z`,
/// and multiranges).
fn unresolvable_type(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. }
    )
}

/// The result columns of a query whose types sqlx cannot all look up:
/// name, type modifier and, for the types sqlx does not know, a cast to
/// text (`text[]` for arrays). The simple protocol does not look types up;
/// the query runs with `LIMIT 0` under a one-row outer join so that exactly
/// one row, all nulls, carries the description. Parameters become typed
/// nulls.
async fn describe_untyped(
    conn: &mut PgConnection,
    query: &BoundQuery,
    types: &[PgTypeInfo],
) -> Result<Vec<(String, i32, Option<Cast>)>, ExtractError> {
    let inner = with_null_params(trim_statement(&query.sql), types)?;
    let sql = format!(
        "SELECT ferry_q.* FROM (SELECT 1) AS ferry_one LEFT JOIN (SELECT * FROM (\n{inner}\n) AS ferry_i LIMIT 0) \
         AS ferry_q ON true"
    );
    let row = sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_optional(&mut *conn)
        .await
        .map_err(database_error)?
        .ok_or_else(|| ExtractError::internal("describing the query returned no row"))?;
    let columns = row.columns();
    let typmods = typmods(conn, columns).await;
    let unknown: Vec<i64> = columns
        .iter()
        .filter(|c| !resolved(c.type_info()))
        .filter_map(|c| c.type_info().oid().map(|o| i64::from(o.0)))
        .collect();
    let arrays: Vec<i64> = sqlx::query_scalar(
        "SELECT oid::int8 FROM pg_catalog.pg_type WHERE oid = ANY($1::int8[]::oid[]) AND typcategory = 'A'",
    )
    .bind(&unknown)
    .persistent(false)
    .fetch_all(&mut *conn)
    .await
    .map_err(database_error)?;
    Ok(columns
        .iter()
        .map(|c| {
            let info = c.type_info();
            let cast = (!resolved(info)).then(|| {
                let oid = info.oid().map_or(0, |o| i64::from(o.0));
                if arrays.contains(&oid) {
                    Cast::TextArray
                } else {
                    Cast::Text
                }
            });
            let typmod = typmods.get(&c.ordinal()).copied().unwrap_or(-1);
            (c.name().to_owned(), typmod, cast)
        })
        .collect())
}

/// The number of fractional digits of `money` in this session: its binary
/// form counts minor units of the current `lc_monetary`, and the money →
/// numeric cast uses the same digits.
async fn money_scale(conn: &mut PgConnection) -> Result<i8, ExtractError> {
    let scale: i32 = sqlx::query_scalar("SELECT scale('0'::money::numeric)")
        .persistent(false)
        .fetch_one(&mut *conn)
        .await
        .map_err(database_error)?;
    i8::try_from(scale)
        .ok()
        .filter(|s| (0..=10).contains(s))
        .ok_or_else(|| ExtractError::internal(format!("money has {scale} fractional digits")))
}

fn involves_money(info: &PgTypeInfo) -> bool {
    if !resolved(info) {
        return false;
    }
    match info.kind() {
        PgTypeKind::Array(element) | PgTypeKind::Domain(element) => involves_money(element),
        _ => info.oid().map(|o| o.0) == Some(oid::MONEY),
    }
}

/// A timestamp parameter goes as it was given, with its offset
/// (`timestamptz`).
impl TimestampParam for Postgres {
    type Timestamp = chrono::DateTime<chrono::FixedOffset>;

    fn timestamp(value: &chrono::DateTime<chrono::FixedOffset>) -> Self::Timestamp {
        *value
    }
}

fn param_type(value: &ParamValue) -> PgTypeInfo {
    match value {
        ParamValue::Text(_) => <String as Type<Postgres>>::type_info(),
        ParamValue::Integer(_) => <i64 as Type<Postgres>>::type_info(),
        ParamValue::Number(_) => <f64 as Type<Postgres>>::type_info(),
        ParamValue::Boolean(_) => <bool as Type<Postgres>>::type_info(),
        ParamValue::Date(_) => <chrono::NaiveDate as Type<Postgres>>::type_info(),
        ParamValue::Timestamp(_) => <<Postgres as TimestampParam>::Timestamp as Type<Postgres>>::type_info(),
    }
}

/// Type modifiers of result columns that come straight from a table column
/// and whose type uses one (numeric). The lookup is best effort: without
/// it numerics are treated as unconstrained.
async fn typmods(conn: &mut PgConnection, columns: &[PgColumn]) -> HashMap<usize, i32> {
    let wanted: Vec<(usize, u32, i16)> = columns
        .iter()
        .filter(|c| uses_typmod(c.type_info()))
        .filter_map(|c| Some((c.ordinal(), c.relation_id()?.0, c.relation_attribute_no()?)))
        .collect();
    if wanted.is_empty() {
        return HashMap::new();
    }
    let mut relations: Vec<u32> = wanted.iter().map(|(_, rel, _)| *rel).collect();
    relations.sort_unstable();
    relations.dedup();
    // The list holds OIDs the server itself reported, not user input.
    let list = relations.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let sql = format!(
        "SELECT attrelid::int8, attnum::int4, atttypmod FROM pg_catalog.pg_attribute \
         WHERE attrelid IN ({list}) AND attnum > 0"
    );
    let rows = match sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => rows,
        Err(error) => {
            tracing::debug!(%error, "reading column type modifiers failed; numerics are unconstrained");
            return HashMap::new();
        }
    };
    let mut by_attribute = HashMap::new();
    for row in rows {
        let (Ok(rel), Ok(num), Ok(typmod)) = (
            row.try_get::<i64, _>(0),
            row.try_get::<i32, _>(1),
            row.try_get::<i32, _>(2),
        ) else {
            continue;
        };
        by_attribute.insert((rel, num), typmod);
    }
    wanted
        .into_iter()
        .filter_map(|(ordinal, rel, num)| {
            by_attribute
                .get(&(i64::from(rel), i32::from(num)))
                .map(|typmod| (ordinal, *typmod))
        })
        .collect()
}

fn uses_typmod(info: &PgTypeInfo) -> bool {
    if !resolved(info) {
        return false;
    }
    match info.kind() {
        PgTypeKind::Array(element) => uses_typmod(element),
        _ => info.oid().map(|o| o.0) == Some(oid::NUMERIC),
    }
}

/// Built-in type OIDs (pg_type.dat); they are stable across servers.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const MONEY: u32 = 790;
    pub const INET: u32 = 869;
    pub const CIDR: u32 = 650;
    pub const MACADDR: u32 = 829;
    pub const MACADDR8: u32 = 774;
}

/// How a column\'s binary values are decoded, and into which Arrow type.
#[derive(Debug, Clone, PartialEq)]
enum PgKind {
    Bool,
    Int2,
    Int4,
    Int8,
    /// `oid` → Int64 (unsigned 32-bit values, portable to every reader).
    Oid,
    Float4,
    Float8,
    /// numeric → Decimal128(precision, scale).
    Numeric {
        precision: u8,
        scale: i8,
    },
    /// numeric wider than Decimal128, or holding NaN / ±Infinity / more
    /// digits than the decimal → its exact text.
    NumericText,
    /// text, varchar, bpchar, name, json, xml, enums, citext, and every
    /// column the server casts to text.
    Text,
    /// `"char"`: one byte.
    Char,
    /// jsonb: a version byte, then the JSON text.
    Jsonb,
    Bytea,
    /// uuid → its canonical lowercase text.
    Uuid,
    /// inet and cidr → their canonical text (`10.0.0.1`, `10.0.0.0/8`).
    Inet,
    /// macaddr and macaddr8 → `08:00:2b:01:02:03`.
    MacAddr,
    /// money → Decimal128(19, scale): its binary form is an int8 count of
    /// minor units, `scale` the session's `lc_monetary` fractional digits.
    Money {
        scale: i8,
    },
    Date,
    Time,
    Timestamp {
        utc: bool,
    },
    Array {
        element_oid: u32,
        element: Box<PgKind>,
    },
}

/// What the server casts a column to before sending it (types without a
/// native mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cast {
    /// `::text`, the type's own text output.
    Text,
    /// `::text[]`: arrays of such types, element by element.
    TextArray,
}

impl PgKind {
    /// The mapping of `design.md`: a native decoding, or text cast by the
    /// server.
    fn resolve(info: &PgTypeInfo, typmod: i32, money_scale: i8) -> (PgKind, Option<Cast>) {
        if let Some(kind) = PgKind::native(info, typmod, money_scale) {
            return (kind, None);
        }
        if is_array(info) {
            (PgKind::text_array(), Some(Cast::TextArray))
        } else {
            (PgKind::Text, Some(Cast::Text))
        }
    }

    /// A native decoding of the type's binary form, if there is one.
    fn native(info: &PgTypeInfo, typmod: i32, money_scale: i8) -> Option<PgKind> {
        let kind = match info.oid().map(|o| o.0) {
            Some(oid::BOOL) => PgKind::Bool,
            Some(oid::BYTEA) => PgKind::Bytea,
            Some(oid::CHAR) => PgKind::Char,
            Some(
                oid::NAME | oid::TEXT | oid::JSON | oid::XML | oid::UNKNOWN | oid::BPCHAR | oid::VARCHAR,
            ) => PgKind::Text,
            Some(oid::INT8) => PgKind::Int8,
            Some(oid::INT2) => PgKind::Int2,
            Some(oid::INT4) => PgKind::Int4,
            Some(oid::OID) => PgKind::Oid,
            Some(oid::FLOAT4) => PgKind::Float4,
            Some(oid::FLOAT8) => PgKind::Float8,
            Some(oid::DATE) => PgKind::Date,
            Some(oid::TIME) => PgKind::Time,
            Some(oid::TIMESTAMP) => PgKind::Timestamp { utc: false },
            Some(oid::TIMESTAMPTZ) => PgKind::Timestamp { utc: true },
            Some(oid::NUMERIC) => numeric_kind(typmod),
            Some(oid::UUID) => PgKind::Uuid,
            Some(oid::JSONB) => PgKind::Jsonb,
            Some(oid::INET | oid::CIDR) => PgKind::Inet,
            Some(oid::MACADDR | oid::MACADDR8) => PgKind::MacAddr,
            Some(oid::MONEY) => PgKind::Money { scale: money_scale },
            _ if !resolved(info) => return None,
            _ => match info.kind() {
                PgTypeKind::Array(element) if !matches!(element.kind(), PgTypeKind::Array(_)) => {
                    let element_oid = element.oid()?.0;
                    let element = PgKind::native(element, typmod, money_scale)?;
                    PgKind::Array {
                        element_oid,
                        element: Box::new(element),
                    }
                }
                // An enum's binary form is its label.
                PgTypeKind::Enum(_) => PgKind::Text,
                // A domain is sent as its base type.
                PgTypeKind::Domain(base) => PgKind::native(base, -1, money_scale)?,
                PgTypeKind::Simple if info.name().eq_ignore_ascii_case("citext") => PgKind::Text,
                _ => return None,
            },
        };
        Some(kind)
    }

    /// `text[]` → List<Utf8>.
    fn text_array() -> PgKind {
        PgKind::Array {
            element_oid: oid::TEXT,
            element: Box::new(PgKind::Text),
        }
    }

    /// The same kind with numerics (also inside arrays) read as exact text.
    fn numeric_as_text(self) -> PgKind {
        match self {
            PgKind::Numeric { .. } => PgKind::NumericText,
            PgKind::Array { element_oid, element } => PgKind::Array {
                element_oid,
                element: Box::new(element.numeric_as_text()),
            },
            other => other,
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            PgKind::Bool => DataType::Boolean,
            PgKind::Int2 => DataType::Int16,
            PgKind::Int4 => DataType::Int32,
            PgKind::Int8 | PgKind::Oid => DataType::Int64,
            PgKind::Float4 => DataType::Float32,
            PgKind::Float8 => DataType::Float64,
            PgKind::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            PgKind::Money { scale } => DataType::Decimal128(MONEY_PRECISION, *scale),
            PgKind::NumericText
            | PgKind::Text
            | PgKind::Char
            | PgKind::Jsonb
            | PgKind::Uuid
            | PgKind::Inet
            | PgKind::MacAddr => DataType::Utf8,
            PgKind::Bytea => DataType::Binary,
            PgKind::Date => DataType::Date32,
            PgKind::Time => DataType::Time64(TimeUnit::Microsecond),
            PgKind::Timestamp { utc } => {
                DataType::Timestamp(TimeUnit::Microsecond, utc.then(|| Arc::from("UTC")))
            }
            PgKind::Array { element, .. } => DataType::List(item_field(element)),
        }
    }
}

/// Digits of the largest int8: every money value fits.
const MONEY_PRECISION: u8 = 19;

/// Whether sqlx knows the type (its kind may be asked for); types it could
/// not look up are only an OID, named `?`.
fn resolved(info: &PgTypeInfo) -> bool {
    info.name() != "?"
}

/// An array type, or a domain over one.
fn is_array(info: &PgTypeInfo) -> bool {
    if !resolved(info) {
        return false;
    }
    match info.kind() {
        PgTypeKind::Array(_) => true,
        PgTypeKind::Domain(base) => is_array(base),
        _ => false,
    }
}

fn item_field(element: &PgKind) -> FieldRef {
    Arc::new(Field::new_list_field(element.data_type(), true))
}

/// numeric(p, s) → Decimal128(p, s); unconstrained → Decimal128(38, 10);
/// wider than 38 digits → exact text. PostgreSQL 15 allows a negative
/// scale (rounding to tens, hundreds…) and a scale above the precision:
/// both are widened to a Decimal128 that holds every value exactly.
fn numeric_kind(typmod: i32) -> PgKind {
    if typmod < 4 {
        let (precision, scale) = UNCONSTRAINED_DECIMAL;
        return PgKind::Numeric { precision, scale };
    }
    let modifier = typmod - 4;
    let precision = (modifier >> 16) & 0xffff;
    // An 11-bit two's complement field since PostgreSQL 15.
    let scale = ((modifier & 0x7ff) ^ 1024) - 1024;
    let (precision, scale) = if scale < 0 {
        (precision - scale, 0)
    } else {
        (precision.max(scale), scale)
    };
    match (u8::try_from(precision), i8::try_from(scale)) {
        (Ok(p), Ok(s)) if p <= MAX_DECIMAL128_PRECISION && p > 0 => PgKind::Numeric {
            precision: p,
            scale: s,
        },
        _ => PgKind::NumericText,
    }
}

/// A result column: its name and how to decode it.
#[derive(Debug, Clone)]
struct ColumnSpec {
    name: String,
    /// The server's name of its type (for messages).
    type_name: String,
    kind: PgKind,
    /// Set when the server casts it to text first.
    cast: Option<Cast>,
}

impl ColumnSpec {
    fn field(&self) -> Field {
        Field::new(&self.name, self.kind.data_type(), true)
    }
}

/// Decodes rows field by field into Arrow builders, one per column.
struct BatchDecoder {
    schema: SchemaRef,
    names: Vec<String>,
    kinds: Vec<PgKind>,
    decoders: Vec<Decoder>,
    rows: usize,
    /// Wire bytes of the rows in this batch.
    bytes: usize,
}

impl BatchDecoder {
    fn new(columns: &[ColumnSpec], schema: SchemaRef) -> Self {
        Self {
            schema,
            names: columns.iter().map(|c| c.name.clone()).collect(),
            kinds: columns.iter().map(|c| c.kind.clone()).collect(),
            decoders: columns.iter().map(|c| Decoder::new(&c.kind)).collect(),
            rows: 0,
            bytes: 0,
        }
    }

    fn push(&mut self, column: usize, value: Option<&[u8]>) -> Result<(), Attempt> {
        let Some(decoder) = self.decoders.get_mut(column) else {
            return Err(ExtractError::internal(format!(
                "the server sent a value for unknown column {column}"
            ))
            .into());
        };
        decoder.push(value).map_err(|error| match error {
            DecodeError::NoDecimal => Attempt::Widen(column),
            error => Attempt::Failed(error.in_column(&self.names[column])),
        })
    }

    /// One row of the extended protocol (its values are in binary format).
    fn push_row(&mut self, row: &sqlx::postgres::PgRow) -> Result<(), Attempt> {
        if row.len() != self.decoders.len() {
            return Err(ExtractError::internal("the row does not have the described columns").into());
        }
        for column in 0..self.decoders.len() {
            let value = row.try_get_raw(column).map_err(database_error)?;
            let bytes = if value.is_null() {
                None
            } else {
                let bytes = value
                    .as_bytes()
                    .map_err(|e| ExtractError::internal(e.to_string()))?;
                self.bytes += bytes.len();
                Some(bytes)
            };
            self.push(column, bytes)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// The batch so far. The builders of the next batch are sized like this
    /// one, so that filling them never regrows (and copies) their buffers.
    fn finish(&mut self) -> Result<RecordBatch, ExtractError> {
        let mut arrays = Vec::with_capacity(self.decoders.len());
        for ((decoder, kind), name) in self.decoders.iter_mut().zip(&self.kinds).zip(&self.names) {
            let array = decoder.finish().map_err(|error| error.in_column(name))?;
            *decoder = Decoder::with_capacity(kind, self.rows, value_bytes(&array));
            arrays.push(array);
        }
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| ExtractError::internal(format!("assembling a record batch failed: {e}")))
    }
}

/// Bytes of variable-width values held by `array` (0 for other arrays).
fn value_bytes(array: &ArrayRef) -> usize {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().values().len(),
        DataType::Binary => array.as_binary::<i32>().values().len(),
        _ => 0,
    }
}

/// The binary COPY stream: a header, then tuples (field count, then per
/// field a length, -1 for null, and the value), then a -1 trailer.
/// PostgreSQL sends one tuple per CopyData message and the header inside
/// the first one; the parser does not rely on that and carries any partial
/// tuple over to the next chunk.
#[derive(Default)]
struct CopyParser {
    header_done: bool,
    finished: bool,
    carry: Vec<u8>,
}

const COPY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

impl CopyParser {
    fn feed(&mut self, chunk: bytes::Bytes, batch: &mut BatchDecoder) -> Result<(), Attempt> {
        if self.carry.is_empty() {
            let used = self.parse(&chunk, batch)?;
            if used < chunk.len() {
                self.carry.extend_from_slice(&chunk[used..]);
            }
        } else {
            self.carry.extend_from_slice(&chunk);
            let carry = std::mem::take(&mut self.carry);
            let used = self.parse(&carry, batch)?;
            self.carry = carry;
            self.carry.drain(..used);
        }
        Ok(())
    }

    /// Parses every complete tuple of `buf`; returns the bytes consumed.
    fn parse(&mut self, buf: &[u8], batch: &mut BatchDecoder) -> Result<usize, Attempt> {
        let mut pos = 0;
        if !self.header_done {
            if buf.len() < COPY_SIGNATURE.len() + 8 {
                return Ok(0);
            }
            if &buf[..COPY_SIGNATURE.len()] != COPY_SIGNATURE {
                return Err(ExtractError::internal(
                    "the COPY stream does not start with the binary signature",
                )
                .into());
            }
            let extension = read_i32(buf, COPY_SIGNATURE.len() + 4).unwrap_or(0);
            let end = COPY_SIGNATURE.len() + 8 + usize::try_from(extension).unwrap_or(0);
            if buf.len() < end {
                return Ok(0);
            }
            pos = end;
            self.header_done = true;
        }
        let columns = batch.decoders.len();
        while !self.finished {
            let Some(count) = read_i16(buf, pos) else { break };
            if count == -1 {
                self.finished = true;
                pos += 2;
                break;
            }
            if usize::try_from(count).ok() != Some(columns) {
                return Err(ExtractError::internal(format!(
                    "a COPY tuple has {count} fields where {columns} columns were described"
                ))
                .into());
            }
            // Find the tuple's end before decoding anything of it.
            let mut end = pos + 2;
            let mut complete = true;
            for _ in 0..columns {
                let Some(len) = read_i32(buf, end) else {
                    complete = false;
                    break;
                };
                end += 4 + usize::try_from(len).unwrap_or(0);
                if end > buf.len() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            let mut at = pos + 2;
            for column in 0..columns {
                let len = read_i32(buf, at).unwrap_or(-1);
                at += 4;
                if len < 0 {
                    batch.push(column, None)?;
                } else {
                    let len = len as usize;
                    batch.push(column, Some(&buf[at..at + len]))?;
                    at += len;
                }
            }
            batch.rows += 1;
            batch.bytes += end - pos;
            pos = end;
        }
        Ok(pos)
    }
}

fn read_i16(buf: &[u8], at: usize) -> Option<i16> {
    buf.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]]))
}

fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    buf.get(at..at + 4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Why a value could not be decoded.
#[derive(Debug)]
enum DecodeError {
    /// The wire value does not have the described type's shape.
    Malformed(String),
    /// The value exists but has no faithful Arrow form under the policies.
    Unrepresentable(String),
    /// A numeric with no decimal form (NaN, ±Infinity, too many digits):
    /// the column is read again as exact text.
    NoDecimal,
}

impl DecodeError {
    fn in_column(self, column: &str) -> ExtractError {
        match self {
            DecodeError::Malformed(m) => ExtractError::internal(format!("column \"{column}\": {m}")),
            DecodeError::Unrepresentable(m) => ExtractError::unsupported(format!("column \"{column}\": {m}")),
            DecodeError::NoDecimal => {
                ExtractError::internal(format!("column \"{column}\": a numeric has no decimal form"))
            }
        }
    }
}

fn fixed<const N: usize>(value: &[u8]) -> Result<[u8; N], DecodeError> {
    value
        .try_into()
        .map_err(|_| DecodeError::Malformed(format!("expected a {N}-byte value, got {} bytes", value.len())))
}

/// One column's Arrow builder plus its binary decoding.
enum Decoder {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Oid(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Numeric {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    NumericText(StringBuilder),
    /// Raw bytes, validated as UTF-8 once per batch (one pass over the
    /// whole buffer is much cheaper than one per value).
    Text(BinaryBuilder),
    Char(StringBuilder),
    /// The JSON text, validated like `Text`.
    Jsonb(BinaryBuilder),
    Bytea(BinaryBuilder),
    Uuid(StringBuilder),
    Inet(StringBuilder),
    MacAddr(StringBuilder),
    Money(Decimal128Builder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Array(Box<ListDecoder>),
}

struct ListDecoder {
    item: FieldRef,
    element_oid: u32,
    offsets: Vec<i32>,
    validity: NullBufferBuilder,
    child: Decoder,
}

impl Decoder {
    fn new(kind: &PgKind) -> Decoder {
        Decoder::with_capacity(kind, 0, 0)
    }

    /// A decoder whose builders hold `rows` values, and `data` bytes of
    /// variable-width values, before they grow.
    fn with_capacity(kind: &PgKind, rows: usize, data: usize) -> Decoder {
        match kind {
            PgKind::Bool => Decoder::Bool(BooleanBuilder::with_capacity(rows)),
            PgKind::Int2 => Decoder::Int2(Int16Builder::with_capacity(rows)),
            PgKind::Int4 => Decoder::Int4(Int32Builder::with_capacity(rows)),
            PgKind::Int8 => Decoder::Int8(Int64Builder::with_capacity(rows)),
            PgKind::Oid => Decoder::Oid(Int64Builder::with_capacity(rows)),
            PgKind::Float4 => Decoder::Float4(Float32Builder::with_capacity(rows)),
            PgKind::Float8 => Decoder::Float8(Float64Builder::with_capacity(rows)),
            PgKind::Numeric { precision, scale } => Decoder::Numeric {
                builder: Decimal128Builder::with_capacity(rows)
                    .with_data_type(DataType::Decimal128(*precision, *scale)),
                precision: *precision,
                scale: *scale,
            },
            PgKind::NumericText => Decoder::NumericText(StringBuilder::with_capacity(rows, data)),
            PgKind::Text => Decoder::Text(BinaryBuilder::with_capacity(rows, data)),
            PgKind::Char => Decoder::Char(StringBuilder::with_capacity(rows, data)),
            PgKind::Jsonb => Decoder::Jsonb(BinaryBuilder::with_capacity(rows, data)),
            PgKind::Bytea => Decoder::Bytea(BinaryBuilder::with_capacity(rows, data)),
            PgKind::Uuid => Decoder::Uuid(StringBuilder::with_capacity(rows, data)),
            PgKind::Inet => Decoder::Inet(StringBuilder::with_capacity(rows, data)),
            PgKind::MacAddr => Decoder::MacAddr(StringBuilder::with_capacity(rows, data)),
            PgKind::Money { scale } => Decoder::Money(
                Decimal128Builder::with_capacity(rows)
                    .with_data_type(DataType::Decimal128(MONEY_PRECISION, *scale)),
            ),
            PgKind::Date => Decoder::Date(Date32Builder::with_capacity(rows)),
            PgKind::Time => Decoder::Time(Time64MicrosecondBuilder::with_capacity(rows)),
            PgKind::Timestamp { utc } => Decoder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows)
                    .with_timezone_opt(utc.then(|| Arc::<str>::from("UTC"))),
            ),
            PgKind::Array { element_oid, element } => Decoder::Array(Box::new(ListDecoder {
                item: item_field(element),
                element_oid: *element_oid,
                offsets: {
                    let mut offsets = Vec::with_capacity(rows + 1);
                    offsets.push(0);
                    offsets
                },
                validity: NullBufferBuilder::new(rows),
                child: Decoder::new(element),
            })),
        }
    }

    fn push(&mut self, value: Option<&[u8]>) -> Result<(), DecodeError> {
        let Some(v) = value else {
            self.push_null();
            return Ok(());
        };
        match self {
            Decoder::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            Decoder::Int2(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            Decoder::Int4(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            Decoder::Int8(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Decoder::Oid(b) => b.append_value(i64::from(u32::from_be_bytes(fixed(v)?))),
            Decoder::Float4(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            Decoder::Float8(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            Decoder::Numeric {
                builder,
                precision,
                scale,
            } => builder.append_value(numeric_to_decimal(v, *precision, *scale)?),
            Decoder::NumericText(b) => b.append_value(numeric_to_string(v)?),
            Decoder::Text(b) => b.append_value(v),
            Decoder::Char(b) => b.append_value(String::from_utf8_lossy(v)),
            Decoder::Jsonb(b) => match v.split_first() {
                Some((1, json)) => b.append_value(json),
                _ => return Err(DecodeError::Malformed("unknown jsonb format version".into())),
            },
            Decoder::Bytea(b) => b.append_value(v),
            Decoder::Uuid(b) => {
                let mut text = [0u8; 36];
                b.append_value(uuid_text(&fixed::<16>(v)?, &mut text)?)
            }
            Decoder::Inet(b) => b.append_value(inet_text(v)?),
            Decoder::MacAddr(b) => b.append_value(mac_text(v)?),
            Decoder::Money(b) => b.append_value(i128::from(i64::from_be_bytes(fixed(v)?))),
            Decoder::Date(b) => b.append_value(date(i32::from_be_bytes(fixed(v)?))?),
            Decoder::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            Decoder::Timestamp(b) => b.append_value(timestamp(i64::from_be_bytes(fixed(v)?))?),
            Decoder::Array(list) => list.push(v)?,
        }
        Ok(())
    }

    fn push_null(&mut self) {
        match self {
            Decoder::Bool(b) => b.append_null(),
            Decoder::Int2(b) => b.append_null(),
            Decoder::Int4(b) => b.append_null(),
            Decoder::Int8(b) | Decoder::Oid(b) => b.append_null(),
            Decoder::Float4(b) => b.append_null(),
            Decoder::Float8(b) => b.append_null(),
            Decoder::Numeric { builder, .. } => builder.append_null(),
            Decoder::NumericText(b)
            | Decoder::Char(b)
            | Decoder::Uuid(b)
            | Decoder::Inet(b)
            | Decoder::MacAddr(b) => b.append_null(),
            Decoder::Money(b) => b.append_null(),
            Decoder::Text(b) | Decoder::Jsonb(b) | Decoder::Bytea(b) => b.append_null(),
            Decoder::Date(b) => b.append_null(),
            Decoder::Time(b) => b.append_null(),
            Decoder::Timestamp(b) => b.append_null(),
            Decoder::Array(list) => {
                let last = list.offsets.last().copied().unwrap_or(0);
                list.offsets.push(last);
                list.validity.append_null();
            }
        }
    }

    fn finish(&mut self) -> Result<ArrayRef, DecodeError> {
        Ok(match self {
            Decoder::Bool(b) => Arc::new(b.finish()),
            Decoder::Int2(b) => Arc::new(b.finish()),
            Decoder::Int4(b) => Arc::new(b.finish()),
            Decoder::Int8(b) | Decoder::Oid(b) => Arc::new(b.finish()),
            Decoder::Float4(b) => Arc::new(b.finish()),
            Decoder::Float8(b) => Arc::new(b.finish()),
            Decoder::Numeric { builder, .. } => Arc::new(builder.finish()),
            Decoder::NumericText(b)
            | Decoder::Char(b)
            | Decoder::Uuid(b)
            | Decoder::Inet(b)
            | Decoder::MacAddr(b) => Arc::new(b.finish()),
            Decoder::Money(b) => Arc::new(b.finish()),
            Decoder::Text(b) | Decoder::Jsonb(b) => Arc::new(
                StringArray::try_from_binary(b.finish())
                    .map_err(|_| DecodeError::Malformed("text is not valid UTF-8".into()))?,
            ),
            Decoder::Bytea(b) => Arc::new(b.finish()),
            Decoder::Date(b) => Arc::new(b.finish()),
            Decoder::Time(b) => Arc::new(b.finish()),
            Decoder::Timestamp(b) => Arc::new(b.finish()),
            Decoder::Array(list) => {
                let offsets = std::mem::replace(&mut list.offsets, vec![0]);
                let values = list.child.finish()?;
                let nulls = list.validity.finish();
                Arc::new(
                    ListArray::try_new(
                        list.item.clone(),
                        OffsetBuffer::new(offsets.into()),
                        values,
                        nulls,
                    )
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?,
                )
            }
        })
    }
}

impl ListDecoder {
    /// A binary array: dimensions, a has-nulls flag, the element OID, per
    /// dimension its length and lower bound, then the elements. Several
    /// dimensions are flattened in row-major order (policy in design.md).
    fn push(&mut self, v: &[u8]) -> Result<(), DecodeError> {
        let malformed = || DecodeError::Malformed("malformed array value".into());
        let dimensions = read_i32(v, 0).ok_or_else(malformed)?;
        let element_oid = read_i32(v, 8).ok_or_else(malformed)? as u32;
        if dimensions < 0 {
            return Err(malformed());
        }
        if dimensions > 0 && element_oid != self.element_oid {
            return Err(DecodeError::Malformed(format!(
                "array elements have type {element_oid}, {} was described",
                self.element_oid
            )));
        }
        let mut count: usize = if dimensions == 0 { 0 } else { 1 };
        let mut at = 12;
        for _ in 0..dimensions {
            let len = read_i32(v, at).ok_or_else(malformed)?;
            count = count
                .checked_mul(usize::try_from(len).map_err(|_| malformed())?)
                .ok_or_else(malformed)?;
            at += 8;
        }
        for _ in 0..count {
            let len = read_i32(v, at).ok_or_else(malformed)?;
            at += 4;
            if len < 0 {
                self.child.push(None)?;
            } else {
                let end = at + len as usize;
                self.child.push(Some(v.get(at..end).ok_or_else(malformed)?))?;
                at = end;
            }
        }
        let last = self.offsets.last().copied().unwrap_or(0);
        let next = i32::try_from(count)
            .ok()
            .and_then(|c| last.checked_add(c))
            .ok_or_else(|| {
                DecodeError::Unrepresentable("more than 2^31 array elements in one batch".into())
            })?;
        self.offsets.push(next);
        self.validity.append_non_null();
        Ok(())
    }
}

/// Days since 2000-01-01 → Date32. ±infinity become i32::MAX / -i32::MAX,
/// the values DuckDB reads as ±infinity.
fn date(days: i32) -> Result<i32, DecodeError> {
    match days {
        i32::MAX => Ok(i32::MAX),
        i32::MIN => Ok(-i32::MAX),
        days => days.checked_add(PG_EPOCH_DAYS).ok_or_else(|| {
            DecodeError::Unrepresentable(format!("date {days} days after 2000-01-01 is out of range"))
        }),
    }
}

/// Microseconds since 2000-01-01 → since 1970-01-01. ±infinity become
/// i64::MAX / -i64::MAX (DuckDB's ±infinity).
fn timestamp(micros: i64) -> Result<i64, DecodeError> {
    match micros {
        i64::MAX => Ok(i64::MAX),
        i64::MIN => Ok(-i64::MAX),
        micros => micros
            .checked_add(PG_EPOCH_MICROS)
            .filter(|m| *m != i64::MAX && *m != -i64::MAX)
            .ok_or_else(|| DecodeError::Unrepresentable("timestamp out of range".into())),
    }
}

/// An inet or cidr (family, mask bits, is-cidr flag, address length, the
/// address) as PostgreSQL's own output writes it: the mask is omitted for
/// a single-host inet and always written for a cidr; IPv6 compresses the
/// longest run of two or more zero groups and writes embedded IPv4 dotted.
fn inet_text(v: &[u8]) -> Result<String, DecodeError> {
    use std::fmt::Write;
    let malformed = || DecodeError::Malformed("malformed inet value".into());
    let [family, bits, is_cidr, len] = *v.get(..4).ok_or_else(malformed)? else {
        return Err(malformed());
    };
    let address = &v[4..];
    if address.len() != usize::from(len) {
        return Err(malformed());
    }
    let mut text = String::with_capacity(48);
    let full = match (family, address.len()) {
        // PGSQL_AF_INET
        (2, 4) => {
            let _ = write!(
                text,
                "{}.{}.{}.{}",
                address[0], address[1], address[2], address[3]
            );
            32
        }
        // PGSQL_AF_INET6
        (3, 16) => {
            let words: Vec<u16> = address
                .chunks(2)
                .map(|w| u16::from_be_bytes([w[0], w[1]]))
                .collect();
            // The longest run of zero words (the first of equals), if ≥ 2.
            let (mut best, mut run): ((usize, usize), (usize, usize)) = ((0, 0), (0, 0));
            for (i, word) in words.iter().enumerate() {
                if *word == 0 {
                    if run.1 == 0 {
                        run = (i, 1);
                    } else {
                        run.1 += 1;
                    }
                    if run.1 > best.1 {
                        best = run;
                    }
                } else {
                    run = (0, 0);
                }
            }
            let compress = best.1 >= 2;
            let mut i = 0;
            while i < 8 {
                if compress && i == best.0 {
                    text.push(':');
                    i += best.1;
                    continue;
                }
                if i != 0 {
                    text.push(':');
                }
                let embedded_v4 = i == 6
                    && compress
                    && best.0 == 0
                    && (best.1 == 6 || (best.1 == 7 && words[7] != 1) || (best.1 == 5 && words[5] == 0xffff));
                if embedded_v4 {
                    let _ = write!(
                        text,
                        "{}.{}.{}.{}",
                        address[12], address[13], address[14], address[15]
                    );
                    break;
                }
                let _ = write!(text, "{:x}", words[i]);
                i += 1;
            }
            if compress && best.0 + best.1 == 8 {
                text.push(':');
            }
            128
        }
        _ => return Err(malformed()),
    };
    if bits != full || is_cidr != 0 {
        let _ = write!(text, "/{bits}");
    }
    Ok(text)
}

/// A macaddr (6 bytes) or macaddr8 (8 bytes): lowercase hex pairs joined
/// by colons.
fn mac_text(v: &[u8]) -> Result<String, DecodeError> {
    if v.len() != 6 && v.len() != 8 {
        return Err(DecodeError::Malformed(format!(
            "a MAC address of {} bytes",
            v.len()
        )));
    }
    Ok(v.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// A uuid's canonical lowercase text, formatted into `out`.
fn uuid_text<'b>(bytes: &[u8; 16], out: &'b mut [u8; 36]) -> Result<&'b str, DecodeError> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 0;
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0x0f)];
        at += 2;
    }
    std::str::from_utf8(out).map_err(|_| DecodeError::Malformed("uuid formatting failed".into()))
}

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// A numeric's header and base-10000 digits.
struct Numeric<'a> {
    weight: i32,
    sign: u16,
    dscale: u16,
    digits: &'a [u8],
}

impl Numeric<'_> {
    fn parse(v: &[u8]) -> Result<Numeric<'_>, DecodeError> {
        let malformed = || DecodeError::Malformed("malformed numeric value".into());
        let header = v.get(..8).ok_or_else(malformed)?;
        let ndigits = i16::from_be_bytes([header[0], header[1]]);
        let weight = i16::from_be_bytes([header[2], header[3]]);
        let sign = u16::from_be_bytes([header[4], header[5]]);
        let dscale = u16::from_be_bytes([header[6], header[7]]);
        let digits = &v[8..];
        if ndigits < 0 || digits.len() != ndigits as usize * 2 {
            return Err(malformed());
        }
        Ok(Numeric {
            weight: i32::from(weight),
            sign,
            dscale,
            digits,
        })
    }

    fn ndigits(&self) -> i32 {
        (self.digits.len() / 2) as i32
    }

    /// The base-10000 digit of group `g` (10000^g), zero outside the value.
    fn group(&self, g: i32) -> i128 {
        let index = self.weight - g;
        if index < 0 || index >= self.ndigits() {
            return 0;
        }
        let at = index as usize * 2;
        i128::from(u16::from_be_bytes([self.digits[at], self.digits[at + 1]]))
    }

    fn special(&self) -> Option<&'static str> {
        match self.sign {
            NUMERIC_NAN => Some("NaN"),
            NUMERIC_PINF => Some("Infinity"),
            NUMERIC_NINF => Some("-Infinity"),
            _ => None,
        }
    }
}

/// A binary numeric as a Decimal128 value at `scale`, rounding further
/// digits half away from zero (only unconstrained numerics have any).
/// NaN, ±Infinity and values with too many digits have no decimal form:
/// `NoDecimal`, and the column is read again as exact text (policy).
fn numeric_to_decimal(v: &[u8], precision: u8, scale: i8) -> Result<i128, DecodeError> {
    let n = Numeric::parse(v)?;
    if n.special().is_some() {
        return Err(DecodeError::NoDecimal);
    }
    if n.sign != NUMERIC_POS && n.sign != NUMERIC_NEG {
        return Err(DecodeError::Malformed("malformed numeric sign".into()));
    }
    let scale = u32::try_from(scale).unwrap_or(0);
    let overflow = || DecodeError::NoDecimal;
    // Groups from the highest down to the one holding the scale-th
    // fractional digit; of that last group only the digits within the
    // scale are kept, the first dropped digit decides rounding.
    let fraction_groups = scale.div_ceil(4) as i32;
    let extra = fraction_groups as u32 * 4 - scale;
    let mut acc: i128 = 0;
    let mut round_up = false;
    let mut g = n.weight;
    while g >= -fraction_groups {
        let digit = n.group(g);
        if g == -fraction_groups && extra > 0 {
            // A base-10000 digit fits u32: keep the division off i128.
            let (digit, cut) = (digit as u32, 10u32.pow(extra));
            acc = acc
                .checked_mul(pow10(4 - extra))
                .and_then(|a| a.checked_add(i128::from(digit / cut)))
                .ok_or_else(overflow)?;
            round_up = (digit % cut) * 2 >= cut;
        } else {
            acc = acc
                .checked_mul(10_000)
                .and_then(|a| a.checked_add(digit))
                .ok_or_else(overflow)?;
        }
        g -= 1;
    }
    if extra == 0 {
        round_up = n.group(-fraction_groups - 1) >= 5_000;
    }
    if round_up {
        acc += 1;
    }
    if acc >= pow10(u32::from(precision.min(MAX_DECIMAL128_PRECISION))) {
        return Err(overflow());
    }
    Ok(if n.sign == NUMERIC_NEG { -acc } else { acc })
}

/// A binary numeric's exact text (`-12.3400`, `NaN`, `Infinity`).
fn numeric_to_string(v: &[u8]) -> Result<String, DecodeError> {
    let n = Numeric::parse(v)?;
    if let Some(special) = n.special() {
        return Ok(special.to_owned());
    }
    let mut text = String::with_capacity(n.digits.len() * 2 + 4);
    if n.sign == NUMERIC_NEG {
        text.push('-');
    }
    if n.weight < 0 {
        text.push('0');
    } else {
        for g in (0..=n.weight).rev() {
            if g == n.weight {
                text.push_str(&n.group(g).to_string());
            } else {
                text.push_str(&format!("{:04}", n.group(g)));
            }
        }
    }
    if n.dscale > 0 {
        text.push('.');
        let mut fraction = String::with_capacity(usize::from(n.dscale) + 4);
        let mut g = -1;
        while fraction.len() < usize::from(n.dscale) {
            fraction.push_str(&format!("{:04}", n.group(g)));
            g -= 1;
        }
        fraction.truncate(usize::from(n.dscale));
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a binary numeric from its text, as numeric_send would.
    fn numeric(text: &str) -> Vec<u8> {
        let (negative, body) = text.strip_prefix('-').map_or((false, text), |b| (true, b));
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let dscale = frac.len() as u16;
        let int_pad = (4 - int.len() % 4) % 4;
        let int = format!("{}{int}", "0".repeat(int_pad));
        let frac_pad = (4 - frac.len() % 4) % 4;
        let frac = format!("{frac}{}", "0".repeat(frac_pad));
        let mut groups: Vec<u16> = int
            .as_bytes()
            .chunks(4)
            .chain(frac.as_bytes().chunks(4))
            .map(|c| std::str::from_utf8(c).expect("ascii").parse().expect("digits"))
            .collect();
        let mut weight = (int.len() / 4) as i16 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&(if negative { NUMERIC_NEG } else { NUMERIC_POS }).to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for g in groups {
            out.extend_from_slice(&g.to_be_bytes());
        }
        out
    }

    #[test]
    fn numerics_decode_exactly_at_their_scale() {
        assert_eq!(
            numeric_to_decimal(&numeric("1234.56"), 12, 2).expect("d"),
            123_456
        );
        assert_eq!(
            numeric_to_decimal(&numeric("-1234.56"), 12, 2).expect("d"),
            -123_456
        );
        assert_eq!(numeric_to_decimal(&numeric("0.0001"), 10, 4).expect("d"), 1);
        assert_eq!(numeric_to_decimal(&numeric("0"), 10, 4).expect("d"), 0);
        assert_eq!(
            numeric_to_decimal(&numeric("100000000"), 12, 0).expect("d"),
            100_000_000
        );
        assert_eq!(numeric_to_decimal(&numeric("12.5"), 12, 5).expect("d"), 1_250_000);
        assert_eq!(
            numeric_to_decimal(&numeric("-0.00000000000000000000000000000000000001"), 38, 38).expect("d"),
            -1
        );
        let max = "9".repeat(38);
        assert_eq!(
            numeric_to_decimal(&numeric(&max), 38, 0).expect("d"),
            pow10(38) - 1
        );
        let max_scaled = format!("{}.{}", "9".repeat(36), "99");
        assert_eq!(
            numeric_to_decimal(&numeric(&max_scaled), 38, 2).expect("d"),
            pow10(38) - 1
        );
    }

    #[test]
    fn unconstrained_numerics_round_half_away_from_zero() {
        assert_eq!(
            numeric_to_decimal(&numeric("0.00000000005"), 38, 10).expect("d"),
            1
        );
        assert_eq!(
            numeric_to_decimal(&numeric("-0.00000000005"), 38, 10).expect("d"),
            -1
        );
        assert_eq!(
            numeric_to_decimal(&numeric("0.00000000004999"), 38, 10).expect("d"),
            0
        );
        assert_eq!(numeric_to_decimal(&numeric("2.345"), 10, 2).expect("d"), 235);
        assert_eq!(numeric_to_decimal(&numeric("1.99995"), 10, 4).expect("d"), 20_000);
        assert_eq!(numeric_to_decimal(&numeric("1.00005"), 10, 4).expect("d"), 10_001);
        assert!(numeric_to_decimal(&numeric(&"9".repeat(29)), 38, 10).is_err());
    }

    #[test]
    fn special_numerics_are_errors_and_text_keeps_them() {
        let nan = [0, 0, 0, 0, 0xC0, 0, 0, 0];
        assert!(matches!(
            numeric_to_decimal(&nan, 10, 2),
            Err(DecodeError::NoDecimal)
        ));
        assert_eq!(numeric_to_string(&nan).expect("text"), "NaN");
        assert_eq!(
            numeric_to_string(&numeric("-1234.5600")).expect("text"),
            "-1234.5600"
        );
        assert_eq!(numeric_to_string(&numeric("0.0012")).expect("text"), "0.0012");
        assert_eq!(numeric_to_string(&numeric("10000")).expect("text"), "10000");
        assert_eq!(numeric_to_string(&numeric("0")).expect("text"), "0");
    }

    #[test]
    fn statements_are_trimmed_and_parameters_replaced_outside_strings_and_comments() {
        assert_eq!(trim_statement("select 1; -- end\n ;; /* x; */ "), "select 1");
        assert_eq!(trim_statement("select ';--' ;"), "select ';--'");
        assert_eq!(trim_statement("select $$ ; $$;"), "select $$ ; $$");
        assert_eq!(trim_statement("select 1 /* a /* nested */ ; */"), "select 1");
        assert_eq!(trim_statement("select E'\\';' ;"), "select E'\\';'");
        let types = [
            <i64 as Type<Postgres>>::type_info(),
            <String as Type<Postgres>>::type_info(),
        ];
        assert_eq!(
            with_null_params("select $1, '$2', $tag$ $1 $tag$, a$1, $2 -- $1", &types).expect("replaced"),
            "select (NULL::INT8), '$2', $tag$ $1 $tag$, a$1, (NULL::TEXT) -- $1"
        );
        assert!(with_null_params("select $3", &types).is_err());
    }

    #[test]
    fn inet_and_mac_addresses_print_as_postgres_does() {
        let v4 = |bits: u8, cidr: u8, a: [u8; 4]| [&[2, bits, cidr, 4][..], &a[..]].concat();
        assert_eq!(inet_text(&v4(32, 0, [10, 0, 0, 1])).expect("inet"), "10.0.0.1");
        assert_eq!(inet_text(&v4(8, 1, [10, 0, 0, 0])).expect("cidr"), "10.0.0.0/8");
        assert_eq!(inet_text(&v4(32, 1, [1, 2, 3, 4])).expect("cidr"), "1.2.3.4/32");
        let v6 = |bits: u8, words: [u16; 8]| {
            let mut v = vec![3, bits, 0, 16];
            for w in words {
                v.extend_from_slice(&w.to_be_bytes());
            }
            v
        };
        assert_eq!(inet_text(&v6(128, [0, 0, 0, 0, 0, 0, 0, 1])).expect("v6"), "::1");
        assert_eq!(inet_text(&v6(128, [0; 8])).expect("v6"), "::");
        assert_eq!(
            inet_text(&v6(128, [0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304])).expect("v6"),
            "::ffff:1.2.3.4"
        );
        assert_eq!(
            inet_text(&v6(64, [0x2001, 0xdb8, 0, 0, 1, 0, 0, 0])).expect("v6"),
            "2001:db8:0:0:1::/64"
        );
        assert_eq!(
            mac_text(&[8, 0, 0x2b, 1, 2, 3]).expect("mac"),
            "08:00:2b:01:02:03"
        );
    }

    #[test]
    fn typmods_give_precision_and_scale() {
        let typmod = |p: i32, s: i32| ((p << 16) | (s & 0x7ff)) + 4;
        assert_eq!(
            numeric_kind(typmod(12, 2)),
            PgKind::Numeric {
                precision: 12,
                scale: 2
            }
        );
        assert_eq!(
            numeric_kind(-1),
            PgKind::Numeric {
                precision: 38,
                scale: 10
            }
        );
        assert_eq!(numeric_kind(typmod(50, 10)), PgKind::NumericText);
        assert_eq!(
            numeric_kind(typmod(5, -2)),
            PgKind::Numeric {
                precision: 7,
                scale: 0
            }
        );
        assert_eq!(
            numeric_kind(typmod(2, 5)),
            PgKind::Numeric {
                precision: 5,
                scale: 5
            }
        );
    }

    #[test]
    fn dates_and_timestamps_shift_epochs_and_keep_infinity() {
        assert_eq!(date(0).expect("date"), 10_957);
        assert_eq!(date(-1).expect("date"), 10_956);
        assert_eq!(date(i32::MAX).expect("date"), i32::MAX);
        assert_eq!(date(i32::MIN).expect("date"), -i32::MAX);
        assert_eq!(timestamp(0).expect("ts"), PG_EPOCH_MICROS);
        assert_eq!(timestamp(-1).expect("ts"), PG_EPOCH_MICROS - 1);
        assert_eq!(timestamp(i64::MAX).expect("ts"), i64::MAX);
        assert_eq!(timestamp(i64::MIN).expect("ts"), -i64::MAX);
    }

    #[test]
    fn the_copy_parser_carries_partial_tuples_across_chunks() {
        let columns = vec![
            ColumnSpec {
                name: "a".into(),
                kind: PgKind::Int4,
                type_name: String::new(),
                cast: None,
            },
            ColumnSpec {
                name: "b".into(),
                kind: PgKind::Text,
                type_name: String::new(),
                cast: None,
            },
        ];
        let schema = Arc::new(arrow::datatypes::Schema::new(
            columns.iter().map(ColumnSpec::field).collect::<Vec<_>>(),
        ));
        let mut stream = Vec::new();
        stream.extend_from_slice(COPY_SIGNATURE);
        stream.extend_from_slice(&0i32.to_be_bytes());
        stream.extend_from_slice(&0i32.to_be_bytes());
        for i in 0..3i32 {
            stream.extend_from_slice(&2i16.to_be_bytes());
            stream.extend_from_slice(&4i32.to_be_bytes());
            stream.extend_from_slice(&i.to_be_bytes());
            if i == 1 {
                stream.extend_from_slice(&(-1i32).to_be_bytes());
            } else {
                stream.extend_from_slice(&3i32.to_be_bytes());
                stream.extend_from_slice(b"abc");
            }
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        for chunk_size in [1, 3, 7, stream.len()] {
            let mut batch = BatchDecoder::new(&columns, schema.clone());
            let mut parser = CopyParser::default();
            for chunk in stream.chunks(chunk_size) {
                parser
                    .feed(bytes::Bytes::copy_from_slice(chunk), &mut batch)
                    .expect("feed");
            }
            assert!(parser.finished);
            let batch = batch.finish().expect("batch");
            assert_eq!(batch.num_rows(), 3);
            assert_eq!(batch.column(1).null_count(), 1);
        }
    }

    #[test]
    fn text_is_validated_once_per_batch_and_an_error_names_its_column() {
        use arrow::array::Array;

        let columns = vec![ColumnSpec {
            name: "label".into(),
            kind: PgKind::Text,
            type_name: String::new(),
            cast: None,
        }];
        let schema = Arc::new(arrow::datatypes::Schema::new(
            columns.iter().map(ColumnSpec::field).collect::<Vec<_>>(),
        ));
        let mut batch = BatchDecoder::new(&columns, schema);
        for value in ["plain", "café", "日本"] {
            batch.push(0, Some(value.as_bytes())).expect("push");
            batch.rows += 1;
        }
        batch.push(0, None).expect("null");
        batch.rows += 1;
        let first = batch.finish().expect("valid UTF-8");
        let labels = first.column(0).as_string::<i32>();
        assert_eq!(labels.value(1), "café");
        assert_eq!(labels.value(2), "日本");
        assert!(labels.is_null(3));

        batch.push(0, Some(b"ok")).expect("push");
        batch
            .push(0, Some(b"caf\xe9"))
            .expect("bytes are checked at the end of the batch");
        batch.rows += 2;
        let error = batch.finish().expect_err("not UTF-8");
        assert_eq!(error.error_type, "internal");
        assert_eq!(error.message, "column \"label\": text is not valid UTF-8");
    }
}
