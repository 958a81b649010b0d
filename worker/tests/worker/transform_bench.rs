//! The transform benchmark's Ferry side (`loadtests/transform/run.sh`):
//! two 5,000,000-row results written the way steps write them (the Parquet
//! sink, zstd), and a transform joining them, timed, with the process's
//! peak RSS. Ignored in normal runs.
//!
//!   FERRY_BENCH_DIR   directory of the file:// result store (required)
//!   FERRY_BENCH_ROWS  rows per input (default 5 000 000)
//!   FERRY_TRANSFORM_* the engine's settings (memory, spill dir, hash join)

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::Utc;
use clap::Parser;
use ferry_shared::domain::{Execution, ExecutionStatus, StepRun, StepRunStatus, Trigger};
use ferry_shared::objects::ObjectTarget;
use ferry_worker::extract::Destination;
use ferry_worker::sink::{ParquetSink, SinkOptions};
use ferry_worker::transform::{Engine, Transform, TransformArgs};
use serde_json::{Map, json};
use tokio_util::sync::CancellationToken;

/// The engine's settings, from the worker's own `FERRY_TRANSFORM_*`
/// variables.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    transform: TransformArgs,
}

/// The join the benchmark times; DuckDB runs the same text over the same
/// files (`read_parquet` in place of the table names).
pub const QUERY: &str = "SELECT o.order_id, o.status, o.amount, p.method, p.paid_cents, p.paid_at \
                         FROM orders o JOIN payments p ON p.order_id = o.order_id";

fn rows() -> i64 {
    std::env::var("FERRY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000_000)
}

fn target() -> ObjectTarget {
    let dir = std::env::var("FERRY_BENCH_DIR").expect("FERRY_BENCH_DIR: the benchmark's directory");
    let url = url::Url::from_directory_path(std::path::Path::new(&dir).join("objects")).expect("url");
    ObjectTarget::open(url.as_str()).expect("file target")
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// `i` scattered over 0..n (a multiplicative permutation: n and the
/// multiplier are coprime for the sizes used).
fn scatter(i: i64, n: i64) -> i64 {
    (i.wrapping_mul(2_654_435_761) % n + n) % n
}

async fn write(
    target: &ObjectTarget,
    step: &str,
    schema: SchemaRef,
    columns: impl Fn(i64, i64) -> Vec<ArrayRef>,
) {
    let path = target.step_path("exec_bench", step);
    let cancel = CancellationToken::new();
    let mut sink = ParquetSink::new(target.store.clone(), path, schema.clone(), SinkOptions::default());
    let n = rows();
    let mut start = 0;
    while start < n {
        let end = (start + 16_384).min(n);
        let batch = RecordBatch::try_new(schema.clone(), columns(start, end)).expect("batch");
        sink.write(&batch, &cancel).await.expect("write");
        start = end;
    }
    sink.finish(&cancel, || async { true }).await.expect("finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark input: run loadtests/transform/run.sh"]
async fn bench_transform_inputs() {
    let target = target();
    let n = rows();
    let utc = || Some("UTC".into());
    let orders = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, true),
        Field::new("customer_id", DataType::Int64, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new(
            "ordered_at",
            DataType::Timestamp(TimeUnit::Microsecond, utc()),
            true,
        ),
    ]));
    let base = 1_767_225_600_000_000_i64; // 2026-01-01
    write(&target, "step_orders", orders, |from, to| {
        let ids = from..to;
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(Int64Array::from_iter_values(
                ids.clone().map(|i| scatter(i, 100_003)),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.clone()
                    .map(|i| ["open", "paid", "shipped", "returned"][(i % 4) as usize]),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.clone().map(|i| (scatter(i, 99_991) as f64) / 100.0),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(ids.map(|i| base + i * 1_000_000))
                    .with_timezone("UTC"),
            ),
        ]
    })
    .await;
    let payments = Arc::new(Schema::new(vec![
        Field::new("payment_id", DataType::Int64, true),
        Field::new("order_id", DataType::Int64, true),
        Field::new("method", DataType::Utf8, true),
        Field::new("paid_cents", DataType::Int64, true),
        Field::new("paid_at", DataType::Timestamp(TimeUnit::Microsecond, utc()), true),
    ]));
    write(&target, "step_payments", payments, |from, to| {
        let ids = from..to;
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(Int64Array::from_iter_values(ids.clone().map(|i| scatter(i, n)))),
            Arc::new(StringArray::from_iter_values(ids.clone().map(|i| {
                format!("card-{}", ["visa", "amex", "sepa"][(i % 3) as usize])
            }))),
            Arc::new(Int64Array::from_iter_values(
                ids.clone().map(|i| scatter(i, 1_000_003)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    ids.map(|i| base + i * 1_000_000 + 3_600_000_000),
                )
                .with_timezone("UTC"),
            ),
        ]
    })
    .await;
    println!("INPUTS rows={n} dir={}", target.base_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run loadtests/transform/run.sh"]
async fn bench_transform_join() {
    let target = target();
    let step = |position: i32, id: &str, name: &str, status: StepRunStatus| StepRun {
        step_id: id.into(),
        position,
        name: name.into(),
        step_type: "sql_query".into(),
        config: json!({}),
        status,
        started_at: None,
        completed_at: None,
        rows_processed: rows(),
        bytes_written: 0,
        output_file: Some(target.url_of(&target.step_path("exec_bench", id))),
        open_upload: None,
        attempts: 1,
        waiting_reason: None,
        error: None,
    };
    let mut transform = step(3, "step_join", "join", StepRunStatus::Running);
    transform.step_type = "transform".into();
    transform.output_file = None;
    let execution = Execution {
        execution_id: "exec_bench".into(),
        project_uuid: "proj_bench".into(),
        org_id: "org_bench".into(),
        status: ExecutionStatus::Running,
        trigger: Trigger::Api,
        parameters: Map::new(),
        notify_on_completion: false,
        created_by: "user_bench".into(),
        created_at: Utc::now(),
        started_at: Some(Utc::now()),
        completed_at: None,
        attempt: 1,
        lease_owner: None,
        lease_expires_at: None,
        steps: vec![
            step(1, "step_orders", "orders", StepRunStatus::Completed),
            step(2, "step_payments", "payments", StepRunStatus::Completed),
            transform.clone(),
        ],
    };
    let options = Flags::try_parse_from(["transform_bench"])
        .expect("FERRY_TRANSFORM_* settings")
        .transform
        .options();
    let engine = Engine::new(options.clone()).expect("engine");
    let config = json!({"query": QUERY}).as_object().cloned().expect("object");
    let path = target.step_path("exec_bench", "step_join");
    let rss_before = status_kib("VmRSS:");

    let started = Instant::now();
    let output = Transform {
        objects: &target,
        execution: &execution,
        step: &transform,
        config: &config,
        dependencies: &[],
    }
    .run(
        &engine,
        &Destination::new(&target, &path),
        &CancellationToken::new(),
    )
    .await
    .expect("transform");
    let seconds = started.elapsed().as_secs_f64();

    assert_eq!(output.rows, rows(), "every order has one payment");
    println!(
        "BENCH rows={} seconds={seconds:.3} rows_per_s={:.0} output_mib={:.1} row_groups={} \
         memory_limit_mib={} hash_join={} sort_merge_reruns={} rss_before_mib={:.1} peak_rss_mib={:.1}",
        output.rows,
        output.rows as f64 / seconds,
        output.bytes as f64 / 1_048_576.0,
        output.row_groups,
        options.memory_limit >> 20,
        options.hash_join,
        engine.sort_merge_reruns(),
        rss_before as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
    );
}
