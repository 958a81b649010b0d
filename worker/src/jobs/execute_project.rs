//! `execute_project`: takes the execution (bumping its attempt, the fencing
//! token), keeps the lease alive, runs the steps in order from the first one
//! not completed, and records every transition under that attempt.
//!
//! The job is only a wake-up: a duplicate or late delivery finds the
//! execution leased or finished and does nothing. A worker that loses its
//! lease (paused past it, partitioned) stops at once and writes nothing
//! more — the store rejects its writes and the sink checks the lease before
//! an object becomes visible.
//!
//! A step that fails transiently (a connection reset, a timeout, a
//! serialization failure, a 503: see [`disposition`]) runs again, up to
//! [`StepRetry::attempts`] tries with exponential backoff and jitter. Each
//! try writes a fresh object: the failed try's upload was aborted and its
//! leftovers are discarded first, and the store counts every start in the
//! step's `attempts`. Permanent failures fail the step at once.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_shared::domain::{
    Connector, ConnectorStatus, ErrorKind, Execution, ExecutionStatus, Lease, StepError, StepRun,
    StepRunStatus, StepType,
};
use ferry_shared::jobs::{EXECUTION_EVENTS, ExecuteProjectJob, ExecutionEvent};
use ferry_shared::store::{ConnectorStore, ExecutionStore, GrantStore, StepOutput};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::connectors::errors::{Disposition, disposition};
use crate::connectors::{self, ConnectorSpec, StepRequest};
use crate::extract::{Destination, ExtractError, ExtractOptions, Output, ReadPath, StepRead, run_step_with};
use crate::pools::PoolRegistry;
use crate::runtime::JobError;
use crate::sink::UploadJournal;
use crate::transform::Transform;

/// How a step that failed transiently is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRetry {
    /// Tries in all, the first included; 1 never retries. Default 3.
    pub attempts: u32,
    /// Wait before the first retry, doubled for each next one up to
    /// `max_delay`; each wait is drawn between half and all of that.
    /// Default 1 s.
    pub delay: Duration,
    /// Default 30 s.
    pub max_delay: Duration,
}

