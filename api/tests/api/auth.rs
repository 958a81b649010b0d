//! JWT verification tests: HS256 claims and expiry, PEM keys (RS256, ES256,
//! ES384), algorithm confusion, and a JWKS served by the test itself on
//! 127.0.0.1 (rotation, rate-limited refetches on unknown `kid`s).
//!
//! Every refusal test first shows that a well-formed token is accepted by the
//! same verifier, so it fails if verification were absent altogether.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_api::auth::{JwtSettings, TokenClaims, Verifier, mint_hs256};
use ferry_shared::Error;
use ferry_shared::domain::{OrgRole, Principal};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-at-least-32-characters";
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "ferry";

// ---------------------------------------------------------------- helpers

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture readable")
}

fn rsa_key(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture_bytes(&format!("{name}_private.pem"))).expect("rsa key")
}

fn ec_key(name: &str) -> EncodingKey {
    EncodingKey::from_ec_pem(&fixture_bytes(&format!("{name}_private.pem"))).expect("ec key")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn claims() -> TokenClaims {
    TokenClaims {
        sub: "user_01ABCDEF".into(),
        org_id: "org_01".into(),
        org_role: OrgRole::Member,
        email: Some("ada@example.com".into()),
        exp: now() + 3600,
        iss: None,
        aud: None,
    }
}

fn claims_json() -> Value {
    serde_json::to_value(claims()).expect("claims as json")
}

fn expected_principal() -> Principal {
    Principal {
        user_id: "user_01ABCDEF".into(),
        org_id: "org_01".into(),
        org_role: OrgRole::Member,
        email: Some("ada@example.com".into()),
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &impl serde::Serialize) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("token signed")
}

fn hs256(claims: &impl serde::Serialize) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

/// The token with its payload replaced (signature kept).
fn with_payload(token: &str, payload: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    format!("{}.{}.{}", parts[0], b64_json(payload), parts[2])
}

fn hs256_settings() -> JwtSettings {
    JwtSettings {
        hs256_secret: Some(SECRET.into()),
        ..JwtSettings::default()
    }
}

fn pem_settings(public_key: &str) -> JwtSettings {
    JwtSettings {
        public_key_path: Some(fixture(public_key)),
        ..JwtSettings::default()
    }
}

async fn verifier(settings: JwtSettings) -> Verifier {
    Verifier::new(settings).await.expect("verifier built")
}

async fn assert_accepts(verifier: &Verifier, token: &str) -> Principal {
    match verifier.verify(token).await {
        Ok(principal) => principal,
        Err(error) => panic!("token refused: {error}"),
    }
}

/// Refusal, returning the caller-facing message.
async fn assert_refuses(verifier: &Verifier, token: &str) -> String {
    match verifier.verify(token).await {
        Ok(principal) => panic!("token accepted: {principal:?}"),
        Err(error) => error.0,
    }
}

fn assert_validation_error(result: Result<Verifier, Error>, expected_field: &str) {
    match result {
        Err(Error::Validation { field, message, .. }) => {
            assert_eq!(field.as_deref(), Some(expected_field), "{message}");
        }
        Err(other) => panic!("expected a validation error, got {other:?}"),
        Ok(_) => panic!("expected a validation error, got a verifier"),
    }
}

/// A JWK for a private key fixture, with `kid` (or none).
fn jwk(key: &EncodingKey, alg: Algorithm, kid: Option<&str>) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, alg).expect("jwk");
    jwk.common.key_id = kid.map(str::to_owned);
    jwk
}

fn key_set(keys: Vec<Jwk>) -> Value {
    serde_json::to_value(JwkSet { keys }).expect("jwks json")
}

