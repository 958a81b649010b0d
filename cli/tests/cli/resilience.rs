//! Crash, pause and restart behaviour of the execution engine, driven through
//! real `ferry` processes: a worker killed, restarted, paused past its lease
//! or stopped with SIGTERM mid-step; Redis and PostgreSQL restarted under
//! running executions; and S3 multipart uploads left clean after a cancel
//! and after a crash.
//!
//! Every deployment runs with a 3 s lease (`FERRY_JOB_LEASE`), logs JSON to
//! a file per process (so a test can tell which worker took what), and
//! steps read a fresh PostgreSQL database of their own whose sequence
//! `seq` counts how many times the first step really ran. Servers a test
//! restarts (Redis, PostgreSQL) are private ones on free ports; the shared
//! ones on the default ports are only given fresh databases and prefixes.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use ferry_testkit::postgres::PgRole;

use crate::{HS_SECRET, KEY, PgDatabase, Running, block_on, ferry, free_port, wait_healthy};

/// The execution lease every deployment here runs with.
const LEASE: &str = "3s";

// ------------------------------------------------------------------ helpers

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

/// Runs a command to completion, failing loudly with its output.
fn run(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One HTTP exchange: status, `Retry-After`, JSON body (Null when not JSON).
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

/// Sends a request; None when nothing answered within `timeout`.
fn http_try(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Option<Answer> {
    block_on(async {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("client");
        let mut request = client.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.ok()?;
        Some(Answer {
            status,
            retry_after,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    })
}

fn stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

// ------------------------------------------------------------ the source DB

/// The database the steps read: fresh, owned by a login role of its own,
/// with a sequence `seq` that proves how many times a step ran. Dropped
/// (the database first, then the role) at the end.
struct Source {
    database: PgDatabase,
    role: PgRole,
}

impl Source {
    fn create() -> Source {
        let n = stamp() % 1_000_000_000_000;
        let role = PgRole::with_password(
            &format!("ferry_res_{}_{n}", std::process::id()),
            &format!("Pw-{n}-resilience"),
        );
        let database = PgDatabase::named(
            &format!("ferry_res_src_{}_{n}", std::process::id()),
            &format!("OWNER {}", role.name),
        );
        database.psql(&format!(
            "CREATE SEQUENCE seq; ALTER SEQUENCE seq OWNER TO {}",
            role.name
        ));
        Source { database, role }
    }

    /// Writes allowed: the first step counts its runs with `nextval`.
    fn config(&self) -> Value {
        json!({"host": "127.0.0.1", "port": 5432, "database": self.database.name, "username": self.role.name,
               "password": self.role.password, "connection_timeout_seconds": 5, "allow_writes": true})
    }

    /// How many times `nextval('seq')` ran.
    fn sequence_calls(&self) -> i64 {
        self.database
            .psql("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM seq")
            .parse()
            .expect("sequence value")
    }
}

/// The first step: one row, and one more call of the sequence each time it runs.
const NUMBER_THE_RUN: &str = "select nextval('seq') as n, 'first' as tag";
/// A quick last step of 250 rows.
const QUICK: &str = "select g * 2 as doubled from generate_series(1, 250) g";

/// 1000 rows after `seconds` of `pg_sleep` (once: a materialized CTE).
fn slow(seconds: u32) -> String {
    format!(
        "with pause as materialized (select pg_sleep({seconds})::text as slept) \
         select g, md5(g::text) as h from generate_series(1, 1000) g cross join pause"
    )
}

/// The three steps of the crash tests: numbered, slow (4 s), quick.
fn three_steps() -> Vec<(&'static str, String)> {
    vec![
        ("number the run", NUMBER_THE_RUN.to_owned()),
        ("slow", slow(4)),
        ("quick", QUICK.to_owned()),
    ]
}

// ---------------------------------------------------------------- processes

/// A `ferry` role whose JSON log goes to a file; SIGKILLed when dropped.
struct Proc {
    running: Running,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.running.0.id()
    }

    fn signal(&self, name: &str) {
        run(
            Command::new("kill")
                .arg(format!("-{name}"))
                .arg(self.pid().to_string()),
            &format!("kill -{name}"),
        );
    }

    fn kill9(&mut self) {
        self.running.0.kill().expect("kill -9");
        self.running.0.wait().expect("reap");
    }

    fn alive(&mut self) -> bool {
        self.running.0.try_wait().expect("try_wait").is_none()
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        eventually("the process to exit", within, || {
            self.running.0.try_wait().expect("try_wait")
        })
    }

    /// Every JSON log line so far.
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Log lines with `message` about `execution_id`.
    fn logged(&self, message: &str, execution_id: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["message"] == message && e["execution_id"] == execution_id)
            .collect()
    }

    fn took(&self, execution_id: &str) -> bool {
        !self.logged("execution taken", execution_id).is_empty()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    /// On a failing test, shows what the process logged last.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- last lines of {}:\n{tail}", self.log.display());
        }
    }
}

/// Where a deployment's results go.
enum Objects {
    /// `file://` under the deployment's directory.
    Files(PathBuf),
    /// `s3://bucket/prefix` on a moto server.
    S3 { url: String, endpoint: String },
}

/// A distributed deployment: metadata database, Redis, object store, keys.
struct Cluster {
    dir: tempfile::TempDir,
    database_url: String,
    redis_url: String,
    prefix: String,
    objects: Objects,
    /// Dropped last: processes go first.
    _database: Option<PgDatabase>,
    shared_redis: bool,
    spawned: std::cell::Cell<u32>,
}

impl Cluster {
    /// On a fresh database of the shared PostgreSQL and the shared Redis
    /// under a unique prefix, results in local files.
    fn shared() -> Cluster {
        let database = PgDatabase::create("ferry_cli_test");
        let url = database.url();
        Cluster::build(
            url,
            "redis://127.0.0.1:6379/0".to_owned(),
            Some(database),
            true,
            None,
        )
    }

    /// Metadata in `database_url`, queue in `redis_url`, and optionally S3.
    fn build(
        database_url: String,
        redis_url: String,
        database: Option<PgDatabase>,
        shared_redis: bool,
        s3: Option<&Moto>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("dir");
        let objects = match s3 {
            Some(moto) => Objects::S3 {
                url: format!("s3://{}/deployment-{}", moto.0.bucket, stamp() % 1_000_000),
                endpoint: moto.endpoint(),
            },
            None => Objects::Files(dir.path().join("objects")),
        };
        let cluster = Cluster {
            prefix: format!("ferry-res-{}-{}", std::process::id(), stamp() % 1_000_000_000_000),
            dir,
            database_url,
            redis_url,
            objects,
            _database: database,
            shared_redis,
            spawned: std::cell::Cell::new(0),
        };
        let out = cluster.command().arg("migrate").output().expect("migrate");
        assert!(
            out.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn command(&self) -> Command {
        let mut command = ferry(self.dir.path());
        command
            .env("FERRY_DATABASE_URL", &self.database_url)
            .env("FERRY_REDIS_URL", &self.redis_url)
            .env("FERRY_REDIS_PREFIX", &self.prefix)
            .env("FERRY_MASTER_KEY", KEY)
            .env("FERRY_JWT_HS256_SECRET", HS_SECRET)
            .env("FERRY_JOB_LEASE", LEASE)
            .env("FERRY_ALLOW_PRIVATE_NETWORKS", "true")
            .env("FERRY_LOG_FORMAT", "json")
            .env("RUST_LOG", "info");
        match &self.objects {
            Objects::Files(dir) => {
                command.env("FERRY_OBJECT_STORE_URL", format!("file://{}", dir.display()));
            }
            Objects::S3 { url, endpoint } => {
                command
                    .env("FERRY_OBJECT_STORE_URL", url)
                    .env("AWS_ENDPOINT_URL", endpoint)
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", "testing")
                    .env("AWS_SECRET_ACCESS_KEY", "testing")
                    .env("AWS_REGION", "us-east-1");
            }
        }
        command
    }

    fn spawn(&self, role: &str, args: &[String], health_port: u16) -> Proc {
        let n = self.spawned.get() + 1;
        self.spawned.set(n);
        let log = self.dir.path().join(format!("{n:02}-{role}.log"));
        let child = self
            .command()
            .arg(role)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ferry {role}: {e}"));
        let mut proc = Proc {
            running: Running(child),
            log,
        };
        let url = format!("http://127.0.0.1:{health_port}/readyz");
        eventually(
            &format!("ferry {role} to be ready"),
            Duration::from_secs(60),
            || {
                assert!(proc.alive(), "ferry {role} exited:\n{}", proc.log_text());
                (crate::http_status(&url) == Some(200)).then_some(())
            },
        );
        proc
    }

    /// An api process and a client for it.
    fn api(&self) -> (Proc, Client) {
        let port = free_port();
        let proc = self.spawn("api", &["--listen".into(), format!("127.0.0.1:{port}")], port);
        let out = self
            .command()
            .args(["token", "--user", "user_res", "--org", "org_res"])
            .output()
            .expect("token");
        assert!(
            out.status.success(),
            "token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (
            proc,
            Client {
                base: format!("http://127.0.0.1:{port}"),
                token,
            },
        )
    }

    fn worker(&self, concurrency: u32) -> Proc {
        let port = free_port();
        self.spawn(
            "worker",
            &[
                "--admin-listen".into(),
                format!("127.0.0.1:{port}"),
                "--worker-concurrency".into(),
                concurrency.to_string(),
            ],
            port,
        )
    }

    fn scheduler(&self) -> Proc {
        let port = free_port();
        self.spawn(
            "scheduler",
            &["--admin-listen".into(), format!("127.0.0.1:{port}")],
            port,
        )
    }

    /// The local file of an object URL this deployment reported.
    fn file_of(&self, url: &str) -> PathBuf {
        let Objects::Files(_) = &self.objects else {
            panic!("not a file:// deployment")
        };
        PathBuf::from(
            url.strip_prefix("file://")
                .unwrap_or_else(|| panic!("not a file URL: {url}")),
        )
    }

    /// Every file under `results/{execution_id}/`.
    fn result_files(&self, execution_id: &str) -> Vec<String> {
        let Objects::Files(dir) = &self.objects else {
            panic!("not a file:// deployment")
        };
        let mut names: Vec<String> = std::fs::read_dir(dir.join("results").join(execution_id))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.shared_redis {
            return;
        }
        // Forget this deployment's keys on the shared Redis.
        let Ok(out) = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379", "--scan", "--pattern"])
            .arg(format!("*{}*", self.prefix))
            .output()
        else {
            return;
        };
        let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if !keys.is_empty() {
            let _ = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", "6379", "DEL"])
                .args(&keys)
                .output();
        }
    }
}

/// Size, modification time and inode: a rewrite changes at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: std::time::SystemTime,
    inode: u64,
}

fn file_stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    FileStamp {
        len: meta.len(),
        modified: meta.modified().expect("mtime"),
        inode: meta.ino(),
    }
}

// ------------------------------------------------------------------ the API

/// A project as the tests use it.
struct Project {
    uuid: String,
    steps: Vec<String>,
}

/// A client of one api process.
struct Client {
    base: String,
    token: String,
}

impl Client {
    fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let answer = http_try(
            method,
            &format!("{}{path}", self.base),
            &self.token,
            body.as_ref(),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no answer from {path}"));
        (answer.status, answer.body)
    }

    fn connector(&self, source: &Source) -> String {
        let (status, body) = self.send(
            reqwest::Method::POST,
            "/api/connectors",
            Some(
                json!({"type": "postgresql", "display_name": "source", "config": source.config(),
                        "test_connection": false}),
            ),
        );
        assert_eq!(status, 201, "{body}");
        body["uuid"].as_str().expect("uuid").to_owned()
    }

    fn project(&self, name: &str, connector: &str, steps: &[(&str, String)]) -> Project {
        let (status, body) = self.send(
            reqwest::Method::POST,
            "/api/projects",
            Some(json!({"name": name})),
        );
        assert_eq!(status, 201, "{body}");
        let uuid = body["uuid"].as_str().expect("uuid").to_owned();
        let mut ids = Vec::new();
        for (step, query) in steps {
            let (status, body) = self.send(
                reqwest::Method::POST,
                &format!("/api/projects/{uuid}/steps"),
                Some(json!({"name": step, "type": "sql_query",
                            "config": {"connector_uuid": connector, "query": query}})),
            );
            assert_eq!(status, 201, "{body}");
            ids.push(body["step_id"].as_str().expect("step_id").to_owned());
        }
        Project { uuid, steps: ids }
    }

    fn execute(&self, project: &Project) -> String {
        let (status, body) = self.send(
            reqwest::Method::POST,
            &format!("/api/projects/{}/execute", project.uuid),
            Some(json!({})),
        );
        assert_eq!(status, 202, "{body}");
        body["execution_id"].as_str().expect("execution_id").to_owned()
    }

    fn execution(&self, project: &Project, execution_id: &str) -> Value {
        let (status, body) = self.send(
            reqwest::Method::GET,
            &format!("/api/projects/{}/executions/{execution_id}", project.uuid),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls the execution until `done` holds.
    fn wait(
        &self,
        project: &Project,
        execution_id: &str,
        what: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            last = self.execution(project, execution_id);
            if done(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {within:?} waiting for {what}; last seen:\n{last:#}");
    }

    fn wait_terminal(&self, project: &Project, execution_id: &str, within: Duration) -> Value {
        self.wait(project, execution_id, "a terminal status", within, |e| {
            matches!(e["status"].as_str(), Some("completed" | "failed" | "cancelled"))
        })
    }

    /// Waits until step `index` (0-based) runs, the earlier ones completed.
    fn wait_step_running(&self, project: &Project, execution_id: &str, index: usize) -> Value {
        self.wait(
            project,
            execution_id,
            &format!("step {} to run", index + 1),
            Duration::from_secs(30),
            |e| {
                assert!(
                    !matches!(e["status"].as_str(), Some("completed" | "failed" | "cancelled")),
                    "ended early: {e:#}"
                );
                e["steps"][index]["status"] == "running"
            },
        )
    }

    /// The JSON result of a completed step (all of it, up to 10 000 rows).
    fn result(&self, project: &Project, execution_id: &str, step: &str) -> Value {
        let (status, body) = self.send(
            reqwest::Method::GET,
            &format!(
                "/api/projects/{}/executions/{execution_id}/steps/{step}/result?format=json&limit=10000",
                project.uuid
            ),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    fn cancel(&self, project: &Project, execution_id: &str) -> Value {
        let (status, body) = self.send(
            reqwest::Method::POST,
            &format!("/api/projects/{}/executions/{execution_id}/cancel", project.uuid),
            None,
        );
        assert_eq!(status, 202, "{body}");
        body
    }
}

/// Asserts a completed run of [`three_steps`]: one run of the first step,
/// 1 + 1000 + 250 rows, each step's output read back whole and once.
fn assert_three_steps_completed_once(client: &Client, source: &Source, project: &Project, execution: &Value) {
    let id = execution["execution_id"].as_str().expect("execution_id");
    assert_eq!(execution["status"], "completed", "{execution:#}");
    assert_eq!(source.sequence_calls(), 1, "the first step ran exactly once");
    let rows: Vec<i64> = (0..3)
        .map(|i| execution["steps"][i]["rows_processed"].as_i64().expect("rows"))
        .collect();
    assert_eq!(rows, [1, 1000, 250], "{execution:#}");
    assert_eq!(execution["results"]["total_rows"], 1251);
    assert_eq!(
        execution["results"]["output_files"].as_array().map(Vec::len),
        Some(3)
    );
    let first = client.result(project, id, &project.steps[0]);
    assert_eq!(first["total_rows"], 1);
    assert_eq!(
        first["data"][0]["n"], 1,
        "the only value the sequence gave: {first}"
    );
    let slow = client.result(project, id, &project.steps[1]);
    assert_eq!(slow["total_rows"], 1000, "no duplicated rows");
    let mut seen: Vec<i64> = slow["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|r| r["g"].as_i64())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 1000, "every row once");
    let quick = client.result(project, id, &project.steps[2]);
    assert_eq!(quick["total_rows"], 250);
}

// ------------------------------------------------------- private services

/// A private redis-server on a free port, killed when dropped.
struct PrivateRedis(ferry_testkit::redis::PrivateRedis);

impl PrivateRedis {
    fn start() -> PrivateRedis {
        PrivateRedis(block_on(ferry_testkit::redis::PrivateRedis::start()))
    }

    fn url(&self) -> String {
        format!("{}/0", self.0.url())
    }

    /// The server's `run_id`: a new one per start.
    fn run_id(&self) -> String {
        self.0.run_id()
    }

    /// Kills it and starts an empty one on the same port.
    fn restart_empty(&mut self) {
        block_on(self.0.restart());
    }
}

/// A private PostgreSQL 15 cluster (initdb, run as `postgres`) on a free
/// port; stopped immediately and deleted when dropped.
struct PrivatePostgres(ferry_testkit::postgres::PrivatePostgres);

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let cluster = ferry_testkit::postgres::PrivatePostgres::init("ferry-res-pg", "max_connections = 100");
        cluster.start();
        PrivatePostgres(cluster)
    }

    fn start_again(&self) {
        self.0.start();
    }

    fn stop_fast(&self) {
        self.0.stop_fast();
    }

    fn url(&self) -> String {
        self.0.url()
    }
}

/// An open multipart upload: (key, upload id).
type Upload = (String, String);

/// A moto S3 server on a free port with one bucket, killed when dropped.
struct Moto(ferry_testkit::peers::S3Peer);

impl Moto {
    fn start() -> Moto {
        Moto(block_on(ferry_testkit::peers::S3Peer::start("ferry-resilience")))
    }

    fn endpoint(&self) -> String {
        self.0.endpoint()
    }

    /// The multipart uploads the bucket holds open.
    fn open_uploads(&self) -> Vec<Upload> {
        block_on(self.0.list_uploads())
            .split("<Upload>")
            .skip(1)
            .map(|upload| {
                (
                    between(upload, "<Key>", "</Key>"),
                    between(upload, "<UploadId>", "</UploadId>"),
                )
            })
            .collect()
    }

    /// How many parts an open multipart upload holds.
    fn parts(&self, (key, upload_id): &Upload) -> usize {
        let (status, body) = block_on(self.0.request(
            reqwest::Method::GET,
            &format!("/{}/{key}?uploadId={upload_id}", self.0.bucket),
        ));
        assert!(status == 200, "ListParts: {status} {body}");
        body.matches("<Part>").count()
    }

    /// Keys of the visible objects under `prefix`.
    fn objects(&self, prefix: &str) -> Vec<String> {
        let (status, body) = block_on(self.0.request(
            reqwest::Method::GET,
            &format!("/{}?list-type=2&prefix={prefix}", self.0.bucket),
        ));
        assert!(
            status == 200 && body.contains("ListBucketResult"),
            "ListObjectsV2: {status} {body}"
        );
        body.split("<Contents>")
            .skip(1)
            .map(|object| between(object, "<Key>", "</Key>"))
            .collect()
    }
}

fn between(text: &str, start: &str, end: &str) -> String {
    text.split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(value, _)| value.to_owned())
        .unwrap_or_default()
}

// -------------------------------------------------------------------- tests

#[test]
fn a_worker_killed_mid_step_is_replaced_by_another_that_resumes_at_the_interrupted_step() {
    let source = Source::create();
    let cluster = Cluster::shared();
    let (_api, client) = cluster.api();
    let mut workers = [cluster.worker(1), cluster.worker(1)];
    let _scheduler = cluster.scheduler();
    let connector = client.connector(&source);
    let project = client.project("killed worker", &connector, &three_steps());

    let id = client.execute(&project);
    let running = client.wait_step_running(&project, &id, 1);
    let first = running["steps"][0].clone();
    assert_eq!(first["status"], "completed");
    let first_file = cluster.file_of(first["output_file"].as_str().expect("output_file"));
    let first_stamp = file_stamp(&first_file);
    let victim = eventually(
        "the worker running the execution to log it",
        Duration::from_secs(5),
        || workers.iter().position(|w| w.took(&id)),
    );
    std::thread::sleep(Duration::from_millis(500)); // well inside the 4 s query
    workers[victim].kill9();
    let killed_at = Instant::now();

    let done = client.wait_terminal(&project, &id, Duration::from_secs(45));
    assert!(killed_at.elapsed() < Duration::from_secs(45));
    assert_three_steps_completed_once(&client, &source, &project, &done);
    assert!(done["attempt"].as_i64().expect("attempt") >= 2, "{done:#}");
    let survivor = &workers[1 - victim];
    let resumed = survivor.logged("execution taken", &id);
    assert!(
        resumed.iter().any(|e| e["attempt"].as_i64() >= Some(2)),
        "the other worker took it over: {resumed:?}"
    );
    assert_eq!(
        done["steps"][0], first,
        "the completed first step was not run again"
    );
    assert_eq!(
        file_stamp(&first_file),
        first_stamp,
        "the first step's object was not rewritten"
    );
    let mut expected: Vec<String> = project.steps.iter().map(|s| format!("{s}.parquet")).collect();
    expected.sort();
    assert_eq!(
        cluster.result_files(&id),
        expected,
        "one object per step, nothing else"
    );
}

#[test]
fn a_worker_restarted_with_the_same_configuration_recovers_its_in_flight_execution() {
    let source = Source::create();
    let cluster = Cluster::shared();
    let (_api, client) = cluster.api();
    let mut worker = cluster.worker(1);
    let _scheduler = cluster.scheduler();
    let connector = client.connector(&source);
    let project = client.project("restarted worker", &connector, &three_steps());

    let id = client.execute(&project);
    let running = client.wait_step_running(&project, &id, 1);
    let first = running["steps"][0].clone();
    let first_file = cluster.file_of(first["output_file"].as_str().expect("output_file"));
    let first_stamp = file_stamp(&first_file);
    assert!(worker.took(&id));
    std::thread::sleep(Duration::from_millis(500));
    worker.kill9();
    let restarted = cluster.worker(1);

    let done = client.wait_terminal(&project, &id, Duration::from_secs(45));
    assert_three_steps_completed_once(&client, &source, &project, &done);
    assert_eq!(done["attempt"], 2, "{done:#}");
    assert!(restarted.took(&id), "the restarted worker finished the execution");
    assert_eq!(done["steps"][0], first);
    assert_eq!(file_stamp(&first_file), first_stamp);
}

#[test]
fn a_worker_paused_past_its_lease_writes_nothing_once_another_worker_took_over() {
    let source = Source::create();
    let cluster = Cluster::shared();
    let (_api, client) = cluster.api();
    let workers = [cluster.worker(1), cluster.worker(1)];
    let _scheduler = cluster.scheduler();
    let connector = client.connector(&source);
    let project = client.project("paused worker", &connector, &three_steps());

    let id = client.execute(&project);
    client.wait_step_running(&project, &id, 1);
    let paused = eventually(
        "the worker running the execution to log it",
        Duration::from_secs(5),
        || workers.iter().position(|w| w.took(&id)),
    );
    std::thread::sleep(Duration::from_millis(500));
    workers[paused].signal("STOP");

    // The other worker takes over once the lease runs out, and finishes.
    let done = client.wait_terminal(&project, &id, Duration::from_secs(45));
    assert_three_steps_completed_once(&client, &source, &project, &done);
    assert!(done["attempt"].as_i64() >= Some(2), "{done:#}");
    assert!(workers[1 - paused].took(&id));
    let files: Vec<PathBuf> = (0..3)
        .map(|i| cluster.file_of(done["steps"][i]["output_file"].as_str().expect("output_file")))
        .collect();
    let stamps: Vec<FileStamp> = files.iter().map(|f| file_stamp(f)).collect();

    // The paused worker wakes up in the middle of the slow step: it must
    // notice it lost the lease and write nothing.
    workers[paused].signal("CONT");
    let lost = eventually(
        "the paused worker to notice it lost its lease",
        Duration::from_secs(15),
        || {
            let lines = workers[paused].logged("lease lost; a newer attempt owns the execution", &id);
            (!lines.is_empty()).then_some(lines)
        },
    );
    assert_eq!(lost[0]["attempt"], 1, "{lost:?}");
    std::thread::sleep(Duration::from_secs(3));
    let after = client.execution(&project, &id);
    assert_eq!(
        after, done,
        "the store still shows the new attempt's run, untouched"
    );
    let now: Vec<FileStamp> = files.iter().map(|f| file_stamp(f)).collect();
    assert_eq!(now, stamps, "no object was rewritten by the stale worker");
    assert_eq!(source.sequence_calls(), 1);
    let completed: Vec<Value> = workers[paused].logged("step completed", &id);
    assert_eq!(
        completed.iter().map(|e| e["step_id"].clone()).collect::<Vec<_>>(),
        [json!(project.steps[0])],
        "the stale worker completed only the step it ran before the pause"
    );
}

#[test]
fn a_redis_restart_loses_no_execution_and_needs_no_role_restarted() {
    let source = Source::create();
    let mut redis = PrivateRedis::start();
    let database = PgDatabase::create("ferry_cli_test");
    let cluster = Cluster::build(database.url(), redis.url(), Some(database), false, None);
    let (mut api, client) = cluster.api();
    let mut workers = [cluster.worker(1), cluster.worker(1)];
    let mut scheduler = cluster.scheduler();
    let connector = client.connector(&source);
    let step = vec![(
        "nap",
        "select pg_sleep(3)::text as slept, 42 as answer".to_owned(),
    )];
    let projects: Vec<Project> = (0..8)
        .map(|i| client.project(&format!("redis {i}"), &connector, &step))
        .collect();

    // Two run, the rest wait in Redis.
    let mut ids: Vec<String> = projects[..6].iter().map(|p| client.execute(p)).collect();
    eventually("two executions to run", Duration::from_secs(20), || {
        let running = projects[..6]
            .iter()
            .zip(&ids)
            .filter(|(p, id)| client.execution(p, id)["status"] == "running")
            .count();
        (running == 2).then_some(())
    });
    let before = redis.run_id();
    redis.restart_empty();
    // A new server without persistence: every job queued before is gone
    // (the roles may already have re-created their group and lock in it).
    assert_ne!(redis.run_id(), before, "Redis was restarted");

    // New work is accepted and runs on the same processes.
    ids.extend(projects[6..].iter().map(|p| client.execute(p)));
    for (project, id) in projects.iter().zip(&ids) {
        let done = client.wait_terminal(project, id, Duration::from_secs(100));
        assert_eq!(done["status"], "completed", "{done:#}");
        assert_eq!(done["steps"][0]["rows_processed"], 1);
    }
    assert!(
        api.alive() && scheduler.alive() && workers.iter_mut().all(Proc::alive),
        "no role was restarted"
    );
    let reaped = scheduler
        .events()
        .into_iter()
        .any(|e| e["message"] == "reaper enqueued executions without a live lease");
    assert!(
        reaped,
        "the jobs the restart lost came back through the reaper:\n{}",
        scheduler.log_text()
    );
}

/// What a client saw of one request.
struct Seen {
    sent: Instant,
    answered: Instant,
    answer: Option<Answer>,
}

#[test]
fn the_api_answers_503_with_retry_after_while_postgresql_restarts_and_every_execution_completes() {
    let source = Source::create();
    let postgres = PrivatePostgres::start();
    let cluster = Cluster::build(
        postgres.url(),
        "redis://127.0.0.1:6379/0".to_owned(),
        None,
        true,
        None,
    );
    let (mut api, client) = cluster.api();
    let mut worker = cluster.worker(4);
    let mut scheduler = cluster.scheduler();
    let connector = client.connector(&source);
    let step = vec![(
        "nap",
        "select pg_sleep(3)::text as slept, 42 as answer".to_owned(),
    )];
    let projects: Vec<Project> = (0..5)
        .map(|i| client.project(&format!("pg {i}"), &connector, &step))
        .collect();
    let before: Vec<String> = projects[..2].iter().map(|p| client.execute(p)).collect();

    // Clients keep reading and writing through the outage, one kind of
    // request each; executing the last project starts with the outage and
    // is retried until it is accepted.
    let stop = Arc::new(AtomicBool::new(false));
    let outage = Arc::new(AtomicBool::new(false));
    let kinds = [
        (
            reqwest::Method::GET,
            format!("/api/projects/{}/executions/{}", projects[0].uuid, before[0]),
            None,
        ),
        (
            reqwest::Method::POST,
            "/api/projects".to_owned(),
            Some(json!({"name": "during the outage"})),
        ),
        (reqwest::Method::GET, "/api/projects?limit=5".to_owned(), None),
        (
            reqwest::Method::POST,
            format!("/api/projects/{}/execute", projects[4].uuid),
            Some(json!({})),
        ),
    ];
    let loads: Vec<_> = kinds
        .iter()
        .cloned()
        .map(|(method, path, body)| {
            let (stop, outage) = (stop.clone(), outage.clone());
            let url = format!("{}{path}", client.base);
            let token = client.token.clone();
            let execute = path.ends_with("/execute");
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if execute && !outage.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    let sent = Instant::now();
                    let answer = http_try(
                        method.clone(),
                        &url,
                        &token,
                        body.as_ref(),
                        Duration::from_secs(20),
                    );
                    let accepted = answer.as_ref().is_some_and(|a| a.status == 202);
                    seen.push(Seen {
                        sent,
                        answered: Instant::now(),
                        answer,
                    });
                    if execute && accepted {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                seen
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(1));
    outage.store(true, Ordering::Relaxed);
    postgres.stop_fast();
    // `pg_ctl stop -w` returned: from here on nothing can be served.
    let outage_began = Instant::now();
    std::thread::sleep(Duration::from_secs(9));
    let outage_ended = Instant::now();
    postgres.start_again();
    wait_healthy(&format!("{}/readyz", client.base));
    let after: Vec<String> = projects[2..4].iter().map(|p| client.execute(p)).collect();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Vec<Seen>> = loads
        .into_iter()
        .map(|l| l.join().expect("load thread"))
        .collect();

    let mut during = None;
    for ((method, path, _), seen) in kinds.iter().zip(&seen) {
        let request = format!("{method} {path}");
        let mut unavailable = 0;
        for Seen {
            sent,
            answered,
            answer,
        } in seen
        {
            let answer = answer.as_ref().unwrap_or_else(|| panic!("{request}: no answer"));
            assert_ne!(answer.status, 500, "{request}: never a 500: {}", answer.body);
            if answer.status == 503 {
                unavailable += 1;
                assert_eq!(
                    answer.body["error"], "service_unavailable",
                    "{request}: {}",
                    answer.body
                );
                assert!(
                    answer.retry_after.is_some(),
                    "{request}: a 503 says when to retry"
                );
            } else if *sent > outage_began && *answered < outage_ended {
                panic!(
                    "{request} answered {} during the outage: {}",
                    answer.status, answer.body
                );
            } else {
                assert!(
                    (200..=202).contains(&answer.status),
                    "{request}: {} {}",
                    answer.status,
                    answer.body
                );
                if answer.status == 202 {
                    during = answer.body["execution_id"].as_str().map(str::to_owned);
                }
            }
        }
        assert!(unavailable >= 1, "{request} saw the outage as a 503");
    }

    let during = during.expect("the execute call retried through the outage was accepted");
    let runs = [
        (&projects[0], &before[0]),
        (&projects[1], &before[1]),
        (&projects[2], &after[0]),
        (&projects[3], &after[1]),
        (&projects[4], &during),
    ];
    for (project, id) in runs {
        let done = client.wait_terminal(project, id, Duration::from_secs(60));
        assert_eq!(done["status"], "completed", "{done:#}");
        assert_eq!(done["steps"][0]["rows_processed"], 1);
    }
    assert!(
        api.alive() && worker.alive() && scheduler.alive(),
        "every role rode out the outage"
    );
}

/// A step whose Parquet output passes a multipart part (≥ 8 MiB: 100 000
/// rows of 512 random bytes), then waits `seconds` before its last row, so
/// that an upload is open while it waits.
fn big_then_wait(seconds: u32) -> String {
    format!(
        "select g, (select string_agg(sha512(int4send(g * 8 + i)), ''::bytea) from generate_series(0, 7) i) as blob \
         from generate_series(1, 100000) g \
         union all select 0, null::bytea from pg_sleep({seconds})"
    )
}

fn s3_prefix(cluster: &Cluster) -> String {
    let Objects::S3 { url, .. } = &cluster.objects else {
        panic!("not an s3 deployment")
    };
    url.splitn(4, '/').nth(3).expect("prefix").to_owned()
}

#[test]
fn a_cancelled_execution_leaves_no_open_multipart_upload_and_no_object_on_s3() {
    let source = Source::create();
    let moto = Moto::start();
    let database = PgDatabase::create("ferry_cli_test");
    let cluster = Cluster::build(
        database.url(),
        "redis://127.0.0.1:6379/0".to_owned(),
        Some(database),
        true,
        Some(&moto),
    );
    let (_api, client) = cluster.api();
    let _worker = cluster.worker(1);
    let _scheduler = cluster.scheduler();
    let connector = client.connector(&source);
    let project = client.project("cancelled upload", &connector, &[("big", big_then_wait(60))]);

    let id = client.execute(&project);
    eventually("a multipart upload to be open", Duration::from_secs(60), || {
        (!moto.open_uploads().is_empty()).then_some(())
    });
    client.cancel(&project, &id);
    let done = client.wait_terminal(&project, &id, Duration::from_secs(20));
    assert_eq!(done["status"], "cancelled", "{done:#}");
    assert_eq!(done["steps"][0]["status"], "cancelled");
    assert_eq!(
        moto.open_uploads(),
        Vec::<Upload>::new(),
        "the upload was aborted"
    );
    assert_eq!(
        moto.objects(&s3_prefix(&cluster)),
        Vec::<String>::new(),
        "no partial object"
    );
}

/// Kills the worker writing a > 8 MiB step to S3 while its multipart
/// upload is open, lets the other worker resume and complete the step, and
/// checks what a reader can see: never a partial object, then exactly the
/// complete one. Returns the uploads open when the worker died and those
/// still open at the end, as (key, upload id).
fn crash_mid_upload_then_resume() -> (Vec<Upload>, Vec<Upload>) {
    let source = Source::create();
    let moto = Moto::start();
    let database = PgDatabase::create("ferry_cli_test");
    let cluster = Cluster::build(
        database.url(),
        "redis://127.0.0.1:6379/0".to_owned(),
        Some(database),
        true,
        Some(&moto),
    );
    let (_api, client) = cluster.api();
    let mut workers = [cluster.worker(1), cluster.worker(1)];
    let _scheduler = cluster.scheduler();
    let connector = client.connector(&source);
    let project = client.project("crashed upload", &connector, &[("big", big_then_wait(5))]);

    let id = client.execute(&project);
    // A part has been sent: the step recorded the upload's id before that
    // (only a crash between creating an upload and recording it, one round
    // trip, can leave one open; a bucket lifecycle rule covers that window).
    let at_kill = eventually("a multipart upload with a part", Duration::from_secs(60), || {
        let open = moto.open_uploads();
        open.iter().any(|upload| moto.parts(upload) > 0).then_some(open)
    });
    let victim = workers
        .iter()
        .position(|w| w.took(&id))
        .expect("a worker took the execution");
    workers[victim].kill9();
    let prefix = s3_prefix(&cluster);
    assert_eq!(
        moto.objects(&prefix),
        Vec::<String>::new(),
        "no partial object after the crash"
    );

    let done = client.wait_terminal(&project, &id, Duration::from_secs(60));
    assert_eq!(done["status"], "completed", "{done:#}");
    assert!(done["attempt"].as_i64() >= Some(2), "{done:#}");
    assert_eq!(done["steps"][0]["rows_processed"], 100_001);
    let key = format!("{prefix}/results/{id}/{}.parquet", project.steps[0]);
    assert_eq!(moto.objects(&prefix), vec![key], "exactly the completed object");
    (at_kill, moto.open_uploads())
}

/// The crashed attempt recorded its upload's id on the step before sending
/// a part; the attempt that resumes the step aborts it, so nothing is left
/// open, and only the resumed attempt's complete object is published.
#[test]
fn a_crash_mid_upload_never_shows_a_partial_object_and_leaves_no_multipart_upload_open_on_s3() {
    let (at_kill, left) = crash_mid_upload_then_resume();
    assert!(!at_kill.is_empty(), "the crashed attempt had an upload open");
    assert_eq!(
        left,
        Vec::<Upload>::new(),
        "no multipart upload left open, not even the crashed one"
    );
}

#[test]
fn a_worker_stopped_with_sigterm_mid_step_finishes_its_execution_and_takes_no_new_job() {
    let source = Source::create();
    let cluster = Cluster::shared();
    let (_api, client) = cluster.api();
    let _scheduler = cluster.scheduler();
    let mut stopping = cluster.worker(4);
    let connector = client.connector(&source);
    let project = client.project("sigterm", &connector, &three_steps());
    let later: Vec<Project> = (0..3)
        .map(|i| {
            client.project(
                &format!("after sigterm {i}"),
                &connector,
                &[("quick", QUICK.to_owned())],
            )
        })
        .collect();

    let id = client.execute(&project);
    client.wait_step_running(&project, &id, 1);
    assert!(stopping.took(&id));
    let other = cluster.worker(4);
    std::thread::sleep(Duration::from_millis(500));
    stopping.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    let later_ids: Vec<String> = later.iter().map(|p| client.execute(p)).collect();

    let done = client.wait_terminal(&project, &id, Duration::from_secs(45));
    assert_three_steps_completed_once(&client, &source, &project, &done);
    let status = stopping.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "a graceful stop exits 0: {status}");
    if done["attempt"] == 1 {
        assert!(
            !stopping.logged("execution finished", &id).is_empty(),
            "attempt 1 means the stopping worker finished it"
        );
    } else {
        assert!(
            other.took(&id),
            "a handed-back execution was resumed by the other worker"
        );
    }
    let mut expected: Vec<String> = project.steps.iter().map(|s| format!("{s}.parquet")).collect();
    expected.sort();
    assert_eq!(cluster.result_files(&id), expected);
    for (project, id) in later.iter().zip(&later_ids) {
        let done = client.wait_terminal(project, id, Duration::from_secs(30));
        assert_eq!(done["status"], "completed", "{done:#}");
        assert!(!stopping.took(id), "the stopping worker took no new job");
        assert!(other.took(id));
    }
}

#[test]
fn a_worker_whose_shutdown_grace_runs_out_hands_its_execution_back_and_another_worker_resumes_it() {
    let source = Source::create();
    let cluster = Cluster::shared();
    let (_api, client) = cluster.api();
    let _scheduler = cluster.scheduler();
    let port = free_port();
    let mut stopping = cluster.spawn(
        "worker",
        &[
            "--admin-listen".into(),
            format!("127.0.0.1:{port}"),
            "--worker-shutdown-grace".into(),
            "1s".into(),
        ],
        port,
    );
    let connector = client.connector(&source);
    let steps = vec![
        ("number the run", NUMBER_THE_RUN.to_owned()),
        ("slow", slow(8)),
        ("quick", QUICK.to_owned()),
    ];
    let project = client.project("grace", &connector, &steps);

    let id = client.execute(&project);
    client.wait_step_running(&project, &id, 1);
    assert!(stopping.took(&id));
    let other = cluster.worker(4);
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    stopping.signal("TERM");
    // The slow step has 7 s to go: the worker gives up on it after its 1 s
    // grace and exits cleanly.
    let status = stopping.wait_exit(Duration::from_secs(10));
    let stopped_after = signalled.elapsed();
    assert!(status.success(), "a graceful stop exits 0: {status}");
    assert!(
        stopped_after >= Duration::from_secs(1) && stopped_after < Duration::from_secs(5),
        "stopped {stopped_after:?} after SIGTERM"
    );
    assert!(
        stopping
            .log_text()
            .contains("job handed back unfinished: the shutdown grace period ran out"),
        "{}",
        stopping.log_text()
    );
    assert!(stopping.logged("execution finished", &id).is_empty());

    let done = client.wait_terminal(&project, &id, Duration::from_secs(60));
    assert_three_steps_completed_once(&client, &source, &project, &done);
    assert!(
        other.took(&id),
        "the other worker resumed the handed-back execution"
    );
    assert_eq!(done["attempt"], 2, "{done:#}");
    let mut expected: Vec<String> = project.steps.iter().map(|s| format!("{s}.parquet")).collect();
    expected.sort();
    assert_eq!(
        cluster.result_files(&id),
        expected,
        "no object of the abandoned try is left"
    );
}
