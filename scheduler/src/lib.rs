//! ferry scheduler role
