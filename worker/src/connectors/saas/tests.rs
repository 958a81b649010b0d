//! `saas_extract` steps on the SaaS family against the vendors' stand-ins
//! of `ferry-testkit` (`saas.rs`: the documented requests, answers,
//! paging, errors and limits on 127.0.0.1), through the real client and
//! sink, read back from Parquet.

use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use ferry_shared::connectors::TypeId;
use ferry_shared::objects::ObjectTarget;
use ferry_testkit::saas::{ReportData, SaasServer, Vendor as Standin};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, json};
use tempfile::TempDir;

use super::*;
use crate::connectors::oauth_http::testing::serve_at;
use crate::extract::{Destination, ExtractOptions, StepOutput, StepRead, run_step_with};

const TOKEN: &str = "at-saas-test-0123456789";

struct Fixture {
    server: SaasServer,
    type_id: TypeId,
    target: ObjectTarget,
    policy: NetworkPolicy,
    handle: Box<dyn ConnectorPool>,
    _dir: TempDir,
}

/// A stand-in for `vendor` and a pool on it holding `token`.
async fn fixture(vendor: Standin, token: &str) -> Fixture {
    let server = SaasServer::with_token(vendor, TOKEN).await;
    let (type_id, config) = match vendor {
        Standin::Stripe => {
            serve_at(stripe::HOST, server.addr);
            (TypeId::Stripe, json!({"account_id": "acct_1"}))
        }
        Standin::Hubspot => {
            serve_at(hubspot::HOST, server.addr);
            (TypeId::Hubspot, json!({}))
        }
        Standin::Salesforce => (
            TypeId::Salesforce,
            json!({"instance_url": server.url(), "api_version": "v59.0", "sandbox": false}),
        ),
        Standin::GoogleAnalytics => {
            serve_at(google_analytics::HOST, server.addr);
            (TypeId::GoogleAnalytics, json!({"property_id": "123456789"}))
        }
    };
    let mut config = config.as_object().cloned().expect("config");
    config.insert("access_token".into(), json!(token));
    config.insert("refresh_token".into(), json!("rt-unused"));
    config.insert("token_type".into(), json!("Bearer"));
    let spec = ConnectorSpec {
        uuid: "conn_saas".into(),
        org_id: "org_test".into(),
        connector_type: type_id.as_str().into(),
        version: 1,
        config,
    };
    spec.check_fields(type_id.decl())
        .expect("the tokens are not refused");
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = NetworkPolicy {
        allow_private_networks: true,
        sqlite_dir: dir.path().to_path_buf(),
        trusted_roots: Default::default(),
    };
    let handle = Saas.open(&spec, &policy).await.expect("pool");
    let url = Url::from_directory_path(dir.path().join("results")).expect("url");
    Fixture {
        server,
        type_id,
        target: ObjectTarget::open(url.as_str()).expect("target"),
        policy,
        handle,
        _dir: dir,
    }
}

struct Run<'a> {
    handle: &'a dyn ConnectorPool,
    step: StepRequest<'a>,
}

#[async_trait]
impl StepRead for Run<'_> {
    async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        self.handle.run(&self.step, out).await
    }
}

impl Fixture {
    /// Runs a `saas_extract` step with `config` (its connector added).
    async fn step(&self, config: Value) -> (Path, Result<StepOutput, ExtractError>) {
        self.step_with(config, json!({})).await
    }

    /// Runs a `saas_extract` step with `config` and execution parameters
    /// `supplied`.
    async fn step_with(&self, config: Value, supplied: Value) -> (Path, Result<StepOutput, ExtractError>) {
        let mut config: Map<String, Value> = config.as_object().cloned().expect("config");
        config.insert("connector_uuid".into(), json!("conn_saas"));
        let supplied: Map<String, Value> = supplied.as_object().cloned().unwrap_or_default();
        let run = Run {
            handle: self.handle.as_ref(),
            step: StepRequest {
                step_type: StepType::SaasExtract,
                connector: self.type_id.decl(),
                config: &config,
                supplied: &supplied,
                policy: &self.policy,
            },
        };
        let path = self.target.step_path(&ferry_testkit::ulid(), "step_1");
        let options = ExtractOptions {
            batch_rows: 1000,
            ..ExtractOptions::default()
        };
        let outcome = run_step_with(
            &options,
            &run,
            &Destination::new(&self.target, &path),
            &|_, _| {},
            &CancellationToken::new(),
            || async { true },
        )
        .await;
        (path, outcome)
    }

