-- The signing modes of real senders (docs/api.md "Webhooks"). The constraint names every mode
-- the contract has, so the next ones need no migration of this table.
ALTER TABLE routine_triggers DROP CONSTRAINT routine_triggers_signing_mode_check;
ALTER TABLE routine_triggers ADD CONSTRAINT routine_triggers_signing_mode_check
    CHECK (signing_mode IN ('bearer', 'hmac_sha256', 'standard_webhooks', 'github', 'stripe', 'slack'));
