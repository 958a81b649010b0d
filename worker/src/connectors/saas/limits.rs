//! Each vendor's rate-limit signals, as its documentation gives them:
//!
//! - every vendor: 429 is a throttle, waited out (`Retry-After` when sent,
//!   else 1 s, 2 s, 4 s, …) and sent again by the OAuth client; so is a
//!   503 (Salesforce's `SERVER_UNAVAILABLE`, Google's `UNAVAILABLE`).
//! - Stripe: `Stripe-Should-Retry: true` on another failure (a 409 lock
//!   conflict, a 5xx) means the same request may be sent again; `false`
//!   means it must not.
//! - HubSpot: `X-HubSpot-RateLimit-Remaining` of the rolling window, with
//!   `X-HubSpot-RateLimit-Interval-Milliseconds`: at 0 the next call waits
//!   for the window to pass; `X-HubSpot-RateLimit-Daily-Remaining` at 0
//!   ends the read with `rate_limited` (the next call would be refused
//!   until midnight).
//! - Salesforce: `Sforce-Limit-Info: api-usage=<used>/<max>` of the org's
//!   daily API requests: at the maximum the read ends with `rate_limited`;
//!   a 403 `REQUEST_LIMIT_EXCEEDED` is the same.
//! - Google Analytics: 429 `RESOURCE_EXHAUSTED` is a throttle; every
//!   report asks for `returnPropertyQuota`, and a page whose quota shows
//!   no tokens left for the hour or day (property or project) ends the
//!   read with `rate_limited` before the next call is refused.

use std::sync::Mutex;
use std::time::Duration;

use ferry_shared::steps::saas_extract::Vendor;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connectors::errors::{DriverError, ErrorType};
use crate::connectors::oauth_http::{Answer, cancelled, pause};

/// The longest a call waits for HubSpot's rolling window.
const MAX_WINDOW_WAIT: Duration = Duration::from_secs(15);

/// Tries of one call that Stripe says may be sent again.
const STRIPE_RETRIES: u32 = 3;

/// Whether an answer is a throttle the OAuth client waits out.
pub(crate) fn is_throttle(status: StatusCode, _body: &[u8]) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// What the vendor's last answers said about its limits.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    state: Mutex<PaceState>,
}

#[derive(Debug, Default)]
struct PaceState {
    /// No call before this (HubSpot's window is used up).
    not_before: Option<Instant>,
    /// The vendor's quota for the day (or hour) is used up: why.
    exhausted: Option<String>,
}

impl Pace {
    fn state(&self) -> std::sync::MutexGuard<'_, PaceState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the vendor's window allows a call; fails at once when
    /// its quota is used up.
    pub(crate) async fn wait(&self, vendor: Vendor, cancel: &CancellationToken) -> Result<(), DriverError> {
        let (not_before, exhausted) = {
            let state = self.state();
            (state.not_before, state.exhausted.clone())
        };
        if let Some(why) = exhausted {
            return Err(DriverError::new(ErrorType::RateLimited, why).with_code(quota_code(vendor)));
        }
        if let Some(at) = not_before
            && at > Instant::now()
        {
            tracing::debug!(
                wait_ms = u64::try_from((at - Instant::now()).as_millis()).unwrap_or(u64::MAX),
                "waiting for the vendor's rate-limit window"
            );
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(cancelled()),
                () = tokio::time::sleep_until(at) => {}
            }
        }
        Ok(())
    }

    /// Reads the limit signals of an answer.
    pub(crate) fn observe(&self, vendor: Vendor, answer: &Answer) {
        match vendor {
            Vendor::Hubspot => self.hubspot(&answer.headers),
            Vendor::Salesforce => self.salesforce(&answer.headers),
            // A report's quota is in its body, which the report reads once
            // (`observe_quota`).
            _ => {}
        }
    }

    fn hubspot(&self, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let mut state = self.state();
        if number("x-hubspot-ratelimit-daily-remaining") == Some(0) {
            state.exhausted = Some("HubSpot's daily API limit for this account is used up".into());
        }
        if number("x-hubspot-ratelimit-remaining") == Some(0) {
            let window = number("x-hubspot-ratelimit-interval-milliseconds").unwrap_or(10_000);
            let wait = Duration::from_millis(window).min(MAX_WINDOW_WAIT);
            state.not_before = Some(Instant::now() + wait);
        } else {
            state.not_before = None;
        }
    }

    fn salesforce(&self, headers: &HeaderMap) {
        let Some((used, max)) = headers
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
            .and_then(api_usage)
        else {
            return;
        };
        tracing::debug!(used, max, "salesforce api usage");
        if max > 0 && used >= max {
            self.state().exhausted = Some(format!(
                "Salesforce's daily API request limit of this org is used up (api-usage={used}/{max})"
            ));
        }
    }

    /// Reads a GA4 answer's `propertyQuota`.
    pub(crate) fn observe_quota(&self, quota: &Value) {
        for name in ["tokensPerDay", "tokensPerHour", "tokensPerProjectPerHour"] {
            let remaining = quota
                .get(name)
                .and_then(|q| q.get("remaining"))
                .and_then(Value::as_i64);
            if remaining.is_some_and(|r| r <= 0) {
                self.state().exhausted = Some(format!(
                    "the Google Analytics property's quota {name} is used up (RESOURCE_EXHAUSTED)"
                ));
                return;
            }
        }
    }
}

