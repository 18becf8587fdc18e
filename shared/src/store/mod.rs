//! Storage: the [`Storage`] trait every backend implements, the [`Store`] handle the roles
//! hold, and the Postgres backend ([`PgStore`]): every domain operation the roles perform,
//! each one transaction, each mutation recorded in the company's activity log in the same
//! transaction. The area modules hold each area's request types and its Postgres statements.
//!
//! Invariants live in the schema (composite foreign keys scoped by company, unique keys for
//! fires and idempotency, checked enumerations); this module turns their violations into
//! [`StoreError`]s the API can answer with.

mod activity;
mod agents;
mod auth;
mod catalog;
mod dispatch;
mod fires;
mod heartbeats;
mod intake;
mod issues;
mod jobs;
mod routines;
mod runs;
pub mod sqlite;
mod storage;
mod triggers;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use self::{
    activity::NewActivity,
    agents::{AgentChanges, CreatedAgent, IssuedKey, UpdatedAgent, WakeupSpec},
    auth::{BoardToken, BoardTokenInfo},
    dispatch::{DELIVER_WAKEUP, WAKEUP_MAX_ATTEMPTS, WakeupDelivery},
    fires::{Deposed, Leadership, TRIGGERS_CHANNEL},
    issues::{IssueFilter, NewIssue},
    jobs::JOBS_CHANNEL,
    routines::{NewRoutine, RoutineChanges, RoutineFilter},
    runs::{
        Accepted, CallSignature, DISPATCH_MAX_ATTEMPTS, DISPATCH_RUN, NewRun, TRIGGER_CHANGED,
        WebhookTrigger, replayed,
    },
    storage::{Dispatched, Storage, Store, Subscription, Taken, Topic},
    triggers::{
        MAX_TRIGGERS_PER_ROUTINE, NewTrigger, NewTriggerKind, SecretMaterial, TriggerChanges,
        TriggerInRoutine, WEBHOOK_SECRET_PREFIX, webhook_url,
    },
};
pub use crate::engine::fires::FireReport;
use crate::{
    clock::SharedClock,
    crypto::{SecretBox, SecretKey, TokenHasher},
};

/// Why a store operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed row does not exist.
    #[error("not found")]
    NotFound,
    /// A referenced row does not exist in the company; `field` is the request field naming it.
    #[error("{field} does not name a resource of this company")]
    InvalidReference {
        /// The API field (camelCase) holding the reference.
        field: &'static str,
    },
    /// The operation conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// Well-formed but semantically refused (an idempotency key reused with another payload).
    #[error("{message}")]
    Unprocessable {
        /// Machine-readable code.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// Maps a foreign-key violation on one of the reference columns to the request field it came
    /// from; any other error passes through.
    fn from_reference_violation(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error
            && db.is_foreign_key_violation()
            && let Some(field) = db.constraint().and_then(reference_field)
        {
            return Self::InvalidReference { field };
        }
        Self::Database(error)
    }
}

/// The request field behind a composite foreign key named `<table>_company_id_<column>_fkey`.
fn reference_field(constraint: &str) -> Option<&'static str> {
    const FIELDS: &[(&str, &str)] = &[
        ("_company_id_project_id_fkey", "projectId"),
        ("_company_id_goal_id_fkey", "goalId"),
        ("_company_id_parent_issue_id_fkey", "parentIssueId"),
        ("_company_id_assignee_agent_id_fkey", "assigneeAgentId"),
        ("_company_id_routine_id_fkey", "routineId"),
        ("_company_id_trigger_id_fkey", "triggerId"),
    ];
    FIELDS
        .iter()
        .find(|(suffix, _)| constraint.ends_with(suffix))
        .map(|(_, field)| *field)
}

/// Result type of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// The Postgres backend (cheap to clone).
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    clock: SharedClock,
    hasher: Arc<TokenHasher>,
    secrets: Arc<SecretBox>,
    public_url: Arc<str>,
    /// How late a schedule run may be dispatched before it counts as missed.
    misfire_grace: chrono::TimeDelta,
    announcer: Arc<Announcer>,
    intake: Arc<intake::Intake>,
}

/// How late a schedule fire may be handled before it is missed, unless configured
/// (`NEXUS_MISFIRE_GRACE_SECS`).
pub const DEFAULT_MISFIRE_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Sends the job announcements of concurrent acceptances as one `NOTIFY`: each acceptance
/// wakes the announcer (a permit, so wake-ups during a `NOTIFY` are kept, and many become
/// one), which sends a `NOTIFY` on its own connection. Started on the first announcement, in
/// the caller's runtime.
#[derive(Debug, Default)]
struct Announcer {
    wake: Arc<tokio::sync::Notify>,
    started: std::sync::OnceLock<()>,
}

