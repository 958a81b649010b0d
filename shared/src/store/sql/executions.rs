//! Execution queries: [`ExecutionStore`] for [`SqlStore`].
//!
//! Invariants live in the schema or in one conditional statement, never in a
//! read-then-write:
//!
//! - one execution in progress per project is the partial unique index
//!   `executions_one_active_per_project`; a second insert fails on it;
//! - taking an execution is one `UPDATE … RETURNING` conditioned on there
//!   being no live lease, so two concurrent claims never both succeed;
//! - every worker write first locks the execution row and checks that the
//!   lease's attempt is still current and the execution not terminal (the
//!   fence), then writes in the same transaction, so a write by a stale
//!   attempt can never land after a newer claim.
//!
//! Times come from [`crate::domain::now`] and are bound as parameters: the
//! two backends share one clock discipline, and SQLite compares the
//! RFC 3339 text it stores.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::db::{Sql, Tx};
use super::rows::{self, ExecutionStepRow, execution_columns, step_run_columns};
use super::{SqlStore, constraint_error};
use crate::domain::{self, Execution, ExecutionStatus, Lease, Page, PageRequest, ProjectStatus, StepError};
use crate::error::{Error, Result};
use crate::store::{ExecutionStore, StepOutput};

/// The SQL list of the statuses of an execution in progress.
macro_rules! in_progress {
    () => {
        "('queued', 'running', 'cancelling')"
    };
}
pub(super) use in_progress;

/// How many times `create_execution` retries when the execution in
/// progress it collided with finished before it could be named.
const CREATE_TRIES: usize = 3;

/// When a lease taken at `now` for `lease_for` runs out, to the microsecond
/// (what both backends store).
fn lease_expiry(now: DateTime<Utc>, lease_for: std::time::Duration) -> Result<DateTime<Utc>> {
    chrono::Duration::from_std(lease_for)
        .ok()
        .and_then(|duration| now.checked_add_signed(duration))
        .map(|expiry| expiry.trunc_subsecs(6))
        .ok_or_else(|| Error::validation("lease_for", "the lease duration is out of range"))
}

/// The conflict of an execute call on a project that is already executing,
/// naming the execution in progress when it is known.
fn already_executing(execution_id: Option<String>) -> Error {
    let mut extra = serde_json::Map::new();
    if let Some(execution_id) = execution_id {
        extra.insert("execution_id".to_owned(), serde_json::Value::String(execution_id));
    }
    Error::Conflict {
        message: "Project is already executing".to_owned(),
        extra,
    }
}

/// Whether a failed statement broke a unique constraint.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(database)
        if database.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// The outcome of one insert attempt of `create_execution`.
enum Inserted {
    Done,
    /// A unique constraint refused the execution: its id exists, or the
    /// project has an execution in progress.
    Duplicate,
}

