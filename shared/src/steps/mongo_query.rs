//! `mongo_query`: a `find` (with `filter`, `projection`, `limit`) or an
//! aggregation `pipeline` on one collection of the connector's database.
//!
//! Exactly one of `filter` and `pipeline` may be given; with neither, every
//! document of the collection is read. `projection` belongs to `find` (a
//! pipeline shapes its documents with `$project`); `limit` applies to both
//! (a pipeline gets a final `$limit` stage). Documents are MongoDB Extended
//! JSON (`{"$date": ...}`, `{"$oid": ...}` are honoured by the worker).
//!
//! `{{name}}` parameters may appear in any string value. A string that is
//! exactly one placeholder becomes the parameter's typed value; a
//! placeholder inside a longer string is replaced by the value's text. They
//! are never allowed inside JavaScript (`$where`, `$function`,
//! `$accumulator`, `$code`), where text would become code. Pipelines only
//! read: `$out` and `$merge` stages are refused.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::domain::step::{ParamSpec, connector_field, non_empty_string, placeholders};
use crate::error::{Error, Result};

/// Operators whose string values are JavaScript: no parameter may appear
/// under them.
pub const JAVASCRIPT_KEYS: [&str; 4] = ["$where", "$function", "$accumulator", "$code"];

/// Stages that write: a `mongo_query` step only reads.
const WRITING_STAGES: [&str; 2] = ["$out", "$merge"];

/// A `mongo_query` step's config, as the API validates it and the worker
/// runs it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MongoQuery {
    pub connector_uuid: String,
    /// The collection in the connector's database.
    pub collection: String,
    /// The `find` filter (a query document); absent: every document.
    #[serde(default, deserialize_with = "document")]
    pub filter: Option<Map<String, Value>>,
    /// An aggregation pipeline instead of a `find`.
    #[serde(default, deserialize_with = "stages")]
    pub pipeline: Option<Vec<Map<String, Value>>>,
    /// The `find` projection.
    #[serde(default, deserialize_with = "document")]
    pub projection: Option<Map<String, Value>>,
    /// At most this many documents (a positive integer).
    #[serde(default, deserialize_with = "positive")]
    pub limit: Option<u64>,
    /// Declared parameters: name to `{type, default?}`.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

impl MongoQuery {
    /// Parses and checks a step's config; errors name the field
    /// (`config.pipeline.2`, `config.limit`).
    pub fn parse(config: &Map<String, Value>) -> Result<MongoQuery> {
        connector_field(config)?;
        let collection = non_empty_string(config, "collection")?;
        if collection.contains('\0') || collection.starts_with('$') || collection.len() > 255 {
            return Err(Error::validation(
                "config.collection",
                "collection must be a collection name (no NUL, not starting with $, at most 255 bytes)",
            ));
        }
        let query: MongoQuery = super::parse(config)?;
        if query.filter.is_some() && query.pipeline.is_some() {
            return Err(Error::validation(
                "config.pipeline",
                "give either filter (a find) or pipeline (an aggregation), not both",
            ));
        }
        if query.pipeline.is_some() && query.projection.is_some() {
            return Err(Error::validation(
                "config.projection",
                "projection applies to a find; with a pipeline, use a $project stage",
            ));
        }
        for (index, stage) in query.pipeline.iter().flatten().enumerate() {
            let field = format!("config.pipeline.{index}");
            let mut keys = stage.keys();
            let name = match (keys.next(), keys.next()) {
                (Some(name), None) if name.starts_with('$') => name,
                _ => {
                    return Err(Error::validation(
                        field,
                        "a pipeline stage is an object with exactly one field naming the stage, e.g. {\"$match\": {...}}",
                    ));
                }
            };
            if WRITING_STAGES.contains(&name.as_str()) {
                return Err(Error::validation(
                    field,
                    format!("{name} writes to the database; mongo_query steps only read"),
                ));
            }
        }
        for (name, spec) in query.parameters.iter().flatten() {
            ParamSpec::parse(name, spec)?;
        }
        for (key, value) in [
            ("filter", query.filter.as_ref()),
            ("projection", query.projection.as_ref()),
        ] {
            if let Some(document) = value {
                check_strings(&format!("config.{key}"), document, false)?;
            }
        }
        for (index, stage) in query.pipeline.iter().flatten().enumerate() {
            check_strings(&format!("config.pipeline.{index}"), stage, false)?;
        }
        Ok(query)
    }
}

