//! Projects API (`/api/projects`): create, list, get, update, delete.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ferry_shared::domain::{
    NewProject, PageRequest, Principal, Project, ProjectListQuery, ProjectPatch, ProjectSort, ProjectStatus,
    ResourceKind, Role, SortOrder,
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json, Query};
use crate::views::{ErrorBody, Pagination, ProjectList, ProjectListItem, ProjectView, nullable};
use ferry_shared::Error;
use ferry_shared::domain::{Schedule, Step, params};
use ferry_shared::store::ProjectSchedule;
use serde_json::Map;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_project, list_projects))
        .routes(routes!(get_project, update_project, delete_project))
}

const MAX_DESCRIPTION: usize = 10_000;

/// Body of `POST /api/projects`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateProject {
    /// Required, 1–255 characters.
    #[schema(example = "Q4 Sales Analysis")]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Connectors the project uses (`conn_…`).
    #[serde(default)]
    pub connector_uuids: Option<Vec<String>>,
    /// Free-form JSON object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Body of `PUT /api/projects/{uuid}`: fields present are changed; `null`
/// clears `description` and `metadata`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateProject {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub connector_uuids: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Option<Value>>,
    /// `active` or `archived` (a project never returns to `draft`).
    #[schema(value_type = Option<String>, example = "active")]
    pub status: Option<ProjectStatus>,
    /// The cron schedule; `null` removes it. See the operation's description.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<ScheduleInput>)]
    pub schedule: Option<Option<Value>>,
}

/// The `schedule` of `PUT /api/projects/{uuid}`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)] // documents the shape; the handler reads the JSON itself
pub struct ScheduleInput {
    /// Five fields (minute hour day-of-month month day-of-week) or one of
    /// `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
    #[schema(example = "0 6 * * 1-5")]
    pub cron: String,
    /// An IANA time zone name (default `UTC`).
    #[schema(example = "Europe/Berlin")]
    pub timezone: Option<String>,
    /// The parameters of every scheduled execution (default `{}`), checked
    /// against the steps' declared parameters as `execute` checks them.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Default `true`; a disabled schedule is kept but never fires.
    pub enabled: Option<bool>,
}

/// Query of `GET /api/projects`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListProjectsParams {
    /// Page number, from 1 (default 1).
    pub page: Option<String>,
    /// Results per page, 1–100 (default 20).
    pub limit: Option<String>,
    /// `created_at` (default), `updated_at` or `name`.
    pub sort: Option<String>,
    /// `asc` or `desc` (default).
    pub order: Option<String>,
    /// `draft`, `active` or `archived`; without it archived projects are hidden.
    pub status: Option<String>,
    /// Case-insensitive substring of the name or description.
    pub search: Option<String>,
}

/// Query of `DELETE /api/projects/{uuid}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteProjectParams {
    /// `true` removes the project and its steps; `false` (default) archives it.
    pub hard_delete: Option<String>,
}

/// Loads a project the caller may see, with the caller's role (see
/// [`super::visible`]).
pub(crate) async fn visible_project(
    state: &AppState,
    caller: &Principal,
    uuid: &str,
) -> ApiResult<(Project, Role)> {
    let load = state.backends.store.get_project(&caller.org_id, uuid);
    super::visible(state, caller, ResourceKind::Project, uuid, load).await
}

/// Loads a project the caller may change: editor or owner, not archived.
pub(crate) async fn editable_project(
    state: &AppState,
    caller: &Principal,
    uuid: &str,
) -> ApiResult<(Project, Role)> {
    let (project, role) = visible_project(state, caller, uuid).await?;
    super::permit(role.can_edit(), "edit this project")?;
    if project.status == ProjectStatus::Archived {
        return Err(Error::conflict("Cannot change an archived project").into());
    }
    Ok((project, role))
}

fn check_name(name: Option<&str>) -> ApiResult<String> {
    super::check_name("name", "Project name", name)
}

fn check_description(description: Option<String>) -> ApiResult<Option<String>> {
    match description {
        Some(text) if text.chars().count() > MAX_DESCRIPTION => Err(ApiError::validation(
            "description",
            format!("description is at most {MAX_DESCRIPTION} characters"),
        )),
        other => Ok(other),
    }
}

