//! The API as its tests drive it: `spawn_app()` starts the API on port 0
//! against a fresh store (SQLite in a temporary directory, or a fresh
//! PostgreSQL database) with an in-process worker, and gives back a
//! client that mints tokens. [`Backend::Distributed`] runs them on the
//! backends of a distributed deployment instead: a fresh PostgreSQL
//! database, and the job queue and event bus on the shared Redis under a
//! key prefix of the app's own.

use std::sync::Arc;

use ferry_api::auth::{JwtSettings, TokenClaims, Verifier, mint_hs256};
use ferry_api::{ApiConfig, AppState, Backends};
use ferry_shared::config::MasterKeys;
use ferry_shared::domain::OrgRole;
use ferry_shared::queue::{Bus, EmbeddedQueue, LocalBus, Queue, RedisBus, RedisQueue};
use ferry_shared::store::{self, Store};
use ferry_shared::vault::Vault;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub const SECRET: &str = "test-secret-that-is-long-enough-for-hs256";
pub const MASTER_KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Which metadata backend a test app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL, and Redis for the queue and the bus.
    Distributed,
}

/// A Redis key prefix whose keys are deleted when it is dropped.
struct RedisKeys(String);

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        // Dropped inside the test's runtime, which cannot block: a thread
        // of its own runs the cleanup.
        let _ = std::thread::spawn(move || {
            crate::block_on(crate::redis::delete_keys(crate::redis::URL, &[pattern]));
        })
        .join();
    }
}

/// A running API and what it needs to be cleaned up.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub dir: tempfile::TempDir,
    /// What a worker started later with [`TestApp::start_worker`] uses.
    worker: WorkerParts,
    _pg_database: Option<crate::postgres::PgDatabase>,
    _redis_keys: Option<RedisKeys>,
}

/// What an in-process worker shares with the API.
#[derive(Clone)]
struct WorkerParts {
    backends: Backends,
    registry: prometheus::Registry,
    sqlite_dir: std::path::PathBuf,
}

impl WorkerParts {
    fn spawn(&self) {
        self.spawn_with_oauth(Default::default());
    }

    fn spawn_with_oauth(&self, oauth: ferry_shared::oauth_refresh::OAuthClients) {
        let worker = ferry_worker::WorkerContext {
            backends: self.backends.clone(),
            lease: std::time::Duration::from_secs(30),
            registry: self.registry.clone(),
            policy: ferry_worker::connectors::NetworkPolicy {
                allow_private_networks: true,
                sqlite_dir: self.sqlite_dir.clone(),
                trusted_roots: Default::default(),
            },
            concurrency: 4,
            retry: ferry_worker::jobs::execute_project::StepRetry::default(),
            transform: ferry_worker::transform::TransformOptions::default(),
            shutdown_grace: None,
            oauth,
            webhook_timeout: std::time::Duration::from_secs(5),
        };
        tokio::spawn(ferry_worker::run_with(worker, std::future::pending()));
    }
}

/// How [`spawn_custom`] starts an app.
pub struct Options {
    pub backend: Backend,
    pub config: ApiConfig,
    /// A PostgreSQL-backed app then talks to its database through this address.
    pub proxy: Option<std::net::SocketAddr>,
    /// Start an in-process worker with the API (default true).
    pub worker: bool,
    /// Adjusts the API's state (limits, timeouts) before it serves.
    pub state: Option<Box<dyn FnOnce(AppState) -> AppState + Send>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Sqlite,
            config: ApiConfig::default(),
            proxy: None,
            worker: true,
            state: None,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Sqlite).await
}

pub async fn spawn_app_on(backend: Backend) -> TestApp {
    spawn_with(backend, ApiConfig::default(), None).await
}

/// Starts the API. With `proxy`, a PostgreSQL-backed app is migrated
/// directly but then talks to its database only through that address.
pub async fn spawn_with(backend: Backend, config: ApiConfig, proxy: Option<std::net::SocketAddr>) -> TestApp {
    spawn_custom(Options {
        backend,
        config,
        proxy,
        ..Options::default()
    })
    .await
}

