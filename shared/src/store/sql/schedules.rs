//! Schedule queries: [`ScheduleStore`] for [`SqlStore`].
//!
//! Times are bound as parameters (from the caller), never computed in SQL,
//! so both backends compare the same values; on SQLite they are RFC 3339
//! text, which sorts in time order for the UTC, microsecond-truncated times
//! the store writes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::SqlStore;
use super::db::Sql;
use crate::domain::{OrgRole, ProjectStatus, Schedule};
use crate::error::{Error, Result};
use crate::store::{ProjectSchedule, ScheduleStore};

/// The columns of a [`ScheduleRow`].
const COLUMNS: &str = "uuid, org_id, schedule, schedule_set_by, schedule_set_role, next_run_at";

#[derive(sqlx::FromRow)]
struct ScheduleRow {
    uuid: String,
    org_id: String,
    schedule: Json<Value>,
    schedule_set_by: Option<String>,
    schedule_set_role: Option<String>,
    next_run_at: Option<DateTime<Utc>>,
}

impl TryFrom<ScheduleRow> for ProjectSchedule {
    type Error = Error;

    fn try_from(row: ScheduleRow) -> Result<Self> {
        let schedule: Schedule = serde_json::from_value(row.schedule.0).map_err(|error| {
            Error::internal(format!("projects.schedule of {} is malformed: {error}", row.uuid))
        })?;
        Ok(ProjectSchedule {
            project_uuid: row.uuid,
            org_id: row.org_id,
            schedule,
            set_by: row.schedule_set_by.unwrap_or_default(),
            set_role: match row.schedule_set_role.as_deref() {
                Some("admin") => OrgRole::Admin,
                _ => OrgRole::Member,
            },
            next_run_at: row.next_run_at,
        })
    }
}

fn role_word(role: OrgRole) -> &'static str {
    match role {
        OrgRole::Admin => "admin",
        OrgRole::Member => "member",
    }
}

#[async_trait]
impl ScheduleStore for SqlStore {
    async fn set_project_schedule(
        &self,
        org_id: &str,
        project_uuid: &str,
        schedule: Option<&ProjectSchedule>,
    ) -> Result<bool> {
        let json = schedule
            .map(|s| serde_json::to_value(&s.schedule))
            .transpose()
            .map_err(Error::internal_from)?;
        let updated = Sql::new(
            "UPDATE projects SET schedule = $3, schedule_set_by = $4, schedule_set_role = $5, next_run_at = $6 \
             WHERE org_id = $1 AND uuid = $2",
        )
        .bind(org_id)
        .bind(project_uuid)
        .bind(json.as_ref().map(Json))
        .bind(schedule.map(|s| s.set_by.as_str()))
        .bind(schedule.map(|s| role_word(s.set_role)))
        .bind(schedule.and_then(|s| s.next_run_at))
        .execute(&self.pool)
        .await?;
        Ok(updated > 0)
    }

    async fn project_schedule(&self, org_id: &str, project_uuid: &str) -> Result<Option<ProjectSchedule>> {
        Sql::new(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM projects WHERE org_id = $1 AND uuid = $2 AND schedule IS NOT NULL"
        )))
        .bind(org_id)
        .bind(project_uuid)
        .fetch_optional_as::<ScheduleRow, _>(&self.pool)
        .await
    }

    async fn project_schedules(
        &self,
        org_id: &str,
        project_uuids: &[String],
    ) -> Result<Vec<ProjectSchedule>> {
        if project_uuids.is_empty() {
            return Ok(Vec::new());
        }
        // Only placeholders are generated; the ids are bound.
        let placeholders = (0..project_uuids.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = Sql::new(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM projects WHERE org_id = $1 AND uuid IN ({placeholders}) AND schedule IS NOT NULL"
        )))
        .bind(org_id);
        for uuid in project_uuids {
            sql = sql.bind(uuid);
        }
        sql.fetch_all_as::<ScheduleRow, _>(&self.pool).await
    }

    async fn due_schedules(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<ProjectSchedule>> {
        Sql::new(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM projects \
             WHERE next_run_at IS NOT NULL AND next_run_at <= $1 AND schedule IS NOT NULL AND status <> $2 \
             ORDER BY next_run_at, uuid LIMIT $3"
        )))
        .bind(now)
        .bind(ProjectStatus::Archived.as_str())
        .bind(limit)
        .fetch_all_as::<ScheduleRow, _>(&self.pool)
        .await
    }

    async fn claim_schedule_tick(
        &self,
        project_uuid: &str,
        due: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let updated = Sql::new("UPDATE projects SET next_run_at = $3 WHERE uuid = $1 AND next_run_at = $2")
            .bind(project_uuid)
            .bind(due)
            .bind(next)
            .execute(&self.pool)
            .await?;
        Ok(updated == 1)
    }
}
