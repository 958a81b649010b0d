//! Databricks connection tests through the pool registry against the
//! stand-in warehouse of `ferry-testkit` (the Statement Execution API on
//! 127.0.0.1, reached under a workspace host name of its own), and the
//! transport failures a workspace can meet: a refused, silent, TLS-broken,
//! unresolvable or forbidden address.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_shared::domain::TestFailure;
use ferry_testkit::databricks::Warehouse;
use ferry_worker::connectors::databricks::testing::serve_at;
use serde_json::{Value, json};

use crate::helpers::{closed_port, harness, silent_server, spec, unique, with};

const TOKEN: &str = "dapi-0123456789abcdef";

/// A warehouse reachable under its own host name.
async fn warehouse() -> Warehouse {
    let warehouse = Warehouse::start(TOKEN).await;
    serve_at(&warehouse.host, warehouse.addr, false);
    warehouse
}

/// The failure of a connection test of `config` (private networks as
/// `allow_private`), or `None` when it passed.
async fn test(config: Value, allow_private: bool) -> Option<TestFailure> {
    harness(allow_private)
        .registry
        .test(&spec("databricks", config))
        .await
        .error
}

fn kind_and_code(failure: &TestFailure) -> (&str, Option<&str>) {
    (failure.error_type.as_str(), failure.code.as_deref())
}

#[tokio::test]
async fn databricks_test_runs_select_1_through_the_statement_api() {
    let warehouse = warehouse().await;
    assert_eq!(test(warehouse.config(TOKEN), true).await, None);
    let submissions = warehouse.submissions();
    assert_eq!(submissions.len(), 1);
    let submitted = &submissions[0];
    assert_eq!(submitted["statement"], "SELECT 1");
    assert_eq!(submitted["warehouse_id"], json!(warehouse.warehouse_id));
    assert_eq!(
        (&submitted["disposition"], &submitted["format"]),
        (&json!("INLINE"), &json!("JSON_ARRAY"))
    );
    assert!(warehouse.cancels().is_empty());
}

#[tokio::test]
async fn databricks_test_sends_the_catalog_and_schema() {
    let warehouse = warehouse().await;
    let config = with(
        &warehouse.config(TOKEN),
        json!({"catalog": "main", "schema": "sales"}),
    );
    assert_eq!(test(config, true).await, None);
    let submitted = &warehouse.submissions()[0];
    assert_eq!(
        (&submitted["catalog"], &submitted["schema"]),
        (&json!("main"), &json!("sales"))
    );
}

#[tokio::test]
async fn databricks_a_bad_token_is_authentication_failed_401_without_the_token() {
    let warehouse = warehouse().await;
    let failure = test(warehouse.config("dapi-wrong-token"), true)
        .await
        .expect("refused");
    assert_eq!(kind_and_code(&failure), ("authentication_failed", Some("401")));
    assert!(
        !failure.message.contains("dapi-wrong-token"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn databricks_an_unknown_warehouse_is_database_not_found() {
    let warehouse = warehouse().await;
    let config = with(
        &warehouse.config(TOKEN),
        json!({"http_path": "/sql/1.0/warehouses/0000000000000000"}),
    );
    let failure = test(config, true).await.expect("no such warehouse");
    assert_eq!(failure.error_type.as_str(), "database_not_found");
}

#[tokio::test]
async fn databricks_a_cluster_http_path_is_invalid_config() {
    let warehouse = warehouse().await;
    let config = with(
        &warehouse.config(TOKEN),
        json!({"http_path": "/sql/protocolv1/o/1234567890/0123-456789-abcdefgh"}),
    );
    let failure = test(config, true).await.expect("a cluster");
    assert_eq!(failure.error_type.as_str(), "invalid_config");
    assert!(warehouse.requests().is_empty());
}

#[tokio::test]
async fn databricks_a_throttled_test_waits_out_retry_after() {
    let warehouse = warehouse().await;
    warehouse.throttle(1, 429, Some("1"));
    let started = Instant::now();
    assert_eq!(test(warehouse.config(TOKEN), true).await, None);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn databricks_a_private_workspace_address_is_blocked_when_the_policy_forbids_it() {
    let warehouse = warehouse().await;
    let failure = test(warehouse.config(TOKEN), false).await.expect("blocked");
    assert_eq!(failure.error_type.as_str(), "blocked_address");
    let literal = with(&warehouse.config(TOKEN), json!({"server_hostname": "127.0.0.1"}));
    let failure = test(literal, false).await.expect("blocked");
    assert_eq!(failure.error_type.as_str(), "blocked_address");
    assert!(warehouse.requests().is_empty(), "{:?}", warehouse.requests());
}

#[tokio::test]
async fn databricks_an_unresolvable_workspace_is_dns_error() {
    let config = json!({
        "server_hostname": format!("{}.invalid", unique("nowhere").replace('_', "-")),
        "http_path": "/sql/1.0/warehouses/abc123",
        "access_token": TOKEN,
        "connection_timeout_seconds": 5,
    });
    let failure = test(config, true).await.expect("no such host");
    assert_eq!(failure.error_type.as_str(), "dns_error");
}

#[tokio::test]
async fn databricks_nothing_listening_is_connection_refused() {
    let host = format!("{}.cloud.databricks.test", unique("refused").replace('_', "-"));
    serve_at(&host, SocketAddr::from(([127, 0, 0, 1], closed_port())), false);
    let config = json!({
        "server_hostname": host,
        "http_path": "/sql/1.0/warehouses/abc123",
        "access_token": TOKEN,
        "connection_timeout_seconds": 5,
    });
    let failure = test(config, true).await.expect("refused");
    assert_eq!(failure.error_type.as_str(), "connection_refused");
}

#[tokio::test]
async fn databricks_a_silent_workspace_is_timeout_within_the_connection_timeout() {
    let silent = silent_server();
    let host = format!("{}.cloud.databricks.test", unique("silent").replace('_', "-"));
    serve_at(&host, SocketAddr::from(([127, 0, 0, 1], silent.port)), false);
    let config = json!({
        "server_hostname": host,
        "http_path": "/sql/1.0/warehouses/abc123",
        "access_token": TOKEN,
        "connection_timeout_seconds": 2,
    });
    let started = Instant::now();
    let failure = test(config, true).await.expect("silent");
    assert_eq!(failure.error_type.as_str(), "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

/// `openssl s_server` with a self-signed certificate for `host`, on a free
/// port; killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server(host: &str) -> TlsServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str], cwd: &Path| {
        ferry_testkit::run(Command::new("openssl").args(args).current_dir(cwd), "openssl");
    };
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            &format!("/CN={host}"),
            "-addext",
            &format!("subjectAltName=DNS:{host}"),
        ],
        dir.path(),
    );
    let port = closed_port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(path("cert.pem"))
        .arg("-key")
        .arg(path("key.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    TlsServer {
        child,
        port,
        _dir: dir,
    }
}

#[tokio::test]
async fn databricks_an_untrusted_certificate_is_tls_error() {
    let host = format!("{}.cloud.databricks.test", unique("selfsigned").replace('_', "-"));
    let server = tls_server(&host);
    serve_at(&host, SocketAddr::from(([127, 0, 0, 1], server.port)), true);
    let config = json!({
        "server_hostname": host,
        "http_path": "/sql/1.0/warehouses/abc123",
        "access_token": TOKEN,
        "connection_timeout_seconds": 5,
    });
    let failure = test(config, true).await.expect("untrusted");
    assert_eq!(failure.error_type.as_str(), "tls_error", "{}", failure.message);
    assert!(failure.message.contains("certificate"), "{}", failure.message);
}
