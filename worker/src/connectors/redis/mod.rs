//! Redis: a deadpool-redis pool of multiplexed connections per connector,
//! and the `redis_read` step runner ([`read`]).
//!
//! A connector whose config says `cluster: true` also gets a pool of
//! cluster connections (deadpool-redis `cluster`, `max_connections` of
//! them), through which steps SCAN every master.
//!
//! The worker authenticates and selects the database itself (in the pool's
//! `post_create` hook) instead of letting the redis crate do it, so that the
//! server's own error code (`WRONGPASS`, `NOAUTH`, `ERR … DB index is out of
//! range`) reaches the test result. deadpool has no idle timeout or maximum
//! lifetime of its own: a `pre_recycle` hook refuses expired connections at
//! checkout and a reaper task closes idle ones in the background.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::redis::{self, AsyncConnectionConfig, IntoConnectionInfo, RedisError, Value};
use deadpool_redis::{Hook, HookError, Manager, Pool, PoolError, Runtime};
use ferry_shared::domain::StepType;
use tokio_util::sync::CancellationToken;

use crate::connectors::config::{Config, PoolSettings};
use crate::connectors::errors::{DriverError, ErrorType, Secrets, from_io};
use crate::connectors::network::{Endpoint, validate_host};
use crate::connectors::{ConnectorPool, Driver, StepRequest};
use crate::connectors::{ConnectorSpec, NetworkPolicy, TestDetails};
use crate::extract::{ExtractError, Output, ReadPath};

mod read;
mod scan;
#[cfg(test)]
mod step_tests;

/// The pool of cluster connections of a `cluster: true` connector.
pub(crate) type ClusterPool = deadpool_redis::cluster::Pool;

pub(crate) struct RedisHandle {
    /// Connections to the configured server (in cluster mode, the seed
    /// node: connection tests use it).
    pub pool: Pool,
    /// In cluster mode, the cluster connections steps read through.
    pub cluster: Option<ClusterPool>,
    pub endpoint: Endpoint,
    pub settings: PoolSettings,
    reaper: CancellationToken,
    secrets: Secrets,
}

struct Credentials {
    username: Option<String>,
    password: Option<String>,
    database: i64,
}

