//! Integration tests of the scheduler role: leader election on a real Redis
//! (127.0.0.1:6379, a unique key prefix per test) and the lease reaper on a
//! SQLite store and an embedded queue in a temporary directory.
//!
//! Without Redis the election tests fail; they never skip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_scheduler::{LeaderElection, SchedulerContext, reap_once};
use ferry_shared::domain::{self, Execution, ExecutionStatus, NewProject, StepRun, StepRunStatus, Trigger};
use ferry_shared::ids::IdKind;
use ferry_shared::queue::{EmbeddedQueue, JobKind, Queue};
use ferry_shared::store::{SqliteStore, Store};
use serde_json::{Map, json};

const REDIS: &str = ferry_testkit::redis::URL;
const ORG: &str = "org_acme";
const ALICE: &str = "user_alice";

// ---------------------------------------------------------------- helpers

fn unique_prefix() -> String {
    ferry_testkit::redis::unique_prefix("ferry_test")
}

async fn candidate(prefix: &str, ttl: Duration) -> LeaderElection {
    LeaderElection::redis(REDIS, prefix, ttl)
        .await
        .expect("Redis must be running at 127.0.0.1:6379")
}

async fn lead(candidate: &LeaderElection) -> bool {
    candidate.try_lead().await.expect("try to lead")
}

/// A migrated SQLite store and an embedded queue in `dir`.
async fn backends(dir: &tempfile::TempDir) -> (Arc<dyn Store>, Arc<dyn Queue>) {
    let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
    let store = SqliteStore::connect(&url).await.expect("open the store");
    store.migrate().await.expect("migrate the store");
    let queue = EmbeddedQueue::open(&dir.path().join("queue.db"), Duration::from_secs(30))
        .await
        .expect("open the queue");
    (Arc::new(store), Arc::new(queue))
}

/// Creates a project and a queued execution of it, created at `created_at`.
async fn queued_execution(store: &Arc<dyn Store>, created_at: chrono::DateTime<chrono::Utc>) -> Execution {
    let project = NewProject {
        name: "reaped".to_owned(),
        description: None,
        connector_uuids: Vec::new(),
        metadata: None,
    }
    .into_project(ORG, ALICE);
    store.create_project(&project).await.expect("create project");
    let execution = Execution {
        execution_id: IdKind::Execution.generate(),
        project_uuid: project.uuid.clone(),
        org_id: ORG.to_owned(),
        status: ExecutionStatus::Queued,
        trigger: Trigger::Api,
        parameters: Map::new(),
        notify_on_completion: false,
        created_by: ALICE.to_owned(),
        created_at,
        started_at: None,
        completed_at: None,
        attempt: 0,
        lease_owner: None,
        lease_expires_at: None,
        steps: vec![StepRun {
            step_id: IdKind::Step.generate(),
            position: 1,
            name: "extract".to_owned(),
            step_type: "sql".to_owned(),
            config: json!({"query": "select 1"}),
            status: StepRunStatus::Pending,
            started_at: None,
            completed_at: None,
            rows_processed: 0,
            bytes_written: 0,
            output_file: None,
            open_upload: None,
            attempts: 0,
            waiting_reason: None,
            error: None,
        }],
    };
    store
        .create_execution(&execution)
        .await
        .expect("create execution");
    execution
}

/// A queued execution taken by a worker with a lease of `lease_for`.
async fn claimed_execution(store: &Arc<dyn Store>, lease_for: Duration) -> Execution {
    let execution = queued_execution(store, domain::now()).await;
    store
        .claim_execution(&execution.execution_id, "worker_a", lease_for)
        .await
        .expect("claim")
        .expect("a queued execution is claimed");
    execution
}

/// The value of an unlabelled metric in the text exposition, if present.
fn metric(registry: &prometheus::Registry, name: &str) -> Option<f64> {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encode metrics");
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
}

