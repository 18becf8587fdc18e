//! Retention on Postgres: one batch of each unit [`crate::engine::retention`] describes in three
//! short transactions (closed issues with what names them; runs without an issue; activity,
//! notifications and dead jobs), each found through an index (`issues_closed`,
//! `unlinked_runs`, the per-company activity index, the per-channel notification
//! index, `jobs_dead`). Rows another transaction holds are skipped, not waited for.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgStore;
use crate::{
    engine::retention::{self, KEYS_KEPT, PurgeReport, fills},
    store::StoreResult,
};

/// A purge transaction: planned by key (no sequential scans), without sorts, and with every
/// join a nested loop probing an index once per candidate, so that each batch walks its index
/// in order, stops at its limit, and reads only the rows of what it deletes.
///
/// Both were measured. Right after a day's history was written the statistics still say the
/// tables are small, and the planner read every expired row, sorted them, and only then took
/// the first batch (seconds per batch at a million expired issues). And because statistics
/// say almost no heartbeat run is open, the planner answered "has this issue an open heartbeat
/// run?" by reading all open heartbeat runs once — through the whole `heartbeat_runs` table,
/// every batch — and comparing each candidate with each of them (0.8 s of a batch's 0.8 s at
/// a million past fires; the pages it read pushed a minute burst's out of the cache).
///
/// The settings of [`super::begin_by_key`] and these, sent with the `BEGIN` in one round trip.
async fn begin_purge(
    pool: &sqlx::PgPool,
) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
    Ok(pool
        .begin_with(
            "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; \
             SET LOCAL enable_material = off; SET LOCAL enable_hashjoin = off; \
             SET LOCAL enable_mergejoin = off",
        )
        .await?)
}

impl PgStore {
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
        let runs = self.purge_unlinked_runs(cutoff, keys_until, limit).await?;
        report.runs += runs;
        report.more |= fills(runs, limit);
        // The kinds nothing else names, in one transaction.
        let mut tx = begin_purge(&self.pool).await?;
        let activity = sqlx::query!(
            "DELETE FROM activity_log WHERE id IN (
                 SELECT a.id FROM companies c
                 CROSS JOIN LATERAL (
                     SELECT id FROM activity_log
                     WHERE company_id = c.id AND created_at < $1
                     ORDER BY created_at, id LIMIT $2) a
                 LIMIT $2)",
            cutoff,
            limit,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let notifications = sqlx::query!(
            "DELETE FROM notifications WHERE id IN (
                 SELECT n.id FROM notification_channels ch
                 CROSS JOIN LATERAL (
                     SELECT id FROM notifications
                     WHERE channel_id = ch.id AND created_at < $1 AND status <> 'pending'
                     ORDER BY created_at, id LIMIT $2) n
                 LIMIT $2)",
            cutoff,
            limit,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let jobs = sqlx::query!(
            "DELETE FROM jobs WHERE id IN (
                 SELECT id FROM jobs WHERE state = 'dead' AND updated_at < $1
                 ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            cutoff,
            limit,
        )
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

    /// Closed issues old enough, with their events, heartbeat runs and linked runs: one
    /// transaction, the issues locked (a status change waits, or is waited for).
    async fn purge_issues(
        &self,
        cutoff: DateTime<Utc>,
        keys_until: DateTime<Utc>,
        limit: i64,
        report: &mut PurgeReport,
    ) -> StoreResult<()> {
        let mut tx = begin_purge(&self.pool).await?;
        let ids: Vec<Uuid> = sqlx::query_scalar!(
            "SELECT i.id FROM issues i
             WHERE i.status IN ('done', 'cancelled') AND i.updated_at < $1
               AND NOT EXISTS (SELECT 1 FROM issues c
                               WHERE c.company_id = i.company_id AND c.parent_issue_id = i.id)
               AND NOT EXISTS (SELECT 1 FROM routines r
                               WHERE r.company_id = i.company_id AND r.parent_issue_id = i.id)
               AND NOT EXISTS (SELECT 1 FROM heartbeat_runs h
                               WHERE h.issue_id = i.id AND h.status IN ('queued', 'running'))
               AND NOT EXISTS (
                   SELECT 1 FROM run_issue_links l JOIN routine_runs r ON r.id = l.run_id
                   WHERE l.issue_id = i.id
                     AND (r.completed_at IS NULL OR r.triggered_at >= $2
                          OR NOT EXISTS (
                              SELECT 1 FROM routine_runs n
                              WHERE n.routine_id = r.routine_id
                                AND (n.triggered_at, n.id) > (r.triggered_at, r.id))))
             ORDER BY i.updated_at LIMIT $3
             FOR UPDATE OF i SKIP LOCKED",
            cutoff,
            keys_until,
            limit,
        )
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(());
        }
        report.issue_events +=
            sqlx::query!("DELETE FROM issue_events WHERE issue_id = ANY($1)", &ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        report.heartbeat_runs +=
            sqlx::query!("DELETE FROM heartbeat_runs WHERE issue_id = ANY($1)", &ids)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        report.runs += sqlx::query!(
            "WITH linked AS (DELETE FROM run_issue_links WHERE issue_id = ANY($1) RETURNING run_id)
             DELETE FROM routine_runs WHERE id IN (SELECT run_id FROM linked)",
            &ids
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let issues = sqlx::query!("DELETE FROM issues WHERE id = ANY($1)", &ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        report.issues = issues;
        report.more |= fills(issues, limit);
        Ok(())
    }

    /// Finished runs that never had an issue, old enough and not their routine's newest, oldest
    /// first (`unlinked_runs`: no index of runs names their issue, so that the dispatch can
    /// update a run in place).
    async fn purge_unlinked_runs(
        &self,
        cutoff: DateTime<Utc>,
        keys_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<u64> {
        let mut tx = begin_purge(&self.pool).await?;
        let runs = sqlx::query!(
            "WITH gone AS (
                 DELETE FROM unlinked_runs WHERE run_id IN (
                     SELECT r.id FROM unlinked_runs u JOIN routine_runs r ON r.id = u.run_id
                     WHERE u.completed_at < $1 AND r.triggered_at < $2
                       AND EXISTS (SELECT 1 FROM routine_runs n
                                   WHERE n.routine_id = r.routine_id
                                     AND (n.triggered_at, n.id) > (r.triggered_at, r.id))
                     ORDER BY u.completed_at LIMIT $3
                     FOR UPDATE OF r SKIP LOCKED)
                 RETURNING run_id)
             DELETE FROM routine_runs WHERE id IN (SELECT run_id FROM gone)",
            cutoff,
            keys_until,
            limit,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(runs)
    }

    /// See [`crate::store::Storage::jobs_waiting`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn jobs_waiting(&self) -> StoreResult<bool> {
        Ok(sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND run_at <= $1) AS "waiting!""#,
            self.now()
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
