//! Talking to a provider with the `oauth2` crate: the client of one
//! provider (its endpoints, scopes and client authentication), the HTTP
//! client of token requests under the network policy, the code and
//! refresh-token exchanges, and the sealed secrets a token response becomes.
//!
//! Token requests never follow redirects (a token endpoint that redirects
//! could send the client's credentials elsewhere), and every address a
//! token endpoint's name resolves to is checked against the network policy
//! when the connection is made, so a name cannot be re-pointed at a private
//! address between a check and the request.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ferry_shared::connectors::oauth::{self, ClientAuth, OAuthProvider};
use ferry_shared::network::{self, is_restricted};
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    ExtraTokenFields, HttpClientError, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse as _, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::settings::OAuthClient;

/// Fields of a token response beyond the standard ones (Salesforce's
/// `instance_url`, Stripe's `stripe_user_id`, ...). `Debug` shows only
/// their names: a vendor may put credentials among them (an `id_token`).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ExtraFields {
    #[serde(flatten)]
    fields: Map<String, Value>,
}

impl std::fmt::Debug for ExtraFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.fields.keys()).finish()
    }
}

impl ExtraTokenFields for ExtraFields {}

/// A provider's token response.
pub type TokenResponse = StandardTokenResponse<ExtraFields, BasicTokenType>;

/// An `oauth2` client with its authorization and token endpoints set.
pub type Client = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Why a provider's client cannot be built: the API field at fault and
/// what to tell the caller.
#[derive(Debug)]
pub struct SetupError {
    pub field: String,
    pub message: String,
}

impl SetupError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        SetupError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One provider's client for a connector configured as `config`, and the
/// scopes it asks for. The endpoints are the settings' overrides or the
/// declaration's defaults, with `{field}` placeholders filled from
/// `config`. No client id or secret is 400 naming the missing setting
/// (field `provider`); a placeholder the config lacks names `config.<field>`.
pub fn build(
    provider: &OAuthProvider,
    client: Option<&OAuthClient>,
    config: &Map<String, Value>,
    redirect_uri: &str,
) -> Result<(Client, Vec<Scope>), SetupError> {
    let env = provider.env;
    let missing = |what: &str| {
        SetupError::new(
            "provider",
            format!(
                "OAuth is not configured for {}: FERRY_OAUTH_{env}_{what} is not set",
                provider.type_id
            ),
        )
    };
    let client = client.cloned().unwrap_or_default();
    let client_id = client
        .client_id
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| missing("CLIENT_ID"))?;
    let client_secret = client
        .client_secret
        .filter(|secret| !secret.expose().is_empty())
        .ok_or_else(|| missing("CLIENT_SECRET"))?;
    let (default_auth, default_token) = provider.default_urls(config);
    let fill = |template: &str| {
        oauth::fill(template, config).map_err(|field| {
            SetupError::new(
                format!("config.{field}"),
                format!("config.{field} is required to reach the provider's endpoints"),
            )
        })
    };
    let auth_url = fill(client.auth_url.as_deref().unwrap_or(default_auth))?;
    let token_url = fill(client.token_url.as_deref().unwrap_or(default_token))?;
    let scopes = fill(client.scopes.as_deref().unwrap_or(provider.scopes))?;
    let bad_endpoint = |what: &str| {
        SetupError::new(
            "provider",
            format!(
                "the {what} endpoint of {} is not an http(s) URL",
                provider.type_id
            ),
        )
    };
    let auth_url = http_url(&auth_url)
        .and_then(|url| AuthUrl::new(url).ok())
        .ok_or_else(|| bad_endpoint("authorization"))?;
    let token_url = http_url(&token_url)
        .and_then(|url| TokenUrl::new(url).ok())
        .ok_or_else(|| bad_endpoint("token"))?;
    let redirect = RedirectUrl::new(redirect_uri.to_owned())
        .map_err(|_| SetupError::new("redirect_uri", "redirect_uri is not a URL"))?;
    let auth_type = match provider.client_auth {
        ClientAuth::Basic => AuthType::BasicAuth,
        ClientAuth::RequestBody => AuthType::RequestBody,
    };
    let client = oauth2::Client::new(ClientId::new(client_id))
        .set_client_secret(ClientSecret::new(client_secret.expose().to_owned()))
        .set_auth_uri(auth_url)
        .set_token_uri(token_url)
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type);
    let scopes = scopes
        .split_whitespace()
        .map(|s| Scope::new(s.to_owned()))
        .collect();
    Ok((client, scopes))
}

/// `text` when it is an absolute http(s) URL with a host.
fn http_url(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host().is_some()).then(|| text.to_owned())
}

