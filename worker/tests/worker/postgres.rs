//! PostgreSQL (and Redshift pointed at PostgreSQL) through the pool
//! registry, against the shared server on 127.0.0.1:5432.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    closed_port, eventually, harness, pg_admin, pg_fixture, silent_server, spec, spec_with, unique, with,
};

#[tokio::test]
async fn postgresql_test_reports_version_server_time_and_schemas() {
    let fixture = pg_fixture().await;
    let h = harness(true);
    let outcome = h.registry.test(&spec("postgresql", fixture.config())).await;

    assert_eq!(outcome.error, None);
    let version = outcome.version.expect("version");
    assert!(version.starts_with("PostgreSQL 15."), "{version}");
    let server_time = outcome.server_time.expect("server time");
    assert!((chrono::Utc::now() - server_time).num_seconds().abs() < 60);
    let schemas = outcome.schemas_available.expect("schemas");
    assert!(schemas.contains(&"public".to_owned()), "{schemas:?}");
    assert!(
        !schemas
            .iter()
            .any(|schema| schema.starts_with("pg_") || schema == "information_schema")
    );
    assert!((outcome.tested_at - chrono::Utc::now()).num_seconds().abs() < 60);
}

#[tokio::test]
async fn redshift_pointed_at_postgresql_reports_version_and_sets_the_statement_timeout() {
    let fixture = pg_fixture().await;
    let h = harness(true);
    let spec = spec(
        "redshift",
        with(&fixture.config(), json!({"statement_timeout_seconds": 2})),
    );
    let outcome = h.registry.test(&spec).await;

    assert_eq!(outcome.error, None);
    assert!(outcome.version.expect("version").starts_with("PostgreSQL "));
    assert!(
        outcome
            .schemas_available
            .expect("schemas")
            .contains(&"public".to_owned())
    );
    let pool = h.registry.postgres(&spec).await.expect("pool");
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .expect("show");
    assert_eq!(timeout, "2s");
}

#[tokio::test]
async fn postgresql_pooled_connections_carry_the_statement_timeout() {
    let fixture = pg_fixture().await;
    let h = harness(true);
    let spec = spec(
        "postgresql",
        with(&fixture.config(), json!({"statement_timeout_seconds": 1})),
    );
    let pool = h.registry.postgres(&spec).await.expect("pool");
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .expect("show");
    assert_eq!(timeout, "1s");
    let slow = sqlx::query("SELECT pg_sleep(3)")
        .execute(&pool)
        .await
        .expect_err("cancelled by statement_timeout");
    let code = slow
        .as_database_error()
        .and_then(|error| error.code())
        .map(|code| code.into_owned());
    assert_eq!(code.as_deref(), Some("57014"));
}

#[tokio::test]
async fn postgresql_missing_database_is_database_not_found_3d000() {
    let fixture = pg_fixture().await;
    let h = harness(true);
    let config = with(
        &fixture.config(),
        json!({"database": format!("{}_missing", fixture.database)}),
    );
    let outcome = h.registry.test(&spec("postgresql", config)).await;

    let error = outcome.error.expect("failure");
    assert_eq!(error.error_type, "database_not_found");
    assert_eq!(error.code.as_deref(), Some("3D000"));
    assert!(!error.message.contains(&fixture.password));
}

#[tokio::test]
async fn postgresql_closed_port_is_connection_refused_at_once() {
    let h = harness(true);
    let config = json!({"host": "127.0.0.1", "port": closed_port(), "database": "x", "username": "u", "password": "p",
                        "connection_timeout_seconds": 10});
    let outcome = h.registry.test(&spec("postgresql", config)).await;

    assert_eq!(outcome.error.expect("failure").error_type, "connection_refused");
    assert!(
        outcome.latency_ms < 3000,
        "refusal must not wait for the pool's retries: {} ms",
        outcome.latency_ms
    );
}

#[tokio::test]
async fn postgresql_unknown_host_is_dns_error() {
    let h = harness(true);
    let config = json!({"host": "no-such-host.invalid", "database": "x", "username": "u", "password": "p"});
    let outcome = h.registry.test(&spec("postgresql", config)).await;

    let error = outcome.error.expect("failure");
    assert_eq!(error.error_type, "dns_error");
    assert!(error.message.contains("no-such-host.invalid"));
}

#[tokio::test]
async fn postgresql_silent_server_is_timeout_within_connection_timeout() {
    let silent = silent_server();
    let h = harness(true);
    let config = json!({"host": "127.0.0.1", "port": silent.port, "database": "x", "username": "u", "password": "p",
                        "connection_timeout_seconds": 1});
    let outcome = h.registry.test(&spec("postgresql", config)).await;

    assert_eq!(outcome.error.expect("failure").error_type, "timeout");
    assert!(
        (900..3000).contains(&outcome.latency_ms),
        "{} ms",
        outcome.latency_ms
    );
}

#[tokio::test]
async fn postgresql_private_addresses_are_blocked_without_connecting_when_private_networks_are_not_allowed() {
    let silent = silent_server();
    let h = harness(false);
    for host in ["127.0.0.1", "localhost", "::1", "::ffff:127.0.0.1"] {
        let config =
            json!({"host": host, "port": silent.port, "database": "x", "username": "u", "password": "p"});
        let outcome = h.registry.test(&spec("postgresql", config)).await;
        let error = outcome.error.expect("failure");
        assert_eq!(error.error_type, "blocked_address", "{host}");
    }
    assert!(
        !silent.was_contacted(),
        "a blocked address must not be connected to"
    );
    assert_eq!(h.registry.pool_count(), 0);
}

