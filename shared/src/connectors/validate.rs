//! Validation of connector configs against their type's schema, on create
//! and on PATCH (see [`super::ConnectorType::validate_new`] and
//! [`super::ConnectorType::validate_patch`] for the rules).

use serde_json::{Map, Value};

use super::formats;
use super::{ConnectorType, FieldKind, FieldSpec, Requirement, SplitConfig};
use crate::{Error, Result};

/// The `message` of every config validation error (the seed's wording).
const MESSAGE: &str = "Invalid connector configuration";

fn invalid(field: &str, details: impl Into<String>) -> Error {
    Error::validation(format!("config.{field}"), MESSAGE).with_details(details)
}

/// SSL modes that always encrypt (so `ssl_enabled` is true with them).
const ENCRYPTING_MODES: &[&str] = &["require", "verify-ca", "verify-full"];

pub(super) fn validate_new(ty: &ConnectorType, config: &Map<String, Value>) -> Result<SplitConfig> {
    reject_unknown(ty, config)?;
    let present: Map<String, Value> = config
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    validate(ty, present, &|name| {
        config.get(name).is_some_and(|v| !v.is_null())
    })
}

pub(super) fn validate_patch(
    ty: &ConnectorType,
    public: &Map<String, Value>,
    secrets: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<SplitConfig> {
    reject_unknown(ty, patch)?;

    // The stored config as the schema sees it; keys it does not know are
    // carried over untouched.
    // Secrets come second: the real value wins over a redacted public copy.
    let mut stored = Map::new();
    let mut carried = SplitConfig::default();
    for (values, unknown) in [(public, &mut carried.public), (secrets, &mut carried.secrets)] {
        for (name, value) in values {
            let into = if ty.field(name).is_some() {
                &mut stored
            } else {
                &mut *unknown
            };
            into.insert(name.clone(), value.clone());
        }
    }

    let mut merged = stored.clone();
    for (name, value) in patch {
        let Some(field) = ty.field(name) else { continue };
        if value.is_null() {
            if field.required == Requirement::Required {
                return Err(invalid(
                    name,
                    format!(
                        "{} is required for {} connectors and cannot be cleared",
                        field.label, ty.name
                    ),
                ));
            }
            merged.remove(name);
            continue;
        }
        if field.kind == FieldKind::MongoUri
            && let Value::String(text) = value
            && formats::is_redacted_mongo_uri(text)
        {
            if public.get(name) == Some(value) {
                // The public copy sent back: keep the stored secret.
                continue;
            }
            return Err(invalid(
                name,
                format!(
                    "{}'s password is the redaction placeholder {}; send the full connection string, \
                     or omit the field to keep the stored one",
                    field.label,
                    formats::REDACTED_PASSWORD
                ),
            ));
        }
        merged.insert(name.clone(), value.clone());
    }

    if ty.ssl_pair {
        rederive_ssl_pair(&stored, patch, &mut merged);
    }

    let requested = |name: &str| patch.get(name).is_some_and(|v| !v.is_null());
    let mut split = validate(ty, merged, &requested)?;
    split.public.extend(carried.public);
    split.secrets.extend(carried.secrets);
    Ok(split)
}

/// When a patch sets one of `ssl_enabled` / `ssl_mode` but not the other,
/// and the stored other one is exactly what the stored first one implied,
/// the other one is derived again instead of kept.
fn rederive_ssl_pair(
    stored: &Map<String, Value>,
    patch: &Map<String, Value>,
    merged: &mut Map<String, Value>,
) {
    let stored_enabled = stored.get("ssl_enabled").and_then(Value::as_bool);
    let stored_mode = stored.get("ssl_mode").and_then(Value::as_str);
    let (Some(enabled), Some(mode)) = (stored_enabled, stored_mode) else {
        return;
    };
    let patched = |name: &str| patch.contains_key(name);
    if patched("ssl_enabled") && !patched("ssl_mode") && mode == implied_mode(enabled) {
        merged.remove("ssl_mode");
    }
    if patched("ssl_mode") && !patched("ssl_enabled") && enabled == implied_enabled(mode) {
        merged.remove("ssl_enabled");
    }
}

fn implied_mode(enabled: bool) -> &'static str {
    if enabled { "require" } else { "prefer" }
}

