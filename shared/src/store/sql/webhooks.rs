//! Webhook queries: [`WebhookStore`] for [`SqlStore`], and the outbox
//! writes the other aggregates make inside their own transactions (an
//! execution's end, a probe that moves a connector to `error`).
//!
//! Times are bound as parameters, never computed in SQL, so both backends
//! compare the same values. Event bodies are stored as the exact text that
//! is signed and sent.

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::db::{Arg, Sql, Tx};
use super::rows::{self, ExecutionStepRow, execution_columns, step_run_columns, word};
use super::{SqlStore, constraint_error};
use crate::domain::webhook::{
    DeliveryAttempt, EventType, RetryConfig, Webhook, WebhookEvent, execution_data,
};
use crate::domain::{ErrorKind, ExecutionStatus, Sealed, StepRunStatus, TestRecord};
use crate::error::{Error, Result};
use crate::store::webhooks::{AttemptRecord, ClaimedDelivery, WebhookStore};

/// The columns of a [`WebhookRow`].
const COLUMNS: &str = "uuid, org_id, url, events, description, enabled, max_attempts, \
                       initial_interval_seconds, max_interval_seconds, secrets_key_id, \
                       secrets_nonce, secrets_ciphertext, created_by, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct WebhookRow {
    uuid: String,
    org_id: String,
    url: String,
    events: String,
    description: Option<String>,
    enabled: bool,
    max_attempts: i32,
    initial_interval_seconds: i64,
    max_interval_seconds: i64,
    secrets_key_id: String,
    secrets_nonce: Vec<u8>,
    secrets_ciphertext: Vec<u8>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The stored event list: a JSON array of event words.
fn parse_events(text: &str) -> Result<Vec<EventType>> {
    let words: Vec<String> = serde_json::from_str(text)
        .map_err(|_| Error::internal(format!("unexpected value {text:?} in webhooks.events")))?;
    words.iter().map(|w| word("webhooks.events", w)).collect()
}

fn events_text(events: &[EventType]) -> String {
    Value::from(events.iter().map(|e| e.as_str()).collect::<Vec<_>>()).to_string()
}

impl TryFrom<WebhookRow> for Webhook {
    type Error = Error;

