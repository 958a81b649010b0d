//! Connector queries: [`ConnectorStore`] for [`SqlStore`], and [`list_sql`],
//! which builds the one dynamic statement (the filtered list).
//!
//! Connector writes are single statements (or a transaction of a few) with
//! no read-modify-write in the store: `update_connector` and
//! `replace_secrets` are compare-and-swaps in their `WHERE` clause, so
//! concurrent writers never overwrite each other silently. `replace_secrets`
//! (key rotation) leaves `config_version` alone, so `update_connector` writes
//! the sealed secrets only when it moves the version: an update that leaves
//! the secrets alone cannot put back a ciphertext a rotation replaced.

use std::fmt::Write as _;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::db::{Sql, Tx};
use super::rows::{ConnectorRoleRow, ConnectorRow, TestRow, UsageRow, connector_columns, test_columns};
use super::{SqlStore, constraint_error, grants};
use crate::domain::{
    Connector, ConnectorListQuery, ConnectorUsage, ResourceKind, Role, Sealed, TestRecord, TestStatus,
};
use crate::error::Result;
use crate::store::ConnectorStore;

/// The list query for one request and the text values it binds as `$1…$n`.
///
/// Only fixed fragments of this module enter the SQL text; every value the
/// caller supplies is a bind parameter.
pub(super) struct ListSql {
    pub select: String,
    pub binds: Vec<String>,
}

/// Builds the list query: the caller's visible connectors of one
/// organization with the caller's role, filtered, oldest first then by uuid.
pub(super) fn list_sql(query: &ConnectorListQuery) -> ListSql {
    let mut binds = vec![query.org_id.clone()];
    // Admins see the whole organization as owner; members see what they
    // hold a connector grant on, with that grant's role.
    let (role, from) = if query.is_admin {
        ("'owner'", "connectors c")
    } else {
        binds.push(query.user_id.clone());
        (
            "g.role",
            "connectors c JOIN grants g ON g.resource_type = 'connector' \
             AND g.resource_uuid = c.uuid AND g.user_id = $2",
        )
    };

    let mut filter = String::from("c.org_id = $1");
    if let Some(connector_type) = &query.connector_type {
        binds.push(connector_type.clone());
        let _ = write!(filter, " AND c.connector_type = ${}", binds.len());
    }
    if let Some(status) = query.status {
        binds.push(status.as_str().to_owned());
        let _ = write!(filter, " AND c.status = ${}", binds.len());
    }

    let select = format!(
        "SELECT {columns}, {role} AS role FROM {from} WHERE {filter} \
         ORDER BY c.created_at, c.uuid",
        columns = super::rows::connector_columns!(),
    );
    ListSql { select, binds }
}

/// Binds, as the next thirteen values, what `update_connector` may change:
/// display name, config, the sealed secrets (key id, nonce, ciphertext),
/// config version, status, the last test (time, status), the disable fields
/// (time, by, reason) and `updated_at`.
fn bind_mutable<'a>(sql: Sql<'a>, connector: &'a Connector) -> Sql<'a> {
    sql.bind(&connector.display_name)
        .bind(Json(&connector.config))
        .bind(&connector.secrets.key_id)
        .bind(&connector.secrets.nonce)
        .bind(&connector.secrets.ciphertext)
        .bind(connector.config_version)
        .bind(connector.status.as_str())
        .bind(connector.last_tested_at)
        .bind(connector.last_test_status.map(TestStatus::as_str))
        .bind(connector.disabled_at)
        .bind(&connector.disabled_by)
        .bind(&connector.disabled_reason)
        .bind(connector.updated_at)
}

#[async_trait]
impl ConnectorStore for SqlStore {
    async fn create_connector(&self, connector: &Connector) -> Result<()> {
        let insert = Sql::new(
            "INSERT INTO connectors (uuid, org_id, connector_type, display_name, config, \
             secrets_key_id, secrets_nonce, secrets_ciphertext, config_version, status, \
             last_tested_at, last_test_status, disabled_at, disabled_by, disabled_reason, \
             updated_at, auth_type, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19)",
        )
        .bind(&connector.uuid)
        .bind(&connector.org_id)
        .bind(&connector.connector_type);
        let insert = bind_mutable(insert, connector)
            .bind(&connector.auth_type)
            .bind(&connector.created_by)
            .bind(connector.created_at);
        grants::insert_with_owner(
            &self.pool,
            insert,
            ResourceKind::Connector,
            &connector.uuid,
            &connector.created_by,
            connector.created_at,
        )
        .await
    }

