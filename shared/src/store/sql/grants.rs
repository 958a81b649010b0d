//! Grant queries: [`grant_queries!`] expands them for one backend. Single
//! statements, no dialect fragments; the owner grant of a new resource is
//! written inside its creator's transaction.

/// The grant methods of `$store` (an inherent `impl`, which the `Store` impl
/// forwards to). Expanded in `mod.rs`, whose imports it uses.
macro_rules! grant_queries {
    ($store:ident, $db:ty) => {
        impl $store {
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
                .execute(&self.pool)
                .await
                .map_err(constraint_error)?;
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
                let deleted = sqlx::query(
                    "DELETE FROM grants WHERE resource_type = $1 AND resource_uuid = $2 AND user_id = $3",
                )
                .bind(resource.as_str())
                .bind(uuid)
                .bind(user_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(deleted > 0)
            }
        }
    };
}
pub(super) use grant_queries;
