//! The one place that knows there are two databases: the connection pool
//! and transaction of either backend, the dialect fragments their SQL
//! differs in, and [`Sql`], a statement with its bind values that runs on
//! either.
//!
//! The query code of the other modules is ordinary, non-generic code: it
//! builds a [`Sql`] from a fixed statement (sqlx accepts `$1`-style
//! placeholders on both backends), binds values with the same `.bind(…)`
//! calls as sqlx, and runs it on a [`Pool`] or a [`Tx`]. Only here does a
//! `match` pick the backend's sqlx types.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::{PgArguments, PgPool, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteArguments, SqlitePool, SqliteRow};
use sqlx::types::Json;
use sqlx::{Arguments, AssertSqlSafe, Database, Encode, FromRow, SqlSafeStr, SqlStr, Transaction, Type};

/// The few places where the SQL of the two backends differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    /// The statement that opens a write transaction. SQLite takes the write
    /// lock at once (`BEGIN IMMEDIATE`), so that two writers never both hold
    /// a read lock and deadlock upgrading it.
    fn begin(self) -> &'static str {
        match self {
            Dialect::Postgres => "BEGIN",
            Dialect::Sqlite => "BEGIN IMMEDIATE",
        }
    }

    /// The clause locking the rows a `SELECT` reads until the transaction
    /// ends; empty on SQLite, where `BEGIN IMMEDIATE` already holds the
    /// database's write lock.
    pub(super) fn lock(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// `select` with [`Dialect::lock`] appended: a statement of fixed text.
    pub(super) fn locked(self, select: &'static str) -> AssertSqlSafe<String> {
        AssertSqlSafe(format!("{select}{}", self.lock()))
    }

    /// The byte-order collation clause of the name sort (empty on SQLite,
    /// whose default collation already compares bytes).
    pub(super) fn name_collation(self) -> &'static str {
        match self {
            Dialect::Postgres => "COLLATE \"C\"",
            Dialect::Sqlite => "",
        }
    }

    /// The text of a step's `config.connector_uuid`, for a `FROM steps s`
    /// (or `execution_steps s`); NULL when absent.
    pub(super) fn step_connector_uuid(self) -> &'static str {
        match self {
            Dialect::Postgres => "s.config ->> 'connector_uuid'",
            Dialect::Sqlite => "json_extract(s.config, '$.connector_uuid')",
        }
    }
}

/// The connection pool of the metadata store, on either backend.
#[derive(Debug, Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Pool {
    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Opens a write transaction (see [`Dialect::begin`]).
    pub(super) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let begin = self.dialect().begin();
        Ok(match self {
            Pool::Postgres(pool) => Tx::Postgres(pool.begin_with(begin).await?),
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin_with(begin).await?),
        })
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        match self {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }
}

/// A write transaction; dropping it uncommitted rolls it back.
pub(super) enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Tx::Postgres(_) => Dialect::Postgres,
            Tx::Sqlite(_) => Dialect::Sqlite,
        }
    }

    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }
}

/// Where a statement runs: on a pooled connection, or in a transaction.
pub(super) enum On<'a> {
    Pool(&'a Pool),
    Tx(&'a mut Tx),
}

impl<'a> From<&'a Pool> for On<'a> {
    fn from(pool: &'a Pool) -> Self {
        On::Pool(pool)
    }
}

impl<'a> From<&'a mut Tx> for On<'a> {
    fn from(tx: &'a mut Tx) -> Self {
        On::Tx(tx)
    }
}

/// A row type both backends decode (the `FromRow` derives are generic over
/// the database, and so are sqlx's tuples of decodable values).
pub(super) trait Row:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

impl<T> Row for T where T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

/// A bind value, in the few types the store binds. NULLs keep their type,
/// as sqlx's `Option` does.
pub(super) enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Int32(Option<i32>),
    Bool(bool),
    Time(Option<DateTime<Utc>>),
    Bytes(&'a [u8]),
    Json(Option<Cow<'a, Value>>),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(Some(value))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(value: &'a String) -> Self {
        Arg::Text(Some(value))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Arg::Text(value)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(value: &'a Option<String>) -> Self {
        Arg::Text(value.as_deref())
    }
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(Some(value))
    }
}

impl From<i32> for Arg<'_> {
    fn from(value: i32) -> Self {
        Arg::Int32(Some(value))
    }
}

impl From<bool> for Arg<'_> {
    fn from(value: bool) -> Self {
        Arg::Bool(value)
    }
}

impl From<DateTime<Utc>> for Arg<'_> {
    fn from(value: DateTime<Utc>) -> Self {
        Arg::Time(Some(value))
    }
}

