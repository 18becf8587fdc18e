//! Runs: accepting a fire (a `received` run and its dispatch job, in one transaction, with
//! idempotency in the database) and reading run history.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{PgStore, routines::fetch_routine};
use crate::{
    engine::refusal::{Refusal, RoutineAttempt, routine_allows},
    model::{
        Actor, IdempotencyKey, RoutineStatus, Run, RunSource, RunStatus, SigningMode, TriggerKind,
    },
    store::{
        Accepted, CallSignature, DISPATCH_MAX_ATTEMPTS, DISPATCH_RUN, NewRun, StoreError,
        StoreResult, WebhookTrigger, new_id,
        runs::{RunRow, replay},
    },
};

/// Reads one run with its trigger's current kind and label.
pub(crate) async fn fetch_run(conn: &mut PgConnection, id: Uuid) -> StoreResult<Run> {
    sqlx::query_as!(
        RunRow,
        r#"SELECT r.id, r.company_id, r.routine_id, r.trigger_id,
                  t.kind AS "trigger_kind?: TriggerKind", t.label AS "trigger_label?",
                  r.source AS "source: RunSource", r.status AS "status: RunStatus", r.reason,
                  r.scheduled_for, r.catch_up, r.missed, r.triggered_at, r.completed_at,
                  r.idempotency_key, r.payload, r.linked_issue_id, r.coalesced_into_run_id,
                  r.heartbeat_run_id, r.failure_reason
           FROM routine_runs r LEFT JOIN routine_triggers t ON t.id = r.trigger_id
           WHERE r.id = $1"#,
        id
    )
    .fetch_optional(conn)
    .await?
    .map(Run::from)
    .ok_or(StoreError::NotFound)
}