    async fn get_connector(&self, org_id: &str, uuid: &str) -> Result<Option<Connector>> {
        Sql::new(concat!(
            "SELECT ",
            connector_columns!(),
            " FROM connectors c WHERE c.org_id = $1 AND c.uuid = $2"
        ))
        .bind(org_id)
        .bind(uuid)
        .fetch_optional_as::<ConnectorRow, _>(&self.pool)
        .await
    }

    async fn list_connectors(&self, query: &ConnectorListQuery) -> Result<Vec<(Connector, Role)>> {
        let sql = list_sql(query);
        let mut select = Sql::new(AssertSqlSafe(sql.select));
        for value in &sql.binds {
            select = select.bind(value);
        }
        select.fetch_all_as::<ConnectorRoleRow, _>(&self.pool).await
    }

    async fn update_connector(&self, connector: &Connector, expected_version: i64) -> Result<bool> {
        // The sealed secrets are written only with a configuration
        // change (the version moves): an update that leaves them alone
        // keeps the stored ciphertext, which a key rotation may have
        // re-sealed since the caller read the row.
        let update = Sql::new(
            "UPDATE connectors SET display_name = $4, config = $5, \
             secrets_key_id = CASE WHEN $9 = $3 THEN secrets_key_id ELSE $6 END, \
             secrets_nonce = CASE WHEN $9 = $3 THEN secrets_nonce ELSE $7 END, \
             secrets_ciphertext = CASE WHEN $9 = $3 THEN secrets_ciphertext ELSE $8 END, \
             config_version = $9, status = $10, last_tested_at = $11, last_test_status = $12, \
             disabled_at = $13, disabled_by = $14, disabled_reason = $15, \
             updated_at = $16 \
             WHERE uuid = $1 AND org_id = $2 AND config_version = $3",
        )
        .bind(&connector.uuid)
        .bind(&connector.org_id)
        .bind(expected_version);
        let updated = bind_mutable(update, connector)
            .execute(&self.pool)
            .await
            .map_err(constraint_error)?;
        Ok(updated == 1)
    }