impl Default for StepRetry {
    fn default() -> Self {
        Self {
            attempts: 3,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl StepRetry {
    /// The wait after the `failed`-th try failed (1-based): exponential,
    /// capped, with jitter so that steps failed by one outage do not all
    /// come back at once.
    pub fn backoff(&self, failed: u32) -> Duration {
        let doubling = 2u32.saturating_pow(failed.saturating_sub(1));
        let full = self.delay.saturating_mul(doubling).min(self.max_delay);
        let half = full / 2;
        let spread = u64::try_from((full - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            // The random part of a fresh ULID: 80 bits from the OS RNG.
            (ulid::Ulid::new().random() % u128::from(spread + 1)) as u64
        };
        half + Duration::from_micros(jitter)
    }
}

/// Why the worker stopped an execution early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// A caller asked to cancel.
    Cancelled,
    /// A newer attempt owns the execution.
    Fenced,
    /// The metadata store could not be reached to confirm the lease: this
    /// attempt published nothing and records nothing more; the job is
    /// retried, and whichever attempt owns the execution once the store
    /// answers redoes the step. (Never a step failure: a store outage is not
    /// the step's fault.)
    Unconfirmed,
}

/// How a run of the steps ended.
enum Ended {
    AllCompleted,
    /// A step failed; the store already marked the execution failed.
    StepFailed,
    Stopped(Stop),
}

/// Shared between the step runner, the heartbeat and the cancel listener.
struct Watch {
    cancel: CancellationToken,
    stop: Mutex<Option<Stop>>,
    step: Mutex<Option<String>>,
    /// The multipart upload the running try of the step opened last, to
    /// discard before the step is tried again.
    upload: Mutex<Option<String>>,
    rows: AtomicI64,
    bytes: AtomicI64,
}

impl Watch {
    fn stop(&self, why: Stop) {
        if let Ok(mut stop) = self.stop.lock() {
            stop.get_or_insert(why);
        }
        self.cancel.cancel();
    }

    fn reason(&self) -> Option<Stop> {
        self.stop.lock().ok().and_then(|s| *s)
    }

    fn take_upload(&self) -> Option<String> {
        self.upload.lock().ok().and_then(|mut upload| upload.take())
    }

    fn set_step(&self, step: Option<String>) {
        self.rows.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        if let Ok(mut current) = self.step.lock() {
            *current = step;
        }
    }
}

pub async fn run(shared: &Arc<Shared>, payload: Value) -> Result<(), JobError> {
    let job: ExecuteProjectJob = serde_json::from_value(payload)
        .map_err(|e| JobError::Abort(format!("malformed execute_project job: {e}")))?;
    let retry = |e: ferry_shared::Error| JobError::Retry(e.to_string());
    let executions: &dyn ExecutionStore = shared.store.as_ref();
    let claimed = executions
        .claim_execution(&job.execution_id, &shared.identity, shared.lease)
        .await
        .map_err(retry)?;
    let Some(lease) = claimed else {
        tracing::debug!(execution_id = %job.execution_id, "execution already taken or finished");
        return Ok(());
    };
    tracing::info!(execution_id = %lease.execution_id, attempt = lease.attempt, "execution taken");
    let Some(execution) = executions
        .load_execution(&lease.execution_id)
        .await
        .map_err(retry)?
    else {
        return Ok(());
    };
    super::deliver_webhook::record_started(shared.store.as_ref(), &execution).await;
    let watch = Arc::new(Watch {
        cancel: CancellationToken::new(),
        stop: Mutex::new(None),
        step: Mutex::new(None),
        upload: Mutex::new(None),
        rows: AtomicI64::new(0),
        bytes: AtomicI64::new(0),
    });
    // Both end with the run, also when the run is dropped (a worker that
    // hands its jobs back at shutdown): the lease then lapses.
    let heartbeat = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(heartbeat(
        shared.store.clone(),
        shared.lease,
        lease.clone(),
        watch.clone(),
    )));
    let listener = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(listen_for_cancel(
        shared.clone(),
        lease.execution_id.clone(),
        watch.clone(),
    )));
    let ended = run_steps(shared, &lease, &execution, &watch).await;
    heartbeat.abort();
    listener.abort();
    let status = match &ended {
        Ended::AllCompleted => Some("completed"),
        Ended::StepFailed => Some("failed"),
        Ended::Stopped(Stop::Cancelled) => Some("cancelled"),
        Ended::Stopped(_) => None,
    };
    if let Some(status) = status {
        shared
            .metrics
            .executions_finished
            .with_label_values(&[status])
            .inc();
    }
    let result = match ended {
        Ended::AllCompleted => finish(executions, &lease, ExecutionStatus::Completed).await,
        Ended::Stopped(Stop::Cancelled) => finish(executions, &lease, ExecutionStatus::Cancelled).await,
        Ended::StepFailed => Ok(()),
        Ended::Stopped(Stop::Fenced) => {
            tracing::warn!(execution_id = %lease.execution_id, attempt = lease.attempt, "lease lost; a newer attempt owns the execution");
            Ok(())
        }
        Ended::Stopped(Stop::Unconfirmed) => {
            tracing::warn!(execution_id = %lease.execution_id, attempt = lease.attempt, "the metadata store is unavailable; the execution will be resumed");
            Err(JobError::Retry(
                "the metadata store could not confirm the execution lease".into(),
            ))
        }
    };
    announce(shared, &lease.execution_id).await;
    result
}

async fn finish(
    executions: &dyn ExecutionStore,
    lease: &Lease,
    status: ExecutionStatus,
) -> Result<(), JobError> {
    match executions.finish_execution(lease, status).await {
        Ok(finished) => {
            if finished {
                tracing::info!(execution_id = %lease.execution_id, status = status.as_str(), "execution finished");
            }
            Ok(())
        }
        Err(e) => Err(JobError::Retry(e.to_string())),
    }
}

/// Runs every step not completed yet, in order.
async fn run_steps(shared: &Arc<Shared>, lease: &Lease, execution: &Execution, watch: &Arc<Watch>) -> Ended {
    if execution.status == ExecutionStatus::Cancelling {
        return Ended::Stopped(Stop::Cancelled);
    }
    let executions: &dyn ExecutionStore = shared.store.as_ref();
    let mut steps: Vec<&StepRun> = execution.steps.iter().collect();
    steps.sort_by_key(|s| s.position);
    for step in steps.into_iter().filter(|s| s.status != StepRunStatus::Completed) {
        let result = match try_step(shared, lease, execution, step, watch).await {
            Ok(result) => result,
            Err(why) => return Ended::Stopped(why),
        };
        match result {
            Ok((rows, bytes, url)) => {
                let output = StepOutput {
                    rows,
                    bytes,
                    output_file: &url,
                };
                if !executions
                    .complete_step(lease, &step.step_id, output)
                    .await
                    .unwrap_or(false)
                {
                    return Ended::Stopped(Stop::Fenced);
                }
                tracing::info!(execution_id = %lease.execution_id, step_id = %step.step_id, rows, bytes, "step completed");
            }
            Err(error) => {
                tracing::warn!(
                    execution_id = %lease.execution_id,
                    step_id = %step.step_id,
                    error_type = %error.error_type,
                    error = %error.message,
                    "step failed"
                );
                return match executions.fail_step(lease, &step.step_id, &error).await {
                    Ok(true) => Ended::StepFailed,
                    _ => Ended::Stopped(Stop::Fenced),
                };
            }
        }
        announce(shared, &lease.execution_id).await;
    }
    Ended::AllCompleted
}

/// Runs one step, trying it again after each transient failure while tries
/// remain (see [`StepRetry`]), and returns how its last try ended; `Err`
/// when the run must stop (cancelled, fenced, lease unconfirmed).
async fn try_step(
    shared: &Arc<Shared>,
    lease: &Lease,
    execution: &Execution,
    step: &StepRun,
    watch: &Arc<Watch>,
) -> Result<Result<(i64, i64, String), StepError>, Stop> {
    let executions: &dyn ExecutionStore = shared.store.as_ref();
    let mut tries = 0;
    loop {
        if let Some(why) = watch.reason() {
            return Err(why);
        }
        tries += 1;
        if !executions.start_step(lease, &step.step_id).await.unwrap_or(false) {
            return Err(watch.reason().unwrap_or(Stop::Fenced));
        }
        if tries == 1 && step.started_at.is_some() {
            discard_unfinished(shared, lease, execution, step, step.open_upload.as_deref()).await;
        }
        watch.set_step(Some(step.step_id.clone()));
        announce(shared, &lease.execution_id).await;
        let result = run_step(shared, lease, execution, step, watch).await;
        watch.set_step(None);
        let failure = match result {
            Ok(output) => return Ok(Ok(output)),
            Err(failure) => failure,
        };
        if let Some(why) = watch.reason() {
            return Err(why);
        }
        if let Some(source) = &failure.source {
            tracing::error!(
                execution_id = %lease.execution_id,
                step_id = %step.step_id,
                cause = %chain(source.as_ref()),
                "step failed on an internal error"
            );
        }
        let error = failure.error;
        if tries >= shared.retry.attempts
            || disposition(error.error_type, failure.code.as_deref()) == Disposition::Fail
        {
            return Ok(Err(error));
        }
        let wait = shared.retry.backoff(tries);
        shared.metrics.step_retried(&step.step_type);
        tracing::warn!(
            execution_id = %lease.execution_id,
            step_id = %step.step_id,
            error_type = %error.error_type,
            code = failure.code.as_deref().unwrap_or(""),
            error = %error.message,
            tries,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "step failed transiently; trying it again"
        );
        // The failed try aborted its upload; what it may have left (an
        // upload whose abort failed, staging files) goes before the next
        // try writes its own object from the start.
        let upload = watch.take_upload();
        discard_unfinished(shared, lease, execution, step, upload.as_deref()).await;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = watch.cancel.cancelled() => return Err(watch.reason().unwrap_or(Stop::Cancelled)),
        }
    }
}

