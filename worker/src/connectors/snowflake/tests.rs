//! The Snowflake family against the stand-in SQL API of the test kit.
