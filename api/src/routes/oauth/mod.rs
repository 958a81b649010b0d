//! OAuth connectors (`/api/oauth/{provider}`): the authorization-code flow
//! with PKCE (S256) that creates them, and the manual refresh of their
//! tokens.
//!
//! `authorize` stores the authorization in the store (any API replica can
//! finish it) under the hash of a fresh random state, which is what the
//! provider receives; the caller's own `state` is kept beside it and handed
//! back on every redirect. `callback` takes that row once (a `DELETE …
//! RETURNING`), so a replayed, unknown or expired state never reaches the
//! token endpoint. Tokens are sealed by the vault with the connector's uuid
//! as associated data, like every connector secret, and never appear in a
//! response or a log.

pub mod client;
pub mod settings;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_shared::Error;
use ferry_shared::connectors::oauth::{self as providers, OAuthProvider};
use ferry_shared::connectors::{AuthKind, ConnectorType, SplitConfig, TypeId};
use ferry_shared::domain::{Connector, ConnectorStatus};
use ferry_shared::ids::IdKind;
use ferry_shared::oauth_refresh::{self, Need, Outcome, Refresher};
use ferry_shared::store::OAuthState;
use oauth2::{CsrfToken, PkceCodeChallenge};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Caller, Json, Query};
use crate::views::{ErrorBody, timestamp};

pub use settings::{OAuthArgs, OAuthClient, OAuthSettings};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize))
        .routes(routes!(callback))
        .routes(routes!(refresh))
}

/// Longest caller `state` accepted, in characters.
const MAX_CALLER_STATE: usize = 512;

/// Random bytes in Ferry's own state (base64url-encoded on the wire).
const STATE_BYTES: u32 = 32;

/// How long a manual refresh waits for a refresh of the same connector in
/// progress elsewhere (the scheduler's, a worker's) before answering 409.
const REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(35);

// --- requests and responses ----------------------------------------------------

/// Query of `GET /api/oauth/{provider}/authorize`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeParams {
    /// The caller's CSRF token (required, at most 512 characters): handed
    /// back unchanged as `state` on the final redirect to FERRY_APP_URL.
    /// The provider receives a different, server-generated state.
    pub state: Option<String>,
    /// Name of the connector the flow creates (default: the type's name).
    pub display_name: Option<String>,
    /// A redirect URI for the provider instead of Ferry's own callback
    /// (`{FERRY_PUBLIC_URL}/api/oauth/{provider}/callback`); it must be on
    /// FERRY_OAUTH_REDIRECT_URIS, and must pass `code` and `state` on to
    /// that callback. It is repeated in the code exchange.
    pub redirect_uri: Option<String>,
    /// The connector's public configuration as a JSON object, validated
    /// as `config` of POST /api/connectors (e.g.
    /// `{"account":"xy12345.us-east-1","warehouse":"WH","database":"DB"}`);
    /// types with required fields need it. Snowflake's `account` and
    /// Azure's `tenant_id` also name the provider's endpoints.
    pub config: Option<String>,
}

/// Body of `POST /api/oauth/{provider}/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    #[schema(example = "conn_01J9Z8M5W6X7Y8Z9A0B1C2D3E4")]
    pub connector_uuid: Option<String>,
}

/// Result of `POST /api/oauth/{provider}/refresh`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshResponse {
    pub connector_uuid: String,
    /// The connector's status (`active` after a successful refresh, unless disabled).
    pub status: String,
    #[schema(format = DateTime)]
    pub token_refreshed_at: String,
    /// When the new access token expires (absent when the provider does not say).
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

// --- helpers -------------------------------------------------------------------

/// The OAuth provider named `name`: an OAuth connector type. Anything else
/// is 400 `validation_error` naming `provider`.
fn provider_of(name: &str) -> ApiResult<(&'static ConnectorType, &'static OAuthProvider)> {
    let provider = TypeId::parse(name).and_then(providers::provider).ok_or_else(|| {
        let known: Vec<String> = providers::providers()
            .iter()
            .map(|p| p.type_id.to_string())
            .collect();
        ApiError::Domain(
            Error::validation(
                "provider",
                format!("`{}` is not an OAuth provider", client::clean(name, 64)),
            )
            .with_details(format!("OAuth providers: {}", known.join(", "))),
        )
    })?;
    Ok((provider.type_id.decl(), provider))
}