    /// The Parquet object at `path` as one batch.
    async fn read_back(&self, path: &Path) -> RecordBatch {
        let bytes = self
            .target
            .store
            .get(path)
            .await
            .expect("object")
            .bytes()
            .await
            .expect("bytes");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).expect("concat")
    }

    async fn rows(&self, config: Value) -> RecordBatch {
        let (path, outcome) = self.step(config).await;
        let output = outcome.expect("the step succeeds");
        assert_eq!(output.read_path, ReadPath::Saas);
        self.read_back(&path).await
    }
}

fn names(batch: &RecordBatch) -> Vec<String> {
    batch.schema().fields().iter().map(|f| f.name().clone()).collect()
}

fn texts(batch: &RecordBatch, column: &str) -> Vec<String> {
    let array = batch.column_by_name(column).expect("column");
    let array = array.as_string::<i32>();
    (0..array.len()).map(|i| array.value(i).to_owned()).collect()
}

fn customers(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({"id": format!("cus_{i:04}"), "object": "customer", "email": format!("c{i}@example.com"),
                   "created": 1_700_000_000 + i as i64, "balance": i as i64 * 100, "livemode": false,
                   "metadata": {"tier": if i % 2 == 0 { "gold" } else { "silver" }}})
        })
        .collect()
}

#[tokio::test]
async fn stripe_lists_page_with_starting_after_until_has_more_is_false() {
    let fixture = fixture(Standin::Stripe, TOKEN).await;
    fixture.server.set_list("customers", customers(250));
    let batch = fixture.rows(json!({"object": "customers"})).await;
    assert_eq!(batch.num_rows(), 250);
    assert_eq!(texts(&batch, "id")[249], "cus_0249");
    assert_eq!(
        batch.column_by_name("balance").expect("balance").data_type(),
        &DataType::Int64
    );
    assert!(
        texts(&batch, "metadata")[0].contains("gold"),
        "nested objects as JSON text"
    );
    let requests = fixture.server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].query.get("limit"), Some(&json!("100")));
    assert_eq!(requests[0].query.get("starting_after"), None);
    assert_eq!(requests[1].query.get("starting_after"), Some(&json!("cus_0099")));
    assert_eq!(requests[2].query.get("starting_after"), Some(&json!("cus_0199")));
    assert_eq!(
        requests[0].headers.get("authorization").map(String::as_str),
        Some(&*format!("Bearer {TOKEN}"))
    );
}

#[tokio::test]
async fn stripe_filters_go_as_list_parameters_and_limit_bounds_the_read() {
    let fixture = fixture(Standin::Stripe, TOKEN).await;
    fixture.server.set_list("customers", customers(40));
    let batch = fixture
        .rows(json!({"object": "customers", "params": {"created[gte]": 1_700_000_010}, "page_size": 10, "limit": 25}))
        .await;
    assert_eq!(batch.num_rows(), 25);
    assert_eq!(texts(&batch, "id")[0], "cus_0010");
    let requests = fixture.server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[2].query.get("limit"),
        Some(&json!("5")),
        "only what is still wanted"
    );
    assert_eq!(requests[0].query.get("created[gte]"), Some(&json!("1700000010")));
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_and_the_page_asked_again() {
    let fixture = fixture(Standin::Stripe, TOKEN).await;
    fixture.server.set_list("charges", customers(5));
    fixture.server.throttle_next(2, Some(1));
    let started = Instant::now();
    let batch = fixture.rows(json!({"object": "charges"})).await;
    assert_eq!(batch.num_rows(), 5);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fixture.server.answered(429), 2);
    assert_eq!(fixture.server.answered(200), 1);
}