pub(crate) async fn open(
    spec: &ConnectorSpec,
    policy: &NetworkPolicy,
) -> Result<(RedisHandle, Vec<SocketAddr>), DriverError> {
    let config = Config::new(&spec.config);
    let host = config.required_name("host")?;
    validate_host("host", host)?;
    let port = config.port("port", 6379)?;
    let username = config.name("username")?.map(str::to_owned);
    let password = config.secret("password")?.map(str::to_owned);
    let database = match config.uint("database")?.unwrap_or(0) {
        index @ 0..=1_000_000 => index as i64,
        _ => {
            return Err(DriverError::invalid_config(
                "config.database must be a database index such as 0",
            ));
        }
    };
    if config.bool("tls", false)? {
        return Err(DriverError::invalid_config(
            "config.tls: TLS connections to Redis are not supported by this worker build",
        ));
    }
    if username.is_some() && password.is_none() {
        return Err(DriverError::invalid_config(
            "config.username needs config.password",
        ));
    }
    let cluster = config.bool("cluster", false)?;
    if cluster && database != 0 {
        return Err(DriverError::invalid_config(
            "config.database must be 0 for a Redis Cluster (a cluster has only database 0)",
        ));
    }
    let settings = config.pool_settings()?;

    let (endpoint, addrs) = Endpoint::open(host, port, policy, false).await?;

    let info = redis::ConnectionAddr::Tcp(endpoint.connect_host(), port)
        .into_connection_info()
        .map_err(|_| DriverError::invalid_config("the Redis address was rejected"))?
        .set_redis_settings(redis::RedisConnectionInfo::default().set_db(0));
    let connection_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.statement_timeout));
    let manager = Manager::new_with_config(info, connection_config)
        .map_err(|_| DriverError::invalid_config("the Redis address was rejected"))?;

    let cluster = if cluster {
        Some(cluster_pool(
            &endpoint,
            port,
            username.as_deref(),
            password.as_deref(),
            &settings,
        )?)
    } else {
        None
    };

    let credentials = Arc::new(Credentials {
        username,
        password,
        database,
    });
    let (idle, lifetime) = (settings.idle_timeout, settings.max_lifetime);
    let pool = Pool::builder(manager)
        .max_size(settings.max_connections as usize)
        .wait_timeout(Some(settings.connect_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .runtime(Runtime::Tokio1)
        .post_create(Hook::async_fn(move |connection, _| {
            let credentials = credentials.clone();
            Box::pin(async move {
                handshake(connection, &credentials)
                    .await
                    .map_err(HookError::Backend)
            })
        }))
        .pre_recycle(Hook::sync_fn(move |_, metrics| {
            if metrics.age() >= lifetime || metrics.last_used() >= idle {
                Err(HookError::message("connection expired"))
            } else {
                Ok(())
            }
        }))
        .build()
        .map_err(|_| DriverError::unknown("the Redis pool could not be built"))?;

    let reaper = CancellationToken::new();
    let retain = {
        let pool = pool.clone();
        move || {
            pool.retain(|_, metrics| metrics.last_used() < idle && metrics.age() < lifetime);
        }
    };
    spawn_reaper(retain, idle, lifetime, reaper.clone());
    if let Some(cluster) = &cluster {
        let cluster = cluster.clone();
        let retain = move || {
            cluster.retain(|_, metrics| metrics.last_used() < idle && metrics.age() < lifetime);
        };
        spawn_reaper(retain, idle, lifetime, reaper.clone());
    }
    Ok((
        RedisHandle {
            pool,
            cluster,
            endpoint,
            settings,
            reaper,
            secrets: spec.secrets(),
        },
        addrs,
    ))
}

/// A pool of cluster connections seeded with the connector's address. Each
/// connection discovers the cluster's nodes itself and authenticates to
/// every one with the connector's credentials; a cluster has no database
/// to select. Connection creation is bounded by the connect timeout; the
/// step reader bounds each command by the statement timeout.
fn cluster_pool(
    endpoint: &Endpoint,
    port: u16,
    username: Option<&str>,
    password: Option<&str>,
    settings: &PoolSettings,
) -> Result<ClusterPool, DriverError> {
    let mut redis_settings = redis::RedisConnectionInfo::default();
    if let Some(password) = password {
        redis_settings = redis_settings.set_password(password);
    }
    if let Some(username) = username {
        redis_settings = redis_settings.set_username(username);
    }
    let info = redis::ConnectionAddr::Tcp(endpoint.connect_host(), port)
        .into_connection_info()
        .map_err(|_| DriverError::invalid_config("the Redis address was rejected"))?
        .set_redis_settings(redis_settings);
    let manager = deadpool_redis::cluster::Manager::new(vec![info], false)
        .map_err(|_| DriverError::invalid_config("the Redis Cluster settings were rejected"))?;
    let lifetime = settings.max_lifetime;
    let idle = settings.idle_timeout;
    ClusterPool::builder(manager)
        .max_size(settings.max_connections as usize)
        .wait_timeout(Some(settings.connect_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .runtime(Runtime::Tokio1)
        .pre_recycle(deadpool_redis::cluster::Hook::sync_fn(move |_, metrics| {
            if metrics.age() >= lifetime || metrics.last_used() >= idle {
                Err(deadpool_redis::cluster::HookError::message("connection expired"))
            } else {
                Ok(())
            }
        }))
        .build()
        .map_err(|_| DriverError::unknown("the Redis Cluster pool could not be built"))
}

/// `AUTH` (with the username when there is one; falling back to the
/// password alone on servers before 6.0) and `SELECT`.
async fn handshake(
    connection: &mut redis::aio::MultiplexedConnection,
    credentials: &Credentials,
) -> Result<(), RedisError> {
    if let Some(password) = &credentials.password {
        let with_user = match &credentials.username {
            Some(username) => {
                redis::cmd("AUTH")
                    .arg(username)
                    .arg(password)
                    .query_async::<()>(connection)
                    .await
            }
            None => {
                redis::cmd("AUTH")
                    .arg(password)
                    .query_async::<()>(connection)
                    .await
            }
        };
        match with_user {
            Ok(()) => {}
            Err(error)
                if credentials.username.is_some()
                    && error
                        .detail()
                        .is_some_and(|detail| detail.contains("wrong number of arguments")) =>
            {
                redis::cmd("AUTH")
                    .arg(password)
                    .query_async::<()>(connection)
                    .await?;
            }
            Err(error) => return Err(error),
        }
    }
    if credentials.database != 0 {
        redis::cmd("SELECT")
            .arg(credentials.database)
            .query_async::<()>(connection)
            .await?;
    }
    Ok(())
}

/// Every half of the shorter of `idle` and `lifetime` (within 0.5 s and
/// 30 s), runs `retain`, which drops the pool's expired idle connections.
fn spawn_reaper(
    retain: impl Fn() + Send + 'static,
    idle: Duration,
    lifetime: Duration,
    stop: CancellationToken,
) {
    let period = (idle.min(lifetime) / 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            retain();
        }
    });
}

impl RedisHandle {
    pub fn map_pool_error(&self, error: PoolError) -> DriverError {
        match error {
            PoolError::Backend(error) | PoolError::PostCreateHook(HookError::Backend(error)) => {
                self.map_error(&error)
            }
            PoolError::Timeout(_) => DriverError::new(
                ErrorType::Timeout,
                format!(
                    "no connection to {} became available in time",
                    self.endpoint.target()
                ),
            ),
            PoolError::Closed => {
                DriverError::unknown("the connector's pool was closed (its configuration changed)")
            }
            PoolError::PostCreateHook(HookError::Message(_)) | PoolError::NoRuntimeSpecified => {
                DriverError::unknown("the Redis connection could not be set up")
            }
        }
    }

    pub fn map_error(&self, error: &RedisError) -> DriverError {
        map_error(error, &self.endpoint.target(), &self.secrets)
    }
}

impl Drop for RedisHandle {
    fn drop(&mut self) {
        self.reaper.cancel();
    }
}

/// `Redis 7.0.15` (or `Valkey 8.0.1`) from an `INFO server` reply.
fn display_version(info: &str) -> Option<String> {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
            .map(str::trim)
    };
    if let Some(valkey) = field("valkey_version") {
        return Some(format!("Valkey {valkey}"));
    }
    field("redis_version").map(|version| format!("Redis {version}"))
}

