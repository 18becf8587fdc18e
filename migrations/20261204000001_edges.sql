-- Migrations may take longer than the pools' statement and lock timeouts (an index over a large
-- table): none applies inside this one.
SET LOCAL statement_timeout = 0;
SET LOCAL lock_timeout = 0;

-- A fire prepared ahead of its nominal time is invisible until then: the trigger keeps the
-- nominal time of its pending prepared fire here, and `lastFiredAt` / `nextRunAt` are read
-- through it (see `store/fires.rs`), instead of moving when the fire is prepared.
ALTER TABLE routine_triggers ADD COLUMN prepared_fire_at timestamptz;

-- The time zone a schedule fire was computed in: `{{date}}` renders in it at dispatch, even if
-- the trigger was edited or deleted since.
ALTER TABLE routine_runs ADD COLUMN timezone text;

-- Runs are listed newest first by `triggered_at` (ties by id); the index also serves every
-- lookup of a routine's runs that the one it replaces served.
CREATE INDEX routine_runs_routine_time ON routine_runs (routine_id, triggered_at DESC, id DESC);
DROP INDEX routine_runs_routine;

-- The memory of accepted webhook signatures, in every deployment (Redis or not): written in the
-- accepting run's own transaction, so it is exactly as durable as the run it protects, and kept
-- until the signature's own timestamp has left its trigger's replay window.
DROP TABLE webhook_signatures;
CREATE TABLE webhook_signatures (
    trigger_id  uuid NOT NULL,
    signature   bytea NOT NULL,
    -- the run the signature was accepted with (or, for an idempotent replay, returned)
    run_id      uuid NOT NULL,
    -- Unix seconds: when the trigger's window is widened, the memory is extended by the same
    -- amount (see `update_trigger`), so no accepted call becomes acceptable again
    expires_at  bigint NOT NULL,
    PRIMARY KEY (trigger_id, signature)
);
CREATE INDEX webhook_signatures_expiry ON webhook_signatures (expires_at);

-- When a board token was last used (kept to the minute), for `nexus board-token list`.
ALTER TABLE board_tokens ADD COLUMN last_used_at timestamptz;
