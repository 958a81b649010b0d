//! Typed, defensive reads of a connector's `config` map: the registry
//! validates and applies defaults before a spec reaches the worker (and the
//! pool registry refuses fields the type does not declare), but a driver
//! re-applies the declared defaults and bounds anyway.

use std::time::Duration;

use serde_json::{Map, Value};

use super::errors::DriverError;

/// Defaults shared by the database connector types: the registry's, written
/// once in the shared declarations.
use ferry_shared::connectors::defaults::{
    CONNECTION_TIMEOUT_SECONDS as DEFAULT_CONNECTION_TIMEOUT_SECONDS,
    IDLE_TIMEOUT_SECONDS as DEFAULT_IDLE_TIMEOUT_SECONDS, MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS,
    MAX_LIFETIME_SECONDS as DEFAULT_MAX_LIFETIME_SECONDS,
    STATEMENT_TIMEOUT_SECONDS as DEFAULT_STATEMENT_TIMEOUT_SECONDS,
};

/// Upper bounds: a connector cannot ask a worker for more than this.
const MAX_CONNECTIONS_LIMIT: u64 = 100;
const MAX_SECONDS: u64 = 7 * 24 * 3600;

/// Read access to one connector's config.
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
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.as_str())),
            Some(_) => Err(DriverError::invalid_config(format!(
                "config.{key} must be a string"
            ))),
        }
    }

    pub fn required_str(&self, key: &str) -> Result<&'a str, DriverError> {
        self.str(key)?
            .ok_or_else(|| DriverError::invalid_config(format!("config.{key} is required")))
    }

    /// A string field that must not carry NUL bytes or line breaks (names,
    /// users, database names); passwords may hold anything but NUL.
    pub fn name(&self, key: &str) -> Result<Option<&'a str>, DriverError> {
        let value = self.str(key)?;
        if value.is_some_and(|text| text.contains(['\0', '\n', '\r'])) {
            return Err(DriverError::invalid_config(format!(
                "config.{key} contains control characters"
            )));
        }
        Ok(value)
    }

    pub fn required_name(&self, key: &str) -> Result<&'a str, DriverError> {
        self.name(key)?
            .ok_or_else(|| DriverError::invalid_config(format!("config.{key} is required")))
    }

    pub fn secret(&self, key: &str) -> Result<Option<&'a str>, DriverError> {
        let value = self.str(key)?;
        if value.is_some_and(|text| text.contains('\0')) {
            return Err(DriverError::invalid_config(format!(
                "config.{key} contains a NUL byte"
            )));
        }
        Ok(value)
    }

    /// A non-negative integer (a JSON number or a string of digits).
    pub fn uint(&self, key: &str) -> Result<Option<u64>, DriverError> {
        let invalid = || DriverError::invalid_config(format!("config.{key} must be a non-negative integer"));
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(number)) => number.as_u64().map(Some).ok_or_else(invalid),
            Some(Value::String(text)) if text.is_empty() => Ok(None),
            Some(Value::String(text)) => text.trim().parse().map(Some).map_err(|_| invalid()),
            Some(_) => Err(invalid()),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool, DriverError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(DriverError::invalid_config(format!(
                "config.{key} must be true or false"
            ))),
        }
    }

    pub fn port(&self, key: &str, default: u16) -> Result<u16, DriverError> {
        match self.uint(key)? {
            None => Ok(default),
            Some(port @ 1..=65535) => Ok(port as u16),
            Some(_) => Err(DriverError::invalid_config(format!(
                "config.{key} must be between 1 and 65535"
            ))),
        }
    }

    /// A duration in whole seconds, at least 1 and at most a week.
    pub fn seconds(&self, key: &str, default: u64) -> Result<Duration, DriverError> {
        match self.uint(key)?.unwrap_or(default) {
            seconds @ 1..=MAX_SECONDS => Ok(Duration::from_secs(seconds)),
            _ => Err(DriverError::invalid_config(format!(
                "config.{key} must be between 1 and {MAX_SECONDS}"
            ))),
        }
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
        let max_connections = match self.uint("max_connections")?.unwrap_or(DEFAULT_MAX_CONNECTIONS) {
            count @ 1..=MAX_CONNECTIONS_LIMIT => count as u32,
            _ => {
                return Err(DriverError::invalid_config(format!(
                    "config.max_connections must be between 1 and {MAX_CONNECTIONS_LIMIT}"
                )));
            }
        };
        Ok(PoolSettings {
            max_connections,
            connect_timeout: self
                .seconds("connection_timeout_seconds", DEFAULT_CONNECTION_TIMEOUT_SECONDS)?,
            idle_timeout: self.seconds("idle_timeout_seconds", DEFAULT_IDLE_TIMEOUT_SECONDS)?,
            max_lifetime: self.seconds("max_lifetime_seconds", DEFAULT_MAX_LIFETIME_SECONDS)?,
            statement_timeout: self
                .seconds("statement_timeout_seconds", DEFAULT_STATEMENT_TIMEOUT_SECONDS)?,
        })
    }
}

