//! `saas_extract`: records read from an OAuth SaaS connector through its
//! vendor's documented API, page by page.
//!
//! One config shape serves every vendor; what `object` and `query` mean,
//! and which options apply, depends on the connector's type
//! ([`Vendor`]):
//!
//! | vendor | `object` | `query` | options |
//! |---|---|---|---|
//! | stripe | a list endpoint under `/v1/` (`customers`, `charges`, `invoices`, `checkout/sessions`) | — | `params` (the list's filters, e.g. `{"created[gte]": 1704067200, "status": "paid"}`) |
//! | hubspot | a CRM object type (`contacts`, `companies`, `deals`, `tickets`, a custom object's `2-1234567` or `p_name`) | — | `fields` (the `properties` to read; default: HubSpot's defaults for the type), `archived` |
//! | salesforce | an sObject (`Account`): `SELECT <fields> FROM <object> [WHERE <where>]` | a SOQL query (string) | `fields` (default `FIELDS(STANDARD)`) and `where`, with `object` only |
//! | google_analytics | — | a GA4 `runReport` request body (object): `dimensions`, `metrics`, `dateRanges`, filters, `orderBys`, …; `property` defaults to the connector's | — |
//!
//! `{{name}}` parameters (declared in `parameters`, as for `sql_query`)
//! may appear in Stripe `params` values (their text), in SOQL `query` and
//! `where` (bound as SOQL literals: quoted and escaped strings, numbers,
//! `true`/`false`, `YYYY-MM-DD` dates, UTC date-times) and in the strings
//! of a report request (a string that is exactly one placeholder becomes
//! the typed JSON value, as in `http_request` bodies).
//!
//! Every vendor takes `page_size` (records per request, within the
//! vendor's bounds) and `limit` (the most records read in all). Paging
//! belongs to the worker: Stripe's `limit`/`starting_after`/`ending_before`,
//! and `limit`/`offset` in a report body are refused. The shape is
//! checked when the step is saved ([`SaasExtract::parse`]), and what
//! depends on the vendor ([`SaasExtract::check_for`]) once the API has
//! loaded the step's connector ([`validate_on`]) and again when it runs.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::connectors::TypeId;
use crate::domain::step::{ParamSpec, connector_field, non_empty_string, placeholders};
use crate::error::{Error, Result};

/// The vendors a `saas_extract` step reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Stripe,
    Hubspot,
    Salesforce,
    GoogleAnalytics,
}

impl Vendor {
    /// The vendor behind connector type `type_id`, if it has one.
    pub fn of(type_id: TypeId) -> Option<Vendor> {
        match type_id {
            TypeId::Stripe => Some(Vendor::Stripe),
            TypeId::Hubspot => Some(Vendor::Hubspot),
            TypeId::Salesforce => Some(Vendor::Salesforce),
            TypeId::GoogleAnalytics => Some(Vendor::GoogleAnalytics),
            _ => None,
        }
    }

    pub fn type_id(self) -> TypeId {
        match self {
            Vendor::Stripe => TypeId::Stripe,
            Vendor::Hubspot => TypeId::Hubspot,
            Vendor::Salesforce => TypeId::Salesforce,
            Vendor::GoogleAnalytics => TypeId::GoogleAnalytics,
        }
    }

    /// `(default, least, most)` records per request: Stripe and HubSpot list at
    /// most 100; Salesforce's `batchSize` is 200–2,000 (default 2,000); a
    /// GA4 report page at most 250,000 rows (default 10,000).
    pub fn page_bounds(self) -> (u32, u32, u32) {
        match self {
            Vendor::Stripe | Vendor::Hubspot => (100, 1, 100),
            Vendor::Salesforce => (2000, 200, 2000),
            Vendor::GoogleAnalytics => (10_000, 1, 250_000),
        }
    }
}

/// A `saas_extract` step's config, as the API validates it and the worker
/// runs it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaasExtract {
    pub connector_uuid: String,
    /// What to list (see the module's table).
    #[serde(default)]
    pub object: Option<String>,
    /// A SOQL query (Salesforce) or a report request (Google Analytics).
    #[serde(default)]
    pub query: Option<Query>,
    /// Fields to read: HubSpot `properties`, the Salesforce `SELECT` list.
    #[serde(default, deserialize_with = "names")]
    pub fields: Option<Vec<String>>,
    /// A SOQL condition for `object` (Salesforce).
    #[serde(default, rename = "where")]
    pub condition: Option<String>,
    /// A Stripe list's filters: names to strings, numbers or booleans.
    #[serde(default)]
    pub params: Option<Map<String, Value>>,
    /// HubSpot: read archived records instead of live ones.
    #[serde(default)]
    pub archived: Option<bool>,
    /// Records per request.
    #[serde(default, deserialize_with = "positive_u32")]
    pub page_size: Option<u32>,
    /// The most records read in all.
    #[serde(default, deserialize_with = "positive_u64")]
    pub limit: Option<u64>,
    /// Declared parameters: name to `{type, default?}`.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// `query`: SOQL text or a report request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Soql(String),
    Report(Map<String, Value>),
}

