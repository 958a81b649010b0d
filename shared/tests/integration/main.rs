//! Integration tests of the shared crate: the metadata store conformance
//! suite (PostgreSQL and SQLite) and JWT verification.

mod auth;
mod queue;
mod rotation;
mod store;
