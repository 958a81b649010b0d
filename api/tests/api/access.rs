//! Using a connector in a step takes an editor's grant on that connector:
//! checked when a step is saved, again when an execution is admitted, and
//! again by the worker right before the step reads anything.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::executing::offline_connector;
use crate::executions::{SalesDb, add_step, connector, terminal, wait_for};
use crate::helpers::{Options, TestApp, User, assert_error, spawn_app, spawn_custom};

fn sql_step(connector: &str) -> Value {
    json!({"name": "Extract", "type": "sql_query", "config": {"connector_uuid": connector, "query": "select 1"}})
}

async fn share(app: &TestApp, owner: &User, connector: &str, user: &User, permission: &str) {
    let reply = app
        .post(
            owner,
            &format!("/api/permissions/resource/connector/{connector}"),
            json!({"user_id": user.id, "permission": permission}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

async fn revoke(app: &TestApp, owner: &User, connector: &str, user: &User) {
    let reply = app
        .delete(
            owner,
            &format!("/api/permissions/resource/connector/{connector}/{}", user.id),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.text);
}

/// Every file under the app's object store.
fn objects(app: &TestApp) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&app.dir.path().join("objects"), &mut out);
    out
}

#[tokio::test]
async fn a_step_on_another_organizations_connector_is_404() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let mallory = User::member("user_mallory", "org_b");
    let theirs = offline_connector(&app, &alice).await;
    let project = app.create_project(&mallory, "borrowed").await;
    let steps = format!("/api/projects/{project}/steps");
    let reply = app.post(&mallory, &steps, sql_step(&theirs)).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    // An admin of the other organization is no closer.
    let boss = User::admin("user_boss", "org_b");
    let reply = app.post(&boss, &steps, sql_step(&theirs)).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    assert_eq!(app.get(&mallory, &steps).await.body["data"], json!([]));
}

#[tokio::test]
async fn a_step_on_a_connector_the_caller_has_no_relation_to_is_404() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    let hers = offline_connector(&app, &alice).await;
    let project = app.create_project(&bob, "mine").await;
    let reply = app
        .post(&bob, &format!("/api/projects/{project}/steps"), sql_step(&hers))
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test]
async fn a_step_on_a_connector_the_caller_only_views_is_403() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    let hers = offline_connector(&app, &alice).await;
    share(&app, &alice, &hers, &bob, "viewer").await;
    let project = app.create_project(&bob, "mine").await;
    let reply = app
        .post(&bob, &format!("/api/projects/{project}/steps"), sql_step(&hers))
        .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden", None);
}

