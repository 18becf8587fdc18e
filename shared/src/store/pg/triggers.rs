//! Triggers of routines: schedule (cron in a time zone), webhook (public id and an encrypted
//! secret), api. A schedule trigger's `next_run_at` is set only while it is enabled and its
//! routine is active; enabling it or resuming the routine computes the next fire from the
//! current time (no catch-up of the time spent disabled or paused).

use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    PgStore,
    routines::fetch_routine,
    schedules::{announce_trigger_change, withdraw_prepared},
};
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

/// The routine of a trigger, locked for update (the routine row first, always before the
/// trigger row, so trigger changes and dispatches take locks in one order); refused when the
/// routine is archived.
async fn changeable_routine_of(
    conn: &mut PgConnection,
    trigger_id: Uuid,
) -> StoreResult<RoutineRow> {
    let routine = routine_of(conn, trigger_id).await?;
    routine_allows(routine.status, RoutineAttempt::ChangeTriggers)?;
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

impl PgStore {
    /// Adds a trigger to a routine. A webhook trigger gets a random public id and a secret,
    /// returned here once.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Refused`] `routine_archived`; the database failed.
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
        routine_allows(routine.status, RoutineAttempt::ChangeTriggers)?;
        // Counted under the routine's lock (held since `fetch_routine`): concurrent additions
        // cannot pass the cap together.
        let count = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM routine_triggers WHERE routine_id = $1"#,
            routine_id
        )
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
        let row = sqlx::query_as!(
            TriggerRow,
            r#"INSERT INTO routine_triggers (id, company_id, routine_id, kind, label, enabled,
                   cron_expression, timezone, next_run_at, public_id, signing_mode, replay_window_sec,
                   secret_enc, created_at, updated_at, jitter_sec)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $15)
               RETURNING id, routine_id, kind AS "kind: _", label, enabled, cron_expression, timezone,
                         next_run_at, public_id, signing_mode AS "signing_mode: _", replay_window_sec,
                         last_fired_at, last_result, created_at, updated_at, prepared_fire_at, jitter_sec,
                         previous_secret_expires_at"#,
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
            jitter_sec,
        )
        .fetch_one(&mut *tx)
        .await?;
        let trigger = row.into_trigger(&self.public_url, now);
        NewActivity::trigger_created(routine.company_id, &trigger, actor)
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
                      t.prepared_fire_at, t.jitter_sec, t.previous_secret_expires_at,
                      r.company_id, r.assignee_agent_id
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
            jitter_sec: row.jitter_sec,
            next_run_at: row.next_run_at,
            public_id: row.public_id,
            signing_mode: row.signing_mode,
            replay_window_sec: row.replay_window_sec,
            last_fired_at: row.last_fired_at,
            last_result: row.last_result,
            created_at: row.created_at,
            updated_at: row.updated_at,
            prepared_fire_at: row.prepared_fire_at,
            previous_secret_expires_at: row.previous_secret_expires_at,
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
    /// [`StoreError::NotFound`]; [`StoreError::Refused`] `routine_archived`; the database failed.
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
                   updated_at = $10,
                   jitter_sec = COALESCE($11, jitter_sec)
               WHERE id = $1
               RETURNING id, routine_id, kind AS "kind: _", label, enabled, cron_expression, timezone,
                         next_run_at, public_id, signing_mode AS "signing_mode: _", replay_window_sec,
                         last_fired_at, last_result, created_at, updated_at, prepared_fire_at, jitter_sec,
                         previous_secret_expires_at"#,
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
            changes.jitter.map(JitterSec::get),
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
        NewActivity::trigger_updated(routine.company_id, (routine_id, id), &changes, actor)
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
        NewActivity::trigger_deleted(routine.company_id, (routine_id, id), kind, actor)
            .record(&mut tx, now)
            .await?;
        announce_trigger_change(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a webhook trigger's secret (allowed on an archived routine too); the one it
    /// replaces keeps working for `rotation.grace` (see `engine::rotation`).
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Refused`] `not_a_webhook_trigger`,
    /// `rotation_in_progress`; the database failed.
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
        let current = sqlx::query!(
            r#"SELECT secret_enc AS "secret_enc!", previous_secret_expires_at,
                      signing_mode AS "signing_mode!: SigningMode"
               FROM routine_triggers
               WHERE id = $1 AND kind = 'webhook' FOR UPDATE"#,
            id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::from(Refusal::NotAWebhookTrigger))?;
        let secret = webhook_secret(current.signing_mode, rotation.sender_secret.as_ref())?;
        let sealed = self.secrets.seal(id.as_bytes(), secret.as_bytes());
        let previous = previous_after(
            current.secret_enc,
            current.previous_secret_expires_at,
            now,
            &rotation,
        )?;
        let (previous, previous_until) = previous.unzip();
        let row = sqlx::query_as!(
            TriggerRow,
            r#"UPDATE routine_triggers
               SET secret_enc = $2, updated_at = $3, previous_secret_enc = $4,
                   previous_secret_expires_at = $5
               WHERE id = $1 AND kind = 'webhook'
               RETURNING id, routine_id, kind AS "kind: _", label, enabled, cron_expression, timezone,
                         next_run_at, public_id, signing_mode AS "signing_mode: _", replay_window_sec,
                         last_fired_at, last_result, created_at, updated_at, prepared_fire_at, jitter_sec,
                         previous_secret_expires_at"#,
            id,
            sealed,
            now,
            previous,
            previous_until,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::from(Refusal::NotAWebhookTrigger))?;
        let trigger = row.into_trigger(&self.public_url, now);
        NewActivity::trigger_secret_rotated(routine.company_id, (routine_id, id), &rotation, actor)
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
