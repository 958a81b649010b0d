//! What the SQL families (`postgres/` with Redshift, `mysql/`, `sqlite/`)
//! share: the server fields of their typed configs, sqlx pool options from
//! the pool settings, one pool handle with its connection test, network
//! re-check and step source, and typed parameter binding.
//!
//! A family is a [`SqlFamily`]: it builds a lazy sqlx pool from its typed
//! config and knows how its server answers a connection test and how its
//! errors read. That makes it a [`Driver`] whose pools are
//! [`SqlHandle`]s; nothing else is written per family.

use std::net::SocketAddr;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use ferry_shared::config::SecretString;
use ferry_shared::connectors::ConnectorType;
use ferry_shared::domain::params::ParamValue;
use serde_json::{Map, Value};
use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::query::Query;
use sqlx::{Database, Encode, Pool, Type};

use crate::connectors::config::{Fields, PoolSettings, SslMode, Tls};
use crate::connectors::errors::{DriverError, Secrets};
use crate::connectors::network::{self, Endpoint, Relay, validate_host};
use crate::connectors::{ConnectorPool, ConnectorSpec, Driver, NetworkPolicy, TestDetails};
use crate::extract::SqlSource;

/// The fields PostgreSQL (and Redshift) and MySQL declare alike: where the
/// server is, the database, who logs in, and TLS.
#[derive(Debug)]
pub(crate) struct ServerConfig {
    /// A DNS name or an IP address, nothing else (see
    /// [`network::validate_host`]).
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: Option<SecretString>,
    pub tls: Tls,
}

impl ServerConfig {
    /// Takes the server fields; `modes` are the TLS modes the type accepts.
    pub(crate) fn read(fields: &mut Fields<'_>, modes: &[SslMode]) -> Result<ServerConfig, DriverError> {
        let host = fields.name("host")?;
        validate_host("host", &host)?;
        Ok(ServerConfig {
            host,
            port: fields.port("port")?,
            database: fields.name("database")?,
            username: fields.name("username")?,
            password: fields.secret("password")?,
            tls: Tls::read(fields, modes)?,
        })
    }

    /// Resolves and checks the host under `policy` (see [`Endpoint::open`]);
    /// under verify-full by name, also starts the relay to the checked
    /// address, listening at `<dir>/<socket_name>`.
    pub(crate) async fn route(
        &self,
        policy: &NetworkPolicy,
        socket_name: &str,
        connect_timeout: std::time::Duration,
    ) -> Result<Route, DriverError> {
        let verify_name = self.tls.mode == SslMode::VerifyFull;
        let (endpoint, _addrs) = Endpoint::open(&self.host, self.port, policy, verify_name).await?;
        let relay = endpoint.relay(socket_name, connect_timeout)?;
        Ok(Route { endpoint, relay })
    }
}

/// Where a server family's connections go: the checked endpoint and, for
/// verify-full by name, the relay that carries them to the checked address
/// (the driver is given its socket; see [`network::Relay`]).
pub(crate) struct Route {
    pub endpoint: Endpoint,
    pub relay: Option<Relay>,
}

/// sqlx pool options from a connector's pool settings: at most
/// `max_connections`, none kept open for their own sake, acquiring bounded
/// by `connection_timeout_seconds`, idle ones closed and old ones replaced.
pub(crate) fn pool_options<DB: Database>(settings: &PoolSettings) -> PoolOptions<DB> {
    PoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.connect_timeout)
        .idle_timeout(Some(settings.idle_timeout))
        .max_lifetime(Some(settings.max_lifetime))
}

/// `options` with every connection closed when it goes back to the pool:
/// a connection serves one use, so nothing a step leaves in its session
/// reaches another (for servers that cannot reset a session).
pub(crate) fn one_use_per_connection<DB: Database>(options: PoolOptions<DB>) -> PoolOptions<DB> {
    options.after_release(|_connection, _meta| Box::pin(async { Ok(false) }))
}

