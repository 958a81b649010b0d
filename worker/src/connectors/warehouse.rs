//! What the SQL warehouse families (`bigquery/`, `databricks/`,
//! `snowflake/`) share: reading a `sql_query` step's query with its
//! `{{name}}` parameters bound, the bound of a connection test, and the
//! bound of a whole step.

use std::future::Future;
use std::time::Duration;

use ferry_shared::domain::ErrorKind;
use ferry_shared::domain::params::{self, BoundQuery, Placeholder};
use serde_json::Value;

use crate::connectors::StepRequest;
use crate::extract::ExtractError;

/// The `query` of a `sql_query` step as written, and bound: its
/// `{{name}}` placeholders written in `style`, with one value per
/// occurrence. A missing or blank query is `invalid_query`, a parameter
/// that does not bind `invalid_parameters`.
pub(crate) fn bound_query<'a>(
    step: &StepRequest<'a>,
    style: Placeholder,
) -> Result<(&'a str, BoundQuery), ExtractError> {
    let query = step
        .config
        .get("query")
        .and_then(Value::as_str)
        .filter(|query| !query.trim().is_empty())
        .ok_or_else(|| ExtractError::new(ErrorKind::InvalidQuery, "config.query is required"))?;
    let bound = params::bind(query, step.declared(), step.supplied, style)
        .map_err(|e| ExtractError::new(ErrorKind::InvalidParameters, e.to_string()))?;
    Ok((query, bound))
}

/// How long a connection test may wait for its statement within the
/// test's `budget` (`connection_timeout_seconds`): half a second less, so
/// it ends before the registry's own bound and says what happened (half
/// the budget where that leaves nothing).
pub(crate) fn test_limit(budget: Duration) -> Duration {
    budget
        .checked_sub(Duration::from_millis(500))
        .filter(|limit| !limit.is_zero())
        .unwrap_or(budget / 2)
}

/// Runs a step's `read` within `limit` (`statement_timeout_seconds`) and
/// 5 s of grace for the last page; past that the step fails with
/// `timeout`, saying that `what` ("the query", "the statement") did not
/// finish.
pub(crate) async fn within_statement_timeout(
    limit: Duration,
    what: &str,
    read: impl Future<Output = Result<(), ExtractError>>,
) -> Result<(), ExtractError> {
    match tokio::time::timeout(limit + Duration::from_secs(5), read).await {
        Ok(result) => result,
        Err(_) => Err(ExtractError::new(
            ErrorKind::Timeout,
            format!(
                "{what} did not finish within {} s (statement_timeout_seconds)",
                limit.as_secs()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_ends_half_a_second_before_its_budget() {
        assert_eq!(test_limit(Duration::from_secs(10)), Duration::from_millis(9_500));
        assert_eq!(test_limit(Duration::from_millis(500)), Duration::from_millis(250));
        assert_eq!(test_limit(Duration::from_millis(200)), Duration::from_millis(100));
    }
}
