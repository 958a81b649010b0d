//! `http_request` steps against an axum server the test starts on a
//! loopback address (port 0), end to end through the pool registry and the
//! Parquet sink to a file:// target, the result read back from the object.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use ferry_shared::domain::{ErrorKind, StepType};
use ferry_shared::objects::ObjectTarget;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::retry::ATTEMPTS;
use crate::connectors::network::testing::treat_as_public;
use crate::connectors::{ConnectorSpec, NetworkPolicy, StepRequest};
use crate::extract::{
    Destination, ExtractError, ExtractOptions, Output, ReadPath, StepOutput, StepRead, run_step_with,
};
use crate::pools::PoolRegistry;

const ITEMS: i64 = 25;
const TOKEN: &str = "step-bearer-token";
const API_KEY: &str = "step-api-key";
const ISSUED: &str = "step-issued-access-token";
const CONN: &str = "conn_01J9ZQ4X3M6R8T2V5W7Y9A1B3C";

/// What the server saw and how it behaves.
#[derive(Default)]
struct Seen {
    /// Every request: when it arrived and its path and query.
    requests: Mutex<Vec<(Instant, String)>>,
    /// TCP connections accepted.
    connections: AtomicUsize,
    tokens_issued: AtomicUsize,
    /// `/throttled` answers 429 while this is above zero.
    throttles_left: AtomicUsize,
    /// The server's own origin, for absolute links.
    origin: Mutex<String>,
}

impl Seen {
    fn requests(&self) -> Vec<(Instant, String)> {
        self.requests.lock().expect("lock").clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(_, uri)| uri.starts_with(prefix))
            .count()
    }
}

type Shared = State<Arc<Seen>>;
type Params = Query<HashMap<String, String>>;

fn item(id: i64) -> Value {
    json!({"id": id, "name": format!("item {id}"), "price": id as f64 + 0.25, "tags": ["t", id]})
}

/// Items `from..to` (1-based ids), clipped to the data set.
fn items(from: i64, count: i64) -> Vec<Value> {
    (from..from + count)
        .filter(|id| (1..=ITEMS).contains(id))
        .map(item)
        .collect()
}

