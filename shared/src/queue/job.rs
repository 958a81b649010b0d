//! The job envelope carried by every queue: its kind, payload and the
//! delivery wrapper a consumer receives.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a job asks a worker to do. Serialized in snake_case
/// (`test_connection`, `execute_project`, `deliver_webhook`,
/// `probe_connector`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    TestConnection,
    ExecuteProject,
    DeliverWebhook,
    ProbeConnector,
}

impl JobKind {
    /// The serialized name, usable as a bounded metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobKind::TestConnection => "test_connection",
            JobKind::ExecuteProject => "execute_project",
            JobKind::DeliverWebhook => "deliver_webhook",
            JobKind::ProbeConnector => "probe_connector",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A unit of work. A job is only a wake-up: the metadata store decides
/// (attempt fencing), so a job delivered twice must be harmless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id (a ULID unless the caller chose one); a second enqueue of a
    /// pending id is a no-op.
    pub id: String,
    pub kind: JobKind,
    pub payload: Value,
    /// Milliseconds since the Unix epoch when the job was created.
    pub enqueued_at_ms: i64,
}

impl Job {
    /// A job with a fresh ULID id, stamped now.
    pub fn new(kind: JobKind, payload: Value) -> Job {
        Job::with_id(ulid::Ulid::new().to_string(), kind, payload)
    }

    /// A job with a caller-chosen id (for idempotent enqueues: the same id
    /// is delivered once while it is pending).
    pub fn with_id(id: impl Into<String>, kind: JobKind, payload: Value) -> Job {
        Job {
            id: id.into(),
            kind,
            payload,
            enqueued_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }
}

/// A job handed to one consumer, leased to it until acknowledged, touched or
/// reclaimed after the lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub job: Job,
    /// Opaque handle for `ack`, `touch` and `release`.
    pub receipt: String,
    /// Times this job has been delivered, 1 on the first delivery.
    pub attempt: u32,
}
