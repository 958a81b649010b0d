//! The refresh bookkeeping of OAuth connectors: the non-secret expiry of
//! each connector's access token (read from its sealed tokens at a given
//! `config_version`) and the per-connector refresh lease that lets one
//! refresher at a time, in any process, spend a rotating refresh token.
//! See `shared/src/oauth_refresh.md`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Claim;
use crate::error::Result;

/// An OAuth connector whose tokens are due for a refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueToken {
    pub org_id: String,
    pub connector_uuid: String,
    pub token_expires_at: DateTime<Utc>,
    /// Transient failures since the last successful refresh.
    pub failures: i32,
}

/// An OAuth connector whose expiry has not been read at its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UntrackedToken {
    pub org_id: String,
    pub connector_uuid: String,
}

/// Refresh bookkeeping of OAuth connectors.
#[async_trait]
pub trait OAuthRefreshStore: Send + Sync + 'static {
    /// Up to `limit` OAuth connectors (any organization, `active`) whose
    /// token expiry was never recorded or was recorded at another
    /// `config_version` than the connector's.
    async fn untracked_oauth_tokens(&self, limit: i64) -> Result<Vec<UntrackedToken>>;

    /// Records the expiry read from the connector's tokens at
    /// `config_version` (none: the provider gave no expiry). A new version
    /// clears the failure count and the retry time.
    async fn track_oauth_token(
        &self,
        connector_uuid: &str,
        config_version: i64,
        token_expires_at: Option<DateTime<Utc>>,
    ) -> Result<()>;

    /// Up to `limit` `active` OAuth connectors whose token expires before
    /// `before`, whose recorded expiry is current (same `config_version`)
    /// and whose retry time (if any) is not after `now`; soonest first.
    async fn oauth_tokens_due(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueToken>>;

    /// Takes the refresh lease of a connector for `holder` until `until`:
    /// true when it was free, expired (`lease_until <= now`) or already
    /// `holder`'s. One conditional upsert, so of concurrent takers one wins.
    async fn acquire_refresh_lease(&self, claim: Claim<'_>) -> Result<bool>;

    /// Releases the lease if `holder` still holds it.
    async fn release_refresh_lease(&self, connector_uuid: &str, holder: &str) -> Result<()>;

    /// Records a failed refresh: `failures` + 1, no new attempt before
    /// `retry_at` (none: not until the connector changes), and why
    /// (`error`, never a token). Returns the new failure count.
    async fn record_refresh_failure(
        &self,
        connector_uuid: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<i32>;

    /// Why the last refresh of the connector failed, if it did and nothing
    /// changed since.
    async fn refresh_failure(&self, connector_uuid: &str) -> Result<Option<String>>;
}
