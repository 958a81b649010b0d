//! Connector health probes: the leader enqueues a `probe_connector` job for
//! each connector that is `active` (or in `error`, so that it can recover)
//! once per `probe_interval`.
//!
//! Spread: each connector fires at its own offset within the interval, a
//! stable hash of its uuid ([`probe_offset`]), so N connectors' probes are
//! spread evenly over the interval instead of all firing at once, and a
//! connector keeps its phase across leader changes. Time is cut into slots
//! `floor((t - offset) / interval)`; a connector is probed when its slot
//! advances. A new leader (or a connector seen for the first time) waits
//! for the next slot boundary, so a leadership change delays a probe by at
//! most one interval and never doubles it.
//!
//! One at a time: the job id is `probe:<uuid>`, and the queue skips an
//! enqueue while a job of that id is queued or running (until it is
//! acknowledged), so a connector whose probe has not finished is not probed
//! again ([`ProbeConnectorJob::job_id`]). The worker probes through the
//! connector's own pool, so its pool limits hold.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ferry_shared::domain;
use ferry_shared::jobs::ProbeConnectorJob;
use ferry_shared::queue::Queue;
use ferry_shared::store::{ProbeStore, ProbeTarget};
use ferry_shared::{Error, Result};
use prometheus::{IntCounter, Registry};
use tokio_util::sync::CancellationToken;

use crate::leader::LeaderElection;

/// How often each connector is probed, by default.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(300);

/// Connectors read per store query when the list is refreshed.
pub const PROBE_BATCH: i64 = 1000;

/// How long the leader works from one reading of the connector list at
/// most (a new connector is probed from its first slot after that).
pub const TARGETS_REFRESH: Duration = Duration::from_secs(30);

/// `ferry_scheduler_probes_enqueued_total`.
#[derive(Clone)]
pub struct ProbeMetrics {
    /// Probe jobs this process enqueued (an enqueue skipped because the
    /// connector's previous probe was still pending is not counted).
    pub enqueued: IntCounter,
    /// Probe passes that failed (store or queue unavailable).
    pub errors: IntCounter,
}

impl ProbeMetrics {
    /// Creates the families and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = ProbeMetrics {
            enqueued: IntCounter::new(
                "ferry_scheduler_probes_enqueued_total",
                "Connector health probe jobs the scheduler enqueued",
            )?,
            errors: IntCounter::new(
                "ferry_scheduler_probe_errors_total",
                "Probe passes that failed because the store or the queue was unavailable",
            )?,
        };
        registry.register(Box::new(metrics.enqueued.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        Ok(metrics)
    }
}

/// Where within `interval` a connector's probes fall: a stable hash
/// (64-bit FNV-1a) of its uuid modulo the interval, in milliseconds. The
/// same on every scheduler and across restarts.
pub fn probe_offset(connector_uuid: &str, interval: Duration) -> Duration {
    let period = interval_ms(interval);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in connector_uuid.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Duration::from_millis(hash % period)
}

/// The slot a connector is in at `now`: how many of its probe times
/// (`offset + k × interval` since the Unix epoch) have passed.
pub fn probe_slot(connector_uuid: &str, interval: Duration, now: DateTime<Utc>) -> i64 {
    let period = i64::try_from(interval_ms(interval)).unwrap_or(i64::MAX);
    let offset = i64::try_from(probe_offset(connector_uuid, interval).as_millis()).unwrap_or(0);
    (now.timestamp_millis() - offset).div_euclid(period)
}

