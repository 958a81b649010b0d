//! The job queue between the API (which enqueues) and the workers (which
//! pull): one [`Queue`] trait with a Redis Streams backend for distributed
//! deployments and an embedded SQLite backend for `ferry up`, and the [`Bus`]
//! for request/reply and broadcasts between roles. The apalis 1.0 runtime
//! that drives a queue (`run_worker`) is the worker role's own:
//! `ferry_worker::runtime`. See `design.md` beside this file.

mod bus;
mod embedded;
mod job;
mod redis_conn;
mod redis_streams;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;

use crate::{Error, Result};

pub use bus::{LocalBus, RedisBus};
pub use embedded::EmbeddedQueue;
pub use job::{Delivery, Job, JobKind};
pub use redis_streams::{RedisQueue, RedisQueueOptions};

/// The lease a backend applies when none is configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A durable job queue with at-least-once delivery.
///
/// A fetched delivery is leased to its consumer: until it is acknowledged it
/// is redelivered (attempt + 1) to any consumer once it has been idle longer
/// than the lease, so a consumer that runs a job for longer than the lease
/// must [`touch`](Queue::touch) it (the worker runtime does, every lease/3).
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Enqueues; returns false when a job with the same id is already pending
    /// (duplicate enqueue is a no-op).
    async fn enqueue(&self, job: &Job) -> Result<bool>;

    /// Enqueues many jobs in as few round trips as the backend allows;
    /// returns how many were new (duplicates are skipped).
    async fn enqueue_many(&self, jobs: &[Job]) -> Result<u64> {
        let mut added = 0;
        for job in jobs {
            if self.enqueue(job).await? {
                added += 1;
            }
        }
        Ok(added)
    }

    /// Up to `max` deliveries for `consumer`, waiting up to `wait` when none
    /// is ready (blocking read / in-process notify, never interval polling).
    /// Deliveries idle past the lease (their consumer died) are reclaimed
    /// first. An empty vector means the wait ended without a job.
    async fn fetch(&self, consumer: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Acknowledges (removes) finished deliveries; batched. Unknown or
    /// already acknowledged receipts are ignored.
    async fn ack(&self, receipts: &[String]) -> Result<()>;

    /// Extends the lease of in-flight deliveries held by `consumer`
    /// (heartbeat). Receipts no longer held by `consumer` are ignored.
    async fn touch(&self, consumer: &str, receipts: &[String]) -> Result<()>;

    /// Hands unstarted deliveries held by `consumer` back to the queue so
    /// another consumer can take them at once. The default does nothing: the
    /// deliveries come back when their lease runs out.
    async fn release(&self, consumer: &str, receipts: &[String]) -> Result<()> {
        let _ = (consumer, receipts);
        Ok(())
    }

    /// Jobs queued or in flight (for metrics and tests).
    async fn depth(&self) -> Result<u64>;

    /// What the queue holds now, for metrics: jobs waiting for a worker,
    /// jobs in flight, and the age of the oldest waiting one. The default
    /// counts everything as waiting and knows no age.
    async fn stats(&self) -> Result<QueueStats> {
        Ok(QueueStats {
            waiting: self.depth().await?,
            ..QueueStats::default()
        })
    }

    /// Checks the backend answers (readiness).
    async fn ping(&self) -> Result<()>;

    /// How long a delivery stays leased without a touch.
    fn lease(&self) -> Duration {
        DEFAULT_LEASE
    }
}

/// A snapshot of a queue (see [`Queue::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs no consumer holds: never delivered, or handed back.
    pub waiting: u64,
    /// Jobs delivered and not yet acknowledged (running, or held by a
    /// consumer that died, until their lease runs out).
    pub in_flight: u64,
    /// Milliseconds since the oldest waiting job was first enqueued; `None`
    /// when nothing waits.
    pub oldest_waiting_ms: Option<u64>,
}

/// Request/reply and broadcast between roles (the API waits for a worker's
/// answer; connector-change events reach every worker).
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Stores the reply to `key` for one waiter, kept for `ttl`.
    async fn reply(&self, key: &str, value: &Value, ttl: Duration) -> Result<()>;

    /// Waits up to `timeout` for the reply to `key` (which may have been sent
    /// before the wait began) and consumes it. None on timeout.
    async fn wait_reply(&self, key: &str, timeout: Duration) -> Result<Option<Value>>;

    /// Sends `value` to every current subscriber of `channel`.
    async fn publish(&self, channel: &str, value: &Value) -> Result<()>;

    /// Messages published on `channel` after this call returns; survives a
    /// Redis reconnect (messages published while disconnected are lost).
    async fn subscribe(&self, channel: &str) -> Result<BoxStream<'static, Value>>;

    /// Counts one request against `key`'s budget under `limit` (shared by
    /// every process on the same Redis). `None` when the request may go
    /// ahead, otherwise how long until it would be allowed; a refused
    /// request is not counted.
    async fn throttle(&self, key: &str, limit: RateLimit) -> Result<Option<Duration>>;
}

