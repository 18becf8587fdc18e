//! Coordination between the processes of a deployment: per-trigger rate limits and the
//! scheduler's leader lease. (The memory of accepted webhook signatures is not here: it is in
//! the database, written with the run it admits, in every deployment.)
//!
//! With `NEXUS_REDIS_URL` set, both live in Redis and every replica shares them
//! ([`Coordination::Redis`]). Without it — the single-process mode, `nexus serve` — one process
//! is the whole deployment ([`Coordination::Local`]): the lease and the rate-limit buckets live
//! in the process. The separate API and scheduler binaries require Redis.
//!
//! What the local mode gives up: the rate-limit buckets start full after a restart, and two
//! `nexus serve` processes on one Postgres database would each lead — fencing still prevents a
//! double fire, but they would depose each other in turn. Run one (the embedded database
//! enforces it).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::{
    clock::SharedClock,
    kv::{Admission, Redis},
    store::Store,
};

/// Buckets the in-process map holds before it sweeps out the full ones.
const SWEEP_AT: usize = 4096;

/// Where coordination state lives (cheap to clone).
#[derive(Clone, Debug)]
pub enum Coordination {
    /// Shared through Redis by every replica.
    Redis(Redis),
    /// Kept in this process (single-process mode).
    Local(Arc<Local>),
}

impl Coordination {
    /// In-process coordination, reading time from `store`'s clock.
    #[must_use]
    pub fn local(store: &Store) -> Self {
        Self::Local(Arc::new(Local::new(store)))
    }

    /// Whether state is shared through Redis.
    #[must_use]
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Redis(_))
    }

    /// Whether the coordination store answers within `timeout` (always, in process).
    pub async fn ping(&self, timeout: Duration) -> bool {
        match self {
            Self::Redis(redis) => redis.ping(timeout).await,
            Self::Local(_) => true,
        }
    }

    /// Takes one token from the bucket `bucket` (one round trip to Redis).
    ///
    /// # Errors
    /// Redis is unreachable.
    pub async fn admit(
        &self,
        bucket: &str,
        rate: u32,
        burst: u32,
    ) -> Result<Admission, CoordError> {
        match self {
            Self::Redis(redis) => Ok(redis.admit(bucket, rate, burst).await?),
            Self::Local(local) => match local.take_token(bucket, rate, burst) {
                RateDecision::Limited { retry_after_ms } => {
                    Ok(Admission::Limited { retry_after_ms })
                }
                RateDecision::Allowed => Ok(Admission::Admitted),
            },
        }
    }
}

/// Outcome of taking a token from an in-process bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Too many calls; retry after this many milliseconds.
    Limited {
        /// Milliseconds until a token is available.
        retry_after_ms: u64,
    },
}

/// Coordination state of a single process.
#[derive(Debug)]
pub struct Local {
    clock: SharedClock,
    buckets: Mutex<Buckets>,
    lease: Mutex<Lease>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
    /// When the bucket is full again and can be forgotten.
    full_at_ms: i64,
}

/// The buckets by name, swept of full ones (which hold nothing a new bucket would not)
/// whenever the map has doubled since the last sweep.
#[derive(Debug)]
struct Buckets {
    entries: HashMap<String, Bucket>,
    sweep_at: usize,
}

impl Buckets {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            sweep_at: SWEEP_AT,
        }
    }

    fn insert(&mut self, key: String, bucket: Bucket, now_ms: i64) {
        self.entries.insert(key, bucket);
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, b| b.full_at_ms > now_ms);
            self.sweep_at = (self.entries.len() * 2).max(SWEEP_AT);
        }
    }
}

#[derive(Debug)]
struct Lease {
    holder: Option<(String, Instant)>,
    epoch: i64,
}

