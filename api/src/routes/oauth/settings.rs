//! The OAuth settings of the API role: the `FERRY_OAUTH_<PROVIDER>_*` flags
//! of every OAuth connector type, `FERRY_PUBLIC_URL`, `FERRY_APP_URL`,
//! `FERRY_OAUTH_REDIRECT_URIS` and the network policy of token requests,
//! and what they resolve to ([`OAuthSettings`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ferry_shared::config::Secret;
use ferry_shared::connectors::TypeId;
use ferry_shared::connectors::oauth::{self, OAuthProvider};
use url::Url;

/// How long an authorization may take between authorize and callback.
pub const STATE_TTL: Duration = Duration::from_secs(600);

/// How long a token request may take.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Declares [`OAuthArgs`]: five flags per provider, each with its
/// `FERRY_OAUTH_<PROVIDER>_*` variable, and [`OAuthArgs::client`].
macro_rules! oauth_args {
    ($( $type_id:ident, $env:literal, $flag:literal =>
        $id:ident, $secret:ident, $auth:ident, $token:ident, $scopes:ident; )*) => {
        /// The OAuth flags of the API role.
        #[derive(Debug, Clone, Default, clap::Args)]
        #[group(id = "oauth_config")]
        pub struct OAuthArgs {
            /// Ferry's externally reachable base URL: the redirect URI sent
            /// to providers is `{FERRY_PUBLIC_URL}/api/oauth/{provider}/callback`.
            /// Default: `http://` + FERRY_LISTEN.
            #[arg(long, env = "FERRY_PUBLIC_URL")]
            pub public_url: Option<Url>,

            /// Where the OAuth callback sends the browser at the end, with
            /// `uuid` and `status=success`, or `error` and `message`, and the
            /// caller's `state`. Default: `{FERRY_PUBLIC_URL}/connectors`.
            #[arg(long, env = "FERRY_APP_URL")]
            pub app_url: Option<Url>,

            /// Comma-separated redirect URIs a caller of
            /// `/api/oauth/{provider}/authorize` may ask for instead of
            /// Ferry's own callback (exact match).
            #[arg(long, env = "FERRY_OAUTH_REDIRECT_URIS", value_delimiter = ',')]
            pub oauth_redirect_uris: Vec<Url>,

            /// May OAuth token requests reach loopback and private
            /// addresses (the variable is the one the worker's connectors
            /// obey)? Default: true only when the API listens on a loopback
            /// address.
            #[arg(long, env = "FERRY_ALLOW_PRIVATE_NETWORKS")]
            pub oauth_allow_private_networks: Option<bool>,

            $(
                #[arg(long = concat!("oauth-", $flag, "-client-id"),
                      env = concat!("FERRY_OAUTH_", $env, "_CLIENT_ID"),
                      help = concat!("OAuth client id of ", $flag, " connectors (without it and the secret, authorize answers 400)."))]
                pub $id: Option<String>,

                #[arg(long = concat!("oauth-", $flag, "-client-secret"),
                      env = concat!("FERRY_OAUTH_", $env, "_CLIENT_SECRET"), hide_env_values = true,
                      help = concat!("OAuth client secret of ", $flag, " connectors."))]
                pub $secret: Option<Secret>,

                #[arg(long = concat!("oauth-", $flag, "-auth-url"),
                      env = concat!("FERRY_OAUTH_", $env, "_AUTH_URL"),
                      help = concat!("Authorization endpoint of ", $flag, " (default: the vendor's)."))]
                pub $auth: Option<String>,

                #[arg(long = concat!("oauth-", $flag, "-token-url"),
                      env = concat!("FERRY_OAUTH_", $env, "_TOKEN_URL"),
                      help = concat!("Token endpoint of ", $flag, " (default: the vendor's)."))]
                pub $token: Option<String>,

                #[arg(long = concat!("oauth-", $flag, "-scopes"),
                      env = concat!("FERRY_OAUTH_", $env, "_SCOPES"),
                      help = concat!("Space-separated scopes requested for ", $flag, " (default: what the connector needs)."))]
                pub $scopes: Option<String>,
            )*
        }

        impl OAuthArgs {
            /// The client settings of `type_id`'s provider.
            fn client(&self, type_id: TypeId) -> OAuthClient {
                match type_id {
                    $(TypeId::$type_id => OAuthClient {
                        client_id: self.$id.clone(),
                        client_secret: self.$secret.clone(),
                        auth_url: self.$auth.clone(),
                        token_url: self.$token.clone(),
                        scopes: self.$scopes.clone(),
                    },)*
                    _ => OAuthClient::default(),
                }
            }
        }
    };
}

