//! PostgreSQL and SQLite implementations of [`super::Store`].
//!
//! Both backends run the same SQL: sqlx accepts `$1`-style placeholders on
//! either, so each statement is written once, in the query macros of
//! [`projects`], [`steps`], [`grants`], [`connectors`] and [`executions`], and expanded for
//! each store type with the few dialect fragments that differ (the `BEGIN`
//! of a write transaction, row locking, the byte-order collation of the name
//! sort, JSON field extraction).
//! Rows become domain types in [`rows`] only.
//!
//! SQLite opens every write transaction with `BEGIN IMMEDIATE`, so that two
//! writers never both hold a read lock and deadlock upgrading it; waits for
//! the lock are bounded by the busy timeout.

mod connectors;
mod executions;
mod grants;
mod projects;
mod rows;
mod steps;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;
use sqlx::error::ErrorKind;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;

use super::{Grant, Store};
use crate::config::redact_url;
use crate::domain::OrgRole;
use crate::domain::{
    self, Connector, ConnectorListQuery, ConnectorUsage, Execution, ExecutionStatus, Lease, NewStep, Page,
    PageRequest, Project, ProjectListQuery, ProjectPatch, ProjectStatus, ProjectSummary, ResourceKind, Role,
    Sealed, Step, StepError, StepPatch, TestRecord, TestStatus, project::search_text,
};
use crate::error::{Error, Result};
use crate::ids::IdKind;
use connectors::connector_queries;
use executions::{execution_queries, in_progress};
use grants::grant_queries;
use projects::project_queries;
use rows::{
    ConnectorRoleRow, ConnectorRow, ExecutionStepRow, GrantRow, ProjectRow, StepRow, SummaryRow, TestRow,
    UsageRow, connector_columns, execution_columns, grant_columns, project_columns, step_columns,
    step_run_columns, test_columns,
};
use steps::step_queries;

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

/// The metadata store on PostgreSQL (distributed deployments).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`), opening one connection at once.
    /// An unreachable server is [`Error::Unavailable`] after at most about
    /// five seconds; the error never contains the URL's password.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(|_| malformed_url())?;
        let pool = PgPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|error| connect_error(url, &error))?;
        Ok(PostgresStore { pool })
    }

    /// The connection pool, for callers that need raw access (tests, admin).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// The metadata store on SQLite (`ferry up`, single node).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens `url` (`sqlite://path`), creating the file and its directory if
    /// missing, in WAL mode with foreign keys enforced and a five-second busy
    /// timeout. Failures are [`Error::Unavailable`].
    pub async fn connect(url: &str) -> Result<Self> {
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
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|error| connect_error(url, &error))?;
        Ok(SqliteStore { pool })
    }

    /// The connection pool, for callers that need raw access (tests, admin).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
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
        other => Error::internal(format!("migrating the metadata store failed: {other}")),
    }
}

