//! The pool registry: one driver pool per connector (uuid + config
//! version), created on first use, replaced when a newer config version
//! shows up, closed on eviction.
//!
//! A pool is created once even when several tasks ask for it at the same
//! time (a per-slot `OnceCell`; a failed creation is not cached). A request
//! carrying an *older* version than the registered one (a job queued before
//! the connector changed) gets a one-off pool that is never registered, so
//! it cannot replace the current one. Every use re-resolves the connector's
//! host and re-applies the network policy; a pool pinned to an address the
//! host no longer resolves to is rebuilt, and a pool whose host now resolves
//! to a forbidden address is evicted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::Utc;
use ferry_shared::connectors::{self as declarations, DriverFamily, TypeId, find};
use ferry_shared::domain::TestOutcome;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};

pub use crate::connectors::DriverError;
use crate::connectors::mongodb::MongoHandle;
use crate::connectors::redis::RedisHandle;
use crate::connectors::rest::RestHandle;
use crate::connectors::{
    self, ConnectorPool, ConnectorSpec, Driver, ErrorType, NetworkPolicy, StepRequest, TestDetails,
};
use crate::extract::{ExtractError, Output, ReadPath, SqlSource};

/// The pools of every connector this worker has used. Cheap to clone.
#[derive(Clone)]
pub struct PoolRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    policy: NetworkPolicy,
    slots: Mutex<HashMap<String, Slot>>,
    metrics: Metrics,
    usage: crate::metrics::PoolMetrics,
    /// What OAuth families ask for a new access token after a 401.
    refresher: std::sync::OnceLock<ferry_shared::oauth_refresh::Refresher>,
}

/// The registered pool of one connector, by config version.
struct Slot {
    version: i64,
    cell: Arc<tokio::sync::OnceCell<Arc<Pooled>>>,
}

/// A built pool; the gauge counts it while it lives.
struct Pooled {
    handle: Box<dyn ConnectorPool>,
    type_id: TypeId,
    _gauge: GaugeGuard,
}

/// A pool to use, and whether it must be closed after this use.
struct Checkout {
    pooled: Arc<Pooled>,
    /// The addresses a new connection may use (network drivers only).
    addrs: Vec<SocketAddr>,
    one_off: bool,
}

impl PoolRegistry {
    /// A registry applying `policy`, with its metrics registered in
    /// `metrics` (`ferry_worker_pools{type}`,
    /// `ferry_worker_connection_tests_total{type,result}`; `result` is
    /// `success` or the error type). A registration conflict is logged and
    /// the metrics still count, unexported.
    pub fn new(policy: NetworkPolicy, metrics: &prometheus::Registry) -> Self {
        let inner = Arc::new(Inner {
            policy,
            slots: Mutex::new(HashMap::new()),
            metrics: Metrics::new(metrics),
            usage: crate::metrics::PoolMetrics::new(metrics),
            refresher: std::sync::OnceLock::new(),
        });
        if let Err(error) = metrics.register(Box::new(Connections::new(Arc::downgrade(&inner)))) {
            tracing::warn!(%error, "worker pool connection metrics not registered");
        }
        PoolRegistry { inner }
    }

    /// The refresher every pool built from now on gets
    /// ([`ConnectorPool::attach_refresher`]); set once, later calls are
    /// ignored.
    pub fn set_refresher(&self, refresher: ferry_shared::oauth_refresh::Refresher) {
        let _ = self.inner.refresher.set(refresher);
    }

    pub fn policy(&self) -> &NetworkPolicy {
        &self.inner.policy
    }

