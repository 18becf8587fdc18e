-- See migrations/20261208000001_live_updates.sql: the same outbox, event log and triggers on
-- the embedded backend (a routine's and a trigger's per-fire bookkeeping left out the same way).
CREATE TABLE event_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    company_id   BLOB NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('run.created', 'run.updated', 'routine.updated',
                                                'trigger.updated', 'trigger.deleted')),
    resource_id  BLOB NOT NULL,
    routine_id   BLOB NOT NULL
);

CREATE TABLE company_events (
    id           INTEGER PRIMARY KEY,
    company_id   BLOB NOT NULL,
    kind         TEXT NOT NULL,
    resource_id  BLOB NOT NULL,
    routine_id   BLOB NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX company_events_company ON company_events (company_id, id);

CREATE TABLE event_log (
    only_row        INTEGER PRIMARY KEY DEFAULT 1 CHECK (only_row = 1),
    last_id         INTEGER NOT NULL,
    purged_through  INTEGER NOT NULL
);
INSERT INTO event_log (last_id, purged_through) VALUES (0, 0);

CREATE TRIGGER routine_runs_created AFTER INSERT ON routine_runs BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'run.created', NEW.id, NEW.routine_id);
END;
CREATE TRIGGER routine_runs_updated AFTER UPDATE ON routine_runs BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'run.updated', NEW.id, NEW.routine_id);
END;
CREATE TRIGGER routines_created AFTER INSERT ON routines BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'routine.updated', NEW.id, NEW.id);
END;
CREATE TRIGGER routines_updated AFTER UPDATE ON routines
WHEN OLD.title IS NOT NEW.title OR OLD.description IS NOT NEW.description
  OR OLD.assignee_agent_id IS NOT NEW.assignee_agent_id OR OLD.project_id IS NOT NEW.project_id
  OR OLD.goal_id IS NOT NEW.goal_id OR OLD.parent_issue_id IS NOT NEW.parent_issue_id
  OR OLD.priority IS NOT NEW.priority OR OLD.status IS NOT NEW.status
  OR OLD.concurrency_policy IS NOT NEW.concurrency_policy
  OR OLD.catch_up_policy IS NOT NEW.catch_up_policy OR OLD.catch_up_cap IS NOT NEW.catch_up_cap
  OR OLD.run_timeout_sec IS NOT NEW.run_timeout_sec
  OR OLD.pause_after_failures IS NOT NEW.pause_after_failures
  OR OLD.paused_reason IS NOT NEW.paused_reason OR OLD.pause_note IS NOT NEW.pause_note
  OR OLD.paused_until IS NOT NEW.paused_until OR OLD.paused_at IS NOT NEW.paused_at
  OR OLD.consecutive_failures IS NOT NEW.consecutive_failures
BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'routine.updated', NEW.id, NEW.id);
END;
CREATE TRIGGER routine_triggers_created AFTER INSERT ON routine_triggers BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'trigger.updated', NEW.id, NEW.routine_id);
END;
CREATE TRIGGER routine_triggers_updated AFTER UPDATE ON routine_triggers
WHEN OLD.label IS NOT NEW.label OR OLD.enabled IS NOT NEW.enabled
  OR OLD.cron_expression IS NOT NEW.cron_expression OR OLD.timezone IS NOT NEW.timezone
  OR OLD.jitter_sec IS NOT NEW.jitter_sec OR OLD.public_id IS NOT NEW.public_id
  OR OLD.signing_mode IS NOT NEW.signing_mode OR OLD.replay_window_sec IS NOT NEW.replay_window_sec
  OR OLD.secret_enc IS NOT NEW.secret_enc
  OR OLD.previous_secret_expires_at IS NOT NEW.previous_secret_expires_at
BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'trigger.updated', NEW.id, NEW.routine_id);
END;
CREATE TRIGGER routine_triggers_deleted AFTER DELETE ON routine_triggers BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (OLD.company_id, 'trigger.deleted', OLD.id, OLD.routine_id);
END;
