//! `sql_query` steps on the Databricks family against the stand-in
//! warehouse of `ferry-testkit` (the documented request and response
//! shapes on 127.0.0.1), through the real sink, read back from Parquet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Float64Type, Int32Type, Int64Type, Schema, TimeUnit,
};
use arrow::ipc::writer::StreamWriter;
use ferry_shared::connectors::TypeId;
use ferry_shared::objects::ObjectTarget;
use ferry_testkit::databricks::{Column, Plan, Warehouse, parameters};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::connectors::warehouse::testing::{open_pool, read_back, run_sql_step};
use crate::extract::StepOutput;

const TOKEN: &str = "dapi-test-token-0123456789";

struct Fixture {
    warehouse: Warehouse,
    target: ObjectTarget,
    policy: NetworkPolicy,
    handle: Box<dyn ConnectorPool>,
    _dir: TempDir,
}

async fn fixture() -> Fixture {
    fixture_with(TOKEN, json!({})).await
}

/// A warehouse, and a pool on it with `token` and the `extra` config fields.
async fn fixture_with(token: &str, extra: Value) -> Fixture {
    let warehouse = Warehouse::start(TOKEN).await;
    testing::serve_at(&warehouse.host, warehouse.addr, false);
    let mut config = warehouse.config(token);
    for (key, value) in extra.as_object().cloned().unwrap_or_default() {
        config[key] = value;
    }
    let spec = ConnectorSpec {
        uuid: "conn_databricks".into(),
        org_id: "org_test".into(),
        connector_type: "databricks".into(),
        version: 1,
        config: config.as_object().cloned().unwrap_or_default(),
    };
    let (policy, target, handle, dir) = open_pool(&Databricks, &spec).await;
    Fixture {
        warehouse,
        target,
        policy,
        handle,
        _dir: dir,
    }
}

impl Fixture {
    /// Runs a `sql_query` step with `config` and execution parameters
    /// `supplied`; the result's path and the outcome.
    async fn step(
        &self,
        config: Value,
        supplied: Value,
        cancel: &CancellationToken,
    ) -> (Path, Result<StepOutput, ExtractError>) {
        run_sql_step(
            self.handle.as_ref(),
            TypeId::Databricks,
            (&self.policy, &self.target),
            (config, supplied),
            cancel,
        )
        .await
    }

    async fn query(&self, query: &str) -> (Path, Result<StepOutput, ExtractError>) {
        self.step(json!({"query": query}), json!({}), &CancellationToken::new())
            .await
    }

    /// The Parquet object at `path` as one batch.
    async fn read_back(&self, path: &Path) -> RecordBatch {
        read_back(&self.target, path).await
    }

    /// Statement submissions the warehouse saw, throttled ones included.
    fn submits(&self) -> usize {
        let submit = "POST /api/2.0/sql/statements";
        self.warehouse.requests().iter().filter(|r| *r == submit).count()
    }

    async fn exists(&self, path: &Path) -> bool {
        self.target.store.head(path).await.is_ok()
    }
}

/// An Arrow IPC stream of `batches`.
fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
    let schema = batches[0].schema();
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).expect("writer");
    for batch in batches {
        writer.write(batch).expect("write");
    }
    writer.finish().expect("finish");
    writer.into_inner().expect("bytes")
}

