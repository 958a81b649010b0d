//! HTTP routes, one module per resource.

pub mod connectors;
pub mod executions;
pub mod health;
pub mod permissions;
pub mod projects;
pub mod steps;
