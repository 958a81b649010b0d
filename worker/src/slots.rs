//! A step's hold on one of its connector's fleet-wide slots
//! (`max_concurrent_steps`), over the store's [`SlotStore`] semaphore.
//!
//! [`acquire`] waits in line (the store orders waiters by when they started
//! waiting), polling with a short backoff, until the step holds a slot or
//! `cancel` fires. The returned [`SlotGuard`] renews the slot's lease every
//! third of it while the step runs and releases the slot when dropped; if
//! the worker dies, the lease simply expires and the slot frees itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use ferry_shared::store::{Claim, SlotState, Store};
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

/// What `acquire`'s `waiting` callback does about a new place in line
/// (records it, for one), awaited before the next attempt.
pub type Waited = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

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
    /// The step waited in line before it got the slot.
    pub waited: bool,
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

/// Takes one of the connector's `cap` slots for `holder` (one step run,
/// made unique per call)
/// under a lease of `lease_for`, waiting in line while none is free.
/// `waiting` is called with the number of holders and of waiters ahead
/// whenever the step finds itself waiting at a new place in line.
pub async fn acquire(
    store: Arc<dyn Store>,
    connector_uuid: &str,
    holder: &str,
    cap: i64,
    lease_for: Duration,
    cancel: &CancellationToken,
    mut waiting: impl FnMut(i64, i64) -> Waited,
) -> Result<SlotGuard, NotAcquired> {
    // Each acquisition holds under a name of its own: a try of the step
    // that runs again must not find (and then lose to the late release of)
    // the slot of the try before it.
    static ACQUISITIONS: AtomicU64 = AtomicU64::new(0);
    let holder = &format!("{holder}#{}", ACQUISITIONS.fetch_add(1, Ordering::Relaxed));
    let lease = chrono::Duration::from_std(lease_for).unwrap_or(chrono::Duration::seconds(30));
    let mut poll = FIRST_POLL;
    let mut place = None;
    loop {
        let now = Utc::now();
        let claim = Claim {
            connector_uuid,
            holder,
            now,
            until: now + lease,
        };
        let state = store.acquire_slot(claim, cap).await;
        match state {
            Ok(SlotState::Held) => break,
            Ok(SlotState::Waiting { holders, ahead }) => {
                if place != Some((holders, ahead)) {
                    place = Some((holders, ahead));
                    waiting(holders, ahead).await;
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
        waited: place.is_some(),
        store,
        connector_uuid: connector_uuid.to_owned(),
        holder: holder.to_owned(),
        renewer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
        let store = ferry_shared::store::SqliteStore::connect(&url)
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        Arc::new(store)
    }

    #[tokio::test]
    async fn a_cancelled_waiter_stops_waiting_and_gives_up_its_place_in_line() {
        let dir = tempfile::TempDir::new().expect("temporary directory");
        let store = sqlite_store(&dir).await;
        let lease = Duration::from_secs(30);
        let never = CancellationToken::new();
        let first = acquire(store.clone(), "conn_a", "first", 1, lease, &never, |_, _| {
            Box::pin(async {})
        })
        .await
        .expect("a free slot is taken at once");

        let cancel = CancellationToken::new();
        let mut waited = None;
        let waiter = {
            let cancel = cancel.clone();
            async move {
                let outcome = acquire(
                    store.clone(),
                    "conn_a",
                    "second",
                    1,
                    lease,
                    &cancel,
                    |holders, ahead| {
                        waited = Some((holders, ahead));
                        Box::pin(async {})
                    },
                )
                .await;
                (outcome, waited)
            }
        };
        let canceller = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        };
        let ((outcome, waited), ()) = tokio::join!(waiter, canceller);
        assert!(
            matches!(outcome, Err(NotAcquired::Cancelled)),
            "the waiter stops when cancelled"
        );
        assert_eq!(waited, Some((1, 0)), "the waiter was told why it waits");

        // Its place is gone: once the slot is released, a later step takes it.
        let store = sqlite_store(&dir).await;
        drop(first);
        let third = tokio::time::timeout(
            Duration::from_secs(5),
            acquire(store.clone(), "conn_a", "third", 1, lease, &never, |_, _| {
                Box::pin(async {})
            }),
        )
        .await;
        assert!(
            matches!(third, Ok(Ok(_))),
            "the released slot goes to the next step, not to the cancelled waiter"
        );
        assert_eq!(store.held_slots("conn_a", Utc::now()).await.expect("count"), 1);
    }
}
