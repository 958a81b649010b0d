//! Connectors API (`/api/connectors`): list (with the available types),
//! create, get, update, delete, disable, enable, test and health.
//!
//! The API never connects to a user's system: a connection test is a
//! `test_connection` job that a worker runs; the API waits for its reply.

use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use ferry_shared::Error;
use ferry_shared::connectors::{self, AuthKind, ConnectorType, SplitConfig, TypeId};
use ferry_shared::domain::{
    Connector, ConnectorListQuery, ConnectorStatus, ErrorKind, Principal, ResourceKind, Role, TestFailure,
    TestOutcome, TestRecord, TestStatus,
};
use ferry_shared::ids::IdKind;
use ferry_shared::jobs::{CONNECTOR_EVENTS, ConnectorEvent, TestConnectionJob};
use ferry_shared::queue::{Job, JobKind};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json, OptionalJson, Query};
use crate::views::{ErrorBody, PermissionsView, Provenance, timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_connectors, create_connector))
        .routes(routes!(get_connector, update_connector, delete_connector))
        .routes(routes!(disable_connector))
        .routes(routes!(enable_connector))
        .routes(routes!(test_connector))
        .routes(routes!(connector_health))
}

/// Added to a connector's own timeout while the API waits for a worker.
const QUEUE_MARGIN: Duration = Duration::from_secs(2);

// --- views -------------------------------------------------------------------

/// A connector as returned by every endpoint: credentials never included.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorView {
    #[schema(example = "conn_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub uuid: String,
    #[serde(rename = "type")]
    #[schema(example = json!(TypeId::Postgresql))]
    pub connector_type: String,
    pub display_name: String,
    /// Non-secret settings (a MongoDB connection string shows `****` for its password).
    #[schema(value_type = Object)]
    pub config: Map<String, Value>,
    /// `active`, `disabled` or `error`.
    pub status: String,
    /// `credentials` or `oauth`.
    pub auth_type: String,
    #[serde(flatten)]
    #[schema(inline)]
    pub provenance: Provenance,
    #[schema(format = DateTime)]
    pub last_tested_at: Option<String>,
    /// `success` or `failed`.
    pub last_test_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub disabled_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub permissions: PermissionsView,
    /// Present when the request ran a connection test.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub test_results: Option<Value>,
}

impl ConnectorView {
    fn new(connector: Connector, role: Role) -> Self {
        ConnectorView {
            uuid: connector.uuid,
            connector_type: connector.connector_type,
            display_name: connector.display_name,
            config: connector.config,
            status: connector.status.as_str().to_owned(),
            auth_type: connector.auth_type,
            provenance: Provenance::new(connector.created_by, connector.created_at, connector.updated_at),
            last_tested_at: connector.last_tested_at.map(timestamp),
            last_test_status: connector.last_test_status.map(|s| s.as_str().to_owned()),
            disabled_at: connector.disabled_at.map(timestamp),
            disabled_by: connector.disabled_by,
            reason: connector.disabled_reason,
            permissions: role.permissions().into(),
            test_results: None,
        }
    }

    fn with_test(mut self, outcome: &TestOutcome) -> Self {
        self.test_results = Some(success_details(outcome, true));
        self
    }
}

/// `test_results` / `details` of a successful test.
fn success_details(outcome: &TestOutcome, with_latency: bool) -> Value {
    let mut map = Map::new();
    if with_latency {
        map.insert("latency_ms".into(), outcome.latency_ms.into());
    }
    if let Some(version) = &outcome.version {
        map.insert("version".into(), version.clone().into());
    }
    if let Some(at) = outcome.server_time {
        map.insert("server_time".into(), timestamp(at).into());
    }
    if let Some(schemas) = &outcome.schemas_available {
        map.insert("schemas_available".into(), json!(schemas));
    }
    Value::Object(map)
}

/// A type that can be configured, as listed in `available_types`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AvailableType {
    #[serde(rename = "type")]
    pub type_id: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub auth_type: String,
    pub features: Vec<String>,
    pub documentation_url: String,
    pub documentation: String,
    /// Field name → `{type, required, default, secret, enum, description}`.
    #[schema(value_type = Object)]
    pub config_schema: Value,
}

