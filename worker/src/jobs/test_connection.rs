//! `test_connection`: opens the connector's sealed secrets, tests it through
//! its pool, and replies to the waiting API on the bus.

use std::time::Duration;

use ferry_shared::domain::{ErrorKind, TestFailure, TestOutcome};
use ferry_shared::jobs::TestConnectionJob;
use serde_json::Value;

use crate::Shared;
use crate::connectors::ConnectorSpec;
use crate::runtime::JobError;

/// How long a reply waits for an API that has not started listening yet.
const REPLY_TTL: Duration = Duration::from_secs(120);

pub async fn run(shared: &Shared, payload: Value) -> Result<(), JobError> {
    let job: TestConnectionJob = serde_json::from_value(payload)
        .map_err(|e| JobError::Abort(format!("malformed test_connection job: {e}")))?;
    let outcome = match shared.vault.open(&job.connector_uuid, &job.secrets) {
        Ok(secrets) => {
            let spec = ConnectorSpec::new(
                job.connector_uuid.clone(),
                job.org_id.clone(),
                job.connector_type.clone(),
                job.config_version,
                &job.config,
                &secrets,
            );
            shared.pools.test(&spec).await
        }
        Err(error) => {
            tracing::error!(connector_uuid = %job.connector_uuid, %error, "cannot open connector secrets");
            TestOutcome {
                connector_uuid: job.connector_uuid.clone(),
                tested_at: ferry_shared::domain::now(),
                latency_ms: 0,
                version: None,
                server_time: None,
                schemas_available: None,
                error: Some(TestFailure {
                    error_type: ErrorKind::InvalidConfig,
                    message:
                        "the connector's credentials could not be decrypted with the configured master keys"
                            .into(),
                    code: None,
                }),
            }
        }
    };
    if outcome.error.is_some() {
        // A failed test leaves no pool behind (the connector may never be stored).
        shared.pools.evict(&job.connector_uuid);
    }
    tracing::info!(
        connector_uuid = %job.connector_uuid,
        connector_type = %job.connector_type,
        result = outcome.status().as_str(),
        latency_ms = outcome.latency_ms,
        "connection tested"
    );
    let value = serde_json::to_value(&outcome).map_err(|e| JobError::Abort(e.to_string()))?;
    shared
        .bus
        .reply(&job.reply_to, &value, REPLY_TTL)
        .await
        .map_err(|e| JobError::Retry(format!("cannot reply: {e}")))
}
