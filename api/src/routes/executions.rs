//! Executions API: execute a project, list and read its executions, cancel
//! one, read a step's result (JSON, CSV or Parquet) and follow progress as
//! server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ferry_shared::Error;
use ferry_shared::admission::{self, Admission};
use ferry_shared::domain::ResourceKind;
use ferry_shared::domain::params;
use ferry_shared::domain::{
    ConnectorStatus, Execution, ExecutionStatus, Principal, Project, StepRun, StepRunStatus, Trigger,
};
use ferry_shared::ids::IdKind;
use ferry_shared::jobs::{EXECUTION_EVENTS, ExecutionEvent};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::projects::{editable_project, page_request, visible_project};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, OptionalJson, Query};
use crate::results;
use crate::views::{ErrorBody, Pagination, timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(execute_project))
        .routes(routes!(list_executions))
        .routes(routes!(get_execution))
        .routes(routes!(cancel_execution))
        .routes(routes!(step_result))
        .routes(routes!(execution_events))
}

// --- views -------------------------------------------------------------------

/// A step of an execution.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepRunView {
    pub step_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub step_type: String,
    pub order: i32,
    /// pending, waiting, running, completed, failed, skipped or cancelled.
    /// `waiting`: the step has started but waits, in line, for a slot of its
    /// connector's `max_concurrent_steps`; `waiting_reason` says so.
    pub status: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    pub rows_processed: i64,
    pub bytes_written: i64,
    pub output_file: Option<String>,
    /// How many times a worker started the step: a transient failure (a
    /// connection reset, a timeout, a serialization failure, a 503) is
    /// retried, and each try counts; 0 until it first starts.
    #[schema(example = 1)]
    pub attempts: i32,
    /// Why a `waiting` step waits (null otherwise).
    #[schema(example = "the connector's max_concurrent_steps (2) are all in use; 1 step(s) wait ahead")]
    pub waiting_reason: Option<String>,
    /// `{type, message}` when the step failed.
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

impl From<&StepRun> for StepRunView {
    fn from(step: &StepRun) -> Self {
        let waiting_reason = step
            .waiting_reason
            .clone()
            .filter(|_| step.status == StepRunStatus::Running);
        let status = match waiting_reason {
            Some(_) => "waiting",
            None => step.status.as_str(),
        };
        StepRunView {
            step_id: step.step_id.clone(),
            name: step.name.clone(),
            step_type: step.step_type.clone(),
            order: step.position,
            status: status.to_owned(),
            started_at: step.started_at.map(timestamp),
            completed_at: step.completed_at.map(timestamp),
            rows_processed: step.rows_processed,
            bytes_written: step.bytes_written,
            output_file: step.output_file.clone(),
            attempts: step.attempts,
            waiting_reason,
            error: step.error.as_ref().and_then(|e| serde_json::to_value(e).ok()),
        }
    }
}

/// Progress of an execution.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProgressView {
    pub completed_steps: usize,
    pub total_steps: usize,
    pub percentage: u32,
}

/// Results of an execution.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultsView {
    /// Rows written by all steps.
    pub total_rows: i64,
    /// Each completed step's object URL, in step order.
    pub output_files: Vec<String>,
    /// The last step's object URL, once it completed.
    pub final_file: Option<String>,
}

/// The seed's execution object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView {
    #[schema(example = "exec_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub execution_id: String,
    pub project_uuid: String,
    /// queued, running, cancelling, completed, failed or cancelled.
    pub status: String,
    /// `api` or `schedule`.
    pub trigger: String,
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    pub notify_on_completion: bool,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    pub duration_seconds: Option<f64>,
    /// How many times a worker has taken the execution (resumes count).
    pub attempt: i64,
    pub steps: Vec<StepRunView>,
    pub progress: ProgressView,
    pub results: ResultsView,
}

