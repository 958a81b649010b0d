//! Connector drivers: one module per connector family, each turning a
//! connector's config into driver options field by field (never passing a
//! user's option string through), testing a connection, and mapping driver
//! errors to the seed's error vocabulary ([`DriverError`]).
//!
//! Pools live in [`crate::pools::PoolRegistry`]; this module holds what the
//! families share: the spec a driver receives, the network policy, config
//! reading and error mapping.

pub(crate) mod bigquery;
pub(crate) mod config;
pub mod databricks;
pub mod errors;
pub(crate) mod http;
pub(crate) mod mongodb;
pub(crate) mod mysql;
pub mod network;
pub mod oauth_http;
pub(crate) mod postgres;
pub(crate) mod redis;
pub(crate) mod rest;
pub(crate) mod saas;
pub(crate) mod snowflake;
pub(crate) mod sql;
pub(crate) mod sqlite;
pub(crate) mod warehouse;

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ferry_shared::connectors::{
    ConnectorType, DEFAULT_TEST_TIMEOUT_SECONDS, DriverFamily, find, merge, registry,
};
use ferry_shared::domain::params::{self, Placeholder};
use ferry_shared::domain::{ErrorKind, StepType};
use serde_json::{Map, Value};

pub use config::{PoolSettings, SslMode};
pub use errors::{DriverError, ErrorType, Secrets};

use crate::extract::{ExtractError, Output, ReadPath, SqlRead, SqlSource, StepRead};

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
    /// The spec of connector `uuid` at config `version`: its non-secret
    /// fields (`public`) with its `secrets`, opened by the vault, laid over
    /// them.
    pub fn new(
        uuid: String,
        org_id: String,
        connector_type: String,
        version: i64,
        public: &Map<String, Value>,
        secrets: &ferry_shared::vault::Secrets,
    ) -> ConnectorSpec {
        ConnectorSpec {
            uuid,
            org_id,
            connector_type,
            version,
            config: merge(public, secrets.expose_secret()),
        }
    }

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
    /// Certificate authorities that connectors speaking HTTPS trust
    /// besides the public roots (`FERRY_TLS_CA_FILE`).
    pub trusted_roots: TrustedRoots,
}

/// Extra certificate authorities, read once from a PEM file.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoots(Arc<Vec<reqwest::Certificate>>);

impl TrustedRoots {
    /// The certificates of the PEM bundle at `path`: at least one, each
    /// parsed, or an error naming the file.
    pub fn from_pem_file(path: &std::path::Path) -> Result<TrustedRoots, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&bytes)
            .map_err(|_| format!("{} is not a PEM bundle of certificates", path.display()))?;
        if certificates.is_empty() {
            return Err(format!("{} holds no certificate", path.display()));
        }
        Ok(TrustedRoots(Arc::new(certificates)))
    }

    /// [`from_pem_file`](Self::from_pem_file) as a command-line value
    /// parser.
    pub fn from_pem_file_arg(path: &str) -> Result<TrustedRoots, String> {
        Self::from_pem_file(std::path::Path::new(path))
    }

    pub fn iter(&self) -> impl Iterator<Item = &reqwest::Certificate> {
        self.0.iter()
    }
}

/// The driver of `family`: the one place a family meets its folder.
pub(crate) fn driver(family: DriverFamily) -> &'static dyn Driver {
    match family {
        DriverFamily::Postgres => &postgres::Postgres,
        DriverFamily::Mysql => &mysql::MySql,
        DriverFamily::Sqlite => &sqlite::Sqlite,
        DriverFamily::Mongodb => &mongodb::MongoDb,
        DriverFamily::Redis => &redis::Redis,
        DriverFamily::Rest => &rest::Rest,
        DriverFamily::Databricks => &databricks::Databricks,
        DriverFamily::Snowflake => &snowflake::Snowflake,
        DriverFamily::Bigquery => &bigquery::Bigquery,
        DriverFamily::Saas => &saas::Saas,
    }
}

/// The declaration of `connector_type` and its family's driver, when the
/// type is declared with a driver.
pub(crate) fn declared(connector_type: &str) -> Option<(&'static ConnectorType, &'static dyn Driver)> {
    let decl = find(connector_type)?;
    Some((decl, driver(decl.driver?)))
}

