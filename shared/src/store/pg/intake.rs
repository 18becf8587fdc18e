//! Group commit of webhook acceptances.
//!
//! Each accepted webhook call must be committed before it is answered, and a commit per call
//! is what bounds ingestion: Postgres spends more on starting a statement, checking the
//! schema's constraints and committing than on the rows themselves. Calls that arrive while
//! a write is in flight are therefore written together in the next one: one statement (run,
//! job and audit entry of each, see [`insert_received`]) and one commit for all of them, and
//! each caller is answered once that commit is done, so a 202 still means committed.
//!
//! How the writes are grouped — at once when none is in flight, batches growing with the
//! load, a stalled write not holding up the rest — is [`crate::group`]'s, with [`LIMITS`].

use std::{collections::HashMap, sync::Arc};

use chrono::TimeDelta;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{
    Announcer,
    runs::{Received, insert_received},
};
use crate::store::{StoreError, StoreResult};
use crate::{
    clock::SharedClock,
    group::{Group, Limits, RoundTrip},
    model::Run,
};

/// Up to four writes in flight (each on its own connection); one in flight for 20 ms — a
/// write normally takes a few milliseconds, one waiting for a lock much longer — no longer
/// holds up the next; at most 256 runs in one statement.
const LIMITS: Limits = Limits {
    in_flight: 4,
    stalled: TimeDelta::milliseconds(20),
    most: 256,
};

/// What the writer answers: the run, or — when it was not written (its guard refused or its
/// idempotency key was taken) — the request given back for the caller to find out why.
pub(super) type Answer = StoreResult<Result<Run, Received>>;

pub(super) struct Pending {
    received: Received,
    answer: oneshot::Sender<Answer>,
}

/// The acceptances waiting to be written, and the task writing them.
#[derive(Debug, Default)]
pub(super) struct Intake {
    group: Group<Writer>,
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
        let (answer, answered) = oneshot::channel();
        let writer = || {
            let writer = Writer {
                pool: pool.clone(),
                announcer: Arc::clone(announcer),
            };
            (writer, LIMITS, Arc::clone(clock))
        };
        self.group.send(Pending { received, answer }, writer).await;
        // The writer answers every request it takes, unless its runtime is shutting down — in
        // which case whether the write committed is unknown, and it is not retried.
        answered
            .await
            .unwrap_or(Err(StoreError::Database(sqlx::Error::PoolClosed)))
    }
}

/// What writes the acceptances.
struct Writer {
    pool: PgPool,
    announcer: Arc<Announcer>,
}

impl RoundTrip for Writer {
    type Call = Pending;

    async fn send(&self, batch: Vec<Pending>) {
        if write_batch(&self.pool, batch).await {
            self.announcer.announce(&self.pool);
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
        // told, none is retried. The last caller (a lone one, say) gets the error itself.
        Err(error) => {
            let mut answers = answers.into_iter();
            let last = answers.next_back();
            for answer in answers {
                drop(answer.send(Err(copy(&error))));
            }
            if let Some(last) = last {
                drop(last.send(Err(error)));
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
