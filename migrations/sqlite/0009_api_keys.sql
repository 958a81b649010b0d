-- api_keys: an organization's service accounts. A key acts as the user
-- `svc_<uuid>` of `org_id` with `role`.
--
-- The key itself is never stored: `key_hash` is the lowercase hex sha-256 of
-- its text (the key has over 200 bits of entropy, so a fast hash is enough),
-- and `prefix` its first characters, for lists. A revoked key keeps its row
-- (`revoked_at`) so that lists show it. `last_used_at` is written at most
-- once a minute per key (a conditional update when the stored value is
-- older than that). Timestamps are rfc 3339 text in utc, as in 0001.
create table api_keys (
    uuid         text not null,
    org_id       text not null,
    name         text not null,
    role         text not null,
    prefix       text not null,
    key_hash     text not null,
    created_by   text not null,
    created_at   text not null,
    last_used_at text,
    expires_at   text,
    revoked_at   text,

    constraint api_keys_pkey primary key (uuid),
    -- authentication finds a key by its hash
    constraint api_keys_key_hash_key unique (key_hash),
    constraint api_keys_role_check check (role in ('admin', 'member'))
) strict;

-- the key list: one organization, oldest first, then by uuid
create index api_keys_org_created_at_idx on api_keys (org_id, created_at, uuid);
