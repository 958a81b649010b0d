//! OAuth tokens refreshed ahead of expiry by the leader: every `interval`
//! the leader records the expiry of connectors whose tokens it has not read
//! at their current version, then refreshes those expiring within `margin`
//! plus the connector's own jitter. Each refresh runs under the store's
//! per-connector lease ([`Refresher`]), so a scheduler, a worker and an API
//! replica refreshing the same connector spend its refresh token once. See
//! `shared/src/oauth_refresh.md`.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_shared::Result;
use ferry_shared::oauth_refresh::{self, Need, Outcome, Refresher};
use prometheus::{IntCounterVec, Opts, Registry};
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderElection;

/// How the leader paces token refreshes.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    /// Time between two passes.
    pub interval: Duration,
    /// A token is refreshed when it expires within this margin...
    pub margin: Duration,
    /// ...plus a per-connector share of this jitter, so connectors
    /// authorized together do not all refresh in the same pass.
    pub jitter: Duration,
    /// First wait after a transient failure, doubled per failure...
    pub backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
    /// Connectors looked at per pass.
    pub batch: i64,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        RefreshSettings {
            interval: Duration::from_secs(30),
            margin: Duration::from_secs(300),
            jitter: Duration::from_secs(120),
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(900),
            batch: 500,
        }
    }
}

/// `ferry_scheduler_token_refreshes_total{outcome}`.
#[derive(Clone)]
pub struct RefreshMetrics {
    pub refreshes: IntCounterVec,
}

/// The outcome labels, all present from the start.
const OUTCOMES: [&str; 8] = [
    "refreshed",
    "not_needed",
    "busy",
    "skipped",
    "not_configured",
    "invalid_grant",
    "failed",
    "error",
];

impl RefreshMetrics {
    /// Creates the family and registers it in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let refreshes = IntCounterVec::new(
            Opts::new(
                "ferry_scheduler_token_refreshes_total",
                "OAuth token refreshes the leader attempted, by outcome",
            ),
            &["outcome"],
        )?;
        for outcome in OUTCOMES {
            refreshes.with_label_values(&[outcome]);
        }
        registry.register(Box::new(refreshes.clone()))?;
        Ok(RefreshMetrics { refreshes })
    }

    fn count(&self, outcome: &str) {
        self.refreshes.with_label_values(&[outcome]).inc();
    }
}

/// What one pass did, per connector refreshed or tried.
#[derive(Debug, Default, Clone)]
pub struct RefreshPass {
    /// Connectors whose expiry was read.
    pub tracked: usize,
    /// `(connector uuid, outcome)` of each refresh tried.
    pub outcomes: Vec<(String, Outcome)>,
}

/// The connector's share of `jitter`: fixed per connector, so every leader
/// agrees, and spread evenly across connectors.
pub fn jitter_of(uuid: &str, jitter: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    uuid.hash(&mut hasher);
    let millis = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(hasher.finish() % millis)
}

fn after(now: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX)
}

/// One pass: records the expiry of untracked connectors, then refreshes
/// the tokens due (never waiting for a lease someone else holds).
pub async fn refresh_once(
    refresher: &Refresher,
    settings: &RefreshSettings,
    metrics: Option<&RefreshMetrics>,
) -> Result<RefreshPass> {
    let store = refresher.store();
    let mut pass = RefreshPass::default();
    for untracked in store.untracked_oauth_tokens(settings.batch).await? {
        let Some(connector) = store
            .get_connector(&untracked.org_id, &untracked.connector_uuid)
            .await?
        else {
            continue;
        };
        let expires_at = match refresher.vault().open(&connector.uuid, &connector.secrets) {
            Ok(secrets) => oauth_refresh::expires_at(secrets.expose_secret()),
            Err(error) => {
                tracing::warn!(connector_uuid = %connector.uuid, %error, "oauth connector's tokens cannot be opened");
                continue;
            }
        };
        store
            .track_oauth_token(&connector.uuid, connector.config_version, expires_at)
            .await?;
        pass.tracked += 1;
    }

    let now = Utc::now();
    let horizon = after(now, settings.margin + settings.jitter);
    for due in store.oauth_tokens_due(horizon, now, settings.batch).await? {
        let threshold = after(
            now,
            settings.margin + jitter_of(&due.connector_uuid, settings.jitter),
        );
        if due.token_expires_at >= threshold {
            continue;
        }
        let outcome = refresher
            .refresh(
                &due.org_id,
                &due.connector_uuid,
                Need::ExpiresBefore(threshold),
                Duration::ZERO,
            )
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(connector_uuid = %due.connector_uuid, %error, "oauth refresh failed");
                Outcome::Failed(error.to_string())
            }
        };
        if let Outcome::Failed(why) = &outcome {
            let shift = u32::try_from(due.failures.clamp(0, 16)).unwrap_or(16);
            let wait = settings
                .backoff
                .saturating_mul(1 << shift)
                .min(settings.max_backoff);
            store
                .record_refresh_failure(&due.connector_uuid, why, Some(after(Utc::now(), wait)))
                .await?;
            tracing::info!(connector_uuid = %due.connector_uuid, reason = %why, retry_in_s = wait.as_secs(), "oauth refresh will be retried");
        }
        if let Some(metrics) = metrics {
            metrics.count(outcome.label());
        }
        pass.outcomes.push((due.connector_uuid, outcome));
    }
    Ok(pass)
}

/// Runs a pass every `settings.interval` while this process leads, until `stop`.
pub async fn run(
    refresher: &Refresher,
    leader: &LeaderElection,
    metrics: &RefreshMetrics,
    settings: &RefreshSettings,
    stop: CancellationToken,
) {
    let mut ticks = leader.ticks(settings.interval, &stop);
    while let Some(leading) = ticks.next().await {
        if !leading {
            continue;
        }
        if let Err(error) = refresh_once(refresher, settings, Some(metrics)).await {
            metrics.count("error");
            tracing::warn!(%error, "token refresh pass failed");
        }
    }
}

/// The token refresh of a scheduler: its refresher and pacing.
#[derive(Clone)]
pub struct TokenRefresh {
    pub refresher: Refresher,
    pub settings: RefreshSettings,
}

impl TokenRefresh {
    /// Over these backends, with the OAuth clients of the
    /// `FERRY_OAUTH_<PROVIDER>_*` variables and the default pacing.
    pub fn from_env(backends: &ferry_shared::backends::Backends) -> Self {
        TokenRefresh {
            refresher: Refresher::new(
                backends.store.clone(),
                backends.vault.clone(),
                oauth_refresh::OAuthClients::from_env(),
            ),
            settings: RefreshSettings::default(),
        }
    }
}

/// Runs [`run`] when the scheduler has a token refresh, else nothing.
pub(crate) async fn run_if(
    refresh: Option<&TokenRefresh>,
    leader: &LeaderElection,
    metrics: &RefreshMetrics,
    stop: CancellationToken,
) {
    if let Some(refresh) = refresh {
        run(&refresh.refresher, leader, metrics, &refresh.settings, stop).await;
    }
}
