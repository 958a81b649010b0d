//! Outbound connections are pinned to the address the network policy
//! checked, and refusals never tell what an internal name resolves to.

use std::sync::{Arc, Mutex};

use ferry_worker::connectors::network;
use mongodb::bson::{DateTime, Document, doc};
use serde_json::json;

use crate::helpers::{PrivateCluster, harness, maria_fixture, nx_27017, spec, uses_tls, with};

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

/// `pinned.ferry.test` is unknown to DNS; only this process's table
/// resolves it (to the private cluster's address). A driver that resolved
/// the name itself could not connect at all.
#[tokio::test]
async fn postgresql_verify_full_connects_to_the_checked_address_and_verifies_the_name() {
    network::testing::resolve_as("pinned.ferry.test", &["127.0.0.1".parse().expect("ip")]);
    network::testing::resolve_as("unnamed.ferry.test", &["127.0.0.1".parse().expect("ip")]);
    let cluster = PrivateCluster::start().await;
    let h = harness(true);
    let verify_full = json!({"ssl_mode": "verify-full", "ssl_root_cert": cluster.ca_pem});

    let pinned = spec(
        "postgresql",
        with(&cluster.config("pinned.ferry.test"), verify_full.clone()),
    );
    let outcome = h.registry.test(&pinned).await;
    assert_eq!(outcome.error, None);
    let pool = h.registry.postgres(&pinned).await.expect("pool");
    assert!(uses_tls(&pool).await);
    // A second connection while the first is busy goes the same way.
    let first = pool.acquire().await.expect("first");
    let mut second = pool.acquire().await.expect("second");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *second)
        .await
        .expect("query");
    assert_eq!(one, 1);
    drop((first, second));

    // Same address, a name the certificate does not carry: refused.
    let unnamed = spec(
        "postgresql",
        with(&cluster.config("unnamed.ferry.test"), verify_full),
    );
    let error = h.registry.test(&unnamed).await.error.expect("name mismatch");
    assert_eq!(error.error_type, "tls_error", "{error:?}");
}

// ------------------------------------------------------------------ MongoDB

/// A MongoDB wire server on 127.0.0.1 claiming to be the primary of replica
/// set `rs0` whose members are itself and `others`. Answers `hello` (OP_QUERY
/// and OP_MSG), `buildInfo` and `listDatabases`; records every command name.
async fn fake_replica_set(others: &[&str]) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let me = format!("127.0.0.1:{port}");
    let mut hosts = vec![me.clone()];
    hosts.extend(others.iter().map(|other| (*other).to_owned()));
    let commands = Arc::new(Mutex::new(Vec::new()));
    let seen = commands.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (me, hosts, seen) = (me.clone(), hosts.clone(), seen.clone());
            tokio::spawn(async move {
                let _ = serve(socket, &me, &hosts, &seen).await;
            });
        }
    });
    (port, commands)
}

async fn serve(
    mut socket: tokio::net::TcpStream,
    me: &str,
    hosts: &[String],
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let mut header = [0u8; 16];
        socket.read_exact(&mut header).await?;
        let int =
            |at: usize| i32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let (length, request_id, op_code) = (int(0), int(4), int(12));
        let mut body = vec![0u8; usize::try_from(length).expect("length") - 16];
        socket.read_exact(&mut body).await?;
        let command_at = match op_code {
            // OP_QUERY: flags, collection name (C string), skip, return.
            2004 => 4 + body[4..].iter().position(|&b| b == 0).expect("name") + 1 + 8,
            // OP_MSG: flag bits, section kind 0.
            2013 => 5,
            _ => return Ok(()),
        };
        let command = Document::from_reader(&mut &body[command_at..]).expect("command");
        let name = command.keys().next().cloned().unwrap_or_default();
        seen.lock().expect("seen").push(name.clone());
        let reply = match name.to_ascii_lowercase().as_str() {
            "hello" | "ismaster" => doc! {
                "ok": 1.0, "helloOk": true, "isWritablePrimary": true, "ismaster": true,
                "setName": "rs0", "setVersion": 1, "hosts": hosts.to_vec(), "primary": me, "me": me,
                "minWireVersion": 0, "maxWireVersion": 17, "maxBsonObjectSize": 16_777_216,
                "maxMessageSizeBytes": 48_000_000, "maxWriteBatchSize": 100_000,
                "localTime": DateTime::now(), "logicalSessionTimeoutMinutes": 30, "connectionId": 1,
            },
            "buildinfo" => doc! { "ok": 1.0, "version": "7.0.0" },
            "listdatabases" => doc! { "ok": 1.0, "databases": [] },
            _ => doc! { "ok": 1.0 },
        };
        let mut document = Vec::new();
        reply.to_writer(&mut document).expect("bson");
        let mut out = Vec::new();
        let (op, prefix): (i32, Vec<u8>) = if op_code == 2004 {
            // OP_REPLY: flags, cursor id, starting from, number returned.
            let mut prefix = vec![0u8; 4 + 8 + 4];
            prefix.extend_from_slice(&1i32.to_le_bytes());
            (1, prefix)
        } else {
            (2013, vec![0, 0, 0, 0, 0])
        };
        let total = 16 + prefix.len() + document.len();
        out.extend_from_slice(&i32::try_from(total).expect("size").to_le_bytes());
        out.extend_from_slice(&request_id.wrapping_add(1_000_000).to_le_bytes());
        out.extend_from_slice(&request_id.to_le_bytes());
        out.extend_from_slice(&op.to_le_bytes());
        out.extend_from_slice(&prefix);
        out.extend_from_slice(&document);
        socket.write_all(&out).await?;
    }
}

