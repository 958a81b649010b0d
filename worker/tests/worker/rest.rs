//! REST API connectors against an axum server the test runs on
//! 127.0.0.1:0, one route per auth type plus an OAuth2 token endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::helpers::{harness, spec, with};

const TOKEN: &str = "good-token";
const API_KEY: &str = "key-123";
const ISSUED: &str = "issued-access-token";

struct Api {
    base_url: String,
    requests: Arc<AtomicUsize>,
}

async fn api() -> Api {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    let header_is = |headers: &HeaderMap, name: &str, expected: &str| {
        headers.get(name).and_then(|value| value.to_str().ok()) == Some(expected)
    };
    let answer = |ok: bool| {
        if ok {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        }
    };
    let basic = format!("Basic {}", base64_encode("alice:wonderland"));
    let client = format!("Basic {}", base64_encode("client-id:client-secret"));
    let app = Router::new()
        .route(
            "/none",
            get(|| async { ([(header::SERVER, "ferry-test/1.0")], "ok") }),
        )
        .route(
            "/bearer",
            get(move |headers: HeaderMap| async move {
                answer(header_is(&headers, "authorization", &format!("Bearer {TOKEN}")))
            }),
        )
        .route(
            "/basic",
            get(
                move |headers: HeaderMap| async move { answer(header_is(&headers, "authorization", &basic)) },
            ),
        )
        .route(
            "/apikey",
            get(move |headers: HeaderMap| async move { answer(header_is(&headers, "x-api-key", API_KEY)) }),
        )
        .route(
            "/headers",
            get(move |headers: HeaderMap| async move {
                answer(header_is(&headers, "x-api-version", "2024-01-15"))
            }),
        )
        .route(
            "/oauth",
            get(move |headers: HeaderMap| async move {
                answer(header_is(&headers, "authorization", &format!("Bearer {ISSUED}")))
            }),
        )
        .route(
            "/token",
            post(move |headers: HeaderMap, body: String| async move {
                let form_ok = body
                    .split('&')
                    .any(|pair| pair == "grant_type=client_credentials");
                if header_is(&headers, "authorization", &client) && form_ok {
                    (
                        StatusCode::OK,
                        axum::Json(
                            json!({"access_token": ISSUED, "token_type": "Bearer", "expires_in": 3600}),
                        ),
                    )
                        .into_response()
                } else {
                    (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(json!({"error": "invalid_client"})),
                    )
                        .into_response()
                }
            }),
        )
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    next.run(request).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Api {
        base_url: format!("http://127.0.0.1:{port}"),
        requests,
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn config(api: &Api, test_path: &str, auth: Value) -> Value {
    with(
        &json!({"base_url": api.base_url, "test_path": test_path, "timeout_seconds": 5}),
        auth,
    )
}

#[tokio::test]
async fn rest_without_auth_succeeds_and_reports_the_server_header() {
    let api = api().await;
    let h = harness(true);
    let outcome = h
        .registry
        .test(&spec(
            "rest_api",
            config(&api, "/none", json!({"auth_type": "none"})),
        ))
        .await;

    assert_eq!(outcome.error, None);
    assert_eq!(outcome.version.as_deref(), Some("ferry-test/1.0"));
}

#[tokio::test]
async fn rest_bearer_token_is_sent_and_a_wrong_one_is_authentication_failed_401() {
    let api = api().await;
    let h = harness(true);
    let right = config(
        &api,
        "/bearer",
        json!({"auth_type": "bearer", "auth_token": TOKEN}),
    );
    assert_eq!(
        h.registry.test(&spec("rest_api", right.clone())).await.error,
        None
    );

    let error = h
        .registry
        .test(&spec(
            "rest_api",
            with(&right, json!({"auth_token": "nope-token"})),
        ))
        .await
        .error
        .expect("401");
    assert_eq!(
        (error.error_type.as_str(), error.code.as_deref()),
        ("authentication_failed", Some("401"))
    );
    assert!(!error.message.contains("nope-token"));
}

#[tokio::test]
async fn rest_basic_credentials_are_sent_and_wrong_ones_are_authentication_failed_401() {
    let api = api().await;
    let h = harness(true);
    let right = config(
        &api,
        "/basic",
        json!({"auth_type": "basic", "username": "alice", "password": "wonderland"}),
    );
    assert_eq!(
        h.registry.test(&spec("rest_api", right.clone())).await.error,
        None
    );

    let error = h
        .registry
        .test(&spec("rest_api", with(&right, json!({"password": "guess"}))))
        .await
        .error
        .expect("401");
    assert_eq!(
        (error.error_type.as_str(), error.code.as_deref()),
        ("authentication_failed", Some("401"))
    );
}

#[tokio::test]
async fn rest_api_key_header_is_sent_and_a_wrong_key_is_authentication_failed_401() {
    let api = api().await;
    let h = harness(true);
    let right = config(
        &api,
        "/apikey",
        json!({"auth_type": "api_key", "api_key_header": "X-Api-Key", "api_key_value": API_KEY}),
    );
    assert_eq!(
        h.registry.test(&spec("rest_api", right.clone())).await.error,
        None
    );

    let error = h
        .registry
        .test(&spec(
            "rest_api",
            with(&right, json!({"api_key_value": "key-999"})),
        ))
        .await
        .error
        .expect("401");
    assert_eq!(
        (error.error_type.as_str(), error.code.as_deref()),
        ("authentication_failed", Some("401"))
    );
}

#[tokio::test]
async fn rest_oauth2_client_credentials_fetch_a_token_and_wrong_ones_are_authentication_failed_401() {
    let api = api().await;
    let h = harness(true);
    let right = config(
        &api,
        "/oauth",
        json!({"auth_type": "oauth2", "token_url": format!("{}/token", api.base_url),
               "client_id": "client-id", "client_secret": "client-secret", "scope": "read"}),
    );
    assert_eq!(
        h.registry.test(&spec("rest_api", right.clone())).await.error,
        None
    );

    let error = h
        .registry
        .test(&spec(
            "rest_api",
            with(&right, json!({"client_secret": "not-the-secret"})),
        ))
        .await
        .error
        .expect("token refused");
    assert_eq!(
        (error.error_type.as_str(), error.code.as_deref()),
        ("authentication_failed", Some("401"))
    );
    assert!(!error.message.contains("not-the-secret"));
}

#[tokio::test]
async fn rest_extra_headers_are_sent_on_every_request() {
    let api = api().await;
    let h = harness(true);
    let with_header = config(
        &api,
        "/headers",
        json!({"headers": {"X-API-Version": "2024-01-15"}}),
    );
    assert_eq!(h.registry.test(&spec("rest_api", with_header)).await.error, None);
    let without = config(&api, "/headers", json!({}));
    assert_eq!(
        h.registry
            .test(&spec("rest_api", without))
            .await
            .error
            .expect("401")
            .error_type,
        "authentication_failed"
    );
    let hostile = config(&api, "/headers", json!({"headers": {"Host": "internal.example"}}));
    assert_eq!(
        h.registry
            .test(&spec("rest_api", hostile))
            .await
            .error
            .expect("refused")
            .error_type,
        "invalid_config"
    );
}

#[tokio::test]
async fn rest_server_errors_are_http_error_with_the_status() {
    let api = api().await;
    let h = harness(true);
    let error = h
        .registry
        .test(&spec("rest_api", config(&api, "/boom", json!({}))))
        .await
        .error
        .expect("500");
    assert_eq!(
        (error.error_type.as_str(), error.code.as_deref()),
        ("http_error", Some("500"))
    );
    let error = h
        .registry
        .test(&spec("rest_api", config(&api, "/missing", json!({}))))
        .await
        .error
        .expect("404");
    assert_eq!(
        (error.error_type.as_str(), error.code.as_deref()),
        ("http_error", Some("404"))
    );
}

#[tokio::test]
async fn rest_private_addresses_are_blocked_without_a_request_when_private_networks_are_not_allowed() {
    let api = api().await;
    let h = harness(false);
    let port = api.base_url.rsplit(':').next().expect("port").to_owned();
    for base_url in [
        api.base_url.clone(),
        format!("http://localhost:{port}"),
        format!("http://[::ffff:7f00:1]:{port}"),
    ] {
        let config = json!({"base_url": base_url, "test_path": "/none"});
        let error = h
            .registry
            .test(&spec("rest_api", config))
            .await
            .error
            .expect("blocked");
        assert_eq!(error.error_type, "blocked_address", "{base_url}");
    }
    let token_on_loopback = json!({"base_url": "https://api.example.com", "auth_type": "oauth2",
        "token_url": format!("http://localhost:{port}/token"), "client_id": "c", "client_secret": "s"});
    let error = h
        .registry
        .test(&spec("rest_api", token_on_loopback))
        .await
        .error
        .expect("blocked");
    assert_eq!(error.error_type, "blocked_address");
    assert_eq!(
        api.requests.load(Ordering::SeqCst),
        0,
        "no request may reach a blocked address"
    );
}