/// A step that an earlier attempt or try started may have left an upload
/// open (S3: the upload id it recorded) or staging files (`file://`): they
/// are discarded before the step runs again. A failure here is logged and
/// the step runs anyway; the record is kept so that a later attempt retries.
async fn discard_unfinished(
    shared: &Shared,
    lease: &Lease,
    execution: &Execution,
    step: &StepRun,
    open_upload: Option<&str>,
) {
    let path = shared.objects.step_path(&execution.execution_id, &step.step_id);
    match shared.objects.discard_unfinished(&path, open_upload).await {
        Ok(()) => {
            if open_upload.is_some() {
                tracing::info!(
                    execution_id = %lease.execution_id,
                    step_id = %step.step_id,
                    "aborted the upload an earlier attempt left open"
                );
                let executions: &dyn ExecutionStore = shared.store.as_ref();
                let _ = executions.record_step_upload(lease, &step.step_id, None).await;
            }
        }
        Err(error) => tracing::warn!(
            execution_id = %lease.execution_id,
            step_id = %step.step_id,
            %error,
            "discarding an earlier attempt's unfinished upload failed"
        ),
    }
}

/// Records each multipart upload of the step before its first part, so that
/// if this attempt dies the next one can abort it. A refusal stops the run
/// the way a refused fence does.
fn upload_journal(
    executions: Arc<dyn ExecutionStore>,
    lease: &Lease,
    step_id: &str,
    watch: &Arc<Watch>,
) -> UploadJournal {
    let (lease, step_id, watch) = (lease.clone(), step_id.to_owned(), watch.clone());
    Arc::new(move |upload: String| {
        let (executions, lease, step_id, watch) =
            (executions.clone(), lease.clone(), step_id.clone(), watch.clone());
        Box::pin(async move {
            match executions
                .record_step_upload(&lease, &step_id, Some(&upload))
                .await
            {
                Ok(true) => {
                    if let Ok(mut last) = watch.upload.lock() {
                        *last = Some(upload);
                    }
                    true
                }
                Ok(false) => {
                    watch.stop(Stop::Fenced);
                    false
                }
                Err(_) => {
                    watch.stop(Stop::Unconfirmed);
                    false
                }
            }
        })
    })
}

