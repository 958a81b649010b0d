//! The connector type registry: every connector type Ferry knows, its config
//! schema (fields, kinds, defaults, which fields are secret), its auth kind
//! and features, and the validation of a config on create and PATCH.
//!
//! The schema is the whole truth: a config holds exactly the fields its type
//! lists, never a raw driver option string. Validation splits a config into
//! a public part (stored in clear, shown in responses) and the secret part
//! (sealed by [`crate::vault::Vault`]); drivers receive [`merge`] of both.
//!
//! Rules that hold for every type:
//! - an unknown field, a value of the wrong JSON type, an out-of-range
//!   integer, a value outside an enum, or an empty string is a
//!   `validation_error` whose `field` is `config.<name>` and whose `details`
//!   explain (never quoting the value: it might be a password);
//! - on create, `null` means absent; defaults are filled in and stored, so a
//!   stored config is complete;
//! - a field that only applies to some value of another field (e.g.
//!   `auth_token` when `auth_type` is `bearer`) is refused when sent with
//!   another value, and silently dropped when a PATCH makes a stored one
//!   inapplicable;
//! - `ssl_enabled` and `ssl_mode` (PostgreSQL, Redshift, MySQL) derive from
//!   each other: `ssl_enabled: true` alone means `ssl_mode: "require"`,
//!   `ssl_mode` alone sets `ssl_enabled` (true for `require`, `verify-ca`,
//!   `verify-full`); both absent means `false` / `"prefer"`. A contradiction
//!   (`true` with `disable`, `false` with an always-encrypting mode) is
//!   refused. `ssl_mode` is what drivers obey.
//! - a MongoDB `connection_string` is secret as a whole; the public config
//!   carries a copy with the password replaced by `****`.
//!
//! Each type is one declaration ([`ConnectorType`], in `registry.rs`) named
//! by a [`TypeId`]: the API's word for the type is written only on that
//! enum, and everything the roles ask about a type is answered by its
//! declaration — schema and defaults, documentation, category, auth kind,
//! the step types that can use it, the worker [`DriverFamily`] that serves
//! it (if any), its SQL placeholder style and its connection-test timeout
//! ([`ConnectorType::test_timeout`], the one rule the API and the worker
//! share). Adding a type is adding a variant, a declaration and, for a new
//! family, a worker folder.
//!
//! `documentation_url` is `/docs#connector-<type>`: the API's `/docs` page,
//! whose OpenAPI description carries each type's `documentation` under that
//! anchor.

mod formats;
pub mod oauth;
mod registry;
mod validate;

use std::sync::LazyLock;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use strum::{Display, EnumProperty, IntoStaticStr, VariantArray};

pub use formats::REDACTED_PASSWORD;

use crate::domain::StepType;
use crate::domain::params::Placeholder;
use crate::domain::word::word_enum;

word_enum! {
    /// A connector type, as the API spells it (`postgresql`, `rest_api`, ...):
    /// the one place these words are written. Parse with `str::parse` (exact,
    /// case-sensitive); [`TypeId::decl`] gives the type's declaration.
    pub enum TypeId in "snake_case" {
        Postgresql,
        Redshift,
        Mysql,
        Mongodb,
        Redis,
        RestApi,
        Sqlite,
        Databricks,
        Bigquery,
        Snowflake,
        Salesforce,
        Hubspot,
        Stripe,
        GoogleAnalytics,
        Azure,
    }
}

impl TypeId {
    /// This type's declaration in the registry.
    pub fn decl(self) -> &'static ConnectorType {
        registry()
            .iter()
            .find(|t| t.type_id == self)
            .unwrap_or_else(|| unreachable!("every TypeId is declared in the registry (tested)"))
    }
}

/// The worker driver family that serves a connector type: one folder of
/// the worker each (PostgreSQL serves `postgresql` and `redshift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Display, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum DriverFamily {
    Postgres,
    Mysql,
    Sqlite,
    Mongodb,
    Redis,
    Rest,
    Databricks,
    Snowflake,
    Bigquery,
    /// The OAuth SaaS vendors' APIs (`saas_extract`).
    Saas,
}

