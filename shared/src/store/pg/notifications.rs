//! Notification channels and the outbox on Postgres. The notices of a change are written by
//! [`notify`] in the change's transaction, as one `fan_out_notices` job: the change and its
//! notices commit together or not at all. A worker turns the job into one notification per
//! receiving channel, each with its `deliver_notification` job, in one transaction with the
//! job's completion ([`PgStore::fan_out_notices`]), so a notice is fanned out once; the
//! delivery's id-stable retries are the only way one is sent again.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, types::Json};
use uuid::Uuid;

use super::{PgStore, company_exists};
use crate::{
    crypto::generate_standard_webhooks_secret,
    engine::{
        notify::{ChannelTarget, Notice, body},
        refusal::Refusal,
        tasks::{Job, Task},
    },
    model::{
        Actor, ChannelKind, DeliveryStatus, HeartbeatContext, HeartbeatRun, HeartbeatStatus,
        NotificationChannel, NotificationDelivery, NotificationEvent, Run, RunSource, RunStatus,
        TriggerKind,
    },
    store::{
        NewActivity, StoreError, StoreResult,
        heartbeats::HeartbeatRow,
        new_id,
        notifications::{
            Attempt, ChannelChanges, CreatedChannel, MAX_CHANNELS_PER_COMPANY, NewChannel,
            Outgoing, delivery_jobs, fan_out_job, notifications,
        },
        runs::RunRow,
    },
};

/// Channels as the fan-out reads them: the enabled ones of these companies.
async fn targets(conn: &mut PgConnection, notices: &[Notice]) -> StoreResult<Vec<ChannelTarget>> {
    let mut companies: Vec<Uuid> = notices.iter().map(|n| n.company_id).collect();
    companies.sort_unstable();
    companies.dedup();
    Ok(sqlx::query!(
        r#"SELECT id, company_id, events, routine_ids FROM notification_channels
           WHERE company_id = ANY($1) AND enabled"#,
        &companies
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|row| ChannelTarget {
        id: row.id,
        company_id: row.company_id,
        events: row.events.iter().filter_map(|e| e.parse().ok()).collect(),
        routine_ids: row.routine_ids,
    })
    .collect())
}

/// Writes the notices of a change, on `conn` (the change's transaction): one
/// `fan_out_notices` job listing those some enabled channel receives, or nothing. A worker turns
/// it into notifications ([`PgStore::fan_out_notices`]); the change's own transaction stays one
/// small row longer, whatever the number of channels.
pub(crate) async fn notify(
    conn: &mut PgConnection,
    notices: Vec<Notice>,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    if notices.is_empty() {
        return Ok(());
    }
    let channels = targets(conn, &notices).await?;
    if let Some(job) = fan_out_job(notices, &channels, now) {
        super::jobs::enqueue(conn, job, now).await?;
    }
    Ok(())
}