/// Polls `condition` every 20 ms for up to `limit`.
async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- leader election

#[tokio::test]
async fn exactly_one_of_two_redis_candidates_leads_and_keeps_leading_while_it_renews() {
    let prefix = unique_prefix();
    let (a, b) = (
        candidate(&prefix, Duration::from_secs(5)).await,
        candidate(&prefix, Duration::from_secs(5)).await,
    );
    assert_ne!(a.identity(), b.identity());

    let (a_leads, b_leads) = tokio::join!(a.try_lead(), b.try_lead());
    let (a_leads, b_leads) = (a_leads.expect("try a"), b_leads.expect("try b"));
    assert!(a_leads ^ b_leads, "exactly one leads: a {a_leads}, b {b_leads}");
    let (leader, standby) = if a_leads { (&a, &b) } else { (&b, &a) };
    assert!(leader.is_leader());
    assert!(!standby.is_leader());

    for _ in 0..3 {
        assert!(lead(leader).await, "the leader renews");
        assert!(!lead(standby).await, "the standby stays a standby");
    }
    leader.release().await.expect("release");
}

#[tokio::test]
async fn when_the_leader_releases_the_standby_takes_over_at_its_next_try() {
    let prefix = unique_prefix();
    let (a, b) = (
        candidate(&prefix, Duration::from_secs(30)).await,
        candidate(&prefix, Duration::from_secs(30)).await,
    );
    assert!(lead(&a).await);
    assert!(!lead(&b).await);

    a.release().await.expect("release");
    assert!(!a.is_leader(), "released means not leading");
    assert!(lead(&b).await, "the standby takes over long before the 30 s TTL");
    assert!(!lead(&a).await, "and the former leader is now a standby");

    // Releasing what another candidate holds leaves it alone.
    a.release().await.expect("release");
    assert!(lead(&b).await);
    b.release().await.expect("release");
}

#[tokio::test]
async fn when_the_leader_stops_renewing_the_standby_takes_over_within_the_ttl() {
    let ttl = Duration::from_secs(1);
    let prefix = unique_prefix();
    let (a, b) = (candidate(&prefix, ttl).await, candidate(&prefix, ttl).await);
    let taken = Instant::now();
    assert!(lead(&a).await);
    assert!(!lead(&b).await);

    // a stops renewing (as a paused or partitioned process would).
    let took_over = eventually(ttl + Duration::from_millis(500), async || lead(&b).await).await;
    let elapsed = taken.elapsed();
    assert!(
        took_over,
        "the standby took over within the TTL (after {elapsed:?})"
    );
    assert!(
        elapsed >= ttl - Duration::from_millis(50),
        "not before the lock expired ({elapsed:?})"
    );
    assert!(
        !a.is_leader(),
        "the old leader's belief ended before the lock expired"
    );
    assert!(!lead(&a).await, "the old leader cannot take the lock back");
    b.release().await.expect("release");
}