    fn try_from(row: WebhookRow) -> Result<Self> {
        Ok(Webhook {
            events: parse_events(&row.events)?,
            uuid: row.uuid,
            org_id: row.org_id,
            url: row.url,
            description: row.description,
            enabled: row.enabled,
            retry_config: RetryConfig {
                max_attempts: u32::try_from(row.max_attempts).unwrap_or(1),
                initial_interval_seconds: u64::try_from(row.initial_interval_seconds).unwrap_or(1),
                max_interval_seconds: u64::try_from(row.max_interval_seconds).unwrap_or(1),
            },
            secrets: Sealed {
                key_id: row.secrets_key_id,
                nonce: row.secrets_nonce,
                ciphertext: row.secrets_ciphertext,
            },
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn select(filter: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM webhooks {filter}"))
}

#[derive(sqlx::FromRow)]
struct TargetRow {
    uuid: String,
    events: String,
}

/// Records `event` and its deliveries in `tx` (see
/// [`WebhookStore::record_webhook_event`]); returns the deliveries made.
pub(super) async fn insert_event(tx: &mut Tx, event: &WebhookEvent) -> Result<u64> {
    let inserted = Sql::new(
        "INSERT INTO webhook_events (event_id, org_id, event_type, dedupe_key, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(&event.org_id)
    .bind(event.event_type.as_str())
    .bind(&event.dedupe_key)
    .bind(event.body().to_string().as_str())
    .bind(event.created_at)
    .execute(&mut *tx)
    .await
    .map_err(constraint_error)?;
    if inserted == 0 {
        return Ok(0);
    }
    let targets =
        Sql::new("SELECT uuid, events FROM webhooks WHERE org_id = $1 AND enabled = $2 ORDER BY uuid")
            .bind(&event.org_id)
            .bind(true)
            .fetch_all::<TargetRow>(&mut *tx)
            .await?;
    let mut made = 0;
    for target in targets {
        let subscribed = parse_events(&target.events)?.contains(&event.event_type);
        if !(subscribed || event.notify_all) {
            continue;
        }
        Sql::new(
            "INSERT INTO webhook_deliveries (delivery_id, webhook_uuid, event_id, status, attempt, \
             next_attempt_at, created_at) VALUES ($1, $2, $3, 'pending', 0, $4, $4)",
        )
        .bind(format!("dlv_{}", ulid::Ulid::new()).as_str())
        .bind(&target.uuid)
        .bind(&event.event_id)
        .bind(event.created_at)
        .execute(&mut *tx)
        .await
        .map_err(constraint_error)?;
        made += 1;
    }
    Ok(made)
}

/// Records the event of an execution that just ended in `tx` (called by the
/// execution store with the terminal update, so the event commits with it):
/// `project.completed`, `project.failed` or `project.cancelled`, to every
/// enabled webhook when the execution asked for `notify_on_completion`.
/// A step that failed with `rate_limited` on a connector also records
/// `connector.quota_exceeded` for that connector.
pub(super) async fn record_execution_end(tx: &mut Tx, execution_id: &str) -> Result<()> {
    let rows = Sql::new(concat!(
        "SELECT ",
        execution_columns!(),
        ", ",
        step_run_columns!(),
        " FROM executions e LEFT JOIN execution_steps s \
         ON s.execution_id = e.execution_id \
         WHERE e.execution_id = $1 \
         ORDER BY s.position, s.step_id"
    ))
    .bind(execution_id)
    .fetch_all::<ExecutionStepRow>(&mut *tx)
    .await?;
    let Some(execution) = rows::group_executions(rows)?.into_iter().next() else {
        return Ok(());
    };
    let Some(event_type) = EventType::of_execution_end(execution.status) else {
        return Ok(());
    };
    let project_name = Sql::new("SELECT name FROM projects WHERE uuid = $1")
        .bind(&execution.project_uuid)
        .scalar_optional::<String>(&mut *tx)
        .await?;
    let mut event = WebhookEvent::new(
        &execution.org_id,
        event_type,
        execution_data(&execution, project_name.as_deref()),
    );
    event.notify_all = execution.notify_on_completion;
    event.dedupe_key = Some(format!("{}:{execution_id}", event_type.as_str()));
    insert_event(tx, &event).await?;
    if execution.status != ExecutionStatus::Failed {
        return Ok(());
    }
    let limited = execution.steps.iter().find(|step| {
        step.status == StepRunStatus::Failed
            && step
                .error
                .as_ref()
                .is_some_and(|error| error.error_type == ErrorKind::RateLimited)
    });
    let Some(step) = limited else {
        return Ok(());
    };
    let Some(connector_uuid) = step.config.get("connector_uuid").and_then(Value::as_str) else {
        return Ok(());
    };
    let connector = connector_fields(tx, connector_uuid).await?;
    let mut data = json!({
        "connector_uuid": connector_uuid,
        "execution_id": execution.execution_id,
        "project_uuid": execution.project_uuid,
        "step_id": step.step_id,
        "error": step.error.as_ref().map(|error| json!({
            "type": error.error_type.as_str(),
            "message": error.message,
        })),
    });
    merge(&mut data, connector);
    let mut quota = WebhookEvent::new(&execution.org_id, EventType::QuotaExceeded, data);
    quota.dedupe_key = Some(format!("{}:{execution_id}", EventType::QuotaExceeded.as_str()));
    insert_event(tx, &quota).await?;
    Ok(())
}

/// Records `connector.connection_failed` in `tx` for a connector whose
/// probes just moved it to `error` (called by the probe store with that
/// update).
pub(super) async fn record_connection_failed(tx: &mut Tx, record: &TestRecord) -> Result<()> {
    let org_id = Sql::new("SELECT org_id FROM connectors WHERE uuid = $1")
        .bind(&record.connector_uuid)
        .scalar_optional::<String>(&mut *tx)
        .await?;
    let Some(org_id) = org_id else {
        return Ok(());
    };
    let mut data = json!({
        "connector_uuid": record.connector_uuid,
        "status": "error",
        "tested_at": record.tested_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "error": {
            "type": record.error_type,
            "message": record.error_message,
        },
    });
    let connector = connector_fields(tx, &record.connector_uuid).await?;
    merge(&mut data, connector);
    insert_event(tx, &WebhookEvent::new(&org_id, EventType::ConnectionFailed, data)).await?;
    Ok(())
}

/// `{connector_type, display_name}` of a connector, or an empty object.
async fn connector_fields(tx: &mut Tx, uuid: &str) -> Result<Value> {
    let row = Sql::new("SELECT connector_type, display_name FROM connectors WHERE uuid = $1")
        .bind(uuid)
        .fetch_optional::<(String, String)>(&mut *tx)
        .await?;
    Ok(match row {
        Some((connector_type, display_name)) => {
            json!({"connector_type": connector_type, "display_name": display_name})
        }
        None => json!({}),
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    webhook_uuid: String,
    org_id: String,
    event_id: String,
    event_type: String,
    body: String,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    delivery_id: String,
    event_id: String,
    event_type: String,
    attempt: i32,
    status_code: Option<i32>,
    ok: bool,
    error: Option<String>,
    duration_ms: i64,
    created_at: DateTime<Utc>,
}

impl TryFrom<AttemptRow> for DeliveryAttempt {
    type Error = Error;

    fn try_from(row: AttemptRow) -> Result<Self> {
        Ok(DeliveryAttempt {
            event_type: EventType::from_str(&row.event_type)
                .map_err(|_| Error::internal("unexpected value in webhook_events.event_type"))?,
            delivery_id: row.delivery_id,
            event_id: row.event_id,
            attempt: row.attempt,
            status_code: row.status_code,
            ok: row.ok,
            error: row.error,
            duration_ms: row.duration_ms,
            created_at: row.created_at,
        })
    }
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn create_webhook(&self, webhook: &Webhook) -> Result<()> {
        Sql::new(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhooks ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        )))
        .bind(&webhook.uuid)
        .bind(&webhook.org_id)
        .bind(&webhook.url)
        .bind(events_text(&webhook.events).as_str())
        .bind(&webhook.description)
        .bind(webhook.enabled)
        .bind(i32::try_from(webhook.retry_config.max_attempts).unwrap_or(i32::MAX))
        .bind(i64::try_from(webhook.retry_config.initial_interval_seconds).unwrap_or(i64::MAX))
        .bind(i64::try_from(webhook.retry_config.max_interval_seconds).unwrap_or(i64::MAX))
        .bind(&webhook.secrets.key_id)
        .bind(&webhook.secrets.nonce)
        .bind(&webhook.secrets.ciphertext)
        .bind(&webhook.created_by)
        .bind(webhook.created_at)
        .bind(webhook.updated_at)
        .execute(&self.pool)
        .await
        .map_err(constraint_error)?;
        Ok(())
    }

    async fn get_webhook(&self, org_id: &str, uuid: &str) -> Result<Option<Webhook>> {
        Sql::new(select("WHERE org_id = $1 AND uuid = $2"))
            .bind(org_id)
            .bind(uuid)
            .fetch_optional_as::<WebhookRow, _>(&self.pool)
            .await
    }

    async fn list_webhooks(&self, org_id: &str) -> Result<Vec<Webhook>> {
        Sql::new(select("WHERE org_id = $1 ORDER BY created_at, uuid"))
            .bind(org_id)
            .fetch_all_as::<WebhookRow, _>(&self.pool)
            .await
    }

    async fn update_webhook(&self, webhook: &Webhook) -> Result<bool> {
        let updated = Sql::new(
            "UPDATE webhooks SET url = $3, events = $4, description = $5, enabled = $6, \
             max_attempts = $7, initial_interval_seconds = $8, max_interval_seconds = $9, \
             secrets_key_id = $10, secrets_nonce = $11, secrets_ciphertext = $12, updated_at = $13 \
             WHERE org_id = $1 AND uuid = $2",
        )
        .bind(&webhook.org_id)
        .bind(&webhook.uuid)
        .bind(&webhook.url)
        .bind(events_text(&webhook.events).as_str())
        .bind(&webhook.description)
        .bind(webhook.enabled)
        .bind(i32::try_from(webhook.retry_config.max_attempts).unwrap_or(i32::MAX))
        .bind(i64::try_from(webhook.retry_config.initial_interval_seconds).unwrap_or(i64::MAX))
        .bind(i64::try_from(webhook.retry_config.max_interval_seconds).unwrap_or(i64::MAX))
        .bind(&webhook.secrets.key_id)
        .bind(&webhook.secrets.nonce)
        .bind(&webhook.secrets.ciphertext)
        .bind(webhook.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(updated > 0)
    }

    async fn delete_webhook(&self, org_id: &str, uuid: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Explicit, so that the delete does not depend on the backend's
        // cascade settings.
        Sql::new(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT d.delivery_id FROM webhook_deliveries d JOIN webhooks w ON w.uuid = d.webhook_uuid \
              WHERE w.org_id = $1 AND w.uuid = $2)",
        )
        .bind(org_id)
        .bind(uuid)
        .execute(&mut tx)
        .await?;
        Sql::new(
            "DELETE FROM webhook_deliveries WHERE webhook_uuid IN \
             (SELECT uuid FROM webhooks WHERE org_id = $1 AND uuid = $2)",
        )
        .bind(org_id)
        .bind(uuid)
        .execute(&mut tx)
        .await?;
        let deleted = Sql::new("DELETE FROM webhooks WHERE org_id = $1 AND uuid = $2")
            .bind(org_id)
            .bind(uuid)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn record_webhook_event(&self, event: &WebhookEvent) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let made = insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(made)
    }

    async fn take_due_webhook_deliveries(
        &self,
        now: DateTime<Utc>,
        enqueued_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(String, i32)>> {
        Ok(Sql::new(
            "UPDATE webhook_deliveries SET enqueued_at = $1 WHERE delivery_id IN \
             (SELECT delivery_id FROM webhook_deliveries \
              WHERE status = 'pending' AND next_attempt_at <= $1 \
              AND (claimed_until IS NULL OR claimed_until < $1) \
              AND (enqueued_at IS NULL OR enqueued_at < $2) \
              ORDER BY next_attempt_at, delivery_id LIMIT $3) \
             RETURNING delivery_id, attempt",
        )
        .bind(now)
        .bind(enqueued_before)
        .bind(limit)
        .fetch_all::<(String, i32)>(&self.pool)
        .await?)
    }

    async fn claim_webhook_delivery(
        &self,
        delivery_id: &str,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
    ) -> Result<Option<ClaimedDelivery>> {
        let attempt = Sql::new(
            "UPDATE webhook_deliveries SET attempt = attempt + 1, claimed_until = $3 \
             WHERE delivery_id = $1 AND status = 'pending' AND next_attempt_at <= $2 \
             AND (claimed_until IS NULL OR claimed_until < $2) \
             RETURNING attempt",
        )
        .bind(delivery_id)
        .bind(now)
        .bind(claim_until)
        .scalar_optional::<i32>(&self.pool)
        .await?;
        let Some(attempt) = attempt else {
            return Ok(None);
        };
        let row = Sql::new(
            "SELECT d.webhook_uuid, e.org_id, e.event_id, e.event_type, e.body \
             FROM webhook_deliveries d JOIN webhook_events e ON e.event_id = d.event_id \
             WHERE d.delivery_id = $1",
        )
        .bind(delivery_id)
        .fetch_optional::<ClaimRow>(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(ClaimedDelivery {
            delivery_id: delivery_id.to_owned(),
            event_type: word("webhook_events.event_type", &row.event_type)?,
            webhook_uuid: row.webhook_uuid,
            org_id: row.org_id,
            event_id: row.event_id,
            body: row.body,
            attempt,
        }))
    }

    async fn record_webhook_attempt(&self, claim: &ClaimedDelivery, record: &AttemptRecord) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let updated = Sql::new(
            "UPDATE webhook_deliveries SET status = $3, next_attempt_at = COALESCE($4, next_attempt_at), \
             claimed_until = NULL, enqueued_at = NULL \
             WHERE delivery_id = $1 AND attempt = $2 AND status = 'pending'",
        )
        .bind(&claim.delivery_id)
        .bind(claim.attempt)
        .bind(record.next.as_str())
        .bind(record.next_attempt_at)
        .execute(&mut tx)
        .await?;
        if updated == 0 {
            return Ok(false);
        }
        Sql::new(
            "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, ok, error, \
             duration_ms, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&claim.delivery_id)
        .bind(claim.attempt)
        .bind(Arg::Int32(record.status_code))
        .bind(record.ok)
        .bind(&record.error)
        .bind(record.duration_ms)
        .bind(record.at)
        .execute(&mut tx)
        .await
        .map_err(constraint_error)?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_webhook_attempts(
        &self,
        org_id: &str,
        webhook_uuid: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryAttempt>> {
        Sql::new(
            "SELECT a.delivery_id, d.event_id, e.event_type, a.attempt, a.status_code, a.ok, \
             a.error, a.duration_ms, a.created_at \
             FROM webhook_attempts a \
             JOIN webhook_deliveries d ON d.delivery_id = a.delivery_id \
             JOIN webhook_events e ON e.event_id = d.event_id \
             JOIN webhooks w ON w.uuid = d.webhook_uuid \
             WHERE w.org_id = $1 AND w.uuid = $2 \
             ORDER BY a.created_at DESC, a.delivery_id DESC, a.attempt DESC LIMIT $3",
        )
        .bind(org_id)
        .bind(webhook_uuid)
        .bind(limit)
        .fetch_all_as::<AttemptRow, _>(&self.pool)
        .await
    }

    async fn prune_webhook_events(&self, before: DateTime<Utc>, limit: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let events = Sql::new(
            "SELECT e.event_id FROM webhook_events e WHERE e.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
             WHERE d.event_id = e.event_id AND d.status = 'pending') \
             ORDER BY e.created_at, e.event_id LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .scalar_all::<String>(&mut tx)
        .await?;
        for event_id in &events {
            // Explicit, so that the prune does not depend on the backend's
            // cascade settings.
            Sql::new(
                "DELETE FROM webhook_attempts WHERE delivery_id IN \
                 (SELECT delivery_id FROM webhook_deliveries WHERE event_id = $1)",
            )
            .bind(event_id)
            .execute(&mut tx)
            .await?;
            Sql::new("DELETE FROM webhook_deliveries WHERE event_id = $1")
                .bind(event_id)
                .execute(&mut tx)
                .await?;
            Sql::new("DELETE FROM webhook_events WHERE event_id = $1")
                .bind(event_id)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(u64::try_from(events.len()).unwrap_or(u64::MAX))
    }

    async fn webhooks_sealed_with_other_key(&self, key_id: &str, limit: i64) -> Result<Vec<Webhook>> {
        Sql::new(select("WHERE secrets_key_id <> $1 ORDER BY uuid LIMIT $2"))
            .bind(key_id)
            .bind(limit)
            .fetch_all_as::<WebhookRow, _>(&self.pool)
            .await
    }

    async fn count_webhooks_sealed_with_other_key(&self, key_id: &str) -> Result<u64> {
        let count = Sql::new("SELECT COUNT(*) FROM webhooks WHERE secrets_key_id <> $1")
            .bind(key_id)
            .scalar_one::<i64>(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn replace_webhook_secrets(&self, uuid: &str, old: &Sealed, new: &Sealed) -> Result<bool> {
        let updated = Sql::new(
            "UPDATE webhooks SET secrets_key_id = $5, secrets_nonce = $6, secrets_ciphertext = $7 \
             WHERE uuid = $1 AND secrets_key_id = $2 AND secrets_nonce = $3 AND secrets_ciphertext = $4",
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
        Ok(updated > 0)
    }

    async fn redeliver_webhook_delivery(
        &self,
        org_id: &str,
        webhook_uuid: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let updated = Sql::new(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, enqueued_at = NULL \
             WHERE delivery_id = $3 AND webhook_uuid = $2 \
             AND webhook_uuid IN (SELECT uuid FROM webhooks WHERE org_id = $1)",
        )
        .bind(org_id)
        .bind(webhook_uuid)
        .bind(delivery_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(updated > 0)
    }
}
