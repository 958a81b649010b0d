//! The worker's metric families: jobs by kind, step durations, rows and
//! bytes by connector type, pool use and object-store uploads.
//!
//! Labels are bounded: a job kind, a connector type word (or `transform`,
//! or `other` for a type this build does not know), an outcome from a fixed
//! set. Never a uuid, an execution id, a path or an error message.
//! Everything is counted per step, per job or per part, never per row.

use std::sync::LazyLock;
use std::time::Instant;

use ferry_shared::connectors::registry;
use ferry_shared::domain::StepType;
use ferry_shared::queue::JobKind;
use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every job kind, so that each series exists from the start at zero.
const KINDS: [JobKind; 4] = [
    JobKind::ExecuteProject,
    JobKind::TestConnection,
    JobKind::DeliverWebhook,
    JobKind::ProbeConnector,
];

/// The `outcome` of a job as the runtime settles it.
pub const JOB_OUTCOMES: [&str; 3] = ["succeeded", "failed", "retried"];

/// The `status` an execution ended with on this worker.
pub const EXECUTION_STATUSES: [&str; 3] = ["completed", "failed", "cancelled"];

/// The `connector_type` label of transform steps, which read no connector.
pub const TRANSFORM: &str = "transform";

/// Seconds: from 10 ms to 2 h (a job or a step may stream for long).
const LONG_BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 7200.0,
];

/// Seconds: from 1 ms to 30 s (waits, probes).
const SHORT_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// The worker's families. Cheap to clone (every family is an `Arc`).
#[derive(Clone)]
pub struct WorkerMetrics {
    /// `ferry_worker_jobs_started_total{kind}`.
    pub jobs_started: IntCounterVec,
    /// `ferry_worker_jobs_finished_total{kind, outcome}`: `succeeded`,
    /// `failed` (aborted, acked) or `retried` (left for redelivery).
    pub jobs_finished: IntCounterVec,
    /// `ferry_worker_jobs_in_flight{kind}`.
    pub jobs_in_flight: IntGaugeVec,
    /// `ferry_worker_job_duration_seconds{kind}`.
    pub job_duration: HistogramVec,
    /// `ferry_worker_concurrency`: jobs this worker runs at once at most.
    pub concurrency: IntGauge,
    /// `ferry_worker_executions_finished_total{status}`.
    pub executions_finished: IntCounterVec,
    /// `ferry_worker_step_duration_seconds{connector_type, outcome}`, one
    /// observation per try of a step (`succeeded` or `failed`).
    pub step_duration: HistogramVec,
    /// `ferry_worker_step_retries_total{step_type}`.
    pub step_retries: IntCounterVec,
    /// `ferry_worker_rows_written_total{connector_type}`.
    pub rows_written: IntCounterVec,
    /// `ferry_worker_bytes_written_total{connector_type}` (Parquet bytes).
    pub bytes_written: IntCounterVec,
    /// `ferry_worker_probe_duration_seconds{outcome}`.
    pub probe_duration: HistogramVec,
}

/// Object-store upload counters of the Parquet sink. Process-wide (the
/// sink has no handle on a registry); every worker registry of the process
/// exports the same counters.
pub struct UploadMetrics {
    /// `ferry_worker_upload_bytes_total`: bytes of completed objects.
    pub bytes: IntCounter,
    /// `ferry_worker_uploads_total`: objects completed.
    pub completed: IntCounter,
    /// `ferry_worker_upload_errors_total`: uploads the object store failed.
    pub errors: IntCounter,
    /// `ferry_worker_multipart_aborts_total`: multipart uploads aborted
    /// (a failed, cancelled or fenced step).
    pub aborts: IntCounter,
}

/// The process's upload counters.
pub static UPLOADS: LazyLock<UploadMetrics> = LazyLock::new(|| UploadMetrics {
    bytes: counter(
        "ferry_worker_upload_bytes_total",
        "Bytes of result objects completed in object storage",
    ),
    completed: counter(
        "ferry_worker_uploads_total",
        "Result objects completed in object storage",
    ),
    errors: counter(
        "ferry_worker_upload_errors_total",
        "Result uploads that the object store failed",
    ),
    aborts: counter(
        "ferry_worker_multipart_aborts_total",
        "Multipart uploads aborted because their step failed, was cancelled or lost its lease",
    ),
});

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name))
}

