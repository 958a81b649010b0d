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
    #[error("internal error: {0}")]
    Internal(String),
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

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
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
            Error::Internal(_) => ErrorCode::InternalError,
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
            _ => Error::Internal(error.to_string()),
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
