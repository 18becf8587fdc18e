//! Injected time. Everything that reads the time or waits for a moment takes a [`Clock`], so
//! tests drive time with a [`ManualClock`] instead of sleeping.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

/// A source of the current instant that can also wait for a later one.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once the clock has reached `deadline`.
    fn sleep_until(&self, deadline: DateTime<Utc>)
    -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(
        &self,
        deadline: DateTime<Utc>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
        })
    }
}

/// A clock that only moves when told to. Waiters wake as soon as [`ManualClock::advance`] or
/// [`ManualClock::set`] moves it past their deadline.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
    changed: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    #[must_use]
    pub fn new(start: DateTime<Utc>) -> Arc<Self> {
        let (changed, _) = watch::channel(start);
        Arc::new(Self {
            now: Mutex::new(start),
            changed,
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
        self.changed.send_replace(*now);
    }

    /// How many [`Clock::sleep_until`] waits are pending: lets a test see that a task has
    /// gone to sleep on this clock.
    #[must_use]
    pub fn sleepers(&self) -> usize {
        self.changed.receiver_count()
    }

    /// Sets the clock to `to` (which may be earlier, to simulate a clock step back).
    pub fn set(&self, to: DateTime<Utc>) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = to;
        self.changed.send_replace(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sleep_until(
        &self,
        deadline: DateTime<Utc>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.changed.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, so `wait_for` only ends when the deadline is met.
            let _ = rx.wait_for(|now| *now >= deadline).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced_past_their_deadline() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").map(|t| t.to_utc());
        let clock = ManualClock::new(start.expect("valid time"));
        let deadline = clock.now() + TimeDelta::seconds(10);
        let sleeper = {
            let clock = Arc::clone(&clock);
            tokio::spawn(async move { clock.sleep_until(deadline).await })
        };
        clock.advance(TimeDelta::seconds(5));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "woke before its deadline");
        assert_eq!(clock.sleepers(), 1);
        clock.advance(TimeDelta::seconds(5));
        sleeper.await.expect("sleeper finishes");
        assert_eq!(clock.now(), deadline);
        assert_eq!(clock.sleepers(), 0);
    }
}