#[tokio::test]
async fn mongodb_replica_set_members_are_checked_before_any_command_runs() {
    network::testing::treat_as_public("127.0.0.1".parse().expect("ip"));
    let h = harness(false);

    // A member at a private address: refused, and the seed only ever saw
    // the `hello`s that asked for the members (and the probe's goodbye).
    let (port, commands) = fake_replica_set(&["10.9.8.7:27017"]).await;
    let config = json!({"connection_string": format!("mongodb://127.0.0.1:{port}/?replicaSet=rs0"),
                        "database": "d", "connection_timeout_seconds": 5});
    let error = h
        .registry
        .test(&spec("mongodb", config))
        .await
        .error
        .expect("blocked");
    assert_eq!(error.error_type, "blocked_address", "{error:?}");
    let seen = commands.lock().expect("seen").clone();
    assert!(
        seen.iter()
            .all(|name| ["hello", "ismaster", "endsessions"].contains(&name.to_ascii_lowercase().as_str())),
        "{seen:?}"
    );

    // Only allowed members: the test runs.
    let (port, _) = fake_replica_set(&[]).await;
    let config = json!({"connection_string": format!("mongodb://127.0.0.1:{port}/?replicaSet=rs0"),
                        "database": "d", "connection_timeout_seconds": 5});
    let outcome = h.registry.test(&spec("mongodb", config)).await;
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.version.as_deref(), Some("MongoDB 7.0.0"));
}

/// `mongo.ferry.test` is unknown to DNS; the driver is given the checked
/// address, so it connects (and never looks the name up again).
#[tokio::test]
async fn mongodb_without_tls_connects_to_the_checked_address() {
    network::testing::resolve_as("mongo.ferry.test", &["127.0.0.1".parse().expect("ip")]);
    network::testing::treat_as_public("127.0.0.1".parse().expect("ip"));
    let peer = nx_27017().await;
    let h = harness(false);
    let config = json!({"connection_string": format!("mongodb://mongo.ferry.test:{}/", peer.port),
                        "database": "d", "connection_timeout_seconds": 5});
    let outcome = h.registry.test(&spec("mongodb", config)).await;
    assert_eq!(outcome.error, None);
}

/// With certificate checks turned off the name proves nothing, so the
/// driver is given the checked address. `mongo-insecure.ferry.test` is
/// unknown to DNS: a connection reaching the listener shows that the driver
/// dialled the checked address instead of looking the name up again.
#[tokio::test]
async fn mongodb_with_certificate_checks_off_connects_to_the_checked_address() {
    network::testing::resolve_as("mongo-insecure.ferry.test", &["127.0.0.1".parse().expect("ip")]);
    network::testing::treat_as_public("127.0.0.1".parse().expect("ip"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let reached = tokio::spawn(async move { listener.accept().await.is_ok() });
    let h = harness(false);
    let config = json!({"connection_string": format!(
                            "mongodb://mongo-insecure.ferry.test:{port}/?tls=true&tlsAllowInvalidCertificates=true"),
                        "database": "d", "connection_timeout_seconds": 2});
    let outcome = h.registry.test(&spec("mongodb", config)).await;
    assert!(outcome.error.is_some(), "the listener speaks no MongoDB");
    let reached = tokio::time::timeout(std::time::Duration::from_secs(1), reached).await;
    assert!(
        matches!(reached, Ok(Ok(true))),
        "the driver never dialled the checked address"
    );
}

/// MariaDB here has no TLS, so verify-full ends in `tls_error`, but only
/// after reaching the server at the checked address through the relay: the
/// name itself is unknown to DNS.
#[tokio::test]
async fn mysql_verify_full_reaches_the_checked_address() {
    network::testing::resolve_as("maria.ferry.test", &["127.0.0.1".parse().expect("ip")]);
    let fixture = maria_fixture();
    let h = harness(true);
    let config = with(
        &fixture.config(),
        json!({"host": "maria.ferry.test", "ssl_mode": "verify-full",
               "ssl_root_cert": "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n"}),
    );
    let error = h
        .registry
        .test(&spec("mysql", config))
        .await
        .error
        .expect("no TLS");
    assert_eq!(error.error_type, "tls_error", "{error:?}");
    assert!(error.message.contains("maria.ferry.test"), "{}", error.message);
}
