//! OAuth tokens refreshed ahead of expiry: the leader's pass and the shared
//! refresher against a real authorization server on 127.0.0.1 (rotating
//! refresh tokens, counting token calls), on a SQLite and a PostgreSQL
//! store (127.0.0.1:5432, a fresh database per test).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use ferry_scheduler::refresh::{RefreshMetrics, RefreshSettings, refresh_once};
use ferry_shared::config::{MasterKeys, Secret};
use ferry_shared::connectors::TypeId;
use ferry_shared::domain::{Connector, ConnectorStatus, TestRecord};
use ferry_shared::ids::IdKind;
use ferry_shared::oauth_refresh::{ClientCredentials, Need, OAuthClients, Outcome, Refresher};
use ferry_shared::store::{Claim, PostgresStore, ProbeTransition, SqliteStore, Store};
use ferry_shared::vault::Vault;
use ferry_testkit::oauth::{AuthServer, base64url, sha256};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const CLIENT_ID: &str = "ferry-client";
const CLIENT_SECRET: &str = "ferry-secret";
const ORG: &str = "org_refresh";
const REDIRECT_ENCODED: &str = "http%3A%2F%2F127.0.0.1%2Fcallback";
/// A test master key (32 bytes, base64).
const MASTER_KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const VERIFIER: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

// ---------------------------------------------------------------- harness

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
    let store = SqliteStore::connect(&url).await.expect("open the store");
    store.migrate().await.expect("migrate the store");
    test(Arc::new(store)).await;
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let database = ferry_testkit::postgres::PgDatabase::create_with(
        "ferry_test",
        "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'",
    );
    let store = PostgresStore::connect(&database.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let pool = store.pool().clone();
    let outcome = tokio::spawn(test(Arc::new(store))).await;
    pool.close().await;
    drop(database);
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// One `#[tokio::test]` per backend for a scenario.
macro_rules! on_both {
    ($scenario:ident, $sqlite:ident, $postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sqlite() {
            on_sqlite($scenario).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $postgres() {
            on_postgres($scenario).await;
        }
    };
}

fn vault() -> Arc<Vault> {
    Arc::new(Vault::new(MasterKeys::parse(MASTER_KEY).expect("keys")))
}

fn clients(token_url: String) -> OAuthClients {
    OAuthClients::default().with_private_networks(true).with_client(
        TypeId::Hubspot,
        ClientCredentials {
            client_id: CLIENT_ID.to_owned(),
            client_secret: Secret::new(CLIENT_SECRET),
            token_url: Some(token_url),
        },
    )
}

fn settings() -> RefreshSettings {
    RefreshSettings {
        jitter: Duration::ZERO,
        ..RefreshSettings::default()
    }
}

/// One HTTP/1.1 request to `url` (http://host:port/path?query): the status,
/// the `Location` header and the body.
async fn http(method: &str, url: &str, body: &str) -> (u16, Option<String>, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(authority).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .expect("status")
        .parse()
        .expect("status");
    let (mut length, mut location) = (0usize, None);
    loop {
        line.clear();
        reader.read_line(&mut line).await.expect("header");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').expect("header");
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().expect("length"),
            "location" => location = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.expect("body");
    (status, location, String::from_utf8(body).expect("utf-8"))
}

/// Tokens from the authorization-code grant with PKCE, as the callback
/// gets them.
async fn authorize(server: &AuthServer) -> Map<String, Value> {
    let challenge = base64url(&sha256(VERIFIER.as_bytes()));
    let url = format!(
        "{}?response_type=code&client_id={CLIENT_ID}&redirect_uri={REDIRECT_ENCODED}&scope=oauth\
         &state=s1&code_challenge={challenge}&code_challenge_method=S256",
        server.auth_url()
    );
    let (status, location, _) = http("GET", &url, "").await;
    assert_eq!(status, 302, "the provider redirects with a code");
    let location = location.expect("Location");
    let code = location
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("code="))
        .expect("code")
        .to_owned();
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={REDIRECT_ENCODED}&code_verifier={VERIFIER}\
         &client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
    );
    let (status, _, body) = http("POST", &server.token_url(), &body).await;
    assert_eq!(status, 200, "the code is exchanged: {body}");
    serde_json::from_str(&body).expect("token response")
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An authorized HubSpot connector whose access token expires at `expires_at`.
async fn connector(
    store: &Arc<dyn Store>,
    vault: &Vault,
    server: &AuthServer,
    expires_at: DateTime<Utc>,
) -> Connector {
    let tokens = authorize(server).await;
    let uuid = IdKind::Connector.generate();
    let mut secrets = Map::new();
    secrets.insert("access_token".into(), tokens["access_token"].clone());
    secrets.insert("refresh_token".into(), tokens["refresh_token"].clone());
    secrets.insert("token_type".into(), json!("bearer"));
    secrets.insert("expires_at".into(), json!(rfc3339(expires_at)));
    let now = Utc::now();
    let connector = Connector {
        secrets: vault.seal(&uuid, &secrets).expect("seal"),
        uuid,
        org_id: ORG.into(),
        connector_type: "hubspot".into(),
        display_name: "CRM".into(),
        config: Map::new(),
        config_version: 1,
        status: ConnectorStatus::Active,
        auth_type: "oauth".into(),
        created_by: "user_alice".into(),
        created_at: now,
        updated_at: now,
        last_tested_at: None,
        last_test_status: None,
        disabled_at: None,
        disabled_by: None,
        disabled_reason: None,
    };
    store.create_connector(&connector).await.expect("create");
    connector
}

async fn stored(store: &Arc<dyn Store>, vault: &Vault, uuid: &str) -> (Connector, Map<String, Value>) {
    let connector = store
        .get_connector(ORG, uuid)
        .await
        .expect("read")
        .expect("stored");
    let secrets = vault
        .open(uuid, &connector.secrets)
        .expect("open")
        .expose_secret()
        .clone();
    (connector, secrets)
}

fn text<'a>(secrets: &'a Map<String, Value>, key: &str) -> &'a str {
    secrets[key].as_str().expect("a string")
}

