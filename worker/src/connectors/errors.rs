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

/// The `error.type` of a failed connection test: the shared
/// [`ErrorKind`] (one enum for steps, tests and the API), under the name the
/// drivers use.
pub use ferry_shared::domain::ErrorKind as ErrorType;

/// What the worker does about a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Run the step again (bounded, with backoff): trying again unchanged
    /// can succeed.
    Retry,
    /// Fail the step now: someone has to change something first.
    Fail,
}

/// The one place that decides whether a failure is transient, from its kind
/// and the server's own code (SQLSTATE, HTTP status) when it has one.
///
/// Retried: a broken or refused connection (but not a login refused, SQLSTATE
/// class `28`), a name that did not resolve, a
/// timeout, a rate limit, an object-store write, a PostgreSQL/MySQL
/// serialization failure or deadlock (SQLSTATE `40001`, `40P01`), a
/// server shutting down (`57P0x`) or a connection failure class (`08xxx`),
/// and HTTP 408, 429, 502, 503 and 504. Failed at once: authentication,
/// SQL errors, bad configuration or parameters, policy, missing things,
/// unsupported types, and anything internal or unknown.
pub fn disposition(kind: ErrorType, code: Option<&str>) -> Disposition {
    let transient = match kind {
        // A server that refuses the login mid-step (SQLSTATE class 28)
        // will refuse it again.
        ErrorType::ConnectionFailed => !code.is_some_and(|code| code.starts_with("28")),
        ErrorType::ConnectionRefused
        | ErrorType::DnsError
        | ErrorType::Timeout
        | ErrorType::RateLimited
        | ErrorType::UploadFailed => true,
        ErrorType::InvalidQuery => code.is_some_and(|code| {
            matches!(code, "40001" | "40P01") || code.starts_with("57P0") || code.starts_with("08")
        }),
        ErrorType::HttpError => matches!(code, Some("408" | "429" | "502" | "503" | "504")),
        ErrorType::InvalidParameters
        | ErrorType::TlsError
        | ErrorType::AuthenticationFailed
        | ErrorType::DatabaseNotFound
        | ErrorType::BlockedAddress
        | ErrorType::InvalidConfig
        | ErrorType::UnsupportedType
        | ErrorType::UnsupportedStepType
        | ErrorType::UnsupportedConnector
        | ErrorType::ConnectorDisabled
        | ErrorType::Forbidden
        | ErrorType::Cancelled
        | ErrorType::Fenced
        | ErrorType::NotFound
        | ErrorType::Internal
        | ErrorType::Unknown => false,
    };
    if transient {
        Disposition::Retry
    } else {
        Disposition::Fail
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
                error_type: kind,
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

    pub fn kind(&self) -> ErrorType {
        self.failure.error_type
    }

    pub fn message(&self) -> &str {
        &self.failure.message
    }

    pub fn code(&self) -> Option<&str> {
        self.failure.code.as_deref()
    }

    /// See [`disposition`].
    pub fn disposition(&self) -> Disposition {
        disposition(self.kind(), self.code())
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
const SECRET_KEYS: [&str; 6] = [
    "password",
    "auth_token",
    "access_token",
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

/// Maps a sqlx error met on a connection to `target` (the sqlx-based SQL
/// families share this). `classify` reads an error the server reported: its
/// code if it has one, its kind and the message used when the server's own
/// text would reveal a secret.
pub(crate) fn map_sqlx_error(
    error: &sqlx::Error,
    target: &str,
    secrets: &Secrets,
    classify: impl FnOnce(&dyn sqlx::error::DatabaseError) -> (Option<String>, ErrorType, &'static str),
) -> DriverError {
    match error {
        sqlx::Error::Database(database) => {
            let (code, kind, fallback) = classify(database.as_ref());
            let message = secrets
                .scrub(database.message())
                .unwrap_or_else(|| fallback.to_owned());
            let error = DriverError::new(kind, message);
            match code {
                Some(code) => error.with_code(code),
                None => error,
            }
        }
        sqlx::Error::Io(io) => from_io(io, target),
        sqlx::Error::Tls(tls) => DriverError::new(
            ErrorType::TlsError,
            format!("TLS with {target} failed: {}", tls_reason(&tls.to_string())),
        ),
        sqlx::Error::PoolTimedOut => DriverError::new(
            ErrorType::Timeout,
            format!("no connection to {target} became available in time"),
        ),
        sqlx::Error::PoolClosed => {
            DriverError::unknown("the connector's pool was closed (its configuration changed)")
        }
        sqlx::Error::Configuration(_) => DriverError::invalid_config("the connection settings were rejected"),
        sqlx::Error::Protocol(text) if looks_like_tls(text) => DriverError::new(
            ErrorType::TlsError,
            format!("TLS with {target} failed: {}", tls_reason(text)),
        ),
        sqlx::Error::Protocol(_) => DriverError::unknown(format!(
            "{target} answered with something that is not the expected protocol"
        )),
        _ => DriverError::unknown(format!("the query on {target} failed")),
    }
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
    use crate::connectors::config::object as config;
    use serde_json::json;

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
    fn transient_failures_retry_and_permanent_ones_fail_for_every_kind() {
        use Disposition::{Fail, Retry};
        for kind in ErrorType::ALL.iter().copied() {
            let expected = match kind {
                ErrorType::ConnectionFailed
                | ErrorType::ConnectionRefused
                | ErrorType::DnsError
                | ErrorType::Timeout
                | ErrorType::RateLimited
                | ErrorType::UploadFailed => Retry,
                _ => Fail,
            };
            assert_eq!(disposition(kind, None), expected, "{kind} without a code");
        }
        // The server's code decides for SQL errors and HTTP statuses.
        let cases = [
            (ErrorType::InvalidQuery, "40001", Retry),
            (ErrorType::InvalidQuery, "40P01", Retry),
            (ErrorType::InvalidQuery, "57P01", Retry),
            (ErrorType::InvalidQuery, "08006", Retry),
            (ErrorType::InvalidQuery, "42601", Fail),
            (ErrorType::InvalidQuery, "42P01", Fail),
            (ErrorType::InvalidQuery, "23505", Fail),
            (ErrorType::HttpError, "503", Retry),
            (ErrorType::HttpError, "429", Retry),
            (ErrorType::HttpError, "502", Retry),
            (ErrorType::HttpError, "504", Retry),
            (ErrorType::HttpError, "404", Fail),
            (ErrorType::HttpError, "401", Fail),
            (ErrorType::HttpError, "500", Fail),
            (ErrorType::AuthenticationFailed, "28P01", Fail),
            (ErrorType::InvalidConfig, "3D000", Fail),
            (ErrorType::Timeout, "57014", Retry),
            (ErrorType::ConnectionFailed, "57P01", Retry),
            (ErrorType::ConnectionFailed, "08006", Retry),
            (ErrorType::ConnectionFailed, "28P01", Fail),
            (ErrorType::ConnectionFailed, "28000", Fail),
        ];
        for (kind, code, expected) in cases {
            assert_eq!(disposition(kind, Some(code)), expected, "{kind} {code}");
        }
        let refused = DriverError::new(ErrorType::ConnectionRefused, "refused");
        assert_eq!(refused.disposition(), Retry);
        let denied = DriverError::new(ErrorType::AuthenticationFailed, "no").with_code("28P01");
        assert_eq!(denied.disposition(), Fail);
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
