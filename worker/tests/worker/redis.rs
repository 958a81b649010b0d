//! Redis connectors: the shared server on 6379, and a private
//! `redis-server --requirepass` the test starts.

use serde_json::json;

use crate::helpers::{closed_port, harness, redis_with_password, spec};

#[tokio::test]
async fn redis_test_reports_version_and_server_time() {
    let h = harness(true);
    let outcome = h
        .registry
        .test(&spec("redis", json!({"host": "127.0.0.1", "port": 6379})))
        .await;

    assert_eq!(outcome.error, None);
    let version = outcome.version.expect("version");
    assert!(version.starts_with("Redis "), "{version}");
    let server_time = outcome.server_time.expect("TIME");
    assert!((chrono::Utc::now() - server_time).num_seconds().abs() < 60);
}

#[tokio::test]
async fn redis_wrong_password_is_authentication_failed_wrongpass() {
    let password = "right-redis-pw";
    let server = redis_with_password(password).await;
    let h = harness(true);
    let config =
        |password: Option<&str>| json!({"host": "127.0.0.1", "port": server.port, "password": password});

    assert_eq!(
        h.registry
            .test(&spec("redis", config(Some(password))))
            .await
            .error,
        None
    );

    let wrong = "wrong-redis-pw-5512";
    let error = h
        .registry
        .test(&spec("redis", config(Some(wrong))))
        .await
        .error
        .expect("failure");
    assert_eq!(error.error_type, "authentication_failed");
    assert_eq!(error.code.as_deref(), Some("WRONGPASS"));
    assert!(!error.message.contains(wrong), "{}", error.message);

    let error = h
        .registry
        .test(&spec("redis", config(None)))
        .await
        .error
        .expect("failure");
    assert_eq!(error.error_type, "authentication_failed");
    assert_eq!(error.code.as_deref(), Some("NOAUTH"));
}

#[tokio::test]
async fn redis_database_index_out_of_range_is_database_not_found() {
    let h = harness(true);
    let outcome = h
        .registry
        .test(&spec(
            "redis",
            json!({"host": "127.0.0.1", "port": 6379, "database": 9999}),
        ))
        .await;

    let error = outcome.error.expect("failure");
    assert_eq!(error.error_type, "database_not_found");
}

#[tokio::test]
async fn redis_closed_port_is_connection_refused() {
    let h = harness(true);
    let outcome = h
        .registry
        .test(&spec(
            "redis",
            json!({"host": "127.0.0.1", "port": closed_port()}),
        ))
        .await;

    assert_eq!(outcome.error.expect("failure").error_type, "connection_refused");
}

#[tokio::test]
async fn redis_pooled_connections_are_authenticated_and_on_the_configured_database() {
    let password = "pool-redis-pw";
    let server = redis_with_password(password).await;
    let h = harness(true);
    let spec = spec(
        "redis",
        json!({"host": "127.0.0.1", "port": server.port, "password": password, "database": 3}),
    );
    let pool = h.registry.redis(&spec).await.expect("pool");
    let mut connection = pool.get().await.expect("connection");
    let () = deadpool_redis::redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut connection)
        .await
        .expect("set");
    drop(connection);
    let info: String = deadpool_redis::redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut pool.get().await.expect("connection"))
        .await
        .expect("info");
    assert!(info.contains("db3:keys=1"), "{info}");
}