fn setup_error(error: client::SetupError) -> ApiError {
    ApiError::validation(error.field, error.message)
}

/// SHA-256 of Ferry's state, in hex: the key the authorization is stored
/// under.
fn hash_state(state: &str) -> String {
    Sha256::digest(state.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A 302 to `location`, never cached.
fn found(location: &str) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location.to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// The end of a callback: a 302 to FERRY_APP_URL with `params`, and the
/// caller's state when known.
fn finish(state: &AppState, params: &[(&str, &str)], caller_state: Option<&str>) -> Response {
    let mut url = state.oauth.app_url();
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
        if let Some(caller_state) = caller_state {
            query.append_pair("state", caller_state);
        }
    }
    found(url.as_str())
}

/// A failed callback: `error=<code>&message=<text>`.
fn fail(state: &AppState, code: &str, message: &str, caller_state: Option<&str>) -> Response {
    tracing::info!(error = code, "oauth callback failed");
    finish(state, &[("error", code), ("message", message)], caller_state)
}

/// The caller's configuration: a JSON object, validated as on create. OAuth
/// types declare no secret fields, so all of it is public.
fn parse_config(kind: &ConnectorType, text: Option<&str>) -> ApiResult<Map<String, Value>> {
    let config = match text {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(ApiError::validation("config", "config must be a JSON object")),
        },
    };
    let SplitConfig { public, secrets } = kind.validate_new(&config)?;
    if !secrets.is_empty() {
        return Err(ApiError::validation(
            "config",
            "OAuth connectors take no credentials in their config",
        ));
    }
    Ok(public)
}

// --- handlers ------------------------------------------------------------------

/// Starts the OAuth flow that creates a connector: a 302 to the provider's
/// authorization page with `client_id`, `redirect_uri`, `scope`, a
/// server-generated `state`, and a PKCE `code_challenge` with
/// `code_challenge_method=S256`.
///
/// The authorization is stored server-side for 10 minutes, bound to the
/// caller's user and organization, `display_name`, `config`, the caller's
/// `state`, the redirect URI and the PKCE verifier (sealed); its callback
/// may be served by any API replica. Endpoints and scopes are the vendor's
/// unless FERRY_OAUTH_<PROVIDER>_AUTH_URL / _TOKEN_URL / _SCOPES override
/// them.
#[utoipa::path(get, path = "/api/oauth/{provider}/authorize", tag = "oauth",
    params(("provider" = String, Path, description = "An OAuth connector type: bigquery, snowflake, salesforce, hubspot, stripe, google_analytics, azure"),
        AuthorizeParams),
    responses(
        (status = 302, description = "To the provider's authorization page (Location)"),
        (status = 400, description = "validation_error naming `provider` (not an OAuth type, or no client configured: the message names the missing setting), `state` (missing), `redirect_uri` (not on the allow-list), `display_name` or `config.<field>`", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ))]
