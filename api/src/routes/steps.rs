//! Steps API (`/api/projects/{uuid}/steps`): create, list, get, update,
//! delete and reorder the ordered steps of a project.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ferry_shared::Error;
use ferry_shared::domain::step;
use ferry_shared::domain::{NewStep, Principal, Step, StepPatch, StepType};
use ferry_shared::ids::IdKind;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::connectors::visible_connector;
use super::projects::{editable_project, visible_project};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json};
use crate::views::{ErrorBody, StepList, StepView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_step, list_steps))
        .routes(routes!(get_step, update_step, delete_step))
        .routes(routes!(reorder_steps))
}

/// Body of `POST /api/projects/{uuid}/steps`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateStep {
    #[schema(example = "Extract sales data")]
    pub name: Option<String>,
    /// sql_query, mongo_query, redis_read, http_request, saas_extract or transform.
    #[serde(rename = "type")]
    #[schema(example = json!(StepType::SqlQuery))]
    pub step_type: Option<String>,
    /// Type-specific configuration (see the Steps section of the API guide).
    #[schema(value_type = Object)]
    pub config: Option<Value>,
    /// 1-based position; inserts there and shifts the later steps. Default: last.
    pub order: Option<i64>,
    /// Ids of earlier steps whose results this step reads.
    pub dependencies: Option<Vec<String>>,
}

/// Body of `PUT /api/projects/{uuid}/steps/{step_id}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateStep {
    #[serde(default, deserialize_with = "crate::views::nullable")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    /// Moves the step to this 1-based position.
    pub order: Option<i64>,
}

/// Body of `POST /api/projects/{uuid}/steps/reorder`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReorderSteps {
    /// Every step id of the project, exactly once, in the new order.
    pub step_ids: Option<Vec<String>>,
}

fn check_name(name: Option<&str>) -> ApiResult<String> {
    super::check_name("name", "Step name", name)
}

