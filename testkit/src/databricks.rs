//! A stand-in for a Databricks SQL warehouse: the SQL Statement Execution
//! API 2.0 as documented (statement submission with `wait_timeout` /
//! `on_wait_timeout`, polling, `INLINE` and `EXTERNAL_LINKS` results in
//! `JSON_ARRAY` or `ARROW_STREAM`, result chunks, cancel), bearer-token
//! auth, throttling answers, and presigned links served by the same
//! server, on 127.0.0.1 port 0.
//!
//! A test registers a [`Plan`] per statement text: the manifest's columns,
//! the rows (as `JSON_ARRAY` strings) and, for `ARROW_STREAM`, the Arrow
//! IPC stream of each chunk (built by the test), how many polls it stays
//! running, or the error it fails with. Everything the client sends is
//! recorded for the test to assert on. The server speaks just enough
//! HTTP/1.1 (keep-alive, `Content-Length` bodies) for reqwest.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpListener;

use crate::http1::{Request, read_request, write_response};

const STATEMENTS: &str = "/api/2.0/sql/statements";

/// A column of a result's manifest.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `type_name`: BOOLEAN, INT, LONG, DOUBLE, DECIMAL, DATE, TIMESTAMP,
    /// STRING, BINARY, ARRAY, …
    pub type_name: String,
    pub type_text: String,
    pub precision: Option<u32>,
    pub scale: Option<u32>,
}

impl Column {
    pub fn new(name: &str, type_name: &str) -> Column {
        let type_text = match type_name {
            "LONG" => "BIGINT",
            "SHORT" => "SMALLINT",
            "BYTE" => "TINYINT",
            other => other,
        };
        Column {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            type_text: type_text.to_owned(),
            precision: None,
            scale: None,
        }
    }

    pub fn decimal(name: &str, precision: u32, scale: u32) -> Column {
        Column {
            name: name.to_owned(),
            type_name: "DECIMAL".to_owned(),
            type_text: format!("DECIMAL({precision},{scale})"),
            precision: Some(precision),
            scale: Some(scale),
        }
    }
}

/// How a statement ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    Succeed,
    /// `FAILED` with this `error_code`, `message` and `sql_state`.
    Fail {
        error_code: String,
        message: String,
        sql_state: String,
    },
    /// Stays `RUNNING` until cancelled.
    Hang,
}

/// What the warehouse does with one statement.
#[derive(Debug, Clone)]
pub struct Plan {
    pub columns: Vec<Column>,
    /// `JSON_ARRAY` rows: strings or nulls.
    pub rows: Vec<Vec<Value>>,
    /// Rows per `JSON_ARRAY` chunk.
    pub rows_per_chunk: usize,
    /// `ARROW_STREAM` chunks: (row count, Arrow IPC stream bytes).
    pub arrow: Vec<(usize, Vec<u8>)>,
    /// Status polls answered `RUNNING` before the outcome.
    pub polls: usize,
    pub outcome: Outcome,
}

impl Plan {
    /// A result of `columns` and `rows` (in one chunk unless
    /// [`Plan::in_chunks_of`]).
    pub fn rows(columns: Vec<Column>, rows: Vec<Vec<Value>>) -> Plan {
        Plan {
            columns,
            rows,
            rows_per_chunk: usize::MAX,
            arrow: Vec::new(),
            polls: 0,
            outcome: Outcome::Succeed,
        }
    }

    pub fn failing(error_code: &str, message: &str, sql_state: &str) -> Plan {
        Plan {
            outcome: Outcome::Fail {
                error_code: error_code.to_owned(),
                message: message.to_owned(),
                sql_state: sql_state.to_owned(),
            },
            ..Plan::rows(Vec::new(), Vec::new())
        }
    }

    pub fn running_until_cancelled() -> Plan {
        Plan {
            outcome: Outcome::Hang,
            ..Plan::rows(Vec::new(), Vec::new())
        }
    }

    pub fn in_chunks_of(mut self, rows: usize) -> Plan {
        self.rows_per_chunk = rows.max(1);
        self
    }

    /// The same result as `ARROW_STREAM` chunks: (rows, IPC stream bytes).
    pub fn with_arrow(mut self, chunks: Vec<(usize, Vec<u8>)>) -> Plan {
        self.arrow = chunks;
        self
    }

