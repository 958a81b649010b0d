//! Which page an `http_request` step asks for next, and when it stops.
//!
//! Every style stops after `max_pages` pages and on a page without
//! records. `page` and `offset` also stop on a page shorter than `limit`
//! (when a limit is set); `offset` advances by the records received. A
//! page whose body is the same as the previous one's fails the step: the
//! API ignores the paging parameters and would be read forever. `cursor`
//! stops when the cursor is absent, null, empty or the one just sent;
//! `link_header` when there is no `rel="next"` link or it names the page
//! just read. A next link on another origin (scheme, host, port) than the
//! connector's `base_url` fails the step: the connector's credentials are
//! only ever sent to its own origin.

use ferry_shared::domain::ErrorKind;
use ferry_shared::steps::http_request::Pagination;
use reqwest::Url;
use reqwest::header::{HeaderMap, LINK};
use serde_json::Value;

use crate::extract::ExtractError;

/// What paging needs to know of a page that was read.
pub(crate) struct Page<'a> {
    /// Records it held.
    pub records: usize,
    /// The value at the cursor path.
    pub cursor: Option<&'a Value>,
    pub headers: &'a HeaderMap,
    /// The URL that answered (after redirects): relative links resolve
    /// against it.
    pub url: &'a Url,
    /// A hash of the body, to notice an API that ignores the paging
    /// parameters.
    pub body_hash: u64,
}

/// The paging state of one read.
pub(crate) struct Pager {
    style: Style,
    max_pages: Option<u32>,
    pages: u32,
    last_hash: Option<u64>,
}

enum Style {
    Single,
    Page {
        param: String,
        limit: Option<(String, u32)>,
        next: u64,
    },
    Offset {
        param: String,
        limit: Option<(String, u32)>,
        offset: u64,
    },
    Cursor {
        param: String,
        current: Option<String>,
    },
    Link {
        next: Option<Url>,
    },
}

impl Pager {
    pub(crate) fn new(pagination: Option<&Pagination>) -> Pager {
        let style = match pagination {
            None => Style::Single,
            Some(Pagination::Page(p)) => Style::Page {
                param: p.page_param.clone(),
                limit: p.limit.map(|limit| (p.limit_param.clone(), limit)),
                next: p.start,
            },
            Some(Pagination::Offset(p)) => Style::Offset {
                param: p.offset_param.clone(),
                limit: p.limit.map(|limit| (p.limit_param.clone(), limit)),
                offset: 0,
            },
            Some(Pagination::Cursor(p)) => Style::Cursor {
                param: p.cursor_param.clone(),
                current: None,
            },
            Some(Pagination::LinkHeader(_)) => Style::Link { next: None },
        };
        Pager {
            style,
            max_pages: pagination.and_then(Pagination::max_pages),
            pages: 0,
            last_hash: None,
        }
    }

    /// Pages read so far.
    pub(crate) fn pages(&self) -> u32 {
        self.pages
    }

    /// The URL of the next page: `first` (the step's URL with its query)
    /// with the paging parameters, or the next link.
    pub(crate) fn url(&self, first: &Url) -> Url {
        let mut url = first.clone();
        let mut set = |pairs: &[(&str, String)]| {
            let mut query = url.query_pairs_mut();
            for (name, value) in pairs {
                query.append_pair(name, value);
            }
        };
        match &self.style {
            Style::Single => {}
            Style::Page { param, limit, next } => {
                let mut pairs = vec![(param.as_str(), next.to_string())];
                pairs.extend(
                    limit
                        .iter()
                        .map(|(name, limit)| (name.as_str(), limit.to_string())),
                );
                set(&pairs);
            }
            Style::Offset { param, limit, offset } => {
                let mut pairs = vec![(param.as_str(), offset.to_string())];
                pairs.extend(
                    limit
                        .iter()
                        .map(|(name, limit)| (name.as_str(), limit.to_string())),
                );
                set(&pairs);
            }
            Style::Cursor { param, current } => {
                if let Some(cursor) = current {
                    set(&[(param.as_str(), cursor.clone())]);
                }
            }
            Style::Link { next } => {
                if let Some(next) = next {
                    return next.clone();
                }
            }
        }
        url
    }

