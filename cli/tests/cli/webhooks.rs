//! Webhook deliveries through separate `ferry api`, `ferry worker` and
//! `ferry scheduler` processes over a fresh PostgreSQL database and a
//! private Redis: signed per Standard Webhooks and checked by an
//! independent implementation (the `standardwebhooks` package from PyPI,
//! testkit's receiver), retried with backoff under one `webhook-id`, logged,
//! redelivered; the `notify_on_completion` rule; a disabled webhook gets
//! nothing; a hanging receiver costs the timeout; the network policy
//! refuses a private address; and no event is lost when Redis restarts
//! empty or a worker is killed mid-delivery. Also under `ferry up`, on the
//! embedded store and queue.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_testkit::redis::PrivateRedis;
use ferry_testkit::webhooks::Receiver;
use reqwest::Method;
use serde_json::{Value, json};

use crate::{HS_SECRET, KEY, PgDatabase, Running, block_on, ferry, free_port, http_send, wait_healthy};

const ORG: &str = "org_hooks";

/// Polls `probe` every 100 ms until it yields, failing after `within`.
fn eventually<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An api and a scheduler (and the workers a test starts) on one database
/// and one private Redis.
struct Deployment {
    dir: tempfile::TempDir,
    database: PgDatabase,
    redis: PrivateRedis,
    api: u16,
    token: String,
    _api: Running,
    _scheduler: Running,
}

impl Deployment {
    fn start() -> Deployment {
        let dir = tempfile::tempdir().expect("dir");
        let database = PgDatabase::create("ferry_cli_hooks");
        let redis = block_on(PrivateRedis::start());
        let deployment_env = |command: &mut Command| {
            command
                .env("FERRY_DATABASE_URL", database.url())
                .env("FERRY_REDIS_URL", redis.url())
                .env("FERRY_MASTER_KEY", KEY)
                .env("FERRY_JWT_HS256_SECRET", HS_SECRET)
                .env("FERRY_JOB_LEASE", "2s");
        };
        let mut migrate = ferry(dir.path());
        deployment_env(&mut migrate);
        let out = migrate.arg("migrate").output().expect("migrate");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let api = free_port();
        let mut command = ferry(dir.path());
        deployment_env(&mut command);
        let api_process = Running(
            command
                .args(["api", "--listen", &format!("127.0.0.1:{api}")])
                .stderr(Stdio::null())
                .spawn()
                .expect("api"),
        );
        let mut command = ferry(dir.path());
        deployment_env(&mut command);
        let scheduler = Running(
            command
                .args(["scheduler", "--admin-listen", "127.0.0.1:0"])
                .env("FERRY_WEBHOOK_INTERVAL_MS", "100")
                .env("FERRY_QUEUED_GRACE_SECONDS", "1")
                .env("FERRY_PROBE_INTERVAL", "0")
                .stderr(Stdio::null())
                .spawn()
                .expect("scheduler"),
        );
        wait_healthy(&format!("http://127.0.0.1:{api}/readyz"));
        let mut command = ferry(dir.path());
        deployment_env(&mut command);
        let out = command
            .args(["token", "--user", "user_hooks", "--org", ORG, "--admin"])
            .output()
            .expect("token");
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Deployment {
            dir,
            database,
            redis,
            api,
            token,
            _api: api_process,
            _scheduler: scheduler,
        }
    }

    /// Starts a worker with `env` on top of the deployment's settings
    /// (webhook timeout 2 s and private networks allowed unless overridden).
    fn worker(&self, env: &[(&str, &str)]) -> Running {
        let mut command = ferry(self.dir.path());
        command
            .env("FERRY_DATABASE_URL", self.database.url())
            .env("FERRY_REDIS_URL", self.redis.url())
            .env("FERRY_MASTER_KEY", KEY)
            .env("FERRY_JWT_HS256_SECRET", HS_SECRET)
            .env("FERRY_JOB_LEASE", "2s")
            .env("FERRY_WEBHOOK_TIMEOUT", "2s")
            .env("FERRY_ALLOW_PRIVATE_NETWORKS", "true");
        for (key, value) in env {
            command.env(key, value);
        }
        Running(
            command
                .args(["worker", "--admin-listen", "127.0.0.1:0"])
                .stderr(Stdio::null())
                .spawn()
                .expect("worker"),
        )
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        http_send(
            method,
            &format!("http://127.0.0.1:{}{path}", self.api),
            &self.token,
            body,
        )
    }