    /// Runs a connection test through the connector's pool (created on first
    /// use). Bounded by the connector's `connection_timeout_seconds`
    /// (`timeout_seconds` for REST APIs); never panics; the failure message
    /// never contains the connector's secrets.
    pub async fn test(&self, spec: &ConnectorSpec) -> TestOutcome {
        let tested_at = Utc::now();
        let started = Instant::now();
        let limit = connectors::test_timeout(spec);
        let registry = self.clone();
        let owned = spec.clone();
        // A task of its own: a panicking driver becomes an `unknown` failure.
        let task = tokio::spawn(async move { tokio::time::timeout(limit, registry.run_test(&owned)).await });
        let result = match task.await {
            Ok(Ok(result)) => result,
            Ok(Err(_elapsed)) => Err(DriverError::timeout(limit)),
            Err(_) => Err(DriverError::unknown("the connection test failed unexpectedly")),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let type_label = type_label(&spec.connector_type);
        match result {
            Ok(details) => {
                self.inner
                    .metrics
                    .tests
                    .with_label_values(&[type_label, "success"])
                    .inc();
                TestOutcome {
                    connector_uuid: spec.uuid.clone(),
                    tested_at,
                    latency_ms,
                    version: details.version,
                    server_time: details.server_time,
                    schemas_available: details.schemas,
                    error: None,
                }
            }
            Err(error) => {
                let error = error.redacted(&spec.secrets());
                self.inner
                    .metrics
                    .tests
                    .with_label_values(&[type_label, error.kind().as_str()])
                    .inc();
                tracing::info!(
                    connector_uuid = %spec.uuid,
                    connector_type = type_label,
                    error_type = error.kind().as_str(),
                    error = %error.message(),
                    "connection test failed"
                );
                TestOutcome {
                    connector_uuid: spec.uuid.clone(),
                    tested_at,
                    latency_ms,
                    version: None,
                    server_time: None,
                    schemas_available: None,
                    error: Some(error.failure),
                }
            }
        }
    }

    async fn run_test(&self, spec: &ConnectorSpec) -> Result<TestDetails, DriverError> {
        let asked = Instant::now();
        let checkout = self.checkout(spec).await?;
        let _in_use = self.inner.usage.begin(type_label(&spec.connector_type), asked);
        let result = checkout
            .pooled
            .handle
            .test(&checkout.addrs, &self.inner.policy)
            .await;
        if checkout.one_off {
            checkout.pooled.close();
        } else if result
            .as_ref()
            .is_err_and(|error| error.kind() == ErrorType::BlockedAddress)
        {
            self.discard(&spec.uuid, &checkout.pooled);
        }
        result
    }

    /// Drops every pool of this connector (all versions). Idle connections
    /// close now; connections in use close when they are returned.
    pub fn evict(&self, connector_uuid: &str) {
        let removed = self.slots().remove(connector_uuid);
        if let Some(slot) = removed {
            slot.close();
        }
    }

    /// How many connectors have a pool registered.
    pub fn pool_count(&self) -> usize {
        self.slots()
            .values()
            .filter(|slot| slot.cell.initialized())
            .count()
    }

    /// The PostgreSQL/Redshift pool of `spec` (created on first use).
    pub async fn postgres(&self, spec: &ConnectorSpec) -> Result<sqlx::PgPool, DriverError> {
        expect_family(spec, DriverFamily::Postgres, "PostgreSQL")?;
        match self.sql_source(spec).await? {
            Some(SqlSource::Postgres(pool)) => Ok(pool),
            _ => Err(wrong_family(spec, "PostgreSQL")),
        }
    }

    /// The MySQL/MariaDB pool of `spec` (created on first use).
    pub async fn mysql(&self, spec: &ConnectorSpec) -> Result<sqlx::MySqlPool, DriverError> {
        expect_family(spec, DriverFamily::Mysql, "MySQL")?;
        match self.sql_source(spec).await? {
            Some(SqlSource::MySql(pool)) => Ok(pool),
            _ => Err(wrong_family(spec, "MySQL")),
        }
    }

    /// The read-only SQLite pool of `spec` (created on first use).
    pub async fn sqlite(&self, spec: &ConnectorSpec) -> Result<sqlx::SqlitePool, DriverError> {
        expect_family(spec, DriverFamily::Sqlite, "SQLite")?;
        match self.sql_source(spec).await? {
            Some(SqlSource::Sqlite(pool)) => Ok(pool),
            _ => Err(wrong_family(spec, "SQLite")),
        }
    }

    /// The source `sql_query` steps on `spec` read from (its pool, created
    /// on first use); `None` when its family runs no SQL.
    pub async fn sql_source(&self, spec: &ConnectorSpec) -> Result<Option<SqlSource>, DriverError> {
        Ok(self.checkout_bounded(spec).await?.pooled.handle.sql_source())
    }

    /// The Redis pool of `spec` (created on first use); connections come
    /// authenticated and on the configured database.
    pub async fn redis(&self, spec: &ConnectorSpec) -> Result<deadpool_redis::Pool, DriverError> {
        expect_family(spec, DriverFamily::Redis, "Redis")?;
        let checkout = self.checkout_bounded(spec).await?;
        let handle: &RedisHandle = downcast(&checkout, spec, "Redis")?;
        Ok(handle.pool.clone())
    }

    /// The MongoDB client of `spec` (created on first use) and the
    /// connector's database name.
    pub async fn mongodb(&self, spec: &ConnectorSpec) -> Result<(::mongodb::Client, String), DriverError> {
        expect_family(spec, DriverFamily::Mongodb, "MongoDB")?;
        let checkout = self.checkout_bounded(spec).await?;
        let handle: &MongoHandle = downcast(&checkout, spec, "MongoDB")?;
        Ok((handle.client.clone(), handle.database.clone()))
    }

    /// The HTTP client of a REST connector (its extra headers applied; the
    /// auth header is added per request by the driver) and its base URL.
    pub async fn rest(&self, spec: &ConnectorSpec) -> Result<(reqwest::Client, url::Url), DriverError> {
        expect_family(spec, DriverFamily::Rest, "REST API")?;
        let checkout = self.checkout_bounded(spec).await?;
        let handle: &RestHandle = downcast(&checkout, spec, "REST API")?;
        Ok((handle.client.clone(), handle.base_url.clone()))
    }

    /// Runs `step` on `spec`'s pool (created on first use) through its
    /// family's runner, writing the result to `out`.
    pub(crate) async fn run_step(
        &self,
        spec: &ConnectorSpec,
        step: &StepRequest<'_>,
        out: &mut Output<'_>,
    ) -> Result<ReadPath, ExtractError> {
        let asked = Instant::now();
        let checkout = self.checkout_bounded(spec).await?;
        let _in_use = self.inner.usage.begin(type_label(&spec.connector_type), asked);
        checkout.pooled.handle.run(step, out).await
    }

    async fn checkout_bounded(&self, spec: &ConnectorSpec) -> Result<Checkout, DriverError> {
        let limit = connectors::test_timeout(spec);
        tokio::time::timeout(limit, self.checkout(spec))
            .await
            .map_err(|_| DriverError::timeout(limit))?
    }

    /// The pool for `spec`, built if needed, with the network re-checked.
    async fn checkout(&self, spec: &ConnectorSpec) -> Result<Checkout, DriverError> {
        // Checked once, before any pool: a type with a driver, and only the
        // fields its declaration has.
        let (decl, driver) = spec.driver()?;
        spec.check_fields(decl)?;
        // Two rounds: the second one follows a host that moved to a new address.
        for _ in 0..2 {
            let Some(cell) = self.slot_for(spec) else {
                let pooled = Arc::new(self.build(spec, decl.type_id, driver).await?);
                let addrs = self.recheck(spec, &pooled).await?.unwrap_or_default();
                return Ok(Checkout {
                    pooled,
                    addrs,
                    one_off: true,
                });
            };
            let pooled = cell
                .get_or_try_init(|| async { self.build(spec, decl.type_id, driver).await.map(Arc::new) })
                .await?
                .clone();
            match self.recheck(spec, &pooled).await? {
                Some(addrs) => {
                    return Ok(Checkout {
                        pooled,
                        addrs,
                        one_off: false,
                    });
                }
                None => self.discard(&spec.uuid, &pooled),
            }
        }
        Err(DriverError::unknown(
            "the connector's host keeps changing address",
        ))
    }

    /// Re-applies the network policy; `Ok(None)` asks for a rebuild.
    async fn recheck(
        &self,
        spec: &ConnectorSpec,
        pooled: &Arc<Pooled>,
    ) -> Result<Option<Vec<SocketAddr>>, DriverError> {
        let result = pooled.handle.recheck(&self.inner.policy).await;
        if result
            .as_ref()
            .is_err_and(|error| error.kind() == ErrorType::BlockedAddress)
        {
            self.discard(&spec.uuid, pooled);
        }
        result
    }

    /// The cell of the registered pool for this version, registering a new
    /// slot (and closing the older version's pool) when the version is
    /// newer; `None` when the spec's version is older than the registered
    /// one.
    fn slot_for(&self, spec: &ConnectorSpec) -> Option<Arc<tokio::sync::OnceCell<Arc<Pooled>>>> {
        let mut slots = self.slots();
        match slots.get(&spec.uuid) {
            Some(slot) if slot.version == spec.version => return Some(slot.cell.clone()),
            Some(slot) if slot.version > spec.version => return None,
            _ => {}
        }
        let cell = Arc::new(tokio::sync::OnceCell::new());
        let replaced = slots.insert(
            spec.uuid.clone(),
            Slot {
                version: spec.version,
                cell: cell.clone(),
            },
        );
        drop(slots);
        if let Some(old) = replaced {
            old.close();
        }
        Some(cell)
    }

    /// Unregisters and closes `pooled` if it is still the registered pool.
    fn discard(&self, uuid: &str, pooled: &Arc<Pooled>) {
        let mut slots = self.slots();
        let registered = slots
            .get(uuid)
            .and_then(|slot| slot.cell.get())
            .is_some_and(|current| Arc::ptr_eq(current, pooled));
        if registered {
            slots.remove(uuid);
        }
        drop(slots);
        pooled.close();
    }

    async fn build(
        &self,
        spec: &ConnectorSpec,
        type_id: TypeId,
        driver: &dyn Driver,
    ) -> Result<Pooled, DriverError> {
        let handle = driver.open(spec, &self.inner.policy).await?;
        if let Some(refresher) = self.inner.refresher.get() {
            handle.attach_refresher(refresher);
        }
        tracing::debug!(connector_uuid = %spec.uuid, version = spec.version, connector_type = type_id.as_str(), "pool created");
        Ok(Pooled {
            handle,
            type_id,
            _gauge: GaugeGuard::new(self.inner.metrics.pools.with_label_values(&[type_id.as_str()])),
        })
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every critical section is a single map operation).
        self.inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Slot {
    fn close(self) {
        if let Some(pooled) = self.cell.get() {
            pooled.close();
        }
    }
}

impl Pooled {
    fn close(&self) {
        self.handle.close();
    }

    /// The pool's open connections and how many of them are idle, for the
    /// families whose driver pool says (SQL and Redis); None for the
    /// others (MongoDB's driver and HTTP clients keep their own).
    fn connections(&self) -> Option<(u64, u64)> {
        let counts = |size: u32, idle: usize| (u64::from(size), u64::try_from(idle).unwrap_or(u64::MAX));
        match self.handle.sql_source() {
            Some(SqlSource::Postgres(pool)) => Some(counts(pool.size(), pool.num_idle())),
            Some(SqlSource::MySql(pool)) => Some(counts(pool.size(), pool.num_idle())),
            Some(SqlSource::Sqlite(pool)) => Some(counts(pool.size(), pool.num_idle())),
            None => {
                let redis = self.handle.as_any().downcast_ref::<RedisHandle>()?;
                let status = redis.pool.status();
                Some((
                    u64::try_from(status.size).unwrap_or(u64::MAX),
                    u64::try_from(status.available).unwrap_or(u64::MAX),
                ))
            }
        }
    }
}

/// `ferry_worker_pool_connections{connector_type, state}`: the connections
/// of this worker's pools, `idle` or `in_use`, summed by connector type and
/// read from the pools when scraped.
struct Connections {
    inner: std::sync::Weak<Inner>,
    desc: prometheus::core::Desc,
}

impl Connections {
    const NAME: &str = "ferry_worker_pool_connections";
    const HELP: &str = "Open connections of this worker's connector pools (SQL and Redis families), \
                        by connector type and state (idle, in_use)";

    fn new(inner: std::sync::Weak<Inner>) -> Self {
        let desc = prometheus::core::Desc::new(
            Self::NAME.into(),
            Self::HELP.into(),
            vec!["connector_type".into(), "state".into()],
            HashMap::new(),
        )
        .expect("static metric definition");
        Connections { inner, desc }
    }
}

impl prometheus::core::Collector for Connections {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Some(inner) = self.inner.upgrade() else {
            return Vec::new();
        };
        let pools: Vec<Arc<Pooled>> = inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter_map(|slot| slot.cell.get().cloned())
            .collect();
        let gauge = IntGaugeVec::new(Opts::new(Self::NAME, Self::HELP), &["connector_type", "state"])
            .expect("static metric definition");
        for pooled in pools {
            if let Some((open, idle)) = pooled.connections() {
                let label = pooled.type_id.as_str();
                let add = |state: &str, n: u64| {
                    gauge
                        .with_label_values(&[label, state])
                        .add(i64::try_from(n).unwrap_or(i64::MAX));
                };
                add("idle", idle.min(open));
                add("in_use", open.saturating_sub(idle));
            }
        }
        prometheus::core::Collector::collect(&gauge)
    }
}

/// The pool of `checkout` as the family's own handle type.
fn downcast<'a, T: 'static>(
    checkout: &'a Checkout,
    spec: &ConnectorSpec,
    family: &str,
) -> Result<&'a T, DriverError> {
    checkout
        .pooled
        .handle
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| wrong_family(spec, family))
}

