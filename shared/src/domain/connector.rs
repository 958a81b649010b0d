//! Connectors: stored credentials and settings for a user's database or
//! SaaS API. Secret fields never live here in clear text: they travel and
//! rest as a [`Sealed`] blob that only the vault opens.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ErrorKind;
use super::word::word_enum;

word_enum! {
    /// Connector lifecycle status (the seed's `active`, `disabled`, `error`).
    pub enum ConnectorStatus in "lowercase" {
        Active,
        Disabled,
        Error,
    }
}

/// Secret fields encrypted with AES-256-GCM under the master key `key_id`,
/// with the connector uuid as associated data. `ciphertext` includes the tag.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub key_id: String,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

word_enum! {
    /// The outcome of the last connection test.
    pub enum TestStatus in "lowercase" {
        Success,
        Failed,
    }
}

/// A stored connector. `config` holds only non-secret fields (a MongoDB
/// connection string appears with its password replaced by `****`);
/// `secrets` holds the sealed secret fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Connector {
    pub uuid: String,
    pub org_id: String,
    pub connector_type: String,
    pub display_name: String,
    pub config: Map<String, Value>,
    pub secrets: Sealed,
    /// Bumped on every config or secret change; pools are keyed by it.
    pub config_version: i64,
    pub status: ConnectorStatus,
    /// `credentials` or `oauth`.
    pub auth_type: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_tested_at: Option<DateTime<Utc>>,
    pub last_test_status: Option<TestStatus>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_by: Option<String>,
    pub disabled_reason: Option<String>,
}

impl Connector {
    /// The declaration of this connector's type (`None` only for a type
    /// that a newer Ferry stored and this one does not know).
    pub fn type_decl(&self) -> Option<&'static crate::connectors::ConnectorType> {
        crate::connectors::find(&self.connector_type)
    }
}

/// Why a connection test failed, in the seed's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFailure {
    /// `connection_refused`, `dns_error`, `timeout`, `tls_error`,
    /// `authentication_failed`, `database_not_found`, `blocked_address`,
    /// `not_found`, `invalid_config`, `unknown`.
    #[serde(rename = "type")]
    pub error_type: ErrorKind,
    /// Safe to show: never contains credentials or connection strings.
    pub message: String,
    /// The server's own error code, where it has one (e.g. `28P01`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// What a connection test reports (worker → API, and kept for health).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestOutcome {
    pub connector_uuid: String,
    pub tested_at: DateTime<Utc>,
    pub latency_ms: u64,
    /// Server version string, on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_time: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schemas_available: Option<Vec<String>>,
    /// Set when the test failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TestFailure>,
}

impl TestOutcome {
    pub fn status(&self) -> TestStatus {
        if self.error.is_some() {
            TestStatus::Failed
        } else {
            TestStatus::Success
        }
    }
}

/// A project whose steps use a connector (`usage` of the seed's 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorUsage {
    pub project_uuid: String,
    pub project_name: String,
    pub step_count: i64,
}

/// A validated connector list request, scoped to the caller.
#[derive(Debug, Clone)]
pub struct ConnectorListQuery {
    pub org_id: String,
    pub user_id: String,
    /// Admins see every connector of the organization.
    pub is_admin: bool,
    pub connector_type: Option<String>,
    pub status: Option<ConnectorStatus>,
}

/// One recorded connection test, as kept for health reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRecord {
    pub connector_uuid: String,
    pub tested_at: DateTime<Utc>,
    pub success: bool,
    pub latency_ms: i64,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
}

impl From<&TestOutcome> for TestRecord {
    /// The stored form of a test's or a probe's outcome.
    fn from(outcome: &TestOutcome) -> Self {
        TestRecord {
            connector_uuid: outcome.connector_uuid.clone(),
            tested_at: outcome.tested_at,
            success: outcome.error.is_none(),
            latency_ms: i64::try_from(outcome.latency_ms).unwrap_or(i64::MAX),
            error_type: outcome.error.as_ref().map(|e| e.error_type.as_str().to_owned()),
            error_message: outcome.error.as_ref().map(|e| e.message.clone()),
        }
    }
}
