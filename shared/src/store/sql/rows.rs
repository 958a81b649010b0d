//! Rows as the SQL backends return them, and their one conversion into
//! domain types. Both backends decode into the same row structs (the
//! `FromRow` derives are generic over the database).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;

use crate::domain::{
    Connector, ConnectorUsage, Execution, Project, ProjectSummary, Role, Sealed, Step, StepError, StepRun,
    TestRecord,
};
use crate::error::{Error, Result};
use crate::store::Grant;

/// The columns of a [`ProjectRow`], for a `FROM projects p`.
macro_rules! project_columns {
    () => {
        "p.uuid, p.org_id, p.name, p.description, p.connector_uuids, p.metadata, \
         p.created_by, p.created_at, p.updated_at, p.last_executed_at, p.status"
    };
}
pub(crate) use project_columns;

/// The columns of a [`StepRow`].
macro_rules! step_columns {
    () => {
        "step_id, project_uuid, name, step_type, position, config, dependencies, \
         created_at, updated_at"
    };
}
pub(crate) use step_columns;

/// The columns of a [`GrantRow`].
macro_rules! grant_columns {
    () => {
        "resource_type, resource_uuid, user_id, role, granted_by, granted_at"
    };
}
pub(crate) use grant_columns;

/// The columns of a [`ConnectorRow`], for a `FROM connectors c`.
macro_rules! connector_columns {
    () => {
        "c.uuid, c.org_id, c.connector_type, c.display_name, c.config, c.secrets_key_id, \
         c.secrets_nonce, c.secrets_ciphertext, c.config_version, c.status, c.auth_type, \
         c.created_by, c.created_at, c.updated_at, c.last_tested_at, c.last_test_status, \
         c.disabled_at, c.disabled_by, c.disabled_reason"
    };
}
pub(crate) use connector_columns;

/// The columns of a [`TestRow`].
macro_rules! test_columns {
    () => {
        "connector_uuid, tested_at, success, latency_ms, error_type, error_message"
    };
}
pub(crate) use test_columns;

/// The columns of an [`ExecutionRow`], for a `FROM executions e`.
macro_rules! execution_columns {
    () => {
        "e.execution_id, e.project_uuid, e.org_id, e.status, e.trigger, e.parameters, \
         e.notify_on_completion, e.created_by, e.created_at, e.started_at, e.completed_at, \
         e.attempt, e.lease_owner, e.lease_expires_at"
    };
}
pub(crate) use execution_columns;

/// The columns of a [`StepRunRow`], for a `LEFT JOIN execution_steps s`
/// (renamed, since executions have columns of the same names).
macro_rules! step_run_columns {
    () => {
        "s.step_id AS run_step_id, s.position AS run_position, s.name AS run_name, \
         s.step_type AS run_step_type, s.config AS run_config, s.status AS run_status, \
         s.started_at AS run_started_at, s.completed_at AS run_completed_at, \
         s.rows_processed AS run_rows_processed, s.bytes_written AS run_bytes_written, \
         s.output_file AS run_output_file, s.error_type AS run_error_type, \
         s.error_message AS run_error_message, s.open_upload AS run_open_upload, \
         s.attempts AS run_attempts, s.waiting_reason AS run_waiting_reason"
    };
}
pub(crate) use step_run_columns;

#[derive(sqlx::FromRow)]
pub(super) struct ProjectRow {
    uuid: String,
    org_id: String,
    name: String,
    description: Option<String>,
    connector_uuids: Json<Vec<String>>,
    metadata: Option<Json<Value>>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_executed_at: Option<DateTime<Utc>>,
    status: String,
}

impl TryFrom<ProjectRow> for Project {
    type Error = Error;

    fn try_from(row: ProjectRow) -> Result<Self> {
        Ok(Project {
            status: word("projects.status", &row.status)?,
            uuid: row.uuid,
            org_id: row.org_id,
            name: row.name,
            description: row.description,
            connector_uuids: row.connector_uuids.0,
            metadata: row.metadata.map(|json| json.0),
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_executed_at: row.last_executed_at,
        })
    }
}

/// A listed project: its row, its step count and the caller's role.
#[derive(sqlx::FromRow)]
pub(super) struct SummaryRow {
    #[sqlx(flatten)]
    project: ProjectRow,
    step_count: i64,
    role: String,
}

impl TryFrom<SummaryRow> for ProjectSummary {
    type Error = Error;

