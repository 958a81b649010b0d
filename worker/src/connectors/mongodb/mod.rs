//! MongoDB: one driver `Client` (which is its own pool) per connector.
//!
//! The connection string is the one config field that is a whole option
//! string, so it is parsed with the driver's own parser and then vetted:
//! options that name local files (`tlsCAFile`, `tlsCertificateKeyFile`),
//! Unix sockets, and authentication mechanisms that fetch credentials from
//! the worker's environment or cloud metadata (X.509, AWS, OIDC, GSSAPI,
//! mechanism properties) are refused. Pool sizes and timeouts come from the
//! connector's own fields, not from the string.
//!
//! Network policy: every seed host (after SRV resolution) is resolved and
//! checked before the client exists. Without TLS (and with private networks
//! not allowed) the client is given the checked addresses, not the names.
//! One seed and no replica set named means a direct connection: nothing the
//! server advertises is contacted. Otherwise the seeds are asked first
//! (`hello` on a direct, credential-less connection) for their members
//! (`hosts`, `passives`, `arbiters`), which are checked before the real
//! client exists: `blocked_address`, and no command of the test or step
//! runs. The driver still resolves member names itself and follows later
//! reconfigurations, so every server it opens is recorded and re-checked
//! after each test and on each use; a violation evicts the client. With TLS
//! the names stay (the driver verifies certificates against them): a
//! rebound name would also need a certificate for it from a public root.
//!
//! `mongo_query` steps run on the same client (one per connector and config
//! version, kept by the pool registry): [`query`] binds the config to BSON,
//! [`read`] streams the cursor, [`columns`] turns documents into Arrow
//! columns. See `design.md` beside this file.

mod columns;
mod query;
mod read;
#[cfg(test)]
mod step_tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::Client;
use mongodb::bson::{Document, doc};
use mongodb::event::EventHandler;
use mongodb::event::sdam::SdamEvent;
use mongodb::options::{
    AuthMechanism, ClientOptions, ConnectionString, HostInfo, ReadPreference, SelectionCriteria,
    ServerAddress, Tls,
};

use crate::connectors::config::Config;
use ferry_shared::domain::StepType;

use crate::connectors::errors::{DriverError, ErrorType, Secrets, from_io};
use crate::connectors::network::{self, validate_host};
use crate::connectors::{ConnectorPool, Driver, StepRequest};
use crate::connectors::{ConnectorSpec, NetworkPolicy, TestDetails};
use crate::extract::{ExtractError, Output, ReadPath};

const DEFAULT_PORT: u16 = 27017;

pub(crate) struct MongoHandle {
    pub client: Client,
    pub database: String,
    /// The server-side bound (`maxTimeMS`) of a step's query:
    /// `statement_timeout_seconds`.
    statement_timeout: Duration,
    /// Every server address the driver opened (seeds and discovered).
    opened: Arc<Mutex<Vec<ServerAddress>>>,
    secrets: Secrets,
}

