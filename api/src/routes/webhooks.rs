//! Webhooks (`/api/webhooks`): an organization's subscriptions to Ferry's
//! events, their delivery log and redelivery. Managed by organization
//! admins only: a webhook receives events about every project and connector
//! of the organization, including those a member cannot see.
//!
//! The signing secret (`whsec_…`) is made here, shown once in the create
//! answer and stored sealed in the vault with the extra headers.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use ferry_shared::Error;
use ferry_shared::domain::webhook::{
    DeliveryAttempt, EventType, RESERVED_HEADERS, RetryConfig, Webhook, WebhookSecrets,
};
use ferry_shared::domain::{self, Principal};
use ferry_shared::ids::IdKind;
use ferry_shared::jobs::DeliverWebhookJob;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json, Query};
use crate::views::{ErrorBody, nullable, timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(redeliver))
}

/// Longest webhook URL, in bytes.
const MAX_URL: usize = 2048;
/// Longest description, in characters.
const MAX_DESCRIPTION: usize = 1000;
/// Most extra headers a webhook may send.
const MAX_HEADERS: usize = 20;
/// What a header value shows as in answers: values may be credentials.
const HIDDEN: &str = "****";

/// `retry_config` in a request: omitted fields take their defaults (on
/// create) or keep their values (on PATCH).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct RetryConfigBody {
    /// Tries in all, the first included: 1–20 (default 8).
    #[schema(example = 8)]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry, in seconds: 1–86400 (default 5).
    #[schema(example = 5)]
    pub initial_interval_seconds: Option<u64>,
    /// Longest wait between two tries, in seconds: 1–86400 (default 3600).
    #[schema(example = 3600)]
    pub max_interval_seconds: Option<u64>,
}

/// Body of `POST /api/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateWebhook {
    /// Required: an `http` or `https` URL without user info, at most 2048
    /// bytes.
    #[schema(example = "https://hooks.example.com/ferry")]
    pub url: Option<String>,
    /// Required, at least one of the event types.
    #[schema(example = json!(["project.completed", "project.failed"]))]
    pub events: Option<Vec<String>>,
    /// At most 1000 characters.
    pub description: Option<String>,
    /// Default true. A disabled webhook receives nothing.
    pub enabled: Option<bool>,
    /// Extra headers sent with every delivery (at most 20; not the
    /// signature's `webhook-*` headers, nor `content-type`, `host` and the
    /// like). Stored sealed; answers show their values as `****`.
    #[schema(value_type = Option<Object>, example = json!({"Authorization": "Bearer receiver-token"}))]
    pub headers: Option<BTreeMap<String, String>>,
    pub retry_config: Option<RetryConfigBody>,
}

/// Body of `PATCH /api/webhooks/{uuid}`: the fields it carries change, the
/// others stay.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
    /// Replaces the whole set; `null` or `{}` removes them.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Option<BTreeMap<String, String>>>,
    /// Merged field by field into the current one.
    pub retry_config: Option<RetryConfigBody>,
}

/// A webhook as answers show it (never with its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    #[schema(example = "whk_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub uuid: String,
    pub url: String,
    #[schema(example = json!(["project.completed"]))]
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// The extra headers' names, each value shown as `****`.
    #[schema(value_type = Object, example = json!({"Authorization": "****"}))]
    pub headers: BTreeMap<String, String>,
    #[schema(value_type = Object, example = json!({"max_attempts": 8, "initial_interval_seconds": 5, "max_interval_seconds": 3600}))]
    pub retry_config: RetryConfig,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A new webhook, with its signing secret: the only time it is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhookView {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The Standard Webhooks signing secret (`whsec_` and the base64 of 32
    /// random bytes). Shown once: store it now.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// The organization's webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<WebhookView>,
}

/// One try of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    #[schema(example = "dlv_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub delivery_id: String,
    /// The event's id: the `webhook-id` of every try and redelivery.
    #[schema(example = "evt_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub event_id: String,
    #[schema(example = "project.completed")]
    pub event_type: String,
    /// 1 for the first try; a redelivery continues the count.
    pub attempt: i32,
    /// The receiver's status; `null` when no answer came (refused by the
    /// network policy, connection failed, timed out).
    pub status_code: Option<i32>,
    /// Whether the receiver answered 2xx.
    pub ok: bool,
    pub error: Option<String>,
    pub duration_ms: i64,
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<DeliveryAttempt> for DeliveryView {
    fn from(attempt: DeliveryAttempt) -> Self {
        DeliveryView {
            delivery_id: attempt.delivery_id,
            event_id: attempt.event_id,
            event_type: attempt.event_type.as_str().to_owned(),
            attempt: attempt.attempt,
            status_code: attempt.status_code,
            ok: attempt.ok,
            error: attempt.error,
            duration_ms: attempt.duration_ms,
            created_at: timestamp(attempt.created_at),
        }
    }
}

/// The most recent tries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryView>,
}

