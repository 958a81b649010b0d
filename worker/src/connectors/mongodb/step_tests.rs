//! `mongo_query` steps against nx-27017 (a MongoDB wire-protocol server the
//! tests start from the venv `scripts/test-peers.sh` creates), end to end
//! through the pool registry and the Parquet sink to a file:// target, the
//! result read back from the object.
//!
//! nx-27017 stores neither Decimal128 nor BSON Timestamp values; their
//! mapping is covered by the unit tests of `columns.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use ferry_shared::objects::ObjectTarget;
use ferry_testkit::Peer;
use ferry_testkit::peers::nx_27017;
use mongodb::bson::{Binary, DateTime, Document, doc, oid::ObjectId, spec::BinarySubtype};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::connectors::{ConnectorSpec, NetworkPolicy, StepRequest};
use crate::extract::{
    Destination, ExtractError, ExtractOptions, Output, ReadPath, StepOutput, StepRead, run_step_with,
};
use crate::pools::PoolRegistry;
use ferry_shared::domain::{ErrorKind, StepType};

/// A private nx-27017, a registry allowing private networks, a connector
/// on the peer's `analytics` database and a file:// target.
struct Fixture {
    peer: Peer,
    registry: PoolRegistry,
    metrics: prometheus::Registry,
    spec: ConnectorSpec,
    target: ObjectTarget,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    fixture_with_uri(None).await
}

async fn fixture_with_uri(uri: Option<String>) -> Fixture {
    let peer = nx_27017().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = prometheus::Registry::new();
    let registry = PoolRegistry::new(
        NetworkPolicy {
            allow_private_networks: true,
            sqlite_dir: dir.path().join("sqlite"),
            trusted_roots: Default::default(),
        },
        &metrics,
    );
    let uri = uri.unwrap_or_else(|| format!("mongodb://127.0.0.1:{}/", peer.port));
    let config = json!({"connection_string": uri, "database": "analytics", "connection_timeout_seconds": 5});
    let spec = ConnectorSpec {
        uuid: ferry_testkit::unique("conn"),
        org_id: "org_test".into(),
        connector_type: "mongodb".into(),
        version: 1,
        config: config.as_object().cloned().unwrap_or_default(),
    };
    let url = url::Url::from_directory_path(dir.path().join("results")).expect("url");
    let target = ObjectTarget::open(url.as_str()).expect("file target");
    Fixture {
        peer,
        registry,
        metrics,
        spec,
        target,
        dir,
    }
}

/// A step read through the registry, as the execute job does it.
struct Step<'a> {
    registry: &'a PoolRegistry,
    spec: &'a ConnectorSpec,
    request: StepRequest<'a>,
}

#[async_trait::async_trait]
impl StepRead for Step<'_> {
    async fn read(&self, out: &mut Output<'_>) -> Result<ReadPath, ExtractError> {
        self.registry.run_step(self.spec, &self.request, out).await
    }
}

