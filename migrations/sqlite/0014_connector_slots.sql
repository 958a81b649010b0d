-- connector_slots: the fleet-wide semaphore behind a connector's
-- `max_concurrent_steps`. One row per step that holds or waits for one of
-- the connector's slots, in any worker: `held` (0/1) says which;
-- `waiting_since` orders the waiters (oldest first, then by holder), and
-- only the oldest waiters may take free slots; `expires_at` is the row's
-- lease, renewed by its worker while the step runs or waits, so that a dead
-- worker's slot (or place in the queue) frees itself once it passes.
--
-- Every acquisition runs in one `BEGIN IMMEDIATE` transaction, which holds
-- the database's write lock (see shared/src/store/sql/slots.rs).
-- No foreign key: a deleted connector's rows only expire. Timestamps are
-- rfc 3339 text in utc, as in 0001.
create table connector_slots (
    connector_uuid text not null,
    holder         text not null,
    waiting_since  text not null,
    held           integer not null default 0,
    expires_at     text not null,

    constraint connector_slots_pkey primary key (connector_uuid, holder)
) strict;
