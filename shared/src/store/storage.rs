//! The storage interfaces: one per role — [`ApiStorage`], [`SchedulerStorage`],
//! [`WorkerStorage`], each over [`Backend`] (clock, ping, announcements) — and their sum
//! [`Storage`], which the [`super::Store`] handle holds. A backend implements each operation as
//! an inherent method of the same name and signature; [`storage!`] declares the interfaces once
//! and forwards them to those methods, so a backend that lacks an operation or spells it
//! differently does not compile.
//!
//! Semantics every backend keeps (checked by the conformance suite, `tests/tests/it`, which
//! runs against every backend): one transaction per operation; every mutation recorded in the
//! company's activity log in that transaction; unique fire keys and idempotency keys enforced
//! by the database; a dispatch and its job's completion committed together.

use std::{fmt, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{
    Accepted, AgentChanges, Attempt, BackfillRange, Backfilled, BoardToken, BoardTokenInfo,
    ChangeEvent, ChannelChanges, CreatedAgent, CreatedChannel, EventLogState, FireLateness,
    FireReport, IssueFilter, IssuedKey, Leadership, NewChannel, NewIssue, NewRoutine, NewRun,
    NewTrigger, Outgoing, Pause, PgStore, PurgeReport, RoutineChanges, RoutineFilter,
    RoutineSelector, SchedulerLeader, SecretMaterial, StoreResult, TriggerChanges,
    TriggerInRoutine, UpdatedAgent, UpkeepReport, WakeupDelivery, WakeupSpec, WebhookTrigger,
    sqlite::SqliteStore,
};
use crate::{
    clock::SharedClock,
    engine::rotation::Rotation,
    model::{
        ActivityEntry, Actor, Agent, Company, FinishStatus, Goal, HeartbeatRun, HeartbeatStatus,
        Issue, IssueStatus, IssueWithEvents, NotificationChannel, NotificationDelivery, Project,
        Routine, Run, Summary, Title, Trigger,
    },
    queue::{Job, JobError, JobSpec, QueueDepth, ReapReport, RetryOutcome},
    store::dispatch::{Dispatched, Taken},
};

/// What [`Storage::subscribe`] listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Jobs were enqueued: idle workers should claim.
    Jobs,
    /// Schedule triggers changed: a sleeping scheduler should recompute its next fire.
    Triggers,
}

/// A stream of announcements on one [`Topic`]. Announcements carry no data and may be
/// coalesced; they only shorten a wait that a poll would also end.
#[async_trait::async_trait]
pub trait Subscription: Send {
    /// Resolves at the next announcement.
    ///
    /// # Errors
    /// The connection carrying announcements failed; subscribe again.
    async fn recv(&mut self) -> StoreResult<()>;
}

