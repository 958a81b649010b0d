//! SQLite extraction. SQLite is dynamically typed: a column's Arrow type
//! comes from its declared type's affinity when it has one (INTEGER, REAL,
//! TEXT, BLOB, and the BOOLEAN / DATE / TIME / DATETIME names sqlx knows);
//! expression columns and other declarations (NUMERIC, DECIMAL, JSON, …)
//! take the type of the values in the first batch. Values are coerced to
//! the column's type where that is lossless; a column with a value that
//! cannot be becomes text (or bytes, when a blob is not UTF-8) — decided
//! on the first batch, or by reading the statement again when a later
//! batch holds such a value.

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use ferry_shared::domain::ErrorKind;
use ferry_shared::domain::params::BoundQuery;
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::{AssertSqlSafe, Column, Executor, Row, SqlSafeStr, Statement, TypeInfo, ValueRef};

use crate::connectors::sql::{TimestampParam, bind_params};
use crate::extract::columns::{Builder, MICROS_PER_DAY};
use crate::extract::{
    Attempt, ExtractError, Output, Read, ReadPath, WideningRead, database_error, read_widening,
};

/// Refuses what a SQLite step may not do, before anything runs: `ATTACH`
/// or `DETACH` (an attached database could be any SQLite file the worker
/// can read, outside the connector's own) and more than one statement.
/// Words inside string literals, quoted names (`"…"`, `` `…` ``, `[…]`)
/// and comments do not count; a trailing `;` is fine.
fn check_statement(sql: &str) -> Result<(), ExtractError> {
    let bytes = sql.as_bytes();
    let refuse = |message: &str| Err(ExtractError::new(ErrorKind::InvalidQuery, message));
    let mut i = 0;
    let mut ended = false;
    while let Some(&c) = bytes.get(i) {
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0c => {
                i += 1;
                continue;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| i + p + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(bytes.len(), |p| i + 2 + p + 2);
                continue;
            }
            b';' => {
                ended = true;
                i += 1;
                continue;
            }
            _ => {}
        }
        if ended {
            return refuse("a SQLite step runs one statement: remove everything after the first `;`");
        }
        match c {
            b'\'' | b'"' | b'`' | b'[' => {
                let close = if c == b'[' { b']' } else { c };
                i += 1;
                // A doubled quote inside is an escaped one.
                while let Some(&b) = bytes.get(i) {
                    i += 1;
                    if b == close {
                        if close != b']' && bytes.get(i) == Some(&close) {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                }
            }
            c if is_word(c) && !c.is_ascii_digit() => {
                let start = i;
                while bytes.get(i).is_some_and(|&b| is_word(b)) {
                    i += 1;
                }
                let word = &bytes[start..i];
                if word.eq_ignore_ascii_case(b"attach") || word.eq_ignore_ascii_case(b"detach") {
                    return refuse(
                        "ATTACH and DETACH are not allowed in a step: it reads only its connector's database",
                    );
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// A timestamp parameter goes as SQLite's own datetime text,
/// `YYYY-MM-DD HH:MM:SS.SSS`, in UTC.
impl TimestampParam for Sqlite {
    type Timestamp = NaiveDateTime;

    fn timestamp(value: &chrono::DateTime<chrono::FixedOffset>) -> Self::Timestamp {
        value.naive_utc()
    }
}

pub(crate) async fn extract(
    pool: &SqlitePool,
    query: &BoundQuery,
    out: &mut Output<'_>,
) -> Result<ReadPath, ExtractError> {
    check_statement(&query.sql)?;
    // Columns widened because a value of a later batch did not fit their
    // type: the statement is read again with them (SQLite reads a local
    // file; the first read's upload is aborted, nothing was published).
    read_widening(pool, query, out).await
}

impl WideningRead for Sqlite {
    type Kind = Affinity;
    const PATH: ReadPath = ReadPath::Sqlite;

    /// One read of the statement on a pooled connection. The first batch
    /// settles the types of dynamic columns and widens any column one of its
    /// values does not fit; a value of a later batch that does not fit asks for
    /// another read.
    async fn read(attempt: Attempt<'_, '_, Sqlite>) -> Result<(), Read<Affinity>> {
        let (query, out, cancel) = (attempt.query, attempt.out, attempt.cancel);
        let mut conn = attempt.conn;
        cancel
            .run(super::check_read_only(&mut conn, &query.sql))
            .await?
            .map_err(database_error)?
            .map_err(|message| ExtractError::new(ErrorKind::InvalidQuery, message))?;
        let statement = cancel
            .run(conn.prepare(AssertSqlSafe(query.sql.clone()).into_sql_str()))
            .await?
            .map_err(database_error)?;
        let mut columns: Vec<(String, Affinity)> = statement
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), Affinity::declared(c.type_info().name())))
            .collect();
        for (index, affinity) in attempt.widened {
            if let Some(column) = columns.get_mut(*index) {
                column.1 = *affinity;
            }
        }

        let bound = bind_params(statement.query(), &query.params);
        let (batch_rows, batch_bytes) = (out.options().batch_rows.max(1), out.options().batch_bytes.max(1));
        let mut complete = false;
        let result = async {
            let mut stream = bound.fetch(&mut *conn);
            let mut rows: Vec<Vec<Value>> = Vec::new();
            let mut bytes = 0;
            let mut writer: Option<(BatchWriter, SchemaRef)> = None;
            loop {
                let next = cancel.next(&mut stream).await?;
                let done = match next {
                    Some(Ok(row)) => {
                        let values = read_row(&row, columns.len())?;
                        bytes += values.iter().map(Value::size).sum::<usize>();
                        rows.push(values);
                        false
                    }
                    Some(Err(error)) => {
                        complete = true;
                        return Err(database_error(error).into());
                    }
                    None => {
                        complete = true;
                        true
                    }
                };
                if rows.len() >= batch_rows || bytes >= batch_bytes || done {
                    let (arrays, schema) = match writer.as_mut() {
                        Some((writer, schema)) => (
                            writer
                                .build(&rows)
                                .map_err(|(index, affinity)| Read::Widen(index, affinity))?,
                            schema.clone(),
                        ),
                        None => {
                            // The first batch settles the types of dynamic
                            // columns, and widens those its values do not fit.
                            for (index, (_, affinity)) in columns.iter_mut().enumerate() {
                                if *affinity == Affinity::Dynamic {
                                    *affinity = Affinity::infer(rows.iter().map(|r| &r[index]));
                                }
                            }
                            let (first, arrays) = loop {
                                let mut first = BatchWriter::new(&columns);
                                match first.build(&rows) {
                                    Ok(arrays) => break (first, arrays),
                                    Err((index, affinity)) => columns[index].1 = affinity,
                                }
                            };
                            let fields = columns
                                .iter()
                                .map(|(name, a)| Field::new(name, a.data_type(), true))
                                .collect();
                            let schema = out.start(fields)?;
                            writer = Some((first, schema.clone()));
                            (arrays, schema)
                        }
                    };
                    if !rows.is_empty() {
                        let batch = RecordBatch::try_new(schema, arrays).map_err(|e| {
                            ExtractError::internal(format!("assembling a record batch failed: {e}"))
                        })?;
                        out.write(batch).await?;
                    }
                    rows.clear();
                    bytes = 0;
                }
                if done {
                    return Ok(());
                }
            }
        }
        .await;
        if !complete {
            // Stop the statement by closing the connection rather than handing
            // a half-read one back to the pool.
            drop(conn.detach());
        }
        result
    }
}

/// A value as SQLite stored it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    fn size(&self) -> usize {
        match self {
            Value::Null => 0,
            Value::Integer(_) | Value::Real(_) => 8,
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
        }
    }
}

fn read_row(row: &SqliteRow, columns: usize) -> Result<Vec<Value>, ExtractError> {
    (0..columns)
        .map(|i| {
            let raw = row.try_get_raw(i).map_err(database_error)?;
            if raw.is_null() {
                return Ok(Value::Null);
            }
            let storage = raw.type_info().name().to_owned();
            let value = match storage.as_str() {
                "INTEGER" | "BOOLEAN" => Value::Integer(row.try_get_unchecked(i).map_err(database_error)?),
                "REAL" => Value::Real(row.try_get_unchecked(i).map_err(database_error)?),
                "BLOB" => Value::Blob(row.try_get_unchecked(i).map_err(database_error)?),
                _ => Value::Text(row.try_get_unchecked(i).map_err(database_error)?),
            };
            Ok(value)
        })
        .collect()
}

/// A column's type: declared, or to be inferred from the first batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Affinity {
    Integer,
    Real,
    Text,
    Blob,
    Boolean,
    Date,
    Time,
    Datetime,
    Dynamic,
}

