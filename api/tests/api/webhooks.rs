//! `/api/webhooks`: create (the secret shown once), list, read, PATCH,
//! delete, the delivery log and redelivery, on both store backends; input
//! checks in the seeds' error shape; only organization admins manage
//! webhooks, and another organization's is 404. Deliveries themselves are
//! tested end to end with separate processes in the cli's tests.

use ferry_shared::domain::webhook::{EventType, WebhookEvent};
use ferry_testkit::app::{Backend, TestApp, User, assert_error, spawn_app_on};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn admin() -> User {
    User::admin("user_admin", "org_hooks")
}

async fn create(app: &TestApp, body: Value) -> Value {
    let reply = app.post(&admin(), "/api/webhooks", body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body
}

async fn webhooks_are_created_read_changed_and_deleted_with_the_secret_shown_once(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let created = create(
        &app,
        json!({"url": "https://hooks.example.com/ferry", "events": ["project.failed", "project.completed", "project.failed"],
               "description": "ops", "headers": {"Authorization": "Bearer receiver-token"}}),
    )
    .await;
    let uuid = created["uuid"].as_str().expect("uuid").to_owned();
    assert!(uuid.starts_with("whk_"), "{created}");
    let secret = created["secret"].as_str().expect("secret");
    let key = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    assert!(standard_base64_of_32_bytes(key), "{secret}");
    assert_eq!(created["events"], json!(["project.completed", "project.failed"]));
    assert_eq!(created["enabled"], true);
    assert_eq!(created["headers"], json!({"Authorization": "****"}));
    assert_eq!(
        created["retry_config"],
        json!({"max_attempts": 8, "initial_interval_seconds": 5, "max_interval_seconds": 3600})
    );

    let read = app.get(&admin(), &format!("/api/webhooks/{uuid}")).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert!(read.body.get("secret").is_none(), "{}", read.text);
    assert!(
        !read.text.contains(key) && !read.text.contains("receiver-token"),
        "{}",
        read.text
    );
    let list = app.get(&admin(), "/api/webhooks").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["data"].as_array().map(Vec::len), Some(1));
    assert!(!list.text.contains(key));

    let patched = app
        .call(
            &admin(),
            Method::PATCH,
            &format!("/api/webhooks/{uuid}"),
            Some(
                json!({"enabled": false, "events": ["execution.started"], "description": null,
                        "retry_config": {"max_attempts": 3}, "headers": {"X-Team": "data"}}),
            ),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.body["enabled"], false);
    assert_eq!(patched.body["events"], json!(["execution.started"]));
    assert_eq!(patched.body["description"], Value::Null);
    assert_eq!(patched.body["headers"], json!({"X-Team": "****"}));
    assert_eq!(
        patched.body["retry_config"],
        json!({"max_attempts": 3, "initial_interval_seconds": 5, "max_interval_seconds": 3600})
    );
    assert_eq!(patched.body["url"], "https://hooks.example.com/ferry");

    let empty = app
        .get(&admin(), &format!("/api/webhooks/{uuid}/deliveries"))
        .await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.text);
    assert_eq!(empty.body, json!({"data": []}));

    let deleted = app.delete(&admin(), &format!("/api/webhooks/{uuid}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = app.get(&admin(), &format!("/api/webhooks/{uuid}")).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found", None);
    let again = app.delete(&admin(), &format!("/api/webhooks/{uuid}")).await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found", None);
}

fn standard_base64_of_32_bytes(text: &str) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .is_ok_and(|bytes| bytes.len() == 32)
}

