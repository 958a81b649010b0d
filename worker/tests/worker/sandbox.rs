//! Steps cannot change the source or the worker: SQLite steps only read
//! (no `VACUUM INTO`, no temp tables), pooled PostgreSQL and MySQL
//! connections come back clean, and PostgreSQL steps run read-only unless
//! the connector allows writes.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use ferry_shared::domain::params::BoundQuery;
use ferry_shared::objects::ObjectTarget;
use ferry_worker::extract::{
    Destination, ExtractError, ExtractOptions, SqlSource, StepOutput, run_sql_step_with,
};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::helpers::{ORG, harness, maria_fixture, mariadb, pg_admin_at, pg_fixture, spec, unique, with};

/// A file:// result target in a temporary directory.
struct Results {
    target: ObjectTarget,
    _dir: TempDir,
}

fn results() -> Results {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url::Url::from_directory_path(dir.path().join("results")).expect("url");
    Results {
        target: ObjectTarget::open(url.as_str()).expect("file target"),
        _dir: dir,
    }
}

impl Results {
    /// Runs `sql` as a step of its own.
    async fn step(&self, source: &SqlSource, sql: &str) -> Result<StepOutput, ExtractError> {
        let path = self.target.step_path(&unique("exec"), "step_1");
        run_sql_step_with(
            &ExtractOptions::default(),
            source,
            &BoundQuery {
                sql: sql.to_owned(),
                params: Vec::new(),
            },
            &Destination::new(&self.target, &path),
            &|_, _| {},
            &CancellationToken::new(),
            || async { true },
        )
        .await
    }

    /// Runs `sql` as a step and reads back the first column of its result
    /// as text.
    async fn column(&self, source: &SqlSource, sql: &str) -> Vec<String> {
        let path = self.target.step_path(&unique("exec"), "step_1");
        run_sql_step_with(
            &ExtractOptions::default(),
            source,
            &BoundQuery {
                sql: sql.to_owned(),
                params: Vec::new(),
            },
            &Destination::new(&self.target, &path),
            &|_, _| {},
            &CancellationToken::new(),
            || async { true },
        )
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error:?}"));
        let bytes = self
            .target
            .store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        let mut values = Vec::new();
        for batch in reader {
            let batch = batch.expect("batch");
            let column = arrow::compute::cast(batch.column(0), &DataType::Utf8).expect("cast");
            let column = column.as_string::<i32>();
            for row in 0..column.len() {
                values.push(if column.is_null(row) {
                    "NULL".to_owned()
                } else {
                    column.value(row).to_owned()
                });
            }
        }
        values
    }
}

// -------------------------------------------------------------------- SQLite

