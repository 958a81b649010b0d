//! API keys: minting, hashing and authenticating `fk_…` bearer tokens.
//!
//! A key is `fk_` and 40 random ASCII letters and digits (about 238 bits
//! from the thread's CSPRNG). Only its SHA-256 is stored: with that much
//! entropy a fast hash is as good as a slow one, and it lets the store find
//! the key by an index lookup.
//!
//! Every request with a key reads the key from the store, so a revocation
//! or an expiry is refused at once by every API replica; nothing is cached
//! in the process. `last_used_at` is written only when the stored value is
//! unset or more than [`LAST_USED_RESOLUTION`] old (one conditional
//! `UPDATE`), so a busy key costs one store write a minute however many
//! requests and replicas serve it, and the value is exact to within a
//! minute.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_shared::Error;
use ferry_shared::domain::{self, Principal};
use ferry_shared::store::{ApiKey, Store};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What every key starts with.
pub const KEY_PREFIX: &str = "fk_";
/// Random characters after [`KEY_PREFIX`].
const KEY_RANDOM_CHARS: usize = 40;
/// Random characters kept in the key's displayed `prefix`.
const DISPLAY_RANDOM_CHARS: usize = 8;
/// How stale `last_used_at` may be before a request writes it again.
pub const LAST_USED_RESOLUTION: Duration = Duration::from_secs(60);

/// A new key's text, shown to its creator once.
pub struct MintedKey {
    /// The whole key (`fk_…`).
    pub key: String,
    /// Its first characters, for lists.
    pub prefix: String,
    /// Its hash, what the store keeps.
    pub hash: String,
}

/// Mints a new random key.
pub fn mint() -> MintedKey {
    let random: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(KEY_RANDOM_CHARS)
        .map(char::from)
        .collect();
    let key = format!("{KEY_PREFIX}{random}");
    MintedKey {
        prefix: key[..KEY_PREFIX.len() + DISPLAY_RANDOM_CHARS].to_owned(),
        hash: hash(&key),
        key,
    }
}

/// The lowercase hex SHA-256 of a key's text.
pub fn hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether a bearer token is meant as an API key (rather than a JWT, whose
/// text starts with `eyJ`).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// Whether `key` has the shape of a minted key; anything else is refused
/// without a store read.
fn well_formed(key: &str) -> bool {
    key.strip_prefix(KEY_PREFIX).is_some_and(|random| {
        random.len() == KEY_RANDOM_CHARS && random.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// The caller a key authenticates: the service account `svc_<uuid>` of the
/// key's organization with the key's role. A malformed, unknown, revoked
/// or expired key is 401; a store that cannot be read is its own error
/// (503), never a refusal.
pub async fn authenticate(store: &dyn Store, key: &str) -> Result<Principal, ApiError> {
    if !well_formed(key) {
        return Err(unauthorized("the API key is malformed"));
    }
    let found = store
        .api_key_by_hash(&hash(key))
        .await?
        .ok_or_else(|| unauthorized("the API key is not valid"))?;
    let now = domain::now();
    if found.revoked_at.is_some() {
        return Err(unauthorized("the API key has been revoked"));
    }
    if !found.is_usable_at(now) {
        return Err(unauthorized("the API key has expired"));
    }
    record_use(store, &found, now).await;
    Ok(Principal {
        user_id: found.service_user(),
        org_id: found.org_id,
        org_role: found.role,
        email: None,
    })
}

/// Writes `last_used_at` when the stored value is unset or older than
/// [`LAST_USED_RESOLUTION`]; a failed write is logged, never the request's
/// failure.
async fn record_use(store: &dyn Store, key: &ApiKey, now: DateTime<Utc>) {
    let resolution = chrono::Duration::from_std(LAST_USED_RESOLUTION).unwrap_or(chrono::Duration::MAX);
    let stale_before = now - resolution;
    if key.last_used_at.is_some_and(|at| at >= stale_before) {
        return;
    }
    if let Err(error) = store.record_api_key_use(&key.uuid, now, stale_before).await {
        tracing::warn!(api_key = %key.uuid, %error, "recording the API key's last use failed");
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::Domain(Error::Unauthorized(message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_are_well_formed_distinct_and_hashed_as_sha256_hex() {
        let one = mint();
        let two = mint();
        assert_ne!(one.key, two.key);
        assert!(well_formed(&one.key), "{}", one.prefix);
        assert!(is_api_key(&one.key));
        assert!(one.key.starts_with(&one.prefix));
        assert_eq!(one.prefix.len(), 11);
        assert_eq!(one.hash, hash(&one.key));
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keys_of_another_shape_are_malformed() {
        let key = mint().key;
        for bad in [
            "",
            "fk_",
            &key[..key.len() - 1],
            &format!("{key}x"),
            &key.replacen("fk_", "FK_", 1),
            &format!("{}!", &key[..key.len() - 1]),
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
