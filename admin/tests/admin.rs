//! The admin endpoint served in-process on port 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_admin::Readiness;
use tokio::net::TcpListener;

#[tokio::test]
async fn the_admin_endpoint_serves_health_metrics_and_a_readiness_that_follows_its_check() {
    let registry = ferry_admin::registry("worker").expect("registry");
    let ready = Arc::new(AtomicBool::new(true));
    let readiness = {
        let ready = ready.clone();
        Readiness::new(move || {
            let ready = ready.load(Ordering::SeqCst);
            async move {
                if ready {
                    Ok(())
                } else {
                    Err("the metadata store does not answer".to_owned())
                }
            }
        })
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ferry_admin::serve(listener, registry, readiness, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();

    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.expect("json");
    assert_eq!(body["status"], "ok");

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    let content_type = metrics.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = metrics.text().await.expect("text");
    assert!(
        text.contains(&format!(
            "ferry_build_info{{commit=\"{}\",role=\"worker\",version=\"{}\"}} 1",
            ferry_admin::BUILD_COMMIT,
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );

    let ready_now = client.get(format!("{base}/readyz")).send().await.expect("readyz");
    assert_eq!(ready_now.status(), 200);

    ready.store(false, Ordering::SeqCst);
    let not_ready = client.get(format!("{base}/readyz")).send().await.expect("readyz");
    assert_eq!(not_ready.status(), 503);
    let body: serde_json::Value = not_ready.json().await.expect("json");
    assert_eq!(body["error"], "service_unavailable");
    assert_eq!(body["message"], "the metadata store does not answer");

    let _ = stop.send(());
    server.await.expect("join").expect("served until shutdown");
}
