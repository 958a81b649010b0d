//! The JWKS key source: keys fetched from a URL, cached in memory and
//! refetched when a token names a key the cache does not hold.
//!
//! Fetches are single-flight (one `tokio` mutex; callers that waited while
//! another fetched re-read the cache instead of fetching again) and
//! rate-limited:
//!
//! - a refetch caused by an unknown `kid` (or a token without `kid` that no
//!   cached key fits) happens at most once per `jwks_min_refresh`;
//! - after a failed fetch the next attempt waits at least
//!   `min(jwks_min_refresh, 2 s)`;
//! - until a first fetch succeeds, only the failure back-off applies, so a
//!   briefly unreachable endpoint at startup does not lock callers out for a
//!   whole `jwks_min_refresh`;
//! - keys older than `max(jwks_min_refresh, 15 min)` are refetched at the next
//!   verification so that removed keys stop being trusted; if that fetch
//!   fails the cached keys stay in use.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::AuthError;
use super::keys::{self, KeyEntry};
use ferry_shared::Error;

/// How long one JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between a failed fetch and the next attempt.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);
/// Cached keys older than this are refetched (at least `min_refresh`).
const MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// The largest JWKS document accepted.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Keys fetched from a JWKS URL.
pub(crate) struct JwksSource {
    url: String,
    client: reqwest::Client,
    min_refresh: Duration,
    cache: RwLock<Arc<Snapshot>>,
    fetch: Mutex<FetchState>,
}

/// One fetched key set. `generation` grows with every successful fetch.
#[derive(Default)]
struct Snapshot {
    keys: Vec<Arc<KeyEntry>>,
    generation: u64,
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_attempt_failed: bool,
    /// The last fetch caused by a key the cache did not hold.
    last_unknown_key_fetch: Option<Instant>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reason {
    Startup,
    UnknownKey,
    Stale,
}

enum Lookup {
    Found(Arc<KeyEntry>),
    /// The `kid` is known but its key does not allow the token's algorithm.
    WrongAlgorithm,
    NotFound,
}

impl Snapshot {
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(key) if key.allows(alg) => Lookup::Found(Arc::clone(key)),
                Some(_) => Lookup::WrongAlgorithm,
                None => Lookup::NotFound,
            },
            None => {
                // A token without `kid` may use a key without `kid`, if only
                // one such key allows its algorithm.
                let mut fitting = self.keys.iter().filter(|k| k.kid.is_none() && k.allows(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Lookup::Found(Arc::clone(key)),
                    _ => Lookup::NotFound,
                }
            }
        }
    }

    fn is_stale(&self, max_age: Duration) -> bool {
        self.fetched_at.is_some_and(|at| at.elapsed() >= max_age)
    }
}

