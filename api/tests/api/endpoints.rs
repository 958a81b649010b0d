//! Credentials never go to an endpoint someone chose without them: a PATCH
//! that changes where a connector connects must send its secrets again.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, User, assert_error, spawn_app};

async fn create(app: &TestApp, user: &User, connector_type: &str, config: Value) -> String {
    let reply = app
        .post(
            user,
            "/api/connectors",
            json!({"type": connector_type, "display_name": "target", "config": config, "test_connection": false}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["uuid"].as_str().expect("uuid").to_owned()
}

async fn patch(app: &TestApp, user: &User, uuid: &str, config: Value) -> crate::helpers::Reply {
    app.call(
        user,
        Method::PATCH,
        &format!("/api/connectors/{uuid}"),
        Some(json!({"config": config, "test_connection": false})),
    )
    .await
}

#[tokio::test]
async fn moving_a_sql_connector_without_its_password_is_400_naming_the_password() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let uuid = create(
        &app,
        &alice,
        "postgresql",
        json!({"host": "db.internal", "port": 5432, "database": "sales", "username": "ferry", "password": "s3cret-pw"}),
    )
    .await;
    for moved in [
        json!({"host": "attacker.example"}),
        json!({"port": 6543}),
        json!({"database": "other"}),
        json!({"host": "attacker.example", "username": "ferry"}),
    ] {
        let reply = patch(&app, &alice, &uuid, moved.clone()).await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "validation_error",
            Some("config.password"),
        );
        assert!(!reply.text.contains("s3cret-pw"), "{}", reply.text);
    }
    let unchanged = app.get(&alice, &format!("/api/connectors/{uuid}")).await;
    assert_eq!(unchanged.body["config"]["host"], "db.internal");
    assert_eq!(unchanged.body["config"]["port"], 5432);

    // Settings that do not move it need no secret; the same host is no move.
    let tuned = patch(
        &app,
        &alice,
        &uuid,
        json!({"max_connections": 2, "host": "db.internal"}),
    )
    .await;
    assert_eq!(tuned.status, StatusCode::OK, "{}", tuned.text);
    // With the password, the move is allowed.
    let moved = patch(
        &app,
        &alice,
        &uuid,
        json!({"host": "db2.internal", "password": "other-pw"}),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
    assert_eq!(moved.body["config"]["host"], "db2.internal");
}

#[tokio::test]
async fn moving_a_rest_api_or_redis_connector_needs_its_secrets_again() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let rest = create(
        &app,
        &alice,
        "rest_api",
        json!({"base_url": "https://api.example.com", "auth_type": "bearer", "auth_token": "tok-123"}),
    )
    .await;
    assert_error(
        &patch(
            &app,
            &alice,
            &rest,
            json!({"base_url": "https://collector.example.net"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("config.auth_token"),
    );
    let ok = patch(
        &app,
        &alice,
        &rest,
        json!({"base_url": "https://collector.example.net", "auth_token": "tok-456"}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);

    let oauth = create(
        &app,
        &alice,
        "rest_api",
        json!({"base_url": "https://api.example.com", "auth_type": "oauth2",
               "token_url": "https://auth.example.com/token", "client_id": "ferry", "client_secret": "cs-1"}),
    )
    .await;
    assert_error(
        &patch(
            &app,
            &alice,
            &oauth,
            json!({"token_url": "https://evil.example/token"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("config.client_secret"),
    );

    let redis = create(
        &app,
        &alice,
        "redis",
        json!({"host": "cache.internal", "password": "redis-pw"}),
    )
    .await;
    assert_error(
        &patch(&app, &alice, &redis, json!({"host": "cache.example.net"})).await,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("config.password"),
    );
    // Without a stored secret there is nothing to send again.
    let open = create(&app, &alice, "redis", json!({"host": "cache.internal"})).await;
    let moved = patch(&app, &alice, &open, json!({"port": 6380})).await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.text);
}

#[tokio::test]
async fn the_registry_marks_where_each_type_connects() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let reply = app.get(&alice, "/api/connectors").await;
    let types = reply.body["available_types"].as_array().expect("types").clone();
    let schema = |id: &str| {
        types
            .iter()
            .find(|t| t["type"] == id)
            .map(|t| t["config_schema"].clone())
            .expect("type")
    };
    for (id, field) in [
        ("postgresql", "host"),
        ("postgresql", "port"),
        ("postgresql", "database"),
        ("mysql", "host"),
        ("rest_api", "base_url"),
        ("rest_api", "token_url"),
        ("mongodb", "connection_string"),
        ("redis", "host"),
        ("sqlite", "path"),
    ] {
        assert_eq!(schema(id)[field]["endpoint"], true, "{id}.{field}");
    }
    assert_eq!(schema("postgresql")["max_connections"]["endpoint"], false);
}
