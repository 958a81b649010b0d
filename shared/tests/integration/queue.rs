//! Queue conformance suite: every test is written once, as an
//! `async fn(Arc<dyn Queue>)` (or over a [`Harness`] when it restarts the
//! backend), and run against Redis Streams (`queue::redis::<name>`, a unique
//! key prefix on the shared Redis, or a private `redis-server` when the test
//! restarts it) and the embedded SQLite queue (`queue::embedded::<name>`, a
//! file in a temporary directory). The bus tests run the same way against
//! `RedisBus` and `LocalBus`.
//!
//! Redis must be running at 127.0.0.1:6379 and `redis-server` must be on the
//! PATH: without them the Redis tests fail, they never skip.
//!
//! The job runtime that drives a queue (`run_worker`) is the worker's, and
//! so are its tests and the queue benchmark: `ferry-worker`'s
//! `tests/worker/runtime.rs`.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_shared::queue::{Bus, Delivery, Job, JobKind, LocalBus, Queue, RedisBus, RedisQueue};
use ferry_testkit::queue::{Harness, Storage, with_harness, with_queue};
use ferry_testkit::redis::PrivateRedis;
use futures::StreamExt;
use serde_json::json;

/// For tests that want redelivery to happen within the test.
const SHORT_LEASE: Duration = Duration::from_secs(1);
/// For tests where nothing must be redelivered.
const LONG_LEASE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- harness

/// Instantiates each queue test for both backends, as
/// `queue::redis::<name>` and `queue::embedded::<name>`.
macro_rules! queue_conformance {
    ($($test:ident($lease:expr)),+ $(,)?) => {
        mod redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    with_queue(Harness::redis(), $lease, super::$test).await;
                }
            )+
        }

        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    with_queue(Harness::embedded(), $lease, super::$test).await;
                }
            )+
        }
    };
}

/// Instantiates each test that opens or restarts the backend itself:
/// `queue::redis_server::<name>` on a private Redis server and
/// `queue::embedded_file::<name>`.
macro_rules! harness_conformance {
    ($($test:ident),+ $(,)?) => {
        mod redis_server {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    with_harness(Harness::private_redis().await, super::$test).await;
                }
            )+
        }

        mod embedded_file {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    with_harness(Harness::embedded(), super::$test).await;
                }
            )+
        }
    };
}

queue_conformance!(
    enqueue_fetch_ack_round_trip_delivers_the_job_once(LONG_LEASE),
    a_waiting_fetch_wakes_within_200ms_of_an_enqueue(LONG_LEASE),
    an_idle_fetch_returns_empty_after_its_wait(LONG_LEASE),
    ack_removes_jobs_for_good(LONG_LEASE),
    an_unacked_delivery_is_redelivered_after_the_lease_with_the_next_attempt(SHORT_LEASE),
    touch_keeps_a_delivery_from_being_reclaimed(SHORT_LEASE),
    release_hands_a_delivery_back_at_once(LONG_LEASE),
    a_duplicate_enqueue_is_a_no_op_while_the_job_is_pending(LONG_LEASE),
    a_backlog_of_100k_jobs_drains_with_each_id_exactly_once(LONG_LEASE),
    stats_count_waiting_and_in_flight_jobs_and_age_the_oldest_waiting_one(LONG_LEASE),
);

harness_conformance!(
    a_restarted_backend_keeps_delivering_without_a_new_queue_object,
    a_fetch_wakes_on_an_enqueue_through_another_queue_object,
);

// ---------------------------------------------------------------- helpers

fn job(n: usize) -> Job {
    Job::new(JobKind::TestConnection, json!({ "n": n }))
}

/// Fetches until `count` deliveries arrived or `within` ran out.
async fn collect(queue: &dyn Queue, consumer: &str, count: usize, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        got.extend(
            queue
                .fetch(consumer, count - got.len(), left)
                .await
                .expect("fetch"),
        );
    }
    got
}

fn receipts(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.receipt.clone()).collect()
}

// ---------------------------------------------------------------- queue tests

