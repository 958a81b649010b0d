//! How each OAuth connector type is authorized: one declaration per type
//! ([`OAuthProvider`]) with the vendor's real authorization and token
//! endpoints, the scopes the connector needs, how the client authenticates
//! at the token endpoint, the extra parameters the vendor needs to hand out
//! a refresh token, and the token response fields recorded in the
//! connector's config. The API's `FERRY_OAUTH_<PROVIDER>_*` settings
//! override the endpoints and scopes.
//!
//! Endpoints and scopes may name a public config field in braces
//! (`https://{account}.snowflakecomputing.com/...`): it is replaced by the
//! value the caller configured, which validation has already limited to a
//! [`super::FieldKind::Name`] or URL, so it cannot leave its URL component.

use serde_json::{Map, Value};

use super::TypeId;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic base64(client_id:client_secret)` (RFC 6749 §2.3.1).
    Basic,
    /// `client_id` and `client_secret` in the form body.
    RequestBody,
}

/// The OAuth 2.0 authorization-code flow of one connector type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthProvider {
    pub type_id: TypeId,
    /// The `<PROVIDER>` of the `FERRY_OAUTH_<PROVIDER>_*` variables.
    pub env: &'static str,
    /// The vendor's authorization endpoint (may name config fields).
    pub auth_url: &'static str,
    /// The vendor's token endpoint (may name config fields).
    pub token_url: &'static str,
    /// `(auth_url, token_url)` used instead when the config's `sandbox` is true.
    pub sandbox_urls: Option<(&'static str, &'static str)>,
    /// Space-separated scopes the connector needs (may name config fields).
    pub scopes: &'static str,
    pub client_auth: ClientAuth,
    /// Extra query parameters of the authorization request (for example
    /// Google's `access_type=offline`, without which it issues no refresh
    /// token).
    pub auth_params: &'static [(&'static str, &'static str)],
    /// `(token response field, config field)`: values the token response
    /// carries that the connector's config records (Salesforce's
    /// `instance_url`, Stripe's `stripe_user_id`).
    pub token_fields: &'static [(&'static str, &'static str)],
}

const GOOGLE_AUTH: &str = "https://accounts.google.com/o/oauth2/v2/auth";
const GOOGLE_TOKEN: &str = "https://oauth2.googleapis.com/token";
/// Google issues a refresh token only for offline access, and again on a
/// later grant only with a consent prompt.
const GOOGLE_PARAMS: &[(&str, &str)] = &[("access_type", "offline"), ("prompt", "consent")];

static PROVIDERS: [OAuthProvider; 7] = [
    OAuthProvider {
        type_id: TypeId::Bigquery,
        env: "BIGQUERY",
        auth_url: GOOGLE_AUTH,
        token_url: GOOGLE_TOKEN,
        sandbox_urls: None,
        scopes: "https://www.googleapis.com/auth/bigquery.readonly",
        client_auth: ClientAuth::RequestBody,
        auth_params: GOOGLE_PARAMS,
        token_fields: &[],
    },
    OAuthProvider {
        type_id: TypeId::Snowflake,
        env: "SNOWFLAKE",
        auth_url: "https://{account}.snowflakecomputing.com/oauth/authorize",
        token_url: "https://{account}.snowflakecomputing.com/oauth/token-request",
        sandbox_urls: None,
        // `refresh_token` asks Snowflake's OAuth integration for a refresh token.
        scopes: "refresh_token",
        client_auth: ClientAuth::Basic,
        auth_params: &[],
        token_fields: &[],
    },
    OAuthProvider {
        type_id: TypeId::Salesforce,
        env: "SALESFORCE",
        auth_url: "https://login.salesforce.com/services/oauth2/authorize",
        token_url: "https://login.salesforce.com/services/oauth2/token",
        sandbox_urls: Some((
            "https://test.salesforce.com/services/oauth2/authorize",
            "https://test.salesforce.com/services/oauth2/token",
        )),
        scopes: "api refresh_token",
        client_auth: ClientAuth::RequestBody,
        auth_params: &[],
        token_fields: &[("instance_url", "instance_url")],
    },
    OAuthProvider {
        type_id: TypeId::Hubspot,
        env: "HUBSPOT",
        auth_url: "https://app.hubspot.com/oauth/authorize",
        token_url: "https://api.hubapi.com/oauth/v1/token",
        sandbox_urls: None,
        scopes: "oauth crm.objects.contacts.read crm.objects.companies.read crm.objects.deals.read",
        client_auth: ClientAuth::RequestBody,
        auth_params: &[],
        token_fields: &[],
    },
    OAuthProvider {
        type_id: TypeId::Stripe,
        env: "STRIPE",
        auth_url: "https://connect.stripe.com/oauth/authorize",
        token_url: "https://connect.stripe.com/oauth/token",
        sandbox_urls: None,
        scopes: "read_only",
        client_auth: ClientAuth::RequestBody,
        auth_params: &[],
        token_fields: &[("stripe_user_id", "account_id")],
    },
    OAuthProvider {
        type_id: TypeId::GoogleAnalytics,
        env: "GOOGLE_ANALYTICS",
        auth_url: GOOGLE_AUTH,
        token_url: GOOGLE_TOKEN,
        sandbox_urls: None,
        scopes: "https://www.googleapis.com/auth/analytics.readonly",
        client_auth: ClientAuth::RequestBody,
        auth_params: GOOGLE_PARAMS,
        token_fields: &[],
    },
    OAuthProvider {
        type_id: TypeId::Azure,
        env: "AZURE",
        auth_url: "https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/authorize",
        token_url: "https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token",
        sandbox_urls: None,
        // `.default` asks for the permissions the app registration holds on
        // the resource; `offline_access` for a refresh token.
        scopes: "{resource}.default offline_access",
        client_auth: ClientAuth::RequestBody,
        auth_params: &[],
        token_fields: &[],
    },
];

/// Every OAuth provider, one per OAuth connector type.
pub fn providers() -> &'static [OAuthProvider] {
    &PROVIDERS
}

/// The OAuth flow of `type_id`, None for a type that is not OAuth.
pub fn provider(type_id: TypeId) -> Option<&'static OAuthProvider> {
    PROVIDERS.iter().find(|p| p.type_id == type_id)
}

impl OAuthProvider {
    /// The default `(auth_url, token_url)` for this config (the sandbox
    /// endpoints when the type has them and `sandbox` is true).
    pub fn default_urls(&self, config: &Map<String, Value>) -> (&'static str, &'static str) {
        match self.sandbox_urls {
            Some(urls) if config.get("sandbox") == Some(&Value::Bool(true)) => urls,
            _ => (self.auth_url, self.token_url),
        }
    }
}

/// `template` with each `{field}` replaced by the config's value of that
/// field (strings as they are, other values as JSON). A field the config
/// does not hold is an error naming it, so a URL is never sent with a
/// placeholder left in it.
pub fn fill(template: &str, config: &Map<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed placeholder in `{template}`"));
        };
        let name = &after[..end];
        match config.get(name) {
            Some(Value::String(text)) => out.push_str(text),
            Some(value) if !value.is_null() => out.push_str(&value.to_string()),
            _ => return Err(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::connectors::{AuthKind, registry};

    #[test]
    fn every_oauth_type_has_exactly_one_provider_and_no_other_type_has_one() {
        for t in registry() {
            let count = providers().iter().filter(|p| p.type_id == t.type_id).count();
            let expected = usize::from(t.auth_type == AuthKind::OAuth);
            assert_eq!(count, expected, "{}", t.type_id);
        }
    }

    #[test]
    fn every_placeholder_of_a_provider_names_a_field_of_its_type() {
        for p in providers() {
            let decl = p.type_id.decl();
            let mut config = Map::new();
            for field in decl.fields.iter() {
                config.insert(field.name.to_owned(), json!("x"));
            }
            for template in [p.auth_url, p.token_url, p.scopes] {
                fill(template, &config).unwrap_or_else(|field| panic!("{}: {field}", p.type_id));
            }
        }
    }

    #[test]
    fn placeholders_are_filled_from_the_config_and_a_missing_one_is_named() {
        let config = json!({"account": "xy12345.us-east-1"});
        let config = config.as_object().expect("object");
        assert_eq!(
            fill("https://{account}.snowflakecomputing.com/oauth/authorize", config).as_deref(),
            Ok("https://xy12345.us-east-1.snowflakecomputing.com/oauth/authorize")
        );
        assert_eq!(fill("https://{tenant_id}/x", config), Err("tenant_id".to_owned()));
        assert_eq!(fill("no placeholder", config).as_deref(), Ok("no placeholder"));
    }

    #[test]
    fn salesforce_sandboxes_authorize_against_test_salesforce() {
        let p = provider(TypeId::Salesforce).expect("salesforce");
        let sandbox = json!({"sandbox": true});
        assert!(
            p.default_urls(sandbox.as_object().expect("object"))
                .0
                .contains("test.salesforce.com")
        );
        assert!(p.default_urls(&Map::new()).0.contains("login.salesforce.com"));
    }
}
