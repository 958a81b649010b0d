//! `sql_query` steps and connection tests on the BigQuery family against
//! the stand-in BigQuery API of `ferry-testkit` (the documented shapes on
//! 127.0.0.1), through the real sink, read back from Parquet.

use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType};
use ferry_shared::connectors::TypeId;
use ferry_shared::domain::ErrorKind;
use ferry_shared::objects::ObjectTarget;
use ferry_testkit::warehouses::{Plan, Server, fixed_token};
use object_store::path::Path;
use serde_json::{Value, json};
use tempfile::TempDir;

use super::*;
use crate::connectors::oauth_http;
use crate::connectors::warehouse::testing::{open_pool, read_back, run_sql_step};
use crate::extract::StepOutput;

const TOKEN: &str = "ya29.bigquery-oauth-access-token";

struct Fixture {
    server: Server,
    target: ObjectTarget,
    policy: NetworkPolicy,
    handle: Box<dyn ConnectorPool>,
    _dir: TempDir,
}

async fn fixture(token: &str) -> Fixture {
    let server = Server::bigquery(fixed_token(TOKEN)).await;
    oauth_http::testing::serve_at(API_HOST, server.addr);
    let spec = ConnectorSpec {
        uuid: "conn_bigquery".into(),
        org_id: "org_test".into(),
        connector_type: "bigquery".into(),
        version: 1,
        config: json!({
            "project_id": "ferry-test", "dataset": "sales", "location": "EU", "access_token": token, "refresh_token": "r", "token_type": "Bearer",
            "expires_at": "2030-01-01T00:00:00Z", "connection_timeout_seconds": 5,
        })
        .as_object()
        .cloned()
        .expect("config"),
    };
    let (decl, _) = spec.driver().expect("driver");
    spec.check_fields(decl).expect("token fields are accepted");
    let (policy, target, handle, dir) = open_pool(&Bigquery, &spec).await;
    Fixture {
        server,
        target,
        policy,
        handle,
        _dir: dir,
    }
}

impl Fixture {
    async fn step(&self, config: Value, supplied: Value) -> (Path, Result<StepOutput, ExtractError>) {
        run_sql_step(
            self.handle.as_ref(),
            TypeId::Bigquery,
            (&self.policy, &self.target),
            (config, supplied),
            &CancellationToken::new(),
        )
        .await
    }

    async fn read_back(&self, path: &Path) -> RecordBatch {
        read_back(&self.target, path).await
    }
}

const SALES: &str = "SELECT id, amount, day, at, score, tags FROM sales WHERE day >= ? AND region = ?";

fn sales_plan() -> Plan {
    let rows = (1..=25)
        .map(|i| {
            vec![
                json!(i.to_string()),
                json!(format!("{i}.5")),
                json!(format!("2024-03-{i:02}")),
                if i == 4 {
                    Value::Null
                } else {
                    json!(format!("{}", 1_709_201_472_000_000i64 + i))
                },
                json!("0.25"),
                json!([{"v": "a"}, {"v": i.to_string()}]),
            ]
        })
        .collect();
    Plan::rows(
        vec![
            json!({"name": "id", "type": "INTEGER", "mode": "REQUIRED"}),
            json!({"name": "amount", "type": "NUMERIC", "mode": "NULLABLE"}),
            json!({"name": "day", "type": "DATE"}),
            json!({"name": "at", "type": "TIMESTAMP"}),
            json!({"name": "score", "type": "FLOAT"}),
            json!({"name": "tags", "type": "STRING", "mode": "REPEATED"}),
        ],
        rows,
    )
}

