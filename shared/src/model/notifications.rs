//! Notification channels and what they were sent, as stored and shown.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::*;

text_enum! {
    /// What a channel is told about.
    NotificationEvent {
        /// A run became `failed` (`timed_out` included).
        RunFailed => "run.failed",
        /// A run was skipped as `missed_schedule` or `catch_up_cap`: fires were missed.
        RunMissed => "run.missed",
        /// A routine paused itself after `pauseAfterFailures` failed runs in a row.
        RoutinePausedOnFailures => "routine.paused_on_failures",
        /// A run completed right after one or more failures.
        RoutineRecovered => "routine.recovered",
        /// An HTTP wake-up gave up.
        WakeupFailed => "wakeup.failed",
        /// Sent by `POST /api/notification-channels/{channelId}/test`.
        Test => "test",
    }
}

text_enum! {
    /// Where a channel posts: a Standard Webhooks-signed `webhook`, or a Slack incoming webhook.
    ChannelKind { Webhook => "webhook", Slack => "slack" }
}

text_enum! {
    /// Where one notification stands.
    DeliveryStatus { Pending => "pending", Delivered => "delivered", Failed => "failed" }
}

/// A channel name: 1–100 characters.
pub type ChannelName = BoundedText<1, 100>;

/// A company's notification channel (never with its secret).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationChannel {
    /// Id.
    pub id: Uuid,
    /// Owning company.
    pub company_id: Uuid,
    /// Name.
    pub name: String,
    /// `webhook` or `slack`.
    pub kind: ChannelKind,
    /// Where it posts.
    pub url: String,
    /// The events it receives.
    pub events: Vec<NotificationEvent>,
    /// The routines it is told about; `null` for every routine of the company.
    pub routine_ids: Option<Vec<Uuid>>,
    /// Whether it receives anything.
    pub enabled: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One notification sent (or being sent) to a channel.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct NotificationDelivery {
    /// Id (the `webhook-id` of every attempt).
    pub id: Uuid,
    /// The event.
    pub event: NotificationEvent,
    /// The routine concerned, if any.
    pub routine_id: Option<Uuid>,
    /// `pending`, `delivered` or `failed`.
    pub status: DeliveryStatus,
    /// Attempts so far.
    pub attempts: i32,
    /// The HTTP status of the last attempt, if it got an answer.
    pub last_status_code: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the change that caused it was committed.
    pub created_at: DateTime<Utc>,
    /// When a receiver acknowledged it.
    pub delivered_at: Option<DateTime<Utc>>,
}
