//! Leadership: a lease in Redis with a term (or in this process, in the single-process mode
//! without Redis: see [`nexus_shared::coord`]).
//!
//! States of one scheduler instance:
//! - **Follower**: tries `SET <prefix>:scheduler:leader <id> NX PX <ttl>` every `ttl / 3`.
//! - **Leader(epoch, valid_until)**: won the key; `INCR <prefix>:scheduler:epoch` gave it a new
//!   epoch, its fencing token (raised above the epoch in Postgres when Redis lost its counter). It renews every `ttl / 3` with a compare-and-expire script (only
//!   if the key still holds its id). `valid_until` is `ttl` after the start of the last
//!   successful acquire or renewal, on the injected clock (the system clock in production), so
//!   a test lapses a term by advancing its clock ([`crate::Scheduler::lead_once`] is one step).
//! - A leader whose renewal fails (the key is someone else's, Redis errors or times out) stands
//!   down at once; one that cannot renew before `valid_until` stops firing at that instant.
//!   On shutdown it deletes the key (compare-and-delete) so a successor need not wait.
//!
//! Redis alone cannot prevent a paused, deposed leader from writing after its term: every fire
//! transaction also moves the Postgres `scheduler_epoch` row forward only if its epoch is not
//! older, so such writes roll back (see `Store::fire_due`).

use std::time::Duration;

use nexus_shared::coord::Coordination;

/// Takes the next epoch, never at or below `ARGV[1]`, the last epoch that wrote to Postgres: a
/// Redis that lost its data (restarted without persistence) would otherwise hand out epochs
/// the database fences off, and no leader could fire until the counter caught up.
const NEXT_EPOCH: &str = r"
local epoch = redis.call('incr', KEYS[1])
local floor = tonumber(ARGV[1])
if epoch <= floor then
  epoch = floor + 1
  redis.call('set', KEYS[1], epoch)
end
return epoch";

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

/// The lease side of leadership.
#[derive(Debug, Clone)]
pub struct LeaderLock {
    coordination: Coordination,
    id: String,
    ttl: Duration,
}

impl LeaderLock {
    /// A lock for the instance `id` with leases of `ttl`.
    #[must_use]
    pub fn new(coordination: Coordination, id: String, ttl: Duration) -> Self {
        Self {
            coordination,
            id,
            ttl,
        }
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

    /// Tries to become leader; on success returns the new epoch, above `floor` (the epoch in
    /// the database).
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn try_acquire(&self, floor: i64) -> redis::RedisResult<Option<i64>> {
        let redis = match &self.coordination {
            Coordination::Redis(redis) => redis,
            Coordination::Local(local) => return Ok(local.try_lead(&self.id, self.ttl, floor)),
        };
        let mut conn = redis.connection();
        let won: Option<String> = redis::cmd("SET")
            .arg(redis.key("scheduler:leader"))
            .arg(&self.id)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms())
            .query_async(&mut conn)
            .await?;
        if won.is_none() {
            return Ok(None);
        }
        let epoch: i64 = redis::Script::new(NEXT_EPOCH)
            .key(redis.key("scheduler:epoch"))
            .arg(floor)
            .invoke_async(&mut conn)
            .await?;
        Ok(Some(epoch))
    }

    /// Extends the lease if this instance still holds it.
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn renew(&self) -> redis::RedisResult<bool> {
        let redis = match &self.coordination {
            Coordination::Redis(redis) => redis,
            Coordination::Local(local) => return Ok(local.renew_lead(&self.id, self.ttl)),
        };
        let mut conn = redis.connection();
        let renewed: i64 = redis::Script::new(RENEW)
            .key(redis.key("scheduler:leader"))
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
        let redis = match &self.coordination {
            Coordination::Redis(redis) => redis,
            Coordination::Local(local) => return Ok(local.release_lead(&self.id)),
        };
        let mut conn = redis.connection();
        let released: i64 = redis::Script::new(RELEASE)
            .key(redis.key("scheduler:leader"))
            .arg(&self.id)
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }
}
