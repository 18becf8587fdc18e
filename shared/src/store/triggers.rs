//! Triggers: what the trigger operations take and return, a trigger row as both backends read
//! it and as the API shows it, and the columns of a new trigger.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    crypto::random_bytes,
    engine::{fires::fire_instant, refusal::Refusal, rotation::webhook_secret},
    model::{
        JitterSec, Label, ReplayWindow, SenderSecret, SigningMode, Trigger, TriggerConfig,
        TriggerKind,
    },
    schedule::{CronExpression, Schedule, TimeZone},
};

/// What a new trigger fires on.
#[derive(Debug, Clone)]
pub enum NewTriggerKind {
    /// A cron schedule in a time zone.
    Schedule {
        /// The expression.
        cron: CronExpression,
        /// The zone.
        zone: TimeZone,
        /// Jitter range in seconds.
        jitter: JitterSec,
    },
    /// A signed public URL.
    Webhook {
        /// How calls authenticate.
        signing_mode: SigningMode,
        /// Replay window.
        replay_window: ReplayWindow,
        /// The secret, where the sender issues it (`stripe`, `slack`); else one is generated.
        sender_secret: Option<SenderSecret>,
    },
    /// Manual runs naming it.
    Api,
}

/// A new trigger.
#[derive(Debug, Clone)]
pub struct NewTrigger {
    /// Kind and kind-specific settings.
    pub kind: NewTriggerKind,
    /// Label.
    pub label: Label,
    /// Whether it fires.
    pub enabled: bool,
}

/// Changes to a trigger; `None` keeps a field. Fields must belong to the trigger's kind.
#[derive(Debug, Default)]
pub struct TriggerChanges {
    /// New label.
    pub label: Option<Label>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New cron expression (schedule).
    pub cron: Option<CronExpression>,
    /// New time zone (schedule).
    pub zone: Option<TimeZone>,
    /// New jitter (schedule).
    pub jitter: Option<JitterSec>,
    /// New signing mode (webhook).
    pub signing_mode: Option<SigningMode>,
    /// New replay window (webhook).
    pub replay_window: Option<ReplayWindow>,
}

/// The secret of a webhook trigger, shown on creation and rotation only.
#[derive(Clone)]
pub struct SecretMaterial {
    /// Where to send calls.
    pub webhook_url: String,
    /// The secret.
    pub webhook_secret: String,
}

impl std::fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretMaterial")
            .field("webhook_url", &self.webhook_url)
            .field("webhook_secret", &crate::crypto::Redacted)
            .finish()
    }
}

/// A trigger with what access checks need of its routine.
#[derive(Debug, Clone)]
pub struct TriggerInRoutine {
    /// The trigger.
    pub trigger: Trigger,
    /// The routine's company.
    pub company_id: Uuid,
    /// The routine's assignee.
    pub assignee_agent_id: Uuid,
}

/// A stored trigger row.
#[derive(sqlx::FromRow)]
pub(crate) struct TriggerRow {
    pub(crate) id: Uuid,
    pub(crate) routine_id: Uuid,
    pub(crate) kind: TriggerKind,
    pub(crate) label: String,
    pub(crate) enabled: bool,
    pub(crate) cron_expression: Option<String>,
    pub(crate) timezone: Option<String>,
    pub(crate) jitter_sec: i32,
    /// The nominal time of the next fire not handled yet.
    pub(crate) next_run_at: Option<DateTime<Utc>>,
    pub(crate) public_id: Option<String>,
    pub(crate) signing_mode: Option<SigningMode>,
    pub(crate) replay_window_sec: Option<i32>,
    pub(crate) last_fired_at: Option<DateTime<Utc>>,
    pub(crate) last_result: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    /// Until when the secret its last rotation replaced still works.
    pub(crate) previous_secret_expires_at: Option<DateTime<Utc>>,
    /// When the trigger's pending prepared fire takes effect (nominal time plus jitter; see
    /// `fires.rs`).
    pub(crate) prepared_fire_at: Option<DateTime<Utc>>,
}

