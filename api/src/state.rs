//! What every handler can reach.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use nexus_shared::{
    Store,
    coord::Coordination,
    store::{StoreResult, WebhookTrigger},
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
}

/// Webhook triggers by public id, as this process last read them, so that a call does not
/// read its trigger from the database first.
///
/// A cached trigger is never trusted on its own. A call it lets through is accepted only if
/// the trigger's row still has the same secret, signing mode and replay window (the store
/// compares them in the statement that writes the run, holding the row); a call it refuses
/// is checked again against a fresh read before it is answered 401. So a rotation or an edit
/// made through any replica takes effect at once everywhere, as the contract says. Unknown
/// public ids are not cached. At most [`WebhookTriggers::CAPACITY`] triggers are kept; when
/// full, the cache starts over.
#[derive(Debug, Default)]
pub struct WebhookTriggers {
    by_public_id: Mutex<HashMap<String, Arc<WebhookTrigger>>>,
}

/// A webhook trigger, and whether it came from the cache rather than the database.
pub(crate) struct Found {
    pub(crate) trigger: Arc<WebhookTrigger>,
    pub(crate) cached: bool,
}

impl WebhookTriggers {
    /// The most triggers kept.
    pub const CAPACITY: usize = 10_000;

    /// The trigger from the cache, else read.
    pub(crate) async fn get(&self, store: &Store, public_id: &str) -> StoreResult<Option<Found>> {
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
            }
        }
        Ok(read)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<WebhookTrigger>>> {
        self.by_public_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
