//! Ferry's worker role: pulls jobs from the queue and runs them against the
//! users' systems through per-connector pools. Job kinds arrive with the
//! connector and execution capabilities; until then a worker process starts,
//! reports ready and stops cleanly.

use std::future::Future;
use std::sync::Arc;

use ferry_shared::store::Store;

/// What a worker process runs with.
pub struct WorkerContext {
    pub store: Arc<dyn Store>,
    pub registry: prometheus::Registry,
}

/// Runs the worker until `shutdown` resolves.
pub async fn run(context: WorkerContext, shutdown: impl Future<Output = ()>) -> ferry_shared::Result<()> {
    context.store.ping().await?;
    tracing::info!(store = context.store.backend(), "worker started");
    shutdown.await;
    tracing::info!("worker stopped");
    Ok(())
}