fn interval_ms(interval: Duration) -> u64 {
    u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The leader's memory of which slot each connector was last probed in.
#[derive(Debug, Default)]
pub struct ProbePlan {
    interval: Duration,
    last_slot: HashMap<String, i64>,
    targets: Vec<ProbeTarget>,
    loaded_at: Option<Instant>,
}

impl ProbePlan {
    /// A plan probing each connector once per `interval`.
    pub fn new(interval: Duration) -> Self {
        ProbePlan {
            interval,
            ..ProbePlan::default()
        }
    }

    /// Of `targets`, those whose slot advanced since the plan last saw them
    /// (each then marked as probed in its current slot). A target seen for
    /// the first time waits for its next slot; targets no longer listed are
    /// forgotten.
    pub fn due(&mut self, targets: &[ProbeTarget], now: DateTime<Utc>) -> Vec<ProbeTarget> {
        let mut due = Vec::new();
        let mut seen = HashMap::with_capacity(targets.len());
        for target in targets {
            let slot = probe_slot(&target.connector_uuid, self.interval, now);
            match self.last_slot.get(&target.connector_uuid) {
                Some(&last) if slot > last => due.push(target.clone()),
                Some(&last) => {
                    seen.insert(target.connector_uuid.clone(), last);
                    continue;
                }
                None => {}
            }
            seen.insert(target.connector_uuid.clone(), slot);
        }
        self.last_slot = seen;
        due
    }

    /// Forgets everything (the process stopped leading).
    pub fn reset(&mut self) {
        self.last_slot.clear();
        self.targets.clear();
        self.loaded_at = None;
    }
}

/// Every connector to probe, read in pages.
pub async fn probe_targets(store: &dyn ProbeStore) -> Result<Vec<ProbeTarget>> {
    let mut targets: Vec<ProbeTarget> = Vec::new();
    loop {
        let after = targets.last().map(|t| t.connector_uuid.clone());
        let page = store.connectors_to_probe(after.as_deref(), PROBE_BATCH).await?;
        let full = i64::try_from(page.len()).unwrap_or(i64::MAX) >= PROBE_BATCH;
        targets.extend(page);
        if !full {
            return Ok(targets);
        }
    }
}

/// One pass: refreshes the connector list when it is older than
/// `min(interval, TARGETS_REFRESH)`, and enqueues a probe for each connector
/// whose slot advanced. Returns how many probe jobs were new.
pub async fn probe_once(
    store: &dyn ProbeStore,
    queue: &dyn Queue,
    plan: &mut ProbePlan,
    now: DateTime<Utc>,
) -> Result<u64> {
    let refresh = plan.interval.min(TARGETS_REFRESH);
    if plan.loaded_at.is_none_or(|at| at.elapsed() >= refresh) {
        plan.targets = probe_targets(store).await?;
        plan.loaded_at = Some(Instant::now());
    }
    let targets = std::mem::take(&mut plan.targets);
    let due = plan.due(&targets, now);
    plan.targets = targets;
    if due.is_empty() {
        return Ok(0);
    }
    let jobs: Vec<_> = due
        .into_iter()
        .map(|target| {
            ProbeConnectorJob {
                connector_uuid: target.connector_uuid,
                org_id: target.org_id,
            }
            .to_job()
        })
        .collect();
    queue.enqueue_many(&jobs).await
}

/// How often the leader looks for due probes: a twentieth of the interval,
/// between 10 ms and 1 s.
pub fn pass_period(interval: Duration) -> Duration {
    (interval / 20).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Parses `FERRY_PROBE_INTERVAL`: seconds (`300`), or a number with a unit
/// (`500ms`, `30s`, `5m`, `1h`); `0` turns probes off.
pub fn parse_interval(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 300, 30s, 5m, 1h)"))?;
    let duration = match unit.trim() {
        "" | "s" => Duration::from_secs(value),
        "ms" => Duration::from_millis(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3600)),
        other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
    };
    if duration > Duration::from_secs(7 * 86_400) {
        return Err("the probe interval is at most a week".into());
    }
    Ok(duration)
}

/// Runs a pass every [`pass_period`] while this process leads, until
/// `stop`. A zero interval turns probes off.
pub(crate) async fn run(
    store: &dyn ProbeStore,
    queue: &dyn Queue,
    leader: &LeaderElection,
    metrics: &ProbeMetrics,
    interval: Duration,
    stop: CancellationToken,
) {
    if interval.is_zero() {
        tracing::info!("connector probes are off (FERRY_PROBE_INTERVAL=0)");
        return;
    }
    let mut plan = ProbePlan::new(interval);
    let mut ticks = leader.ticks(pass_period(interval), &stop);
    while let Some(leading) = ticks.next().await {
        if !leading {
            plan.reset();
            continue;
        }
        let Some(probed) = leader
            .while_leading(probe_once(store, queue, &mut plan, domain::now()))
            .await
        else {
            plan.reset();
            continue;
        };
        match probed {
            Ok(enqueued) => metrics.enqueued.inc_by(enqueued),
            Err(error) => {
                metrics.errors.inc();
                // The next pass reads the list again.
                plan.loaded_at = None;
                tracing::warn!(%error, "probe pass failed");
            }
        }
    }
}

