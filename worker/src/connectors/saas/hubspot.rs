//! HubSpot: CRM objects v3 (`GET /crm/v3/objects/<object>`), paged with
//! `limit` (at most 100) and `after` from `paging.next.after` until no
//! `paging.next` is given; the step's `fields` are the `properties` asked
//! for (HubSpot's default properties of the type otherwise), `archived`
//! reads archived records. Each record becomes one row: `id`, then its
//! properties (HubSpot gives every property value as a string, or null),
//! then `createdAt`, `updatedAt` and `archived`. The connection test lists
//! one contact (`crm.objects.contacts.read`, a default scope).

use async_trait::async_trait;
use ferry_shared::steps::saas_extract::{SaasExtract, Vendor};
use reqwest::{Method, Url};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Api, Pages, Record, records_and, records_at, unexpected};
use crate::connectors::TestDetails;
use crate::connectors::errors::DriverError;
use crate::connectors::oauth_http::vendor_url;
use crate::extract::ExtractError;

pub(crate) const HOST: &str = "api.hubapi.com";

pub(super) fn base_url() -> Result<Url, DriverError> {
    vendor_url(HOST, "/")
}

pub(super) async fn test(api: &Api, cancel: &CancellationToken) -> Result<TestDetails, DriverError> {
    api.check(
        "crm/v3/objects/contacts?limit=1",
        "GET /crm/v3/objects/contacts",
        "HubSpot CRM API v3".into(),
        cancel,
    )
    .await
}

/// One CRM object type's pages.
pub(super) struct Lister {
    path: String,
    properties: Option<String>,
    archived: bool,
    page_size: u32,
    after: Option<String>,
    done: bool,
}

impl Lister {
    pub(super) fn new(config: &SaasExtract) -> Lister {
        Lister {
            path: format!("crm/v3/objects/{}", config.object.as_deref().unwrap_or_default()),
            properties: config.fields.as_ref().map(|fields| fields.join(",")),
            archived: config.archived.unwrap_or(false),
            page_size: config.page_size.unwrap_or(Vendor::Hubspot.page_bounds().0),
            after: None,
            done: false,
        }
    }
}

/// A CRM record as one row: `id`, its properties, its dates, then
/// whatever else it carries (associations, propertiesWithHistory).
fn row(mut record: Record) -> Record {
    let mut row = Record::default();
    row.push("id".into(), record.take("id").unwrap_or_else(|| "null".into()));
    if let Some(properties) = record.take("properties")
        && let Some(properties) = records_at(format!("[{properties}]").as_bytes(), None)
    {
        for (name, value) in properties.into_iter().flat_map(|p| p.0) {
            row.push(name, value);
        }
    }
    for key in ["createdAt", "updatedAt", "archived"] {
        if let Some(value) = record.take(key) {
            row.push(key.into(), value);
        }
    }
    for (key, value) in record.0 {
        row.push(key, value);
    }
    row
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
            query.append_pair("archived", if self.archived { "true" } else { "false" });
            if let Some(properties) = &self.properties {
                query.append_pair("properties", properties);
            }
            if let Some(after) = &self.after {
                query.append_pair("after", after);
            }
        }
        let what = format!("GET /{}", self.path);
        let answer = api.call(Method::GET, &url, None, &[], &what, cancel).await?;
        let (results, after) = records_and(&answer.body, Some("results"), Some("paging.next.after"))
            .ok_or_else(|| unexpected(Vendor::Hubspot, &what))?;
        let after = after.and_then(|after| match after {
            Value::String(text) if !text.is_empty() => Some(text),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        match after {
            Some(after) if !results.is_empty() && self.after.as_ref() != Some(&after) => {
                self.after = Some(after)
            }
            _ => self.done = true,
        }
        Ok(Some(results.into_iter().map(row).collect()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_record_is_its_id_its_properties_then_its_dates() {
        let body = json!([{"id": "51", "properties": {"email": "a@b.c", "firstname": null},
                            "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-02T00:00:00Z", "archived": false}]);
        let record = records_at(body.to_string().as_bytes(), None)
            .expect("records")
            .remove(0);
        let row = row(record);
        let keys: Vec<_> = row.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["id", "email", "firstname", "createdAt", "updatedAt", "archived"]
        );
        assert_eq!(row.get("email"), Some("\"a@b.c\""));
        assert_eq!(row.get("firstname"), Some("null"));
    }
}
