//! End-to-end executions benchmark, not part of CI (`#[ignore]`d). Run it
//! with `bash loadtests/executions/run.sh` (release build, baselines beside
//! it); see loadtests/README.md.
//!
//! One api and two workers — release `ferry` processes at RUST_LOG=warn, no
//! scheduler — on a fresh PostgreSQL database and a unique Redis prefix run
//! one-step projects whose step is `select 1 as one` on a PostgreSQL
//! connector (a throwaway login role, created with `test_connection: true`):
//!
//! - drain: EXECUTIONS executions enqueued by CLIENTS concurrent HTTP clients
//!   as fast as the api takes them; executions/s from the first POST to the
//!   last `completed_at`;
//! - latency: RATE executions/s offered open-loop for SECONDS; enqueue-to-start
//!   (`started_at − created_at`) and end-to-end (`completed_at − created_at`)
//!   percentiles from the execution records, and where the time goes.
//!
//! One project per execution: a project may have only one execution in
//! progress, so the drain creates EXECUTIONS projects up front (timed
//! separately, not part of the figures) and every execute call names an idle
//! project. Nothing on the client side waits for a completion before the
//! next enqueue (no polling, no 409 retries), so the queue really fills and
//! the figures measure Ferry, not the client's round-robin over busy
//! projects. The latency phase reuses the first RATE × SECONDS projects,
//! all idle again after the drain.
//!
//! Settings (environment): FERRY_BENCH_EXECUTIONS (10000), FERRY_BENCH_RATE
//! (200), FERRY_BENCH_SECONDS (20), FERRY_BENCH_CLIENTS (32),
//! FERRY_BENCH_WORKERS (2), FERRY_BENCH_WORKER_CONCURRENCY (8, Ferry's
//! default).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::distributed::{Deployment, Role};
use crate::{KEY, Running, free_port, http_send, wait_healthy};

const QUERY: &str = "select 1 as one";
/// Executions run before the drain so that both workers have their pools.
const WARMUP: usize = 40;

struct Settings {
    executions: usize,
    rate: usize,
    seconds: usize,
    clients: usize,
    workers: usize,
    worker_concurrency: usize,
}

impl Settings {
    fn from_env() -> Settings {
        fn var(name: &str, default: usize) -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        }
        Settings {
            executions: var("FERRY_BENCH_EXECUTIONS", 10_000),
            rate: var("FERRY_BENCH_RATE", 200),
            seconds: var("FERRY_BENCH_SECONDS", 20),
            clients: var("FERRY_BENCH_CLIENTS", 32),
            workers: var("FERRY_BENCH_WORKERS", 2),
            worker_concurrency: var("FERRY_BENCH_WORKER_CONCURRENCY", 8),
        }
    }
}

// --- helpers -------------------------------------------------------------------

/// Runs `query` in `database` through psql; rows as lines, columns split on
/// `|` (psql's unaligned output).
fn sql(database: &str, query: &str) -> String {
    ferry_testkit::postgres::psql(database, query)
}

fn sql_time(at: DateTime<Utc>) -> String {
    format!(
        "'{}'::timestamptz",
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

fn redis_info(field: &str) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", "6379", "info", "all"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!("{field}:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Deletes every Redis key of the deployment's prefix when dropped.
struct RedisKeys(String);

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                "6379",
                "--scan",
                "--pattern",
                &format!("*{}*", self.0),
            ])
            .output();
        let Ok(out) = out else { return };
        let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        for chunk in keys.chunks(500) {
            let _ = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", "6379", "unlink"])
                .args(chunk)
                .stdout(Stdio::null())
                .status();
        }
    }
}

fn spawn_role(deployment: &Deployment, args: &[&str], log: &Path) -> Running {
    let log = std::fs::File::create(log).expect("log file");
    let child = deployment
        .command(KEY)
        .env("RUST_LOG", "warn")
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn ferry");
    Running(child)
}

/// The value at quantile `q` (nearest rank) of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

// --- CPU accounting ------------------------------------------------------------

fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command come state (field 3), …, utime (14) and stime (15).
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name)
        })
        .collect()
}

/// The processes whose CPU time a phase reports, by group.
struct Processes {
    api: u32,
    workers: Vec<u32>,
    database: String,
    role: String,
}