impl From<&Execution> for ExecutionView {
    fn from(execution: &Execution) -> Self {
        let total = execution.steps.len();
        let completed = execution.completed_steps();
        let output_files: Vec<String> = execution
            .steps
            .iter()
            .filter_map(|s| s.output_file.clone())
            .collect();
        let final_file = execution
            .steps
            .last()
            .filter(|s| s.status == StepRunStatus::Completed)
            .and_then(|s| s.output_file.clone());
        ExecutionView {
            execution_id: execution.execution_id.clone(),
            project_uuid: execution.project_uuid.clone(),
            status: execution.status.as_str().to_owned(),
            trigger: execution.trigger.as_str().to_owned(),
            parameters: execution.parameters.clone(),
            notify_on_completion: execution.notify_on_completion,
            created_by: execution.created_by.clone(),
            created_at: timestamp(execution.created_at),
            started_at: execution.started_at.map(timestamp),
            completed_at: execution.completed_at.map(timestamp),
            duration_seconds: match (execution.started_at, execution.completed_at) {
                (Some(start), Some(end)) => Some((end - start).num_milliseconds() as f64 / 1000.0),
                _ => None,
            },
            attempt: execution.attempt,
            steps: execution.steps.iter().map(Into::into).collect(),
            progress: ProgressView {
                completed_steps: completed,
                total_steps: total,
                percentage: match (completed * 100).checked_div(total) {
                    Some(percent) => u32::try_from(percent).unwrap_or(100),
                    None if execution.status == ExecutionStatus::Completed => 100,
                    None => 0,
                },
            },
            results: ResultsView {
                total_rows: execution.total_rows(),
                output_files,
                final_file,
            },
        }
    }
}

/// A page of executions.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionList {
    pub data: Vec<ExecutionView>,
    pub pagination: Pagination,
}

// --- requests ------------------------------------------------------------------

/// Body of `POST /api/projects/{uuid}/execute`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ExecuteRequest {
    /// Runtime parameters referenced as `{{name}}` in steps.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// `async` (default) or `sync`.
    pub mode: Option<ExecutionMode>,
    /// Recorded; delivered through webhooks.
    pub notify_on_completion: Option<bool>,
}

/// Execution mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    Async,
    Sync,
}

/// Query of the executions list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page number, from 1.
    pub page: Option<String>,
    /// 1–100 (default 20).
    pub limit: Option<String>,
}

/// Query of a step result.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultParams {
    /// `json` (default), `csv` or `parquet` (the whole object).
    pub format: Option<String>,
    /// Rows per page, 1–10,000 (default 100).
    pub limit: Option<String>,
    /// Rows to skip (default 0).
    pub offset: Option<String>,
}

// --- helpers -------------------------------------------------------------------

fn execution_not_found() -> ApiError {
    ApiError::not_found("Execution not found")
}

async fn visible_execution(
    state: &AppState,
    caller: &Principal,
    uuid: &str,
    execution_id: &str,
) -> ApiResult<(Project, Execution, ferry_shared::domain::Role)> {
    let (project, role) = visible_project(state, caller, uuid).await?;
    if !IdKind::Execution.matches(execution_id) {
        return Err(execution_not_found());
    }
    let execution = state
        .backends
        .store
        .get_execution(&caller.org_id, &project.uuid, execution_id)
        .await?
        .ok_or_else(execution_not_found)?;
    Ok((project, execution, role))
}

/// Checks parameters and connectors of every step before anything is queued.
async fn check_steps(
    state: &AppState,
    caller: &Principal,
    steps: &[ferry_shared::domain::Step],
    supplied: &Map<String, Value>,
) -> ApiResult<()> {
    for step in steps {
        params::check_config(&step.config, supplied)?;
        for (_, connector_uuid) in ferry_shared::domain::step::connectors_named(&step.config) {
            let connector = state
                .backends
                .store
                .get_connector(&caller.org_id, connector_uuid)
                .await?;
            // A connector the caller cannot see reads exactly like a deleted
            // one; one they only view needs an editor's grant to be used.
            let role = match &connector {
                Some(_) => super::caller_role(state, caller, ResourceKind::Connector, connector_uuid).await?,
                None => None,
            };
            let problem = match (connector, role) {
                (None, _) | (Some(_), None) => Some("does not exist"),
                (Some(c), _) if c.status == ConnectorStatus::Disabled => Some("is disabled"),
                (Some(_), Some(role)) if !role.can_edit() => {
                    Some("you may not use: executing needs an editor's grant on it")
                }
                (Some(_), Some(_)) => None,
            };
            if let Some(problem) = problem {
                let mut extra = Map::new();
                extra.insert("step_id".into(), step.step_id.clone().into());
                extra.insert("connector_uuid".into(), connector_uuid.into());
                return Err(Error::Conflict {
                    message: format!(
                        "Step '{}' uses connector {connector_uuid}, which {problem}",
                        step.name
                    ),
                    extra,
                }
                .into());
            }
        }
    }
    Ok(())
}

