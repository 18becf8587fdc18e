-- The workers' sweep that times out heartbeat runs left `queued` or `running` too long
-- (`NEXUS_HEARTBEAT_TIMEOUT_SECS`) runs every few seconds and had no index to go by since
-- 20261207000001 replaced the partial index of open heartbeat runs: each sweep read the whole
-- table (0.27 s beside 2 million past fires, growing with the history, on the cores a minute
-- burst needs). Each state it looks for now has its own small index in the order it compares:
-- a heartbeat run enters the first when written (at the index's end, like its id) and the
-- second when claimed. Changing `status` already wrote new index entries for the open
-- partial index before; it does again.
CREATE INDEX IF NOT EXISTS heartbeat_runs_queued ON heartbeat_runs (created_at)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS heartbeat_runs_running ON heartbeat_runs (started_at)
    WHERE status = 'running';
