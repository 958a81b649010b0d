//! JWT verification (HS256, RS256/ES256 from a PEM file, JWKS from a URL),
//! minting of development tokens, and API keys ([`api_keys`]): the
//! callers [`authenticate`] accepts.
//!
//! The algorithms a token may use come from the configured keys, never from
//! the token: the HS256 secret verifies HS256 only, the PEM key and each JWKS
//! key verify the algorithms of their key type (see `keys.rs`). `none` is not
//! an algorithm this module knows, so such tokens are malformed. A token whose
//! header says `HS*` is checked against the HS256 secret and nothing else, so
//! a public key can never be abused as an HMAC secret.
//!
//! Claims (API.md, Authentication): `sub`, `org_id` and `exp` are required;
//! `org_role` is `admin` or `member` (absent means `member`); `email` is
//! optional; `iss` and `aud` are required and checked only when configured.
//! `nbf`, when present, is honoured. Clock leeway is 30 seconds.

pub mod api_keys;
mod jwks;
mod keys;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use ferry_shared::Error;
use ferry_shared::domain::{OrgRole, Principal};

pub use ferry_shared::config::JwtSettings;

use self::jwks::JwksSource;
use self::keys::KeyEntry;

/// The caller a bearer token authenticates: an API key (`fk_…`, see
/// [`api_keys`]) read from the store on every request, anything else a JWT
/// checked by the state's [`Verifier`]. A refusal is 401 `unauthorized`; a
/// store that cannot be read is its own error, never a refusal.
pub async fn authenticate(state: &crate::AppState, token: &str) -> Result<Principal, crate::error::ApiError> {
    if api_keys::is_api_key(token) {
        return api_keys::authenticate(state.backends.store.as_ref(), token).await;
    }
    state
        .verifier
        .verify(token)
        .await
        .map_err(|error| crate::error::ApiError::Domain(Error::Unauthorized(error.0)))
}

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECONDS: u64 = 30;
/// Longer bearer tokens are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused. The message is safe to show to the caller: it
/// never contains the token, its claims' values or key material.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

impl AuthError {
    fn new(message: impl Into<String>) -> Self {
        AuthError(message.into())
    }
}

/// The claims of a token minted by [`mint_hs256`] (`ferry token`, tests).
/// `None` fields are left out of the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    pub org_id: String,
    #[serde(default)]
    pub org_role: OrgRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Expiry, in Unix seconds.
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

impl TokenClaims {
    /// Claims for `sub` in `org_id` expiring `ttl` from now, without email,
    /// issuer or audience.
    pub fn new(sub: impl Into<String>, org_id: impl Into<String>, org_role: OrgRole, ttl: Duration) -> Self {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        TokenClaims {
            sub: sub.into(),
            org_id: org_id.into(),
            org_role,
            email: None,
            exp: chrono::Utc::now().timestamp().saturating_add(ttl),
            iss: None,
            aud: None,
        }
    }
}

/// Signs `claims` with HS256 and `secret`.
pub fn mint_hs256(secret: &str, claims: &TokenClaims) -> Result<String, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::new("the HS256 secret is empty"));
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|_| AuthError::new("the token could not be signed"))
}

/// The claims read from a verified token; presence is checked by hand so
/// that refusals can name the missing claim.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    org_role: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

/// Verifies bearer tokens against the configured keys. Cheap to share
/// behind an `Arc`; verification takes `&self`.
pub struct Verifier {
    hs256: Option<DecodingKey>,
    pem: Option<Arc<KeyEntry>>,
    jwks: Option<JwksSource>,
    validation: Validation,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("pem", &self.pem.as_ref().map(|k| &k.algorithms))
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}

