//! The durable job queue: each worker's [`Queue`] handle (the job types are the engine's,
//! [`crate::engine::tasks`], re-exported here). The storage backend keeps the jobs (Postgres:
//! one `jobs` table, see `store/pg/jobs.rs`); every backend keeps these semantics:
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

use std::{sync::Arc, time::Duration};

use uuid::Uuid;

pub use crate::engine::tasks::{
    AfterFailure, DELIVER_WAKEUP, DISPATCH_MAX_ATTEMPTS, DISPATCH_RUN, Job, JobError, JobSpec,
    QueueDepth, ReapReport, RetryOutcome, Task, WAKEUP_MAX_ATTEMPTS, after_failure, backoff,
};
use crate::{
    clock::SharedClock,
    store::{Dispatched, Store, StoreResult, Taken, WorkerStorage},
};

/// One worker's handle on the queue: its lease owner name and lease length.
#[derive(Debug, Clone)]
pub struct Queue {
    store: Arc<dyn WorkerStorage>,
    owner: String,
    lease: Duration,
}

impl Queue {
    /// A queue handle claiming as `owner` with leases of `lease`.
    #[must_use]
    pub fn new(store: &Store, owner: String, lease: Duration) -> Self {
        Self {
            store: store.clone().worker(),
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
