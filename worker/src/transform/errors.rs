//! The engine's errors in the step error vocabulary.

use datafusion::error::DataFusionError;
use ferry_shared::domain::ErrorKind;

use super::engine::{MEMORY_ENV, SPILL_LIMIT_ENV, human};
use crate::extract::ExtractError;

/// Why a query did not run.
pub(crate) enum Failure {
    /// The operators needed more memory than the pool gives (or more spill
    /// space than allowed): a plan with hash joins may run again with
    /// sort-merge joins, which spill.
    Memory(DataFusionError),
    Other(ExtractError),
}

impl From<ExtractError> for Failure {
    fn from(error: ExtractError) -> Self {
        Failure::Other(error)
    }
}

impl From<DataFusionError> for Failure {
    fn from(error: DataFusionError) -> Self {
        if matches!(error.find_root(), DataFusionError::ResourcesExhausted(_)) {
            Failure::Memory(error)
        } else {
            Failure::Other(step_error(error))
        }
    }
}

/// `error` as the step's error once memory ran out for good.
pub(crate) fn exhausted(error: &DataFusionError, memory_limit: usize) -> ExtractError {
    ExtractError::new(
        ErrorKind::InvalidQuery,
        format!(
            "the transform needs more memory than the worker allows ({} for all transforms, \
             {MEMORY_ENV}) even when spilling to disk, or more spill space than {SPILL_LIMIT_ENV} \
             allows: {}",
            human(memory_limit as u64),
            message(error)
        ),
    )
}

/// Query errors (syntax, unknown tables or columns, types, casts,
/// division by zero) are `invalid_query`; a result object that is gone is
/// `not_found`; a store that could not be read is `connection_failed`
/// (retried); anything else is `internal`.
pub(crate) fn step_error(error: DataFusionError) -> ExtractError {
    if let Some(storage) = object_store_error(&error) {
        return match storage {
            object_store::Error::NotFound { path, .. } => ExtractError::new(
                ErrorKind::NotFound,
                format!("an earlier step's result object is missing from object storage: {path}"),
            ),
            other => ExtractError::new(
                ErrorKind::ConnectionFailed,
                format!("reading an earlier step's result from object storage failed: {other}"),
            ),
        };
    }
    let text = message(&error);
    match error.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..)
        | DataFusionError::Collection(_) => ExtractError::new(ErrorKind::InvalidQuery, text),
        DataFusionError::ResourcesExhausted(_) => ExtractError::new(ErrorKind::InvalidQuery, text),
        _ => ExtractError::internal_from(format!("the transform engine failed: {text}"), error),
    }
}

/// The error's text without DataFusion's backtrace.
fn message(error: &DataFusionError) -> String {
    error.strip_backtrace()
}

/// The object store error somewhere in `error`'s chain.
fn object_store_error(error: &DataFusionError) -> Option<&object_store::Error> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(DataFusionError::ObjectStore(inner)) = current.downcast_ref::<DataFusionError>() {
            return Some(inner);
        }
        if let Some(inner) = current.downcast_ref::<object_store::Error>() {
            return Some(inner);
        }
        cause = current.source();
    }
    None
}
