//! PostgreSQL and SQLite implementations of [`super::Store`].
