-- connectors: stored settings and sealed credentials of a user's database or
-- saas api.
--
-- `config` holds the public fields only; the secret fields live sealed
-- (aes-256-gcm under the master key `secrets_key_id`, the connector uuid as
-- associated data) in `secrets_nonce` / `secrets_ciphertext`. Grants use the
-- grants table with resource_type 'connector'; the store deletes them in the
-- same transaction as the connector.
create table connectors (
    uuid               text collate "C" not null,
    org_id             text collate "C" not null,
    connector_type     text not null,
    display_name       text not null,
    config             jsonb not null,
    secrets_key_id     text collate "C" not null,
    secrets_nonce      bytea not null,
    secrets_ciphertext bytea not null,
    -- bumped on every config or secret change; update is a compare-and-swap on it
    config_version     bigint not null,
    status             text not null default 'active',
    auth_type          text not null default 'credentials',
    created_by         text not null,
    created_at         timestamptz not null,
    updated_at         timestamptz not null,
    last_tested_at     timestamptz,
    last_test_status   text,
    disabled_at        timestamptz,
    disabled_by        text,
    disabled_reason    text,

    constraint connectors_pkey primary key (uuid),
    constraint connectors_status_check check (status in ('active', 'disabled', 'error')),
    constraint connectors_auth_type_check check (auth_type in ('credentials', 'oauth')),
    constraint connectors_last_test_status_check
        check (last_test_status is null or last_test_status in ('success', 'failed')),
    constraint connectors_config_is_object check (jsonb_typeof(config) = 'object')
);

-- the connector list: one organization, oldest first, then by uuid
create index connectors_org_created_at_idx on connectors (org_id, created_at, uuid);
-- key rotation: the connectors sealed under another key
create index connectors_secrets_key_id_idx on connectors (secrets_key_id);

-- connector_tests: the history of connection tests, for health reporting.
--
-- No foreign key: keep the history independent of the connector row (a
-- test may be recorded for a connector that no longer exists); the store
-- deletes a connector's history in the same transaction as the connector.
create table connector_tests (
    id             bigint generated always as identity,
    connector_uuid text collate "C" not null,
    tested_at      timestamptz not null,
    success        boolean not null,
    latency_ms     bigint not null,
    error_type     text,
    error_message  text,

    constraint connector_tests_pkey primary key (id)
);

-- one connector's history since a time, oldest first
create index connector_tests_connector_tested_at_idx on connector_tests (connector_uuid, tested_at);