impl From<&ConnectorType> for AvailableType {
    fn from(t: &ConnectorType) -> Self {
        AvailableType {
            type_id: t.type_id.to_string(),
            name: t.name.to_owned(),
            description: t.description.to_owned(),
            category: t.category.to_string(),
            auth_type: t.auth_type.as_str().to_owned(),
            features: t.features().into_iter().map(str::to_owned).collect(),
            documentation_url: t.documentation_url.clone(),
            documentation: t.documentation.to_owned(),
            config_schema: t.schema_json(),
        }
    }
}

/// Body of `GET /api/connectors`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorList {
    pub active_connectors: Vec<ConnectorView>,
    pub available_types: Vec<AvailableType>,
    pub total_active: usize,
    pub total_available: usize,
}

/// Result of `POST /api/connectors/{uuid}/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResponse {
    pub connector_uuid: String,
    /// `success` or `failed`.
    pub status: String,
    #[schema(format = DateTime)]
    pub tested_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// version, server_time, schemas_available (success).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    /// `{type, message, code?}` (failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

/// Result of `POST /api/connectors/{uuid}/disable`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisabledView {
    pub uuid: String,
    pub status: String,
    #[schema(format = DateTime)]
    pub disabled_at: Option<String>,
    pub disabled_by: Option<String>,
    pub reason: Option<String>,
}

/// `GET /api/connectors/{uuid}/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub connector_uuid: String,
    /// `healthy`, `degraded`, `unhealthy` or `unknown` (no check in 24 h).
    pub status: String,
    #[schema(format = DateTime)]
    pub last_check: Option<String>,
    pub metrics: HealthMetrics,
    pub recent_errors: Vec<HealthError>,
}

/// 24-hour figures of a connector's checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthMetrics {
    pub uptime_percentage_24h: f64,
    pub average_latency_ms: f64,
    pub error_rate_24h: f64,
    /// Tests, probes and step runs of the last 24 hours.
    pub total_queries_24h: usize,
}

/// One failed check.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthError {
    #[schema(format = DateTime)]
    pub at: String,
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
}

// --- requests ------------------------------------------------------------------

/// Body of `POST /api/connectors`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateConnector {
    #[serde(rename = "type")]
    #[schema(example = json!(TypeId::Postgresql))]
    pub connector_type: Option<String>,
    #[schema(example = "Production Database")]
    pub display_name: Option<String>,
    #[schema(value_type = Object)]
    pub config: Option<Map<String, Value>>,
    /// Test before creating (default true); a failed test stores nothing.
    pub test_connection: Option<bool>,
}

/// Body of `PATCH /api/connectors/{uuid}`: `config` is merged key by key;
/// an omitted secret keeps the stored one; `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateConnector {
    pub display_name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<Map<String, Value>>,
    /// Test the merged configuration before saving (default true).
    pub test_connection: Option<bool>,
}

/// Body of `POST /api/connectors/{uuid}/disable`.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct DisableConnector {
    #[schema(example = "Maintenance window")]
    pub reason: Option<String>,
}

/// Query of `GET /api/connectors`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListConnectorsParams {
    /// Only connectors of this type.
    #[serde(rename = "type")]
    pub connector_type: Option<String>,
    /// `active`, `disabled` or `error`.
    pub status: Option<String>,
    /// Include the configurable types (default true).
    pub include_available: Option<String>,
}

/// Query of `DELETE /api/connectors/{uuid}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteConnectorParams {
    /// Delete even when projects use it (their steps then fail with not_found).
    pub force: Option<String>,
}

// --- helpers -------------------------------------------------------------------

fn parse_bool(field: &str, value: Option<&str>, default: bool) -> ApiResult<bool> {
    match value {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ApiError::validation(
            field,
            format!("{field} must be true or false"),
        )),
    }
}

fn check_display_name(name: Option<&str>) -> ApiResult<String> {
    super::check_name("display_name", "display_name", name)
}

fn connector_type(type_id: &str) -> ApiResult<&'static ConnectorType> {
    connectors::find(type_id).ok_or_else(|| {
        let known: Vec<&str> = connectors::registry()
            .iter()
            .map(|t| t.type_id.as_str())
            .collect();
        Error::validation("type", format!("unknown connector type `{type_id}`"))
            .with_details(format!("known types: {}", known.join(", ")))
            .into()
    })
}

