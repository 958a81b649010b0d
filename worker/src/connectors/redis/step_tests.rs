//! The `redis_read` runner against real servers: the shared Redis on
//! 127.0.0.1:6379 (each test under its own key prefix), private
//! `redis-server`s for tests that count commands or connections or need a
//! password, and a private three-master Redis Cluster. Every result is read
//! back from the step's Parquet object.
//!
//! The runner is reached the way jobs reach it (the pool registry's
//! `run_step`, or a handle's `run` for cluster mode, which the registry's
//! declaration does not offer yet), so these tests live inside the crate.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use arrow::array::{Array, BinaryArray, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use deadpool_redis::redis::{self, AsyncCommands};
use ferry_shared::connectors::find;
use ferry_shared::domain::{ErrorKind, StepType};
use ferry_shared::objects::ObjectTarget;
use ferry_testkit::redis::{PrivateRedis, URL, unique_prefix};
use ferry_testkit::redis_cluster::RedisCluster;
use ferry_testkit::{free_port, unique};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::Redis;
use crate::connectors::errors::{Disposition, disposition};
use crate::connectors::{ConnectorPool, ConnectorSpec, Driver, NetworkPolicy, StepRequest};
use crate::extract::Destination;
use crate::extract::{ExtractError, ExtractOptions, Output, ReadPath, StepRead, run_step_with};
use crate::pools::PoolRegistry;

// ------------------------------------------------------------------ fixtures

fn policy() -> NetworkPolicy {
    NetworkPolicy {
        allow_private_networks: true,
        sqlite_dir: std::env::temp_dir(),
        trusted_roots: Default::default(),
    }
}

fn registry() -> PoolRegistry {
    PoolRegistry::new(policy(), &prometheus::Registry::new())
}

fn spec(config: Value) -> ConnectorSpec {
    ConnectorSpec {
        uuid: unique("conn"),
        org_id: "org_test".into(),
        connector_type: "redis".into(),
        version: 1,
        config: config.as_object().cloned().unwrap(),
    }
}

fn shared_spec() -> ConnectorSpec {
    spec(json!({"host": "127.0.0.1", "port": 6379}))
}

/// A `redis_read` config for `spec`'s connector; `extra` adds fields.
fn step_config(spec: &ConnectorSpec, pattern: &str, extra: Value) -> Map<String, Value> {
    let mut config = json!({"connector_uuid": spec.uuid, "pattern": pattern})
        .as_object()
        .cloned()
        .unwrap();
    if let Value::Object(extra) = extra {
        config.extend(extra);
    }
    config
}

/// Deletes the keys of the shared server that start with `prefix`
/// (binary-safe, unlike the testkit's helper).
async fn delete_prefix(prefix: &str) {
    let mut conn = shared_conn().await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .expect("list test keys");
    if !keys.is_empty() {
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await
            .expect("delete test keys");
    }
}

async fn shared_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 is required (scripts/services.sh)")
}

async fn set_strings(conn: &mut impl redis::aio::ConnectionLike, pairs: &[(Vec<u8>, Vec<u8>)]) {
    for chunk in pairs.chunks(500) {
        let mut pipe = redis::pipe();
        for (key, value) in chunk {
            pipe.cmd("SET").arg(key).arg(value).ignore();
        }
        pipe.query_async::<()>(conn).await.expect("SET");
    }
}

async fn set_hash(conn: &mut impl redis::aio::ConnectionLike, key: &str, fields: &[(&str, &str)]) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    cmd.query_async::<()>(conn).await.expect("HSET");
}

/// A step read as jobs run it: through the registry's pool for the spec.
struct ViaRegistry<'a> {
    registry: &'a PoolRegistry,
    spec: &'a ConnectorSpec,
    request: StepRequest<'a>,
}

#[async_trait::async_trait]
impl StepRead for ViaRegistry<'_> {
    async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        self.registry.run_step(self.spec, &self.request, out).await
    }
}

/// A step read on a pool opened by the driver itself.
struct ViaHandle<'a> {
    handle: &'a dyn ConnectorPool,
    request: StepRequest<'a>,
}

#[async_trait::async_trait]
impl StepRead for ViaHandle<'_> {
    async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        self.handle.run(&self.request, out).await
    }
}

