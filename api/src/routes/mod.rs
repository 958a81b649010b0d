//! HTTP routes, one module per resource.

pub mod connectors;
pub mod executions;
pub mod health;
pub mod permissions;
pub mod projects;
pub mod steps;

use ferry_shared::domain::{Principal, ResourceKind, Role};

use crate::AppState;
use crate::error::ApiResult;

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
