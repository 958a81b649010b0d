//! Unit tests of the connector registry and config validation.

use serde_json::{Map, Value, json};

use super::*;
use crate::Error;

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn ty(type_id: &str) -> &'static ConnectorType {
    find(type_id).unwrap_or_else(|| panic!("type {type_id} missing"))
}

fn pg_config() -> Map<String, Value> {
    obj(json!({
        "host": "db.example.com",
        "database": "production",
        "username": "querri_user",
        "password": "secure_password_123",
    }))
}

/// The `field` and `details` of a validation error.
fn field_of(result: crate::Result<SplitConfig>) -> (String, String) {
    match result {
        Err(Error::Validation {
            field: Some(field),
            message,
            details,
        }) => {
            assert_eq!(message, "Invalid connector configuration");
            (field, details.unwrap_or_default())
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn with(mut base: Map<String, Value>, key: &str, value: Value) -> Map<String, Value> {
    base.insert(key.to_owned(), value);
    base
}

#[test]
fn every_seed_type_is_registered_with_its_auth_kind() {
    let credentials = [
        "postgresql",
        "mysql",
        "mongodb",
        "redis",
        "redshift",
        "databricks",
        "rest_api",
        "sqlite",
    ];
    let oauth = [
        "bigquery",
        "snowflake",
        "salesforce",
        "hubspot",
        "stripe",
        "google_analytics",
        "azure",
    ];
    for id in credentials {
        assert_eq!(ty(id).auth_type, AuthKind::Credentials, "{id}");
    }
    for id in oauth {
        assert_eq!(ty(id).auth_type, AuthKind::OAuth, "{id}");
    }
    assert_eq!(registry().len(), credentials.len() + oauth.len());
    assert!(find("oracle").is_none());
}

#[test]
fn registry_entries_are_well_formed() {
    let categories = [
        "database",
        "data_warehouse",
        "crm",
        "payments",
        "analytics",
        "cloud",
        "api",
    ];
    let mut ids = Vec::new();
    for t in registry() {
        assert!(!ids.contains(&t.type_id), "duplicate {}", t.type_id);
        ids.push(t.type_id);
        assert!(
            categories.contains(&t.category.to_string().as_str()),
            "{}",
            t.type_id
        );
        assert!(!t.features().is_empty(), "{}", t.type_id);
        assert!(t.documentation.len() > 100, "{}", t.type_id);
        assert_eq!(t.documentation_url, format!("/docs#connector-{}", t.type_id));
        let mut names = Vec::new();
        for f in &t.fields {
            assert!(!names.contains(&f.name), "{}.{} twice", t.type_id, f.name);
            names.push(f.name);
            // A default must itself be valid, and conditions name real fields.
            if let Some(default) = &f.default {
                assert!(
                    validate::check_value(f, default).is_ok(),
                    "{}.{}",
                    t.type_id,
                    f.name
                );
            }
            if let Requirement::RequiredWhen { field, .. } = f.required {
                assert!(t.field(field).is_some(), "{}.{}", t.type_id, f.name);
            }
            if let Some(condition) = f.applies_when {
                assert!(t.field(condition.field).is_some(), "{}.{}", t.type_id, f.name);
            }
        }
    }
    assert_eq!(
        ty("bigquery").features(),
        ["sql_query", "streaming", "partitioning"]
    );
    assert_eq!(ty("mysql").features(), ["sql_query"]);
}

#[test]
fn every_type_id_has_exactly_one_declaration_and_spells_the_api_word() {
    use strum::VariantArray;
    assert_eq!(TypeId::VARIANTS.len(), registry().len());
    for &id in TypeId::VARIANTS {
        assert_eq!(id.decl().type_id, id);
        assert_eq!(TypeId::parse(id.as_str()), Some(id));
        assert_eq!(json!(id), json!(id.as_str()));
    }
    assert_eq!(TypeId::GoogleAnalytics.as_str(), "google_analytics");
    assert_eq!(TypeId::RestApi.as_str(), "rest_api");
    assert_eq!(TypeId::parse("POSTGRESQL"), None);
}

#[test]
fn drivers_exist_for_the_eight_direct_types_in_their_families() {
    let with_driver: Vec<(&str, DriverFamily)> = registry()
        .iter()
        .filter_map(|t| t.driver.map(|d| (t.type_id.as_str(), d)))
        .collect();
    assert_eq!(
        with_driver,
        [
            ("postgresql", DriverFamily::Postgres),
            ("mysql", DriverFamily::Mysql),
            ("mongodb", DriverFamily::Mongodb),
            ("redis", DriverFamily::Redis),
            ("redshift", DriverFamily::Postgres),
            ("databricks", DriverFamily::Databricks),
            ("rest_api", DriverFamily::Rest),
            ("bigquery", DriverFamily::Bigquery),
            ("snowflake", DriverFamily::Snowflake),
            ("salesforce", DriverFamily::Saas),
            ("hubspot", DriverFamily::Saas),
            ("stripe", DriverFamily::Saas),
            ("google_analytics", DriverFamily::Saas),
            ("sqlite", DriverFamily::Sqlite),
        ]
    );
    assert!(find("postgresql").is_some_and(ConnectorType::has_driver));
    assert!(find("snowflake").is_some_and(ConnectorType::has_driver));
    assert!(find("POSTGRESQL").is_none());
}

#[test]
fn sql_types_with_a_driver_declare_their_placeholder_style() {
    use crate::domain::params::Placeholder;
    assert_eq!(ty("postgresql").placeholder, Some(Placeholder::Dollar));
    assert_eq!(ty("redshift").placeholder, Some(Placeholder::Dollar));
    assert_eq!(ty("mysql").placeholder, Some(Placeholder::Question));
    assert_eq!(ty("sqlite").placeholder, Some(Placeholder::Question));
    assert_eq!(ty("databricks").placeholder, Some(Placeholder::Named));
    assert_eq!(ty("snowflake").placeholder, Some(Placeholder::Question));
    assert_eq!(ty("bigquery").placeholder, Some(Placeholder::Question));
    for t in registry() {
        let runs_sql = t.has_driver() && t.accepts(crate::domain::StepType::SqlQuery);
        assert_eq!(t.placeholder.is_some(), runs_sql, "{}", t.type_id);
    }
}

#[test]
fn a_connection_test_is_bounded_by_the_types_timeout_field_then_its_default() {
    use std::time::Duration;
    let pg = ty("postgresql");
    assert_eq!(
        pg.test_timeout(&obj(json!({"connection_timeout_seconds": 7}))),
        Duration::from_secs(7)
    );
    // A REST API's bound is `timeout_seconds`, whatever else the map holds.
    let rest = ty("rest_api");
    assert_eq!(
        rest.test_timeout(&obj(
            json!({"timeout_seconds": 9, "connection_timeout_seconds": 99})
        )),
        Duration::from_secs(9)
    );
    assert_eq!(
        pg.test_timeout(&Map::new()),
        Duration::from_secs(defaults::CONNECTION_TIMEOUT_SECONDS)
    );
    assert_eq!(
        rest.test_timeout(&Map::new()),
        Duration::from_secs(defaults::REST_TIMEOUT_SECONDS)
    );
    assert_eq!(
        ty("snowflake").test_timeout(&Map::new()),
        Duration::from_secs(DEFAULT_TEST_TIMEOUT_SECONDS)
    );
}

#[test]
fn pool_defaults_are_read_from_the_declaration() {
    let mysql = ty("mysql");
    assert_eq!(
        mysql.default_u64("max_connections"),
        Some(defaults::MAX_CONNECTIONS)
    );
    assert_eq!(
        mysql.default_u64("statement_timeout_seconds"),
        Some(defaults::STATEMENT_TIMEOUT_SECONDS)
    );
    assert_eq!(mysql.default_value("charset"), Some(&json!("utf8mb4")));
    assert_eq!(mysql.default_u64("host"), None);
}

#[test]
fn database_types_share_the_pool_fields_with_their_defaults() {
    let expected = [
        ("connection_timeout_seconds", 30),
        ("max_connections", 5),
        ("idle_timeout_seconds", 600),
        ("max_lifetime_seconds", 3600),
        ("statement_timeout_seconds", 300),
    ];
    for id in [
        "postgresql",
        "redshift",
        "mysql",
        "mongodb",
        "redis",
        "sqlite",
        "databricks",
    ] {
        for (name, default) in expected {
            let field = ty(id).field(name).unwrap_or_else(|| panic!("{id}.{name}"));
            assert_eq!(field.default, Some(json!(default)), "{id}.{name}");
        }
    }
    assert!(ty("rest_api").field("max_connections").is_none());
}

#[test]
fn postgresql_defaults_are_applied_and_the_password_is_secret() {
    let split = ty("postgresql").validate_new(&pg_config()).expect("valid");
    let public = &split.public;
    assert_eq!(public["port"], json!(5432));
    assert_eq!(public["max_connections"], json!(5));
    assert_eq!(public["connection_timeout_seconds"], json!(30));
    assert_eq!(public["idle_timeout_seconds"], json!(600));
    assert_eq!(public["max_lifetime_seconds"], json!(3600));
    assert_eq!(public["statement_timeout_seconds"], json!(300));
    assert_eq!(public["ssl_enabled"], json!(false));
    assert_eq!(public["ssl_mode"], json!("prefer"));
    assert_eq!(public["host"], json!("db.example.com"));
    assert!(!public.contains_key("password"));
    assert!(!public.contains_key("ssl_root_cert"));
    assert_eq!(split.secrets, obj(json!({"password": "secure_password_123"})));
    assert_eq!(split.merged()["password"], json!("secure_password_123"));
    assert_eq!(
        ty("redshift").validate_new(&pg_config()).expect("valid").public["port"],
        json!(5439)
    );
}

#[test]
fn the_seed_examples_validate() {
    let pg = obj(json!({
        "host": "db.example.com", "port": 5432, "database": "production", "username": "querri_user",
        "password": "secure_password_123", "ssl_enabled": true, "ssl_mode": "require"
    }));
    ty("postgresql").validate_new(&pg).expect("postgresql");
    let mongo = obj(json!({
        "connection_string": "mongodb+srv://user:pass@cluster.mongodb.net/",
        "database": "analytics", "auth_source": "admin"
    }));
    ty("mongodb").validate_new(&mongo).expect("mongodb");
    let rest = obj(json!({
        "base_url": "https://api.internal.com", "auth_type": "bearer", "auth_token": "sk_live_abc123...",
        "headers": {"X-API-Version": "2024-01-15"}, "timeout_seconds": 30
    }));
    let split = ty("rest_api").validate_new(&rest).expect("rest_api");
    assert_eq!(split.secrets, obj(json!({"auth_token": "sk_live_abc123..."})));
    assert_eq!(split.public["headers"], json!({"X-API-Version": "2024-01-15"}));
    let snowflake =
        obj(json!({"account": "xy12345.us-east-1", "warehouse": "COMPUTE_WH", "database": "ANALYTICS"}));
    assert_eq!(
        ty("snowflake")
            .validate_new(&snowflake)
            .expect("snowflake")
            .public["schema"],
        json!("PUBLIC")
    );
    let bigquery = ty("bigquery")
        .validate_new(&obj(json!({"project_id": "my-project"})))
        .expect("bigquery");
    assert_eq!(bigquery.public["location"], json!("US"));
    let salesforce = ty("salesforce").validate_new(&Map::new()).expect("salesforce");
    assert_eq!(
        salesforce.public,
        obj(json!({"api_version": "v59.0", "sandbox": false}))
    );
}

#[test]
fn postgresql_without_host_names_config_host() {
    let mut config = pg_config();
    config.remove("host");
    let (field, details) = field_of(ty("postgresql").validate_new(&config));
    assert_eq!(field, "config.host");
    assert_eq!(details, "Host is required for PostgreSQL connectors");
    // null and "" are no better.
    assert_eq!(
        field_of(ty("postgresql").validate_new(&with(pg_config(), "host", Value::Null))).0,
        "config.host"
    );
    assert_eq!(
        field_of(ty("postgresql").validate_new(&with(pg_config(), "host", json!("")))).0,
        "config.host"
    );
}

#[test]
fn wrong_types_and_ranges_name_the_field() {
    let pg = ty("postgresql");
    let cases = [
        ("port", json!(70000)),
        ("port", json!(0)),
        ("port", json!("5432")),
        ("port", json!(5432.5)),
        ("ssl_mode", json!("sometimes")),
        ("ssl_enabled", json!("yes")),
        ("max_connections", json!(101)),
        ("max_connections", json!(0)),
        ("connection_timeout_seconds", json!(0)),
        ("statement_timeout_seconds", json!(-1)),
        ("database", json!(["a"])),
        ("username", json!("a\nb")),
        ("password", json!(42)),
    ];
    for (name, value) in cases {
        let (field, _) = field_of(pg.validate_new(&with(pg_config(), name, value.clone())));
        assert_eq!(field, format!("config.{name}"), "{name} = {value}");
    }
    let (_, details) = field_of(pg.validate_new(&with(pg_config(), "port", json!(70000))));
    assert_eq!(details, "Port must be an integer between 1 and 65535");
}

#[test]
fn unknown_fields_are_refused() {
    let (field, details) =
        field_of(ty("postgresql").validate_new(&with(pg_config(), "dsn", json!("host=x"))));
    assert_eq!(field, "config.dsn");
    assert!(details.contains("not a PostgreSQL connector field"), "{details}");
    let (field, _) = field_of(ty("postgresql").validate_new(&with(pg_config(), "options", json!("-c x=y"))));
    assert_eq!(field, "config.options");
}

#[test]
fn hostile_hosts_are_refused() {
    for host in [
        "/var/run/postgresql",
        "a,b",
        "h host",
        "user@db",
        "db=evil",
        "db:5432",
        "db\t",
    ] {
        let (field, details) =
            field_of(ty("postgresql").validate_new(&with(pg_config(), "host", json!(host))));
        assert_eq!(field, "config.host", "{host:?}");
        assert!(!details.contains(host), "details quote the value: {details}");
    }
    for host in ["10.1.2.3", "::1", "db-1.internal"] {
        ty("postgresql")
            .validate_new(&with(pg_config(), "host", json!(host)))
            .expect(host);
    }
}

#[test]
fn ssl_enabled_and_ssl_mode_derive_from_each_other() {
    let pg = ty("postgresql");
    let split = pg
        .validate_new(&with(pg_config(), "ssl_enabled", json!(true)))
        .expect("valid");
    assert_eq!(split.public["ssl_mode"], json!("require"));
    let split = pg
        .validate_new(&with(pg_config(), "ssl_mode", json!("require")))
        .expect("valid");
    assert_eq!(split.public["ssl_enabled"], json!(true));
    let split = pg
        .validate_new(&with(pg_config(), "ssl_mode", json!("allow")))
        .expect("valid");
    assert_eq!(split.public["ssl_enabled"], json!(false));
    let split = pg
        .validate_new(&with(
            with(pg_config(), "ssl_enabled", json!(true)),
            "ssl_mode",
            json!("prefer"),
        ))
        .expect("explicit prefer with ssl_enabled is allowed");
    assert_eq!(split.public["ssl_mode"], json!("prefer"));

    let contradiction = with(
        with(pg_config(), "ssl_enabled", json!(true)),
        "ssl_mode",
        json!("disable"),
    );
    assert_eq!(field_of(pg.validate_new(&contradiction)).0, "config.ssl_mode");
    let contradiction = with(
        with(pg_config(), "ssl_enabled", json!(false)),
        "ssl_mode",
        json!("require"),
    );
    assert_eq!(field_of(pg.validate_new(&contradiction)).0, "config.ssl_mode");
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUAA==\n-----END CERTIFICATE-----\n";

#[test]
fn verifying_ssl_modes_need_a_pem_root_certificate() {
    let pg = ty("postgresql");
    for mode in ["verify-ca", "verify-full"] {
        let config = with(pg_config(), "ssl_mode", json!(mode));
        let (field, details) = field_of(pg.validate_new(&config));
        assert_eq!(field, "config.ssl_root_cert");
        assert!(details.contains("when ssl_mode is"), "{details}");
        let split = pg
            .validate_new(&with(config, "ssl_root_cert", json!(CERT)))
            .expect("valid");
        assert_eq!(split.public["ssl_root_cert"], json!(CERT));
        assert_eq!(split.public["ssl_enabled"], json!(true));
    }
    let bad = with(
        pg_config(),
        "ssl_root_cert",
        json!("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"),
    );
    assert_eq!(field_of(pg.validate_new(&bad)).0, "config.ssl_root_cert");
    // MySQL has no `allow` mode.
    let mysql = with(pg_config(), "ssl_mode", json!("allow"));
    assert_eq!(field_of(ty("mysql").validate_new(&mysql)).0, "config.ssl_mode");
}

#[test]
fn mysql_charset_is_a_word() {
    let split = ty("mysql").validate_new(&pg_config()).expect("valid");
    assert_eq!(split.public["charset"], json!("utf8mb4"));
    assert_eq!(split.public["port"], json!(3306));
    let bad = with(pg_config(), "charset", json!("utf8'; SET x=1"));
    assert_eq!(field_of(ty("mysql").validate_new(&bad)).0, "config.charset");
}

#[test]
fn rest_api_auth_fields_follow_auth_type() {
    let rest = ty("rest_api");
    let base = obj(json!({"base_url": "https://api.example.com", "auth_type": "bearer"}));
    let (field, details) = field_of(rest.validate_new(&base));
    assert_eq!(field, "config.auth_token");
    assert_eq!(
        details,
        "Auth token is required for REST API connectors when auth_type is bearer"
    );

    let basic = obj(json!({"base_url": "https://api.example.com", "auth_type": "basic", "username": "u"}));
    assert_eq!(field_of(rest.validate_new(&basic)).0, "config.password");
    let api_key =
        obj(json!({"base_url": "https://api.example.com", "auth_type": "api_key", "api_key_value": "k"}));
    assert_eq!(field_of(rest.validate_new(&api_key)).0, "config.api_key_header");
    let oauth2 = obj(json!({
        "base_url": "https://api.example.com", "auth_type": "oauth2", "token_url": "https://id.example.com/token",
        "client_id": "ferry", "client_secret": "cs", "scope": "read"
    }));
    let split = rest.validate_new(&oauth2).expect("valid");
    assert_eq!(split.secrets, obj(json!({"client_secret": "cs"})));
    assert_eq!(split.public["scope"], json!("read"));

    // A credential for another auth type is a mistake worth reporting.
    let stray = obj(json!({"base_url": "https://api.example.com", "auth_token": "t"}));
    let (field, details) = field_of(rest.validate_new(&stray));
    assert_eq!(field, "config.auth_token");
    assert_eq!(details, "Auth token applies only when auth_type is bearer");

    let none = rest
        .validate_new(&obj(json!({"base_url": "https://api.example.com"})))
        .expect("valid");
    assert_eq!(none.public["auth_type"], json!("none"));
    assert_eq!(none.public["timeout_seconds"], json!(30));
    assert!(none.secrets.is_empty());
}

#[test]
fn rest_api_urls_paths_and_headers_are_checked() {
    let rest = ty("rest_api");
    let base = obj(json!({"base_url": "https://api.example.com"}));
    for (name, value) in [
        ("base_url", json!("https://user:pw@api.example.com")),
        ("base_url", json!("ftp://api.example.com")),
        ("base_url", json!("https://api.example.com/?api_key=1")),
        ("test_path", json!("health")),
        ("test_path", json!("//evil.example.com/")),
        ("headers", json!({"Authorization": "Bearer x"})),
        ("headers", json!({"X-A": "a\r\nX-B: b"})),
        ("headers", json!({"X-A": 1})),
        ("headers", json!("X-A: 1")),
        ("timeout_seconds", json!(601)),
    ] {
        let (field, _) = field_of(rest.validate_new(&with(base.clone(), name, value.clone())));
        assert_eq!(field, format!("config.{name}"), "{value}");
    }
    rest.validate_new(&with(base, "test_path", json!("/health")))
        .expect("valid");
}

#[test]
fn mongodb_connection_string_is_secret_and_redacted_in_public() {
    let config = obj(json!({
        "connection_string": "mongodb+srv://user:pass@cluster.mongodb.net/?retryWrites=true",
        "database": "analytics"
    }));
    let split = ty("mongodb").validate_new(&config).expect("valid");
    assert_eq!(
        split.public["connection_string"],
        json!("mongodb+srv://user:****@cluster.mongodb.net/?retryWrites=true")
    );
    assert_eq!(
        split.secrets["connection_string"],
        json!("mongodb+srv://user:pass@cluster.mongodb.net/?retryWrites=true")
    );
    assert_eq!(split.public["auth_source"], json!("admin"));
    assert_eq!(split.public["read_preference"], json!("primary"));
    assert_eq!(
        split.merged()["connection_string"],
        split.secrets["connection_string"]
    );

    let no_password = obj(json!({"connection_string": "mongodb://db1:27017,db2:27017/", "database": "a"}));
    let split = ty("mongodb").validate_new(&no_password).expect("valid");
    assert_eq!(
        split.public["connection_string"],
        split.secrets["connection_string"]
    );
}

#[test]
fn mongodb_refuses_bad_strings_and_the_redacted_form() {
    for uri in [
        "postgres://u:p@h/db",
        "mongodb://user:****@cluster.example.com/",
        "mongodb://u:p@h/db?tlsCertificateKeyFile=/etc/ferry/key.pem",
        "mongodb://u:p/w@h/db",
    ] {
        let config = obj(json!({"connection_string": uri, "database": "a"}));
        let (field, details) = field_of(ty("mongodb").validate_new(&config));
        assert_eq!(field, "config.connection_string", "{uri}");
        assert!(!details.contains("p/w") && !details.contains("u:p"), "{details}");
    }
    let config = obj(json!({"connection_string": "mongodb://h/", "database": "a", "read_preference": "any"}));
    assert_eq!(
        field_of(ty("mongodb").validate_new(&config)).0,
        "config.read_preference"
    );
}

#[test]
fn sqlite_paths_stay_plain() {
    let sqlite = ty("sqlite");
    let split = sqlite
        .validate_new(&obj(json!({"path": "sales/2024.db"})))
        .expect("valid");
    assert_eq!(split.public["path"], json!("sales/2024.db"));
    assert!(split.secrets.is_empty());
    for path in [
        "",
        "../../etc/passwd",
        "x.db\u{0}",
        ":memory:",
        "file:x.db?mode=rwc",
    ] {
        let (field, _) = field_of(sqlite.validate_new(&obj(json!({ "path": path }))));
        assert_eq!(field, "config.path", "{path:?}");
    }
}

#[test]
fn redis_and_the_oauth_types_validate() {
    let split = ty("redis")
        .validate_new(&obj(json!({"host": "cache.internal", "password": "pw"})))
        .expect("valid");
    assert_eq!(split.public["port"], json!(6379));
    assert_eq!(split.public["database"], json!(0));
    assert_eq!(split.public["tls"], json!(false));
    assert_eq!(split.secrets, obj(json!({"password": "pw"})));
    let bad = obj(json!({"host": "cache.internal", "database": 1024}));
    assert_eq!(field_of(ty("redis").validate_new(&bad)).0, "config.database");

    let (field, details) = field_of(ty("google_analytics").validate_new(&Map::new()));
    assert_eq!(
        (field.as_str(), details.as_str()),
        (
            "config.property_id",
            "Property ID is required for Google Analytics connectors"
        )
    );
    let bad = obj(json!({"account": "evil.com/x?", "warehouse": "W", "database": "D"}));
    assert_eq!(field_of(ty("snowflake").validate_new(&bad)).0, "config.account");
    ty("azure")
        .validate_new(&obj(json!({"tenant_id": "contoso.onmicrosoft.com"})))
        .expect("azure");
    ty("hubspot").validate_new(&Map::new()).expect("hubspot");
    ty("stripe")
        .validate_new(&obj(json!({"account_id": "acct_1Nv0FGQ9RKHgCVdK"})))
        .expect("stripe");
    let databricks = obj(json!({
        "server_hostname": "dbc-a1b2.cloud.databricks.com", "http_path": "/sql/1.0/warehouses/abc", "access_token": "dapi1"
    }));
    let split = ty("databricks").validate_new(&databricks).expect("databricks");
    assert_eq!(split.secrets, obj(json!({"access_token": "dapi1"})));
}

fn stored_pg() -> SplitConfig {
    ty("postgresql").validate_new(&pg_config()).expect("valid")
}

#[test]
fn patch_keeps_an_omitted_secret() {
    let stored = stored_pg();
    let patch = obj(json!({"host": "db2.example.com", "database": "production_v2"}));
    let split = ty("postgresql")
        .validate_patch(&stored.public, &stored.secrets, &patch)
        .expect("valid");
    assert_eq!(split.public["host"], json!("db2.example.com"));
    assert_eq!(split.public["database"], json!("production_v2"));
    assert_eq!(split.secrets, stored.secrets);
    let patch = obj(json!({"password": "new_secure_password"}));
    let split = ty("postgresql")
        .validate_patch(&stored.public, &stored.secrets, &patch)
        .expect("valid");
    assert_eq!(split.secrets["password"], json!("new_secure_password"));
    assert_eq!(split.public, stored.public);
}

#[test]
fn patch_null_clears_optional_fields_and_refuses_required_ones() {
    let pg = ty("postgresql");
    let stored = pg
        .validate_new(&with(
            with(pg_config(), "ssl_root_cert", json!(CERT)),
            "max_connections",
            json!(20),
        ))
        .expect("valid");
    let patch = obj(json!({"ssl_root_cert": null, "max_connections": null}));
    let split = pg
        .validate_patch(&stored.public, &stored.secrets, &patch)
        .expect("valid");
    assert!(!split.public.contains_key("ssl_root_cert"));
    assert_eq!(
        split.public["max_connections"],
        json!(5),
        "null restores the default"
    );

    for name in ["host", "password"] {
        let patch = obj(json!({ name: null }));
        let (field, details) = field_of(pg.validate_patch(&stored.public, &stored.secrets, &patch));
        assert_eq!(field, format!("config.{name}"));
        assert!(details.contains("cannot be cleared"), "{details}");
    }

    let redis = ty("redis");
    let stored = redis
        .validate_new(&obj(json!({"host": "cache", "password": "pw"})))
        .expect("valid");
    let split = redis
        .validate_patch(&stored.public, &stored.secrets, &obj(json!({"password": null})))
        .expect("valid");
    assert!(split.secrets.is_empty());
}

#[test]
fn patch_validates_the_merged_config() {
    let pg = ty("postgresql");
    let stored = stored_pg();
    for (name, value) in [
        ("port", json!(0)),
        ("ssl_mode", json!("sometimes")),
        ("host", json!("a,b")),
    ] {
        let (field, _) =
            field_of(pg.validate_patch(&stored.public, &stored.secrets, &obj(json!({ name: value }))));
        assert_eq!(field, format!("config.{name}"));
    }
    let (field, _) = field_of(pg.validate_patch(&stored.public, &stored.secrets, &obj(json!({"dsn": "x"}))));
    assert_eq!(field, "config.dsn");
    // Valid alone, invalid merged: verify-full needs the root certificate.
    let (field, _) = field_of(pg.validate_patch(
        &stored.public,
        &stored.secrets,
        &obj(json!({"ssl_mode": "verify-full"})),
    ));
    assert_eq!(field, "config.ssl_root_cert");
}

#[test]
fn patch_rederives_the_ssl_pair_only_when_it_was_implied() {
    let pg = ty("postgresql");
    let stored = stored_pg();
    let split = pg
        .validate_patch(
            &stored.public,
            &stored.secrets,
            &obj(json!({"ssl_enabled": true})),
        )
        .expect("valid");
    assert_eq!(split.public["ssl_mode"], json!("require"));
    let split2 = pg
        .validate_patch(&split.public, &split.secrets, &obj(json!({"ssl_enabled": false})))
        .expect("valid");
    assert_eq!(split2.public["ssl_mode"], json!("prefer"));
    let split3 = pg
        .validate_patch(
            &stored.public,
            &stored.secrets,
            &obj(json!({"ssl_mode": "require"})),
        )
        .expect("valid");
    assert_eq!(split3.public["ssl_enabled"], json!(true));

    let strict = pg
        .validate_new(&with(
            with(pg_config(), "ssl_mode", json!("verify-full")),
            "ssl_root_cert",
            json!(CERT),
        ))
        .expect("valid");
    // Re-sending ssl_enabled: true must not downgrade verify-full.
    let same = pg
        .validate_patch(
            &strict.public,
            &strict.secrets,
            &obj(json!({"ssl_enabled": true})),
        )
        .expect("valid");
    assert_eq!(same.public["ssl_mode"], json!("verify-full"));
    let (field, _) = field_of(pg.validate_patch(
        &strict.public,
        &strict.secrets,
        &obj(json!({"ssl_enabled": false})),
    ));
    assert_eq!(field, "config.ssl_enabled");
}

#[test]
fn patch_drops_stale_auth_fields_and_requires_the_new_ones() {
    let rest = ty("rest_api");
    let stored = rest
        .validate_new(&obj(
            json!({"base_url": "https://api.example.com", "auth_type": "bearer", "auth_token": "t"}),
        ))
        .expect("valid");
    let (field, _) = field_of(rest.validate_patch(
        &stored.public,
        &stored.secrets,
        &obj(json!({"auth_type": "basic"})),
    ));
    assert_eq!(field, "config.username");
    let patch = obj(json!({"auth_type": "basic", "username": "u", "password": "p"}));
    let split = rest
        .validate_patch(&stored.public, &stored.secrets, &patch)
        .expect("valid");
    assert_eq!(
        split.secrets,
        obj(json!({"password": "p"})),
        "the bearer token is dropped"
    );
    assert_eq!(split.public["username"], json!("u"));
    let (field, _) =
        field_of(rest.validate_patch(&split.public, &split.secrets, &obj(json!({"auth_token": "t2"}))));
    assert_eq!(field, "config.auth_token");
}

#[test]
fn patch_with_the_redacted_connection_string_keeps_the_stored_secret() {
    let mongo = ty("mongodb");
    let real = "mongodb://user:pass@db.example.com:27017/app";
    let stored = mongo
        .validate_new(&obj(json!({"connection_string": real, "database": "app"})))
        .expect("valid");
    let redacted = stored.public["connection_string"].clone();
    assert_eq!(redacted, json!("mongodb://user:****@db.example.com:27017/app"));

    let patch = obj(json!({"connection_string": redacted, "database": "app2"}));
    let split = mongo
        .validate_patch(&stored.public, &stored.secrets, &patch)
        .expect("valid");
    assert_eq!(split.secrets["connection_string"], json!(real));
    assert_eq!(
        split.public["connection_string"],
        stored.public["connection_string"]
    );
    assert_eq!(split.public["database"], json!("app2"));

    // An edited redacted string would store "****" as the password: refused.
    let edited = obj(json!({"connection_string": "mongodb://user:****@db2.example.com:27017/app"}));
    let (field, details) = field_of(mongo.validate_patch(&stored.public, &stored.secrets, &edited));
    assert_eq!(field, "config.connection_string");
    assert!(details.contains("placeholder"), "{details}");

    let replaced = obj(json!({"connection_string": "mongodb://other:pw2@db2.example.com/"}));
    let split = mongo
        .validate_patch(&stored.public, &stored.secrets, &replaced)
        .expect("valid");
    assert_eq!(
        split.secrets["connection_string"],
        json!("mongodb://other:pw2@db2.example.com/")
    );
    assert_eq!(
        split.public["connection_string"],
        json!("mongodb://other:****@db2.example.com/")
    );

    let omitted = mongo
        .validate_patch(
            &stored.public,
            &stored.secrets,
            &obj(json!({"auth_source": "app"})),
        )
        .expect("ok");
    assert_eq!(omitted.secrets["connection_string"], json!(real));
}

#[test]
fn patch_carries_over_stored_keys_the_schema_does_not_know() {
    let sf = ty("salesforce");
    let stored = sf.validate_new(&Map::new()).expect("valid");
    let secrets = obj(json!({"access_token": "at", "refresh_token": "rt"}));
    let patch = obj(json!({"instance_url": "https://acme.my.salesforce.com"}));
    let split = sf
        .validate_patch(&stored.public, &secrets, &patch)
        .expect("valid");
    assert_eq!(split.secrets, secrets);
    assert_eq!(
        split.public["instance_url"],
        json!("https://acme.my.salesforce.com")
    );
    // ... but a patch cannot set them.
    let (field, _) =
        field_of(sf.validate_patch(&stored.public, &secrets, &obj(json!({"access_token": "x"}))));
    assert_eq!(field, "config.access_token");
}

#[test]
fn schema_json_describes_fields() {
    let schema = ty("postgresql").schema_json();
    assert_eq!(schema["host"]["type"], json!("string"));
    assert_eq!(schema["host"]["required"], json!(true));
    assert_eq!(schema["port"]["default"], json!(5432));
    assert_eq!(schema["port"]["maximum"], json!(65535));
    assert_eq!(schema["password"]["secret"], json!(true));
    assert_eq!(
        schema["ssl_mode"]["enum"],
        json!([
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full"
        ])
    );
    assert_eq!(
        schema["ssl_root_cert"]["required_when"],
        json!({"ssl_mode": ["verify-ca", "verify-full"]})
    );
    let rest = ty("rest_api").schema_json();
    assert_eq!(
        rest["auth_token"]["applies_when"],
        json!({"auth_type": ["bearer"]})
    );
    let summary = ty("bigquery").summary_json();
    assert_eq!(summary["type"], json!("bigquery"));
    assert_eq!(summary["auth_type"], json!("oauth"));
    assert_eq!(summary["category"], json!("data_warehouse"));
    assert_eq!(summary["config_schema"]["project_id"]["required"], json!(true));
}

#[test]
fn merge_lays_secrets_over_public() {
    let public = obj(json!({"connection_string": "mongodb://u:****@h/", "database": "a"}));
    let secrets = obj(json!({"connection_string": "mongodb://u:p@h/"}));
    let merged = ConnectorType::merge(&public, &secrets);
    assert_eq!(merged["connection_string"], json!("mongodb://u:p@h/"));
    assert_eq!(merged["database"], json!("a"));
}

#[test]
fn auth_kind_round_trips() {
    for kind in [AuthKind::Credentials, AuthKind::OAuth] {
        assert_eq!(AuthKind::parse(kind.as_str()), Some(kind));
        assert_eq!(serde_json::to_value(kind).expect("json"), json!(kind.as_str()));
    }
}

#[test]
fn field_kinds_describe_themselves_with_json_schema_words() {
    let schema = |t: &str, f: &str| ty(t).field(f).map(FieldSpec::schema_json).unwrap_or_default();
    assert_eq!(schema("postgresql", "port")["type"], json!("integer"));
    assert_eq!(schema("postgresql", "ssl_enabled")["type"], json!("boolean"));
    assert_eq!(schema("postgresql", "host")["type"], json!("string"));
    assert_eq!(schema("postgresql", "host")["format"], json!("hostname"));
    assert_eq!(
        schema("postgresql", "ssl_root_cert")["format"],
        json!("pem-certificate")
    );
    assert_eq!(schema("rest_api", "base_url")["format"], json!("uri"));
    assert_eq!(schema("rest_api", "test_path")["format"], json!("uri-path"));
    assert_eq!(schema("rest_api", "headers")["type"], json!("object"));
    assert_eq!(schema("rest_api", "headers")["format"], json!("http-headers"));
    assert_eq!(schema("sqlite", "path")["format"], json!("path"));
    assert_eq!(
        schema("mongodb", "connection_string")["format"],
        json!("mongodb-uri")
    );
    assert_eq!(schema("mysql", "charset")["pattern"], json!("^[A-Za-z0-9_]+$"));
    assert_eq!(
        schema("bigquery", "project_id")["pattern"],
        json!("^[A-Za-z0-9][A-Za-z0-9._-]*$")
    );
    assert!(schema("postgresql", "database").get("format").is_none());
}