    /// Takes note of a page read; `Ok(true)` when there is another one to
    /// read.
    pub(crate) fn advance(&mut self, page: &Page<'_>, origin: &url::Origin) -> Result<bool, ExtractError> {
        self.pages += 1;
        let repeated = self.last_hash.replace(page.body_hash) == Some(page.body_hash);
        if page.records == 0 || self.max_pages.is_some_and(|max| self.pages >= max) {
            return Ok(false);
        }
        match &mut self.style {
            Style::Single => Ok(false),
            Style::Page { param, limit, next } => {
                check_not_repeated(repeated, param, self.pages)?;
                *next += 1;
                Ok(!is_short(page.records, limit))
            }
            Style::Offset { param, limit, offset } => {
                check_not_repeated(repeated, param, self.pages)?;
                *offset += page.records as u64;
                Ok(!is_short(page.records, limit))
            }
            Style::Cursor { current, .. } => {
                let cursor = match page.cursor {
                    None | Some(Value::Null) => return Ok(false),
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Number(number)) => number.to_string(),
                    Some(_) => {
                        return Err(ExtractError::new(
                            ErrorKind::HttpError,
                            "the cursor at cursor_path is not a string or a number",
                        ));
                    }
                };
                if cursor.is_empty() || current.as_ref() == Some(&cursor) {
                    return Ok(false);
                }
                *current = Some(cursor);
                Ok(true)
            }
            Style::Link { next } => {
                let Some(link) = next_link(page.headers) else {
                    return Ok(false);
                };
                let url = page.url.join(&link).map_err(|_| {
                    ExtractError::new(
                        ErrorKind::HttpError,
                        "the API's Link header has a next link that is not a URL",
                    )
                })?;
                if url.origin() != *origin {
                    return Err(ExtractError::new(
                        ErrorKind::HttpError,
                        format!(
                            "the API's next link leads to another origin ({}); Ferry follows links only \
                             on the connector's base_url origin, where its credentials may go",
                            url.origin().ascii_serialization()
                        ),
                    ));
                }
                if url == *page.url {
                    return Ok(false);
                }
                *next = Some(url);
                Ok(true)
            }
        }
    }
}

fn is_short(records: usize, limit: &Option<(String, u32)>) -> bool {
    limit.as_ref().is_some_and(|(_, limit)| records < *limit as usize)
}

fn check_not_repeated(repeated: bool, param: &str, page: u32) -> Result<(), ExtractError> {
    if repeated {
        return Err(ExtractError::new(
            ErrorKind::HttpError,
            format!(
                "page {page} had the same body as the page before: the API does not seem to \
                 honour the {param} parameter, and the read would not end"
            ),
        ));
    }
    Ok(())
}

/// The target of the first `rel="next"` link of a response's `Link`
/// headers (RFC 8288: several links per header and several headers;
/// `rel` may list several relation types, compared case-insensitively).
pub(crate) fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(parse_links)
        .find(|(_, rels)| {
            rels.split_ascii_whitespace()
                .any(|rel| rel.eq_ignore_ascii_case("next"))
        })
        .map(|(target, _)| target)
}

