//! Master-key rotation: re-encrypts every connector's secrets under the
//! vault's current key. Safe to run while the API serves traffic: each
//! replacement is a compare-and-swap, so a concurrent update wins and is
//! picked up again on the next pass; readers decrypt with any configured key
//! throughout.

use crate::Result;
use crate::store::Store;
use crate::vault::Vault;

/// Connectors rotated per store round trip.
const BATCH: i64 = 100;

/// Re-encrypts every secret sealed under a key other than the current one.
/// Returns how many connectors were rotated.
pub async fn rotate_all(store: &dyn Store, vault: &Vault) -> Result<u64> {
    let current = vault.current_key_id().to_owned();
    let mut rotated = 0u64;
    loop {
        let batch = store.connectors_sealed_with_other_key(&current, BATCH).await?;
        if batch.is_empty() {
            return Ok(rotated);
        }
        let mut progressed = false;
        for connector in batch {
            let secrets = vault.open(&connector.uuid, &connector.secrets)?;
            let resealed = vault.seal(&connector.uuid, &secrets)?;
            if store
                .replace_secrets(&connector.uuid, &connector.secrets, &resealed)
                .await?
            {
                rotated += 1;
                progressed = true;
                tracing::info!(connector_uuid = %connector.uuid, from = %connector.secrets.key_id, to = %current, "connector secrets re-encrypted");
            }
        }
        if !progressed {
            // Every row in the batch changed under us; the next read sees the new values.
            tokio::task::yield_now().await;
        }
    }
}
