//! Redis access. Every key goes through [`Redis::key`], which puts the deployment's prefix
//! (`NEXUS_REDIS_PREFIX`) in front, so several deployments or test runs can share one server.

use std::time::Duration;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A lazily connecting, self-reconnecting Redis handle with a key prefix.
#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A handle to `url`. Nothing is connected until the first command, so a process starts
    /// while Redis is down and recovers when it returns.
    ///
    /// # Errors
    /// `url` is not a valid Redis URL.
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(url).context("NEXUS_REDIS_URL is not a valid Redis URL")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .context("creating the Redis connection manager")?;
        Ok(Self {
            manager,
            prefix: prefix.trim_end_matches(':').to_owned(),
        })
    }

    /// The full key for `name`: `<prefix>:<name>`.
    #[must_use]
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// A connection to run commands on (cheap to clone).
    #[must_use]
    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// Whether Redis answers `PING` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let mut conn = self.connection();
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(timeout, ping.query_async::<String>(&mut conn)).await;
        matches!(answer, Ok(Ok(_)))
    }
}
