//! `bench_extraction`: the 5 000 000-row `bench_sales` table exported by
//! one step to Parquet (zstd) on file://, timed, with the process's peak
//! RSS. Ignored in normal runs; `loadtests/extraction/run.sh` loads the
//! table, runs this in release mode and puts psql's binary COPY beside it.
//!
//!   FERRY_BENCH_DATABASE  database holding bench_sales (default ferry_bench)
//!   FERRY_BENCH_MODE      copy (default) or extended (forces the extended protocol)
//!   FERRY_BENCH_DIR       where the Parquet file goes (default: a temp dir)
//!   FERRY_BENCH_BATCH_ROWS, FERRY_BENCH_ROW_GROUP_MIB, FERRY_BENCH_PART_MIB,
//!   FERRY_BENCH_ZSTD      override the defaults, for tuning

use std::time::Instant;

use ferry_worker::extract::{Destination, ExtractOptions, SqlSource, run_sql_step_with};
use parquet::file::reader::{FileReader, SerializedFileReader};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// A `/proc/self/status` field in KiB (VmHWM: peak resident set size).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run loadtests/extraction/run.sh"]
async fn bench_extraction() {
    let database = std::env::var("FERRY_BENCH_DATABASE").unwrap_or_else(|_| "ferry_bench".into());
    let mode = std::env::var("FERRY_BENCH_MODE").unwrap_or_else(|_| "copy".into());
    let pool = pg_pool(&database, 5).await;
    let expected: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_sales")
        .fetch_one(&pool)
        .await
        .unwrap_or_else(|e| {
            panic!("bench_sales is missing from {database}: run loadtests/extraction/run.sh ({e})")
        });
    let dir = match std::env::var_os("FERRY_BENCH_DIR") {
        Some(dir) => tempfile::Builder::new().prefix("ferry-bench-").tempdir_in(dir),
        None => tempfile::Builder::new().prefix("ferry-bench-").tempdir(),
    }
    .expect("bench dir");
    let url = url::Url::from_directory_path(dir.path()).expect("url");
    let target = ferry_shared::objects::ObjectTarget::open(url.as_str()).expect("target");
    let path = target.step_path("exec_bench", "step_sales");
    let mut options = ExtractOptions {
        postgres_copy: mode != "extended",
        ..ExtractOptions::default()
    };
    let knob = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
    if let Some(rows) = knob("FERRY_BENCH_BATCH_ROWS") {
        options.batch_rows = rows;
    }
    if let Some(mib) = knob("FERRY_BENCH_ROW_GROUP_MIB") {
        options.sink.row_group_bytes = mib * 1024 * 1024;
    }
    if let Some(mib) = knob("FERRY_BENCH_PART_MIB") {
        options.sink.part_size = mib * 1024 * 1024;
    }
    if let Some(level) = knob("FERRY_BENCH_ZSTD") {
        options.sink.zstd_level = i32::try_from(level).expect("zstd level");
    }
    let source = SqlSource::Postgres(pool);
    let rss_before = status_kib("VmRSS:");

    let started = Instant::now();
    let output = run_sql_step_with(
        &options,
        &source,
        &query("SELECT * FROM bench_sales", vec![]),
        &Destination::new(&target, &path),
        &|_, _| {},
        &CancellationToken::new(),
        || async { true },
    )
    .await
    .expect("extraction");
    let seconds = started.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:");

    assert_eq!(output.rows, expected);
    // Only the footer is read back, so the check does not raise the peak.
    let file = std::fs::File::open(dir.path().join(path.as_ref())).expect("parquet file");
    let reader = SerializedFileReader::new(file).expect("parquet footer");
    assert_eq!(reader.metadata().file_metadata().num_rows(), expected);
    println!(
        "BENCH ferry mode={mode} path={:?} rows={} seconds={seconds:.3} rows_per_s={:.0} parquet_mib={:.1} parts={} \
         row_groups={} rss_before_mib={:.1} peak_rss_mib={:.1}",
        output.read_path,
        output.rows,
        output.rows as f64 / seconds,
        output.bytes as f64 / 1_048_576.0,
        output.parts,
        output.row_groups,
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
}
