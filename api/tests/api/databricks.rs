//! Databricks connectors end to end: created with a connection test
//! against the stand-in warehouse of `ferry-testkit` (the SQL Statement
//! Execution API on 127.0.0.1 under a workspace host name of its own), a
//! `sql_query` step with typed parameters executed synchronously by the
//! in-process worker, and its result read back as JSON.

use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::StreamWriter;
use ferry_testkit::databricks::{Column, Plan, Warehouse};
use ferry_worker::connectors::databricks::testing::serve_at;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, User, assert_error, spawn_app, spawn_app_on};

const TOKEN: &str = "dapi-e2e-0123456789";

async fn warehouse() -> Warehouse {
    let warehouse = Warehouse::start(TOKEN).await;
    serve_at(&warehouse.host, warehouse.addr, false);
    warehouse
}

async fn create(app: &TestApp, user: &User, warehouse: &Warehouse, token: &str) -> crate::helpers::Reply {
    app.post(
        user,
        "/api/connectors",
        json!({
            "type": "databricks",
            "display_name": "Lakehouse",
            "config": {
                "server_hostname": warehouse.host,
                "http_path": warehouse.http_path(),
                "access_token": token,
                "catalog": "main",
            },
            "test_connection": true,
        }),
    )
    .await
}

/// `sales` as one Arrow IPC stream of two batches.
fn sales_stream() -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new("day", DataType::Date32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![7, 9_007_199_254_740_993])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("north"), None])),
            Arc::new(
                Decimal128Array::from(vec![Some(123_456), Some(-5)])
                    .with_precision_and_scale(10, 2)
                    .expect("decimal"),
            ),
            Arc::new(Date32Array::from(vec![Some(19_783), None])),
        ],
    )
    .expect("batch");
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).expect("writer");
    writer.write(&batch.slice(0, 1)).expect("write");
    writer.write(&batch.slice(1, 1)).expect("write");
    writer.finish().expect("finish");
    writer.into_inner().expect("bytes")
}

#[tokio::test]
async fn databricks_connector_tests_on_create_and_its_parameterised_step_runs_to_json_results() {
    connector_test_and_parameterised_step(spawn_app().await).await;
}

/// The same on the backends of a distributed deployment: the connection
/// test and the execution travel as jobs through the Redis queue, the
/// worker reads the connector from PostgreSQL.
#[tokio::test]
async fn databricks_runs_end_to_end_over_postgresql_and_the_redis_queue() {
    connector_test_and_parameterised_step(spawn_app_on(Backend::Distributed).await).await;
}

