//! `http_request`: records read from a REST API connector, page by page.
//!
//! `path` is appended to the connector's `base_url`; `query` and `headers`
//! are objects whose values may hold `{{name}}` parameters (in the path a
//! parameter's value is percent-escaped as one path segment, so it cannot
//! add segments or a query). `body` (JSON) goes with `POST`, `PUT` and
//! `PATCH`; a body string that is exactly one placeholder becomes the
//! parameter's typed JSON value, a placeholder inside a longer string is
//! replaced by the value's text. `records_path` is a dot path (`data.items`;
//! a numeric segment indexes an array) to the records in the JSON response;
//! without it the body itself is the array. `pagination` is one of
//! `page`, `offset`, `cursor` and `link_header` (the `type` field), each
//! with an optional `max_pages`.
//!
//! Reading a response follows the same config: [`ResponseShape`] and
//! [`read_page`] walk a body once to its records and cursor and hand each
//! record on as raw JSON text, field by field, so that the worker types the
//! values from their exact text.
//!
//! Header names that carry credentials (`Authorization`, `Cookie`, ...) or
//! that the HTTP client owns are refused: step configs are stored in clear
//! and shown to every project member; credentials belong to the connector.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::domain::step::{ParamSpec, connector_field, non_empty_string, placeholders};
use crate::error::{Error, Result};

/// The most headers a step may set.
pub const MAX_HEADERS: usize = 50;

/// The longest `path`, in bytes.
pub const MAX_PATH_BYTES: usize = 2048;

/// The most segments a dot path may have.
pub const MAX_PATH_SEGMENTS: usize = 32;

/// Header names a step may not set, with the reason: credentials (step
/// configs are stored in clear; the connector's auth fields are sealed) and
/// headers the HTTP client owns.
const REFUSED_HEADERS: &[(&str, &str)] = &[
    (
        "authorization",
        "carries credentials; set them on the connector (auth_type)",
    ),
    (
        "proxy-authorization",
        "carries credentials; set them on the connector (auth_type)",
    ),
    (
        "cookie",
        "carries credentials; set them on the connector (auth_type)",
    ),
    ("host", "is set by Ferry"),
    ("content-length", "is set by Ferry"),
    ("transfer-encoding", "is set by Ferry"),
    ("connection", "is set by Ferry"),
    ("upgrade", "is set by Ferry"),
    ("te", "is set by Ferry"),
    ("trailer", "is set by Ferry"),
    ("proxy-connection", "is set by Ferry"),
];

/// An `http_request` step's config, as the API validates it and the worker
/// runs it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    pub connector_uuid: String,
    /// Default `GET`.
    #[serde(default)]
    pub method: Method,
    /// Appended to the connector's `base_url` (`/v1/users/{{id}}`).
    pub path: String,
    /// Query parameters in config order (sorted by name where the JSON
    /// map does not keep the order); an array value repeats the name
    /// (`ids=1&ids=2`); numbers and booleans are written as JSON writes them.
    #[serde(default, deserialize_with = "query_pairs")]
    pub query: Vec<(String, String)>,
    /// Extra request headers (values may hold parameters).
    #[serde(default, deserialize_with = "header_map")]
    pub headers: BTreeMap<String, String>,
    /// JSON request body, for `POST`, `PUT` and `PATCH`.
    #[serde(default)]
    pub body: Option<Value>,
    /// Dot path to the records in the response body; absent: the body is
    /// the array of records.
    #[serde(default)]
    pub records_path: Option<String>,
    /// Seconds each request may take (1–600); default: the connector's
    /// `timeout_seconds`.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    #[serde(default)]
    pub pagination: Option<Pagination>,
    /// Declared parameters: name to `{type, default?}`.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// The request method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Method {
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    #[serde(rename = "POST", alias = "post")]
    Post,
    #[serde(rename = "PUT", alias = "put")]
    Put,
    #[serde(rename = "PATCH", alias = "patch")]
    Patch,
    #[serde(rename = "DELETE", alias = "delete")]
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// Whether requests of this method may carry a body.
    pub fn takes_body(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }
}

/// How the pages of a response are requested, by its `type`. Every style
/// stops on an empty page; `page` and `offset` also on a page shorter than
/// `limit` (when a limit is set); `cursor` on an absent, null, empty or
/// unchanged cursor; `link_header` when no `rel="next"` link is given.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Pagination {
    Page(PagePaging),
    Offset(OffsetPaging),
    Cursor(CursorPaging),
    LinkHeader(LinkPaging),
}

/// The words of [`Pagination`]'s `type`.
pub const PAGINATION_TYPES: [&str; 4] = ["page", "offset", "cursor", "link_header"];