    /// Answers `PENDING` to the submission, then `RUNNING` to `polls`
    /// status requests before the outcome.
    pub fn after_polls(mut self, polls: usize) -> Plan {
        self.polls = polls;
        self
    }
}

/// A presigned link fetch the server saw.
#[derive(Debug, Clone)]
pub struct Download {
    pub path: String,
    /// The `Authorization` header it carried (none is right).
    pub authorization: Option<String>,
}

type Responder = Arc<dyn Fn(&Value) -> Plan + Send + Sync>;

struct Statement {
    plan: Plan,
    state: &'static str,
    polls_left: usize,
    disposition: String,
    format: String,
}

#[derive(Default)]
struct State {
    plans: HashMap<String, Responder>,
    statements: HashMap<String, Statement>,
    next_id: u64,
    submissions: Vec<Value>,
    cancels: Vec<String>,
    downloads: Vec<Download>,
    requests: Vec<String>,
    throttle: VecDeque<(u16, Option<String>)>,
    refuse_arrow: bool,
    refuse_external_links: bool,
    expire_links: usize,
}

/// A running stand-in warehouse. The server stops when it is dropped.
pub struct Warehouse {
    pub addr: SocketAddr,
    /// A host name unique to this warehouse; tests make it resolve to
    /// [`Warehouse::addr`].
    pub host: String,
    pub token: String,
    pub warehouse_id: String,
    /// Served over TLS ([`Warehouse::start_tls`]).
    tls: bool,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Warehouse {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Warehouse {
    /// Starts a warehouse that accepts `token`. It answers `SELECT 1` (one
    /// INT column, one row; in `JSON_ARRAY` only) out of the box.
    pub async fn start(token: &str) -> Warehouse {
        Self::start_with(token, None).await
    }

    /// The same over TLS with the server certificate of `ca`: clients that
    /// trust `ca` reach it as `https://localhost:<port>` (its
    /// [`host`](Warehouse::host) is `localhost`), presigned links included.
    pub async fn start_tls(token: &str, ca: &crate::tls::TestCa) -> Warehouse {
        Self::start_with(token, Some(tokio_rustls::TlsAcceptor::from(ca.server_config()))).await
    }

    async fn start_with(token: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Warehouse {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let id = crate::ulid();
        let (host, link_base) = match &tls {
            Some(_) => (
                "localhost".to_owned(),
                format!("https://localhost:{}", addr.port()),
            ),
            None => (
                format!("dbc-{id}.cloud.databricks.test"),
                format!("http://{addr}"),
            ),
        };
        let warehouse = Warehouse {
            addr,
            tls: tls.is_some(),
            host,
            token: token.to_owned(),
            warehouse_id: id[..16].to_owned(),
            state: Arc::new(Mutex::new(State::default())),
            task: tokio::spawn(async {}),
        };
        let shared = Shared {
            state: warehouse.state.clone(),
            token: token.to_owned(),
            warehouse_id: warehouse.warehouse_id.clone(),
            link_base,
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                shared.connection(stream).await;
                            }
                        }
                        None => shared.connection(stream).await,
                    }
                });
            }
        });
        let mut warehouse = warehouse;
        warehouse.task = task;
        warehouse.on(
            "SELECT 1",
            Plan::rows(vec![Column::new("1", "INT")], vec![vec![json!("1")]]),
        );
        warehouse
    }

    /// `/sql/1.0/warehouses/<id>`.
    pub fn http_path(&self) -> String {
        format!("/sql/1.0/warehouses/{}", self.warehouse_id)
    }

    /// A connector config for this warehouse with `token`.
    pub fn config(&self, token: &str) -> Value {
        let mut config = json!({
            "server_hostname": self.host,
            "http_path": self.http_path(),
            "access_token": token,
            "connection_timeout_seconds": 10,
        });
        if self.tls {
            config["port"] = json!(self.addr.port());
        }
        config
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Answers `statement` (the exact text submitted) with `plan`.
    pub fn on(&self, statement: &str, plan: Plan) {
        self.state()
            .plans
            .insert(statement.to_owned(), Arc::new(move |_: &Value| plan.clone()));
    }

    /// Answers `statement` with the plan `respond` builds from the
    /// submitted request body (e.g. from its `parameters`).
    pub fn on_request(&self, statement: &str, respond: impl Fn(&Value) -> Plan + Send + Sync + 'static) {
        self.state().plans.insert(statement.to_owned(), Arc::new(respond));
    }

    /// Refuses `format: ARROW_STREAM` (400 `INVALID_PARAMETER_VALUE`).
    pub fn refuse_arrow(&self) {
        self.state().refuse_arrow = true;
    }

    /// Refuses `disposition: EXTERNAL_LINKS` (400 `INVALID_PARAMETER_VALUE`).
    pub fn refuse_external_links(&self) {
        self.state().refuse_external_links = true;
    }

    /// Answers the next `times` API requests with `status` (429, 503) and
    /// `Retry-After: retry_after` when given.
    pub fn throttle(&self, times: usize, status: u16, retry_after: Option<&str>) {
        let mut state = self.state();
        for _ in 0..times {
            state.throttle.push_back((status, retry_after.map(str::to_owned)));
        }
    }

    /// Answers the next `times` presigned fetches 403, as an expired link.
    pub fn expire_links(&self, times: usize) {
        self.state().expire_links = times;
    }

    /// The statement submissions (request bodies), in order.
    pub fn submissions(&self) -> Vec<Value> {
        self.state().submissions.clone()
    }

    /// Ids of the statements the client cancelled.
    pub fn cancels(&self) -> Vec<String> {
        self.state().cancels.clone()
    }

    /// Presigned link fetches.
    pub fn downloads(&self) -> Vec<Download> {
        self.state().downloads.clone()
    }

    /// Every request as `METHOD /path`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// The state of statement `id` now.
    pub fn statement_state(&self, id: &str) -> Option<String> {
        self.state().statements.get(id).map(|s| s.state.to_owned())
    }

    /// Ids of the statements submitted so far.
    pub fn statement_ids(&self) -> Vec<String> {
        let state = self.state();
        let mut ids: Vec<String> = state.statements.keys().cloned().collect();
        ids.sort();
        ids
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One response.
struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }

    fn error(status: u16, error_code: &str, message: &str) -> Response {
        Response::json(status, json!({"error_code": error_code, "message": message}))
    }
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    token: String,
    warehouse_id: String,
    /// `scheme://authority` of the presigned links it hands out.
    link_base: String,
}

