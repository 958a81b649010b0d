//! Webhooks: an organization's subscriptions to Ferry's events, the events
//! themselves and their delivery schedule. Pure data and validation.
//!
//! An event is recorded in the store with the state change it reports (an
//! outbox), fanned out there into one delivery per receiving webhook, and
//! delivered by `deliver_webhook` jobs at least once. Every attempt of a
//! delivery, and a redelivery, carries the event's id as `webhook-id`, so
//! receivers dedupe on it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strum::{EnumString, IntoStaticStr, VariantArray};

use super::{Execution, ExecutionStatus, Sealed, StepRunStatus};

/// An event type a webhook subscribes to (API.md, "Webhooks").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, IntoStaticStr, EnumString, VariantArray,
)]
pub enum EventType {
    /// A connector's health probes kept failing: it is now `error`.
    #[strum(serialize = "connector.connection_failed")]
    ConnectionFailed,
    /// The provider refused an OAuth connector's refresh token: it needs a
    /// new authorization.
    #[strum(serialize = "connector.credentials_expired")]
    CredentialsExpired,
    /// A step failed because the connector's server kept answering that it
    /// was over its rate limit or quota.
    #[strum(serialize = "connector.quota_exceeded")]
    QuotaExceeded,
    /// An execution of a project completed.
    #[strum(serialize = "project.completed")]
    ProjectCompleted,
    /// An execution of a project failed.
    #[strum(serialize = "project.failed")]
    ProjectFailed,
    /// An execution of a project was cancelled.
    #[strum(serialize = "project.cancelled")]
    ProjectCancelled,
    /// A worker started an execution.
    #[strum(serialize = "execution.started")]
    ExecutionStarted,
}

impl EventType {
    /// The word receivers see in `type` (`project.completed`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether this is the end of an execution (`project.*`): these go to
    /// every enabled webhook of the organization when the execution was
    /// started with `notify_on_completion: true`.
    pub fn is_completion(self) -> bool {
        matches!(
            self,
            EventType::ProjectCompleted | EventType::ProjectFailed | EventType::ProjectCancelled
        )
    }

    /// The completion event of a terminal execution status.
    pub fn of_execution_end(status: ExecutionStatus) -> Option<EventType> {
        match status {
            ExecutionStatus::Completed => Some(EventType::ProjectCompleted),
            ExecutionStatus::Failed => Some(EventType::ProjectFailed),
            ExecutionStatus::Cancelled => Some(EventType::ProjectCancelled),
            ExecutionStatus::Queued | ExecutionStatus::Running | ExecutionStatus::Cancelling => None,
        }
    }

    /// Every event type, in declaration order, as words.
    pub fn words() -> Vec<&'static str> {
        EventType::VARIANTS.iter().map(|event| event.as_str()).collect()
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a delivery is retried: `max_attempts` tries in all, the first retry
/// after `initial_interval_seconds`, each next one after twice the previous
/// interval, at most `max_interval_seconds`, each with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryConfig {
    pub max_attempts: u32,
    pub initial_interval_seconds: u64,
    pub max_interval_seconds: u64,
}

impl Default for RetryConfig {
    /// 8 attempts, 5 s, at most an hour (API.md, "Contract details").
    fn default() -> Self {
        RetryConfig {
            max_attempts: 8,
            initial_interval_seconds: 5,
            max_interval_seconds: 3600,
        }
    }
}

/// Bounds of [`RetryConfig`]'s fields.
pub const MAX_ATTEMPTS_LIMIT: u32 = 20;
pub const MAX_INTERVAL_LIMIT_SECONDS: u64 = 86_400;

