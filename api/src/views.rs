//! Response bodies and the helpers that build them from domain types. Every
//! timestamp is RFC 3339 in UTC with millisecond precision.

use chrono::{DateTime, SecondsFormat, Utc};
use ferry_shared::domain::{Page, Permissions, Project, ProjectSummary, Role, Step, StepType};
use ferry_shared::store::ProjectSchedule;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Formats a timestamp the way every response does.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Deserializes a field that distinguishes "absent" (`None`) from `null`
/// (`Some(None)`); use with `#[serde(default)]`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The seeds' `permissions` block.
#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionsView {
    pub can_edit: bool,
    pub can_delete: bool,
    pub can_share: bool,
    /// `owner`, `editor` or `viewer`.
    #[schema(example = "owner")]
    pub role: String,
}

impl From<Permissions> for PermissionsView {
    fn from(permissions: Permissions) -> Self {
        let Permissions {
            can_edit,
            can_delete,
            can_share,
            role,
        } = permissions;
        PermissionsView {
            can_edit,
            can_delete,
            can_share,
            role: role.as_str().to_owned(),
        }
    }
}

/// A step as listed inside its project.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectStepView {
    #[schema(example = "step_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub step_id: String,
    pub name: String,
    #[serde(rename = "type")]
    #[schema(example = json!(StepType::SqlQuery))]
    pub step_type: String,
    pub order: i32,
    /// The step's status in the project's latest execution (`pending` when
    /// there is none).
    #[schema(example = "pending")]
    pub status: String,
}

/// Who created a resource, and when it was created and last changed: part
/// of every project and connector body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Provenance {
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl Provenance {
    pub fn new(created_by: String, created_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> Self {
        Provenance {
            created_by,
            created_at: timestamp(created_at),
            updated_at: timestamp(updated_at),
        }
    }
}

/// The fields of a project that every project body shows, listed or not.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectFields {
    #[schema(example = "proj_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub uuid: String,
    pub name: String,
    pub description: Option<String>,
    pub connector_uuids: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    #[schema(inline)]
    pub provenance: Provenance,
    #[schema(format = DateTime)]
    pub last_executed_at: Option<String>,
    /// `draft`, `active` or `archived`.
    #[schema(example = "draft")]
    pub status: String,
    /// The cron schedule, or null (see `PUT /api/projects/{uuid}`).
    pub schedule: Option<ScheduleView>,
    /// When the schedule fires next (read-only); null without an enabled
    /// schedule.
    #[schema(format = DateTime)]
    pub next_run_at: Option<String>,
}

/// A project's cron schedule as shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    #[schema(example = "0 6 * * 1-5")]
    pub cron: String,
    #[schema(example = "Europe/Berlin")]
    pub timezone: String,
    /// The parameters of every scheduled execution.
    #[schema(value_type = Object)]
    pub parameters: serde_json::Map<String, Value>,
    pub enabled: bool,
}

impl ProjectFields {
    /// Shows the project's stored schedule and its next tick.
    pub fn set_schedule(&mut self, stored: Option<&ProjectSchedule>) {
        self.schedule = stored.map(|stored| ScheduleView {
            cron: stored.schedule.cron.clone(),
            timezone: stored.schedule.timezone.clone(),
            parameters: stored.schedule.parameters.clone(),
            enabled: stored.schedule.enabled,
        });
        self.next_run_at = stored.and_then(|stored| stored.next_run_at).map(timestamp);
    }
}

impl From<Project> for ProjectFields {
    fn from(project: Project) -> Self {
        ProjectFields {
            uuid: project.uuid,
            name: project.name,
            description: project.description,
            connector_uuids: project.connector_uuids,
            metadata: project.metadata,
            provenance: Provenance::new(project.created_by, project.created_at, project.updated_at),
            last_executed_at: project.last_executed_at.map(timestamp),
            status: project.status.as_str().to_owned(),
            schedule: None,
            next_run_at: None,
        }
    }
}

/// A project with its steps and the caller's permissions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    #[serde(flatten)]
    #[schema(inline)]
    pub project: ProjectFields,
    pub step_count: usize,
    pub steps: Vec<ProjectStepView>,
    pub permissions: PermissionsView,
}

impl ProjectView {
    pub fn new(project: Project, steps: &[Step], role: Role) -> Self {
        ProjectView {
            project: project.into(),
            step_count: steps.len(),
            steps: steps
                .iter()
                .map(|step| ProjectStepView {
                    step_id: step.step_id.clone(),
                    name: step.name.clone(),
                    step_type: step.step_type.as_str().to_owned(),
                    order: step.order,
                    status: "pending".to_owned(),
                })
                .collect(),
            permissions: role.permissions().into(),
        }
    }
}

/// A project as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectListItem {
    #[serde(flatten)]
    #[schema(inline)]
    pub project: ProjectFields,
    pub step_count: i64,
    pub permissions: PermissionsView,
}