    /// Creates a webhook to `port`; returns its uuid and secret.
    fn webhook(&self, port: u16, body: Value) -> (String, String) {
        let mut body = body;
        body["url"] = json!(format!("http://127.0.0.1:{port}/hook"));
        let (status, created) = self.call(Method::POST, "/api/webhooks", Some(body));
        assert_eq!(status, 201, "{created}");
        (
            created["uuid"].as_str().expect("uuid").to_owned(),
            created["secret"].as_str().expect("secret").to_owned(),
        )
    }

    /// A project with one transform step; its uuid.
    fn project(&self) -> String {
        let (status, project) = self.call(Method::POST, "/api/projects", Some(json!({"name": "hooked"})));
        assert_eq!(status, 201, "{project}");
        let uuid = project["uuid"].as_str().expect("uuid").to_owned();
        let (status, step) = self.call(
            Method::POST,
            &format!("/api/projects/{uuid}/steps"),
            Some(json!({"name": "one", "type": "transform", "config": {"query": "select 1 as x"}})),
        );
        assert_eq!(status, 201, "{step}");
        uuid
    }

    /// Executes a project and cancels it while it is queued (no worker
    /// runs yet: call it before starting one): a `project.cancelled` event
    /// with no worker involved.
    fn cancelled_execution(&self) -> String {
        let project = self.project();
        let (status, execution) = self.call(
            Method::POST,
            &format!("/api/projects/{project}/execute"),
            Some(json!({})),
        );
        assert_eq!(status, 202, "{execution}");
        let id = execution["execution_id"].as_str().expect("id").to_owned();
        let (status, cancelled) = self.call(
            Method::POST,
            &format!("/api/projects/{project}/executions/{id}/cancel"),
            None,
        );
        assert_eq!(status, 202, "{cancelled}");
        assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
        id
    }

    fn deliveries(&self, webhook: &str) -> Vec<Value> {
        let (status, list) = self.call(Method::GET, &format!("/api/webhooks/{webhook}/deliveries"), None);
        assert_eq!(status, 200, "{list}");
        list["data"].as_array().cloned().unwrap_or_default()
    }
}

fn received(receiver: &Receiver) -> Vec<Value> {
    block_on(receiver.received())
}

fn of_type<'a>(items: &'a [Value], event_type: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|item| item["body"]["type"] == event_type)
        .collect()
}

