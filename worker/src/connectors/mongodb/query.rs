//! A `mongo_query` config as BSON: the filter, projection and pipeline
//! converted from (relaxed or canonical) Extended JSON, with `{{name}}`
//! parameters bound as BSON values.
//!
//! - A string that is exactly `"{{name}}"` becomes the parameter's typed
//!   value: integer → Int64, number → Double, boolean → Boolean, date →
//!   DateTime at midnight UTC, timestamp → DateTime (milliseconds), string
//!   (and undeclared parameters) → String. A string value such as
//!   `{"$ne": null}` therefore stays a string: nothing the caller supplies
//!   is ever read as query syntax.
//! - A placeholder inside a longer string (`"order-{{n}}"`) is replaced by
//!   the value's text (dates `YYYY-MM-DD`, timestamps RFC 3339) and the
//!   result stays one string.
//! - Inside an Extended JSON value (`{"$date": "{{since}}"}`,
//!   `{"$oid": "{{id}}"}`) the text is substituted first and the result
//!   parsed as that type (a date parameter as midnight UTC).
//! - Keys are never substituted; the API refuses placeholders under
//!   JavaScript operators (`$where`, `$function`, `$accumulator`, `$code`).

use chrono::NaiveTime;
use ferry_shared::domain::ErrorKind;
use ferry_shared::domain::params::ParamValue;
use ferry_shared::steps::mongo_query::MongoQuery;
use mongodb::bson::{Bson, DateTime, Document, doc};
use serde_json::{Map, Value};

use crate::connectors::StepRequest;
use crate::extract::ExtractError;

/// Keys that make an object one Extended JSON value rather than a document.
const EXTENDED_KEYS: [&str; 16] = [
    "$oid",
    "$symbol",
    "$regularExpression",
    "$numberInt",
    "$numberLong",
    "$numberDouble",
    "$numberDecimal",
    "$binary",
    "$uuid",
    "$code",
    "$timestamp",
    "$date",
    "$minKey",
    "$maxKey",
    "$dbPointer",
    "$undefined",
];

/// What the server is asked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    Find {
        filter: Document,
        projection: Option<Document>,
        limit: Option<i64>,
    },
    /// The pipeline, with a final `$limit` stage for `limit`.
    Aggregate { pipeline: Vec<Document> },
}

/// Binds `query`'s parameters from `step` and converts it to BSON.
pub(crate) fn bind(query: &MongoQuery, step: &StepRequest<'_>) -> Result<Command, ExtractError> {
    let limit = query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let binder = Binder {
        param: &|name| step.param(name),
    };
    match &query.pipeline {
        Some(stages) => {
            let mut pipeline = stages
                .iter()
                .enumerate()
                .map(|(index, stage)| binder.document(&format!("config.pipeline.{index}"), stage))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(limit) = limit {
                pipeline.push(doc! {"$limit": limit});
            }
            Ok(Command::Aggregate { pipeline })
        }
        None => Ok(Command::Find {
            filter: match &query.filter {
                Some(filter) => binder.document("config.filter", filter)?,
                None => Document::new(),
            },
            projection: query
                .projection
                .as_ref()
                .map(|projection| binder.document("config.projection", projection))
                .transpose()?,
            limit,
        }),
    }
}

/// Resolves parameters by name (the step's, or a test's).
pub(crate) struct Binder<'a> {
    pub(crate) param: &'a dyn Fn(&str) -> Result<ParamValue, ExtractError>,
}

