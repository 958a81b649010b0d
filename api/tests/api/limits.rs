//! Bounded by design: event streams have a maximum lifetime and a per-user
//! limit, the metrics' method label is bounded, and connection tests run at
//! most a few at once per organization.

use std::time::{Duration, Instant};

use ferry_api::limits::Limits;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::executing::offline_connector;
use crate::helpers::{Options, TestApp, User, assert_error, reply, spawn_app, spawn_custom};

async fn spawn_limited(limits: Limits, worker: bool) -> TestApp {
    spawn_custom(Options {
        worker,
        state: Some(Box::new(move |state| state.with_limits(limits))),
        ..Options::default()
    })
    .await
}

/// A project whose execution stays queued (no worker): its event stream
/// would never see `done`.
async fn queued_execution(app: &TestApp, user: &User) -> String {
    let project = app.create_project(user, "waiting").await;
    let step = app
        .post(
            user,
            &format!("/api/projects/{project}/steps"),
            json!({"name": "t", "type": "transform", "config": {"query": "select 1"}}),
        )
        .await;
    assert_eq!(step.status, StatusCode::CREATED, "{}", step.text);
    let accepted = app
        .post(user, &format!("/api/projects/{project}/execute"), json!({}))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    format!(
        "/api/projects/{project}/executions/{}/events",
        accepted.body["execution_id"].as_str().expect("id")
    )
}

async fn open_stream(app: &TestApp, user: &User, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(user.token())
        .send()
        .await
        .expect("events")
}

#[tokio::test]
async fn an_event_stream_ends_cleanly_after_its_maximum_lifetime() {
    let limits = Limits {
        sse_max_lifetime: Duration::from_secs(1),
        ..Limits::default()
    };
    let app = spawn_limited(limits, false).await;
    let alice = User::member("user_alice", "org_a");
    let path = queued_execution(&app, &alice).await;
    let started = Instant::now();
    let response = open_stream(&app, &alice, &path).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the stream ends although the execution never finishes")
        .expect("a complete body, not a broken connection");
    assert!(text.contains("event: progress"), "{text}");
    assert!(!text.contains("event: done"), "{text}");
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_user_over_the_stream_limit_gets_429_until_a_stream_ends() {
    let limits = Limits {
        sse_max_lifetime: Duration::from_secs(3),
        sse_streams_per_user: 2,
        ..Limits::default()
    };
    let app = spawn_limited(limits, false).await;
    let alice = User::member("user_alice", "org_a");
    let bob = User::member("user_bob", "org_a");
    let path = queued_execution(&app, &alice).await;
    let project_path = path.split("/executions").next().expect("project").to_owned();
    let share = app
        .post(
            &alice,
            &format!(
                "/api/permissions/resource/project/{}",
                project_path.trim_start_matches("/api/projects/")
            ),
            json!({"user_id": bob.id, "permission": "viewer"}),
        )
        .await;
    assert_eq!(share.status, StatusCode::CREATED, "{}", share.text);

    let first = open_stream(&app, &alice, &path).await;
    let second = open_stream(&app, &alice, &path).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::OK, StatusCode::OK)
    );
    let third = reply(open_stream(&app, &alice, &path).await).await;
    assert_error(&third, StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
    assert!(third.headers.get("retry-after").is_some(), "{:?}", third.headers);

    // The limit is per user.
    let others = open_stream(&app, &bob, &path).await;
    assert_eq!(others.status(), StatusCode::OK);

    // Streams that ended give their slot back.
    let _ = tokio::join!(first.text(), second.text());
    let again = open_stream(&app, &alice, &path).await;
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_http_methods_are_counted_as_other_in_metrics() {
    let app = spawn_app().await;
    for method in ["FOOBAR", "PURGE", "X-RANDOM-1", "X-RANDOM-2"] {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = app
            .client
            .request(method, app.url("/api/projects"))
            .send()
            .await
            .expect("request");
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for made_up in ["FOOBAR", "PURGE", "X-RANDOM"] {
        assert!(!metrics.contains(&format!("method=\"{made_up}")), "{metrics}");
    }
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

#[tokio::test]
async fn an_organization_over_its_connection_test_limit_gets_429_with_retry_after() {
    let limits = Limits {
        connection_tests_per_org: 1,
        ..Limits::default()
    };
    // No worker: each test waits out the connector's timeout (1 s + margin).
    let app = spawn_limited(limits, false).await;
    let alice = User::member("user_alice", "org_a");
    let olga = User::member("user_olga", "org_b");
    let ours = offline_connector(&app, &alice).await;
    let theirs = offline_connector(&app, &olga).await;
    for (user, uuid) in [(&alice, &ours), (&olga, &theirs)] {
        let patched = app
            .call(
                user,
                Method::PATCH,
                &format!("/api/connectors/{uuid}"),
                Some(json!({"config": {"connection_timeout_seconds": 1}, "test_connection": false})),
            )
            .await;
        assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    }
    let test_path = |uuid: &str| format!("/api/connectors/{uuid}/test");
    let ours_path = test_path(&ours);
    let running = app.post(&alice, &ours_path, json!({}));
    let refused = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refused = app.post(&alice, &test_path(&ours), json!({})).await;
        let elsewhere = app.post(&olga, &test_path(&theirs), json!({})).await;
        (refused, elsewhere)
    };
    let (first, (second, elsewhere)) = tokio::join!(running, refused);
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(first.body["status"], "failed", "no worker: a timeout");
    assert_error(&second, StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
    assert!(second.headers.get("retry-after").is_some());
    assert_eq!(
        elsewhere.status,
        StatusCode::OK,
        "another organization is not held back"
    );
    let after = app.post(&alice, &test_path(&ours), json!({})).await;
    assert_eq!(
        after.status,
        StatusCode::OK,
        "the slot was given back: {}",
        after.text
    );
}