/// The `category` of a connector type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Display, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Category {
    Database,
    DataWarehouse,
    Crm,
    Payments,
    Analytics,
    Cloud,
    Api,
}

/// Features a type advertises beside the step types that can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Display, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Capability {
    Streaming,
    Partitioning,
}

word_enum! {
    /// How a connector authenticates: credentials in its config, or an OAuth
    /// grant obtained through `/api/oauth/{provider}`.
    pub enum AuthKind in "lowercase" {
        Credentials,
        OAuth,
    }
}

/// Seconds a connection test may take when a type has no timeout field
/// (and the default of the ones that do).
pub const DEFAULT_TEST_TIMEOUT_SECONDS: u64 = 30;

/// Defaults of connector fields, each written once: the registry's
/// declarations take their `default`s from here, and drivers read them
/// through the declaration ([`ConnectorType::default_value`]) or, for a
/// value no field declares (MongoDB's port), from here.
pub mod defaults {
    /// Pool and timeout fields every database type accepts.
    pub const CONNECTION_TIMEOUT_SECONDS: u64 = super::DEFAULT_TEST_TIMEOUT_SECONDS;
    pub const MAX_CONNECTIONS: u64 = 5;
    pub const IDLE_TIMEOUT_SECONDS: u64 = 600;
    pub const MAX_LIFETIME_SECONDS: u64 = 3600;
    pub const STATEMENT_TIMEOUT_SECONDS: u64 = 300;
    /// `rest_api`'s `timeout_seconds`.
    pub const REST_TIMEOUT_SECONDS: u64 = 30;
    /// `port` of `postgresql`.
    pub const POSTGRESQL_PORT: u16 = 5432;
    /// `port` of `redshift`.
    pub const REDSHIFT_PORT: u16 = 5439;
    /// `port` of `mysql`.
    pub const MYSQL_PORT: u16 = 3306;
    /// `charset` of `mysql`.
    pub const MYSQL_CHARSET: &str = "utf8mb4";
    /// `port` of `databricks` (HTTPS).
    pub const DATABRICKS_PORT: u16 = 443;
    /// `port` of `redis`.
    pub const REDIS_PORT: u16 = 6379;
    /// The port of a host in a MongoDB connection string that names none
    /// (`mongodb` has no port field).
    pub const MONGODB_PORT: u16 = 27017;
    /// `auth_source` of `mongodb`.
    pub const MONGODB_AUTH_SOURCE: &str = "admin";
}

/// What a field's value must be. Every string kind refuses the empty string.
/// Each kind's JSON Schema words (`json_type`, default `string`; `format`;
/// `pattern`) are written on the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumProperty)]
pub enum FieldKind {
    /// Free text: no control characters (secrets: no NUL), bounded length.
    String,
    /// A JSON integer in `min..=max`.
    #[strum(props(json_type = "integer"))]
    Integer { min: i64, max: i64 },
    #[strum(props(json_type = "boolean"))]
    Boolean,
    /// One of these strings, exactly.
    Enum(&'static [&'static str]),
    /// A JSON object mapping strings to strings.
    #[strum(props(json_type = "object"))]
    Object,
    /// One or more PEM `CERTIFICATE` blocks (no other PEM block).
    #[strum(props(format = "pem-certificate"))]
    Pem,
    /// An absolute `http`/`https` URL with a host, without user info, query
    /// or fragment.
    #[strum(props(format = "uri"))]
    Url,
    /// A DNS name or an IP address (IPv6 without brackets), nothing else.
    #[strum(props(format = "hostname"))]
    Host,
    /// Letters, digits and `_`.
    #[strum(props(pattern = "^[A-Za-z0-9_]+$"))]
    Word,
    /// Letters, digits, `.`, `_`, `-`, starting with a letter or digit: ids
    /// that drivers place into URLs (accounts, projects, tenants).
    #[strum(props(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]*$"))]
    Name,
    /// A URL path starting with a single `/`.
    #[strum(props(format = "uri-path"))]
    UrlPath,
    /// A file path without `..`, `:`, `?`, `#` or control characters.
    #[strum(props(format = "path"))]
    FilePath,
    /// A MongoDB connection string (see [`ConnectorType`] docs of `mongodb`);
    /// when secret, the public config receives a redacted copy.
    #[strum(props(format = "mongodb-uri"))]
    MongoUri,
    /// An HTTP header map (string → string; no credentials or framing
    /// headers, no line breaks).
    #[strum(props(json_type = "object", format = "http-headers"))]
    Headers,
}

