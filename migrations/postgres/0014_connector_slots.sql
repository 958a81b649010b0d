-- connector_slots: the fleet-wide semaphore behind a connector's
-- `max_concurrent_steps`. One row per step that holds or waits for one of
-- the connector's slots, in any worker: `held` says which; `waiting_since`
-- orders the waiters (oldest first, then by holder), and only the oldest
-- waiters may take free slots; `expires_at` is the row's lease, renewed by
-- its worker while the step runs or waits, so that a dead worker's slot
-- (or place in the queue) frees itself once it passes.
--
-- Every acquisition runs in one transaction serialized per connector by a
-- transaction-scoped advisory lock (see shared/src/store/sql/slots.rs).
-- No foreign key: a deleted connector's rows only expire.
create table connector_slots (
    connector_uuid text collate "C" not null,
    holder         text collate "C" not null,
    waiting_since  timestamptz not null,
    held           boolean not null default false,
    expires_at     timestamptz not null,

    constraint connector_slots_pkey primary key (connector_uuid, holder)
);
