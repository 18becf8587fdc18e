//! A routine's health decided: its pause state after a change, when a run times out, when a
//! routine pauses itself, and which events a change of runs announces. Pure: the backends
//! load the routine and its newest finished runs, pass the time, and write the outcome in the
//! transaction of the change.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::lifecycle::RunEnding;
use crate::model::{NotificationEvent, PausedReason, RoutineStatus, RunStatus};

/// The longest a pause may be set to last (`pausedUntil` at most this far ahead).
pub const LONGEST_PAUSE: TimeDelta = TimeDelta::days(366);

/// A routine's pause fields, all four together: set while it is paused, all `None` otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseState {
    /// Why.
    pub reason: Option<PausedReason>,
    /// The note given with it.
    pub note: Option<String>,
    /// When it ends by itself.
    pub until: Option<DateTime<Utc>>,
    /// When it began.
    pub at: Option<DateTime<Utc>>,
}

/// What a change asks of the pause: the status it sets and, for a pause, its note and end.
#[derive(Debug, Clone, Default)]
pub struct PauseRequest {
    /// The status the change sets, if any.
    pub status: Option<RoutineStatus>,
    /// The note (only with `status: paused`).
    pub note: Option<String>,
    /// The end (only with `status: paused`).
    pub until: Option<DateTime<Utc>>,
}

/// The pause fields after a change of a routine whose status was `before` (with `current`
/// pause fields): pausing an active routine by hand starts a `manual` pause at `now`; pausing
/// a paused one again replaces its note and end and keeps its reason and start; any other
/// status clears all four.
#[must_use]
pub fn pause_after(
    before: RoutineStatus,
    current: &PauseState,
    request: &PauseRequest,
    now: DateTime<Utc>,
) -> PauseState {
    let after = request.status.unwrap_or(before);
    if after != RoutineStatus::Paused {
        return PauseState::default();
    }
    if request.status != Some(RoutineStatus::Paused) {
        return current.clone();
    }
    let (reason, at) = if before == RoutineStatus::Paused {
        (
            current.reason.or(Some(PausedReason::Manual)),
            current.at.or(Some(now)),
        )
    } else {
        (Some(PausedReason::Manual), Some(now))
    };
    PauseState {
        reason,
        note: request.note.clone(),
        until: request.until,
        at,
    }
}

/// Why a `pausedUntil` is refused at `now`: it must be in the future and at most
/// [`LONGEST_PAUSE`] ahead.
///
/// # Errors
/// The sentence the refusal carries.
pub fn check_pause_end(until: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), &'static str> {
    if until <= now {
        Err("must be in the future")
    } else if until - now > LONGEST_PAUSE {
        Err("must be at most one year ahead")
    } else {
        Ok(())
    }
}

/// The instant a run dispatched at `now` times out, under the routine's `runTimeoutSec`.
#[must_use]
pub fn deadline(now: DateTime<Utc>, run_timeout_sec: Option<i32>) -> Option<DateTime<Utc>> {
    run_timeout_sec.map(|secs| now + TimeDelta::seconds(i64::from(secs)))
}

/// Reason code of a run that timed out.
pub const TIMED_OUT: &str = "timed_out";

/// How a run ends when its deadline passes with its issue still open.
pub const TIMED_OUT_ENDING: RunEnding = RunEnding {
    status: RunStatus::Failed,
    reason: Some(TIMED_OUT),
    failure: Some("the execution issue was still open when the routine's runTimeoutSec ran out"),
};

/// Whether a routine with `failures` failed runs in a row pauses itself now: it is active and
/// has reached its `pauseAfterFailures`.
#[must_use]
pub fn pauses_itself(
    status: RoutineStatus,
    pause_after_failures: Option<i32>,
    failures: i32,
) -> bool {
    status == RoutineStatus::Active && pause_after_failures.is_some_and(|n| failures >= n)
}

/// The pause a routine gives itself at `now` on reaching `pauseAfterFailures`.
#[must_use]
pub fn pause_on_failures(now: DateTime<Utc>) -> PauseState {
    PauseState {
        reason: Some(PausedReason::ConsecutiveFailures),
        note: None,
        until: None,
        at: Some(now),
    }
}

/// A run whose status changed in a transaction, as the events read it.
#[derive(Debug, Clone)]
pub struct RunChange {
    /// The run.
    pub run_id: Uuid,
    /// Its routine.
    pub routine_id: Uuid,
    /// Its new status.
    pub status: RunStatus,
    /// Its reason code.
    pub reason: Option<String>,
}

impl RunChange {
    /// Whether it finished (`completed` or `failed`), which is what `consecutiveFailures`
    /// counts.
    #[must_use]
    pub fn finished(&self) -> bool {
        matches!(self.status, RunStatus::Completed | RunStatus::Failed)
    }

    /// Whether it is a missed fire (`skipped` as `missed_schedule` or `catch_up_cap`).
    #[must_use]
    pub fn missed(&self) -> bool {
        self.status == RunStatus::Skipped
            && matches!(
                self.reason.as_deref(),
                Some("missed_schedule" | "catch_up_cap")
            )
    }
}

