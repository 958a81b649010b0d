//! Executions through the API: an in-process worker runs the steps against
//! a real PostgreSQL database and writes Parquet to a local object store.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::connectors::PgRole;
use crate::helpers::{TestApp, User, assert_error, spawn_app};

/// A database of sales rows owned by a login role, dropped at the end.
pub struct SalesDb {
    name: String,
    // Dropped before its owner.
    _database: ferry_testkit::postgres::PgDatabase,
    role: PgRole,
}

impl SalesDb {
    pub async fn create(rows: i64) -> SalesDb {
        let role = PgRole::create().await;
        let database =
            ferry_testkit::postgres::PgDatabase::create_with("ferry_sales", &format!("OWNER {}", role.name));
        let name = database.name.clone();
        let url = format!("postgres://{}:{}@127.0.0.1:5432/{name}", role.name, role.password);
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect as role");
        sqlx::query(
            "CREATE TABLE sales (id bigint PRIMARY KEY, region text, amount numeric(12,2), day date)",
        )
        .execute(&mut conn)
        .await
        .expect("table");
        sqlx::query(
            "INSERT INTO sales SELECT g, (ARRAY['north','south','emea'])[1 + g % 3], (g * 1.25)::numeric(12,2), \
             date '2024-09-25' + (g % 20)::int FROM generate_series(1, $1) g",
        )
        .bind(rows)
        .execute(&mut conn)
        .await
        .expect("rows");
        SalesDb {
            name,
            _database: database,
            role,
        }
    }

    pub fn config(&self) -> Value {
        let mut config = self.role.config();
        config["database"] = json!(self.name);
        config
    }

    async fn count(&self, sql: &str) -> i64 {
        let url = format!("postgres://postgres@127.0.0.1:5432/{}", self.name);
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&mut conn)
            .await
            .expect("count")
    }
}

