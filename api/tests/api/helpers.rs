//! Test harness: `spawn_app()` starts the API on port 0 against a fresh
//! store and gives back a client that mints tokens (`ferry-testkit`).

pub use ferry_testkit::app::*;
