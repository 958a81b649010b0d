//! The OAuth SaaS vendors (Stripe, HubSpot, Salesforce, Google Analytics)
//! end to end: authorized through the test authorization server and the
//! API's callback, tested, and read by a `saas_extract` step that the
//! in-process worker runs against the test kit's stand-in vendor APIs,
//! which accept exactly the authorization server's live access tokens.
//! Results are read back as JSON across pages; an access token that stops
//! working between two pages is refreshed once through the shared
//! refresher and the read goes on; throttles are waited out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::routes::oauth::{OAuthClient, OAuthSettings};
use ferry_shared::config::Secret;
use ferry_shared::connectors::TypeId;
use ferry_shared::oauth_refresh::{ClientCredentials, OAuthClients};
use ferry_testkit::oauth::AuthServer;
use ferry_testkit::saas::{ReportData, SaasServer, Vendor};
use ferry_worker::connectors::oauth_http::testing::serve_at;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use crate::helpers::*;

const PUBLIC: &str = "http://ferry.test";
const APP: &str = "http://app.ferry.test/connectors";
const CLIENT_ID: &str = "ferry-saas";
const CLIENT_SECRET: &str = "ferry-saas-secret";
const TYPES: [TypeId; 4] = [
    TypeId::Stripe,
    TypeId::Hubspot,
    TypeId::Salesforce,
    TypeId::GoogleAnalytics,
];

/// An app whose four SaaS providers are the test authorization server,
/// a worker that refreshes with it, and the vendor's stand-in.
struct Setup {
    app: TestApp,
    auth: Arc<AuthServer>,
    vendor: SaasServer,
    browser: reqwest::Client,
    user: User,
}

async fn setup(backend: Backend, vendor: Vendor) -> Setup {
    let auth = Arc::new(AuthServer::start(CLIENT_ID, CLIENT_SECRET).await);
    let client = || OAuthClient {
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(Secret::new(CLIENT_SECRET)),
        auth_url: Some(auth.auth_url()),
        token_url: Some(auth.token_url()),
        scopes: None,
    };
    let mut settings =
        OAuthSettings::new(Url::parse(PUBLIC).expect("url")).with_app_url(Url::parse(APP).expect("url"));
    let mut clients = OAuthClients::default();
    for type_id in TYPES {
        settings = settings.with_client(type_id, client());
        clients = clients.with_client(
            type_id,
            ClientCredentials {
                client_id: CLIENT_ID.into(),
                client_secret: Secret::new(CLIENT_SECRET),
                token_url: Some(auth.token_url()),
            },
        );
    }
    let app = spawn_custom(Options {
        backend,
        worker: false,
        state: Some(Box::new(move |state| state.with_oauth(settings))),
        ..Options::default()
    })
    .await;
    app.start_worker_with_oauth(clients);
    let server = SaasServer::start(vendor, auth.token_check()).await;
    match vendor {
        // Salesforce names its instance in the token response.
        Vendor::Salesforce => auth.add_token_field("instance_url", json!(server.url())),
        Vendor::Stripe => {
            serve_at(Vendor::Stripe.host(), server.addr);
            auth.add_token_field("stripe_user_id", json!("acct_1Ferry"));
        }
        other => serve_at(other.host(), server.addr),
    }
    Setup {
        app,
        auth,
        vendor: server,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        user: User::member("user_saas", "org_saas"),
    }
}

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

impl Setup {
    /// Authorize with `config`, consent at the authorization server, the
    /// callback: the new connector's uuid.
    async fn authorize(&self, provider: &str, config: Value) -> String {
        let config = config.to_string();
        let response = self
            .browser
            .get(self.app.url(&format!("/api/oauth/{provider}/authorize")))
            .query(&[
                ("state", "csrf-saas"),
                ("display_name", "SaaS"),
                ("config", config.as_str()),
            ])
            .bearer_auth(self.user.token())
            .send()
            .await
            .expect("authorize");
        assert_eq!(response.status(), StatusCode::FOUND, "authorize redirects");
        let consent = self
            .browser
            .get(location(&response))
            .send()
            .await
            .expect("consent");
        let callback = location(&consent);
        let path = &callback.as_str()[PUBLIC.len()..];
        let end = self
            .browser
            .get(self.app.url(path))
            .send()
            .await
            .expect("callback");
        let end = location(&end);
        assert_eq!(param(&end, "status").as_deref(), Some("success"), "{end}");
        param(&end, "uuid").expect("uuid")
    }

