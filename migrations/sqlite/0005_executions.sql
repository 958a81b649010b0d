-- executions: one run of a project's steps, and the per-step record of how
-- it went. The store is the truth about executions; a queued job is only a
-- wake-up.
--
-- At most one execution of a project is in progress (queued, running or
-- cancelling): the partial unique index executions_one_active_per_project
-- enforces it, so two concurrent execute calls cannot both succeed.
--
-- `attempt` is the fencing token: taking an execution bumps it, and every
-- later write by that worker is conditioned on it. `lease_owner` and
-- `lease_expires_at` say who holds the execution until when; both are null
-- when nobody does (queued, or terminal). Timestamps are rfc 3339 text in
-- utc, as in 0001, so lease comparisons with a bound time compare text.
-- `notify_on_completion` is 0 or 1 (strict tables have no boolean type).
create table executions (
    execution_id         text not null,
    project_uuid         text not null,
    org_id               text not null,
    status               text not null default 'queued',
    trigger              text not null default 'api',
    parameters           text not null default '{}',
    notify_on_completion integer not null default 0,
    created_by           text not null,
    created_at           text not null,
    started_at           text,
    completed_at         text,
    attempt              integer not null default 0,
    lease_owner          text,
    lease_expires_at     text,

    constraint executions_pkey primary key (execution_id),
    constraint executions_project_fk foreign key (project_uuid)
        references projects (uuid) on delete cascade,
    constraint executions_status_check
        check (status in ('queued', 'running', 'cancelling', 'completed', 'failed', 'cancelled')),
    constraint executions_trigger_check check (trigger in ('api', 'schedule')),
    constraint executions_parameters_is_object check (json_type(parameters) = 'object'),
    constraint executions_notify_on_completion_check check (notify_on_completion in (0, 1)),
    constraint executions_attempt_check check (attempt >= 0)
) strict;

-- one execution in progress per project
create unique index executions_one_active_per_project on executions (project_uuid)
    where status in ('queued', 'running', 'cancelling');
-- a project's executions, newest first (and the foreign key's lookups on delete)
create index executions_project_created_at_idx on executions (project_uuid, created_at desc, execution_id desc);
-- the reaper: executions in progress by lease expiry
create index executions_status_lease_idx on executions (status, lease_expires_at);

-- execution_steps: the steps of an execution, snapshotted when it was
-- created (name, type, config), with each one's run.
create table execution_steps (
    execution_id   text not null,
    step_id        text not null,
    -- the 1-based order of the step in the execution
    position       integer not null,
    name           text not null,
    step_type      text not null,
    config         text not null,
    status         text not null default 'pending',
    started_at     text,
    completed_at   text,
    rows_processed integer not null default 0,
    bytes_written  integer not null default 0,
    -- object url of the step's parquet result, once uploaded
    output_file    text,
    error_type     text,
    error_message  text,

    constraint execution_steps_pkey primary key (execution_id, step_id),
    constraint execution_steps_execution_fk foreign key (execution_id)
        references executions (execution_id) on delete cascade,
    constraint execution_steps_position_check check (position >= 1),
    constraint execution_steps_status_check
        check (status in ('pending', 'running', 'completed', 'failed', 'skipped', 'cancelled')),
    constraint execution_steps_config_is_json check (json_valid(config)),
    constraint execution_steps_counts_check check (rows_processed >= 0 and bytes_written >= 0)
) strict;