impl Fixture {
    /// A collection of the connector's database, through a client of the
    /// test's own.
    async fn collection(&self, name: &str) -> mongodb::Collection<Document> {
        let client = mongodb::Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{}/?directConnection=true",
            self.peer.port
        ))
        .await
        .expect("client");
        client.database("analytics").collection(name)
    }

    async fn insert(&self, name: &str, documents: Vec<Document>) {
        let collection = self.collection(name).await;
        for chunk in documents.chunks(5_000) {
            collection.insert_many(chunk.to_vec()).await.expect("insert");
        }
    }

    fn config(&self, extra: Value) -> Value {
        let mut config = json!({"connector_uuid": "conn_01J9ZQ4X3M6R8T2V5W7Y9A1B3C"});
        if let (Some(config), Value::Object(extra)) = (config.as_object_mut(), extra) {
            config.extend(extra);
        }
        config
    }

    async fn run_with(
        &self,
        config: Value,
        supplied: Value,
        options: &ExtractOptions,
        cancel: &CancellationToken,
        progress: &(dyn Fn(i64, i64) + Send + Sync),
        path: &Path,
    ) -> Result<StepOutput, ExtractError> {
        let config = self.config(config);
        let config = config.as_object().expect("an object");
        let supplied = supplied.as_object().cloned().unwrap_or_default();
        let step = Step {
            registry: &self.registry,
            spec: &self.spec,
            request: StepRequest {
                step_type: StepType::MongoQuery,
                connector: ferry_shared::connectors::find("mongodb").expect("declared"),
                config,
                supplied: &supplied,
                policy: self.registry.policy(),
            },
        };
        let destination = Destination::new(&self.target, path);
        run_step_with(options, &step, &destination, progress, cancel, || async { true }).await
    }

    /// Runs a step with default options and reads its Parquet back.
    async fn run(&self, config: Value, supplied: Value) -> Result<(RecordBatch, StepOutput), ExtractError> {
        let path = self.target.step_path(&ferry_testkit::unique("exec"), "step_1");
        let output = self
            .run_with(
                config,
                supplied,
                &ExtractOptions::default(),
                &CancellationToken::new(),
                &|_, _| {},
                &path,
            )
            .await?;
        Ok((self.read_back(&path).await, output))
    }

    async fn read_back(&self, path: &Path) -> RecordBatch {
        let bytes = self
            .target
            .store
            .get(path)
            .await
            .expect("the object exists")
            .bytes()
            .await
            .expect("bytes");
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("parquet");
        let schema = reader.schema().clone();
        let batches: Vec<RecordBatch> = reader
            .build()
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("batches");
        arrow::compute::concat_batches(&schema, &batches).expect("concat")
    }

    /// Every file under the target's directory.
    fn files(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.dir.path().join("results"), &mut files);
        files
    }
}

fn names(batch: &RecordBatch) -> Vec<String> {
    batch.schema().fields().iter().map(|f| f.name().clone()).collect()
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> &'a dyn Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name} in {:?}", names(batch)))
        .as_ref()
}

fn texts(array: &dyn Array) -> Vec<Option<String>> {
    array
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn mongo_query_round_trips_every_scalar_type_exactly() {
    let f = fixture().await;
    let ids = [ObjectId::new(), ObjectId::new(), ObjectId::new()];
    let when = DateTime::from_millis(1_709_287_200_250);
    f.insert(
        "scalars",
        vec![
            doc! {"_id": ids[0], "small": 7, "big": 1_i64 << 40, "mixed": 1, "ratio": 0.25, "name": "ünïcode ✓",
                  "ok": true, "at": when, "blob": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 255] },
                  "ref": ids[2], "nothing": null},
            doc! {"_id": ids[1], "small": -2_147_483_648_i32, "big": i64::MIN, "mixed": 2.5, "ratio": -1e300,
                  "name": "", "ok": false, "at": DateTime::from_millis(-86_400_000), "nothing": null},
            doc! {"_id": ids[2], "small": 3_i64},
        ],
    )
    .await;
    let (batch, output) = f
        .run(
            json!({"collection": "scalars", "pipeline": [{"$sort": {"small": -1}}]}),
            json!({}),
        )
        .await
        .expect("step");
    assert_eq!((output.rows, output.read_path), (3, ReadPath::MongoDb));
    assert_eq!(
        names(&batch),
        [
            "_id", "small", "big", "mixed", "ratio", "name", "ok", "at", "blob", "ref", "nothing"
        ]
    );
    let types: Vec<DataType> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        [
            DataType::Utf8,
            DataType::Int64,
            DataType::Int64,
            DataType::Float64,
            DataType::Float64,
            DataType::Utf8,
            DataType::Boolean,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            DataType::Binary,
            DataType::Utf8,
            DataType::Utf8,
        ]
    );
    // Sorted by `small` descending: doc 0 (7), doc 2 (3), doc 1 (i32::MIN).
    assert_eq!(
        texts(column(&batch, "_id")),
        [
            Some(ids[0].to_hex()),
            Some(ids[2].to_hex()),
            Some(ids[1].to_hex())
        ]
    );
    let small = column(&batch, "small").as_primitive::<Int64Type>();
    assert_eq!(small.values(), &[7, 3, -2_147_483_648][..]);
    let big = column(&batch, "big").as_primitive::<Int64Type>();
    assert_eq!(
        (big.value(0), big.is_null(1), big.value(2)),
        (1 << 40, true, i64::MIN)
    );
    let mixed = column(&batch, "mixed").as_primitive::<Float64Type>();
    assert_eq!(
        (mixed.value(0), mixed.is_null(1), mixed.value(2)),
        (1.0, true, 2.5)
    );
    let ratio = column(&batch, "ratio").as_primitive::<Float64Type>();
    assert_eq!((ratio.value(0), ratio.value(2)), (0.25, -1e300));
    assert_eq!(
        texts(column(&batch, "name")),
        [Some("ünïcode ✓".into()), None, Some(String::new())]
    );
    let ok = column(&batch, "ok").as_boolean();
    assert_eq!((ok.value(0), ok.is_null(1), ok.value(2)), (true, true, false));
    let at = column(&batch, "at").as_primitive::<TimestampMillisecondType>();
    assert_eq!((at.value(0), at.value(2)), (1_709_287_200_250, -86_400_000));
    let blob = column(&batch, "blob").as_binary::<i32>();
    assert_eq!((blob.value(0), blob.is_null(2)), (&[0u8, 1, 255][..], true));
    assert_eq!(texts(column(&batch, "ref"))[0], Some(ids[2].to_hex()));
    assert_eq!(column(&batch, "nothing").null_count(), 3);
}