impl JwksSource {
    /// A source for `url`; nothing is fetched yet (see [`JwksSource::prime`]).
    pub fn new(url: &str, min_refresh: Duration) -> ferry_shared::Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|error| Error::validation("jwt_jwks_url", format!("invalid URL: {error}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::validation(
                "jwt_jwks_url",
                "the JWKS URL must be http or https",
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(Error::internal_from)?;
        Ok(JwksSource {
            url: url.to_owned(),
            client,
            min_refresh,
            cache: RwLock::new(Arc::new(Snapshot::default())),
            fetch: Mutex::new(FetchState::default()),
        })
    }

    /// The first fetch; a failure is logged and retried at the first
    /// verification.
    pub async fn prime(&self) {
        self.refresh(Reason::Startup, 0).await;
    }

    /// The key for a token's `kid` and `alg`, fetching the set again if the
    /// cache does not hold it (within the rate limits above).
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<KeyEntry>, AuthError> {
        let mut snapshot = self.snapshot();
        if snapshot.is_stale(self.min_refresh.max(MAX_AGE)) {
            self.refresh(Reason::Stale, snapshot.generation).await;
            snapshot = self.snapshot();
        }
        match snapshot.lookup(kid, alg) {
            Lookup::Found(key) => return Ok(key),
            Lookup::WrongAlgorithm => return Err(wrong_algorithm()),
            Lookup::NotFound => {}
        }
        self.refresh(Reason::UnknownKey, snapshot.generation).await;
        let snapshot = self.snapshot();
        match snapshot.lookup(kid, alg) {
            Lookup::Found(key) => Ok(key),
            Lookup::WrongAlgorithm => Err(wrong_algorithm()),
            Lookup::NotFound if snapshot.fetched_at.is_none() => Err(AuthError(
                "the token signing keys are unavailable; try again shortly".into(),
            )),
            Lookup::NotFound => Err(AuthError("the token's signing key is unknown".into())),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        let guard = self.cache.read().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Fetches the key set unless another caller did since `seen_generation`
    /// or the rate limits forbid it. Failures are logged, never returned: the
    /// caller re-reads the cache either way.
    async fn refresh(&self, reason: Reason, seen_generation: u64) {
        let mut state = self.fetch.lock().await;
        let current = self.snapshot();
        if current.generation != seen_generation {
            return; // someone else fetched while this caller waited
        }
        if !self.may_fetch(&state, reason, current.fetched_at.is_some()) {
            tracing::debug!("jwks refetch skipped: rate limited");
            return;
        }
        let now = Instant::now();
        state.last_attempt = Some(now);
        if reason == Reason::UnknownKey {
            state.last_unknown_key_fetch = Some(now);
        }
        match self.fetch_keys().await {
            Ok(keys) => {
                state.last_attempt_failed = false;
                tracing::info!(keys = keys.len(), "jwks fetched");
                let next = Snapshot {
                    keys,
                    generation: current.generation + 1,
                    fetched_at: Some(Instant::now()),
                };
                let mut guard = self.cache.write().unwrap_or_else(PoisonError::into_inner);
                *guard = Arc::new(next);
            }
            Err(error) => {
                state.last_attempt_failed = true;
                tracing::warn!(%error, "jwks fetch failed");
            }
        }
    }

    fn may_fetch(&self, state: &FetchState, reason: Reason, ever_fetched: bool) -> bool {
        if reason == Reason::Startup {
            return true;
        }
        let backoff = self.min_refresh.min(RETRY_AFTER_FAILURE);
        let failure_backoff_over =
            !state.last_attempt_failed || state.last_attempt.is_none_or(|at| at.elapsed() >= backoff);
        if !ever_fetched || reason == Reason::Stale {
            return failure_backoff_over;
        }
        let interval_over = state
            .last_unknown_key_fetch
            .is_none_or(|at| at.elapsed() >= self.min_refresh);
        interval_over && failure_backoff_over
    }

    async fn fetch_keys(&self) -> Result<Vec<Arc<KeyEntry>>, String> {
        let response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| format!("request failed: {error}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the endpoint answered {status}"));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY_BYTES as u64)
        {
            return Err("the key set is too large".into());
        }
        let body = response
            .bytes()
            .await
            .map_err(|error| format!("reading the body failed: {error}"))?;
        if body.len() > MAX_BODY_BYTES {
            return Err("the key set is too large".into());
        }
        parse_key_set(&body)
    }
}

fn wrong_algorithm() -> AuthError {
    AuthError("the token's algorithm does not match its signing key".into())
}

/// Parses a JWKS document, keeping the usable keys and logging (by `kid`
/// only) the ones it skips.
fn parse_key_set(body: &[u8]) -> Result<Vec<Arc<KeyEntry>>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet =
        serde_json::from_slice(body).map_err(|_| "the body is not a JWKS document".to_owned())?;
    let mut keys = Vec::with_capacity(raw.keys.len());
    for value in raw.keys {
        let kid = value
            .get("kid")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let entry = serde_json::from_value::<Jwk>(value)
            .map_err(|_| "malformed key")
            .and_then(|jwk| keys::from_jwk(&jwk));
        match entry {
            Ok(entry) => keys.push(Arc::new(entry)),
            Err(reason) => tracing::warn!(kid = kid.as_deref(), reason, "jwks key skipped"),
        }
    }
    if keys.is_empty() {
        tracing::warn!("jwks holds no usable signing key");
    }
    Ok(keys)
}