impl Announcer {
    fn announce(&self, pool: &PgPool) {
        self.started.get_or_init(|| {
            let (wake, pool) = (Arc::clone(&self.wake), pool.clone());
            tokio::spawn(async move {
                loop {
                    wake.notified().await;
                    let sent = async { jobs::notify(&mut *pool.acquire().await?).await };
                    if let Err(error) = sent.await {
                        tracing::warn!(%error, "could not notify workers; they will poll the jobs");
                    }
                }
            });
        });
        self.wake.notify_one();
    }
}

impl PgStore {
    /// A store over `pool`, reading time from `clock` and keys derived from `key`.
    #[must_use]
    pub fn new(pool: PgPool, clock: SharedClock, key: &SecretKey) -> Self {
        Self {
            pool,
            clock,
            hasher: Arc::new(TokenHasher::new(key)),
            secrets: Arc::new(SecretBox::new(key)),
            public_url: Arc::from("http://127.0.0.1:8080"),
            misfire_grace: DEFAULT_MISFIRE_GRACE,
            announcer: Arc::new(Announcer::default()),
            intake: Arc::new(intake::Intake::default()),
        }
    }

    /// Sets the base of webhook URLs (`NEXUS_PUBLIC_URL`).
    #[must_use]
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        self.public_url = Arc::from(public_url.trim_end_matches('/'));
        self
    }

    /// Sets how late a schedule run may be dispatched before it counts as missed
    /// (`NEXUS_MISFIRE_GRACE_SECS`).
    #[must_use]
    pub fn with_misfire_grace(mut self, grace: std::time::Duration) -> Self {
        self.misfire_grace = chrono::TimeDelta::from_std(grace).unwrap_or(self.misfire_grace);
        self
    }

    /// The connection pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The secret box encrypting stored secrets.
    #[must_use]
    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// Wakes idle workers: jobs were committed. Returns at once; the `NOTIFY` follows, shared
    /// with concurrent announcements (a failure is logged: workers also poll).
    pub(crate) fn announce_jobs(&self) {
        self.announcer.announce(&self.pool);
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query_scalar!("SELECT 1 AS one")
            .fetch_one(&self.pool)
            .await
            .is_ok()
    }

    /// Decrypts a secret sealed for the row `owner`.
    fn open_secret(&self, owner: Uuid, sealed: &[u8]) -> StoreResult<String> {
        open_secret(&self.secrets, owner, sealed)
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// Decrypts a secret sealed for the row `owner`.
fn open_secret(secrets: &SecretBox, owner: Uuid, sealed: &[u8]) -> StoreResult<String> {
    let undecodable =
        |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Database(sqlx::Error::Decode(e));
    let bytes = secrets
        .open(owner.as_bytes(), sealed)
        .map_err(|e| undecodable(Box::new(e)))?;
    String::from_utf8(bytes).map_err(|e| undecodable(Box::new(e)))
}

/// A new time-ordered id.
fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// Begins a transaction planned by key: sequential scans are ruled out for it (`SET LOCAL`,
/// sent with the `BEGIN`, so no extra round trip).
///
/// The engine's batch statements — a fire pass, a dispatch — reach every row they touch by its
/// key, hundreds of ids at a time. Given that many ids, the planner prefers reading the whole
/// table into a hash over probing its primary key once per id; but the tables they join grow
/// with every fire (an updated row leaves its old version until vacuum, and runs are history).
/// Ruling the scans out cut Postgres's CPU per minute-burst boundary by about a fifth
/// (docs/benchmarks.md, § 1, "Batches planned by key").
async fn begin_by_key(pool: &PgPool) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
    Ok(pool
        .begin_with("BEGIN; SET LOCAL enable_seqscan = off")
        .await?)
}

/// Locks nothing, checks that a company exists.
async fn company_exists(conn: &mut PgConnection, company_id: Uuid) -> StoreResult<bool> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM companies WHERE id = $1) AS "exists!""#,
        company_id
    )
    .fetch_one(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_constraints_map_to_request_fields() {
        assert_eq!(
            reference_field("issues_company_id_project_id_fkey"),
            Some("projectId")
        );
        assert_eq!(
            reference_field("routines_company_id_assignee_agent_id_fkey"),
            Some("assigneeAgentId")
        );
        assert_eq!(reference_field("issues_company_id_fkey"), None);
    }
}
