//! Typed, defensive reads of a connector's `config` map: the registry
//! validates and applies defaults before a spec reaches the worker (and the
//! pool registry refuses fields the type does not declare), but a driver
//! re-applies the declared defaults and bounds anyway.
//!
//! A family reads its config once into a typed struct through [`Fields`]:
//! every field is taken by name, an absent one takes its declared default,
//! and a field the struct did not take is refused (what serde's
//! `deny_unknown_fields` does). [`Config`] is the older field-by-field
//! reader. Both apply the same value rules below, so a value means the same,
//! and is refused with the same `config.<field> …` message, in every family.

use std::time::Duration;

use ferry_shared::config::SecretString;
use ferry_shared::connectors::{ConnectorType, TypeId};
use serde_json::{Map, Value};

use super::errors::DriverError;

/// Defaults shared by the database connector types: the registry's,
/// written once in the shared declarations. [`Fields`] takes them from the
/// declaration; [`Config`] (which has none) from here.
use ferry_shared::connectors::defaults::{
    CONNECTION_TIMEOUT_SECONDS as DEFAULT_CONNECTION_TIMEOUT_SECONDS,
    IDLE_TIMEOUT_SECONDS as DEFAULT_IDLE_TIMEOUT_SECONDS, MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS,
    MAX_LIFETIME_SECONDS as DEFAULT_MAX_LIFETIME_SECONDS,
    STATEMENT_TIMEOUT_SECONDS as DEFAULT_STATEMENT_TIMEOUT_SECONDS,
};

/// Upper bounds: a connector cannot ask a worker for more than this.
const MAX_CONNECTIONS_LIMIT: u64 = 100;
const MAX_SECONDS: u64 = 7 * 24 * 3600;

// The value rules. Each reads the value of field `key` (`None` when the
// field is absent) and says what it holds: `Ok(None)` for nothing (absent,
// `null`, and for strings and numbers `""`), or an `invalid_config` error
// naming `config.<key>`.

/// A string.
fn text<'v>(key: &str, value: Option<&'v Value>) -> Result<Option<&'v str>, DriverError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.as_str())),
        Some(_) => Err(DriverError::invalid_config(format!(
            "config.{key} must be a string"
        ))),
    }
}

/// A string without NUL bytes or line breaks (names, users, database
/// names).
fn name<'v>(key: &str, value: Option<&'v Value>) -> Result<Option<&'v str>, DriverError> {
    let value = text(key, value)?;
    if value.is_some_and(|text| text.contains(['\0', '\n', '\r'])) {
        return Err(DriverError::invalid_config(format!(
            "config.{key} contains control characters"
        )));
    }
    Ok(value)
}

/// A secret string: anything but NUL.
fn secret<'v>(key: &str, value: Option<&'v Value>) -> Result<Option<&'v str>, DriverError> {
    let value = text(key, value)?;
    if value.is_some_and(|text| text.contains('\0')) {
        return Err(DriverError::invalid_config(format!(
            "config.{key} contains a NUL byte"
        )));
    }
    Ok(value)
}

/// A non-negative integer: a JSON number or a string of digits.
fn uint(key: &str, value: Option<&Value>) -> Result<Option<u64>, DriverError> {
    let invalid = || DriverError::invalid_config(format!("config.{key} must be a non-negative integer"));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => number.as_u64().map(Some).ok_or_else(invalid),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => text.trim().parse().map(Some).map_err(|_| invalid()),
        Some(_) => Err(invalid()),
    }
}

/// `true` or `false`, as JSON or as a string in any case.
fn boolean(key: &str, value: Option<&Value>) -> Result<Option<bool>, DriverError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(DriverError::invalid_config(format!(
            "config.{key} must be true or false"
        ))),
    }
}

/// A TCP port, 1 to 65535.
fn port_number(key: &str, number: u64) -> Result<u16, DriverError> {
    match number {
        port @ 1..=65535 => Ok(port as u16),
        _ => Err(DriverError::invalid_config(format!(
            "config.{key} must be between 1 and 65535"
        ))),
    }
}

/// A duration in whole seconds, at least 1 and at most a week.
fn duration(key: &str, seconds: u64) -> Result<Duration, DriverError> {
    match seconds {
        seconds @ 1..=MAX_SECONDS => Ok(Duration::from_secs(seconds)),
        _ => Err(DriverError::invalid_config(format!(
            "config.{key} must be between 1 and {MAX_SECONDS}"
        ))),
    }
}

