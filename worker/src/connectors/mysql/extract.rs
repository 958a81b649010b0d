//! MySQL and MariaDB extraction: a prepared statement with bound
//! parameters, rows streamed in the binary protocol and decoded by the
//! result's column types.
//!
//! The protocol's column definitions do not carry a decimal's scale nor a
//! BIT's width, and mark text with a binary collation like a blob; for
//! columns that come straight from a table, `information_schema.COLUMNS`
//! settles those. An abandoned query is stopped with `KILL QUERY` from
//! another connection and its connection closed.

use std::collections::HashMap;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use sqlx::mysql::{MySql, MySqlConnection, MySqlPool, MySqlRow};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Column, Connection, Executor, Row, SqlSafeStr, Statement, TypeInfo};

use crate::connectors::sql::{TimestampParam, bind_params};
use crate::extract::columns::{
    Builder, MAX_DECIMAL128_PRECISION, MICROS_PER_DAY, UNCONSTRAINED_DECIMAL, parse_decimal,
};
use crate::extract::{Attempt, ExtractError, Read, ReadPath, WideningRead, database_error};

const KILL_TIMEOUT: Duration = Duration::from_secs(5);

impl WideningRead for MySql {
    type Kind = MyKind;
    const PATH: ReadPath = ReadPath::MySql;