// ---------------------------------------------------------------- scenarios

async fn refreshes_a_token_that_expires_soon(store: Arc<dyn Store>) {
    let server = AuthServer::start(CLIENT_ID, CLIENT_SECRET).await;
    let vault = vault();
    let soon = Utc::now() + chrono::Duration::seconds(60);
    let created = connector(&store, &vault, &server, soon).await;
    let (_, before) = stored(&store, &vault, &created.uuid).await;
    let calls = server.token_calls();

    let refresher = Refresher::new(store.clone(), vault.clone(), clients(server.token_url()));
    let registry = prometheus::Registry::new();
    let metrics = RefreshMetrics::register(&registry).expect("metrics");
    let pass = refresh_once(&refresher, &settings(), Some(&metrics))
        .await
        .expect("pass");

    assert_eq!(pass.tracked, 1);
    assert_eq!(pass.outcomes.len(), 1, "{:?}", pass.outcomes);
    assert!(
        matches!(pass.outcomes[0].1, Outcome::Refreshed { .. }),
        "{:?}",
        pass.outcomes
    );
    assert_eq!(server.token_calls(), calls + 1, "one token call");
    let (after, secrets) = stored(&store, &vault, &created.uuid).await;
    assert_eq!(after.config_version, 2, "a new version, so pools reconnect");
    assert_ne!(text(&secrets, "access_token"), text(&before, "access_token"));
    assert!(
        server.access_token_is_live(text(&secrets, "access_token")),
        "the new access token works"
    );
    assert!(
        server.refresh_token_is_live(text(&secrets, "refresh_token")),
        "the rotated refresh token is kept"
    );
    assert!(
        !server.refresh_token_is_live(text(&before, "refresh_token")),
        "the old one was spent"
    );
    let expires = ferry_shared::oauth_refresh::expires_at(&secrets).expect("an expiry");
    assert!(
        expires > Utc::now() + chrono::Duration::minutes(50),
        "the provider's hour"
    );
    assert_eq!(
        metrics.refreshes.with_label_values(&["refreshed"]).get(),
        1,
        "ferry_scheduler_token_refreshes_total{{outcome=\"refreshed\"}}"
    );

    let again = refresh_once(&refresher, &settings(), Some(&metrics))
        .await
        .expect("pass");
    assert!(
        again.outcomes.is_empty(),
        "fresh tokens are not refreshed again: {:?}",
        again.outcomes
    );
    assert_eq!(server.token_calls(), calls + 1);
}
on_both!(
    refreshes_a_token_that_expires_soon,
    the_leader_refreshes_a_token_that_expires_soon_and_the_new_tokens_work_on_sqlite,
    the_leader_refreshes_a_token_that_expires_soon_and_the_new_tokens_work_on_postgres
);

