-- Retention (NEXUS_RETENTION_DAYS): finished history is deleted in small batches, each found
-- through an index so that a batch costs the same whatever the history's size.
--
-- An issue's origin run is written only by the engine (at dispatch), like the references
-- dropped in 20261201000003; its foreign key would make every deleted run look up the issues
-- referencing it, and no index serves that lookup.
ALTER TABLE issues DROP CONSTRAINT IF EXISTS issues_company_id_origin_run_id_fkey;

-- Closed issues, oldest change first: the units retention deletes. Open issues (every issue a
-- fire creates) are not in it, so a fire writes nothing here.
CREATE INDEX IF NOT EXISTS issues_closed ON issues (updated_at) WHERE status IN ('done', 'cancelled');

-- The references to an issue the API writes (a parent) keep their foreign keys; these serve
-- the check when an issue is deleted, and the test that it is nobody's parent.
CREATE INDEX IF NOT EXISTS issues_parent ON issues (company_id, parent_issue_id)
    WHERE parent_issue_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS routines_parent_issue ON routines (company_id, parent_issue_id)
    WHERE parent_issue_id IS NOT NULL;

-- The runs linked to an issue (the one that opened it, those coalesced or skipped into it),
-- deleted with it. Since the run-timeout index names `status`, setting a run's issue at
-- dispatch is no longer a HOT update; this index adds one entry to that update.
CREATE INDEX IF NOT EXISTS routine_runs_issue ON routine_runs (linked_issue_id)
    WHERE linked_issue_id IS NOT NULL;

-- Runs that never had an issue (missed fires, runs failed before dispatch), oldest first.
CREATE INDEX IF NOT EXISTS routine_runs_unlinked ON routine_runs (completed_at)
    WHERE linked_issue_id IS NULL AND completed_at IS NOT NULL;

-- An issue's heartbeat runs, all of them (the open ones were indexed alone before): deleted
-- with the issue. Every heartbeat run is written queued, so the old partial index took an
-- entry for each as well.
DROP INDEX IF EXISTS heartbeat_runs_open;
CREATE INDEX IF NOT EXISTS heartbeat_runs_issue ON heartbeat_runs (issue_id);

-- A company's issues are listed newest id first; the unique (company_id, id) key serves that
-- as a range scan. This index (by creation time) served no query, and cost every fire an entry.
DROP INDEX IF EXISTS issues_company;
-- The issues of one routine (`?routineId=`), newest first, as a range scan too: without it the
-- list read the whole company's issues until it found enough of the routine's.
CREATE INDEX IF NOT EXISTS issues_routine ON issues (routine_id, id) WHERE routine_id IS NOT NULL;

-- Dead jobs, by when they died.
CREATE INDEX IF NOT EXISTS jobs_dead ON jobs (updated_at) WHERE state = 'dead';
