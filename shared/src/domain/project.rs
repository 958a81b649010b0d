//! Projects: a named, ordered set of steps owned by an organization.

use chrono::{DateTime, Utc};
use serde_json::Value;
use strum::EnumString;

use super::word::word_enum;
use super::{PageRequest, Role, SortOrder};

word_enum! {
    /// Project lifecycle: `draft` until the first accepted execution, then
    /// `active`; `archived` after a soft delete.
    pub enum ProjectStatus in "lowercase" {
        Draft,
        Active,
        Archived,
    }
}

/// A stored project.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub uuid: String,
    pub org_id: String,
    pub name: String,
    pub description: Option<String>,
    pub connector_uuids: Vec<String>,
    pub metadata: Option<Value>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_executed_at: Option<DateTime<Utc>>,
    pub status: ProjectStatus,
}

/// What a caller supplies to create a project (already validated).
#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub description: Option<String>,
    pub connector_uuids: Vec<String>,
    pub metadata: Option<Value>,
}

impl NewProject {
    /// The project as first stored: a fresh id, `draft`, created now.
    pub fn into_project(self, org_id: &str, created_by: &str) -> Project {
        let now = super::now();
        Project {
            uuid: crate::ids::IdKind::Project.generate(),
            org_id: org_id.to_owned(),
            name: self.name,
            description: self.description,
            connector_uuids: self.connector_uuids,
            metadata: self.metadata,
            created_by: created_by.to_owned(),
            created_at: now,
            updated_at: now,
            last_executed_at: None,
            status: ProjectStatus::Draft,
        }
    }
}

/// A partial update: `None` leaves a field as it is; `Some(None)` clears an
/// optional field.
#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub connector_uuids: Option<Vec<String>>,
    pub metadata: Option<Option<Value>>,
    pub status: Option<ProjectStatus>,
}

impl ProjectPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.description.is_none()
            && self.connector_uuids.is_none()
            && self.metadata.is_none()
            && self.status.is_none()
    }

    /// Applies the patch to `project`, stamping `updated_at`.
    pub fn apply(self, project: &mut Project) {
        if let Some(name) = self.name {
            project.name = name;
        }
        if let Some(description) = self.description {
            project.description = description;
        }
        if let Some(connector_uuids) = self.connector_uuids {
            project.connector_uuids = connector_uuids;
        }
        if let Some(metadata) = self.metadata {
            project.metadata = metadata;
        }
        if let Some(status) = self.status {
            project.status = status;
        }
        project.updated_at = super::now();
    }
}

/// Sort fields of the project list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum ProjectSort {
    #[default]
    CreatedAt,
    UpdatedAt,
    Name,
}

impl ProjectSort {
    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

/// A validated project list request, scoped to the caller.
#[derive(Debug, Clone)]
pub struct ProjectListQuery {
    pub org_id: String,
    pub user_id: String,
    /// Admins see every project of the organization.
    pub is_admin: bool,
    pub page: PageRequest,
    pub sort: ProjectSort,
    pub order: SortOrder,
    /// `None` shows every status but `archived`.
    pub status: Option<ProjectStatus>,
    /// Case-insensitive substring of name or description.
    pub search: Option<String>,
}

/// A project as listed: with its step count and the caller's role.
#[derive(Debug, Clone)]
pub struct ProjectSummary {
    pub project: Project,
    pub step_count: i64,
    pub role: Role,
}

/// The lowercased text that project search matches against; computed in one
/// place so both backends search identically (Unicode-aware lowercasing).
pub fn search_text(name: &str, description: Option<&str>) -> String {
    let mut text = name.to_lowercase();
    if let Some(description) = description {
        text.push('\n');
        text.push_str(&description.to_lowercase());
    }
    text
}
