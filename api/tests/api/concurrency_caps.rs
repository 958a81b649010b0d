//! Fleet-wide concurrency caps (`max_concurrent_steps`): three in-process
//! workers on PostgreSQL and Redis, a PostgreSQL connector capped at 2 and
//! six executions of a one-second query; the source database's
//! `pg_stat_activity` never shows more than two of the connector's queries
//! at once, and every execution completes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::connectors::PgRole;
use crate::executions::{add_step, terminal, wait_for};
use crate::helpers::{Backend, Options, User, spawn_custom};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_never_run_more_steps_on_a_capped_connector_than_its_cap() {
    let app = spawn_custom(Options {
        backend: Backend::Distributed,
        worker: false,
        ..Options::default()
    })
    .await;
    for _ in 0..3 {
        app.start_worker();
    }
    let alice = User::member("user_alice", "org_a");
    let role = PgRole::create().await;
    let mut config = role.config();
    config["max_concurrent_steps"] = json!(2);
    let reply = app
        .post(
            &alice,
            "/api/connectors",
            json!({"type": "postgresql", "display_name": "capped", "config": config, "test_connection": false}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["config"]["max_concurrent_steps"], 2, "{}", reply.text);
    let conn = reply.body["uuid"].as_str().expect("uuid").to_owned();

    let mut projects = Vec::new();
    for i in 0..6 {
        let project = app.create_project(&alice, &format!("Sleepy {i}")).await;
        add_step(
            &app,
            &alice,
            &project,
            "Sleep",
            json!({"connector_uuid": conn, "query": "select 1 as n from pg_sleep(1)"}),
        )
        .await;
        projects.push(project);
    }

    // Samples the connector's queries running on the source database.
    let sampling = Arc::new(AtomicBool::new(true));
    let most = Arc::new(AtomicI64::new(0));
    let sampler = {
        let sampling = sampling.clone();
        let most = most.clone();
        let role = role.name.clone();
        tokio::spawn(async move {
            let mut conn = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
                .await
                .expect("connect");
            while sampling.load(Ordering::SeqCst) {
                let running: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE usename = $1 AND state = 'active' AND query ILIKE '%pg_sleep%'",
                )
                .bind(&role)
                .fetch_one(&mut conn)
                .await
                .expect("sample pg_stat_activity");
                most.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut executions = Vec::new();
    for project in &projects {
        let accepted = app
            .post(&alice, &format!("/api/projects/{project}/execute"), json!({}))
            .await;
        assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
        executions.push(accepted.body["execution_id"].as_str().expect("id").to_owned());
    }
    // While two steps hold the slots, the others show `waiting`, with why.
    let mut seen_waiting = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen_waiting.is_none() && tokio::time::Instant::now() < deadline {
        for (project, execution) in projects.iter().zip(&executions) {
            let reply = app
                .get(&alice, &format!("/api/projects/{project}/executions/{execution}"))
                .await;
            let step = &reply.body["steps"][0];
            if step["status"] == "waiting" {
                seen_waiting = Some(step.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = seen_waiting.expect("a step beyond the cap shows `waiting`");
    assert!(
        waiting["waiting_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("max_concurrent_steps (2)")),
        "{waiting}"
    );
    for (project, execution) in projects.iter().zip(&executions) {
        let done = wait_for(&app, &alice, project, execution, terminal).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["steps"][0]["status"], "completed", "{done}");
        assert_eq!(
            done["steps"][0]["waiting_reason"],
            serde_json::Value::Null,
            "{done}"
        );
    }
    sampling.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");

    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= 2,
        "{most} of the connector's steps ran at once with a cap of 2"
    );
    assert_eq!(most, 2, "the cap lets two steps run together");
    assert_eq!(
        app.store
            .held_slots(&conn, chrono::Utc::now())
            .await
            .expect("count"),
        0,
        "every slot was released"
    );
}
