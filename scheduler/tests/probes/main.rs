//! Connector health probes in the scheduler: the leader enqueues one
//! `probe_connector` job per connector that is active (or in error) per
//! interval, at the connector's own offset, never a second while one is
//! pending; and the store's probe records move a connector to `error` after
//! three consecutive failures and back on a success. Over a SQLite store
//! and an embedded queue in a temporary directory, and a fresh PostgreSQL
//! database on 127.0.0.1:5432.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_scheduler::probes::{ProbePlan, probe_once, probe_slot};
use ferry_scheduler::{LeaderElection, SchedulerContext};
use ferry_shared::config::MasterKeys;
use ferry_shared::domain::{self, Connector, ConnectorStatus, TestRecord};
use ferry_shared::ids::IdKind;
use ferry_shared::jobs::ProbeConnectorJob;
use ferry_shared::queue::{EmbeddedQueue, JobKind, Queue};
use ferry_shared::store::{self, ProbeTransition, SqliteStore, Store};
use ferry_shared::vault::Vault;
use serde_json::{Map, json};

const ORG: &str = "org_probes";
const MASTER_KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
    let store = SqliteStore::connect(&url).await.expect("open the store");
    store.migrate().await.expect("migrate the store");
    Arc::new(store)
}

async fn postgres(database: &ferry_testkit::postgres::PgDatabase) -> Arc<dyn Store> {
    let store = store::connect(&database.url()).await.expect("open the store");
    store.migrate().await.expect("migrate the store");
    store
}

async fn queue(dir: &tempfile::TempDir) -> Arc<dyn Queue> {
    Arc::new(
        EmbeddedQueue::open(&dir.path().join("queue.db"), Duration::from_secs(30))
            .await
            .expect("open the queue"),
    )
}

async fn connector(store: &Arc<dyn Store>, status: ConnectorStatus) -> Connector {
    let uuid = IdKind::Connector.generate();
    let vault = Vault::new(MasterKeys::parse(MASTER_KEY).expect("keys"));
    let now = domain::now();
    let connector = Connector {
        secrets: vault.seal(&uuid, &Map::new()).expect("seal"),
        uuid,
        org_id: ORG.to_owned(),
        connector_type: "postgresql".to_owned(),
        display_name: "probed".to_owned(),
        config: json!({"host": "127.0.0.1", "port": 1, "database": "app"})
            .as_object()
            .cloned()
            .expect("object"),
        config_version: 1,
        status,
        auth_type: "credentials".to_owned(),
        created_by: "user_alice".to_owned(),
        created_at: now,
        updated_at: now,
        last_tested_at: None,
        last_test_status: None,
        disabled_at: None,
        disabled_by: None,
        disabled_reason: None,
    };
    store
        .create_connector(&connector)
        .await
        .expect("create connector");
    connector
}

async fn status_of(store: &Arc<dyn Store>, uuid: &str) -> ConnectorStatus {
    store
        .get_connector(ORG, uuid)
        .await
        .expect("get")
        .expect("exists")
        .status
}

fn probe(uuid: &str, success: bool) -> TestRecord {
    TestRecord {
        connector_uuid: uuid.to_owned(),
        tested_at: domain::now(),
        success,
        latency_ms: 3,
        error_type: (!success).then(|| "connection_refused".to_owned()),
        error_message: (!success).then(|| "refused".to_owned()),
    }
}

/// The value of an unlabelled metric in the text exposition, if present.
fn metric(registry: &prometheus::Registry, name: &str) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encode metrics");
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------- the leader's loop

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_probes_active_and_failing_connectors_once_while_a_probe_is_pending_and_never_disabled_ones()
 {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, queue) = (sqlite(&dir).await, queue(&dir).await);
    let active = connector(&store, ConnectorStatus::Active).await;
    let failing = connector(&store, ConnectorStatus::Error).await;
    let disabled = connector(&store, ConnectorStatus::Disabled).await;

    let registry = prometheus::Registry::new();
    let context = SchedulerContext {
        probe_interval: Duration::from_millis(500),
        ..SchedulerContext::new(
            store.clone(),
            registry.clone(),
            queue.clone(),
            LeaderElection::single_process(),
        )
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(ferry_scheduler::run_with(context, async {
        let _ = stopped.await;
    }));

    // Each connector's first slot boundary comes within one interval.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&registry, "ferry_scheduler_probes_enqueued_total") < 2.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Three more intervals: no probe is pending twice, so none is added.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(metric(&registry, "ferry_scheduler_probes_enqueued_total"), 2.0);

    let deliveries = queue
        .fetch("test", 10, Duration::from_millis(200))
        .await
        .expect("fetch");
    let mut ids: Vec<_> = deliveries.iter().map(|d| d.job.id.clone()).collect();
    ids.sort();
    let mut expected = vec![
        ProbeConnectorJob::job_id(&active.uuid),
        ProbeConnectorJob::job_id(&failing.uuid),
    ];
    expected.sort();
    assert_eq!(ids, expected, "{} is disabled", disabled.uuid);
    assert!(deliveries.iter().all(|d| d.job.kind == JobKind::ProbeConnector));
    let payload: ProbeConnectorJob =
        serde_json::from_value(deliveries[0].job.payload.clone()).expect("payload");
    assert_eq!(payload.org_id, ORG);

    // Acknowledged (the probes ran): the next slot enqueues them again.
    let receipts: Vec<_> = deliveries.iter().map(|d| d.receipt.clone()).collect();
    queue.ack(&receipts).await.expect("ack");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&registry, "ferry_scheduler_probes_enqueued_total") < 4.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&registry, "ferry_scheduler_probes_enqueued_total"), 4.0);

    let _ = stop.send(());
    scheduler
        .await
        .expect("join")
        .expect("the scheduler stops cleanly");
}

