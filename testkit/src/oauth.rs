//! A real OAuth 2.0 authorization server for tests, on 127.0.0.1 port 0:
//! the authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636) and
//! the refresh-token grant with rotation, over HTTP as any client sees it.
//!
//! - `GET /authorize` checks `response_type=code`, the client id, a
//!   `code_challenge` with `code_challenge_method=S256`, then answers 302 to
//!   the `redirect_uri` with a single-use `code` and the `state` (or, when
//!   told to deny, `error=access_denied`). Tests follow that redirect
//!   themselves, as a browser would.
//! - `POST /token` authenticates the client (HTTP Basic or the form body),
//!   and for `authorization_code` checks the code (unused, unexpired, for
//!   this client), the `redirect_uri` (the one of the authorization) and the
//!   `code_verifier` (its S256 must equal the challenge); for
//!   `refresh_token` it checks the token is live, spends it and issues a new
//!   one (rotation: a spent or revoked refresh token is `invalid_grant`).
//!   Errors are RFC 6749 §5.2 JSON bodies.
//! - `GET /resource` answers 200 to a live bearer access token and 401 to
//!   an expired or revoked one, so a test can see a token work.
//!
//! The test can count token calls, expire access tokens, revoke refresh
//! tokens, deny the next consent and add fields to token responses (as
//! Salesforce's `instance_url`). SHA-256 and base64 are written out here:
//! the test kit has no crypto dependency, and the server's check is then
//! independent of the client's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use reqwest::Url;
use serde_json::{Map, Value, json};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};

use crate::http1::{Request, read_request, write_response};

/// One issued authorization code.
#[derive(Debug, Clone)]
struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    used: bool,
}

#[derive(Debug, Default)]
struct State {
    codes: HashMap<String, Grant>,
    /// Live refresh tokens and the scope they carry.
    refresh_tokens: HashMap<String, String>,
    /// Refresh tokens that were spent by a rotation.
    spent: Vec<String>,
    /// Live access tokens.
    access_tokens: Vec<String>,
    /// When each access token expires (its `expires_in` from issue), which
    /// counts once `enforce_expiry` is set.
    expires: HashMap<String, std::time::Instant>,
    enforce_expiry: bool,
    /// Refresh-token grants answered `invalid_grant`.
    refused_refreshes: usize,
    /// Every access and refresh token ever issued.
    issued: Vec<String>,
    counter: u64,
    token_calls: usize,
    authorize_calls: Vec<Map<String, Value>>,
    token_requests: Vec<Map<String, Value>>,
    deny_next: bool,
    expires_in: u64,
    rotate: bool,
    extra_fields: Map<String, Value>,
}