impl RetryConfig {
    /// The field (`retry_config.<name>`) and message of the first value out
    /// of bounds: attempts 1..=20, intervals 1..=86400 s, the initial one
    /// at most the maximum.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&self.max_attempts) {
            return Err((
                "retry_config.max_attempts",
                format!("max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}"),
            ));
        }
        if !(1..=MAX_INTERVAL_LIMIT_SECONDS).contains(&self.initial_interval_seconds) {
            return Err((
                "retry_config.initial_interval_seconds",
                format!("initial_interval_seconds must be between 1 and {MAX_INTERVAL_LIMIT_SECONDS}"),
            ));
        }
        if !(1..=MAX_INTERVAL_LIMIT_SECONDS).contains(&self.max_interval_seconds) {
            return Err((
                "retry_config.max_interval_seconds",
                format!("max_interval_seconds must be between 1 and {MAX_INTERVAL_LIMIT_SECONDS}"),
            ));
        }
        if self.initial_interval_seconds > self.max_interval_seconds {
            return Err((
                "retry_config.initial_interval_seconds",
                "initial_interval_seconds must not exceed max_interval_seconds".to_owned(),
            ));
        }
        Ok(())
    }

    /// The wait before the try after failed try number `attempt` (1-based),
    /// or None when that was the last one. The base interval doubles with
    /// each failure up to the maximum; `jitter` (in `0.0..1.0`) takes up to
    /// a fifth off it, so that receivers that failed together are not
    /// retried together.
    pub fn next_delay(&self, attempt: u32, jitter: f64) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let doublings = attempt.saturating_sub(1).min(32);
        let base = self
            .initial_interval_seconds
            .saturating_mul(1u64 << doublings)
            .min(self.max_interval_seconds);
        let base = Duration::from_secs(base);
        Some(base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0)))
    }
}

/// An organization's webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// `whk_…`.
    pub uuid: String,
    pub org_id: String,
    pub url: String,
    /// Sorted, without duplicates.
    pub events: Vec<EventType>,
    pub description: Option<String>,
    pub enabled: bool,
    pub retry_config: RetryConfig,
    /// The signing secret and the extra headers, sealed together in the
    /// vault with the webhook's uuid as associated data (see
    /// [`WebhookSecrets`]).
    pub secrets: Sealed,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a webhook's sealed blob holds: its signing secret (`whsec_…`) and
/// the extra headers sent with every delivery (they may carry a receiver's
/// credentials, so they are sealed too).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSecrets {
    pub secret: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl WebhookSecrets {
    /// As the JSON object the vault seals.
    pub fn to_map(&self) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        map.insert("secret".into(), Value::String(self.secret.clone()));
        map.insert(
            "headers".into(),
            Value::Object(
                self.headers
                    .iter()
                    .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                    .collect(),
            ),
        );
        map
    }

    /// From the JSON object the vault opened.
    pub fn from_map(map: &serde_json::Map<String, Value>) -> Option<WebhookSecrets> {
        serde_json::from_value(Value::Object(map.clone())).ok()
    }
}

/// Headers a webhook may not set: the signature's, and those the HTTP
/// client owns.
pub const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "user-agent",
];

/// An event as recorded, before its fan-out.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// `evt_…`: the body's `id` and every delivery's `webhook-id`.
    pub event_id: String,
    pub org_id: String,
    pub event_type: EventType,
    pub created_at: DateTime<Utc>,
    /// The body's `data`.
    pub data: Value,
    /// Deliver to every enabled webhook of the organization, subscribed or
    /// not (completion events of executions started with
    /// `notify_on_completion: true`).
    pub notify_all: bool,
    /// At most one event is recorded per key (None: no limit), so a step
    /// that may run twice (a worker that died after it) records once.
    pub dedupe_key: Option<String>,
}

impl WebhookEvent {
    /// A new event of `event_type` with a fresh id, stamped now.
    pub fn new(org_id: &str, event_type: EventType, data: Value) -> WebhookEvent {
        WebhookEvent {
            event_id: format!("evt_{}", ulid::Ulid::new()),
            org_id: org_id.to_owned(),
            event_type,
            created_at: super::now(),
            data,
            notify_all: false,
            dedupe_key: None,
        }
    }

    /// The body receivers get: `{"id", "type", "created_at", "data"}`.
    pub fn body(&self) -> Value {
        json!({
            "id": self.event_id,
            "type": self.event_type.as_str(),
            "created_at": self.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "data": self.data,
        })
    }
}