/// `?page=N&per_page=L`, N counting up from `start`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagePaging {
    /// Default `page`.
    #[serde(default = "words::page")]
    pub page_param: String,
    /// Default `per_page`; sent only with a `limit`.
    #[serde(default = "words::per_page")]
    pub limit_param: String,
    /// Records asked per page; a shorter page is the last. Absent: no limit
    /// is sent and only an empty page ends the read.
    #[serde(default, deserialize_with = "positive_u32")]
    pub limit: Option<u32>,
    /// The first page's number. Default 1.
    #[serde(default = "words::one")]
    pub start: u64,
    #[serde(default, deserialize_with = "positive_u32")]
    pub max_pages: Option<u32>,
}

/// `?offset=O&limit=L`, O counting the records received so far.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetPaging {
    /// Default `offset`.
    #[serde(default = "words::offset")]
    pub offset_param: String,
    /// Default `limit`; sent only with a `limit`.
    #[serde(default = "words::limit")]
    pub limit_param: String,
    #[serde(default, deserialize_with = "positive_u32")]
    pub limit: Option<u32>,
    #[serde(default, deserialize_with = "positive_u32")]
    pub max_pages: Option<u32>,
}

/// `?cursor=C`, C read from the previous page's body at `cursor_path`; the
/// first request has no cursor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorPaging {
    /// Default `cursor`.
    #[serde(default = "words::cursor")]
    pub cursor_param: String,
    /// Dot path of the next cursor in the response body (a string or a
    /// number).
    pub cursor_path: String,
    #[serde(default, deserialize_with = "positive_u32")]
    pub max_pages: Option<u32>,
}

/// The next page is the response's `Link: <url>; rel="next"` (RFC 8288),
/// relative or absolute; an absolute one must stay on the connector's
/// origin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkPaging {
    #[serde(default, deserialize_with = "positive_u32")]
    pub max_pages: Option<u32>,
}

impl Pagination {
    /// At most this many pages are read (the read then ends successfully).
    pub fn max_pages(&self) -> Option<u32> {
        match self {
            Pagination::Page(p) => p.max_pages,
            Pagination::Offset(p) => p.max_pages,
            Pagination::Cursor(p) => p.max_pages,
            Pagination::LinkHeader(p) => p.max_pages,
        }
    }

    /// The query parameters paging sets (field name, parameter name), which
    /// `query` may not set too.
    fn params(&self) -> Vec<(&'static str, &str)> {
        fn limit(limit: Option<u32>, param: &str) -> Option<(&'static str, &str)> {
            limit.map(|_| ("limit_param", param))
        }
        let (first, second) = match self {
            Pagination::Page(p) => (
                ("page_param", p.page_param.as_str()),
                limit(p.limit, &p.limit_param),
            ),
            Pagination::Offset(p) => (
                ("offset_param", p.offset_param.as_str()),
                limit(p.limit, &p.limit_param),
            ),
            Pagination::Cursor(p) => (("cursor_param", p.cursor_param.as_str()), None),
            Pagination::LinkHeader(_) => return Vec::new(),
        };
        std::iter::once(first).chain(second).collect()
    }
}

mod words {
    pub fn page() -> String {
        "page".into()
    }
    pub fn per_page() -> String {
        "per_page".into()
    }
    pub fn offset() -> String {
        "offset".into()
    }
    pub fn limit() -> String {
        "limit".into()
    }
    pub fn cursor() -> String {
        "cursor".into()
    }
    pub fn one() -> u64 {
        1
    }
}

/// The segments of a dot path (`data.items` → `["data", "items"]`).
pub fn segments(path: &str) -> Vec<&str> {
    path.split('.').collect()
}

impl HttpRequest {
    /// Parses and checks a step's config; errors name the field
    /// (`config.pagination.type`, `config.headers.Cookie`).
    pub fn parse(config: &Map<String, Value>) -> Result<HttpRequest> {
        connector_field(config)?;
        non_empty_string(config, "path")?;
        if let Some(pagination) = config.get("pagination").filter(|value| !value.is_null()) {
            check_pagination(pagination)?;
        }
        let request: HttpRequest = super::parse(config)?;
        request.check()?;
        Ok(request)
    }

