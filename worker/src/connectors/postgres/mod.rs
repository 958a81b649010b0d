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

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use ferry_shared::config::ExposeSecret;
use ferry_shared::connectors::TypeId;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgSslMode};
use sqlx::{AssertSqlSafe, Connection, Executor, Row};

use crate::connectors::config::{Fields, PoolSettings, SslMode};
use crate::connectors::errors::{DriverError, ErrorType, Secrets, map_sqlx_error};
use crate::connectors::sql::{ServerConfig, SqlFamily, SqlHandle, one_use_per_connection, pool_options};
use crate::connectors::{ConnectorSpec, NetworkPolicy, TestDetails};
use crate::extract::SqlSource;

/// Where the step runners close pools from; the SQL families share it.
pub(crate) use crate::connectors::sql::close_pool;

/// Environment variables sqlx would apply to every connection it makes.
const UNSAFE_ENV: [&str; 4] = ["PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGOPTIONS"];

/// A PostgreSQL or Redshift connector's own config fields, read once.
#[derive(Debug)]
pub(crate) struct PgConfig {
    pub server: ServerConfig,
    /// Let steps write; sessions are read-only otherwise.
    pub allow_writes: bool,
    /// A Redshift connector: session settings are sent after connecting,
    /// and connections are not reused.
    pub redshift: bool,
}

/// The PostgreSQL family: PostgreSQL and Redshift.
pub(crate) struct Postgres;

#[async_trait]
impl SqlFamily for Postgres {
    type Database = sqlx::Postgres;
    type Config = PgConfig;

    fn config(fields: &mut Fields<'_>) -> Result<PgConfig, DriverError> {
        Ok(PgConfig {
            server: ServerConfig::read(fields, &SslMode::ALL)?,
            allow_writes: fields.bool("allow_writes")?,
            redshift: fields.type_id() == TypeId::Redshift,
        })
    }

    /// Resolves and checks the host, and builds a lazy pool (no connection
    /// is made until one is acquired).
    async fn open(
        config: PgConfig,
        settings: PoolSettings,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<SqlHandle<Self>, DriverError> {
        environment_guard()?;
        let PgConfig {
            server,
            allow_writes,
            redshift,
        } = config;
        let route = server
            .route(
                policy,
                &format!(".s.PGSQL.{}", server.port),
                settings.connect_timeout,
            )
            .await?;

        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&route.endpoint.connect_host())
            .port(server.port)
            .username(&server.username)
            .database(&server.database)
            .application_name("ferry-worker")
            .ssl_mode(match server.tls.mode {
                SslMode::Disable => PgSslMode::Disable,
                // sqlx implements `allow` as `disable`; both `allow` and `prefer`
                // are opportunistic and unverified, and `prefer` encrypts
                // whenever the server can, so `allow` means `prefer` here.
                SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
                SslMode::Require => PgSslMode::Require,
                SslMode::VerifyCa => PgSslMode::VerifyCa,
                SslMode::VerifyFull => PgSslMode::VerifyFull,
            });
        if let Some(relay) = &route.relay {
            // verify-full by name: TLS checks the name, the bytes go to the
            // checked address (see `network::Relay`).
            options = options.socket(relay.dir());
        }
        if let Some(password) = &server.password {
            options = options.password(password.expose_secret());
        }
        if let Some(pem) = server.tls.root_cert {
            options = options.ssl_root_cert_from_pem(pem.into_bytes());
        }
        let statement_ms = settings.statement_timeout.as_millis();
        if !redshift {
            // Startup options are the session's defaults: `DISCARD ALL` (on
            // every release) resets to them, so they hold for every step.
            options = options.options([("statement_timeout", statement_ms)]);
            if !allow_writes {
                options = options.options([("default_transaction_read_only", "on")]);
            }
        }

        let pool_options = if redshift {
            // Redshift takes `statement_timeout` as a session setting; its
            // support for startup options is not documented. It has no
            // `DISCARD`, so a connection serves one use and is closed.
            let read_only = if allow_writes {
                ""
            } else {
                "; SET default_transaction_read_only TO on"
            };
            one_use_per_connection(pool_options::<sqlx::Postgres>(&settings)).after_connect(
                move |connection, _meta| {
                    Box::pin(async move {
                        connection
                            .execute(sqlx::raw_sql(AssertSqlSafe(format!(
                                "SET statement_timeout TO {statement_ms}{read_only}"
                            ))))
                            .await?;
                        Ok(())
                    })
                },
            )
        } else {
            pool_options::<sqlx::Postgres>(&settings).after_release(|connection, _meta| {
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
            })
        };
        let pool = pool_options.connect_lazy_with(options);
        Ok(SqlHandle::new(spec, pool, settings, Some(route)))
    }