/// The answer to a redelivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliveryView {
    pub delivery_id: String,
    /// `pending`: the delivery is tried again now.
    #[schema(example = "pending")]
    pub status: String,
}

/// `?limit=` of the deliveries list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveriesQuery {
    /// How many tries to list, 1–100 (default 50).
    pub limit: Option<i64>,
}

/// 403 unless the caller is an organization admin.
fn require_admin(caller: &Principal) -> ApiResult<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::forbidden("Only organization admins can manage webhooks").into())
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("Webhook not found")
}

/// The caller's organization's webhook, or 404.
async fn load(state: &AppState, caller: &Principal, uuid: &str) -> ApiResult<Webhook> {
    if !IdKind::Webhook.matches(uuid) {
        return Err(not_found());
    }
    state
        .backends
        .store
        .get_webhook(&caller.org_id, uuid)
        .await?
        .ok_or_else(not_found)
}

fn check_url(url: Option<&str>) -> ApiResult<String> {
    let text = url.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err(ApiError::validation("url", "url is required"));
    }
    if text.len() > MAX_URL {
        return Err(ApiError::validation(
            "url",
            format!("url is at most {MAX_URL} bytes"),
        ));
    }
    let parsed = url::Url::parse(text)
        .map_err(|_| ApiError::validation("url", "url must be an absolute http or https URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::validation(
            "url",
            "url must be an absolute http or https URL",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::validation(
            "url",
            "url must not carry credentials; send them in headers",
        ));
    }
    if parsed.fragment().is_some() {
        return Err(ApiError::validation("url", "url must not have a fragment"));
    }
    Ok(text.to_owned())
}

fn check_events(events: Option<&[String]>) -> ApiResult<Vec<EventType>> {
    let Some(events) = events else {
        return Err(ApiError::validation("events", "events is required"));
    };
    if events.is_empty() {
        return Err(ApiError::validation(
            "events",
            "events must name at least one event type",
        ));
    }
    let mut parsed = Vec::with_capacity(events.len());
    for (index, word) in events.iter().enumerate() {
        let event = word.parse::<EventType>().map_err(|_| {
            ApiError::validation(
                format!("events[{index}]"),
                format!(
                    "unknown event type {word:?}; one of: {}",
                    EventType::words().join(", ")
                ),
            )
        })?;
        parsed.push(event);
    }
    parsed.sort();
    parsed.dedup();
    Ok(parsed)
}