fn step_error(error_type: ErrorKind, message: impl Into<String>) -> StepError {
    StepError::new(error_type, message)
}

/// A failed try: the error recorded on the step, and the server's own code
/// (SQLSTATE, HTTP status) that, with the kind, decides whether to retry.
struct Failure {
    error: StepError,
    code: Option<String>,
    /// What caused an `internal` error, for the log only.
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl From<StepError> for Failure {
    fn from(error: StepError) -> Self {
        Failure {
            error,
            code: None,
            source: None,
        }
    }
}

impl From<ExtractError> for Failure {
    fn from(e: ExtractError) -> Self {
        Failure {
            error: step_error(e.error_type, e.message),
            code: e.code,
            source: e.source,
        }
    }
}

/// `error` and each error that caused it, `: `-separated.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

/// The step's connector, once it is known to exist, to be enabled and to be
/// usable by the execution's creator.
async fn usable_connector(
    connectors: &dyn ConnectorStore,
    grants: &dyn GrantStore,
    execution: &Execution,
    connector_uuid: &str,
    watch: &Watch,
) -> Result<Connector, Failure> {
    let connector = connectors
        .get_connector(&execution.org_id, connector_uuid)
        .await
        .map_err(|e| {
            if matches!(e, ferry_shared::Error::Unavailable(_)) {
                watch.stop(Stop::Unconfirmed);
            }
            step_error(ErrorKind::Internal, e.to_string())
        })?
        .ok_or_else(|| {
            step_error(
                ErrorKind::NotFound,
                format!("connector {connector_uuid} no longer exists"),
            )
        })?;
    if connector.status == ConnectorStatus::Disabled {
        return Err(Failure::from(step_error(
            ErrorKind::ConnectorDisabled,
            format!("connector {connector_uuid} is disabled"),
        )));
    }
    // Using a connector takes an editor's grant on it (organization admins
    // act as owner), checked once more before anything is read: the grant
    // may have been revoked after the execution was admitted.
    let role = grants
        .executor_connector_role(&execution.execution_id, connector_uuid)
        .await
        .map_err(|e| {
            if matches!(e, ferry_shared::Error::Unavailable(_)) {
                watch.stop(Stop::Unconfirmed);
            }
            step_error(ErrorKind::Internal, e.to_string())
        })?;
    if !role.is_some_and(|role| role.can_edit()) {
        return Err(Failure::from(step_error(
            ErrorKind::Forbidden,
            format!(
                "{} may no longer use connector {connector_uuid}: running a step on it needs an editor's grant",
                execution.created_by
            ),
        )));
    }
    Ok(connector)
}

/// Runs one step and returns its rows, bytes and object URL.
async fn run_step(
    shared: &Arc<Shared>,
    lease: &Lease,
    execution: &Execution,
    step: &StepRun,
    watch: &Arc<Watch>,
) -> Result<(i64, i64, String), Failure> {
    let Some(step_type) =
        StepType::parse(&step.step_type).filter(|t| *t == StepType::Transform || connectors::runs(*t))
    else {
        return Err(Failure::from(step_error(
            ErrorKind::UnsupportedStepType,
            format!(
                "{} steps are not executed by this version of Ferry",
                step.step_type
            ),
        )));
    };
    let config = step.config.as_object().cloned().unwrap_or_default();
    let started = std::time::Instant::now();
    let mut connector_type = crate::metrics::TRANSFORM;
    let (current, dependencies, transform);
    let read: Box<dyn StepRead + '_> = if step_type == StepType::Transform {
        let engine = shared.transform.get()?;
        // Earlier steps' results as they stand now: steps completed since
        // the execution was claimed are in the store, not in `execution`.
        current = load_current(shared, execution, watch).await?;
        dependencies = load_dependencies(shared, execution, step, watch).await?;
        transform = Transform {
            objects: &shared.objects,
            execution: &current,
            step,
            config: &config,
            dependencies: &dependencies,
        };
        Box::new(transform.on(engine))
    } else {
        let connector = connector_step(
            shared,
            execution,
            step_type,
            &config,
            (lease, &step.step_id),
            watch,
        )
        .await?;
        connector_type = crate::metrics::connector_type_label(&connector.spec.connector_type);
        Box::new(connector)
    };
    let path = shared.objects.step_path(&execution.execution_id, &step.step_id);
    let progress = {
        let watch = watch.clone();
        move |rows: i64, bytes: i64| {
            watch.rows.store(rows, Ordering::Relaxed);
            watch.bytes.store(bytes, Ordering::Relaxed);
        }
    };
    // Publishes only under a confirmed lease. A refusal also says why, so
    // that the run stops as cancelled, fenced or unconfirmed instead of
    // recording the step as failed.
    let fence = || {
        let executions: Arc<dyn ExecutionStore> = shared.store.clone();
        let lease_for = shared.lease;
        let lease = lease.clone();
        let watch = watch.clone();
        async move {
            match executions.renew_lease(&lease, lease_for).await {
                Ok(Some(ExecutionStatus::Running)) => true,
                Ok(Some(ExecutionStatus::Cancelling)) => {
                    watch.stop(Stop::Cancelled);
                    false
                }
                Ok(_) => {
                    watch.stop(Stop::Fenced);
                    false
                }
                Err(_) => {
                    watch.stop(Stop::Unconfirmed);
                    false
                }
            }
        }
    };
    let destination = Destination::new(&shared.objects, &path).journaled(upload_journal(
        shared.store.clone(),
        lease,
        &step.step_id,
        watch,
    ));
    let output = run_step_with(
        &ExtractOptions::default(),
        read.as_ref(),
        &destination,
        &progress,
        &watch.cancel,
        fence,
    )
    .await;
    let written = output.as_ref().ok().map(|output| (output.rows, output.bytes));
    shared.metrics.step_tried(connector_type, started, written);
    let output = output?;
    Ok((output.rows, output.bytes, shared.objects.url_of(&path)))
}

