//! Store conformance suite: one set of tests, each an
//! `async fn(Arc<dyn Store>)`, run against PostgreSQL (a fresh database per
//! test, dropped afterwards) and SQLite (a file in a temporary directory).
//!
//! PostgreSQL must be running at 127.0.0.1:5432 (user `postgres`, trust
//! auth): without it the PostgreSQL tests fail, they never skip. Test
//! databases use an ICU `en-US` default collation, so the name sort only
//! passes if the store asks for byte order explicitly.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use ferry_shared::Error;
use ferry_shared::domain::{
    self, Connector, ConnectorListQuery, ConnectorStatus, ConnectorUsage, NewProject, NewStep, Page,
    PageRequest, Project, ProjectListQuery, ProjectPatch, ProjectSort, ProjectStatus, ProjectSummary,
    ResourceKind, Role, Sealed, SortOrder, Step, StepPatch, StepType, TestRecord, TestStatus,
};
use ferry_shared::ids::IdKind;
use ferry_shared::store::{self, Grant, PostgresStore, SqliteStore, StepOutput, Store};
use serde_json::{Map, Value, json};

mod executions;
mod secrets;
mod step_attempts;

use executions::*;
use secrets::*;
use step_attempts::*;

/// A completed step's output: `rows` and `bytes` written to `output_file`.
fn output(rows: i64, bytes: i64, output_file: &str) -> StepOutput<'_> {
    StepOutput {
        rows,
        bytes,
        output_file,
    }
}

const ORG: &str = "org_acme";
const OTHER_ORG: &str = "org_globex";
const ALICE: &str = "user_alice";
const BOB: &str = "user_bob";
const CAROL: &str = "user_carol";

// ---------------------------------------------------------------- harness

/// Runs `test` against a fresh, migrated PostgreSQL database and drops the
/// database afterwards, whether the test passed or panicked.
async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let database = ferry_testkit::postgres::PgDatabase::create_with(
        "ferry_test",
        "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
    );
    let store = PostgresStore::connect(&database.url())
        .await
        .expect("connect to the test database");
    store.migrate().await.expect("migrate the test database");
    assert_eq!(store.backend(), "postgres");
    let pool = store.pool().clone();
    let outcome = tokio::spawn(test(Arc::new(store))).await;

    pool.close().await;
    drop(database);
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Runs `test` against a fresh, migrated SQLite file in a temporary
/// directory.
async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
    let store = SqliteStore::connect(&url).await.expect("open the test database");
    store.migrate().await.expect("migrate the test database");
    assert_eq!(store.backend(), "sqlite");
    let pool = store.pool().clone();
    let outcome = tokio::spawn(test(Arc::new(store))).await;

    pool.close().await;
    drop(dir);
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Instantiates each named test for both backends, as
/// `store::postgres::<name>` and `store::sqlite::<name>`.
macro_rules! conformance {
    ($($test:ident),+ $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::with_postgres(super::$test).await;
                }
            )+
        }

        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::with_sqlite(super::$test).await;
                }
            )+
        }
    };
}

// After `conformance!`, which it uses for its own tests.
mod api_keys;
mod oauth_states;
mod schedules;
mod slots;

conformance!(
    migrating_again_is_a_no_op_and_ping_answers,
    every_start_of_a_step_counts_one_attempt_and_the_count_outlives_the_step,
    a_fenced_start_counts_no_attempt_and_a_resume_counts_one,
    created_project_reads_back_with_every_field_equal,
    creating_a_project_grants_its_creator_owner,
    creating_a_project_twice_is_a_conflict,
    projects_of_another_organization_are_invisible,
    list_pages_report_the_total_of_all_pages,
    list_sorts_by_each_field_in_both_orders_breaking_ties_by_uuid,
    list_hides_archived_projects_unless_the_status_filter_asks_for_them,
    search_matches_name_and_description_ignoring_case_including_non_ascii,
    search_treats_percent_underscore_and_backslash_literally,
    members_list_only_granted_projects_with_their_grant_role,
    admins_list_every_project_of_their_organization_as_owner,
    list_counts_each_projects_steps,
    update_keeps_omitted_fields_clears_explicit_nulls_and_moves_updated_at,
    update_rewrites_the_search_text,
    update_of_a_missing_project_is_none,
    delete_project_removes_its_steps_and_project_grants_only,
    steps_append_at_the_end_by_default,
    inserting_a_step_at_an_order_shifts_the_later_ones,
    inserting_a_step_past_the_end_appends_and_before_the_start_prepends,
    inserting_a_step_touches_the_project_updated_at,
    inserting_a_step_into_a_missing_project_is_not_found,
    updating_a_step_order_moves_it_both_ways_shifting_the_steps_between,
    updating_a_step_changes_name_and_config_and_stamps_updated_at,
    updating_or_deleting_a_missing_step_finds_nothing,
    deleting_a_step_closes_the_gap,
    reordering_steps_sets_every_position_from_the_list,
    concurrent_step_inserts_keep_positions_contiguous,
    grants_are_put_replaced_listed_oldest_first_and_deleted,
    grants_of_different_resource_kinds_are_separate,
    connector_created_reads_back_with_every_field_equal,
    creating_a_connector_grants_its_creator_owner,
    creating_a_connector_twice_is_a_conflict,
    connectors_of_another_organization_are_invisible,
    members_list_only_granted_connectors_with_their_grant_role,
    admins_list_every_connector_of_their_organization_as_owner_oldest_first,
    connector_list_filters_by_type_and_status_for_admins_and_members,
    updating_a_connector_with_the_expected_version_writes_every_mutable_field,
    updating_a_connector_with_a_stale_version_returns_false_and_changes_nothing,
    deleting_a_connector_removes_its_grants_and_test_history_only,
    connector_usage_counts_naming_steps_per_project_by_name_within_the_organization,
    recording_a_test_sets_last_tested_fields_without_touching_version_or_updated_at,
    test_history_is_returned_oldest_first_from_since_inclusive,
    connectors_sealed_with_other_key_finds_only_other_key_rows_by_uuid_up_to_limit,
    replacing_secrets_swaps_once_and_a_stale_old_value_is_refused,
    created_execution_reads_back_with_its_step_snapshot_and_every_field_equal,
    an_execution_without_steps_reads_back_with_no_steps,
    creating_an_execution_makes_the_project_active_with_last_executed_at,
    creating_an_execution_of_a_missing_project_is_not_found,
    a_second_execution_in_progress_is_a_conflict_naming_the_first,
    concurrent_creates_for_one_project_never_both_succeed,
    after_the_execution_in_progress_ends_a_new_one_is_accepted,
    creating_an_execution_with_an_existing_id_is_a_conflict,
    executions_list_newest_first_then_by_id_in_pages_with_the_total,
    deleting_a_project_removes_its_executions,
    claiming_bumps_the_attempt_and_moves_queued_to_running,
    a_second_claim_while_the_lease_is_live_is_none,
    concurrent_claims_never_both_succeed,
    after_the_lease_expires_another_owner_claims_and_the_old_lease_is_fenced_out,
    an_open_upload_outlives_its_attempt_until_aborted_or_completed,
    renewing_extends_the_lease_and_reports_cancelling_after_a_cancel_request,
    claiming_a_terminal_or_missing_execution_is_none,
    completing_steps_records_progress_totals_and_output_and_finishing_completes,
    a_step_missing_from_the_execution_is_refused,
    failing_a_step_skips_the_later_steps_and_fails_the_execution,
    finishing_as_cancelled_cancels_the_running_step_and_skips_the_pending_ones,
    finishing_with_a_status_other_than_completed_or_cancelled_is_an_error,
    cancelling_a_queued_execution_cancels_it_at_once,
    cancelling_a_running_execution_asks_its_worker_and_a_finished_one_is_a_conflict,
    executions_to_reap_are_expired_leases_and_stale_queued_ones_not_live_ones,
    active_executions_using_counts_executions_in_progress_naming_the_connector,
    an_update_that_leaves_the_secrets_alone_keeps_the_ciphertext_a_rotation_wrote,
    a_configuration_change_writes_its_secrets_even_after_a_rotation,
    rotation_skips_what_no_key_decrypts_and_its_final_count_reports_it,
);

// ---------------------------------------------------------------- helpers

fn new_project(org_id: &str, created_by: &str, name: &str, description: Option<&str>) -> Project {
    NewProject {
        name: name.to_owned(),
        description: description.map(str::to_owned),
        connector_uuids: vec![IdKind::Connector.generate()],
        metadata: None,
    }
    .into_project(org_id, created_by)
}

async fn create(store: &Arc<dyn Store>, name: &str, description: Option<&str>) -> Project {
    let project = new_project(ORG, ALICE, name, description);
    store.create_project(&project).await.expect("create project");
    project
}

async fn fetch_project(store: &Arc<dyn Store>, org_id: &str, uuid: &str) -> Option<Project> {
    store.get_project(org_id, uuid).await.expect("get project")
}

async fn role(store: &Arc<dyn Store>, resource: ResourceKind, uuid: &str, user_id: &str) -> Option<Role> {
    store.role_of(resource, uuid, user_id).await.expect("role of")
}

async fn grants(store: &Arc<dyn Store>, resource: ResourceKind, uuid: &str) -> Vec<Grant> {
    store.list_grants(resource, uuid).await.expect("list grants")
}

async fn fetch_step(store: &Arc<dyn Store>, project_uuid: &str, step_id: &str) -> Option<Step> {
    store.get_step(project_uuid, step_id).await.expect("get step")
}

