//! `deliver_webhook`: one try of a stored webhook delivery.
//!
//! The store decides: the worker claims the delivery (which must be
//! `pending` and due, with no live claim), which bumps its attempt number,
//! sends the event signed per Standard Webhooks, and records the try fenced
//! on that number, with what happens next: `delivered` on a 2xx answer,
//! another try after the webhook's backoff, or `failed` after its last try.
//! A worker that dies mid-try leaves its claim to expire; the scheduler
//! enqueues the delivery again and the next try sends the same event with
//! the same `webhook-id`.
//!
//! Every try re-checks the network policy (`FERRY_ALLOW_PRIVATE_NETWORKS`)
//! on the addresses the URL resolves to then, follows no redirect, and
//! waits at most the delivery timeout for an answer. A disabled or deleted
//! webhook receives nothing: its delivery ends `skipped`, logged as a try
//! that sent nothing (a redelivery once it is enabled again sends it).

use std::time::{Duration, Instant};

use chrono::Utc;
use ferry_shared::domain::webhook::{
    DeliveryStatus, EventType, WebhookEvent, WebhookSecrets, execution_data,
};
use ferry_shared::domain::{self, Execution};
use ferry_shared::jobs::DeliverWebhookJob;
use ferry_shared::store::{AttemptRecord, ClaimedDelivery, Store};
use prometheus::{IntCounterVec, Opts, Registry};
use reqwest::Url;
use serde_json::Value;

use crate::Shared;
use crate::connectors::NetworkPolicy;
use crate::connectors::http;
use crate::runtime::JobError;

/// How long a receiver has to answer one try, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much later than the timeout a try's claim lasts: a worker that dies
/// mid-try frees the delivery this long after the try's deadline.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// How far ahead of its due time a delivery may be taken (clocks of the
/// scheduler's and the worker's hosts may differ a little).
const EARLY_TOLERANCE: chrono::Duration = chrono::Duration::seconds(2);

/// Longest error text kept in the delivery log.
const MAX_ERROR: usize = 300;

/// The HTTP client webhooks are sent with, under the worker's network
/// policy and the delivery timeout, and the tries' counter.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    policy: NetworkPolicy,
    timeout: Duration,
    /// `ferry_worker_webhook_tries_total{outcome}`: `delivered`,
    /// `retrying`, `failed` (no try left) or `skipped` (webhook disabled).
    tries: IntCounterVec,
}

impl Deliverer {
    /// A client that applies `policy` to every address it connects to,
    /// follows no redirect and gives each try `timeout` in all.
    /// Its counter is registered in `registry` (a registration conflict,
    /// a second worker on one registry, is logged and the counter still
    /// counts, unexported).
    pub fn new(policy: NetworkPolicy, timeout: Duration, registry: &Registry) -> Deliverer {
        let timeout = if timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            timeout
        };
        let client = http::client_builder(&policy, timeout)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cannot build the webhook client with its settings; using the defaults");
                reqwest::Client::new()
            });
        let tries = IntCounterVec::new(
            Opts::new(
                "ferry_worker_webhook_tries_total",
                "Webhook delivery tries this worker made, by outcome (delivered, retrying, failed, skipped)",
            ),
            &["outcome"],
        )
        .expect("a valid metric family");
        if let Err(error) = registry.register(Box::new(tries.clone())) {
            tracing::warn!(%error, "webhook metrics not registered");
        }
        Deliverer {
            client,
            policy,
            timeout,
            tries,
        }
    }

    /// How long one try may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// What one try got.
struct Sent {
    status_code: Option<i32>,
    ok: bool,
    error: Option<String>,
}

