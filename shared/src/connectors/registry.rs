//! The connector types Ferry ships: every type of the Connectors seed plus
//! `sqlite`, each with its config schema and help text. Field names and
//! defaults here are what the worker's drivers read.

use serde_json::json;

use super::{
    AuthKind, Capability, Category, ConnectorType, DriverFamily, FieldKind, FieldSpec, TypeId, defaults,
};
use crate::domain::StepType;
use crate::domain::params::Placeholder;

const PG_SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];
const MYSQL_SSL_MODES: &[&str] = &["disable", "prefer", "require", "verify-ca", "verify-full"];
const VERIFYING_MODES: &[&str] = &["verify-ca", "verify-full"];
const READ_PREFERENCES: &[&str] = &[
    "primary",
    "primaryPreferred",
    "secondary",
    "secondaryPreferred",
    "nearest",
];
const REST_AUTH_TYPES: &[&str] = &["none", "bearer", "basic", "api_key", "oauth2"];

const SQL: &[StepType] = &[StepType::SqlQuery];
const SAAS: &[StepType] = &[StepType::SaasExtract];
const CONNECTION_TIMEOUT: &str = "connection_timeout_seconds";

fn port(default: u16) -> FieldSpec {
    FieldSpec::new(
        "port",
        "Port",
        FieldKind::Integer { min: 1, max: 65535 },
        "TCP port of the server.",
    )
    .default(json!(default))
    .endpoint()
}

fn host() -> FieldSpec {
    FieldSpec::new(
        "host",
        "Host",
        FieldKind::Host,
        "DNS name or IP address of the server (no scheme, port, path or socket).",
    )
    .required()
    .endpoint()
}

/// Pool and timeout fields every database type accepts.
fn pool_fields() -> Vec<FieldSpec> {
    [
        (
            CONNECTION_TIMEOUT,
            "Connection timeout",
            600,
            "Seconds to wait for a new connection (or a free pooled one).",
            defaults::CONNECTION_TIMEOUT_SECONDS,
        ),
        (
            "max_connections",
            "Max connections",
            100,
            "Most connections each worker keeps open to this server.",
            defaults::MAX_CONNECTIONS,
        ),
        (
            "idle_timeout_seconds",
            "Idle timeout",
            86_400,
            "A pooled connection idle this long is closed.",
            defaults::IDLE_TIMEOUT_SECONDS,
        ),
        (
            "max_lifetime_seconds",
            "Max lifetime",
            86_400,
            "A pooled connection is replaced after this long.",
            defaults::MAX_LIFETIME_SECONDS,
        ),
        (
            "statement_timeout_seconds",
            "Statement timeout",
            86_400,
            "A query running longer is cancelled and its step fails with a timeout.",
            defaults::STATEMENT_TIMEOUT_SECONDS,
        ),
    ]
    .into_iter()
    .map(|(name, label, max, description, default)| {
        FieldSpec::new(name, label, FieldKind::Integer { min: 1, max }, description).default(json!(default))
    })
    .chain([FieldSpec::new(
        "max_concurrent_steps",
        "Max concurrent steps",
        FieldKind::Integer { min: 1, max: 10_000 },
        "Most steps using this connector at once across every worker of the fleet (unset: no cap). \
         Enforced by a lease-based semaphore in the metadata store: a step takes one of these slots \
         before it connects, renews it while it runs and releases it when it ends; a dead worker's \
         slot frees itself within the job lease. Steps that find every slot taken wait in the order \
         they started waiting, and stop waiting when their execution is cancelled. \
         max_connections stays each worker's own pool size.",
    )])
    .collect()
}

