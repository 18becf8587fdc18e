-- no-transaction
-- See migrations/20261205000003_signing_modes.sql. SQLite cannot change a CHECK constraint in
-- place: `routine_triggers` is rebuilt as `routine_runs` was (foreign keys off, new table, copy,
-- drop, rename, indexes).
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE routine_triggers_rebuilt (
    id                          BLOB PRIMARY KEY,
    company_id                  BLOB NOT NULL,
    routine_id                  BLOB NOT NULL,
    kind                        TEXT NOT NULL CHECK (kind IN ('schedule', 'webhook', 'api')),
    label                       TEXT NOT NULL DEFAULT '' CHECK (length(label) <= 120),
    enabled                     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    cron_expression             TEXT,
    timezone                    TEXT,
    next_run_at                 TEXT,
    public_id                   TEXT UNIQUE,
    signing_mode                TEXT CHECK (signing_mode IN ('bearer', 'hmac_sha256',
                                    'standard_webhooks', 'github', 'stripe', 'slack')),
    replay_window_sec           INTEGER CHECK (replay_window_sec BETWEEN 30 AND 86400),
    secret_enc                  BLOB,
    last_fired_at               TEXT,
    last_result                 TEXT,
    created_at                  TEXT NOT NULL,
    updated_at                  TEXT NOT NULL,
    prepared_fire_at            TEXT,
    jitter_sec                  INTEGER NOT NULL DEFAULT 0 CHECK (jitter_sec BETWEEN 0 AND 3600),
    previous_secret_enc         BLOB,
    previous_secret_expires_at  TEXT,
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, routine_id) REFERENCES routines (company_id, id),
    CHECK ((kind = 'schedule') = (cron_expression IS NOT NULL AND timezone IS NOT NULL)),
    CHECK ((kind = 'webhook') = (public_id IS NOT NULL AND signing_mode IS NOT NULL
                                 AND replay_window_sec IS NOT NULL AND secret_enc IS NOT NULL)),
    CHECK (kind = 'schedule' OR next_run_at IS NULL)
);
INSERT INTO routine_triggers_rebuilt
    (id, company_id, routine_id, kind, label, enabled, cron_expression, timezone, next_run_at,
     public_id, signing_mode, replay_window_sec, secret_enc, last_fired_at, last_result,
     created_at, updated_at, prepared_fire_at, jitter_sec, previous_secret_enc,
     previous_secret_expires_at)
SELECT id, company_id, routine_id, kind, label, enabled, cron_expression, timezone, next_run_at,
       public_id, signing_mode, replay_window_sec, secret_enc, last_fired_at, last_result,
       created_at, updated_at, prepared_fire_at, jitter_sec, previous_secret_enc,
       previous_secret_expires_at
FROM routine_triggers;
DROP TABLE routine_triggers;
ALTER TABLE routine_triggers_rebuilt RENAME TO routine_triggers;
CREATE INDEX routine_triggers_routine ON routine_triggers (routine_id, created_at);
CREATE INDEX routine_triggers_due ON routine_triggers (next_run_at)
    WHERE kind = 'schedule' AND enabled AND next_run_at IS NOT NULL;
CREATE INDEX routine_triggers_previous_secret_expiry ON routine_triggers (previous_secret_expires_at)
    WHERE previous_secret_expires_at IS NOT NULL;

COMMIT;
PRAGMA foreign_keys = ON;