    fn try_from(row: SummaryRow) -> Result<Self> {
        Ok(ProjectSummary {
            role: word("grants.role", &row.role)?,
            project: Project::try_from(row.project)?,
            step_count: row.step_count,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct StepRow {
    step_id: String,
    project_uuid: String,
    name: String,
    step_type: String,
    position: i32,
    config: Json<Value>,
    dependencies: Json<Vec<String>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<StepRow> for Step {
    type Error = Error;

    fn try_from(row: StepRow) -> Result<Self> {
        Ok(Step {
            step_type: word("steps.step_type", &row.step_type)?,
            step_id: row.step_id,
            project_uuid: row.project_uuid,
            name: row.name,
            order: row.position,
            config: row.config.0,
            dependencies: row.dependencies.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct GrantRow {
    resource_type: String,
    resource_uuid: String,
    user_id: String,
    role: String,
    granted_by: String,
    granted_at: DateTime<Utc>,
}

impl TryFrom<GrantRow> for Grant {
    type Error = Error;

    fn try_from(row: GrantRow) -> Result<Self> {
        Ok(Grant {
            resource: word("grants.resource_type", &row.resource_type)?,
            role: word("grants.role", &row.role)?,
            resource_uuid: row.resource_uuid,
            user_id: row.user_id,
            granted_by: row.granted_by,
            granted_at: row.granted_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ConnectorRow {
    uuid: String,
    org_id: String,
    connector_type: String,
    display_name: String,
    config: Json<Map<String, Value>>,
    secrets_key_id: String,
    secrets_nonce: Vec<u8>,
    secrets_ciphertext: Vec<u8>,
    config_version: i64,
    status: String,
    auth_type: String,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_tested_at: Option<DateTime<Utc>>,
    last_test_status: Option<String>,
    disabled_at: Option<DateTime<Utc>>,
    disabled_by: Option<String>,
    disabled_reason: Option<String>,
}

impl TryFrom<ConnectorRow> for Connector {
    type Error = Error;

    fn try_from(row: ConnectorRow) -> Result<Self> {
        Ok(Connector {
            status: word("connectors.status", &row.status)?,
            last_test_status: row
                .last_test_status
                .map(|status| word("connectors.last_test_status", &status))
                .transpose()?,
            uuid: row.uuid,
            org_id: row.org_id,
            connector_type: row.connector_type,
            display_name: row.display_name,
            config: row.config.0,
            secrets: Sealed {
                key_id: row.secrets_key_id,
                nonce: row.secrets_nonce,
                ciphertext: row.secrets_ciphertext,
            },
            config_version: row.config_version,
            auth_type: row.auth_type,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_tested_at: row.last_tested_at,
            disabled_at: row.disabled_at,
            disabled_by: row.disabled_by,
            disabled_reason: row.disabled_reason,
        })
    }
}

/// A listed connector and the caller's role on it.
#[derive(sqlx::FromRow)]
pub(super) struct ConnectorRoleRow {
    #[sqlx(flatten)]
    connector: ConnectorRow,
    role: String,
}

impl TryFrom<ConnectorRoleRow> for (Connector, Role) {
    type Error = Error;

    fn try_from(row: ConnectorRoleRow) -> Result<Self> {
        Ok((
            Connector::try_from(row.connector)?,
            word("grants.role", &row.role)?,
        ))
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct UsageRow {
    project_uuid: String,
    project_name: String,
    step_count: i64,
}

impl From<UsageRow> for ConnectorUsage {
    fn from(row: UsageRow) -> Self {
        ConnectorUsage {
            project_uuid: row.project_uuid,
            project_name: row.project_name,
            step_count: row.step_count,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct TestRow {
    connector_uuid: String,
    tested_at: DateTime<Utc>,
    success: bool,
    latency_ms: i64,
    error_type: Option<String>,
    error_message: Option<String>,
}

impl From<TestRow> for TestRecord {
    fn from(row: TestRow) -> Self {
        TestRecord {
            connector_uuid: row.connector_uuid,
            tested_at: row.tested_at,
            success: row.success,
            latency_ms: row.latency_ms,
            error_type: row.error_type,
            error_message: row.error_message,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ExecutionRow {
    execution_id: String,
    project_uuid: String,
    org_id: String,
    status: String,
    trigger: String,
    parameters: Json<Map<String, Value>>,
    notify_on_completion: bool,
    created_by: String,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    attempt: i64,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
}

impl TryFrom<ExecutionRow> for Execution {
    type Error = Error;

    fn try_from(row: ExecutionRow) -> Result<Self> {
        Ok(Execution {
            status: word("executions.status", &row.status)?,
            trigger: word("executions.trigger", &row.trigger)?,
            execution_id: row.execution_id,
            project_uuid: row.project_uuid,
            org_id: row.org_id,
            parameters: row.parameters.0,
            notify_on_completion: row.notify_on_completion,
            created_by: row.created_by,
            created_at: row.created_at,
            started_at: row.started_at,
            completed_at: row.completed_at,
            attempt: row.attempt,
            lease_owner: row.lease_owner,
            lease_expires_at: row.lease_expires_at,
            steps: Vec::new(),
        })
    }
}

/// An execution step as a `LEFT JOIN` returns it: all `None` for an
/// execution without steps.
#[derive(sqlx::FromRow)]
pub(super) struct StepRunRow {
    run_step_id: Option<String>,
    run_position: Option<i32>,
    run_name: Option<String>,
    run_step_type: Option<String>,
    run_config: Option<Json<Value>>,
    run_status: Option<String>,
    run_started_at: Option<DateTime<Utc>>,
    run_completed_at: Option<DateTime<Utc>>,
    run_rows_processed: Option<i64>,
    run_bytes_written: Option<i64>,
    run_output_file: Option<String>,
    run_error_type: Option<String>,
    run_error_message: Option<String>,
    run_open_upload: Option<String>,
    run_attempts: Option<i32>,
    run_waiting_reason: Option<String>,
}

impl StepRunRow {
    fn into_step_run(self) -> Result<Option<StepRun>> {
        let Some(step_id) = self.run_step_id else {
            return Ok(None);
        };
        let missing = |column: &str| Error::internal(format!("execution_steps.{column} is null"));
        let status = self.run_status.ok_or_else(|| missing("status"))?;
        Ok(Some(StepRun {
            status: word("execution_steps.status", &status)?,
            step_id,
            position: self.run_position.ok_or_else(|| missing("position"))?,
            name: self.run_name.ok_or_else(|| missing("name"))?,
            step_type: self.run_step_type.ok_or_else(|| missing("step_type"))?,
            config: self.run_config.ok_or_else(|| missing("config"))?.0,
            started_at: self.run_started_at,
            completed_at: self.run_completed_at,
            rows_processed: self.run_rows_processed.unwrap_or_default(),
            bytes_written: self.run_bytes_written.unwrap_or_default(),
            output_file: self.run_output_file,
            open_upload: self.run_open_upload,
            attempts: self.run_attempts.unwrap_or_default(),
            waiting_reason: self.run_waiting_reason,
            error: self
                .run_error_type
                .map(|error_type| {
                    Ok::<_, Error>(StepError {
                        error_type: word("execution_steps.error_type", &error_type)?,
                        message: self.run_error_message.unwrap_or_default(),
                    })
                })
                .transpose()?,
        }))
    }
}

/// One row of an execution joined with one of its steps.
#[derive(sqlx::FromRow)]
pub(super) struct ExecutionStepRow {
    #[sqlx(flatten)]
    execution: ExecutionRow,
    #[sqlx(flatten)]
    step: StepRunRow,
}

/// Folds execution/step rows, ordered by execution then step position, into
/// executions with their steps, in the rows' order.
pub(super) fn group_executions(rows: Vec<ExecutionStepRow>) -> Result<Vec<Execution>> {
    let mut executions: Vec<Execution> = Vec::new();
    for row in rows {
        let step = row.step.into_step_run()?;
        match executions.last_mut() {
            Some(last) if last.execution_id == row.execution.execution_id => last.steps.extend(step),
            _ => {
                let mut execution = Execution::try_from(row.execution)?;
                execution.steps.extend(step);
                executions.push(execution);
            }
        }
    }
    Ok(executions)
}

/// A stored word of `T`'s vocabulary (a status, a role, a type). A word
/// outside it is a corrupt row, which the schema's checks should have made
/// impossible: an internal error naming the column and the value.
pub(super) fn word<T: FromStr>(column: &str, text: &str) -> Result<T> {
    text.parse()
        .map_err(|_| Error::internal(format!("unexpected value {text:?} in {column}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ExecutionStatus, ResourceKind};

    #[test]
    fn a_stored_word_reads_as_its_variant_and_any_other_is_a_corrupt_row_naming_the_column() {
        assert_eq!(
            word::<Role>("grants.role", "editor").expect("a role"),
            Role::Editor
        );
        assert_eq!(
            word::<ResourceKind>("grants.resource_type", "connector").expect("a kind"),
            ResourceKind::Connector
        );
        assert_eq!(
            word::<ExecutionStatus>("executions.status", "cancelling").expect("a status"),
            ExecutionStatus::Cancelling
        );
        match word::<Role>("grants.role", "Admin") {
            Err(Error::Internal { message, .. }) => {
                assert_eq!(message, r#"unexpected value "Admin" in grants.role"#);
            }
            other => panic!("expected an internal error, got {other:?}"),
        }
    }
}