async fn publish_cancel(state: &AppState, execution_id: &str) {
    let event = ExecutionEvent {
        execution_id: execution_id.to_owned(),
        kind: "cancel".into(),
    };
    if let Ok(value) = serde_json::to_value(&event)
        && let Err(error) = state.backends.bus.publish(EXECUTION_EVENTS, &value).await
    {
        tracing::warn!(execution_id, %error, "cancel event not published");
    }
}

/// Waits until the execution is terminal or `timeout` passes, waking on
/// execution events and re-reading the store at least every second.
async fn wait_terminal(
    state: &AppState,
    org_id: &str,
    project_uuid: &str,
    execution_id: &str,
    timeout: Duration,
) -> ApiResult<Execution> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = state.backends.bus.subscribe(EXECUTION_EVENTS).await.ok();
    loop {
        let execution = state
            .backends
            .store
            .get_execution(org_id, project_uuid, execution_id)
            .await?
            .ok_or_else(execution_not_found)?;
        let now = tokio::time::Instant::now();
        if execution.status.is_terminal() || now >= deadline {
            return Ok(execution);
        }
        let pause = (deadline - now).min(Duration::from_secs(1));
        match events.as_mut() {
            Some(stream) => {
                let wake = async {
                    while let Some(value) = stream.next().await {
                        if value.get("execution_id").and_then(Value::as_str) == Some(execution_id) {
                            return;
                        }
                    }
                    std::future::pending::<()>().await;
                };
                let _ = tokio::time::timeout(pause, wake).await;
            }
            None => tokio::time::sleep(pause).await,
        }
    }
}

// --- handlers ------------------------------------------------------------------

/// Executes all steps of a project in order on a worker.
#[utoipa::path(post, path = "/api/projects/{uuid}/execute", tag = "executions", request_body = ExecuteRequest,
    params(("uuid" = String, Path, description = "Project id")),
    responses(
        (status = 200, description = "sync mode: the completed execution", body = ExecutionView),
        (status = 202, description = "Accepted: the execution as it stands", body = ExecutionView),
        (status = 400, description = "Missing or mistyped parameter (`field: parameters.<name>`)", body = ErrorBody),
        (status = 403, description = "The caller may only read this project", body = ErrorBody),
        (status = 404, description = "No such project visible to the caller", body = ErrorBody),
        (status = 409, description = "Already executing (with `execution_id`), archived, or a step's connector is disabled, deleted, invisible to the caller or only viewable by them (with `step_id` and `connector_uuid`)", body = ErrorBody),
    ))]
async fn execute_project(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    OptionalJson(body): OptionalJson<ExecuteRequest>,
) -> ApiResult<Response> {
    let body = body.unwrap_or_default();
    let (project, _) = editable_project(&state, &caller, &uuid).await?;
    let supplied = body.parameters.unwrap_or_default();
    let steps = state.backends.store.list_steps(&project.uuid).await?;
    check_steps(&state, &caller, &steps, &supplied).await?;
    let admission = Admission {
        project_uuid: project.uuid.clone(),
        org_id: caller.org_id.clone(),
        trigger: Trigger::Api,
        parameters: supplied,
        notify_on_completion: body.notify_on_completion.unwrap_or(false),
        created_by: caller.user_id.clone(),
        org_role: caller.org_role,
    };
    let execution = admission::admit(
        state.backends.store.as_ref(),
        state.backends.queue.as_ref(),
        &admission,
        &steps,
    )
    .await?;
    let current = if body.mode == Some(ExecutionMode::Sync) {
        let waited = std::time::Instant::now();
        let current = wait_terminal(
            &state,
            &caller.org_id,
            &project.uuid,
            &execution.execution_id,
            state.sync_timeout,
        )
        .await?;
        state
            .http_metrics
            .sync_waited(current.status.is_terminal(), waited);
        current
    } else {
        state
            .backends
            .store
            .get_execution(&caller.org_id, &project.uuid, &execution.execution_id)
            .await?
            .unwrap_or(execution)
    };
    let status = if body.mode == Some(ExecutionMode::Sync) && current.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, axum::Json(ExecutionView::from(&current))).into_response())
}

/// The project's executions, newest first.
#[utoipa::path(get, path = "/api/projects/{uuid}/executions", tag = "executions",
    params(("uuid" = String, Path, description = "Project id"), ListParams),
    responses(
        (status = 200, description = "A page of executions", body = ExecutionList),
        (status = 400, description = "A parameter is out of range", body = ErrorBody),
        (status = 404, description = "No such project visible to the caller", body = ErrorBody),
    ))]
