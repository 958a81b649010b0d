//! Outbound connections are pinned to the address the network policy
//! checked, and refusals never tell what an internal name resolves to.

use serde_json::json;

use crate::helpers::{harness, spec};

/// Every address `localhost` has, as text, to look for in messages.
fn loopback_texts() -> Vec<String> {
    let mut texts = vec!["127.0.0.1".to_owned(), "::1".to_owned()];
    if let Ok(found) = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 1)) {
        texts.extend(found.map(|addr| addr.ip().to_string()));
    }
    texts
}

#[tokio::test]
async fn a_blocked_host_names_error_does_not_reveal_what_it_resolves_to() {
    let h = harness(false);
    let cases = [
        (
            "postgresql",
            json!({"host": "localhost", "database": "d", "username": "u", "password": "pinning-secret-9"}),
        ),
        (
            "postgresql",
            json!({"host": "localhost", "database": "d", "username": "u", "password": "pinning-secret-9",
                   "ssl_mode": "verify-full", "ssl_root_cert": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"}),
        ),
        (
            "mysql",
            json!({"host": "localhost", "database": "d", "username": "u", "password": "pinning-secret-9"}),
        ),
        ("redis", json!({"host": "localhost"})),
        (
            "mongodb",
            json!({"connection_string": "mongodb://localhost:27017", "database": "d"}),
        ),
        (
            "rest_api",
            json!({"base_url": "http://localhost:9/", "auth_type": "none"}),
        ),
    ];
    for (connector_type, config) in cases {
        let error = h
            .registry
            .test(&spec(connector_type, config))
            .await
            .error
            .unwrap_or_else(|| panic!("{connector_type}: not refused"));
        assert_eq!(error.error_type, "blocked_address", "{connector_type}: {error:?}");
        assert!(
            error.message.contains("localhost"),
            "{connector_type}: {}",
            error.message
        );
        for ip in loopback_texts() {
            assert!(
                !error.message.contains(&ip),
                "{connector_type}: {} reveals {ip}",
                error.message
            );
        }
    }
}
