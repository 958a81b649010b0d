//! HTTP routes, one module per resource.

pub mod connectors;
pub mod executions;
pub mod health;
pub mod permissions;
pub mod projects;
pub mod steps;

use ferry_shared::domain::{Principal, ResourceKind, Role};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

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
        state.store.role_of(kind, uuid, &caller.user_id).await?
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
