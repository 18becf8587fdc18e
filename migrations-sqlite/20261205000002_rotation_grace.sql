-- See migrations/20261205000002_rotation_grace.sql: the same change on the embedded backend.
ALTER TABLE routine_triggers ADD COLUMN previous_secret_enc BLOB;
ALTER TABLE routine_triggers ADD COLUMN previous_secret_expires_at TEXT;
CREATE INDEX routine_triggers_previous_secret_expiry ON routine_triggers (previous_secret_expires_at)
    WHERE previous_secret_expires_at IS NOT NULL;
