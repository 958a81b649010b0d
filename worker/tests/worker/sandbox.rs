//! Steps cannot change the source or the worker: SQLite steps only read
//! (no `VACUUM INTO`, no temp tables), pooled PostgreSQL and MySQL
//! connections come back clean, and PostgreSQL steps run read-only unless
//! the connector allows writes.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use ferry_shared::domain::params::BoundQuery;
use ferry_shared::objects::ObjectTarget;
use ferry_worker::extract::{Destination, ExtractError, SqlSource, StepOutput, run_sql_step};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use crate::helpers::{harness, spec, unique};

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
        run_sql_step(
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
        run_sql_step(
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
    create_database(&h.sqlite_dir.path().join("data.db")).await;
    let spec = spec("sqlite", json!({"path": "data.db"}));
    let source = SqlSource::Sqlite(h.registry.sqlite(&spec).await.expect("pool"));
    let out = results();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let targets = [
        elsewhere.path().join("copy.db"),
        h.sqlite_dir.path().join("copy.db"),
    ];
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
    create_database(&h.sqlite_dir.path().join("data.db")).await;
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
    create_database(&h.sqlite_dir.path().join("data.db")).await;
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
