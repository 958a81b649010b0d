-- created_by_role: the organization role (`admin`) of the user who
-- executed, as their token said when the execution was admitted. Organization
-- admins act as owner on every connector of their organization without a
-- grant, so the worker's check that the executing user may still use each
-- step's connector needs it. Null means `member` (an explicit grant is
-- needed): an execution whose role was never recorded is checked the
-- strict way.
alter table executions add column created_by_role text
    constraint executions_created_by_role_check check (created_by_role in ('admin', 'member'));
