//! Permissions API (`/api/permissions/resource/{type}/{uuid}`): share a
//! project or connector with another user as owner, editor or viewer.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use ferry_shared::Error;
use ferry_shared::domain::{Principal, ResourceKind, Role};
use ferry_shared::store::Grant;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::connectors::visible_connector;
use super::projects::visible_project;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json};
use crate::views::{ErrorBody, timestamp};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(grant_permission, list_permissions))
        .routes(routes!(revoke_permission))
}

/// Body of a grant.
#[derive(Debug, Deserialize, ToSchema)]
pub struct GrantRequest {
    #[schema(example = "user_02GHIJKL")]
    pub user_id: Option<String>,
    /// `owner`, `editor` or `viewer`.
    #[schema(example = "editor")]
    pub permission: Option<String>,
}

/// One grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    pub user_id: String,
    pub permission: String,
    pub granted_by: String,
    #[schema(format = DateTime)]
    pub granted_at: String,
}

impl From<Grant> for GrantView {
    fn from(grant: Grant) -> Self {
        GrantView {
            user_id: grant.user_id,
            permission: grant.role.as_str().to_owned(),
            granted_by: grant.granted_by,
            granted_at: timestamp(grant.granted_at),
        }
    }
}

/// The grants on a resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantList {
    pub data: Vec<GrantView>,
}

fn resource_kind(text: &str) -> ApiResult<ResourceKind> {
    match text {
        "project" => Ok(ResourceKind::Project),
        "connector" => Ok(ResourceKind::Connector),
        _ => Err(ApiError::validation("type", "type must be project or connector")),
    }
}

/// The caller's role on the resource; 404 when the caller cannot see it.
async fn role_on(state: &AppState, caller: &Principal, kind: ResourceKind, uuid: &str) -> ApiResult<Role> {
    Ok(match kind {
        ResourceKind::Project => visible_project(state, caller, uuid).await?.1,
        ResourceKind::Connector => visible_connector(state, caller, uuid).await?.1,
    })
}

fn require_share(role: Role) -> ApiResult<()> {
    if role.permissions().can_share {
        Ok(())
    } else {
        Err(Error::forbidden("Only owners can share this resource").into())
    }
}

/// Grants (or replaces) a user's permission on a project or connector.
/// Owners only; demoting the resource's last owner is 409, decided in the
/// write's transaction.
#[utoipa::path(post, path = "/api/permissions/resource/{type}/{uuid}", tag = "permissions", request_body = GrantRequest,
    params(("type" = String, Path, description = "`project` or `connector`"), ("uuid" = String, Path, description = "Resource id")),
    responses(
        (status = 201, description = "Granted", body = GrantView),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "The caller is not an owner", body = ErrorBody),
        (status = 404, description = "No such resource visible to the caller", body = ErrorBody),
        (status = 409, description = "That would demote the resource's last owner", body = ErrorBody),
    ))]
async fn grant_permission(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((kind, uuid)): Path<(String, String)>,
    Json(body): Json<GrantRequest>,
) -> ApiResult<impl IntoResponse> {
    let kind = resource_kind(&kind)?;
    let user_id = body
        .user_id
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty() && u.len() <= 255)
        .ok_or_else(|| ApiError::validation("user_id", "user_id is required"))?;
    let role =
        body.permission.as_deref().and_then(Role::parse).ok_or_else(|| {
            ApiError::validation("permission", "permission must be owner, editor or viewer")
        })?;
    require_share(role_on(&state, &caller, kind, &uuid).await?)?;
    let grant = Grant {
        resource: kind,
        resource_uuid: uuid,
        user_id,
        role,
        granted_by: caller.user_id,
        granted_at: ferry_shared::domain::now(),
    };
    state.backends.store.put_grant(&grant).await?;
    Ok((StatusCode::CREATED, axum::Json(GrantView::from(grant))))
}

/// Who has access to a project or connector.
#[utoipa::path(get, path = "/api/permissions/resource/{type}/{uuid}", tag = "permissions",
    params(("type" = String, Path, description = "`project` or `connector`"), ("uuid" = String, Path, description = "Resource id")),
    responses(
        (status = 200, description = "The grants", body = GrantList),
        (status = 404, description = "No such resource visible to the caller", body = ErrorBody),
    ))]
async fn list_permissions(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((kind, uuid)): Path<(String, String)>,
) -> ApiResult<axum::Json<GrantList>> {
    let kind = resource_kind(&kind)?;
    role_on(&state, &caller, kind, &uuid).await?;
    let grants = state.backends.store.list_grants(kind, &uuid).await?;
    Ok(axum::Json(GrantList {
        data: grants.into_iter().map(Into::into).collect(),
    }))
}

/// Revokes a user's permission. Owners only; the last owner cannot be
/// removed (409), decided in the delete's own transaction.
#[utoipa::path(delete, path = "/api/permissions/resource/{type}/{uuid}/{user_id}", tag = "permissions",
    params(("type" = String, Path, description = "`project` or `connector`"), ("uuid" = String, Path, description = "Resource id"), ("user_id" = String, Path, description = "User whose grant is removed")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "The caller is not an owner", body = ErrorBody),
        (status = 404, description = "No such resource or grant", body = ErrorBody),
        (status = 409, description = "That is the last owner", body = ErrorBody),
    ))]
async fn revoke_permission(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((kind, uuid, user_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let kind = resource_kind(&kind)?;
    require_share(role_on(&state, &caller, kind, &uuid).await?)?;
    // The store decides "the last owner" in the delete's own transaction.
    if !state.backends.store.delete_grant(kind, &uuid, &user_id).await? {
        return Err(ApiError::not_found("Permission not found"));
    }
    Ok(StatusCode::NO_CONTENT)
}
