//! Notification channels and the outbox on SQLite: the same operations as on Postgres
//! (`store/pg/notifications.rs`); lists are kept as JSON arrays.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{SqliteConnection, types::Json};
use uuid::Uuid;

use super::{
    SqliteStore, company_exists,
    jobs::{complete_in, enqueue, held},
    record,
    runs::fetch_run,
};
use crate::{
    crypto::generate_standard_webhooks_secret,
    engine::{
        notify::{ChannelTarget, Notice, body},
        refusal::Refusal,
        tasks::{Job, Task},
    },
    model::{
        Actor, ChannelKind, HeartbeatRun, NotificationChannel, NotificationDelivery,
        NotificationEvent,
    },
    store::{
        NewActivity, StoreError, StoreResult,
        heartbeats::HeartbeatRow,
        new_id,
        notifications::{
            Attempt, ChannelChanges, CreatedChannel, MAX_CHANNELS_PER_COMPANY, NewChannel,
            Outgoing, delivery_jobs, fan_out_job, notifications,
        },
        open_secret,
    },
};

/// The columns of a [`ChannelRow`].
macro_rules! channel_columns {
    () => {
        "id, company_id, name, kind, url, events, routine_ids, enabled, created_at, updated_at"
    };
}

type ChannelRow = (
    Uuid,
    Uuid,
    String,
    ChannelKind,
    String,
    Json<Vec<NotificationEvent>>,
    Option<Json<Vec<Uuid>>>,
    bool,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn channel_of(row: ChannelRow) -> NotificationChannel {
    let (id, company_id, name, kind, url, events, routine_ids, enabled, created_at, updated_at) =
        row;
    NotificationChannel {
        id,
        company_id,
        name,
        kind,
        url,
        events: events.0,
        routine_ids: routine_ids.map(|r| r.0),
        enabled,
        created_at,
        updated_at,
    }
}

/// Channels as the fan-out reads them: the enabled ones of these companies.
async fn targets(
    conn: &mut SqliteConnection,
    notices: &[Notice],
) -> StoreResult<Vec<ChannelTarget>> {
    let mut companies: Vec<Uuid> = notices.iter().map(|n| n.company_id).collect();
    companies.sort_unstable();
    companies.dedup();
    let mut channels = Vec::new();
    for company in companies {
        let rows = sqlx::query_as::<_, ChannelRow>(concat!(
            "SELECT ",
            channel_columns!(),
            " FROM notification_channels WHERE company_id = ?1 AND enabled"
        ))
        .bind(company)
        .fetch_all(&mut *conn)
        .await?;
        channels.extend(rows.into_iter().map(channel_of).map(|c| ChannelTarget {
            id: c.id,
            company_id: c.company_id,
            events: c.events,
            routine_ids: c.routine_ids,
        }));
    }
    Ok(channels)
}

/// Writes the notices of a change in its transaction, as on Postgres: one `fan_out_notices`
/// job, or nothing; returns whether a job was enqueued (the caller announces it after
/// committing).
pub(super) async fn notify(
    conn: &mut SqliteConnection,
    notices: Vec<Notice>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    if notices.is_empty() {
        return Ok(false);
    }
    let channels = targets(conn, &notices).await?;
    let Some(job) = fan_out_job(notices, &channels, now) else {
        return Ok(false);
    };
    enqueue(conn, vec![job], now).await?;
    Ok(true)
}

/// The run and heartbeat run a notice is about, as the API shows them.
async fn subjects_of(
    conn: &mut SqliteConnection,
    notices: &[Notice],
) -> StoreResult<(HashMap<Uuid, Value>, HashMap<Uuid, Value>)> {
    let mut runs = HashMap::new();
    let mut heartbeats = HashMap::new();
    for notice in notices {
        if let Some(id) = notice.run_id {
            let run = fetch_run(conn, id).await?;
            runs.extend(serde_json::to_value(run).ok().map(|v| (id, v)));
        }
        if let Some(id) = notice.heartbeat_run_id {
            let run: HeartbeatRun = sqlx::query_as::<_, HeartbeatRow>(concat!(
                "SELECT ",
                heartbeat_columns!(),
                " FROM heartbeat_runs WHERE id = ?1"
            ))
            .bind(id)
            .fetch_one(&mut *conn)
            .await?
            .into();
            heartbeats.extend(serde_json::to_value(run).ok().map(|v| (id, v)));
        }
    }
    Ok((runs, heartbeats))
}

async fn ensure_routines(
    conn: &mut SqliteConnection,
    company_id: Uuid,
    routine_ids: Option<&Vec<Uuid>>,
) -> StoreResult<()> {
    let Some(ids) = routine_ids else {
        return Ok(());
    };
    for id in ids {
        let found = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM routines WHERE company_id = ?1 AND id = ?2)",
        )
        .bind(company_id)
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        if !found {
            return Err(StoreError::InvalidReference {
                field: "routineIds",
            });
        }
    }
    Ok(())
}

