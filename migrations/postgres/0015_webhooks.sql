-- webhooks: an organization's subscriptions to Ferry's events, and the
-- outbox their deliveries are made from.
--
-- `events` is the json array of subscribed event types. The signing secret
-- and the extra headers are sealed together (aes-256-gcm under the master
-- key `secrets_key_id`, the webhook uuid as associated data), as connector
-- secrets are in 0004.
create table webhooks (
    uuid                     text collate "C" not null,
    org_id                   text collate "C" not null,
    url                      text not null,
    events                   text not null,
    description              text,
    enabled                  boolean not null,
    max_attempts             integer not null,
    initial_interval_seconds bigint not null,
    max_interval_seconds     bigint not null,
    secrets_key_id           text collate "C" not null,
    secrets_nonce            bytea not null,
    secrets_ciphertext       bytea not null,
    created_by               text not null,
    created_at               timestamptz not null,
    updated_at               timestamptz not null,

    constraint webhooks_pkey primary key (uuid)
);

-- the webhook list: one organization, oldest first, then by uuid
create index webhooks_org_created_at_idx on webhooks (org_id, created_at, uuid);

-- webhook_events: one row per event, written in the transaction of the
-- state change it reports. `body` is the exact json every delivery sends;
-- `event_id` is its `id` and every delivery's `webhook-id`. An event with a
-- `dedupe_key` is recorded at most once (a step a restarted worker repeats).
create table webhook_events (
    event_id   text collate "C" not null,
    org_id     text collate "C" not null,
    event_type text not null,
    dedupe_key text collate "C",
    body       text not null,
    created_at timestamptz not null,

    constraint webhook_events_pkey primary key (event_id),
    constraint webhook_events_dedupe_key_key unique (dedupe_key)
);

-- webhook_deliveries: one event to one webhook, fanned out with the event.
-- `attempt` counts claims (the fencing token of a try's result);
-- `claimed_until` is the live try's lease; `enqueued_at` when the
-- scheduler last enqueued its job (enqueued again after a grace, for a job
-- Redis lost).
create table webhook_deliveries (
    delivery_id     text collate "C" not null,
    webhook_uuid    text collate "C" not null,
    event_id        text collate "C" not null,
    status          text not null,
    attempt         integer not null default 0,
    next_attempt_at timestamptz not null,
    claimed_until   timestamptz,
    enqueued_at     timestamptz,
    created_at      timestamptz not null,

    constraint webhook_deliveries_pkey primary key (delivery_id),
    constraint webhook_deliveries_webhook_fkey foreign key (webhook_uuid)
        references webhooks (uuid) on delete cascade,
    constraint webhook_deliveries_event_fkey foreign key (event_id)
        references webhook_events (event_id) on delete cascade,
    constraint webhook_deliveries_status_check
        check (status in ('pending', 'delivered', 'failed', 'skipped'))
);

-- the sweep: pending deliveries by due time
create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at)
    where status = 'pending';
create index webhook_deliveries_webhook_idx on webhook_deliveries (webhook_uuid);
create index webhook_deliveries_event_idx on webhook_deliveries (event_id);

-- webhook_attempts: the delivery log, one row per try.
create table webhook_attempts (
    delivery_id text collate "C" not null,
    attempt     integer not null,
    status_code integer,
    ok          boolean not null,
    error       text,
    duration_ms bigint not null,
    created_at  timestamptz not null,

    constraint webhook_attempts_pkey primary key (delivery_id, attempt),
    constraint webhook_attempts_delivery_fkey foreign key (delivery_id)
        references webhook_deliveries (delivery_id) on delete cascade
);
