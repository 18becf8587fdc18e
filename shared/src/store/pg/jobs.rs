//! The job queue on Postgres: one `jobs` table (semantics in [`crate::queue`]).
//!
//! Claim is one statement (`FOR UPDATE SKIP LOCKED` on the `jobs_due` index); fencing locks the
//! jobs' rows for the lease owner and attempt they were claimed with; enqueueing happens in the
//! caller's transaction and `NOTIFY`s [`JOBS_CHANNEL`] (delivered on commit). Time comes from
//! the injected clock and is passed to every statement as `$now`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction, postgres::PgListener};
use uuid::Uuid;

use super::{PgStore, TRIGGERS_CHANNEL, begin_by_key};
use crate::{
    engine::tasks::{
        AfterFailure, Job, JobError, JobSpec, QueueDepth, ReapReport, RetryOutcome, Task,
        after_failure, split_taken,
    },
    store::{Dispatched, StoreResult, Subscription, Taken, Topic},
};

/// The `NOTIFY` channel announcing new jobs.
pub const JOBS_CHANNEL: &str = "nexus_jobs";

/// Enqueues a job on `conn`, inside the caller's transaction, and notifies workers (the
/// notification is delivered when that transaction commits).
///
/// # Errors
/// The database failed.
pub(crate) async fn enqueue(
    conn: &mut PgConnection,
    spec: JobSpec,
    now: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let ids = enqueue_all_quietly(conn, vec![spec], now).await?;
    notify(conn).await?;
    Ok(ids[0])
}

/// Enqueues many jobs in one statement, without notifying; returns their ids in order.
///
/// # Errors
/// The database failed.
pub(crate) async fn enqueue_all_quietly(
    conn: &mut PgConnection,
    specs: Vec<JobSpec>,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(specs.len());
    let mut kinds = Vec::with_capacity(specs.len());
    let mut payloads = Vec::with_capacity(specs.len());
    let mut run_ats = Vec::with_capacity(specs.len());
    let mut max_attempts = Vec::with_capacity(specs.len());
    let mut traces = Vec::with_capacity(specs.len());
    for spec in specs {
        ids.push(Uuid::now_v7());
        kinds.push(spec.task.kind().to_owned());
        payloads.push(spec.task.payload());
        run_ats.push(spec.run_at);
        max_attempts.push(spec.max_attempts);
        traces.push(spec.trace_context);
    }
    sqlx::query!(
        "INSERT INTO jobs (id, kind, payload, state, run_at, max_attempts, trace_context, created_at, updated_at)
         SELECT id, kind, payload, 'queued', run_at, max_attempts, trace_context, $7, $7
         FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::timestamptz[], $5::int4[], $6::jsonb[])
              AS j(id, kind, payload, run_at, max_attempts, trace_context)",
        &ids,
        &kinds,
        &payloads,
        &run_ats,
        &max_attempts,
        &traces as &[Option<Value>],
        now,
    )
    .execute(&mut *conn)
    .await?;
    Ok(ids)
}

/// Tells idle workers that jobs were enqueued (delivered when the transaction commits).
///
/// # Errors
/// The database failed.
pub(crate) async fn notify(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, '')", JOBS_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// Completes fenced jobs inside the transaction that wrote their effects: a job that succeeded
/// is deleted (its record is what it wrote — the run, the heartbeat run, the audit entry), so
/// the table holds only pending, running and dead jobs.
pub(super) async fn complete_in(conn: &mut PgConnection, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM jobs WHERE id = ANY($1)", ids)
        .execute(conn)
        .await?;
    Ok(())
}

