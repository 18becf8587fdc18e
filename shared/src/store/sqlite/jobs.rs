//! The job queue on SQLite: the same `jobs` table and fencing rules as on Postgres. Claims need
//! no `SKIP LOCKED`: transactions are serialised, so a claim sees every earlier claim.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::SqliteStore;

/// A job row as the claims read it.
type JobRow = (
    Uuid,
    String,
    Value,
    i32,
    i32,
    Option<Value>,
    DateTime<Utc>,
    DateTime<Utc>,
);
use crate::{
    engine::tasks::{
        AfterFailure, Job, JobError, JobSpec, QueueDepth, ReapReport, RetryOutcome, Task,
        after_failure, split_taken,
    },
    store::{Dispatched, StoreResult, Taken},
};

/// Enqueues jobs in the caller's transaction; the caller announces them after committing.
pub(super) async fn enqueue(
    conn: &mut SqliteConnection,
    specs: Vec<JobSpec>,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Uuid>> {
    let mut ids = Vec::with_capacity(specs.len());
    for spec in specs {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO jobs (id, kind, payload, state, run_at, max_attempts, trace_context,
                               created_at, updated_at)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?7)",
        )
        .bind(id)
        .bind(spec.task.kind())
        .bind(spec.task.payload())
        .bind(spec.run_at)
        .bind(spec.max_attempts)
        .bind(spec.trace_context.as_ref())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

/// The jobs among `jobs` whose lease their owner still holds.
pub(super) async fn held<'j>(
    conn: &mut SqliteConnection,
    jobs: &'j [Job],
) -> StoreResult<Vec<&'j Job>> {
    let mut held = Vec::with_capacity(jobs.len());
    for job in jobs {
        let holds = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND state = 'running'
                                                AND lease_owner = ?2 AND attempts = ?3)",
        )
        .bind(job.id)
        .bind(&job.lease_owner)
        .bind(job.attempts)
        .fetch_one(&mut *conn)
        .await?;
        if holds {
            held.push(job);
        }
    }
    Ok(held)
}