/// Loads a connector the caller may see, with the caller's role (see
/// [`super::visible`]).
pub(crate) async fn visible_connector(
    state: &AppState,
    caller: &Principal,
    uuid: &str,
) -> ApiResult<(Connector, Role)> {
    let load = state.backends.store.get_connector(&caller.org_id, uuid);
    super::visible(state, caller, ResourceKind::Connector, uuid, load).await
}

/// The connector a request's `{uuid}` names, loaded for the authenticated
/// caller with the caller's role: a connector the caller may not see is 404
/// (see [`super::visible`]).
pub(crate) struct VisibleConnector {
    pub connector: Connector,
    pub role: Role,
}

impl FromRequestParts<AppState> for VisibleConnector {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Caller(caller) = Caller::from_request_parts(parts, state).await?;
        let Path(uuid) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::validation("uuid", rejection.body_text()))?;
        let (connector, role) = visible_connector(state, &caller, &uuid).await?;
        Ok(Self { connector, role })
    }
}

async fn editable_connector(
    state: &AppState,
    caller: &Principal,
    uuid: &str,
) -> ApiResult<(Connector, Role)> {
    let (connector, role) = visible_connector(state, caller, uuid).await?;
    super::permit(role.can_edit(), "edit this connector")?;
    Ok((connector, role))
}

/// How long a test of `connector` may take (its type's rule; the worker
/// bounds the test by the same one).
fn timeout_of(connector: &Connector) -> Duration {
    connector.type_decl().map_or(
        Duration::from_secs(connectors::DEFAULT_TEST_TIMEOUT_SECONDS),
        |t| t.test_timeout(&connector.config),
    )
}

/// Runs a connection test on a worker and waits for its outcome; no answer
/// within the connector's timeout is a failed test of type `timeout`.
///
/// At most `limits.connection_tests_per_org` tests of one organization run
/// at once (each holds a worker slot for up to the connector's timeout); one
/// more is 429 `rate_limited` with Retry-After, and nothing is queued.
async fn run_test(state: &AppState, connector: &Connector) -> ApiResult<TestOutcome> {
    let _slot = state
        .test_slots
        .try_take(&connector.org_id, state.limits.connection_tests_per_org)
        .ok_or(ApiError::RateLimited(crate::limits::RETRY_AFTER))?;
    let reply_to = format!("test-reply:{}", ulid::Ulid::new());
    let payload = TestConnectionJob {
        connector_uuid: connector.uuid.clone(),
        org_id: connector.org_id.clone(),
        connector_type: connector.connector_type.clone(),
        config_version: connector.config_version,
        config: connector.config.clone(),
        secrets: connector.secrets.clone(),
        reply_to: reply_to.clone(),
    };
    let payload = serde_json::to_value(&payload).map_err(Error::internal_from)?;
    state
        .backends
        .queue
        .enqueue(&Job::new(JobKind::TestConnection, payload))
        .await?;
    let wait = timeout_of(connector) + QUEUE_MARGIN;
    match state.backends.bus.wait_reply(&reply_to, wait).await? {
        Some(value) => serde_json::from_value(value).map_err(|e| Error::internal_from(e).into()),
        None => Ok(TestOutcome {
            connector_uuid: connector.uuid.clone(),
            tested_at: ferry_shared::domain::now(),
            latency_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            version: None,
            server_time: None,
            schemas_available: None,
            error: Some(TestFailure {
                error_type: ErrorKind::Timeout,
                message: "no worker completed the connection test within the connector's timeout".into(),
                code: None,
            }),
        }),
    }
}

/// The seed's 400 `connection_failed` for a failed test on create/update.
fn connection_failed(outcome: &TestOutcome) -> ApiError {
    let failure = outcome.error.clone().unwrap_or(TestFailure {
        error_type: ErrorKind::Unknown,
        message: "the connection test failed".into(),
        code: None,
    });
    let mut test_results = Map::new();
    test_results.insert("error_type".into(), failure.error_type.as_str().into());
    test_results.insert("attempted_at".into(), timestamp(outcome.tested_at).into());
    if let Some(code) = &failure.code {
        test_results.insert("code".into(), code.clone().into());
    }
    let mut extra = Map::new();
    extra.insert("details".into(), failure.message.into());
    extra.insert("test_results".into(), Value::Object(test_results));
    ApiError::ConnectionFailed {
        message: "Failed to connect".into(),
        extra,
    }
}

