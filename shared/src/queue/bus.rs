//! Request/reply and broadcast between roles: [`RedisBus`] for separate
//! processes (lists for replies, pub/sub for broadcasts) and [`LocalBus`]
//! for `ferry up`, where every role shares one process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;
use ::redis::{Client, Value as RedisValue};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde_json::Value;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use super::redis_conn::{self, Blocking, Request};
use super::{Bus, RateLimit, codec_error, is_connection_error, lock, redis_error};
use crate::{Error, Result};

/// Tries per command when the connection fails.
const TRIES: u32 = 4;
/// Idle blocking-pop connections kept for reuse.
const MAX_IDLE_WAITERS: usize = 32;
/// Slack given to a `BLPOP` beyond its timeout before its connection is
/// considered dead.
const WAIT_SLACK: Duration = Duration::from_secs(5);
/// Messages a slow subscriber may fall behind before it loses the oldest.
const SUBSCRIBER_BUFFER: usize = 1024;

// ---------------------------------------------------------------- Redis

/// The bus over Redis: a reply is `RPUSH` + `PEXPIRE` on
/// `<prefix>:reply:<key>` and its waiter `BLPOP`s on a connection of its own;
/// broadcasts are `PUBLISH`/`SUBSCRIBE` on `<prefix>:bus:<channel>`, each
/// subscription on its own connection, re-subscribed after a reconnect.
pub struct RedisBus {
    client: Client,
    conn: ConnectionManager,
    waiters: Blocking,
    prefix: String,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").field("prefix", &self.prefix).finish()
    }
}

impl RedisBus {
    /// Connects to `url`; keys and channels live under `prefix`. A Redis
    /// that does not answer is [`Error::Unavailable`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let (client, conn) = redis_conn::open(url).await?;
        Ok(RedisBus {
            waiters: Blocking::new(client.clone(), MAX_IDLE_WAITERS),
            client,
            conn,
            prefix: prefix.to_owned(),
        })
    }

    fn reply_key(&self, key: &str) -> String {
        format!("{}:reply:{key}", self.prefix)
    }

    fn channel(&self, channel: &str) -> String {
        format!("{}:bus:{channel}", self.prefix)
    }

    /// Runs `cmd` on the shared connection, retrying connection failures.
    async fn query<T: ::redis::FromRedisValue>(&self, request: Request<'_>) -> Result<T> {
        let mut conn = self.conn.clone();
        let mut tries = 0;
        loop {
            match request.run::<T>(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(error) if is_connection_error(&error) && tries + 1 < TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50) * tries).await;
                }
                Err(error) => return Err(redis_error(&error)),
            }
        }
    }
}

/// The cell rate step of [`RateLimit`] in Redis, atomic across API
/// replicas and timed by the Redis server's clock (so replicas' clocks do
/// not matter). KEYS[1] holds the arrival time in microseconds; ARGV are
/// the interval and the tolerance in microseconds. Returns 0 when allowed,
/// otherwise the microseconds to wait.
const THROTTLE_SCRIPT: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next = tat + interval
local wait = next - tolerance - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], string.format('%d', next), 'PX', math.ceil((next - now) / 1000) + 1000)
return 0
"#;

#[async_trait]
impl Bus for RedisBus {
    async fn reply(&self, key: &str, value: &Value, ttl: Duration) -> Result<()> {
        let body = serde_json::to_string(value).map_err(codec_error)?;
        let key = self.reply_key(key);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("RPUSH")
            .arg(&key)
            .arg(body)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis().max(1) as u64)
            .ignore();
        self.query::<()>(Request::Pipe(&pipe)).await
    }

    async fn wait_reply(&self, key: &str, timeout: Duration) -> Result<Option<Value>> {
        let key = self.reply_key(key);
        let deadline = Instant::now() + timeout;
        let mut tries = 0;
        let reply = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut cmd;
            if left < Duration::from_millis(1) {
                cmd = ::redis::cmd("LPOP");
                cmd.arg(&key);
            } else {
                cmd = ::redis::cmd("BLPOP");
                cmd.arg(&key).arg(left.as_secs_f64());
            }
            match self.waiters.query::<RedisValue>(&cmd, left + WAIT_SLACK).await {
                Ok(reply) => break reply,
                Err(error) if is_connection_error(&error) && tries + 1 < TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50) * tries).await;
                }
                Err(error) => return Err(redis_error(&error)),
            }
        };
        let body = match reply {
            RedisValue::Array(mut pair) => pair.pop(),
            RedisValue::Nil => None,
            other => Some(other),
        };
        match body {
            Some(RedisValue::BulkString(bytes)) => {
                serde_json::from_slice(&bytes).map(Some).map_err(codec_error)
            }
            Some(_) => Err(Error::internal("bus: unexpected reply from Redis")),
            None => Ok(None),
        }
    }

    async fn publish(&self, channel: &str, value: &Value) -> Result<()> {
        let body = serde_json::to_string(value).map_err(codec_error)?;
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(self.channel(channel)).arg(body);
        let _: i64 = self.query(Request::Cmd(&cmd)).await?;
        Ok(())
    }

    async fn throttle(&self, key: &str, limit: RateLimit) -> Result<Option<Duration>> {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(THROTTLE_SCRIPT)
            .arg(1)
            .arg(format!("{}:ratelimit:{key}", self.prefix))
            .arg(micros(limit.interval()))
            .arg(micros(limit.tolerance()));
        let wait: u64 = self.query(Request::Cmd(&cmd)).await?;
        Ok((wait > 0).then(|| Duration::from_micros(wait)))
    }

    async fn subscribe(&self, channel: &str) -> Result<BoxStream<'static, Value>> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(run_subscription(
            self.client.clone(),
            self.channel(channel),
            tx,
            ready_tx,
        ));
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(Error::internal("bus: the subscription task ended")),
        }
        Ok(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|value| (value, rx)) },
        )
        .boxed())
    }
}

