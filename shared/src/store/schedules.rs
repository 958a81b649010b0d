//! Project schedules: [`ProjectSchedule`] and the [`ScheduleStore`]
//! aggregate trait.
//!
//! A schedule lives on its project's row with the next tick
//! (`next_run_at`). The scheduler leader lists the due ones and claims each
//! tick with [`ScheduleStore::claim_schedule_tick`], a conditional update on
//! the `next_run_at` it read: of any number of schedulers reading the same
//! tick, exactly one moves it forward and fires it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{OrgRole, Schedule};
use crate::error::Result;

/// A project's schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSchedule {
    pub project_uuid: String,
    pub org_id: String,
    pub schedule: Schedule,
    /// The user who set the schedule; its executions run as them.
    pub set_by: String,
    /// Their organization role when they set it.
    pub set_role: OrgRole,
    /// The next tick; `None` when disabled or never firing again.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// Schedules of projects.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Sets (`Some`) or removes (`None`) the schedule of a project of
    /// `org_id`, with the next tick and who set it. Returns whether the
    /// project exists.
    async fn set_project_schedule(
        &self,
        org_id: &str,
        project_uuid: &str,
        schedule: Option<&ProjectSchedule>,
    ) -> Result<bool>;

    /// The schedule of a project of `org_id`, if it has one.
    async fn project_schedule(&self, org_id: &str, project_uuid: &str) -> Result<Option<ProjectSchedule>>;

    /// The schedules of those of `project_uuids` that have one (for lists).
    async fn project_schedules(&self, org_id: &str, project_uuids: &[String])
    -> Result<Vec<ProjectSchedule>>;

    /// Up to `limit` schedules whose tick is due at `now` (`next_run_at <=
    /// now`) on projects that are not archived, earliest first.
    async fn due_schedules(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<ProjectSchedule>>;

    /// Claims the tick `due` of a project: moves `next_run_at` to `next`
    /// only if it still is `due`. Returns whether this call claimed it;
    /// concurrent claims of one tick have exactly one winner.
    async fn claim_schedule_tick(
        &self,
        project_uuid: &str,
        due: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool>;
}
