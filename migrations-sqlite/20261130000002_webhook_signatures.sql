-- Accepted webhook signatures, remembered for their trigger's replay window, where no Redis is
-- configured (the single-process mode): replay protection then survives a restart.
CREATE TABLE webhook_signatures (
    key         TEXT PRIMARY KEY,
    expires_at  TEXT NOT NULL
);
CREATE INDEX webhook_signatures_expiry ON webhook_signatures (expires_at);
