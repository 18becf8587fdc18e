-- See migrations/20261208000002_fire_lateness.sql.
CREATE INDEX routine_runs_fire_at ON routine_runs (fire_at)
    WHERE fire_at IS NOT NULL AND NOT catch_up;