fn check_description(description: Option<String>) -> ApiResult<Option<String>> {
    let Some(text) = description.map(|d| d.trim().to_owned()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::validation(
            "description",
            format!("description is at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok((!text.is_empty()).then_some(text))
}

fn check_headers(headers: BTreeMap<String, String>) -> ApiResult<BTreeMap<String, String>> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::validation(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    for (name, value) in &headers {
        let field = || format!("headers.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::validation(field(), "not a valid HTTP header name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ApiError::validation(field(), "this header is set by Ferry"));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(ApiError::validation(field(), "not a valid HTTP header value"));
        }
    }
    Ok(headers)
}

fn check_retry(base: RetryConfig, body: Option<RetryConfigBody>) -> ApiResult<RetryConfig> {
    let body = body.unwrap_or_default();
    let config = RetryConfig {
        max_attempts: body.max_attempts.unwrap_or(base.max_attempts),
        initial_interval_seconds: body
            .initial_interval_seconds
            .unwrap_or(base.initial_interval_seconds),
        max_interval_seconds: body.max_interval_seconds.unwrap_or(base.max_interval_seconds),
    };
    config
        .check()
        .map_err(|(field, message)| ApiError::validation(field, message))?;
    Ok(config)
}

/// A fresh Standard Webhooks secret: `whsec_` and 32 random bytes in base64.
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn view(webhook: &Webhook, header_names: impl IntoIterator<Item = String>) -> WebhookView {
    WebhookView {
        uuid: webhook.uuid.clone(),
        url: webhook.url.clone(),
        events: webhook.events.iter().map(|e| e.as_str().to_owned()).collect(),
        description: webhook.description.clone(),
        enabled: webhook.enabled,
        headers: header_names
            .into_iter()
            .map(|name| (name, HIDDEN.to_owned()))
            .collect(),
        retry_config: webhook.retry_config,
        created_by: webhook.created_by.clone(),
        created_at: timestamp(webhook.created_at),
        updated_at: timestamp(webhook.updated_at),
    }
}

/// The webhook's sealed secret and headers, opened.
fn open(state: &AppState, webhook: &Webhook) -> ApiResult<WebhookSecrets> {
    let opened = state.backends.vault.open(&webhook.uuid, &webhook.secrets)?;
    WebhookSecrets::from_map(opened.expose_secret())
        .ok_or_else(|| Error::internal("a webhook's sealed secrets are malformed").into())
}

fn shown(state: &AppState, webhook: &Webhook) -> ApiResult<WebhookView> {
    let secrets = open(state, webhook)?;
    Ok(view(webhook, secrets.headers.into_keys()))
}

/// Creates a webhook (organization admins only). The answer is the only
/// time its signing `secret` is shown.
///
/// **Events.** `connector.connection_failed` (a connector's health probes
/// failed three times in a row and it went to `error`),
/// `connector.credentials_expired` (the provider refused an OAuth
/// connector's refresh token: it needs a new authorization),
/// `connector.quota_exceeded` (a step failed because the connector's
/// server kept answering that it was rate limited or over quota, after the
/// step's retries), `project.completed`, `project.failed`,
/// `project.cancelled` (an execution of a project ended) and
/// `execution.started` (a worker took an execution).
///
/// **Who receives what.** Every event goes to the enabled webhooks of its
/// organization subscribed to its type. The end of an execution started
/// with `notify_on_completion: true` (`project.completed`, `.failed`,
/// `.cancelled`) goes to every enabled webhook of the organization,
/// subscribed or not. A disabled webhook receives nothing, not even
/// deliveries made before it was disabled.
///
/// **Delivery.** `POST` of `{"id", "type", "created_at", "data"}` signed per
/// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature:
/// v1,<base64 HMAC-SHA256 of id.timestamp.body>`), at least once: a 2xx
/// answer delivers; anything else (another status, no answer within the
/// worker's `FERRY_WEBHOOK_TIMEOUT`, an address the network policy refuses)
/// is retried after `initial_interval_seconds`, doubling up to
/// `max_interval_seconds`, with up to a fifth of jitter, until
/// `max_attempts` tries. Every try of an event carries the same
/// `webhook-id` (the event's `id`); receivers dedupe on it. Redirects are
/// not followed. Events are recorded in the metadata store with the change
/// they report, so neither a Redis restart nor a worker dying mid-try loses
/// one. Execution `data`: `execution_id`, `project_uuid`, `project_name`,
/// `status`, `trigger`, `started_at`, `completed_at`, `duration_seconds`,
/// `total_rows`, `output_files`, `failed_step`. Connector `data`:
/// `connector_uuid`, `connector_type`, `display_name` and the error.
#[utoipa::path(post, path = "/api/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = CreatedWebhookView),
        (status = 400, description = "Invalid input (`url`, `events`, `headers.<name>`, `retry_config.<field>`, `description`)", body = ErrorBody),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
    ))]