impl Affinity {
    /// From sqlx's reading of the declared type (`NULL` when there is none
    /// or sqlx does not know it).
    fn declared(name: &str) -> Affinity {
        match name {
            "INTEGER" => Affinity::Integer,
            "REAL" => Affinity::Real,
            "TEXT" => Affinity::Text,
            "BLOB" => Affinity::Blob,
            "BOOLEAN" => Affinity::Boolean,
            "DATE" => Affinity::Date,
            "TIME" => Affinity::Time,
            "DATETIME" => Affinity::Datetime,
            _ => Affinity::Dynamic,
        }
    }

    /// All integers → Integer; numbers → Real; all text → Text; all blobs →
    /// Blob; a mix, or nothing but nulls → Text.
    fn infer<'v>(values: impl Iterator<Item = &'v Value>) -> Affinity {
        let (mut ints, mut reals, mut texts, mut blobs) = (0, 0, 0, 0);
        for value in values {
            match value {
                Value::Null => {}
                Value::Integer(_) => ints += 1,
                Value::Real(_) => reals += 1,
                Value::Text(_) => texts += 1,
                Value::Blob(_) => blobs += 1,
            }
        }
        match (ints, reals, texts, blobs) {
            (i, 0, 0, 0) if i > 0 => Affinity::Integer,
            (_, r, 0, 0) if r > 0 => Affinity::Real,
            (0, 0, 0, b) if b > 0 => Affinity::Blob,
            _ => Affinity::Text,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            Affinity::Integer => DataType::Int64,
            Affinity::Real => DataType::Float64,
            Affinity::Text | Affinity::Dynamic => DataType::Utf8,
            Affinity::Blob => DataType::Binary,
            Affinity::Boolean => DataType::Boolean,
            Affinity::Date => DataType::Date32,
            Affinity::Time => DataType::Time64(TimeUnit::Microsecond),
            Affinity::Datetime => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
}

struct BatchWriter {
    columns: Vec<(String, Builder)>,
}

impl BatchWriter {
    fn new(columns: &[(String, Affinity)]) -> Self {
        let columns = columns
            .iter()
            .filter_map(|(name, affinity)| Some((name.clone(), Builder::new(&affinity.data_type())?)))
            .collect();
        Self { columns }
    }

    /// The rows' arrays, or the column a value does not fit and the type
    /// to widen it to: text, or bytes for a blob that is not UTF-8 text
    /// (bytes hold every value).
    fn build(&mut self, rows: &[Vec<Value>]) -> Result<Vec<ArrayRef>, (usize, Affinity)> {
        let mut arrays = Vec::with_capacity(self.columns.len());
        for (index, (name, builder)) in self.columns.iter_mut().enumerate() {
            for row in rows {
                if let Err(message) = append(builder, &row[index]) {
                    tracing::debug!(column = %name, %message, "widening a SQLite column");
                    let widened = if matches!(builder, Builder::Utf8(_)) {
                        Affinity::Blob
                    } else {
                        Affinity::Text
                    };
                    return Err((index, widened));
                }
            }
            arrays.push(builder.finish());
        }
        Ok(arrays)
    }
}

/// Appends `value` coerced to the builder's type, or says why it cannot be.
fn append(builder: &mut Builder, value: &Value) -> Result<(), String> {
    if *value == Value::Null {
        builder.append_null();
        return Ok(());
    }
    let mismatch = |what: &str| format!("the value {} is not {what}", describe(value));
    match builder {
        Builder::Int64(b) => b.append_value(match value {
            Value::Integer(i) => *i,
            Value::Real(r) if r.fract() == 0.0 && r.abs() < 9.0e15 => *r as i64,
            Value::Text(t) => t.trim().parse().map_err(|_| mismatch("an integer"))?,
            _ => return Err(mismatch("an integer")),
        }),
        Builder::Float64(b) => b.append_value(match value {
            Value::Integer(i) => *i as f64,
            Value::Real(r) => *r,
            Value::Text(t) => t.trim().parse().map_err(|_| mismatch("a number"))?,
            _ => return Err(mismatch("a number")),
        }),
        Builder::Boolean(b) => b.append_value(match value {
            Value::Integer(i) => *i != 0,
            Value::Real(r) => *r != 0.0,
            Value::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "t" | "yes" => true,
                "0" | "false" | "f" | "no" => false,
                _ => return Err(mismatch("a boolean")),
            },
            Value::Blob(_) | Value::Null => return Err(mismatch("a boolean")),
        }),
        Builder::Utf8(b) => match value {
            Value::Text(t) => b.append_value(t),
            Value::Integer(i) => b.append_value(i.to_string()),
            Value::Real(r) => b.append_value(real_text(*r)),
            Value::Blob(bytes) => {
                b.append_value(std::str::from_utf8(bytes).map_err(|_| mismatch("UTF-8 text"))?)
            }
            Value::Null => b.append_null(),
        },
        // Bytes hold every value: numbers as their text.
        Builder::Binary(b) => match value {
            Value::Blob(bytes) => b.append_value(bytes),
            Value::Text(t) => b.append_value(t.as_bytes()),
            Value::Integer(i) => b.append_value(i.to_string()),
            Value::Real(r) => b.append_value(real_text(*r)),
            Value::Null => b.append_null(),
        },
        Builder::Date32(b) => {
            let micros = datetime_micros(value).ok_or_else(|| mismatch("a date"))?;
            b.append_value(i32::try_from(micros.div_euclid(MICROS_PER_DAY)).map_err(|_| mismatch("a date"))?)
        }
        Builder::Timestamp(b) => {
            b.append_value(datetime_micros(value).ok_or_else(|| mismatch("a datetime"))?)
        }
        Builder::Time64(b) => b.append_value(match value {
            Value::Text(t) => time_micros(t).ok_or_else(|| mismatch("a time"))?,
            _ => return Err(mismatch("a time")),
        }),
        _ => return Err("internal type mismatch".into()),
    }
    Ok(())
}

