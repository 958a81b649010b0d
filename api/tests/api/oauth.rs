//! OAuth connectors end to end against a real authorization server
//! (`ferry_testkit::oauth::AuthServer`): authorize, the provider's consent
//! (the test follows the redirects as a browser would), the callback, and
//! the manual refresh. Ferry's public URL is `http://ferry.test`; the
//! "browser" delivers what is addressed there to the test app.

use std::time::Duration;

use ferry_api::routes::oauth::{OAuthClient, OAuthSettings};
use ferry_shared::config::{MasterKeys, Secret};
use ferry_shared::connectors::TypeId;
use ferry_shared::store::Claim;
use ferry_shared::vault::Vault;
use ferry_testkit::oauth::AuthServer;
use reqwest::{StatusCode, Url};
use serde_json::json;

use crate::helpers::*;
use ferry_testkit::app::reply as read_reply;

const PUBLIC: &str = "http://ferry.test";
const APP: &str = "http://app.ferry.test/connectors";
const CLIENT_ID: &str = "ferry-client";
const CLIENT_SECRET: &str = "ferry-client-secret";
const ALLOWED_REDIRECT: &str = "https://app.ferry.test/oauth/return";

/// An app whose hubspot (and salesforce) providers point at a test server.
struct Flow {
    app: TestApp,
    server: AuthServer,
    browser: reqwest::Client,
    user: User,
}

fn client_of(server: &AuthServer, secret: &str) -> OAuthClient {
    OAuthClient {
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(Secret::new(secret)),
        auth_url: Some(server.auth_url()),
        token_url: Some(server.token_url()),
        scopes: None,
    }
}

async fn flow_with(
    backend: Backend,
    adjust: impl FnOnce(OAuthSettings, &AuthServer) -> OAuthSettings,
) -> Flow {
    let server = AuthServer::start(CLIENT_ID, CLIENT_SECRET).await;
    let settings = OAuthSettings::new(Url::parse(PUBLIC).expect("url"))
        .with_app_url(Url::parse(APP).expect("url"))
        .with_redirect_uris(vec![ALLOWED_REDIRECT.to_owned()])
        .with_client(TypeId::Hubspot, client_of(&server, CLIENT_SECRET))
        .with_client(TypeId::Salesforce, client_of(&server, CLIENT_SECRET));
    let settings = adjust(settings, &server);
    let app = spawn_custom(Options {
        backend,
        worker: false,
        state: Some(Box::new(move |state| state.with_oauth(settings))),
        ..Options::default()
    })
    .await;
    Flow {
        app,
        server,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        user: User::member("user_oauth", "org_oauth"),
    }
}

async fn flow() -> Flow {
    flow_with(Backend::Sqlite, |settings, _| settings).await
}

