-- The console's system page reads how late recent schedule fires woke their agents: the fires
-- of each minute are found by their instant. Fires advance with time, so new entries go to the
-- index's right edge. Caught-up fires (missed ones run later, backfills) are not lateness.
CREATE INDEX IF NOT EXISTS routine_runs_fire_at ON routine_runs (fire_at)
    WHERE fire_at IS NOT NULL AND NOT catch_up;
