//! Fixtures for the extraction suite: fresh PostgreSQL and MariaDB
//! databases on the shared servers, SQLite files, a file:// target, an S3
//! target on a moto server the test starts itself, an object store that
//! counts multipart parts, and Parquet read-back. A missing service fails
//! the test with the command that provides it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use ferry_shared::domain::params::{BoundQuery, ParamValue};
use ferry_shared::objects::ObjectTarget;
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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// A name unique across the concurrently running test processes.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: could not run: {error}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn query(sql: &str, params: Vec<ParamValue>) -> BoundQuery {
    BoundQuery {
        sql: sql.to_owned(),
        params,
    }
}

// ---------------------------------------------------------------- PostgreSQL

fn pg_options(database: &str) -> PgConnectOptions {
    PgConnectOptions::new_without_pgpass()
        .host("127.0.0.1")
        .port(5432)
        .username("postgres")
        .database(database)
        .ssl_mode(PgSslMode::Disable)
}

pub async fn pg_pool(database: &str, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(pg_options(database))
        .await
        .unwrap_or_else(|error| {
            panic!("PostgreSQL on 127.0.0.1:5432 is required (scripts/services.sh): {error}")
        })
}

/// A fresh database on the shared server, dropped at the end of the test.
pub struct PgFixture {
    pub database: String,
    pub pool: PgPool,
    pub admin: PgPool,
}

pub async fn pg_fixture() -> PgFixture {
    pg_fixture_with("").await
}

/// A fresh database created with `options` (`ENCODING …`).
pub async fn pg_fixture_with(options: &str) -> PgFixture {
    let admin = pg_pool("postgres", 2).await;
    let database = unique("ferry_x");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {database} {options}"
    )))
    .execute(&admin)
    .await
    .expect("create database");
    let pool = pg_pool(&database, 5).await;
    PgFixture {
        database,
        pool,
        admin,
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

impl Drop for PgFixture {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database);
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
                &sql,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ------------------------------------------------------------------- MariaDB

pub const MARIADB_SOCKET: &str = "/run/mysqld/mysqld.sock";

/// Runs SQL as root through the server's socket (root has no password
/// there and cannot log in over TCP).
pub fn mariadb(sql: &str) -> String {
    run(
        Command::new("mariadb").args(["--socket", MARIADB_SOCKET, "-u", "root", "-N", "-B", "-e", sql]),
        "mariadb (is it running? scripts/services.sh)",
    )
}

/// A fresh database and a password user allowed on it; dropped on drop.
pub struct MariaFixture {
    pub database: String,
    pub pool: sqlx::MySqlPool,
}

pub async fn maria_fixture() -> MariaFixture {
    let name = unique("fx");
    let password = format!("pw-{}", unique("s"));
    mariadb(&format!(
        "CREATE DATABASE `{name}`; CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; \
         GRANT ALL ON `{name}`.* TO '{name}'@'%';"
    ));
    let options = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(3306)
        .username(&name)
        .password(&password)
        .database(&name)
        .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled);
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .unwrap_or_else(|error| {
            panic!("MariaDB on 127.0.0.1:3306 is required (scripts/services.sh): {error}")
        });
    MariaFixture { database: name, pool }
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

impl Drop for MariaFixture {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["--socket", MARIADB_SOCKET, "-u", "root", "-e"])
            .arg(format!(
                "DROP DATABASE IF EXISTS `{0}`; DROP USER IF EXISTS '{0}'@'%';",
                self.database
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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

/// The venv `scripts/s3-peer.sh` fills, installing moto if needed (under a
/// file lock: tests run in parallel processes).
pub fn s3_peer_venv() -> PathBuf {
    let venv = std::env::var_os("FERRY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/ferry-venv"));
    if venv.join("bin/moto_server").exists() {
        return venv;
    }
    let lock = std::fs::File::create(std::env::temp_dir().join("ferry-s3-peer.lock")).expect("lock file");
    lock.lock().expect("lock");
    if !venv.join("bin/moto_server").exists() {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-peer.sh");
        run(
            Command::new("bash").arg(script).env("FERRY_VENV", &venv),
            "scripts/s3-peer.sh (installs moto[server]; run it by hand to see why it failed)",
        );
    }
    venv
}

/// A moto S3 server on a free port with one bucket, killed on drop.
pub struct S3Peer {
    child: Child,
    pub port: u16,
    pub bucket: String,
}

pub async fn s3_peer() -> S3Peer {
    let venv = s3_peer_venv();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(venv.join("bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server (bash scripts/s3-peer.sh)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = reqwest::Client::new();
    loop {
        if client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_ok()
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("moto_server exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not listen on {port} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bucket = "ferry-results".to_owned();
    let created = client
        .put(format!("http://127.0.0.1:{port}/{bucket}"))
        .send()
        .await
        .expect("create bucket");
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );
    S3Peer { child, port, bucket }
}

impl S3Peer {
    /// An s3:// target on this server, opened the way the worker opens one.
    pub fn target(&self, prefix: &str) -> ObjectTarget {
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        ObjectTarget::open_with_options(
            &format!("s3://{}/{prefix}", self.bucket),
            &[
                ("aws_endpoint", endpoint.as_str()),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "testing"),
                ("aws_secret_access_key", "testing"),
            ],
        )
        .expect("open s3 target")
    }

    /// The object's URL on this server (for a path of a target of it).
    pub fn object_url(&self, path: &Path) -> String {
        format!("http://127.0.0.1:{}/{}/{path}", self.port, self.bucket)
    }

    /// Parts uploaded so far to the upload `id` of the object at
    /// `object_url` (`ListParts`).
    pub async fn parts_at(object_url: &str, id: &str) -> usize {
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

    /// Multipart uploads the server holds open (`ListMultipartUploads`).
    pub async fn open_uploads(&self) -> usize {
        let body = reqwest::get(format!("http://127.0.0.1:{}/{}?uploads", self.port, self.bucket))
            .await
            .expect("list uploads")
            .text()
            .await
            .expect("body");
        assert!(
            body.contains("ListMultipartUploadsResult"),
            "unexpected answer: {body}"
        );
        body.matches("<Upload>").count()
    }
}

impl Drop for S3Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
