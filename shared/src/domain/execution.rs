//! Executions: one run of a project's steps. The execution and step records
//! in the metadata store are the truth; a queued job is only a wake-up.
//!
//! Every write by a worker carries the execution's `attempt` (a fencing
//! token): taking an execution bumps it, and a write with an older attempt
//! is rejected, so a paused or slow worker can never overwrite a newer
//! attempt's work.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strum::VariantArray;

use super::ErrorKind;
use super::word::word_enum;

word_enum! {
    /// Execution lifecycle.
    pub enum ExecutionStatus in "lowercase" {
        Queued,
        Running,
        Cancelling,
        Completed,
        Failed,
        Cancelled,
    }
}

impl ExecutionStatus {
    pub const ALL: &'static [ExecutionStatus] = <ExecutionStatus as VariantArray>::VARIANTS;

    /// Completed, failed and cancelled executions never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Completed | ExecutionStatus::Failed | ExecutionStatus::Cancelled
        )
    }
}

word_enum! {
    /// Step status within an execution.
    pub enum StepRunStatus in "lowercase" {
        Pending,
        Running,
        Completed,
        Failed,
        Skipped,
        Cancelled,
    }
}

impl StepRunStatus {
    pub const ALL: &'static [StepRunStatus] = <StepRunStatus as VariantArray>::VARIANTS;
}

word_enum! {
    /// What started an execution.
    pub enum Trigger in "lowercase" {
        Api,
        Schedule,
    }
}

/// A step failure as recorded on the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    #[serde(rename = "type")]
    pub error_type: ErrorKind,
    pub message: String,
}

impl StepError {
    pub fn new(error_type: ErrorKind, message: impl Into<String>) -> Self {
        StepError {
            error_type,
            message: message.into(),
        }
    }
}

/// One step of an execution: the snapshot of the step taken when the
/// execution was created, and how its run went.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRun {
    pub step_id: String,
    /// 1-based position in the execution.
    pub position: i32,
    pub name: String,
    pub step_type: String,
    /// The step's config as it was when the execution was created.
    pub config: Value,
    pub status: StepRunStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub rows_processed: i64,
    pub bytes_written: i64,
    /// Object URL of the step's Parquet result, once uploaded.
    pub output_file: Option<String>,
    /// The multipart upload an earlier attempt opened for the step's result
    /// object and never completed (it died mid-upload): the attempt that
    /// runs the step next aborts it first. Internal, never shown to callers.
    pub open_upload: Option<String>,
    /// How many times a worker started the step: each transient failure
    /// retried, and each resume after a lost worker, counts one more. 0
    /// until it first starts.
    pub attempts: i32,
    /// Why the running step waits before it reads (every slot of its
    /// connector's `max_concurrent_steps` is taken); none once it proceeds.
    pub waiting_reason: Option<String>,
    pub error: Option<StepError>,
}

/// An execution with its steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub execution_id: String,
    pub project_uuid: String,
    pub org_id: String,
    pub status: ExecutionStatus,
    pub trigger: Trigger,
    pub parameters: Map<String, Value>,
    pub notify_on_completion: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Fencing token: bumped each time a worker takes the execution.
    pub attempt: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepRun>,
}

impl Execution {
    pub fn completed_steps(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.status == StepRunStatus::Completed)
            .count()
    }

    pub fn total_rows(&self) -> i64 {
        self.steps.iter().map(|s| s.rows_processed).sum()
    }
}

/// A worker's hold on an execution: who, which attempt, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub execution_id: String,
    pub owner: String,
    pub attempt: i64,
    pub expires_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_triggers_keep_their_words_and_parse_back() {
        let words = |all: Vec<&'static str>| all.join(" ");
        assert_eq!(
            words(ExecutionStatus::ALL.iter().map(|s| s.as_str()).collect()),
            "queued running cancelling completed failed cancelled"
        );
        assert_eq!(
            words(StepRunStatus::ALL.iter().map(|s| s.as_str()).collect()),
            "pending running completed failed skipped cancelled"
        );
        for &status in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(status.as_str()), Some(status));
        }
        for &status in StepRunStatus::ALL {
            assert_eq!(StepRunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(Trigger::parse("schedule"), Some(Trigger::Schedule));
        assert_eq!(Trigger::Api.as_str(), "api");
        assert_eq!(ExecutionStatus::parse("Queued"), None);
        assert_eq!(
            crate::domain::ProjectSort::parse("updated_at"),
            Some(crate::domain::ProjectSort::UpdatedAt)
        );
        assert_eq!(
            crate::domain::Role::parse("owner"),
            Some(crate::domain::Role::Owner)
        );
        assert_eq!(crate::domain::ProjectStatus::Archived.as_str(), "archived");
        assert_eq!(crate::domain::ResourceKind::Connector.as_str(), "connector");
        assert_eq!(crate::domain::SortOrder::Desc.sql(), "DESC");
        assert_eq!(
            crate::error::ErrorCode::PayloadTooLarge.as_str(),
            "payload_too_large"
        );
        assert_eq!(crate::error::ErrorCode::InternalError.as_str(), "internal_error");
    }
}
