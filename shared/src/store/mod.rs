//! The metadata store: the source of truth for projects, steps, grants,
//! connectors and executions. One trait per aggregate ([`ProjectStore`],
//! [`StepStore`], [`GrantStore`], [`ConnectorStore`], [`ExecutionStore`])
//! under the supertrait [`Store`], implemented once by [`SqlStore`] for two
//! backends — PostgreSQL for distributed deployments and SQLite for
//! `ferry up` — that pass one conformance suite
//! (`shared/tests/integration/store*.rs`). See `sql/design.md` for how one
//! body of SQL serves both.

mod api_keys;
pub mod oauth_refresh;
pub mod oauth_states;
mod probes;
mod schedules;
pub mod slots;
mod sql;
pub mod webhooks;

use async_trait::async_trait;

use crate::domain::{
    Connector, ConnectorListQuery, ConnectorUsage, Execution, ExecutionStatus, Lease, NewStep, OrgRole, Page,
    PageRequest, Project, ProjectListQuery, ProjectPatch, ProjectSummary, ResourceKind, Role, Sealed, Step,
    StepError, StepPatch, TestRecord,
};
use crate::error::{Error, Result};

pub use api_keys::{ApiKey, ApiKeyStore, service_user};
pub use oauth_refresh::{DueToken, OAuthRefreshStore, UntrackedToken};
pub use oauth_states::{OAuthState, OAuthStateStore};
pub use probes::{ProbeStore, ProbeTarget, ProbeTransition};
pub use schedules::{ProjectSchedule, ScheduleStore};
pub use slots::{SlotState, SlotStore};
pub use sql::{Pool, PostgresStore, SqlStore, SqliteStore};
pub use webhooks::{AttemptRecord, ClaimedDelivery, WebhookStore};

/// A time-bounded claim one holder makes on a connector (its OAuth refresh
/// lease, one of its concurrency slots), made at `now` and lasting until
/// `until` unless renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    pub connector_uuid: &'a str,
    pub holder: &'a str,
    pub now: chrono::DateTime<chrono::Utc>,
    pub until: chrono::DateTime<chrono::Utc>,
}

/// What a completed step wrote: its totals and its result object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOutput<'a> {
    pub rows: i64,
    pub bytes: i64,
    pub output_file: &'a str,
}

/// A user's grant on one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub resource: ResourceKind,
    pub resource_uuid: String,
    pub user_id: String,
    pub role: Role,
    pub granted_by: String,
    pub granted_at: chrono::DateTime<chrono::Utc>,
}

/// Everything a role needs from the metadata store: one trait per
/// aggregate, so that code can depend on only what it uses (for example
/// `&dyn ExecutionStore`), and `Arc<dyn Store>` where a role needs several.
/// Methods of the aggregate traits are callable on `dyn Store` without
/// importing them.
///
/// Every project operation is scoped by `org_id`: a project of another
/// organization is indistinguishable from one that does not exist.
#[async_trait]
pub trait Store:
    ProjectStore
    + StepStore
    + GrantStore
    + ConnectorStore
    + ExecutionStore
    + ApiKeyStore
    + OAuthStateStore
    + ScheduleStore
    + ProbeStore
    + OAuthRefreshStore
    + SlotStore
    + WebhookStore
{
    /// Which backend this is (`postgres` or `sqlite`), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Checks that the store answers a trivial query.
    async fn ping(&self) -> Result<()>;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;
}

/// Projects, scoped by organization.
#[async_trait]
pub trait ProjectStore: Send + Sync + 'static {
    /// Inserts a project and grants its creator `owner`, atomically.
    async fn create_project(&self, project: &Project) -> Result<()>;

    /// The project with this id in this organization, whatever its status.
    async fn get_project(&self, org_id: &str, uuid: &str) -> Result<Option<Project>>;

    /// A page of the projects the caller may see (admins: all of the
    /// organization's; members: those they hold a grant on), with each
    /// project's step count and the caller's role. Sorted by the requested
    /// field, then by `uuid` in the same direction.
    async fn list_projects(&self, query: &ProjectListQuery) -> Result<Page<ProjectSummary>>;

    /// Applies `patch` and returns the updated project, or `None` when the
    /// project does not exist. While the project has an execution queued,
    /// running or cancelling this is `Error::Conflict` whose `extra` carries
    /// its `execution_id`, decided under the project's row lock (the lock an
    /// execute call takes), so no execution is admitted halfway.
    async fn update_project(&self, org_id: &str, uuid: &str, patch: ProjectPatch) -> Result<Option<Project>>;

    /// Removes the project, its steps and its grants. Returns whether it
    /// existed.
    async fn delete_project(&self, org_id: &str, uuid: &str) -> Result<bool>;
}

