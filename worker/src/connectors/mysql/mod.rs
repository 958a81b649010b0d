//! MySQL and MariaDB: sqlx pools built field by field from the config.
//!
//! `LOAD DATA LOCAL INFILE` is impossible on these connections: sqlx-mysql
//! never sets the `CLIENT_LOCAL_FILES` capability in its handshake (see
//! `sqlx-mysql/src/connection/stream.rs`), so the server refuses the
//! statement (error 1148) and a hostile server's file request is never
//! answered with a file. The integration suite proves it against MariaDB.
//!
//! A connection serves one step or test and is closed when it goes back to
//! the pool (see `open`): sessions never carry state from one use to the
//! next.

pub(crate) mod extract;

use std::net::SocketAddr;

use async_trait::async_trait;
use chrono::NaiveDateTime;
use ferry_shared::domain::StepType;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlSslMode};
use sqlx::{AssertSqlSafe, Executor};

use crate::connectors::config::{Config, PoolSettings, SslMode, root_cert, ssl_mode};
use crate::connectors::errors::{DriverError, ErrorType, Secrets, map_sqlx_error};
use crate::connectors::network::{Endpoint, Relay, validate_host};
use crate::connectors::postgres::acquire_for_test;
use crate::connectors::{ConnectorPool, Driver};
use crate::connectors::{ConnectorSpec, NetworkPolicy, TestDetails};
use crate::extract::SqlSource;

const MODES: [SslMode; 5] = [
    SslMode::Disable,
    SslMode::Prefer,
    SslMode::Require,
    SslMode::VerifyCa,
    SslMode::VerifyFull,
];

/// Schemas every server has; not reported as the user's databases.
const SYSTEM_SCHEMAS: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

pub(crate) struct MySqlHandle {
    pub pool: MySqlPool,
    pub endpoint: Endpoint,
    pub settings: PoolSettings,
    secrets: Secrets,
    /// Carries verify-full connections to the pinned address.
    _relay: Option<Relay>,
}

pub(crate) async fn open(
    spec: &ConnectorSpec,
    policy: &NetworkPolicy,
) -> Result<(MySqlHandle, Vec<SocketAddr>), DriverError> {
    let config = Config::new(&spec.config);
    let host = config.required_name("host")?;
    validate_host("host", host)?;
    let port = config.port("port", 3306)?;
    let database = config.required_name("database")?;
    let username = config.required_name("username")?;
    let password = config.secret("password")?;
    let mode = ssl_mode(&config, &MODES)?;
    let root = root_cert(&config)?;
    let charset = config.name("charset")?.unwrap_or("utf8mb4");
    // sqlx sends `SET NAMES <charset>`: only a bare identifier may get there.
    if charset.is_empty()
        || charset.len() > 32
        || !charset.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(DriverError::invalid_config(
            "config.charset must be a character set name such as utf8mb4",
        ));
    }
    let settings = config.pool_settings()?;

    let (endpoint, addrs) = Endpoint::open(host, port, policy, mode == SslMode::VerifyFull).await?;
    let relay = endpoint.relay("mysql.sock", settings.connect_timeout)?;

    let mut options = MySqlConnectOptions::new()
        .host(&endpoint.connect_host())
        .port(port)
        .username(username)
        .database(database)
        .charset(charset)
        // Keep the server's SQL mode: users' queries must mean what they
        // mean in their own client (`||` stays OR).
        .pipes_as_concat(false)
        .ssl_mode(match mode {
            SslMode::Disable => MySqlSslMode::Disabled,
            SslMode::Allow | SslMode::Prefer => MySqlSslMode::Preferred,
            SslMode::Require => MySqlSslMode::Required,
            SslMode::VerifyCa => MySqlSslMode::VerifyCa,
            SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        });
    if let Some(relay) = &relay {
        // verify-full by name: TLS checks the name, the bytes go to the
        // checked address (see `network::Relay`).
        options = options.socket(relay.path());
    }
    if let Some(password) = password {
        options = options.password(password);
    }
    if let Some(pem) = root {
        options = options.ssl_ca_from_pem(pem);
    }

    let statement_timeout = settings.statement_timeout;
    let pool = MySqlPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.connect_timeout)
        .idle_timeout(Some(settings.idle_timeout))
        .max_lifetime(Some(settings.max_lifetime))
        .after_connect(move |connection, _meta| {
            Box::pin(async move {
                // MariaDB: max_statement_time (seconds, all statements);
                // MySQL 5.7.8+: max_execution_time (ms, SELECT only). A
                // failure here must not fail the connection (the pool would
                // retry it until acquire_timeout), so it is only logged.
                let seconds = statement_timeout.as_secs();
                let mariadb = format!("SET SESSION max_statement_time = {seconds}");
                let mysql = format!("SET SESSION max_execution_time = {}", seconds * 1000);
                if connection.execute(sqlx::raw_sql(AssertSqlSafe(mariadb))).await.is_err()
                    && let Err(error) = connection.execute(sqlx::raw_sql(AssertSqlSafe(mysql))).await
                {
                    tracing::warn!(error = %error.to_string().chars().take(200).collect::<String>(), "mysql statement timeout not set");
                }
                Ok(())
            })
        })
        // sqlx 0.9 cannot send COM_RESET_CONNECTION (or COM_CHANGE_USER),
        // and no SQL statement clears a session's temporary tables, user
        // variables and session variables all at once, so a connection
        // serves one use and is then closed: nothing a step leaves in its
        // session reaches another.
        .after_release(|_connection, _meta| Box::pin(async { Ok(false) }))
        .connect_lazy_with(options);
    Ok((
        MySqlHandle {
            pool,
            endpoint,
            settings,
            secrets: spec.secrets(),
            _relay: relay,
        },
        addrs,
    ))
}