impl Processes {
    fn groups(&self) -> Vec<(&'static str, Vec<u32>)> {
        let backends = sql(
            &self.database,
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE (datname = current_database() OR usename = '{}') \
                 AND pid <> pg_backend_pid()",
                self.role
            ),
        );
        vec![
            ("api", vec![self.api]),
            ("workers", self.workers.clone()),
            (
                "postgres backends",
                backends.lines().filter_map(|l| l.parse().ok()).collect(),
            ),
            ("redis-server", pids_named("redis-server")),
            ("load generator", vec![std::process::id()]),
        ]
    }

    fn snapshot(&self) -> CpuSnapshot {
        let groups = self
            .groups()
            .into_iter()
            .map(|(name, pids)| {
                (
                    name,
                    pids.into_iter()
                        .filter_map(|p| Some((p, process_ticks(p)?)))
                        .collect(),
                )
            })
            .collect();
        CpuSnapshot {
            at: Instant::now(),
            machine: machine_ticks(),
            groups,
        }
    }

    /// Cores used by each group and by the whole machine since `start`, and
    /// the cores used by everything else (other users of the machine).
    fn usage_since(&self, start: &CpuSnapshot, ticks_per_second: f64) -> (String, f64) {
        let end = self.snapshot();
        let seconds = (end.at - start.at).as_secs_f64();
        let cores = |ticks: u64| ticks as f64 / ticks_per_second / seconds;
        let mut ours = 0;
        let mut parts = Vec::new();
        for (name, pids) in &end.groups {
            let before = start.groups.iter().find(|(n, _)| n == name).map(|(_, p)| p);
            let ticks: u64 = pids
                .iter()
                .map(|(pid, ticks)| {
                    ticks.saturating_sub(before.and_then(|b| b.get(pid)).copied().unwrap_or(0))
                })
                .sum();
            ours += ticks;
            parts.push(format!("{name} {:.2}", cores(ticks)));
        }
        let busy = end.machine.0 - start.machine.0;
        let total = end.machine.1 - start.machine.1;
        let capacity = total as f64 / ticks_per_second / seconds;
        let others = cores(busy.saturating_sub(ours));
        parts.push(format!("everything else {others:.2}"));
        (
            format!(
                "{}; machine busy {:.2} of {capacity:.2} cores",
                parts.join(", "),
                cores(busy)
            ),
            others,
        )
    }
}

struct CpuSnapshot {
    at: Instant,
    machine: (u64, u64),
    groups: Vec<(&'static str, HashMap<u32, u64>)>,
}

// --- sampling the store during a phase ---------------------------------------------

#[derive(Default)]
struct Samples {
    count: usize,
    queued_max: u64,
    queued_sum: u64,
    running_sum: u64,
    active_sum: u64,
    waits: BTreeMap<String, u64>,
}

impl Samples {
    fn summary(&self, slots: usize) -> String {
        let n = self.count.max(1) as f64;
        let mut waits: Vec<_> = self.waits.iter().collect();
        waits.sort_by(|a, b| b.1.cmp(a.1));
        let waits: Vec<String> = waits
            .iter()
            .take(5)
            .map(|(w, c)| format!("{w} {:.1}", **c as f64 / n))
            .collect();
        format!(
            "{} samples: queued max {} mean {:.1}; running mean {:.1} of {slots} worker slots; \
             metadata backends active mean {:.1} (waiting, mean per sample: {})",
            self.count,
            self.queued_max,
            self.queued_sum as f64 / n,
            self.running_sum as f64 / n,
            self.active_sum as f64 / n,
            if waits.is_empty() {
                "none".to_owned()
            } else {
                waits.join(", ")
            }
        )
    }
}

/// Samples queue backlog, executions in flight and the metadata database's
/// backends every 500 ms until dropped.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Samples>>,
}

