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
//! Header names that carry credentials (`Authorization`, `Cookie`, ...) or
//! that the HTTP client owns are refused: step configs are stored in clear
//! and shown to every project member; credentials belong to the connector.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
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
}
