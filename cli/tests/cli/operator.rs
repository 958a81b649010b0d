//! Operator defaults: which networks connectors may reach, private files,
//! logs without colour codes off a terminal, and `/metrics` populated from
//! the first scrape on every role.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::distributed::Deployment;
use crate::{KEY, Running, ferry, free_port, http_send, wait_healthy};

/// `ferry up` in `dir` with `args`, its stderr in `dir/../ferry-up.log`.
fn up(dir: &Path, args: &[&str]) -> (Running, String, PathBuf) {
    let port = free_port();
    let log = dir.with_extension("log");
    let stderr = std::fs::File::create(&log).expect("log file");
    let listen = args
        .iter()
        .position(|a| *a == "--listen")
        .map(|i| args[i + 1].replace("PORT", &port.to_string()));
    let mut command = ferry(dir);
    command.arg("up");
    for (i, arg) in args.iter().enumerate() {
        if i > 0 && args[i - 1] == "--listen" {
            command.arg(listen.as_deref().unwrap_or_default());
        } else {
            command.arg(arg);
        }
    }
    if listen.is_none() {
        command.args(["--listen", &format!("127.0.0.1:{port}")]);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn ferry up");
    let running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{base}/readyz"));
    (running, base, log)
}

fn token(dir: &Path) -> String {
    let out = ferry(dir)
        .args(["token", "--user", "user_01", "--org", "org_01"])
        .output()
        .expect("token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Registers a connector to the local PostgreSQL (tested first).
fn local_postgres(base: &str, token: &str) -> (u16, Value) {
    http_send(
        reqwest::Method::POST,
        &format!("{base}/api/connectors"),
        token,
        Some(json!({"type": "postgresql", "display_name": "local",
                    "config": {"host": "127.0.0.1", "port": 5432, "database": "postgres",
                               "username": "postgres", "password": "unused",
                               "connection_timeout_seconds": 5}})),
    )
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

#[cfg(unix)]
#[test]
fn ferry_up_keeps_its_data_directory_database_and_result_files_private() {
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("data");
    let (_up, base, _log) = up(&dir, &[]);
    let token = token(&dir);

    let (status, connector) = local_postgres(&base, &token);
    assert_eq!(status, 201, "{connector}");
    let (status, project) = http_send(
        reqwest::Method::POST,
        &format!("{base}/api/projects"),
        &token,
        Some(json!({"name": "private results"})),
    );
    assert_eq!(status, 201, "{project}");
    let project = project["uuid"].as_str().expect("uuid");
    let (status, step) = http_send(
        reqwest::Method::POST,
        &format!("{base}/api/projects/{project}/steps"),
        &token,
        Some(json!({"name": "one", "type": "sql_query",
                    "config": {"connector_uuid": connector["uuid"], "query": "select 1 as one"}})),
    );
    assert_eq!(status, 201, "{step}");
    let (status, execution) = http_send(
        reqwest::Method::POST,
        &format!("{base}/api/projects/{project}/execute"),
        &token,
        Some(json!({"mode": "sync"})),
    );
    assert_eq!(status, 200, "{execution}");
    assert_eq!(execution["status"], "completed", "{execution}");

    assert_eq!(mode(&dir), 0o700, "the data directory");
    let objects = dir.join("objects");
    let results = files_under(&objects);
    assert!(!results.is_empty(), "the step wrote a result file");
    let mut checked = vec![dir.join("ferry.db"), dir.join("master.key")];
    checked.extend(results);
    for path in checked {
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is {:o}: readable by others",
            path.display(),
            mode(&path)
        );
    }
    for path in files_under(&dir) {
        assert_eq!(mode(&path) & 0o077, 0, "{} is {:o}", path.display(), mode(&path));
    }
}

#[cfg(unix)]
#[test]
fn an_existing_data_directory_open_to_others_is_narrowed_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("data");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = ferry(&dir).arg("migrate").output().expect("migrate");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ferry.db")) & 0o077, 0);
}

#[test]
fn private_networks_are_refused_by_default_when_ferry_up_listens_beyond_loopback() {
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("data");
    let (_up, base, _log) = up(&dir, &["--listen", "0.0.0.0:PORT"]);
    let (status, body) = local_postgres(&base, &token(&dir));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("a private or local address"),
        "the refusal names the network policy: {body}"
    );
}

#[test]
fn ferry_up_on_loopback_reaches_private_networks_by_default() {
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("data");
    let (_up, base, _log) = up(&dir, &[]);
    let (status, body) = local_postgres(&base, &token(&dir));
    assert_eq!(status, 201, "{body}");
}

/// The container image's command, from `deploy/Dockerfile`.
fn dockerfile_command() -> Vec<String> {
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/Dockerfile"))
            .expect("deploy/Dockerfile");
    let line = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("CMD "))
        .expect("a CMD line");
    serde_json::from_str(line).expect("CMD in exec form")
}

