//! Master-key rotation through the store: key ids change, reads work with
//! old and new keys mid-rotation, and only the new key is needed afterwards.

use std::sync::Arc;

use ferry_shared::config::MasterKeys;
use ferry_shared::domain::{Connector, ConnectorStatus};
use ferry_shared::ids::IdKind;
use ferry_shared::rotation::rotate_all;
use ferry_shared::store::{self, Store};
use ferry_shared::vault::Vault;
use serde_json::{Map, Value, json};

const OLD: &str = "old:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const NEW: &str = "new:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn vault(keys: &str) -> Vault {
    Vault::new(MasterKeys::parse(keys).expect("keys"))
}

fn secrets(i: usize) -> Map<String, Value> {
    json!({"password": format!("secret-number-{i}")})
        .as_object()
        .cloned()
        .expect("object")
}

async fn connector(store: &Arc<dyn Store>, vault: &Vault, i: usize) -> Connector {
    let uuid = IdKind::Connector.generate();
    let now = ferry_shared::domain::now();
    let connector = Connector {
        secrets: vault.seal(&uuid, &secrets(i)).expect("seal"),
        uuid,
        org_id: "org_rot".into(),
        connector_type: "postgresql".into(),
        display_name: format!("db {i}"),
        config: Map::new(),
        config_version: 1,
        status: ConnectorStatus::Active,
        auth_type: "credentials".into(),
        created_by: "user_rot".into(),
        created_at: now,
        updated_at: now,
        last_tested_at: None,
        last_test_status: None,
        disabled_at: None,
        disabled_by: None,
        disabled_reason: None,
    };
    store.create_connector(&connector).await.expect("create");
    connector
}

#[tokio::test]
async fn rotation_reencrypts_every_connector_and_the_new_key_alone_reads_them() {
    let dir = tempfile::tempdir().expect("dir");
    let store = store::connect(&format!("sqlite://{}/rot.db", dir.path().display()))
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    let old = vault(OLD);
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(connector(&store, &old, i).await);
    }

    // Mid-rotation: some rows under the new key, some under the old; a vault
    // with both keys reads every one.
    let both = vault(&format!("{NEW},{OLD}"));
    let first = &created[0];
    let resealed = both.seal(&first.uuid, &secrets(0)).expect("seal");
    assert!(
        store
            .replace_secrets(&first.uuid, &first.secrets, &resealed)
            .await
            .expect("swap")
    );
    for (i, c) in created.iter().enumerate() {
        let stored = store
            .get_connector("org_rot", &c.uuid)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(
            both.open(&c.uuid, &stored.secrets)
                .expect("open mid-rotation")
                .expose_secret(),
            &secrets(i)
        );
    }

    let rotation = rotate_all(store.as_ref(), &both).await.expect("rotate");
    assert_eq!((rotation.rotated, rotation.remaining), (4, 0));
    assert!(rotation.is_complete());
    assert_eq!(
        rotate_all(store.as_ref(), &both)
            .await
            .expect("rotate again")
            .rotated,
        0,
        "idempotent"
    );

    let new_only = vault(NEW);
    for (i, c) in created.iter().enumerate() {
        let stored = store
            .get_connector("org_rot", &c.uuid)
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(stored.secrets.key_id, "new");
        assert_eq!(
            new_only
                .open(&c.uuid, &stored.secrets)
                .expect("open with the new key only")
                .expose_secret(),
            &secrets(i)
        );
        assert!(
            old.open(&c.uuid, &stored.secrets).is_err(),
            "the old key alone no longer reads it"
        );
    }
}
