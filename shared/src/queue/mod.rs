//! The job queue between the API (which enqueues) and the workers (which
//! pull): one [`Queue`] trait with a Redis Streams backend for distributed
//! deployments and an embedded SQLite backend for `ferry up`, the [`Bus`]
//! for request/reply and broadcasts between roles, and [`run_worker`], the
//! apalis 1.0 runtime that drives a queue. See `design.md` beside this file.

mod bus;
mod embedded;
mod job;
mod redis_streams;
mod worker;

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde_json::Value;

use crate::{Error, Result};

pub use bus::{LocalBus, RedisBus};
pub use embedded::EmbeddedQueue;
pub use job::{Delivery, Job, JobKind};
pub use redis_streams::{RedisQueue, RedisQueueOptions};
pub use worker::{JobError, MAX_DELIVERIES, WorkerOptions, run_worker};

/// The lease a backend applies when none is configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// A durable job queue with at-least-once delivery.
///
/// A fetched delivery is leased to its consumer: until it is acknowledged it
/// is redelivered (attempt + 1) to any consumer once it has been idle longer
/// than the lease, so a consumer that runs a job for longer than the lease
/// must [`touch`](Queue::touch) it (`run_worker` does, every lease/3).
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

    /// Checks the backend answers (readiness).
    async fn ping(&self) -> Result<()>;

    /// How long a delivery stays leased without a touch.
    fn lease(&self) -> Duration {
        DEFAULT_LEASE
    }
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
        Error::Internal(format!("queue: {error}"))
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

/// Maps a job that could not be (de)serialized.
pub(crate) fn codec_error(error: &serde_json::Error) -> Error {
    Error::Internal(format!("queue: job encoding: {error}"))
}
