//! The query engine behind `transform` steps: one memory pool and one spill
//! directory per worker process, and a fresh DataFusion session per step
//! that sees only the worker's result store.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use datafusion::execution::disk_manager::{DiskManager, DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use ferry_shared::domain::ErrorKind;
use ferry_shared::objects::ObjectTarget;
use url::Url;

use crate::extract::ExtractError;

/// The URL under which a session sees the worker's result store: object
/// `p` of the store is `ferry://results/p`. A scheme of its own (rather
/// than the store's `file://` or `s3://bucket`) lets a `file://` store,
/// which is rooted at its directory, be registered as it is, and leaves no
/// other store reachable from a query.
pub(crate) const RESULTS_URL: &str = "ferry://results";

/// The environment variable of [`TransformArgs::transform_memory`], named
/// in the error a step gets when its transform runs out of memory.
pub const MEMORY_ENV: &str = "FERRY_TRANSFORM_MEMORY";
/// The environment variable of [`TransformArgs::transform_spill_limit`].
pub const SPILL_LIMIT_ENV: &str = "FERRY_TRANSFORM_SPILL_LIMIT";

/// Rows per batch inside queries (DataFusion's default). Merging spilled
/// sort runs holds one batch per run, so wide rows in big batches make
/// merges the largest consumer of a small pool.
const BATCH_ROWS: usize = 8192;

/// Spill files one merge pass of a sort reads at once; more runs are merged
/// in several passes. Bounds a merge's memory to this many batches.
const MERGE_FAN_IN: usize = 8;

/// How transforms use memory and disk. [`TransformOptions::default`] is
/// what a worker uses when its `--transform-*` flags are not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformOptions {
    /// Bytes that the operators of all running transforms may hold
    /// together (sorts, joins, aggregations, windows); what does not fit is
    /// spilled to disk where the operator can spill. Default 1 GiB.
    pub memory_limit: usize,
    /// Directory for spill files; `None`: the OS temp dir.
    pub spill_dir: Option<PathBuf>,
    /// Most bytes of spill files at once. Default 100 GiB.
    pub spill_limit: u64,
    /// Plan equi-joins as hash joins (fast; the build side must fit in
    /// memory) and, when memory runs out in a plan with one, run the query
    /// again with sort-merge joins (which sort both sides, spilling). False
    /// always plans sort-merge joins. Default true. See `design.md` for
    /// the measurements.
    pub hash_join: bool,
    /// Partitions a query runs in. Default: the machine's cores.
    pub partitions: usize,
}

impl Default for TransformOptions {
    fn default() -> Self {
        Self {
            memory_limit: 1 << 30,
            spill_dir: None,
            spill_limit: 100 << 30,
            hash_join: true,
            partitions: std::thread::available_parallelism().map_or(2, NonZeroUsize::get),
        }
    }
}

/// The worker's flags for transform steps.
#[derive(Debug, Clone, clap::Args)]
pub struct TransformArgs {
    /// Memory that the transform steps of a worker process may use
    /// together (sorts, joins, aggregations, windows): what does not fit
    /// spills to disk. Bytes or a size such as 512MiB or 2GiB.
    #[arg(long, env = MEMORY_ENV, default_value = "1GiB", value_parser = parse_size)]
    pub transform_memory: u64,

    /// Directory transforms spill to (a `datafusion-*` directory is made
    /// inside it). Default: the system's temporary directory.
    #[arg(long, env = "FERRY_TRANSFORM_SPILL_DIR")]
    pub transform_spill_dir: Option<PathBuf>,

    /// Most disk that spill files may take at once, e.g. 100GiB.
    #[arg(long, env = SPILL_LIMIT_ENV, default_value = "100GiB", value_parser = parse_size)]
    pub transform_spill_limit: u64,

    /// Plan equi-joins as hash joins first, running a query again with
    /// sort-merge joins when memory runs out; false always plans sort-merge
    /// joins.
    #[arg(long, env = "FERRY_TRANSFORM_HASH_JOIN", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub transform_hash_join: bool,
}