async fn leaves_a_token_far_from_expiry(store: Arc<dyn Store>) {
    let server = AuthServer::start(CLIENT_ID, CLIENT_SECRET).await;
    let vault = vault();
    let later = Utc::now() + chrono::Duration::hours(2);
    connector(&store, &vault, &server, later).await;
    let calls = server.token_calls();
    let refresher = Refresher::new(store.clone(), vault.clone(), clients(server.token_url()));
    let pass = refresh_once(&refresher, &RefreshSettings::default(), None)
        .await
        .expect("pass");
    assert_eq!(pass.tracked, 1, "its expiry is recorded");
    assert!(pass.outcomes.is_empty(), "{:?}", pass.outcomes);
    assert_eq!(server.token_calls(), calls, "no token call");
}
on_both!(
    leaves_a_token_far_from_expiry,
    a_connector_far_from_expiry_is_not_refreshed_on_sqlite,
    a_connector_far_from_expiry_is_not_refreshed_on_postgres
);

async fn concurrent_refreshers_spend_the_refresh_token_once(store: Arc<dyn Store>) {
    let server = AuthServer::start(CLIENT_ID, CLIENT_SECRET).await;
    let vault = vault();
    let soon = Utc::now() + chrono::Duration::seconds(30);
    let created = connector(&store, &vault, &server, soon).await;
    let calls = server.token_calls();
    // Refreshers as in as many processes (each its own lease holder and
    // HTTP client): two scheduler passes, and six refreshes on demand (the
    // API's endpoint, a worker after a 401) that wait for the lease.
    let refresher = || Refresher::new(store.clone(), vault.clone(), clients(server.token_url()));
    let (a, b) = (refresher(), refresher());
    let need = Need::ExpiresBefore(Utc::now() + chrono::Duration::minutes(5));
    let wait = Duration::from_secs(20);
    let pacing = settings();
    let on_demand: Vec<_> = (0..6)
        .map(|i| {
            let (refresher, uuid) = (refresher(), created.uuid.clone());
            let need = if i % 2 == 0 { need } else { Need::Unchanged(1) };
            tokio::spawn(async move { refresher.refresh(ORG, &uuid, need, wait).await })
        })
        .collect();
    let (pass_a, pass_b) = tokio::join!(refresh_once(&a, &pacing, None), refresh_once(&b, &pacing, None));
    let mut outcomes: Vec<Outcome> = [pass_a.expect("pass"), pass_b.expect("pass")]
        .into_iter()
        .flat_map(|pass| pass.outcomes.into_iter().map(|(_, outcome)| outcome))
        .collect();
    for task in on_demand {
        outcomes.push(task.await.expect("task").expect("refresh"));
    }
    let refreshed = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Refreshed { .. }))
        .count();
    assert_eq!(refreshed, 1, "one refresh: {outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Refreshed { .. } | Outcome::NotNeeded | Outcome::Busy)),
        "no invalid_grant nor failure: {outcomes:?}"
    );
    assert_eq!(server.token_calls(), calls + 1, "exactly one token call");
    let (after, secrets) = stored(&store, &vault, &created.uuid).await;
    assert_eq!(after.status, ConnectorStatus::Active);
    assert_eq!(after.config_version, 2);
    assert!(server.access_token_is_live(text(&secrets, "access_token")));
    assert!(server.refresh_token_is_live(text(&secrets, "refresh_token")));
}
on_both!(
    concurrent_refreshers_spend_the_refresh_token_once,
    concurrent_refreshers_of_one_connector_make_one_token_call_and_no_invalid_grant_on_sqlite,
    concurrent_refreshers_of_one_connector_make_one_token_call_and_no_invalid_grant_on_postgres
);

