//! Ferry's shared core: domain types, identifiers, configuration, the error
//! vocabulary, the metadata store (PostgreSQL and SQLite), the queue
//! protocol, the credential vault, object storage and telemetry. Nothing here
//! knows about HTTP; JWT verification lives in the api crate.

pub mod admission;
pub mod backends;
pub mod config;
pub mod connectors;
pub mod domain;
pub mod error;
pub mod ids;
pub mod jobs;
pub mod network;
pub mod oauth_refresh;
pub mod objects;
pub mod queue;
pub mod rotation;
pub mod steps;
pub mod store;
pub mod telemetry;
pub mod vault;

pub use error::{Error, Result};
