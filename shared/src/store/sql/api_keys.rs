//! API key queries: [`ApiKeyStore`] for [`SqlStore`].
//!
//! Times are bound as parameters (from the caller), never computed in SQL,
//! so both backends compare the same values; on SQLite they are RFC 3339
//! text, which sorts in time order for the UTC, microsecond-truncated times
//! the store writes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::db::Sql;
use super::rows::word;
use super::{SqlStore, constraint_error};
use crate::domain::OrgRole;
use crate::error::{Error, Result};
use crate::store::{ApiKey, ApiKeyStore};

/// The columns of an [`ApiKeyRow`].
const COLUMNS: &str = "uuid, org_id, name, role, prefix, key_hash, created_by, created_at, \
                       last_used_at, expires_at, revoked_at";

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    uuid: String,
    org_id: String,
    name: String,
    role: String,
    prefix: String,
    key_hash: String,
    created_by: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = Error;

    fn try_from(row: ApiKeyRow) -> Result<Self> {
        Ok(ApiKey {
            role: word::<RoleWord>("api_keys.role", &row.role)?.0,
            uuid: row.uuid,
            org_id: row.org_id,
            name: row.name,
            prefix: row.prefix,
            key_hash: row.key_hash,
            created_by: row.created_by,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// An organization role as stored: `admin` or `member`.
struct RoleWord(OrgRole);

impl std::str::FromStr for RoleWord {
    type Err = ();

    fn from_str(text: &str) -> std::result::Result<Self, ()> {
        match text {
            "admin" => Ok(RoleWord(OrgRole::Admin)),
            "member" => Ok(RoleWord(OrgRole::Member)),
            _ => Err(()),
        }
    }
}

fn role_word(role: OrgRole) -> &'static str {
    match role {
        OrgRole::Admin => "admin",
        OrgRole::Member => "member",
    }
}

fn select(filter: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys {filter}"))
}

#[async_trait]
impl ApiKeyStore for SqlStore {
    async fn create_api_key(&self, key: &ApiKey) -> Result<()> {
        Sql::new(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(&key.uuid)
        .bind(&key.org_id)
        .bind(&key.name)
        .bind(role_word(key.role))
        .bind(&key.prefix)
        .bind(&key.key_hash)
        .bind(&key.created_by)
        .bind(key.created_at)
        .bind(key.last_used_at)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(constraint_error)?;
        Ok(())
    }

    async fn list_api_keys(&self, org_id: &str) -> Result<Vec<ApiKey>> {
        Sql::new(select("WHERE org_id = $1 ORDER BY created_at, uuid"))
            .bind(org_id)
            .fetch_all_as::<ApiKeyRow, _>(&self.pool)
            .await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        Sql::new(select("WHERE key_hash = $1"))
            .bind(key_hash)
            .fetch_optional_as::<ApiKeyRow, _>(&self.pool)
            .await
    }

    async fn revoke_api_key(&self, org_id: &str, uuid: &str, at: DateTime<Utc>) -> Result<bool> {
        let updated = Sql::new(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE org_id = $1 AND uuid = $2",
        )
        .bind(org_id)
        .bind(uuid)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(updated > 0)
    }

    async fn record_api_key_use(
        &self,
        uuid: &str,
        at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool> {
        let updated = Sql::new(
            "UPDATE api_keys SET last_used_at = $2 \
             WHERE uuid = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(uuid)
        .bind(at)
        .bind(stale_before)
        .execute(&self.pool)
        .await?;
        Ok(updated > 0)
    }
}