/// Credentials never go to an endpoint someone chose without them: when a
/// PATCH changes a field that says where the connector connects (host, port,
/// database, `base_url`, `token_url`, `connection_string`, a file path; see
/// the registry's endpoint fields), every secret the connector keeps must be
/// in the PATCH too. The first one missing is 400 `validation_error` naming
/// `config.<secret>`. OAuth tokens cannot be sent by hand: such a connector
/// is connected again through the OAuth flow instead.
fn require_secrets_for_new_endpoint(
    kind: &ConnectorType,
    stored: &Map<String, Value>,
    updated: &SplitConfig,
    patch: &Map<String, Value>,
) -> ApiResult<()> {
    let merged = updated.merged();
    let moved: Vec<&str> = kind
        .endpoint_fields()
        .filter(|name| stored.get(*name) != merged.get(*name))
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    let moved = moved.join(", ");
    for name in updated.secrets.keys() {
        if patch.get(name).is_some_and(|value| !value.is_null()) {
            continue;
        }
        let message = if kind.field(name).is_some() {
            format!("changing {moved} changes where the connector connects: send {name} again with it")
        } else {
            format!(
                "changing {moved} changes where the connector connects, and its OAuth tokens cannot follow: \
                 connect it again through /api/oauth/{}/authorize",
                kind.type_id
            )
        };
        return Err(Error::validation(format!("config.{name}"), message).into());
    }
    Ok(())
}

/// Refuses a connection test of a type no worker has a driver for.
fn require_driver(connector_type: &str) -> ApiResult<()> {
    if connectors::find(connector_type).is_some_and(ConnectorType::has_driver) {
        Ok(())
    } else {
        Err(Error::validation(
            "test_connection",
            format!("connection tests for {connector_type} connectors are not available yet; send test_connection: false"),
        )
        .into())
    }
}

async fn announce(state: &AppState, uuid: &str, change: &str) {
    let event = ConnectorEvent {
        connector_uuid: uuid.to_owned(),
        change: change.to_owned(),
    };
    if let Ok(value) = serde_json::to_value(&event)
        && let Err(error) = state.backends.bus.publish(CONNECTOR_EVENTS, &value).await
    {
        tracing::warn!(connector_uuid = uuid, %error, "connector event not published");
    }
}

// --- handlers ------------------------------------------------------------------

/// The caller's connectors and the types that can be configured.
#[utoipa::path(get, path = "/api/connectors", tag = "connectors", params(ListConnectorsParams),
    responses(
        (status = 200, description = "Connectors and available types", body = ConnectorList),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
    ))]
async fn list_connectors(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(params): Query<ListConnectorsParams>,
) -> ApiResult<axum::Json<ConnectorList>> {
    let include_available = parse_bool("include_available", params.include_available.as_deref(), true)?;
    let connector_type = match params.connector_type {
        Some(t) => Some(connector_type(&t)?.type_id.to_string()),
        None => None,
    };
    let status = match params.status.as_deref() {
        None => None,
        Some(text) => Some(ConnectorStatus::parse(text).ok_or_else(|| {
            ApiError::validation("status", "status must be one of active, disabled, error")
        })?),
    };
    let query = ConnectorListQuery {
        is_admin: caller.is_admin(),
        org_id: caller.org_id,
        user_id: caller.user_id,
        connector_type,
        status,
    };
    let active: Vec<ConnectorView> = state
        .backends
        .store
        .list_connectors(&query)
        .await?
        .into_iter()
        .map(|(connector, role)| ConnectorView::new(connector, role))
        .collect();
    let available: Vec<AvailableType> = if include_available {
        connectors::registry().iter().map(Into::into).collect()
    } else {
        Vec::new()
    };
    Ok(axum::Json(ConnectorList {
        total_active: active.len(),
        total_available: available.len(),
        active_connectors: active,
        available_types: available,
    }))
}

/// Creates a connector with direct credentials, testing it first unless
/// `test_connection` is false.
#[utoipa::path(post, path = "/api/connectors", tag = "connectors", request_body = CreateConnector,
    responses(
        (status = 201, description = "Created", body = ConnectorView),
        (status = 400, description = "Invalid configuration (validation_error) or failed test (connection_failed)", body = ErrorBody),
        (status = 429, description = "The organization already runs the most connection tests allowed at once (Retry-After)", body = ErrorBody),
    ))]
