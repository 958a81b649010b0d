//! Connectors API against real servers: the in-process worker tests
//! connections to the local PostgreSQL; secrets never come back.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp, User, assert_error, spawn_app};

/// A PostgreSQL login role with a password, dropped at the end.
pub struct PgRole {
    pub name: String,
    pub password: String,
    _role: ferry_testkit::postgres::PgRole,
}

impl PgRole {
    pub async fn create() -> PgRole {
        let suffix = ulid::Ulid::new().to_string().to_lowercase();
        let role = ferry_testkit::postgres::PgRole::with_password(
            &format!("ferry_role_{suffix}"),
            &format!("pw-{suffix}-S3cret!"),
        );
        PgRole {
            name: role.name.clone(),
            password: role.password.clone(),
            _role: role,
        }
    }

    pub fn config(&self) -> Value {
        json!({"host": "127.0.0.1", "port": 5432, "database": "postgres", "username": self.name,
               "password": self.password, "connection_timeout_seconds": 5})
    }
}

fn assert_no_secret(reply: &Reply, secret: &str) {
    assert!(
        !reply.text.contains(secret),
        "a secret leaked into a response: {}",
        reply.text
    );
}

async fn create(app: &TestApp, user: &User, body: Value) -> Reply {
    app.post(user, "/api/connectors", body).await
}

#[tokio::test]
async fn creating_a_postgresql_connector_tests_it_on_a_worker_and_hides_the_password() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let role = PgRole::create().await;
    let reply = create(
        &app,
        &alice,
        json!({"type": "postgresql", "display_name": "Production Database", "config": role.config()}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_no_secret(&reply, &role.password);
    let body = &reply.body;
    assert!(body["uuid"].as_str().is_some_and(|u| u.starts_with("conn_")));
    assert_eq!(body["type"], "postgresql");
    assert_eq!(body["status"], "active");
    assert_eq!(body["last_test_status"], "success");
    assert_eq!(body["config"]["port"], 5432);
    assert_eq!(body["config"]["max_connections"], 5, "defaults are applied");
    assert!(body["config"].get("password").is_none());
    assert!(body["test_results"]["latency_ms"].is_u64());
    assert!(
        body["test_results"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("PostgreSQL")),
        "{body}"
    );
    assert_eq!(body["permissions"]["role"], "owner");

    let uuid = body["uuid"].as_str().expect("uuid");
    let fetched = app.get(&alice, &format!("/api/connectors/{uuid}")).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_no_secret(&fetched, &role.password);
    let listed = app.get(&alice, "/api/connectors").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["total_active"], 1);
    assert_eq!(listed.body["active_connectors"][0]["uuid"], uuid);
    assert_eq!(
        listed.body["active_connectors"][0]["permissions"]["role"],
        "owner"
    );
    assert_no_secret(&listed, &role.password);

    let tested = app
        .post(&alice, &format!("/api/connectors/{uuid}/test"), json!({}))
        .await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.text);
    assert_eq!(tested.body["status"], "success");
    assert!(
        tested.body["details"]["schemas_available"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("public")))
    );
    assert!(tested.body["details"]["server_time"].is_string());

    let stored = app
        .store
        .get_connector("org_a", uuid)
        .await
        .expect("store")
        .expect("stored");
    let raw = format!(
        "{:?} {}",
        stored.config,
        String::from_utf8_lossy(&stored.secrets.ciphertext)
    );
    assert!(!raw.contains(&role.password), "the stored secret is encrypted");
    assert_eq!(stored.secrets.key_id, "k1");
}

#[tokio::test]
async fn a_failed_test_on_create_is_400_connection_failed_and_stores_nothing() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let role = PgRole::create().await;
    // Wrong passwords (28P01) are covered by the worker's tests against a
    // private cluster: the shared server trusts local logins.
    let mut config = role.config();
    config["host"] = json!("no-such-host.invalid");
    config["password"] = json!("wrong-password-Zz9");
    let reply = create(
        &app,
        &alice,
        json!({"type": "postgresql", "display_name": "db", "config": config}),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "connection_failed", None);
    assert_eq!(
        reply.body["test_results"]["error_type"], "dns_error",
        "{}",
        reply.text
    );
    assert!(reply.body["test_results"]["attempted_at"].is_string());
    assert!(reply.body["details"].as_str().is_some_and(|d| !d.is_empty()));
    assert_no_secret(&reply, "wrong-password-Zz9");

    let mut closed = role.config();
    closed["port"] = json!(1);
    let reply = create(
        &app,
        &alice,
        json!({"type": "postgresql", "display_name": "db", "config": closed}),
    )
    .await;
    assert_eq!(
        reply.body["test_results"]["error_type"], "connection_refused",
        "{}",
        reply.text
    );
    assert_no_secret(&reply, &role.password);

    let mut missing_db = role.config();
    missing_db["database"] = json!("no_such_database_here");
    let reply = create(
        &app,
        &alice,
        json!({"type": "postgresql", "display_name": "db", "config": missing_db}),
    )
    .await;
    assert_eq!(
        reply.body["test_results"]["error_type"], "database_not_found",
        "{}",
        reply.text
    );

    let listed = app.get(&alice, "/api/connectors?include_available=false").await;
    assert_eq!(listed.body["total_active"], 0, "nothing was stored");
    assert_eq!(listed.body["available_types"], json!([]));
    assert_eq!(listed.body["total_available"], 0);
}