fn ssl_fields(modes: &'static [&'static str]) -> Vec<FieldSpec> {
    vec![
        FieldSpec::new(
            "ssl_enabled",
            "SSL enabled",
            FieldKind::Boolean,
            "Encrypt the connection. Alone, true means ssl_mode require; derived from ssl_mode when only that is given.",
        )
        .default(json!(false)),
        FieldSpec::new(
            "ssl_mode",
            "SSL mode",
            FieldKind::Enum(modes),
            "TLS policy: disable, prefer (opportunistic), require (encrypted, certificate not checked), \
             verify-ca (certificate chains to ssl_root_cert), verify-full (and names the host). \
             Default prefer, or require when ssl_enabled is true.",
        )
        .default(json!("prefer")),
        FieldSpec::new(
            "ssl_root_cert",
            "SSL root certificate",
            FieldKind::Pem,
            "PEM CA certificate(s) that sign the server certificate; required for verify-ca and verify-full. \
             Public, not a secret.",
        )
        .required_when("ssl_mode", VERIFYING_MODES),
    ]
}

fn credentials(user_required: bool) -> Vec<FieldSpec> {
    let username = FieldSpec::new("username", "Username", FieldKind::String, "User to log in as.");
    let password = FieldSpec::new(
        "password",
        "Password",
        FieldKind::String,
        "Password of the user; sealed, never returned.",
    )
    .secret();
    if user_required {
        vec![username.required(), password.required()]
    } else {
        vec![username, password]
    }
}

fn database() -> FieldSpec {
    FieldSpec::new(
        "database",
        "Database",
        FieldKind::String,
        "Database to connect to.",
    )
    .required()
    .endpoint()
}

fn docs_url(type_id: TypeId) -> String {
    format!("/docs#connector-{type_id}")
}

const POSTGRESQL_DOCS: &str = "Connects to a PostgreSQL server over TCP. `host` is a DNS name or IP address only \
(no scheme, port, socket path or user name); the port goes in `port` (5432). `username` and `password` \
authenticate; the password is sealed with AES-256-GCM and never returned. TLS follows libpq's `ssl_mode`: \
`disable` never encrypts; `allow` and `prefer` encrypt when the server offers it, without checking its \
certificate; `require` always encrypts but does not check the certificate; `verify-ca` checks that the \
certificate chains to `ssl_root_cert` (a PEM CA certificate, required for this mode and `verify-full`); \
`verify-full` also checks that it names `host`. `ssl_enabled: true` alone means `require`. Each worker keeps at \
most `max_connections` connections (default 5), closes idle ones after `idle_timeout_seconds` and replaces them \
after `max_lifetime_seconds`; `statement_timeout_seconds` bounds every query. Steps run in read-only \
transactions (`default_transaction_read_only`) unless `allow_writes` is true, and every connection is reset \
with `DISCARD ALL` before it is reused. Give Ferry a read-only role all the same.";

const REDSHIFT_DOCS: &str = "Connects to an Amazon Redshift cluster or Serverless workgroup through its \
PostgreSQL-compatible endpoint. `host` is the endpoint's DNS name only (e.g. \
`examplecluster.abc123.us-west-2.redshift.amazonaws.com`, without `:5439/dev`); `port` defaults to 5439. \
`username` and `password` are a database user's (the password is sealed, never returned). Redshift accepts TLS; \
use `ssl_mode` `require`, or `verify-full` with Amazon's CA bundle in `ssl_root_cert`. Pool, timeout and \
`allow_writes` fields work as for PostgreSQL; a connection serves one step and is then closed.";

const MYSQL_DOCS: &str = "Connects to a MySQL or MariaDB server over TCP. `host` is a DNS name or IP address only; \
`port` defaults to 3306. `username` and `password` authenticate; the password is sealed, never returned. \
`ssl_mode`: `disable`, `prefer` (encrypt when offered), `require` (always encrypt, no certificate check), \
`verify-ca` and `verify-full` (check the certificate against `ssl_root_cert`, and for `verify-full` the host \
name). `charset` (default `utf8mb4`) is the connection character set, letters, digits and `_` only. Pool and \
timeout fields as for PostgreSQL.";

const MONGODB_DOCS: &str = "Connects to MongoDB with a standard `mongodb://` or `mongodb+srv://` connection \
string. The whole string is sealed because it carries the password; responses show it with the password \
replaced by `****`. Sending that redacted form back in a PATCH keeps the stored string. Characters `@ : / ? #` in \
the user name or password must be percent-encoded. URI options are limited to connection, pool, TLS, read and \
write settings (no file paths such as `tlsCAFile`, and only SCRAM authentication); `auth_source` (default \
`admin`), `replica_set` and `read_preference` (default `primary`) take precedence over the same options in the \
string, as do the pool and timeout fields. `database` is the database steps read from.";

