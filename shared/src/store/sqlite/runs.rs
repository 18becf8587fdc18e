//! Accepting runs (manual, api and webhook) and reading them, on SQLite. A run, its dispatch
//! job and its audit entry commit together; the idempotency key is the unique key
//! `(routine_id, idempotency_key)`, checked inside the same serialised transaction.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, jobs::enqueue, record, routines::fetch_routine};
use crate::{
    engine::refusal::{Refusal, RoutineAttempt, routine_allows},
    model::{Actor, IdempotencyKey, RoutineStatus, Run, SigningMode, TriggerKind},
    store::{
        Accepted, NewActivity, NewRun, StoreError, StoreResult, WebhookTrigger, new_id,
        open_secret,
        runs::{CallSignature, RunRow, dispatch_job, replay},
    },
};

/// The columns of a [`RunRow`], over `routine_runs r LEFT JOIN routine_triggers t`.
macro_rules! run_columns {
    () => {
        "r.id, r.company_id, r.routine_id, r.trigger_id, t.kind AS trigger_kind,
         t.label AS trigger_label, r.source, r.status, r.reason, r.scheduled_for, r.catch_up,
         r.missed, r.triggered_at, r.completed_at, r.idempotency_key, r.payload,
         r.linked_issue_id, r.coalesced_into_run_id, r.heartbeat_run_id, r.failure_reason"
    };
}

pub(super) async fn fetch_run(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<Run> {
    sqlx::query_as::<_, RunRow>(concat!(
        "SELECT ",
        run_columns!(),
        " FROM routine_runs r LEFT JOIN routine_triggers t ON t.id = r.trigger_id
          WHERE r.id = ?1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .map(Run::from)
    .ok_or(StoreError::NotFound)
}

async fn find_by_key(
    conn: &mut SqliteConnection,
    routine_id: Uuid,
    key: &str,
) -> StoreResult<Option<Run>> {
    let id = sqlx::query_scalar::<_, Uuid>(
        "SELECT id FROM routine_runs WHERE routine_id = ?1 AND idempotency_key = ?2",
    )
    .bind(routine_id)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    match id {
        Some(id) => Ok(Some(fetch_run(conn, id).await?)),
        None => Ok(None),
    }
}

/// Whether trigger `trigger_id` has remembered signature `mac`.
pub(super) async fn signature_taken(
    conn: &mut SqliteConnection,
    trigger_id: Uuid,
    mac: &[u8],
) -> StoreResult<bool> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM webhook_signatures WHERE trigger_id = ?1 AND signature = ?2)",
    )
    .bind(trigger_id)
    .bind(mac)
    .fetch_one(conn)
    .await?)
}

/// Remembers an accepted call's signature with the run it was answered with.
async fn remember_signature(
    conn: &mut SqliteConnection,
    trigger_id: Uuid,
    signature: &CallSignature,
    run_id: Uuid,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO webhook_signatures (trigger_id, signature, run_id, expires_at)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
    )
    .bind(trigger_id)
    .bind(&signature.mac)
    .bind(run_id)
    .bind(signature.remember_until)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a received run, its dispatch job and its audit entry.
async fn insert_received(
    conn: &mut SqliteConnection,
    (company_id, routine_id): (Uuid, Uuid),
    new: &NewRun,
    actor: Actor,
    now: DateTime<Utc>,
) -> StoreResult<Run> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status,
                                   triggered_at, idempotency_key, payload, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'received', ?6, ?7, ?8, ?6)",
    )
    .bind(id)
    .bind(company_id)
    .bind(routine_id)
    .bind(new.trigger_id)
    .bind(new.source.as_str())
    .bind(now)
    .bind(new.idempotency_key.as_ref().map(IdempotencyKey::as_str))
    .bind(Value::Object(new.payload.clone()))
    .execute(&mut *conn)
    .await?;
    enqueue(
        conn,
        vec![dispatch_job(id, now, new.trace_context.clone())],
        now,
    )
    .await?;
    let entry = NewActivity {
        company_id,
        actor,
        action: "run.accepted",
        entity_type: "routine_run",
        entity_id: id,
        details: json!({ "routineId": routine_id, "source": new.source, "triggerId": new.trigger_id }),
    };
    record(conn, vec![entry], now).await?;
    fetch_run(conn, id).await
}

