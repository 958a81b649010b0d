//! The OAuth warehouses (Snowflake, BigQuery) end to end: authorized
//! through the test authorization server and the API's callback, tested,
//! and used in a `sql_query` step with parameters executed by the
//! in-process worker against the test kit's stand-in vendor APIs, which
//! accept exactly the authorization server's live access tokens. The
//! results are read back as JSON across partitions and pages; an access
//! token that expires mid-step is refreshed once through the shared
//! refresher; throttles are waited out.

use ferry_api::routes::oauth::{OAuthClient, OAuthSettings};
use ferry_shared::config::Secret;
use ferry_shared::connectors::TypeId;
use ferry_shared::oauth_refresh::{ClientCredentials, OAuthClients};
use ferry_testkit::oauth::AuthServer;
use ferry_testkit::warehouses::{Plan, Server};
use ferry_worker::connectors::oauth_http::testing::serve_at;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};

use crate::helpers::*;

const PUBLIC: &str = "http://ferry.test";
const APP: &str = "http://app.ferry.test/connectors";
const CLIENT_ID: &str = "ferry-warehouses";
const CLIENT_SECRET: &str = "ferry-warehouses-secret";

/// An app whose snowflake and bigquery providers are the test
/// authorization server, and a worker that refreshes with it.
struct Setup {
    app: TestApp,
    auth: AuthServer,
    browser: reqwest::Client,
    user: User,
}