    /// `POST /api/connectors/{uuid}/test` passes, and the version it reports.
    async fn test_passes(&self, uuid: &str) -> String {
        let tested = self
            .app
            .post(&self.user, &format!("/api/connectors/{uuid}/test"), json!({}))
            .await;
        assert_eq!(tested.status, StatusCode::OK, "{}", tested.text);
        assert_eq!(tested.body["status"], "success", "{}", tested.text);
        tested.body["details"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A project with one `saas_extract` step on `connector`: (project, step).
    async fn project(&self, connector: &str, mut config: Value) -> (String, String) {
        config["connector_uuid"] = json!(connector);
        let project = self.app.create_project(&self.user, "saas").await;
        let step = self
            .app
            .post(
                &self.user,
                &format!("/api/projects/{project}/steps"),
                json!({"name": "extract", "type": "saas_extract", "config": config}),
            )
            .await;
        assert_eq!(step.status, StatusCode::CREATED, "{}", step.text);
        (project, step.body["step_id"].as_str().expect("step").to_owned())
    }

    /// Executes synchronously: the execution.
    async fn execute(&self, project: &str) -> Reply {
        let executed = self
            .app
            .post(
                &self.user,
                &format!("/api/projects/{project}/execute"),
                json!({"mode": "sync"}),
            )
            .await;
        assert_eq!(executed.status, StatusCode::OK, "{}", executed.text);
        executed
    }

    /// Executes synchronously and returns the step's result as JSON.
    async fn extract(&self, project: &str, step: &str) -> Reply {
        let executed = self.execute(project).await;
        assert_eq!(executed.body["status"], "completed", "{}", executed.text);
        let execution = executed.body["execution_id"].as_str().expect("id");
        let result = self
            .app
            .get(
                &self.user,
                &format!("/api/projects/{project}/executions/{execution}/steps/{step}/result?format=json&limit=1000"),
            )
            .await;
        assert_eq!(result.status, StatusCode::OK, "{}", result.text);
        result
    }

    /// The access token stops working once the stand-in has answered
    /// `after` more calls.
    fn expire_tokens_after(&self, after: usize) {
        let at = self.vendor.requests().iter().filter(|r| r.status != 401).count() + after;
        let auth = self.auth.clone();
        self.vendor.on_call(move |count| {
            if count == at {
                auth.expire_access_tokens();
            }
        });
    }

    /// The bearer token of each request to the stand-in, in order.
    fn tokens(&self) -> Vec<String> {
        self.vendor
            .requests()
            .iter()
            .map(|r| r.headers.get("authorization").cloned().unwrap_or_default())
            .collect()
    }
}

fn columns(result: &Reply) -> Vec<String> {
    result.body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn ids(result: &Reply, column: &str) -> Vec<Value> {
    result.body["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| row[column].clone())
        .collect()
}

fn customers(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({"id": format!("cus_{i:04}"), "object": "customer", "email": format!("c{i}@example.com"),
                   "created": 1_700_000_000 + i as i64, "balance": i as i64 * 100, "livemode": false})
        })
        .collect()
}

/// Stripe: authorize, test, a list read across three pages; then a token
/// that dies after the first page (one refresh, the read goes on from the
/// second page) and a 429 with Retry-After (waited out).
async fn stripe_end_to_end(backend: Backend) {
    let setup = setup(backend, Vendor::Stripe).await;
    setup.vendor.set_list("customers", customers(250));
    let connector = setup.authorize("stripe", json!({})).await;
    let stored = setup
        .app
        .get(&setup.user, &format!("/api/connectors/{connector}"))
        .await;
    assert_eq!(
        stored.body["config"]["account_id"], "acct_1Ferry",
        "{}",
        stored.text
    );
    assert_eq!(setup.test_passes(&connector).await, "Stripe API v1");

    let (project, step) = setup
        .project(&connector, json!({"object": "customers", "page_size": 100}))
        .await;
    let result = setup.extract(&project, &step).await;
    assert_eq!(result.body["total_rows"], 250, "{}", result.text);
    let ids = ids(&result, "id");
    assert_eq!(ids.len(), 250);
    assert_eq!((&ids[0], &ids[249]), (&json!("cus_0000"), &json!("cus_0249")));
    assert_eq!(result.body["data"][3]["balance"], 300);

    // The token dies after the next call: page 2 is refused once, the
    // worker refreshes through the refresher's lease and asks page 2 again.
    let calls = setup.auth.token_calls();
    let before = setup.vendor.requests().len();
    setup.expire_tokens_after(1);
    let result = setup.extract(&project, &step).await;
    assert_eq!(result.body["total_rows"], 250, "{}", result.text);
    assert_eq!(setup.auth.token_calls(), calls + 1, "one refresh");
    assert_eq!(
        setup.auth.token_requests().last().expect("refresh")["grant_type"],
        "refresh_token"
    );
    let requests = &setup.vendor.requests()[before..];
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 401, 200, 200],
        "page 1, page 2 refused, page 2 again, page 3"
    );
    assert_eq!(requests[2].query.get("starting_after"), Some(&json!("cus_0099")));
    let tokens = &setup.tokens()[before..];
    assert_eq!(tokens[0], tokens[1]);
    assert_ne!(tokens[1], tokens[2], "the refreshed token");