/// The first page (100 rows) of `org_id` as seen by `user_id`, newest first.
fn list_query(org_id: &str, user_id: &str, is_admin: bool) -> ProjectListQuery {
    ProjectListQuery {
        org_id: org_id.to_owned(),
        user_id: user_id.to_owned(),
        is_admin,
        page: PageRequest { page: 1, limit: 100 },
        sort: ProjectSort::CreatedAt,
        order: SortOrder::Desc,
        status: None,
        search: None,
    }
}

fn admin_query() -> ProjectListQuery {
    list_query(ORG, "user_admin", true)
}

async fn list(store: &Arc<dyn Store>, query: &ProjectListQuery) -> Page<ProjectSummary> {
    store.list_projects(query).await.expect("list projects")
}

/// The listed project names, sorted (for filters, where order is not the
/// point).
async fn listed_names(store: &Arc<dyn Store>, query: &ProjectListQuery) -> Vec<String> {
    let page = list(store, query).await;
    assert_eq!(
        page.total,
        page.items.len() as i64,
        "total agrees with the unpaged items"
    );
    let mut names: Vec<String> = page.items.into_iter().map(|item| item.project.name).collect();
    names.sort();
    names
}

async fn searched(store: &Arc<dyn Store>, needle: &str) -> Vec<String> {
    listed_names(
        store,
        &ProjectListQuery {
            search: Some(needle.to_owned()),
            ..admin_query()
        },
    )
    .await
}

fn uuids(page: &Page<ProjectSummary>) -> Vec<String> {
    page.items.iter().map(|item| item.project.uuid.clone()).collect()
}

fn step_named(name: &str, order: Option<i32>) -> NewStep {
    NewStep {
        name: name.to_owned(),
        step_type: StepType::Transform,
        order,
        config: json!({"query": format!("select '{name}'")}),
        dependencies: Vec::new(),
    }
}

async fn add_steps(store: &Arc<dyn Store>, project: &Project, names: &[&str]) -> Vec<Step> {
    let mut steps = Vec::new();
    for name in names {
        steps.push(
            store
                .insert_step(&project.uuid, step_named(name, None))
                .await
                .expect("insert step"),
        );
    }
    steps
}

/// The project's step names in order, after checking that the orders are
/// exactly 1, 2, …, n.
async fn step_order(store: &Arc<dyn Store>, project: &Project) -> Vec<String> {
    let steps = store.list_steps(&project.uuid).await.expect("list steps");
    let orders: Vec<i32> = steps.iter().map(|step| step.order).collect();
    let expected: Vec<i32> = (1..=steps.len() as i32).collect();
    assert_eq!(orders, expected, "step orders are contiguous from 1");
    steps.into_iter().map(|step| step.name).collect()
}

fn step_id<'a>(steps: &'a [Step], name: &str) -> &'a str {
    &steps
        .iter()
        .find(|step| step.name == name)
        .expect("step by name")
        .step_id
}

/// Waits long enough for `domain::now()` (microseconds) to move.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn at(micros: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
        .single()
        .expect("valid time")
        + chrono::Duration::microseconds(micros)
}

fn grant(uuid: &str, user_id: &str, role: Role, granted_at: DateTime<Utc>) -> Grant {
    Grant {
        resource: ResourceKind::Project,
        resource_uuid: uuid.to_owned(),
        user_id: user_id.to_owned(),
        role,
        granted_by: ALICE.to_owned(),
        granted_at,
    }
}

// ---------------------------------------------------------------- projects

async fn migrating_again_is_a_no_op_and_ping_answers(store: Arc<dyn Store>) {
    store.migrate().await.expect("second migrate");
    store.ping().await.expect("ping");
    let project = create(&store, "after migrations", None).await;
    assert!(fetch_project(&store, ORG, &project.uuid).await.is_some());
}

async fn created_project_reads_back_with_every_field_equal(store: Arc<dyn Store>) {
    let now = domain::now();
    let sparse = Project {
        description: None,
        connector_uuids: vec![IdKind::Connector.generate(), IdKind::Connector.generate()],
        metadata: Some(json!({
            "team": {"name": "Données", "tags": ["finance", "ü"]},
            "threshold": 1.5,
            "enabled": true,
            "nothing": null,
        })),
        ..new_project(ORG, ALICE, "Sparse", None)
    };
    let full = Project {
        uuid: IdKind::Project.generate(),
        org_id: ORG.to_owned(),
        name: "Full — ÜBER".to_owned(),
        description: Some("every column set".to_owned()),
        connector_uuids: Vec::new(),
        metadata: None,
        created_by: BOB.to_owned(),
        created_at: now - chrono::Duration::days(3),
        updated_at: now - chrono::Duration::microseconds(1_234_567),
        last_executed_at: Some(now - chrono::Duration::hours(1)),
        status: ProjectStatus::Active,
    };
    for project in [&sparse, &full] {
        store.create_project(project).await.expect("create");
        let stored = fetch_project(&store, ORG, &project.uuid).await.expect("exists");
        assert_eq!(&stored, project);
    }
    let listed = list(&store, &admin_query()).await;
    let listed: Vec<&Project> = listed.items.iter().map(|item| &item.project).collect();
    assert_eq!(
        listed,
        [&sparse, &full],
        "the list carries the same fields, newest first"
    );
    assert!(
        fetch_project(&store, ORG, &IdKind::Project.generate())
            .await
            .is_none()
    );
}

async fn creating_a_project_grants_its_creator_owner(store: Arc<dyn Store>) {
    let project = create(&store, "Owned", None).await;
    assert_eq!(
        role(&store, ResourceKind::Project, &project.uuid, ALICE).await,
        Some(Role::Owner)
    );
    let stored = grants(&store, ResourceKind::Project, &project.uuid).await;
    assert_eq!(
        stored,
        [grant(&project.uuid, ALICE, Role::Owner, project.created_at)]
    );
    assert_eq!(
        role(&store, ResourceKind::Project, &project.uuid, BOB).await,
        None
    );
}

async fn creating_a_project_twice_is_a_conflict(store: Arc<dyn Store>) {
    let project = create(&store, "Once", None).await;
    let again = Project {
        name: "Twice".to_owned(),
        ..project.clone()
    };
    match store.create_project(&again).await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let stored = fetch_project(&store, ORG, &project.uuid).await.expect("exists");
    assert_eq!(stored.name, "Once", "the failed create changed nothing");
    assert_eq!(
        grants(&store, ResourceKind::Project, &project.uuid).await.len(),
        1
    );
}

async fn projects_of_another_organization_are_invisible(store: Arc<dyn Store>) {
    let ours = create(&store, "Ours", None).await;
    let theirs = new_project(OTHER_ORG, BOB, "Theirs", None);
    store.create_project(&theirs).await.expect("create");

    assert!(fetch_project(&store, ORG, &theirs.uuid).await.is_none());
    assert!(fetch_project(&store, OTHER_ORG, &theirs.uuid).await.is_some());
    assert_eq!(uuids(&list(&store, &admin_query()).await), [ours.uuid.as_str()]);
    // Bob's owner grant on the other organization's project does not make
    // it visible in this one.
    assert_eq!(list(&store, &list_query(ORG, BOB, false)).await.total, 0);

    let patch = ProjectPatch {
        name: Some("Hijacked".to_owned()),
        ..ProjectPatch::default()
    };
    assert!(
        store
            .update_project(ORG, &theirs.uuid, patch)
            .await
            .expect("update")
            .is_none()
    );
    assert!(!store.delete_project(ORG, &theirs.uuid).await.expect("delete"));
    let still = fetch_project(&store, OTHER_ORG, &theirs.uuid)
        .await
        .expect("still there");
    assert_eq!(still, theirs);
}

async fn list_pages_report_the_total_of_all_pages(store: Arc<dyn Store>) {
    let mut created = Vec::new();
    for index in 0..5 {
        created.push(create(&store, &format!("Project {index}"), None).await);
    }
    store
        .create_project(&new_project(OTHER_ORG, ALICE, "Elsewhere", None))
        .await
        .expect("create");

    let page = |number: u32| ProjectListQuery {
        page: PageRequest {
            page: number,
            limit: 2,
        },
        ..admin_query()
    };
    let first = list(&store, &page(1)).await;
    assert_eq!((first.items.len(), first.total, first.total_pages()), (2, 5, 3));
    assert!(first.has_next() && !first.has_prev());
    let second = list(&store, &page(2)).await;
    assert_eq!((second.items.len(), second.total), (2, 5));
    assert!(second.has_next() && second.has_prev());
    let third = list(&store, &page(3)).await;
    assert_eq!((third.items.len(), third.total), (1, 5));
    assert!(!third.has_next() && third.has_prev());
    let beyond = list(&store, &page(4)).await;
    assert_eq!((beyond.items.len(), beyond.total), (0, 5));

    let paged: Vec<String> = [first, second, third].iter().flat_map(uuids).collect();
    let newest_first: Vec<String> = created.iter().rev().map(|project| project.uuid.clone()).collect();
    assert_eq!(paged, newest_first, "the pages partition the full list in order");

    let filtered = ProjectListQuery {
        search: Some("project 1".to_owned()),
        ..page(1)
    };
    let filtered = list(&store, &filtered).await;
    assert_eq!(
        (filtered.items.len(), filtered.total),
        (1, 1),
        "the total counts the filtered rows"
    );
}

