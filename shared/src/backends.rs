//! The backends every role opens from the same settings: the metadata
//! store, the job queue, the event bus, the credential vault and the object
//! store of step results.

use std::sync::Arc;

use crate::config::{ConfigError, Settings, redact_url};
use crate::objects::ObjectTarget;
use crate::queue::{Bus, EmbeddedQueue, LocalBus, Queue, RedisBus, RedisQueue};
use crate::store::{self, Store};
use crate::vault::Vault;

/// The backends a role talks to.
#[derive(Clone)]
pub struct Backends {
    pub store: Arc<dyn Store>,
    pub queue: Arc<dyn Queue>,
    pub bus: Arc<dyn Bus>,
    pub vault: Arc<Vault>,
    pub objects: Arc<ObjectTarget>,
}

impl Backends {
    /// Opens the metadata store, the queue and the bus: Redis when
    /// FERRY_REDIS_URL is set, otherwise the embedded queue (only when the
    /// roles share one process, `single_process`, as in `ferry up`).
    pub async fn open(settings: &Settings, single_process: bool) -> Result<Backends, ConfigError> {
        let store = open_store(settings).await?;
        let (queue, bus): (Arc<dyn Queue>, Arc<dyn Bus>) = match &settings.redis_url {
            Some(url) => {
                let url = url.expose();
                let fail =
                    |e: crate::Error| ConfigError(format!("cannot reach Redis at {}: {e}", redact_url(url)));
                let queue = RedisQueue::connect(url, &settings.redis_prefix, settings.job_lease)
                    .await
                    .map_err(fail)?;
                let bus = RedisBus::connect(url, &settings.redis_prefix)
                    .await
                    .map_err(fail)?;
                (Arc::new(queue), Arc::new(bus))
            }
            None if single_process => {
                let path = settings.data_dir.join("queue.db");
                let queue = EmbeddedQueue::open(&path, settings.job_lease)
                    .await
                    .map_err(|e| {
                        ConfigError(format!("cannot open the embedded queue {}: {e}", path.display()))
                    })?;
                (Arc::new(queue), Arc::new(LocalBus::new()))
            }
            None => {
                return Err(ConfigError(
                    "FERRY_REDIS_URL is required when the roles run as separate processes (or run them together with `ferry up`)"
                        .into(),
                ));
            }
        };
        let objects = ObjectTarget::open(&settings.object_store_url).map_err(|e| {
            ConfigError(format!(
                "cannot open the object store {}: {e}",
                redact_url(&settings.object_store_url)
            ))
        })?;
        Ok(Backends {
            store,
            queue,
            bus,
            vault: Arc::new(Vault::new(settings.master_keys.clone())),
            objects: Arc::new(objects),
        })
    }
}

/// Connects to the metadata store; an unreachable one is a one-line error.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, ConfigError> {
    let url = settings.database_url.expose();
    store::connect(url).await.map_err(|error| {
        ConfigError(format!(
            "cannot open the metadata database at {}: {error}",
            redact_url(url)
        ))
    })
}