#[tokio::test]
async fn an_unknown_stripe_list_is_invalid_query_with_stripe_s_message() {
    let fixture = fixture(Standin::Stripe, TOKEN).await;
    let (_, outcome) = fixture.step(json!({"object": "nonsense"})).await;
    let error = outcome.expect_err("unknown list");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert_eq!(error.code.as_deref(), Some("404"));
    assert!(
        error.message.contains("Unrecognized request URL"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_refused_token_without_a_refresher_is_authentication_failed_401() {
    let fixture = fixture(Standin::Stripe, "at-revoked").await;
    fixture.server.set_list("customers", customers(1));
    let (_, outcome) = fixture.step(json!({"object": "customers"})).await;
    let error = outcome.expect_err("refused");
    assert_eq!(error.error_type, ErrorKind::AuthenticationFailed);
    assert_eq!(error.code.as_deref(), Some("401"));
    assert!(!error.message.contains("at-revoked"), "{}", error.message);
    let test = fixture
        .handle
        .test(&[], &fixture.policy)
        .await
        .expect_err("test refused");
    assert_eq!(test.kind(), ErrorType::AuthenticationFailed);
}

fn contacts(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({"id": (1000 + i).to_string(),
                   "properties": {"email": format!("p{i}@example.com"), "firstname": format!("P{i}"),
                                  "hs_object_id": (1000 + i).to_string()},
                   "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-02-01T00:00:00.000Z",
                   "archived": false})
        })
        .collect()
}

#[tokio::test]
async fn hubspot_objects_page_with_after_and_read_the_asked_properties() {
    let fixture = fixture(Standin::Hubspot, TOKEN).await;
    fixture.server.set_list("contacts", contacts(25));
    let batch = fixture
        .rows(json!({"object": "contacts", "fields": ["email", "lastname"], "page_size": 10}))
        .await;
    assert_eq!(batch.num_rows(), 25);
    assert_eq!(
        names(&batch),
        ["id", "email", "lastname", "createdAt", "updatedAt", "archived"]
    );
    assert_eq!(texts(&batch, "id")[24], "1024");
    assert_eq!(texts(&batch, "email")[3], "p3@example.com");
    assert_eq!(
        batch.column_by_name("lastname").expect("lastname").null_count(),
        25
    );
    let requests = fixture.server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].query.get("properties"),
        Some(&json!("email,lastname"))
    );
    assert_eq!(requests[1].query.get("after"), Some(&json!("10")));
    assert_eq!(requests[2].query.get("after"), Some(&json!("20")));
}

#[tokio::test]
async fn hubspot_s_rate_limit_headers_pace_the_reads_so_no_call_is_refused() {
    let fixture = fixture(Standin::Hubspot, TOKEN).await;
    fixture.server.set_list("deals", contacts(12));
    fixture.server.set_hubspot_window(2, Duration::from_millis(400));
    let started = Instant::now();
    let batch = fixture.rows(json!({"object": "deals", "page_size": 2})).await;
    assert_eq!(batch.num_rows(), 12);
    assert_eq!(fixture.server.answered(429), 0, "the window was waited for");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}

fn accounts(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| json!({"Id": format!("001{i:012}"), "Name": format!("Account {i}"), "AnnualRevenue": i as f64 * 1.5,
                        "NumberOfEmployees": i}))
        .collect()
}

#[tokio::test]
async fn salesforce_soql_follows_next_records_url_with_the_asked_batch_size() {
    let fixture = fixture(Standin::Salesforce, TOKEN).await;
    fixture.server.set_sobject("Account", accounts(450));
    let batch = fixture
        .rows(json!({"object": "Account", "fields": ["Id", "Name", "NumberOfEmployees"], "where": "Name != null", "page_size": 200}))
        .await;
    assert_eq!(batch.num_rows(), 450);
    assert_eq!(
        names(&batch),
        ["Id", "Name", "NumberOfEmployees"],
        "no attributes column"
    );
    let employees = batch.column_by_name("NumberOfEmployees").expect("column");
    assert_eq!(employees.as_primitive::<Int64Type>().value(449), 449);
    let requests = fixture.server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        requests[0].query.get("q"),
        Some(&json!(
            "SELECT Id, Name, NumberOfEmployees FROM Account WHERE Name != null"
        ))
    );
    assert_eq!(requests[0].path, "/services/data/v59.0/query");
    assert_eq!(
        requests[1].path,
        "/services/data/v59.0/query/01gD0000002HU6KIAW-200"
    );
    assert_eq!(
        requests[0]
            .headers
            .get("sforce-query-options")
            .map(String::as_str),
        Some("batchSize=200")
    );
}

