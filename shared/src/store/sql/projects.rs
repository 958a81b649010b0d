//! Project queries: [`ProjectStore`] for [`SqlStore`], and [`list_sql`],
//! which builds the one dynamic statement (the filtered, sorted list).

use std::fmt::Write as _;

use async_trait::async_trait;
use sqlx::AssertSqlSafe;
use sqlx::types::Json;

use super::db::Sql;
use super::rows::{ProjectRow, SummaryRow, project_columns};
use super::{SqlStore, grants, steps};
use crate::domain::project::search_text;
use crate::domain::{
    Page, Project, ProjectListQuery, ProjectPatch, ProjectSort, ProjectStatus, ProjectSummary, ResourceKind,
};
use crate::error::Result;
use crate::store::ProjectStore;

/// The list query for one request: the page's `SELECT`, the matching
/// `COUNT(*)`, and the text values both bind as `$1…$n`. The `SELECT` then
/// takes the limit as `$n+1` and the offset as `$n+2`.
///
/// Only fixed fragments of this module enter the SQL text; every value the
/// caller supplies is a bind parameter.
pub(super) struct ListSql {
    pub select: String,
    pub count: String,
    pub binds: Vec<String>,
}

/// Builds the list query. `name_collation` is the dialect's byte-order
/// collation clause for the name sort (`COLLATE "C"` on PostgreSQL, empty on
/// SQLite whose default collation already compares bytes).
pub(super) fn list_sql(query: &ProjectListQuery, name_collation: &str) -> ListSql {
    let mut binds = vec![query.org_id.clone()];
    // Admins see the whole organization as owner; members see what they
    // hold a grant on, with that grant's role.
    let (role, from) = if query.is_admin {
        ("'owner'", "projects p")
    } else {
        binds.push(query.user_id.clone());
        (
            "g.role",
            "projects p JOIN grants g ON g.resource_type = 'project' \
             AND g.resource_uuid = p.uuid AND g.user_id = $2",
        )
    };

    let mut filter = String::from("p.org_id = $1");
    match query.status {
        None => {
            let _ = write!(filter, " AND p.status <> '{}'", ProjectStatus::Archived.as_str());
        }
        Some(status) => {
            binds.push(status.as_str().to_owned());
            let _ = write!(filter, " AND p.status = ${}", binds.len());
        }
    }
    if let Some(search) = &query.search {
        binds.push(like_pattern(search));
        let _ = write!(filter, " AND p.search_text LIKE ${} ESCAPE '\\'", binds.len());
    }

    let direction = query.order.sql();
    let field = match query.sort {
        ProjectSort::CreatedAt => "p.created_at".to_owned(),
        ProjectSort::UpdatedAt => "p.updated_at".to_owned(),
        ProjectSort::Name => format!("p.name {name_collation}"),
    };
    let select = format!(
        "SELECT {columns}, \
         (SELECT COUNT(*) FROM steps s WHERE s.project_uuid = p.uuid) AS step_count, \
         {role} AS role \
         FROM {from} WHERE {filter} \
         ORDER BY {field} {direction}, p.uuid {direction} \
         LIMIT ${limit} OFFSET ${offset}",
        columns = super::rows::project_columns!(),
        limit = binds.len() + 1,
        offset = binds.len() + 2,
    );
    let count = format!("SELECT COUNT(*) FROM {from} WHERE {filter}");
    ListSql { select, count, binds }
}

/// A `LIKE … ESCAPE '\'` pattern matching `needle` anywhere, literally and
/// case-insensitively (the searched text is stored lowercased).
pub(super) fn like_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.to_lowercase().chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[async_trait]
impl ProjectStore for SqlStore {
    async fn create_project(&self, project: &Project) -> Result<()> {
        let search = search_text(&project.name, project.description.as_deref());
        let insert = Sql::new(
            "INSERT INTO projects (uuid, org_id, name, description, search_text, \
             connector_uuids, metadata, created_by, created_at, updated_at, \
             last_executed_at, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&project.uuid)
        .bind(&project.org_id)
        .bind(&project.name)
        .bind(&project.description)
        .bind(&search)
        .bind(Json(&project.connector_uuids))
        .bind(project.metadata.as_ref().map(Json))
        .bind(&project.created_by)
        .bind(project.created_at)
        .bind(project.updated_at)
        .bind(project.last_executed_at)
        .bind(project.status.as_str());
        grants::insert_with_owner(
            &self.pool,
            insert,
            ResourceKind::Project,
            &project.uuid,
            &project.created_by,
            project.created_at,
        )
        .await
    }

    async fn get_project(&self, org_id: &str, uuid: &str) -> Result<Option<Project>> {
        Sql::new(concat!(
            "SELECT ",
            project_columns!(),
            " FROM projects p WHERE p.org_id = $1 AND p.uuid = $2"
        ))
        .bind(org_id)
        .bind(uuid)
        .fetch_optional_as::<ProjectRow, _>(&self.pool)
        .await
    }

    async fn list_projects(&self, query: &ProjectListQuery) -> Result<Page<ProjectSummary>> {
        let sql = list_sql(query, self.pool.dialect().name_collation());
        let mut count = Sql::new(AssertSqlSafe(sql.count));
        let mut select = Sql::new(AssertSqlSafe(sql.select));
        for value in &sql.binds {
            count = count.bind(value);
            select = select.bind(value);
        }
        let total = count.scalar_one::<i64>(&self.pool).await?;
        let rows = select
            .bind(i64::from(query.page.limit))
            .bind(query.page.offset())
            .fetch_all_as::<SummaryRow, _>(&self.pool)
            .await?;
        Ok(Page {
            items: rows,
            total,
            request: query.page,
        })
    }

    async fn update_project(&self, org_id: &str, uuid: &str, patch: ProjectPatch) -> Result<Option<Project>> {
        let mut tx = self.pool.begin().await?;
        let row = Sql::new(tx.dialect().locked(concat!(
            "SELECT ",
            project_columns!(),
            " FROM projects p WHERE p.org_id = $1 AND p.uuid = $2"
        )))
        .bind(org_id)
        .bind(uuid)
        .fetch_optional::<ProjectRow>(&mut tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        // The row is locked (PostgreSQL) or the database is (SQLite): an
        // execute call waits for this transaction.
        steps::ensure_not_executing(&mut tx, uuid).await?;
        let mut project = Project::try_from(row)?;
        patch.apply(&mut project);
        Sql::new(
            "UPDATE projects SET name = $3, description = $4, search_text = $5, \
             connector_uuids = $6, metadata = $7, updated_at = $8, \
             last_executed_at = $9, status = $10 \
             WHERE org_id = $1 AND uuid = $2",
        )
        .bind(org_id)
        .bind(uuid)
        .bind(&project.name)
        .bind(&project.description)
        .bind(search_text(&project.name, project.description.as_deref()).as_str())
        .bind(Json(&project.connector_uuids))
        .bind(project.metadata.as_ref().map(Json))
        .bind(project.updated_at)
        .bind(project.last_executed_at)
        .bind(project.status.as_str())
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(Some(project))
    }

    async fn delete_project(&self, org_id: &str, uuid: &str) -> Result<bool> {
        // The steps go with the project (steps_project_fk cascades).
        let Some(tx) = grants::delete_with_grants(&self.pool, ResourceKind::Project, org_id, uuid).await?
        else {
            return Ok(false);
        };
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_patterns_escape_wildcards_and_lowercase() {
        assert_eq!(like_pattern("100%_ÜBER\\"), "%100\\%\\_über\\\\%");
    }
}