    fn check(&self) -> Result<()> {
        check_path(&self.path)?;
        for (name, spec) in self.parameters.iter().flatten() {
            ParamSpec::parse(name, spec)?;
        }
        let paging = self
            .pagination
            .as_ref()
            .map(Pagination::params)
            .unwrap_or_default();
        for (name, value) in &self.query {
            let field = format!("config.query.{name}");
            if name.is_empty() || name.contains("{{") {
                return Err(Error::validation(
                    field,
                    "query parameter names are plain text (parameters go in values)",
                ));
            }
            if paging.iter().any(|(_, param)| param == name) {
                return Err(Error::validation(
                    field,
                    format!("{name} is set by the pagination on every page"),
                ));
            }
            check_placeholders(&field, value)?;
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(Error::validation(
                "config.headers",
                format!("at most {MAX_HEADERS} headers"),
            ));
        }
        for (name, value) in &self.headers {
            check_header(name, value)?;
        }
        if let Some(body) = &self.body {
            if !self.method.takes_body() {
                return Err(Error::validation(
                    "config.body",
                    format!(
                        "a body goes with POST, PUT or PATCH, not {}",
                        self.method.as_str()
                    ),
                ));
            }
            check_body("config.body", body)?;
        }
        if let Some(path) = &self.records_path {
            check_dot_path("config.records_path", path)?;
        }
        if let Some(seconds) = self.timeout_seconds
            && !(1..=600).contains(&seconds)
        {
            return Err(Error::validation(
                "config.timeout_seconds",
                "timeout_seconds must be an integer between 1 and 600",
            ));
        }
        if let Some(Pagination::Cursor(cursor)) = &self.pagination {
            check_dot_path("config.pagination.cursor_path", &cursor.cursor_path)?;
            let field = "config.pagination.cursor_path";
            match &self.records_path {
                None => {
                    return Err(Error::validation(
                        field,
                        "cursor pagination needs records_path: the records and the cursor are both in the body",
                    ));
                }
                Some(records) if within(&cursor.cursor_path, records) => {
                    return Err(Error::validation(
                        field,
                        "the cursor cannot be inside the records (records_path)",
                    ));
                }
                Some(_) => {}
            }
        }
        for (field, name) in &paging {
            if name.trim().is_empty() || name.contains("{{") {
                return Err(Error::validation(
                    format!("config.pagination.{field}"),
                    format!("{field} must be a query parameter name"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks an `http_request` step's config (see [`HttpRequest::parse`]).
pub fn validate(config: &Map<String, Value>) -> Result<()> {
    HttpRequest::parse(config).map(drop)
}

/// Whether dot path `inner` is `outer` or lies under it.
fn within(inner: &str, outer: &str) -> bool {
    inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// The pagination object, variant by variant, so that a refusal names the
/// exact field (`config.pagination.type`, `config.pagination.limit`).
fn check_pagination(value: &Value) -> Result<()> {
    let Some(map) = value.as_object() else {
        return Err(Error::validation(
            "config.pagination",
            "pagination must be an object with a type",
        ));
    };
    let types = PAGINATION_TYPES.join(", ");
    let mut rest = map.clone();
    let kind = match rest.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => {
            return Err(Error::validation(
                "config.pagination.type",
                format!("pagination.type is required: one of {types}"),
            ));
        }
    };
    let rest = Value::Object(rest);
    match kind.as_str() {
        "page" => parse_at::<PagePaging>(rest, "config.pagination"),
        "offset" => parse_at::<OffsetPaging>(rest, "config.pagination"),
        "cursor" => parse_at::<CursorPaging>(rest, "config.pagination"),
        "link_header" => parse_at::<LinkPaging>(rest, "config.pagination"),
        _ => Err(Error::validation(
            "config.pagination.type",
            format!("unknown pagination type {kind:?}; expected one of {types}"),
        )),
    }
}

/// Deserialises `value` into `T`; a refusal names the field under `prefix`.
fn parse_at<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<()> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(drop)
        .map_err(|error| {
            let path = error.path().to_string();
            let field = if path == "." || path.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{path}")
            };
            Error::validation(field, error.into_inner().to_string())
        })
}

fn check_path(path: &str) -> Result<()> {
    let fail = |why: &str| Err(Error::validation("config.path", format!("path {why}")));
    if path.len() > MAX_PATH_BYTES {
        return fail(&format!("must be at most {MAX_PATH_BYTES} bytes"));
    }
    if path.contains("://") || path.starts_with("//") {
        return fail("is appended to the connector's base_url and cannot name another host");
    }
    if path.chars().any(|c| c.is_control() || matches!(c, '#' | '\\')) {
        return fail("must not contain control characters, '#' or '\\'");
    }
    check_placeholders("config.path", path)
}

/// Every `{{name}}` in `text` names a parameter (letters, digits, `_`).
fn check_placeholders(field: &str, text: &str) -> Result<()> {
    for name in placeholders(text) {
        let mut chars = name.chars();
        let identifier = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !identifier {
            return Err(Error::validation(
                field,
                format!("invalid parameter placeholder {{{{{name}}}}}"),
            ));
        }
    }
    Ok(())
}

fn check_body(field: &str, value: &Value) -> Result<()> {
    match value {
        Value::String(text) => check_placeholders(field, text),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_body(&format!("{field}.{index}"), item)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(key, item)| check_body(&format!("{field}.{key}"), item)),
        _ => Ok(()),
    }
}

fn check_header(name: &str, value: &str) -> Result<()> {
    let field = format!("config.headers.{name}");
    if name.len() > 256 || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(Error::validation(
            field,
            "header names are HTTP tokens (letters, digits, '-', ...)",
        ));
    }
    let lower = name.to_ascii_lowercase();
    if let Some((_, why)) = REFUSED_HEADERS.iter().find(|(refused, _)| *refused == lower) {
        return Err(Error::validation(field, format!("{name} {why}")));
    }
    let valid = value.len() <= 8192
        && http::HeaderValue::from_bytes(value.as_bytes()).is_ok()
        && !value.chars().any(|c| c != '\t' && c.is_control());
    if !valid {
        return Err(Error::validation(
            field,
            "header values are at most 8 KiB, without line breaks or control characters",
        ));
    }
    check_placeholders(&field, value)
}

fn check_dot_path(field: &str, path: &str) -> Result<()> {
    let parts = segments(path);
    if path.is_empty() || parts.iter().any(|part| part.is_empty()) || parts.len() > MAX_PATH_SEGMENTS {
        return Err(Error::validation(
            field,
            format!("a dot path of at most {MAX_PATH_SEGMENTS} non-empty segments, such as data.items"),
        ));
    }
    Ok(())
}

fn query_pairs<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<(String, String)>, D::Error> {
    let refused = |name: &str| {
        serde::de::Error::custom(format!(
            "query.{name} must be a string, number, boolean or an array of those"
        ))
    };
    let scalar = |value: &Value| match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    };
    let map = match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(serde::de::Error::custom("query must be an object")),
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (name, value) in map {
        match &value {
            Value::Array(items) => {
                for item in items {
                    pairs.push((name.clone(), scalar(item).ok_or_else(|| refused(&name))?));
                }
            }
            other => pairs.push((name.clone(), scalar(other).ok_or_else(|| refused(&name))?)),
        }
    }
    Ok(pairs)
}

fn header_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(deserializer)?.unwrap_or_default())
}

