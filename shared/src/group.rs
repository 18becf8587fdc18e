//! Grouping of calls that would each cost a round trip: calls that arrive while one round trip
//! is in flight go together in the next one.
//!
//! Used where every call must be answered by a server before its caller goes on — the
//! commit of a webhook acceptance (`store::intake`), the rate-limit and replay check of a
//! webhook call in Redis (`kv`) — and the server's cost is mostly per round trip, not per
//! call in it.
//!
//! Nothing waits to form a group: a call that arrives while nothing is in flight goes at once,
//! alone, so an idle process adds no latency. Under load one round trip is in flight at a time
//! and groups grow with the load. One still in flight after [`Limits::stalled`] — it waits for
//! a lock another transaction holds, or the server is slow — does not hold up the rest: the
//! next one starts beside it, up to [`Limits::in_flight`].

use std::{future::Future, sync::Arc};

use chrono::TimeDelta;
use tokio::sync::{Semaphore, mpsc};

use crate::clock::SharedClock;

/// How a group's round trips are spread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The most round trips in flight at once.
    pub(crate) in_flight: u32,
    /// How long the round trips in flight may take before another one starts beside them.
    pub(crate) stalled: TimeDelta,
    /// The most calls in one round trip.
    pub(crate) most: usize,
}

/// Sends a group of calls in one round trip and answers each of them.
pub(crate) trait RoundTrip: Send + Sync + 'static {
    /// A call with the means to answer its caller.
    type Call: Send + 'static;

    /// Sends `calls` together and answers every one (a dropped answer tells its caller that
    /// the outcome is unknown).
    fn send(&self, calls: Vec<Self::Call>) -> impl Future<Output = ()> + Send;
}

/// The queue of calls waiting for a round trip, and the task sending them (started on the
/// first call, in the caller's runtime).
pub(crate) struct Group<S: RoundTrip> {
    queue: std::sync::OnceLock<mpsc::UnboundedSender<S::Call>>,
}

impl<S: RoundTrip> std::fmt::Debug for Group<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("started", &self.queue.get().is_some())
            .finish()
    }
}

impl<S: RoundTrip> Default for Group<S> {
    fn default() -> Self {
        Self {
            queue: std::sync::OnceLock::new(),
        }
    }
}

impl<S: RoundTrip> Group<S> {
    /// Sends `call` with whatever waits beside it; on the first call, `start` gives what sends
    /// them. Returns once the call is queued (its answer comes through the means it carries),
    /// or — when the sending task is gone with the runtime that started it — once it was sent
    /// alone.
    pub(crate) async fn send(&self, call: S::Call, start: impl Fn() -> (S, Limits, SharedClock)) {
        if let Err(call) = self.submit(call, &start) {
            let (sender, _, _) = start();
            sender.send(vec![call]).await;
        }
    }

    /// Queues `call`; on the first call, `start` gives what sends them. Gives `call` back when
    /// the sending task is gone.
    fn submit(
        &self,
        call: S::Call,
        start: impl FnOnce() -> (S, Limits, SharedClock),
    ) -> Result<(), S::Call> {
        let queue = self.queue.get_or_init(|| {
            let (queue, waiting) = mpsc::unbounded_channel();
            let (sender, limits, clock) = start();
            tokio::spawn(collect(Arc::new(sender), limits, clock, waiting));
            queue
        });
        queue
            .send(call)
            .map_err(|mpsc::error::SendError(call)| call)
    }
}

