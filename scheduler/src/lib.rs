//! Ferry's scheduler role: leader-elected periodic work (token refresh,
//! health probes, cron schedules, the lease reaper). The periodic tasks
//! arrive with the capabilities they serve; until then a scheduler process
//! starts, reports ready and stops cleanly.

use std::future::Future;
use std::sync::Arc;

use ferry_shared::store::Store;

/// What a scheduler process runs with.
pub struct SchedulerContext {
    pub store: Arc<dyn Store>,
    pub registry: prometheus::Registry,
}

/// Runs the scheduler until `shutdown` resolves.
pub async fn run(context: SchedulerContext, shutdown: impl Future<Output = ()>) -> ferry_shared::Result<()> {
    context.store.ping().await?;
    tracing::info!(store = context.store.backend(), "scheduler started");
    shutdown.await;
    tracing::info!("scheduler stopped");
    Ok(())
}