pub async fn run(shared: &Shared, payload: Value) -> Result<(), JobError> {
    let job: DeliverWebhookJob = serde_json::from_value(payload)
        .map_err(|e| JobError::Abort(format!("malformed deliver_webhook job: {e}")))?;
    let retry = |e: ferry_shared::Error| JobError::Retry(e.to_string());
    let now = domain::now();
    let claim_for = chrono::Duration::from_std(shared.webhooks.timeout + CLAIM_MARGIN)
        .unwrap_or(chrono::Duration::seconds(60));
    let claimed = shared
        .store
        .claim_webhook_delivery(&job.delivery_id, now + EARLY_TOLERANCE, now + claim_for)
        .await
        .map_err(retry)?;
    let Some(claim) = claimed else {
        tracing::debug!(delivery_id = %job.delivery_id, "webhook delivery not due, claimed elsewhere or done");
        return Ok(());
    };
    let webhook = shared
        .store
        .get_webhook(&claim.org_id, &claim.webhook_uuid)
        .await
        .map_err(retry)?;
    let Some(webhook) = webhook.filter(|webhook| webhook.enabled) else {
        let record = AttemptRecord {
            status_code: None,
            ok: false,
            error: Some("the webhook is disabled: nothing was sent".into()),
            duration_ms: 0,
            at: domain::now(),
            next: DeliveryStatus::Skipped,
            next_attempt_at: None,
        };
        shared
            .store
            .record_webhook_attempt(&claim, &record)
            .await
            .map_err(retry)?;
        shared.webhooks.tries.with_label_values(&["skipped"]).inc();
        tracing::info!(delivery_id = %claim.delivery_id, webhook_uuid = %claim.webhook_uuid, "webhook disabled or deleted: delivery skipped");
        return Ok(());
    };
    let started = Instant::now();
    let sent = match shared
        .vault
        .open(&webhook.uuid, &webhook.secrets)
        .ok()
        .and_then(|opened| WebhookSecrets::from_map(opened.expose_secret()))
    {
        Some(secrets) => send(&shared.webhooks, &webhook.url, &secrets, &claim).await,
        None => {
            tracing::error!(webhook_uuid = %webhook.uuid, "cannot open the webhook's signing secret");
            Sent {
                status_code: None,
                ok: false,
                error: Some("the webhook's signing secret cannot be opened on this worker".into()),
            }
        }
    };
    let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let at = domain::now();
    let attempt = u32::try_from(claim.attempt).unwrap_or(u32::MAX);
    let (next, next_attempt_at) = if sent.ok {
        (DeliveryStatus::Delivered, None)
    } else {
        match webhook.retry_config.next_delay(attempt, jitter()) {
            Some(delay) => (
                DeliveryStatus::Pending,
                Some(at + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1))),
            ),
            None => (DeliveryStatus::Failed, None),
        }
    };
    let record = AttemptRecord {
        status_code: sent.status_code,
        ok: sent.ok,
        error: sent.error,
        duration_ms,
        at,
        next,
        next_attempt_at,
    };
    let recorded = shared
        .store
        .record_webhook_attempt(&claim, &record)
        .await
        .map_err(retry)?;
    let outcome = match next {
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Pending => "retrying",
        DeliveryStatus::Failed => "failed",
        DeliveryStatus::Skipped => "skipped",
    };
    shared.webhooks.tries.with_label_values(&[outcome]).inc();
    if !recorded {
        tracing::warn!(delivery_id = %claim.delivery_id, attempt, "webhook try finished after its claim was taken over");
        return Ok(());
    }
    if sent.ok {
        tracing::info!(
            delivery_id = %claim.delivery_id,
            webhook_uuid = %claim.webhook_uuid,
            event_type = claim.event_type.as_str(),
            attempt,
            status_code = record.status_code,
            duration_ms,
            "webhook delivered"
        );
    } else {
        tracing::warn!(
            delivery_id = %claim.delivery_id,
            webhook_uuid = %claim.webhook_uuid,
            event_type = claim.event_type.as_str(),
            attempt,
            status_code = record.status_code,
            error = record.error.as_deref().unwrap_or(""),
            next = next.as_str(),
            "webhook try failed"
        );
    }
    Ok(())
}

/// Signs and posts the event once.
async fn send(deliverer: &Deliverer, url: &str, secrets: &WebhookSecrets, claim: &ClaimedDelivery) -> Sent {
    let failed = |error: String| Sent {
        status_code: None,
        ok: false,
        error: Some(clip(error)),
    };
    let Ok(url) = Url::parse(url) else {
        return failed("invalid_config: the webhook URL does not parse".into());
    };
    if let Err(error) = http::check_literal(&url, &deliverer.policy) {
        return failed(error.to_string());
    }
    let signer = match standardwebhooks::Webhook::new(&secrets.secret) {
        Ok(signer) => signer,
        Err(_) => return failed("invalid_config: the webhook's signing secret is malformed".into()),
    };
    let timestamp = Utc::now().timestamp();
    let signature = match signer.sign(&claim.event_id, timestamp, claim.body.as_bytes()) {
        Ok(signature) => signature,
        Err(_) => return failed("internal: the event could not be signed".into()),
    };
    let mut request = deliverer
        .client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in &secrets.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .header(standardwebhooks::HEADER_WEBHOOK_ID, claim.event_id.as_str())
        .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, timestamp.to_string())
        .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
        .body(claim.body.clone());
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            // The body is not read: a receiver's answer is its status.
            drop(response);
            Sent {
                status_code: Some(i32::from(status.as_u16())),
                ok: status.is_success(),
                error: (!status.is_success()).then(|| format!("the receiver answered {status}")),
            }
        }
        Err(error) => failed(http::request_error(&error, &url).to_string()),
    }
}

fn clip(mut text: String) -> String {
    if text.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A number in `0.0..1.0` that differs from try to try.
fn jitter() -> f64 {
    let random = ulid::Ulid::new().random();
    (random % 1_000_000) as f64 / 1_000_000.0
}

/// Records `execution.started` for an execution a worker just took: once
/// per execution however many workers take it (its dedupe key), to the
/// organization's webhooks subscribed to it. A failure to record is logged;
/// the execution runs anyway.
pub async fn record_started(store: &dyn Store, execution: &Execution) {
    let project_name = match store
        .get_project(&execution.org_id, &execution.project_uuid)
        .await
    {
        Ok(project) => project.map(|project| project.name),
        Err(_) => None,
    };
    let mut event = WebhookEvent::new(
        &execution.org_id,
        EventType::ExecutionStarted,
        execution_data(execution, project_name.as_deref()),
    );
    event.dedupe_key = Some(format!(
        "{}:{}",
        EventType::ExecutionStarted.as_str(),
        execution.execution_id
    ));
    if let Err(error) = store.record_webhook_event(&event).await {
        tracing::warn!(execution_id = %execution.execution_id, %error, "execution.started event not recorded");
    }
}