/// A real as text: the shortest form that reads back as the same number,
/// with a `.0` on integral values as SQLite writes them (`3.0`, `2.5`).
fn real_text(r: f64) -> String {
    format!("{r:?}")
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => r.to_string(),
        Value::Text(t) => format!("'{}'", t.chars().take(40).collect::<String>()),
        Value::Blob(b) => format!("a {}-byte blob", b.len()),
    }
}

/// Microseconds since 1970 of a date or datetime: ISO text (`YYYY-MM-DD`,
/// `YYYY-MM-DD HH:MM[:SS[.fff]]`, `T` separator, optional `Z`/offset,
/// converted to UTC), an integer (Unix seconds) or a real (Julian day), as
/// SQLite's date functions read them.
fn datetime_micros(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(seconds) => seconds.checked_mul(1_000_000),
        Value::Real(julian) => {
            let micros = (julian - 2_440_587.5) * 86_400_000_000.0;
            micros.is_finite().then(|| micros.round() as i64)
        }
        Value::Text(text) => {
            let text = text.trim();
            if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                return Some(date.and_time(NaiveTime::MIN).and_utc().timestamp_micros());
            }
            for format in [
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M",
                "%Y-%m-%dT%H:%M",
            ] {
                if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
                    return Some(naive.and_utc().timestamp_micros());
                }
            }
            for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
                if let Ok(zoned) = DateTime::parse_from_str(text, format) {
                    return Some(zoned.timestamp_micros());
                }
            }
            DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|zoned| zoned.timestamp_micros())
        }
        Value::Blob(_) | Value::Null => None,
    }
}

