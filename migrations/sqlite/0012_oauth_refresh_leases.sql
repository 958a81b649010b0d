-- oauth_refresh_leases: one row per oauth connector whose tokens the
-- scheduler keeps fresh, with the non-secret expiry of its access token and
-- the lease that lets one refresher at a time spend its refresh token.
--
-- `config_version` is the connector version whose sealed tokens
-- `token_expires_at` was read from: a connector whose version moved (a new
-- authorization, a refresh through the api, a config edit) is read again.
-- The lease is taken by a conditional upsert (free, expired, or already
-- ours) and released by its holder; `failures` and `retry_at` back off
-- transient refresh failures; `last_error` says why the last refresh failed
-- (never a token). Timestamps are rfc 3339 text in utc, as in 0001.
create table oauth_refresh_leases (
    connector_uuid   text not null,
    config_version   integer,
    token_expires_at text,
    lease_holder     text,
    lease_until      text,
    failures         integer not null default 0,
    retry_at         text,
    last_error       text,

    constraint oauth_refresh_leases_pkey primary key (connector_uuid),
    constraint oauth_refresh_leases_connector_fkey foreign key (connector_uuid)
        references connectors (uuid) on delete cascade
) strict;

-- the scheduler's scan: tokens expiring soonest first
create index oauth_refresh_leases_expiry_idx on oauth_refresh_leases (token_expires_at);