/// Starts the API as `options` say.
pub async fn spawn_custom(options: Options) -> TestApp {
    let Options {
        backend,
        config,
        proxy,
        worker: with_worker,
        state: adjust,
    } = options;
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, pg_database) = match backend {
        Backend::Sqlite => (format!("sqlite://{}/ferry.db", dir.path().display()), None),
        Backend::Postgres | Backend::Distributed => {
            let database = crate::postgres::PgDatabase::create("ferry_api_test");
            (database.url(), Some(database))
        }
    };
    let migrator = store::connect(&url).await.expect("open store");
    migrator.migrate().await.expect("migrate");
    let store = match (proxy, &pg_database) {
        (Some(proxy), Some(database)) => {
            store::connect(&format!("postgres://postgres@{proxy}/{}", database.name))
                .await
                .expect("open store through proxy")
        }
        _ => migrator,
    };
    let lease = std::time::Duration::from_secs(30);
    let (queue, bus, redis_keys): (Arc<dyn Queue>, Arc<dyn Bus>, _) = if backend == Backend::Distributed {
        let prefix = crate::redis::unique_prefix("ferry-app");
        let url = format!("{}/0", crate::redis::URL);
        (
            Arc::new(
                RedisQueue::connect(&url, &prefix, lease)
                    .await
                    .expect("Redis queue"),
            ),
            Arc::new(RedisBus::connect(&url, &prefix).await.expect("Redis bus")),
            Some(RedisKeys(prefix)),
        )
    } else {
        (
            Arc::new(
                EmbeddedQueue::open(&dir.path().join("queue.db"), lease)
                    .await
                    .expect("queue"),
            ),
            Arc::new(LocalBus::new()),
            None,
        )
    };
    let vault = Arc::new(Vault::new(MasterKeys::parse(MASTER_KEY).expect("keys")));
    let registry = prometheus::Registry::new();
    let objects = Arc::new(
        ferry_shared::objects::ObjectTarget::open(&format!("file://{}/objects", dir.path().display()))
            .expect("objects"),
    );
    let backends = Backends {
        store: store.clone(),
        queue,
        bus,
        vault,
        objects,
    };
    let worker = WorkerParts {
        backends: backends.clone(),
        registry: registry.clone(),
        sqlite_dir: dir.path().join("sqlite"),
    };
    if with_worker {
        worker.spawn();
    }
    let verifier = Verifier::new(JwtSettings {
        hs256_secret: Some(SECRET.into()),
        ..JwtSettings::default()
    })
    .await
    .expect("verifier");
    let mut state = AppState::new(backends, Arc::new(verifier), registry).expect("state");
    if let Some(adjust) = adjust {
        state = adjust(state);
    }
    let app = ferry_api::router(state, &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(ferry_api::serve(listener, app, std::future::pending()));
    TestApp {
        base: format!("http://{address}"),
        client: reqwest::Client::new(),
        store,
        dir,
        worker,
        _pg_database: pg_database,
        _redis_keys: redis_keys,
    }
}

/// A user of the app.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub org: String,
    pub role: OrgRole,
}

impl User {
    pub fn member(id: &str, org: &str) -> User {
        User {
            id: id.into(),
            org: org.into(),
            role: OrgRole::Member,
        }
    }

    pub fn admin(id: &str, org: &str) -> User {
        User {
            id: id.into(),
            org: org.into(),
            role: OrgRole::Admin,
        }
    }

    pub fn token(&self) -> String {
        mint_hs256(
            SECRET,
            &TokenClaims {
                sub: self.id.clone(),
                org_id: self.org.clone(),
                org_role: self.role,
                email: None,
                exp: chrono::Utc::now().timestamp() + 3600,
                iss: None,
                aud: None,
            },
        )
        .expect("mint token")
    }
}

/// A response with its status, headers and JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestApp {
    /// Starts an in-process worker (for apps spawned without one).
    pub fn start_worker(&self) {
        self.worker.spawn();
    }

    /// Starts an in-process worker that refreshes OAuth connectors' tokens
    /// with `oauth`'s clients when a provider answers 401.
    pub fn start_worker_with_oauth(&self, oauth: ferry_shared::oauth_refresh::OAuthClients) {
        self.worker.spawn_with_oauth(oauth);
    }

    /// The queue the API enqueues on and the app's worker takes jobs from.
    pub fn queue(&self) -> Arc<dyn Queue> {
        self.worker.backends.queue.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request as `user` with an optional JSON body.
    pub async fn call(&self, user: &User, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(user.token());
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.expect("request")).await
    }

    pub async fn get(&self, user: &User, path: &str) -> Reply {
        self.call(user, Method::GET, path, None).await
    }

    pub async fn post(&self, user: &User, path: &str, body: Value) -> Reply {
        self.call(user, Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, user: &User, path: &str, body: Value) -> Reply {
        self.call(user, Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, user: &User, path: &str) -> Reply {
        self.call(user, Method::DELETE, path, None).await
    }

    /// Creates a project and returns its uuid.
    pub async fn create_project(&self, user: &User, name: &str) -> String {
        let reply = self
            .post(user, "/api/projects", serde_json::json!({"name": name}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        reply.body["uuid"].as_str().expect("uuid").to_owned()
    }
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

/// Asserts the seeds' error shape with this code and field.
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.body["error"], code, "{}", reply.text);
    assert!(
        reply.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        reply.text
    );
    if let Some(field) = field {
        assert_eq!(reply.body["field"], field, "{}", reply.text);
    }
}
