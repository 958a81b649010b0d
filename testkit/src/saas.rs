//! Stand-ins for the SaaS vendors' APIs that `saas_extract` steps read,
//! one server per vendor on 127.0.0.1 port 0, each answering the requests
//! and in the response shapes its vendor documents, with its paging, its
//! error bodies and its rate limiting:
//!
//! - **Stripe** (`api.stripe.com`): `GET /v1/balance`; list endpoints
//!   `GET /v1/<object>` with `limit` (1–100, default 10),
//!   `starting_after` (an id of the list; otherwise 400
//!   `resource_missing`), equality filters on top-level fields and
//!   `created[gt|gte|lt|lte]`; answers `{"object": "list", "url",
//!   "has_more", "data"}`, newest first. Errors are
//!   `{"error": {"type", "code", "message"}}`.
//! - **HubSpot** (`api.hubapi.com`): `GET /crm/v3/objects/<object>` with
//!   `limit` (1–100, default 10), `after`, `properties` (comma separated;
//!   missing ones are null), `archived`; answers `{"results": [{"id",
//!   "properties", "createdAt", "updatedAt", "archived"}], "paging":
//!   {"next": {"after", "link"}}}`. Every answer carries
//!   `X-HubSpot-RateLimit-{Max,Remaining,Interval-Milliseconds}` and
//!   `-Daily`/`-Daily-Remaining`; a call when the rolling window is used
//!   up is 429 `RATE_LIMITS` (`TEN_SECONDLY_ROLLING`).
//! - **Salesforce** (an instance URL): `GET /services/data/<v>/limits`;
//!   `GET /services/data/<v>/query?q=<SOQL>` for `SELECT <fields or
//!   FIELDS(...)> FROM <sObject> [WHERE ...] [LIMIT n]` (the WHERE clause is
//!   recorded, not evaluated), paged by `Sforce-Query-Options:
//!   batchSize=<200..2000>` (default 2,000) with `nextRecordsUrl` query
//!   locators; records carry `attributes`. Every answer carries
//!   `Sforce-Limit-Info: api-usage=<used>/<max>`; past the daily maximum,
//!   403 `REQUEST_LIMIT_EXCEEDED`. Errors are `[{"message", "errorCode"}]`
//!   (`INVALID_SESSION_ID`, `MALFORMED_QUERY`, `INVALID_TYPE`).
//! - **Google Analytics** (`analyticsdata.googleapis.com`):
//!   `POST /v1beta/properties/<id>:runReport` with `dimensions`,
//!   `metrics` (names the seeded report has; others 400
//!   `INVALID_ARGUMENT`), `limit` (at most 250,000, default 10,000),
//!   `offset`, `returnPropertyQuota`; answers `dimensionHeaders`,
//!   `metricHeaders`, `rows`, `rowCount`, `metadata`, `propertyQuota`
//!   (one token per report from an hourly budget). A report with no
//!   tokens left is 429 `RESOURCE_EXHAUSTED`. `GET
//!   /v1beta/properties/<id>/metadata`.
//!
//! Every data call needs `Authorization: Bearer <token>` that the test's
//! check accepts (the test authorization server's live tokens), else the
//! vendor's 401. A test can make the next calls answer 429 with
//! `Retry-After`, run a hook after each call, and read every request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};

use crate::http1::{Request, read_request, write_response};
use crate::oauth::form;

/// Which vendor a server stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Stripe,
    Hubspot,
    Salesforce,
    GoogleAnalytics,
}

impl Vendor {
    /// The vendor's API host (the Salesforce one is an example instance).
    pub fn host(self) -> &'static str {
        match self {
            Vendor::Stripe => "api.stripe.com",
            Vendor::Hubspot => "api.hubapi.com",
            Vendor::Salesforce => "acme.my.salesforce.com",
            Vendor::GoogleAnalytics => "analyticsdata.googleapis.com",
        }
    }
}

