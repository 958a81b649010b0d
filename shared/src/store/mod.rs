//! The metadata store: the source of truth for projects, steps and grants
//! (and, later, connectors and executions). One trait, two backends —
//! PostgreSQL for distributed deployments and SQLite for `ferry up` — that
//! pass one conformance suite.

mod sql;

use async_trait::async_trait;

use crate::domain::{
    NewStep, Page, Project, ProjectListQuery, ProjectPatch, ProjectSummary, ResourceKind, Role,
    Step, StepPatch,
};
use crate::error::{Error, Result};

pub use sql::{PostgresStore, SqliteStore};

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

/// Everything a role needs from the metadata store.
///
/// Every project operation is scoped by `org_id`: a project of another
/// organization is indistinguishable from one that does not exist.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is (`postgres` or `sqlite`), for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Checks that the store answers a trivial query.
    async fn ping(&self) -> Result<()>;

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;

    // --- projects -----------------------------------------------------------

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
    /// project does not exist.
    async fn update_project(
        &self,
        org_id: &str,
        uuid: &str,
        patch: ProjectPatch,
    ) -> Result<Option<Project>>;

    /// Removes the project, its steps and its grants. Returns whether it
    /// existed.
    async fn delete_project(&self, org_id: &str, uuid: &str) -> Result<bool>;

    // --- grants -------------------------------------------------------------

    /// The explicit grant of `user_id` on a resource, if any.
    async fn role_of(&self, resource: ResourceKind, uuid: &str, user_id: &str) -> Result<Option<Role>>;

    /// Creates or replaces a grant.
    async fn put_grant(&self, grant: &Grant) -> Result<()>;

    /// Every grant on a resource, oldest first.
    async fn list_grants(&self, resource: ResourceKind, uuid: &str) -> Result<Vec<Grant>>;

    /// Removes a grant. Returns whether it existed.
    async fn delete_grant(&self, resource: ResourceKind, uuid: &str, user_id: &str) -> Result<bool>;

    // --- steps --------------------------------------------------------------

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

/// Opens the store named by `url` (`postgres://…` or `sqlite://…`), with
/// a bounded connection wait so that an unreachable database is an error,
/// not a hang.
pub async fn connect(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(Error::validation(
            "database_url",
            "the database URL must start with postgres:// or sqlite://",
        ))
    }
}
