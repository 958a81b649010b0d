//! HTTP routes, one module per resource.

pub mod health;
pub mod projects;
pub mod steps;
