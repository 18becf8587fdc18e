//! Routines and their triggers on SQLite. The lifecycle rules are the Postgres backend's: an
//! archived routine is frozen; a schedule trigger has a `next_run_at` only while it is enabled
//! and its routine active, computed from the current time (no catch-up of paused time).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, company_exists, fires::withdraw_prepared, record};
use crate::{
    model::{
        Actor, AgentStatus, CatchUpCap, CatchUpPolicy, ConcurrencyPolicy, Description, Label,
        Priority, ReplayWindow, Routine, RoutineStatus, SigningMode, Trigger, TriggerConfig,
        TriggerKind,
    },
    schedule::{CronExpression, TimeZone},
    store::{
        NewActivity, NewRoutine, NewTrigger, RoutineChanges, RoutineFilter, SecretMaterial,
        StoreError, StoreResult, TriggerChanges, TriggerInRoutine, WEBHOOK_SECRET_PREFIX, new_id,
        routines::{RoutineRow, routine_change_details},
        triggers::{
            MAX_TRIGGERS_PER_ROUTINE, NewColumns, TriggerRow, archived, kind_of, next_fire,
            too_many_triggers,
        },
        webhook_url,
    },
};

/// The columns of a [`RoutineRow`].
macro_rules! routine_columns {
    () => {
        "id, company_id, title, description, assignee_agent_id, project_id, goal_id,
         parent_issue_id, priority, status, concurrency_policy, catch_up_policy, catch_up_cap,
         last_triggered_at, created_at, updated_at"
    };
}

/// The columns of a [`TriggerRow`].
macro_rules! trigger_columns {
    () => {
        "id, routine_id, kind, label, enabled, cron_expression, timezone, next_run_at, public_id,
         signing_mode, replay_window_sec, last_fired_at, last_result, created_at, updated_at,
         prepared_fire_at"
    };
}

