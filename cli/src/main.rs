//! `ferry`: every role of Ferry in one binary, plus the operator commands.
//! This file only wires roles together; each role lives in its own crate.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferry_admin::Readiness;
use ferry_api::auth::{TokenClaims, mint_hs256};
use ferry_shared::backends::{Backends, open_store};
use ferry_shared::config::{
    AdminArgs, CommonArgs, ConfigError, ExposeSecret, Mode, Settings, create_private_dir, redact_url,
};
use ferry_shared::domain::OrgRole;
use ferry_shared::store::Store;
use ferry_shared::vault::Vault;
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
        api: ferry_api::Args,
        #[command(flatten)]
        worker: ferry_worker::Args,
        #[command(flatten)]
        scheduler: ferry_scheduler::Args,
    },
    /// Run the HTTP API role.
    Api {
        #[command(flatten)]
        api: ferry_api::Args,
    },
    /// Run a worker (admin endpoint: /metrics, /healthz, /readyz).
    Worker {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        worker: ferry_worker::Args,
    },
    /// Run the scheduler (admin endpoint: /metrics, /healthz, /readyz).
    Scheduler {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        scheduler: ferry_scheduler::Args,
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

impl From<std::io::Error> for Fatal {
    fn from(error: std::io::Error) -> Self {
        Fatal(error.to_string())
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
            api,
            worker,
            scheduler,
        } => {
            let settings = Settings::resolve(&common, Mode::Embedded)?;
            ferry_shared::telemetry::init(settings.log_format);
            let jwt = common.jwt.resolve(Mode::Embedded, &settings.data_dir)?;
            let backends = Backends::open(&settings, true).await?;
            backends.store.migrate().await?;
            let registry = role_registry("up")?;
            let shutdown = shutdown_signal();
            let worker = ferry_worker::Config {
                api_listen: Some(api.listen),
                args: worker,
                settings: settings.clone(),
                backends: backends.clone(),
                registry: registry.clone(),
            };
            let scheduler = ferry_scheduler::Config {
                args: scheduler,
                settings: settings.clone(),
                backends: backends.clone(),
                registry: registry.clone(),
            };
            let api = ferry_api::Config {
                args: api,
                jwt,
                backends,
                registry,
            };
            tracing::info!(data_dir = %settings.data_dir.display(), "ferry up: api, worker and scheduler in one process");
            let api = ferry_api::run(api, wait(shutdown.clone()));
            let worker = ferry_worker::run(worker, wait(shutdown.clone()));
            let scheduler = ferry_scheduler::run(scheduler, wait(shutdown));
            tokio::try_join!(
                async { Ok::<_, Fatal>(api.await?) },
                async { Ok::<_, Fatal>(worker.await?) },
                async { Ok::<_, Fatal>(scheduler.await?) },
            )?;
            Ok(())
        }
        Command::Api { api } => {
            let settings = Settings::resolve(&common, Mode::Distributed)?;
            ferry_shared::telemetry::init(settings.log_format);
            let jwt = common.jwt.resolve(Mode::Distributed, &settings.data_dir)?;
            let api = ferry_api::Config {
                args: api,
                jwt,
                backends: Backends::open(&settings, false).await?,
                registry: role_registry("api")?,
            };
            Ok(ferry_api::run(api, wait(shutdown_signal())).await?)
        }
        Command::Worker { admin, worker } => {
            let settings = Settings::resolve(&common, Mode::Distributed)?;
            ferry_shared::telemetry::init(settings.log_format);
            let backends = Backends::open(&settings, false).await?;
            let registry = role_registry("worker")?;
            let shutdown = shutdown_signal();
            let admin_server =
                serve_admin(&admin, backends.store.clone(), registry.clone(), shutdown.clone());
            let worker = ferry_worker::Config {
                args: worker,
                settings,
                backends,
                registry,
                api_listen: None,
            };
            let worker = ferry_worker::run(worker, wait(shutdown));
            tokio::try_join!(admin_server, async { Ok::<_, Fatal>(worker.await?) })?;
            Ok(())
        }
        Command::Scheduler { admin, scheduler } => {
            let settings = Settings::resolve(&common, Mode::Distributed)?;
            ferry_shared::telemetry::init(settings.log_format);
            let backends = Backends::open(&settings, false).await?;
            let registry = role_registry("scheduler")?;
            let shutdown = shutdown_signal();
            let admin_server =
                serve_admin(&admin, backends.store.clone(), registry.clone(), shutdown.clone());
            let scheduler = ferry_scheduler::Config {
                args: scheduler,
                settings,
                backends,
                registry,
            };
            let scheduler = ferry_scheduler::run(scheduler, wait(shutdown));
            tokio::try_join!(admin_server, async { Ok::<_, Fatal>(scheduler.await?) })?;
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
            let secret = jwt
                .hs256_secret
                .as_ref()
                .map(ExposeSecret::expose_secret)
                .ok_or_else(|| {
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

/// The registry a role serves on `/metrics`.
fn role_registry(role: &str) -> Result<prometheus::Registry, Fatal> {
    ferry_admin::registry(role).map_err(|e| Fatal(format!("cannot register the metrics: {e}")))
}

/// Serves the admin endpoint of a worker or scheduler process until
/// `shutdown`; ready while the metadata store answers.
async fn serve_admin(
    admin: &AdminArgs,
    store: Arc<dyn Store>,
    registry: prometheus::Registry,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Fatal> {
    let address = admin.admin_listen;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Fatal(format!("cannot listen on {address} (FERRY_ADMIN_LISTEN): {e}")))?;
    let readiness = Readiness::new(move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|error| error.to_string()) }
    });
    ferry_admin::serve(listener, registry, readiness, wait(shutdown))
        .await
        .map_err(|e| Fatal(format!("the admin endpoint failed: {e}")))
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
