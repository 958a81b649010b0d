//! A stopping API: readiness turns 503 at once, requests are still served
//! during the drain delay, in-flight ones finish within the grace period,
//! and the server returns when it ends, whatever still runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use ferry_api::{AppState, serve_draining};
use ferry_testkit::app::{Options, spawn_custom};

#[tokio::test]
async fn a_stopping_api_turns_unready_drains_then_lets_in_flight_requests_finish_within_the_grace() {
    let captured: Arc<Mutex<Option<AppState>>> = Arc::default();
    let app = {
        let captured = captured.clone();
        spawn_custom(Options {
            worker: false,
            state: Some(Box::new(move |state: AppState| {
                *captured.lock().expect("lock") = Some(state.clone());
                state
            })),
            ..Options::default()
        })
        .await
    };
    let state = captured.lock().expect("lock").take().expect("the app's state");
    let routes = ferry_api::router(state.clone(), &ferry_api::ApiConfig::default()).merge(
        axum::Router::new()
            .route(
                "/test/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    "done"
                }),
            )
            .route(
                "/test/stuck",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "never"
                }),
            ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let delay = Duration::from_millis(500);
    let grace = Duration::from_millis(1500);
    let server = tokio::spawn(serve_draining(
        listener,
        routes,
        async move {
            let _ = stopped.await;
        },
        state.drain(delay, grace),
    ));
    let client = reqwest::Client::new();
    let ready = client.get(format!("{base}/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);

    let slow = tokio::spawn(client.get(format!("{base}/test/slow")).send());
    let stuck = tokio::spawn(client.get(format!("{base}/test/stuck")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = Instant::now();
    stop.send(()).expect("stop");
    tokio::time::sleep(Duration::from_millis(50)).await;

    // During the drain delay: unready, yet still serving new connections.
    assert!(state.is_draining());
    let unready = reqwest::Client::new()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("served during the drain");
    assert_eq!(unready.status(), 503);
    let body: serde_json::Value = unready.json().await.expect("json");
    assert_eq!(body["error"], "service_unavailable");
    assert_eq!(
        reqwest::Client::new()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );

    // The in-flight request finishes.
    let slow = slow.await.expect("task").expect("the slow request is answered");
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.text().await.expect("text"), "done");

    // After the delay no new connection is taken.
    tokio::time::sleep((delay + Duration::from_millis(200)).saturating_sub(stopping.elapsed())).await;
    let refused = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(refused.is_err(), "a new request after the drain: {refused:?}");

    // The server returns when the grace period ends.
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops")
        .expect("task")
        .expect("served");
    let took = stopping.elapsed();
    assert!(
        took >= delay + grace && took < delay + grace + Duration::from_secs(1),
        "stopped after {took:?}"
    );
    // The stuck request was given up on: the process exits once the server
    // returned, which closes its connection.
    assert!(!stuck.is_finished(), "the stuck request was never answered");
    stuck.abort();
    drop(app);
}