fn number(params: &HashMap<String, String>, name: &str, default: i64) -> i64 {
    params.get(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Which credential a request carried, if it is one the server accepts.
fn credential(headers: &HeaderMap) -> Option<&'static str> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let basic = format!("Basic {}", base64_encode("alice:wonderland"));
    match text(header::AUTHORIZATION) {
        Some(value) if value == format!("Bearer {TOKEN}") => Some("bearer"),
        Some(value) if value == format!("Bearer {ISSUED}") => Some("oauth2"),
        Some(value) if value == basic => Some("basic"),
        _ if headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(API_KEY) => Some("api_key"),
        _ => None,
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn app(seen: Arc<Seen>) -> Router {
    Router::new()
        // page / per_page (default 10): the body is the array.
        .route(
            "/items",
            get(|Query(q): Params| async move {
                let per_page = number(&q, "per_page", 10);
                let page = number(&q, "page", 1);
                axum::Json(items((page - 1) * per_page + 1, per_page))
            }),
        )
        // offset / limit: records under data.items.
        .route(
            "/offset",
            get(|Query(q): Params| async move {
                let offset = number(&q, "offset", 0);
                let limit = number(&q, "limit", 10);
                axum::Json(json!({"data": {"total": ITEMS, "items": items(offset + 1, limit)}}))
            }),
        )
        // after=<id>: 7 per page; paging.next is the last id or null.
        .route(
            "/cursor",
            get(|Query(q): Params| async move {
                let after = number(&q, "after", 0);
                let page = items(after + 1, 7);
                let last = page.last().and_then(|item| item["id"].as_i64());
                let next = match last {
                    Some(last) if last < ITEMS => json!(format!("{last}")),
                    _ => Value::Null,
                };
                axum::Json(json!({"paging": {"next": next}, "records": page}))
            }),
        )
        // page (10 each) with a Link header: relative to page 2, absolute
        // on the same origin after that, none on the last.
        .route(
            "/linked",
            get(|State(seen): Shared, Query(q): Params| async move {
                let page = number(&q, "page", 1);
                let mut headers = HeaderMap::new();
                let next = match page {
                    1 => Some("linked?page=2".to_owned()),
                    p if p * 10 < ITEMS => Some(format!(
                        "{}/linked?page={}",
                        seen.origin.lock().expect("lock"),
                        p + 1
                    )),
                    _ => None,
                };
                let mut links = vec![format!("</linked?page=1>; rel=\"first\"")];
                if let Some(next) = next {
                    links.push(format!("<{next}>; rel=\"next\""));
                }
                headers.insert(header::LINK, links.join(", ").parse().expect("header"));
                (headers, axum::Json(items((page - 1) * 10 + 1, 10)))
            }),
        )
        // Two pages of 3 records naming the credential seen; 401 without one.
        .route(
            "/secure",
            get(|Query(q): Params, headers: HeaderMap| async move {
                let Some(seen) = credential(&headers) else {
                    return StatusCode::UNAUTHORIZED.into_response();
                };
                let page = number(&q, "page", 1);
                let records: Vec<Value> = match page {
                    1 | 2 => (1..=3)
                        .map(|n| json!({"n": (page - 1) * 3 + n, "seen": seen}))
                        .collect(),
                    _ => Vec::new(),
                };
                axum::Json(records).into_response()
            }),
        )
        .route(
            "/token",
            post(
                |State(seen): Shared, headers: HeaderMap, body: String| async move {
                    let client = format!("Basic {}", base64_encode("client-id:client-secret"));
                    let ok = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
                        == Some(client.as_str())
                        && body
                            .split('&')
                            .any(|pair| pair == "grant_type=client_credentials");
                    if !ok {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    seen.tokens_issued.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({"access_token": ISSUED, "token_type": "Bearer", "expires_in": 3600}))
                        .into_response()
                },
            ),
        )
        // 429 (Retry-After: 1 s, then an HTTP date 2 s ahead) while
        // throttles are left, then records.
        .route(
            "/throttled",
            get(|State(seen): Shared| async move {
                let left = seen.throttles_left.load(Ordering::SeqCst);
                if left == 0 {
                    return axum::Json(items(1, 3)).into_response();
                }
                seen.throttles_left.fetch_sub(1, Ordering::SeqCst);
                let retry_after = if left % 2 == 0 {
                    "1".to_owned()
                } else {
                    (chrono::Utc::now() + chrono::Duration::seconds(2))
                        .format("%a, %d %b %Y %H:%M:%S GMT")
                        .to_string()
                };
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, retry_after)],
                    "slow down",
                )
                    .into_response()
            }),
        )
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance") }),
        )
        .route(
            "/gone",
            get(|| async { (StatusCode::NOT_FOUND, r#"{"error": "no such list"}"#) }),
        )
        // A 400 that quotes the credential it was sent.
        .route(
            "/leaky",
            get(|headers: HeaderMap| async move {
                let sent = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (StatusCode::BAD_REQUEST, format!("bad request, you sent {sent}"))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                axum::Json(items(1, 1))
            }),
        )
        // A redirect to the same path on 127.0.0.1 (another origin when
        // the server listens elsewhere).
        .route(
            "/out",
            get(|State(seen): Shared| async move {
                let origin = seen.origin.lock().expect("lock").clone();
                let port = origin.rsplit(':').next().unwrap_or_default().to_owned();
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, format!("http://127.0.0.1:{port}/items"))],
                )
            }),
        )
        .route(
            "/moved",
            get(|uri: Uri| async move {
                let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, format!("/items{query}"))],
                )
            }),
        )
        .route(
            "/users/{id}/orders",
            get(
                |UrlPath(id): UrlPath<String>, Query(q): Params, headers: HeaderMap, uri: Uri| async move {
                    let tenant = headers
                        .get("x-tenant")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    axum::Json(json!([{"raw_path": uri.path(), "id": id,
                        "status": q.get("status"), "day": q.get("day"), "tenant": tenant}]))
                },
            ),
        )
        .route(
            "/search",
            post(
                |headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                    let content_type = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    axum::Json(json!([{"body": body, "content_type": content_type}]))
                },
            ),
        )
        // Page 1 integers, page 2 a float and a new field, then empty.
        .route(
            "/shapes",
            get(|Query(q): Params| async move {
                axum::Json(match number(&q, "page", 1) {
                    1 => json!([{"a": 1}, {"a": 2}]),
                    2 => json!([{"a": 2.5, "b": "x"}]),
                    _ => json!([]),
                })
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            seen.clone(),
            |State(seen): Shared, request: axum::extract::Request, next: axum::middleware::Next| async move {
                let uri = request
                    .uri()
                    .path_and_query()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                seen.requests.lock().expect("lock").push((Instant::now(), uri));
                next.run(request).await
            },
        ))
        .with_state(seen)
}

