//! Black-box tests of the API role: a real server on 127.0.0.1 port 0, a
//! real metadata store (SQLite in a temp dir, or a fresh PostgreSQL
//! database), and HTTP requests as any client would send them.

mod helpers;

mod access;
mod api_keys;
mod auth;
mod concurrency_caps;
mod connectors;
mod databricks;
mod endpoints;
mod executing;
mod executions;
mod http_request;
mod hygiene;
mod limits;
mod mongo_query;
mod oauth;
mod openapi;
mod permissions;
mod probes;
mod projects;
mod redis_read;
mod results;
mod saas_extract;
mod shutdown;
mod steps;
mod transform;
mod warehouses;
mod webhooks;