pub(crate) async fn open(spec: &ConnectorSpec, policy: &NetworkPolicy) -> Result<MongoHandle, DriverError> {
    let config = Config::new(&spec.config);
    let uri = config
        .secret("connection_string")?
        .ok_or_else(|| DriverError::invalid_config("config.connection_string is required"))?;
    let database = config.required_name("database")?.to_owned();
    let auth_source = config.name("auth_source")?.unwrap_or("admin").to_owned();
    let replica_set = config.name("replica_set")?.map(str::to_owned);
    let read_preference = match config.str("read_preference")? {
        None | Some("primary") => ReadPreference::Primary,
        Some("primaryPreferred") => ReadPreference::PrimaryPreferred { options: None },
        Some("secondary") => ReadPreference::Secondary { options: None },
        Some("secondaryPreferred") => ReadPreference::SecondaryPreferred { options: None },
        Some("nearest") => ReadPreference::Nearest { options: None },
        Some(_) => {
            return Err(DriverError::invalid_config(
                "config.read_preference must be one of primary, primaryPreferred, secondary, secondaryPreferred, nearest",
            ));
        }
    };
    let settings = config.pool_settings()?;

    // The driver's parse errors may quote the string: never shown.
    let parsed = ConnectionString::parse(uri).map_err(|_| {
        DriverError::invalid_config("config.connection_string is not a valid MongoDB connection string")
    })?;
    vet(&parsed)?;
    let srv = matches!(parsed.host_info, HostInfo::DnsRecord(_));
    let mut options = ClientOptions::parse(parsed).await.map_err(|error| {
        let secrets = spec.secrets();
        match map_error(&error, &secrets).kind() {
            ErrorType::DnsError => DriverError::new(
                ErrorType::DnsError,
                "the SRV record of the connection string could not be resolved",
            ),
            ErrorType::Timeout => DriverError::new(ErrorType::Timeout, "resolving the SRV record timed out"),
            _ => DriverError::invalid_config("config.connection_string could not be used"),
        }
    })?;
    // Only network step so far: the SRV lookup of a `mongodb+srv` string.
    // Now the hosts are known: check them all before the client exists.
    let checked = check_hosts(&options.hosts, policy).await?;
    // With certificate verification on, the TLS handshake proves the peer
    // owns the name (only the bundled public roots are trusted and CA files
    // are refused), so a rebound name cannot reach an internal server. With
    // it off, or without TLS, the name proves nothing: use the addresses.
    let verifies_name = matches!(
        &options.tls,
        Some(Tls::Enabled(tls)) if tls.allow_invalid_certificates != Some(true)
    );
    if replica_set.is_some() {
        options.repl_set_name = replica_set.clone();
    }
    let discovers = srv || options.hosts.len() > 1 || options.repl_set_name.is_some();
    if !discovers && options.direct_connection.is_none() {
        // One host and no replica set named: talk to that server only, so
        // no member it advertises is ever contacted.
        options.direct_connection = Some(true);
    }
    if !verifies_name && !policy.allow_private_networks {
        // Without TLS nothing needs the names: connect to the checked
        // addresses, so a second DNS answer (rebinding) is never used.
        options.hosts = checked
            .iter()
            .map(|addr| ServerAddress::Tcp {
                host: addr.ip().to_string(),
                port: Some(addr.port()),
            })
            .collect();
    }
    if discovers && options.direct_connection != Some(true) {
        // The driver will contact every member the seeds advertise: ask the
        // seeds first (a `hello`, no credentials) and check those members
        // before any client of ours talks to them.
        check_members(&options, policy, &spec.secrets()).await?;
    }

    options.app_name = Some("ferry-worker".into());
    options.max_pool_size = Some(settings.max_connections);
    options.min_pool_size = Some(0);
    options.max_idle_time = Some(settings.idle_timeout);
    // Slightly inside the test's overall bound, so that the driver's own
    // (more telling) server-selection error wins the race.
    let inside = settings.connect_timeout.mul_f64(0.9);
    options.connect_timeout = Some(inside);
    options.server_selection_timeout = Some(inside);
    options.default_database = Some(database.clone());
    options.selection_criteria = Some(SelectionCriteria::ReadPreference(read_preference));
    if let Some(credential) = options.credential.as_mut()
        && credential.source.is_none()
    {
        // An authSource in the string wins over the field's default.
        credential.source = Some(auth_source);
    }
    let opened = Arc::new(Mutex::new(Vec::new()));
    let recorder = opened.clone();
    options.sdam_event_handler = Some(EventHandler::callback(move |event: SdamEvent| {
        if let SdamEvent::ServerOpening(opening) = event
            && let Ok(mut opened) = recorder.lock()
            && !opened.contains(&opening.address)
        {
            opened.push(opening.address);
        }
    }));
    let client = Client::with_options(options)
        .map_err(|_| DriverError::invalid_config("config.connection_string could not be used"))?;
    Ok(MongoHandle {
        client,
        database,
        statement_timeout: settings.statement_timeout,
        opened,
        secrets: spec.secrets(),
    })
}