fn texts(batch: &RecordBatch, column: usize) -> Vec<Option<String>> {
    let column = arrow::compute::cast(batch.column(column), &DataType::Utf8).expect("as text");
    column
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

fn sales_columns() -> Vec<Column> {
    vec![
        Column::new("id", "LONG"),
        Column::new("region", "STRING"),
        Column::decimal("amount", 10, 2),
        Column::new("sold_at", "TIMESTAMP"),
        Column::new("score", "DOUBLE"),
    ]
}

fn sales_rows() -> Vec<Vec<Value>> {
    vec![
        vec![
            json!("1"),
            json!("north"),
            json!("12.50"),
            json!("2024-03-01T09:30:00.000Z"),
            json!("0.5"),
        ],
        vec![
            json!("2"),
            json!("south"),
            json!("-3.05"),
            json!("2024-03-02T00:00:00.000Z"),
            json!("NaN"),
        ],
        vec![json!("3"), Value::Null, json!("0.00"), Value::Null, Value::Null],
        vec![
            json!("9007199254740993"),
            json!("ouest é"),
            json!("99999999.99"),
            json!("1999-12-31T23:59:59.999Z"),
            json!("-1E-3"),
        ],
        vec![
            json!("5"),
            json!(""),
            Value::Null,
            json!("2024-02-29T12:00:00.000Z"),
            json!("Infinity"),
        ],
    ]
}

fn assert_sales(batch: &RecordBatch) {
    assert_eq!(batch.num_rows(), 5);
    let schema = batch.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["id", "region", "amount", "sold_at", "score"]);
    let ids = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(ids.values().to_vec(), [1, 2, 3, 9_007_199_254_740_993, 5]);
    assert_eq!(
        texts(batch, 1),
        [
            Some("north".into()),
            Some("south".into()),
            None,
            Some("ouest é".into()),
            Some(String::new())
        ]
    );
    assert_eq!(batch.column(2).data_type(), &DataType::Decimal128(10, 2));
    let amounts = batch.column(2).as_primitive::<Decimal128Type>();
    assert_eq!(
        (0..5)
            .map(|i| amounts.is_valid(i).then(|| amounts.value(i)))
            .collect::<Vec<_>>(),
        [Some(1250), Some(-305), Some(0), Some(9_999_999_999), None]
    );
    assert_eq!(
        batch.column(3).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
    );
    assert_eq!(
        texts(batch, 3),
        [
            Some("2024-03-01T09:30:00Z".into()),
            Some("2024-03-02T00:00:00Z".into()),
            None,
            Some("1999-12-31T23:59:59.999Z".into()),
            Some("2024-02-29T12:00:00Z".into()),
        ]
    );
    let scores = batch.column(4).as_primitive::<Float64Type>();
    assert_eq!(scores.value(0), 0.5);
    assert!(scores.value(1).is_nan());
    assert!(scores.is_null(2));
    assert_eq!(scores.value(3), -0.001);
    assert_eq!(scores.value(4), f64::INFINITY);
}

#[tokio::test]
async fn databricks_inline_json_results_in_several_chunks_arrive_value_for_value() {
    let fx = fixture().await;
    fx.warehouse.refuse_arrow();
    fx.warehouse.refuse_external_links();
    fx.warehouse.on(
        "SELECT * FROM sales",
        Plan::rows(sales_columns(), sales_rows()).in_chunks_of(2),
    );
    let (path, outcome) = fx.query("SELECT * FROM sales").await;
    let output = outcome.expect("step");
    assert_eq!((output.rows, output.read_path), (5, ReadPath::Databricks));
    assert_sales(&fx.read_back(&path).await);
    let asked: Vec<(Value, Value)> = fx
        .warehouse
        .submissions()
        .iter()
        .map(|s| (s["disposition"].clone(), s["format"].clone()))
        .collect();
    assert_eq!(
        asked,
        [
            (json!("EXTERNAL_LINKS"), json!("ARROW_STREAM")),
            (json!("EXTERNAL_LINKS"), json!("JSON_ARRAY")),
            (json!("INLINE"), json!("JSON_ARRAY")),
        ]
    );
    let id = &fx.warehouse.statement_ids()[0];
    let chunks: Vec<String> = fx
        .warehouse
        .requests()
        .into_iter()
        .filter(|r| r.contains("/result/chunks/"))
        .collect();
    assert_eq!(
        chunks,
        [
            format!("GET /api/2.0/sql/statements/{id}/result/chunks/1"),
            format!("GET /api/2.0/sql/statements/{id}/result/chunks/2"),
        ]
    );
    // The pool remembers what the warehouse accepts.
    let (_, again) = fx.query("SELECT * FROM sales").await;
    again.expect("second step");
    assert_eq!(fx.warehouse.submissions()[3]["disposition"], "INLINE");
}

