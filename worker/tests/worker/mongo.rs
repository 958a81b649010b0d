//! MongoDB connectors against nx-27017, a MongoDB wire-protocol server the
//! test starts from the venv `scripts/test-peers.sh` creates.
//!
//! nx-27017 has no authentication (SCRAM fails against it), so credential
//! failures are covered by the unit tests of the error mapping in
//! `worker/src/connectors/mongo.rs` (`classify`, `map_error`).

use serde_json::json;

use crate::helpers::{closed_port, harness, nx_27017, spec};

#[tokio::test]
async fn mongodb_test_against_nx_27017_reports_version_server_time_and_databases() {
    let peer = nx_27017().await;
    let h = harness(true);
    let config = json!({"connection_string": format!("mongodb://127.0.0.1:{}/", peer.port), "database": "analytics",
                        "connection_timeout_seconds": 5});
    let outcome = h.registry.test(&spec("mongodb", config)).await;

    assert_eq!(outcome.error, None);
    let version = outcome.version.expect("version");
    assert!(version.starts_with("MongoDB "), "{version}");
    assert!(outcome.server_time.is_some());
    assert!(
        outcome
            .schemas_available
            .expect("database names")
            .contains(&"admin".to_owned())
    );
}

#[tokio::test]
async fn mongodb_unknown_host_is_dns_error() {
    let h = harness(true);
    let config = json!({"connection_string": "mongodb://app:pw@no-such-host.invalid:27017/", "database": "x",
                        "connection_timeout_seconds": 3});
    let error = h
        .registry
        .test(&spec("mongodb", config))
        .await
        .error
        .expect("failure");
    assert_eq!(error.error_type, "dns_error");
    assert!(!error.message.contains("app:pw"));
}

#[tokio::test]
async fn mongodb_closed_port_is_connection_refused() {
    let h = harness(true);
    let config = json!({"connection_string": format!("mongodb://127.0.0.1:{}/", closed_port()), "database": "x",
                        "connection_timeout_seconds": 2});
    let outcome = h.registry.test(&spec("mongodb", config)).await;
    assert_eq!(outcome.error.expect("failure").error_type, "connection_refused");
}

#[tokio::test]
async fn mongodb_private_addresses_are_blocked_when_private_networks_are_not_allowed() {
    let h = harness(false);
    for uri in [
        "mongodb://127.0.0.1:27017/",
        "mongodb://8.8.8.8:27017,localhost:27017/?replicaSet=rs0",
    ] {
        let config = json!({"connection_string": uri, "database": "x", "connection_timeout_seconds": 3});
        let error = h
            .registry
            .test(&spec("mongodb", config))
            .await
            .error
            .expect("failure");
        assert_eq!(error.error_type, "blocked_address", "{uri}");
    }
}

#[tokio::test]
async fn mongodb_connection_strings_naming_local_files_are_invalid_config_and_never_echoed() {
    let h = harness(true);
    let uri = "mongodb://app:s3cr3t-pw@db.example.com/?tls=true&tlsCertificateKeyFile=/etc/ferry/client.pem";
    let error = h
        .registry
        .test(&spec(
            "mongodb",
            json!({"connection_string": uri, "database": "x"}),
        ))
        .await
        .error
        .expect("refused");
    assert_eq!(error.error_type, "invalid_config");
    assert!(!error.message.contains("s3cr3t-pw"));
}
