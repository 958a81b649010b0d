//! PostgreSQL: fresh databases and login roles on the shared server
//! (127.0.0.1:5432, user `postgres`, trust authentication), dropped on
//! drop, and private PostgreSQL 15 clusters (`initdb`) on free ports for
//! tests that restart or reconfigure the server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use tempfile::TempDir;

use crate::{free_port, is_root, run};

/// The shared server's port.
pub const PORT: u16 = 5432;
/// The shared server's `postgres` database as its superuser.
pub const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Where the PostgreSQL 15 server programs are.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The URL of `database` on the shared server as `postgres`.
pub fn url(database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{PORT}/{database}")
}

/// A `psql` command as `postgres` on `database` of the server at `port`:
/// stops at the first error, prints bare values.
pub fn psql_command_at(port: u16, database: &str, sql: &str) -> Command {
    let mut command = Command::new("psql");
    command.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-d",
        database,
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-Atqc",
        sql,
    ]);
    command
}

/// Runs SQL in `database` on the shared server as `postgres` and returns
/// its output, trimmed; fails loudly when psql or the server is missing
/// or the SQL fails.
pub fn psql(database: &str, sql: &str) -> String {
    psql_at(PORT, database, sql)
}

/// [`psql`] on the server at `port`.
pub fn psql_at(port: u16, database: &str, sql: &str) -> String {
    run(
        &mut psql_command_at(port, database, sql),
        &format!("psql -p {port} -d {database} -c {sql:?} (is PostgreSQL running? scripts/services.sh)"),
    )
    .trim()
    .to_owned()
}

/// Runs SQL in `database` on the shared server as `postgres`: its output,
/// trimmed, or None when psql or the SQL failed (for probes that poll
/// until a query answers, and for queries that may fail).
pub fn psql_try(database: &str, sql: &str) -> Option<String> {
    let output = psql_command_at(PORT, database, sql).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs SQL on the shared server, ignoring failures (for drops, which run
/// while a failed test unwinds).
pub fn psql_quietly(database: &str, sql: &str) {
    let _ = psql_command_at(PORT, database, sql)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A superuser pool of `size` on `database` of the server at `port`.
pub async fn pool_at(port: u16, database: &str, size: u32) -> PgPool {
    let options = PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .database(database)
        .ssl_mode(PgSslMode::Disable);
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .unwrap_or_else(|error| {
            panic!("PostgreSQL on 127.0.0.1:{port} is required (scripts/services.sh): {error}")
        })
}

/// A fresh database on the shared server, dropped (with its connections)
/// on drop.
#[derive(Debug)]
pub struct PgDatabase {
    pub name: String,
}

impl PgDatabase {
    /// `CREATE DATABASE <prefix>_<unique>`.
    pub fn create(prefix: &str) -> PgDatabase {
        PgDatabase::create_with(prefix, "")
    }

    /// `CREATE DATABASE <prefix>_<unique> <options>` (`OWNER …`,
    /// `ENCODING …`, `TEMPLATE …`).
    pub fn create_with(prefix: &str, options: &str) -> PgDatabase {
        PgDatabase::named(&crate::unique(prefix), options)
    }

    /// `CREATE DATABASE <name> <options>`.
    pub fn named(name: &str, options: &str) -> PgDatabase {
        psql("postgres", &format!("CREATE DATABASE {name} {options}"));
        PgDatabase {
            name: name.to_owned(),
        }
    }

    /// Its URL as `postgres`.
    pub fn url(&self) -> String {
        url(&self.name)
    }

    /// Runs SQL in it as `postgres`; the output, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        psql_quietly(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A login role with a password on the shared server; its sessions are
/// ended and it is dropped on drop (drop its databases first).
#[derive(Debug)]
pub struct PgRole {
    pub name: String,
    pub password: String,
}

impl PgRole {
    /// `CREATE ROLE <prefix>_<unique> LOGIN PASSWORD …`.
    pub fn create(prefix: &str) -> PgRole {
        PgRole::named(&crate::unique(prefix))
    }

    /// A role of this exact name.
    pub fn named(name: &str) -> PgRole {
        PgRole::with_password(name, &format!("pw-{}", crate::unique("secret")))
    }

    /// A role of this exact name with this password.
    pub fn with_password(name: &str, password: &str) -> PgRole {
        let password = password.to_owned();
        psql(
            "postgres",
            &format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'"),
        );
        PgRole {
            name: name.to_owned(),
            password,
        }
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        psql_quietly(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'",
                self.name
            ),
        );
        psql_quietly("postgres", &format!("DROP ROLE IF EXISTS {}", self.name));
    }
}

/// A PostgreSQL 15 cluster of the test's own on a free port (run as
/// `postgres` when the tests run as root), listening on 127.0.0.1 with its
/// socket in its directory and `fsync` off. Stopped at once and deleted on
/// drop, also when the test fails.
pub struct PrivatePostgres {
    dir: TempDir,
    pub port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Runs `initdb` (trust authentication, superuser `postgres`, UTF8) in
    /// a fresh directory named `<prefix>…` under /tmp and writes the base
    /// settings followed by `settings`. Start it with [`Self::start`].
    pub fn init(prefix: &str, settings: &str) -> PrivatePostgres {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .expect("cluster dir");
        let cluster = PrivatePostgres {
            dir,
            port: free_port(),
            as_postgres: is_root(),
        };
        cluster.chown();
        run(
            cluster.tool("initdb").arg("-D").arg(cluster.data()).args([
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
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n{settings}\n",
            cluster.port,
            cluster.dir().display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(cluster.data().join("postgresql.conf"))
            .and_then(|mut file| file.write_all(conf.as_bytes()))
            .expect("append to postgresql.conf");
        cluster
    }

    /// The cluster's directory (its data directory is `data` inside).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Hands every file in the cluster's directory to `postgres` (when the
    /// server runs as `postgres`): call after writing files into it.
    pub fn chown(&self) {
        if self.as_postgres {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(self.dir.path()),
                "chown cluster dir",
            );
        }
    }

    fn tool(&self, tool: &str) -> Command {
        let path = format!("{PG_BIN}/{tool}");
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", &path]);
            command
        } else {
            Command::new(path)
        }
    }

    /// `pg_ctl -D <data>`.
    pub fn pg_ctl(&self) -> Command {
        let mut command = self.tool("pg_ctl");
        command.arg("-D").arg(self.data());
        command
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        run(
            self.pg_ctl()
                .args(["-w", "-t", "60", "-l"])
                .arg(self.dir.path().join("server.log"))
                .arg("start"),
            "pg_ctl start",
        );
    }

    /// Stops the server the fast way and waits until it is down.
    pub fn stop_fast(&self) {
        run(
            self.pg_ctl().args(["-w", "-t", "60", "-m", "fast", "stop"]),
            "pg_ctl stop -m fast",
        );
    }

    /// Its `postgres` database as `postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A superuser pool on its `postgres` database.
    pub async fn admin(&self) -> PgPool {
        pool_at(self.port, "postgres", 2).await
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl()
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
