-- The schema of the embedded (SQLite) store: the same tables, keys and checks as the Postgres
-- schema (migrations/), in SQLite's types:
-- * ids are 16-byte BLOBs (UUID v7, so they sort by creation time);
-- * timestamps are TEXT in one fixed UTC format (`2026-11-30T12:00:00.000000Z`), so comparing
--   them as text compares the instants;
-- * JSON is TEXT, booleans are 0/1;
-- * foreign keys are enforced (the connection enables them), composite ones scoped by company
--   as in Postgres; a run's trigger is referenced on its own so deleting a trigger can clear it.

CREATE TABLE companies (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  TEXT NOT NULL
);

CREATE TABLE board_tokens (
    id          BLOB PRIMARY KEY,
    token_hash  BLOB NOT NULL UNIQUE,
    label       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);

CREATE TABLE agents (
    id                 BLOB PRIMARY KEY,
    company_id         BLOB NOT NULL REFERENCES companies (id),
    name               TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status             TEXT NOT NULL DEFAULT 'active'
                       CHECK (status IN ('active', 'paused', 'terminated')),
    wakeup_kind        TEXT NOT NULL DEFAULT 'poll' CHECK (wakeup_kind IN ('poll', 'http')),
    wakeup_url         TEXT,
    wakeup_secret_enc  BLOB,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (company_id, id),
    CHECK ((wakeup_kind = 'http') = (wakeup_url IS NOT NULL AND wakeup_secret_enc IS NOT NULL))
);

CREATE TABLE agent_keys (
    id          BLOB PRIMARY KEY,
    company_id  BLOB NOT NULL,
    agent_id    BLOB NOT NULL,
    key_hash    BLOB NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT,
    FOREIGN KEY (company_id, agent_id) REFERENCES agents (company_id, id)
);
CREATE INDEX agent_keys_agent ON agent_keys (agent_id);

CREATE TABLE projects (
    id          BLOB PRIMARY KEY,
    company_id  BLOB NOT NULL REFERENCES companies (id),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  TEXT NOT NULL,
    UNIQUE (company_id, id)
);

CREATE TABLE goals (
    id          BLOB PRIMARY KEY,
    company_id  BLOB NOT NULL REFERENCES companies (id),
    title       TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    created_at  TEXT NOT NULL,
    UNIQUE (company_id, id)
);

CREATE TABLE issues (
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
    FOREIGN KEY (company_id, routine_id) REFERENCES routines (company_id, id),
    FOREIGN KEY (company_id, origin_run_id) REFERENCES routine_runs (company_id, id)
);
CREATE INDEX issues_company ON issues (company_id, created_at);
CREATE INDEX issues_routine_open ON issues (routine_id, created_at)
    WHERE routine_id IS NOT NULL AND status NOT IN ('done', 'cancelled');

CREATE TABLE issue_events (
    id          BLOB PRIMARY KEY,
    company_id  BLOB NOT NULL,
    issue_id    BLOB NOT NULL,
    type        TEXT NOT NULL CHECK (type IN ('created', 'status_changed', 'fire_coalesced')),
    actor_type  TEXT NOT NULL CHECK (actor_type IN ('board', 'agent', 'system')),
    actor_id    BLOB,
    data        TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    FOREIGN KEY (company_id, issue_id) REFERENCES issues (company_id, id)
);
CREATE INDEX issue_events_issue ON issue_events (issue_id, created_at, id);

CREATE TABLE routines (
    id                  BLOB PRIMARY KEY,
    company_id          BLOB NOT NULL REFERENCES companies (id),
    title               TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description         TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 10000),
    assignee_agent_id   BLOB NOT NULL,
    project_id          BLOB NOT NULL,
    goal_id             BLOB,
    parent_issue_id     BLOB,
    priority            TEXT NOT NULL DEFAULT 'medium'
                        CHECK (priority IN ('critical', 'high', 'medium', 'low')),
    status              TEXT NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'paused', 'archived')),
    concurrency_policy  TEXT NOT NULL DEFAULT 'coalesce_if_active'
                        CHECK (concurrency_policy IN ('coalesce_if_active', 'skip_if_active', 'always_enqueue')),
    catch_up_policy     TEXT NOT NULL DEFAULT 'skip_missed'
                        CHECK (catch_up_policy IN ('skip_missed', 'enqueue_missed_with_cap')),
    catch_up_cap        INTEGER NOT NULL DEFAULT 25 CHECK (catch_up_cap BETWEEN 1 AND 100),
    last_triggered_at   TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, assignee_agent_id) REFERENCES agents (company_id, id),
    FOREIGN KEY (company_id, project_id) REFERENCES projects (company_id, id),
    FOREIGN KEY (company_id, goal_id) REFERENCES goals (company_id, id),
    FOREIGN KEY (company_id, parent_issue_id) REFERENCES issues (company_id, id)
);
CREATE INDEX routines_company ON routines (company_id, created_at);