fn expect_family(spec: &ConnectorSpec, expected: DriverFamily, family: &str) -> Result<(), DriverError> {
    match find(&spec.connector_type).and_then(|decl| decl.driver) {
        Some(driver) if driver == expected => Ok(()),
        _ => Err(wrong_family(spec, family)),
    }
}

fn wrong_family(spec: &ConnectorSpec, family: &str) -> DriverError {
    DriverError::invalid_config(format!(
        "connector type {:?} is not a {family} connector",
        spec.connector_type
    ))
}

/// The `type` label: a known connector type or `other` (bounded).
fn type_label(connector_type: &str) -> &'static str {
    connectors::declared(connector_type).map_or("other", |(decl, _)| decl.type_id.as_str())
}

struct Metrics {
    pools: IntGaugeVec,
    tests: IntCounterVec,
}

impl Metrics {
    fn new(registry: &prometheus::Registry) -> Self {
        let pools = IntGaugeVec::new(
            Opts::new(
                "ferry_worker_pools",
                "Connection pools this worker holds, by connector type",
            ),
            &["type"],
        )
        .expect("static metric definition");
        let tests = IntCounterVec::new(
            Opts::new(
                "ferry_worker_connection_tests_total",
                "Connection tests run, by connector type and result (success or the error type)",
            ),
            &["type", "result"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(pools.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tests.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::warn!(%error, "worker pool metrics not registered");
            }
        }
        // Every series of the bounded label sets exists from the start, at zero.
        for decl in declarations::registry().iter().filter(|decl| decl.has_driver()) {
            pools.with_label_values(&[decl.type_id.as_str()]);
            tests.with_label_values(&[decl.type_id.as_str(), "success"]);
        }
        Metrics { pools, tests }
    }
}

/// Counts a pool in the gauge for as long as it lives.
struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