/// A server, a registry, and a file:// target for results.
struct Fixture {
    seen: Arc<Seen>,
    base_url: String,
    registry: PoolRegistry,
    _metrics: prometheus::Registry,
    target: ObjectTarget,
    _dir: tempfile::TempDir,
}

/// A server on 127.0.0.1 and a registry that allows private networks.
async fn fixture() -> Fixture {
    fixture_on("127.0.0.1", true).await
}

async fn fixture_on(ip: &str, allow_private_networks: bool) -> Fixture {
    let seen = Arc::new(Seen::default());
    let counter = seen.clone();
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let base_url = format!("http://{ip}:{port}");
    *seen.origin.lock().expect("lock") = base_url.clone();
    let listener = listener.tap_io(move |_| {
        counter.connections.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(axum::serve(listener, app(seen.clone())).into_future());
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = prometheus::Registry::new();
    let registry = PoolRegistry::new(
        NetworkPolicy {
            allow_private_networks,
            sqlite_dir: dir.path().join("sqlite"),
            trusted_roots: Default::default(),
        },
        &metrics,
    );
    let url = url::Url::from_directory_path(dir.path().join("results")).expect("url");
    Fixture {
        seen,
        base_url,
        registry,
        _metrics: metrics,
        target: ObjectTarget::open(url.as_str()).expect("file target"),
        _dir: dir,
    }
}

/// A step read through the registry, as the execute job does it.
struct Step<'a> {
    registry: &'a PoolRegistry,
    spec: &'a ConnectorSpec,
    request: StepRequest<'a>,
}

#[async_trait::async_trait]
impl StepRead for Step<'_> {
    async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        self.registry.run_step(self.spec, &self.request, out).await
    }
}

impl Fixture {
    /// A `rest_api` connector on the server with `extra` config fields.
    fn connector(&self, extra: Value) -> ConnectorSpec {
        let mut config = json!({"base_url": self.base_url, "timeout_seconds": 10});
        if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
            config.extend(extra);
        }
        ConnectorSpec {
            uuid: ferry_testkit::unique("conn"),
            org_id: "org_test".into(),
            connector_type: "rest_api".into(),
            version: 1,
            config: config.as_object().cloned().unwrap_or_default(),
        }
    }

    async fn run(&self, spec: &ConnectorSpec, config: Value) -> Result<RecordBatch, ExtractError> {
        self.run_with(spec, config, json!({}), &ExtractOptions::default())
            .await
            .map(|(batch, _)| batch)
    }

    /// Runs a step and reads its Parquet back as one batch.
    async fn run_with(
        &self,
        spec: &ConnectorSpec,
        config: Value,
        supplied: Value,
        options: &ExtractOptions,
    ) -> Result<(RecordBatch, StepOutput), ExtractError> {
        let mut full = json!({"connector_uuid": CONN});
        if let (Some(full), Value::Object(config)) = (full.as_object_mut(), config) {
            full.extend(config);
        }
        let config = full.as_object().cloned().unwrap_or_default();
        let supplied = supplied.as_object().cloned().unwrap_or_default();
        let step = Step {
            registry: &self.registry,
            spec,
            request: StepRequest {
                step_type: StepType::HttpRequest,
                connector: ferry_shared::connectors::find("rest_api").expect("declared"),
                config: &config,
                supplied: &supplied,
                policy: self.registry.policy(),
            },
        };
        let path = self.target.step_path(&ferry_testkit::unique("exec"), "step_1");
        let destination = Destination::new(&self.target, &path);
        let output = run_step_with(
            options,
            &step,
            &destination,
            &|_, _| {},
            &CancellationToken::new(),
            || async { true },
        )
        .await?;
        Ok((self.read_back(&path).await, output))
    }

    async fn read_back(&self, path: &Path) -> RecordBatch {
        let bytes = self
            .target
            .store
            .get(path)
            .await
            .expect("the object exists")
            .bytes()
            .await
            .expect("bytes");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("parquet");
        let schema = reader.schema().clone();
        let batches: Vec<RecordBatch> = reader
            .build()
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("batches");
        arrow::compute::concat_batches(&schema, &batches).expect("concat")
    }
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<i64> {
    let array = batch.column_by_name(column).expect("column");
    array.as_primitive::<Int64Type>().values().to_vec()
}

fn texts(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = batch.column_by_name(column).expect("column");
    let array = array.as_string::<i32>();
    (0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i).to_owned()))
        .collect()
}