async fn create_connector(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(body): Json<CreateConnector>,
) -> ApiResult<impl IntoResponse> {
    let type_id = body
        .connector_type
        .as_deref()
        .ok_or_else(|| ApiError::validation("type", "type is required"))?;
    let kind = connector_type(type_id)?;
    if kind.auth_type == AuthKind::OAuth {
        return Err(ApiError::validation(
            "type",
            format!(
                "{type_id} connectors are created through the OAuth flow (/api/oauth/{type_id}/authorize)"
            ),
        ));
    }
    let display_name = check_display_name(body.display_name.as_deref())?;
    let config = body
        .config
        .ok_or_else(|| ApiError::validation("config", "config is required"))?;
    let SplitConfig { public, secrets } = kind.validate_new(&config)?;
    let test = body.test_connection.unwrap_or(true);
    if test {
        require_driver(kind.type_id.as_str())?;
    }
    let uuid = IdKind::Connector.generate();
    let now = ferry_shared::domain::now();
    let mut connector = Connector {
        secrets: state.backends.vault.seal(&uuid, &secrets)?,
        uuid,
        org_id: caller.org_id.clone(),
        connector_type: kind.type_id.to_string(),
        display_name,
        config: public,
        config_version: 1,
        status: ConnectorStatus::Active,
        auth_type: kind.auth_type.as_str().to_owned(),
        created_by: caller.user_id.clone(),
        created_at: now,
        updated_at: now,
        last_tested_at: None,
        last_test_status: None,
        disabled_at: None,
        disabled_by: None,
        disabled_reason: None,
    };
    let outcome = if test {
        Some(run_test(&state, &connector).await?)
    } else {
        None
    };
    if let Some(outcome) = &outcome {
        if outcome.error.is_some() {
            return Err(connection_failed(outcome));
        }
        connector.last_tested_at = Some(outcome.tested_at);
        connector.last_test_status = Some(TestStatus::Success);
    }
    state.backends.store.create_connector(&connector).await?;
    if let Some(outcome) = &outcome {
        state
            .backends
            .store
            .record_test(&TestRecord::from(outcome))
            .await?;
    }
    tracing::info!(connector_uuid = %connector.uuid, connector_type = %connector.connector_type, "connector created");
    let mut view = ConnectorView::new(connector, Role::Owner);
    if let Some(outcome) = &outcome {
        view = view.with_test(outcome);
    }
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// One connector (credentials hidden).
#[utoipa::path(get, path = "/api/connectors/{uuid}", tag = "connectors",
    params(("uuid" = String, Path, description = "Connector id")),
    responses(
        (status = 200, description = "The connector", body = ConnectorView),
        (status = 404, description = "No such connector visible to the caller", body = ErrorBody),
    ))]
async fn get_connector(
    VisibleConnector { connector, role, .. }: VisibleConnector,
) -> ApiResult<axum::Json<ConnectorView>> {
    Ok(axum::Json(ConnectorView::new(connector, role)))
}

/// Updates the display name and/or configuration (merged key by key).
#[utoipa::path(patch, path = "/api/connectors/{uuid}", tag = "connectors", request_body = UpdateConnector,
    params(("uuid" = String, Path, description = "Connector id")),
    responses(
        (status = 200, description = "The updated connector", body = ConnectorView),
        (status = 400, description = "Invalid configuration, a changed endpoint (host, port, database, base_url, token_url, connection_string, path) without the secrets sent again (`field: config.<secret>`), or a failed test", body = ErrorBody),
        (status = 403, description = "The caller may only read this connector", body = ErrorBody),
        (status = 404, description = "No such connector visible to the caller", body = ErrorBody),
        (status = 409, description = "Steps using it are executing, or it changed concurrently", body = ErrorBody),
        (status = 429, description = "The organization already runs the most connection tests allowed at once (Retry-After)", body = ErrorBody),
    ))]
