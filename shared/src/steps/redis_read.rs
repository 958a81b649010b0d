//! `redis_read`: the keys matching a pattern, read by `SCAN`, one row per
//! key.
//!
//! ```json
//! {"connector_uuid": "conn_…", "pattern": "user:{{region}}:*", "value_type": "hash"}
//! ```
//!
//! `pattern` is a Redis glob (`*`, `?`, `[…]`, `\` escapes). A `{{name}}`
//! placeholder in it is replaced by the parameter's value as text with the
//! glob characters `* ? [ ] \` escaped, so a value always matches itself
//! literally and can never widen the pattern. `value_type` (default
//! `string`) says how each key's value is read and which columns the rows
//! get (see [`ValueType`]). `parameters` declares the placeholders' types
//! and defaults, as for `sql_query`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::step::{ParamSpec, placeholders};
use crate::error::{Error, Result};

/// A `redis_read` step's config, as the API stores it and the worker reads
/// it. Fields it does not declare are refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisRead {
    /// The `redis` connector the keys are read from.
    pub connector_uuid: String,
    /// The `SCAN … MATCH` glob; may hold `{{name}}` placeholders.
    pub pattern: String,
    /// How values are read; absent or `null` is [`ValueType::String`].
    #[serde(default)]
    pub value_type: Option<ValueType>,
    /// Declared parameters: name to `{type, default?}`.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// How a key's value is read, and the row it becomes (the first column is
/// always `key`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// A string key (`GET`): its value in a `value` column.
    #[default]
    String,
    /// A hash (`HGETALL`): one column per field.
    Hash,
    /// A JSON object, stored as a string (`GET`) or as a RedisJSON
    /// document (`JSON.GET`): one column per top-level field.
    Json,
}

impl RedisRead {
    /// Parses and checks a `redis_read` config; errors name
    /// `config.<field>`.
    pub fn parse(config: &Map<String, Value>) -> Result<Self> {
        crate::domain::step::connector_field(config)?;
        match config.get("pattern") {
            Some(Value::String(pattern)) if !pattern.is_empty() => {}
            Some(Value::String(_) | Value::Null) | None => {
                return Err(Error::validation("config.pattern", "pattern is required"));
            }
            Some(_) => return Err(Error::validation("config.pattern", "pattern must be a string")),
        }
        let read: RedisRead = super::parse(config)?;
        for name in placeholders(&read.pattern) {
            if !is_identifier(name) {
                return Err(Error::validation(
                    "config.pattern",
                    format!("invalid parameter placeholder {{{{{name}}}}}"),
                ));
            }
        }
        for (name, spec) in read.parameters.iter().flatten() {
            ParamSpec::parse(name, spec)?;
        }
        Ok(read)
    }

    /// The value type, [`ValueType::String`] when not given.
    pub fn value_type(&self) -> ValueType {
        self.value_type.unwrap_or_default()
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a `redis_read` step's config.
pub fn validate(config: &Map<String, Value>) -> Result<()> {
    RedisRead::parse(config).map(|_| ())
}

/// `text` with the Redis glob characters `* ? [ ] \` escaped by a
/// backslash: as a `MATCH` pattern it matches exactly `text`.
pub fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    fn field_of(result: Result<RedisRead>) -> String {
        match result {
            Err(Error::Validation { field, .. }) => field.unwrap_or_default(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    const CONN: &str = "conn_01HZX0000000000000000000";

    #[test]
    fn steps_redis_read_defaults_to_string_values() {
        let read =
            RedisRead::parse(&config(json!({"connector_uuid": CONN, "pattern": "user:*"}))).expect("valid");
        assert_eq!(read.value_type(), ValueType::String);
        assert_eq!(read.pattern, "user:*");
        let null = RedisRead::parse(&config(
            json!({"connector_uuid": CONN, "pattern": "a", "value_type": null}),
        ))
        .expect("valid");
        assert_eq!(null.value_type(), ValueType::String);
        for (word, value_type) in [("hash", ValueType::Hash), ("json", ValueType::Json)] {
            let read = RedisRead::parse(&config(
                json!({"connector_uuid": CONN, "pattern": "a", "value_type": word}),
            ))
            .expect("valid");
            assert_eq!(read.value_type(), value_type);
        }
    }

    #[test]
    fn steps_redis_read_refusals_name_the_field() {
        let cases = [
            (json!({"pattern": "a"}), "config.connector_uuid"),
            (json!({"connector_uuid": CONN}), "config.pattern"),
            (json!({"connector_uuid": CONN, "pattern": ""}), "config.pattern"),
            (json!({"connector_uuid": CONN, "pattern": 5}), "config.pattern"),
            (
                json!({"connector_uuid": "proj_1", "pattern": "a"}),
                "config.connector_uuid",
            ),
            (
                json!({"connector_uuid": CONN, "pattern": "a", "value_type": "list"}),
                "config.value_type",
            ),
            (
                json!({"connector_uuid": CONN, "pattern": "a", "count": 10}),
                "config.count",
            ),
            (
                json!({"connector_uuid": CONN, "pattern": "a:{{bad name}}"}),
                "config.pattern",
            ),
            (
                json!({"connector_uuid": CONN, "pattern": "a:{{n}}", "parameters": {"n": {"type": "weird"}}}),
                "config.parameters.n.type",
            ),
        ];
        for (value, field) in cases {
            let got = field_of(RedisRead::parse(&config(value.clone())));
            assert_eq!(got, field, "{value}");
        }
    }

    #[test]
    fn steps_redis_read_escapes_every_glob_character() {
        assert_eq!(escape_glob("plain:42"), "plain:42");
        assert_eq!(escape_glob(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
        assert_eq!(escape_glob("é*"), "é\\*");
    }
}