#[tokio::test]
async fn invalid_configurations_are_400_validation_error_naming_the_field() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let base = json!({"host": "db.example.com", "database": "d", "username": "u", "password": "p"});
    let with = |key: &str, value: Value| {
        let mut config = base.clone();
        if value.is_null() {
            config.as_object_mut().expect("object").remove(key);
        } else {
            config[key] = value;
        }
        json!({"type": "postgresql", "display_name": "x", "config": config, "test_connection": false})
    };
    for (body, field) in [
        (with("host", Value::Null), "config.host"),
        (with("port", json!(70000)), "config.port"),
        (with("port", json!("5432")), "config.port"),
        (with("ssl_mode", json!("sometimes")), "config.ssl_mode"),
        (with("host", json!("/var/run/postgresql")), "config.host"),
        (with("options", json!("-c log_statement=all")), "config.options"),
        (
            json!({"type": "oracle", "display_name": "x", "config": {}}),
            "type",
        ),
        (json!({"display_name": "x", "config": {}}), "type"),
        (
            json!({"type": "postgresql", "config": base.clone()}),
            "display_name",
        ),
        (json!({"type": "postgresql", "display_name": "x"}), "config"),
    ] {
        let reply = create(&app, &alice, body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some(field));
    }
    let missing_host = create(&app, &alice, with("host", Value::Null)).await;
    assert!(
        missing_host.body["details"]
            .as_str()
            .is_some_and(|d| d.contains("Host")),
        "{}",
        missing_host.text
    );
    let untested = create(&app, &alice, with("port", json!(6543))).await;
    assert_eq!(untested.status, StatusCode::CREATED, "{}", untested.text);
    assert!(untested.body["last_test_status"].is_null());
}

#[tokio::test]
async fn list_shows_available_types_and_filters_by_type_and_status() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let listed = app.get(&alice, "/api/connectors").await;
    let types: Vec<&str> = listed.body["available_types"]
        .as_array()
        .expect("types")
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    for expected in [
        "postgresql",
        "mysql",
        "mongodb",
        "redis",
        "redshift",
        "databricks",
        "rest_api",
        "bigquery",
        "snowflake",
        "salesforce",
        "hubspot",
        "stripe",
        "google_analytics",
        "azure",
        "sqlite",
    ] {
        assert!(types.contains(&expected), "{expected} missing");
    }
    assert_eq!(listed.body["total_available"], types.len());
    let bigquery = listed.body["available_types"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["type"] == "bigquery")
        .cloned()
        .expect("bigquery");
    assert_eq!(bigquery["auth_type"], "oauth");
    assert_eq!(bigquery["category"], "data_warehouse");

    let config = json!({"host": "db.example.com", "database": "d", "username": "u", "password": "p"});
    let a = create(
        &app,
        &alice,
        json!({"type": "postgresql", "display_name": "a", "config": config, "test_connection": false}),
    )
    .await;
    create(
        &app,
        &alice,
        json!({"type": "mysql", "display_name": "b", "config": config, "test_connection": false}),
    )
    .await;
    let uuid = a.body["uuid"].as_str().expect("uuid");
    let disabled = app
        .post(
            &alice,
            &format!("/api/connectors/{uuid}/disable"),
            json!({"reason": "Maintenance window"}),
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text);
    assert_eq!(disabled.body["status"], "disabled");
    assert_eq!(disabled.body["reason"], "Maintenance window");
    assert_eq!(disabled.body["disabled_by"], "user_alice");
    assert!(disabled.body["disabled_at"].is_string());

    let by_type = app
        .get(&alice, "/api/connectors?type=mysql&include_available=false")
        .await;
    assert_eq!(by_type.body["total_active"], 1);
    assert_eq!(by_type.body["active_connectors"][0]["type"], "mysql");
    let by_status = app.get(&alice, "/api/connectors?status=disabled").await;
    assert_eq!(by_status.body["total_active"], 1);
    assert_eq!(by_status.body["active_connectors"][0]["uuid"], uuid);
    for (query, field) in [
        ("status=broken", "status"),
        ("type=oracle", "type"),
        ("include_available=yes", "include_available"),
    ] {
        assert_error(
            &app.get(&alice, &format!("/api/connectors?{query}")).await,
            StatusCode::BAD_REQUEST,
            "validation_error",
            Some(field),
        );
    }
    let enabled = app
        .post(&alice, &format!("/api/connectors/{uuid}/enable"), json!({}))
        .await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.text);
    assert_eq!(enabled.body["status"], "active");
    assert!(enabled.body.get("disabled_at").is_none());
}