impl ConnectorSpec {
    /// The spec's declaration and driver, if this worker has a driver for
    /// its type.
    pub(crate) fn driver(&self) -> Result<(&'static ConnectorType, &'static dyn Driver), DriverError> {
        declared(&self.connector_type).ok_or_else(|| {
            DriverError::invalid_config(format!(
                "this worker has no driver for connector type {:?}",
                self.connector_type
            ))
        })
    }

    /// Refuses a config field the type does not declare: the registry
    /// stores exactly the declared fields (defaults filled in), so anything
    /// else did not come from it. OAuth types also hold the tokens the
    /// OAuth flow sealed ([`oauth_http::TOKEN_FIELDS`]).
    pub(crate) fn check_fields(&self, decl: &ConnectorType) -> Result<(), DriverError> {
        let token = |key: &str| {
            decl.auth_type == ferry_shared::connectors::AuthKind::OAuth
                && oauth_http::TOKEN_FIELDS.contains(&key)
        };
        match self
            .config
            .keys()
            .find(|key| decl.field(key).is_none() && !token(key))
        {
            Some(unknown) => Err(DriverError::invalid_config(format!(
                "config.{unknown} is not a field of {} connectors",
                decl.type_id
            ))),
            None => Ok(()),
        }
    }
}

/// A connector family: one folder of this module. It turns a spec into a
/// pool (config read field by field, unknown fields refused); its pools run
/// the step types the connector type's declaration lists.
#[async_trait::async_trait]
pub(crate) trait Driver: Send + Sync {
    /// A pool for `spec`; nothing connects until it is used.
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError>;
}

/// One connector's pool (or client), as the registry keeps it.
#[async_trait::async_trait]
pub(crate) trait ConnectorPool: Send + Sync + AsAny {
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
    /// By default, closes the SQL source's pool when there is one.
    fn close(&self) {
        if let Some(source) = self.sql_source() {
            source.close();
        }
    }

    /// The source `sql_query` steps read from, for SQL families.
    fn sql_source(&self) -> Option<SqlSource> {
        None
    }

    /// Hands an OAuth family the refresher it asks for a new access token
    /// when the provider answers 401 (the registry calls it once, right
    /// after the pool is built). Other families ignore it.
    fn attach_refresher(&self, _refresher: &ferry_shared::oauth_refresh::Refresher) {}

    /// Runs `step` (one of the types its declaration lists) on this pool,
    /// describing the result's columns to `out` and writing its batches
    /// there. By default, SQL families run `sql_query` steps through their
    /// [`sql_source`](Self::sql_source), with the `{{name}}` parameters
    /// bound in the declaration's placeholder style.
    async fn run(&self, step: &StepRequest<'_>, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        let source = match (step.step_type, self.sql_source()) {
            (StepType::SqlQuery, Some(source)) => source,
            _ => return Err(step.unsupported()),
        };
        let placeholder = step.connector.placeholder.unwrap_or(Placeholder::Question);
        let query = step
            .config
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let bound = params::bind(query, step.declared(), step.supplied, placeholder)
            .map_err(|e| ExtractError::new(ErrorKind::InvalidParameters, e.to_string()))?;
        SqlRead {
            source: &source,
            query: &bound,
        }
        .read(out)
        .await
    }
}

/// One step, as a family's runner receives it.
pub struct StepRequest<'a> {
    pub step_type: StepType,
    /// The declaration of the connector it runs on.
    pub connector: &'static ConnectorType,
    /// The step's config, as the API validated and stored it.
    pub config: &'a Map<String, Value>,
    /// The execution's parameter values (`{{name}}` placeholders resolve
    /// from these and from the step's declared defaults).
    pub supplied: &'a Map<String, Value>,
    /// Where connections may go; families that connect per request (REST)
    /// apply it to every request, redirects included.
    pub policy: &'a NetworkPolicy,
}