#[tokio::test]
async fn a_leader_that_loses_the_lock_stops_its_pass_in_progress_at_once() {
    // Lost on a renewal that finds the lock taken: the pass in progress
    // (here one that never ends) is dropped as the renewal answers.
    let prefix = unique_prefix();
    let (a, b) = (
        candidate(&prefix, Duration::from_secs(30)).await,
        candidate(&prefix, Duration::from_secs(30)).await,
    );
    assert!(lead(&a).await);
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    struct Dropped(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let pass = {
        let guard = Dropped(dropped.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }
    };
    let running = a.while_leading(pass);
    let stolen = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Another candidate holds the lock now (as after a partition).
        let mut conn = redis::Client::open(REDIS)
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let _: () = redis::cmd("DEL")
            .arg(format!("{prefix}:scheduler:leader"))
            .query_async(&mut conn)
            .await
            .expect("DEL");
        assert!(lead(&b).await);
        let lost_at = Instant::now();
        assert!(!lead(&a).await, "the renewal finds the lock taken");
        lost_at
    };
    let (outcome, lost_at) =
        tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(running, stolen) })
            .await
            .expect("the pass stopped");
    assert_eq!(outcome, None, "the pass did not complete");
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    assert!(lost_at.elapsed() < Duration::from_millis(500));

    // Lost by its deadline, with no renewal at all (Redis unreachable):
    // the pass stops when the belief lapses, before the lock can expire.
    let ttl = Duration::from_secs(1);
    let c = candidate(&unique_prefix(), ttl).await;
    let started = Instant::now();
    assert!(lead(&c).await);
    let outcome = c.while_leading(std::future::pending::<()>()).await;
    assert_eq!(outcome, None);
    let lasted = started.elapsed();
    assert!(
        lasted >= ttl - ttl / 10 - Duration::from_millis(50) && lasted < ttl,
        "stopped after {lasted:?}"
    );
    // The single-process election never loses.
    let single = LeaderElection::single_process();
    let outcome = tokio::time::timeout(Duration::from_millis(200), single.while_leading(async { 7 }))
        .await
        .expect("completes");
    assert_eq!(outcome, Some(7));
    b.release().await.expect("release");
}

#[tokio::test]
async fn a_redis_candidate_with_a_too_short_ttl_an_empty_prefix_or_a_bad_url_is_refused() {
    for (url, prefix, ttl) in [
        (REDIS, "ferry_test", Duration::from_millis(100)),
        (REDIS, "", Duration::from_secs(5)),
        ("not a url", "ferry_test", Duration::from_secs(5)),
    ] {
        assert!(
            LeaderElection::redis(url, prefix, ttl).await.is_err(),
            "{url} {prefix:?} {ttl:?}"
        );
    }
}

#[tokio::test]
async fn the_single_process_election_always_leads() {
    let single = LeaderElection::single_process();
    assert!(single.is_leader());
    assert!(lead(&single).await);
    single.release().await.expect("release");
    assert!(single.is_leader(), "the only process leads even after a release");
}

// ---------------------------------------------------------------- reaper

#[tokio::test]
async fn the_reaper_enqueues_an_execution_with_an_expired_lease_and_not_one_with_a_live_lease() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let (store, queue) = backends(&dir).await;
    let expired = claimed_execution(&store, Duration::from_secs(1)).await;
    let live = claimed_execution(&store, Duration::from_secs(60)).await;
    let fresh = queued_execution(&store, domain::now()).await;
    let stale = queued_execution(&store, domain::now() - chrono::Duration::minutes(10)).await;
    let finished = claimed_execution(&store, Duration::from_secs(1)).await;
    let lease = store
        .claim_execution(&finished.execution_id, "worker_b", Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(lease, None, "the lease is still live");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let lease = store
        .claim_execution(&finished.execution_id, "worker_b", Duration::from_secs(60))
        .await
        .expect("claim")
        .expect("taken over");
    assert!(
        store
            .finish_execution(&lease, ExecutionStatus::Completed)
            .await
            .expect("finish")
    );

    let reaped = reap_once(store.as_ref(), queue.as_ref(), Duration::from_secs(60))
        .await
        .expect("reap");
    assert_eq!((reaped.found, reaped.enqueued), (2, 2));
    let again = reap_once(store.as_ref(), queue.as_ref(), Duration::from_secs(60))
        .await
        .expect("reap");
    assert_eq!(
        (again.found, again.enqueued),
        (2, 0),
        "pending jobs are not duplicated"
    );
    assert_eq!(queue.depth().await.expect("depth"), 2);

    let deliveries = queue
        .fetch("test", 10, Duration::from_millis(100))
        .await
        .expect("fetch");
    let mut ids: Vec<String> = deliveries
        .iter()
        .map(|delivery| {
            assert_eq!(delivery.job.kind, JobKind::ExecuteProject);
            assert_eq!(delivery.job.payload, json!({"execution_id": delivery.job.id}));
            delivery.job.id.clone()
        })
        .collect();
    ids.sort();
    let mut expected = vec![expired.execution_id, stale.execution_id];
    expected.sort();
    assert_eq!(ids, expected);
    for untouched in [&live, &fresh, &finished] {
        assert!(!ids.contains(&untouched.execution_id));
    }
}