#[tokio::test]
async fn postgresql_hosts_that_are_not_a_single_name_or_address_are_invalid_config() {
    let h = harness(true);
    for host in [
        "/var/run/postgresql",
        "/tmp",
        "127.0.0.1,10.0.0.1",
        "db host",
        "host=127.0.0.1",
        "db@127.0.0.1",
    ] {
        let config = json!({"host": host, "database": "x", "username": "u", "password": "p"});
        let outcome = h.registry.test(&spec("postgresql", config)).await;
        assert_eq!(
            outcome.error.expect("failure").error_type,
            "invalid_config",
            "{host}"
        );
    }
    let config = json!({"host": "127.0.0.1", "database": "x", "username": "u", "password": "p",
                        "ssl_mode": "verify-full", "ssl_root_cert": "/etc/ssl/certs/ca-certificates.crt"});
    let outcome = h.registry.test(&spec("postgresql", config)).await;
    assert_eq!(
        outcome.error.expect("failure").error_type,
        "invalid_config",
        "a root certificate path"
    );
}

#[tokio::test]
async fn postgresql_tests_reuse_one_pooled_connection() {
    let fixture = pg_fixture().await;
    let admin = pg_admin().await;
    let h = harness(true);
    let spec = spec("postgresql", fixture.config());

    assert_eq!(h.registry.test(&spec).await.error, None);
    let after_first = fixture.backends(&admin).await;
    assert_eq!(after_first.len(), 1, "the test's connection stays in the pool");
    assert_eq!(h.registry.test(&spec).await.error, None);
    assert_eq!(
        fixture.backends(&admin).await,
        after_first,
        "the second test reused it"
    );

    let pool = h.registry.postgres(&spec).await.expect("pool");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("pid");
    assert_eq!(vec![pid], after_first);
    assert_eq!(h.registry.pool_count(), 1);
}

#[tokio::test]
async fn postgresql_idle_connections_close_after_idle_timeout() {
    let fixture = pg_fixture().await;
    let admin = pg_admin().await;
    let h = harness(true);
    let spec = spec(
        "postgresql",
        with(&fixture.config(), json!({"idle_timeout_seconds": 1})),
    );

    assert_eq!(h.registry.test(&spec).await.error, None);
    assert_eq!(fixture.backends(&admin).await.len(), 1);
    let closed = eventually(Duration::from_secs(8), || async {
        fixture.backends(&admin).await.is_empty()
    })
    .await;
    assert!(closed, "the idle connection was not closed");
}

#[tokio::test]
async fn postgresql_connections_are_replaced_after_max_lifetime() {
    let fixture = pg_fixture().await;
    let admin = pg_admin().await;
    let h = harness(true);
    let spec = spec(
        "postgresql",
        with(&fixture.config(), json!({"max_lifetime_seconds": 1})),
    );

    assert_eq!(h.registry.test(&spec).await.error, None);
    let first = fixture.backends(&admin).await;
    assert_eq!(first.len(), 1);
    let retired = eventually(Duration::from_secs(8), || async {
        !fixture.backends(&admin).await.contains(&first[0])
    })
    .await;
    assert!(retired, "the connection outlived max_lifetime");
    assert_eq!(h.registry.test(&spec).await.error, None);
    assert!(!fixture.backends(&admin).await.contains(&first[0]));
}

#[tokio::test]
async fn evicting_a_connector_closes_its_connections() {
    let fixture = pg_fixture().await;
    let admin = pg_admin().await;
    let h = harness(true);
    let spec = spec("postgresql", fixture.config());

    assert_eq!(h.registry.test(&spec).await.error, None);
    assert_eq!(fixture.backends(&admin).await.len(), 1);
    assert_eq!(h.registry.pool_count(), 1);
    h.registry.evict(&spec.uuid);
    assert_eq!(h.registry.pool_count(), 0);
    let closed = eventually(Duration::from_secs(5), || async {
        fixture.backends(&admin).await.is_empty()
    })
    .await;
    assert!(closed, "evict left the connection open");
}

#[tokio::test]
async fn a_newer_config_version_replaces_the_pool_and_closes_the_old_one() {
    let fixture = pg_fixture().await;
    let admin = pg_admin().await;
    let h = harness(true);
    let uuid = unique("conn");
    let v1 = spec_with(&uuid, 1, "postgresql", fixture.config());
    let v2 = spec_with(&uuid, 2, "postgresql", fixture.config());

    assert_eq!(h.registry.test(&v1).await.error, None);
    let old = fixture.backends(&admin).await;
    assert_eq!(old.len(), 1);
    let old_pool = h.registry.postgres(&v1).await.expect("v1 pool");

    assert_eq!(h.registry.test(&v2).await.error, None);
    assert_eq!(h.registry.pool_count(), 1);
    let replaced = eventually(Duration::from_secs(5), || async {
        let now = fixture.backends(&admin).await;
        now.len() == 1 && now != old
    })
    .await;
    assert!(replaced, "the v1 connection should be closed and a v2 one open");
    assert!(old_pool.is_closed(), "the v1 pool is closed");

    // A late job for v1 gets a one-off pool and does not displace v2.
    assert_eq!(h.registry.test(&v1).await.error, None);
    let pool = h.registry.postgres(&v2).await.expect("v2 pool");
    assert!(!pool.is_closed());
    assert_eq!(h.registry.pool_count(), 1);
}
