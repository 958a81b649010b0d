//! The API keys part of the store conformance suite: keys read back whole,
//! by organization and by hash; uuids and hashes are unique; revocation is
//! scoped to the organization and keeps its first time; the last use is
//! written only when the stored one is stale. Instantiated for both
//! backends by its own `conformance!` (declared in the parent module).

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ferry_shared::Error;
use ferry_shared::domain::OrgRole;
use ferry_shared::ids::IdKind;
use ferry_shared::store::{ApiKey, Store};

use super::{ALICE, ORG, OTHER_ORG, with_postgres, with_sqlite};

conformance!(
    api_keys_read_back_whole_by_organization_oldest_first_and_by_hash,
    an_api_key_with_an_existing_uuid_or_hash_is_a_conflict,
    revoking_an_api_key_is_scoped_to_its_organization_and_keeps_the_first_time,
    the_last_use_is_written_only_when_the_stored_one_is_older_than_the_threshold,
);

fn at(seconds: i64, micros: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
        .single()
        .expect("valid time")
        + Duration::seconds(seconds)
        + Duration::microseconds(micros)
}

fn new_key(org_id: &str, name: &str, role: OrgRole, created_at: DateTime<Utc>) -> ApiKey {
    let uuid = IdKind::ApiKey.generate();
    ApiKey {
        key_hash: format!("{:0>64}", uuid.to_ascii_lowercase().replace('_', "")),
        prefix: "fk_AbCdEfGh".to_owned(),
        uuid,
        org_id: org_id.to_owned(),
        name: name.to_owned(),
        role,
        created_by: ALICE.to_owned(),
        created_at,
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
    }
}

async fn stored(store: &Arc<dyn Store>, key: &ApiKey) -> ApiKey {
    store
        .api_key_by_hash(&key.key_hash)
        .await
        .expect("read by hash")
        .expect("the key exists")
}

async fn api_keys_read_back_whole_by_organization_oldest_first_and_by_hash(store: Arc<dyn Store>) {
    let mut full = new_key(ORG, "nightly export", OrgRole::Admin, at(10, 123_456));
    full.last_used_at = Some(at(20, 1));
    full.expires_at = Some(at(3600, 999_999));
    full.revoked_at = Some(at(30, 500_000));
    let older = new_key(ORG, "dashboards", OrgRole::Member, at(5, 0));
    let elsewhere = new_key(OTHER_ORG, "theirs", OrgRole::Admin, at(1, 0));
    for key in [&full, &older, &elsewhere] {
        store.create_api_key(key).await.expect("create");
    }

    let listed = store.list_api_keys(ORG).await.expect("list");
    assert_eq!(listed, vec![older.clone(), full.clone()]);
    assert_eq!(stored(&store, &full).await, full);
    assert_eq!(stored(&store, &elsewhere).await, elsewhere);
    assert_eq!(
        store.list_api_keys(OTHER_ORG).await.expect("list"),
        vec![elsewhere]
    );
    assert!(store.list_api_keys("org_nobody").await.expect("list").is_empty());
    assert_eq!(store.api_key_by_hash(&"0".repeat(64)).await.expect("read"), None);
}

async fn an_api_key_with_an_existing_uuid_or_hash_is_a_conflict(store: Arc<dyn Store>) {
    let key = new_key(ORG, "first", OrgRole::Member, at(0, 0));
    store.create_api_key(&key).await.expect("create");

    let mut same_uuid = new_key(ORG, "same uuid", OrgRole::Member, at(1, 0));
    same_uuid.uuid = key.uuid.clone();
    let mut same_hash = new_key(ORG, "same hash", OrgRole::Member, at(2, 0));
    same_hash.key_hash = key.key_hash.clone();
    for duplicate in [same_uuid, same_hash] {
        match store.create_api_key(&duplicate).await {
            Err(Error::Conflict { .. }) => {}
            other => panic!("expected a conflict for {}, got {other:?}", duplicate.name),
        }
    }
    assert_eq!(store.list_api_keys(ORG).await.expect("list"), vec![key]);
}

async fn revoking_an_api_key_is_scoped_to_its_organization_and_keeps_the_first_time(store: Arc<dyn Store>) {
    let key = new_key(ORG, "revoked", OrgRole::Admin, at(0, 0));
    let other = new_key(ORG, "kept", OrgRole::Admin, at(1, 0));
    store.create_api_key(&key).await.expect("create");
    store.create_api_key(&other).await.expect("create");

    assert!(
        !store
            .revoke_api_key(OTHER_ORG, &key.uuid, at(5, 0))
            .await
            .expect("revoke"),
        "another organization's key is not found"
    );
    assert!(
        !store
            .revoke_api_key(ORG, &IdKind::ApiKey.generate(), at(5, 0))
            .await
            .expect("revoke")
    );
    assert_eq!(stored(&store, &key).await.revoked_at, None);

    assert!(
        store
            .revoke_api_key(ORG, &key.uuid, at(10, 7))
            .await
            .expect("revoke")
    );
    assert!(
        store
            .revoke_api_key(ORG, &key.uuid, at(20, 0))
            .await
            .expect("revoke again"),
        "a revoked key still exists"
    );
    assert_eq!(stored(&store, &key).await.revoked_at, Some(at(10, 7)));
    assert_eq!(stored(&store, &other).await.revoked_at, None);
}

async fn the_last_use_is_written_only_when_the_stored_one_is_older_than_the_threshold(store: Arc<dyn Store>) {
    let key = new_key(ORG, "busy", OrgRole::Member, at(0, 0));
    store.create_api_key(&key).await.expect("create");
    let minute = Duration::seconds(60);
    let used = |now: DateTime<Utc>| {
        let store = store.clone();
        let uuid = key.uuid.clone();
        async move {
            store
                .record_api_key_use(&uuid, now, now - minute)
                .await
                .expect("record use")
        }
    };

    assert!(used(at(100, 0)).await, "never used: written");
    assert!(!used(at(130, 0)).await, "30 s later: kept");
    assert!(!used(at(160, 0)).await, "exactly a minute later: kept");
    assert_eq!(stored(&store, &key).await.last_used_at, Some(at(100, 0)));
    assert!(used(at(160, 1)).await, "over a minute later: written");
    assert_eq!(stored(&store, &key).await.last_used_at, Some(at(160, 1)));
    assert!(
        !store
            .record_api_key_use(&IdKind::ApiKey.generate(), at(500, 0), at(440, 0))
            .await
            .expect("record use"),
        "an unknown key writes nothing"
    );
}