    async fn read(attempt: Attempt<'_, '_, MySql>) -> Result<(), Read<MyKind>> {
        let Attempt {
            pool,
            query,
            mut conn,
            out,
            cancel,
            widened,
        } = attempt;
        let id: u64 = cancel
            .run(sqlx::query_scalar("SELECT CONNECTION_ID()").fetch_one(&mut *conn))
            .await?
            .map_err(database_error)?;
        let statement = cancel
            .run(conn.prepare(AssertSqlSafe(query.sql.clone()).into_sql_str()))
            .await?
            .map_err(database_error)?;
        let catalog = cancel.run(catalog(&mut conn, statement.columns())).await?;
        let mut columns: Vec<(String, MyKind)> = statement
            .columns()
            .iter()
            .map(|column| {
                let origin = column.origin();
                let info = origin
                    .table_column()
                    .and_then(|t| catalog.get(&(t.table.to_string(), t.name.to_string())));
                (
                    column.name().to_owned(),
                    MyKind::resolve(column.type_info().name(), info),
                )
            })
            .collect();
        for (index, kind) in widened {
            if let Some(column) = columns.get_mut(*index) {
                column.1 = match kind {
                    // The catalog knows a table column's fractional digits.
                    MyKind::Duration { fsp: None } => MyKind::Duration {
                        fsp: statement.columns()[*index]
                            .origin()
                            .table_column()
                            .and_then(|t| catalog.get(&(t.table.to_string(), t.name.to_string())))
                            .and_then(|i| i.fsp)
                            .and_then(|f| u8::try_from(f).ok()),
                    },
                    other => other.clone(),
                };
            }
        }
        let schema = out.start(
            columns
                .iter()
                .map(|(name, kind)| Field::new(name, kind.data_type(), true))
                .collect(),
        )?;

        let bound = bind_params(statement.query(), &query.params);
        let mut clean = false;
        let result = async {
            let mut stream = bound.fetch(&mut *conn);
            let mut batch = RowBatch::new(&columns, schema.clone());
            let (batch_rows, batch_bytes) =
                (out.options().batch_rows.max(1), out.options().batch_bytes.max(1));
            loop {
                match cancel.next(&mut stream).await? {
                    Some(Ok(row)) => {
                        batch.push(&row)?;
                        if batch.rows >= batch_rows || batch.bytes >= batch_bytes {
                            out.write(batch.finish()?).await?;
                        }
                    }
                    Some(Err(error)) => {
                        clean = matches!(error, sqlx::Error::Database(_));
                        return Err(database_error(error).into());
                    }
                    None => {
                        clean = true;
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
        .await;
        if !clean {
            kill(pool, conn, id).await;
        }
        result
    }
}

/// A timestamp parameter goes as UTC (`TIMESTAMP` values are converted
/// from and to the session's time zone).
impl TimestampParam for MySql {
    type Timestamp = chrono::DateTime<chrono::Utc>;

    fn timestamp(value: &chrono::DateTime<chrono::FixedOffset>) -> Self::Timestamp {
        value.to_utc()
    }
}

/// `KILL QUERY id` from another connection, then the abandoned connection
/// is closed instead of going back to the pool.
async fn kill(pool: &MySqlPool, conn: PoolConnection<MySql>, id: u64) {
    let raw = conn.detach();
    let statement = format!("KILL QUERY {id}");
    let run = async {
        match pool.try_acquire() {
            Some(mut other) => other
                .execute(sqlx::raw_sql(AssertSqlSafe(statement.as_str())))
                .await
                .map(|_| ()),
            None => {
                let mut other = MySqlConnection::connect_with(&pool.connect_options()).await?;
                other
                    .execute(sqlx::raw_sql(AssertSqlSafe(statement.as_str())))
                    .await?;
                other.close().await
            }
        }
    };
    match tokio::time::timeout(KILL_TIMEOUT, run).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "stopping an abandoned query failed"),
        Err(_) => tracing::warn!("stopping an abandoned query timed out"),
    }
    let _ = tokio::time::timeout(KILL_TIMEOUT, raw.close_hard()).await;
}

/// What `information_schema.COLUMNS` says about a table column.
#[derive(Debug, Clone)]
struct ColumnInfo {
    data_type: String,
    precision: Option<u64>,
    scale: Option<u64>,
    charset: Option<String>,
    column_type: String,
    /// Fractional-second digits of TIME, DATETIME and TIMESTAMP.
    fsp: Option<u64>,
}

/// Catalog entries of the result columns that come from tables, keyed by
/// (`schema.table`, column). Best effort: without it the protocol's types
/// are used.
async fn catalog(
    conn: &mut MySqlConnection,
    columns: &[sqlx::mysql::MySqlColumn],
) -> HashMap<(String, String), ColumnInfo> {
    let mut tables: Vec<(String, String)> = columns
        .iter()
        .filter_map(|c| c.origin().table_column().map(|t| t.table.to_string()))
        .filter_map(|t| t.split_once('.').map(|(s, t)| (s.to_owned(), t.to_owned())))
        .collect();
    tables.sort();
    tables.dedup();
    if tables.is_empty() {
        return HashMap::new();
    }
    let placeholders = vec!["(?, ?)"; tables.len()].join(", ");
    let sql = format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, \
         CHARACTER_SET_NAME, COLUMN_TYPE, DATETIME_PRECISION FROM information_schema.COLUMNS \
         WHERE (TABLE_SCHEMA, TABLE_NAME) IN ({placeholders})"
    );
    let mut select = sqlx::query(AssertSqlSafe(sql));
    for (schema, table) in &tables {
        select = select.bind(schema.as_str()).bind(table.as_str());
    }
    let rows = match select.fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(error) => {
            tracing::debug!(%error, "reading information_schema failed; using protocol types");
            return HashMap::new();
        }
    };
    let text = |row: &MySqlRow, i: usize| -> Option<String> {
        row.try_get::<Option<String>, _>(i).ok().flatten().or_else(|| {
            row.try_get::<Option<Vec<u8>>, _>(i)
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into())
        })
    };
    let number = |row: &MySqlRow, i: usize| -> Option<u64> {
        row.try_get::<Option<u64>, _>(i).ok().flatten().or_else(|| {
            row.try_get::<Option<i64>, _>(i)
                .ok()
                .flatten()
                .and_then(|v| u64::try_from(v).ok())
        })
    };
    rows.iter()
        .filter_map(|row| {
            let key = (format!("{}.{}", text(row, 0)?, text(row, 1)?), text(row, 2)?);
            let info = ColumnInfo {
                data_type: text(row, 3)?.to_ascii_lowercase(),
                precision: number(row, 4),
                scale: number(row, 5),
                charset: text(row, 6),
                column_type: text(row, 7).unwrap_or_default().to_ascii_lowercase(),
                fsp: number(row, 8),
            };
            Some((key, info))
        })
        .collect()
}

