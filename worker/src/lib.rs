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
pub mod metrics;
pub mod pools;
pub mod runtime;
pub mod sink;
pub mod slots;
pub mod transform;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::backends::Backends;
use ferry_shared::config::Settings;

use ferry_shared::jobs::{CONNECTOR_EVENTS, ConnectorEvent, EXECUTION_EVENTS, ExecutionEvent};
use ferry_shared::oauth_refresh::{OAuthClients, Refresher};
use ferry_shared::objects::ObjectTarget;
use ferry_shared::queue::{Bus, Job, JobKind};
use ferry_shared::store::Store;
use ferry_shared::vault::Vault;
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::connectors::NetworkPolicy;
use crate::jobs::execute_project::StepRetry;
use crate::pools::PoolRegistry;
use crate::runtime::{JobError, WorkerOptions, run_worker};

/// Jobs a worker process runs at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 8;

/// The flags of the worker role (`ferry worker`, and the worker of
/// `ferry up`).
#[derive(Debug, Clone, clap::Args)]
#[group(id = "worker_config")]
pub struct Args {
    /// Jobs a worker process runs at once.
    #[arg(long, env = "FERRY_WORKER_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub worker_concurrency: usize,

    /// May connectors reach loopback and private addresses? Default: true
    /// only when `ferry up` serves its API on a loopback address (as it does
    /// by default); false when it listens on any other address and for
    /// every separately run worker.
    #[arg(long, env = "FERRY_ALLOW_PRIVATE_NETWORKS")]
    pub allow_private_networks: Option<bool>,

    /// Directory that `sqlite` connectors may read files from (read-only).
    /// Default: $FERRY_DATA_DIR/sqlite.
    #[arg(long, env = "FERRY_SQLITE_DIR")]
    pub sqlite_dir: Option<PathBuf>,

    /// Tries a step gets when it fails transiently (a connection reset, a
    /// timeout, a serialization failure, a 503), the first included; 1
    /// never retries.
    #[arg(long, env = "FERRY_STEP_ATTEMPTS", default_value_t = StepRetry::default().attempts,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub step_attempts: u32,

    /// Wait before a step's first retry; doubled for each next one (at most
    /// 30 s), with jitter.
    #[arg(long, env = "FERRY_STEP_RETRY_DELAY", default_value_t = StepRetry::default().delay.into())]
    pub step_retry_delay: humantime::Duration,

    /// PEM file of certificate authorities that connectors speaking HTTPS
    /// (rest_api, databricks) trust besides the public roots: a private CA,
    /// or a proxy that re-signs TLS.
    #[arg(long, env = "FERRY_TLS_CA_FILE", value_parser = connectors::TrustedRoots::from_pem_file_arg)]
    pub tls_ca_file: Option<connectors::TrustedRoots>,

    /// How long a webhook receiver has to answer one delivery try (e.g.
    /// `10s`); a receiver that hangs costs a worker at most this.
    #[arg(long, env = "FERRY_WEBHOOK_TIMEOUT", default_value_t = jobs::deliver_webhook::DEFAULT_TIMEOUT.into())]
    pub webhook_timeout: humantime::Duration,

    /// How long a stopping worker (SIGTERM) lets its running jobs finish,
    /// e.g. `30s`; then it hands what is left back to the queue, and another
    /// worker resumes each execution at its first unfinished step.
    #[arg(long, env = "FERRY_WORKER_SHUTDOWN_GRACE", default_value = "30s")]
    pub worker_shutdown_grace: humantime::Duration,

    #[command(flatten)]
    pub transform: transform::TransformArgs,
}

impl Args {
    /// Whether connectors may reach loopback and private addresses: the
    /// setting when given, otherwise true only when the API of the same
    /// process (`ferry up`) listens on a loopback address. A worker without
    /// an API in its process (`api_listen` None) stays off the private
    /// networks unless told otherwise.
    pub fn private_networks_allowed(&self, api_listen: Option<SocketAddr>) -> bool {
        self.allow_private_networks
            .unwrap_or_else(|| api_listen.is_some_and(|address| address.ip().is_loopback()))
    }
}