/// Checks a probe interval given to [`crate::run_with`].
pub(crate) fn check_interval(interval: Duration) -> Result<()> {
    if interval > Duration::from_secs(7 * 86_400) {
        return Err(Error::validation(
            "probe_interval",
            "the probe interval is at most a week",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(n: usize) -> String {
        format!("conn_{n:026}")
    }

    fn target(n: usize) -> ProbeTarget {
        ProbeTarget {
            connector_uuid: uuid(n),
            org_id: "org_test".into(),
        }
    }

    #[test]
    fn a_connectors_offset_is_stable_and_within_the_interval() {
        let interval = Duration::from_secs(300);
        for n in 0..1000 {
            let offset = probe_offset(&uuid(n), interval);
            assert!(offset < interval);
            assert_eq!(offset, probe_offset(&uuid(n), interval));
        }
    }

    #[test]
    fn the_offsets_of_many_connectors_spread_over_the_whole_interval() {
        // 1,000 connectors over 5 minutes, in 10 buckets of 30 s: each
        // bucket gets about 100; none is empty or holds more than twice that.
        let interval = Duration::from_secs(300);
        let mut buckets = [0usize; 10];
        for n in 0..1000 {
            let offset = probe_offset(&uuid(n), interval);
            buckets[usize::try_from(offset.as_secs() / 30).expect("bucket")] += 1;
        }
        for (i, count) in buckets.iter().enumerate() {
            assert!(
                (50..=200).contains(count),
                "bucket {i} holds {count}: {buckets:?}"
            );
        }
        // ULID-like ids that share a long prefix spread too.
        let mut distinct = std::collections::HashSet::new();
        for n in 0..100 {
            distinct
                .insert(probe_offset(&format!("conn_01JABCDEFGHJKMNPQRSTVW{n:04}"), interval).as_secs() / 30);
        }
        assert!(
            distinct.len() >= 8,
            "similar ids land in {} of 10 buckets",
            distinct.len()
        );
    }

    #[test]
    fn each_connector_is_due_once_per_interval_at_its_own_time_and_never_at_first_sight() {
        let interval = Duration::from_secs(60);
        let targets: Vec<_> = (0..200).map(target).collect();
        let mut plan = ProbePlan::new(interval);
        let start = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        assert!(
            plan.due(&targets, start).is_empty(),
            "first sight waits for the slot boundary"
        );
        // Walk three intervals in one-second passes.
        let mut fired: HashMap<String, Vec<i64>> = HashMap::new();
        let mut per_second = Vec::new();
        for second in 1..=180 {
            let now = start + chrono::Duration::seconds(second);
            let due = plan.due(&targets, now);
            per_second.push(due.len());
            for t in due {
                fired.entry(t.connector_uuid).or_default().push(second);
            }
        }
        for t in &targets {
            let times = &fired[&t.connector_uuid];
            assert_eq!(times.len(), 3, "{} fired at {times:?}", t.connector_uuid);
            assert!(times.windows(2).all(|w| w[1] - w[0] == 60), "{times:?}");
        }
        // 200 connectors over 60 s: no second carries more than a tenth.
        let busiest = per_second.iter().max().copied().unwrap_or(0);
        assert!(busiest <= 20, "the busiest second fired {busiest} probes");
    }

    #[test]
    fn a_connector_no_longer_listed_is_forgotten_and_waits_again_when_it_returns() {
        let interval = Duration::from_secs(10);
        let mut plan = ProbePlan::new(interval);
        let start = DateTime::from_timestamp(1_800_000_000, 0).expect("time");
        let one = vec![target(1)];
        plan.due(&one, start);
        plan.due(&[], start + chrono::Duration::seconds(5));
        for second in 6..=15 {
            assert!(plan.due(&one, start + chrono::Duration::seconds(second)).len() <= 1);
        }
        let fired: usize = (16..=35)
            .map(|second| plan.due(&one, start + chrono::Duration::seconds(second)).len())
            .sum();
        assert_eq!(fired, 2);
    }

    #[test]
    fn probe_intervals_parse_with_or_without_a_unit() {
        assert_eq!(parse_interval("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("0"), Ok(Duration::ZERO));
        assert!(parse_interval("five").is_err());
        assert!(parse_interval("5d").is_err());
        assert!(parse_interval("-1").is_err());
        assert!(parse_interval("10000h").is_err());
    }
}