impl Shared {
    async fn connection<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S) {
        let mut stream = BufReader::new(stream);
        while let Some(request) = read_request(&mut stream).await {
            let response = self.handle(&request);
            let mut headers = vec![("Content-Type".to_owned(), response.content_type.to_string())];
            headers.extend(response.headers.iter().cloned());
            if !write_response(stream.get_mut(), response.status, &headers, &response.body).await {
                return;
            }
        }
    }

    fn handle(&self, request: &Request) -> Response {
        let mut state = lock(&self.state);
        state
            .requests
            .push(format!("{} {}", request.method, request.path));
        if let Some(rest) = request.path.strip_prefix("/presigned/") {
            return self.presigned(&mut state, request, rest);
        }
        let expected = format!("Bearer {}", self.token);
        if request.headers.get("authorization") != Some(&expected) {
            return Response::error(401, "UNAUTHENTICATED", "Invalid access token.");
        }
        if let Some((status, retry_after)) = state.throttle.pop_front() {
            let mut response = Response::error(
                status,
                if status == 429 {
                    "TOO_MANY_REQUESTS"
                } else {
                    "TEMPORARILY_UNAVAILABLE"
                },
                "Slow down.",
            );
            if let Some(seconds) = retry_after {
                response.headers.push(("Retry-After".into(), seconds));
            }
            return response;
        }
        let path = request.path.trim_end_matches('/');
        let Some(rest) = path.strip_prefix(STATEMENTS) else {
            return Response::error(404, "ENDPOINT_NOT_FOUND", "No API found.");
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        match (request.method.as_str(), parts.as_slice()) {
            ("POST", []) => self.submit(&mut state, request),
            ("GET", [id]) => self.poll(&mut state, id),
            ("POST", [id, "cancel"]) => {
                state.cancels.push((*id).to_owned());
                match state.statements.get_mut(*id) {
                    Some(statement) => {
                        if matches!(statement.state, "PENDING" | "RUNNING") {
                            statement.state = "CANCELED";
                        }
                        Response::json(200, json!({}))
                    }
                    None => Response::error(404, "RESOURCE_DOES_NOT_EXIST", "No such statement."),
                }
            }
            ("GET", [id, "result", "chunks", index]) => match index.parse::<usize>() {
                Ok(index) => self.chunk_response(&state, id, index),
                Err(_) => Response::error(400, "INVALID_PARAMETER_VALUE", "Bad chunk index."),
            },
            _ => Response::error(404, "ENDPOINT_NOT_FOUND", "No API found."),
        }
    }

    fn submit(&self, state: &mut State, request: &Request) -> Response {
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return Response::error(400, "MALFORMED_REQUEST", "The body is not JSON.");
        };
        state.submissions.push(body.clone());
        if body["warehouse_id"] != json!(self.warehouse_id) {
            return Response::error(404, "RESOURCE_DOES_NOT_EXIST", "No warehouse of this id.");
        }
        let Some(text) = body["statement"].as_str() else {
            return Response::error(400, "INVALID_PARAMETER_VALUE", "statement is required.");
        };
        let wait = body["wait_timeout"].as_str().unwrap_or("10s");
        let seconds = wait.strip_suffix('s').and_then(|n| n.parse::<u64>().ok());
        if !matches!(seconds, Some(0 | 5..=50)) {
            return Response::error(
                400,
                "INVALID_PARAMETER_VALUE",
                "wait_timeout must be 0s or between 5s and 50s.",
            );
        }
        let on_timeout = body["on_wait_timeout"].as_str().unwrap_or("CONTINUE");
        let disposition = body["disposition"].as_str().unwrap_or("INLINE").to_owned();
        let format = body["format"].as_str().unwrap_or("JSON_ARRAY").to_owned();
        if !matches!(on_timeout, "CONTINUE" | "CANCEL")
            || !matches!(disposition.as_str(), "INLINE" | "EXTERNAL_LINKS")
            || !matches!(format.as_str(), "JSON_ARRAY" | "ARROW_STREAM" | "CSV")
        {
            return Response::error(400, "INVALID_PARAMETER_VALUE", "Unknown request value.");
        }
        if disposition == "INLINE" && format != "JSON_ARRAY" {
            return Response::error(
                400,
                "INVALID_PARAMETER_VALUE",
                "The format ARROW_STREAM is not supported with the INLINE disposition.",
            );
        }
        if state.refuse_arrow && format == "ARROW_STREAM" {
            return Response::error(
                400,
                "INVALID_PARAMETER_VALUE",
                "The format ARROW_STREAM is not supported on this warehouse.",
            );
        }
        if state.refuse_external_links && disposition == "EXTERNAL_LINKS" {
            return Response::error(
                400,
                "INVALID_PARAMETER_VALUE",
                "The EXTERNAL_LINKS disposition is not enabled for this workspace.",
            );
        }
        let plan = match unbound(text, &body) {
            Some(message) => Plan::failing("BAD_REQUEST", &message, "42P02"),
            None => match state.plans.get(text) {
                Some(respond) => respond(&body),
                None => Plan::failing(
                    "BAD_REQUEST",
                    "[TABLE_OR_VIEW_NOT_FOUND] The stand-in warehouse has no result for this statement.",
                    "42P01",
                ),
            },
        };
        // Rows without their Arrow encoding cannot be served as Arrow: fail
        // loudly rather than answer an empty result.
        let plan = if format == "ARROW_STREAM" && plan.arrow.is_empty() && !plan.rows.is_empty() {
            Plan::failing(
                "INTERNAL_ERROR",
                "The stand-in warehouse has no Arrow chunks for this statement's rows.",
                "XX000",
            )
        } else {
            plan
        };
        state.next_id += 1;
        let id = format!("01f0{:012x}-0000-4000-8000-{:012x}", state.next_id, state.next_id);
        let mut statement = Statement {
            state: "PENDING",
            polls_left: plan.polls,
            plan,
            disposition,
            format,
        };
        if seconds != Some(0) {
            match (&statement.plan.outcome, statement.polls_left) {
                (Outcome::Hang, _) | (_, 1..) if on_timeout == "CANCEL" => statement.state = "CANCELED",
                (Outcome::Succeed, 0) => statement.state = "SUCCEEDED",
                (Outcome::Fail { .. }, 0) => statement.state = "FAILED",
                _ => {}
            }
        }
        let response = self.statement_response(&id, &statement);
        state.statements.insert(id, statement);
        Response::json(200, response)
    }

    fn poll(&self, state: &mut State, id: &str) -> Response {
        let Some(statement) = state.statements.get_mut(id) else {
            return Response::error(404, "RESOURCE_DOES_NOT_EXIST", "No such statement.");
        };
        if matches!(statement.state, "PENDING" | "RUNNING") {
            match statement.plan.outcome {
                Outcome::Hang => statement.state = "RUNNING",
                _ if statement.polls_left > 0 => {
                    statement.polls_left -= 1;
                    statement.state = "RUNNING";
                }
                Outcome::Succeed => statement.state = "SUCCEEDED",
                Outcome::Fail { .. } => statement.state = "FAILED",
            }
        }
        let statement = &state.statements[id];
        Response::json(200, self.statement_response(id, statement))
    }

    fn statement_response(&self, id: &str, statement: &Statement) -> Value {
        let mut response = json!({"statement_id": id, "status": {"state": statement.state}});
        match (&statement.plan.outcome, statement.state) {
            (
                Outcome::Fail {
                    error_code,
                    message,
                    sql_state,
                },
                "FAILED",
            ) => {
                response["status"]["error"] = json!({"error_code": error_code, "message": message});
                response["status"]["sql_state"] = json!(sql_state);
            }
            (_, "SUCCEEDED") => {
                let chunks = chunk_rows(statement);
                response["manifest"] = manifest(statement, &chunks);
                if !chunks.is_empty() {
                    response["result"] = self.chunk(id, statement, &chunks, 0);
                }
            }
            _ => {}
        }
        response
    }

    fn chunk_response(&self, state: &State, id: &str, index: usize) -> Response {
        let Some(statement) = state.statements.get(id) else {
            return Response::error(404, "RESOURCE_DOES_NOT_EXIST", "No such statement.");
        };
        if statement.state != "SUCCEEDED" {
            return Response::error(400, "INVALID_STATE", "The statement has no result.");
        }
        let chunks = chunk_rows(statement);
        if index >= chunks.len() {
            return Response::error(400, "INVALID_PARAMETER_VALUE", "No such chunk.");
        }
        Response::json(200, self.chunk(id, statement, &chunks, index))
    }

    /// Chunk `index` as `ResultData`: inline rows, or one external link.
    fn chunk(&self, id: &str, statement: &Statement, chunks: &[(usize, usize)], index: usize) -> Value {
        let (offset, count) = chunks[index];
        let mut data = json!({"chunk_index": index, "row_offset": offset, "row_count": count});
        if index + 1 < chunks.len() {
            data["next_chunk_index"] = json!(index + 1);
            data["next_chunk_internal_link"] =
                json!(format!("{STATEMENTS}/{id}/result/chunks/{}", index + 1));
        }
        if statement.disposition == "INLINE" {
            data["data_array"] = json!(statement.plan.rows[offset..offset + count]);
            return data;
        }
        data["byte_count"] = json!(chunk_bytes(statement, chunks, index).len());
        data["external_link"] = json!(format!(
            "{}/presigned/{id}/{index}?X-Amz-Signature=fake{index}",
            self.link_base
        ));
        data["expiration"] = json!("2099-01-01T00:00:00.000Z");
        json!({"external_links": [data]})
    }

    fn presigned(&self, state: &mut State, request: &Request, rest: &str) -> Response {
        state.downloads.push(Download {
            path: format!("/presigned/{rest}"),
            authorization: request.headers.get("authorization").cloned(),
        });
        if request.headers.contains_key("authorization") {
            return Response::error(400, "InvalidArgument", "Only one auth mechanism allowed.");
        }
        if !request.query.starts_with("X-Amz-Signature=") {
            return Response::error(403, "AccessDenied", "Missing signature.");
        }
        if state.expire_links > 0 {
            state.expire_links -= 1;
            return Response::error(403, "AccessDenied", "Request has expired.");
        }
        let Some((id, index)) = rest.split_once('/') else {
            return Response::error(404, "NoSuchKey", "No such object.");
        };
        let (Some(statement), Ok(index)) = (state.statements.get(id), index.parse::<usize>()) else {
            return Response::error(404, "NoSuchKey", "No such object.");
        };
        let chunks = chunk_rows(statement);
        if index >= chunks.len() {
            return Response::error(404, "NoSuchKey", "No such object.");
        }
        Response {
            status: 200,
            content_type: if statement.format == "ARROW_STREAM" {
                "application/vnd.apache.arrow.stream"
            } else {
                "application/json"
            },
            headers: Vec::new(),
            body: chunk_bytes(statement, &chunks, index),
        }
    }
}

