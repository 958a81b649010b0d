//! The pool registry itself: metrics, unknown types, wrong accessors.

use serde_json::json;

use crate::helpers::{harness, metric, pg_fixture, spec};

#[tokio::test]
async fn metrics_count_pools_by_type_and_tests_by_type_and_result() {
    let fixture = pg_fixture().await;
    let h = harness(true);
    let spec = spec("postgresql", fixture.config());
    assert_eq!(h.registry.test(&spec).await.error, None);
    let unknown_host = crate::helpers::spec(
        "postgresql",
        json!({"host": "no-such-host.invalid", "database": "x", "username": "u", "password": "p"}),
    );
    assert!(h.registry.test(&unknown_host).await.error.is_some());

    let pools =
        |h: &crate::helpers::Harness| metric(&h.metrics, "ferry_worker_pools", &[("type", "postgresql")]);
    assert_eq!(pools(&h), 1.0);
    let tests = |result: &str| {
        metric(
            &h.metrics,
            "ferry_worker_connection_tests_total",
            &[("type", "postgresql"), ("result", result)],
        )
    };
    assert_eq!(tests("success"), 1.0);
    assert_eq!(tests("dns_error"), 1.0);

    h.registry.evict(&spec.uuid);
    assert_eq!(pools(&h), 0.0);
    let exported = h
        .metrics
        .gather()
        .iter()
        .flat_map(|family| family.get_metric().to_vec())
        .count();
    assert!(exported > 0);
    let text = format!("{:?}", h.metrics.gather());
    assert!(!text.contains(&spec.uuid), "connector uuids must not be labels");
}

#[tokio::test]
async fn a_connector_type_without_a_driver_is_invalid_config() {
    let h = harness(true);
    let error = h
        .registry
        .test(&spec("azure", json!({"server": "x"})))
        .await
        .error
        .expect("no driver");
    assert_eq!(error.error_type, "invalid_config");
    assert!(!ferry_worker::connectors::has_driver("azure"));
    assert_eq!(
        metric(
            &h.metrics,
            "ferry_worker_connection_tests_total",
            &[("type", "other")]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_pool_accessor_refuses_a_connector_of_another_family() {
    let h = harness(true);
    let redis = spec("redis", json!({"host": "127.0.0.1", "port": 6379}));
    let error = h.registry.postgres(&redis).await.expect_err("not postgres");
    assert_eq!(error.failure.error_type, "invalid_config");
}
