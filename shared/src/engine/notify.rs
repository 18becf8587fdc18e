//! Notifications decided: which channels receive an event, what the body of a notification
//! is, and what a Slack channel's one line says. Pure: the backends load the company's
//! channels and the run, routine or heartbeat run concerned, and write one notification per
//! receiving channel (with its delivery job) in the transaction of the change.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::model::{ChannelKind, NotificationEvent};

/// Attempts of a notification delivery: with the queue's backoff (1 s doubling to an hour,
/// each at least half of that), the last attempt comes more than 24 hours after the first.
pub const NOTIFY_MAX_ATTEMPTS: i32 = 60;

/// A channel as the fan-out reads it.
#[derive(Debug, Clone)]
pub struct ChannelTarget {
    /// Id.
    pub id: Uuid,
    /// Its company.
    pub company_id: Uuid,
    /// The events it receives.
    pub events: Vec<NotificationEvent>,
    /// The routines it is told about; `None` for all.
    pub routine_ids: Option<Vec<Uuid>>,
}

impl ChannelTarget {
    /// Whether it receives `event` about `routine_id` of `company_id` (an event about no
    /// routine reaches every channel of the company that subscribes to it).
    #[must_use]
    pub fn receives(
        &self,
        company_id: Uuid,
        event: NotificationEvent,
        routine_id: Option<Uuid>,
    ) -> bool {
        self.company_id == company_id
            && self.events.contains(&event)
            && match (&self.routine_ids, routine_id) {
                (Some(named), Some(routine)) => named.contains(&routine),
                _ => true,
            }
    }
}

/// Something that happened, to be told to the channels that receive it. Written with the
/// change that caused it (in the payload of a `fan_out_notices` job), read again when a worker
/// turns it into one notification per receiving channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// The event.
    pub event: NotificationEvent,
    /// The company.
    pub company_id: Uuid,
    /// The routine concerned, if any.
    pub routine_id: Option<Uuid>,
    /// What the notice says besides the run or heartbeat run (`{"routine": …}`), without
    /// `companyId`, which [`body`] adds.
    pub data: Value,
    /// The run it is about: read when it is sent out, as `data.run` (a finished run does not
    /// change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    /// The heartbeat run it is about, as `data.heartbeatRun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_run_id: Option<Uuid>,
}

impl Notice {
    /// The notice with the run or heartbeat run it is about in its data: `run` without its
    /// `payload` (up to a mebibyte of the sender's data; `GET` the run for it).
    #[must_use]
    pub fn with_subject(&self, run: Option<Value>, heartbeat_run: Option<Value>) -> Self {
        let mut notice = self.clone();
        if let Value::Object(data) = &mut notice.data {
            if let Some(mut run) = run {
                if let Value::Object(fields) = &mut run {
                    fields.remove("payload");
                }
                data.insert("run".to_owned(), run);
            }
            if let Some(heartbeat_run) = heartbeat_run {
                data.insert("heartbeatRun".to_owned(), heartbeat_run);
            }
        }
        notice
    }
}

/// For each notice, the channels among `channels` that receive it.
#[must_use]
pub fn fan_out<'a>(
    notices: &'a [Notice],
    channels: &[ChannelTarget],
) -> Vec<(&'a Notice, Vec<Uuid>)> {
    notices
        .iter()
        .map(|notice| {
            let to = channels
                .iter()
                .filter(|c| c.receives(notice.company_id, notice.event, notice.routine_id))
                .map(|c| c.id)
                .collect();
            (notice, to)
        })
        .filter(|(_, to): &(_, Vec<Uuid>)| !to.is_empty())
        .collect()
}

