//! Cron schedules end to end: the API validates a schedule and shows its
//! next run; the scheduler fires due ticks as executions with
//! `trigger: schedule` that a real worker completes, claims each tick once
//! however many passes race for it, skips (and counts) a tick while the
//! previous execution is in progress, and fires a backlog of missed ticks
//! once. Apps run on SQLite, or PostgreSQL where named.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_scheduler::{LeaderElection, SchedulerContext, tick_once};
use ferry_shared::domain::{self, OrgRole, Schedule};
use ferry_shared::store::{ProjectSchedule, Store};
use ferry_testkit::app::{Backend, Options, Reply, TestApp, User, spawn_custom};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::{ORG, eventually, metric, queued_execution};

async fn app(backend: Backend, worker: bool) -> TestApp {
    spawn_custom(Options {
        backend,
        worker,
        ..Options::default()
    })
    .await
}

fn alice() -> User {
    User::member("user_alice", "org_a")
}

/// A project whose one step is a transform selecting the integer parameter
/// `n` (declared, required): it needs no connector and completes at once.
async fn parameterized_project(app: &TestApp, user: &User) -> String {
    let project = app.create_project(user, "scheduled").await;
    let reply = app
        .post(
            user,
            &format!("/api/projects/{project}/steps"),
            json!({"name": "Pick n", "type": "transform",
                   "config": {"query": "SELECT {{n}} AS n",
                              "parameters": {"n": {"type": "integer"}}}}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 201, "{}", reply.text);
    project
}

fn assert_validation(reply: &Reply, field: &str) {
    assert_eq!(reply.status.as_u16(), 400, "{}", reply.text);
    assert_eq!(reply.body["error"], "validation_error", "{}", reply.text);
    assert_eq!(reply.body["field"], field, "{}", reply.text);
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// Makes the stored schedule of `project` fire every second from now on
/// (a six-field pattern, which only the store accepts).
async fn every_second(store: &Arc<dyn Store>, org_id: &str, project: &str) {
    let mut stored = store
        .project_schedule(org_id, project)
        .await
        .expect("read schedule")
        .expect("a schedule");
    stored.schedule.cron = "* * * * * *".into();
    stored.next_run_at = Some(domain::now());
    assert!(
        store
            .set_project_schedule(org_id, project, Some(&stored))
            .await
            .expect("set")
    );
}

/// Runs a single-process scheduler over the app's store and queue, passing
/// every 100 ms, until the returned token is cancelled.
fn run_scheduler(app: &TestApp, registry: prometheus::Registry) -> CancellationToken {
    let mut context = SchedulerContext::new(
        app.store.clone(),
        registry,
        app.queue(),
        LeaderElection::single_process(),
    );
    context.schedule_interval = Duration::from_millis(100);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move { ferry_scheduler::run_with(context, stopped.cancelled_owned()).await });
    stop
}

// ---------------------------------------------------------------- API

#[tokio::test]
async fn a_bad_cron_zone_or_parameters_is_a_validation_error_naming_the_schedule_field() {
    let app = app(Backend::Sqlite, false).await;
    let alice = alice();
    let project = parameterized_project(&app, &alice).await;
    let path = format!("/api/projects/{project}");
    let cases = [
        (json!({"cron": "61 * * * *"}), "schedule.cron"),
        (json!({"cron": "* * * *"}), "schedule.cron"),
        (
            json!({"cron": "* * * * * *", "parameters": {"n": 1}}),
            "schedule.cron",
        ),
        (json!({"cron": "@often"}), "schedule.cron"),
        (json!({"timezone": "UTC"}), "schedule.cron"),
        (
            json!({"cron": "0 6 * * 1-5", "timezone": "Mars/Olympus", "parameters": {"n": 1}}),
            "schedule.timezone",
        ),
        (
            json!({"cron": "0 6 * * *", "parameters": [1]}),
            "schedule.parameters",
        ),
        (
            json!({"cron": "0 6 * * *", "parameters": {}}),
            "schedule.parameters.n",
        ),
        (
            json!({"cron": "0 6 * * *", "parameters": {"n": "seven"}}),
            "schedule.parameters.n",
        ),
        (
            json!({"cron": "0 6 * * *", "parameters": {"n": 1}, "enabled": "yes"}),
            "schedule.enabled",
        ),
    ];
    for (schedule, field) in cases {
        let reply = app.put(&alice, &path, json!({ "schedule": schedule })).await;
        assert_validation(&reply, field);
    }
    let reply = app.put(&alice, &path, json!({"schedule": "daily"})).await;
    assert_validation(&reply, "schedule");
    let reply = app.get(&alice, &path).await;
    assert_eq!(
        reply.body["schedule"],
        Value::Null,
        "nothing was stored: {}",
        reply.text
    );
    assert_eq!(reply.body["next_run_at"], Value::Null);
}

#[tokio::test]
async fn a_schedule_reads_back_with_its_next_run_in_every_project_body_and_null_removes_it() {
    let app = app(Backend::Postgres, false).await;
    let alice = alice();
    let project = parameterized_project(&app, &alice).await;
    let path = format!("/api/projects/{project}");
    let schedule = json!({"cron": "0 6 * * 1-5", "timezone": "Europe/Berlin", "parameters": {"n": 7}});
    let before = Utc::now();
    let reply = app.put(&alice, &path, json!({ "schedule": schedule })).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
    assert_eq!(
        reply.body["schedule"],
        json!({"cron": "0 6 * * 1-5", "timezone": "Europe/Berlin", "parameters": {"n": 7}, "enabled": true})
    );
    let next = time(&reply.body["next_run_at"]);
    let expected = Schedule::validated("0 6 * * 1-5", Some("Europe/Berlin"), Map::new(), true)
        .expect("succeeds")
        .next_after(before)
        .expect("succeeds")
        .expect("succeeds");
    assert_eq!(next, expected, "the next weekday 06:00 in Berlin");

    let got = app.get(&alice, &path).await;
    assert_eq!(got.body["schedule"], reply.body["schedule"]);
    assert_eq!(got.body["next_run_at"], reply.body["next_run_at"]);
    let listed = app.get(&alice, "/api/projects").await;
    assert_eq!(
        listed.body["data"][0]["uuid"],
        project.as_str(),
        "{}",
        listed.text
    );
    assert_eq!(listed.body["data"][0]["next_run_at"], reply.body["next_run_at"]);
    assert_eq!(listed.body["data"][0]["schedule"]["cron"], "0 6 * * 1-5");
    // Other fields of the project are left alone, and changing them keeps the schedule.
    let renamed = app.put(&alice, &path, json!({"name": "renamed"})).await;
    assert_eq!(renamed.body["name"], "renamed");
    assert_eq!(renamed.body["next_run_at"], reply.body["next_run_at"]);

    // A macro with the default zone; a disabled schedule has no next run.
    let daily = app
        .put(
            &alice,
            &path,
            json!({"schedule": {"cron": "@daily", "parameters": {"n": 1}}}),
        )
        .await;
    assert_eq!(daily.body["schedule"]["timezone"], "UTC", "{}", daily.text);
    assert_eq!(time(&daily.body["next_run_at"]).time(), chrono::NaiveTime::MIN);
    let off = app
        .put(
            &alice,
            &path,
            json!({"schedule": {"cron": "@daily", "parameters": {"n": 1}, "enabled": false}}),
        )
        .await;
    assert_eq!(off.body["schedule"]["enabled"], false, "{}", off.text);
    assert_eq!(off.body["next_run_at"], Value::Null);

    let removed = app.put(&alice, &path, json!({"schedule": null})).await;
    assert_eq!(removed.status.as_u16(), 200, "{}", removed.text);
    assert_eq!(removed.body["schedule"], Value::Null);
    assert_eq!(removed.body["next_run_at"], Value::Null);
    let created = app.post(&alice, "/api/projects", json!({"name": "fresh"})).await;
    assert_eq!(created.body["schedule"], Value::Null, "{}", created.text);
    assert_eq!(created.body["next_run_at"], Value::Null);
}

// ---------------------------------------------------------------- firing

async fn scheduled_executions_complete_with_trigger_schedule_and_their_parameters(backend: Backend) {
    let app = app(backend, true).await;
    let alice = alice();
    let project = parameterized_project(&app, &alice).await;
    let reply = app
        .put(
            &alice,
            &format!("/api/projects/{project}"),
            json!({"schedule": {"cron": "* * * * *", "parameters": {"n": 7}}}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
    every_second(&app.store, "org_a", &project).await;
    let registry = prometheus::Registry::new();
    let stop = run_scheduler(&app, registry.clone());

    let executions = format!("/api/projects/{project}/executions");
    let completed = eventually(Duration::from_secs(30), async || {
        let list = app.get(&alice, &executions).await;
        list.body["data"]
            .as_array()
            .is_some_and(|data| data.iter().filter(|e| e["status"] == "completed").count() >= 2)
    })
    .await;
    stop.cancel();
    let list = app.get(&alice, &executions).await;
    assert!(completed, "two scheduled executions completed: {}", list.text);
    for execution in list.body["data"].as_array().expect("data") {
        assert_eq!(execution["trigger"], "schedule", "{execution}");
        assert_eq!(execution["parameters"], json!({"n": 7}), "{execution}");
        assert_eq!(execution["created_by"], "user_alice", "{execution}");
    }
    let done = list.body["data"]
        .as_array()
        .expect("succeeds")
        .iter()
        .find(|e| e["status"] == "completed")
        .expect("succeeds");
    assert_eq!(done["steps"][0]["rows_processed"], 1, "{done}");
    assert!(metric(&registry, "ferry_scheduler_ticks_total").unwrap_or(0.0) >= 2.0);
}

#[tokio::test]
async fn scheduled_executions_complete_with_trigger_schedule_and_their_parameters_on_sqlite() {
    scheduled_executions_complete_with_trigger_schedule_and_their_parameters(Backend::Sqlite).await;
}

#[tokio::test]
async fn scheduled_executions_complete_with_trigger_schedule_and_their_parameters_on_postgres_and_redis() {
    scheduled_executions_complete_with_trigger_schedule_and_their_parameters(Backend::Distributed).await;
}

/// A schedule on a fresh project of `ORG`, due at `due`, every minute.
async fn due_schedule(store: &Arc<dyn Store>, project: &str, due: DateTime<Utc>) {
    let schedule = ProjectSchedule {
        project_uuid: project.to_owned(),
        org_id: ORG.to_owned(),
        schedule: Schedule::validated("* * * * *", None, Map::new(), true).expect("succeeds"),
        set_by: "user_alice".into(),
        set_role: OrgRole::Member,
        next_run_at: Some(due),
    };
    assert!(
        store
            .set_project_schedule(ORG, project, Some(&schedule))
            .await
            .expect("succeeds")
    );
}

#[tokio::test]
async fn a_tick_while_the_previous_execution_is_in_progress_is_skipped_and_counted() {
    let app = app(Backend::Sqlite, false).await;
    // Queued and never enqueued: no worker takes it, it stays in progress.
    let busy = queued_execution(&app.store, domain::now()).await;
    due_schedule(&app.store, &busy.project_uuid, domain::now()).await;

    let ticked = tick_once(app.store.as_ref(), app.queue().as_ref(), domain::now())
        .await
        .expect("pass");
    assert_eq!((ticked.claimed, ticked.skipped, ticked.started.len()), (1, 1, 0));
    let stored = app
        .store
        .project_schedule(ORG, &busy.project_uuid)
        .await
        .expect("succeeds")
        .expect("succeeds");
    assert!(
        stored.next_run_at.expect("succeeds") > domain::now(),
        "the tick was consumed, not retried"
    );

    every_second(&app.store, ORG, &busy.project_uuid).await;
    let registry = prometheus::Registry::new();
    let stop = run_scheduler(&app, registry.clone());
    let counted = eventually(Duration::from_secs(10), async || {
        metric(&registry, "ferry_scheduler_ticks_skipped_total").unwrap_or(0.0) >= 2.0
    })
    .await;
    stop.cancel();
    assert!(counted, "ticks skipped while the execution is queued are counted");
    let page = app
        .store
        .list_executions(&busy.project_uuid, domain::PageRequest { page: 1, limit: 100 })
        .await
        .expect("succeeds");
    assert_eq!(
        page.items.len(),
        1,
        "nothing was queued behind the execution in progress"
    );
}

#[tokio::test]
async fn concurrent_passes_fire_a_due_tick_once() {
    let app = app(Backend::Postgres, false).await;
    let alice = alice();
    let project = app.create_project(&alice, "raced").await;
    let now = domain::now();
    let schedule = ProjectSchedule {
        project_uuid: project.clone(),
        org_id: "org_a".into(),
        schedule: Schedule::validated("* * * * *", None, Map::new(), true).expect("succeeds"),
        set_by: "user_alice".into(),
        set_role: OrgRole::Member,
        next_run_at: Some(now),
    };
    assert!(
        app.store
            .set_project_schedule("org_a", &project, Some(&schedule))
            .await
            .expect("succeeds")
    );
    let queue = app.queue();
    let passes = (0..4).map(|_| tick_once(app.store.as_ref(), queue.as_ref(), now));
    let results = futures_join_all(passes).await;
    let claimed: u64 = results.iter().map(|r| r.as_ref().expect("pass").claimed).sum();
    let started: usize = results
        .iter()
        .map(|r| r.as_ref().expect("succeeds").started.len())
        .sum();
    assert_eq!((claimed, started), (1, 1), "{results:?}");
    let page = app
        .store
        .list_executions(&project, domain::PageRequest { page: 1, limit: 100 })
        .await
        .expect("succeeds");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].trigger, domain::Trigger::Schedule);
}

#[tokio::test]
async fn a_scheduler_that_was_down_fires_the_backlog_of_missed_ticks_once_and_continues_from_now() {
    let app = app(Backend::Sqlite, false).await;
    let alice = alice();
    let project = app.create_project(&alice, "missed").await;
    let now = domain::now();
    // Every minute, last fired three hours ago: 180 ticks were missed.
    let schedule = ProjectSchedule {
        project_uuid: project.clone(),
        org_id: "org_a".into(),
        schedule: Schedule::validated("* * * * *", None, Map::new(), true).expect("succeeds"),
        set_by: "user_alice".into(),
        set_role: OrgRole::Member,
        next_run_at: Some(now - chrono::Duration::hours(3)),
    };
    assert!(
        app.store
            .set_project_schedule("org_a", &project, Some(&schedule))
            .await
            .expect("succeeds")
    );
    let queue = app.queue();
    let first = tick_once(app.store.as_ref(), queue.as_ref(), now)
        .await
        .expect("succeeds");
    assert_eq!((first.claimed, first.started.len()), (1, 1));
    let again = tick_once(app.store.as_ref(), queue.as_ref(), now)
        .await
        .expect("succeeds");
    assert_eq!(again, Default::default(), "the backlog fired once");
    let stored = app
        .store
        .project_schedule("org_a", &project)
        .await
        .expect("succeeds")
        .expect("succeeds");
    let next = stored.next_run_at.expect("succeeds");
    assert!(
        next > now && next <= now + chrono::Duration::minutes(1),
        "{next} after {now}"
    );
}

/// Polls the passes concurrently (no `futures` dependency in this crate).
async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs = Vec::new();
    let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(output) => {
                        *result = Some(output);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.extend(results.into_iter().map(|r| r.expect("ready")));
    outputs
}

// ---------------------------------------------------------------- failover

/// A scheduler electing itself on Redis under `prefix`, over the app's
/// store and queue; its task can be aborted like a killed process (the
/// lock is not released).
async fn elected_scheduler(
    app: &TestApp,
    prefix: &str,
    registry: prometheus::Registry,
) -> tokio::task::JoinHandle<ferry_shared::Result<()>> {
    let leader = LeaderElection::redis(ferry_testkit::redis::URL, prefix, Duration::from_secs(1))
        .await
        .expect("Redis must be running at 127.0.0.1:6379");
    let mut context = SchedulerContext::new(app.store.clone(), registry, app.queue(), leader);
    context.schedule_interval = Duration::from_millis(100);
    tokio::spawn(ferry_scheduler::run_with(context, std::future::pending()))
}

fn ticks(registry: &prometheus::Registry) -> f64 {
    metric(registry, "ferry_scheduler_ticks_total").unwrap_or(0.0)
}

#[tokio::test]
async fn when_the_leading_scheduler_is_killed_the_standby_fires_the_next_ticks_and_none_fires_twice() {
    let app = app(Backend::Distributed, true).await;
    let alice = alice();
    let project = parameterized_project(&app, &alice).await;
    let reply = app
        .put(
            &alice,
            &format!("/api/projects/{project}"),
            json!({"schedule": {"cron": "* * * * *", "parameters": {"n": 3}}}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text);
    let prefix = ferry_testkit::redis::unique_prefix("ferry_test");
    let (a_metrics, b_metrics) = (prometheus::Registry::new(), prometheus::Registry::new());
    let started = std::time::Instant::now();
    every_second(&app.store, "org_a", &project).await;
    let a = elected_scheduler(&app, &prefix, a_metrics.clone()).await;
    let b = elected_scheduler(&app, &prefix, b_metrics.clone()).await;

    assert!(
        eventually(Duration::from_secs(10), async || ticks(&a_metrics)
            + ticks(&b_metrics)
            >= 2.0)
        .await,
        "the leader fires ticks"
    );
    let a_leads = metric(&a_metrics, "ferry_scheduler_is_leader") == Some(1.0);
    let b_leads = metric(&b_metrics, "ferry_scheduler_is_leader") == Some(1.0);
    assert!(a_leads ^ b_leads, "one leads: a {a_leads}, b {b_leads}");
    assert_eq!(
        if a_leads {
            ticks(&b_metrics)
        } else {
            ticks(&a_metrics)
        },
        0.0,
        "the standby fires nothing"
    );
    let (killed, standby, standby_metrics) = if a_leads {
        (a, b, &b_metrics)
    } else {
        (b, a, &a_metrics)
    };
    killed.abort();

    let took_over = eventually(Duration::from_secs(10), async || ticks(standby_metrics) >= 2.0).await;
    let elapsed = started.elapsed();
    standby.abort();
    assert!(
        took_over,
        "the standby fires ticks once the killed leader's lock expires"
    );
    // Every-second ticks: however the two split them, no more than one per second.
    let total = ticks(&a_metrics) + ticks(&b_metrics);
    assert!(
        total <= elapsed.as_secs_f64().ceil() + 1.0,
        "{total} ticks in {elapsed:?}: a tick fired twice"
    );
    let list = app
        .get(&alice, &format!("/api/projects/{project}/executions?limit=100"))
        .await;
    let executions = list.body["data"].as_array().expect("data");
    assert!(executions.len() >= 3, "{}", list.text);
    assert!(
        executions.iter().all(|e| e["trigger"] == "schedule"),
        "{}",
        list.text
    );
    ferry_testkit::redis::delete_keys(ferry_testkit::redis::URL, &[format!("{prefix}*")]).await;
}
