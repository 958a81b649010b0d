//! Transient failures retry a step; permanent ones fail it at once. Each
//! test runs `ferry up` with up to 3 tries a step and a 50 ms retry delay,
//! against a fresh database on the shared PostgreSQL whose functions fail
//! the way a server does: a serialization failure (SQLSTATE 40001) the
//! first N times, or a long sleep on the first call whose connection the
//! test kills. The functions count their calls through `dblink`, in their
//! own transaction, so the count survives the failed statement and a
//! read-only step.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Running, ferry, free_port, http_send, wait_healthy};

use ferry_testkit::postgres::{PgDatabase, PgRole, psql_try};
// A name unique across tests and test processes.
use ferry_testkit::unique;

/// A database with the flaky functions and a login role of the same name
/// that may call them; both dropped at the end (the database first).
struct Source {
    database: PgDatabase,
    role: PgRole,
}

impl Source {
    fn create() -> Source {
        let name = unique("ferry_retry");
        let database = PgDatabase::named(&name, "");
        let role = PgRole::with_password(&name, &unique("pw"));
        database.psql(&format!(
            r#"
CREATE EXTENSION dblink;
CREATE TABLE tries (n integer NOT NULL);
INSERT INTO tries VALUES (0);
-- Counts one call in its own transaction and returns the count.
CREATE FUNCTION ferry_try() RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
DECLARE counted integer;
BEGIN
  SELECT t.n INTO counted FROM dblink(
    'host=127.0.0.1 port=5432 user=postgres dbname={name}',
    'UPDATE tries SET n = n + 1 RETURNING n') AS t(n integer);
  RETURN counted;
END $$;
-- A serialization failure for the first `failures` calls.
CREATE FUNCTION ferry_flaky(failures integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE try integer := ferry_try();
BEGIN
  IF try <= failures THEN
    RAISE EXCEPTION 'could not serialize access due to concurrent update (try %)', try
      USING ERRCODE = '40001';
  END IF;
  RETURN try;
END $$;
-- Sleeps a minute on the first call only.
CREATE FUNCTION ferry_slow_once() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE try integer := ferry_try();
BEGIN
  IF try = 1 THEN PERFORM pg_sleep(60); END IF;
  RETURN try;
END $$;
GRANT EXECUTE ON FUNCTION ferry_try(), ferry_flaky(integer), ferry_slow_once() TO {name};
"#
        ));
        Source { database, role }
    }

    /// How many times the functions were called.
    fn tries(&self) -> i64 {
        self.database
            .psql("SELECT n FROM tries")
            .parse()
            .expect("a count")
    }

    /// Terminates the step's connection once it sleeps in `pg_sleep`.
    fn kill_the_sleeping_step(&self) {
        let query = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE usename = '{}' AND wait_event = 'PgSleep'",
            self.role.name
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if psql_try("postgres", &query).as_deref() == Some("t") {
                return;
            }
            assert!(Instant::now() < deadline, "the step never reached pg_sleep");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `ferry up` with 3 tries a step, 50 ms apart at first, and a token.
struct App {
    _running: Running,
    _dir: tempfile::TempDir,
    base: String,
    token: String,
}

impl App {
    fn start() -> App {
        let dir = tempfile::tempdir().expect("dir");
        let port = free_port();
        let child = ferry(dir.path())
            .args(["up", "--listen", &format!("127.0.0.1:{port}")])
            .env("FERRY_ALLOW_PRIVATE_NETWORKS", "true")
            .env("FERRY_STEP_ATTEMPTS", "3")
            .env("FERRY_STEP_RETRY_DELAY", "50ms")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let running = Running(child);
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(&format!("{base}/readyz"));
        let token = ferry(dir.path())
            .args(["token", "--user", "user_01", "--org", "org_01"])
            .output()
            .expect("token");
        assert!(token.status.success());
        let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
        App {
            _running: running,
            _dir: dir,
            base,
            token,
        }
    }

    fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        http_send(method, &format!("{}{path}", self.base), &self.token, body)
    }

    /// A connector to `source` as `username`, never tested.
    fn connector(&self, source: &Source, username: &str) -> String {
        let (status, body) = self.send(
            reqwest::Method::POST,
            "/api/connectors",
            Some(json!({
                "type": "postgresql",
                "display_name": source.database.name,
                "config": {
                    "host": "127.0.0.1", "port": 5432, "database": source.database.name,
                    "username": username, "password": source.role.password,
                },
                "test_connection": false,
            })),
        );
        assert_eq!(status, 201, "{body}");
        body["uuid"].as_str().expect("uuid").to_owned()
    }

    /// A project of one SQL step running `query` through `connector`.
    fn project(&self, connector: &str, query: &str) -> (String, String) {
        let (status, project) = self.send(
            reqwest::Method::POST,
            "/api/projects",
            Some(json!({"name": unique("retries")})),
        );
        assert_eq!(status, 201, "{project}");
        let project = project["uuid"].as_str().expect("uuid").to_owned();
        let (status, step) = self.send(
            reqwest::Method::POST,
            &format!("/api/projects/{project}/steps"),
            Some(json!({
                "name": "extract", "type": "sql_query",
                "config": {"connector_uuid": connector, "query": query},
            })),
        );
        assert_eq!(status, 201, "{step}");
        (project, step["step_id"].as_str().expect("step_id").to_owned())
    }

    fn execute(&self, project: &str) -> String {
        let (status, execution) = self.send(
            reqwest::Method::POST,
            &format!("/api/projects/{project}/execute"),
            Some(json!({})),
        );
        assert!(status == 202 || status == 200, "{status} {execution}");
        execution["execution_id"]
            .as_str()
            .expect("execution_id")
            .to_owned()
    }

    /// The execution once it ended.
    fn ended(&self, project: &str, execution: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.send(
                reqwest::Method::GET,
                &format!("/api/projects/{project}/executions/{execution}"),
                None,
            );
            assert_eq!(status, 200, "{body}");
            if matches!(
                body["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return body;
            }
            assert!(Instant::now() < deadline, "the execution never ended: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The step's result rows, as JSON.
    fn result(&self, project: &str, execution: &str, step: &str) -> Value {
        let (status, body) = self.send(
            reqwest::Method::GET,
            &format!("/api/projects/{project}/executions/{execution}/steps/{step}/result?limit=10"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Three rows, each carrying the try that produced them.
fn three_rows_of(function: &str) -> String {
    format!("select f.n as try, g from {function} f(n) cross join generate_series(1, 3) g order by g")
}

/// The result holds the three rows, all from the second try: the retry
/// wrote a fresh object, nothing of the failed try.
fn assert_the_second_try_wrote_every_row(result: &Value) {
    assert_eq!(result["total_rows"], 3, "{result}");
    let rows = result["data"].as_array().expect("data rows");
    assert_eq!(rows.len(), 3, "{result}");
    for (g, row) in rows.iter().enumerate() {
        assert_eq!(row["try"], 2, "{result}");
        assert_eq!(row["g"], g + 1, "{result}");
    }
}

#[test]
fn a_step_whose_connection_is_killed_mid_query_is_retried_and_the_execution_completes() {
    let source = Source::create();
    let app = App::start();
    let connector = app.connector(&source, &source.role.name);
    let (project, step) = app.project(&connector, &three_rows_of("ferry_slow_once()"));
    let execution = app.execute(&project);
    source.kill_the_sleeping_step();

    let ended = app.ended(&project, &execution);
    assert_eq!(ended["status"], "completed", "{ended}");
    let run = &ended["steps"][0];
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["attempts"], 2, "{run}");
    assert_eq!(run["rows_processed"], 3, "{run}");
    assert!(run["error"].is_null(), "{run}");
    assert_eq!(source.tries(), 2);
    // The object is the second try's, whole.
    let result = app.result(&project, &execution, &step);
    assert_the_second_try_wrote_every_row(&result);
}

#[test]
fn a_serialization_failure_is_retried_and_the_result_is_the_successful_try() {
    let source = Source::create();
    let app = App::start();
    let connector = app.connector(&source, &source.role.name);
    let (project, step) = app.project(&connector, &three_rows_of("ferry_flaky(1)"));
    let execution = app.execute(&project);

    let ended = app.ended(&project, &execution);
    assert_eq!(ended["status"], "completed", "{ended}");
    let run = &ended["steps"][0];
    assert_eq!(run["attempts"], 2, "{run}");
    assert_eq!(run["rows_processed"], 3, "{run}");
    assert_eq!(source.tries(), 2);
    let result = app.result(&project, &execution, &step);
    assert_the_second_try_wrote_every_row(&result);
}

#[test]
fn a_syntax_error_or_a_refused_login_fails_the_step_at_once_after_one_attempt() {
    let source = Source::create();
    let app = App::start();
    let good = app.connector(&source, &source.role.name);
    let (project, _) = app.project(&good, "selec ferry_flaky(0)");
    let execution = app.execute(&project);
    let ended = app.ended(&project, &execution);
    assert_eq!(ended["status"], "failed", "{ended}");
    let run = &ended["steps"][0];
    assert_eq!(run["attempts"], 1, "{run}");
    assert_eq!(run["error"]["type"], "invalid_query", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("42601")),
        "{run}"
    );
    for field in [
        "step_id",
        "name",
        "type",
        "order",
        "status",
        "started_at",
        "completed_at",
        "rows_processed",
        "bytes_written",
        "output_file",
        "error",
    ] {
        assert!(run.get(field).is_some(), "{field} is still there: {run}");
    }

    // The shared server trusts every password on 127.0.0.1, so the login
    // is refused for a role that does not exist (SQLSTATE 28000).
    let wrong = app.connector(&source, &format!("{}_nobody", source.role.name));
    let (project, _) = app.project(&wrong, &three_rows_of("ferry_flaky(0)"));
    let execution = app.execute(&project);
    let ended = app.ended(&project, &execution);
    assert_eq!(ended["status"], "failed", "{ended}");
    let run = &ended["steps"][0];
    assert_eq!(run["attempts"], 1, "{run}");
    // The pool connects lazily, so the refusal comes as the step's
    // connection failing, with the login's SQLSTATE: not retried.
    assert_eq!(run["error"]["type"], "connection_failed", "{run}");
    assert!(
        run["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("28000")),
        "{run}"
    );
    assert_eq!(source.tries(), 0, "nothing ran");
}

#[test]
fn a_transient_failure_that_never_ends_fails_the_step_after_the_last_of_its_tries() {
    let source = Source::create();
    let app = App::start();
    let connector = app.connector(&source, &source.role.name);
    let (project, _) = app.project(&connector, &three_rows_of("ferry_flaky(1000)"));
    let execution = app.execute(&project);

    let ended = app.ended(&project, &execution);
    assert_eq!(ended["status"], "failed", "{ended}");
    let run = &ended["steps"][0];
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["attempts"], 3, "{run}");
    assert_eq!(run["error"]["type"], "invalid_query", "{run}");
    let message = run["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("could not serialize") && message.contains("40001"),
        "{run}"
    );
    assert_eq!(source.tries(), 3, "exactly three tries ran");
}