async fn invalid_grant_marks_the_connector_error(store: Arc<dyn Store>) {
    let server = AuthServer::start(CLIENT_ID, CLIENT_SECRET).await;
    let vault = vault();
    let soon = Utc::now() + chrono::Duration::seconds(60);
    let created = connector(&store, &vault, &server, soon).await;
    let (_, secrets) = stored(&store, &vault, &created.uuid).await;
    server.revoke(text(&secrets, "refresh_token"));
    let calls = server.token_calls();
    let refresher = Refresher::new(store.clone(), vault.clone(), clients(server.token_url()));
    let registry = prometheus::Registry::new();
    let metrics = RefreshMetrics::register(&registry).expect("metrics");

    let pass = refresh_once(&refresher, &settings(), Some(&metrics))
        .await
        .expect("pass");
    assert!(
        matches!(pass.outcomes.as_slice(), [(_, Outcome::InvalidGrant(_))]),
        "{:?}",
        pass.outcomes
    );
    let (after, _) = stored(&store, &vault, &created.uuid).await;
    assert_eq!(after.status, ConnectorStatus::Error);
    let why = store
        .refresh_failure(&created.uuid)
        .await
        .expect("read")
        .expect("a reason");
    assert!(why.contains("invalid_grant"), "{why}");
    assert!(
        !why.contains(text(&secrets, "refresh_token")),
        "no token in the reason"
    );
    assert_eq!(metrics.refreshes.with_label_values(&["invalid_grant"]).get(), 1);

    let again = refresh_once(&refresher, &settings(), Some(&metrics))
        .await
        .expect("pass");
    assert!(
        again.outcomes.is_empty(),
        "not retried until re-authorized: {:?}",
        again.outcomes
    );
    assert_eq!(server.token_calls(), calls + 1);

    // Its access token still works until it expires, so a probe may pass:
    // the connector stays in `error` until it is authorized again.
    let probe = TestRecord {
        connector_uuid: created.uuid.clone(),
        tested_at: Utc::now(),
        success: true,
        latency_ms: 3,
        error_type: None,
        error_message: None,
    };
    assert_eq!(
        store.record_probe(&probe, 3).await.expect("probe"),
        ProbeTransition::Unchanged
    );
    let (probed, _) = stored(&store, &vault, &created.uuid).await;
    assert_eq!(probed.status, ConnectorStatus::Error);
}
on_both!(
    invalid_grant_marks_the_connector_error,
    invalid_grant_marks_the_connector_error_and_it_is_not_retried_on_sqlite,
    invalid_grant_marks_the_connector_error_and_it_is_not_retried_on_postgres
);

async fn transient_failures_back_off(store: Arc<dyn Store>) {
    let server = AuthServer::start(CLIENT_ID, CLIENT_SECRET).await;
    let vault = vault();
    let soon = Utc::now() + chrono::Duration::seconds(60);
    let created = connector(&store, &vault, &server, soon).await;
    // A token endpoint nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let refresher = Refresher::new(
        store.clone(),
        vault.clone(),
        clients(format!("http://{closed}/token")),
    );
    let pass = refresh_once(&refresher, &settings(), None).await.expect("pass");
    assert!(
        matches!(pass.outcomes.as_slice(), [(_, Outcome::Failed(_))]),
        "{:?}",
        pass.outcomes
    );
    let (after, _) = stored(&store, &vault, &created.uuid).await;
    assert_eq!(
        after.status,
        ConnectorStatus::Active,
        "a transient failure is not an error"
    );
    assert!(
        store
            .refresh_failure(&created.uuid)
            .await
            .expect("read")
            .is_some()
    );

    let again = refresh_once(&refresher, &settings(), None).await.expect("pass");
    assert!(
        again.outcomes.is_empty(),
        "retried only after the backoff: {:?}",
        again.outcomes
    );

    // Past the backoff, the next pass (here with a reachable endpoint) retries.
    let retry = RefreshSettings {
        backoff: Duration::ZERO,
        ..settings()
    };
    let working = Refresher::new(store.clone(), vault.clone(), clients(server.token_url()));
    store
        .record_refresh_failure(&created.uuid, "test", Some(Utc::now()))
        .await
        .expect("retry now");
    let pass = refresh_once(&working, &retry, None).await.expect("pass");
    assert!(
        matches!(pass.outcomes.as_slice(), [(_, Outcome::Refreshed { .. })]),
        "{:?}",
        pass.outcomes
    );
}
on_both!(
    transient_failures_back_off,
    a_transient_failure_is_retried_on_a_later_pass_after_a_backoff_on_sqlite,
    a_transient_failure_is_retried_on_a_later_pass_after_a_backoff_on_postgres
);

