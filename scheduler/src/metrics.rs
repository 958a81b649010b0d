//! The scheduler's metric families, registered once per process in the
//! registry the role serves on `/metrics`.

use prometheus::{Gauge, IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

/// Counters and gauges of the scheduler role.
#[derive(Clone)]
pub struct SchedulerMetrics {
    /// 1 while this process is the leader, else 0.
    pub is_leader: IntGauge,
    /// Executions the reaper enqueued again (duplicates of a job still
    /// pending are not counted: the queue skipped them).
    pub reaped: IntCounter,
    /// Reaper passes that failed (store or queue unavailable).
    pub reap_errors: IntCounter,
    /// `ferry_queue_jobs{state}`: jobs `waiting` for a worker and
    /// `in_flight`, as the leader last read them (0 on a standby, so that
    /// a sum over schedulers counts the queue once).
    pub queue_jobs: IntGaugeVec,
    /// `ferry_queue_oldest_waiting_age_seconds`: how long the oldest
    /// waiting job has waited (0 when none waits, and on a standby).
    pub queue_oldest_age: Gauge,
    /// `ferry_queue_stats_errors_total`: failed reads of the queue.
    pub queue_errors: IntCounter,
}

impl SchedulerMetrics {
    /// Creates the families and registers them in `registry`; fails when
    /// they are already registered there.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = SchedulerMetrics {
            is_leader: IntGauge::new(
                "ferry_scheduler_is_leader",
                "1 while this scheduler process is the leader, else 0",
            )?,
            reaped: IntCounter::new(
                "ferry_scheduler_reaped_total",
                "Executions without a live worker lease that the reaper enqueued again",
            )?,
            reap_errors: IntCounter::new(
                "ferry_scheduler_reap_errors_total",
                "Reaper passes that failed because the store or the queue was unavailable",
            )?,
            queue_jobs: IntGaugeVec::new(
                Opts::new(
                    "ferry_queue_jobs",
                    "Jobs in the queue by state (waiting, in_flight), read by the scheduler leader (0 on standbys)",
                ),
                &["state"],
            )?,
            queue_oldest_age: Gauge::new(
                "ferry_queue_oldest_waiting_age_seconds",
                "Seconds the oldest waiting job has waited, read by the scheduler leader (0 when none waits)",
            )?,
            queue_errors: IntCounter::new(
                "ferry_queue_stats_errors_total",
                "Reads of the queue's depth that failed",
            )?,
        };
        for state in ["waiting", "in_flight"] {
            metrics.queue_jobs.with_label_values(&[state]);
        }
        registry.register(Box::new(metrics.is_leader.clone()))?;
        registry.register(Box::new(metrics.reaped.clone()))?;
        registry.register(Box::new(metrics.reap_errors.clone()))?;
        registry.register(Box::new(metrics.queue_jobs.clone()))?;
        registry.register(Box::new(metrics.queue_oldest_age.clone()))?;
        registry.register(Box::new(metrics.queue_errors.clone()))?;
        Ok(metrics)
    }

    /// Reads the queue into the queue gauges (the leader), or zeroes them
    /// (a standby), so that each figure is exported by one process.
    pub async fn sample_queue(&self, queue: &dyn ferry_shared::queue::Queue, leading: bool) {
        let stats = if leading {
            match queue.stats().await {
                Ok(stats) => stats,
                Err(error) => {
                    self.queue_errors.inc();
                    tracing::warn!(%error, "reading the queue depth failed");
                    return;
                }
            }
        } else {
            ferry_shared::queue::QueueStats::default()
        };
        let gauge = |state: &str, value: u64| {
            self.queue_jobs
                .with_label_values(&[state])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        gauge("waiting", stats.waiting);
        gauge("in_flight", stats.in_flight);
        let age = std::time::Duration::from_millis(stats.oldest_waiting_ms.unwrap_or(0));
        self.queue_oldest_age.set(age.as_secs_f64());
    }
}
