-- The dispatch's update of a run becomes a heap-only (HOT) update: no index of `routine_runs`
-- names a column the dispatch changes, and each page keeps room for the new row versions.
--
-- Before, three indexes named what a dispatch sets — `routine_runs_deadline` (`deadline_at`,
-- predicate `status`), `routine_runs_issue` (`linked_issue_id`) and `routine_runs_unlinked`
-- (predicate `linked_issue_id`) — so every dispatched run got a new entry in every index of
-- the table, two of them ordered by routine or trigger: beside a history, 10,000 leaf pages of
-- their own at each minute boundary. What those indexes served now lives beside the runs:
--
-- * `run_deadlines`: the instant each run waiting on its issue times out. A row is written
--   when the dispatch opens the issue and deleted when the run ends, so the table holds only
--   the runs in `issue_created` — the scheduler's sweep and its wake-up read it.
-- * `run_issue_links`: the runs linked to an issue (the one that opened it, those coalesced
--   or skipped into it), written at dispatch; retention deletes them with their issue.
-- * `unlinked_runs`: the finished runs that never had an issue (a missed fire, a run skipped
--   or failed at or before dispatch), by completion time, written when such a run ends;
--   retention deletes them there.
--
-- Like the other references only the engine writes (20261201000003), these carry no foreign
-- keys: a run is deleted only once finished (its deadline gone) and with its links.
CREATE TABLE run_deadlines (
    run_id      uuid PRIMARY KEY,
    issue_id    uuid NOT NULL,
    deadline_at timestamptz NOT NULL
);
CREATE INDEX run_deadlines_due ON run_deadlines (deadline_at);
INSERT INTO run_deadlines (run_id, issue_id, deadline_at)
    SELECT id, linked_issue_id, deadline_at FROM routine_runs
    WHERE status = 'issue_created' AND deadline_at IS NOT NULL AND linked_issue_id IS NOT NULL;
DROP INDEX routine_runs_deadline;
ALTER TABLE routine_runs DROP COLUMN deadline_at;

CREATE TABLE run_issue_links (
    issue_id uuid NOT NULL,
    run_id   uuid NOT NULL,
    PRIMARY KEY (issue_id, run_id)
);
INSERT INTO run_issue_links (issue_id, run_id)
    SELECT linked_issue_id, id FROM routine_runs WHERE linked_issue_id IS NOT NULL;
DROP INDEX routine_runs_issue;

CREATE TABLE unlinked_runs (
    run_id       uuid PRIMARY KEY,
    completed_at timestamptz NOT NULL
);
CREATE INDEX unlinked_runs_completed ON unlinked_runs (completed_at);
INSERT INTO unlinked_runs (run_id, completed_at)
    SELECT id, completed_at FROM routine_runs
    WHERE linked_issue_id IS NULL AND completed_at IS NOT NULL;
DROP INDEX routine_runs_unlinked;

-- A run is written when its fire is prepared and rewritten when it is dispatched, usually in
-- one transaction with the other runs of its page, and the second version is larger (the
-- issue and heartbeat run it names: ~+35 bytes on ~180-200). Inserts leave 55 % of each new
-- page free, room for every run of the page to be rewritten in place at once. Pages written
-- before this migration keep their layout.
ALTER TABLE routine_runs SET (fillfactor = 45);