/// Everything of one backend: the query methods, expanded from the one SQL
/// body with this backend's dialect, and `impl Store` forwarding to them.
///
/// - `$db`: the sqlx database type;
/// - `begin`: the statement that opens a write transaction;
/// - `lock`: the clause locking a row read for update (empty on SQLite,
///   where `BEGIN IMMEDIATE` already holds the write lock);
/// - `name_collation`: the byte-order collation clause of the name sort;
/// - `step_connector_uuid`: the text of a step's `config.connector_uuid`
///   (for a `FROM steps s`, or `execution_steps s`), NULL when absent.
macro_rules! sql_store {
    (
        $store:ident,
        $db:ty,
        backend = $backend:literal,
        migrator = $migrator:ident,
        begin = $begin:literal,
        lock = $lock:literal,
        name_collation = $collation:literal,
        step_connector_uuid = $step_connector:literal $(,)?
    ) => {
        project_queries!(
            $store,
            begin = $begin,
            lock = $lock,
            name_collation = $collation
        );
        step_queries!($store, $db, begin = $begin);
        grant_queries!($store, $db, begin = $begin, lock = $lock);
        connector_queries!(
            $store,
            begin = $begin,
            name_collation = $collation,
            step_connector_uuid = $step_connector
        );
        execution_queries!(
            $store,
            $db,
            begin = $begin,
            lock = $lock,
            step_connector_uuid = $step_connector
        );

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn migrate(&self) -> Result<()> {
                $migrator.run(&self.pool).await.map_err(migrate_error)
            }

            async fn create_project(&self, project: &Project) -> Result<()> {
                self.create_project_row(project).await
            }

            async fn get_project(&self, org_id: &str, uuid: &str) -> Result<Option<Project>> {
                self.get_project_row(org_id, uuid).await
            }

            async fn list_projects(&self, query: &ProjectListQuery) -> Result<Page<ProjectSummary>> {
                self.list_project_rows(query).await
            }

            async fn update_project(
                &self,
                org_id: &str,
                uuid: &str,
                patch: ProjectPatch,
            ) -> Result<Option<Project>> {
                self.update_project_row(org_id, uuid, patch).await
            }

            async fn delete_project(&self, org_id: &str, uuid: &str) -> Result<bool> {
                self.delete_project_row(org_id, uuid).await
            }

            async fn role_of(
                &self,
                resource: ResourceKind,
                uuid: &str,
                user_id: &str,
            ) -> Result<Option<Role>> {
                self.role_of_row(resource, uuid, user_id).await
            }

            async fn put_grant(&self, grant: &Grant) -> Result<()> {
                self.put_grant_row(grant).await
            }

            async fn list_grants(&self, resource: ResourceKind, uuid: &str) -> Result<Vec<Grant>> {
                self.list_grant_rows(resource, uuid).await
            }

            async fn delete_grant(&self, resource: ResourceKind, uuid: &str, user_id: &str) -> Result<bool> {
                self.delete_grant_row(resource, uuid, user_id).await
            }

            async fn executor_connector_role(
                &self,
                execution_id: &str,
                connector_uuid: &str,
            ) -> Result<Option<Role>> {
                self.executor_connector_role_row(execution_id, connector_uuid)
                    .await
            }

            async fn record_execution_role(&self, execution_id: &str, role: OrgRole) -> Result<bool> {
                self.record_execution_role_row(execution_id, role).await
            }

            async fn list_steps(&self, project_uuid: &str) -> Result<Vec<Step>> {
                self.list_step_rows(project_uuid).await
            }

            async fn get_step(&self, project_uuid: &str, step_id: &str) -> Result<Option<Step>> {
                self.get_step_row(project_uuid, step_id).await
            }

            async fn insert_step(&self, project_uuid: &str, new: NewStep) -> Result<Step> {
                self.insert_step_row(project_uuid, new).await
            }

            async fn update_step(
                &self,
                project_uuid: &str,
                step_id: &str,
                patch: StepPatch,
            ) -> Result<Option<Step>> {
                self.update_step_row(project_uuid, step_id, patch).await
            }

            async fn delete_step(&self, project_uuid: &str, step_id: &str) -> Result<bool> {
                self.delete_step_row(project_uuid, step_id).await
            }

            async fn reorder_steps(&self, project_uuid: &str, step_ids: &[String]) -> Result<Vec<Step>> {
                self.reorder_step_rows(project_uuid, step_ids).await
            }

            async fn create_connector(&self, connector: &Connector) -> Result<()> {
                self.create_connector_row(connector).await
            }

            async fn get_connector(&self, org_id: &str, uuid: &str) -> Result<Option<Connector>> {
                self.get_connector_row(org_id, uuid).await
            }

            async fn list_connectors(&self, query: &ConnectorListQuery) -> Result<Vec<(Connector, Role)>> {
                self.list_connector_rows(query).await
            }

            async fn update_connector(&self, connector: &Connector, expected_version: i64) -> Result<bool> {
                self.update_connector_row(connector, expected_version).await
            }

            async fn delete_connector(&self, org_id: &str, uuid: &str) -> Result<bool> {
                self.delete_connector_row(org_id, uuid).await
            }

            async fn connector_usage(&self, org_id: &str, uuid: &str) -> Result<Vec<ConnectorUsage>> {
                self.connector_usage_rows(org_id, uuid).await
            }

            async fn record_test(&self, record: &TestRecord) -> Result<()> {
                self.record_test_row(record).await
            }

            async fn test_history(&self, uuid: &str, since: DateTime<Utc>) -> Result<Vec<TestRecord>> {
                self.test_history_rows(uuid, since).await
            }

            async fn connectors_sealed_with_other_key(
                &self,
                key_id: &str,
                limit: i64,
            ) -> Result<Vec<Connector>> {
                self.connectors_sealed_with_other_key_rows(key_id, limit)
                    .await
            }

            async fn count_connectors_sealed_with_other_key(&self, key_id: &str) -> Result<u64> {
                self.count_connectors_sealed_with_other_key_rows(key_id)
                    .await
            }

            async fn replace_secrets(&self, uuid: &str, old: &Sealed, new: &Sealed) -> Result<bool> {
                self.replace_secrets_row(uuid, old, new).await
            }

            async fn create_execution(&self, execution: &Execution) -> Result<()> {
                self.create_execution_row(execution).await
            }

            async fn get_execution(
                &self,
                org_id: &str,
                project_uuid: &str,
                execution_id: &str,
            ) -> Result<Option<Execution>> {
                self.get_execution_row(org_id, project_uuid, execution_id)
                    .await
            }

            async fn load_execution(&self, execution_id: &str) -> Result<Option<Execution>> {
                self.load_execution_row(execution_id).await
            }

            async fn list_executions(
                &self,
                project_uuid: &str,
                page: PageRequest,
            ) -> Result<Page<Execution>> {
                self.list_execution_rows(project_uuid, page).await
            }

            async fn active_execution(&self, project_uuid: &str) -> Result<Option<String>> {
                self.active_execution_row(project_uuid).await
            }

            async fn claim_execution(
                &self,
                execution_id: &str,
                owner: &str,
                lease_for: Duration,
            ) -> Result<Option<Lease>> {
                self.claim_execution_row(execution_id, owner, lease_for)
                    .await
            }

            async fn renew_lease(
                &self,
                lease: &Lease,
                lease_for: Duration,
            ) -> Result<Option<ExecutionStatus>> {
                self.renew_lease_row(lease, lease_for).await
            }

            async fn start_step(&self, lease: &Lease, step_id: &str) -> Result<bool> {
                self.start_step_row(lease, step_id).await
            }

            async fn record_step_upload(
                &self,
                lease: &Lease,
                step_id: &str,
                upload: Option<&str>,
            ) -> Result<bool> {
                self.record_step_upload_row(lease, step_id, upload).await
            }

            async fn step_progress(
                &self,
                lease: &Lease,
                step_id: &str,
                rows: i64,
                bytes: i64,
            ) -> Result<bool> {
                self.step_progress_row(lease, step_id, rows, bytes).await
            }

            async fn complete_step(
                &self,
                lease: &Lease,
                step_id: &str,
                rows: i64,
                bytes: i64,
                output_file: &str,
            ) -> Result<bool> {
                self.complete_step_row(lease, step_id, rows, bytes, output_file)
                    .await
            }

            async fn fail_step(&self, lease: &Lease, step_id: &str, error: &StepError) -> Result<bool> {
                self.fail_step_row(lease, step_id, error).await
            }

            async fn finish_execution(&self, lease: &Lease, status: ExecutionStatus) -> Result<bool> {
                self.finish_execution_row(lease, status).await
            }

            async fn request_cancel(
                &self,
                org_id: &str,
                project_uuid: &str,
                execution_id: &str,
            ) -> Result<Option<Execution>> {
                self.request_cancel_row(org_id, project_uuid, execution_id)
                    .await
            }

            async fn executions_to_reap(
                &self,
                now: DateTime<Utc>,
                queued_before: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<String>> {
                self.executions_to_reap_rows(now, queued_before, limit)
                    .await
            }

            async fn active_executions_using(&self, org_id: &str, connector_uuid: &str) -> Result<i64> {
                self.active_executions_using_rows(org_id, connector_uuid)
                    .await
            }
        }
    };
}

sql_store!(
    PostgresStore,
    Postgres,
    backend = "postgres",
    migrator = POSTGRES_MIGRATOR,
    begin = "BEGIN",
    lock = " FOR UPDATE",
    name_collation = "COLLATE \"C\"",
    step_connector_uuid = "s.config ->> 'connector_uuid'",
);

sql_store!(
    SqliteStore,
    Sqlite,
    backend = "sqlite",
    migrator = SQLITE_MIGRATOR,
    begin = "BEGIN IMMEDIATE",
    lock = "",
    name_collation = "",
    step_connector_uuid = "json_extract(s.config, '$.connector_uuid')",
);
