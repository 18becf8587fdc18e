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
/// Redis server (`TIME`), so replicas with skewed clocks agree. With a second key, a call that
/// got its token also remembers that key for `ARGV[3]` ms unless it is already remembered (the
/// replay memory), in the same round trip. Returns `{wait_ms, remembered}`: `remembered` is 1
/// (new), 0 (already remembered) or -1 (not asked, or limited).
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
if wait > 0 or #KEYS < 2 then
  return {wait, -1}
end
if redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[3]) then
  return {0, 1}
end
return {0, 0}";

/// Outcome of [`Redis::admit`]: a rate-limit check and, for a call that passed it, the replay
/// check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Too many calls; retry after this many milliseconds (nothing was remembered).
    Limited {
        /// Milliseconds until a token is available.
        retry_after_ms: u64,
    },
    /// The name to remember was already remembered: a replay.
    Replayed,
    /// Go ahead (the name, if any, is now remembered).
    Admitted,
}

impl Redis {
    /// Takes one token from the bucket `bucket` and, when that succeeds and `remember` is
    /// given, remembers its name for its time unless it is already remembered — one round
    /// trip.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn admit(
        &self,
        bucket: &str,
        rate: u32,
        burst: u32,
        remember: Option<(&str, Duration)>,
    ) -> redis::RedisResult<Admission> {
        let mut conn = self.connection();
        static SCRIPT: std::sync::LazyLock<redis::Script> =
            std::sync::LazyLock::new(|| redis::Script::new(TOKEN_BUCKET));
        let mut invocation = SCRIPT.key(self.key(bucket));
        invocation.arg(rate).arg(burst);
        if let Some((name, ttl)) = remember {
            invocation
                .key(self.key(name))
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        let (wait, remembered): (u64, i64) = invocation.invoke_async(&mut conn).await?;
        Ok(match (wait, remembered) {
            (0, 0) => Admission::Replayed,
            (0, _) => Admission::Admitted,
            (wait, _) => Admission::Limited {
                retry_after_ms: wait,
            },
        })
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
