//! `transform` steps: SQL over earlier steps' Parquet results, read straight
//! from object storage (file:// and a moto S3 server), checked row for row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::Utc;
use ferry_shared::domain::{
    ErrorKind, Execution, ExecutionStatus, StepError, StepRun, StepRunStatus, Trigger,
};
use ferry_shared::objects::ObjectTarget;
use ferry_testkit::peers::S3Peer;
use ferry_worker::extract::{Destination, ExtractError, StepOutput};
use ferry_worker::sink::{ParquetSink, SinkOptions};
use ferry_worker::transform::{Engine, Transform, TransformOptions};
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

// ------------------------------------------------------------------ fixtures

/// Where a test's execution keeps its results.
struct Store {
    target: ObjectTarget,
    _dir: Option<TempDir>,
    _s3: Option<S3Peer>,
}

fn file_store() -> Store {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = url::Url::from_directory_path(dir.path().join("objects")).expect("url");
    Store {
        target: ObjectTarget::open(url.as_str()).expect("file target"),
        _dir: Some(dir),
        _s3: None,
    }
}

async fn s3_store(prefix: &str) -> Store {
    let peer = S3Peer::start("ferry-transform").await;
    let options = peer.target_options();
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let target = ObjectTarget::open_with_options(&format!("s3://{}/{prefix}", peer.bucket), &options)
        .expect("s3 target");
    Store {
        target,
        _dir: None,
        _s3: Some(peer),
    }
}

/// An execution being built step by step, its results written the way a
/// step writes them (the Parquet sink).
struct Run {
    execution: Execution,
}

impl Run {
    fn new() -> Run {
        Run {
            execution: Execution {
                execution_id: ferry_testkit::unique("exec"),
                project_uuid: "proj_transform".into(),
                org_id: "org_test".into(),
                status: ExecutionStatus::Running,
                trigger: Trigger::Api,
                parameters: Map::new(),
                notify_on_completion: false,
                created_by: "user_test".into(),
                created_at: Utc::now(),
                started_at: Some(Utc::now()),
                completed_at: None,
                attempt: 1,
                lease_owner: None,
                lease_expires_at: None,
                steps: Vec::new(),
            },
        }
    }

    fn push(&mut self, name: &str, step_type: &str, config: Value, status: StepRunStatus) -> usize {
        let position = self.execution.steps.len() as i32 + 1;
        self.execution.steps.push(StepRun {
            step_id: format!("step_{}", ferry_testkit::ulid()),
            position,
            name: name.into(),
            step_type: step_type.into(),
            config,
            status,
            started_at: None,
            completed_at: None,
            rows_processed: 0,
            bytes_written: 0,
            output_file: None,
            open_upload: None,
            attempts: 0,
            waiting_reason: None,
            error: (status == StepRunStatus::Failed)
                .then(|| StepError::new(ErrorKind::InvalidQuery, "no such table")),
        });
        self.execution.steps.len() - 1
    }

    /// A completed step whose result is `batch`.
    async fn completed(&mut self, store: &Store, name: &str, batch: RecordBatch) -> usize {
        let index = self.push(name, "sql_query", json!({}), StepRunStatus::Completed);
        let step = &mut self.execution.steps[index];
        let path = store
            .target
            .step_path(&self.execution.execution_id, &step.step_id);
        let cancel = CancellationToken::new();
        let mut sink = ParquetSink::new(
            store.target.store.clone(),
            path.clone(),
            batch.schema(),
            SinkOptions::default(),
        );
        sink.write(&batch, &cancel).await.expect("write");
        let output = sink.finish(&cancel, || async { true }).await.expect("finish");
        step.rows_processed = output.rows as i64;
        step.output_file = Some(store.target.url_of(&path));
        index
    }

    /// A step that did not complete (`failed`, `skipped`, `pending`).
    fn unfinished(&mut self, name: &str, status: StepRunStatus) -> usize {
        self.push(name, "sql_query", json!({}), status)
    }

    /// The transform step running `query`.
    fn transform(&mut self, name: &str, config: Value) -> usize {
        self.push(name, "transform", config, StepRunStatus::Running)
    }