async fn fetch_channel(conn: &mut SqliteConnection, id: Uuid) -> StoreResult<NotificationChannel> {
    sqlx::query_as::<_, ChannelRow>(concat!(
        "SELECT ",
        channel_columns!(),
        " FROM notification_channels WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .map(channel_of)
    .ok_or(StoreError::NotFound)
}

impl SqliteStore {
    /// See [`crate::store::Storage::fan_out_notices`].
    ///
    /// # Errors
    /// The database failed (nothing was written).
    pub async fn fan_out_notices(&self, jobs: &[Job]) -> StoreResult<Vec<Uuid>> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let held = held(&mut tx, jobs).await?;
        let mut enqueued = false;
        for job in &held {
            let Task::FanOutNotices { notices } = &job.task else {
                continue;
            };
            let channels = targets(&mut tx, notices).await?;
            let (runs, heartbeats) = subjects_of(&mut tx, notices).await?;
            let subjects = |n: &Notice| {
                (
                    n.run_id.and_then(|id| runs.get(&id).cloned()),
                    n.heartbeat_run_id
                        .and_then(|id| heartbeats.get(&id).cloned()),
                )
            };
            let rows = notifications(notices, &channels, &subjects, job.created_at);
            let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
            for (id, channel, notice, body) in rows {
                sqlx::query(
                    "INSERT INTO notifications (id, channel_id, company_id, event, routine_id,
                                                body, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .bind(id)
                .bind(channel)
                .bind(notice.company_id)
                .bind(notice.event.as_str())
                .bind(notice.routine_id)
                .bind(&body)
                .bind(job.created_at)
                .execute(&mut *tx)
                .await?;
            }
            enqueued |= !ids.is_empty();
            enqueue(&mut tx, delivery_jobs(&ids, now), now).await?;
        }
        let done: Vec<Uuid> = held.iter().map(|j| j.id).collect();
        complete_in(&mut tx, &done).await?;
        tx.commit().await?;
        if enqueued {
            self.announce_jobs();
        }
        Ok(done)
    }

    /// See [`crate::store::Storage::create_channel`].
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`, `Refused`; the database failed.
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
        let count = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM notification_channels WHERE company_id = ?1",
        )
        .bind(company_id)
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
        let row = sqlx::query_as::<_, ChannelRow>(concat!(
            "INSERT INTO notification_channels
                 (id, company_id, name, kind, url, events, routine_ids, enabled, secret_enc,
                  created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
             RETURNING ",
            channel_columns!()
        ))
        .bind(id)
        .bind(company_id)
        .bind(new.name.as_str())
        .bind(new.kind.as_str())
        .bind(&new.url)
        .bind(Json(&new.events))
        .bind(new.routine_ids.as_ref().map(Json))
        .bind(new.enabled)
        .bind(sealed)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let channel = channel_of(row);
        record(
            &mut tx,
            vec![NewActivity::channel_created(&channel, actor)],
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(CreatedChannel {
            channel,
            signing_secret: secret,
        })
    }

    /// See [`crate::store::Storage::channels`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn channels(&self, company_id: Uuid) -> StoreResult<Vec<NotificationChannel>> {
        Ok(sqlx::query_as::<_, ChannelRow>(concat!(
            "SELECT ",
            channel_columns!(),
            " FROM notification_channels WHERE company_id = ?1
             ORDER BY created_at, id"
        ))
        .bind(company_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(channel_of)
        .collect())
    }

    /// See [`crate::store::Storage::channel`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn channel(&self, id: Uuid) -> StoreResult<NotificationChannel> {
        fetch_channel(&mut *self.pool.acquire().await?, id).await
    }

    /// See [`crate::store::Storage::update_channel`].
    ///
    /// # Errors
    /// `NotFound`, `InvalidReference`; the database failed.
    pub async fn update_channel(
        &self,
        id: Uuid,
        changes: ChannelChanges,
        actor: Actor,
    ) -> StoreResult<NotificationChannel> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let current = fetch_channel(&mut tx, id).await?;
        if let Some(routines) = &changes.routine_ids {
            ensure_routines(&mut tx, current.company_id, routines.as_ref()).await?;
        }
        let row = sqlx::query_as::<_, ChannelRow>(concat!(
            "UPDATE notification_channels SET
                 name = COALESCE(?2, name),
                 url = COALESCE(?3, url),
                 events = COALESCE(?4, events),
                 routine_ids = CASE WHEN ?5 THEN ?6 ELSE routine_ids END,
                 enabled = COALESCE(?7, enabled),
                 updated_at = ?8
             WHERE id = ?1
             RETURNING ",
            channel_columns!()
        ))
        .bind(id)
        .bind(changes.name.as_ref().map(|n| n.as_str()))
        .bind(changes.url.as_deref())
        .bind(changes.events.as_ref().map(Json))
        .bind(changes.routine_ids.is_some())
        .bind(changes.routine_ids.clone().flatten().map(Json))
        .bind(changes.enabled)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let channel = channel_of(row);
        record(
            &mut tx,
            vec![NewActivity::channel_updated(&current, &channel, actor)],
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(channel)
    }

    /// See [`crate::store::Storage::delete_channel`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn delete_channel(&self, id: Uuid, actor: Actor) -> StoreResult<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let channel = fetch_channel(&mut tx, id).await?;
        sqlx::query("DELETE FROM notification_channels WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        record(
            &mut tx,
            vec![NewActivity::channel_deleted(&channel, actor)],
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// See [`crate::store::Storage::test_channel`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn test_channel(&self, id: Uuid, actor: Actor) -> StoreResult<Uuid> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let channel = fetch_channel(&mut tx, id).await?;
        let notice = Notice::test(&channel);
        let notification = new_id();
        sqlx::query(
            "INSERT INTO notifications (id, channel_id, company_id, event, routine_id, body,
                                        created_at)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6)",
        )
        .bind(notification)
        .bind(channel.id)
        .bind(channel.company_id)
        .bind(NotificationEvent::Test.as_str())
        .bind(body(&notice, now))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        enqueue(&mut tx, delivery_jobs(&[notification], now), now).await?;
        record(
            &mut tx,
            vec![NewActivity::channel_tested(&channel, actor)],
            now,
        )
        .await?;
        tx.commit().await?;
        self.announce_jobs();
        Ok(notification)
    }

    /// See [`crate::store::Storage::channel_deliveries`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn channel_deliveries(
        &self,
        channel_id: Uuid,
        limit: i64,
    ) -> StoreResult<Vec<NotificationDelivery>> {
        Ok(sqlx::query_as::<_, NotificationDelivery>(
            "SELECT id, event, routine_id, status, attempts, last_status_code, last_error,
                    created_at, delivered_at
             FROM notifications WHERE channel_id = ?1
             ORDER BY created_at DESC, id DESC LIMIT ?2",
        )
        .bind(channel_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::notification_to_send`].
    ///
    /// # Errors
    /// The database failed, or the channel's secret cannot be opened.
    pub async fn notification_to_send(&self, id: Uuid) -> StoreResult<Option<Outgoing>> {
        let row = sqlx::query_as::<_, (Uuid, Value, Uuid, ChannelKind, String, Option<Vec<u8>>)>(
            "SELECT n.id, n.body, c.id, c.kind, c.url, c.secret_enc
             FROM notifications n JOIN notification_channels c ON c.id = n.channel_id
             WHERE n.id = ?1 AND n.status = 'pending'",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, body, channel_id, kind, url, sealed)) = row else {
            return Ok(None);
        };
        let secret = sealed
            .map(|sealed| open_secret(&self.secrets, channel_id, &sealed))
            .transpose()?;
        Ok(Some(Outgoing {
            id,
            kind,
            url,
            secret,
            body,
        }))
    }

    /// See [`crate::store::Storage::record_notification_attempt`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn record_notification_attempt(&self, id: Uuid, attempt: Attempt) -> StoreResult<()> {
        let now = self.now();
        let (status, code, error) = attempt.recorded();
        sqlx::query(
            "UPDATE notifications
             SET status = ?2, attempts = attempts + 1, last_status_code = ?3, last_error = ?4,
                 delivered_at = CASE WHEN ?2 = 'delivered' THEN ?5 END
             WHERE id = ?1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(code)
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