pub async fn connector(app: &TestApp, user: &User, db: &SalesDb) -> String {
    let reply = app
        .post(
            user,
            "/api/connectors",
            json!({"type": "postgresql", "display_name": "sales", "config": db.config()}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["uuid"].as_str().expect("uuid").to_owned()
}

pub async fn add_step(app: &TestApp, user: &User, project: &str, name: &str, config: Value) -> String {
    let reply = app
        .post(
            user,
            &format!("/api/projects/{project}/steps"),
            json!({"name": name, "type": "sql_query", "config": config}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["step_id"].as_str().expect("step_id").to_owned()
}

pub async fn wait_for(
    app: &TestApp,
    user: &User,
    project: &str,
    execution: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = app
            .get(user, &format!("/api/projects/{project}/executions/{execution}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        if done(&reply.body) {
            return reply.body;
        }
        assert!(
            Instant::now() < deadline,
            "execution never reached the expected state: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn terminal(body: &Value) -> bool {
    matches!(
        body["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

#[tokio::test]
async fn an_execution_runs_every_step_and_serves_its_results() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let db = SalesDb::create(250).await;
    let conn = connector(&app, &alice, &db).await;
    let project = app.create_project(&alice, "Sales Analysis").await;
    let first = add_step(
        &app,
        &alice,
        &project,
        "Extract sales",
        json!({"connector_uuid": conn,
        "query": "select id, region, amount, day from sales where day >= {{start_date}} order by id",
        "parameters": {"start_date": {"type": "date"}}}),
    )
    .await;
    let second = add_step(&app, &alice, &project, "By region", json!({"connector_uuid": conn,
        "query": "select region, count(*) as n, sum(amount) as total from sales group by region order by region"})).await;

    let accepted = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"parameters": {"start_date": "2024-10-01"}, "notify_on_completion": true}),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    let execution = accepted.body["execution_id"].as_str().expect("id").to_owned();
    assert!(execution.starts_with("exec_"));
    assert!(matches!(
        accepted.body["status"].as_str(),
        Some("queued" | "running")
    ));
    assert_eq!(accepted.body["steps"].as_array().map(Vec::len), Some(2));
    assert_eq!(accepted.body["progress"]["total_steps"], 2);
    assert_eq!(accepted.body["notify_on_completion"], true);

    let done = wait_for(&app, &alice, &project, &execution, terminal).await;
    assert_eq!(done["status"], "completed", "{done}");
    let expected_rows = db
        .count("select count(*) from sales where day >= date '2024-10-01'")
        .await;
    assert_eq!(done["steps"][0]["rows_processed"], expected_rows);
    assert_eq!(done["steps"][1]["rows_processed"], 3);
    assert_eq!(done["results"]["total_rows"], expected_rows + 3);
    assert_eq!(
        done["progress"],
        json!({"completed_steps": 2, "total_steps": 2, "percentage": 100})
    );
    let files = done["results"]["output_files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    assert!(
        files[0]
            .as_str()
            .is_some_and(|f| f.ends_with(&format!("results/{execution}/{first}.parquet"))),
        "{files:?}"
    );
    assert_eq!(done["results"]["final_file"], files[1]);
    assert!(done["steps"][0]["bytes_written"].as_i64().is_some_and(|b| b > 0));
    assert!(done["duration_seconds"].is_number());

    let project_view = app.get(&alice, &format!("/api/projects/{project}")).await;
    assert_eq!(project_view.body["status"], "active");
    assert!(project_view.body["last_executed_at"].is_string());

    let base = format!("/api/projects/{project}/executions/{execution}/steps");
    let page = app
        .get(&alice, &format!("{base}/{first}/result?limit=5&offset=2"))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.body["total_rows"], expected_rows);
    assert_eq!(page.body["limit"], 5);
    assert_eq!(page.body["offset"], 2);
    let rows = page.body["data"].as_array().expect("data");
    assert_eq!(rows.len(), 5);
    let columns: Vec<&str> = page.body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["id", "region", "amount", "day"]);
    let first_id = rows[0]["id"].as_i64().expect("id");
    let amount = rows[0]["amount"].as_str().expect("decimals are strings");
    assert_eq!(amount, format!("{:.2}", first_id as f64 * 1.25));

    let by_region = app.get(&alice, &format!("{base}/{second}/result")).await;
    assert_eq!(by_region.body["data"][0]["region"], "emea");
    let csv = app
        .client
        .get(app.url(&format!("{base}/{second}/result?format=csv")))
        .bearer_auth(alice.token())
        .send()
        .await
        .expect("csv");
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/csv"))
    );
    let csv = csv.text().await.expect("text");
    assert!(csv.starts_with("region,n,total\n"), "{csv}");
    assert_eq!(csv.lines().count(), 4);
    let parquet = app
        .client
        .get(app.url(&format!("{base}/{second}/result?format=parquet")))
        .bearer_auth(alice.token())
        .send()
        .await
        .expect("parquet");
    assert_eq!(
        parquet.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let bytes = parquet.bytes().await.expect("bytes");
    assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
    assert_error(
        &app.get(&alice, &format!("{base}/{second}/result?format=xml"))
            .await,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("format"),
    );
    assert_error(
        &app.get(&alice, &format!("{base}/{second}/result?limit=0")).await,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("limit"),
    );

    let list = app
        .get(&alice, &format!("/api/projects/{project}/executions"))
        .await;
    assert_eq!(list.body["pagination"]["total"], 1);
    assert_eq!(list.body["data"][0]["execution_id"], execution);
}

#[tokio::test]
async fn sync_mode_answers_200_with_the_completed_execution() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let db = SalesDb::create(10).await;
    let conn = connector(&app, &alice, &db).await;
    let project = app.create_project(&alice, "sync").await;
    add_step(
        &app,
        &alice,
        &project,
        "all",
        json!({"connector_uuid": conn, "query": "select * from sales"}),
    )
    .await;
    let reply = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["status"], "completed");
    assert_eq!(reply.body["results"]["total_rows"], 10);
    let again = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync"}),
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "a finished execution does not block the next one"
    );
}

#[tokio::test]
async fn a_missing_or_mistyped_parameter_is_400_before_anything_is_queued() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let db = SalesDb::create(1).await;
    let conn = connector(&app, &alice, &db).await;
    let project = app.create_project(&alice, "params").await;
    add_step(
        &app,
        &alice,
        &project,
        "s",
        json!({"connector_uuid": conn, "query": "select * from sales where day >= {{start_date}} limit {{n}}",
        "parameters": {"start_date": {"type": "date"}, "n": {"type": "integer", "default": 5}}}),
    )
    .await;
    let missing = app
        .post(&alice, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    assert_error(
        &missing,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("parameters.start_date"),
    );
    assert_eq!(missing.body["message"], "Missing required parameter: start_date");
    let mistyped = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"parameters": {"start_date": "2024-10-01", "n": "five"}}),
        )
        .await;
    assert_error(
        &mistyped,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("parameters.n"),
    );
    let list = app
        .get(&alice, &format!("/api/projects/{project}/executions"))
        .await;
    assert_eq!(list.body["pagination"]["total"], 0, "nothing was queued");
    let project_view = app.get(&alice, &format!("/api/projects/{project}")).await;
    assert_eq!(project_view.body["status"], "draft");
}

