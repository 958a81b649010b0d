//! Fixtures for the worker suite: a pool registry per test, fresh
//! databases and roles on the shared PostgreSQL and MariaDB, and private
//! peers the tests start themselves (a PostgreSQL cluster with TLS, a
//! password-protected Redis, nx-27017). A missing service fails the test.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

pub use ferry_testkit::mariadb::mariadb;
use ferry_testkit::mariadb::{Grant, MariaDatabase};
pub use ferry_testkit::peers::nx_27017;
use ferry_testkit::postgres::{PgDatabase, PgRole, PrivatePostgres};
use ferry_testkit::run;
use ferry_testkit::tls::TestCa;
pub use ferry_testkit::{eventually, unique};
use ferry_worker::connectors::{ConnectorSpec, NetworkPolicy};
use ferry_worker::pools::PoolRegistry;
use serde_json::{Map, Value, json};
use sqlx::postgres::PgPool;
use tempfile::TempDir;

/// A registry with its own metrics and SQLite directory.
pub struct Harness {
    pub registry: PoolRegistry,
    pub metrics: prometheus::Registry,
    pub sqlite_dir: TempDir,
}

/// The organization of the connectors [`spec`] builds.
pub const ORG: &str = "org_test";

impl Harness {
    /// `<sqlite_dir>/<org>/`, created: where `org`'s SQLite files go.
    pub fn org_dir(&self, org: &str) -> PathBuf {
        let dir = self.sqlite_dir.path().join(org);
        std::fs::create_dir_all(&dir).expect("org dir");
        dir
    }
}

pub fn harness(allow_private_networks: bool) -> Harness {
    let sqlite_dir = tempfile::Builder::new()
        .prefix("ferry-sqlite-")
        .tempdir()
        .expect("sqlite dir");
    let metrics = prometheus::Registry::new();
    let policy = NetworkPolicy {
        allow_private_networks,
        sqlite_dir: sqlite_dir.path().to_path_buf(),
        trusted_roots: Default::default(),
    };
    Harness {
        registry: PoolRegistry::new(policy, &metrics),
        metrics,
        sqlite_dir,
    }
}

pub fn spec(connector_type: &str, config: Value) -> ConnectorSpec {
    spec_with(&unique("conn"), 1, connector_type, config)
}

pub fn spec_with(uuid: &str, version: i64, connector_type: &str, config: Value) -> ConnectorSpec {
    let Value::Object(config) = config else {
        panic!("config must be an object")
    };
    ConnectorSpec {
        uuid: uuid.to_owned(),
        org_id: ORG.to_owned(),
        connector_type: connector_type.to_owned(),
        version,
        config,
    }
}

/// `base` with the fields of `extra` set (`null` removes a field).
pub fn with(base: &Value, extra: Value) -> Value {
    let mut merged: Map<String, Value> = base.as_object().cloned().unwrap_or_default();
    if let Value::Object(extra) = extra {
        for (key, value) in extra {
            if value.is_null() {
                merged.remove(&key);
            } else {
                merged.insert(key, value);
            }
        }
    }
    Value::Object(merged)
}

/// A port nothing listens on (bound, then released).
pub use ferry_testkit::free_port as closed_port;

/// A listener that never accepts: connections complete in the kernel and
/// then nothing is ever said (a "blackhole" server).
pub struct Silent {
    pub listener: TcpListener,
    pub port: u16,
}

pub fn silent_server() -> Silent {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    Silent { listener, port }
}