/// Refuses connection-string options that read local files, reach Unix
/// sockets or take credentials from the worker's environment.
pub(crate) fn vet(parsed: &ConnectionString) -> Result<(), DriverError> {
    let refuse = |what: &str| {
        Err(DriverError::invalid_config(format!(
            "config.connection_string: {what} is not allowed"
        )))
    };
    if let Some(Tls::Enabled(tls)) = &parsed.tls {
        if tls.ca_file_path.is_some() {
            return refuse("tlsCAFile");
        }
        if tls.cert_key_file_path.is_some() {
            return refuse("tlsCertificateKeyFile");
        }
    }
    if let Some(credential) = &parsed.credential {
        match &credential.mechanism {
            None | Some(AuthMechanism::ScramSha1 | AuthMechanism::ScramSha256 | AuthMechanism::Plain) => {}
            Some(_) => return refuse("this authMechanism (use SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN)"),
        }
        if credential.mechanism_properties.is_some() {
            return refuse("authMechanismProperties");
        }
    }
    if let HostInfo::HostIdentifiers(hosts) = &parsed.host_info {
        for host in hosts {
            match host {
                ServerAddress::Tcp { host, .. } => validate_host("connection_string host", host)?,
                _ => return refuse("a Unix socket host"),
            }
        }
    }
    Ok(())
}

/// Resolves and checks every host; returns, per host, the first checked
/// address.
async fn check_hosts(
    hosts: &[ServerAddress],
    policy: &NetworkPolicy,
) -> Result<Vec<SocketAddr>, DriverError> {
    let mut checked = Vec::with_capacity(hosts.len());
    for address in hosts {
        match address {
            ServerAddress::Tcp { host, port } => {
                validate_host("connection_string host", host)?;
                let addrs = network::resolve(host, port.unwrap_or(DEFAULT_PORT), policy).await?;
                checked.extend(addrs.first().copied());
            }
            _ => {
                return Err(DriverError::invalid_config(
                    "config.connection_string: a Unix socket host is not allowed",
                ));
            }
        }
    }
    Ok(checked)
}

/// Asks each seed directly (no discovery, no credentials) which members
/// its replica set has (`hosts`, `passives`, `arbiters`) and checks them
/// all against the policy. A seed that does not answer is skipped: the
/// driver will fail on it the same way.
async fn check_members(
    options: &ClientOptions,
    policy: &NetworkPolicy,
    secrets: &Secrets,
) -> Result<(), DriverError> {
    if policy.allow_private_networks {
        return Ok(());
    }
    for seed in &options.hosts {
        let mut direct = options.clone();
        direct.hosts = vec![seed.clone()];
        direct.direct_connection = Some(true);
        direct.repl_set_name = None;
        direct.credential = None;
        direct.sdam_event_handler = None;
        direct.app_name = Some("ferry-worker".into());
        let client = Client::with_options(direct)
            .map_err(|_| DriverError::invalid_config("config.connection_string could not be used"))?;
        let hello = client.database("admin").run_command(doc! { "hello": 1 }).await;
        client.shutdown().await;
        let hello = match hello {
            Ok(hello) => hello,
            Err(error) => {
                tracing::debug!(error = %map_error(&error, secrets).message(), "replica-set seed did not answer hello");
                continue;
            }
        };
        let mut members = Vec::new();
        for list in ["hosts", "passives", "arbiters"] {
            if let Ok(entries) = hello.get_array(list) {
                for entry in entries {
                    let member = entry
                        .as_str()
                        .and_then(|text| ServerAddress::parse(text).ok())
                        .ok_or_else(|| {
                            DriverError::unknown(
                                "the MongoDB server advertised a member that is not host:port",
                            )
                        })?;
                    members.push(member);
                }
            }
        }
        check_hosts(&members, policy).await?;
    }
    Ok(())
}

impl MongoHandle {
    /// Re-checks every server the driver has opened against the policy.
    pub async fn check_opened(&self, policy: &NetworkPolicy) -> Result<(), DriverError> {
        if policy.allow_private_networks {
            return Ok(());
        }
        let opened: Vec<ServerAddress> = match self.opened.lock() {
            Ok(opened) => opened.clone(),
            Err(_) => return Err(DriverError::unknown("the MongoDB client's state is unavailable")),
        };
        check_hosts(&opened, policy).await.map(drop)
    }
}

fn is_unauthorized(error: &mongodb::error::Error) -> bool {
    matches!(error.kind.as_ref(), mongodb::error::ErrorKind::Command(command) if command.code == 13)
}