impl Verifier {
    /// Loads the configured keys.
    ///
    /// Fails with a validation error when no key source is set, the HS256
    /// secret is empty, the PEM file is unreadable or not a supported public
    /// key (`jwt_public_key`), or the JWKS URL is invalid (`jwt_jwks_url`).
    /// The JWKS is fetched once here, but an unreachable endpoint is only
    /// logged: verification retries and refuses tokens until it answers.
    pub async fn new(settings: JwtSettings) -> ferry_shared::Result<Self> {
        let hs256 = match settings.hs256_secret.as_ref().map(ExposeSecret::expose_secret) {
            Some("") => {
                return Err(Error::validation(
                    "jwt_hs256_secret",
                    "the HS256 secret must not be empty",
                ));
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let pem = match &settings.public_key_path {
            Some(path) => Some(Arc::new(keys::load_pem(path).await?)),
            None => None,
        };
        let jwks = match &settings.jwks_url {
            Some(url) => Some(JwksSource::new(url, settings.jwks_min_refresh)?),
            None => None,
        };
        if hs256.is_none() && pem.is_none() && jwks.is_none() {
            return Err(Error::validation(
                "jwt",
                "no JWT key configured: set FERRY_JWT_JWKS_URL, FERRY_JWT_PUBLIC_KEY or FERRY_JWT_HS256_SECRET",
            ));
        }
        if let Some(source) = &jwks {
            source.prime().await;
        }
        Ok(Verifier {
            hs256,
            pem,
            jwks,
            validation: base_validation(&settings),
        })
    }

    /// Verifies `token` (without the `Bearer ` prefix) and returns its caller.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::new("the token is malformed"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::new("the token is malformed or uses an unsupported algorithm"))?;
        let alg = header.alg;
        let key = self.key_for(alg, header.kid.as_deref()).await?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        let data = jsonwebtoken::decode::<RawClaims>(token, key.as_ref(), &validation)
            .map_err(|error| refusal(error.kind()))?;
        principal(data.claims)
    }

    /// The key that may verify a token with this `alg` and `kid`.
    async fn key_for(&self, alg: Algorithm, kid: Option<&str>) -> Result<KeyRef<'_>, AuthError> {
        if alg.family() == AlgorithmFamily::Hmac {
            // HMAC tokens are checked against the configured secret only,
            // never against a public key used as a secret.
            return match &self.hs256 {
                Some(key) if alg == Algorithm::HS256 => Ok(KeyRef::Secret(key)),
                _ => Err(not_allowed()),
            };
        }
        let pem = self.pem.as_ref().filter(|k| k.allows(alg)).map(Arc::clone);
        match (&self.jwks, kid, pem) {
            (Some(jwks), Some(kid), pem) => match jwks.key(Some(kid), alg).await {
                Ok(key) => Ok(KeyRef::Public(key)),
                Err(error) => pem.map(KeyRef::Public).ok_or(error),
            },
            (_, None, Some(pem)) => Ok(KeyRef::Public(pem)),
            (Some(jwks), None, None) => jwks.key(None, alg).await.map(KeyRef::Public),
            (None, _, Some(pem)) => Ok(KeyRef::Public(pem)),
            (None, _, None) => Err(not_allowed()),
        }
    }
}

enum KeyRef<'a> {
    Secret(&'a DecodingKey),
    Public(Arc<KeyEntry>),
}

impl AsRef<DecodingKey> for KeyRef<'_> {
    fn as_ref(&self) -> &DecodingKey {
        match self {
            KeyRef::Secret(key) => key,
            KeyRef::Public(entry) => &entry.key,
        }
    }
}

fn not_allowed() -> AuthError {
    AuthError::new("the token's algorithm is not accepted")
}

/// `exp` required, `nbf` honoured, `iss`/`aud` required and checked only
/// when configured (jsonwebtoken would otherwise refuse any token carrying an
/// `aud` when none is configured, and accept a token lacking `iss`).
fn base_validation(settings: &JwtSettings) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    match &settings.issuer {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        None => validation.iss = None,
    }
    match &settings.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
            required.push("aud");
        }
        None => {
            validation.aud = None;
            validation.validate_aud = false;
        }
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// A caller-safe message for a failed decode.
fn refusal(kind: &ErrorKind) -> AuthError {
    let message = match kind {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature is invalid".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted".to_owned(),
        ErrorKind::InvalidAudience => "the token's audience is not accepted".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("the token is missing the `{claim}` claim")
        }
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's `{claim}` claim is malformed"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidKeyFormat => "the token's algorithm is not accepted".to_owned(),
        _ => "the token is malformed".to_owned(),
    };
    AuthError(message)
}

fn principal(claims: RawClaims) -> Result<Principal, AuthError> {
    let required = |value: Option<String>, name: &str| {
        value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AuthError(format!("the token is missing the `{name}` claim")))
    };
    let user_id = required(claims.sub, "sub")?;
    let org_id = required(claims.org_id, "org_id")?;
    let org_role = match claims.org_role.as_deref() {
        None | Some("member") => OrgRole::Member,
        Some("admin") => OrgRole::Admin,
        Some(_) => {
            return Err(AuthError::new(
                "the token's `org_role` must be `admin` or `member`",
            ));
        }
    };
    Ok(Principal {
        user_id,
        org_id,
        org_role,
        email: claims.email,
    })
}