/// `TIME` answers `[unix seconds, microseconds]` as bulk strings.
fn server_time(reply: &[Value]) -> Option<DateTime<Utc>> {
    let number = |value: &Value| -> Option<i64> {
        match value {
            Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
            Value::SimpleString(text) => text.parse().ok(),
            Value::Int(number) => Some(*number),
            _ => None,
        }
    };
    let seconds = number(reply.first()?)?;
    let micros = number(reply.get(1)?)?;
    DateTime::from_timestamp(seconds, u32::try_from(micros * 1000).ok()?)
}

/// Maps a redis error; server errors keep their code (`WRONGPASS`, …).
pub(crate) fn map_error(error: &RedisError, target: &str, secrets: &Secrets) -> DriverError {
    let detail = error.detail().and_then(|detail| secrets.scrub(detail));
    let described = |kind: ErrorType, fallback: &str| {
        let message = match (error.code(), &detail) {
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => fallback.to_owned(),
        };
        let mapped = DriverError::new(kind, message);
        match error.code() {
            Some(code) => mapped.with_code(code),
            None => mapped,
        }
    };
    if error.is_connection_refusal() {
        return DriverError::new(
            ErrorType::ConnectionRefused,
            format!("connection refused by {target}"),
        );
    }
    if error.is_timeout() {
        return DriverError::new(ErrorType::Timeout, format!("{target} did not answer in time"));
    }
    // A cluster connection reports a node's refusal as the text of an I/O
    // error ("Failed to create initial connections - Io: Password
    // authentication failed - AuthenticationFailed").
    let raw = error.detail().unwrap_or_default();
    if raw.contains("cluster support disabled") {
        return DriverError::invalid_config(format!(
            "{target} is not a Redis Cluster node (its cluster support is disabled)"
        ));
    }
    if error.code().is_none()
        && let Some(code) = ["WRONGPASS", "NOAUTH", "NOPERM"]
            .into_iter()
            .find(|code| raw.contains(code))
    {
        return DriverError::new(ErrorType::AuthenticationFailed, "invalid username or password")
            .with_code(code);
    }
    if error.code().is_none()
        && (raw.contains("AuthenticationFailed") || raw.contains("authentication failed"))
    {
        return DriverError::new(ErrorType::AuthenticationFailed, "invalid username or password");
    }
    match error.code() {
        // The server (or cluster) cannot serve right now: trying again can work.
        Some(code @ ("LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN")) => {
            return described(ErrorType::ConnectionFailed, "the server is not ready").with_code(code);
        }
        Some("WRONGPASS" | "NOAUTH" | "NOPERM") => {
            return described(ErrorType::AuthenticationFailed, "invalid username or password");
        }
        Some(_)
            if detail
                .as_deref()
                .is_some_and(|text| text.contains("invalid password")) =>
        {
            return described(ErrorType::AuthenticationFailed, "invalid username or password");
        }
        Some(_)
            if error
                .detail()
                .is_some_and(|text| text.contains("DB index is out of range")) =>
        {
            return described(ErrorType::DatabaseNotFound, "the database index is out of range");
        }
        _ => {}
    }
    match error.kind() {
        redis::ErrorKind::AuthenticationFailed => {
            DriverError::new(ErrorType::AuthenticationFailed, "invalid username or password")
        }
        redis::ErrorKind::Io => match std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<std::io::Error>())
        {
            Some(io) => from_io(io, target),
            None => DriverError::new(
                ErrorType::ConnectionRefused,
                format!("the connection to {target} failed"),
            ),
        },
        redis::ErrorKind::InvalidClientConfig => {
            DriverError::invalid_config("the Redis settings were rejected")
        }
        _ => described(ErrorType::Unknown, "the server reported an error"),
    }
}