/// Takes the waiting calls (up to [`Limits::most`]) whenever a round trip may start: when none
/// is in flight, or when those in flight have all run for [`Limits::stalled`] and there are
/// fewer than [`Limits::in_flight`].
async fn collect<S: RoundTrip>(
    sender: Arc<S>,
    limits: Limits,
    clock: SharedClock,
    mut waiting: mpsc::UnboundedReceiver<S::Call>,
) {
    let slots = Arc::new(Semaphore::new(limits.in_flight as usize));
    let mut latest_start = clock.now();
    loop {
        let Some(first) = waiting.recv().await else {
            return;
        };
        if slots.available_permits() < limits.in_flight as usize {
            // Until every round trip in flight has ended (all slots free) or they stall.
            tokio::select! {
                idle = Arc::clone(&slots).acquire_many_owned(limits.in_flight) => drop(idle),
                () = clock.sleep_until(latest_start + limits.stalled) => {}
            }
        }
        // Dropped however the round trip ends.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut calls = vec![first];
        while calls.len() < limits.most
            && let Ok(next) = waiting.try_recv()
        {
            calls.push(next);
        }
        latest_start = clock.now();
        let sender = Arc::clone(&sender);
        tokio::spawn(async move {
            sender.send(calls).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::{TimeZone as _, Utc};
    use tokio::sync::{Notify, oneshot};

    use super::*;
    use crate::ManualClock;

    /// Records the size of each round trip; each waits until the test releases it.
    #[derive(Default)]
    struct Recorder {
        sizes: Mutex<Vec<usize>>,
        release: Notify,
    }

    struct Sender(Arc<Recorder>);

    impl RoundTrip for Sender {
        type Call = oneshot::Sender<()>;

        async fn send(&self, calls: Vec<Self::Call>) {
            self.0.sizes.lock().expect("sizes").push(calls.len());
            self.0.release.notified().await;
            for call in calls {
                call.send(()).ok();
            }
        }
    }

    const LIMITS: Limits = Limits {
        in_flight: 2,
        stalled: TimeDelta::milliseconds(20),
        most: 3,
    };

    /// Lets the spawned tasks run until `recorder` has seen `trips` round trips.
    async fn until_trips(recorder: &Recorder, trips: usize) -> Vec<usize> {
        for _ in 0..1000 {
            let sizes = recorder.sizes.lock().expect("sizes").clone();
            if sizes.len() >= trips {
                return sizes;
            }
            tokio::task::yield_now().await;
        }
        panic!("{trips} round trips never started");
    }

    #[tokio::test]
    async fn calls_during_a_round_trip_go_together_in_the_next_and_a_stalled_one_is_passed() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        let recorder = Arc::new(Recorder::default());
        let group: Group<Sender> = Group::default();
        let submit = |group: &Group<Sender>| {
            let (answer, answered) = oneshot::channel();
            let start = || {
                let shared: SharedClock = clock.clone();
                (Sender(Arc::clone(&recorder)), LIMITS, shared)
            };
            assert!(group.submit(answer, start).is_ok(), "the group runs");
            answered
        };
        // Nothing in flight: the first call goes at once, alone.
        let first = submit(&group);
        assert_eq!(until_trips(&recorder, 1).await, [1]);
        // While it is in flight, calls wait; not yet stalled, so nothing else starts.
        let waiting: Vec<_> = (0..5).map(|_| submit(&group)).collect();
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(recorder.sizes.lock().expect("sizes").len(), 1);
        // Stalled: the next round trip starts beside it with as many as one may hold.
        clock.advance(TimeDelta::milliseconds(20));
        assert_eq!(until_trips(&recorder, 2).await, [1, 3]);
        // Both slots are taken: the rest wait for one to end, however long that takes.
        clock.advance(TimeDelta::seconds(10));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(recorder.sizes.lock().expect("sizes").len(), 2);
        recorder.release.notify_waiters();
        first.await.expect("the first call is answered");
        assert_eq!(until_trips(&recorder, 3).await, [1, 3, 2]);
        recorder.release.notify_waiters();
        for answered in waiting {
            answered.await.expect("every call is answered");
        }
    }

    #[test]
    fn a_call_made_after_the_sending_runtime_ended_is_sent_alone() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        let recorder = Arc::new(Recorder::default());
        let group: Group<Sender> = Group::default();
        let start = || {
            let shared: SharedClock = clock.clone();
            (Sender(Arc::clone(&recorder)), LIMITS, shared)
        };
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        };
        // The first call starts the sending task in a runtime that then ends, taking the task
        // (and the call it held) with it.
        let (answer, lost) = oneshot::channel();
        let first = runtime();
        first.block_on(group.send(answer, start));
        drop(first);
        // A call from another runtime is sent alone, at once, and answered.
        recorder.release.notify_one();
        let (answer, answered) = oneshot::channel();
        runtime().block_on(async {
            group.send(answer, start).await;
            answered.await.expect("the call is answered");
        });
        assert_eq!(recorder.sizes.lock().expect("sizes").last(), Some(&1));
        assert!(
            lost.blocking_recv().is_err(),
            "the call queued in the ended runtime is dropped, not answered"
        );
    }
}
