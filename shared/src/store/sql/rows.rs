//! Rows as the SQL backends return them, and their one conversion into
//! domain types. Both backends decode into the same row structs (the
//! `FromRow` derives are generic over the database).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use crate::domain::{Project, ProjectStatus, ProjectSummary, ResourceKind, Role, Step, StepType};
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
            status: ProjectStatus::parse(&row.status)
                .ok_or_else(|| corrupt("projects.status", &row.status))?,
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
            role: parse_role(&row.role)?,
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
            step_type: StepType::parse(&row.step_type)
                .ok_or_else(|| corrupt("steps.step_type", &row.step_type))?,
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
            resource: parse_resource(&row.resource_type)?,
            role: parse_role(&row.role)?,
            resource_uuid: row.resource_uuid,
            user_id: row.user_id,
            granted_by: row.granted_by,
            granted_at: row.granted_at,
        })
    }
}

/// Converts a list of rows, failing on the first one that does not convert.
pub(super) fn convert_all<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = Error>,
{
    rows.into_iter().map(T::try_from).collect()
}

pub(super) fn parse_role(text: &str) -> Result<Role> {
    Role::parse(text).ok_or_else(|| corrupt("grants.role", text))
}

fn parse_resource(text: &str) -> Result<ResourceKind> {
    [ResourceKind::Project, ResourceKind::Connector]
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| corrupt("grants.resource_type", text))
}

/// A stored value the schema's checks should have made impossible.
fn corrupt(column: &str, value: &str) -> Error {
    Error::internal(format!("unexpected value {value:?} in {column}"))
}