/// The sales rows as three Arrow chunks (2, 2 and 1 rows).
fn sales_arrow() -> Vec<(usize, Vec<u8>)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new(
            "sold_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            true,
        ),
        Field::new("score", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 9_007_199_254_740_993, 5])) as ArrayRef,
            Arc::new(StringArray::from(vec![
                Some("north"),
                Some("south"),
                None,
                Some("ouest é"),
                Some(""),
            ])),
            Arc::new(
                Decimal128Array::from(vec![Some(1250), Some(-305), Some(0), Some(9_999_999_999), None])
                    .with_precision_and_scale(10, 2)
                    .expect("decimal"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(1_709_285_400_000_000),
                    Some(1_709_337_600_000_000),
                    None,
                    Some(946_684_799_999_000),
                    Some(1_709_208_000_000_000),
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(arrow::array::Float64Array::from(vec![
                Some(0.5),
                Some(f64::NAN),
                None,
                Some(-0.001),
                Some(f64::INFINITY),
            ])),
        ],
    )
    .expect("batch");
    vec![
        (2, ipc(&[batch.slice(0, 1), batch.slice(1, 1)])),
        (2, ipc(&[batch.slice(2, 2)])),
        (1, ipc(&[batch.slice(4, 1)])),
    ]
}

#[tokio::test]
async fn databricks_arrow_chunks_stream_from_presigned_links_after_polling_without_the_token() {
    let fx = fixture().await;
    fx.warehouse.on(
        "SELECT * FROM sales",
        Plan::rows(sales_columns(), Vec::new())
            .with_arrow(sales_arrow())
            .after_polls(2),
    );
    let (path, outcome) = fx.query("SELECT * FROM sales").await;
    assert_eq!(outcome.expect("step").rows, 5);
    assert_sales(&fx.read_back(&path).await);
    let submission = &fx.warehouse.submissions()[0];
    assert_eq!(submission["warehouse_id"], json!(fx.warehouse.warehouse_id));
    assert_eq!(submission["statement"], "SELECT * FROM sales");
    assert_eq!(submission["wait_timeout"], "10s");
    assert_eq!(submission["on_wait_timeout"], "CONTINUE");
    assert_eq!(submission["disposition"], "EXTERNAL_LINKS");
    assert_eq!(submission["format"], "ARROW_STREAM");
    let id = &fx.warehouse.statement_ids()[0];
    let polls = fx
        .warehouse
        .requests()
        .iter()
        .filter(|r| **r == format!("GET /api/2.0/sql/statements/{id}"))
        .count();
    assert_eq!(polls, 3, "RUNNING twice, then SUCCEEDED");
    let downloads = fx.warehouse.downloads();
    assert_eq!(
        downloads.iter().map(|d| d.path.as_str()).collect::<Vec<_>>(),
        [
            format!("/presigned/{id}/0"),
            format!("/presigned/{id}/1"),
            format!("/presigned/{id}/2"),
        ]
    );
    assert!(
        downloads.iter().all(|d| d.authorization.is_none()),
        "{downloads:?}"
    );
    assert!(fx.warehouse.cancels().is_empty());
}

#[tokio::test]
async fn databricks_linked_json_chunks_are_read_when_arrow_is_not_offered() {
    let fx = fixture().await;
    fx.warehouse.refuse_arrow();
    fx.warehouse.on(
        "SELECT * FROM sales",
        Plan::rows(sales_columns(), sales_rows()).in_chunks_of(3),
    );
    let (path, outcome) = fx.query("SELECT * FROM sales").await;
    assert_eq!(outcome.expect("step").rows, 5);
    assert_sales(&fx.read_back(&path).await);
    assert_eq!(fx.warehouse.downloads().len(), 2);
    assert_eq!(fx.warehouse.submissions()[1]["format"], "JSON_ARRAY");
}

#[tokio::test]
async fn databricks_a_large_arrow_result_streams_chunk_by_chunk() {
    let fx = fixture().await;
    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let chunks: Vec<(usize, Vec<u8>)> = (0..40i64)
        .map(|chunk| {
            let values: Vec<i64> = (chunk * 5000..(chunk + 1) * 5000).collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(values)) as ArrayRef],
            )
            .expect("batch");
            (5000, ipc(&[batch]))
        })
        .collect();
    fx.warehouse.on(
        "SELECT id FROM range(200000)",
        Plan::rows(vec![Column::new("n", "LONG")], Vec::new()).with_arrow(chunks),
    );
    let (path, outcome) = fx.query("SELECT id FROM range(200000)").await;
    let output = outcome.expect("step");
    assert_eq!(output.rows, 200_000);
    let batch = fx.read_back(&path).await;
    let values = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(values.len(), 200_000);
    assert!(values.values().iter().enumerate().all(|(i, v)| *v == i as i64));
    assert_eq!(fx.warehouse.downloads().len(), 40);
}

