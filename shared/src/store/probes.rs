//! Connector health probes: the [`ProbeStore`] aggregate trait.
//!
//! The scheduler leader lists the connectors to probe; a worker records each
//! probe's outcome beside the users' connection tests (`connector_tests`,
//! `source = 'probe'`) and, in the same transaction, moves the connector to
//! `error` after [`ProbeStore::record_probe`]'s `failure_threshold`
//! consecutive failed probes, and back to `active` on the first probe that
//! succeeds. Health counts a connector's step runs from the execution step
//! records (their config names the connector), so steps cost no extra write.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::TestRecord;
use crate::error::Result;

/// A connector the scheduler probes: its id and organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub connector_uuid: String,
    pub org_id: String,
}

/// What recording a probe did to the connector's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeTransition {
    /// The status stayed as it was.
    Unchanged,
    /// `active` → `error`: the latest `failure_threshold` probes all failed.
    /// (The hook for a `connector.connection_failed` event.)
    Failed,
    /// `error` → `active`: a probe succeeded.
    Recovered,
}

/// Probes of connectors.
#[async_trait]
pub trait ProbeStore: Send + Sync + 'static {
    /// Up to `limit` connectors whose status is `active` or `error` (a
    /// connector in `error` is probed so that it can recover; a disabled one
    /// is not), ordered by uuid, after `after` when given (keyset paging).
    async fn connectors_to_probe(&self, after: Option<&str>, limit: i64) -> Result<Vec<ProbeTarget>>;

    /// Records a probe's outcome (`source = 'probe'`) and applies the status
    /// rule atomically: after `failure_threshold` consecutive failed probes
    /// an `active` connector goes to `error`; a successful probe brings an
    /// `error` connector back to `active`. A disabled or deleted connector's
    /// status is never changed. The connector's probes older than 7 days are
    /// deleted on the way (users' tests are kept).
    async fn record_probe(&self, record: &TestRecord, failure_threshold: u32) -> Result<ProbeTransition>;

    /// How many execution steps using the connector started at or after
    /// `since` (each step run counts once, whatever its retries).
    async fn step_runs_since(&self, connector_uuid: &str, since: DateTime<Utc>) -> Result<u64>;
}
