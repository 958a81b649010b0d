-- connector probes: the scheduler's periodic health checks are kept beside
-- the users' connection tests, in connector_tests, told apart by `source`
-- (`test` for a user's POST .../test, `probe` for a scheduled probe). A step
-- run is not written here: health counts steps from execution_steps, whose
-- config names the connector, so running a step costs no extra write.
alter table connector_tests add column source text not null default 'test'
    constraint connector_tests_source_check check (source in ('test', 'probe', 'step'));

-- a connector's latest probes, newest first (consecutive failures)
create index connector_tests_connector_source_idx
    on connector_tests (connector_uuid, source, tested_at);

-- a connector's execution steps started since a time, for the health's
-- query count (the expression is the store's step-to-connector expression,
-- so the count is an index range scan)
create index execution_steps_connector_started_at_idx
    on execution_steps (json_extract(config, '$.connector_uuid'), started_at)
    where started_at is not null;
