//! The one vocabulary of failure kinds: the `error.type` word of a failed
//! step, of a failed connection test, and of a worker's job outcome. The
//! API, the store and the worker all use [`ErrorKind`]; the words are what
//! callers see and what the store keeps, so they never change.
//!
//! Whether a kind is worth retrying is not decided here: the worker decides
//! it in one place, from the kind and the server's own code.

use std::fmt;
use strum::{EnumString, IntoStaticStr, VariantArray};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What went wrong, as one snake_case word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorKind {
    /// The server refused the statement (syntax, missing table, a
    /// constraint, a serialization failure; the SQLSTATE says which).
    InvalidQuery,
    /// The execution's parameters do not fit the step's declaration.
    InvalidParameters,
    /// An established database connection broke (reset, shut down).
    ConnectionFailed,
    /// Nothing listens at the address, or the network path is down.
    ConnectionRefused,
    /// The host name does not resolve.
    DnsError,
    /// No answer in time (connect, statement or lock timeout).
    Timeout,
    /// The TLS handshake failed (untrusted chain, name mismatch, server
    /// without TLS where TLS is required).
    TlsError,
    /// The server rejected the credentials (or the account's access).
    AuthenticationFailed,
    /// The database (PostgreSQL/MySQL database, Redis DB index, SQLite
    /// file) does not exist.
    DatabaseNotFound,
    /// The address is private/loopback/link-local and the worker's network
    /// policy does not allow it.
    BlockedAddress,
    /// The configuration cannot be used as given.
    InvalidConfig,
    /// A REST API answered with an error status.
    HttpError,
    /// A server asked us to slow down.
    RateLimited,
    /// A column type the step cannot export.
    UnsupportedType,
    /// A step type this version does not execute.
    UnsupportedStepType,
    /// A step type that cannot run on the connector's type.
    UnsupportedConnector,
    /// The step's connector is disabled.
    ConnectorDisabled,
    /// The caller may not use the step's connector.
    Forbidden,
    /// Writing the result to object storage failed.
    UploadFailed,
    /// The step was cancelled.
    Cancelled,
    /// A newer attempt owns the execution.
    Fenced,
    /// Something the step refers to no longer exists.
    NotFound,
    /// A fault of Ferry itself.
    Internal,
    /// Anything else.
    Unknown,
}

impl ErrorKind {
    /// Every kind, for metrics, documentation and tests.
    pub const ALL: &'static [ErrorKind] = <ErrorKind as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }

    /// The message used when a more specific one cannot be shown safely.
    pub const fn generic_message(self) -> &'static str {
        match self {
            ErrorKind::InvalidQuery => "the server rejected the query",
            ErrorKind::InvalidParameters => "the parameters do not match the step",
            ErrorKind::ConnectionFailed => "the database connection failed",
            ErrorKind::ConnectionRefused => "the connection was refused",
            ErrorKind::DnsError => "the host name could not be resolved",
            ErrorKind::Timeout => "the server did not answer in time",
            ErrorKind::TlsError => "the TLS handshake failed",
            ErrorKind::AuthenticationFailed => "invalid username or password",
            ErrorKind::DatabaseNotFound => "the database does not exist",
            ErrorKind::BlockedAddress => "the address is not allowed by the worker's network policy",
            ErrorKind::InvalidConfig => "the connector configuration is invalid",
            ErrorKind::HttpError => "the API answered with an error status",
            ErrorKind::RateLimited => "the server asked to slow down",
            ErrorKind::UnsupportedType => "a column type cannot be exported",
            ErrorKind::UnsupportedStepType => "this step type is not executed by this version",
            ErrorKind::UnsupportedConnector => "this step cannot run on this connector type",
            ErrorKind::ConnectorDisabled => "the connector is disabled",
            ErrorKind::Forbidden => "the connector may not be used by this step",
            ErrorKind::UploadFailed => "writing the result to object storage failed",
            ErrorKind::Cancelled => "the step was cancelled",
            ErrorKind::Fenced => "a newer attempt owns the execution",
            ErrorKind::NotFound => "not found",
            ErrorKind::Internal => "an internal error occurred",
            ErrorKind::Unknown => "the connection test failed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the word itself (`kind == "timeout"`).
impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for ErrorKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A word outside the vocabulary (from a newer peer) reads as
/// [`ErrorKind::Unknown`] rather than failing the whole message.
impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(ErrorKind::parse(&text).unwrap_or(ErrorKind::Unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_word_and_serde() {
        let mut words = std::collections::HashSet::new();
        for &kind in ErrorKind::ALL {
            assert!(words.insert(kind.as_str()), "{kind} twice");
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_value(kind).expect("serializes");
            assert_eq!(json, serde_json::Value::String(kind.as_str().to_owned()));
            assert_eq!(
                serde_json::from_value::<ErrorKind>(json).expect("deserializes"),
                kind
            );
        }
    }

    #[test]
    fn the_words_are_the_stored_ones() {
        let words: Vec<&str> = ErrorKind::ALL.iter().map(|kind| kind.as_str()).collect();
        assert_eq!(
            words.join(" "),
            "invalid_query invalid_parameters connection_failed connection_refused dns_error \
             timeout tls_error authentication_failed database_not_found blocked_address \
             invalid_config http_error rate_limited unsupported_type unsupported_step_type \
             unsupported_connector connector_disabled forbidden upload_failed cancelled fenced \
             not_found internal unknown"
        );
    }

    #[test]
    fn an_unknown_word_reads_as_unknown() {
        let kind: ErrorKind = serde_json::from_str("\"quantum_flux\"").expect("deserializes");
        assert_eq!(kind, ErrorKind::Unknown);
        assert_eq!(ErrorKind::parse("quantum_flux"), None);
    }
}