#[tokio::test]
async fn mongo_query_nested_documents_and_arrays_become_structs_and_lists_and_disagreeing_ones_json_text() {
    let f = fixture().await;
    f.insert(
        "nested",
        vec![
            doc! {"_id": 1, "address": {"city": "Lyon", "zip": 69001}, "tags": ["a", "b"], "scores": [1, 2.5],
            "mixed": {"x": 1}, "points": [{"x": 1}, {"x": 2, "y": "up"}]},
            doc! {"_id": 2, "address": {"zip": 75001, "geo": {"lat": 48.8}}, "tags": [], "scores": [3],
            "mixed": [1, "two"], "points": null},
        ],
    )
    .await;
    let (batch, _) = f
        .run(
            json!({"collection": "nested", "pipeline": [{"$sort": {"_id": 1}}]}),
            json!({}),
        )
        .await
        .expect("step");
    let schema = batch.schema();
    let address = schema.field_with_name("address").expect("address");
    let DataType::Struct(fields) = address.data_type() else {
        panic!("address is {:?}", address.data_type())
    };
    let inner: Vec<(&str, &DataType)> = fields
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(inner[..2], [("city", &DataType::Utf8), ("zip", &DataType::Int64)]);
    assert_eq!(inner[2].0, "geo");
    let address = column(&batch, "address").as_struct();
    assert_eq!(
        texts(address.column_by_name("city").expect("city")),
        [Some("Lyon".into()), None]
    );
    let zip = address
        .column_by_name("zip")
        .expect("zip")
        .as_primitive::<Int64Type>();
    assert_eq!(zip.values(), &[69001, 75001][..]);
    let geo = address.column_by_name("geo").expect("geo").as_struct();
    assert!(geo.is_null(0));
    assert_eq!(geo.column(0).as_primitive::<Float64Type>().value(1), 48.8);

    let tags = column(&batch, "tags").as_list::<i32>();
    assert_eq!(tags.value_type(), DataType::Utf8);
    assert_eq!(
        texts(tags.value(0).as_ref()),
        [Some("a".into()), Some("b".into())]
    );
    assert_eq!(tags.value(1).len(), 0);
    let scores = column(&batch, "scores").as_list::<i32>();
    assert_eq!(scores.value_type(), DataType::Float64);
    assert_eq!(
        scores.value(0).as_primitive::<Float64Type>().values(),
        &[1.0, 2.5][..]
    );

    // A document in one row and an array in the other: JSON text, both.
    assert_eq!(
        schema.field_with_name("mixed").expect("mixed").data_type(),
        &DataType::Utf8
    );
    assert_eq!(
        texts(column(&batch, "mixed")),
        [Some(r#"{"x":1}"#.into()), Some(r#"[1,"two"]"#.into())]
    );
    let points = column(&batch, "points").as_list::<i32>();
    assert!(points.is_null(1));
    let first = points.value(0);
    let first = first.as_struct();
    assert_eq!(first.column(0).as_primitive::<Int64Type>().values(), &[1, 2][..]);
    assert_eq!(texts(first.column(1).as_ref()), [None, Some("up".into())]);
}

#[tokio::test]
async fn mongo_query_parameters_are_bound_as_bson_values_and_an_operator_in_a_string_stays_a_string() {
    let f = fixture().await;
    f.insert(
        "people",
        vec![
            doc! {"_id": 1, "name": "ann", "age": 31_i64, "joined": DateTime::from_millis(1_709_251_200_000)},
            doc! {"_id": 2, "name": "bob", "age": 45, "joined": DateTime::from_millis(1_704_067_200_000)},
            doc! {"_id": 3, "name": "{\"$ne\": null}", "age": 20},
        ],
    )
    .await;
    let filter = json!({
        "collection": "people",
        "filter": {"name": "{{name}}"},
        "projection": {"_id": 1, "name": 1},
    });
    // The operator-looking string matches only the document holding that text.
    let (batch, _) = f
        .run(filter.clone(), json!({"name": "{\"$ne\": null}"}))
        .await
        .expect("step");
    assert_eq!(batch.num_rows(), 1);
    assert_eq!(texts(column(&batch, "name")), [Some("{\"$ne\": null}".into())]);
    let (batch, _) = f.run(filter, json!({"name": "ann"})).await.expect("step");
    assert_eq!(
        column(&batch, "_id").as_primitive::<Int64Type>().values(),
        &[1][..]
    );

    let typed = json!({
        "collection": "people",
        "filter": {"age": {"$gte": "{{min_age}}"}, "joined": {"$gte": "{{since}}"}, "name": {"$ne": "x-{{suffix}}"}},
        "parameters": {"min_age": {"type": "integer"}, "since": {"type": "date"}},
    });
    let (batch, _) = f
        .run(
            typed.clone(),
            json!({"min_age": 30, "since": "2024-01-01", "suffix": "y"}),
        )
        .await
        .expect("step");
    let mut ids: Vec<i64> = column(&batch, "_id")
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    let (batch, _) = f
        .run(
            typed.clone(),
            json!({"min_age": 30, "since": "2024-02-01", "suffix": "y"}),
        )
        .await
        .expect("step");
    assert_eq!(
        column(&batch, "_id").as_primitive::<Int64Type>().values(),
        &[1][..]
    );
    let error = f
        .run(
            typed,
            json!({"min_age": "thirty", "since": "2024-02-01", "suffix": "y"}),
        )
        .await
        .expect_err("mistyped");
    assert_eq!(error.error_type, ErrorKind::InvalidParameters);
}

#[tokio::test]
async fn mongo_query_runs_an_aggregation_pipeline_and_applies_limit_and_projection_to_a_find() {
    let f = fixture().await;
    f.insert(
        "sales",
        (0..50_i64)
            .map(|i| doc! {"_id": i, "region": if i % 2 == 0 { "east" } else { "west" }, "amount": i, "note": "x"})
            .collect(),
    )
    .await;
    let (batch, output) = f
        .run(
            json!({"collection": "sales", "pipeline": [
                {"$match": {"amount": {"$gte": 10}}},
                {"$group": {"_id": "$region", "total": {"$sum": "$amount"}, "n": {"$sum": 1}}},
                {"$sort": {"_id": 1}}
            ]}),
            json!({}),
        )
        .await
        .expect("step");
    assert_eq!(output.rows, 2);
    assert_eq!(names(&batch), ["_id", "total", "n"]);
    assert_eq!(
        texts(column(&batch, "_id")),
        [Some("east".into()), Some("west".into())]
    );
    // east: 10, 12, …, 48 (20 values); west: 11, 13, …, 49 (20 values).
    assert_eq!(
        column(&batch, "total").as_primitive::<Int64Type>().values(),
        &[580, 600][..]
    );
    assert_eq!(
        column(&batch, "n").as_primitive::<Int64Type>().values(),
        &[20, 20][..]
    );

    let (batch, _) = f
        .run(
            // (nx-27017 orders `_id` as text; `amount` holds the same numbers.)
            json!({"collection": "sales", "pipeline": [{"$sort": {"amount": -1}}], "limit": 3}),
            json!({}),
        )
        .await
        .expect("step");
    assert_eq!(
        column(&batch, "_id").as_primitive::<Int64Type>().values(),
        &[49, 48, 47][..]
    );

    let (batch, output) = f
        .run(
            json!({"collection": "sales", "filter": {"region": "west"}, "projection": {"_id": 0, "amount": 1}, "limit": 4}),
            json!({}),
        )
        .await
        .expect("step");
    assert_eq!((output.rows, names(&batch)), (4, vec!["amount".to_owned()]));
    let amounts = column(&batch, "amount").as_primitive::<Int64Type>();
    assert!(amounts.values().iter().all(|a| a % 2 == 1), "{amounts:?}");

    let (batch, output) = f
        .run(json!({"collection": "no_such_collection"}), json!({}))
        .await
        .expect("step");
    assert_eq!((output.rows, names(&batch)), (0, vec!["_id".to_owned()]));
}

#[tokio::test]
async fn mongo_query_streams_a_collection_larger_than_several_batches() {
    let f = fixture().await;
    let total = 5_000_i64;
    f.insert(
        "big",
        (0..total)
            .map(|i| doc! {"_id": i, "n": i * 3, "label": format!("row {i}")})
            .collect(),
    )
    .await;
    let options = ExtractOptions {
        batch_rows: 700,
        ..ExtractOptions::default()
    };
    let reports = Arc::new(AtomicUsize::new(0));
    let counted = reports.clone();
    let path = f.target.step_path("exec_big", "step_1");
    let output = f
        .run_with(
            json!({"collection": "big"}),
            json!({}),
            &options,
            &CancellationToken::new(),
            &move |_, _| {
                counted.fetch_add(1, Ordering::Relaxed);
            },
            &path,
        )
        .await
        .expect("step");
    assert_eq!(output.rows, total);
    // 5 000 rows in batches of at most 700: at least 8 writes, each reported.
    assert!(
        reports.load(Ordering::Relaxed) >= 8,
        "{}",
        reports.load(Ordering::Relaxed)
    );
    let batch = f.read_back(&path).await;
    let mut ids: Vec<i64> = column(&batch, "_id")
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    ids.sort_unstable();
    assert_eq!(ids, (0..total).collect::<Vec<_>>());
    let sum: i64 = column(&batch, "n")
        .as_primitive::<Int64Type>()
        .values()
        .iter()
        .sum();
    assert_eq!(sum, 3 * total * (total - 1) / 2);
}

#[tokio::test]
async fn mongo_query_widens_columns_for_values_and_fields_that_appear_after_the_sample() {
    let f = fixture().await;
    let sample = super::read::SAMPLE_DOCUMENTS as i64;
    let mut documents: Vec<Document> = (0..sample).map(|i| doc! {"_id": i, "seq": i, "v": i}).collect();
    documents.push(doc! {"_id": sample, "seq": sample, "v": "text now", "late": {"deep": true}});
    documents.push(doc! {"_id": sample + 1, "seq": sample + 1, "v": 5});
    f.insert("drift", documents).await;
    let (batch, output) = f
        .run(
            json!({"collection": "drift", "pipeline": [{"$sort": {"seq": 1}}]}),
            json!({}),
        )
        .await
        .expect("step");
    assert_eq!(output.rows, sample + 2);
    // Nothing is lost: `v` became JSON text, `late` a column after the sample's.
    assert_eq!(names(&batch), ["_id", "seq", "v", "late"]);
    let v = texts(column(&batch, "v"));
    assert_eq!(v[0].as_deref(), Some("0"));
    assert_eq!(v[sample as usize].as_deref(), Some("\"text now\""));
    assert_eq!(v[sample as usize + 1].as_deref(), Some("5"));
    let late = column(&batch, "late").as_struct();
    assert_eq!(late.null_count(), batch.num_rows() - 1);
    assert!(late.column(0).as_boolean().value(sample as usize));
}

#[tokio::test]
async fn mongo_query_cancelled_mid_read_leaves_no_object() {
    let f = fixture().await;
    f.insert("long", (0..3_000_i64).map(|i| doc! {"_id": i, "n": i}).collect())
        .await;
    let options = ExtractOptions {
        batch_rows: 200,
        ..ExtractOptions::default()
    };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let path = f.target.step_path("exec_cancel", "step_1");
    let error = f
        .run_with(
            json!({"collection": "long"}),
            json!({}),
            &options,
            &cancel,
            &move |rows, _| {
                if rows > 0 {
                    trigger.cancel();
                }
            },
            &path,
        )
        .await
        .expect_err("cancelled");
    assert!(error.is_cancelled(), "{error:?}");
    assert!(
        f.target.store.head(&path).await.is_err(),
        "an object was published"
    );
    assert_eq!(f.files(), Vec::<std::path::PathBuf>::new());
}

/// The client-side ports of the established connections to `port`.
fn connections_to(port: u16) -> BTreeSet<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?.split(':').nth(1)?;
            let remote = fields.get(2)?.split(':').nth(1)?;
            let established = fields.get(3)? == &"01";
            (established && u16::from_str_radix(remote, 16).ok()? == port)
                .then(|| u16::from_str_radix(local, 16).ok())
                .flatten()
        })
        .collect()
}

