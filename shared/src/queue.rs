//! The durable job queue: its types and each worker's [`Queue`] handle. The storage backend
//! keeps the jobs (Postgres: one `jobs` table, see `store/jobs.rs`); every backend keeps these
//! semantics:
//!
//! - **Enqueue** happens inside the transaction of the row that needs the job, so a job exists
//!   exactly when that row does; idle workers are woken at once ([`Topic::Jobs`]) instead of at
//!   their next poll.
//! - **Claim** ([`Queue::claim`]) takes due queued jobs oldest first, marks them `running` with
//!   a lease (`lease_owner`, `lease_until`) and increments their attempt counter; two claims
//!   never get the same job.
//! - **Fencing**: every later write about a claimed job names the owner and the attempt it
//!   claimed; a worker whose lease expired and was re-claimed by another changes nothing.
//!   Effects that must happen once commit in the same transaction that completes the job
//!   ([`Queue::dispatch`]).
//! - **Dispatch as taken** ([`Queue::take`]): the first attempt of a dispatch job needs no
//!   lease — it is taken (row locked, `SKIP LOCKED`), dispatched and completed in one
//!   transaction, and if that transaction fails or its process dies, the job is untouched and
//!   due again at once. Every other job taken is claimed with a lease as above.
//! - **Completion** deletes the job: what it did is recorded by its effects (the run, the
//!   heartbeat run, the audit log), and the table holds only pending, running and dead jobs.
//! - **Failure** ([`Queue::retry`]): the job returns to `queued` with `run_at` pushed back by an
//!   exponential backoff with jitter, or becomes `dead` after `max_attempts` (or at once for a
//!   fatal error), keeping `last_error` for operators.
//! - **Reaping** ([`Queue::reap`]): jobs whose lease expired go back to the queue (or `dead` when
//!   their attempts are used up), so a worker that died never strands a job.
//!
//! Time comes from the injected clock.
//!
//! [`Topic::Jobs`]: crate::store::Topic::Jobs

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    clock::SharedClock,
    store::{Dispatched, Store, StoreError, StoreResult, Taken},
};

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
    /// When it became due (this attempt's `run_at`: `created_at` for a job due at once, later
    /// for a job enqueued ahead, such as a prepared schedule fire, or a retry after its backoff).
    pub run_at: DateTime<Utc>,
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

impl From<StoreError> for JobError {
    fn from(error: StoreError) -> Self {
        Self::Retry(error.to_string())
    }
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

/// What a failed attempt leads to at `now`: `dead` (attempts used up, or a fatal error), or
/// back to the queue at the returned instant.
#[must_use]
pub fn after_failure(job: &Job, error: &JobError, now: DateTime<Utc>) -> (bool, DateTime<Utc>) {
    let dead = matches!(error, JobError::Fatal(_)) || job.attempts >= job.max_attempts;
    let run_at = now
        + chrono::TimeDelta::from_std(backoff(job.attempts))
            .unwrap_or(chrono::TimeDelta::seconds(1));
    (dead, run_at)
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

/// One worker's handle on the queue: its lease owner name and lease length.
#[derive(Debug, Clone)]
pub struct Queue {
    store: Store,
    owner: String,
    lease: Duration,
}

impl Queue {
    /// A queue handle claiming as `owner` with leases of `lease`.
    #[must_use]
    pub fn new(store: Store, owner: String, lease: Duration) -> Self {
        Self {
            store,
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
        self.store.clock()
    }

    /// Claims up to `limit` due jobs, oldest due first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn claim(&self, limit: i64) -> StoreResult<Vec<Job>> {
        self.store.claim_jobs(&self.owner, self.lease, limit).await
    }

    /// Takes up to `limit` due jobs: first dispatch attempts are dispatched and completed in
    /// the taking transaction, the others claimed like [`Queue::claim`] claims (see
    /// [`crate::store::Storage::claim_and_dispatch`]).
    ///
    /// # Errors
    /// The database failed; nothing was taken.
    pub async fn take(&self, limit: i64) -> StoreResult<Taken> {
        self.store
            .claim_and_dispatch(&self.owner, self.lease, limit)
            .await
    }

    /// Completes a job whose effects happened outside the database (an HTTP delivery); `false`
    /// when the lease was lost.
    ///
    /// # Errors
    /// The database failed.
    pub async fn complete(&self, job: &Job) -> StoreResult<bool> {
        Ok(!self
            .store
            .complete_jobs(std::slice::from_ref(job))
            .await?
            .is_empty())
    }

    /// Completes the jobs whose lease this worker still holds; returns their ids.
    ///
    /// # Errors
    /// The database failed.
    pub async fn complete_all(&self, jobs: &[Job]) -> StoreResult<Vec<Uuid>> {
        self.store.complete_jobs(jobs).await
    }

    /// Dispatches the runs of `dispatch_run` jobs and completes the jobs in one transaction
    /// (those whose lease is still held).
    ///
    /// # Errors
    /// The database failed; nothing was written.
    pub async fn dispatch(&self, jobs: &[Job]) -> StoreResult<Dispatched> {
        self.store.dispatch_jobs(jobs).await
    }

    /// Records a failed attempt: back to the queue after a backoff, or `dead` when attempts are
    /// used up or the error is fatal.
    ///
    /// # Errors
    /// The database failed.
    pub async fn retry(&self, job: &Job, error: &JobError) -> StoreResult<RetryOutcome> {
        self.store.retry_job(job, error).await
    }

    /// Returns jobs with expired leases to the queue (due now), or makes them `dead` when their
    /// attempts are used up. Returns the jobs that went dead, for their owners' clean-up.
    ///
    /// # Errors
    /// The database failed.
    pub async fn reap(&self) -> StoreResult<ReapReport> {
        self.store.reap_jobs().await
    }

    /// Depth and age of the queue by kind and state (`queued` jobs that are due, and `running`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn depth(&self) -> StoreResult<Vec<QueueDepth>> {
        self.store.queue_depth().await
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