/// Everything the worker role runs with: its flags, and what its process
/// resolved and opened for every role it runs.
pub struct Config {
    pub args: Args,
    /// The process's settings: the job lease, and the data directory the
    /// default `sqlite` directory is under.
    pub settings: Settings,
    pub backends: Backends,
    /// Where the worker registers its metrics.
    pub registry: prometheus::Registry,
    /// The address of the API served by the same process (`ferry up`), if
    /// any.
    pub api_listen: Option<SocketAddr>,
}

impl Config {
    /// What [`run_with`] runs: these flags over these backends.
    pub fn context(self) -> WorkerContext {
        let Config {
            args,
            settings,
            backends,
            registry,
            api_listen,
        } = self;
        WorkerContext {
            policy: NetworkPolicy {
                allow_private_networks: args.private_networks_allowed(api_listen),
                sqlite_dir: args
                    .sqlite_dir
                    .unwrap_or_else(|| settings.data_dir.join("sqlite")),
                trusted_roots: args.tls_ca_file.unwrap_or_default(),
            },
            backends,
            registry,
            lease: settings.job_lease,
            concurrency: args.worker_concurrency,
            retry: StepRetry {
                attempts: args.step_attempts,
                delay: *args.step_retry_delay,
                ..StepRetry::default()
            },
            transform: args.transform.options(),
            shutdown_grace: Some(*args.worker_shutdown_grace),
            webhook_timeout: *args.webhook_timeout,
            oauth: OAuthClients::from_env(),
        }
    }
}

/// What a worker process runs with.
pub struct WorkerContext {
    /// The store, queue, bus, vault and object store.
    pub backends: Backends,
    pub registry: prometheus::Registry,
    pub policy: NetworkPolicy,
    pub concurrency: usize,
    /// How long an execution lease lasts without a heartbeat.
    pub lease: Duration,
    /// How a step that failed transiently is tried again.
    pub retry: jobs::execute_project::StepRetry,
    /// How transform steps use memory and disk.
    pub transform: transform::TransformOptions,
    /// How long a stopping worker lets running jobs finish before it hands
    /// them back (`None`: until they finish).
    pub shutdown_grace: Option<Duration>,
    /// How long a webhook receiver has to answer one try.
    pub webhook_timeout: Duration,
    /// The OAuth clients a step refreshes a connector's token with when
    /// its provider answers 401 (`FERRY_OAUTH_<PROVIDER>_*`).
    pub oauth: OAuthClients,
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
    /// The engine transform steps run on, started by the first of them.
    pub transform: transform::LazyEngine,
    /// `ferry_worker_probes_total{outcome}`.
    pub probes: jobs::probe::ProbeMetrics,
    /// The client webhook deliveries are sent with.
    pub webhooks: jobs::deliver_webhook::Deliverer,
    /// Jobs, steps, rows and bytes (see `metrics.rs`).
    pub metrics: metrics::WorkerMetrics,
}

/// Runs the worker role as `config` says until `shutdown` resolves: takes
/// jobs from the queue, at most `worker_concurrency` at once, and on
/// shutdown stops taking them and lets the running ones finish.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> ferry_shared::Result<()> {
    run_with(config.context(), shutdown).await
}

