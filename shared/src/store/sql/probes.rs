//! Probe queries: [`ProbeStore`] for [`SqlStore`].
//!
//! Times are bound as parameters, never computed in SQL, so both backends
//! compare the same values.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::SqlStore;
use super::db::Sql;
use crate::domain::{ConnectorStatus, TestRecord};
use crate::error::Result;
use crate::store::{ProbeStore, ProbeTarget, ProbeTransition};

/// Days a probe is kept (health reads the last one).
const PROBE_RETENTION_DAYS: i64 = 7;

#[derive(sqlx::FromRow)]
struct TargetRow {
    uuid: String,
    org_id: String,
}

#[async_trait]
impl ProbeStore for SqlStore {
    async fn connectors_to_probe(&self, after: Option<&str>, limit: i64) -> Result<Vec<ProbeTarget>> {
        let rows = Sql::new(
            "SELECT uuid, org_id FROM connectors WHERE status IN ($1, $2) AND uuid > $3 \
             ORDER BY uuid LIMIT $4",
        )
        .bind(ConnectorStatus::Active.as_str())
        .bind(ConnectorStatus::Error.as_str())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all::<TargetRow>(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| ProbeTarget {
                connector_uuid: row.uuid,
                org_id: row.org_id,
            })
            .collect())
    }

    async fn record_probe(&self, record: &TestRecord, failure_threshold: u32) -> Result<ProbeTransition> {
        let mut tx = self.pool.begin().await?;
        super::connectors::insert_test(&mut tx, record, "probe").await?;
        let transition = if record.success {
            // An OAuth connector whose grant the provider refused stays in
            // `error` until it is authorized again: its access token may
            // still pass a probe until it expires.
            let changed = Sql::new(
                "UPDATE connectors SET status = $2 WHERE uuid = $1 AND status = $3 \
                 AND NOT EXISTS (SELECT 1 FROM oauth_refresh_leases l WHERE l.connector_uuid = $1 \
                 AND l.last_error IS NOT NULL AND l.retry_at IS NULL)",
            )
            .bind(&record.connector_uuid)
            .bind(ConnectorStatus::Active.as_str())
            .bind(ConnectorStatus::Error.as_str())
            .execute(&mut tx)
            .await?;
            if changed > 0 {
                ProbeTransition::Recovered
            } else {
                ProbeTransition::Unchanged
            }
        } else {
            let threshold = i64::from(failure_threshold.max(1));
            // Of the latest `threshold` probes, how many failed: all of them
            // (and as many as the threshold) means consecutive failures.
            let failed: i64 = Sql::new(
                "SELECT COUNT(*) FROM (SELECT success FROM connector_tests \
                 WHERE connector_uuid = $1 AND source = 'probe' \
                 ORDER BY tested_at DESC, id DESC LIMIT $2) latest WHERE NOT latest.success",
            )
            .bind(&record.connector_uuid)
            .bind(threshold)
            .scalar_one::<i64>(&mut tx)
            .await?;
            if failed >= threshold {
                let changed = Sql::new("UPDATE connectors SET status = $2 WHERE uuid = $1 AND status = $3")
                    .bind(&record.connector_uuid)
                    .bind(ConnectorStatus::Error.as_str())
                    .bind(ConnectorStatus::Active.as_str())
                    .execute(&mut tx)
                    .await?;
                if changed > 0 {
                    super::webhooks::record_connection_failed(&mut tx, record).await?;
                    ProbeTransition::Failed
                } else {
                    ProbeTransition::Unchanged
                }
            } else {
                ProbeTransition::Unchanged
            }
        };
        // Keep the table bounded: a connector's probes older than the
        // retention go as it records a new one (health reads a day).
        let horizon = record.tested_at - chrono::Duration::days(PROBE_RETENTION_DAYS);
        Sql::new(
            "DELETE FROM connector_tests WHERE connector_uuid = $1 AND source = 'probe' AND tested_at < $2",
        )
        .bind(&record.connector_uuid)
        .bind(horizon)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(transition)
    }

    async fn step_runs_since(&self, connector_uuid: &str, since: DateTime<Utc>) -> Result<u64> {
        let dialect = self.pool.dialect();
        let count: i64 = Sql::new(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM execution_steps s \
             WHERE s.started_at IS NOT NULL AND s.started_at >= $2 AND {step_connector} = $1",
            step_connector = dialect.step_connector_uuid(),
        )))
        .bind(connector_uuid)
        .bind(since)
        .scalar_one::<i64>(&self.pool)
        .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
