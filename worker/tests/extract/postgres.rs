//! PostgreSQL: every mapped type round-trips value for value, COPY and the
//! extended protocol agree byte for byte, parameters stay values, large
//! results stream in parts and row groups, cancel and fencing leave nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, BooleanBuilder, Date32Array, Decimal128Array,
    Decimal128Builder, Float64Array, Int16Array, Int32Array, Int32Builder, Int64Array, ListBuilder,
    StringArray, StringBuilder, Time64MicrosecondArray, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Float32Type, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{NaiveDate, NaiveDateTime};
use ferry_shared::domain::params::ParamValue;
use ferry_worker::extract::{
    Destination, ExtractError, ExtractOptions, ReadPath, StepOutput, run_sql_step_with,
};
use ferry_worker::sink::UploadJournal;
use tokio_util::sync::CancellationToken;

use ferry_shared::objects::ObjectTarget;
use object_store::path::Path;

use crate::helpers::*;

const EVERYTHING: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE everything (
    id int4 PRIMARY KEY,
    i2 int2, i4 int4, i8 int8, o oid,
    f4 float4, f8 float8,
    n numeric(12,2), n_wide numeric(38,20), n_free numeric,
    t text, vc varchar(10), bp char(4), nm name, ch "char",
    b bool,
    d date, tm time, ts timestamp, tstz timestamptz,
    u uuid, j json, jb jsonb, by bytea, m mood,
    a_i4 int4[], a_t text[], a_n numeric(6,2)[], a_ts timestamptz[], a_b bool[]
);
INSERT INTO everything VALUES
 (1, -32768, -2147483648, -9223372036854775808, 0,
  -1.5, '-Infinity',
  -9999999999.99, -123456789012345678.12345678901234567890, -0.000000000123,
  '', 'héllo', 'ab', 'pg_class', 'x',
  false,
  '1999-12-31', '00:00:00', '1999-12-31 23:59:59.999999', '1999-12-31 23:59:59.999999+00',
  '00000000-0000-0000-0000-000000000000', '{"a": [1, 2]}', '{"b": null}', '\x', 'sad',
  '{}', '{a,NULL,"c d"}', '{-1.50,NULL}', '{"2000-01-01 00:00:00+00"}', '{{true,false},{false,true}}'),
 (2, 32767, 2147483647, 9223372036854775807, 4294967295,
  'NaN', 1e308,
  9999999999.99, 999999999999999999.99999999999999999999, 123456789.5,
  E'multi\nline "quoted" ✓', '', 'abcd', 'x', 'y',
  true,
  '2000-01-01', '23:59:59.999999', '2000-01-01 00:00:00', '2000-01-01 00:00:00+00',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[]', '{"k": [1, "two", {"x": 3.5}]}', '\xdeadbeef00', 'happy',
  '{1,NULL,-3}', '{}', NULL, '{NULL}', NULL),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 0, 0, 1, 0, 0, 0, 0, 1e20, 'x', 'x', 'x', 'x', 'x', true,
  'infinity', '12:00:00', '-infinity', 'infinity',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', '1', '\x00', 'happy',
  '{0}', '{""}', '{0.01}', '{"1999-12-31 23:59:59.999999+00"}', '{true}'),
 (5, 0, 0, 0, 1, 0, 0, 0, 0, -0.00000000005, 'x', 'x', 'x', 'x', 'x', true,
  '-infinity', '12:00:00', 'infinity', '-infinity',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', '"s"', '\x00', 'happy',
  '{0}', '{""}', '{0.01}', '{}', '{}'),
 (6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 'x', 'x', 'x', 'x', 'x', true,
  '0001-01-01', '12:00:00', '1969-12-31 23:59:59.999999', '1969-12-31 23:59:59.999999-05',
  'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', 'null', '\x00', 'happy',
  '{0}', '{""}', '{0.01}', '{}', '{}');
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

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()))
}

fn check(batch: &RecordBatch, name: &str, expected: ArrayRef) {
    let actual = column(batch, name);
    assert_eq!(actual.data_type(), expected.data_type(), "type of {name}");
    assert_eq!(actual.as_ref(), expected.as_ref(), "values of {name}");
}

fn decimal(values: &[Option<i128>], precision: u8, scale: i8) -> ArrayRef {
    Arc::new(
        Decimal128Array::from(values.to_vec())
            .with_precision_and_scale(precision, scale)
            .expect("decimal"),
    )
}

fn timestamps(values: &[Option<i64>], utc: bool) -> ArrayRef {
    let array = TimestampMicrosecondArray::from(values.to_vec());
    Arc::new(if utc { array.with_timezone("UTC") } else { array })
}

