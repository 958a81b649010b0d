//! JWT verification tests.