#[tokio::test]
async fn editors_and_org_admins_may_use_a_connector_and_updates_are_checked_too() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    let admin = User::admin("user_root", "org_a");
    let shared = offline_connector(&app, &alice).await;
    let viewed = offline_connector(&app, &alice).await;
    share(&app, &alice, &shared, &bob, "editor").await;
    share(&app, &alice, &viewed, &bob, "viewer").await;
    let project = app.create_project(&bob, "mine").await;
    let steps = format!("/api/projects/{project}/steps");
    let created = app.post(&bob, &steps, sql_step(&shared)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let step = created.body["step_id"].as_str().expect("step_id");

    // Pointing the step at a connector bob only views is refused; so is one
    // of another organization.
    let path = format!("{steps}/{step}");
    let config = |uuid: &str| json!({"config": {"connector_uuid": uuid, "query": "select 2"}});
    assert_error(
        &app.put(&bob, &path, config(&viewed)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    let elsewhere = offline_connector(&app, &User::member("user_olga", "org_b")).await;
    assert_error(
        &app.put(&bob, &path, config(&elsewhere)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_eq!(
        app.get(&bob, &path).await.body["config"]["connector_uuid"],
        shared.as_str()
    );

    // An organization admin acts as owner on every connector of the org.
    let theirs = app.create_project(&admin, "admin's").await;
    let by_admin = app
        .post(
            &admin,
            &format!("/api/projects/{theirs}/steps"),
            sql_step(&viewed),
        )
        .await;
    assert_eq!(by_admin.status, StatusCode::CREATED, "{}", by_admin.text);
}

#[tokio::test]
async fn executing_after_the_grant_was_revoked_or_lowered_is_409_naming_the_step() {
    let app = spawn_custom(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    let hers = offline_connector(&app, &alice).await;
    share(&app, &alice, &hers, &bob, "editor").await;
    let project = app.create_project(&bob, "mine").await;
    let created = app
        .post(&bob, &format!("/api/projects/{project}/steps"), sql_step(&hers))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let step = created.body["step_id"].as_str().expect("step_id").to_owned();
    let execute = format!("/api/projects/{project}/execute");

    share(&app, &alice, &hers, &bob, "viewer").await;
    let lowered = app.post(&bob, &execute, json!({})).await;
    assert_error(&lowered, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(lowered.body["step_id"], step.as_str(), "{}", lowered.text);
    assert_eq!(lowered.body["connector_uuid"], hers.as_str(), "{}", lowered.text);

    revoke(&app, &alice, &hers, &bob).await;
    let revoked = app.post(&bob, &execute, json!({})).await;
    assert_error(&revoked, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(revoked.body["step_id"], step.as_str(), "{}", revoked.text);
    assert!(
        revoked.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "a connector the caller cannot see reads like a deleted one: {}",
        revoked.text
    );
    let executions = app
        .get(&bob, &format!("/api/projects/{project}/executions"))
        .await;
    assert_eq!(executions.body["data"], json!([]), "nothing was queued");
}

#[tokio::test]
async fn a_grant_revoked_after_admission_fails_the_step_as_forbidden_and_writes_nothing() {
    let app = spawn_custom(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    let db = SalesDb::create(3).await;
    // No worker yet to test it: saved untested.
    let created = app
        .post(
            &alice,
            "/api/connectors",
            json!({"type": "postgresql", "display_name": "sales", "config": db.config(),
                   "test_connection": false}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let hers = created.body["uuid"].as_str().expect("uuid").to_owned();
    share(&app, &alice, &hers, &bob, "editor").await;
    let project = app.create_project(&bob, "mine").await;
    add_step(
        &app,
        &bob,
        &project,
        "Extract",
        json!({"connector_uuid": hers, "query": "select * from sales"}),
    )
    .await;
    let accepted = app
        .post(&bob, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert_eq!(accepted.body["status"], "queued");
    let execution = accepted.body["execution_id"].as_str().expect("id").to_owned();

    revoke(&app, &alice, &hers, &bob).await;
    app.start_worker();
    let done = wait_for(&app, &bob, &project, &execution, terminal).await;
    assert_eq!(done["status"], "failed", "{done}");
    let step = &done["steps"][0];
    assert_eq!(step["status"], "failed", "{done}");
    assert_eq!(step["error"]["type"], "forbidden", "{done}");
    assert!(
        step["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&hers) && m.contains("editor")),
        "{done}"
    );
    assert_eq!(step["rows_processed"], 0, "{done}");
    assert_eq!(step["output_file"], Value::Null, "{done}");
    assert_eq!(
        objects(&app),
        Vec::<std::path::PathBuf>::new(),
        "no object was written"
    );
}

#[tokio::test]
async fn an_org_admins_execution_runs_on_a_connector_without_a_grant() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let admin = User::admin("user_root", "org_a");
    let db = SalesDb::create(3).await;
    let hers = connector(&app, &alice, &db).await;
    let project = app.create_project(&admin, "audit").await;
    add_step(
        &app,
        &admin,
        &project,
        "Extract",
        json!({"connector_uuid": hers, "query": "select * from sales"}),
    )
    .await;
    let accepted = app
        .post(&admin, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let execution = accepted.body["execution_id"].as_str().expect("id").to_owned();
    let done = wait_for(&app, &admin, &project, &execution, terminal).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["steps"][0]["rows_processed"], 3, "{done}");
}