const REDIS_DOCS: &str = "Connects to a Redis (or Valkey) server. `host` is a DNS name or IP address only; `port` \
defaults to 6379. `username` (Redis 6 ACL user) and `password` are optional; the password is sealed. \
`database` selects the logical database (default 0). `tls: true` connects with TLS and verifies the server \
certificate against the public web roots. `redis_read` steps only read keys (SCAN, GET, HGETALL, JSON.GET).";

const DATABRICKS_DOCS: &str = "Runs SQL on a Databricks SQL warehouse or cluster. From the warehouse's \
'Connection details': `server_hostname` (e.g. `dbc-a1b2c3d4-e5f6.cloud.databricks.com`) and `http_path` (e.g. \
`/sql/1.0/warehouses/abc123`). `access_token` is a personal access token or a service principal's token; it is \
sealed, never returned. `catalog` and `schema` set the default namespace for unqualified table names.";

const REST_API_DOCS: &str = "Reads JSON from an HTTP API. `base_url` is an http(s) URL without credentials, query \
or fragment; each `http_request` step appends its path to it. `auth_type` chooses how requests authenticate: \
`none`; `bearer` sends `Authorization: Bearer <auth_token>`; `basic` sends `username` and `password`; `api_key` \
sends `api_key_value` in the header named `api_key_header`; `oauth2` obtains tokens from `token_url` with the \
client-credentials grant (`client_id`, `client_secret`, optional `scope`). Tokens, passwords, key values and the \
client secret are sealed and never returned. `headers` adds fixed, non-secret headers (Authorization and Cookie \
are refused there: use `auth_type`). `timeout_seconds` bounds each request; `test_path` (e.g. `/health`) is \
what a connection test requests (default: `base_url` itself).";

const SQLITE_DOCS: &str = "Reads a SQLite database file, opened read-only. Each organization has its own folder \
in the server's `FERRY_SQLITE_DIR` (default `$FERRY_DATA_DIR/sqlite`): `<FERRY_SQLITE_DIR>/<org_id>/`, and \
`path` is relative to that folder; an absolute path is accepted only when it lies inside it, which the worker \
checks after resolving symbolic links, so one organization never opens another's files. `..` components, URI \
syntax and `:memory:` are refused. Steps only read: a statement that would write (including `VACUUM INTO` and \
temporary tables) is refused with `invalid_query`. Pool and timeout fields apply as for other databases.";

const BIGQUERY_DOCS: &str = "Runs SQL on Google BigQuery with the OAuth grant of the user who connected it \
(scope `bigquery.readonly` by default). `project_id` is the project that runs (and is billed for) the jobs; \
`dataset` is the default dataset for unqualified table names; `location` (default `US`) is where jobs run. \
Queries are GoogleSQL run through `jobs.query`, their rows read page by page; `{{name}}` parameters are bound \
as typed positional query parameters. `statement_timeout_seconds` bounds each job and \
`connection_timeout_seconds` a connection test (`SELECT 1`). Tokens are sealed and refreshed automatically \
before they expire, and once more when BigQuery refuses one.";

const SNOWFLAKE_DOCS: &str = "Runs SQL on Snowflake through its OAuth integration. `account` is the account \
identifier (`orgname-accountname`, or a locator like `xy12345.us-east-1`), which also names the OAuth \
endpoints; `warehouse` runs the queries; `database` and `schema` (default `PUBLIC`) set the namespace; `role` \
overrides the user's default role. Statements run through the SQL API v2 and their results are read \
partition by partition; `{{name}}` parameters are bound, never spliced into the text. \
`statement_timeout_seconds` bounds each statement and `connection_timeout_seconds` a connection test \
(`SELECT CURRENT_VERSION()`). Tokens are sealed and refreshed automatically, and once more when Snowflake \
refuses one.";

