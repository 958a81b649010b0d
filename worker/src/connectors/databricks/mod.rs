//! Databricks SQL warehouses through the SQL Statement Execution API 2.0:
//! connection tests and `sql_query` steps over HTTPS with the connector's
//! access token (see `design.md` beside this file for the statement's
//! life and the result formats).
//!
//! `server_hostname` names the workspace (`https://<server_hostname>`);
//! `http_path` names the warehouse (`/sql/1.0/warehouses/<id>`, or the
//! older `/sql/1.0/endpoints/<id>`): the Statement Execution API runs on
//! SQL warehouses only, so a cluster's path is refused. `catalog` and
//! `schema` go with every statement. `{{name}}` parameters become named
//! markers (`:name`) bound with their declared type; their values never
//! enter the statement text.

mod client;
mod results;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use ferry_shared::config::{ExposeSecret, SecretString};
use ferry_shared::connectors::ConnectorType;
use ferry_shared::domain::params::{ParamValue, Placeholder};
use ferry_shared::domain::{ErrorKind, StepType};
use reqwest::Url;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use self::client::{Client, Statement, Wait, refuses_format, statement_body};
use self::results::Format;
use crate::connectors::config::{Fields, PoolSettings};
use crate::connectors::errors::DriverError;
use crate::connectors::http::check_literal;
use crate::connectors::network::{parse_ip_literal, validate_host};
use crate::connectors::warehouse::{bound_query, test_limit};
use crate::connectors::{ConnectorPool, ConnectorSpec, Driver, NetworkPolicy, StepRequest, TestDetails};
use crate::extract::{ExtractError, Output, ReadPath};

/// The result dispositions and formats a step asks for, best first: Arrow
/// streams from presigned links; JSON rows from presigned links; JSON rows
/// inline (at most 25 MiB in all). A warehouse that refuses one is asked
/// for the next, and its pool remembers the rung it settled on.
const LADDER: [(&str, Format); 3] = [
    ("EXTERNAL_LINKS", Format::ArrowStream),
    ("EXTERNAL_LINKS", Format::JsonArray),
    ("INLINE", Format::JsonArray),
];

/// A `databricks` connector's typed config.
#[derive(Debug)]
pub(crate) struct DatabricksConfig {
    /// The workspace host (a DNS name or an IP address).
    pub server_hostname: String,
    /// The workspace's HTTPS port (443 unless the connector says).
    pub port: u16,
    /// From `http_path`.
    pub warehouse_id: String,
    pub access_token: SecretString,
    pub catalog: Option<String>,
    pub schema: Option<String>,
    /// `connection_timeout_seconds` bounds connecting and a connection
    /// test; `statement_timeout_seconds` a whole step; `max_connections`
    /// and `idle_timeout_seconds` the kept-alive HTTP connections.
    pub pool: PoolSettings,
}

impl DatabricksConfig {
    /// Reads the config of a connector declared by `decl`; a field the
    /// type does not declare is refused.
    pub(crate) fn read(decl: &'static ConnectorType, map: &Map<String, Value>) -> Result<Self, DriverError> {
        Fields::parse(decl, map, |fields| {
            let server_hostname = fields.name("server_hostname")?;
            validate_host("server_hostname", &server_hostname)?;
            let warehouse_id = warehouse_id(&fields.name("http_path")?)?;
            let access_token = fields
                .secret("access_token")?
                .ok_or_else(|| DriverError::invalid_config("config.access_token is required"))?;
            Ok(DatabricksConfig {
                server_hostname,
                port: fields.port("port")?,
                warehouse_id,
                access_token,
                catalog: fields.str("catalog")?.map(str::to_owned),
                schema: fields.str("schema")?.map(str::to_owned),
                pool: PoolSettings::read(fields)?,
            })
        })
    }
}

/// The warehouse id of an `http_path`.
fn warehouse_id(http_path: &str) -> Result<String, DriverError> {
    let path = http_path.trim_end_matches('/');
    let id = path
        .strip_prefix("/sql/1.0/warehouses/")
        .or_else(|| path.strip_prefix("/sql/1.0/endpoints/"));
    match id {
        Some(id) if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(id.to_owned())
        }
        _ if path.starts_with("/sql/protocolv1/") => Err(DriverError::invalid_config(
            "config.http_path names a cluster; Ferry runs statements on SQL warehouses \
             (/sql/1.0/warehouses/<id>)",
        )),
        _ => Err(DriverError::invalid_config(
            "config.http_path must be a SQL warehouse's path, /sql/1.0/warehouses/<id>",
        )),
    }
}

