//! The schedules part of the store conformance suite: a schedule reads back
//! whole and is removed by `None`, scoped to its organization; due
//! schedules are listed earliest first without archived projects; a tick is
//! claimed by exactly one of many concurrent claimers. Instantiated for both
//! backends by its own `conformance!` (declared in the parent module).

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ferry_shared::domain::{NewProject, OrgRole, Project, ProjectPatch, ProjectStatus, Schedule};
use ferry_shared::store::{ProjectSchedule, Store};
use serde_json::{Map, json};

use super::{ALICE, ORG, OTHER_ORG, with_postgres, with_sqlite};

conformance!(
    a_project_schedule_reads_back_whole_and_none_removes_it,
    schedules_are_scoped_to_their_organization,
    due_schedules_are_listed_earliest_first_without_archived_or_future_ones,
    of_many_concurrent_claims_of_one_tick_exactly_one_wins,
);

fn at(seconds: i64, micros: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
        .single()
        .expect("valid time")
        + Duration::seconds(seconds)
        + Duration::microseconds(micros)
}

async fn project(store: &Arc<dyn Store>, org_id: &str, name: &str) -> Project {
    let project = NewProject {
        name: name.to_owned(),
        description: None,
        connector_uuids: vec![],
        metadata: None,
    }
    .into_project(org_id, ALICE);
    store.create_project(&project).await.expect("create project");
    project
}

fn schedule_of(project: &Project, next_run_at: Option<DateTime<Utc>>) -> ProjectSchedule {
    let mut parameters = Map::new();
    parameters.insert("start_date".into(), json!("2024-10-01"));
    ProjectSchedule {
        project_uuid: project.uuid.clone(),
        org_id: project.org_id.clone(),
        schedule: Schedule {
            cron: "0 6 * * 1-5".into(),
            timezone: "Europe/Berlin".into(),
            parameters,
            enabled: true,
        },
        set_by: ALICE.into(),
        set_role: OrgRole::Admin,
        next_run_at,
    }
}

async fn a_project_schedule_reads_back_whole_and_none_removes_it(store: Arc<dyn Store>) {
    let project = project(&store, ORG, "nightly").await;
    assert_eq!(
        store
            .project_schedule(ORG, &project.uuid)
            .await
            .expect("succeeds"),
        None
    );
    let schedule = schedule_of(&project, Some(at(60, 123_456)));
    assert!(
        store
            .set_project_schedule(ORG, &project.uuid, Some(&schedule))
            .await
            .expect("succeeds")
    );
    assert_eq!(
        store
            .project_schedule(ORG, &project.uuid)
            .await
            .expect("succeeds"),
        Some(schedule.clone())
    );
    let listed = store
        .project_schedules(ORG, &[project.uuid.clone(), "proj_missing".into()])
        .await
        .expect("succeeds");
    assert_eq!(listed, vec![schedule]);
    // The project itself is unchanged.
    assert_eq!(
        store.get_project(ORG, &project.uuid).await.expect("succeeds"),
        Some(project.clone())
    );

    assert!(
        store
            .set_project_schedule(ORG, &project.uuid, None)
            .await
            .expect("succeeds")
    );
    assert_eq!(
        store
            .project_schedule(ORG, &project.uuid)
            .await
            .expect("succeeds"),
        None
    );
    assert!(
        store
            .due_schedules(at(3600, 0), 10)
            .await
            .expect("succeeds")
            .is_empty()
    );
    assert!(
        !store
            .set_project_schedule(ORG, "proj_missing", None)
            .await
            .expect("succeeds")
    );
}

async fn schedules_are_scoped_to_their_organization(store: Arc<dyn Store>) {
    let project = project(&store, ORG, "nightly").await;
    let schedule = schedule_of(&project, Some(at(60, 0)));
    assert!(
        !store
            .set_project_schedule(OTHER_ORG, &project.uuid, Some(&schedule))
            .await
            .expect("succeeds")
    );
    assert_eq!(
        store
            .project_schedule(ORG, &project.uuid)
            .await
            .expect("succeeds"),
        None
    );
    assert!(
        store
            .set_project_schedule(ORG, &project.uuid, Some(&schedule))
            .await
            .expect("succeeds")
    );
    assert_eq!(
        store
            .project_schedule(OTHER_ORG, &project.uuid)
            .await
            .expect("succeeds"),
        None
    );
    assert!(
        store
            .project_schedules(OTHER_ORG, std::slice::from_ref(&project.uuid))
            .await
            .expect("succeeds")
            .is_empty()
    );
}

async fn due_schedules_are_listed_earliest_first_without_archived_or_future_ones(store: Arc<dyn Store>) {
    let late = project(&store, ORG, "late").await;
    let early = project(&store, OTHER_ORG, "early").await;
    let future = project(&store, ORG, "future").await;
    let archived = project(&store, ORG, "archived").await;
    let disabled = project(&store, ORG, "disabled").await;
    for (project, next) in [
        (&late, Some(at(30, 0))),
        (&early, Some(at(10, 0))),
        (&future, Some(at(100, 0))),
        (&archived, Some(at(5, 0))),
        (&disabled, None),
    ] {
        let schedule = schedule_of(project, next);
        assert!(
            store
                .set_project_schedule(&project.org_id, &project.uuid, Some(&schedule))
                .await
                .expect("succeeds")
        );
    }
    let patch = ProjectPatch {
        status: Some(ProjectStatus::Archived),
        ..ProjectPatch::default()
    };
    store
        .update_project(ORG, &archived.uuid, patch)
        .await
        .expect("succeeds");

    let due = store.due_schedules(at(30, 0), 10).await.expect("succeeds");
    let names: Vec<_> = due.iter().map(|s| s.project_uuid.as_str()).collect();
    assert_eq!(names, vec![early.uuid.as_str(), late.uuid.as_str()]);
    let first = store.due_schedules(at(30, 0), 1).await.expect("succeeds");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].project_uuid, early.uuid);
}

async fn of_many_concurrent_claims_of_one_tick_exactly_one_wins(store: Arc<dyn Store>) {
    let project = project(&store, ORG, "nightly").await;
    let due = at(60, 654_321);
    let schedule = schedule_of(&project, Some(due));
    store
        .set_project_schedule(ORG, &project.uuid, Some(&schedule))
        .await
        .expect("succeeds");

    let claims = (0..8).map(|_| {
        let store = store.clone();
        let uuid = project.uuid.clone();
        tokio::spawn(async move { store.claim_schedule_tick(&uuid, due, Some(at(120, 0))).await })
    });
    let mut won = 0;
    for claim in claims.collect::<Vec<_>>() {
        if claim.await.expect("join").expect("claim") {
            won += 1;
        }
    }
    assert_eq!(won, 1, "one claimer fires the tick");
    let stored = store
        .project_schedule(ORG, &project.uuid)
        .await
        .expect("succeeds")
        .expect("succeeds");
    assert_eq!(stored.next_run_at, Some(at(120, 0)));
    // A claim of the old tick after it moved on fails; of the new one succeeds.
    assert!(
        !store
            .claim_schedule_tick(&project.uuid, due, Some(at(180, 0)))
            .await
            .expect("succeeds")
    );
    assert!(
        store
            .claim_schedule_tick(&project.uuid, at(120, 0), None)
            .await
            .expect("succeeds")
    );
    assert!(
        store
            .due_schedules(at(1000, 0), 10)
            .await
            .expect("succeeds")
            .is_empty()
    );
}