/// Grants of users on projects and connectors, and the role an execution
/// runs with.
#[async_trait]
pub trait GrantStore: Send + Sync + 'static {
    /// The explicit grant of `user_id` on a resource, if any.
    async fn role_of(&self, resource: ResourceKind, uuid: &str, user_id: &str) -> Result<Option<Role>>;

    /// Creates or replaces a grant. Replacing the resource's only owner
    /// grant with a lower role is `Error::Conflict` ("the last owner"),
    /// decided in the write's transaction with the owner grants locked.
    async fn put_grant(&self, grant: &Grant) -> Result<()>;

    /// Every grant on a resource, oldest first.
    async fn list_grants(&self, resource: ResourceKind, uuid: &str) -> Result<Vec<Grant>>;

    /// Removes a grant. Returns whether it existed. Removing the resource's
    /// only owner is `Error::Conflict`, decided like [`GrantStore::put_grant`].
    async fn delete_grant(&self, resource: ResourceKind, uuid: &str, user_id: &str) -> Result<bool>;

    /// The effective role on a connector of the user who executed
    /// `execution_id`, for the worker's check before a step reads anything:
    /// `owner` when the execution was admitted for an organization admin
    /// (see [`GrantStore::record_execution_role`]), else the user's explicit
    /// grant on the connector now. None when the user has no grant, or the
    /// execution, or the connector in the execution's organization, does not
    /// exist.
    async fn executor_connector_role(&self, execution_id: &str, connector_uuid: &str)
    -> Result<Option<Role>>;

    /// Records the organization role the executing user had when the
    /// execution was admitted (unrecorded counts as `member`: a grant is
    /// needed). Returns whether the execution exists.
    async fn record_execution_role(&self, execution_id: &str, role: OrgRole) -> Result<bool>;
}

/// A project's ordered steps.
///
/// Every step write (insert, update, delete, reorder) is `Error::Conflict`
/// with the `execution_id` while the project has an execution in
/// progress, checked in the write's transaction under the project lock.
#[async_trait]
pub trait StepStore: Send + Sync + 'static {
    /// The project's steps in order.
    async fn list_steps(&self, project_uuid: &str) -> Result<Vec<Step>>;

    async fn get_step(&self, project_uuid: &str, step_id: &str) -> Result<Option<Step>>;

    /// Inserts a step at `new.order` (shifting the later ones down) or at the
    /// end, and touches the project's `updated_at`. An order past the end
    /// appends. Returns the stored step.
    async fn insert_step(&self, project_uuid: &str, new: NewStep) -> Result<Step>;

    /// Applies `patch`; a new `order` moves the step and shifts the steps in
    /// between. Returns `None` when the step does not exist.
    async fn update_step(&self, project_uuid: &str, step_id: &str, patch: StepPatch) -> Result<Option<Step>>;

    /// Deletes a step and closes the gap in the order. Returns whether it
    /// existed.
    async fn delete_step(&self, project_uuid: &str, step_id: &str) -> Result<bool>;

    /// Sets the order of all steps to `step_ids` (which the caller has
    /// checked is a permutation of the current ids). Returns the steps in
    /// their new order.
    async fn reorder_steps(&self, project_uuid: &str, step_ids: &[String]) -> Result<Vec<Step>>;
}

