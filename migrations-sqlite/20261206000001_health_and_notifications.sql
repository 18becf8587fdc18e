-- See migrations/20261206000001_health_and_notifications.sql: the same changes on the
-- embedded backend (lists are JSON arrays in TEXT).
ALTER TABLE routines ADD COLUMN run_timeout_sec INTEGER
    CHECK (run_timeout_sec BETWEEN 60 AND 2592000);
ALTER TABLE routines ADD COLUMN pause_after_failures INTEGER
    CHECK (pause_after_failures BETWEEN 1 AND 100);
ALTER TABLE routines ADD COLUMN paused_reason TEXT
    CHECK (paused_reason IN ('manual', 'consecutive_failures'));
ALTER TABLE routines ADD COLUMN pause_note TEXT CHECK (length(pause_note) <= 500);
ALTER TABLE routines ADD COLUMN paused_until TEXT;
ALTER TABLE routines ADD COLUMN paused_at TEXT;
ALTER TABLE routines ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0
    CHECK (consecutive_failures >= 0);
UPDATE routines SET paused_reason = 'manual', paused_at = updated_at WHERE status = 'paused';
CREATE INDEX routines_paused_until ON routines (paused_until)
    WHERE status = 'paused' AND paused_until IS NOT NULL;

ALTER TABLE routine_runs ADD COLUMN deadline_at TEXT;
CREATE INDEX routine_runs_deadline ON routine_runs (deadline_at)
    WHERE status = 'issue_created' AND deadline_at IS NOT NULL;

CREATE TABLE notification_channels (
    id           BLOB PRIMARY KEY,
    company_id   BLOB NOT NULL REFERENCES companies (id),
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    kind         TEXT NOT NULL CHECK (kind IN ('webhook', 'slack')),
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,
    routine_ids  TEXT,
    enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    secret_enc   BLOB,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    CHECK ((kind = 'webhook') = (secret_enc IS NOT NULL))
);
CREATE INDEX notification_channels_company ON notification_channels (company_id, created_at);

CREATE TABLE notifications (
    id                BLOB PRIMARY KEY,
    channel_id        BLOB NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    company_id        BLOB NOT NULL,
    event             TEXT NOT NULL,
    routine_id        BLOB,
    body              TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_status_code  INTEGER,
    last_error        TEXT,
    created_at        TEXT NOT NULL,
    delivered_at      TEXT
);
CREATE INDEX notifications_channel_time ON notifications (channel_id, created_at DESC, id DESC);
