//! SQLite: read-only pools over files inside the organization's folder of
//! the worker's SQLite directory.
//!
//! `path` is relative to `<`[`NetworkPolicy::sqlite_dir`]`>/<org_id>/` (or
//! absolute inside that folder), so one organization never opens another's
//! files. `..` components are refused before anything touches the disk, and
//! the canonical path (symlinks resolved) must still be inside the
//! directory. Files open with `SQLITE_OPEN_READONLY` and never get created.
//!
//! Steps only read (see [`check_read_only`]):
//!
//! - the file opens with `SQLITE_OPEN_READONLY` *and* `PRAGMA query_only`,
//!   which also covers the connection's `temp` database (a read-only open
//!   still lets `CREATE TEMP TABLE` through);
//! - before a step runs, its statement is compiled with `EXPLAIN` and
//!   refused when its program writes: the rule of `sqlite3_stmt_readonly`
//!   (which sqlx does not expose and `unsafe` code may not call), read from
//!   SQLite's own bytecode. This is what stops `VACUUM INTO '<path>'`, which
//!   writes a new file even on a read-only connection;
//! - a connection serves one step or test and is then closed (the pool's
//!   `after_release` says no), so nothing a statement leaves in the
//!   connection (pragmas, temp objects) reaches the next one.
//!
//! `ATTACH` and several statements per step are refused by the step runner
//! before any of this (`extract.rs` beside this file).

pub(crate) mod extract;

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePool};
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::connectors::config::{Fields, PoolSettings};
use crate::connectors::errors::{DriverError, ErrorType, Secrets};
use crate::connectors::sql::{SqlFamily, SqlHandle, one_use_per_connection, pool_options};
use crate::connectors::{ConnectorSpec, NetworkPolicy, TestDetails};
use crate::extract::SqlSource;

/// A SQLite connector's own config fields, read once.
#[derive(Debug)]
pub(crate) struct SqliteConfig {
    /// The file, relative to the organization's folder (or absolute inside
    /// it); see [`resolve_path`].
    pub path: String,
}

/// The SQLite family: read-only files in the organization's folder.
pub(crate) struct Sqlite;

#[async_trait]
impl SqlFamily for Sqlite {
    type Database = sqlx::Sqlite;
    type Config = SqliteConfig;

    fn config(fields: &mut Fields<'_>) -> Result<SqliteConfig, DriverError> {
        Ok(SqliteConfig {
            path: fields.name("path")?,
        })
    }

    async fn open(
        config: SqliteConfig,
        settings: PoolSettings,
        spec: &ConnectorSpec,
        policy: &NetworkPolicy,
    ) -> Result<SqlHandle<Self>, DriverError> {
        let path = resolve_path(&org_dir(&policy.sqlite_dir, &spec.org_id)?, &config.path)?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .create_if_missing(false)
            .busy_timeout(settings.connect_timeout)
            .pragma("query_only", "ON");
        // One use per connection: whatever a statement changed in the
        // connection's state goes away with it. Opening a SQLite file is
        // cheap (see design.md for the figure).
        let pool = one_use_per_connection(pool_options(&settings)).connect_lazy_with(options);
        Ok(SqlHandle::new(spec, pool, settings, None))
    }

    fn source(pool: &SqlitePool) -> SqlSource {
        SqlSource::Sqlite(pool.clone())
    }

    /// SQLite's version; reading the schema proves the file is a database,
    /// not just a file.
    async fn details(connection: &mut PoolConnection<sqlx::Sqlite>) -> Result<TestDetails, sqlx::Error> {
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut **connection)
            .await?;
        let _tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_schema")
            .fetch_one(&mut **connection)
            .await?;
        Ok(TestDetails {
            version: Some(format!("SQLite {version}")),
            server_time: None,
            schemas: Some(vec!["main".into()]),
        })
    }

    /// SQLite's errors carry no secret and no host.
    fn map_error(error: &sqlx::Error, _target: &str, _secrets: &Secrets) -> DriverError {
        map_error(error)
    }
}

/// The organization's folder of the SQLite directory, `<dir>/<org_id>/`:
/// tenants never read each other's files. The org id must be usable as one
/// folder name as it stands.
pub(crate) fn org_dir(dir: &Path, org_id: &str) -> Result<PathBuf, DriverError> {
    let usable = !org_id.is_empty()
        && org_id.len() <= 128
        && org_id != "."
        && org_id != ".."
        && org_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !usable {
        return Err(DriverError::invalid_config(
            "the connector's organization id cannot name a folder of the worker's SQLite directory",
        ));
    }
    Ok(dir.join(org_id))
}

/// The canonical path of `requested` if it names an existing regular file
/// inside `dir` (the organization's folder).
pub(crate) fn resolve_path(dir: &Path, requested: &str) -> Result<PathBuf, DriverError> {
    let escapes = || {
        DriverError::invalid_config("config.path must name a file inside the organization's SQLite folder")
    };
    let requested_path = Path::new(requested);
    if requested_path
        .components()
        .any(|part| matches!(part, Component::ParentDir))
    {
        return Err(escapes());
    }
    // A missing folder or file is the same answer: no such file there.
    let canonicalize = |path: &Path, unreadable: String| {
        path.canonicalize().map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => DriverError::new(
                ErrorType::DatabaseNotFound,
                format!("no SQLite file at {requested} in the organization's SQLite folder"),
            ),
            _ => DriverError::unknown(unreadable),
        })
    };
    let dir = canonicalize(dir, "the worker's SQLite directory is not available".to_owned())?;
    let joined = if requested_path.is_absolute() {
        requested_path.to_path_buf()
    } else {
        dir.join(requested_path)
    };
    if requested_path.is_absolute() && !joined.starts_with(&dir) {
        return Err(escapes());
    }
    let canonical = canonicalize(&joined, format!("the SQLite file {requested} cannot be read"))?;
    if !canonical.starts_with(&dir) {
        return Err(escapes());
    }
    if !canonical.is_file() {
        return Err(DriverError::invalid_config(
            "config.path must name a regular file",
        ));
    }
    Ok(canonical)
}

