//! Live updates: each API process follows the change log (`store::events`) and hands every
//! event of a company somebody watches to the streams open on this process.
//!
//! One task per process ([`Hub::run`]) relays committed changes into the log (whichever process
//! gets there first does it; the others find the log's row held and move on), reads the log
//! after the last number it saw, renders each change's resource once, and broadcasts it. A
//! stream ([`crate::routes::events`]) subscribes to the broadcast, then reads from the log what
//! its client missed. The data of an event is the resource as it stands when the event is
//! read, so two events of one run may show the same state; it never holds a secret (it is what
//! the API's own reads return).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use nexus_shared::{
    Store,
    store::{ChangeEvent, ChangeKind, StoreError},
};
use serde_json::json;
use tokio::sync::{Semaphore, broadcast};
use uuid::Uuid;

/// Most events moved or read in one step.
pub const BATCH: i64 = 1_000;
/// How often the log is read while somebody watches.
pub const WATCHED_EVERY: Duration = Duration::from_millis(200);
/// How often the log is relayed while nobody watches on this process.
pub const IDLE_EVERY: Duration = Duration::from_secs(1);
/// While jobs wait for a worker (a burst being dispatched) the relay waits, at most this long:
/// live updates lag a burst rather than slow it.
pub const YIELD_AT_MOST: Duration = Duration::from_secs(5);
/// Events a reconnecting client may be sent from the log; a client that missed more is told to
/// reload (`reset`).
pub const MAX_REPLAY: i64 = 1_000;

/// An event ready to send.
#[derive(Debug)]
pub struct Rendered {
    /// The log's number.
    pub id: i64,
    /// The company it belongs to.
    pub company_id: Uuid,
    /// The event's name on the stream.
    pub name: &'static str,
    /// The resource's JSON.
    pub data: String,
}

/// The broadcast of one process, and who listens.
#[derive(Debug)]
pub struct Hub {
    sender: broadcast::Sender<Arc<Rendered>>,
    /// Open streams per company: only watched companies' events are rendered.
    watched: Mutex<HashMap<Uuid, usize>>,
    /// The newest number broadcast.
    position: AtomicI64,
    /// Whether the position has been read from the log yet.
    started: std::sync::atomic::AtomicBool,
    /// Permits for open streams.
    pub(crate) streams: Arc<Semaphore>,
    /// Set when the process shuts down: every stream ends.
    closing: tokio::sync::watch::Sender<bool>,
    /// When this process last relayed (or found nothing to wait for).
    relayed_at: Mutex<Option<std::time::Instant>>,
}

impl Hub {
    /// A hub allowing `streams` open streams at once (`NEXUS_HTTP_MAX_EVENT_STREAMS`); past
    /// that a new one is answered 429.
    #[must_use]
    pub fn new(streams: usize) -> Self {
        Self {
            sender: broadcast::channel(4 * usize::try_from(BATCH).unwrap_or(1_000)).0,
            watched: Mutex::default(),
            position: AtomicI64::new(0),
            started: std::sync::atomic::AtomicBool::new(false),
            streams: Arc::new(Semaphore::new(streams)),
            closing: tokio::sync::watch::Sender::new(false),
            relayed_at: Mutex::new(None),
        }
    }
}

/// A stream's registration: keeps its company watched until dropped.
#[derive(Debug)]
pub struct Watch {
    hub: Arc<Hub>,
    company_id: Uuid,
    /// Events broadcast from here on.
    pub receiver: broadcast::Receiver<Arc<Rendered>>,
    /// Every event numbered up to this was broadcast before the receiver existed.
    pub position: i64,
    /// Turns true when the process shuts down.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watched = self
            .hub
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = watched.get_mut(&self.company_id) {
            *count -= 1;
            if *count == 0 {
                watched.remove(&self.company_id);
            }
        }
    }
}

impl Watch {
    /// The company watched.
    #[must_use]
    pub fn company_id(&self) -> Uuid {
        self.company_id
    }

    /// The newest number the hub has broadcast.
    #[must_use]
    pub fn hub_position(&self) -> i64 {
        self.hub.position.load(Ordering::SeqCst)
    }
}