async fn create_webhook(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(body): Json<CreateWebhook>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&caller)?;
    let url = check_url(body.url.as_deref())?;
    let events = check_events(body.events.as_deref())?;
    let description = check_description(body.description)?;
    let headers = check_headers(body.headers.unwrap_or_default())?;
    let retry_config = check_retry(RetryConfig::default(), body.retry_config)?;
    let uuid = IdKind::Webhook.generate();
    let secrets = WebhookSecrets {
        secret: new_secret(),
        headers,
    };
    let sealed = state.backends.vault.seal(&uuid, &secrets.to_map())?;
    let now = domain::now();
    let webhook = Webhook {
        uuid,
        org_id: caller.org_id,
        url,
        events,
        description,
        enabled: body.enabled.unwrap_or(true),
        retry_config,
        secrets: sealed,
        created_by: caller.user_id,
        created_at: now,
        updated_at: now,
    };
    state.backends.store.create_webhook(&webhook).await?;
    let view = CreatedWebhookView {
        webhook: view(&webhook, secrets.headers.keys().cloned()),
        secret: secrets.secret.clone(),
    };
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// The organization's webhooks, oldest first (organization admins only).
#[utoipa::path(get, path = "/api/webhooks", tag = "webhooks",
    responses(
        (status = 200, description = "The webhooks", body = WebhookList),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
    ))]
async fn list_webhooks(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<axum::Json<WebhookList>> {
    require_admin(&caller)?;
    let webhooks = state.backends.store.list_webhooks(&caller.org_id).await?;
    let data = webhooks
        .iter()
        .map(|webhook| shown(&state, webhook))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(axum::Json(WebhookList { data }))
}

/// One webhook (organization admins only). A webhook of another
/// organization, or a malformed id, is 404.
#[utoipa::path(get, path = "/api/webhooks/{uuid}", tag = "webhooks",
    params(("uuid" = String, Path, description = "Webhook id (`whk_…`)")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
        (status = 404, description = "No such webhook in the caller's organization", body = ErrorBody),
    ))]
async fn get_webhook(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
) -> ApiResult<axum::Json<WebhookView>> {
    require_admin(&caller)?;
    let webhook = load(&state, &caller, &uuid).await?;
    Ok(axum::Json(shown(&state, &webhook)?))
}

/// Changes a webhook (organization admins only): `url`, `events`,
/// `description`, `enabled`, `headers` (replaced whole) and `retry_config`
/// (merged field by field); omitted fields stay. The secret never changes.
/// Disabling stops every delivery not yet made.
#[utoipa::path(patch, path = "/api/webhooks/{uuid}", tag = "webhooks", request_body = UpdateWebhook,
    params(("uuid" = String, Path, description = "Webhook id (`whk_…`)")),
    responses(
        (status = 200, description = "The updated webhook", body = WebhookView),
        (status = 400, description = "Invalid input, naming the field", body = ErrorBody),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
        (status = 404, description = "No such webhook in the caller's organization", body = ErrorBody),
    ))]
async fn update_webhook(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    Json(body): Json<UpdateWebhook>,
) -> ApiResult<axum::Json<WebhookView>> {
    require_admin(&caller)?;
    let mut webhook = load(&state, &caller, &uuid).await?;
    if let Some(url) = body.url {
        webhook.url = check_url(Some(&url))?;
    }
    if let Some(events) = body.events {
        webhook.events = check_events(Some(&events))?;
    }
    if let Some(description) = body.description {
        webhook.description = check_description(description)?;
    }
    if let Some(enabled) = body.enabled {
        webhook.enabled = enabled;
    }
    webhook.retry_config = check_retry(webhook.retry_config, body.retry_config)?;
    let mut secrets = open(&state, &webhook)?;
    if let Some(headers) = body.headers {
        secrets.headers = check_headers(headers.unwrap_or_default())?;
        webhook.secrets = state.backends.vault.seal(&webhook.uuid, &secrets.to_map())?;
    }
    webhook.updated_at = domain::now();
    if !state.backends.store.update_webhook(&webhook).await? {
        return Err(not_found());
    }
    Ok(axum::Json(view(&webhook, secrets.headers.into_keys())))
}