impl PgStore {
    /// Accepts a manual or api run of a routine: a `received` run and its dispatch job in one
    /// transaction. A repeated idempotency key returns the original run and creates nothing;
    /// the same key with another payload is refused.
    ///
    /// # Errors
    /// [`StoreError::NotFound`]; [`StoreError::Refused`] `routine_archived`,
    /// `trigger_disabled` or `idempotency_key_reused`; [`StoreError::InvalidReference`]
    /// `triggerId` for a trigger that is not an api trigger of the routine; the database failed.
    pub async fn accept_manual_run(
        &self,
        routine_id: Uuid,
        new: NewRun,
        actor: Actor,
    ) -> StoreResult<Accepted> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let routine = fetch_routine(&mut tx, routine_id, false).await?;
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = find_by_key(&mut tx, routine_id, key.as_str()).await?
        {
            return replay(existing, &new.payload);
        }
        routine_allows(routine.status, RoutineAttempt::Run)?;
        if let Some(trigger_id) = new.trigger_id {
            // Held until the run commits, so a deletion of the trigger waits for the run and
            // then clears the trigger from it (see `delete_trigger`).
            let trigger = sqlx::query!(
                r#"SELECT kind AS "kind: TriggerKind", enabled FROM routine_triggers
                   WHERE id = $1 AND routine_id = $2 FOR KEY SHARE"#,
                trigger_id,
                routine_id
            )
            .fetch_optional(&mut *tx)
            .await?;
            match trigger {
                Some(t) if t.kind == TriggerKind::Api && t.enabled => {}
                Some(t) if t.kind == TriggerKind::Api => {
                    return Err(Refusal::TriggerDisabled.into());
                }
                _ => return Err(StoreError::InvalidReference { field: "triggerId" }),
            }
        }
        let received = Received::new((routine.company_id, routine_id), new, actor, now);
        self.finish_received(tx, received).await
    }

    /// Accepts a webhook call of `trigger`: the trigger must be enabled, its routine active and
    /// its credentials, signing mode and window still those of `trigger`; then like a manual run
    /// (idempotency by key, run and job committed together). Concurrent calls are committed
    /// together (see the `intake` module).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (the trigger was deleted); [`StoreError::Refused`]
    /// `not_active`, or [`TRIGGER_CHANGED`] when `trigger` is an outdated read;
    /// [`Refusal::IdempotencyKeyReused`]; the database failed.
    pub async fn accept_webhook_run(
        &self,
        trigger: &WebhookTrigger,
        new: NewRun,
    ) -> StoreResult<Accepted> {
        let received = Received::new(
            (trigger.company_id, trigger.routine_id),
            new,
            Actor::System,
            self.now(),
        )
        .guarded_by(trigger.clone());
        // The common case: written with the calls that arrived meanwhile, in one statement
        // that checks and holds each trigger.
        let received = match self
            .intake
            .write(&self.pool, &self.announcer, &self.clock, received)
            .await?
        {
            Ok(run) => {
                return Ok(Accepted {
                    run,
                    replayed: false,
                });
            }
            Err(received) => received,
        };
        if let Some(answer) =
            super::repeats::answer_repeat(&self.pool, trigger, &received.new).await?
        {
            return answer;
        }
        // Nothing was written: find out why, holding the trigger, and decide again. The
        // batch may have remembered this call's signature although its run was not written
        // (its idempotency key was taken): that memory is undone first, and kept only if the
        // call is answered 202 after all.
        let mut tx = self.pool.begin().await?;
        let state = sqlx::query!(
            r#"SELECT t.enabled, r.status AS "status: RoutineStatus", t.secret_enc AS "secret_enc!",
                      t.signing_mode AS "signing_mode!: SigningMode",
                      t.replay_window_sec AS "replay_window_sec!"
               FROM routine_triggers t JOIN routines r ON r.id = t.routine_id
               WHERE t.id = $1 FOR SHARE OF t"#,
            trigger.id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
        if !trigger.is_current(
            &state.secret_enc,
            state.signing_mode,
            state.replay_window_sec,
        ) {
            return Err(Refusal::TriggerChanged.into());
        }
        sqlx::query!(
            "DELETE FROM webhook_signatures WHERE trigger_id = $1 AND run_id = $2",
            trigger.id,
            received.run_id
        )
        .execute(&mut *tx)
        .await?;
        if let Some(signature) = &received.new.signature
            && signature_taken(&mut tx, trigger.id, &signature.mac).await?
        {
            tx.commit().await?;
            return Err(Refusal::Replayed.into());
        }
        if !state.enabled || state.status != RoutineStatus::Active {
            tx.commit().await?;
            return Err(Refusal::NotActive.into());
        }
        if let Some(key) = &received.new.idempotency_key
            && let Some(existing) = find_by_key(&mut tx, trigger.routine_id, key.as_str()).await?
        {
            let answer = replay(existing, &received.new.payload);
            if let (Ok(accepted), Some(signature)) = (&answer, &received.new.signature) {
                remember_signature(&mut tx, trigger.id, signature, accepted.run.id).await?;
            }
            tx.commit().await?;
            return answer;
        }
        // The trigger was re-enabled in between: accept under the lock (held here, so the
        // statement need not check it again).
        let unguarded = Received {
            guard: None,
            ..received
        };
        let Some(run) = insert_received(&mut tx, std::slice::from_ref(&unguarded))
            .await?
            .pop()
        else {
            // A concurrent call took the signature or the idempotency key meanwhile.
            tx.rollback().await?;
            return Err(Refusal::Replayed.into());
        };
        tx.commit().await?;
        Ok(self.accepted(run))
    }

    /// An accepted run: workers are woken after the commit, not by a `NOTIFY` inside the
    /// transaction, because Postgres serialises the commits of notifying transactions; the
    /// announcements of concurrent acceptances are coalesced. Should this process die right
    /// before, the workers' polling picks the job up within a second.
    fn accepted(&self, run: Run) -> Accepted {
        self.announce_jobs();
        Accepted {
            run,
            replayed: false,
        }
    }

    /// Inserts a `received` run, its dispatch job and audit entry in `tx`, and commits; a
    /// concurrent request that committed the same idempotency key first wins and its run is
    /// returned.
    async fn finish_received(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        received: Received,
    ) -> StoreResult<Accepted> {
        let inserted = insert_received(&mut tx, std::slice::from_ref(&received))
            .await?
            .pop();
        let Some(run) = inserted else {
            // A concurrent request with the same key committed first.
            tx.rollback().await?;
            let new = &received.new;
            let key = new
                .idempotency_key
                .as_ref()
                .map(IdempotencyKey::as_str)
                .unwrap_or_default();
            let mut conn = self.pool.acquire().await?;
            let existing = find_by_key(&mut conn, received.routine_id, key)
                .await?
                .ok_or(StoreError::NotFound)?;
            return replay(existing, &new.payload);
        };
        tx.commit().await?;
        Ok(self.accepted(run))
    }

    /// The webhook trigger with public id `public_id`, with its decrypted secret.
    ///
    /// # Errors
    /// The database failed, or the stored secret cannot be decrypted.
    pub async fn webhook_trigger(&self, public_id: &str) -> StoreResult<Option<WebhookTrigger>> {
        let row = sqlx::query!(
            r#"SELECT t.id, t.routine_id, t.company_id, t.signing_mode AS "signing_mode!: SigningMode",
                      t.replay_window_sec AS "replay_window_sec!", t.secret_enc AS "secret_enc!",
                      t.previous_secret_enc, t.previous_secret_expires_at
               FROM routine_triggers t
               WHERE t.public_id = $1 AND t.kind = 'webhook'"#,
            public_id
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let secret = self.open_secret(row.id, &row.secret_enc)?;
        let previous = match (row.previous_secret_enc, row.previous_secret_expires_at) {
            (Some(sealed), Some(until)) if until > self.now() => {
                Some((self.open_secret(row.id, &sealed)?, until))
            }
            _ => None,
        };
        Ok(Some(WebhookTrigger {
            id: row.id,
            routine_id: row.routine_id,
            company_id: row.company_id,
            signing_mode: row.signing_mode,
            replay_window_sec: row.replay_window_sec,
            secret,
            previous,
            sealed: row.secret_enc,
        }))
    }

    /// One run; a fire prepared ahead of its nominal time is not found before that time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the database failed.
    pub async fn run(&self, id: Uuid) -> StoreResult<Run> {
        let run = fetch_run(&mut *self.pool.acquire().await?, id).await?;
        if run.triggered_at > self.now() {
            return Err(StoreError::NotFound);
        }
        Ok(run)
    }

    /// A routine's runs, newest first by `triggered_at` (ties by id), older than the run
    /// `before` when given; fires prepared ahead of their nominal time are left out until then.
    ///
    /// # Errors
    /// The database failed.
    pub async fn runs(
        &self,
        routine_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<Run>> {
        let rows = sqlx::query_as!(
            RunRow,
            r#"SELECT r.id, r.company_id, r.routine_id, r.trigger_id,
                      t.kind AS "trigger_kind?: TriggerKind", t.label AS "trigger_label?",
                      r.source AS "source: RunSource", r.status AS "status: RunStatus", r.reason,
                      r.scheduled_for, r.catch_up, r.missed, r.triggered_at, r.completed_at,
                      r.idempotency_key, r.payload, r.linked_issue_id, r.coalesced_into_run_id,
                      r.heartbeat_run_id, r.failure_reason
               FROM routine_runs r LEFT JOIN routine_triggers t ON t.id = r.trigger_id
               WHERE r.routine_id = $1 AND r.triggered_at <= $4
                 AND ($2::uuid IS NULL
                      OR (r.triggered_at, r.id) < (SELECT b.triggered_at, b.id FROM routine_runs b
                                                   WHERE b.id = $2 AND b.routine_id = $1))
               ORDER BY r.triggered_at DESC, r.id DESC
               LIMIT $3"#,
            routine_id,
            before,
            limit,
            self.now(),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Run::from).collect())
    }
}

/// A `received` run to write, with its dispatch job and its audit entry.
#[derive(Debug)]
pub(super) struct Received {
    run_id: Uuid,
    company_id: Uuid,
    routine_id: Uuid,
    new: NewRun,
    actor: Actor,
    now: DateTime<Utc>,
    /// For a webhook call, the trigger as the call was authenticated: the run is written only
    /// if that trigger is enabled, its routine active and its credentials unchanged, and the
    /// trigger is held `FOR SHARE` until the write commits.
    guard: Option<WebhookTrigger>,
}

impl Received {
    fn new(
        (company_id, routine_id): (Uuid, Uuid),
        new: NewRun,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            run_id: new_id(),
            company_id,
            routine_id,
            new,
            actor,
            now,
            guard: None,
        }
    }

    fn guarded_by(self, trigger: WebhookTrigger) -> Self {
        Self {
            guard: Some(trigger),
            ..self
        }
    }

    /// The id its run has once written.
    pub(super) fn run_id(&self) -> Uuid {
        self.run_id
    }
}