impl Local {
    fn new(store: &Store) -> Self {
        Self {
            clock: store.clock().clone(),
            buckets: Mutex::new(Buckets::new()),
            lease: Mutex::new(Lease {
                holder: None,
                epoch: 0,
            }),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// The token bucket of [`Coordination::admit`], on this process's clock.
    fn take_token(&self, name: &str, rate: u32, burst: u32) -> RateDecision {
        let rate = f64::from(rate.max(1));
        let burst = f64::from(burst.max(1));
        let now = self.now_ms();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entries.get(name).copied().unwrap_or(Bucket {
            tokens: burst,
            at_ms: now,
            full_at_ms: now,
        });
        #[allow(clippy::cast_precision_loss)]
        let elapsed = (now - bucket.at_ms).max(0) as f64;
        let mut tokens = (bucket.tokens + elapsed * rate / 1000.0).min(burst);
        let decision = if tokens >= 1.0 {
            tokens -= 1.0;
            RateDecision::Allowed
        } else {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let wait = ((1.0 - tokens) * 1000.0 / rate).ceil() as u64;
            RateDecision::Limited {
                retry_after_ms: wait.max(1),
            }
        };
        #[allow(clippy::cast_possible_truncation)]
        let full_at_ms = now + ((burst - tokens) * 1000.0 / rate).ceil() as i64;
        let bucket = Bucket {
            tokens,
            at_ms: now,
            full_at_ms,
        };
        buckets.insert(name.to_owned(), bucket, now);
        decision
    }

    /// Takes the lease for `id` unless another holder's is still valid; a new term gets the
    /// next epoch above both the last one given and `floor` (the last epoch that wrote).
    pub fn try_lead(&self, id: &str, ttl: Duration, floor: i64) -> Option<i64> {
        let now = Instant::now();
        let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        match &lease.holder {
            Some((holder, until)) if holder != id && *until > now => None,
            _ => {
                lease.epoch = lease.epoch.max(floor) + 1;
                lease.holder = Some((id.to_owned(), now + ttl));
                Some(lease.epoch)
            }
        }
    }

    /// Extends `id`'s lease if it still holds a valid one.
    pub fn renew_lead(&self, id: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut lease.holder {
            Some((holder, until)) if holder == id && *until > now => {
                *until = now + ttl;
                true
            }
            _ => false,
        }
    }

    /// Gives `id`'s lease up.
    pub fn release_lead(&self, id: &str) -> bool {
        let mut lease = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
        if lease
            .holder
            .as_ref()
            .is_some_and(|(holder, _)| holder == id)
        {
            lease.holder = None;
            true
        } else {
            false
        }
    }
}

/// Why coordination state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Redis is unreachable.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone as _, Utc};

    use super::*;
    use crate::{ManualClock, crypto::SecretKey, store::sqlite::SqliteStore};

    /// In-process coordination over an embedded store in a temporary directory (removed by
    /// the caller).
    async fn local() -> (Arc<ManualClock>, Local, std::path::PathBuf) {
        let clock = ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
                .single()
                .expect("a time"),
        );
        let dir =
            std::env::temp_dir().join(format!("nexus-coord-{}", uuid::Uuid::new_v4().simple()));
        let store = SqliteStore::open(&dir, clock.clone(), &SecretKey::generate(), "http://x")
            .await
            .expect("store");
        (clock, Local::new(&Store::new(store)), dir)
    }

    #[tokio::test]
    async fn a_bucket_allows_its_burst_then_refills_at_the_rate() {
        let (clock, local, dir) = local().await;
        for _ in 0..3 {
            assert_eq!(local.take_token("t", 2, 3), RateDecision::Allowed);
        }
        assert_eq!(
            local.take_token("t", 2, 3),
            RateDecision::Limited {
                retry_after_ms: 500
            }
        );
        // Another bucket is independent.
        assert_eq!(local.take_token("u", 2, 3), RateDecision::Allowed);
        clock.advance(TimeDelta::milliseconds(499));
        assert!(matches!(
            local.take_token("t", 2, 3),
            RateDecision::Limited { .. }
        ));
        clock.advance(TimeDelta::milliseconds(2));
        assert_eq!(local.take_token("t", 2, 3), RateDecision::Allowed);
        // A long pause refills to the burst, not beyond.
        clock.advance(TimeDelta::hours(1));
        for _ in 0..3 {
            assert_eq!(local.take_token("t", 2, 3), RateDecision::Allowed);
        }
        assert!(matches!(
            local.take_token("t", 2, 3),
            RateDecision::Limited { .. }
        ));
        drop(std::fs::remove_dir_all(dir));
    }

    #[tokio::test]
    async fn sweeping_drops_only_full_buckets() {
        let (clock, local, dir) = local().await;
        assert_eq!(local.take_token("busy", 1, 1), RateDecision::Allowed);
        for i in 0..SWEEP_AT {
            local.take_token(&format!("short-{i}"), 1000, 1);
        }
        clock.advance(TimeDelta::milliseconds(10));
        for i in 0..SWEEP_AT {
            local.take_token(&format!("new-{i}"), 1, 1);
        }
        let buckets = local.buckets.lock().expect("not poisoned");
        assert!(buckets.entries.len() < 2 * SWEEP_AT, "full buckets swept");
        drop(buckets);
        // The busy bucket (empty, refilling for a second) was kept.
        assert!(matches!(
            local.take_token("busy", 1, 1),
            RateDecision::Limited { .. }
        ));
        drop(std::fs::remove_dir_all(dir));
    }

    #[tokio::test]
    async fn the_lease_has_one_holder_and_each_term_a_higher_epoch() {
        let (_, local, dir) = local().await;
        let ttl = Duration::from_secs(60);
        assert_eq!(local.try_lead("a", ttl, 41), Some(42));
        assert_eq!(local.try_lead("b", ttl, 41), None);
        assert!(local.renew_lead("a", ttl));
        assert!(!local.renew_lead("b", ttl));
        assert!(!local.release_lead("b"));
        assert!(local.release_lead("a"));
        assert!(!local.renew_lead("a", ttl));
        assert_eq!(local.try_lead("b", ttl, 42), Some(43));
        // An expired lease can be taken over.
        assert_eq!(local.try_lead("c", Duration::ZERO, 43), None);
        assert!(local.release_lead("b"));
        assert_eq!(local.try_lead("c", Duration::ZERO, 0), Some(44));
        // A floor above the last epoch given wins.
        assert_eq!(local.try_lead("a", ttl, 100), Some(101));
        drop(std::fs::remove_dir_all(dir));
    }
}
