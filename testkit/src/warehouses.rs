//! Stand-ins for the OAuth warehouses' APIs on 127.0.0.1 port 0, speaking
//! HTTP/1.1 in the vendors' documented request and response shapes, as a
//! client sees them:
//!
//! - [`SnowflakeServer`]: the SQL API v2. `POST /api/v2/statements`
//!   (`?async=true` answers 202 with a `statementHandle`), `GET
//!   /api/v2/statements/{handle}` (202 while running, then 200 with the
//!   `ResultSet`: `resultSetMetaData.rowType` and `partitionInfo`, and
//!   partition 0 in `data`), `?partition=N` (`{"data": …}`, gzip-encoded
//!   when the client accepts it, as Snowflake sends partitions), `POST
//!   …/cancel`; a failed statement answers 422 with `code`, `sqlState`
//!   and `message`; it requires `X-Snowflake-Authorization-Token-Type:
//!   OAUTH` with the bearer token.
//! - [`BigQueryServer`]: `POST /bigquery/v2/projects/{p}/queries`
//!   (`jobs.query`: `jobComplete: false` while the job runs, else the
//!   schema and the first page of rows), `GET …/queries/{jobId}`
//!   (`getQueryResults`, paged with `pageToken` / `maxResults`), `POST
//!   …/jobs/{jobId}/cancel`; errors are Google's `{"error": {code,
//!   message, errors: [{reason}], status}}`.
//!
//! Both check the bearer token with a [`TokenCheck`] (a fixed token, or
//! the live tokens of [`crate::oauth::AuthServer`]), answer 401 otherwise,
//! can be told to throttle the next requests (Snowflake: 429/503 with
//! `Retry-After`; BigQuery: 403 or 429 `rateLimitExceeded`), and record
//! what they were asked.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};

use crate::http1::{Request, read_request, write_response};

/// Whether a bearer token is live.
pub type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A check that accepts exactly `token`.
pub fn fixed_token(token: &str) -> TokenCheck {
    let token = token.to_owned();
    Arc::new(move |given| given == token)
}

/// A result a stand-in serves for one statement or query.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Snowflake `rowType` entries or BigQuery schema `fields`.
    pub columns: Vec<Value>,
    /// Rows of cells: text or null (BigQuery also nested values).
    pub rows: Vec<Vec<Value>>,
    /// Rows per Snowflake partition or BigQuery page (0: all in one).
    pub per_part: usize,
    /// Status polls answered "still running" before the result.
    pub polls: usize,
    /// An error answer instead of a result: status and body.
    pub fail: Option<(u16, Value)>,
}

impl Plan {
    pub fn rows(columns: Vec<Value>, rows: Vec<Vec<Value>>) -> Plan {
        Plan {
            columns,
            rows,
            ..Plan::default()
        }
    }

    pub fn in_parts_of(mut self, rows: usize) -> Plan {
        self.per_part = rows;
        self
    }

    pub fn after_polls(mut self, polls: usize) -> Plan {
        self.polls = polls;
        self
    }

    fn parts(&self) -> Vec<&[Vec<Value>]> {
        if self.rows.is_empty() {
            return vec![&[]];
        }
        let size = if self.per_part == 0 {
            self.rows.len()
        } else {
            self.per_part
        };
        self.rows.chunks(size).collect()
    }
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

#[derive(Default)]
struct State {
    plans: HashMap<String, Plan>,
    /// Running statements/jobs: id → (plan, polls left).
    running: HashMap<String, (Plan, usize)>,
    throttle: VecDeque<(u16, Option<String>)>,
    seen: Vec<Seen>,
    cancels: Vec<String>,
    counter: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Snowflake,
    BigQuery,
}

#[derive(Clone)]
struct Shared {
    vendor: Vendor,
    state: Arc<Mutex<State>>,
    check: TokenCheck,
}

/// A running stand-in; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

/// The Snowflake SQL API v2 stand-in.
pub type SnowflakeServer = Server;
/// The BigQuery API v2 stand-in.
pub type BigQueryServer = Server;

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// A Snowflake stand-in accepting the tokens `check` accepts.
    pub async fn snowflake(check: TokenCheck) -> Server {
        Server::start(Vendor::Snowflake, check).await
    }

    /// A BigQuery stand-in accepting the tokens `check` accepts.
    pub async fn bigquery(check: TokenCheck) -> Server {
        Server::start(Vendor::BigQuery, check).await
    }

