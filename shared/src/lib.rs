//! Ferry's shared core: domain types, identifiers, configuration, the error
//! vocabulary, the metadata store (PostgreSQL and SQLite), JWT verification
//! and telemetry. Nothing here knows about HTTP.

pub mod auth;
pub mod config;
pub mod domain;
pub mod error;
pub mod ids;
pub mod store;
pub mod telemetry;

pub use error::{Error, Result};
