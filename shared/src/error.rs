//! The one error vocabulary of Ferry. Codes are stable strings that the API
//! turns into the seeds' JSON error bodies; nothing here knows about HTTP.

use serde_json::{Map, Value};
use strum::IntoStaticStr;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable error codes, as they appear in the `error` field of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ErrorCode {
    ValidationError,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    ConnectionFailed,
    RateLimited,
    PayloadTooLarge,
    MethodNotAllowed,
    ServiceUnavailable,
    InternalError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Every failure a Ferry component reports to a caller.
///
/// `Internal` carries the cause for the log only: it is never shown to API
/// callers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Validation {
        field: Option<String>,
        message: String,
        details: Option<String>,
    },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A state conflict; `extra` holds fields added to the body (e.g.
    /// `execution_id`, `usage`).
    #[error("{message}")]
    Conflict {
        message: String,
        extra: Map<String, Value>,
    },
    /// A backend (database, queue) is unreachable; callers should retry.
    #[error("{0}")]
    Unavailable(String),
    /// An unexpected failure. `message` is what the log shows first;
    /// `source`, when the failure came from another error, keeps that error
    /// so its whole chain can be logged.
    #[error("internal error: {message}")]
    Internal {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// A validation error naming the offending field.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation {
            field: Some(field.into()),
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::NotFound(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict {
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// An internal error with only a message (no underlying error).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal {
            message: cause.to_string(),
            source: None,
        }
    }

    /// An internal error caused by `source`: the message is the source's
    /// text and the source stays reachable through
    /// [`std::error::Error::source`].
    pub fn internal_from(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Internal {
            message: source.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// An internal error with its own message, caused by `source`.
    pub fn internal_with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Internal {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// Adds `details` to a validation error (other variants are unchanged).
    pub fn with_details(mut self, text: impl Into<String>) -> Self {
        if let Error::Validation { details, .. } = &mut self {
            *details = Some(text.into());
        }
        self
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Validation { .. } => ErrorCode::ValidationError,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Conflict { .. } => ErrorCode::Conflict,
            Error::Unavailable(_) => ErrorCode::ServiceUnavailable,
            Error::Internal { .. } => ErrorCode::InternalError,
        }
    }
}

impl From<sqlx::Error> for Error {
    /// Connection-level failures mean the store is unavailable (503 with
    /// `Retry-After`); everything else is internal. Constraint violations
    /// with known names are mapped by the store before reaching here.
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Error::Unavailable("the metadata store is unavailable".into()),
            sqlx::Error::Database(db) if is_transient_database_error(db.code().as_deref()) => {
                Error::Unavailable("the metadata store is unavailable".into())
            }
            _ => Error::internal_from(error),
        }
    }
}

/// PostgreSQL shutdown/connection classes (57P0x, 08xxx) and SQLite's busy
/// and locked codes (5, 6) are transient.
fn is_transient_database_error(code: Option<&str>) -> bool {
    match code {
        Some(code) => code.starts_with("57P") || code.starts_with("08") || code == "5" || code == "6",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_internal_error_built_from_an_io_error_exposes_it_as_its_source() {
        let error = Error::internal_from(std::io::Error::new(std::io::ErrorKind::NotFound, "no manifest"));
        assert_eq!(error.code(), ErrorCode::InternalError);
        assert_eq!(error.to_string(), "internal error: no manifest");
        let source = error.source().expect("the io::Error is kept as the source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the source is the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn an_internal_error_with_its_own_message_keeps_the_message_and_the_source() {
        let error = Error::internal_with_source(
            "reading the manifest failed",
            std::io::Error::other("disk unplugged"),
        );
        assert_eq!(error.to_string(), "internal error: reading the manifest failed");
        let source = error.source().expect("the io::Error is kept as the source");
        assert_eq!(source.to_string(), "disk unplugged");
    }

    #[test]
    fn an_internal_error_from_a_message_has_no_source() {
        let error = Error::internal("no master key is configured");
        assert_eq!(error.to_string(), "internal error: no master key is configured");
        assert!(error.source().is_none());
    }

    #[test]
    fn the_error_type_stays_send_sync_and_debug() {
        fn assert_traits<T: Send + Sync + std::fmt::Debug + 'static>() {}
        assert_traits::<Error>();
    }
}