fn request<'a>(
    config: &'a Map<String, Value>,
    supplied: &'a Map<String, Value>,
    policy: &'a NetworkPolicy,
) -> StepRequest<'a> {
    StepRequest {
        step_type: StepType::RedisRead,
        connector: find("redis").unwrap(),
        config,
        supplied,
        policy,
    }
}

/// A result read back: columns (name, type) and rows by their `key`.
#[derive(Debug)]
struct Table {
    columns: Vec<(String, DataType)>,
    rows: Vec<Map<String, Value>>,
}

impl Table {
    fn by_key(&self) -> BTreeMap<String, Map<String, Value>> {
        self.rows
            .iter()
            .map(|row| (row["key"].as_str().unwrap().to_owned(), row.clone()))
            .collect()
    }

    fn column_type(&self, name: &str) -> DataType {
        self.columns
            .iter()
            .find(|(column, _)| column == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns))
            .1
            .clone()
    }
}

/// A cell as JSON: binary as `hex:<digits>`.
fn cell(column: &dyn Array, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    let any = column.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        json!(a.value(row))
    } else if let Some(a) = any.downcast_ref::<BinaryArray>() {
        let hex: String = a.value(row).iter().map(|b| format!("{b:02x}")).collect();
        json!(format!("hex:{hex}"))
    } else if let Some(a) = any.downcast_ref::<Int64Array>() {
        json!(a.value(row))
    } else if let Some(a) = any.downcast_ref::<Float64Array>() {
        json!(a.value(row))
    } else if let Some(a) = any.downcast_ref::<BooleanArray>() {
        json!(a.value(row))
    } else {
        panic!("unexpected column type {:?}", column.data_type())
    }
}

fn table(batches: &[RecordBatch], schema: &arrow::datatypes::Schema) -> Table {
    let columns = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let mut values = Map::new();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                values.insert(field.name().clone(), cell(column.as_ref(), row));
            }
            rows.push(values);
        }
    }
    Table { columns, rows }
}

/// Runs `read` into a fresh file target and reads the Parquet back.
async fn run_read(read: &dyn StepRead, options: &ExtractOptions) -> Result<Table, ExtractError> {
    let dir = tempfile::tempdir().unwrap();
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let target = ObjectTarget::open(url.as_str()).unwrap();
    let path = Path::from("results/step.parquet");
    let destination = Destination::new(&target, &path);
    let cancel = CancellationToken::new();
    let output = run_step_with(options, read, &destination, &|_, _| {}, &cancel, || async {
        true
    })
    .await?;
    assert_eq!(output.read_path, ReadPath::Redis);
    let bytes = target.store.get(&path).await.unwrap().bytes().await.unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().collect::<Result<_, _>>().unwrap();
    let table = table(&batches, &schema);
    assert_eq!(output.rows, table.rows.len() as i64);
    Ok(table)
}

/// Runs a `redis_read` with `config` on `spec` through a new registry.
async fn run_step(
    spec: &ConnectorSpec,
    config: &Map<String, Value>,
    supplied: Value,
) -> Result<Table, ExtractError> {
    run_step_with_options(spec, config, supplied, &ExtractOptions::default()).await
}

async fn run_step_with_options(
    spec: &ConnectorSpec,
    config: &Map<String, Value>,
    supplied: Value,
    options: &ExtractOptions,
) -> Result<Table, ExtractError> {
    let registry = registry();
    let policy = policy();
    let supplied = supplied.as_object().cloned().unwrap_or_default();
    let read = ViaRegistry {
        registry: &registry,
        spec,
        request: request(config, &supplied, &policy),
    };
    run_read(&read, options).await
}

fn row(pairs: Value) -> Map<String, Value> {
    pairs.as_object().cloned().unwrap()
}

// ---------------------------------------------------------------- shapes