async fn create_database(path: &Path) {
    let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let pool = SqlitePool::connect_with(options)
        .await
        .expect("create sqlite file");
    sqlx::raw_sql("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        .execute(&pool)
        .await
        .expect("seed");
    pool.close().await;
}

#[tokio::test]
async fn sqlite_vacuum_into_is_refused_and_writes_no_file() {
    let h = harness(false);
    create_database(&h.org_dir(ORG).join("data.db")).await;
    let spec = spec("sqlite", json!({"path": "data.db"}));
    let source = SqlSource::Sqlite(h.registry.sqlite(&spec).await.expect("pool"));
    let out = results();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let targets = [elsewhere.path().join("copy.db"), h.org_dir(ORG).join("copy.db")];
    for target in &targets {
        for sql in [
            format!("VACUUM INTO '{}'", target.display()),
            format!("/* x */ vacuum main into '{}';", target.display()),
        ] {
            let error = out.step(&source, &sql).await.expect_err(&sql);
            assert_eq!(error.error_type, "invalid_query", "{sql}: {error:?}");
            assert!(error.message.contains("only reads"), "{error:?}");
            assert!(!target.exists(), "{sql} wrote {}", target.display());
        }
    }
    assert_eq!(out.column(&source, "SELECT x FROM t").await, vec!["1"]);
}

#[tokio::test]
async fn sqlite_steps_that_would_write_anything_are_refused_and_reads_still_run() {
    let h = harness(false);
    create_database(&h.org_dir(ORG).join("data.db")).await;
    let spec = spec("sqlite", json!({"path": "data.db"}));
    let source = SqlSource::Sqlite(h.registry.sqlite(&spec).await.expect("pool"));
    let out = results();
    for sql in [
        "CREATE TEMP TABLE t AS SELECT 99 AS x",
        "CREATE TEMPORARY VIEW v AS SELECT 1 AS x",
        "INSERT INTO t VALUES (2)",
        "WITH n(v) AS (SELECT 5) INSERT INTO t SELECT v FROM n",
        "DELETE FROM t",
        "CREATE TABLE u (y)",
        "DROP TABLE t",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA wal_checkpoint",
        "REINDEX",
        "ANALYZE",
    ] {
        let error = out.step(&source, sql).await.expect_err(sql);
        assert_eq!(error.error_type, "invalid_query", "{sql}: {error:?}");
    }
    assert_eq!(out.column(&source, "SELECT count(*) FROM t").await, vec!["1"]);
    for sql in [
        "SELECT x FROM t",
        "WITH n(v) AS (SELECT 1) SELECT v FROM n",
        "SELECT name FROM pragma_table_info('t')",
        "EXPLAIN QUERY PLAN SELECT x FROM t",
    ] {
        out.step(&source, sql)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    }
}

/// Even a connection whose state was changed behind the step runner's back
/// (query_only switched off, a temp table shadowing `t`) is closed when it
/// goes back to the pool: the next step opens a fresh one.
#[tokio::test]
async fn sqlite_temp_tables_never_reach_the_next_step_on_the_pool() {
    let h = harness(false);
    create_database(&h.org_dir(ORG).join("data.db")).await;
    let spec = spec("sqlite", json!({"path": "data.db", "max_connections": 1}));
    let pool = h.registry.sqlite(&spec).await.expect("pool");
    let mut connection = pool.acquire().await.expect("acquire");
    sqlx::query("CREATE TEMP TABLE t AS SELECT 99 AS x")
        .execute(&mut *connection)
        .await
        .expect_err("query_only refuses temp tables");
    sqlx::raw_sql("PRAGMA query_only = OFF; CREATE TEMP TABLE t AS SELECT 99 AS x")
        .execute(&mut *connection)
        .await
        .expect("temp table once query_only is off");
    let shadowed: i64 = sqlx::query_scalar("SELECT x FROM t")
        .fetch_one(&mut *connection)
        .await
        .expect("read");
    assert_eq!(shadowed, 99);
    connection.return_to_pool().await;

    let out = results();
    let source = SqlSource::Sqlite(pool.clone());
    assert_eq!(out.column(&source, "SELECT x FROM t").await, vec!["1"]);
    assert_eq!(out.column(&source, "PRAGMA query_only").await, vec!["1"]);
}

// ---------------------------------------------------------------- PostgreSQL

/// A fixture database whose role owns table `t` (one row) in `public`.
async fn pg_with_table() -> crate::helpers::PgFixture {
    let fixture = pg_fixture().await;
    let admin = pg_admin_at(fixture.port, &fixture.database).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "GRANT ALL ON SCHEMA public TO {0}; GRANT TEMPORARY ON DATABASE {1} TO {0}; \
         CREATE TABLE t (x int); INSERT INTO t VALUES (1); ALTER TABLE t OWNER TO {0}; \
         CREATE SEQUENCE s; ALTER SEQUENCE s OWNER TO {0};",
        fixture.role, fixture.database
    )))
    .execute(&admin)
    .await
    .expect("table");
    admin.close().await;
    fixture
}

async fn pg_rows(fixture: &crate::helpers::PgFixture) -> i64 {
    let admin = pg_admin_at(fixture.port, &fixture.database).await;
    let rows = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&admin)
        .await
        .expect("count");
    admin.close().await;
    rows
}

#[tokio::test]
async fn postgresql_steps_cannot_write_unless_the_connector_allows_writes() {
    let fixture = pg_with_table().await;
    let h = harness(true);
    let out = results();
    let read_only = spec("postgresql", fixture.config());
    let source = SqlSource::Postgres(h.registry.postgres(&read_only).await.expect("pool"));
    for sql in [
        // COPY path (no parameters) and the extended-protocol fallback
        // (COPY refuses utility statements) alike.
        "INSERT INTO t VALUES (2) RETURNING x",
        "WITH w AS (INSERT INTO t VALUES (3) RETURNING x) SELECT x FROM w",
        "DELETE FROM t RETURNING x",
        "SELECT nextval('s')",
    ] {
        let error = out.step(&source, sql).await.expect_err(sql);
        assert!(
            error.message.contains("read-only transaction"),
            "{sql}: {error:?}"
        );
    }
    // A statement without result columns never runs at all.
    let error = out
        .step(&source, "CREATE TABLE u (y int)")
        .await
        .expect_err("create");
    assert_eq!(error.error_type, "invalid_query", "{error:?}");
    assert_eq!(pg_rows(&fixture).await, 1, "nothing was written");
    assert_eq!(out.column(&source, "SELECT x FROM t").await, vec!["1"]);

    let writable = spec(
        "postgresql",
        with(&fixture.config(), json!({"allow_writes": true})),
    );
    let source = SqlSource::Postgres(h.registry.postgres(&writable).await.expect("pool"));
    assert_eq!(
        out.column(&source, "INSERT INTO t VALUES (2) RETURNING x").await,
        vec!["2"]
    );
    assert_eq!(pg_rows(&fixture).await, 2);
}