#[tokio::test]
async fn the_scheduler_reaps_while_leading_and_releases_the_lock_on_shutdown() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let (store, queue) = backends(&dir).await;
    let expired = claimed_execution(&store, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let prefix = unique_prefix();
    let ttl = Duration::from_secs(30);
    let registry = prometheus::Registry::new();
    let mut context = SchedulerContext::new(
        store.clone(),
        registry.clone(),
        queue.clone(),
        candidate(&prefix, ttl).await,
    );
    context.reap_interval = Duration::from_millis(100);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(ferry_scheduler::run_with(context, async {
        let _ = stopped.await;
    }));

    let enqueued = eventually(Duration::from_secs(10), async || {
        queue.depth().await.expect("depth") == 1
    })
    .await;
    assert!(enqueued, "the leader reaped the execution with an expired lease");
    assert_eq!(metric(&registry, "ferry_scheduler_is_leader"), Some(1.0));
    assert_eq!(metric(&registry, "ferry_scheduler_reaped_total"), Some(1.0));
    let standby = candidate(&prefix, ttl).await;
    assert!(!lead(&standby).await, "the running scheduler holds the lock");
    let deliveries = queue
        .fetch("test", 10, Duration::from_millis(100))
        .await
        .expect("fetch");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].job.id, expired.execution_id);

    stop.send(()).expect("the scheduler is running");
    tokio::time::timeout(Duration::from_secs(10), scheduler)
        .await
        .expect("the scheduler stops promptly")
        .expect("the scheduler task")
        .expect("the scheduler ends cleanly");
    assert_eq!(metric(&registry, "ferry_scheduler_is_leader"), Some(0.0));
    assert!(
        lead(&standby).await,
        "the lock was released on shutdown, long before its TTL"
    );
    standby.release().await.expect("release");
}