async fn authorize(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(provider): Path<String>,
    Query(params): Query<AuthorizeParams>,
) -> ApiResult<Response> {
    let (kind, provider) = provider_of(&provider)?;
    let caller_state = params
        .state
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::validation("state", "state is required"))?;
    if caller_state.chars().count() > MAX_CALLER_STATE || caller_state.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "state",
            format!("state is at most {MAX_CALLER_STATE} characters, without control characters"),
        ));
    }
    let display_name = match params.display_name {
        None => kind.name.to_owned(),
        Some(name) => super::check_name("display_name", "display_name", Some(&name))?,
    };
    let redirect_uri = match params.redirect_uri {
        None => state.oauth.callback_url(provider),
        Some(uri) if state.oauth.redirect_allowed(&uri) => uri,
        Some(_) => {
            return Err(ApiError::validation(
                "redirect_uri",
                "redirect_uri is not on the allow-list (FERRY_OAUTH_REDIRECT_URIS)",
            ));
        }
    };
    let config = parse_config(kind, params.config.as_deref())?;
    let (oauth_client, scopes) = client::build(
        provider,
        state.oauth.client(provider.type_id),
        &config,
        &redirect_uri,
    )
    .map_err(setup_error)?;

    let now = ferry_shared::domain::now();
    if let Err(error) = state.backends.store.purge_oauth_states(now).await {
        tracing::warn!(%error, "expired oauth authorizations not purged");
    }
    let ferry_state = CsrfToken::new_random_len(STATE_BYTES);
    let state_hash = hash_state(ferry_state.secret());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut sealed = Map::new();
    sealed.insert("code_verifier".into(), verifier.secret().clone().into());
    let ttl = chrono::Duration::from_std(state.oauth.state_ttl()).map_err(Error::internal_from)?;
    let record = OAuthState {
        verifier: state
            .backends
            .vault
            .seal(&OAuthState::seal_context(&state_hash), &sealed)?,
        state_hash,
        provider: provider.type_id.to_string(),
        org_id: caller.org_id.clone(),
        user_id: caller.user_id.clone(),
        display_name,
        caller_state,
        config,
        redirect_uri,
        created_at: now,
        expires_at: now + ttl,
    };
    state.backends.store.put_oauth_state(&record).await?;

    let mut request = oauth_client
        .authorize_url(|| ferry_state)
        .add_scopes(scopes)
        .set_pkce_challenge(challenge);
    for (name, value) in provider.auth_params {
        request = request.add_extra_param(*name, *value);
    }
    let (url, _) = request.url();
    tracing::info!(provider = %provider.type_id, "oauth authorization started");
    Ok(found(url.as_str()))
}

/// The provider's redirect at the end of the consent: exchanges the code
/// (with the PKCE verifier) for tokens, seals them, creates the connector
/// (owned by the user who started the flow) and sends the browser to
/// `FERRY_APP_URL?uuid=<uuid>&status=success&state=<caller state>`.
///
/// Not authenticated by a bearer token: by the state, which is accepted
/// once. Every failure is a 302 to
/// `FERRY_APP_URL?error=<code>&message=<text>&state=<caller state, when known>`
/// with `error` one of `invalid_state` (unknown, already used, or for
/// another provider; no token request is made), `expired_state` (older
/// than 10 minutes; no token request), `authorization_failed` (the
/// provider reported an error such as `access_denied`, or sent no code),
/// `token_exchange_failed` (the token endpoint refused the code, could not
/// be reached, or is a private address the network policy forbids) and
/// `server_error`.
#[utoipa::path(get, path = "/api/oauth/{provider}/callback", tag = "oauth",
    params(("provider" = String, Path, description = "The OAuth connector type being authorized"),
        ("code" = Option<String>, Query, description = "Authorization code from the provider"),
        ("state" = Option<String>, Query, description = "The state Ferry sent to the provider"),
        ("error" = Option<String>, Query, description = "The provider's error (e.g. access_denied)"),
        ("error_description" = Option<String>, Query, description = "The provider's explanation")),
    responses(
        (status = 302, description = "To FERRY_APP_URL with `uuid` and `status=success`, or `error` and `message`; and the caller's `state`"),
    ),
    security(()))]
async fn callback(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params: Map<String, Value> = url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
        .collect();
    let param = |name: &str| params.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());

    let Some(ferry_state) = param("state") else {
        return fail(&state, "invalid_state", "the callback carries no state", None);
    };
    let record = match state
        .backends
        .store
        .take_oauth_state(&hash_state(ferry_state))
        .await
    {
        Ok(Some(record)) => record,
        Ok(None) => {
            return fail(
                &state,
                "invalid_state",
                "unknown or already used authorization: start again",
                None,
            );
        }
        Err(error) => {
            tracing::error!(%error, "oauth state not read");
            return fail(
                &state,
                "server_error",
                "the authorization could not be read",
                None,
            );
        }
    };
    let caller_state = Some(record.caller_state.as_str());
    if record.provider != provider {
        return fail(
            &state,
            "invalid_state",
            "the authorization was started for another provider",
            caller_state,
        );
    }
    if record.expires_at <= ferry_shared::domain::now() {
        return fail(
            &state,
            "expired_state",
            "the authorization expired: start again",
            caller_state,
        );
    }
    if let Some(error) = param("error") {
        let mut message = format!(
            "the provider refused the authorization: {}",
            client::clean(error, 64)
        );
        if let Some(description) = param("error_description") {
            message.push_str(" (");
            message.push_str(&client::clean(description, 300));
            message.push(')');
        }
        return fail(&state, "authorization_failed", &message, caller_state);
    }
    let Some(code) = param("code") else {
        return fail(
            &state,
            "authorization_failed",
            "the provider sent no authorization code",
            caller_state,
        );
    };
    let caller_state = record.caller_state.clone();
    match complete(&state, record, code.to_owned()).await {
        Ok(uuid) => finish(
            &state,
            &[("uuid", &uuid), ("status", "success")],
            Some(&caller_state),
        ),
        Err((code, message)) => fail(&state, code, &message, Some(&caller_state)),
    }
}

