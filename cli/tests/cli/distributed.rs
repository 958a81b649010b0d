//! Connectors across processes: separate api and worker processes over
//! PostgreSQL + Redis, pool eviction reaching every worker, key rotation,
//! and secrets kept out of DEBUG logs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    HS_SECRET, KEY, PgDatabase, Running, ferry, free_port, http_send, psql, psql_value, wait_healthy,
};

const NEW_KEY: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// A PostgreSQL login role with a password, dropped at the end.
pub(crate) struct Role {
    pub(crate) name: String,
    pub(crate) password: String,
}

impl Role {
    pub(crate) fn create(tag: &str) -> Role {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let role = Role {
            name: format!("ferry_{tag}_{}", stamp % 1_000_000_000),
            password: format!("Pw-{stamp}-secret"),
        };
        psql(&format!(
            "CREATE ROLE {} LOGIN PASSWORD '{}'",
            role.name, role.password
        ));
        role
    }

    pub(crate) fn config(&self) -> Value {
        json!({"host": "127.0.0.1", "port": 5432, "database": "postgres", "username": self.name,
               "password": self.password, "connection_timeout_seconds": 5})
    }

    fn connections(&self) -> i64 {
        psql_value(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{}'",
            self.name
        ))
        .parse()
        .unwrap_or(-1)
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'",
            self.name
        ));
        psql(&format!("DROP ROLE IF EXISTS {}", self.name));
    }
}

/// A distributed deployment: its database, Redis prefix and keys.
pub(crate) struct Deployment {
    pub(crate) database: PgDatabase,
    pub(crate) prefix: String,
    pub(crate) dir: tempfile::TempDir,
}

impl Deployment {
    pub(crate) fn new() -> Deployment {
        let database = PgDatabase::create("ferry_cli_test");
        let prefix = format!("ferry-test-{}", database.name);
        let deployment = Deployment {
            database,
            prefix,
            dir: tempfile::tempdir().expect("dir"),
        };
        let out = deployment.command(KEY).arg("migrate").output().expect("migrate");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        deployment
    }

    pub(crate) fn command(&self, keys: &str) -> Command {
        let mut command = ferry(self.dir.path());
        command
            .env("FERRY_DATABASE_URL", self.database.url())
            .env("FERRY_REDIS_URL", "redis://127.0.0.1:6379/0")
            .env("FERRY_REDIS_PREFIX", &self.prefix)
            .env("FERRY_MASTER_KEY", keys)
            .env("FERRY_JWT_HS256_SECRET", HS_SECRET)
            .env("FERRY_ALLOW_PRIVATE_NETWORKS", "true");
        command
    }

    pub(crate) fn api(&self, keys: &str) -> (Running, String) {
        self.api_with(keys, &[])
    }

