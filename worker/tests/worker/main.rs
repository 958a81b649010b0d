//! The worker's integration suite: connector drivers and the pool registry
//! against real servers (PostgreSQL, MariaDB, Redis on 127.0.0.1; a private
//! PostgreSQL cluster, Redis and nx-27017 started by the tests).

mod helpers;

mod databricks;
mod mongo;
mod mysql;
mod pinning;
mod postgres;
mod postgres_tls;
mod redis;
mod registry;
mod rest;
mod runtime;
mod sandbox;
mod sqlite;
mod transform;
mod transform_bench;
