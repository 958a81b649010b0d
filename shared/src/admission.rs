//! Admitting an execution: the one path by which an execution is recorded
//! and its job enqueued, whether `POST /api/projects/{uuid}/execute`
//! started it or a schedule's tick did.
//!
//! The store decides under the project's lock: an archived project is a
//! conflict, and so is a project with an execution already queued, running
//! or cancelling (`Error::Conflict` naming its `execution_id`). Once the
//! execution is recorded, a failed enqueue is only logged: the scheduler's
//! reaper enqueues executions whose job was lost.

use serde_json::{Map, Value};

use crate::domain::{Execution, ExecutionStatus, OrgRole, Step, StepRun, StepRunStatus, Trigger};
use crate::error::{Error, Result};
use crate::ids::IdKind;
use crate::jobs::ExecuteProjectJob;
use crate::queue::{Job, JobKind, Queue};
use crate::store::Store;

/// Who starts which execution of which project.
#[derive(Debug, Clone)]
pub struct Admission {
    pub project_uuid: String,
    pub org_id: String,
    pub trigger: Trigger,
    pub parameters: Map<String, Value>,
    pub notify_on_completion: bool,
    /// The user the execution runs as.
    pub created_by: String,
    /// Their organization role: an admin's execution uses every connector
    /// of the organization as its owner would.
    pub org_role: OrgRole,
}

impl Admission {
    /// The queued execution of `steps` (a snapshot of each).
    pub fn execution(&self, steps: &[Step]) -> Execution {
        Execution {
            execution_id: IdKind::Execution.generate(),
            project_uuid: self.project_uuid.clone(),
            org_id: self.org_id.clone(),
            status: ExecutionStatus::Queued,
            trigger: self.trigger,
            parameters: self.parameters.clone(),
            notify_on_completion: self.notify_on_completion,
            created_by: self.created_by.clone(),
            created_at: crate::domain::now(),
            started_at: None,
            completed_at: None,
            attempt: 0,
            lease_owner: None,
            lease_expires_at: None,
            steps: steps
                .iter()
                .map(|step| StepRun {
                    step_id: step.step_id.clone(),
                    position: step.order,
                    name: step.name.clone(),
                    step_type: step.step_type.as_str().to_owned(),
                    config: step.config.clone(),
                    status: StepRunStatus::Pending,
                    started_at: None,
                    completed_at: None,
                    rows_processed: 0,
                    bytes_written: 0,
                    output_file: None,
                    open_upload: None,
                    attempts: 0,
                    waiting_reason: None,
                    error: None,
                })
                .collect(),
        }
    }
}

/// Records the execution of `steps` that `admission` describes, then
/// enqueues its `execute_project` job (the job id is the execution id).
/// Returns the execution as recorded.
pub async fn admit(
    store: &dyn Store,
    queue: &dyn Queue,
    admission: &Admission,
    steps: &[Step],
) -> Result<Execution> {
    let execution = admission.execution(steps);
    store.create_execution(&execution).await?;
    if admission.org_role == OrgRole::Admin {
        // Before the job is queued, so the worker's grant check (admins act
        // as owner) sees it; unrecorded means member, the strict reading.
        store
            .record_execution_role(&execution.execution_id, OrgRole::Admin)
            .await?;
    }
    let payload = serde_json::to_value(ExecuteProjectJob {
        execution_id: execution.execution_id.clone(),
    })
    .map_err(Error::internal_from)?;
    let job = Job::with_id(execution.execution_id.clone(), JobKind::ExecuteProject, payload);
    if let Err(error) = queue.enqueue(&job).await {
        tracing::warn!(execution_id = %execution.execution_id, %error, "enqueue failed; the reaper will pick the execution up");
    }
    tracing::info!(
        execution_id = %execution.execution_id,
        project_uuid = %execution.project_uuid,
        trigger = execution.trigger.as_str(),
        "execution queued"
    );
    Ok(execution)
}
