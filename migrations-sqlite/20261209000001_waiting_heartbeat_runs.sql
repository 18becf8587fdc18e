-- The workers' sweep that times out heartbeat runs left `queued` or `running` too long reads
-- each state through its own small index instead of the whole table (see the Postgres
-- migration of the same name).
CREATE INDEX IF NOT EXISTS heartbeat_runs_queued ON heartbeat_runs (created_at)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS heartbeat_runs_running ON heartbeat_runs (started_at)
    WHERE status = 'running';