const SALESFORCE_DOCS: &str = "Extracts Salesforce objects (SOQL) with the OAuth grant of the user who connected \
it. `instance_url` is filled in from the token response and normally left alone; `api_version` defaults to \
`v59.0`; `sandbox: true` authorizes against test.salesforce.com. Tokens are sealed and refreshed \
automatically.";

const HUBSPOT_DOCS: &str = "Extracts HubSpot CRM objects (contacts, companies, deals, ...) with an OAuth grant. \
`portal_id` (the HubSpot account id) is recorded from the grant when not given. Tokens are sealed and refreshed \
automatically.";

const STRIPE_DOCS: &str = "Extracts Stripe objects (charges, customers, invoices, subscriptions, ...) through \
Stripe Connect OAuth. `account_id` (`acct_...`) is the connected account, recorded from the grant. Tokens are \
sealed, never returned.";

const GOOGLE_ANALYTICS_DOCS: &str = "Runs Google Analytics 4 Data API reports with the OAuth grant of the user \
who connected it (scope `analytics.readonly`). `property_id` is the numeric GA4 property id (Admin → Property \
settings). Tokens are sealed and refreshed automatically.";

const AZURE_DOCS: &str = "Reads Microsoft Azure resources through Microsoft Entra ID OAuth. `tenant_id` is the \
directory (tenant) id or domain, which names the authorization endpoints; `subscription_id` scopes Resource \
Manager requests; `resource` is the API the tokens are for (default \
`https://management.azure.com/`). Tokens are sealed and refreshed automatically.";

/// Builds the registry (called once, lazily).
pub(super) fn build() -> Vec<ConnectorType> {
    vec![
        postgres_like(
            TypeId::Postgresql,
            "PostgreSQL",
            "PostgreSQL database server",
            Category::Database,
            defaults::POSTGRESQL_PORT,
            POSTGRESQL_DOCS,
        ),
        mysql(),
        mongodb(),
        redis(),
        postgres_like(
            TypeId::Redshift,
            "Amazon Redshift",
            "Amazon Redshift data warehouse",
            Category::DataWarehouse,
            defaults::REDSHIFT_PORT,
            REDSHIFT_DOCS,
        ),
        databricks(),
        rest_api(),
        bigquery(),
        snowflake(),
        salesforce(),
        hubspot(),
        stripe(),
        google_analytics(),
        azure(),
        sqlite(),
    ]
}

fn postgres_like(
    type_id: TypeId,
    name: &'static str,
    description: &'static str,
    category: Category,
    default_port: u16,
    documentation: &'static str,
) -> ConnectorType {
    let mut fields = vec![host(), port(default_port), database()];
    fields.extend(credentials(true));
    fields.extend(ssl_fields(PG_SSL_MODES));
    fields.push(
        FieldSpec::new(
            "allow_writes",
            "Allow writes",
            FieldKind::Boolean,
            "Let steps write. By default every step runs in a read-only transaction \
             (default_transaction_read_only), so INSERT, UPDATE, DELETE and CREATE fail.",
        )
        .default(json!(false)),
    );
    fields.extend(pool_fields());
    ConnectorType {
        type_id,
        name,
        description,
        category,
        auth_type: AuthKind::Credentials,
        steps: SQL,
        capabilities: &[],
        documentation,
        documentation_url: docs_url(type_id),
        fields,
        ssl_pair: true,
        driver: Some(DriverFamily::Postgres),
        placeholder: Some(Placeholder::Dollar),
        test_timeout_field: Some(CONNECTION_TIMEOUT),
    }
}

fn mysql() -> ConnectorType {
    let mut fields = vec![host(), port(defaults::MYSQL_PORT), database()];
    fields.extend(credentials(true));
    fields.extend(ssl_fields(MYSQL_SSL_MODES));
    fields.push(
        FieldSpec::new("charset", "Charset", FieldKind::Word, "Connection character set.")
            .default(json!(defaults::MYSQL_CHARSET)),
    );
    fields.extend(pool_fields());
    ConnectorType {
        type_id: TypeId::Mysql,
        name: "MySQL",
        description: "MySQL database server",
        category: Category::Database,
        auth_type: AuthKind::Credentials,
        steps: SQL,
        capabilities: &[],
        documentation: MYSQL_DOCS,
        documentation_url: docs_url(TypeId::Mysql),
        fields,
        ssl_pair: true,
        driver: Some(DriverFamily::Mysql),
        placeholder: Some(Placeholder::Question),
        test_timeout_field: Some(CONNECTION_TIMEOUT),
    }
}

