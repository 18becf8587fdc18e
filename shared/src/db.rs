//! Postgres connections and migrations.

use std::{str::FromStr as _, time::Duration};

use anyhow::Context as _;
use sqlx::{
    ConnectOptions as _, Connection as _, PgPool,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

/// The migrations of `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pooled connection idle for at least this long is checked (a round trip to the server)
/// before it is handed out; one used more recently is handed out as it is.
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Opens a pool to `url` with at most `max_connections` connections.
///
/// Connections are opened lazily and re-opened after failures, so a process started while
/// Postgres is down comes up (unready) and recovers when the database returns. A connection
/// that sat idle for [`CHECK_IDLE_AFTER`] is checked before use and replaced if the server
/// closed it; checking every connection on every use would add a round trip to each
/// statement (docs/operations.md, "Failure behaviour").
///
/// # Errors
/// `url` is not a valid Postgres URL.
pub fn pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    pool_checking_after(url, max_connections, CHECK_IDLE_AFTER)
}

/// How long a statement may run, and wait for a lock, before Postgres cancels it (on every
/// connection of a pool; `NEXUS_DB_STATEMENT_TIMEOUT_MS`, `NEXUS_DB_LOCK_TIMEOUT_MS`). A request
/// stuck behind a lock or on a slow statement is then answered 503 with `Retry-After` instead of
/// holding its connection and its client until the request deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTimeouts {
    /// `statement_timeout`.
    pub statement: Duration,
    /// `lock_timeout`.
    pub lock: Duration,
}

impl Default for DbTimeouts {
    fn default() -> Self {
        Self {
            statement: Duration::from_secs(30),
            lock: Duration::from_secs(10),
        }
    }
}

/// [`pool`] with `timeouts` instead of the defaults.
///
/// # Errors
/// `url` is not a valid Postgres URL.
pub fn pool_with_timeouts(
    url: &str,
    max_connections: u32,
    timeouts: DbTimeouts,
) -> anyhow::Result<PgPool> {
    pool_with(url, max_connections, CHECK_IDLE_AFTER, timeouts)
}

/// [`pool`], checking connections idle for at least `check_after` before use.
///
/// # Errors
/// `url` is not a valid Postgres URL.
pub fn pool_checking_after(
    url: &str,
    max_connections: u32,
    check_after: Duration,
) -> anyhow::Result<PgPool> {
    pool_with(url, max_connections, check_after, DbTimeouts::default())
}

fn pool_with(
    url: &str,
    max_connections: u32,
    check_after: Duration,
    timeouts: DbTimeouts,
) -> anyhow::Result<PgPool> {
    let millis = |d: Duration| d.as_millis().to_string();
    let options = PgConnectOptions::from_str(url)
        .context("NEXUS_DATABASE_URL is not a valid Postgres URL")?
        .options([
            ("statement_timeout", millis(timeouts.statement)),
            ("lock_timeout", millis(timeouts.lock)),
        ])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                // A failed check discards the connection and the pool tries the next one.
                if meta.idle_for >= check_after {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// Runs pending migrations. Safe to call from several processes at once: sqlx serialises
/// migrators with an advisory lock.
///
/// # Errors
/// The database is unreachable or a migration failed.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("running database migrations")?;
    Ok(())
}

/// Creates the database named in `url` when it does not exist yet, connecting to the server's
/// `postgres` database to do so. Used by the single-process mode so a fresh machine with a
/// Postgres server needs no set-up.
///
/// # Errors
/// The server is unreachable or refuses the creation.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)
        .context("NEXUS_DATABASE_URL is not a valid Postgres URL")?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .context("connecting to the Postgres server")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it at the same moment.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    admin.close().await.ok();
    Ok(())
}
