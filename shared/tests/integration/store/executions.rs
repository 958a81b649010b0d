//! The executions part of the store conformance suite: creation under the
//! one-in-progress rule, leases and attempt fencing, step transitions,
//! cancellation and the reaper's query. The test functions are instantiated
//! for both backends by `conformance!` in the parent module.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_shared::Error;
use ferry_shared::domain::{
    self, ErrorKind, Execution, ExecutionStatus, Lease, PageRequest, Project, ProjectStatus, StepError,
    StepRun, StepRunStatus, Trigger,
};
use ferry_shared::ids::IdKind;
use ferry_shared::store::Store;
use serde_json::{Map, Value, json};

use super::{ALICE, ORG, OTHER_ORG, create, fetch_project, new_project, output};

const LEASE: Duration = Duration::from_secs(30);
const WORKER_A: &str = "worker_a";
const WORKER_B: &str = "worker_b";

// ---------------------------------------------------------------- helpers

/// A step snapshot of `count` SQL steps reading through `connector_uuid`.
fn snapshot(count: usize, connector_uuid: &str) -> Vec<StepRun> {
    (1..=count)
        .map(|position| StepRun {
            step_id: IdKind::Step.generate(),
            position: i32::try_from(position).expect("small position"),
            name: format!("step {position}"),
            step_type: "sql".to_owned(),
            config: json!({
                "connector_uuid": connector_uuid,
                "query": format!("select {position} where day = {{{{start_date}}}}"),
                "options": {"fetch_size": 1000, "tags": ["ü", null]},
            }),
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
        .collect()
}

/// A queued execution of `project` created now, with `steps` steps.
fn queued(project: &Project, steps: usize) -> Execution {
    Execution {
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
        steps: snapshot(steps, &IdKind::Connector.generate()),
    }
}

/// Creates a project and a queued execution of it with `steps` steps.
async fn executing(store: &Arc<dyn Store>, steps: usize) -> Execution {
    let project = create(store, "executed", None).await;
    let execution = queued(&project, steps);
    store
        .create_execution(&execution)
        .await
        .expect("create execution");
    execution
}

async fn load(store: &Arc<dyn Store>, execution_id: &str) -> Execution {
    store
        .load_execution(execution_id)
        .await
        .expect("load execution")
        .expect("the execution exists")
}

async fn claim(
    store: &Arc<dyn Store>,
    execution_id: &str,
    owner: &str,
    lease_for: Duration,
) -> Option<Lease> {
    store
        .claim_execution(execution_id, owner, lease_for)
        .await
        .expect("claim execution")
}

/// Creates an execution and claims it for worker A.
async fn claimed(store: &Arc<dyn Store>, steps: usize) -> (Execution, Lease) {
    let execution = executing(store, steps).await;
    let lease = claim(store, &execution.execution_id, WORKER_A, LEASE)
        .await
        .expect("a queued execution is claimed");
    (execution, lease)
}

fn step_status(execution: &Execution) -> Vec<StepRunStatus> {
    execution.steps.iter().map(|step| step.status).collect()
}

fn conflict_execution_id(error: Error) -> Option<Value> {
    match error {
        Error::Conflict { message, extra } => {
            assert_eq!(message, "Project is already executing");
            extra.get("execution_id").cloned()
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn assert_recent(time: Option<DateTime<Utc>>, before: DateTime<Utc>) {
    let time = time.expect("a time is set");
    assert!(time >= before && time <= domain::now(), "{time} is not recent");
}

// ---------------------------------------------------------------- creation

pub(super) async fn created_execution_reads_back_with_its_step_snapshot_and_every_field_equal(
    store: Arc<dyn Store>,
) {
    let project = create(&store, "snapshot", None).await;
    let mut execution = queued(&project, 3);
    execution.trigger = Trigger::Schedule;
    execution.notify_on_completion = true;
    execution.parameters = json!({"start_date": "2025-01-01", "limit": 10, "nested": {"a": [1, "é"]}})
        .as_object()
        .expect("an object")
        .clone();
    store
        .create_execution(&execution)
        .await
        .expect("create execution");

    let read = store
        .get_execution(ORG, &project.uuid, &execution.execution_id)
        .await
        .expect("get execution");
    assert_eq!(read.as_ref(), Some(&execution));
    assert_eq!(load(&store, &execution.execution_id).await, execution);

    for (org_id, project_uuid) in [(OTHER_ORG, project.uuid.as_str()), (ORG, "proj_other")] {
        let hidden = store
            .get_execution(org_id, project_uuid, &execution.execution_id)
            .await
            .expect("get execution");
        assert_eq!(hidden, None, "{org_id}/{project_uuid}");
    }
    let missing = IdKind::Execution.generate();
    assert_eq!(store.load_execution(&missing).await.expect("load"), None);
}

pub(super) async fn an_execution_without_steps_reads_back_with_no_steps(store: Arc<dyn Store>) {
    let execution = executing(&store, 0).await;
    assert_eq!(load(&store, &execution.execution_id).await, execution);
}

pub(super) async fn creating_an_execution_makes_the_project_active_with_last_executed_at(
    store: Arc<dyn Store>,
) {
    let project = create(&store, "draft until executed", None).await;
    assert_eq!(project.status, ProjectStatus::Draft);
    let execution = queued(&project, 1);
    store
        .create_execution(&execution)
        .await
        .expect("create execution");

    let after = fetch_project(&store, ORG, &project.uuid).await.expect("project");
    assert_eq!(after.status, ProjectStatus::Active);
    assert_eq!(after.last_executed_at, Some(execution.created_at));
    assert_eq!(after.updated_at, project.updated_at, "executing is not an edit");
}

pub(super) async fn creating_an_execution_of_a_missing_project_is_not_found(store: Arc<dyn Store>) {
    let project = new_project(ORG, ALICE, "never stored", None);
    match store.create_execution(&queued(&project, 1)).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("expected not found, got {other:?}"),
    }
}

pub(super) async fn a_second_execution_in_progress_is_a_conflict_naming_the_first(store: Arc<dyn Store>) {
    let first = executing(&store, 2).await;
    let project = fetch_project(&store, ORG, &first.project_uuid)
        .await
        .expect("project");
    let second = queued(&project, 2);
    let error = store
        .create_execution(&second)
        .await
        .expect_err("a second one is refused");
    assert_eq!(conflict_execution_id(error), Some(json!(first.execution_id)));
    assert_eq!(
        store.load_execution(&second.execution_id).await.expect("load"),
        None
    );
    assert_eq!(
        store.active_execution(&project.uuid).await.expect("active"),
        Some(first.execution_id.clone())
    );

    // Still refused while the first one runs or is being cancelled.
    claim(&store, &first.execution_id, WORKER_A, LEASE)
        .await
        .expect("claim");
    let error = store
        .create_execution(&queued(&project, 1))
        .await
        .expect_err("refused while running");
    assert_eq!(conflict_execution_id(error), Some(json!(first.execution_id)));
    store
        .request_cancel(ORG, &project.uuid, &first.execution_id)
        .await
        .expect("cancel");
    let error = store
        .create_execution(&queued(&project, 1))
        .await
        .expect_err("refused while cancelling");
    assert_eq!(conflict_execution_id(error), Some(json!(first.execution_id)));

    // Another project is not concerned.
    let other = create(&store, "other", None).await;
    store
        .create_execution(&queued(&other, 1))
        .await
        .expect("another project executes");
}

pub(super) async fn concurrent_creates_for_one_project_never_both_succeed(store: Arc<dyn Store>) {
    for _ in 0..5 {
        let project = create(&store, "raced", None).await;
        let (one, two) = (queued(&project, 2), queued(&project, 2));
        let (first, second) = tokio::join!(store.create_execution(&one), store.create_execution(&two));
        let (winner, error) = match (first, second) {
            (Ok(()), Err(error)) => (&one, error),
            (Err(error), Ok(())) => (&two, error),
            (first, second) => panic!("exactly one create succeeds: {first:?} / {second:?}"),
        };
        assert_eq!(conflict_execution_id(error), Some(json!(winner.execution_id)));
        assert_eq!(
            store.active_execution(&project.uuid).await.expect("active"),
            Some(winner.execution_id.clone())
        );
    }
}

pub(super) async fn after_the_execution_in_progress_ends_a_new_one_is_accepted(store: Arc<dyn Store>) {
    let (first, lease) = claimed(&store, 1).await;
    let project = fetch_project(&store, ORG, &first.project_uuid)
        .await
        .expect("project");
    assert!(
        store
            .finish_execution(&lease, ExecutionStatus::Completed)
            .await
            .expect("finish")
    );
    assert_eq!(store.active_execution(&project.uuid).await.expect("active"), None);
    let second = queued(&project, 1);
    store
        .create_execution(&second)
        .await
        .expect("accepted after completion");

    store
        .request_cancel(ORG, &project.uuid, &second.execution_id)
        .await
        .expect("cancel");
    let third = queued(&project, 1);
    store
        .create_execution(&third)
        .await
        .expect("accepted after a cancel");
    assert_eq!(
        store.active_execution(&project.uuid).await.expect("active"),
        Some(third.execution_id)
    );
}

pub(super) async fn creating_an_execution_with_an_existing_id_is_a_conflict(store: Arc<dyn Store>) {
    let (first, lease) = claimed(&store, 1).await;
    assert!(
        store
            .finish_execution(&lease, ExecutionStatus::Completed)
            .await
            .expect("finish")
    );
    match store.create_execution(&first).await {
        Err(Error::Conflict { extra, .. }) => assert!(extra.get("execution_id").is_none()),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

pub(super) async fn executions_list_newest_first_then_by_id_in_pages_with_the_total(store: Arc<dyn Store>) {
    let project = create(&store, "history", None).await;
    let base = domain::now();
    let mut ids = Vec::new();
    // Five executions, one after the other; the last two share created_at.
    for (index, offset) in [0, 1, 2, 3, 3].into_iter().enumerate() {
        let mut execution = queued(&project, index);
        execution.created_at = base + chrono::Duration::seconds(offset);
        store
            .create_execution(&execution)
            .await
            .expect("create execution");
        let lease = claim(&store, &execution.execution_id, WORKER_A, LEASE)
            .await
            .expect("claim");
        assert!(
            store
                .finish_execution(&lease, ExecutionStatus::Completed)
                .await
                .expect("finish")
        );
        ids.push((execution.created_at, execution.execution_id));
    }
    ids.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = ids.into_iter().map(|(_, id)| id).collect();

    let mut listed = Vec::new();
    for page in 1..=3 {
        let result = store
            .list_executions(&project.uuid, PageRequest { page, limit: 2 })
            .await
            .expect("list executions");
        assert_eq!(result.total, 5);
        for execution in &result.items {
            assert_eq!(
                execution,
                &load(&store, &execution.execution_id).await,
                "listed with its steps"
            );
        }
        listed.extend(result.items.into_iter().map(|execution| execution.execution_id));
    }
    assert_eq!(listed, expected);

    let other = create(&store, "never executed", None).await;
    let empty = store
        .list_executions(&other.uuid, PageRequest { page: 1, limit: 10 })
        .await
        .expect("list executions");
    assert_eq!((empty.total, empty.items.len()), (0, 0));
}

pub(super) async fn deleting_a_project_removes_its_executions(store: Arc<dyn Store>) {
    let (execution, _lease) = claimed(&store, 2).await;
    assert!(
        store
            .delete_project(ORG, &execution.project_uuid)
            .await
            .expect("delete project")
    );
    assert_eq!(
        store.load_execution(&execution.execution_id).await.expect("load"),
        None
    );
    assert_eq!(
        store
            .active_execution(&execution.project_uuid)
            .await
            .expect("active"),
        None
    );
}

// ---------------------------------------------------------------- leases

pub(super) async fn claiming_bumps_the_attempt_and_moves_queued_to_running(store: Arc<dyn Store>) {
    let before = domain::now();
    let (execution, lease) = claimed(&store, 2).await;
    assert_eq!(lease.execution_id, execution.execution_id);
    assert_eq!(lease.owner, WORKER_A);
    assert_eq!(lease.attempt, 1);
    let expected_expiry = before + chrono::Duration::from_std(LEASE).expect("lease");
    assert!(
        lease.expires_at >= expected_expiry
            && lease.expires_at <= domain::now() + chrono::Duration::seconds(30)
    );

    let read = load(&store, &execution.execution_id).await;
    assert_eq!(read.status, ExecutionStatus::Running);
    assert_eq!(read.attempt, 1);
    assert_eq!(read.lease_owner.as_deref(), Some(WORKER_A));
    assert_eq!(read.lease_expires_at, Some(lease.expires_at));
    assert_recent(read.started_at, before);
    assert_eq!(
        step_status(&read),
        [StepRunStatus::Pending, StepRunStatus::Pending]
    );
}

pub(super) async fn a_second_claim_while_the_lease_is_live_is_none(store: Arc<dyn Store>) {
    let (execution, lease) = claimed(&store, 1).await;
    assert_eq!(
        claim(&store, &execution.execution_id, WORKER_B, LEASE).await,
        None
    );
    assert_eq!(
        claim(&store, &execution.execution_id, WORKER_A, LEASE).await,
        None,
        "even by its owner"
    );
    let read = load(&store, &execution.execution_id).await;
    assert_eq!((read.attempt, read.lease_owner.as_deref()), (1, Some(WORKER_A)));
    assert_eq!(read.lease_expires_at, Some(lease.expires_at));
}

pub(super) async fn concurrent_claims_never_both_succeed(store: Arc<dyn Store>) {
    for _ in 0..5 {
        let execution = executing(&store, 1).await;
        let (a, b) = tokio::join!(
            store.claim_execution(&execution.execution_id, WORKER_A, LEASE),
            store.claim_execution(&execution.execution_id, WORKER_B, LEASE),
        );
        let (a, b) = (a.expect("claim a"), b.expect("claim b"));
        let winner = match (a, b) {
            (Some(lease), None) | (None, Some(lease)) => lease,
            (a, b) => panic!("exactly one claim succeeds: {a:?} / {b:?}"),
        };
        assert_eq!(winner.attempt, 1);
        let read = load(&store, &execution.execution_id).await;
        assert_eq!(read.attempt, 1);
        assert_eq!(read.lease_owner, Some(winner.owner));
    }
}

pub(super) async fn after_the_lease_expires_another_owner_claims_and_the_old_lease_is_fenced_out(
    store: Arc<dyn Store>,
) {
    let execution = executing(&store, 2).await;
    let first_step = execution.steps[0].step_id.clone();
    let old = claim(&store, &execution.execution_id, WORKER_A, Duration::from_secs(1))
        .await
        .expect("claim");
    assert!(store.start_step(&old, &first_step).await.expect("start"));
    assert!(
        store
            .step_progress(&old, &first_step, 10, 100)
            .await
            .expect("progress")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let new = claim(&store, &execution.execution_id, WORKER_B, LEASE)
        .await
        .expect("an expired lease is taken over");
    assert_eq!(new.attempt, old.attempt + 1);
    assert_eq!(new.owner, WORKER_B);
    let taken = load(&store, &execution.execution_id).await;
    assert_eq!(taken.status, ExecutionStatus::Running);
    assert_eq!(taken.attempt, 2);
    assert_eq!(taken.lease_owner.as_deref(), Some(WORKER_B));

    // Every write by the old attempt is rejected and changes nothing.
    let error = StepError {
        error_type: ErrorKind::Timeout,
        message: "stale".to_owned(),
    };
    assert!(!store.start_step(&old, &first_step).await.expect("start"));
    assert!(
        !store
            .step_progress(&old, &first_step, 99, 999)
            .await
            .expect("progress")
    );
    assert!(
        !store
            .complete_step(&old, &first_step, output(1, 2, "file:///stale"))
            .await
            .expect("complete")
    );
    assert!(!store.fail_step(&old, &first_step, &error).await.expect("fail"));
    assert_eq!(store.renew_lease(&old, LEASE).await.expect("renew"), None);
    assert!(
        !store
            .finish_execution(&old, ExecutionStatus::Completed)
            .await
            .expect("finish")
    );
    assert!(
        !store
            .finish_execution(&old, ExecutionStatus::Cancelled)
            .await
            .expect("finish")
    );
    assert_eq!(load(&store, &execution.execution_id).await, taken);

    // The new attempt resumes the step from the start.
    let before = domain::now();
    assert!(store.start_step(&new, &first_step).await.expect("start"));
    let resumed = load(&store, &execution.execution_id).await;
    assert_eq!(resumed.steps[0].status, StepRunStatus::Running);
    assert_eq!(
        (resumed.steps[0].rows_processed, resumed.steps[0].bytes_written),
        (0, 0)
    );
    assert_recent(resumed.steps[0].started_at, before);
}

pub(super) async fn an_open_upload_outlives_its_attempt_until_aborted_or_completed(store: Arc<dyn Store>) {
    let execution = executing(&store, 1).await;
    let step = execution.steps[0].step_id.clone();
    let old = claim(&store, &execution.execution_id, WORKER_A, Duration::from_secs(1))
        .await
        .expect("claim");
    assert!(store.start_step(&old, &step).await.expect("start"));
    assert!(
        store
            .record_step_upload(&old, &step, Some("upload-1"))
            .await
            .expect("record")
    );
    let recorded = load(&store, &execution.execution_id).await;
    assert_eq!(recorded.steps[0].open_upload.as_deref(), Some("upload-1"));

    // The attempt dies; the next one finds the upload on the step, and a
    // fresh start of the step keeps it until it is aborted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new = claim(&store, &execution.execution_id, WORKER_B, LEASE)
        .await
        .expect("an expired lease is taken over");
    let taken = load(&store, &execution.execution_id).await;
    assert_eq!(taken.steps[0].open_upload.as_deref(), Some("upload-1"));
    assert!(store.start_step(&new, &step).await.expect("start"));
    assert_eq!(
        load(&store, &execution.execution_id).await.steps[0]
            .open_upload
            .as_deref(),
        Some("upload-1")
    );

    // The old attempt can neither record nor clear anything any more.
    assert!(
        !store
            .record_step_upload(&old, &step, Some("upload-stale"))
            .await
            .expect("record")
    );
    assert!(!store.record_step_upload(&old, &step, None).await.expect("clear"));
    assert_eq!(
        load(&store, &execution.execution_id).await.steps[0]
            .open_upload
            .as_deref(),
        Some("upload-1")
    );

    assert!(store.record_step_upload(&new, &step, None).await.expect("clear"));
    assert_eq!(
        load(&store, &execution.execution_id).await.steps[0].open_upload,
        None
    );
    assert!(
        store
            .record_step_upload(&new, &step, Some("upload-2"))
            .await
            .expect("record")
    );
    assert!(
        store
            .complete_step(&new, &step, output(3, 30, "s3://bucket/x.parquet"))
            .await
            .expect("complete")
    );
    let done = load(&store, &execution.execution_id).await;
    assert_eq!(done.steps[0].status, StepRunStatus::Completed);
    assert_eq!(done.steps[0].open_upload, None, "completing clears it");
    assert!(
        !store
            .record_step_upload(&new, "stp_missing", Some("x"))
            .await
            .expect("record"),
        "an unknown step records nothing"
    );
}

pub(super) async fn renewing_extends_the_lease_and_reports_cancelling_after_a_cancel_request(
    store: Arc<dyn Store>,
) {
    let (execution, lease) = claimed(&store, 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        store
            .renew_lease(&lease, Duration::from_secs(60))
            .await
            .expect("renew"),
        Some(ExecutionStatus::Running)
    );
    let renewed = load(&store, &execution.execution_id).await;
    let expiry = renewed.lease_expires_at.expect("leased");
    assert!(
        expiry > lease.expires_at + chrono::Duration::seconds(29),
        "extended to about now + 60 s"
    );
    assert_eq!(
        (renewed.attempt, renewed.lease_owner.as_deref()),
        (1, Some(WORKER_A))
    );

    let cancelling = store
        .request_cancel(ORG, &execution.project_uuid, &execution.execution_id)
        .await
        .expect("cancel")
        .expect("the execution exists");
    assert_eq!(cancelling.status, ExecutionStatus::Cancelling);
    assert_eq!(
        store.renew_lease(&lease, LEASE).await.expect("renew"),
        Some(ExecutionStatus::Cancelling)
    );

    assert!(
        store
            .finish_execution(&lease, ExecutionStatus::Cancelled)
            .await
            .expect("finish")
    );
    assert_eq!(
        store.renew_lease(&lease, LEASE).await.expect("renew"),
        None,
        "terminal"
    );
}

pub(super) async fn claiming_a_terminal_or_missing_execution_is_none(store: Arc<dyn Store>) {
    assert_eq!(
        claim(&store, &IdKind::Execution.generate(), WORKER_A, LEASE).await,
        None
    );

    let (execution, lease) = claimed(&store, 1).await;
    assert!(
        store
            .finish_execution(&lease, ExecutionStatus::Completed)
            .await
            .expect("finish")
    );
    assert_eq!(
        claim(&store, &execution.execution_id, WORKER_B, LEASE).await,
        None
    );

    let cancelled = executing(&store, 1).await;
    store
        .request_cancel(ORG, &cancelled.project_uuid, &cancelled.execution_id)
        .await
        .expect("cancel");
    assert_eq!(
        claim(&store, &cancelled.execution_id, WORKER_B, LEASE).await,
        None
    );
    assert_eq!(load(&store, &cancelled.execution_id).await.attempt, 0);
}

// ---------------------------------------------------------------- steps

pub(super) async fn completing_steps_records_progress_totals_and_output_and_finishing_completes(
    store: Arc<dyn Store>,
) {
    let (execution, lease) = claimed(&store, 2).await;
    let (first, second) = (&execution.steps[0].step_id, &execution.steps[1].step_id);

    assert!(
        !store.step_progress(&lease, first, 1, 1).await.expect("progress"),
        "no progress on a pending step"
    );
    let before = domain::now();
    assert!(store.start_step(&lease, first).await.expect("start"));
    let started = load(&store, &execution.execution_id).await;
    assert_eq!(
        step_status(&started),
        [StepRunStatus::Running, StepRunStatus::Pending]
    );
    assert_recent(started.steps[0].started_at, before);
    assert_eq!(started.steps[0].completed_at, None);

    assert!(
        store
            .step_progress(&lease, first, 500, 4096)
            .await
            .expect("progress")
    );
    let progressed = load(&store, &execution.execution_id).await;
    assert_eq!(
        (
            progressed.steps[0].rows_processed,
            progressed.steps[0].bytes_written
        ),
        (500, 4096)
    );

    let first_file = format!("file:///data/results/{}/{first}.parquet", execution.execution_id);
    assert!(
        store
            .complete_step(&lease, first, output(1500, 8192, &first_file))
            .await
            .expect("complete")
    );
    assert!(store.start_step(&lease, second).await.expect("start"));
    assert!(
        store
            .complete_step(&lease, second, output(7, 64, "file:///second"))
            .await
            .expect("complete")
    );
    let done = load(&store, &execution.execution_id).await;
    assert_eq!(
        step_status(&done),
        [StepRunStatus::Completed, StepRunStatus::Completed]
    );
    let step = &done.steps[0];
    assert_eq!((step.rows_processed, step.bytes_written), (1500, 8192));
    assert_eq!(step.output_file.as_deref(), Some(first_file.as_str()));
    assert_eq!(step.started_at, started.steps[0].started_at);
    assert!(step.completed_at.expect("completed") >= step.started_at.expect("started"));
    assert_eq!(
        done.status,
        ExecutionStatus::Running,
        "steps alone do not end the execution"
    );
    assert_eq!(done.total_rows(), 1507);

    let before = domain::now();
    assert!(
        store
            .finish_execution(&lease, ExecutionStatus::Completed)
            .await
            .expect("finish")
    );
    let finished = load(&store, &execution.execution_id).await;
    assert_eq!(finished.status, ExecutionStatus::Completed);
    assert_recent(finished.completed_at, before);
    assert_eq!(
        (finished.lease_owner.as_deref(), finished.lease_expires_at),
        (None, None),
        "lease released"
    );
    assert_eq!(finished.attempt, 1);
    assert_eq!(finished.steps, done.steps);
    assert!(
        !store.start_step(&lease, first).await.expect("start"),
        "terminal executions are fenced"
    );
}

pub(super) async fn a_step_missing_from_the_execution_is_refused(store: Arc<dyn Store>) {
    let (execution, lease) = claimed(&store, 1).await;
    let missing = IdKind::Step.generate();
    assert!(!store.start_step(&lease, &missing).await.expect("start"));
    assert!(
        !store
            .complete_step(&lease, &missing, output(1, 1, "file:///x"))
            .await
            .expect("complete")
    );
    let error = StepError {
        error_type: ErrorKind::Internal,
        message: "no such step".to_owned(),
    };
    assert!(!store.fail_step(&lease, &missing, &error).await.expect("fail"));
    assert_eq!(
        load(&store, &execution.execution_id).await.status,
        ExecutionStatus::Running
    );
}

pub(super) async fn failing_a_step_skips_the_later_steps_and_fails_the_execution(store: Arc<dyn Store>) {
    let (execution, lease) = claimed(&store, 4).await;
    let ids: Vec<&str> = execution.steps.iter().map(|step| step.step_id.as_str()).collect();
    assert!(store.start_step(&lease, ids[0]).await.expect("start"));
    assert!(
        store
            .complete_step(&lease, ids[0], output(3, 30, "file:///one"))
            .await
            .expect("complete")
    );
    assert!(store.start_step(&lease, ids[1]).await.expect("start"));
    assert!(
        store
            .step_progress(&lease, ids[1], 2, 20)
            .await
            .expect("progress")
    );

    let error = StepError {
        error_type: ErrorKind::InvalidQuery,
        message: "relation \"sales\" does not exist".to_owned(),
    };
    let before = domain::now();
    assert!(store.fail_step(&lease, ids[1], &error).await.expect("fail"));
    let failed = load(&store, &execution.execution_id).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_recent(failed.completed_at, before);
    assert_eq!(
        (failed.lease_owner.as_deref(), failed.lease_expires_at),
        (None, None),
        "lease released"
    );
    assert_eq!(
        step_status(&failed),
        [
            StepRunStatus::Completed,
            StepRunStatus::Failed,
            StepRunStatus::Skipped,
            StepRunStatus::Skipped
        ]
    );
    assert_eq!(failed.steps[1].error.as_ref(), Some(&error));
    assert_recent(failed.steps[1].completed_at, before);
    assert_eq!(failed.steps[1].rows_processed, 2, "progress so far is kept");
    assert_eq!(failed.steps[0].error, None);
    assert_eq!(
        (failed.steps[2].started_at, failed.steps[2].completed_at),
        (None, None)
    );
    assert!(
        !store.start_step(&lease, ids[2]).await.expect("start"),
        "a failed execution is fenced"
    );
}

pub(super) async fn finishing_as_cancelled_cancels_the_running_step_and_skips_the_pending_ones(
    store: Arc<dyn Store>,
) {
    let (execution, lease) = claimed(&store, 3).await;
    let ids: Vec<&str> = execution.steps.iter().map(|step| step.step_id.as_str()).collect();
    assert!(store.start_step(&lease, ids[0]).await.expect("start"));
    assert!(
        store
            .complete_step(&lease, ids[0], output(1, 1, "file:///one"))
            .await
            .expect("complete")
    );
    assert!(store.start_step(&lease, ids[1]).await.expect("start"));
    store
        .request_cancel(ORG, &execution.project_uuid, &execution.execution_id)
        .await
        .expect("cancel");

    let before = domain::now();
    assert!(
        store
            .finish_execution(&lease, ExecutionStatus::Cancelled)
            .await
            .expect("finish")
    );
    let cancelled = load(&store, &execution.execution_id).await;
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert_recent(cancelled.completed_at, before);
    assert_eq!(
        (cancelled.lease_owner.as_deref(), cancelled.lease_expires_at),
        (None, None)
    );
    assert_eq!(
        step_status(&cancelled),
        [
            StepRunStatus::Completed,
            StepRunStatus::Cancelled,
            StepRunStatus::Skipped
        ]
    );
    assert_recent(cancelled.steps[1].completed_at, before);
    assert_eq!(cancelled.steps[2].completed_at, None);
}

pub(super) async fn finishing_with_a_status_other_than_completed_or_cancelled_is_an_error(
    store: Arc<dyn Store>,
) {
    let (execution, lease) = claimed(&store, 1).await;
    for status in [
        ExecutionStatus::Failed,
        ExecutionStatus::Running,
        ExecutionStatus::Queued,
    ] {
        assert!(
            store.finish_execution(&lease, status).await.is_err(),
            "{status:?}"
        );
    }
    assert_eq!(
        load(&store, &execution.execution_id).await.status,
        ExecutionStatus::Running
    );
}

// ---------------------------------------------------------------- cancel

pub(super) async fn cancelling_a_queued_execution_cancels_it_at_once(store: Arc<dyn Store>) {
    let execution = executing(&store, 2).await;
    let before = domain::now();
    let cancelled = store
        .request_cancel(ORG, &execution.project_uuid, &execution.execution_id)
        .await
        .expect("cancel")
        .expect("the execution exists");
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert_recent(cancelled.completed_at, before);
    assert_eq!(
        step_status(&cancelled),
        [StepRunStatus::Cancelled, StepRunStatus::Cancelled]
    );
    assert_eq!(cancelled, load(&store, &execution.execution_id).await);
    assert_eq!(
        store
            .active_execution(&execution.project_uuid)
            .await
            .expect("active"),
        None
    );
}

pub(super) async fn cancelling_a_running_execution_asks_its_worker_and_a_finished_one_is_a_conflict(
    store: Arc<dyn Store>,
) {
    let (execution, lease) = claimed(&store, 1).await;
    for _ in 0..2 {
        let cancelling = store
            .request_cancel(ORG, &execution.project_uuid, &execution.execution_id)
            .await
            .expect("cancel")
            .expect("the execution exists");
        assert_eq!(cancelling.status, ExecutionStatus::Cancelling);
        assert_eq!(cancelling.completed_at, None);
        assert_eq!(
            cancelling.lease_owner.as_deref(),
            Some(WORKER_A),
            "the worker keeps its lease"
        );
    }
    assert!(
        store
            .finish_execution(&lease, ExecutionStatus::Cancelled)
            .await
            .expect("finish")
    );
    match store
        .request_cancel(ORG, &execution.project_uuid, &execution.execution_id)
        .await
    {
        Err(Error::Conflict { message, .. }) => assert_eq!(message, "Execution already finished"),
        other => panic!("expected a conflict, got {other:?}"),
    }

    for (org_id, project_uuid, execution_id) in [
        (
            OTHER_ORG,
            execution.project_uuid.as_str(),
            execution.execution_id.as_str(),
        ),
        (ORG, "proj_other", execution.execution_id.as_str()),
        (ORG, execution.project_uuid.as_str(), "exec_missing"),
    ] {
        let found = store
            .request_cancel(org_id, project_uuid, execution_id)
            .await
            .expect("cancel");
        assert_eq!(found, None, "{org_id}/{project_uuid}/{execution_id}");
    }
}

// ---------------------------------------------------------------- reaper

pub(super) async fn executions_to_reap_are_expired_leases_and_stale_queued_ones_not_live_ones(
    store: Arc<dyn Store>,
) {
    let now = domain::now();
    // Queued ten minutes ago, never taken: its job may be lost.
    let project = create(&store, "stale", None).await;
    let mut stale = queued(&project, 1);
    stale.created_at = now - chrono::Duration::minutes(10);
    store.create_execution(&stale).await.expect("create");
    // Queued just now: its job is surely still in the queue.
    let fresh = executing(&store, 1).await;
    // Taken with a live lease.
    let (live, _live_lease) = claimed(&store, 1).await;
    // Taken with a lease that has run out.
    let expired = executing(&store, 1).await;
    claim(&store, &expired.execution_id, WORKER_A, Duration::from_secs(1))
        .await
        .expect("claim");
    // Finished.
    let (finished, finished_lease) = claimed(&store, 1).await;
    assert!(
        store
            .finish_execution(&finished_lease, ExecutionStatus::Completed)
            .await
            .expect("finish")
    );

    let later = domain::now() + chrono::Duration::seconds(5);
    let queued_before = later - chrono::Duration::minutes(1);
    let reap = store
        .executions_to_reap(later, queued_before, 500)
        .await
        .expect("executions to reap");
    assert_eq!(
        reap,
        [stale.execution_id.clone(), expired.execution_id.clone()],
        "oldest first"
    );
    for untouched in [&fresh, &live, &finished] {
        assert!(!reap.contains(&untouched.execution_id));
    }
    let limited = store
        .executions_to_reap(later, queued_before, 1)
        .await
        .expect("executions to reap");
    assert_eq!(limited, [stale.execution_id.clone()]);

    // Nothing has expired yet at the real now.
    let current = store
        .executions_to_reap(domain::now(), queued_before, 500)
        .await
        .expect("executions to reap");
    assert_eq!(current, [stale.execution_id]);
}

pub(super) async fn active_executions_using_counts_executions_in_progress_naming_the_connector(
    store: Arc<dyn Store>,
) {
    let connector = IdKind::Connector.generate();
    let naming = |project: &Project| {
        let mut execution = queued(project, 2);
        execution.steps[1].config = json!({"connector_uuid": connector, "query": "select 1"});
        execution
    };
    assert_eq!(
        store
            .active_executions_using(ORG, &connector)
            .await
            .expect("count"),
        0
    );

    // Queued and running executions naming it count.
    let queued_one = create(&store, "queued", None).await;
    store
        .create_execution(&naming(&queued_one))
        .await
        .expect("create");
    let running = create(&store, "running", None).await;
    let running_execution = naming(&running);
    store.create_execution(&running_execution).await.expect("create");
    claim(&store, &running_execution.execution_id, WORKER_A, LEASE)
        .await
        .expect("claim");
    // Finished executions and executions naming another connector do not.
    let finished = create(&store, "finished", None).await;
    let finished_execution = naming(&finished);
    store.create_execution(&finished_execution).await.expect("create");
    let lease = claim(&store, &finished_execution.execution_id, WORKER_A, LEASE)
        .await
        .expect("claim");
    assert!(
        store
            .finish_execution(&lease, ExecutionStatus::Completed)
            .await
            .expect("finish")
    );
    executing(&store, 3).await;
    // Nor do another organization's.
    let foreign = new_project(OTHER_ORG, ALICE, "foreign", None);
    store.create_project(&foreign).await.expect("create project");
    store.create_execution(&naming(&foreign)).await.expect("create");

    assert_eq!(
        store
            .active_executions_using(ORG, &connector)
            .await
            .expect("count"),
        2
    );
    assert_eq!(
        store
            .active_executions_using(OTHER_ORG, &connector)
            .await
            .expect("count"),
        1
    );
    let unused = IdKind::Connector.generate();
    assert_eq!(
        store.active_executions_using(ORG, &unused).await.expect("count"),
        0
    );
}
