//! The sealed-secrets part of the store conformance suite: a key rotation
//! racing an update. The test functions are instantiated for both backends
//! by `conformance!` in the parent module.

use std::sync::Arc;

use ferry_shared::config::MasterKeys;
use ferry_shared::domain::{self, Connector, ConnectorStatus};
use ferry_shared::rotation::rotate_all;
use ferry_shared::store::Store;
use ferry_shared::vault::Vault;
use serde_json::{Map, Value, json};

use super::{ALICE, ORG, fetch_connector, new_connector};

const OLD: &str = "old:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NEW: &str = "new:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const LOST: &str = "lost:QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

fn vault(keys: &str) -> Vault {
    Vault::new(MasterKeys::parse(keys).expect("keys"))
}

fn password(value: &str) -> Map<String, Value> {
    json!({"password": value}).as_object().cloned().expect("object")
}

/// A connector whose secrets `vault` sealed, stored.
async fn sealed_connector(store: &Arc<dyn Store>, vault: &Vault, name: &str) -> Connector {
    let mut connector = new_connector(ORG, ALICE, "postgresql", name);
    connector.secrets = vault
        .seal(&connector.uuid, &password(&format!("pw-{name}")))
        .expect("seal");
    store
        .create_connector(&connector)
        .await
        .expect("create connector");
    connector
}

pub(super) async fn an_update_that_leaves_the_secrets_alone_keeps_the_ciphertext_a_rotation_wrote(
    store: Arc<dyn Store>,
) {
    let old = vault(OLD);
    let both = vault(&format!("{NEW},{OLD}"));
    let created = sealed_connector(&store, &old, "renamed").await;
    // An API request reads the row (secrets under the old key)…
    let read = fetch_connector(&store, ORG, &created.uuid).await.expect("exists");

    // …the rotation re-seals it under the new key…
    let rotation = rotate_all(store.as_ref(), &both).await.expect("rotate");
    assert_eq!((rotation.rotated, rotation.remaining), (1, 0));
    let rotated = fetch_connector(&store, ORG, &created.uuid)
        .await
        .expect("exists")
        .secrets;
    assert_eq!(rotated.key_id, "new");

    // …and the request then writes a rename and a disable from what it read.
    let renamed = Connector {
        display_name: "Renamed after rotation".to_owned(),
        updated_at: domain::now(),
        ..read.clone()
    };
    assert!(
        store
            .update_connector(&renamed, read.config_version)
            .await
            .expect("rename")
    );
    let disabled = Connector {
        status: ConnectorStatus::Disabled,
        disabled_at: Some(domain::now()),
        disabled_by: Some(ALICE.to_owned()),
        ..renamed.clone()
    };
    assert!(
        store
            .update_connector(&disabled, read.config_version)
            .await
            .expect("disable")
    );

    let stored = fetch_connector(&store, ORG, &created.uuid).await.expect("exists");
    assert_eq!(stored.display_name, "Renamed after rotation");
    assert_eq!(stored.status, ConnectorStatus::Disabled);
    assert_eq!(
        stored.secrets, rotated,
        "the old ciphertext the request read was not written back"
    );
    assert_eq!(
        vault(NEW)
            .open(&created.uuid, &stored.secrets)
            .expect("the new key alone reads it")
            .expose_secret(),
        &password("pw-renamed")
    );
    assert_eq!(
        store
            .count_connectors_sealed_with_other_key("new")
            .await
            .expect("count"),
        0
    );
}

pub(super) async fn a_configuration_change_writes_its_secrets_even_after_a_rotation(store: Arc<dyn Store>) {
    let old = vault(OLD);
    let both = vault(&format!("{NEW},{OLD}"));
    let created = sealed_connector(&store, &old, "patched").await;
    let read = fetch_connector(&store, ORG, &created.uuid).await.expect("exists");
    rotate_all(store.as_ref(), &both).await.expect("rotate");

    // A configuration change re-seals (under the writer's current key) and
    // moves the version: its secrets are the ones stored.
    let patched = Connector {
        secrets: both
            .seal(&created.uuid, &password("a-new-password"))
            .expect("seal"),
        config_version: read.config_version + 1,
        updated_at: domain::now(),
        ..read.clone()
    };
    assert!(
        store
            .update_connector(&patched, read.config_version)
            .await
            .expect("patch")
    );
    let stored = fetch_connector(&store, ORG, &created.uuid).await.expect("exists");
    assert_eq!(stored.secrets, patched.secrets);
    assert_eq!(
        both.open(&created.uuid, &stored.secrets)
            .expect("open")
            .expose_secret(),
        &password("a-new-password")
    );
}

pub(super) async fn rotation_skips_what_no_key_decrypts_and_its_final_count_reports_it(
    store: Arc<dyn Store>,
) {
    let old = vault(OLD);
    let lost = vault(LOST);
    let both = vault(&format!("{NEW},{OLD}"));
    for name in ["a", "b", "c"] {
        sealed_connector(&store, &old, name).await;
    }
    let orphan = sealed_connector(&store, &lost, "orphan").await;
    assert_eq!(
        store
            .count_connectors_sealed_with_other_key("new")
            .await
            .expect("count"),
        4
    );

    let rotation = rotate_all(store.as_ref(), &both).await.expect("rotate");
    assert_eq!(rotation.key_id, "new");
    assert_eq!(rotation.rotated, 3, "every decryptable secret was rotated");
    assert_eq!(rotation.undecryptable, 1);
    assert_eq!(rotation.remaining, 1, "the final count finds the orphan");
    assert!(!rotation.is_complete());
    let stored = fetch_connector(&store, ORG, &orphan.uuid).await.expect("exists");
    assert_eq!(stored.secrets, orphan.secrets, "left as it was");
}