/// A running authorization server; stops when dropped.
pub struct AuthServer {
    pub addr: SocketAddr,
    pub client_id: String,
    pub client_secret: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AuthServer {
    /// Starts a server knowing one client. Access tokens last an hour and
    /// refresh tokens rotate, until told otherwise.
    pub async fn start(client_id: &str, client_secret: &str) -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            expires_in: 3600,
            rotate: true,
            ..State::default()
        }));
        let shared = Shared {
            state: state.clone(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move { shared.connection(stream).await });
            }
        });
        AuthServer {
            addr,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            state,
            task,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `http://127.0.0.1:<port>/authorize`.
    pub fn auth_url(&self) -> String {
        format!("http://{}/authorize", self.addr)
    }

    /// `http://127.0.0.1:<port>/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// `http://127.0.0.1:<port>/resource`.
    pub fn resource_url(&self) -> String {
        format!("http://{}/resource", self.addr)
    }

    /// How many requests reached `/token`, whatever their outcome.
    pub fn token_calls(&self) -> usize {
        self.state().token_calls
    }

    /// The query parameters of every `/authorize` request, in order.
    pub fn authorize_requests(&self) -> Vec<Map<String, Value>> {
        self.state().authorize_calls.clone()
    }

    /// The form parameters of every `/token` request, in order (client
    /// secrets included: the test's own).
    pub fn token_requests(&self) -> Vec<Map<String, Value>> {
        self.state().token_requests.clone()
    }

    /// The next `/authorize` answers `error=access_denied`, as a user who
    /// declines consent.
    pub fn deny_next_authorization(&self) {
        self.state().deny_next = true;
    }

    /// Issued access tokens last `seconds` (`expires_in`).
    pub fn set_expires_in(&self, seconds: u64) {
        self.state().expires_in = seconds;
    }

    /// Whether a refresh issues a new refresh token and spends the old one
    /// (default true) or keeps the old one live.
    pub fn set_rotation(&self, rotate: bool) {
        self.state().rotate = rotate;
    }

    /// Adds `name: value` to every token response.
    pub fn add_token_field(&self, name: &str, value: Value) {
        self.state().extra_fields.insert(name.to_owned(), value);
    }

    /// Every access token issued so far stops working (`/resource` 401).
    pub fn expire_access_tokens(&self) {
        self.state().access_tokens.clear();
    }

    /// Revokes one refresh token: using it is then `invalid_grant`.
    pub fn revoke(&self, refresh_token: &str) {
        self.state().refresh_tokens.remove(refresh_token);
    }

    /// Revokes every refresh and access token.
    pub fn revoke_all(&self) {
        let mut state = self.state();
        state.refresh_tokens.clear();
        state.access_tokens.clear();
    }

    /// Access tokens stop working once their `expires_in` has passed, as a
    /// provider's do (by default they work until expired by the test).
    pub fn enforce_expiry(&self) {
        self.state().enforce_expiry = true;
    }

    /// How many refresh-token grants were answered `invalid_grant`.
    pub fn refused_refreshes(&self) -> usize {
        self.state().refused_refreshes
    }

    /// Tokens of a grant the user made earlier, without the HTTP flow: an
    /// access token, a refresh token and `expires_in`, as a token response.
    pub fn grant(&self, scope: &str) -> Map<String, Value> {
        let response = issue(&mut self.state(), scope, None);
        serde_json::from_slice(&response.body).expect("a token response")
    }

    /// Whether `token` is a live access token.
    pub fn access_token_is_live(&self, token: &str) -> bool {
        live(&self.state(), token)
    }

    /// A check of bearer tokens against this server's live access tokens,
    /// for a stand-in resource server that trusts it.
    pub fn token_check(&self) -> crate::warehouses::TokenCheck {
        let state = self.state.clone();
        std::sync::Arc::new(move |token: &str| live(&lock(&state), token))
    }

    /// Whether `token` is a live refresh token.
    pub fn refresh_token_is_live(&self, token: &str) -> bool {
        self.state().refresh_tokens.contains_key(token)
    }

    /// Every access and refresh token issued so far, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    /// The refresh tokens spent by rotations, oldest first.
    pub fn spent_refresh_tokens(&self) -> Vec<String> {
        self.state().spent.clone()
    }
}

/// One response: status, headers, body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn json(status: u16, body: Value) -> Response {
        Response {
            status,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Cache-Control".into(), "no-store".into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }

    /// An RFC 6749 §5.2 error.
    fn error(status: u16, error: &str, description: &str) -> Response {
        Response::json(status, json!({"error": error, "error_description": description}))
    }

    fn redirect(location: &str) -> Response {
        Response {
            status: 302,
            headers: vec![("Location".into(), location.to_owned())],
            body: Vec::new(),
        }
    }
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    client_id: String,
    client_secret: String,
}

impl Shared {
    async fn connection(&self, stream: TcpStream) {
        let mut stream = BufReader::new(stream);
        while let Some(request) = read_request(&mut stream).await {
            let response = self.handle(&request);
            let writer = stream.get_mut();
            if !write_response(writer, response.status, &response.headers, &response.body).await {
                return;
            }
        }
    }