fn mongodb() -> ConnectorType {
    let mut fields = vec![
        FieldSpec::new(
            "connection_string",
            "Connection string",
            FieldKind::MongoUri,
            "mongodb:// or mongodb+srv:// connection string; sealed as a whole, shown with its password as ****.",
        )
        .required()
        .secret()
        .endpoint(),
        FieldSpec::new("database", "Database", FieldKind::String, "Database that steps read from.").required(),
        FieldSpec::new(
            "auth_source",
            "Auth source",
            FieldKind::String,
            "Database that holds the user's credentials.",
        )
        .default(json!(defaults::MONGODB_AUTH_SOURCE)),
        FieldSpec::new("replica_set", "Replica set", FieldKind::String, "Replica set name, when connecting to one."),
        FieldSpec::new(
            "read_preference",
            "Read preference",
            FieldKind::Enum(READ_PREFERENCES),
            "Which members serve reads.",
        )
        .default(json!("primary")),
    ];
    fields.extend(pool_fields());
    ConnectorType {
        type_id: TypeId::Mongodb,
        name: "MongoDB",
        description: "MongoDB document database",
        category: Category::Database,
        auth_type: AuthKind::Credentials,
        steps: &[StepType::MongoQuery],
        capabilities: &[],
        documentation: MONGODB_DOCS,
        documentation_url: docs_url(TypeId::Mongodb),
        fields,
        ssl_pair: false,
        driver: Some(DriverFamily::Mongodb),
        placeholder: None,
        test_timeout_field: Some(CONNECTION_TIMEOUT),
    }
}

fn redis() -> ConnectorType {
    let mut fields = vec![host(), port(defaults::REDIS_PORT)];
    fields.extend(credentials(false));
    fields.push(
        FieldSpec::new(
            "database",
            "Database",
            FieldKind::Integer { min: 0, max: 1023 },
            "Logical database number.",
        )
        .default(json!(0)),
    );
    fields.push(FieldSpec::new("tls", "TLS", FieldKind::Boolean, "Connect with TLS.").default(json!(false)));
    fields.push(
        FieldSpec::new(
            "cluster",
            "Cluster",
            FieldKind::Boolean,
            "The server is a Redis Cluster node: keys are scanned on every primary and commands follow the cluster's redirections.",
        )
        .default(json!(false)),
    );
    fields.extend(pool_fields());
    ConnectorType {
        type_id: TypeId::Redis,
        name: "Redis",
        description: "Redis key-value store",
        category: Category::Database,
        auth_type: AuthKind::Credentials,
        steps: &[StepType::RedisRead],
        capabilities: &[],
        documentation: REDIS_DOCS,
        documentation_url: docs_url(TypeId::Redis),
        fields,
        ssl_pair: false,
        driver: Some(DriverFamily::Redis),
        placeholder: None,
        test_timeout_field: Some(CONNECTION_TIMEOUT),
    }
}