    fn id(&self, index: usize) -> String {
        self.execution.steps[index].step_id.clone()
    }

    /// Runs the transform at `index` on `engine`.
    async fn run_on(
        &self,
        store: &Store,
        engine: &Engine,
        index: usize,
        dependencies: &[String],
        cancel: &CancellationToken,
    ) -> Result<StepOutput, ExtractError> {
        let step = &self.execution.steps[index];
        let config = step.config.as_object().cloned().expect("config object");
        let path = store
            .target
            .step_path(&self.execution.execution_id, &step.step_id);
        Transform {
            objects: &store.target,
            execution: &self.execution,
            step,
            config: &config,
            dependencies,
        }
        .run(engine, &Destination::new(&store.target, &path), cancel)
        .await
    }

    async fn run(&self, store: &Store, index: usize) -> Result<StepOutput, ExtractError> {
        let engine = engine(TransformOptions::default());
        let result = self
            .run_on(store, &engine, index, &[], &CancellationToken::new())
            .await;
        assert_eq!(engine.memory_reserved(), 0, "every reservation is returned");
        result
    }

    /// Whether the transform at `index` left a result object.
    async fn has_result(&self, store: &Store, index: usize) -> bool {
        let path = store
            .target
            .step_path(&self.execution.execution_id, &self.execution.steps[index].step_id);
        match store.target.store.head(&path).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(other) => panic!("head {path}: {other}"),
        }
    }

    /// The transform's result read back: its schema and rows.
    async fn result(&self, store: &Store, index: usize) -> (SchemaRef, Vec<String>) {
        let path = store
            .target
            .step_path(&self.execution.execution_id, &self.execution.steps[index].step_id);
        let bytes = store
            .target
            .store
            .get(&path)
            .await
            .expect("get result")
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
        (schema, batches.iter().flat_map(rows).collect())
    }
}

fn engine(options: TransformOptions) -> Engine {
    Engine::new(options).expect("engine")
}

/// Each row as `a|b|c` (nulls as `∅`).
fn rows(batch: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("∅");
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
        .collect();
    (0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch")
}

fn customers() -> RecordBatch {
    batch(
        vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("region", DataType::Utf8, true),
        ],
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
            Arc::new(StringArray::from(vec!["Ada", "Bob", "Cy", "Dee", "Eve"])),
            Arc::new(StringArray::from(vec!["EU", "US", "EU", "US", "APAC"])),
        ],
    )
}

