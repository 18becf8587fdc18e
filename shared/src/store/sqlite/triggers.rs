//! Triggers of routines on SQLite. A schedule trigger has a `next_run_at` only while it is
//! enabled and its routine active, computed from the current time (no catch-up of paused time).

use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, record, routines::fetch_routine, schedules::withdraw_prepared};
use crate::{
    engine::{
        refusal::{Refusal, RoutineAttempt, room_for_trigger, routine_allows},
        rotation::{Rotation, previous_after, webhook_secret},
    },
    model::{
        Actor, JitterSec, Label, ReplayWindow, RoutineStatus, SigningMode, Trigger, TriggerConfig,
        TriggerKind,
    },
    store::{
        NewActivity, NewTrigger, SecretMaterial, StoreError, StoreResult, TriggerChanges,
        TriggerInRoutine, new_id,
        routines::RoutineRow,
        triggers::{NewColumns, TriggerRow, kind_of, next_fire},
        webhook_url,
    },
};

async fn changeable_routine_of(
    conn: &mut SqliteConnection,
    trigger_id: Uuid,
) -> StoreResult<RoutineRow> {
    let routine = routine_of(conn, trigger_id).await?;
    routine_allows(routine.status, RoutineAttempt::ChangeTriggers)?;
    Ok(routine)
}

