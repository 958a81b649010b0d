//! Fixtures for the worker suite: a pool registry per test, fresh
//! databases and roles on the shared PostgreSQL and MariaDB, and private
//! peers the tests start themselves (a PostgreSQL cluster with TLS, a
//! password-protected Redis, nx-27017). A missing service fails the test.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_worker::connectors::{ConnectorSpec, NetworkPolicy};
use ferry_worker::pools::PoolRegistry;
use serde_json::{Map, Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use tempfile::TempDir;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const MARIADB_SOCKET: &str = "/run/mysqld/mysqld.sock";

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
    };
    Harness {
        registry: PoolRegistry::new(policy, &metrics),
        metrics,
        sqlite_dir,
    }
}

/// A name unique across the concurrently running test processes.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
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
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

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

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: could not run: {error}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

// ---------------------------------------------------------------- PostgreSQL

/// The shared server's superuser (trust authentication on 127.0.0.1).
pub async fn pg_admin() -> PgPool {
    pg_admin_at(5432, "postgres").await
}

pub async fn pg_admin_at(port: u16, database: &str) -> PgPool {
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .database(database)
        .ssl_mode(PgSslMode::Disable);
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .unwrap_or_else(|error| {
            panic!("PostgreSQL on 127.0.0.1:{port} is required (scripts/services.sh): {error}")
        })
}

/// A fresh database owned by nobody in particular and a login role with a
/// password, on the shared server; dropped at the end of the test.
pub struct PgFixture {
    pub database: String,
    pub role: String,
    pub password: String,
    pub port: u16,
}