impl Binder<'_> {
    pub(crate) fn document(&self, path: &str, map: &Map<String, Value>) -> Result<Document, ExtractError> {
        match self.value(path, &Value::Object(map.clone()))? {
            Bson::Document(document) => Ok(document),
            _ => Err(invalid(path, "must be a document, not an Extended JSON value")),
        }
    }

    fn value(&self, path: &str, value: &Value) -> Result<Bson, ExtractError> {
        match value {
            Value::String(text) => match whole_placeholder(text) {
                Some(name) => Ok(bson_of((self.param)(name)?)),
                None if text.contains("{{") => Ok(Bson::String(self.substitute(text, false)?)),
                None => Ok(Bson::String(text.clone())),
            },
            Value::Object(map) if map.keys().any(|key| EXTENDED_KEYS.contains(&key.as_str())) => {
                let text = self.substitute_all(value)?;
                Bson::try_from(text)
                    .map_err(|error| invalid(path, &format!("is not valid Extended JSON: {error}")))
            }
            Value::Object(map) => {
                let mut document = Document::new();
                for (key, item) in map {
                    document.insert(key.clone(), self.value(&format!("{path}.{key}"), item)?);
                }
                Ok(Bson::Document(document))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.value(&format!("{path}.{index}"), item))
                .collect::<Result<Vec<_>, _>>()
                .map(Bson::Array),
            other => Bson::try_from(other.clone())
                .map_err(|error| invalid(path, &format!("cannot be stored in BSON: {error}"))),
        }
    }

    /// `value` with every placeholder of every string replaced by text.
    fn substitute_all(&self, value: &Value) -> Result<Value, ExtractError> {
        Ok(match value {
            Value::String(text) => Value::String(self.substitute(text, true)?),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| self.substitute_all(item))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, item)| Ok((key.clone(), self.substitute_all(item)?)))
                    .collect::<Result<_, ExtractError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// `text` with each `{{name}}` replaced by its value's text; inside
    /// Extended JSON a date is written as midnight UTC so `$date` reads it.
    fn substitute(&self, text: &str, extended: bool) -> Result<String, ExtractError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                break;
            };
            out.push_str(&rest[..start]);
            let value = (self.param)(rest[start + 2..start + 2 + len].trim())?;
            match value {
                ParamValue::Date(date) if extended => {
                    out.push_str(&date.format("%Y-%m-%dT00:00:00Z").to_string());
                }
                other => out.push_str(&other.to_text()),
            }
            rest = &rest[start + 2 + len + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The name in a string that is exactly one placeholder.
fn whole_placeholder(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then(|| inner.trim())
}

/// A parameter value as BSON.
pub(crate) fn bson_of(value: ParamValue) -> Bson {
    match value {
        ParamValue::Text(text) => Bson::String(text),
        ParamValue::Integer(n) => Bson::Int64(n),
        ParamValue::Number(n) => Bson::Double(n),
        ParamValue::Boolean(b) => Bson::Boolean(b),
        ParamValue::Date(date) => Bson::DateTime(DateTime::from_millis(
            date.and_time(NaiveTime::MIN).and_utc().timestamp_millis(),
        )),
        ParamValue::Timestamp(at) => Bson::DateTime(DateTime::from_millis(at.timestamp_millis())),
    }
}

fn invalid(path: &str, message: &str) -> ExtractError {
    ExtractError::new(ErrorKind::InvalidQuery, format!("{path} {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::domain::params;
    use mongodb::bson::oid::ObjectId;
    use serde_json::json;

    fn binder_test(config: Value, declared: Value, supplied: Value) -> Result<Document, ExtractError> {
        let declared = declared.as_object().cloned().unwrap_or_default();
        let supplied = supplied.as_object().cloned().unwrap_or_default();
        let param = move |name: &str| {
            params::resolve(name, &declared, &supplied)
                .map_err(|e| ExtractError::new(ErrorKind::InvalidParameters, e.to_string()))
        };
        let binder = Binder { param: &param };
        binder.document("config.filter", config.as_object().expect("an object"))
    }

    #[test]
    fn whole_placeholders_bind_typed_values_and_embedded_ones_text() {
        let bound = binder_test(
            json!({"n": "{{n}}", "x": "{{ x }}", "ok": "{{ok}}", "day": "{{day}}", "at": "{{at}}",
                   "who": "{{who}}", "label": "order-{{n}}-{{who}}", "in": {"$in": ["{{n}}", 3]}}),
            json!({"n": {"type": "integer"}, "x": {"type": "number"}, "ok": {"type": "boolean"},
                   "day": {"type": "date"}, "at": {"type": "timestamp"}}),
            json!({"n": 7, "x": 1.5, "ok": true, "day": "2024-03-01", "at": "2024-03-01T12:00:00.250+02:00",
                   "who": "ann"}),
        )
        .expect("bound");
        assert_eq!(
            bound,
            doc! {
                "n": 7_i64, "x": 1.5, "ok": true,
                "day": DateTime::from_millis(1_709_251_200_000),
                "at": DateTime::from_millis(1_709_287_200_250),
                "who": "ann", "label": "order-7-ann", "in": {"$in": [7_i64, 3]},
            }
        );
    }

    #[test]
    fn a_string_parameter_that_looks_like_an_operator_stays_a_string() {
        let bound = binder_test(
            json!({"name": "{{name}}"}),
            json!({}),
            json!({"name": "{\"$ne\": null}"}),
        )
        .expect("bound");
        assert_eq!(bound, doc! {"name": "{\"$ne\": null}"});
        let object = binder_test(
            json!({"name": "{{name}}"}),
            json!({}),
            json!({"name": {"$ne": null}}),
        )
        .expect("bound");
        // An undeclared parameter given as an object is its JSON text.
        assert_eq!(object, doc! {"name": "{\"$ne\":null}"});
    }

    #[test]
    fn extended_json_is_honoured_with_parameters_inside() {
        let id = ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").expect("oid");
        let bound = binder_test(
            json!({"_id": {"$oid": "{{id}}"}, "since": {"$gte": {"$date": "{{day}}"}},
                   "until": {"$lt": {"$date": "2024-05-01T00:00:00Z"}}, "big": {"$numberLong": "9007199254740993"}}),
            json!({"day": {"type": "date"}}),
            json!({"id": id.to_hex(), "day": "2024-03-01"}),
        )
        .expect("bound");
        assert_eq!(
            bound,
            doc! {"_id": id, "since": {"$gte": DateTime::from_millis(1_709_251_200_000)},
            "until": {"$lt": DateTime::from_millis(1_714_521_600_000)}, "big": 9_007_199_254_740_993_i64}
        );
        let error = binder_test(json!({"_id": {"$oid": "nope"}}), json!({}), json!({})).expect_err("refused");
        assert_eq!(error.error_type, ErrorKind::InvalidQuery);
        assert!(
            error.message.starts_with("config.filter._id "),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_missing_or_mistyped_parameter_is_invalid_parameters() {
        let error = binder_test(json!({"a": "{{gone}}"}), json!({}), json!({})).expect_err("missing");
        assert_eq!(error.error_type, ErrorKind::InvalidParameters);
        let error = binder_test(
            json!({"a": "{{n}}"}),
            json!({"n": {"type": "integer"}}),
            json!({"n": "seven"}),
        )
        .expect_err("mistyped");
        assert_eq!(error.error_type, ErrorKind::InvalidParameters);
    }
}
