-- Live updates (API.md "Live updates"): every change to a run, and every change to what a
-- person sets on a routine or trigger (or to a routine's health), leaves a row in
-- `event_outbox`, written by the triggers below in the transaction that makes the change, so a
-- change and its event commit together. The bookkeeping each fire writes on its routine and
-- trigger (last triggered, next and last fire, the prepared fire) is left out: the fire's run
-- announces it, and a fire then costs two outbox rows, not four. The API moves committed outbox rows into
-- `company_events` one batch at a time, numbering them there (`event_log` holds the last number
-- and is locked by the batch), so numbers follow the order in which events become visible and
-- a reader that has seen number N has seen everything before it. Events are kept a few minutes
-- for clients that reconnect with Last-Event-ID.
CREATE TABLE event_outbox (
    seq          bigserial PRIMARY KEY,
    company_id   uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('run.created', 'run.updated', 'routine.updated',
                                                'trigger.updated', 'trigger.deleted')),
    resource_id  uuid NOT NULL,
    routine_id   uuid NOT NULL
);

CREATE TABLE company_events (
    id           bigint PRIMARY KEY,
    company_id   uuid NOT NULL,
    kind         text NOT NULL,
    resource_id  uuid NOT NULL,
    routine_id   uuid NOT NULL,
    created_at   timestamptz NOT NULL
);
CREATE INDEX company_events_company ON company_events (company_id, id);

CREATE TABLE event_log (
    only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_id         bigint NOT NULL,
    purged_through  bigint NOT NULL
);
INSERT INTO event_log (last_id, purged_through) VALUES (0, 0);

CREATE FUNCTION record_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, CASE TG_OP WHEN 'INSERT' THEN 'run.created' ELSE 'run.updated' END,
            NEW.id, NEW.routine_id);
    RETURN NULL;
END $$;

CREATE FUNCTION record_routine_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
    VALUES (NEW.company_id, 'routine.updated', NEW.id, NEW.id);
    RETURN NULL;
END $$;

CREATE FUNCTION record_trigger_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
        VALUES (OLD.company_id, 'trigger.deleted', OLD.id, OLD.routine_id);
    ELSE
        INSERT INTO event_outbox (company_id, kind, resource_id, routine_id)
        VALUES (NEW.company_id, 'trigger.updated', NEW.id, NEW.routine_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER routine_runs_created AFTER INSERT ON routine_runs
    FOR EACH ROW EXECUTE FUNCTION record_run_event();
CREATE TRIGGER routine_runs_updated AFTER UPDATE ON routine_runs
    FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION record_run_event();
CREATE TRIGGER routines_created AFTER INSERT ON routines
    FOR EACH ROW EXECUTE FUNCTION record_routine_event();
CREATE TRIGGER routines_updated AFTER UPDATE ON routines
    FOR EACH ROW WHEN (
        (OLD.title, OLD.description, OLD.assignee_agent_id, OLD.project_id, OLD.goal_id,
         OLD.parent_issue_id, OLD.priority, OLD.status, OLD.concurrency_policy,
         OLD.catch_up_policy, OLD.catch_up_cap, OLD.run_timeout_sec, OLD.pause_after_failures,
         OLD.paused_reason, OLD.pause_note, OLD.paused_until, OLD.paused_at,
         OLD.consecutive_failures)
        IS DISTINCT FROM
        (NEW.title, NEW.description, NEW.assignee_agent_id, NEW.project_id, NEW.goal_id,
         NEW.parent_issue_id, NEW.priority, NEW.status, NEW.concurrency_policy,
         NEW.catch_up_policy, NEW.catch_up_cap, NEW.run_timeout_sec, NEW.pause_after_failures,
         NEW.paused_reason, NEW.pause_note, NEW.paused_until, NEW.paused_at,
         NEW.consecutive_failures))
    EXECUTE FUNCTION record_routine_event();
CREATE TRIGGER routine_triggers_changed AFTER INSERT OR DELETE ON routine_triggers
    FOR EACH ROW EXECUTE FUNCTION record_trigger_event();
CREATE TRIGGER routine_triggers_updated AFTER UPDATE ON routine_triggers
    FOR EACH ROW WHEN (
        (OLD.label, OLD.enabled, OLD.cron_expression, OLD.timezone, OLD.jitter_sec,
         OLD.public_id, OLD.signing_mode, OLD.replay_window_sec, OLD.secret_enc,
         OLD.previous_secret_expires_at)
        IS DISTINCT FROM
        (NEW.label, NEW.enabled, NEW.cron_expression, NEW.timezone, NEW.jitter_sec,
         NEW.public_id, NEW.signing_mode, NEW.replay_window_sec, NEW.secret_enc,
         NEW.previous_secret_expires_at))
    EXECUTE FUNCTION record_trigger_event();