pub async fn pg_fixture() -> PgFixture {
    let admin = pg_admin().await;
    let name = unique("ferry_w");
    let password = format!("pw-{}", unique("secret"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {name} LOGIN PASSWORD '{password}'"
    )))
    .execute(&admin)
    .await
    .expect("create role");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    PgFixture {
        database: name.clone(),
        role: name,
        password,
        port: 5432,
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

impl Drop for PgFixture {
    fn drop(&mut self) {
        let sql = format!(
            "DROP DATABASE IF EXISTS {0} WITH (FORCE); DROP ROLE IF EXISTS {0};",
            self.database
        );
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
                &sql,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A PostgreSQL 15 cluster of the test's own, on a free port, with TLS on
/// (a server certificate for `localhost` and `pinned.ferry.test` signed by a
/// test CA) and
/// `pg_hba.conf` requiring passwords (SCRAM) from everyone but `postgres`,
/// and refusing non-TLS connections for the role `tls_only`. Stopped and
/// deleted on drop, also when the test fails.
pub struct PrivateCluster {
    dir: TempDir,
    pub port: u16,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    /// PEM of a CA that signed nothing this server has.
    pub other_ca_pem: String,
    as_postgres: bool,
}

pub const APP_ROLE: &str = "ferry_app";
pub const APP_PASSWORD: &str = "right-horse-battery";
pub const TLS_ONLY_ROLE: &str = "tls_only";

impl PrivateCluster {
    pub async fn start() -> PrivateCluster {
        let dir = tempfile::Builder::new()
            .prefix("ferry-pgtls-")
            .tempdir()
            .expect("cluster dir");
        let root_buf = dir.path().to_path_buf();
        let root = root_buf.as_path();
        let as_postgres = is_root();
        let openssl = |args: &[&str], what: &str| {
            run(Command::new("openssl").args(args).current_dir(root), what);
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for (name, subject) in [("ca", "/CN=Ferry Test CA"), ("other-ca", "/CN=Ferry Other CA")] {
            let (key, cert) = (format!("{name}.key"), format!("{name}.crt"));
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            args.extend([
                "-keyout",
                &key,
                "-out",
                &cert,
                "-days",
                "2",
                "-subj",
                subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(&args, "openssl CA");
        }
        let mut args = vec!["req", "-new"];
        args.extend(ec);
        args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        openssl(&args, "openssl server key");
        std::fs::write(
            root.join("server.ext"),
            "subjectAltName=DNS:localhost,DNS:pinned.ferry.test\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext file");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
            "openssl sign",
        );
        let ca_pem = std::fs::read_to_string(root.join("ca.crt")).expect("ca pem");
        let other_ca_pem = std::fs::read_to_string(root.join("other-ca.crt")).expect("other ca pem");

        let port = closed_port();
        let data = root.join("data");
        let pg = |tool: &str| -> Command {
            let path = format!("{PG_BIN}/{tool}");
            if as_postgres {
                let mut command = Command::new("runuser");
                command.args(["-u", "postgres", "--", &path]);
                command
            } else {
                Command::new(path)
            }
        };
        if as_postgres {
            run(
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(root),
                "chown cluster dir",
            );
        }
        run(
            pg("initdb").arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--no-instructions",
            ]),
            "initdb",
        );
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\nssl = on\n\
             ssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\nmax_connections = 40\n\
             password_encryption = 'scram-sha-256'\n",
            dir = root.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             hostnossl all tls_only 127.0.0.1/32 reject\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba");
        if as_postgres {
            run(
                Command::new("chown").args(["-R", "postgres:postgres"]).arg(root),
                "chown cluster dir",
            );
        }
        run(
            Command::new("chmod").arg("0600").arg(root.join("server.key")),
            "chmod key",
        );
        let cluster = PrivateCluster {
            dir,
            port,
            ca_pem,
            other_ca_pem,
            as_postgres,
        };
        run(
            cluster
                .pg_ctl()
                .args(["-w", "-t", "30", "-l"])
                .arg(root.join("server.log"))
                .arg("start"),
            "pg_ctl start",
        );
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

    fn pg_ctl(&self) -> Command {
        let path = format!("{PG_BIN}/pg_ctl");
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", &path]);
            command
        } else {
            Command::new(path)
        };
        command.arg("-D").arg(self.dir.path().join("data"));
        command
    }

    pub async fn admin(&self) -> PgPool {
        pg_admin_at(self.port, "postgres").await
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

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl()
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    file.write_all(text.as_bytes()).expect("append");
}

/// Whether the connection behind `pool` uses TLS, as the server sees it.
pub async fn uses_tls(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("pg_stat_ssl")
}

// ------------------------------------------------------------------- MariaDB

/// Runs SQL as root through the server's socket (root has no password
/// there and cannot log in over TCP).
pub fn mariadb(sql: &str) -> String {
    run(
        Command::new("mariadb").args(["--socket", MARIADB_SOCKET, "-u", "root", "-N", "-B", "-e", sql]),
        "mariadb (is it running? scripts/services.sh)",
    )
}

/// A fresh database and a user with a password, allowed on every database
/// whose name starts with the fixture's (so that a missing one is 1049,
/// not 1044).
pub struct MariaFixture {
    pub database: String,
    pub user: String,
    pub password: String,
}

pub fn maria_fixture() -> MariaFixture {
    let name = unique("fw");
    let password = format!("pw-{}", unique("secret"));
    let pattern = name.replace('_', "\\_");
    mariadb(&format!(
        "CREATE DATABASE `{name}`; CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; \
         GRANT ALL ON `{pattern}%`.* TO '{name}'@'%';"
    ));
    MariaFixture {
        database: name.clone(),
        user: name,
        password,
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

impl Drop for MariaFixture {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["--socket", MARIADB_SOCKET, "-u", "root", "-e"])
            .arg(format!(
                "DROP DATABASE IF EXISTS `{0}`; DROP USER IF EXISTS '{0}'@'%';",
                self.database
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// --------------------------------------------------------------------- peers

/// A child process killed (and reaped) on drop.
pub struct Peer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        if Instant::now() > deadline {
            panic!("{what} did not listen on {port} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `redis-server` on a free port requiring `password`, without persistence.
pub async fn redis_with_password(password: &str) -> Peer {
    let dir = tempfile::Builder::new()
        .prefix("ferry-redis-")
        .tempdir()
        .expect("redis dir");
    let port = closed_port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is required");
    wait_for_port(port, &mut child, "redis-server").await;
    Peer {
        child,
        port,
        _dir: dir,
    }
}

/// The venv `scripts/test-peers.sh` creates, installing it if needed (under
/// a file lock: tests run in parallel processes).
pub fn test_peers_venv() -> PathBuf {
    let venv = std::env::var_os("FERRY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ferry-venv"));
    if venv.join("bin/nx-27017").exists() {
        return venv;
    }
    let lock = std::fs::File::create(std::env::temp_dir().join("ferry-test-peers.lock")).expect("lock file");
    lock.lock().expect("lock");
    if !venv.join("bin/nx-27017").exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-peers.sh");
        run(
            Command::new("bash").arg(script).env("FERRY_VENV", &venv),
            "scripts/test-peers.sh",
        );
    }
    venv
}

/// nx-27017 (a MongoDB wire-protocol server) on a free port, in memory.
pub async fn nx_27017() -> Peer {
    let venv = test_peers_venv();
    let dir = tempfile::Builder::new()
        .prefix("ferry-nx-")
        .tempdir()
        .expect("nx dir");
    let port = closed_port();
    let mut child = Command::new(venv.join("bin/nx-27017"))
        .args([
            "--db",
            "memory",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .arg("--log-file")
        .arg(dir.path().join("nx.log"))
        .arg("--pid-file")
        .arg(dir.path().join("nx.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nx-27017 (scripts/test-peers.sh)");
    wait_for_port(port, &mut child, "nx-27017").await;
    Peer {
        child,
        port,
        _dir: dir,
    }
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
