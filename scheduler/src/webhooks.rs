//! The webhook sweep: enqueues a `deliver_webhook` job for every delivery
//! that is due.
//!
//! Deliveries live in the store (the outbox, see
//! `ferry_shared::store::webhooks`); Redis only carries their wake-ups. So
//! the leader looks every `interval` for pending deliveries whose next try
//! is due and that no worker holds, marks them enqueued and enqueues a job
//! each. A job that Redis lost (restarted empty) or that a dead worker held
//! shows up again: a delivery marked enqueued longer than `grace` ago and
//! still pending is enqueued again, and a dead worker's claim expires. The
//! store's claim makes a duplicate job harmless. Every so often the leader
//! also deletes events older than [`EVENT_RETENTION`] that have nothing
//! left to deliver, with their delivery log.

use std::time::Duration;

use ferry_shared::domain;
use ferry_shared::jobs::DeliverWebhookJob;
use ferry_shared::queue::Queue;
use ferry_shared::store::WebhookStore;
use ferry_shared::{Error, Result};
use prometheus::{IntCounter, Registry};
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderElection;

/// How often the leader looks for due deliveries, by default.
pub const DEFAULT_WEBHOOK_INTERVAL: Duration = Duration::from_secs(1);

/// Deliveries enqueued per pass, soonest due first.
pub const SWEEP_BATCH: i64 = 500;

/// How long an event and its delivery log are kept once none of its
/// deliveries is pending.
pub const EVENT_RETENTION: chrono::Duration = chrono::Duration::days(30);

/// Passes between two prunes of old events (about ten minutes at the
/// default interval), and events deleted per prune.
const PRUNE_EVERY: u64 = 600;
const PRUNE_BATCH: i64 = 1000;

/// `ferry_scheduler_webhook_deliveries_enqueued_total` and
/// `ferry_scheduler_webhook_sweep_errors_total`.
#[derive(Clone)]
pub struct WebhookMetrics {
    pub enqueued: IntCounter,
    pub errors: IntCounter,
}

impl WebhookMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = WebhookMetrics {
            enqueued: IntCounter::new(
                "ferry_scheduler_webhook_deliveries_enqueued_total",
                "Webhook delivery tries the leader enqueued (due, or enqueued again after a lost job)",
            )?,
            errors: IntCounter::new(
                "ferry_scheduler_webhook_sweep_errors_total",
                "Webhook sweeps that failed because the store or the queue was unavailable",
            )?,
        };
        registry.register(Box::new(metrics.enqueued.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        Ok(metrics)
    }
}

/// One pass: takes the due deliveries (pending, due, unclaimed, and not
/// enqueued within `grace`) and enqueues a job for each. Returns how many
/// were taken.
pub async fn sweep_once(store: &dyn WebhookStore, queue: &dyn Queue, grace: Duration) -> Result<usize> {
    let now = domain::now();
    let grace = chrono::Duration::from_std(grace)
        .map_err(|_| Error::validation("queued_grace", "the queued grace is out of range"))?;
    let due = store
        .take_due_webhook_deliveries(now, now - grace, SWEEP_BATCH)
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let jobs: Vec<_> = due
        .iter()
        .map(|(delivery_id, attempt)| {
            DeliverWebhookJob {
                delivery_id: delivery_id.clone(),
            }
            .to_job(&attempt.to_string())
        })
        .collect();
    // Should this fail, the deliveries stay pending and marked enqueued:
    // the pass after the grace enqueues them again.
    queue.enqueue_many(&jobs).await?;
    Ok(due.len())
}

/// Runs a pass every `interval` while this process leads, until `stop`.
pub(crate) async fn run(
    store: &dyn WebhookStore,
    queue: &dyn Queue,
    leader: &LeaderElection,
    metrics: &WebhookMetrics,
    interval: Duration,
    grace: Duration,
    stop: CancellationToken,
) {
    let mut ticks = leader.ticks(interval, &stop);
    let mut passes = 0u64;
    while let Some(leading) = ticks.next().await {
        if !leading {
            continue;
        }
        passes += 1;
        if passes % PRUNE_EVERY == 1 {
            match store
                .prune_webhook_events(domain::now() - EVENT_RETENTION, PRUNE_BATCH)
                .await
            {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "old webhook events and their delivery log deleted"),
                Err(error) => tracing::warn!(%error, "pruning old webhook events failed"),
            }
        }
        match sweep_once(store, queue, grace).await {
            Ok(taken) => {
                metrics.enqueued.inc_by(taken as u64);
                if taken > 0 {
                    tracing::debug!(taken, "webhook deliveries enqueued");
                }
            }
            Err(error) => {
                metrics.errors.inc();
                tracing::warn!(%error, "webhook sweep failed");
            }
        }
    }
}