/// The routine of trigger `trigger_id`, whatever its status (deleting a trigger and rotating
/// its secret stay allowed on an archived routine).
async fn routine_of(conn: &mut SqliteConnection, trigger_id: Uuid) -> StoreResult<RoutineRow> {
    let routine_id =
        sqlx::query_scalar::<_, Uuid>("SELECT routine_id FROM routine_triggers WHERE id = ?1")
            .bind(trigger_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
    fetch_routine(conn, routine_id).await
}

impl SqliteStore {
    /// See [`crate::store::Storage::create_trigger`].
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    pub async fn create_trigger(
        &self,
        routine_id: Uuid,
        new: NewTrigger,
        actor: Actor,
    ) -> StoreResult<(Trigger, Option<SecretMaterial>)> {
        let now = self.now();
        let id = new_id();
        let mut tx = self.pool.begin().await?;
        let routine = fetch_routine(&mut tx, routine_id).await?;
        routine_allows(routine.status, RoutineAttempt::ChangeTriggers)?;
        // Writes are serialised on the embedded database: the count holds until the insert.
        let count = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM routine_triggers WHERE routine_id = ?1",
        )
        .bind(routine_id)
        .fetch_one(&mut *tx)
        .await?;
        room_for_trigger(count)?;
        let NewColumns {
            cron,
            zone,
            jitter_sec,
            next_run_at,
            public_id,
            signing_mode,
            replay_window,
            secret,
        } = NewColumns::of(&new, routine.status == RoutineStatus::Active, now)?;
        let sealed = secret
            .as_ref()
            .map(|s| self.secrets.seal(id.as_bytes(), s.as_bytes()));
        let row = sqlx::query_as::<_, TriggerRow>(concat!(
            "INSERT INTO routine_triggers (id, company_id, routine_id, kind, label, enabled,
                 cron_expression, timezone, next_run_at, public_id, signing_mode, replay_window_sec,
                 secret_enc, created_at, updated_at, jitter_sec)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15)
             RETURNING ",
            trigger_columns!()
        ))
        .bind(id)
        .bind(routine.company_id)
        .bind(routine_id)
        .bind(kind_of(&new.kind).as_str())
        .bind(new.label.as_str())
        .bind(new.enabled)
        .bind(cron)
        .bind(zone)
        .bind(next_run_at)
        .bind(public_id.as_deref())
        .bind(signing_mode)
        .bind(replay_window)
        .bind(sealed)
        .bind(now)
        .bind(jitter_sec)
        .fetch_one(&mut *tx)
        .await?;
        let trigger = row.into_trigger(&self.public_url, now);
        let entry = NewActivity::trigger_created(routine.company_id, &trigger, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        self.announce_triggers();
        let material = secret.map(|webhook_secret| SecretMaterial {
            webhook_url: webhook_url(&self.public_url, public_id.as_deref().unwrap_or_default()),
            webhook_secret,
        });
        Ok((trigger, material))
    }

    /// See [`crate::store::Storage::trigger`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn trigger(&self, id: Uuid) -> StoreResult<TriggerInRoutine> {
        let mut conn = self.pool.acquire().await?;
        let row = sqlx::query_as::<_, TriggerRow>(concat!(
            "SELECT ",
            trigger_columns!(),
            " FROM routine_triggers WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
        let routine = fetch_routine(&mut conn, row.routine_id).await?;
        Ok(TriggerInRoutine {
            trigger: row.into_trigger(&self.public_url, self.now()),
            company_id: routine.company_id,
            assignee_agent_id: routine.assignee_agent_id,
        })
    }

    /// See [`crate::store::Storage::update_trigger`].
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
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
        let (enabled_now, cron_now, zone_now, window_now) =
            sqlx::query_as::<_, (bool, Option<String>, Option<String>, Option<i32>)>(
                "SELECT enabled, cron_expression, timezone, replay_window_sec
                 FROM routine_triggers WHERE id = ?1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let enabled = changes.enabled.unwrap_or(enabled_now);
        let cron = changes
            .cron
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .or(cron_now);
        let zone = changes.zone.map(|z| z.name().to_owned()).or(zone_now);
        let schedule_changed = changes.cron.is_some()
            || changes.zone.is_some()
            || changes.jitter.is_some()
            || changes.enabled.is_some();
        let next_run_at = match (&cron, &zone) {
            (Some(cron), Some(zone)) if enabled && routine.status == RoutineStatus::Active => {
                next_fire(cron, zone, now)
            }
            _ => None,
        };
        // Only a schedule trigger (it has a cron expression) has prepared runs.
        if schedule_changed && cron.is_some() {
            withdraw_prepared(&mut tx, id, now).await?;
        }
        let row = sqlx::query_as::<_, TriggerRow>(concat!(
            "UPDATE routine_triggers SET
                 label = COALESCE(?2, label),
                 enabled = ?3,
                 cron_expression = ?4,
                 timezone = ?5,
                 next_run_at = CASE WHEN ?6 THEN ?7 ELSE next_run_at END,
                 signing_mode = COALESCE(?8, signing_mode),
                 replay_window_sec = COALESCE(?9, replay_window_sec),
                 updated_at = ?10,
                 jitter_sec = COALESCE(?11, jitter_sec)
             WHERE id = ?1
             RETURNING ",
            trigger_columns!()
        ))
        .bind(id)
        .bind(changes.label.as_ref().map(Label::as_str))
        .bind(enabled)
        .bind(cron)
        .bind(zone)
        .bind(schedule_changed)
        .bind(next_run_at)
        .bind(changes.signing_mode.map(SigningMode::as_str))
        .bind(changes.replay_window.map(ReplayWindow::get))
        .bind(now)
        .bind(changes.jitter.map(JitterSec::get))
        .fetch_one(&mut *tx)
        .await?;
        if let (Some(window), Some(old)) = (changes.replay_window, window_now)
            && window.get() > old
        {
            // As on Postgres: a wider window keeps accepted signatures remembered longer.
            sqlx::query(
                "UPDATE webhook_signatures SET expires_at = expires_at + ?2 WHERE trigger_id = ?1",
            )
            .bind(id)
            .bind(i64::from(window.get() - old))
            .execute(&mut *tx)
            .await?;
        }
        let trigger = row.into_trigger(&self.public_url, now);
        let entry =
            NewActivity::trigger_updated(routine.company_id, (routine_id, id), &changes, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        self.announce_triggers();
        Ok(trigger)
    }

    /// See [`crate::store::Storage::delete_trigger`].
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    pub async fn delete_trigger(&self, id: Uuid, actor: Actor) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let routine = routine_of(&mut tx, id).await?;
        let routine_id = routine.id;
        withdraw_prepared(&mut tx, id, now).await?;
        let kind = sqlx::query_scalar::<_, TriggerKind>(
            "DELETE FROM routine_triggers WHERE id = ?1 RETURNING kind",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM webhook_signatures WHERE trigger_id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let entry = NewActivity::trigger_deleted(routine.company_id, (routine_id, id), kind, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        self.announce_triggers();
        Ok(())
    }

    /// See [`crate::store::Storage::rotate_trigger_secret`].
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    pub async fn rotate_trigger_secret(
        &self,
        id: Uuid,
        rotation: Rotation,
        actor: Actor,
    ) -> StoreResult<(Trigger, SecretMaterial)> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let routine = routine_of(&mut tx, id).await?;
        let routine_id = routine.id;
        let (current, previous_until, mode) =
            sqlx::query_as::<_, (Vec<u8>, Option<chrono::DateTime<chrono::Utc>>, SigningMode)>(
                "SELECT secret_enc, previous_secret_expires_at, signing_mode FROM routine_triggers
             WHERE id = ?1 AND kind = 'webhook'",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::from(Refusal::NotAWebhookTrigger))?;
        let secret = webhook_secret(mode, rotation.sender_secret.as_ref())?;
        let sealed = self.secrets.seal(id.as_bytes(), secret.as_bytes());
        let (previous, previous_until) =
            previous_after(current, previous_until, now, &rotation)?.unzip();
        let row = sqlx::query_as::<_, TriggerRow>(concat!(
            "UPDATE routine_triggers
             SET secret_enc = ?2, updated_at = ?3, previous_secret_enc = ?4,
                 previous_secret_expires_at = ?5
             WHERE id = ?1 AND kind = 'webhook'
             RETURNING ",
            trigger_columns!()
        ))
        .bind(id)
        .bind(sealed)
        .bind(now)
        .bind(previous)
        .bind(previous_until)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::from(Refusal::NotAWebhookTrigger))?;
        let trigger = row.into_trigger(&self.public_url, now);
        let entry = NewActivity::trigger_secret_rotated(
            routine.company_id,
            (routine_id, id),
            &rotation,
            actor,
        );
        record(&mut tx, vec![entry], now).await?;
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