impl<'de> Deserialize<'de> for Query {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(Query::Soql(text)),
            Value::Object(map) => Ok(Query::Report(map)),
            _ => Err(serde::de::Error::custom(
                "query is a SOQL string (salesforce) or a runReport request object (google_analytics)",
            )),
        }
    }
}

fn names<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<Vec<String>>, D::Error> {
    let Some(list) = Option::<Vec<String>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if list.is_empty() || list.len() > 500 {
        return Err(serde::de::Error::custom("fields lists 1 to 500 names"));
    }
    if let Some(bad) = list.iter().find(|name| !is_field_name(name)) {
        return Err(serde::de::Error::custom(format!(
            "`{bad}` is not a field name (letters, digits, `_`, `.` and `-`, or FIELDS(ALL|STANDARD|CUSTOM))"
        )));
    }
    Ok(Some(list))
}

fn positive_u32<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<u32>, D::Error> {
    match Option::<u32>::deserialize(deserializer)? {
        Some(0) => Err(serde::de::Error::custom("must be a positive integer")),
        other => Ok(other),
    }
}

fn positive_u64<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(deserializer)? {
        Some(0) => Err(serde::de::Error::custom("must be a positive integer")),
        other => Ok(other),
    }
}

/// A field name: an API name or a relationship path (`Owner.Name`), a
/// HubSpot property (`hs_lead_status`), or SOQL's `FIELDS(...)`.
fn is_field_name(name: &str) -> bool {
    matches!(name, "FIELDS(ALL)" | "FIELDS(STANDARD)" | "FIELDS(CUSTOM)")
        || (!name.is_empty()
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
}

/// An identifier: ASCII letters, digits and `_`, starting with a letter.
fn is_identifier(name: &str) -> bool {
    name.len() <= 255
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Stripe list endpoints: lower-case words joined by `/` (`customers`,
/// `checkout/sessions`, `billing/meters`).
fn is_stripe_list(object: &str) -> bool {
    object.len() <= 100
        && object.split('/').all(|segment| {
            !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
}

/// HubSpot object types: a name (`contacts`, `p_custom`) or an object type
/// id (`0-1`, `2-1234567`).
fn is_hubspot_object(object: &str) -> bool {
    !object.is_empty()
        && object.len() <= 100
        && object
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Paging parameters the worker sets itself.
const STRIPE_PAGING: [&str; 3] = ["limit", "starting_after", "ending_before"];
const REPORT_PAGING: [&str; 2] = ["limit", "offset"];

impl SaasExtract {
    /// Parses and checks a step's config (the vendor-independent part);
    /// errors name the field (`config.page_size`).
    pub fn parse(config: &Map<String, Value>) -> Result<SaasExtract> {
        connector_field(config)?;
        let step: SaasExtract = super::parse(config)?;
        match (&step.object, &step.query) {
            (Some(_), Some(_)) => {
                return Err(Error::validation(
                    "config.query",
                    "give either object or query, not both",
                ));
            }
            (None, None) => {
                return Err(Error::validation(
                    "config.object",
                    "object (what to list) or query (SOQL, or a report request) is required",
                ));
            }
            _ => {}
        }
        if step.object.is_some() {
            let object = non_empty_string(config, "object")?;
            if object.contains("{{") {
                return Err(Error::validation(
                    "config.object",
                    "object names what to list; parameters go in params, where or query",
                ));
            }
        }
        for (name, spec) in step.parameters.iter().flatten() {
            ParamSpec::parse(name, spec)?;
        }
        let mut texts: Vec<(String, &str)> = Vec::new();
        if let Some(Query::Soql(text)) = &step.query {
            texts.push(("config.query".into(), text));
        }
        if let Some(condition) = &step.condition {
            texts.push(("config.where".into(), condition));
        }
        for (name, value) in step.params.iter().flatten() {
            if let Value::String(text) = value {
                texts.push((format!("config.params.{name}"), text));
            }
        }
        if let Some(Query::Report(body)) = &step.query {
            strings(
                &Value::Object(body.clone()),
                "config.query",
                &mut |field, text| check_placeholders(&field, text),
            )?;
        }
        for (field, text) in texts {
            check_placeholders(&field, text)?;
        }
        if let Some(Query::Soql(text)) = &step.query
            && text.trim().is_empty()
        {
            return Err(Error::validation("config.query", "query is empty"));
        }
        if step.condition.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(Error::validation("config.where", "where is empty"));
        }
        for (name, value) in step.params.iter().flatten() {
            let field = format!("config.params.{name}");
            if STRIPE_PAGING.contains(&name.as_str()) {
                return Err(Error::validation(
                    field,
                    "paging parameters are set by Ferry; use page_size and limit",
                ));
            }
            if !matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                return Err(Error::validation(
                    field,
                    "a list parameter is a string, a number or a boolean (name nested ones `created[gte]`)",
                ));
            }
        }
        Ok(step)
    }

    /// Checks what depends on the vendor: the options that apply to it, the
    /// shape of `object` and `query`, and `page_size` within its bounds.
    /// Errors name the field.
    pub fn check_for(&self, vendor: Vendor) -> Result<()> {
        let refuse =
            |field: &str, why: &str| Err(Error::validation(format!("config.{field}"), why.to_owned()));
        let (_, min, max) = vendor.page_bounds();
        if let Some(size) = self.page_size
            && !(min..=max).contains(&size)
        {
            return Err(Error::validation(
                "config.page_size",
                format!("page_size is {min} to {max} for {} connectors", vendor.type_id()),
            ));
        }
        let type_id = vendor.type_id();
        let not_for = |field: &str| {
            Error::validation(
                format!("config.{field}"),
                format!("{field} does not apply to {type_id} connectors"),
            )
        };
        let present = [
            ("fields", self.fields.is_some()),
            ("where", self.condition.is_some()),
            ("params", self.params.is_some()),
            ("archived", self.archived.is_some()),
        ];
        let allowed: &[&str] = match vendor {
            Vendor::Stripe => &["params"],
            Vendor::Hubspot => &["fields", "archived"],
            Vendor::Salesforce => &["fields", "where"],
            Vendor::GoogleAnalytics => &[],
        };
        if let Some((field, _)) = present
            .iter()
            .find(|(field, given)| *given && !allowed.contains(field))
        {
            return Err(not_for(field));
        }
        match vendor {
            Vendor::Stripe => match (&self.object, &self.query) {
                (Some(object), _) if is_stripe_list(object) => Ok(()),
                (Some(_), _) => refuse(
                    "object",
                    "object is a Stripe list endpoint under /v1/ (customers, charges, checkout/sessions)",
                ),
                _ => refuse("object", "stripe steps list an object (customers, charges, ...)"),
            },
            Vendor::Hubspot => match (&self.object, &self.query) {
                (Some(object), _) if is_hubspot_object(object) => Ok(()),
                (Some(_), _) => refuse(
                    "object",
                    "object is a HubSpot CRM object type (contacts, companies, deals, 2-1234567)",
                ),
                _ => refuse(
                    "object",
                    "hubspot steps list a CRM object type (contacts, companies, ...)",
                ),
            },
            Vendor::Salesforce => match (&self.object, &self.query) {
                (Some(object), _) if is_identifier(object) => Ok(()),
                (Some(_), _) => refuse("object", "object is an sObject API name (Account, My_Object__c)"),
                (None, Some(Query::Soql(_))) => {
                    if self.fields.is_some() || self.condition.is_some() {
                        return refuse(
                            "query",
                            "fields and where go with object; a query says them itself",
                        );
                    }
                    Ok(())
                }
                _ => refuse("query", "a salesforce query is SOQL text"),
            },
            Vendor::GoogleAnalytics => match &self.query {
                Some(Query::Report(body)) => check_report(body),
                Some(Query::Soql(_)) => {
                    refuse("query", "a google_analytics query is a runReport request object")
                }
                None => refuse(
                    "query",
                    "google_analytics steps run a report: query is a runReport request object",
                ),
            },
        }
    }

    /// The config of a step as it runs on `type_id` connectors: parsed and
    /// checked for the vendor.
    pub fn parse_for(config: &Map<String, Value>, type_id: TypeId) -> Result<(SaasExtract, Vendor)> {
        let step = SaasExtract::parse(config)?;
        let vendor = Vendor::of(type_id).ok_or_else(|| {
            Error::validation(
                "config.connector_uuid",
                format!("saas_extract steps do not run on {type_id} connectors"),
            )
        })?;
        step.check_for(vendor)?;
        Ok((step, vendor))
    }
}

/// A GA4 report request: metrics given, paging left to the worker, and a
/// `property` (when given) of the form `properties/<id>`.
fn check_report(body: &Map<String, Value>) -> Result<()> {
    for key in REPORT_PAGING {
        if body.contains_key(key) {
            return Err(Error::validation(
                format!("config.query.{key}"),
                "paging is set by Ferry; use page_size and limit",
            ));
        }
    }
    if let Some(property) = body.get("property") {
        let ok = property
            .as_str()
            .and_then(|p| p.strip_prefix("properties/"))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            return Err(Error::validation(
                "config.query.property",
                "property is `properties/<numeric id>` (default: the connector's property_id)",
            ));
        }
    }
    match body.get("metrics") {
        Some(Value::Array(metrics)) if !metrics.is_empty() => Ok(()),
        _ => Err(Error::validation(
            "config.query.metrics",
            "a report names at least one metric ([{\"name\": \"activeUsers\"}])",
        )),
    }
}

/// Refuses a `{{...}}` placeholder that is not an identifier.
fn check_placeholders(field: &str, text: &str) -> Result<()> {
    for name in placeholders(text) {
        if !is_identifier(name) {
            return Err(Error::validation(
                field,
                format!("invalid parameter placeholder {{{{{name}}}}}"),
            ));
        }
    }
    Ok(())
}

/// Calls `each(path, text)` for every string under `value`.
fn strings(value: &Value, path: &str, each: &mut dyn FnMut(String, &str) -> Result<()>) -> Result<()> {
    match value {
        Value::String(text) => each(path.to_owned(), text),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| strings(item, &format!("{path}.{i}"), each)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(key, item)| strings(item, &format!("{path}.{key}"), each)),
        _ => Ok(()),
    }
}

/// Checks a `saas_extract` step's config (see [`SaasExtract::parse`]).
pub fn validate(config: &Map<String, Value>) -> Result<()> {
    SaasExtract::parse(config).map(drop)
}

/// Checks a `saas_extract` step's config for a connector of type
/// `connector_type`: the vendor's options ([`SaasExtract::check_for`]). A
/// type without a vendor is left to the worker (`unsupported_connector`).
pub fn validate_on(config: &Map<String, Value>, connector_type: &str) -> Result<()> {
    match connector_type.parse::<TypeId>().ok().and_then(Vendor::of) {
        Some(vendor) => SaasExtract::parse(config)?.check_for(vendor),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_of(result: Result<impl std::fmt::Debug>) -> String {
        match result.expect_err("refused") {
            Error::Validation { field, .. } => field.unwrap_or_default(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    fn config(value: Value) -> Map<String, Value> {
        let mut map = value.as_object().cloned().expect("object");
        map.insert("connector_uuid".into(), json!("conn_01"));
        map
    }

    #[test]
    fn object_or_query_is_required_and_not_both() {
        assert_eq!(field_of(SaasExtract::parse(&config(json!({})))), "config.object");
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"object": "Account", "query": "SELECT Id FROM Account"})
            ))),
            "config.query"
        );
        assert!(SaasExtract::parse(&config(json!({"object": "customers"}))).is_ok());
        assert_eq!(
            field_of(SaasExtract::parse(&config(json!({"object": " "})))),
            "config.object"
        );
    }

    #[test]
    fn unknown_fields_and_bad_shapes_are_refused_by_name() {
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"object": "customers", "cursor": "x"})
            ))),
            "config.cursor"
        );
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"object": "customers", "page_size": 0})
            ))),
            "config.page_size"
        );
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"object": "customers", "limit": -1})
            ))),
            "config.limit"
        );
        assert_eq!(
            field_of(SaasExtract::parse(&config(json!({"query": 7})))),
            "config.query"
        );
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"object": "Account", "fields": ["Id; DROP"]})
            ))),
            "config.fields"
        );
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"object": "charges", "params": {"starting_after": "ch_1"}})
            ))),
            "config.params.starting_after"
        );
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"object": "charges", "params": {"created": {"gte": 1}}})
            ))),
            "config.params.created"
        );
        let mut missing = config(json!({"object": "customers"}));
        missing.remove("connector_uuid");
        assert_eq!(field_of(SaasExtract::parse(&missing)), "config.connector_uuid");
    }

    #[test]
    fn each_vendor_takes_its_own_options() {
        let check =
            |vendor, value: Value| SaasExtract::parse(&config(value)).and_then(|step| step.check_for(vendor));
        assert!(
            check(
                Vendor::Stripe,
                json!({"object": "checkout/sessions", "params": {"created[gte]": 1}})
            )
            .is_ok()
        );
        assert_eq!(
            field_of(check(Vendor::Stripe, json!({"object": "Customers"}))),
            "config.object"
        );
        assert_eq!(
            field_of(check(
                Vendor::Stripe,
                json!({"object": "customers", "fields": ["id"]})
            )),
            "config.fields"
        );
        assert_eq!(
            field_of(check(
                Vendor::Stripe,
                json!({"object": "customers", "page_size": 101})
            )),
            "config.page_size"
        );
        assert!(
            check(
                Vendor::Hubspot,
                json!({"object": "2-1234567", "fields": ["email"], "archived": false})
            )
            .is_ok()
        );
        assert_eq!(
            field_of(check(
                Vendor::Hubspot,
                json!({"object": "contacts", "params": {"a": 1}})
            )),
            "config.params"
        );
        assert!(check(Vendor::Salesforce, json!({"object": "My_Object__c", "fields": ["Id", "Owner.Name"], "where": "IsDeleted = false"})).is_ok());
        assert!(check(Vendor::Salesforce, json!({"query": "SELECT Id FROM Account"})).is_ok());
        assert_eq!(
            field_of(check(
                Vendor::Salesforce,
                json!({"query": "SELECT Id FROM Account", "where": "x"})
            )),
            "config.query"
        );
        assert_eq!(
            field_of(check(
                Vendor::Salesforce,
                json!({"object": "Account", "page_size": 100})
            )),
            "config.page_size"
        );
        assert_eq!(
            field_of(check(Vendor::Salesforce, json!({"object": "Acc-ount"}))),
            "config.object"
        );
        let report = json!({"query": {"dimensions": [{"name": "date"}], "metrics": [{"name": "activeUsers"}],
                                      "dateRanges": [{"startDate": "7daysAgo", "endDate": "today"}]}});
        assert!(check(Vendor::GoogleAnalytics, report).is_ok());
        assert_eq!(
            field_of(check(
                Vendor::GoogleAnalytics,
                json!({"query": {"metrics": [{"name": "x"}], "offset": 5}})
            )),
            "config.query.offset"
        );
        assert_eq!(
            field_of(check(
                Vendor::GoogleAnalytics,
                json!({"query": {"dimensions": []}})
            )),
            "config.query.metrics"
        );
        assert_eq!(
            field_of(check(
                Vendor::GoogleAnalytics,
                json!({"query": {"metrics": [{"name": "x"}], "property": "properties/a"}})
            )),
            "config.query.property"
        );
        assert_eq!(
            field_of(check(Vendor::GoogleAnalytics, json!({"object": "users"}))),
            "config.query"
        );
    }

    #[test]
    fn parameters_are_declared_and_placeholders_are_identifiers() {
        let ok = config(
            json!({"query": "SELECT Id FROM Account WHERE CreatedDate > {{since}}",
                               "parameters": {"since": {"type": "timestamp"}}}),
        );
        assert!(SaasExtract::parse(&ok).is_ok());
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"object": "customers", "params": {"email": "{{a-b}}"}})
            ))),
            "config.params.email"
        );
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"query": {"metrics": [{"name": "x"}],
                "dateRanges": [{"startDate": "{{bad name}}"}]}})
            ))),
            "config.query.dateRanges.0.startDate"
        );
        assert_eq!(
            field_of(SaasExtract::parse(&config(json!({"object": "{{which}}"})))),
            "config.object"
        );
        assert_eq!(
            field_of(SaasExtract::parse(&config(
                json!({"object": "customers", "parameters": {"x": {"type": "bogus"}}})
            ))),
            "config.parameters.x.type"
        );
    }

    #[test]
    fn the_step_type_validates_through_this_module() {
        let good = json!({"connector_uuid": "conn_01", "object": "contacts"});
        assert!(
            crate::domain::StepType::SaasExtract
                .validate_config(&good)
                .is_ok()
        );
        let bad = json!({"connector_uuid": "conn_01", "object": "contacts", "bogus": true});
        assert!(
            crate::domain::StepType::SaasExtract
                .validate_config(&bad)
                .is_err()
        );
    }
}
