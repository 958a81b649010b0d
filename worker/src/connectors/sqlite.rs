//! SQLite: read-only pools over files inside the worker's SQLite directory.
//!
//! `path` is relative to [`NetworkPolicy::sqlite_dir`] (or absolute inside
//! it). `..` components are refused before anything touches the disk, and
//! the canonical path (symlinks resolved) must still be inside the
//! directory. Files open with `SQLITE_OPEN_READONLY` and never get created.
//!
//! Step execution note: SQLite's `ATTACH DATABASE` can open other files
//! (read-only here, as the connection's flags carry over); sqlx offers no
//! safe way to set `SQLITE_LIMIT_ATTACHED` or an authorizer, so the step
//! runner must refuse `ATTACH` in user SQL.

use std::path::{Component, Path, PathBuf};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::config::Config;
use super::errors::{DriverError, ErrorType};
use super::postgres::close_pool;
use super::{ConnectorSpec, NetworkPolicy, TestDetails};

pub(crate) struct SqliteHandle {
    pub pool: SqlitePool,
}

pub(crate) fn open(spec: &ConnectorSpec, policy: &NetworkPolicy) -> Result<SqliteHandle, DriverError> {
    let config = Config::new(&spec.config);
    let requested = config.required_name("path")?;
    let settings = config.pool_settings()?;
    let path = resolve_path(&policy.sqlite_dir, requested)?;
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true)
        .create_if_missing(false)
        .busy_timeout(settings.connect_timeout);
    let pool = SqlitePoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.connect_timeout)
        .idle_timeout(Some(settings.idle_timeout))
        .max_lifetime(Some(settings.max_lifetime))
        .connect_lazy_with(options);
    Ok(SqliteHandle { pool })
}

/// The canonical path of `requested` if it names an existing regular file
/// inside `dir`.
pub(crate) fn resolve_path(dir: &Path, requested: &str) -> Result<PathBuf, DriverError> {
    let escapes =
        || DriverError::invalid_config("config.path must name a file inside the worker's SQLite directory");
    let requested_path = Path::new(requested);
    if requested_path
        .components()
        .any(|part| matches!(part, Component::ParentDir))
    {
        return Err(escapes());
    }
    let dir = dir
        .canonicalize()
        .map_err(|_| DriverError::unknown("the worker's SQLite directory is not available"))?;
    let joined = if requested_path.is_absolute() {
        requested_path.to_path_buf()
    } else {
        dir.join(requested_path)
    };
    if requested_path.is_absolute() && !joined.starts_with(&dir) {
        return Err(escapes());
    }
    let canonical = match joined.canonicalize() {
        Ok(canonical) => canonical,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(DriverError::new(
                ErrorType::DatabaseNotFound,
                format!("no SQLite file at {requested} in the worker's SQLite directory"),
            ));
        }
        Err(_) => {
            return Err(DriverError::unknown(format!(
                "the SQLite file {requested} cannot be read"
            )));
        }
    };
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

impl SqliteHandle {
    pub async fn test(&self) -> Result<TestDetails, DriverError> {
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(|error| self.map_error(&error))?;
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut *connection)
            .await
            .map_err(|error| self.map_error(&error))?;
        // Reading the schema proves the file is a database, not just a file.
        let _tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_schema")
            .fetch_one(&mut *connection)
            .await
            .map_err(|error| self.map_error(&error))?;
        // Back to the pool now (sqlx would do it in a spawned task after a
        // ping), so that the next use finds this connection idle.
        connection.return_to_pool().await;
        Ok(TestDetails {
            version: Some(format!("SQLite {version}")),
            server_time: None,
            schemas: Some(vec!["main".into()]),
        })
    }

    pub fn close(&self) {
        close_pool(self.pool.clone());
    }

    pub fn map_error(&self, error: &sqlx::Error) -> DriverError {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
