//! Issues: what creating and listing them take.

use uuid::Uuid;

use crate::model::{Description, IssueStatus, Priority, Title};

/// A new issue.
#[derive(Debug)]
pub struct NewIssue {
    /// Title.
    pub title: Title,
    /// Description.
    pub description: Description,
    /// Project, of the same company.
    pub project_id: Option<Uuid>,
    /// Goal, of the same company.
    pub goal_id: Option<Uuid>,
    /// Parent issue, of the same company.
    pub parent_issue_id: Option<Uuid>,
    /// Assignee, an agent of the same company that is not terminated.
    pub assignee_agent_id: Option<Uuid>,
    /// Priority.
    pub priority: Priority,
}

/// Which issues of a company to list, newest first.
#[derive(Debug, Default)]
pub struct IssueFilter {
    /// Only issues created by this routine's runs.
    pub routine_id: Option<Uuid>,
    /// Only issues in this status.
    pub status: Option<IssueStatus>,
    /// Only issues assigned to this agent.
    pub assignee_agent_id: Option<Uuid>,
    /// Only issues older than this one (cursor).
    pub before: Option<Uuid>,
    /// At most this many.
    pub limit: i64,
}
