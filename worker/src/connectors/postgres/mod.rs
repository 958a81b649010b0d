//! PostgreSQL and Amazon Redshift (which speaks the PostgreSQL protocol):
//! sqlx pools built field by field from the connector's config.
//!
//! Hostile configurations cannot reach libpq-style options: the host must be
//! a DNS name or IP (no socket paths, host lists or `key=value` strings),
//! TLS roots are PEM text kept in memory, and the startup options are the
//! worker's own (`statement_timeout`, `default_transaction_read_only`).
//!
//! Steps cannot change the source: sessions start with
//! `default_transaction_read_only = on` unless the connector sets
//! `allow_writes`, and every connection is `DISCARD ALL`ed when it goes back
//! to the pool, so nothing one use sets reaches the next. sqlx reads some `PG*` variables
//! of the worker's own environment; the ones that would send the worker's
//! client certificate or options to users' servers make every PostgreSQL
//! connector fail instead (see [`environment_guard`]).

pub(crate) mod extract;

use std::net::SocketAddr;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use ferry_shared::connectors::TypeId;
use ferry_shared::domain::StepType;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{AssertSqlSafe, Connection, Executor, Row};

use crate::connectors::config::{Config, PoolSettings, SslMode, root_cert, ssl_mode};
use crate::connectors::errors::{DriverError, ErrorType, Secrets, map_sqlx_error};
use crate::connectors::network::{self, Endpoint, Relay, validate_host};
use crate::connectors::{ConnectorPool, Driver};
use crate::connectors::{ConnectorSpec, NetworkPolicy, TestDetails};
use crate::extract::SqlSource;

/// Environment variables sqlx would apply to every connection it makes.
const UNSAFE_ENV: [&str; 4] = ["PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGOPTIONS"];

/// One connector's pool and how it was built.
pub(crate) struct PgHandle {
    pub pool: PgPool,
    pub endpoint: Endpoint,
    pub settings: PoolSettings,
    secrets: Secrets,
    /// Carries verify-full connections to the pinned address.
    _relay: Option<Relay>,
}

/// Validates the config, resolves and checks the host, and builds a lazy
/// pool (no connection is made until one is acquired).
pub(crate) async fn open(
    spec: &ConnectorSpec,
    type_id: TypeId,
    policy: &NetworkPolicy,
) -> Result<(PgHandle, Vec<SocketAddr>), DriverError> {
    let config = Config::new(&spec.config);
    let redshift = type_id == TypeId::Redshift;
    let host = config.required_name("host")?;
    validate_host("host", host)?;
    let port = config.port("port", if redshift { 5439 } else { 5432 })?;
    let database = config.required_name("database")?;
    let username = config.required_name("username")?;
    let password = config.secret("password")?;
    let mode = ssl_mode(&config, &SslMode::ALL)?;
    let root = root_cert(&config)?;
    let settings = config.pool_settings()?;
    environment_guard()?;

    let (endpoint, addrs) = Endpoint::open(host, port, policy, mode == SslMode::VerifyFull).await?;
    let relay = endpoint.relay(&format!(".s.PGSQL.{port}"), settings.connect_timeout)?;

    let mut options = PgConnectOptions::new_without_pgpass()
        .host(&endpoint.connect_host())
        .port(port)
        .username(username)
        .database(database)
        .application_name("ferry-worker")
        .ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            // sqlx implements `allow` as `disable`; both `allow` and `prefer`
            // are opportunistic and unverified, and `prefer` encrypts
            // whenever the server can, so `allow` means `prefer` here.
            SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
            SslMode::VerifyCa => PgSslMode::VerifyCa,
            SslMode::VerifyFull => PgSslMode::VerifyFull,
        });
    if let Some(relay) = &relay {
        // verify-full by name: TLS checks the name, the bytes go to the
        // checked address (see `network::Relay`).
        options = options.socket(relay.dir());
    }
    if let Some(password) = password {
        options = options.password(password);
    }
    if let Some(pem) = root {
        options = options.ssl_root_cert_from_pem(pem);
    }
    let allow_writes = config.bool("allow_writes", false)?;
    let statement_ms = settings.statement_timeout.as_millis();
    if !redshift {
        // Startup options are the session's defaults: `DISCARD ALL` (on
        // every release) resets to them, so they hold for every step.
        options = options.options([("statement_timeout", statement_ms)]);
        if !allow_writes {
            options = options.options([("default_transaction_read_only", "on")]);
        }
    }

    let mut pool_options = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.connect_timeout)
        .idle_timeout(Some(settings.idle_timeout))
        .max_lifetime(Some(settings.max_lifetime));
    if redshift {
        // Redshift takes `statement_timeout` as a session setting; its
        // support for startup options is not documented. It has no
        // `DISCARD`, so a connection serves one use and is closed.
        let read_only = if allow_writes {
            ""
        } else {
            "; SET default_transaction_read_only TO on"
        };
        pool_options = pool_options
            .after_connect(move |connection, _meta| {
                Box::pin(async move {
                    connection
                        .execute(sqlx::raw_sql(AssertSqlSafe(format!(
                            "SET statement_timeout TO {statement_ms}{read_only}"
                        ))))
                        .await?;
                    Ok(())
                })
            })
            .after_release(|_connection, _meta| Box::pin(async { Ok(false) }));
    } else {
        pool_options = pool_options.after_release(|connection, _meta| {
            Box::pin(async move {
                // A step may leave a search_path, temp tables, prepared
                // statements, session variables, advisory locks or LISTENs
                // behind: none of it reaches the next use. DISCARD ALL also
                // drops the statements sqlx has prepared, so its cache goes
                // first. A failure (e.g. a transaction left open) closes
                // the connection instead.
                connection.clear_cached_statements().await?;
                connection.execute(sqlx::raw_sql("DISCARD ALL")).await?;
                Ok(true)
            })
        });
    }
    let pool = pool_options.connect_lazy_with(options);
    Ok((
        PgHandle {
            pool,
            endpoint,
            settings,
            secrets: spec.secrets(),
            _relay: relay,
        },
        addrs,
    ))
}

