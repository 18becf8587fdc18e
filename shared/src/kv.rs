//! Redis access. Every key goes through [`Redis::key`], which puts the deployment's prefix
//! (`NEXUS_REDIS_PREFIX`) in front, so several deployments or test runs can share one server.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::TimeDelta;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::oneshot;

use crate::{
    SystemClock,
    clock::SharedClock,
    group::{Group, Limits, RoundTrip},
};

/// A lazily connecting, self-reconnecting Redis handle with a key prefix.
#[derive(Clone)]
pub struct Redis {
    manager: ConnectionManager,
    prefix: String,
    clock: SharedClock,
    admissions: Arc<Group<Admitter>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A handle to `url`; rate limits read time from `clock`. Nothing is connected until the
    /// first command, so a process starts while Redis is down and recovers when it returns.
    ///
    /// # Errors
    /// `url` is not a valid Redis URL.
    pub fn new(url: &str, prefix: &str, clock: SharedClock) -> anyhow::Result<Self> {
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
            clock,
            admissions: Arc::default(),
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

/// A token bucket per key, kept in Redis so every API replica shares it, for each of a group
/// of calls in order. `ARGV[1]` is the number of calls and `ARGV[2]` the caller's time in
/// milliseconds (its injected clock); call *i* has `ARGV[3+2i..4+2i]` = rate per second and
/// burst, and its bucket is `KEYS[1+i]`. A bucket's time never goes back: a replica whose clock
/// is behind the last writer's refills nothing until it catches up, so skew between replicas
/// delays refills by at most the skew and never grants a token twice. Returns the wait in
/// milliseconds per call (0: admitted). The bucket is a hash (`tokens`, `at`).
const TOKEN_BUCKETS: &str = r"
local caller_now = tonumber(ARGV[2])
local answers = {}
for call = 0, tonumber(ARGV[1]) - 1 do
  local rate = tonumber(ARGV[3 + 2 * call])
  local burst = tonumber(ARGV[4 + 2 * call])
  local bucket = KEYS[call + 1]
  local state = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens = tonumber(state[1])
  local at = tonumber(state[2])
  local now = caller_now
  if tokens == nil then
    tokens = burst
    at = now
  end
  if now < at then
    now = at
  end
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.ceil((1 - tokens) * 1000 / rate)
  end
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'at', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  answers[#answers + 1] = wait
end
return answers";

/// Admissions of concurrent calls go to Redis together: up to four round trips in flight, a
/// second starting once the first has taken 20 ms; at most 256 calls in one.
const ADMISSIONS: Limits = Limits {
    in_flight: 4,
    stalled: TimeDelta::milliseconds(20),
    most: 256,
};

/// Outcome of [`Redis::admit`]: a rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Too many calls; retry after this many milliseconds.
    Limited {
        /// Milliseconds until a token is available.
        retry_after_ms: u64,
    },
    /// Go ahead.
    Admitted,
}

/// One call's admission: its bucket (full key).
struct Ask {
    bucket: String,
    rate: u32,
    burst: u32,
    answer: oneshot::Sender<redis::RedisResult<Admission>>,
}

/// Sends groups of admissions in one script call.
struct Admitter {
    connection: ConnectionManager,
    clock: SharedClock,
}

impl RoundTrip for Admitter {
    type Call = Ask;

    async fn send(&self, asks: Vec<Ask>) {
        let now_ms = self.clock.now().timestamp_millis();
        let answers = admit_all(&mut self.connection.clone(), now_ms, &asks).await;
        for (i, ask) in asks.into_iter().enumerate() {
            let answer = match &answers {
                Ok(admissions) => admissions.get(i).copied().ok_or_else(|| {
                    redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "the admission script answered too few calls",
                    ))
                }),
                Err(error) => Err(error.clone()),
            };
            drop(ask.answer.send(answer));
        }
    }
}

/// Runs [`TOKEN_BUCKETS`] for `asks`, in one round trip.
async fn admit_all(
    connection: &mut ConnectionManager,
    now_ms: i64,
    asks: &[Ask],
) -> redis::RedisResult<Vec<Admission>> {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(TOKEN_BUCKETS));
    let mut invocation = SCRIPT.prepare_invoke();
    invocation.arg(asks.len()).arg(now_ms);
    for ask in asks {
        invocation.key(&ask.bucket).arg(ask.rate).arg(ask.burst);
    }
    let answers: Vec<u64> = invocation.invoke_async(connection).await?;
    Ok(answers
        .into_iter()
        .map(|wait| match wait {
            0 => Admission::Admitted,
            wait => Admission::Limited {
                retry_after_ms: wait,
            },
        })
        .collect())
}

impl Redis {
    /// Takes one token from the bucket `bucket` — one round trip, shared with the admissions
    /// of concurrent calls.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn admit(
        &self,
        bucket: &str,
        rate: u32,
        burst: u32,
    ) -> redis::RedisResult<Admission> {
        let (answer, answered) = oneshot::channel();
        let ask = Ask {
            bucket: self.key(bucket),
            rate,
            burst,
            answer,
        };
        let start = || {
            let admitter = Admitter {
                connection: self.connection(),
                clock: self.clock.clone(),
            };
            (admitter, ADMISSIONS, Arc::new(SystemClock) as SharedClock)
        };
        self.admissions.send(ask, start).await;
        answered.await.unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the admission was dropped while the process shut down",
            )))
        })
    }
}