/// Which bearer tokens a server accepts.
pub type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Called after each authorized call with how many there were so far.
pub type Hook = Arc<dyn Fn(usize) + Send + Sync>;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Map<String, Value>,
    /// Header names in lower case; `authorization` is kept (the test's own
    /// tokens).
    pub headers: HashMap<String, String>,
    pub body: Value,
    /// The status it was answered with.
    pub status: u16,
}

/// A GA4 report's data: dimension names, metric names with their types,
/// and rows of values.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    pub dimensions: Vec<String>,
    pub metrics: Vec<(String, String)>,
    pub rows: Vec<(Vec<String>, Vec<String>)>,
}

/// Where a Salesforce query goes on: its sObject, its fields (`None`
/// for `FIELDS(...)`), the next record and the query's total.
#[derive(Clone)]
struct Locator {
    object: String,
    fields: Option<Vec<String>>,
    position: usize,
    total: usize,
}

#[derive(Default)]
struct State {
    /// Stripe list objects and HubSpot object types: their records.
    lists: HashMap<String, Vec<Value>>,
    /// Salesforce sObjects: their records (without `attributes`).
    sobjects: HashMap<String, Vec<Value>>,
    /// Salesforce query locators.
    locators: HashMap<String, Locator>,
    report: ReportData,
    property_id: String,
    requests: Vec<Seen>,
    calls: usize,
    throttles: usize,
    retry_after: Option<u64>,
    hook: Option<Hook>,
    /// HubSpot's rolling window: calls left, the window, when it started.
    window_max: u64,
    window_left: u64,
    window: Duration,
    window_start: Option<Instant>,
    daily_left: u64,
    /// Salesforce's daily API requests: used and max.
    api_used: u64,
    api_max: u64,
    /// GA's hourly tokens left.
    tokens_left: i64,
}

/// A running stand-in; stops when dropped.
pub struct SaasServer {
    pub addr: SocketAddr,
    pub vendor: Vendor,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SaasServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SaasServer {
    /// Starts a stand-in for `vendor` accepting the bearer tokens `check`
    /// accepts. HubSpot's window allows 100 calls per 10 s, Salesforce
    /// 15,000 calls a day, GA 1,250 tokens an hour, until told otherwise.
    pub async fn start(vendor: Vendor, check: TokenCheck) -> SaasServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            window_max: 100,
            window_left: 100,
            window: Duration::from_secs(10),
            daily_left: 250_000,
            api_max: 15_000,
            tokens_left: 1_250,
            property_id: "123456789".into(),
            ..State::default()
        }));
        let server = Server {
            vendor,
            state: state.clone(),
            check,
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move { server.connection(stream).await });
            }
        });
        SaasServer {
            addr,
            vendor,
            state,
            task,
        }
    }

    /// A server that accepts exactly `token`.
    pub async fn with_token(vendor: Vendor, token: &str) -> SaasServer {
        let token = token.to_owned();
        SaasServer::start(vendor, Arc::new(move |t: &str| t == token)).await
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stripe objects of list `object` (`customers`), or HubSpot records of
    /// object type `object` (`contacts`: `{"id", "properties", ...}`).
    pub fn set_list(&self, object: &str, records: Vec<Value>) {
        self.state().lists.insert(object.to_owned(), records);
    }

    /// Salesforce records of sObject `name` (without `attributes`).
    pub fn set_sobject(&self, name: &str, records: Vec<Value>) {
        self.state().sobjects.insert(name.to_owned(), records);
    }

    /// The GA4 report every runReport reads from, for property `id`.
    pub fn set_report(&self, property_id: &str, report: ReportData) {
        let mut state = self.state();
        state.property_id = property_id.to_owned();
        state.report = report;
    }

    /// The next `count` calls answer 429 (with `Retry-After: seconds`
    /// when given) in the vendor's shape.
    pub fn throttle_next(&self, count: usize, retry_after: Option<u64>) {
        let mut state = self.state();
        state.throttles = count;
        state.retry_after = retry_after;
    }

    /// HubSpot's rolling window: `max` calls per `window`.
    pub fn set_hubspot_window(&self, max: u64, window: Duration) {
        let mut state = self.state();
        state.window_max = max;
        state.window_left = max;
        state.window = window;
        state.window_start = None;
    }

    /// Salesforce's daily API requests: `used` of `max`.
    pub fn set_api_usage(&self, used: u64, max: u64) {
        let mut state = self.state();
        state.api_used = used;
        state.api_max = max;
    }

    /// GA's property tokens left this hour.
    pub fn set_tokens_left(&self, tokens: i64) {
        self.state().tokens_left = tokens;
    }

    /// Runs `hook` after every authorized call (with the count so far).
    pub fn on_call(&self, hook: impl Fn(usize) + Send + Sync + 'static) {
        self.state().hook = Some(Arc::new(hook));
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state().requests.clone()
    }

    /// How many requests were answered with `status`.
    pub fn answered(&self, status: u16) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.status == status)
            .count()
    }
}