/// Why a token request failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The provider answered with an OAuth error (`invalid_grant`, ...).
    Refused {
        error: String,
        description: Option<String>,
    },
    /// The token endpoint is a private or local address and the policy
    /// does not allow those.
    Blocked,
    /// The token endpoint could not be reached, or answered something that
    /// is not a token response.
    Failed(String),
}

impl ExchangeError {
    /// Whether the grant is gone for good (the user must authorize again).
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, ExchangeError::Refused { error, .. } if error == "invalid_grant")
    }

    /// What the caller is told: the provider's error code and description
    /// (bounded, control characters dropped), or what went wrong; never
    /// the response body, which may hold a token.
    pub fn message(&self) -> String {
        match self {
            ExchangeError::Refused { error, description } => {
                let mut text = format!("the provider refused the request: {}", clean(error, 64));
                if let Some(description) = description {
                    text.push_str(" (");
                    text.push_str(&clean(description, 300));
                    text.push(')');
                }
                text
            }
            ExchangeError::Blocked => {
                "the provider's token endpoint is a private or local address, which this server does not connect to"
                    .to_owned()
            }
            ExchangeError::Failed(why) => why.clone(),
        }
    }
}

/// `text` without control characters, at most `max` characters.
pub fn clean(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

type TokenError = RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>;

fn exchange_error(error: TokenError) -> ExchangeError {
    match error {
        RequestTokenError::ServerResponse(response) => ExchangeError::Refused {
            error: response.error().as_ref().to_owned(),
            description: response.error_description().cloned(),
        },
        RequestTokenError::Request(error) if network::is_blocked(&error) => ExchangeError::Blocked,
        RequestTokenError::Request(_) => {
            ExchangeError::Failed("the provider's token endpoint could not be reached".to_owned())
        }
        // The body is not kept: it may carry a token.
        RequestTokenError::Parse(..) => ExchangeError::Failed(
            "the provider's token endpoint did not answer with a token response".to_owned(),
        ),
        RequestTokenError::Other(_) => {
            ExchangeError::Failed("the provider's token endpoint answered unexpectedly".to_owned())
        }
    }
}

/// Refuses a token endpoint written as a private IP literal (names are
/// checked by the resolver when the connection is made).
fn check_literal(client: &Client, allow_private: bool) -> Result<(), ExchangeError> {
    if allow_private {
        return Ok(());
    }
    let url = client.token_uri().url();
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    match literal {
        Some(ip) if is_restricted(ip) => Err(ExchangeError::Blocked),
        _ => Ok(()),
    }
}

/// Exchanges an authorization code and its PKCE verifier for tokens.
pub async fn exchange_code(
    client: &Client,
    http: &reqwest::Client,
    allow_private: bool,
    code: String,
    verifier: String,
) -> Result<TokenResponse, ExchangeError> {
    check_literal(client, allow_private)?;
    client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(http)
        .await
        .map_err(exchange_error)
}

/// The sealed secrets of an OAuth connector after `token`:
/// `access_token`, `refresh_token` (the new one when the provider rotates
/// it, else `previous_refresh`), `token_type`, `scope` (when the provider
/// says) and `expires_at` (RFC 3339, when it gives `expires_in`). Returns
/// them with the expiry.
pub fn secrets_of(
    token: &TokenResponse,
    previous_refresh: Option<&str>,
    now: DateTime<Utc>,
) -> (Map<String, Value>, Option<DateTime<Utc>>) {
    let mut secrets = Map::new();
    secrets.insert(
        "access_token".into(),
        token.access_token().secret().clone().into(),
    );
    let refresh = token
        .refresh_token()
        .map(|t| t.secret().clone())
        .or_else(|| previous_refresh.map(str::to_owned));
    if let Some(refresh) = refresh {
        secrets.insert("refresh_token".into(), refresh.into());
    }
    secrets.insert("token_type".into(), token.token_type().as_ref().into());
    if let Some(scopes) = token.scopes() {
        let scope: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        secrets.insert("scope".into(), scope.join(" ").into());
    }
    let expires_at = token
        .expires_in()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_add_signed(d));
    if let Some(at) = expires_at {
        secrets.insert("expires_at".into(), crate::views::timestamp(at).into());
    }
    (secrets, expires_at)
}

/// The values of the provider's `token_fields` that `token` carries, keyed
/// by the config field that records them.
pub fn token_config_fields(provider: &OAuthProvider, token: &TokenResponse) -> Map<String, Value> {
    provider
        .token_fields
        .iter()
        .filter_map(|(from, to)| {
            let value = token.extra_fields().fields.get(*from)?;
            value.is_string().then(|| ((*to).to_owned(), value.clone()))
        })
        .collect()
}
