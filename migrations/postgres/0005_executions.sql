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
-- when nobody does (queued, or terminal).
create table executions (
    execution_id         text collate "C" not null,
    project_uuid         text collate "C" not null,
    org_id               text collate "C" not null,
    status               text not null default 'queued',
    trigger              text not null default 'api',
    parameters           jsonb not null default '{}',
    notify_on_completion boolean not null default false,
    created_by           text not null,
    created_at           timestamptz not null,
    started_at           timestamptz,
    completed_at         timestamptz,
    attempt              bigint not null default 0,
    lease_owner          text,
    lease_expires_at     timestamptz,

    constraint executions_pkey primary key (execution_id),
    constraint executions_project_fk foreign key (project_uuid)
        references projects (uuid) on delete cascade,
    constraint executions_status_check
        check (status in ('queued', 'running', 'cancelling', 'completed', 'failed', 'cancelled')),
    constraint executions_trigger_check check (trigger in ('api', 'schedule')),
    constraint executions_parameters_is_object check (jsonb_typeof(parameters) = 'object'),
    constraint executions_attempt_check check (attempt >= 0)
);

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
    execution_id   text collate "C" not null,
    step_id        text collate "C" not null,
    -- the 1-based order of the step in the execution
    position       integer not null,
    name           text not null,
    step_type      text not null,
    config         jsonb not null,
    status         text not null default 'pending',
    started_at     timestamptz,
    completed_at   timestamptz,
    rows_processed bigint not null default 0,
    bytes_written  bigint not null default 0,
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
    constraint execution_steps_counts_check check (rows_processed >= 0 and bytes_written >= 0)
);