#[tokio::test]
async fn redis_read_string_values_are_a_key_and_a_value_column() {
    let prefix = unique_prefix("rr-string");
    let mut conn = shared_conn().await;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = [("a", "alpha"), ("b", "βeta ✓"), ("empty", ""), ("n", "42")]
        .iter()
        .map(|(k, v)| (format!("{prefix}:{k}").into_bytes(), v.as_bytes().to_vec()))
        .collect();
    set_strings(&mut conn, &pairs).await;
    // Another type under the same prefix is skipped, not a row.
    set_hash(&mut conn, &format!("{prefix}:hash"), &[("f", "v")]).await;
    let () = conn.set(format!("{prefix}x:outside"), "no").await.unwrap();

    let spec = shared_spec();
    let config = step_config(&spec, &format!("{prefix}:*"), json!({}));
    let result = run_step(&spec, &config, json!({})).await;
    delete_prefix(&prefix).await;
    let table = result.expect("step");

    assert_eq!(
        table.columns,
        [
            ("key".to_owned(), DataType::Utf8),
            ("value".to_owned(), DataType::Utf8)
        ]
    );
    let expected: BTreeMap<String, Map<String, Value>> =
        [("a", "alpha"), ("b", "βeta ✓"), ("empty", ""), ("n", "42")]
            .iter()
            .map(|(k, v)| {
                let key = format!("{prefix}:{k}");
                (key.clone(), row(json!({"key": key, "value": v})))
            })
            .collect();
    assert_eq!(table.by_key(), expected);
}