fn build_version(build: &Document) -> Option<String> {
    build
        .get_str("version")
        .ok()
        .map(|version| format!("MongoDB {version}"))
}

fn local_time(hello: &Document) -> Option<DateTime<Utc>> {
    let time = hello.get_datetime("localTime").ok()?;
    DateTime::from_timestamp_millis(time.timestamp_millis())
}

/// The classes of driver failure [`classify`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Authentication,
    Command,
    ServerSelection,
    Dns,
    Other,
}

/// Maps a driver error. The driver folds most connection failures into a
/// server-selection timeout whose message describes each server's last
/// error, so that text is read (never shown) to find the cause.
pub(crate) fn map_error(error: &mongodb::error::Error, secrets: &Secrets) -> DriverError {
    use mongodb::error::ErrorKind as K;
    let mapped = match error.kind.as_ref() {
        K::Authentication { message, .. } => classify(Failure::Authentication, message, None),
        K::Command(command) => classify(Failure::Command, &command.message, Some(command.code)),
        K::ServerSelection { message, .. } | K::ConnectionPoolCleared { message, .. } => {
            classify(Failure::ServerSelection, message, None)
        }
        K::DnsResolve { message, .. } => classify(Failure::Dns, message, None),
        K::Io(io) => from_io(io, "the MongoDB server"),
        K::InvalidArgument { .. } => DriverError::invalid_config("the MongoDB settings were rejected"),
        K::InvalidTlsConfig { .. } => {
            DriverError::new(ErrorType::TlsError, "the TLS settings could not be used")
        }
        _ => classify(Failure::Other, "", None),
    };
    mapped.redacted(secrets)
}

/// The pure part of [`map_error`], for unit tests (nx-27017, the test peer,
/// has no authentication, so credential failures are covered here).
pub(crate) fn classify(failure: Failure, message: &str, code: Option<i32>) -> DriverError {
    let text = message.to_ascii_lowercase();
    let auth = |code: Option<i32>| {
        let error = DriverError::new(ErrorType::AuthenticationFailed, "invalid username or password");
        match code {
            Some(code) => error.with_code(code.to_string()),
            None => error,
        }
    };
    match failure {
        Failure::Authentication => auth(code.or(Some(18))),
        // 18 AuthenticationFailed, 13 Unauthorized, 8000 Atlas' AtlasError
        // (bad auth), 11 UserNotFound.
        Failure::Command if matches!(code, Some(18 | 13 | 8000 | 11)) => auth(code),
        Failure::Command => {
            let error = DriverError::unknown("the server reported an error");
            match code {
                Some(code) => error.with_code(code.to_string()),
                None => error,
            }
        }
        Failure::Dns => DriverError::new(ErrorType::DnsError, "the MongoDB host name could not be resolved"),
        Failure::ServerSelection | Failure::Other => {
            if text.contains("authentication") || text.contains("scram") {
                auth(Some(18))
            } else if text.contains("connection refused") || text.contains("os error 111") {
                DriverError::new(
                    ErrorType::ConnectionRefused,
                    "the MongoDB server refused the connection",
                )
            } else if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
                DriverError::new(
                    ErrorType::TlsError,
                    "the TLS handshake with the MongoDB server failed",
                )
            } else if text.contains("failed to lookup")
                || text.contains("no record found")
                || text.contains("name or service not known")
                || text.contains("dns")
            {
                DriverError::new(ErrorType::DnsError, "the MongoDB host name could not be resolved")
            } else if failure == Failure::ServerSelection || text.contains("timed out") {
                DriverError::new(ErrorType::Timeout, "no MongoDB server became available in time")
            } else {
                DriverError::unknown("the MongoDB operation failed")
            }
        }
    }
}

/// Server codes of a connection or replica-set state problem: trying again
/// (on another connection or member) can succeed.
const TRANSIENT_CODES: [i32; 11] = [6, 7, 89, 91, 189, 9001, 10107, 11600, 11602, 13435, 13436];

/// Server codes of a query that ran out of time (`MaxTimeMSExpired`,
/// `ExceededTimeLimit`).
const TIMEOUT_CODES: [i32; 2] = [50, 262];

