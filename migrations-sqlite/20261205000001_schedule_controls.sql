-- no-transaction
-- See migrations/20261205000001_schedule_controls.sql: the same changes on the embedded backend.
-- SQLite cannot change a CHECK constraint in place, so `routine_runs` is rebuilt (the
-- documented procedure: foreign keys off, new table, copy, drop, rename, indexes, check).
PRAGMA foreign_keys = OFF;
BEGIN;

ALTER TABLE routine_triggers ADD COLUMN jitter_sec INTEGER NOT NULL DEFAULT 0
    CHECK (jitter_sec BETWEEN 0 AND 3600);

CREATE TABLE routine_runs_rebuilt (
    id                     BLOB PRIMARY KEY,
    company_id             BLOB NOT NULL,
    routine_id             BLOB NOT NULL,
    trigger_id             BLOB REFERENCES routine_triggers (id) ON DELETE SET NULL,
    source                 TEXT NOT NULL
                           CHECK (source IN ('schedule', 'webhook', 'manual', 'api', 'backfill')),
    status                 TEXT NOT NULL DEFAULT 'received'
                           CHECK (status IN ('received', 'issue_created', 'coalesced', 'skipped',
                                             'failed', 'completed')),
    reason                 TEXT,
    scheduled_for          TEXT,
    catch_up               INTEGER NOT NULL DEFAULT 0 CHECK (catch_up IN (0, 1)),
    missed                 TEXT,
    triggered_at           TEXT NOT NULL,
    completed_at           TEXT,
    idempotency_key        TEXT CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    payload                TEXT NOT NULL DEFAULT '{}',
    linked_issue_id        BLOB,
    coalesced_into_run_id  BLOB,
    heartbeat_run_id       BLOB,
    failure_reason         TEXT,
    updated_at             TEXT NOT NULL,
    timezone               TEXT,
    fire_at                TEXT,
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, routine_id) REFERENCES routines (company_id, id),
    FOREIGN KEY (company_id, linked_issue_id) REFERENCES issues (company_id, id),
    FOREIGN KEY (company_id, coalesced_into_run_id) REFERENCES routine_runs (company_id, id),
    FOREIGN KEY (company_id, heartbeat_run_id) REFERENCES heartbeat_runs (company_id, id),
    UNIQUE (trigger_id, scheduled_for),
    UNIQUE (routine_id, idempotency_key)
);
INSERT INTO routine_runs_rebuilt
    (id, company_id, routine_id, trigger_id, source, status, reason, scheduled_for, catch_up,
     missed, triggered_at, completed_at, idempotency_key, payload, linked_issue_id,
     coalesced_into_run_id, heartbeat_run_id, failure_reason, updated_at, timezone, fire_at)
SELECT id, company_id, routine_id, trigger_id, source, status, reason, scheduled_for, catch_up,
       missed, triggered_at, completed_at, idempotency_key, payload, linked_issue_id,
       coalesced_into_run_id, heartbeat_run_id, failure_reason, updated_at, timezone,
       CASE WHEN source = 'schedule' THEN scheduled_for END
FROM routine_runs;
DROP TABLE routine_runs;
ALTER TABLE routine_runs_rebuilt RENAME TO routine_runs;
CREATE INDEX routine_runs_routine_time ON routine_runs (routine_id, triggered_at DESC, id DESC);

COMMIT;
PRAGMA foreign_keys = ON;