/// Refuses to connect when the worker's environment sets variables that
/// sqlx would apply to users' connections (a client certificate, extra
/// trusted roots, server options).
pub(crate) fn environment_guard() -> Result<(), DriverError> {
    let set: Vec<&str> = UNSAFE_ENV
        .into_iter()
        .filter(|name| std::env::var_os(name).is_some())
        .collect();
    if set.is_empty() {
        Ok(())
    } else {
        Err(DriverError::unknown(format!(
            "this worker's environment sets {}, which would apply to users' PostgreSQL connections; \
             the operator must unset it",
            set.join(", ")
        )))
    }
}

impl PgHandle {
    pub fn map_error(&self, error: &sqlx::Error) -> DriverError {
        map_error(error, &self.endpoint.target(), &self.secrets)
    }
}

/// A pooled connection for a connection test (PostgreSQL and MySQL): a cold
/// pool first gets a bare TCP probe, so a refused port is reported at once
/// instead of after the pool's retries until `acquire_timeout`.
pub(crate) async fn acquire_for_test<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    host: &str,
    addrs: &[SocketAddr],
    connect_timeout: std::time::Duration,
    map_error: impl Fn(&sqlx::Error) -> DriverError,
) -> Result<sqlx::pool::PoolConnection<DB>, DriverError> {
    if pool.size() == 0 {
        network::probe(host, addrs, connect_timeout).await?;
    }
    pool.acquire().await.map_err(|error| map_error(&error))
}

/// Closes a pool in the background: idle connections close now, in-use
/// ones when they are returned.
pub(crate) fn close_pool<DB: sqlx::Database>(pool: sqlx::Pool<DB>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move { pool.close().await });
        }
        // Without a runtime, dropping the last handle closes the pool.
        Err(_) => drop(pool),
    }
}

/// `PostgreSQL 15.20` from `PostgreSQL 15.20 (Debian …) on x86_64…`, and
/// `Redshift 1.0.12103` from Redshift's `PostgreSQL 8.0.2 on i686…,
/// Redshift 1.0.12103`.
pub(crate) fn display_version(version: &str) -> String {
    if let Some(at) = version.find("Redshift ") {
        let rest = &version[at..];
        return rest.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    }
    let words: Vec<&str> = version.split_whitespace().take(2).collect();
    match words.as_slice() {
        [name, number] => format!("{name} {}", number.trim_end_matches(',')),
        _ => version.chars().take(64).collect(),
    }
}

