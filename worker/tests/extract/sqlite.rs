//! SQLite: declared types map by affinity, expressions by their values,
//! parameters are bound.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
    Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use ferry_shared::domain::params::ParamValue;
use ferry_worker::extract::{ExtractOptions, ReadPath};

use crate::helpers::*;

fn check(batch: &RecordBatch, name: &str, expected: ArrayRef) {
    let actual = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    assert_eq!(actual.data_type(), expected.data_type(), "type of {name}");
    assert_eq!(actual.as_ref(), expected.as_ref(), "values of {name}");
}

#[tokio::test]
async fn sqlite_declared_and_dynamic_types_round_trip() {
    let db = sqlite_fixture().await;
    db.exec(
        "CREATE TABLE everything (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, flag BOOLEAN, \
         day DATE, at DATETIME, tm TIME, amount NUMERIC(10,2), doc JSON);
         INSERT INTO everything VALUES
          (1, -9223372036854775808, -1.5, 'héllo', x'00ff', 0, '1999-12-31', '1999-12-31 23:59:59.5', '00:00:01', 10, '{\"a\": 1}'),
          (2, 9223372036854775807, 1e300, '', x'', 1, '2000-01-01', '2000-01-01T00:00:00Z', '23:59:59.999999', 20, '[]'),
          (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);",
    )
    .await;
    let files = file_target();
    let path = files.target.step_path("exec_lite", "step_1");
    let sql =
        "SELECT *, i + 0 AS expr_int, r * 2 AS expr_real, upper(t) AS expr_text FROM everything ORDER BY id";
    let output = extract(&db.source(), &query(sql, vec![]), &files.target, &path)
        .await
        .expect("extract");
    assert_eq!(output.read_path, ReadPath::Sqlite);
    let (batch, _) = read_parquet(&files.target, &path).await;
    check(
        &batch,
        "i",
        Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(i64::MAX), None])),
    );
    check(
        &batch,
        "r",
        Arc::new(Float64Array::from(vec![Some(-1.5), Some(1e300), None])),
    );
    check(
        &batch,
        "t",
        Arc::new(StringArray::from(vec![Some("héllo"), Some(""), None])),
    );
    check(
        &batch,
        "b",
        Arc::new(BinaryArray::from(vec![
            Some(&b"\x00\xff"[..]),
            Some(&b""[..]),
            None,
        ])),
    );
    check(
        &batch,
        "flag",
        Arc::new(BooleanArray::from(vec![Some(false), Some(true), None])),
    );
    check(
        &batch,
        "day",
        Arc::new(Date32Array::from(vec![Some(10_956), Some(10_957), None])),
    );
    check(
        &batch,
        "at",
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(946_684_799_500_000),
            Some(946_684_800_000_000),
            None,
        ])),
    );
    check(
        &batch,
        "tm",
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(1_000_000),
            Some(86_399_999_999),
            None,
        ])),
    );
    // NUMERIC and JSON declarations are dynamic: typed by their values.
    check(
        &batch,
        "amount",
        Arc::new(Int64Array::from(vec![Some(10), Some(20), None])),
    );
    check(
        &batch,
        "doc",
        Arc::new(StringArray::from(vec![Some(r#"{"a": 1}"#), Some("[]"), None])),
    );
    check(
        &batch,
        "expr_int",
        Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(i64::MAX), None])),
    );
    check(
        &batch,
        "expr_real",
        Arc::new(Float64Array::from(vec![Some(-3.0), Some(2e300), None])),
    );
    check(
        &batch,
        "expr_text",
        Arc::new(StringArray::from(vec![Some("HéLLO"), Some(""), None])),
    );
}

#[tokio::test]
async fn sqlite_parameters_are_bound_values() {
    let db = sqlite_fixture().await;
    db.exec(
        "CREATE TABLE t (name TEXT, n INTEGER); INSERT INTO t VALUES ('a', 1), ('x''; DROP TABLE t; --', 2);",
    )
    .await;
    let files = file_target();
    let path = files.target.step_path("exec_lite_params", "step_1");
    let bound = query(
        "SELECT n FROM t WHERE name = ? AND n >= ?",
        vec![
            ParamValue::Text("x'; DROP TABLE t; --".into()),
            ParamValue::Integer(2),
        ],
    );
    extract(&db.source(), &bound, &files.target, &path)
        .await
        .expect("extract");
    let (batch, _) = read_parquet(&files.target, &path).await;
    check(&batch, "n", Arc::new(Int64Array::from(vec![2])));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&db.pool)
        .await
        .expect("t still exists");
    assert_eq!(rows, 2);
}

