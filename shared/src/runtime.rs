//! Start-up and shutdown shared by every role: connecting to Postgres and Redis, running
//! migrations, accepting the bootstrap board token, and waiting for SIGTERM/SIGINT.

use anyhow::Context as _;

use crate::{
    Config, Store,
    clock::SharedClock,
    coord::Coordination,
    crypto::SecretKey,
    db,
    kv::Redis,
    store::{PgStore, sqlite::SqliteStore},
};

/// The memory allocator of every binary that links this crate (all the roles, `nexus`, the
/// benchmarks and the tests): mimalloc. Handling a request allocates and frees many small
/// buffers on the runtime's threads; with the system allocator that was about 15 % of the API
/// process's CPU on the webhook path (docs/benchmarks.md, § 2).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The connections and services a role runs on.
#[derive(Clone, Debug)]
pub struct Resources {
    /// The configuration.
    pub config: Config,
    /// The store.
    pub store: Store,
    /// Rate limits and leadership: Redis, or this process without a Redis URL.
    pub coordination: Coordination,
}

impl Resources {
    /// Connects to Postgres — or, without a database URL, opens the embedded SQLite database in
    /// `NEXUS_DATA_DIR` — and to Redis when configured; runs pending migrations (on Postgres
    /// unless `NEXUS_AUTO_MIGRATE` is `false`; the embedded database always) and registers
    /// `NEXUS_BOOTSTRAP_BOARD_TOKEN`.
    ///
    /// # Errors
    /// An invalid URL, Postgres is unreachable while migrations must run, or the embedded
    /// database cannot be opened.
    pub async fn connect(
        config: Config,
        key: &SecretKey,
        clock: SharedClock,
    ) -> anyhow::Result<Self> {
        let store = match &config.database_url {
            Some(url) => {
                let pool =
                    db::pool_with_timeouts(url, config.db_max_connections, config.db_timeouts)?;
                if config.auto_migrate {
                    db::migrate(&pool).await?;
                }
                Store::from(
                    PgStore::new(pool, clock, key)
                        .with_public_url(&config.public_url)
                        .with_misfire_grace(config.misfire_grace),
                )
            }
            None => {
                let store = SqliteStore::open(&config.data_dir, clock, key, &config.public_url)
                    .await?
                    .with_misfire_grace(config.misfire_grace);
                tracing::info!(
                    path = %config.data_dir.join(crate::store::sqlite::DATABASE_FILE).display(),
                    "no database URL: using the embedded database"
                );
                Store::new(store)
            }
        };
        if let Some(token) = &config.bootstrap_board_token {
            store
                .ensure_board_token(token, "bootstrap")
                .await
                .context("registering NEXUS_BOOTSTRAP_BOARD_TOKEN")?;
        }
        let coordination = match &config.redis_url {
            Some(url) => Coordination::Redis(Redis::new(
                url,
                &config.redis_prefix,
                store.clock().clone(),
            )?),
            None => Coordination::local(&store),
        };
        Ok(Self {
            config,
            store,
            coordination,
        })
    }
}

impl Resources {
    /// The resources of a separate role binary: `NEXUS_SECRET_KEY` and `NEXUS_DATABASE_URL` are
    /// required (every replica must share them), and so is `NEXUS_REDIS_URL` for the roles that coordinate through it
    /// (`needs_redis`: the API and the scheduler); time is the system clock.
    ///
    /// # Errors
    /// Missing secret key or Redis URL, an invalid URL, or Postgres is unreachable while
    /// migrations must run.
    pub async fn for_role(config: Config, needs_redis: bool) -> anyhow::Result<Self> {
        let key = config.require_secret_key()?.clone();
        config.require_database_url()?;
        if needs_redis {
            config.require_redis_url()?;
        }
        Self::connect(config, &key, std::sync::Arc::new(crate::SystemClock)).await
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}
