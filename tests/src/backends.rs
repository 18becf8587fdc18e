//! The storage backends the conformance suite runs against: a fresh SQLite database in a
//! temporary directory, and a fresh Postgres database. Postgres is optional on a developer's
//! machine (its tests report themselves skipped when the server does not answer) and required
//! under CI (`CI` set): there an unreachable server fails the test.

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use nexus_shared::{
    ManualClock, Store,
    clock::SharedClock,
    crypto::SecretKey,
    store::{PgStore, sqlite::SqliteStore},
};

use crate::TestDb;

/// The public URL the conformance stores build webhook URLs on.
pub const PUBLIC_URL: &str = "http://nexus.test";

/// A manual clock at `start` (RFC 3339).
///
/// # Panics
/// When `start` is not RFC 3339.
#[must_use]
pub fn clock_at(start: &str) -> Arc<ManualClock> {
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339(start)
        .expect("RFC 3339")
        .to_utc();
    ManualClock::new(start)
}

/// A SQLite store in its own temporary directory, removed on drop.
#[derive(Debug)]
pub struct SqliteBackend {
    /// The store.
    pub store: SqliteStore,
    /// Its data directory.
    pub dir: PathBuf,
}

impl SqliteBackend {
    /// A fresh store reading time from `clock`.
    ///
    /// # Panics
    /// When the temporary directory or the database cannot be created.
    pub async fn new(clock: SharedClock) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "nexus-conformance-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let store = SqliteStore::open(&dir, clock, &SecretKey::generate(), PUBLIC_URL)
            .await
            .expect("open the SQLite store");
        Self { store, dir }
    }
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        drop(std::fs::remove_dir_all(&self.dir));
    }
}

/// A Postgres store on its own database.
#[derive(Debug)]
pub struct PostgresBackend {
    /// The store.
    pub store: Store,
    /// Its database.
    pub db: TestDb,
}

impl PostgresBackend {
    /// A fresh store reading time from `clock`, or `None` when Postgres does not answer and
    /// this is not CI.
    ///
    /// # Panics
    /// Under CI, when Postgres does not answer.
    pub async fn new(clock: SharedClock) -> Option<Self> {
        if !postgres_answers().await {
            skip_without(
                "Postgres does not answer (NEXUS_TEST_DATABASE_URL)",
                "the Postgres conformance tests",
            );
            skipped(SERVERS_MISSING);
            return None;
        }
        let db = TestDb::create().await;
        let store = Store::new(
            PgStore::new(db.pool.clone(), clock, &SecretKey::generate())
                .with_public_url(PUBLIC_URL),
        );
        Some(Self { store, db })
    }
}

/// Writes a line to standard error past the test harness's output capture, once per message
/// and test binary, so a skip is visible in a passing run.
pub(crate) fn notice(message: &str) {
    use std::{io::Write as _, sync::Mutex};
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if said.iter().any(|m| m == message) {
        return;
    }
    said.push(message.to_owned());
    drop(writeln!(std::io::stderr(), "note: {message}"));
}

/// Why a test that needs Postgres and Redis did not run.
pub const SERVERS_MISSING: &str = "servers missing";

/// Why a test that reads Postgres rows did not run on the embedded backend.
pub const POSTGRES_ROWS: &str = "reads Postgres rows";

/// Reports, past the harness's capture, that the running test returned without checking
/// anything: one line `skipped test: NAME (REASON)` per test, which `.ci/run` looks for (no
/// test may skip on Postgres; on the embedded backend only the tests that read Postgres rows,
/// which ran on Postgres just before).
pub fn skipped(reason: &str) {
    use std::io::Write as _;
    let thread = std::thread::current();
    let line = format!(
        "skipped test: {} ({reason})\n",
        thread.name().unwrap_or("unnamed")
    );
    drop(std::io::stderr().write_all(line.as_bytes()));
}

/// Reports that `skipped` cannot run because `missing`: under CI (`CI` set) a failure, since CI
/// must never skip; elsewhere a note past the harness's capture.
///
/// # Panics
/// Under CI.
pub(crate) fn skip_without(missing: &str, skipped: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set, so {skipped} must run, but {missing}"
    );
    notice(&format!(
        "{missing}: {skipped} are skipped (they run where it answers, and always under CI)"
    ));
}

/// Whether Postgres answers at `NEXUS_TEST_DATABASE_URL` (checked once per test binary).
pub(crate) async fn postgres_answers() -> bool {
    static ANSWERS: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *ANSWERS.get_or_init(connects).await
}

async fn connects() -> bool {
    use sqlx::Connection as _;
    let url = crate::db::admin_url();
    matches!(
        tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(&url)).await,
        Ok(Ok(_))
    )
}

/// Declares conformance tests: each body runs once against SQLite (module `sqlite`) and once
/// against Postgres (module `postgres`), with `$store` bound to the backend's store and
/// `$clock` to its manual clock (starting at `$start`).
#[macro_export]
macro_rules! conformance {
    ($(
        $(#[$meta:meta])*
        async fn $name:ident($store:ident, $clock:ident) $body:block
    )*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test]
                async fn $name() {
                    let $clock = $crate::backends::clock_at(super::START);
                    let backend = $crate::backends::SqliteBackend::new($clock.clone()).await;
                    let $store = &backend.store;
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[tokio::test]
                async fn $name() {
                    let $clock = $crate::backends::clock_at(super::START);
                    let Some(backend) = $crate::backends::PostgresBackend::new($clock.clone()).await else {
                        return;
                    };
                    let $store = &*backend.store;
                    $body
                }
            )*
        }
    };
}