/// Pool sizing and timeouts for one connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// Bounds connecting, acquiring a pooled connection, and a whole test.
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub statement_timeout: Duration,
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

/// `ssl_mode`, defaulting to `require` when `ssl_enabled` is true and
/// `prefer` otherwise. `ssl_enabled: true` with `ssl_mode: disable` is a
/// contradiction and refused. `allowed` is the type's vocabulary.
pub(crate) fn ssl_mode(config: &Config<'_>, allowed: &[SslMode]) -> Result<SslMode, DriverError> {
    let enabled = config.bool("ssl_enabled", false)?;
    let mode = match config.str("ssl_mode")? {
        None if enabled => SslMode::Require,
        None => SslMode::Prefer,
        Some(text) => allowed
            .iter()
            .copied()
            .find(|mode| mode.as_str() == text)
            .ok_or_else(|| {
                let words: Vec<&str> = allowed.iter().map(|mode| mode.as_str()).collect();
                DriverError::invalid_config(format!("config.ssl_mode must be one of {}", words.join(", ")))
            })?,
    };
    if enabled && mode == SslMode::Disable {
        return Err(DriverError::invalid_config(
            "config.ssl_enabled is true but config.ssl_mode is disable",
        ));
    }
    Ok(mode)
}

/// `ssl_root_cert` as PEM text; a path or anything else is refused (the
/// worker never reads files named by a connector).
pub(crate) fn root_cert(config: &Config<'_>) -> Result<Option<Vec<u8>>, DriverError> {
    match config.str("ssl_root_cert")? {
        None => Ok(None),
        Some(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Ok(Some(pem.as_bytes().to_vec())),
        Some(_) => Err(DriverError::invalid_config(
            "config.ssl_root_cert must be the PEM text of a CA certificate (-----BEGIN CERTIFICATE-----)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn pool_settings_default_to_the_documented_values() {
        let empty = Map::new();
        let settings = Config::new(&empty).pool_settings().expect("defaults");
        assert_eq!(settings.max_connections, 5);
        assert_eq!(settings.connect_timeout, Duration::from_secs(30));
        assert_eq!(settings.idle_timeout, Duration::from_secs(600));
        assert_eq!(settings.max_lifetime, Duration::from_secs(3600));
        assert_eq!(settings.statement_timeout, Duration::from_secs(300));
    }

    #[test]
    fn out_of_range_pool_settings_are_invalid_config() {
        for bad in [
            json!({"max_connections": 0}),
            json!({"max_connections": 1000}),
            json!({"idle_timeout_seconds": 0}),
        ] {
            let config = map(bad);
            assert!(Config::new(&config).pool_settings().is_err());
        }
    }

    #[test]
    fn ssl_mode_defaults_to_prefer_or_require_when_ssl_is_enabled() {
        let config = map(json!({}));
        assert_eq!(
            ssl_mode(&Config::new(&config), &SslMode::ALL).expect("mode"),
            SslMode::Prefer
        );
        let config = map(json!({"ssl_enabled": true}));
        assert_eq!(
            ssl_mode(&Config::new(&config), &SslMode::ALL).expect("mode"),
            SslMode::Require
        );
        let config = map(json!({"ssl_enabled": true, "ssl_mode": "verify-full"}));
        assert_eq!(
            ssl_mode(&Config::new(&config), &SslMode::ALL).expect("mode"),
            SslMode::VerifyFull
        );
        let config = map(json!({"ssl_enabled": true, "ssl_mode": "disable"}));
        assert!(ssl_mode(&Config::new(&config), &SslMode::ALL).is_err());
        let config = map(json!({"ssl_mode": "allow"}));
        assert!(ssl_mode(&Config::new(&config), &SslMode::ALL[2..]).is_err());
    }

    #[test]
    fn a_root_cert_must_be_pem_text_not_a_path() {
        let config = map(json!({"ssl_root_cert": "/etc/ssl/private/server.key"}));
        assert!(root_cert(&Config::new(&config)).is_err());
    }
}
