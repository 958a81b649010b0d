//! `http_request`: records read from a REST API, page by page.

use serde_json::{Map, Value};

use crate::error::Result;

/// Checks an `http_request` step's config.
pub fn validate(config: &Map<String, Value>) -> Result<()> {
    crate::domain::step::connector_field(config)?;
    crate::domain::step::non_empty_string(config, "path").map(|_| ())
}