impl Silent {
    /// Whether anyone connected since the listener was bound.
    pub fn was_contacted(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// The shared server's superuser (trust authentication on 127.0.0.1).
pub async fn pg_admin() -> PgPool {
    pg_admin_at(5432, "postgres").await
}

pub async fn pg_admin_at(port: u16, database: &str) -> PgPool {
    ferry_testkit::postgres::pool_at(port, database, 2).await
}

/// A fresh database owned by nobody in particular and a login role with a
/// password, on the shared server; dropped at the end of the test.
pub struct PgFixture {
    pub database: String,
    pub role: String,
    pub password: String,
    pub port: u16,
    // Dropped in this order: the database, then the role.
    _database: PgDatabase,
    _role: PgRole,
}

pub async fn pg_fixture() -> PgFixture {
    let name = unique("ferry_w");
    let role = PgRole::named(&name);
    let database = PgDatabase::named(&name, "");
    PgFixture {
        database: database.name.clone(),
        role: role.name.clone(),
        password: role.password.clone(),
        port: ferry_testkit::postgres::PORT,
        _database: database,
        _role: role,
    }
}

impl PgFixture {
    pub fn config(&self) -> Value {
        json!({
            "host": "127.0.0.1",
            "port": self.port,
            "database": self.database,
            "username": self.role,
            "password": self.password,
            "connection_timeout_seconds": 5,
        })
    }

    /// Backend pids connected to the fixture's database, as the superuser sees them.
    pub async fn backends(&self, admin: &PgPool) -> Vec<i32> {
        sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() ORDER BY pid",
        )
        .bind(&self.database)
        .fetch_all(admin)
        .await
        .expect("pg_stat_activity")
    }
}

/// A PostgreSQL 15 cluster of the test's own, on a free port, with TLS on
/// (a server certificate for `localhost` and `pinned.ferry.test` signed by a
/// test CA) and
/// `pg_hba.conf` requiring passwords (SCRAM) from everyone but `postgres`,
/// and refusing non-TLS connections for the role `tls_only`. Stopped and
/// deleted on drop, also when the test fails.
pub struct PrivateCluster {
    server: PrivatePostgres,
    pub port: u16,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    /// PEM of a CA that signed nothing this server has.
    pub other_ca_pem: String,
}

pub const APP_ROLE: &str = "ferry_app";
pub const APP_PASSWORD: &str = "right-horse-battery";
pub const TLS_ONLY_ROLE: &str = "tls_only";

impl PrivateCluster {
    pub async fn start() -> PrivateCluster {
        let server = PrivatePostgres::init(
            "ferry-pgtls-",
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 40\n\
             password_encryption = 'scram-sha-256'",
        );
        let ca = TestCa::with("Ferry Test CA", &["DNS:localhost", "DNS:pinned.ferry.test"]);
        let other_ca = TestCa::with("Ferry Other CA", &["DNS:localhost"]);
        let ca_pem = std::fs::read_to_string(ca.ca_file()).expect("ca pem");
        let other_ca_pem = std::fs::read_to_string(other_ca.ca_file()).expect("other ca pem");

        std::fs::write(
            server.data().join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             hostnossl all tls_only 127.0.0.1/32 reject\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba");
        let (cert, key) = ca.server_files();
        for (from, file) in [(cert, "server.crt"), (key, "server.key")] {
            std::fs::copy(from, server.data().join(file)).expect("certificate into the data directory");
        }
        server.chown();
        run(
            Command::new("chmod")
                .arg("0600")
                .arg(server.data().join("server.key")),
            "chmod key",
        );
        server.start();
        let cluster = PrivateCluster {
            port: server.port,
            server,
            ca_pem,
            other_ca_pem,
        };
        let admin = cluster.admin().await;
        for sql in [
            format!("CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'"),
            format!("CREATE ROLE {TLS_ONLY_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'"),
            format!("CREATE DATABASE app OWNER {APP_ROLE}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .expect("cluster setup");
        }
        admin.close().await;
        cluster
    }

    pub async fn admin(&self) -> PgPool {
        self.server.admin().await
    }

    /// A connector config for the `app` database as `ferry_app`.
    pub fn config(&self, host: &str) -> Value {
        json!({
            "host": host,
            "port": self.port,
            "database": "app",
            "username": APP_ROLE,
            "password": APP_PASSWORD,
            "connection_timeout_seconds": 5,
        })
    }
}

/// Whether the connection behind `pool` uses TLS, as the server sees it.
pub async fn uses_tls(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("pg_stat_ssl")
}

// ------------------------------------------------------------------- MariaDB

/// A fresh database and a user with a password, allowed on every database
/// whose name starts with the fixture's (so that a missing one is 1049,
/// not 1044).
pub struct MariaFixture {
    pub database: String,
    pub user: String,
    pub password: String,
    _database: MariaDatabase,
}

pub fn maria_fixture() -> MariaFixture {
    let database = MariaDatabase::create("fw", Grant::Prefix);
    MariaFixture {
        database: database.name.clone(),
        user: database.name.clone(),
        password: database.password.clone(),
        _database: database,
    }
}

impl MariaFixture {
    pub fn config(&self) -> Value {
        json!({
            "host": "127.0.0.1",
            "port": 3306,
            "database": self.database,
            "username": self.user,
            "password": self.password,
            "connection_timeout_seconds": 5,
        })
    }
}

// --------------------------------------------------------------------- peers

/// `redis-server` on a free port requiring `password`, without persistence.
pub async fn redis_with_password(password: &str) -> ferry_testkit::redis::PrivateRedis {
    ferry_testkit::redis::PrivateRedis::with_password(password).await
}

// ------------------------------------------------------------------- metrics

/// The value of a metric sample with exactly these labels (0 if absent).
pub fn metric(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for sample in family.get_metric() {
            let matches = labels.iter().all(|(key, value)| {
                sample
                    .get_label()
                    .iter()
                    .any(|pair| pair.name() == *key && pair.value() == *value)
            });
            if matches {
                return match family.get_field_type() {
                    prometheus::proto::MetricType::GAUGE => sample.get_gauge().get_value(),
                    _ => sample.get_counter().get_value(),
                };
            }
        }
    }
    0.0
}
