//! The PostgreSQL and SQLite implementation of [`super::Store`]:
//! [`SqlStore`], one type for both backends.
//!
//! Both backends run the same SQL: sqlx accepts `$1`-style placeholders on
//! either, so each statement is written once, in ordinary async methods
//! grouped by aggregate — [`projects`], [`steps`], [`grants`],
//! [`connectors`], [`executions`], each implementing its store trait for
//! [`SqlStore`]. [`db`] is the one place that matches on the backend: the
//! pool and transaction of either, [`db::Sql`] (a statement and its bind
//! values, run on either), and the few dialect fragments that differ (the
//! `BEGIN` of a write transaction, row locking, the byte-order collation of
//! the name sort, JSON field extraction). Rows become domain types in
//! [`rows`] only. `design.md` beside this file explains the choice.
//!
//! SQLite opens every write transaction with `BEGIN IMMEDIATE`, so that two
//! writers never both hold a read lock and deadlock upgrading it; waits for
//! the lock are bounded by the busy timeout.

mod api_keys;
mod connectors;
mod db;
mod executions;
mod grants;
mod oauth_refresh;
mod oauth_states;
mod probes;
mod projects;
mod rows;
mod schedules;
mod slots;
mod steps;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Database};

use super::Store;
use crate::config::redact_url;
use crate::error::{Error, Result};
pub use db::Pool;
use db::Sql;

/// How long to wait for a pooled connection (and so for a first connection
/// when opening a store) before reporting the store unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a SQLite connection waits for another writer's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// Readers run concurrently in WAL mode; writers queue on the write lock.
const SQLITE_MAX_CONNECTIONS: u32 = 8;

// The migrations are embedded at compile time (paths relative to
// shared/Cargo.toml). `sqlx::migrate!` is a thin wrapper around this proc
// macro that exists only with sqlx's `macros` feature, which the workspace
// leaves off; the proc macro itself comes with `derive` + `migrate`.
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// The metadata store on PostgreSQL (distributed deployments) or SQLite
/// (`ferry up`, single node).
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: Pool,
}

impl SqlStore {
    /// Connects to `url` (`postgres://…`), opening one connection at once.
    /// An unreachable server is [`Error::Unavailable`] after at most about
    /// five seconds; the error never contains the URL's password.
    pub async fn connect_postgres(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(|_| malformed_url())?;
        Ok(SqlStore {
            pool: Pool::Postgres(open(url, options, POSTGRES_MAX_CONNECTIONS).await?),
        })
    }

    /// Opens `url` (`sqlite://path`), creating the file and its directory if
    /// missing, in WAL mode with foreign keys enforced and a five-second busy
    /// timeout. Failures are [`Error::Unavailable`].
    pub async fn connect_sqlite(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| malformed_url())?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        if let Some(parent) = options.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent).await.map_err(|error| {
                Error::Unavailable(format!(
                    "cannot create the directory of the metadata store at {}: {error}",
                    redact_url(url)
                ))
            })?;
        }
        Ok(SqlStore {
            pool: Pool::Sqlite(open(url, options, SQLITE_MAX_CONNECTIONS).await?),
        })
    }

    /// The connection pool, for callers that need raw access (tests, admin).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// Opens a [`SqlStore`] on PostgreSQL ([`SqlStore::connect_postgres`]).
#[derive(Debug)]
pub struct PostgresStore;

impl PostgresStore {
    /// See [`SqlStore::connect_postgres`].
    pub async fn connect(url: &str) -> Result<SqlStore> {
        SqlStore::connect_postgres(url).await
    }
}

/// Opens a [`SqlStore`] on SQLite ([`SqlStore::connect_sqlite`]).
#[derive(Debug)]
pub struct SqliteStore;

impl SqliteStore {
    /// See [`SqlStore::connect_sqlite`].
    pub async fn connect(url: &str) -> Result<SqlStore> {
        SqlStore::connect_sqlite(url).await
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    async fn ping(&self) -> Result<()> {
        Sql::new("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await,
            Pool::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
        }
        .map_err(migrate_error)
    }
}

/// Opens a pool of at most `max` connections to `url`, connecting once at
/// once, with the bounded connection wait.
async fn open<DB: Database>(
    url: &str,
    options: <DB::Connection as Connection>::Options,
    max: u32,
) -> Result<sqlx::Pool<DB>> {
    PoolOptions::<DB>::new()
        .max_connections(max)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|error| connect_error(url, &error))
}

fn malformed_url() -> Error {
    // The parser's message may quote the URL, password included: drop it.
    Error::validation("database_url", "the database URL is malformed")
}

/// A failed first connection: unavailable, naming the redacted URL.
fn connect_error(url: &str, error: &sqlx::Error) -> Error {
    let mut cause = error.to_string();
    if let Ok(parsed) = url::Url::parse(url)
        && let Some(password) = parsed.password().filter(|password| !password.is_empty())
    {
        cause = cause.replace(password, "****");
    }
    Error::Unavailable(format!(
        "cannot connect to the metadata store at {}: {cause}",
        redact_url(url)
    ))
}

/// Maps the constraint violations a write can meet to what they mean;
/// anything else goes through the crate-wide `From<sqlx::Error>`.
fn constraint_error(error: sqlx::Error) -> Error {
    if let sqlx::Error::Database(database) = &error {
        match database.kind() {
            ErrorKind::UniqueViolation => return Error::conflict("a resource with this id already exists"),
            ErrorKind::ForeignKeyViolation => {
                return Error::not_found("a referenced resource does not exist");
            }
            _ => {}
        }
    }
    Error::from(error)
}

fn migrate_error(error: MigrateError) -> Error {
    match error {
        MigrateError::Execute(error) => Error::from(error),
        other => Error::internal_with_source(format!("migrating the metadata store failed: {other}"), other),
    }
}