/// Writes `received` runs, each with its dispatch job and its audit entry, in one statement
/// (the ingestion hot path: one round trip for any number of runs), returning the runs written
/// as the API shows them. A run is not written when its idempotency key is taken, when its
/// guard — a webhook trigger, held `FOR SHARE` — is not enabled with an active routine or no
/// longer has the credentials the call was checked against, or when its call's signature is
/// already remembered; a signed call's signature is remembered when its guard passes (even if
/// the key then turns out to be taken: the caller's fallback undoes that).
pub(super) async fn insert_received(
    conn: &mut PgConnection,
    all: &[Received],
) -> StoreResult<Vec<Run>> {
    // The job and entry are the ones `jobs::enqueue_all_quietly` and `activity::record_all`
    // would write.
    let mut runs = Vec::with_capacity(all.len());
    let (mut companies, mut routines, mut triggers, mut sources) = (vec![], vec![], vec![], vec![]);
    let (mut times, mut keys, mut payloads, mut jobs) = (vec![], vec![], vec![], vec![]);
    let (mut traces, mut entries, mut actor_types, mut actor_ids) =
        (vec![], vec![], vec![], vec![]);
    let (mut details, mut guards, mut sealed, mut modes) = (vec![], vec![], vec![], vec![]);
    let (mut windows, mut macs, mut remember) = (vec![], vec![], vec![]);
    for r in all {
        let new = &r.new;
        runs.push(r.run_id);
        companies.push(r.company_id);
        routines.push(r.routine_id);
        triggers.push(new.trigger_id);
        sources.push(new.source.as_str());
        times.push(r.now);
        keys.push(new.idempotency_key.as_ref().map(IdempotencyKey::as_str));
        payloads.push(Value::Object(new.payload.clone()));
        jobs.push(Uuid::now_v7());
        traces.push(new.trace_context.clone());
        entries.push(new_id());
        actor_types.push(r.actor.actor_type().as_str());
        actor_ids.push(r.actor.actor_id());
        details.push(
            json!({ "routineId": r.routine_id, "source": new.source, "triggerId": new.trigger_id }),
        );
        guards.push(r.guard.as_ref().map(|t| t.id));
        sealed.push(r.guard.as_ref().map(|t| t.sealed.clone()));
        modes.push(r.guard.as_ref().map(|t| t.signing_mode.as_str()));
        windows.push(r.guard.as_ref().map(|t| t.replay_window_sec));
        macs.push(new.signature.as_ref().map(|s| s.mac.clone()));
        remember.push(new.signature.as_ref().map(|s| s.remember_until));
    }
    let inserted = sqlx::query_as!(
        RunRow,
        r#"WITH input AS (
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                                    $6::timestamptz[], $7::text[], $8::jsonb[], $9::uuid[],
                                    $10::jsonb[], $11::uuid[], $12::text[], $13::uuid[],
                                    $14::jsonb[], $15::uuid[], $16::bytea[], $17::text[],
                                    $18::int4[], $21::bytea[], $22::int8[])
                   AS i(run_id, company_id, routine_id, trigger_id, source, at, idempotency_key,
                        payload, job_id, trace_context, entry_id, actor_type, actor_id, details,
                        guard, sealed, signing_mode, replay_window_sec, signature, remember_until)),
           guard AS (
               SELECT t.id, t.secret_enc, t.signing_mode, t.replay_window_sec
               FROM routine_triggers t JOIN routines r ON r.id = t.routine_id
               WHERE t.id = ANY($15) AND t.enabled AND r.status = 'active'
               FOR SHARE OF t),
           allowed AS (
               SELECT i.run_id FROM input i
               WHERE i.guard IS NULL
                  OR EXISTS (SELECT FROM guard g
                             WHERE g.id = i.guard AND g.secret_enc = i.sealed
                               AND g.signing_mode = i.signing_mode
                               AND g.replay_window_sec = i.replay_window_sec)),
           signature AS (
               INSERT INTO webhook_signatures (trigger_id, signature, run_id, expires_at)
               SELECT i.trigger_id, i.signature, i.run_id, i.remember_until
               FROM input i JOIN allowed a ON a.run_id = i.run_id
               WHERE i.signature IS NOT NULL
                 AND (i.idempotency_key IS NULL
                      OR NOT EXISTS (SELECT FROM routine_runs k
                                     WHERE k.routine_id = i.routine_id
                                       AND k.idempotency_key = i.idempotency_key))
               ORDER BY i.run_id
               ON CONFLICT DO NOTHING
               RETURNING run_id),
           run AS (
               INSERT INTO routine_runs (id, company_id, routine_id, trigger_id, source, status,
                                         triggered_at, idempotency_key, payload, updated_at)
               SELECT i.run_id, i.company_id, i.routine_id, i.trigger_id, i.source, 'received',
                      i.at, i.idempotency_key, i.payload, i.at
               FROM input i JOIN allowed a ON a.run_id = i.run_id
               WHERE i.signature IS NULL
                  OR EXISTS (SELECT FROM signature s WHERE s.run_id = i.run_id)
               ORDER BY i.run_id
               ON CONFLICT (routine_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
               RETURNING *),
           job AS (
               INSERT INTO jobs (id, kind, payload, state, run_at, max_attempts, trace_context,
                                 created_at, updated_at)
               SELECT i.job_id, $19, jsonb_build_object('runId', run.id), 'queued', i.at, $20,
                      i.trace_context, i.at, i.at
               FROM run JOIN input i ON i.run_id = run.id),
           entry AS (
               INSERT INTO activity_log (id, company_id, actor_type, actor_id, action, entity_type,
                                         entity_id, details, created_at)
               SELECT i.entry_id, run.company_id, i.actor_type, i.actor_id, 'run.accepted',
                      'routine_run', run.id, i.details, i.at
               FROM run JOIN input i ON i.run_id = run.id)
           SELECT r.id AS "id!", r.company_id AS "company_id!", r.routine_id AS "routine_id!",
                  r.trigger_id, t.kind AS "trigger_kind?: TriggerKind", t.label AS "trigger_label?",
                  r.source AS "source!: RunSource", r.status AS "status!: RunStatus", r.reason,
                  r.scheduled_for, r.catch_up AS "catch_up!", r.missed,
                  r.triggered_at AS "triggered_at!", r.completed_at,
                  r.idempotency_key, r.payload, r.linked_issue_id, r.coalesced_into_run_id,
                  r.heartbeat_run_id, r.failure_reason
           FROM run r LEFT JOIN routine_triggers t ON t.id = r.trigger_id"#,
        &runs,
        &companies,
        &routines,
        &triggers as &[Option<Uuid>],
        &sources as &[&str],
        &times,
        &keys as &[Option<&str>],
        &payloads,
        &jobs,
        &traces as &[Option<Value>],
        &entries,
        &actor_types as &[&str],
        &actor_ids as &[Option<Uuid>],
        &details,
        &guards as &[Option<Uuid>],
        &sealed as &[Option<Vec<u8>>],
        &modes as &[Option<&str>],
        &windows as &[Option<i32>],
        DISPATCH_RUN,
        DISPATCH_MAX_ATTEMPTS,
        &macs as &[Option<Vec<u8>>],
        &remember as &[Option<i64>],
    )
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().map(Run::from).collect())
}