/// The records every data-set test expects: ids `from..=to` with their
/// fields, each column checked.
fn assert_items(batch: &RecordBatch, ids: std::ops::RangeInclusive<i64>) {
    let expected: Vec<i64> = ids.collect();
    assert_eq!(ints(batch, "id"), expected);
    let names: Vec<Option<String>> = expected.iter().map(|id| Some(format!("item {id}"))).collect();
    assert_eq!(texts(batch, "name"), names);
    let prices = batch.column_by_name("price").expect("price");
    let prices: Vec<f64> = prices.as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(
        prices,
        expected.iter().map(|id| *id as f64 + 0.25).collect::<Vec<_>>()
    );
    let tags: Vec<Option<String>> = expected.iter().map(|id| Some(format!("[\"t\",{id}]"))).collect();
    assert_eq!(texts(batch, "tags"), tags, "nested arrays keep their JSON text");
    let schema = batch.schema();
    let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
    assert_eq!(
        types,
        [
            &DataType::Int64,
            &DataType::Utf8,
            &DataType::Float64,
            &DataType::Utf8
        ]
    );
}

// ------------------------------------------------------------- pagination

#[tokio::test]
async fn http_request_page_pagination_reads_every_page_until_a_short_one() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let batch = f
        .run(
            &spec,
            json!({"path": "/items", "pagination": {"type": "page", "limit": 10}}),
        )
        .await
        .expect("step");
    assert_items(&batch, 1..=25);
    let uris: Vec<String> = f.seen.requests().into_iter().map(|(_, uri)| uri).collect();
    assert_eq!(
        uris,
        [
            "/items?page=1&per_page=10",
            "/items?page=2&per_page=10",
            "/items?page=3&per_page=10"
        ],
        "the short third page is the last"
    );
}

#[tokio::test]
async fn http_request_without_a_limit_pages_until_an_empty_page_and_max_pages_stops_early() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let batch = f
        .run(&spec, json!({"path": "/items", "pagination": {"type": "page"}}))
        .await
        .expect("step");
    assert_items(&batch, 1..=25);
    assert_eq!(f.seen.count("/items"), 4, "three pages and the empty fourth");

    let batch = f
        .run(
            &spec,
            json!({"path": "/items", "query": {"per_page": 5},
                   "pagination": {"type": "page", "start": 2, "max_pages": 2}}),
        )
        .await
        .expect("step");
    assert_items(&batch, 6..=15);
    assert_eq!(f.seen.count("/items"), 6);
}

#[tokio::test]
async fn http_request_offset_pagination_reads_the_records_under_records_path() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let batch = f
        .run(
            &spec,
            json!({"path": "/offset", "records_path": "data.items",
                   "pagination": {"type": "offset", "limit": 10}}),
        )
        .await
        .expect("step");
    assert_items(&batch, 1..=25);
    let uris: Vec<String> = f.seen.requests().into_iter().map(|(_, uri)| uri).collect();
    assert_eq!(
        uris,
        [
            "/offset?offset=0&limit=10",
            "/offset?offset=10&limit=10",
            "/offset?offset=20&limit=10"
        ]
    );
}

#[tokio::test]
async fn http_request_cursor_pagination_follows_the_cursor_until_it_is_null() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let batch = f
        .run(
            &spec,
            json!({"path": "/cursor", "records_path": "records",
                   "pagination": {"type": "cursor", "cursor_param": "after", "cursor_path": "paging.next"}}),
        )
        .await
        .expect("step");
    assert_items(&batch, 1..=25);
    let uris: Vec<String> = f.seen.requests().into_iter().map(|(_, uri)| uri).collect();
    assert_eq!(
        uris,
        [
            "/cursor",
            "/cursor?after=7",
            "/cursor?after=14",
            "/cursor?after=21"
        ]
    );
}

#[tokio::test]
async fn http_request_link_header_pagination_follows_relative_and_absolute_next_links() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let batch = f
        .run(
            &spec,
            json!({"path": "/linked", "pagination": {"type": "link_header"}}),
        )
        .await
        .expect("step");
    assert_items(&batch, 1..=25);
    let uris: Vec<String> = f.seen.requests().into_iter().map(|(_, uri)| uri).collect();
    assert_eq!(uris, ["/linked", "/linked?page=2", "/linked?page=3"]);

    let limited = f
        .run(
            &spec,
            json!({"path": "/linked", "pagination": {"type": "link_header", "max_pages": 1}}),
        )
        .await
        .expect("step");
    assert_items(&limited, 1..=10);
}