/// Checks a `mongo_query` step's config (see [`MongoQuery::parse`]).
pub fn validate(config: &Map<String, Value>) -> Result<()> {
    MongoQuery::parse(config).map(drop)
}

/// Checks every string under `document`: placeholders are identifiers, and
/// none is inside JavaScript (`in_script`).
fn check_strings(path: &str, document: &Map<String, Value>, in_script: bool) -> Result<()> {
    for (key, value) in document {
        let script = in_script || JAVASCRIPT_KEYS.contains(&key.as_str());
        check_value(&format!("{path}.{key}"), value, script)?;
    }
    Ok(())
}

fn check_value(path: &str, value: &Value, in_script: bool) -> Result<()> {
    match value {
        Value::String(text) => {
            for name in placeholders(text) {
                if in_script {
                    return Err(Error::validation(
                        path,
                        "parameters cannot be used inside JavaScript ($where, $function, $accumulator, $code)",
                    ));
                }
                let mut chars = name.chars();
                let identifier = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !identifier {
                    return Err(Error::validation(
                        path,
                        format!("invalid parameter placeholder {{{{{name}}}}}"),
                    ));
                }
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_value(&format!("{path}.{index}"), item, in_script)),
        Value::Object(map) => check_strings(path, map, in_script),
        _ => Ok(()),
    }
}

fn document<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Map<String, Value>>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(serde::de::Error::custom(
            "must be a JSON object (a MongoDB document)",
        )),
    }
}

fn stages<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Vec<Map<String, Value>>>, D::Error> {
    let refused = || serde::de::Error::custom("pipeline must be an array of stage objects");
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(stage) => Ok(stage),
                _ => Err(refused()),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(refused()),
    }
}