async fn list_sorts_by_each_field_in_both_orders_breaking_ties_by_uuid(store: Arc<dyn Store>) {
    // Equal names, equal timestamps (with 0, 3 and 6 fractional digits) and
    // names whose byte order differs from a locale's ("Zeta" < "alpha" <
    // "Ärger").
    let rows = [
        ("alpha", 60_000_000, 3_000_000),
        ("Zeta", 60_500_000, 2_000_000),
        ("alpha", 60_000_000, 3_000_000),
        ("Ärger", 60_123_456, 1_250_000),
        ("beta", 61_000_000, 2_000_000),
        ("alpha", 60_500_000, 0),
    ];
    let mut projects = Vec::new();
    for (name, created, updated) in rows {
        let project = Project {
            created_at: at(created),
            updated_at: at(120_000_000 + updated),
            ..new_project(ORG, ALICE, name, None)
        };
        store.create_project(&project).await.expect("create");
        projects.push(project);
    }

    for sort in [ProjectSort::CreatedAt, ProjectSort::UpdatedAt, ProjectSort::Name] {
        let mut expected = projects.clone();
        expected.sort_by(|a, b| {
            let by_field = match sort {
                ProjectSort::CreatedAt => a.created_at.cmp(&b.created_at),
                ProjectSort::UpdatedAt => a.updated_at.cmp(&b.updated_at),
                ProjectSort::Name => a.name.as_bytes().cmp(b.name.as_bytes()),
            };
            by_field.then_with(|| a.uuid.cmp(&b.uuid))
        });
        let ascending: Vec<String> = expected.iter().map(|project| project.uuid.clone()).collect();
        let descending: Vec<String> = ascending.iter().rev().cloned().collect();
        for (order, expected) in [(SortOrder::Asc, ascending), (SortOrder::Desc, descending)] {
            let query = ProjectListQuery {
                sort,
                order,
                ..admin_query()
            };
            assert_eq!(uuids(&list(&store, &query).await), expected, "{sort:?} {order:?}");
            // The same order holds across page boundaries.
            let mut paged = Vec::new();
            for page in 1..=3 {
                let query = ProjectListQuery {
                    page: PageRequest { page, limit: 2 },
                    ..query.clone()
                };
                paged.extend(uuids(&list(&store, &query).await));
            }
            assert_eq!(paged, expected, "{sort:?} {order:?} paged");
        }
    }
}

async fn list_hides_archived_projects_unless_the_status_filter_asks_for_them(store: Arc<dyn Store>) {
    for (name, status) in [
        ("draft", ProjectStatus::Draft),
        ("active", ProjectStatus::Active),
        ("archived", ProjectStatus::Archived),
    ] {
        store
            .create_project(&Project {
                status,
                ..new_project(ORG, ALICE, name, None)
            })
            .await
            .expect("create");
    }
    assert_eq!(listed_names(&store, &admin_query()).await, ["active", "draft"]);
    for (status, expected) in [
        (ProjectStatus::Draft, "draft"),
        (ProjectStatus::Active, "active"),
        (ProjectStatus::Archived, "archived"),
    ] {
        let query = ProjectListQuery {
            status: Some(status),
            ..admin_query()
        };
        assert_eq!(listed_names(&store, &query).await, [expected]);
    }
    let members = ProjectListQuery {
        status: Some(ProjectStatus::Archived),
        ..list_query(ORG, ALICE, false)
    };
    assert_eq!(
        listed_names(&store, &members).await,
        ["archived"],
        "members filter the same way"
    );
}

async fn search_matches_name_and_description_ignoring_case_including_non_ascii(store: Arc<dyn Store>) {
    create(&store, "Quarterly Revenue", None).await;
    create(&store, "Plain", Some("Reports ÜBER alles")).await;
    create(&store, "Straße Summary", Some("weekly")).await;
    store
        .create_project(&new_project(OTHER_ORG, ALICE, "Revenue elsewhere", None))
        .await
        .expect("create");

    assert_eq!(searched(&store, "revenue").await, ["Quarterly Revenue"]);
    assert_eq!(searched(&store, "REVENUE").await, ["Quarterly Revenue"]);
    assert_eq!(
        searched(&store, "über").await,
        ["Plain"],
        "found in the description"
    );
    assert_eq!(searched(&store, "ÜBER").await, ["Plain"]);
    assert_eq!(searched(&store, "STRAßE").await, ["Straße Summary"]);
    assert_eq!(searched(&store, "WEEK").await, ["Straße Summary"]);
    assert_eq!(
        searched(&store, "r").await,
        ["Plain", "Quarterly Revenue", "Straße Summary"]
    );
    assert!(searched(&store, "nowhere").await.is_empty());
    let members = ProjectListQuery {
        search: Some("plain".to_owned()),
        ..list_query(ORG, ALICE, false)
    };
    assert_eq!(listed_names(&store, &members).await, ["Plain"]);
}

async fn search_treats_percent_underscore_and_backslash_literally(store: Arc<dyn Store>) {
    for name in [
        "100% done",
        "100 percent",
        "snake_case",
        "snakeXcase",
        "back\\slash",
        "backslash",
    ] {
        create(&store, name, None).await;
    }
    assert_eq!(searched(&store, "%").await, ["100% done"]);
    assert_eq!(searched(&store, "0% d").await, ["100% done"]);
    assert_eq!(searched(&store, "_").await, ["snake_case"]);
    assert_eq!(searched(&store, "e_c").await, ["snake_case"]);
    assert_eq!(searched(&store, "\\").await, ["back\\slash"]);
    assert_eq!(searched(&store, "k\\s").await, ["back\\slash"]);
    assert_eq!(searched(&store, "100").await, ["100 percent", "100% done"]);
}

async fn members_list_only_granted_projects_with_their_grant_role(store: Arc<dyn Store>) {
    let viewed = create(&store, "Viewed", None).await;
    let edited = create(&store, "Edited", None).await;
    create(&store, "Private", None).await;
    let elsewhere = new_project(OTHER_ORG, CAROL, "Elsewhere", None);
    store.create_project(&elsewhere).await.expect("create");
    let now = domain::now();
    store
        .put_grant(&grant(&viewed.uuid, BOB, Role::Viewer, now))
        .await
        .expect("grant");
    store
        .put_grant(&grant(&edited.uuid, BOB, Role::Editor, now))
        .await
        .expect("grant");
    store
        .put_grant(&grant(&elsewhere.uuid, BOB, Role::Editor, now))
        .await
        .expect("grant");

    let page = list(
        &store,
        &ProjectListQuery {
            sort: ProjectSort::Name,
            order: SortOrder::Asc,
            ..list_query(ORG, BOB, false)
        },
    )
    .await;
    let seen: Vec<(String, Role)> = page
        .items
        .iter()
        .map(|item| (item.project.name.clone(), item.role))
        .collect();
    assert_eq!(
        seen,
        [
            ("Edited".to_owned(), Role::Editor),
            ("Viewed".to_owned(), Role::Viewer)
        ]
    );
    assert_eq!(page.total, 2);

    let alice = list(&store, &list_query(ORG, ALICE, false)).await;
    assert_eq!(alice.total, 3);
    assert!(
        alice.items.iter().all(|item| item.role == Role::Owner),
        "the creator owns all three"
    );
    assert_eq!(
        list(&store, &list_query(ORG, CAROL, false)).await.total,
        0,
        "no grant, nothing listed"
    );
}

async fn admins_list_every_project_of_their_organization_as_owner(store: Arc<dyn Store>) {
    let granted = create(&store, "Granted", None).await;
    create(&store, "Ungranted", None).await;
    store
        .create_project(&new_project(OTHER_ORG, ALICE, "Elsewhere", None))
        .await
        .expect("create");
    store
        .put_grant(&grant(&granted.uuid, CAROL, Role::Viewer, domain::now()))
        .await
        .expect("grant");

    // Carol holds a viewer grant on one project; as an admin she sees both,
    // and owns both.
    let page = list(&store, &list_query(ORG, CAROL, true)).await;
    assert_eq!(page.total, 2);
    let seen: Vec<(String, Role)> = page
        .items
        .iter()
        .map(|item| (item.project.name.clone(), item.role))
        .collect();
    assert_eq!(
        seen,
        [
            ("Ungranted".to_owned(), Role::Owner),
            ("Granted".to_owned(), Role::Owner)
        ]
    );
}

async fn list_counts_each_projects_steps(store: Arc<dyn Store>) {
    let busy = create(&store, "Busy", None).await;
    let idle = create(&store, "Idle", None).await;
    add_steps(&store, &busy, &["one", "two", "three"]).await;
    let page = list(&store, &admin_query()).await;
    let counts: Vec<(String, i64)> = page
        .items
        .iter()
        .map(|item| (item.project.uuid.clone(), item.step_count))
        .collect();
    assert_eq!(counts, [(idle.uuid.clone(), 0), (busy.uuid.clone(), 3)]);
}

async fn update_keeps_omitted_fields_clears_explicit_nulls_and_moves_updated_at(store: Arc<dyn Store>) {
    let original = Project {
        metadata: Some(json!({"owner": "finance"})),
        ..new_project(ORG, ALICE, "Original", Some("first description"))
    };
    store.create_project(&original).await.expect("create");
    tick().await;

    let renamed = store
        .update_project(
            ORG,
            &original.uuid,
            ProjectPatch {
                name: Some("Renamed".to_owned()),
                ..ProjectPatch::default()
            },
        )
        .await
        .expect("update")
        .expect("exists");
    assert!(renamed.updated_at > original.updated_at, "updated_at moves");
    assert_eq!(
        renamed,
        Project {
            name: "Renamed".to_owned(),
            updated_at: renamed.updated_at,
            ..original.clone()
        },
        "only the name and updated_at changed"
    );
    assert_eq!(
        fetch_project(&store, ORG, &original.uuid).await.as_ref(),
        Some(&renamed)
    );
    tick().await;

    let cleared = store
        .update_project(
            ORG,
            &original.uuid,
            ProjectPatch {
                description: Some(None),
                metadata: Some(None),
                ..ProjectPatch::default()
            },
        )
        .await
        .expect("update")
        .expect("exists");
    assert!(cleared.updated_at > renamed.updated_at);
    assert_eq!(
        (cleared.name.as_str(), &cleared.description, &cleared.metadata),
        ("Renamed", &None, &None)
    );

    let connector = IdKind::Connector.generate();
    let archived = store
        .update_project(
            ORG,
            &original.uuid,
            ProjectPatch {
                description: Some(Some("second".to_owned())),
                connector_uuids: Some(vec![connector.clone()]),
                metadata: Some(Some(json!([1, 2]))),
                status: Some(ProjectStatus::Archived),
                ..ProjectPatch::default()
            },
        )
        .await
        .expect("update")
        .expect("exists");
    let stored = fetch_project(&store, ORG, &original.uuid).await.expect("exists");
    assert_eq!(stored, archived);
    assert_eq!(stored.description.as_deref(), Some("second"));
    assert_eq!(stored.connector_uuids, [connector]);
    assert_eq!(stored.metadata, Some(json!([1, 2])));
    assert_eq!(stored.status, ProjectStatus::Archived);
    assert_eq!(
        (stored.created_at, stored.created_by.as_str()),
        (original.created_at, ALICE)
    );
}