/// Connectors with their sealed secrets and their test history.
#[async_trait]
pub trait ConnectorStore: Send + Sync + 'static {
    /// Inserts a connector and grants its creator `owner`, atomically.
    async fn create_connector(&self, connector: &Connector) -> Result<()>;

    /// The connector with this id in this organization, whatever its status.
    async fn get_connector(&self, org_id: &str, uuid: &str) -> Result<Option<Connector>>;

    /// The connectors the caller may see (admins: all of the organization's;
    /// members: those they hold a grant on) with the caller's role, filtered
    /// by type and status, oldest first (then by uuid).
    async fn list_connectors(&self, query: &ConnectorListQuery) -> Result<Vec<(Connector, Role)>>;

    /// Writes every mutable field of `connector` (display name, config,
    /// secrets, config_version, status, test and disable fields, updated_at)
    /// if its stored `config_version` is still `expected_version`. Returns
    /// false when the connector is gone or was changed concurrently. The
    /// sealed secrets are written only when `connector.config_version`
    /// differs from `expected_version` (a configuration change); otherwise
    /// the stored ones stay, so a concurrent key rotation is never undone.
    async fn update_connector(&self, connector: &Connector, expected_version: i64) -> Result<bool>;

    /// Removes the connector, its grants and its test history. Returns whether it existed.
    async fn delete_connector(&self, org_id: &str, uuid: &str) -> Result<bool>;

    /// Projects of the organization whose steps name this connector in
    /// `config.connector_uuid`, with how many of their steps do; by project name.
    async fn connector_usage(&self, org_id: &str, uuid: &str) -> Result<Vec<ConnectorUsage>>;

    /// Appends a test result to the connector's history and, when the
    /// connector exists, sets its `last_tested_at` / `last_test_status`.
    async fn record_test(&self, record: &TestRecord) -> Result<()>;

    /// The connector's test history since `since`, oldest first.
    async fn test_history(&self, uuid: &str, since: chrono::DateTime<chrono::Utc>)
    -> Result<Vec<TestRecord>>;

    /// Up to `limit` connectors (any organization) whose secrets are sealed
    /// under a key other than `key_id`, for key rotation.
    async fn connectors_sealed_with_other_key(&self, key_id: &str, limit: i64) -> Result<Vec<Connector>>;

    /// How many connectors (any organization) have secrets sealed under a
    /// key other than `key_id`: zero proves a rotation complete.
    async fn count_connectors_sealed_with_other_key(&self, key_id: &str) -> Result<u64>;

    /// Replaces a connector's sealed secrets if they still equal `old`
    /// (compare-and-swap, so rotation never overwrites a concurrent update).
    async fn replace_secrets(&self, uuid: &str, old: &Sealed, new: &Sealed) -> Result<bool>;
}