#[tokio::test]
async fn redis_read_values_and_keys_that_are_not_utf8_become_binary() {
    let prefix = unique_prefix("rr-binary");
    let mut conn = shared_conn().await;
    let mut odd_key = format!("{prefix}:").into_bytes();
    odd_key.extend([0xff, 0xfe]);
    let pairs = vec![
        (format!("{prefix}:text").into_bytes(), b"plain".to_vec()),
        (format!("{prefix}:bytes").into_bytes(), vec![0x00, 0xc3, 0x28]),
        (odd_key, b"odd key".to_vec()),
    ];
    set_strings(&mut conn, &pairs).await;

    let spec = shared_spec();
    let config = step_config(&spec, &format!("{prefix}:*"), json!({"value_type": "string"}));
    let result = run_step(&spec, &config, json!({})).await;
    delete_prefix(&prefix).await;
    let table = result.expect("step");

    assert_eq!(
        table.columns,
        [
            ("key".to_owned(), DataType::Binary),
            ("value".to_owned(), DataType::Binary)
        ]
    );
    let hex = |bytes: &[u8]| {
        json!(format!(
            "hex:{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ))
    };
    let mut got: Vec<(Value, Value)> = table
        .rows
        .iter()
        .map(|row| (row["key"].clone(), row["value"].clone()))
        .collect();
    got.sort_by_key(|(key, _)| key.to_string());
    let mut expected: Vec<(Value, Value)> = pairs.iter().map(|(k, v)| (hex(k), hex(v))).collect();
    expected.sort_by_key(|(key, _)| key.to_string());
    assert_eq!(got, expected);
}

#[tokio::test]
async fn redis_read_hash_fields_become_columns_with_nulls_where_a_key_lacks_one() {
    let prefix = unique_prefix("rr-hash");
    let mut conn = shared_conn().await;
    set_hash(
        &mut conn,
        &format!("{prefix}:1"),
        &[("name", "Ada"), ("city", "London")],
    )
    .await;
    set_hash(
        &mut conn,
        &format!("{prefix}:2"),
        &[("name", "Linus"), ("lang", "C")],
    )
    .await;
    // A field called `key` keeps its value, under `key_2`.
    set_hash(
        &mut conn,
        &format!("{prefix}:3"),
        &[("key", "own key field"), ("n", "007")],
    )
    .await;
    let () = conn.set(format!("{prefix}:string"), "skipped").await.unwrap();

    let spec = shared_spec();
    let config = step_config(&spec, &format!("{prefix}:*"), json!({"value_type": "hash"}));
    let result = run_step(&spec, &config, json!({})).await;
    delete_prefix(&prefix).await;
    let table = result.expect("step");

    let mut names: Vec<&str> = table.columns.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names[0], "key");
    names.sort_unstable();
    assert_eq!(names, ["city", "key", "key_2", "lang", "n", "name"]);
    assert!(
        table.columns.iter().all(|(_, t)| *t == DataType::Utf8),
        "{:?}",
        table.columns
    );
    let k = |n: u8| format!("{prefix}:{n}");
    let expected = BTreeMap::from([
        (
            k(1),
            row(
                json!({"key": k(1), "name": "Ada", "city": "London", "lang": null, "key_2": null, "n": null}),
            ),
        ),
        (
            k(2),
            row(json!({"key": k(2), "name": "Linus", "city": null, "lang": "C", "key_2": null, "n": null})),
        ),
        (
            k(3),
            row(
                json!({"key": k(3), "name": null, "city": null, "lang": null, "key_2": "own key field", "n": "007"}),
            ),
        ),
    ]);
    assert_eq!(table.by_key(), expected);
}

#[tokio::test]
async fn redis_read_json_strings_become_typed_columns_per_top_level_field() {
    let prefix = unique_prefix("rr-json");
    let mut conn = shared_conn().await;
    let documents = [
        (
            "1",
            json!({"id": 1, "name": "a", "score": 1.5, "active": true, "tags": ["x", "y"], "meta": {"depth": 1}}),
        ),
        (
            "2",
            json!({"id": 2, "name": "b", "score": 2, "active": false, "extra": null}),
        ),
    ];
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = documents
        .iter()
        .map(|(k, doc)| (format!("{prefix}:{k}").into_bytes(), doc.to_string().into_bytes()))
        .collect();
    // Not JSON objects: skipped.
    pairs.push((format!("{prefix}:text").into_bytes(), b"not json".to_vec()));
    pairs.push((format!("{prefix}:array").into_bytes(), b"[1, 2]".to_vec()));
    set_strings(&mut conn, &pairs).await;
    set_hash(&mut conn, &format!("{prefix}:hash"), &[("id", "3")]).await;

    let spec = shared_spec();
    let config = step_config(&spec, &format!("{prefix}:*"), json!({"value_type": "json"}));
    let result = run_step(&spec, &config, json!({})).await;
    delete_prefix(&prefix).await;
    let table = result.expect("step");

    for (column, data_type) in [
        ("key", DataType::Utf8),
        ("id", DataType::Int64),
        ("name", DataType::Utf8),
        ("score", DataType::Float64),
        ("active", DataType::Boolean),
        ("tags", DataType::Utf8),
        ("meta", DataType::Utf8),
        ("extra", DataType::Utf8),
    ] {
        assert_eq!(table.column_type(column), data_type, "{column}");
    }
    assert_eq!(table.columns.len(), 8);
    let k = |n: &str| format!("{prefix}:{n}");
    let expected = BTreeMap::from([
        (
            k("1"),
            row(
                json!({"key": k("1"), "id": 1, "name": "a", "score": 1.5, "active": true,
                       "tags": "[\"x\",\"y\"]", "meta": "{\"depth\":1}", "extra": null}),
            ),
        ),
        (
            k("2"),
            row(
                json!({"key": k("2"), "id": 2, "name": "b", "score": 2.0, "active": false,
                       "tags": null, "meta": null, "extra": null}),
            ),
        ),
    ]);
    assert_eq!(table.by_key(), expected);
}

/// With a one-byte batch budget the columns are decided by the first key
/// alone, so every other field and kind arrives late: the read widens and
/// starts over, and no row or value is lost.
#[tokio::test]
async fn redis_read_fields_and_kinds_found_after_the_sample_widen_without_losing_data() {
    let prefix = unique_prefix("rr-widen");
    let mut conn = shared_conn().await;
    let mut pairs = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..60 {
        let key = format!("{prefix}:j{i}");
        let (doc, want) = match i % 4 {
            0 => (json!({"n": i}), json!({"n": i as f64, "m": null})),
            1 => (
                json!({"n": i as f64 + 0.5}),
                json!({"n": i as f64 + 0.5, "m": null}),
            ),
            2 => (
                json!({"m": format!("m{i}")}),
                json!({"n": null, "m": format!("m{i}")}),
            ),
            _ => (json!({"m": i}), json!({"n": null, "m": i.to_string()})),
        };
        pairs.push((key.clone().into_bytes(), doc.to_string().into_bytes()));
        let mut want = want.as_object().cloned().unwrap();
        want.insert("key".into(), json!(key.clone()));
        expected.insert(key, want);
    }
    set_strings(&mut conn, &pairs).await;
    for i in 0..20 {
        let fields = [(format!("f{}", i % 7), format!("v{i}"))];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(f, v)| (f.as_str(), v.as_str())).collect();
        set_hash(&mut conn, &format!("{prefix}:h{i}"), &fields).await;
    }

    let spec = shared_spec();
    let options = ExtractOptions {
        batch_bytes: 1,
        ..ExtractOptions::default()
    };
    let json_config = step_config(&spec, &format!("{prefix}:j*"), json!({"value_type": "json"}));
    let json_result = run_step_with_options(&spec, &json_config, json!({}), &options).await;
    let hash_config = step_config(&spec, &format!("{prefix}:h*"), json!({"value_type": "hash"}));
    let hash_result = run_step_with_options(&spec, &hash_config, json!({}), &options).await;
    delete_prefix(&prefix).await;

    let table = json_result.expect("json step");
    assert_eq!(table.column_type("n"), DataType::Float64);
    assert_eq!(table.column_type("m"), DataType::Utf8);
    assert_eq!(table.by_key(), expected);

    let table = hash_result.expect("hash step");
    assert_eq!(table.columns.len(), 8, "{:?}", table.columns);
    assert_eq!(table.rows.len(), 20);
    for (key, row) in table.by_key() {
        let i: usize = key.rsplit_once(":h").unwrap().1.parse().unwrap();
        for field in 0..7 {
            let want = if field == i % 7 {
                json!(format!("v{i}"))
            } else {
                Value::Null
            };
            assert_eq!(row[&format!("f{field}")], want, "{key} f{field}");
        }
    }
}

