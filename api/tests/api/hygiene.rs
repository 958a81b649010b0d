//! Request hygiene: authentication, malformed input, limits, request ids,
//! service endpoints, and a database outage answering 503.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Backend, SECRET, User, assert_error, reply, spawn_app, spawn_with};
use ferry_api::ApiConfig;
use ferry_api::auth::{TokenClaims, mint_hs256};
use ferry_shared::domain::OrgRole;

#[tokio::test]
async fn api_routes_without_a_valid_token_are_401() {
    let app = spawn_app().await;
    let no_token = reply(
        app.client
            .get(app.url("/api/projects"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(&no_token, StatusCode::UNAUTHORIZED, "unauthorized", None);
    assert_eq!(no_token.headers["www-authenticate"], "Bearer");

    let garbage = reply(
        app.client
            .get(app.url("/api/projects"))
            .bearer_auth("not.a.jwt")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(&garbage, StatusCode::UNAUTHORIZED, "unauthorized", None);

    let basic = reply(
        app.client
            .get(app.url("/api/projects"))
            .header("authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(&basic, StatusCode::UNAUTHORIZED, "unauthorized", None);

    let claims = |exp: i64, secret: &str| {
        mint_hs256(
            secret,
            &TokenClaims {
                sub: "user_a".into(),
                org_id: "org_a".into(),
                org_role: OrgRole::Member,
                email: None,
                exp,
                iss: None,
                aud: None,
            },
        )
        .expect("mint")
    };
    let expired = claims(chrono::Utc::now().timestamp() - 3600, SECRET);
    let reply_expired = reply(
        app.client
            .get(app.url("/api/projects"))
            .bearer_auth(expired)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(&reply_expired, StatusCode::UNAUTHORIZED, "unauthorized", None);
    let forged = claims(
        chrono::Utc::now().timestamp() + 3600,
        "another-secret-that-is-long-enough-too",
    );
    let reply_forged = reply(
        app.client
            .get(app.url("/api/projects"))
            .bearer_auth(forged)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(&reply_forged, StatusCode::UNAUTHORIZED, "unauthorized", None);
}

#[tokio::test]
async fn malformed_and_non_json_bodies_get_the_seed_error_shape() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/api/projects"))
            .bearer_auth(alice.token())
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = reply(send("{\"name\": ", "application/json").await.expect("send")).await;
    assert_error(
        &malformed,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("body"),
    );
    let not_object = reply(send("[1,2]", "application/json").await.expect("send")).await;
    assert_error(&not_object, StatusCode::BAD_REQUEST, "validation_error", None);
    let form = reply(
        send("name=x", "application/x-www-form-urlencoded")
            .await
            .expect("send"),
    )
    .await;
    assert_error(
        &form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "validation_error",
        Some("Content-Type"),
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_payload_too_large() {
    let app = spawn_with(Backend::Sqlite, ApiConfig { max_body_bytes: 1024 }, None).await;
    let alice = User::member("user_alice", "org_a");
    let big = json!({"name": "x", "description": "y".repeat(4096)});
    let reply = app.post(&alice, "/api/projects", big).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    let listed = app.get(&alice, "/api/projects").await;
    assert_eq!(listed.body["pagination"]["total"], 0);
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_are_405_in_json() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let missing = app.get(&alice, "/api/nothing-here").await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found", None);
    let wrong = app
        .call(&alice, reqwest::Method::PATCH, "/api/projects", Some(json!({})))
        .await;
    assert_error(&wrong, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let ok = app.get(&alice, "/api/projects").await;
    let err = app.get(&alice, "/api/projects?limit=0").await;
    let unauth = reply(
        app.client
            .get(app.url("/api/projects"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    let mut ids = Vec::new();
    for r in [&ok, &err, &unauth] {
        let id = r
            .headers
            .get("x-request-id")
            .expect("x-request-id")
            .to_str()
            .expect("ascii")
            .to_owned();
        assert_eq!(id.len(), 26, "a ULID: {id}");
        ids.push(id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids are unique per request");
    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "caller-chosen-id-1")
        .send()
        .await
        .expect("send");
    assert_eq!(echoed.headers()["x-request-id"], "caller-chosen-id-1");
    let hostile = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "x".repeat(200))
        .send()
        .await
        .expect("send");
    assert_eq!(
        hostile.headers()["x-request-id"].len(),
        26,
        "an oversized id is replaced"
    );
}

#[tokio::test]
async fn service_endpoints_answer_without_authentication() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let health = reply(app.client.get(app.url("/healthz")).send().await.expect("send")).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = reply(app.client.get(app.url("/readyz")).send().await.expect("send")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");

    app.get(&alice, "/api/projects").await;
    app.get(&alice, "/api/projects?limit=0").await;
    let metrics = reply(app.client.get(app.url("/metrics")).send().await.expect("send")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let line = metrics
        .text
        .lines()
        .find(|l| {
            l.starts_with("ferry_http_requests_total")
                && l.contains("route=\"/api/projects\"")
                && l.contains("status=\"400\"")
        })
        .unwrap_or_else(|| panic!("no request counter for the 400:\n{}", metrics.text));
    assert!(line.ends_with(" 1"), "{line}");
    assert!(
        metrics
            .text
            .contains("ferry_http_request_duration_seconds_bucket")
    );
    assert!(!metrics.text.contains("limit=0"), "raw paths never become labels");
}

/// A TCP proxy that can be cut, standing in for a database going away.
struct Proxy {
    address: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn start_proxy(target: &'static str) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let mut stopped_accept = stopped.clone();
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped_accept.wait_for(|s| *s) => return,
            };
            let Ok((mut inbound, _)) = accepted else { return };
            let mut stopped_conn = stopped.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = stopped_conn.wait_for(|s| *s) => {}
                    }
                }
            });
        }
    });
    Proxy { address, stop }
}

#[tokio::test]
async fn a_metadata_database_outage_is_503_with_retry_after_never_500() {
    let proxy = start_proxy("127.0.0.1:5432").await;
    let app = spawn_with(Backend::Postgres, ApiConfig::default(), Some(proxy.address)).await;
    let alice = User::member("user_alice", "org_a");
    assert_eq!(app.get(&alice, "/api/projects").await.status, StatusCode::OK);

    let _ = proxy.stop.send(true);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for _ in 0..2 {
        let reply = app.get(&alice, "/api/projects").await;
        assert_error(
            &reply,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            None,
        );
        assert_eq!(reply.headers["retry-after"], "5");
        let created = app
            .post(&alice, "/api/projects", json!({"name": "during outage"}))
            .await;
        assert_error(
            &created,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            None,
        );
    }
    let ready = reply(app.client.get(app.url("/readyz")).send().await.expect("send")).await;
    assert_error(
        &ready,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
        None,
    );
}
