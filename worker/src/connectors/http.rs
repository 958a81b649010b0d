//! What the HTTP families (`rest/`, `databricks/`, the OAuth API clients)
//! share: a reqwest client that applies the network policy to every
//! address it connects to, the policy check of IP-literal URLs (which
//! never reach the resolver), the mapping of a failed request to the error
//! vocabulary without ever showing the URL (its query may carry a key or a
//! signature), and the pause between tries of a throttled API call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{self, HeaderMap};

use crate::connectors::NetworkPolicy;
use crate::connectors::errors::{DriverError, ErrorType, from_io, looks_like_tls, tls_reason};
use crate::connectors::network::{self, parse_ip_literal};

/// A client builder that resolves names under `policy` (every connection,
/// including a followed redirect's), ignores proxies from the environment
/// and bounds connecting by `connect_timeout`. It trusts the public roots
/// and the policy's extra ones.
pub(crate) fn client_builder(policy: &NetworkPolicy, connect_timeout: Duration) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver {
            policy: policy.clone(),
        }))
        .user_agent(concat!("ferry-worker/", env!("CARGO_PKG_VERSION")));
    for root in policy.trusted_roots.iter() {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
}

/// IP-literal hosts never reach the resolver: check them here.
pub(crate) fn check_literal(url: &Url, policy: &NetworkPolicy) -> Result<(), DriverError> {
    if let Some(ip) = url.host_str().and_then(parse_ip_literal) {
        let port = url.port_or_known_default().unwrap_or(0);
        network::check(&ip.to_string(), &[SocketAddr::new(ip, port)], policy)?;
    }
    Ok(())
}

/// The longest `Retry-After` honoured; longer ones are waited this long.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// `Retry-After` in seconds (an HTTP date reads as absent).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The pause before attempt `attempt + 1`: the server's `Retry-After`
/// (capped), else 1 s, 2 s, 4 s, … (at most 16 s).
pub(crate) fn pause(retry_after: Option<Duration>, attempt: u32) -> Duration {
    retry_after
        .unwrap_or_else(|| Duration::from_secs(1 << (attempt - 1).min(4)))
        .min(MAX_RETRY_AFTER)
}

/// The error of a step cancelled while a request was in flight.
pub(crate) fn cancelled() -> DriverError {
    DriverError::new(ErrorType::Cancelled, "the step was cancelled")
}

/// At most 500 characters of a server message.
pub(crate) fn shorten(text: &str) -> String {
    let mut chars = text.chars();
    let short: String = chars.by_ref().take(500).collect();
    if chars.next().is_some() {
        format!("{short}…")
    } else {
        short
    }
}

/// `host:port` of `url`, for messages.
pub(crate) fn target_of(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or("?"),
        url.port_or_known_default().unwrap_or(0)
    )
}

/// A request to `url` that got no (complete) answer, in the vocabulary: a
/// network-policy refusal as it is, then timeouts, TLS, I/O and connect
/// failures; anything else is `unknown`.
pub(crate) fn request_error(error: &reqwest::Error, url: &Url) -> DriverError {
    transport_error(error, url).unwrap_or_else(|| unknown(url))
}

/// Like [`request_error`], but an answer whose body broke off or could not
/// be decoded is `connection_failed` (worth another try).
pub(crate) fn reading_error(error: &reqwest::Error, url: &Url) -> DriverError {
    transport_error(error, url).unwrap_or_else(|| {
        if error.is_body() || error.is_decode() {
            DriverError::new(
                ErrorType::ConnectionFailed,
                format!(
                    "the connection to {} broke while reading an answer",
                    target_of(url)
                ),
            )
        } else {
            unknown(url)
        }
    })
}

fn unknown(url: &Url) -> DriverError {
    DriverError::unknown(format!("the request to {} failed", target_of(url)))
}

/// The failures both mappings name alike; `None` for the rest.
fn transport_error(error: &reqwest::Error, url: &Url) -> Option<DriverError> {
    let target = target_of(url);
    let mut source = std::error::Error::source(error);
    let mut io = None;
    let mut tls_text = None;
    while let Some(cause) = source {
        if let Some(policy) = cause.downcast_ref::<DriverError>() {
            return Some(policy.clone());
        }
        if io.is_none()
            && let Some(found) = cause.downcast_ref::<std::io::Error>()
        {
            io = Some(found);
        }
        let text = cause.to_string();
        if tls_text.is_none() && looks_like_tls(&text) {
            tls_text = Some(text);
        }
        source = cause.source();
    }
    if error.is_timeout() {
        return Some(DriverError::new(
            ErrorType::Timeout,
            format!("{target} did not answer in time"),
        ));
    }
    if let Some(text) = tls_text {
        return Some(DriverError::new(
            ErrorType::TlsError,
            format!("TLS with {target} failed: {}", tls_reason(&text)),
        ));
    }
    if let Some(io) = io {
        return Some(from_io(io, &target));
    }
    error.is_connect().then(|| {
        DriverError::new(
            ErrorType::ConnectionRefused,
            format!("could not connect to {target}"),
        )
    })
}

/// Resolves names with the system resolver (or the test table) and applies
/// the network policy to every address, so no connection the client makes
/// can reach a private address when the policy forbids it.
struct PolicyResolver {
    policy: NetworkPolicy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = network::resolve(&host, 0, &policy)
                .await
                .map_err(|error| -> Box<dyn std::error::Error + Send + Sync> { Box::new(error) })?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_follow_retry_after_capped_else_double() {
        assert_eq!(pause(Some(Duration::from_secs(2)), 1), Duration::from_secs(2));
        assert_eq!(pause(Some(Duration::from_secs(3600)), 1), MAX_RETRY_AFTER);
        assert_eq!(pause(None, 1), Duration::from_secs(1));
        assert_eq!(pause(None, 3), Duration::from_secs(4));
        assert_eq!(pause(None, 40), Duration::from_secs(16));
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, " 7 ".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            header::RETRY_AFTER,
            "Sun, 29 Mar 2026 10:00:30 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn server_messages_are_cut_at_500_characters() {
        assert_eq!(shorten("short"), "short");
        let exact = "é".repeat(500);
        assert_eq!(shorten(&exact), exact);
        let long = "é".repeat(501);
        assert_eq!(shorten(&long), format!("{}…", "é".repeat(500)));
    }
}
