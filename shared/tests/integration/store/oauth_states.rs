//! The OAuth authorizations part of the store conformance suite: a state
//! reads back whole exactly once, of concurrent takes exactly one wins, a
//! state hash is unique, and purging removes only expired authorizations.
//! Instantiated for both backends by its own `conformance!` (declared in
//! the parent module).

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ferry_shared::Error;
use ferry_shared::domain::Sealed;
use ferry_shared::store::{OAuthState, Store};
use serde_json::json;

use super::{ALICE, ORG, with_postgres, with_sqlite};

conformance!(
    an_oauth_state_reads_back_whole_once_and_then_is_gone,
    of_concurrent_takes_of_one_oauth_state_exactly_one_gets_it,
    an_oauth_state_hash_stored_twice_is_a_conflict,
    purging_removes_only_the_expired_oauth_states,
);

fn at(seconds: i64, micros: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
        .single()
        .expect("valid time")
        + Duration::seconds(seconds)
        + Duration::microseconds(micros)
}

fn state(hash: &str, created_at: DateTime<Utc>, ttl_seconds: i64) -> OAuthState {
    OAuthState {
        state_hash: format!("{hash:0>64}"),
        provider: "snowflake".to_owned(),
        org_id: ORG.to_owned(),
        user_id: ALICE.to_owned(),
        display_name: "Snowflake DW".to_owned(),
        caller_state: "csrf-token-123".to_owned(),
        config: json!({"account": "xy12345.us-east-1", "warehouse": "WH"})
            .as_object()
            .cloned()
            .expect("object"),
        redirect_uri: "https://ferry.example/api/oauth/snowflake/callback".to_owned(),
        verifier: Sealed {
            key_id: "k1".to_owned(),
            nonce: vec![1; 12],
            ciphertext: vec![7, 8, 9, 0, 255],
        },
        created_at,
        expires_at: created_at + Duration::seconds(ttl_seconds),
    }
}

async fn an_oauth_state_reads_back_whole_once_and_then_is_gone(store: Arc<dyn Store>) {
    let stored = state("a1", at(0, 123_456), 600);
    store.put_oauth_state(&stored).await.expect("put");
    let taken = store
        .take_oauth_state(&stored.state_hash)
        .await
        .expect("take")
        .expect("the state");
    assert_eq!(taken, stored);
    assert_eq!(
        store.take_oauth_state(&stored.state_hash).await.expect("take"),
        None
    );
    assert_eq!(
        store
            .take_oauth_state(&format!("{:0>64}", "b2"))
            .await
            .expect("take"),
        None,
        "an unknown hash"
    );
}

async fn of_concurrent_takes_of_one_oauth_state_exactly_one_gets_it(store: Arc<dyn Store>) {
    for round in 0..5 {
        let stored = state(&format!("c{round}"), at(round, 0), 600);
        store.put_oauth_state(&stored).await.expect("put");
        let takes: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let hash = stored.state_hash.clone();
                tokio::spawn(async move { store.take_oauth_state(&hash).await })
            })
            .collect();
        let mut winners = 0;
        for take in takes {
            if take.await.expect("join").expect("take").is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

async fn an_oauth_state_hash_stored_twice_is_a_conflict(store: Arc<dyn Store>) {
    let stored = state("d1", at(0, 0), 600);
    store.put_oauth_state(&stored).await.expect("put");
    let again = store.put_oauth_state(&state("d1", at(5, 0), 600)).await;
    assert!(matches!(again, Err(Error::Conflict { .. })), "{again:?}");
}

async fn purging_removes_only_the_expired_oauth_states(store: Arc<dyn Store>) {
    let expired = state("e1", at(0, 0), 600);
    let live = state("e2", at(100, 0), 600);
    store.put_oauth_state(&expired).await.expect("put");
    store.put_oauth_state(&live).await.expect("put");
    assert_eq!(store.purge_oauth_states(at(650, 0)).await.expect("purge"), 1);
    assert_eq!(
        store.take_oauth_state(&expired.state_hash).await.expect("take"),
        None
    );
    assert_eq!(
        store.take_oauth_state(&live.state_hash).await.expect("take"),
        Some(live)
    );
}