#[derive(Clone)]
struct Server {
    vendor: Vendor,
    state: Arc<Mutex<State>>,
    check: TokenCheck,
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }
}

impl Server {
    async fn connection(&self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        while let Some(request) = read_request(&mut stream).await {
            let (reply, hook) = self.answer(&request);
            let mut headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
            headers.extend(reply.headers.iter().cloned());
            if !write_response(
                stream.get_mut(),
                reply.status,
                &headers,
                reply.body.to_string().as_bytes(),
            )
            .await
            {
                return;
            }
            if let Some((hook, count)) = hook {
                hook(count);
            }
        }
    }

    /// The reply, recorded, and the hook to run once it was sent.
    fn answer(&self, request: &Request) -> (Reply, Option<(Hook, usize)>) {
        let query = form(request.query.as_bytes());
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let token = request
            .headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let authorized = (self.check)(token);
        let mut state = lock(&self.state);
        let (reply, counted) = if !authorized {
            (self.unauthorized(), false)
        } else if state.throttles > 0 {
            state.throttles -= 1;
            let mut reply = self.throttled();
            if let Some(seconds) = state.retry_after {
                reply.headers.push(("Retry-After".into(), seconds.to_string()));
            }
            (reply, true)
        } else {
            let reply = match self.vendor {
                Vendor::Stripe => stripe(&state, request, &query),
                Vendor::Hubspot => hubspot(&mut state, request, &query),
                Vendor::Salesforce => salesforce(&mut state, request, &query),
                Vendor::GoogleAnalytics => google(&mut state, request, &body),
            };
            (reply, true)
        };
        let mut reply = reply;
        if counted {
            self.limit_headers(&mut state, &mut reply);
        }
        state.requests.push(Seen {
            method: request.method.clone(),
            path: request.path.clone(),
            query,
            headers: request.headers.clone(),
            body,
            status: reply.status,
        });
        let hook = if counted {
            state.calls += 1;
            state.hook.clone().map(|hook| (hook, state.calls))
        } else {
            None
        };
        (reply, hook)
    }

