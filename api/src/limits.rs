//! Bounds on requests that hold resources for long: server-sent event
//! streams (a maximum lifetime, and a number open at once per user) and
//! connection tests (a number running at once per organization).
//!
//! The counts are kept by each API process: with several replicas behind a
//! load balancer, a user may hold up to the limit on each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The configured bounds; a count of 0 disables that bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// An event stream ends (cleanly: the response body is complete) after
    /// this long; the client reconnects if it still wants events.
    pub sse_max_lifetime: Duration,
    /// Event streams one user of an organization may hold open at once;
    /// one more is 429 `rate_limited`.
    pub sse_streams_per_user: usize,
    /// Connection tests (create, PATCH, `POST .../test`) one organization
    /// may run at once; one more is 429 `rate_limited` with Retry-After.
    pub connection_tests_per_org: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sse_max_lifetime: Duration::from_secs(3600),
            sse_streams_per_user: 10,
            connection_tests_per_org: 4,
        }
    }
}

/// How long a caller refused a slot is told to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Counters of slots in use, by key.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    in_use: Arc<Mutex<HashMap<String, usize>>>,
}

impl Slots {
    /// Takes one of `max` slots of `key`; None when all are taken. The slot
    /// is given back when the returned guard is dropped. `max` 0 means
    /// unbounded.
    pub fn try_take(&self, key: &str, max: usize) -> Option<Slot> {
        let mut in_use = self
            .in_use
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = in_use.entry(key.to_owned()).or_insert(0);
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Slots of `key` in use now.
    pub fn in_use(&self, key: &str) -> usize {
        let in_use = self
            .in_use
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        in_use.get(key).copied().unwrap_or(0)
    }
}

/// One slot taken; dropping it gives it back.
#[derive(Debug)]
pub struct Slot {
    slots: Slots,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_use = self
            .slots
            .in_use
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = in_use.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_use.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Slots;

    #[test]
    fn slots_are_bounded_per_key_and_given_back_on_drop() {
        let slots = Slots::default();
        let first = slots.try_take("a", 2);
        let second = slots.try_take("a", 2);
        assert!(first.is_some() && second.is_some());
        assert!(slots.try_take("a", 2).is_none());
        assert!(slots.try_take("b", 2).is_some(), "keys are separate");
        drop(first);
        assert_eq!(slots.in_use("a"), 1);
        assert!(slots.try_take("a", 2).is_some());
        assert!(slots.try_take("a", 0).is_some(), "0 is unbounded");
    }
}