async fn update_connector(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    Json(body): Json<UpdateConnector>,
) -> ApiResult<axum::Json<ConnectorView>> {
    let display_name = match body.display_name.as_deref() {
        Some(name) => Some(check_display_name(Some(name))?),
        None => None,
    };
    let (current, role) = editable_connector(&state, &caller, &uuid).await?;
    let kind = connector_type(&current.connector_type)?;
    if body.config.is_some() {
        let active = state
            .backends
            .store
            .active_executions_using(&caller.org_id, &current.uuid)
            .await?;
        if active > 0 {
            let mut extra = Map::new();
            extra.insert("active_executions".into(), active.into());
            return Err(Error::Conflict {
                message: "Cannot update connector while steps are executing".into(),
                extra,
            }
            .into());
        }
    }
    let mut updated = current.clone();
    if let Some(name) = display_name {
        updated.display_name = name;
    }
    let config_changed = body.config.is_some();
    if let Some(patch) = &body.config {
        let secrets = state.backends.vault.open(&current.uuid, &current.secrets)?;
        let split = kind.validate_patch(&current.config, secrets.expose_secret(), patch)?;
        require_secrets_for_new_endpoint(
            kind,
            &connectors::merge(&current.config, secrets.expose_secret()),
            &split,
            patch,
        )?;
        let SplitConfig { public, secrets } = split;
        updated.config = public;
        updated.secrets = state.backends.vault.seal(&current.uuid, &secrets)?;
        updated.config_version = current.config_version + 1;
    }
    let test = body.test_connection.unwrap_or(true);
    let outcome = if test {
        require_driver(kind.type_id.as_str())?;
        let outcome = run_test(&state, &updated).await?;
        if outcome.error.is_some() {
            state
                .backends
                .store
                .record_test(&TestRecord::from(&outcome))
                .await?;
            return Err(connection_failed(&outcome));
        }
        updated.last_tested_at = Some(outcome.tested_at);
        updated.last_test_status = Some(TestStatus::Success);
        Some(outcome)
    } else {
        None
    };
    updated.updated_at = ferry_shared::domain::now();
    if !state
        .backends
        .store
        .update_connector(&updated, current.config_version)
        .await?
    {
        return Err(Error::conflict("The connector was changed concurrently; retry the update").into());
    }
    if let Some(outcome) = &outcome {
        state
            .backends
            .store
            .record_test(&TestRecord::from(outcome))
            .await?;
    }
    if config_changed {
        announce(&state, &uuid, "updated").await;
    }
    let mut view = ConnectorView::new(updated, role);
    if let Some(outcome) = &outcome {
        view = view.with_test(outcome);
    }
    Ok(axum::Json(view))
}

/// Deletes a connector (owners only); 409 with `usage` while projects use
/// it, unless `force=true`.
#[utoipa::path(delete, path = "/api/connectors/{uuid}", tag = "connectors",
    params(("uuid" = String, Path, description = "Connector id"), DeleteConnectorParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "Only owners delete", body = ErrorBody),
        (status = 404, description = "No such connector visible to the caller", body = ErrorBody),
        (status = 409, description = "Projects use it; the body lists them in `usage`", body = ErrorBody),
    ))]
async fn delete_connector(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    Query(params): Query<DeleteConnectorParams>,
) -> ApiResult<StatusCode> {
    let force = parse_bool("force", params.force.as_deref(), false)?;
    let (connector, role) = visible_connector(&state, &caller, &uuid).await?;
    super::permit(role.can_delete(), "delete this connector")?;
    let usage = state
        .backends
        .store
        .connector_usage(&caller.org_id, &connector.uuid)
        .await?;
    if !usage.is_empty() && !force {
        let mut extra = Map::new();
        extra.insert(
            "usage".into(),
            serde_json::to_value(&usage).map_err(Error::internal_from)?,
        );
        return Err(Error::Conflict {
            message: format!(
                "Cannot delete connector: used by {} project{}",
                usage.len(),
                if usage.len() == 1 { "" } else { "s" }
            ),
            extra,
        }
        .into());
    }
    state
        .backends
        .store
        .delete_connector(&caller.org_id, &connector.uuid)
        .await?;
    announce(&state, &uuid, "deleted").await;
    tracing::info!(connector_uuid = %uuid, forced = force && !usage.is_empty(), "connector deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn set_status(
    state: &AppState,
    caller: &Principal,
    uuid: &str,
    status: ConnectorStatus,
    reason: Option<String>,
) -> ApiResult<(Connector, Role)> {
    let (current, role) = editable_connector(state, caller, uuid).await?;
    let mut updated = current.clone();
    updated.status = status;
    updated.updated_at = ferry_shared::domain::now();
    if status == ConnectorStatus::Disabled {
        updated.disabled_at = Some(updated.updated_at);
        updated.disabled_by = Some(caller.user_id.clone());
        updated.disabled_reason = reason;
    } else {
        updated.disabled_at = None;
        updated.disabled_by = None;
        updated.disabled_reason = None;
    }
    if !state
        .backends
        .store
        .update_connector(&updated, current.config_version)
        .await?
    {
        return Err(Error::conflict("The connector was changed concurrently; retry").into());
    }
    Ok((updated, role))
}

/// Disables a connector without deleting it; its pools are closed.
#[utoipa::path(post, path = "/api/connectors/{uuid}/disable", tag = "connectors", request_body = DisableConnector,
    params(("uuid" = String, Path, description = "Connector id")),
    responses(
        (status = 200, description = "Disabled", body = DisabledView),
        (status = 403, description = "The caller may only read this connector", body = ErrorBody),
        (status = 404, description = "No such connector visible to the caller", body = ErrorBody),
    ))]
