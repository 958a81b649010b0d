//! API keys (service accounts): organization admins create, list and
//! revoke them; a key is shown once, stored only as a hash, and
//! authenticates as `svc_<uuid>` of its organization with its role until it
//! is revoked or expires; its last use is recorded at most once a minute;
//! the rate limit counts each key on its own.

use std::sync::Arc;
use std::time::Duration;

use ferry_api::auth::{JwtSettings, Verifier};
use ferry_api::{ApiConfig, AppState, Backends};
use ferry_shared::config::MasterKeys;
use ferry_shared::queue::{EmbeddedQueue, LocalBus, RateLimit};
use ferry_shared::store;
use ferry_shared::vault::Vault;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, MASTER_KEY, Options, Reply, SECRET, TestApp, User, assert_error, reply, spawn_app, spawn_app_on,
    spawn_custom,
};

/// Sends a request authenticated with an API key.
async fn call_with_key(app: &TestApp, key: &str, method: Method, path: &str, body: Option<Value>) -> Reply {
    call_at(&app.client, &app.base, key, method, path, body).await
}

async fn call_at(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let mut request = client.request(method, format!("{base}{path}")).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request.send().await.expect("request")).await
}

async fn get_with_key(app: &TestApp, key: &str, path: &str) -> Reply {
    call_with_key(app, key, Method::GET, path, None).await
}

/// Creates a key as `admin` and returns the 201 body.
async fn create_key(app: &TestApp, admin: &User, name: &str, role: &str) -> Value {
    let created = app
        .post(admin, "/api/api-keys", json!({"name": name, "role": role}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    created.body
}

fn text(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {value}"))
        .to_owned()
}

/// The listed key with this uuid, as `admin` sees it.
async fn listed(app: &TestApp, admin: &User, uuid: &str) -> Value {
    let list = app.get(admin, "/api/api-keys").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    list.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .find(|item| item["uuid"] == uuid)
        .cloned()
        .unwrap_or_else(|| panic!("{uuid} listed in {}", list.text))
}

/// Every byte the SQLite store of `app` holds on disk (database and WAL).
fn store_bytes(app: &TestApp) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["ferry.db", "ferry.db-wal"] {
        if let Ok(mut file) = std::fs::read(app.dir.path().join(name)) {
            bytes.append(&mut file);
        }
    }
    assert!(!bytes.is_empty(), "the store is on disk");
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn a_created_key_is_shown_once_stored_only_as_a_hash_and_never_listed() {
    let app = spawn_app().await;
    let admin = User::admin("user_admin", "org_a");
    let created = create_key(&app, &admin, "nightly export", "member").await;

    let key = text(&created, "key");
    let uuid = text(&created, "uuid");
    let prefix = text(&created, "prefix");
    assert!(key.starts_with("fk_") && key.len() >= 40, "{key}");
    assert!(uuid.starts_with("key_"), "{uuid}");
    assert!(
        key.starts_with(&prefix) && prefix.len() < key.len() / 2,
        "{prefix}"
    );
    assert_eq!(created["name"], "nightly export");
    assert_eq!(created["role"], "member");
    assert_eq!(created["expires_at"], Value::Null);
    assert!(created["created_at"].is_string(), "{created}");
    let again = create_key(&app, &admin, "another", "member").await;
    assert_ne!(again["key"], created["key"], "every key is new");

    let list = app.get(&admin, "/api/api-keys").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert!(!list.text.contains(&key), "{}", list.text);
    let item = listed(&app, &admin, &uuid).await;
    let mut fields: Vec<&str> = item
        .as_object()
        .expect("item")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "created_by",
            "expires_at",
            "last_used_at",
            "name",
            "prefix",
            "revoked_at",
            "role",
            "uuid"
        ]
    );
    assert_eq!(item["prefix"], prefix.as_str());
    assert_eq!(item["created_by"], "user_admin");
    assert_eq!(item["created_at"], created["created_at"]);
    assert_eq!(item["last_used_at"], Value::Null);
    assert_eq!(item["revoked_at"], Value::Null);

    let on_disk = store_bytes(&app);
    assert!(contains(&on_disk, &uuid), "the key's row is on disk");
    assert!(!contains(&on_disk, &key), "the key's text is not stored");
    assert!(
        contains(&on_disk, &ferry_api::auth::api_keys::hash(&key)),
        "its hash is"
    );
}

