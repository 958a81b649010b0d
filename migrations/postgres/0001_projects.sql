-- projects: the aggregate root of the metadata store, one row per project.
--
-- ids are prefixed ULIDs (`proj_01J…`) compared byte by byte, hence the "C"
-- collation: the list's `uuid` tie-break sorts the same as on SQLite.
create table projects (
    uuid             text collate "C" not null,
    org_id           text collate "C" not null,
    name             text not null,
    description      text,
    -- lowercased name and description (domain::project::search_text), which
    -- the store rewrites on every insert and update; search is a LIKE on it
    search_text      text not null,
    connector_uuids  jsonb not null default '[]',
    metadata         jsonb,
    created_by       text not null,
    created_at       timestamptz not null,
    updated_at       timestamptz not null,
    last_executed_at timestamptz,
    status           text not null default 'draft',

    constraint projects_pkey primary key (uuid),
    constraint projects_status_check check (status in ('draft', 'active', 'archived')),
    constraint projects_connector_uuids_is_array check (jsonb_typeof(connector_uuids) = 'array')
);

-- the project list: one organization, sorted by a field then by uuid
create index projects_org_created_at_idx on projects (org_id, created_at, uuid);
create index projects_org_updated_at_idx on projects (org_id, updated_at, uuid);
create index projects_org_name_idx on projects (org_id, name collate "C", uuid);