oauth_args! {
    Bigquery, "BIGQUERY", "bigquery" =>
        bigquery_client_id, bigquery_client_secret, bigquery_auth_url, bigquery_token_url, bigquery_scopes;
    Snowflake, "SNOWFLAKE", "snowflake" =>
        snowflake_client_id, snowflake_client_secret, snowflake_auth_url, snowflake_token_url, snowflake_scopes;
    Salesforce, "SALESFORCE", "salesforce" =>
        salesforce_client_id, salesforce_client_secret, salesforce_auth_url, salesforce_token_url, salesforce_scopes;
    Hubspot, "HUBSPOT", "hubspot" =>
        hubspot_client_id, hubspot_client_secret, hubspot_auth_url, hubspot_token_url, hubspot_scopes;
    Stripe, "STRIPE", "stripe" =>
        stripe_client_id, stripe_client_secret, stripe_auth_url, stripe_token_url, stripe_scopes;
    GoogleAnalytics, "GOOGLE_ANALYTICS", "google-analytics" =>
        google_analytics_client_id, google_analytics_client_secret, google_analytics_auth_url,
        google_analytics_token_url, google_analytics_scopes;
    Azure, "AZURE", "azure" =>
        azure_client_id, azure_client_secret, azure_auth_url, azure_token_url, azure_scopes;
}

impl OAuthArgs {
    /// What these flags resolve to for an API listening on `listen`.
    pub fn settings(&self, listen: SocketAddr) -> OAuthSettings {
        let public_url = self
            .public_url
            .clone()
            .unwrap_or_else(|| default_public_url(listen));
        let mut settings = OAuthSettings::new(public_url)
            .with_redirect_uris(self.oauth_redirect_uris.iter().map(Url::to_string).collect())
            .with_private_networks(
                self.oauth_allow_private_networks
                    .unwrap_or_else(|| listen.ip().is_loopback()),
            );
        if let Some(app_url) = &self.app_url {
            settings = settings.with_app_url(app_url.clone());
        }
        for provider in oauth::providers() {
            settings = settings.with_client(provider.type_id, self.client(provider.type_id));
        }
        settings
    }
}

fn default_public_url(listen: SocketAddr) -> Url {
    Url::parse(&format!("http://{listen}")).unwrap_or_else(|_| fallback_url())
}

fn fallback_url() -> Url {
    Url::parse("http://127.0.0.1:8080").unwrap_or_else(|_| unreachable!("a fixed, valid URL"))
}

/// One provider's client: its credentials and the endpoint and scope
/// overrides (None: the declaration's defaults).
#[derive(Debug, Clone, Default)]
pub struct OAuthClient {
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub auth_url: Option<String>,
    pub token_url: Option<String>,
    pub scopes: Option<String>,
}

/// The resolved OAuth settings of an API process.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    public_url: Url,
    app_url: Option<Url>,
    redirect_uris: Vec<String>,
    allow_private_networks: bool,
    clients: HashMap<TypeId, OAuthClient>,
    state_ttl: Duration,
    http: reqwest::Client,
}

impl Default for OAuthSettings {
    /// Ferry on `http://127.0.0.1:8080`, no client configured, private
    /// networks allowed (as for an API on loopback).
    fn default() -> Self {
        OAuthSettings::new(fallback_url())
    }
}

impl OAuthSettings {
    /// Settings for a Ferry reachable at `public_url`, with no client
    /// configured and private networks allowed.
    pub fn new(public_url: Url) -> Self {
        OAuthSettings {
            public_url,
            app_url: None,
            redirect_uris: Vec::new(),
            allow_private_networks: true,
            clients: HashMap::new(),
            state_ttl: STATE_TTL,
            http: ferry_shared::network::token_client(true, TOKEN_REQUEST_TIMEOUT),
        }
    }

    /// Sets where the callback sends the browser at the end.
    pub fn with_app_url(mut self, app_url: Url) -> Self {
        self.app_url = Some(app_url);
        self
    }

    /// Sets the allow-list of custom redirect URIs.
    pub fn with_redirect_uris(mut self, uris: Vec<String>) -> Self {
        self.redirect_uris = uris;
        self
    }

    /// Sets whether token requests may reach loopback and private addresses.
    pub fn with_private_networks(mut self, allowed: bool) -> Self {
        self.allow_private_networks = allowed;
        self.http = ferry_shared::network::token_client(allowed, TOKEN_REQUEST_TIMEOUT);
        self
    }

    /// Sets the client of `type_id`'s provider.
    pub fn with_client(mut self, type_id: TypeId, client: OAuthClient) -> Self {
        self.clients.insert(type_id, client);
        self
    }

