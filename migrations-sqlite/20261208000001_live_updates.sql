-- See migrations/20261208000001_live_updates.sql: the same outbox, event log and triggers on
-- the embedded backend.
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
CREATE INDEX company_events_created ON company_events (created_at);

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
CREATE TRIGGER routines_updated AFTER UPDATE ON routines BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'routine.updated', NEW.id, NEW.id);
END;
CREATE TRIGGER routine_triggers_created AFTER INSERT ON routine_triggers BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'trigger.updated', NEW.id, NEW.routine_id);
END;
CREATE TRIGGER routine_triggers_updated AFTER UPDATE ON routine_triggers BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'trigger.updated', NEW.id, NEW.routine_id);
END;
CREATE TRIGGER routine_triggers_deleted AFTER DELETE ON routine_triggers BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (OLD.company_id, 'trigger.deleted', OLD.id, OLD.routine_id);
END;
