-- Schedule controls: jitter and backfill.

-- A schedule trigger's jitter: each fire happens at its nominal time plus an offset in
-- [0, jitter_sec) derived from the trigger id and the nominal time (engine::fires::jitter).
ALTER TABLE routine_triggers ADD COLUMN jitter_sec integer NOT NULL DEFAULT 0
    CHECK (jitter_sec BETWEEN 0 AND 3600);

-- The instant a schedule fire takes effect: its nominal time (`scheduled_for`) plus the
-- trigger's jitter offset when the fire was handled. Lateness and the grace period count
-- from it. Null for other runs.
ALTER TABLE routine_runs ADD COLUMN fire_at timestamptz;
UPDATE routine_runs SET fire_at = scheduled_for WHERE source = 'schedule' AND scheduled_for IS NOT NULL;

-- Runs created by `POST /api/routines/{routineId}/backfill` carry their own source; they share
-- the `(trigger_id, scheduled_for)` key with the scheduler's runs, so a fire has one run,
-- whoever produced it.
ALTER TABLE routine_runs DROP CONSTRAINT routine_runs_source_check;
ALTER TABLE routine_runs ADD CONSTRAINT routine_runs_source_check
    CHECK (source IN ('schedule', 'webhook', 'manual', 'api', 'backfill'));
