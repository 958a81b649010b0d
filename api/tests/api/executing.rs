//! A project with an execution queued, running or cancelling cannot change:
//! PUT and DELETE of the project and every step write answer 409 `conflict`
//! naming the execution. The apps here run without a worker, so an execute
//! call leaves its execution queued for as long as the test needs.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, Options, Reply, TestApp, User, assert_error, spawn_custom};

/// A project with two steps and an execution queued (no worker takes it).
struct Executing {
    app: TestApp,
    alice: User,
    project: String,
    steps: Vec<String>,
    execution: String,
}

/// A connector nobody connects to: saved without a connection test.
pub async fn offline_connector(app: &TestApp, user: &User) -> String {
    let reply = app
        .post(
            user,
            "/api/connectors",
            json!({"type": "postgresql", "display_name": "offline", "test_connection": false,
                   "config": {"host": "127.0.0.1", "port": 5432, "database": "nowhere",
                              "username": "nobody", "password": "not-a-real-password"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["uuid"].as_str().expect("uuid").to_owned()
}

async fn executing(backend: Backend) -> Executing {
    let app = spawn_custom(Options {
        backend,
        worker: false,
        ..Options::default()
    })
    .await;
    let alice = User::member("user_alice", "org_a");
    let connector = offline_connector(&app, &alice).await;
    let project = app.create_project(&alice, "busy").await;
    let mut steps = Vec::new();
    for name in ["first", "second"] {
        let reply = app
            .post(
                &alice,
                &format!("/api/projects/{project}/steps"),
                json!({"name": name, "type": "sql_query",
                       "config": {"connector_uuid": connector, "query": "select 1"}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        steps.push(reply.body["step_id"].as_str().expect("step_id").to_owned());
    }
    let accepted = app
        .post(&alice, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert_eq!(accepted.body["status"], "queued", "{}", accepted.text);
    let execution = accepted.body["execution_id"].as_str().expect("id").to_owned();
    Executing {
        app,
        alice,
        project,
        steps,
        execution,
    }
}

impl Executing {
    /// Asserts the 409 names the execution in progress.
    fn assert_refused(&self, reply: &Reply) {
        assert_error(reply, StatusCode::CONFLICT, "conflict", None);
        assert_eq!(
            reply.body["execution_id"],
            self.execution.as_str(),
            "{}",
            reply.text
        );
    }

    async fn steps(&self) -> Vec<Value> {
        let reply = self
            .app
            .get(&self.alice, &format!("/api/projects/{}/steps", self.project))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body["data"].as_array().cloned().unwrap_or_default()
    }

    /// Cancels the queued execution (cancelled at once): writes work again.
    async fn cancel(&self) {
        let reply = self
            .app
            .post(
                &self.alice,
                &format!(
                    "/api/projects/{}/executions/{}/cancel",
                    self.project, self.execution
                ),
                json!({}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
        assert_eq!(reply.body["status"], "cancelled", "{}", reply.text);
    }
}

#[tokio::test]
async fn updating_a_project_while_it_executes_is_409_naming_the_execution() {
    let busy = executing(Backend::Sqlite).await;
    let path = format!("/api/projects/{}", busy.project);
    let reply = busy.app.put(&busy.alice, &path, json!({"name": "renamed"})).await;
    busy.assert_refused(&reply);
    assert_eq!(busy.app.get(&busy.alice, &path).await.body["name"], "busy");
    busy.cancel().await;
    let after = busy.app.put(&busy.alice, &path, json!({"name": "renamed"})).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
    assert_eq!(after.body["name"], "renamed");
}

#[tokio::test]
async fn deleting_a_project_while_it_executes_is_409_whether_soft_or_hard() {
    let busy = executing(Backend::Postgres).await;
    let path = format!("/api/projects/{}", busy.project);
    busy.assert_refused(&busy.app.delete(&busy.alice, &path).await);
    busy.assert_refused(
        &busy
            .app
            .delete(&busy.alice, &format!("{path}?hard_delete=true"))
            .await,
    );
    let project = busy.app.get(&busy.alice, &path).await;
    assert_eq!(project.status, StatusCode::OK, "{}", project.text);
    assert_eq!(project.body["status"], "active", "neither archived nor deleted");
    busy.cancel().await;
    let deleted = busy
        .app
        .delete(&busy.alice, &format!("{path}?hard_delete=true"))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);
}

#[tokio::test]
async fn adding_a_step_while_the_project_executes_is_409_on_both_backends() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let busy = executing(backend).await;
        let reply = busy
            .app
            .post(
                &busy.alice,
                &format!("/api/projects/{}/steps", busy.project),
                json!({"name": "late", "type": "transform", "config": {"query": "select 1"}}),
            )
            .await;
        busy.assert_refused(&reply);
        assert_eq!(busy.steps().await.len(), 2, "{backend:?}: nothing was added");
    }
}

#[tokio::test]
async fn updating_a_step_while_the_project_executes_is_409() {
    let busy = executing(Backend::Sqlite).await;
    let path = format!("/api/projects/{}/steps/{}", busy.project, busy.steps[0]);
    let reply = busy.app.put(&busy.alice, &path, json!({"name": "renamed"})).await;
    busy.assert_refused(&reply);
    assert_eq!(busy.steps().await[0]["name"], "first");
    busy.cancel().await;
    let after = busy.app.put(&busy.alice, &path, json!({"name": "renamed"})).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
}

#[tokio::test]
async fn deleting_a_step_while_the_project_executes_is_409() {
    let busy = executing(Backend::Sqlite).await;
    let path = format!("/api/projects/{}/steps/{}", busy.project, busy.steps[1]);
    busy.assert_refused(&busy.app.delete(&busy.alice, &path).await);
    assert_eq!(busy.steps().await.len(), 2);
    busy.cancel().await;
    let after = busy.app.delete(&busy.alice, &path).await;
    assert_eq!(after.status, StatusCode::NO_CONTENT, "{}", after.text);
}

#[tokio::test]
async fn reordering_steps_while_the_project_executes_is_409() {
    let busy = executing(Backend::Postgres).await;
    let path = format!("/api/projects/{}/steps/reorder", busy.project);
    let reversed = json!({"step_ids": [busy.steps[1], busy.steps[0]]});
    busy.assert_refused(&busy.app.post(&busy.alice, &path, reversed.clone()).await);
    assert_eq!(busy.steps().await[0]["step_id"], busy.steps[0].as_str());
    busy.cancel().await;
    let after = busy.app.post(&busy.alice, &path, reversed).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text);
    assert_eq!(after.body["data"][0]["step_id"], busy.steps[1].as_str());
}
