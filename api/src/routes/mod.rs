//! HTTP routes, one module per resource.

pub mod api_keys;
pub mod connectors;
pub mod executions;
pub mod health;
pub mod oauth;
pub mod permissions;
pub mod projects;
pub mod steps;
pub mod webhooks;

use std::future::Future;

use ferry_shared::Error;
use ferry_shared::domain::{Principal, ResourceKind, Role};
use ferry_shared::ids::IdKind;

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Loads a project or connector the caller may see, with the caller's role.
/// `load` reads it from the caller's organization; it runs only for a
/// well-formed id. Anything the caller may not see (another organization's,
/// no grant, a malformed id) is 404 "Project not found" or "Connector not
/// found", exactly as for one that does not exist.
pub(crate) async fn visible<T>(
    state: &AppState,
    caller: &Principal,
    kind: ResourceKind,
    uuid: &str,
    load: impl Future<Output = ferry_shared::Result<Option<T>>>,
) -> ApiResult<(T, Role)> {
    let (id_kind, noun) = match kind {
        ResourceKind::Project => (IdKind::Project, "Project"),
        ResourceKind::Connector => (IdKind::Connector, "Connector"),
    };
    let not_found = || ApiError::not_found(format!("{noun} not found"));
    if !id_kind.matches(uuid) {
        return Err(not_found());
    }
    let resource = load.await?.ok_or_else(not_found)?;
    let role = caller_role(state, caller, kind, uuid)
        .await?
        .ok_or_else(not_found)?;
    Ok((resource, role))
}

/// 403 "Insufficient permissions to `action`" unless `allowed` (a check of
/// the caller's role, such as [`Role::can_edit`]).
pub(crate) fn permit(allowed: bool, action: &str) -> ApiResult<()> {
    if allowed {
        Ok(())
    } else {
        Err(Error::forbidden(format!("Insufficient permissions to {action}")).into())
    }
}

/// The caller's role on a resource of its organization: organization admins
/// act as owner, everyone else needs a grant. `None` means the caller may
/// not see it (callers answer 404).
pub(crate) async fn caller_role(
    state: &AppState,
    caller: &Principal,
    kind: ResourceKind,
    uuid: &str,
) -> ApiResult<Option<Role>> {
    let grant = if caller.is_admin() {
        None
    } else {
        state.backends.store.role_of(kind, uuid, &caller.user_id).await?
    };
    Ok(Role::effective(caller, grant))
}

/// Longest name of a project, step or connector, in characters.
pub(crate) const MAX_NAME: usize = 255;

/// A required name: trimmed, not empty, at most [`MAX_NAME`] characters.
/// Errors name `field` and call the value `what` ("Project name is
/// required").
pub(crate) fn check_name(field: &str, what: &str, name: Option<&str>) -> ApiResult<String> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::validation(field, format!("{what} is required")));
    }
    if name.chars().count() > MAX_NAME {
        return Err(ApiError::validation(
            field,
            format!("{what} is at most {MAX_NAME} characters"),
        ));
    }
    Ok(name.to_owned())
}
