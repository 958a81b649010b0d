//! Payloads of the jobs the API enqueues for workers, and the bus channels
//! roles talk over. A job is a wake-up carrying what the worker needs; the
//! metadata store stays the source of truth.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::Sealed;

/// Channel on which connector changes are broadcast to every worker, so
/// that each evicts the connector's pools.
pub const CONNECTOR_EVENTS: &str = "connector-events";

/// A `test_connection` job: everything needed to test a connector that may
/// not be stored yet (a create with `test_connection: true`). Secrets travel
/// sealed; only a worker holding the master key opens them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestConnectionJob {
    pub connector_uuid: String,
    /// The connector's organization (empty in jobs queued by an older API;
    /// SQLite connectors then fail with `invalid_config`).
    #[serde(default)]
    pub org_id: String,
    pub connector_type: String,
    pub config_version: i64,
    /// Non-secret fields.
    pub config: Map<String, Value>,
    pub secrets: Sealed,
    /// Bus key the worker replies on with a `TestOutcome`.
    pub reply_to: String,
}

/// A change to a connector that invalidates pooled connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectorEvent {
    pub connector_uuid: String,
    /// `updated`, `disabled`, `deleted`.
    pub change: String,
}

/// Channel of execution events: `cancel` requests (workers stop the
/// execution's query and upload) and `changed` notices (waiters re-read the
/// store).
pub const EXECUTION_EVENTS: &str = "execution-events";

/// An `execute_project` job: the execution to run. Its job id is the
/// execution id, so a duplicate enqueue while one is pending is a no-op.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecuteProjectJob {
    pub execution_id: String,
}

/// Something happened to an execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionEvent {
    pub execution_id: String,
    /// `cancel` or `changed`.
    pub kind: String,
}

/// A `probe_connector` job: a scheduled health probe of a stored connector.
/// The worker reads the connector from the store (it may have changed or
/// been disabled since the scheduler looked).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeConnectorJob {
    pub connector_uuid: String,
    pub org_id: String,
}

impl ProbeConnectorJob {
    /// The job id of a connector's probe: one per connector, so a second
    /// enqueue while a probe is queued or running (the queue keeps the id
    /// until the job is acknowledged) is a no-op, and no two probes of one
    /// connector ever run at once.
    pub fn job_id(connector_uuid: &str) -> String {
        format!("probe:{connector_uuid}")
    }

    /// The queue job carrying this probe.
    pub fn to_job(&self) -> crate::queue::Job {
        crate::queue::Job::with_id(
            Self::job_id(&self.connector_uuid),
            crate::queue::JobKind::ProbeConnector,
            serde_json::json!({"connector_uuid": self.connector_uuid, "org_id": self.org_id}),
        )
    }
}

/// A `deliver_webhook` job: one try of a stored webhook delivery. The
/// worker claims the delivery in the store (which decides whether a try is
/// due), so a duplicate or late job is harmless.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverWebhookJob {
    pub delivery_id: String,
}

impl DeliverWebhookJob {
    /// The queue job carrying this delivery, with the id `webhook:<delivery
    /// id>:<tag>`: the scheduler tags it with the delivery's attempt count,
    /// so a second enqueue for the same try is a no-op while the first is
    /// pending, and the next try gets a job of its own.
    pub fn to_job(&self, tag: &str) -> crate::queue::Job {
        crate::queue::Job::with_id(
            format!("webhook:{}:{tag}", self.delivery_id),
            crate::queue::JobKind::DeliverWebhook,
            serde_json::json!({"delivery_id": self.delivery_id}),
        )
    }
}