/// Maps a sqlx error met on a PostgreSQL/Redshift connection.
pub(crate) fn map_error(error: &sqlx::Error, target: &str, secrets: &Secrets) -> DriverError {
    map_sqlx_error(error, target, secrets, |database| {
        let code = database.code().map(|code| code.into_owned());
        let (kind, fallback) = match code.as_deref() {
            Some("28P01" | "28000") => (ErrorType::AuthenticationFailed, "invalid username or password"),
            Some("3D000") => (ErrorType::DatabaseNotFound, "the database does not exist"),
            Some("53300" | "57P03") => (
                ErrorType::ConnectionRefused,
                "the server is not accepting connections",
            ),
            Some(class) if class.starts_with("08") => (ErrorType::ConnectionRefused, "connection failure"),
            _ => (ErrorType::Unknown, "the server reported an error"),
        };
        (code, kind, fallback)
    })
}

/// The PostgreSQL family: PostgreSQL and Redshift.
pub(crate) struct Postgres;

#[async_trait]
impl Driver for Postgres {
    fn steps(&self) -> &'static [StepType] {
        &[StepType::SqlQuery]
    }

    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        let (decl, _) = spec.driver()?;
        Ok(Box::new(open(spec, decl.type_id, policy).await?.0))
    }
}

#[async_trait]
impl ConnectorPool for PgHandle {
    /// Tests through the pool (see [`acquire_for_test`]): one pooled
    /// connection answers `version()`, `now()` and the schemas the user may
    /// use.
    async fn test(&self, addrs: &[SocketAddr], _policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        let mut connection = acquire_for_test(
            &self.pool,
            &self.endpoint.host,
            addrs,
            self.settings.connect_timeout,
            |error| self.map_error(error),
        )
        .await?;
        let row = sqlx::query("SELECT version(), now()")
            .fetch_one(&mut *connection)
            .await
            .map_err(|error| self.map_error(&error))?;
        let version: String = row.try_get(0).map_err(|error| self.map_error(&error))?;
        let server_time = row.try_get::<DateTime<Utc>, _>(1).ok().or_else(|| {
            row.try_get::<NaiveDateTime, _>(1)
                .ok()
                .map(|naive| naive.and_utc())
        });
        let schemas: Vec<String> = sqlx::query_scalar(
            "SELECT nspname::text FROM pg_catalog.pg_namespace \
             WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' \
             AND has_schema_privilege(nspname, 'USAGE') ORDER BY 1",
        )
        .fetch_all(&mut *connection)
        .await
        .map_err(|error| self.map_error(&error))?;
        // Back to the pool now (sqlx would do it in a spawned task after a
        // ping), so that the next use finds this connection idle.
        connection.return_to_pool().await;
        Ok(TestDetails {
            version: Some(display_version(&version)),
            server_time,
            schemas: Some(schemas),
        })
    }

    async fn recheck(&self, policy: &NetworkPolicy) -> Result<Option<Vec<SocketAddr>>, DriverError> {
        self.endpoint.recheck(policy).await
    }

    fn sql_source(&self) -> Option<SqlSource> {
        Some(SqlSource::Postgres(self.pool.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_shortened_to_product_and_number() {
        assert_eq!(
            display_version(
                "PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc"
            ),
            "PostgreSQL 15.20"
        );
        assert_eq!(
            display_version(
                "PostgreSQL 8.0.2 on i686-pc-linux-gnu, compiled by GCC gcc (GCC) 3.4.2 20041017 (Red Hat 3.4.2-6.fc3), Redshift 1.0.12103"
            ),
            "Redshift 1.0.12103"
        );
        assert_eq!(
            display_version("PostgreSQL 16.1, compiled by Visual C++"),
            "PostgreSQL 16.1"
        );
    }

    #[test]
    fn pool_errors_and_io_errors_map_to_the_vocabulary() {
        let secrets = Secrets::default();
        assert_eq!(
            map_error(&sqlx::Error::PoolTimedOut, "db:5432", &secrets).kind(),
            ErrorType::Timeout
        );
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(
            map_error(&refused, "db:5432", &secrets).kind(),
            ErrorType::ConnectionRefused
        );
        let tls = sqlx::Error::Tls("server does not support TLS".into());
        let mapped = map_error(&tls, "db:5432", &secrets);
        assert_eq!(mapped.kind(), ErrorType::TlsError);
        assert!(mapped.message().contains("does not support TLS"));
    }
}
