//! SQLite connectors: files inside the worker's SQLite directory, opened
//! read-only.

use std::path::Path;

use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use crate::helpers::{ORG, harness, spec};

async fn create_database(path: &Path) {
    let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let pool = SqlitePool::connect_with(options)
        .await
        .expect("create sqlite file");
    sqlx::raw_sql("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        .execute(&pool)
        .await
        .expect("seed");
    pool.close().await;
}

#[tokio::test]
async fn sqlite_file_in_the_directory_opens_read_only_and_writes_through_the_pool_fail() {
    let h = harness(false);
    create_database(&h.org_dir(ORG).join("data.db")).await;
    let spec = spec("sqlite", json!({"path": "data.db"}));

    let outcome = h.registry.test(&spec).await;
    assert_eq!(outcome.error, None);
    assert!(outcome.version.expect("version").starts_with("SQLite 3."));
    assert_eq!(outcome.schemas_available, Some(vec!["main".to_owned()]));

    let pool = h.registry.sqlite(&spec).await.expect("pool");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&pool)
        .await
        .expect("read");
    assert_eq!(rows, 1);
    let write = sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&pool)
        .await
        .expect_err("read-only");
    let code = write
        .as_database_error()
        .and_then(|error| error.code())
        .map(|code| code.into_owned());
    assert_eq!(code.as_deref(), Some("8"), "SQLITE_READONLY");
    let absolute = h.org_dir(ORG).join("data.db");
    let absolute_spec = crate::helpers::spec("sqlite", json!({"path": absolute.to_str().expect("utf-8")}));
    assert_eq!(
        h.registry.test(&absolute_spec).await.error,
        None,
        "an absolute path inside the directory is fine"
    );
}

#[tokio::test]
async fn sqlite_paths_escaping_the_directory_are_refused() {
    let h = harness(false);
    let outside = tempfile::Builder::new()
        .prefix("ferry-outside-")
        .tempdir()
        .expect("outside dir");
    let secret = outside.path().join("secret.db");
    create_database(&secret).await;
    std::os::unix::fs::symlink(&secret, h.org_dir(ORG).join("link.db")).expect("symlink");
    let sibling = format!(
        "../{}/secret.db",
        outside
            .path()
            .file_name()
            .and_then(|name| name.to_str())
            .expect("name")
    );

    for path in [
        sibling.as_str(),
        secret.to_str().expect("utf-8"),
        "link.db",
        "sub/../../secret.db",
    ] {
        let error = h
            .registry
            .test(&spec("sqlite", json!({"path": path})))
            .await
            .error
            .expect("refused");
        assert_eq!(error.error_type, "invalid_config", "{path}");
    }
}

#[tokio::test]
async fn sqlite_missing_file_is_database_not_found_and_is_not_created() {
    let h = harness(false);
    let error = h
        .registry
        .test(&spec("sqlite", json!({"path": "missing.db"})))
        .await
        .error
        .expect("missing");
    assert_eq!(error.error_type, "database_not_found");
    assert!(!h.org_dir(ORG).join("missing.db").exists());
}

fn org_spec(org: &str, path: &str) -> ferry_worker::connectors::ConnectorSpec {
    let mut spec = spec("sqlite", json!({"path": path}));
    spec.org_id = org.to_owned();
    spec
}

#[tokio::test]
async fn one_organization_cannot_open_another_organizations_sqlite_files() {
    let h = harness(false);
    let secret = h.org_dir("org_a").join("secret.db");
    create_database(&secret).await;
    create_database(&h.sqlite_dir.path().join("top.db")).await;
    let org_b = h.org_dir("org_b");
    std::os::unix::fs::symlink(&secret, org_b.join("link.db")).expect("symlink");

    assert_eq!(h.registry.test(&org_spec("org_a", "secret.db")).await.error, None);
    let absolute = secret.to_str().expect("utf-8");
    for (path, expected) in [
        ("../org_a/secret.db", "invalid_config"),
        (absolute, "invalid_config"),
        ("link.db", "invalid_config"),
        ("org_a/secret.db", "database_not_found"),
        ("secret.db", "database_not_found"),
        ("../top.db", "invalid_config"),
        ("top.db", "database_not_found"),
    ] {
        let error = h
            .registry
            .test(&org_spec("org_b", path))
            .await
            .error
            .unwrap_or_else(|| panic!("{path}: org_b opened it"));
        assert_eq!(error.error_type, expected, "{path}: {error:?}");
    }
    for org in ["", "..", "org_a/../org_a", "/tmp"] {
        let error = h
            .registry
            .test(&org_spec(org, "secret.db"))
            .await
            .error
            .unwrap_or_else(|| panic!("{org:?}: opened"));
        assert_eq!(error.error_type, "invalid_config", "{org:?}");
    }
}