/// (row offset, row count) of each chunk of a statement's result.
fn chunk_rows(statement: &Statement) -> Vec<(usize, usize)> {
    let plan = &statement.plan;
    if statement.format == "ARROW_STREAM" {
        let mut offset = 0;
        return plan
            .arrow
            .iter()
            .map(|(rows, _)| {
                let chunk = (offset, *rows);
                offset += rows;
                chunk
            })
            .collect();
    }
    (0..plan.rows.len())
        .step_by(plan.rows_per_chunk)
        .map(|offset| (offset, plan.rows_per_chunk.min(plan.rows.len() - offset)))
        .collect()
}

/// The bytes a presigned link of chunk `index` serves.
fn chunk_bytes(statement: &Statement, chunks: &[(usize, usize)], index: usize) -> Vec<u8> {
    if statement.format == "ARROW_STREAM" {
        return statement.plan.arrow[index].1.clone();
    }
    let (offset, count) = chunks[index];
    json!(statement.plan.rows[offset..offset + count])
        .to_string()
        .into_bytes()
}

fn manifest(statement: &Statement, chunks: &[(usize, usize)]) -> Value {
    let columns: Vec<Value> = statement
        .plan
        .columns
        .iter()
        .enumerate()
        .map(|(position, column)| {
            let mut out = json!({
                "name": column.name,
                "position": position,
                "type_name": column.type_name,
                "type_text": column.type_text,
            });
            if let Some(precision) = column.precision {
                out["type_precision"] = json!(precision);
            }
            if let Some(scale) = column.scale {
                out["type_scale"] = json!(scale);
            }
            out
        })
        .collect();
    let total: usize = chunks.iter().map(|(_, count)| count).sum();
    json!({
        "format": statement.format,
        "schema": {"column_count": columns.len(), "columns": columns},
        "total_chunk_count": chunks.len(),
        "chunks": chunks
            .iter()
            .enumerate()
            .map(|(index, (offset, count))| json!({"chunk_index": index, "row_offset": offset, "row_count": count}))
            .collect::<Vec<_>>(),
        "total_row_count": total,
        "truncated": false,
    })
}