impl Sampler {
    fn start(database: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let database = database.to_owned();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let query = "SELECT (SELECT count(*) FROM executions WHERE status = 'queued'), \
                 (SELECT count(*) FROM executions WHERE status IN ('running', 'cancelling')), \
                 (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                    AND state = 'active' AND pid <> pg_backend_pid()), \
                 (SELECT coalesce(string_agg(wait_event_type || ':' || wait_event, ','), '') \
                    FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' \
                    AND wait_event IS NOT NULL AND pid <> pg_backend_pid())";
            let mut samples = Samples::default();
            while !flag.load(Ordering::Relaxed) {
                let row = sql(&database, query);
                let fields: Vec<&str> = row.split('|').collect();
                let number = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                samples.count += 1;
                samples.queued_max = samples.queued_max.max(number(0));
                samples.queued_sum += number(0);
                samples.running_sum += number(1);
                samples.active_sum += number(2);
                for wait in fields
                    .get(3)
                    .copied()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|w| !w.is_empty())
                {
                    *samples.waits.entry(wait.to_owned()).or_default() += 1;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            samples
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("sampler"))
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// --- HTTP ----------------------------------------------------------------------

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Runs `task(0..n)` on `clients` concurrent clients; results in index order.
async fn closed_loop<T, F, Fut>(n: usize, clients: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let next = next.clone();
        let task = task.clone();
        set.spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return done;
                }
                done.push((i, task(i).await));
            }
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(done) = set.join_next().await {
        all.extend(done.expect("client"));
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, t)| t).collect()
}

/// One execute call: its status, how long it took, and the body on failure.
struct Sent {
    status: u16,
    took: Duration,
    lag: Duration,
    body: Value,
}

async fn execute(api: &Api, project: &str, lag: Duration) -> Sent {
    let started = Instant::now();
    let (status, body) = api
        .post(&format!("/api/projects/{project}/execute"), &json!({}))
        .await;
    Sent {
        status,
        took: started.elapsed(),
        lag,
        body: if status == 202 { Value::Null } else { body },
    }
}

fn summarize_sent(sent: &[Sent]) -> (String, f64, f64) {
    let mut took: Vec<f64> = sent.iter().map(|s| millis(s.took)).collect();
    took.sort_by(f64::total_cmp);
    let failed: Vec<&Sent> = sent.iter().filter(|s| s.status != 202).collect();
    let (p50, p99) = (quantile(&took, 0.5), quantile(&took, 0.99));
    let mut text = format!(
        "POST /execute p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms; non-202: {}",
        quantile(&took, 1.0),
        failed.len()
    );
    if let Some(first) = failed.first() {
        text.push_str(&format!(" (first: {} {})", first.status, first.body));
    }
    (text, p50, p99)
}

// --- the execution records ------------------------------------------------------------

/// The segments of an execution's life, from its records (milliseconds).
/// Each timestamp is taken before the statement that writes it, so:
/// - queue: the api's insert transaction, the Redis enqueue, the pickup;
/// - claim: the claim `UPDATE`, loading the execution, `start_step`'s
///   fence (`BEGIN`, `SELECT … FOR UPDATE`);
/// - step: `start_step`'s `UPDATE` + `COMMIT`, the "changed" event, the
///   connector lookup, pool checkout, prepare + `COPY`, the Parquet write and
///   upload, the fence's lease renewal, `complete_step`'s fence;
/// - finish: `complete_step`'s `UPDATE` + `COMMIT`, the event, `finish`'s fence
///   (its `UPDATE` + `COMMIT`, the last event and the queue ack come after
///   `completed_at`).
const SEGMENTS: [(&str, &str); 5] = [
    (
        "queue (created → execution started)",
        "e.started_at - e.created_at",
    ),
    (
        "claim (execution started → step started)",
        "s.started_at - e.started_at",
    ),
    (
        "step (query + Parquet upload + store writes)",
        "s.completed_at - s.started_at",
    ),
    (
        "finish (step completed → execution completed)",
        "e.completed_at - s.completed_at",
    ),
    (
        "end to end (created → completed)",
        "e.completed_at - e.created_at",
    ),
];
const SHORT: [&str; 5] = ["queue", "claim", "step", "finish", "e2e"];
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)];

/// Per segment: mean, p50, p90, p99, max.
struct Breakdown {
    rows: Vec<[f64; 5]>,
}