/// A JWKS endpoint on 127.0.0.1 whose body can be swapped and whose
/// requests are counted.
struct JwksServer {
    url: String,
    body: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct JwksState {
    body: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

async fn serve_jwks(State(state): State<JwksState>) -> Json<Value> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let body = state.body.lock().expect("body lock").clone();
    Json(body)
}

impl JwksServer {
    async fn start(body: Value) -> JwksServer {
        let state = JwksState {
            body: Arc::new(Mutex::new(body)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new()
            .route("/.well-known/jwks.json", get(serve_jwks))
            .with_state(state.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("jwks server");
        });
        JwksServer {
            url: format!("http://{addr}/.well-known/jwks.json"),
            body: state.body,
            hits: state.hits,
        }
    }

    fn set(&self, body: Value) {
        *self.body.lock().expect("body lock") = body;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn settings(&self, min_refresh: Duration) -> JwtSettings {
        JwtSettings {
            jwks_url: Some(self.url.clone()),
            jwks_min_refresh: min_refresh,
            ..JwtSettings::default()
        }
    }
}

// ------------------------------------------------------------------ HS256

#[tokio::test]
async fn valid_hs256_token_yields_the_principal_of_its_claims() {
    let verifier = verifier(hs256_settings()).await;
    let token = mint_hs256(SECRET, &claims()).expect("minted");
    assert_eq!(assert_accepts(&verifier, &token).await, expected_principal());
}

#[tokio::test]
async fn token_without_email_yields_a_principal_without_email() {
    let verifier = verifier(hs256_settings()).await;
    let token = mint_hs256(
        SECRET,
        &TokenClaims {
            email: None,
            ..claims()
        },
    )
    .expect("minted");
    assert_eq!(assert_accepts(&verifier, &token).await.email, None);
}

#[tokio::test]
async fn expired_token_is_refused() {
    let verifier = verifier(hs256_settings()).await;
    assert_accepts(&verifier, &mint_hs256(SECRET, &claims()).expect("minted")).await;
    let expired = TokenClaims {
        exp: now() - 3600,
        ..claims()
    };
    let message = assert_refuses(&verifier, &mint_hs256(SECRET, &expired).expect("minted")).await;
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn token_without_exp_is_refused() {
    let verifier = verifier(hs256_settings()).await;
    assert_accepts(&verifier, &hs256(&claims_json())).await;
    let mut payload = claims_json();
    payload.as_object_mut().expect("object").remove("exp");
    let message = assert_refuses(&verifier, &hs256(&payload)).await;
    assert!(message.contains("`exp`"), "{message}");
}

#[tokio::test]
async fn token_without_sub_is_refused() {
    let verifier = verifier(hs256_settings()).await;
    assert_accepts(&verifier, &hs256(&claims_json())).await;
    let mut payload = claims_json();
    payload.as_object_mut().expect("object").remove("sub");
    let message = assert_refuses(&verifier, &hs256(&payload)).await;
    assert!(message.contains("`sub`"), "{message}");
}

#[tokio::test]
async fn token_without_org_id_is_refused() {
    let verifier = verifier(hs256_settings()).await;
    assert_accepts(&verifier, &hs256(&claims_json())).await;
    let mut payload = claims_json();
    payload.as_object_mut().expect("object").remove("org_id");
    let message = assert_refuses(&verifier, &hs256(&payload)).await;
    assert!(message.contains("`org_id`"), "{message}");
}

#[tokio::test]
async fn token_signed_with_another_secret_is_refused() {
    let verifier = verifier(hs256_settings()).await;
    assert_accepts(&verifier, &mint_hs256(SECRET, &claims()).expect("minted")).await;
    let forged = mint_hs256("another-secret-of-at-least-32-characters", &claims()).expect("minted");
    assert_refuses(&verifier, &forged).await;
}

#[tokio::test]
async fn token_with_a_modified_payload_is_refused() {
    let verifier = verifier(hs256_settings()).await;
    let token = mint_hs256(SECRET, &claims()).expect("minted");
    assert_accepts(&verifier, &token).await;
    let mut payload = claims_json();
    payload["org_role"] = json!("admin");
    assert_refuses(&verifier, &with_payload(&token, &payload)).await;
}

#[tokio::test]
async fn unsigned_token_with_alg_none_is_refused() {
    let verifier = verifier(hs256_settings()).await;
    assert_accepts(&verifier, &hs256(&claims_json())).await;
    let header = json!({"alg": "none", "typ": "JWT"});
    let unsigned = format!("{}.{}.", b64_json(&header), b64_json(&claims_json()));
    assert_refuses(&verifier, &unsigned).await;
    // Also with the signature of a valid token pasted on.
    let valid = hs256(&claims_json());
    let signature = valid.rsplit('.').next().expect("signature");
    assert_refuses(&verifier, &format!("{unsigned}{signature}")).await;
}

#[tokio::test]
async fn hs384_token_is_refused_when_only_hs256_is_configured() {
    let verifier = verifier(hs256_settings()).await;
    assert_accepts(&verifier, &hs256(&claims_json())).await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    assert_refuses(&verifier, &sign(Algorithm::HS384, &key, None, &claims_json())).await;
}

#[tokio::test]
async fn garbage_is_refused() {
    let verifier = verifier(hs256_settings()).await;
    assert_accepts(&verifier, &hs256(&claims_json())).await;
    for token in ["", "abc", "a.b.c", "a.b", "....."] {
        assert_refuses(&verifier, token).await;
    }
}

// --------------------------------------------------------------- org_role

#[tokio::test]
async fn org_role_admin_is_parsed() {
    let verifier = verifier(hs256_settings()).await;
    let token = mint_hs256(
        SECRET,
        &TokenClaims {
            org_role: OrgRole::Admin,
            ..claims()
        },
    )
    .expect("minted");
    let principal = assert_accepts(&verifier, &token).await;
    assert_eq!(principal.org_role, OrgRole::Admin);
    assert!(principal.is_admin());
}

#[tokio::test]
async fn missing_org_role_means_member() {
    let verifier = verifier(hs256_settings()).await;
    let mut payload = claims_json();
    payload.as_object_mut().expect("object").remove("org_role");
    assert_eq!(
        assert_accepts(&verifier, &hs256(&payload)).await.org_role,
        OrgRole::Member
    );
}

#[tokio::test]
async fn unknown_org_role_is_refused() {
    let verifier = verifier(hs256_settings()).await;
    assert_accepts(&verifier, &hs256(&claims_json())).await;
    let mut payload = claims_json();
    payload["org_role"] = json!("owner");
    let message = assert_refuses(&verifier, &hs256(&payload)).await;
    assert!(message.contains("org_role"), "{message}");
}

// ------------------------------------------------------------ iss and aud

fn iss_aud_settings() -> JwtSettings {
    JwtSettings {
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..hs256_settings()
    }
}

fn with_iss_aud(iss: Option<&str>, aud: Option<&str>) -> TokenClaims {
    TokenClaims {
        iss: iss.map(str::to_owned),
        aud: aud.map(str::to_owned),
        ..claims()
    }
}

#[tokio::test]
async fn matching_issuer_and_audience_are_accepted_when_configured() {
    let verifier = verifier(iss_aud_settings()).await;
    let token = mint_hs256(SECRET, &with_iss_aud(Some(ISSUER), Some(AUDIENCE))).expect("minted");
    assert_eq!(assert_accepts(&verifier, &token).await, expected_principal());
}

#[tokio::test]
async fn wrong_or_missing_issuer_is_refused_when_configured() {
    let verifier = verifier(iss_aud_settings()).await;
    let good = mint_hs256(SECRET, &with_iss_aud(Some(ISSUER), Some(AUDIENCE))).expect("minted");
    assert_accepts(&verifier, &good).await;
    let wrong = mint_hs256(
        SECRET,
        &with_iss_aud(Some("https://evil.example"), Some(AUDIENCE)),
    )
    .expect("minted");
    let message = assert_refuses(&verifier, &wrong).await;
    assert!(message.contains("issuer"), "{message}");
    let missing = mint_hs256(SECRET, &with_iss_aud(None, Some(AUDIENCE))).expect("minted");
    assert_refuses(&verifier, &missing).await;
}

#[tokio::test]
async fn wrong_or_missing_audience_is_refused_when_configured() {
    let verifier = verifier(iss_aud_settings()).await;
    let good = mint_hs256(SECRET, &with_iss_aud(Some(ISSUER), Some(AUDIENCE))).expect("minted");
    assert_accepts(&verifier, &good).await;
    let wrong = mint_hs256(SECRET, &with_iss_aud(Some(ISSUER), Some("other-app"))).expect("minted");
    let message = assert_refuses(&verifier, &wrong).await;
    assert!(message.contains("audience"), "{message}");
    let missing = mint_hs256(SECRET, &with_iss_aud(Some(ISSUER), None)).expect("minted");
    assert_refuses(&verifier, &missing).await;
}

#[tokio::test]
async fn audience_list_containing_the_configured_audience_is_accepted() {
    let verifier = verifier(iss_aud_settings()).await;
    let mut payload = serde_json::to_value(with_iss_aud(Some(ISSUER), None)).expect("json");
    payload["aud"] = json!(["other-app", AUDIENCE]);
    assert_accepts(&verifier, &hs256(&payload)).await;
}

#[tokio::test]
async fn issuer_and_audience_are_ignored_when_not_configured() {
    let verifier = verifier(hs256_settings()).await;
    let token = mint_hs256(
        SECRET,
        &with_iss_aud(Some("https://anyone.example"), Some("anything")),
    )
    .expect("minted");
    assert_eq!(assert_accepts(&verifier, &token).await, expected_principal());
}

// ------------------------------------------------------------- PEM keys

#[tokio::test]
async fn rs256_token_verifies_against_the_rsa_public_key_file() {
    let verifier = verifier(pem_settings("rsa_a_public.pem")).await;
    let token = sign(Algorithm::RS256, &rsa_key("rsa_a"), None, &claims());
    assert_eq!(assert_accepts(&verifier, &token).await, expected_principal());
    // A kid in the header does not matter to a single PEM key.
    let token = sign(Algorithm::RS384, &rsa_key("rsa_a"), Some("whatever"), &claims());
    assert_accepts(&verifier, &token).await;
}

#[tokio::test]
async fn tampered_or_foreign_rs256_token_is_refused() {
    let verifier = verifier(pem_settings("rsa_a_public.pem")).await;
    let token = sign(Algorithm::RS256, &rsa_key("rsa_a"), None, &claims());
    assert_accepts(&verifier, &token).await;
    let mut payload = claims_json();
    payload["org_id"] = json!("org_02");
    assert_refuses(&verifier, &with_payload(&token, &payload)).await;
    let foreign = sign(Algorithm::RS256, &rsa_key("rsa_b"), None, &claims());
    assert_refuses(&verifier, &foreign).await;
}

#[tokio::test]
async fn es256_token_verifies_against_the_p256_public_key_file() {
    let verifier = verifier(pem_settings("ec_p256_public.pem")).await;
    let token = sign(Algorithm::ES256, &ec_key("ec_p256"), None, &claims());
    assert_eq!(assert_accepts(&verifier, &token).await, expected_principal());
}

#[tokio::test]
async fn tampered_es256_token_is_refused() {
    let verifier = verifier(pem_settings("ec_p256_public.pem")).await;
    let token = sign(Algorithm::ES256, &ec_key("ec_p256"), None, &claims());
    assert_accepts(&verifier, &token).await;
    let mut payload = claims_json();
    payload["sub"] = json!("user_02");
    assert_refuses(&verifier, &with_payload(&token, &payload)).await;
}

#[tokio::test]
async fn es384_token_verifies_against_the_p384_key_and_only_that_algorithm() {
    let verifier = verifier(pem_settings("ec_p384_public.pem")).await;
    let token = sign(Algorithm::ES384, &ec_key("ec_p384"), None, &claims());
    assert_accepts(&verifier, &token).await;
    let es256 = sign(Algorithm::ES256, &ec_key("ec_p256"), None, &claims());
    assert_refuses(&verifier, &es256).await;
}

#[tokio::test]
async fn rsa_key_file_does_not_accept_ec_or_hs256_tokens() {
    let verifier = verifier(pem_settings("rsa_a_public.pem")).await;
    assert_accepts(
        &verifier,
        &sign(Algorithm::RS256, &rsa_key("rsa_a"), None, &claims()),
    )
    .await;
    assert_refuses(
        &verifier,
        &sign(Algorithm::ES256, &ec_key("ec_p256"), None, &claims()),
    )
    .await;
    assert_refuses(&verifier, &mint_hs256(SECRET, &claims()).expect("minted")).await;
}

/// The classic confusion: the attacker knows the public key and uses its PEM
/// text as an HMAC secret.
fn hs256_signed_with_rsa_public_pem(kid: Option<&str>) -> String {
    let secret = fixture_bytes("rsa_a_public.pem");
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&secret),
        kid,
        &claims(),
    )
}

#[tokio::test]
async fn hs256_token_signed_with_the_rsa_public_pem_is_refused_with_a_pem_key() {
    let verifier = verifier(pem_settings("rsa_a_public.pem")).await;
    assert_accepts(
        &verifier,
        &sign(Algorithm::RS256, &rsa_key("rsa_a"), None, &claims()),
    )
    .await;
    let message = assert_refuses(&verifier, &hs256_signed_with_rsa_public_pem(None)).await;
    assert!(message.contains("algorithm"), "{message}");
}

#[tokio::test]
async fn hs256_token_signed_with_the_rsa_public_pem_is_refused_with_a_pem_key_and_a_secret() {
    let settings = JwtSettings {
        hs256_secret: Some(SECRET.into()),
        ..pem_settings("rsa_a_public.pem")
    };
    let verifier = verifier(settings).await;
    assert_accepts(
        &verifier,
        &sign(Algorithm::RS256, &rsa_key("rsa_a"), None, &claims()),
    )
    .await;
    assert_accepts(&verifier, &mint_hs256(SECRET, &claims()).expect("minted")).await;
    assert_refuses(&verifier, &hs256_signed_with_rsa_public_pem(None)).await;
}

#[tokio::test]
async fn unreadable_or_invalid_public_key_file_is_a_validation_error() {
    assert_validation_error(
        Verifier::new(pem_settings("does_not_exist.pem")).await,
        "jwt_public_key",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    let settings = JwtSettings {
        public_key_path: Some(garbage),
        ..JwtSettings::default()
    };
    assert_validation_error(Verifier::new(settings).await, "jwt_public_key");
    assert_validation_error(
        Verifier::new(pem_settings("rsa_a_private.pem")).await,
        "jwt_public_key",
    );
    // The valid file is accepted: the failures above are about the files.
    verifier(pem_settings("rsa_a_public.pem")).await;
}

#[tokio::test]
async fn settings_without_any_key_source_are_a_validation_error() {
    assert!(matches!(
        Verifier::new(JwtSettings::default()).await,
        Err(Error::Validation { .. })
    ));
    verifier(hs256_settings()).await;
}

#[tokio::test]
async fn settings_debug_output_hides_the_secret() {
    let text = format!("{:?}", hs256_settings());
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("hs256_secret"), "{text}");
}

// ------------------------------------------------------------------ JWKS

#[tokio::test]
async fn token_verifies_against_the_jwks_key_named_by_its_kid() {
    let server = JwksServer::start(key_set(vec![
        jwk(&rsa_key("rsa_a"), Algorithm::RS256, Some("a")),
        jwk(&ec_key("ec_p256"), Algorithm::ES256, Some("ec")),
    ]))
    .await;
    let verifier = verifier(server.settings(Duration::from_secs(60))).await;
    let rs = sign(Algorithm::RS256, &rsa_key("rsa_a"), Some("a"), &claims());
    assert_eq!(assert_accepts(&verifier, &rs).await, expected_principal());
    let es = sign(Algorithm::ES256, &ec_key("ec_p256"), Some("ec"), &claims());
    assert_accepts(&verifier, &es).await;
    // Key B's signature under kid "a" is refused, and so is kid "ec" with RS256.
    assert_refuses(
        &verifier,
        &sign(Algorithm::RS256, &rsa_key("rsa_b"), Some("a"), &claims()),
    )
    .await;
    assert_refuses(
        &verifier,
        &sign(Algorithm::RS256, &rsa_key("rsa_a"), Some("ec"), &claims()),
    )
    .await;
}

#[tokio::test]
async fn hs256_token_signed_with_the_rsa_public_pem_is_refused_with_a_jwks() {
    let server = JwksServer::start(key_set(vec![jwk(&rsa_key("rsa_a"), Algorithm::RS256, Some("a"))])).await;
    let verifier = verifier(server.settings(Duration::from_secs(60))).await;
    assert_accepts(
        &verifier,
        &sign(Algorithm::RS256, &rsa_key("rsa_a"), Some("a"), &claims()),
    )
    .await;
    assert_refuses(&verifier, &hs256_signed_with_rsa_public_pem(Some("a"))).await;
    assert_refuses(&verifier, &hs256_signed_with_rsa_public_pem(None)).await;
}

#[tokio::test]
async fn symmetric_keys_served_by_a_jwks_are_ignored() {
    let oct: Jwk = serde_json::from_value(json!({
        "kty": "oct",
        "kid": "shared",
        "alg": "HS256",
        "k": URL_SAFE_NO_PAD.encode("a-secret-leaked-through-the-jwks-endpoint"),
    }))
    .expect("oct jwk");
    let server = JwksServer::start(key_set(vec![
        oct,
        jwk(&rsa_key("rsa_a"), Algorithm::RS256, Some("a")),
    ]))
    .await;
    let verifier = verifier(server.settings(Duration::from_secs(60))).await;
    assert_accepts(
        &verifier,
        &sign(Algorithm::RS256, &rsa_key("rsa_a"), Some("a"), &claims()),
    )
    .await;
    let key = EncodingKey::from_secret(b"a-secret-leaked-through-the-jwks-endpoint");
    assert_refuses(
        &verifier,
        &sign(Algorithm::HS256, &key, Some("shared"), &claims()),
    )
    .await;
}

#[tokio::test]
async fn hs256_secret_and_jwks_can_be_configured_together() {
    let server = JwksServer::start(key_set(vec![jwk(&rsa_key("rsa_a"), Algorithm::RS256, Some("a"))])).await;
    let settings = JwtSettings {
        hs256_secret: Some(SECRET.into()),
        ..server.settings(Duration::from_secs(60))
    };
    let verifier = verifier(settings).await;
    assert_accepts(&verifier, &mint_hs256(SECRET, &claims()).expect("minted")).await;
    assert_accepts(
        &verifier,
        &sign(Algorithm::RS256, &rsa_key("rsa_a"), Some("a"), &claims()),
    )
    .await;
    // HS256 tokens are checked against the secret only.
    assert_refuses(&verifier, &hs256_signed_with_rsa_public_pem(Some("a"))).await;
}

#[tokio::test]
async fn jwks_key_without_kid_verifies_tokens_without_kid_when_unambiguous() {
    let server = JwksServer::start(key_set(vec![jwk(&ec_key("ec_p256"), Algorithm::ES256, None)])).await;
    let verifier = verifier(server.settings(Duration::from_secs(60))).await;
    let token = sign(Algorithm::ES256, &ec_key("ec_p256"), None, &claims());
    assert_accepts(&verifier, &token).await;

    // Two RSA keys without kid: a token without kid cannot pick one.
    let ambiguous = JwksServer::start(key_set(vec![
        jwk(&rsa_key("rsa_a"), Algorithm::RS256, None),
        jwk(&rsa_key("rsa_b"), Algorithm::RS256, None),
    ]))
    .await;
    let second = Verifier::new(ambiguous.settings(Duration::from_secs(60)))
        .await
        .expect("verifier built");
    assert_refuses(
        &second,
        &sign(Algorithm::RS256, &rsa_key("rsa_a"), None, &claims()),
    )
    .await;
}

#[tokio::test]
async fn unreachable_jwks_at_startup_refuses_tokens_without_failing_construction() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let settings = JwtSettings {
        jwks_url: Some(format!("http://{addr}/jwks.json")),
        jwks_min_refresh: Duration::from_secs(60),
        ..JwtSettings::default()
    };
    let verifier = Verifier::new(settings)
        .await
        .expect("construction does not need the endpoint");
    let token = sign(Algorithm::RS256, &rsa_key("rsa_a"), Some("a"), &claims());
    let message = assert_refuses(&verifier, &token).await;
    assert!(message.contains("unavailable"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_rotation_is_picked_up_through_unknown_kids_with_rate_limited_refetches() {
    let min_refresh = Duration::from_millis(1500);
    let past_interval = min_refresh + Duration::from_millis(300);
    let key_a = jwk(&rsa_key("rsa_a"), Algorithm::RS256, Some("a"));
    let key_b = jwk(&rsa_key("rsa_b"), Algorithm::RS256, Some("b"));
    let key_c = jwk(&ec_key("ec_p256"), Algorithm::ES256, Some("c"));
    let server = JwksServer::start(key_set(vec![key_a.clone()])).await;
    let verifier = Arc::new(verifier(server.settings(min_refresh)).await);
    assert_eq!(server.hits(), 1, "the set is fetched once at construction");

    // Key A verifies; known keys cause no fetch beyond the first.
    let token_a = sign(Algorithm::RS256, &rsa_key("rsa_a"), Some("a"), &claims());
    assert_accepts(&verifier, &token_a).await;
    assert_accepts(&verifier, &token_a).await;
    assert_eq!(server.hits(), 1);

    // Rotation to A+B: kid B is unknown, so the set is fetched again.
    server.set(key_set(vec![key_a.clone(), key_b.clone()]));
    let token_b = sign(Algorithm::RS256, &rsa_key("rsa_b"), Some("b"), &claims());
    assert_eq!(assert_accepts(&verifier, &token_b).await, expected_principal());
    assert_eq!(server.hits(), 2);
    assert_accepts(&verifier, &token_a).await;
    assert_eq!(server.hits(), 2);

    // After the interval, a concurrent burst of unknown kid C causes exactly
    // one refetch, and further unknown kids within the interval none.
    tokio::time::sleep(past_interval).await;
    let token_c = sign(Algorithm::ES256, &ec_key("ec_p256"), Some("c"), &claims());
    let burst: Vec<_> = (0..32)
        .map(|_| {
            let verifier = Arc::clone(&verifier);
            let token = token_c.clone();
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in burst {
        assert!(task.await.expect("task").is_err());
    }
    assert_eq!(server.hits(), 3);

    // C appears, but within the interval it is not fetched.
    server.set(key_set(vec![key_a, key_b, key_c]));
    let message = assert_refuses(&verifier, &token_c).await;
    assert!(message.contains("unknown"), "{message}");
    assert_eq!(server.hits(), 3);

    // Once the interval has passed, the unknown kid triggers a refetch again.
    tokio::time::sleep(past_interval).await;
    assert_accepts(&verifier, &token_c).await;
    assert_eq!(server.hits(), 4);
    assert_accepts(&verifier, &token_b).await;
    assert_eq!(server.hits(), 4);
}

#[tokio::test]
async fn keys_removed_from_the_jwks_stop_verifying_after_a_refetch() {
    let key_a = jwk(&rsa_key("rsa_a"), Algorithm::RS256, Some("a"));
    let key_b = jwk(&rsa_key("rsa_b"), Algorithm::RS256, Some("b"));
    let server = JwksServer::start(key_set(vec![key_a])).await;
    let verifier = verifier(server.settings(Duration::ZERO)).await;
    let token_a = sign(Algorithm::RS256, &rsa_key("rsa_a"), Some("a"), &claims());
    assert_accepts(&verifier, &token_a).await;
    // Rotation to B only; the unknown kid B refetches and A is gone.
    server.set(key_set(vec![key_b]));
    assert_accepts(
        &verifier,
        &sign(Algorithm::RS256, &rsa_key("rsa_b"), Some("b"), &claims()),
    )
    .await;
    assert_refuses(&verifier, &token_a).await;
}