#[tokio::test]
async fn a_query_waits_for_its_job_and_pages_arrive_typed_with_parameters() {
    let fx = fixture(TOKEN).await;
    fx.server.on(SALES, sales_plan().in_parts_of(10).after_polls(2));
    let (path, outcome) = fx
        .step(
            json!({"query": "SELECT id, amount, day, at, score, tags FROM sales WHERE day >= {{since}} AND region = {{region}}",
                   "parameters": {"since": {"type": "date"}, "region": {"type": "string"}}}),
            json!({"since": "2024-03-01", "region": "EU"}),
        )
        .await;
    assert_eq!(outcome.expect("step").rows, 25);
    let batch = fx.read_back(&path).await;
    let ids = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!((0..25).map(|i| ids.value(i)).sum::<i64>(), 325);
    assert_eq!(
        batch.column(1).as_primitive::<Decimal128Type>().value(0),
        1_500_000_000
    );
    assert_eq!(batch.column(2).as_primitive::<Date32Type>().value(0), 19_783);
    let at = batch.column(3).as_primitive::<TimestampMicrosecondType>();
    assert!(at.is_null(3) && at.value(0) == 1_709_201_472_000_001);
    assert_eq!(batch.column(4).as_primitive::<Float64Type>().value(24), 0.25);
    assert_eq!(batch.column(5).as_string::<i32>().value(24), r#"["a","25"]"#);

    let submitted = fx.server.submissions();
    assert_eq!(submitted.len(), 1);
    let body = &submitted[0];
    assert_eq!(body["query"], SALES);
    assert_eq!(body["useLegacySql"], false);
    assert_eq!(body["location"], "EU");
    assert_eq!(body["parameterMode"], "POSITIONAL");
    assert_eq!(
        body["queryParameters"],
        json!([
            {"parameterType": {"type": "DATE"}, "parameterValue": {"value": "2024-03-01"}},
            {"parameterType": {"type": "STRING"}, "parameterValue": {"value": "EU"}},
        ])
    );
    assert_eq!(
        body["defaultDataset"],
        json!({"projectId": "ferry-test", "datasetId": "sales"})
    );
    let pages: Vec<String> = fx
        .server
        .seen()
        .iter()
        .filter(|s| s.method == "GET")
        .map(|s| {
            s.query
                .split('&')
                .find(|p| p.starts_with("pageToken="))
                .unwrap_or("poll")
                .to_owned()
        })
        .collect();
    assert_eq!(pages, ["poll", "poll", "pageToken=tok-10", "pageToken=tok-20"]);
}

#[tokio::test]
async fn an_invalid_query_is_invalid_query_with_its_reason() {
    let fx = fixture(TOKEN).await;
    let (_, outcome) = fx
        .step(json!({"query": "SELECT * FROM missing"}), json!({}))
        .await;
    let error = outcome.expect_err("unknown table");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert_eq!(error.code.as_deref(), Some("invalidQuery"));
    assert!(error.message.contains("was not found"), "{}", error.message);
}

#[tokio::test]
async fn rate_limit_answers_are_waited_out() {
    let fx = fixture(TOKEN).await;
    fx.server.on(
        "SELECT 1",
        Plan::rows(
            vec![json!({"name": "f0_", "type": "INTEGER"})],
            vec![vec![json!("1")]],
        ),
    );
    fx.server.throttle(1, 403, Some("1"));
    fx.server.throttle(1, 429, None);
    let started = Instant::now();
    let details = fx.handle.test(&[], &fx.policy).await.expect("test");
    assert_eq!(details.version.as_deref(), Some("BigQuery (GoogleSQL)"));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(is_throttle(
        StatusCode::FORBIDDEN,
        br#"{"error":{"errors":[{"reason":"rateLimitExceeded"}]}}"#
    ));
    assert!(!is_throttle(
        StatusCode::FORBIDDEN,
        br#"{"error":{"errors":[{"reason":"accessDenied"}]}}"#
    ));
}

#[tokio::test]
async fn a_refused_token_without_a_refresher_is_authentication_failed() {
    let fx = fixture("ya29.expired").await;
    let (_, outcome) = fx.step(json!({"query": "SELECT 1"}), json!({})).await;
    assert_eq!(
        outcome.expect_err("401").error_type,
        ErrorKind::AuthenticationFailed
    );
}