/// The Databricks family.
pub(crate) struct Databricks;

#[async_trait]
impl Driver for Databricks {
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        Ok(Box::new(DatabricksHandle::open(spec, policy)?))
    }
}

/// One connector's client and settings.
pub(crate) struct DatabricksHandle {
    client: Client,
    config: DatabricksConfig,
    /// The [`LADDER`] rung this warehouse accepted last.
    rung: AtomicUsize,
}

impl DatabricksHandle {
    /// The client of `spec`, whose config is read as a [`DatabricksConfig`].
    fn open(spec: &ConnectorSpec, policy: &NetworkPolicy) -> Result<Self, DriverError> {
        let (decl, _) = spec.driver()?;
        let config = DatabricksConfig::read(decl, &spec.config)?;
        let base = workspace_url(&config.server_hostname, config.port)?;
        check_literal(&base, policy)?;
        let client = Client::new(
            base,
            config.access_token.expose_secret(),
            policy,
            spec.secrets(),
            config.pool.connect_timeout,
            config.pool.idle_timeout,
            config.pool.max_connections as usize,
        )?;
        Ok(DatabricksHandle {
            client,
            config,
            rung: AtomicUsize::new(0),
        })
    }

    fn body(&self, statement: &str, parameters: Vec<Value>, rung: usize, wait: &Wait<'_>) -> Value {
        let (disposition, format) = LADDER[rung];
        statement_body(
            &self.config.warehouse_id,
            statement,
            parameters,
            disposition,
            format.as_str(),
            (self.config.catalog.as_deref(), self.config.schema.as_deref()),
            wait.deadline
                .saturating_duration_since(tokio::time::Instant::now()),
        )
    }