#[tokio::test]
async fn databricks_parameters_travel_as_typed_named_markers_never_in_the_text() {
    let fx = fixture().await;
    fx.warehouse.refuse_arrow();
    let statement =
        "SELECT * FROM sales WHERE region = :region AND n > :n AND day = :day OR region = :region";
    fx.warehouse.on_request(statement, |body| {
        let given = parameters(body);
        let value = |name: &str| given[name][0].clone();
        Plan::rows(
            vec![
                Column::new("region", "STRING"),
                Column::new("n", "LONG"),
                Column::new("day", "DATE"),
            ],
            vec![vec![value("region"), value("n"), value("day")]],
        )
    });
    let sneaky = "north' OR 1=1 --";
    let (path, outcome) = fx
        .step(
            json!({
                "query": "SELECT * FROM sales WHERE region = {{region}} AND n > {{n}} AND day = {{ day }} OR region = {{region}}",
                "parameters": {"n": {"type": "integer"}, "day": {"type": "date", "default": "2024-03-01"}},
            }),
            json!({"region": sneaky, "n": 5}),
            &CancellationToken::new(),
        )
        .await;
    outcome.expect("step");
    let submission = &fx.warehouse.submissions()[0];
    assert_eq!(submission["statement"], statement);
    assert_eq!(
        submission["parameters"],
        json!([
            {"name": "region", "value": sneaky, "type": "STRING"},
            {"name": "n", "value": "5", "type": "BIGINT"},
            {"name": "day", "value": "2024-03-01", "type": "DATE"},
        ])
    );
    let batch = fx.read_back(&path).await;
    assert_eq!(texts(&batch, 0), [Some(sneaky.to_owned())]);
    assert_eq!(batch.column(1).as_primitive::<Int64Type>().value(0), 5);
    assert_eq!(texts(&batch, 2), [Some("2024-03-01".to_owned())]);
}