async fn stats_count_waiting_and_in_flight_jobs_and_age_the_oldest_waiting_one(queue: Arc<dyn Queue>) {
    let empty = queue.stats().await.expect("stats");
    assert_eq!(
        (empty.waiting, empty.in_flight, empty.oldest_waiting_ms),
        (0, 0, None)
    );
    // Three jobs, the first stamped a minute ago.
    let mut old = job(0);
    old.enqueued_at_ms -= 60_000;
    assert!(queue.enqueue(&old).await.expect("enqueue"));
    assert!(queue.enqueue(&job(1)).await.expect("enqueue"));
    assert!(queue.enqueue(&job(2)).await.expect("enqueue"));
    let stats = queue.stats().await.expect("stats");
    assert_eq!((stats.waiting, stats.in_flight), (3, 0));
    let age = stats.oldest_waiting_ms.expect("an age");
    assert!((60_000..70_000).contains(&age), "oldest waiting for {age} ms");
    // The old one is taken: the oldest waiting is now seconds old at most.
    let taken = collect(queue.as_ref(), "consumer-a", 1, Duration::from_secs(2)).await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].job.id, old.id);
    let stats = queue.stats().await.expect("stats");
    assert_eq!((stats.waiting, stats.in_flight), (2, 1));
    assert!(stats.oldest_waiting_ms.expect("an age") < 10_000, "{stats:?}");
    // Handed back, it waits again; acked, it is gone.
    queue
        .release("consumer-a", &receipts(&taken))
        .await
        .expect("release");
    let stats = queue.stats().await.expect("stats");
    assert_eq!((stats.waiting, stats.in_flight), (3, 0));
    let all = collect(queue.as_ref(), "consumer-a", 3, Duration::from_secs(2)).await;
    queue.ack(&receipts(&all)).await.expect("ack");
    let stats = queue.stats().await.expect("stats");
    assert_eq!(
        (stats.waiting, stats.in_flight, stats.oldest_waiting_ms),
        (0, 0, None)
    );
}

async fn enqueue_fetch_ack_round_trip_delivers_the_job_once(queue: Arc<dyn Queue>) {
    queue.ping().await.expect("ping");
    let job = Job::new(
        JobKind::TestConnection,
        json!({ "connector_uuid": "c-1", "nested": { "a": [1, 2] } }),
    );
    assert!(queue.enqueue(&job).await.expect("enqueue"));
    assert_eq!(queue.depth().await.expect("depth"), 1);

    let deliveries = queue
        .fetch("consumer-a", 10, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].job, job);
    assert_eq!(deliveries[0].attempt, 1);
    assert_eq!(queue.depth().await.expect("depth"), 1, "in flight still counts");

    queue.ack(&receipts(&deliveries)).await.expect("ack");
    assert_eq!(queue.depth().await.expect("depth"), 0);
    let again = queue
        .fetch("consumer-a", 10, Duration::from_millis(200))
        .await
        .expect("fetch");
    assert!(again.is_empty(), "acked job delivered again: {again:?}");
}

async fn a_waiting_fetch_wakes_within_200ms_of_an_enqueue(queue: Arc<dyn Queue>) {
    let mut pickups = Vec::new();
    for round in 0..5 {
        let fetcher = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                let deliveries = queue
                    .fetch("waiter", 1, Duration::from_secs(5))
                    .await
                    .expect("fetch");
                (deliveries, Instant::now())
            })
        };
        // Let the fetcher block first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        assert!(queue.enqueue(&job(round)).await.expect("enqueue"));
        let (deliveries, received) = fetcher.await.expect("fetcher");
        assert_eq!(deliveries.len(), 1);
        queue.ack(&receipts(&deliveries)).await.expect("ack");
        pickups.push(received.duration_since(sent));
    }
    println!("pickup of a blocked fetch after enqueue: {pickups:?}");
    let slowest = pickups.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(200),
        "a waiting fetch took {slowest:?} to see a new job"
    );
}

async fn an_idle_fetch_returns_empty_after_its_wait(queue: Arc<dyn Queue>) {
    let started = Instant::now();
    let deliveries = queue
        .fetch("idle", 5, Duration::from_millis(400))
        .await
        .expect("fetch");
    let waited = started.elapsed();
    assert!(deliveries.is_empty());
    assert!(
        waited >= Duration::from_millis(390),
        "returned early after {waited:?}"
    );
    assert!(waited < Duration::from_secs(2), "overslept: {waited:?}");

    let started = Instant::now();
    let deliveries = queue.fetch("idle", 5, Duration::ZERO).await.expect("fetch");
    assert!(deliveries.is_empty());
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a zero wait blocked"
    );
}