impl SqliteStore {
    /// See [`crate::store::Storage::accept_manual_run`].
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
    pub async fn accept_manual_run(
        &self,
        routine_id: Uuid,
        new: NewRun,
        actor: Actor,
    ) -> StoreResult<Accepted> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let routine = fetch_routine(&mut tx, routine_id).await?;
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = find_by_key(&mut tx, routine_id, key.as_str()).await?
        {
            return replay(existing, &new.payload);
        }
        routine_allows(routine.status, RoutineAttempt::Run)?;
        if let Some(trigger_id) = new.trigger_id {
            let trigger = sqlx::query_as::<_, (TriggerKind, bool)>(
                "SELECT kind, enabled FROM routine_triggers WHERE id = ?1 AND routine_id = ?2",
            )
            .bind(trigger_id)
            .bind(routine_id)
            .fetch_optional(&mut *tx)
            .await?;
            match trigger {
                Some((TriggerKind::Api, true)) => {}
                Some((TriggerKind::Api, false)) => {
                    return Err(Refusal::TriggerDisabled.into());
                }
                _ => return Err(StoreError::InvalidReference { field: "triggerId" }),
            }
        }
        let run =
            insert_received(&mut tx, (routine.company_id, routine_id), &new, actor, now).await?;
        tx.commit().await?;
        self.announce_jobs();
        Ok(Accepted {
            run,
            replayed: false,
        })
    }

    /// See [`crate::store::Storage::accept_webhook_run`].
    ///
    /// # Errors
    /// `NotFound`, `Refused`; the database failed.
    pub async fn accept_webhook_run(
        &self,
        trigger: &WebhookTrigger,
        new: NewRun,
    ) -> StoreResult<Accepted> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let (enabled, status, sealed, signing_mode, window) =
            sqlx::query_as::<_, (bool, RoutineStatus, Vec<u8>, SigningMode, i32)>(
                "SELECT t.enabled, r.status, t.secret_enc, t.signing_mode, t.replay_window_sec
                 FROM routine_triggers t JOIN routines r ON r.id = t.routine_id
                 WHERE t.id = ?1",
            )
            .bind(trigger.id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        if !trigger.is_current(&sealed, signing_mode, window) {
            return Err(Refusal::TriggerChanged.into());
        }
        let signature = new.signature.as_ref();
        if let Some(signature) = signature
            && signature_taken(&mut tx, trigger.id, &signature.mac).await?
        {
            return Err(Refusal::Replayed.into());
        }
        if !enabled || status != RoutineStatus::Active {
            return Err(Refusal::NotActive.into());
        }
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = find_by_key(&mut tx, trigger.routine_id, key.as_str()).await?
        {
            let answer = replay(existing, &new.payload);
            if let (Ok(accepted), Some(signature)) = (&answer, signature) {
                remember_signature(&mut tx, trigger.id, signature, accepted.run.id).await?;
                tx.commit().await?;
            }
            return answer;
        }
        let run = insert_received(
            &mut tx,
            (trigger.company_id, trigger.routine_id),
            &new,
            Actor::System,
            now,
        )
        .await?;
        if let Some(signature) = signature {
            remember_signature(&mut tx, trigger.id, signature, run.id).await?;
        }
        tx.commit().await?;
        self.announce_jobs();
        Ok(Accepted {
            run,
            replayed: false,
        })
    }

    /// See [`crate::store::Storage::webhook_trigger`].
    ///
    /// # Errors
    /// The database failed, or the stored secret cannot be opened.
    pub async fn webhook_trigger(&self, public_id: &str) -> StoreResult<Option<WebhookTrigger>> {
        type Row = (
            Uuid,
            Uuid,
            Uuid,
            SigningMode,
            i32,
            Vec<u8>,
            Option<Vec<u8>>,
            Option<DateTime<Utc>>,
        );
        let row = sqlx::query_as::<_, Row>(
            "SELECT id, routine_id, company_id, signing_mode, replay_window_sec, secret_enc,
                    previous_secret_enc, previous_secret_expires_at
             FROM routine_triggers WHERE public_id = ?1 AND kind = 'webhook'",
        )
        .bind(public_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((
            id,
            routine_id,
            company_id,
            signing_mode,
            replay_window_sec,
            sealed,
            previous_sealed,
            previous_until,
        )) = row
        else {
            return Ok(None);
        };
        let secret = open_secret(&self.secrets, id, &sealed)?;
        let previous = match (previous_sealed, previous_until) {
            (Some(previous), Some(until)) if until > self.now() => {
                Some((open_secret(&self.secrets, id, &previous)?, until))
            }
            _ => None,
        };
        Ok(Some(WebhookTrigger {
            id,
            routine_id,
            company_id,
            signing_mode,
            replay_window_sec,
            secret,
            previous,
            sealed,
        }))
    }

    /// See [`crate::store::Storage::run`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn run(&self, id: Uuid) -> StoreResult<Run> {
        let run = fetch_run(&mut *self.pool.acquire().await?, id).await?;
        if run.triggered_at > self.now() {
            return Err(StoreError::NotFound);
        }
        Ok(run)
    }

    /// See [`crate::store::Storage::runs`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn runs(
        &self,
        routine_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<Run>> {
        let rows = sqlx::query_as::<_, RunRow>(concat!(
            "SELECT ",
            run_columns!(),
            " FROM routine_runs r LEFT JOIN routine_triggers t ON t.id = r.trigger_id
              WHERE r.routine_id = ?1 AND r.triggered_at <= ?4
                AND (?2 IS NULL
                     OR (r.triggered_at, r.id) < (SELECT b.triggered_at, b.id FROM routine_runs b
                                                  WHERE b.id = ?2 AND b.routine_id = ?1))
              ORDER BY r.triggered_at DESC, r.id DESC
              LIMIT ?3"
        ))
        .bind(routine_id)
        .bind(before)
        .bind(limit)
        .bind(self.now())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Run::from).collect())
    }
}

impl SqliteStore {
    /// See [`crate::store::Storage::signature_seen`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn signature_seen(&self, trigger_id: Uuid, mac: Vec<u8>) -> StoreResult<bool> {
        signature_taken(&mut *self.pool.acquire().await?, trigger_id, &mac).await
    }

    /// See [`crate::store::Storage::destroy_expired_secrets`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn destroy_expired_secrets(&self) -> StoreResult<u64> {
        let destroyed = sqlx::query(
            "UPDATE routine_triggers SET previous_secret_enc = NULL, previous_secret_expires_at = NULL
             WHERE previous_secret_expires_at <= ?1",
        )
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(destroyed.rows_affected())
    }

    /// See [`crate::store::Storage::purge_signatures`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn purge_signatures(&self) -> StoreResult<u64> {
        let deleted = sqlx::query("DELETE FROM webhook_signatures WHERE expires_at <= ?1")
            .bind(self.now().timestamp())
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected())
    }
}