#[tokio::test]
async fn patch_merges_config_and_keeps_an_omitted_secret() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let role = PgRole::create().await;
    let created = create(
        &app,
        &alice,
        json!({"type": "postgresql", "display_name": "db", "config": role.config()}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let uuid = created.body["uuid"].as_str().expect("uuid");
    let path = format!("/api/connectors/{uuid}");

    // No password in the patch: the stored one is kept, and the test (default on) passes with it.
    let patched = app
        .call(
            &alice,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"display_name": "Production DB (Updated)", "config": {"max_connections": 3}})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.body["display_name"], "Production DB (Updated)");
    assert_eq!(patched.body["config"]["max_connections"], 3);
    assert_eq!(patched.body["config"]["host"], "127.0.0.1", "other keys are kept");
    assert_eq!(
        patched.body["test_results"]["version"]
            .as_str()
            .map(|v| v.starts_with("PostgreSQL")),
        Some(true)
    );
    assert_no_secret(&patched, &role.password);

    // A failing patch changes nothing.
    let broken = app
        .call(
            &alice,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"config": {"database": "no_such_database", "password": "nope-nope"}})),
        )
        .await;
    assert_error(&broken, StatusCode::BAD_REQUEST, "connection_failed", None);
    assert_eq!(
        broken.body["test_results"]["error_type"], "database_not_found",
        "{}",
        broken.text
    );
    assert_no_secret(&broken, "nope-nope");
    let after = app.post(&alice, &format!("{path}/test"), json!({})).await;
    assert_eq!(
        after.body["status"], "success",
        "the old settings are still stored: {}",
        after.text
    );
    assert_eq!(
        app.get(&alice, &path).await.body["config"]["database"],
        "postgres"
    );

    // Saved without testing, then the test endpoint reports the failure and health records it.
    let untested = app
        .call(
            &alice,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"config": {"port": 1, "password": role.password}, "test_connection": false})),
        )
        .await;
    assert_eq!(untested.status, StatusCode::OK, "{}", untested.text);
    let failed = app.post(&alice, &format!("{path}/test"), json!({})).await;
    assert_eq!(failed.status, StatusCode::OK);
    assert_eq!(failed.body["status"], "failed");
    assert_eq!(
        failed.body["error"]["type"], "connection_refused",
        "{}",
        failed.text
    );
    let fetched = app.get(&alice, &path).await;
    assert_eq!(fetched.body["last_test_status"], "failed");

    let health = app.get(&alice, &format!("{path}/health")).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text);
    assert_eq!(health.body["connector_uuid"], uuid);
    assert_eq!(health.body["status"], "unhealthy");
    let metrics = &health.body["metrics"];
    assert!(
        metrics["total_queries_24h"].as_u64().is_some_and(|n| n >= 4),
        "{metrics}"
    );
    let uptime = metrics["uptime_percentage_24h"].as_f64().expect("uptime");
    assert!(uptime > 0.0 && uptime < 100.0, "{uptime}");
    assert_eq!(health.body["recent_errors"][0]["type"], "connection_refused");
}