fn orders() -> RecordBatch {
    let at = |day: u32, hour: u32| {
        chrono::NaiveDate::from_ymd_opt(2026, 3, day)
            .and_then(|d| d.and_hms_opt(hour, 0, 0))
            .expect("timestamp")
            .and_utc()
            .timestamp_micros()
    };
    batch(
        vec![
            Field::new("order_id", DataType::Int64, true),
            Field::new("customer_id", DataType::Int64, true),
            Field::new("amount", DataType::Float64, true),
            Field::new(
                "ordered_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ],
        vec![
            Arc::new(Int64Array::from(vec![10, 11, 12, 13, 14, 15, 16, 17])),
            Arc::new(Int64Array::from(vec![1, 1, 2, 3, 3, 3, 4, 6])),
            Arc::new(Float64Array::from(vec![
                120.5, 30.0, 200.0, 99.5, 100.0, 1.0, 50.0, 5.0,
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    at(1, 9),
                    at(2, 10),
                    at(2, 11),
                    at(3, 12),
                    at(4, 13),
                    at(5, 14),
                    at(5, 15),
                    at(6, 16),
                ])
                .with_timezone("UTC"),
            ),
        ],
    )
}

/// Per customer: orders, total, and rank by total within the region; the
/// customer table by its slug, the orders by `step_2`.
const TOTALS: &str = "SELECT c.name, c.region, count(*) AS orders, sum(o.amount) AS total, \
     rank() OVER (PARTITION BY c.region ORDER BY sum(o.amount) DESC) AS rank_in_region \
     FROM extract_customers c JOIN step_2 o ON o.customer_id = c.id \
     GROUP BY c.name, c.region ORDER BY c.region, rank_in_region";

const TOTALS_ROWS: [&str; 4] = [
    "Cy|EU|3|200.5|1",
    "Ada|EU|2|150.5|2",
    "Bob|US|1|200.0|1",
    "Dee|US|1|50.0|2",
];

async fn joins_aggregates_and_windows(store: &Store) {
    let mut run = Run::new();
    run.completed(store, "Extract customers", customers()).await;
    run.completed(store, "Extract orders", orders()).await;
    let totals = run.transform("Totals", json!({"query": TOTALS}));

    let output = run.run(store, totals).await.expect("transform");

    assert_eq!(output.rows, 4);
    let (schema, rows) = run.result(store, totals).await;
    assert_eq!(rows, TOTALS_ROWS);
    let columns: Vec<(&str, &DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(
        columns,
        [
            ("name", &DataType::Utf8),
            ("region", &DataType::Utf8),
            ("orders", &DataType::Int64),
            ("total", &DataType::Float64),
            ("rank_in_region", &DataType::UInt64),
        ]
    );
}

// --------------------------------------------------------------------- tests

#[tokio::test]
async fn a_transform_joins_aggregates_and_ranks_earlier_results_on_file_storage() {
    joins_aggregates_and_windows(&file_store()).await;
}

#[tokio::test]
async fn a_transform_joins_aggregates_and_ranks_earlier_results_on_s3() {
    let store = s3_store("team/results").await;
    joins_aggregates_and_windows(&store).await;
    let mut run = Run::new();
    run.completed(&store, "orders", orders()).await;
    let late = run.transform(
        "late orders",
        json!({"query": "SELECT order_id, ordered_at FROM orders WHERE ordered_at >= {{since}} ORDER BY order_id",
               "parameters": {"since": {"type": "timestamp"}}}),
    );
    run.execution.parameters = json!({"since": "2026-03-05T14:00:00+02:00"})
        .as_object()
        .cloned()
        .expect("object");

    run.run(&store, late).await.expect("transform");

    let (schema, rows) = run.result(&store, late).await;
    assert_eq!(
        rows,
        [
            "15|2026-03-05T14:00:00Z",
            "16|2026-03-05T15:00:00Z",
            "17|2026-03-06T16:00:00Z"
        ]
    );
    assert_eq!(
        schema.field(1).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "timestamps keep their zone through the transform"
    );
}

#[tokio::test]
async fn a_left_join_keeps_unmatched_rows_with_nulls() {
    let store = file_store();
    let mut run = Run::new();
    run.completed(&store, "customers", customers()).await;
    run.completed(&store, "orders", orders()).await;
    let t = run.transform(
        "t",
        json!({"query": "SELECT c.name, o.order_id FROM customers c LEFT JOIN orders o \
                         ON o.customer_id = c.id WHERE c.id >= 4 ORDER BY c.id, o.order_id"}),
    );

    run.run(&store, t).await.expect("transform");

    assert_eq!(run.result(&store, t).await.1, ["Dee|16", "Eve|∅"]);
}

#[tokio::test]
async fn parameters_are_bound_as_typed_values_and_an_injection_attempt_stays_a_value() {
    let store = file_store();
    let mut run = Run::new();
    run.completed(&store, "customers", customers()).await;
    run.completed(&store, "orders", orders()).await;
    let query = "SELECT c.name FROM customers c WHERE c.region = {{region}} AND c.id >= {{min_id}} \
                 AND EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id \
                             AND CAST(o.ordered_at AS DATE) >= {{day}} AND o.amount > {{floor}}) \
                 ORDER BY c.id";
    let t = run.transform(
        "filtered",
        json!({"query": query, "parameters": {
            "min_id": {"type": "integer", "default": 1},
            "day": {"type": "date"},
            "floor": {"type": "number", "default": 0.5}
        }}),
    );
    let set = |run: &mut Run, parameters: Value| {
        run.execution.parameters = parameters.as_object().cloned().expect("object");
    };

    set(&mut run, json!({"region": "EU", "day": "2026-03-01"}));
    run.run(&store, t).await.expect("transform");
    assert_eq!(run.result(&store, t).await.1, ["Ada", "Cy"]);

    set(
        &mut run,
        json!({"region": "EU", "day": "2026-03-03", "min_id": 2, "floor": 99.75}),
    );
    run.run(&store, t).await.expect("transform");
    assert_eq!(run.result(&store, t).await.1, ["Cy"]);

    set(&mut run, json!({"region": "EU' OR '1'='1", "day": "2026-03-01"}));
    let output = run.run(&store, t).await.expect("transform");
    assert_eq!(output.rows, 0, "the quote is part of the value");
    let (schema, rows) = run.result(&store, t).await;
    assert!(rows.is_empty());
    assert_eq!(schema.field(0).name(), "name");

    set(&mut run, json!({"region": "EU"}));
    let missing = run.run(&store, t).await.expect_err("day has no value");
    assert_eq!(missing.error_type, ErrorKind::InvalidParameters);
    assert!(missing.message.contains("day"), "{}", missing.message);
}

#[tokio::test]
async fn a_failed_skipped_later_or_own_step_referenced_fails_before_running_naming_the_step() {
    let store = file_store();
    let mut run = Run::new();
    run.completed(&store, "customers", customers()).await;
    run.unfinished("Broken feed", StepRunStatus::Failed);
    run.unfinished("Optional feed", StepRunStatus::Skipped);
    let t = run.transform("Report", json!({"query": "SELECT 1"}));
    run.unfinished("Later load", StepRunStatus::Pending);

    let cases = [
        ("broken_feed", "step 2 (`Broken feed`) failed in this execution"),
        ("step_2", "step 2 (`Broken feed`) failed in this execution"),
        (
            "optional_feed",
            "step 3 (`Optional feed`) was skipped in this execution",
        ),
        ("later_load", "step 5 (`Later load`) runs after this transform"),
        ("step_5", "step 5 (`Later load`) runs after this transform"),
        ("report", "step 4 (`Report`) is this transform itself"),
    ];
    for (table, expected) in cases {
        run.execution.steps[t].config =
            json!({"query": format!("SELECT c.name FROM customers c JOIN {table} x ON true")});
        let error = run.run(&store, t).await.expect_err(table);
        assert_eq!(error.error_type, ErrorKind::InvalidQuery, "{table}");
        assert!(
            error
                .message
                .contains(&format!("table `{table}` cannot be read: {expected}")),
            "{table}: {}",
            error.message
        );
        assert!(!run.has_result(&store, t).await, "{table}: nothing was written");
    }

    run.execution.steps[t].config = json!({"query": "SELECT * FROM customers JOIN nowhere ON true"});
    let error = run.run(&store, t).await.expect_err("unknown table");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert!(error.message.contains("nowhere"), "{}", error.message);
    assert!(error.message.contains("not found"), "{}", error.message);

    run.execution.steps[t].config = json!({"query": "SELECT name, no_such_column FROM customers"});
    let error = run.run(&store, t).await.expect_err("unknown column");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert!(error.message.contains("no_such_column"), "{}", error.message);

    run.execution.steps[t].config = json!({"query": "SELEC name FROM customers"});
    let error = run.run(&store, t).await.expect_err("syntax");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
}

#[tokio::test]
async fn steps_are_tables_by_slug_and_by_order_and_order_names_win() {
    let store = file_store();
    let mut run = Run::new();
    let one = |n: i64| {
        batch(
            vec![Field::new("n", DataType::Int64, true)],
            vec![Arc::new(Int64Array::from((1..=n).collect::<Vec<_>>()))],
        )
    };
    run.completed(&store, "Extract  Sales (EU)!", one(1)).await;
    run.completed(&store, "Step 1", one(2)).await;
    run.completed(&store, "dup", one(3)).await;
    run.completed(&store, "DUP!", one(4)).await;
    let t = run.transform("names", json!({"query": "SELECT count(*) FROM \"STEP_3\""}));

    let error = run
        .run(&store, t)
        .await
        .expect_err("quoted upper case is another name");
    assert!(error.message.contains("STEP_3"), "{}", error.message);

    run.execution.steps[t].config = json!({"query": "SELECT (SELECT count(*) FROM extract_sales_eu) AS by_slug, \
            (SELECT count(*) FROM step_1) AS step_1, (SELECT count(*) FROM step_2) AS step_2, \
            (SELECT count(*) FROM Step_4) AS unquoted_upper"});
    run.run(&store, t).await.expect("transform");
    assert_eq!(
        run.result(&store, t).await.1,
        ["1|1|2|4"],
        "`step_1` is the step at order 1, not the step named \"Step 1\""
    );

    run.execution.steps[t].config = json!({"query": "SELECT * FROM dup"});
    let error = run.run(&store, t).await.expect_err("ambiguous");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert_eq!(
        error.message,
        "table `dup` is ambiguous: it is the name of step 3 (`dup`) and step 4 (`DUP!`); \
         use their step_<order> names"
    );
}

#[tokio::test]
async fn with_dependencies_a_transform_reads_only_those_steps() {
    let store = file_store();
    let mut run = Run::new();
    let customers_step = run.completed(&store, "customers", customers()).await;
    run.completed(&store, "orders", orders()).await;
    let t = run.transform("t", json!({"query": "SELECT count(*) AS n FROM customers"}));
    let engine = engine(TransformOptions::default());
    let cancel = CancellationToken::new();
    let dependencies = [run.id(customers_step)];

    run.run_on(&store, &engine, t, &dependencies, &cancel)
        .await
        .expect("a dependency is readable");
    assert_eq!(run.result(&store, t).await.1, ["5"]);

    run.execution.steps[t].config = json!({"query": "SELECT count(*) FROM step_2"});
    let error = run
        .run_on(&store, &engine, t, &dependencies, &cancel)
        .await
        .expect_err("not a dependency");
    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert_eq!(
        error.message,
        format!(
            "table `step_2` cannot be read: step 2 (`orders`) is not among this transform's dependencies ({})",
            dependencies[0]
        )
    );
    run.run_on(&store, &engine, t, &[], &cancel)
        .await
        .expect("without dependencies every earlier step is readable");
    assert_eq!(run.result(&store, t).await.1, ["8"]);
}

#[tokio::test]
async fn only_queries_run_and_only_the_results_are_reachable() {
    let store = file_store();
    let mut run = Run::new();
    run.completed(&store, "customers", customers()).await;
    let t = run.transform("t", json!({"query": "SELECT 1"}));
    let outside = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(outside.path(), "secret\n").expect("write");
    let outside = outside.path().display().to_string();
    for query in [
        format!("CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{outside}'"),
        format!("COPY (SELECT * FROM customers) TO '{outside}.csv'"),
        "INSERT INTO customers VALUES (9, 'Mal', 'EU')".to_owned(),
        "SET datafusion.execution.target_partitions = 1".to_owned(),
        format!("SELECT * FROM '{outside}'"),
        format!("SELECT * FROM 'file://{outside}'"),
        "SELECT 1; SELECT 2".to_owned(),
    ] {
        run.execution.steps[t].config = json!({ "query": query });
        let error = run.run(&store, t).await.expect_err(&query);
        assert_eq!(
            error.error_type,
            ErrorKind::InvalidQuery,
            "{query}: {}",
            error.message
        );
    }
    assert!(!std::path::Path::new(&format!("{outside}.csv")).exists());
}

#[tokio::test]
async fn a_cancelled_transform_stops_and_publishes_nothing() {
    let store = file_store();
    let mut run = Run::new();
    let ids = batch(
        vec![Field::new("n", DataType::Int64, true)],
        vec![Arc::new(Int64Array::from((0..3000).collect::<Vec<_>>()))],
    );
    run.completed(&store, "numbers", ids).await;
    let t = run.transform(
        "slow",
        json!({"query": "SELECT a.n, b.n AS m FROM numbers a CROSS JOIN numbers b \
                         ORDER BY (a.n * 31 + b.n) % 9973, a.n, b.n"}),
    );
    let engine = engine(TransformOptions::default());
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cancel.cancel();
        })
    };

    let error = run
        .run_on(&store, &engine, t, &[], &cancel)
        .await
        .expect_err("cancelled");

    canceller.await.expect("canceller");
    assert_eq!(error.error_type, ErrorKind::Cancelled, "{}", error.message);
    // Sorting nine million rows takes far longer than that: the read
    // stopped at the cancel, not at the end of the query.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped {:?} after starting",
        started.elapsed()
    );
    assert!(!run.has_result(&store, t).await);
    assert!(
        ferry_testkit::eventually(Duration::from_secs(10), || async {
            engine.memory_reserved() == 0
        })
        .await,
        "the query's memory was released"
    );
}

