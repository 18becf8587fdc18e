//! The audit log: an entry as every backend writes it, and the entry of each mutation.

use serde_json::json;
use uuid::Uuid;

use super::{
    AgentChanges, TriggerChanges,
    routines::{RoutineRow, routine_change_details},
};
use crate::{
    model::{
        Actor, AgentStatus, Company, Goal, HeartbeatStatus, Issue, JitterSec, Label,
        NotificationChannel, Project, ReplayWindow, Title, Trigger, TriggerKind,
    },
    schedule::{CronExpression, TimeZone},
};

/// One mutation to record.
#[derive(Debug)]
pub struct NewActivity<'a> {
    /// The company whose log gets the entry.
    pub company_id: Uuid,
    /// Who did it.
    pub actor: Actor,
    /// What was done, `<entity>.<verb>`.
    pub action: &'a str,
    /// The kind of thing it was done to.
    pub entity_type: &'a str,
    /// The thing it was done to.
    pub entity_id: Uuid,
    /// Details of the change (never a secret).
    pub details: serde_json::Value,
}

/// The entry of each mutation, spelled once for every backend: the action, the kind of thing,
/// and what its details say.
impl NewActivity<'static> {
    fn entry(
        company_id: Uuid,
        actor: Actor,
        action: &'static str,
        entity: (&'static str, Uuid),
        details: serde_json::Value,
    ) -> Self {
        Self {
            company_id,
            actor,
            action,
            entity_type: entity.0,
            entity_id: entity.1,
            details,
        }
    }

    /// `company.created`.
    pub(crate) fn company_created(company: &Company, actor: Actor) -> Self {
        let details = json!({ "name": company.name });
        Self::entry(
            company.id,
            actor,
            "company.created",
            ("company", company.id),
            details,
        )
    }

    /// `project.created`.
    pub(crate) fn project_created(company_id: Uuid, project: &Project, actor: Actor) -> Self {
        let details = json!({ "name": project.name });
        Self::entry(
            company_id,
            actor,
            "project.created",
            ("project", project.id),
            details,
        )
    }

    /// `goal.created`.
    pub(crate) fn goal_created(company_id: Uuid, goal: &Goal, actor: Actor) -> Self {
        let details = json!({ "title": goal.title });
        Self::entry(
            company_id,
            actor,
            "goal.created",
            ("goal", goal.id),
            details,
        )
    }

    /// `agent.created`, with its first key.
    pub(crate) fn agent_created(
        company_id: Uuid,
        agent_id: Uuid,
        (name, wakeup_kind): (&str, &str),
        key_id: Uuid,
        actor: Actor,
    ) -> Self {
        let details = json!({ "name": name, "wakeup": wakeup_kind, "keyId": key_id });
        Self::entry(
            company_id,
            actor,
            "agent.created",
            ("agent", agent_id),
            details,
        )
    }

    /// `agent.updated`: the fields changed (a status as `{from, to}`).
    pub(crate) fn agent_updated(
        (company_id, agent_id): (Uuid, Uuid),
        before: AgentStatus,
        changes: &AgentChanges,
        wakeup_kind: Option<&str>,
        actor: Actor,
    ) -> Self {
        let details = json!({
            "name": changes.name.as_ref().map(Title::as_str),
            "status": changes.status.map(|s| json!({ "from": before, "to": s })),
            "wakeup": wakeup_kind,
        });
        Self::entry(
            company_id,
            actor,
            "agent.updated",
            ("agent", agent_id),
            details,
        )
    }

    /// `agent_key.created`.
    pub(crate) fn agent_key_created(
        company_id: Uuid,
        agent_id: Uuid,
        key_id: Uuid,
        actor: Actor,
    ) -> Self {
        Self::agent_key("agent_key.created", (company_id, agent_id), key_id, actor)
    }

    /// `agent_key.revoked`.
    pub(crate) fn agent_key_revoked(
        company_id: Uuid,
        agent_id: Uuid,
        key_id: Uuid,
        actor: Actor,
    ) -> Self {
        Self::agent_key("agent_key.revoked", (company_id, agent_id), key_id, actor)
    }

    fn agent_key(
        action: &'static str,
        (company_id, agent_id): (Uuid, Uuid),
        key_id: Uuid,
        actor: Actor,
    ) -> Self {
        let details = json!({ "keyId": key_id });
        Self::entry(company_id, actor, action, ("agent", agent_id), details)
    }

    /// `trigger.created`.
    pub(crate) fn trigger_created(company_id: Uuid, trigger: &Trigger, actor: Actor) -> Self {
        let details = json!({ "routineId": trigger.routine_id, "kind": trigger.kind() });
        Self::entry(
            company_id,
            actor,
            "trigger.created",
            ("routine_trigger", trigger.id),
            details,
        )
    }

    /// `trigger.updated`: the fields the change named.
    pub(crate) fn trigger_updated(
        company_id: Uuid,
        (routine_id, trigger_id): (Uuid, Uuid),
        changes: &TriggerChanges,
        actor: Actor,
    ) -> Self {
        let details = json!({
            "routineId": routine_id,
            "label": changes.label.as_ref().map(Label::as_str),
            "enabled": changes.enabled,
            "cronExpression": changes.cron.as_ref().map(CronExpression::as_str),
            "timezone": changes.zone.map(TimeZone::name),
            "jitterSec": changes.jitter.map(JitterSec::get),
            "signingMode": changes.signing_mode,
            "replayWindowSec": changes.replay_window.map(ReplayWindow::get),
        });
        Self::entry(
            company_id,
            actor,
            "trigger.updated",
            ("routine_trigger", trigger_id),
            details,
        )
    }

    /// `trigger.deleted`.
    pub(crate) fn trigger_deleted(
        company_id: Uuid,
        (routine_id, trigger_id): (Uuid, Uuid),
        kind: TriggerKind,
        actor: Actor,
    ) -> Self {
        let details = json!({ "routineId": routine_id, "kind": kind });
        Self::entry(
            company_id,
            actor,
            "trigger.deleted",
            ("routine_trigger", trigger_id),
            details,
        )
    }

    /// `trigger.secret_rotated` (never the secret).
    pub(crate) fn trigger_secret_rotated(
        company_id: Uuid,
        (routine_id, trigger_id): (Uuid, Uuid),
        rotation: &crate::engine::rotation::Rotation,
        actor: Actor,
    ) -> Self {
        // Whether the sender's secret was set, never the secret.
        let details = json!({
            "routineId": routine_id,
            "previousSecretValidSec": rotation.grace.num_seconds(),
            "force": rotation.force,
            "senderSecret": rotation.sender_secret.is_some(),
        });
        let entity = ("routine_trigger", trigger_id);
        Self::entry(company_id, actor, "trigger.secret_rotated", entity, details)
    }

    /// `routine.backfilled`.
    pub(crate) fn routine_backfilled(
        (company_id, routine_id): (Uuid, Uuid),
        range: &super::BackfillRange,
        (created, existing): (usize, usize),
        actor: Actor,
    ) -> Self {
        let details = json!({
            "from": range.from,
            "to": range.to,
            "triggerId": range.trigger_id,
            "runs": created,
            "existing": existing,
        });
        Self::entry(
            company_id,
            actor,
            "routine.backfilled",
            ("routine", routine_id),
            details,
        )
    }

    /// `routine.created`.
    pub(crate) fn routine_created(routine: &RoutineRow, actor: Actor) -> Self {
        let details =
            json!({ "title": routine.title, "assigneeAgentId": routine.assignee_agent_id });
        Self::entry(
            routine.company_id,
            actor,
            "routine.created",
            ("routine", routine.id),
            details,
        )
    }

    /// `routine.updated`: the fields the change altered.
    pub(crate) fn routine_updated(before: &RoutineRow, after: &RoutineRow, actor: Actor) -> Self {
        let details = routine_change_details(before, after);
        Self::entry(
            after.company_id,
            actor,
            "routine.updated",
            ("routine", after.id),
            details,
        )
    }

    /// `notification_channel.created` (never its URL, which may hold a token, or its secret).
    pub(crate) fn channel_created(channel: &NotificationChannel, actor: Actor) -> Self {
        Self::channel_entry(
            channel,
            actor,
            "notification_channel.created",
            json!({
                "name": channel.name,
                "kind": channel.kind,
                "events": channel.events,
                "routineIds": channel.routine_ids,
                "enabled": channel.enabled,
            }),
        )
    }

    /// `notification_channel.updated`: which fields changed (the URL only as changed or not).
    pub(crate) fn channel_updated(
        before: &NotificationChannel,
        after: &NotificationChannel,
        actor: Actor,
    ) -> Self {
        let mut changed = serde_json::Map::new();
        let mut note = |field: &str, from: serde_json::Value, to: serde_json::Value| {
            if from != to {
                changed.insert(field.to_owned(), json!({ "from": from, "to": to }));
            }
        };
        note("name", json!(before.name), json!(after.name));
        note("url", json!(false), json!(before.url != after.url));
        note("events", json!(before.events), json!(after.events));
        note(
            "routineIds",
            json!(before.routine_ids),
            json!(after.routine_ids),
        );
        note("enabled", json!(before.enabled), json!(after.enabled));
        Self::channel_entry(
            after,
            actor,
            "notification_channel.updated",
            serde_json::Value::Object(changed),
        )
    }

    /// `notification_channel.deleted`.
    pub(crate) fn channel_deleted(channel: &NotificationChannel, actor: Actor) -> Self {
        let details = json!({ "name": channel.name });
        Self::channel_entry(channel, actor, "notification_channel.deleted", details)
    }

    /// `notification_channel.tested`.
    pub(crate) fn channel_tested(channel: &NotificationChannel, actor: Actor) -> Self {
        let details = json!({ "name": channel.name });
        Self::channel_entry(channel, actor, "notification_channel.tested", details)
    }

    fn channel_entry(
        channel: &NotificationChannel,
        actor: Actor,
        action: &'static str,
        details: serde_json::Value,
    ) -> Self {
        Self::entry(
            channel.company_id,
            actor,
            action,
            ("notification_channel", channel.id),
            details,
        )
    }

    /// `run.timed_out`: its issue was still open when its routine's `runTimeoutSec` ran out.
    pub(crate) fn run_timed_out(company_id: Uuid, run_id: Uuid, issue_id: Uuid) -> Self {
        Self::entry(
            company_id,
            Actor::System,
            "run.timed_out",
            ("routine_run", run_id),
            json!({ "issueId": issue_id, "reason": "timed_out" }),
        )
    }

    /// `issue.created`.
    pub(crate) fn issue_created(issue: &Issue, actor: Actor) -> Self {
        let details = json!({ "title": issue.title, "assigneeAgentId": issue.assignee_agent_id });
        Self::entry(
            issue.company_id,
            actor,
            "issue.created",
            ("issue", issue.id),
            details,
        )
    }

    /// `issue.status_changed`, with the change as its history records it.
    pub(crate) fn issue_status_changed(
        issue: &Issue,
        change: serde_json::Value,
        actor: Actor,
    ) -> Self {
        Self::entry(
            issue.company_id,
            actor,
            "issue.status_changed",
            ("issue", issue.id),
            change,
        )
    }

    /// `heartbeat_run.claimed`.
    pub(crate) fn heartbeat_claimed(
        company_id: Uuid,
        (run_id, issue_id): (Uuid, Uuid),
        actor: Actor,
    ) -> Self {
        let details = json!({ "issueId": issue_id });
        Self::entry(
            company_id,
            actor,
            "heartbeat_run.claimed",
            ("heartbeat_run", run_id),
            details,
        )
    }

    /// `heartbeat_run.finished`.
    pub(crate) fn heartbeat_finished(
        company_id: Uuid,
        run_id: Uuid,
        status: HeartbeatStatus,
        actor: Actor,
    ) -> Self {
        let details = json!({ "status": status });
        Self::entry(
            company_id,
            actor,
            "heartbeat_run.finished",
            ("heartbeat_run", run_id),
            details,
        )
    }
}