    // Throttled twice with Retry-After: 1 s: waited out.
    setup.vendor.throttle_next(2, Some(1));
    let started = Instant::now();
    let result = setup.extract(&project, &step).await;
    assert_eq!(result.body["total_rows"], 250, "{}", result.text);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn stripe_is_authorized_tested_and_listed_across_pages_refreshing_once_on_a_401_mid_step() {
    stripe_end_to_end(Backend::Sqlite).await;
}

#[tokio::test]
async fn stripe_runs_end_to_end_over_postgresql_and_the_redis_queue() {
    stripe_end_to_end(Backend::Distributed).await;
}

fn contacts(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({"id": (5000 + i).to_string(),
                   "properties": {"email": format!("p{i}@example.com"), "firstname": format!("P{i}"),
                                  "lifecyclestage": if i % 3 == 0 { "lead" } else { "customer" }},
                   "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-02-01T00:00:00.000Z",
                   "archived": false})
        })
        .collect()
}

/// HubSpot on the distributed backends: CRM contacts across pages with
/// the asked properties, the rolling window's headers pacing the reads,
/// and a token that dies mid-read refreshed once (the lease in PostgreSQL).
#[tokio::test]
async fn hubspot_contacts_are_read_across_pages_over_postgresql_and_the_redis_queue() {
    let setup = setup(Backend::Distributed, Vendor::Hubspot).await;
    setup.vendor.set_list("contacts", contacts(45));
    let connector = setup.authorize("hubspot", json!({})).await;
    assert_eq!(setup.test_passes(&connector).await, "HubSpot CRM API v3");
    let (project, step) = setup
        .project(
            &connector,
            json!({"object": "contacts", "fields": ["email", "lifecyclestage"], "page_size": 20}),
        )
        .await;
    setup.vendor.set_hubspot_window(2, Duration::from_millis(500));
    setup.expire_tokens_after(2);
    let calls = setup.auth.token_calls();
    let result = setup.extract(&project, &step).await;
    assert_eq!(result.body["total_rows"], 45, "{}", result.text);
    assert_eq!(
        columns(&result),
        [
            "id",
            "email",
            "lifecyclestage",
            "createdAt",
            "updatedAt",
            "archived"
        ]
    );
    let ids = ids(&result, "id");
    assert_eq!((&ids[0], &ids[44]), (&json!("5000"), &json!("5044")));
    assert_eq!(result.body["data"][3]["lifecyclestage"], "lead");
    assert_eq!(setup.auth.token_calls(), calls + 1, "one refresh");
    assert_eq!(setup.vendor.answered(429), 0, "the window was waited for");
    assert_eq!(setup.vendor.answered(401), 1);
}