fn check_order(order: Option<i64>) -> ApiResult<Option<i32>> {
    match order {
        None => Ok(None),
        Some(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(i32::try_from(n).ok()),
        Some(_) => Err(ApiError::validation(
            "order",
            "order must be an integer of at least 1",
        )),
    }
}

/// Checks that every step's dependencies name steps that come before it.
fn check_dependencies(steps: &[Step], field: &str) -> ApiResult<()> {
    for step in steps {
        for dependency in &step.dependencies {
            let earlier = steps
                .iter()
                .any(|other| &other.step_id == dependency && other.order < step.order);
            if !earlier {
                return Err(ApiError::validation(
                    field,
                    format!(
                        "step {} depends on {dependency}, which must be an earlier step",
                        step.step_id
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Using a connector in a step takes an editor's grant on it: every
/// connector the config names must be visible to the caller (else 404, as
/// for any resource the caller cannot see: another organization's, or no
/// relation) and editable (a viewer gets 403). Organization admins act as
/// owner.
pub(crate) async fn check_step_connectors(
    state: &AppState,
    caller: &Principal,
    step_type: StepType,
    config: &Value,
) -> ApiResult<()> {
    for (field, uuid) in step::connectors_named(config) {
        let (connector, role) = visible_connector(state, caller, uuid).await?;
        if !role.can_edit() {
            return Err(Error::forbidden(format!(
                "Using connector {uuid} in a step ({field}) needs an editor's grant on it"
            ))
            .into());
        }
        step_type.validate_on(config, &connector.connector_type)?;
    }
    Ok(())
}

fn step_not_found() -> ApiError {
    ApiError::not_found("Step not found")
}

/// Adds a step to the project.
#[utoipa::path(post, path = "/api/projects/{uuid}/steps", tag = "steps", request_body = CreateStep,
    params(("uuid" = String, Path, description = "Project id")),
    responses(
        (status = 201, description = "Created", body = StepView),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "The caller may only read this project, or only view the step's connector (using a connector needs an editor's grant)", body = ErrorBody),
        (status = 404, description = "No such project, or a connector the config names that the caller cannot see", body = ErrorBody),
        (status = 409, description = "The project is archived, or has an execution queued, running or cancelling (`execution_id` names it)", body = ErrorBody),
    ))]
async fn create_step(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    Json(body): Json<CreateStep>,
) -> ApiResult<impl IntoResponse> {
    let name = check_name(body.name.as_deref())?;
    let step_type = match body.step_type.as_deref() {
        None => return Err(ApiError::validation("type", "Step type is required")),
        Some(text) => StepType::parse(text).ok_or_else(|| {
            let known: Vec<&str> = StepType::ALL.iter().map(|t| t.as_str()).collect();
            ApiError::validation("type", format!("type must be one of {}", known.join(", ")))
        })?,
    };
    let config = body
        .config
        .ok_or_else(|| ApiError::validation("config", "Step config is required"))?;
    step_type.validate_config(&config)?;
    let order = check_order(body.order)?;
    let dependencies = body.dependencies.unwrap_or_default();
    let (project, _) = editable_project(&state, &caller, &uuid).await?;
    check_step_connectors(&state, &caller, step_type, &config).await?;
    let existing = state.backends.store.list_steps(&project.uuid).await?;
    let position = order.map_or(existing.len() + 1, |o| (o as usize).min(existing.len() + 1));
    let mut seen = HashSet::new();
    for (i, dependency) in dependencies.iter().enumerate() {
        let earlier = existing
            .iter()
            .any(|s| &s.step_id == dependency && (s.order as usize) < position);
        if !earlier || !seen.insert(dependency) {
            return Err(ApiError::validation(
                format!("dependencies[{i}]"),
                "dependencies must name distinct, earlier steps of this project",
            ));
        }
    }
    let step = state
        .backends
        .store
        .insert_step(
            &project.uuid,
            NewStep {
                name,
                step_type,
                order,
                config,
                dependencies,
            },
        )
        .await?;
    tracing::info!(project_uuid = %project.uuid, step_id = %step.step_id, "step created");
    Ok((StatusCode::CREATED, axum::Json(StepView::from(step))))
}

/// The project's steps in order.
#[utoipa::path(get, path = "/api/projects/{uuid}/steps", tag = "steps",
    params(("uuid" = String, Path, description = "Project id")),
    responses(
        (status = 200, description = "The steps", body = StepList),
        (status = 404, description = "No such project visible to the caller", body = ErrorBody),
    ))]
async fn list_steps(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
) -> ApiResult<axum::Json<StepList>> {
    let (project, _) = visible_project(&state, &caller, &uuid).await?;
    let steps = state.backends.store.list_steps(&project.uuid).await?;
    Ok(axum::Json(StepList {
        data: steps.into_iter().map(Into::into).collect(),
    }))
}

/// One step.
#[utoipa::path(get, path = "/api/projects/{uuid}/steps/{step_id}", tag = "steps",
    params(("uuid" = String, Path, description = "Project id"), ("step_id" = String, Path, description = "Step id")),
    responses(
        (status = 200, description = "The step", body = StepView),
        (status = 404, description = "No such project or step", body = ErrorBody),
    ))]
async fn get_step(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((uuid, step_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<StepView>> {
    let (project, _) = visible_project(&state, &caller, &uuid).await?;
    if !IdKind::Step.matches(&step_id) {
        return Err(step_not_found());
    }
    let step = state
        .backends
        .store
        .get_step(&project.uuid, &step_id)
        .await?
        .ok_or_else(step_not_found)?;
    Ok(axum::Json(step.into()))
}

/// Changes a step's name, config or position.
#[utoipa::path(put, path = "/api/projects/{uuid}/steps/{step_id}", tag = "steps", request_body = UpdateStep,
    params(("uuid" = String, Path, description = "Project id"), ("step_id" = String, Path, description = "Step id")),
    responses(
        (status = 200, description = "The updated step", body = StepView),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "The caller may only read this project, or only view a connector the new config names", body = ErrorBody),
        (status = 404, description = "No such project or step, or a connector the new config names that the caller cannot see", body = ErrorBody),
        (status = 409, description = "The project is archived, or has an execution queued, running or cancelling (`execution_id` names it)", body = ErrorBody),
    ))]
async fn update_step(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((uuid, step_id)): Path<(String, String)>,
    Json(body): Json<UpdateStep>,
) -> ApiResult<axum::Json<StepView>> {
    let name = match body.name {
        None => None,
        Some(name) => Some(check_name(name.as_deref())?),
    };
    let order = check_order(body.order)?;
    let (project, _) = editable_project(&state, &caller, &uuid).await?;
    if !IdKind::Step.matches(&step_id) {
        return Err(step_not_found());
    }
    let mut steps = state.backends.store.list_steps(&project.uuid).await?;
    let current = steps
        .iter()
        .find(|s| s.step_id == step_id)
        .ok_or_else(step_not_found)?;
    if let Some(config) = &body.config {
        current.step_type.validate_config(config)?;
        check_step_connectors(&state, &caller, current.step_type, config).await?;
    }
    if let Some(order) = order {
        let target = order.min(steps.len() as i32);
        let from = current.order;
        for step in &mut steps {
            if step.step_id == step_id {
                step.order = target;
            } else if from < target && step.order > from && step.order <= target {
                step.order -= 1;
            } else if from > target && step.order >= target && step.order < from {
                step.order += 1;
            }
        }
        check_dependencies(&steps, "order")?;
    }
    let step = state
        .backends
        .store
        .update_step(
            &project.uuid,
            &step_id,
            StepPatch {
                name,
                config: body.config,
                order,
            },
        )
        .await?
        .ok_or_else(step_not_found)?;
    Ok(axum::Json(step.into()))
}

/// Removes a step; the later steps move up.
#[utoipa::path(delete, path = "/api/projects/{uuid}/steps/{step_id}", tag = "steps",
    params(("uuid" = String, Path, description = "Project id"), ("step_id" = String, Path, description = "Step id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "The caller may only read this project", body = ErrorBody),
        (status = 404, description = "No such project or step", body = ErrorBody),
        (status = 409, description = "Another step depends on it, the project is archived, or it has an execution in progress (`execution_id`)", body = ErrorBody),
    ))]
