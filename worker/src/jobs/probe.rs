//! `probe_connector`: a scheduled health probe of a stored connector.
//!
//! The probe is a connection test through the connector's own pool (the one
//! its steps use, so its `max_connections` holds), recorded in the store as
//! a `probe` beside the users' tests. The store moves the connector to
//! `error` after [`FAILURE_THRESHOLD`] consecutive failed probes and back to
//! `active` on the first success. The job id is one per connector
//! (`probe:<uuid>`), and the queue keeps it until the job is acknowledged,
//! so no two probes of one connector run at once.

use ferry_shared::connectors;
use ferry_shared::domain::{ConnectorStatus, TestRecord};
use ferry_shared::jobs::ProbeConnectorJob;
use ferry_shared::store::ProbeTransition;
use prometheus::{IntCounterVec, Opts, Registry};
use serde_json::Value;

use crate::Shared;
use crate::connectors::ConnectorSpec;
use crate::runtime::JobError;

/// Consecutive failed probes that put an `active` connector in `error`.
pub const FAILURE_THRESHOLD: u32 = 3;

/// `ferry_worker_probes_total{outcome}`: probes run, by `success` or
/// `failure` (the kind of failure is in the store and the logs, not in a
/// label).
#[derive(Clone)]
pub struct ProbeMetrics {
    pub probes: IntCounterVec,
}

impl ProbeMetrics {
    /// Creates the family and registers it in `registry`. A registration
    /// conflict (a second worker on one registry) is logged and the counter
    /// still counts, unexported.
    pub fn new(registry: &Registry) -> Self {
        let probes = IntCounterVec::new(
            Opts::new(
                "ferry_worker_probes_total",
                "Connector health probes this worker ran, by outcome (success or failure)",
            ),
            &["outcome"],
        )
        .expect("a valid metric family");
        if let Err(error) = registry.register(Box::new(probes.clone())) {
            tracing::warn!(%error, "probe metrics not registered");
        }
        for outcome in ["success", "failure"] {
            probes.with_label_values(&[outcome]);
        }
        ProbeMetrics { probes }
    }
}

pub async fn run(shared: &Shared, payload: Value) -> Result<(), JobError> {
    let job: ProbeConnectorJob = serde_json::from_value(payload)
        .map_err(|e| JobError::Abort(format!("malformed probe_connector job: {e}")))?;
    let connector = shared
        .store
        .get_connector(&job.org_id, &job.connector_uuid)
        .await
        .map_err(|e| JobError::Retry(format!("cannot read the connector: {e}")))?;
    let Some(connector) = connector else {
        return Ok(()); // deleted since it was scheduled
    };
    if connector.status == ConnectorStatus::Disabled {
        return Ok(());
    }
    if !connectors::find(&connector.connector_type).is_some_and(connectors::ConnectorType::has_driver) {
        // Nothing to probe with: the type's steps cannot run either.
        return Ok(());
    }
    let outcome = match shared.vault.open(&connector.uuid, &connector.secrets) {
        Ok(secrets) => {
            let spec = ConnectorSpec::new(
                connector.uuid.clone(),
                connector.org_id.clone(),
                connector.connector_type.clone(),
                connector.config_version,
                &connector.config,
                &secrets,
            );
            shared.pools.test(&spec).await
        }
        Err(error) => {
            // Not the connector's fault: a worker without the master key.
            tracing::error!(connector_uuid = %connector.uuid, %error, "cannot open connector secrets to probe it");
            return Err(JobError::Abort("cannot open the connector's secrets".into()));
        }
    };
    let record = TestRecord::from(&outcome);
    let outcome_label = if record.success { "success" } else { "failure" };
    shared.probes.probes.with_label_values(&[outcome_label]).inc();
    shared.metrics.probed(record.success, record.latency_ms);
    let transition = shared
        .store
        .record_probe(&record, FAILURE_THRESHOLD)
        .await
        .map_err(|e| JobError::Retry(format!("cannot record the probe: {e}")))?;
    match transition {
        ProbeTransition::Failed => tracing::warn!(
            connector_uuid = %connector.uuid,
            error_type = record.error_type.as_deref().unwrap_or("unknown"),
            failures = FAILURE_THRESHOLD,
            "connector probes keep failing: status is now error"
        ),
        ProbeTransition::Recovered => {
            tracing::info!(connector_uuid = %connector.uuid, "connector probe succeeded: status is active again");
        }
        ProbeTransition::Unchanged => tracing::debug!(
            connector_uuid = %connector.uuid,
            result = outcome_label,
            latency_ms = record.latency_ms,
            "connector probed"
        ),
    }
    Ok(())
}