async fn list_executions(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    Query(params): Query<ListParams>,
) -> ApiResult<axum::Json<ExecutionList>> {
    let page = page_request(params.page.as_deref(), params.limit.as_deref())?;
    let (project, _) = visible_project(&state, &caller, &uuid).await?;
    let executions = state.backends.store.list_executions(&project.uuid, page).await?;
    Ok(axum::Json(ExecutionList {
        pagination: Pagination::of(&executions),
        data: executions.items.iter().map(Into::into).collect(),
    }))
}

/// One execution with its steps, progress and results.
#[utoipa::path(get, path = "/api/projects/{uuid}/executions/{execution_id}", tag = "executions",
    params(("uuid" = String, Path, description = "Project id"), ("execution_id" = String, Path, description = "Execution id")),
    responses(
        (status = 200, description = "The execution", body = ExecutionView),
        (status = 404, description = "No such execution visible to the caller", body = ErrorBody),
    ))]
async fn get_execution(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((uuid, execution_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<ExecutionView>> {
    let (_, execution, _) = visible_execution(&state, &caller, &uuid, &execution_id).await?;
    Ok(axum::Json((&execution).into()))
}

/// Cancels an execution: a queued one at once, a running one as soon as its
/// worker stops the query and aborts the upload.
#[utoipa::path(post, path = "/api/projects/{uuid}/executions/{execution_id}/cancel", tag = "executions",
    params(("uuid" = String, Path, description = "Project id"), ("execution_id" = String, Path, description = "Execution id")),
    responses(
        (status = 202, description = "cancelling or cancelled", body = ExecutionView),
        (status = 403, description = "The caller may only read this project", body = ErrorBody),
        (status = 404, description = "No such execution visible to the caller", body = ErrorBody),
        (status = 409, description = "The execution already finished", body = ErrorBody),
    ))]
async fn cancel_execution(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((uuid, execution_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (project, _, role) = visible_execution(&state, &caller, &uuid, &execution_id).await?;
    super::permit(role.can_edit(), "cancel this execution")?;
    let execution = state
        .backends
        .store
        .request_cancel(&caller.org_id, &project.uuid, &execution_id)
        .await?
        .ok_or_else(execution_not_found)?;
    publish_cancel(&state, &execution_id).await;
    Ok((StatusCode::ACCEPTED, axum::Json(ExecutionView::from(&execution))))
}

/// A completed step's result: JSON or CSV pages, or the whole Parquet object.
#[utoipa::path(get, path = "/api/projects/{uuid}/executions/{execution_id}/steps/{step_id}/result", tag = "executions",
    params(("uuid" = String, Path, description = "Project id"), ("execution_id" = String, Path, description = "Execution id"),
           ("step_id" = String, Path, description = "Step id"), ResultParams),
    responses(
        (status = 200, description = "json: {columns, data, offset, limit, total_rows, truncated, next_offset}; csv: text/csv with a header row and X-Ferry-Total-Rows, X-Ferry-Expected-Rows, X-Ferry-Max-Bytes headers; parquet: application/vnd.apache.parquet. JSON and CSV stream, and stop at a row boundary before FERRY_RESULT_MAX_BYTES (64 MiB): JSON then says truncated: true with next_offset on the first row left out; CSV has fewer rows than X-Ferry-Expected-Rows. See \"Step results\" in the description."),
        (status = 400, description = "Invalid format, limit or offset", body = ErrorBody),
        (status = 404, description = "No such execution or step", body = ErrorBody),
        (status = 409, description = "The step has not completed", body = ErrorBody),
    ))]
async fn step_result(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((uuid, execution_id, step_id)): Path<(String, String, String)>,
    Query(params): Query<ResultParams>,
) -> ApiResult<Response> {
    let format = match params.format.as_deref() {
        None | Some("json") => results::Format::Json,
        Some("csv") => results::Format::Csv,
        Some("parquet") => results::Format::Parquet,
        Some(_) => {
            return Err(ApiError::validation(
                "format",
                "format must be json, csv or parquet",
            ));
        }
    };
    let limit = match params.limit.as_deref() {
        None => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=10_000).contains(l))
            .ok_or_else(|| ApiError::validation("limit", "limit must be an integer from 1 to 10000"))?,
    };
    let offset = match params.offset.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::validation("offset", "offset must be a non-negative integer"))?,
    };
    let (_, execution, _) = visible_execution(&state, &caller, &uuid, &execution_id).await?;
    let step = execution
        .steps
        .iter()
        .find(|s| s.step_id == step_id)
        .ok_or_else(|| ApiError::not_found("Step not found"))?;
    if step.status != StepRunStatus::Completed {
        return Err(Error::conflict(format!(
            "Step result is not available: the step is {}",
            step.status.as_str()
        ))
        .into());
    }
    let path = state
        .backends
        .objects
        .step_path(&execution.execution_id, &step.step_id);
    let page = results::Page {
        offset,
        limit,
        max_bytes: state.result_max_bytes,
    };
    results::respond(&state.backends.objects, &path, format, page).await
}

