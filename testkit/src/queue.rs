//! Queue backends under test: a fresh key prefix on the shared Redis, a
//! private `redis-server` a test may restart, or an embedded SQLite queue
//! file in a temporary directory; each test's Redis keys are deleted after
//! it, whether it passed or panicked.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ferry_shared::queue::{EmbeddedQueue, Queue, RedisQueue};
use tempfile::TempDir;

use crate::redis::PrivateRedis;

pub enum Storage {
    Redis {
        url: String,
        prefix: String,
        private: Option<PrivateRedis>,
    },
    Embedded {
        dir: TempDir,
    },
}

/// One backend under test: opens queue objects over the same storage and
/// restarts that storage.
pub struct Harness {
    pub storage: Storage,
}

impl Harness {
    /// A fresh key prefix on the shared Redis.
    pub fn redis() -> Self {
        Harness::redis_at(crate::redis::URL)
    }

    /// A fresh key prefix on the Redis at `url`.
    pub fn redis_at(url: &str) -> Self {
        Harness {
            storage: Storage::Redis {
                url: url.to_owned(),
                prefix: unique_prefix(),
                private: None,
            },
        }
    }

    pub async fn private_redis() -> Self {
        let server = PrivateRedis::start().await;
        Harness {
            storage: Storage::Redis {
                url: server.url(),
                prefix: unique_prefix(),
                private: Some(server),
            },
        }
    }

    pub fn embedded() -> Self {
        Harness {
            storage: Storage::Embedded {
                dir: TempDir::new().expect("temporary directory"),
            },
        }
    }

    pub async fn open(&self, lease: Duration) -> Arc<dyn Queue> {
        match &self.storage {
            Storage::Redis { url, prefix, .. } => Arc::new(
                RedisQueue::connect(url, prefix, lease)
                    .await
                    .expect("Redis must be running at 127.0.0.1:6379"),
            ),
            Storage::Embedded { dir } => Arc::new(
                EmbeddedQueue::open(&dir.path().join("queue.db"), lease)
                    .await
                    .expect("open the queue file"),
            ),
        }
    }

    /// Whether jobs survive a restart (the private Redis runs without
    /// persistence, as Ferry's Redis may).
    pub fn durable(&self) -> bool {
        matches!(self.storage, Storage::Embedded { .. })
    }

    /// Redis: kills the private server and starts it again empty. Embedded:
    /// nothing to do beyond the caller dropping and reopening the queue.
    pub async fn restart(&mut self) {
        if let Storage::Redis {
            private: Some(server),
            ..
        } = &mut self.storage
        {
            server.restart().await;
        }
    }

    /// Deletes the test's keys from the shared Redis.
    pub async fn cleanup(&self) {
        if let Storage::Redis {
            url,
            prefix,
            private: None,
        } = &self.storage
        {
            crate::redis::delete_keys(url, &[format!("{{{prefix}:*"), format!("{prefix}:*")]).await;
        }
    }
}

pub fn unique_prefix() -> String {
    crate::redis::unique_prefix("test-queue")
}

/// Runs `test` on a queue with `lease` over `harness`, then cleans up,
/// whether the test passed or panicked.
pub async fn with_queue<F, Fut>(harness: Harness, lease: Duration, test: F)
where
    F: FnOnce(Arc<dyn Queue>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let queue = harness.open(lease).await;
    let outcome = tokio::spawn(test(queue)).await;
    harness.cleanup().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

pub async fn with_harness<F, Fut>(harness: Harness, test: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(test(harness)).await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}