    async fn delete_connector(&self, org_id: &str, uuid: &str) -> Result<bool> {
        let Some(mut tx) =
            grants::delete_with_grants(&self.pool, ResourceKind::Connector, org_id, uuid).await?
        else {
            return Ok(false);
        };
        Sql::new("DELETE FROM connector_tests WHERE connector_uuid = $1")
            .bind(uuid)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn connector_usage(&self, org_id: &str, uuid: &str) -> Result<Vec<ConnectorUsage>> {
        let dialect = self.pool.dialect();
        let rows = Sql::new(AssertSqlSafe(format!(
            "SELECT p.uuid AS project_uuid, p.name AS project_name, COUNT(*) AS step_count \
             FROM projects p JOIN steps s ON s.project_uuid = p.uuid \
             WHERE p.org_id = $1 AND {step_connector} = $2 \
             GROUP BY p.uuid, p.name ORDER BY p.name {collation}, p.uuid",
            step_connector = dialect.step_connector_uuid(),
            collation = dialect.name_collation(),
        )))
        .bind(org_id)
        .bind(uuid)
        .fetch_all::<UsageRow>(&self.pool)
        .await?;
        Ok(rows.into_iter().map(ConnectorUsage::from).collect())
    }

    async fn record_test(&self, record: &TestRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_test(&mut tx, record, "test").await?;
        let status = if record.success {
            TestStatus::Success
        } else {
            TestStatus::Failed
        };
        // Not a configuration change: config_version and updated_at stay.
        Sql::new("UPDATE connectors SET last_tested_at = $2, last_test_status = $3 WHERE uuid = $1")
            .bind(&record.connector_uuid)
            .bind(record.tested_at)
            .bind(status.as_str())
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn test_history(&self, uuid: &str, since: DateTime<Utc>) -> Result<Vec<TestRecord>> {
        let rows = Sql::new(concat!(
            "SELECT ",
            test_columns!(),
            " FROM connector_tests WHERE connector_uuid = $1 AND tested_at >= $2 \
             ORDER BY tested_at, id"
        ))
        .bind(uuid)
        .bind(since)
        .fetch_all::<TestRow>(&self.pool)
        .await?;
        Ok(rows.into_iter().map(TestRecord::from).collect())
    }

    async fn connectors_sealed_with_other_key(&self, key_id: &str, limit: i64) -> Result<Vec<Connector>> {
        Sql::new(concat!(
            "SELECT ",
            connector_columns!(),
            " FROM connectors c WHERE c.secrets_key_id <> $1 ORDER BY c.uuid LIMIT $2"
        ))
        .bind(key_id)
        .bind(limit)
        .fetch_all_as::<ConnectorRow, _>(&self.pool)
        .await
    }

    async fn count_connectors_sealed_with_other_key(&self, key_id: &str) -> Result<u64> {
        let count: i64 = Sql::new("SELECT COUNT(*) FROM connectors WHERE secrets_key_id <> $1")
            .bind(key_id)
            .scalar_one::<i64>(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn replace_secrets(&self, uuid: &str, old: &Sealed, new: &Sealed) -> Result<bool> {
        // Re-sealing does not change the secrets themselves, so
        // config_version (which keys the pools) and updated_at stay.
        let replaced = Sql::new(
            "UPDATE connectors SET secrets_key_id = $5, secrets_nonce = $6, \
             secrets_ciphertext = $7 \
             WHERE uuid = $1 AND secrets_key_id = $2 AND secrets_nonce = $3 \
             AND secrets_ciphertext = $4",
        )
        .bind(uuid)
        .bind(&old.key_id)
        .bind(&old.nonce)
        .bind(&old.ciphertext)
        .bind(&new.key_id)
        .bind(&new.nonce)
        .bind(&new.ciphertext)
        .execute(&self.pool)
        .await?;
        Ok(replaced == 1)
    }
}

/// Adds `record` to its connector's test history, as a user's `test` or a
/// scheduler's `probe`.
pub(super) async fn insert_test(tx: &mut Tx, record: &TestRecord, source: &'static str) -> Result<()> {
    Sql::new(
        "INSERT INTO connector_tests (connector_uuid, tested_at, success, latency_ms, \
         error_type, error_message, source) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&record.connector_uuid)
    .bind(record.tested_at)
    .bind(record.success)
    .bind(record.latency_ms)
    .bind(&record.error_type)
    .bind(&record.error_message)
    .bind(source)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::list_sql;
    use crate::domain::{ConnectorListQuery, ConnectorStatus};

    fn query(is_admin: bool) -> ConnectorListQuery {
        ConnectorListQuery {
            org_id: "org_a".to_owned(),
            user_id: "user_a".to_owned(),
            is_admin,
            connector_type: None,
            status: None,
        }
    }

    #[test]
    fn list_sql_binds_every_caller_value_and_numbers_placeholders_in_order() {
        let member = list_sql(&ConnectorListQuery {
            connector_type: Some("postgres'; --".to_owned()),
            status: Some(ConnectorStatus::Error),
            ..query(false)
        });
        assert_eq!(member.binds, ["org_a", "user_a", "postgres'; --", "error"]);
        assert!(member.select.contains("g.user_id = $2"));
        assert!(member.select.contains("c.connector_type = $3 AND c.status = $4"));
        assert!(!member.select.contains("postgres'"));

        let admin = list_sql(&ConnectorListQuery {
            status: Some(ConnectorStatus::Active),
            ..query(true)
        });
        assert_eq!(admin.binds, ["org_a", "active"]);
        assert!(admin.select.contains("c.status = $2"));
        assert!(!admin.select.contains("grants"));
    }
}