fn positive_u32<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<u32>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1 && n <= u64::from(u32::MAX)) => {
            Ok(n.as_u64().and_then(|n| u32::try_from(n).ok()))
        }
        Some(_) => Err(serde::de::Error::custom(
            "must be a positive integer (at most 4294967295)",
        )),
    }
}

// ---------------------------------------------------------------- responses

/// The field a record that is not a JSON object is read into: `[1, "a"]`
/// reads as `{"value": 1}`, `{"value": "a"}`.
pub const VALUE_FIELD: &str = "value";

/// Where the records and the cursor of a response body are: the step's
/// `records_path` and `cursor_path` as one tree, so that a body is walked
/// once and everything else in it is skipped without being built.
///
/// At the records path: an array is the records; an object is one record;
/// null is no records; anything else is refused. A numeric segment indexes
/// an array (`pages.0.items`) or names an object's key. Without a records
/// path the body itself is the records.
#[derive(Debug, Default)]
pub struct ResponseShape {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    role: Role,
    children: Vec<(String, Node)>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Role {
    #[default]
    Pass,
    Records,
    Cursor,
}

impl ResponseShape {
    /// The shape a step's config describes.
    pub fn of(config: &HttpRequest) -> ResponseShape {
        let cursor = match &config.pagination {
            Some(Pagination::Cursor(cursor)) => Some(cursor.cursor_path.as_str()),
            _ => None,
        };
        ResponseShape::new(config.records_path.as_deref(), cursor)
    }

    /// `records_path` absent: the body is the records.
    pub fn new(records_path: Option<&str>, cursor_path: Option<&str>) -> ResponseShape {
        let mut shape = ResponseShape::default();
        shape.insert(records_path, Role::Records);
        if cursor_path.is_some() {
            shape.insert(cursor_path, Role::Cursor);
        }
        shape
    }