// ------------------------------------------------------- scanning, patterns

fn commandstat(info: &str, command: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|calls| calls.parse().ok())
}

#[tokio::test]
async fn redis_read_scans_more_keys_than_several_scan_batches_without_keys() {
    let server = PrivateRedis::start().await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let total = 5_500;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..total)
        .map(|i| (format!("k:{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    set_strings(&mut conn, &pairs).await;
    let () = conn.set("other:1", "not matched").await.unwrap();
    server.cli(&["CONFIG", "RESETSTAT"]);

    let spec = spec(json!({"host": "127.0.0.1", "port": server.port}));
    let config = step_config(&spec, "k:*", json!({}));
    let table = run_step(&spec, &config, json!({})).await.expect("step");

    assert_eq!(table.rows.len(), total);
    let rows = table.by_key();
    for i in 0..total {
        assert_eq!(rows[&format!("k:{i}")]["value"], json!(format!("v{i}")), "k:{i}");
    }
    let stats = server.cli(&["INFO", "commandstats"]);
    let scans = commandstat(&stats, "scan").expect("SCAN was used");
    assert!(scans >= 5, "{scans} SCAN calls for {total} keys");
    assert_eq!(commandstat(&stats, "keys"), None, "KEYS must never be sent");
    let mgets = commandstat(&stats, "mget").expect("MGET was used");
    assert!(
        mgets >= (total / super::read::FETCH_KEYS) as u64,
        "{mgets} MGET calls"
    );
    assert_eq!(commandstat(&stats, "get"), None, "values are read in batches");
}

#[tokio::test]
async fn redis_read_parameters_in_the_pattern_match_literally() {
    let prefix = unique_prefix("rr-glob");
    let mut conn = shared_conn().await;
    let names = ["a*b", "aXb", "a?b", "a[b]", "ab", r"a\b", "7", "70"];
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = names
        .iter()
        .map(|name| (format!("{prefix}:{name}").into_bytes(), name.as_bytes().to_vec()))
        .collect();
    set_strings(&mut conn, &pairs).await;

    let spec = shared_spec();
    let exact = step_config(&spec, &format!("{prefix}:{{{{name}}}}"), json!({}));
    let mut results = Vec::new();
    for name in ["a*b", "a?b", "a[b]", r"a\b", "*"] {
        let table = run_step(&spec, &exact, json!({ "name": name })).await;
        results.push((name, table));
    }
    // The pattern's own glob characters keep their meaning.
    let open = step_config(&spec, &format!("{prefix}:{{{{name}}}}*"), json!({}));
    let open_result = run_step(&spec, &open, json!({"name": "a"})).await;
    // A declared integer parameter, by its default and as supplied.
    let typed = step_config(
        &spec,
        &format!("{prefix}:{{{{n}}}}"),
        json!({"parameters": {"n": {"type": "integer", "default": 70}}}),
    );
    let default_result = run_step(&spec, &typed, json!({})).await;
    let supplied_result = run_step(&spec, &typed, json!({"n": 7})).await;
    let missing = run_step(&spec, &exact, json!({})).await;
    delete_prefix(&prefix).await;

    for (name, table) in results {
        let values: Vec<Value> = table
            .expect("step")
            .rows
            .iter()
            .map(|row| row["value"].clone())
            .collect();
        let expected: Vec<Value> = if name == "*" { vec![] } else { vec![json!(name)] };
        assert_eq!(values, expected, "parameter {name:?}");
    }
    let mut values: Vec<String> = open_result
        .expect("step")
        .rows
        .iter()
        .map(|row| row["value"].as_str().unwrap().to_owned())
        .collect();
    values.sort();
    assert_eq!(values, ["a*b", "a?b", "aXb", "a[b]", r"a\b", "ab"]);
    assert_eq!(default_result.expect("step").rows[0]["value"], json!("70"));
    let supplied = supplied_result.expect("step");
    assert_eq!(supplied.rows.len(), 1);
    assert_eq!(supplied.rows[0]["value"], json!("7"));
    assert_eq!(
        missing.expect_err("no value for name").error_type,
        ErrorKind::InvalidParameters
    );
}

#[tokio::test]
async fn redis_read_an_invalid_config_is_invalid_config_naming_the_field() {
    let spec = shared_spec();
    let config = step_config(&spec, "x:*", json!({"value_type": "list"}));
    let error = run_step(&spec, &config, json!({})).await.expect_err("refused");
    assert_eq!(error.error_type, ErrorKind::InvalidConfig);
    assert!(error.message.contains("config.value_type"), "{}", error.message);
}

// ------------------------------------------------------- pool and errors

/// `total_connections_received` of the server (the `redis-cli` asking
/// counts itself).
fn connections_received(server: &PrivateRedis) -> u64 {
    let info = server.cli(&["INFO", "stats"]);
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Ids of the clients connected, other than the `redis-cli` asking.
fn client_ids(server: &PrivateRedis) -> Vec<u64> {
    let mut ids: Vec<u64> = server
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|line| !line.contains("cmd=client|list"))
        .filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn redis_read_steps_share_the_connectors_pool_within_max_connections() {
    let server = PrivateRedis::start().await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..3_000)
        .map(|i| (format!("p:{i}").into_bytes(), format!("{i}").into_bytes()))
        .collect();
    set_strings(&mut conn, &pairs).await;
    drop(conn);
    drop(client);

    let registry = registry();
    let policy = policy();
    let supplied = Map::new();
    let spec = spec(json!({"host": "127.0.0.1", "port": server.port, "max_connections": 2}));
    let config = step_config(&spec, "p:*", json!({}));
    let before = connections_received(&server);

    let concurrent = (0..6).map(|_| {
        let read = ViaRegistry {
            registry: &registry,
            spec: &spec,
            request: request(&config, &supplied, &policy),
        };
        async move { run_read(&read, &ExtractOptions::default()).await }
    });
    for table in futures::future::join_all(concurrent).await {
        assert_eq!(table.expect("step").rows.len(), 3_000);
    }
    let opened = connections_received(&server) - before - 1;
    let ids = client_ids(&server);
    assert!(
        (1..=2).contains(&opened),
        "6 concurrent steps opened {opened} connections with max_connections 2"
    );
    assert_eq!(ids.len() as u64, opened, "{ids:?}");

    for _ in 0..3 {
        let read = ViaRegistry {
            registry: &registry,
            spec: &spec,
            request: request(&config, &supplied, &policy),
        };
        assert_eq!(
            run_read(&read, &ExtractOptions::default())
                .await
                .expect("step")
                .rows
                .len(),
            3_000
        );
    }
    assert_eq!(
        client_ids(&server),
        ids,
        "later steps reuse the pooled connections"
    );
    assert_eq!(registry.pool_count(), 1);
}

#[tokio::test]
async fn redis_read_with_a_wrong_password_is_authentication_failed_and_not_retried() {
    let password = "step-redis-pw-1";
    let server = PrivateRedis::with_password(password).await;
    let wrong = "wrong-step-pw-77";
    let spec = spec(json!({"host": "127.0.0.1", "port": server.port, "password": wrong}));
    let config = step_config(&spec, "*", json!({}));
    let error = run_step(&spec, &config, json!({})).await.expect_err("refused");
    assert_eq!(error.error_type, ErrorKind::AuthenticationFailed);
    assert_eq!(error.code.as_deref(), Some("WRONGPASS"));
    assert!(!error.message.contains(wrong) && !error.message.contains(password));
    assert_eq!(
        disposition(error.error_type, error.code.as_deref()),
        Disposition::Fail
    );
}

#[tokio::test]
async fn redis_read_unreachable_servers_fail_with_errors_the_job_retries() {
    let spec = spec(json!({"host": "127.0.0.1", "port": free_port()}));
    let config = step_config(&spec, "*", json!({}));
    let error = run_step(&spec, &config, json!({})).await.expect_err("refused");
    assert_eq!(error.error_type, ErrorKind::ConnectionRefused, "{error:?}");
    assert_eq!(
        disposition(error.error_type, error.code.as_deref()),
        Disposition::Retry
    );

    // A server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let spec = spec_silent(port);
    let config = step_config(&spec, "*", json!({}));
    let error = run_step(&spec, &config, json!({})).await.expect_err("no answer");
    assert_eq!(error.error_type, ErrorKind::Timeout, "{error:?}");
    assert_eq!(
        disposition(error.error_type, error.code.as_deref()),
        Disposition::Retry
    );
    drop(silent);
}

fn spec_silent(port: u16) -> ConnectorSpec {
    spec(json!({"host": "127.0.0.1", "port": port, "connection_timeout_seconds": 1}))
}

// ------------------------------------------------------------------ cluster

fn cluster_spec(cluster: &RedisCluster, extra: Value) -> ConnectorSpec {
    let mut config = json!({"host": "127.0.0.1", "port": cluster.ports[0], "cluster": true})
        .as_object()
        .cloned()
        .unwrap();
    if let Value::Object(extra) = extra {
        config.extend(extra);
    }
    spec(Value::Object(config))
}

async fn run_on_handle(
    handle: &dyn ConnectorPool,
    config: &Map<String, Value>,
) -> Result<Table, ExtractError> {
    let policy = policy();
    let supplied = Map::new();
    let read = ViaHandle {
        handle,
        request: request(config, &supplied, &policy),
    };
    run_read(&read, &ExtractOptions::default()).await
}

#[tokio::test]
async fn redis_read_in_cluster_mode_scans_every_master() {
    let cluster = RedisCluster::start(3).await;
    let client = redis::cluster::ClusterClient::new(vec![cluster.url()]).unwrap();
    let mut conn = client.get_async_connection().await.expect("cluster connection");
    let total = 600;
    for i in 0..total {
        let () = conn.set(format!("s:{i}"), format!("v{i}")).await.unwrap();
    }
    for i in 0..90 {
        let () = conn
            .hset_multiple(
                format!("h:{i}"),
                &[
                    ("n".to_owned(), i.to_string()),
                    (format!("f{}", i % 3), "x".to_owned()),
                ],
            )
            .await
            .unwrap();
    }
    for i in 0..30 {
        let () = conn
            .set(
                format!("j:{i}"),
                json!({"i": i, "half": i as f64 / 2.0}).to_string(),
            )
            .await
            .unwrap();
    }
    for port in &cluster.ports {
        assert!(cluster.dbsize(*port) > 0, "every master holds keys");
    }

    let spec = cluster_spec(&cluster, json!({"max_connections": 2}));
    let handle = Redis.open(&spec, &policy()).await.expect("cluster pool");
    assert!(handle.test(&[], &policy()).await.is_ok());

    let strings = run_on_handle(handle.as_ref(), &step_config(&spec, "s:*", json!({})))
        .await
        .expect("strings");
    assert_eq!(strings.rows.len(), total);
    let rows = strings.by_key();
    for i in 0..total {
        assert_eq!(rows[&format!("s:{i}")]["value"], json!(format!("v{i}")));
    }

    let hashes = run_on_handle(
        handle.as_ref(),
        &step_config(&spec, "h:*", json!({"value_type": "hash"})),
    )
    .await
    .expect("hashes");
    assert_eq!(hashes.columns.len(), 5, "{:?}", hashes.columns);
    for (key, row) in hashes.by_key() {
        let i: usize = key[2..].parse().unwrap();
        assert_eq!(row["n"], json!(i.to_string()));
        for f in 0..3 {
            let want = if f == i % 3 { json!("x") } else { Value::Null };
            assert_eq!(row[&format!("f{f}")], want);
        }
    }
    assert_eq!(hashes.rows.len(), 90);

    let docs = run_on_handle(
        handle.as_ref(),
        &step_config(&spec, "j:*", json!({"value_type": "json"})),
    )
    .await
    .expect("json");
    assert_eq!(docs.column_type("i"), DataType::Int64);
    assert_eq!(docs.column_type("half"), DataType::Float64);
    assert_eq!(docs.rows.len(), 30);
    for (key, row) in docs.by_key() {
        let i: i64 = key[2..].parse().unwrap();
        assert_eq!(
            (row["i"].clone(), row["half"].clone()),
            (json!(i), json!(i as f64 / 2.0))
        );
    }

    // The steps ran on the cluster pool, within max_connections.
    let handle = handle.as_any().downcast_ref::<super::RedisHandle>().unwrap();
    let status = handle.cluster.as_ref().unwrap().status();
    assert!((1..=2).contains(&status.size), "{status:?}");
}

#[tokio::test]
async fn redis_read_of_a_cluster_node_as_a_single_server_is_refused() {
    let cluster = RedisCluster::start(3).await;
    let node = spec(json!({"host": "127.0.0.1", "port": cluster.ports[0]}));
    let config = step_config(&node, "*", json!({}));
    let error = run_step(&node, &config, json!({})).await.expect_err("refused");
    assert_eq!(error.error_type, ErrorKind::InvalidConfig);
    assert!(error.message.contains("Redis Cluster node"), "{}", error.message);

    // And cluster mode against a server that is not a cluster node.
    let server = PrivateRedis::start().await;
    let single = spec(json!({"host": "127.0.0.1", "port": server.port, "cluster": true}));
    let handle = Redis.open(&single, &policy()).await.expect("pool");
    let config = step_config(&single, "*", json!({}));
    let error = run_on_handle(handle.as_ref(), &config)
        .await
        .expect_err("refused");
    assert_eq!(error.error_type, ErrorKind::InvalidConfig, "{error:?}");
}

#[tokio::test]
async fn redis_read_in_cluster_mode_authenticates_to_every_node() {
    let password = "cluster-pw-31";
    let cluster = RedisCluster::with_password(3, password).await;
    let client = redis::cluster::ClusterClient::new(vec![cluster.url()]).unwrap();
    let mut conn = client.get_async_connection().await.expect("cluster connection");
    for i in 0..60 {
        let () = conn.set(format!("a:{i}"), i).await.unwrap();
    }

    let good = cluster_spec(&cluster, json!({"password": password}));
    let handle = Redis.open(&good, &policy()).await.expect("pool");
    let table = run_on_handle(handle.as_ref(), &step_config(&good, "a:*", json!({})))
        .await
        .expect("step");
    assert_eq!(table.rows.len(), 60);

    let wrong = "cluster-wrong-pw-9";
    let bad = cluster_spec(&cluster, json!({"password": wrong}));
    let handle = Redis.open(&bad, &policy()).await.expect("pool");
    let error = run_on_handle(handle.as_ref(), &step_config(&bad, "a:*", json!({})))
        .await
        .expect_err("refused");
    assert_eq!(error.error_type, ErrorKind::AuthenticationFailed, "{error:?}");
    assert!(!error.message.contains(wrong));
}

#[test]
fn redis_read_substitution_escapes_values_but_not_the_pattern() {
    let config = Map::new();
    let supplied = json!({"a": "x*[y]", "b": r"\?"}).as_object().cloned().unwrap();
    let policy = policy();
    let request = request(&config, &supplied, &policy);
    let pattern = super::read::substitute_escaped(&request, "p:*:{{a}}:{{ b }}:?").unwrap();
    assert_eq!(pattern, r"p:*:x\*\[y\]:\\\?:?");
}
