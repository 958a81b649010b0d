//! Who is calling, and what they may do with a resource.

use super::word::word_enum;
use serde::{Deserialize, Serialize};

/// The caller, as established by a verified JWT (or later an API key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub org_id: String,
    pub org_role: OrgRole,
    pub email: Option<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.org_role == OrgRole::Admin
    }
}

/// A caller's role in its organization (`org_role` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrgRole {
    Admin,
    #[default]
    Member,
}

word_enum! {
    /// Kinds of resource that carry per-user grants.
    pub enum ResourceKind in "lowercase" {
        Project,
        Connector,
    }
}

word_enum! {
    /// A user's relation to one resource. Ordered: `Viewer < Editor < Owner`.
    #[derive(PartialOrd, Ord)]
    pub enum Role in "lowercase" {
        Viewer,
        Editor,
        Owner,
    }
}

impl Role {
    /// The caller's effective role: organization admins act as owner on
    /// everything in their organization; otherwise the explicit grant, if any.
    pub fn effective(principal: &Principal, grant: Option<Role>) -> Option<Role> {
        if principal.is_admin() {
            Some(Role::Owner)
        } else {
            grant
        }
    }

    pub fn can_edit(self) -> bool {
        self >= Role::Editor
    }

    pub fn can_delete(self) -> bool {
        self == Role::Owner
    }

    pub fn permissions(self) -> Permissions {
        Permissions {
            can_edit: self.can_edit(),
            can_delete: self.can_delete(),
            can_share: self == Role::Owner,
            role: self,
        }
    }
}

/// The seeds' `permissions` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub can_edit: bool,
    pub can_delete: bool,
    pub can_share: bool,
    pub role: Role,
}
