//! One OAuth token refresh, usable from every role: under the connector's
//! refresh lease (in the store, so it holds across processes in both
//! embedded and distributed modes), re-read the sealed tokens, refresh only
//! if still needed, write the new tokens with the connector's
//! compare-and-swap, release. A rotating refresh token is thus spent once.
//! See `oauth_refresh.md` beside this file.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::config::Secret;
use crate::connectors::TypeId;
use crate::connectors::oauth::{self, ClientAuth, OAuthProvider};
use crate::domain::{Connector, ConnectorStatus};
use crate::error::{Error, Result};
use crate::network::{self, is_restricted};
use crate::store::{Claim, Store};
use crate::vault::Vault;

/// How long a refresh lease lasts: longer than a token request may take
/// (its timeout), so a live holder never loses it; a dead holder's lease
/// lapses after this.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// How long a token request may take.
pub const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times the new tokens' write is retried on a concurrent change.
const WRITE_ATTEMPTS: usize = 5;

/// One provider's client: what a refresh needs from the
/// `FERRY_OAUTH_<PROVIDER>_*` settings.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Secret,
    /// Overrides the provider's token endpoint.
    pub token_url: Option<String>,
}

/// The OAuth clients of every configured provider, and the network policy
/// of token requests.
#[derive(Debug, Clone, Default)]
pub struct OAuthClients {
    clients: HashMap<TypeId, ClientCredentials>,
    allow_private_networks: bool,
}

impl OAuthClients {
    /// The clients named by `FERRY_OAUTH_<PROVIDER>_{CLIENT_ID,CLIENT_SECRET,TOKEN_URL}`
    /// and `FERRY_ALLOW_PRIVATE_NETWORKS` (default false), for the roles
    /// that do not parse the API's flags.
    pub fn from_env() -> Self {
        let var = |name: String| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let mut clients = OAuthClients {
            allow_private_networks: var("FERRY_ALLOW_PRIVATE_NETWORKS".into())
                .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "yes")),
            ..OAuthClients::default()
        };
        for provider in oauth::providers() {
            let env = provider.env;
            if let (Some(id), Some(secret)) = (
                var(format!("FERRY_OAUTH_{env}_CLIENT_ID")),
                var(format!("FERRY_OAUTH_{env}_CLIENT_SECRET")),
            ) {
                clients = clients.with_client(
                    provider.type_id,
                    ClientCredentials {
                        client_id: id,
                        client_secret: Secret::new(secret),
                        token_url: var(format!("FERRY_OAUTH_{env}_TOKEN_URL")),
                    },
                );
            }
        }
        clients
    }

    pub fn with_client(mut self, type_id: TypeId, client: ClientCredentials) -> Self {
        self.clients.insert(type_id, client);
        self
    }

    pub fn with_private_networks(mut self, allowed: bool) -> Self {
        self.allow_private_networks = allowed;
        self
    }
}

/// When a refresh is still needed once the lease is held.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// The access token expires before this time (or has no known expiry).
    ExpiresBefore(DateTime<Utc>),
    /// The connector is still at this `config_version` (nobody refreshed
    /// it since the caller looked): a refresh asked for by hand.
    Unchanged(i64),
}

/// What one refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// New tokens are stored (at `config_version`).
    Refreshed {
        expires_at: Option<DateTime<Utc>>,
        config_version: i64,
    },
    /// Another refresher got there first: the stored tokens are fine.
    NotNeeded,
    /// Another refresher holds the lease.
    Busy,
    /// The connector is gone, not OAuth, or not active.
    Skipped,
    /// The provider has no configured client here.
    NotConfigured,
    /// The provider refused the grant for good: the connector is `error`.
    InvalidGrant(String),
    /// A transient failure (network, 5xx, unexpected answer): try later.
    Failed(String),
}