    async fn start(vendor: Vendor, check: TokenCheck) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Shared {
            vendor,
            state: state.clone(),
            check,
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move { shared.connection(stream).await });
            }
        });
        Server { addr, state, task }
    }

    /// Serves `plan` for statement (or query) text `text`, exactly.
    pub fn on(&self, text: &str, plan: Plan) {
        lock(&self.state).plans.insert(text.to_owned(), plan);
    }

    /// The next `times` API requests (after the token check) are answered
    /// `status` (Snowflake: 429 or 503; BigQuery: 403 or 429 with reason
    /// `rateLimitExceeded`), with `Retry-After: retry_after` when given.
    pub fn throttle(&self, times: usize, status: u16, retry_after: Option<&str>) {
        let mut state = lock(&self.state);
        for _ in 0..times {
            state.throttle.push_back((status, retry_after.map(str::to_owned)));
        }
    }

    /// Every request that passed the token check, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.state).seen.clone()
    }

    /// The bodies of statement submissions (`jobs.query` requests).
    pub fn submissions(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| {
                s.method == "POST" && (s.path.ends_with("/statements") || s.path.ends_with("/queries"))
            })
            .map(|s| s.body)
            .collect()
    }

    /// How many requests were answered 401 or reached the API.
    pub fn unauthorized(&self) -> usize {
        lock(&self.state)
            .seen
            .iter()
            .filter(|s| s.method == "401")
            .count()
    }

    /// Handles of cancelled statements (ids of cancelled jobs).
    pub fn cancels(&self) -> Vec<String> {
        lock(&self.state).cancels.clone()
    }

    /// The Snowflake account host a test maps to this server, for
    /// `account`.
    pub fn snowflake_host(account: &str) -> String {
        format!(
            "{}.snowflakecomputing.com",
            account.to_ascii_lowercase().replace('_', "-")
        )
    }
}

impl Shared {
    async fn connection(&self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        while let Some(request) = read_request(&mut stream).await {
            let response = self.handle(&request);
            let writer = stream.get_mut();
            if !write_response(writer, response.status, &response.headers, &response.body).await {
                return;
            }
        }
    }

