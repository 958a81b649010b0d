//! Connector drivers: one module per connector family, each turning a
//! connector's config into driver options field by field (never passing a
//! user's option string through), testing a connection, and mapping driver
//! errors to the seed's error vocabulary ([`DriverError`]).
//!
//! Pools live in [`crate::pools::PoolRegistry`]; this module holds what the
//! families share: the spec a driver receives, the network policy, config
//! reading and error mapping.

pub(crate) mod config;
pub mod errors;
pub(crate) mod mongodb;
pub(crate) mod mysql;
pub mod network;
pub(crate) mod postgres;
pub(crate) mod redis;
pub(crate) mod rest;
pub(crate) mod sqlite;

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use ferry_shared::domain::StepType;
use ferry_shared::domain::params::Placeholder;
use serde_json::{Map, Value};

pub use config::{PoolSettings, SslMode};
pub use errors::{DriverError, ErrorType, Secrets};

use crate::extract::SqlSource;

/// What a worker needs to talk to one connector's system.
#[derive(Clone)]
pub struct ConnectorSpec {
    pub uuid: String,
    /// The organization that owns the connector (SQLite files are read from
    /// its own folder of the SQLite directory).
    pub org_id: String,
    pub connector_type: String,
    /// The connector's config version; pools are keyed by uuid + version.
    pub version: i64,
    /// Public fields merged with the decrypted secrets, defaults applied by
    /// the registry (drivers re-apply the documented defaults if absent).
    pub config: Map<String, Value>,
}

impl fmt::Debug for ConnectorSpec {
    /// Shows the config's keys only: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorSpec")
            .field("uuid", &self.uuid)
            .field("org_id", &self.org_id)
            .field("connector_type", &self.connector_type)
            .field("version", &self.version)
            .field("config_keys", &self.config.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ConnectorSpec {
    /// The secret values of this spec's config, for redacting messages.
    pub fn secrets(&self) -> Secrets {
        Secrets::from_config(&self.config)
    }
}

/// Where a worker may connect.
#[derive(Debug, Clone)]
pub struct NetworkPolicy {
    /// When false (the setting for a shared, multi-tenant deployment),
    /// connections to loopback, private, link-local, unspecified and
    /// unique-local addresses are refused with `blocked_address`.
    pub allow_private_networks: bool,
    /// The SQLite directory: a connector opens files (read-only) only in
    /// its organization's folder, `<sqlite_dir>/<org_id>/`.
    pub sqlite_dir: PathBuf,
}

/// The connector families this worker has drivers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectorKind {
    Postgres,
    Redshift,
    MySql,
    Redis,
    RestApi,
    Sqlite,
    MongoDb,
}

impl ConnectorKind {
    pub const ALL: [ConnectorKind; 7] = [
        ConnectorKind::Postgres,
        ConnectorKind::Redshift,
        ConnectorKind::MySql,
        ConnectorKind::Redis,
        ConnectorKind::RestApi,
        ConnectorKind::Sqlite,
        ConnectorKind::MongoDb,
    ];

    pub fn parse(connector_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == connector_type)
    }

    /// The connector type as the registry and the API spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Postgres => "postgresql",
            ConnectorKind::Redshift => "redshift",
            ConnectorKind::MySql => "mysql",
            ConnectorKind::Redis => "redis",
            ConnectorKind::RestApi => "rest_api",
            ConnectorKind::Sqlite => "sqlite",
            ConnectorKind::MongoDb => "mongodb",
        }
    }
}

impl ConnectorKind {
    /// The driver of this type's family: the one place a type meets its
    /// folder.
    pub(crate) fn driver(self) -> &'static dyn Driver {
        match self {
            ConnectorKind::Postgres | ConnectorKind::Redshift => &postgres::Postgres,
            ConnectorKind::MySql => &mysql::MySql,
            ConnectorKind::Redis => &redis::Redis,
            ConnectorKind::RestApi => &rest::Rest,
            ConnectorKind::Sqlite => &sqlite::Sqlite,
            ConnectorKind::MongoDb => &mongodb::MongoDb,
        }
    }
}

