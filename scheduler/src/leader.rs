//! Leadership: a lease in Redis with a term.
//!
//! States of one scheduler instance:
//! - **Follower**: tries `SET <prefix>:scheduler:leader <id> NX PX <ttl>` every `ttl / 3`.
//! - **Leader(epoch, valid_until)**: won the key; `INCR <prefix>:scheduler:epoch` gave it a new
//!   epoch, its fencing token. It renews every `ttl / 3` with a compare-and-expire script (only
//!   if the key still holds its id). `valid_until` is `ttl` after the start of the last
//!   successful acquire or renewal, measured on this machine's monotonic clock.
//! - A leader whose renewal fails (the key is someone else's, Redis errors or times out) stands
//!   down at once; one that cannot renew before `valid_until` stops firing at that instant.
//!   On shutdown it deletes the key (compare-and-delete) so a successor need not wait.
//!
//! Redis alone cannot prevent a paused, deposed leader from writing after its term: every fire
//! transaction also moves the Postgres `scheduler_epoch` row forward only if its epoch is not
//! older, so such writes roll back (see `Store::fire_due`).

use std::time::Duration;

use nexus_shared::kv::Redis;

const RENEW: &str = r"
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0";

const RELEASE: &str = r"
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0";

/// The Redis side of leadership.
#[derive(Debug, Clone)]
pub struct LeaderLock {
    redis: Redis,
    id: String,
    ttl: Duration,
}

impl LeaderLock {
    /// A lock for the instance `id` with leases of `ttl`.
    #[must_use]
    pub fn new(redis: Redis, id: String, ttl: Duration) -> Self {
        Self { redis, id, ttl }
    }

    /// This instance's id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lease length.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Tries to become leader; on success returns the new epoch.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn try_acquire(&self) -> redis::RedisResult<Option<i64>> {
        let mut conn = self.redis.connection();
        let won: Option<String> = redis::cmd("SET")
            .arg(self.redis.key("scheduler:leader"))
            .arg(&self.id)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut conn)
            .await?;
        if won.is_none() {
            return Ok(None);
        }
        let epoch: i64 = redis::cmd("INCR")
            .arg(self.redis.key("scheduler:epoch"))
            .query_async(&mut conn)
            .await?;
        Ok(Some(epoch))
    }

    /// Extends the lease if this instance still holds it.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn renew(&self) -> redis::RedisResult<bool> {
        let mut conn = self.redis.connection();
        let renewed: i64 = redis::Script::new(RENEW)
            .key(self.redis.key("scheduler:leader"))
            .arg(&self.id)
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up if this instance holds it.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn release(&self) -> redis::RedisResult<bool> {
        let mut conn = self.redis.connection();
        let released: i64 = redis::Script::new(RELEASE)
            .key(self.redis.key("scheduler:leader"))
            .arg(&self.id)
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }
}