fn required(key: &str) -> DriverError {
    DriverError::invalid_config(format!("config.{key} is required"))
}

/// A connector's config as a family's typed config reads it: each field is
/// taken once, by name, under the value rules of this module; an absent one
/// (or `null`, or `""` where a string or number is expected) takes the
/// default its declaration gives. [`Fields::finish`] then refuses any field
/// that was not taken: the typed config has no place for it.
pub(crate) struct Fields<'a> {
    decl: &'static ConnectorType,
    map: &'a Map<String, Value>,
    taken: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// Reads a typed config with `read` from `map`, the config of a
    /// connector declared by `decl`, then refuses any field `read` did not
    /// take.
    pub fn parse<T>(
        decl: &'static ConnectorType,
        map: &'a Map<String, Value>,
        read: impl FnOnce(&mut Fields<'a>) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        let mut fields = Fields::new(decl, map);
        let typed = read(&mut fields)?;
        fields.finish()?;
        Ok(typed)
    }

    fn new(decl: &'static ConnectorType, map: &'a Map<String, Value>) -> Self {
        Fields {
            decl,
            map,
            taken: Vec::new(),
        }
    }

    /// The type of the connector whose config this is.
    pub fn type_id(&self) -> TypeId {
        self.decl.type_id
    }

    /// Field `key` under `rule`: the value given, else the declared default.
    fn take<T>(
        &mut self,
        key: &'static str,
        rule: fn(&str, Option<&'a Value>) -> Result<Option<T>, DriverError>,
    ) -> Result<Option<T>, DriverError> {
        match self.given(key, rule)? {
            None => rule(key, self.decl.default_value(key)),
            given => Ok(given),
        }
    }

    /// Field `key` under `rule`, as given: its declared default is not
    /// applied (for fields whose absence means something, as `ssl_mode`).
    fn given<T>(
        &mut self,
        key: &'static str,
        rule: fn(&str, Option<&'a Value>) -> Result<Option<T>, DriverError>,
    ) -> Result<Option<T>, DriverError> {
        self.taken.push(key);
        rule(key, self.map.get(key))
    }

    /// A string field; `None` when neither given nor declared with a default.
    pub fn str(&mut self, key: &'static str) -> Result<Option<&'a str>, DriverError> {
        self.take(key, text)
    }

    /// A string field as given (see [`Self::given`]).
    pub fn given_str(&mut self, key: &'static str) -> Result<Option<&'a str>, DriverError> {
        self.given(key, text)
    }

    /// A name (no NUL bytes or line breaks) that must be there.
    pub fn name(&mut self, key: &'static str) -> Result<String, DriverError> {
        self.take(key, name)?
            .map(str::to_owned)
            .ok_or_else(|| required(key))
    }

    /// A secret (anything but NUL), held so that it cannot be printed.
    pub fn secret(&mut self, key: &'static str) -> Result<Option<SecretString>, DriverError> {
        Ok(self.take(key, secret)?.map(SecretString::from))
    }

    /// A flag that must be given or declared with a default.
    pub fn bool(&mut self, key: &'static str) -> Result<bool, DriverError> {
        self.take(key, boolean)?.ok_or_else(|| required(key))
    }

    /// A non-negative integer; `None` when neither given nor declared with
    /// a default.
    pub fn uint(&mut self, key: &'static str) -> Result<Option<u64>, DriverError> {
        self.take(key, uint)
    }

    /// A TCP port that must be given or declared with a default.
    pub fn port(&mut self, key: &'static str) -> Result<u16, DriverError> {
        port_number(key, self.uint(key)?.ok_or_else(|| required(key))?)
    }

    /// Refuses a field that was not taken, naming it.
    fn finish(self) -> Result<(), DriverError> {
        match self.map.keys().find(|key| !self.taken.contains(&key.as_str())) {
            Some(unknown) => Err(unknown_field(unknown, self.decl)),
            None => Ok(()),
        }
    }
}

/// The error for a config field that connectors of `decl`'s type do not
/// have.
pub(crate) fn unknown_field(key: &str, decl: &ConnectorType) -> DriverError {
    DriverError::invalid_config(format!(
        "config.{key} is not a field of {} connectors",
        decl.type_id
    ))
}

/// Read access to one connector's config, field by field, with the defaults
/// the caller gives.
#[derive(Clone, Copy)]
pub(crate) struct Config<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Config<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Config { map }
    }

    /// A string field; absent, `null` and `""` all read as `None`.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, DriverError> {
        text(key, self.map.get(key))
    }

    pub fn required_str(&self, key: &str) -> Result<&'a str, DriverError> {
        self.str(key)?.ok_or_else(|| required(key))
    }

    /// A string field that must not carry NUL bytes or line breaks (names,
    /// users, database names); passwords may hold anything but NUL.
    pub fn name(&self, key: &str) -> Result<Option<&'a str>, DriverError> {
        name(key, self.map.get(key))
    }

    pub fn required_name(&self, key: &str) -> Result<&'a str, DriverError> {
        self.name(key)?.ok_or_else(|| required(key))
    }

    pub fn secret(&self, key: &str) -> Result<Option<&'a str>, DriverError> {
        secret(key, self.map.get(key))
    }

    /// A non-negative integer (a JSON number or a string of digits).
    pub fn uint(&self, key: &str) -> Result<Option<u64>, DriverError> {
        uint(key, self.map.get(key))
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool, DriverError> {
        Ok(boolean(key, self.map.get(key))?.unwrap_or(default))
    }

    pub fn port(&self, key: &str, default: u16) -> Result<u16, DriverError> {
        match self.uint(key)? {
            None => Ok(default),
            Some(number) => port_number(key, number),
        }
    }

    /// A duration in whole seconds, at least 1 and at most a week.
    pub fn seconds(&self, key: &str, default: u64) -> Result<Duration, DriverError> {
        duration(key, self.uint(key)?.unwrap_or(default))
    }

    pub fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, DriverError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(DriverError::invalid_config(format!(
                "config.{key} must be an object"
            ))),
        }
    }

    /// The pool settings every database type shares.
    pub fn pool_settings(&self) -> Result<PoolSettings, DriverError> {
        PoolSettings::from_numbers(|key| self.uint(key))
    }
}

