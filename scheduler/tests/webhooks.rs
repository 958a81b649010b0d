//! Webhook events the scheduler's work records, and its sweep: a refresh
//! token the provider refuses records `connector.credentials_expired` once
//! per configuration; the leader enqueues each due delivery once, and
//! again after the grace when its job was lost. On a SQLite store and an
//! embedded queue in a temporary directory, and a real authorization
//! server on 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_scheduler::webhooks::sweep_once;
use ferry_shared::config::{MasterKeys, Secret};
use ferry_shared::connectors::TypeId;
use ferry_shared::domain::webhook::{EventType, RetryConfig, Webhook, WebhookEvent, WebhookSecrets};
use ferry_shared::domain::{self, Connector, ConnectorStatus};
use ferry_shared::ids::IdKind;
use ferry_shared::oauth_refresh::{ClientCredentials, Need, OAuthClients, Outcome, Refresher};
use ferry_shared::queue::{EmbeddedQueue, JobKind, Queue};
use ferry_shared::store::{SqliteStore, Store};
use ferry_shared::vault::Vault;
use ferry_testkit::oauth::AuthServer;
use serde_json::{Map, Value, json};

const ORG: &str = "org_hooks";
const MASTER_KEY: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
    let store = SqliteStore::connect(&url).await.expect("open the store");
    store.migrate().await.expect("migrate the store");
    Arc::new(store)
}

fn vault() -> Arc<Vault> {
    Arc::new(Vault::new(MasterKeys::parse(MASTER_KEY).expect("keys")))
}

async fn webhook(store: &Arc<dyn Store>, vault: &Vault, events: Vec<EventType>) -> Webhook {
    let uuid = IdKind::Webhook.generate();
    let secrets = WebhookSecrets {
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        headers: Default::default(),
    };
    let now = domain::now();
    let webhook = Webhook {
        secrets: vault.seal(&uuid, &secrets.to_map()).expect("seal"),
        uuid,
        org_id: ORG.into(),
        url: "https://hooks.example.com/x".into(),
        events,
        description: None,
        enabled: true,
        retry_config: RetryConfig::default(),
        created_by: "user_admin".into(),
        created_at: now,
        updated_at: now,
    };
    store.create_webhook(&webhook).await.expect("webhook");
    webhook
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_token_records_credentials_expired_once_per_configuration() {
    let dir = tempfile::tempdir().expect("dir");
    let store = sqlite(&dir).await;
    let vault = vault();
    webhook(&store, &vault, vec![EventType::CredentialsExpired]).await;
    let server = AuthServer::start("ferry-client", "ferry-secret").await;
    let uuid = IdKind::Connector.generate();
    let mut secrets = Map::new();
    secrets.insert("access_token".into(), json!("stale-access-token"));
    secrets.insert(
        "refresh_token".into(),
        json!("a-refresh-token-the-server-never-issued"),
    );
    secrets.insert(
        "expires_at".into(),
        json!((Utc::now() + chrono::Duration::seconds(30)).to_rfc3339()),
    );
    let now = domain::now();
    let connector = Connector {
        secrets: vault.seal(&uuid, &secrets).expect("seal"),
        uuid: uuid.clone(),
        org_id: ORG.into(),
        connector_type: "hubspot".into(),
        display_name: "crm".into(),
        config: Map::new(),
        config_version: 1,
        status: ConnectorStatus::Active,
        auth_type: "oauth".into(),
        created_by: "user_admin".into(),
        created_at: now,
        updated_at: now,
        last_tested_at: None,
        last_test_status: None,
        disabled_at: None,
        disabled_by: None,
        disabled_reason: None,
    };
    store.create_connector(&connector).await.expect("connector");
    let clients = OAuthClients::default().with_private_networks(true).with_client(
        TypeId::Hubspot,
        ClientCredentials {
            client_id: "ferry-client".into(),
            client_secret: Secret::new("ferry-secret"),
            token_url: Some(server.token_url()),
        },
    );
    let refresher = Refresher::new(store.clone(), vault.clone(), clients);
    let outcome = refresher
        .refresh(ORG, &uuid, Need::Unchanged(1), Duration::from_secs(5))
        .await
        .expect("refresh");
    assert!(matches!(outcome, Outcome::InvalidGrant(_)), "{outcome:?}");
    // A second refusal of the same configuration records nothing more.
    let again = refresher
        .refresh(ORG, &uuid, Need::Unchanged(1), Duration::from_secs(5))
        .await
        .expect("refresh");
    assert!(matches!(again, Outcome::InvalidGrant(_)), "{again:?}");

    let now = domain::now();
    let due = store
        .take_due_webhook_deliveries(now, now, 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 1, "{due:?}");
    let claim = store
        .claim_webhook_delivery(&due[0].0, now, now + chrono::Duration::seconds(30))
        .await
        .expect("claim")
        .expect("claimed");
    let body: Value = serde_json::from_str(&claim.body).expect("body");
    assert_eq!(body["type"], "connector.credentials_expired");
    assert_eq!(body["data"]["connector_uuid"], uuid.as_str());
    assert_eq!(body["data"]["connector_type"], "hubspot");
    assert!(
        body["data"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid_grant"),
        "{body}"
    );
    assert!(
        !claim.body.contains("a-refresh-token-the-server-never-issued"),
        "no token in the event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_enqueues_a_due_delivery_once_and_again_after_the_grace_when_its_job_was_lost() {
    let dir = tempfile::tempdir().expect("dir");
    let store = sqlite(&dir).await;
    let queue: Arc<dyn Queue> = Arc::new(
        EmbeddedQueue::open(&dir.path().join("queue.db"), Duration::from_secs(30))
            .await
            .expect("queue"),
    );
    webhook(&store, &vault(), vec![EventType::ProjectFailed]).await;
    let event = WebhookEvent::new(ORG, EventType::ProjectFailed, json!({"execution_id": "exec_x"}));
    assert_eq!(store.record_webhook_event(&event).await.expect("record"), 1);

    let grace = Duration::from_millis(500);
    assert_eq!(
        sweep_once(store.as_ref(), queue.as_ref(), grace)
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(
        sweep_once(store.as_ref(), queue.as_ref(), grace)
            .await
            .expect("sweep"),
        0,
        "within the grace"
    );
    let fetched = queue
        .fetch("test", 10, Duration::from_millis(200))
        .await
        .expect("fetch");
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].job.kind, JobKind::DeliverWebhook);
    // The job is lost (acknowledged without a try): after the grace the
    // delivery, still pending, is enqueued again.
    queue.ack(&[fetched[0].receipt.clone()]).await.expect("ack");
    tokio::time::sleep(grace + Duration::from_millis(100)).await;
    assert_eq!(
        sweep_once(store.as_ref(), queue.as_ref(), grace)
            .await
            .expect("sweep"),
        1
    );
    let again = queue
        .fetch("test", 10, Duration::from_millis(200))
        .await
        .expect("fetch");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.payload, fetched[0].job.payload);
}