async fn update_rewrites_the_search_text(store: Arc<dyn Store>) {
    let project = create(&store, "Before", Some("old words")).await;
    let patch = ProjectPatch {
        name: Some("Après".to_owned()),
        description: Some(Some("NEW WORDS".to_owned())),
        ..ProjectPatch::default()
    };
    store
        .update_project(ORG, &project.uuid, patch)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(searched(&store, "APRÈS").await, ["Après"]);
    assert_eq!(searched(&store, "new words").await, ["Après"]);
    assert!(searched(&store, "before").await.is_empty());
    assert!(searched(&store, "old").await.is_empty());
}

async fn update_of_a_missing_project_is_none(store: Arc<dyn Store>) {
    let patch = ProjectPatch {
        name: Some("Ghost".to_owned()),
        ..ProjectPatch::default()
    };
    assert!(
        store
            .update_project(ORG, &IdKind::Project.generate(), patch)
            .await
            .expect("update")
            .is_none()
    );
    assert_eq!(list(&store, &admin_query()).await.total, 0);
}

async fn delete_project_removes_its_steps_and_project_grants_only(store: Arc<dyn Store>) {
    let doomed = create(&store, "Doomed", None).await;
    let kept = create(&store, "Kept", None).await;
    let doomed_steps = add_steps(&store, &doomed, &["a", "b", "c"]).await;
    add_steps(&store, &kept, &["k"]).await;
    let now = domain::now();
    store
        .put_grant(&grant(&doomed.uuid, BOB, Role::Editor, now))
        .await
        .expect("grant");
    store
        .put_grant(&grant(&kept.uuid, BOB, Role::Viewer, now))
        .await
        .expect("grant");
    // A connector grant that happens to carry the same id is not the
    // project's.
    let connector_grant = Grant {
        resource: ResourceKind::Connector,
        ..grant(&doomed.uuid, CAROL, Role::Owner, now)
    };
    store.put_grant(&connector_grant).await.expect("grant");

    assert!(store.delete_project(ORG, &doomed.uuid).await.expect("delete"));
    assert!(fetch_project(&store, ORG, &doomed.uuid).await.is_none());
    assert!(store.list_steps(&doomed.uuid).await.expect("steps").is_empty());
    assert!(
        fetch_step(&store, &doomed.uuid, &doomed_steps[0].step_id)
            .await
            .is_none()
    );
    assert!(
        grants(&store, ResourceKind::Project, &doomed.uuid)
            .await
            .is_empty()
    );
    assert_eq!(role(&store, ResourceKind::Project, &doomed.uuid, BOB).await, None);
    assert_eq!(
        grants(&store, ResourceKind::Connector, &doomed.uuid).await,
        [connector_grant]
    );

    assert_eq!(step_order(&store, &kept).await, ["k"]);
    assert_eq!(grants(&store, ResourceKind::Project, &kept.uuid).await.len(), 2);
    assert_eq!(uuids(&list(&store, &admin_query()).await), [kept.uuid.as_str()]);
    assert!(
        !store
            .delete_project(ORG, &doomed.uuid)
            .await
            .expect("delete again"),
        "already gone"
    );
}

// ---------------------------------------------------------------- steps

async fn steps_append_at_the_end_by_default(store: Arc<dyn Store>) {
    let project = create(&store, "Steps", None).await;
    let before = domain::now();
    let steps = add_steps(&store, &project, &["first", "second", "third"]).await;
    assert_eq!(steps.iter().map(|step| step.order).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(step_order(&store, &project).await, ["first", "second", "third"]);

    let first = &steps[0];
    assert!(IdKind::Step.matches(&first.step_id));
    assert_eq!(first.project_uuid, project.uuid);
    assert_eq!(first.step_type, StepType::Transform);
    assert_eq!(first.config, json!({"query": "select 'first'"}));
    assert!(first.created_at >= before && first.updated_at == first.created_at);
    let stored = fetch_step(&store, &project.uuid, &first.step_id)
        .await
        .expect("exists");
    assert_eq!(&stored, first, "the returned step is the stored one");

    let with_dependencies = NewStep {
        step_type: StepType::SqlQuery,
        dependencies: vec![first.step_id.clone()],
        config: json!({"connector_uuid": IdKind::Connector.generate(), "query": "select 1"}),
        ..step_named("fourth", None)
    };
    let fourth = store
        .insert_step(&project.uuid, with_dependencies)
        .await
        .expect("insert");
    assert_eq!(
        fetch_step(&store, &project.uuid, &fourth.step_id).await,
        Some(fourth.clone())
    );
    assert_eq!(fourth.order, 4);
    assert!(
        fetch_step(&store, &IdKind::Project.generate(), &fourth.step_id)
            .await
            .is_none()
    );
}

async fn inserting_a_step_at_an_order_shifts_the_later_ones(store: Arc<dyn Store>) {
    let project = create(&store, "Steps", None).await;
    add_steps(&store, &project, &["a", "b", "c"]).await;
    let front = store
        .insert_step(&project.uuid, step_named("front", Some(1)))
        .await
        .expect("insert");
    assert_eq!(front.order, 1);
    assert_eq!(step_order(&store, &project).await, ["front", "a", "b", "c"]);
    let middle = store
        .insert_step(&project.uuid, step_named("middle", Some(3)))
        .await
        .expect("insert");
    assert_eq!(middle.order, 3);
    assert_eq!(
        step_order(&store, &project).await,
        ["front", "a", "middle", "b", "c"]
    );
}

async fn inserting_a_step_past_the_end_appends_and_before_the_start_prepends(store: Arc<dyn Store>) {
    let project = create(&store, "Steps", None).await;
    add_steps(&store, &project, &["a", "b"]).await;
    let last = store
        .insert_step(&project.uuid, step_named("far", Some(99)))
        .await
        .expect("insert");
    assert_eq!(last.order, 3);
    let exact_end = store
        .insert_step(&project.uuid, step_named("end", Some(4)))
        .await
        .expect("insert");
    assert_eq!(exact_end.order, 4);
    let first = store
        .insert_step(&project.uuid, step_named("zero", Some(0)))
        .await
        .expect("insert");
    assert_eq!(first.order, 1);
    assert_eq!(
        step_order(&store, &project).await,
        ["zero", "a", "b", "far", "end"]
    );
}

async fn inserting_a_step_touches_the_project_updated_at(store: Arc<dyn Store>) {
    let project = create(&store, "Touched", None).await;
    tick().await;
    store
        .insert_step(&project.uuid, step_named("a", None))
        .await
        .expect("insert");
    let after = fetch_project(&store, ORG, &project.uuid).await.expect("exists");
    assert!(after.updated_at > project.updated_at);
    assert_eq!(after.created_at, project.created_at);
}

async fn inserting_a_step_into_a_missing_project_is_not_found(store: Arc<dyn Store>) {
    let missing = IdKind::Project.generate();
    match store.insert_step(&missing, step_named("orphan", None)).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("expected not found, got {other:?}"),
    }
    assert!(store.list_steps(&missing).await.expect("steps").is_empty());
}

async fn updating_a_step_order_moves_it_both_ways_shifting_the_steps_between(store: Arc<dyn Store>) {
    let project = create(&store, "Moves", None).await;
    let steps = add_steps(&store, &project, &["a", "b", "c", "d", "e"]).await;
    let move_to = |name: &str, order: i32| {
        let store = Arc::clone(&store);
        let (project_uuid, step_id) = (project.uuid.clone(), step_id(&steps, name).to_owned());
        async move {
            let patch = StepPatch {
                order: Some(order),
                ..StepPatch::default()
            };
            store
                .update_step(&project_uuid, &step_id, patch)
                .await
                .expect("update")
                .expect("exists")
        }
    };

    assert_eq!(move_to("a", 4).await.order, 4, "down");
    assert_eq!(step_order(&store, &project).await, ["b", "c", "d", "a", "e"]);
    assert_eq!(move_to("e", 2).await.order, 2, "up");
    assert_eq!(step_order(&store, &project).await, ["b", "e", "c", "d", "a"]);
    assert_eq!(move_to("b", 99).await.order, 5, "past the end: last");
    assert_eq!(step_order(&store, &project).await, ["e", "c", "d", "a", "b"]);
    assert_eq!(move_to("d", 0).await.order, 1, "before the start: first");
    assert_eq!(step_order(&store, &project).await, ["d", "e", "c", "a", "b"]);
    assert_eq!(move_to("c", 3).await.order, 3, "in place");
    assert_eq!(step_order(&store, &project).await, ["d", "e", "c", "a", "b"]);
}