fn databricks() -> ConnectorType {
    let mut fields = vec![
        FieldSpec::new(
            "server_hostname",
            "Server hostname",
            FieldKind::Host,
            "Workspace host name from the warehouse's connection details.",
        )
        .required()
        .endpoint(),
        port(defaults::DATABRICKS_PORT),
        FieldSpec::new(
            "http_path",
            "HTTP path",
            FieldKind::UrlPath,
            "HTTP path of the SQL warehouse or cluster (e.g. /sql/1.0/warehouses/abc123).",
        )
        .required(),
        FieldSpec::new(
            "access_token",
            "Access token",
            FieldKind::String,
            "Personal access token or service principal token; sealed, never returned.",
        )
        .required()
        .secret(),
        FieldSpec::new("catalog", "Catalog", FieldKind::String, "Default catalog."),
        FieldSpec::new("schema", "Schema", FieldKind::String, "Default schema."),
    ];
    fields.extend(pool_fields());
    ConnectorType {
        type_id: TypeId::Databricks,
        name: "Databricks",
        description: "Databricks SQL warehouse",
        category: Category::DataWarehouse,
        auth_type: AuthKind::Credentials,
        steps: SQL,
        capabilities: &[],
        documentation: DATABRICKS_DOCS,
        documentation_url: docs_url(TypeId::Databricks),
        fields,
        ssl_pair: false,
        driver: Some(DriverFamily::Databricks),
        placeholder: Some(Placeholder::Named),
        test_timeout_field: Some(CONNECTION_TIMEOUT),
    }
}

fn rest_api() -> ConnectorType {
    let fields = vec![
        FieldSpec::new(
            "base_url",
            "Base URL",
            FieldKind::Url,
            "http(s) URL that step paths are appended to; no credentials, query or fragment.",
        )
        .required()
        .endpoint(),
        FieldSpec::new(
            "auth_type",
            "Auth type",
            FieldKind::Enum(REST_AUTH_TYPES),
            "How requests authenticate.",
        )
        .default(json!("none")),
        FieldSpec::new(
            "auth_token",
            "Auth token",
            FieldKind::String,
            "Bearer token; sealed.",
        )
        .secret()
        .only_when("auth_type", &["bearer"]),
        FieldSpec::new(
            "api_key_header",
            "API key header",
            FieldKind::Name,
            "Header that carries the API key (e.g. X-API-Key).",
        )
        .only_when("auth_type", &["api_key"]),
        FieldSpec::new(
            "api_key_value",
            "API key value",
            FieldKind::String,
            "The API key; sealed.",
        )
        .secret()
        .only_when("auth_type", &["api_key"]),
        FieldSpec::new(
            "username",
            "Username",
            FieldKind::String,
            "Basic authentication user.",
        )
        .only_when("auth_type", &["basic"]),
        FieldSpec::new(
            "password",
            "Password",
            FieldKind::String,
            "Basic authentication password; sealed.",
        )
        .secret()
        .only_when("auth_type", &["basic"]),
        FieldSpec::new(
            "token_url",
            "Token URL",
            FieldKind::Url,
            "OAuth 2.0 token endpoint (client-credentials grant).",
        )
        .only_when("auth_type", &["oauth2"])
        .endpoint(),
        FieldSpec::new(
            "client_id",
            "Client ID",
            FieldKind::String,
            "OAuth 2.0 client id.",
        )
        .only_when("auth_type", &["oauth2"]),
        FieldSpec::new(
            "client_secret",
            "Client secret",
            FieldKind::String,
            "OAuth 2.0 client secret; sealed.",
        )
        .secret()
        .only_when("auth_type", &["oauth2"]),
        FieldSpec::new(
            "scope",
            "Scope",
            FieldKind::String,
            "Space-separated OAuth 2.0 scopes to request.",
        )
        .applies_when("auth_type", &["oauth2"]),
        FieldSpec::new(
            "headers",
            "Headers",
            FieldKind::Headers,
            "Extra, non-secret headers sent with every request.",
        ),
        FieldSpec::new(
            "timeout_seconds",
            "Timeout",
            FieldKind::Integer { min: 1, max: 600 },
            "Seconds each request may take.",
        )
        .default(json!(defaults::REST_TIMEOUT_SECONDS)),
        FieldSpec::new(
            "test_path",
            "Test path",
            FieldKind::UrlPath,
            "Path a connection test requests (default: the base URL itself).",
        ),
    ];
    ConnectorType {
        type_id: TypeId::RestApi,
        name: "REST API",
        description: "Generic HTTP JSON API",
        category: Category::Api,
        auth_type: AuthKind::Credentials,
        steps: &[StepType::HttpRequest],
        capabilities: &[],
        documentation: REST_API_DOCS,
        documentation_url: docs_url(TypeId::RestApi),
        fields,
        ssl_pair: false,
        driver: Some(DriverFamily::Rest),
        placeholder: None,
        test_timeout_field: Some("timeout_seconds"),
    }
}