/// The event a run's change announces, given the routine's failures in a row before and
/// after the change: `run.failed` for a failure, `run.missed` for a missed fire,
/// `routine.recovered` for a completion that ended a streak of failures.
#[must_use]
pub fn run_event(change: &RunChange, failures: (i32, i32)) -> Option<NotificationEvent> {
    let (before, after) = failures;
    match change.status {
        RunStatus::Failed => Some(NotificationEvent::RunFailed),
        RunStatus::Completed if before > 0 && after == 0 => {
            Some(NotificationEvent::RoutineRecovered)
        }
        _ if change.missed() => Some(NotificationEvent::RunMissed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("instant")
    }

    #[test]
    fn a_manual_pause_starts_once_and_any_other_status_clears_it() {
        let now = at("2026-12-04T10:00:00Z");
        let request = PauseRequest {
            status: Some(RoutineStatus::Paused),
            note: Some("deploy freeze".into()),
            until: Some(at("2026-12-05T10:00:00Z")),
        };
        let paused = pause_after(RoutineStatus::Active, &PauseState::default(), &request, now);
        assert_eq!(paused.reason, Some(PausedReason::Manual));
        assert_eq!(paused.at, Some(now));
        assert_eq!(paused.note.as_deref(), Some("deploy freeze"));

        // Paused again later: a new note and end, the same start and reason.
        let self_paused = PauseState {
            reason: Some(PausedReason::ConsecutiveFailures),
            at: Some(now),
            ..PauseState::default()
        };
        let again = PauseRequest {
            note: Some("looking into it".into()),
            until: None,
            ..request
        };
        let later = now + TimeDelta::hours(1);
        let repaused = pause_after(RoutineStatus::Paused, &self_paused, &again, later);
        assert_eq!(repaused.reason, Some(PausedReason::ConsecutiveFailures));
        assert_eq!(repaused.at, Some(now));
        assert_eq!(repaused.until, None);

        // Another field changed: the pause stays as it is.
        let untouched = pause_after(
            RoutineStatus::Paused,
            &paused,
            &PauseRequest::default(),
            later,
        );
        assert_eq!(untouched, paused);

        for status in [RoutineStatus::Active, RoutineStatus::Archived] {
            let cleared = PauseRequest {
                status: Some(status),
                ..PauseRequest::default()
            };
            assert_eq!(
                pause_after(RoutineStatus::Paused, &paused, &cleared, later),
                PauseState::default()
            );
        }
    }

    #[test]
    fn a_pause_ends_in_the_future_within_a_year() {
        let now = at("2026-12-04T10:00:00Z");
        assert!(check_pause_end(now, now).is_err());
        assert!(check_pause_end(now - TimeDelta::seconds(1), now).is_err());
        assert!(check_pause_end(now + TimeDelta::seconds(1), now).is_ok());
        assert!(check_pause_end(now + LONGEST_PAUSE, now).is_ok());
        assert!(check_pause_end(now + LONGEST_PAUSE + TimeDelta::seconds(1), now).is_err());
    }

    #[test]
    fn only_an_active_routine_at_its_threshold_pauses_itself() {
        assert!(!pauses_itself(RoutineStatus::Active, None, 50));
        assert!(!pauses_itself(RoutineStatus::Active, Some(3), 2));
        assert!(pauses_itself(RoutineStatus::Active, Some(3), 3));
        assert!(pauses_itself(RoutineStatus::Active, Some(3), 4));
        assert!(!pauses_itself(RoutineStatus::Paused, Some(3), 3));
        assert!(!pauses_itself(RoutineStatus::Archived, Some(1), 1));
    }

    #[test]
    fn events_follow_the_change_and_the_streak() {
        let change = |status, reason: Option<&str>| RunChange {
            run_id: Uuid::nil(),
            routine_id: Uuid::nil(),
            status,
            reason: reason.map(str::to_owned),
        };
        let failed = change(RunStatus::Failed, Some(TIMED_OUT));
        assert_eq!(
            run_event(&failed, (0, 1)),
            Some(NotificationEvent::RunFailed)
        );
        let completed = change(RunStatus::Completed, None);
        assert_eq!(
            run_event(&completed, (2, 0)),
            Some(NotificationEvent::RoutineRecovered)
        );
        assert_eq!(run_event(&completed, (0, 0)), None);
        // An older run completing under a newer failure ends no streak.
        assert_eq!(run_event(&completed, (1, 1)), None);
        for reason in ["missed_schedule", "catch_up_cap"] {
            let missed = change(RunStatus::Skipped, Some(reason));
            assert_eq!(
                run_event(&missed, (0, 0)),
                Some(NotificationEvent::RunMissed)
            );
        }
        assert_eq!(
            run_event(&change(RunStatus::Skipped, Some("active_issue")), (0, 0)),
            None
        );
        assert_eq!(
            run_event(&change(RunStatus::Coalesced, Some("active_issue")), (0, 0)),
            None
        );
        assert_eq!(
            deadline(at("2026-12-04T10:00:00Z"), Some(90)),
            Some(at("2026-12-04T10:01:30Z"))
        );
        assert_eq!(deadline(at("2026-12-04T10:00:00Z"), None), None);
    }
}