impl From<Option<DateTime<Utc>>> for Arg<'_> {
    fn from(value: Option<DateTime<Utc>>) -> Self {
        Arg::Time(value)
    }
}

impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(value: &'a Vec<u8>) -> Self {
        Arg::Bytes(value)
    }
}

impl<'a> From<Json<&'a Value>> for Arg<'a> {
    fn from(value: Json<&'a Value>) -> Self {
        Arg::Json(Some(Cow::Borrowed(value.0)))
    }
}

impl<'a> From<Option<Json<&'a Value>>> for Arg<'a> {
    fn from(value: Option<Json<&'a Value>>) -> Self {
        Arg::Json(value.map(|json| Cow::Borrowed(json.0)))
    }
}

impl From<Json<&Map<String, Value>>> for Arg<'_> {
    fn from(value: Json<&Map<String, Value>>) -> Self {
        Arg::Json(Some(Cow::Owned(Value::Object(value.0.clone()))))
    }
}

impl From<Json<&Vec<String>>> for Arg<'_> {
    fn from(value: Json<&Vec<String>>) -> Self {
        let items = value.0.iter().cloned().map(Value::String).collect();
        Arg::Json(Some(Cow::Owned(Value::Array(items))))
    }
}

/// One statement and its bind values (`$1…$n` in order), run with
/// [`Sql::execute`] or one of the fetches.
pub(super) struct Sql<'a> {
    text: SqlStr,
    args: Vec<Arg<'a>>,
}

impl<'a> Sql<'a> {
    /// A statement: a literal, or text assembled only from fixed fragments
    /// and wrapped in [`sqlx::AssertSqlSafe`]; values are always bound.
    pub(super) fn new(text: impl SqlSafeStr) -> Self {
        Sql {
            text: text.into_sql_str(),
            args: Vec::new(),
        }
    }

