//! Group commit of webhook acceptances.
//!
//! Each accepted webhook call must be committed before it is answered, and a commit per call
//! is what bounds ingestion: Postgres spends more on starting a statement, checking the
//! schema's constraints and committing than on the rows themselves. Calls that arrive while
//! a write is in flight are therefore written together in the next one: one statement (run,
//! job and audit entry of each, see [`insert_received`]) and one commit for all of them, and
//! each caller is answered once that commit is done, so a 202 still means committed.
//!
//! Nothing waits to form a batch: a call that arrives while nothing is being written is
//! written at once, alone, so an idle process adds no latency. Under load one write is in
//! flight at a time and batches grow with the load. A write still in flight after
//! [`STALLED`] — it waits for a trigger that another transaction holds, or the database is
//! slow — does not hold up the rest: the next write starts beside it, up to [`WRITERS`].

use std::{collections::HashMap, sync::Arc};

use chrono::TimeDelta;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{
    Announcer, StoreError, StoreResult,
    runs::{Received, insert_received},
};
use crate::{clock::SharedClock, model::Run};

/// The most writes in flight at once (each on its own connection).
const WRITERS: u32 = 4;
/// How long the writes in flight may take before another one starts beside them. A write
/// normally takes a few milliseconds; one waiting for a lock may take much longer.
const STALLED: TimeDelta = TimeDelta::milliseconds(20);
/// The most runs written by one statement.
const MAX_BATCH: usize = 256;

/// What the writer answers: the run, or — when it was not written (its guard refused or its
/// idempotency key was taken) — the request given back for the caller to find out why.
pub(super) type Answer = StoreResult<Result<Run, Received>>;

struct Pending {
    received: Received,
    answer: oneshot::Sender<Answer>,
}

/// The queue of acceptances waiting to be written, and the task writing them (started on the
/// first acceptance, in the caller's runtime).
#[derive(Debug, Default)]
pub(super) struct Intake {
    queue: std::sync::OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl Intake {
    /// Writes `received` with whatever else is waiting, and announces the jobs once committed.
    pub(super) async fn write(
        &self,
        pool: &PgPool,
        announcer: &Arc<Announcer>,
        clock: &SharedClock,
        received: Received,
    ) -> Answer {
        let queue = self.queue.get_or_init(|| {
            let (queue, waiting) = mpsc::unbounded_channel();
            let writer = Writer {
                pool: pool.clone(),
                announcer: Arc::clone(announcer),
                clock: Arc::clone(clock),
            };
            tokio::spawn(writer.collect(waiting));
            queue
        });
        let (answer, answered) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = queue.send(Pending { received, answer }) {
            // The writing task is gone with the runtime that started it: write alone.
            let written = write_one(pool, pending.received).await;
            if matches!(written, Ok(Ok(_))) {
                announcer.announce(pool);
            }
            return written;
        }
        // The writer answers every request it takes, unless its runtime is shutting down — in
        // which case whether the write committed is unknown, and it is not retried.
        answered
            .await
            .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed)))
    }
}

/// What the writing task works with.
struct Writer {
    pool: PgPool,
    announcer: Arc<Announcer>,
    clock: SharedClock,
}

impl Writer {
    /// Takes the waiting acceptances (up to [`MAX_BATCH`]) whenever a write may start: when
    /// none is in flight, or when those in flight have all run for [`STALLED`] and there are
    /// fewer than [`WRITERS`].
    async fn collect(self, mut waiting: mpsc::UnboundedReceiver<Pending>) {
        let writers = Arc::new(Semaphore::new(WRITERS as usize));
        let mut latest_start = self.clock.now();
        loop {
            let Some(first) = waiting.recv().await else {
                return;
            };
            if writers.available_permits() < WRITERS as usize {
                // Until every write in flight has ended (all writers free) or they stall.
                tokio::select! {
                    idle = Arc::clone(&writers).acquire_many_owned(WRITERS) => drop(idle),
                    () = self.clock.sleep_until(latest_start + STALLED) => {}
                }
            }
            // Dropped however the write ends.
            let Ok(writer) = Arc::clone(&writers).acquire_owned().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH
                && let Ok(next) = waiting.try_recv()
            {
                batch.push(next);
            }
            latest_start = self.clock.now();
            let (pool, announcer) = (self.pool.clone(), Arc::clone(&self.announcer));
            tokio::spawn(async move {
                if write_batch(&pool, batch).await {
                    announcer.announce(&pool);
                }
                drop(writer);
            });
        }
    }
}

/// Writes a batch and answers each of its callers; `true` when a run was written.
async fn write_batch(pool: &PgPool, batch: Vec<Pending>) -> bool {
    let (all, answers): (Vec<Received>, Vec<_>) =
        batch.into_iter().map(|p| (p.received, p.answer)).unzip();
    let written = async { insert_received(&mut *pool.acquire().await?, &all).await }.await;
    match written {
        Ok(runs) => {
            let any = !runs.is_empty();
            let mut runs: HashMap<Uuid, Run> = runs.into_iter().map(|run| (run.id, run)).collect();
            for (received, answer) in all.into_iter().zip(answers) {
                drop(answer.send(Ok(runs.remove(&received.run_id()).ok_or(received))));
            }
            any
        }
        // The database refused the statement, so nothing of it was committed: one request's
        // failure (or a deadlock with a concurrent change of a trigger) must not fail the
        // others, so each is written alone.
        Err(StoreError::Database(sqlx::Error::Database(error))) if all.len() > 1 => {
            tracing::debug!(%error, size = all.len(), "a batch of acceptances failed; writing each alone");
            let mut any = false;
            for (received, answer) in all.into_iter().zip(answers) {
                let written = write_one(pool, received).await;
                any |= matches!(written, Ok(Ok(_)));
                drop(answer.send(written));
            }
            any
        }
        // Anything else (the connection failed) may have committed or not: each caller is
        // told, none is retried.
        Err(error) => {
            for answer in answers {
                drop(answer.send(Err(copy(&error))));
            }
            false
        }
    }
}

async fn write_one(pool: &PgPool, received: Received) -> Answer {
    let mut conn = pool.acquire().await?;
    let written = insert_received(&mut conn, std::slice::from_ref(&received)).await?;
    Ok(written.into_iter().next().ok_or(received))
}

/// The same failure, for each caller of a batch (a connection failure stays one, so the API
/// still answers 503).
fn copy(error: &StoreError) -> StoreError {
    let error = match error {
        StoreError::Database(sqlx::Error::Io(e)) => {
            sqlx::Error::Io(std::io::Error::new(e.kind(), e.to_string()))
        }
        StoreError::Database(sqlx::Error::PoolTimedOut) => sqlx::Error::PoolTimedOut,
        StoreError::Database(sqlx::Error::PoolClosed) => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(other.to_string()),
    };
    StoreError::Database(error)
}
