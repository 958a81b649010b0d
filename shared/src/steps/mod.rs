//! Typed step configurations, one module per step type: what the API
//! validates when a step is saved and what the worker's runner reads. Each
//! config refuses fields it does not declare; errors name the field as
//! `config.<path>`.

pub mod http_request;
pub mod mongo_query;
pub mod redis_read;
pub mod saas_extract;
pub mod transform;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Deserialises a step's `config` object into `T`; a refusal names the
/// offending field (`config.pagination.limit`) and says what was expected.
pub fn parse<T: DeserializeOwned>(config: &Map<String, Value>) -> Result<T> {
    let value = Value::Object(config.clone());
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." || path.is_empty() {
            "config".to_owned()
        } else {
            format!("config.{path}")
        };
        Error::validation(field, error.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Probe {
        inner: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        limit: u32,
    }

    #[test]
    fn a_refusal_names_the_nested_field() {
        let config = serde_json::json!({"inner": {"limit": "ten"}});
        let error = parse::<Probe>(config.as_object().expect("an object")).expect_err("refused");
        let crate::Error::Validation { field, .. } = error else {
            panic!("a validation error")
        };
        assert_eq!(field.as_deref(), Some("config.inner.limit"));
        let config = serde_json::json!({"inner": {"limit": 1}, "other": 1});
        let error = parse::<Probe>(config.as_object().expect("an object")).expect_err("refused");
        let crate::Error::Validation { field, message, .. } = error else {
            panic!("a validation error")
        };
        assert_eq!(field.as_deref(), Some("config.other"));
        assert!(message.contains("other"), "{message}");
    }
}
