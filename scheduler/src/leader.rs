//! Leader election: one active scheduler at a time, any number of standbys.
//!
//! Distributed, the leader holds a Redis key with a TTL: a candidate takes it
//! with `SET key token NX PX ttl`, the leader renews it with a Lua
//! compare-and-`PEXPIRE` (only while the key still holds its own token) and
//! deletes it with a compare-and-`DEL` on shutdown. Embedded (`ferry up`),
//! the one process is always the leader. See `design.md`.
//!
//! A leader believes it leads only until `ttl - ttl/10` after it *sent* its
//! last successful acquire or renew: the key lives at least `ttl` from the
//! moment Redis received that command, so the belief ends before the key can
//! expire and another candidate can take it, even when Redis becomes
//! unreachable. The work a leader does (re-enqueueing executions) is
//! idempotent anyway, so a brief overlap would be harmless.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_shared::{Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tokio_util::sync::CancellationToken;

use crate::metrics::SchedulerMetrics;

/// The shortest TTL accepted: below it, a round trip to Redis is a large
/// part of the lease.
pub const MIN_TTL: Duration = Duration::from_millis(500);

/// Extends the key's TTL if it still holds our token: 1 if it did, else 0.
const RENEW_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the key if it still holds our token: 1 if it did, else 0.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How one scheduler process learns whether it is the leader.
pub struct LeaderElection {
    backend: Backend,
    /// Until when this process may act as the leader; `None` when it does
    /// not lead.
    leading_until: Mutex<Option<Instant>>,
    /// Woken whenever `leading_until` changes, so that [`lost`](Self::lost)
    /// hears a failed renewal at once.
    changed: tokio::sync::Notify,
}

enum Backend {
    SingleProcess,
    Redis(RedisLock),
}

struct RedisLock {
    conn: ConnectionManager,
    key: String,
    token: String,
    ttl: Duration,
    renew: Script,
    release: Script,
}

impl std::fmt::Debug for LeaderElection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::SingleProcess => f.write_str("LeaderElection::SingleProcess"),
            Backend::Redis(lock) => f
                .debug_struct("LeaderElection::Redis")
                .field("key", &lock.key)
                .field("token", &lock.token)
                .field("ttl", &lock.ttl)
                .finish(),
        }
    }
}

/// The ticks of one leader loop: every `interval` until `stop`, each
/// telling whether this process leads at that moment. A tick that falls
/// while a pass still runs is delayed, not bunched up behind it.
pub struct LeaderTicks<'a> {
    leader: &'a LeaderElection,
    stop: &'a CancellationToken,
    ticks: tokio::time::Interval,
}

impl LeaderTicks<'_> {
    /// Whether this process leads at the next tick; `None` once stopped.
    pub async fn next(&mut self) -> Option<bool> {
        tokio::select! {
            () = self.stop.cancelled() => None,
            _ = self.ticks.tick() => Some(self.leader.is_leader()),
        }
    }
}

impl LeaderElection {
    /// The ticks of a loop that does its work only while this process
    /// leads: `while let Some(leading) = ticks.next().await`.
    pub fn ticks<'a>(&'a self, interval: Duration, stop: &'a CancellationToken) -> LeaderTicks<'a> {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        LeaderTicks {
            leader: self,
            stop,
            ticks,
        }
    }