/// The `everything` table as Arrow, written by hand from the INSERT above.
fn check_everything(batch: &RecordBatch) {
    assert_eq!(batch.num_rows(), 6);
    check(batch, "id", Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5, 6])));
    check(
        batch,
        "i2",
        Arc::new(Int16Array::from(vec![
            Some(-32768),
            Some(32767),
            None,
            Some(0),
            Some(0),
            Some(0),
        ])),
    );
    check(
        batch,
        "i4",
        Arc::new(Int32Array::from(vec![
            Some(i32::MIN),
            Some(i32::MAX),
            None,
            Some(0),
            Some(0),
            Some(0),
        ])),
    );
    check(
        batch,
        "i8",
        Arc::new(Int64Array::from(vec![
            Some(i64::MIN),
            Some(i64::MAX),
            None,
            Some(0),
            Some(0),
            Some(0),
        ])),
    );
    check(
        batch,
        "o",
        Arc::new(Int64Array::from(vec![
            Some(0),
            Some(4_294_967_295),
            None,
            Some(1),
            Some(1),
            Some(1),
        ])),
    );
    let f4 = column(batch, "f4").as_primitive::<Float32Type>();
    assert_eq!(f4.data_type(), &DataType::Float32);
    assert_eq!(f4.value(0), -1.5);
    assert!(f4.value(1).is_nan());
    assert!(f4.is_null(2));
    check(
        batch,
        "f8",
        Arc::new(Float64Array::from(vec![
            Some(f64::NEG_INFINITY),
            Some(1e308),
            None,
            Some(0.0),
            Some(0.0),
            Some(0.0),
        ])),
    );
    check(
        batch,
        "n",
        decimal(
            &[
                Some(-999_999_999_999),
                Some(999_999_999_999),
                None,
                Some(0),
                Some(0),
                Some(0),
            ],
            12,
            2,
        ),
    );
    check(
        batch,
        "n_wide",
        decimal(
            &[
                Some(-12_345_678_901_234_567_812_345_678_901_234_567_890),
                Some(99_999_999_999_999_999_999_999_999_999_999_999_999),
                None,
                Some(0),
                Some(0),
                Some(0),
            ],
            38,
            20,
        ),
    );
    // Unconstrained: Decimal128(38, 10), rounded half away from zero.
    check(
        batch,
        "n_free",
        decimal(
            &[
                Some(-1),
                Some(1_234_567_895_000_000_000),
                None,
                Some(10i128.pow(30)),
                Some(-1),
                Some(0),
            ],
            38,
            10,
        ),
    );
    let text = |values: &[Option<&str>]| -> ArrayRef { Arc::new(StringArray::from(values.to_vec())) };
    check(
        batch,
        "t",
        text(&[
            Some(""),
            Some("multi\nline \"quoted\" ✓"),
            None,
            Some("x"),
            Some("x"),
            Some("x"),
        ]),
    );
    check(
        batch,
        "vc",
        text(&[Some("héllo"), Some(""), None, Some("x"), Some("x"), Some("x")]),
    );
    check(
        batch,
        "bp",
        text(&[
            Some("ab  "),
            Some("abcd"),
            None,
            Some("x   "),
            Some("x   "),
            Some("x   "),
        ]),
    );
    check(
        batch,
        "nm",
        text(&[Some("pg_class"), Some("x"), None, Some("x"), Some("x"), Some("x")]),
    );
    check(
        batch,
        "ch",
        text(&[Some("x"), Some("y"), None, Some("x"), Some("x"), Some("x")]),
    );
    check(
        batch,
        "b",
        Arc::new(BooleanArray::from(vec![
            Some(false),
            Some(true),
            None,
            Some(true),
            Some(true),
            Some(true),
        ])),
    );
    check(
        batch,
        "d",
        Arc::new(Date32Array::from(vec![
            Some(days("1999-12-31")),
            Some(days("2000-01-01")),
            None,
            Some(i32::MAX),
            Some(-i32::MAX),
            Some(days("0001-01-01")),
        ])),
    );
    check(
        batch,
        "tm",
        Arc::new(Time64MicrosecondArray::from(vec![
            Some(0),
            Some(86_399_999_999),
            None,
            Some(43_200_000_000),
            Some(43_200_000_000),
            Some(43_200_000_000),
        ])),
    );
    check(
        batch,
        "ts",
        timestamps(
            &[
                Some(micros("1999-12-31 23:59:59.999999")),
                Some(micros("2000-01-01 00:00:00")),
                None,
                Some(-i64::MAX),
                Some(i64::MAX),
                Some(micros("1969-12-31 23:59:59.999999")),
            ],
            false,
        ),
    );
    check(
        batch,
        "tstz",
        timestamps(
            &[
                Some(micros("1999-12-31 23:59:59.999999")),
                Some(micros("2000-01-01 00:00:00")),
                None,
                Some(i64::MAX),
                Some(-i64::MAX),
                Some(micros("1970-01-01 04:59:59.999999")),
            ],
            true,
        ),
    );
    let ones = "ffffffff-ffff-ffff-ffff-ffffffffffff";
    check(
        batch,
        "u",
        text(&[
            Some("00000000-0000-0000-0000-000000000000"),
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            None,
            Some(ones),
            Some(ones),
            Some(ones),
        ]),
    );
    check(
        batch,
        "j",
        text(&[
            Some(r#"{"a": [1, 2]}"#),
            Some("[]"),
            None,
            Some("null"),
            Some("null"),
            Some("null"),
        ]),
    );
    check(
        batch,
        "jb",
        text(&[
            Some(r#"{"b": null}"#),
            Some(r#"{"k": [1, "two", {"x": 3.5}]}"#),
            None,
            Some("1"),
            Some(r#""s""#),
            Some("null"),
        ]),
    );
    check(
        batch,
        "by",
        Arc::new(BinaryArray::from(vec![
            Some(&b""[..]),
            Some(&b"\xde\xad\xbe\xef\x00"[..]),
            None,
            Some(&b"\x00"[..]),
            Some(&b"\x00"[..]),
            Some(&b"\x00"[..]),
        ])),
    );
    check(
        batch,
        "m",
        text(&[
            Some("sad"),
            Some("happy"),
            None,
            Some("happy"),
            Some("happy"),
            Some("happy"),
        ]),
    );

    let mut a_i4 = ListBuilder::new(Int32Builder::new());
    a_i4.append(true);
    a_i4.values().append_value(1);
    a_i4.values().append_null();
    a_i4.values().append_value(-3);
    a_i4.append(true);
    a_i4.append(false);
    for _ in 0..3 {
        a_i4.values().append_value(0);
        a_i4.append(true);
    }
    check(batch, "a_i4", Arc::new(a_i4.finish()));

    let mut a_t = ListBuilder::new(StringBuilder::new());
    a_t.values().append_value("a");
    a_t.values().append_null();
    a_t.values().append_value("c d");
    a_t.append(true);
    a_t.append(true);
    a_t.append(false);
    for _ in 0..3 {
        a_t.values().append_value("");
        a_t.append(true);
    }
    check(batch, "a_t", Arc::new(a_t.finish()));

    let mut a_n = ListBuilder::new(Decimal128Builder::new().with_data_type(DataType::Decimal128(6, 2)));
    a_n.values().append_value(-150);
    a_n.values().append_null();
    a_n.append(true);
    a_n.append(false);
    a_n.append(false);
    for _ in 0..3 {
        a_n.values().append_value(1);
        a_n.append(true);
    }
    check(batch, "a_n", Arc::new(a_n.finish()));

    let mut a_ts = ListBuilder::new(TimestampMicrosecondBuilder::new().with_timezone("UTC"));
    a_ts.values().append_value(micros("2000-01-01 00:00:00"));
    a_ts.append(true);
    a_ts.values().append_null();
    a_ts.append(true);
    a_ts.append(false);
    a_ts.values().append_value(micros("1999-12-31 23:59:59.999999"));
    a_ts.append(true);
    a_ts.append(true);
    a_ts.append(true);
    check(batch, "a_ts", Arc::new(a_ts.finish()));

    // A two-dimensional array is flattened in row-major order.
    let mut a_b = ListBuilder::new(BooleanBuilder::new());
    for v in [true, false, false, true] {
        a_b.values().append_value(v);
    }
    a_b.append(true);
    a_b.append(false);
    a_b.append(false);
    a_b.values().append_value(true);
    a_b.append(true);
    a_b.append(true);
    a_b.append(true);
    check(batch, "a_b", Arc::new(a_b.finish()));
}

#[tokio::test]
async fn every_mapped_postgres_type_round_trips_value_for_value_through_copy() {
    let pg = pg_fixture().await;
    pg.exec(EVERYTHING).await;
    let files = file_target();
    let path = files.target.step_path("exec_types", "step_copy");
    let output = extract(
        &pg.source(),
        &query("SELECT * FROM everything ORDER BY id", vec![]),
        &files.target,
        &path,
    )
    .await
    .expect("extract");
    assert_eq!(output.read_path, ReadPath::PostgresCopy);
    assert_eq!(output.rows, 6);
    let (batch, metadata) = read_parquet(&files.target, &path).await;
    assert_eq!(
        output.bytes as usize,
        object_bytes(&files.target, &path).await.len()
    );
    let column = metadata.row_group(0).column(0);
    assert!(
        matches!(column.compression(), parquet::basic::Compression::ZSTD(_)),
        "{:?}",
        column.compression()
    );
    check_everything(&batch);
}

#[tokio::test]
async fn copy_and_the_parameterised_extended_protocol_write_identical_parquet() {
    let pg = pg_fixture().await;
    pg.exec(EVERYTHING).await;
    let files = file_target();
    let copy_path = files.target.step_path("exec_paths", "copy");
    let copy = extract(
        &pg.source(),
        &query("SELECT * FROM everything ORDER BY id", vec![]),
        &files.target,
        &copy_path,
    )
    .await
    .expect("copy");
    assert_eq!(copy.read_path, ReadPath::PostgresCopy);

    let bound_path = files.target.step_path("exec_paths", "bound");
    let bound = query(
        "SELECT * FROM everything WHERE id > $1 AND t IS DISTINCT FROM $2 ORDER BY id",
        vec![
            ParamValue::Integer(-1000),
            ParamValue::Text("no such text".into()),
        ],
    );
    let extended = extract(&pg.source(), &bound, &files.target, &bound_path)
        .await
        .expect("extended");
    assert_eq!(extended.read_path, ReadPath::PostgresExtended);

    let forced_path = files.target.step_path("exec_paths", "forced");
    let forced_options = ExtractOptions {
        postgres_copy: false,
        ..ExtractOptions::default()
    };
    let plain = query("SELECT * FROM everything ORDER BY id", vec![]);
    let forced = extract_with(&forced_options, &pg.source(), &plain, &files.target, &forced_path)
        .await
        .expect("forced");
    assert_eq!(forced.read_path, ReadPath::PostgresExtended);

    let copy_bytes = object_bytes(&files.target, &copy_path).await;
    assert_eq!(
        copy_bytes,
        object_bytes(&files.target, &bound_path).await,
        "COPY vs bound extended protocol"
    );
    assert_eq!(
        copy_bytes,
        object_bytes(&files.target, &forced_path).await,
        "COPY vs extended protocol"
    );
    let (batch, _) = read_parquet(&files.target, &bound_path).await;
    check_everything(&batch);
}

#[tokio::test]
async fn an_injection_attempt_through_a_parameter_is_only_a_value() {
    let pg = pg_fixture().await;
    pg.exec("CREATE TABLE t (name text); INSERT INTO t VALUES ('alice'), ('''; DROP TABLE t; --')")
        .await;
    let files = file_target();
    let attack = "'; DROP TABLE t; --";
    for (n, value) in [(0, "nobody'; DROP TABLE t; --"), (1, attack)] {
        let path = files.target.step_path("exec_inject", &format!("step_{n}"));
        let bound = query(
            "SELECT count(*) AS n FROM t WHERE name = $1",
            vec![ParamValue::Text(value.into())],
        );
        extract(&pg.source(), &bound, &files.target, &path)
            .await
            .expect("extract");
        let (batch, _) = read_parquet(&files.target, &path).await;
        assert_eq!(
            batch
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            n,
            "matches for {value}"
        );
    }
    let still_there: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&pg.pool)
        .await
        .expect("table t still exists");
    assert_eq!(still_there, 2);
}

const WIDE_ROWS: &str = "SELECT g AS id, md5(g::text) AS a, md5((g + 1)::text) AS b, md5((g + 2)::text) AS c, \
                         md5((g + 3)::text) AS d FROM generate_series(1, 300000) AS g";

#[tokio::test]
async fn a_result_larger_than_one_part_uploads_several_parts_and_flushes_row_groups_on_file_storage() {
    let pg = pg_fixture().await;
    let files = file_target();
    let (target, parts) = CountingStore::wrap(&files.target);
    let path = target.step_path("exec_large", "step_1");
    let options = options_with_parts(1024 * 1024, 100_000);
    let output = extract_with(&options, &pg.source(), &query(WIDE_ROWS, vec![]), &target, &path)
        .await
        .expect("extract");
    assert_eq!(output.rows, 300_000);
    assert!(
        parts.load(Ordering::SeqCst) >= 5,
        "parts written: {}",
        parts.load(Ordering::SeqCst)
    );
    assert_eq!(output.parts, parts.load(Ordering::SeqCst));
    let (batch, metadata) = read_parquet(&target, &path).await;
    assert_eq!(batch.num_rows(), 300_000);
    assert_eq!(metadata.num_row_groups(), 3);
    assert_eq!(output.row_groups, 3);
    let ids = batch.column(0).as_primitive::<arrow::datatypes::Int32Type>();
    assert_eq!((ids.value(0), ids.value(299_999)), (1, 300_000));
    assert_eq!(
        objects(&files.target).await,
        vec![path.clone()],
        "only the object, no staging files"
    );
}

#[tokio::test]
async fn a_result_larger_than_one_part_uploads_several_parts_on_s3() {
    let pg = pg_fixture().await;
    let s3 = s3_peer().await;
    let target = s3.target("tenant-a");
    let path = target.step_path("exec_large", "step_1");
    let options = options_with_parts(5 * 1024 * 1024, 100_000);
    let output = extract_with(&options, &pg.source(), &query(WIDE_ROWS, vec![]), &target, &path)
        .await
        .expect("extract");
    assert!(output.parts >= 3, "{output:?}");
    // S3 names a multipart object's part count in its ETag.
    let e_tag = output.e_tag.clone().expect("e_tag");
    assert!(
        e_tag.trim_matches('"').ends_with(&format!("-{}", output.parts)),
        "ETag {e_tag} for {} parts",
        output.parts
    );
    let (batch, metadata) = read_parquet(&target, &path).await;
    assert_eq!(batch.num_rows(), 300_000);
    assert_eq!(metadata.num_row_groups(), 3);
    assert_eq!(
        target.url_of(&path),
        format!("s3://ferry-results/tenant-a/results/exec_large/step_1.parquet")
    );
    assert_eq!(s3.open_uploads().await, 0);
}

/// Runs [`WIDE_ROWS`] to `path` on S3 in 5 MiB parts with `journal`.
async fn journaled_extract(
    pg: &PgFixture,
    target: &ObjectTarget,
    path: &Path,
    journal: UploadJournal,
) -> Result<StepOutput, ExtractError> {
    run_sql_step_with(
        &options_with_parts(5 * 1024 * 1024, 100_000),
        &pg.source(),
        &query(WIDE_ROWS, vec![]),
        &Destination::new(target, path).journaled(journal),
        &|_, _| {},
        &CancellationToken::new(),
        || async { true },
    )
    .await
}

#[tokio::test]
async fn an_s3_upload_is_journaled_by_id_before_its_first_part() {
    let pg = pg_fixture().await;
    let s3 = s3_peer().await;
    let target = s3.target("journal");
    let path = target.step_path("exec_journal", "step_1");
    let seen: Arc<std::sync::Mutex<Vec<(String, usize)>>> = Arc::default();
    let journal: UploadJournal = {
        let (seen, parts_url) = (seen.clone(), s3.object_url(&path));
        Arc::new(move |id: String| {
            let (seen, parts_url) = (seen.clone(), parts_url.clone());
            Box::pin(async move {
                let parts = S3Peer::parts_at(&parts_url, &id).await;
                seen.lock().expect("seen").push((id, parts));
                true
            })
        })
    };
    let output = journaled_extract(&pg, &target, &path, journal)
        .await
        .expect("extract");
    assert!(output.parts >= 3, "{output:?}");
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1, "one upload, told once: {seen:?}");
    assert_eq!(seen[0].1, 0, "told before any part was sent");
    assert_eq!(s3.open_uploads().await, 0);
    let (batch, _) = read_parquet(&target, &path).await;
    assert_eq!(batch.num_rows(), 300_000);
}

#[tokio::test]
async fn a_journal_that_cannot_record_the_upload_aborts_it_and_publishes_nothing() {
    let pg = pg_fixture().await;
    let s3 = s3_peer().await;
    let target = s3.target("unrecorded");
    let path = target.step_path("exec_unrecorded", "step_1");
    let journal: UploadJournal = Arc::new(|_| Box::pin(async { false }));
    let error = journaled_extract(&pg, &target, &path, journal)
        .await
        .expect_err("refused");
    assert_eq!(error.error_type, "fenced", "{error:?}");
    assert_eq!(s3.open_uploads().await, 0);
    assert_eq!(objects(&target).await, Vec::<Path>::new());
}

#[tokio::test]
async fn cancel_mid_step_stops_the_query_and_leaves_no_object_nor_open_upload() {
    let pg = pg_fixture().await;
    let s3 = Arc::new(s3_peer().await);
    let target = s3.target("p");
    let path = target.step_path("exec_cancel", "step_1");
    let marker = unique("cancel_marker");
    // A set-returning function in the select list streams (one in FROM
    // would be materialised first).
    let sql = format!(
        "SELECT g AS id, md5(g::text) AS a, md5((g + 1)::text) AS b, '{marker}' AS m \
         FROM (SELECT generate_series(1, 100000000) AS g) AS s"
    );
    let cancel = CancellationToken::new();
    let progress = {
        let cancel = cancel.clone();
        move |_rows: i64, bytes: i64| {
            // Past two 5 MiB parts: the multipart upload is open by now.
            if bytes >= 11 * 1024 * 1024 {
                cancel.cancel();
            }
        }
    };
    // Watch the server's open uploads while the step runs.
    let watching = CancellationToken::new();
    let watcher = {
        let (s3, watching) = (s3.clone(), watching.clone());
        tokio::spawn(async move {
            let mut most = 0;
            while !watching.is_cancelled() {
                most = most.max(s3.open_uploads().await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        })
    };
    let options = options_with_parts(5 * 1024 * 1024, 50_000);
    let started = Instant::now();
    let error = run_sql_step_with(
        &options,
        &pg.source(),
        &query(&sql, vec![]),
        &Destination::new(&target, &path),
        &progress,
        &cancel,
        || async { true },
    )
    .await
    .expect_err("cancelled");
    watching.cancel();
    let most_open = watcher.await.expect("watcher");
    assert_eq!(error.error_type, "cancelled", "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(most_open, 1, "a multipart upload was open while the step ran");
    assert!(
        eventually(Duration::from_secs(5), || async {
            pg.running(&marker).await == 0
        })
        .await,
        "query still running"
    );
    assert_eq!(s3.open_uploads().await, 0, "multipart uploads left open");
    assert!(!exists(&target, &path).await);
    assert!(objects(&target).await.is_empty());
    // The pool still works after its connection was closed.
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pg.pool)
        .await
        .expect("pool usable");
    assert_eq!(one, 1);
}

#[tokio::test]
async fn cancel_before_the_first_row_stops_a_long_query_on_both_paths() {
    let pg = pg_fixture().await;
    let files = file_target();
    for (n, bound) in [
        query("SELECT 1 AS copy_sleep FROM pg_sleep(60)", vec![]),
        query(
            "SELECT 1 AS bound_sleep FROM pg_sleep($1)",
            vec![ParamValue::Number(60.0)],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let path = files.target.step_path("exec_sleep", &format!("step_{n}"));
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let error = run_sql_step_with(
            &ExtractOptions::default(),
            &pg.source(),
            &bound,
            &Destination::new(&files.target, &path),
            &|_, _| {},
            &cancel,
            || async { true },
        )
        .await
        .expect_err("cancelled");
        assert_eq!(error.error_type, "cancelled");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            eventually(Duration::from_secs(5), || async {
                pg.running("pg_sleep").await == 0
            })
            .await,
            "pg_sleep still running after cancel"
        );
        assert!(files.files().is_empty(), "{:?}", files.files());
    }
}

#[tokio::test]
async fn a_refused_fence_leaves_no_object_on_file_or_s3_storage() {
    let pg = pg_fixture().await;
    let files = file_target();
    let s3 = s3_peer().await;
    let s3_target = s3.target("fenced");
    for (target, part_size) in [(&files.target, 1024 * 1024), (&s3_target, 5 * 1024 * 1024)] {
        let path = target.step_path("exec_fence", "step_1");
        let cancel = CancellationToken::new();
        let options = options_with_parts(part_size, 1_000_000);
        let error = run_sql_step_with(
            &options,
            &pg.source(),
            &query(WIDE_ROWS, vec![]),
            &Destination::new(target, &path),
            &|_, _| {},
            &cancel,
            || async { false },
        )
        .await
        .expect_err("fenced");
        assert_eq!(error.error_type, "fenced");
        assert!(!exists(target, &path).await);
        assert!(objects(target).await.is_empty());
    }
    assert!(files.files().is_empty(), "{:?}", files.files());
    assert_eq!(s3.open_uploads().await, 0);
}

#[tokio::test]
async fn an_empty_result_is_a_parquet_file_with_the_schema() {
    let pg = pg_fixture().await;
    pg.exec(EVERYTHING).await;
    let files = file_target();
    let path = files.target.step_path("exec_empty", "step_1");
    let output = extract(
        &pg.source(),
        &query("SELECT * FROM everything WHERE false", vec![]),
        &files.target,
        &path,
    )
    .await
    .expect("extract");
    assert_eq!(output.rows, 0);
    let (batch, metadata) = read_parquet(&files.target, &path).await;
    assert_eq!(batch.num_rows(), 0);
    assert_eq!(metadata.num_row_groups(), 0);
    assert_eq!(batch.schema().fields().len(), 30);
    assert_eq!(
        batch.schema().field_with_name("n").expect("n").data_type(),
        &DataType::Decimal128(12, 2)
    );
    assert_eq!(
        batch.schema().field_with_name("tstz").expect("tstz").data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
}

#[tokio::test]
async fn statements_copy_refuses_fall_back_to_the_extended_protocol() {
    let pg = pg_fixture().await;
    let files = file_target();
    let path = files.target.step_path("exec_show", "step_1");
    let output = extract(
        &pg.source(),
        &query("SHOW server_version_num;", vec![]),
        &files.target,
        &path,
    )
    .await
    .expect("extract");
    assert_eq!(output.read_path, ReadPath::PostgresExtended);
    let (batch, _) = read_parquet(&files.target, &path).await;
    assert!(batch.column(0).as_string::<i32>().value(0).starts_with("15"));
}

#[tokio::test]
async fn a_trailing_semicolon_and_comment_still_extract() {
    let pg = pg_fixture().await;
    let files = file_target();
    let path = files.target.step_path("exec_comment", "step_1");
    let output = extract(
        &pg.source(),
        &query("SELECT 1 AS one, 1 AS one; -- the end", vec![]),
        &files.target,
        &path,
    )
    .await
    .expect("extract");
    let (batch, _) = read_parquet(&files.target, &path).await;
    assert_eq!(batch.num_rows(), 1);
    let names: Vec<_> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["one", "one_2"], "duplicate names made unique");
    assert!(matches!(
        output.read_path,
        ReadPath::PostgresCopy | ReadPath::PostgresExtended
    ));
}

#[tokio::test]
async fn an_interval_and_a_nan_numeric_export_as_text_where_they_once_failed() {
    let pg = pg_fixture().await;
    let files = file_target();
    let path = files.target.step_path("exec_bad", "step_1");
    extract(
        &pg.source(),
        &query(
            "SELECT interval '1 day' AS span, 'NaN'::numeric(10,2) AS amount, 1.5::numeric(10,2) AS fine",
            vec![],
        ),
        &files.target,
        &path,
    )
    .await
    .expect("interval and NaN export");
    let (batch, _) = read_parquet(&files.target, &path).await;
    check(&batch, "span", Arc::new(StringArray::from(vec!["1 day"])));
    check(&batch, "amount", Arc::new(StringArray::from(vec!["NaN"])));
    check(&batch, "fine", decimal(&[Some(15_000_000_000)], 38, 10));
    assert_eq!(objects(&files.target).await, vec![path]);
}

#[tokio::test]
async fn sql_errors_are_invalid_query_errors_and_leave_nothing() {
    let pg = pg_fixture().await;
    let files = file_target();
    let path = files.target.step_path("exec_err", "step_1");
    for sql in [
        "SELECT * FROM no_such_table",
        "SELECT 1 / (g - 5) FROM generate_series(1, 10) g",
    ] {
        let error = extract(&pg.source(), &query(sql, vec![]), &files.target, &path)
            .await
            .expect_err(sql);
        assert_eq!(error.error_type, "invalid_query", "{sql}: {error:?}");
        assert!(error.message.contains("SQLSTATE"), "{}", error.message);
    }
    assert!(files.files().is_empty());
}

/// A SQL_ASCII database stores whatever bytes it is given. Text that is
/// not UTF-8 cannot become an Arrow string: the step fails with a clear
/// error (the server itself refuses to send it to a UTF-8 client; the
/// decoder validates every batch as well) and publishes nothing, on both
/// read paths.
#[tokio::test]
async fn text_that_is_not_utf8_fails_the_step_and_publishes_nothing() {
    let pg = pg_fixture_with("ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'").await;
    pg.exec(
        "CREATE TABLE latin (id int, name text); \
         INSERT INTO latin SELECT g, 'row ' || g FROM generate_series(1, 20000) g; \
         INSERT INTO latin VALUES (20001, E'caf\\xe9')",
    )
    .await;
    let files = file_target();
    for (sql, params) in [
        ("SELECT id, name FROM latin ORDER BY id", vec![]),
        (
            "SELECT id, name FROM latin WHERE id > $1 ORDER BY id",
            vec![ParamValue::Integer(0)],
        ),
    ] {
        let path = files.target.step_path("exec_latin", "step_1");
        let error = extract(&pg.source(), &query(sql, params), &files.target, &path)
            .await
            .expect_err("not UTF-8");
        assert_eq!(error.error_type, "invalid_query", "{error:?}");
        assert!(error.message.contains("UTF8"), "{error:?}");
        assert_eq!(objects(&files.target).await, Vec::<Path>::new());
    }
}

#[tokio::test]
async fn progress_reports_running_totals_per_batch() {
    let pg = pg_fixture().await;
    let files = file_target();
    let path = files.target.step_path("exec_progress", "step_1");
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |rows: i64, bytes: i64| seen.lock().expect("lock").push((rows, bytes));
    let output = run_sql_step_with(
        &ExtractOptions::default(),
        &pg.source(),
        &query("SELECT g FROM generate_series(1, 40000) g", vec![]),
        &Destination::new(&files.target, &path),
        &progress,
        &CancellationToken::new(),
        || async { true },
    )
    .await
    .expect("extract");
    let seen = seen.into_inner().expect("seen");
    let rows: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(rows, [16_384, 32_768, 40_000, 40_000]);
    assert_eq!(seen.last().map(|(_, b)| *b), Some(output.bytes));
}

#[tokio::test]
async fn dropping_a_running_step_still_aborts_its_upload_and_cancels_its_query() {
    let pg = pg_fixture().await;
    let s3 = s3_peer().await;
    let target = s3.target("dropped");
    let path = target.step_path("exec_drop", "step_1");
    let marker = unique("drop_marker");
    let sql = format!(
        "SELECT g AS id, md5(g::text) AS a, md5((g + 1)::text) AS b, '{marker}' AS m \
         FROM (SELECT generate_series(1, 100000000) AS g) AS s"
    );
    let reached = Arc::new(tokio::sync::Notify::new());
    let progress = {
        let reached = reached.clone();
        move |_rows: i64, bytes: i64| {
            if bytes >= 11 * 1024 * 1024 {
                reached.notify_one();
            }
        }
    };
    let options = options_with_parts(5 * 1024 * 1024, 50_000);
    let cancel = CancellationToken::new();
    let (source, bound) = (pg.source(), query(&sql, vec![]));
    let destination = Destination::new(&target, &path);
    let step = run_sql_step_with(
        &options,
        &source,
        &bound,
        &destination,
        &progress,
        &cancel,
        || async { true },
    );
    tokio::select! {
        result = step => panic!("the step finished: {result:?}"),
        () = reached.notified() => {}
    }
    // The step's future is gone (its task was aborted): cleanup runs from
    // spawned tasks.
    assert!(
        eventually(Duration::from_secs(10), || async { s3.open_uploads().await == 0 }).await,
        "upload left open"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            pg.running(&marker).await == 0
        })
        .await,
        "query still running"
    );
    assert!(objects(&target).await.is_empty());
}

#[tokio::test]
async fn the_same_sql_bound_with_other_parameter_types_is_prepared_anew() {
    let pg = pg_fixture().await;
    // One connection, so the second run meets the first one's cached statement.
    let source = ferry_worker::extract::SqlSource::Postgres(pg_pool(&pg.database, 1).await);
    let files = file_target();
    let sql = "SELECT $1 AS v";
    let text_path = files.target.step_path("exec_types_change", "text");
    extract(
        &source,
        &query(sql, vec![ParamValue::Text("7".into())]),
        &files.target,
        &text_path,
    )
    .await
    .expect("text parameter");
    let int_path = files.target.step_path("exec_types_change", "int");
    extract(
        &source,
        &query(sql, vec![ParamValue::Integer(7)]),
        &files.target,
        &int_path,
    )
    .await
    .expect("integer parameter");
    let (text, _) = read_parquet(&files.target, &text_path).await;
    let (int, _) = read_parquet(&files.target, &int_path).await;
    assert_eq!(text.column(0).as_string::<i32>().value(0), "7");
    assert_eq!(
        int.column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        7
    );
}

#[tokio::test]
async fn a_column_type_changed_under_a_live_connection_is_read_with_its_new_type() {
    let pg = pg_fixture().await;
    pg.exec(r#"CREATE TABLE t (v text); INSERT INTO t VALUES ('{"a":1}')"#)
        .await;
    // One connection, so later runs meet the statements cached by earlier ones.
    let source = ferry_worker::extract::SqlSource::Postgres(pg_pool(&pg.database, 1).await);
    let files = file_target();
    let plain = query("SELECT v FROM t", vec![]);
    let bound = query("SELECT v FROM t WHERE $1", vec![ParamValue::Boolean(true)]);
    for (n, q) in [&plain, &bound].into_iter().enumerate() {
        let path = files.target.step_path("exec_alter", &format!("before_{n}"));
        extract(&source, q, &files.target, &path).await.expect("before");
        let (batch, _) = read_parquet(&files.target, &path).await;
        assert_eq!(batch.column(0).as_string::<i32>().value(0), r#"{"a":1}"#);
    }
    sqlx::raw_sql("ALTER TABLE t ALTER COLUMN v TYPE jsonb USING v::jsonb")
        .execute(&pg.admin_of_database().await)
        .await
        .expect("alter");

    let path = files.target.step_path("exec_alter", "after_copy");
    let output = extract(&source, &plain, &files.target, &path)
        .await
        .expect("COPY after ALTER");
    assert_eq!(output.read_path, ReadPath::PostgresCopy);
    let (batch, _) = read_parquet(&files.target, &path).await;
    assert_eq!(
        batch.column(0).as_string::<i32>().value(0),
        r#"{"a": 1}"#,
        "jsonb text, no version byte"
    );

    // The extended protocol may meet its stale statement once (the server
    // refuses it); the connection is then replaced and the retry succeeds.
    let path = files.target.step_path("exec_alter", "after_bound");
    if let Err(error) = extract(&source, &bound, &files.target, &path).await {
        assert!(error.message.contains("0A000"), "{error:?}");
        extract(&source, &bound, &files.target, &path)
            .await
            .expect("retry after a stale statement");
    }
    let (batch, _) = read_parquet(&files.target, &path).await;
    assert_eq!(batch.column(0).as_string::<i32>().value(0), r#"{"a": 1}"#);
}