/// [`run`] over a context built by hand (tests set its lease, retries and
/// network policy directly).
pub async fn run_with(
    context: WorkerContext,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> ferry_shared::Result<()> {
    let Backends {
        store,
        queue,
        bus,
        vault,
        objects,
    } = context.backends;
    store.ping().await?;
    let webhooks = jobs::deliver_webhook::Deliverer::new(
        context.policy.clone(),
        context.webhook_timeout,
        &context.registry,
    );
    let pools = PoolRegistry::new(context.policy, &context.registry);
    let oauth = context
        .oauth
        .with_private_networks(pools.policy().allow_private_networks);
    pools.set_refresher(Refresher::new(store.clone(), vault.clone(), oauth));
    let identity = format!("worker-{}", ulid::Ulid::new());
    tracing::info!(%identity, "worker starting");
    let shared = Arc::new(Shared {
        store,
        bus: bus.clone(),
        vault,
        objects,
        pools,
        identity,
        lease: context.lease,
        retry: context.retry,
        cancels: tokio::sync::broadcast::channel(256).0,
        transform: transform::LazyEngine::new(context.transform),
        probes: jobs::probe::ProbeMetrics::new(&context.registry),
        webhooks,
        metrics: metrics::WorkerMetrics::new(&context.registry, context.concurrency.max(1)),
    });
    let mut execution_events = bus.subscribe(EXECUTION_EVENTS).await?;
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
    let mut events = bus.subscribe(CONNECTOR_EVENTS).await?;
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
    let handler = job_handler(shared.clone());
    let options = WorkerOptions {
        name_prefix: "worker".into(),
        concurrency: context.concurrency.max(1),
        shutdown_grace: context.shutdown_grace,
    };
    let result = run_worker(queue, options, handler, shutdown).await;
    listener.abort();
    cancel_relay.abort();
    result
}

/// The job handler, built outside `run` so that its type is opaque and
/// declared `Send`: inferred inside `run`'s future, the compiler cannot prove
/// it for every lifetime of the borrow of `shared`.
fn job_handler(
    shared: Arc<Shared>,
) -> impl Fn(Job) -> BoxFuture<'static, Result<(), JobError>> + Clone + Send + Sync + 'static {
    move |job: Job| {
        let shared = shared.clone();
        Box::pin(async move { dispatch(&shared, job).await })
    }
}

async fn dispatch(shared: &Arc<Shared>, job: Job) -> Result<(), JobError> {
    let timer = shared.metrics.job(job.kind);
    let result = match job.kind {
        JobKind::TestConnection => jobs::test_connection::run(shared, job.payload).await,
        JobKind::ExecuteProject => jobs::execute_project::run(shared, job.payload).await,
        JobKind::ProbeConnector => jobs::probe::run(shared, job.payload).await,
        JobKind::DeliverWebhook => jobs::deliver_webhook::run(shared, job.payload).await,
    };
    timer.finish(match &result {
        Ok(()) => "succeeded",
        Err(JobError::Abort(_)) => "failed",
        Err(JobError::Retry(_)) => "retried",
    });
    result
}

/// Compiles only while the worker's futures are `Send`: callers spawn
/// `run` (tests, `ferry up`) and the runtime spawns each job.
#[cfg(test)]
#[allow(dead_code)]
fn the_worker_and_its_jobs_can_run_on_any_thread(
    config: Config,
    context: WorkerContext,
    shared: Arc<Shared>,
) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&jobs::execute_project::run(&shared, serde_json::Value::Null));
    is_send(&jobs::test_connection::run(&shared, serde_json::Value::Null));
    is_send(&jobs::probe::run(&shared, serde_json::Value::Null));
    is_send(&jobs::deliver_webhook::run(&shared, serde_json::Value::Null));
    is_send(&run(config, std::future::pending()));
    is_send(&run_with(context, std::future::pending()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_networks_are_allowed_by_default_only_next_to_an_api_on_loopback() {
        #[derive(clap::Parser)]
        struct Worker {
            #[command(flatten)]
            args: Args,
        }
        let config = |setting: Option<bool>| {
            let mut config = <Worker as clap::Parser>::parse_from(["worker"]).args;
            config.allow_private_networks = setting;
            config
        };
        let address = |text: &str| Some(text.parse::<SocketAddr>().expect("address"));
        assert!(config(None).private_networks_allowed(address("127.0.0.1:8080")));
        assert!(config(None).private_networks_allowed(address("[::1]:8080")));
        assert!(!config(None).private_networks_allowed(address("0.0.0.0:8080")));
        assert!(!config(None).private_networks_allowed(address("10.1.2.3:8080")));
        assert!(!config(None).private_networks_allowed(None), "a separate worker");
        assert!(config(Some(true)).private_networks_allowed(address("0.0.0.0:8080")));
        assert!(config(Some(true)).private_networks_allowed(None));
        assert!(!config(Some(false)).private_networks_allowed(address("127.0.0.1:8080")));
    }

    #[test]
    fn the_worker_defaults_are_the_step_retry_defaults() {
        #[derive(clap::Parser)]
        struct Worker {
            #[command(flatten)]
            args: Args,
        }
        let config = <Worker as clap::Parser>::parse_from(["worker"]).args;
        assert_eq!(config.worker_concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(config.step_attempts, StepRetry::default().attempts);
        assert_eq!(*config.step_retry_delay, StepRetry::default().delay);
    }
}