async fn updating_a_step_changes_name_and_config_and_stamps_updated_at(store: Arc<dyn Store>) {
    let project = create(&store, "Edits", None).await;
    let steps = add_steps(&store, &project, &["a", "b"]).await;
    tick().await;
    let patch = StepPatch {
        name: Some("renamed".to_owned()),
        config: Some(json!({"query": "select 42"})),
        order: None,
    };
    let updated = store
        .update_step(&project.uuid, &steps[0].step_id, patch)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        updated,
        Step {
            name: "renamed".to_owned(),
            config: json!({"query": "select 42"}),
            updated_at: updated.updated_at,
            ..steps[0].clone()
        }
    );
    assert!(updated.updated_at > steps[0].updated_at);
    assert_eq!(
        fetch_step(&store, &project.uuid, &steps[0].step_id).await,
        Some(updated)
    );
    assert_eq!(
        fetch_step(&store, &project.uuid, &steps[1].step_id)
            .await
            .as_ref(),
        Some(&steps[1]),
        "the other step is untouched"
    );
    let project_after = fetch_project(&store, ORG, &project.uuid).await.expect("exists");
    assert!(
        project_after.updated_at > project.updated_at,
        "the project is touched"
    );
}

async fn updating_or_deleting_a_missing_step_finds_nothing(store: Arc<dyn Store>) {
    let project = create(&store, "Sparse", None).await;
    let other = create(&store, "Other", None).await;
    let steps = add_steps(&store, &other, &["theirs"]).await;
    let patch = || StepPatch {
        name: Some("x".to_owned()),
        ..StepPatch::default()
    };
    let missing = IdKind::Step.generate();
    assert!(
        store
            .update_step(&project.uuid, &missing, patch())
            .await
            .expect("update")
            .is_none()
    );
    assert!(!store.delete_step(&project.uuid, &missing).await.expect("delete"));
    // A step of another project is not found through this one.
    assert!(
        store
            .update_step(&project.uuid, &steps[0].step_id, patch())
            .await
            .expect("update")
            .is_none()
    );
    assert!(
        !store
            .delete_step(&project.uuid, &steps[0].step_id)
            .await
            .expect("delete")
    );
    assert_eq!(step_order(&store, &other).await, ["theirs"]);
    let unchanged = fetch_project(&store, ORG, &project.uuid).await.expect("exists");
    assert_eq!(
        unchanged.updated_at, project.updated_at,
        "nothing changed, nothing touched"
    );
}

async fn deleting_a_step_closes_the_gap(store: Arc<dyn Store>) {
    let project = create(&store, "Gaps", None).await;
    let steps = add_steps(&store, &project, &["a", "b", "c", "d"]).await;
    assert!(
        store
            .delete_step(&project.uuid, step_id(&steps, "b"))
            .await
            .expect("delete")
    );
    assert_eq!(step_order(&store, &project).await, ["a", "c", "d"]);
    assert!(
        store
            .delete_step(&project.uuid, step_id(&steps, "d"))
            .await
            .expect("delete")
    );
    assert_eq!(step_order(&store, &project).await, ["a", "c"]);
    assert!(
        !store
            .delete_step(&project.uuid, step_id(&steps, "b"))
            .await
            .expect("delete again")
    );
    let appended = store
        .insert_step(&project.uuid, step_named("e", None))
        .await
        .expect("insert");
    assert_eq!(appended.order, 3, "appends right after the last remaining step");
}

async fn reordering_steps_sets_every_position_from_the_list(store: Arc<dyn Store>) {
    let project = create(&store, "Reorder", None).await;
    let steps = add_steps(&store, &project, &["a", "b", "c", "d"]).await;
    tick().await;
    let order = ["c", "a", "d", "b"];
    let ids: Vec<String> = order
        .iter()
        .map(|name| step_id(&steps, name).to_owned())
        .collect();
    let reordered = store.reorder_steps(&project.uuid, &ids).await.expect("reorder");
    let returned: Vec<(String, i32)> = reordered
        .iter()
        .map(|step| (step.name.clone(), step.order))
        .collect();
    assert_eq!(
        returned,
        [
            ("c".to_owned(), 1),
            ("a".to_owned(), 2),
            ("d".to_owned(), 3),
            ("b".to_owned(), 4)
        ]
    );
    assert_eq!(step_order(&store, &project).await, order);
    assert_eq!(store.list_steps(&project.uuid).await.expect("steps"), reordered);
    let moved = reordered.iter().find(|step| step.name == "a").expect("a");
    assert!(moved.updated_at > steps[0].updated_at, "a moved step is stamped");
}

async fn concurrent_step_inserts_keep_positions_contiguous(store: Arc<dyn Store>) {
    let project = create(&store, "Busy", None).await;
    let mut tasks = Vec::new();
    for index in 0..8 {
        let store = Arc::clone(&store);
        let project_uuid = project.uuid.clone();
        tasks.push(tokio::spawn(async move {
            let order = (index % 2 == 0).then_some(1);
            store
                .insert_step(&project_uuid, step_named(&format!("s{index}"), order))
                .await
                .expect("insert")
        }));
    }
    for task in tasks {
        task.await.expect("insert task");
    }
    let names = step_order(&store, &project).await;
    assert_eq!(
        names.iter().collect::<HashSet<_>>().len(),
        8,
        "every insert landed once"
    );
}

// ---------------------------------------------------------------- grants

async fn grants_are_put_replaced_listed_oldest_first_and_deleted(store: Arc<dyn Store>) {
    let project = create(&store, "Shared", None).await;
    let owner = grant(&project.uuid, ALICE, Role::Owner, project.created_at);
    let later = |micros: i64| project.created_at + chrono::Duration::microseconds(micros);
    let bob = grant(&project.uuid, BOB, Role::Viewer, later(10));
    let carol = grant(&project.uuid, CAROL, Role::Editor, later(20));
    store.put_grant(&bob).await.expect("grant bob");
    store.put_grant(&carol).await.expect("grant carol");
    assert_eq!(
        role(&store, ResourceKind::Project, &project.uuid, BOB).await,
        Some(Role::Viewer)
    );
    assert_eq!(
        grants(&store, ResourceKind::Project, &project.uuid).await,
        [owner.clone(), bob.clone(), carol.clone()]
    );

    let promoted = Grant {
        role: Role::Editor,
        granted_by: CAROL.to_owned(),
        granted_at: later(30),
        ..bob.clone()
    };
    store.put_grant(&promoted).await.expect("replace bob");
    assert_eq!(
        role(&store, ResourceKind::Project, &project.uuid, BOB).await,
        Some(Role::Editor)
    );
    assert_eq!(
        grants(&store, ResourceKind::Project, &project.uuid).await,
        [owner.clone(), carol.clone(), promoted],
        "replaced, not added"
    );

    assert!(
        store
            .delete_grant(ResourceKind::Project, &project.uuid, BOB)
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_grant(ResourceKind::Project, &project.uuid, BOB)
            .await
            .expect("delete again")
    );
    assert_eq!(
        role(&store, ResourceKind::Project, &project.uuid, BOB).await,
        None
    );
    assert_eq!(
        grants(&store, ResourceKind::Project, &project.uuid).await,
        [owner, carol]
    );
}

async fn grants_of_different_resource_kinds_are_separate(store: Arc<dyn Store>) {
    let uuid = IdKind::Connector.generate();
    let now = domain::now();
    let on_connector = Grant {
        resource: ResourceKind::Connector,
        ..grant(&uuid, BOB, Role::Editor, now)
    };
    store.put_grant(&on_connector).await.expect("grant");
    assert_eq!(
        role(&store, ResourceKind::Connector, &uuid, BOB).await,
        Some(Role::Editor)
    );
    assert_eq!(role(&store, ResourceKind::Project, &uuid, BOB).await, None);
    assert!(grants(&store, ResourceKind::Project, &uuid).await.is_empty());
    assert!(
        !store
            .delete_grant(ResourceKind::Project, &uuid, BOB)
            .await
            .expect("delete")
    );
    assert_eq!(
        grants(&store, ResourceKind::Connector, &uuid).await,
        [on_connector]
    );
}

// ---------------------------------------------------------------- connectors

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not a JSON object: {other}"),
    }
}

/// Sealed bytes that are not valid UTF-8 and include NUL, so that a backend
/// storing them as text would fail the round trip.
fn sealed(key_id: &str, seed: u8) -> Sealed {
    Sealed {
        key_id: key_id.to_owned(),
        nonce: (0..12).map(|index: u8| index.wrapping_mul(31) ^ seed).collect(),
        ciphertext: [0x00, 0xFF, 0xFE, 0x80, seed, 0x00, 0xC3, 0x28]
            .into_iter()
            .chain((0..=255).rev())
            .collect(),
    }
}

/// A fresh active connector, created now, never tested, sealed under `key_1`.
fn new_connector(org_id: &str, created_by: &str, connector_type: &str, name: &str) -> Connector {
    let now = domain::now();
    Connector {
        uuid: IdKind::Connector.generate(),
        org_id: org_id.to_owned(),
        connector_type: connector_type.to_owned(),
        display_name: name.to_owned(),
        config: object(json!({"host": "db.internal", "port": 5432, "database": "app"})),
        secrets: sealed("key_1", 1),
        config_version: 1,
        status: ConnectorStatus::Active,
        auth_type: "credentials".to_owned(),
        created_by: created_by.to_owned(),
        created_at: now,
        updated_at: now,
        last_tested_at: None,
        last_test_status: None,
        disabled_at: None,
        disabled_by: None,
        disabled_reason: None,
    }
}

async fn create_connector(store: &Arc<dyn Store>, connector: Connector) -> Connector {
    store
        .create_connector(&connector)
        .await
        .expect("create connector");
    connector
}