/// Two results of 600 000 rows joined in 24 MiB: more than a hash table
/// of either takes, so the hash join runs out of memory and the transform
/// runs again with a sort-merge join, which spills; with room enough the
/// hash join runs once.
#[tokio::test]
async fn a_join_larger_than_the_memory_limit_spills_and_is_exact() {
    let store = file_store();
    let mut run = Run::new();
    let rows = 600_000_i64;
    let table = |seed: i64| {
        batch(
            vec![
                Field::new("id", DataType::Int64, true),
                Field::new("payload", DataType::Utf8, true),
            ],
            vec![
                Arc::new(Int64Array::from(
                    (0..rows).map(|i| (i * seed) % rows).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    (0..rows)
                        .map(|i| format!("payload-{seed}-{i:08}"))
                        .collect::<Vec<_>>(),
                )),
            ],
        )
    };
    // Multipliers coprime with 600 000: each id column is a permutation of
    // 0..rows, so every row finds exactly one partner.
    run.completed(&store, "left", table(7)).await;
    run.completed(&store, "right", table(11)).await;
    let t = run.transform(
        "joined",
        json!({"query": "SELECT count(*) AS n, sum(l.id) AS ids, \
                                max(length(l.payload) + length(r.payload)) AS widest \
                         FROM \"left\" l JOIN \"right\" r ON l.id = r.id"}),
    );
    let expected = [format!("{rows}|{}|37", rows * (rows - 1) / 2)];

    for (memory_limit, hash_join, reruns) in [(24 << 20, true, 1), (24 << 20, false, 0), (1 << 30, true, 0)] {
        let engine = engine(TransformOptions {
            memory_limit,
            hash_join,
            ..TransformOptions::default()
        });
        let case = format!("{memory_limit} bytes, hash_join {hash_join}");
        run.run_on(&store, &engine, t, &[], &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(run.result(&store, t).await.1, expected, "{case}");
        assert_eq!(engine.sort_merge_reruns(), reruns, "{case}");
        assert!(
            ferry_testkit::eventually(Duration::from_secs(10), || async {
                engine.memory_reserved() == 0
            })
            .await,
            "{case}: memory released"
        );
    }
}

#[tokio::test]
async fn a_query_that_cannot_fit_in_memory_fails_with_a_clear_error() {
    let store = file_store();
    let mut run = Run::new();
    let rows = 200_000_i64;
    run.completed(
        &store,
        "texts",
        batch(
            vec![Field::new("s", DataType::Utf8, true)],
            vec![Arc::new(StringArray::from(
                (0..rows)
                    .map(|i| format!("text-{i:010}-abcdefghijklmnopqrstuvwxyz"))
                    .collect::<Vec<_>>(),
            ))],
        ),
    )
    .await;
    let t = run.transform(
        "all in one",
        json!({"query": "SELECT length(string_agg(s, ',')) AS n FROM texts"}),
    );
    let tiny = engine(TransformOptions {
        memory_limit: 2 << 20,
        ..TransformOptions::default()
    });

    let error = run
        .run_on(&store, &tiny, t, &[], &CancellationToken::new())
        .await
        .expect_err("does not fit");

    assert_eq!(error.error_type, ErrorKind::InvalidQuery);
    assert!(
        error
            .message
            .starts_with("the transform needs more memory than the worker allows (2.0 MiB for all transforms, FERRY_TRANSFORM_MEMORY)"),
        "{}",
        error.message
    );
    assert!(!run.has_result(&store, t).await);
    assert_eq!(tiny.sort_merge_reruns(), 0, "no join to run differently");
    assert!(
        ferry_testkit::eventually(Duration::from_secs(10), || async { tiny.memory_reserved() == 0 }).await,
        "memory released"
    );
}
