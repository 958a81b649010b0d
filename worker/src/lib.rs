//! Ferry's worker role: pulls jobs from the queue and runs them against the
//! users' systems through per-connector pools.
//!
//! A worker process has a fresh queue identity per start, runs up to
//! `concurrency` jobs at once, evicts a connector's pools when the API
//! announces a change to it, and on shutdown stops taking jobs and lets the
//! in-flight ones finish.

pub mod connectors;
pub mod extract;
pub mod jobs;
pub mod pools;
pub mod runtime;
pub mod sink;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::jobs::{CONNECTOR_EVENTS, ConnectorEvent, EXECUTION_EVENTS, ExecutionEvent};
use ferry_shared::objects::ObjectTarget;
use ferry_shared::queue::{Bus, Job, JobKind, Queue};
use ferry_shared::store::Store;
use ferry_shared::vault::Vault;
use futures::StreamExt;

use crate::connectors::NetworkPolicy;
use crate::pools::PoolRegistry;
use crate::runtime::{JobError, WorkerOptions, run_worker};

/// What a worker process runs with.
pub struct WorkerContext {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub bus: Arc<dyn Bus>,
    pub vault: Arc<Vault>,
    pub objects: Arc<ObjectTarget>,
    pub registry: prometheus::Registry,
    pub policy: NetworkPolicy,
    pub concurrency: usize,
    /// How long an execution lease lasts without a heartbeat.
    pub lease: Duration,
    /// How a step that failed transiently is tried again.
    pub retry: jobs::execute_project::StepRetry,
}

/// What job handlers share.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub vault: Arc<Vault>,
    pub objects: Arc<ObjectTarget>,
    pub pools: PoolRegistry,
    /// This process's identity, fresh per start (lease owner).
    pub identity: String,
    pub lease: Duration,
    pub retry: jobs::execute_project::StepRetry,
    /// Cancel requests for executions, fanned out in-process from one bus
    /// subscription per worker.
    pub cancels: tokio::sync::broadcast::Sender<String>,
}

/// Runs the worker until `shutdown` resolves.
pub async fn run(
    context: WorkerContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> ferry_shared::Result<()> {
    context.store.ping().await?;
    let identity = format!("worker-{}", ulid::Ulid::new());
    tracing::info!(%identity, "worker starting");
    let shared = Arc::new(Shared {
        store: context.store,
        bus: context.bus.clone(),
        vault: context.vault,
        objects: context.objects,
        pools: PoolRegistry::new(context.policy, &context.registry),
        identity,
        lease: context.lease,
        retry: context.retry,
        cancels: tokio::sync::broadcast::channel(256).0,
    });
    let mut execution_events = context.bus.subscribe(EXECUTION_EVENTS).await?;
    let cancel_relay = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(value) = execution_events.next().await {
                if let Ok(event) = serde_json::from_value::<ExecutionEvent>(value)
                    && event.kind == "cancel"
                {
                    let _ = shared.cancels.send(event.execution_id);
                }
            }
        })
    };
    let mut events = context.bus.subscribe(CONNECTOR_EVENTS).await?;
    let listener = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(value) = events.next().await {
                match serde_json::from_value::<ConnectorEvent>(value) {
                    Ok(event) => {
                        tracing::info!(connector_uuid = %event.connector_uuid, change = %event.change, "evicting connector pools");
                        shared.pools.evict(&event.connector_uuid);
                    }
                    Err(error) => tracing::warn!(%error, "malformed connector event"),
                }
            }
        })
    };
    let handler = {
        let shared = shared.clone();
        move |job: Job| {
            let shared = shared.clone();
            async move { dispatch(&shared, job).await }
        }
    };
    let options = WorkerOptions {
        name_prefix: "worker".into(),
        concurrency: context.concurrency.max(1),
    };
    let result = run_worker(context.queue, options, handler, shutdown).await;
    listener.abort();
    cancel_relay.abort();
    result
}

async fn dispatch(shared: &Arc<Shared>, job: Job) -> Result<(), JobError> {
    match job.kind {
        JobKind::TestConnection => jobs::test_connection::run(shared, job.payload).await,
        JobKind::ExecuteProject => jobs::execute_project::run(shared, job.payload).await,
        other => Err(JobError::Abort(format!(
            "this worker does not run {} jobs yet",
            other.as_str()
        ))),
    }
}
