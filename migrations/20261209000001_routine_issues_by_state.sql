-- A routine's issues (`?routineId=`), newest first, from two partial indexes instead of one.
--
-- A fire opens an issue, and `issues_routine (routine_id, id)` put its entry at the end of that
-- routine's range: with 10,000 routines and a history, 10,000 leaf pages a boundary, each
-- written whole to the log the first time after a checkpoint — on the heartbeat's path.
-- Split by state, the open issues' index holds only what is open (the fire's entry lands among
-- a few hundred pages, like `issues_routine_open`), and the closed issues' index takes its
-- entry when the issue closes: closing changes `status`, which the partial indexes name, so it
-- writes a new row version and index entries anyway. The two predicates are complements, so
-- every issue of a routine is in exactly one; the list reads both newest first and merges them.
DROP INDEX IF EXISTS issues_routine;
CREATE INDEX IF NOT EXISTS issues_routine_open_newest ON issues (routine_id, id)
    WHERE routine_id IS NOT NULL AND status NOT IN ('done', 'cancelled');
CREATE INDEX IF NOT EXISTS issues_routine_closed ON issues (routine_id, id)
    WHERE routine_id IS NOT NULL AND status IN ('done', 'cancelled');
