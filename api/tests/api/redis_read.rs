//! `redis_read` steps through the API: a Redis connector on the shared
//! server (127.0.0.1:6379) created with a connection test, a project whose
//! steps read hashes, strings and JSON under a key prefix of the test's
//! own, executed in sync mode, results read back as JSON.

use std::process::Command;

use ferry_testkit::redis::{URL, delete_keys, unique_prefix};
use ferry_testkit::run;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, User, assert_error, spawn_app};

/// Writes the test's keys with `redis-cli` (the API's tests have no Redis
/// client of their own).
fn seed(prefix: &str) {
    let commands: [Vec<String>; 7] = [
        vec![
            "HSET".into(),
            format!("{prefix}:eu:1"),
            "name".into(),
            "Ada".into(),
            "plan".into(),
            "pro".into(),
        ],
        vec![
            "HSET".into(),
            format!("{prefix}:eu:2"),
            "name".into(),
            "Bo".into(),
            "seats".into(),
            "3".into(),
        ],
        vec![
            "HSET".into(),
            format!("{prefix}:us:1"),
            "name".into(),
            "Cy".into(),
        ],
        // A key whose name holds a glob character, matched only literally.
        vec![
            "HSET".into(),
            format!("{prefix}:e*:1"),
            "name".into(),
            "Star".into(),
        ],
        vec!["SET".into(), format!("{prefix}:eu:count"), "2".into()],
        vec![
            "SET".into(),
            format!("{prefix}:doc:1"),
            r#"{"id": 1, "price": 9.5, "tags": ["a"], "ok": true}"#.into(),
        ],
        vec![
            "SET".into(),
            format!("{prefix}:doc:2"),
            r#"{"id": 2, "price": 10, "ok": false}"#.into(),
        ],
    ];
    for args in commands {
        run(
            Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", "6379"])
                .args(&args),
            "redis-cli (Redis on 127.0.0.1:6379 is required)",
        );
    }
}

