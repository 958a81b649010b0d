//! The OpenAPI document matches the router, and `/docs` is served offline.

use reqwest::{Method, StatusCode};

use crate::helpers::{User, reply, spawn_app};

#[tokio::test]
async fn the_openapi_document_is_3_1_and_every_operation_is_routed() {
    let app = spawn_app().await;
    let alice = User::member("user_alice", "org_a");
    let doc = reply(
        app.client
            .get(app.url("/api/openapi.json"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(
        doc.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc.body["openapi"]
    );
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());
    // Operations require the bearer token unless they opt out: the health,
    // metrics and OAuth callback routes are the ones that do.
    assert_eq!(doc.body["security"], serde_json::json!([{"bearer": []}]));
    for (path, method) in [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/api/oauth/{provider}/callback", "get"),
    ] {
        assert_eq!(
            doc.body["paths"][path][method]["security"],
            serde_json::json!([{}]),
            "{method} {path} is open"
        );
    }
    assert!(
        doc.body["paths"]["/api/connectors/{uuid}"]["get"]["security"].is_null(),
        "an /api operation inherits the document's bearer requirement"
    );

    let paths = doc.body["paths"].as_object().expect("paths");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().expect("path item").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let expected = [
        ("DELETE", "/api/api-keys/{uuid}"),
        ("DELETE", "/api/connectors/{uuid}"),
        ("DELETE", "/api/permissions/resource/{type}/{uuid}/{user_id}"),
        ("DELETE", "/api/projects/{uuid}"),
        ("DELETE", "/api/projects/{uuid}/steps/{step_id}"),
        ("DELETE", "/api/webhooks/{uuid}"),
        ("GET", "/api/api-keys"),
        ("GET", "/api/connectors"),
        ("GET", "/api/connectors/{uuid}"),
        ("GET", "/api/connectors/{uuid}/health"),
        ("GET", "/api/oauth/{provider}/authorize"),
        ("GET", "/api/oauth/{provider}/callback"),
        ("GET", "/api/permissions/resource/{type}/{uuid}"),
        ("GET", "/api/projects"),
        ("GET", "/api/projects/{uuid}"),
        ("GET", "/api/projects/{uuid}/executions"),
        ("GET", "/api/projects/{uuid}/executions/{execution_id}"),
        ("GET", "/api/projects/{uuid}/executions/{execution_id}/events"),
        (
            "GET",
            "/api/projects/{uuid}/executions/{execution_id}/steps/{step_id}/result",
        ),
        ("GET", "/api/projects/{uuid}/steps"),
        ("GET", "/api/projects/{uuid}/steps/{step_id}"),
        ("GET", "/api/webhooks"),
        ("GET", "/api/webhooks/{uuid}"),
        ("GET", "/api/webhooks/{uuid}/deliveries"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
        ("PATCH", "/api/connectors/{uuid}"),
        ("PATCH", "/api/webhooks/{uuid}"),
        ("POST", "/api/api-keys"),
        ("POST", "/api/connectors"),
        ("POST", "/api/connectors/{uuid}/disable"),
        ("POST", "/api/connectors/{uuid}/enable"),
        ("POST", "/api/connectors/{uuid}/test"),
        ("POST", "/api/oauth/{provider}/refresh"),
        ("POST", "/api/permissions/resource/{type}/{uuid}"),
        ("POST", "/api/projects"),
        ("POST", "/api/projects/{uuid}/execute"),
        ("POST", "/api/projects/{uuid}/executions/{execution_id}/cancel"),
        ("POST", "/api/projects/{uuid}/steps"),
        ("POST", "/api/projects/{uuid}/steps/reorder"),
        ("POST", "/api/webhooks"),
        ("POST", "/api/webhooks/{uuid}/deliveries/{delivery_id}/redeliver"),
        ("PUT", "/api/projects/{uuid}"),
        ("PUT", "/api/projects/{uuid}/steps/{step_id}"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected);

    // Every documented operation reaches a handler: never the "no such route"
    // fallback, never 405. Redirects (the OAuth callback's) are not followed.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (method, path) in &documented {
        let concrete = path
            .replace(
                "{uuid}",
                if path.contains("connectors") {
                    "conn_01J00000000000000000000000"
                } else {
                    "proj_01J00000000000000000000000"
                },
            )
            .replace("{step_id}", "step_01J00000000000000000000000")
            .replace("{execution_id}", "exec_01J00000000000000000000000")
            .replace("{type}", "project")
            .replace("{user_id}", "user_x")
            .replace("{provider}", "hubspot");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = client
            .request(method.clone(), app.url(&concrete))
            .bearer_auth(alice.token())
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("send");
        let r = reply(response).await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(r.body["message"], "no such route", "{method} {path}");
    }
}

#[tokio::test]
async fn docs_viewer_and_its_assets_are_served_by_ferry() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/docs/")).send().await.expect("send");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("cdn.") && !html.contains("unpkg.com"),
        "no CDN assets"
    );
    for asset in [
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-initializer.js",
    ] {
        let response = app.client.get(app.url(asset)).send().await.expect("send");
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let body = response.text().await.expect("body");
        assert!(body.len() > 100, "{asset}");
        if asset.ends_with("initializer.js") {
            assert!(body.contains("/api/openapi.json"), "{body}");
        }
    }
}