#[tokio::test]
async fn salesforce_errors_and_a_used_up_daily_limit_are_reported_as_such() {
    let fixture = fixture(Standin::Salesforce, TOKEN).await;
    fixture.server.set_sobject("Account", accounts(450));
    let (_, outcome) = fixture.step(json!({"query": "SELECT Id FROM Nope__c"})).await;
    let error = outcome.expect_err("unknown sObject");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert!(
        error.message.contains("INVALID_TYPE") && error.message.contains("Nope__c"),
        "{}",
        error.message
    );

    // The first page's Sforce-Limit-Info shows the day's last call: the
    // read stops there, before Salesforce refuses the next one.
    fixture.server.set_api_usage(14_999, 15_000);
    let (_, outcome) = fixture
        .step(json!({"query": "SELECT Id FROM Account", "page_size": 200}))
        .await;
    let error = outcome.expect_err("limit used up");
    assert_eq!(error.error_type, ErrorKind::RateLimited);
    assert_eq!(error.code.as_deref(), Some("REQUEST_LIMIT_EXCEEDED"));
    assert_eq!(fixture.server.answered(403), 0);
}

fn report(rows: usize) -> ReportData {
    ReportData {
        dimensions: vec!["date".into(), "country".into()],
        metrics: vec![
            ("activeUsers".into(), "TYPE_INTEGER".into()),
            ("engagementRate".into(), "TYPE_FLOAT".into()),
        ],
        rows: (0..rows)
            .map(|i| {
                (
                    vec![format!("202401{:02}", i % 28 + 1), format!("Country {i}")],
                    vec![(i * 10).to_string(), format!("0.{}", i % 10)],
                )
            })
            .collect(),
    }
}

#[tokio::test]
async fn google_analytics_reports_page_with_offset_until_row_count() {
    let fixture = fixture(Standin::GoogleAnalytics, TOKEN).await;
    fixture.server.set_report("123456789", report(25));
    let query = json!({"dimensions": [{"name": "date"}, {"name": "country"}],
                       "metrics": [{"name": "activeUsers"}, {"name": "engagementRate"}],
                       "dateRanges": [{"startDate": "28daysAgo", "endDate": "today"}]});
    let batch = fixture.rows(json!({"query": query, "page_size": 10})).await;
    assert_eq!(batch.num_rows(), 25);
    assert_eq!(
        names(&batch),
        ["date", "country", "activeUsers", "engagementRate"]
    );
    assert_eq!(texts(&batch, "date")[0], "20240101", "dimensions stay text");
    let users = batch.column_by_name("activeUsers").expect("column");
    assert_eq!(users.as_primitive::<Int64Type>().value(24), 240);
    let rate = batch.column_by_name("engagementRate").expect("column");
    assert_eq!(rate.as_primitive::<Float64Type>().value(3), 0.3);
    let requests = fixture.server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].path, "/v1beta/properties/123456789:runReport");
    let offsets: Vec<_> = requests.iter().map(|r| r.body["offset"].clone()).collect();
    assert_eq!(offsets, [json!(0), json!(10), json!(20)]);
    assert_eq!(requests[0].body["limit"], json!(10));
    assert_eq!(requests[0].body["returnPropertyQuota"], json!(true));
    assert_eq!(requests[0].body["dateRanges"], query["dateRanges"]);
}