impl Outcome {
    /// The bounded metric label of this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Refreshed { .. } => "refreshed",
            Outcome::NotNeeded => "not_needed",
            Outcome::Busy => "busy",
            Outcome::Skipped => "skipped",
            Outcome::NotConfigured => "not_configured",
            Outcome::InvalidGrant(_) => "invalid_grant",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// Refreshes OAuth tokens under the store's per-connector lease.
#[derive(Clone)]
pub struct Refresher {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    clients: Arc<OAuthClients>,
    http: reqwest::Client,
    /// Who holds the leases this refresher takes (unique per refresher).
    holder: String,
}

impl Refresher {
    pub fn new(store: Arc<dyn Store>, vault: Arc<Vault>, clients: OAuthClients) -> Self {
        let http = network::token_client(clients.allow_private_networks, TOKEN_REQUEST_TIMEOUT);
        Refresher {
            store,
            vault,
            clients: Arc::new(clients),
            http,
            holder: format!("refresher-{}", ulid::Ulid::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// Refreshes the connector's tokens if `need` still holds once its
    /// lease is held, waiting up to `wait` for a busy lease (zero: answer
    /// [`Outcome::Busy`] at once).
    pub async fn refresh(&self, org_id: &str, uuid: &str, need: Need, wait: Duration) -> Result<Outcome> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(LEASE_TTL).unwrap_or_default();
            let claim = Claim {
                connector_uuid: uuid,
                holder: &self.holder,
                now,
                until,
            };
            if self.store.acquire_refresh_lease(claim).await? {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Outcome::Busy);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let outcome = self.refresh_leased(org_id, uuid, need).await;
        if let Err(error) = self.store.release_refresh_lease(uuid, &self.holder).await {
            tracing::warn!(connector_uuid = uuid, %error, "refresh lease not released; it lapses by itself");
        }
        outcome
    }

    async fn refresh_leased(&self, org_id: &str, uuid: &str, need: Need) -> Result<Outcome> {
        // Read again under the lease: another holder may just have refreshed.
        let Some(connector) = self.store.get_connector(org_id, uuid).await? else {
            return Ok(Outcome::Skipped);
        };
        if connector.auth_type != "oauth" {
            return Ok(Outcome::Skipped);
        }
        let Some(provider) = connector
            .connector_type
            .parse::<TypeId>()
            .ok()
            .and_then(oauth::provider)
        else {
            return Ok(Outcome::Skipped);
        };
        let secrets = self.vault.open(&connector.uuid, &connector.secrets)?;
        let mut secrets = secrets.expose_secret().clone();
        let still_needed = match need {
            Need::ExpiresBefore(before) => {
                connector.status == ConnectorStatus::Active
                    && expires_at(&secrets).is_none_or(|at| at < before)
            }
            Need::Unchanged(version) => connector.config_version == version,
        };
        if !still_needed {
            return Ok(Outcome::NotNeeded);
        }
        let Some(client) = self.clients.clients.get(&provider.type_id) else {
            return Ok(Outcome::NotConfigured);
        };
        let Some(refresh_token) = secrets
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            let why = "the connector has no refresh token";
            self.give_up(&connector, why).await?;
            return Ok(Outcome::InvalidGrant(why.to_owned()));
        };
        let now = Utc::now();
        let token = match self
            .exchange(provider, client, &connector.config, &refresh_token)
            .await
        {
            Ok(token) => token,
            Err(TokenError::InvalidGrant(why)) => {
                self.give_up(&connector, &why).await?;
                return Ok(Outcome::InvalidGrant(why));
            }
            Err(TokenError::Transient(why)) => return Ok(Outcome::Failed(why)),
        };
        let expires_at = token.apply(&mut secrets, now);
        let config_version = self.store_tokens(connector, &secrets).await?;
        self.store
            .track_oauth_token(uuid, config_version, expires_at)
            .await?;
        tracing::info!(connector_uuid = uuid, "oauth tokens refreshed");
        Ok(Outcome::Refreshed {
            expires_at,
            config_version,
        })
    }

    /// Writes the new tokens with the connector's compare-and-swap (a new
    /// `config_version`, so pools holding the old token reconnect),
    /// retrying on a concurrent change with the connector as it now
    /// stands: the old refresh token is spent, the new tokens are kept.
    async fn store_tokens(&self, mut current: Connector, secrets: &Map<String, Value>) -> Result<i64> {
        for _ in 0..WRITE_ATTEMPTS {
            let expected = current.config_version;
            let mut updated = current.clone();
            updated.secrets = self.vault.seal(&updated.uuid, secrets)?;
            updated.config_version = expected + 1;
            updated.updated_at = Utc::now();
            if updated.status == ConnectorStatus::Error {
                updated.status = ConnectorStatus::Active;
            }
            if self.store.update_connector(&updated, expected).await? {
                return Ok(updated.config_version);
            }
            current = self
                .store
                .get_connector(&current.org_id, &current.uuid)
                .await?
                .ok_or_else(|| Error::not_found("the connector was deleted during the refresh"))?;
        }
        Err(Error::conflict(
            "the connector changed during the refresh; the new tokens were not stored",
        ))
    }

    /// Marks the connector `error` after its grant was refused for good,
    /// and records why; it is not refreshed again until re-authorized.
    async fn give_up(&self, connector: &Connector, why: &str) -> Result<()> {
        tracing::warn!(connector_uuid = %connector.uuid, reason = why, "oauth grant refused; the connector needs a new authorization");
        self.store
            .record_refresh_failure(&connector.uuid, why, None)
            .await?;
        self.store
            .record_webhook_event(&credentials_expired(connector, why))
            .await?;
        let mut current = connector.clone();
        for _ in 0..WRITE_ATTEMPTS {
            if current.status != ConnectorStatus::Active {
                return Ok(());
            }
            let version = current.config_version;
            current.status = ConnectorStatus::Error;
            current.updated_at = Utc::now();
            if self.store.update_connector(&current, version).await? {
                return Ok(());
            }
            match self
                .store
                .get_connector(&connector.org_id, &connector.uuid)
                .await?
            {
                Some(fresh) => current = fresh,
                None => return Ok(()),
            }
        }
        Ok(())
    }

    async fn exchange(
        &self,
        provider: &OAuthProvider,
        client: &ClientCredentials,
        config: &Map<String, Value>,
        refresh_token: &str,
    ) -> std::result::Result<TokenResponse, TokenError> {
        let (_, default_token) = provider.default_urls(config);
        let template = client.token_url.as_deref().unwrap_or(default_token);
        let url = oauth::fill(template, config)
            .map_err(|field| TokenError::Transient(format!("config.{field} is missing")))?;
        let url = url::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| TokenError::Transient("the token endpoint is not an http(s) URL".into()))?;
        if !self.clients.allow_private_networks {
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if literal.is_some_and(is_restricted) {
                return Err(TokenError::Transient(BLOCKED.into()));
            }
        }
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        let mut request = self.http.post(url).header("Accept", "application/json");
        match provider.client_auth {
            ClientAuth::Basic => {
                request = request.basic_auth(&client.client_id, Some(client.client_secret.expose()));
            }
            ClientAuth::RequestBody => {
                form.push(("client_id", &client.client_id));
                form.push(("client_secret", client.client_secret.expose()));
            }
        }
        let response = request.form(&form).send().await.map_err(|error| {
            TokenError::Transient(if network::is_blocked(&error) {
                BLOCKED.into()
            } else {
                "the provider's token endpoint could not be reached".into()
            })
        })?;
        let status = response.status();
        // The body is never logged or returned: it may carry a token.
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return TokenResponse::parse(body).ok_or_else(|| {
                TokenError::Transient(
                    "the provider's token endpoint did not answer with a token response".into(),
                )
            });
        }
        let error = body.get("error").and_then(Value::as_str).map(|e| clean(e, 64));
        match error {
            Some(error) if error == "invalid_grant" => {
                let mut why = "the provider refused the refresh token: invalid_grant".to_owned();
                if let Some(description) = body.get("error_description").and_then(Value::as_str) {
                    why.push_str(&format!(" ({})", clean(description, 300)));
                }
                Err(TokenError::InvalidGrant(why))
            }
            Some(error) => Err(TokenError::Transient(format!(
                "the provider refused the request: {error} (HTTP {})",
                status.as_u16()
            ))),
            None => Err(TokenError::Transient(format!(
                "the provider's token endpoint answered HTTP {}",
                status.as_u16()
            ))),
        }
    }
}