impl ConnectorSpec {
    /// The spec's connector type, if this worker has a driver for it.
    pub(crate) fn kind(&self) -> Result<ConnectorKind, DriverError> {
        ConnectorKind::parse(&self.connector_type).ok_or_else(|| {
            DriverError::invalid_config(format!(
                "this worker has no driver for connector type {:?}",
                self.connector_type
            ))
        })
    }
}

/// A connector family: one folder of this module. It turns a spec into a
/// pool (config read field by field, unknown fields refused) and says which
/// steps its pools can run.
#[async_trait::async_trait]
pub(crate) trait Driver: Send + Sync {
    /// The step types this family has runners for.
    fn steps(&self) -> &'static [StepType];

    /// How `sql_query` steps spell positional parameters on this family.
    fn placeholder(&self) -> Placeholder {
        Placeholder::Question
    }

    /// A pool for `spec`; nothing connects until it is used.
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError>;
}

/// One connector's pool (or client), as the registry keeps it.
#[async_trait::async_trait]
pub(crate) trait ConnectorPool: Send + Sync + Any {
    /// Tests the connection; `addrs` are the addresses the last network
    /// check allowed (network families).
    async fn test(&self, addrs: &[SocketAddr], policy: &NetworkPolicy) -> Result<TestDetails, DriverError>;

    /// Re-applies the network policy before a use: `Ok(None)` asks for a
    /// rebuild (the host moved), `Ok(Some(addrs))` gives the addresses a
    /// new connection may use.
    async fn recheck(&self, _policy: &NetworkPolicy) -> Result<Option<Vec<SocketAddr>>, DriverError> {
        Ok(Some(Vec::new()))
    }

    /// Closes idle connections now, in-use ones when they are returned.
    fn close(&self) {}

    /// The source `sql_query` steps read from, for SQL families.
    fn sql_source(&self) -> Option<SqlSource> {
        None
    }

    fn as_any(&self) -> &dyn Any;
}

/// Whether some family of this worker runs steps of `step_type`.
pub(crate) fn runs(step_type: StepType) -> bool {
    ConnectorKind::ALL
        .into_iter()
        .any(|kind| kind.driver().steps().contains(&step_type))
}

/// Whether this worker can test and query connectors of `connector_type`.
pub fn has_driver(connector_type: &str) -> bool {
    ConnectorKind::parse(connector_type).is_some()
}

/// What a successful connection test learnt about the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TestDetails {
    pub version: Option<String>,
    pub server_time: Option<DateTime<Utc>>,
    pub schemas: Option<Vec<String>>,
}

/// How long a test of `spec` may take in all: `connection_timeout_seconds`
/// for databases, `timeout_seconds` for REST APIs (default 30 s).
pub fn test_timeout(spec: &ConnectorSpec) -> std::time::Duration {
    let config = config::Config::new(&spec.config);
    let key = match ConnectorKind::parse(&spec.connector_type) {
        Some(ConnectorKind::RestApi) => "timeout_seconds",
        _ => "connection_timeout_seconds",
    };
    config
        .seconds(key, config::DEFAULT_CONNECTION_TIMEOUT_SECONDS)
        .unwrap_or(std::time::Duration::from_secs(
            config::DEFAULT_CONNECTION_TIMEOUT_SECONDS,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_exist_for_the_seven_direct_types_only() {
        for kind in [
            "postgresql",
            "redshift",
            "mysql",
            "redis",
            "rest_api",
            "sqlite",
            "mongodb",
        ] {
            assert!(has_driver(kind), "{kind}");
        }
        for kind in ["snowflake", "bigquery", "databricks", "POSTGRESQL", ""] {
            assert!(!has_driver(kind), "{kind}");
        }
    }

    #[test]
    fn a_spec_debug_shows_no_config_values() {
        let mut config = Map::new();
        config.insert("password".into(), Value::String("hunter2".into()));
        let spec = ConnectorSpec {
            uuid: "conn_1".into(),
            org_id: "org_1".into(),
            connector_type: "postgresql".into(),
            version: 1,
            config,
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("password") && !shown.contains("hunter2"));
    }
}