fn check_connector_uuids(ids: Vec<String>) -> ApiResult<Vec<String>> {
    for (i, id) in ids.iter().enumerate() {
        if !id.starts_with("conn_") || id.len() > 64 {
            return Err(ApiError::validation(
                format!("connector_uuids[{i}]"),
                "not a connector id (conn_…)",
            ));
        }
    }
    Ok(ids)
}

fn check_metadata(metadata: Option<Value>) -> ApiResult<Option<Value>> {
    match metadata {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(Value::Object(map))),
        Some(_) => Err(ApiError::validation("metadata", "metadata must be a JSON object")),
    }
}

/// Creates a project in the caller's organization; the caller becomes its owner.
#[utoipa::path(post, path = "/api/projects", tag = "projects", request_body = CreateProject,
    responses(
        (status = 201, description = "Created", body = ProjectView),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ))]
async fn create_project(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(body): Json<CreateProject>,
) -> ApiResult<impl IntoResponse> {
    let new = NewProject {
        name: check_name(body.name.as_deref())?,
        description: check_description(body.description)?,
        connector_uuids: check_connector_uuids(body.connector_uuids.unwrap_or_default())?,
        metadata: check_metadata(body.metadata)?,
    };
    let project = new.into_project(&caller.org_id, &caller.user_id);
    state.backends.store.create_project(&project).await?;
    tracing::info!(project_uuid = %project.uuid, "project created");
    Ok((
        StatusCode::CREATED,
        axum::Json(ProjectView::new(project, &[], Role::Owner)),
    ))
}

/// Lists the projects the caller may see.
#[utoipa::path(get, path = "/api/projects", tag = "projects", params(ListProjectsParams),
    responses(
        (status = 200, description = "A page of projects", body = ProjectList),
        (status = 400, description = "A parameter is out of range", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ))]
async fn list_projects(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<ListProjectsParams>,
) -> ApiResult<axum::Json<ProjectList>> {
    let query = ProjectListQuery {
        is_admin: caller.is_admin(),
        org_id: caller.org_id,
        user_id: caller.user_id,
        page: page_request(params.page.as_deref(), params.limit.as_deref())?,
        sort: match params.sort.as_deref() {
            None => ProjectSort::default(),
            Some(text) => ProjectSort::parse(text).ok_or_else(|| {
                ApiError::validation("sort", "sort must be one of created_at, updated_at, name")
            })?,
        },
        order: sort_order(params.order.as_deref())?,
        status: match params.status.as_deref() {
            None => None,
            Some(text) => Some(ProjectStatus::parse(text).ok_or_else(|| {
                ApiError::validation("status", "status must be one of draft, active, archived")
            })?),
        },
        search: params.search.filter(|s| !s.is_empty()),
    };
    let org_id = query.org_id.clone();
    let page = state.backends.store.list_projects(&query).await?;
    let pagination = Pagination::of(&page);
    let uuids: Vec<String> = page.items.iter().map(|item| item.project.uuid.clone()).collect();
    let schedules = state.backends.store.project_schedules(&org_id, &uuids).await?;
    let data = page
        .items
        .into_iter()
        .map(|summary| {
            let stored = schedules.iter().find(|s| s.project_uuid == summary.project.uuid);
            let mut item = ProjectListItem::from(summary);
            item.project.set_schedule(stored);
            item
        })
        .collect();
    Ok(axum::Json(ProjectList { data, pagination }))
}

/// Parses `page` and `limit`; out of range is an error, never clamped.
pub(crate) fn page_request(page: Option<&str>, limit: Option<&str>) -> ApiResult<PageRequest> {
    let page = match page {
        None => 1,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| ApiError::validation("page", "page must be an integer of at least 1"))?,
    };
    let limit = match limit {
        None => 20,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=PageRequest::MAX_LIMIT).contains(l))
            .ok_or_else(|| ApiError::validation("limit", "limit must be an integer from 1 to 100"))?,
    };
    Ok(PageRequest { page, limit })
}

pub(crate) fn sort_order(order: Option<&str>) -> ApiResult<SortOrder> {
    match order {
        None => Ok(SortOrder::default()),
        Some("asc") => Ok(SortOrder::Asc),
        Some("desc") => Ok(SortOrder::Desc),
        Some(_) => Err(ApiError::validation("order", "order must be asc or desc")),
    }
}

/// One project with its steps.
#[utoipa::path(get, path = "/api/projects/{uuid}", tag = "projects",
    params(("uuid" = String, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project", body = ProjectView),
        (status = 404, description = "No such project visible to the caller", body = ErrorBody),
    ))]
