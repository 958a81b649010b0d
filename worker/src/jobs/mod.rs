//! Job handlers, one module per job kind.

pub mod deliver_webhook;
pub mod execute_project;
pub mod probe;
pub mod test_connection;