/// A driver error during a step, in the step error vocabulary: a command the
/// server refused is `invalid_query` with the server's message and code (a
/// timeout code is `timeout`, a connection or replica-set state code
/// `connection_failed`, both retried); network failures are
/// `connection_failed` or `timeout`; credentials refused are
/// `authentication_failed`. Messages never carry the connection string or
/// a secret.
pub(crate) fn step_error(error: &mongodb::error::Error, secrets: &Secrets) -> ExtractError {
    use mongodb::error::ErrorKind as K;
    let mapped = match error.kind.as_ref() {
        K::Command(command) => command_error(Some(command.code), &command.code_name, &command.message),
        K::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            DriverError::new(ErrorType::Timeout, "the MongoDB server did not answer in time")
        }
        K::Io(_) | K::ConnectionPoolCleared { .. } => DriverError::new(
            ErrorType::ConnectionFailed,
            "the connection to the MongoDB server failed",
        ),
        K::InvalidResponse { .. } => match error.server_response() {
            // A server that refuses a command without a code.
            Some(reply) if reply.get_str("errmsg").is_ok() => command_error(
                reply.get_i32("code").ok(),
                reply.get_str("codeName").unwrap_or_default(),
                reply.get_str("errmsg").unwrap_or_default(),
            ),
            _ => DriverError::new(
                ErrorType::ConnectionFailed,
                "the MongoDB server sent a reply that could not be read",
            ),
        },
        _ => {
            let mapped = map_error(error, secrets);
            match mapped.kind() {
                ErrorType::Unknown => {
                    DriverError::new(ErrorType::ConnectionFailed, "the MongoDB operation failed")
                }
                _ => mapped,
            }
        }
    };
    let mapped = mapped.redacted(secrets);
    ExtractError::from(mapped)
}

/// A command the server refused, by its code.
fn command_error(code: Option<i32>, code_name: &str, message: &str) -> DriverError {
    let with_code = |error: DriverError| match code {
        Some(code) => error.with_code(code.to_string()),
        None => error,
    };
    match code {
        Some(code) if TIMEOUT_CODES.contains(&code) => with_code(DriverError::new(
            ErrorType::Timeout,
            "the query ran longer than the connector's statement_timeout_seconds",
        )),
        Some(code) if TRANSIENT_CODES.contains(&code) => with_code(DriverError::new(
            ErrorType::ConnectionFailed,
            format!("the MongoDB server could not serve the query: {message}"),
        )),
        Some(18 | 13 | 11 | 8000) => classify(Failure::Command, message, code),
        _ => {
            let text = if code_name.is_empty() {
                message.to_owned()
            } else {
                format!("{message} ({code_name})")
            };
            with_code(DriverError::new(ErrorType::InvalidQuery, text))
        }
    }
}

/// The MongoDB family.
pub(crate) struct MongoDb;

#[async_trait]
impl Driver for MongoDb {
    async fn open(
        &self,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<Box<dyn ConnectorPool>, DriverError> {
        Ok(Box::new(open(spec, policy).await?))
    }
}

#[async_trait]
impl ConnectorPool for MongoHandle {
    /// `hello` (server time), `buildInfo` (version) and the database names
    /// when the user may list them.
    async fn test(&self, _addrs: &[SocketAddr], policy: &NetworkPolicy) -> Result<TestDetails, DriverError> {
        let admin = self.client.database("admin");
        let result = async {
            let hello = admin.run_command(doc! { "hello": 1 }).await?;
            let build = admin.run_command(doc! { "buildInfo": 1 }).await?;
            let names = self.client.list_database_names().await;
            Ok::<_, mongodb::error::Error>((hello, build, names))
        }
        .await;
        // Whatever happened, the servers the driver talked to must be allowed.
        self.check_opened(policy).await?;
        let (hello, build, names) = result.map_err(|error| map_error(&error, &self.secrets))?;
        let schemas = match names {
            Ok(names) => Some(names),
            Err(error) if is_unauthorized(&error) => None,
            Err(error) => return Err(map_error(&error, &self.secrets)),
        };
        Ok(TestDetails {
            version: build_version(&build),
            server_time: local_time(&hello),
            schemas,
        })
    }