async fn find_by_key(
    conn: &mut PgConnection,
    routine_id: Uuid,
    key: &str,
) -> StoreResult<Option<Run>> {
    let id = sqlx::query_scalar!(
        "SELECT id FROM routine_runs WHERE routine_id = $1 AND idempotency_key = $2",
        routine_id,
        key
    )
    .fetch_optional(&mut *conn)
    .await?;
    match id {
        Some(id) => Ok(Some(fetch_run(conn, id).await?)),
        None => Ok(None),
    }
}

/// Whether trigger `trigger_id` has remembered signature `mac`.
pub(super) async fn signature_taken(
    conn: &mut PgConnection,
    trigger_id: Uuid,
    mac: &[u8],
) -> StoreResult<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT FROM webhook_signatures WHERE trigger_id = $1 AND signature = $2) AS "taken!""#,
        trigger_id,
        mac,
    )
    .fetch_one(conn)
    .await?)
}

/// Remembers an accepted call's signature with the run it was answered with.
async fn remember_signature(
    conn: &mut PgConnection,
    trigger_id: Uuid,
    signature: &CallSignature,
    run_id: Uuid,
) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO webhook_signatures (trigger_id, signature, run_id, expires_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        trigger_id,
        signature.mac,
        run_id,
        signature.remember_until,
    )
    .execute(conn)
    .await?;
    Ok(())
}