/// How a MySQL column is decoded, and into which Arrow type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MyKind {
    /// TINYINT(1) / BOOLEAN and BIT(1).
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// DECIMAL wider than 38 digits → exact text.
    DecimalText,
    Text,
    Bytes,
    Date,
    /// DATETIME (no zone) or TIMESTAMP (UTC: sqlx sets the session zone to
    /// +00:00).
    Timestamp {
        utc: bool,
    },
    Time,
    /// BIT(n > 1) → UInt64.
    Bits,
    /// GEOMETRY, POINT, POLYGON… → Binary WKB (the server's value is a
    /// 4-byte SRID, then WKB).
    Geometry,
    /// A TIME column holding a duration (outside 00:00:00–23:59:59) →
    /// Utf8 `[-]H:MM:SS[.ffffff]` as the server prints it; `fsp` digits of
    /// fraction when known.
    Duration {
        fsp: Option<u8>,
    },
    /// A column that is NULL by construction (`SELECT NULL`).
    Null,
}

impl MyKind {
    /// The mapping of `design.md`. Types without one (none known today)
    /// are read as text, and as bytes if they are not UTF-8.
    fn resolve(name: &str, info: Option<&ColumnInfo>) -> MyKind {
        match name {
            "BOOLEAN" => MyKind::Bool,
            "TINYINT" => MyKind::Int8,
            "SMALLINT" | "YEAR" => MyKind::Int16,
            "MEDIUMINT" | "INT" => MyKind::Int32,
            "BIGINT" => MyKind::Int64,
            "TINYINT UNSIGNED" => MyKind::UInt8,
            "SMALLINT UNSIGNED" => MyKind::UInt16,
            "MEDIUMINT UNSIGNED" | "INT UNSIGNED" => MyKind::UInt32,
            "BIGINT UNSIGNED" => MyKind::UInt64,
            "FLOAT" => MyKind::Float32,
            "DOUBLE" => MyKind::Float64,
            "DECIMAL" => match info.and_then(|i| Some((i.precision?, i.scale?))) {
                Some((precision, scale)) => match (u8::try_from(precision), i8::try_from(scale)) {
                    (Ok(p), Ok(s)) if p <= MAX_DECIMAL128_PRECISION && p > 0 => MyKind::Decimal {
                        precision: p,
                        scale: s,
                    },
                    _ => MyKind::DecimalText,
                },
                None => {
                    let (precision, scale) = UNCONSTRAINED_DECIMAL;
                    MyKind::Decimal { precision, scale }
                }
            },
            "DATE" => MyKind::Date,
            "DATETIME" => MyKind::Timestamp { utc: false },
            "TIMESTAMP" => MyKind::Timestamp { utc: true },
            "TIME" => MyKind::Time,
            "GEOMETRY" => MyKind::Geometry,
            "BIT" => match info.map(|i| i.column_type.as_str()) {
                Some("bit(1)") => MyKind::Bool,
                _ => MyKind::Bits,
            },
            "NULL" => MyKind::Null,
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET"
            | "JSON" => MyKind::Text,
            // Binary-collated text is flagged like a blob; the catalog tells.
            "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                match info.and_then(|i| i.charset.as_deref()) {
                    Some(charset) if charset != "binary" => MyKind::Text,
                    _ if info.is_some_and(|i| i.data_type == "json") => MyKind::Text,
                    _ => MyKind::Bytes,
                }
            }
            _ => MyKind::Text,
        }
    }

    /// What a column becomes when one of its values does not fit.
    fn widened(&self) -> Option<MyKind> {
        match self {
            MyKind::Time => Some(MyKind::Duration { fsp: None }),
            MyKind::Text => Some(MyKind::Bytes),
            MyKind::Decimal { .. } => Some(MyKind::DecimalText),
            _ => None,
        }
    }

    fn data_type(&self) -> DataType {
        match self {
            MyKind::Bool => DataType::Boolean,
            MyKind::Int8 => DataType::Int8,
            MyKind::Int16 => DataType::Int16,
            MyKind::Int32 => DataType::Int32,
            MyKind::Int64 => DataType::Int64,
            MyKind::UInt8 => DataType::UInt8,
            MyKind::UInt16 => DataType::UInt16,
            MyKind::UInt32 => DataType::UInt32,
            MyKind::UInt64 | MyKind::Bits => DataType::UInt64,
            MyKind::Float32 => DataType::Float32,
            MyKind::Float64 => DataType::Float64,
            MyKind::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            MyKind::DecimalText | MyKind::Text | MyKind::Null => DataType::Utf8,
            MyKind::Bytes | MyKind::Geometry => DataType::Binary,
            MyKind::Duration { .. } => DataType::Utf8,
            MyKind::Date => DataType::Date32,
            MyKind::Timestamp { utc } => {
                DataType::Timestamp(TimeUnit::Microsecond, utc.then(|| std::sync::Arc::from("UTC")))
            }
            MyKind::Time => DataType::Time64(TimeUnit::Microsecond),
        }
    }
}

