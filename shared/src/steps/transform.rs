//! `transform`: SQL over the results of earlier steps of the execution.
//!
//! Each earlier step's result is a table named `step_<order>` and also by
//! its name's slug ([`slug`]: `Extract sales` → `extract_sales`). How a
//! name that several steps share is resolved is the worker's
//! (`worker/src/transform/design.md`); this module holds the config and the
//! naming rule, which the API and the worker share.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::step::{ParamSpec, placeholders};
use crate::error::{Error, Result};

/// A `transform` step's config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// One SQL query (DataFusion's dialect) over the earlier steps' tables;
    /// `{{name}}` placeholders are bound as typed values, never spliced.
    #[serde(default)]
    pub query: String,
    /// Declared parameters: name to `{type, default?}` (see
    /// [`ParamSpec`]); placeholders not declared here are bound as text.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

impl TransformConfig {
    /// Parses and checks `config`; errors name `config.<field>`.
    pub fn parse(config: &Map<String, Value>) -> Result<TransformConfig> {
        let parsed: TransformConfig = super::parse(config)?;
        if parsed.query.trim().is_empty() {
            return Err(Error::validation("config.query", "query is required"));
        }
        for (name, spec) in parsed.declared() {
            ParamSpec::parse(name, spec)?;
        }
        for name in placeholders(&parsed.query) {
            if !is_identifier(name) {
                return Err(Error::validation(
                    "config.query",
                    format!("invalid parameter placeholder {{{{{name}}}}}"),
                ));
            }
        }
        Ok(parsed)
    }

    /// The declared parameters (empty when none are).
    pub fn declared(&self) -> &Map<String, Value> {
        static NONE: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        self.parameters
            .as_ref()
            .unwrap_or_else(|| NONE.get_or_init(Map::new))
    }
}

/// Checks a `transform` step's config.
pub fn validate(config: &Map<String, Value>) -> Result<()> {
    TransformConfig::parse(config).map(|_| ())
}

/// The table name of a step's result by its position: `step_<order>`.
pub fn table_name(order: i32) -> String {
    format!("step_{order}")
}

/// The table name of a step's result by its name: ASCII letters
/// lowercased, every run of other characters (spaces, punctuation,
/// non-ASCII letters) one `_`, none at either end. `Extract sales` →
/// `extract_sales`, `  Q3 / EU-sales (v2) ` → `q3_eu_sales_v2`. A name
/// without ASCII letters or digits has no slug (`""`): its step is only
/// `step_<order>`. A slug that starts with a digit (`2024 sales` →
/// `2024_sales`) must be quoted in SQL (`"2024_sales"`).
pub fn slug(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !slug.is_empty() {
                slug.push('_');
            }
            gap = false;
            slug.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    slug
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(config: Value) -> Option<String> {
        match validate(config.as_object().expect("an object")) {
            Err(Error::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn slugs_lowercase_and_collapse_everything_else_into_single_underscores() {
        assert_eq!(slug("Extract sales"), "extract_sales");
        assert_eq!(slug("  Q3 / EU-sales (v2) "), "q3_eu_sales_v2");
        assert_eq!(slug("orders__2024"), "orders_2024");
        assert_eq!(slug("Größe Kunden"), "gr_e_kunden");
        assert_eq!(slug("step 2"), "step_2");
        assert_eq!(slug("!!!"), "");
        assert_eq!(slug(""), "");
        assert_eq!(table_name(3), "step_3");
    }

    #[test]
    fn a_config_is_a_query_and_optional_parameters() {
        let config = json!({
            "query": "SELECT * FROM step_1 WHERE region = {{region}} AND n > {{ n }}",
            "parameters": {"n": {"type": "integer", "default": 3}}
        });
        let parsed = TransformConfig::parse(config.as_object().expect("an object")).expect("valid");
        assert!(parsed.query.starts_with("SELECT"));
        assert_eq!(parsed.declared().len(), 1);
        let bare = json!({"query": "SELECT 1", "parameters": null});
        let parsed = TransformConfig::parse(bare.as_object().expect("an object")).expect("valid");
        assert!(parsed.declared().is_empty());
    }

    #[test]
    fn refusals_name_the_config_field() {
        assert_eq!(field_of(json!({})).as_deref(), Some("config.query"));
        assert_eq!(field_of(json!({"query": "  "})).as_deref(), Some("config.query"));
        assert_eq!(field_of(json!({"query": 7})).as_deref(), Some("config.query"));
        assert_eq!(
            field_of(json!({"query": "SELECT 1", "connector_uuid": "conn_1"})).as_deref(),
            Some("config.connector_uuid")
        );
        assert_eq!(
            field_of(json!({"query": "SELECT 1", "parameters": []})).as_deref(),
            Some("config.parameters")
        );
        assert_eq!(
            field_of(json!({"query": "SELECT 1", "parameters": {"n": {"type": "integral"}}})).as_deref(),
            Some("config.parameters.n.type")
        );
        assert_eq!(
            field_of(json!({"query": "SELECT {{a-b}}"})).as_deref(),
            Some("config.query")
        );
    }
}