/// Opcodes that make SQLite's own `sqlite3_stmt_readonly` answer false
/// (`resolveP2Values` in sqlite3.c): a write transaction on any database
/// (`Transaction` with P2 ≠ 0), and `Vacuum`, `JournalMode`, `Checkpoint`.
/// The others write without those in some builds or paths and are refused
/// as well (virtual-table writes, b-tree creation and removal, schema
/// changes, nested SQL).
const WRITING_OPCODES: [&str; 15] = [
    "Vacuum",
    "JournalMode",
    "Checkpoint",
    "OpenWrite",
    "VUpdate",
    "VCreate",
    "VDestroy",
    "CreateBtree",
    "Destroy",
    "Clear",
    "SqlExec",
    "ParseSchema",
    "DropTable",
    "DropIndex",
    "DropTrigger",
];

/// Whether `sql` (one statement; the step runner refuses several) only
/// reads. `Ok(Err(message))` is a refusal to show the user; `Err` is
/// SQLite's own error compiling the statement (a syntax error, a missing
/// table). Nothing of `sql` runs: the statement is compiled under
/// `EXPLAIN`, inside a transaction that is rolled back, so even text after
/// a `;` could not write (`VACUUM` and `ATTACH` refuse to run inside one).
pub(crate) async fn check_read_only(
    connection: &mut SqliteConnection,
    sql: &str,
) -> Result<Result<(), String>, sqlx::Error> {
    // `EXPLAIN EXPLAIN …` is a syntax error; an EXPLAIN never executes its
    // statement, so it is read-only as it stands.
    if first_keyword(sql).eq_ignore_ascii_case("explain") {
        return Ok(Ok(()));
    }
    let mut transaction = connection.begin().await?;
    let program = sqlx::query(AssertSqlSafe(format!("EXPLAIN {sql}")))
        .persistent(false)
        .fetch_all(&mut *transaction)
        .await;
    transaction.rollback().await?;
    for row in program? {
        let opcode: String = row.try_get("opcode")?;
        let p2: i64 = row.try_get("p2")?;
        if (opcode == "Transaction" && p2 != 0) || WRITING_OPCODES.contains(&opcode.as_str()) {
            return Ok(Err(
                "a SQLite step only reads: this statement would write (to the database, a temporary \
                 table or another file), so it was not run"
                    .to_owned(),
            ));
        }
    }
    Ok(Ok(()))
}

/// The first word of `sql`, skipping white space and comments.
fn first_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, tail)| tail);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, tail)| tail);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Maps a sqlx error met on a SQLite file.
pub(crate) fn map_error(error: &sqlx::Error) -> DriverError {
    match error {
        sqlx::Error::Database(database) => {
            let code = database.code().map(|code| code.into_owned());
            let mapped = match code.as_deref() {
                // SQLITE_CANTOPEN (14 and its extended codes)
                Some(code) if code.parse::<u32>().is_ok_and(|number| number & 0xff == 14) => {
                    DriverError::new(ErrorType::DatabaseNotFound, "the SQLite file cannot be opened")
                }
                // SQLITE_NOTADB
                Some(code) if code.parse::<u32>().is_ok_and(|number| number & 0xff == 26) => {
                    DriverError::invalid_config("config.path is not a SQLite database")
                }
                _ => DriverError::unknown("SQLite reported an error"),
            };
            match code {
                Some(code) => mapped.with_code(code),
                None => mapped,
            }
        }
        sqlx::Error::PoolTimedOut => DriverError::new(ErrorType::Timeout, "the SQLite file is busy"),
        sqlx::Error::PoolClosed => {
            DriverError::unknown("the connector's pool was closed (its configuration changed)")
        }
        _ => DriverError::unknown("opening the SQLite file failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::config::object;
    use crate::connectors::sql::read_config;
    use ferry_shared::connectors::TypeId;
    use serde_json::json;

    #[test]
    fn a_config_is_a_path_and_the_pool_settings_only() {
        let read = |config| read_config::<Sqlite>(TypeId::Sqlite.decl(), &object(config));
        let (config, settings) = read(json!({"path": "a.db", "max_connections": "2"})).expect("config");
        assert_eq!(config.path, "a.db");
        assert_eq!(settings.max_connections, 2);
        assert_eq!(
            read(json!({"max_connections": 2}))
                .expect_err("no path")
                .message(),
            "config.path is required"
        );
        assert_eq!(
            read(json!({"path": "a.db", "host": "db"}))
                .expect_err("a host")
                .message(),
            "config.host is not a field of sqlite connectors"
        );
    }

    #[test]
    fn parent_components_are_refused_before_touching_the_disk() {
        let dir = std::env::temp_dir();
        for bad in ["../x.db", "a/../../x.db", "/etc/../etc/passwd"] {
            assert_eq!(
                resolve_path(&dir, bad).expect_err(bad).kind(),
                ErrorType::InvalidConfig,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_first_keyword_skips_space_and_comments() {
        assert_eq!(first_keyword("  -- note\n /* x */ explain select 1"), "explain");
        assert_eq!(first_keyword("VACUUM INTO 'x'"), "VACUUM");
        assert_eq!(first_keyword("/* unterminated"), "");
    }
}
