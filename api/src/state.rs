//! What every handler can reach.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use chrono::{DateTime, Utc};
use nexus_shared::{
    Store,
    coord::Coordination,
    store::{FireLateness, StoreResult, WebhookTrigger},
};

/// Shared state of the API's handlers (cheap to clone).
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Rate limits (Redis, or in process).
    pub coordination: Coordination,
    /// Base of webhook URLs.
    pub public_url: String,
    /// Sustained webhook calls per trigger and second.
    pub webhook_rate: u32,
    /// Webhook burst per trigger.
    pub webhook_burst: u32,
    /// Webhook triggers as this process last read them.
    pub webhook_triggers: Arc<WebhookTriggers>,
    /// Whether wake-up URLs may name loopback, link-local or private addresses.
    pub allow_private_urls: bool,
    /// `NEXUS_RETENTION_DAYS` (`None`: history is kept for ever): a backfill may not reach
    /// back past it, where runs may have been deleted.
    pub retention_days: Option<u32>,
    /// The live updates of this process.
    pub hub: Arc<crate::live::Hub>,
    /// Settled minutes of fire lateness, for the system status.
    pub lateness: Arc<LatenessCache>,
}

/// The system status's settled minutes of fire lateness, with their samples, by minute (at
/// most an hour's): a minute is read from the database once it can no longer change.
#[derive(Debug, Default)]
pub struct LatenessCache(pub(crate) Mutex<HashMap<DateTime<Utc>, FireLateness>>);

/// Webhook triggers by public id, as this process last read them, so that a call does not
/// read its trigger from the database first.
///
/// A cached trigger is never trusted on its own. A call it lets through is accepted only if
/// the trigger's row still has the same secret, signing mode and replay window (the store
/// compares them in the statement that writes the run, holding the row); a call it refuses
/// is checked again against a fresh read before it is answered 401. So a rotation or an edit
/// made through any replica takes effect at once everywhere, as the contract says — except
/// that calls failing against the kept copy re-read a trigger at most once a second, so a
/// caller rotating and sending the new secret within that second may see one 401. Unknown
/// public ids are answered 404 without a read for a few seconds. At most [`WebhookTriggers::CAPACITY`] triggers are kept; when
/// full, the cache starts over.
#[derive(Debug, Default)]
pub struct WebhookTriggers {
    by_public_id: Mutex<HashMap<String, Arc<WebhookTrigger>>>,
    /// Public ids found unknown, until when they are answered 404 without a read.
    unknown: Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>,
    /// When each trigger was last read again because a call did not authenticate against the
    /// kept copy.
    rereads: Mutex<HashMap<uuid::Uuid, chrono::DateTime<chrono::Utc>>>,
}

/// A webhook trigger, and whether it came from the cache rather than the database.
pub(crate) struct Found {
    pub(crate) trigger: Arc<WebhookTrigger>,
    pub(crate) cached: bool,
}

impl WebhookTriggers {
    /// The most triggers kept (and the most unknown ids remembered).
    pub const CAPACITY: usize = 10_000;

    /// How long an unknown public id is answered 404 without reading the database. A public id
    /// is 128 random bits, shown only once its trigger exists: nobody calls one before it does.
    pub const UNKNOWN_FOR: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

    /// At most one read again per trigger in this time for calls that do not authenticate
    /// against the kept copy: a flood of wrong secrets costs no database reads.
    pub const REREAD_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

    /// The trigger from the cache, else read; `None` for an id recently found unknown.
    pub(crate) async fn get(&self, store: &Store, public_id: &str) -> StoreResult<Option<Found>> {
        let now = store.clock().now();
        if self
            .unknown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(public_id)
            .is_some_and(|until| *until > now)
        {
            return Ok(None);
        }
        let cached = self.entries().get(public_id).cloned();
        match cached {
            Some(trigger) => Ok(Some(Found {
                trigger,
                cached: true,
            })),
            None => Ok(self.read(store, public_id).await?.map(|trigger| Found {
                trigger,
                cached: false,
            })),
        }
    }

    /// The trigger read from the database (and kept), `None` (and forgotten) when there is none.
    pub(crate) async fn read(
        &self,
        store: &Store,
        public_id: &str,
    ) -> StoreResult<Option<Arc<WebhookTrigger>>> {
        let read = store.webhook_trigger(public_id).await?.map(Arc::new);
        let mut entries = self.entries();
        match &read {
            Some(trigger) => {
                if entries.len() >= Self::CAPACITY && !entries.contains_key(public_id) {
                    entries.clear();
                }
                entries.insert(public_id.to_owned(), Arc::clone(trigger));
            }
            None => {
                entries.remove(public_id);
                drop(entries);
                let now = store.clock().now();
                let mut unknown = self.unknown.lock().unwrap_or_else(PoisonError::into_inner);
                if unknown.len() >= Self::CAPACITY {
                    unknown.retain(|_, until| *until > now);
                    if unknown.len() >= Self::CAPACITY {
                        unknown.clear();
                    }
                }
                unknown.insert(public_id.to_owned(), now + Self::UNKNOWN_FOR);
            }
        }
        Ok(read)
    }

    /// Whether a call that did not authenticate against the kept copy of `trigger_id` may read
    /// it again now (at most once per [`Self::REREAD_EVERY`]); records the read.
    pub(crate) fn may_reread(&self, store: &Store, trigger_id: uuid::Uuid) -> bool {
        let now = store.clock().now();
        let mut rereads = self.rereads.lock().unwrap_or_else(PoisonError::into_inner);
        if rereads
            .get(&trigger_id)
            .is_some_and(|last| now - *last < Self::REREAD_EVERY)
        {
            return false;
        }
        if rereads.len() >= Self::CAPACITY {
            rereads.retain(|_, last| now - *last < Self::REREAD_EVERY);
        }
        rereads.insert(trigger_id, now);
        true
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<WebhookTrigger>>> {
        self.by_public_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
