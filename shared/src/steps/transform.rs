//! `transform`: SQL over the results of earlier steps of the execution.

use serde_json::{Map, Value};

use crate::error::Result;

/// Checks a `transform` step's config.
pub fn validate(config: &Map<String, Value>) -> Result<()> {
    crate::domain::step::non_empty_string(config, "query").map(|_| ())
}