#[tokio::test]
async fn an_injection_attempt_through_a_parameter_is_only_a_value() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let db = SalesDb::create(5).await;
    let conn = connector(&app, &alice, &db).await;
    let project = app.create_project(&alice, "inject").await;
    add_step(
        &app,
        &alice,
        &project,
        "s",
        json!({"connector_uuid": conn, "query": "select * from sales where region = {{region}}"}),
    )
    .await;
    let reply = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync", "parameters": {"region": "x'; DROP TABLE sales; --"}}),
        )
        .await;
    assert_eq!(reply.body["status"], "completed", "{}", reply.text);
    assert_eq!(reply.body["results"]["total_rows"], 0);
    assert_eq!(
        db.count("select count(*) from sales").await,
        5,
        "the table is intact"
    );
}

#[tokio::test]
async fn a_failing_step_fails_the_execution_and_skips_the_rest() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let db = SalesDb::create(3).await;
    let conn = connector(&app, &alice, &db).await;
    let project = app.create_project(&alice, "failing").await;
    add_step(
        &app,
        &alice,
        &project,
        "ok",
        json!({"connector_uuid": conn, "query": "select 1 as one"}),
    )
    .await;
    let broken = add_step(
        &app,
        &alice,
        &project,
        "broken",
        json!({"connector_uuid": conn, "query": "select * from no_such_table"}),
    )
    .await;
    add_step(
        &app,
        &alice,
        &project,
        "never",
        json!({"connector_uuid": conn, "query": "select 2"}),
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
    let steps = reply.body["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["status"], "completed");
    assert_eq!(steps[1]["status"], "failed");
    assert!(
        steps[1]["error"]["type"].is_string()
            && steps[1]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no_such_table")),
        "{}",
        steps[1]
    );
    assert_eq!(steps[2]["status"], "skipped");
    let execution = reply.body["execution_id"].as_str().expect("id");
    let result = app
        .get(
            &alice,
            &format!("/api/projects/{project}/executions/{execution}/steps/{broken}/result"),
        )
        .await;
    assert_error(&result, StatusCode::CONFLICT, "conflict", None);
}

#[tokio::test]
async fn cancel_stops_the_running_query_and_leaves_no_object() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let db = SalesDb::create(1).await;
    let conn = connector(&app, &alice, &db).await;
    let project = app.create_project(&alice, "slow").await;
    let step = add_step(
        &app,
        &alice,
        &project,
        "sleepy",
        json!({"connector_uuid": conn, "query": "select pg_sleep(30)::text as slept, 1 as one"}),
    )
    .await;
    let accepted = app
        .post(&alice, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    let execution = accepted.body["execution_id"].as_str().expect("id").to_owned();
    wait_for(&app, &alice, &project, &execution, |b| {
        b["steps"][0]["status"] == "running"
    })
    .await;

    let busy = app
        .post(&alice, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    assert_error(&busy, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(busy.body["execution_id"], execution.as_str());
    assert_eq!(busy.body["message"], "Project is already executing");
    let patch = app
        .call(
            &alice,
            reqwest::Method::PATCH,
            &format!("/api/connectors/{conn}"),
            Some(json!({"config": {"max_connections": 2}, "test_connection": false})),
        )
        .await;
    assert_error(&patch, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(patch.body["active_executions"], 1);

    let started = Instant::now();
    let cancel = app
        .post(
            &alice,
            &format!("/api/projects/{project}/executions/{execution}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{}", cancel.text);
    assert!(matches!(
        cancel.body["status"].as_str(),
        Some("cancelling" | "cancelled")
    ));
    let done = wait_for(&app, &alice, &project, &execution, terminal).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["steps"][0]["status"], "cancelled");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "cancel did not wait for the 30 s query"
    );
    assert_eq!(db.count("select count(*) from pg_stat_activity where query like '%pg_sleep(30)%' and pid <> pg_backend_pid()").await, 0);
    let object = app
        .dir
        .path()
        .join(format!("objects/results/{execution}/{step}.parquet"));
    assert!(!object.exists(), "no partial object");
    let again = app
        .post(
            &alice,
            &format!("/api/projects/{project}/executions/{execution}/cancel"),
            json!({}),
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", None);
}

#[tokio::test]
async fn executing_with_a_disabled_connector_is_409_naming_the_step() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let db = SalesDb::create(1).await;
    let conn = connector(&app, &alice, &db).await;
    let project = app.create_project(&alice, "disabled").await;
    let step = add_step(
        &app,
        &alice,
        &project,
        "Extract",
        json!({"connector_uuid": conn, "query": "select 1"}),
    )
    .await;
    app.post(&alice, &format!("/api/connectors/{conn}/disable"), json!({}))
        .await;
    let reply = app
        .post(&alice, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(reply.body["step_id"], step.as_str());
    assert!(
        reply.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("Extract"))
    );
    app.delete(&alice, &format!("/api/projects/{project}")).await;
    let archived = app
        .post(&alice, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    assert_error(&archived, StatusCode::CONFLICT, "conflict", None);
}

#[tokio::test]
async fn progress_streams_as_server_sent_events_until_done() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let db = SalesDb::create(5).await;
    let conn = connector(&app, &alice, &db).await;
    let project = app.create_project(&alice, "events").await;
    add_step(
        &app,
        &alice,
        &project,
        "wait",
        json!({"connector_uuid": conn, "query": "select pg_sleep(1)::text as slept, 1 as one"}),
    )
    .await;
    add_step(
        &app,
        &alice,
        &project,
        "all",
        json!({"connector_uuid": conn, "query": "select * from sales"}),
    )
    .await;
    let accepted = app
        .post(&alice, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    let execution = accepted.body["execution_id"].as_str().expect("id");
    let response = app
        .client
        .get(app.url(&format!("/api/projects/{project}/executions/{execution}/events")))
        .bearer_auth(alice.token())
        .send()
        .await
        .expect("events");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    let text = tokio::time::timeout(Duration::from_secs(60), response.text())
        .await
        .expect("the stream ends")
        .expect("text");
    assert!(text.contains("event: progress"), "{text}");
    assert!(text.contains("event: step"), "{text}");
    let done = text.split("event: done").nth(1).expect("a done event");
    assert!(done.contains("\"status\":\"completed\""), "{done}");
}