    fn handle(&self, request: &Request) -> Response {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", "/authorize") => self.authorize(&form(request.query.as_bytes())),
            ("POST", "/token") => self.token(request),
            ("GET", "/resource") => self.resource(request),
            _ => Response::error(404, "not_found", "no such endpoint"),
        }
    }

    fn authorize(&self, params: &Map<String, Value>) -> Response {
        let mut state = lock(&self.state);
        state.authorize_calls.push(params.clone());
        let get = |name: &str| params.get(name).and_then(Value::as_str).unwrap_or("");
        // Without a valid client and redirect URI the server must not
        // redirect (RFC 6749 §4.1.2.1): it answers the browser itself.
        if get("client_id") != self.client_id {
            return Response::error(400, "invalid_client", "unknown client_id");
        }
        let Ok(mut redirect) = Url::parse(get("redirect_uri")) else {
            return Response::error(400, "invalid_request", "redirect_uri is missing or not a URL");
        };
        let fail = |mut redirect: Url, error: &str, description: &str| {
            {
                let mut query = redirect.query_pairs_mut();
                query.append_pair("error", error);
                query.append_pair("error_description", description);
                if let Some(s) = params.get("state").and_then(Value::as_str) {
                    query.append_pair("state", s);
                }
            }
            Response::redirect(redirect.as_str())
        };
        if get("response_type") != "code" {
            return fail(
                redirect,
                "unsupported_response_type",
                "response_type must be code",
            );
        }
        if get("code_challenge").is_empty() || get("code_challenge_method") != "S256" {
            return fail(
                redirect,
                "invalid_request",
                "PKCE with code_challenge_method=S256 is required",
            );
        }
        if std::mem::take(&mut state.deny_next) {
            return fail(redirect, "access_denied", "The user denied access");
        }
        state.counter += 1;
        let code = format!("code_{}_{}", state.counter, crate::ulid());
        state.codes.insert(
            code.clone(),
            Grant {
                client_id: get("client_id").to_owned(),
                redirect_uri: get("redirect_uri").to_owned(),
                challenge: get("code_challenge").to_owned(),
                scope: get("scope").to_owned(),
                used: false,
            },
        );
        {
            let mut query = redirect.query_pairs_mut();
            query.append_pair("code", &code);
            if let Some(s) = params.get("state").and_then(Value::as_str) {
                query.append_pair("state", s);
            }
        }
        Response::redirect(redirect.as_str())
    }

    /// The client's credentials: HTTP Basic (RFC 6749 §2.3.1, form-encoded
    /// then base64) or the form body.
    fn client_of(&self, request: &Request, params: &Map<String, Value>) -> Option<(String, String)> {
        if let Some(basic) = request
            .headers
            .get("authorization")
            .and_then(|value| value.strip_prefix("Basic "))
        {
            let decoded = String::from_utf8(base64_decode(basic.trim())?).ok()?;
            let (id, secret) = decoded.split_once(':')?;
            let id = form(format!("a={id}").as_bytes()).get("a")?.as_str()?.to_owned();
            let secret = form(format!("a={secret}").as_bytes())
                .get("a")?
                .as_str()?
                .to_owned();
            return Some((id, secret));
        }
        let id = params.get("client_id")?.as_str()?.to_owned();
        let secret = params.get("client_secret")?.as_str()?.to_owned();
        Some((id, secret))
    }

    fn token(&self, request: &Request) -> Response {
        let params = form(&request.body);
        let mut state = lock(&self.state);
        state.token_calls += 1;
        state.token_requests.push(params.clone());
        match self.client_of(request, &params) {
            Some((id, secret)) if id == self.client_id && secret == self.client_secret => {}
            _ => return Response::error(401, "invalid_client", "client authentication failed"),
        }
        let get = |name: &str| params.get(name).and_then(Value::as_str).unwrap_or("");
        match get("grant_type") {
            "authorization_code" => {
                let Some(grant) = state.codes.get_mut(get("code")) else {
                    return Response::error(400, "invalid_grant", "unknown authorization code");
                };
                if grant.used {
                    return Response::error(400, "invalid_grant", "the authorization code was already used");
                }
                grant.used = true;
                let grant = grant.clone();
                if grant.client_id != self.client_id {
                    return Response::error(400, "invalid_grant", "the code was issued to another client");
                }
                if grant.redirect_uri != get("redirect_uri") {
                    return Response::error(
                        400,
                        "invalid_grant",
                        "redirect_uri differs from the authorization's",
                    );
                }
                let verifier = get("code_verifier");
                if verifier.len() < 43 || verifier.len() > 128 {
                    return Response::error(400, "invalid_grant", "code_verifier is missing or malformed");
                }
                if base64url(&sha256(verifier.as_bytes())) != grant.challenge {
                    return Response::error(400, "invalid_grant", "PKCE verification failed");
                }
                issue(&mut state, &grant.scope, None)
            }
            "refresh_token" => {
                let presented = get("refresh_token").to_owned();
                let Some(scope) = state.refresh_tokens.get(&presented).cloned() else {
                    state.refused_refreshes += 1;
                    return Response::error(
                        400,
                        "invalid_grant",
                        "the refresh token is invalid, spent or revoked",
                    );
                };
                issue(&mut state, &scope, Some(presented))
            }
            _ => Response::error(400, "unsupported_grant_type", "grant_type is not supported"),
        }
    }

    fn resource(&self, request: &Request) -> Response {
        let state = lock(&self.state);
        let token = request
            .headers
            .get("authorization")
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        if live(&state, token) {
            Response::json(200, json!({"ok": true}))
        } else {
            Response::error(401, "invalid_token", "the access token is expired or revoked")
        }
    }
}

