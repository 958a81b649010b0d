//! Ferry's scheduler role: leader-elected periodic work. One process leads
//! (a Redis lock with a TTL, or always in `ferry up`), any number stand by;
//! the leader runs the lease reaper, which re-enqueues the executions no
//! worker holds, fires the projects' cron schedules (`schedules.rs`),
//! enqueues connector health probes (`probes.rs`), refreshes OAuth
//! tokens ahead of expiry (`refresh.rs`) and enqueues due webhook
//! deliveries (`webhooks.rs`). See `design.md`.

pub mod leader;
pub mod metrics;
pub mod probes;
pub mod reaper;
pub mod refresh;
pub mod schedules;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::backends::Backends;
use ferry_shared::config::{ConfigError, Mode, Settings, redact_url};
use ferry_shared::queue::Queue;
use ferry_shared::store::Store;
use ferry_shared::{Error, Result};
use tokio_util::sync::CancellationToken;

pub use leader::LeaderElection;
pub use metrics::SchedulerMetrics;
pub use reaper::{Reaped, reap_once};
pub use schedules::{ScheduleMetrics, Ticked, tick_once};

/// How often the leader looks for executions to re-enqueue, by default.
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(5);

/// How long a queued execution may wait for a worker before the reaper
/// enqueues its job again, by default. Re-enqueueing while the job is still
/// pending is a no-op, so this only bounds how late a lost job is noticed.
pub const DEFAULT_QUEUED_GRACE: Duration = Duration::from_secs(15);

/// The TTL of the Redis leader lock, by default: a dead leader is replaced
/// within about 1⅓ × this.
pub const DEFAULT_LEADER_TTL: Duration = Duration::from_secs(15);

/// The flags of the scheduler role (`ferry scheduler`, and the scheduler
/// of `ferry up`).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "scheduler_config")]
pub struct Args {
    /// Seconds between two passes of the reaper, which enqueues again the
    /// executions whose lease expired or whose queued job was lost.
    #[arg(long, env = "FERRY_REAP_INTERVAL_SECONDS", default_value_t = DEFAULT_REAP_INTERVAL.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub reap_interval_seconds: u64,

    /// Seconds a queued execution may wait for a worker before the reaper
    /// enqueues its job again (a job still pending is not duplicated).
    #[arg(long, env = "FERRY_QUEUED_GRACE_SECONDS", default_value_t = DEFAULT_QUEUED_GRACE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub queued_grace_seconds: u64,

    /// Milliseconds between two looks for due schedule ticks (default
    /// 1000; tests shorten it).
    #[arg(long, env = "FERRY_SCHEDULE_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60000))]
    pub schedule_interval_ms: u64,

    /// How often each connector's health is probed: seconds, or with a
    /// unit (`500ms`, `30s`, `5m`, `1h`); 0 turns probes off. Each
    /// connector fires at its own offset within the interval.
    #[arg(long, env = "FERRY_PROBE_INTERVAL", default_value = "5m", value_parser = probes::parse_interval)]
    pub probe_interval: Duration,

    /// Milliseconds between two looks for webhook deliveries whose next
    /// try is due (default 1000). A delivery whose job was lost is
    /// enqueued again after FERRY_QUEUED_GRACE_SECONDS.
    #[arg(long, env = "FERRY_WEBHOOK_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60000))]
    pub webhook_interval_ms: u64,
}

/// Everything the scheduler role runs with: its flags, and what its process
/// resolved and opened for every role it runs.
pub struct Config {
    pub args: Args,
    /// The process's settings: in embedded mode (`ferry up`, one process)
    /// the scheduler always leads; otherwise it is elected on the Redis
    /// they name (see [`leader_election`]).
    pub settings: Settings,
    pub backends: Backends,
    /// Where the scheduler registers its metrics.
    pub registry: prometheus::Registry,
}

impl Config {
    /// What [`run_with`] runs: these flags over these backends, with the
    /// leader election the settings call for. An unreachable Redis is
    /// [`Error::Unavailable`].
    pub async fn context(self) -> Result<SchedulerContext> {
        let leader = match self.settings.mode {
            Mode::Embedded => LeaderElection::single_process(),
            Mode::Distributed => leader_election(&self.settings)
                .await
                .map_err(|error| Error::Unavailable(error.0))?,
        };
        Ok(SchedulerContext {
            reap_interval: Duration::from_secs(self.args.reap_interval_seconds),
            queued_grace: Duration::from_secs(self.args.queued_grace_seconds),
            schedule_interval: Duration::from_millis(self.args.schedule_interval_ms),
            probe_interval: self.args.probe_interval,
            webhook_interval: Duration::from_millis(self.args.webhook_interval_ms),
            token_refresh: Some(refresh::TokenRefresh::from_env(&self.backends)),
            ..SchedulerContext::new(self.backends.store, self.registry, self.backends.queue, leader)
        })
    }
}

/// The leader election of a separately run scheduler: on the Redis of
/// `settings` (with [`DEFAULT_LEADER_TTL`]) when one is configured,
/// otherwise the single process. An unreachable Redis is a one-line error.
pub async fn leader_election(settings: &Settings) -> std::result::Result<LeaderElection, ConfigError> {
    match &settings.redis_url {
        Some(url) => LeaderElection::redis(url.expose(), &settings.redis_prefix, DEFAULT_LEADER_TTL)
            .await
            .map_err(|e| ConfigError(format!("cannot reach Redis at {}: {e}", redact_url(url.expose())))),
        None => Ok(LeaderElection::single_process()),
    }
}