/// Static names and help texts cannot fail; a change that breaks one
/// fails every test at once.
fn unreachable_metric(name: &str) -> ! {
    panic!("invalid metric definition {name}")
}

impl WorkerMetrics {
    /// Creates the families and registers them in `registry`. A
    /// registration conflict (a second worker on one registry) is logged and
    /// the families still count, unexported.
    pub fn new(registry: &Registry, concurrency: usize) -> Self {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric(name))
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable_metric(name))
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
                .unwrap_or_else(|_| unreachable_metric(name))
        };
        let metrics = WorkerMetrics {
            jobs_started: vec(
                "ferry_worker_jobs_started_total",
                "Jobs this worker started, by kind",
                &["kind"],
            ),
            jobs_finished: vec(
                "ferry_worker_jobs_finished_total",
                "Jobs this worker finished, by kind and outcome (succeeded, failed, retried)",
                &["kind", "outcome"],
            ),
            jobs_in_flight: gauge(
                "ferry_worker_jobs_in_flight",
                "Jobs running on this worker now, by kind",
                &["kind"],
            ),
            job_duration: histogram(
                "ferry_worker_job_duration_seconds",
                "Time a job ran on this worker, by kind",
                &["kind"],
                &LONG_BUCKETS,
            ),
            concurrency: IntGauge::new(
                "ferry_worker_concurrency",
                "Jobs this worker runs at once at most (FERRY_WORKER_CONCURRENCY)",
            )
            .unwrap_or_else(|_| unreachable_metric("ferry_worker_concurrency")),
            executions_finished: vec(
                "ferry_worker_executions_finished_total",
                "Executions this worker ended, by final status (completed, failed, cancelled)",
                &["status"],
            ),
            step_duration: histogram(
                "ferry_worker_step_duration_seconds",
                "Time one try of a step ran, by connector type and outcome (succeeded, failed)",
                &["connector_type", "outcome"],
                &LONG_BUCKETS,
            ),
            step_retries: vec(
                "ferry_worker_step_retries_total",
                "Steps tried again after a transient failure, by step type",
                &["step_type"],
            ),
            rows_written: vec(
                "ferry_worker_rows_written_total",
                "Rows of completed step results, by connector type",
                &["connector_type"],
            ),
            bytes_written: vec(
                "ferry_worker_bytes_written_total",
                "Parquet bytes of completed step results, by connector type",
                &["connector_type"],
            ),
            probe_duration: histogram(
                "ferry_worker_probe_duration_seconds",
                "Latency of connector health probes, by outcome (success, failure)",
                &["outcome"],
                &SHORT_BUCKETS,
            ),
        };
        metrics
            .concurrency
            .set(i64::try_from(concurrency).unwrap_or(i64::MAX));
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(metrics.jobs_started.clone()),
            Box::new(metrics.jobs_finished.clone()),
            Box::new(metrics.jobs_in_flight.clone()),
            Box::new(metrics.job_duration.clone()),
            Box::new(metrics.concurrency.clone()),
            Box::new(metrics.executions_finished.clone()),
            Box::new(metrics.step_duration.clone()),
            Box::new(metrics.step_retries.clone()),
            Box::new(metrics.rows_written.clone()),
            Box::new(metrics.bytes_written.clone()),
            Box::new(metrics.probe_duration.clone()),
            Box::new(UPLOADS.bytes.clone()),
            Box::new(UPLOADS.completed.clone()),
            Box::new(UPLOADS.errors.clone()),
            Box::new(UPLOADS.aborts.clone()),
        ];
        for collector in collectors {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "worker metrics not registered");
            }
        }
        // The bounded label sets exist from the start, at zero.
        for outcome in ["success", "failure"] {
            metrics.probe_duration.with_label_values(&[outcome]);
        }
        for kind in KINDS {
            metrics.job_duration.with_label_values(&[kind.as_str()]);
            metrics.jobs_started.with_label_values(&[kind.as_str()]);
            metrics.jobs_in_flight.with_label_values(&[kind.as_str()]);
            for outcome in JOB_OUTCOMES {
                metrics.jobs_finished.with_label_values(&[kind.as_str(), outcome]);
            }
        }
        for step_type in StepType::ALL {
            metrics.step_retries.with_label_values(&[step_type.as_str()]);
        }
        for status in EXECUTION_STATUSES {
            metrics.executions_finished.with_label_values(&[status]);
        }
        let types = registry_types().chain(std::iter::once(TRANSFORM));
        for connector_type in types {
            metrics.rows_written.with_label_values(&[connector_type]);
            metrics.bytes_written.with_label_values(&[connector_type]);
        }
        metrics
    }

    /// A job of `kind` starts: counted, in flight until the guard is
    /// finished (or dropped: see its `Drop`).
    pub fn job(&self, kind: JobKind) -> JobTimer {
        let kind = kind.as_str();
        self.jobs_started.with_label_values(&[kind]).inc();
        let in_flight = self.jobs_in_flight.with_label_values(&[kind]);
        in_flight.inc();
        JobTimer {
            metrics: self.clone(),
            kind,
            in_flight,
            started: Instant::now(),
            done: false,
        }
    }

    /// One try of a step on `connector_type` ended after `started`;
    /// `written` is its rows and bytes when it succeeded.
    pub fn step_tried(&self, connector_type: &str, started: Instant, written: Option<(i64, i64)>) {
        let outcome = if written.is_some() { "succeeded" } else { "failed" };
        self.step_duration
            .with_label_values(&[connector_type, outcome])
            .observe(started.elapsed().as_secs_f64());
        if let Some((rows, bytes)) = written {
            self.rows_written
                .with_label_values(&[connector_type])
                .inc_by(u64::try_from(rows).unwrap_or(0));
            self.bytes_written
                .with_label_values(&[connector_type])
                .inc_by(u64::try_from(bytes).unwrap_or(0));
        }
    }

    /// A step of `step_type` (as stored) failed transiently and runs again.
    pub fn step_retried(&self, step_type: &str) {
        let label = StepType::parse(step_type).map_or("other", StepType::as_str);
        self.step_retries.with_label_values(&[label]).inc();
    }

    /// A probe ended with `success` after `latency_ms`.
    pub fn probed(&self, success: bool, latency_ms: i64) {
        let outcome = if success { "success" } else { "failure" };
        let seconds = std::time::Duration::from_millis(u64::try_from(latency_ms).unwrap_or(0)).as_secs_f64();
        self.probe_duration.with_label_values(&[outcome]).observe(seconds);
    }
}

