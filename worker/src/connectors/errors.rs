//! The driver error vocabulary: every failure a connector can report, in the
//! seed's `error.type` words, with a message that is safe to show.
//!
//! Driver errors like to echo what they were given (URLs with passwords,
//! connection strings, server messages quoting a token). Messages here are
//! built from error kinds and codes; where a server's own text is worth
//! showing it first goes through [`Secrets::scrub`], which drops the text
//! entirely if it contains any secret the connector holds.

use std::fmt;

use ferry_shared::domain::TestFailure;
use serde_json::{Map, Value};

/// The `error.type` of a failed connection test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// Nothing listens at the address, or the network path is down.
    ConnectionRefused,
    /// The host name does not resolve.
    DnsError,
    /// No answer within `connection_timeout_seconds`.
    Timeout,
    /// The TLS handshake failed (untrusted chain, name mismatch, server
    /// without TLS where TLS is required).
    TlsError,
    /// The server rejected the credentials (or the account's access).
    AuthenticationFailed,
    /// The database (PostgreSQL/MySQL database, Redis DB index, SQLite file)
    /// does not exist.
    DatabaseNotFound,
    /// The address is private/loopback/link-local and the worker's network
    /// policy does not allow it.
    BlockedAddress,
    /// The configuration cannot be used as given.
    InvalidConfig,
    /// A REST API answered with an error status.
    HttpError,
    /// Anything else.
    Unknown,
}

impl ErrorType {
    /// Every type, for metrics and documentation.
    pub const ALL: [ErrorType; 10] = [
        ErrorType::ConnectionRefused,
        ErrorType::DnsError,
        ErrorType::Timeout,
        ErrorType::TlsError,
        ErrorType::AuthenticationFailed,
        ErrorType::DatabaseNotFound,
        ErrorType::BlockedAddress,
        ErrorType::InvalidConfig,
        ErrorType::HttpError,
        ErrorType::Unknown,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorType::ConnectionRefused => "connection_refused",
            ErrorType::DnsError => "dns_error",
            ErrorType::Timeout => "timeout",
            ErrorType::TlsError => "tls_error",
            ErrorType::AuthenticationFailed => "authentication_failed",
            ErrorType::DatabaseNotFound => "database_not_found",
            ErrorType::BlockedAddress => "blocked_address",
            ErrorType::InvalidConfig => "invalid_config",
            ErrorType::HttpError => "http_error",
            ErrorType::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// Whether trying again later, unchanged, can succeed: network trouble,
    /// timeouts and unknown failures can; credentials, configuration,
    /// policy and missing databases need someone to change something.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorType::ConnectionRefused
                | ErrorType::DnsError
                | ErrorType::Timeout
                | ErrorType::HttpError
                | ErrorType::Unknown
        )
    }

    /// The message used when a more specific one cannot be shown safely.
    pub const fn generic_message(self) -> &'static str {
        match self {
            ErrorType::ConnectionRefused => "the connection was refused",
            ErrorType::DnsError => "the host name could not be resolved",
            ErrorType::Timeout => "the server did not answer in time",
            ErrorType::TlsError => "the TLS handshake failed",
            ErrorType::AuthenticationFailed => "invalid username or password",
            ErrorType::DatabaseNotFound => "the database does not exist",
            ErrorType::BlockedAddress => "the address is not allowed by the worker's network policy",
            ErrorType::InvalidConfig => "the connector configuration is invalid",
            ErrorType::HttpError => "the API answered with an error status",
            ErrorType::Unknown => "the connection test failed",
        }
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connector failure in the seed's vocabulary. `failure.message` is safe
/// to show to users and to log: it never contains secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverError {
    pub failure: TestFailure,
}