/// The `data` of an execution event: `execution_id`, `project_uuid`,
/// `project_name`, `status`, `trigger`, `started_at`, `completed_at`,
/// `duration_seconds`, `total_rows`, `output_files` (each completed step's
/// object, in step order) and `failed_step` (`{step_id, name, error: {type,
/// message}}`, or null).
pub fn execution_data(execution: &Execution, project_name: Option<&str>) -> Value {
    let duration_seconds = match (execution.started_at, execution.completed_at) {
        (Some(started), Some(completed)) => {
            Some((completed - started).num_milliseconds().max(0) as f64 / 1000.0)
        }
        _ => None,
    };
    let output_files: Vec<&str> = execution
        .steps
        .iter()
        .filter_map(|step| step.output_file.as_deref())
        .collect();
    let failed_step = execution
        .steps
        .iter()
        .find(|step| step.status == StepRunStatus::Failed)
        .map(|step| {
            json!({
                "step_id": step.step_id,
                "name": step.name,
                "error": step.error.as_ref().map(|error| json!({
                    "type": error.error_type.as_str(),
                    "message": error.message,
                })),
            })
        });
    let time =
        |at: Option<DateTime<Utc>>| at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    json!({
        "execution_id": execution.execution_id,
        "project_uuid": execution.project_uuid,
        "project_name": project_name,
        "status": execution.status.as_str(),
        "trigger": execution.trigger.as_str(),
        "started_at": time(execution.started_at),
        "completed_at": time(execution.completed_at),
        "duration_seconds": duration_seconds,
        "total_rows": execution.total_rows(),
        "output_files": output_files,
        "failed_step": failed_step,
    })
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next try (`next_attempt_at`).
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Every try failed.
    Failed,
    /// The webhook was disabled before the delivery was made.
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One try of a delivery, as the deliveries list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub delivery_id: String,
    pub event_id: String,
    pub event_type: EventType,
    pub attempt: i32,
    /// The receiver's status code; None when no answer came (refused,
    /// blocked by the network policy, timed out).
    pub status_code: Option<i32>,
    pub ok: bool,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_words_round_trip_and_only_project_events_are_completions() {
        for event in EventType::VARIANTS {
            assert_eq!(event.as_str().parse::<EventType>(), Ok(*event));
        }
        assert_eq!(EventType::words().len(), 7);
        assert!(EventType::ProjectCancelled.is_completion());
        assert!(!EventType::ExecutionStarted.is_completion());
        assert!("project.started".parse::<EventType>().is_err());
    }

    #[test]
    fn retries_double_up_to_the_maximum_with_at_most_a_fifth_of_jitter_and_stop_after_the_last() {
        let config = RetryConfig {
            max_attempts: 5,
            initial_interval_seconds: 5,
            max_interval_seconds: 15,
        };
        assert_eq!(config.next_delay(1, 0.0), Some(Duration::from_secs(5)));
        assert_eq!(config.next_delay(2, 0.0), Some(Duration::from_secs(10)));
        assert_eq!(config.next_delay(3, 0.0), Some(Duration::from_secs(15)));
        assert_eq!(config.next_delay(4, 1.0), Some(Duration::from_secs(12)));
        assert_eq!(config.next_delay(5, 0.0), None);
        let huge = RetryConfig {
            max_attempts: 20,
            ..RetryConfig::default()
        };
        assert_eq!(huge.next_delay(19, 0.0), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn retry_configs_out_of_bounds_name_their_field() {
        assert!(RetryConfig::default().check().is_ok());
        let bad = |config: RetryConfig| config.check().expect_err("out of bounds").0;
        assert_eq!(
            bad(RetryConfig {
                max_attempts: 0,
                ..RetryConfig::default()
            }),
            "retry_config.max_attempts"
        );
        assert_eq!(
            bad(RetryConfig {
                initial_interval_seconds: 10,
                max_interval_seconds: 5,
                ..RetryConfig::default()
            }),
            "retry_config.initial_interval_seconds"
        );
    }

    #[test]
    fn secrets_debug_names_header_names_only() {
        let secrets = WebhookSecrets {
            secret: "whsec_c2VjcmV0".into(),
            headers: BTreeMap::from([("Authorization".into(), "Bearer hidden".into())]),
        };
        let text = format!("{secrets:?}");
        assert!(!text.contains("whsec") && !text.contains("hidden"), "{text}");
        assert_eq!(WebhookSecrets::from_map(&secrets.to_map()), Some(secrets));
    }
}
