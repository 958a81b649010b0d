-- projects: the aggregate root of the metadata store, one row per project.
--
-- Timestamps are RFC 3339 text in UTC as sqlx writes them (`…+00:00`, with
-- 0, 3 or 6 fractional digits); such strings sort chronologically. JSON is
-- text. Text compares byte by byte (BINARY), as PostgreSQL's "C" collation.
create table projects (
    uuid             text not null,
    org_id           text not null,
    name             text not null,
    description      text,
    -- lowercased name and description (domain::project::search_text), which
    -- the store rewrites on every insert and update; search is a LIKE on it
    search_text      text not null,
    connector_uuids  text not null default '[]',
    metadata         text,
    created_by       text not null,
    created_at       text not null,
    updated_at       text not null,
    last_executed_at text,
    status           text not null default 'draft',

    constraint projects_pkey primary key (uuid),
    constraint projects_status_check check (status in ('draft', 'active', 'archived')),
    constraint projects_connector_uuids_is_array check (json_type(connector_uuids) = 'array'),
    constraint projects_metadata_is_json check (metadata is null or json_valid(metadata))
) strict;

-- the project list: one organization, sorted by a field then by uuid
create index projects_org_created_at_idx on projects (org_id, created_at, uuid);
create index projects_org_updated_at_idx on projects (org_id, updated_at, uuid);
create index projects_org_name_idx on projects (org_id, name, uuid);