#[tokio::test]
async fn http_request_a_next_link_to_another_origin_fails_the_step_without_following_it() {
    let f = fixture().await;
    // The same server under another name is another origin.
    let spec = f.connector(json!({"base_url": f.base_url.replace("127.0.0.1", "localhost")}));
    let error = f
        .run(
            &spec,
            json!({"path": "/linked?page=2", "pagination": {"type": "link_header"}}),
        )
        .await
        .expect_err("another origin");
    assert_eq!(error.error_type, ErrorKind::HttpError);
    assert!(error.message.contains("another origin"), "{}", error.message);
    assert_eq!(f.seen.count("/linked"), 1);
}

#[tokio::test]
async fn http_request_the_pooled_client_is_reused_across_pages_and_steps() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let step = json!({"path": "/items", "pagination": {"type": "page", "limit": 10}});
    f.run(&spec, step.clone()).await.expect("first step");
    f.run(&spec, step).await.expect("second step");
    assert_eq!(f.seen.count("/items"), 6);
    assert_eq!(
        f.seen.connections.load(Ordering::SeqCst),
        1,
        "six requests over one kept-alive connection of the connector's client"
    );
}

// ------------------------------------------------------------------- auth

#[tokio::test]
async fn http_request_every_auth_type_is_sent_on_every_page() {
    let f = fixture().await;
    let token_url = format!("{}/token", f.base_url);
    let auths = [
        ("bearer", json!({"auth_type": "bearer", "auth_token": TOKEN})),
        (
            "basic",
            json!({"auth_type": "basic", "username": "alice", "password": "wonderland"}),
        ),
        (
            "api_key",
            json!({"auth_type": "api_key", "api_key_header": "X-Api-Key", "api_key_value": API_KEY}),
        ),
        (
            "oauth2",
            json!({"auth_type": "oauth2", "token_url": token_url, "client_id": "client-id",
                   "client_secret": "client-secret"}),
        ),
    ];
    for (name, auth) in auths {
        let spec = f.connector(auth);
        let batch = f
            .run(&spec, json!({"path": "/secure", "pagination": {"type": "page"}}))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ints(&batch, "n"), [1, 2, 3, 4, 5, 6], "{name}");
        assert_eq!(texts(&batch, "seen"), vec![Some(name.to_owned()); 6], "{name}");
    }
    assert_eq!(
        f.seen.tokens_issued.load(Ordering::SeqCst),
        1,
        "one OAuth2 token serves every page"
    );
    let error = f
        .run(
            &f.connector(json!({"auth_type": "bearer", "auth_token": "wrong"})),
            json!({"path": "/secure"}),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        (error.error_type, error.code.as_deref()),
        (ErrorKind::AuthenticationFailed, Some("401"))
    );
}

// ---------------------------------------------------------------- retries

#[tokio::test]
async fn http_request_a_rate_limited_request_waits_as_retry_after_says_then_succeeds() {
    let f = fixture().await;
    f.seen.throttles_left.store(2, Ordering::SeqCst);
    let spec = f.connector(json!({}));
    let batch = f.run(&spec, json!({"path": "/throttled"})).await.expect("step");
    assert_eq!(ints(&batch, "id"), [1, 2, 3]);
    let times: Vec<Instant> = f.seen.requests().into_iter().map(|(at, _)| at).collect();
    assert_eq!(times.len(), 3, "two 429s, then the records");
    // Retry-After: 1, then an HTTP date 2 s ahead (whole seconds: 1–2 s).
    for (gap, form) in [
        (times[1] - times[0], "seconds"),
        (times[2] - times[1], "HTTP date"),
    ] {
        assert!(gap >= Duration::from_millis(950), "{form}: waited only {gap:?}");
        assert!(gap < Duration::from_secs(5), "{form}: waited {gap:?}");
    }
}

#[tokio::test]
async fn http_request_a_persistent_server_error_fails_with_the_last_status_after_bounded_tries() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let started = Instant::now();
    let error = f.run(&spec, json!({"path": "/down"})).await.expect_err("down");
    assert_eq!(
        (error.error_type, error.code.as_deref()),
        (ErrorKind::HttpError, Some("503"))
    );
    assert!(
        error.message.contains("GET /down answered HTTP 503") && error.message.contains("maintenance"),
        "{}",
        error.message
    );
    assert!(error.message.contains("after 4 attempts"), "{}", error.message);
    assert_eq!(f.seen.count("/down"), ATTEMPTS as usize);
    assert!(started.elapsed() >= Duration::from_millis(125 + 250 + 500));
    assert_eq!(
        crate::connectors::errors::disposition(error.error_type, error.code.as_deref()),
        crate::connectors::errors::Disposition::Retry,
        "the job may still try the step again later"
    );
}