    /// The embedded election of `ferry up`: this process always leads.
    pub fn single_process() -> Self {
        LeaderElection {
            backend: Backend::SingleProcess,
            leading_until: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// A candidate for the lock `{prefix}:scheduler:leader` on the Redis at
    /// `url`, held for `ttl` (at least [`MIN_TTL`]) and renewed every
    /// `ttl / 3` by [`keep_leading`]. Connects at once: a Redis that does
    /// not answer is [`Error::Unavailable`]. The candidate does not lead
    /// until [`try_lead`](Self::try_lead) succeeds.
    pub async fn redis(url: &str, prefix: &str, ttl: Duration) -> Result<Self> {
        if prefix.is_empty() {
            return Err(Error::validation("redis_prefix", "the Redis key prefix is empty"));
        }
        if ttl < MIN_TTL {
            return Err(Error::validation(
                "leader_ttl",
                "the leader lock TTL is shorter than 500 ms",
            ));
        }
        let client =
            Client::open(url).map_err(|_| Error::validation("redis_url", "the Redis URL is malformed"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            // A reply slower than a third of the TTL is no use to a renewal.
            .set_response_timeout(Some((ttl / 3).max(Duration::from_millis(100))))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|error| redis_error(&error))?;
        Ok(LeaderElection {
            backend: Backend::Redis(RedisLock {
                conn,
                key: format!("{prefix}:scheduler:leader"),
                token: format!("scheduler-{}-{}", std::process::id(), ulid::Ulid::new()),
                ttl,
                renew: Script::new(RENEW_LUA),
                release: Script::new(RELEASE_LUA),
            }),
            leading_until: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// What this candidate writes into the lock (unique per instance).
    pub fn identity(&self) -> &str {
        match &self.backend {
            Backend::SingleProcess => "single-process",
            Backend::Redis(lock) => &lock.token,
        }
    }

    /// How often the leader renews and a standby tries to take over.
    pub fn renew_every(&self) -> Duration {
        match &self.backend {
            Backend::SingleProcess => Duration::from_secs(3600),
            Backend::Redis(lock) => lock.ttl / 3,
        }
    }

    /// Whether this process may act as the leader now.
    pub fn is_leader(&self) -> bool {
        match &self.backend {
            Backend::SingleProcess => true,
            Backend::Redis(_) => self.leading_until().is_some_and(|until| Instant::now() < until),
        }
    }

    /// Renews the lock if this process holds it, else tries to take it;
    /// returns whether this process leads now. An error (Redis unreachable)
    /// leaves the current belief to lapse at its deadline.
    pub async fn try_lead(&self) -> Result<bool> {
        let Backend::Redis(lock) = &self.backend else {
            return Ok(true);
        };
        let ttl_ms = u64::try_from(lock.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut conn = lock.conn.clone();
        let sent = Instant::now();
        // Renew first, even when the belief has lapsed: the key may still
        // hold this candidate's token (a slow reply), and SET NX would then
        // fail until it expired.
        let renewed: i64 = lock
            .renew
            .key(&lock.key)
            .arg(&lock.token)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|error| redis_error(&error))?;
        let mut held = renewed == 1;
        if !held {
            let set: Option<String> = redis::cmd("SET")
                .arg(&lock.key)
                .arg(&lock.token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn)
                .await
                .map_err(|error| redis_error(&error))?;
            held = set.is_some();
        }
        let until = held.then(|| sent + lock.ttl - lock.ttl / 10);
        self.set_leading_until(until);
        Ok(held)
    }

    /// Gives up leadership: deletes the lock if it still holds this
    /// candidate's token, so a standby takes over at its next try rather
    /// than after the TTL. A no-op for the single-process election.
    pub async fn release(&self) -> Result<()> {
        let Backend::Redis(lock) = &self.backend else {
            return Ok(());
        };
        self.set_leading_until(None);
        let mut conn = lock.conn.clone();
        let _: i64 = lock
            .release
            .key(&lock.key)
            .arg(&lock.token)
            .invoke_async(&mut conn)
            .await
            .map_err(|error| redis_error(&error))?;
        Ok(())
    }

    fn leading_until(&self) -> Option<Instant> {
        match self.leading_until.lock() {
            Ok(guard) => *guard,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn set_leading_until(&self, until: Option<Instant>) {
        match self.leading_until.lock() {
            Ok(mut guard) => *guard = until,
            Err(poisoned) => *poisoned.into_inner() = until,
        }
        self.changed.notify_waiters();
    }

    /// Resolves as soon as this process no longer leads: at once when it
    /// does not, else when its belief lapses (the deadline of its last
    /// renewal passes) or a renewal finds the lock taken. Never resolves
    /// for the single-process election.
    pub async fn lost(&self) {
        if matches!(self.backend, Backend::SingleProcess) {
            return std::future::pending().await;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some(until) = self.leading_until().filter(|until| Instant::now() < *until) else {
                return;
            };
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    /// Runs `work` while this process leads: `None` when leadership was
    /// lost first, and `work` is dropped at that moment. For idempotent
    /// passes only (enqueues the queue dedupes); work that must not stop
    /// half-way checks [`is_leader`](Self::is_leader) between its items.
    pub async fn while_leading<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        tokio::select! {
            output = work => Some(output),
            () = self.lost() => {
                tracing::warn!(identity = self.identity(), "leadership lost: the pass in progress stopped");
                None
            }
        }
    }
}

/// Takes and keeps leadership until `stop` is cancelled (renewing, or
/// trying to take over, every [`LeaderElection::renew_every`]), keeping the
/// `ferry_scheduler_is_leader` gauge current; then releases the lock.
pub async fn keep_leading(leader: &LeaderElection, metrics: &SchedulerMetrics, stop: CancellationToken) {
    let mut was_leader = false;
    loop {
        if let Err(error) = leader.try_lead().await {
            tracing::warn!(%error, "leader election failed");
        }
        let leading = leader.is_leader();
        metrics.is_leader.set(i64::from(leading));
        if leading != was_leader {
            if leading {
                tracing::info!(identity = leader.identity(), "scheduler became the leader");
            } else {
                tracing::warn!(identity = leader.identity(), "scheduler lost the leadership");
            }
            was_leader = leading;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(leader.renew_every()) => {}
        }
    }
    match leader.release().await {
        Ok(()) => {
            if was_leader {
                tracing::info!(identity = leader.identity(), "scheduler released the leadership");
            }
        }
        Err(error) => tracing::warn!(%error, "releasing the leader lock failed; it expires with its TTL"),
    }
    metrics.is_leader.set(0);
}

/// Connection-level failures mean Redis is unavailable; anything else is
/// internal.
fn redis_error(error: &redis::RedisError) -> Error {
    if error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.is_unrecoverable_error()
    {
        Error::Unavailable(format!("the leader lock is unavailable ({})", error.category()))
    } else {
        Error::internal_with_source(format!("leader lock: {error}"), error.clone())
    }
}