impl MySqlHandle {
    pub fn map_error(&self, error: &sqlx::Error) -> DriverError {
        map_error(error, &self.endpoint.target(), &self.secrets)
    }
}

/// `MariaDB 10.11.19` from `10.11.19-MariaDB-0+deb12u1`, `MySQL 8.0.36`
/// from `8.0.36` or `8.0.36-log`.
pub(crate) fn display_version(version: &str) -> String {
    let number = version.split(['-', ' ']).next().unwrap_or(version);
    if version.to_ascii_lowercase().contains("mariadb") {
        format!("MariaDB {number}")
    } else {
        format!("MySQL {number}")
    }
}

/// Maps a sqlx error met on a MySQL/MariaDB connection; the code is the
/// MySQL error number.
pub(crate) fn map_error(error: &sqlx::Error, target: &str, secrets: &Secrets) -> DriverError {
    map_sqlx_error(error, target, secrets, |database| {
        let number = database
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number);
        let (kind, fallback) = match number {
            // 1045 bad credentials, 1044 no access to the database,
            // 1130 host not allowed, 1251/2059 authentication plugin.
            Some(1045 | 1044 | 1130 | 1251 | 2059 | 1698) => {
                (ErrorType::AuthenticationFailed, "invalid username or password")
            }
            Some(1049) => (ErrorType::DatabaseNotFound, "the database does not exist"),
            Some(1040 | 1129 | 1203) => (
                ErrorType::ConnectionRefused,
                "the server is not accepting connections",
            ),
            _ => (ErrorType::Unknown, "the server reported an error"),
        };
        (number.map(|number| number.to_string()), kind, fallback)
    })
}

/// The MySQL family: MySQL and MariaDB.
pub(crate) struct MySql;

#[async_trait]
impl Driver for MySql {
    fn steps(&self) -> &'static [StepType] {
        &[StepType::SqlQuery]
    }

    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        Ok(Box::new(open(spec, policy).await?.0))
    }
}

#[async_trait]
impl ConnectorPool for MySqlHandle {
    /// Tests through the pool (see [`acquire_for_test`]): `VERSION()`, `UTC_TIMESTAMP()` and the
    /// databases the user can see.
    async fn test(&self, addrs: &[SocketAddr], _policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        let mut connection = acquire_for_test(
            &self.pool,
            &self.endpoint.host,
            addrs,
            self.settings.connect_timeout,
            |error| self.map_error(error),
        )
        .await?;
        let (version, now): (String, NaiveDateTime) = sqlx::query_as("SELECT VERSION(), UTC_TIMESTAMP()")
            .fetch_one(&mut *connection)
            .await
            .map_err(|error| self.map_error(&error))?;
        // information_schema.SCHEMATA lists exactly what SHOW DATABASES
        // would, and types as text on both MySQL and MariaDB.
        let databases: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
        )
        .fetch_all(&mut *connection)
        .await
        .map_err(|error| self.map_error(&error))?;
        let databases = databases
            .into_iter()
            .filter(|name| !SYSTEM_SCHEMAS.contains(&name.as_str()))
            .collect();
        // Back to the pool now (sqlx would do it in a spawned task after a
        // ping), so that the next use finds this connection idle.
        connection.return_to_pool().await;
        Ok(TestDetails {
            version: Some(display_version(&version)),
            server_time: Some(now.and_utc()),
            schemas: Some(databases),
        })
    }

    async fn recheck(&self, policy: &NetworkPolicy) -> Result<Option<Vec<SocketAddr>>, DriverError> {
        self.endpoint.recheck(policy).await
    }

    fn sql_source(&self) -> Option<SqlSource> {
        Some(SqlSource::MySql(self.pool.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_name_the_flavour() {
        assert_eq!(display_version("10.11.19-MariaDB-0+deb12u1"), "MariaDB 10.11.19");
        assert_eq!(display_version("8.0.36"), "MySQL 8.0.36");
        assert_eq!(display_version("8.0.36-log"), "MySQL 8.0.36");
    }
}
