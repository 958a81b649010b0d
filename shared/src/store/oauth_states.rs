//! OAuth authorizations in progress: what `GET /api/oauth/{provider}/authorize`
//! stores and its callback takes back, in the store so that any API replica
//! can finish a flow another one started.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::domain::Sealed;
use crate::error::Result;

/// One authorization in progress, keyed by the hash of the state Ferry
/// sent to the provider (the state itself is never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthState {
    /// SHA-256 (hex) of Ferry's state.
    pub state_hash: String,
    /// The connector type being authorized (`snowflake`, ...).
    pub provider: String,
    pub org_id: String,
    pub user_id: String,
    pub display_name: String,
    /// The caller's own CSRF state, handed back on every redirect.
    pub caller_state: String,
    /// The public connector configuration the caller sent.
    pub config: Map<String, Value>,
    /// The redirect URI sent to the provider, repeated in the exchange.
    pub redirect_uri: String,
    /// The PKCE verifier, sealed by the vault with
    /// [`OAuthState::seal_context`] as associated data.
    pub verifier: Sealed,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl OAuthState {
    /// The associated data the verifier is sealed with: binds the sealed
    /// verifier to this one state.
    pub fn seal_context(state_hash: &str) -> String {
        format!("oauth_state:{state_hash}")
    }
}

/// Authorizations in progress.
#[async_trait]
pub trait OAuthStateStore: Send + Sync + 'static {
    /// Stores an authorization; a state hash already stored is
    /// `Error::Conflict`.
    async fn put_oauth_state(&self, state: &OAuthState) -> Result<()>;

    /// Removes and returns the authorization with this state hash, expired
    /// or not (the caller checks `expires_at`). One `DELETE … RETURNING`:
    /// of two concurrent takes, one gets the row and the other `None`.
    async fn take_oauth_state(&self, state_hash: &str) -> Result<Option<OAuthState>>;

    /// Deletes the authorizations that expired before `now`; returns how
    /// many.
    async fn purge_oauth_states(&self, now: DateTime<Utc>) -> Result<u64>;
}