impl From<ProjectSummary> for ProjectListItem {
    fn from(summary: ProjectSummary) -> Self {
        ProjectListItem {
            project: summary.project.into(),
            step_count: summary.step_count,
            permissions: summary.role.permissions().into(),
        }
    }
}

/// The pagination block of every paginated list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    pub page: u32,
    pub limit: u32,
    pub total: i64,
    pub total_pages: i64,
    pub has_next: bool,
    pub has_prev: bool,
}

impl Pagination {
    pub fn of<T>(page: &Page<T>) -> Self {
        Pagination {
            page: page.request.page,
            limit: page.request.limit,
            total: page.total,
            total_pages: page.total_pages(),
            has_next: page.has_next(),
            has_prev: page.has_prev(),
        }
    }
}

/// A page of projects.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectList {
    pub data: Vec<ProjectListItem>,
    pub pagination: Pagination,
}

/// A step.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    #[schema(example = "step_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub step_id: String,
    pub project_uuid: String,
    pub name: String,
    #[serde(rename = "type")]
    #[schema(example = json!(StepType::SqlQuery))]
    pub step_type: String,
    /// 1-based position in the project.
    pub order: i32,
    #[schema(value_type = Object)]
    pub config: Value,
    pub dependencies: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<Step> for StepView {
    fn from(step: Step) -> Self {
        StepView {
            step_id: step.step_id,
            project_uuid: step.project_uuid,
            name: step.name,
            step_type: step.step_type.as_str().to_owned(),
            order: step.order,
            config: step.config,
            dependencies: step.dependencies,
            created_at: timestamp(step.created_at),
            updated_at: timestamp(step.updated_at),
        }
    }
}

/// A list of steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepList {
    pub data: Vec<StepView>,
}

/// The seeds' error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: validation_error, unauthorized, forbidden, not_found,
    /// conflict, connection_failed, rate_limited, payload_too_large,
    /// method_not_allowed, service_unavailable, internal_error.
    #[schema(example = "validation_error")]
    pub error: String,
    pub message: String,
    /// The request field at fault (validation errors).
    pub field: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use ferry_shared::domain::ProjectStatus;

    use super::*;

    fn project() -> Project {
        let at = |second| {
            Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, second)
                .single()
                .expect("time")
        };
        Project {
            uuid: "proj_1".into(),
            org_id: "org_1".into(),
            name: "Sales".into(),
            description: None,
            connector_uuids: vec!["conn_1".into()],
            metadata: Some(serde_json::json!({"team": "a"})),
            created_by: "user_1".into(),
            created_at: at(5),
            updated_at: at(6),
            last_executed_at: Some(at(7)),
            status: ProjectStatus::Active,
        }
    }

    /// The top-level keys of `body` as serialized, in their order.
    fn keys(body: &impl Serialize) -> Vec<String> {
        struct Keys(Vec<String>);
        impl<'de> Deserialize<'de> for Keys {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl<'de> serde::de::Visitor<'de> for Visitor {
                    type Value = Keys;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                        let mut keys = Vec::new();
                        while let Some((key, serde::de::IgnoredAny)) = map.next_entry()? {
                            keys.push(key);
                        }
                        Ok(Keys(keys))
                    }
                }
                deserializer.deserialize_map(Visitor)
            }
        }
        let text = serde_json::to_string(body).expect("encode");
        serde_json::from_str::<Keys>(&text).expect("an object").0
    }

    #[test]
    fn a_project_body_shows_its_fields_flat_and_in_the_seed_order() {
        let view = ProjectView::new(project(), &[], Role::Editor);
        let expected = [
            "uuid",
            "name",
            "description",
            "connector_uuids",
            "metadata",
            "created_by",
            "created_at",
            "updated_at",
            "last_executed_at",
            "status",
            "schedule",
            "next_run_at",
            "step_count",
            "steps",
            "permissions",
        ];
        assert_eq!(keys(&view), expected);
        let view = serde_json::to_value(view).expect("encode");
        assert_eq!(view["created_by"], "user_1");
        assert_eq!(view["created_at"], "2025-01-02T03:04:05.000Z");
        assert_eq!(view["updated_at"], "2025-01-02T03:04:06.000Z");
        assert_eq!(view["last_executed_at"], "2025-01-02T03:04:07.000Z");
        assert_eq!(view["status"], "active");
        assert_eq!(view["permissions"]["role"], "editor");

        let item = ProjectListItem::from(ProjectSummary {
            project: project(),
            step_count: 3,
            role: Role::Viewer,
        });
        let listed: Vec<&str> = expected.into_iter().filter(|key| *key != "steps").collect();
        assert_eq!(keys(&item), listed);
        let item = serde_json::to_value(item).expect("encode");
        assert_eq!(item["step_count"], 3);
        assert_eq!(item["created_at"], "2025-01-02T03:04:05.000Z");
        assert_eq!(item["permissions"]["role"], "viewer");
    }
}
