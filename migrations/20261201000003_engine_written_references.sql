-- References that only the engine writes are no longer checked by foreign keys.
--
-- Postgres checks a foreign key with a query per inserted (or re-pointed) row, run as an
-- after-row trigger; profiles of a minute burst put those checks at about half of the
-- dispatch statements' time, and a webhook acceptance pays one more per audit entry. The
-- constraints dropped here are the ones where the check can only repeat what the writing
-- transaction has just done itself:
--   - every value is copied by the store from rows the same transaction read, locked or
--     inserted (a heartbeat run's agent, issue and run; a run's links to its issue, heartbeat
--     run and the run it was coalesced into; an issue event's issue; an audit entry's
--     company), never taken from a request;
--   - nothing they point at is ever deleted (companies, agents, issues, heartbeat runs and
--     dispatched runs have no delete path), so there is no delete for them to stop.
-- Every reference a request can name keeps its key — routines (assignee, project, goal,
-- parent issue), issues (company, assignee, project, goal, parent issue, routine, origin
-- run), triggers, runs (routine, trigger), agent keys — and so do the company-scoped unique
-- keys the remaining references point at.
ALTER TABLE activity_log DROP CONSTRAINT activity_log_company_id_fkey;
ALTER TABLE routine_runs
    DROP CONSTRAINT routine_runs_company_id_linked_issue_id_fkey,
    DROP CONSTRAINT routine_runs_company_id_heartbeat_run_id_fkey,
    DROP CONSTRAINT routine_runs_company_id_coalesced_into_run_id_fkey;
ALTER TABLE heartbeat_runs
    DROP CONSTRAINT heartbeat_runs_company_id_agent_id_fkey,
    DROP CONSTRAINT heartbeat_runs_company_id_issue_id_fkey,
    DROP CONSTRAINT heartbeat_runs_company_id_routine_run_id_fkey;
ALTER TABLE issue_events DROP CONSTRAINT issue_events_company_id_issue_id_fkey;
