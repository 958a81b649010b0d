//! MariaDB: its types round-trip value for value, parameters stay values,
//! cancel stops the query.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
    Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, StringArray, Time64MicrosecondArray,
    TimestampMicrosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use chrono::{NaiveDate, NaiveDateTime};
use ferry_shared::domain::params::ParamValue;
use ferry_worker::extract::{Destination, ExtractOptions, ReadPath, run_sql_step_with};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const EVERYTHING: &str = r#"
CREATE TABLE everything (
  id INT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED,
  mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  dec_ DECIMAL(12,3), dec_wide DECIMAL(65,30), f FLOAT, d DOUBLE,
  vc VARCHAR(20), tx TEXT, bin_text VARCHAR(10) COLLATE utf8mb4_bin, js JSON, bl BLOB, vb VARBINARY(8),
  dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, tm TIME(6), yr YEAR,
  flag TINYINT(1), bit1 BIT(1), bits BIT(12), en ENUM('a','b')
);
INSERT INTO everything VALUES
 (1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
  -123456789.123, -12345678901234567890.123456789012345678901234567890, -1.5, -2.25,
  'héllo', '', 'Bin', '{"a": 1}', x'00ff', x'',
  '1000-01-01', '1000-01-01 00:00:00', '1970-01-01 00:00:01', '00:00:00', 1901,
  0, b'0', b'000000000000', 'a'),
 (2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
  123456789.999, 1.5, 3.25, 1e300,
  'x', 'long text', 'bin', '[1, 2]', x'deadbeef', x'0102',
  '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', '23:59:59.999999', 2155,
  1, b'1', b'111111111111', 'b'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

fn micros(text: &str) -> i64 {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .expect("timestamp")
        .and_utc()
        .timestamp_micros()
}

fn days(text: &str) -> i32 {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date");
    i32::try_from(date.signed_duration_since(NaiveDate::default()).num_days()).expect("days")
}

fn check(batch: &RecordBatch, name: &str, expected: ArrayRef) {
    let actual = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    assert_eq!(actual.data_type(), expected.data_type(), "type of {name}");
    assert_eq!(actual.as_ref(), expected.as_ref(), "values of {name}");
}

#[tokio::test]
async fn mariadb_types_round_trip_value_for_value_with_nulls() {
    let db = maria_fixture().await;
    db.exec(EVERYTHING).await;
    let files = file_target();
    let path = files.target.step_path("exec_my", "step_1");
    let output = extract(
        &db.source(),
        &query("SELECT * FROM everything ORDER BY id", vec![]),
        &files.target,
        &path,
    )
    .await
    .expect("extract");
    assert_eq!(output.read_path, ReadPath::MySql);
    assert_eq!(output.rows, 3);
    let (batch, _) = read_parquet(&files.target, &path).await;
    check(
        &batch,
        "ti",
        Arc::new(Int8Array::from(vec![Some(-128), Some(127), None])),
    );
    check(
        &batch,
        "tu",
        Arc::new(UInt8Array::from(vec![Some(0), Some(255), None])),
    );
    check(
        &batch,
        "si",
        Arc::new(Int16Array::from(vec![Some(-32768), Some(32767), None])),
    );
    check(
        &batch,
        "su",
        Arc::new(UInt16Array::from(vec![Some(0), Some(65535), None])),
    );
    check(
        &batch,
        "mi",
        Arc::new(Int32Array::from(vec![Some(-8_388_608), Some(8_388_607), None])),
    );
    check(
        &batch,
        "mu",
        Arc::new(UInt32Array::from(vec![Some(0), Some(16_777_215), None])),
    );
    check(
        &batch,
        "i",
        Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(i32::MAX), None])),
    );
    check(
        &batch,
        "iu",
        Arc::new(UInt32Array::from(vec![Some(0), Some(u32::MAX), None])),
    );
    check(
        &batch,
        "bi",
        Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(i64::MAX), None])),
    );
    check(
        &batch,
        "bu",
        Arc::new(UInt64Array::from(vec![Some(0), Some(u64::MAX), None])),
    );
    check(
        &batch,
        "dec_",
        Arc::new(
            Decimal128Array::from(vec![Some(-123_456_789_123), Some(123_456_789_999), None])
                .with_precision_and_scale(12, 3)
                .expect("decimal"),
        ),
    );
    check(
        &batch,
        "dec_wide",
        Arc::new(StringArray::from(vec![
            Some("-12345678901234567890.123456789012345678901234567890"),
            Some("1.500000000000000000000000000000"),
            None,
        ])),
    );
    check(
        &batch,
        "f",
        Arc::new(Float32Array::from(vec![Some(-1.5), Some(3.25), None])),
    );
    check(
        &batch,
        "d",
        Arc::new(Float64Array::from(vec![Some(-2.25), Some(1e300), None])),
    );
    check(
        &batch,
        "vc",
        Arc::new(StringArray::from(vec![Some("héllo"), Some("x"), None])),
    );
    check(
        &batch,
        "tx",
        Arc::new(StringArray::from(vec![Some(""), Some("long text"), None])),
    );
    check(
        &batch,
        "bin_text",
        Arc::new(StringArray::from(vec![Some("Bin"), Some("bin"), None])),
    );
    check(
        &batch,
        "js",
        Arc::new(StringArray::from(vec![Some(r#"{"a": 1}"#), Some("[1, 2]"), None])),
    );
    check(
        &batch,
        "bl",
        Arc::new(BinaryArray::from(vec![
            Some(&b"\x00\xff"[..]),
            Some(&b"\xde\xad\xbe\xef"[..]),
            None,
        ])),
    );
    check(
        &batch,
        "vb",
        Arc::new(BinaryArray::from(vec![
            Some(&b""[..]),
            Some(&b"\x01\x02"[..]),
            None,
        ])),
    );
    check(
        &batch,
        "dt",
        Arc::new(Date32Array::from(vec![
            Some(days("1000-01-01")),
            Some(days("9999-12-31")),
            None,
        ])),
    );
    check(
        &batch,
        "dtm",
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(micros("1000-01-01 00:00:00")),
            Some(micros("9999-12-31 23:59:59.999999")),
            None,
        ])),
    );
    check(
        &batch,
        "ts",
        Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(1_000_000),
                Some(micros("2038-01-19 03:14:07.999999")),
                None,
            ])
            .with_timezone("UTC"),
        ),
    );
    check(
        &batch,
        "tm",
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(0),
            Some(86_399_999_999),
            None,
        ])),
    );
    check(
        &batch,
        "yr",
        Arc::new(Int16Array::from(vec![Some(1901), Some(2155), None])),
    );
    check(
        &batch,
        "flag",
        Arc::new(BooleanArray::from(vec![Some(false), Some(true), None])),
    );
    check(
        &batch,
        "bit1",
        Arc::new(BooleanArray::from(vec![Some(false), Some(true), None])),
    );
    check(
        &batch,
        "bits",
        Arc::new(UInt64Array::from(vec![Some(0), Some(4095), None])),
    );
    check(
        &batch,
        "en",
        Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])),
    );
}