/// Pool use by connector type, kept by the pool registry
/// (`crate::pools`), which exists once per worker and in tests on its own.
#[derive(Clone)]
pub struct PoolMetrics {
    /// `ferry_worker_pool_in_use{connector_type}`: steps and tests running
    /// on a connector pool now.
    pub in_use: IntGaugeVec,
    /// `ferry_worker_pool_wait_seconds{connector_type}`: how long a step or
    /// a test waited for its connector's pool (built on first use, its
    /// network re-checked) before it ran.
    pub wait: HistogramVec,
}

impl PoolMetrics {
    /// Creates the families and registers them in `registry` (a conflict
    /// is logged; the families still count, unexported).
    pub fn new(registry: &Registry) -> Self {
        let metrics = PoolMetrics {
            in_use: IntGaugeVec::new(
                Opts::new(
                    "ferry_worker_pool_in_use",
                    "Steps and connection tests running on a connector pool now, by connector type",
                ),
                &["connector_type"],
            )
            .unwrap_or_else(|_| unreachable_metric("ferry_worker_pool_in_use")),
            wait: HistogramVec::new(
                HistogramOpts::new(
                    "ferry_worker_pool_wait_seconds",
                    "Time a step or test waited for its connector's pool (built on first use, network re-checked)",
                )
                .buckets(SHORT_BUCKETS.to_vec()),
                &["connector_type"],
            )
            .unwrap_or_else(|_| unreachable_metric("ferry_worker_pool_wait_seconds")),
        };
        for collector in [
            Box::new(metrics.in_use.clone()) as Box<dyn Collector>,
            Box::new(metrics.wait.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "worker pool metrics not registered");
            }
        }
        for connector_type in registry_types() {
            metrics.in_use.with_label_values(&[connector_type]);
        }
        metrics
    }

    /// A use of a pool of `connector_type` begins after waiting since
    /// `asked`; in use until the guard drops.
    pub fn begin(&self, connector_type: &str, asked: Instant) -> InUse {
        self.wait
            .with_label_values(&[connector_type])
            .observe(asked.elapsed().as_secs_f64());
        let gauge = self.in_use.with_label_values(&[connector_type]);
        gauge.inc();
        InUse(gauge)
    }
}

