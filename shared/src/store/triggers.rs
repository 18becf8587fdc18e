//! Triggers of routines: schedule (cron in a time zone), webhook (public id and an encrypted
//! secret), api. A schedule trigger's `next_run_at` is set only while it is enabled and its
//! routine is active; enabling it or resuming the routine computes the next fire from the
//! current time (no catch-up of the time spent disabled or paused).

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    NewActivity, PgStore, StoreError, StoreResult,
    fires::{announce_trigger_change, withdraw_prepared},
    new_id,
    routines::{RoutineRow, fetch_routine},
};
use crate::{
    crypto::{generate_token, random_bytes},
    model::{
        Actor, Label, ReplayWindow, RoutineStatus, SigningMode, Trigger, TriggerConfig, TriggerKind,
    },
    schedule::{CronExpression, Schedule, TimeZone},
};

/// Prefix of webhook secrets.
pub const WEBHOOK_SECRET_PREFIX: &str = "nxw_";

/// What a new trigger fires on.
#[derive(Debug, Clone)]
pub enum NewTriggerKind {
    /// A cron schedule in a time zone.
    Schedule {
        /// The expression.
        cron: CronExpression,
        /// The zone.
        zone: TimeZone,
    },
    /// A signed public URL.
    Webhook {
        /// How calls authenticate.
        signing_mode: SigningMode,
        /// Replay window.
        replay_window: ReplayWindow,
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
    pub(crate) next_run_at: Option<DateTime<Utc>>,
    pub(crate) public_id: Option<String>,
    pub(crate) signing_mode: Option<SigningMode>,
    pub(crate) replay_window_sec: Option<i32>,
    pub(crate) last_fired_at: Option<DateTime<Utc>>,
    pub(crate) last_result: Option<String>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    /// The nominal time of the trigger's pending prepared fire (see `fires.rs`).
    pub(crate) prepared_fire_at: Option<DateTime<Utc>>,
}

impl TriggerRow {
    /// The trigger as the API shows it at `now`. A fire prepared ahead is invisible before its
    /// nominal time: until then `nextRunAt` is that time and `lastFiredAt` the fire before it;
    /// from then on it counts as fired.
    pub(crate) fn into_trigger(self, public_url: &str, now: DateTime<Utc>) -> Trigger {
        let (next_run_at, last_fired_at) = match self.prepared_fire_at {
            Some(prepared) if prepared > now => (Some(prepared), self.last_fired_at),
            Some(prepared) => (self.next_run_at, self.last_fired_at.max(Some(prepared))),
            None => (self.next_run_at, self.last_fired_at),
        };
        let config = match self.kind {
            TriggerKind::Schedule => TriggerConfig::Schedule {
                cron_expression: self.cron_expression.unwrap_or_default(),
                timezone: self.timezone.unwrap_or_default(),
                next_run_at,
            },
            TriggerKind::Webhook => {
                let public_id = self.public_id.unwrap_or_default();
                TriggerConfig::Webhook {
                    signing_mode: self.signing_mode.unwrap_or(SigningMode::Bearer),
                    replay_window_sec: self.replay_window_sec.unwrap_or_default(),
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

/// Sets `next_run_at` of every schedule trigger of a routine: the next fire after `now` for the
/// enabled ones when `active`, otherwise `NULL`.
pub(crate) async fn reschedule_routine_triggers(
    conn: &mut PgConnection,
    routine_id: Uuid,
    active: bool,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let schedules = sqlx::query!(
        r#"SELECT id, enabled, cron_expression AS "cron!", timezone AS "zone!" FROM routine_triggers
           WHERE routine_id = $1 AND kind = 'schedule' FOR UPDATE"#,
        routine_id
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = schedules.iter().map(|t| t.id).collect();
    withdraw_prepared(&mut *conn, &ids, now).await?;
    for trigger in schedules {
        let next = (active && trigger.enabled)
            .then(|| next_fire(&trigger.cron, &trigger.zone, now))
            .flatten();
        sqlx::query!(
            "UPDATE routine_triggers SET next_run_at = $2 WHERE id = $1",
            trigger.id,
            next
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The routine of a trigger, locked for update (the routine row first, always before the
/// trigger row, so trigger changes and dispatches take locks in one order); refused when the
/// routine is archived.
async fn changeable_routine_of(
    conn: &mut PgConnection,
    trigger_id: Uuid,
) -> StoreResult<RoutineRow> {
    let routine = routine_of(conn, trigger_id).await?;
    if routine.status == RoutineStatus::Archived {
        return Err(archived());
    }
    Ok(routine)
}

/// The routine of trigger `trigger_id`, locked, whatever its status: deleting a trigger and
/// rotating its secret stay allowed on an archived routine, so a leaked secret can always be
/// destroyed.
async fn routine_of(conn: &mut PgConnection, trigger_id: Uuid) -> StoreResult<RoutineRow> {
    let routine_id = sqlx::query_scalar!(
        "SELECT routine_id FROM routine_triggers WHERE id = $1",
        trigger_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let routine = fetch_routine(conn, routine_id, true).await?;
    // Every change to a trigger takes its routine's lock first: a change that waited for it
    // behind a deletion of the same trigger finds the trigger gone here, and says so.
    sqlx::query_scalar!(
        r#"SELECT 1 AS "present!" FROM routine_triggers WHERE id = $1"#,
        trigger_id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(routine)
}

/// The kind-specific columns of a new trigger: a schedule's next fire (only while enabled on
/// an active routine), a webhook's public id and fresh secret.
#[derive(Default)]
pub(super) struct NewColumns {
    pub(super) cron: Option<String>,
    pub(super) zone: Option<&'static str>,
    pub(super) next_run_at: Option<DateTime<Utc>>,
    pub(super) public_id: Option<String>,
    pub(super) signing_mode: Option<&'static str>,
    pub(super) replay_window: Option<i32>,
    pub(super) secret: Option<String>,
}

impl NewColumns {
    pub(super) fn of(new: &NewTrigger, active: bool, now: DateTime<Utc>) -> Self {
        match &new.kind {
            NewTriggerKind::Schedule { cron, zone } => Self {
                cron: Some(cron.as_str().to_owned()),
                zone: Some(zone.name()),
                next_run_at: (active && new.enabled)
                    .then(|| Schedule::new(cron.clone(), *zone).next_after(now))
                    .flatten(),
                ..Self::default()
            },
            NewTriggerKind::Webhook {
                signing_mode,
                replay_window,
            } => Self {
                public_id: Some(new_public_id()),
                signing_mode: Some(signing_mode.as_str()),
                replay_window: Some(replay_window.get()),
                secret: Some(generate_token(WEBHOOK_SECRET_PREFIX)),
                ..Self::default()
            },
            NewTriggerKind::Api => Self::default(),
        }
    }
}

/// The most triggers one routine may have (the contract's cap).
pub const MAX_TRIGGERS_PER_ROUTINE: i64 = 50;

/// The answer to a 51st trigger.
pub(super) fn too_many_triggers() -> StoreError {
    StoreError::Unprocessable {
        code: "too_many_triggers",
        message: format!("a routine has at most {MAX_TRIGGERS_PER_ROUTINE} triggers"),
    }
}

pub(super) fn archived() -> StoreError {
    StoreError::conflict(
        "routine_archived",
        "the routine is archived; its triggers cannot be changed",
    )
}

pub(super) fn new_public_id() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}

impl PgStore {
    /// Adds a trigger to a routine. A webhook trigger gets a random public id and a secret,
    /// returned here once.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] `routine_archived`; the database failed.
    pub async fn create_trigger(
        &self,
        routine_id: Uuid,
        new: NewTrigger,
        actor: Actor,
    ) -> StoreResult<(Trigger, Option<SecretMaterial>)> {
        let now = self.now();
        let id = new_id();
        let mut tx = self.pool.begin().await?;
        let routine = fetch_routine(&mut tx, routine_id, true).await?;
        if routine.status == RoutineStatus::Archived {
            return Err(archived());
        }
        // Counted under the routine's lock (held since `fetch_routine`): concurrent additions
        // cannot pass the cap together.
        let count = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM routine_triggers WHERE routine_id = $1"#,
            routine_id
        )
        .fetch_one(&mut *tx)
        .await?;
        if count >= MAX_TRIGGERS_PER_ROUTINE {
            return Err(too_many_triggers());
        }
        let NewColumns {
            cron,
            zone,
            next_run_at,
            public_id,
            signing_mode,
            replay_window,
            secret,
        } = NewColumns::of(&new, routine.status == RoutineStatus::Active, now);
        let sealed = secret
            .as_ref()
            .map(|s| self.secrets.seal(id.as_bytes(), s.as_bytes()));
        let row = sqlx::query_as!(
            TriggerRow,
            r#"INSERT INTO routine_triggers (id, company_id, routine_id, kind, label, enabled,
                   cron_expression, timezone, next_run_at, public_id, signing_mode, replay_window_sec,
                   secret_enc, created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
               RETURNING id, routine_id, kind AS "kind: _", label, enabled, cron_expression, timezone,
                         next_run_at, public_id, signing_mode AS "signing_mode: _", replay_window_sec,
                         last_fired_at, last_result, created_at, updated_at, prepared_fire_at"#,
            id,
            routine.company_id,
            routine_id,
            kind_of(&new.kind).as_str(),
            new.label.as_str(),
            new.enabled,
            cron,
            zone,
            next_run_at,
            public_id,
            signing_mode,
            replay_window,
            sealed,
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        let trigger = row.into_trigger(&self.public_url, now);
        NewActivity {
            company_id: routine.company_id,
            actor,
            action: "trigger.created",
            entity_type: "routine_trigger",
            entity_id: id,
            details: json!({ "routineId": routine_id, "kind": trigger.kind() }),
        }
        .record(&mut tx, now)
        .await?;
        announce_trigger_change(&mut tx).await?;
        tx.commit().await?;
        let material = secret.map(|webhook_secret| SecretMaterial {
            webhook_url: webhook_url(&self.public_url, public_id.as_deref().unwrap_or_default()),
            webhook_secret,
        });
        Ok((trigger, material))
    }

    /// One trigger with its routine's company and assignee.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the database failed.
    pub async fn trigger(&self, id: Uuid) -> StoreResult<TriggerInRoutine> {
        let row = sqlx::query!(
            r#"SELECT t.id, t.routine_id, t.kind AS "kind: TriggerKind", t.label, t.enabled,
                      t.cron_expression, t.timezone, t.next_run_at, t.public_id,
                      t.signing_mode AS "signing_mode: SigningMode", t.replay_window_sec,
                      t.last_fired_at, t.last_result, t.created_at, t.updated_at,
                      t.prepared_fire_at, r.company_id, r.assignee_agent_id
               FROM routine_triggers t JOIN routines r ON r.id = t.routine_id
               WHERE t.id = $1"#,
            id
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        let trigger = TriggerRow {
            id: row.id,
            routine_id: row.routine_id,
            kind: row.kind,
            label: row.label,
            enabled: row.enabled,
            cron_expression: row.cron_expression,
            timezone: row.timezone,
            next_run_at: row.next_run_at,
            public_id: row.public_id,
            signing_mode: row.signing_mode,
            replay_window_sec: row.replay_window_sec,
            last_fired_at: row.last_fired_at,
            last_result: row.last_result,
            created_at: row.created_at,
            updated_at: row.updated_at,
            prepared_fire_at: row.prepared_fire_at,
        }
        .into_trigger(&self.public_url, self.now());
        Ok(TriggerInRoutine {
            trigger,
            company_id: row.company_id,
            assignee_agent_id: row.assignee_agent_id,
        })
    }

    /// Applies `changes` to a trigger. Changing the schedule, or enabling it, computes the next
    /// fire from now.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] `routine_archived`; the database failed.
    pub async fn update_trigger(
        &self,
        id: Uuid,
        changes: TriggerChanges,
        actor: Actor,
    ) -> StoreResult<Trigger> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let routine = changeable_routine_of(&mut tx, id).await?;
        let routine_id = routine.id;
        let current = sqlx::query!(
            r#"SELECT enabled, cron_expression, timezone, replay_window_sec FROM routine_triggers WHERE id = $1 FOR UPDATE"#,
            id
        )
        .fetch_one(&mut *tx)
        .await?;
        let enabled = changes.enabled.unwrap_or(current.enabled);
        let cron = changes
            .cron
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .or(current.cron_expression);
        let zone = changes
            .zone
            .map(|z| z.name().to_owned())
            .or(current.timezone);
        let schedule_changed =
            changes.cron.is_some() || changes.zone.is_some() || changes.enabled.is_some();
        let next_run_at = match (&cron, &zone) {
            (Some(cron), Some(zone)) if enabled && routine.status == RoutineStatus::Active => {
                next_fire(cron, zone, now)
            }
            _ => None,
        };
        // Only a schedule trigger (it has a cron expression) has prepared runs.
        if schedule_changed && cron.is_some() {
            withdraw_prepared(&mut tx, &[id], now).await?;
        }
        let row = sqlx::query_as!(
            TriggerRow,
            r#"UPDATE routine_triggers SET
                   label = COALESCE($2, label),
                   enabled = $3,
                   cron_expression = $4,
                   timezone = $5,
                   next_run_at = CASE WHEN $6 THEN $7 ELSE next_run_at END,
                   signing_mode = COALESCE($8, signing_mode),
                   replay_window_sec = COALESCE($9, replay_window_sec),
                   updated_at = $10
               WHERE id = $1
               RETURNING id, routine_id, kind AS "kind: _", label, enabled, cron_expression, timezone,
                         next_run_at, public_id, signing_mode AS "signing_mode: _", replay_window_sec,
                         last_fired_at, last_result, created_at, updated_at, prepared_fire_at"#,
            id,
            changes.label.as_ref().map(Label::as_str),
            enabled,
            cron,
            zone,
            schedule_changed,
            next_run_at,
            changes.signing_mode.map(SigningMode::as_str),
            changes.replay_window.map(ReplayWindow::get),
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        if let (Some(window), Some(old)) = (changes.replay_window, current.replay_window_sec)
            && window.get() > old
        {
            // A wider window accepts older timestamps: the signatures accepted under the
            // narrower one are remembered that much longer, so none can be accepted again.
            sqlx::query!(
                "UPDATE webhook_signatures SET expires_at = expires_at + $2 WHERE trigger_id = $1",
                id,
                i64::from(window.get() - old),
            )
            .execute(&mut *tx)
            .await?;
        }
        let trigger = row.into_trigger(&self.public_url, now);
        NewActivity {
            company_id: routine.company_id,
            actor,
            action: "trigger.updated",
            entity_type: "routine_trigger",
            entity_id: id,
            details: json!({
                "routineId": routine_id,
                "label": changes.label.as_ref().map(Label::as_str),
                "enabled": changes.enabled,
                "cronExpression": changes.cron.as_ref().map(CronExpression::as_str),
                "timezone": changes.zone.map(TimeZone::name),
                "signingMode": changes.signing_mode,
                "replayWindowSec": changes.replay_window.map(ReplayWindow::get),
            }),
        }
        .record(&mut tx, now)
        .await?;
        announce_trigger_change(&mut tx).await?;
        tx.commit().await?;
        Ok(trigger)
    }

    /// Deletes a trigger and, with it, its secret (allowed on an archived routine too). Runs it
    /// created keep existing (their trigger becomes `null`).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; the database failed.
    pub async fn delete_trigger(&self, id: Uuid, actor: Actor) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let routine = routine_of(&mut tx, id).await?;
        let routine_id = routine.id;
        withdraw_prepared(&mut tx, &[id], now).await?;
        let kind = sqlx::query_scalar!(
            r#"DELETE FROM routine_triggers WHERE id = $1 RETURNING kind AS "kind: TriggerKind""#,
            id
        )
        .fetch_one(&mut *tx)
        .await?;
        // Its runs keep existing without it. Whoever writes a run naming a trigger holds the
        // trigger until that commits, and the `DELETE` above waited for them: this statement,
        // on a snapshot taken after it, sees every such run. Found through the routine's index
        // (no index leads with the trigger, see migration `20261201000004`).
        sqlx::query!(
            "UPDATE routine_runs SET trigger_id = NULL WHERE routine_id = $1 AND trigger_id = $2",
            routine_id,
            id
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM webhook_signatures WHERE trigger_id = $1", id)
            .execute(&mut *tx)
            .await?;
        NewActivity {
            company_id: routine.company_id,
            actor,
            action: "trigger.deleted",
            entity_type: "routine_trigger",
            entity_id: id,
            details: json!({ "routineId": routine_id, "kind": kind }),
        }
        .record(&mut tx, now)
        .await?;
        announce_trigger_change(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a webhook trigger's secret (allowed on an archived routine too); the previous
    /// one stops working at once.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Conflict`] `not_a_webhook_trigger`; the database
    /// failed.
    pub async fn rotate_trigger_secret(
        &self,
        id: Uuid,
        actor: Actor,
    ) -> StoreResult<(Trigger, SecretMaterial)> {
        let now = self.now();
        let secret = generate_token(WEBHOOK_SECRET_PREFIX);
        let sealed = self.secrets.seal(id.as_bytes(), secret.as_bytes());
        let mut tx = self.pool.begin().await?;
        let routine = routine_of(&mut tx, id).await?;
        let routine_id = routine.id;
        let row = sqlx::query_as!(
            TriggerRow,
            r#"UPDATE routine_triggers SET secret_enc = $2, updated_at = $3
               WHERE id = $1 AND kind = 'webhook'
               RETURNING id, routine_id, kind AS "kind: _", label, enabled, cron_expression, timezone,
                         next_run_at, public_id, signing_mode AS "signing_mode: _", replay_window_sec,
                         last_fired_at, last_result, created_at, updated_at, prepared_fire_at"#,
            id,
            sealed,
            now,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::conflict("not_a_webhook_trigger", "only webhook triggers have a secret"))?;
        let trigger = row.into_trigger(&self.public_url, now);
        NewActivity {
            company_id: routine.company_id,
            actor,
            action: "trigger.secret_rotated",
            entity_type: "routine_trigger",
            entity_id: id,
            details: json!({ "routineId": routine_id }),
        }
        .record(&mut tx, now)
        .await?;
        tx.commit().await?;
        let webhook_url = match &trigger.config {
            TriggerConfig::Webhook { webhook_url, .. } => webhook_url.clone(),
            _ => String::new(),
        };
        Ok((
            trigger,
            SecretMaterial {
                webhook_url,
                webhook_secret: secret,
            },
        ))
    }
}

pub(super) fn kind_of(kind: &NewTriggerKind) -> TriggerKind {
    match kind {
        NewTriggerKind::Schedule { .. } => TriggerKind::Schedule,
        NewTriggerKind::Webhook { .. } => TriggerKind::Webhook,
        NewTriggerKind::Api => TriggerKind::Api,
    }
}