/// The key flow on one backend: a key acts as `svc_<uuid>` of its
/// organization with its role.
async fn keys_act_as_their_service_account_with_their_role(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let admin = User::admin("user_admin", "org_a");
    let alice = User::member("user_alice", "org_a");
    let olga = User::admin("user_olga", "org_b");
    let ours = app.create_project(&alice, "ours").await;
    let theirs = app.create_project(&olga, "theirs").await;
    let admin_key = create_key(&app, &admin, "automation", "admin").await;
    let member_key = create_key(&app, &admin, "reporting", "member").await;
    let (admin_key, admin_uuid) = (text(&admin_key, "key"), text(&admin_key, "uuid"));
    let (member_key, member_uuid) = (text(&member_key, "key"), text(&member_key, "uuid"));

    // An admin key acts as an organization admin: every project of its
    // organization, none of another's.
    let read = get_with_key(&app, &admin_key, &format!("/api/projects/{ours}")).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    let foreign = get_with_key(&app, &admin_key, &format!("/api/projects/{theirs}")).await;
    assert_error(&foreign, StatusCode::NOT_FOUND, "not_found", None);
    let list = get_with_key(&app, &admin_key, "/api/projects").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let names: Vec<&str> = list.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["ours"], "{}", list.text);
    let keys = get_with_key(&app, &admin_key, "/api/api-keys").await;
    assert_eq!(
        keys.status,
        StatusCode::OK,
        "an admin key manages keys: {}",
        keys.text
    );

    // What a key creates belongs to its service account.
    let made = call_with_key(
        &app,
        &admin_key,
        Method::POST,
        "/api/projects",
        Some(json!({"name": "made by a key"})),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let grants = app
        .get(
            &admin,
            &format!("/api/permissions/resource/project/{}", text(&made.body, "uuid")),
        )
        .await;
    assert_eq!(grants.body["data"][0]["user_id"], format!("svc_{admin_uuid}"));
    assert_eq!(grants.body["data"][0]["permission"], "owner");

    // A member key is a member: no project without a grant, no key
    // management, no admin-only action.
    let hidden = get_with_key(&app, &member_key, &format!("/api/projects/{ours}")).await;
    assert_error(&hidden, StatusCode::NOT_FOUND, "not_found", None);
    let refused = call_with_key(
        &app,
        &member_key,
        Method::POST,
        "/api/api-keys",
        Some(json!({"name": "escalate", "role": "admin"})),
    )
    .await;
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden", None);
    let listing = get_with_key(&app, &member_key, "/api/api-keys").await;
    assert_error(&listing, StatusCode::FORBIDDEN, "forbidden", None);
    let revoking = call_with_key(
        &app,
        &member_key,
        Method::DELETE,
        &format!("/api/api-keys/{admin_uuid}"),
        None,
    )
    .await;
    assert_error(&revoking, StatusCode::FORBIDDEN, "forbidden", None);

    // A grant to the service account works as for any user.
    let shared = app
        .post(
            &alice,
            &format!("/api/permissions/resource/project/{ours}"),
            json!({"user_id": format!("svc_{member_uuid}"), "permission": "viewer"}),
        )
        .await;
    assert_eq!(shared.status, StatusCode::CREATED, "{}", shared.text);
    let granted = get_with_key(&app, &member_key, &format!("/api/projects/{ours}")).await;
    assert_eq!(granted.status, StatusCode::OK, "{}", granted.text);
    assert_eq!(granted.body["permissions"]["role"], "viewer", "{}", granted.text);
}

#[tokio::test]
async fn keys_act_as_their_service_account_with_their_role_on_sqlite() {
    keys_act_as_their_service_account_with_their_role(Backend::Sqlite).await;
}

#[tokio::test]
async fn keys_act_as_their_service_account_with_their_role_on_postgres() {
    keys_act_as_their_service_account_with_their_role(Backend::Postgres).await;
}