#[tokio::test]
async fn http_request_other_client_errors_fail_at_once_with_a_secret_free_excerpt() {
    let f = fixture().await;
    let spec = f.connector(json!({"auth_type": "bearer", "auth_token": TOKEN}));
    let error = f.run(&spec, json!({"path": "/gone"})).await.expect_err("404");
    assert_eq!(
        (error.error_type, error.code.as_deref()),
        (ErrorKind::HttpError, Some("404"))
    );
    assert!(
        error.message.contains(r#"{"error": "no such list"}"#),
        "{}",
        error.message
    );
    assert_eq!(f.seen.count("/gone"), 1, "not retried");

    let error = f.run(&spec, json!({"path": "/leaky"})).await.expect_err("400");
    assert_eq!(error.code.as_deref(), Some("400"));
    assert!(!error.message.contains(TOKEN), "{}", error.message);
    assert!(
        !error.message.contains("you sent"),
        "the excerpt is left out: {}",
        error.message
    );
    assert_eq!(
        crate::connectors::errors::disposition(error.error_type, error.code.as_deref()),
        crate::connectors::errors::Disposition::Fail
    );
}

#[tokio::test]
async fn http_request_a_request_slower_than_timeout_seconds_times_out() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let started = Instant::now();
    let error = f
        .run(&spec, json!({"path": "/slow", "timeout_seconds": 1}))
        .await
        .expect_err("timeout");
    assert_eq!(error.error_type, ErrorKind::Timeout, "{}", error.message);
    assert_eq!(f.seen.count("/slow"), ATTEMPTS as usize);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(u64::from(ATTEMPTS)) && elapsed < Duration::from_secs(10),
        "each try waits the step's 1 s, not the connector's 10 s: {elapsed:?}"
    );
}

// ---------------------------------------------------------------- network

#[tokio::test]
async fn http_request_a_redirect_to_a_blocked_address_is_blocked_address() {
    // The API listens on 127.0.0.2, treated as public; its redirect names
    // 127.0.0.1, which the policy refuses.
    let f = fixture_on("127.0.0.2", false).await;
    treat_as_public("127.0.0.2".parse::<IpAddr>().expect("ip"));
    let spec = f.connector(json!({}));
    let batch = f
        .run(&spec, json!({"path": "/items", "query": {"per_page": 2}}))
        .await
        .expect("the API itself is allowed");
    assert_eq!(ints(&batch, "id"), [1, 2]);
    let error = f.run(&spec, json!({"path": "/out"})).await.expect_err("blocked");
    assert_eq!(error.error_type, ErrorKind::BlockedAddress, "{}", error.message);
    assert_eq!(f.seen.count("/out"), 1);
}

#[tokio::test]
async fn http_request_same_origin_redirects_are_followed_and_others_fail_the_step() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let batch = f
        .run(&spec, json!({"path": "/moved", "query": {"per_page": 3}}))
        .await
        .expect("followed");
    assert_items(&batch, 1..=3);
    let elsewhere = f.connector(json!({"base_url": f.base_url.replace("127.0.0.1", "localhost")}));
    let error = f
        .run(&elsewhere, json!({"path": "/out"}))
        .await
        .expect_err("another origin");
    assert_eq!(
        (error.error_type, error.code.as_deref()),
        (ErrorKind::HttpError, Some("302"))
    );
    assert!(error.message.contains("http://127.0.0.1:"), "{}", error.message);
    assert_eq!(f.seen.count("/items"), 1, "the other origin got no request");
}

// ------------------------------------------------------------- parameters

