//! The Redis connections the queue and the bus share the handling of: the
//! client with its shared multiplexed connection (reconnecting with
//! backoff), a command or a pipeline run on it, and the small pool of
//! dedicated connections that blocking commands (`BLPOP`, `XREADGROUP …
//! BLOCK`) run on so that they never hold up the shared one.

use std::sync::Mutex;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use ::redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline, RedisError};

use super::{is_connection_error, lock, redis_error};
use crate::{Error, Result};

/// Opens a client for `url` and its shared connection: 2 s to connect,
/// 10 s per answer, up to 3 reconnects 50 ms to 1 s apart. A malformed URL
/// is a validation error of `redis_url`; a Redis that does not answer is
/// [`Error::Unavailable`].
pub(super) async fn open(url: &str) -> Result<(Client, ConnectionManager)> {
    let client =
        Client::open(url).map_err(|_| Error::validation("redis_url", "the Redis URL is malformed"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(10)))
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    let conn = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(|error| redis_error(&error))?;
    Ok((client, conn))
}

/// A command or a pipeline, retried the same way by its caller.
#[derive(Clone, Copy)]
pub(super) enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

impl Request<'_> {
    /// Runs the request once on `conn`.
    pub(super) async fn run<T: FromRedisValue>(
        self,
        conn: &mut ConnectionManager,
    ) -> std::result::Result<T, RedisError> {
        match self {
            Request::Cmd(cmd) => cmd.query_async(conn).await,
            Request::Pipe(pipe) => pipe.query_async(conn).await,
        }
    }
}

/// Dedicated connections for blocking commands, each used by one command at
/// a time and kept for reuse while healthy (up to `max_idle` idle ones).
pub(super) struct Blocking {
    client: Client,
    idle: Mutex<Vec<MultiplexedConnection>>,
    max_idle: usize,
}

impl Blocking {
    pub(super) fn new(client: Client, max_idle: usize) -> Self {
        Blocking {
            client,
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// Runs the blocking `cmd` on a connection of its own. A command still
    /// unanswered after `limit` (its own timeout plus some slack) means the
    /// connection is dead: a timed-out I/O error, which
    /// [`is_connection_error`] counts as a connection failure. The
    /// connection is kept for the next command unless it failed.
    pub(super) async fn query<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        limit: Duration,
    ) -> std::result::Result<T, RedisError> {
        let mut conn = self.take().await?;
        match tokio::time::timeout(limit, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(reply)) => {
                self.give_back(conn);
                Ok(reply)
            }
            Ok(Err(error)) => {
                if !is_connection_error(&error) {
                    self.give_back(conn);
                }
                Err(error)
            }
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "blocking command timed out",
            ))),
        }
    }

    async fn take(&self) -> std::result::Result<MultiplexedConnection, RedisError> {
        if let Some(conn) = lock(&self.idle).pop() {
            return Ok(conn);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    fn give_back(&self, conn: MultiplexedConnection) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}
