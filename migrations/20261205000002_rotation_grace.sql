-- Rotation with a grace period: the secret a rotation replaced keeps working until
-- `previous_secret_expires_at`, sealed like the current one; it is destroyed (set to NULL)
-- once that has passed.
ALTER TABLE routine_triggers ADD COLUMN previous_secret_enc bytea;
ALTER TABLE routine_triggers ADD COLUMN previous_secret_expires_at timestamptz;
ALTER TABLE routine_triggers ADD CONSTRAINT routine_triggers_previous_secret
    CHECK ((previous_secret_enc IS NULL) = (previous_secret_expires_at IS NULL));
CREATE INDEX routine_triggers_previous_secret_expiry ON routine_triggers (previous_secret_expires_at)
    WHERE previous_secret_expires_at IS NOT NULL;