impl FieldKind {
    fn json_type(self) -> &'static str {
        self.get_str("json_type").unwrap_or("string")
    }

    fn format(self) -> Option<&'static str> {
        self.get_str("format")
    }

    fn pattern(self) -> Option<&'static str> {
        self.get_str("pattern")
    }
}

/// When a field must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Optional,
    Required,
    /// Required when another field has one of these values (booleans
    /// compare as `"true"` / `"false"`).
    RequiredWhen {
        field: &'static str,
        values: &'static [&'static str],
    },
}

/// "Another field has one of these values".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    pub field: &'static str,
    pub values: &'static [&'static str],
}

impl Condition {
    /// Whether `config` satisfies the condition.
    pub fn holds(&self, config: &Map<String, Value>) -> bool {
        config
            .get(self.field)
            .and_then(condition_text)
            .is_some_and(|v| self.values.contains(&v.as_str()))
    }
}

fn condition_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One config field of a connector type.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSpec {
    pub name: &'static str,
    /// Human name used in messages ("Host is required for ...").
    pub label: &'static str,
    pub kind: FieldKind,
    pub required: Requirement,
    /// Filled in when the field is absent (and restored by a PATCH `null`).
    pub default: Option<Value>,
    /// Sealed by the vault, never returned.
    pub secret: bool,
    /// Says where the connector connects (host, port, database, a base or
    /// token URL, a connection string, a file): a PATCH that changes it must
    /// send the connector's secrets again, so that stored credentials never
    /// go to an endpoint someone chose without knowing them.
    pub endpoint: bool,
    /// The field is only meaningful under this condition: sending it
    /// otherwise is an error.
    pub applies_when: Option<Condition>,
    pub description: &'static str,
}

impl FieldSpec {
    /// An optional, non-secret field without default.
    pub(crate) fn new(
        name: &'static str,
        label: &'static str,
        kind: FieldKind,
        description: &'static str,
    ) -> Self {
        FieldSpec {
            name,
            label,
            kind,
            required: Requirement::Optional,
            default: None,
            secret: false,
            endpoint: false,
            applies_when: None,
            description,
        }
    }

    pub(crate) fn required(mut self) -> Self {
        self.required = Requirement::Required;
        self
    }

    pub(crate) fn default(mut self, value: Value) -> Self {
        self.default = Some(value);
        self
    }

    pub(crate) fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    pub(crate) fn endpoint(mut self) -> Self {
        self.endpoint = true;
        self
    }

    pub(crate) fn required_when(mut self, field: &'static str, values: &'static [&'static str]) -> Self {
        self.required = Requirement::RequiredWhen { field, values };
        self
    }

    /// Required under the condition and meaningless otherwise.
    pub(crate) fn only_when(self, field: &'static str, values: &'static [&'static str]) -> Self {
        self.required_when(field, values).applies_when(field, values)
    }

    pub(crate) fn applies_when(mut self, field: &'static str, values: &'static [&'static str]) -> Self {
        self.applies_when = Some(Condition { field, values });
        self
    }

    /// The JSON description of this field in `available_types`.
    pub fn schema_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), json!(self.kind.json_type()));
        if let Some(format) = self.kind.format() {
            out.insert("format".into(), json!(format));
        }
        if let Some(pattern) = self.kind.pattern() {
            out.insert("pattern".into(), json!(pattern));
        }
        match self.kind {
            FieldKind::Integer { min, max } => {
                out.insert("minimum".into(), json!(min));
                out.insert("maximum".into(), json!(max));
            }
            FieldKind::Enum(values) => {
                out.insert("enum".into(), json!(values));
            }
            _ => {}
        }
        out.insert("label".into(), json!(self.label));
        out.insert("required".into(), json!(self.required == Requirement::Required));
        if let Requirement::RequiredWhen { field, values } = self.required {
            out.insert("required_when".into(), json!({ field: values }));
        }
        if let Some(Condition { field, values }) = self.applies_when {
            out.insert("applies_when".into(), json!({ field: values }));
        }
        if let Some(default) = &self.default {
            out.insert("default".into(), default.clone());
        }
        out.insert("secret".into(), json!(self.secret));
        out.insert("endpoint".into(), json!(self.endpoint));
        out.insert("description".into(), json!(self.description));
        Value::Object(out)
    }
}

