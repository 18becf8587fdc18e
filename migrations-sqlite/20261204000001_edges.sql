-- See migrations/20261204000001_edges.sql: the same changes on the embedded backend.
ALTER TABLE routine_triggers ADD COLUMN prepared_fire_at TEXT;

ALTER TABLE routine_runs ADD COLUMN timezone TEXT;

CREATE INDEX routine_runs_routine_time ON routine_runs (routine_id, triggered_at DESC, id DESC);
DROP INDEX routine_runs_routine;

DROP TABLE webhook_signatures;
CREATE TABLE webhook_signatures (
    trigger_id  BLOB NOT NULL,
    signature   BLOB NOT NULL,
    run_id      BLOB NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (trigger_id, signature)
);
CREATE INDEX webhook_signatures_expiry ON webhook_signatures (expires_at);

ALTER TABLE board_tokens ADD COLUMN last_used_at TEXT;
