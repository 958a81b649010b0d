//! API keys (`/api/api-keys`): service accounts of an organization, managed
//! by its admins. See [`crate::auth::api_keys`] for how a key
//! authenticates.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, SubsecRound, Utc};
use ferry_shared::Error;
use ferry_shared::domain::{self, OrgRole, Principal};
use ferry_shared::ids::IdKind;
use ferry_shared::store::ApiKey;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::api_keys;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json};
use crate::views::{ErrorBody, timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
}

/// Body of `POST /api/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateApiKey {
    /// Required, 1–255 characters.
    #[schema(example = "nightly export")]
    pub name: Option<String>,
    /// `admin` or `member`: the organization role the key acts with.
    #[schema(example = "member")]
    pub role: Option<String>,
    /// RFC 3339; must be in the future. Absent or `null`: the key never
    /// expires.
    #[schema(format = DateTime, example = "2027-01-01T00:00:00Z")]
    pub expires_at: Option<String>,
}

/// What every view of a key shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyFields {
    #[schema(example = "key_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub uuid: String,
    pub name: String,
    /// `admin` or `member`.
    #[schema(example = "member")]
    pub role: String,
    /// The key's first characters, as lists show them.
    #[schema(example = "fk_8hQm2LxZ")]
    pub prefix: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

impl From<&ApiKey> for ApiKeyFields {
    fn from(key: &ApiKey) -> Self {
        ApiKeyFields {
            uuid: key.uuid.clone(),
            name: key.name.clone(),
            role: role_word(key.role).to_owned(),
            prefix: key.prefix.clone(),
            created_at: timestamp(key.created_at),
            expires_at: key.expires_at.map(timestamp),
        }
    }
}

/// A new key, with its text: the only time `key` is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKeyView {
    #[serde(flatten)]
    pub fields: ApiKeyFields,
    /// The key, for `Authorization: Bearer fk_…`. Shown once: only its hash
    /// is stored.
    #[schema(example = "fk_8hQm2LxZ0123456789abcdefghijABCDEFGHIJ")]
    pub key: String,
}

/// A key as listed (never with its text).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    #[serde(flatten)]
    pub fields: ApiKeyFields,
    /// Who created the key.
    #[schema(example = "user_01ABCDEF")]
    pub created_by: String,
    /// When a request last authenticated with the key, to within a minute
    /// (it is written only when the stored value is more than a minute
    /// old); `null` when never used.
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        ApiKeyView {
            fields: ApiKeyFields::from(&key),
            created_by: key.created_by,
            last_used_at: key.last_used_at.map(timestamp),
            revoked_at: key.revoked_at.map(timestamp),
        }
    }
}

/// The organization's keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeyView>,
}

fn role_word(role: OrgRole) -> &'static str {
    match role {
        OrgRole::Admin => "admin",
        OrgRole::Member => "member",
    }
}

/// 403 unless the caller is an organization admin.
fn require_admin(caller: &Principal) -> ApiResult<()> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(Error::forbidden("Only organization admins can manage API keys").into())
    }
}

fn check_role(role: Option<&str>) -> ApiResult<OrgRole> {
    match role {
        Some("admin") => Ok(OrgRole::Admin),
        Some("member") => Ok(OrgRole::Member),
        _ => Err(ApiError::validation("role", "role must be admin or member")),
    }
}

fn check_expires_at(text: Option<&str>, now: DateTime<Utc>) -> ApiResult<Option<DateTime<Utc>>> {
    let Some(text) = text else {
        return Ok(None);
    };
    let at = DateTime::parse_from_rfc3339(text.trim())
        .map_err(|_| ApiError::validation("expires_at", "expires_at must be an RFC 3339 timestamp"))?
        .with_timezone(&Utc)
        .trunc_subsecs(6);
    if at <= now {
        return Err(ApiError::validation(
            "expires_at",
            "expires_at must be in the future",
        ));
    }
    Ok(Some(at))
}

/// Creates an API key (organization admins only). The answer is the only
/// time the key's text is shown; Ferry keeps only its SHA-256.
///
/// The key is sent as `Authorization: Bearer fk_…` and acts as the
/// service-account user `svc_<uuid>` of the caller's organization with the
/// key's `role`. Each request with a key reads the key from the store, so
/// a revoked or expired key is refused (401) at once on every API replica.
/// The request rate limit counts each key on its own.
#[utoipa::path(post, path = "/api/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; `key` is shown this once", body = CreatedApiKeyView),
        (status = 400, description = "Invalid input (`name`, `role`, `expires_at`)", body = ErrorBody),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
    ))]
async fn create_api_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Json(body): Json<CreateApiKey>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&caller)?;
    let name = super::check_name("name", "API key name", body.name.as_deref())?;
    let role = check_role(body.role.as_deref())?;
    let now = domain::now();
    let expires_at = check_expires_at(body.expires_at.as_deref(), now)?;
    let minted = api_keys::mint();
    let key = ApiKey {
        uuid: IdKind::ApiKey.generate(),
        org_id: caller.org_id,
        name,
        role,
        prefix: minted.prefix,
        key_hash: minted.hash,
        created_by: caller.user_id,
        created_at: now,
        last_used_at: None,
        expires_at,
        revoked_at: None,
    };
    state.backends.store.create_api_key(&key).await?;
    let view = CreatedApiKeyView {
        fields: ApiKeyFields::from(&key),
        key: minted.key,
    };
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// The organization's API keys, revoked and expired ones included, oldest
/// first (organization admins only). The key text is never listed.
///
/// `last_used_at` is recorded without a store write on every request: a
/// request writes it only when the stored value is unset or more than a
/// minute old (one conditional update shared by every replica), so it is
/// exact to within a minute.
#[utoipa::path(get, path = "/api/api-keys", tag = "api-keys",
    responses(
        (status = 200, description = "The keys", body = ApiKeyList),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
    ))]
async fn list_api_keys(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> ApiResult<axum::Json<ApiKeyList>> {
    require_admin(&caller)?;
    let keys = state.backends.store.list_api_keys(&caller.org_id).await?;
    Ok(axum::Json(ApiKeyList {
        data: keys.into_iter().map(Into::into).collect(),
    }))
}

/// Revokes an API key (organization admins only): from this answer on,
/// every API replica refuses it with 401, since each request reads the key
/// from the store. Revoking a revoked key keeps its first `revoked_at`. A
/// key of another organization, or none, is 404.
#[utoipa::path(delete, path = "/api/api-keys/{uuid}", tag = "api-keys",
    params(("uuid" = String, Path, description = "API key id (`key_…`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "The caller is not an organization admin", body = ErrorBody),
        (status = 404, description = "No such key in the caller's organization", body = ErrorBody),
    ))]
async fn revoke_api_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(uuid): Path<String>,
) -> ApiResult<StatusCode> {
    require_admin(&caller)?;
    let not_found = || ApiError::not_found("API key not found");
    if !IdKind::ApiKey.matches(&uuid) {
        return Err(not_found());
    }
    if !state
        .backends
        .store
        .revoke_api_key(&caller.org_id, &uuid, domain::now())
        .await?
    {
        return Err(not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}