/// Completes jobs in the caller's transaction: a job that succeeded is deleted (as on Postgres).
pub(super) async fn complete_in(conn: &mut SqliteConnection, ids: &[Uuid]) -> StoreResult<()> {
    for id in ids {
        sqlx::query("DELETE FROM jobs WHERE id = ?1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl SqliteStore {
    /// See [`crate::store::Storage::enqueue_job`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn enqueue_job(&self, spec: JobSpec) -> StoreResult<Uuid> {
        let mut tx = self.pool.begin().await?;
        let ids = enqueue(&mut tx, vec![spec], self.now()).await?;
        tx.commit().await?;
        self.announce_jobs();
        Ok(ids[0])
    }

    /// See [`crate::store::Storage::next_job_at`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn next_job_at(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT min(run_at) FROM jobs WHERE state = 'queued' AND run_at > ?1",
        )
        .bind(self.now())
        .fetch_one(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::claim_jobs`].
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
        let rows =
            sqlx::query_as::<_, JobRow>(
                "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_until = ?2,
                             attempts = attempts + 1, updated_at = ?3
             WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND run_at <= ?3
                          ORDER BY run_at, id LIMIT ?4)
             RETURNING id, kind, payload, attempts, max_attempts, trace_context, created_at, run_at",
            )
            .bind(owner)
            .bind(now + lease)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut jobs: Vec<Job> = rows
            .into_iter()
            .map(
                |(id, kind, payload, attempts, max_attempts, trace_context, created_at, run_at)| {
                    Job {
                        id,
                        task: Task::parse(&kind, payload),
                        attempts,
                        max_attempts,
                        trace_context,
                        created_at,
                        run_at,
                        lease_owner: owner.to_owned(),
                    }
                },
            )
            .collect();
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// See [`crate::store::Storage::claim_and_dispatch`]. Transactions are serialised, so the
    /// jobs read are taken by this transaction alone.
    ///
    /// # Errors
    /// The database failed (nothing was written).
    pub async fn claim_and_dispatch(
        &self,
        owner: &str,
        lease: Duration,
        limit: i64,
    ) -> StoreResult<Taken> {
        let now = self.now();
        let lease = TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(30));
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query_as::<_, JobRow>(
            "SELECT id, kind, payload, attempts, max_attempts, trace_context, created_at, run_at
                 FROM jobs WHERE state = 'queued' AND run_at <= ?1
                 ORDER BY run_at, id LIMIT ?2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let jobs: Vec<Job> = rows
            .into_iter()
            .map(
                |(id, kind, payload, attempts, max_attempts, trace_context, created_at, run_at)| {
                    Job {
                        id,
                        task: Task::parse(&kind, payload),
                        attempts: attempts + 1,
                        max_attempts,
                        trace_context,
                        created_at,
                        run_at,
                        lease_owner: owner.to_owned(),
                    }
                },
            )
            .collect();
        let (dispatched, run_ids, claimed) = split_taken(jobs);
        let (outcomes, wakeups) = if run_ids.is_empty() {
            (Vec::new(), false)
        } else {
            self.dispatch_runs(&mut tx, &run_ids, now).await?
        };
        let done: Vec<Uuid> = dispatched.iter().map(|j| j.id).collect();
        complete_in(&mut tx, &done).await?;
        for job in &claimed {
            sqlx::query(
                "UPDATE jobs SET state = 'running', lease_owner = ?2, lease_until = ?3,
                                 attempts = ?4, updated_at = ?5
                 WHERE id = ?1",
            )
            .bind(job.id)
            .bind(owner)
            .bind(now + lease)
            .bind(job.attempts)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if wakeups {
            self.announce_jobs();
        }
        Ok(Taken {
            dispatched,
            outcomes,
            claimed,
        })
    }

    /// See [`crate::store::Storage::complete_jobs`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn complete_jobs(&self, jobs: &[Job]) -> StoreResult<Vec<Uuid>> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = held(&mut tx, jobs).await?.iter().map(|j| j.id).collect();
        complete_in(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// See [`crate::store::Storage::dispatch_jobs`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn dispatch_jobs(&self, jobs: &[Job]) -> StoreResult<Dispatched> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let held = held(&mut tx, jobs).await?;
        let run_ids: Vec<Uuid> = held.iter().filter_map(|job| job.task.run_id()).collect();
        let (outcomes, wakeups) = self.dispatch_runs(&mut tx, &run_ids, now).await?;
        let ids: Vec<Uuid> = held.iter().map(|j| j.id).collect();
        complete_in(&mut tx, &ids).await?;
        tx.commit().await?;
        if wakeups {
            self.announce_jobs();
        }
        Ok(Dispatched {
            held: ids,
            outcomes,
        })
    }

    /// See [`crate::store::Storage::retry_job`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn retry_job(&self, job: &Job, error: &JobError) -> StoreResult<RetryOutcome> {
        let now = self.now();
        let (dead, run_at, refund) = match after_failure(job, error, now) {
            AfterFailure::Dead => (true, now, 0),
            AfterFailure::Requeue { at, refund } => (false, at, i32::from(refund)),
        };
        let state = if dead { "dead" } else { "queued" };
        let updated = sqlx::query(
            "UPDATE jobs SET state = ?4, run_at = CASE WHEN ?4 = 'queued' THEN ?5 ELSE run_at END,
                             lease_owner = NULL, lease_until = NULL, last_error = ?6,
                             updated_at = ?7, attempts = attempts - ?8,
                             finished_at = CASE WHEN ?4 = 'dead' THEN ?7 END
             WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND attempts = ?3",
        )
        .bind(job.id)
        .bind(&job.lease_owner)
        .bind(job.attempts)
        .bind(state)
        .bind(run_at)
        .bind(error.to_string())
        .bind(now)
        .bind(refund)
        .execute(&self.pool)
        .await?;
        Ok(match (updated.rows_affected(), dead) {
            (0, _) => RetryOutcome::LeaseLost,
            (_, true) => RetryOutcome::Dead,
            (_, false) => RetryOutcome::Requeued(run_at),
        })
    }

    /// See [`crate::store::Storage::reap_jobs`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn reap_jobs(&self) -> StoreResult<ReapReport> {
        let now = self.now();
        let rows = sqlx::query_as::<_, (String, Value, String)>(
            "UPDATE jobs SET
                 state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                 run_at = ?1, lease_owner = NULL, lease_until = NULL,
                 last_error = 'lease expired (the worker stopped or stalled)',
                 finished_at = CASE WHEN attempts >= max_attempts THEN ?1 END,
                 updated_at = ?1
             WHERE state = 'running' AND lease_until < ?1
             RETURNING kind, payload, state",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut report = ReapReport::default();
        for (kind, payload, state) in rows {
            if state == "dead" {
                report.dead.push(Task::parse(&kind, payload));
            } else {
                report.requeued += 1;
            }
        }
        if report.requeued > 0 {
            self.announce_jobs();
        }
        Ok(report)
    }

    /// See [`crate::store::Storage::queue_depth`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn queue_depth(&self) -> StoreResult<Vec<QueueDepth>> {
        let now = self.now();
        let rows = sqlx::query_as::<_, (String, String, i64, DateTime<Utc>)>(
            "SELECT kind, state, count(*),
                    min(CASE WHEN state = 'running' THEN updated_at ELSE run_at END)
             FROM jobs
             WHERE (state = 'queued' AND run_at <= ?1) OR state = 'running'
             GROUP BY kind, state",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, state, count, oldest)| QueueDepth {
                kind,
                state,
                count,
                oldest_age_secs: (now - oldest).as_seconds_f64().max(0.0),
            })
            .collect())
    }
}