fn accounts(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({"Id": format!("001{i:012}"), "Name": format!("Account {i}"), "Industry": "Energy",
                   "NumberOfEmployees": i})
        })
        .collect()
}

#[tokio::test]
async fn salesforce_soql_is_read_across_query_locators_on_the_instance_of_the_token() {
    let setup = setup(Backend::Sqlite, Vendor::Salesforce).await;
    setup.vendor.set_sobject("Account", accounts(450));
    let connector = setup.authorize("salesforce", json!({})).await;
    let stored = setup
        .app
        .get(&setup.user, &format!("/api/connectors/{connector}"))
        .await;
    assert_eq!(
        stored.body["config"]["instance_url"],
        setup.vendor.url(),
        "{}",
        stored.text
    );
    assert_eq!(setup.test_passes(&connector).await, "Salesforce REST API v59.0");

    let (project, step) = setup
        .project(
            &connector,
            json!({"query": "SELECT Id, Name, NumberOfEmployees FROM Account", "page_size": 200}),
        )
        .await;
    let result = setup.extract(&project, &step).await;
    assert_eq!(result.body["total_rows"], 450, "{}", result.text);
    assert_eq!(columns(&result), ["Id", "Name", "NumberOfEmployees"]);
    assert_eq!(result.body["data"][449]["NumberOfEmployees"], 449);
    let paths: Vec<String> = setup.vendor.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.contains(&"/services/data/v59.0/query/01gD0000002HU6KIAW-400".to_owned()),
        "{paths:?}"
    );

    // A query Salesforce refuses fails the step with its error code.
    let (project, _) = setup
        .project(&connector, json!({"query": "SELECT Id FROM Nope__c"}))
        .await;
    let executed = setup.execute(&project).await;
    assert_eq!(executed.body["status"], "failed", "{}", executed.text);
    let error = &executed.body["steps"][0]["error"];
    assert_eq!(error["type"], "invalid_query", "{}", executed.text);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("INVALID_TYPE")),
        "{}",
        executed.text
    );
}

#[tokio::test]
async fn a_google_analytics_report_is_read_across_pages_and_a_quota_throttle_waited_out() {
    let setup = setup(Backend::Sqlite, Vendor::GoogleAnalytics).await;
    setup.vendor.set_report(
        "987654321",
        ReportData {
            dimensions: vec!["date".into(), "country".into()],
            metrics: vec![
                ("activeUsers".into(), "TYPE_INTEGER".into()),
                ("engagementRate".into(), "TYPE_FLOAT".into()),
            ],
            rows: (0..35)
                .map(|i| {
                    (
                        vec![format!("202403{:02}", i % 28 + 1), format!("Country {i}")],
                        vec![(i * 7).to_string(), "0.5".to_owned()],
                    )
                })
                .collect(),
        },
    );
    let connector = setup
        .authorize("google_analytics", json!({"property_id": "987654321"}))
        .await;
    assert_eq!(
        setup.test_passes(&connector).await,
        "Google Analytics Data API v1beta"
    );
    let (project, step) = setup
        .project(
            &connector,
            json!({"query": {"dimensions": [{"name": "date"}, {"name": "country"}],
                             "metrics": [{"name": "activeUsers"}, {"name": "engagementRate"}],
                             "dateRanges": [{"startDate": "{{since}}", "endDate": "yesterday"}]},
                   "parameters": {"since": {"type": "date", "default": "2024-03-01"}},
                   "page_size": 10}),
        )
        .await;
    setup.vendor.throttle_next(1, Some(1));
    let result = setup.extract(&project, &step).await;
    assert_eq!(result.body["total_rows"], 35, "{}", result.text);
    assert_eq!(
        columns(&result),
        ["date", "country", "activeUsers", "engagementRate"]
    );
    let types: Vec<Value> = result.body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["type"].clone())
        .collect();
    assert_ne!(types[2], types[0], "metrics are typed: {}", result.text);
    assert_eq!(result.body["data"][34]["activeUsers"], 238);
    assert_eq!(result.body["data"][0]["date"], "20240301");
    assert_eq!(setup.vendor.answered(429), 1);
    let offsets: Vec<Value> = setup
        .vendor
        .requests()
        .iter()
        .filter(|r| r.path.ends_with(":runReport") && r.status == 200)
        .map(|r| r.body["offset"].clone())
        .collect();
    assert_eq!(offsets, [json!(0), json!(10), json!(20), json!(30)]);
    let first = &setup.vendor.requests()[1];
    assert_eq!(
        first.body["dateRanges"][0]["startDate"], "2024-03-01",
        "the parameter's default"
    );
}