async fn ack_removes_jobs_for_good(queue: Arc<dyn Queue>) {
    for n in 0..3 {
        assert!(queue.enqueue(&job(n)).await.expect("enqueue"));
    }
    let deliveries = collect(&*queue, "acker", 3, Duration::from_secs(3)).await;
    assert_eq!(deliveries.len(), 3);
    let ns: Vec<u64> = deliveries
        .iter()
        .map(|d| d.job.payload["n"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(ns, vec![0, 1, 2], "jobs come in enqueue order");

    queue.ack(&receipts(&deliveries[..2])).await.expect("ack two");
    assert_eq!(queue.depth().await.expect("depth"), 1);
    queue
        .ack(&receipts(&deliveries[2..]))
        .await
        .expect("ack the last");
    assert_eq!(queue.depth().await.expect("depth"), 0);
    // Acking again, or acking nothing, is harmless.
    queue.ack(&receipts(&deliveries)).await.expect("ack again");
    queue.ack(&[]).await.expect("ack nothing");
    let again = queue
        .fetch("acker", 10, Duration::from_millis(300))
        .await
        .expect("fetch");
    assert!(again.is_empty(), "acked jobs delivered again: {again:?}");
}

async fn an_unacked_delivery_is_redelivered_after_the_lease_with_the_next_attempt(queue: Arc<dyn Queue>) {
    let job = job(1);
    queue.enqueue(&job).await.expect("enqueue");
    let first = queue
        .fetch("dies", 1, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    let taken = Instant::now();

    // "dies" never acks nor touches: another consumer gets the job once the
    // lease (1 s) has run out.
    let second = queue
        .fetch("survivor", 1, Duration::from_secs(5))
        .await
        .expect("fetch");
    let after = taken.elapsed();
    println!("redelivered after {after:?} (lease {SHORT_LEASE:?})");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].job, job);
    assert_eq!(second[0].attempt, 2);
    assert!(
        after >= Duration::from_millis(900),
        "redelivered before the lease ran out: {after:?}"
    );
    assert!(after < Duration::from_secs(3), "redelivery took {after:?}");

    queue.ack(&receipts(&second)).await.expect("ack");
    assert_eq!(queue.depth().await.expect("depth"), 0);
    // The late ack of the dead consumer is harmless.
    queue.ack(&receipts(&first)).await.expect("late ack");
}

async fn touch_keeps_a_delivery_from_being_reclaimed(queue: Arc<dyn Queue>) {
    queue.enqueue(&job(1)).await.expect("enqueue");
    let held = queue
        .fetch("holder", 1, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(held.len(), 1);

    let toucher = {
        let queue = Arc::clone(&queue);
        let held = receipts(&held);
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_millis(2500);
            while Instant::now() < until {
                queue.touch("holder", &held).await.expect("touch");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    // Another consumer's touch does not steal it.
    queue
        .touch("thief", &receipts(&held))
        .await
        .expect("touch by another consumer");
    let stolen = queue
        .fetch("other", 1, Duration::from_millis(2200))
        .await
        .expect("fetch");
    assert!(stolen.is_empty(), "a touched delivery was reclaimed: {stolen:?}");
    toucher.await.expect("toucher");

    // Without touches it is reclaimed after the lease.
    let reclaimed = queue
        .fetch("other", 1, Duration::from_secs(5))
        .await
        .expect("fetch");
    assert_eq!(reclaimed.len(), 1);
    assert_eq!(reclaimed[0].attempt, 2);
    queue.ack(&receipts(&reclaimed)).await.expect("ack");
    assert_eq!(queue.depth().await.expect("depth"), 0);
}

async fn release_hands_a_delivery_back_at_once(queue: Arc<dyn Queue>) {
    queue.enqueue(&job(1)).await.expect("enqueue");
    let held = queue
        .fetch("stopping", 1, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(held.len(), 1);
    queue
        .release("stopping", &receipts(&held))
        .await
        .expect("release");
    let started = Instant::now();
    let again = queue
        .fetch("next", 1, Duration::from_secs(5))
        .await
        .expect("fetch");
    assert_eq!(again.len(), 1, "the released job is not delivered");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "release waited for the lease"
    );
    assert_eq!(again[0].job, held[0].job);
    assert_eq!(
        again[0].attempt, 1,
        "an unstarted delivery does not count as an attempt"
    );
    queue.ack(&receipts(&again)).await.expect("ack");
    assert_eq!(queue.depth().await.expect("depth"), 0);
}

async fn a_duplicate_enqueue_is_a_no_op_while_the_job_is_pending(queue: Arc<dyn Queue>) {
    let job = Job::with_id(
        "dedupe-1",
        JobKind::ExecuteProject,
        json!({ "project_uuid": "p-1" }),
    );
    assert!(queue.enqueue(&job).await.expect("enqueue"));
    assert!(
        !queue.enqueue(&job).await.expect("enqueue twice"),
        "a pending id was enqueued twice"
    );
    assert_eq!(
        queue
            .enqueue_many(&[job.clone(), job.clone()])
            .await
            .expect("enqueue many"),
        0
    );
    assert_eq!(queue.depth().await.expect("depth"), 1);

    let deliveries = queue
        .fetch("dedupe", 10, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(deliveries.len(), 1);
    assert!(
        !queue.enqueue(&job).await.expect("enqueue in flight"),
        "an in-flight id was enqueued again"
    );
    queue.ack(&receipts(&deliveries)).await.expect("ack");
    let again = queue
        .fetch("dedupe", 10, Duration::from_millis(300))
        .await
        .expect("fetch");
    assert!(again.is_empty(), "the duplicate was delivered: {again:?}");

    // Once acked, the id may be enqueued again (a new piece of work).
    assert!(queue.enqueue(&job).await.expect("enqueue after ack"));
    let deliveries = queue
        .fetch("dedupe", 10, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].attempt, 1);
    queue.ack(&receipts(&deliveries)).await.expect("ack");
}

async fn a_backlog_of_100k_jobs_drains_with_each_id_exactly_once(queue: Arc<dyn Queue>) {
    const JOBS: usize = 100_000;
    let jobs: Vec<Job> = (0..JOBS).map(job).collect();
    let started = Instant::now();
    for chunk in jobs.chunks(10_000) {
        assert_eq!(
            queue.enqueue_many(chunk).await.expect("enqueue many"),
            chunk.len() as u64
        );
    }
    let enqueued = started.elapsed();
    assert_eq!(queue.depth().await.expect("depth"), JOBS as u64);

    let started = Instant::now();
    let mut seen = HashSet::with_capacity(JOBS);
    while seen.len() < JOBS {
        let deliveries = queue
            .fetch("drain", 1000, Duration::from_secs(2))
            .await
            .expect("fetch");
        assert!(
            !deliveries.is_empty(),
            "the backlog stalled with {} of {JOBS} delivered",
            seen.len()
        );
        for delivery in &deliveries {
            assert!(
                seen.insert(delivery.job.id.clone()),
                "{} delivered twice",
                delivery.job.id
            );
            assert_eq!(delivery.attempt, 1);
        }
        queue.ack(&receipts(&deliveries)).await.expect("ack");
    }
    let drained = started.elapsed();
    println!(
        "100k backlog: enqueued in {enqueued:?} ({:.0} jobs/s), drained in {drained:?} ({:.0} jobs/s)",
        JOBS as f64 / enqueued.as_secs_f64(),
        JOBS as f64 / drained.as_secs_f64()
    );
    assert!(jobs.iter().all(|job| seen.contains(&job.id)));
    assert_eq!(queue.depth().await.expect("depth"), 0);
    assert!(
        queue
            .fetch("drain", 10, Duration::from_millis(200))
            .await
            .expect("fetch")
            .is_empty()
    );
}

// ---------------------------------------------------------------- restart

async fn a_restarted_backend_keeps_delivering_without_a_new_queue_object(mut harness: Harness) {
    let mut queue = harness.open(SHORT_LEASE).await;
    let before: Vec<Job> = (0..3).map(job).collect();
    queue.enqueue_many(&before).await.expect("enqueue");
    let leased = queue
        .fetch("dies", 1, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(leased.len(), 1);

    harness.restart().await;
    if harness.durable() {
        // The embedded queue is a file: drop the queue and open it again.
        drop(queue);
        queue = harness.open(SHORT_LEASE).await;
        let started = Instant::now();
        let deliveries = collect(&*queue, "after", 3, Duration::from_secs(5)).await;
        println!(
            "after reopening: {} jobs back in {:?}",
            deliveries.len(),
            started.elapsed()
        );
        let ids: HashSet<&str> = deliveries.iter().map(|d| d.job.id.as_str()).collect();
        let want: HashSet<&str> = before.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, want, "pending and leased jobs survive the restart");
        let reclaimed = deliveries
            .iter()
            .find(|d| d.job.id == leased[0].job.id)
            .expect("the leased job");
        assert_eq!(reclaimed.attempt, 2);
        queue.ack(&receipts(&deliveries)).await.expect("ack");
    } else {
        // Redis came back empty (no persistence): the same queue object
        // re-creates its group and keeps working.
        let started = Instant::now();
        assert_eq!(queue.depth().await.expect("depth after restart"), 0);
        println!(
            "first command after the Redis restart answered in {:?}",
            started.elapsed()
        );
    }

    let after = job(10);
    assert!(queue.enqueue(&after).await.expect("enqueue after restart"));
    let deliveries = queue
        .fetch("after", 10, Duration::from_secs(5))
        .await
        .expect("fetch after restart");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].job, after);
    queue.ack(&receipts(&deliveries)).await.expect("ack");
    assert_eq!(queue.depth().await.expect("depth"), 0);

    if harness.durable() {
        return;
    }
    // A fetch blocked across a Redis restart recovers too.
    let fetcher = {
        let queue = Arc::clone(&queue);
        tokio::spawn(async move { collect(&*queue, "across", 1, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    harness.restart().await;
    let across = job(11);
    let deadline = Instant::now() + Duration::from_secs(5);
    while queue.enqueue(&across).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "enqueue keeps failing after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = fetcher.await.expect("fetcher");
    assert_eq!(
        got.len(),
        1,
        "a fetch waiting across the restart gets the new job"
    );
    assert_eq!(got[0].job, across);
    queue.ack(&receipts(&got)).await.expect("ack");
}

async fn a_fetch_wakes_on_an_enqueue_through_another_queue_object(harness: Harness) {
    // As in production: the API enqueues through its own queue object.
    let producer = harness.open(LONG_LEASE).await;
    let consumer = harness.open(LONG_LEASE).await;
    let fetcher = tokio::spawn(async move {
        let deliveries = consumer
            .fetch("worker", 1, Duration::from_secs(5))
            .await
            .expect("fetch");
        (deliveries, Instant::now(), consumer)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    producer.enqueue(&job(1)).await.expect("enqueue");
    let (deliveries, received, consumer) = fetcher.await.expect("fetcher");
    let took = received.duration_since(sent);
    assert_eq!(deliveries.len(), 1);
    assert!(
        took < Duration::from_millis(200),
        "the other object's fetch took {took:?}"
    );
    consumer.ack(&receipts(&deliveries)).await.expect("ack");
}

// ---------------------------------------------------------------- Redis only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_queue_forgets_dead_consumers_that_hold_nothing() {
    let harness = Harness::redis();
    let Storage::Redis { url, prefix, .. } = &harness.storage else {
        unreachable!()
    };
    let queue = RedisQueue::connect(url, prefix, LONG_LEASE).await.expect("Redis");
    queue.enqueue(&job(1)).await.expect("enqueue");
    queue.enqueue(&job(2)).await.expect("enqueue");
    let done = queue
        .fetch("finished", 1, Duration::from_secs(2))
        .await
        .expect("fetch");
    queue.ack(&receipts(&done)).await.expect("ack");
    let held = queue
        .fetch("holding", 1, Duration::from_secs(2))
        .await
        .expect("fetch");
    assert_eq!(held.len(), 1);
    // "finished" holds nothing and goes; "holding" keeps its delivery.
    assert_eq!(queue.prune_consumers(Duration::ZERO).await.expect("prune"), 1);
    queue.ack(&receipts(&held)).await.expect("ack");
    assert_eq!(queue.depth().await.expect("depth"), 0);
    harness.cleanup().await;
}

// ---------------------------------------------------------------- bus

async fn with_bus<F, Fut>(redis: bool, test: F)
where
    F: FnOnce(Arc<dyn Bus>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let harness = Harness::redis();
    let bus: Arc<dyn Bus> = if redis {
        let Storage::Redis { url, prefix, .. } = &harness.storage else {
            unreachable!()
        };
        Arc::new(
            RedisBus::connect(url, prefix)
                .await
                .expect("Redis must be running at 127.0.0.1:6379"),
        )
    } else {
        Arc::new(LocalBus::new())
    };
    let outcome = tokio::spawn(test(bus)).await;
    harness.cleanup().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Instantiates each bus test as `queue::redis_bus::<name>` and
/// `queue::local_bus::<name>`.
macro_rules! bus_conformance {
    ($($test:ident),+ $(,)?) => {
        mod redis_bus {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    with_bus(true, super::$test).await;
                }
            )+
        }

        mod local_bus {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    with_bus(false, super::$test).await;
                }
            )+
        }
    };
}

bus_conformance!(
    a_reply_sent_before_the_wait_is_received,
    a_reply_sent_during_the_wait_wakes_the_waiter,
    a_wait_without_reply_times_out_with_none,
    a_publish_reaches_every_subscriber,
);

async fn a_reply_sent_before_the_wait_is_received(bus: Arc<dyn Bus>) {
    bus.reply("req-1", &json!({ "ok": true }), Duration::from_secs(10))
        .await
        .expect("reply");
    let reply = bus
        .wait_reply("req-1", Duration::from_secs(2))
        .await
        .expect("wait");
    assert_eq!(reply, Some(json!({ "ok": true })));
    // A reply is consumed by its waiter.
    let again = bus
        .wait_reply("req-1", Duration::from_millis(100))
        .await
        .expect("wait again");
    assert_eq!(again, None);
}

async fn a_reply_sent_during_the_wait_wakes_the_waiter(bus: Arc<dyn Bus>) {
    let waiter = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move {
            let reply = bus
                .wait_reply("req-2", Duration::from_secs(5))
                .await
                .expect("wait");
            (reply, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    bus.reply("req-2", &json!({ "latency": "low" }), Duration::from_secs(10))
        .await
        .expect("reply");
    let (reply, received) = waiter.await.expect("waiter");
    assert_eq!(reply, Some(json!({ "latency": "low" })));
    let took = received.duration_since(sent);
    println!("reply reached its waiter in {took:?}");
    assert!(took < Duration::from_millis(200), "the waiter took {took:?}");
}

async fn a_wait_without_reply_times_out_with_none(bus: Arc<dyn Bus>) {
    let started = Instant::now();
    let reply = bus
        .wait_reply("nobody-answers", Duration::from_millis(300))
        .await
        .expect("wait");
    assert_eq!(reply, None);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(290), "returned after {waited:?}");
    assert!(waited < Duration::from_secs(2), "overslept: {waited:?}");
    // An expired reply is gone.
    bus.reply("short-lived", &json!(1), Duration::from_millis(50))
        .await
        .expect("reply");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        bus.wait_reply("short-lived", Duration::ZERO).await.expect("wait"),
        None
    );
}

async fn a_publish_reaches_every_subscriber(bus: Arc<dyn Bus>) {
    bus.publish("connectors", &json!({ "before": "any subscriber" }))
        .await
        .expect("publish");
    let mut first = bus.subscribe("connectors").await.expect("subscribe");
    let mut second = bus.subscribe("connectors").await.expect("subscribe");
    let mut other = bus.subscribe("other-channel").await.expect("subscribe");
    let event = json!({ "event": "connector_changed", "connector_uuid": "c-1" });
    bus.publish("connectors", &event).await.expect("publish");
    for stream in [&mut first, &mut second] {
        let got = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("a message");
        assert_eq!(got, Some(event.clone()));
    }
    let nothing = tokio::time::timeout(Duration::from_millis(200), other.next()).await;
    assert!(nothing.is_err(), "another channel's subscriber got {nothing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bus_subscription_survives_a_redis_restart() {
    let mut server = PrivateRedis::start().await;
    let bus = RedisBus::connect(&server.url(), "test-bus")
        .await
        .expect("private Redis");
    let mut events = bus.subscribe("connectors").await.expect("subscribe");
    bus.publish("connectors", &json!({ "n": 0 }))
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(2), events.next())
        .await
        .expect("a message");
    assert_eq!(got, Some(json!({ "n": 0 })));

    server.restart().await;
    let restarted = Instant::now();
    // The subscription comes back on its own; publish until it hears.
    let mut n = 1;
    let heard = loop {
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "the subscription never came back"
        );
        if bus.publish("connectors", &json!({ "n": n })).await.is_ok()
            && let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await
        {
            break message;
        }
        n += 1;
    };
    println!(
        "subscription heard again {:?} after the restart",
        restarted.elapsed()
    );
    assert!(heard["n"].as_u64().is_some_and(|m| m >= 1));

    // Replies work on the restarted server too.
    bus.reply("after-restart", &json!("yes"), Duration::from_secs(5))
        .await
        .expect("reply");
    assert_eq!(
        bus.wait_reply("after-restart", Duration::from_secs(2))
            .await
            .expect("wait"),
        Some(json!("yes"))
    );
}