/// A connector of `ORG` by Alice, created at `at(micros)`.
async fn connector_at(store: &Arc<dyn Store>, connector_type: &str, name: &str, micros: i64) -> Connector {
    create_connector(
        store,
        Connector {
            created_at: at(micros),
            updated_at: at(micros),
            ..new_connector(ORG, ALICE, connector_type, name)
        },
    )
    .await
}

async fn fetch_connector(store: &Arc<dyn Store>, org_id: &str, uuid: &str) -> Option<Connector> {
    store.get_connector(org_id, uuid).await.expect("get connector")
}

fn connector_query(org_id: &str, user_id: &str, is_admin: bool) -> ConnectorListQuery {
    ConnectorListQuery {
        org_id: org_id.to_owned(),
        user_id: user_id.to_owned(),
        is_admin,
        connector_type: None,
        status: None,
    }
}

/// The listed connectors' names and the caller's roles, in list order.
async fn listed_connectors(store: &Arc<dyn Store>, query: &ConnectorListQuery) -> Vec<(String, Role)> {
    store
        .list_connectors(query)
        .await
        .expect("list connectors")
        .into_iter()
        .map(|(connector, role)| (connector.display_name, role))
        .collect()
}

fn connector_grant(uuid: &str, user_id: &str, role: Role) -> Grant {
    Grant {
        resource: ResourceKind::Connector,
        ..grant(uuid, user_id, role, domain::now())
    }
}

fn test_record(connector_uuid: &str, micros: i64, failure: Option<(&str, &str)>) -> TestRecord {
    TestRecord {
        connector_uuid: connector_uuid.to_owned(),
        tested_at: at(micros),
        success: failure.is_none(),
        latency_ms: 10 + micros % 1000,
        error_type: failure.map(|(error_type, _)| error_type.to_owned()),
        error_message: failure.map(|(_, message)| message.to_owned()),
    }
}

async fn history_since(store: &Arc<dyn Store>, uuid: &str, micros: i64) -> Vec<TestRecord> {
    store.test_history(uuid, at(micros)).await.expect("test history")
}

fn usage(project: &Project, step_count: i64) -> ConnectorUsage {
    ConnectorUsage {
        project_uuid: project.uuid.clone(),
        project_name: project.name.clone(),
        step_count,
    }
}

async fn connector_created_reads_back_with_every_field_equal(store: Arc<dyn Store>) {
    let now = domain::now();
    let sparse = Connector {
        config: Map::new(),
        ..new_connector(ORG, ALICE, "postgres", "Sparse")
    };
    let full = Connector {
        uuid: IdKind::Connector.generate(),
        org_id: ORG.to_owned(),
        connector_type: "mongodb".to_owned(),
        display_name: "Données — ÜBER".to_owned(),
        config: object(json!({
            "connection_string": "mongodb://app:****@db.internal:27017/app",
            "options": {"tls": true, "hosts": ["a", "ü"], "nested": {"depth": 2}},
            "timeout": 1.5,
            "nothing": null,
        })),
        secrets: Sealed {
            key_id: "key_2024_rotated".to_owned(),
            nonce: vec![0; 12],
            ciphertext: vec![0xFF; 48],
        },
        config_version: 7,
        status: ConnectorStatus::Disabled,
        auth_type: "oauth".to_owned(),
        created_by: BOB.to_owned(),
        created_at: now - chrono::Duration::days(3),
        updated_at: now - chrono::Duration::microseconds(1_234_567),
        last_tested_at: Some(now - chrono::Duration::hours(1)),
        last_test_status: Some(TestStatus::Failed),
        disabled_at: Some(now - chrono::Duration::minutes(30)),
        disabled_by: Some(CAROL.to_owned()),
        disabled_reason: Some("credentials rotated".to_owned()),
    };
    let errored = Connector {
        status: ConnectorStatus::Error,
        last_tested_at: Some(now),
        last_test_status: Some(TestStatus::Success),
        secrets: sealed("key_1", 0xAB),
        ..new_connector(ORG, ALICE, "postgres", "Errored")
    };
    for connector in [&sparse, &full, &errored] {
        store.create_connector(connector).await.expect("create");
        let stored = fetch_connector(&store, ORG, &connector.uuid)
            .await
            .expect("exists");
        assert_eq!(&stored, connector);
        assert_eq!(
            stored.secrets.ciphertext, connector.secrets.ciphertext,
            "sealed bytes survive byte for byte"
        );
    }
    let listed = store
        .list_connectors(&connector_query(ORG, "user_admin", true))
        .await
        .expect("list");
    let listed: Vec<&Connector> = listed.iter().map(|(connector, _)| connector).collect();
    let mut oldest_first = vec![&sparse, &full, &errored];
    oldest_first.sort_by(|a, b| (a.created_at, &a.uuid).cmp(&(b.created_at, &b.uuid)));
    assert_eq!(
        listed, oldest_first,
        "the list carries the same fields, oldest first"
    );
    assert!(
        fetch_connector(&store, ORG, &IdKind::Connector.generate())
            .await
            .is_none()
    );
}

async fn creating_a_connector_grants_its_creator_owner(store: Arc<dyn Store>) {
    let connector = create_connector(&store, new_connector(ORG, BOB, "postgres", "Owned")).await;
    assert_eq!(
        role(&store, ResourceKind::Connector, &connector.uuid, BOB).await,
        Some(Role::Owner)
    );
    assert_eq!(
        grants(&store, ResourceKind::Connector, &connector.uuid).await,
        [Grant {
            resource: ResourceKind::Connector,
            resource_uuid: connector.uuid.clone(),
            user_id: BOB.to_owned(),
            role: Role::Owner,
            granted_by: BOB.to_owned(),
            granted_at: connector.created_at,
        }]
    );
    assert_eq!(
        role(&store, ResourceKind::Project, &connector.uuid, BOB).await,
        None,
        "the grant is on the connector, not a project"
    );
    assert_eq!(
        role(&store, ResourceKind::Connector, &connector.uuid, ALICE).await,
        None
    );
}