    fn insert(&mut self, path: Option<&str>, role: Role) {
        let mut node = &mut self.root;
        for segment in path.into_iter().flat_map(segments) {
            let at = match node.children.iter().position(|(name, _)| name == segment) {
                Some(at) => at,
                None => {
                    node.children.push((segment.to_owned(), Node::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at].1;
        }
        node.role = role;
    }
}

/// What receives a page's records, field by field, as raw JSON text.
pub trait RecordSink {
    type Error;

    /// The `position`-th field of the current record: its key and its
    /// value's JSON text exactly as the body has it.
    fn field(&mut self, position: usize, key: &str, raw: &str) -> std::result::Result<(), Self::Error>;

    /// The end of the current record, whose JSON text was `bytes` long.
    fn end(&mut self, bytes: usize) -> std::result::Result<(), Self::Error>;
}

/// What a page held besides its records.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PageFacts {
    /// Records read from the page.
    pub records: usize,
    /// Whether the records path was in the body (possibly null).
    pub found: bool,
    /// The value at the cursor path, if it was there.
    pub cursor: Option<Value>,
    /// The body's top-level keys (the first ten), to tell what a body
    /// without the records path had instead.
    pub keys: Vec<String>,
}

/// Why a page could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum PageError<E> {
    /// The body is not JSON, or its records are not an array of records.
    Shape(String),
    /// The sink refused a record.
    Sink(E),
}

/// Reads one page `body`, handing each record to `sink`. An empty body is
/// an empty page (as `204 No Content` answers).
pub fn read_page<S: RecordSink>(
    body: &[u8],
    shape: &ResponseShape,
    sink: &mut S,
) -> std::result::Result<PageFacts, PageError<S::Error>> {
    let mut state = Walking {
        sink,
        facts: PageFacts::default(),
        stopped: None,
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        state.facts.found = true;
        return Ok(state.facts);
    }
    let mut reader = serde_json::Deserializer::from_slice(body);
    let walked = Walk {
        node: &shape.root,
        state: &mut state,
        top: true,
    }
    .deserialize(&mut reader)
    .and_then(|()| reader.end());
    if let Some(error) = state.stopped.take() {
        return Err(error);
    }
    walked.map_err(|e| PageError::Shape(format!("the response is not valid JSON: {e}")))?;
    Ok(state.facts)
}

/// Hands one record (raw JSON text) to `sink`: an object field by field, any
/// other value as the [`VALUE_FIELD`].
pub fn read_record<S: RecordSink>(raw: &str, sink: &mut S) -> std::result::Result<(), PageError<S::Error>> {
    if raw.starts_with('{') {
        let mut stopped = None;
        let mut reader = serde_json::Deserializer::from_str(raw);
        let read = reader.deserialize_map(Fields {
            sink: &mut *sink,
            stopped: &mut stopped,
        });
        if let Some(error) = stopped {
            return Err(PageError::Sink(error));
        }
        read.map_err(|e| PageError::Shape(format!("a record is not valid JSON: {e}")))?;
    } else {
        sink.field(0, VALUE_FIELD, raw).map_err(PageError::Sink)?;
    }
    sink.end(raw.len()).map_err(PageError::Sink)
}

struct Walking<'a, S: RecordSink> {
    sink: &'a mut S,
    facts: PageFacts,
    /// The error that stopped the walk (serde errors carry only text).
    stopped: Option<PageError<S::Error>>,
}

impl<S: RecordSink> Walking<'_, S> {
    fn record(&mut self, raw: &str) -> std::result::Result<(), PageError<S::Error>> {
        self.facts.records += 1;
        read_record(raw, self.sink)
    }

    /// Keeps `error` and gives serde an error that stops the parse.
    fn stop<E: de::Error>(&mut self, error: PageError<S::Error>) -> E {
        self.stopped = Some(error);
        E::custom("stopped")
    }
}

struct Walk<'n, 's, 'a, S: RecordSink> {
    node: &'n Node,
    state: &'s mut Walking<'a, S>,
    /// The body's root (its keys are noted).
    top: bool,
}

impl<'de, S: RecordSink> DeserializeSeed<'de> for Walk<'_, '_, '_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        match self.node.role {
            Role::Records => {
                self.state.facts.found = true;
                deserializer.deserialize_any(Records { state: self.state })
            }
            Role::Cursor => {
                self.state.facts.cursor = Some(Value::deserialize(deserializer)?);
                Ok(())
            }
            Role::Pass => deserializer.deserialize_any(self),
        }
    }
}