    fn unauthorized(&self) -> Reply {
        let body = match self.vendor {
            Vendor::Stripe => json!({"error": {"type": "invalid_request_error",
                "message": "Invalid API Key provided: the access token is expired or revoked"}}),
            Vendor::Hubspot => json!({"status": "error", "category": "INVALID_AUTHENTICATION",
                "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                "correlationId": "5e8c7b60-0000-4000-8000-000000000000"}),
            Vendor::Salesforce => {
                json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
            }
            Vendor::GoogleAnalytics => json!({"error": {"code": 401,
                "message": "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                "status": "UNAUTHENTICATED"}}),
        };
        let mut reply = Reply::json(401, body);
        if self.vendor == Vendor::GoogleAnalytics {
            reply.headers.push((
                "WWW-Authenticate".into(),
                "Bearer realm=\"https://accounts.google.com/\"".into(),
            ));
        }
        reply
    }

    fn throttled(&self) -> Reply {
        let body = match self.vendor {
            Vendor::Stripe => json!({"error": {"type": "invalid_request_error", "code": "rate_limit",
                "message": "Too many requests hit the API too quickly."}}),
            Vendor::Hubspot => {
                json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING", "category": "RATE_LIMITS"})
            }
            Vendor::Salesforce => {
                json!([{"message": "Too many requests", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
            }
            Vendor::GoogleAnalytics => json!({"error": {"code": 429,
                "message": "Exhausted concurrent requests quota.", "status": "RESOURCE_EXHAUSTED"}}),
        };
        Reply::json(429, body)
    }

    fn limit_headers(&self, state: &mut State, reply: &mut Reply) {
        match self.vendor {
            Vendor::Hubspot => {
                let headers = [
                    ("X-HubSpot-RateLimit-Max", state.window_max.to_string()),
                    ("X-HubSpot-RateLimit-Remaining", state.window_left.to_string()),
                    (
                        "X-HubSpot-RateLimit-Interval-Milliseconds",
                        state.window.as_millis().to_string(),
                    ),
                    ("X-HubSpot-RateLimit-Daily", "250000".to_owned()),
                    (
                        "X-HubSpot-RateLimit-Daily-Remaining",
                        state.daily_left.to_string(),
                    ),
                ];
                reply
                    .headers
                    .extend(headers.into_iter().map(|(n, v)| (n.to_owned(), v)));
            }
            Vendor::Salesforce => reply.headers.push((
                "Sforce-Limit-Info".into(),
                format!("api-usage={}/{}", state.api_used, state.api_max),
            )),
            Vendor::Stripe => reply
                .headers
                .push(("Request-Id".into(), format!("req_{}", state.requests.len()))),
            Vendor::GoogleAnalytics => {}
        }
    }
}

fn text<'a>(query: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    query.get(name).and_then(Value::as_str)
}

// ------------------------------------------------------------------ Stripe

fn stripe_error(status: u16, code: &str, message: &str, param: Option<&str>) -> Reply {
    let mut error = json!({"type": "invalid_request_error", "code": code, "message": message});
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    Reply::json(status, json!({"error": error}))
}

fn stripe(state: &State, request: &Request, query: &Map<String, Value>) -> Reply {
    if request.method != "GET" {
        return stripe_error(
            405,
            "method_not_allowed",
            "This endpoint is read-only here.",
            None,
        );
    }
    if request.path == "/v1/balance" {
        return Reply::json(
            200,
            json!({"object": "balance", "livemode": false,
                   "available": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
                   "pending": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}]}),
        );
    }
    let Some(object) = request.path.strip_prefix("/v1/") else {
        return stripe_error(404, "resource_missing", "Unrecognized request URL.", None);
    };
    let Some(items) = state.lists.get(object) else {
        return stripe_error(
            404,
            "resource_missing",
            &format!("Unrecognized request URL (GET: /v1/{object}). Please see https://stripe.com/docs"),
            None,
        );
    };
    let limit = match text(query, "limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        _ => {
            return stripe_error(
                400,
                "parameter_invalid_integer",
                "Invalid integer: limit must be between 1 and 100",
                Some("limit"),
            );
        }
    };
    let matches = |item: &Value| {
        query.iter().all(|(name, value)| {
            let value = value.as_str().unwrap_or_default();
            match name.as_str() {
                "limit" | "starting_after" | "ending_before" => true,
                _ => match name.strip_prefix("created[").and_then(|r| r.strip_suffix(']')) {
                    Some(op) => {
                        let created = item["created"].as_i64().unwrap_or(0);
                        let bound: i64 = value.parse().unwrap_or(0);
                        match op {
                            "gt" => created > bound,
                            "gte" => created >= bound,
                            "lt" => created < bound,
                            "lte" => created <= bound,
                            _ => false,
                        }
                    }
                    None => match &item[name.as_str()] {
                        Value::String(s) => s == value,
                        Value::Null => false,
                        other => serde_json::from_str::<Value>(value).ok().as_ref() == Some(other),
                    },
                },
            }
        })
    };
    let filtered: Vec<&Value> = items.iter().filter(|item| matches(item)).collect();
    let start = match text(query, "starting_after") {
        None => 0,
        Some(id) => match filtered.iter().position(|item| item["id"] == id) {
            Some(at) => at + 1,
            None => {
                return stripe_error(
                    400,
                    "resource_missing",
                    &format!("No such object: '{id}'"),
                    Some("starting_after"),
                );
            }
        },
    };
    let page: Vec<Value> = filtered
        .iter()
        .skip(start)
        .take(limit)
        .map(|v| (*v).clone())
        .collect();
    let has_more = start + page.len() < filtered.len();
    Reply::json(
        200,
        json!({"object": "list", "url": format!("/v1/{object}"), "has_more": has_more, "data": page}),
    )
}

// ----------------------------------------------------------------- HubSpot

fn hubspot_error(status: u16, category: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"status": "error", "message": message, "category": category,
               "correlationId": "5e8c7b60-0000-4000-8000-000000000000"}),
    )
}

fn hubspot(state: &mut State, request: &Request, query: &Map<String, Value>) -> Reply {
    // The rolling window: a call when it is used up is refused.
    let now = Instant::now();
    if state.window_start.is_none_or(|start| now - start >= state.window) {
        state.window_start = Some(now);
        state.window_left = state.window_max;
    }
    if state.window_left == 0 {
        return Reply::json(
            429,
            json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                   "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING", "category": "RATE_LIMITS"}),
        );
    }
    state.window_left -= 1;
    state.daily_left = state.daily_left.saturating_sub(1);
    let Some(object) = request.path.strip_prefix("/crm/v3/objects/") else {
        return hubspot_error(404, "OBJECT_NOT_FOUND", "Resource not found");
    };
    const STANDARD: [&str; 5] = ["contacts", "companies", "deals", "tickets", "products"];
    let none = Vec::new();
    let records = match state.lists.get(object) {
        Some(records) => records,
        None if STANDARD.contains(&object) => &none,
        None => {
            return hubspot_error(
                400,
                "VALIDATION_ERROR",
                &format!("Unable to infer object type from: {object}"),
            );
        }
    };
    let limit = match text(query, "limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        _ => return hubspot_error(400, "VALIDATION_ERROR", "limit must be between 1 and 100"),
    };
    let archived = text(query, "archived") == Some("true");
    let start = match text(query, "after").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return hubspot_error(400, "VALIDATION_ERROR", "after is not a valid paging cursor"),
    };
    let wanted: Option<Vec<&str>> = text(query, "properties").map(|p| p.split(',').collect());
    let live: Vec<&Value> = records
        .iter()
        .filter(|r| r["archived"].as_bool().unwrap_or(false) == archived)
        .collect();
    let results: Vec<Value> = live
        .iter()
        .skip(start)
        .take(limit)
        .map(|record| {
            let mut record = (*record).clone();
            if let Some(wanted) = &wanted {
                let all = record["properties"].as_object().cloned().unwrap_or_default();
                let chosen: Map<String, Value> = wanted
                    .iter()
                    .map(|name| ((*name).to_owned(), all.get(*name).cloned().unwrap_or(Value::Null)))
                    .collect();
                record["properties"] = Value::Object(chosen);
            }
            record
        })
        .collect();
    let next = start + results.len();
    let mut body = json!({"results": results});
    if next < live.len() {
        body["paging"] = json!({"next": {"after": next.to_string(),
            "link": format!("https://api.hubapi.com/crm/v3/objects/{object}?after={next}")}});
    }
    Reply::json(200, body)
}

