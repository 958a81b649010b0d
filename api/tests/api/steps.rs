//! Steps API: create, list, get, update, delete, reorder, config validation.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::executing::offline_connector;
use crate::helpers::{TestApp, User, assert_error, spawn_app};

fn sql_step(connector: &str, name: &str) -> Value {
    json!({"name": name, "type": "sql_query", "config": {"connector_uuid": connector, "query": "select 1"}})
}

async fn step_names(app: &TestApp, user: &User, project: &str) -> Vec<String> {
    let reply = app.get(user, &format!("/api/projects/{project}/steps")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .enumerate()
        .map(|(i, step)| {
            assert_eq!(step["order"], i + 1, "orders are 1..n");
            step["name"].as_str().expect("name").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn steps_are_created_listed_moved_and_deleted_in_order() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let connector = offline_connector(&app, &alice).await;
    let project = app.create_project(&alice, "steps").await;
    let base = format!("/api/projects/{project}/steps");

    let first = app
        .post(
            &alice,
            &base,
            json!({"name": "Extract sales data", "type": "sql_query", "config": {
                "connector_uuid": connector,
                "query": "select * from sales where day >= {{start_date}}",
                "parameters": {"start_date": {"type": "date", "default": "2024-10-01"}}
            }}),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let first_id = first.body["step_id"].as_str().expect("step_id").to_owned();
    assert!(first_id.starts_with("step_"));
    assert_eq!(first.body["type"], "sql_query");
    assert_eq!(first.body["order"], 1);
    assert_eq!(first.body["config"]["parameters"]["start_date"]["type"], "date");

    app.post(&alice, &base, sql_step(&connector, "third")).await;
    let second = app
        .post(
            &alice,
            &base,
            json!({"name": "second", "type": "transform", "order": 2,
        "config": {"query": "select * from extract_sales_data"}, "dependencies": [first_id]}),
        )
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    assert_eq!(second.body["dependencies"], json!([first_id]));
    let far = app
        .post(
            &alice,
            &base,
            json!({"name": "last", "type": "transform", "order": 99, "config": {"query": "select 1"}}),
        )
        .await;
    assert_eq!(far.body["order"], 4, "an order past the end appends");
    assert_eq!(
        step_names(&app, &alice, &project).await,
        ["Extract sales data", "second", "third", "last"]
    );

    let project_view = app.get(&alice, &format!("/api/projects/{project}")).await;
    assert_eq!(project_view.body["steps"][1]["name"], "second");
    assert_eq!(project_view.body["steps"][1]["status"], "pending");
    let listed = app.get(&alice, "/api/projects").await;
    assert_eq!(listed.body["data"][0]["step_count"], 4);

    let last_id = far.body["step_id"].as_str().expect("id").to_owned();
    let moved = app
        .put(
            &alice,
            &format!("{base}/{last_id}"),
            json!({"order": 1, "name": "now first"}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
    assert_eq!(moved.body["order"], 1);
    assert_eq!(
        step_names(&app, &alice, &project).await,
        ["now first", "Extract sales data", "second", "third"]
    );

    let fetched = app.get(&alice, &format!("{base}/{last_id}")).await;
    assert_eq!(fetched.body["name"], "now first");

    let blocked = app.delete(&alice, &format!("{base}/{first_id}")).await;
    assert_error(&blocked, StatusCode::CONFLICT, "conflict", None);
    let second_id = second.body["step_id"].as_str().expect("id").to_owned();
    let moved_before_dependency = app
        .put(&alice, &format!("{base}/{second_id}"), json!({"order": 1}))
        .await;
    assert_error(
        &moved_before_dependency,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("order"),
    );

    assert_eq!(
        app.delete(&alice, &format!("{base}/{second_id}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        step_names(&app, &alice, &project).await,
        ["now first", "Extract sales data", "third"]
    );
    assert_eq!(
        app.get(&alice, &format!("{base}/{second_id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn reorder_must_list_every_step_exactly_once() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let connector = offline_connector(&app, &alice).await;
    let project = app.create_project(&alice, "reorder").await;
    let base = format!("/api/projects/{project}/steps");
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(
            app.post(&alice, &base, sql_step(&connector, name)).await.body["step_id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    for bad in [
        json!([ids[0], ids[1]]),
        json!([ids[0], ids[0], ids[1]]),
        json!([ids[0], ids[1], ids[2], "step_x"]),
        json!({}),
    ] {
        let reply = app
            .post(&alice, &format!("{base}/reorder"), json!({"step_ids": bad}))
            .await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "validation_error",
            Some("step_ids"),
        );
    }
    let reply = app
        .post(
            &alice,
            &format!("{base}/reorder"),
            json!({"step_ids": [ids[2], ids[0], ids[1]]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["data"][0]["name"], "c");
    assert_eq!(step_names(&app, &alice, &project).await, ["c", "a", "b"]);
}

#[tokio::test]
async fn step_config_is_validated_per_type() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let connector = offline_connector(&app, &alice).await;
    let project = app.create_project(&alice, "validation").await;
    let base = format!("/api/projects/{project}/steps");
    let cases = [
        (json!({"type": "sql_query", "config": {}}), "name"),
        (json!({"name": "s", "config": {}}), "type"),
        (json!({"name": "s", "type": "shell_script", "config": {}}), "type"),
        (json!({"name": "s", "type": "sql_query"}), "config"),
        (
            json!({"name": "s", "type": "sql_query", "config": {"connector_uuid": connector}}),
            "config.query",
        ),
        (
            json!({"name": "s", "type": "sql_query", "config": {"query": "select 1"}}),
            "config.connector_uuid",
        ),
        (
            json!({"name": "s", "type": "sql_query", "config": {"connector_uuid": connector, "query": "x", "parameters": {"d": {"type": "decimal"}}}}),
            "config.parameters.d.type",
        ),
        (
            json!({"name": "s", "type": "sql_query", "config": {"connector_uuid": connector, "query": "x", "dsn": "host=/tmp"}}),
            "config.dsn",
        ),
        (
            json!({"name": "s", "type": "sql_query", "config": "select 1"}),
            "config",
        ),
        (
            json!({"name": "s", "type": "sql_query", "order": 0, "config": {"connector_uuid": connector, "query": "x"}}),
            "order",
        ),
        (
            json!({"name": "s", "type": "sql_query", "dependencies": ["step_01J00000000000000000000000"], "config": {"connector_uuid": connector, "query": "x"}}),
            "dependencies[0]",
        ),
    ];
    for (body, field) in cases {
        let reply = app.post(&alice, &base, body.clone()).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some(field));
    }
    let step = app.post(&alice, &base, sql_step(&connector, "ok")).await;
    let id = step.body["step_id"].as_str().expect("id");
    let reply = app
        .put(
            &alice,
            &format!("{base}/{id}"),
            json!({"config": {"query": "select 2"}}),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("config.connector_uuid"),
    );
    assert_eq!(
        step_names(&app, &alice, &project).await,
        ["ok"],
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn viewers_read_steps_but_cannot_change_them() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let connector = offline_connector(&app, &alice).await;
    let vera = User::member("user_vera", "org_a");
    let outsider = User::member("user_olga", "org_b");
    let project = app.create_project(&alice, "p").await;
    let base = format!("/api/projects/{project}/steps");
    let id = app.post(&alice, &base, sql_step(&connector, "s")).await.body["step_id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.store
        .put_grant(&ferry_shared::store::Grant {
            resource: ferry_shared::domain::ResourceKind::Project,
            resource_uuid: project.clone(),
            user_id: vera.id.clone(),
            role: ferry_shared::domain::Role::Viewer,
            granted_by: alice.id.clone(),
            granted_at: ferry_shared::domain::now(),
        })
        .await
        .expect("grant");
    assert_eq!(
        app.get(&vera, &format!("{base}/{id}")).await.status,
        StatusCode::OK
    );
    assert_error(
        &app.post(&vera, &base, sql_step(&connector, "x")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    assert_error(
        &app.put(&vera, &format!("{base}/{id}"), json!({"name": "y"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    assert_error(
        &app.delete(&vera, &format!("{base}/{id}")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    assert_error(
        &app.get(&outsider, &format!("{base}/{id}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &app.get(&outsider, &base).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}