/// The body every channel kind starts from: `{type, timestamp, data}`, `data` with the
/// company's id.
#[must_use]
pub fn body(notice: &Notice, at: DateTime<Utc>) -> Value {
    let mut data = match &notice.data {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    data.insert("companyId".to_owned(), json!(notice.company_id));
    json!({
        "type": notice.event,
        "timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
}

/// What is POSTed to a channel of `kind` for a notification whose body is `body`: the body
/// itself, or for Slack `{"text": <one line>}`.
#[must_use]
pub fn payload(kind: ChannelKind, body: &Value) -> Value {
    match kind {
        ChannelKind::Webhook => body.clone(),
        ChannelKind::Slack => json!({ "text": slack_text(body) }),
    }
}

/// One line a person understands, for a body made by [`body`].
#[must_use]
pub fn slack_text(body: &Value) -> String {
    let data = &body["data"];
    let text = |value: &Value| value.as_str().unwrap_or("?").to_owned();
    let routine = match data["routine"]["title"].as_str() {
        Some(title) => format!("Routine \u{201c}{title}\u{201d}"),
        None => "A routine".to_owned(),
    };
    let run = &data["run"];
    let event = body["type"].as_str().unwrap_or_default();
    match event.parse::<NotificationEvent>() {
        Ok(NotificationEvent::RunFailed) => {
            let why = run["failureReason"]
                .as_str()
                .map(|f| format!(": {f}"))
                .unwrap_or_default();
            format!(
                "{routine}: a run failed ({}){why}. Run {}.",
                text(&run["reason"]),
                text(&run["id"])
            )
        }
        Ok(NotificationEvent::RunMissed) => {
            let count = run["missed"]["count"].as_i64().unwrap_or(1);
            let fires = if count == 1 { "fire" } else { "fires" };
            format!(
                "{routine}: {count} scheduled {fires} missed ({}). Run {}.",
                text(&run["reason"]),
                text(&run["id"])
            )
        }
        Ok(NotificationEvent::RoutinePausedOnFailures) => format!(
            "{routine} paused itself after {} failed runs in a row; resume it when the cause is fixed.",
            data["routine"]["consecutiveFailures"].as_i64().unwrap_or(0)
        ),
        Ok(NotificationEvent::RoutineRecovered) => {
            format!(
                "{routine} recovered: run {} completed after failures.",
                text(&run["id"])
            )
        }
        Ok(NotificationEvent::WakeupFailed) => {
            let heartbeat = &data["heartbeatRun"];
            format!(
                "A wake-up of agent {} could not be delivered ({}). Heartbeat run {}.",
                text(&heartbeat["agentId"]),
                text(&heartbeat["summary"]),
                text(&heartbeat["id"])
            )
        }
        Ok(NotificationEvent::Test) => format!(
            "Test notification for channel \u{201c}{}\u{201d}: this channel is connected.",
            text(&data["channel"]["name"])
        ),
        Err(_) => format!("Nexus Routines: {event}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(events: &[NotificationEvent], routines: Option<Vec<Uuid>>) -> ChannelTarget {
        ChannelTarget {
            id: Uuid::new_v4(),
            company_id: Uuid::nil(),
            events: events.to_vec(),
            routine_ids: routines,
        }
    }

    #[test]
    fn a_notice_reaches_the_channels_of_its_company_event_and_routine() {
        let routine = Uuid::new_v4();
        let other = Uuid::new_v4();
        let all = channel(&[NotificationEvent::RunFailed], None);
        let named = channel(&[NotificationEvent::RunFailed], Some(vec![other]));
        let missed_only = channel(&[NotificationEvent::RunMissed], None);
        let mut elsewhere = channel(&[NotificationEvent::RunFailed], None);
        elsewhere.company_id = Uuid::new_v4();
        let channels = [all.clone(), named.clone(), missed_only, elsewhere];
        let notice = |event, routine_id| Notice {
            event,
            company_id: Uuid::nil(),
            routine_id,
            data: json!({}),
            run_id: None,
            heartbeat_run_id: None,
        };
        let notices = [
            notice(NotificationEvent::RunFailed, Some(routine)),
            notice(NotificationEvent::RunFailed, Some(other)),
            notice(NotificationEvent::Test, None),
        ];
        let sent = fan_out(&notices, &channels);
        assert_eq!(sent.len(), 2, "the test event has no subscriber here");
        assert_eq!(sent[0].1, vec![all.id]);
        assert_eq!(sent[1].1, vec![all.id, named.id]);
    }

    #[test]
    fn bodies_carry_the_company_and_slack_gets_one_line() {
        let notice = Notice {
            event: NotificationEvent::RunFailed,
            company_id: Uuid::nil(),
            routine_id: None,
            data: json!({"routine": {"id": Uuid::nil(), "title": "Nightly report"}}),
            run_id: None,
            heartbeat_run_id: None,
        };
        let run = json!({"id": "r1", "reason": "timed_out", "failureReason": "still open", "payload": {"big": 1}});
        let notice = notice.with_subject(Some(run), None);
        assert!(
            notice.data["run"].get("payload").is_none(),
            "never the payload"
        );
        let at: DateTime<Utc> = "2026-12-04T10:00:00Z".parse().expect("instant");
        let body = body(&notice, at);
        assert_eq!(body["type"], "run.failed");
        assert_eq!(body["timestamp"], "2026-12-04T10:00:00.000Z");
        assert_eq!(body["data"]["companyId"], json!(Uuid::nil()));
        assert_eq!(payload(ChannelKind::Webhook, &body), body);
        assert_eq!(
            payload(ChannelKind::Slack, &body),
            json!({"text": "Routine \u{201c}Nightly report\u{201d}: a run failed (timed_out): still open. Run r1."})
        );
        for event in NotificationEvent::ALL {
            let line = slack_text(&json!({"type": event, "data": {}}));
            assert!(!line.is_empty() && !line.contains('\n'), "{event}: {line}");
        }
    }
}
