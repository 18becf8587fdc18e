-- routine_runs_linked_issue served no query (runs are never looked up by their issue, and
-- issues are never deleted); it only cost an index write when a run is dispatched.
DROP INDEX routine_runs_linked_issue;