impl PgStore {
    /// Enqueues a job in its own transaction and announces it.
    ///
    /// # Errors
    /// The database failed.
    pub async fn enqueue_job(&self, spec: JobSpec) -> StoreResult<Uuid> {
        let mut tx = self.pool.begin().await?;
        let id = enqueue(&mut tx, spec, self.now()).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// When the earliest queued job that is not due yet becomes due.
    ///
    /// # Errors
    /// The database failed.
    pub async fn next_job_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar!(
            "SELECT min(run_at) FROM jobs WHERE state = 'queued' AND run_at > $1",
            self.now()
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Claims up to `limit` due jobs, oldest due first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn claim_jobs(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> StoreResult<Vec<Job>> {
        let now = self.now();
        let lease = TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(30));
        // The claim must walk `jobs_due` in order, stop after `limit` jobs, and update them
        // through the primary key. Without fresh statistics (a burst fills the queue within a
        // second; a long-lived table is mostly finished jobs) the planner expects a handful of
        // rows and instead sorts every queued job, or scans the whole table once per claimed
        // job — hundreds of milliseconds per claim with ten thousand queued. Sorts and
        // sequential scans are ruled out for this transaction only.
        let mut tx = self.pool.begin().await?;
        sqlx::raw_sql("SET LOCAL enable_sort = off; SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await?;
        let jobs = sqlx::query!(
            r#"WITH next AS MATERIALIZED (
                   SELECT id FROM jobs
                   WHERE state = 'queued' AND run_at <= $3
                   ORDER BY run_at, id
                   LIMIT $4
                   FOR UPDATE SKIP LOCKED)
               UPDATE jobs j SET state = 'running', lease_owner = $1, lease_until = $2,
                                 attempts = j.attempts + 1, updated_at = $3
               FROM next WHERE j.id = next.id
               RETURNING j.id, j.kind, j.payload, j.attempts, j.max_attempts, j.trace_context, j.created_at,
                         j.run_at"#,
            owner,
            now + lease,
            now,
            limit,
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut jobs: Vec<Job> = jobs
            .into_iter()
            .map(|j| Job {
                id: j.id,
                task: Task::parse(&j.kind, j.payload),
                attempts: j.attempts,
                max_attempts: j.max_attempts,
                trace_context: j.trace_context,
                created_at: j.created_at,
                run_at: j.run_at,
                lease_owner: owner.to_owned(),
            })
            .collect();
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// Takes due jobs and dispatches the first attempts of dispatch jobs among them in the same
    /// transaction (see [`crate::store::Storage::claim_and_dispatch`]): the rows are locked
    /// (`SKIP LOCKED`), never leased, so a dispatch costs no claim write and no second
    /// transaction; if this process dies, the database ends the transaction and the jobs are
    /// due again at once. A transaction left idle for longer than the lease (a stalled worker)
    /// is ended by the database, which is what the lease would have done.
    ///
    /// # Errors
    /// The database failed (the transaction is rolled back).
    pub async fn claim_and_dispatch(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> StoreResult<Taken> {
        let mut tx = self.pool.begin().await?;
        match self.take_in(&mut tx, owner, lease, limit).await {
            Ok(taken) => {
                tx.commit().await?;
                Ok(taken)
            }
            Err(error) => {
                // Rolled back before returning: dropping the transaction would leave its
                // ROLLBACK to a task of the pool, and the taken rows locked until it runs, so a
                // claim made at once after this failure would skip them.
                tx.rollback().await.ok();
                Err(error)
            }
        }
    }

    async fn take_in(
        &self,
        tx: &mut PgConnection,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> StoreResult<Taken> {
        let now = self.now();
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX).max(1);
        let lease = TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(30));
        // As in `claim_jobs`: walk `jobs_due` in order whatever the statistics say. Sorts are
        // allowed again for the dispatch statements; sequential scans stay ruled out, as in
        // every transaction that dispatches (`begin_by_key`).
        sqlx::query!(
            r#"SELECT set_config('enable_sort', 'off', true) AS "sort!",
                      set_config('enable_seqscan', 'off', true) AS "seqscan!",
                      set_config('idle_in_transaction_session_timeout', $1, true) AS "idle!",
                      set_config('statement_timeout', $1, true) AS "statement!""#,
            lease_ms.to_string(),
        )
        .fetch_one(&mut *tx)
        .await?;
        let taken = sqlx::query!(
            r#"SELECT id, kind, payload, attempts, max_attempts, trace_context, created_at, run_at
               FROM jobs
               WHERE state = 'queued' AND run_at <= $1
               ORDER BY run_at, id
               LIMIT $2
               FOR UPDATE SKIP LOCKED"#,
            now,
            limit,
        )
        .fetch_all(&mut *tx)
        .await?;
        if taken.is_empty() {
            return Ok(Taken::default());
        }
        sqlx::raw_sql("SET LOCAL enable_sort TO DEFAULT")
            .execute(&mut *tx)
            .await?;
        let jobs: Vec<Job> = taken
            .into_iter()
            .map(|j| Job {
                id: j.id,
                task: Task::parse(&j.kind, j.payload),
                attempts: j.attempts + 1,
                max_attempts: j.max_attempts,
                trace_context: j.trace_context,
                created_at: j.created_at,
                run_at: j.run_at,
                lease_owner: owner.to_owned(),
            })
            .collect();
        let (dispatched, run_ids, claimed) = split_taken(jobs);
        let outcomes = self.dispatch_runs(tx, &run_ids).await?;
        let done: Vec<Uuid> = dispatched.iter().map(|j| j.id).collect();
        if !done.is_empty() {
            complete_in(tx, &done).await?;
        }
        let leased: Vec<Uuid> = claimed.iter().map(|j| j.id).collect();
        if !leased.is_empty() {
            sqlx::query!(
                "UPDATE jobs SET state = 'running', lease_owner = $2, lease_until = $3,
                                 attempts = attempts + 1, updated_at = $4
                 WHERE id = ANY($1)",
                &leased,
                owner,
                now + lease,
                now,
            )
            .execute(&mut *tx)
            .await?;
        }
        Ok(Taken {
            dispatched,
            outcomes,
            claimed,
        })
    }

    /// Opens a transaction (planned by key, [`begin_by_key`]) holding the rows of those `jobs`
    /// whose lease this worker still holds (locked in id order, so concurrent callers cannot
    /// deadlock), and returns them.
    pub(super) async fn begin_fenced_all<'j>(
        &self,
        jobs: &'j [Job],
    ) -> StoreResult<(Transaction<'static, Postgres>, Vec<&'j Job>)> {
        let mut tx = begin_by_key(&self.pool).await?;
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let attempts: Vec<i32> = jobs.iter().map(|j| j.attempts).collect();
        let owners: Vec<String> = jobs.iter().map(|j| j.lease_owner.clone()).collect();
        let held = sqlx::query_scalar!(
            r#"SELECT j.id FROM jobs j
               JOIN UNNEST($1::uuid[], $2::int4[], $3::text[]) AS c(id, attempts, owner)
                 ON c.id = j.id AND c.attempts = j.attempts AND c.owner = j.lease_owner
               WHERE j.state = 'running'
               ORDER BY j.id
               FOR UPDATE OF j"#,
            &ids,
            &attempts,
            &owners,
        )
        .fetch_all(&mut *tx)
        .await?;
        let held: std::collections::HashSet<Uuid> = held.into_iter().collect();
        Ok((tx, jobs.iter().filter(|j| held.contains(&j.id)).collect()))
    }

    /// Completes (deletes) the jobs whose lease their owner still holds.
    ///
    /// # Errors
    /// The database failed.
    pub async fn complete_jobs(&self, jobs: &[Job]) -> StoreResult<Vec<Uuid>> {
        let (mut tx, held) = self.begin_fenced_all(jobs).await?;
        let ids: Vec<Uuid> = held.iter().map(|j| j.id).collect();
        if !ids.is_empty() {
            complete_in(&mut tx, &ids).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Dispatches the runs of `dispatch_run` jobs whose lease is still held and completes
    /// those jobs, in one transaction.
    ///
    /// # Errors
    /// The database failed.
    pub async fn dispatch_jobs(&self, jobs: &[Job]) -> StoreResult<Dispatched> {
        let (mut tx, held) = self.begin_fenced_all(jobs).await?;
        let run_ids: Vec<Uuid> = held.iter().filter_map(|job| job.task.run_id()).collect();
        let outcomes = self.dispatch_runs(&mut tx, &run_ids).await?;
        let ids: Vec<Uuid> = held.iter().map(|j| j.id).collect();
        complete_in(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(Dispatched {
            held: ids,
            outcomes,
        })
    }

    /// Records a failed attempt: back to the queue after a backoff, or `dead` when attempts are
    /// used up or the error is fatal.
    ///
    /// # Errors
    /// The database failed.
    pub async fn retry_job(&self, job: &Job, error: &JobError) -> StoreResult<RetryOutcome> {
        let now = self.now();
        let (dead, run_at, refund) = match after_failure(job, error, now) {
            AfterFailure::Dead => (true, now, 0),
            AfterFailure::Requeue { at, refund } => (false, at, i32::from(refund)),
        };
        let message = error.to_string();
        let state = if dead { "dead" } else { "queued" };
        let updated = sqlx::query!(
            "UPDATE jobs SET state = $4::text, run_at = CASE WHEN $4 = 'queued' THEN $5 ELSE run_at END,
                             lease_owner = NULL, lease_until = NULL, last_error = $6,
                             updated_at = $7::timestamptz, attempts = attempts - $8,
                             finished_at = CASE WHEN $4 = 'dead' THEN $7::timestamptz END
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3",
            job.id,
            job.lease_owner,
            job.attempts,
            state,
            run_at,
            message,
            now,
            refund,
        )
        .execute(&self.pool)
        .await?;
        Ok(match (updated.rows_affected(), dead) {
            (0, _) => RetryOutcome::LeaseLost,
            (_, true) => RetryOutcome::Dead,
            (_, false) => RetryOutcome::Requeued(run_at),
        })
    }

    /// Returns jobs with expired leases to the queue (due now), or makes them `dead` when their
    /// attempts are used up. Returns the jobs that went dead, for their owners' clean-up.
    ///
    /// # Errors
    /// The database failed.
    pub async fn reap_jobs(&self) -> StoreResult<ReapReport> {
        let now = self.now();
        let rows = sqlx::query!(
            r#"UPDATE jobs SET
                   state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                   run_at = $1, lease_owner = NULL, lease_until = NULL,
                   last_error = 'lease expired (the worker stopped or stalled)',
                   finished_at = CASE WHEN attempts >= max_attempts THEN $1 END,
                   updated_at = $1
               WHERE state = 'running' AND lease_until < $1
               RETURNING id, kind, payload, state"#,
            now,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut report = ReapReport::default();
        for row in rows {
            if row.state == "dead" {
                report.dead.push(Task::parse(&row.kind, row.payload));
            } else {
                report.requeued += 1;
            }
        }
        Ok(report)
    }

    /// Depth and age of the queue by kind and state (`queued` jobs that are due, and `running`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_depth(&self) -> StoreResult<Vec<QueueDepth>> {
        let now = self.now();
        let rows = sqlx::query!(
            r#"SELECT kind, state, count(*) AS "count!",
                      EXTRACT(EPOCH FROM ($1 - min(CASE WHEN state = 'running' THEN updated_at ELSE run_at END)))::float8 AS "age!"
               FROM jobs
               WHERE (state = 'queued' AND run_at <= $1) OR state = 'running'
               GROUP BY kind, state"#,
            now,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| QueueDepth {
                kind: r.kind,
                state: r.state,
                count: r.count,
                oldest_age_secs: r.age.max(0.0),
            })
            .collect())
    }

    /// Listens to `NOTIFY` on the topic's channel.
    ///
    /// # Errors
    /// The database failed.
    pub async fn subscribe(&self, topic: Topic) -> StoreResult<Box<dyn Subscription>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen(match topic {
                Topic::Jobs => JOBS_CHANNEL,
                Topic::Triggers => TRIGGERS_CHANNEL,
            })
            .await?;
        Ok(Box::new(Listening(listener)))
    }
}

struct Listening(PgListener);

#[async_trait]
impl Subscription for Listening {
    async fn recv(&mut self) -> StoreResult<()> {
        self.0.recv().await?;
        Ok(())
    }
}
