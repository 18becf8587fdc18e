-- Routine health, pauses, run timeouts and notification channels.

-- A routine's own settings and pause state. `consecutive_failures` is kept by every operation
-- that finishes a run of the routine (store/<backend>/health.rs), so a list reads it as a column.
ALTER TABLE routines
    ADD COLUMN run_timeout_sec integer CHECK (run_timeout_sec BETWEEN 60 AND 2592000),
    ADD COLUMN pause_after_failures integer CHECK (pause_after_failures BETWEEN 1 AND 100),
    ADD COLUMN paused_reason text CHECK (paused_reason IN ('manual', 'consecutive_failures')),
    ADD COLUMN pause_note text CHECK (length(pause_note) <= 500),
    ADD COLUMN paused_until timestamptz,
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0);
UPDATE routines SET paused_reason = 'manual', paused_at = updated_at WHERE status = 'paused';
-- The scheduler resumes these at their instant.
CREATE INDEX routines_paused_until ON routines (paused_until)
    WHERE status = 'paused' AND paused_until IS NOT NULL;

-- The instant a run that created an issue times out (dispatch + the routine's runTimeoutSec);
-- the scheduler fails the runs whose deadline passed while their issue is still open.
ALTER TABLE routine_runs ADD COLUMN deadline_at timestamptz;
CREATE INDEX routine_runs_deadline ON routine_runs (deadline_at)
    WHERE status = 'issue_created' AND deadline_at IS NOT NULL;

CREATE TABLE notification_channels (
    id           uuid PRIMARY KEY,
    company_id   uuid NOT NULL REFERENCES companies (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    kind         text NOT NULL CHECK (kind IN ('webhook', 'slack')),
    url          text NOT NULL,
    events       text[] NOT NULL,
    -- NULL: every routine of the company.
    routine_ids  uuid[],
    enabled      boolean NOT NULL DEFAULT true,
    -- A webhook channel's Standard Webhooks secret, sealed like an agent's wake-up secret.
    secret_enc   bytea,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    CHECK ((kind = 'webhook') = (secret_enc IS NOT NULL))
);
CREATE INDEX notification_channels_company ON notification_channels (company_id, created_at);

-- The outbox: one row per (event, channel), written in the transaction of the change that
-- caused it, delivered by a `deliver_notification` job written with it.
CREATE TABLE notifications (
    id                uuid PRIMARY KEY,
    channel_id        uuid NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    company_id        uuid NOT NULL,
    event             text NOT NULL,
    routine_id        uuid,
    body              jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL,
    delivered_at      timestamptz
);
CREATE INDEX notifications_channel_time ON notifications (channel_id, created_at DESC, id DESC);
