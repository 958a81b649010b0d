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
use crate::views::{ErrorBody, Pagination, ProjectList, ProjectView, nullable};
use ferry_shared::Error;

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
    ),
    security(("bearer" = [])))]
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
    ),
    security(("bearer" = [])))]
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
    let page = state.backends.store.list_projects(&query).await?;
    let pagination = Pagination::of(&page);
    Ok(axum::Json(ProjectList {
        data: page.items.into_iter().map(Into::into).collect(),
        pagination,
    }))
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
    ),
    security(("bearer" = [])))]
async fn get_project(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
) -> ApiResult<axum::Json<ProjectView>> {
    let (project, role) = visible_project(&state, &caller, &uuid).await?;
    let steps = state.backends.store.list_steps(&project.uuid).await?;
    Ok(axum::Json(ProjectView::new(project, &steps, role)))
}

/// Changes the fields the body carries and answers the full project.
#[utoipa::path(put, path = "/api/projects/{uuid}", tag = "projects", request_body = UpdateProject,
    params(("uuid" = String, Path, description = "Project id")),
    responses(
        (status = 200, description = "The updated project", body = ProjectView),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "The caller may only read this project", body = ErrorBody),
        (status = 404, description = "No such project visible to the caller", body = ErrorBody),
        (status = 409, description = "The project is archived, or has an execution queued, running or cancelling (`execution_id` names it)", body = ErrorBody),
    ),
    security(("bearer" = [])))]
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
    let (_, role) = editable_project(&state, &caller, &uuid).await?;
    let project = state
        .backends
        .store
        .update_project(&caller.org_id, &uuid, patch)
        .await?
        .ok_or_else(|| ApiError::not_found("Project not found"))?;
    let steps = state.backends.store.list_steps(&project.uuid).await?;
    Ok(axum::Json(ProjectView::new(project, &steps, role)))
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
    ),
    security(("bearer" = [])))]
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
