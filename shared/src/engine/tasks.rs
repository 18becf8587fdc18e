//! Queued work as one type: a [`Task`] is parsed from its stored kind and payload once, when
//! its job is read, so no string travels between the store, the queue and the worker as a
//! contract; and what a failed attempt leads to ([`JobError`], [`after_failure`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

/// Attempts of a dispatch job before the run is failed.
pub const DISPATCH_MAX_ATTEMPTS: i32 = 10;
/// Attempts of a wake-up delivery before the heartbeat run is failed.
pub const WAKEUP_MAX_ATTEMPTS: i32 = 8;

/// Work for a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Dispatch a `received` run (`dispatch_run`).
    DispatchRun {
        /// The run.
        run_id: Uuid,
    },
    /// POST a heartbeat run to its HTTP agent (`deliver_wakeup`).
    DeliverWakeup {
        /// The heartbeat run.
        heartbeat_run_id: Uuid,
    },
    /// Turn notices written with a change into one notification per receiving channel
    /// (`fan_out_notices`).
    FanOutNotices {
        /// The notices.
        notices: Vec<crate::engine::notify::Notice>,
    },
    /// POST a notification to its channel (`deliver_notification`).
    DeliverNotification {
        /// The notification.
        notification_id: Uuid,
    },
    /// A stored job this version cannot read (a kind written by a newer version, or a payload
    /// without its id): kept as stored, so it can be ended with a reason.
    Unreadable {
        /// The stored kind.
        kind: String,
        /// The stored payload.
        payload: Value,
    },
}

/// Why a stored job of `kind` that did not parse into a [`Task`] cannot be handled.
#[must_use]
pub fn unreadable(kind: &str) -> String {
    match kind {
        DISPATCH_RUN => "job payload has no valid runId".to_owned(),
        DELIVER_WAKEUP => "job payload has no valid heartbeatRunId".to_owned(),
        DELIVER_NOTIFICATION => "job payload has no valid notificationId".to_owned(),
        FAN_OUT_NOTICES => "job payload has no valid notices".to_owned(),
        other => format!("unknown job kind {other:?}"),
    }
}

/// Job kind that dispatches a `received` run.
pub const DISPATCH_RUN: &str = "dispatch_run";
/// Job kind that POSTs a heartbeat run to an HTTP agent.
pub const DELIVER_WAKEUP: &str = "deliver_wakeup";
/// Job kind that POSTs a notification to its channel.
pub const DELIVER_NOTIFICATION: &str = "deliver_notification";
/// Job kind that turns a change's notices into notifications.
pub const FAN_OUT_NOTICES: &str = "fan_out_notices";

impl Task {
    /// Reads a stored job's kind and payload.
    #[must_use]
    pub fn parse(kind: &str, payload: Value) -> Self {
        let id = |key: &str| payload[key].as_str().and_then(|s| s.parse().ok());
        match (kind, id("runId"), id("heartbeatRunId")) {
            (DISPATCH_RUN, Some(run_id), _) => Self::DispatchRun { run_id },
            (DELIVER_WAKEUP, _, Some(heartbeat_run_id)) => Self::DeliverWakeup { heartbeat_run_id },
            (DELIVER_NOTIFICATION, _, _) if id("notificationId").is_some() => {
                Self::DeliverNotification {
                    notification_id: id("notificationId").unwrap_or_default(),
                }
            }
            (FAN_OUT_NOTICES, _, _) => match serde_json::from_value(payload["notices"].clone()) {
                Ok(notices) => Self::FanOutNotices { notices },
                Err(_) => Self::Unreadable {
                    kind: kind.to_owned(),
                    payload,
                },
            },
            _ => Self::Unreadable {
                kind: kind.to_owned(),
                payload,
            },
        }
    }

    /// The stored kind.
    #[must_use]
    pub fn kind(&self) -> &str {
        match self {
            Self::DispatchRun { .. } => DISPATCH_RUN,
            Self::DeliverWakeup { .. } => DELIVER_WAKEUP,
            Self::DeliverNotification { .. } => DELIVER_NOTIFICATION,
            Self::FanOutNotices { .. } => FAN_OUT_NOTICES,
            Self::Unreadable { kind, .. } => kind,
        }
    }

    /// The stored payload.
    #[must_use]
    pub fn payload(&self) -> Value {
        match self {
            Self::DispatchRun { run_id } => json!({ "runId": run_id }),
            Self::DeliverWakeup { heartbeat_run_id } => {
                json!({ "heartbeatRunId": heartbeat_run_id })
            }
            Self::DeliverNotification { notification_id } => {
                json!({ "notificationId": notification_id })
            }
            Self::FanOutNotices { notices } => json!({ "notices": notices }),
            Self::Unreadable { payload, .. } => payload.clone(),
        }
    }