async fn get_project(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
) -> ApiResult<axum::Json<ProjectView>> {
    let (project, role) = visible_project(&state, &caller, &uuid).await?;
    let steps = state.backends.store.list_steps(&project.uuid).await?;
    let stored = state
        .backends
        .store
        .project_schedule(&caller.org_id, &project.uuid)
        .await?;
    let mut view = ProjectView::new(project, &steps, role);
    view.project.set_schedule(stored.as_ref());
    Ok(axum::Json(view))
}

/// Changes the fields the body carries and answers the full project.
///
/// **Schedules.** `schedule` (`{"cron", "timezone", "parameters",
/// "enabled"}`) sets the project's cron schedule and `null` removes it;
/// a body with only `schedule` is accepted while an execution is in
/// progress. `cron` is five fields (minute, hour, day of month, month, day
/// of week; day of month and day of week match when either does) or one of
/// `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@hourly`;
/// `timezone` an IANA name (default `UTC`); `parameters` an object checked
/// against the steps' declared parameters (`field: schedule.parameters.<name>`);
/// `enabled` defaults to `true`. An invalid expression or zone is 400 with
/// `field: schedule.cron` / `schedule.timezone`. Every project body shows
/// `schedule` and the read-only `next_run_at` (null when there is no
/// enabled schedule).
///
/// Each tick starts an execution with `trigger: "schedule"` and the
/// schedule's parameters, as the user who set the schedule (with their
/// organization role at that time), through the same admission as
/// `POST /api/projects/{uuid}/execute`. A tick fires at most once however
/// many schedulers run. A tick that finds the project's previous execution
/// still queued, running or cancelling is skipped (counted in
/// `ferry_scheduler_ticks_skipped_total`), never queued behind it.
///
/// Wall-clock times are matched in the zone: on a spring-forward day a time
/// in the gap (02:30 in Europe/Berlin) fires once, at the first instant
/// after the gap (03:00 local); on a fall-back day a repeated time fires
/// once, at its first occurrence. Catch-up: a scheduler that was down fires
/// the most recent missed tick once when it comes back, then continues from
/// the next tick after now; older missed ticks are dropped.
#[utoipa::path(put, path = "/api/projects/{uuid}", tag = "projects", request_body = UpdateProject,
    params(("uuid" = String, Path, description = "Project id")),
    responses(
        (status = 200, description = "The updated project", body = ProjectView),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "The caller may only read this project", body = ErrorBody),
        (status = 404, description = "No such project visible to the caller", body = ErrorBody),
        (status = 409, description = "The project is archived, or has an execution queued, running or cancelling (`execution_id` names it)", body = ErrorBody),
    ))]
async fn update_project(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    Json(body): Json<UpdateProject>,
) -> ApiResult<axum::Json<ProjectView>> {
    let patch = ProjectPatch {
        name: match body.name {
            None => None,
            Some(name) => Some(check_name(name.as_deref())?),
        },
        description: body.description.map(check_description).transpose()?,
        connector_uuids: match body.connector_uuids {
            None => None,
            Some(ids) => Some(check_connector_uuids(ids.unwrap_or_default())?),
        },
        metadata: match body.metadata {
            None => None,
            Some(metadata) => Some(check_metadata(metadata)?),
        },
        status: match body.status {
            Some(ProjectStatus::Draft) => {
                return Err(ApiError::validation(
                    "status",
                    "status may be set to active or archived, never draft",
                ));
            }
            other => other,
        },
    };
    let (project, role) = editable_project(&state, &caller, &uuid).await?;
    let steps = state.backends.store.list_steps(&project.uuid).await?;
    let schedule = body
        .schedule
        .map(|schedule| {
            schedule
                .map(|value| check_schedule(&caller, &project, &steps, value))
                .transpose()
        })
        .transpose()?;
    // A body that only sets the schedule changes nothing else (and is
    // accepted while an execution is in progress).
    let project = if patch.is_empty() {
        project
    } else {
        state
            .backends
            .store
            .update_project(&caller.org_id, &uuid, patch)
            .await?
            .ok_or_else(|| ApiError::not_found("Project not found"))?
    };
    if let Some(schedule) = &schedule {
        state
            .backends
            .store
            .set_project_schedule(&caller.org_id, &project.uuid, schedule.as_ref())
            .await?;
    }
    let stored = state
        .backends
        .store
        .project_schedule(&caller.org_id, &project.uuid)
        .await?;
    let mut view = ProjectView::new(project, &steps, role);
    view.project.set_schedule(stored.as_ref());
    Ok(axum::Json(view))
}

