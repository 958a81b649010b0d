//! Connector health probes, run by a real worker against the local
//! PostgreSQL through a TCP relay the test opens and closes: a probe is
//! reflected in `GET /api/connectors/{uuid}/health`, a connector whose
//! probes keep failing goes to `error` and back to `active` once a probe
//! succeeds, and step runs count in the health's query count.

use std::sync::Arc;
use std::time::Duration;

use ferry_shared::config::MasterKeys;
use ferry_shared::domain::{self, Execution, ExecutionStatus, StepRun, StepRunStatus, Trigger};
use ferry_shared::ids::IdKind;
use ferry_shared::jobs::ProbeConnectorJob;
use ferry_shared::queue::{EmbeddedQueue, LocalBus, Queue, RedisQueue};
use ferry_shared::vault::Vault;
use ferry_testkit::eventually;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::connectors::PgRole;
use crate::helpers::{Backend, MASTER_KEY, Options, TestApp, User, spawn_custom};

/// A TCP relay to the local PostgreSQL on a fixed port that can be closed
/// (the port refuses connections and every relayed connection is cut) and
/// opened again.
struct Relay {
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn open() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        Relay {
            port,
            task: Some(tokio::spawn(relay(listener))),
        }
    }

    fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    async fn reopen(&mut self) {
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", self.port)).await {
                self.task = Some(tokio::spawn(relay(listener)));
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot bind the relay port {} again", self.port);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.close();
    }
}

/// Relays every connection to 127.0.0.1:5432; dropping this future (an
/// aborted task) drops the listener and cuts every relayed connection.
async fn relay(listener: TcpListener) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// A worker of its own over the app's store, on a queue the test feeds
/// (on Redis under a key prefix of its own, deleted at the end, when the
/// app is distributed).
struct ProbeWorker {
    queue: Arc<dyn Queue>,
    registry: prometheus::Registry,
    redis_prefix: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for ProbeWorker {
    fn drop(&mut self) {
        if let Some(prefix) = self.redis_prefix.take() {
            let pattern = format!("{prefix}*");
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(ferry_testkit::redis::delete_keys(
                    ferry_testkit::redis::URL,
                    &[pattern],
                ));
            })
            .join();
        }
    }
}

async fn start_worker(app: &TestApp, backend: Backend) -> ProbeWorker {
    let dir = tempfile::tempdir().expect("temp dir");
    let lease = Duration::from_secs(30);
    let (queue, redis_prefix): (Arc<dyn Queue>, _) = if backend == Backend::Distributed {
        let prefix = ferry_testkit::redis::unique_prefix("ferry-probes");
        let url = format!("{}/0", ferry_testkit::redis::URL);
        let queue = RedisQueue::connect(&url, &prefix, lease)
            .await
            .expect("Redis queue");
        (Arc::new(queue), Some(prefix))
    } else {
        let queue = EmbeddedQueue::open(&dir.path().join("queue.db"), lease)
            .await
            .expect("queue");
        (Arc::new(queue), None)
    };
    let registry = prometheus::Registry::new();
    let context = ferry_worker::WorkerContext {
        backends: ferry_shared::backends::Backends {
            store: app.store.clone(),
            queue: queue.clone(),
            bus: Arc::new(LocalBus::new()),
            vault: Arc::new(Vault::new(MasterKeys::parse(MASTER_KEY).expect("keys"))),
            objects: Arc::new(
                ferry_shared::objects::ObjectTarget::open(&format!(
                    "file://{}/objects",
                    dir.path().display()
                ))
                .expect("objects"),
            ),
        },
        registry: registry.clone(),
        policy: ferry_worker::connectors::NetworkPolicy {
            allow_private_networks: true,
            sqlite_dir: dir.path().join("sqlite"),
            trusted_roots: Default::default(),
        },
        concurrency: 4,
        lease: Duration::from_secs(30),
        retry: ferry_worker::jobs::execute_project::StepRetry::default(),
        transform: ferry_worker::transform::TransformOptions::default(),
        shutdown_grace: None,
        oauth: Default::default(),
        webhook_timeout: Duration::from_secs(10),
    };
    tokio::spawn(ferry_worker::run_with(context, std::future::pending()));
    ProbeWorker {
        queue,
        registry,
        redis_prefix,
        _dir: dir,
    }
}

