//! Stripe: list endpoints (`GET /v1/<object>`), paged with `limit` and
//! `starting_after` (the last object's `id`) while `has_more`; the list's
//! filters from the step's `params`. With Stripe Connect OAuth the access
//! token acts as the connected account's key, so no `Stripe-Account`
//! header is needed. The connection test reads `GET /v1/balance`.

use async_trait::async_trait;
use ferry_shared::domain::ErrorKind;
use ferry_shared::steps::saas_extract::{SaasExtract, Vendor};
use reqwest::{Method, Url};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Api, Pages, Record, records_and, unexpected};
use crate::connectors::errors::DriverError;
use crate::connectors::oauth_http::vendor_url;
use crate::connectors::{StepRequest, TestDetails};
use crate::extract::ExtractError;

pub(crate) const HOST: &str = "api.stripe.com";

pub(super) fn base_url() -> Result<Url, DriverError> {
    vendor_url(HOST, "/")
}

pub(super) async fn test(api: &Api, cancel: &CancellationToken) -> Result<TestDetails, DriverError> {
    api.check("v1/balance", "GET /v1/balance", "Stripe API v1".into(), cancel)
        .await
}

/// One list endpoint's pages.
pub(super) struct Lister {
    path: String,
    params: Vec<(String, String)>,
    page_size: u32,
    /// The last object's id; `None` before the first page.
    after: Option<String>,
    done: bool,
}

impl Lister {
    /// The pages of `config`'s list, its `params` with the step's
    /// parameters (their text) in string values.
    pub(super) fn new(config: &SaasExtract, step: &StepRequest<'_>) -> Result<Lister, ExtractError> {
        let object = config.object.as_deref().unwrap_or_default();
        let params = config
            .params
            .iter()
            .flatten()
            .map(|(name, value)| {
                let text = match value {
                    Value::String(text) => step.substitute(text)?,
                    other => other.to_string(),
                };
                Ok((name.clone(), text))
            })
            .collect::<Result<_, ExtractError>>()?;
        Ok(Lister {
            path: format!("v1/{object}"),
            params,
            page_size: config.page_size.unwrap_or(Vendor::Stripe.page_bounds().0),
            after: None,
            done: false,
        })
    }
}

#[async_trait]
impl Pages for Lister {
    async fn next(
        &mut self,
        api: &Api,
        wanted: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<Record>>, ExtractError> {
        if self.done {
            return Ok(None);
        }
        let mut url = api.url(&self.path)?;
        let limit = wanted.map_or(self.page_size, |w| {
            self.page_size.min(u32::try_from(w).unwrap_or(u32::MAX))
        });
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &limit.to_string());
            for (name, value) in &self.params {
                query.append_pair(name, value);
            }
            if let Some(after) = &self.after {
                query.append_pair("starting_after", after);
            }
        }
        let what = format!("GET /{}", self.path);
        let answer = api.call(Method::GET, &url, None, &[], &what, cancel).await?;
        let (data, has_more) = records_and(&answer.body, Some("data"), Some("has_more"))
            .ok_or_else(|| unexpected(Vendor::Stripe, &what))?;
        let has_more = has_more.and_then(|v| v.as_bool()).unwrap_or(false);
        match data.last() {
            Some(last) if has_more => {
                let id = last.text("id").ok_or_else(|| {
                    ExtractError::new(
                        ErrorKind::HttpError,
                        format!("Stripe {what} listed an object without an id, so the next page cannot be asked for"),
                    )
                })?;
                self.after = Some(id);
            }
            _ => self.done = true,
        }
        Ok(Some(data))
    }
}