#[tokio::test]
async fn saas_extract_configs_are_checked_when_saved() {
    let setup = setup(Backend::Sqlite, Vendor::Hubspot).await;
    let connector = setup.authorize("hubspot", json!({})).await;
    let project = setup.app.create_project(&setup.user, "checked").await;
    for (config, field) in [
        (json!({"connector_uuid": connector}), "config.object"),
        (
            json!({"connector_uuid": connector, "object": "contacts", "cursor": "x"}),
            "config.cursor",
        ),
        (
            json!({"connector_uuid": connector, "object": "contacts", "page_size": 0}),
            "config.page_size",
        ),
        (
            json!({"connector_uuid": connector, "object": "customers", "params": {"starting_after": "cus_1"}}),
            "config.params.starting_after",
        ),
        // What the connector's vendor does not take.
        (
            json!({"connector_uuid": connector, "query": "SELECT Id FROM Contact"}),
            "config.object",
        ),
        (
            json!({"connector_uuid": connector, "object": "contacts", "where": "x = 1"}),
            "config.where",
        ),
        (
            json!({"connector_uuid": connector, "object": "contacts", "page_size": 500}),
            "config.page_size",
        ),
    ] {
        let reply = setup
            .app
            .post(
                &setup.user,
                &format!("/api/projects/{project}/steps"),
                json!({"name": "bad", "type": "saas_extract", "config": config}),
            )
            .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error", Some(field));
    }
}

/// A grant revoked at the provider: the 401's refresh is refused with
/// `invalid_grant`, the step fails with `authentication_failed` and the
/// connector is left `error` for the user to authorize again.
#[tokio::test]
async fn a_revoked_grant_fails_the_step_and_marks_the_connector_error() {
    let setup = setup(Backend::Sqlite, Vendor::Hubspot).await;
    setup.vendor.set_list("contacts", contacts(5));
    let connector = setup.authorize("hubspot", json!({})).await;
    let (project, _) = setup.project(&connector, json!({"object": "contacts"})).await;
    setup.auth.revoke_all();
    let executed = setup.execute(&project).await;
    assert_eq!(executed.body["status"], "failed", "{}", executed.text);
    let error = &executed.body["steps"][0]["error"];
    assert_eq!(error["type"], "authentication_failed", "{}", executed.text);
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains("authorize")),
        "{}",
        executed.text
    );
    let stored = setup
        .app
        .get(&setup.user, &format!("/api/connectors/{connector}"))
        .await;
    assert_eq!(stored.body["status"], "error", "{}", stored.text);
    assert_eq!(
        setup.vendor.answered(401),
        1,
        "no second try with a refused grant"
    );
}
