//! MySQL connectors against the shared MariaDB (a user with a password,
//! created through the server's socket for each test).

use serde_json::json;

use crate::helpers::{closed_port, harness, maria_fixture, mariadb, spec, with};

#[tokio::test]
async fn mysql_test_reports_version_server_time_and_databases() {
    let fixture = maria_fixture();
    let h = harness(true);
    let outcome = h.registry.test(&spec("mysql", fixture.config())).await;

    assert_eq!(outcome.error, None);
    let version = outcome.version.expect("version");
    assert!(
        version.starts_with("MariaDB 10.") || version.starts_with("MariaDB 11."),
        "{version}"
    );
    let server_time = outcome.server_time.expect("server time");
    assert!(
        (chrono::Utc::now() - server_time).num_seconds().abs() < 60,
        "UTC_TIMESTAMP is UTC: {server_time}"
    );
    let databases = outcome.schemas_available.expect("databases");
    assert!(databases.contains(&fixture.database), "{databases:?}");
    assert!(!databases.contains(&"information_schema".to_owned()));
}

#[tokio::test]
async fn mysql_wrong_password_is_authentication_failed_1045_without_echoing_it() {
    let fixture = maria_fixture();
    let h = harness(true);
    let wrong_password = "wrong-mysql-pass-9911";
    let outcome = h
        .registry
        .test(&spec(
            "mysql",
            with(&fixture.config(), json!({"password": wrong_password})),
        ))
        .await;

    let error = outcome.error.expect("failure");
    assert_eq!(error.error_type, "authentication_failed");
    assert_eq!(error.code.as_deref(), Some("1045"));
    assert!(!error.message.contains(wrong_password), "{}", error.message);
}

#[tokio::test]
async fn mysql_unknown_database_is_database_not_found_1049() {
    let fixture = maria_fixture();
    let h = harness(true);
    let config = with(
        &fixture.config(),
        json!({"database": format!("{}_missing", fixture.database)}),
    );
    let outcome = h.registry.test(&spec("mysql", config)).await;

    let error = outcome.error.expect("failure");
    assert_eq!(error.error_type, "database_not_found");
    assert_eq!(error.code.as_deref(), Some("1049"));
}

#[tokio::test]
async fn mysql_closed_port_is_connection_refused_at_once() {
    let h = harness(true);
    let config = json!({"host": "127.0.0.1", "port": closed_port(), "database": "x", "username": "u", "password": "p",
                        "connection_timeout_seconds": 10});
    let outcome = h.registry.test(&spec("mysql", config)).await;

    assert_eq!(outcome.error.expect("failure").error_type, "connection_refused");
    assert!(outcome.latency_ms < 3000, "{} ms", outcome.latency_ms);
}

#[tokio::test]
async fn mysql_load_data_local_infile_is_refused_and_the_table_stays_empty() {
    let fixture = maria_fixture();
    mariadb(&format!("CREATE TABLE `{}`.loot (line TEXT)", fixture.database));
    let local = tempfile::NamedTempFile::new().expect("local file");
    std::fs::write(local.path(), "worker-local-secret\n").expect("write");
    let h = harness(true);
    let pool = h
        .registry
        .mysql(&spec("mysql", fixture.config()))
        .await
        .expect("pool");

    // The server would allow it: the refusal must come from the client side.
    let server_allows: i64 = sqlx::query_scalar("SELECT @@GLOBAL.local_infile")
        .fetch_one(&pool)
        .await
        .expect("variable");
    assert_eq!(
        server_allows, 1,
        "MariaDB must have local_infile=ON for this test to prove anything"
    );

    let statement = format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE loot",
        local.path().display()
    );
    let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&pool).await;
    assert!(
        refused.is_err(),
        "LOAD DATA LOCAL must fail on a pooled connection"
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM loot")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn mysql_pooled_connections_carry_the_statement_timeout() {
    let fixture = maria_fixture();
    let h = harness(true);
    let spec = spec(
        "mysql",
        with(&fixture.config(), json!({"statement_timeout_seconds": 7})),
    );
    let pool = h.registry.mysql(&spec).await.expect("pool");
    let seconds: f64 = sqlx::query_scalar("SELECT @@SESSION.max_statement_time")
        .fetch_one(&pool)
        .await
        .expect("variable");
    assert_eq!(seconds, 7.0);
}