/// Executions: admission, the worker's lease and step transitions, cancel,
/// and the reaper's scan.
#[async_trait]
pub trait ExecutionStore: Send + Sync + 'static {
    /// Inserts a queued execution with its step snapshot and, in the same
    /// transaction, sets the project `active` with `last_executed_at` (the
    /// execution's `created_at`). A project has at most one non-terminal
    /// execution — enforced by the schema (a partial unique index on
    /// project_uuid WHERE status IN ('queued','running','cancelling')) — so a
    /// second one is `Error::Conflict` whose `extra` carries `execution_id`
    /// of the one in progress (message "Project is already executing").
    /// A missing project is `Error::NotFound`, an archived one a conflict.
    async fn create_execution(&self, execution: &Execution) -> Result<()>;

    /// The execution with its steps (in order), if it belongs to this
    /// project of this organization.
    async fn get_execution(
        &self,
        org_id: &str,
        project_uuid: &str,
        execution_id: &str,
    ) -> Result<Option<Execution>>;

    /// By id alone (workers and the reaper), with its steps.
    async fn load_execution(&self, execution_id: &str) -> Result<Option<Execution>>;

    /// A page of a project's executions, newest first (then by id).
    async fn list_executions(&self, project_uuid: &str, page: PageRequest) -> Result<Page<Execution>>;

    /// The id of the project's execution in progress, if any.
    async fn active_execution(&self, project_uuid: &str) -> Result<Option<String>>;

    /// Takes the execution for `owner`: when it is queued, running or
    /// cancelling with no live lease (lease_expires_at NULL or < now), bumps
    /// `attempt`, sets lease owner and lease_expires_at = now + lease_for,
    /// moves `queued` to `running`, sets `started_at` if unset. None when
    /// another worker holds a live lease, or it is terminal or missing (a
    /// duplicate or late job). One conditional `UPDATE … RETURNING`, so two
    /// concurrent claims never both succeed.
    async fn claim_execution(
        &self,
        execution_id: &str,
        owner: &str,
        lease_for: std::time::Duration,
    ) -> Result<Option<Lease>>;

    /// Extends the lease if lease.attempt still owns the execution and
    /// returns its current status (so a worker learns of `cancelling`); None
    /// when fenced out (a newer attempt, or terminal).
    async fn renew_lease(
        &self,
        lease: &Lease,
        lease_for: std::time::Duration,
    ) -> Result<Option<ExecutionStatus>>;

    /// Step transitions, each fenced on the lease's attempt (the execution's
    /// attempt = lease.attempt and it is not terminal, checked under a lock
    /// of the execution row); false when fenced out or the step does not
    /// exist, and then nothing changed.
    ///
    /// `start_step`: status running, started_at = now; a step re-run after
    /// a crash gets a fresh started_at, its rows/bytes reset to 0 and its
    /// completion, output and error cleared.
    async fn start_step(&self, lease: &Lease, step_id: &str) -> Result<bool>;

    /// Records (Some) or clears (None) the id of the multipart upload the
    /// attempt opened for the step's result object, so that the next attempt
    /// can abort it if this one dies mid-upload (see
    /// [`StepRun::open_upload`](crate::domain::StepRun::open_upload)).
    async fn record_step_upload(&self, lease: &Lease, step_id: &str, upload: Option<&str>) -> Result<bool>;

    /// Records the running step's progress so far; false also when the step
    /// is not running.
    async fn step_progress(&self, lease: &Lease, step_id: &str, rows: i64, bytes: i64) -> Result<bool>;

    /// Records why the running step waits (`None`: it proceeds); false also
    /// when the step is not running.
    async fn step_waiting(&self, lease: &Lease, step_id: &str, reason: Option<&str>) -> Result<bool>;

    /// The step completed with its totals and its result object; its open
    /// upload is cleared.
    async fn complete_step(&self, lease: &Lease, step_id: &str, output: StepOutput<'_>) -> Result<bool>;

    /// Fails a step with `error`, marks later pending steps skipped and the
    /// execution failed (completed_at = now), releases the lease.
    async fn fail_step(&self, lease: &Lease, step_id: &str, error: &StepError) -> Result<bool>;

    /// Ends the execution as `completed` or `cancelled` (for cancelled: a
    /// running step becomes cancelled, pending ones skipped), completed_at =
    /// now, releases the lease. Any other status is an internal error.
    async fn finish_execution(&self, lease: &Lease, status: ExecutionStatus) -> Result<bool>;

    /// A caller's cancel: queued → `cancelled` at once (steps cancelled,
    /// completed_at set); running → `cancelling`; cancelling stays; terminal
    /// → Error::Conflict ("Execution already finished"). Returns the
    /// execution as it now stands, None when it does not exist in this
    /// project/org.
    async fn request_cancel(
        &self,
        org_id: &str,
        project_uuid: &str,
        execution_id: &str,
    ) -> Result<Option<Execution>>;

    /// Executions the reaper must re-enqueue: non-terminal with an expired
    /// lease, or queued without a lease and created before `queued_before`
    /// (also running/cancelling without a lease, which should not exist);
    /// oldest first, limited.
    async fn executions_to_reap(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        queued_before: chrono::DateTime<chrono::Utc>,
        limit: i64,
    ) -> Result<Vec<String>>;

    /// Non-terminal executions whose step snapshot uses this connector
    /// (config.connector_uuid), in this org.
    async fn active_executions_using(&self, org_id: &str, connector_uuid: &str) -> Result<i64>;
}

/// Opens the store named by `url` (`postgres://…` or `sqlite://…`), with
/// a bounded connection wait so that an unreachable database is an error,
/// not a hang.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(SqlStore::connect_postgres(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqlStore::connect_sqlite(url).await?))
    } else {
        Err(Error::validation(
            "database_url",
            "the database URL must start with postgres:// or sqlite://",
        ))
    }
}
