//! Dispatch: turning a `received` run into its outcome under the routine's concurrency policy,
//! in the caller's (fenced job) transaction, so the outcome, the issue, the heartbeat run, the
//! wake-up job, the trigger's last result and the audit entry commit together with the job's
//! completion — or not at all.
//!
//! Lock order: the routine row, then the run row. Concurrent dispatches of one routine
//! serialise on the routine lock; different routines proceed in parallel.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    NewActivity, Store, StoreResult,
    heartbeats::NewHeartbeat,
    new_id,
    routines::{RoutineRow, fetch_routine},
};
use crate::{
    model::{
        Actor, AgentStatus, ConcurrencyPolicy, HeartbeatContext, HeartbeatRun, HeartbeatStatus,
        IssueEventType, RoutineStatus, RunSource, RunStatus,
    },
    schedule::TimeZone,
};

/// Job kind that POSTs a heartbeat run to an HTTP agent.
pub const DELIVER_WAKEUP: &str = "deliver_wakeup";
/// Attempts of a wake-up delivery before the heartbeat run is failed.
pub const WAKEUP_MAX_ATTEMPTS: i32 = 8;

/// What a wake-up delivery needs.
#[derive(Debug, Clone)]
pub struct WakeupDelivery {
    /// Where to POST.
    pub url: String,
    /// The agent's Standard Webhooks secret (`whsec_…`).
    pub secret: String,
    /// The heartbeat run announced.
    pub heartbeat_run: HeartbeatRun,
}

struct PendingRun {
    id: Uuid,
    status: RunStatus,
    source: RunSource,
    trigger_id: Option<Uuid>,
    timezone: Option<String>,
    scheduled_for: Option<DateTime<Utc>>,
    triggered_at: DateTime<Utc>,
    payload: Value,
}

/// How a run ended its dispatch.
struct Outcome {
    status: RunStatus,
    reason: Option<&'static str>,
    failure_reason: Option<String>,
    linked_issue_id: Option<Uuid>,
    coalesced_into_run_id: Option<Uuid>,
    heartbeat_run_id: Option<Uuid>,
}

impl Outcome {
    fn ended(status: RunStatus, reason: &'static str) -> Self {
        Self {
            status,
            reason: Some(reason),
            failure_reason: None,
            linked_issue_id: None,
            coalesced_into_run_id: None,
            heartbeat_run_id: None,
        }
    }
}

impl Store {
    /// Dispatches a run on `conn` (the caller's transaction). A run that is no longer
    /// `received` is left alone (`None`): dispatching twice has the effect of once.
    ///
    /// # Errors
    /// The database failed; the caller rolls back and retries.
    pub async fn dispatch_run(
        &self,
        conn: &mut PgConnection,
        run_id: Uuid,
    ) -> StoreResult<Option<RunStatus>> {
        let now = self.now();
        let Some(routine_id) =
            sqlx::query_scalar!("SELECT routine_id FROM routine_runs WHERE id = $1", run_id)
                .fetch_optional(&mut *conn)
                .await?
        else {
            return Ok(None);
        };
        let routine = fetch_routine(conn, routine_id, true).await?;
        let run = sqlx::query_as!(
            PendingRun,
            r#"SELECT r.id, r.status AS "status: RunStatus", r.source AS "source: RunSource", r.trigger_id,
                      t.timezone AS "timezone?", r.scheduled_for, r.triggered_at, r.payload
               FROM routine_runs r LEFT JOIN routine_triggers t ON t.id = r.trigger_id
               WHERE r.id = $1 FOR UPDATE OF r"#,
            run_id
        )
        .fetch_one(&mut *conn)
        .await?;
        if run.status != RunStatus::Received {
            return Ok(None);
        }
        let outcome = self.decide(conn, &routine, &run, now).await?;
        sqlx::query!(
            "UPDATE routine_runs SET status = $2, reason = $3, failure_reason = $4, linked_issue_id = $5,
                    coalesced_into_run_id = $6, heartbeat_run_id = $7,
                    completed_at = CASE WHEN $2::text = 'issue_created' THEN NULL ELSE $8::timestamptz END,
                    updated_at = $8
             WHERE id = $1",
            run.id,
            outcome.status.as_str(),
            outcome.reason,
            outcome.failure_reason,
            outcome.linked_issue_id,
            outcome.coalesced_into_run_id,
            outcome.heartbeat_run_id,
            now,
        )
        .execute(&mut *conn)
        .await?;
        if let Some(trigger_id) = run.trigger_id {
            sqlx::query!(
                "UPDATE routine_triggers SET last_fired_at = GREATEST(last_fired_at, $2), last_result = $3
                 WHERE id = $1",
                trigger_id,
                run.triggered_at,
                outcome.status.as_str(),
            )
            .execute(&mut *conn)
            .await?;
        }
        sqlx::query!(
            "UPDATE routines SET last_triggered_at = GREATEST(last_triggered_at, $2) WHERE id = $1",
            routine.id,
            run.triggered_at,
        )
        .execute(&mut *conn)
        .await?;
        NewActivity {
            company_id: routine.company_id,
            actor: Actor::System,
            action: "run.dispatched",
            entity_type: "routine_run",
            entity_id: run.id,
            details: json!({
                "routineId": routine.id,
                "status": outcome.status,
                "reason": outcome.reason,
                "issueId": outcome.linked_issue_id,
                "heartbeatRunId": outcome.heartbeat_run_id,
            }),
        }
        .record(conn, now)
        .await?;
        Ok(Some(outcome.status))
    }

