//! TLS modes and password authentication against a private PostgreSQL
//! cluster each test starts (the shared server trusts every local login, so
//! it cannot tell a wrong password from a right one).

use serde_json::json;

use crate::helpers::{APP_PASSWORD, PrivateCluster, TLS_ONLY_ROLE, harness, spec, uses_tls, with};

#[tokio::test]
async fn postgresql_wrong_password_is_authentication_failed_28p01_without_echoing_it() {
    let cluster = PrivateCluster::start().await;
    let h = harness(true);
    let right = cluster.config("127.0.0.1");
    assert_eq!(
        h.registry.test(&spec("postgresql", right.clone())).await.error,
        None
    );

    let wrong_password = "wrong-staple-7431";
    let outcome = h
        .registry
        .test(&spec(
            "postgresql",
            with(&right, json!({"password": wrong_password})),
        ))
        .await;
    let error = outcome.error.expect("failure");
    assert_eq!(error.error_type, "authentication_failed");
    assert_eq!(error.code.as_deref(), Some("28P01"));
    assert!(!error.message.contains(wrong_password), "{}", error.message);
    assert!(!error.message.contains(APP_PASSWORD), "{}", error.message);
    let shown = serde_json::to_string(&error).expect("json");
    assert!(!shown.contains(wrong_password));
}

#[tokio::test]
async fn verify_full_connects_to_the_certificates_name_and_refuses_an_address_it_does_not_name() {
    let cluster = PrivateCluster::start().await;
    let h = harness(true);
    let verify_full = json!({"ssl_mode": "verify-full", "ssl_root_cert": cluster.ca_pem});

    let by_name = spec(
        "postgresql",
        with(&cluster.config("localhost"), verify_full.clone()),
    );
    let outcome = h.registry.test(&by_name).await;
    assert_eq!(outcome.error, None);
    assert!(uses_tls(&h.registry.postgres(&by_name).await.expect("pool")).await);

    let by_address = spec("postgresql", with(&cluster.config("127.0.0.1"), verify_full));
    let error = h.registry.test(&by_address).await.error.expect("name mismatch");
    assert_eq!(error.error_type, "tls_error");
    assert!(
        error.message.contains("not valid for this host name"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let cluster = PrivateCluster::start().await;
    let h = harness(true);

    let right_ca = with(
        &cluster.config("127.0.0.1"),
        json!({"ssl_mode": "verify-ca", "ssl_root_cert": cluster.ca_pem}),
    );
    assert_eq!(
        h.registry.test(&spec("postgresql", right_ca)).await.error,
        None,
        "127.0.0.1 is not in the certificate"
    );

    let other_ca = with(
        &cluster.config("localhost"),
        json!({"ssl_mode": "verify-ca", "ssl_root_cert": cluster.other_ca_pem}),
    );
    let error = h
        .registry
        .test(&spec("postgresql", other_ca))
        .await
        .error
        .expect("untrusted chain");
    assert_eq!(error.error_type, "tls_error");

    let no_root = with(&cluster.config("localhost"), json!({"ssl_mode": "verify-full"}));
    let error = h
        .registry
        .test(&spec("postgresql", no_root))
        .await
        .error
        .expect("test CA is not a public root");
    assert_eq!(error.error_type, "tls_error");
}

#[tokio::test]
async fn require_encrypts_without_verifying_and_disable_never_uses_tls() {
    let cluster = PrivateCluster::start().await;
    let h = harness(true);

    // No root certificate: `require` must not verify, and must encrypt.
    let require = spec(
        "postgresql",
        with(&cluster.config("127.0.0.1"), json!({"ssl_mode": "require"})),
    );
    assert_eq!(h.registry.test(&require).await.error, None);
    assert!(uses_tls(&h.registry.postgres(&require).await.expect("pool")).await);

    let enabled = spec(
        "postgresql",
        with(&cluster.config("127.0.0.1"), json!({"ssl_enabled": true})),
    );
    assert_eq!(h.registry.test(&enabled).await.error, None);
    assert!(
        uses_tls(&h.registry.postgres(&enabled).await.expect("pool")).await,
        "ssl_enabled means require"
    );

    let disable = spec(
        "postgresql",
        with(&cluster.config("127.0.0.1"), json!({"ssl_mode": "disable"})),
    );
    assert_eq!(h.registry.test(&disable).await.error, None);
    assert!(!uses_tls(&h.registry.postgres(&disable).await.expect("pool")).await);

    // A role the server only admits over TLS: `disable` fails, `require` works.
    let tls_only = with(&cluster.config("127.0.0.1"), json!({"username": TLS_ONLY_ROLE}));
    let error = h
        .registry
        .test(&spec(
            "postgresql",
            with(&tls_only, json!({"ssl_mode": "disable"})),
        ))
        .await
        .error
        .expect("server requires TLS");
    assert_eq!(error.error_type, "authentication_failed");
    assert_eq!(error.code.as_deref(), Some("28000"));
    assert_eq!(
        h.registry
            .test(&spec(
                "postgresql",
                with(&tls_only, json!({"ssl_mode": "require"}))
            ))
            .await
            .error,
        None
    );
}
