//! The job runtime (`ferry_worker::runtime::run_worker`) over both queue
//! backends: every test is written once, as an `async fn(Arc<dyn Queue>)`,
//! and runs against Redis Streams (`runtime::redis::<name>`, a unique key
//! prefix on the shared Redis at 127.0.0.1:6379) and the embedded SQLite
//! queue (`runtime::embedded::<name>`, a file in a temporary directory). The
//! outage test starts a private `redis-server` (it must be on the PATH).
//! Without them the tests fail, they never skip.
//!
//! `bench_queue_throughput_and_pickup` is the queue benchmark (ignored; run
//! it with `loadtests/queue/run.sh`).
//!
//! The queue backends come from `ferry-testkit`, as in the shared crate's
//! queue suite.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_shared::queue::{Job, JobKind, Queue, RedisQueue};
use ferry_testkit::queue::{Harness as Backend, with_queue};
use ferry_testkit::redis::PrivateRedis;
use ferry_worker::runtime::{JobError, WorkerOptions, run_worker};
use serde_json::json;
use tokio::sync::{Notify, oneshot};

/// For tests that want redelivery to happen within the test.
const SHORT_LEASE: Duration = Duration::from_secs(1);
/// For tests where nothing must be redelivered.
const LONG_LEASE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- fixtures

/// Instantiates each test for both backends, as `runtime::redis::<name>`
/// and `runtime::embedded::<name>`.
macro_rules! runtime_conformance {
    ($($test:ident($lease:expr)),+ $(,)?) => {
        mod redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    with_queue(Backend::redis(), $lease, super::$test).await;
                }
            )+
        }

        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    with_queue(Backend::embedded(), $lease, super::$test).await;
                }
            )+
        }
    };
}

runtime_conformance!(
    run_worker_runs_jobs_concurrently_retries_and_aborts(SHORT_LEASE),
    run_worker_heartbeat_keeps_a_long_job_from_running_twice(SHORT_LEASE),
    run_worker_shutdown_lets_running_jobs_finish_and_a_restart_takes_new_jobs(LONG_LEASE),
    run_worker_acks_a_panicking_job_and_keeps_running(SHORT_LEASE),
    run_worker_never_runs_more_jobs_at_once_than_its_concurrency(LONG_LEASE),
    run_worker_shutdown_never_strands_a_job_fetched_while_stopping(LONG_LEASE),
    run_worker_shutdown_hands_back_a_job_still_running_after_the_grace_period(LONG_LEASE),
);

// ---------------------------------------------------------------- helpers

fn job(n: usize) -> Job {
    Job::new(JobKind::TestConnection, json!({ "n": n }))
}

/// Counts what a test worker's handler saw.
#[derive(Default)]
struct Seen {
    runs: Mutex<HashMap<String, usize>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    changed: Notify,
}

impl Seen {
    fn runs_of(&self, id: &str) -> usize {
        self.runs.lock().expect("lock").get(id).copied().unwrap_or(0)
    }

