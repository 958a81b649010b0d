//! `mongo_query`: a `find` or an aggregation pipeline on one collection.

use serde_json::{Map, Value};

use crate::error::Result;

/// Checks a `mongo_query` step's config.
pub fn validate(config: &Map<String, Value>) -> Result<()> {
    crate::domain::step::connector_field(config)?;
    crate::domain::step::non_empty_string(config, "collection").map(|_| ())
}