async fn disable_connector(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    OptionalJson(body): OptionalJson<DisableConnector>,
) -> ApiResult<axum::Json<DisabledView>> {
    let reason = body.and_then(|b| b.reason).filter(|r| !r.trim().is_empty());
    let (connector, _) = set_status(&state, &caller, &uuid, ConnectorStatus::Disabled, reason).await?;
    announce(&state, &uuid, "disabled").await;
    Ok(axum::Json(DisabledView {
        uuid: connector.uuid,
        status: connector.status.as_str().to_owned(),
        disabled_at: connector.disabled_at.map(timestamp),
        disabled_by: connector.disabled_by,
        reason: connector.disabled_reason,
    }))
}

/// Re-enables a disabled connector.
#[utoipa::path(post, path = "/api/connectors/{uuid}/enable", tag = "connectors",
    params(("uuid" = String, Path, description = "Connector id")),
    responses(
        (status = 200, description = "Enabled", body = ConnectorView),
        (status = 403, description = "The caller may only read this connector", body = ErrorBody),
        (status = 404, description = "No such connector visible to the caller", body = ErrorBody),
    ))]
async fn enable_connector(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
) -> ApiResult<axum::Json<ConnectorView>> {
    let (connector, role) = set_status(&state, &caller, &uuid, ConnectorStatus::Active, None).await?;
    Ok(axum::Json(ConnectorView::new(connector, role)))
}

/// Tests the stored configuration on a worker.
#[utoipa::path(post, path = "/api/connectors/{uuid}/test", tag = "connectors",
    params(("uuid" = String, Path, description = "Connector id")),
    responses(
        (status = 200, description = "The test ran (status success or failed)", body = TestResponse),
        (status = 400, description = "This connector type cannot be tested yet", body = ErrorBody),
        (status = 404, description = "No such connector visible to the caller", body = ErrorBody),
        (status = 429, description = "The organization already runs the most connection tests allowed at once (Retry-After)", body = ErrorBody),
    ))]
async fn test_connector(
    State(state): State<AppState>,
    VisibleConnector { connector, .. }: VisibleConnector,
) -> ApiResult<axum::Json<TestResponse>> {
    require_driver(&connector.connector_type)?;
    let outcome = run_test(&state, &connector).await?;
    state
        .backends
        .store
        .record_test(&TestRecord::from(&outcome))
        .await?;
    let response = match &outcome.error {
        None => TestResponse {
            connector_uuid: connector.uuid,
            status: TestStatus::Success.as_str().to_owned(),
            tested_at: timestamp(outcome.tested_at),
            latency_ms: Some(outcome.latency_ms),
            details: Some(success_details(&outcome, false)),
            error: None,
        },
        Some(failure) => TestResponse {
            connector_uuid: connector.uuid,
            status: TestStatus::Failed.as_str().to_owned(),
            tested_at: timestamp(outcome.tested_at),
            latency_ms: None,
            details: None,
            error: Some(serde_json::to_value(failure).map_err(Error::internal_from)?),
        },
    };
    Ok(axum::Json(response))
}