    async fn recheck(&self, policy: &NetworkPolicy) -> Result<Option<Vec<SocketAddr>>, DriverError> {
        self.check_opened(policy).await.map(|()| Some(Vec::new()))
    }

    /// `mongo_query` steps (see [`read`]).
    async fn run(&self, step: &StepRequest<'_>, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        match step.step_type {
            StepType::MongoQuery => read::run(self, step, out).await,
            _ => Err(step.unsupported()),
        }
    }

    fn close(&self) {
        let client = self.client.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { client.shutdown().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_failures_are_authentication_failed_with_the_server_code() {
        let error = classify(
            Failure::Authentication,
            "SCRAM failure: Authentication failed.",
            None,
        );
        assert_eq!(
            (error.kind(), error.code()),
            (ErrorType::AuthenticationFailed, Some("18"))
        );
        let error = classify(Failure::Command, "Authentication failed.", Some(18));
        assert_eq!(
            (error.kind(), error.code()),
            (ErrorType::AuthenticationFailed, Some("18"))
        );
        let error = classify(Failure::Command, "bad auth : authentication failed", Some(8000));
        assert_eq!(
            (error.kind(), error.code()),
            (ErrorType::AuthenticationFailed, Some("8000"))
        );
        let error = classify(
            Failure::Command,
            "not authorized on admin to execute command",
            Some(13),
        );
        assert_eq!(error.kind(), ErrorType::AuthenticationFailed);
    }

    #[test]
    fn server_selection_timeouts_are_read_for_their_cause() {
        let refused = "Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [ \
                       { Address: 127.0.0.1:1, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {} } ] }";
        assert_eq!(
            classify(Failure::ServerSelection, refused, None).kind(),
            ErrorType::ConnectionRefused
        );
        let auth = "Server selection timeout: ... Error: Kind: An error occurred during authentication: SCRAM failure";
        assert_eq!(
            classify(Failure::ServerSelection, auth, None).kind(),
            ErrorType::AuthenticationFailed
        );
        let tls = "Server selection timeout: ... Error: invalid peer certificate: UnknownIssuer";
        assert_eq!(
            classify(Failure::ServerSelection, tls, None).kind(),
            ErrorType::TlsError
        );
        let silent =
            "Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [] }";
        assert_eq!(
            classify(Failure::ServerSelection, silent, None).kind(),
            ErrorType::Timeout
        );
    }

    #[test]
    fn command_errors_keep_their_code_and_map_through_the_driver_type() {
        let command: mongodb::error::CommandError =
            serde_json::from_value(serde_json::json!({"code": 18, "codeName": "AuthenticationFailed", "errmsg": "Authentication failed."}))
                .expect("command error");
        let error = mongodb::error::Error::from(mongodb::error::ErrorKind::Command(command));
        let mapped = map_error(&error, &Secrets::default());
        assert_eq!(
            (mapped.kind(), mapped.code()),
            (ErrorType::AuthenticationFailed, Some("18"))
        );
    }

    #[test]
    fn connection_strings_naming_local_files_or_environment_credentials_are_refused() {
        for bad in [
            "mongodb://db.example.com/?tls=true&tlsCAFile=/etc/ssl/private/ca.pem",
            "mongodb://db.example.com/?tls=true&tlsCertificateKeyFile=/etc/ferry/client.pem",
            "mongodb://db.example.com/?authMechanism=MONGODB-X509",
            "mongodb://user@db.example.com/?authMechanism=MONGODB-OIDC&authMechanismProperties=ENVIRONMENT:azure",
            "mongodb://%2Ftmp%2Fmongodb-27017.sock",
        ] {
            let parsed = ConnectionString::parse(bad);
            let refused = match parsed {
                Ok(parsed) => vet(&parsed).is_err(),
                Err(_) => true,
            };
            assert!(refused, "{bad}");
        }
        let ok = ConnectionString::parse(
            "mongodb://app:pw@db1.example.com:27017,db2.example.com/?replicaSet=rs0&authSource=admin",
        )
        .expect("parses");
        assert!(vet(&ok).is_ok());
    }
}