/// A response's `Location`, parsed.
fn location(response: &reqwest::Response) -> Url {
    let text = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no Location in a {} response", response.status()));
    Url::parse(text).expect("Location is a URL")
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

impl Flow {
    /// GET authorize as the user with `query`; the raw response.
    async fn authorize(&self, provider: &str, query: &[(&str, &str)]) -> reqwest::Response {
        self.browser
            .get(self.app.url(&format!("/api/oauth/{provider}/authorize")))
            .query(query)
            .bearer_auth(self.user.token())
            .send()
            .await
            .expect("authorize")
    }

    /// Authorize (302 to the provider), then the provider's consent page
    /// (302 to the callback): returns the callback URL the browser is sent
    /// to, addressed to Ferry's public URL.
    async fn consent(&self, provider: &str, caller_state: &str) -> Url {
        let response = self
            .authorize(provider, &[("state", caller_state), ("display_name", "CRM")])
            .await;
        assert_eq!(response.status(), StatusCode::FOUND, "authorize redirects");
        let to_provider = location(&response);
        let response = self.browser.get(to_provider).send().await.expect("provider");
        assert_eq!(
            response.status(),
            StatusCode::FOUND,
            "the provider redirects back"
        );
        location(&response)
    }

    /// Delivers a URL addressed to Ferry's public URL to the test app, as a
    /// browser would (no bearer token); returns where Ferry sends it next.
    async fn deliver(&self, callback: &Url) -> Url {
        assert!(callback.as_str().starts_with(PUBLIC), "{callback}");
        let path_and_query = &callback.as_str()[PUBLIC.len()..];
        let response = self
            .browser
            .get(self.app.url(path_and_query))
            .send()
            .await
            .expect("callback");
        assert_eq!(response.status(), StatusCode::FOUND, "the callback redirects");
        location(&response)
    }

    /// The connector's secrets, opened with the test app's master key.
    async fn stored_secrets(&self, uuid: &str) -> serde_json::Map<String, serde_json::Value> {
        let stored = self
            .app
            .store
            .get_connector("org_oauth", uuid)
            .await
            .expect("read")
            .expect("stored");
        let vault = Vault::new(MasterKeys::parse(MASTER_KEY).expect("keys"));
        vault
            .open(uuid, &stored.secrets)
            .expect("open")
            .expose_secret()
            .clone()
    }

    /// The status of the provider's resource endpoint for `access_token`.
    async fn resource(&self, access_token: &str) -> StatusCode {
        self.browser
            .get(self.server.resource_url())
            .bearer_auth(access_token)
            .send()
            .await
            .expect("resource")
            .status()
    }

    /// The whole flow for hubspot: the uuid of the created connector.
    async fn connect(&self, caller_state: &str) -> String {
        let callback = self.consent("hubspot", caller_state).await;
        let end = self.deliver(&callback).await;
        assert_eq!(param(&end, "status").as_deref(), Some("success"), "{end}");
        param(&end, "uuid").expect("uuid")
    }
}

/// Asserts the callback ended at FERRY_APP_URL with `error` and the
/// caller's state (when given), and returns the message.
fn assert_failed(end: &Url, error: &str, caller_state: Option<&str>) -> String {
    assert!(end.as_str().starts_with(APP), "{end}");
    assert_eq!(param(end, "error").as_deref(), Some(error), "{end}");
    assert_eq!(param(end, "state").as_deref(), caller_state, "{end}");
    assert_eq!(param(end, "uuid"), None, "{end}");
    let message = param(end, "message").expect("message");
    assert!(!message.is_empty());
    message
}

async fn connector_count(flow: &Flow) -> usize {
    let reply = flow
        .app
        .get(&flow.user, "/api/connectors?include_available=false")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["total_active"].as_u64().expect("total") as usize
}

async fn full_flow_creates_a_connector_with_hidden_credentials(backend: Backend) {
    let flow = flow_with(backend, |settings, _| settings).await;
    let response = flow
        .authorize("hubspot", &[("state", "csrf-123"), ("display_name", "Our CRM")])
        .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let to_provider = location(&response);
    assert!(
        to_provider.as_str().starts_with(&flow.server.auth_url()),
        "{to_provider}"
    );
    assert_eq!(param(&to_provider, "client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(param(&to_provider, "response_type").as_deref(), Some("code"));
    assert_eq!(
        param(&to_provider, "redirect_uri").as_deref(),
        Some("http://ferry.test/api/oauth/hubspot/callback")
    );
    assert_eq!(
        param(&to_provider, "scope").as_deref(),
        Some("oauth crm.objects.contacts.read crm.objects.companies.read crm.objects.deals.read"),
        "the vendor's default scopes"
    );
    assert_eq!(
        param(&to_provider, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(param(&to_provider, "code_challenge").is_some_and(|c| c.len() == 43));
    let ferry_state = param(&to_provider, "state").expect("state");
    assert_ne!(ferry_state, "csrf-123", "the provider gets Ferry's own state");
    assert!(ferry_state.len() >= 40, "{ferry_state}");

    let consent = flow.browser.get(to_provider).send().await.expect("provider");
    let callback = location(&consent);
    let end = flow.deliver(&callback).await;
    assert!(end.as_str().starts_with(APP), "{end}");
    assert_eq!(param(&end, "status").as_deref(), Some("success"));
    assert_eq!(param(&end, "state").as_deref(), Some("csrf-123"));
    let uuid = param(&end, "uuid").expect("uuid");
    assert_eq!(flow.server.token_calls(), 1);
    let exchange = &flow.server.token_requests()[0];
    assert_eq!(exchange["grant_type"], "authorization_code");
    assert_eq!(
        exchange["redirect_uri"],
        "http://ferry.test/api/oauth/hubspot/callback"
    );

    let reply = flow.app.get(&flow.user, &format!("/api/connectors/{uuid}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["type"], "hubspot");
    assert_eq!(reply.body["display_name"], "Our CRM");
    assert_eq!(reply.body["auth_type"], "oauth");
    assert_eq!(reply.body["status"], "active");
    assert_eq!(reply.body["created_by"], "user_oauth");
    assert_eq!(reply.body["permissions"]["can_delete"], true, "the user owns it");
    for token in flow.server.issued_tokens() {
        assert!(!reply.text.contains(&token), "a token in GET: {}", reply.text);
    }
    for field in ["access_token", "refresh_token", "expires_at"] {
        assert!(!reply.text.contains(field), "{field} in GET: {}", reply.text);
    }

    let stored = flow
        .app
        .store
        .get_connector("org_oauth", &uuid)
        .await
        .expect("read")
        .expect("stored");
    let text = format!(
        "{:?} {}",
        stored.secrets.ciphertext,
        String::from_utf8_lossy(&stored.secrets.ciphertext)
    );
    for token in flow.server.issued_tokens() {
        assert!(!text.contains(&token), "tokens are stored sealed");
    }
    let secrets = flow.stored_secrets(&uuid).await;
    let access = secrets["access_token"].as_str().expect("access token");
    assert!(flow.server.access_token_is_live(access));
    assert!(
        flow.server
            .refresh_token_is_live(secrets["refresh_token"].as_str().expect("refresh token"))
    );
    let expires_at = secrets["expires_at"].as_str().expect("expiry");
    let expires_at = chrono::DateTime::parse_from_rfc3339(expires_at).expect("RFC 3339");
    let left = expires_at.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((3500..=3600).contains(&left), "expires in an hour: {left} s");
    assert_eq!(
        flow.resource(access).await,
        StatusCode::OK,
        "the stored token works"
    );
}

#[tokio::test]
async fn the_full_flow_creates_a_connector_owned_by_the_user_with_its_tokens_hidden_on_sqlite() {
    full_flow_creates_a_connector_with_hidden_credentials(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_full_flow_creates_a_connector_owned_by_the_user_with_its_tokens_hidden_on_postgres() {
    full_flow_creates_a_connector_with_hidden_credentials(Backend::Postgres).await;
}

#[tokio::test]
async fn a_code_delivered_with_another_authorizations_state_fails_the_pkce_check() {
    let flow = flow().await;
    let first = flow.consent("hubspot", "first").await;
    let second = flow.consent("hubspot", "second").await;
    // An attacker's code injected into the victim's callback: the code of
    // the first authorization with the state (so the verifier) of the second.
    let mut injected = second.clone();
    injected
        .query_pairs_mut()
        .clear()
        .append_pair("code", &param(&first, "code").expect("code"))
        .append_pair("state", &param(&second, "state").expect("state"));
    let end = flow.deliver(&injected).await;
    let message = assert_failed(&end, "token_exchange_failed", Some("second"));
    assert!(message.contains("invalid_grant"), "{message}");
    assert!(message.contains("PKCE"), "{message}");
    assert_eq!(flow.server.token_calls(), 1);
    assert_eq!(connector_count(&flow).await, 0);
}

#[tokio::test]
async fn a_replayed_state_is_refused_without_a_token_request() {
    let flow = flow().await;
    let callback = flow.consent("hubspot", "once").await;
    let end = flow.deliver(&callback).await;
    assert_eq!(param(&end, "status").as_deref(), Some("success"));
    assert_eq!(flow.server.token_calls(), 1);

    let again = flow.deliver(&callback).await;
    assert_failed(&again, "invalid_state", None);
    assert_eq!(flow.server.token_calls(), 1, "no token request for a spent state");
    assert_eq!(connector_count(&flow).await, 1);
}

#[tokio::test]
async fn an_unknown_or_missing_state_is_refused_without_a_token_request() {
    let flow = flow().await;
    let forged = Url::parse(&format!(
        "{PUBLIC}/api/oauth/hubspot/callback?code=abc&state=forged"
    ))
    .expect("url");
    assert_failed(&flow.deliver(&forged).await, "invalid_state", None);
    let bare = Url::parse(&format!("{PUBLIC}/api/oauth/hubspot/callback?code=abc")).expect("url");
    assert_failed(&flow.deliver(&bare).await, "invalid_state", None);
    assert_eq!(flow.server.token_calls(), 0);
}

#[tokio::test]
async fn an_expired_state_is_refused_without_a_token_request() {
    let flow = flow_with(Backend::Sqlite, |settings, _| {
        settings.with_state_ttl(Duration::from_secs(1))
    })
    .await;
    let callback = flow.consent("hubspot", "slow").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let end = flow.deliver(&callback).await;
    assert_failed(&end, "expired_state", Some("slow"));
    assert_eq!(flow.server.token_calls(), 0);
    let again = flow.deliver(&callback).await;
    assert_failed(&again, "invalid_state", None);
    assert_eq!(connector_count(&flow).await, 0);
}

#[tokio::test]
async fn a_state_started_for_another_provider_is_refused_without_a_token_request() {
    let flow = flow().await;
    let callback = flow.consent("hubspot", "mixed").await;
    let moved = Url::parse(&callback.as_str().replace("/hubspot/", "/salesforce/")).expect("url");
    let end = flow.deliver(&moved).await;
    assert_failed(&end, "invalid_state", Some("mixed"));
    assert_eq!(flow.server.token_calls(), 0);
}

#[tokio::test]
async fn a_denied_consent_redirects_with_the_providers_error_and_creates_nothing() {
    let flow = flow().await;
    flow.server.deny_next_authorization();
    let callback = flow.consent("hubspot", "deny-me").await;
    assert_eq!(param(&callback, "error").as_deref(), Some("access_denied"));
    let end = flow.deliver(&callback).await;
    let message = assert_failed(&end, "authorization_failed", Some("deny-me"));
    assert!(message.contains("access_denied"), "{message}");
    assert_eq!(flow.server.token_calls(), 0);
    assert_eq!(connector_count(&flow).await, 0);
}

#[tokio::test]
async fn a_refused_code_exchange_redirects_with_token_exchange_failed() {
    let flow = flow_with(Backend::Sqlite, |settings, server| {
        settings.with_client(TypeId::Hubspot, client_of(server, "not-the-secret"))
    })
    .await;
    let callback = flow.consent("hubspot", "bad-client").await;
    let end = flow.deliver(&callback).await;
    let message = assert_failed(&end, "token_exchange_failed", Some("bad-client"));
    assert!(message.contains("invalid_client"), "{message}");
    assert!(!message.contains("not-the-secret"), "{message}");
    assert_eq!(flow.server.token_calls(), 1);
    assert_eq!(connector_count(&flow).await, 0);
}

#[tokio::test]
async fn a_token_endpoint_on_a_private_address_is_not_called_when_private_networks_are_not_allowed() {
    let flow = flow_with(Backend::Sqlite, |settings, _| {
        settings.with_private_networks(false)
    })
    .await;
    let callback = flow.consent("hubspot", "private").await;
    let end = flow.deliver(&callback).await;
    let message = assert_failed(&end, "token_exchange_failed", Some("private"));
    assert!(message.contains("private"), "{message}");
    assert_eq!(flow.server.token_calls(), 0);

    // A name that resolves to a loopback address is refused as well.
    let flow = flow_with(Backend::Sqlite, |settings, server| {
        let mut client = client_of(server, CLIENT_SECRET);
        client.token_url = Some(format!("http://localhost:{}/token", server.addr.port()));
        settings
            .with_private_networks(false)
            .with_client(TypeId::Hubspot, client)
    })
    .await;
    let callback = flow.consent("hubspot", "named").await;
    let end = flow.deliver(&callback).await;
    let message = assert_failed(&end, "token_exchange_failed", Some("named"));
    assert!(message.contains("private"), "{message}");
    assert_eq!(flow.server.token_calls(), 0);
}

#[tokio::test]
async fn a_snowflake_client_authenticates_with_http_basic_and_needs_its_account() {
    let flow = flow_with(Backend::Sqlite, |settings, server| {
        settings.with_client(TypeId::Snowflake, client_of(server, CLIENT_SECRET))
    })
    .await;
    let reply = read_reply(flow.authorize("snowflake", &[("state", "s")]).await).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("config.account"),
    );

    let config = r#"{"account":"xy12345.us-east-1","warehouse":"WH","database":"DB"}"#;
    let response = flow
        .authorize("snowflake", &[("state", "sf"), ("config", config)])
        .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let to_provider = location(&response);
    assert_eq!(param(&to_provider, "scope").as_deref(), Some("refresh_token"));
    let consent = flow.browser.get(to_provider).send().await.expect("provider");
    let end = flow.deliver(&location(&consent)).await;
    let uuid = param(&end, "uuid").unwrap_or_else(|| panic!("{end}"));
    let exchange = &flow.server.token_requests()[0];
    assert!(
        exchange.get("client_secret").is_none(),
        "the secret went in the Basic header"
    );
    let reply = flow.app.get(&flow.user, &format!("/api/connectors/{uuid}")).await;
    assert_eq!(reply.body["config"]["account"], "xy12345.us-east-1");
    assert_eq!(reply.body["config"]["schema"], "PUBLIC");
}

#[tokio::test]
async fn authorize_without_a_configured_client_is_400_naming_the_missing_setting() {
    let flow = flow().await;
    let reply = read_reply(flow.authorize("stripe", &[("state", "s")]).await).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("provider"),
    );
    assert!(
        reply.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("FERRY_OAUTH_STRIPE_CLIENT_ID")),
        "{}",
        reply.text
    );
    let flow = flow_with(Backend::Sqlite, |settings, server| {
        let mut client = client_of(server, CLIENT_SECRET);
        client.client_secret = None;
        settings.with_client(TypeId::Hubspot, client)
    })
    .await;
    let reply = read_reply(flow.authorize("hubspot", &[("state", "s")]).await).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("provider"),
    );
    assert!(
        reply.text.contains("FERRY_OAUTH_HUBSPOT_CLIENT_SECRET"),
        "{}",
        reply.text
    );
    assert!(flow.server.authorize_requests().is_empty());
}

#[tokio::test]
async fn authorize_without_state_or_for_a_type_that_is_not_oauth_is_400() {
    let flow = flow().await;
    let reply = read_reply(flow.authorize("hubspot", &[("display_name", "x")]).await).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some("state"));
    let reply = read_reply(flow.authorize("postgresql", &[("state", "s")]).await).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("provider"),
    );
    let reply = read_reply(flow.authorize("nosuch", &[("state", "s")]).await).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("provider"),
    );
    let reply = read_reply(
        flow.authorize(
            "salesforce",
            &[("state", "s"), ("config", r#"{"sandbox":"yes"}"#)],
        )
        .await,
    )
    .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("config.sandbox"),
    );
}

#[tokio::test]
async fn authorize_requires_a_bearer_token_and_the_callback_does_not() {
    let flow = flow().await;
    let response = flow
        .browser
        .get(flow.app.url("/api/oauth/hubspot/authorize?state=s"))
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let callback = flow.consent("hubspot", "s").await;
    let end = flow.deliver(&callback).await;
    assert_eq!(param(&end, "status").as_deref(), Some("success"), "{end}");
}

#[tokio::test]
async fn a_redirect_uri_must_be_on_the_allow_list() {
    let flow = flow().await;
    let reply = read_reply(
        flow.authorize(
            "hubspot",
            &[("state", "s"), ("redirect_uri", "https://evil.example/steal")],
        )
        .await,
    )
    .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("redirect_uri"),
    );

    let response = flow
        .authorize("hubspot", &[("state", "s"), ("redirect_uri", ALLOWED_REDIRECT)])
        .await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let to_provider = location(&response);
    assert_eq!(
        param(&to_provider, "redirect_uri").as_deref(),
        Some(ALLOWED_REDIRECT)
    );
    // The page at the custom URI passes code and state on to the callback;
    // the exchange repeats the custom URI, as the provider requires.
    let consent = flow.browser.get(to_provider).send().await.expect("provider");
    let returned = location(&consent);
    assert!(returned.as_str().starts_with(ALLOWED_REDIRECT), "{returned}");
    let mut callback = Url::parse(&format!("{PUBLIC}/api/oauth/hubspot/callback")).expect("url");
    callback.set_query(returned.query());
    let end = flow.deliver(&callback).await;
    assert_eq!(param(&end, "status").as_deref(), Some("success"), "{end}");
    assert_eq!(flow.server.token_requests()[0]["redirect_uri"], ALLOWED_REDIRECT);
}

#[tokio::test]
async fn a_token_response_field_is_recorded_in_the_config() {
    let flow = flow().await;
    flow.server
        .add_token_field("instance_url", json!("https://acme.my.salesforce.com"));
    let callback = flow.consent("salesforce", "sf").await;
    let end = flow.deliver(&callback).await;
    let uuid = param(&end, "uuid").unwrap_or_else(|| panic!("{end}"));
    let reply = flow.app.get(&flow.user, &format!("/api/connectors/{uuid}")).await;
    assert_eq!(
        reply.body["config"]["instance_url"],
        "https://acme.my.salesforce.com"
    );
    assert_eq!(reply.body["config"]["api_version"], "v59.0", "defaults filled in");
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_stores_the_new_one() {
    let flow = flow().await;
    let uuid = flow.connect("r").await;
    let first_refresh = flow.server.token_requests().len();
    assert_eq!(first_refresh, 1);

    let reply = flow
        .app
        .post(
            &flow.user,
            "/api/oauth/hubspot/refresh",
            json!({"connector_uuid": uuid}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["connector_uuid"], uuid.as_str());
    assert_eq!(reply.body["status"], "active");
    assert!(reply.body["token_refreshed_at"].is_string());
    assert!(reply.body["expires_at"].is_string());
    let requests = flow.server.token_requests();
    assert_eq!(requests[1]["grant_type"], "refresh_token");
    let spent = flow.server.spent_refresh_tokens();
    assert_eq!(spent.len(), 1, "the first refresh token was spent");
    assert_eq!(requests[1]["refresh_token"], spent[0].as_str());

    // The second refresh presents the rotated token: the new one was stored.
    let reply = flow
        .app
        .post(
            &flow.user,
            "/api/oauth/hubspot/refresh",
            json!({"connector_uuid": uuid}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let requests = flow.server.token_requests();
    assert_ne!(requests[2]["refresh_token"], requests[1]["refresh_token"]);
    assert!(
        !flow
            .server
            .refresh_token_is_live(requests[2]["refresh_token"].as_str().expect("rt"))
    );
    assert_eq!(flow.server.spent_refresh_tokens().len(), 2);
    assert_eq!(flow.server.token_calls(), 3);
    let secrets = flow.stored_secrets(&uuid).await;
    assert!(
        flow.server
            .refresh_token_is_live(secrets["refresh_token"].as_str().expect("rt"))
    );

    // An expired access token is replaced by one that works.
    let before = secrets["access_token"].as_str().expect("at").to_owned();
    flow.server.expire_access_tokens();
    assert_eq!(flow.resource(&before).await, StatusCode::UNAUTHORIZED);
    let reply = flow
        .app
        .post(
            &flow.user,
            "/api/oauth/hubspot/refresh",
            json!({"connector_uuid": uuid}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let after = flow.stored_secrets(&uuid).await;
    let access = after["access_token"].as_str().expect("at");
    assert_ne!(access, before);
    assert_eq!(flow.resource(access).await, StatusCode::OK);
}

#[tokio::test]
async fn a_provider_that_does_not_rotate_keeps_the_stored_refresh_token() {
    let flow = flow().await;
    flow.server.set_rotation(false);
    let uuid = flow.connect("nr").await;
    let before = flow.stored_secrets(&uuid).await;
    let reply = flow
        .app
        .post(
            &flow.user,
            "/api/oauth/hubspot/refresh",
            json!({"connector_uuid": uuid}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let after = flow.stored_secrets(&uuid).await;
    assert_eq!(after["refresh_token"], before["refresh_token"]);
    assert_ne!(after["access_token"], before["access_token"]);
    assert!(flow.server.spent_refresh_tokens().is_empty());
}

#[tokio::test]
async fn a_revoked_refresh_token_is_connection_failed_and_marks_the_connector_error() {
    let flow = flow().await;
    let uuid = flow.connect("rv").await;
    flow.server.revoke_all();
    let reply = flow
        .app
        .post(
            &flow.user,
            "/api/oauth/hubspot/refresh",
            json!({"connector_uuid": uuid}),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "connection_failed", None);
    assert!(reply.text.contains("invalid_grant"), "{}", reply.text);
    let connector = flow.app.get(&flow.user, &format!("/api/connectors/{uuid}")).await;
    assert_eq!(connector.body["status"], "error");
}

#[tokio::test]
async fn refresh_checks_the_connector_and_the_provider() {
    let flow = flow().await;
    let uuid = flow.connect("chk").await;
    let reply = flow
        .app
        .post(&flow.user, "/api/oauth/hubspot/refresh", json!({}))
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("connector_uuid"),
    );
    let reply = flow
        .app
        .post(
            &flow.user,
            "/api/oauth/salesforce/refresh",
            json!({"connector_uuid": uuid}),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "validation_error",
        Some("provider"),
    );
    let stranger = User::member("user_other", "org_oauth");
    let reply = flow
        .app
        .post(
            &stranger,
            "/api/oauth/hubspot/refresh",
            json!({"connector_uuid": uuid}),
        )
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    assert_eq!(flow.server.token_calls(), 1);
}

#[tokio::test]
async fn no_response_of_the_flow_ever_carries_a_token() {
    let flow = flow().await;
    let mut seen = Vec::new();
    let response = flow.authorize("hubspot", &[("state", "t")]).await;
    seen.push(location(&response).to_string());
    let consent = flow
        .browser
        .get(location(&response))
        .send()
        .await
        .expect("provider");
    let end = flow.deliver(&location(&consent)).await;
    seen.push(end.to_string());
    let uuid = param(&end, "uuid").expect("uuid");
    for path in [
        format!("/api/connectors/{uuid}"),
        "/api/connectors".to_owned(),
        format!("/api/connectors/{uuid}/health"),
    ] {
        seen.push(flow.app.get(&flow.user, &path).await.text);
    }
    seen.push(
        flow.app
            .post(
                &flow.user,
                "/api/oauth/hubspot/refresh",
                json!({"connector_uuid": uuid}),
            )
            .await
            .text,
    );
    flow.server.revoke_all();
    seen.push(
        flow.app
            .post(
                &flow.user,
                "/api/oauth/hubspot/refresh",
                json!({"connector_uuid": uuid}),
            )
            .await
            .text,
    );
    let tokens = flow.server.issued_tokens();
    assert_eq!(tokens.len(), 4, "two access and two refresh tokens");
    for text in &seen {
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "{token} in {text}");
        }
        assert!(!text.contains(CLIENT_SECRET), "{text}");
    }
}

#[tokio::test]
async fn creating_an_oauth_connector_directly_points_to_authorize() {
    let flow = flow().await;
    let reply = flow
        .app
        .post(
            &flow.user,
            "/api/connectors",
            json!({"type": "hubspot", "display_name": "x", "config": {}}),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some("type"));
    assert!(
        reply.text.contains("/api/oauth/hubspot/authorize"),
        "{}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refreshes_through_the_api_and_the_scheduler_at_once_make_one_token_call_and_no_invalid_grant() {
    use ferry_shared::oauth_refresh::{ClientCredentials, Need, OAuthClients, Outcome, Refresher};

    let flow = flow().await;
    let uuid = flow.connect("c").await;
    let calls = flow.server.token_calls();
    let version = flow
        .app
        .store
        .get_connector("org_oauth", &uuid)
        .await
        .expect("read")
        .expect("stored")
        .config_version;
    // The scheduler's refresher, as in another process: its own lease
    // holder and HTTP client over the same store.
    let scheduler = Refresher::new(
        flow.app.store.clone(),
        std::sync::Arc::new(Vault::new(MasterKeys::parse(MASTER_KEY).expect("keys"))),
        OAuthClients::default().with_private_networks(true).with_client(
            TypeId::Hubspot,
            ClientCredentials {
                client_id: CLIENT_ID.to_owned(),
                client_secret: Secret::new(CLIENT_SECRET),
                token_url: Some(flow.server.token_url()),
            },
        ),
    );
    let body = json!({"connector_uuid": uuid});
    let path = "/api/oauth/hubspot/refresh";
    // A refresh elsewhere holds the lease while all three have read the
    // connector and wait: then exactly one of them refreshes, and the
    // others see that the connector changed since they read it.
    let now = chrono::Utc::now();
    let store = flow.app.store.clone();
    assert!(
        store
            .acquire_refresh_lease(Claim {
                connector_uuid: &uuid,
                holder: "elsewhere",
                now,
                until: now + chrono::Duration::seconds(60),
            })
            .await
            .expect("lease")
    );
    let (first, second, scheduled, ()) = tokio::join!(
        flow.app.post(&flow.user, path, body.clone()),
        flow.app.post(&flow.user, path, body.clone()),
        scheduler.refresh(
            "org_oauth",
            &uuid,
            Need::Unchanged(version),
            Duration::from_secs(20)
        ),
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            store
                .release_refresh_lease(&uuid, "elsewhere")
                .await
                .expect("release");
        },
    );
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let scheduled = scheduled.expect("refresh");
    assert!(
        matches!(scheduled, Outcome::Refreshed { .. } | Outcome::NotNeeded),
        "{scheduled:?}"
    );
    assert_eq!(flow.server.token_calls(), calls + 1, "exactly one token call");
    let secrets = flow.stored_secrets(&uuid).await;
    assert!(
        flow.server
            .refresh_token_is_live(secrets["refresh_token"].as_str().expect("rt"))
    );
    assert!(
        flow.server
            .access_token_is_live(secrets["access_token"].as_str().expect("at"))
    );
}