/// A second API replica over the same SQLite store as `app`, with its own
/// connection pool, bus and state: nothing in memory is shared with `app`.
async fn second_replica(app: &TestApp) -> String {
    let dir = app.dir.path();
    let store = store::connect(&format!("sqlite://{}/ferry.db", dir.display()))
        .await
        .expect("open the store");
    let replica_dir = tempfile::tempdir().expect("temp dir");
    let queue = EmbeddedQueue::open(&replica_dir.path().join("queue.db"), Duration::from_secs(30))
        .await
        .expect("queue");
    let objects = ferry_shared::objects::ObjectTarget::open(&format!("file://{}/objects", dir.display()))
        .expect("objects");
    let backends = Backends {
        store,
        queue: Arc::new(queue),
        bus: Arc::new(LocalBus::new()),
        vault: Arc::new(Vault::new(MasterKeys::parse(MASTER_KEY).expect("keys"))),
        objects: Arc::new(objects),
    };
    let verifier = Verifier::new(JwtSettings {
        hs256_secret: Some(SECRET.into()),
        ..JwtSettings::default()
    })
    .await
    .expect("verifier");
    let state = AppState::new(backends, Arc::new(verifier), prometheus::Registry::new()).expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let app = ferry_api::router(state, &ApiConfig::default());
    tokio::spawn(async move {
        let _dir = replica_dir;
        ferry_api::serve(listener, app, std::future::pending()).await
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_by_every_replica() {
    let app = spawn_app().await;
    let other = second_replica(&app).await;
    let admin = User::admin("user_admin", "org_a");
    let created = create_key(&app, &admin, "short-lived", "admin").await;
    let (key, uuid) = (text(&created, "key"), text(&created, "uuid"));
    for base in [&app.base, &other] {
        let before = call_at(&app.client, base, &key, Method::GET, "/api/projects", None).await;
        assert_eq!(before.status, StatusCode::OK, "{base}: {}", before.text);
    }

    let revoked = app.delete(&admin, &format!("/api/api-keys/{uuid}")).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    for base in [&other, &app.base] {
        let after = call_at(&app.client, base, &key, Method::GET, "/api/projects", None).await;
        assert_error(&after, StatusCode::UNAUTHORIZED, "unauthorized", None);
        assert!(after.text.contains("revoked"), "{}", after.text);
        assert_eq!(after.headers["www-authenticate"], "Bearer");
    }
    let item = listed(&app, &admin, &uuid).await;
    assert!(item["revoked_at"].is_string(), "{item}");

    // Revoking again keeps the key revoked, at its first time.
    let again = app.delete(&admin, &format!("/api/api-keys/{uuid}")).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT, "{}", again.text);
    assert_eq!(
        listed(&app, &admin, &uuid).await["revoked_at"],
        item["revoked_at"]
    );
}

#[tokio::test]
async fn a_key_is_refused_once_it_expires_and_unknown_or_malformed_keys_never_pass() {
    let app = spawn_app().await;
    let admin = User::admin("user_admin", "org_a");
    let expires_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let created = app
        .post(
            &admin,
            "/api/api-keys",
            json!({"name": "brief", "role": "member", "expires_at": expires_at.to_rfc3339()}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(created.body["expires_at"].is_string(), "{}", created.text);
    let key = text(&created.body, "key");
    let fresh = get_with_key(&app, &key, "/api/projects").await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text);

    tokio::time::sleep(Duration::from_millis(1700)).await;
    let expired = get_with_key(&app, &key, "/api/projects").await;
    assert_error(&expired, StatusCode::UNAUTHORIZED, "unauthorized", None);
    assert!(expired.text.contains("expired"), "{}", expired.text);

    let unknown = ferry_api::auth::api_keys::mint().key;
    let truncated = &key[..key.len() - 1];
    for bad in [unknown.as_str(), truncated, "fk_", "fk_not a key"] {
        let refused = get_with_key(&app, bad, "/api/projects").await;
        assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized", None);
        assert!(!refused.text.contains(&key), "{}", refused.text);
    }
}

#[tokio::test]
async fn members_get_403_on_every_key_operation() {
    let app = spawn_app().await;
    let admin = User::admin("user_admin", "org_a");
    let member = User::member("user_alice", "org_a");
    let uuid = text(&create_key(&app, &admin, "ops", "member").await, "uuid");

    let create = app
        .post(
            &member,
            "/api/api-keys",
            json!({"name": "mine", "role": "member"}),
        )
        .await;
    assert_error(&create, StatusCode::FORBIDDEN, "forbidden", None);
    let list = app.get(&member, "/api/api-keys").await;
    assert_error(&list, StatusCode::FORBIDDEN, "forbidden", None);
    let revoke = app.delete(&member, &format!("/api/api-keys/{uuid}")).await;
    assert_error(&revoke, StatusCode::FORBIDDEN, "forbidden", None);
    assert_eq!(listed(&app, &admin, &uuid).await["revoked_at"], Value::Null);
    let anonymous = reply(
        app.client
            .get(app.url("/api/api-keys"))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized", None);
}

#[tokio::test]
async fn invalid_keys_are_400_naming_the_field_and_other_organizations_keys_are_404() {
    let app = spawn_app().await;
    let admin = User::admin("user_admin", "org_a");
    let olga = User::admin("user_olga", "org_b");
    let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
    let long = "x".repeat(256);
    let cases = [
        (json!({"name": "k", "role": "owner"}), "role"),
        (json!({"name": "k"}), "role"),
        (json!({"name": "k", "role": "ADMIN"}), "role"),
        (json!({"name": "", "role": "member"}), "name"),
        (json!({"name": "   ", "role": "member"}), "name"),
        (json!({"role": "member"}), "name"),
        (json!({"name": long, "role": "member"}), "name"),
        (json!({"name": 7, "role": "member"}), "name"),
        (
            json!({"name": "k", "role": "member", "expires_at": past}),
            "expires_at",
        ),
        (
            json!({"name": "k", "role": "member", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"name": "k", "role": "member", "expires_at": 1_900_000_000}),
            "expires_at",
        ),
    ];
    for (body, field) in cases {
        let refused = app.post(&admin, "/api/api-keys", body.clone()).await;
        assert_error(&refused, StatusCode::BAD_REQUEST, "validation_error", Some(field));
    }
    let none = app.get(&admin, "/api/api-keys").await;
    assert_eq!(none.body["data"], json!([]), "nothing was created: {}", none.text);

    let theirs = create_key(&app, &olga, "theirs", "admin").await;
    let (their_key, their_uuid) = (text(&theirs, "key"), text(&theirs, "uuid"));
    for path in [
        format!("/api/api-keys/{their_uuid}"),
        "/api/api-keys/key_01J00000000000000000000000".to_owned(),
        "/api/api-keys/not-a-key".to_owned(),
    ] {
        let missing = app.delete(&admin, &path).await;
        assert_error(&missing, StatusCode::NOT_FOUND, "not_found", None);
    }
    let still = get_with_key(&app, &their_key, "/api/projects").await;
    assert_eq!(still.status, StatusCode::OK, "{}", still.text);
    let mine = app.get(&admin, "/api/api-keys").await;
    assert_eq!(mine.body["data"], json!([]), "{}", mine.text);
}

#[tokio::test]
async fn last_used_at_is_set_by_a_request_and_written_at_most_once_a_minute() {
    let app = spawn_app().await;
    let admin = User::admin("user_admin", "org_a");
    let created = create_key(&app, &admin, "used", "member").await;
    let (key, uuid) = (text(&created, "key"), text(&created, "uuid"));
    assert_eq!(listed(&app, &admin, &uuid).await["last_used_at"], Value::Null);

    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let used = get_with_key(&app, &key, "/api/projects").await;
    assert_eq!(used.status, StatusCode::OK, "{}", used.text);
    let first = listed(&app, &admin, &uuid).await["last_used_at"].clone();
    let at =
        chrono::DateTime::parse_from_rfc3339(first.as_str().expect("set after a use")).expect("RFC 3339");
    assert!(at >= before && at <= chrono::Utc::now(), "{at}");

    // Within the minute, further requests write nothing.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..3 {
        let again = get_with_key(&app, &key, "/api/projects").await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    }
    assert_eq!(listed(&app, &admin, &uuid).await["last_used_at"], first);
}

#[tokio::test]
async fn the_rate_limit_counts_each_key_on_its_own() {
    let limit = RateLimit {
        per_minute: 1,
        burst: 4,
    };
    let app = spawn_custom(Options {
        worker: false,
        state: Some(Box::new(move |state| state.with_rate_limit(Some(limit)))),
        ..Options::default()
    })
    .await;
    let admin = User::admin("user_admin", "org_a");
    // Two of the admin's five requests.
    let first = text(&create_key(&app, &admin, "first", "member").await, "key");
    let second = text(&create_key(&app, &admin, "second", "member").await, "key");

    for n in 0..5 {
        let allowed = get_with_key(&app, &first, "/api/projects").await;
        assert_eq!(allowed.status, StatusCode::OK, "request {n}: {}", allowed.text);
    }
    let limited = get_with_key(&app, &first, "/api/projects").await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited", None);
    assert!(
        limited.headers.get("retry-after").is_some(),
        "{:?}",
        limited.headers
    );

    // Another key of the same organization and creator has its own budget,
    // and so has the admin who created both.
    for n in 0..5 {
        let allowed = get_with_key(&app, &second, "/api/projects").await;
        assert_eq!(allowed.status, StatusCode::OK, "request {n}: {}", allowed.text);
    }
    let admin_request = app.get(&admin, "/api/projects").await;
    assert_eq!(admin_request.status, StatusCode::OK, "{}", admin_request.text);
}