/// The error Databricks gives when named markers and `parameters` do not
/// match: a `:name` without a parameter, or a parameter without a marker.
fn unbound(statement: &str, body: &Value) -> Option<String> {
    let given: Vec<&str> = body["parameters"]
        .as_array()
        .map(|items| items.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    let markers = markers(statement);
    if let Some(missing) = markers.iter().find(|m| !given.contains(&m.as_str())) {
        return Some(format!(
            "[UNBOUND_SQL_PARAMETER] Found the unbound parameter: {missing}."
        ));
    }
    given
        .iter()
        .find(|g| !markers.iter().any(|m| m == *g))
        .map(|extra| format!("[UNBOUND_SQL_PARAMETER] The parameter {extra} has no marker."))
}

/// The `:name` markers of a statement outside quotes (`::` casts aside).
fn markers(statement: &str) -> Vec<String> {
    let bytes = statement.as_bytes();
    let mut found = Vec::new();
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' || b == b'`' => quote = Some(b),
            None if b == b':' && bytes.get(i + 1) == Some(&b':') => i += 1,
            None if b == b':' => {
                let name: String = statement[i + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    i += name.len();
                    if !found.contains(&name) {
                        found.push(name);
                    }
                }
            }
            None => {}
        }
        i += 1;
    }
    found
}

/// The parameters of a submitted request body, by name: (value, type).
pub fn parameters(body: &Value) -> Map<String, Value> {
    body["parameters"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| Some((p["name"].as_str()?.to_owned(), json!([p["value"], p["type"]]))))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn markers_skip_quotes_and_casts() {
        assert_eq!(
            super::markers("SELECT :a, ':b', x::int, :c_1 FROM t WHERE y = :a"),
            ["a", "c_1"]
        );
    }
}