struct RowBatch {
    schema: SchemaRef,
    columns: Vec<(String, MyKind, Builder)>,
    rows: usize,
    bytes: usize,
}

impl RowBatch {
    fn new(columns: &[(String, MyKind)], schema: SchemaRef) -> Self {
        let columns = columns
            .iter()
            .filter_map(|(name, kind)| Some((name.clone(), kind.clone(), Builder::new(&kind.data_type())?)))
            .collect();
        Self {
            schema,
            columns,
            rows: 0,
            bytes: 0,
        }
    }

    fn push(&mut self, row: &MySqlRow) -> Result<(), Read<MyKind>> {
        for (i, (name, kind, builder)) in self.columns.iter_mut().enumerate() {
            let bytes = decode(row, i, kind, builder).map_err(|e| {
                if e.widen
                    && let Some(widened) = kind.widened()
                {
                    return Read::Widen(i, widened);
                }
                let message = format!("column \"{name}\": {}", e.message);
                Read::Failed(if e.unsupported {
                    ExtractError::unsupported(message)
                } else {
                    ExtractError::internal(message)
                })
            })?;
            self.bytes += bytes;
        }
        self.rows += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<RecordBatch, ExtractError> {
        let arrays = self
            .columns
            .iter_mut()
            .map(|(_, _, builder)| builder.finish())
            .collect();
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| ExtractError::internal(format!("assembling a record batch failed: {e}")))
    }
}

struct DecodeError {
    message: String,
    unsupported: bool,
    /// The value does not fit the column's type: widen the column.
    widen: bool,
}

fn malformed(error: impl std::fmt::Display) -> DecodeError {
    DecodeError {
        message: error.to_string(),
        unsupported: false,
        widen: false,
    }
}

/// A value the column's type cannot hold; the column is widened.
fn unrepresentable(message: impl Into<String>) -> DecodeError {
    DecodeError {
        message: message.into(),
        unsupported: true,
        widen: true,
    }
}