/// Deletes a webhook with its delivery log (organization admins only);
/// deliveries not yet made are dropped.
#[utoipa::path(delete, path = "/api/webhooks/{uuid}", tag = "webhooks",
    params(("uuid" = String, Path, description = "Webhook id (`whk_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
        (status = 404, description = "No such webhook in the caller's organization", body = ErrorBody),
    ))]
async fn delete_webhook(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&caller)?;
    if !IdKind::Webhook.matches(&uuid) || !state.backends.store.delete_webhook(&caller.org_id, &uuid).await? {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The webhook's most recent delivery tries, newest first (organization
/// admins only): each with its `delivery_id`, `event_id` (the
/// `webhook-id`), `event_type`, `attempt`, `status_code`, `ok`, `error`,
/// `duration_ms` and `created_at`.
#[utoipa::path(get, path = "/api/webhooks/{uuid}/deliveries", tag = "webhooks",
    params(("uuid" = String, Path, description = "Webhook id (`whk_…`)"), DeliveriesQuery),
    responses(
        (status = 200, description = "The tries", body = DeliveryList),
        (status = 400, description = "`limit` out of range", body = ErrorBody),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
        (status = 404, description = "No such webhook in the caller's organization", body = ErrorBody),
    ))]
async fn list_deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
    Query(query): Query<DeliveriesQuery>,
) -> ApiResult<axum::Json<DeliveryList>> {
    require_admin(&caller)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::validation("limit", "limit must be between 1 and 100"));
    }
    load(&state, &caller, &uuid).await?;
    let attempts = state
        .backends
        .store
        .list_webhook_attempts(&caller.org_id, &uuid, limit)
        .await?;
    Ok(axum::Json(DeliveryList {
        data: attempts.into_iter().map(Into::into).collect(),
    }))
}

/// Sends a delivery again now (organization admins only), whatever became
/// of it: with the same event, so the same `webhook-id`, and then, if that
/// try fails, under the webhook's retry policy again. A disabled webhook
/// still receives nothing.
#[utoipa::path(post, path = "/api/webhooks/{uuid}/deliveries/{delivery_id}/redeliver", tag = "webhooks",
    params(
        ("uuid" = String, Path, description = "Webhook id (`whk_…`)"),
        ("delivery_id" = String, Path, description = "Delivery id (`dlv_…`)"),
    ),
    responses(
        (status = 202, description = "The delivery is pending again", body = RedeliveryView),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
        (status = 404, description = "No such webhook or delivery", body = ErrorBody),
    ))]
async fn redeliver(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((uuid, delivery_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&caller)?;
    load(&state, &caller, &uuid).await?;
    let well_formed = delivery_id
        .strip_prefix("dlv_")
        .is_some_and(|id| id.len() == 26 && ulid::Ulid::from_string(id).is_ok());
    if !well_formed
        || !state
            .backends
            .store
            .redeliver_webhook_delivery(&caller.org_id, &uuid, &delivery_id, domain::now())
            .await?
    {
        return Err(ApiError::not_found("Delivery not found"));
    }
    // A wake-up only: should it be lost, the scheduler enqueues the
    // delivery on its next sweep.
    let job = DeliverWebhookJob {
        delivery_id: delivery_id.clone(),
    }
    .to_job(&format!("r{}", ulid::Ulid::new()));
    if let Err(error) = state.backends.queue.enqueue(&job).await {
        tracing::warn!(%error, delivery_id, "redelivery not enqueued; the scheduler's sweep will");
    }
    let body = RedeliveryView {
        delivery_id,
        status: "pending".into(),
    };
    Ok((StatusCode::ACCEPTED, axum::Json(body)))
}