/// The execution as the store has it now.
async fn load_current(shared: &Shared, execution: &Execution, watch: &Watch) -> Result<Execution, Failure> {
    let executions: &dyn ExecutionStore = shared.store.as_ref();
    match executions.load_execution(&execution.execution_id).await {
        Ok(Some(current)) => Ok(current),
        Ok(None) => Err(Failure::from(step_error(
            ErrorKind::NotFound,
            format!("execution {} no longer exists", execution.execution_id),
        ))),
        Err(e) => {
            if matches!(e, ferry_shared::Error::Unavailable(_)) {
                watch.stop(Stop::Unconfirmed);
            }
            Err(Failure::from(step_error(ErrorKind::Internal, e.to_string())))
        }
    }
}

/// The step's `dependencies`. The execution's snapshot does not carry them;
/// the step row does, and it cannot change while the execution is in
/// progress (step writes are 409 then).
async fn load_dependencies(
    shared: &Shared,
    execution: &Execution,
    step: &StepRun,
    watch: &Watch,
) -> Result<Vec<String>, Failure> {
    let steps: &dyn ferry_shared::store::StepStore = shared.store.as_ref();
    match steps.get_step(&execution.project_uuid, &step.step_id).await {
        Ok(row) => Ok(row.map(|row| row.dependencies).unwrap_or_default()),
        Err(e) => {
            if matches!(e, ferry_shared::Error::Unavailable(_)) {
                watch.stop(Stop::Unconfirmed);
            }
            Err(Failure::from(step_error(ErrorKind::Internal, e.to_string())))
        }
    }
}