/// Decodes column `i` of `row` into `builder`; returns the value's size.
fn decode(row: &MySqlRow, i: usize, kind: &MyKind, builder: &mut Builder) -> Result<usize, DecodeError> {
    macro_rules! get {
        ($t:ty) => {
            row.try_get_unchecked::<Option<$t>, _>(i)
                .map_err(malformed)?
        };
    }
    macro_rules! int {
        ($b:expr, $t:ty, $wide:ty) => {{
            match get!($wide) {
                Some(v) => $b.append_value(<$t>::try_from(v).map_err(malformed)?),
                None => $b.append_null(),
            }
            std::mem::size_of::<$t>()
        }};
    }
    let size = match (kind, builder) {
        (MyKind::Bool, Builder::Boolean(b)) => {
            match get!(u64) {
                Some(v) => b.append_value(v != 0),
                None => b.append_null(),
            }
            1
        }
        (MyKind::Int8, Builder::Int8(b)) => int!(b, i8, i64),
        (MyKind::Int16, Builder::Int16(b)) => int!(b, i16, i64),
        (MyKind::Int32, Builder::Int32(b)) => int!(b, i32, i64),
        (MyKind::Int64, Builder::Int64(b)) => int!(b, i64, i64),
        (MyKind::UInt8, Builder::UInt8(b)) => int!(b, u8, u64),
        (MyKind::UInt16, Builder::UInt16(b)) => int!(b, u16, u64),
        (MyKind::UInt32, Builder::UInt32(b)) => int!(b, u32, u64),
        (MyKind::UInt64 | MyKind::Bits, Builder::UInt64(b)) => int!(b, u64, u64),
        (MyKind::Float32, Builder::Float32(b)) => {
            b.append_option(get!(f32));
            4
        }
        (MyKind::Float64, Builder::Float64(b)) => {
            b.append_option(get!(f64));
            8
        }
        (
            MyKind::Decimal { .. },
            Builder::Decimal {
                builder,
                precision,
                scale,
            },
        ) => match get!(&str) {
            Some(text) => {
                builder.append_value(parse_decimal(text, *precision, *scale).map_err(unrepresentable)?);
                text.len()
            }
            None => {
                builder.append_null();
                0
            }
        },
        (MyKind::DecimalText | MyKind::Text, Builder::Utf8(b)) => match get!(&[u8]) {
            Some(bytes) => {
                b.append_value(
                    std::str::from_utf8(bytes).map_err(|_| unrepresentable("text is not valid UTF-8"))?,
                );
                bytes.len()
            }
            None => {
                b.append_null();
                0
            }
        },
        (MyKind::Null, Builder::Utf8(b)) => {
            b.append_null();
            0
        }
        (MyKind::Bytes, Builder::Binary(b)) => match get!(&[u8]) {
            Some(bytes) => {
                b.append_value(bytes);
                bytes.len()
            }
            None => {
                b.append_null();
                0
            }
        },
        (MyKind::Date, Builder::Date32(b)) => {
            b.append_option(
                get!(&[u8])
                    .map(parse_datetime)
                    .transpose()?
                    .flatten()
                    .map(|(days, _)| days),
            );
            4
        }
        (MyKind::Timestamp { .. }, Builder::Timestamp(b)) => {
            let value = get!(&[u8]).map(parse_datetime).transpose()?.flatten();
            b.append_option(value.map(|(days, micros)| i64::from(days) * MICROS_PER_DAY + micros));
            8
        }
        (MyKind::Time, Builder::Time64(b)) => {
            b.append_option(get!(&[u8]).map(parse_time).transpose()?);
            8
        }
        (MyKind::Duration { fsp }, Builder::Utf8(b)) => {
            b.append_option(get!(&[u8]).map(|v| duration_text(v, *fsp)).transpose()?);
            16
        }
        (MyKind::Geometry, Builder::Binary(b)) => match get!(&[u8]) {
            // A 4-byte SRID, then the WKB.
            Some(value) => {
                let wkb = value.get(4..).ok_or_else(|| malformed("short geometry value"))?;
                b.append_value(wkb);
                value.len()
            }
            None => {
                b.append_null();
                0
            }
        },
        _ => return Err(malformed("internal type mismatch")),
    };
    Ok(size)
}

