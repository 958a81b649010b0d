//! `sql_query` steps and connection tests on the Snowflake family against
//! the stand-in SQL API of `ferry-testkit` (the documented shapes on
//! 127.0.0.1), through the real sink, read back from Parquet.

use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
use ferry_shared::connectors::TypeId;
use ferry_shared::domain::ErrorKind;
use ferry_shared::objects::ObjectTarget;
use ferry_testkit::warehouses::{Plan, Server, fixed_token};
use object_store::path::Path;
use serde_json::{Map, Value, json};
use tempfile::TempDir;

use super::*;
use crate::connectors::oauth_http;
use crate::connectors::warehouse::testing::{Run, open_pool, read_back, run_sql_step};
use crate::extract::{Destination, ExtractOptions, StepOutput, run_step_with};

const TOKEN: &str = "sf-oauth-access-token";

struct Fixture {
    server: Server,
    target: ObjectTarget,
    policy: NetworkPolicy,
    handle: Box<dyn ConnectorPool>,
    _dir: TempDir,
}

async fn fixture(account: &str, token: &str) -> Fixture {
    let server = Server::snowflake(fixed_token(TOKEN)).await;
    oauth_http::testing::serve_at(&Server::snowflake_host(account), server.addr);
    let spec = ConnectorSpec {
        uuid: "conn_snowflake".into(),
        org_id: "org_test".into(),
        connector_type: "snowflake".into(),
        version: 1,
        config: json!({
            "account": account, "warehouse": "COMPUTE_WH", "database": "ANALYTICS", "schema": "PUBLIC",
            "role": "ANALYST", "access_token": token, "refresh_token": "r", "token_type": "Bearer",
            "expires_at": "2030-01-01T00:00:00Z", "connection_timeout_seconds": 5,
        })
        .as_object()
        .cloned()
        .expect("config"),
    };
    let (decl, _) = spec.driver().expect("driver");
    spec.check_fields(decl).expect("token fields are accepted");
    let (policy, target, handle, dir) = open_pool(&Snowflake, &spec).await;
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
            TypeId::Snowflake,
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

fn orders_plan() -> Plan {
    let rows = (1..=7)
        .map(|i| {
            vec![
                json!(i.to_string()),
                json!(format!("{i}.25")),
                json!((19_782 + i).to_string()),
                if i == 3 {
                    Value::Null
                } else {
                    json!(format!("{}.000000000", 1_709_201_472 + i))
                },
                json!(format!("customer {i}")),
            ]
        })
        .collect();
    Plan::rows(
        vec![
            json!({"name": "ID", "type": "fixed", "precision": 18, "scale": 0, "nullable": false}),
            json!({"name": "AMOUNT", "type": "fixed", "precision": 10, "scale": 2, "nullable": true}),
            json!({"name": "DAY", "type": "date", "nullable": true}),
            json!({"name": "AT", "type": "timestamp_ltz", "nullable": true}),
            json!({"name": "NAME", "type": "text", "length": 100, "nullable": true}),
        ],
        rows,
    )
}

const ORDERS: &str = "SELECT id, amount, day, at, name FROM orders WHERE amount > ? AND region = ?";

#[tokio::test]
async fn a_statement_runs_async_and_its_partitions_arrive_typed_with_bindings() {
    let fx = fixture("xy12345.us-east-1", TOKEN).await;
    fx.server.on(ORDERS, orders_plan().in_parts_of(3).after_polls(2));
    let (path, outcome) = fx
        .step(
            json!({"query": "SELECT id, amount, day, at, name FROM orders WHERE amount > {{min}} AND region = {{region}}",
                   "parameters": {"min": {"type": "integer"}, "region": {"type": "string"}}}),
            json!({"min": 5, "region": "EU"}),
        )
        .await;
    let output = outcome.expect("step");
    assert_eq!(output.rows, 7);
    let batch = fx.read_back(&path).await;
    let ids = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(
        (0..7).map(|i| ids.value(i)).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(batch.column(1).as_primitive::<Decimal128Type>().value(6), 725);
    assert_eq!(batch.column(2).as_primitive::<Date32Type>().value(0), 19_783);
    let at = batch.column(3).as_primitive::<TimestampMicrosecondType>();
    assert!(at.is_null(2) && at.value(0) == 1_709_201_473_000_000);
    assert_eq!(batch.column(4).as_string::<i32>().value(6), "customer 7");

    let submitted = fx.server.submissions();
    assert_eq!(submitted.len(), 1);
    let body = &submitted[0];
    assert_eq!(body["statement"], ORDERS);
    assert_eq!(body["bindings"]["1"], json!({"type": "FIXED", "value": "5"}));
    assert_eq!(body["bindings"]["2"], json!({"type": "TEXT", "value": "EU"}));
    assert_eq!(
        (
            &body["warehouse"],
            &body["database"],
            &body["schema"],
            &body["role"]
        ),
        (
            &json!("COMPUTE_WH"),
            &json!("ANALYTICS"),
            &json!("PUBLIC"),
            &json!("ANALYST")
        )
    );
    let seen = fx.server.seen();
    assert!(seen[0].query.contains("async=true") && seen[0].query.contains("requestId="));
    assert!(seen.iter().all(|s| {
        s.headers
            .get("x-snowflake-authorization-token-type")
            .map(String::as_str)
            == Some("OAUTH")
    }));
    let partitions: Vec<&str> = seen
        .iter()
        .filter(|s| s.query.starts_with("partition="))
        .map(|s| s.query.as_str())
        .collect();
    assert_eq!(
        partitions,
        ["partition=1", "partition=2"],
        "partitions 1 and 2 fetched once each (gzip)"
    );
    assert!(fx.server.cancels().is_empty());
}

#[tokio::test]
async fn a_failed_statement_is_invalid_query_with_its_sqlstate() {
    let fx = fixture("acme-prod", TOKEN).await;
    let (_, outcome) = fx
        .step(json!({"query": "SELECT * FROM missing"}), json!({}))
        .await;
    let error = outcome.expect_err("unknown table");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert_eq!(error.code.as_deref(), Some("42S02"));
    assert!(error.message.contains("does not exist"), "{}", error.message);
}

#[tokio::test]
async fn throttles_are_waited_out_after_retry_after() {
    let fx = fixture("acme_throttled", TOKEN).await;
    fx.server.on(
        "SELECT 1 AS ONE",
        Plan::rows(
            vec![json!({"name": "ONE", "type": "fixed", "precision": 1, "scale": 0})],
            vec![vec![json!("1")]],
        ),
    );
    fx.server.throttle(1, 429, Some("1"));
    fx.server.throttle(1, 503, Some("1"));
    let started = Instant::now();
    let (_, outcome) = fx.step(json!({"query": "SELECT 1 AS ONE"}), json!({})).await;
    assert_eq!(outcome.expect("step").rows, 1);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_refused_token_without_a_refresher_is_authentication_failed() {
    let fx = fixture("acme-expired", "a-token-snowflake-refuses").await;
    let (_, outcome) = fx.step(json!({"query": "SELECT 1"}), json!({})).await;
    let error = outcome.expect_err("401");
    assert_eq!(error.error_type, ErrorKind::AuthenticationFailed);
    let outcome = fx.handle.test(&[], &fx.policy).await.expect_err("401");
    assert_eq!(outcome.kind(), ErrorKind::AuthenticationFailed);
}

#[tokio::test]
async fn a_connection_test_runs_select_current_version() {
    let fx = fixture("acme-test", TOKEN).await;
    fx.server.on(
        "SELECT CURRENT_VERSION()",
        Plan::rows(
            vec![json!({"name": "CURRENT_VERSION()", "type": "text"})],
            vec![vec![json!("8.40.1")]],
        ),
    );
    let details = fx.handle.test(&[], &fx.policy).await.expect("test");
    assert_eq!(details.version.as_deref(), Some("Snowflake 8.40.1"));
}

#[test]
fn account_identifiers_name_their_host() {
    assert_eq!(
        account_host("XY12345.us-east-1").expect("locator"),
        "xy12345.us-east-1.snowflakecomputing.com"
    );
    assert_eq!(
        account_host("myorg-my_account").expect("org"),
        "myorg-my-account.snowflakecomputing.com"
    );
    for bad in ["", "evil.com/", "a..b", "a b", "x@y"] {
        assert!(account_host(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_cancelled_step_cancels_its_running_statement_on_snowflake() {
    let fx = fixture("acme-cancel", TOKEN).await;
    fx.server.on(
        "SELECT SLOW()",
        Plan::rows(vec![json!({"name": "X", "type": "text"})], vec![vec![json!("x")]]).after_polls(10_000),
    );
    let config: Map<String, Value> = json!({"query": "SELECT SLOW()"})
        .as_object()
        .cloned()
        .expect("config");
    let supplied = Map::new();
    let run = Run {
        handle: fx.handle.as_ref(),
        step: StepRequest {
            step_type: StepType::SqlQuery,
            connector: TypeId::Snowflake.decl(),
            config: &config,
            supplied: &supplied,
            policy: &fx.policy,
        },
    };
    let path = fx.target.step_path(&ferry_testkit::ulid(), "step_1");
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        stop.cancel();
    });
    let outcome = run_step_with(
        &ExtractOptions::default(),
        &run,
        &Destination::new(&fx.target, &path),
        &|_, _| {},
        &cancel,
        || async { true },
    )
    .await;
    assert!(outcome.expect_err("cancelled").is_cancelled());
    let cancelled = ferry_testkit::eventually(Duration::from_secs(5), || async {
        fx.server.cancels().len() == 1
    })
    .await;
    assert!(
        cancelled,
        "the statement is cancelled on Snowflake: {:?}",
        fx.server.cancels()
    );
}
