//! The `ferry` binary as an operator uses it: help, configuration errors,
//! `ferry up` end to end, and the distributed roles on PostgreSQL.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) use ferry_testkit::ferry::{Running, http_send, http_status, wait_healthy};
pub(crate) use ferry_testkit::postgres::PgDatabase;
pub(crate) use ferry_testkit::{block_on, free_port};
use serde_json::{Value, json};

mod bench;
mod distributed;
mod fleet_events;
mod monitoring;
mod operator;
mod rate_limit;
mod readme;
mod resilience;
mod retries;
mod steps;
mod webhooks;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const HS_SECRET: &str = "cli-test-secret-that-is-long-enough-for-hs256";

/// A `ferry` command with no FERRY_* variables inherited (and the per-user
/// rate limit off unless a test turns it on: rate_limit.rs).
fn ferry(data_dir: &Path) -> Command {
    ferry_testkit::ferry::command(FERRY, data_dir)
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a configuration failure: non-zero exit, one line, no panic.
fn assert_one_line_failure(output: &Output, expect: &str) {
    let stderr = stderr_of(output);
    assert!(
        !output.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(expect),
        "{stderr}"
    );
}

#[test]
fn help_describes_every_subcommand_and_its_settings() {
    let dir = tempfile::tempdir().expect("dir");
    let output = ferry(dir.path()).arg("--help").output().expect("run");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for word in [
        "up",
        "api",
        "worker",
        "scheduler",
        "migrate",
        "token",
        "FERRY_DATABASE_URL",
        "FERRY_MASTER_KEY",
    ] {
        assert!(help.contains(word), "{word} missing from --help:\n{help}");
    }
    for (sub, var) in [
        ("api", "FERRY_LISTEN"),
        ("worker", "FERRY_ADMIN_LISTEN"),
        ("up", "FERRY_JWT_JWKS_URL"),
        ("api", "FERRY_RATE_LIMIT_PER_MINUTE"),
        ("up", "FERRY_RATE_LIMIT_BURST"),
        ("scheduler", "FERRY_QUEUED_GRACE_SECONDS"),
        ("up", "FERRY_REAP_INTERVAL_SECONDS"),
    ] {
        let output = ferry(dir.path()).args([sub, "--help"]).output().expect("run");
        assert!(output.status.success());
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(var), "{sub} --help lacks {var}:\n{text}");
    }
}