async fn delete_step(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((uuid, step_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (project, _) = editable_project(&state, &caller, &uuid).await?;
    if !IdKind::Step.matches(&step_id) {
        return Err(step_not_found());
    }
    let steps = state.backends.store.list_steps(&project.uuid).await?;
    if let Some(dependent) = steps.iter().find(|s| s.dependencies.contains(&step_id)) {
        return Err(Error::conflict(format!(
            "Cannot delete step: step {} depends on it",
            dependent.step_id
        ))
        .into());
    }
    if !state.backends.store.delete_step(&project.uuid, &step_id).await? {
        return Err(step_not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Sets the order of all steps at once.
#[utoipa::path(post, path = "/api/projects/{uuid}/steps/reorder", tag = "steps", request_body = ReorderSteps,
    params(("uuid" = String, Path, description = "Project id")),
    responses(
        (status = 200, description = "The steps in their new order", body = StepList),
        (status = 400, description = "step_ids is not every step exactly once", body = ErrorBody),
        (status = 403, description = "The caller may only read this project", body = ErrorBody),
        (status = 404, description = "No such project visible to the caller", body = ErrorBody),
        (status = 409, description = "The project is archived, or has an execution queued, running or cancelling (`execution_id` names it)", body = ErrorBody),
    ))]
async fn reorder_steps(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    Json(body): Json<ReorderSteps>,
) -> ApiResult<axum::Json<StepList>> {
    let step_ids = body
        .step_ids
        .ok_or_else(|| ApiError::validation("step_ids", "step_ids is required"))?;
    let (project, _) = editable_project(&state, &caller, &uuid).await?;
    let mut steps = state.backends.store.list_steps(&project.uuid).await?;
    let unique: HashSet<&String> = step_ids.iter().collect();
    let complete = unique.len() == step_ids.len()
        && step_ids.len() == steps.len()
        && steps.iter().all(|s| unique.contains(&s.step_id));
    if !complete {
        return Err(ApiError::validation(
            "step_ids",
            "step_ids must list every step of the project exactly once",
        ));
    }
    for step in &mut steps {
        step.order = step_ids
            .iter()
            .position(|id| id == &step.step_id)
            .map_or(0, |i| i as i32 + 1);
    }
    check_dependencies(&steps, "step_ids")?;
    let steps = state
        .backends
        .store
        .reorder_steps(&project.uuid, &step_ids)
        .await?;
    Ok(axum::Json(StepList {
        data: steps.into_iter().map(Into::into).collect(),
    }))
}
