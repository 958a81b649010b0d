-- schedules: a project's cron schedule, kept on its row.
--
-- `schedule` is the JSON object the API shows ({cron, timezone, parameters,
-- enabled}); `schedule_set_by` the user who last set it, whom the scheduled
-- executions run as, with `schedule_set_role`; `next_run_at` the next tick, null when there is no
-- schedule, it is disabled, or it never fires again. The scheduler claims a
-- tick by moving `next_run_at` forward with a conditional update on the
-- value it read, so each tick fires at most once however many schedulers
-- run.
alter table projects add column schedule jsonb;
alter table projects add column schedule_set_by text;
-- the organization role (`admin` or `member`) of that user when they set it
alter table projects add column schedule_set_role text;
alter table projects add column next_run_at timestamptz;
alter table projects add constraint projects_schedule_is_object
    check (schedule is null or jsonb_typeof(schedule) = 'object');

-- the due schedules, earliest first
create index projects_next_run_at_idx on projects (next_run_at) where next_run_at is not null;