#[tokio::test]
async fn a_pass_enqueues_a_connector_only_when_its_own_slot_comes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, queue) = (sqlite(&dir).await, queue(&dir).await);
    let one = connector(&store, ConnectorStatus::Active).await;
    let interval = Duration::from_secs(60);
    let mut plan = ProbePlan::new(interval);
    let start = domain::now();
    assert_eq!(
        probe_once(store.as_ref(), queue.as_ref(), &mut plan, start)
            .await
            .expect("pass"),
        0
    );
    // Walk the minute second by second: exactly one pass enqueues, the one
    // where the connector's slot number moves on.
    let mut fired_at = Vec::new();
    for second in 1..=60 {
        let now = start + chrono::Duration::seconds(second);
        if probe_once(store.as_ref(), queue.as_ref(), &mut plan, now)
            .await
            .expect("pass")
            > 0
        {
            fired_at.push(now);
        }
    }
    assert_eq!(fired_at.len(), 1, "{fired_at:?}");
    let at = fired_at[0];
    assert_eq!(
        probe_slot(&one.uuid, interval, at),
        probe_slot(&one.uuid, interval, at - chrono::Duration::seconds(1)) + 1
    );
    assert_eq!(queue.depth().await.expect("depth"), 1);
}

// ---------------------------------------------------------------- the store's status rule

async fn three_consecutive_failures_put_a_connector_in_error_and_a_success_brings_it_back(
    store: Arc<dyn Store>,
) {
    let subject = connector(&store, ConnectorStatus::Active).await;
    let uuid = subject.uuid.as_str();
    let record = async |success| {
        store
            .record_probe(&probe(uuid, success), 3)
            .await
            .expect("record")
    };

    assert_eq!(record(false).await, ProbeTransition::Unchanged);
    assert_eq!(record(false).await, ProbeTransition::Unchanged);
    assert_eq!(
        record(true).await,
        ProbeTransition::Unchanged,
        "a success resets the run"
    );
    assert_eq!(record(false).await, ProbeTransition::Unchanged);
    assert_eq!(record(false).await, ProbeTransition::Unchanged);
    assert_eq!(status_of(&store, uuid).await, ConnectorStatus::Active);
    assert_eq!(record(false).await, ProbeTransition::Failed);
    assert_eq!(status_of(&store, uuid).await, ConnectorStatus::Error);
    assert_eq!(
        record(false).await,
        ProbeTransition::Unchanged,
        "already in error"
    );
    assert_eq!(record(true).await, ProbeTransition::Recovered);
    assert_eq!(status_of(&store, uuid).await, ConnectorStatus::Active);

    // Tests users run do not count toward the probes' run of failures.
    store.record_test(&probe(uuid, false)).await.expect("test");
    store.record_test(&probe(uuid, false)).await.expect("test");
    assert_eq!(record(false).await, ProbeTransition::Unchanged);
    assert_eq!(status_of(&store, uuid).await, ConnectorStatus::Active);

    // A disabled connector is never moved.
    let off = connector(&store, ConnectorStatus::Disabled).await;
    for _ in 0..4 {
        store
            .record_probe(&probe(&off.uuid, false), 3)
            .await
            .expect("record");
    }
    store
        .record_probe(&probe(&off.uuid, true), 3)
        .await
        .expect("record");
    assert_eq!(status_of(&store, &off.uuid).await, ConnectorStatus::Disabled);

    // Both sources are in the health history.
    let since = domain::now() - chrono::Duration::hours(1);
    assert_eq!(store.test_history(uuid, since).await.expect("history").len(), 11);
    // Probes older than a week go when a new one is recorded; tests stay.
    let old = domain::now() - chrono::Duration::days(8);
    store
        .record_probe(
            &TestRecord {
                tested_at: old,
                ..probe(uuid, true)
            },
            3,
        )
        .await
        .expect("record");
    store
        .record_test(&TestRecord {
            tested_at: old,
            ..probe(uuid, true)
        })
        .await
        .expect("test");
    let month = domain::now() - chrono::Duration::days(30);
    assert_eq!(store.test_history(uuid, month).await.expect("history").len(), 13);
    assert_eq!(record(true).await, ProbeTransition::Unchanged);
    assert_eq!(
        store.test_history(uuid, month).await.expect("history").len(),
        13,
        "the week-old probe went, the new one came, the old test stayed"
    );
    let history = store.test_history(uuid, month).await.expect("history");
    assert_eq!(history.iter().filter(|r| r.tested_at < since).count(), 1);

    let listed = store.connectors_to_probe(None, 100).await.expect("list");
    assert!(listed.iter().any(|t| t.connector_uuid == uuid));
    assert!(listed.iter().all(|t| t.connector_uuid != off.uuid));
    let page = store.connectors_to_probe(Some(uuid), 100).await.expect("after");
    assert!(page.iter().all(|t| t.connector_uuid.as_str() > uuid));
}

#[tokio::test]
async fn on_sqlite_three_consecutive_failed_probes_put_a_connector_in_error_and_a_success_brings_it_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    three_consecutive_failures_put_a_connector_in_error_and_a_success_brings_it_back(sqlite(&dir).await)
        .await;
}

#[tokio::test]
async fn on_postgres_three_consecutive_failed_probes_put_a_connector_in_error_and_a_success_brings_it_back() {
    let database = ferry_testkit::postgres::PgDatabase::create("ferry_probe_test");
    three_consecutive_failures_put_a_connector_in_error_and_a_success_brings_it_back(
        postgres(&database).await,
    )
    .await;
}
