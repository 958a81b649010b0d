//! Fixtures for the extraction suite: fresh PostgreSQL and MariaDB
//! databases on the shared servers, SQLite files, a file:// target, an S3
//! target on a moto server the test starts itself, an object store that
//! counts multipart parts, and Parquet read-back. A missing service fails
//! the test with the command that provides it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use ferry_shared::domain::params::{BoundQuery, ParamValue};
use ferry_shared::objects::ObjectTarget;
pub use ferry_testkit::mariadb::mariadb;
use ferry_testkit::mariadb::{Grant, MariaDatabase};
use ferry_testkit::postgres::PgDatabase;
pub use ferry_testkit::{eventually, unique};
use ferry_worker::extract::{
    Destination, ExtractError, ExtractOptions, SqlSource, StepOutput, run_sql_step_with,
};
use futures::TryStreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;
use sqlx::postgres::PgPool;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub fn query(sql: &str, params: Vec<ParamValue>) -> BoundQuery {
    BoundQuery {
        sql: sql.to_owned(),
        params,
    }
}

// ---------------------------------------------------------------- PostgreSQL

pub async fn pg_pool(database: &str, size: u32) -> PgPool {
    ferry_testkit::postgres::pool_at(ferry_testkit::postgres::PORT, database, size).await
}

/// A fresh database on the shared server, dropped at the end of the test.
pub struct PgFixture {
    pub database: String,
    pub pool: PgPool,
    pub admin: PgPool,
    _database: PgDatabase,
}

pub async fn pg_fixture() -> PgFixture {
    pg_fixture_with("").await
}

/// A fresh database created with `options` (`ENCODING …`).
pub async fn pg_fixture_with(options: &str) -> PgFixture {
    let admin = pg_pool("postgres", 2).await;
    let database = PgDatabase::create_with("ferry_x", options);
    let pool = pg_pool(&database.name, 5).await;
    PgFixture {
        database: database.name.clone(),
        pool,
        admin,
        _database: database,
    }
}

impl PgFixture {
    pub fn source(&self) -> SqlSource {
        SqlSource::Postgres(self.pool.clone())
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A superuser pool on the fixture's database, apart from `pool`.
    pub async fn admin_of_database(&self) -> PgPool {
        pg_pool(&self.database, 1).await
    }

    /// Queries running in the fixture's database whose text contains `marker`.
    pub async fn running(&self, marker: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' \
             AND pid <> pg_backend_pid() AND query LIKE '%' || $2 || '%'",
        )
        .bind(&self.database)
        .bind(marker)
        .fetch_one(&self.admin)
        .await
        .expect("pg_stat_activity")
    }
}

// ------------------------------------------------------------------- MariaDB

/// A fresh database and a password user allowed on it; dropped on drop.
pub struct MariaFixture {
    pub database: String,
    pub pool: sqlx::MySqlPool,
    _database: MariaDatabase,
}

pub async fn maria_fixture() -> MariaFixture {
    let database = MariaDatabase::create("fx", Grant::Database);
    let options = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(3306)
        .username(&database.name)
        .password(&database.password)
        .database(&database.name)
        .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled);
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .unwrap_or_else(|error| {
            panic!("MariaDB on 127.0.0.1:3306 is required (scripts/services.sh): {error}")
        });
    MariaFixture {
        database: database.name.clone(),
        pool,
        _database: database,
    }
}

impl MariaFixture {
    pub fn source(&self) -> SqlSource {
        SqlSource::MySql(self.pool.clone())
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

// -------------------------------------------------------------------- SQLite

pub struct SqliteFixture {
    pub pool: sqlx::SqlitePool,
    _dir: TempDir,
}

pub async fn sqlite_fixture() -> SqliteFixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("db.sqlite"))
        .create_if_missing(true);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("sqlite");
    SqliteFixture { pool, _dir: dir }
}

impl SqliteFixture {
    pub fn source(&self) -> SqlSource {
        SqlSource::Sqlite(self.pool.clone())
    }

    pub async fn exec(&self, sql: &str) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

// ----------------------------------------------------------------- targets

/// A file:// target in a temporary directory.
pub struct FileTarget {
    pub target: ObjectTarget,
    pub dir: TempDir,
}

pub fn file_target() -> FileTarget {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url::Url::from_directory_path(dir.path().join("results-root")).expect("url");
    let target = ObjectTarget::open(url.as_str()).expect("open file target");
    FileTarget { target, dir }
}

impl FileTarget {
    /// Every file under the target directory (staging files included).
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        walk(&path, out);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out
    }
}

/// A moto S3 server on a free port with the bucket `ferry-results`,
/// killed on drop.
pub use ferry_testkit::peers::S3Peer;

pub async fn s3_peer() -> S3Peer {
    S3Peer::start("ferry-results").await
}