const BLOCKED: &str =
    "the provider's token endpoint is a private or local address, which this server does not connect to";

enum TokenError {
    InvalidGrant(String),
    Transient(String),
}

/// The fields of a token response a refresh keeps.
struct TokenResponse {
    access_token: String,
    refresh_token: Option<String>,
    token_type: Option<String>,
    scope: Option<String>,
    expires_in: Option<i64>,
}

impl TokenResponse {
    fn parse(body: Value) -> Option<TokenResponse> {
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        Some(TokenResponse {
            access_token: text("access_token")?,
            refresh_token: text("refresh_token"),
            token_type: text("token_type"),
            scope: text("scope"),
            expires_in: body
                .get("expires_in")
                .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))),
        })
    }

    /// Writes the new tokens over `secrets` (the refresh token is kept
    /// when the provider does not rotate it) and returns the new expiry.
    fn apply(self, secrets: &mut Map<String, Value>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        secrets.insert("access_token".into(), self.access_token.into());
        if let Some(refresh) = self.refresh_token {
            secrets.insert("refresh_token".into(), refresh.into());
        }
        if let Some(kind) = self.token_type {
            secrets.insert("token_type".into(), kind.into());
        }
        if let Some(scope) = self.scope {
            secrets.insert("scope".into(), scope.into());
        }
        let expires_at = self
            .expires_in
            .and_then(chrono::Duration::try_seconds)
            .and_then(|d| now.checked_add_signed(d));
        match expires_at {
            Some(at) => {
                secrets.insert(
                    "expires_at".into(),
                    at.to_rfc3339_opts(SecondsFormat::Secs, true).into(),
                );
            }
            None => {
                secrets.remove("expires_at");
            }
        }
        expires_at
    }
}

/// The expiry recorded in a connector's sealed tokens (`expires_at`, RFC 3339).
pub fn expires_at(secrets: &Map<String, Value>) -> Option<DateTime<Utc>> {
    secrets
        .get("expires_at")
        .and_then(Value::as_str)
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|at| at.with_timezone(&Utc))
}

/// `text` without control characters, at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// `connector.credentials_expired` for a connector whose grant the provider
/// refused: one per connector configuration (a new authorization is a new
/// `config_version`), however many refreshers meet the refusal.
fn credentials_expired(connector: &Connector, why: &str) -> crate::domain::webhook::WebhookEvent {
    use crate::domain::webhook::{EventType, WebhookEvent};
    let mut event = WebhookEvent::new(
        &connector.org_id,
        EventType::CredentialsExpired,
        serde_json::json!({
            "connector_uuid": connector.uuid,
            "connector_type": connector.connector_type,
            "display_name": connector.display_name,
            "status": "error",
            "reason": why,
        }),
    );
    event.dedupe_key = Some(format!(
        "{}:{}:{}",
        EventType::CredentialsExpired.as_str(),
        connector.uuid,
        connector.config_version
    ));
    event
}
