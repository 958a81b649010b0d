//! The extraction suite: `sql_query` steps from PostgreSQL, MariaDB and
//! SQLite to Parquet on file:// and s3:// (a moto server the tests start),
//! plus the `bench_extraction` benchmark (ignored; run by
//! `loadtests/extraction/run.sh`). Needs the services of
//! `scripts/services.sh` and moto from `scripts/s3-peer.sh`.

mod bench;
mod every_column;
mod helpers;
mod mysql;
mod postgres;
mod sqlite;
mod storage;
