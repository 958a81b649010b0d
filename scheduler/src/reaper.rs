//! The lease reaper: re-enqueues the executions that no worker holds.
//!
//! A queued job is only a wake-up and may be lost (an enqueue that failed
//! after the execution was recorded, a job dropped after too many
//! deliveries); a worker may die holding an execution. Either way the store
//! still has the execution in progress, with no live lease. The leader looks
//! for those every `reap_interval` and enqueues an `execute_project` job for
//! each, with the execution id as the job id: the queue skips the enqueue
//! while a job of that id is pending, and the attempt fencing of the store
//! makes a duplicate delivery harmless.

use std::time::Duration;

use ferry_shared::domain;
use ferry_shared::jobs::ExecuteProjectJob;
use ferry_shared::queue::{Job, JobKind, Queue};
use ferry_shared::store::ExecutionStore;
use ferry_shared::{Error, Result};
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderElection;
use crate::metrics::SchedulerMetrics;

/// Executions looked at per pass, oldest first.
pub const REAP_BATCH: i64 = 500;

/// What one reaper pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Executions in progress with no live lease.
    pub found: usize,
    /// Of those, how many were enqueued (the others still had a pending job).
    pub enqueued: u64,
}

/// One pass: finds the executions in progress whose lease expired, and the
/// queued ones nobody took within `queued_grace` of their creation, and
/// enqueues an `execute_project` job for each.
pub async fn reap_once(
    store: &dyn ExecutionStore,
    queue: &dyn Queue,
    queued_grace: Duration,
) -> Result<Reaped> {
    let now = domain::now();
    let grace = chrono::Duration::from_std(queued_grace)
        .map_err(|_| Error::validation("queued_grace", "the queued grace is out of range"))?;
    let ids = store.executions_to_reap(now, now - grace, REAP_BATCH).await?;
    if ids.is_empty() {
        return Ok(Reaped {
            found: 0,
            enqueued: 0,
        });
    }
    let jobs = ids.iter().map(|id| execute_job(id)).collect::<Result<Vec<_>>>()?;
    let enqueued = queue.enqueue_many(&jobs).await?;
    Ok(Reaped {
        found: ids.len(),
        enqueued,
    })
}

/// The `execute_project` job of an execution; its id is the execution id.
pub fn execute_job(execution_id: &str) -> Result<Job> {
    let payload = serde_json::to_value(ExecuteProjectJob {
        execution_id: execution_id.to_owned(),
    })
    .map_err(Error::internal_from)?;
    Ok(Job::with_id(execution_id, JobKind::ExecuteProject, payload))
}

/// Runs a pass every `interval` while this process leads, until `stop`;
/// a pass stops at once when the leadership is lost. Each tick also
/// samples the queue's depth into the queue gauges.
pub(crate) async fn run(
    store: &dyn ExecutionStore,
    queue: &dyn Queue,
    leader: &LeaderElection,
    metrics: &SchedulerMetrics,
    interval: Duration,
    queued_grace: Duration,
    stop: CancellationToken,
) {
    let mut ticks = leader.ticks(interval, &stop);
    while let Some(leading) = ticks.next().await {
        // The queue's figures come from the leader alone, at the reaper's pace.
        metrics.sample_queue(queue, leading).await;
        if !leading {
            continue;
        }
        let Some(reaped) = leader.while_leading(reap_once(store, queue, queued_grace)).await else {
            continue;
        };
        match reaped {
            Ok(reaped) => {
                metrics.reaped.inc_by(reaped.enqueued);
                if reaped.enqueued > 0 {
                    tracing::info!(
                        found = reaped.found,
                        enqueued = reaped.enqueued,
                        "reaper enqueued executions without a live lease"
                    );
                }
            }
            Err(error) => {
                metrics.reap_errors.inc();
                tracing::warn!(%error, "reaper pass failed");
            }
        }
    }
}
