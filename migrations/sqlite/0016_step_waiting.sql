-- Why a running step is waiting (for a slot of its connector's
-- max_concurrent_steps), shown as the step's `waiting` status; null once it
-- proceeds.
alter table execution_steps add column waiting_reason text;