/// A binary DATE/DATETIME/TIMESTAMP (length byte, year LE, month, day,
/// hour, minute, second, microseconds LE) as (days since 1970, microseconds
/// into the day). Zero and otherwise invalid dates (`0000-00-00`,
/// `2024-02-00`) become null (policy).
fn parse_datetime(v: &[u8]) -> Result<Option<(i32, i64)>, DecodeError> {
    let (&len, rest) = v.split_first().ok_or_else(|| malformed("empty date value"))?;
    let len = usize::from(len);
    if len == 0 {
        return Ok(None);
    }
    let b = rest
        .get(..len)
        .filter(|_| len >= 4)
        .ok_or_else(|| malformed("short date value"))?;
    let year = i32::from(u16::from_le_bytes([b[0], b[1]]));
    let (month, day) = (u32::from(b[2]), u32::from(b[3]));
    let Some(date) = NaiveDate::from_ymd_opt(year, month, day) else {
        return Ok(None);
    };
    let days = date.signed_duration_since(NaiveDate::default()).num_days();
    let days = i32::try_from(days).map_err(malformed)?;
    let mut micros = 0i64;
    if len >= 7 {
        micros = (i64::from(b[4]) * 3600 + i64::from(b[5]) * 60 + i64::from(b[6])) * 1_000_000;
    }
    if len >= 11 {
        micros += i64::from(u32::from_le_bytes([b[7], b[8], b[9], b[10]]));
    }
    Ok(Some((days, micros)))
}

/// A binary TIME as the server prints it: `[-]H:MM:SS` (hours at least
/// two digits), then `fsp` fractional digits, or, when `fsp` is unknown,
/// six when there is a fraction.
fn duration_text(v: &[u8], fsp: Option<u8>) -> Result<String, DecodeError> {
    let (&len, rest) = v.split_first().ok_or_else(|| malformed("empty time value"))?;
    let len = usize::from(len);
    let b = rest.get(..len).ok_or_else(|| malformed("short time value"))?;
    if len == 0 {
        return Ok(match fsp {
            Some(digits) if digits > 0 => format!("00:00:00.{}", "0".repeat(usize::from(digits))),
            _ => "00:00:00".to_owned(),
        });
    }
    if len < 8 {
        return Err(malformed("short time value"));
    }
    let negative = b[0] != 0;
    let days = u64::from(u32::from_le_bytes([b[1], b[2], b[3], b[4]]));
    let hours = days * 24 + u64::from(b[5]);
    let micros = if len >= 12 {
        u32::from_le_bytes([b[8], b[9], b[10], b[11]])
    } else {
        0
    };
    let sign = if negative { "-" } else { "" };
    let mut text = format!("{sign}{hours:02}:{:02}:{:02}", b[6], b[7]);
    match fsp {
        Some(digits) if digits > 0 => {
            let fraction = format!("{micros:06}");
            text.push('.');
            text.push_str(&fraction[..usize::from(digits.min(6))]);
        }
        None if micros > 0 => text.push_str(&format!(".{micros:06}")),
        _ => {}
    }
    Ok(text)
}

