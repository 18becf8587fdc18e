//! Seeding many routines at once, written directly in SQL (creating a million through the API
//! would measure the API, not what the benchmark is about).

use chrono::{DateTime, Utc};
use nexus_tests::TestDb;

/// The schedule every seeded routine gets.
pub(crate) enum Cron {
    /// `* * * * *` UTC, first fire at the given boundary.
    EveryMinuteFrom(DateTime<Utc>),
    /// Once a day at a minute that differs between routines, next fire tomorrow: nothing is
    /// due for hours.
    DailyTomorrow,
    /// Once a year, at the given minute (its only fire for a year), with this `jitterSec`.
    OnceAt(DateTime<Utc>, i32),
}

/// The company the seeded routines belong to (the history has another).
pub(crate) const COMPANY: uuid::Uuid =
    uuid::Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001);

/// One company, agent and project, and `routines` `always_enqueue` routines with one schedule
/// trigger each.
pub(crate) async fn seed(database: &TestDb, routines: usize, cron: Cron) -> anyhow::Result<()> {
    let count = i64::try_from(routines)?;
    let mut tx = database.pool.begin().await?;
    sqlx::raw_sql(
        "INSERT INTO companies (id, name, created_at) VALUES ('00000000-0000-7000-8000-000000000001', 'bench', now());
         INSERT INTO agents (id, company_id, name, created_at, updated_at)
             VALUES ('00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000001', 'bench', now(), now());
         INSERT INTO projects (id, company_id, name, created_at)
             VALUES ('00000000-0000-7000-8000-000000000003', '00000000-0000-7000-8000-000000000001', 'bench', now());",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO routines (id, company_id, title, assignee_agent_id, project_id, concurrency_policy, created_at, updated_at)
         SELECT gen_random_uuid(), '00000000-0000-7000-8000-000000000001', 'bench ' || n,
                '00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000003', 'always_enqueue', now(), now()
         FROM generate_series(1, $1) AS n",
    )
    .bind(count)
    .execute(&mut *tx)
    .await?;
    match cron {
        Cron::EveryMinuteFrom(first) => {
            sqlx::query(
                "INSERT INTO routine_triggers (id, company_id, routine_id, kind, cron_expression, timezone, next_run_at, created_at, updated_at)
                 SELECT gen_random_uuid(), company_id, id, 'schedule', '* * * * *', 'UTC', $1, now(), now() FROM routines",
            )
            .bind(first)
            .execute(&mut *tx)
            .await?;
        }
        Cron::OnceAt(at, jitter) => {
            let cron = at.format("%-M %-H %-d %-m *").to_string();
            sqlx::query(
                "INSERT INTO routine_triggers (id, company_id, routine_id, kind, cron_expression, timezone, next_run_at,
                                               jitter_sec, created_at, updated_at)
                 SELECT gen_random_uuid(), company_id, id, 'schedule', $1, 'UTC', $2, $3, now(), now() FROM routines",
            )
            .bind(cron)
            .bind(at)
            .bind(jitter)
            .execute(&mut *tx)
            .await?;
        }
        Cron::DailyTomorrow => {
            sqlx::query(
                "INSERT INTO routine_triggers (id, company_id, routine_id, kind, cron_expression, timezone, next_run_at, created_at, updated_at)
                 SELECT gen_random_uuid(), company_id, id, 'schedule', (n % 60) || ' ' || (n / 60 % 24) || ' * * *', 'UTC',
                        date_trunc('day', now()) + interval '1 day' + (n / 60 % 24) * interval '1 hour' + (n % 60) * interval '1 minute',
                        now(), now()
                 FROM (SELECT id, company_id, row_number() OVER () AS n FROM routines) AS r",
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    history(database, routines.clamp(1_000, 100_000)).await
}

/// A past of `n` finished runs (each with its issue, event, heartbeat run, job and audit
/// entry) in another company, then statistics for every table: the database looks like one in
/// use, so the planner's choices are the ones production gets (in a fresh database whose
/// tables look empty it plans lookups as scans of the whole table, and keeps those plans).
async fn history(database: &TestDb, n: usize) -> anyhow::Result<()> {
    let n = i64::try_from(n)?;
    let mut tx = database.pool.begin().await?;
    sqlx::raw_sql(
        "INSERT INTO companies (id, name, created_at) VALUES ('00000000-0000-7000-8000-0000000000a1', 'history', now());
         INSERT INTO agents (id, company_id, name, created_at, updated_at)
             VALUES ('00000000-0000-7000-8000-0000000000a2', '00000000-0000-7000-8000-0000000000a1', 'history', now(), now());
         INSERT INTO projects (id, company_id, name, created_at)
             VALUES ('00000000-0000-7000-8000-0000000000a3', '00000000-0000-7000-8000-0000000000a1', 'history', now());
         INSERT INTO routines (id, company_id, title, assignee_agent_id, project_id, created_at, updated_at)
             VALUES ('00000000-0000-7000-8000-0000000000a4', '00000000-0000-7000-8000-0000000000a1', 'history',
                     '00000000-0000-7000-8000-0000000000a2', '00000000-0000-7000-8000-0000000000a3', now(), now());",
    )
    .execute(&mut *tx)
    .await?;
    for statement in [
        "INSERT INTO routine_runs (id, company_id, routine_id, source, status, triggered_at, completed_at, payload, updated_at)
         SELECT md5('run' || n)::uuid, '00000000-0000-7000-8000-0000000000a1', '00000000-0000-7000-8000-0000000000a4',
                'manual', 'completed', now() - n * interval '1 minute', now() - n * interval '1 minute', '{}', now()
         FROM generate_series(1, $1) AS n",
        "INSERT INTO issues (id, company_id, title, project_id, assignee_agent_id, status, routine_id, origin_run_id, created_at, updated_at)
         SELECT md5('issue' || n)::uuid, '00000000-0000-7000-8000-0000000000a1', 'history', '00000000-0000-7000-8000-0000000000a3',
                '00000000-0000-7000-8000-0000000000a2', 'done', '00000000-0000-7000-8000-0000000000a4', md5('run' || n)::uuid,
                now() - n * interval '1 minute', now()
         FROM generate_series(1, $1) AS n",
        "INSERT INTO issue_events (id, company_id, issue_id, type, actor_type, data, created_at)
         SELECT md5('event' || n)::uuid, '00000000-0000-7000-8000-0000000000a1', md5('issue' || n)::uuid, 'created', 'system', '{}',
                now() - n * interval '1 minute'
         FROM generate_series(1, $1) AS n",
        "INSERT INTO heartbeat_runs (id, company_id, agent_id, issue_id, routine_run_id, status, context, created_at, started_at, finished_at)
         SELECT md5('heartbeat' || n)::uuid, '00000000-0000-7000-8000-0000000000a1', '00000000-0000-7000-8000-0000000000a2',
                md5('issue' || n)::uuid, md5('run' || n)::uuid, 'succeeded', '{}', now() - n * interval '1 minute',
                now() - n * interval '1 minute', now() - n * interval '1 minute'
         FROM generate_series(1, $1) AS n",
        "INSERT INTO jobs (id, kind, payload, state, run_at, attempts, max_attempts, created_at, updated_at, finished_at)
         SELECT md5('job' || n)::uuid, 'dispatch_run', jsonb_build_object('runId', md5('run' || n)::uuid), 'succeeded',
                now() - n * interval '1 minute', 1, 10, now() - n * interval '1 minute', now(), now()
         FROM generate_series(1, $1) AS n",
        "INSERT INTO activity_log (id, company_id, actor_type, action, entity_type, entity_id, details, created_at)
         SELECT md5('activity' || n)::uuid, '00000000-0000-7000-8000-0000000000a1', 'system', 'run.dispatched', 'routine_run',
                md5('run' || n)::uuid, '{}', now() - n * interval '1 minute'
         FROM generate_series(1, $1) AS n",
    ] {
        sqlx::query(statement).bind(n).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(&database.pool).await?;
    Ok(())
}

/// Heartbeat runs of the seeded company (the history's are not counted).
pub(crate) async fn heartbeat_runs(database: &TestDb) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM heartbeat_runs WHERE agent_id = '00000000-0000-7000-8000-000000000002'",
    )
    .fetch_one(&database.pool)
    .await?)
}