#[tokio::test]
async fn mariadb_parameters_are_bound_values_and_expressions_get_types() {
    let db = maria_fixture().await;
    db.exec("CREATE TABLE t (name VARCHAR(40), amount DECIMAL(10,2), day DATE)")
        .await;
    db.exec("INSERT INTO t VALUES ('alice', 10.50, '2024-01-01'), ('x'' OR ''1''=''1', 2.25, '2024-02-01')")
        .await;
    let files = file_target();
    for (n, name, expected) in [(0, "x' OR '1'='1", 1), (1, "nobody' OR '1'='1", 0)] {
        let path = files.target.step_path("exec_my_params", &format!("step_{n}"));
        let bound = query(
            "SELECT COUNT(*) AS n, SUM(amount) AS total FROM t WHERE name = ? AND day >= ? AND amount > ?",
            vec![
                ParamValue::Text(name.into()),
                ParamValue::Date(NaiveDate::from_ymd_opt(2023, 1, 1).expect("date")),
                ParamValue::Number(1.0),
            ],
        );
        extract(&db.source(), &bound, &files.target, &path)
            .await
            .expect("extract");
        let (batch, _) = read_parquet(&files.target, &path).await;
        assert_eq!(
            batch
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            expected,
            "{name}"
        );
        // SUM over DECIMAL(10,2) is an expression: Decimal128(38, 10).
        assert_eq!(
            batch.column(1).data_type(),
            &arrow::datatypes::DataType::Decimal128(38, 10)
        );
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(&db.pool)
        .await
        .expect("t still exists");
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn mariadb_cancel_stops_a_running_query() {
    let db = maria_fixture().await;
    let files = file_target();
    let path = files.target.step_path("exec_my_cancel", "step_1");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let error = run_sql_step_with(
        &ExtractOptions::default(),
        &db.source(),
        &query("SELECT SLEEP(60) AS slept", vec![]),
        &Destination::new(&files.target, &path),
        &|_, _| {},
        &cancel,
        || async { true },
    )
    .await
    .expect_err("cancelled");
    assert_eq!(error.error_type, "cancelled");
    assert!(started.elapsed() < Duration::from_secs(10));
    let sleeping = || {
        mariadb(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{}' AND COMMAND IN ('Query', 'Execute') \
             AND INFO LIKE 'SELECT SLEEP%'",
            db.database
        ))
        .trim()
        .to_owned()
    };
    assert!(
        eventually(Duration::from_secs(5), || async { sleeping() == "0" }).await,
        "SLEEP still running"
    );
    assert!(files.files().is_empty());
}

const MARIADB_TYPES: &str = r#"
CREATE TABLE more_types (
  id INT PRIMARY KEY,
  js JSON, b1 BIT(1), b5 BIT(5), b64 BIT(64), en ENUM('x','y z'), st SET('a','b','c'), yr YEAR,
  g GEOMETRY, pt POINT, pg POLYGON, tm0 TIME, tm3 TIME(3), in_day TIME, ubig BIGINT UNSIGNED
);
INSERT INTO more_types VALUES
 (1, '{"k": [1, "two"]}', b'1', b'10101', b'1111111111111111111111111111111111111111111111111111111111111111',
  'y z', 'a,c', 2024, ST_GeomFromText('LINESTRING(0 0,1 1,2 0)'), ST_GeomFromText('POINT(1.5 -2)', 4326),
  ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), '838:59:59', '-01:00:00.5', '12:00:00', 18446744073709551615),
 (2, '[]', b'0', b'0', b'0', 'x', '', 1901, ST_GeomFromText('POINT(0 0)'), NULL, NULL,
  '-838:59:59', '24:00:00.123', '00:00:00', 9223372036854775808),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