/// Exchanges the code and creates the connector; on failure, the callback's
/// error code and message.
async fn complete(
    state: &AppState,
    record: OAuthState,
    code: String,
) -> Result<String, (&'static str, String)> {
    let server_error = |what: &str, error: &dyn std::fmt::Display| {
        tracing::error!(%error, "{what}");
        ("server_error", "the connector could not be created".to_owned())
    };
    let (kind, provider) =
        provider_of(&record.provider).map_err(|_| ("invalid_state", "unknown provider".to_owned()))?;
    let (oauth_client, _) = client::build(
        provider,
        state.oauth.client(provider.type_id),
        &record.config,
        &record.redirect_uri,
    )
    .map_err(|error| ("token_exchange_failed", error.message))?;
    let verifier = state
        .backends
        .vault
        .open(&OAuthState::seal_context(&record.state_hash), &record.verifier)
        .map_err(|error| server_error("oauth verifier not opened", &error))?;
    let verifier = verifier
        .expose_secret()
        .get("code_verifier")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| server_error("oauth verifier missing", &"no code_verifier"))?;
    let token = client::exchange_code(
        &oauth_client,
        state.oauth.http(),
        state.oauth.allow_private_networks(),
        code,
        verifier,
    )
    .await
    .map_err(|error| ("token_exchange_failed", error.message()))?;

    let mut config = record.config;
    config.extend(client::token_config_fields(provider, &token));
    let public = kind
        .validate_new(&config)
        .map_err(|error| {
            (
                "token_exchange_failed",
                format!("the provider's answer is not usable: {error}"),
            )
        })?
        .public;
    let now = ferry_shared::domain::now();
    let (secrets, _) = client::secrets_of(&token, None, now);
    let uuid = IdKind::Connector.generate();
    let connector = Connector {
        secrets: state
            .backends
            .vault
            .seal(&uuid, &secrets)
            .map_err(|error| server_error("oauth tokens not sealed", &error))?,
        uuid,
        org_id: record.org_id,
        connector_type: kind.type_id.to_string(),
        display_name: record.display_name,
        config: public,
        config_version: 1,
        status: ConnectorStatus::Active,
        auth_type: AuthKind::OAuth.as_str().to_owned(),
        created_by: record.user_id,
        created_at: now,
        updated_at: now,
        last_tested_at: None,
        last_test_status: None,
        disabled_at: None,
        disabled_by: None,
        disabled_reason: None,
    };
    state
        .backends
        .store
        .create_connector(&connector)
        .await
        .map_err(|error| server_error("oauth connector not stored", &error))?;
    tracing::info!(connector_uuid = %connector.uuid, connector_type = %connector.connector_type, "connector created through oauth");
    Ok(connector.uuid)
}

/// Refreshes an OAuth connector's access token now with its refresh token
/// and stores the new tokens (sealed). A provider that rotates refresh
/// tokens returns a new one, which replaces the old (spent) one; otherwise
/// the old one is kept. A successful refresh sets an `error` connector back
/// to `active`; a refresh token the provider no longer accepts
/// (`invalid_grant`) marks the connector `error` and answers 400
/// `connection_failed`: the user connects it again through authorize.
///
/// Requires edit permission on the connector. Tokens are refreshed
/// automatically before they expire; this is rarely needed.
#[utoipa::path(post, path = "/api/oauth/{provider}/refresh", tag = "oauth", request_body = RefreshRequest,
    params(("provider" = String, Path, description = "The connector's type")),
    responses(
        (status = 200, description = "Refreshed", body = RefreshResponse),
        (status = 400, description = "validation_error (`provider`: not this connector's type or not configured; `connector_uuid`: missing, not OAuth, or no refresh token) or connection_failed (the provider refused or could not be reached)", body = ErrorBody),
        (status = 403, description = "The caller may not edit the connector", body = ErrorBody),
        (status = 404, description = "No such connector visible to the caller", body = ErrorBody),
        (status = 409, description = "conflict: another refresh of this connector (the scheduler's, another replica's) held its refresh lease for longer than the request waits", body = ErrorBody),
    ))]