/// A step that reads through a connector: the connector checked usable by
/// the execution's creator, its credentials opened, and its family known
/// to run `step_type`.
async fn connector_step<'a>(
    shared: &'a Shared,
    execution: &'a Execution,
    step_type: StepType,
    config: &'a Map<String, Value>,
    (lease, step_id): (&Lease, &str),
    watch: &Watch,
) -> Result<ConnectorStep<'a>, Failure> {
    let connector_uuid = config
        .get("connector_uuid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let connector = usable_connector(
        shared.store.as_ref(),
        shared.store.as_ref(),
        execution,
        connector_uuid,
        watch,
    )
    .await?;
    let Some((decl, _)) =
        connectors::declared(&connector.connector_type).filter(|(decl, _)| decl.accepts(step_type))
    else {
        return Err(Failure::from(step_error(
            ErrorKind::UnsupportedConnector,
            format!(
                "{} steps cannot run on {} connectors",
                step_type.as_str(),
                connector.connector_type
            ),
        )));
    };
    // The connector's fleet-wide cap: the step waits in line for a slot
    // (released when the step's read ends, see `crate::slots`).
    let slot = match crate::slots::cap_of(&connector.config) {
        None => None,
        Some(cap) => {
            let executions: &dyn ExecutionStore = shared.store.as_ref();
            let waiting = |holders: i64, ahead: i64| -> crate::slots::Waited {
                tracing::info!(
                    execution_id = %execution.execution_id,
                    connector_uuid = %connector.uuid,
                    holders,
                    ahead,
                    "step waiting: the connector's max_concurrent_steps ({cap}) are all in use"
                );
                let reason = match ahead {
                    0 => format!("the connector's max_concurrent_steps ({cap}) are all in use"),
                    ahead => format!(
                        "the connector's max_concurrent_steps ({cap}) are all in use; \
                         {ahead} step(s) wait ahead"
                    ),
                };
                let (store, lease, step_id) = (shared.store.clone(), lease.clone(), step_id.to_owned());
                Box::pin(async move {
                    if let Err(error) = store.step_waiting(&lease, &step_id, Some(&reason)).await {
                        tracing::warn!(%error, "recording that a step waits failed");
                    }
                })
            };
            let holder = format!("{}/{}/{step_id}", lease.execution_id, lease.attempt);
            let acquired = crate::slots::acquire(
                shared.store.clone(),
                &connector.uuid,
                &holder,
                cap,
                shared.lease,
                &watch.cancel,
                waiting,
            )
            .await;
            match acquired {
                Ok(guard) => {
                    if guard.waited
                        && let Err(error) = executions.step_waiting(lease, step_id, None).await
                    {
                        tracing::warn!(%error, "recording that a step proceeds failed");
                    }
                    Some(guard)
                }
                Err(crate::slots::NotAcquired::Cancelled) => {
                    return Err(Failure::from(step_error(
                        ErrorKind::Internal,
                        "cancelled while waiting for a connector slot",
                    )));
                }
                Err(crate::slots::NotAcquired::Store(e)) => {
                    if matches!(e, ferry_shared::Error::Unavailable(_)) {
                        watch.stop(Stop::Unconfirmed);
                    }
                    return Err(Failure::from(step_error(ErrorKind::Internal, e.to_string())));
                }
            }
        }
    };
    let secrets = shared
        .vault
        .open(&connector.uuid, &connector.secrets)
        .map_err(|_| {
            step_error(
                ErrorKind::InvalidConfig,
                "the connector's credentials could not be decrypted",
            )
        })?;
    let spec = ConnectorSpec::new(
        connector.uuid,
        connector.org_id,
        connector.connector_type,
        connector.config_version,
        &connector.config,
        &secrets,
    );
    Ok(ConnectorStep {
        _slot: slot,
        pools: &shared.pools,
        spec,
        request: StepRequest {
            step_type,
            connector: decl,
            config,
            supplied: &execution.parameters,
            policy: shared.pools.policy(),
        },
    })
}

