//! The scheduler's metric families, registered once per process in the
//! registry the role serves on `/metrics`.

use prometheus::{IntCounter, IntGauge, Registry};

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
        };
        registry.register(Box::new(metrics.is_leader.clone()))?;
        registry.register(Box::new(metrics.reaped.clone()))?;
        registry.register(Box::new(metrics.reap_errors.clone()))?;
        Ok(metrics)
    }
}
