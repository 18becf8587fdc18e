-- Rows that every fire updates right after writing them (a run when it is dispatched) or
-- every minute (a schedule trigger, its routine) leave room on their page for the new version,
-- so Postgres can update them in place (a HOT update, with no new index entries) instead of
-- adding an entry to every index of the table.
--
-- routine_runs_linked_issue served no query (runs are never looked up by their issue, and
-- issues are never deleted); while it existed, setting a run's issue at dispatch was never a
-- HOT update, which wrote a new entry into each of the table's six indexes.
DROP INDEX routine_runs_linked_issue;
ALTER TABLE routine_runs SET (fillfactor = 70);
ALTER TABLE routine_triggers SET (fillfactor = 70);
ALTER TABLE routines SET (fillfactor = 70);
