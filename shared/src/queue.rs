//! The durable job queue, on one Postgres table (`jobs`).
//!
//! - **Enqueue** happens inside the caller's transaction ([`enqueue`]), so a job exists exactly
//!   when the row that needs it does; the transaction also `NOTIFY`s [`JOBS_CHANNEL`] so idle
//!   workers wake at once instead of at their next poll.
//! - **Claim** is one statement ([`Queue::claim`]): due queued jobs are picked with
//!   `FOR UPDATE SKIP LOCKED`, marked `running` with a lease (`lease_owner`, `lease_until`) and
//!   their attempt counter incremented.
//! - **Fencing**: every later write about a claimed job names the owner and the attempt it
//!   claimed; a worker whose lease expired and was re-claimed by another changes nothing.
//!   Effects that must happen once are written in the same transaction that completes the job
//!   ([`Queue::begin_fenced`] then [`complete_in`]).
//! - **Failure** ([`Queue::retry`]): the job returns to `queued` with `run_at` pushed back by an
//!   exponential backoff with jitter, or becomes `dead` after `max_attempts` (or at once for a
//!   fatal error), keeping `last_error` for operators.
//! - **Reaping** ([`Queue::reap`]): jobs whose lease expired go back to the queue (or `dead` when
//!   their attempts are used up), so a worker that died never strands a job.
//!
//! Time comes from the injected clock and is passed to every statement as `$now`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::clock::SharedClock;

/// The `NOTIFY` channel announcing new jobs.
pub const JOBS_CHANNEL: &str = "nexus_jobs";

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// What handles it.
    pub kind: &'static str,
    /// Its arguments.
    pub payload: Value,
    /// Not before this instant.
    pub run_at: DateTime<Utc>,
    /// Attempts before it is `dead`.
    pub max_attempts: i32,
    /// W3C trace context of the request that caused it (`{"traceparent": …}`).
    pub trace_context: Option<Value>,
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Id.
    pub id: Uuid,
    /// Kind.
    pub kind: String,
    /// Arguments.
    pub payload: Value,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
    /// Attempts before it is `dead`.
    pub max_attempts: i32,
    /// Trace context of its cause.
    pub trace_context: Option<Value>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Who holds the lease.
    pub lease_owner: String,
}

/// Why a job attempt did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Try again after a backoff (until `max_attempts`).
    #[error("{0}")]
    Retry(String),
    /// Never try again: the job is `dead` at once.
    #[error("{0}")]
    Fatal(String),
}

impl From<sqlx::Error> for JobError {
    fn from(error: sqlx::Error) -> Self {
        Self::Retry(format!("database error: {error}"))
    }
}

