//! Runtime parameters: resolving `{{name}}` placeholders of a step's query
//! into typed values and rewriting the query with the driver's positional
//! placeholders. Values are always bound, never spliced into SQL text.

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::{Map, Value};

use super::step::{ParamSpec, ParamType};
use crate::error::{Error, Result};

/// A typed parameter value, ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Text(String),
    Integer(i64),
    Number(f64),
    Boolean(bool),
    Date(NaiveDate),
    Timestamp(DateTime<FixedOffset>),
}

/// How a driver spells placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `$1`, `$2`, … (PostgreSQL, Redshift).
    Dollar,
    /// `?` (MySQL, SQLite).
    Question,
    /// `:name`, the parameter's own name (Databricks named parameter
    /// markers); each value is still bound once per occurrence.
    Named,
}

/// A query with its placeholders rewritten and the values to bind, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundQuery {
    pub sql: String,
    pub params: Vec<ParamValue>,
}

impl BoundQuery {
    pub fn is_parameterised(&self) -> bool {
        !self.params.is_empty()
    }
}

/// Resolves the `{{name}}` placeholders of `query` from `supplied` values
/// (execution parameters) and the step's `declared` parameters (type and
/// default). A placeholder with neither a value nor a default, or a value of
/// the wrong type, is a validation error on `parameters.<name>`. Undeclared
/// placeholders are bound as text.
pub fn bind(
    query: &str,
    declared: &Map<String, Value>,
    supplied: &Map<String, Value>,
    style: Placeholder,
) -> Result<BoundQuery> {
    let mut sql = String::with_capacity(query.len());
    let mut params = Vec::new();
    let rest = each_placeholder(query, |before, name| {
        sql.push_str(before);
        params.push(resolve(name, declared, supplied)?);
        match style {
            Placeholder::Dollar => sql.push_str(&format!("${}", params.len())),
            Placeholder::Question => sql.push('?'),
            Placeholder::Named => {
                sql.push(':');
                sql.push_str(name);
            }
        }
        Ok(())
    })?;
    sql.push_str(rest);
    Ok(BoundQuery { sql, params })
}

/// Checks that every placeholder of `query` can be resolved, without
/// building the query (used by the API before anything is queued).
pub fn check(query: &str, declared: &Map<String, Value>, supplied: &Map<String, Value>) -> Result<()> {
    bind(query, declared, supplied, Placeholder::Dollar).map(|_| ())
}

/// Checks that every `{{name}}` in any string of a step's `config` (its
/// query, filter, path, headers…; `parameters` aside) resolves from
/// `supplied` or the declared defaults, before anything is queued.
pub fn check_config(config: &Value, supplied: &Map<String, Value>) -> Result<()> {
    let empty = Map::new();
    let declared = config
        .get("parameters")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    fn walk(value: &Value, each: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        match value {
            Value::String(text) => each(text),
            Value::Array(items) => items.iter().try_for_each(|item| walk(item, each)),
            Value::Object(map) => map.values().try_for_each(|item| walk(item, each)),
            _ => Ok(()),
        }
    }
    let Some(fields) = config.as_object() else {
        return Ok(());
    };
    fields
        .iter()
        .filter(|(key, _)| key.as_str() != "parameters")
        .try_for_each(|(_, value)| walk(value, &mut |text| check(text, declared, supplied)))
}

/// `text` with each `{{name}}` replaced by its value as text (dates as
/// `YYYY-MM-DD`, timestamps in RFC 3339), for step fields that are text by
/// nature (URL paths, header values, key patterns). Resolution and errors
/// are those of [`bind`].
pub fn substitute(
    text: &str,
    declared: &Map<String, Value>,
    supplied: &Map<String, Value>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let rest = each_placeholder(text, |before, name| {
        out.push_str(before);
        out.push_str(&resolve(name, declared, supplied)?.to_text());
        Ok(())
    })?;
    out.push_str(rest);
    Ok(out)
}

/// Calls `each(text before, name)` for every `{{name}}` of `text` in order
/// and returns the text after the last one.
fn each_placeholder<'t>(
    text: &'t str,
    mut each: impl FnMut(&'t str, &'t str) -> Result<()>,
) -> Result<&'t str> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        each(&rest[..start], rest[start + 2..start + 2 + len].trim())?;
        rest = &rest[start + 2 + len + 2..];
    }
    Ok(rest)
}

impl ParamValue {
    /// The value as text, as [`substitute`] writes it.
    pub fn to_text(&self) -> String {
        match self {
            ParamValue::Text(text) => text.clone(),
            ParamValue::Integer(n) => n.to_string(),
            ParamValue::Number(n) => n.to_string(),
            ParamValue::Boolean(b) => b.to_string(),
            ParamValue::Date(d) => d.format("%Y-%m-%d").to_string(),
            ParamValue::Timestamp(t) => t.to_rfc3339(),
        }
    }
}