impl DriverError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        DriverError {
            failure: TestFailure {
                error_type: kind.as_str().to_owned(),
                message: message.into(),
                code: None,
            },
        }
    }

    /// Attaches the server's own error code (SQLSTATE, MySQL error number,
    /// Redis error prefix, HTTP status).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.failure.code = Some(code.into());
        self
    }

    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorType::InvalidConfig, message)
    }

    pub fn timeout(limit: std::time::Duration) -> Self {
        Self::new(
            ErrorType::Timeout,
            format!("no answer within {} s", limit.as_secs().max(1)),
        )
    }

    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(ErrorType::Unknown, message)
    }

    /// The error type; [`ErrorType::Unknown`] if the failure was built by
    /// hand with a word outside the vocabulary.
    pub fn kind(&self) -> ErrorType {
        ErrorType::parse(&self.failure.error_type).unwrap_or(ErrorType::Unknown)
    }

    pub fn message(&self) -> &str {
        &self.failure.message
    }

    pub fn code(&self) -> Option<&str> {
        self.failure.code.as_deref()
    }

    /// See [`ErrorType::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Replaces the message (and code) by the generic one for its type if
    /// either contains one of `secrets`.
    pub(crate) fn redacted(mut self, secrets: &Secrets) -> Self {
        let leaks = |text: &str| secrets.contains_any(text);
        if leaks(&self.failure.message) {
            self.failure.message = self.kind().generic_message().to_owned();
        }
        if self.failure.code.as_deref().is_some_and(leaks) {
            self.failure.code = None;
        }
        self
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.failure.error_type, self.failure.message)?;
        if let Some(code) = &self.failure.code {
            write!(f, " (code {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DriverError {}

impl From<DriverError> for TestFailure {
    fn from(error: DriverError) -> Self {
        error.failure
    }
}

/// Config keys whose values are secret (the registry encrypts them).
const SECRET_KEYS: [&str; 5] = [
    "password",
    "auth_token",
    "api_key_value",
    "client_secret",
    "connection_string",
];

/// The secret values a connector's configuration holds, for checking that a
/// message does not contain any of them. Never printed.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// Collects the secret fields of `config`, the password inside a
    /// connection string (raw and percent-decoded), and every value of
    /// `headers` (which often carries an API key).
    pub fn from_config(config: &Map<String, Value>) -> Self {
        let mut secrets = Secrets::default();
        for key in SECRET_KEYS {
            if let Some(Value::String(value)) = config.get(key) {
                secrets.add(value);
            }
        }
        if let Some(Value::String(uri)) = config.get("connection_string")
            && let Some(password) = uri_password(uri)
        {
            secrets.add(password);
            secrets.add(&percent_decode(password));
        }
        if let Some(Value::Object(headers)) = config.get("headers") {
            for value in headers.values() {
                if let Value::String(value) = value {
                    secrets.add(value);
                }
            }
        }
        secrets
    }

    /// Adds a secret learnt at run time (e.g. an OAuth access token).
    pub fn add(&mut self, value: &str) {
        if !value.is_empty() && !self.values.iter().any(|known| known == value) {
            self.values.push(value.to_owned());
        }
    }

    pub fn contains_any(&self, text: &str) -> bool {
        self.values.iter().any(|secret| text.contains(secret.as_str()))
    }

    /// `text` if it contains no secret, else `None`.
    pub fn scrub(&self, text: &str) -> Option<String> {
        (!self.contains_any(text)).then(|| text.to_owned())
    }
}

/// The password of a `scheme://user:password@host/...` string, if any.
fn uri_password(uri: &str) -> Option<&str> {
    let after_scheme = uri.split_once("://")?.1;
    let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
    let authority = &after_scheme[..authority_end];
    let (user_info, _) = authority.rsplit_once('@')?;
    let (_, password) = user_info.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// Decodes `%XX` escapes (RFC 3986); invalid escapes stay as they are.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Maps an I/O error met while connecting to the vocabulary.
pub(crate) fn from_io(error: &std::io::Error, target: &str) -> DriverError {
    use std::io::ErrorKind as K;
    match error.kind() {
        K::ConnectionRefused => DriverError::new(
            ErrorType::ConnectionRefused,
            format!("connection refused by {target}"),
        ),
        K::TimedOut | K::WouldBlock => {
            DriverError::new(ErrorType::Timeout, format!("{target} did not answer in time"))
        }
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable | K::NotConnected => {
            DriverError::new(ErrorType::ConnectionRefused, format!("{target} is unreachable"))
        }
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => DriverError::new(
            ErrorType::ConnectionRefused,
            format!("{target} closed the connection before the session was established"),
        ),
        _ if looks_like_tls(&error.to_string()) => DriverError::new(
            ErrorType::TlsError,
            format!(
                "TLS handshake with {target} failed: {}",
                tls_reason(&error.to_string())
            ),
        ),
        _ => DriverError::unknown(format!("I/O error talking to {target}")),
    }
}

/// Whether an error text comes from the TLS layer (rustls wraps its errors
/// into `io::Error`s, so the text is all there is).
pub(crate) fn looks_like_tls(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "received fatal alert",
        "peer is incompatible",
        "unknownissuer",
        "notvalidforname",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

/// A short, safe explanation of a rustls failure.
pub(crate) fn tls_reason(text: &str) -> &'static str {
    let lower = text.to_ascii_lowercase();
    if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        "the server certificate is not valid for this host name"
    } else if lower.contains("unknownissuer") || lower.contains("unknown issuer") {
        "the server certificate is not signed by a trusted CA"
    } else if lower.contains("expired") {
        "the server certificate has expired"
    } else if lower.contains("does not support tls") {
        "the server does not support TLS"
    } else if lower.contains("certificate") {
        "the server certificate was rejected"
    } else {
        "the handshake was rejected"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn secrets_include_passwords_tokens_header_values_and_the_connection_string_password() {
        let secrets = Secrets::from_config(&config(json!({
            "password": "hunter2",
            "auth_token": "tok_abc",
            "headers": {"X-Key": "k-123"},
            "connection_string": "mongodb://app:p%40ss@db.example.com/?authSource=admin",
        })));
        for leak in [
            "hunter2",
            "tok_abc",
            "k-123",
            "p%40ss",
            "p@ss",
            "mongodb://app:p%40ss@db.example.com/?authSource=admin",
        ] {
            assert!(secrets.contains_any(&format!("error near {leak} here")), "{leak}");
        }
        assert!(!secrets.contains_any("connection refused by db.example.com:27017"));
    }

    #[test]
    fn a_message_containing_a_secret_is_replaced_by_the_generic_one() {
        let secrets = Secrets::from_config(&config(json!({"password": "s3cret"})));
        let error =
            DriverError::new(ErrorType::AuthenticationFailed, "bad password s3cret").with_code("28P01");
        let redacted = error.redacted(&secrets);
        assert_eq!(redacted.message(), "invalid username or password");
        assert_eq!(redacted.code(), Some("28P01"));
    }

    #[test]
    fn error_types_round_trip_and_know_whether_retrying_helps() {
        for kind in ErrorType::ALL {
            assert_eq!(ErrorType::parse(kind.as_str()), Some(kind));
        }
        assert!(ErrorType::Timeout.is_retryable());
        assert!(!ErrorType::AuthenticationFailed.is_retryable());
        assert!(!ErrorType::BlockedAddress.is_retryable());
    }

    #[test]
    fn io_errors_map_to_the_vocabulary() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(from_io(&refused, "db:5432").kind(), ErrorType::ConnectionRefused);
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: NotValidForName",
        );
        let mapped = from_io(&tls, "db:5432");
        assert_eq!(mapped.kind(), ErrorType::TlsError);
        assert!(mapped.message().contains("not valid for this host name"));
    }
}