#[tokio::test]
async fn webhooks_are_created_read_changed_and_deleted_with_the_secret_shown_once_on_sqlite() {
    webhooks_are_created_read_changed_and_deleted_with_the_secret_shown_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn webhooks_are_created_read_changed_and_deleted_with_the_secret_shown_once_on_postgres() {
    webhooks_are_created_read_changed_and_deleted_with_the_secret_shown_once(Backend::Postgres).await;
}

#[tokio::test]
async fn bad_webhook_input_is_400_validation_error_naming_the_field() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let ok_url = "https://hooks.example.com/x";
    for (body, field) in [
        (json!({"events": ["project.failed"]}), "url"),
        (
            json!({"url": "ftp://hooks.example.com", "events": ["project.failed"]}),
            "url",
        ),
        (json!({"url": "not a url", "events": ["project.failed"]}), "url"),
        (
            json!({"url": "https://user:pw@hooks.example.com", "events": ["project.failed"]}),
            "url",
        ),
        (json!({"url": ok_url}), "events"),
        (json!({"url": ok_url, "events": []}), "events"),
        (
            json!({"url": ok_url, "events": ["project.failed", "project.exploded"]}),
            "events[1]",
        ),
        (json!({"url": ok_url, "events": "project.failed"}), "events"),
        (
            json!({"url": ok_url, "events": ["project.failed"], "headers": {"webhook-id": "x"}}),
            "headers.webhook-id",
        ),
        (
            json!({"url": ok_url, "events": ["project.failed"], "headers": {"bad name": "x"}}),
            "headers.bad name",
        ),
        (
            json!({"url": ok_url, "events": ["project.failed"], "retry_config": {"max_attempts": 0}}),
            "retry_config.max_attempts",
        ),
        (
            json!({"url": ok_url, "events": ["project.failed"], "retry_config": {"max_interval_seconds": 0}}),
            "retry_config.max_interval_seconds",
        ),
        (
            json!({"url": ok_url, "events": ["project.failed"], "retry_config": {"initial_interval_seconds": 100, "max_interval_seconds": 10}}),
            "retry_config.initial_interval_seconds",
        ),
        (
            json!({"url": ok_url, "events": ["project.failed"], "description": "x".repeat(1001)}),
            "description",
        ),
    ] {
        let reply = app.post(&admin(), "/api/webhooks", body.clone()).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some(field));
        assert!(!reply.text.contains("whsec_"), "{body}: {}", reply.text);
    }
    let created = create(&app, json!({"url": ok_url, "events": ["project.failed"]})).await;
    let uuid = created["uuid"].as_str().expect("uuid");
    let reply = app
        .call(
            &admin(),
            Method::PATCH,
            &format!("/api/webhooks/{uuid}"),
            Some(json!({"url": "mailto:x@y"})),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some("url"));
    let reply = app
        .get(&admin(), &format!("/api/webhooks/{uuid}/deliveries?limit=0"))
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some("limit"));
}

#[tokio::test]
async fn only_organization_admins_manage_webhooks_and_another_organizations_are_not_found() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let created = create(
        &app,
        json!({"url": "https://hooks.example.com/x", "events": ["project.failed"]}),
    )
    .await;
    let uuid = created["uuid"].as_str().expect("uuid");
    let path = format!("/api/webhooks/{uuid}");

    let member = User::member("user_member", "org_hooks");
    let denied = app
        .post(
            &member,
            "/api/webhooks",
            json!({"url": "https://h.example.com", "events": ["project.failed"]}),
        )
        .await;
    assert_error(&denied, StatusCode::FORBIDDEN, "forbidden", None);
    for (method, path) in [
        (Method::GET, "/api/webhooks".to_owned()),
        (Method::GET, path.clone()),
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::GET, format!("{path}/deliveries")),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"enabled": false}));
        let reply = app.call(&member, method.clone(), &path, body).await;
        assert_error(&reply, StatusCode::FORBIDDEN, "forbidden", None);
    }

    let stranger = User::admin("user_other", "org_other");
    for (method, path) in [
        (Method::GET, path.clone()),
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::GET, format!("{path}/deliveries")),
        (
            Method::POST,
            format!("{path}/deliveries/dlv_01J00000000000000000000000/redeliver"),
        ),
        (Method::GET, "/api/webhooks/whk_nonsense".to_owned()),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"enabled": false}));
        let reply = app.call(&stranger, method.clone(), &path, body).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    }
    let list = app.get(&stranger, "/api/webhooks").await;
    assert_eq!(list.body, json!({"data": []}));
    let still = app.get(&admin(), &path).await;
    assert_eq!(still.status, StatusCode::OK);
    assert_eq!(still.body["enabled"], true);
}

