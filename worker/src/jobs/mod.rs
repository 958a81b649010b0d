//! Job handlers, one module per job kind.

pub mod execute_project;
pub mod probe;
pub mod test_connection;
