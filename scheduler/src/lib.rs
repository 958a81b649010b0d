//! Ferry's scheduler role: leader-elected periodic work. One process leads
//! (a Redis lock with a TTL, or always in `ferry up`), any number stand by;
//! the leader runs the lease reaper, which re-enqueues the executions no
//! worker holds. Token refresh, health probes and cron schedules arrive with
//! the capabilities they serve. See `design.md`.

pub mod leader;
pub mod metrics;
pub mod reaper;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::queue::Queue;
use ferry_shared::store::Store;
use ferry_shared::{Error, Result};
use tokio_util::sync::CancellationToken;

pub use leader::LeaderElection;
pub use metrics::SchedulerMetrics;
pub use reaper::{Reaped, reap_once};

/// How often the leader looks for executions to re-enqueue, by default.
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(5);

/// How long a queued execution may wait for a worker before the reaper
/// enqueues its job again, by default. Re-enqueueing while the job is still
/// pending is a no-op, so this only bounds how late a lost job is noticed.
pub const DEFAULT_QUEUED_GRACE: Duration = Duration::from_secs(15);

/// The TTL of the Redis leader lock, by default: a dead leader is replaced
/// within about 1⅓ × this.
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(15);

/// What a scheduler process runs with.
pub struct SchedulerContext {
    pub store: Arc<dyn Store>,
    pub registry: prometheus::Registry,
    /// Where the reaper enqueues `execute_project` jobs.
    pub queue: Arc<dyn Queue>,
    /// Redis-backed when Redis is configured, single-process otherwise.
    pub leader: LeaderElection,
    /// How often the leader reaps (default [`DEFAULT_REAP_INTERVAL`]).
    pub reap_interval: Duration,
    /// How long a queued execution waits before its job is enqueued again
    /// (default [`DEFAULT_QUEUED_GRACE`]).
    pub queued_grace: Duration,
}

impl SchedulerContext {
    /// A context with the default intervals.
    pub fn new(
        store: Arc<dyn Store>,
        registry: prometheus::Registry,
        queue: Arc<dyn Queue>,
        leader: LeaderElection,
    ) -> Self {
        SchedulerContext {
            store,
            registry,
            queue,
            leader,
            reap_interval: DEFAULT_REAP_INTERVAL,
            queued_grace: DEFAULT_QUEUED_GRACE,
        }
    }
}

/// Runs the scheduler until `shutdown` resolves: takes and keeps the
/// leadership (or stands by), and reaps while leading. On shutdown it stops
/// both loops and releases the leader lock, so a standby takes over at once.
pub async fn run(context: SchedulerContext, shutdown: impl Future<Output = ()>) -> Result<()> {
    if context.reap_interval.is_zero() {
        return Err(Error::validation(
            "reap_interval",
            "the reap interval must be positive",
        ));
    }
    context.store.ping().await?;
    let metrics = SchedulerMetrics::register(&context.registry).map_err(Error::internal)?;
    tracing::info!(
        store = context.store.backend(),
        identity = context.leader.identity(),
        reap_interval_ms = u64::try_from(context.reap_interval.as_millis()).unwrap_or(u64::MAX),
        "scheduler started"
    );

    let stop = CancellationToken::new();
    let stopper = async {
        shutdown.await;
        stop.cancel();
    };
    let leading = leader::keep_leading(&context.leader, &metrics, stop.clone());
    let reaping = reaper::run(
        context.store.as_ref(),
        context.queue.as_ref(),
        &context.leader,
        &metrics,
        context.reap_interval,
        context.queued_grace,
        stop.clone(),
    );
    tokio::join!(stopper, leading, reaping);
    tracing::info!("scheduler stopped");
    Ok(())
}