/// Closes a pool in the background: idle connections close now, in-use
/// ones when they are returned.
pub(crate) fn close_pool<DB: Database>(pool: Pool<DB>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move { pool.close().await });
        }
        // Without a runtime, dropping the last handle closes the pool.
        Err(_) => drop(pool),
    }
}

/// A SQL family: one folder that builds a sqlx pool from a connector's
/// typed config. Through it the family is a [`Driver`] running `sql_query`
/// steps, with [`SqlHandle`]s as its pools.
///
/// A family's typed config is its own fields ([`SqlFamily::Config`]) and
/// the [`PoolSettings`] every family shares, read from the same map in one
/// pass that refuses any field neither took (serde's `flatten` cannot be
/// combined with `deny_unknown_fields`; two readers over one
/// [`Fields`] can).
#[async_trait]
pub(crate) trait SqlFamily: Send + Sync + Sized + 'static {
    type Database: Database;
    type Config: Send;

    /// Takes the family's own fields (not the pool settings).
    fn config(fields: &mut Fields<'_>) -> Result<Self::Config, DriverError>;

    /// Applies the network policy and builds a lazy pool for `spec`, whose
    /// config was read as `config` and `settings`: nothing connects until a
    /// connection is acquired.
    async fn open(
        config: Self::Config,
        settings: PoolSettings,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<SqlHandle<Self>, DriverError>;

    /// The pool as the source `sql_query` steps read from.
    fn source(pool: &Pool<Self::Database>) -> SqlSource;

    /// What a connection test learns from the server on a pooled
    /// connection: its version, its clock, the schemas the user may use.
    async fn details(connection: &mut PoolConnection<Self::Database>) -> Result<TestDetails, sqlx::Error>;

    /// A sqlx error met on this family's connections, in the error
    /// vocabulary; `target` is `host:port` (empty for a file).
    fn map_error(error: &sqlx::Error, target: &str, secrets: &Secrets) -> DriverError;
}

#[async_trait]
impl<F: SqlFamily> Driver for F {
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        let (decl, _) = spec.driver()?;
        let (config, settings) = read_config::<F>(decl, &spec.config)?;
        Ok(Box::new(F::open(config, settings, spec, policy).await?))
    }
}

/// A `decl` connector's `config`, read as family `F`'s typed config and the
/// pool settings; a field neither takes is refused, naming it.
pub(crate) fn read_config<F: SqlFamily>(
    decl: &'static ConnectorType,
    config: &Map<String, Value>,
) -> Result<(F::Config, PoolSettings), DriverError> {
    Fields::parse(decl, config, |fields| {
        Ok((F::config(fields)?, PoolSettings::read(fields)?))
    })
}

/// One SQL connector's pool and how it was built.
pub(crate) struct SqlHandle<F: SqlFamily> {
    pub pool: Pool<F::Database>,
    /// Where a server family connects; `None` for a file (SQLite).
    route: Option<Route>,
    pub settings: PoolSettings,
    secrets: Secrets,
}

impl<F: SqlFamily> SqlHandle<F> {
    /// The handle of `spec`'s `pool`, connecting through `route` when the
    /// family talks to a server.
    pub(crate) fn new(
        spec: &ConnectorSpec,
        pool: Pool<F::Database>,
        settings: PoolSettings,
        route: Option<Route>,
    ) -> Self {
        SqlHandle {
            pool,
            route,
            settings,
            secrets: spec.secrets(),
        }
    }

    pub(crate) fn map_error(&self, error: &sqlx::Error) -> DriverError {
        let target = self
            .route
            .as_ref()
            .map(|route| route.endpoint.target())
            .unwrap_or_default();
        F::map_error(error, &target, &self.secrets)
    }
}