    /// Waits until `done` holds (checked after every handler run).
    async fn until(&self, within: Duration, done: impl Fn(&HashMap<String, usize>) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.runs.lock().expect("lock")) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out; runs so far: {:?}",
                self.runs.lock().expect("lock")
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// A handler driven by the payload: `{"mode": "ok"|"retry_once"|"abort"|"panic"|"panic_at_call", "sleep_ms": n}`.
/// `panic` panics inside the job's future, `panic_at_call` before the
/// handler returns its future (counted as a run all the same).
fn test_handler(
    seen: Arc<Seen>,
) -> impl Fn(Job) -> futures::future::BoxFuture<'static, Result<(), JobError>> + Clone + Send + Sync + 'static
{
    move |job: Job| {
        if job.payload["mode"] == "panic_at_call" {
            *seen.runs.lock().expect("lock").entry(job.id.clone()).or_default() += 1;
            seen.changed.notify_waiters();
            panic!("handler bug before the job's future");
        }
        let seen = Arc::clone(&seen);
        Box::pin(async move {
            let running = seen.running.fetch_add(1, Ordering::SeqCst) + 1;
            seen.max_running.fetch_max(running, Ordering::SeqCst);
            let sleep = job.payload["sleep_ms"].as_u64().unwrap_or(0);
            if sleep > 0 {
                tokio::time::sleep(Duration::from_millis(sleep)).await;
            }
            let run = {
                let mut runs = seen.runs.lock().expect("lock");
                let run = runs.entry(job.id.clone()).or_default();
                *run += 1;
                *run
            };
            seen.running.fetch_sub(1, Ordering::SeqCst);
            seen.changed.notify_waiters();
            match job.payload["mode"].as_str().unwrap_or("ok") {
                "retry_once" if run == 1 => Err(JobError::Retry("first try fails".into())),
                "abort" => Err(JobError::Abort("cannot work".into())),
                "panic" => panic!("handler bug"),
                _ => Ok(()),
            }
        })
    }
}

/// Starts `run_worker` over `queue` with `handler`; the sender stops it.
fn start_worker<H, Fut>(
    queue: &Arc<dyn Queue>,
    name: &str,
    concurrency: usize,
    handler: H,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<ferry_shared::Result<()>>,
)
where
    H: Fn(Job) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let worker = tokio::spawn(run_worker(
        Arc::clone(queue),
        WorkerOptions::new(name, concurrency),
        handler,
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, worker)
}

/// Stops a worker and checks it returns `Ok` within 5 s.
async fn stop_worker(stop: oneshot::Sender<()>, worker: tokio::task::JoinHandle<ferry_shared::Result<()>>) {
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker stops")
        .expect("worker task")
        .expect("worker result");
}

/// Waits (up to 5 s: acks are batched) for the queue to be empty.
async fn until_drained(queue: &dyn Queue) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.depth().await.expect("depth") > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- tests

async fn run_worker_runs_jobs_concurrently_retries_and_aborts(queue: Arc<dyn Queue>) {
    const OK_JOBS: usize = 200;
    let mut jobs: Vec<Job> = (0..OK_JOBS)
        .map(|n| {
            Job::new(
                JobKind::TestConnection,
                json!({ "mode": "ok", "n": n, "sleep_ms": 5 }),
            )
        })
        .collect();
    let retry = Job::new(JobKind::ExecuteProject, json!({ "mode": "retry_once" }));
    let abort = Job::new(JobKind::DeliverWebhook, json!({ "mode": "abort" }));
    let panics = Job::new(JobKind::DeliverWebhook, json!({ "mode": "panic" }));
    jobs.extend([retry.clone(), abort.clone(), panics.clone()]);
    queue.enqueue_many(&jobs).await.expect("enqueue");

    let seen = Arc::new(Seen::default());
    let (stop, worker) = start_worker(&queue, "test-worker", 8, test_handler(Arc::clone(&seen)));

    let ok_ids: Vec<String> = jobs[..OK_JOBS].iter().map(|j| j.id.clone()).collect();
    let retry_id = retry.id.clone();
    let abort_id = abort.id.clone();
    let panic_id = panics.id.clone();
    seen.until(Duration::from_secs(15), |runs| {
        ok_ids.iter().all(|id| runs.contains_key(id))
            && runs.get(&retry_id) == Some(&2)
            && runs.contains_key(&abort_id)
            && runs.contains_key(&panic_id)
    })
    .await;
    until_drained(&*queue).await;
    assert_eq!(
        queue.depth().await.expect("depth"),
        0,
        "finished, aborted and panicked jobs are acked"
    );
    // Nothing comes back after another lease.
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(500)).await;