impl SqlStore {
    /// One attempt: lock the project, insert the execution and its
    /// steps, mark the project active.
    async fn insert_execution(&self, execution: &Execution) -> Result<Inserted> {
        let mut tx = self.pool.begin().await?;
        let project_status = Sql::new(
            tx.dialect()
                .locked("SELECT status FROM projects WHERE uuid = $1 AND org_id = $2"),
        )
        .bind(&execution.project_uuid)
        .bind(&execution.org_id)
        .scalar_optional::<String>(&mut tx)
        .await?;
        match project_status.as_deref() {
            None => return Err(Error::not_found("the project does not exist")),
            Some(status) if status == ProjectStatus::Archived.as_str() => {
                return Err(Error::conflict("Project is archived"));
            }
            Some(_) => {}
        }
        let inserted = Sql::new(
            "INSERT INTO executions (execution_id, project_uuid, org_id, status, trigger, \
             parameters, notify_on_completion, created_by, created_at, started_at, \
             completed_at, attempt, lease_owner, lease_expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&execution.execution_id)
        .bind(&execution.project_uuid)
        .bind(&execution.org_id)
        .bind(execution.status.as_str())
        .bind(execution.trigger.as_str())
        .bind(Json(&execution.parameters))
        .bind(execution.notify_on_completion)
        .bind(&execution.created_by)
        .bind(execution.created_at)
        .bind(execution.started_at)
        .bind(execution.completed_at)
        .bind(execution.attempt)
        .bind(&execution.lease_owner)
        .bind(execution.lease_expires_at)
        .execute(&mut tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Dropping the transaction rolls it back.
            Err(error) if is_unique_violation(&error) => {
                return Ok(Inserted::Duplicate);
            }
            Err(error) => return Err(constraint_error(error)),
        }
        for step in &execution.steps {
            Sql::new(
                "INSERT INTO execution_steps (execution_id, step_id, position, name, \
                 step_type, config, status, started_at, completed_at, rows_processed, \
                 bytes_written, output_file, error_type, error_message, attempts) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&execution.execution_id)
            .bind(&step.step_id)
            .bind(step.position)
            .bind(&step.name)
            .bind(&step.step_type)
            .bind(Json(&step.config))
            .bind(step.status.as_str())
            .bind(step.started_at)
            .bind(step.completed_at)
            .bind(step.rows_processed)
            .bind(step.bytes_written)
            .bind(&step.output_file)
            .bind(step.error.as_ref().map(|error| error.error_type.as_str()))
            .bind(step.error.as_ref().map(|error| error.message.as_str()))
            .bind(step.attempts)
            .execute(&mut tx)
            .await
            .map_err(constraint_error)?;
        }
        Sql::new(
            "UPDATE projects SET status = $3, last_executed_at = $4 \
             WHERE uuid = $1 AND org_id = $2",
        )
        .bind(&execution.project_uuid)
        .bind(&execution.org_id)
        .bind(ProjectStatus::Active.as_str())
        .bind(execution.created_at)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(Inserted::Done)
    }

    /// Opens a write transaction holding the execution's row if
    /// `lease` still owns it (its attempt is current and the
    /// execution is in progress); None when it is fenced out.
    async fn fenced(&self, lease: &Lease) -> Result<Option<Tx>> {
        let mut tx = self.pool.begin().await?;
        let held = Sql::new(tx.dialect().locked(concat!(
            "SELECT attempt FROM executions \
             WHERE execution_id = $1 AND attempt = $2 AND status IN ",
            in_progress!()
        )))
        .bind(&lease.execution_id)
        .bind(lease.attempt)
        .scalar_optional::<i64>(&mut tx)
        .await?;
        Ok(held.map(|_| tx))
    }

    /// Runs one step `UPDATE` under the lease (see
    /// [`Self::fenced`]) and commits it; false when fenced out or
    /// when no step row matched, and then nothing changed.
    async fn fenced_step_update(&self, lease: &Lease, update: Sql<'_>) -> Result<bool> {
        let Some(mut tx) = self.fenced(lease).await? else {
            return Ok(false);
        };
        let updated = update.execute(&mut tx).await.map_err(constraint_error)?;
        if updated == 0 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Moves an execution to a terminal `status` at `now` and
    /// releases its lease (the attempt stays, fencing late writes).
    async fn end_execution(
        tx: &mut Tx,
        execution_id: &str,
        status: ExecutionStatus,
        now: DateTime<Utc>,
    ) -> Result<()> {
        Sql::new(
            "UPDATE executions SET status = $2, completed_at = $3, \
             lease_owner = NULL, lease_expires_at = NULL \
             WHERE execution_id = $1",
        )
        .bind(execution_id)
        .bind(status.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // The webhook event commits with the end it reports (the outbox).
        super::webhooks::record_execution_end(tx, execution_id).await
    }
}

#[async_trait]
impl ExecutionStore for SqlStore {
    async fn create_execution(&self, execution: &Execution) -> Result<()> {
        for _ in 0..CREATE_TRIES {
            if let Inserted::Done = self.insert_execution(execution).await? {
                return Ok(());
            }
            let id_taken = Sql::new("SELECT COUNT(*) FROM executions WHERE execution_id = $1")
                .bind(&execution.execution_id)
                .scalar_one::<i64>(&self.pool)
                .await?;
            if id_taken > 0 {
                return Err(Error::conflict("an execution with this id already exists"));
            }
            if let Some(active) = self.active_execution(&execution.project_uuid).await? {
                return Err(already_executing(Some(active)));
            }
            // The execution in progress finished in between: try again.
        }
        Err(already_executing(None))
    }

    async fn get_execution(
        &self,
        org_id: &str,
        project_uuid: &str,
        execution_id: &str,
    ) -> Result<Option<Execution>> {
        Ok(self
            .load_execution(execution_id)
            .await?
            .filter(|execution| execution.project_uuid == project_uuid && execution.org_id == org_id))
    }

    async fn load_execution(&self, execution_id: &str) -> Result<Option<Execution>> {
        let rows = Sql::new(concat!(
            "SELECT ",
            execution_columns!(),
            ", ",
            step_run_columns!(),
            " FROM executions e LEFT JOIN execution_steps s \
             ON s.execution_id = e.execution_id \
             WHERE e.execution_id = $1 \
             ORDER BY s.position, s.step_id"
        ))
        .bind(execution_id)
        .fetch_all::<ExecutionStepRow>(&self.pool)
        .await?;
        Ok(rows::group_executions(rows)?.into_iter().next())
    }

    async fn list_executions(&self, project_uuid: &str, page: PageRequest) -> Result<Page<Execution>> {
        let total = Sql::new("SELECT COUNT(*) FROM executions WHERE project_uuid = $1")
            .bind(project_uuid)
            .scalar_one::<i64>(&self.pool)
            .await?;
        // One statement for the page and its steps, so that each
        // execution reads consistently with its steps.
        let rows = Sql::new(concat!(
            "SELECT ",
            execution_columns!(),
            ", ",
            step_run_columns!(),
            " FROM (SELECT * FROM executions WHERE project_uuid = $1 \
             ORDER BY created_at DESC, execution_id DESC LIMIT $2 OFFSET $3) e \
             LEFT JOIN execution_steps s ON s.execution_id = e.execution_id \
             ORDER BY e.created_at DESC, e.execution_id DESC, s.position, s.step_id"
        ))
        .bind(project_uuid)
        .bind(i64::from(page.limit))
        .bind(page.offset())
        .fetch_all::<ExecutionStepRow>(&self.pool)
        .await?;
        Ok(Page {
            items: rows::group_executions(rows)?,
            total,
            request: page,
        })
    }

    async fn active_execution(&self, project_uuid: &str) -> Result<Option<String>> {
        Ok(Sql::new(concat!(
            "SELECT execution_id FROM executions WHERE project_uuid = $1 AND status IN ",
            in_progress!()
        ))
        .bind(project_uuid)
        .scalar_optional::<String>(&self.pool)
        .await?)
    }

    async fn claim_execution(
        &self,
        execution_id: &str,
        owner: &str,
        lease_for: Duration,
    ) -> Result<Option<Lease>> {
        let now = domain::now();
        let expires_at = lease_expiry(now, lease_for)?;
        // One statement: on PostgreSQL a concurrent claim waits for
        // the row lock and then re-checks the WHERE clause against
        // the claimed row (now leased), on SQLite writes are serial.
        let attempt = Sql::new(concat!(
            "UPDATE executions SET attempt = attempt + 1, lease_owner = $2, \
             lease_expires_at = $3, \
             status = CASE WHEN status = 'queued' THEN 'running' ELSE status END, \
             started_at = COALESCE(started_at, $4) \
             WHERE execution_id = $1 AND status IN ",
            in_progress!(),
            " AND (lease_expires_at IS NULL OR lease_expires_at < $4) \
             RETURNING attempt"
        ))
        .bind(execution_id)
        .bind(owner)
        .bind(expires_at)
        .bind(now)
        .scalar_optional::<i64>(&self.pool)
        .await?;
        Ok(attempt.map(|attempt| Lease {
            execution_id: execution_id.to_owned(),
            owner: owner.to_owned(),
            attempt,
            expires_at,
        }))
    }

    async fn renew_lease(&self, lease: &Lease, lease_for: Duration) -> Result<Option<ExecutionStatus>> {
        let expires_at = lease_expiry(domain::now(), lease_for)?;
        let status = Sql::new(concat!(
            "UPDATE executions SET lease_expires_at = $3 \
             WHERE execution_id = $1 AND attempt = $2 AND status IN ",
            in_progress!(),
            " RETURNING status"
        ))
        .bind(&lease.execution_id)
        .bind(lease.attempt)
        .bind(expires_at)
        .scalar_optional::<String>(&self.pool)
        .await?;
        status
            .map(|status| rows::word("executions.status", &status))
            .transpose()
    }

    /// Every start counts one attempt: the first run, a retry after
    /// a transient failure, and a resume by a newer worker attempt.
    async fn start_step(&self, lease: &Lease, step_id: &str) -> Result<bool> {
        let update = Sql::new(
            "UPDATE execution_steps SET status = 'running', started_at = $3, \
             completed_at = NULL, rows_processed = 0, bytes_written = 0, \
             output_file = NULL, error_type = NULL, error_message = NULL, \
             waiting_reason = NULL, attempts = attempts + 1 \
             WHERE execution_id = $1 AND step_id = $2",
        )
        .bind(&lease.execution_id)
        .bind(step_id)
        .bind(domain::now());
        self.fenced_step_update(lease, update).await
    }

    async fn record_step_upload(&self, lease: &Lease, step_id: &str, upload: Option<&str>) -> Result<bool> {
        let update = Sql::new(
            "UPDATE execution_steps SET open_upload = $3 \
             WHERE execution_id = $1 AND step_id = $2",
        )
        .bind(&lease.execution_id)
        .bind(step_id)
        .bind(upload);
        self.fenced_step_update(lease, update).await
    }

    async fn step_progress(&self, lease: &Lease, step_id: &str, rows: i64, bytes: i64) -> Result<bool> {
        let update = Sql::new(
            "UPDATE execution_steps SET rows_processed = $3, bytes_written = $4 \
             WHERE execution_id = $1 AND step_id = $2 AND status = 'running'",
        )
        .bind(&lease.execution_id)
        .bind(step_id)
        .bind(rows)
        .bind(bytes);
        self.fenced_step_update(lease, update).await
    }

    async fn step_waiting(&self, lease: &Lease, step_id: &str, reason: Option<&str>) -> Result<bool> {
        let update = Sql::new(
            "UPDATE execution_steps SET waiting_reason = $3 \
             WHERE execution_id = $1 AND step_id = $2 AND status = 'running'",
        )
        .bind(&lease.execution_id)
        .bind(step_id)
        .bind(reason);
        self.fenced_step_update(lease, update).await
    }

    async fn complete_step(&self, lease: &Lease, step_id: &str, output: StepOutput<'_>) -> Result<bool> {
        let update = Sql::new(
            "UPDATE execution_steps SET status = 'completed', \
             started_at = COALESCE(started_at, $3), completed_at = $3, \
             rows_processed = $4, bytes_written = $5, output_file = $6, \
             open_upload = NULL, error_type = NULL, error_message = NULL \
             WHERE execution_id = $1 AND step_id = $2",
        )
        .bind(&lease.execution_id)
        .bind(step_id)
        .bind(domain::now())
        .bind(output.rows)
        .bind(output.bytes)
        .bind(output.output_file);
        self.fenced_step_update(lease, update).await
    }

    async fn fail_step(&self, lease: &Lease, step_id: &str, error: &StepError) -> Result<bool> {
        let Some(mut tx) = self.fenced(lease).await? else {
            return Ok(false);
        };
        let now = domain::now();
        let updated = Sql::new(
            "UPDATE execution_steps SET status = 'failed', \
             started_at = COALESCE(started_at, $3), completed_at = $3, \
             error_type = $4, error_message = $5 \
             WHERE execution_id = $1 AND step_id = $2",
        )
        .bind(&lease.execution_id)
        .bind(step_id)
        .bind(now)
        .bind(error.error_type.as_str())
        .bind(&error.message)
        .execute(&mut tx)
        .await?;
        if updated == 0 {
            return Ok(false);
        }
        // Steps run in order, so every step still pending comes later.
        Sql::new(
            "UPDATE execution_steps SET status = 'skipped' \
             WHERE execution_id = $1 AND status = 'pending'",
        )
        .bind(&lease.execution_id)
        .execute(&mut tx)
        .await?;
        Self::end_execution(&mut tx, &lease.execution_id, ExecutionStatus::Failed, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn finish_execution(&self, lease: &Lease, status: ExecutionStatus) -> Result<bool> {
        if !matches!(status, ExecutionStatus::Completed | ExecutionStatus::Cancelled) {
            return Err(Error::internal(format!(
                "an execution is finished as completed or cancelled, not {}",
                status.as_str()
            )));
        }
        let Some(mut tx) = self.fenced(lease).await? else {
            return Ok(false);
        };
        let now = domain::now();
        if status == ExecutionStatus::Cancelled {
            Sql::new(
                "UPDATE execution_steps SET status = CASE status \
                 WHEN 'running' THEN 'cancelled' ELSE 'skipped' END, \
                 completed_at = CASE status WHEN 'running' THEN $2 ELSE completed_at END \
                 WHERE execution_id = $1 AND status IN ('running', 'pending')",
            )
            .bind(&lease.execution_id)
            .bind(now)
            .execute(&mut tx)
            .await?;
        }
        Self::end_execution(&mut tx, &lease.execution_id, status, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn request_cancel(
        &self,
        org_id: &str,
        project_uuid: &str,
        execution_id: &str,
    ) -> Result<Option<Execution>> {
        let mut tx = self.pool.begin().await?;
        let status = Sql::new(tx.dialect().locked(
            "SELECT status FROM executions \
             WHERE execution_id = $1 AND project_uuid = $2 AND org_id = $3",
        ))
        .bind(execution_id)
        .bind(project_uuid)
        .bind(org_id)
        .scalar_optional::<String>(&mut tx)
        .await?;
        let Some(status) = status else {
            return Ok(None);
        };
        match rows::word("executions.status", &status)? {
            ExecutionStatus::Queued => {
                // No worker has it: it ends here.
                Sql::new(
                    "UPDATE execution_steps SET status = 'cancelled' \
                     WHERE execution_id = $1 AND status IN ('pending', 'running')",
                )
                .bind(execution_id)
                .execute(&mut tx)
                .await?;
                Self::end_execution(&mut tx, execution_id, ExecutionStatus::Cancelled, domain::now()).await?;
            }
            ExecutionStatus::Running => {
                // The worker learns of it when it renews its lease.
                Sql::new("UPDATE executions SET status = 'cancelling' WHERE execution_id = $1")
                    .bind(execution_id)
                    .execute(&mut tx)
                    .await?;
            }
            ExecutionStatus::Cancelling => {}
            ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled => {
                return Err(Error::conflict("Execution already finished"));
            }
        }
        tx.commit().await?;
        self.get_execution(org_id, project_uuid, execution_id).await
    }

    async fn executions_to_reap(
        &self,
        now: DateTime<Utc>,
        queued_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>> {
        // In progress with an expired lease; or with none: queued for
        // longer than the grace (its job may be lost), or running or
        // cancelling (which a lease-less row should never be).
        Ok(Sql::new(concat!(
            "SELECT execution_id FROM executions WHERE status IN ",
            in_progress!(),
            " AND (lease_expires_at < $1 \
             OR (lease_expires_at IS NULL AND (status <> 'queued' OR created_at < $2))) \
             ORDER BY created_at, execution_id LIMIT $3"
        ))
        .bind(now)
        .bind(queued_before)
        .bind(limit)
        .scalar_all::<String>(&self.pool)
        .await?)
    }

    async fn active_executions_using(&self, org_id: &str, connector_uuid: &str) -> Result<i64> {
        let sql = format!(
            "SELECT COUNT(*) FROM executions e WHERE e.org_id = $1 AND e.status IN {in_progress} \
             AND EXISTS (SELECT 1 FROM execution_steps s \
             WHERE s.execution_id = e.execution_id AND {step_connector} = $2)",
            in_progress = in_progress!(),
            step_connector = self.pool.dialect().step_connector_uuid(),
        );
        Ok(Sql::new(AssertSqlSafe(sql))
            .bind(org_id)
            .bind(connector_uuid)
            .scalar_one::<i64>(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn lease_expiry_adds_the_duration_to_the_microsecond() {
        let now = Utc.timestamp_opt(1_700_000_000, 0).single().expect("valid time");
        let expiry = lease_expiry(now, Duration::from_nanos(1_500_000_999)).expect("in range");
        assert_eq!(expiry - now, chrono::Duration::microseconds(1_500_000));
        assert!(lease_expiry(now, Duration::MAX).is_err());
    }

    #[test]
    fn already_executing_names_the_execution_in_progress() {
        let Error::Conflict { message, extra } = already_executing(Some("exec_1".to_owned())) else {
            panic!("not a conflict");
        };
        assert_eq!(message, "Project is already executing");
        assert_eq!(extra.get("execution_id"), Some(&serde_json::json!("exec_1")));
    }
}