/// A config split for storage: `public` is stored in clear and shown;
/// `secrets` is sealed by the vault and never shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitConfig {
    pub public: Map<String, Value>,
    pub secrets: Map<String, Value>,
}

impl SplitConfig {
    /// The config as a driver needs it (see [`merge`]).
    pub fn merged(&self) -> Map<String, Value> {
        merge(&self.public, &self.secrets)
    }
}

/// One connector type of the registry: its declaration. Everything the
/// roles ask about a type is answered here.
#[derive(Debug, Clone)]
pub struct ConnectorType {
    /// The `type` of the API.
    pub type_id: TypeId,
    pub name: &'static str,
    pub description: &'static str,
    pub category: Category,
    pub auth_type: AuthKind,
    /// The step types that can use it.
    pub steps: &'static [StepType],
    /// Features advertised after the step types (see [`Self::features`]).
    pub capabilities: &'static [Capability],
    /// Help text: what the fields mean, TLS modes, where secrets go.
    pub documentation: &'static str,
    /// `/docs#connector-<type>`.
    pub documentation_url: String,
    pub fields: Vec<FieldSpec>,
    /// Has the `ssl_enabled` / `ssl_mode` pair (see the module docs).
    pub ssl_pair: bool,
    /// The worker driver family that serves it; `None` when no worker has a
    /// driver yet (connection tests are then refused, not faked).
    pub driver: Option<DriverFamily>,
    /// How `sql_query` steps on it spell positional parameters; `None` when
    /// Ferry runs no SQL on it.
    pub placeholder: Option<Placeholder>,
    /// The integer field (seconds) that bounds a connection test; see
    /// [`Self::test_timeout`].
    pub test_timeout_field: Option<&'static str>,
}

static REGISTRY: LazyLock<Vec<ConnectorType>> = LazyLock::new(registry::build);

/// Every connector type, in a stable order (credentials types first, then
/// OAuth types, then Ferry's additions).
pub fn registry() -> &'static [ConnectorType] {
    &REGISTRY
}

/// The connector type called `type_id` (the API's word).
pub fn find(type_id: &str) -> Option<&'static ConnectorType> {
    TypeId::parse(type_id).map(TypeId::decl)
}

/// The config as a driver needs it: `public` with `secrets` laid over it
/// (so a MongoDB `connection_string` is the real one, not the redacted copy).
pub fn merge(public: &Map<String, Value>, secrets: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = public.clone();
    merged.extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
    merged
}

impl ConnectorType {
    /// Whether a worker has a driver for this type.
    pub fn has_driver(&self) -> bool {
        self.driver.is_some()
    }

    /// Whether steps of `step_type` can use connectors of this type.
    pub fn accepts(&self, step_type: StepType) -> bool {
        self.steps.contains(&step_type)
    }

