//! `ferry`: every role of Ferry in one binary, plus the operator commands.
//! This file only wires roles together; each role lives in its own crate.

mod admin;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferry_api::auth::{JwtSettings, TokenClaims, Verifier, mint_hs256};
use ferry_shared::config::{
    AdminArgs, CommonArgs, ConfigError, HttpArgs, Mode, SchedulerArgs, Settings, WorkerArgs,
    create_private_dir, redact_url,
};
use ferry_shared::domain::OrgRole;
use ferry_shared::objects::ObjectTarget;
use ferry_shared::queue::{Bus, EmbeddedQueue, LocalBus, Queue, RedisBus, RedisQueue};
use ferry_shared::store::{self, Store};
use ferry_shared::vault::Vault;
use ferry_worker::connectors::NetworkPolicy;
use tokio::sync::watch;

/// Ferry: a self-hostable engine for data-analysis projects.
///
/// Every setting is a FERRY_* environment variable or the matching flag.
/// `ferry up` runs the whole engine on embedded defaults (SQLite, local
/// files, generated keys under --data-dir); the api, worker and scheduler
/// roles run separately against PostgreSQL and Redis.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the api, a worker and the scheduler in one process on embedded
    /// defaults; applies migrations first.
    Up {
        #[command(flatten)]
        http: HttpArgs,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        scheduler: SchedulerArgs,
    },
    /// Run the HTTP API role.
    Api {
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Run a worker (admin endpoint: /metrics, /healthz, /readyz).
    Worker {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    },
    /// Run the scheduler (admin endpoint: /metrics, /healthz, /readyz).
    Scheduler {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        scheduler: SchedulerArgs,
    },
    /// Apply pending metadata-store migrations and exit.
    Migrate,
    /// Manage the credential vault's master keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print a development JWT signed with the HS256 secret (in embedded
    /// mode, the one in the data directory).
    Token {
        /// User id (`sub` claim).
        #[arg(long)]
        user: String,
        /// Organization id (`org_id` claim).
        #[arg(long)]
        org: String,
        /// Make the user an organization admin (`org_role: admin`).
        #[arg(long)]
        admin: bool,
        /// Email claim.
        #[arg(long)]
        email: Option<String>,
        /// Lifetime, e.g. 1h, 30m, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-encrypt every stored secret under the first key of
    /// FERRY_MASTER_KEY; afterwards the other keys can be removed.
    Rotate,
}

/// A failure that ends the process with one line on stderr.
#[derive(Debug)]
struct Fatal(String);

impl From<ConfigError> for Fatal {
    fn from(error: ConfigError) -> Self {
        Fatal(error.0)
    }
}

impl From<ferry_shared::Error> for Fatal {
    fn from(error: ferry_shared::Error) -> Self {
        Fatal(error.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Everything Ferry writes (the data directory, the SQLite files, the
    // generated keys, local result objects) is for its own user only.
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Fatal> {
    let common = cli.common;
    match cli.command {
        Command::Up {
            http,
            worker,
            scheduler,
        } => {
            let settings = Settings::resolve(&common, Mode::Embedded)?;
            ferry_shared::telemetry::init(settings.log_format);
            let jwt = common.jwt.resolve(Mode::Embedded, &settings.data_dir)?;
            let backends = open_backends(&settings, true).await?;
            backends.store.migrate().await?;
            let registry = role_registry("up")?;
            let shutdown = shutdown_signal();
            let api = serve_api(&backends, jwt, registry.clone(), &http, shutdown.clone());
            let worker = ferry_worker::run(
                worker_context(&backends, &settings, &worker, registry.clone(), Some(http.listen)),
                wait(shutdown.clone()),
            );
            let scheduler = ferry_scheduler::run(
                scheduler_context(
                    ferry_scheduler::SchedulerContext::new(
                        backends.store.clone(),
                        registry,
                        backends.queue.clone(),
                        ferry_scheduler::LeaderElection::single_process(),
                    ),
                    &scheduler,
                ),
                wait(shutdown),
            );
            tracing::info!(data_dir = %settings.data_dir.display(), "ferry up: api, worker and scheduler in one process");
            tokio::try_join!(api, async { worker.await.map_err(Fatal::from) }, async {
                scheduler.await.map_err(Fatal::from)
            })?;
            Ok(())
        }
        Command::Api { http } => {
            let settings = Settings::resolve(&common, Mode::Distributed)?;
            ferry_shared::telemetry::init(settings.log_format);
            let jwt = common.jwt.resolve(Mode::Distributed, &settings.data_dir)?;
            let backends = open_backends(&settings, false).await?;
            serve_api(&backends, jwt, role_registry("api")?, &http, shutdown_signal()).await
        }
        Command::Worker { admin, worker } => {
            let settings = Settings::resolve(&common, Mode::Distributed)?;
            ferry_shared::telemetry::init(settings.log_format);
            let backends = open_backends(&settings, false).await?;
            let registry = role_registry("worker")?;
            let shutdown = shutdown_signal();
            let admin_server = admin::serve(
                admin.admin_listen,
                backends.store.clone(),
                registry.clone(),
                wait(shutdown.clone()),
            );
            let worker = ferry_worker::run(
                worker_context(&backends, &settings, &worker, registry, None),
                wait(shutdown),
            );
            tokio::try_join!(admin_server, async { worker.await.map_err(Fatal::from) })?;
            Ok(())
        }
        Command::Scheduler { admin, scheduler } => {
            let settings = Settings::resolve(&common, Mode::Distributed)?;
            ferry_shared::telemetry::init(settings.log_format);
            let backends = open_backends(&settings, false).await?;
            let leader = match &settings.redis_url {
                Some(url) => ferry_scheduler::LeaderElection::redis(
                    url.expose(),
                    &settings.redis_prefix,
                    ferry_scheduler::DEFAULT_LEADER_TTL,
                )
                .await
                .map_err(|e| Fatal(format!("cannot reach Redis at {}: {e}", redact_url(url.expose()))))?,
                None => ferry_scheduler::LeaderElection::single_process(),
            };
            let registry = role_registry("scheduler")?;
            let shutdown = shutdown_signal();
            let admin_server = admin::serve(
                admin.admin_listen,
                backends.store.clone(),
                registry.clone(),
                wait(shutdown.clone()),
            );
            let context = scheduler_context(
                ferry_scheduler::SchedulerContext::new(
                    backends.store.clone(),
                    registry,
                    backends.queue.clone(),
                    leader,
                ),
                &scheduler,
            );
            let scheduler = ferry_scheduler::run(context, wait(shutdown));
            tokio::try_join!(admin_server, async { scheduler.await.map_err(Fatal::from) })?;
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let settings = Settings::resolve(&common, Mode::Distributed)?;
            ferry_shared::telemetry::init(settings.log_format);
            let store = open_store(&settings).await?;
            let vault = Vault::new(settings.master_keys.clone());
            let rotation = ferry_shared::rotation::rotate_all(store.as_ref(), &vault).await?;
            println!(
                "re-encrypted {} connector secret(s) under key {}",
                rotation.rotated, rotation.key_id
            );
            if !rotation.is_complete() {
                return Err(Fatal(format!(
                    "{} connector secret(s) are still sealed under a key other than {} \
                     ({} cannot be decrypted with FERRY_MASTER_KEY); keep the old keys configured \
                     and run `ferry keys rotate` again once every replica encrypts with {}",
                    rotation.remaining, rotation.key_id, rotation.undecryptable, rotation.key_id
                )));
            }
            println!("verified: no connector secret remains under another key");
            Ok(())
        }
        Command::Migrate => {
            let settings = Settings::resolve(&common, Mode::Embedded)?;
            ferry_shared::telemetry::init(settings.log_format);
            let store = open_store(&settings).await?;
            store.migrate().await?;
            println!(
                "migrations applied to {}",
                redact_url(settings.database_url.expose())
            );
            Ok(())
        }
        Command::Token {
            user,
            org,
            admin,
            email,
            ttl,
        } => {
            let data_dir = common.data_dir.clone();
            if common.jwt.jwt_hs256_secret.is_none() {
                create_private_dir(&data_dir)?;
            }
            let jwt = common.jwt.resolve(Mode::Embedded, &data_dir)?;
            let secret = jwt.hs256_secret.as_deref().ok_or_else(|| {
                Fatal("ferry token signs with an HS256 secret: set FERRY_JWT_HS256_SECRET".into())
            })?;
            let ttl = chrono::Duration::from_std(ttl).map_err(|_| Fatal("--ttl is too large".into()))?;
            let claims = TokenClaims {
                sub: user,
                org_id: org,
                org_role: if admin { OrgRole::Admin } else { OrgRole::Member },
                email,
                exp: (chrono::Utc::now() + ttl).timestamp(),
                iss: jwt.issuer.clone(),
                aud: jwt.audience.clone(),
            };
            let token = mint_hs256(secret, &claims).map_err(|e| Fatal(e.0))?;
            println!("{token}");
            Ok(())
        }
    }
}

/// The backends every role shares.
struct Backends {
    store: Arc<dyn Store>,
    queue: Arc<dyn Queue>,
    bus: Arc<dyn Bus>,
    vault: Arc<Vault>,
    objects: Arc<ObjectTarget>,
}

/// Opens the metadata store, the queue and the bus: Redis when
/// FERRY_REDIS_URL is set, otherwise the embedded queue (only `ferry up`,
/// whose roles share one process, may use it).
async fn open_backends(settings: &Settings, single_process: bool) -> Result<Backends, Fatal> {
    let store = open_store(settings).await?;
    let (queue, bus): (Arc<dyn Queue>, Arc<dyn Bus>) = match &settings.redis_url {
        Some(url) => {
            let url = url.expose();
            let fail =
                |e: ferry_shared::Error| Fatal(format!("cannot reach Redis at {}: {e}", redact_url(url)));
            let queue = RedisQueue::connect(url, &settings.redis_prefix, settings.job_lease)
                .await
                .map_err(fail)?;
            let bus = RedisBus::connect(url, &settings.redis_prefix)
                .await
                .map_err(fail)?;
            (Arc::new(queue), Arc::new(bus))
        }
        None if single_process => {
            let path = settings.data_dir.join("queue.db");
            let queue = EmbeddedQueue::open(&path, settings.job_lease)
                .await
                .map_err(|e| Fatal(format!("cannot open the embedded queue {}: {e}", path.display())))?;
            (Arc::new(queue), Arc::new(LocalBus::new()))
        }
        None => {
            return Err(Fatal(
                "FERRY_REDIS_URL is required when the roles run as separate processes (or run them together with `ferry up`)"
                    .into(),
            ));
        }
    };
    let objects = ObjectTarget::open(&settings.object_store_url).map_err(|e| {
        Fatal(format!(
            "cannot open the object store {}: {e}",
            redact_url(&settings.object_store_url)
        ))
    })?;
    Ok(Backends {
        store,
        queue,
        bus,
        vault: Arc::new(Vault::new(settings.master_keys.clone())),
        objects: Arc::new(objects),
    })
}

fn worker_context(
    backends: &Backends,
    settings: &Settings,
    args: &WorkerArgs,
    registry: prometheus::Registry,
    api_listen: Option<std::net::SocketAddr>,
) -> ferry_worker::WorkerContext {
    ferry_worker::WorkerContext {
        store: backends.store.clone(),
        queue: backends.queue.clone(),
        bus: backends.bus.clone(),
        vault: backends.vault.clone(),
        objects: backends.objects.clone(),
        registry,
        lease: settings.job_lease,
        policy: NetworkPolicy {
            allow_private_networks: args.private_networks_allowed(api_listen),
            sqlite_dir: args
                .sqlite_dir
                .clone()
                .unwrap_or_else(|| settings.data_dir.join("sqlite")),
        },
        concurrency: args.worker_concurrency,
        retry: ferry_worker::jobs::execute_project::StepRetry {
            attempts: args.step_attempts,
            delay: args.step_retry_delay,
            ..Default::default()
        },
    }
}

/// `context` with the reaper's timing from the command line.
fn scheduler_context(
    mut context: ferry_scheduler::SchedulerContext,
    args: &SchedulerArgs,
) -> ferry_scheduler::SchedulerContext {
    context.reap_interval = Duration::from_secs(args.reap_interval_seconds);
    context.queued_grace = Duration::from_secs(args.queued_grace_seconds);
    context
}

/// The registry a role serves on `/metrics`, holding from the start
/// `ferry_build_info{role, version} 1` (the role's own families are
/// registered, with zero values, as it starts).
fn role_registry(role: &str) -> Result<prometheus::Registry, Fatal> {
    let registry = prometheus::Registry::new();
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(
            "ferry_build_info",
            "Always 1, labelled with the role this process plays and the Ferry version",
        ),
        &["role", "version"],
    )
    .and_then(|info| {
        registry.register(Box::new(info.clone()))?;
        Ok(info)
    })
    .map_err(|e| Fatal(format!("cannot register the metrics: {e}")))?;
    info.with_label_values(&[role, env!("CARGO_PKG_VERSION")]).set(1);
    Ok(registry)
}

/// Connects to the metadata store; an unreachable one is a one-line error.
async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, Fatal> {
    let url = settings.database_url.expose();
    store::connect(url).await.map_err(|error| {
        Fatal(format!(
            "cannot open the metadata database at {}: {error}",
            redact_url(url)
        ))
    })
}

async fn serve_api(
    backends: &Backends,
    jwt: JwtSettings,
    registry: prometheus::Registry,
    http: &HttpArgs,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Fatal> {
    let verifier = Arc::new(Verifier::new(jwt).await?);
    let state = ferry_api::AppState::new(
        ferry_api::Backends {
            store: backends.store.clone(),
            queue: backends.queue.clone(),
            bus: backends.bus.clone(),
            vault: backends.vault.clone(),
            objects: backends.objects.clone(),
        },
        verifier,
        registry,
    )?
    .with_sync_timeout(Duration::from_secs(http.sync_timeout_seconds))
    .with_rate_limit(http.rate_limit())
    .with_result_max_bytes(usize::try_from(http.result_max_bytes).unwrap_or(usize::MAX))
    .with_limits(ferry_api::limits::Limits {
        sse_max_lifetime: Duration::from_secs(http.sse_max_lifetime_seconds),
        sse_streams_per_user: http.sse_max_streams_per_user,
        connection_tests_per_org: http.connection_tests_per_org,
    });
    let app = ferry_api::router(
        state,
        &ferry_api::ApiConfig {
            max_body_bytes: http.max_body_bytes,
        },
    );
    let listener = tokio::net::TcpListener::bind(http.listen)
        .await
        .map_err(|e| Fatal(format!("cannot listen on {}: {e}", http.listen)))?;
    let address = listener.local_addr().map_err(|e| Fatal(e.to_string()))?;
    tracing::info!(%address, "api listening");
    ferry_api::serve(listener, app, wait(shutdown))
        .await
        .map_err(|e| Fatal(format!("the api server failed: {e}")))
}

/// A channel that turns true on SIGINT or SIGTERM.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            () = terminate => {},
        }
        tracing::info!("shutting down");
        let _ = sender.send(true);
    });
    receiver
}

/// Resolves once the shutdown channel turns true (or its sender is gone).
async fn wait(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
