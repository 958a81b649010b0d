//! Cron schedules: the leader fires the projects' due ticks.
//!
//! Every `schedule_interval` (about a second) the leader lists the
//! schedules whose `next_run_at` has passed and, for each, claims the tick
//! by moving `next_run_at` forward with a conditional update on the value it
//! read ([`ScheduleStore::claim_schedule_tick`]): however many schedulers
//! run, and even across a leadership change mid-pass, a tick is claimed
//! once, so it fires at most once. The claimed tick then starts an
//! execution through the same admission as `POST /api/projects/{uuid}/execute`
//! ([`ferry_shared::admission::admit`]) with `trigger: schedule`, the
//! schedule's parameters, and the user who set the schedule.
//!
//! A tick that finds the project's previous execution still queued, running
//! or cancelling is skipped and counted, never queued behind it.
//!
//! Catch-up policy: the next tick is always computed from now, not from the
//! tick being fired. A scheduler that was down (or a leader that was being
//! replaced) therefore fires the most recent missed tick once when it comes
//! back, and the earlier missed ticks not at all; then it continues with
//! the first tick after now. A tick is claimed before its execution is
//! admitted, so a failure between the two loses that tick rather than
//! firing it twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_shared::admission::{self, Admission};
use ferry_shared::domain::{self, Trigger, params};
use ferry_shared::queue::Queue;
use ferry_shared::store::{ProjectSchedule, Store};
use ferry_shared::{Error, Result};
use prometheus::{IntCounter, Registry};
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderElection;

/// Due schedules looked at per pass, earliest first.
pub const SCHEDULE_BATCH: i64 = 200;

/// How often the leader looks for due schedules, by default.
pub const DEFAULT_SCHEDULE_INTERVAL: Duration = Duration::from_secs(1);

/// The scheduler's schedule counters.
#[derive(Clone)]
pub struct ScheduleMetrics {
    /// Ticks this process claimed (fired or skipped).
    pub ticks: IntCounter,
    /// Claimed ticks skipped because the project's previous execution was
    /// still in progress.
    pub skipped: IntCounter,
    /// Claimed ticks that started no execution because of an error (a
    /// parameter the steps now require, the store or the queue failing).
    pub errors: IntCounter,
}

impl ScheduleMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = ScheduleMetrics {
            ticks: IntCounter::new(
                "ferry_scheduler_ticks_total",
                "Schedule ticks this scheduler claimed, fired or skipped",
            )?,
            skipped: IntCounter::new(
                "ferry_scheduler_ticks_skipped_total",
                "Schedule ticks skipped because the project's previous execution was still queued or running",
            )?,
            errors: IntCounter::new(
                "ferry_scheduler_tick_errors_total",
                "Schedule ticks that started no execution because of an error",
            )?,
        };
        registry.register(Box::new(metrics.ticks.clone()))?;
        registry.register(Box::new(metrics.skipped.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        Ok(metrics)
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ticked {
    /// Ticks claimed by this pass.
    pub claimed: u64,
    /// Executions started (their ids).
    pub started: Vec<String>,
    /// Claimed ticks skipped: the previous execution was in progress.
    pub skipped: u64,
    /// Claimed ticks that failed to start an execution.
    pub failed: u64,
}

/// One pass at `now`: claims each due tick and starts its execution.
/// Errors listing the due schedules fail the pass; an error on one schedule
/// is counted in [`Ticked::failed`] and logged.
pub async fn tick_once(store: &dyn Store, queue: &dyn Queue, now: DateTime<Utc>) -> Result<Ticked> {
    let mut ticked = Ticked::default();
    for due in store.due_schedules(now, SCHEDULE_BATCH).await? {
        let Some(due_at) = due.next_run_at else {
            continue;
        };
        let next = match due.schedule.next_run(now) {
            Ok(next) => next,
            Err(error) => {
                // Only a hand-edited row can hold an invalid schedule: stop it.
                tracing::warn!(project_uuid = %due.project_uuid, %error, "stored schedule is invalid; disabled");
                None
            }
        };
        match store.claim_schedule_tick(&due.project_uuid, due_at, next).await {
            Ok(true) => {}
            Ok(false) => continue, // another scheduler claimed it
            Err(error) => {
                tracing::warn!(project_uuid = %due.project_uuid, %error, "schedule tick not claimed");
                continue;
            }
        }
        ticked.claimed += 1;
        match fire(store, queue, &due).await {
            Ok(Some(execution_id)) => ticked.started.push(execution_id),
            Ok(None) => {
                ticked.skipped += 1;
                tracing::info!(project_uuid = %due.project_uuid, tick = %due_at, "schedule tick skipped: the previous execution is still in progress");
            }
            Err(error) => {
                ticked.failed += 1;
                tracing::warn!(project_uuid = %due.project_uuid, tick = %due_at, %error, "schedule tick started no execution");
            }
        }
    }
    Ok(ticked)
}

/// Starts the execution of a claimed tick; `None` when the project's
/// previous execution is still in progress.
async fn fire(store: &dyn Store, queue: &dyn Queue, due: &ProjectSchedule) -> Result<Option<String>> {
    if store.active_execution(&due.project_uuid).await?.is_some() {
        return Ok(None);
    }
    let steps = store.list_steps(&due.project_uuid).await?;
    for step in &steps {
        params::check_config(&step.config, &due.schedule.parameters)?;
    }
    let admission = Admission {
        project_uuid: due.project_uuid.clone(),
        org_id: due.org_id.clone(),
        trigger: Trigger::Schedule,
        parameters: due.schedule.parameters.clone(),
        notify_on_completion: false,
        created_by: due.set_by.clone(),
        org_role: due.set_role,
    };
    match admission::admit(store, queue, &admission, &steps).await {
        Ok(execution) => Ok(Some(execution.execution_id)),
        // An execution admitted since the check above (an API call).
        Err(Error::Conflict { message, extra })
            if extra.contains_key("execution_id") || message.starts_with("Project is already executing") =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Runs a pass every `interval` while this process leads, until `stop`.
pub(crate) async fn run(
    store: &dyn Store,
    queue: &dyn Queue,
    leader: &LeaderElection,
    metrics: &ScheduleMetrics,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = leader.ticks(interval, &stop);
    while let Some(leading) = ticks.next().await {
        if !leading {
            continue;
        }
        match tick_once(store, queue, domain::now()).await {
            Ok(ticked) => {
                metrics.ticks.inc_by(ticked.claimed);
                metrics.skipped.inc_by(ticked.skipped);
                metrics.errors.inc_by(ticked.failed);
            }
            Err(error) => {
                metrics.errors.inc();
                tracing::warn!(%error, "schedule pass failed");
            }
        }
    }
}