/// The Redis family.
pub(crate) struct Redis;

#[async_trait]
impl Driver for Redis {
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        Ok(Box::new(open(spec, policy).await?.0))
    }
}

#[async_trait]
impl ConnectorPool for RedisHandle {
    /// `INFO server` (version) and `TIME` on a pooled connection.
    async fn test(&self, _addrs: &[SocketAddr], _policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        let mut connection = self
            .pool
            .get()
            .await
            .map_err(|error| self.map_pool_error(error))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut connection)
            .await
            .map_err(|error| self.map_error(&error))?;
        let time: Vec<Value> = redis::cmd("TIME")
            .query_async(&mut connection)
            .await
            .map_err(|error| self.map_error(&error))?;
        if let Some(cluster) = &self.cluster {
            // A cluster connection learns the slot map from the seed and
            // connects to every node: a non-cluster server or a node that
            // refuses the credentials fails here.
            drop(cluster.get().await.map_err(|error| self.map_pool_error(error))?);
        }
        Ok(TestDetails {
            version: display_version(&info),
            server_time: server_time(&time),
            schemas: None,
        })
    }

    async fn recheck(&self, policy: &NetworkPolicy) -> Result<Option<Vec<SocketAddr>>, DriverError> {
        self.endpoint.recheck(policy).await
    }

    fn close(&self) {
        self.reaper.cancel();
        self.pool.close();
        if let Some(cluster) = &self.cluster {
            cluster.close();
        }
    }

    /// `redis_read`: the keys matching the step's pattern, one row each,
    /// read on one connection of this pool (or of the cluster pool).
    async fn run(&self, step: &StepRequest<'_>, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        match step.step_type {
            StepType::RedisRead => read::run(self, step, out).await,
            _ => Err(step.unsupported()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_time_replies_are_read() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(display_version(info).as_deref(), Some("Redis 7.0.15"));
        assert_eq!(
            display_version("redis_version:7.2.4\r\nvalkey_version:8.0.1\r\n").as_deref(),
            Some("Valkey 8.0.1")
        );
        let time = [
            Value::BulkString(b"1700000000".to_vec()),
            Value::BulkString(b"250000".to_vec()),
        ];
        let parsed = server_time(&time).expect("time");
        assert_eq!(parsed.timestamp(), 1_700_000_000);
        assert_eq!(parsed.timestamp_subsec_millis(), 250);
    }
}
