-- Claiming walks due jobs in (run_at, id) order and stops after the batch it needs: with this
-- index that is an ordered index scan, not a sort of every due job (which made concurrent
-- batch claims slow under a burst of thousands of jobs).
DROP INDEX jobs_due;
CREATE INDEX jobs_due ON jobs (run_at, id) WHERE state = 'queued';
