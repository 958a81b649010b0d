//! The step attempts part of the store conformance suite: every start of a
//! step counts one attempt (a retry after a transient failure, a resume by
//! a newer worker attempt), the count survives the step's end, a fenced
//! start counts nothing, and step error kinds read back as stored. The test
//! functions are instantiated for both backends by `conformance!` in the
//! parent module.

use std::sync::Arc;
use std::time::Duration;

use ferry_shared::domain::{
    self, ErrorKind, Execution, ExecutionStatus, Lease, StepError, StepRun, StepRunStatus, Trigger,
};
use ferry_shared::ids::IdKind;
use ferry_shared::store::Store;
use serde_json::{Map, json};

use super::{ALICE, create, output};

const LEASE: Duration = Duration::from_secs(30);

/// Creates a project and a queued execution of it with `steps` SQL steps,
/// and claims it.
async fn claimed_execution(store: &Arc<dyn Store>, steps: i32) -> (Execution, Lease) {
    let project = create(store, "retried", None).await;
    let execution = Execution {
        execution_id: IdKind::Execution.generate(),
        project_uuid: project.uuid.clone(),
        org_id: project.org_id.clone(),
        status: ExecutionStatus::Queued,
        trigger: Trigger::Api,
        parameters: Map::new(),
        notify_on_completion: false,
        created_by: ALICE.to_owned(),
        created_at: domain::now(),
        started_at: None,
        completed_at: None,
        attempt: 0,
        lease_owner: None,
        lease_expires_at: None,
        steps: (1..=steps)
            .map(|position| StepRun {
                step_id: IdKind::Step.generate(),
                position,
                name: format!("step {position}"),
                step_type: "sql_query".to_owned(),
                config: json!({"query": "select 1"}),
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
    };
    store
        .create_execution(&execution)
        .await
        .expect("create execution");
    let lease = store
        .claim_execution(&execution.execution_id, "worker_a", LEASE)
        .await
        .expect("claim")
        .expect("a queued execution is claimed");
    (execution, lease)
}

async fn attempts(store: &Arc<dyn Store>, execution_id: &str) -> Vec<i32> {
    store
        .load_execution(execution_id)
        .await
        .expect("load execution")
        .expect("the execution exists")
        .steps
        .iter()
        .map(|step| step.attempts)
        .collect()
}

pub(super) async fn every_start_of_a_step_counts_one_attempt_and_the_count_outlives_the_step(
    store: Arc<dyn Store>,
) {
    let (execution, lease) = claimed_execution(&store, 2).await;
    let id = &execution.execution_id;
    let (first, second) = (&execution.steps[0].step_id, &execution.steps[1].step_id);
    assert_eq!(attempts(&store, id).await, [0, 0], "no step has started");

    assert!(store.start_step(&lease, first).await.expect("start"));
    assert_eq!(attempts(&store, id).await, [1, 0]);
    // A transient failure: the worker starts the step again.
    assert!(store.start_step(&lease, first).await.expect("start again"));
    assert!(store.start_step(&lease, first).await.expect("start a third time"));
    assert_eq!(attempts(&store, id).await, [3, 0]);
    assert!(
        store
            .complete_step(&lease, first, output(3, 100, "file:///r/1.parquet"))
            .await
            .expect("complete")
    );

    assert!(store.start_step(&lease, second).await.expect("start"));
    let error = StepError::new(ErrorKind::AuthenticationFailed, "password authentication failed");
    assert!(store.fail_step(&lease, second, &error).await.expect("fail"));
    let failed = store.load_execution(id).await.expect("load").expect("exists");
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(failed.steps[0].attempts, 3);
    assert_eq!(failed.steps[0].status, StepRunStatus::Completed);
    assert_eq!(failed.steps[1].attempts, 1);
    assert_eq!(failed.steps[1].error.as_ref(), Some(&error));
}

pub(super) async fn a_fenced_start_counts_no_attempt_and_a_resume_counts_one(store: Arc<dyn Store>) {
    let (execution, lease) = claimed_execution(&store, 1).await;
    let id = &execution.execution_id;
    let step = &execution.steps[0].step_id;
    assert!(store.start_step(&lease, step).await.expect("start"));

    // A write under an older attempt (a worker that lost the execution).
    let stale = Lease {
        attempt: lease.attempt - 1,
        ..lease.clone()
    };
    assert!(!store.start_step(&stale, step).await.expect("fenced start"));
    assert_eq!(attempts(&store, id).await, [1]);

    // The owner starting the step again counts once more.
    assert!(store.start_step(&lease, step).await.expect("start again"));
    assert_eq!(attempts(&store, id).await, [2]);
}