/// Enqueues a job on `conn`, inside the caller's transaction, and notifies workers (the
/// notification is delivered when that transaction commits).
///
/// # Errors
/// The database failed.
pub async fn enqueue(
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
pub async fn enqueue_all_quietly(
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
        kinds.push(spec.kind.to_owned());
        payloads.push(spec.payload);
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
pub async fn notify(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_notify($1, '')", JOBS_CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks fenced jobs `succeeded` inside the transaction that wrote their effects.
///
/// # Errors
/// The database failed.
pub async fn complete_in(
    tx: &mut Transaction<'_, Postgres>,
    jobs: &[&Job],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    sqlx::query!(
        "UPDATE jobs SET state = 'succeeded', lease_owner = NULL, lease_until = NULL,
                         finished_at = $2, updated_at = $2
         WHERE id = ANY($1)",
        &ids,
        now,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The delay before attempt `attempts + 1`: 1 s doubled per attempt, at most an hour, with
/// "equal jitter" (between half and all of it) so retries of many jobs spread out.
#[must_use]
pub fn backoff(attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let full = Duration::from_secs(1u64 << exponent).min(Duration::from_secs(3600));
    let jitter: [u8; 2] = crate::crypto::random_bytes();
    let fraction = f64::from(u16::from_le_bytes(jitter)) / f64::from(u16::MAX);
    full.mul_f64(0.5 + fraction / 2.0)
}

/// Where a retried job went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Back in the queue, due at the given instant.
    Requeued(DateTime<Utc>),
    /// Out of attempts (or fatal): `dead`.
    Dead,
    /// The lease was lost to another worker; nothing was written.
    LeaseLost,
}

/// One worker's handle on the queue.
#[derive(Debug, Clone)]
pub struct Queue {
    pool: PgPool,
    clock: SharedClock,
    owner: String,
    lease: TimeDelta,
}

impl Queue {
    /// A queue handle claiming as `owner` with leases of `lease`.
    #[must_use]
    pub fn new(pool: PgPool, clock: SharedClock, owner: String, lease: Duration) -> Self {
        let lease = TimeDelta::from_std(lease).unwrap_or(TimeDelta::seconds(30));
        Self {
            pool,
            clock,
            owner,
            lease,
        }
    }

    /// The lease owner name of this handle.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Claims up to `limit` due jobs, oldest due first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn claim(&self, limit: i64) -> Result<Vec<Job>, sqlx::Error> {
        let now = self.clock.now();
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
               RETURNING j.id, j.kind, j.payload, j.attempts, j.max_attempts, j.trace_context, j.created_at"#,
            self.owner,
            now + self.lease,
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
                kind: j.kind,
                payload: j.payload,
                attempts: j.attempts,
                max_attempts: j.max_attempts,
                trace_context: j.trace_context,
                created_at: j.created_at,
                lease_owner: self.owner.clone(),
            })
            .collect();
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    /// Opens a transaction holding the job's row, or `None` when this worker no longer holds
    /// the lease it claimed (expired and re-claimed, or reaped). Effects written in it and
    /// [`complete_in`] commit together.
    ///
    /// # Errors
    /// The database failed.
    pub async fn begin_fenced(
        &self,
        job: &Job,
    ) -> Result<Option<Transaction<'static, Postgres>>, sqlx::Error> {
        let (tx, held) = self.begin_fenced_all(std::slice::from_ref(job)).await?;
        Ok((!held.is_empty()).then_some(tx))
    }

    /// Opens a transaction holding the rows of those `jobs` whose lease this worker still
    /// holds (locked in id order, so concurrent callers cannot deadlock), and returns them.
    ///
    /// # Errors
    /// The database failed.
    pub async fn begin_fenced_all<'j>(
        &self,
        jobs: &'j [Job],
    ) -> Result<(Transaction<'static, Postgres>, Vec<&'j Job>), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let attempts: Vec<i32> = jobs.iter().map(|j| j.attempts).collect();
        let held = sqlx::query_scalar!(
            r#"SELECT j.id FROM jobs j
               JOIN UNNEST($1::uuid[], $2::int4[]) AS c(id, attempts)
                 ON c.id = j.id AND c.attempts = j.attempts
               WHERE j.state = 'running' AND j.lease_owner = $3
               ORDER BY j.id
               FOR UPDATE OF j"#,
            &ids,
            &attempts,
            self.owner,
        )
        .fetch_all(&mut *tx)
        .await?;
        let held: std::collections::HashSet<Uuid> = held.into_iter().collect();
        Ok((tx, jobs.iter().filter(|j| held.contains(&j.id)).collect()))
    }

    /// Completes a job whose effects happened outside the database (an HTTP delivery).
    ///
    /// # Errors
    /// The database failed.
    pub async fn complete(&self, job: &Job) -> Result<bool, sqlx::Error> {
        let Some(mut tx) = self.begin_fenced(job).await? else {
            return Ok(false);
        };
        complete_in(&mut tx, &[job], self.clock.now()).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a failed attempt: back to the queue after a backoff, or `dead` when attempts are
    /// used up or the error is fatal.
    ///
    /// # Errors
    /// The database failed.
    pub async fn retry(&self, job: &Job, error: &JobError) -> Result<RetryOutcome, sqlx::Error> {
        let now = self.clock.now();
        let dead = matches!(error, JobError::Fatal(_)) || job.attempts >= job.max_attempts;
        let run_at =
            now + TimeDelta::from_std(backoff(job.attempts)).unwrap_or(TimeDelta::seconds(1));
        let message = error.to_string();
        let state = if dead { "dead" } else { "queued" };
        let updated = sqlx::query!(
            "UPDATE jobs SET state = $4::text, run_at = CASE WHEN $4 = 'queued' THEN $5 ELSE run_at END,
                             lease_owner = NULL, lease_until = NULL, last_error = $6,
                             updated_at = $7::timestamptz,
                             finished_at = CASE WHEN $4 = 'dead' THEN $7::timestamptz END
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3",
            job.id,
            job.lease_owner,
            job.attempts,
            state,
            run_at,
            message,
            now,
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
    pub async fn reap(&self) -> Result<ReapReport, sqlx::Error> {
        let now = self.clock.now();
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
                report.dead.push((row.kind, row.payload));
            } else {
                report.requeued += 1;
            }
        }
        Ok(report)
    }
}

/// Queue depth of one kind and state.
#[derive(Debug, Clone)]
pub struct QueueDepth {
    /// Job kind.
    pub kind: String,
    /// `queued` or `running`.
    pub state: String,
    /// How many.
    pub count: i64,
    /// Seconds since the oldest due one became due (queued) or was claimed (running).
    pub oldest_age_secs: f64,
}

impl Queue {
    /// Depth and age of the queue by kind and state (`queued` jobs that are due, and `running`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn depth(&self) -> Result<Vec<QueueDepth>, sqlx::Error> {
        let now = self.clock.now();
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
}

/// What a reaping pass did.
#[derive(Debug, Default)]
pub struct ReapReport {
    /// Jobs returned to the queue.
    pub requeued: usize,
    /// Jobs that went `dead` (kind, payload).
    pub dead: Vec<(String, Value)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        for attempts in 1..=30 {
            let full =
                Duration::from_secs(1u64 << (attempts - 1).min(20)).min(Duration::from_secs(3600));
            let delay = backoff(attempts);
            assert!(
                delay >= full / 2 && delay <= full,
                "attempt {attempts}: {delay:?} vs {full:?}"
            );
        }
        let samples: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(10)).collect();
        assert!(samples.len() > 1, "jitter varies the delay");
    }
}
