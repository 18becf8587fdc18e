//! Retention on SQLite: the same batches as on Postgres (`store/pg/retention.rs`), each kind in
//! one transaction of the one writer. The issues of a batch are gathered in a temporary table
//! first, so that every table is deleted from by the same set.

use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::{
    engine::retention::{self, KEYS_KEPT, PurgeReport, fills},
    store::StoreResult,
};

impl SqliteStore {
    /// See [`crate::store::Storage::purge_history`].
    ///
    /// # Errors
    /// The database failed (that kind's batch is rolled back; earlier kinds stay deleted).
    pub async fn purge_history(&self, days: u32, limit: i64) -> StoreResult<PurgeReport> {
        let now = self.now();
        let cutoff = retention::cutoff(now, days);
        let keys_until = now - KEYS_KEPT;
        let mut report = PurgeReport::default();
        self.purge_issues(cutoff, keys_until, limit, &mut report)
            .await?;
        let mut tx = self.pool.begin().await?;
        let runs = sqlx::query(
            "DELETE FROM routine_runs WHERE id IN (
                 SELECT r.id FROM routine_runs r
                 WHERE r.linked_issue_id IS NULL AND r.completed_at IS NOT NULL
                   AND r.completed_at < ?1 AND r.triggered_at < ?2
                   AND EXISTS (SELECT 1 FROM routine_runs n
                               WHERE n.routine_id = r.routine_id
                                 AND (n.triggered_at, n.id) > (r.triggered_at, r.id))
                 ORDER BY r.completed_at LIMIT ?3)",
        )
        .bind(cutoff)
        .bind(keys_until)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        report.runs += runs;
        report.more |= fills(runs, limit);
        let mut tx = self.pool.begin().await?;
        let activity = sqlx::query(
            "DELETE FROM activity_log WHERE id IN (
                 SELECT a.id FROM companies c
                 JOIN activity_log a ON a.id IN (
                     SELECT id FROM activity_log
                     WHERE company_id = c.id AND created_at < ?1
                     ORDER BY created_at, id LIMIT ?2)
                 LIMIT ?2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let notifications = sqlx::query(
            "DELETE FROM notifications WHERE id IN (
                 SELECT n.id FROM notification_channels ch
                 JOIN notifications n ON n.id IN (
                     SELECT id FROM notifications
                     WHERE channel_id = ch.id AND created_at < ?1 AND status <> 'pending'
                     ORDER BY created_at, id LIMIT ?2)
                 LIMIT ?2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let jobs = sqlx::query(
            "DELETE FROM jobs WHERE id IN (
                 SELECT id FROM jobs WHERE state = 'dead' AND updated_at < ?1
                 ORDER BY updated_at LIMIT ?2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        report.activity = activity;
        report.notifications = notifications;
        report.jobs = jobs;
        report.more |= [activity, notifications, jobs]
            .into_iter()
            .any(|rows| fills(rows, limit));
        Ok(report)
    }

    /// As on Postgres: closed issues old enough, with their events, heartbeat runs and linked
    /// runs, in one transaction.
    async fn purge_issues(
        &self,
        cutoff: DateTime<Utc>,
        keys_until: DateTime<Utc>,
        limit: i64,
        report: &mut PurgeReport,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::raw_sql(
            "CREATE TEMP TABLE IF NOT EXISTS purged_issues (id BLOB PRIMARY KEY);
             DELETE FROM purged_issues;",
        )
        .execute(&mut *tx)
        .await?;
        let issues = sqlx::query(
            "INSERT INTO purged_issues (id)
             SELECT i.id FROM issues i
             WHERE i.status IN ('done', 'cancelled') AND i.updated_at < ?1
               AND NOT EXISTS (SELECT 1 FROM issues c
                               WHERE c.company_id = i.company_id AND c.parent_issue_id = i.id)
               AND NOT EXISTS (SELECT 1 FROM routines r
                               WHERE r.company_id = i.company_id AND r.parent_issue_id = i.id)
               AND NOT EXISTS (SELECT 1 FROM heartbeat_runs h
                               WHERE h.issue_id = i.id AND h.status IN ('queued', 'running'))
               AND NOT EXISTS (
                   SELECT 1 FROM routine_runs r
                   WHERE r.linked_issue_id = i.id
                     AND (r.completed_at IS NULL OR r.triggered_at >= ?2
                          OR NOT EXISTS (
                              SELECT 1 FROM routine_runs n
                              WHERE n.routine_id = r.routine_id
                                AND (n.triggered_at, n.id) > (r.triggered_at, r.id))))
             ORDER BY i.updated_at LIMIT ?3",
        )
        .bind(cutoff)
        .bind(keys_until)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if issues > 0 {
            for (sql, into) in [
                (
                    "DELETE FROM issue_events WHERE issue_id IN (SELECT id FROM purged_issues)",
                    &mut report.issue_events,
                ),
                (
                    "DELETE FROM heartbeat_runs WHERE issue_id IN (SELECT id FROM purged_issues)",
                    &mut report.heartbeat_runs,
                ),
                (
                    "DELETE FROM routine_runs WHERE linked_issue_id IN (SELECT id FROM purged_issues)",
                    &mut report.runs,
                ),
                (
                    "DELETE FROM issues WHERE id IN (SELECT id FROM purged_issues)",
                    &mut report.issues,
                ),
            ] {
                *into += sqlx::query(sql).execute(&mut *tx).await?.rows_affected();
            }
            report.more |= fills(issues, limit);
        }
        tx.commit().await?;
        Ok(())
    }

    /// See [`crate::store::Storage::jobs_waiting`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn jobs_waiting(&self) -> StoreResult<bool> {
        Ok(sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND run_at <= ?1)",
        )
        .bind(self.now())
        .fetch_one(&self.pool)
        .await?)
    }
}
