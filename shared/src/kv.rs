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

/// A token bucket per key, kept in Redis so every API replica shares it. Time comes from the
/// Redis server (`TIME`), so replicas with skewed clocks agree.
const TOKEN_BUCKET: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait";

/// Outcome of a rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Too many calls; retry after this many milliseconds.
    Limited {
        /// Milliseconds until a token is available.
        retry_after_ms: u64,
    },
}

impl Redis {
    /// Takes one token from the bucket `name` (`rate` per second, at most `burst` stored).
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn take_token(
        &self,
        name: &str,
        rate: u32,
        burst: u32,
    ) -> redis::RedisResult<RateDecision> {
        let mut conn = self.connection();
        let wait: u64 = redis::Script::new(TOKEN_BUCKET)
            .key(self.key(name))
            .arg(rate)
            .arg(burst)
            .invoke_async(&mut conn)
            .await?;
        Ok(if wait == 0 {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after_ms: wait,
            }
        })
    }

    /// Remembers `name` for `ttl` unless it is already remembered; `true` when it was new.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn remember(&self, name: &str, ttl: Duration) -> redis::RedisResult<bool> {
        let mut conn = self.connection();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(name))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Forgets `name`.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn forget(&self, name: &str) -> redis::RedisResult<()> {
        let mut conn = self.connection();
        redis::cmd("DEL")
            .arg(self.key(name))
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
    }
}
