//! `http_request` steps end to end: a `rest_api` connector on an axum
//! server the test starts (127.0.0.1, port 0), saved with a connection
//! test, a project whose step pages through the server with a parameter in
//! its path, a sync execution, and the result read back as JSON.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use reqwest::StatusCode as Status;
use serde_json::{Value, json};

use crate::helpers::{User, spawn_app};

const TOKEN: &str = "e2e-secret-token";

/// An API of 12 orders in pages (`page`, `per_page`, records under `data`),
/// behind a bearer token; it notes every request's path and credential.
async fn orders_api() -> (String, Arc<Mutex<Vec<(String, bool)>>>) {
    let seen: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let log = seen.clone();
    let authorized = |headers: &HeaderMap| {
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
    };
    let app = Router::new()
        .route(
            "/health",
            get(move |headers: HeaderMap| async move {
                if authorized(&headers) {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }),
        )
        .route(
            "/regions/{region}/orders",
            get(
                move |axum::extract::Path(region): axum::extract::Path<String>,
                      Query(query): Query<std::collections::HashMap<String, String>>,
                      headers: HeaderMap| async move {
                    if !authorized(&headers) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    let page: i64 = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                    let per_page: i64 = query.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(5);
                    let data: Vec<Value> = ((page - 1) * per_page + 1..=page * per_page)
                        .filter(|id| *id <= 12)
                        .map(|id| {
                            json!({"id": id, "region": region, "total": id as f64 * 10.5,
                                   "paid": id % 2 == 0, "lines": [{"sku": format!("s{id}")}]})
                        })
                        .collect();
                    axum::Json(json!({"data": data, "page": page})).into_response()
                },
            ),
        )
        .layer(axum::middleware::from_fn(
            move |request: Request, next: axum::middleware::Next| {
                let log = log.clone();
                async move {
                    let path = request.uri().to_string();
                    let authorized = authorized(request.headers());
                    log.lock().expect("lock").push((path, authorized));
                    next.run(request).await
                }
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

#[tokio::test]
async fn an_http_request_step_pages_through_a_rest_api_and_its_records_read_back_as_json() {
    let (base_url, seen) = orders_api().await;
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let reply = app
        .post(
            &alice,
            "/api/connectors",
            json!({"type": "rest_api", "display_name": "orders api", "test_connection": true,
                   "config": {"base_url": base_url, "auth_type": "bearer", "auth_token": TOKEN,
                              "test_path": "/health", "timeout_seconds": 5}}),
        )
        .await;
    assert_eq!(reply.status, Status::CREATED, "{}", reply.text);
    assert_eq!(reply.body["last_test_status"], "success");
    assert!(!reply.text.contains(TOKEN), "the token is never returned");
    let connector = reply.body["uuid"].as_str().expect("uuid").to_owned();

    let project = app.create_project(&alice, "orders").await;
    let reply = app
        .post(
            &alice,
            &format!("/api/projects/{project}/steps"),
            json!({"name": "orders", "type": "http_request", "config": {
                "connector_uuid": connector, "path": "/regions/{{region}}/orders",
                "records_path": "data",
                "pagination": {"type": "page", "limit": 5},
                "parameters": {"region": {"type": "string"}}}}),
        )
        .await;
    assert_eq!(reply.status, Status::CREATED, "{}", reply.text);
    let step = reply.body["step_id"].as_str().expect("step_id").to_owned();

    let reply = app
        .post(
            &alice,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync", "parameters": {"region": "eu west/2"}}),
        )
        .await;
    assert_eq!(reply.status, Status::OK, "{}", reply.text);
    assert_eq!(reply.body["status"], "completed", "{}", reply.text);
    assert_eq!(reply.body["results"]["total_rows"], 12);
    let execution = reply.body["execution_id"].as_str().expect("id").to_owned();

    let result = app
        .get(
            &alice,
            &format!("/api/projects/{project}/executions/{execution}/steps/{step}/result?format=json"),
        )
        .await;
    assert_eq!(result.status, Status::OK, "{}", result.text);
    assert_eq!(
        result.body["columns"],
        json!([{"name": "id", "type": "integer"}, {"name": "region", "type": "string"},
               {"name": "total", "type": "number"}, {"name": "paid", "type": "boolean"},
               {"name": "lines", "type": "string"}])
    );
    let expected: Vec<Value> = (1..=12)
        .map(|id| {
            json!({"id": id, "region": "eu west/2", "total": id as f64 * 10.5, "paid": id % 2 == 0,
                   "lines": format!("[{{\"sku\":\"s{id}\"}}]")})
        })
        .collect();
    assert_eq!(result.body["data"], Value::Array(expected));
    assert_eq!(result.body["total_rows"], 12);

    let requests = seen.lock().expect("lock").clone();
    let pages: Vec<&str> = requests
        .iter()
        .filter(|(path, _)| path.starts_with("/regions"))
        .map(|(path, _)| path.as_str())
        .collect();
    assert_eq!(
        pages,
        [
            "/regions/eu%20west%2F2/orders?page=1&per_page=5",
            "/regions/eu%20west%2F2/orders?page=2&per_page=5",
            "/regions/eu%20west%2F2/orders?page=3&per_page=5",
        ],
        "the parameter is one escaped path segment; the short third page is the last"
    );
    assert!(
        requests.iter().all(|(_, authorized)| *authorized),
        "the connector's token went with every request: {requests:?}"
    );
}