#[tokio::test]
async fn postgresql_pooled_connections_are_discarded_between_uses() {
    let fixture = pg_with_table().await;
    let h = harness(true);
    let spec = spec(
        "postgresql",
        with(
            &fixture.config(),
            json!({"max_connections": 1, "allow_writes": true, "statement_timeout_seconds": 7}),
        ),
    );
    let pool = h.registry.postgres(&spec).await.expect("pool");
    let mut connection = pool.acquire().await.expect("acquire");
    let first_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *connection)
        .await
        .expect("pid");
    sqlx::raw_sql(
        "SET search_path TO pg_catalog; CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (99); \
         SELECT set_config('ferry.marker', 'left behind', false); PREPARE leftover AS SELECT 1; \
         SET default_transaction_read_only = on; SET statement_timeout = 0",
    )
    .execute(&mut *connection)
    .await
    .expect("session state");
    connection.return_to_pool().await;

    let mut connection = pool.acquire().await.expect("acquire again");
    let (pid, search_path, marker, prepared, read_only, timeout): (
        i32,
        String,
        Option<String>,
        i64,
        String,
        String,
    ) = sqlx::query_as(
        "SELECT pg_backend_pid(), current_setting('search_path'), \
             nullif(current_setting('ferry.marker', true), ''), \
             (SELECT count(*) FROM pg_prepared_statements WHERE name = 'leftover'), \
             current_setting('default_transaction_read_only'), current_setting('statement_timeout')",
    )
    .fetch_one(&mut *connection)
    .await
    .expect("state");
    assert_eq!(pid, first_pid, "the same connection, reset rather than replaced");
    assert_eq!(search_path, "\"$user\", public");
    assert_eq!(marker, None);
    assert_eq!(prepared, 0);
    assert_eq!(read_only, "off", "allow_writes: the connection's own default");
    assert_eq!(timeout, "7s", "startup options survive DISCARD ALL");
    let x: i32 = sqlx::query_scalar("SELECT x FROM t")
        .fetch_one(&mut *connection)
        .await
        .expect("real table");
    assert_eq!(x, 1, "the temp table is gone");
    connection.return_to_pool().await;

    // And through steps: one step's setting is not the next step's.
    let out = results();
    let source = SqlSource::Postgres(pool.clone());
    out.column(&source, "SELECT set_config('search_path', 'pg_catalog', false)")
        .await;
    assert_eq!(
        out.column(&source, "SELECT current_setting('search_path')").await,
        vec!["\"$user\", public"]
    );
}

#[tokio::test]
async fn postgresql_read_only_default_survives_a_step_that_turns_it_off() {
    let fixture = pg_with_table().await;
    let h = harness(true);
    let spec = spec(
        "postgresql",
        with(&fixture.config(), json!({"max_connections": 1})),
    );
    let out = results();
    let source = SqlSource::Postgres(h.registry.postgres(&spec).await.expect("pool"));
    out.column(
        &source,
        "SELECT set_config('default_transaction_read_only', 'off', false)",
    )
    .await;
    let error = out
        .step(&source, "INSERT INTO t VALUES (5) RETURNING x")
        .await
        .expect_err("still read-only");
    assert!(error.message.contains("read-only transaction"), "{error:?}");
    assert_eq!(pg_rows(&fixture).await, 1);
}

// --------------------------------------------------------------------- MySQL

#[tokio::test]
async fn mysql_pooled_connections_never_carry_session_state_to_the_next_use() {
    let fixture = maria_fixture();
    let h = harness(true);
    let spec = spec("mysql", with(&fixture.config(), json!({"max_connections": 1})));
    let pool = h.registry.mysql(&spec).await.expect("pool");
    let mut connection = pool.acquire().await.expect("acquire");
    sqlx::raw_sql(
        "SET @x = 42; CREATE TEMPORARY TABLE leftover (x int); INSERT INTO leftover VALUES (99); \
         SET SESSION sql_mode = 'ANSI_QUOTES'",
    )
    .execute(&mut *connection)
    .await
    .expect("session state");
    connection.return_to_pool().await;

    let mut connection = pool.acquire().await.expect("acquire again");
    let (x, mode): (Option<i64>, String) = sqlx::query_as("SELECT @x, CAST(@@SESSION.sql_mode AS CHAR)")
        .fetch_one(&mut *connection)
        .await
        .expect("state");
    assert_eq!(x, None);
    assert_ne!(mode, "ANSI_QUOTES");
    sqlx::query("SELECT x FROM leftover")
        .fetch_one(&mut *connection)
        .await
        .expect_err("the temp table is gone");
    connection.return_to_pool().await;

    let out = results();
    let source = SqlSource::MySql(pool.clone());
    out.column(&source, "SELECT @y := 7").await;
    assert_eq!(out.column(&source, "SELECT @y").await, vec!["NULL"]);
    drop(mariadb("SELECT 1"));
}