#[tokio::test]
async fn databricks_a_parameter_of_the_wrong_type_fails_before_anything_is_sent() {
    let fx = fixture().await;
    let (_, outcome) = fx
        .step(
            json!({"query": "SELECT {{n}}", "parameters": {"n": {"type": "integer"}}}),
            json!({"n": "five"}),
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(
        outcome.expect_err("mistyped").error_type,
        ErrorKind::InvalidParameters
    );
    assert!(fx.warehouse.submissions().is_empty());
}

#[tokio::test]
async fn databricks_a_failed_statement_carries_the_servers_error_code_and_message() {
    let fx = fixture().await;
    fx.warehouse.on(
        "SELEC 1",
        Plan::failing(
            "BAD_REQUEST",
            "[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'. SQLSTATE: 42601",
            "42601",
        )
        .after_polls(1),
    );
    let (path, outcome) = fx.query("SELEC 1").await;
    let error = outcome.expect_err("syntax error");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert_eq!(error.code.as_deref(), Some("BAD_REQUEST"));
    assert!(
        error
            .message
            .contains("[PARSE_SYNTAX_ERROR] Syntax error at or near 'SELEC'"),
        "{}",
        error.message
    );
    assert!(!fx.exists(&path).await);
    assert!(
        fx.warehouse.cancels().is_empty(),
        "a failed statement has nothing to cancel"
    );
}

#[tokio::test]
async fn databricks_cancelling_mid_poll_cancels_the_statement_and_leaves_no_object() {
    let fx = Arc::new(fixture().await);
    fx.warehouse.on("SELECT slow()", Plan::running_until_cancelled());
    let cancel = CancellationToken::new();
    let running = {
        let (fx, cancel) = (fx.clone(), cancel.clone());
        tokio::spawn(async move {
            fx.step(json!({"query": "SELECT slow()"}), json!({}), &cancel)
                .await
        })
    };
    let polled = ferry_testkit::eventually(Duration::from_secs(10), || {
        let fx = fx.clone();
        async move {
            fx.warehouse
                .requests()
                .iter()
                .filter(|r| r.starts_with("GET /api/2.0/sql/statements/"))
                .count()
                >= 2
        }
    })
    .await;
    assert!(polled, "the step never polled: {:?}", fx.warehouse.requests());
    let started = Instant::now();
    cancel.cancel();
    let (path, outcome) = running.await.expect("join");
    assert!(outcome.expect_err("cancelled").is_cancelled());
    assert!(started.elapsed() < Duration::from_secs(5));
    let id = fx.warehouse.statement_ids()[0].clone();
    assert_eq!(fx.warehouse.cancels(), std::slice::from_ref(&id));
    assert_eq!(fx.warehouse.statement_state(&id).as_deref(), Some("CANCELED"));
    assert!(!fx.exists(&path).await);
}

#[tokio::test]
async fn databricks_a_statement_past_its_timeout_is_cancelled_and_fails_with_timeout() {
    let fx = fixture_with(TOKEN, json!({"statement_timeout_seconds": 1})).await;
    fx.warehouse.on("SELECT slow()", Plan::running_until_cancelled());
    let (path, outcome) = fx.query("SELECT slow()").await;
    let error = outcome.expect_err("timeout");
    assert_eq!(error.error_type, ErrorKind::Timeout);
    assert_eq!(fx.warehouse.submissions()[0]["wait_timeout"], "0s");
    assert_eq!(fx.warehouse.cancels(), fx.warehouse.statement_ids());
    assert!(!fx.exists(&path).await);
}

#[tokio::test]
async fn databricks_rate_limits_are_waited_out_as_retry_after_says() {
    let fx = fixture().await;
    let schema = Arc::new(Schema::new(vec![Field::new("1", DataType::Int32, false)]));
    let one = RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::Int32Array::from(vec![1])) as ArrayRef],
    )
    .expect("batch");
    fx.warehouse.on(
        "SELECT 1",
        Plan::rows(vec![Column::new("1", "INT")], vec![vec![json!("1")]]).with_arrow(vec![(1, ipc(&[one]))]),
    );
    fx.warehouse.throttle(1, 429, Some("1"));
    fx.warehouse.throttle(1, 503, Some("1"));
    let started = Instant::now();
    let (path, outcome) = fx.query("SELECT 1").await;
    assert_eq!(outcome.expect("step").rows, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fx.submits(), 3);
    let batch = fx.read_back(&path).await;
    assert_eq!(batch.column(0).as_primitive::<Int32Type>().value(0), 1);
}

#[tokio::test]
async fn databricks_endless_rate_limiting_fails_the_step_as_rate_limited() {
    let fx = fixture().await;
    fx.warehouse.throttle(10, 429, Some("0"));
    let (_, outcome) = fx.query("SELECT 1").await;
    let error = outcome.expect_err("rate limited");
    assert_eq!(
        (error.error_type, error.code.as_deref()),
        (ErrorKind::RateLimited, Some("429"))
    );
    assert_eq!(fx.submits(), 5);
}

#[tokio::test]
async fn databricks_an_expired_link_is_fetched_again_through_its_chunk() {
    let fx = fixture().await;
    fx.warehouse.on(
        "SELECT * FROM sales",
        Plan::rows(sales_columns(), Vec::new()).with_arrow(sales_arrow()),
    );
    fx.warehouse.expire_links(1);
    let (path, outcome) = fx.query("SELECT * FROM sales").await;
    assert_eq!(outcome.expect("step").rows, 5);
    assert_sales(&fx.read_back(&path).await);
    let id = &fx.warehouse.statement_ids()[0];
    assert!(
        fx.warehouse
            .requests()
            .contains(&format!("GET /api/2.0/sql/statements/{id}/result/chunks/0")),
        "{:?}",
        fx.warehouse.requests()
    );
    assert_eq!(fx.warehouse.downloads().len(), 4);
}

#[tokio::test]
async fn databricks_a_bad_token_fails_the_step_with_authentication_failed() {
    let fx = fixture_with("dapi-wrong", json!({})).await;
    let (path, outcome) = fx.query("SELECT 1").await;
    let error = outcome.expect_err("refused");
    assert_eq!(
        (error.error_type, error.code.as_deref()),
        (ErrorKind::AuthenticationFailed, Some("401"))
    );
    assert!(!error.message.contains("dapi-wrong"));
    assert!(!fx.exists(&path).await);
}