/// Heartbeat runs by id, as the API shows them.
async fn heartbeats_of(conn: &mut PgConnection, ids: &[Uuid]) -> StoreResult<HashMap<Uuid, Value>> {
    Ok(sqlx::query_as!(
        HeartbeatRow,
        r#"SELECT id, company_id, agent_id, issue_id, routine_run_id,
                  status AS "status: HeartbeatStatus",
                  context AS "context: Json<HeartbeatContext>",
                  created_at, started_at, finished_at, summary
           FROM heartbeat_runs WHERE id = ANY($1)"#,
        ids,
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .filter_map(|row| {
        let run = HeartbeatRun::from(row);
        Some((run.id, serde_json::to_value(run).ok()?))
    })
    .collect())
}

/// Reads runs by id with their triggers' current kind and label, one statement for all.
async fn runs_of(conn: &mut PgConnection, ids: &[Uuid]) -> StoreResult<HashMap<Uuid, Value>> {
    Ok(sqlx::query_as!(
        RunRow,
        r#"SELECT r.id AS "id!", r.company_id AS "company_id!", r.routine_id AS "routine_id!",
                  r.trigger_id, t.kind AS "trigger_kind?: TriggerKind", t.label AS "trigger_label?",
                  r.source AS "source!: RunSource", r.status AS "status!: RunStatus", r.reason,
                  r.scheduled_for, r.catch_up AS "catch_up!", r.missed,
                  r.triggered_at AS "triggered_at!", r.completed_at, r.idempotency_key,
                  r.payload AS "payload!", r.linked_issue_id, r.coalesced_into_run_id,
                  r.heartbeat_run_id, r.failure_reason
           FROM routine_runs r LEFT JOIN routine_triggers t ON t.id = r.trigger_id
           WHERE r.id = ANY($1)"#,
        ids
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .filter_map(|row| Some((row.id, serde_json::to_value(Run::from(row)).ok()?)))
    .collect())
}

/// A channel row as stored.
struct ChannelRow {
    id: Uuid,
    company_id: Uuid,
    name: String,
    kind: ChannelKind,
    url: String,
    events: Vec<String>,
    routine_ids: Option<Vec<Uuid>>,
    enabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ChannelRow> for NotificationChannel {
    fn from(row: ChannelRow) -> Self {
        Self {
            id: row.id,
            company_id: row.company_id,
            name: row.name,
            kind: row.kind,
            url: row.url,
            events: row.events.iter().filter_map(|e| e.parse().ok()).collect(),
            routine_ids: row.routine_ids,
            enabled: row.enabled,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

fn event_names(events: &[NotificationEvent]) -> Vec<String> {
    events.iter().map(|e| e.as_str().to_owned()).collect()
}

/// Checks that every named routine is one of the company's.
async fn ensure_routines(
    conn: &mut PgConnection,
    company_id: Uuid,
    routine_ids: Option<&Vec<Uuid>>,
) -> StoreResult<()> {
    let Some(ids) = routine_ids else {
        return Ok(());
    };
    let found = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM routines WHERE company_id = $1 AND id = ANY($2)"#,
        company_id,
        ids
    )
    .fetch_one(conn)
    .await?;
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if usize::try_from(found).ok() == Some(distinct.len()) {
        Ok(())
    } else {
        Err(StoreError::InvalidReference {
            field: "routineIds",
        })
    }
}

async fn fetch_channel(conn: &mut PgConnection, id: Uuid, lock: bool) -> StoreResult<ChannelRow> {
    let row = if lock {
        sqlx::query_as!(
            ChannelRow,
            r#"SELECT id, company_id, name, kind AS "kind: ChannelKind", url, events, routine_ids,
                      enabled, created_at, updated_at
               FROM notification_channels WHERE id = $1 FOR UPDATE"#,
            id
        )
        .fetch_optional(conn)
        .await?
    } else {
        sqlx::query_as!(
            ChannelRow,
            r#"SELECT id, company_id, name, kind AS "kind: ChannelKind", url, events, routine_ids,
                      enabled, created_at, updated_at
               FROM notification_channels WHERE id = $1"#,
            id
        )
        .fetch_optional(conn)
        .await?
    };
    row.ok_or(StoreError::NotFound)
}

impl PgStore {
    /// Turns the notices of `fan_out_notices` jobs whose lease is still held into one
    /// notification per receiving channel, each with its delivery job, and completes the jobs
    /// — one transaction, so a notice is fanned out once. Returns the jobs completed.
    ///
    /// # Errors
    /// The database failed (nothing was written).
    pub async fn fan_out_notices(&self, jobs: &[Job]) -> StoreResult<Vec<Uuid>> {
        let (mut tx, held) = self.begin_fenced_all(jobs).await?;
        let mut rows = Vec::new();
        for job in &held {
            let Task::FanOutNotices { notices } = &job.task else {
                continue;
            };
            let channels = targets(&mut tx, notices).await?;
            let run_ids: Vec<Uuid> = notices.iter().filter_map(|n| n.run_id).collect();
            let heartbeat_ids: Vec<Uuid> =
                notices.iter().filter_map(|n| n.heartbeat_run_id).collect();
            let runs = runs_of(&mut tx, &run_ids).await?;
            let heartbeats = heartbeats_of(&mut tx, &heartbeat_ids).await?;
            let subjects = |n: &Notice| {
                (
                    n.run_id.and_then(|id| runs.get(&id).cloned()),
                    n.heartbeat_run_id
                        .and_then(|id| heartbeats.get(&id).cloned()),
                )
            };
            // The notice's time is its change's: when the job was written.
            for (id, channel, notice, body) in
                notifications(notices, &channels, &subjects, job.created_at)
            {
                rows.push((id, channel, notice, body, job.created_at));
            }
        }
        if !rows.is_empty() {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
            let channels: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
            let companies: Vec<Uuid> = rows.iter().map(|r| r.2.company_id).collect();
            let events: Vec<String> = rows.iter().map(|r| r.2.event.as_str().to_owned()).collect();
            let routines: Vec<Option<Uuid>> = rows.iter().map(|r| r.2.routine_id).collect();
            let created: Vec<DateTime<Utc>> = rows.iter().map(|r| r.4).collect();
            let bodies: Vec<Value> = rows.into_iter().map(|r| r.3).collect();
            sqlx::query!(
                "INSERT INTO notifications (id, channel_id, company_id, event, routine_id, body, created_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[],
                                      $6::jsonb[], $7::timestamptz[])",
                &ids,
                &channels,
                &companies,
                &events,
                &routines as &[Option<Uuid>],
                &bodies,
                &created,
            )
            .execute(&mut *tx)
            .await?;
            let now = self.now();
            super::jobs::enqueue_all_quietly(&mut tx, delivery_jobs(&ids, now), now).await?;
            super::jobs::notify(&mut tx).await?;
        }
        let done: Vec<Uuid> = held.iter().map(|j| j.id).collect();
        super::jobs::complete_in(&mut tx, &done).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Creates a notification channel; a `webhook` channel's secret is returned only here.
    ///
    /// # Errors
    /// `NotFound` (company); `InvalidReference` `routineIds`; `Refused` `too_many_channels`;
    /// the database failed.
    pub async fn create_channel(
        &self,
        company_id: Uuid,
        new: NewChannel,
        actor: Actor,
    ) -> StoreResult<CreatedChannel> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !company_exists(&mut tx, company_id).await? {
            return Err(StoreError::NotFound);
        }
        // One company's channels are created one at a time, so the cap holds.
        sqlx::query!(
            "SELECT id FROM companies WHERE id = $1 FOR NO KEY UPDATE",
            company_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let count = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM notification_channels WHERE company_id = $1"#,
            company_id
        )
        .fetch_one(&mut *tx)
        .await?;
        if count >= MAX_CHANNELS_PER_COMPANY {
            return Err(Refusal::TooManyChannels.into());
        }
        ensure_routines(&mut tx, company_id, new.routine_ids.as_ref()).await?;
        let id = new_id();
        let secret = (new.kind == ChannelKind::Webhook).then(generate_standard_webhooks_secret);
        let sealed = secret
            .as_ref()
            .map(|s| self.secrets.seal(id.as_bytes(), s.as_bytes()));
        let row = sqlx::query_as!(
            ChannelRow,
            r#"INSERT INTO notification_channels
                   (id, company_id, name, kind, url, events, routine_ids, enabled, secret_enc,
                    created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
               RETURNING id, company_id, name, kind AS "kind: ChannelKind", url, events,
                         routine_ids, enabled, created_at, updated_at"#,
            id,
            company_id,
            new.name.as_str(),
            new.kind.as_str(),
            new.url,
            &event_names(&new.events),
            new.routine_ids.as_deref(),
            new.enabled,
            sealed,
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        let channel = NotificationChannel::from(row);
        NewActivity::channel_created(&channel, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(CreatedChannel {
            channel,
            signing_secret: secret,
        })
    }

    /// A company's channels, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn channels(&self, company_id: Uuid) -> StoreResult<Vec<NotificationChannel>> {
        Ok(sqlx::query_as!(
            ChannelRow,
            r#"SELECT id, company_id, name, kind AS "kind: ChannelKind", url, events, routine_ids,
                      enabled, created_at, updated_at
               FROM notification_channels WHERE company_id = $1 ORDER BY created_at, id"#,
            company_id
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(NotificationChannel::from)
        .collect())
    }

    /// One channel.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn channel(&self, id: Uuid) -> StoreResult<NotificationChannel> {
        let mut conn = self.pool.acquire().await?;
        Ok(fetch_channel(&mut conn, id, false).await?.into())
    }

    /// Changes a channel.
    ///
    /// # Errors
    /// `NotFound`; `InvalidReference` `routineIds`; the database failed.
    pub async fn update_channel(
        &self,
        id: Uuid,
        changes: ChannelChanges,
        actor: Actor,
    ) -> StoreResult<NotificationChannel> {
        let now = self.now();
        let events = changes.events.as_deref().map(event_names);
        let routine_ids = changes.routine_ids.clone().flatten();
        let mut tx = self.pool.begin().await?;
        let current = NotificationChannel::from(fetch_channel(&mut tx, id, true).await?);
        if let Some(routines) = &changes.routine_ids {
            ensure_routines(&mut tx, current.company_id, routines.as_ref()).await?;
        }
        let row = sqlx::query_as!(
            ChannelRow,
            r#"UPDATE notification_channels SET
                   name = COALESCE($2, name),
                   url = COALESCE($3, url),
                   events = COALESCE($4, events),
                   routine_ids = CASE WHEN $5 THEN $6 ELSE routine_ids END,
                   enabled = COALESCE($7, enabled),
                   updated_at = $8
               WHERE id = $1
               RETURNING id, company_id, name, kind AS "kind: ChannelKind", url, events,
                         routine_ids, enabled, created_at, updated_at"#,
            id,
            changes.name.as_ref().map(|n| n.as_str()),
            changes.url.as_deref(),
            events.as_deref(),
            changes.routine_ids.is_some(),
            routine_ids.as_deref(),
            changes.enabled,
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        let channel = NotificationChannel::from(row);
        NewActivity::channel_updated(&current, &channel, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(channel)
    }

    /// Deletes a channel and its notifications (undelivered ones are dropped: their jobs find
    /// nothing to send).
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn delete_channel(&self, id: Uuid, actor: Actor) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let channel = NotificationChannel::from(fetch_channel(&mut tx, id, true).await?);
        sqlx::query!("DELETE FROM notification_channels WHERE id = $1", id)
            .execute(&mut *tx)
            .await?;
        NewActivity::channel_deleted(&channel, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes one `test` notification to the channel (whatever its events, enabled or not);
    /// returns its id.
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn test_channel(&self, id: Uuid, actor: Actor) -> StoreResult<Uuid> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let channel = NotificationChannel::from(fetch_channel(&mut tx, id, true).await?);
        let notice = Notice::test(&channel);
        let notification = new_id();
        sqlx::query!(
            "INSERT INTO notifications (id, channel_id, company_id, event, routine_id, body, created_at)
             VALUES ($1, $2, $3, $4, NULL, $5, $6)",
            notification,
            channel.id,
            channel.company_id,
            NotificationEvent::Test.as_str(),
            body(&notice, now),
            now,
        )
        .execute(&mut *tx)
        .await?;
        super::jobs::enqueue_all_quietly(&mut tx, delivery_jobs(&[notification], now), now).await?;
        super::jobs::notify(&mut tx).await?;
        NewActivity::channel_tested(&channel, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(notification)
    }

    /// A channel's notifications, newest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn channel_deliveries(
        &self,
        channel_id: Uuid,
        limit: i64,
    ) -> StoreResult<Vec<NotificationDelivery>> {
        Ok(sqlx::query_as!(
            NotificationDelivery,
            r#"SELECT id, event AS "event: NotificationEvent", routine_id,
                      status AS "status: DeliveryStatus", attempts, last_status_code, last_error,
                      created_at, delivered_at
               FROM notifications WHERE channel_id = $1
               ORDER BY created_at DESC, id DESC LIMIT $2"#,
            channel_id,
            limit
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// What delivering a notification needs, or `None` when there is nothing to send any more
    /// (delivered, failed, or its channel deleted).
    ///
    /// # Errors
    /// The database failed, or the channel's secret cannot be opened.
    pub async fn notification_to_send(&self, id: Uuid) -> StoreResult<Option<Outgoing>> {
        let row = sqlx::query!(
            r#"SELECT n.id, n.body, c.id AS channel_id, c.kind AS "kind: ChannelKind", c.url,
                      c.secret_enc
               FROM notifications n JOIN notification_channels c ON c.id = n.channel_id
               WHERE n.id = $1 AND n.status = 'pending'"#,
            id
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let secret = row
            .secret_enc
            .map(|sealed| self.open_secret(row.channel_id, &sealed))
            .transpose()?;
        Ok(Some(Outgoing {
            id: row.id,
            kind: row.kind,
            url: row.url,
            secret,
            body: row.body,
        }))
    }

    /// Records one delivery attempt of a pending notification.
    ///
    /// # Errors
    /// The database failed.
    pub async fn record_notification_attempt(&self, id: Uuid, attempt: Attempt) -> StoreResult<()> {
        let now = self.now();
        let (status, code, error) = attempt.recorded();
        sqlx::query!(
            "UPDATE notifications
             SET status = $2, attempts = attempts + 1, last_status_code = $3, last_error = $4,
                 delivered_at = CASE WHEN $2 = 'delivered' THEN $5::timestamptz END
             WHERE id = $1 AND status = 'pending'",
            id,
            status.as_str(),
            code,
            error,
            now,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