impl ProbeWorker {
    /// Enqueues a probe of the connector (waiting while the previous one is
    /// still pending, since one connector has one probe at a time) and waits
    /// until its outcome is recorded.
    async fn probe(&self, app: &TestApp, uuid: &str) {
        let job = ProbeConnectorJob {
            connector_uuid: uuid.to_owned(),
            org_id: ORG.to_owned(),
        }
        .to_job();
        let before = recorded(app, uuid).await;
        let queue = self.queue.clone();
        assert!(
            eventually(Duration::from_secs(10), || {
                let (queue, job) = (queue.clone(), job.clone());
                async move { queue.enqueue(&job).await.expect("enqueue") }
            })
            .await,
            "the previous probe was never acknowledged"
        );
        assert!(
            eventually(Duration::from_secs(20), || async {
                recorded(app, uuid).await > before
            })
            .await,
            "the probe of {uuid} was not recorded"
        );
    }

    fn probes_counted(&self, outcome: &str) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("encode metrics");
        let series = format!("ferry_worker_probes_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

const ORG: &str = "org_probes";

async fn recorded(app: &TestApp, uuid: &str) -> usize {
    let since = domain::now() - chrono::Duration::hours(24);
    app.store.test_history(uuid, since).await.expect("history").len()
}

async fn status(app: &TestApp, user: &User, uuid: &str) -> String {
    let reply = app.get(user, &format!("/api/connectors/{uuid}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["status"].as_str().expect("status").to_owned()
}

async fn health(app: &TestApp, user: &User, uuid: &str) -> Value {
    let reply = app.get(user, &format!("/api/connectors/{uuid}/health")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

/// A connector to the local PostgreSQL through `relay`, saved untested.
async fn relayed_connector(app: &TestApp, user: &User, role: &PgRole, relay: &Relay) -> String {
    let mut config = role.config();
    config["port"] = json!(relay.port);
    let reply = app
        .post(
            user,
            "/api/connectors",
            json!({"type": "postgresql", "display_name": "Probed", "config": config, "test_connection": false}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["uuid"].as_str().expect("uuid").to_owned()
}

async fn app_without_worker(backend: Backend) -> TestApp {
    spawn_custom(Options {
        backend,
        worker: false,
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_probe_is_reflected_in_the_connectors_health_on_sqlite() {
    a_successful_probe_is_reflected_in_the_connectors_health(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_probe_is_reflected_in_the_connectors_health_on_postgres_and_redis() {
    a_successful_probe_is_reflected_in_the_connectors_health(Backend::Distributed).await;
}

async fn a_successful_probe_is_reflected_in_the_connectors_health(backend: Backend) {
    let app = app_without_worker(backend).await;
    let alice = User::member("user_alice", ORG);
    let role = PgRole::create().await;
    let relay = Relay::open().await;
    let uuid = relayed_connector(&app, &alice, &role, &relay).await;
    assert_eq!(health(&app, &alice, &uuid).await["status"], "unknown");

    let worker = start_worker(&app, backend).await;
    worker.probe(&app, &uuid).await;
    worker.probe(&app, &uuid).await;

    let body = health(&app, &alice, &uuid).await;
    assert_eq!(body["status"], "healthy", "{body}");
    assert!(body["last_check"].is_string(), "{body}");
    let metrics = &body["metrics"];
    assert_eq!(metrics["uptime_percentage_24h"], 100.0, "{body}");
    assert_eq!(metrics["error_rate_24h"], 0.0, "{body}");
    assert_eq!(metrics["total_queries_24h"], 2, "two probes, no test: {body}");
    assert!(metrics["average_latency_ms"].as_f64().is_some(), "{body}");
    assert_eq!(body["recent_errors"], json!([]));
    assert_eq!(worker.probes_counted("success"), 2.0);
    assert_eq!(status(&app, &alice, &uuid).await, "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_whose_probes_keep_failing_goes_to_error_and_back_to_active_once_one_succeeds_on_sqlite()
{
    a_connector_whose_probes_keep_failing_goes_to_error_and_back_to_active_once_one_succeeds(Backend::Sqlite)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_whose_probes_keep_failing_goes_to_error_and_back_to_active_once_one_succeeds_on_postgres_and_redis()
 {
    a_connector_whose_probes_keep_failing_goes_to_error_and_back_to_active_once_one_succeeds(
        Backend::Distributed,
    )
    .await;
}

async fn a_connector_whose_probes_keep_failing_goes_to_error_and_back_to_active_once_one_succeeds(
    backend: Backend,
) {
    let app = app_without_worker(backend).await;
    let alice = User::member("user_alice", ORG);
    let role = PgRole::create().await;
    let mut relay = Relay::open().await;
    let uuid = relayed_connector(&app, &alice, &role, &relay).await;
    let worker = start_worker(&app, backend).await;
    worker.probe(&app, &uuid).await;

    relay.close();
    worker.probe(&app, &uuid).await;
    worker.probe(&app, &uuid).await;
    assert_eq!(
        status(&app, &alice, &uuid).await,
        "active",
        "two failures in a row are not enough"
    );
    worker.probe(&app, &uuid).await;
    assert_eq!(
        status(&app, &alice, &uuid).await,
        "error",
        "three consecutive failed probes"
    );
    let body = health(&app, &alice, &uuid).await;
    assert_eq!(body["status"], "unhealthy", "{body}");
    assert_eq!(body["metrics"]["total_queries_24h"], 4, "{body}");
    assert_eq!(body["metrics"]["uptime_percentage_24h"], 25.0, "{body}");
    assert_eq!(body["metrics"]["error_rate_24h"], 0.75, "{body}");
    let errors = body["recent_errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 3, "{body}");
    assert_eq!(errors[0]["type"], "connection_refused", "{body}");
    assert!(!body.to_string().contains(&role.password), "no secret in health");
    assert_eq!(worker.probes_counted("failure"), 3.0);

    // Still probed while in error, and back to active at the first success.
    worker.probe(&app, &uuid).await;
    assert_eq!(status(&app, &alice, &uuid).await, "error");
    relay.reopen().await;
    worker.probe(&app, &uuid).await;
    assert_eq!(status(&app, &alice, &uuid).await, "active");
    assert_eq!(health(&app, &alice, &uuid).await["status"], "degraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_runs_of_the_last_day_count_in_the_connectors_query_count_on_sqlite() {
    step_runs_of_the_last_day_count_in_the_connectors_query_count(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_runs_of_the_last_day_count_in_the_connectors_query_count_on_postgres() {
    step_runs_of_the_last_day_count_in_the_connectors_query_count(Backend::Postgres).await;
}

async fn step_runs_of_the_last_day_count_in_the_connectors_query_count(backend: Backend) {
    let app = app_without_worker(backend).await;
    let alice = User::member("user_alice", ORG);
    let role = PgRole::create().await;
    let relay = Relay::open().await;
    let uuid = relayed_connector(&app, &alice, &role, &relay).await;
    let other = relayed_connector(&app, &alice, &role, &relay).await;
    let project = app.create_project(&alice, "probed").await;

    let now = domain::now();
    let step = |connector: &str, started: Option<chrono::DateTime<chrono::Utc>>| StepRun {
        step_id: IdKind::Step.generate(),
        position: 1,
        name: "extract".to_owned(),
        step_type: "sql".to_owned(),
        config: json!({"connector_uuid": connector, "query": "select 1"}),
        status: if started.is_some() {
            StepRunStatus::Completed
        } else {
            StepRunStatus::Pending
        },
        started_at: started,
        completed_at: started,
        rows_processed: 0,
        bytes_written: 0,
        output_file: None,
        open_upload: None,
        attempts: i32::from(started.is_some()),
        waiting_reason: None,
        error: None,
    };
    let runs = [
        step(&uuid, Some(now - chrono::Duration::minutes(5))),
        step(&uuid, Some(now - chrono::Duration::hours(2))),
        step(&uuid, Some(now - chrono::Duration::hours(30))), // older than a day
        step(&uuid, None),                                    // never started
        step(&other, Some(now)),                              // another connector
    ];
    for (i, run) in runs.into_iter().enumerate() {
        let execution = Execution {
            execution_id: IdKind::Execution.generate(),
            project_uuid: project.clone(),
            org_id: ORG.to_owned(),
            status: ExecutionStatus::Completed,
            trigger: Trigger::Api,
            parameters: Map::new(),
            notify_on_completion: false,
            created_by: "user_alice".to_owned(),
            created_at: now - chrono::Duration::hours(31)
                + chrono::Duration::seconds(i64::try_from(i).expect("i")),
            started_at: run.started_at,
            completed_at: run.completed_at,
            attempt: 1,
            lease_owner: None,
            lease_expires_at: None,
            steps: vec![run],
        };
        app.store
            .create_execution(&execution)
            .await
            .expect("create execution");
    }

    let body = health(&app, &alice, &uuid).await;
    assert_eq!(body["metrics"]["total_queries_24h"], 2, "{body}");
    assert_eq!(body["status"], "unknown", "steps are not checks: {body}");
    let worker = start_worker(&app, backend).await;
    worker.probe(&app, &uuid).await;
    let body = health(&app, &alice, &uuid).await;
    assert_eq!(
        body["metrics"]["total_queries_24h"], 3,
        "two steps and a probe: {body}"
    );
}