impl<'de, S: RecordSink> Visitor<'de> for Walk<'_, '_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // Scalars lead nowhere: only objects and arrays hold the paths.
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if self.top && self.state.facts.keys.len() < 10 {
                self.state.facts.keys.push(key.to_string());
            }
            match self.node.children.iter().find(|(name, _)| *name == key) {
                Some((_, child)) => map.next_value_seed(Walk {
                    node: child,
                    state: &mut *self.state,
                    top: false,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let child = self
                .node
                .children
                .iter()
                .find(|(name, _)| name.parse::<usize>() == Ok(index));
            let more = match child {
                Some((_, child)) => seq
                    .next_element_seed(Walk {
                        node: child,
                        state: &mut *self.state,
                        top: false,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }
}

/// The value at the records path.
struct Records<'s, 'a, S: RecordSink> {
    state: &'s mut Walking<'a, S>,
}

impl<'de, S: RecordSink> Visitor<'de> for Records<'_, '_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while let Some(record) = seq.next_element::<&RawValue>()? {
            if let Err(error) = self.state.record(record.get()) {
                return Err(self.state.stop(error));
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let state = self.state;
        let mut position = 0;
        let mut bytes = 2;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value: &RawValue = map.next_value()?;
            bytes += key.len() + value.get().len() + 4;
            if let Err(error) = state.sink.field(position, &key, value.get()) {
                return Err(state.stop(PageError::Sink(error)));
            }
            position += 1;
        }
        state.facts.records += 1;
        if let Err(error) = state.sink.end(bytes) {
            return Err(state.stop(PageError::Sink(error)));
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<(), E> {
        Err(self.state.stop(not_records("true or false")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<(), E> {
        Err(self.state.stop(not_records("a number")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<(), E> {
        Err(self.state.stop(not_records("a number")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<(), E> {
        Err(self.state.stop(not_records("a number")))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<(), E> {
        Err(self.state.stop(not_records("a string")))
    }
}

fn not_records<E>(found: &str) -> PageError<E> {
    PageError::Shape(format!(
        "the records are {found}, not an array of records (check records_path)"
    ))
}

/// The fields of one record object.
struct Fields<'s, S: RecordSink> {
    sink: &'s mut S,
    stopped: &'s mut Option<S::Error>,
}

impl<'de, S: RecordSink> Visitor<'de> for Fields<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut position = 0;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value: &RawValue = map.next_value()?;
            if let Err(error) = self.sink.field(position, &key, value.get()) {
                *self.stopped = Some(error);
                return Err(de::Error::custom("stopped"));
            }
            position += 1;
        }
        Ok(())
    }
}

/// A map key, borrowed from the body unless it had escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONN: &str = "conn_01J9ZQ4X3M6R8T2V5W7Y9A1B3C";

    fn parse(config: Value) -> Result<HttpRequest> {
        HttpRequest::parse(config.as_object().expect("an object"))
    }

    fn refusal(config: Value) -> (String, String) {
        match parse(config) {
            Err(Error::Validation { field, message, .. }) => (field.unwrap_or_default(), message),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    fn with(extra: Value) -> Value {
        let mut config = json!({"connector_uuid": CONN, "path": "/v1/items"});
        for (key, value) in extra.as_object().expect("an object") {
            config[key] = value.clone();
        }
        config
    }

    #[test]
    fn a_bare_get_takes_the_defaults() {
        let request = parse(with(json!({}))).expect("valid");
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, "/v1/items");
        assert!(request.query.is_empty() && request.headers.is_empty());
        assert_eq!(
            (request.body, request.records_path, request.pagination),
            (None, None, None)
        );
    }

    #[test]
    fn a_full_config_parses_with_query_pairs_and_typed_pagination() {
        let request = parse(with(json!({
            "method": "POST", "path": "/v1/users/{{id}}/orders",
            "query": {"status": "{{status}}", "ids": [1, 2], "active": true},
            "headers": {"X-Tenant": "{{tenant}}"},
            "body": {"since": "{{since}}"},
            "records_path": "data.items", "timeout_seconds": 5,
            "pagination": {"type": "page", "limit": 50, "max_pages": 3},
            "parameters": {"id": {"type": "integer"}}
        })))
        .expect("valid");
        assert_eq!(request.method, Method::Post);
        // Config order where serde_json keeps it (`preserve_order`), else
        // sorted by name: compared as a set.
        let mut query = request.query.clone();
        query.sort();
        assert_eq!(
            query,
            [
                ("active".to_owned(), "true".to_owned()),
                ("ids".to_owned(), "1".to_owned()),
                ("ids".to_owned(), "2".to_owned()),
                ("status".to_owned(), "{{status}}".to_owned()),
            ]
        );
        assert_eq!(
            request.pagination,
            Some(Pagination::Page(PagePaging {
                page_param: "page".into(),
                limit_param: "per_page".into(),
                limit: Some(50),
                start: 1,
                max_pages: Some(3),
            }))
        );
        assert_eq!(
            request.pagination.as_ref().and_then(Pagination::max_pages),
            Some(3)
        );
    }

    #[test]
    fn every_pagination_type_parses_with_its_defaults() {
        let offset = parse(with(json!({"pagination": {"type": "offset"}}))).expect("valid");
        assert_eq!(
            offset.pagination,
            Some(Pagination::Offset(OffsetPaging {
                offset_param: "offset".into(),
                limit_param: "limit".into(),
                limit: None,
                max_pages: None,
            }))
        );
        let cursor = parse(with(json!({"records_path": "data",
            "pagination": {"type": "cursor", "cursor_path": "meta.next"}})))
        .expect("valid");
        assert!(matches!(cursor.pagination, Some(Pagination::Cursor(ref c))
            if c.cursor_param == "cursor" && c.cursor_path == "meta.next"));
        let link = parse(with(
            json!({"pagination": {"type": "link_header", "max_pages": 2}}),
        ))
        .expect("valid");
        assert_eq!(
            link.pagination,
            Some(Pagination::LinkHeader(LinkPaging { max_pages: Some(2) }))
        );
    }

    #[test]
    fn pagination_refusals_name_the_exact_field() {
        let cases = [
            (json!({"type": "pages"}), "config.pagination.type"),
            (json!({"limit": 10}), "config.pagination.type"),
            (json!({"type": 3}), "config.pagination.type"),
            (json!({"type": "page", "limit": 0}), "config.pagination.limit"),
            (json!({"type": "page", "limit": "ten"}), "config.pagination.limit"),
            (
                json!({"type": "page", "cursor_path": "x"}),
                "config.pagination.cursor_path",
            ),
            (
                json!({"type": "offset", "max_pages": -1}),
                "config.pagination.max_pages",
            ),
            (json!({"type": "cursor"}), "config.pagination"),
            (
                json!({"type": "link_header", "page_param": "p"}),
                "config.pagination.page_param",
            ),
            (
                json!({"type": "page", "page_param": ""}),
                "config.pagination.page_param",
            ),
            (json!("page"), "config.pagination"),
        ];
        for (pagination, field) in cases {
            let (got, message) = refusal(with(json!({"records_path": "data", "pagination": pagination})));
            assert_eq!(got, field, "{pagination}: {message}");
        }
        let (_, message) = refusal(with(json!({"pagination": {"type": "pages"}})));
        assert!(message.contains("link_header"), "{message}");
        let (_, message) = refusal(with(json!({"pagination": {"type": "cursor"}})));
        assert!(message.contains("cursor_path"), "{message}");
    }

    #[test]
    fn cursor_pagination_needs_records_path_and_a_cursor_outside_the_records() {
        let pagination = json!({"type": "cursor", "cursor_path": "next"});
        let (field, message) = refusal(with(json!({"pagination": pagination})));
        assert_eq!(field, "config.pagination.cursor_path");
        assert!(message.contains("records_path"), "{message}");
        let inside = json!({"type": "cursor", "cursor_path": "data.next"});
        let (field, _) = refusal(with(json!({"records_path": "data", "pagination": inside})));
        assert_eq!(field, "config.pagination.cursor_path");
        let sibling = json!({"type": "cursor", "cursor_path": "database.next"});
        assert!(parse(with(json!({"records_path": "data", "pagination": sibling}))).is_ok());
    }

    #[test]
    fn paths_stay_on_the_base_url() {
        for bad in [
            "//evil.example/x",
            "http://evil.example/",
            "/a#b",
            "/a\\b",
            "/a\nb",
        ] {
            assert_eq!(refusal(with(json!({"path": bad}))).0, "config.path", "{bad}");
        }
        assert_eq!(refusal(with(json!({"path": ""}))).0, "config.path");
        assert_eq!(refusal(with(json!({"path": "/{{not valid}}"}))).0, "config.path");
        assert!(parse(with(json!({"path": "users?active=1"}))).is_ok());
    }

    #[test]
    fn credential_and_framing_headers_are_refused_by_name() {
        for name in ["Authorization", "cookie", "Host", "Content-Length"] {
            let (field, _) = refusal(with(json!({"headers": {name: "x"}})));
            assert_eq!(field, format!("config.headers.{name}"));
        }
        let (field, _) = refusal(with(json!({"headers": {"X-A": "line\nbreak"}})));
        assert_eq!(field, "config.headers.X-A");
        let (field, _) = refusal(with(json!({"headers": {"bad name": "x"}})));
        assert_eq!(field, "config.headers.bad name");
        let (field, _) = refusal(with(json!({"headers": {"X-A": 1}})));
        assert_eq!(field, "config.headers.X-A");
    }

    #[test]
    fn query_values_are_scalars_and_paging_params_are_not_repeated() {
        let (field, message) = refusal(with(json!({"query": {"filter": {"a": 1}}})));
        assert_eq!(field, "config.query");
        assert!(message.contains("query.filter"), "{message}");
        let (field, message) = refusal(with(json!({"query": {"page": 2},
            "pagination": {"type": "page"}})));
        assert_eq!(field, "config.query.page");
        assert!(message.contains("pagination"), "{message}");
        assert!(
            parse(with(
                json!({"query": {"per_page": 2}, "pagination": {"type": "page"}})
            ))
            .is_ok()
        );
        let (field, _) = refusal(with(json!({"query": {"per_page": 2},
            "pagination": {"type": "page", "limit": 10}})));
        assert_eq!(field, "config.query.per_page");
    }

    #[test]
    fn a_body_goes_only_with_methods_that_take_one() {
        let (field, _) = refusal(with(json!({"body": {"a": 1}})));
        assert_eq!(field, "config.body");
        for method in ["POST", "PUT", "PATCH", "post"] {
            assert!(parse(with(json!({"method": method, "body": {"a": [1]}}))).is_ok());
        }
        let (field, _) = refusal(with(json!({"method": "POST", "body": {"a": ["{{bad name}}"]}})));
        assert_eq!(field, "config.body.a.0");
        let (field, _) = refusal(with(json!({"method": "TRACE"})));
        assert_eq!(field, "config.method");
    }

    #[test]
    fn other_fields_are_checked_by_name() {
        assert_eq!(
            refusal(with(json!({"records_path": "data..x"}))).0,
            "config.records_path"
        );
        assert_eq!(
            refusal(with(json!({"timeout_seconds": 0}))).0,
            "config.timeout_seconds"
        );
        assert_eq!(
            refusal(with(json!({"timeout_seconds": 601}))).0,
            "config.timeout_seconds"
        );
        assert_eq!(refusal(with(json!({"url": "x"}))).0, "config.url");
        assert_eq!(
            refusal(with(json!({"parameters": {"n": {"type": "weird"}}}))).0,
            "config.parameters.n.type"
        );
        assert_eq!(
            refusal(json!({"connector_uuid": "nope", "path": "/x"})).0,
            "config.connector_uuid"
        );
        assert_eq!(refusal(json!({"connector_uuid": CONN})).0, "config.path");
    }

    #[test]
    fn step_type_validation_goes_through_the_typed_config() {
        let bad = with(json!({"pagination": {"type": "nope"}}));
        assert!(
            crate::domain::StepType::HttpRequest
                .validate_config(&bad)
                .is_err()
        );
        assert!(
            crate::domain::StepType::HttpRequest
                .validate_config(&with(json!({})))
                .is_ok()
        );
    }

    /// Collects records as `key=raw` lists.
    #[derive(Default)]
    struct Collect {
        records: Vec<Vec<String>>,
        current: Vec<String>,
        refuse_after: Option<usize>,
    }

    impl RecordSink for Collect {
        type Error = &'static str;

        fn field(&mut self, position: usize, key: &str, raw: &str) -> std::result::Result<(), Self::Error> {
            assert_eq!(position, self.current.len());
            self.current.push(format!("{key}={raw}"));
            Ok(())
        }

        fn end(&mut self, _bytes: usize) -> std::result::Result<(), Self::Error> {
            self.records.push(std::mem::take(&mut self.current));
            if self.refuse_after == Some(self.records.len()) {
                return Err("enough");
            }
            Ok(())
        }
    }

    fn page(
        body: &str,
        shape: &ResponseShape,
    ) -> (
        std::result::Result<PageFacts, PageError<&'static str>>,
        Vec<Vec<String>>,
    ) {
        let mut sink = Collect::default();
        let facts = read_page(body.as_bytes(), shape, &mut sink);
        (facts, sink.records)
    }

    #[test]
    fn records_and_cursor_are_found_by_their_dot_paths_with_raw_values() {
        let shape = ResponseShape::new(Some("data.items"), Some("meta.next"));
        let body = r#"{"meta": {"next": "c2", "other": [1]}, "data": {"count": 2,
                       "items": [{"x": 1, "y\u0041": {"z": [1.50, 12345678901234567890123]}}, {"x": "s\"q"}]},
                       "tail": {"items": [9]}}"#;
        let (facts, records) = page(body, &shape);
        let facts = facts.expect("page");
        assert_eq!(facts.records, 2);
        assert!(facts.found);
        assert_eq!(facts.cursor, Some(Value::String("c2".into())));
        assert_eq!(facts.keys, ["meta", "data", "tail"]);
        assert_eq!(
            records,
            [
                vec![
                    "x=1".to_owned(),
                    r#"yA={"z": [1.50, 12345678901234567890123]}"#.to_owned()
                ],
                vec![r#"x="s\"q""#.to_owned()],
            ],
            "values keep their exact text"
        );
        let indexed = ResponseShape::new(Some("pages.1"), None);
        let (facts, _) = page(
            r#"{"pages": [[{"x": 0}], [{"x": 1}, {"x": 2}, {"x": 3}]]}"#,
            &indexed,
        );
        assert_eq!(facts.expect("page").records, 3);
    }

    #[test]
    fn scalars_are_the_value_field_and_a_single_object_is_one_record() {
        let (_, records) = page(r#"[1, "two", null, [3]]"#, &ResponseShape::new(None, None));
        assert_eq!(
            records,
            [["value=1"], [r#"value="two""#], ["value=null"], ["value=[3]"]]
        );
        let (facts, records) = page(r#"{"data": {"id": 7}}"#, &ResponseShape::new(Some("data"), None));
        assert_eq!(facts.expect("page").records, 1);
        assert_eq!(records, [["id=7"]]);
    }

    #[test]
    fn missing_null_and_wrong_records_are_told_apart() {
        let shape = ResponseShape::new(Some("data"), None);
        let missing = page(r#"{"items": []}"#, &shape).0.expect("page");
        assert!(!missing.found && missing.records == 0);
        let null = page(r#"{"data": null}"#, &shape).0.expect("page");
        assert!(null.found && null.records == 0);
        for bad in [
            r#"{"data": "x"}"#,
            r#"{"data": 3}"#,
            "<html>",
            r#"{"data": []} trailing"#,
        ] {
            assert!(matches!(page(bad, &shape).0, Err(PageError::Shape(_))), "{bad}");
        }
        let (empty, _) = page("  \n", &shape);
        assert!(empty.expect("an empty body").found);
    }

    #[test]
    fn a_sink_that_refuses_stops_the_page_with_its_error() {
        let mut sink = Collect {
            refuse_after: Some(1),
            ..Collect::default()
        };
        let result = read_page(
            br#"[{"a": 1}, {"a": 2}]"#,
            &ResponseShape::new(None, None),
            &mut sink,
        );
        assert_eq!(result, Err(PageError::Sink("enough")));
        assert_eq!(sink.records.len(), 1);
    }

    #[test]
    fn the_shape_of_a_config_takes_its_records_and_cursor_paths() {
        let config = parse(with(json!({"records_path": "data",
            "pagination": {"type": "cursor", "cursor_path": "next"}})))
        .expect("valid");
        let (facts, records) = page(r#"{"next": 5, "data": [{"a": 1}]}"#, &ResponseShape::of(&config));
        assert_eq!(facts.expect("page").cursor, Some(json!(5)));
        assert_eq!(records, [["a=1"]]);
    }
}
