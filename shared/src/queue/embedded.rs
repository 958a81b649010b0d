//! The embedded queue of `ferry up`: a table in its own SQLite file, claimed
//! with one `UPDATE … RETURNING` and woken in-process by a `Notify` on every
//! enqueue (no polling); an idle fetch also wakes when the earliest lease
//! runs out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::Notify;

use super::{Delivery, Job, Queue, QueueStats, codec_error, lock, now_ms};
use crate::{Error, Result};

/// Jobs per statement in batched enqueues and acks.
const CHUNK: usize = 2000;

const SCHEMA: &[&str] = &[
    // One row per pending job. state: 0 ready, 1 leased (until lease_until,
    // ms since the epoch, by consumer). Rows are deleted when acked, so the
    // table only ever holds the backlog.
    "CREATE TABLE IF NOT EXISTS queue_jobs (
        id          TEXT PRIMARY KEY,
        body        TEXT NOT NULL,
        state       INTEGER NOT NULL DEFAULT 0,
        lease_until INTEGER NOT NULL DEFAULT 0,
        consumer    TEXT,
        attempts    INTEGER NOT NULL DEFAULT 0
    )",
    // The claim walks this index: expired leases by expiry, ready jobs in
    // insertion (rowid) order.
    "CREATE INDEX IF NOT EXISTS queue_jobs_claim ON queue_jobs (state, lease_until)",
];

/// Leases up to ?4 rows: expired leases first (oldest expiry first), then
/// ready jobs in FIFO order. One statement, so one index walk per fetch.
const CLAIM_SQL: &str = "
UPDATE queue_jobs
   SET state = 1, lease_until = ?1, consumer = ?2, attempts = attempts + 1
 WHERE rowid IN (
       SELECT rowid FROM (SELECT rowid FROM queue_jobs
                           WHERE state = 1 AND lease_until <= ?3
                           ORDER BY lease_until LIMIT ?4)
       UNION ALL
       SELECT rowid FROM (SELECT rowid FROM queue_jobs
                           WHERE state = 0 AND lease_until = 0
                           ORDER BY rowid LIMIT ?4)
       LIMIT ?4)
RETURNING rowid, body, attempts";

/// Ferry's embedded queue: a SQLite file of its own (e.g.
/// `$FERRY_DATA_DIR/queue.db`) with WAL, one connection (the process is its
/// only user, so writes never wait on SQLite's busy handler) and in-process
/// wake-ups. Queue objects opened on the same file in one process share
/// their wake-ups; another process writing the file is not heard (its jobs
/// are seen at the fetcher's next look, at most its `wait` later).
pub struct EmbeddedQueue {
    pool: SqlitePool,
    notify: Arc<Notify>,
    lease: Duration,
}

/// The wake-up shared by every queue object of the file at `path`.
fn notifier(path: &Path) -> Arc<Notify> {
    static NOTIFIERS: OnceLock<Mutex<HashMap<PathBuf, Weak<Notify>>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut notifiers = lock(NOTIFIERS.get_or_init(Mutex::default));
    notifiers.retain(|_, notify| notify.strong_count() > 0);
    if let Some(notify) = notifiers.get(&key).and_then(Weak::upgrade) {
        return notify;
    }
    let notify = Arc::new(Notify::new());
    notifiers.insert(key, Arc::downgrade(&notify));
    notify
}

impl std::fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedQueue")
            .field("lease", &self.lease)
            .finish()
    }
}

impl EmbeddedQueue {
    /// Opens (creating if missing, with its directory) the queue file at
    /// `path`. Jobs pending or leased when the file was last closed are
    /// delivered again (leased ones once their lease runs out).
    pub async fn open(path: &Path, lease: Duration) -> Result<Self> {
        if lease < Duration::from_millis(100) {
            return Err(Error::validation(
                "lease",
                "the queue lease is shorter than 100 ms",
            ));
        }
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            tokio::fs::create_dir_all(parent).await.map_err(|error| {
                Error::Unavailable(format!("cannot create the directory of the queue file: {error}"))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|error| Error::Unavailable(format!("cannot open the queue file: {error}")))?;
        for statement in SCHEMA {
            sqlx::query(*statement).execute(&pool).await?;
        }
        Ok(EmbeddedQueue {
            pool,
            notify: notifier(path),
            lease,
        })
    }

    /// Closes the file (waiting for in-progress statements).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Leases up to `max` jobs; when none, also returns the earliest lease
    /// expiry (ms) so the caller knows when to look again.
    async fn claim(&self, consumer: &str, max: usize) -> Result<(Vec<Delivery>, Option<i64>)> {
        let now = now_ms();
        let lease_until = now + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2);
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(CLAIM_SQL)
            .bind(lease_until)
            .bind(consumer)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        let mut poison = Vec::new();
        for row in rows {
            let rowid: i64 = row.try_get(0)?;
            let body: String = row.try_get(1)?;
            let attempts: i64 = row.try_get(2)?;
            match serde_json::from_str::<Job>(&body) {
                Ok(job) => claimed.push((
                    rowid,
                    Delivery {
                        receipt: job.id.clone(),
                        job,
                        attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
                    },
                )),
                Err(error) => {
                    tracing::warn!(%error, "unreadable queue entry dropped");
                    poison.push(rowid);
                }
            }
        }
        for rowid in poison {
            sqlx::query("DELETE FROM queue_jobs WHERE rowid = ?1")
                .bind(rowid)
                .execute(&mut *tx)
                .await?;
        }
        let next_expiry = if claimed.is_empty() {
            sqlx::query_scalar::<_, Option<i64>>("SELECT MIN(lease_until) FROM queue_jobs WHERE state = 1")
                .fetch_one(&mut *tx)
                .await?
        } else {
            None
        };
        tx.commit().await?;
        claimed.sort_by_key(|(rowid, _)| *rowid);
        Ok((
            claimed.into_iter().map(|(_, delivery)| delivery).collect(),
            next_expiry,
        ))
    }
}