impl PgStore {
    /// Whether webhook trigger `trigger_id` has accepted a call with signature `mac` that is
    /// still remembered (see `webhook_signatures`).
    ///
    /// # Errors
    /// The database failed.
    pub async fn signature_seen(&self, trigger_id: Uuid, mac: Vec<u8>) -> StoreResult<bool> {
        signature_taken(&mut *self.pool.acquire().await?, trigger_id, &mac).await
    }

    /// Destroys the secrets rotations replaced whose grace period is over; returns how many.
    ///
    /// # Errors
    /// The database failed.
    pub async fn destroy_expired_secrets(&self) -> StoreResult<u64> {
        let destroyed = sqlx::query!(
            "UPDATE routine_triggers SET previous_secret_enc = NULL, previous_secret_expires_at = NULL
             WHERE previous_secret_expires_at <= $1",
            self.now()
        )
        .execute(&self.pool)
        .await?;
        Ok(destroyed.rows_affected())
    }

    /// Deletes remembered signatures whose time is up.
    ///
    /// # Errors
    /// The database failed.
    pub async fn purge_signatures(&self) -> StoreResult<u64> {
        let deleted = sqlx::query!(
            "DELETE FROM webhook_signatures WHERE expires_at <= $1",
            self.now().timestamp()
        )
        .execute(&self.pool)
        .await?;
        Ok(deleted.rows_affected())
    }
}