    let stopped_in = Instant::now();
    stop_worker(stop, worker).await;
    println!(
        "worker stopped in {:?}; max concurrent jobs {}",
        stopped_in.elapsed(),
        seen.max_running.load(Ordering::SeqCst)
    );
    for id in &ok_ids {
        assert_eq!(seen.runs_of(id), 1, "job {id} ran more than once");
    }
    assert_eq!(seen.runs_of(&retry.id), 2, "the retried job ran twice");
    assert_eq!(seen.runs_of(&abort.id), 1, "the aborted job is not retried");
    assert_eq!(seen.runs_of(&panics.id), 1, "a panicking job is aborted");
    let max = seen.max_running.load(Ordering::SeqCst);
    assert!((2..=8).contains(&max), "max concurrent jobs {max}, concurrency 8");
}

async fn run_worker_heartbeat_keeps_a_long_job_from_running_twice(queue: Arc<dyn Queue>) {
    let long = Job::new(JobKind::ExecuteProject, json!({ "mode": "ok", "sleep_ms": 3000 }));
    queue.enqueue(&long).await.expect("enqueue");
    let seen = Arc::new(Seen::default());
    // Two worker processes compete; the job lasts three leases.
    let workers: Vec<_> = (0..2)
        .map(|_| start_worker(&queue, "test-worker", 2, test_handler(Arc::clone(&seen))))
        .collect();
    seen.until(Duration::from_secs(10), |runs| runs.contains_key(&long.id))
        .await;
    // Two more leases for a wrong redelivery to show.
    tokio::time::sleep(SHORT_LEASE * 2).await;
    for (stop, worker) in workers {
        stop_worker(stop, worker).await;
    }
    assert_eq!(
        seen.runs_of(&long.id),
        1,
        "a long job was redelivered while it ran"
    );
    assert_eq!(queue.depth().await.expect("depth"), 0);
}

async fn run_worker_shutdown_lets_running_jobs_finish_and_a_restart_takes_new_jobs(queue: Arc<dyn Queue>) {
    let slow = Job::new(JobKind::ExecuteProject, json!({ "mode": "ok", "sleep_ms": 1000 }));
    queue.enqueue(&slow).await.expect("enqueue");
    let seen = Arc::new(Seen::default());
    let (stop, worker) = start_worker(&queue, "same-name", 4, test_handler(Arc::clone(&seen)));
    // Stop while the job runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.running.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_worker(stop, worker).await;
    assert_eq!(
        seen.runs_of(&slow.id),
        1,
        "the running job finished before the worker returned"
    );
    assert_eq!(
        queue.depth().await.expect("depth"),
        0,
        "its ack was flushed on shutdown"
    );

    // Started again under the same name prefix (a fresh identity), it takes
    // new jobs at once.
    let fresh = job(7);
    queue.enqueue(&fresh).await.expect("enqueue");
    let (stop, worker) = start_worker(&queue, "same-name", 4, test_handler(Arc::clone(&seen)));
    seen.until(Duration::from_secs(5), |runs| runs.contains_key(&fresh.id))
        .await;
    stop_worker(stop, worker).await;
    assert_eq!(queue.depth().await.expect("depth"), 0);
}