#[tokio::test]
async fn a_standby_scheduler_does_not_reap() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let (store, queue) = backends(&dir).await;
    claimed_execution(&store, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let prefix = unique_prefix();
    let ttl = Duration::from_secs(30);
    let leader = candidate(&prefix, ttl).await;
    assert!(lead(&leader).await);

    let registry = prometheus::Registry::new();
    let mut context = SchedulerContext::new(
        store,
        registry.clone(),
        queue.clone(),
        candidate(&prefix, ttl).await,
    );
    context.reap_interval = Duration::from_millis(50);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(ferry_scheduler::run_with(context, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(queue.depth().await.expect("depth"), 0, "only the leader reaps");
    assert_eq!(metric(&registry, "ferry_scheduler_is_leader"), Some(0.0));

    stop.send(()).expect("the scheduler is running");
    scheduler
        .await
        .expect("the scheduler task")
        .expect("the scheduler ends cleanly");
    assert!(
        lead(&leader).await,
        "a standby's shutdown leaves the leader's lock alone"
    );
    leader.release().await.expect("release");
}

/// The scheduler of `ferry up`: built from its flags and the process's
/// embedded settings, it leads without Redis and reaps at the configured
/// interval, then stops cleanly.
#[tokio::test]
async fn the_scheduler_run_from_its_config_in_one_process_leads_without_redis_and_reaps() {
    use clap::Parser;
    use ferry_shared::backends::Backends;
    use ferry_shared::config::{CommonArgs, Mode, Settings};

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        scheduler: ferry_scheduler::Args,
    }

    let dir = tempfile::TempDir::new().expect("temporary directory");
    let data_dir = dir.path().display().to_string();
    let flags = Flags::parse_from([
        "ferry",
        "--data-dir",
        &data_dir,
        "--reap-interval-seconds",
        "1",
        "--queued-grace-seconds",
        "3600",
    ]);
    let settings = Settings::resolve(&flags.common, Mode::Embedded).expect("embedded settings");
    let backends = Backends::open(&settings, true).await.expect("open the backends");
    backends.store.migrate().await.expect("migrate the store");
    let expired = claimed_execution(&backends.store, Duration::from_millis(200)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let registry = prometheus::Registry::new();
    let config = ferry_scheduler::Config {
        args: flags.scheduler,
        settings,
        backends: backends.clone(),
        registry: registry.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(ferry_scheduler::run(config, async {
        let _ = stopped.await;
    }));

    let queue = backends.queue.clone();
    let enqueued = eventually(Duration::from_secs(10), async || {
        queue.depth().await.expect("depth") == 1
    })
    .await;
    assert!(enqueued, "the scheduler reaped the execution whose lease expired");
    assert_eq!(metric(&registry, "ferry_scheduler_is_leader"), Some(1.0));
    let deliveries = queue
        .fetch("test", 10, Duration::from_millis(100))
        .await
        .expect("fetch");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].job.id, expired.execution_id);

    stop.send(()).expect("the scheduler is running");
    tokio::time::timeout(Duration::from_secs(10), scheduler)
        .await
        .expect("the scheduler stops promptly")
        .expect("the scheduler task")
        .expect("the scheduler ends cleanly");
}

mod schedules;

/// The queue as the leader publishes it: its waiting jobs and the age of
/// the oldest, once per process (a standby exports zeros).
#[tokio::test]
async fn the_leader_publishes_the_queue_and_a_standby_exports_zeros() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let (store, queue) = backends(&dir).await;
    for n in 0..3 {
        let mut job = ferry_shared::queue::Job::new(JobKind::TestConnection, json!({ "n": n }));
        job.enqueued_at_ms -= 120_000;
        queue.enqueue(&job).await.expect("enqueue");
    }
    let prefix = unique_prefix();
    let ttl = Duration::from_secs(30);
    let start = |leader: LeaderElection| {
        let registry = prometheus::Registry::new();
        let mut context = SchedulerContext::new(store.clone(), registry.clone(), queue.clone(), leader);
        context.reap_interval = Duration::from_millis(50);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ferry_scheduler::run_with(context, async {
            let _ = stopped.await;
        }));
        (registry, stop, task)
    };
    let (leading, stop_leader, leader_task) = start(candidate(&prefix, ttl).await);
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric(&leading, "ferry_queue_jobs{state=\"waiting\"}") == Some(3.0)
        })
        .await,
        "the leader publishes the 3 waiting jobs"
    );
    let (standby, stop_standby, standby_task) = start(candidate(&prefix, ttl).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(metric(&leading, "ferry_scheduler_is_leader"), Some(1.0));
    assert_eq!(
        metric(&leading, "ferry_queue_jobs{state=\"in_flight\"}"),
        Some(0.0)
    );
    let age = metric(&leading, "ferry_queue_oldest_waiting_age_seconds").expect("an age");
    assert!((120.0..130.0).contains(&age), "the oldest waited {age} s");
    assert_eq!(metric(&standby, "ferry_scheduler_is_leader"), Some(0.0));
    assert_eq!(metric(&standby, "ferry_queue_jobs{state=\"waiting\"}"), Some(0.0));
    assert_eq!(
        metric(&standby, "ferry_queue_oldest_waiting_age_seconds"),
        Some(0.0)
    );
    assert_eq!(metric(&leading, "ferry_queue_stats_errors_total"), Some(0.0));

    for (stop, task) in [(stop_standby, standby_task), (stop_leader, leader_task)] {
        stop.send(()).expect("the scheduler is running");
        task.await
            .expect("the scheduler task")
            .expect("the scheduler ends cleanly");
    }
}