/// Declares each role's storage interface from its list of async operations, and implements
/// every interface for each backend by forwarding every operation to the backend's inherent
/// method of the same name (so a backend that lacks one, or spells it differently, does not
/// compile).
macro_rules! storage {
    (backends: $backends:tt interfaces: { $($(#[$meta:meta])* $interface:ident $operations:tt)* }) => {
        $(
            storage!(@trait $(#[$meta])* $interface $operations);
            storage!(@each $backends $interface $operations);
        )*
    };
    (@each [$($backend:ty),+] $interface:ident $operations:tt) => {
        $(storage!(@forward $backend, $interface $operations);)+
    };
    (@trait $(#[$imeta:meta])* $interface:ident {
        $(
            $(#[$meta:meta])*
            async fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> $ret:ty;
        )*
    }) => {
        $(#[$imeta])*
        #[async_trait::async_trait]
        pub trait $interface: Backend {
            $(
                $(#[$meta])*
                async fn $name(&self $(, $arg: $ty)*) -> $ret;
            )*
        }
    };
    (@forward $backend:ty, $interface:ident {
        $(
            $(#[$meta:meta])*
            async fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> $ret:ty;
        )*
    }) => {
        #[async_trait::async_trait]
        impl $interface for $backend {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    <$backend>::$name(self $(, $arg)*).await
                }
            )*
        }
    };
}

/// What every role needs of a backend: its clock, whether it answers, its announcements.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// The clock every operation reads time from.
    fn clock(&self) -> &SharedClock;

    /// Whether the database answers.
    async fn ping(&self) -> bool;

    /// Listens to announcements on `topic`.
    ///
    /// # Errors
    /// The database failed.
    async fn subscribe(&self, topic: Topic) -> StoreResult<Box<dyn Subscription>>;
}

/// Implements [`Backend`] for a backend by forwarding to its inherent methods.
macro_rules! backend {
    ($($backend:ty),+) => {$(
        #[async_trait::async_trait]
        impl Backend for $backend {
            fn clock(&self) -> &SharedClock {
                <$backend>::clock(self)
            }

            async fn ping(&self) -> bool {
                <$backend>::ping(self).await
            }

            async fn subscribe(&self, topic: Topic) -> StoreResult<Box<dyn Subscription>> {
                <$backend>::subscribe(self, topic).await
            }
        }
    )+};
}

backend!(PgStore, SqliteStore);

mod api;
pub use self::api::ApiStorage;

storage! {
    backends: [PgStore, SqliteStore]
    interfaces: {

    /// What the scheduler does: fire due schedule triggers under its leadership.
    SchedulerStorage {

    /// Fires every schedule trigger due by the clock's now plus `lookahead`, in batches,
    /// fenced by `leadership`. A fire still ahead is prepared: its run is written `received`,
    /// triggered at its nominal time, with a dispatch job due then.
    ///
    /// # Errors
    /// `Refused` `deposed` when a newer leader has written; the database failed.
    async fn fire_due(&self, leadership: &Leadership, grace: TimeDelta, lookahead: TimeDelta, batch: i64) -> StoreResult<FireReport>;
    /// The scheduler's upkeep at the clock's now, fenced by `leadership`: routines whose
    /// `pausedUntil` came are resumed, runs whose `runTimeoutSec` ran out are timed out (up to
    /// `batch` of each).
    ///
    /// # Errors
    /// `Refused` `deposed`; the database failed.
    async fn upkeep(&self, leadership: &Leadership, batch: i64) -> StoreResult<UpkeepReport>;
    /// The earliest instant the upkeep has something to do.
    ///
    /// # Errors
    /// The database failed.
    async fn next_upkeep_at(&self) -> StoreResult<Option<DateTime<Utc>>>;
    /// The epoch of the last scheduler leader that fired (0 before any).
    ///
    /// # Errors
    /// The database failed.
    async fn scheduler_epoch(&self) -> StoreResult<i64>;
    /// The earliest `next_run_at` of a schedule trigger that can fire.
    ///
    /// # Errors
    /// The database failed.
    async fn next_fire_at(&self) -> StoreResult<Option<DateTime<Utc>>>;
    /// Deletes one batch (up to `limit` of each kind) of the finished history older than
    /// `days` days at the clock's now, in the units [`crate::engine::retention`] describes.
    ///
    /// # Errors
    /// The database failed (that kind's batch is rolled back; earlier kinds stay deleted).
    async fn purge_history(&self, days: u32, limit: i64) -> StoreResult<PurgeReport>;
    /// Whether a queued job is due at the clock's now (the workers are behind).
    ///
    /// # Errors
    /// The database failed.
    async fn jobs_waiting(&self) -> StoreResult<bool>;
    }

    /// What a worker does: the queue, dispatch, wake-up deliveries and maintenance.
    WorkerStorage {

    /// Enqueues a job and announces it to workers.
    ///
    /// # Errors
    /// The database failed.
    async fn enqueue_job(&self, spec: JobSpec) -> StoreResult<Uuid>;
    /// When the earliest queued job that is not due at the clock's now becomes due.
    ///
    /// # Errors
    /// The database failed.
    async fn next_job_at(&self) -> StoreResult<Option<DateTime<Utc>>>;
    /// Claims up to `limit` due jobs for `owner`, leased for `lease`, oldest due first.
    ///
    /// # Errors
    /// The database failed.
    async fn claim_jobs(&self, owner: &str, lease: Duration, limit: i64) -> StoreResult<Vec<Job>>;
    /// Takes up to `limit` due jobs, oldest due first, in one transaction: the first attempts
    /// of `dispatch_run` jobs among them are dispatched (as [`Storage::dispatch_jobs`] does)
    /// and completed in it; the others are claimed for `owner`, leased for `lease`. A failure
    /// leaves every job as it was (nothing is claimed), for the caller to claim and handle one
    /// by one; a transaction left idle for longer than `lease` is ended by the database.
    ///
    /// # Errors
    /// The database failed (nothing was written).
    async fn claim_and_dispatch(&self, owner: &str, lease: Duration, limit: i64) -> StoreResult<Taken>;
    /// Completes the jobs whose lease their owner still holds (a completed job is deleted);
    /// returns their ids.
    ///
    /// # Errors
    /// The database failed.
    async fn complete_jobs(&self, jobs: &[Job]) -> StoreResult<Vec<Uuid>>;
    /// Records a failed attempt: back to the queue after a backoff, or `dead`.
    ///
    /// # Errors
    /// The database failed.
    async fn retry_job(&self, job: &Job, error: &JobError) -> StoreResult<RetryOutcome>;
    /// Returns jobs with expired leases to the queue (or makes them `dead`).
    ///
    /// # Errors
    /// The database failed.
    async fn reap_jobs(&self) -> StoreResult<ReapReport>;
    /// Depth and age of the queue by kind and state.
    ///
    /// # Errors
    /// The database failed.
    async fn queue_depth(&self) -> StoreResult<Vec<QueueDepth>>;
    /// Dispatches the runs of `dispatch_run` jobs, in order, with the same effect as one after
    /// another, and completes the jobs in the same transaction — only those whose lease their
    /// owner still holds. A run that is no longer `received` is left alone.
    ///
    /// # Errors
    /// A payload without a run id; the database failed (nothing was written).
    async fn dispatch_jobs(&self, jobs: &[Job]) -> StoreResult<Dispatched>;
    /// Fails a run whose dispatch job is dead, if it is still `received`.
    ///
    /// # Errors
    /// The database failed.
    async fn fail_undispatched_run(&self, run_id: Uuid, failure: &str) -> StoreResult<bool>;
    /// What delivering a heartbeat run's HTTP wake-up needs, if it is still queued.
    ///
    /// # Errors
    /// The database failed, or the stored secret cannot be opened.
    async fn wakeup_delivery(&self, heartbeat_run_id: Uuid) -> StoreResult<Option<WakeupDelivery>>;
    /// Fails a queued heartbeat run whose wake-up could not be delivered.
    ///
    /// # Errors
    /// The database failed.
    async fn fail_undelivered_heartbeat(&self, heartbeat_run_id: Uuid, failure: &str) -> StoreResult<bool>;
    /// Turns the notices of `fan_out_notices` jobs whose lease is still held into one
    /// notification per receiving channel (each with its delivery job) and completes the jobs,
    /// in one transaction; returns the jobs completed.
    ///
    /// # Errors
    /// The database failed (nothing was written).
    async fn fan_out_notices(&self, jobs: &[Job]) -> StoreResult<Vec<Uuid>>;
    /// What delivering a notification needs, if it is still pending and its channel exists.
    ///
    /// # Errors
    /// The database failed, or the stored secret cannot be opened.
    async fn notification_to_send(&self, id: Uuid) -> StoreResult<Option<Outgoing>>;
    /// Records one delivery attempt of a pending notification.
    ///
    /// # Errors
    /// The database failed.
    async fn record_notification_attempt(&self, id: Uuid, attempt: Attempt) -> StoreResult<()>;
    /// Times out heartbeat runs queued or running longer than `timeout`; returns how many.
    ///
    /// # Errors
    /// The database failed.
    async fn time_out_heartbeats(&self, timeout: Duration) -> StoreResult<u64>;
    /// Deletes remembered signatures whose time is up; returns how many.
    ///
    /// # Errors
    /// The database failed.
    async fn purge_signatures(&self) -> StoreResult<u64>;
    /// Destroys the secrets rotations replaced whose grace period is over; returns how many.
    ///
    /// # Errors
    /// The database failed.
    async fn destroy_expired_secrets(&self) -> StoreResult<u64>;
    }
    }
}

/// Every operation of a storage backend: the three role interfaces together. Hold it through
/// [`Store`]; a role that needs one interface only takes it from there ([`Store::scheduler`],
/// [`Store::worker`]).
pub trait Storage: ApiStorage + SchedulerStorage + WorkerStorage {}

impl<T: ApiStorage + SchedulerStorage + WorkerStorage + ?Sized> Storage for T {}