/// Pool sizing and timeouts for one connector: the fields every database
/// type declares (`max_connections`, `connection_timeout_seconds`,
/// `idle_timeout_seconds`, `max_lifetime_seconds`,
/// `statement_timeout_seconds`). At most 100 connections; every duration
/// between a second and a week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// Bounds connecting, acquiring a pooled connection, and a whole test.
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub statement_timeout: Duration,
}

impl PoolSettings {
    /// Takes the pool fields of a typed config.
    pub(crate) fn read(fields: &mut Fields<'_>) -> Result<PoolSettings, DriverError> {
        // Declared beside the pool fields but no pool setting: the step
        // runner enforces it fleet-wide (`crate::slots`). Taken here so that
        // it is not refused as unknown.
        fields.uint(crate::slots::MAX_CONCURRENT_STEPS)?;
        Self::from_numbers(|key| fields.uint(key))
    }

    /// The settings from `number(field)`, the field's value if it has one;
    /// a field without one takes the shared default.
    fn from_numbers(
        mut number: impl FnMut(&'static str) -> Result<Option<u64>, DriverError>,
    ) -> Result<PoolSettings, DriverError> {
        let max_connections = match number("max_connections")?.unwrap_or(DEFAULT_MAX_CONNECTIONS) {
            count @ 1..=MAX_CONNECTIONS_LIMIT => count as u32,
            _ => {
                return Err(DriverError::invalid_config(format!(
                    "config.max_connections must be between 1 and {MAX_CONNECTIONS_LIMIT}"
                )));
            }
        };
        let mut seconds = |key, default| duration(key, number(key)?.unwrap_or(default));
        Ok(PoolSettings {
            max_connections,
            connect_timeout: seconds("connection_timeout_seconds", DEFAULT_CONNECTION_TIMEOUT_SECONDS)?,
            idle_timeout: seconds("idle_timeout_seconds", DEFAULT_IDLE_TIMEOUT_SECONDS)?,
            max_lifetime: seconds("max_lifetime_seconds", DEFAULT_MAX_LIFETIME_SECONDS)?,
            statement_timeout: seconds("statement_timeout_seconds", DEFAULT_STATEMENT_TIMEOUT_SECONDS)?,
        })
    }
}

/// The TLS modes of the PostgreSQL/MySQL connectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// Every mode, weakest first (what PostgreSQL accepts).
    pub const ALL: [SslMode; 6] = [
        SslMode::Disable,
        SslMode::Allow,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server certificate's chain is checked.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// A connection's TLS settings: the `ssl_enabled` / `ssl_mode` pair and
/// `ssl_root_cert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tls {
    pub mode: SslMode,
    /// PEM text of the CA certificate(s) the server's must chain to.
    pub root_cert: Option<String>,
}

impl Tls {
    /// `ssl_mode`, defaulting to `require` when `ssl_enabled` is true and
    /// `prefer` otherwise. `ssl_enabled: true` with `ssl_mode: disable` is
    /// a contradiction and refused. `allowed` is the type's vocabulary.
    /// `ssl_root_cert` must be PEM text; a path or anything else is refused
    /// (the worker never reads files named by a connector).
    pub(crate) fn read(fields: &mut Fields<'_>, allowed: &[SslMode]) -> Result<Tls, DriverError> {
        let enabled = fields.bool("ssl_enabled")?;
        let mode = match fields.given_str("ssl_mode")? {
            None if enabled => SslMode::Require,
            None => SslMode::Prefer,
            Some(text) => allowed
                .iter()
                .copied()
                .find(|mode| mode.as_str() == text)
                .ok_or_else(|| {
                    let words: Vec<&str> = allowed.iter().map(|mode| mode.as_str()).collect();
                    DriverError::invalid_config(format!(
                        "config.ssl_mode must be one of {}",
                        words.join(", ")
                    ))
                })?,
        };
        if enabled && mode == SslMode::Disable {
            return Err(DriverError::invalid_config(
                "config.ssl_enabled is true but config.ssl_mode is disable",
            ));
        }
        let root_cert = match fields.str("ssl_root_cert")? {
            None => None,
            Some(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Some(pem.to_owned()),
            Some(_) => {
                return Err(DriverError::invalid_config(
                    "config.ssl_root_cert must be the PEM text of a CA certificate (-----BEGIN CERTIFICATE-----)",
                ));
            }
        };
        Ok(Tls { mode, root_cert })
    }
}

/// `value` as a config map (tests write configs as `json!` objects).
#[cfg(test)]
pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads `config` of a `type_id` connector with `read`, then refuses
    /// what it did not take.
    fn read<T>(
        type_id: TypeId,
        config: Value,
        read: impl FnOnce(&mut Fields<'_>) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        Fields::parse(type_id.decl(), &object(config), read)
    }

    fn message<T: std::fmt::Debug>(result: Result<T, DriverError>) -> String {
        let error = result.expect_err("refused");
        assert_eq!(error.kind(), crate::connectors::ErrorType::InvalidConfig);
        error.message().to_owned()
    }

    #[test]
    fn pool_settings_default_to_the_documented_values() {
        let empty = Map::new();
        let expected = PoolSettings {
            max_connections: 5,
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            statement_timeout: Duration::from_secs(300),
        };
        assert_eq!(Config::new(&empty).pool_settings().expect("defaults"), expected);
        let typed = read(TypeId::Sqlite, json!({}), PoolSettings::read).expect("declared defaults");
        assert_eq!(typed, expected);
    }

    #[test]
    fn pool_settings_take_numbers_and_digit_strings() {
        let settings = read(
            TypeId::Mysql,
            json!({"max_connections": "7", "statement_timeout_seconds": 9, "idle_timeout_seconds": " 60 "}),
            PoolSettings::read,
        )
        .expect("settings");
        assert_eq!(settings.max_connections, 7);
        assert_eq!(settings.statement_timeout, Duration::from_secs(9));
        assert_eq!(settings.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn out_of_range_pool_settings_are_invalid_config() {
        for (bad, expected) in [
            (
                json!({"max_connections": 0}),
                "config.max_connections must be between 1 and 100",
            ),
            (
                json!({"max_connections": 1000}),
                "config.max_connections must be between 1 and 100",
            ),
            (
                json!({"idle_timeout_seconds": 0}),
                "config.idle_timeout_seconds must be between 1 and 604800",
            ),
            (
                json!({"max_lifetime_seconds": 604_801}),
                "config.max_lifetime_seconds must be between 1 and 604800",
            ),
            (
                json!({"statement_timeout_seconds": -1}),
                "config.statement_timeout_seconds must be a non-negative integer",
            ),
            (
                json!({"connection_timeout_seconds": "soon"}),
                "config.connection_timeout_seconds must be a non-negative integer",
            ),
            (
                json!({"max_connections": true}),
                "config.max_connections must be a non-negative integer",
            ),
        ] {
            let config = object(bad.clone());
            assert_eq!(message(Config::new(&config).pool_settings()), expected, "{bad}");
            assert_eq!(
                message(read(TypeId::Postgresql, bad.clone(), PoolSettings::read)),
                expected,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_port_takes_the_declared_default_and_is_refused_out_of_range() {
        assert_eq!(
            read(TypeId::Postgresql, json!({}), |f| f.port("port")).expect("port"),
            5432
        );
        assert_eq!(
            read(TypeId::Redshift, json!({"port": null}), |f| f.port("port")).expect("port"),
            5439
        );
        assert_eq!(
            read(TypeId::Mysql, json!({"port": ""}), |f| f.port("port")).expect("port"),
            3306
        );
        assert_eq!(
            read(TypeId::Mysql, json!({"port": "3307"}), |f| f.port("port")).expect("port"),
            3307
        );
        for bad in [json!(0), json!(65_536)] {
            assert_eq!(
                message(read(TypeId::Postgresql, json!({"port": bad}), |f| f.port("port"))),
                "config.port must be between 1 and 65535"
            );
        }
        for bad in [json!(-1), json!(54.32), json!("54 32"), json!([5432])] {
            assert_eq!(
                message(read(TypeId::Postgresql, json!({"port": bad}), |f| f.port("port"))),
                "config.port must be a non-negative integer"
            );
        }
    }

    #[test]
    fn a_field_the_typed_config_does_not_take_is_refused_by_name() {
        let error = message(read(
            TypeId::Sqlite,
            json!({"path": "a.db", "sslcert": "/etc/client.pem"}),
            |f| f.name("path"),
        ));
        assert_eq!(error, "config.sslcert is not a field of sqlite connectors");
    }

    #[test]
    fn names_and_secrets_refuse_control_characters() {
        assert_eq!(
            message(read(TypeId::Sqlite, json!({"path": "a\n.db"}), |f| f.name("path"))),
            "config.path contains control characters"
        );
        assert_eq!(
            message(read(TypeId::Sqlite, json!({}), |f| f.name("path"))),
            "config.path is required"
        );
        assert_eq!(
            message(read(TypeId::Mysql, json!({"password": "a\0b"}), |f| f
                .secret("password"))),
            "config.password contains a NUL byte"
        );
        assert_eq!(
            message(read(TypeId::Mysql, json!({"username": 7}), |f| f.name("username"))),
            "config.username must be a string"
        );
    }

    #[test]
    fn a_secret_is_not_shown_by_debug() {
        let password = read(TypeId::Postgresql, json!({"password": "hunter2"}), |f| {
            f.secret("password")
        })
        .expect("secret")
        .expect("given");
        assert!(!format!("{password:?}").contains("hunter2"));
    }

    fn tls(type_id: TypeId, config: Value) -> Result<Tls, DriverError> {
        read(type_id, config, |f| Tls::read(f, &SslMode::ALL))
    }

    #[test]
    fn ssl_mode_defaults_to_prefer_or_require_when_ssl_is_enabled() {
        let mode = |config| tls(TypeId::Postgresql, config).map(|tls| tls.mode);
        assert_eq!(mode(json!({})).expect("mode"), SslMode::Prefer);
        assert_eq!(
            mode(json!({"ssl_enabled": true})).expect("mode"),
            SslMode::Require
        );
        assert_eq!(
            mode(json!({"ssl_enabled": "TRUE"})).expect("mode"),
            SslMode::Require
        );
        assert_eq!(
            mode(json!({"ssl_enabled": true, "ssl_mode": "verify-full"})).expect("mode"),
            SslMode::VerifyFull
        );
        assert_eq!(
            message(mode(json!({"ssl_enabled": true, "ssl_mode": "disable"}))),
            "config.ssl_enabled is true but config.ssl_mode is disable"
        );
        let config = object(json!({"ssl_mode": "allow"}));
        let mut fields = Fields::new(TypeId::Mysql.decl(), &config);
        assert_eq!(
            message(Tls::read(&mut fields, &SslMode::ALL[2..])),
            "config.ssl_mode must be one of prefer, require, verify-ca, verify-full"
        );
        assert_eq!(
            message(mode(json!({"ssl_enabled": "yes"}))),
            "config.ssl_enabled must be true or false"
        );
    }

    #[test]
    fn a_root_cert_must_be_pem_text_not_a_path() {
        let error = message(tls(
            TypeId::Postgresql,
            json!({"ssl_root_cert": "/etc/ssl/private/server.key"}),
        ));
        assert!(
            error.starts_with("config.ssl_root_cert must be the PEM text"),
            "{error}"
        );
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let tls = tls(TypeId::Postgresql, json!({"ssl_root_cert": pem})).expect("pem");
        assert_eq!(tls.root_cert.as_deref(), Some(pem));
    }
}