    /// Binds the next `$n`.
    pub(super) fn bind(mut self, value: impl Into<Arg<'a>>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Runs the statement; returns how many rows it affected.
    pub(super) async fn execute(self, on: impl Into<On<'_>>) -> Result<u64, sqlx::Error> {
        let affected = match on.into() {
            On::Pool(Pool::Postgres(pool)) => self.query::<Postgres>()?.execute(pool).await?.rows_affected(),
            On::Pool(Pool::Sqlite(pool)) => self.query::<Sqlite>()?.execute(pool).await?.rows_affected(),
            On::Tx(Tx::Postgres(tx)) => self
                .query::<Postgres>()?
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            On::Tx(Tx::Sqlite(tx)) => self.query::<Sqlite>()?.execute(&mut **tx).await?.rows_affected(),
        };
        Ok(affected)
    }

    /// Every row the statement returns.
    pub(super) async fn fetch_all<R: Row>(self, on: impl Into<On<'_>>) -> Result<Vec<R>, sqlx::Error> {
        match on.into() {
            On::Pool(Pool::Postgres(pool)) => self.query_as::<Postgres, R>()?.fetch_all(pool).await,
            On::Pool(Pool::Sqlite(pool)) => self.query_as::<Sqlite, R>()?.fetch_all(pool).await,
            On::Tx(Tx::Postgres(tx)) => self.query_as::<Postgres, R>()?.fetch_all(&mut **tx).await,
            On::Tx(Tx::Sqlite(tx)) => self.query_as::<Sqlite, R>()?.fetch_all(&mut **tx).await,
        }
    }

    /// The first row, if any.
    pub(super) async fn fetch_optional<R: Row>(
        self,
        on: impl Into<On<'_>>,
    ) -> Result<Option<R>, sqlx::Error> {
        Ok(self.fetch_all(on).await?.into_iter().next())
    }

    /// Every row, as the domain type its one conversion in `rows` makes.
    pub(super) async fn fetch_all_as<R: Row, T>(self, on: impl Into<On<'_>>) -> crate::Result<Vec<T>>
    where
        T: TryFrom<R, Error = crate::Error>,
    {
        self.fetch_all::<R>(on)
            .await?
            .into_iter()
            .map(T::try_from)
            .collect()
    }

    /// The first row, if any, as the domain type its one conversion in
    /// `rows` makes.
    pub(super) async fn fetch_optional_as<R: Row, T>(self, on: impl Into<On<'_>>) -> crate::Result<Option<T>>
    where
        T: TryFrom<R, Error = crate::Error>,
    {
        self.fetch_optional::<R>(on).await?.map(T::try_from).transpose()
    }

    /// The first column of every row.
    pub(super) async fn scalar_all<T>(self, on: impl Into<On<'_>>) -> Result<Vec<T>, sqlx::Error>
    where
        (T,): Row,
    {
        let rows: Vec<(T,)> = self.fetch_all(on).await?;
        Ok(rows.into_iter().map(|(value,)| value).collect())
    }

    /// The first column of the first row, if any.
    pub(super) async fn scalar_optional<T>(self, on: impl Into<On<'_>>) -> Result<Option<T>, sqlx::Error>
    where
        (T,): Row,
    {
        Ok(self.scalar_all(on).await?.into_iter().next())
    }

    /// The first column of the first row; none is [`sqlx::Error::RowNotFound`].
    pub(super) async fn scalar_one<T>(self, on: impl Into<On<'_>>) -> Result<T, sqlx::Error>
    where
        (T,): Row,
    {
        self.scalar_optional(on).await?.ok_or(sqlx::Error::RowNotFound)
    }

    fn query<DB: Bindable>(self) -> Result<sqlx::query::Query<'static, DB, DB::Arguments>, sqlx::Error> {
        let arguments = DB::arguments(&self.args)?;
        Ok(sqlx::query_with(self.text, arguments))
    }

    fn query_as<DB: Bindable, R>(
        self,
    ) -> Result<sqlx::query::QueryAs<'static, DB, R, DB::Arguments>, sqlx::Error>
    where
        R: for<'r> FromRow<'r, DB::Row>,
    {
        let arguments = DB::arguments(&self.args)?;
        Ok(sqlx::query_as_with(self.text, arguments))
    }
}

/// A backend that encodes every [`Arg`].
trait Bindable: Database<Arguments: sqlx::IntoArguments<Self>> {
    fn arguments(args: &[Arg<'_>]) -> Result<Self::Arguments, sqlx::Error>;
}

impl Bindable for Postgres {
    fn arguments(args: &[Arg<'_>]) -> Result<PgArguments, sqlx::Error> {
        encode::<Self>(args)
    }
}

impl Bindable for Sqlite {
    fn arguments(args: &[Arg<'_>]) -> Result<SqliteArguments, sqlx::Error> {
        encode::<Self>(args)
    }
}

/// Encodes `args` for `DB`; a value that does not encode is an error of the
/// statement, as sqlx's own `bind` reports it.
fn encode<DB: Database>(args: &[Arg<'_>]) -> Result<DB::Arguments, sqlx::Error>
where
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<Json<&'q Value>>: Encode<'q, DB> + Type<DB>,
{
    let mut arguments = DB::Arguments::default();
    for arg in args {
        match arg {
            Arg::Text(value) => arguments.add(*value),
            Arg::Int(value) => arguments.add(*value),
            Arg::Int32(value) => arguments.add(*value),
            Arg::Bool(value) => arguments.add(*value),
            Arg::Time(value) => arguments.add(*value),
            Arg::Bytes(value) => arguments.add(*value),
            Arg::Json(value) => arguments.add(value.as_deref().map(Json)),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn json_of(arg: Arg<'_>) -> Option<Value> {
        match arg {
            Arg::Json(value) => value.map(Cow::into_owned),
            _ => panic!("not a JSON argument"),
        }
    }

    #[test]
    fn json_arguments_hold_what_serde_would_write_for_maps_arrays_and_values() {
        let map: Map<String, Value> =
            serde_json::from_value(json!({"b": 1, "a": [true, null]})).expect("map");
        assert_eq!(
            json_of(Json(&map).into()),
            Some(serde_json::to_value(&map).expect("value"))
        );
        let ids = vec!["conn_1".to_owned(), "conn_2".to_owned()];
        assert_eq!(json_of(Json(&ids).into()), Some(json!(["conn_1", "conn_2"])));
        let value = json!({"connector_uuid": "conn_1"});
        assert_eq!(json_of(Json(&value).into()), Some(value.clone()));
        assert_eq!(json_of(None::<Json<&Value>>.into()), None);
    }

    #[test]
    fn only_postgres_locks_rows_and_collates_names_bytewise() {
        assert_eq!(Dialect::Postgres.locked("SELECT 1").0, "SELECT 1 FOR UPDATE");
        assert_eq!(Dialect::Sqlite.locked("SELECT 1").0, "SELECT 1");
        assert_eq!(Dialect::Postgres.begin(), "BEGIN");
        assert_eq!(Dialect::Sqlite.begin(), "BEGIN IMMEDIATE");
        assert_eq!(Dialect::Sqlite.name_collation(), "");
    }
}
