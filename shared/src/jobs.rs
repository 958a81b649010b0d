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