    /// An api process with `env` set over the deployment's settings.
    pub(crate) fn api_with(&self, keys: &str, env: &[(&str, &str)]) -> (Running, String) {
        let port = free_port();
        let child = self
            .command(keys)
            .envs(env.iter().copied())
            .args(["api", "--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("api");
        let base = format!("http://127.0.0.1:{port}");
        let running = Running(child);
        wait_healthy(&format!("{base}/readyz"));
        (running, base)
    }

    pub(crate) fn worker(&self, keys: &str, concurrency: u32) -> Running {
        self.worker_with(keys, concurrency, &[])
    }

    /// A worker process with `env` set over the deployment's settings.
    pub(crate) fn worker_with(&self, keys: &str, concurrency: u32, env: &[(&str, &str)]) -> Running {
        let port = free_port();
        let child = self
            .command(keys)
            .envs(env.iter().copied())
            .args([
                "worker",
                "--admin-listen",
                &format!("127.0.0.1:{port}"),
                "--worker-concurrency",
                &concurrency.to_string(),
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("worker");
        let running = Running(child);
        wait_healthy(&format!("http://127.0.0.1:{port}/readyz"));
        running
    }

    fn token(&self) -> String {
        self.token_for("user_ops")
    }

    /// A token of `user` in the organization `org_ops`.
    pub(crate) fn token_for(&self, user: &str) -> String {
        let out = self
            .command(KEY)
            .args(["token", "--user", user, "--org", "org_ops"])
            .output()
            .expect("token");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn separate_api_and_worker_processes_test_connections_and_evict_pools_on_every_worker() {
    let deployment = Deployment::new();
    let role = Role::create("evict");
    let (_api, base) = deployment.api(KEY);
    let _worker_a = deployment.worker(KEY, 1);
    let _worker_b = deployment.worker(KEY, 1);
    let token = deployment.token();

    let (status, created) = http_send(
        reqwest::Method::POST,
        &format!("{base}/api/connectors"),
        &token,
        Some(json!({"type": "postgresql", "display_name": "db", "config": role.config()})),
    );
    assert_eq!(status, 201, "{created}");
    let uuid = created["uuid"].as_str().expect("uuid").to_owned();

    // Concurrent tests keep both single-slot workers busy, so both build a
    // pool; four is the organization's default limit of concurrent tests.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{base}/api/connectors/{uuid}/test");
            let token = token.clone();
            std::thread::spawn(move || http_send(reqwest::Method::POST, &url, &token, Some(json!({}))))
        })
        .collect();
    for thread in threads {
        let (status, body) = thread.join().expect("thread");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "success", "{body}");
    }
    wait_until(
        "pooled connections from both workers",
        Duration::from_secs(10),
        || role.connections() >= 2,
    );

    // A config change reaches every worker, which closes its pool.
    let (status, body) = http_send(
        reqwest::Method::PATCH,
        &format!("{base}/api/connectors/{uuid}"),
        &token,
        Some(json!({"config": {"max_connections": 2}, "test_connection": false})),
    );
    assert_eq!(status, 200, "{body}");
    wait_until(
        "every pooled connection to close",
        Duration::from_secs(10),
        || role.connections() == 0,
    );
}

#[test]
fn keys_rotate_reencrypts_every_secret_and_a_restart_with_only_the_new_key_reads_them() {
    let deployment = Deployment::new();
    let role = Role::create("rotate");
    let token = deployment.token();
    let mut uuids = Vec::new();
    {
        let (_api, base) = deployment.api(KEY);
        for name in ["one", "two", "three"] {
            let (status, body) = http_send(
                reqwest::Method::POST,
                &format!("{base}/api/connectors"),
                &token,
                Some(
                    json!({"type": "postgresql", "display_name": name, "config": role.config(), "test_connection": false}),
                ),
            );
            assert_eq!(status, 201, "{body}");
            uuids.push(body["uuid"].as_str().expect("uuid").to_owned());
        }
    }
    let key_ids = || {
        psql_value_in(
            &deployment.database.name,
            "SELECT string_agg(DISTINCT secrets_key_id, ',') FROM connectors",
        )
    };
    assert_eq!(key_ids(), "k1");

    let both = format!("{NEW_KEY},{KEY}");
    let out = deployment
        .command(&both)
        .args(["keys", "rotate"])
        .output()
        .expect("rotate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("re-encrypted 3 connector secret(s) under key k2"),
        "{printed}"
    );
    assert!(
        printed.contains("verified: no connector secret remains under another key"),
        "{printed}"
    );
    assert_eq!(key_ids(), "k2");
    let again = deployment
        .command(&both)
        .args(["keys", "rotate"])
        .output()
        .expect("rotate");
    assert!(String::from_utf8_lossy(&again.stdout).contains("re-encrypted 0"));

    // Only the new key now: every connector still decrypts on a worker.
    let (_api, base) = deployment.api(NEW_KEY);
    let _worker = deployment.worker(NEW_KEY, 2);
    for uuid in &uuids {
        let (status, body) = http_send(
            reqwest::Method::POST,
            &format!("{base}/api/connectors/{uuid}/test"),
            &token,
            Some(json!({})),
        );
        assert_eq!(status, 200);
        assert_eq!(body["status"], "success", "{body}");
    }
}

#[test]
fn keys_rotate_rotates_what_it_can_then_fails_while_a_secret_remains_under_another_key() {
    let deployment = Deployment::new();
    let role = Role::create("orphan");
    let token = deployment.token();
    let mut uuids = Vec::new();
    {
        let (_api, base) = deployment.api(KEY);
        for name in ["one", "two", "orphan"] {
            let (status, body) = http_send(
                reqwest::Method::POST,
                &format!("{base}/api/connectors"),
                &token,
                Some(
                    json!({"type": "postgresql", "display_name": name, "config": role.config(), "test_connection": false}),
                ),
            );
            assert_eq!(status, 201, "{body}");
            uuids.push(body["uuid"].as_str().expect("uuid").to_owned());
        }
    }
    // One secret sealed under a key nobody configured any more.
    psql_value_in(
        &deployment.database.name,
        &format!(
            "UPDATE connectors SET secrets_key_id = 'k0' WHERE uuid = '{}'",
            uuids[2]
        ),
    );

    let both = format!("{NEW_KEY},{KEY}");
    let out = deployment
        .command(&both)
        .args(["keys", "rotate"])
        .output()
        .expect("rotate");
    let printed = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the final count must fail the command");
    assert!(
        printed.contains("re-encrypted 2 connector secret(s) under key k2"),
        "{printed}"
    );
    assert!(!printed.contains("verified"), "{printed}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: 1 connector secret(s) are still sealed under a key other than k2")
            && last.contains("1 cannot be decrypted"),
        "{stderr}"
    );
    assert_eq!(
        psql_value_in(
            &deployment.database.name,
            "SELECT string_agg(secrets_key_id, ',' ORDER BY secrets_key_id) FROM connectors",
        ),
        "k0,k2,k2"
    );
}

fn psql_value_in(database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", database, "-Atqc", sql])
        .output()
        .expect("psql");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn secrets_never_reach_responses_or_debug_logs_on_success_or_failure() {
    let dir = tempfile::tempdir().expect("dir");
    let role = Role::create("logs");
    let log_path = dir.path().join("ferry.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let port = free_port();
    let child = ferry(dir.path())
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn");
    let _running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{base}/readyz"));
    let out = ferry(dir.path())
        .args(["token", "--user", "user_01", "--org", "org_01"])
        .output()
        .expect("token");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let wrong = "Wr0ng-Passw0rd-zzq";
    let rotated = "N3w-Passw0rd-qqz";
    let mongo_password = "M0ngo-Secret-xyz";
    let mut bodies = Vec::new();
    let mut send = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let (status, reply) = http_send(method, &format!("{base}{path}"), &token, body);
        bodies.push(reply.to_string());
        (status, reply)
    };
    let (status, created) = send(
        reqwest::Method::POST,
        "/api/connectors",
        Some(json!({"type": "postgresql", "display_name": "ok", "config": role.config()})),
    );
    assert_eq!(status, 201, "{created}");
    let uuid = created["uuid"].as_str().expect("uuid").to_owned();
    let mut bad = role.config();
    bad["password"] = json!(wrong);
    bad["database"] = json!("no_such_database");
    let (status, _) = send(
        reqwest::Method::POST,
        "/api/connectors",
        Some(json!({"type": "postgresql", "display_name": "bad", "config": bad})),
    );
    assert_eq!(status, 400, "the database does not exist");
    let mut unknown_host = role.config();
    unknown_host["host"] = json!("no-such-host.invalid");
    send(
        reqwest::Method::POST,
        "/api/connectors",
        Some(json!({"type": "postgresql", "display_name": "dns", "config": unknown_host})),
    );
    send(
        reqwest::Method::POST,
        "/api/connectors",
        Some(
            json!({"type": "mongodb", "display_name": "mongo", "test_connection": true, "config": {
            "connection_string": format!("mongodb://app:{mongo_password}@127.0.0.1:1/?serverSelectionTimeoutMS=1000"),
            "database": "analytics", "connection_timeout_seconds": 2}}),
        ),
    );
    send(
        reqwest::Method::POST,
        "/api/connectors",
        Some(json!({"type": "rest_api", "display_name": "rest", "config": {
        "base_url": "http://127.0.0.1:1", "auth_type": "bearer", "auth_token": wrong, "timeout_seconds": 2}})),
    );
    let (status, _) = send(
        reqwest::Method::PATCH,
        &format!("/api/connectors/{uuid}"),
        Some(json!({"config": {"password": rotated, "port": 1}})),
    );
    assert_eq!(status, 400, "nothing listens on port 1, so the test fails");
    send(
        reqwest::Method::POST,
        &format!("/api/connectors/{uuid}/test"),
        Some(json!({})),
    );
    send(reqwest::Method::GET, "/api/connectors", None);
    send(
        reqwest::Method::GET,
        &format!("/api/connectors/{uuid}/health"),
        None,
    );
    let (status, metrics) = {
        let text = crate::block_on(async {
            reqwest::get(format!("{base}/metrics"))
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text")
        });
        (200, text)
    };
    assert_eq!(status, 200);

    std::thread::sleep(Duration::from_millis(300));
    let logs = std::fs::read_to_string(&log_path).expect("log");
    assert!(logs.contains("DEBUG"), "the log was captured at DEBUG level");
    assert!(logs.contains("connection tested"), "the worker logged the tests");
    for secret in [role.password.as_str(), wrong, rotated, mongo_password] {
        assert!(!logs.contains(secret), "secret {secret} in the log");
        assert!(!metrics.contains(secret), "secret {secret} in the metrics");
        for body in &bodies {
            assert!(!body.contains(secret), "secret {secret} in a response: {body}");
        }
    }
}
