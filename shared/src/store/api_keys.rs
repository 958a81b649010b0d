//! API keys (service accounts): [`ApiKey`] and the [`ApiKeyStore`]
//! aggregate trait.
//!
//! A key is stored only as the SHA-256 of its text (hex), computed by the
//! API; the text itself is shown once, at creation, and never stored. The
//! API reads the key by that hash on every request it authenticates, so a
//! revocation or an expiry takes effect at once on every API replica.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::OrgRole;
use crate::error::Result;

/// One API key of an organization: it acts as the service-account user
/// `svc_<uuid>` with `role`.
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    /// `key_…`.
    pub uuid: String,
    pub org_id: String,
    pub name: String,
    pub role: OrgRole,
    /// The first characters of the key (`fk_` and a few more), shown in
    /// lists so that a key can be told apart without revealing it.
    pub prefix: String,
    /// Lowercase hex SHA-256 of the whole key text.
    pub key_hash: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// When a request last authenticated with the key, to within a minute
    /// (see [`ApiKeyStore::record_api_key_use`]).
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// The user id requests authenticated with this key act as.
    pub fn service_user(&self) -> String {
        service_user(&self.uuid)
    }

    /// Whether the key may authenticate at `now`: not revoked and not
    /// expired (a key expires at `expires_at` exactly).
    pub fn is_usable_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// The user id of the service account of the key `uuid`: `svc_<uuid>`.
pub fn service_user(uuid: &str) -> String {
    format!("svc_{uuid}")
}

/// The hash is left out: it is no secret (the key has 238 bits of entropy)
/// but has no business in logs either.
impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("uuid", &self.uuid)
            .field("org_id", &self.org_id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("prefix", &self.prefix)
            .field("created_by", &self.created_by)
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// API keys, scoped by organization for management and found by hash for
/// authentication.
#[async_trait]
pub trait ApiKeyStore: Send + Sync + 'static {
    /// Inserts a key. An existing uuid or hash is `Error::Conflict`.
    async fn create_api_key(&self, key: &ApiKey) -> Result<()>;

    /// Every key of the organization, revoked and expired ones included,
    /// oldest first (then by uuid).
    async fn list_api_keys(&self, org_id: &str) -> Result<Vec<ApiKey>>;

    /// The key whose text hashes to `key_hash`, in any organization and
    /// state (the caller checks revocation and expiry).
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>>;

    /// Revokes the key at `at`; a key revoked before keeps its first
    /// `revoked_at`. Returns whether the key exists in this organization.
    async fn revoke_api_key(&self, org_id: &str, uuid: &str, at: DateTime<Utc>) -> Result<bool>;

    /// Sets `last_used_at` to `at` only when it is unset or older than
    /// `stale_before` (one conditional `UPDATE`): callers pass `at` minus a
    /// minute, so a busy key costs at most one write a minute, however many
    /// replicas serve it. Returns whether the row was written.
    async fn record_api_key_use(
        &self,
        uuid: &str,
        at: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<bool>;
}
