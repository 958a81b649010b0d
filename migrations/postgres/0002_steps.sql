-- steps: the ordered units of work of a project.
--
-- `position` is the 1-based order. It has no unique constraint, so that
-- shifting a range of steps is one plain UPDATE; the store keeps positions
-- contiguous inside each write transaction.
create table steps (
    step_id      text collate "C" not null,
    project_uuid text collate "C" not null,
    name         text not null,
    step_type    text not null,
    position     integer not null,
    config       jsonb not null,
    dependencies jsonb not null default '[]',
    created_at   timestamptz not null,
    updated_at   timestamptz not null,

    constraint steps_pkey primary key (step_id),
    constraint steps_project_fk foreign key (project_uuid)
        references projects (uuid) on delete cascade,
    constraint steps_position_check check (position >= 1),
    constraint steps_dependencies_is_array check (jsonb_typeof(dependencies) = 'array')
);

-- a project's steps in order (and the foreign key's lookups on delete)
create index steps_project_position_idx on steps (project_uuid, position);