#[test]
fn the_container_command_listens_on_every_address_with_private_networks_allowed() {
    let command = dockerfile_command();
    assert_eq!(command[0], "up", "{command:?}");
    let listen = command
        .iter()
        .position(|a| a == "--listen")
        .map(|i| command[i + 1].clone());
    assert_eq!(listen.as_deref(), Some("0.0.0.0:8080"), "{command:?}");

    // The same arguments, on a free port, reach the local PostgreSQL.
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("data");
    let args: Vec<String> = command[1..]
        .iter()
        .map(|a| a.replace("0.0.0.0:8080", "0.0.0.0:PORT"))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_up, base, _log) = up(&dir, &args);
    let (status, body) = local_postgres(&base, &token(&dir));
    assert_eq!(status, 201, "{body}");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("data");
    let (up, base, log) = up(&dir, &[]);
    let _ = http_send(
        reqwest::Method::GET,
        &format!("{base}/api/projects"),
        &token(&dir),
        None,
    );
    drop(up);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("api listening"), "{text}");
    assert!(!text.contains('\u{1b}'), "escape codes in a log file:\n{text}");
}

#[cfg(unix)]
#[test]
fn logs_are_coloured_on_a_terminal() {
    // `script` gives the process a pseudo-terminal; `ferry up` on a port
    // already taken logs its start and exits.
    let root = tempfile::tempdir().expect("dir");
    let dir = root.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut command = Command::new("script");
    for (key, _) in std::env::vars() {
        if key.starts_with("FERRY_") {
            command.env_remove(key);
        }
    }
    let out = command
        .env("FERRY_DATA_DIR", &dir)
        .env("RUST_LOG", "info")
        .args([
            "-qec",
            &format!("{} up --listen 127.0.0.1:{port}", crate::FERRY),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cannot listen"), "{text}");
    assert!(text.contains('\u{1b}'), "no colour on a terminal:\n{text}");
}

/// The `ferry_` lines of a `/metrics` body.
fn ferry_series(url: &str) -> Vec<String> {
    let body = crate::block_on(async {
        reqwest::get(url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    });
    body.lines()
        .filter(|line| line.starts_with("ferry_"))
        .map(str::to_owned)
        .collect()
}

/// The start of a role's `ferry_build_info` series (labels sorted).
fn build_info(role: &str) -> String {
    let commit = option_env!("FERRY_BUILD_COMMIT").unwrap_or("unknown");
    format!("ferry_build_info{{commit=\"{commit}\",role=\"{role}\"")
}

fn assert_series(series: &[String], prefixes: &[&str]) {
    for prefix in prefixes {
        assert!(
            series.iter().any(|line| line.starts_with(prefix)),
            "no {prefix} series in:\n{}",
            series.join("\n")
        );
    }
}

#[test]
fn every_role_serves_its_ferry_series_on_the_first_scrape() {
    let deployment = Deployment::new();
    let (_api, base) = deployment.api(KEY);
    let start = |role: &str| {
        let port = free_port();
        let child = deployment
            .command(KEY)
            .args([role, "--admin-listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .expect("role");
        let running = Running(child);
        let base = format!("http://127.0.0.1:{port}");
        wait_healthy(&format!("{base}/healthz"));
        (running, base)
    };
    let (_worker, worker) = start("worker");
    let (_scheduler, scheduler) = start("scheduler");

    assert_series(
        &ferry_series(&format!("{worker}/metrics")),
        &[
            &build_info("worker"),
            "ferry_worker_pools{type=\"postgresql\"} 0",
            "ferry_worker_connection_tests_total{result=\"success\",type=\"postgresql\"} 0",
        ],
    );
    // The scheduler registers its families once it has started.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut series = ferry_series(&format!("{scheduler}/metrics"));
    while !series.iter().any(|l| l.starts_with("ferry_scheduler_")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        series = ferry_series(&format!("{scheduler}/metrics"));
    }
    assert_series(
        &series,
        &[
            &build_info("scheduler"),
            "ferry_scheduler_is_leader",
            "ferry_scheduler_reaped_total 0",
        ],
    );
    assert_series(&ferry_series(&format!("{base}/metrics")), &[&build_info("api")]);
}