#[tokio::test]
async fn a_redelivery_of_an_unknown_delivery_is_404_and_of_a_known_one_202_pending() {
    let app = spawn_app_on(Backend::Postgres).await;
    let created = create(
        &app,
        json!({"url": "https://hooks.example.com/x", "events": ["project.failed"]}),
    )
    .await;
    let uuid = created["uuid"].as_str().expect("uuid");
    for delivery in ["dlv_01J00000000000000000000000", "nonsense"] {
        let reply = app
            .post(
                &admin(),
                &format!("/api/webhooks/{uuid}/deliveries/{delivery}/redeliver"),
                json!({}),
            )
            .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    }
    // An event recorded for the organization makes one delivery.
    let event = WebhookEvent::new(
        "org_hooks",
        EventType::ProjectFailed,
        json!({"execution_id": "exec_x"}),
    );
    assert_eq!(app.store.record_webhook_event(&event).await.expect("record"), 1);
    let other_org = WebhookEvent::new("org_other", EventType::ProjectFailed, json!({}));
    assert_eq!(
        app.store.record_webhook_event(&other_org).await.expect("record"),
        0
    );
    let unsubscribed = WebhookEvent::new("org_hooks", EventType::ProjectCompleted, json!({}));
    assert_eq!(
        app.store
            .record_webhook_event(&unsubscribed)
            .await
            .expect("record"),
        0
    );
    let mut notify = WebhookEvent::new("org_hooks", EventType::ProjectCompleted, json!({}));
    notify.notify_all = true;
    assert_eq!(app.store.record_webhook_event(&notify).await.expect("record"), 1);
    let mut once = WebhookEvent::new("org_hooks", EventType::ProjectFailed, json!({}));
    once.dedupe_key = Some("project.failed:exec_once".into());
    assert_eq!(app.store.record_webhook_event(&once).await.expect("record"), 1);
    once.event_id = "evt_again".into();
    assert_eq!(
        app.store.record_webhook_event(&once).await.expect("record"),
        0,
        "deduped"
    );

    let now = ferry_shared::domain::now();
    let due = app
        .store
        .take_due_webhook_deliveries(now, now, 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 3, "{due:?}");
    let again = app
        .store
        .take_due_webhook_deliveries(now, now, 10)
        .await
        .expect("due");
    assert!(again.is_empty(), "marked enqueued: {again:?}");
    let (delivery, _) = &due[0];
    let reply = app
        .post(
            &admin(),
            &format!("/api/webhooks/{uuid}/deliveries/{delivery}/redeliver"),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body, json!({"delivery_id": delivery, "status": "pending"}));
}

