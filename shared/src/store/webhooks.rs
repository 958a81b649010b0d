//! Webhooks, their events and deliveries: the [`WebhookStore`] aggregate
//! trait.
//!
//! The store is the outbox. An event is recorded with the state change it
//! reports (in the same transaction where the store makes that change: an
//! execution's end, a connector's probe moving it to `error`), and fanned
//! out there into one `pending` delivery per receiving webhook. Redis only
//! carries wake-ups: the scheduler leader enqueues a `deliver_webhook` job
//! for each due delivery, and again for one whose job was lost (Redis
//! restarted empty) or whose worker died (its claim expired). A worker
//! claims a delivery (one conditional update bumping its attempt number),
//! sends it and records the try fenced on that number, so a stale worker's
//! result never lands after a newer claim.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::Sealed;
use crate::domain::webhook::{DeliveryAttempt, DeliveryStatus, EventType, Webhook, WebhookEvent};
use crate::error::Result;

/// A delivery a worker holds: what to send, where, and the attempt number
/// that fences its result.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDelivery {
    pub delivery_id: String,
    pub webhook_uuid: String,
    pub org_id: String,
    /// The event's id: the `webhook-id` of every try.
    pub event_id: String,
    pub event_type: EventType,
    /// The exact body to send (and sign).
    pub body: String,
    /// 1 on the first try; a redelivery continues the count.
    pub attempt: i32,
}

/// The outcome of one try, recorded with what happens next.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub status_code: Option<i32>,
    pub ok: bool,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub at: DateTime<Utc>,
    /// `Delivered`, `Failed` (no try left), `Skipped` (webhook disabled or
    /// gone) or `Pending` with the time of the next try.
    pub next: DeliveryStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Webhooks of organizations and the delivery of their events.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Inserts a webhook. An existing uuid is `Error::Conflict`.
    async fn create_webhook(&self, webhook: &Webhook) -> Result<()>;

    /// The webhook with this id in this organization.
    async fn get_webhook(&self, org_id: &str, uuid: &str) -> Result<Option<Webhook>>;

    /// The organization's webhooks, oldest first (then by uuid).
    async fn list_webhooks(&self, org_id: &str) -> Result<Vec<Webhook>>;

    /// Writes every mutable field (url, events, description, enabled,
    /// retry_config, secrets, updated_at). Returns whether it exists in its
    /// organization.
    async fn update_webhook(&self, webhook: &Webhook) -> Result<bool>;

    /// Deletes the webhook with its deliveries and their tries. Returns
    /// whether it existed.
    async fn delete_webhook(&self, org_id: &str, uuid: &str) -> Result<bool>;

    /// Records an event and, in the same transaction, a `pending` delivery
    /// (due now) for each enabled webhook of the organization subscribed
    /// to its type, or for each enabled one when `notify_all`. An event
    /// whose `dedupe_key` was recorded before is ignored. Returns the
    /// number of deliveries created.
    async fn record_webhook_event(&self, event: &WebhookEvent) -> Result<u64>;

    /// Up to `limit` deliveries due at `now` whose job should be enqueued:
    /// `pending`, `next_attempt_at <= now`, no live claim, and never
    /// enqueued or enqueued before `enqueued_before` (a job that may have
    /// been lost). Each is marked enqueued at `now` in the same statement
    /// round, so two sweeps do not both return it within the grace. Each
    /// comes with its attempt count (tries claimed so far).
    async fn take_due_webhook_deliveries(
        &self,
        now: DateTime<Utc>,
        enqueued_before: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<(String, i32)>>;

    /// Claims a due delivery for one try until `claim_until`: when it is
    /// `pending`, due at `now` and not claimed by a live try, bumps its
    /// attempt number. None otherwise (a duplicate or early job, or done).
    async fn claim_webhook_delivery(
        &self,
        delivery_id: &str,
        now: DateTime<Utc>,
        claim_until: DateTime<Utc>,
    ) -> Result<Option<ClaimedDelivery>>;

    /// Records the try `claim.attempt` and moves the delivery as
    /// `record.next` says, if that try still holds it (its attempt number
    /// is current and it is pending).
    /// Returns false when fenced out, and then nothing changed.
    async fn record_webhook_attempt(&self, claim: &ClaimedDelivery, record: &AttemptRecord) -> Result<bool>;

    /// The most recent `limit` tries of the webhook's deliveries, newest
    /// first.
    async fn list_webhook_attempts(
        &self,
        org_id: &str,
        webhook_uuid: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryAttempt>>;

    /// Deletes up to `limit` events recorded before `before` none of whose
    /// deliveries is still pending, with their deliveries and tries (the
    /// outbox and the delivery log stay bounded). Returns how many events
    /// went.
    async fn prune_webhook_events(&self, before: DateTime<Utc>, limit: i64) -> Result<u64>;

    /// Up to `limit` webhooks (any organization) whose secrets are sealed
    /// under a key other than `key_id`, for key rotation.
    async fn webhooks_sealed_with_other_key(&self, key_id: &str, limit: i64) -> Result<Vec<Webhook>>;

    /// How many webhooks have secrets sealed under a key other than
    /// `key_id`.
    async fn count_webhooks_sealed_with_other_key(&self, key_id: &str) -> Result<u64>;

    /// Replaces a webhook's sealed secrets if they still equal `old`
    /// (compare-and-swap, so rotation never overwrites a concurrent PATCH).
    async fn replace_webhook_secrets(&self, uuid: &str, old: &Sealed, new: &Sealed) -> Result<bool>;

    /// Makes a delivery of this webhook `pending` again, due at `now`, with
    /// its event (and so its `webhook-id`) unchanged; a delivery still
    /// pending is only made due now. Returns whether it exists.
    async fn redeliver_webhook_delivery(
        &self,
        org_id: &str,
        webhook_uuid: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}