fn implied_enabled(mode: &str) -> bool {
    ENCRYPTING_MODES.contains(&mode)
}

fn reject_unknown(ty: &ConnectorType, config: &Map<String, Value>) -> Result<()> {
    match config.keys().find(|name| ty.field(name).is_none()) {
        Some(name) => Err(invalid(
            name,
            format!(
                "{name} is not a {} connector field; the fields are: {}",
                ty.name,
                ty.fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// Validates a complete candidate config (no nulls, only known fields).
/// `requested(name)` tells whether the caller sent the field in this
/// request (as opposed to it being stored from before).
fn validate(
    ty: &ConnectorType,
    mut config: Map<String, Value>,
    requested: &dyn Fn(&str) -> bool,
) -> Result<SplitConfig> {
    for field in &ty.fields {
        if let Some(value) = config.get(field.name) {
            check_value(field, value)?;
        }
    }

    if ty.ssl_pair {
        derive_ssl_pair(&mut config, requested)?;
    }

    for field in &ty.fields {
        if !config.contains_key(field.name)
            && let Some(default) = &field.default
        {
            config.insert(field.name.to_owned(), default.clone());
        }
    }

    // Applicability is judged on the config with defaults, before
    // requirements, so that a dropped stale field is not "required".
    for field in &ty.fields {
        let Some(condition) = &field.applies_when else {
            continue;
        };
        if config.contains_key(field.name) && !condition.holds(&config) {
            if requested(field.name) {
                return Err(invalid(
                    field.name,
                    format!(
                        "{} applies only when {} is {}",
                        field.label,
                        condition.field,
                        condition.values.join(" or ")
                    ),
                ));
            }
            config.remove(field.name);
        }
    }

    for field in &ty.fields {
        if config.contains_key(field.name) {
            continue;
        }
        match field.required {
            Requirement::Optional => {}
            Requirement::Required => {
                return Err(invalid(
                    field.name,
                    format!("{} is required for {} connectors", field.label, ty.name),
                ));
            }
            Requirement::RequiredWhen { field: other, values } => {
                let condition = super::Condition { field: other, values };
                if condition.holds(&config) {
                    let shown = config
                        .get(other)
                        .and_then(super::condition_text)
                        .unwrap_or_default();
                    return Err(invalid(
                        field.name,
                        format!(
                            "{} is required for {} connectors when {other} is {shown}",
                            field.label, ty.name
                        ),
                    ));
                }
            }
        }
    }

    let mut split = SplitConfig::default();
    for field in &ty.fields {
        let Some(value) = config.remove(field.name) else {
            continue;
        };
        if field.secret {
            if field.kind == FieldKind::MongoUri
                && let Value::String(text) = &value
            {
                split.public.insert(
                    field.name.to_owned(),
                    Value::String(formats::redact_mongo_uri(text)),
                );
            }
            split.secrets.insert(field.name.to_owned(), value);
        } else {
            split.public.insert(field.name.to_owned(), value);
        }
    }
    Ok(split)
}

/// `ssl_enabled` and `ssl_mode` derive from each other; contradictions are
/// refused, naming the field the caller sent.
fn derive_ssl_pair(config: &mut Map<String, Value>, requested: &dyn Fn(&str) -> bool) -> Result<()> {
    let enabled = config.get("ssl_enabled").and_then(Value::as_bool);
    let mode = config.get("ssl_mode").and_then(Value::as_str).map(str::to_owned);
    match (enabled, mode) {
        (None, None) => {}
        (Some(enabled), None) => {
            config.insert("ssl_mode".into(), Value::from(implied_mode(enabled)));
        }
        (None, Some(mode)) => {
            config.insert("ssl_enabled".into(), Value::Bool(implied_enabled(&mode)));
        }
        (Some(enabled), Some(mode)) => {
            let contradiction = if enabled {
                mode == "disable"
            } else {
                implied_enabled(&mode)
            };
            if contradiction {
                let field = if requested("ssl_enabled") && !requested("ssl_mode") {
                    "ssl_enabled"
                } else {
                    "ssl_mode"
                };
                return Err(invalid(
                    field,
                    format!(
                        "ssl_mode {mode} contradicts ssl_enabled {enabled}; send one of them, \
                         or a consistent pair"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Checks one present, non-null value against its field's kind.
pub(super) fn check_value(field: &FieldSpec, value: &Value) -> Result<()> {
    let label = field.label;
    let wrong_type = |expected: &str| invalid(field.name, format!("{label} must be {expected}"));
    match field.kind {
        FieldKind::Integer { min, max } => {
            let in_range = value.as_i64().is_some_and(|n| (min..=max).contains(&n));
            if !in_range {
                return Err(invalid(
                    field.name,
                    format!("{label} must be an integer between {min} and {max}"),
                ));
            }
            Ok(())
        }
        FieldKind::Boolean => match value {
            Value::Bool(_) => Ok(()),
            _ => Err(wrong_type("true or false")),
        },
        FieldKind::Enum(values) => match value.as_str() {
            Some(text) if values.contains(&text) => Ok(()),
            _ => Err(invalid(
                field.name,
                format!("{label} must be one of {}", values.join(", ")),
            )),
        },
        FieldKind::Object | FieldKind::Headers => {
            let Value::Object(map) = value else {
                return Err(wrong_type("an object of string values"));
            };
            if field.kind == FieldKind::Headers && map.len() > formats::MAX_HEADERS {
                return Err(invalid(
                    field.name,
                    format!("{label} must have at most {} entries", formats::MAX_HEADERS),
                ));
            }
            for (key, entry) in map {
                let Value::String(text) = entry else {
                    return Err(wrong_type("an object of string values"));
                };
                let checked = if field.kind == FieldKind::Headers {
                    formats::check_header(key, text)
                } else if key.is_empty() {
                    Err("must not have an empty key".to_owned())
                } else {
                    formats::check_text(key, false).and_then(|()| formats::check_text(text, field.secret))
                };
                checked.map_err(|reason| invalid(field.name, format!("{label} {reason}")))?;
            }
            Ok(())
        }
        _ => {
            let Value::String(text) = value else {
                return Err(wrong_type("a string"));
            };
            if text.is_empty() {
                return Err(invalid(
                    field.name,
                    format!("{label} must not be empty (omit it, or send null to clear it)"),
                ));
            }
            check_string(field, text).map_err(|reason| invalid(field.name, format!("{label} {reason}")))
        }
    }
}

fn check_string(field: &FieldSpec, text: &str) -> Result<(), String> {
    match field.kind {
        FieldKind::String => formats::check_text(text, field.secret),
        FieldKind::Pem => formats::check_pem_certificates(text),
        FieldKind::Url => formats::check_url(text),
        FieldKind::Host => formats::check_host(text),
        FieldKind::Word => formats::check_word(text),
        FieldKind::Name => formats::check_name(text),
        FieldKind::UrlPath => formats::check_url_path(text),
        FieldKind::FilePath => formats::check_file_path(text),
        FieldKind::MongoUri => {
            formats::parse_mongo_uri(text)?;
            if formats::is_redacted_mongo_uri(text) {
                return Err(format!(
                    "has the redaction placeholder {} as its password; send the real password",
                    formats::REDACTED_PASSWORD
                ));
            }
            Ok(())
        }
        FieldKind::Integer { .. }
        | FieldKind::Boolean
        | FieldKind::Enum(_)
        | FieldKind::Object
        | FieldKind::Headers => Ok(()),
    }
}
