//! Step results through the API: a real PostgreSQL step with a broad set
//! of types, read back as JSON, CSV and Parquet value for value, and a
//! result larger than one record batch read page by page.

use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::connectors::PgRole;
use crate::helpers::{TestApp, User, spawn_app};

/// A project with one PostgreSQL step running `query`, executed to
/// completion: the base path of its step results and the step id.
async fn run_step(app: &TestApp, user: &User, config: Value, query: &str) -> (String, String) {
    let reply = app
        .post(
            user,
            "/api/connectors",
            json!({"type": "postgresql", "display_name": "source", "config": config}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let connector = reply.body["uuid"].as_str().expect("uuid").to_owned();
    let project = app.create_project(user, "results").await;
    let reply = app
        .post(
            user,
            &format!("/api/projects/{project}/steps"),
            json!({"name": "extract", "type": "sql_query",
                   "config": {"connector_uuid": connector, "query": query}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let step = reply.body["step_id"].as_str().expect("step_id").to_owned();
    let reply = app
        .post(user, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let execution = reply.body["execution_id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = app
            .get(user, &format!("/api/projects/{project}/executions/{execution}"))
            .await;
        match reply.body["status"].as_str() {
            Some("completed") => break,
            Some("failed" | "cancelled") => panic!("the step did not complete: {}", reply.text),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the execution never finished: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (
        format!("/api/projects/{project}/executions/{execution}/steps/{step}/result"),
        step,
    )
}

/// The raw response to `path` as `user`.
async fn fetch(app: &TestApp, user: &User, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(user.token())
        .send()
        .await
        .expect("request")
}

/// The CSV text of a JSON value: None for null.
fn csv_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A database owned by a login role holding one table of many types,
/// dropped at the end.
struct TypesDb {
    name: String,
    // Dropped before its owner.
    _database: ferry_testkit::postgres::PgDatabase,
    role: PgRole,
}

impl TypesDb {
    async fn create() -> TypesDb {
        let role = PgRole::create().await;
        let database =
            ferry_testkit::postgres::PgDatabase::create_with("ferry_types", &format!("OWNER {}", role.name));
        let name = database.name.clone();
        let url = format!("postgres://{}:{}@127.0.0.1:5432/{name}", role.name, role.password);
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect as role");
        for statement in TYPES_TABLE {
            sqlx::query(statement).execute(&mut conn).await.expect(statement);
        }
        TypesDb {
            name,
            _database: database,
            role,
        }
    }

    fn config(&self) -> Value {
        let mut config = self.role.config();
        config["database"] = json!(self.name);
        config
    }
}

const TYPES_TABLE: [&str; 2] = [
    "create table kinds (id int4 primary key, big int8, small int4, amount numeric(10,3), ratio float8,
       single float4, flag bool, day date, at timestamp, at_tz timestamptz, clock time, raw bytea,
       note text, ints int4[], texts text[], doc jsonb, ident uuid, span interval)",
    r#"insert into kinds values
  (1, 9007199254740993, 42, 1234.5, 'NaN', 0.1, true,
   '2024-02-29', '2024-01-31 13:45:00.123456', '2024-01-31 13:45:00.5+02',
   '13:45:06.25', '\x00ff10', E'a,b "quoted"\nline 2', '{1,NULL,3}',
   '{x,NULL,"y,z"}', '{"k": [1, 2], "a": "b"}',
   'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '1 year 2 months 3 days 04:05:06.5'),
  (2, -9007199254740993, -7, -0.001, 'Infinity', -2.5, false,
   'infinity', 'infinity', 'infinity',
   '24:00:00', '', '', '{}',
   '{}', 'null',
   '00000000-0000-0000-0000-000000000000', '-1 day -02:00:00'),
  (3, null, null, null, '-Infinity', null, null,
   '-infinity', '-infinity', '-infinity',
   null, null, null, null,
   null, null,
   null, null)"#,
];

const TYPES_QUERY: &str = "select * from kinds order by id";

/// What each column of [`TYPES_TABLE`] reads as in JSON, row by row.
fn expected_types(span_native: bool) -> Vec<(&'static str, [Value; 3])> {
    let span = if span_native {
        [json!("P1Y2M3DT4H5M6.5S"), json!("P-1DT-2H"), Value::Null]
    } else {
        [
            json!("1 year 2 mons 3 days 04:05:06.5"),
            json!("-1 days -02:00:00"),
            Value::Null,
        ]
    };
    vec![
        ("id", [json!(1), json!(2), json!(3)]),
        (
            "big",
            [json!("9007199254740993"), json!("-9007199254740993"), Value::Null],
        ),
        ("small", [json!(42), json!(-7), Value::Null]),
        ("amount", [json!("1234.500"), json!("-0.001"), Value::Null]),
        ("ratio", [json!("NaN"), json!("Infinity"), json!("-Infinity")]),
        ("single", [json!(0.1), json!(-2.5), Value::Null]),
        ("flag", [json!(true), json!(false), Value::Null]),
        (
            "day",
            [json!("2024-02-29"), json!("infinity"), json!("-infinity")],
        ),
        (
            "at",
            [
                json!("2024-01-31T13:45:00.123456"),
                json!("infinity"),
                json!("-infinity"),
            ],
        ),
        (
            "at_tz",
            [
                json!("2024-01-31T11:45:00.500Z"),
                json!("infinity"),
                json!("-infinity"),
            ],
        ),
        ("clock", [json!("13:45:06.250"), json!("24:00:00"), Value::Null]),
        ("raw", [json!("AP8Q"), json!(""), Value::Null]),
        ("note", [json!("a,b \"quoted\"\nline 2"), json!(""), Value::Null]),
        ("ints", [json!([1, null, 3]), json!([]), Value::Null]),
        ("texts", [json!(["x", null, "y,z"]), json!([]), Value::Null]),
        (
            "doc",
            [json!(r#"{"a": "b", "k": [1, 2]}"#), json!("null"), Value::Null],
        ),
        (
            "ident",
            [
                json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                json!("00000000-0000-0000-0000-000000000000"),
                Value::Null,
            ],
        ),
        ("span", span),
    ]
}

#[tokio::test]
async fn a_postgresql_step_of_every_common_type_reads_back_alike_as_json_csv_and_parquet() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let db = TypesDb::create().await;
    let (path, _) = run_step(&app, &alice, db.config(), TYPES_QUERY).await;

    let parquet = fetch(&app, &alice, &format!("{path}?format=parquet")).await;
    assert_eq!(parquet.status(), StatusCode::OK);
    let bytes = parquet.bytes().await.expect("parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("parquet")
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("batches");
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat");
    let column = |name: &str| batch.column_by_name(name).expect(name).clone();
    let big = column("big");
    assert_eq!(big.as_primitive::<Int64Type>().value(0), 9_007_199_254_740_993);
    assert_eq!(big.as_primitive::<Int64Type>().value(1), -9_007_199_254_740_993);
    assert!(big.is_null(2));
    let amount = column("amount");
    assert_eq!(amount.data_type(), &DataType::Decimal128(10, 3));
    assert_eq!(amount.as_primitive::<Decimal128Type>().value(0), 1_234_500);
    let ratio = column("ratio");
    let ratio = ratio.as_primitive::<Float64Type>();
    assert!(ratio.value(0).is_nan());
    assert_eq!(ratio.value(1), f64::INFINITY);
    assert_eq!(ratio.value(2), f64::NEG_INFINITY);
    let day = column("day");
    assert_eq!(day.as_primitive::<Date32Type>().value(1), i32::MAX);
    assert_eq!(day.as_primitive::<Date32Type>().value(2), -i32::MAX);
    let at_tz = column("at_tz");
    assert_eq!(
        at_tz.data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(
        at_tz.as_primitive::<TimestampMicrosecondType>().value(0),
        1_706_701_500_500_000
    );
    assert_eq!(
        at_tz.as_primitive::<TimestampMicrosecondType>().value(1),
        i64::MAX
    );
    let note = column("note");
    assert_eq!(note.as_string::<i32>().value(0), "a,b \"quoted\"\nline 2");
    let raw = column("raw");
    assert_eq!(raw.as_binary::<i32>().value(0), &[0, 255, 16]);
    let ints = column("ints");
    let first = ints.as_list::<i32>().value(0);
    assert_eq!(first.len(), 3);
    assert!(first.is_null(1));
    // PostgreSQL's interval is an Arrow interval where the extractor maps
    // it natively, else the server's text: either way all formats agree.
    let span_native = matches!(column("span").data_type(), DataType::Interval(_));
    let expected = expected_types(span_native);

    let json = app.get(&alice, &path).await;
    assert_eq!(json.status, StatusCode::OK, "{}", json.text);
    let rows = json.body["data"].as_array().expect("data");
    assert_eq!(rows.len(), 3, "{}", json.text);
    for (name, values) in &expected {
        for (row, value) in values.iter().enumerate() {
            assert_eq!(&rows[row][name], value, "JSON column {name}, row {row}");
        }
    }
    let column = |name: &str| {
        json.body["columns"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .map(|c| c["type"].clone())
    };
    assert_eq!(column("at_tz"), Some(json!("timestamptz")));
    assert_eq!(column("amount"), Some(json!("decimal(10,3)")));
    assert_eq!(json.body["truncated"], false);
    assert_eq!(json.body["total_rows"], 3);

    let csv = fetch(&app, &alice, &format!("{path}?format=csv")).await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert_eq!(csv.headers()["x-ferry-total-rows"], "3");
    assert_eq!(csv.headers()["x-ferry-expected-rows"], "3");
    let text = csv.text().await.expect("csv");
    let records = ferry_testkit::csv::parse(&text);
    assert_eq!(records.len(), 4, "{text}");
    let header: Vec<Option<String>> = expected
        .iter()
        .map(|(name, _)| Some((*name).to_owned()))
        .collect();
    assert_eq!(records[0], header);
    for (column, (name, values)) in expected.iter().enumerate() {
        for (row, value) in values.iter().enumerate() {
            assert_eq!(
                records[row + 1][column],
                csv_of(value),
                "CSV column {name}, row {row}"
            );
        }
    }
}

#[tokio::test]
async fn a_result_of_many_record_batches_streams_page_by_page() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let role = PgRole::create().await;
    let (path, _) = run_step(
        &app,
        &alice,
        role.config(),
        "select g as id, md5(g::text) || ', ' || repeat('x', g % 40) as label from generate_series(1, 50000) g order by g",
    )
    .await;
    for offset in (0..50_000).step_by(10_000) {
        let response = fetch(&app, &alice, &format!("{path}?limit=10000&offset={offset}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.content_length(),
            None,
            "the page streams without a length"
        );
        let page: Value = response.json().await.expect("json");
        let rows = page["data"].as_array().expect("data");
        assert_eq!(rows.len(), 10_000, "offset {offset}");
        for (index, row) in rows.iter().enumerate() {
            assert_eq!(row["id"], json!(offset + index + 1), "offset {offset}");
        }
        assert_eq!(page["total_rows"], 50_000);
        assert_eq!(page["truncated"], false);
        let next = if offset + 10_000 < 50_000 {
            json!(offset + 10_000)
        } else {
            Value::Null
        };
        assert_eq!(page["next_offset"], next);
    }
    let tail = app.get(&alice, &format!("{path}?limit=10000&offset=45000")).await;
    assert_eq!(tail.body["data"].as_array().map(Vec::len), Some(5_000));
    assert_eq!(tail.body["next_offset"], Value::Null);

    let csv = fetch(
        &app,
        &alice,
        &format!("{path}?format=csv&limit=10000&offset=20000"),
    )
    .await;
    assert_eq!(csv.headers()["x-ferry-expected-rows"], "10000");
    let records = ferry_testkit::csv::parse(&csv.text().await.expect("csv"));
    assert_eq!(records.len(), 10_001);
    for (index, record) in records.iter().skip(1).enumerate() {
        assert_eq!(record[0], Some((20_001 + index).to_string()));
        assert!(record[1].as_deref().is_some_and(|l| l.contains(", ")));
    }
}