#[test]
fn webhooks_are_signed_retried_under_one_webhook_id_logged_redelivered_and_follow_the_notify_rule() {
    let deployment = Deployment::start();
    let _worker = deployment.worker(&[]);
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let (hook_a, secret_a) = deployment.webhook(
        port_a,
        json!({"events": ["execution.started", "project.completed"],
               "retry_config": {"max_attempts": 4, "initial_interval_seconds": 1, "max_interval_seconds": 2}}),
    );
    let (_hook_b, secret_b) = deployment.webhook(port_b, json!({"events": ["project.failed"]}));
    let (_hook_c, secret_c) =
        deployment.webhook(port_c, json!({"events": ["project.completed"], "enabled": false}));
    let receiver_a = block_on(Receiver::start(port_a, &secret_a, 2));
    let receiver_b = block_on(Receiver::start(port_b, &secret_b, 0));
    let receiver_c = block_on(Receiver::start(port_c, &secret_c, 0));

    let project = deployment.project();
    let (status, execution) = deployment.call(
        Method::POST,
        &format!("/api/projects/{project}/execute"),
        Some(json!({"mode": "sync", "notify_on_completion": true})),
    );
    assert_eq!(status, 200, "{execution}");
    assert_eq!(execution["status"], "completed", "{execution}");
    let execution_id = execution["execution_id"].as_str().expect("id");

    // Each event: two tries refused on purpose, the third delivered.
    let tries = eventually("three tries of each event at A", Duration::from_secs(40), || {
        let items = received(&receiver_a);
        (of_type(&items, "project.completed").len() >= 3 && of_type(&items, "execution.started").len() >= 3)
            .then_some(items)
    });
    assert!(tries.iter().all(|item| item["verified"] == true), "{tries:?}");
    for event_type in ["execution.started", "project.completed"] {
        let tries = of_type(&tries, event_type);
        assert_eq!(tries.len(), 3, "{event_type}: {tries:?}");
        let id = tries[0]["webhook_id"].as_str().expect("webhook-id");
        assert!(
            tries.iter().all(|item| item["webhook_id"] == id),
            "one webhook-id: {tries:?}"
        );
        assert_eq!(tries[0]["body"]["id"], id);
        let at: Vec<f64> = tries
            .iter()
            .map(|item| item["at"].as_f64().expect("at"))
            .collect();
        // Backoff: 1 s, then 2 s, each less at most a fifth of jitter.
        assert!(at[1] - at[0] >= 0.75, "first retry after ~1 s: {at:?}");
        assert!(at[2] - at[1] >= 1.5, "second retry after ~2 s: {at:?}");
    }
    let completed = of_type(&tries, "project.completed")[0]["body"].clone();
    let data = &completed["data"];
    assert_eq!(data["execution_id"], execution_id, "{completed}");
    assert_eq!(data["project_uuid"], project.as_str());
    assert_eq!(data["status"], "completed");
    assert_eq!(data["total_rows"], 1);
    assert_eq!(
        data["output_files"].as_array().map(Vec::len),
        Some(1),
        "{completed}"
    );
    assert!(data["duration_seconds"].is_number(), "{completed}");
    assert_eq!(data["failed_step"], Value::Null);
    assert!(completed["created_at"].is_string());

    // The log: newest first, each try with its status.
    let log = eventually("the delivery log", Duration::from_secs(10), || {
        let log = deployment.deliveries(&hook_a);
        (log.len() == 6).then_some(log)
    });
    let completed_id = completed["id"].as_str().expect("id");
    let completed_log: Vec<&Value> = log
        .iter()
        .filter(|item| item["event_id"] == completed_id)
        .collect();
    assert_eq!(
        completed_log
            .iter()
            .map(|item| (
                item["attempt"].as_i64(),
                item["status_code"].as_i64(),
                item["ok"].as_bool()
            ))
            .collect::<Vec<_>>(),
        vec![
            (Some(3), Some(204), Some(true)),
            (Some(2), Some(500), Some(false)),
            (Some(1), Some(500), Some(false))
        ],
        "{log:?}"
    );
    assert!(
        completed_log
            .iter()
            .all(|item| item["event_type"] == "project.completed" && item["duration_ms"].is_number())
    );
    let delivery = completed_log[0]["delivery_id"]
        .as_str()
        .expect("delivery id")
        .to_owned();

    // notify_on_completion: B (subscribed to project.failed only) gets the
    // completion, not execution.started; C is disabled and gets nothing.
    let at_b = eventually("the completion at B", Duration::from_secs(10), || {
        let items = received(&receiver_b);
        (!items.is_empty()).then_some(items)
    });
    assert_eq!(at_b.len(), 1, "{at_b:?}");
    assert_eq!(at_b[0]["body"]["type"], "project.completed");
    assert_eq!(
        at_b[0]["webhook_id"], completed_id,
        "one event, one id for every webhook"
    );
    assert!(received(&receiver_c).is_empty());

    // Redelivery: the same webhook-id again, logged as the next try.
    let (status, answer) = deployment.call(
        Method::POST,
        &format!("/api/webhooks/{hook_a}/deliveries/{delivery}/redeliver"),
        None,
    );
    assert_eq!(status, 202, "{answer}");
    let again = eventually("the redelivery", Duration::from_secs(10), || {
        let items = received(&receiver_a);
        let completed = of_type(&items, "project.completed").len();
        (completed == 4).then_some(items)
    });
    let last = of_type(&again, "project.completed")[3];
    assert_eq!(last["webhook_id"], completed_id);
    assert_eq!(last["verified"], true);
    let log = eventually("the redelivery's log", Duration::from_secs(10), || {
        let log = deployment.deliveries(&hook_a);
        (log.len() == 7).then_some(log)
    });
    assert_eq!(log[0]["delivery_id"], delivery.as_str());
    assert_eq!(log[0]["attempt"], 4);
    assert_eq!(log[0]["ok"], true);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        received(&receiver_c).is_empty(),
        "a disabled webhook receives nothing"
    );
}

