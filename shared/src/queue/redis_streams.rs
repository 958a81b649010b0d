//! The distributed queue: Redis Streams with one consumer group. Jobs are
//! stream entries (`XADD`), consumers read with `XREADGROUP … BLOCK` on a
//! dedicated connection, acks are one `MULTI` of `XACK` + `XDEL` + `DEL`
//! per batch, and entries idle past the lease are taken over with
//! `XAUTOCLAIM`. See `design.md` for the key layout and the figures.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;
use ::redis::{Cmd, FromRedisValue, RedisError, Script, Value};
use async_trait::async_trait;

use super::redis_conn::{self, Blocking, Request};
use super::{Delivery, Job, Queue, QueueStats, codec_error, is_connection_error, lock, redis_error};
use crate::{Error, Result};

/// The one consumer group every worker joins.
const GROUP: &str = "ferry";
/// Jobs per pipelined enqueue or ack round trip.
const CHUNK: usize = 1000;
/// Tries per command when the connection fails or the group/scripts vanished.
const TRIES: u32 = 4;
/// Idle blocking-read connections kept for reuse.
const MAX_IDLE_READERS: usize = 64;
/// Slack given to a blocking read beyond its BLOCK time before the
/// connection is considered dead.
const READ_SLACK: Duration = Duration::from_secs(5);
/// How often a queue object looks for dead consumers to forget.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// `SET NX` the job's dedupe key, then `XADD` the job: 1 when added, 0 when
/// the id is already pending.
const ENQUEUE_LUA: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  redis.call('XADD', KEYS[1], '*', 'j', ARGV[1])
  return 1
end
return 0
";