/// What a scheduler process runs with.
pub struct SchedulerContext {
    pub store: Arc<dyn Store>,
    pub registry: prometheus::Registry,
    /// Where the reaper enqueues `execute_project` jobs.
    pub queue: Arc<dyn Queue>,
    /// Redis-backed when Redis is configured, single-process otherwise.
    pub leader: LeaderElection,
    /// How often the leader reaps (default [`DEFAULT_REAP_INTERVAL`]).
    pub reap_interval: Duration,
    /// How long a queued execution waits before its job is enqueued again
    /// (default [`DEFAULT_QUEUED_GRACE`]).
    pub queued_grace: Duration,
    /// How often the leader fires due schedule ticks (default
    /// [`schedules::DEFAULT_SCHEDULE_INTERVAL`]).
    pub schedule_interval: Duration,
    /// How often each connector is probed (default
    /// [`probes::DEFAULT_PROBE_INTERVAL`]; zero: never).
    pub probe_interval: Duration,
    /// OAuth tokens refreshed ahead of expiry while leading (none: not).
    pub token_refresh: Option<refresh::TokenRefresh>,
    /// How often the leader enqueues due webhook deliveries (default
    /// [`webhooks::DEFAULT_WEBHOOK_INTERVAL`]); a delivery whose job was
    /// lost is enqueued again after `queued_grace`.
    pub webhook_interval: Duration,
}

impl SchedulerContext {
    /// A context with the default intervals.
    pub fn new(
        store: Arc<dyn Store>,
        registry: prometheus::Registry,
        queue: Arc<dyn Queue>,
        leader: LeaderElection,
    ) -> Self {
        SchedulerContext {
            store,
            registry,
            queue,
            leader,
            reap_interval: DEFAULT_REAP_INTERVAL,
            queued_grace: DEFAULT_QUEUED_GRACE,
            schedule_interval: schedules::DEFAULT_SCHEDULE_INTERVAL,
            probe_interval: probes::DEFAULT_PROBE_INTERVAL,
            token_refresh: None,
            webhook_interval: webhooks::DEFAULT_WEBHOOK_INTERVAL,
        }
    }
}

/// Runs the scheduler role as `config` says until `shutdown` resolves:
/// takes and keeps the leadership (or stands by), and reaps while leading.
/// On shutdown it stops both loops and releases the leader lock, so a
/// standby takes over at once.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    run_with(config.context().await?, shutdown).await
}

/// [`run`] over a context built by hand (tests set its intervals and leader
/// election directly).
pub async fn run_with(context: SchedulerContext, shutdown: impl Future<Output = ()>) -> Result<()> {
    if context.schedule_interval.is_zero() {
        return Err(Error::validation(
            "schedule_interval",
            "the schedule interval must be positive",
        ));
    }
    if context.reap_interval.is_zero() {
        return Err(Error::validation(
            "reap_interval",
            "the reap interval must be positive",
        ));
    }
    probes::check_interval(context.probe_interval)?;
    context.store.ping().await?;
    let metrics = SchedulerMetrics::register(&context.registry).map_err(Error::internal_from)?;
    let schedule_metrics = ScheduleMetrics::register(&context.registry).map_err(Error::internal_from)?;
    let probe_metrics = probes::ProbeMetrics::register(&context.registry).map_err(Error::internal_from)?;
    let webhook_metrics =
        webhooks::WebhookMetrics::register(&context.registry).map_err(Error::internal_from)?;
    let refresh_metrics =
        refresh::RefreshMetrics::register(&context.registry).map_err(Error::internal_from)?;
    tracing::info!(
        store = context.store.backend(),
        identity = context.leader.identity(),
        reap_interval_ms = u64::try_from(context.reap_interval.as_millis()).unwrap_or(u64::MAX),
        "scheduler started"
    );

    let stop = CancellationToken::new();
    let stopper = async {
        shutdown.await;
        stop.cancel();
    };
    let leading = leader::keep_leading(&context.leader, &metrics, stop.clone());
    let reaping = reaper::run(
        context.store.as_ref(),
        context.queue.as_ref(),
        &context.leader,
        &metrics,
        context.reap_interval,
        context.queued_grace,
        stop.clone(),
    );
    let scheduling = schedules::run(
        context.store.as_ref(),
        context.queue.as_ref(),
        &context.leader,
        &schedule_metrics,
        context.schedule_interval,
        stop.clone(),
    );
    let probing = probes::run(
        context.store.as_ref(),
        context.queue.as_ref(),
        &context.leader,
        &probe_metrics,
        context.probe_interval,
        stop.clone(),
    );
    let refreshing = refresh::run_if(
        context.token_refresh.as_ref(),
        &context.leader,
        &refresh_metrics,
        stop.clone(),
    );
    let delivering = webhooks::run(
        context.store.as_ref(),
        context.queue.as_ref(),
        &context.leader,
        &webhook_metrics,
        context.webhook_interval.max(Duration::from_millis(10)),
        context.queued_grace,
        stop.clone(),
    );
    tokio::join!(
        stopper, leading, reaping, scheduling, probing, refreshing, delivering
    );
    tracing::info!("scheduler stopped");
    Ok(())
}
