//! The connector slots part of the store conformance suite: of many
//! concurrent acquirers never more than the cap hold a slot; a dead
//! holder's slot frees itself when its lease passes; waiters take freed
//! slots in the order they started waiting. Instantiated for both backends
//! by its own `conformance!` (declared in the parent module).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ferry_shared::store::{Claim, SlotState, Store};

use super::{with_postgres, with_sqlite};

conformance!(
    of_many_concurrent_acquirers_exactly_the_cap_take_a_slot,
    acquirers_looping_concurrently_never_hold_more_slots_than_the_cap,
    a_dead_holders_slot_frees_itself_when_its_lease_passes,
    waiters_take_freed_slots_in_the_order_they_started_waiting,
);

const CONNECTOR: &str = "conn_capped";

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0)
        .single()
        .expect("valid time")
        + Duration::seconds(seconds)
}

/// A claim made at `now` for 30 seconds.
fn claim<'a>(connector_uuid: &'a str, holder: &'a str, now: DateTime<Utc>) -> Claim<'a> {
    Claim {
        connector_uuid,
        holder,
        now,
        until: now + Duration::seconds(30),
    }
}

async fn acquire(store: &Arc<dyn Store>, holder: &str, cap: i64, now: i64) -> SlotState {
    store
        .acquire_slot(claim(CONNECTOR, holder, at(now)), cap)
        .await
        .expect("acquire")
}

async fn of_many_concurrent_acquirers_exactly_the_cap_take_a_slot(store: Arc<dyn Store>) {
    let now = Utc::now();
    let tries = (0..24).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .acquire_slot(claim(CONNECTOR, &format!("step_{i:02}"), now), 3)
                .await
        })
    });
    let mut held = 0;
    for attempt in tries.collect::<Vec<_>>() {
        if attempt.await.expect("join").expect("acquire") == SlotState::Held {
            held += 1;
        }
    }
    assert_eq!(held, 3, "three of 24 concurrent acquirers hold a slot");
    assert_eq!(store.held_slots(CONNECTOR, now).await.expect("count"), 3);
    // A slot taken elsewhere does not count against another connector.
    assert_eq!(
        store
            .acquire_slot(claim("conn_other", "step_00", now), 1)
            .await
            .expect("acquire"),
        SlotState::Held
    );
}

async fn acquirers_looping_concurrently_never_hold_more_slots_than_the_cap(store: Arc<dyn Store>) {
    let cap = 2;
    let inside = Arc::new(AtomicI64::new(0));
    let most = Arc::new(AtomicI64::new(0));
    let workers = (0..12).map(|i| {
        let store = store.clone();
        let inside = inside.clone();
        let most = most.clone();
        tokio::spawn(async move {
            let holder = format!("step_{i:02}");
            loop {
                let now = Utc::now();
                let state = store
                    .acquire_slot(claim(CONNECTOR, &holder, now), cap)
                    .await
                    .expect("acquire");
                if state == SlotState::Held {
                    break;
                }
                tokio::time::sleep(StdDuration::from_millis(5)).await;
            }
            let now_inside = inside.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now_inside, Ordering::SeqCst);
            let held = store.held_slots(CONNECTOR, Utc::now()).await.expect("count");
            assert!(held <= cap, "{held} slots held with a cap of {cap}");
            tokio::time::sleep(StdDuration::from_millis(20)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            store.release_slot(CONNECTOR, &holder).await.expect("release");
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await.expect("every acquirer eventually holds a slot");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= cap, "{most} held at once with a cap of {cap}");
    assert_eq!(store.held_slots(CONNECTOR, Utc::now()).await.expect("count"), 0);
}

async fn a_dead_holders_slot_frees_itself_when_its_lease_passes(store: Arc<dyn Store>) {
    // The holder's lease runs to 30 s; it never renews nor releases.
    assert_eq!(acquire(&store, "dead", 1, 0).await, SlotState::Held);
    assert_eq!(
        acquire(&store, "alive", 1, 10).await,
        SlotState::Waiting { holders: 1, ahead: 0 }
    );
    assert_eq!(store.held_slots(CONNECTOR, at(29)).await.expect("count"), 1);
    assert_eq!(store.held_slots(CONNECTOR, at(30)).await.expect("count"), 0);
    // Once the lease has passed the waiter takes the slot, and the dead
    // holder can no longer renew it.
    assert_eq!(acquire(&store, "alive", 1, 30).await, SlotState::Held);
    assert!(!store.renew_slot(CONNECTOR, "dead", at(90)).await.expect("renew"));
    // A renewed slot outlives its first lease.
    assert!(
        store
            .renew_slot(CONNECTOR, "alive", at(120))
            .await
            .expect("renew")
    );
    assert_eq!(
        acquire(&store, "late", 1, 100).await,
        SlotState::Waiting { holders: 1, ahead: 0 }
    );
}

async fn waiters_take_freed_slots_in_the_order_they_started_waiting(store: Arc<dyn Store>) {
    assert_eq!(acquire(&store, "a", 1, 0).await, SlotState::Held);
    // Holder names sort against arrival order, so the order is by time.
    assert_eq!(
        acquire(&store, "z", 1, 1).await,
        SlotState::Waiting { holders: 1, ahead: 0 }
    );
    assert_eq!(
        acquire(&store, "m", 1, 2).await,
        SlotState::Waiting { holders: 1, ahead: 1 }
    );
    assert_eq!(
        acquire(&store, "b", 1, 3).await,
        SlotState::Waiting { holders: 1, ahead: 2 }
    );
    store.release_slot(CONNECTOR, "a").await.expect("release");
    // The slot is free, but only the oldest waiter may take it.
    assert_eq!(
        acquire(&store, "b", 1, 4).await,
        SlotState::Waiting { holders: 0, ahead: 2 }
    );
    assert_eq!(
        acquire(&store, "m", 1, 4).await,
        SlotState::Waiting { holders: 0, ahead: 1 }
    );
    assert_eq!(acquire(&store, "z", 1, 4).await, SlotState::Held);
    // Polling again keeps a waiter's place and a holder's slot.
    assert_eq!(acquire(&store, "z", 1, 5).await, SlotState::Held);
    assert_eq!(
        acquire(&store, "b", 1, 5).await,
        SlotState::Waiting { holders: 1, ahead: 1 }
    );
    store.release_slot(CONNECTOR, "z").await.expect("release");
    assert_eq!(
        acquire(&store, "b", 1, 6).await,
        SlotState::Waiting { holders: 0, ahead: 1 }
    );
    assert_eq!(acquire(&store, "m", 1, 6).await, SlotState::Held);
    // A larger cap lets the oldest waiters in together: with two slots
    // free, the two oldest waiters may take them, whoever polls first; a
    // third must wait for the older one that has not taken its slot yet.
    assert_eq!(acquire(&store, "c", 3, 7).await, SlotState::Held);
    assert_eq!(
        acquire(&store, "d", 3, 8).await,
        SlotState::Waiting { holders: 2, ahead: 1 }
    );
    assert_eq!(acquire(&store, "b", 3, 8).await, SlotState::Held);
    assert_eq!(
        acquire(&store, "d", 3, 9).await,
        SlotState::Waiting { holders: 3, ahead: 0 }
    );
    assert_eq!(store.held_slots(CONNECTOR, at(9)).await.expect("count"), 3);
}
