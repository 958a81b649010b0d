//! `redis_read`: the keys matching a pattern, read by `SCAN`.

use serde_json::{Map, Value};

use crate::error::Result;

/// Checks a `redis_read` step's config.
pub fn validate(config: &Map<String, Value>) -> Result<()> {
    crate::domain::step::connector_field(config)?;
    crate::domain::step::non_empty_string(config, "pattern").map(|_| ())
}
