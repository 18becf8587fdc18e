//! What a change of state carries along: an execution issue that closes ends the run that
//! created it.

use crate::model::{IssueStatus, RunStatus};

/// How a run ends when its execution issue closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnding {
    /// The run's new status.
    pub status: RunStatus,
    /// Its reason code.
    pub reason: Option<&'static str>,
    /// Its failure, in words.
    pub failure: Option<&'static str>,
}

/// The ending of a run whose execution issue moved to `status` (and which is still
/// `issue_created`): `done` completes it, `cancelled` fails it; any other status leaves it.
#[must_use]
pub fn run_after_issue(status: IssueStatus) -> Option<RunEnding> {
    match status {
        IssueStatus::Done => Some(RunEnding {
            status: RunStatus::Completed,
            reason: None,
            failure: None,
        }),
        IssueStatus::Cancelled => Some(RunEnding {
            status: RunStatus::Failed,
            reason: Some("issue_cancelled"),
            failure: Some("the execution issue was cancelled"),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_issue_ends_its_run() {
        assert_eq!(
            run_after_issue(IssueStatus::Done).map(|e| e.status),
            Some(RunStatus::Completed)
        );
        let cancelled = run_after_issue(IssueStatus::Cancelled).expect("ends");
        assert_eq!(
            (cancelled.status, cancelled.reason),
            (RunStatus::Failed, Some("issue_cancelled"))
        );
        for open in [
            IssueStatus::Todo,
            IssueStatus::InProgress,
            IssueStatus::InReview,
            IssueStatus::Blocked,
        ] {
            assert_eq!(run_after_issue(open), None, "{open}");
            assert!(!open.is_closed());
        }
    }
}
