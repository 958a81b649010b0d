//! Step queries: [`StepStore`] for [`SqlStore`].
//!
//! Every write first touches the project's `updated_at`. That statement also
//! serializes concurrent writers of one project's steps (a row lock on
//! PostgreSQL; SQLite's `BEGIN IMMEDIATE` already holds the database's write
//! lock), so positions stay contiguous: 1, 2, …, count.
//!
//! Under that same lock every write then checks that the project has no
//! execution in progress: admitting an execution locks the project row too,
//! so a step write and an execute call are ordered one way or the other and
//! a step never changes under a queued or running execution
//! ([`executing_conflict`]).
//!
//! A step's own `updated_at` moves when it is the subject of the write
//! (inserted, updated, or moved by a reorder); steps shifted to make room or
//! close a gap keep theirs.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::db::{Sql, Tx};
use super::executions::in_progress;
use super::rows::{StepRow, step_columns};
use super::{SqlStore, constraint_error};
use crate::domain::{self, NewStep, Step, StepPatch};
use crate::error::{Error, Result};
use crate::ids::IdKind;
use crate::store::StepStore;

/// The 1-based position after the last of `count` steps.
fn end_position(count: i64) -> crate::Result<i32> {
    i32::try_from(count + 1).map_err(crate::Error::internal_from)
}

/// The conflict of a write to a project (or its steps) while one of its
/// executions is in progress, naming that execution as other 409s do.
fn executing_conflict(execution_id: String) -> crate::Error {
    let mut extra = serde_json::Map::new();
    extra.insert("execution_id".to_owned(), serde_json::Value::String(execution_id));
    crate::Error::Conflict {
        message: "Cannot change the project or its steps while it is executing".to_owned(),
        extra,
    }
}

/// Stamps the project's `updated_at` (and locks its row until the
/// transaction ends). Returns whether the project exists.
async fn touch_project(tx: &mut Tx, project_uuid: &str, now: DateTime<Utc>) -> Result<bool> {
    let touched = Sql::new("UPDATE projects SET updated_at = $2 WHERE uuid = $1")
        .bind(project_uuid)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(touched > 0)
}

/// Fails with [`executing_conflict`] when the project has
/// an execution queued, running or cancelling. Called inside the
/// write's transaction, after the project row is locked.
pub(super) async fn ensure_not_executing(tx: &mut Tx, project_uuid: &str) -> Result<()> {
    let active = Sql::new(concat!(
        "SELECT execution_id FROM executions WHERE project_uuid = $1 AND status IN ",
        in_progress!(),
        " ORDER BY created_at LIMIT 1"
    ))
    .bind(project_uuid)
    .scalar_optional::<String>(&mut *tx)
    .await?;
    match active {
        Some(execution_id) => Err(executing_conflict(execution_id)),
        None => Ok(()),
    }
}

/// Locks the project for a step write: stamps its `updated_at`
/// and refuses while it is executing. Returns whether it exists.
async fn lock_idle_project(tx: &mut Tx, project_uuid: &str, now: DateTime<Utc>) -> Result<bool> {
    if !touch_project(tx, project_uuid, now).await? {
        return Ok(false);
    }
    ensure_not_executing(tx, project_uuid).await?;
    Ok(true)
}

async fn count_steps(tx: &mut Tx, project_uuid: &str) -> Result<i64> {
    Ok(Sql::new("SELECT COUNT(*) FROM steps WHERE project_uuid = $1")
        .bind(project_uuid)
        .scalar_one::<i64>(&mut *tx)
        .await?)
}

#[async_trait]
impl StepStore for SqlStore {
    async fn list_steps(&self, project_uuid: &str) -> Result<Vec<Step>> {
        Sql::new(concat!(
            "SELECT ",
            step_columns!(),
            " FROM steps WHERE project_uuid = $1 ORDER BY position, step_id"
        ))
        .bind(project_uuid)
        .fetch_all_as::<StepRow, _>(&self.pool)
        .await
    }

    async fn get_step(&self, project_uuid: &str, step_id: &str) -> Result<Option<Step>> {
        Sql::new(concat!(
            "SELECT ",
            step_columns!(),
            " FROM steps WHERE project_uuid = $1 AND step_id = $2"
        ))
        .bind(project_uuid)
        .bind(step_id)
        .fetch_optional_as::<StepRow, _>(&self.pool)
        .await
    }