    /// Runs a step's statement to success in the best format the warehouse
    /// offers.
    async fn submit(
        &self,
        statement: &str,
        parameters: &[Value],
        wait: &Wait<'_>,
    ) -> Result<(Statement, Format), DriverError> {
        let mut rung = self.rung.load(Ordering::Relaxed).min(LADDER.len() - 1);
        loop {
            let body = self.body(statement, parameters.to_vec(), rung, wait);
            match Statement::run(&self.client, body, wait).await {
                Ok(done) => {
                    self.rung.store(rung, Ordering::Relaxed);
                    return Ok((done, LADDER[rung].1));
                }
                Err(error) if rung + 1 < LADDER.len() && refuses_format(&error) => {
                    tracing::info!(
                        disposition = LADDER[rung].0,
                        format = LADDER[rung].1.as_str(),
                        error = %error.message(),
                        "the warehouse refused a result format; asking for the next one"
                    );
                    rung += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// `https://<host>:<port>/`, or where the tests' stand-in workspace for
/// `host` listens ([`testing::serve_at`]).
fn workspace_url(host: &str, port: u16) -> Result<Url, DriverError> {
    let authority = if parse_ip_literal(host).is_some_and(|ip| ip.is_ipv6()) {
        format!("[{}]", host.trim_start_matches('[').trim_end_matches(']'))
    } else {
        host.to_owned()
    };
    let text = match testing::origin(host) {
        Some((scheme, port)) => format!("{scheme}://{authority}:{port}/"),
        None => format!("https://{authority}:{port}/"),
    };
    Url::parse(&text).map_err(|_| DriverError::invalid_config("config.server_hostname is not a valid host"))
}

/// The statement of a `sql_query` step with its `{{name}}` placeholders
/// rewritten as `:name` markers, and one typed parameter per name
/// (`{name, value, type}`: STRING, BIGINT, DOUBLE, BOOLEAN, DATE,
/// TIMESTAMP).
fn named_statement(step: &StepRequest<'_>) -> Result<(String, Vec<Value>), ExtractError> {
    let (query, bound) = bound_query(step, Placeholder::Named)?;
    let names: Vec<&str> = ferry_shared::domain::step::placeholders(query).collect();
    if names.len() != bound.params.len() {
        return Err(ExtractError::new(
            ErrorKind::InvalidParameters,
            "the query's {{name}} placeholders could not be read",
        ));
    }
    let mut seen = Vec::new();
    let mut parameters = Vec::new();
    for (name, value) in names.into_iter().zip(&bound.params) {
        if !seen.contains(&name) {
            seen.push(name);
            parameters.push(parameter(name, value));
        }
    }
    Ok((bound.sql, parameters))
}

/// A named parameter as the API takes it: the value as text, typed.
fn parameter(name: &str, value: &ParamValue) -> Value {
    let (text, sql_type) = match value {
        ParamValue::Text(text) => (text.clone(), "STRING"),
        ParamValue::Integer(n) => (n.to_string(), "BIGINT"),
        ParamValue::Number(x) => (x.to_string(), "DOUBLE"),
        ParamValue::Boolean(b) => (b.to_string(), "BOOLEAN"),
        ParamValue::Date(day) => (day.format("%Y-%m-%d").to_string(), "DATE"),
        ParamValue::Timestamp(at) => (at.to_rfc3339(), "TIMESTAMP"),
    };
    json!({"name": name, "value": text, "type": sql_type})
}

#[async_trait]
impl ConnectorPool for DatabricksHandle {
    /// Runs `SELECT 1` through the statement path steps use (inline JSON),
    /// bounded by `connection_timeout_seconds`: it proves the token, the
    /// warehouse id and the right to use the warehouse. A stopped warehouse
    /// is started by it; one that takes longer to start than the bound
    /// fails the test with `timeout` (and the statement is cancelled).
    async fn test(&self, _addrs: &[SocketAddr], _policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        let budget = self.config.pool.connect_timeout;
        // Ends before the registry's own bound, so the statement is
        // cancelled and the error says what happened.
        let limit = test_limit(budget);
        let never = CancellationToken::new();
        let wait = Wait::new(&never, limit);
        let body = statement_body(
            &self.config.warehouse_id,
            "SELECT 1",
            Vec::new(),
            "INLINE",
            Format::JsonArray.as_str(),
            (self.config.catalog.as_deref(), self.config.schema.as_deref()),
            limit,
        );
        let statement = Statement::run(&self.client, body, &wait)
            .await
            .map_err(|error| match error.kind() {
                ErrorKind::Timeout => DriverError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the warehouse did not answer SELECT 1 within {} s (a stopped warehouse may still be starting)",
                        limit.as_secs().max(1)
                    ),
                ),
                _ => error,
            })?;
        let answered = statement.response.pointer("/result/data_array/0/0").cloned();
        statement.finish();
        match answered {
            Some(Value::String(one)) if one == "1" => Ok(TestDetails::default()),
            _ => Err(DriverError::unknown(
                "the warehouse answered SELECT 1 with something else",
            )),
        }
    }

    /// Runs a `sql_query` step: submits the statement with its named
    /// parameters, waits for it (bounded by `statement_timeout_seconds`,
    /// cancelled with the step), and streams its result chunk by chunk.
    /// A failed or cancelled step cancels the statement on the warehouse.
    async fn run(&self, step: &StepRequest<'_>, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        if step.step_type != StepType::SqlQuery {
            return Err(step.unsupported());
        }
        let (statement, parameters) = named_statement(step)?;
        let limit = self.config.pool.statement_timeout;
        let cancel = out.cancel();
        let wait = Wait::new(cancel, limit);
        let (statement, format) = self.submit(&statement, &parameters, &wait).await?;
        match results::read(&statement, format, out, &wait, limit).await {
            Ok(()) => {
                statement.finish();
                Ok(ReadPath::Databricks)
            }
            Err(error) => {
                statement.abandon().await;
                Err(error)
            }
        }
    }
}

/// Process-wide stand-ins for workspaces, filled only by tests: a local
/// server answering for a workspace host. Nothing in the worker calls the
/// setter.
#[doc(hidden)]
pub mod testing {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Mutex, OnceLock};

    fn table() -> &'static Mutex<HashMap<String, (&'static str, u16)>> {
        static TABLE: OnceLock<Mutex<HashMap<String, (&'static str, u16)>>> = OnceLock::new();
        TABLE.get_or_init(|| Mutex::new(HashMap::new()))
    }

    /// Makes this process reach workspace `host` at `addr`: `host`
    /// resolves to `addr`'s address (the network policy still applies) and
    /// requests go to `addr`'s port, over TLS when `tls`, else plain HTTP,
    /// instead of `https://host:443`.
    pub fn serve_at(host: &str, addr: SocketAddr, tls: bool) {
        crate::connectors::network::testing::resolve_as(host, &[addr.ip()]);
        if let Ok(mut table) = table().lock() {
            table.insert(
                host.to_ascii_lowercase(),
                (if tls { "https" } else { "http" }, addr.port()),
            );
        }
    }

    pub(super) fn origin(host: &str) -> Option<(&'static str, u16)> {
        table().lock().ok()?.get(&host.to_ascii_lowercase()).copied()
    }
}

#[cfg(test)]
mod tests;
