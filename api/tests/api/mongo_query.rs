//! `mongo_query` steps through the API: a MongoDB connector on nx-27017
//! (the wire-protocol test peer of `scripts/test-peers.sh`) created with a
//! connection test, a project with a `mongo_query` step, executed in sync
//! mode, its result read back as JSON.

use std::process::Command;

use ferry_testkit::peers::{nx_27017, test_peers_venv};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, User, assert_error, spawn_app};

/// Inserts documents into `analytics.<collection>` with pymongo (from the
/// peers' venv); `documents` is a Python expression using `bson` and
/// `datetime`.
fn seed(port: u16, collection: &str, documents: &str) {
    let script = format!(
        "import datetime\nimport bson\nfrom pymongo import MongoClient\n\
         c = MongoClient('mongodb://127.0.0.1:{port}/', directConnection=True)\n\
         c.analytics['{collection}'].insert_many({documents})\n"
    );
    let status = Command::new(test_peers_venv().join("bin/python"))
        .arg("-c")
        .arg(script)
        .status()
        .expect("python from the test peers' venv");
    assert!(status.success(), "seeding {collection} failed");
}

async fn mongodb_connector(app: &TestApp, user: &User, port: u16) -> String {
    let reply = app
        .post(
            user,
            "/api/connectors",
            json!({"type": "mongodb", "display_name": "orders db", "test_connection": true,
                   "config": {"connection_string": format!("mongodb://127.0.0.1:{port}/"), "database": "analytics"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["uuid"].as_str().expect("uuid").to_owned()
}

async fn add_step(app: &TestApp, user: &User, project: &str, config: Value) -> String {
    let reply = app
        .post(
            user,
            &format!("/api/projects/{project}/steps"),
            json!({"name": "orders", "type": "mongo_query", "config": config}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["step_id"].as_str().expect("step_id").to_owned()
}

#[tokio::test]
async fn a_mongo_query_step_runs_end_to_end_and_its_result_reads_back_as_json() {
    let peer = nx_27017().await;
    seed(
        peer.port,
        "orders",
        "[\
         {'_id': bson.ObjectId('65a1b2c3d4e5f60718293a4b'), 'customer': 'ann', 'status': 'open', 'total': 12.5,\
          'placed': datetime.datetime(2024, 3, 1, 10, 0, 0, 250000), 'address': {'city': 'Lyon', 'zip': 69001},\
          'items': [{'sku': 'a', 'qty': 2}, {'sku': 'b', 'qty': 1}]},\
         {'_id': bson.ObjectId('65a1b2c3d4e5f60718293a4c'), 'customer': 'bob', 'status': 'closed', 'total': 7,\
          'placed': datetime.datetime(2024, 2, 1), 'address': {'city': 'Paris', 'zip': 75001}, 'items': []},\
         {'_id': bson.ObjectId('65a1b2c3d4e5f60718293a4d'), 'customer': '{\"$ne\": null}', 'status': 'open',\
          'total': 3, 'placed': datetime.datetime(2023, 12, 31), 'address': {'city': 'Nice', 'zip': 6000}, 'items': []}\
         ]",
    );
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let connector = mongodb_connector(&app, &alice, peer.port).await;
    let project = app.create_project(&alice, "mongo orders").await;
    let step = add_step(
        &app,
        &alice,
        &project,
        json!({
            "connector_uuid": connector,
            "collection": "orders",
            "filter": {"status": "{{status}}", "customer": {"$ne": "{{skip}}"},
                       "placed": {"$gte": {"$date": "2024-01-01T00:00:00Z"}}},
            "projection": {"status": 0},
            "parameters": {"status": {"type": "string", "default": "closed"}, "skip": {"type": "string"}},
        }),
    )
    .await;

    let reply = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync", "parameters": {"status": "open", "skip": "{\"$ne\": null}"}}),
        )
        .await;
    assert_eq!(reply.body["status"], "completed", "{}", reply.text);
    let execution = reply.body["execution_id"]
        .as_str()
        .expect("execution_id")
        .to_owned();
    let reply = app
        .get(
            &alice,
            &format!("/api/projects/{project}/executions/{execution}/steps/{step}/result?format=json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["total_rows"], 1, "{}", reply.text);
    let columns: Vec<(&str, &str)> = reply.body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or(""), c["type"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        columns.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        ["_id", "customer", "total", "placed", "address", "items"]
    );
    assert_eq!(columns[3].1, "timestamptz");
    assert_eq!(columns[4].1, "struct");
    let row = &reply.body["data"][0];
    assert_eq!(row["_id"], "65a1b2c3d4e5f60718293a4b");
    assert_eq!(row["customer"], "ann");
    assert_eq!(row["total"], 12.5);
    assert_eq!(row["placed"], "2024-03-01T10:00:00.250Z");
    assert_eq!(row["address"], json!({"city": "Lyon", "zip": 69001}));
    assert_eq!(
        row["items"],
        json!([{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}])
    );

    // The declared default applies when the execution supplies none.
    let reply = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync", "parameters": {"skip": "nobody"}}),
        )
        .await;
    assert_eq!(reply.body["status"], "completed", "{}", reply.text);
    assert_eq!(reply.body["results"]["total_rows"], 1, "{}", reply.text);
}

#[tokio::test]
async fn a_mongo_query_step_config_is_checked_when_saved_and_server_errors_fail_the_step() {
    let peer = nx_27017().await;
    seed(peer.port, "things", "[{'n': 1}]");
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let connector = mongodb_connector(&app, &alice, peer.port).await;
    let project = app.create_project(&alice, "mongo checks").await;
    for (config, field) in [
        (json!({"collection": "things", "limit": 0}), "config.limit"),
        (
            json!({"collection": "things", "filter": {}, "pipeline": []}),
            "config.pipeline",
        ),
        (
            json!({"collection": "things", "pipeline": [{"$out": "copy"}]}),
            "config.pipeline.0",
        ),
        (json!({"collection": "things", "sort": {"n": 1}}), "config.sort"),
    ] {
        let mut config = config;
        config["connector_uuid"] = json!(connector);
        let reply = app
            .post(
                &alice,
                &format!("/api/projects/{project}/steps"),
                json!({"name": "bad", "type": "mongo_query", "config": config}),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some(field));
    }
    add_step(
        &app,
        &alice,
        &project,
        json!({"connector_uuid": connector, "collection": "things", "pipeline": [{"$noSuchStage": {}}]}),
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
            .is_some_and(|m| m.contains("$noSuchStage") && !m.contains("mongodb://")),
        "{error}"
    );
}