CREATE TABLE routine_triggers (
    id                 BLOB PRIMARY KEY,
    company_id         BLOB NOT NULL,
    routine_id         BLOB NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('schedule', 'webhook', 'api')),
    label              TEXT NOT NULL DEFAULT '' CHECK (length(label) <= 120),
    enabled            INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    cron_expression    TEXT,
    timezone           TEXT,
    next_run_at        TEXT,
    public_id          TEXT UNIQUE,
    signing_mode       TEXT CHECK (signing_mode IN ('bearer', 'hmac_sha256')),
    replay_window_sec  INTEGER CHECK (replay_window_sec BETWEEN 30 AND 86400),
    secret_enc         BLOB,
    last_fired_at      TEXT,
    last_result        TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, routine_id) REFERENCES routines (company_id, id),
    CHECK ((kind = 'schedule') = (cron_expression IS NOT NULL AND timezone IS NOT NULL)),
    CHECK ((kind = 'webhook') = (public_id IS NOT NULL AND signing_mode IS NOT NULL
                                 AND replay_window_sec IS NOT NULL AND secret_enc IS NOT NULL)),
    CHECK (kind = 'schedule' OR next_run_at IS NULL)
);
CREATE INDEX routine_triggers_routine ON routine_triggers (routine_id, created_at);
CREATE INDEX routine_triggers_due ON routine_triggers (next_run_at)
    WHERE kind = 'schedule' AND enabled AND next_run_at IS NOT NULL;

CREATE TABLE routine_runs (
    id                     BLOB PRIMARY KEY,
    company_id             BLOB NOT NULL,
    routine_id             BLOB NOT NULL,
    trigger_id             BLOB REFERENCES routine_triggers (id) ON DELETE SET NULL,
    source                 TEXT NOT NULL CHECK (source IN ('schedule', 'webhook', 'manual', 'api')),
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
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, routine_id) REFERENCES routines (company_id, id),
    FOREIGN KEY (company_id, linked_issue_id) REFERENCES issues (company_id, id),
    FOREIGN KEY (company_id, coalesced_into_run_id) REFERENCES routine_runs (company_id, id),
    FOREIGN KEY (company_id, heartbeat_run_id) REFERENCES heartbeat_runs (company_id, id),
    UNIQUE (trigger_id, scheduled_for),
    UNIQUE (routine_id, idempotency_key)
);
CREATE INDEX routine_runs_routine ON routine_runs (routine_id, id DESC);
CREATE INDEX routine_runs_linked_issue ON routine_runs (linked_issue_id)
    WHERE linked_issue_id IS NOT NULL;

CREATE TABLE heartbeat_runs (
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
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, agent_id) REFERENCES agents (company_id, id),
    FOREIGN KEY (company_id, issue_id) REFERENCES issues (company_id, id),
    FOREIGN KEY (company_id, routine_run_id) REFERENCES routine_runs (company_id, id)
);
CREATE INDEX heartbeat_runs_agent ON heartbeat_runs (agent_id, created_at, id);
CREATE INDEX heartbeat_runs_open ON heartbeat_runs (issue_id)
    WHERE status IN ('queued', 'running');

CREATE TABLE jobs (
    id             BLOB PRIMARY KEY,
    kind           TEXT NOT NULL,
    payload        TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'queued'
                   CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'dead')),
    run_at         TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts   INTEGER NOT NULL CHECK (max_attempts >= 1),
    lease_owner    TEXT,
    lease_until    TEXT,
    last_error     TEXT,
    trace_context  TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    finished_at    TEXT,
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_until IS NOT NULL))
);
CREATE INDEX jobs_due ON jobs (run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'running';

CREATE TABLE scheduler_epoch (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    epoch       INTEGER NOT NULL,
    leader_id   TEXT,
    updated_at  TEXT NOT NULL
);
INSERT INTO scheduler_epoch (id, epoch, leader_id, updated_at)
VALUES (1, 0, NULL, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

CREATE TABLE activity_log (
    id           BLOB PRIMARY KEY,
    company_id   BLOB NOT NULL REFERENCES companies (id),
    actor_type   TEXT NOT NULL CHECK (actor_type IN ('board', 'agent', 'system')),
    actor_id     BLOB,
    action       TEXT NOT NULL,
    entity_type  TEXT NOT NULL,
    entity_id    BLOB NOT NULL,
    details      TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL
);
CREATE INDEX activity_log_company ON activity_log (company_id, created_at DESC, id DESC);