/// Progress as server-sent events: `progress`, `step` (a step changed) and
/// `done` (terminal; ends the stream). A stream also ends, cleanly, after
/// FERRY_SSE_MAX_LIFETIME_SECONDS (default 3600; reconnect to go on), and a
/// user holds at most FERRY_SSE_MAX_STREAMS_PER_USER (default 10) at once.
#[utoipa::path(get, path = "/api/projects/{uuid}/executions/{execution_id}/events", tag = "executions",
    params(("uuid" = String, Path, description = "Project id"), ("execution_id" = String, Path, description = "Execution id")),
    responses(
        (status = 200, description = "text/event-stream; ends after `done`, or cleanly after the maximum lifetime", content_type = "text/event-stream"),
        (status = 404, description = "No such execution visible to the caller", body = ErrorBody),
        (status = 429, description = "The user already holds the most event streams allowed at once (Retry-After)", body = ErrorBody),
    ))]
async fn execution_events(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((uuid, execution_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (project, execution, _) = visible_execution(&state, &caller, &uuid, &execution_id).await?;
    // One of the user's stream slots, held until the stream is dropped (it
    // ended, or the client went away).
    let slot = state
        .sse_slots
        .try_take(
            &format!("{}:{}", caller.org_id, caller.user_id),
            state.limits.sse_streams_per_user,
        )
        .ok_or(ApiError::RateLimited(crate::limits::RETRY_AFTER))?;
    let lifetime = state.limits.sse_max_lifetime;
    let open = state.http_metrics.sse_stream();
    let org_id = caller.org_id.clone();
    let stream = async_stream(state, org_id, project.uuid, execution)
        .take_until(tokio::time::sleep(lifetime))
        .map(move |event| {
            let _held = (&slot, &open);
            event
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

fn event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event(name))
}

/// Emits events whenever the stored execution changes, until it is terminal.
fn async_stream(
    state: AppState,
    org_id: String,
    project_uuid: String,
    first: Execution,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (Some(first), None::<Execution>, false),
        move |(next, previous, done)| {
            let state = state.clone();
            let org_id = org_id.clone();
            let project_uuid = project_uuid.clone();
            async move {
                if done {
                    return None;
                }
                let current = match next {
                    Some(execution) => execution,
                    None => {
                        let id = previous.as_ref().map(|e| e.execution_id.clone()).unwrap_or_default();
                        let wait = wait_change(&state, &org_id, &project_uuid, &id, previous.as_ref()).await;
                        match wait {
                            Ok(execution) => execution,
                            Err(_) => return None,
                        }
                    }
                };
                let mut events = Vec::new();
                for step in &current.steps {
                    let before = previous.as_ref().and_then(|p| p.steps.iter().find(|s| s.step_id == step.step_id));
                    if before.is_none_or(|b| b.status != step.status) {
                        events.push(event("step", &StepRunView::from(step)));
                    }
                }
                let view = ExecutionView::from(&current);
                events.push(event("progress", &json!({"execution_id": view.execution_id, "status": view.status, "progress": view.progress})));
                let finished = current.status.is_terminal();
                if finished {
                    events.push(event("done", &view));
                }
                let items = futures::stream::iter(events.into_iter().map(Ok));
                Some((items, (None, Some(current), finished)))
            }
        },
    )
    .flatten()
}

/// Waits for the execution to differ from `previous` (status, a step's
/// status or progress), polling the store twice a second.
async fn wait_change(
    state: &AppState,
    org_id: &str,
    project_uuid: &str,
    execution_id: &str,
    previous: Option<&Execution>,
) -> ApiResult<Execution> {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let current = state
            .backends
            .store
            .get_execution(org_id, project_uuid, execution_id)
            .await?
            .ok_or_else(execution_not_found)?;
        if previous != Some(&current) {
            return Ok(current);
        }
    }
}