fn positive<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1 && i64::try_from(n).is_ok()) => {
            Ok(n.as_u64())
        }
        Some(_) => Err(serde::de::Error::custom("limit must be a positive integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONN: &str = "conn_01J9ZQ4X3M6R8T2V5W7Y9A1B3C";

    fn parse(config: Value) -> Result<MongoQuery> {
        MongoQuery::parse(config.as_object().expect("an object"))
    }

    fn refusal(config: Value) -> (String, String) {
        match parse(config) {
            Err(Error::Validation { field, message, .. }) => (field.unwrap_or_default(), message),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_find_with_filter_projection_and_limit_parses() {
        let query = parse(json!({
            "connector_uuid": CONN, "collection": "orders",
            "filter": {"status": "{{status}}", "total": {"$gt": 10}},
            "projection": {"_id": 0, "total": 1}, "limit": 5,
            "parameters": {"status": {"type": "string", "default": "open"}}
        }))
        .expect("valid");
        assert_eq!(query.collection, "orders");
        assert_eq!(query.limit, Some(5));
        assert_eq!(
            query.filter,
            json!({"status": "{{status}}", "total": {"$gt": 10}})
                .as_object()
                .cloned()
        );
        assert!(query.pipeline.is_none());
        let bare =
            parse(json!({"connector_uuid": CONN, "collection": "orders", "filter": null})).expect("valid");
        assert_eq!((bare.filter, bare.pipeline, bare.limit), (None, None, None));
    }

    #[test]
    fn a_pipeline_parses_with_a_limit() {
        let query = parse(json!({
            "connector_uuid": CONN, "collection": "orders", "limit": 3,
            "pipeline": [{"$match": {"a": 1}}, {"$group": {"_id": "$g", "n": {"$sum": 1}}}]
        }))
        .expect("valid");
        assert_eq!(query.pipeline.map(|p| p.len()), Some(2));
    }

    #[test]
    fn filter_and_pipeline_together_are_refused_on_the_pipeline() {
        let (field, message) = refusal(json!({
            "connector_uuid": CONN, "collection": "c", "filter": {}, "pipeline": []
        }));
        assert_eq!(field, "config.pipeline");
        assert!(message.contains("not both"), "{message}");
        let (field, _) = refusal(json!({
            "connector_uuid": CONN, "collection": "c", "pipeline": [], "projection": {"a": 1}
        }));
        assert_eq!(field, "config.projection");
    }

    #[test]
    fn limit_must_be_a_positive_integer() {
        for bad in [json!(0), json!(-1), json!(2.5), json!("10"), json!(u64::MAX)] {
            let (field, message) = refusal(json!({"connector_uuid": CONN, "collection": "c", "limit": bad}));
            assert_eq!(field, "config.limit", "{bad}");
            assert!(message.contains("positive integer"), "{message}");
        }
    }

    #[test]
    fn pipeline_must_be_an_array_of_single_stage_objects_that_only_read() {
        let (field, message) =
            refusal(json!({"connector_uuid": CONN, "collection": "c", "pipeline": {"$match": {}}}));
        assert_eq!(field, "config.pipeline");
        assert!(message.contains("array of stage objects"), "{message}");
        let (field, _) =
            refusal(json!({"connector_uuid": CONN, "collection": "c", "pipeline": [{"$match": {}}, 3]}));
        assert_eq!(field, "config.pipeline");
        let (field, _) = refusal(json!({"connector_uuid": CONN, "collection": "c",
            "pipeline": [{"$match": {}}, {"$match": {}, "$limit": 1}]}));
        assert_eq!(field, "config.pipeline.1");
        let (field, _) =
            refusal(json!({"connector_uuid": CONN, "collection": "c", "pipeline": [{"match": {}}]}));
        assert_eq!(field, "config.pipeline.0");
        for writer in ["$out", "$merge"] {
            let (field, message) = refusal(json!({"connector_uuid": CONN, "collection": "c",
                "pipeline": [{"$match": {}}, {writer: "copy"}]}));
            assert_eq!(field, "config.pipeline.1");
            assert!(message.contains("only read"), "{message}");
        }
    }

    #[test]
    fn filter_and_projection_must_be_objects() {
        for key in ["filter", "projection"] {
            let (field, message) =
                refusal(json!({"connector_uuid": CONN, "collection": "c", key: "{\"a\": 1}"}));
            assert_eq!(field, format!("config.{key}"));
            assert!(message.contains("JSON object"), "{message}");
        }
    }

    #[test]
    fn unknown_fields_missing_collection_and_bad_connector_name_the_field() {
        assert_eq!(
            refusal(json!({"connector_uuid": CONN, "collection": "c", "sort": {"a": 1}})).0,
            "config.sort"
        );
        assert_eq!(refusal(json!({"connector_uuid": CONN})).0, "config.collection");
        assert_eq!(
            refusal(json!({"connector_uuid": CONN, "collection": "$cmd"})).0,
            "config.collection"
        );
        assert_eq!(refusal(json!({"collection": "c"})).0, "config.connector_uuid");
        assert_eq!(
            refusal(
                json!({"connector_uuid": CONN, "collection": "c", "parameters": {"n": {"type": "weird"}}})
            )
            .0,
            "config.parameters.n.type"
        );
    }

    #[test]
    fn parameters_inside_javascript_are_refused() {
        let (field, message) = refusal(json!({"connector_uuid": CONN, "collection": "c",
            "filter": {"$where": "this.name == '{{name}}'"}}));
        assert_eq!(field, "config.filter.$where");
        assert!(message.contains("JavaScript"), "{message}");
        let (field, _) = refusal(json!({"connector_uuid": CONN, "collection": "c",
            "pipeline": [{"$group": {"_id": null, "x": {"$accumulator": {"init": "{{f}}"}}}}]}));
        assert_eq!(field, "config.pipeline.0.$group.x.$accumulator.init");
        let (field, _) = refusal(json!({"connector_uuid": CONN, "collection": "c",
            "filter": {"a": {"$in": ["{{bad name}}"]}}}));
        assert_eq!(field, "config.filter.a.$in.0");
        assert!(
            parse(json!({"connector_uuid": CONN, "collection": "c", "filter": {"$where": "this.a > 1"}}))
                .is_ok()
        );
    }

    #[test]
    fn step_type_validation_goes_through_the_typed_config() {
        let bad = json!({"connector_uuid": CONN, "collection": "c", "limit": 0});
        assert!(crate::domain::StepType::MongoQuery.validate_config(&bad).is_err());
        let good = json!({"connector_uuid": CONN, "collection": "c", "limit": 1});
        assert!(crate::domain::StepType::MongoQuery.validate_config(&good).is_ok());
    }
}