    /// The run a dispatch task names.
    #[must_use]
    pub fn run_id(&self) -> Option<Uuid> {
        match self {
            Self::DispatchRun { run_id } => Some(*run_id),
            _ => None,
        }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// What to do.
    pub task: Task,
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
    /// What to do, read from its stored kind and payload.
    pub task: Task,
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
    /// Not now, and not a failure: back to the queue after the given delay without using up
    /// an attempt (the receiver asked for time with `Retry-After`).
    #[error("snoozed for {0:?}")]
    Snooze(Duration),
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

/// What an attempt that did not succeed leads to at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// `dead`: attempts used up, or a fatal error.
    Dead,
    /// Back to the queue, due at the instant; `refund` gives the attempt back (a snooze).
    Requeue {
        /// When it is due again.
        at: DateTime<Utc>,
        /// Whether the attempt does not count.
        refund: bool,
    },
}

/// What an attempt of `job` that ended with `error` leads to at `now`: a snooze waits without
/// counting, a fatal error or the last attempt is `dead`, anything else backs off.
#[must_use]
pub fn after_failure(job: &Job, error: &JobError, now: DateTime<Utc>) -> AfterFailure {
    let later = |delay: Duration| {
        now + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::seconds(1))
    };
    match error {
        JobError::Snooze(delay) => AfterFailure::Requeue {
            at: later((*delay).min(MAX_SNOOZE)),
            refund: true,
        },
        JobError::Fatal(_) => AfterFailure::Dead,
        JobError::Retry(_) if job.attempts >= job.max_attempts => AfterFailure::Dead,
        JobError::Retry(_) => AfterFailure::Requeue {
            at: later(backoff(job.attempts)),
            refund: false,
        },
    }
}

/// The longest a job may be snoozed at once.
pub const MAX_SNOOZE: Duration = Duration::from_secs(3600);

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
    /// The tasks of the jobs that went `dead`.
    pub dead: Vec<Task>,
}

/// Splits the jobs a dispatching claim took (`attempts` counting this one) into those
/// dispatched in the taking transaction — first attempts of dispatch tasks — with their runs,
/// and those claimed with a lease, each in id order. Later attempts go through a lease, so a
/// job whose dispatch keeps failing is counted, backed off and ends `dead` like any other.
#[must_use]
pub fn split_taken(mut jobs: Vec<Job>) -> (Vec<Job>, Vec<Uuid>, Vec<Job>) {
    jobs.sort_by_key(|j| j.id);
    let (dispatched, claimed): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|job| job.attempts == 1 && job.task.run_id().is_some());
    let run_ids = dispatched.iter().filter_map(|j| j.task.run_id()).collect();
    (dispatched, run_ids, claimed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_round_trip_through_their_stored_form_and_unknown_ones_are_kept() {
        let id = Uuid::now_v7();
        for task in [
            Task::DispatchRun { run_id: id },
            Task::DeliverWakeup {
                heartbeat_run_id: id,
            },
        ] {
            assert_eq!(Task::parse(task.kind(), task.payload()), task);
        }
        let unknown = Task::parse("dispatch_run", json!({ "runId": "nope" }));
        assert_eq!(unknown.kind(), "dispatch_run");
        assert_eq!(unknown.payload(), json!({ "runId": "nope" }));
        assert_eq!(unknown.run_id(), None);
        assert_eq!(unreadable(unknown.kind()), "job payload has no valid runId");
        assert!(matches!(
            Task::parse("later_kind", json!({})),
            Task::Unreadable { .. }
        ));
    }

    #[test]
    fn a_snooze_gives_its_attempt_back_and_a_fatal_error_or_the_last_attempt_is_dead() {
        let now = Utc::now();
        let job = |attempts| Job {
            id: Uuid::now_v7(),
            task: Task::DispatchRun {
                run_id: Uuid::now_v7(),
            },
            attempts,
            max_attempts: 3,
            trace_context: None,
            created_at: now,
            run_at: now,
            lease_owner: "w".to_owned(),
        };
        let snooze = JobError::Snooze(Duration::from_secs(90));
        assert_eq!(
            after_failure(&job(3), &snooze, now),
            AfterFailure::Requeue {
                at: now + chrono::TimeDelta::seconds(90),
                refund: true
            }
        );
        let long = JobError::Snooze(Duration::from_secs(86_400));
        assert!(
            matches!(after_failure(&job(1), &long, now), AfterFailure::Requeue { at, .. } if at == now + chrono::TimeDelta::hours(1))
        );
        let retry = JobError::Retry("boom".to_owned());
        assert_eq!(after_failure(&job(3), &retry, now), AfterFailure::Dead);
        assert!(
            matches!(after_failure(&job(2), &retry, now), AfterFailure::Requeue { refund: false, at } if at > now)
        );
        let fatal = JobError::Fatal("no".to_owned());
        assert_eq!(after_failure(&job(1), &fatal, now), AfterFailure::Dead);
    }

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
