//! How a request of an `http_request` step is tried again: which failures
//! are worth another try, and how long to wait before it.
//!
//! Tried again, up to [`ATTEMPTS`] tries in all: HTTP 408, 429 and every
//! 5xx, and failures of the connection itself that
//! [`disposition`](crate::connectors::errors::disposition) calls transient
//! (refused or reset connections, timeouts, names that did not resolve).
//! The wait is the server's `Retry-After` (seconds or an HTTP date) when it
//! sends one, else exponential backoff from [`FIRST_DELAY`] with jitter. No
//! single wait exceeds [`MAX_WAIT`]: a server asking for longer fails the
//! step at once with its status, and the job's own retry policy takes over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::connectors::errors::{Disposition, DriverError};
use crate::jobs::execute_project::StepRetry;

/// Tries of one request, the first included.
pub(crate) const ATTEMPTS: u32 = 4;

/// Backoff before the first retry when the server gives no `Retry-After`;
/// doubled for each next one.
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(250);

/// The longest a step waits before one retry.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// Whether a response with `status` is worth another try.
pub(crate) fn retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Whether a failed request (no response) is worth another try.
pub(crate) fn retryable_error(error: &DriverError) -> bool {
    error.disposition() == Disposition::Retry
}

/// The wait after the `failed`-th try failed (1-based) when the server
/// said nothing: exponential from [`FIRST_DELAY`], half to all of it.
pub(crate) fn backoff(failed: u32) -> Duration {
    StepRetry {
        attempts: ATTEMPTS,
        delay: FIRST_DELAY,
        max_delay: MAX_WAIT,
    }
    .backoff(failed)
}

/// The wait a response's `Retry-After` asks for: delay-seconds or an
/// HTTP date (a date in the past is no wait). `None` when absent or not
/// readable.
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(text).ok()?.with_timezone(&Utc);
    Some((date - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("value"));
        headers
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-03-29T10:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(retry_after(&headers("7"), now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after(&headers("Sun, 29 Mar 2026 10:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Sun, 29 Mar 2026 09:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&headers("-3"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn throttling_timeouts_and_server_errors_are_retried_other_statuses_not() {
        for code in [408, 429, 500, 502, 503, 504, 599] {
            assert!(
                retryable_status(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(
                !retryable_status(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stays_under_the_cap() {
        for failed in 1..=ATTEMPTS {
            let full = FIRST_DELAY * 2u32.pow(failed - 1);
            let wait = backoff(failed);
            assert!(wait >= full / 2 && wait <= full, "{failed}: {wait:?}");
        }
        assert!(backoff(40) <= MAX_WAIT);
    }
}