#[tokio::test]
async fn http_request_parameters_are_substituted_and_escaped_in_path_query_headers_and_body() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let (batch, _) = f
        .run_with(
            &spec,
            json!({"path": "/users/{{user}}/orders", "query": {"status": "{{status}}", "day": "{{day}}"},
                   "headers": {"X-Tenant": "tenant-{{n}}"},
                   "parameters": {"day": {"type": "date"}, "n": {"type": "integer", "default": 7}}}),
            json!({"user": "a/b c?#", "status": "open & shut", "day": "2026-03-29"}),
            &ExtractOptions::default(),
        )
        .await
        .expect("step");
    assert_eq!(
        texts(&batch, "raw_path"),
        [Some("/users/a%2Fb%20c%3F%23/orders".into())]
    );
    assert_eq!(texts(&batch, "id"), [Some("a/b c?#".into())]);
    assert_eq!(texts(&batch, "status"), [Some("open & shut".into())]);
    assert_eq!(texts(&batch, "day"), [Some("2026-03-29".into())]);
    assert_eq!(texts(&batch, "tenant"), [Some("tenant-7".into())]);

    let (batch, _) = f
        .run_with(
            &spec,
            json!({"method": "POST", "path": "/search",
                   "body": {"limit": "{{n}}", "q": "name:{{who}}", "flags": ["{{on}}"]},
                   "parameters": {"n": {"type": "integer"}, "on": {"type": "boolean"}}}),
            json!({"n": 5, "who": "ann", "on": true}),
            &ExtractOptions::default(),
        )
        .await
        .expect("step");
    let body: Value = serde_json::from_str(texts(&batch, "body")[0].as_deref().expect("body")).expect("json");
    assert_eq!(body, json!({"limit": 5, "q": "name:ann", "flags": [true]}));
    assert_eq!(texts(&batch, "content_type"), [Some("application/json".into())]);

    for climb in ["..", "."] {
        let error = f
            .run_with(
                &spec,
                json!({"path": "/users/{{user}}/orders"}),
                json!({"user": climb}),
                &ExtractOptions::default(),
            )
            .await
            .expect_err("refused");
        assert_eq!(error.error_type, ErrorKind::InvalidParameters, "{climb}");
    }
    let missing = f
        .run(&spec, json!({"path": "/users/{{user}}/orders"}))
        .await
        .expect_err("no value");
    assert_eq!(missing.error_type, ErrorKind::InvalidParameters);
}

// ---------------------------------------------------------------- columns

#[tokio::test]
async fn http_request_records_that_widen_after_the_first_batch_are_read_again_with_wider_columns() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let options = ExtractOptions {
        batch_rows: 2,
        ..ExtractOptions::default()
    };
    let (batch, output) = f
        .run_with(
            &spec,
            json!({"path": "/shapes", "pagination": {"type": "page"}}),
            json!({}),
            &options,
        )
        .await
        .expect("step");
    assert_eq!(output.rows, 3);
    let a = batch.column_by_name("a").expect("a");
    assert_eq!(a.as_primitive::<Float64Type>().values().to_vec(), [1.0, 2.0, 2.5]);
    assert_eq!(texts(&batch, "b"), [None, None, Some("x".into())]);
    assert_eq!(f.seen.count("/shapes"), 6, "three pages, read twice");
}

#[tokio::test]
async fn http_request_bad_shapes_fail_the_step_with_what_was_found() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let error = f
        .run(&spec, json!({"path": "/offset", "records_path": "results"}))
        .await
        .expect_err("no results");
    assert_eq!(error.error_type, ErrorKind::HttpError);
    assert!(
        error.message.contains("results") && error.message.contains("data"),
        "{}",
        error.message
    );
    let error = f
        .run(&spec, json!({"path": "/offset", "records_path": "data.total"}))
        .await
        .expect_err("a number");
    assert!(error.message.contains("not an array"), "{}", error.message);
    let error = f
        .run(&spec, json!({"path": "/items", "pagination": {"type": "pages"}}))
        .await
        .expect_err("config");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert!(
        error.message.starts_with("config.pagination.type"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn http_request_an_empty_result_is_a_valid_object_with_one_value_column() {
    let f = fixture().await;
    let spec = f.connector(json!({}));
    let (batch, output) = f
        .run_with(
            &spec,
            json!({"path": "/items", "query": {"page": 9}}),
            json!({}),
            &ExtractOptions::default(),
        )
        .await
        .expect("step");
    assert_eq!((output.rows, batch.num_rows()), (0, 0));
    assert_eq!(batch.schema().field(0).name(), "value");
}

// -------------------------------------------------------------- benchmark

/// Record `id` of the benchmark's API: about 190 bytes of JSON with an
/// integer, strings, a float, a boolean, a timestamp text and a nested
/// object.
fn bench_record(out: &mut String, id: u64) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        r#"{{"id":{id},"sku":"SKU-{:06}","quantity":{},"price":{}.{:02},"paid":{},"status":"{}","created_at":"2026-03-{:02}T{:02}:{:02}:{:02}Z","customer":{{"id":{},"country":"{}"}}}}"#,
        id % 100_000,
        id % 17 + 1,
        id % 500,
        id % 100,
        id.is_multiple_of(3),
        ["open", "shipped", "delivered", "returned"][(id % 4) as usize],
        id % 28 + 1,
        id % 24,
        id % 60,
        (id / 60) % 60,
        id % 9_973,
        ["NL", "DE", "FR", "US", "JP"][(id % 5) as usize],
    );
}