async fn creating_a_connector_twice_is_a_conflict(store: Arc<dyn Store>) {
    let connector = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Once")).await;
    let again = Connector {
        display_name: "Twice".to_owned(),
        created_by: BOB.to_owned(),
        ..connector.clone()
    };
    match store.create_connector(&again).await {
        Err(Error::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        fetch_connector(&store, ORG, &connector.uuid).await,
        Some(connector.clone()),
        "the failed create changed nothing"
    );
    assert_eq!(
        role(&store, ResourceKind::Connector, &connector.uuid, BOB).await,
        None,
        "the failed create granted nothing"
    );
}

async fn connectors_of_another_organization_are_invisible(store: Arc<dyn Store>) {
    let ours = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Ours")).await;
    let theirs = create_connector(&store, new_connector(OTHER_ORG, BOB, "postgres", "Theirs")).await;

    assert!(fetch_connector(&store, ORG, &theirs.uuid).await.is_none());
    assert_eq!(
        fetch_connector(&store, OTHER_ORG, &theirs.uuid).await,
        Some(theirs.clone())
    );
    assert_eq!(
        listed_connectors(&store, &connector_query(ORG, "user_admin", true)).await,
        [("Ours".to_owned(), Role::Owner)]
    );
    // Bob's owner grant on the other organization's connector does not make
    // it visible in this one.
    assert!(
        listed_connectors(&store, &connector_query(ORG, BOB, false))
            .await
            .is_empty()
    );

    let hijacked = Connector {
        org_id: ORG.to_owned(),
        display_name: "Hijacked".to_owned(),
        config_version: theirs.config_version + 1,
        ..theirs.clone()
    };
    assert!(
        !store
            .update_connector(&hijacked, theirs.config_version)
            .await
            .expect("update")
    );
    assert!(!store.delete_connector(ORG, &theirs.uuid).await.expect("delete"));
    assert_eq!(
        fetch_connector(&store, OTHER_ORG, &theirs.uuid).await,
        Some(theirs),
        "still there, unchanged"
    );
    assert_eq!(fetch_connector(&store, ORG, &ours.uuid).await, Some(ours));
}

async fn members_list_only_granted_connectors_with_their_grant_role(store: Arc<dyn Store>) {
    let viewed = connector_at(&store, "postgres", "Viewed", 1).await;
    let edited = connector_at(&store, "postgres", "Edited", 2).await;
    let private = connector_at(&store, "postgres", "Private", 3).await;
    let elsewhere = create_connector(&store, new_connector(OTHER_ORG, CAROL, "postgres", "Elsewhere")).await;
    for (uuid, role) in [
        (&viewed.uuid, Role::Viewer),
        (&edited.uuid, Role::Editor),
        (&elsewhere.uuid, Role::Editor),
    ] {
        store
            .put_grant(&connector_grant(uuid, BOB, role))
            .await
            .expect("grant");
    }
    // A project grant that happens to name the private connector's id does
    // not make the connector visible.
    store
        .put_grant(&grant(&private.uuid, BOB, Role::Owner, domain::now()))
        .await
        .expect("project grant");

    assert_eq!(
        listed_connectors(&store, &connector_query(ORG, BOB, false)).await,
        [
            ("Viewed".to_owned(), Role::Viewer),
            ("Edited".to_owned(), Role::Editor)
        ],
        "granted ones only, oldest first"
    );
    assert_eq!(
        listed_connectors(&store, &connector_query(ORG, ALICE, false)).await,
        [
            ("Viewed".to_owned(), Role::Owner),
            ("Edited".to_owned(), Role::Owner),
            ("Private".to_owned(), Role::Owner)
        ],
        "the creator owns all three"
    );
    assert!(
        listed_connectors(&store, &connector_query(ORG, CAROL, false))
            .await
            .is_empty(),
        "no grant in this organization, nothing listed"
    );
}

async fn admins_list_every_connector_of_their_organization_as_owner_oldest_first(store: Arc<dyn Store>) {
    // Equal creation times break ties by uuid.
    let mut created = [
        connector_at(&store, "postgres", "Late", 2_000_000).await,
        connector_at(&store, "postgres", "Early", 1_000_000).await,
        connector_at(&store, "mongodb", "Tied", 1_500_000).await,
        connector_at(&store, "mongodb", "Also tied", 1_500_000).await,
    ];
    create_connector(&store, new_connector(OTHER_ORG, CAROL, "postgres", "Elsewhere")).await;
    store
        .put_grant(&connector_grant(&created[0].uuid, CAROL, Role::Viewer))
        .await
        .expect("grant");

    created.sort_by(|a, b| (a.created_at, &a.uuid).cmp(&(b.created_at, &b.uuid)));
    let expected: Vec<(String, Role)> = created
        .iter()
        .map(|connector| (connector.display_name.clone(), Role::Owner))
        .collect();
    // Carol holds a viewer grant on one connector; as an admin she sees all
    // four, and owns them all.
    assert_eq!(
        listed_connectors(&store, &connector_query(ORG, CAROL, true)).await,
        expected
    );
}

async fn connector_list_filters_by_type_and_status_for_admins_and_members(store: Arc<dyn Store>) {
    let mut created = Vec::new();
    for (micros, connector_type, name, status) in [
        (1, "postgres", "pg active", ConnectorStatus::Active),
        (2, "postgres", "pg disabled", ConnectorStatus::Disabled),
        (3, "mongodb", "mongo error", ConnectorStatus::Error),
        (4, "mongodb", "mongo active", ConnectorStatus::Active),
    ] {
        let connector = Connector {
            status,
            created_at: at(micros),
            ..new_connector(ORG, ALICE, connector_type, name)
        };
        created.push(create_connector(&store, connector).await);
    }
    let (pg_disabled, mongo_active) = (&created[1], &created[3]);
    create_connector(&store, new_connector(OTHER_ORG, ALICE, "postgres", "elsewhere")).await;

    let admin = |connector_type: Option<&str>, status: Option<ConnectorStatus>| ConnectorListQuery {
        connector_type: connector_type.map(str::to_owned),
        status,
        ..connector_query(ORG, "user_admin", true)
    };
    let names = |listed: Vec<(String, Role)>| listed.into_iter().map(|(name, _)| name).collect::<Vec<_>>();
    assert_eq!(
        names(listed_connectors(&store, &admin(Some("postgres"), None)).await),
        ["pg active", "pg disabled"]
    );
    assert_eq!(
        names(listed_connectors(&store, &admin(None, Some(ConnectorStatus::Active))).await),
        ["pg active", "mongo active"]
    );
    assert_eq!(
        names(listed_connectors(&store, &admin(None, Some(ConnectorStatus::Error))).await),
        ["mongo error"]
    );
    assert_eq!(
        names(listed_connectors(&store, &admin(Some("postgres"), Some(ConnectorStatus::Disabled))).await),
        ["pg disabled"]
    );
    assert!(
        listed_connectors(&store, &admin(Some("mongodb"), Some(ConnectorStatus::Disabled)))
            .await
            .is_empty()
    );
    assert!(
        listed_connectors(&store, &admin(Some("Postgres"), None))
            .await
            .is_empty(),
        "the type matches exactly"
    );

    store
        .put_grant(&connector_grant(&pg_disabled.uuid, BOB, Role::Viewer))
        .await
        .expect("grant");
    store
        .put_grant(&connector_grant(&mongo_active.uuid, BOB, Role::Editor))
        .await
        .expect("grant");
    let member = |connector_type: Option<&str>, status: Option<ConnectorStatus>| ConnectorListQuery {
        connector_type: connector_type.map(str::to_owned),
        status,
        ..connector_query(ORG, BOB, false)
    };
    assert_eq!(
        listed_connectors(&store, &member(Some("postgres"), None)).await,
        [("pg disabled".to_owned(), Role::Viewer)]
    );
    assert_eq!(
        listed_connectors(&store, &member(None, Some(ConnectorStatus::Active))).await,
        [("mongo active".to_owned(), Role::Editor)]
    );
    assert!(
        listed_connectors(&store, &member(Some("mongodb"), Some(ConnectorStatus::Error)))
            .await
            .is_empty(),
        "members filter within their grants"
    );
}

async fn updating_a_connector_with_the_expected_version_writes_every_mutable_field(store: Arc<dyn Store>) {
    let original = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Original")).await;
    tick().await;
    let now = domain::now();
    let disabled = Connector {
        display_name: "Renamed — ÜBER".to_owned(),
        config: object(json!({"host": "replica.internal", "port": 6432, "ssl": {"mode": "verify-full"}})),
        secrets: sealed("key_2", 9),
        config_version: 2,
        status: ConnectorStatus::Disabled,
        updated_at: now,
        last_tested_at: Some(now - chrono::Duration::seconds(5)),
        last_test_status: Some(TestStatus::Failed),
        disabled_at: Some(now),
        disabled_by: Some(BOB.to_owned()),
        disabled_reason: Some("too many failures".to_owned()),
        ..original.clone()
    };
    assert!(
        store
            .update_connector(&disabled, original.config_version)
            .await
            .expect("update")
    );
    assert_eq!(
        fetch_connector(&store, ORG, &original.uuid).await,
        Some(disabled.clone())
    );

    // Every field is written, including back to NULL.
    tick().await;
    let enabled = Connector {
        config_version: 3,
        status: ConnectorStatus::Active,
        updated_at: domain::now(),
        last_tested_at: None,
        last_test_status: None,
        disabled_at: None,
        disabled_by: None,
        disabled_reason: None,
        ..disabled.clone()
    };
    assert!(
        store
            .update_connector(&enabled, disabled.config_version)
            .await
            .expect("update")
    );
    assert_eq!(fetch_connector(&store, ORG, &original.uuid).await, Some(enabled));
}

async fn updating_a_connector_with_a_stale_version_returns_false_and_changes_nothing(store: Arc<dyn Store>) {
    let original = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Original")).await;
    let first = Connector {
        display_name: "First writer".to_owned(),
        config_version: 2,
        updated_at: domain::now(),
        ..original.clone()
    };
    assert!(store.update_connector(&first, 1).await.expect("update"));

    // A second writer that read version 1 loses.
    let second = Connector {
        display_name: "Second writer".to_owned(),
        secrets: sealed("key_2", 7),
        config_version: 2,
        status: ConnectorStatus::Disabled,
        ..original.clone()
    };
    assert!(!store.update_connector(&second, 1).await.expect("stale update"));
    assert_eq!(
        fetch_connector(&store, ORG, &original.uuid).await,
        Some(first.clone()),
        "the stale write changed nothing"
    );
    assert!(
        !store.update_connector(&second, 3).await.expect("future version"),
        "a version ahead of the stored one is stale too"
    );

    let missing = Connector {
        uuid: IdKind::Connector.generate(),
        ..original.clone()
    };
    assert!(!store.update_connector(&missing, 1).await.expect("missing"));
    assert!(fetch_connector(&store, ORG, &missing.uuid).await.is_none());
    assert_eq!(fetch_connector(&store, ORG, &original.uuid).await, Some(first));
}

async fn deleting_a_connector_removes_its_grants_and_test_history_only(store: Arc<dyn Store>) {
    let doomed = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Doomed")).await;
    let kept = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Kept")).await;
    for connector in [&doomed, &kept] {
        store
            .put_grant(&connector_grant(&connector.uuid, BOB, Role::Editor))
            .await
            .expect("grant");
        for micros in [1, 2] {
            store
                .record_test(&test_record(&connector.uuid, micros, None))
                .await
                .expect("record");
        }
    }
    // A project grant naming the same id is not the connector's.
    let project_grant = grant(&doomed.uuid, CAROL, Role::Viewer, domain::now());
    store.put_grant(&project_grant).await.expect("project grant");

    assert!(store.delete_connector(ORG, &doomed.uuid).await.expect("delete"));
    assert!(fetch_connector(&store, ORG, &doomed.uuid).await.is_none());
    assert!(
        grants(&store, ResourceKind::Connector, &doomed.uuid)
            .await
            .is_empty()
    );
    assert!(history_since(&store, &doomed.uuid, -1_000_000).await.is_empty());
    assert_eq!(
        grants(&store, ResourceKind::Project, &doomed.uuid).await,
        [project_grant]
    );
    assert!(
        listed_connectors(&store, &connector_query(ORG, BOB, false))
            .await
            .iter()
            .all(|(name, _)| name == "Kept")
    );

    assert_eq!(
        fetch_connector(&store, ORG, &kept.uuid).await.map(|c| c.uuid),
        Some(kept.uuid.clone())
    );
    assert_eq!(grants(&store, ResourceKind::Connector, &kept.uuid).await.len(), 2);
    assert_eq!(history_since(&store, &kept.uuid, -1_000_000).await.len(), 2);
    assert!(
        !store
            .delete_connector(ORG, &doomed.uuid)
            .await
            .expect("delete again")
    );
}

async fn connector_usage_counts_naming_steps_per_project_by_name_within_the_organization(
    store: Arc<dyn Store>,
) {
    let connector = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Used")).await;
    let other = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Other")).await;
    let naming = |uuid: &str| NewStep {
        step_type: StepType::SqlQuery,
        config: json!({"connector_uuid": uuid, "query": "select 1"}),
        ..step_named("uses", None)
    };
    let insert = |project: &Project, step: NewStep| {
        let (store, project_uuid) = (Arc::clone(&store), project.uuid.clone());
        async move {
            store.insert_step(&project_uuid, step).await.expect("insert step");
        }
    };

    // "Beta" sorts before "alpha" byte by byte (a locale would say otherwise).
    let beta = create(&store, "Beta", None).await;
    insert(&beta, naming(&connector.uuid)).await;
    insert(&beta, naming(&other.uuid)).await;
    insert(&beta, step_named("no connector", None)).await;
    insert(&beta, naming(&connector.uuid)).await;
    let archived = Project {
        status: ProjectStatus::Archived,
        ..new_project(ORG, BOB, "alpha", None)
    };
    store.create_project(&archived).await.expect("create");
    insert(&archived, naming(&connector.uuid)).await;
    let unrelated = create(&store, "Gamma", None).await;
    insert(&unrelated, naming(&other.uuid)).await;
    insert(
        &unrelated,
        NewStep {
            config: json!({"source": {"connector_uuid": connector.uuid}}),
            ..step_named("nested", None)
        },
    )
    .await;
    let elsewhere = new_project(OTHER_ORG, ALICE, "Elsewhere", None);
    store.create_project(&elsewhere).await.expect("create");
    insert(&elsewhere, naming(&connector.uuid)).await;

    assert_eq!(
        store.connector_usage(ORG, &connector.uuid).await.expect("usage"),
        [usage(&beta, 2), usage(&archived, 1)]
    );
    assert_eq!(
        store.connector_usage(ORG, &other.uuid).await.expect("usage"),
        [usage(&beta, 1), usage(&unrelated, 1)]
    );
    assert_eq!(
        store
            .connector_usage(OTHER_ORG, &connector.uuid)
            .await
            .expect("usage"),
        [usage(&elsewhere, 1)],
        "each organization sees its own projects"
    );
    assert!(
        store
            .connector_usage(ORG, &IdKind::Connector.generate())
            .await
            .expect("usage")
            .is_empty()
    );
}

async fn recording_a_test_sets_last_tested_fields_without_touching_version_or_updated_at(
    store: Arc<dyn Store>,
) {
    let connector = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Tested")).await;
    let failed = TestRecord {
        tested_at: domain::now(),
        ..test_record(
            &connector.uuid,
            0,
            Some(("timeout", "the server did not answer in 10s")),
        )
    };
    store.record_test(&failed).await.expect("record");
    assert_eq!(
        fetch_connector(&store, ORG, &connector.uuid).await,
        Some(Connector {
            last_tested_at: Some(failed.tested_at),
            last_test_status: Some(TestStatus::Failed),
            ..connector.clone()
        }),
        "only the last-test fields moved"
    );

    tick().await;
    let succeeded = TestRecord {
        tested_at: domain::now(),
        ..test_record(&connector.uuid, 0, None)
    };
    store.record_test(&succeeded).await.expect("record");
    assert_eq!(
        fetch_connector(&store, ORG, &connector.uuid).await,
        Some(Connector {
            last_tested_at: Some(succeeded.tested_at),
            last_test_status: Some(TestStatus::Success),
            ..connector.clone()
        })
    );
    assert_eq!(
        history_since(&store, &connector.uuid, -1_000_000).await,
        [failed, succeeded]
    );

    // A test of a connector that does not exist (yet) is still recorded.
    let missing = IdKind::Connector.generate();
    let orphan = test_record(&missing, 5, Some(("dns_error", "no such host")));
    store
        .record_test(&orphan)
        .await
        .expect("record without a connector");
    assert!(fetch_connector(&store, ORG, &missing).await.is_none());
    assert_eq!(history_since(&store, &missing, 0).await, [orphan]);
}

async fn test_history_is_returned_oldest_first_from_since_inclusive(store: Arc<dyn Store>) {
    let connector = create_connector(&store, new_connector(ORG, ALICE, "postgres", "History")).await;
    let uuid = connector.uuid.as_str();
    // Recorded out of order, with 0, 3 and 6 fractional digits.
    let records = [
        test_record(uuid, 30_000_000, None),
        test_record(
            uuid,
            10_000_000,
            Some(("authentication_failed", "password authentication failed")),
        ),
        test_record(uuid, 20_123_456, None),
        test_record(
            uuid,
            40_500_000,
            Some(("connection_refused", "connection refused")),
        ),
    ];
    for record in &records {
        store.record_test(record).await.expect("record");
    }
    let neighbour = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Neighbour")).await;
    store
        .record_test(&test_record(&neighbour.uuid, 25_000_000, None))
        .await
        .expect("record");

    let mut oldest_first = records.to_vec();
    oldest_first.sort_by_key(|record| record.tested_at);
    assert_eq!(history_since(&store, uuid, 0).await, oldest_first);
    assert_eq!(
        history_since(&store, uuid, 20_123_456).await,
        oldest_first[1..],
        "since is inclusive"
    );
    assert_eq!(history_since(&store, uuid, 20_123_457).await, oldest_first[2..]);
    assert!(history_since(&store, uuid, 40_500_001).await.is_empty());
}

async fn connectors_sealed_with_other_key_finds_only_other_key_rows_by_uuid_up_to_limit(
    store: Arc<dyn Store>,
) {
    let mut old = Vec::new();
    for (org_id, name) in [(ORG, "old a"), (OTHER_ORG, "old b"), (ORG, "old c")] {
        let connector = Connector {
            secrets: sealed("key_old", 3),
            ..new_connector(org_id, ALICE, "postgres", name)
        };
        old.push(create_connector(&store, connector).await);
    }
    let mut current = Vec::new();
    for name in ["current a", "current b"] {
        let connector = Connector {
            secrets: sealed("key_new", 4),
            ..new_connector(ORG, ALICE, "postgres", name)
        };
        current.push(create_connector(&store, connector).await);
    }
    old.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    current.sort_by(|a, b| a.uuid.cmp(&b.uuid));

    let sealed_with_other = |key_id: &'static str, limit: i64| {
        let store = Arc::clone(&store);
        async move {
            store
                .connectors_sealed_with_other_key(key_id, limit)
                .await
                .expect("sealed with other key")
        }
    };
    assert_eq!(
        sealed_with_other("key_new", 10).await,
        old,
        "every organization's, whole rows, by uuid"
    );
    assert_eq!(sealed_with_other("key_new", 2).await, old[..2]);
    assert_eq!(sealed_with_other("key_old", 10).await, current);
    assert_eq!(sealed_with_other("key_unknown", 10).await.len(), 5);
    assert!(sealed_with_other("key_new", 0).await.is_empty());
}