async fn connector_test_and_parameterised_step(app: TestApp) {
    let alice = User::member("user_alice", "org_a");
    let warehouse = warehouse().await;
    let statement = "SELECT id, region, amount, day FROM sales WHERE region = :region AND amount > :min";
    warehouse.on(
        statement,
        Plan::rows(
            vec![
                Column::new("id", "LONG"),
                Column::new("region", "STRING"),
                Column::decimal("amount", 10, 2),
                Column::new("day", "DATE"),
            ],
            Vec::new(),
        )
        .with_arrow(vec![(2, sales_stream())])
        .after_polls(1),
    );

    let created = create(&app, &alice, &warehouse, TOKEN).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["last_test_status"], "success");
    assert!(created.body["test_results"]["latency_ms"].is_u64());
    assert!(
        created.body["config"].get("access_token").is_none(),
        "{}",
        created.text
    );
    assert!(!created.text.contains(TOKEN));
    assert_eq!(warehouse.submissions()[0]["statement"], "SELECT 1");
    let connector = created.body["uuid"].as_str().expect("uuid").to_owned();

    let retest = app
        .post(&alice, &format!("/api/connectors/{connector}/test"), json!({}))
        .await;
    assert_eq!(retest.status, StatusCode::OK, "{}", retest.text);
    assert_eq!(retest.body["status"], "success", "{}", retest.text);

    let project = app.create_project(&alice, "lakehouse").await;
    let step = app
        .post(
            &alice,
            &format!("/api/projects/{project}/steps"),
            json!({"name": "sales", "type": "sql_query", "config": {
                "connector_uuid": connector,
                "query": "SELECT id, region, amount, day FROM sales WHERE region = {{region}} AND amount > {{min}}",
                "parameters": {"min": {"type": "number", "default": 0.5}},
            }}),
        )
        .await;
    assert_eq!(step.status, StatusCode::CREATED, "{}", step.text);
    let step_id = step.body["step_id"].as_str().expect("step_id").to_owned();

    let executed = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync", "parameters": {"region": "north'; DROP TABLE sales; --"}}),
        )
        .await;
    assert_eq!(executed.status, StatusCode::OK, "{}", executed.text);
    assert_eq!(executed.body["status"], "completed", "{}", executed.text);
    let execution = executed.body["execution_id"].as_str().expect("id").to_owned();

    let submitted = warehouse.submissions().last().cloned().expect("a submission");
    assert_eq!(submitted["statement"], statement);
    assert_eq!(submitted["catalog"], "main");
    assert_eq!(
        submitted["parameters"],
        json!([
            {"name": "region", "value": "north'; DROP TABLE sales; --", "type": "STRING"},
            {"name": "min", "value": "0.5", "type": "DOUBLE"},
        ])
    );
    assert_eq!(
        (&submitted["disposition"], &submitted["format"]),
        (&json!("EXTERNAL_LINKS"), &json!("ARROW_STREAM"))
    );
    assert!(warehouse.downloads().iter().all(|d| d.authorization.is_none()));

    let result = app
        .get(
            &alice,
            &format!("/api/projects/{project}/executions/{execution}/steps/{step_id}/result?format=json"),
        )
        .await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.text);
    assert_eq!(result.body["total_rows"], 2);
    let columns: Vec<&str> = result.body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["id", "region", "amount", "day"]);
    assert_eq!(
        result.body["data"],
        json!([
            {"id": 7, "region": "north", "amount": "1234.56", "day": "2024-03-01"},
            {"id": "9007199254740993", "region": null, "amount": "-0.05", "day": null},
        ])
    );
}

#[tokio::test]
async fn databricks_a_bad_token_on_create_is_400_connection_failed_authentication_failed() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let warehouse = warehouse().await;
    let reply = create(&app, &alice, &warehouse, "dapi-not-the-token").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "connection_failed", None);
    assert_eq!(reply.body["test_results"]["error_type"], "authentication_failed");
    assert_eq!(reply.body["test_results"]["code"], "401");
    assert!(!reply.text.contains("dapi-not-the-token"));
    let listed = app.get(&alice, "/api/connectors?include_available=false").await;
    assert_eq!(listed.body["total_active"], 0, "{}", listed.text);
}

#[tokio::test]
async fn databricks_available_type_keeps_its_declared_schema() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let listed = app.get(&alice, "/api/connectors").await;
    let databricks: &Value = listed.body["available_types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["type"] == "databricks")
        .expect("databricks listed");
    assert_eq!(databricks["name"], "Databricks");
    assert_eq!(databricks["category"], "data_warehouse");
    assert_eq!(databricks["auth_type"], "credentials");
    assert_eq!(databricks["features"], json!(["sql_query"]));
    let schema = databricks["config_schema"].as_object().expect("schema");
    let fields: Vec<&str> = schema.keys().map(String::as_str).collect();
    let mut expected = vec![
        "server_hostname",
        "port",
        "http_path",
        "access_token",
        "catalog",
        "schema",
        "connection_timeout_seconds",
        "max_connections",
        "idle_timeout_seconds",
        "max_lifetime_seconds",
        "statement_timeout_seconds",
        "max_concurrent_steps",
    ];
    let mut sorted = fields.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected);
    assert_eq!(schema["access_token"]["secret"], true);
    assert_eq!(schema["server_hostname"]["required"], true);
    assert_eq!(schema["http_path"]["required"], true);
    assert_eq!(schema["port"]["default"], 443);
}
