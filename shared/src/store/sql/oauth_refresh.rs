//! [`OAuthRefreshStore`] for [`SqlStore`]: the `oauth_refresh_leases` rows.
//! The lease is one conditional upsert (`ON CONFLICT … DO UPDATE … WHERE`),
//! so of concurrent takers in any number of processes exactly one wins.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::SqlStore;
use super::db::Sql;
use crate::error::Result;
use crate::store::Claim;
use crate::store::oauth_refresh::{DueToken, OAuthRefreshStore, UntrackedToken};

#[derive(sqlx::FromRow)]
struct DueRow {
    org_id: String,
    uuid: String,
    token_expires_at: DateTime<Utc>,
    failures: i32,
}

#[derive(sqlx::FromRow)]
struct UntrackedRow {
    org_id: String,
    uuid: String,
}

#[async_trait]
impl OAuthRefreshStore for SqlStore {
    async fn untracked_oauth_tokens(&self, limit: i64) -> Result<Vec<UntrackedToken>> {
        let rows: Vec<UntrackedRow> = Sql::new(
            "SELECT c.org_id, c.uuid FROM connectors c \
             LEFT JOIN oauth_refresh_leases r ON r.connector_uuid = c.uuid \
             WHERE c.auth_type = 'oauth' AND c.status = 'active' \
             AND (r.connector_uuid IS NULL OR r.config_version IS NULL \
                  OR r.config_version <> c.config_version) \
             ORDER BY c.uuid LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| UntrackedToken {
                org_id: row.org_id,
                connector_uuid: row.uuid,
            })
            .collect())
    }

    async fn track_oauth_token(
        &self,
        connector_uuid: &str,
        config_version: i64,
        token_expires_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        Sql::new(
            "INSERT INTO oauth_refresh_leases (connector_uuid, config_version, token_expires_at) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (connector_uuid) DO UPDATE SET \
             failures = CASE WHEN oauth_refresh_leases.config_version = excluded.config_version \
                        THEN oauth_refresh_leases.failures ELSE 0 END, \
             retry_at = CASE WHEN oauth_refresh_leases.config_version = excluded.config_version \
                        THEN oauth_refresh_leases.retry_at ELSE NULL END, \
             last_error = CASE WHEN oauth_refresh_leases.config_version = excluded.config_version \
                        THEN oauth_refresh_leases.last_error ELSE NULL END, \
             config_version = excluded.config_version, \
             token_expires_at = excluded.token_expires_at",
        )
        .bind(connector_uuid)
        .bind(config_version)
        .bind(token_expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn oauth_tokens_due(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueToken>> {
        let rows: Vec<DueRow> = Sql::new(
            "SELECT c.org_id, c.uuid, r.token_expires_at, r.failures \
             FROM oauth_refresh_leases r JOIN connectors c ON c.uuid = r.connector_uuid \
             WHERE c.auth_type = 'oauth' AND c.status = 'active' \
             AND r.config_version = c.config_version \
             AND r.token_expires_at IS NOT NULL AND r.token_expires_at < $1 \
             AND (r.retry_at IS NULL OR r.retry_at <= $2) \
             ORDER BY r.token_expires_at, c.uuid LIMIT $3",
        )
        .bind(before)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| DueToken {
                org_id: row.org_id,
                connector_uuid: row.uuid,
                token_expires_at: row.token_expires_at,
                failures: row.failures,
            })
            .collect())
    }

    async fn acquire_refresh_lease(&self, claim: Claim<'_>) -> Result<bool> {
        let taken = Sql::new(
            "INSERT INTO oauth_refresh_leases (connector_uuid, lease_holder, lease_until) \
             VALUES ($1, $2, $4) \
             ON CONFLICT (connector_uuid) DO UPDATE SET \
             lease_holder = excluded.lease_holder, lease_until = excluded.lease_until \
             WHERE oauth_refresh_leases.lease_until IS NULL \
             OR oauth_refresh_leases.lease_until <= $3 \
             OR oauth_refresh_leases.lease_holder = excluded.lease_holder",
        )
        .bind(claim.connector_uuid)
        .bind(claim.holder)
        .bind(claim.now)
        .bind(claim.until)
        .execute(&self.pool)
        .await?;
        Ok(taken == 1)
    }

    async fn release_refresh_lease(&self, connector_uuid: &str, holder: &str) -> Result<()> {
        Sql::new(
            "UPDATE oauth_refresh_leases SET lease_holder = NULL, lease_until = NULL \
             WHERE connector_uuid = $1 AND lease_holder = $2",
        )
        .bind(connector_uuid)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_refresh_failure(
        &self,
        connector_uuid: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<i32> {
        let failures: Option<i32> = Sql::new(
            "UPDATE oauth_refresh_leases SET failures = failures + 1, retry_at = $2, last_error = $3 \
             WHERE connector_uuid = $1 RETURNING failures",
        )
        .bind(connector_uuid)
        .bind(retry_at)
        .bind(error)
        .scalar_optional(&self.pool)
        .await?;
        Ok(failures.unwrap_or(0))
    }

    async fn refresh_failure(&self, connector_uuid: &str) -> Result<Option<String>> {
        let error: Option<Option<String>> =
            Sql::new("SELECT last_error FROM oauth_refresh_leases WHERE connector_uuid = $1")
                .bind(connector_uuid)
                .scalar_optional(&self.pool)
                .await?;
        Ok(error.flatten())
    }
}
