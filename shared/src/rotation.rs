//! Master-key rotation: re-encrypts every connector's secrets, and every
//! webhook's signing secret and headers, under the vault's current key,
//! then proves with a count that none remains under another key. Safe to
//! run while the API serves traffic: each replacement is a
//! compare-and-swap, so a concurrent update wins and is picked up again on
//! the next pass, and an update that leaves the secrets alone never writes
//! them back (see `Store::update_connector`); readers decrypt with any
//! configured key throughout.

use std::collections::HashSet;
use std::time::Duration;

use crate::Result;
use crate::store::Store;
use crate::vault::Vault;

/// Connectors rotated per store round trip.
const BATCH: i64 = 100;

/// Passes in a row that may lose every compare-and-swap to concurrent
/// writers before rotation stops and lets the final count report them.
const MAX_STALLED_PASSES: u32 = 20;

/// What a rotation did, and what its final count found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The key every secret is now sealed under.
    pub key_id: String,
    /// Connectors and webhooks whose secrets this run re-encrypted.
    pub rotated: u64,
    /// Connectors and webhooks whose secrets no configured key decrypts
    /// (left as they are).
    pub undecryptable: u64,
    /// Connectors and webhooks still sealed under another key after the
    /// run, counted by a final query: zero proves the rotation complete.
    pub remaining: u64,
}

impl Rotation {
    /// True when the final count found no secret under another key.
    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }
}

/// Re-encrypts every secret sealed under a key other than the current one,
/// then counts the secrets still under another key. A connector that no
/// configured key decrypts is skipped (and counted), never a reason to stop
/// rotating the others.
pub async fn rotate_all(store: &dyn Store, vault: &Vault) -> Result<Rotation> {
    let current = vault.current_key_id().to_owned();
    let mut rotated = 0u64;
    let mut skipped: HashSet<String> = HashSet::new();
    let mut stalled = 0u32;
    loop {
        let limit = BATCH.saturating_add(i64::try_from(skipped.len()).unwrap_or(i64::MAX));
        let batch = store.connectors_sealed_with_other_key(&current, limit).await?;
        let pending: Vec<_> = batch
            .into_iter()
            .filter(|connector| !skipped.contains(&connector.uuid))
            .collect();
        if pending.is_empty() {
            break;
        }
        let mut progressed = false;
        for connector in pending {
            let secrets = match vault.open(&connector.uuid, &connector.secrets) {
                Ok(secrets) => secrets,
                Err(error) => {
                    tracing::warn!(connector_uuid = %connector.uuid, key_id = %connector.secrets.key_id, %error, "connector secrets cannot be decrypted with any configured key; left as they are");
                    skipped.insert(connector.uuid);
                    progressed = true;
                    continue;
                }
            };
            let resealed = vault.seal(&connector.uuid, secrets.expose_secret())?;
            if store
                .replace_secrets(&connector.uuid, &connector.secrets, &resealed)
                .await?
            {
                rotated += 1;
                progressed = true;
                tracing::info!(connector_uuid = %connector.uuid, from = %connector.secrets.key_id, to = %current, "connector secrets re-encrypted");
            }
        }
        if progressed {
            stalled = 0;
        } else {
            // Every row in the batch changed under us; the next read sees
            // the new values. A writer that keeps sealing under another key
            // is left to the final count.
            stalled += 1;
            if stalled >= MAX_STALLED_PASSES {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10 * u64::from(stalled))).await;
        }
    }
    let webhooks = rotate_webhooks(store, vault, &current).await?;
    let remaining = store.count_connectors_sealed_with_other_key(&current).await?
        + store.count_webhooks_sealed_with_other_key(&current).await?;
    Ok(Rotation {
        key_id: current,
        rotated: rotated + webhooks.0,
        undecryptable: u64::try_from(skipped.len()).unwrap_or(u64::MAX) + webhooks.1,
        remaining,
    })
}

/// Re-encrypts the webhooks' signing secrets and headers under `current`
/// like the connectors' (compare-and-swap, undecryptable ones skipped);
/// returns how many were rotated and how many no key opens.
async fn rotate_webhooks(store: &dyn Store, vault: &Vault, current: &str) -> Result<(u64, u64)> {
    let mut rotated = 0u64;
    let mut skipped: HashSet<String> = HashSet::new();
    for _ in 0..MAX_STALLED_PASSES {
        let limit = BATCH.saturating_add(i64::try_from(skipped.len()).unwrap_or(i64::MAX));
        let batch = store.webhooks_sealed_with_other_key(current, limit).await?;
        let pending: Vec<_> = batch
            .into_iter()
            .filter(|webhook| !skipped.contains(&webhook.uuid))
            .collect();
        if pending.is_empty() {
            break;
        }
        for webhook in pending {
            let Ok(secrets) = vault.open(&webhook.uuid, &webhook.secrets) else {
                tracing::warn!(webhook_uuid = %webhook.uuid, key_id = %webhook.secrets.key_id, "webhook secret cannot be decrypted with any configured key; left as it is");
                skipped.insert(webhook.uuid);
                continue;
            };
            let resealed = vault.seal(&webhook.uuid, secrets.expose_secret())?;
            if store
                .replace_webhook_secrets(&webhook.uuid, &webhook.secrets, &resealed)
                .await?
            {
                rotated += 1;
            }
        }
    }
    Ok((rotated, u64::try_from(skipped.len()).unwrap_or(u64::MAX)))
}