async fn redis_connector(app: &TestApp, user: &User) -> String {
    let reply = app
        .post(
            user,
            "/api/connectors",
            json!({"type": "redis", "display_name": "cache", "test_connection": true,
                   "config": {"host": "127.0.0.1", "port": 6379}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert!(
        reply.body["test_results"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("Redis ")),
        "{}",
        reply.text
    );
    reply.body["uuid"].as_str().expect("uuid").to_owned()
}

async fn add_step(app: &TestApp, user: &User, project: &str, name: &str, config: Value) -> String {
    let reply = app
        .post(
            user,
            &format!("/api/projects/{project}/steps"),
            json!({"name": name, "type": "redis_read", "config": config}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["step_id"].as_str().expect("step_id").to_owned()
}

/// The step's result as JSON: (column name, type) pairs and rows sorted by key.
async fn result(
    app: &TestApp,
    user: &User,
    project: &str,
    execution: &str,
    step: &str,
) -> (Vec<(String, String)>, Vec<Value>) {
    let reply = app
        .get(
            user,
            &format!("/api/projects/{project}/executions/{execution}/steps/{step}/result?format=json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let columns = reply.body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                c["type"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut rows = reply.body["data"].as_array().expect("data").clone();
    rows.sort_by_key(|row| row["key"].as_str().unwrap_or("").to_owned());
    (columns, rows)
}

#[tokio::test]
async fn a_redis_read_project_runs_end_to_end_and_its_results_read_back_as_json() {
    let prefix = unique_prefix("api-redis");
    seed(&prefix);
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let connector = redis_connector(&app, &alice).await;
    let project = app.create_project(&alice, "redis accounts").await;
    let hashes = add_step(
        &app,
        &alice,
        &project,
        "accounts",
        json!({"connector_uuid": connector, "pattern": format!("{prefix}:{{{{region}}}}:*"),
               "value_type": "hash", "parameters": {"region": {"type": "string", "default": "us"}}}),
    )
    .await;
    let strings = add_step(
        &app,
        &alice,
        &project,
        "counts",
        json!({"connector_uuid": connector, "pattern": format!("{prefix}:*:count")}),
    )
    .await;
    let documents = add_step(
        &app,
        &alice,
        &project,
        "documents",
        json!({"connector_uuid": connector, "pattern": format!("{prefix}:doc:*"), "value_type": "json"}),
    )
    .await;

    let reply = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync", "parameters": {"region": "eu"}}),
        )
        .await;
    let execution = reply.body["execution_id"].as_str().unwrap_or("").to_owned();
    let hash_result = result(&app, &alice, &project, &execution, &hashes).await;
    let string_result = result(&app, &alice, &project, &execution, &strings).await;
    let json_result = result(&app, &alice, &project, &execution, &documents).await;
    // The glob characters of a parameter match only themselves.
    let starred = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync", "parameters": {"region": "e*"}}),
        )
        .await;
    let starred_execution = starred.body["execution_id"].as_str().unwrap_or("").to_owned();
    let starred_result = result(&app, &alice, &project, &starred_execution, &hashes).await;
    delete_keys(URL, &[format!("{prefix}:*")]).await;

    assert_eq!(reply.body["status"], "completed", "{}", reply.text);
    assert_eq!(reply.body["results"]["total_rows"], 2 + 1 + 2, "{}", reply.text);

    let (columns, rows) = hash_result;
    assert_eq!(columns[0], ("key".to_owned(), "string".to_owned()));
    let mut names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["key", "name", "plan", "seats"]);
    assert_eq!(
        rows,
        [
            json!({"key": format!("{prefix}:eu:1"), "name": "Ada", "plan": "pro", "seats": null}),
            json!({"key": format!("{prefix}:eu:2"), "name": "Bo", "plan": null, "seats": "3"}),
        ]
    );

    let (columns, rows) = string_result;
    assert_eq!(
        columns,
        [
            ("key".to_owned(), "string".to_owned()),
            ("value".to_owned(), "string".to_owned())
        ]
    );
    assert_eq!(rows, [json!({"key": format!("{prefix}:eu:count"), "value": "2"})]);

    let (columns, rows) = json_result;
    let types: std::collections::BTreeMap<String, String> = columns.into_iter().collect();
    assert_eq!(types["id"], "integer");
    assert_eq!(types["price"], "number");
    assert_eq!(types["ok"], "boolean");
    assert_eq!(types["tags"], "string");
    assert_eq!(
        rows,
        [
            json!({"key": format!("{prefix}:doc:1"), "id": 1, "price": 9.5, "tags": "[\"a\"]", "ok": true}),
            json!({"key": format!("{prefix}:doc:2"), "id": 2, "price": 10.0, "tags": null, "ok": false}),
        ]
    );

    assert_eq!(starred.body["status"], "completed", "{}", starred.text);
    assert_eq!(
        starred_result.1,
        [json!({"key": format!("{prefix}:e*:1"), "name": "Star"})]
    );
}

#[tokio::test]
async fn a_redis_read_step_config_is_checked_when_saved() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let connector = redis_connector(&app, &alice).await;
    let project = app.create_project(&alice, "redis checks").await;
    for (config, field) in [
        (json!({"value_type": "hash"}), "config.pattern"),
        (
            json!({"pattern": "a:*", "value_type": "list"}),
            "config.value_type",
        ),
        (json!({"pattern": "a:*", "count": 100}), "config.count"),
        (
            json!({"pattern": "a:{{n}}", "parameters": {"n": {"type": "decimal"}}}),
            "config.parameters.n.type",
        ),
    ] {
        let mut config = config;
        config["connector_uuid"] = json!(connector);
        let reply = app
            .post(
                &alice,
                &format!("/api/projects/{project}/steps"),
                json!({"name": "bad", "type": "redis_read", "config": config}),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some(field));
    }
}