/// Health over the last 24 hours, from recorded tests and probes.
///
/// Every connector that is `active` or in `error` is probed by the
/// scheduler once per `FERRY_PROBE_INTERVAL` (default 5 minutes): a worker
/// runs the connection test through the connector's own pool (so its
/// `max_connections` holds), at the connector's own offset within the
/// interval (a hash of its uuid, so probes are spread out), never two at
/// once for one connector. Probes are recorded beside the users'
/// connection tests.
///
/// - `status`: `healthy` when the latest check (test or probe) succeeded
///   and at least 99 % of the day's checks did, `degraded` when the latest
///   succeeded but more failed, `unhealthy` when the latest failed,
///   `unknown` without a check in 24 h. `last_check` is the latest check.
/// - `metrics.uptime_percentage_24h`, `error_rate_24h` (a fraction) and
///   `average_latency_ms` (of the successful checks) are over the day's
///   tests and probes.
/// - `metrics.total_queries_24h` counts the day's tests and probes plus
///   the execution steps that used the connector and started in the last
///   24 h (each step run once, whatever its retries; counted from the
///   executions' step records, which name the connector).
/// - `recent_errors`: the latest 10 failed checks, newest first.
///
/// After 3 consecutive failed probes an `active` connector's status
/// becomes `error`; the first successful probe makes it `active` again. A
/// disabled connector is not probed.
#[utoipa::path(get, path = "/api/connectors/{uuid}/health", tag = "connectors",
    params(("uuid" = String, Path, description = "Connector id")),
    responses(
        (status = 200, description = "Health", body = HealthView),
        (status = 404, description = "No such connector visible to the caller", body = ErrorBody),
    ))]
async fn connector_health(
    State(state): State<AppState>,
    VisibleConnector { connector, .. }: VisibleConnector,
) -> ApiResult<axum::Json<HealthView>> {
    let since = ferry_shared::domain::now() - chrono::Duration::hours(24);
    let history = state.backends.store.test_history(&connector.uuid, since).await?;
    let step_runs = state
        .backends
        .store
        .step_runs_since(&connector.uuid, since)
        .await?;
    Ok(axum::Json(health_of(&connector.uuid, &history, step_runs)))
}

/// Computes the health view from a day of checks (tests and probes) and
/// step runs: healthy when the latest check succeeded and at least 99 % did,
/// degraded when the latest succeeded but more failed, unhealthy when the
/// latest failed, unknown without checks. The query count is the checks
/// plus the step runs.
pub fn health_of(uuid: &str, history: &[TestRecord], step_runs: u64) -> HealthView {
    let total = history.len();
    let failures = history.iter().filter(|r| !r.success).count();
    let successes: Vec<&TestRecord> = history.iter().filter(|r| r.success).collect();
    let ratio = |n: usize| if total == 0 { 0.0 } else { n as f64 / total as f64 };
    let uptime = (ratio(total - failures) * 1000.0).round() / 10.0;
    let average_latency = if successes.is_empty() {
        0.0
    } else {
        (successes.iter().map(|r| r.latency_ms as f64).sum::<f64>() / successes.len() as f64).round()
    };
    let last = history.last();
    let status = match last {
        None => "unknown",
        Some(r) if !r.success => "unhealthy",
        Some(_) if uptime >= 99.0 => "healthy",
        Some(_) => "degraded",
    };
    let last_check: Option<DateTime<Utc>> = last.map(|r| r.tested_at);
    HealthView {
        connector_uuid: uuid.to_owned(),
        status: status.to_owned(),
        last_check: last_check.map(timestamp),
        metrics: HealthMetrics {
            uptime_percentage_24h: uptime,
            average_latency_ms: average_latency,
            error_rate_24h: (ratio(failures) * 10_000.0).round() / 10_000.0,
            total_queries_24h: total.saturating_add(usize::try_from(step_runs).unwrap_or(usize::MAX)),
        },
        recent_errors: history
            .iter()
            .rev()
            .filter(|r| !r.success)
            .take(10)
            .map(|r| HealthError {
                at: timestamp(r.tested_at),
                error_type: r.error_type.clone().unwrap_or_else(|| "unknown".into()),
                message: r.error_message.clone().unwrap_or_default(),
            })
            .collect(),
    }
}