    async fn insert_step(&self, project_uuid: &str, new: NewStep) -> Result<Step> {
        let now = domain::now();
        let mut tx = self.pool.begin().await?;
        if !lock_idle_project(&mut tx, project_uuid, now).await? {
            return Err(Error::not_found("project not found"));
        }
        let end = end_position(count_steps(&mut tx, project_uuid).await?)?;
        let order = new.order.map_or(end, |order| order.clamp(1, end));
        Sql::new("UPDATE steps SET position = position + 1 WHERE project_uuid = $1 AND position >= $2")
            .bind(project_uuid)
            .bind(order)
            .execute(&mut tx)
            .await?;
        let step = Step {
            step_id: IdKind::Step.generate(),
            project_uuid: project_uuid.to_owned(),
            name: new.name,
            step_type: new.step_type,
            order,
            config: new.config,
            dependencies: new.dependencies,
            created_at: now,
            updated_at: now,
        };
        Sql::new(
            "INSERT INTO steps (step_id, project_uuid, name, step_type, position, config, \
             dependencies, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&step.step_id)
        .bind(&step.project_uuid)
        .bind(&step.name)
        .bind(step.step_type.as_str())
        .bind(step.order)
        .bind(Json(&step.config))
        .bind(Json(&step.dependencies))
        .bind(step.created_at)
        .bind(step.updated_at)
        .execute(&mut tx)
        .await
        .map_err(constraint_error)?;
        tx.commit().await?;
        Ok(step)
    }

    async fn update_step(&self, project_uuid: &str, step_id: &str, patch: StepPatch) -> Result<Option<Step>> {
        let now = domain::now();
        let mut tx = self.pool.begin().await?;
        if !lock_idle_project(&mut tx, project_uuid, now).await? {
            return Ok(None);
        }
        let row = Sql::new(concat!(
            "SELECT ",
            step_columns!(),
            " FROM steps WHERE project_uuid = $1 AND step_id = $2"
        ))
        .bind(project_uuid)
        .bind(step_id)
        .fetch_optional::<StepRow>(&mut tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut step = Step::try_from(row)?;
        if let Some(order) = patch.order {
            let last = end_position(count_steps(&mut tx, project_uuid).await?)? - 1;
            let target = order.clamp(1, last);
            // Shift the steps between the old and the new position
            // one place towards the old one.
            let shift = if target < step.order {
                "UPDATE steps SET position = position + 1 \
                 WHERE project_uuid = $1 AND position >= $2 AND position < $3"
            } else {
                "UPDATE steps SET position = position - 1 \
                 WHERE project_uuid = $1 AND position > $3 AND position <= $2"
            };
            if target != step.order {
                Sql::new(shift)
                    .bind(project_uuid)
                    .bind(target)
                    .bind(step.order)
                    .execute(&mut tx)
                    .await?;
            }
            step.order = target;
        }
        if let Some(name) = patch.name {
            step.name = name;
        }
        if let Some(config) = patch.config {
            step.config = config;
        }
        step.updated_at = now;
        Sql::new(
            "UPDATE steps SET name = $3, config = $4, position = $5, updated_at = $6 \
             WHERE project_uuid = $1 AND step_id = $2",
        )
        .bind(project_uuid)
        .bind(step_id)
        .bind(&step.name)
        .bind(Json(&step.config))
        .bind(step.order)
        .bind(step.updated_at)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(Some(step))
    }

    async fn delete_step(&self, project_uuid: &str, step_id: &str) -> Result<bool> {
        let now = domain::now();
        let mut tx = self.pool.begin().await?;
        if !lock_idle_project(&mut tx, project_uuid, now).await? {
            return Ok(false);
        }
        let position =
            Sql::new("DELETE FROM steps WHERE project_uuid = $1 AND step_id = $2 RETURNING position")
                .bind(project_uuid)
                .bind(step_id)
                .scalar_optional::<i32>(&mut tx)
                .await?;
        let Some(position) = position else {
            return Ok(false);
        };
        Sql::new("UPDATE steps SET position = position - 1 WHERE project_uuid = $1 AND position > $2")
            .bind(project_uuid)
            .bind(position)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn reorder_steps(&self, project_uuid: &str, step_ids: &[String]) -> Result<Vec<Step>> {
        let now = domain::now();
        let mut tx = self.pool.begin().await?;
        if !lock_idle_project(&mut tx, project_uuid, now).await? {
            return Err(Error::not_found("project not found"));
        }
        for (index, step_id) in step_ids.iter().enumerate() {
            let position = i32::try_from(index + 1).map_err(Error::internal_from)?;
            let updated = Sql::new(
                "UPDATE steps SET position = $3, \
                 updated_at = CASE WHEN position = $3 THEN updated_at ELSE $4 END \
                 WHERE project_uuid = $1 AND step_id = $2",
            )
            .bind(project_uuid)
            .bind(step_id)
            .bind(position)
            .bind(now)
            .execute(&mut tx)
            .await?;
            if updated == 0 {
                return Err(Error::validation(
                    "step_ids",
                    format!("unknown step id {step_id}"),
                ));
            }
        }
        let rows = Sql::new(concat!(
            "SELECT ",
            step_columns!(),
            " FROM steps WHERE project_uuid = $1 ORDER BY position, step_id"
        ))
        .bind(project_uuid)
        .fetch_all_as::<StepRow, Step>(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(rows)
    }
}