#[tokio::test]
async fn every_webhook_operation_is_in_the_openapi_document() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let doc = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .expect("doc");
    let doc: Value = doc.json().await.expect("json");
    for (path, method) in [
        ("/api/webhooks", "post"),
        ("/api/webhooks", "get"),
        ("/api/webhooks/{uuid}", "get"),
        ("/api/webhooks/{uuid}", "patch"),
        ("/api/webhooks/{uuid}", "delete"),
        ("/api/webhooks/{uuid}/deliveries", "get"),
        ("/api/webhooks/{uuid}/deliveries/{delivery_id}/redeliver", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let create = doc["paths"]["/api/webhooks"]["post"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(create.contains("notify_on_completion"), "{create}");
}

#[tokio::test]
async fn a_connector_whose_probes_keep_failing_records_connection_failed_with_its_status_change() {
    use ferry_shared::config::MasterKeys;
    use ferry_shared::domain::{Connector, ConnectorStatus, TestRecord};
    use ferry_shared::vault::Vault;

    let app = spawn_app_on(Backend::Postgres).await;
    let created = create(
        &app,
        json!({"url": "https://hooks.example.com/x", "events": ["connector.connection_failed"]}),
    )
    .await;
    let webhook = created["uuid"].as_str().expect("uuid");
    let uuid = ferry_shared::ids::IdKind::Connector.generate();
    let vault = Vault::new(MasterKeys::parse(ferry_testkit::app::MASTER_KEY).expect("keys"));
    let now = ferry_shared::domain::now();
    let connector = Connector {
        secrets: vault.seal(&uuid, &serde_json::Map::new()).expect("seal"),
        uuid: uuid.clone(),
        org_id: "org_hooks".to_owned(),
        connector_type: "postgresql".to_owned(),
        display_name: "warehouse".to_owned(),
        config: json!({"host": "127.0.0.1", "port": 1, "database": "app"})
            .as_object()
            .cloned()
            .expect("object"),
        config_version: 1,
        status: ConnectorStatus::Active,
        auth_type: "credentials".to_owned(),
        created_by: "user_admin".to_owned(),
        created_at: now,
        updated_at: now,
        last_tested_at: None,
        last_test_status: None,
        disabled_at: None,
        disabled_by: None,
        disabled_reason: None,
    };
    app.store.create_connector(&connector).await.expect("connector");
    let failed = |at| TestRecord {
        connector_uuid: uuid.clone(),
        tested_at: at,
        success: false,
        latency_ms: 2,
        error_type: Some("connection_refused".into()),
        error_message: Some("nothing listens on 127.0.0.1:1".into()),
    };
    for _ in 0..2 {
        app.store
            .record_probe(&failed(ferry_shared::domain::now()), 2)
            .await
            .expect("probe");
    }
    // One delivery, made in the probe's transaction; a third failure
    // changes nothing and records nothing more.
    app.store
        .record_probe(&failed(ferry_shared::domain::now()), 2)
        .await
        .expect("probe");
    let now = ferry_shared::domain::now();
    let due = app
        .store
        .take_due_webhook_deliveries(now, now, 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 1, "{due:?}");
    let claim = app
        .store
        .claim_webhook_delivery(&due[0].0, now, now + chrono::Duration::seconds(30))
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(claim.webhook_uuid, webhook);
    assert_eq!(claim.attempt, 1);
    let body: Value = serde_json::from_str(&claim.body).expect("body");
    assert_eq!(body["type"], "connector.connection_failed");
    assert_eq!(body["id"], claim.event_id.as_str());
    assert_eq!(body["data"]["connector_uuid"], uuid.as_str());
    assert_eq!(body["data"]["display_name"], "warehouse");
    assert_eq!(body["data"]["status"], "error");
    assert_eq!(body["data"]["error"]["type"], "connection_refused");
    // A second claim while the first holds it gets nothing.
    let again = app
        .store
        .claim_webhook_delivery(&due[0].0, now, now + chrono::Duration::seconds(30))
        .await
        .expect("claim");
    assert!(again.is_none());
}

#[tokio::test]
async fn key_rotation_reseals_webhook_secrets_under_the_new_key() {
    use ferry_shared::config::MasterKeys;
    use ferry_shared::domain::webhook::WebhookSecrets;
    use ferry_shared::vault::Vault;

    let app = spawn_app_on(Backend::Sqlite).await;
    let created = create(
        &app,
        json!({"url": "https://hooks.example.com/x", "events": ["project.failed"],
                                       "headers": {"X-Token": "t"}}),
    )
    .await;
    let uuid = created["uuid"].as_str().expect("uuid");
    let secret = created["secret"].as_str().expect("secret");
    let both = Vault::new(
        MasterKeys::parse(&format!(
            "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=,{}",
            ferry_testkit::app::MASTER_KEY
        ))
        .expect("keys"),
    );
    let rotation = ferry_shared::rotation::rotate_all(app.store.as_ref(), &both)
        .await
        .expect("rotate");
    assert_eq!((rotation.rotated, rotation.remaining), (1, 0), "{rotation:?}");
    let webhook = app
        .store
        .get_webhook("org_hooks", uuid)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(webhook.secrets.key_id, "k2");
    let opened = both.open(uuid, &webhook.secrets).expect("open");
    let secrets = WebhookSecrets::from_map(opened.expose_secret()).expect("secrets");
    assert_eq!(secrets.secret, secret);
    assert_eq!(secrets.headers.get("X-Token").map(String::as_str), Some("t"));
}

#[tokio::test]
async fn old_events_with_nothing_left_to_deliver_are_pruned_with_their_log_and_pending_ones_kept() {
    let app = spawn_app_on(Backend::Postgres).await;
    create(
        &app,
        json!({"url": "https://hooks.example.com/x", "events": ["project.failed"]}),
    )
    .await;
    let event = WebhookEvent::new("org_hooks", EventType::ProjectFailed, json!({}));
    assert_eq!(app.store.record_webhook_event(&event).await.expect("record"), 1);
    let later = ferry_shared::domain::now() + chrono::Duration::seconds(5);
    assert_eq!(
        app.store.prune_webhook_events(later, 10).await.expect("prune"),
        0,
        "still pending"
    );
    let now = ferry_shared::domain::now();
    let claim = app
        .store
        .claim_webhook_delivery(
            &app.store
                .take_due_webhook_deliveries(now, now, 10)
                .await
                .expect("due")[0]
                .0,
            now,
            now + chrono::Duration::seconds(30),
        )
        .await
        .expect("claim")
        .expect("claimed");
    let record = ferry_shared::store::AttemptRecord {
        status_code: Some(204),
        ok: true,
        error: None,
        duration_ms: 3,
        at: now,
        next: ferry_shared::domain::webhook::DeliveryStatus::Delivered,
        next_attempt_at: None,
    };
    assert!(
        app.store
            .record_webhook_attempt(&claim, &record)
            .await
            .expect("record")
    );
    assert!(
        !app.store
            .record_webhook_attempt(&claim, &record)
            .await
            .expect("fenced"),
        "recorded once"
    );
    let log = app
        .store
        .list_webhook_attempts("org_hooks", &claim.webhook_uuid, 10)
        .await
        .expect("log");
    assert_eq!(log.len(), 1);
    assert_eq!(
        app.store
            .prune_webhook_events(now - chrono::Duration::seconds(60), 10)
            .await
            .expect("prune"),
        0,
        "too recent"
    );
    assert_eq!(app.store.prune_webhook_events(later, 10).await.expect("prune"), 1);
    let log = app
        .store
        .list_webhook_attempts("org_hooks", &claim.webhook_uuid, 10)
        .await
        .expect("log");
    assert!(log.is_empty());
}

/// A REST API that answers every request 429 with `Retry-After: 0`.
async fn always_rate_limited() -> String {
    use axum::http::{StatusCode as Code, header};
    let app = axum::Router::new()
        .fallback(|| async { (Code::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "0")], "slow down") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn a_step_failing_on_a_rate_limit_records_project_failed_and_connector_quota_exceeded_with_the_execution_end()
 {
    let base_url = always_rate_limited().await;
    let app = spawn_app_on(Backend::Sqlite).await;
    create(
        &app,
        json!({"url": "https://hooks.example.com/x", "events": ["project.failed", "connector.quota_exceeded"]}),
    )
    .await;
    let reply = app
        .post(
            &admin(),
            "/api/connectors",
            json!({"type": "rest_api", "display_name": "limited api", "test_connection": false,
                   "config": {"base_url": base_url, "auth_type": "none", "timeout_seconds": 5}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let connector = reply.body["uuid"].as_str().expect("uuid").to_owned();
    let project = app.create_project(&admin(), "limited").await;
    let reply = app
        .post(
            &admin(),
            &format!("/api/projects/{project}/steps"),
            json!({"name": "items", "type": "http_request", "config": {"connector_uuid": connector, "path": "/items"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let reply = app
        .post(
            &admin(),
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["status"], "failed", "{}", reply.text);
    assert_eq!(
        reply.body["steps"][0]["error"]["type"], "rate_limited",
        "{}",
        reply.text
    );
    let execution = reply.body["execution_id"].as_str().expect("id").to_owned();

    let now = ferry_shared::domain::now();
    let due = app
        .store
        .take_due_webhook_deliveries(now, now, 10)
        .await
        .expect("due");
    let mut bodies = Vec::new();
    for (delivery, _) in &due {
        let claim = app
            .store
            .claim_webhook_delivery(delivery, now, now + chrono::Duration::seconds(30))
            .await
            .expect("claim")
            .expect("claimed");
        bodies.push(serde_json::from_str::<Value>(&claim.body).expect("body"));
    }
    bodies.sort_by_key(|body| body["type"].as_str().unwrap_or_default().to_owned());
    let types: Vec<&str> = bodies.iter().filter_map(|body| body["type"].as_str()).collect();
    assert_eq!(
        types,
        ["connector.quota_exceeded", "project.failed"],
        "{bodies:?}"
    );
    let quota = &bodies[0]["data"];
    assert_eq!(quota["connector_uuid"], connector.as_str());
    assert_eq!(quota["execution_id"], execution.as_str());
    assert_eq!(quota["display_name"], "limited api");
    assert_eq!(quota["error"]["type"], "rate_limited");
    let failed = &bodies[1]["data"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["project_name"], "limited");
    assert_eq!(failed["failed_step"]["name"], "items");
    assert_eq!(failed["failed_step"]["error"]["type"], "rate_limited");
}