impl Hub {
    /// Starts watching a company's events.
    pub fn watch(self: &Arc<Self>, company_id: Uuid) -> Watch {
        *self
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(company_id)
            .or_default() += 1;
        let receiver = self.sender.subscribe();
        Watch {
            hub: Arc::clone(self),
            company_id,
            receiver,
            position: self.position.load(Ordering::SeqCst),
            closing: self.closing.subscribe(),
        }
    }

    /// Whether to relay now: not while jobs wait for a worker, unless the last relay was
    /// [`YIELD_AT_MOST`] ago.
    async fn may_relay(&self, store: &Store) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let last = *self
            .relayed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let overdue = last.is_none_or(|at| now.duration_since(at) >= YIELD_AT_MOST);
        if !overdue && store.queue_busy().await? {
            return Ok(false);
        }
        *self
            .relayed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(now);
        Ok(true)
    }

    /// Ends every stream (the process is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    fn is_watched(&self, company_id: Uuid) -> bool {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&company_id)
    }

    fn anyone_watching(&self) -> bool {
        !self
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Relays and broadcasts until the task is dropped. Errors are logged and retried at the
    /// next step.
    pub async fn run(self: Arc<Self>, store: Store) {
        loop {
            if let Err(error) = self.step(&store).await {
                tracing::warn!(%error, "live updates: reading the change log failed");
            }
            let pause = if self.anyone_watching() {
                WATCHED_EVERY
            } else {
                IDLE_EVERY
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One step: relay what has committed, then broadcast what the log holds after the
    /// position.
    ///
    /// # Errors
    /// The database failed.
    pub async fn step(&self, store: &Store) -> Result<(), StoreError> {
        if !self.started.load(Ordering::SeqCst) {
            let log = store.event_log().await?;
            self.position.store(log.last_id, Ordering::SeqCst);
            self.started.store(true, Ordering::SeqCst);
        }
        if self.may_relay(store).await? {
            while store.relay_events(BATCH).await? == u64::try_from(BATCH).unwrap_or(0) {}
        }
        loop {
            let after = self.position.load(Ordering::SeqCst);
            let events = store.events_after(None, after, BATCH).await?;
            let Some(last) = events.last().map(|e| e.id) else {
                return Ok(());
            };
            let watched: Vec<ChangeEvent> = events
                .into_iter()
                .filter(|e| self.is_watched(e.company_id))
                .collect();
            for event in render_all(store, &watched).await? {
                // No receiver is not an error: the stream closed meanwhile.
                drop(self.sender.send(Arc::new(event)));
            }
            self.position.store(last, Ordering::SeqCst);
        }
    }
}

/// Renders events, each resource read once per call; events whose resource is gone (a run
/// deleted by retention) are left out.
///
/// # Errors
/// The database failed.
pub async fn render_all(
    store: &Store,
    events: &[ChangeEvent],
) -> Result<Vec<Rendered>, StoreError> {
    let mut cache: HashMap<(Uuid, bool), Option<String>> = HashMap::new();
    let mut rendered = Vec::with_capacity(events.len());
    for event in events {
        let deleted = event.kind == ChangeKind::TriggerDeleted;
        let key = (event.resource_id, deleted);
        let data = match cache.get(&key) {
            Some(data) => data.clone(),
            None => {
                let data = render(store, event).await?;
                cache.insert(key, data.clone());
                data
            }
        };
        if let Some(data) = data {
            rendered.push(Rendered {
                id: event.id,
                company_id: event.company_id,
                name: event.kind.event_name(),
                data,
            });
        }
    }
    Ok(rendered)
}

async fn render(store: &Store, event: &ChangeEvent) -> Result<Option<String>, StoreError> {
    let value = match event.kind {
        ChangeKind::RunCreated | ChangeKind::RunUpdated => {
            found(store.run(event.resource_id).await)?.map(serde_json::to_value)
        }
        ChangeKind::RoutineUpdated => {
            found(store.routine(event.resource_id).await)?.map(serde_json::to_value)
        }
        ChangeKind::TriggerUpdated => found(store.trigger(event.resource_id).await)?
            .map(|found| serde_json::to_value(found.trigger)),
        ChangeKind::TriggerDeleted => Some(Ok(json!({
            "id": event.resource_id,
            "routineId": event.routine_id,
            "deleted": true,
        }))),
    };
    Ok(value.and_then(Result::ok).map(|value| value.to_string()))
}

fn found<T>(result: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::NotFound) => Ok(None),
        Err(error) => Err(error),
    }
}
