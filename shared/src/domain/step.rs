//! Steps: the ordered units of work in a project, and per-type validation of
//! their configuration.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use strum::VariantArray;

use super::word::word_enum;
use crate::error::{Error, Result};

word_enum! {
    /// The kinds of step Ferry knows, as the API spells them (`sql_query`,
    /// `mongo_query`, ...): the one place these words are written.
    pub enum StepType in "snake_case" {
        SqlQuery,
        MongoQuery,
        RedisRead,
        HttpRequest,
        SaasExtract,
        Transform,
    }
}

impl StepType {
    pub const ALL: &[StepType] = Self::VARIANTS;

    /// Whether steps of this type read through a connector (named by
    /// `config.connector_uuid`); `transform` steps read earlier results.
    pub fn uses_connector(self) -> bool {
        self != StepType::Transform
    }

    /// Whether steps of this type can run on a connector of type `ty`
    /// (the connector type's declaration lists its step types).
    pub fn accepts(self, ty: &crate::connectors::ConnectorType) -> bool {
        ty.accepts(self)
    }

    /// The connector types whose declarations accept this step type, in
    /// registry order (none for `transform`).
    pub fn connector_types(self) -> impl Iterator<Item = crate::connectors::TypeId> {
        crate::connectors::registry()
            .iter()
            .filter(move |t| t.accepts(self))
            .map(|t| t.type_id)
    }

    /// Checks a step configuration for this type. Errors name the field as
    /// `config.<key>`.
    pub fn validate_config(self, config: &Value) -> Result<()> {
        let Some(config) = config.as_object() else {
            return Err(Error::validation("config", "config must be a JSON object"));
        };
        match self {
            StepType::SqlQuery => {
                only_fields(config, &["connector_uuid", "query", "parameters"])?;
                connector_field(config)?;
                let query = non_empty_string(config, "query")?;
                let parameters = match config.get("parameters") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(map)) => map.clone(),
                    Some(_) => {
                        return Err(Error::validation(
                            "config.parameters",
                            "parameters must be an object mapping names to {type, default?}",
                        ));
                    }
                };
                for (name, spec) in &parameters {
                    ParamSpec::parse(name, spec)?;
                }
                for name in placeholders(query) {
                    if !is_identifier(name) {
                        return Err(Error::validation(
                            "config.query",
                            format!("invalid parameter placeholder {{{{{name}}}}}"),
                        ));
                    }
                }
                Ok(())
            }
            StepType::MongoQuery => crate::steps::mongo_query::validate(config),
            StepType::RedisRead => crate::steps::redis_read::validate(config),
            StepType::HttpRequest => crate::steps::http_request::validate(config),
            StepType::SaasExtract => crate::steps::saas_extract::validate(config),
            StepType::Transform => crate::steps::transform::validate(config),
        }
    }

    /// Checks what a step's config means on a connector of type
    /// `connector_type`, once the API knows the connector: the vendor
    /// options of `saas_extract`. Errors name the field as `config.<key>`.
    pub fn validate_on(self, config: &Value, connector_type: &str) -> Result<()> {
        match (self, config.as_object()) {
            (StepType::SaasExtract, Some(config)) => {
                crate::steps::saas_extract::validate_on(config, connector_type)
            }
            _ => Ok(()),
        }
    }
}

word_enum! {
    /// Types a runtime parameter may declare.
    pub enum ParamType in "lowercase" {
        String,
        Integer,
        Number,
        Boolean,
        Date,
        Timestamp,
    }
}

impl ParamType {
    /// Whether `value` is acceptable for this type.
    pub fn accepts(self, value: &Value) -> bool {
        match self {
            ParamType::String => value.is_string(),
            ParamType::Integer => value.is_i64(),
            ParamType::Number => value.is_number(),
            ParamType::Boolean => value.is_boolean(),
            ParamType::Date => value
                .as_str()
                .is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
            ParamType::Timestamp => value
                .as_str()
                .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok()),
        }
    }
}

/// A declared runtime parameter: `{"type": "...", "default"?: value}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub param_type: ParamType,
    pub default: Option<Value>,
}

impl ParamSpec {
    pub fn parse(name: &str, spec: &Value) -> Result<Self> {
        let field = format!("config.parameters.{name}");
        if !is_identifier(name) {
            return Err(Error::validation(
                field,
                "parameter names are letters, digits and underscores",
            ));
        }
        let Some(spec) = spec.as_object() else {
            return Err(Error::validation(
                field,
                "a parameter is an object {type, default?}",
            ));
        };
        only_fields(spec, &["type", "default"])
            .map_err(|_| Error::validation(field.clone(), "a parameter has only `type` and `default`"))?;
        let param_type = spec
            .get("type")
            .and_then(Value::as_str)
            .and_then(ParamType::parse)
            .ok_or_else(|| {
                Error::validation(
                    format!("{field}.type"),
                    "type must be one of string, integer, number, boolean, date, timestamp",
                )
            })?;
        let default = spec.get("default").filter(|v| !v.is_null()).cloned();
        if let Some(default) = &default
            && !param_type.accepts(default)
        {
            return Err(Error::validation(
                format!("{field}.default"),
                "default does not match the declared type",
            ));
        }
        Ok(ParamSpec { param_type, default })
    }
}

