//! OAuth authorizations in progress: [`OAuthStateStore`] for [`SqlStore`].
//! Each statement is one write; taking a state is a `DELETE … RETURNING`,
//! so a state is used at most once however many replicas race for it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;

use super::db::Sql;
use super::{SqlStore, constraint_error};
use crate::domain::Sealed;
use crate::error::Result;
use crate::store::oauth_states::{OAuthState, OAuthStateStore};

/// The columns of an [`OAuthStateRow`].
macro_rules! columns {
    () => {
        "state_hash, provider, org_id, user_id, display_name, caller_state, config, redirect_uri, \
         verifier_key_id, verifier_nonce, verifier_ciphertext, created_at, expires_at"
    };
}

#[derive(sqlx::FromRow)]
struct OAuthStateRow {
    state_hash: String,
    provider: String,
    org_id: String,
    user_id: String,
    display_name: String,
    caller_state: String,
    config: Json<Map<String, Value>>,
    redirect_uri: String,
    verifier_key_id: String,
    verifier_nonce: Vec<u8>,
    verifier_ciphertext: Vec<u8>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

impl From<OAuthStateRow> for OAuthState {
    fn from(row: OAuthStateRow) -> Self {
        OAuthState {
            state_hash: row.state_hash,
            provider: row.provider,
            org_id: row.org_id,
            user_id: row.user_id,
            display_name: row.display_name,
            caller_state: row.caller_state,
            config: row.config.0,
            redirect_uri: row.redirect_uri,
            verifier: Sealed {
                key_id: row.verifier_key_id,
                nonce: row.verifier_nonce,
                ciphertext: row.verifier_ciphertext,
            },
            created_at: row.created_at,
            expires_at: row.expires_at,
        }
    }
}

#[async_trait]
impl OAuthStateStore for SqlStore {
    async fn put_oauth_state(&self, state: &OAuthState) -> Result<()> {
        Sql::new(concat!(
            "INSERT INTO oauth_states (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(&state.state_hash)
        .bind(&state.provider)
        .bind(&state.org_id)
        .bind(&state.user_id)
        .bind(&state.display_name)
        .bind(&state.caller_state)
        .bind(Json(&state.config))
        .bind(&state.redirect_uri)
        .bind(&state.verifier.key_id)
        .bind(&state.verifier.nonce)
        .bind(&state.verifier.ciphertext)
        .bind(state.created_at)
        .bind(state.expires_at)
        .execute(&self.pool)
        .await
        .map_err(constraint_error)?;
        Ok(())
    }

    async fn take_oauth_state(&self, state_hash: &str) -> Result<Option<OAuthState>> {
        let row: Option<OAuthStateRow> = Sql::new(concat!(
            "DELETE FROM oauth_states WHERE state_hash = $1 RETURNING ",
            columns!()
        ))
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(OAuthState::from))
    }

    async fn purge_oauth_states(&self, now: DateTime<Utc>) -> Result<u64> {
        Ok(Sql::new("DELETE FROM oauth_states WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?)
    }
}
