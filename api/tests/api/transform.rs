//! `transform` steps through the API: a project with two `sql_query` steps
//! on a SQLite connector and a transform joining their results, executed in
//! sync mode, the transform's result read back as JSON.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::helpers::{TestApp, User, assert_error, spawn_app};

/// `shop.db` in the organization's SQLite folder of the app's worker.
async fn shop_database(app: &TestApp, org: &str) {
    let dir = app.dir.path().join("sqlite").join(org);
    std::fs::create_dir_all(&dir).expect("sqlite dir");
    let options = SqliteConnectOptions::new()
        .filename(dir.join("shop.db"))
        .create_if_missing(true);
    let pool = SqlitePool::connect_with(options).await.expect("create shop.db");
    sqlx::raw_sql(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, region TEXT NOT NULL);
         INSERT INTO customers VALUES (1, 'Ada', 'EU'), (2, 'Bob', 'US'), (3, 'Cy', 'EU'),
                                      (4, 'Dee', 'US'), (5, 'Eve', 'APAC');
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL,
                              amount_cents INTEGER NOT NULL, note TEXT);
         INSERT INTO orders VALUES (10, 1, 12050, 'first'), (11, 1, 3000, NULL), (12, 2, 20000, 'big'),
                                   (13, 3, 9950, NULL), (14, 3, 10000, NULL), (15, 3, 100, 'tiny'),
                                   (16, 4, 5000, NULL), (17, 6, 500, 'orphan');",
    )
    .execute(&pool)
    .await
    .expect("seed shop.db");
    pool.close().await;
}

async fn add_step(app: &TestApp, user: &User, project: &str, body: Value) -> String {
    let reply = app
        .post(user, &format!("/api/projects/{project}/steps"), body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["step_id"].as_str().expect("step_id").to_owned()
}

#[tokio::test]
async fn a_transform_joins_two_sql_steps_end_to_end_and_its_result_reads_back_as_json() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    shop_database(&app, "org_a").await;
    let reply = app
        .post(
            &alice,
            "/api/connectors",
            json!({"type": "sqlite", "display_name": "shop", "config": {"path": "shop.db"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let connector = reply.body["uuid"].as_str().expect("uuid").to_owned();
    let project = app.create_project(&alice, "regional totals").await;
    let customers = add_step(
        &app,
        &alice,
        &project,
        json!({"name": "Extract customers", "type": "sql_query",
               "config": {"connector_uuid": connector, "query": "SELECT id, name, region FROM customers"}}),
    )
    .await;
    let orders = add_step(
        &app,
        &alice,
        &project,
        json!({"name": "Extract orders", "type": "sql_query",
               "config": {"connector_uuid": connector,
                          "query": "SELECT id, customer_id, amount_cents, note FROM orders"}}),
    )
    .await;
    let totals = add_step(
        &app,
        &alice,
        &project,
        json!({"name": "Regional totals", "type": "transform", "dependencies": [customers, orders],
        "config": {
            "query": "SELECT c.name, c.region, count(o.id) AS orders, sum(o.amount_cents) AS cents, \
                             rank() OVER (PARTITION BY c.region ORDER BY sum(o.amount_cents) DESC) AS place \
                      FROM extract_customers c JOIN step_2 o ON o.customer_id = c.id \
                      WHERE c.region <> {{skip_region}} AND o.amount_cents >= {{min_cents}} \
                      GROUP BY c.name, c.region ORDER BY c.region, place",
            "parameters": {"min_cents": {"type": "integer", "default": 0}}
        }}),
    )
    .await;

    let reply = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync", "parameters": {"skip_region": "APAC' OR '1'='1", "min_cents": 150}}),
        )
        .await;
    assert_eq!(reply.body["status"], "completed", "{}", reply.text);
    let steps = reply.body["steps"].as_array().expect("steps");
    assert_eq!(steps[2]["status"], "completed", "{}", reply.text);
    assert_eq!(steps[2]["rows_processed"], 4, "{}", reply.text);
    let execution = reply.body["execution_id"].as_str().expect("id").to_owned();

    let reply = app
        .get(
            &alice,
            &format!("/api/projects/{project}/executions/{execution}/steps/{totals}/result?format=json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.body["columns"],
        json!([
            {"name": "name", "type": "string"},
            {"name": "region", "type": "string"},
            {"name": "orders", "type": "integer"},
            {"name": "cents", "type": "integer"},
            {"name": "place", "type": "integer"}
        ])
    );
    // Cy's 100-cent order is under min_cents; the injection attempt is a
    // region no customer has, so no region is skipped.
    assert_eq!(
        reply.body["data"],
        json!([
            {"name": "Cy", "region": "EU", "orders": 2, "cents": 19950, "place": 1},
            {"name": "Ada", "region": "EU", "orders": 2, "cents": 15050, "place": 2},
            {"name": "Bob", "region": "US", "orders": 1, "cents": 20000, "place": 1},
            {"name": "Dee", "region": "US", "orders": 1, "cents": 5000, "place": 2}
        ])
    );
    assert_eq!(reply.body["total_rows"], 4);
}

#[tokio::test]
async fn a_transform_config_is_checked_when_saved_and_a_bad_query_fails_the_step_as_invalid_query() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let project = app.create_project(&alice, "checks").await;
    for (config, field) in [
        (json!({}), "config.query"),
        (json!({"query": " "}), "config.query"),
        (
            json!({"query": "SELECT 1", "connector_uuid": "conn_x"}),
            "config.connector_uuid",
        ),
        (
            json!({"query": "SELECT {{n}}", "parameters": {"n": {"type": "int"}}}),
            "config.parameters.n.type",
        ),
    ] {
        let reply = app
            .post(
                &alice,
                &format!("/api/projects/{project}/steps"),
                json!({"name": "bad", "type": "transform", "config": config}),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some(field));
    }
    add_step(
        &app,
        &alice,
        &project,
        json!({"name": "Report", "type": "transform", "config": {"query": "SELECT * FROM no_such_step"}}),
    )
    .await;
    let reply = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync"}),
        )
        .await;
    assert_eq!(reply.body["status"], "failed", "{}", reply.text);
    let error = &reply.body["steps"][0]["error"];
    assert_eq!(error["type"], "invalid_query", "{}", reply.text);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("no_such_step")),
        "{error}"
    );
}