#[test]
fn a_hanging_receiver_costs_at_most_the_timeout() {
    let deployment = Deployment::start();
    let port = free_port();
    let (hook, secret) = deployment.webhook(
        port,
        json!({"events": ["project.cancelled"], "retry_config": {"max_attempts": 1}}),
    );
    let receiver = block_on(Receiver::start(port, &secret, 0));
    block_on(receiver.configure(json!({"hang": true})));
    deployment.cancelled_execution();
    let _worker = deployment.worker(&[("FERRY_WEBHOOK_TIMEOUT", "1s")]);
    let log = eventually("the timed-out try", Duration::from_secs(20), || {
        let log = deployment.deliveries(&hook);
        (!log.is_empty()).then_some(log)
    });
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["ok"], false);
    assert_eq!(log[0]["status_code"], Value::Null);
    let error = log[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("timeout"), "{error}");
    let duration = log[0]["duration_ms"].as_i64().expect("duration");
    assert!(
        (900..3000).contains(&duration),
        "bounded by the 1 s timeout: {duration} ms"
    );
    assert_eq!(received(&receiver).len(), 1, "the receiver saw the try");
}

#[test]
fn the_network_policy_refuses_a_private_receiver_on_every_try() {
    let deployment = Deployment::start();
    let port = free_port();
    let (hook, secret) = deployment.webhook(
        port,
        json!({"events": ["project.cancelled"], "retry_config": {"max_attempts": 2, "initial_interval_seconds": 1}}),
    );
    let receiver = block_on(Receiver::start(port, &secret, 0));
    deployment.cancelled_execution();
    let _worker = deployment.worker(&[("FERRY_ALLOW_PRIVATE_NETWORKS", "false")]);
    let log = eventually("two refused tries", Duration::from_secs(20), || {
        let log = deployment.deliveries(&hook);
        (log.len() == 2).then_some(log)
    });
    for item in &log {
        assert_eq!(item["ok"], false, "{log:?}");
        assert_eq!(item["status_code"], Value::Null);
        assert!(
            item["error"]
                .as_str()
                .unwrap_or_default()
                .contains("blocked_address"),
            "{log:?}"
        );
    }
    assert!(
        received(&receiver).is_empty(),
        "nothing reached the private address"
    );
}

