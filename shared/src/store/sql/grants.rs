//! Grant queries: [`GrantStore`] for [`SqlStore`], and the owner grant of a
//! new resource, written inside its creator's transaction.
//!
//! A resource never loses its last owner: replacing or deleting a grant
//! reads the resource's owner grants locked (`FOR UPDATE` on PostgreSQL;
//! SQLite's `BEGIN IMMEDIATE` holds the write lock) and writes in the same
//! transaction, so two owners demoting each other at once cannot both
//! succeed ([`last_owner`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::db::{Pool, Sql, Tx};
use super::rows::{self, GrantRow, grant_columns};
use super::{SqlStore, constraint_error};
use crate::domain::{OrgRole, ResourceKind, Role};
use crate::error::{Error, Result};
use crate::store::{Grant, GrantStore};

/// The conflict of removing or demoting the only owner of a resource.
fn last_owner() -> Error {
    Error::conflict("Cannot remove or demote the last owner of this resource")
}

/// Refuses (conflict) when `user_id` holds the resource's only owner grant,
/// reading the owner grants locked.
async fn ensure_not_last_owner(tx: &mut Tx, resource: ResourceKind, uuid: &str, user_id: &str) -> Result<()> {
    let owners =
        Sql::new(tx.dialect().locked(
            "SELECT user_id FROM grants WHERE resource_type = $1 AND resource_uuid = $2 AND role = $3",
        ))
        .bind(resource.as_str())
        .bind(uuid)
        .bind(Role::Owner.as_str())
        .scalar_all::<String>(&mut *tx)
        .await?;
    if owners.len() == 1 && owners[0] == user_id {
        return Err(last_owner());
    }
    Ok(())
}

/// Runs `insert`, which creates the resource `uuid`, and grants its creator
/// `user_id` `owner` (at `at`), atomically.
pub(super) async fn insert_with_owner(
    pool: &Pool,
    insert: Sql<'_>,
    resource: ResourceKind,
    uuid: &str,
    user_id: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    insert.execute(&mut tx).await.map_err(constraint_error)?;
    Sql::new(
        "INSERT INTO grants (resource_type, resource_uuid, user_id, role, \
         granted_by, granted_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(resource.as_str())
    .bind(uuid)
    .bind(user_id)
    .bind(Role::Owner.as_str())
    .bind(user_id)
    .bind(at)
    .execute(&mut tx)
    .await
    .map_err(constraint_error)?;
    tx.commit().await?;
    Ok(())
}

/// Deletes the resource `uuid` of the organization (from `projects` or
/// `connectors`) and its grants, in a transaction the caller commits after
/// any further cleanup; None (and nothing changed) when it does not exist.
pub(super) async fn delete_with_grants(
    pool: &Pool,
    resource: ResourceKind,
    org_id: &str,
    uuid: &str,
) -> Result<Option<Tx>> {
    let table = match resource {
        ResourceKind::Project => "projects",
        ResourceKind::Connector => "connectors",
    };
    let mut tx = pool.begin().await?;
    let deleted = Sql::new(AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE org_id = $1 AND uuid = $2"
    )))
    .bind(org_id)
    .bind(uuid)
    .execute(&mut tx)
    .await?;
    if deleted == 0 {
        return Ok(None);
    }
    Sql::new("DELETE FROM grants WHERE resource_type = $1 AND resource_uuid = $2")
        .bind(resource.as_str())
        .bind(uuid)
        .execute(&mut tx)
        .await?;
    Ok(Some(tx))
}

#[async_trait]
impl GrantStore for SqlStore {
    async fn role_of(&self, resource: ResourceKind, uuid: &str, user_id: &str) -> Result<Option<Role>> {
        Sql::new("SELECT role FROM grants WHERE resource_type = $1 AND resource_uuid = $2 AND user_id = $3")
            .bind(resource.as_str())
            .bind(uuid)
            .bind(user_id)
            .scalar_optional::<String>(&self.pool)
            .await?
            .map(|role| rows::word("grants.role", &role))
            .transpose()
    }

    async fn put_grant(&self, grant: &Grant) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if grant.role != Role::Owner {
            ensure_not_last_owner(&mut tx, grant.resource, &grant.resource_uuid, &grant.user_id).await?;
        }
        Sql::new(
            "INSERT INTO grants (resource_type, resource_uuid, user_id, role, granted_by, \
             granted_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (resource_type, resource_uuid, user_id) DO UPDATE \
             SET role = excluded.role, granted_by = excluded.granted_by, \
             granted_at = excluded.granted_at",
        )
        .bind(grant.resource.as_str())
        .bind(&grant.resource_uuid)
        .bind(&grant.user_id)
        .bind(grant.role.as_str())
        .bind(&grant.granted_by)
        .bind(grant.granted_at)
        .execute(&mut tx)
        .await
        .map_err(constraint_error)?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_grants(&self, resource: ResourceKind, uuid: &str) -> Result<Vec<Grant>> {
        Sql::new(concat!(
            "SELECT ",
            grant_columns!(),
            " FROM grants WHERE resource_type = $1 AND resource_uuid = $2 ORDER BY granted_at, user_id"
        ))
        .bind(resource.as_str())
        .bind(uuid)
        .fetch_all_as::<GrantRow, _>(&self.pool)
        .await
    }

    async fn delete_grant(&self, resource: ResourceKind, uuid: &str, user_id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        ensure_not_last_owner(&mut tx, resource, uuid, user_id).await?;
        let deleted =
            Sql::new("DELETE FROM grants WHERE resource_type = $1 AND resource_uuid = $2 AND user_id = $3")
                .bind(resource.as_str())
                .bind(uuid)
                .bind(user_id)
                .execute(&mut tx)
                .await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// `owner` when the execution records an organization admin, else the
    /// executor's explicit grant.
    async fn executor_connector_role(
        &self,
        execution_id: &str,
        connector_uuid: &str,
    ) -> Result<Option<Role>> {
        let row = Sql::new(
            "SELECT e.created_by_role, g.role FROM executions e \
             JOIN connectors c ON c.uuid = $2 AND c.org_id = e.org_id \
             LEFT JOIN grants g ON g.resource_type = $3 AND g.resource_uuid = c.uuid \
             AND g.user_id = e.created_by \
             WHERE e.execution_id = $1",
        )
        .bind(execution_id)
        .bind(connector_uuid)
        .bind(ResourceKind::Connector.as_str())
        .fetch_optional::<(Option<String>, Option<String>)>(&self.pool)
        .await?;
        let Some((org_role, grant)) = row else {
            return Ok(None);
        };
        if org_role.as_deref() == Some("admin") {
            return Ok(Some(Role::Owner));
        }
        grant.map(|role| rows::word("grants.role", &role)).transpose()
    }

    async fn record_execution_role(&self, execution_id: &str, role: OrgRole) -> Result<bool> {
        let text = match role {
            OrgRole::Admin => "admin",
            OrgRole::Member => "member",
        };
        let updated = Sql::new("UPDATE executions SET created_by_role = $2 WHERE execution_id = $1")
            .bind(execution_id)
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(updated > 0)
    }
}