/// What the extraction tests do with an [`S3Peer`].
#[allow(async_fn_in_trait)]
pub trait S3PeerExt {
    fn target(&self, prefix: &str) -> ObjectTarget;
    fn object_url(&self, path: &Path) -> String;
    async fn open_uploads(&self) -> usize;
    async fn parts_at(object_url: &str, id: &str) -> usize;
}

impl S3PeerExt for S3Peer {
    /// An s3:// target on this server, opened the way the worker opens one.
    fn target(&self, prefix: &str) -> ObjectTarget {
        let options = self.target_options();
        let options: Vec<(&str, &str)> = options
            .iter()
            .map(|(key, value)| (*key, value.as_str()))
            .collect();
        ObjectTarget::open_with_options(&format!("s3://{}/{prefix}", self.bucket), &options)
            .expect("open s3 target")
    }

    /// The object's URL on this server (for a path of a target of it).
    fn object_url(&self, path: &Path) -> String {
        format!("http://127.0.0.1:{}/{}/{path}", self.port, self.bucket)
    }

    /// Multipart uploads the server holds open (`ListMultipartUploads`).
    async fn open_uploads(&self) -> usize {
        self.list_uploads().await.matches("<Upload>").count()
    }

    /// Parts uploaded so far to the upload `id` of the object at
    /// `object_url` (`ListParts`).
    async fn parts_at(object_url: &str, id: &str) -> usize {
        let body = reqwest::Client::new()
            .get(object_url)
            .query(&[("uploadId", id)])
            .send()
            .await
            .expect("list parts")
            .text()
            .await
            .expect("body");
        // AWS answers <ListPartsResult>, moto <ListPartsResponse>.
        assert!(
            body.contains(&format!("<UploadId>{id}</UploadId>")),
            "unexpected answer: {body}"
        );
        body.matches("<Part>").count()
    }
}

/// Wraps a store and counts the multipart parts written through it.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    pub parts: Arc<AtomicUsize>,
}

impl CountingStore {
    pub fn wrap(target: &ObjectTarget) -> (ObjectTarget, Arc<AtomicUsize>) {
        let parts = Arc::new(AtomicUsize::new(0));
        let store = CountingStore {
            inner: target.store.clone(),
            parts: parts.clone(),
        };
        let wrapped = target.with_store(Arc::new(store));
        (wrapped, parts)
    }
}

impl std::fmt::Display for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    parts: Arc<AtomicUsize>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner,
            parts: self.parts.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

// ------------------------------------------------------------------- running

/// Options with the given multipart part size (S3's minimum is 5 MiB).
pub fn options_with_parts(part_size: usize, row_group_rows: usize) -> ExtractOptions {
    let mut options = ExtractOptions::default();
    options.sink.part_size = part_size;
    options.sink.row_group_rows = row_group_rows;
    options
}

/// Runs a step with default options, no progress and an agreeing fence.
pub async fn extract(
    source: &SqlSource,
    query: &BoundQuery,
    target: &ObjectTarget,
    path: &Path,
) -> Result<StepOutput, ExtractError> {
    extract_with(&ExtractOptions::default(), source, query, target, path).await
}

pub async fn extract_with(
    options: &ExtractOptions,
    source: &SqlSource,
    query: &BoundQuery,
    target: &ObjectTarget,
    path: &Path,
) -> Result<StepOutput, ExtractError> {
    let cancel = CancellationToken::new();
    run_sql_step_with(
        options,
        source,
        query,
        &Destination::new(target, path),
        &|_, _| {},
        &cancel,
        || async { true },
    )
    .await
}

/// The object's bytes.
pub async fn object_bytes(target: &ObjectTarget, path: &Path) -> Bytes {
    target
        .store
        .get(path)
        .await
        .expect("get object")
        .bytes()
        .await
        .expect("object bytes")
}

/// Whether an object exists at `path`.
pub async fn exists(target: &ObjectTarget, path: &Path) -> bool {
    match target.store.head(path).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(other) => panic!("head {path}: {other}"),
    }
}

/// Every object under the target's prefix.
pub async fn objects(target: &ObjectTarget) -> Vec<Path> {
    let prefix = (!target.prefix.as_ref().is_empty()).then_some(&target.prefix);
    let listed: Vec<ObjectMeta> = target.store.list(prefix).try_collect().await.expect("list");
    listed.into_iter().map(|m| m.location).collect()
}

/// The object read back: its batches concatenated into one, and its metadata.
pub async fn read_parquet(target: &ObjectTarget, path: &Path) -> (RecordBatch, Arc<ParquetMetaData>) {
    let bytes = object_bytes(target, path).await;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("parquet reader");
    let metadata = builder.metadata().clone();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder
        .build()
        .expect("build")
        .collect::<Result<_, _>>()
        .expect("read batches");
    let batch = arrow::compute::concat_batches(&schema, &batches).expect("concat");
    (batch, metadata)
}