#[test]
fn out_of_range_reaper_timings_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("dir");
    for (var, flag) in [
        ("FERRY_REAP_INTERVAL_SECONDS", "--reap-interval-seconds"),
        ("FERRY_QUEUED_GRACE_SECONDS", "--queued-grace-seconds"),
    ] {
        let out = ferry(dir.path())
            .env(var, "0")
            .arg("scheduler")
            .output()
            .expect("run");
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(flag), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn bad_configuration_exits_non_zero_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("dir");
    let out = ferry(dir.path())
        .args(["api"])
        .env(
            "FERRY_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env("FERRY_JWT_HS256_SECRET", HS_SECRET)
        .output()
        .expect("run");
    assert_one_line_failure(&out, "FERRY_MASTER_KEY is required");

    let out = ferry(dir.path())
        .args(["api"])
        .env("FERRY_MASTER_KEY", KEY)
        .env("FERRY_DATABASE_URL", "postgres://[bad")
        .output()
        .expect("run");
    assert_one_line_failure(&out, "FERRY_DATABASE_URL");

    let out = ferry(dir.path())
        .args(["up"])
        .env("FERRY_REDIS_URL", "http://nope")
        .output()
        .expect("run");
    assert_one_line_failure(&out, "FERRY_REDIS_URL");

    let out = ferry(dir.path())
        .args(["api"])
        .env("FERRY_MASTER_KEY", "k1:tooshort")
        .output()
        .expect("run");
    assert_one_line_failure(&out, "FERRY_MASTER_KEY");

    let out = ferry(dir.path())
        .args(["api"])
        .env("FERRY_MASTER_KEY", KEY)
        .env("FERRY_JWT_HS256_SECRET", HS_SECRET)
        .env(
            "FERRY_DATABASE_URL",
            "postgres://postgres:hunter2@127.0.0.1:1/ferry",
        )
        .output()
        .expect("run");
    assert_one_line_failure(&out, "cannot open the metadata database");
    assert!(
        !stderr_of(&out).contains("hunter2"),
        "the password is never printed"
    );

    let out = ferry(dir.path())
        .args(["api"])
        .env("FERRY_MASTER_KEY", KEY)
        .env(
            "FERRY_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .output()
        .expect("run");
    assert_one_line_failure(&out, "no JWT key configured");
}

#[test]
fn ferry_up_runs_end_to_end_on_embedded_defaults() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let child = ferry(dir.path())
        .args(["up", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{base}/readyz"));

    let key_file = dir.path().join("master.key");
    assert!(
        key_file.exists()
            && dir.path().join("jwt-hs256.secret").exists()
            && dir.path().join("ferry.db").exists()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    let token = ferry(dir.path())
        .args(["token", "--user", "user_01", "--org", "org_01"])
        .output()
        .expect("token");
    assert!(token.status.success(), "{}", stderr_of(&token));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let (status, body) = http_send(
        reqwest::Method::POST,
        &format!("{base}/api/projects"),
        &token,
        Some(json!({"name": "Q4 Sales Analysis"})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created_by"], "user_01");
    let (status, list) = http_send(
        reqwest::Method::GET,
        &format!("{base}/api/projects"),
        &token,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(list["pagination"]["total"], 1);

    // SIGTERM stops it cleanly.
    let pid = running.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = running.0.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "ferry up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The single value a query returns, via psql ("" when it fails).
fn psql_value(sql: &str) -> String {
    ferry_testkit::postgres::psql_try("postgres", sql).unwrap_or_default()
}

/// Runs SQL on the shared server's `postgres` database; fails loudly.
fn psql(sql: &str) {
    ferry_testkit::postgres::psql("postgres", sql);
}

#[test]
fn distributed_roles_run_on_postgresql() {
    let dir = tempfile::tempdir().expect("dir");
    let database = PgDatabase::create("ferry_cli_test");
    let prefix = format!("ferry-cli-test-{}", database.name);
    let env = |command: &mut Command| {
        command
            .env("FERRY_DATABASE_URL", database.url())
            .env("FERRY_REDIS_URL", "redis://127.0.0.1:6379/0")
            .env("FERRY_REDIS_PREFIX", &prefix)
            .env("FERRY_MASTER_KEY", KEY)
            .env("FERRY_JWT_HS256_SECRET", HS_SECRET);
    };
    let mut migrate = ferry(dir.path());
    env(&mut migrate);
    let out = migrate.arg("migrate").output().expect("migrate");
    assert!(out.status.success(), "{}", stderr_of(&out));

    let api_port = free_port();
    let worker_port = free_port();
    let scheduler_port = free_port();
    let mut api = ferry(dir.path());
    env(&mut api);
    let _api = Running(
        api.args(["api", "--listen", &format!("127.0.0.1:{api_port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("api"),
    );
    let mut worker = ferry(dir.path());
    env(&mut worker);
    let _worker = Running(
        worker
            .args(["worker", "--admin-listen", &format!("127.0.0.1:{worker_port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("worker"),
    );
    let mut scheduler = ferry(dir.path());
    env(&mut scheduler);
    let _scheduler = Running(
        scheduler
            .args([
                "scheduler",
                "--admin-listen",
                &format!("127.0.0.1:{scheduler_port}"),
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("scheduler"),
    );
    for port in [api_port, worker_port, scheduler_port] {
        wait_healthy(&format!("http://127.0.0.1:{port}/readyz"));
        assert_eq!(
            http_status(&format!("http://127.0.0.1:{port}/metrics")),
            Some(200)
        );
    }
    assert!(
        !dir.path().join("master.key").exists(),
        "distributed roles never generate keys"
    );

    let mut token = ferry(dir.path());
    env(&mut token);
    let token = token
        .args(["token", "--user", "user_02", "--org", "org_02", "--admin"])
        .output()
        .expect("token");
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let (status, body) = http_send(
        reqwest::Method::POST,
        &format!("http://127.0.0.1:{api_port}/api/projects"),
        &token,
        Some(json!({"name": "on postgres"})),
    );
    assert_eq!(status, 201, "{body}");
    let (_, fetched): (u16, Value) = http_send(
        reqwest::Method::GET,
        &format!(
            "http://127.0.0.1:{api_port}/api/projects/{}",
            body["uuid"].as_str().expect("uuid")
        ),
        &token,
        None,
    );
    assert_eq!(fetched["permissions"]["role"], "owner");
}