#[test]
fn redis_restarted_empty_loses_no_webhook_event() {
    let mut deployment = Deployment::start();
    let port = free_port();
    let (_hook, secret) = deployment.webhook(port, json!({"events": ["project.cancelled"]}));
    let receiver = block_on(Receiver::start(port, &secret, 0));
    // No worker yet: the events wait in the store, their jobs in Redis.
    let executions: Vec<String> = (0..3).map(|_| deployment.cancelled_execution()).collect();
    // The sweep marked every delivery enqueued: their jobs are in Redis.
    eventually("the deliveries enqueued", Duration::from_secs(10), || {
        let enqueued = ferry_testkit::postgres::psql(
            &deployment.database.name,
            "select count(*) from webhook_deliveries where enqueued_at is not null",
        );
        (enqueued == "3").then_some(())
    });
    assert_ne!(deployment.redis.cli(&["dbsize"]), "0");
    block_on(deployment.redis.restart());
    assert_eq!(deployment.redis.cli(&["dbsize"]), "0", "Redis restarted empty");
    let _worker = deployment.worker(&[]);
    let items = eventually("every event", Duration::from_secs(30), || {
        let items = received(&receiver);
        (items.len() >= 3).then_some(items)
    });
    let mut delivered: Vec<&str> = items
        .iter()
        .filter(|item| item["verified"] == true)
        .filter_map(|item| item["body"]["data"]["execution_id"].as_str())
        .collect();
    delivered.sort_unstable();
    delivered.dedup();
    let mut expected: Vec<&str> = executions.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(delivered, expected);
}

#[test]
fn a_worker_killed_mid_delivery_delivers_again_with_the_same_webhook_id() {
    let deployment = Deployment::start();
    let port = free_port();
    let (hook, secret) = deployment.webhook(port, json!({"events": ["project.cancelled"]}));
    let receiver = block_on(Receiver::start(port, &secret, 0));
    block_on(receiver.configure(json!({"hang": true})));
    deployment.cancelled_execution();
    let mut first = deployment.worker(&[("FERRY_WEBHOOK_TIMEOUT", "5s")]);
    let hung = eventually("the first try", Duration::from_secs(20), || {
        let items = received(&receiver);
        (!items.is_empty()).then_some(items)
    });
    let id = hung[0]["webhook_id"].as_str().expect("webhook-id").to_owned();
    // SIGKILL mid-try: no result is recorded, the job is never acknowledged.
    let _ = first.0.kill();
    let _ = first.0.wait();
    block_on(receiver.configure(json!({"hang": false})));
    let _second = deployment.worker(&[("FERRY_WEBHOOK_TIMEOUT", "5s")]);
    let items = eventually("the try after the crash", Duration::from_secs(40), || {
        let items = received(&receiver);
        (items.len() >= 2).then_some(items)
    });
    assert!(
        items.iter().all(|item| item["webhook_id"] == id.as_str()),
        "{items:?}"
    );
    assert!(items.iter().all(|item| item["verified"] == true));
    let log = eventually("the delivered try", Duration::from_secs(10), || {
        let log = deployment.deliveries(&hook);
        log.first().filter(|item| item["ok"] == true).map(|_| log.clone())
    });
    assert_eq!(log[0]["event_id"], id.as_str());
    assert!(
        log[0]["attempt"].as_i64() >= Some(2),
        "the killed try counted: {log:?}"
    );
}

