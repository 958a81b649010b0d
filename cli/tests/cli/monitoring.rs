//! Monitoring: after an execution, `ferry up`'s `/metrics` (the api, a
//! worker and the scheduler on one registry) carries Ferry's series with
//! values that add up to what happened; every metric that `deploy/` (alert
//! rules, dashboard, KEDA triggers) queries is one Ferry exports; the
//! metrics table of `docs/operating.md` lists every exported family; and
//! no label carries an id.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::json;

use super::{Running, ferry, free_port, http_send, stderr_of, wait_healthy};

/// The scraped samples (`name{labels}` → value) and the families
/// (`# TYPE` name → type).
struct Scrape {
    samples: HashMap<String, f64>,
    families: HashMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = HashMap::new();
        let mut families = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    families.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let (series, value) = line.rsplit_once(' ').expect("a sample line");
                samples.insert(series.to_owned(), value.parse().expect("a number"));
            }
        }
        Scrape { samples, families }
    }

    /// The value of one series, written as the exposition format prints it
    /// (labels in alphabetical order).
    fn value(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}"))
    }

    /// The sum over every series of `name` whose labels contain `matching`.
    fn sum(&self, name: &str, matching: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                (series.as_str() == name || series.starts_with(&format!("{name}{{")))
                    && series.contains(matching)
            })
            .map(|(_, value)| value)
            .sum()
    }
}

fn repo_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every `ferry_…` metric name in `text` (recording rules, `ferry:…`, are
/// Prometheus' own and left out).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("ferry_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '/') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The family a queried name belongs to: a histogram's `_bucket`, `_sum`
/// and `_count` series are its own.
fn family_of<'a>(name: &'a str, families: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.get(base).is_some_and(|kind| kind == "histogram")
        {
            return base;
        }
    }
    name
}