fn quota_code(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Salesforce => "REQUEST_LIMIT_EXCEEDED",
        Vendor::GoogleAnalytics => "RESOURCE_EXHAUSTED",
        _ => "429",
    }
}

/// `api-usage=<used>/<max>` of a `Sforce-Limit-Info` header (which may
/// list other limits too, comma separated).
pub(crate) fn api_usage(header: &str) -> Option<(u64, u64)> {
    header.split(',').find_map(|part| {
        let value = part.trim().strip_prefix("api-usage=")?;
        let (used, max) = value.split_once('/')?;
        Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
    })
}

/// How long to wait before sending a failed call again, when the vendor
/// says it may be (Stripe's `Stripe-Should-Retry`); `None`: fail.
pub(crate) fn retry_hint(vendor: Vendor, answer: &Answer, tries: u32) -> Option<Duration> {
    if vendor != Vendor::Stripe || tries >= STRIPE_RETRIES {
        return None;
    }
    let should = answer
        .headers
        .get("stripe-should-retry")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    (should == Some("true")).then(|| pause(None, tries))
}

/// The vendor's own error code and message in an error body:
/// Stripe `{"error": {"code"|"type", "message"}}`, HubSpot
/// `{"category", "message"}`, Salesforce `[{"errorCode", "message"}]`,
/// Google `{"error": {"status", "message"}}`.
pub(crate) fn error_of(vendor: Vendor, body: &Value) -> (Option<String>, Option<String>) {
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    match vendor {
        Vendor::Stripe => {
            let error = body.get("error");
            let code =
                text(error.and_then(|e| e.get("code"))).or_else(|| text(error.and_then(|e| e.get("type"))));
            (code, text(error.and_then(|e| e.get("message"))))
        }
        Vendor::Hubspot => (text(body.get("category")), text(body.get("message"))),
        Vendor::Salesforce => {
            let first = body.get(0).or(Some(body));
            (
                text(first.and_then(|e| e.get("errorCode"))),
                text(first.and_then(|e| e.get("message"))),
            )
        }
        Vendor::GoogleAnalytics => {
            let error = body.get("error");
            (
                text(error.and_then(|e| e.get("status"))),
                text(error.and_then(|e| e.get("message"))),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn answer(status: u16, headers: &[(&'static str, &str)], body: Value) -> Answer {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).expect("value"));
        }
        Answer {
            status: StatusCode::from_u16(status).expect("status"),
            headers: map,
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn salesforce_api_usage_is_read_among_other_limits() {
        assert_eq!(api_usage("api-usage=18/5000"), Some((18, 5000)));
        assert_eq!(
            api_usage("per-app-api-usage=1/100(appName=x), api-usage=7/15000"),
            Some((7, 15000))
        );
        assert_eq!(api_usage("nothing"), None);
    }

    #[tokio::test]
    async fn a_used_up_daily_quota_ends_the_read_as_rate_limited() {
        let cancel = CancellationToken::new();
        let pace = Pace::default();
        pace.observe(
            Vendor::Salesforce,
            &answer(200, &[("sforce-limit-info", "api-usage=10/5000")], json!({})),
        );
        assert!(pace.wait(Vendor::Salesforce, &cancel).await.is_ok());
        pace.observe(
            Vendor::Salesforce,
            &answer(200, &[("sforce-limit-info", "api-usage=5000/5000")], json!({})),
        );
        let error = pace
            .wait(Vendor::Salesforce, &cancel)
            .await
            .expect_err("exhausted");
        assert_eq!(error.kind(), ErrorType::RateLimited);
        assert_eq!(error.code(), Some("REQUEST_LIMIT_EXCEEDED"));

        let pace = Pace::default();
        pace.observe_quota(&json!({"tokensPerHour": {"consumed": 5, "remaining": 0}}));
        let error = pace
            .wait(Vendor::GoogleAnalytics, &cancel)
            .await
            .expect_err("exhausted");
        assert_eq!(error.code(), Some("RESOURCE_EXHAUSTED"));

        let pace = Pace::default();
        pace.observe(
            Vendor::Hubspot,
            &answer(200, &[("x-hubspot-ratelimit-daily-remaining", "0")], json!({})),
        );
        assert_eq!(
            pace.wait(Vendor::Hubspot, &cancel)
                .await
                .expect_err("exhausted")
                .kind(),
            ErrorType::RateLimited
        );
    }

    #[tokio::test]
    async fn hubspot_s_used_up_window_delays_the_next_call() {
        let cancel = CancellationToken::new();
        let pace = Pace::default();
        pace.observe(
            Vendor::Hubspot,
            &answer(
                200,
                &[
                    ("x-hubspot-ratelimit-remaining", "0"),
                    ("x-hubspot-ratelimit-interval-milliseconds", "200"),
                ],
                json!({}),
            ),
        );
        let started = Instant::now();
        pace.wait(Vendor::Hubspot, &cancel).await.expect("waits");
        assert!(started.elapsed() >= Duration::from_millis(190));
        pace.observe(
            Vendor::Hubspot,
            &answer(200, &[("x-hubspot-ratelimit-remaining", "9")], json!({})),
        );
        let started = Instant::now();
        pace.wait(Vendor::Hubspot, &cancel).await.expect("no wait");
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn stripe_should_retry_decides_whether_a_failure_is_sent_again() {
        let conflict = answer(409, &[("stripe-should-retry", "true")], json!({}));
        assert!(retry_hint(Vendor::Stripe, &conflict, 1).is_some());
        assert!(retry_hint(Vendor::Stripe, &conflict, STRIPE_RETRIES).is_none());
        let no = answer(500, &[("stripe-should-retry", "false")], json!({}));
        assert!(retry_hint(Vendor::Stripe, &no, 1).is_none());
        assert!(retry_hint(Vendor::Hubspot, &conflict, 1).is_none());
    }

    #[test]
    fn vendor_error_bodies_give_their_code_and_message() {
        let stripe = json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such customer"}});
        assert_eq!(
            error_of(Vendor::Stripe, &stripe),
            (Some("resource_missing".into()), Some("No such customer".into()))
        );
        let salesforce = json!([{"errorCode": "MALFORMED_QUERY", "message": "unexpected token"}]);
        assert_eq!(
            error_of(Vendor::Salesforce, &salesforce).0.as_deref(),
            Some("MALFORMED_QUERY")
        );
        let google = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}});
        assert_eq!(
            error_of(Vendor::GoogleAnalytics, &google).0.as_deref(),
            Some("RESOURCE_EXHAUSTED")
        );
        let hubspot = json!({"status": "error", "category": "RATE_LIMITS", "message": "You have reached your ten_secondly_rolling limit."});
        assert_eq!(
            error_of(Vendor::Hubspot, &hubspot).0.as_deref(),
            Some("RATE_LIMITS")
        );
    }
}