/// A binary TIME (length byte, negative flag, days LE, hour, minute,
/// second, microseconds LE) as microseconds since midnight. TIME also holds
/// durations (-838:59:59 … 838:59:59); those outside a day are errors.
fn parse_time(v: &[u8]) -> Result<i64, DecodeError> {
    let (&len, rest) = v.split_first().ok_or_else(|| malformed("empty time value"))?;
    let len = usize::from(len);
    if len == 0 {
        return Ok(0);
    }
    let b = rest
        .get(..len)
        .filter(|_| len >= 8)
        .ok_or_else(|| malformed("short time value"))?;
    let negative = b[0] != 0;
    let days = i64::from(u32::from_le_bytes([b[1], b[2], b[3], b[4]]));
    let mut micros =
        ((days * 24 + i64::from(b[5])) * 3600 + i64::from(b[6]) * 60 + i64::from(b[7])) * 1_000_000;
    if len >= 12 {
        micros += i64::from(u32::from_le_bytes([b[8], b[9], b[10], b[11]]));
    }
    if negative && micros != 0 || micros >= MICROS_PER_DAY {
        return Err(unrepresentable(
            "a TIME value outside 00:00:00–23:59:59 is a duration, not a time of day",
        ));
    }
    Ok(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_dates_times_and_zero_dates_decode() {
        assert_eq!(
            parse_datetime(&[4, 0xb2, 0x07, 1, 1]).ok().flatten(),
            Some((0, 0))
        );
        let dt = [11, 0xd0, 0x07, 1, 1, 1, 2, 3, 0x40, 0x42, 0x0f, 0];
        assert_eq!(
            parse_datetime(&dt).ok().flatten(),
            Some((10_957, 3_723_000_000 + 1_000_000))
        );
        assert_eq!(parse_datetime(&[0]).ok().flatten(), None);
        assert_eq!(parse_datetime(&[4, 0xe8, 0x07, 2, 0]).ok().flatten(), None);
        assert_eq!(parse_time(&[8, 0, 0, 0, 0, 0, 1, 2, 3]).ok(), Some(3_723_000_000));
        assert!(parse_time(&[8, 1, 0, 0, 0, 0, 1, 2, 3]).is_err());
        assert!(parse_time(&[8, 0, 1, 0, 0, 0, 1, 2, 3]).is_err());
        assert_eq!(
            duration_text(&[8, 1, 34, 0, 0, 0, 22, 59, 59], None)
                .ok()
                .as_deref(),
            Some("-838:59:59")
        );
        assert_eq!(
            duration_text(&[12, 0, 1, 0, 0, 0, 1, 2, 3, 0x20, 0xa1, 0x07, 0], Some(3))
                .ok()
                .as_deref(),
            Some("25:02:03.500")
        );
        assert_eq!(duration_text(&[0], None).ok().as_deref(), Some("00:00:00"));
    }

    #[test]
    fn protocol_types_and_the_catalog_give_arrow_types() {
        let info =
            |data_type: &str, column_type: &str, charset: Option<&str>, p: Option<u64>, s: Option<u64>| {
                ColumnInfo {
                    data_type: data_type.into(),
                    precision: p,
                    scale: s,
                    charset: charset.map(Into::into),
                    column_type: column_type.into(),
                    fsp: None,
                }
            };
        assert_eq!(
            MyKind::resolve(
                "DECIMAL",
                Some(&info("decimal", "decimal(12,3)", None, Some(12), Some(3)))
            ),
            MyKind::Decimal {
                precision: 12,
                scale: 3
            }
        );
        assert_eq!(
            MyKind::resolve("DECIMAL", None),
            MyKind::Decimal {
                precision: 38,
                scale: 10
            }
        );
        assert_eq!(
            MyKind::resolve(
                "DECIMAL",
                Some(&info("decimal", "decimal(65,30)", None, Some(65), Some(30)))
            ),
            MyKind::DecimalText
        );
        assert_eq!(
            MyKind::resolve("BIT", Some(&info("bit", "bit(1)", None, None, None))),
            MyKind::Bool
        );
        assert_eq!(MyKind::resolve("BIT", None), MyKind::Bits);
        assert_eq!(
            MyKind::resolve(
                "LONGBLOB",
                Some(&info("longtext", "longtext", Some("utf8mb4"), None, None))
            ),
            MyKind::Text
        );
        assert_eq!(MyKind::resolve("LONGBLOB", None), MyKind::Bytes);
        assert_eq!(MyKind::resolve("GEOMETRY", None), MyKind::Geometry);
        assert_eq!(MyKind::resolve("SOMETHING NEW", None), MyKind::Text);
    }
}