#[tokio::test]
async fn deleting_a_connector_in_use_is_409_with_usage_unless_forced() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let config = json!({"host": "db.example.com", "database": "d", "username": "u", "password": "p"});
    let created = create(
        &app,
        &alice,
        json!({"type": "postgresql", "display_name": "db", "config": config, "test_connection": false}),
    )
    .await;
    let uuid = created.body["uuid"].as_str().expect("uuid").to_owned();
    let project = app.create_project(&alice, "Sales Analysis").await;
    for name in ["a", "b"] {
        let step = app
            .post(
                &alice,
                &format!("/api/projects/{project}/steps"),
                json!({"name": name, "type": "sql_query",
                "config": {"connector_uuid": uuid, "query": "select 1"}}),
            )
            .await;
        assert_eq!(step.status, StatusCode::CREATED, "{}", step.text);
    }
    let refused = app.delete(&alice, &format!("/api/connectors/{uuid}")).await;
    assert_error(&refused, StatusCode::CONFLICT, "conflict", None);
    assert_eq!(
        refused.body["message"],
        "Cannot delete connector: used by 1 project"
    );
    assert_eq!(
        refused.body["usage"],
        json!([{"project_uuid": project, "project_name": "Sales Analysis", "step_count": 2}])
    );
    let forced = app
        .delete(&alice, &format!("/api/connectors/{uuid}?force=true"))
        .await;
    assert_eq!(forced.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&alice, &format!("/api/connectors/{uuid}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn sharing_gives_viewers_read_and_test_but_not_write() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let vera = User::member("user_vera", "org_a");
    let eddie = User::member("user_eddie", "org_a");
    let admin = User::admin("user_root", "org_a");
    let outsider = User::admin("user_olga", "org_b");
    let role = PgRole::create().await;
    let created = create(
        &app,
        &alice,
        json!({"type": "postgresql", "display_name": "db", "config": role.config()}),
    )
    .await;
    let uuid = created.body["uuid"].as_str().expect("uuid");
    let path = format!("/api/connectors/{uuid}");
    let perms = format!("/api/permissions/resource/connector/{uuid}");

    assert_eq!(
        app.get(&vera, &path).await.status,
        StatusCode::NOT_FOUND,
        "no grant, no visibility"
    );
    assert_eq!(app.get(&vera, "/api/connectors").await.body["total_active"], 0);
    let granted = app
        .post(
            &alice,
            &perms,
            json!({"user_id": "user_vera", "permission": "viewer"}),
        )
        .await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.text);
    assert_eq!(granted.body["permission"], "viewer");
    assert_eq!(granted.body["granted_by"], "user_alice");
    app.post(
        &alice,
        &perms,
        json!({"user_id": "user_eddie", "permission": "editor"}),
    )
    .await;

    let seen = app.get(&vera, &path).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert_eq!(
        seen.body["permissions"],
        json!({"can_edit": false, "can_delete": false, "can_share": false, "role": "viewer"})
    );
    assert_no_secret(&seen, &role.password);
    assert_eq!(
        app.post(&vera, &format!("{path}/test"), json!({})).await.body["status"],
        "success"
    );
    assert_eq!(
        app.get(&vera, &format!("{path}/health")).await.status,
        StatusCode::OK
    );
    let patch = app
        .call(
            &vera,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"display_name": "mine"})),
        )
        .await;
    assert_error(&patch, StatusCode::FORBIDDEN, "forbidden", None);
    assert_error(
        &app.delete(&vera, &path).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    assert_error(
        &app.post(&vera, &format!("{path}/disable"), json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    assert_error(
        &app.post(&vera, &perms, json!({"user_id": "x", "permission": "owner"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );

    let edited = app
        .call(
            &eddie,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"display_name": "renamed", "test_connection": false})),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.text);
    assert_eq!(edited.body["permissions"]["role"], "editor");
    assert_error(
        &app.delete(&eddie, &path).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );

    assert_eq!(app.get(&admin, &path).await.body["permissions"]["role"], "owner");
    assert_error(
        &app.get(&outsider, &path).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &app.get(&outsider, &perms).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );

    let list = app.get(&vera, &perms).await;
    let users: Vec<&str> = list.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|g| g["user_id"].as_str())
        .collect();
    assert_eq!(users, ["user_alice", "user_vera", "user_eddie"]);
    assert_error(
        &app.delete(&alice, &format!("{perms}/user_alice")).await,
        StatusCode::CONFLICT,
        "conflict",
        None,
    );
    assert_eq!(
        app.delete(&alice, &format!("{perms}/user_vera")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&vera, &path).await.status,
        StatusCode::NOT_FOUND,
        "revoked at once"
    );
    assert_error(
        &app.delete(&alice, &format!("{perms}/user_vera")).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    );
    assert_error(
        &app.post(
            &alice,
            &perms,
            json!({"user_id": "user_x", "permission": "admin"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("permission"),
    );
    assert_error(
        &app.post(
            &alice,
            "/api/permissions/resource/widget/x",
            json!({"user_id": "u", "permission": "viewer"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("type"),
    );
}

#[tokio::test]
async fn projects_are_shared_through_the_permissions_api() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    let project = app.create_project(&alice, "shared").await;
    let perms = format!("/api/permissions/resource/project/{project}");
    assert_eq!(
        app.get(&bob, &format!("/api/projects/{project}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(
            &alice,
            &perms,
            json!({"user_id": "user_bob", "permission": "editor"})
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let seen = app.get(&bob, &format!("/api/projects/{project}")).await;
    assert_eq!(seen.body["permissions"]["role"], "editor");
    assert_eq!(
        app.get(&bob, "/api/projects").await.body["pagination"]["total"],
        1
    );
    assert_eq!(
        app.put(
            &bob,
            &format!("/api/projects/{project}"),
            json!({"name": "by bob"})
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_error(
        &app.delete(&bob, &format!("/api/projects/{project}")).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
    assert_error(
        &app.post(&bob, &perms, json!({"user_id": "user_c", "permission": "viewer"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
}