/// The benchmark's API, run in a process of its own by
/// `loadtests/http_request/run.sh`: `GET /records?page=N&per_page=L` (page
/// numbers from 1) answers a JSON array of `FERRY_BENCH_RECORDS` records in
/// pages, generated per request, on `127.0.0.1:FERRY_BENCH_HTTP_PORT`, until
/// the process is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore = "benchmark server: run by loadtests/http_request/run.sh"]
async fn bench_http_server() {
    let env = |name: &str| -> u64 {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} (see loadtests/http_request/run.sh)"))
            .parse()
            .expect("a number")
    };
    let total = env("FERRY_BENCH_RECORDS");
    let port = u16::try_from(env("FERRY_BENCH_HTTP_PORT")).expect("a port");
    let app = Router::new().route(
        "/records",
        get(move |Query(q): Params| async move {
            let per_page = u64::try_from(number(&q, "per_page", 100)).unwrap_or(100).max(1);
            let page = u64::try_from(number(&q, "page", 1)).unwrap_or(1).max(1);
            let first = (page - 1) * per_page + 1;
            let last = (first + per_page - 1).min(total);
            let mut body = String::with_capacity((per_page as usize) * 200 + 2);
            body.push('[');
            for id in first..=last {
                if id > first {
                    body.push(',');
                }
                bench_record(&mut body, id);
            }
            body.push(']');
            ([(header::CONTENT_TYPE, "application/json")], body)
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

/// The Ferry side of `loadtests/http_request/run.sh` (release build): one
/// `http_request` step pages through `FERRY_BENCH_HTTP_URL/records`
/// (`page` pagination, `FERRY_BENCH_PER_PAGE` per page) to Parquet on
/// file://. Prints `BENCH rows=… seconds=… rows_per_s=… parquet_mib=…
/// peak_rss_mib=…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by loadtests/http_request/run.sh"]
async fn bench_http_request_export() {
    let base_url = std::env::var("FERRY_BENCH_HTTP_URL")
        .expect("FERRY_BENCH_HTTP_URL (see loadtests/http_request/run.sh)");
    let per_page: u64 = std::env::var("FERRY_BENCH_PER_PAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = prometheus::Registry::new();
    let registry = PoolRegistry::new(
        NetworkPolicy {
            allow_private_networks: true,
            sqlite_dir: dir.path().join("sqlite"),
            trusted_roots: Default::default(),
        },
        &metrics,
    );
    let spec = ConnectorSpec {
        uuid: "conn_bench".into(),
        org_id: "org_bench".into(),
        connector_type: "rest_api".into(),
        version: 1,
        config: json!({"base_url": base_url, "timeout_seconds": 60})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    let url = url::Url::from_directory_path(dir.path().join("results")).expect("url");
    let target = ObjectTarget::open(url.as_str()).expect("file target");
    let path = target.step_path("exec_bench", "step_1");
    let config = json!({"connector_uuid": CONN, "path": "/records",
                        "pagination": {"type": "page", "limit": per_page}});
    let supplied = serde_json::Map::new();
    let step = Step {
        registry: &registry,
        spec: &spec,
        request: StepRequest {
            step_type: StepType::HttpRequest,
            connector: ferry_shared::connectors::find("rest_api").expect("declared"),
            config: config.as_object().expect("an object"),
            supplied: &supplied,
            policy: registry.policy(),
        },
    };
    let started = Instant::now();
    let output = run_step_with(
        &ExtractOptions::default(),
        &step,
        &Destination::new(&target, &path),
        &|_, _| {},
        &CancellationToken::new(),
        || async { true },
    )
    .await
    .expect("the benchmark step");
    let seconds = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0.0);
    #[allow(clippy::cast_precision_loss)]
    let (rows, bytes) = (output.rows as f64, output.bytes as f64);
    println!(
        "BENCH rows={} seconds={seconds:.3} rows_per_s={:.0} parquet_mib={:.1} row_groups={} peak_rss_mib={:.1}",
        output.rows,
        rows / seconds,
        bytes / 1_048_576.0,
        output.row_groups,
        peak_kib / 1024.0
    );
}