/// Whether `token` is a live access token: issued, not expired by the test,
/// and (when expiry is enforced) within its `expires_in`.
fn live(state: &State, token: &str) -> bool {
    state.access_tokens.iter().any(|t| t == token)
        && (!state.enforce_expiry
            || state
                .expires
                .get(token)
                .is_some_and(|at| std::time::Instant::now() < *at))
}

/// Issues an access token (and a refresh token: a new one on a code
/// exchange or a rotating refresh, spending `refreshed`).
fn issue(state: &mut State, scope: &str, refreshed: Option<String>) -> Response {
    state.counter += 1;
    let n = state.counter;
    let access = format!("at_{n}_{}", crate::ulid());
    state.access_tokens.push(access.clone());
    let lifetime = std::time::Duration::from_secs(state.expires_in);
    state
        .expires
        .insert(access.clone(), std::time::Instant::now() + lifetime);
    state.issued.push(access.clone());
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": state.expires_in,
        "scope": scope,
    });
    let new_refresh = match &refreshed {
        Some(_) if !state.rotate => None,
        Some(old) => {
            state.refresh_tokens.remove(old);
            state.spent.push(old.clone());
            Some(format!("rt_{n}_{}", crate::ulid()))
        }
        None => Some(format!("rt_{n}_{}", crate::ulid())),
    };
    if let Some(refresh) = new_refresh {
        state.refresh_tokens.insert(refresh.clone(), scope.to_owned());
        state.issued.push(refresh.clone());
        body["refresh_token"] = json!(refresh);
    }
    if let Some(object) = body.as_object_mut() {
        object.extend(state.extra_fields.clone());
    }
    Response::json(200, body)
}

/// `application/x-www-form-urlencoded` pairs (the last of a repeated name).
pub fn form(bytes: &[u8]) -> Map<String, Value> {
    let text = String::from_utf8_lossy(bytes);
    let url = Url::parse(&format!("http://form.invalid/?{text}")).expect("a form as a query");
    url.query_pairs()
        .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
        .collect()
}

/// SHA-256 (FIPS 180-4).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (slot, value) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *slot = slot.wrapping_add(value);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64url without padding (RFC 4648 §5), as PKCE uses it.
pub fn base64url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let c = ALPHABET[((n >> (18 - 6 * i)) & 63) as usize];
            out.push(match c {
                b'+' => '-',
                b'/' => '_',
                c => c as char,
            });
        }
    }
    out
}

/// Decodes standard base64 (padding optional); None when malformed.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let value = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vectors() {
        let hex = |bytes: [u8; 32]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn the_pkce_challenge_of_the_rfc_7636_example_verifier_is_the_rfc_s() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            base64url(&sha256(verifier.as_bytes())),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn base64_decodes_what_basic_auth_sends() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").as_deref(), Some(&b"user:pass"[..]));
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("*"), None);
    }
}