/// The typed value of parameter `name`: `supplied` at execution, else the
/// `declared` default; undeclared ones are text. A missing value or one of
/// the wrong type is a validation error on `parameters.<name>`.
pub fn resolve(
    name: &str,
    declared: &Map<String, Value>,
    supplied: &Map<String, Value>,
) -> Result<ParamValue> {
    let field = format!("parameters.{name}");
    let spec = match declared.get(name) {
        Some(spec) => Some(ParamSpec::parse(name, spec)?),
        None => None,
    };
    let value = supplied
        .get(name)
        .filter(|v| !v.is_null())
        .or_else(|| spec.as_ref().and_then(|s| s.default.as_ref()));
    let Some(value) = value else {
        return Err(Error::validation(
            field,
            format!("Missing required parameter: {name}"),
        ));
    };
    match spec.as_ref().map(|s| s.param_type) {
        None => Ok(ParamValue::Text(match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })),
        Some(param_type) => typed(param_type, value).ok_or_else(|| {
            Error::validation(
                field,
                format!("parameter {name} must be a {}", type_name(param_type)),
            )
        }),
    }
}

fn typed(param_type: ParamType, value: &Value) -> Option<ParamValue> {
    match param_type {
        ParamType::String => value.as_str().map(|s| ParamValue::Text(s.to_owned())),
        ParamType::Integer => value.as_i64().map(ParamValue::Integer),
        ParamType::Number => value.as_f64().map(ParamValue::Number),
        ParamType::Boolean => value.as_bool().map(ParamValue::Boolean),
        ParamType::Date => value
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .map(ParamValue::Date),
        ParamType::Timestamp => value
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(ParamValue::Timestamp),
    }
}

fn type_name(param_type: ParamType) -> &'static str {
    match param_type {
        ParamType::String => "string",
        ParamType::Integer => "integer",
        ParamType::Number => "number",
        ParamType::Boolean => "boolean",
        ParamType::Date => "date (YYYY-MM-DD)",
        ParamType::Timestamp => "timestamp (RFC 3339)",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_config_finds_placeholders_in_nested_fields() {
        let config = serde_json::json!({
            "collection": "orders",
            "filter": {"status": "{{status}}", "$or": [{"n": "{{n}}"}]},
            "parameters": {"n": {"type": "integer", "default": 1}}
        });
        let supplied = serde_json::json!({"status": "open"});
        assert!(super::check_config(&config, supplied.as_object().expect("an object")).is_ok());
        let error = super::check_config(&config, &serde_json::Map::new()).expect_err("status missing");
        assert!(error.to_string().contains("status"), "{error}");
    }

    #[test]
    fn substitute_writes_values_as_text_and_keeps_other_text() {
        let declared = serde_json::json!({"day": {"type": "date"}, "n": {"type": "integer", "default": 7}});
        let supplied = serde_json::json!({"day": "2026-03-29", "who": "a b"});
        let text = super::substitute(
            "/v1/{{who}}/sales?day={{ day }}&n={{n}}",
            declared.as_object().expect("an object"),
            supplied.as_object().expect("an object"),
        )
        .expect("substituted");
        assert_eq!(text, "/v1/a b/sales?day=2026-03-29&n=7");
        let missing = super::substitute(
            "{{nope}}",
            declared.as_object().expect("an object"),
            supplied.as_object().expect("an object"),
        );
        assert!(missing.is_err());
    }

    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn placeholders_become_positional_and_values_typed() {
        let declared = map(json!({"start": {"type": "date"}, "n": {"type": "integer", "default": 10}}));
        let supplied = map(json!({"start": "2024-10-01", "region": "emea"}));
        let bound = bind(
            "select * from t where day >= {{start}} and region = {{ region }} limit {{n}}",
            &declared,
            &supplied,
            Placeholder::Dollar,
        )
        .expect("bind");
        assert_eq!(
            bound.sql,
            "select * from t where day >= $1 and region = $2 limit $3"
        );
        assert_eq!(
            bound.params,
            vec![
                ParamValue::Date(NaiveDate::from_ymd_opt(2024, 10, 1).expect("date")),
                ParamValue::Text("emea".into()),
                ParamValue::Integer(10),
            ]
        );
        let mysql = bind("select {{n}}, {{n}}", &declared, &supplied, Placeholder::Question).expect("bind");
        assert_eq!(mysql.sql, "select ?, ?");
        assert_eq!(mysql.params.len(), 2);
    }

    #[test]
    fn missing_and_mistyped_parameters_name_the_field() {
        let declared = map(json!({"n": {"type": "integer"}}));
        let field = |r: Result<BoundQuery>| match r {
            Err(Error::Validation { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let missing = bind("select {{n}}", &declared, &Map::new(), Placeholder::Dollar);
        assert_eq!(field(missing).as_deref(), Some("parameters.n"));
        let wrong = bind(
            "select {{n}}",
            &declared,
            &map(json!({"n": "seven"})),
            Placeholder::Dollar,
        );
        assert_eq!(field(wrong).as_deref(), Some("parameters.n"));
        let undeclared = bind("select {{x}}", &declared, &Map::new(), Placeholder::Dollar);
        assert_eq!(field(undeclared).as_deref(), Some("parameters.x"));
    }

    #[test]
    fn an_injection_attempt_stays_a_value() {
        let supplied = map(json!({"name": "x'; drop table users; --"}));
        let bound = bind(
            "select * from t where name = {{name}}",
            &Map::new(),
            &supplied,
            Placeholder::Dollar,
        )
        .expect("bind");
        assert_eq!(bound.sql, "select * from t where name = $1");
        assert_eq!(
            bound.params,
            vec![ParamValue::Text("x'; drop table users; --".into())]
        );
    }
}
