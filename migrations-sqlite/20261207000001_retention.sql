-- no-transaction
-- See migrations/20261207000001_retention.sql: the same changes on the embedded backend, whose
-- foreign keys now match Postgres's. SQLite cannot drop a foreign key in place, so the four
-- tables whose engine-written references lose theirs are rebuilt (the documented procedure:
-- foreign keys off, new table, copy, drop, rename, indexes). Without this, deleting an issue or
-- a run would make SQLite look up every table referencing it, with no index to serve it.
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE routine_runs_rebuilt (
    id                     BLOB PRIMARY KEY,
    company_id             BLOB NOT NULL,
    routine_id             BLOB NOT NULL,
    trigger_id             BLOB REFERENCES routine_triggers (id) ON DELETE SET NULL,
    source                 TEXT NOT NULL
                           CHECK (source IN ('schedule', 'webhook', 'manual', 'api', 'backfill')),
    status                 TEXT NOT NULL DEFAULT 'received'
                           CHECK (status IN ('received', 'issue_created', 'coalesced', 'skipped',
                                             'failed', 'completed')),
    reason                 TEXT,
    scheduled_for          TEXT,
    catch_up               INTEGER NOT NULL DEFAULT 0 CHECK (catch_up IN (0, 1)),
    missed                 TEXT,
    triggered_at           TEXT NOT NULL,
    completed_at           TEXT,
    idempotency_key        TEXT CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    payload                TEXT NOT NULL DEFAULT '{}',
    linked_issue_id        BLOB,
    coalesced_into_run_id  BLOB,
    heartbeat_run_id       BLOB,
    failure_reason         TEXT,
    updated_at             TEXT NOT NULL,
    timezone               TEXT,
    fire_at                TEXT,
    deadline_at            TEXT,
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, routine_id) REFERENCES routines (company_id, id),
    UNIQUE (trigger_id, scheduled_for),
    UNIQUE (routine_id, idempotency_key)
);;
INSERT INTO routine_runs_rebuilt (id, company_id, routine_id, trigger_id, source, status, reason, scheduled_for, catch_up, missed, triggered_at, completed_at, idempotency_key, payload, linked_issue_id, coalesced_into_run_id, heartbeat_run_id, failure_reason, updated_at, timezone, fire_at, deadline_at)
SELECT id, company_id, routine_id, trigger_id, source, status, reason, scheduled_for, catch_up, missed, triggered_at, completed_at, idempotency_key, payload, linked_issue_id, coalesced_into_run_id, heartbeat_run_id, failure_reason, updated_at, timezone, fire_at, deadline_at FROM routine_runs;
DROP TABLE routine_runs;
ALTER TABLE routine_runs_rebuilt RENAME TO routine_runs;
CREATE INDEX routine_runs_routine_time ON routine_runs (routine_id, triggered_at DESC, id DESC);
CREATE INDEX routine_runs_deadline ON routine_runs (deadline_at)
    WHERE status = 'issue_created' AND deadline_at IS NOT NULL;
CREATE INDEX routine_runs_issue ON routine_runs (linked_issue_id)
    WHERE linked_issue_id IS NOT NULL;
CREATE INDEX routine_runs_unlinked ON routine_runs (completed_at)
    WHERE linked_issue_id IS NULL AND completed_at IS NOT NULL;

CREATE TABLE heartbeat_runs_rebuilt (
    id              BLOB PRIMARY KEY,
    company_id      BLOB NOT NULL,
    agent_id        BLOB NOT NULL,
    issue_id        BLOB NOT NULL,
    routine_run_id  BLOB,
    status          TEXT NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    context         TEXT NOT NULL,
    summary         TEXT CHECK (length(summary) <= 10000),
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    UNIQUE (company_id, id)
);;
INSERT INTO heartbeat_runs_rebuilt (id, company_id, agent_id, issue_id, routine_run_id, status, context, summary, created_at, started_at, finished_at)
SELECT id, company_id, agent_id, issue_id, routine_run_id, status, context, summary, created_at, started_at, finished_at FROM heartbeat_runs;
DROP TABLE heartbeat_runs;
ALTER TABLE heartbeat_runs_rebuilt RENAME TO heartbeat_runs;
CREATE INDEX heartbeat_runs_agent ON heartbeat_runs (agent_id, created_at, id);
CREATE INDEX heartbeat_runs_issue ON heartbeat_runs (issue_id);

CREATE TABLE issue_events_rebuilt (
    id          BLOB PRIMARY KEY,
    company_id  BLOB NOT NULL,
    issue_id    BLOB NOT NULL,
    type        TEXT NOT NULL CHECK (type IN ('created', 'status_changed', 'fire_coalesced')),
    actor_type  TEXT NOT NULL CHECK (actor_type IN ('board', 'agent', 'system')),
    actor_id    BLOB,
    data        TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL
);;
INSERT INTO issue_events_rebuilt (id, company_id, issue_id, type, actor_type, actor_id, data, created_at)
SELECT id, company_id, issue_id, type, actor_type, actor_id, data, created_at FROM issue_events;
DROP TABLE issue_events;
ALTER TABLE issue_events_rebuilt RENAME TO issue_events;
CREATE INDEX issue_events_issue ON issue_events (issue_id, created_at, id);

CREATE TABLE issues_rebuilt (
    id                 BLOB PRIMARY KEY,
    company_id         BLOB NOT NULL REFERENCES companies (id),
    title              TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description        TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 10000),
    project_id         BLOB,
    goal_id            BLOB,
    parent_issue_id    BLOB,
    assignee_agent_id  BLOB,
    priority           TEXT NOT NULL DEFAULT 'medium'
                       CHECK (priority IN ('critical', 'high', 'medium', 'low')),
    status             TEXT NOT NULL DEFAULT 'todo'
                       CHECK (status IN ('todo', 'in_progress', 'in_review', 'blocked', 'done', 'cancelled')),
    routine_id         BLOB,
    origin_run_id      BLOB,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, project_id) REFERENCES projects (company_id, id),
    FOREIGN KEY (company_id, goal_id) REFERENCES goals (company_id, id),
    FOREIGN KEY (company_id, parent_issue_id) REFERENCES issues (company_id, id),
    FOREIGN KEY (company_id, assignee_agent_id) REFERENCES agents (company_id, id),
    FOREIGN KEY (company_id, routine_id) REFERENCES routines (company_id, id)
);;
INSERT INTO issues_rebuilt (id, company_id, title, description, project_id, goal_id, parent_issue_id, assignee_agent_id, priority, status, routine_id, origin_run_id, created_at, updated_at)
SELECT id, company_id, title, description, project_id, goal_id, parent_issue_id, assignee_agent_id, priority, status, routine_id, origin_run_id, created_at, updated_at FROM issues;
DROP TABLE issues;
ALTER TABLE issues_rebuilt RENAME TO issues;
CREATE INDEX issues_routine_open ON issues (routine_id, created_at)
    WHERE routine_id IS NOT NULL AND status NOT IN ('done', 'cancelled');
CREATE INDEX issues_closed ON issues (updated_at) WHERE status IN ('done', 'cancelled');
CREATE INDEX issues_routine ON issues (routine_id, id) WHERE routine_id IS NOT NULL;
CREATE INDEX issues_parent ON issues (company_id, parent_issue_id)
    WHERE parent_issue_id IS NOT NULL;
CREATE INDEX routines_parent_issue ON routines (company_id, parent_issue_id)
    WHERE parent_issue_id IS NOT NULL;
CREATE INDEX jobs_dead ON jobs (updated_at) WHERE state = 'dead';

PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