#[tokio::test]
async fn mongo_query_steps_reuse_the_connectors_pooled_client() {
    let f = fixture().await;
    f.insert("reuse", (0..10_i64).map(|i| doc! {"_id": i}).collect())
        .await;
    // The seeding client is gone before the steps run.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = connections_to(f.peer.port);
    let (_, first) = f
        .run(json!({"collection": "reuse"}), json!({}))
        .await
        .expect("step 1");
    let opened = connections_to(f.peer.port);
    let new: BTreeSet<u16> = opened.difference(&before).copied().collect();
    assert!(!new.is_empty(), "the step connected to the peer");
    for _ in 0..3 {
        let (_, again) = f
            .run(json!({"collection": "reuse"}), json!({}))
            .await
            .expect("step again");
        assert_eq!(again.rows, first.rows);
        // The same TCP connections served every later step: no new client.
        assert_eq!(
            connections_to(f.peer.port)
                .difference(&before)
                .copied()
                .collect::<BTreeSet<_>>(),
            new
        );
    }
    let pools: f64 = f
        .metrics
        .gather()
        .iter()
        .filter(|family| family.name() == "ferry_worker_pools")
        .flat_map(|family| family.get_metric())
        .filter(|sample| {
            sample
                .get_label()
                .iter()
                .any(|l| l.name() == "type" && l.value() == "mongodb")
        })
        .map(|sample| sample.get_gauge().get_value())
        .sum();
    assert_eq!(pools, 1.0, "one pool for the connector");
}