/// An OAuth type (without a worker driver until one is set).
fn oauth_type(
    type_id: TypeId,
    name: &'static str,
    description: &'static str,
    category: Category,
    steps: &'static [StepType],
    documentation: &'static str,
    fields: Vec<FieldSpec>,
) -> ConnectorType {
    ConnectorType {
        type_id,
        name,
        description,
        category,
        auth_type: AuthKind::OAuth,
        steps,
        capabilities: &[],
        documentation,
        documentation_url: docs_url(type_id),
        fields,
        ssl_pair: false,
        driver: None,
        placeholder: None,
        test_timeout_field: None,
    }
}

fn bigquery() -> ConnectorType {
    let base = oauth_type(
        TypeId::Bigquery,
        "Google BigQuery",
        "Google Cloud data warehouse",
        Category::DataWarehouse,
        SQL,
        BIGQUERY_DOCS,
        vec![
            FieldSpec::new(
                "project_id",
                "Project ID",
                FieldKind::Name,
                "Google Cloud project that runs the jobs.",
            )
            .required(),
            FieldSpec::new("dataset", "Dataset", FieldKind::Word, "Default dataset."),
            FieldSpec::new(
                "location",
                "Location",
                FieldKind::Name,
                "Where jobs run (US, EU, europe-west1, ...).",
            )
            .default(json!("US")),
        ]
        .into_iter()
        .chain(pool_fields())
        .collect(),
    );
    ConnectorType {
        capabilities: &[Capability::Streaming, Capability::Partitioning],
        ..sql_driver(base, DriverFamily::Bigquery)
    }
}

/// An OAuth type whose `sql_query` steps run on `family`, with positional
/// `?` parameters and `connection_timeout_seconds` bounding its tests.
fn sql_driver(base: ConnectorType, family: DriverFamily) -> ConnectorType {
    ConnectorType {
        driver: Some(family),
        placeholder: Some(Placeholder::Question),
        test_timeout_field: Some(CONNECTION_TIMEOUT),
        ..base
    }
}

fn snowflake() -> ConnectorType {
    let base = oauth_type(
        TypeId::Snowflake,
        "Snowflake",
        "Snowflake cloud data warehouse",
        Category::DataWarehouse,
        SQL,
        SNOWFLAKE_DOCS,
        vec![
            FieldSpec::new(
                "account",
                "Account",
                FieldKind::Name,
                "Account identifier (orgname-accountname or xy12345.us-east-1).",
            )
            .required()
            .endpoint(),
            FieldSpec::new(
                "warehouse",
                "Warehouse",
                FieldKind::String,
                "Virtual warehouse that runs queries.",
            )
            .required(),
            FieldSpec::new("database", "Database", FieldKind::String, "Default database.").required(),
            FieldSpec::new("schema", "Schema", FieldKind::String, "Default schema.").default(json!("PUBLIC")),
            FieldSpec::new(
                "role",
                "Role",
                FieldKind::String,
                "Role to use instead of the user's default.",
            ),
        ]
        .into_iter()
        .chain(pool_fields())
        .collect(),
    );
    sql_driver(base, DriverFamily::Snowflake)
}

fn salesforce() -> ConnectorType {
    saas_driver(oauth_type(
        TypeId::Salesforce,
        "Salesforce",
        "Salesforce CRM",
        Category::Crm,
        SAAS,
        SALESFORCE_DOCS,
        vec![
            FieldSpec::new(
                "instance_url",
                "Instance URL",
                FieldKind::Url,
                "Org's API base URL; filled in from the OAuth token response.",
            )
            .endpoint(),
            FieldSpec::new("api_version", "API version", FieldKind::Name, "REST API version.")
                .default(json!("v59.0")),
            FieldSpec::new(
                "sandbox",
                "Sandbox",
                FieldKind::Boolean,
                "Authorize against test.salesforce.com.",
            )
            .default(json!(false)),
        ],
    ))
}