/// The column's values as bytes: text as UTF-8, numbers as their decimal
/// text, booleans as 1/0.
fn as_bytes(batch: &RecordBatch, name: &str) -> Vec<Option<Vec<u8>>> {
    let array = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    (0..array.len())
        .map(|i| {
            (!array.is_null(i)).then(|| match array.data_type() {
                arrow::datatypes::DataType::Utf8 => array.as_string::<i32>().value(i).as_bytes().to_vec(),
                arrow::datatypes::DataType::Binary => array.as_binary::<i32>().value(i).to_vec(),
                arrow::datatypes::DataType::Boolean => (if array.as_boolean().value(i) { "1" } else { "0" })
                    .as_bytes()
                    .to_vec(),
                arrow::datatypes::DataType::UInt64 => array
                    .as_primitive::<arrow::datatypes::UInt64Type>()
                    .value(i)
                    .to_string()
                    .into_bytes(),
                arrow::datatypes::DataType::Int16 => array
                    .as_primitive::<arrow::datatypes::Int16Type>()
                    .value(i)
                    .to_string()
                    .into_bytes(),
                other => panic!("{name} is {other}"),
            })
        })
        .collect()
}

#[tokio::test]
async fn mariadb_json_bit_enum_set_year_spatial_durations_and_wide_unsigned_export_the_servers_values() {
    let maria = maria_fixture().await;
    maria.exec(MARIADB_TYPES).await;
    let files = file_target();
    let path = files.target.step_path("exec_maria_more", "step_1");
    let sql = "SELECT *, CAST(ubig AS UNSIGNED) AS ubig_expr, SEC_TO_TIME(90061) AS dur_expr \
               FROM more_types ORDER BY id";
    let output = extract(&maria.source(), &query(sql, vec![]), &files.target, &path)
        .await
        .expect("extract");
    assert_eq!(output.rows, 3);
    assert_eq!(objects(&files.target).await, vec![path.clone()]);
    let (batch, _) = read_parquet(&files.target, &path).await;
    use arrow::datatypes::DataType as T;
    // (column, Arrow type, the server's own value of it as bytes)
    for (column, data_type, server) in [
        ("js", T::Utf8, "js"),
        ("b1", T::Boolean, "b1 + 0"),
        ("b5", T::UInt64, "b5 + 0"),
        ("b64", T::UInt64, "b64 + 0"),
        ("en", T::Utf8, "en"),
        ("st", T::Utf8, "st"),
        ("yr", T::Int16, "yr"),
        ("g", T::Binary, "ST_AsBinary(g)"),
        ("pt", T::Binary, "ST_AsBinary(pt)"),
        ("pg", T::Binary, "ST_AsBinary(pg)"),
        ("tm0", T::Utf8, "tm0"),
        ("tm3", T::Utf8, "tm3"),
        ("ubig", T::UInt64, "ubig"),
        ("ubig_expr", T::UInt64, "CAST(ubig AS UNSIGNED)"),
        ("dur_expr", T::Utf8, "SEC_TO_TIME(90061)"),
    ] {
        assert_eq!(
            batch.schema().field_with_name(column).expect("field").data_type(),
            &data_type,
            "type of {column}"
        );
        let expected: Vec<Option<Vec<u8>>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT CAST({server} AS BINARY) FROM more_types ORDER BY id"
        )))
        .fetch_all(&maria.pool)
        .await
        .expect("server values");
        assert_eq!(as_bytes(&batch, column), expected, "values of {column}");
    }
    // A TIME column without durations stays a time of day.
    check(
        &batch,
        "in_day",
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(43_200_000_000),
            Some(0),
            None,
        ])),
    );
}