/// Keeps one subscription alive: forwards messages to `tx`, reconnects and
/// re-subscribes (backing off up to 1 s) when the connection drops, and ends
/// when the subscriber's stream is dropped. The first outcome goes to
/// `ready` (a first connection that fails is the caller's error).
async fn run_subscription(
    client: Client,
    channel: String,
    tx: mpsc::Sender<Value>,
    ready: oneshot::Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = async {
            let mut pubsub = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
                .await
                .map_err(|_| Error::Unavailable("the bus is unavailable (connect timed out)".into()))?
                .map_err(|error| redis_error(&error))?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|error| redis_error(&error))?;
            Ok::<_, Error>(pubsub)
        }
        .await;
        match connected {
            Ok(pubsub) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
                } else {
                    tracing::info!(channel, "bus subscription restored");
                }
                backoff = Duration::from_millis(50);
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            match serde_json::from_slice::<Value>(message.get_payload_bytes()) {
                                Ok(value) => {
                                    if tx.send(value).await.is_err() {
                                        return;
                                    }
                                }
                                Err(error) => tracing::warn!(channel, %error, "unreadable bus message dropped"),
                            }
                        }
                        () = tx.closed() => return,
                    }
                }
                tracing::warn!(channel, "bus subscription lost, re-subscribing");
            }
            Err(error) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(error));
                    return;
                }
                tracing::debug!(channel, %error, "bus re-subscription failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

// ---------------------------------------------------------------- local

/// The in-process bus of `ferry up`: replies in a map woken by a `Notify`,
/// broadcasts over `tokio::sync::broadcast` (a subscriber more than 1,024
/// messages behind loses the oldest).
#[derive(Debug, Clone, Default)]
pub struct LocalBus {
    inner: Arc<LocalInner>,
}

#[derive(Debug, Default)]
struct LocalInner {
    replies: Mutex<HashMap<String, VecDeque<(Value, Instant)>>>,
    replied: Notify,
    channels: Mutex<HashMap<String, broadcast::Sender<Value>>>,
    /// Arrival times of rate-limited keys, since `started`.
    budgets: Mutex<HashMap<String, Duration>>,
    started: std::sync::OnceLock<Instant>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }

    fn take_reply(&self, key: &str) -> Option<Value> {
        let now = Instant::now();
        let mut replies = lock(&self.inner.replies);
        // Forget expired replies so unclaimed ones do not accumulate.
        replies.retain(|_, queue| {
            queue.retain(|(_, expires)| *expires > now);
            !queue.is_empty()
        });
        let queue = replies.get_mut(key)?;
        let value = queue.pop_front().map(|(value, _)| value);
        if queue.is_empty() {
            replies.remove(key);
        }
        value
    }

    fn sender(&self, channel: &str) -> broadcast::Sender<Value> {
        lock(&self.inner.channels)
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_BUFFER).0)
            .clone()
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn reply(&self, key: &str, value: &Value, ttl: Duration) -> Result<()> {
        lock(&self.inner.replies)
            .entry(key.to_owned())
            .or_default()
            .push_back((value.clone(), Instant::now() + ttl));
        self.inner.replied.notify_waiters();
        Ok(())
    }

    async fn wait_reply(&self, key: &str, timeout: Duration) -> Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inner.replied.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = self.take_reply(key) {
                return Ok(Some(value));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    async fn throttle(&self, key: &str, limit: RateLimit) -> Result<Option<Duration>> {
        let now = self.inner.started.get_or_init(Instant::now).elapsed();
        let mut budgets = lock(&self.inner.budgets);
        if budgets.len() > 10_000 {
            // Keys whose arrival time has passed are back to a full budget.
            budgets.retain(|_, tat| *tat > now);
        }
        match limit.step(budgets.get(key).copied(), now) {
            Ok(next) => {
                budgets.insert(key.to_owned(), next);
                Ok(None)
            }
            Err(wait) => Ok(Some(wait)),
        }
    }

    async fn publish(&self, channel: &str, value: &Value) -> Result<()> {
        // No subscriber is not an error: a broadcast reaches whoever listens.
        let _ = self.sender(channel).send(value.clone());
        Ok(())
    }

    async fn subscribe(&self, channel: &str) -> Result<BoxStream<'static, Value>> {
        let rx = self.sender(channel).subscribe();
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(value) => return Some((value, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }
}