/// `XAUTOCLAIM` entries idle past the lease for this consumer and report
/// each with its delivery count: `{cursor, {{id, fields, deliveries}...}}`.
const CLAIM_LUA: &str = r"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {}
for _, e in ipairs(r[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  local n = 1
  if p[1] then n = p[1][4] end
  out[#out + 1] = {e[1], e[2], n}
end
return {r[1], out}
";

/// Resets the idle time of entries still held by this consumer (`XCLAIM …
/// JUSTID` does not count a delivery); entries taken over by another
/// consumer are left alone.
const TOUCH_LUA: &str = r"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if p[1] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
";

/// Re-adds entries held by this consumer at the end of the stream (so they
/// are read again at once) and removes the originals. Field `a` carries the
/// deliveries before this one, so the next attempt number stays right.
const RELEASE_LUA: &str = r"
local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if p[1] then
    local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    if e[1] then
      local body, before = nil, 0
      local f = e[1][2]
      for k = 1, #f, 2 do
        if f[k] == 'j' then body = f[k + 1] elseif f[k] == 'a' then before = tonumber(f[k + 1]) end
      end
      if body then
        redis.call('XADD', KEYS[1], '*', 'j', body, 'a', before + p[1][4] - 1)
      end
    end
    n = n + 1
  end
end
return n
";

/// Forgets consumers that hold nothing and have been idle at least
/// `ARGV[2]` ms. A consumer that holds entries is never deleted: that would
/// drop its entries from the pending list and strand them.
const PRUNE_LUA: &str = r"
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1]
    elseif c[i] == 'pending' then pending = c[i + 1]
    elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name and pending == 0 and idle >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    n = n + 1
  end
end
return n
";

/// Settings of a [`RedisQueue`].
#[derive(Debug, Clone)]
pub struct RedisQueueOptions {
    /// Key prefix (e.g. `ferry`); keys are `{<prefix>:q<n>}:…`.
    pub prefix: String,
    /// How long a delivery stays leased without a touch.
    pub lease: Duration,
    /// Streams the jobs are spread over (by a hash of the job id); default 1.
    /// Every consumer reads all of them. It may grow without losing jobs but
    /// must not shrink while jobs are queued.
    pub partitions: u16,
    /// How long a pending job's dedupe key lives if it is never acked;
    /// default 24 h.
    pub dedupe_ttl: Duration,
}

impl RedisQueueOptions {
    /// One partition, a 24 h dedupe window.
    pub fn new(prefix: impl Into<String>, lease: Duration) -> Self {
        RedisQueueOptions {
            prefix: prefix.into(),
            lease,
            partitions: 1,
            dedupe_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

struct Partition {
    stream: String,
    job_key_prefix: String,
}

impl Partition {
    fn job_key(&self, job_id: &str) -> String {
        format!("{}{job_id}", self.job_key_prefix)
    }
}

struct Reclaim {
    next_at: Instant,
    next_prune_at: Instant,
    cursors: Vec<String>,
}

struct Scripts {
    enqueue: Script,
    claim: Script,
    touch: Script,
    release: Script,
    prune: Script,
}

/// Ferry's distributed queue over Redis Streams consumer groups.
///
/// Keys (all under one hash tag per partition, so a partition's scripts stay
/// on one cluster slot): `{<prefix>:q<n>}:stream` holds the jobs and
/// `{<prefix>:q<n>}:job:<id>` marks a pending id for dedupe. A Redis that
/// comes back empty is handled transparently: the consumer group is
/// re-created (`MKSTREAM`) on `NOGROUP` and the scripts reloaded on
/// `NOSCRIPT`.
pub struct RedisQueue {
    conn: ConnectionManager,
    readers: Blocking,
    partitions: Vec<Partition>,
    lease: Duration,
    reclaim_every: Duration,
    prune_idle: Duration,
    reclaim: Mutex<Reclaim>,
    dedupe_ttl_ms: u64,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field(
                "streams",
                &self.partitions.iter().map(|p| &p.stream).collect::<Vec<_>>(),
            )
            .field("lease", &self.lease)
            .finish()
    }
}

impl RedisQueue {
    /// Connects to `url` with one partition under `prefix`, creating the
    /// consumer group if needed. A Redis that does not answer is
    /// [`Error::Unavailable`].
    pub async fn connect(url: &str, prefix: &str, lease: Duration) -> Result<Self> {
        Self::connect_with(url, RedisQueueOptions::new(prefix, lease)).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(url: &str, options: RedisQueueOptions) -> Result<Self> {
        if options.prefix.is_empty() {
            return Err(Error::validation("redis_prefix", "the queue key prefix is empty"));
        }
        if options.lease < Duration::from_millis(100) {
            return Err(Error::validation(
                "lease",
                "the queue lease is shorter than 100 ms",
            ));
        }
        let (client, conn) = redis_conn::open(url).await?;
        let partitions = (0..options.partitions.max(1))
            .map(|n| {
                let tag = format!("{{{}:q{n}}}", options.prefix);
                Partition {
                    stream: format!("{tag}:stream"),
                    job_key_prefix: format!("{tag}:job:"),
                }
            })
            .collect::<Vec<_>>();
        let lease = options.lease;
        let now = Instant::now();
        let queue = RedisQueue {
            conn,
            readers: Blocking::new(client, MAX_IDLE_READERS),
            reclaim: Mutex::new(Reclaim {
                next_at: now,
                next_prune_at: now + PRUNE_EVERY,
                cursors: vec!["0-0".to_owned(); partitions.len()],
            }),
            partitions,
            lease,
            reclaim_every: (lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)),
            prune_idle: (lease * 4).max(Duration::from_secs(600)),
            dedupe_ttl_ms: u64::try_from(options.dedupe_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            scripts: Scripts {
                enqueue: Script::new(ENQUEUE_LUA),
                claim: Script::new(CLAIM_LUA),
                touch: Script::new(TOUCH_LUA),
                release: Script::new(RELEASE_LUA),
                prune: Script::new(PRUNE_LUA),
            },
        };
        queue.ensure_groups().await?;
        Ok(queue)
    }

    /// Deletes consumers of the group that hold no deliveries and have been
    /// idle at least `min_idle`; returns how many. `fetch` does this every
    /// minute with `max(4 × lease, 10 min)`. Deleting a live consumer is
    /// harmless: its next read re-creates it.
    pub async fn prune_consumers(&self, min_idle: Duration) -> Result<u64> {
        let mut deleted = 0;
        for partition in &self.partitions {
            let cmd = evalsha(
                &self.scripts.prune,
                &[&partition.stream],
                &[GROUP.to_owned(), min_idle.as_millis().to_string()],
            );
            let n: u64 = self.query(Request::Cmd(&cmd)).await?;
            deleted += n;
        }
        Ok(deleted)
    }

    /// Creates the consumer group (and the stream) of every partition,
    /// reading from the start so jobs added before the group existed (after
    /// a Redis restart) are delivered.
    async fn ensure_groups(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        for partition in &self.partitions {
            let result: std::result::Result<(), RedisError> = ::redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&partition.stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match result {
                Ok(()) => {}
                Err(error) if has_code(&error, "BUSYGROUP") => {}
                Err(error) => return Err(redis_error(&error)),
            }
        }
        Ok(())
    }

    async fn load_scripts(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let scripts = &self.scripts;
        for script in [
            &scripts.enqueue,
            &scripts.claim,
            &scripts.touch,
            &scripts.release,
            &scripts.prune,
        ] {
            script
                .load_async(&mut conn)
                .await
                .map_err(|error| redis_error(&error))?;
        }
        Ok(())
    }

    /// Runs a request on the shared connection, repairing what a Redis
    /// restart takes away (the connection, the group, the scripts) and
    /// retrying a few times.
    async fn query<T: FromRedisValue>(&self, request: Request<'_>) -> Result<T> {
        let mut conn = self.conn.clone();
        let mut tries = 0;
        loop {
            let error = match request.run::<T>(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            tries += 1;
            if tries >= TRIES {
                return Err(redis_error(&error));
            }
            self.repair(&error, tries).await?;
        }
    }

    /// What to do before retrying after `error`; fails when retrying cannot
    /// help.
    async fn repair(&self, error: &RedisError, tries: u32) -> Result<()> {
        if has_code(error, "NOSCRIPT") {
            self.load_scripts().await
        } else if has_code(error, "NOGROUP") {
            self.ensure_groups().await
        } else if is_connection_error(error) {
            tokio::time::sleep(Duration::from_millis(50) * tries).await;
            Ok(())
        } else {
            Err(redis_error(error))
        }
    }

    fn partition_of(&self, job_id: &str) -> usize {
        if self.partitions.len() == 1 {
            return 0;
        }
        usize::try_from(fnv1a(job_id) % self.partitions.len() as u64).unwrap_or(0)
    }

    fn enqueue_cmd(&self, job: &Job) -> Result<Cmd> {
        let body = serde_json::to_string(job).map_err(codec_error)?;
        let partition = &self.partitions[self.partition_of(&job.id)];
        Ok(evalsha(
            &self.scripts.enqueue,
            &[&partition.stream, &partition.job_key(&job.id)],
            &[body, self.dedupe_ttl_ms.to_string()],
        ))
    }

    /// Claims entries idle past the lease, every `reclaim_every` at most.
    async fn reclaim(&self, consumer: &str, max: usize, out: &mut Vec<Delivery>) -> Result<()> {
        let (cursors, prune) = {
            let now = Instant::now();
            let mut state = lock(&self.reclaim);
            if now < state.next_at {
                return Ok(());
            }
            state.next_at = now + self.reclaim_every;
            let prune = now >= state.next_prune_at;
            if prune {
                state.next_prune_at = now + PRUNE_EVERY;
            }
            (state.cursors.clone(), prune)
        };
        let min_idle = self.lease.as_millis().to_string();
        for (index, partition) in self.partitions.iter().enumerate() {
            if out.len() >= max {
                break;
            }
            let cmd = evalsha(
                &self.scripts.claim,
                &[&partition.stream],
                &[
                    GROUP.to_owned(),
                    consumer.to_owned(),
                    min_idle.clone(),
                    cursors[index].clone(),
                    (max - out.len()).to_string(),
                ],
            );
            let reply: Value = self.query(Request::Cmd(&cmd)).await?;
            let Value::Array(mut parts) = reply else {
                return Err(unexpected("claim"));
            };
            let entries = parts.pop().ok_or_else(|| unexpected("claim"))?;
            let cursor = parts
                .pop()
                .and_then(|value| text(&value))
                .unwrap_or_else(|| "0-0".into());
            lock(&self.reclaim).cursors[index] = cursor;
            let Value::Array(entries) = entries else {
                return Err(unexpected("claim"));
            };
            let mut poison = Vec::new();
            for entry in entries {
                let Value::Array(mut triple) = entry else { continue };
                if triple.len() != 3 {
                    continue;
                }
                let deliveries = match triple.pop() {
                    Some(Value::Int(n)) => u32::try_from(n).unwrap_or(u32::MAX),
                    _ => 1,
                };
                let fields = triple.pop().unwrap_or(Value::Nil);
                let Some(entry_id) = triple.pop().and_then(|value| text(&value)) else {
                    continue;
                };
                self.push_entry(index, entry_id, &fields, deliveries, out, &mut poison);
            }
            if !poison.is_empty() {
                self.ack(&poison).await?;
            }
        }
        if prune && let Err(error) = self.prune_consumers(self.prune_idle).await {
            tracing::warn!(%error, "queue consumer pruning failed");
        }
        Ok(())
    }

    fn push_entry(
        &self,
        partition: usize,
        entry_id: String,
        fields: &Value,
        attempt: u32,
        out: &mut Vec<Delivery>,
        poison: &mut Vec<String>,
    ) {
        let mut body = None;
        let mut before = 0u32;
        if let Value::Array(fields) = fields {
            for pair in fields.chunks(2) {
                match (&pair[0], pair.get(1)) {
                    (Value::BulkString(name), value) if name == b"j" => body = value,
                    (Value::BulkString(name), Some(value)) if name == b"a" => {
                        before = text(value).and_then(|n| n.parse().ok()).unwrap_or(0);
                    }
                    _ => {}
                }
            }
        }
        let job = match body {
            Some(Value::BulkString(bytes)) => serde_json::from_slice::<Job>(bytes).ok(),
            _ => None,
        };
        match job {
            Some(job) => out.push(Delivery {
                receipt: format!("{partition}/{entry_id}/{}", job.id),
                job,
                attempt: attempt.saturating_add(before),
            }),
            None => {
                tracing::warn!(entry_id, "unreadable queue entry dropped");
                poison.push(format!("{partition}/{entry_id}/"));
            }
        }
    }

    /// `XREADGROUP` new entries of every partition, blocking up to `block`
    /// (None: do not block), on a connection of its own.
    async fn read_new(
        &self,
        consumer: &str,
        max: usize,
        block: Option<Duration>,
        out: &mut Vec<Delivery>,
    ) -> Result<()> {
        let per_stream = max.div_ceil(self.partitions.len()).max(1);
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(per_stream);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS");
        for partition in &self.partitions {
            cmd.arg(&partition.stream);
        }
        for _ in &self.partitions {
            cmd.arg(">");
        }
        let limit = block.unwrap_or_default() + READ_SLACK;
        let mut tries = 0;
        let reply = loop {
            match self.readers.query::<Value>(&cmd, limit).await {
                Ok(reply) => break reply,
                Err(error) => {
                    tries += 1;
                    if tries >= TRIES {
                        return Err(redis_error(&error));
                    }
                    self.repair(&error, tries).await?;
                }
            }
        };
        let Value::Array(streams) = reply else {
            return Ok(()); // nil: the block ran out
        };
        let mut poison = Vec::new();
        for stream in streams {
            let Value::Array(mut pair) = stream else { continue };
            let (Some(entries), Some(name)) = (pair.pop(), pair.pop()) else {
                continue;
            };
            let Some(partition) = self
                .partitions
                .iter()
                .position(|p| matches!(&name, Value::BulkString(n) if n == p.stream.as_bytes()))
            else {
                continue;
            };
            let Value::Array(entries) = entries else { continue };
            for entry in entries {
                let Value::Array(mut pair) = entry else { continue };
                let (Some(fields), Some(id)) = (pair.pop(), pair.pop()) else {
                    continue;
                };
                let Some(entry_id) = text(&id) else { continue };
                self.push_entry(partition, entry_id, &fields, 1, out, &mut poison);
            }
        }
        if !poison.is_empty() {
            self.ack(&poison).await?;
        }
        Ok(())
    }

    /// Receipts grouped by partition: (entry id, dedupe key if known).
    fn by_partition(&self, receipts: &[String]) -> Vec<Vec<(String, Option<String>)>> {
        let mut grouped = vec![Vec::new(); self.partitions.len()];
        for receipt in receipts {
            let mut parts = receipt.splitn(3, '/');
            let (Some(partition), Some(entry_id), Some(job_id)) = (parts.next(), parts.next(), parts.next())
            else {
                tracing::warn!(receipt, "malformed queue receipt ignored");
                continue;
            };
            let Some(partition) = partition
                .parse::<usize>()
                .ok()
                .filter(|p| *p < self.partitions.len())
            else {
                tracing::warn!(receipt, "queue receipt of an unknown partition ignored");
                continue;
            };
            let key = (!job_id.is_empty()).then(|| self.partitions[partition].job_key(job_id));
            grouped[partition].push((entry_id.to_owned(), key));
        }
        grouped
    }

    /// Runs a per-entry script (touch, release) for every partition.
    async fn per_entry_script(&self, script: &Script, consumer: &str, receipts: &[String]) -> Result<()> {
        for (index, entries) in self.by_partition(receipts).into_iter().enumerate() {
            for chunk in entries.chunks(CHUNK) {
                let mut args = Vec::with_capacity(chunk.len() + 2);
                args.push(GROUP.to_owned());
                args.push(consumer.to_owned());
                args.extend(chunk.iter().map(|(id, _)| id.clone()));
                let cmd = evalsha(script, &[&self.partitions[index].stream], &args);
                let _: i64 = self.query(Request::Cmd(&cmd)).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(&self, job: &Job) -> Result<bool> {
        let cmd = self.enqueue_cmd(job)?;
        let added: i64 = self.query(Request::Cmd(&cmd)).await?;
        Ok(added == 1)
    }

    async fn enqueue_many(&self, jobs: &[Job]) -> Result<u64> {
        let mut added = 0u64;
        for chunk in jobs.chunks(CHUNK) {
            let mut pipe = ::redis::pipe();
            for job in chunk {
                pipe.add_command(self.enqueue_cmd(job)?);
            }
            let replies: Vec<i64> = self.query(Request::Pipe(&pipe)).await?;
            added += replies.iter().filter(|n| **n == 1).count() as u64;
        }
        Ok(added)
    }

    async fn fetch(&self, consumer: &str, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        loop {
            let mut out = Vec::new();
            self.reclaim(consumer, max, &mut out).await?;
            if out.len() < max {
                let now = Instant::now();
                let block = if !out.is_empty() || now >= deadline {
                    None
                } else {
                    let next_reclaim = lock(&self.reclaim).next_at;
                    Some(deadline.min(next_reclaim.max(now)).saturating_duration_since(now))
                        .filter(|block| !block.is_zero())
                        .or(Some(Duration::from_millis(1)))
                };
                if let Err(error) = self.read_new(consumer, max - out.len(), block, &mut out).await {
                    if out.is_empty() {
                        return Err(error);
                    }
                    // Hand over what was reclaimed; the next fetch reads again.
                    tracing::warn!(%error, "queue read failed after a reclaim");
                    return Ok(out);
                }
            }
            if out.len() > max {
                // Several partitions answered one read: hand the surplus back.
                let surplus: Vec<String> = out.drain(max..).map(|d| d.receipt).collect();
                self.release(consumer, &surplus).await?;
            }
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
        }
    }

    async fn ack(&self, receipts: &[String]) -> Result<()> {
        for (index, entries) in self.by_partition(receipts).into_iter().enumerate() {
            let stream = &self.partitions[index].stream;
            for chunk in entries.chunks(CHUNK) {
                let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
                let keys: Vec<&str> = chunk.iter().filter_map(|(_, key)| key.as_deref()).collect();
                let mut pipe = ::redis::pipe();
                pipe.atomic();
                pipe.cmd("XACK").arg(stream).arg(GROUP).arg(&ids).ignore();
                pipe.cmd("XDEL").arg(stream).arg(&ids).ignore();
                if !keys.is_empty() {
                    pipe.cmd("DEL").arg(&keys).ignore();
                }
                let () = self.query(Request::Pipe(&pipe)).await?;
            }
        }
        Ok(())
    }

    async fn touch(&self, consumer: &str, receipts: &[String]) -> Result<()> {
        self.per_entry_script(&self.scripts.touch, consumer, receipts)
            .await
    }

    async fn release(&self, consumer: &str, receipts: &[String]) -> Result<()> {
        self.per_entry_script(&self.scripts.release, consumer, receipts)
            .await
    }

    async fn depth(&self) -> Result<u64> {
        let mut pipe = ::redis::pipe();
        for partition in &self.partitions {
            pipe.cmd("XLEN").arg(&partition.stream);
        }
        let lengths: Vec<u64> = self.query(Request::Pipe(&pipe)).await?;
        Ok(lengths.iter().sum())
    }

    /// Per partition: `XLEN` and the `XPENDING` summary, then the first
    /// entry after the highest pending id. Acknowledged entries are
    /// deleted and a group reads in stream order, so every entry past the
    /// highest pending id (the group's reads go no further) waits, and so
    /// does nothing before it: the first of them is the oldest waiting job.
    async fn stats(&self) -> Result<QueueStats> {
        let mut stats = QueueStats::default();
        let now = super::now_ms();
        for partition in &self.partitions {
            let mut pipe = ::redis::pipe();
            pipe.cmd("XLEN").arg(&partition.stream);
            pipe.cmd("XPENDING").arg(&partition.stream).arg(GROUP);
            let (length, pending): (u64, Value) = self.query(Request::Pipe(&pipe)).await?;
            let (in_flight, highest) = match &pending {
                Value::Array(summary) if !summary.is_empty() => (
                    u64::from_redis_value(summary[0].clone()).map_err(|_| unexpected("XPENDING"))?,
                    summary.get(2).and_then(text),
                ),
                _ => return Err(unexpected("XPENDING")),
            };
            let waiting = length.saturating_sub(in_flight);
            stats.waiting += waiting;
            stats.in_flight += in_flight;
            if waiting == 0 {
                continue;
            }
            let start = highest.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
            let mut range = ::redis::cmd("XRANGE");
            range
                .arg(&partition.stream)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(1);
            let entries: Value = self.query(Request::Cmd(&range)).await?;
            if let Some(enqueued_at) = first_enqueued_at(&entries) {
                let age = u64::try_from(now - enqueued_at).unwrap_or(0);
                stats.oldest_waiting_ms = Some(stats.oldest_waiting_ms.map_or(age, |oldest| oldest.max(age)));
            }
        }
        Ok(stats)
    }

    async fn ping(&self) -> Result<()> {
        let _: String = self.query(Request::Cmd(&::redis::cmd("PING"))).await?;
        Ok(())
    }

    fn lease(&self) -> Duration {
        self.lease
    }
}

/// `EVALSHA` of `script` (reloaded on `NOSCRIPT` by [`RedisQueue::query`]).
fn evalsha(script: &Script, keys: &[&str], args: &[String]) -> Cmd {
    let mut cmd = ::redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len()).arg(keys).arg(args);
    cmd
}

/// FNV-1a: a partition hash stable across processes and releases.
fn fnv1a(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn has_code(error: &RedisError, code: &str) -> bool {
    error.code() == Some(code) || error.to_string().contains(code)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// The enqueue time of the one entry of an `XRANGE … COUNT 1` reply: the
/// job's own stamp, else the entry id's milliseconds.
fn first_enqueued_at(reply: &Value) -> Option<i64> {
    let Value::Array(entries) = reply else {
        return None;
    };
    let Value::Array(entry) = entries.first()? else {
        return None;
    };
    let id = text(entry.first()?)?;
    let stamped = match entry.get(1) {
        Some(Value::Array(fields)) => fields
            .chunks(2)
            .find(|pair| text(&pair[0]).as_deref() == Some("j"))
            .and_then(|pair| pair.get(1).and_then(text))
            .and_then(|body| serde_json::from_str::<Job>(&body).ok())
            .map(|job| job.enqueued_at_ms),
        _ => None,
    };
    stamped.or_else(|| id.split('-').next()?.parse().ok())
}

fn unexpected(what: &str) -> Error {
    Error::internal(format!("queue: unexpected {what} reply from Redis"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn job_ids_spread_over_partitions() {
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for i in 0..1000 {
            *counts.entry(fnv1a(&format!("job-{i}")) % 4).or_default() += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(counts.values().all(|n| *n > 150), "{counts:?}");
        assert_eq!(fnv1a("01HZX"), fnv1a("01HZX"));
    }
}