#[test]
fn ferry_up_delivers_webhooks_on_its_embedded_store_and_queue() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let _up = Running(
        ferry(dir.path())
            .args(["up", "--listen", &format!("127.0.0.1:{port}")])
            .env("FERRY_WEBHOOK_INTERVAL_MS", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ferry up"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{base}/readyz"));
    let out = ferry(dir.path())
        .args(["token", "--user", "user_hooks", "--org", ORG, "--admin"])
        .output()
        .expect("token");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let call = |method: Method, path: &str, body: Option<Value>| {
        http_send(method, &format!("{base}{path}"), &token, body)
    };

    let receiver_port = free_port();
    let (status, created) = call(
        Method::POST,
        "/api/webhooks",
        Some(
            json!({"url": format!("http://127.0.0.1:{receiver_port}/hook"), "events": ["project.completed"],
                    "retry_config": {"max_attempts": 3, "initial_interval_seconds": 1}}),
        ),
    );
    assert_eq!(status, 201, "{created}");
    let hook = created["uuid"].as_str().expect("uuid");
    let receiver = block_on(Receiver::start(
        receiver_port,
        created["secret"].as_str().expect("secret"),
        1,
    ));

    let (status, project) = call(Method::POST, "/api/projects", Some(json!({"name": "embedded"})));
    assert_eq!(status, 201, "{project}");
    let project = project["uuid"].as_str().expect("uuid");
    let (status, step) = call(
        Method::POST,
        &format!("/api/projects/{project}/steps"),
        Some(json!({"name": "one", "type": "transform", "config": {"query": "select 1 as x"}})),
    );
    assert_eq!(status, 201, "{step}");
    let (status, execution) = call(
        Method::POST,
        &format!("/api/projects/{project}/execute"),
        Some(json!({"mode": "sync"})),
    );
    assert_eq!(status, 200, "{execution}");

    let items = eventually("the retried completion", Duration::from_secs(30), || {
        let items = received(&receiver);
        (items.len() >= 2).then_some(items)
    });
    assert!(items.iter().all(|item| item["verified"] == true), "{items:?}");
    assert_eq!(items[0]["webhook_id"], items[1]["webhook_id"]);
    assert_eq!(
        items[1]["body"]["data"]["execution_id"],
        execution["execution_id"]
    );
    let log = eventually("the log", Duration::from_secs(10), || {
        let (_, list) = call(Method::GET, &format!("/api/webhooks/{hook}/deliveries"), None);
        let log = list["data"].as_array().cloned().unwrap_or_default();
        (log.len() == 2).then_some(log)
    });
    assert_eq!(log[0]["status_code"], 204);
    assert_eq!(log[1]["status_code"], 500);
    let metrics = block_on(async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    });
    for line in [
        "ferry_worker_webhook_tries_total{outcome=\"delivered\"} 1",
        "ferry_worker_webhook_tries_total{outcome=\"retrying\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[test]
fn a_webhook_disabled_before_its_delivery_receives_nothing_until_redelivered_once_enabled() {
    let deployment = Deployment::start();
    let port = free_port();
    let (hook, secret) = deployment.webhook(port, json!({"events": ["project.cancelled"]}));
    let receiver = block_on(Receiver::start(port, &secret, 0));
    // The event is fanned out while the webhook is enabled, then it is
    // disabled before any worker runs.
    deployment.cancelled_execution();
    let (status, patched) = deployment.call(
        Method::PATCH,
        &format!("/api/webhooks/{hook}"),
        Some(json!({"enabled": false})),
    );
    assert_eq!(status, 200, "{patched}");
    let _worker = deployment.worker(&[]);
    let log = eventually("the skipped delivery", Duration::from_secs(20), || {
        let log = deployment.deliveries(&hook);
        (!log.is_empty()).then_some(log)
    });
    assert_eq!(log[0]["ok"], false);
    assert_eq!(log[0]["status_code"], Value::Null);
    assert!(
        log[0]["error"].as_str().unwrap_or_default().contains("disabled"),
        "{log:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        received(&receiver).is_empty(),
        "a disabled webhook receives nothing"
    );

    let (status, _) = deployment.call(
        Method::PATCH,
        &format!("/api/webhooks/{hook}"),
        Some(json!({"enabled": true})),
    );
    assert_eq!(status, 200);
    let delivery = log[0]["delivery_id"].as_str().expect("delivery id");
    let (status, answer) = deployment.call(
        Method::POST,
        &format!("/api/webhooks/{hook}/deliveries/{delivery}/redeliver"),
        None,
    );
    assert_eq!(status, 202, "{answer}");
    let items = eventually("the redelivery", Duration::from_secs(20), || {
        let items = received(&receiver);
        (!items.is_empty()).then_some(items)
    });
    assert_eq!(items[0]["webhook_id"], log[0]["event_id"]);
    assert_eq!(items[0]["verified"], true);
}