/// A step read through its connector's pool.
struct ConnectorStep<'a> {
    /// The connector slot the step holds, if the connector is capped.
    _slot: Option<crate::slots::SlotGuard>,
    pools: &'a PoolRegistry,
    spec: ConnectorSpec,
    request: StepRequest<'a>,
}

#[async_trait::async_trait]
impl StepRead for ConnectorStep<'_> {
    async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        self.pools.run_step(&self.spec, &self.request, out).await
    }
}

/// Renews the lease every third of it, records the running step's progress,
/// and stops the run when the lease is lost or a cancel was requested.
async fn heartbeat(
    executions: Arc<dyn ExecutionStore>,
    lease_for: Duration,
    lease: Lease,
    watch: Arc<Watch>,
) {
    let period = lease_for / 3;
    loop {
        tokio::time::sleep(period).await;
        match executions.renew_lease(&lease, lease_for).await {
            Ok(Some(ExecutionStatus::Cancelling)) => watch.stop(Stop::Cancelled),
            Ok(Some(_)) => {}
            Ok(None) => {
                watch.stop(Stop::Fenced);
                return;
            }
            Err(error) => {
                tracing::warn!(execution_id = %lease.execution_id, %error, "lease renewal failed; retrying")
            }
        }
        let step = watch.step.lock().ok().and_then(|s| s.clone());
        if let Some(step) = step {
            let rows = watch.rows.load(Ordering::Relaxed);
            let bytes = watch.bytes.load(Ordering::Relaxed);
            let _ = executions.step_progress(&lease, &step, rows, bytes).await;
        }
    }
}

/// Reacts to a cancel at once instead of at the next heartbeat.
async fn listen_for_cancel(shared: Arc<Shared>, execution_id: String, watch: Arc<Watch>) {
    let mut cancels = shared.cancels.subscribe();
    loop {
        match cancels.recv().await {
            Ok(id) if id == execution_id => {
                watch.stop(Stop::Cancelled);
                return;
            }
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Tells waiters (sync execute, event streams) to re-read the execution.
async fn announce(shared: &Shared, execution_id: &str) {
    let event = ExecutionEvent {
        execution_id: execution_id.to_owned(),
        kind: "changed".into(),
    };
    if let Ok(value) = serde_json::to_value(&event) {
        let _ = shared.bus.publish(EXECUTION_EVENTS, &value).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_delay_up_to_the_cap_with_jitter_in_the_upper_half() {
        let retry = StepRetry {
            attempts: 5,
            delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        for (failed, full) in [(1, 100), (2, 200), (3, 350), (4, 350), (30, 350)] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let wait = retry.backoff(failed);
                assert!(wait >= full / 2 && wait <= full, "try {failed}: {wait:?}");
            }
        }
        let waits: std::collections::HashSet<Duration> = (0..20).map(|_| retry.backoff(1)).collect();
        assert!(waits.len() > 1, "no jitter: {waits:?}");
        let none = StepRetry {
            delay: Duration::ZERO,
            ..retry
        };
        assert_eq!(none.backoff(3), Duration::ZERO);
    }
}