#[tokio::test]
async fn databricks_an_empty_result_is_a_parquet_object_with_the_manifests_columns() {
    let fx = fixture().await;
    fx.warehouse.on(
        "SELECT * FROM empty",
        Plan::rows(
            vec![Column::new("id", "LONG"), Column::new("at", "DATE")],
            Vec::new(),
        ),
    );
    let (path, outcome) = fx.query("SELECT * FROM empty").await;
    assert_eq!(outcome.expect("step").rows, 0);
    let bytes = fx
        .target
        .store
        .get(&path)
        .await
        .expect("object")
        .bytes()
        .await
        .expect("bytes");
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("parquet");
    let schema = builder.schema();
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(schema.field(1).data_type(), &DataType::Date32);
}

#[test]
fn databricks_http_paths_name_a_warehouse() {
    assert_eq!(warehouse_id("/sql/1.0/warehouses/abc123").expect("id"), "abc123");
    assert_eq!(warehouse_id("/sql/1.0/endpoints/abc123/").expect("id"), "abc123");
    let cluster = warehouse_id("/sql/protocolv1/o/1234/0123-456789-abcdef").expect_err("cluster");
    assert!(cluster.message().contains("cluster"), "{}", cluster.message());
    for bad in [
        "/sql/1.0/warehouses/",
        "/sql/1.0/warehouses/a/b",
        "/p",
        "/sql/1.0/warehouses/a%2F",
    ] {
        assert!(warehouse_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn databricks_config_refuses_fields_the_type_does_not_declare() {
    let decl = TypeId::Databricks.decl();
    let good = json!({"server_hostname": "dbc-1.cloud.databricks.com", "http_path": "/sql/1.0/warehouses/abc", "access_token": "dapi1"});
    let config = DatabricksConfig::read(decl, good.as_object().expect("map")).expect("config");
    assert_eq!(config.warehouse_id, "abc");
    assert_eq!(config.pool.statement_timeout, Duration::from_secs(300));
    assert_eq!(config.port, 443, "the declared default");
    let mut extra = good.as_object().cloned().expect("map");
    extra.insert("warehouse_port".into(), json!(443));
    let error = DatabricksConfig::read(decl, &extra).expect_err("unknown field");
    assert!(
        error.message().contains("config.warehouse_port"),
        "{}",
        error.message()
    );
    let mut no_token = good.as_object().cloned().expect("map");
    no_token.remove("access_token");
    assert!(DatabricksConfig::read(decl, &no_token).is_err());
}

#[test]
fn databricks_workspace_urls_are_https_on_the_host() {
    assert_eq!(
        workspace_url("dbc-1.cloud.databricks.com", 443)
            .expect("url")
            .as_str(),
        "https://dbc-1.cloud.databricks.com/"
    );
    assert_eq!(
        workspace_url("2001:db8::1", 443).expect("url").as_str(),
        "https://[2001:db8::1]/"
    );
    assert_eq!(
        workspace_url("dbc-1.example.internal", 8443)
            .expect("url")
            .as_str(),
        "https://dbc-1.example.internal:8443/"
    );
}

#[test]
fn databricks_parameter_values_are_text_with_their_sql_type() {
    use chrono::{DateTime, NaiveDate};
    let at = DateTime::parse_from_rfc3339("2024-03-01T10:00:00+02:00").expect("time");
    let day = NaiveDate::from_ymd_opt(2024, 3, 1).expect("day");
    assert_eq!(
        [
            parameter("a", &ParamValue::Text("x".into())),
            parameter("b", &ParamValue::Integer(-7)),
            parameter("c", &ParamValue::Number(0.25)),
            parameter("d", &ParamValue::Boolean(true)),
            parameter("e", &ParamValue::Date(day)),
            parameter("f", &ParamValue::Timestamp(at)),
        ],
        [
            json!({"name": "a", "value": "x", "type": "STRING"}),
            json!({"name": "b", "value": "-7", "type": "BIGINT"}),
            json!({"name": "c", "value": "0.25", "type": "DOUBLE"}),
            json!({"name": "d", "value": "true", "type": "BOOLEAN"}),
            json!({"name": "e", "value": "2024-03-01", "type": "DATE"}),
            json!({"name": "f", "value": "2024-03-01T10:00:00+02:00", "type": "TIMESTAMP"}),
        ]
    );
}