async fn refresh(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(provider): Path<String>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<axum::Json<RefreshResponse>> {
    let (kind, provider) = provider_of(&provider)?;
    let uuid = body
        .connector_uuid
        .filter(|uuid| !uuid.is_empty())
        .ok_or_else(|| ApiError::validation("connector_uuid", "connector_uuid is required"))?;
    let (connector, role) = super::connectors::visible_connector(&state, &caller, &uuid).await?;
    super::permit(role.can_edit(), "refresh this connector's tokens")?;
    if connector.connector_type != kind.type_id.as_str() {
        return Err(ApiError::validation(
            "provider",
            format!(
                "connector {uuid} is a {} connector, not {}",
                connector.connector_type, kind.type_id
            ),
        ));
    }
    let secrets = state.backends.vault.open(&connector.uuid, &connector.secrets)?;
    // Checked here so that a connector without one is a 400 on the
    // request rather than an error mark on the connector.
    secrets
        .expose_secret()
        .get("refresh_token")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::validation(
                "connector_uuid",
                format!(
                    "the connector has no refresh token: connect it again through /api/oauth/{}/authorize",
                    kind.type_id
                ),
            )
        })?;
    drop(secrets);
    // The provider's client must be configured and its endpoints filled.
    client::build(
        provider,
        state.oauth.client(provider.type_id),
        &connector.config,
        &state.oauth.callback_url(provider),
    )
    .map_err(setup_error)?;
    // Under the connector's refresh lease, shared with the scheduler and
    // the workers: a refresh someone else completed meanwhile is not
    // repeated (the rotating refresh token it spent is gone).
    let refresher = Refresher::new(
        state.backends.store.clone(),
        state.backends.vault.clone(),
        state.oauth.refresh_clients(),
    );
    let outcome = refresher
        .refresh(
            &caller.org_id,
            &connector.uuid,
            Need::Unchanged(connector.config_version),
            REFRESH_WAIT,
        )
        .await?;
    let now = ferry_shared::domain::now();
    let connection_failed = |message: String, details: String| {
        let mut extra = Map::new();
        extra.insert("details".into(), details.into());
        ApiError::ConnectionFailed { message, extra }
    };
    let expires_at = match outcome {
        Outcome::Refreshed { expires_at, .. } => expires_at,
        Outcome::NotNeeded => None,
        Outcome::Busy => {
            return Err(
                Error::conflict("another refresh of this connector is in progress; try again").into(),
            );
        }
        Outcome::Skipped => return Err(ApiError::not_found("Connector not found")),
        Outcome::NotConfigured => {
            return Err(ApiError::validation(
                "provider",
                format!("OAuth is not configured for {}", kind.type_id),
            ));
        }
        Outcome::InvalidGrant(why) => {
            tracing::info!(connector_uuid = %connector.uuid, "oauth refresh refused: invalid_grant");
            return Err(connection_failed(
                format!(
                    "The provider no longer accepts this connector's grant: connect it again through /api/oauth/{}/authorize",
                    kind.type_id
                ),
                why,
            ));
        }
        Outcome::Failed(why) => {
            tracing::info!(connector_uuid = %connector.uuid, "oauth refresh failed");
            return Err(connection_failed("The token refresh failed".to_owned(), why));
        }
    };
    let current = state
        .backends
        .store
        .get_connector(&caller.org_id, &uuid)
        .await?
        .ok_or_else(|| ApiError::not_found("Connector not found"))?;
    let expires_at = match expires_at {
        Some(at) => Some(at),
        None => {
            let secrets = state.backends.vault.open(&current.uuid, &current.secrets)?;
            oauth_refresh::expires_at(secrets.expose_secret())
        }
    };
    Ok(axum::Json(RefreshResponse {
        connector_uuid: uuid,
        status: current.status.as_str().to_owned(),
        token_refreshed_at: timestamp(now),
        expires_at: expires_at.map(timestamp),
    }))
}