#[test]
fn metrics_after_an_execution_add_up_and_cover_every_query_of_deploy_and_the_docs() {
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let _up = Running(
        ferry(dir.path())
            .args(["up", "--listen", &format!("127.0.0.1:{port}")])
            .env("FERRY_PROBE_INTERVAL", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&format!("{base}/readyz"));
    let token = ferry(dir.path())
        .args(["token", "--user", "user_01", "--org", "org_01"])
        .output()
        .expect("token");
    assert!(token.status.success(), "{}", stderr_of(&token));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let send = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        http_send(method, &format!("{base}{path}"), &token, body)
    };

    let (status, project) = send(
        reqwest::Method::POST,
        "/api/projects",
        Some(json!({"name": "Monitored"})),
    );
    assert_eq!(status, 201, "{project}");
    let project = project["uuid"].as_str().expect("uuid").to_owned();
    let (status, connector) = send(
        reqwest::Method::POST,
        "/api/connectors",
        Some(json!({"type": "postgresql", "display_name": "Local",
            "config": {"host": "127.0.0.1", "port": 5432, "database": "postgres",
                       "username": "postgres", "password": "not-a-metric-label"}})),
    );
    assert_eq!(status, 201, "{connector}");
    let connector = connector["uuid"].as_str().expect("uuid").to_owned();
    let (status, step) = send(
        reqwest::Method::POST,
        &format!("/api/projects/{project}/steps"),
        Some(json!({"name": "Numbers", "type": "sql_query",
            "config": {"connector_uuid": connector,
                       "query": "select n, md5(n::text) as h from generate_series(1, 1000) as n"}})),
    );
    assert_eq!(status, 201, "{step}");
    let (status, execution) = send(
        reqwest::Method::POST,
        &format!("/api/projects/{project}/execute"),
        Some(json!({"mode": "sync"})),
    );
    assert_eq!(status, 200, "{execution}");
    assert_eq!(execution["status"], "completed", "{execution}");

    // The scheduler leader samples the queue at the reaper's pace (5 s).
    std::thread::sleep(std::time::Duration::from_secs(6));
    let text = super::block_on(async {
        reqwest::get(format!("{base}/metrics"))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text")
    });
    let scrape = Scrape::parse(&text);

    // What happened, counted.
    let kind = "kind=\"execute_project\"";
    assert_eq!(
        scrape.value(&format!("ferry_worker_jobs_started_total{{{kind}}}")),
        1.0
    );
    assert_eq!(
        scrape.value(&format!(
            "ferry_worker_jobs_finished_total{{{kind},outcome=\"succeeded\"}}"
        )),
        1.0
    );
    assert_eq!(
        scrape.sum("ferry_worker_jobs_in_flight", ""),
        0.0,
        "nothing runs now"
    );
    assert_eq!(
        scrape.value("ferry_worker_executions_finished_total{status=\"completed\"}"),
        1.0
    );
    assert_eq!(
        scrape.value("ferry_worker_executions_finished_total{status=\"failed\"}"),
        0.0
    );
    assert_eq!(scrape.value("ferry_worker_concurrency"), 8.0);
    let pg = "connector_type=\"postgresql\"";
    assert_eq!(
        scrape.value(&format!("ferry_worker_rows_written_total{{{pg}}}")),
        1000.0
    );
    let bytes = scrape.value(&format!("ferry_worker_bytes_written_total{{{pg}}}"));
    assert!(bytes > 1000.0, "{bytes} Parquet bytes");
    assert_eq!(
        scrape.value("ferry_worker_upload_bytes_total"),
        bytes,
        "one object, all of it uploaded"
    );
    assert_eq!(scrape.value("ferry_worker_uploads_total"), 1.0);
    assert_eq!(scrape.value("ferry_worker_upload_errors_total"), 0.0);
    assert_eq!(scrape.value("ferry_worker_multipart_aborts_total"), 0.0);
    assert_eq!(
        scrape.value(&format!(
            "ferry_worker_step_duration_seconds_count{{{pg},outcome=\"succeeded\"}}"
        )),
        1.0
    );
    let step_seconds = scrape.value(&format!(
        "ferry_worker_step_duration_seconds_sum{{{pg},outcome=\"succeeded\"}}"
    ));
    let job_seconds = scrape.value(&format!("ferry_worker_job_duration_seconds_sum{{{kind}}}"));
    assert!(
        step_seconds > 0.0 && step_seconds <= job_seconds,
        "step {step_seconds} s within job {job_seconds} s"
    );
    // The step (and the connection test at creation, if any) took the pool.
    assert!(scrape.value(&format!("ferry_worker_pool_wait_seconds_count{{{pg}}}")) >= 1.0);
    assert_eq!(scrape.value(&format!("ferry_worker_pool_in_use{{{pg}}}")), 0.0);
    assert_eq!(
        scrape.value(&format!("ferry_worker_pool_connections{{{pg},state=\"in_use\"}}")),
        0.0,
        "every connection is back in its pool"
    );
    assert!(scrape.value(&format!("ferry_worker_pool_connections{{{pg},state=\"idle\"}}")) <= 5.0);
    assert_eq!(
        scrape.value("ferry_api_sync_waits_total{outcome=\"completed\"}"),
        1.0
    );
    assert_eq!(scrape.value("ferry_api_sse_streams"), 0.0);
    assert_eq!(
        scrape.value(
            "ferry_http_requests_total{method=\"POST\",route=\"/api/projects/{uuid}/execute\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(scrape.value("ferry_scheduler_is_leader"), 1.0);
    assert_eq!(scrape.value("ferry_queue_jobs{state=\"waiting\"}"), 0.0);
    assert_eq!(scrape.value("ferry_queue_jobs{state=\"in_flight\"}"), 0.0);
    assert_eq!(scrape.value("ferry_queue_oldest_waiting_age_seconds"), 0.0);
    assert_eq!(scrape.value("ferry_queue_stats_errors_total"), 0.0);
    assert_eq!(scrape.sum("ferry_build_info", "role=\"up\""), 1.0);

    // No label carries an id, a secret or a raw path.
    for series in scrape.samples.keys().filter(|s| s.starts_with("ferry_")) {
        for forbidden in [
            "proj_",
            "conn_",
            "exec_",
            "step_0",
            "user_01",
            "org_01",
            "not-a-metric-label",
            project.as_str(),
            connector.as_str(),
        ] {
            assert!(!series.contains(forbidden), "{series} carries {forbidden}");
        }
    }

    // Every metric deploy/ queries is one Ferry exports.
    let families = &scrape.families;
    for file in [
        "deploy/prometheus/ferry.rules.yml",
        "deploy/grafana/dashboards/ferry.json",
        "deploy/kubernetes/components/keda/scaledobject.yaml",
    ] {
        let queried = metric_names(&repo_file(file));
        assert!(!queried.is_empty(), "{file} queries nothing");
        for name in &queried {
            assert!(
                families.contains_key(family_of(name, families)),
                "{file} queries {name}, which Ferry does not export"
            );
        }
    }
    // Every exported family is in the table (a family whose series appear
    // only once something happened, such as webhook tries, may be missing
    // from this scrape, so the table is not checked the other way).
    let documented: BTreeSet<String> = repo_file("docs/operating.md")
        .lines()
        .filter_map(|line| line.strip_prefix("| `ferry_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("ferry_{name}"))
        .collect();
    for family in families.keys().filter(|f| f.starts_with("ferry_")) {
        assert!(
            documented.contains(family),
            "docs/operating.md does not describe {family}"
        );
    }
}