impl TriggerRow {
    /// The trigger as the API shows it at `now`. A fire prepared ahead is invisible before it
    /// takes effect: until then `nextRunAt` is that instant and `lastFiredAt` the fire before
    /// it; from then on it counts as fired. `nextRunAt` is a real instant: the next nominal
    /// time plus its jitter offset.
    pub(crate) fn into_trigger(self, public_url: &str, now: DateTime<Utc>) -> Trigger {
        let next = self
            .next_run_at
            .map(|at| fire_instant(self.id, at, self.jitter_sec));
        let (next_run_at, last_fired_at) = match self.prepared_fire_at {
            Some(prepared) if prepared > now => (
                Some(next.map_or(prepared, |n| n.min(prepared))),
                self.last_fired_at,
            ),
            Some(prepared) => (next, self.last_fired_at.max(Some(prepared))),
            None => (next, self.last_fired_at),
        };
        let config = match self.kind {
            TriggerKind::Schedule => TriggerConfig::Schedule {
                description: describe(self.cron_expression.as_deref().unwrap_or_default()),
                cron_expression: self.cron_expression.unwrap_or_default(),
                timezone: self.timezone.unwrap_or_default(),
                jitter_sec: self.jitter_sec,
                next_run_at,
            },
            TriggerKind::Webhook => {
                let public_id = self.public_id.unwrap_or_default();
                TriggerConfig::Webhook {
                    signing_mode: self.signing_mode.unwrap_or(SigningMode::Bearer),
                    replay_window_sec: self.replay_window_sec.unwrap_or_default(),
                    previous_secret_expires_at: self
                        .previous_secret_expires_at
                        .filter(|until| *until > now),
                    webhook_url: webhook_url(public_url, &public_id),
                    public_id,
                }
            }
            TriggerKind::Api => TriggerConfig::Api,
        };
        Trigger {
            id: self.id,
            routine_id: self.routine_id,
            config,
            label: self.label,
            enabled: self.enabled,
            last_fired_at,
            last_result: self.last_result,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The public URL of a webhook trigger.
#[must_use]
pub fn webhook_url(public_url: &str, public_id: &str) -> String {
    format!("{public_url}/api/routine-triggers/public/{public_id}/fire")
}

/// The next fire of a stored schedule, strictly after `now`; `None` when the stored text no
/// longer parses (it was validated on the way in) or it never fires again.
pub(crate) fn next_fire(cron: &str, zone: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let schedule = Schedule::new(
        CronExpression::parse(cron).ok()?,
        TimeZone::parse(zone).ok()?,
    );
    schedule.next_after(now)
}

/// The kind-specific columns of a new trigger: a schedule's next fire (only while enabled on
/// an active routine), a webhook's public id and secret (see `engine::rotation::webhook_secret`).
#[derive(Default)]
pub(crate) struct NewColumns {
    pub(crate) cron: Option<String>,
    pub(crate) zone: Option<&'static str>,
    pub(crate) jitter_sec: i32,
    pub(crate) next_run_at: Option<DateTime<Utc>>,
    pub(crate) public_id: Option<String>,
    pub(crate) signing_mode: Option<&'static str>,
    pub(crate) replay_window: Option<i32>,
    pub(crate) secret: Option<String>,
}

impl NewColumns {
    pub(crate) fn of(new: &NewTrigger, active: bool, now: DateTime<Utc>) -> Result<Self, Refusal> {
        Ok(match &new.kind {
            NewTriggerKind::Schedule { cron, zone, jitter } => Self {
                cron: Some(cron.as_str().to_owned()),
                zone: Some(zone.name()),
                jitter_sec: jitter.get(),
                next_run_at: (active && new.enabled)
                    .then(|| Schedule::new(cron.clone(), *zone).next_after(now))
                    .flatten(),
                ..Self::default()
            },
            NewTriggerKind::Webhook {
                signing_mode,
                replay_window,
                sender_secret,
            } => Self {
                public_id: Some(new_public_id()),
                signing_mode: Some(signing_mode.as_str()),
                replay_window: Some(replay_window.get()),
                secret: Some(webhook_secret(*signing_mode, sender_secret.as_ref())?),
                ..Self::default()
            },
            NewTriggerKind::Api => Self::default(),
        })
    }
}

/// A new webhook trigger's public id.
pub(crate) fn new_public_id() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}

pub(crate) fn kind_of(kind: &NewTriggerKind) -> TriggerKind {
    match kind {
        NewTriggerKind::Schedule { .. } => TriggerKind::Schedule,
        NewTriggerKind::Webhook { .. } => TriggerKind::Webhook,
        NewTriggerKind::Api => TriggerKind::Api,
    }
}

/// A stored cron expression in plain language (as written, should it no longer parse).
fn describe(expression: &str) -> String {
    crate::schedule::CronExpression::parse(expression)
        .map_or_else(|_| expression.to_owned(), |cron| cron.describe())
}