    fn source(pool: &PgPool) -> SqlSource {
        SqlSource::Postgres(pool.clone())
    }

    /// `version()`, `now()` and the schemas the user may use.
    async fn details(connection: &mut PoolConnection<sqlx::Postgres>) -> Result<TestDetails, sqlx::Error> {
        let row = sqlx::query("SELECT version(), now()")
            .fetch_one(&mut **connection)
            .await?;
        let version: String = row.try_get(0)?;
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
        .fetch_all(&mut **connection)
        .await?;
        Ok(TestDetails {
            version: Some(display_version(&version)),
            server_time,
            schemas: Some(schemas),
        })
    }

    fn map_error(error: &sqlx::Error, target: &str, secrets: &Secrets) -> DriverError {
        map_error(error, target, secrets)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::config::object;
    use crate::connectors::sql::read_config;
    use serde_json::json;

    fn read(type_id: TypeId, config: serde_json::Value) -> Result<(PgConfig, PoolSettings), DriverError> {
        read_config::<Postgres>(type_id.decl(), &object(config))
    }

    #[test]
    fn a_config_takes_the_declared_defaults() {
        let minimal = json!({"host": "db.example.com", "database": "dev", "username": "u"});
        let (redshift, settings) = read(TypeId::Redshift, minimal.clone()).expect("config");
        assert_eq!(redshift.server.port, 5439);
        assert!(redshift.redshift && !redshift.allow_writes);
        assert_eq!(redshift.server.tls.mode, SslMode::Prefer);
        assert!(redshift.server.password.is_none());
        assert_eq!(settings.max_connections, 5);
        assert_eq!(settings.statement_timeout, std::time::Duration::from_secs(300));
        let (postgres, _) = read(TypeId::Postgresql, minimal).expect("config");
        assert_eq!(postgres.server.port, 5432);
        assert!(!postgres.redshift);
    }

    #[test]
    fn a_config_field_postgresql_does_not_have_is_refused_naming_it() {
        let config = json!({"host": "db", "database": "d", "username": "u", "sslcert": "/etc/client.pem"});
        let error = read(TypeId::Postgresql, config).expect_err("unknown field");
        assert_eq!(error.kind(), ErrorType::InvalidConfig);
        assert_eq!(
            error.message(),
            "config.sslcert is not a field of postgresql connectors"
        );
    }

    #[test]
    fn a_config_does_not_show_its_password() {
        let config = json!({"host": "db", "database": "d", "username": "u", "password": "hunter2"});
        let (config, _) = read(TypeId::Postgresql, config).expect("config");
        let shown = format!("{config:?}");
        assert!(
            shown.contains("username") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(
            config.server.password.as_ref().map(ExposeSecret::expose_secret),
            Some("hunter2")
        );
    }

    #[test]
    fn bad_hosts_and_ports_are_refused_with_the_field_named() {
        for (config, expected) in [
            (
                json!({"host": "db", "port": 70_000, "database": "d", "username": "u"}),
                "config.port must be between 1 and 65535",
            ),
            (
                json!({"host": "db", "port": "5432x", "database": "d", "username": "u"}),
                "config.port must be a non-negative integer",
            ),
            (
                json!({"database": "d", "username": "u"}),
                "config.host is required",
            ),
            (
                json!({"host": "db", "database": "d"}),
                "config.username is required",
            ),
        ] {
            let error = read(TypeId::Postgresql, config).expect_err(expected);
            assert_eq!(error.message(), expected);
        }
        let error = read(
            TypeId::Postgresql,
            json!({"host": "/tmp", "database": "d", "username": "u"}),
        )
        .expect_err("a socket path");
        assert!(error.message().starts_with("config.host "), "{}", error.message());
    }

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