/// Checks a `schedule` body: cron and zone, parameters an object that
/// satisfies the steps' declared parameters; the next tick is computed from
/// now, and the executions will run as the caller.
fn check_schedule(
    caller: &Principal,
    project: &Project,
    steps: &[Step],
    value: Value,
) -> ApiResult<ProjectSchedule> {
    let Value::Object(mut body) = value else {
        return Err(ApiError::validation(
            "schedule",
            "schedule must be an object or null",
        ));
    };
    let cron = match body.remove("cron") {
        Some(Value::String(cron)) => cron,
        _ => {
            return Err(ApiError::validation(
                "schedule.cron",
                "cron is required and must be a string",
            ));
        }
    };
    let timezone = match body.remove("timezone") {
        None | Some(Value::Null) => None,
        Some(Value::String(zone)) => Some(zone),
        Some(_) => {
            return Err(ApiError::validation(
                "schedule.timezone",
                "timezone must be a string",
            ));
        }
    };
    let parameters = match body.remove("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(parameters)) => parameters,
        Some(_) => {
            return Err(ApiError::validation(
                "schedule.parameters",
                "parameters must be a JSON object",
            ));
        }
    };
    let enabled = match body.remove("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(enabled)) => enabled,
        Some(_) => {
            return Err(ApiError::validation(
                "schedule.enabled",
                "enabled must be true or false",
            ));
        }
    };
    if let Some(field) = body.keys().next() {
        return Err(ApiError::validation(
            format!("schedule.{field}"),
            "unknown field: a schedule has cron, timezone, parameters and enabled",
        ));
    }
    let schedule = Schedule::validated(&cron, timezone.as_deref(), parameters, enabled)?;
    for step in steps {
        params::check_config(&step.config, &schedule.parameters).map_err(|error| match error {
            Error::Validation {
                field,
                message,
                details,
            } => Error::Validation {
                field: field.map(|field| format!("schedule.{field}")),
                message,
                details,
            },
            other => other,
        })?;
    }
    let next_run_at = schedule.next_run(ferry_shared::domain::now())?;
    Ok(ProjectSchedule {
        project_uuid: project.uuid.clone(),
        org_id: project.org_id.clone(),
        schedule,
        set_by: caller.user_id.clone(),
        set_role: caller.org_role,
        next_run_at,
    })
}

/// Archives the project (soft delete), or removes it and its steps with
/// `hard_delete=true`. Owners only.
#[utoipa::path(delete, path = "/api/projects/{uuid}", tag = "projects",
    params(("uuid" = String, Path, description = "Project id"), DeleteProjectParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Only owners delete", body = ErrorBody),
        (status = 404, description = "No such project visible to the caller", body = ErrorBody),
        (status = 409, description = "The project has an execution queued, running or cancelling (`execution_id` names it)", body = ErrorBody),
    ))]
async fn delete_project(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    Query(params): Query<DeleteProjectParams>,
) -> ApiResult<StatusCode> {
    let hard = match params.hard_delete.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(ApiError::validation(
                "hard_delete",
                "hard_delete must be true or false",
            ));
        }
    };
    let (project, role) = visible_project(&state, &caller, &uuid).await?;
    super::permit(role.can_delete(), "delete this project")?;
    // Archiving first is the guard of both kinds of delete: the store refuses
    // it (409 with `execution_id`) while an execution is in progress,
    // deciding under the project's lock, and once the project is archived
    // no execution can be admitted before the hard delete below (an archived
    // project was archived by this same guarded write).
    if project.status != ProjectStatus::Archived {
        let patch = ProjectPatch {
            status: Some(ProjectStatus::Archived),
            ..ProjectPatch::default()
        };
        state
            .backends
            .store
            .update_project(&caller.org_id, &project.uuid, patch)
            .await?
            .ok_or_else(|| ApiError::not_found("Project not found"))?;
        if !hard {
            tracing::info!(project_uuid = %project.uuid, "project archived");
        }
    }
    if hard {
        state
            .backends
            .store
            .delete_project(&caller.org_id, &project.uuid)
            .await?;
        tracing::info!(project_uuid = %project.uuid, "project deleted");
    }
    Ok(StatusCode::NO_CONTENT)
}