// -------------------------------------------------------------- Salesforce

fn salesforce_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(status, json!([{"message": message, "errorCode": code}]))
}

/// `SELECT <fields> FROM <object> [WHERE ...] [LIMIT n]`: fields (None for
/// `FIELDS(...)`), object, limit.
fn parse_soql(soql: &str) -> Option<(Option<Vec<String>>, String, Option<usize>)> {
    let upper = soql.to_ascii_uppercase();
    let rest = upper.strip_prefix("SELECT ")?;
    let from = rest.find(" FROM ")?;
    let fields_text = soql["SELECT ".len().."SELECT ".len() + from].trim();
    let after = &soql["SELECT ".len() + from + " FROM ".len()..];
    let object: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if object.is_empty() || fields_text.is_empty() {
        return None;
    }
    let fields = if fields_text.to_ascii_uppercase().starts_with("FIELDS(") {
        None
    } else {
        Some(fields_text.split(',').map(|f| f.trim().to_owned()).collect())
    };
    let limit = upper
        .rfind(" LIMIT ")
        .and_then(|at| upper[at + " LIMIT ".len()..].trim().parse().ok());
    Some((fields, object, limit))
}

fn salesforce(state: &mut State, request: &Request, query: &Map<String, Value>) -> Reply {
    if state.api_used >= state.api_max {
        return salesforce_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.");
    }
    state.api_used += 1;
    let Some(rest) = request.path.strip_prefix("/services/data/") else {
        return salesforce_error(404, "NOT_FOUND", "The requested resource does not exist");
    };
    let (version, resource) = rest.split_once('/').unwrap_or((rest, ""));
    if resource == "limits" {
        return Reply::json(
            200,
            json!({"DailyApiRequests": {"Max": state.api_max, "Remaining": state.api_max - state.api_used}}),
        );
    }
    let batch = request
        .headers
        .get("sforce-query-options")
        .and_then(|o| o.strip_prefix("batchSize="))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(2000)
        .clamp(200, 2000);
    let (object, fields, position, total) = if resource == "query" {
        let Some(soql) = text(query, "q") else {
            return salesforce_error(400, "MALFORMED_QUERY", "A query string is required");
        };
        let Some((fields, object, limit)) = parse_soql(soql) else {
            return salesforce_error(
                400,
                "MALFORMED_QUERY",
                "unexpected token: the query is not SELECT ... FROM ...",
            );
        };
        let Some(records) = state.sobjects.get(&object) else {
            return salesforce_error(
                400,
                "INVALID_TYPE",
                &format!("sObject type '{object}' is not supported."),
            );
        };
        let total = limit.map_or(records.len(), |l| l.min(records.len()));
        (object, fields, 0, total)
    } else if let Some(locator) = resource.strip_prefix("query/") {
        match state.locators.get(locator) {
            Some(at) => (at.object.clone(), at.fields.clone(), at.position, at.total),
            None => return salesforce_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator"),
        }
    } else {
        return salesforce_error(404, "NOT_FOUND", "The requested resource does not exist");
    };
    let records = state.sobjects.get(&object).cloned().unwrap_or_default();
    let end = (position + batch).min(total);
    let page: Vec<Value> = records[position..end]
        .iter()
        .map(|record| {
            let mut out = Map::new();
            let id = record["Id"].as_str().unwrap_or_default();
            out.insert(
                "attributes".into(),
                json!({"type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}")}),
            );
            match &fields {
                Some(fields) => {
                    for field in fields {
                        out.insert(field.clone(), record.get(field).cloned().unwrap_or(Value::Null));
                    }
                }
                None => out.extend(record.as_object().cloned().unwrap_or_default()),
            }
            Value::Object(out)
        })
        .collect();
    let done = end >= total;
    let mut body = json!({"totalSize": total, "done": done, "records": page});
    if !done {
        let locator = format!("01gD0000002HU6KIAW-{end}");
        let at = Locator {
            object: object.clone(),
            fields: fields.clone(),
            position: end,
            total,
        };
        state.locators.insert(locator.clone(), at);
        body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{locator}"));
    }
    Reply::json(200, body)
}