/// A request budget: `per_minute` requests a minute on average, and up to
/// `burst` more at once after a quiet spell (the generic cell rate
/// algorithm: each request moves a theoretical arrival time one interval of
/// 60 s / `per_minute` ahead, and a request is refused while that time is
/// more than `burst` intervals in the future).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl RateLimit {
    /// Time between two requests at the steady rate.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.per_minute.max(1)
    }

    /// How far ahead of now the arrival time may run: the burst plus the
    /// request itself.
    pub fn tolerance(&self) -> Duration {
        self.interval() * (self.burst.saturating_add(1))
    }

    /// The cell rate step: given the stored arrival time (`tat`, None for a
    /// new key) and `now`, the new arrival time to store, or how long to wait.
    fn step(&self, tat: Option<Duration>, now: Duration) -> std::result::Result<Duration, Duration> {
        let tat = tat.map_or(now, |tat| tat.max(now));
        let next = tat + self.interval();
        let allowed_from = next.saturating_sub(self.tolerance());
        if allowed_from > now {
            Err(allowed_from - now)
        } else {
            Ok(next)
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Maps a Redis failure: connection-level failures mean the queue is
/// unavailable (callers retry), anything else is internal.
pub(crate) fn redis_error(error: &::redis::RedisError) -> Error {
    if is_connection_error(error) {
        Error::Unavailable(format!("the queue is unavailable ({})", error.category()))
    } else {
        Error::internal_with_source(format!("queue: {error}"), error.clone())
    }
}

/// True for failures of the connection itself (refused, dropped, timed out),
/// as opposed to a command the server rejected.
pub(crate) fn is_connection_error(error: &::redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ::redis::ErrorKind::Server(::redis::ServerErrorKind::BusyLoading)
        )
}

/// Locks a std mutex, recovering the data if a holder panicked (the guarded
/// state stays consistent: no critical section can panic half-way).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Maps a job or a bus message that could not be (de)serialized; the
/// serde error stays reachable as the source.
pub(crate) fn codec_error(error: serde_json::Error) -> Error {
    Error::internal_with_source(format!("queue: job encoding: {error}"), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codec_error_keeps_the_serde_error_as_its_source() {
        let parse = serde_json::from_str::<Value>("{\"job\": ").expect_err("truncated JSON");
        let text = parse.to_string();
        let error = codec_error(parse);
        assert!(error.to_string().contains(&text), "{error}");
        let source = std::error::Error::source(&error).expect("a source");
        let source = source
            .downcast_ref::<serde_json::Error>()
            .expect("the serde error itself");
        assert!(source.is_eof(), "{source}");
        assert_eq!(source.to_string(), text);
    }

    #[test]
    fn the_cell_rate_step_allows_the_burst_then_the_steady_rate() {
        let limit = RateLimit {
            per_minute: 60,
            burst: 2,
        };
        let second = Duration::from_secs(1);
        let start = Duration::from_secs(100);
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(limit.step(tat, start).expect("within the burst"));
        }
        assert_eq!(limit.step(tat, start), Err(second));
        assert_eq!(limit.step(tat, start + second / 2), Err(second / 2));
        let tat = limit.step(tat, start + second).expect("one interval later");
        assert_eq!(limit.step(Some(tat), start + second), Err(second));
        // A long quiet spell gives the whole burst back, never more.
        let mut tat = Some(tat);
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            tat = Some(limit.step(tat, later).expect("burst again"));
        }
        assert!(limit.step(tat, later).is_err());
    }

    #[tokio::test]
    async fn the_local_bus_keeps_one_budget_per_key() {
        let bus = LocalBus::new();
        let limit = RateLimit {
            per_minute: 6,
            burst: 1,
        };
        for _ in 0..2 {
            assert_eq!(bus.throttle("org:alice", limit).await.expect("throttle"), None);
        }
        let wait = bus
            .throttle("org:alice", limit)
            .await
            .expect("throttle")
            .expect("over the budget");
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert_eq!(bus.throttle("org:bob", limit).await.expect("throttle"), None);
    }
}
