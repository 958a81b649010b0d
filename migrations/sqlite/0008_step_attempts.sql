-- attempts: how many times a worker started the step. A transient failure
-- in the middle of a step (a connection reset, a timeout, a serialization
-- failure, a 503) starts it again, up to the worker's limit; a resume after
-- a lost worker counts too. Steps that already ran count once.
alter table execution_steps add column attempts integer not null default 0
    constraint execution_steps_attempts_not_negative check (attempts >= 0);
update execution_steps set attempts = 1 where started_at is not null;