/// `(target, rel)` of each link in one `Link` header value.
fn parse_links(value: &str) -> Vec<(String, String)> {
    let mut links = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let Some(after) = rest.strip_prefix('<') else {
            return links;
        };
        let Some(end) = after.find('>') else {
            return links;
        };
        let target = after[..end].trim().to_owned();
        rest = &after[end + 1..];
        let mut rel = String::new();
        // Parameters up to the next comma outside a quoted string.
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            let Some(after) = rest.strip_prefix(';') else {
                break;
            };
            rest = after.trim_start_matches([' ', '\t']);
            let name_end = rest.find(['=', ';', ',']).unwrap_or(rest.len());
            let name = rest[..name_end].trim().to_ascii_lowercase();
            rest = &rest[name_end..];
            let mut param = String::new();
            if let Some(after) = rest.strip_prefix('=') {
                rest = after.trim_start_matches([' ', '\t']);
                if let Some(quoted) = rest.strip_prefix('"') {
                    let mut chars = quoted.char_indices();
                    let mut end = quoted.len();
                    while let Some((at, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, escaped)) = chars.next() {
                                    param.push(escaped);
                                }
                            }
                            '"' => {
                                end = at + 1;
                                break;
                            }
                            c => param.push(c),
                        }
                    }
                    rest = &quoted[end.min(quoted.len())..];
                } else {
                    let value_end = rest.find([';', ',']).unwrap_or(rest.len());
                    param = rest[..value_end].trim().to_owned();
                    rest = &rest[value_end..];
                }
            }
            if name == "rel" && rel.is_empty() {
                rel = param;
            }
        }
        links.push((target, rel));
        // Skip anything malformed up to the next link.
        match rest.find(',') {
            Some(comma) => rest = &rest[comma + 1..],
            None => return links,
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_shared::steps::http_request::{CursorPaging, LinkPaging, OffsetPaging, PagePaging};
    use reqwest::header::HeaderValue;

    use super::*;

    fn links(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(LINK, HeaderValue::from_str(value).expect("value"));
        }
        headers
    }

    #[test]
    fn the_next_link_is_found_among_several_links_and_headers() {
        let github = r#"<https://api.example.com/items?page=3>; rel="next", <https://api.example.com/items?page=9>; rel="last""#;
        assert_eq!(
            next_link(&links(&[github])).as_deref(),
            Some("https://api.example.com/items?page=3")
        );
        let reversed = r#"</items?page=1>; rel="prev"; title="a, b; c", </items?a=1,2>; rel="NEXT""#;
        assert_eq!(next_link(&links(&[reversed])).as_deref(), Some("/items?a=1,2"));
        let listed = r#"<p2>; rel="next last""#;
        assert_eq!(next_link(&links(&[listed])).as_deref(), Some("p2"));
        let bare = "<p3>;rel=next";
        assert_eq!(next_link(&links(&["<x>; rel=prev", bare])).as_deref(), Some("p3"));
        assert_eq!(next_link(&links(&[r#"<p>; rel="prev""#])), None);
        assert_eq!(next_link(&links(&["garbage"])), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    fn origin() -> url::Origin {
        Url::parse("https://api.example.com/").expect("url").origin()
    }

    fn page<'a>(records: usize, url: &'a Url, headers: &'a HeaderMap, cursor: Option<&'a Value>) -> Page<'a> {
        Page {
            records,
            cursor,
            headers,
            url,
            body_hash: records as u64,
        }
    }

    #[test]
    fn page_numbers_count_up_and_a_short_page_is_the_last() {
        let first = Url::parse("https://api.example.com/items?q=1").expect("url");
        let none = HeaderMap::new();
        let mut pager = Pager::new(Some(&Pagination::Page(PagePaging {
            page_param: "page".into(),
            limit_param: "per_page".into(),
            limit: Some(2),
            start: 1,
            max_pages: None,
        })));
        assert_eq!(
            pager.url(&first).as_str(),
            "https://api.example.com/items?q=1&page=1&per_page=2"
        );
        let mut hash = 0;
        let mut next = |pager: &mut Pager, records| {
            hash += 1;
            let mut read = page(records, &first, &none, None);
            read.body_hash = hash;
            pager.advance(&read, &origin())
        };
        assert_eq!(next(&mut pager, 2), Ok(true));
        assert_eq!(
            pager.url(&first).as_str(),
            "https://api.example.com/items?q=1&page=2&per_page=2"
        );
        assert_eq!(next(&mut pager, 1), Ok(false));
    }

    #[test]
    fn offsets_advance_by_the_records_received_until_an_empty_page_or_max_pages() {
        let first = Url::parse("https://api.example.com/items").expect("url");
        let none = HeaderMap::new();
        let mut pager = Pager::new(Some(&Pagination::Offset(OffsetPaging {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            limit: None,
            max_pages: Some(3),
        })));
        assert_eq!(
            pager.url(&first).as_str(),
            "https://api.example.com/items?offset=0"
        );
        assert_eq!(pager.advance(&page(5, &first, &none, None), &origin()), Ok(true));
        assert_eq!(
            pager.url(&first).as_str(),
            "https://api.example.com/items?offset=5"
        );
        assert_eq!(pager.advance(&page(4, &first, &none, None), &origin()), Ok(true));
        assert_eq!(
            pager.advance(&page(3, &first, &none, None), &origin()),
            Ok(false),
            "max_pages"
        );
        let mut empty = Pager::new(Some(&Pagination::Offset(OffsetPaging {
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            limit: None,
            max_pages: None,
        })));
        assert_eq!(empty.advance(&page(0, &first, &none, None), &origin()), Ok(false));
    }

    #[test]
    fn the_same_page_twice_fails_instead_of_reading_forever() {
        let first = Url::parse("https://api.example.com/items").expect("url");
        let none = HeaderMap::new();
        let mut pager = Pager::new(Some(&Pagination::Page(PagePaging {
            page_param: "page".into(),
            limit_param: "per_page".into(),
            limit: None,
            start: 1,
            max_pages: None,
        })));
        assert_eq!(pager.advance(&page(3, &first, &none, None), &origin()), Ok(true));
        let error = pager
            .advance(&page(3, &first, &none, None), &origin())
            .expect_err("same body twice");
        assert_eq!(error.error_type, ErrorKind::HttpError);
        assert!(error.message.contains("page parameter"), "{}", error.message);
    }

    #[test]
    fn cursors_stop_when_absent_null_empty_or_repeated() {
        let first = Url::parse("https://api.example.com/items").expect("url");
        let none = HeaderMap::new();
        let cursor = || {
            Pager::new(Some(&Pagination::Cursor(CursorPaging {
                cursor_param: "after".into(),
                cursor_path: "next".into(),
                max_pages: None,
            })))
        };
        let mut pager = cursor();
        assert_eq!(pager.url(&first).as_str(), "https://api.example.com/items");
        let c2 = Value::String("c 2".into());
        assert_eq!(
            pager.advance(&page(1, &first, &none, Some(&c2)), &origin()),
            Ok(true)
        );
        assert_eq!(
            pager.url(&first).as_str(),
            "https://api.example.com/items?after=c+2"
        );
        assert_eq!(
            pager.advance(&page(1, &first, &none, Some(&c2)), &origin()),
            Ok(false)
        );
        for end in [None, Some(Value::Null), Some(Value::String(String::new()))] {
            assert_eq!(
                cursor().advance(&page(1, &first, &none, end.as_ref()), &origin()),
                Ok(false)
            );
        }
        let number = serde_json::json!(42);
        let mut pager = cursor();
        assert_eq!(
            pager.advance(&page(1, &first, &none, Some(&number)), &origin()),
            Ok(true)
        );
        assert_eq!(
            pager.url(&first).as_str(),
            "https://api.example.com/items?after=42"
        );
        let object = serde_json::json!({"a": 1});
        assert!(
            cursor()
                .advance(&page(1, &first, &none, Some(&object)), &origin())
                .is_err()
        );
    }

    #[test]
    fn next_links_resolve_against_the_answering_url_and_stay_on_the_origin() {
        let first = Url::parse("https://api.example.com/v1/items?page=1").expect("url");
        let link = || Pager::new(Some(&Pagination::LinkHeader(LinkPaging { max_pages: None })));
        let mut pager = link();
        let relative = links(&[r#"<items?page=2>; rel="next""#]);
        assert_eq!(
            pager.advance(&page(1, &first, &relative, None), &origin()),
            Ok(true)
        );
        assert_eq!(
            pager.url(&first).as_str(),
            "https://api.example.com/v1/items?page=2"
        );
        let elsewhere = links(&[r#"<https://evil.example/steal>; rel="next""#]);
        let error = link()
            .advance(&page(1, &first, &elsewhere, None), &origin())
            .expect_err("another origin");
        assert!(
            error.message.contains("https://evil.example"),
            "{}",
            error.message
        );
        let downgraded = links(&[r#"<http://api.example.com/v1/items?page=2>; rel="next""#]);
        assert!(
            link()
                .advance(&page(1, &first, &downgraded, None), &origin())
                .is_err()
        );
        let itself = links(&[r#"<https://api.example.com/v1/items?page=1>; rel="next""#]);
        assert_eq!(
            link().advance(&page(1, &first, &itself, None), &origin()),
            Ok(false)
        );
        assert_eq!(
            link().advance(&page(1, &first, &HeaderMap::new(), None), &origin()),
            Ok(false)
        );
    }
}