#[tokio::test]
async fn mongo_query_server_errors_are_invalid_query_with_the_servers_message() {
    let f = fixture().await;
    f.insert("errs", vec![doc! {"_id": 1}]).await;
    let error = f
        .run(
            json!({"collection": "errs", "pipeline": [{"$bogusStage": {}}]}),
            json!({}),
        )
        .await
        .expect_err("refused");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery, "{error:?}");
    assert!(error.message.contains("$bogusStage"), "{}", error.message);
    let error = f
        .run(
            json!({"collection": "errs", "filter": {"_id": {"$oid": "not-hex"}}}),
            json!({}),
        )
        .await
        .expect_err("refused");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert!(
        error.message.starts_with("config.filter._id"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn mongo_query_on_a_dead_server_is_a_retried_failure_without_the_password() {
    let port = ferry_testkit::free_port();
    let f = fixture_with_uri(Some(format!("mongodb://app:s3cr3t-pw@127.0.0.1:{port}/"))).await;
    let error = f
        .run(json!({"collection": "x"}), json!({}))
        .await
        .expect_err("no server");
    assert!(
        matches!(
            error.error_type,
            ErrorKind::ConnectionRefused | ErrorKind::ConnectionFailed | ErrorKind::Timeout
        ),
        "{error:?}"
    );
    assert_eq!(
        crate::connectors::errors::disposition(error.error_type, error.code.as_deref()),
        crate::connectors::errors::Disposition::Retry
    );
    assert!(
        !error.message.contains("s3cr3t-pw") && !error.message.contains("mongodb://"),
        "{}",
        error.message
    );
}

#[test]
fn command_errors_map_to_the_step_vocabulary() {
    use mongodb::error::{CommandError, Error, ErrorKind as K};
    let command = |code: i32, name: &str, message: &str| {
        let command: CommandError =
            serde_json::from_value(json!({"code": code, "codeName": name, "errmsg": message}))
                .expect("command");
        Error::from(K::Command(command))
    };
    let secrets = crate::connectors::Secrets::default();
    let error = super::step_error(&command(2, "BadValue", "unknown operator: $foo"), &secrets);
    assert_eq!(
        (error.error_type, error.code.as_deref(), error.message.as_str()),
        (
            ErrorKind::InvalidQuery,
            Some("2"),
            "unknown operator: $foo (BadValue)"
        )
    );
    let error = super::step_error(
        &command(50, "MaxTimeMSExpired", "operation exceeded time limit"),
        &secrets,
    );
    assert_eq!(
        (error.error_type, error.code.as_deref()),
        (ErrorKind::Timeout, Some("50"))
    );
    let error = super::step_error(&command(91, "ShutdownInProgress", "shutting down"), &secrets);
    assert_eq!(error.error_type, ErrorKind::ConnectionFailed);
    let error = super::step_error(
        &command(18, "AuthenticationFailed", "Authentication failed."),
        &secrets,
    );
    assert_eq!(error.error_type, ErrorKind::AuthenticationFailed);
    let io = Error::from(K::Io(Arc::new(std::io::ErrorKind::ConnectionReset.into())));
    assert_eq!(
        super::step_error(&io, &secrets).error_type,
        ErrorKind::ConnectionFailed
    );
    let mut config = serde_json::Map::new();
    config.insert("connection_string".into(), json!("mongodb://u:hunter22@h/"));
    let leaky = super::step_error(
        &command(2, "BadValue", "cannot use hunter22 here"),
        &crate::connectors::Secrets::from_config(&config),
    );
    assert!(!leaky.message.contains("hunter22"), "{}", leaky.message);
}

/// The `mongo_query` benchmark (ignored; `loadtests/mongo_query/run.sh`
/// starts the server, loads `bench.orders` and runs it in a release build):
/// one step exports the collection to Parquet on file://. Prints
/// `BENCH rows=… seconds=… rows_per_s=… parquet_mib=… peak_rss_mib=…`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by loadtests/mongo_query/run.sh"]
async fn bench_mongo_query_export() {
    let port: u16 = std::env::var("FERRY_BENCH_MONGO_PORT")
        .expect("FERRY_BENCH_MONGO_PORT (see loadtests/mongo_query/run.sh)")
        .parse()
        .expect("a port");
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = prometheus::Registry::new();
    let registry = PoolRegistry::new(
        NetworkPolicy {
            allow_private_networks: true,
            sqlite_dir: dir.path().join("sqlite"),
            trusted_roots: Default::default(),
        },
        &metrics,
    );
    let config = json!({"connection_string": format!("mongodb://127.0.0.1:{port}/"), "database": "bench",
                        "connection_timeout_seconds": 30, "statement_timeout_seconds": 3600});
    let spec = ConnectorSpec {
        uuid: "conn_bench".into(),
        org_id: "org_bench".into(),
        connector_type: "mongodb".into(),
        version: 1,
        config: config.as_object().cloned().unwrap_or_default(),
    };
    let url = url::Url::from_directory_path(dir.path().join("results")).expect("url");
    let target = ObjectTarget::open(url.as_str()).expect("file target");
    let path = target.step_path("exec_bench", "step_1");
    let step_config = json!({"connector_uuid": "conn_01J9ZQ4X3M6R8T2V5W7Y9A1B3C", "collection": "orders"});
    let supplied = serde_json::Map::new();
    let step = Step {
        registry: &registry,
        spec: &spec,
        request: StepRequest {
            step_type: StepType::MongoQuery,
            connector: ferry_shared::connectors::find("mongodb").expect("declared"),
            config: step_config.as_object().expect("an object"),
            supplied: &supplied,
            policy: registry.policy(),
        },
    };
    let started = std::time::Instant::now();
    let output = run_step_with(
        &ExtractOptions::default(),
        &step,
        &Destination::new(&target, &path),
        &|_, _| {},
        &CancellationToken::new(),
        || async { true },
    )
    .await
    .expect("the benchmark step");
    let seconds = started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0.0);
    #[allow(clippy::cast_precision_loss)]
    let (rows, bytes) = (output.rows as f64, output.bytes as f64);
    println!(
        "BENCH rows={} seconds={seconds:.3} rows_per_s={:.0} parquet_mib={:.1} row_groups={} peak_rss_mib={:.1}",
        output.rows,
        rows / seconds,
        bytes / 1_048_576.0,
        output.row_groups,
        peak_kib / 1024.0
    );
}
