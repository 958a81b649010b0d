//! Sharing through the permissions API: a resource never loses its last
//! owner, decided in one transaction of the store.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, User, assert_error, spawn_app_on};

#[tokio::test]
async fn removing_or_demoting_the_last_owner_is_409() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    let project = app.create_project(&alice, "shared").await;
    let base = format!("/api/permissions/resource/project/{project}");

    assert_error(
        &app.delete(&alice, &format!("{base}/{}", alice.id)).await,
        StatusCode::CONFLICT,
        "conflict",
        None,
    );
    assert_error(
        &app.post(
            &alice,
            &base,
            json!({"user_id": alice.id, "permission": "editor"}),
        )
        .await,
        StatusCode::CONFLICT,
        "conflict",
        None,
    );

    // With a second owner, either may step down; then the other is the last.
    let shared = app
        .post(&alice, &base, json!({"user_id": bob.id, "permission": "owner"}))
        .await;
    assert_eq!(shared.status, StatusCode::CREATED, "{}", shared.text);
    let demoted = app
        .post(&bob, &base, json!({"user_id": alice.id, "permission": "viewer"}))
        .await;
    assert_eq!(demoted.status, StatusCode::CREATED, "{}", demoted.text);
    assert_error(
        &app.delete(&bob, &format!("{base}/{}", bob.id)).await,
        StatusCode::CONFLICT,
        "conflict",
        None,
    );
    let grants = app.get(&bob, &base).await;
    let owners: Vec<_> = grants.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|g| g["permission"] == "owner")
        .map(|g| g["user_id"].clone())
        .collect();
    assert_eq!(owners, [json!(bob.id)]);
    assert_error(
        &app.delete(&bob, &format!("{base}/user_nobody")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
}

#[tokio::test]
async fn two_owners_removing_each_other_at_once_leave_one_owner() {
    let app = spawn_app_on(Backend::Postgres).await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    for round in 0..12 {
        let connector = crate::executing::offline_connector(&app, &alice).await;
        let base = format!("/api/permissions/resource/connector/{connector}");
        let shared = app
            .post(&alice, &base, json!({"user_id": bob.id, "permission": "owner"}))
            .await;
        assert_eq!(shared.status, StatusCode::CREATED, "{}", shared.text);
        // Alice removes bob while bob demotes alice.
        let bob_path = format!("{base}/{}", bob.id);
        let remove_bob = app.delete(&alice, &bob_path);
        let demote_alice = app.post(&bob, &base, json!({"user_id": alice.id, "permission": "viewer"}));
        let (removed, demoted) = tokio::join!(remove_bob, demote_alice);
        let succeeded = [
            removed.status == StatusCode::NO_CONTENT,
            demoted.status == StatusCode::CREATED,
        ];
        assert_eq!(
            succeeded.iter().filter(|ok| **ok).count(),
            1,
            "round {round}: exactly one wins ({} / {}; {} / {})",
            removed.status,
            removed.text,
            demoted.status,
            demoted.text
        );
        let owners = app
            .store
            .list_grants(ferry_shared::domain::ResourceKind::Connector, &connector)
            .await
            .expect("grants")
            .into_iter()
            .filter(|g| g.role == ferry_shared::domain::Role::Owner)
            .count();
        assert_eq!(owners, 1, "round {round}");
    }
}