    async fn decide(
        &self,
        conn: &mut PgConnection,
        routine: &RoutineRow,
        run: &PendingRun,
        now: DateTime<Utc>,
    ) -> StoreResult<Outcome> {
        if routine.status == RoutineStatus::Archived {
            return Ok(Outcome::ended(RunStatus::Skipped, "routine_archived"));
        }
        let agent_status = sqlx::query_scalar!(
            r#"SELECT status AS "status: AgentStatus" FROM agents WHERE id = $1 FOR SHARE"#,
            routine.assignee_agent_id
        )
        .fetch_one(&mut *conn)
        .await?;
        if agent_status == AgentStatus::Terminated {
            return Ok(Outcome {
                failure_reason: Some("the routine's assignee agent is terminated".to_owned()),
                ..Outcome::ended(RunStatus::Failed, "agent_not_assignable")
            });
        }
        let open = sqlx::query!(
            "SELECT id, origin_run_id, assignee_agent_id, title, description FROM issues
             WHERE routine_id = $1 AND status NOT IN ('done', 'cancelled')
             ORDER BY created_at, id LIMIT 1",
            routine.id
        )
        .fetch_optional(&mut *conn)
        .await?;
        let policy = routine.concurrency_policy;
        match open {
            Some(issue) if policy == ConcurrencyPolicy::SkipIfActive => Ok(Outcome {
                linked_issue_id: Some(issue.id),
                coalesced_into_run_id: issue.origin_run_id,
                ..Outcome::ended(RunStatus::Skipped, "active_issue")
            }),
            Some(issue) if policy == ConcurrencyPolicy::CoalesceIfActive => {
                sqlx::query!(
                    "INSERT INTO issue_events (id, company_id, issue_id, type, actor_type, actor_id, data, created_at)
                     VALUES ($1, $2, $3, $4, 'system', NULL, $5, $6)",
                    new_id(),
                    routine.company_id,
                    issue.id,
                    IssueEventType::FireCoalesced.as_str(),
                    json!({ "runId": run.id, "payload": run.payload, "source": run.source }),
                    now,
                )
                .execute(&mut *conn)
                .await?;
                let waker = issue.assignee_agent_id.unwrap_or(routine.assignee_agent_id);
                let awake = sqlx::query_scalar!(
                    r#"SELECT EXISTS (SELECT 1 FROM heartbeat_runs
                                      WHERE issue_id = $1 AND agent_id = $2
                                        AND status IN ('queued', 'running')) AS "awake!""#,
                    issue.id,
                    waker,
                )
                .fetch_one(&mut *conn)
                .await?;
                let heartbeat_run_id = if awake {
                    None
                } else {
                    let context = context(routine, run, issue.title, issue.description);
                    let heartbeat = NewHeartbeat {
                        company_id: routine.company_id,
                        agent_id: waker,
                        issue_id: issue.id,
                        routine_run_id: Some(run.id),
                        context,
                    };
                    Some(heartbeat.insert(conn, now).await?.id)
                };
                Ok(Outcome {
                    linked_issue_id: Some(issue.id),
                    coalesced_into_run_id: issue.origin_run_id,
                    heartbeat_run_id,
                    ..Outcome::ended(RunStatus::Coalesced, "active_issue")
                })
            }
            _ => self.create_execution_issue(conn, routine, run, now).await,
        }
    }

    async fn create_execution_issue(
        &self,
        conn: &mut PgConnection,
        routine: &RoutineRow,
        run: &PendingRun,
        now: DateTime<Utc>,
    ) -> StoreResult<Outcome> {
        let date = fire_date(run);
        let title = render(&routine.title, &date, &run.payload, 200);
        let title = if title.trim().is_empty() {
            routine.title.clone()
        } else {
            title
        };
        let description = render(&routine.description, &date, &run.payload, 10_000);
        let issue_id = new_id();
        sqlx::query!(
            "INSERT INTO issues (id, company_id, title, description, project_id, goal_id, parent_issue_id,
                                 assignee_agent_id, priority, status, routine_id, origin_run_id,
                                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'todo', $10, $11, $12, $12)",
            issue_id,
            routine.company_id,
            title,
            description,
            routine.project_id,
            routine.goal_id,
            routine.parent_issue_id,
            routine.assignee_agent_id,
            routine.priority.as_str(),
            routine.id,
            run.id,
            now,
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!(
            "INSERT INTO issue_events (id, company_id, issue_id, type, actor_type, actor_id, data, created_at)
             VALUES ($1, $2, $3, 'created', 'system', NULL, $4, $5)",
            new_id(),
            routine.company_id,
            issue_id,
            json!({ "runId": run.id, "routineId": routine.id }),
            now,
        )
        .execute(&mut *conn)
        .await?;
        let heartbeat = NewHeartbeat {
            company_id: routine.company_id,
            agent_id: routine.assignee_agent_id,
            issue_id,
            routine_run_id: Some(run.id),
            context: context(routine, run, title, description),
        }
        .insert(conn, now)
        .await?;
        Ok(Outcome {
            status: RunStatus::IssueCreated,
            reason: None,
            failure_reason: None,
            linked_issue_id: Some(issue_id),
            coalesced_into_run_id: None,
            heartbeat_run_id: Some(heartbeat.id),
        })
    }

    /// Fails a run whose dispatch could not be completed (its job is dead), if it is still
    /// `received`.
    ///
    /// # Errors
    /// The database failed.
    pub async fn fail_undispatched_run(&self, run_id: Uuid, failure: &str) -> StoreResult<bool> {
        let now = self.now();
        let updated = sqlx::query!(
            "UPDATE routine_runs SET status = 'failed', reason = 'dispatch_failed', failure_reason = $2,
                                     completed_at = $3, updated_at = $3
             WHERE id = $1 AND status = 'received'",
            run_id,
            failure,
            now,
        )
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// What delivering a heartbeat run's wake-up needs, or `None` when there is nothing to
    /// deliver any more (the run was claimed or ended, or the agent no longer uses HTTP).
    ///
    /// # Errors
    /// The database failed, or the stored secret cannot be decrypted.
    pub async fn wakeup_delivery(
        &self,
        heartbeat_run_id: Uuid,
    ) -> StoreResult<Option<WakeupDelivery>> {
        let heartbeat_run = match self.heartbeat_run(heartbeat_run_id).await {
            Ok(run) => run,
            Err(super::StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if heartbeat_run.status != HeartbeatStatus::Queued {
            return Ok(None);
        }
        let agent = sqlx::query!(
            "SELECT wakeup_url, wakeup_secret_enc FROM agents WHERE id = $1 AND wakeup_kind = 'http'",
            heartbeat_run.agent_id
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some((Some(url), Some(sealed))) = agent.map(|a| (a.wakeup_url, a.wakeup_secret_enc))
        else {
            return Ok(None);
        };
        let secret = self.open_secret(heartbeat_run.agent_id, &sealed)?;
        Ok(Some(WakeupDelivery {
            url,
            secret,
            heartbeat_run,
        }))
    }

    /// Marks a heartbeat run `failed` because its wake-up could not be delivered, if it is still
    /// queued.
    ///
    /// # Errors
    /// The database failed.
    pub async fn fail_undelivered_heartbeat(
        &self,
        heartbeat_run_id: Uuid,
        failure: &str,
    ) -> StoreResult<bool> {
        let now = self.now();
        let updated = sqlx::query!(
            "UPDATE heartbeat_runs SET status = 'failed', finished_at = $3, summary = $2
             WHERE id = $1 AND status = 'queued'",
            heartbeat_run_id,
            failure,
            now,
        )
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Ends heartbeat runs that stayed `queued` (since creation) or `running` (since claimed)
    /// longer than `timeout`, as `timed_out`. Returns how many.
    ///
    /// # Errors
    /// The database failed.
    pub async fn time_out_heartbeats(&self, timeout: std::time::Duration) -> StoreResult<u64> {
        let now = self.now();
        let cutoff =
            now - chrono::TimeDelta::from_std(timeout).unwrap_or(chrono::TimeDelta::hours(1));
        let updated = sqlx::query!(
            "UPDATE heartbeat_runs SET status = 'timed_out', finished_at = $2
             WHERE (status = 'queued' AND created_at < $1) OR (status = 'running' AND started_at < $1)",
            cutoff,
            now,
        )
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected())
    }
}

fn context(
    routine: &RoutineRow,
    run: &PendingRun,
    title: String,
    description: String,
) -> HeartbeatContext {
    HeartbeatContext {
        routine_id: Some(routine.id),
        title,
        description,
        payload: run.payload.clone(),
        source: run.source.as_str().to_owned(),
        scheduled_for: run.scheduled_for,
    }
}

/// The fire's nominal date: a schedule fire's time in its trigger's zone, else the acceptance
/// time in UTC.
fn fire_date(run: &PendingRun) -> String {
    let zone = run
        .timezone
        .as_deref()
        .and_then(|z| TimeZone::parse(z).ok())
        .unwrap_or(TimeZone::UTC);
    match (run.source, run.scheduled_for) {
        (RunSource::Schedule, Some(at)) => zone.wall(at).format("%Y-%m-%d").to_string(),
        _ => run.triggered_at.format("%Y-%m-%d").to_string(),
    }
}

/// Substitutes `{{date}}` and `{{payload.<key>}}` (dotted keys reach into nested objects;
/// strings as they are, other values as JSON, missing values as nothing), keeping at most
/// `max_chars` characters.
pub(crate) fn render(template: &str, date: &str, payload: &Value, max_chars: usize) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + 2 + end].trim();
        if name == "date" {
            out.push_str(date);
        } else if let Some(path) = name.strip_prefix("payload.") {
            let value = path.split('.').try_fold(payload, |v, key| v.get(key));
            match value {
                Some(Value::String(s)) => out.push_str(s),
                Some(Value::Null) | None => {}
                Some(other) => out.push_str(&other.to_string()),
            }
        } else {
            out.push_str(&rest[start..start + 2 + end + 2]);
        }
        rest = &rest[start + 2 + end + 2..];
    }
    out.push_str(rest);
    out.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_substitute_date_and_payload_keys() {
        let payload = json!({ "topic": "billing", "n": 3, "deep": { "key": "v" }, "list": [1, 2] });
        let render = |t: &str| render(t, "2026-11-29", &payload, 200);
        assert_eq!(render("Report {{date}}"), "Report 2026-11-29");
        assert_eq!(render("{{ payload.topic }} x{{payload.n}}"), "billing x3");
        assert_eq!(render("{{payload.deep.key}} {{payload.list}}"), "v [1,2]");
        assert_eq!(render("[{{payload.missing}}]"), "[]");
        assert_eq!(render("{{other}} {{date"), "{{other}} {{date");
        assert_eq!(
            super::render(&"é".repeat(300), "", &payload, 200)
                .chars()
                .count(),
            200
        );
    }
}