#[tokio::test]
async fn google_analytics_quota_and_argument_errors() {
    let fixture = fixture(Standin::GoogleAnalytics, TOKEN).await;
    fixture.server.set_report("123456789", report(25));
    let (_, outcome) = fixture
        .step(json!({"query": {"dimensions": [{"name": "city"}], "metrics": [{"name": "activeUsers"}]}}))
        .await;
    let error = outcome.expect_err("bad dimension");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert!(
        error.message.contains("INVALID_ARGUMENT") && error.message.contains("city"),
        "{}",
        error.message
    );

    // One token left: the first page's quota shows none remain, so the
    // read ends rate_limited instead of asking again.
    fixture.server.set_tokens_left(1);
    let (_, outcome) = fixture
        .step(json!({"query": {"metrics": [{"name": "activeUsers"}]}, "page_size": 10}))
        .await;
    let error = outcome.expect_err("quota");
    assert_eq!(error.error_type, ErrorKind::RateLimited);
    assert_eq!(error.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
}

#[tokio::test]
async fn connection_tests_make_one_cheap_documented_call() {
    for (vendor, path) in [
        (Standin::Stripe, "/v1/balance"),
        (Standin::Hubspot, "/crm/v3/objects/contacts"),
        (Standin::Salesforce, "/services/data/v59.0/limits"),
        (Standin::GoogleAnalytics, "/v1beta/properties/123456789/metadata"),
    ] {
        let fixture = fixture(vendor, TOKEN).await;
        let details = fixture
            .handle
            .test(&[], &fixture.policy)
            .await
            .expect("test passes");
        assert!(details.version.is_some(), "{vendor:?}");
        let requests = fixture.server.requests();
        assert_eq!(requests.len(), 1, "{vendor:?}");
        assert_eq!(requests[0].path, path);
    }
}

#[tokio::test]
async fn a_step_whose_options_do_not_fit_the_vendor_fails_naming_the_field() {
    let fixture = fixture(Standin::Hubspot, TOKEN).await;
    let (_, outcome) = fixture.step(json!({"query": "SELECT Id FROM Contact"})).await;
    let error = outcome.expect_err("not for hubspot");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert!(error.message.starts_with("config.object"), "{}", error.message);
    assert!(fixture.server.requests().is_empty());
}

#[tokio::test]
async fn parameters_go_into_stripe_filters_soql_literals_and_report_strings() {
    let stripe = fixture(Standin::Stripe, TOKEN).await;
    stripe.server.set_list("customers", customers(30));
    let config = json!({"object": "customers", "params": {"created[gte]": "{{since}}"},
                        "parameters": {"since": {"type": "integer"}}});
    let (path, outcome) = stripe.step_with(config, json!({"since": 1_700_000_020})).await;
    outcome.expect("runs");
    assert_eq!(stripe.read_back(&path).await.num_rows(), 10);
    assert_eq!(
        stripe.server.requests()[0].query.get("created[gte]"),
        Some(&json!("1700000020"))
    );

    let salesforce = fixture(Standin::Salesforce, TOKEN).await;
    salesforce.server.set_sobject("Account", accounts(3));
    let config = json!({"object": "Account", "fields": ["Id"], "where": "Name = {{name}} AND CreatedDate > {{at}}",
                        "parameters": {"name": {"type": "string"}, "at": {"type": "timestamp"}}});
    let (_, outcome) = salesforce
        .step_with(
            config,
            json!({"name": "O'Brien", "at": "2024-03-01T10:00:00+02:00"}),
        )
        .await;
    outcome.expect("runs");
    assert_eq!(
        salesforce.server.requests()[0].query.get("q"),
        Some(&json!(
            "SELECT Id FROM Account WHERE Name = 'O\\'Brien' AND CreatedDate > 2024-03-01T08:00:00Z"
        ))
    );

    let google = fixture(Standin::GoogleAnalytics, TOKEN).await;
    google.server.set_report("123456789", report(3));
    let config = json!({"query": {"metrics": [{"name": "activeUsers"}],
                                  "dateRanges": [{"startDate": "{{since}}", "endDate": "today"}],
                                  "keepEmptyRows": "{{empty}}"},
                        "parameters": {"since": {"type": "date"}, "empty": {"type": "boolean", "default": false}}});
    let (_, outcome) = google
        .step_with(config.clone(), json!({"since": "2024-03-01"}))
        .await;
    outcome.expect("runs");
    let body = &google.server.requests()[0].body;
    assert_eq!(body["dateRanges"][0]["startDate"], "2024-03-01");
    assert_eq!(body["keepEmptyRows"], false, "a whole placeholder keeps its type");
    let (_, outcome) = google.step_with(config, json!({})).await;
    assert_eq!(
        outcome.expect_err("missing").error_type,
        ErrorKind::InvalidParameters
    );
}

#[tokio::test]
async fn an_empty_report_has_the_columns_of_its_headers() {
    let fixture = fixture(Standin::GoogleAnalytics, TOKEN).await;
    fixture.server.set_report("123456789", report(0));
    let query = json!({"dimensions": [{"name": "country"}], "metrics": [{"name": "activeUsers"}]});
    let (path, outcome) = fixture.step(json!({"query": query})).await;
    assert_eq!(outcome.expect("runs").rows, 0);
    let bytes = fixture
        .target
        .store
        .get(&path)
        .await
        .expect("object")
        .bytes()
        .await
        .expect("bytes");
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("parquet");
    let schema = builder.schema();
    let columns: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(
        columns,
        [
            ("country".to_owned(), DataType::Utf8),
            ("activeUsers".to_owned(), DataType::Int64)
        ]
    );
}
