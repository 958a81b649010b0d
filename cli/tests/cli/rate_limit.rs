//! The per-user rate limit of `/api` routes (FERRY_RATE_LIMIT_PER_MINUTE,
//! FERRY_RATE_LIMIT_BURST): one budget per user shared by every API replica
//! on the same Redis, 429 `rate_limited` with `Retry-After` over it.

use std::time::Duration;

use crate::distributed::Deployment;
use crate::{KEY, Running};

/// An api process of `deployment` limited to 30 requests a minute (one
/// every 2 s) with a burst of 3.
fn limited_api(deployment: &Deployment) -> (Running, String) {
    deployment.api_with(
        KEY,
        &[
            ("FERRY_RATE_LIMIT_PER_MINUTE", "30"),
            ("FERRY_RATE_LIMIT_BURST", "3"),
        ],
    )
}

/// Status, Retry-After and body of a GET of /api/projects.
fn list_projects(base: &str, token: &str) -> (u16, Option<u64>, serde_json::Value) {
    crate::block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{base}/api/projects"))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.json().await.unwrap_or_default();
        (status, retry_after, body)
    })
}

#[test]
fn a_user_over_the_budget_gets_429_on_every_replica_and_others_are_unaffected() {
    let deployment = Deployment::new();
    let (_a, api_a) = limited_api(&deployment);
    let (_b, api_b) = limited_api(&deployment);
    let ops = deployment.token_for("user_ops");
    let other = deployment.token_for("user_other");

    // The burst (3) plus the request itself, spread over both replicas.
    for (i, base) in [&api_a, &api_b, &api_a, &api_b].into_iter().enumerate() {
        let (status, _, body) = list_projects(base, &ops);
        assert_eq!(status, 200, "request {i} is within the burst: {body}");
    }
    let mut emptied = std::time::Instant::now();
    for base in [&api_a, &api_b] {
        let (status, retry_after, body) = list_projects(base, &ops);
        emptied = std::time::Instant::now();
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"], "rate_limited", "{body}");
        let retry_after = retry_after.expect("Retry-After");
        assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(body["details"]["retry_after_seconds"], retry_after);
    }

    // Another user of the same organization has a budget of their own, and
    // routes outside /api are not limited.
    for base in [&api_a, &api_b] {
        assert_eq!(list_projects(base, &other).0, 200);
        for _ in 0..5 {
            assert_eq!(crate::http_status(&format!("{base}/healthz")), Some(200));
        }
    }

    // The steady rate refills one request every 2 s: after at least 2 s,
    // some requests pass again on either replica, but no more than the
    // time since the budget was emptied has refilled (however slowly a
    // loaded machine ran the requests above), and then 429 again.
    std::thread::sleep(Duration::from_millis(2_100));
    let mut passed = 0;
    for base in [&api_b, &api_a].into_iter().cycle().take(8) {
        match list_projects(base, &ops).0 {
            200 => passed += 1,
            429 => break,
            other => panic!("unexpected status {other}"),
        }
    }
    let refilled = emptied.elapsed().as_secs() / 2 + 1;
    assert!(
        (1..=refilled).contains(&passed),
        "{passed} requests passed, {refilled} at most had refilled"
    );
}

#[test]
fn a_zero_limit_turns_rate_limiting_off() {
    let deployment = Deployment::new();
    let (_api, base) = deployment.api(KEY);
    let token = deployment.token_for("user_ops");
    for i in 0..150 {
        let (status, _, body) = list_projects(&base, &token);
        assert_eq!(status, 200, "request {i}: {body}");
    }
}
