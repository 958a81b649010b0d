//! The BigQuery family against the stand-in API of the test kit.