async fn run_worker_shutdown_hands_back_a_job_still_running_after_the_grace_period(queue: Arc<dyn Queue>) {
    // One job finishes within the grace period, one would run for a minute.
    let quick = Job::new(JobKind::ExecuteProject, json!({ "mode": "ok", "sleep_ms": 300 }));
    let stuck = Job::new(
        JobKind::ExecuteProject,
        json!({ "mode": "ok", "sleep_ms": 60_000 }),
    );
    queue.enqueue(&quick).await.expect("enqueue");
    queue.enqueue(&stuck).await.expect("enqueue");
    let seen = Arc::new(Seen::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let options = WorkerOptions {
        shutdown_grace: Some(Duration::from_millis(800)),
        ..WorkerOptions::new("graceful", 4)
    };
    let worker = tokio::spawn(run_worker(
        Arc::clone(&queue),
        options,
        test_handler(Arc::clone(&seen)),
        async move {
            let _ = stopped.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.running.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the jobs never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = Instant::now();
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker stops after its grace period")
        .expect("worker task")
        .expect("worker result");
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "stopped after {took:?}"
    );
    assert_eq!(
        seen.runs_of(&quick.id),
        1,
        "the quick job finished in the grace period"
    );
    assert_eq!(
        seen.runs_of(&stuck.id),
        0,
        "the stuck job was dropped, not finished"
    );
    // The stuck job is back in the queue at once (long before its 30 s
    // lease), as a first delivery, for any other worker.
    let again = queue
        .fetch("another-worker", 10, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].job.id, stuck.id);
    assert_eq!(again[0].attempt, 1);
    queue.ack(&[again[0].receipt.clone()]).await.expect("ack");
    until_drained(queue.as_ref()).await;
    assert_eq!(queue.depth().await.expect("depth"), 0, "the quick job was acked");
}

async fn run_worker_acks_a_panicking_job_and_keeps_running(queue: Arc<dyn Queue>) {
    // More panics than slots: a panic must give its slot back too.
    let mut panics: Vec<Job> = (0..6)
        .map(|n| Job::new(JobKind::DeliverWebhook, json!({ "mode": "panic", "n": n })))
        .collect();
    panics.extend((0..3).map(|n| {
        Job::new(
            JobKind::DeliverWebhook,
            json!({ "mode": "panic_at_call", "n": n }),
        )
    }));
    queue.enqueue_many(&panics).await.expect("enqueue");
    let seen = Arc::new(Seen::default());
    let (stop, worker) = start_worker(&queue, "test-worker", 2, test_handler(Arc::clone(&seen)));
    let ids: Vec<String> = panics.iter().map(|j| j.id.clone()).collect();
    seen.until(Duration::from_secs(10), |runs| {
        ids.iter().all(|id| runs.contains_key(id))
    })
    .await;

    // The worker still takes jobs after the panics.
    let after = job(1);
    queue.enqueue(&after).await.expect("enqueue");
    seen.until(Duration::from_secs(5), |runs| runs.contains_key(&after.id))
        .await;
    until_drained(&*queue).await;
    assert_eq!(
        queue.depth().await.expect("depth"),
        0,
        "panicked jobs are acked, not left for redelivery"
    );
    // Nothing comes back after another lease.
    tokio::time::sleep(SHORT_LEASE + Duration::from_millis(500)).await;
    assert!(!worker.is_finished(), "a panic took the worker down");
    stop_worker(stop, worker).await;
    for id in &ids {
        assert_eq!(seen.runs_of(id), 1, "panicking job {id} ran again");
    }
    assert_eq!(seen.runs_of(&after.id), 1);
}

async fn run_worker_never_runs_more_jobs_at_once_than_its_concurrency(queue: Arc<dyn Queue>) {
    const CONCURRENCY: usize = 3;
    let jobs: Vec<Job> = (0..30)
        .map(|n| Job::new(JobKind::TestConnection, json!({ "n": n, "sleep_ms": 40 })))
        .collect();
    queue.enqueue_many(&jobs).await.expect("enqueue");
    let seen = Arc::new(Seen::default());
    let (stop, worker) = start_worker(
        &queue,
        "test-worker",
        CONCURRENCY,
        test_handler(Arc::clone(&seen)),
    );
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let started = Instant::now();
    seen.until(Duration::from_secs(15), |runs| {
        ids.iter().all(|id| runs.contains_key(id))
    })
    .await;
    let took = started.elapsed();
    stop_worker(stop, worker).await;
    let max = seen.max_running.load(Ordering::SeqCst);
    println!("30 jobs of 40 ms at concurrency {CONCURRENCY} took {took:?}; max concurrent {max}");
    assert_eq!(
        max, CONCURRENCY,
        "the worker ran {max} jobs at once with concurrency {CONCURRENCY}"
    );
    // 10 rounds of 40 ms at the least: the limit held the whole time.
    assert!(took >= Duration::from_millis(400), "30 jobs took only {took:?}");
    assert_eq!(queue.depth().await.expect("depth"), 0);
}

async fn run_worker_shutdown_never_strands_a_job_fetched_while_stopping(queue: Arc<dyn Queue>) {
    let seen = Arc::new(Seen::default());
    let (stop, worker) = start_worker(&queue, "test-worker", 1, test_handler(Arc::clone(&seen)));
    // The idle worker is blocked in a fetch; a job arrives as it stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = job(1);
    let _ = stop.send(());
    queue.enqueue(&late).await.expect("enqueue");
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the worker stops")
        .expect("worker task")
        .expect("worker result");
    if seen.runs_of(&late.id) == 1 {
        println!("the job ran before the stop took effect");
        assert_eq!(queue.depth().await.expect("depth"), 0);
        return;
    }
    // Not run: handed back, another consumer has it at once (the lease is 30 s).
    let started = Instant::now();
    let got = queue
        .fetch("another", 1, Duration::from_secs(2))
        .await
        .expect("fetch");
    println!(
        "the unstarted job was back for another consumer in {:?}",
        started.elapsed()
    );
    assert_eq!(got.len(), 1, "an unstarted job was kept until its lease ran out");
    assert_eq!(got[0].job, late);
    queue.ack(&[got[0].receipt.clone()]).await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_worker_waits_out_a_redis_outage_and_carries_on() {
    let mut server = PrivateRedis::start().await;
    let queue: Arc<dyn Queue> = Arc::new(
        RedisQueue::connect(&server.url(), "test-outage", SHORT_LEASE)
            .await
            .expect("private Redis"),
    );
    let seen = Arc::new(Seen::default());
    let (stop, worker) = start_worker(&queue, "test-worker", 4, test_handler(Arc::clone(&seen)));
    let before = job(1);
    queue.enqueue(&before).await.expect("enqueue");
    seen.until(Duration::from_secs(5), |runs| runs.contains_key(&before.id))
        .await;

    // Redis is down for two seconds, then back empty.
    server.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!worker.is_finished(), "the worker gave up during the outage");
    server.start_again().await;

    let after = job(2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.enqueue(&after).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "enqueue keeps failing after the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = Instant::now();
    seen.until(Duration::from_secs(10), |runs| runs.contains_key(&after.id))
        .await;
    println!(
        "first job after the outage ran {:?} after its enqueue",
        back.elapsed()
    );
    stop_worker(stop, worker).await;
}

// ---------------------------------------------------------------- benchmark

/// The queue benchmark (loadtests/queue/run.sh runs it in release mode):
/// drain rate of 20,000 no-op jobs by one worker at concurrency 50, and
/// pickup latency (enqueue call to handler start) at 200 jobs/s offered, for
/// both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run loadtests/queue/run.sh"]
async fn bench_queue_throughput_and_pickup() {
    const JOBS: usize = 20_000;
    const CONCURRENCY: usize = 50;
    const OFFERED_PER_SEC: u64 = 200;
    const PICKUP_JOBS: usize = 2_000;

    // FERRY_BENCH_REDIS_URL points the Redis half at another server.
    let redis_url =
        std::env::var("FERRY_BENCH_REDIS_URL").unwrap_or_else(|_| ferry_testkit::redis::URL.to_owned());
    for name in ["redis", "embedded"] {
        let backend = if name == "redis" {
            Backend::redis_at(&redis_url)
        } else {
            Backend::embedded()
        };
        let producer = backend.open(LONG_LEASE).await;
        let queue = backend.open(LONG_LEASE).await;

        // Drain: a backlog of JOBS no-op jobs.
        let jobs: Vec<Job> = (0..JOBS).map(job).collect();
        let started = Instant::now();
        producer.enqueue_many(&jobs).await.expect("enqueue");
        let enqueue_rate = JOBS as f64 / started.elapsed().as_secs_f64();
        let done = Arc::new(AtomicUsize::new(0));
        let all_done = Arc::new(Notify::new());
        let started = Instant::now();
        let (stop, worker) = {
            let done = Arc::clone(&done);
            let all_done = Arc::clone(&all_done);
            start_worker(&queue, "bench", CONCURRENCY, move |_job: Job| {
                let done = Arc::clone(&done);
                let all_done = Arc::clone(&all_done);
                async move {
                    if done.fetch_add(1, Ordering::Relaxed) + 1 == JOBS {
                        all_done.notify_one();
                    }
                    Ok(())
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(300), all_done.notified())
            .await
            .expect("the backlog drains");
        let drained = started.elapsed();
        let _ = stop.send(());
        worker.await.expect("worker task").expect("worker");
        let drain_rate = JOBS as f64 / drained.as_secs_f64();
        assert_eq!(queue.depth().await.expect("depth"), 0);

        // Pickup: an idle worker, jobs offered at a steady rate.
        let base = Instant::now();
        let pickups = Arc::new(Mutex::new(Vec::with_capacity(PICKUP_JOBS)));
        let picked = Arc::new(AtomicUsize::new(0));
        let all_picked = Arc::new(Notify::new());
        let (stop, worker) = {
            let pickups = Arc::clone(&pickups);
            let picked = Arc::clone(&picked);
            let all_picked = Arc::clone(&all_picked);
            start_worker(&queue, "bench", CONCURRENCY, move |job: Job| {
                let now = base.elapsed().as_micros() as u64;
                let sent = job.payload["sent_us"].as_u64().unwrap_or(now);
                pickups.lock().expect("lock").push(now.saturating_sub(sent));
                let picked = Arc::clone(&picked);
                let all_picked = Arc::clone(&all_picked);
                async move {
                    if picked.fetch_add(1, Ordering::Relaxed) + 1 == PICKUP_JOBS {
                        all_picked.notify_one();
                    }
                    Ok(())
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await; // the worker is idle and blocked
        // Baseline for the pickup: a bare round trip (PING / SELECT 1) at the
        // same rate, in the same process, at the same moment.
        let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / OFFERED_PER_SEC));
        let mut pings = Vec::with_capacity(PICKUP_JOBS / 2);
        for _ in 0..PICKUP_JOBS / 2 {
            ticks.tick().await;
            let sent = Instant::now();
            producer.ping().await.expect("ping");
            pings.push(sent.elapsed().as_micros() as u64);
        }
        pings.sort_unstable();
        let mut enqueue_calls = Vec::with_capacity(PICKUP_JOBS);
        for _ in 0..PICKUP_JOBS {
            ticks.tick().await;
            let sent = base.elapsed().as_micros() as u64;
            let job = Job::new(JobKind::TestConnection, json!({ "sent_us": sent }));
            producer.enqueue(&job).await.expect("enqueue");
            enqueue_calls.push(base.elapsed().as_micros() as u64 - sent);
        }
        enqueue_calls.sort_unstable();
        tokio::time::timeout(Duration::from_secs(60), all_picked.notified())
            .await
            .expect("all picked up");
        let _ = stop.send(());
        worker.await.expect("worker task").expect("worker");
        let mut pickups = pickups.lock().expect("lock").clone();
        pickups.sort_unstable();
        let pct = |sorted: &[u64], p: f64| {
            sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)] as f64 / 1000.0
        };
        println!(
            "BENCH queue={name} enqueue_many={enqueue_rate:.0} jobs/s drain({JOBS} jobs, 1 worker x {CONCURRENCY})={drain_rate:.0} jobs/s pickup@{OFFERED_PER_SEC}/s p50={:.2} ms p99={:.2} ms max={:.2} ms enqueue_call_p50={:.2} ms enqueue_call_p99={:.2} ms ping_p50={:.2} ms ping_p99={:.2} ms",
            pct(&pickups, 0.50),
            pct(&pickups, 0.99),
            pct(&pickups, 1.0),
            pct(&enqueue_calls, 0.50),
            pct(&enqueue_calls, 0.99),
            pct(&pings, 0.50),
            pct(&pings, 0.99),
        );
        backend.cleanup().await;
    }
}