async fn a_held_lease_keeps_others_from_refreshing(store: Arc<dyn Store>) {
    let server = AuthServer::start(CLIENT_ID, CLIENT_SECRET).await;
    let vault = vault();
    let soon = Utc::now() + chrono::Duration::seconds(60);
    let created = connector(&store, &vault, &server, soon).await;
    let calls = server.token_calls();
    let now = Utc::now();
    let held = store
        .acquire_refresh_lease(claim(&created.uuid, "another-process", now, 60))
        .await
        .expect("lease");
    assert!(held, "a free lease is taken");
    assert!(
        !store
            .acquire_refresh_lease(claim(&created.uuid, "a-third-process", now, 60))
            .await
            .expect("lease"),
        "a held lease is not taken by someone else"
    );

    let refresher = Refresher::new(store.clone(), vault.clone(), clients(server.token_url()));
    let pass = refresh_once(&refresher, &settings(), None).await.expect("pass");
    assert!(
        matches!(pass.outcomes.as_slice(), [(_, Outcome::Busy)]),
        "{:?}",
        pass.outcomes
    );
    let on_demand = refresher
        .refresh(ORG, &created.uuid, Need::Unchanged(1), Duration::from_millis(300))
        .await
        .expect("refresh");
    assert_eq!(on_demand, Outcome::Busy, "the wait is bounded");
    assert_eq!(
        server.token_calls(),
        calls,
        "no token call while another holds the lease"
    );

    store
        .release_refresh_lease(&created.uuid, "another-process")
        .await
        .expect("release");
    let pass = refresh_once(&refresher, &settings(), None).await.expect("pass");
    assert!(
        matches!(pass.outcomes.as_slice(), [(_, Outcome::Refreshed { .. })]),
        "{:?}",
        pass.outcomes
    );

    // An expired lease (its holder died) is taken over.
    let past = Utc::now() - chrono::Duration::seconds(1);
    store
        .acquire_refresh_lease(claim(
            &created.uuid,
            "a-dead-process",
            past - chrono::Duration::seconds(60),
            60,
        ))
        .await
        .expect("lease");
    assert!(
        store
            .acquire_refresh_lease(claim(&created.uuid, "a-live-process", Utc::now(), 60))
            .await
            .expect("lease"),
        "an expired lease is taken over"
    );
}
on_both!(
    a_held_lease_keeps_others_from_refreshing,
    a_refresh_lease_held_elsewhere_keeps_every_other_refresher_from_the_token_endpoint_on_sqlite,
    a_refresh_lease_held_elsewhere_keeps_every_other_refresher_from_the_token_endpoint_on_postgres
);

async fn the_leaders_loop_refreshes(store: Arc<dyn Store>) {
    use ferry_scheduler::refresh::TokenRefresh;
    use ferry_scheduler::{LeaderElection, SchedulerContext};
    use ferry_shared::queue::EmbeddedQueue;

    let server = AuthServer::start(CLIENT_ID, CLIENT_SECRET).await;
    let vault = vault();
    let soon = Utc::now() + chrono::Duration::seconds(90);
    let created = connector(&store, &vault, &server, soon).await;
    let calls = server.token_calls();
    let dir = tempfile::tempdir().expect("dir");
    let queue = EmbeddedQueue::open(&dir.path().join("queue.db"), Duration::from_secs(30))
        .await
        .expect("queue");
    let registry = prometheus::Registry::new();
    let context = SchedulerContext {
        token_refresh: Some(TokenRefresh {
            refresher: Refresher::new(store.clone(), vault.clone(), clients(server.token_url())),
            settings: RefreshSettings {
                interval: Duration::from_millis(100),
                ..RefreshSettings::default()
            },
        }),
        ..SchedulerContext::new(
            store.clone(),
            registry.clone(),
            Arc::new(queue),
            LeaderElection::single_process(),
        )
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(ferry_scheduler::run_with(context, async {
        let _ = stopped.await;
    }));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while server.token_calls() == calls && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more passes: the fresh token is not refreshed again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = stop.send(());
    scheduler.await.expect("join").expect("the scheduler ran");

    assert_eq!(
        server.token_calls(),
        calls + 1,
        "the leader refreshed the token once"
    );
    let (after, secrets) = stored(&store, &vault, &created.uuid).await;
    assert_eq!(after.config_version, 2);
    assert!(server.access_token_is_live(text(&secrets, "access_token")));
    let exposed = registry
        .gather()
        .into_iter()
        .find(|family| family.name() == "ferry_scheduler_token_refreshes_total")
        .expect("the refresh counter is registered");
    let refreshed: f64 = exposed
        .get_metric()
        .iter()
        .filter(|m| m.get_label().iter().any(|l| l.value() == "refreshed"))
        .map(|m| m.get_counter().get_value())
        .sum();
    assert_eq!(refreshed, 1.0);
}
on_both!(
    the_leaders_loop_refreshes,
    the_scheduler_leader_refreshes_a_token_that_expires_within_the_margin_in_its_loop_on_sqlite,
    the_scheduler_leader_refreshes_a_token_that_expires_within_the_margin_in_its_loop_on_postgres
);

/// A refresh-lease claim made at `now` for `seconds`.
fn claim<'a>(connector_uuid: &'a str, holder: &'a str, now: DateTime<Utc>, seconds: i64) -> Claim<'a> {
    Claim {
        connector_uuid,
        holder,
        now,
        until: now + chrono::Duration::seconds(seconds),
    }
}