// -------------------------------------------------------- Google Analytics

fn google_error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"code": status, "message": message, "status": code}}),
    )
}

fn google(state: &mut State, request: &Request, body: &Value) -> Reply {
    let property = format!("/v1beta/properties/{}", state.property_id);
    if request.method == "GET" && request.path == format!("{property}/metadata") {
        let report = &state.report;
        return Reply::json(
            200,
            json!({"name": format!("properties/{}/metadata", state.property_id),
                   "dimensions": report.dimensions.iter().map(|d| json!({"apiName": d})).collect::<Vec<_>>(),
                   "metrics": report.metrics.iter().map(|(m, t)| json!({"apiName": m, "type": t})).collect::<Vec<_>>()}),
        );
    }
    if request.method != "POST" || request.path != format!("{property}:runReport") {
        return google_error(404, "NOT_FOUND", "Requested entity was not found.");
    }
    if state.tokens_left <= 0 {
        return google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Exhausted property tokens per hour. The quota is replenished hourly.",
        );
    }
    state.tokens_left -= 1;
    let report = state.report.clone();
    let names = |key: &str| -> Vec<String> {
        body[key]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|d| d["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let dimensions = names("dimensions");
    let metrics = names("metrics");
    for d in &dimensions {
        if !report.dimensions.contains(d) {
            return google_error(
                400,
                "INVALID_ARGUMENT",
                &format!(
                    "Field {d} is not a valid dimension. For a list of valid dimensions and metrics, see https://developers.google.com/analytics/devguides/reporting/data/v1/api-schema"
                ),
            );
        }
    }
    for m in &metrics {
        if !report.metrics.iter().any(|(name, _)| name == m) {
            return google_error(
                400,
                "INVALID_ARGUMENT",
                &format!("Field {m} is not a valid metric."),
            );
        }
    }
    let number = |key: &str, default: u64| match &body[key] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        Value::Null => Some(default),
        _ => None,
    };
    let (Some(limit), Some(offset)) = (number("limit", 10_000), number("offset", 0)) else {
        return google_error(400, "INVALID_ARGUMENT", "limit and offset are int64 values");
    };
    if limit == 0 || limit > 250_000 {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "limit must be positive and at most 250000",
        );
    }
    let d_at: Vec<usize> = dimensions
        .iter()
        .filter_map(|d| report.dimensions.iter().position(|x| x == d))
        .collect();
    let m_at: Vec<usize> = metrics
        .iter()
        .filter_map(|m| report.metrics.iter().position(|(x, _)| x == m))
        .collect();
    let rows: Vec<Value> = report
        .rows
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|(dims, mets)| {
            json!({"dimensionValues": d_at.iter().map(|&i| json!({"value": dims[i]})).collect::<Vec<_>>(),
                   "metricValues": m_at.iter().map(|&i| json!({"value": mets[i]})).collect::<Vec<_>>()})
        })
        .collect();
    let mut answer = json!({
        "dimensionHeaders": dimensions.iter().map(|d| json!({"name": d})).collect::<Vec<_>>(),
        "metricHeaders": m_at.iter().map(|&i| json!({"name": report.metrics[i].0, "type": report.metrics[i].1})).collect::<Vec<_>>(),
        "metadata": {"currencyCode": "USD", "timeZone": "Etc/UTC"},
        "kind": "analyticsData#runReport",
    });
    if !report.rows.is_empty() {
        answer["rowCount"] = json!(report.rows.len());
    }
    if !rows.is_empty() {
        answer["rows"] = json!(rows);
    }
    if body["returnPropertyQuota"] == json!(true) {
        answer["propertyQuota"] = json!({
            "tokensPerDay": {"consumed": 1, "remaining": 25_000},
            "tokensPerHour": {"consumed": 1, "remaining": state.tokens_left},
            "concurrentRequests": {"consumed": 0, "remaining": 10},
            "serverErrorsPerProjectPerHour": {"consumed": 0, "remaining": 10},
            "potentiallyThresholdedRequestsPerHour": {"consumed": 0, "remaining": 120},
            "tokensPerProjectPerHour": {"consumed": 1, "remaining": 1_249},
        });
    }
    Reply::json(200, answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soql_is_read_for_its_fields_object_and_limit() {
        assert_eq!(
            parse_soql("SELECT Id, Name FROM Account WHERE Name != null LIMIT 5"),
            Some((Some(vec!["Id".into(), "Name".into()]), "Account".into(), Some(5)))
        );
        assert_eq!(
            parse_soql("select FIELDS(STANDARD) from Contact"),
            Some((None, "Contact".into(), None))
        );
        assert_eq!(parse_soql("DELETE Account"), None);
    }
}