/// The `{{name}}` placeholders of a query, in order of appearance.
pub fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(name, _)| name.trim()))
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn only_fields(config: &Map<String, Value>, allowed: &[&str]) -> Result<()> {
    match config.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(Error::validation(
            format!("config.{key}"),
            format!("unknown field `{key}`; expected one of: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

pub(crate) fn non_empty_string<'a>(config: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    match config.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(Error::validation(
            format!("config.{key}"),
            format!("{key} is required"),
        )),
        Some(_) => Err(Error::validation(
            format!("config.{key}"),
            format!("{key} must be a string"),
        )),
    }
}

pub(crate) fn connector_field(config: &Map<String, Value>) -> Result<()> {
    let id = non_empty_string(config, "connector_uuid")?;
    if id.starts_with("conn_") && id.len() <= 64 {
        Ok(())
    } else {
        Err(Error::validation(
            "config.connector_uuid",
            "connector_uuid is not a connector id (conn_…)",
        ))
    }
}

/// The connectors a step configuration names, each with the config field
/// that names it (today only `connector_uuid`). Using a connector in a step
/// takes an editor's grant on it: the API checks each of these when a step
/// is saved and when an execution is admitted, the worker before the step
/// reads anything.
pub fn connectors_named(config: &Value) -> Vec<(&'static str, &str)> {
    ["connector_uuid"]
        .into_iter()
        .filter_map(|field| {
            config
                .get(field)
                .and_then(Value::as_str)
                .map(|uuid| (field, uuid))
        })
        .collect()
}

/// A stored step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub step_id: String,
    pub project_uuid: String,
    pub name: String,
    pub step_type: StepType,
    /// 1-based position in the project.
    pub order: i32,
    pub config: Value,
    pub dependencies: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A validated step to insert; `order: None` appends at the end.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub name: String,
    pub step_type: StepType,
    pub order: Option<i32>,
    pub config: Value,
    pub dependencies: Vec<String>,
}

/// A partial step update; `order` moves the step and shifts the others.
#[derive(Debug, Clone, Default)]
pub struct StepPatch {
    pub name: Option<String>,
    pub config: Option<Value>,
    pub order: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::IdKind;
    use serde_json::json;

    fn field_of(result: Result<()>) -> Option<String> {
        match result {
            Err(Error::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn sql_query_requires_connector_and_query() {
        let ok = json!({"connector_uuid": IdKind::Connector.generate(), "query": "select 1"});
        assert!(StepType::SqlQuery.validate_config(&ok).is_ok());
        let missing = json!({"connector_uuid": IdKind::Connector.generate()});
        assert_eq!(
            field_of(StepType::SqlQuery.validate_config(&missing)).as_deref(),
            Some("config.query")
        );
        let bad_conn = json!({"connector_uuid": "proj_01ABCDEF", "query": "select 1"});
        assert_eq!(
            field_of(StepType::SqlQuery.validate_config(&bad_conn)).as_deref(),
            Some("config.connector_uuid")
        );
    }

    #[test]
    fn sql_query_parameters_are_typed() {
        let conn = IdKind::Connector.generate();
        let good = json!({"connector_uuid": conn, "query": "select {{d}}",
            "parameters": {"d": {"type": "date", "default": "2024-10-01"}}});
        assert!(StepType::SqlQuery.validate_config(&good).is_ok());
        let bad_type = json!({"connector_uuid": conn, "query": "x", "parameters": {"d": {"type": "weird"}}});
        assert_eq!(
            field_of(StepType::SqlQuery.validate_config(&bad_type)).as_deref(),
            Some("config.parameters.d.type")
        );
        let bad_default = json!({"connector_uuid": conn, "query": "x",
            "parameters": {"n": {"type": "integer", "default": "seven"}}});
        assert_eq!(
            field_of(StepType::SqlQuery.validate_config(&bad_default)).as_deref(),
            Some("config.parameters.n.default")
        );
        let unknown = json!({"connector_uuid": conn, "query": "x", "sql": "y"});
        assert_eq!(
            field_of(StepType::SqlQuery.validate_config(&unknown)).as_deref(),
            Some("config.sql")
        );
    }

    #[test]
    fn step_types_spell_the_api_words_and_know_their_connector_types() {
        use crate::connectors::TypeId;
        for &t in StepType::ALL {
            assert_eq!(StepType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).ok(), Some(json!(t.as_str())));
        }
        assert_eq!(StepType::SaasExtract.as_str(), "saas_extract");
        assert_eq!(StepType::parse("SQL_QUERY"), None);
        let sql: Vec<TypeId> = StepType::SqlQuery.connector_types().collect();
        for id in [
            TypeId::Postgresql,
            TypeId::Redshift,
            TypeId::Mysql,
            TypeId::Sqlite,
        ] {
            assert!(sql.contains(&id), "{id}");
        }
        assert!(!sql.contains(&TypeId::Mongodb));
        assert_eq!(
            StepType::MongoQuery.connector_types().collect::<Vec<_>>(),
            [TypeId::Mongodb]
        );
        assert_eq!(StepType::Transform.connector_types().count(), 0);
        assert!(!StepType::Transform.uses_connector());
    }

    #[test]
    fn placeholders_are_found_in_order() {
        let names: Vec<_> = placeholders("select * from t where a > {{ start }} and b < {{end}}").collect();
        assert_eq!(names, ["start", "end"]);
    }
}
