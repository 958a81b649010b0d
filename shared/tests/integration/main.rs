//! Integration tests of the shared crate: the metadata store conformance
//! suite (PostgreSQL and SQLite), the queue and key rotation.

mod queue;
mod rotation;
mod store;