/// The `connector_type` label of a stored connector type: its declared
/// word, or `other` for one this build does not know (bounded).
pub fn connector_type_label(connector_type: &str) -> &'static str {
    crate::connectors::declared(connector_type).map_or("other", |(decl, _)| decl.type_id.as_str())
}

fn registry_types() -> impl Iterator<Item = &'static str> {
    registry()
        .iter()
        .filter(|decl| decl.has_driver())
        .map(|decl| decl.type_id.as_str())
}

/// A job in flight; [`finish`](JobTimer::finish) records how it ended.
pub struct JobTimer {
    metrics: WorkerMetrics,
    kind: &'static str,
    in_flight: IntGauge,
    started: Instant,
    done: bool,
}

impl JobTimer {
    /// Records the job's outcome (one of [`JOB_OUTCOMES`]) and duration.
    pub fn finish(mut self, outcome: &'static str) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.in_flight.dec();
        self.metrics
            .jobs_finished
            .with_label_values(&[self.kind, outcome])
            .inc();
        self.metrics
            .job_duration
            .with_label_values(&[self.kind])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for JobTimer {
    /// A job whose future was dropped unfinished counts as retried when it
    /// was handed back at shutdown (the queue delivers it again), and as
    /// failed when its handler panicked (the runtime acks it).
    fn drop(&mut self) {
        self.record(if std::thread::panicking() {
            "failed"
        } else {
            "retried"
        });
    }
}

/// A pool in use; the gauge goes down when this drops.
pub struct InUse(IntGauge);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(metrics: &WorkerMetrics, outcome: &str) -> u64 {
        metrics
            .jobs_finished
            .with_label_values(&["execute_project", outcome])
            .get()
    }

    #[test]
    fn a_job_counts_once_as_it_ends_finished_dropped_or_panicking() {
        let registry = Registry::new();
        let metrics = WorkerMetrics::new(&registry, 4);
        let in_flight = || {
            metrics
                .jobs_in_flight
                .with_label_values(&["execute_project"])
                .get()
        };

        let timer = metrics.job(JobKind::ExecuteProject);
        assert_eq!(in_flight(), 1);
        timer.finish("succeeded");
        drop(metrics.job(JobKind::ExecuteProject));
        let panicking = metrics.clone();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _timer = panicking.job(JobKind::ExecuteProject);
            panic!("handler bug");
        }));
        assert!(caught.is_err());

        assert_eq!(in_flight(), 0);
        assert_eq!(
            metrics.jobs_started.with_label_values(&["execute_project"]).get(),
            3
        );
        assert_eq!(finished(&metrics, "succeeded"), 1);
        assert_eq!(finished(&metrics, "retried"), 1, "dropped: handed back");
        assert_eq!(finished(&metrics, "failed"), 1, "a panic");
        let durations = metrics.job_duration.with_label_values(&["execute_project"]);
        assert_eq!(durations.get_sample_count(), 3);
        assert_eq!(metrics.concurrency.get(), 4);
    }

    #[test]
    fn steps_count_rows_and_bytes_only_when_they_succeed_and_labels_stay_bounded() {
        let metrics = WorkerMetrics::new(&Registry::new(), 1);
        let started = Instant::now();
        metrics.step_tried("postgresql", started, Some((1000, 20_000)));
        metrics.step_tried("postgresql", started, None);
        metrics.step_retried("sql_query");
        metrics.step_retried("made up by a stored row");
        assert_eq!(
            metrics.rows_written.with_label_values(&["postgresql"]).get(),
            1000
        );
        assert_eq!(
            metrics.bytes_written.with_label_values(&["postgresql"]).get(),
            20_000
        );
        for outcome in ["succeeded", "failed"] {
            let count = metrics
                .step_duration
                .with_label_values(&["postgresql", outcome])
                .get_sample_count();
            assert_eq!(count, 1, "{outcome}");
        }
        assert_eq!(metrics.step_retries.with_label_values(&["sql_query"]).get(), 1);
        assert_eq!(metrics.step_retries.with_label_values(&["other"]).get(), 1);
        assert_eq!(connector_type_label("postgresql"), "postgresql");
        assert_eq!(connector_type_label("conn_01 not a type"), "other");
    }
}