async fn replacing_secrets_swaps_once_and_a_stale_old_value_is_refused(store: Arc<dyn Store>) {
    let connector = create_connector(&store, new_connector(ORG, ALICE, "postgres", "Rotated")).await;
    let old = connector.secrets.clone();
    let new = sealed("key_2", 2);

    assert!(
        store
            .replace_secrets(&connector.uuid, &old, &new)
            .await
            .expect("replace")
    );
    assert_eq!(
        fetch_connector(&store, ORG, &connector.uuid).await,
        Some(Connector {
            secrets: new.clone(),
            ..connector.clone()
        }),
        "only the sealed secrets changed (config_version and updated_at stay)"
    );

    // A second rotation that read the old secrets loses.
    let newer = sealed("key_3", 3);
    assert!(
        !store
            .replace_secrets(&connector.uuid, &old, &newer)
            .await
            .expect("stale replace")
    );
    // Every part of `old` must match, not just the key id.
    for almost in [
        Sealed {
            nonce: old.nonce.clone(),
            ..new.clone()
        },
        Sealed {
            ciphertext: old.ciphertext.clone(),
            ..new.clone()
        },
        Sealed {
            key_id: "key_1".to_owned(),
            ..new.clone()
        },
    ] {
        assert!(
            !store
                .replace_secrets(&connector.uuid, &almost, &newer)
                .await
                .expect("partial match")
        );
    }
    assert_eq!(
        fetch_connector(&store, ORG, &connector.uuid)
            .await
            .map(|stored| stored.secrets),
        Some(new.clone())
    );
    assert!(
        !store
            .replace_secrets(&IdKind::Connector.generate(), &new, &newer)
            .await
            .expect("missing connector")
    );
}

// ---------------------------------------------------------------- connecting

#[tokio::test]
async fn connecting_to_an_unreachable_postgres_is_unavailable_quickly_without_the_password() {
    let started = Instant::now();
    let result = store::connect("postgres://ferry:hunter2-secret@127.0.0.1:1/ferry").await;
    let elapsed = started.elapsed();
    match result {
        Err(Error::Unavailable(message)) => {
            assert!(!message.contains("hunter2-secret"), "{message}");
            assert!(
                message.contains("127.0.0.1:1"),
                "names the redacted address: {message}"
            );
        }
        Err(other) => panic!("expected unavailable, got {other:?}"),
        Ok(_) => panic!("connected to port 1"),
    }
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[tokio::test]
async fn connecting_to_sqlite_creates_the_missing_file_and_directory() {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let path = dir.path().join("nested/data/ferry.db");
    let store = store::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    assert_eq!(store.backend(), "sqlite");
    store.migrate().await.expect("migrate");
    store.ping().await.expect("ping");
    assert!(path.is_file());
}

#[tokio::test]
async fn connecting_with_an_unknown_scheme_is_a_validation_error() {
    match store::connect("mysql://root@127.0.0.1/ferry").await {
        Err(Error::Validation { field, .. }) => assert_eq!(field.as_deref(), Some("database_url")),
        Err(other) => panic!("expected a validation error, got {other:?}"),
        Ok(_) => panic!("connected with an unknown scheme"),
    }
}