impl StepRequest<'_> {
    /// The step's declared parameters (`config.parameters`): name to
    /// `{type, default?}`.
    pub fn declared(&self) -> &Map<String, Value> {
        static NONE: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.config
            .get("parameters")
            .and_then(Value::as_object)
            .unwrap_or_else(|| NONE.get_or_init(Map::new))
    }

    /// The typed value of parameter `name`: supplied at execution, else the
    /// declared default; a missing or mistyped one is `invalid_parameters`.
    pub fn param(&self, name: &str) -> Result<params::ParamValue, ExtractError> {
        params::resolve(name, self.declared(), self.supplied)
            .map_err(|e| ExtractError::new(ErrorKind::InvalidParameters, e.to_string()))
    }

    /// `text` with each `{{name}}` replaced by its parameter's value as text
    /// (for places that are text by nature: URL paths, header values, key
    /// patterns). Query languages bind values instead.
    pub fn substitute(&self, text: &str) -> Result<String, ExtractError> {
        params::substitute(text, self.declared(), self.supplied)
            .map_err(|e| ExtractError::new(ErrorKind::InvalidParameters, e.to_string()))
    }

    /// `body` with its parameters: a string that is exactly one placeholder
    /// becomes the parameter's typed JSON value (numbers and booleans stay
    /// numbers and booleans), other strings get the values' text.
    pub fn substitute_json(&self, body: &Value) -> Result<Value, ExtractError> {
        Ok(match body {
            Value::String(text) => {
                let single = text
                    .trim()
                    .strip_prefix("{{")
                    .and_then(|rest| rest.strip_suffix("}}"))
                    .filter(|name| !name.contains("{{") && !name.contains("}}"));
                match single {
                    Some(name) => match self.param(name.trim())? {
                        params::ParamValue::Integer(n) => Value::from(n),
                        params::ParamValue::Number(x) => Value::from(x),
                        params::ParamValue::Boolean(b) => Value::Bool(b),
                        other => Value::String(other.to_text()),
                    },
                    None => Value::String(self.substitute(text)?),
                }
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.substitute_json(item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, item)| Ok((key.clone(), self.substitute_json(item)?)))
                    .collect::<Result<_, ExtractError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// The error for a step type this connector's family does not run.
    pub fn unsupported(&self) -> ExtractError {
        ExtractError::new(
            ErrorKind::UnsupportedConnector,
            format!(
                "{} steps cannot run on {} connectors",
                self.step_type.as_str(),
                self.connector.type_id
            ),
        )
    }
}

/// A pool as [`Any`], so the registry can hand a family its own handle
/// type. Implemented once for every [`ConnectorPool`]: bounding the impl by
/// `ConnectorPool` rather than `Any` keeps `Box<dyn ConnectorPool>` itself
/// out of it, so `boxed.as_any()` reaches the handle inside the box.
pub(crate) trait AsAny {
    fn as_any(&self) -> &dyn Any;
}

impl<T: ConnectorPool + 'static> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Whether some family of this worker runs steps of `step_type`: a type
/// declared with a driver lists it.
pub(crate) fn runs(step_type: StepType) -> bool {
    registry()
        .iter()
        .any(|decl| decl.has_driver() && decl.accepts(step_type))
}

/// Whether this worker can test and query connectors of `connector_type`.
pub fn has_driver(connector_type: &str) -> bool {
    declared(connector_type).is_some()
}

/// What a successful connection test learnt about the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TestDetails {
    pub version: Option<String>,
    pub server_time: Option<DateTime<Utc>>,
    pub schemas: Option<Vec<String>>,
}

/// How long a test of `spec` may take in all: the declaration's rule
/// ([`ConnectorType::test_timeout`]), the same one the API waits by.
pub fn test_timeout(spec: &ConnectorSpec) -> std::time::Duration {
    find(&spec.connector_type).map_or(
        std::time::Duration::from_secs(DEFAULT_TEST_TIMEOUT_SECONDS),
        |decl| decl.test_timeout(&spec.config),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle with an optional SQLite pool as its SQL source.
    struct Probe(Option<sqlx::SqlitePool>);

    #[async_trait::async_trait]
    impl ConnectorPool for Probe {
        async fn test(
            &self,
            _addrs: &[SocketAddr],
            _policy: &NetworkPolicy,
        ) -> Result<TestDetails, DriverError> {
            Ok(TestDetails::default())
        }

        fn sql_source(&self) -> Option<SqlSource> {
            self.0.clone().map(SqlSource::Sqlite)
        }
    }

    #[test]
    fn a_boxed_pool_is_seen_as_the_handle_inside_the_box() {
        let boxed: Box<dyn ConnectorPool> = Box::new(Probe(None));
        assert!(boxed.as_any().downcast_ref::<Probe>().is_some());
        assert!(boxed.as_any().downcast_ref::<Box<dyn ConnectorPool>>().is_none());
    }

    #[tokio::test]
    async fn closing_a_sql_family_handle_closes_its_pool() {
        let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").expect("pool");
        let handle: Box<dyn ConnectorPool> = Box::new(Probe(Some(pool.clone())));
        handle.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !pool.is_closed() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the pool closes");
    }

    #[test]
    fn each_family_runs_the_steps_its_types_declare() {
        for (connector_type, step_type) in [
            ("postgresql", StepType::SqlQuery),
            ("redshift", StepType::SqlQuery),
            ("mysql", StepType::SqlQuery),
            ("sqlite", StepType::SqlQuery),
            ("databricks", StepType::SqlQuery),
            ("snowflake", StepType::SqlQuery),
            ("bigquery", StepType::SqlQuery),
            ("rest_api", StepType::HttpRequest),
            ("mongodb", StepType::MongoQuery),
            ("redis", StepType::RedisRead),
            ("stripe", StepType::SaasExtract),
            ("hubspot", StepType::SaasExtract),
            ("salesforce", StepType::SaasExtract),
            ("google_analytics", StepType::SaasExtract),
        ] {
            let (decl, _) = declared(connector_type).expect("a driver");
            assert_eq!(decl.steps, &[step_type], "{connector_type}");
        }
        for step_type in [
            StepType::SqlQuery,
            StepType::HttpRequest,
            StepType::MongoQuery,
            StepType::RedisRead,
            StepType::SaasExtract,
        ] {
            assert!(runs(step_type), "{step_type:?}");
        }
    }

    #[test]
    fn drivers_exist_for_the_eight_direct_types_only() {
        for kind in [
            "postgresql",
            "redshift",
            "mysql",
            "redis",
            "rest_api",
            "sqlite",
            "mongodb",
            "databricks",
            "snowflake",
            "bigquery",
            "stripe",
            "hubspot",
            "salesforce",
            "google_analytics",
        ] {
            assert!(has_driver(kind), "{kind}");
        }
        for kind in ["POSTGRESQL", ""] {
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

    fn spec(connector_type: &str, config: serde_json::Value) -> ConnectorSpec {
        ConnectorSpec {
            uuid: "conn_1".into(),
            org_id: "org_1".into(),
            connector_type: connector_type.into(),
            version: 1,
            config: config.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn a_config_field_the_type_does_not_declare_is_refused_before_any_pool() {
        let mut spec = spec(
            "postgresql",
            serde_json::json!({"host": "db", "max_connections": 5}),
        );
        let (decl, _) = spec.driver().expect("postgresql has a driver");
        assert!(spec.check_fields(decl).is_ok());
        spec.config
            .insert("sslcert".into(), Value::String("/etc/client.pem".into()));
        let error = spec.check_fields(decl).expect_err("undeclared field");
        assert_eq!(error.kind(), ErrorType::InvalidConfig);
        assert!(error.message().contains("config.sslcert"), "{}", error.message());
    }

    #[test]
    fn the_test_timeout_is_the_declarations_rule() {
        let rest = spec("rest_api", serde_json::json!({"timeout_seconds": 7}));
        assert_eq!(test_timeout(&rest), std::time::Duration::from_secs(7));
        let postgres = spec("postgresql", serde_json::json!({"connection_timeout_seconds": 9}));
        assert_eq!(test_timeout(&postgres), std::time::Duration::from_secs(9));
        for connector_type in ["postgresql", "rest_api", "sqlite", "snowflake", "bigquery"] {
            let bare = spec(connector_type, serde_json::json!({}));
            let expected = find(connector_type).expect("declared").test_timeout(&bare.config);
            assert_eq!(test_timeout(&bare), expected, "{connector_type}");
        }
    }

    #[test]
    fn trusted_roots_come_from_a_pem_bundle_and_a_bad_file_is_named() {
        let ca = ferry_testkit::tls::TestCa::new();
        let roots = TrustedRoots::from_pem_file(&ca.ca_file()).expect("the CA");
        assert_eq!(roots.iter().count(), 1);

        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.pem");
        let error = TrustedRoots::from_pem_file(&missing).expect_err("missing");
        assert!(error.contains("missing.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").expect("write");
        let error = TrustedRoots::from_pem_file(&empty).expect_err("empty");
        assert!(error.contains("empty.pem"), "{error}");
    }
}