pub(super) async fn fetch_routine(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> StoreResult<RoutineRow> {
    sqlx::query_as::<_, RoutineRow>(concat!(
        "SELECT ",
        routine_columns!(),
        " FROM routines WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::NotFound)
}

/// Checks that an agent of the company can take new work.
pub(super) async fn ensure_assignable(
    conn: &mut SqliteConnection,
    company_id: Uuid,
    agent_id: Uuid,
) -> StoreResult<()> {
    let status = sqlx::query_scalar::<_, AgentStatus>(
        "SELECT status FROM agents WHERE company_id = ?1 AND id = ?2",
    )
    .bind(company_id)
    .bind(agent_id)
    .fetch_optional(conn)
    .await?
    .ok_or(StoreError::InvalidReference {
        field: "assigneeAgentId",
    })?;
    if status == AgentStatus::Terminated {
        return Err(StoreError::conflict(
            "agent_not_assignable",
            "the assignee agent is terminated and cannot be assigned work",
        ));
    }
    Ok(())
}

/// Checks the references Postgres checks with composite foreign keys: each must name a row of
/// the company (SQLite reports a violated foreign key without saying which).
pub(super) async fn ensure_references(
    conn: &mut SqliteConnection,
    company_id: Uuid,
    project_id: Option<Uuid>,
    goal_id: Option<Uuid>,
    parent_issue_id: Option<Uuid>,
) -> StoreResult<()> {
    let checks = [
        (
            project_id,
            "projectId",
            "SELECT EXISTS (SELECT 1 FROM projects WHERE company_id = ?1 AND id = ?2)",
        ),
        (
            goal_id,
            "goalId",
            "SELECT EXISTS (SELECT 1 FROM goals WHERE company_id = ?1 AND id = ?2)",
        ),
        (
            parent_issue_id,
            "parentIssueId",
            "SELECT EXISTS (SELECT 1 FROM issues WHERE company_id = ?1 AND id = ?2)",
        ),
    ];
    for (id, field, statement) in checks {
        let Some(id) = id else { continue };
        let found = sqlx::query_scalar::<_, bool>(statement)
            .bind(company_id)
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
        if !found {
            return Err(StoreError::InvalidReference { field });
        }
    }
    Ok(())
}

async fn reschedule_routine_triggers(
    conn: &mut SqliteConnection,
    routine_id: Uuid,
    active: bool,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let schedules = sqlx::query_as::<_, (Uuid, bool, String, String)>(
        "SELECT id, enabled, cron_expression, timezone FROM routine_triggers
         WHERE routine_id = ?1 AND kind = 'schedule'",
    )
    .bind(routine_id)
    .fetch_all(&mut *conn)
    .await?;
    for (id, enabled, cron, zone) in schedules {
        withdraw_prepared(&mut *conn, id, now).await?;
        let next = (active && enabled)
            .then(|| next_fire(&cron, &zone, now))
            .flatten();
        sqlx::query("UPDATE routine_triggers SET next_run_at = ?2 WHERE id = ?1")
            .bind(id)
            .bind(next)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

async fn changeable_routine_of(
    conn: &mut SqliteConnection,
    trigger_id: Uuid,
) -> StoreResult<RoutineRow> {
    let routine = routine_of(conn, trigger_id).await?;
    if routine.status == RoutineStatus::Archived {
        return Err(archived());
    }
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
    /// See [`crate::store::Storage::create_routine`].
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Conflict`; the database failed.
    pub async fn create_routine(
        &self,
        company_id: Uuid,
        new: NewRoutine,
        actor: Actor,
    ) -> StoreResult<Routine> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !company_exists(&mut tx, company_id).await? {
            return Err(StoreError::NotFound);
        }
        ensure_assignable(&mut tx, company_id, new.assignee_agent_id).await?;
        ensure_references(
            &mut tx,
            company_id,
            Some(new.project_id),
            new.goal_id,
            new.parent_issue_id,
        )
        .await?;
        let row = sqlx::query_as::<_, RoutineRow>(concat!(
            "INSERT INTO routines (id, company_id, title, description, assignee_agent_id, project_id,
                                   goal_id, parent_issue_id, priority, status, concurrency_policy,
                                   catch_up_policy, catch_up_cap, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
             RETURNING ",
            routine_columns!()
        ))
        .bind(new_id())
        .bind(company_id)
        .bind(new.title.as_str())
        .bind(new.description.as_str())
        .bind(new.assignee_agent_id)
        .bind(new.project_id)
        .bind(new.goal_id)
        .bind(new.parent_issue_id)
        .bind(new.priority.as_str())
        .bind(new.status.as_str())
        .bind(new.concurrency_policy.as_str())
        .bind(new.catch_up_policy.as_str())
        .bind(new.catch_up_cap.get())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let entry = NewActivity {
            company_id,
            actor,
            action: "routine.created",
            entity_type: "routine",
            entity_id: row.id,
            details: json!({ "title": row.title, "assigneeAgentId": row.assignee_agent_id }),
        };
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(row.with_triggers(Vec::new()))
    }

    /// See [`crate::store::Storage::routine`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn routine(&self, id: Uuid) -> StoreResult<Routine> {
        let mut conn = self.pool.acquire().await?;
        let row = fetch_routine(&mut conn, id).await?;
        let triggers = self
            .triggers_of(&mut conn, &[id])
            .await?
            .remove(&id)
            .unwrap_or_default();
        Ok(row.with_triggers(triggers))
    }

    /// See [`crate::store::Storage::routines`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn routines(
        &self,
        company_id: Uuid,
        filter: RoutineFilter,
    ) -> StoreResult<Vec<Routine>> {
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query_as::<_, RoutineRow>(concat!(
            "SELECT ",
            routine_columns!(),
            " FROM routines
              WHERE company_id = ?1
                AND (?2 IS NULL OR status = ?2)
                AND (?3 IS NULL OR project_id = ?3)
                AND (?4 IS NULL OR assignee_agent_id = ?4)
                AND (?5 IS NULL OR id < ?5)
              ORDER BY id DESC
              LIMIT ?6"
        ))
        .bind(company_id)
        .bind(filter.status.map(RoutineStatus::as_str))
        .bind(filter.project_id)
        .bind(filter.assignee_agent_id)
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(&mut *conn)
        .await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let mut triggers = self.triggers_of(&mut conn, &ids).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let own = triggers.remove(&row.id).unwrap_or_default();
                row.with_triggers(own)
            })
            .collect())
    }

    /// See [`crate::store::Storage::update_routine`].
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Conflict`; the database failed.
    pub async fn update_routine(
        &self,
        id: Uuid,
        changes: RoutineChanges,
        actor: Actor,
    ) -> StoreResult<Routine> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let current = fetch_routine(&mut tx, id).await?;
        if current.status == RoutineStatus::Archived {
            return Err(StoreError::conflict(
                "routine_archived",
                "the routine is archived; an archived routine cannot be changed",
            ));
        }
        if let Some(agent) = changes.assignee_agent_id
            && agent != current.assignee_agent_id
        {
            ensure_assignable(&mut tx, current.company_id, agent).await?;
        }
        ensure_references(
            &mut tx,
            current.company_id,
            changes.project_id,
            changes.goal_id.flatten(),
            changes.parent_issue_id.flatten(),
        )
        .await?;
        let row = sqlx::query_as::<_, RoutineRow>(concat!(
            "UPDATE routines SET
                 title = COALESCE(?2, title),
                 description = COALESCE(?3, description),
                 assignee_agent_id = COALESCE(?4, assignee_agent_id),
                 project_id = COALESCE(?5, project_id),
                 goal_id = CASE WHEN ?6 THEN ?7 ELSE goal_id END,
                 parent_issue_id = CASE WHEN ?8 THEN ?9 ELSE parent_issue_id END,
                 priority = COALESCE(?10, priority),
                 status = COALESCE(?11, status),
                 concurrency_policy = COALESCE(?12, concurrency_policy),
                 catch_up_policy = COALESCE(?13, catch_up_policy),
                 catch_up_cap = COALESCE(?14, catch_up_cap),
                 updated_at = ?15
             WHERE id = ?1
             RETURNING ",
            routine_columns!()
        ))
        .bind(id)
        .bind(changes.title.as_ref().map(crate::model::Title::as_str))
        .bind(changes.description.as_ref().map(Description::as_str))
        .bind(changes.assignee_agent_id)
        .bind(changes.project_id)
        .bind(changes.goal_id.is_some())
        .bind(changes.goal_id.flatten())
        .bind(changes.parent_issue_id.is_some())
        .bind(changes.parent_issue_id.flatten())
        .bind(changes.priority.map(Priority::as_str))
        .bind(changes.status.map(RoutineStatus::as_str))
        .bind(changes.concurrency_policy.map(ConcurrencyPolicy::as_str))
        .bind(changes.catch_up_policy.map(CatchUpPolicy::as_str))
        .bind(changes.catch_up_cap.map(CatchUpCap::get))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let rescheduled = row.status != current.status;
        if rescheduled {
            reschedule_routine_triggers(&mut tx, id, row.status == RoutineStatus::Active, now)
                .await?;
        }
        let entry = NewActivity {
            company_id: row.company_id,
            actor,
            action: "routine.updated",
            entity_type: "routine",
            entity_id: id,
            details: routine_change_details(&current, &row),
        };
        record(&mut tx, vec![entry], now).await?;
        let triggers = self
            .triggers_of(&mut tx, &[id])
            .await?
            .remove(&id)
            .unwrap_or_default();
        tx.commit().await?;
        if rescheduled {
            self.announce_triggers();
        }
        Ok(row.with_triggers(triggers))
    }

    async fn triggers_of(
        &self,
        conn: &mut SqliteConnection,
        routine_ids: &[Uuid],
    ) -> StoreResult<HashMap<Uuid, Vec<Trigger>>> {
        let mut grouped: HashMap<Uuid, Vec<Trigger>> = HashMap::new();
        for routine_id in routine_ids {
            let rows = sqlx::query_as::<_, TriggerRow>(concat!(
                "SELECT ",
                trigger_columns!(),
                " FROM routine_triggers WHERE routine_id = ?1 ORDER BY created_at, id"
            ))
            .bind(routine_id)
            .fetch_all(&mut *conn)
            .await?;
            for row in rows {
                grouped
                    .entry(row.routine_id)
                    .or_default()
                    .push(row.into_trigger(&self.public_url, self.now()));
            }
        }
        Ok(grouped)
    }

    /// See [`crate::store::Storage::create_trigger`].
    ///
    /// # Errors
    /// `NotFound`, `Conflict`; the database failed.
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
        if routine.status == RoutineStatus::Archived {
            return Err(archived());
        }
        // Writes are serialised on the embedded database: the count holds until the insert.
        let count = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM routine_triggers WHERE routine_id = ?1",
        )
        .bind(routine_id)
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
        let row = sqlx::query_as::<_, TriggerRow>(concat!(
            "INSERT INTO routine_triggers (id, company_id, routine_id, kind, label, enabled,
                 cron_expression, timezone, next_run_at, public_id, signing_mode, replay_window_sec,
                 secret_enc, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)
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
        .fetch_one(&mut *tx)
        .await?;
        let trigger = row.into_trigger(&self.public_url, now);
        let entry = NewActivity {
            company_id: routine.company_id,
            actor,
            action: "trigger.created",
            entity_type: "routine_trigger",
            entity_id: id,
            details: json!({ "routineId": routine_id, "kind": trigger.kind() }),
        };
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
    /// `NotFound`, `Conflict`; the database failed.
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
                 updated_at = ?10
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
        let entry = NewActivity {
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
        };
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        self.announce_triggers();
        Ok(trigger)
    }

    /// See [`crate::store::Storage::delete_trigger`].
    ///
    /// # Errors
    /// `NotFound`, `Conflict`; the database failed.
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
        let entry = NewActivity {
            company_id: routine.company_id,
            actor,
            action: "trigger.deleted",
            entity_type: "routine_trigger",
            entity_id: id,
            details: json!({ "routineId": routine_id, "kind": kind }),
        };
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        self.announce_triggers();
        Ok(())
    }

    /// See [`crate::store::Storage::rotate_trigger_secret`].
    ///
    /// # Errors
    /// `NotFound`, `Conflict`; the database failed.
    pub async fn rotate_trigger_secret(
        &self,
        id: Uuid,
        actor: Actor,
    ) -> StoreResult<(Trigger, SecretMaterial)> {
        let now = self.now();
        let secret = crate::crypto::generate_token(WEBHOOK_SECRET_PREFIX);
        let sealed = self.secrets.seal(id.as_bytes(), secret.as_bytes());
        let mut tx = self.pool.begin().await?;
        let routine = routine_of(&mut tx, id).await?;
        let routine_id = routine.id;
        let row = sqlx::query_as::<_, TriggerRow>(concat!(
            "UPDATE routine_triggers SET secret_enc = ?2, updated_at = ?3
             WHERE id = ?1 AND kind = 'webhook'
             RETURNING ",
            trigger_columns!()
        ))
        .bind(id)
        .bind(sealed)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            StoreError::conflict(
                "not_a_webhook_trigger",
                "only webhook triggers have a secret",
            )
        })?;
        let trigger = row.into_trigger(&self.public_url, now);
        let entry = NewActivity {
            company_id: routine.company_id,
            actor,
            action: "trigger.secret_rotated",
            entity_type: "routine_trigger",
            entity_id: id,
            details: json!({ "routineId": routine_id }),
        };
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
