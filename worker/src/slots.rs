//! A step's hold on one of its connector's fleet-wide slots
//! (`max_concurrent_steps`), over the store's [`SlotStore`] semaphore.
//!
//! [`acquire`] waits in line (the store orders waiters by when they started
//! waiting), polling with a short backoff, until the step holds a slot or
//! `cancel` fires. The returned [`SlotGuard`] renews the slot's lease every
//! third of it while the step runs and releases the slot when dropped; if
//! the worker dies, the lease simply expires and the slot frees itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_shared::store::{SlotState, Store};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The config field that caps a connector's concurrent steps fleet-wide.
pub const MAX_CONCURRENT_STEPS: &str = "max_concurrent_steps";

/// First and longest wait between two attempts to take a slot.
const FIRST_POLL: Duration = Duration::from_millis(50);
const LONGEST_POLL: Duration = Duration::from_millis(500);

/// The connector's cap, when its config sets one (an integer ≥ 1).
pub fn cap_of(config: &Map<String, Value>) -> Option<i64> {
    config
        .get(MAX_CONCURRENT_STEPS)
        .and_then(Value::as_i64)
        .filter(|cap| *cap >= 1)
}

/// Why an acquisition stopped without a slot.
#[derive(Debug)]
pub enum NotAcquired {
    /// `cancel` fired while waiting.
    Cancelled,
    /// The store failed.
    Store(ferry_shared::Error),
}

/// A held slot: renewed in the background, released on drop.
pub struct SlotGuard {
    store: Arc<dyn Store>,
    connector_uuid: String,
    holder: String,
    renewer: JoinHandle<()>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        let store = self.store.clone();
        let connector_uuid = std::mem::take(&mut self.connector_uuid);
        let holder = std::mem::take(&mut self.holder);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.release_slot(&connector_uuid, &holder).await {
                    tracing::warn!(%connector_uuid, %error, "releasing a connector slot failed; its lease will expire");
                }
            });
        }
    }
}

/// Takes one of the connector's `cap` slots for `holder` (one step run)
/// under a lease of `lease_for`, waiting in line while none is free.
/// `waiting` is called once, with the number of holders and of waiters
/// ahead, when the step first has to wait.
pub async fn acquire(
    store: Arc<dyn Store>,
    connector_uuid: &str,
    holder: &str,
    cap: i64,
    lease_for: Duration,
    cancel: &CancellationToken,
    mut waiting: impl FnMut(i64, i64),
) -> Result<SlotGuard, NotAcquired> {
    let lease = chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::seconds(30));
    let mut poll = FIRST_POLL;
    let mut waited = false;
    loop {
        let now = Utc::now();
        let state = store
            .acquire_slot(connector_uuid, holder, cap, now, now + lease)
            .await;
        match state {
            Ok(SlotState::Held) => break,
            Ok(SlotState::Waiting { holders, ahead }) => {
                if !waited {
                    waited = true;
                    waiting(holders, ahead);
                }
            }
            Err(error) => {
                let _ = store.release_slot(connector_uuid, holder).await;
                return Err(NotAcquired::Store(error));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = cancel.cancelled() => {
                let _ = store.release_slot(connector_uuid, holder).await;
                return Err(NotAcquired::Cancelled);
            }
        }
        poll = (poll * 2).min(LONGEST_POLL);
    }
    let renewer = {
        let store = store.clone();
        let connector_uuid = connector_uuid.to_owned();
        let holder = holder.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease_for / 3).await;
                match store
                    .renew_slot(&connector_uuid, &holder, Utc::now() + lease)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(%connector_uuid, "a connector slot's lease ended before its step did");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%connector_uuid, %error, "renewing a connector slot failed; retrying")
                    }
                }
            }
        })
    };
    Ok(SlotGuard {
        store,
        connector_uuid: connector_uuid.to_owned(),
        holder: holder.to_owned(),
        renewer,
    })
}