    /// The `features` of `available_types`: the step types that can use the
    /// type, then its other capabilities.
    pub fn features(&self) -> Vec<&'static str> {
        self.steps
            .iter()
            .map(|s| s.as_str())
            .chain(self.capabilities.iter().map(|c| -> &'static str { c.into() }))
            .collect()
    }

    /// The default of field `name`, if it has one.
    pub fn default_value(&self, name: &str) -> Option<&Value> {
        self.field(name).and_then(|f| f.default.as_ref())
    }

    /// The default of integer field `name`, if it has a non-negative one.
    pub fn default_u64(&self, name: &str) -> Option<u64> {
        self.default_value(name).and_then(Value::as_u64)
    }

    /// How long a connection test of a connector with `config` may take in
    /// all: the value of [`Self::test_timeout_field`] in `config`, else that
    /// field's default, else [`DEFAULT_TEST_TIMEOUT_SECONDS`]. The API (its
    /// wait) and the worker (its bound) both use this rule.
    pub fn test_timeout(&self, config: &Map<String, Value>) -> Duration {
        let seconds = self
            .test_timeout_field
            .and_then(|field| {
                config
                    .get(field)
                    .and_then(Value::as_u64)
                    .or_else(|| self.default_u64(field))
            })
            .unwrap_or(DEFAULT_TEST_TIMEOUT_SECONDS);
        Duration::from_secs(seconds)
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Names of the fields that say where the connector connects (see
    /// [`FieldSpec::endpoint`]).
    pub fn endpoint_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.fields.iter().filter(|f| f.endpoint).map(|f| f.name)
    }

    /// Names of the secret fields.
    pub fn secret_fields(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.fields.iter().filter(|f| f.secret).map(|f| f.name)
    }

    /// Validates the config of a new connector: unknown fields, missing
    /// required ones, wrong types, out-of-range integers, values outside an
    /// enum and malformed formats are `validation_error`s naming
    /// `config.<name>`. Defaults are applied; secret fields are moved into
    /// `secrets`. `null` counts as absent.
    pub fn validate_new(&self, config: &Map<String, Value>) -> crate::Result<SplitConfig> {
        validate::validate_new(self, config)
    }

    /// Validates a PATCH: `patch` is merged over the stored config (`public`
    /// plus the opened `secrets`) key by key and the result is validated like
    /// a new config.
    ///
    /// - `null` clears an optional field (restoring its default, if it has
    ///   one) and is an error for a required one;
    /// - an omitted secret keeps the stored one; so does a MongoDB
    ///   `connection_string` sent back exactly as its public (redacted)
    ///   copy, while any other string with the `****` password is refused;
    /// - when the patch changes `ssl_enabled` alone and the stored `ssl_mode`
    ///   is the one it implied (`prefer` / `require`), `ssl_mode` is derived
    ///   again (and vice versa);
    /// - stored keys that the schema does not know (e.g. OAuth tokens the
    ///   OAuth flow keeps with the secrets) are carried over untouched; a
    ///   patch cannot set them.
    pub fn validate_patch(
        &self,
        public: &Map<String, Value>,
        secrets: &Map<String, Value>,
        patch: &Map<String, Value>,
    ) -> crate::Result<SplitConfig> {
        validate::validate_patch(self, public, secrets, patch)
    }

    /// The config as a driver needs it: public merged with secrets.
    pub fn merge(public: &Map<String, Value>, secrets: &Map<String, Value>) -> Map<String, Value> {
        merge(public, secrets)
    }

    /// The config schema for `available_types`: field name →
    /// `{type, format?, pattern?, minimum?, maximum?, enum?, label, required,
    /// required_when?, applies_when?, default?, secret, description}`.
    pub fn schema_json(&self) -> Value {
        Value::Object(
            self.fields
                .iter()
                .map(|f| (f.name.to_owned(), f.schema_json()))
                .collect(),
        )
    }

    /// One `available_types` entry: the seed's fields (`type`, `name`,
    /// `description`, `category`, `auth_type`, `features`,
    /// `documentation_url`) plus `documentation` and `config_schema`.
    pub fn summary_json(&self) -> Value {
        json!({
            "type": self.type_id,
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "auth_type": self.auth_type,
            "features": self.features(),
            "documentation_url": self.documentation_url,
            "documentation": self.documentation,
            "config_schema": self.schema_json(),
        })
    }
}

#[cfg(test)]
mod tests;
