-- The unique keys of a run (a schedule fire: trigger and nominal time; a keyed request: routine
-- and idempotency key) and a webhook trigger's public id cover only the rows that have them.
-- Before, every run without an idempotency key (every schedule fire) and every webhook run
-- (no nominal time) added a NULL entry to a unique index that can never conflict on it, and
-- every schedule trigger's `next_run_at` update (never in place: `next_run_at` is indexed)
-- added one to the public-id index. The same keys are enforced; conflicts name the partial
-- index (`ON CONFLICT (…) WHERE … IS NOT NULL`).
ALTER TABLE routine_runs DROP CONSTRAINT routine_runs_trigger_id_scheduled_for_key;
CREATE UNIQUE INDEX routine_runs_fire ON routine_runs (trigger_id, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
ALTER TABLE routine_runs DROP CONSTRAINT routine_runs_routine_id_idempotency_key_key;
CREATE UNIQUE INDEX routine_runs_idempotency ON routine_runs (routine_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
ALTER TABLE routine_triggers DROP CONSTRAINT routine_triggers_public_id_key;
CREATE UNIQUE INDEX routine_triggers_public_id ON routine_triggers (public_id)
    WHERE public_id IS NOT NULL;
