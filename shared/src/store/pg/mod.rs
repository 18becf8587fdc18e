//! The Postgres backend: production storage, shared by every replica. Statements are checked
//! against the schema at compile time (`sqlx::query!`, offline data in `.sqlx/`); row locks
//! (`FOR UPDATE`, `SKIP LOCKED`) order concurrent operations, and `LISTEN`/`NOTIFY` wakes
//! sleeping schedulers and workers.

mod activity;
mod agents;
mod auth;
mod backfill;
mod catalog;
mod dispatch;
mod events;
mod fires;
mod health;
mod heartbeats;
mod intake;
mod issues;
mod jobs;
mod notifications;
mod repeats;
mod retention;
mod routines;
mod runs;
mod schedules;
mod system;
mod triggers;
mod upkeep;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use self::{fires::TRIGGERS_CHANNEL, jobs::JOBS_CHANNEL};
use super::{StoreError, StoreResult};
use crate::{
    clock::SharedClock,
    crypto::{SecretBox, SecretKey, TokenHasher},
};

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
        super::open_secret(&self.secrets, owner, sealed)
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
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