    fn handle(&self, request: &Request) -> Response {
        let token = request
            .headers
            .get("authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        let token_type_ok = self.vendor == Vendor::BigQuery
            || request
                .headers
                .get("x-snowflake-authorization-token-type")
                .is_some_and(|t| t == "OAUTH");
        let mut state = lock(&self.state);
        if token.is_empty() || !token_type_ok || !(self.check)(token) {
            state.seen.push(Seen {
                method: "401".into(),
                path: request.path.clone(),
                query: request.query.clone(),
                headers: HashMap::new(),
                body: Value::Null,
            });
            return match self.vendor {
                Vendor::Snowflake => Response::json(
                    401,
                    json!({"code": "390303", "message": "Invalid OAuth access token. "}),
                ),
                Vendor::BigQuery => google_error(
                    401,
                    "authError",
                    "Request had invalid authentication credentials. Expected OAuth 2 access token.",
                    "UNAUTHENTICATED",
                ),
            };
        }
        state.seen.push(Seen {
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            headers: request.headers.clone(),
            body: serde_json::from_slice(&request.body).unwrap_or(Value::Null),
        });
        if let Some((status, retry_after)) = state.throttle.pop_front() {
            let mut response = match self.vendor {
                Vendor::Snowflake => Response::json(
                    status,
                    json!({"code": "000000", "message": "Too many requests. Please retry later."}),
                ),
                Vendor::BigQuery => google_error(
                    status,
                    "rateLimitExceeded",
                    "Exceeded rate limits: too many api requests per user per method for this user_method.",
                    "PERMISSION_DENIED",
                ),
            };
            if let Some(seconds) = retry_after {
                response.headers.push(("Retry-After".into(), seconds));
            }
            return response;
        }
        match self.vendor {
            Vendor::Snowflake => snowflake(&mut state, request),
            Vendor::BigQuery => bigquery(&mut state, request),
        }
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

// ---- Snowflake ------------------------------------------------------------

const STATEMENTS: &str = "/api/v2/statements";

fn snowflake(state: &mut State, request: &Request) -> Response {
    let Some(rest) = request.path.strip_prefix(STATEMENTS) else {
        return Response::json(404, json!({"code": "390404", "message": "Not found."}));
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match (request.method.as_str(), parts.as_slice()) {
        ("POST", []) => snowflake_submit(state, request),
        ("GET", [handle]) => {
            let partition = query_param(&request.query, "partition")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(0);
            let gzip = request
                .headers
                .get("accept-encoding")
                .is_some_and(|e| e.contains("gzip"));
            snowflake_status(state, handle, partition, gzip)
        }
        ("POST", [handle, "cancel"]) => {
            state.cancels.push((*handle).to_owned());
            state.running.remove(*handle);
            Response::json(
                200,
                json!({"code": "000604", "sqlState": "57014", "message": "Statement canceled.", "statementHandle": handle}),
            )
        }
        _ => Response::json(404, json!({"code": "390404", "message": "Not found."})),
    }
}

fn snowflake_submit(state: &mut State, request: &Request) -> Response {
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(body) => body,
        Err(_) => {
            return Response::json(
                400,
                json!({"code": "390142", "message": "Incoming request does not contain a valid payload."}),
            );
        }
    };
    let Some(statement) = body.get("statement").and_then(Value::as_str) else {
        return Response::json(400, json!({"code": "390142", "message": "statement is required"}));
    };
    state.counter += 1;
    let handle = format!("01b2c3d4-0000-4000-8000-{:012x}", state.counter);
    let Some(plan) = state.plans.get(statement).cloned() else {
        return Response::json(
            422,
            json!({"code": "002003", "sqlState": "42S02", "statementHandle": handle,
                   "message": "SQL compilation error:\nObject 'UNKNOWN' does not exist or not authorized."}),
        );
    };
    if let Some((status, body)) = &plan.fail {
        let mut body = body.clone();
        body["statementHandle"] = json!(handle);
        return Response::json(*status, body);
    }
    let polls = plan.polls;
    state.running.insert(handle.clone(), (plan, polls));
    let is_async = query_param(&request.query, "async") == Some("true");
    if is_async {
        return accepted(&handle);
    }
    snowflake_status(state, &handle, 0, false)
}

fn accepted(handle: &str) -> Response {
    Response::json(
        202,
        json!({"code": "333334",
               "message": "Asynchronous execution in progress. Use provided query id to perform query monitoring and management.",
               "statementHandle": handle,
               "statementStatusUrl": format!("{STATEMENTS}/{handle}")}),
    )
}

fn snowflake_status(state: &mut State, handle: &str, partition: usize, gzip: bool) -> Response {
    let Some((plan, polls)) = state.running.get_mut(handle) else {
        return Response::json(
            422,
            json!({"code": "000709", "sqlState": "02000", "message": "Statement not found.", "statementHandle": handle}),
        );
    };
    if *polls > 0 {
        *polls -= 1;
        return accepted(handle);
    }
    let parts = plan.parts();
    if partition > 0 {
        let Some(rows) = parts.get(partition) else {
            return Response::json(
                400,
                json!({"code": "390142", "message": "partition out of range"}),
            );
        };
        let body = json!({"data": rows}).to_string().into_bytes();
        let mut response = Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body,
        };
        if gzip {
            response.body = gzip_stored(&response.body);
            response.headers.push(("Content-Encoding".into(), "gzip".into()));
        }
        return response;
    }
    let info: Vec<Value> = parts
        .iter()
        .map(|rows| json!({"rowCount": rows.len(), "uncompressedSize": json!(rows).to_string().len()}))
        .collect();
    Response::json(
        200,
        json!({
            "resultSetMetaData": {
                "numRows": plan.rows.len(),
                "format": "jsonv2",
                "partitionInfo": info,
                "rowType": plan.columns,
            },
            "data": parts[0],
            "code": "090001",
            "statementStatusUrl": format!("{STATEMENTS}/{handle}"),
            "requestId": "00000000-0000-4000-8000-000000000000",
            "sqlState": "00000",
            "statementHandle": handle,
            "message": "Statement executed successfully.",
            "createdOn": 1_700_000_000_000u64,
        }),
    )
}

/// `data` as a gzip stream of stored (uncompressed) deflate blocks: valid
/// gzip for any reader, written here so that the stand-in does not share
/// the client's compression code.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(65_535).collect()
    };
    let last = chunks.len() - 1;
    for (index, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(index == last));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---- BigQuery -------------------------------------------------------------

fn google_error(status: u16, reason: &str, message: &str, kind: &str) -> Response {
    Response::json(
        status,
        json!({"error": {"code": status, "message": message,
               "errors": [{"message": message, "domain": "global", "reason": reason}],
               "status": kind}}),
    )
}

fn bigquery(state: &mut State, request: &Request) -> Response {
    let Some(rest) = request.path.strip_prefix("/bigquery/v2/projects/") else {
        return google_error(404, "notFound", "Not found", "NOT_FOUND");
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match (request.method.as_str(), parts.as_slice()) {
        ("POST", [project, "queries"]) => bigquery_query(state, project, request),
        ("GET", [project, "queries", job]) => {
            let token = query_param(&request.query, "pageToken").map(str::to_owned);
            let max = query_param(&request.query, "maxResults").and_then(|m| m.parse().ok());
            bigquery_results(
                state,
                project,
                job,
                token.as_deref(),
                max,
                "bigquery#getQueryResultsResponse",
            )
        }
        ("POST", [project, "jobs", job, "cancel"]) => {
            state.cancels.push((*job).to_owned());
            state.running.remove(*job);
            Response::json(
                200,
                json!({"kind": "bigquery#jobCancelResponse",
                       "job": {"jobReference": {"projectId": project, "jobId": job}, "status": {"state": "DONE"}}}),
            )
        }
        _ => google_error(404, "notFound", "Not found", "NOT_FOUND"),
    }
}

fn bigquery_query(state: &mut State, project: &str, request: &Request) -> Response {
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let Some(query) = body.get("query").and_then(Value::as_str) else {
        return google_error(
            400,
            "invalid",
            "Required parameter is missing: query",
            "INVALID_ARGUMENT",
        );
    };
    if body.get("useLegacySql") != Some(&Value::Bool(false)) {
        return google_error(
            400,
            "invalidQuery",
            "Legacy SQL is not what this stand-in serves",
            "INVALID_ARGUMENT",
        );
    }
    let Some(plan) = state.plans.get(query).cloned() else {
        return google_error(
            400,
            "invalidQuery",
            "Not found: Table ferry-test:unknown was not found in location US",
            "INVALID_ARGUMENT",
        );
    };
    if let Some((status, body)) = &plan.fail {
        return Response::json(*status, body.clone());
    }
    state.counter += 1;
    let job = format!("job_{:08}", state.counter);
    let location = body
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("US")
        .to_owned();
    let polls = plan.polls;
    state.running.insert(job.clone(), (plan, polls));
    let max = body.get("maxResults").and_then(Value::as_u64).map(|m| m as usize);
    let mut response = bigquery_results(state, project, &job, None, max, "bigquery#queryResponse");
    if response.status == 200 {
        let mut value: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        value["jobReference"]["location"] = json!(location);
        response.body = value.to_string().into_bytes();
    }
    response
}

fn bigquery_results(
    state: &mut State,
    project: &str,
    job: &str,
    token: Option<&str>,
    max: Option<usize>,
    kind: &str,
) -> Response {
    let Some((plan, polls)) = state.running.get_mut(job) else {
        return google_error(
            404,
            "notFound",
            &format!("Not found: Job {project}:{job}"),
            "NOT_FOUND",
        );
    };
    let reference = json!({"projectId": project, "jobId": job, "location": "US"});
    if *polls > 0 {
        *polls -= 1;
        return Response::json(
            200,
            json!({"kind": kind, "jobReference": reference, "jobComplete": false}),
        );
    }
    let size = match (plan.per_part, max) {
        (0, Some(max)) if max > 0 => max,
        (0, _) => plan.rows.len().max(1),
        (per, Some(max)) if max > 0 => per.min(max),
        (per, _) => per,
    };
    let start = match token {
        None => 0,
        Some(token) => match token.strip_prefix("tok-").and_then(|n| n.parse::<usize>().ok()) {
            Some(start) => start,
            None => return google_error(400, "invalid", "Invalid page token", "INVALID_ARGUMENT"),
        },
    };
    let end = (start + size).min(plan.rows.len());
    let rows: Vec<Value> = plan.rows[start.min(end)..end]
        .iter()
        .map(|row| json!({"f": row.iter().map(|v| json!({"v": v})).collect::<Vec<_>>()}))
        .collect();
    let mut body = json!({
        "kind": kind,
        "etag": "\"stand-in\"",
        "schema": {"fields": plan.columns},
        "jobReference": reference,
        "totalRows": plan.rows.len().to_string(),
        "rows": rows,
        "totalBytesProcessed": "0",
        "jobComplete": true,
        "cacheHit": false,
    });
    if end < plan.rows.len() {
        body["pageToken"] = json!(format!("tok-{end}"));
    }
    Response::json(200, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_gzip_has_the_standard_crc() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        let gz = gzip_stored(b"hello");
        assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(&gz[gz.len() - 4..], &5u32.to_le_bytes());
    }
}