/// SQLite's own text (as bytes) of every value of `column`, in `id` order.
async fn sqlite_values(db: &SqliteFixture, column: &str) -> Vec<Option<Vec<u8>>> {
    let sql = format!("SELECT CAST({column} AS BLOB) FROM mixed ORDER BY id");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&db.pool)
        .await
        .expect("values")
}

fn exported(batch: &RecordBatch, column: &str) -> Vec<Option<Vec<u8>>> {
    let array = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column}"));
    (0..array.len())
        .map(|i| {
            (!array.is_null(i)).then(|| match array.data_type() {
                DataType::Utf8 => array.as_string::<i32>().value(i).as_bytes().to_vec(),
                DataType::Binary => array.as_binary::<i32>().value(i).to_vec(),
                other => panic!("{column} is {other}"),
            })
        })
        .collect()
}

#[tokio::test]
async fn sqlite_columns_whose_values_mix_types_export_as_text_or_bytes() {
    let db = sqlite_fixture().await;
    db.exec(
        "CREATE TABLE mixed (id INTEGER PRIMARY KEY, n INTEGER, day DATE, b BLOB, m NUMERIC, late INTEGER);
         INSERT INTO mixed VALUES
          (1, 1, '2024-01-01', x'00ff', x'ff00', 1),
          (2, 'not a number', 'someday', 'text', 'text', 2),
          (3, 2.5, 19000, 3, 7, 3),
          (4, 3.0, NULL, 2.5, NULL, 4),
          (5, NULL, '2024-02-30', NULL, 1.5, 'five');",
    )
    .await;
    let files = file_target();
    let path = files.target.step_path("exec_lite_mixed", "step_1");
    // Two rows a batch: `late` fits Int64 in the first batch and meets
    // 'five' in the third, after the upload has begun.
    let options = ExtractOptions {
        batch_rows: 2,
        ..ExtractOptions::default()
    };
    let output = extract_with(
        &options,
        &db.source(),
        &query("SELECT * FROM mixed ORDER BY id", vec![]),
        &files.target,
        &path,
    )
    .await
    .expect("mixed columns export");
    assert_eq!(output.rows, 5);
    assert_eq!(objects(&files.target).await, vec![path.clone()]);
    let (batch, _) = read_parquet(&files.target, &path).await;
    for (column, data_type) in [
        ("n", DataType::Utf8),
        ("day", DataType::Utf8),
        ("b", DataType::Binary),
        ("m", DataType::Binary),
        ("late", DataType::Utf8),
    ] {
        assert_eq!(
            batch.schema().field_with_name(column).expect("field").data_type(),
            &data_type,
            "type of {column}"
        );
        assert_eq!(
            exported(&batch, column),
            sqlite_values(&db, column).await,
            "values of {column}"
        );
    }
}

/// A step reads the one database file its connector names: ATTACH (which
/// would open any other SQLite file the worker can read) and several
/// statements in one step are refused before anything runs.
#[tokio::test]
async fn sqlite_steps_cannot_attach_other_files_or_run_several_statements() {
    let db = sqlite_fixture().await;
    db.exec("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)")
        .await;
    let other = tempfile::tempdir().expect("tempdir");
    let secret = other.path().join("secret.sqlite");
    let secret_db = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&secret)
                .create_if_missing(true),
        )
        .await
        .expect("secret db");
    sqlx::raw_sql("CREATE TABLE creds (password TEXT); INSERT INTO creds VALUES ('hunter2')")
        .execute(&secret_db)
        .await
        .expect("secret rows");
    let files = file_target();
    let path = files.target.step_path("exec_attach", "step_1");
    let file = secret.display().to_string();
    for sql in [
        format!("ATTACH DATABASE '{file}' AS other"),
        format!("attach '{file}' as other; SELECT * FROM other.creds"),
        format!("SELECT x FROM t; ATTACH '{file}' AS other; SELECT password FROM other.creds"),
        format!("/* note */ Attach\n'{file}' AS other"),
        "SELECT x FROM t; SELECT x FROM t".to_owned(),
        "DETACH DATABASE main".to_owned(),
    ] {
        let error = extract(&db.source(), &query(&sql, vec![]), &files.target, &path)
            .await
            .expect_err(&sql);
        assert_eq!(error.error_type, "invalid_query", "{sql}: {error:?}");
        assert!(!error.message.contains("hunter2"), "{error:?}");
    }
    assert_eq!(
        objects(&files.target).await,
        Vec::<object_store::path::Path>::new()
    );

    // The words inside strings, quoted names and comments are fine, and so
    // is a trailing semicolon.
    for sql in [
        "SELECT 'attach; detach' AS \"attach\", x FROM t -- ATTACH\n;",
        "SELECT x /* ; attach */ FROM t;  ",
    ] {
        let output = extract(&db.source(), &query(sql, vec![]), &files.target, &path)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(output.rows, 1, "{sql}");
    }
}