#[async_trait]
impl<F: SqlFamily> ConnectorPool for SqlHandle<F> {
    /// Tests through the pool: one pooled connection answers the family's
    /// [`SqlFamily::details`] and goes back to the pool at once (sqlx would
    /// return it in a spawned task after a ping), so that the next use
    /// finds it idle. A cold pool of a server family first gets a bare TCP
    /// probe: sqlx's pool retries a refused connection until
    /// `acquire_timeout`, which would report "connection refused" as a
    /// timeout much later.
    async fn test(&self, addrs: &[SocketAddr], _policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        if let Some(route) = &self.route
            && self.pool.size() == 0
        {
            network::probe(&route.endpoint.host, addrs, self.settings.connect_timeout).await?;
        }
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(|error| self.map_error(&error))?;
        let details = F::details(&mut connection)
            .await
            .map_err(|error| self.map_error(&error))?;
        connection.return_to_pool().await;
        Ok(details)
    }

    /// Re-applies the network policy to a server family's host; a file
    /// family has none to check.
    async fn recheck(&self, policy: &NetworkPolicy) -> Result<Option<Vec<SocketAddr>>, DriverError> {
        match &self.route {
            Some(route) => route.endpoint.recheck(policy).await,
            None => Ok(Some(Vec::new())),
        }
    }

    fn sql_source(&self) -> Option<SqlSource> {
        Some(F::source(&self.pool))
    }
}

/// How a database takes a timestamp parameter; every other parameter type
/// binds alike in all SQL families.
pub(crate) trait TimestampParam: Database {
    type Timestamp: for<'t> Encode<'t, Self> + Type<Self>;

    fn timestamp(value: &DateTime<FixedOffset>) -> Self::Timestamp;
}

/// `query` with `params` bound in order, as typed driver parameters (never
/// spliced into the SQL text). Synchronous on purpose: the step's future
/// only ever holds the family's concrete query type, so it stays `Send`.
pub(crate) fn bind_params<'q, DB>(
    query: Query<'q, DB, DB::Arguments>,
    params: &[ParamValue],
) -> Query<'q, DB, DB::Arguments>
where
    DB: TimestampParam,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
    for<'t> f64: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
    for<'t> chrono::NaiveDate: Encode<'t, DB> + Type<DB>,
{
    params.iter().fold(query, |query, param| match param {
        ParamValue::Text(v) => query.bind(v.as_str()),
        ParamValue::Integer(v) => query.bind(*v),
        ParamValue::Number(v) => query.bind(*v),
        ParamValue::Boolean(v) => query.bind(*v),
        ParamValue::Date(v) => query.bind(*v),
        ParamValue::Timestamp(v) => query.bind(DB::timestamp(v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use sqlx::Row;

    #[tokio::test]
    async fn parameters_bind_as_typed_values_in_order() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.expect("pool");
        let at = FixedOffset::east_opt(2 * 3600)
            .and_then(|offset| offset.with_ymd_and_hms(2024, 3, 1, 12, 30, 0).single())
            .expect("timestamp");
        let date = NaiveDate::from_ymd_opt(2024, 2, 29).expect("date");
        let params = [
            ParamValue::Text("it's".into()),
            ParamValue::Integer(-7),
            ParamValue::Number(2.5),
            ParamValue::Boolean(true),
            ParamValue::Date(date),
            ParamValue::Timestamp(at),
        ];
        let row = bind_params(sqlx::query("SELECT ?, typeof(?2), ?2, ?3, ?4, ?5, ?6"), &params)
            .fetch_one(&pool)
            .await
            .expect("row");
        assert_eq!(row.get::<String, _>(0), "it's");
        assert_eq!(row.get::<String, _>(1), "integer");
        assert_eq!(row.get::<i64, _>(2), -7);
        assert_eq!(row.get::<f64, _>(3), 2.5);
        assert!(row.get::<bool, _>(4));
        assert_eq!(row.get::<String, _>(5), "2024-02-29");
        // SQLite's datetime text, in UTC.
        assert_eq!(row.get::<String, _>(6), "2024-03-01 10:30:00");
    }
}