impl TransformArgs {
    /// The options these flags give, on this machine's cores.
    pub fn options(&self) -> TransformOptions {
        TransformOptions {
            memory_limit: usize::try_from(self.transform_memory).unwrap_or(usize::MAX),
            spill_dir: self.transform_spill_dir.clone(),
            spill_limit: self.transform_spill_limit,
            hash_join: self.transform_hash_join,
            ..TransformOptions::default()
        }
    }
}

/// `1073741824`, `512MiB`, `512M`, `2GiB`, `2G`, `64KiB` (units are
/// binary; `B` and `KB`/`MB`/`GB`/`TB` are accepted as the same).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 512MiB, 2GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{text:?} is not a size (e.g. 512MiB, 2GiB)")),
    };
    number
        .checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// `bytes` for people: `1.0 GiB`, `512.0 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A worker's engine, started by the first transform step that needs it:
/// a worker that never runs one holds no pool or threads for it.
#[derive(Debug)]
pub struct LazyEngine {
    options: TransformOptions,
    engine: OnceLock<Result<Engine, ExtractError>>,
}

impl LazyEngine {
    pub fn new(options: TransformOptions) -> LazyEngine {
        LazyEngine {
            options,
            engine: OnceLock::new(),
        }
    }

    /// The engine, started on first use; a spill directory that cannot be
    /// used stays the error of every transform.
    pub fn get(&self) -> Result<&Engine, ExtractError> {
        self.engine
            .get_or_init(|| {
                tracing::info!(
                    memory_limit = self.options.memory_limit,
                    spill_dir = ?self.options.spill_dir,
                    hash_join = self.options.hash_join,
                    "transform engine ready"
                );
                Engine::new(self.options.clone())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// A memory pool, a spill directory and the threads queries run on,
/// shared by every transform that runs on it; each transform gets its own
/// session over them.
///
/// Queries run on a runtime of their own (`ferry-transform-*` threads, one
/// per partition): DataFusion's operators can keep a thread busy for long
/// stretches without yielding, which on the worker's runtime would hold up
/// lease heartbeats, cancel listeners and other jobs' I/O.
pub struct Engine {
    options: TransformOptions,
    pool: Arc<dyn MemoryPool>,
    disk: Arc<DiskManager>,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    reruns: AtomicU64,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which async code may not do; its
        // threads finish in the background instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with its own pool of `options.memory_limit` bytes. A spill
    /// directory that cannot be created is an `invalid_config` error.
    pub fn new(options: TransformOptions) -> Result<Engine, ExtractError> {
        // FairSpillPool: operators that can spill share the memory left by
        // those that cannot, each up to an equal part; the tracking wrapper
        // names the largest consumers when an allocation is refused.
        let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(options.memory_limit),
            NonZeroUsize::MIN.saturating_add(2),
        ));
        let mode = match &options.spill_dir {
            Some(dir) => DiskManagerMode::Directories(vec![dir.clone()]),
            None => DiskManagerMode::OsTmpDirectory,
        };
        let disk = DiskManagerBuilder::default()
            .with_mode(mode)
            .with_max_temp_directory_size(options.spill_limit)
            .with_max_spill_merge_fan_in(MERGE_FAN_IN)
            .build()
            .map_err(|e| {
                ExtractError::new(
                    ErrorKind::InvalidConfig,
                    format!("the transform spill directory cannot be used: {e}"),
                )
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.partitions.max(1))
            .thread_name("ferry-transform")
            .enable_all()
            .build()
            .map_err(|e| ExtractError::internal_from("the transform engine's threads could not start", e))?;
        Ok(Engine {
            options,
            pool,
            disk: Arc::new(disk),
            runtime: Some(runtime),
            reruns: AtomicU64::new(0),
        })
    }

    /// Runs `task` on the engine's threads.
    pub(crate) fn spawn<F>(&self, task: F) -> Option<tokio::task::JoinHandle<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.as_ref().map(|runtime| runtime.spawn(task))
    }

    pub fn options(&self) -> &TransformOptions {
        &self.options
    }

    /// Bytes the running transforms hold now (0 when none runs).
    pub fn memory_reserved(&self) -> usize {
        self.pool.reserved()
    }

    /// Transforms whose hash joins ran out of memory and that ran again
    /// with sort-merge joins, since the engine started.
    pub fn sort_merge_reruns(&self) -> u64 {
        self.reruns.load(Ordering::Relaxed)
    }

    pub(crate) fn count_rerun(&self) {
        self.reruns.fetch_add(1, Ordering::Relaxed);
    }

    /// A session over `objects` (as [`RESULTS_URL`]) and this engine's
    /// memory and disk; `hash_join` as [`TransformOptions::hash_join`].
    pub(crate) fn session(
        &self,
        objects: &ObjectTarget,
        hash_join: bool,
    ) -> Result<SessionContext, ExtractError> {
        let registry = DefaultObjectStoreRegistry::new();
        // Only the result store is reachable: the local file system that
        // the default registry carries is removed.
        let results = Url::parse(RESULTS_URL).map_err(|e| ExtractError::internal_from("results URL", e))?;
        let local = Url::parse("file:///").map_err(|e| ExtractError::internal_from("file URL", e))?;
        let _ = registry.deregister_store(&local);
        registry.register_store(&results, objects.store.clone());
        let runtime = RuntimeEnvBuilder {
            disk_manager: Some(self.disk.clone()),
            memory_pool: Some(self.pool.clone()),
            ..RuntimeEnvBuilder::new()
        }
        .with_object_store_registry(Arc::new(registry))
        .build_arc()
        .map_err(|e| ExtractError::internal_from("the transform engine could not start", e))?;
        let mut config = SessionConfig::new()
            .with_batch_size(BATCH_ROWS)
            .with_target_partitions(self.options.partitions.max(1))
            .with_information_schema(false);
        let settings = config.options_mut();
        settings.optimizer.prefer_hash_join = hash_join;
        // What each sort keeps back for merging its spill files (default
        // 10 MiB per sort and partition): a smaller part of a small pool.
        settings.execution.sort_spill_reservation_bytes =
            (self.options.memory_limit / 32).min(settings.execution.sort_spill_reservation_bytes);
        // Strings and binaries as the other steps write them (Utf8, Binary),
        // not as views.
        settings.execution.parquet.schema_force_view_types = false;
        settings.sql_parser.map_string_types_to_utf8view = false;
        Ok(SessionContext::new_with_config_rt(config, runtime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
        assert_eq!(parse_size("64KB"), Ok(64 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(human(1 << 30), "1.0 GiB");
        assert_eq!(human(1536 << 20), "1.5 GiB");
        assert_eq!(human(12), "12 B");
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        transform: TransformArgs,
    }

    #[test]
    fn options_come_from_the_flags_with_defaults() {
        use clap::Parser;
        let none = Flags::try_parse_from(["worker"])
            .expect("defaults")
            .transform
            .options();
        assert_eq!(none, TransformOptions::default());
        assert_eq!(none.memory_limit, 1 << 30);
        assert!(none.hash_join);
        let set = Flags::try_parse_from([
            "worker",
            "--transform-memory",
            "256MiB",
            "--transform-spill-dir",
            "/var/spill",
            "--transform-spill-limit",
            "10GiB",
            "--transform-hash-join",
            "false",
        ])
        .expect("flags")
        .transform
        .options();
        assert_eq!(set.memory_limit, 256 << 20);
        assert_eq!(set.spill_dir, Some(PathBuf::from("/var/spill")));
        assert_eq!(set.spill_limit, 10 << 30);
        assert!(!set.hash_join);
        let bad = Flags::try_parse_from(["worker", "--transform-memory", "much"])
            .err()
            .expect("refused");
        assert!(bad.to_string().contains("--transform-memory"), "{bad}");
    }
}
