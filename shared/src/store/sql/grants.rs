//! Grant queries: [`grant_queries!`] expands them for one backend. The owner
//! grant of a new resource is written inside its creator's transaction.
//!
//! A resource never loses its last owner: replacing or deleting a grant
//! reads the resource's owner grants locked (`FOR UPDATE` on PostgreSQL;
//! SQLite's `BEGIN IMMEDIATE` holds the write lock) and writes in the same
//! transaction, so two owners demoting each other at once cannot both
//! succeed ([`last_owner`]).

/// The conflict of removing or demoting the only owner of a resource.
pub(super) fn last_owner() -> crate::Error {
    crate::Error::conflict("Cannot remove or demote the last owner of this resource")
}

/// The grant methods of `$store` (an inherent `impl`, which the `Store` impl
/// forwards to). Expanded in `mod.rs`, whose imports it uses.
macro_rules! grant_queries {
    ($store:ident, $db:ty, begin = $begin:literal, lock = $lock:literal) => {
        impl $store {
            /// Refuses (conflict) when `user_id` holds the resource's only
            /// owner grant, reading the owner grants locked.
            async fn ensure_not_last_owner(
                tx: &mut sqlx::Transaction<'static, $db>,
                resource: ResourceKind,
                uuid: &str,
                user_id: &str,
            ) -> Result<()> {
                let owners = sqlx::query_scalar::<_, String>(concat!(
                    "SELECT user_id FROM grants \
                     WHERE resource_type = $1 AND resource_uuid = $2 AND role = $3",
                    $lock
                ))
                .bind(resource.as_str())
                .bind(uuid)
                .bind(Role::Owner.as_str())
                .fetch_all(&mut **tx)
                .await?;
                if owners.len() == 1 && owners[0] == user_id {
                    return Err(grants::last_owner());
                }
                Ok(())
            }

            /// The effective role on a connector of the user who executed
            /// `execution_id`, as the worker checks it before a step runs:
            /// `owner` when the execution records an organization admin,
            /// else their explicit grant. None when the execution or the
            /// connector (in the execution's organization) does not exist,
            /// or the user holds no grant.
            async fn executor_connector_role_row(
                &self,
                execution_id: &str,
                connector_uuid: &str,
            ) -> Result<Option<Role>> {
                let row = sqlx::query_as::<_, (Option<String>, Option<String>)>(
                    "SELECT e.created_by_role, g.role FROM executions e \
                     JOIN connectors c ON c.uuid = $2 AND c.org_id = e.org_id \
                     LEFT JOIN grants g ON g.resource_type = $3 AND g.resource_uuid = c.uuid \
                     AND g.user_id = e.created_by \
                     WHERE e.execution_id = $1",
                )
                .bind(execution_id)
                .bind(connector_uuid)
                .bind(ResourceKind::Connector.as_str())
                .fetch_optional(&self.pool)
                .await?;
                let Some((org_role, grant)) = row else {
                    return Ok(None);
                };
                if org_role.as_deref() == Some("admin") {
                    return Ok(Some(Role::Owner));
                }
                grant.map(|role| rows::parse_role(&role)).transpose()
            }

            async fn record_execution_role_row(&self, execution_id: &str, role: OrgRole) -> Result<bool> {
                let text = match role {
                    OrgRole::Admin => "admin",
                    OrgRole::Member => "member",
                };
                let updated =
                    sqlx::query("UPDATE executions SET created_by_role = $2 WHERE execution_id = $1")
                        .bind(execution_id)
                        .bind(text)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                Ok(updated > 0)
            }

            /// Grants `owner` on a resource being created, in its transaction.
            async fn insert_owner_grant(
                tx: &mut sqlx::Transaction<'_, $db>,
                resource: ResourceKind,
                uuid: &str,
                user_id: &str,
                at: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO grants (resource_type, resource_uuid, user_id, role, \
                     granted_by, granted_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(resource.as_str())
                .bind(uuid)
                .bind(user_id)
                .bind(Role::Owner.as_str())
                .bind(user_id)
                .bind(at)
                .execute(&mut **tx)
                .await
                .map_err(constraint_error)?;
                Ok(())
            }

            async fn role_of_row(
                &self,
                resource: ResourceKind,
                uuid: &str,
                user_id: &str,
            ) -> Result<Option<Role>> {
                sqlx::query_scalar::<_, String>(
                    "SELECT role FROM grants \
                     WHERE resource_type = $1 AND resource_uuid = $2 AND user_id = $3",
                )
                .bind(resource.as_str())
                .bind(uuid)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|role| rows::parse_role(&role))
                .transpose()
            }

            async fn put_grant_row(&self, grant: &Grant) -> Result<()> {
                let mut tx = self.pool.begin_with($begin).await?;
                if grant.role != Role::Owner {
                    Self::ensure_not_last_owner(
                        &mut tx,
                        grant.resource,
                        &grant.resource_uuid,
                        &grant.user_id,
                    )
                    .await?;
                }
                sqlx::query(
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
                .execute(&mut *tx)
                .await
                .map_err(constraint_error)?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_grant_rows(&self, resource: ResourceKind, uuid: &str) -> Result<Vec<Grant>> {
                let rows = sqlx::query_as::<_, GrantRow>(concat!(
                    "SELECT ",
                    grant_columns!(),
                    " FROM grants WHERE resource_type = $1 AND resource_uuid = $2 \
                     ORDER BY granted_at, user_id"
                ))
                .bind(resource.as_str())
                .bind(uuid)
                .fetch_all(&self.pool)
                .await?;
                rows::convert_all(rows)
            }

            async fn delete_grant_row(
                &self,
                resource: ResourceKind,
                uuid: &str,
                user_id: &str,
            ) -> Result<bool> {
                let mut tx = self.pool.begin_with($begin).await?;
                Self::ensure_not_last_owner(&mut tx, resource, uuid, user_id).await?;
                let deleted = sqlx::query(
                    "DELETE FROM grants WHERE resource_type = $1 AND resource_uuid = $2 AND user_id = $3",
                )
                .bind(resource.as_str())
                .bind(uuid)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(deleted > 0)
            }
        }
    };
}
pub(super) use grant_queries;
