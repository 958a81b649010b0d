//! Fleet-wide concurrency caps of connectors (`max_concurrent_steps`): a
//! lease-based semaphore in the store. A step takes one of the connector's
//! `cap` slots under a lease it renews while it runs and releases when it
//! ends; a dead worker's slot frees itself when the lease expires. Steps
//! that find no free slot queue in the order they started waiting, and only
//! the oldest waiters may take the slots that free up.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Claim;
use crate::error::Result;

/// Where a step stands after an attempt to take a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// The step holds one of the connector's slots.
    Held,
    /// Every slot is taken, or older waiters come first: `holders` steps
    /// hold a slot and `ahead` wait before this one.
    Waiting { holders: i64, ahead: i64 },
}

/// The connector slot semaphore.
#[async_trait]
pub trait SlotStore: Send + Sync + 'static {
    /// Takes one of `cap` slots of the connector for `holder` (one step run)
    /// until `until`, or queues it. Rows whose lease ended by `now` are
    /// dropped first. A holder that already holds a slot keeps it (its lease
    /// extended); a new waiter joins the queue at `now`, an old one keeps its
    /// place and extends its lease. A waiter takes a slot only when fewer
    /// than `cap` are held and fewer than `cap - held` waiters are older.
    /// Atomic across processes: of concurrent callers, never more than `cap`
    /// hold a slot.
    async fn acquire_slot(&self, claim: Claim<'_>, cap: i64) -> Result<SlotState>;

    /// Extends the lease of the holder's slot (or place in the queue);
    /// false when it has none any more (its lease ended and another took it).
    async fn renew_slot(&self, connector_uuid: &str, holder: &str, until: DateTime<Utc>) -> Result<bool>;

    /// Gives up the holder's slot or place in the queue.
    async fn release_slot(&self, connector_uuid: &str, holder: &str) -> Result<()>;

    /// How many steps hold a live slot of the connector at `now`.
    async fn held_slots(&self, connector_uuid: &str, now: DateTime<Utc>) -> Result<i64>;
}