async fn setup(backend: Backend) -> Setup {
    let auth = AuthServer::start(CLIENT_ID, CLIENT_SECRET).await;
    let client = || OAuthClient {
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(Secret::new(CLIENT_SECRET)),
        auth_url: Some(auth.auth_url()),
        token_url: Some(auth.token_url()),
        scopes: None,
    };
    let settings = OAuthSettings::new(Url::parse(PUBLIC).expect("url"))
        .with_app_url(Url::parse(APP).expect("url"))
        .with_client(TypeId::Snowflake, client())
        .with_client(TypeId::Bigquery, client());
    let app = spawn_custom(Options {
        backend,
        worker: false,
        state: Some(Box::new(move |state| state.with_oauth(settings))),
        ..Options::default()
    })
    .await;
    let credentials = || ClientCredentials {
        client_id: CLIENT_ID.into(),
        client_secret: Secret::new(CLIENT_SECRET),
        token_url: Some(auth.token_url()),
    };
    app.start_worker_with_oauth(
        OAuthClients::default()
            .with_client(TypeId::Snowflake, credentials())
            .with_client(TypeId::Bigquery, credentials()),
    );
    Setup {
        app,
        auth,
        browser: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        user: User::member("user_wh", "org_wh"),
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
                ("state", "csrf-wh"),
                ("display_name", "Warehouse"),
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

    async fn test_connector(&self, uuid: &str) -> Reply {
        self.app
            .post(&self.user, &format!("/api/connectors/{uuid}/test"), json!({}))
            .await
    }

    /// A project with one `sql_query` step on `connector`: (project, step).
    async fn project(&self, connector: &str, query: &str, parameters: Value) -> (String, String) {
        let project = self.app.create_project(&self.user, "warehouse").await;
        let step = self
            .app
            .post(
                &self.user,
                &format!("/api/projects/{project}/steps"),
                json!({"name": "extract", "type": "sql_query", "config": {
                    "connector_uuid": connector, "query": query, "parameters": parameters,
                }}),
            )
            .await;
        assert_eq!(step.status, StatusCode::CREATED, "{}", step.text);
        (project, step.body["step_id"].as_str().expect("step").to_owned())
    }

    /// Executes synchronously and returns the step's result as JSON.
    async fn execute(&self, project: &str, step: &str, parameters: Value) -> Reply {
        let executed = self
            .app
            .post(
                &self.user,
                &format!("/api/projects/{project}/execute"),
                json!({"mode": "sync", "parameters": parameters}),
            )
            .await;
        assert_eq!(executed.status, StatusCode::OK, "{}", executed.text);
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
}

fn columns(result: &Reply) -> Vec<(String, String)> {
    result.body["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

const SF_QUERY: &str = "SELECT ID, AMOUNT, DAY, AT, NAME FROM ORDERS WHERE AMOUNT > ? AND REGION = ?";

fn snowflake_orders() -> Plan {
    let rows = (1..=9)
        .map(|i| {
            vec![
                json!(i.to_string()),
                json!(format!("{i}.50")),
                json!((19_782 + i).to_string()),
                json!(format!("{}.250000000", 1_709_201_472 + i)),
                if i == 5 {
                    Value::Null
                } else {
                    json!(format!("customer {i}"))
                },
            ]
        })
        .collect();
    Plan::rows(
        vec![
            json!({"name": "ID", "type": "fixed", "precision": 38, "scale": 0, "nullable": false}),
            json!({"name": "AMOUNT", "type": "fixed", "precision": 12, "scale": 2, "nullable": true}),
            json!({"name": "DAY", "type": "date", "nullable": true}),
            json!({"name": "AT", "type": "timestamp_ntz", "nullable": true}),
            json!({"name": "NAME", "type": "text", "nullable": true}),
        ],
        rows,
    )
    .in_parts_of(4)
    .after_polls(1)
}

async fn snowflake_end_to_end(backend: Backend, account: &str) {
    let setup = setup(backend).await;
    let server = Server::snowflake(setup.auth.token_check()).await;
    serve_at(&Server::snowflake_host(account), server.addr);
    server.on(
        "SELECT CURRENT_VERSION()",
        Plan::rows(
            vec![json!({"name": "CURRENT_VERSION()", "type": "text"})],
            vec![vec![json!("8.40.1")]],
        ),
    );
    server.on(SF_QUERY, snowflake_orders());

    let connector = setup
        .authorize(
            "snowflake",
            json!({"account": account, "warehouse": "COMPUTE_WH", "database": "SALES", "role": "ANALYST"}),
        )
        .await;
    let tested = setup.test_connector(&connector).await;
    assert_eq!(tested.status, StatusCode::OK, "{}", tested.text);
    assert_eq!(tested.body["status"], "success", "{}", tested.text);
    assert_eq!(
        tested.body["details"]["version"], "Snowflake 8.40.1",
        "{}",
        tested.text
    );

    let (project, step) = setup
        .project(
            &connector,
            "SELECT ID, AMOUNT, DAY, AT, NAME FROM ORDERS WHERE AMOUNT > {{min}} AND REGION = {{region}}",
            json!({"min": {"type": "number", "default": 1.5}, "region": {"type": "string"}}),
        )
        .await;
    let result = setup.execute(&project, &step, json!({"region": "EU"})).await;
    assert_eq!(result.body["total_rows"], 9, "{}", result.text);
    assert_eq!(
        columns(&result),
        [
            ("ID".to_owned(), "decimal(38,0)".to_owned()),
            ("AMOUNT".to_owned(), "decimal(12,2)".to_owned()),
            ("DAY".to_owned(), "date".to_owned()),
            ("AT".to_owned(), "timestamp".to_owned()),
            ("NAME".to_owned(), "string".to_owned()),
        ]
    );
    let data = result.body["data"].as_array().expect("rows");
    assert_eq!(data.len(), 9);
    assert_eq!(
        (
            &data[0]["ID"],
            &data[0]["AMOUNT"],
            &data[0]["DAY"],
            &data[0]["NAME"]
        ),
        (
            &json!("1"),
            &json!("1.50"),
            &json!("2024-03-01"),
            &json!("customer 1")
        ),
        "{}",
        result.text
    );
    assert!(
        data[0]["AT"]
            .as_str()
            .is_some_and(|at| at.starts_with("2024-02-29T10:11:13.25")),
        "{}",
        result.text
    );
    assert_eq!(data[8]["ID"], "9", "the last partition's rows: {}", result.text);
    assert_eq!(data[4]["NAME"], Value::Null);
    let bindings = &server.submissions().last().expect("submitted").clone()["bindings"];
    assert_eq!(bindings["1"], json!({"type": "REAL", "value": "1.5"}));
    assert_eq!(bindings["2"], json!({"type": "TEXT", "value": "EU"}));
    let gzip_partitions = server
        .seen()
        .iter()
        .filter(|s| s.query.starts_with("partition="))
        .count();
    assert_eq!(gzip_partitions, 2, "partitions 1 and 2 of 3");

    // The access token expires mid-use and Snowflake throttles once: the
    // worker waits out the 429, gets a 401, refreshes once through the
    // shared refresher and runs the step.
    let calls = setup.auth.token_calls();
    setup.auth.expire_access_tokens();
    server.throttle(1, 429, Some("1"));
    let result = setup.execute(&project, &step, json!({"region": "EU"})).await;
    assert_eq!(result.body["total_rows"], 9, "{}", result.text);
    assert_eq!(setup.auth.token_calls(), calls + 1, "one refresh");
    assert_eq!(
        setup.auth.token_requests().last().expect("refresh")["grant_type"],
        "refresh_token"
    );
    assert_eq!(
        setup.auth.spent_refresh_tokens().len(),
        1,
        "the rotated token is spent once"
    );
    assert!(server.unauthorized() >= 1);
}

#[tokio::test]
async fn snowflake_is_authorized_tested_and_queried_across_partitions_refreshing_once_on_a_401() {
    snowflake_end_to_end(Backend::Sqlite, "acme-e2e").await;
}

/// The same on the backends of a distributed deployment: PostgreSQL and
/// the Redis queue; the refresh lease is taken in PostgreSQL.
#[tokio::test]
async fn snowflake_runs_end_to_end_over_postgresql_and_the_redis_queue() {
    snowflake_end_to_end(Backend::Distributed, "acme-distributed").await;
}

const BQ_QUERY: &str = "SELECT id, amount, day, at, tags FROM sales.orders WHERE day >= ? AND region = ?";

fn bigquery_orders() -> Plan {
    let rows = (1..=23)
        .map(|i| {
            vec![
                json!(i.to_string()),
                json!(format!("{i}.125")),
                json!(format!("2024-03-{i:02}")),
                json!((1_709_201_472_000_000i64 + i).to_string()),
                json!([{"v": "x"}, {"v": i.to_string()}]),
            ]
        })
        .collect();
    Plan::rows(
        vec![
            json!({"name": "id", "type": "INTEGER", "mode": "REQUIRED"}),
            json!({"name": "amount", "type": "NUMERIC"}),
            json!({"name": "day", "type": "DATE"}),
            json!({"name": "at", "type": "TIMESTAMP"}),
            json!({"name": "tags", "type": "STRING", "mode": "REPEATED"}),
        ],
        rows,
    )
    .in_parts_of(10)
    .after_polls(2)
}

async fn bigquery_end_to_end(backend: Backend) {
    let setup = setup(backend).await;
    let server = Server::bigquery(setup.auth.token_check()).await;
    serve_at("bigquery.googleapis.com", server.addr);
    server.on(
        "SELECT 1",
        Plan::rows(
            vec![json!({"name": "f0_", "type": "INTEGER"})],
            vec![vec![json!("1")]],
        ),
    );
    server.on(BQ_QUERY, bigquery_orders());

    let connector = setup
        .authorize("bigquery", json!({"project_id": "ferry-e2e", "location": "EU"}))
        .await;
    let tested = setup.test_connector(&connector).await;
    assert_eq!(tested.body["status"], "success", "{}", tested.text);

    let (project, step) = setup
        .project(
            &connector,
            "SELECT id, amount, day, at, tags FROM sales.orders WHERE day >= {{since}} AND region = {{region}}",
            json!({"since": {"type": "date"}, "region": {"type": "string", "default": "EU"}}),
        )
        .await;
    server.throttle(1, 403, Some("1"));
    let result = setup
        .execute(&project, &step, json!({"since": "2024-03-01"}))
        .await;
    assert_eq!(result.body["total_rows"], 23, "{}", result.text);
    assert_eq!(
        columns(&result),
        [
            ("id".to_owned(), "integer".to_owned()),
            ("amount".to_owned(), "decimal(38,9)".to_owned()),
            ("day".to_owned(), "date".to_owned()),
            ("at".to_owned(), "timestamptz".to_owned()),
            ("tags".to_owned(), "string".to_owned()),
        ]
    );
    let data = result.body["data"].as_array().expect("rows");
    assert_eq!(data.len(), 23);
    assert_eq!(data[0]["id"], 1);
    assert_eq!(data[0]["amount"], "1.125000000");
    assert_eq!(data[0]["day"], "2024-03-01");
    assert_eq!(data[22]["id"], 23, "the third page's rows");
    assert_eq!(data[22]["tags"], r#"["x","23"]"#);
    let submitted = server.submissions().last().cloned().expect("submitted");
    assert_eq!(
        submitted["queryParameters"],
        json!([
            {"parameterType": {"type": "DATE"}, "parameterValue": {"value": "2024-03-01"}},
            {"parameterType": {"type": "STRING"}, "parameterValue": {"value": "EU"}},
        ])
    );
    assert_eq!(submitted["location"], "EU");

    let calls = setup.auth.token_calls();
    setup.auth.expire_access_tokens();
    let result = setup
        .execute(&project, &step, json!({"since": "2024-03-01"}))
        .await;
    assert_eq!(result.body["total_rows"], 23, "{}", result.text);
    assert_eq!(setup.auth.token_calls(), calls + 1, "one refresh");
}

#[tokio::test]
async fn bigquery_is_authorized_tested_and_queried_across_pages_refreshing_once_on_a_401() {
    bigquery_end_to_end(Backend::Sqlite).await;
}

#[tokio::test]
async fn bigquery_runs_end_to_end_over_postgresql_and_the_redis_queue() {
    bigquery_end_to_end(Backend::Distributed).await;
}

#[tokio::test]
async fn a_failed_snowflake_statement_fails_the_step_with_invalid_query() {
    let setup = setup(Backend::Sqlite).await;
    let server = Server::snowflake(setup.auth.token_check()).await;
    serve_at(&Server::snowflake_host("acme-failing"), server.addr);
    let connector = setup
        .authorize(
            "snowflake",
            json!({"account": "acme-failing", "warehouse": "WH", "database": "DB"}),
        )
        .await;
    let (project, _) = setup
        .project(&connector, "SELECT * FROM NOWHERE", json!({}))
        .await;
    let executed = setup
        .app
        .post(
            &setup.user,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync"}),
        )
        .await;
    assert_eq!(executed.body["status"], "failed", "{}", executed.text);
    let error = &executed.body["steps"][0]["error"];
    assert_eq!(error["type"], "invalid_query", "{}", executed.text);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not exist")),
        "{}",
        executed.text
    );
}

#[tokio::test]
async fn a_refused_refresh_token_fails_the_step_with_authentication_failed_and_marks_the_connector() {
    let setup = setup(Backend::Sqlite).await;
    let server = Server::snowflake(setup.auth.token_check()).await;
    serve_at(&Server::snowflake_host("acme-revoked"), server.addr);
    server.on(
        "SELECT 1 AS ONE",
        Plan::rows(
            vec![json!({"name": "ONE", "type": "fixed", "precision": 1, "scale": 0})],
            vec![vec![json!("1")]],
        ),
    );
    let connector = setup
        .authorize(
            "snowflake",
            json!({"account": "acme-revoked", "warehouse": "WH", "database": "DB"}),
        )
        .await;
    let (project, step) = setup.project(&connector, "SELECT 1 AS ONE", json!({})).await;
    setup.execute(&project, &step, json!({})).await;

    setup.auth.revoke_all();
    let executed = setup
        .app
        .post(
            &setup.user,
            &format!("/api/projects/{project}/execute"),
            json!({"mode": "sync"}),
        )
        .await;
    assert_eq!(executed.body["status"], "failed", "{}", executed.text);
    let error = &executed.body["steps"][0]["error"];
    assert_eq!(error["type"], "authentication_failed", "{}", executed.text);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("authorize the connector again")),
        "{}",
        executed.text
    );
    let reply = setup
        .app
        .get(&setup.user, &format!("/api/connectors/{connector}"))
        .await;
    assert_eq!(reply.body["status"], "error", "{}", reply.text);
    for token in setup.auth.issued_tokens() {
        assert!(
            !executed.text.contains(&token),
            "a token in the execution: {}",
            executed.text
        );
    }
}