impl Breakdown {
    fn query(database: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Breakdown {
        let mut columns = Vec::new();
        for (i, _) in SEGMENTS.iter().enumerate() {
            columns.push(format!("round(avg(v{i}), 3)"));
            for (_, q) in QUANTILES {
                columns.push(format!(
                    "round(percentile_disc({q}) WITHIN GROUP (ORDER BY v{i}), 3)"
                ));
            }
        }
        let values: Vec<String> = SEGMENTS
            .iter()
            .enumerate()
            .map(|(i, (_, expr))| format!("extract(epoch FROM {expr}) * 1000 AS v{i}"))
            .collect();
        let row = sql(
            database,
            &format!(
                "WITH x AS (SELECT {} FROM executions e JOIN execution_steps s ON s.execution_id = e.execution_id \
                 WHERE e.status = 'completed' AND e.created_at BETWEEN {} AND {}) SELECT {} FROM x",
                values.join(", "),
                sql_time(from),
                sql_time(to),
                columns.join(", ")
            ),
        );
        let numbers: Vec<f64> = row.split('|').map(|v| v.parse().unwrap_or(f64::NAN)).collect();
        Breakdown {
            rows: numbers
                .chunks(5)
                .map(|c| [c[0], c[1], c[2], c[3], c[4]])
                .collect(),
        }
    }

    fn get(&self, segment: usize, column: usize) -> f64 {
        self.rows.get(segment).map_or(f64::NAN, |r| r[column])
    }

    fn table(&self) -> String {
        let total = self.get(4, 0);
        let mut text = format!(
            "  {:<48} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}\n",
            "segment (ms)", "mean", "p50", "p90", "p99", "max", "share"
        );
        for (i, (name, _)) in SEGMENTS.iter().enumerate() {
            let r = self.rows.get(i).copied().unwrap_or([f64::NAN; 5]);
            let share = if i < 4 {
                format!("{:.0}%", r[0] / total * 100.0)
            } else {
                "100%".to_owned()
            };
            text.push_str(&format!(
                "  {name:<48} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {share:>7}\n",
                r[0], r[1], r[2], r[3], r[4]
            ));
        }
        text
    }

    /// `queue_mean=… queue_p50=… …` for the BENCH line.
    fn fields(&self) -> String {
        let mut parts = Vec::new();
        for (i, short) in SHORT.iter().enumerate() {
            parts.push(format!("{short}_mean={:.2}", self.get(i, 0)));
            for (j, (q, _)) in QUANTILES.iter().enumerate() {
                parts.push(format!("{short}_{q}={:.2}", self.get(i, j + 1)));
            }
        }
        parts.join(" ")
    }
}

/// Status counts of the executions created in [from, to].
fn statuses(database: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> BTreeMap<String, u64> {
    sql(
        database,
        &format!(
            "SELECT status, count(*) FROM executions WHERE created_at BETWEEN {} AND {} GROUP BY status",
            sql_time(from),
            sql_time(to)
        ),
    )
    .lines()
    .filter_map(|line| {
        let (status, count) = line.split_once('|')?;
        Some((status.to_owned(), count.parse().ok()?))
    })
    .collect()
}

/// Waits until every execution of the database is terminal.
fn wait_all_terminal(database: &str, expected: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let row = sql(
            database,
            "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')), count(*) FROM executions",
        );
        let (done, all) = row.split_once('|').expect("two columns");
        let (done, all): (usize, usize) = (done.parse().expect("count"), all.parse().expect("count"));
        if done == all && all >= expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {all} executions terminal after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The metadata database's counters: transactions, milliseconds its
/// backends spent executing statements and idle inside a transaction
/// (waiting for the client), and the server's WAL flushes (after the
/// backends' statistics had a moment to reach the collector).
fn database_counters(database: &str) -> [f64; 4] {
    std::thread::sleep(Duration::from_millis(1500));
    let row = sql(
        database,
        "SELECT d.xact_commit + d.xact_rollback, d.active_time, d.idle_in_transaction_time, w.wal_sync \
         FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()",
    );
    let values: Vec<f64> = row.split('|').map(|v| v.parse().unwrap_or(0.0)).collect();
    [0, 1, 2, 3].map(|i| values.get(i).copied().unwrap_or(0.0))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one phase consumed outside Ferry's own records.
struct Costs {
    cpu: String,
    other_cores: f64,
    samples: String,
    per_execution: String,
}

struct Meter<'a> {
    processes: &'a Processes,
    database: &'a str,
    ticks_per_second: f64,
    cpu: CpuSnapshot,
    counters: [f64; 4],
    redis_commands: u64,
    redis_connections: u64,
    sampler: Sampler,
}

impl<'a> Meter<'a> {
    fn start(processes: &'a Processes, database: &'a str, ticks_per_second: f64) -> Meter<'a> {
        let counters = database_counters(database);
        Meter {
            processes,
            database,
            ticks_per_second,
            cpu: processes.snapshot(),
            counters,
            redis_commands: redis_info("total_commands_processed"),
            redis_connections: redis_info("total_connections_received"),
            sampler: Sampler::start(database),
        }
    }

    fn stop(self, executions: usize, slots: usize) -> Costs {
        let (cpu, other_cores) = self.processes.usage_since(&self.cpu, self.ticks_per_second);
        let samples = self.sampler.finish().summary(slots);
        let commands = redis_info("total_commands_processed").saturating_sub(self.redis_commands);
        let connections = redis_info("total_connections_received").saturating_sub(self.redis_connections);
        let end = database_counters(self.database);
        let n = executions.max(1) as f64;
        let per = |i: usize| (end[i] - self.counters[i]) / n;
        Costs {
            cpu,
            other_cores,
            samples,
            per_execution: format!(
                "metadata transactions {:.1}, metadata backends executing {:.2} ms and idle in a transaction \
                 {:.2} ms; WAL flushes {:.2} (server-wide); Redis commands {:.1}, new Redis connections {:.2} \
                 (server-wide; the samplers' psql sessions count in the PostgreSQL figures)",
                per(0),
                per(1),
                per(2),
                per(3),
                commands as f64 / n,
                connections as f64 / n
            ),
        }
    }
}

// --- the benchmark ---------------------------------------------------------------

#[test]
#[ignore = "benchmark: bash loadtests/executions/run.sh"]
fn bench_executions_end_to_end() {
    let settings = Settings::from_env();
    let offered = settings.rate * settings.seconds;
    let projects = settings.executions.max(offered).max(WARMUP);
    let slots = settings.workers * settings.worker_concurrency;
    let ticks_per_second = clock_ticks();
    let load_before = load_average();

    let deployment = Deployment::new();
    let _redis_keys = RedisKeys(deployment.prefix.clone());
    let role = Role::create("bench");
    let database = deployment.database.name.clone();
    let api_port = free_port();
    let api_process = spawn_role(
        &deployment,
        &["api", "--listen", &format!("127.0.0.1:{api_port}")],
        &deployment.dir.path().join("api.log"),
    );
    let base = format!("http://127.0.0.1:{api_port}");
    wait_healthy(&format!("{base}/readyz"));
    let mut workers = Vec::new();
    for n in 0..settings.workers {
        let port = free_port();
        let concurrency = settings.worker_concurrency.to_string();
        workers.push(spawn_role(
            &deployment,
            &[
                "worker",
                "--admin-listen",
                &format!("127.0.0.1:{port}"),
                "--worker-concurrency",
                &concurrency,
            ],
            &deployment.dir.path().join(format!("worker-{n}.log")),
        ));
        wait_healthy(&format!("http://127.0.0.1:{port}/readyz"));
    }
    let token = deployment
        .command(KEY)
        .args([
            "token",
            "--user",
            "user_bench",
            "--org",
            "org_bench",
            "--ttl",
            "6h",
        ])
        .output();
    let token = String::from_utf8_lossy(&token.expect("token").stdout)
        .trim()
        .to_owned();

    let (status, connector) = http_send(
        reqwest::Method::POST,
        &format!("{base}/api/connectors"),
        &token,
        Some(
            json!({"type": "postgresql", "display_name": "bench", "config": role.config(), "test_connection": true}),
        ),
    );
    assert_eq!(status, 201, "{connector}");
    let connector_uuid = connector["uuid"].as_str().expect("connector uuid").to_owned();
    let processes = Processes {
        api: api_process.0.id(),
        workers: workers.iter().map(|w| w.0.id()).collect(),
        database: database.clone(),
        role: role.name.clone(),
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let api = Arc::new(Api {
        client: reqwest::Client::builder()
            .pool_idle_timeout(None)
            .build()
            .expect("client"),
        base: base.clone(),
        token: token.clone(),
    });

    println!(
        "== Ferry executions benchmark: api → Redis → {} workers ==",
        settings.workers
    );
    println!(
        "{} cores; load average before: {load_before}; workers {} × concurrency {} = {slots} slots; \
         connector pool 5 per worker (default); metadata pool 10 per process; step: `{QUERY}`",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.workers,
        settings.worker_concurrency
    );

    // Setup: one project (with its one step) per execution.
    let setup = Instant::now();
    let uuids: Vec<String> = runtime.block_on(closed_loop(projects, settings.clients, {
        let api = api.clone();
        let connector_uuid = connector_uuid.clone();
        move |i| {
            let api = api.clone();
            let connector_uuid = connector_uuid.clone();
            async move {
                let (status, project) = api
                    .post("/api/projects", &json!({"name": format!("bench {i:05}")}))
                    .await;
                assert_eq!(status, 201, "{project}");
                let uuid = project["uuid"].as_str().expect("project uuid").to_owned();
                let step = json!({"name": "one", "type": "sql_query",
                                  "config": {"connector_uuid": connector_uuid, "query": QUERY}});
                let (status, body) = api.post(&format!("/api/projects/{uuid}/steps"), &step).await;
                assert_eq!(status, 201, "{body}");
                uuid
            }
        }
    }));
    let setup = setup.elapsed();
    println!(
        "setup (not measured below): {projects} projects + steps in {:.1} s ({:.0} requests/s, {} clients)",
        setup.as_secs_f64(),
        (2 * projects) as f64 / setup.as_secs_f64(),
        settings.clients
    );

    // Warm-up: both workers build their connector pool and touch every path.
    let warm: Vec<Sent> = runtime.block_on(closed_loop(WARMUP, 4, {
        let api = api.clone();
        let uuids = uuids.clone();
        move |i| {
            let api = api.clone();
            let uuid = uuids[i].clone();
            async move { execute(&api, &uuid, Duration::ZERO).await }
        }
    }));
    assert!(
        warm.iter().all(|s| s.status == 202),
        "warm-up: {}",
        summarize_sent(&warm).0
    );
    wait_all_terminal(&database, WARMUP, Duration::from_secs(120));
    let mut expected = WARMUP;

    // (a) drain.
    let meter = Meter::start(&processes, &database, ticks_per_second);
    let drain_from = Utc::now();
    let drain_clock = Instant::now();
    let sent: Vec<Sent> = runtime.block_on(closed_loop(settings.executions, settings.clients, {
        let api = api.clone();
        let uuids = uuids.clone();
        move |i| {
            let api = api.clone();
            let uuid = uuids[i].clone();
            async move { execute(&api, &uuid, Duration::ZERO).await }
        }
    }));
    let enqueued_in = drain_clock.elapsed();
    let drain_to = Utc::now();
    expected += settings.executions;
    wait_all_terminal(&database, expected, Duration::from_secs(1800));
    let drain_costs = meter.stop(settings.executions, slots);
    let span = sql(
        &database,
        &format!(
            "SELECT extract(epoch FROM max(completed_at) - {from}), count(*) FILTER (WHERE started_at IS NULL OR started_at > {to}) \
             FROM executions WHERE created_at BETWEEN {from} AND {to}",
            from = sql_time(drain_from),
            to = sql_time(drain_to)
        ),
    );
    let (drain_seconds, backlog) = span.split_once('|').expect("two columns");
    let drain_seconds: f64 = drain_seconds.parse().expect("seconds");
    let drain_statuses = statuses(&database, drain_from, drain_to);
    let drain_breakdown = Breakdown::query(&database, drain_from, drain_to);
    let (drain_http, drain_http_p50, drain_http_p99) = summarize_sent(&sent);
    let drain_rate = settings.executions as f64 / drain_seconds;
    let enqueue_rate = settings.executions as f64 / enqueued_in.as_secs_f64();

    println!();
    println!(
        "-- (a) drain: {} executions, {} concurrent HTTP clients --",
        settings.executions, settings.clients
    );
    println!(
        "enqueue: {} POSTs in {:.2} s = {enqueue_rate:.0} /s; {drain_http}",
        settings.executions,
        enqueued_in.as_secs_f64()
    );
    println!(
        "drain: first POST → last completed_at {drain_seconds:.2} s = {drain_rate:.0} executions/s; statuses {drain_statuses:?}"
    );
    println!("backlog: {backlog} executions not started yet when the last POST returned");
    println!("sampled: {}", drain_costs.samples);
    println!("cpu (cores): {}", drain_costs.cpu);
    println!("per execution: {}", drain_costs.per_execution);
    print!("{}", drain_breakdown.table());

    // (b) latency: RATE / s offered open-loop.
    let meter = Meter::start(&processes, &database, ticks_per_second);
    let latency_from = Utc::now();
    let period = Duration::from_secs_f64(1.0 / settings.rate as f64);
    let (sent, sending): (Vec<Sent>, Duration) = runtime.block_on({
        let api = api.clone();
        let uuids = uuids.clone();
        async move {
            let start = tokio::time::Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for (i, uuid) in uuids.iter().take(offered).enumerate() {
                let at = start + period * u32::try_from(i).expect("index");
                tokio::time::sleep_until(at).await;
                let lag = at.elapsed();
                let api = api.clone();
                let uuid = uuid.clone();
                set.spawn(async move { (i, execute(&api, &uuid, lag).await) });
            }
            let sending = start.elapsed();
            let mut sent = Vec::with_capacity(offered);
            while let Some(done) = set.join_next().await {
                sent.push(done.expect("execute"));
            }
            sent.sort_by_key(|(i, _)| *i);
            (sent.into_iter().map(|(_, s)| s).collect(), sending)
        }
    });
    let latency_to = Utc::now();
    expected += offered;
    wait_all_terminal(&database, expected, Duration::from_secs(600));
    let latency_costs = meter.stop(offered, slots);
    let latency_statuses = statuses(&database, latency_from, latency_to);
    let latency = Breakdown::query(&database, latency_from, latency_to);
    let (latency_http, latency_http_p50, latency_http_p99) = summarize_sent(&sent);
    let mut lags: Vec<f64> = sent.iter().map(|s| millis(s.lag)).collect();
    lags.sort_by(f64::total_cmp);
    // The first call goes out at 0, the last at `sending`.
    let achieved = (offered - 1) as f64 / sending.as_secs_f64();

    println!();
    println!(
        "-- (b) latency: {} executions/s offered for {} s ({offered} executions) --",
        settings.rate, settings.seconds
    );
    println!(
        "offered {:.1} /s (send lag p99 {:.2} ms, max {:.2} ms); {latency_http}; statuses {latency_statuses:?}",
        achieved,
        quantile(&lags, 0.99),
        quantile(&lags, 1.0)
    );
    println!(
        "enqueue-to-start p50 {:.2} ms, p99 {:.2} ms; end-to-end p50 {:.2} ms, p99 {:.2} ms",
        latency.get(0, 1),
        latency.get(0, 3),
        latency.get(4, 1),
        latency.get(4, 3)
    );
    println!("sampled: {}", latency_costs.samples);
    println!("cpu (cores): {}", latency_costs.cpu);
    println!("per execution: {}", latency_costs.per_execution);
    print!("{}", latency.table());
    println!("load average after: {}", load_average());

    let warnings: Vec<String> = std::fs::read_dir(deployment.dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let first = text
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect::<String>();
            format!(
                "{} {} lines{}",
                e.file_name().to_string_lossy(),
                text.lines().count(),
                if first.is_empty() {
                    String::new()
                } else {
                    format!(" (first: {first})")
                }
            )
        })
        .collect();
    println!("ferry logs at RUST_LOG=warn: {}", warnings.join("; "));

    println!();
    println!(
        "BENCH phase=drain executions={} clients={} workers={} concurrency={} seconds={drain_seconds:.3} \
         executions_per_s={drain_rate:.1} enqueue_per_s={enqueue_rate:.1} backlog={backlog} \
         http_p50={drain_http_p50:.2} http_p99={drain_http_p99:.2} other_cores={:.2} {}",
        settings.executions,
        settings.clients,
        settings.workers,
        settings.worker_concurrency,
        drain_costs.other_cores,
        drain_breakdown.fields()
    );
    println!(
        "BENCH phase=latency offered_per_s={} achieved_per_s={achieved:.1} executions={offered} \
         start_p50={:.2} start_p99={:.2} e2e_p50={:.2} e2e_p99={:.2} http_p50={latency_http_p50:.2} \
         http_p99={latency_http_p99:.2} other_cores={:.2} {}",
        settings.rate,
        latency.get(0, 1),
        latency.get(0, 3),
        latency.get(4, 1),
        latency.get(4, 3),
        latency_costs.other_cores,
        latency.fields()
    );

    // Correctness, after the figures are out.
    assert_eq!(
        drain_statuses.get("completed").copied(),
        Some(settings.executions as u64),
        "{drain_statuses:?}"
    );
    assert_eq!(
        latency_statuses.get("completed").copied(),
        Some(offered as u64),
        "{latency_statuses:?}"
    );
    assert!(sent.iter().all(|s| s.status == 202));
}
