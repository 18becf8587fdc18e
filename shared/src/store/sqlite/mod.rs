//! The embedded backend: SQLite in WAL mode, in one file of the data directory, for the
//! single-node mode (`nexus serve` without a database URL).
//!
//! One process owns the file, and every operation runs on one connection, so transactions are
//! serialised: where the Postgres backend locks rows (`FOR UPDATE`, `SKIP LOCKED`), this one
//! needs no locks, and the unique keys (one run per schedule fire, one per idempotency key) are
//! enforced by the same constraints. Announcements to the scheduler and workers are in-process
//! channels. Decisions (fires and catch-up, concurrency policies, rendering, refusals) are the
//! engine's; only the statements differ from the Postgres backend's, file by file.
//!
//! Statements are checked by the conformance suite rather than at compile time: sqlx checks
//! queries against one database per crate, and that database is Postgres.

#[macro_use]
mod rows;

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
mod issues;
mod jobs;
mod notifications;
mod retention;
mod routines;
mod runs;
mod schedules;
mod system;
mod triggers;
mod upkeep;

use std::{path::Path, str::FromStr as _, sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::{
    SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use tokio::sync::broadcast;
use uuid::Uuid;

use self::activity::record;
use super::{StoreError, StoreResult, Subscription, Topic};
use crate::{
    clock::SharedClock,
    crypto::{SecretBox, SecretKey, TokenHasher},
};

/// The migrations of `migrations-sqlite/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations-sqlite");

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "nexus.db";

/// The file whose exclusive lock marks a data directory as in use by a process.
pub const LOCK_FILE: &str = "nexus.lock";

/// The SQLite backend (cheap to clone).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    clock: SharedClock,
    hasher: Arc<TokenHasher>,
    secrets: Arc<SecretBox>,
    public_url: Arc<str>,
    /// How late a schedule run may be dispatched before it counts as missed.
    misfire_grace: chrono::TimeDelta,
    jobs: broadcast::Sender<()>,
    triggers: broadcast::Sender<()>,
    /// Held (locked) for as long as the store lives.
    _lock: Arc<std::fs::File>,
}

/// Gives `path` the permission bits `mode` (Unix); a failure (a directory owned by someone
/// else, say) is logged, not fatal.
fn restrict(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), %error, "could not restrict the permissions");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// Creates `path` empty with mode 0600 if it does not exist yet.
fn create_private(path: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::File::options();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map(drop)
        .with_context(|| format!("creating {}", path.display()))
}

impl SqliteStore {
    /// Opens (creating it if needed) the database in `data_dir` and applies pending
    /// migrations. The directory is locked for the life of the store: a second process (or
    /// store) on it is refused, since leadership and wake-ups are in-process.
    ///
    /// # Errors
    /// The directory or the file cannot be created or opened, another process uses the
    /// directory, or a migration failed.
    pub async fn open(
        data_dir: &Path,
        clock: SharedClock,
        key: &SecretKey,
        public_url: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        // The data are the owner's alone: the directory 0700, the database 0600 (created so
        // before SQLite opens it; its journal files take the database's mode).
        restrict(data_dir, 0o700);
        create_private(&data_dir.join(DATABASE_FILE))?;
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join(LOCK_FILE))
            .with_context(|| format!("opening {}", data_dir.join(LOCK_FILE).display()))?;
        if lock.try_lock().is_err() {
            anyhow::bail!(
                "{} is in use by another nexus process; the embedded database serves one process",
                data_dir.display()
            );
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(data_dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // One connection: transactions are serialised in the process, so none ever waits on
        // SQLite's file lock or fails to upgrade a read to a write.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .with_context(|| format!("opening {}", data_dir.join(DATABASE_FILE).display()))?;
        MIGRATOR
            .run(&pool)
            .await
            .context("running the embedded database's migrations")?;
        for file in [DATABASE_FILE, "nexus.db-wal", "nexus.db-shm", LOCK_FILE] {
            let path = data_dir.join(file);
            if path.exists() {
                restrict(&path, 0o600);
            }
        }
        let (jobs, _) = broadcast::channel(16);
        let (triggers, _) = broadcast::channel(16);
        Ok(Self {
            pool,
            clock,
            hasher: Arc::new(TokenHasher::new(key)),
            secrets: Arc::new(SecretBox::new(key)),
            public_url: Arc::from(public_url.trim_end_matches('/')),
            misfire_grace: super::DEFAULT_MISFIRE_GRACE,
            jobs,
            triggers,
            _lock: Arc::new(lock),
        })
    }

    /// Sets how late a schedule run may be dispatched before it counts as missed
    /// (`NEXUS_MISFIRE_GRACE_SECS`).
    #[must_use]
    pub fn with_misfire_grace(mut self, grace: std::time::Duration) -> Self {
        self.misfire_grace = chrono::TimeDelta::from_std(grace).unwrap_or(self.misfire_grace);
        self
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Listens to in-process announcements on `topic`.
    ///
    /// # Errors
    /// Never; the signature is the trait's.
    #[allow(clippy::unused_async)]
    pub async fn subscribe(&self, topic: Topic) -> StoreResult<Box<dyn Subscription>> {
        let sender = match topic {
            Topic::Jobs => &self.jobs,
            Topic::Triggers => &self.triggers,
        };
        Ok(Box::new(Announcements(sender.subscribe())))
    }

    /// Wakes idle workers (call after the commit that made jobs due).
    fn announce_jobs(&self) {
        drop(self.jobs.send(()));
    }

    /// Wakes a sleeping scheduler (call after the commit that changed schedule triggers).
    fn announce_triggers(&self) {
        drop(self.triggers.send(()));
    }
}

struct Announcements(broadcast::Receiver<()>);

#[async_trait::async_trait]
impl Subscription for Announcements {
    async fn recv(&mut self) -> StoreResult<()> {
        match self.0.recv().await {
            // Missed announcements are one announcement.
            Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
            Err(broadcast::error::RecvError::Closed) => {
                Err(StoreError::Database(sqlx::Error::PoolClosed))
            }
        }
    }
}

/// Whether a company exists.
async fn company_exists(conn: &mut SqliteConnection, company_id: Uuid) -> StoreResult<bool> {
    Ok(
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM companies WHERE id = ?1)")
            .bind(company_id)
            .fetch_one(conn)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SystemClock;

    #[tokio::test]
    async fn a_data_directory_serves_one_store_at_a_time() {
        let dir = std::env::temp_dir().join(format!("nexus-lock-{}", Uuid::new_v4().simple()));
        let key = SecretKey::generate();
        let open = || SqliteStore::open(&dir, Arc::new(SystemClock), &key, "http://x");
        let first = open().await.expect("the first store opens");
        let refused = open().await.expect_err("the directory is in use");
        assert!(refused.to_string().contains("in use"), "{refused}");
        drop(first);
        let again = open().await.expect("free again once the first is gone");
        assert!(again.ping().await);
        drop(again);
        drop(std::fs::remove_dir_all(&dir));
    }
}

#[cfg(all(test, unix))]
mod permission_tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[tokio::test]
    async fn the_data_directory_and_database_files_are_the_owners_alone() {
        let dir =
            std::env::temp_dir().join(format!("nexus-perm-{}", uuid::Uuid::new_v4().simple()));
        let store = SqliteStore::open(
            &dir,
            std::sync::Arc::new(crate::SystemClock),
            &SecretKey::generate(),
            "http://x",
        )
        .await
        .expect("store");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for file in [DATABASE_FILE, "nexus.db-wal", "nexus.db-shm", LOCK_FILE] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
        drop(store);
        drop(std::fs::remove_dir_all(dir));
    }
}