/// `receipts` as one JSON array parameter, for `IN (SELECT value FROM
/// json_each(?))`: one prepared statement whatever the batch size.
fn json_list(receipts: &[String]) -> Result<String> {
    serde_json::to_string(receipts).map_err(codec_error)
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn enqueue(&self, job: &Job) -> Result<bool> {
        let body = serde_json::to_string(job).map_err(codec_error)?;
        let result =
            sqlx::query("INSERT INTO queue_jobs (id, body) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING")
                .bind(&job.id)
                .bind(body)
                .execute(&self.pool)
                .await?;
        let added = result.rows_affected() == 1;
        if added {
            self.notify.notify_waiters();
        }
        Ok(added)
    }

    async fn enqueue_many(&self, jobs: &[Job]) -> Result<u64> {
        let mut added = 0;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in jobs.chunks(CHUNK) {
            let bodies = serde_json::to_string(chunk).map_err(codec_error)?;
            let result = sqlx::query(
                "INSERT INTO queue_jobs (id, body)
                 SELECT json_extract(value, '$.id'), value FROM json_each(?1) WHERE true
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(bodies)
            .execute(&mut *tx)
            .await?;
            added += result.rows_affected();
        }
        tx.commit().await?;
        if added > 0 {
            self.notify.notify_waiters();
        }
        Ok(added)
    }

    async fn fetch(&self, consumer: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so an enqueue between the
            // look and the wait is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (deliveries, next_expiry) = self.claim(consumer, max).await?;
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(deliveries);
            }
            let mut until = deadline;
            if let Some(expiry) = next_expiry {
                let in_ms = u64::try_from(expiry - now_ms() + 1).unwrap_or(0);
                until = until.min(now + Duration::from_millis(in_ms));
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    async fn ack(&self, receipts: &[String]) -> Result<()> {
        for chunk in receipts.chunks(CHUNK) {
            sqlx::query("DELETE FROM queue_jobs WHERE id IN (SELECT value FROM json_each(?1))")
                .bind(json_list(chunk)?)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn touch(&self, consumer: &str, receipts: &[String]) -> Result<()> {
        let lease_until = now_ms() + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2);
        for chunk in receipts.chunks(CHUNK) {
            sqlx::query(
                "UPDATE queue_jobs SET lease_until = ?1
                  WHERE state = 1 AND consumer = ?2 AND id IN (SELECT value FROM json_each(?3))",
            )
            .bind(lease_until)
            .bind(consumer)
            .bind(json_list(chunk)?)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    async fn release(&self, consumer: &str, receipts: &[String]) -> Result<()> {
        let mut released = 0;
        for chunk in receipts.chunks(CHUNK) {
            let result = sqlx::query(
                "UPDATE queue_jobs SET state = 0, lease_until = 0, consumer = NULL,
                        attempts = MAX(attempts - 1, 0)
                  WHERE state = 1 AND consumer = ?1 AND id IN (SELECT value FROM json_each(?2))",
            )
            .bind(consumer)
            .bind(json_list(chunk)?)
            .execute(&self.pool)
            .await?;
            released += result.rows_affected();
        }
        if released > 0 {
            self.notify.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_jobs")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn stats(&self) -> Result<QueueStats> {
        // Ready rows wait; leased ones are in flight.
        let (waiting, in_flight, oldest): (i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE state = 0),
                    COUNT(*) FILTER (WHERE state = 1),
                    (SELECT MIN(json_extract(body, '$.enqueued_at_ms')) FROM
                        (SELECT body FROM queue_jobs WHERE state = 0 ORDER BY rowid LIMIT 1))
               FROM queue_jobs",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueStats {
            waiting: u64::try_from(waiting).unwrap_or(0),
            in_flight: u64::try_from(in_flight).unwrap_or(0),
            oldest_waiting_ms: oldest.map(|at| u64::try_from(now_ms() - at).unwrap_or(0)),
        })
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn lease(&self) -> Duration {
        self.lease
    }
}
