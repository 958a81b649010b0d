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

use async_trait::async_trait;
use chrono::NaiveDateTime;
use ferry_shared::config::ExposeSecret;
use ferry_shared::connectors::defaults::MYSQL_CHARSET;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlSslMode};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Executor};

use crate::connectors::config::{Fields, PoolSettings, SslMode};
use crate::connectors::errors::{DriverError, ErrorType, Secrets, map_sqlx_error};
use crate::connectors::sql::{ServerConfig, SqlFamily, SqlHandle, one_use_per_connection, pool_options};
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

/// A MySQL or MariaDB connector's own config fields, read once.
#[derive(Debug)]
pub(crate) struct MySqlConfig {
    pub server: ServerConfig,
    /// The connection character set: letters, digits and `_` only (sqlx
    /// sends it in `SET NAMES`).
    pub charset: String,
}

/// The MySQL family: MySQL and MariaDB.
pub(crate) struct MySql;

#[async_trait]
impl SqlFamily for MySql {
    type Database = sqlx::MySql;
    type Config = MySqlConfig;

    fn config(fields: &mut Fields<'_>) -> Result<MySqlConfig, DriverError> {
        let server = ServerConfig::read(fields, &MODES)?;
        let charset = fields.name("charset")?;
        // sqlx sends `SET NAMES <charset>`: only a bare identifier may get there.
        if charset.len() > 32 || !charset.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(DriverError::invalid_config(format!(
                "config.charset must be a character set name such as {MYSQL_CHARSET}"
            )));
        }
        Ok(MySqlConfig { server, charset })
    }

    async fn open(
        config: MySqlConfig,
        settings: PoolSettings,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<SqlHandle<Self>, DriverError> {
        let MySqlConfig { server, charset } = config;
        let route = server
            .route(policy, "mysql.sock", settings.connect_timeout)
            .await?;

        let mut options = MySqlConnectOptions::new()
            .host(&route.endpoint.connect_host())
            .port(server.port)
            .username(&server.username)
            .database(&server.database)
            .charset(&charset)
            // Keep the server's SQL mode: users' queries must mean what they
            // mean in their own client (`||` stays OR).
            .pipes_as_concat(false)
            .ssl_mode(match server.tls.mode {
                SslMode::Disable => MySqlSslMode::Disabled,
                SslMode::Allow | SslMode::Prefer => MySqlSslMode::Preferred,
                SslMode::Require => MySqlSslMode::Required,
                SslMode::VerifyCa => MySqlSslMode::VerifyCa,
                SslMode::VerifyFull => MySqlSslMode::VerifyIdentity,
            });
        if let Some(relay) = &route.relay {
            // verify-full by name: TLS checks the name, the bytes go to the
            // checked address (see `network::Relay`).
            options = options.socket(relay.path());
        }
        if let Some(password) = &server.password {
            options = options.password(password.expose_secret());
        }
        if let Some(pem) = server.tls.root_cert {
            options = options.ssl_ca_from_pem(pem.into_bytes());
        }

        let statement_timeout = settings.statement_timeout;
        // sqlx 0.9 cannot send COM_RESET_CONNECTION (or COM_CHANGE_USER),
        // and no SQL statement clears a session's temporary tables, user
        // variables and session variables all at once, so a connection
        // serves one use and is then closed: nothing a step leaves in its
        // session reaches another.
        let pool = one_use_per_connection(pool_options::<sqlx::MySql>(&settings))
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
            .connect_lazy_with(options);
        Ok(SqlHandle::new(spec, pool, settings, Some(route)))
    }

    fn source(pool: &MySqlPool) -> SqlSource {
        SqlSource::MySql(pool.clone())
    }

    /// `VERSION()`, `UTC_TIMESTAMP()` and the databases the user can see.
    async fn details(connection: &mut PoolConnection<sqlx::MySql>) -> Result<TestDetails, sqlx::Error> {
        let (version, now): (String, NaiveDateTime) = sqlx::query_as("SELECT VERSION(), UTC_TIMESTAMP()")
            .fetch_one(&mut **connection)
            .await?;
        // information_schema.SCHEMATA lists exactly what SHOW DATABASES
        // would, and types as text on both MySQL and MariaDB.
        let databases: Vec<String> = sqlx::query_scalar(
            "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME",
        )
        .fetch_all(&mut **connection)
        .await?;
        Ok(TestDetails {
            version: Some(display_version(&version)),
            server_time: Some(now.and_utc()),
            schemas: Some(
                databases
                    .into_iter()
                    .filter(|name| !SYSTEM_SCHEMAS.contains(&name.as_str()))
                    .collect(),
            ),
        })
    }

    fn map_error(error: &sqlx::Error, target: &str, secrets: &Secrets) -> DriverError {
        map_error(error, target, secrets)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::config::object;
    use crate::connectors::sql::read_config;
    use ferry_shared::connectors::TypeId;
    use serde_json::json;

    fn read(config: serde_json::Value) -> Result<(MySqlConfig, PoolSettings), DriverError> {
        read_config::<MySql>(TypeId::Mysql.decl(), &object(config))
    }

    #[test]
    fn a_config_takes_the_declared_port_and_charset() {
        let (config, settings) =
            read(json!({"host": "db", "database": "d", "username": "u", "password": "p"})).expect("config");
        assert_eq!(config.server.port, 3306);
        assert_eq!(config.charset, "utf8mb4");
        assert_eq!(settings.max_connections, 5);
        assert!(!format!("{config:?}").contains("\"p\""));
    }

    #[test]
    fn a_charset_must_be_a_bare_name_and_allow_is_not_a_mysql_mode() {
        let error = read(json!({"host": "db", "database": "d", "username": "u", "charset": "utf8; DROP"}))
            .expect_err("charset");
        assert_eq!(
            error.message(),
            "config.charset must be a character set name such as utf8mb4"
        );
        let error = read(json!({"host": "db", "database": "d", "username": "u", "ssl_mode": "allow"}))
            .expect_err("mode");
        assert_eq!(
            error.message(),
            "config.ssl_mode must be one of disable, prefer, require, verify-ca, verify-full"
        );
    }

    #[test]
    fn versions_name_the_flavour() {
        assert_eq!(display_version("10.11.19-MariaDB-0+deb12u1"), "MariaDB 10.11.19");
        assert_eq!(display_version("8.0.36"), "MySQL 8.0.36");
        assert_eq!(display_version("8.0.36-log"), "MySQL 8.0.36");
    }
}
