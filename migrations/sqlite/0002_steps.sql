-- steps: the ordered units of work of a project.
--
-- `position` is the 1-based order. It has no unique constraint, so that
-- shifting a range of steps is one plain UPDATE; the store keeps positions
-- contiguous inside each write transaction (BEGIN IMMEDIATE).
create table steps (
    step_id      text not null,
    project_uuid text not null,
    name         text not null,
    step_type    text not null,
    position     integer not null,
    config       text not null,
    dependencies text not null default '[]',
    created_at   text not null,
    updated_at   text not null,

    constraint steps_pkey primary key (step_id),
    constraint steps_project_fk foreign key (project_uuid)
        references projects (uuid) on delete cascade,
    constraint steps_position_check check (position >= 1),
    constraint steps_config_is_json check (json_valid(config)),
    constraint steps_dependencies_is_array check (json_type(dependencies) = 'array')
) strict;

-- a project's steps in order (and the foreign key's lookups on delete)
create index steps_project_position_idx on steps (project_uuid, position);