fn hubspot() -> ConnectorType {
    saas_driver(oauth_type(
        TypeId::Hubspot,
        "HubSpot",
        "HubSpot CRM and marketing platform",
        Category::Crm,
        SAAS,
        HUBSPOT_DOCS,
        vec![FieldSpec::new(
            "portal_id",
            "Portal ID",
            FieldKind::Name,
            "HubSpot account (portal) id; recorded from the grant.",
        )],
    ))
}

fn stripe() -> ConnectorType {
    saas_driver(oauth_type(
        TypeId::Stripe,
        "Stripe",
        "Stripe payments platform",
        Category::Payments,
        SAAS,
        STRIPE_DOCS,
        vec![FieldSpec::new(
            "account_id",
            "Account ID",
            FieldKind::Name,
            "Connected account id (acct_...); recorded from the grant.",
        )],
    ))
}

fn google_analytics() -> ConnectorType {
    saas_driver(oauth_type(
        TypeId::GoogleAnalytics,
        "Google Analytics",
        "Google Analytics 4 reporting",
        Category::Analytics,
        SAAS,
        GOOGLE_ANALYTICS_DOCS,
        vec![
            FieldSpec::new(
                "property_id",
                "Property ID",
                FieldKind::Name,
                "Numeric GA4 property id.",
            )
            .required(),
        ],
    ))
}

/// An OAuth type whose `saas_extract` steps run on the SaaS family
/// (`worker/src/connectors/saas/`).
fn saas_driver(base: ConnectorType) -> ConnectorType {
    ConnectorType {
        driver: Some(DriverFamily::Saas),
        ..base
    }
}

fn azure() -> ConnectorType {
    oauth_type(
        TypeId::Azure,
        "Microsoft Azure",
        "Microsoft Azure cloud resources",
        Category::Cloud,
        SAAS,
        AZURE_DOCS,
        vec![
            FieldSpec::new(
                "tenant_id",
                "Tenant ID",
                FieldKind::Name,
                "Directory (tenant) id or domain.",
            )
            .required(),
            FieldSpec::new(
                "subscription_id",
                "Subscription ID",
                FieldKind::Name,
                "Subscription that Resource Manager requests are scoped to.",
            ),
            FieldSpec::new(
                "resource",
                "Resource",
                FieldKind::Url,
                "API the tokens are issued for.",
            )
            .default(json!("https://management.azure.com/")),
        ],
    )
}

fn sqlite() -> ConnectorType {
    let mut fields = vec![
        FieldSpec::new(
            "path",
            "Path",
            FieldKind::FilePath,
            "Database file, relative to the organization's folder FERRY_SQLITE_DIR/<org_id>/ \
             (an absolute path must lie inside that folder).",
        )
        .required()
        .endpoint(),
    ];
    fields.extend(pool_fields());
    ConnectorType {
        type_id: TypeId::Sqlite,
        name: "SQLite",
        description: "SQLite database file on the server",
        category: Category::Database,
        auth_type: AuthKind::Credentials,
        steps: SQL,
        capabilities: &[],
        documentation: SQLITE_DOCS,
        documentation_url: docs_url(TypeId::Sqlite),
        fields,
        ssl_pair: false,
        driver: Some(DriverFamily::Sqlite),
        placeholder: Some(Placeholder::Question),
        test_timeout_field: Some(CONNECTION_TIMEOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The help text repeats some defaults in prose: it must say what the
    /// declaration (and so the API and the worker) use.
    #[test]
    fn the_documentation_states_the_declared_defaults() {
        for (type_id, field) in [
            (TypeId::Postgresql, "port"),
            (TypeId::Redshift, "port"),
            (TypeId::Mysql, "port"),
            (TypeId::Mysql, "charset"),
            (TypeId::Redis, "port"),
            (TypeId::Mongodb, "auth_source"),
        ] {
            let decl = type_id.decl();
            let default = match decl.default_value(field) {
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
                None => panic!("{type_id}.{field} declares no default"),
            };
            assert!(
                decl.documentation.contains(&default),
                "{type_id}'s documentation does not mention {field}'s default {default}"
            );
        }
    }
}