    /// Sets how long an authorization stays valid (default 10 minutes).
    pub fn with_state_ttl(mut self, ttl: Duration) -> Self {
        self.state_ttl = ttl;
        self
    }

    pub(super) fn state_ttl(&self) -> Duration {
        self.state_ttl
    }

    pub(super) fn allow_private_networks(&self) -> bool {
        self.allow_private_networks
    }

    /// The clients as the shared refresher takes them.
    pub(super) fn refresh_clients(&self) -> ferry_shared::oauth_refresh::OAuthClients {
        let mut clients = ferry_shared::oauth_refresh::OAuthClients::default()
            .with_private_networks(self.allow_private_networks);
        for (type_id, client) in &self.clients {
            if let (Some(id), Some(secret)) = (&client.client_id, &client.client_secret) {
                clients = clients.with_client(
                    *type_id,
                    ferry_shared::oauth_refresh::ClientCredentials {
                        client_id: id.clone(),
                        client_secret: secret.clone(),
                        token_url: client.token_url.clone(),
                    },
                );
            }
        }
        clients
    }

    pub(super) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `{public_url}/api/oauth/{type}/callback`.
    pub(super) fn callback_url(&self, provider: &OAuthProvider) -> String {
        format!(
            "{}/api/oauth/{}/callback",
            self.public_url.as_str().trim_end_matches('/'),
            provider.type_id
        )
    }

    /// Where the callback ends: `FERRY_APP_URL`, or
    /// `{public_url}/connectors`.
    pub(super) fn app_url(&self) -> Url {
        self.app_url.clone().unwrap_or_else(|| {
            let base = self.public_url.as_str().trim_end_matches('/');
            Url::parse(&format!("{base}/connectors")).unwrap_or_else(|_| self.public_url.clone())
        })
    }

    pub(super) fn redirect_allowed(&self, uri: &str) -> bool {
        Url::parse(uri).is_ok_and(|parsed| {
            self.redirect_uris
                .iter()
                .any(|allowed| *allowed == parsed.as_str())
        })
    }

    pub(super) fn client(&self, type_id: TypeId) -> Option<&OAuthClient> {
        self.clients.get(&type_id)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        oauth: OAuthArgs,
    }

    fn listen(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn every_provider_has_its_five_flags_and_they_resolve_to_its_client() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "ferry",
            "--oauth-google-analytics-client-id",
            "ga-id",
            "--oauth-google-analytics-client-secret",
            "ga-secret",
            "--oauth-google-analytics-token-url",
            "https://tokens.example/token",
            "--oauth-snowflake-scopes",
            "refresh_token session:role:ANALYST",
            "--public-url",
            "https://ferry.example/",
            "--oauth-redirect-uris",
            "https://app.example/a,https://app.example/b",
        ])
        .expect("parse");
        let settings = cli.oauth.settings(listen("0.0.0.0:8080"));
        let ga = settings.client(TypeId::GoogleAnalytics).expect("client");
        assert_eq!(ga.client_id.as_deref(), Some("ga-id"));
        assert_eq!(ga.client_secret.as_ref().map(Secret::expose), Some("ga-secret"));
        assert_eq!(ga.token_url.as_deref(), Some("https://tokens.example/token"));
        assert_eq!(ga.auth_url, None);
        let snowflake = settings.client(TypeId::Snowflake).expect("client");
        assert_eq!(
            snowflake.scopes.as_deref(),
            Some("refresh_token session:role:ANALYST")
        );
        assert_eq!(snowflake.client_id, None);
        let provider = oauth::provider(TypeId::GoogleAnalytics).expect("provider");
        assert_eq!(
            settings.callback_url(provider),
            "https://ferry.example/api/oauth/google_analytics/callback"
        );
        assert_eq!(settings.app_url().as_str(), "https://ferry.example/connectors");
        assert!(settings.redirect_allowed("https://app.example/b"));
        assert!(!settings.redirect_allowed("https://app.example/c"));
        assert!(!settings.allow_private_networks(), "not on loopback");
        let secret = format!("{:?}", cli.oauth);
        assert!(!secret.contains("ga-secret"), "{secret}");
    }

    #[test]
    fn defaults_follow_the_listen_address() {
        let cli = Cli::try_parse_from(["ferry"]).expect("parse");
        let settings = cli.oauth.settings(listen("127.0.0.1:9000"));
        assert!(settings.allow_private_networks());
        assert_eq!(settings.app_url().as_str(), "http://127.0.0.1:9000/connectors");
        let provider = oauth::provider(TypeId::Hubspot).expect("provider");
        assert_eq!(
            settings.callback_url(provider),
            "http://127.0.0.1:9000/api/oauth/hubspot/callback"
        );
    }
}