fn time_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    ["%H:%M:%S%.f", "%H:%M"]
        .iter()
        .find_map(|format| NaiveTime::parse_from_str(text, format).ok())
        .map(|time| (time - NaiveTime::MIN).num_microseconds().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_columns_take_the_first_batch_types() {
        let ints = [Value::Integer(1), Value::Null, Value::Integer(3)];
        assert_eq!(Affinity::infer(ints.iter()), Affinity::Integer);
        let numbers = [Value::Integer(1), Value::Real(2.5)];
        assert_eq!(Affinity::infer(numbers.iter()), Affinity::Real);
        let mixed = [Value::Integer(1), Value::Text("x".into())];
        assert_eq!(Affinity::infer(mixed.iter()), Affinity::Text);
        assert_eq!(Affinity::infer([Value::Null].iter()), Affinity::Text);
        assert_eq!(Affinity::declared("NULL"), Affinity::Dynamic);
    }

    #[test]
    fn sqlite_dates_read_as_its_date_functions_do() {
        assert_eq!(
            datetime_micros(&Value::Text("1970-01-02".into())),
            Some(MICROS_PER_DAY)
        );
        assert_eq!(
            datetime_micros(&Value::Text("1970-01-01 00:00:01.5".into())),
            Some(1_500_000)
        );
        assert_eq!(
            datetime_micros(&Value::Text("1970-01-01T01:00:00+01:00".into())),
            Some(0)
        );
        assert_eq!(datetime_micros(&Value::Integer(2)), Some(2_000_000));
        assert_eq!(datetime_micros(&Value::Real(2_440_588.5)), Some(MICROS_PER_DAY));
        assert_eq!(time_micros("01:00:00.25"), Some(3_600_250_000));
    }

    #[test]
    fn values_that_do_not_fit_their_column_are_errors() {
        let mut builder = Builder::new(&DataType::Int64).expect("builder");
        assert!(append(&mut builder, &Value::Real(2.0)).is_ok());
        assert!(append(&mut builder, &Value::Real(2.5)).is_err());
        assert!(append(&mut builder, &Value::Text("x".into())).is_err());
    }
}
