//! What every handler can reach.

use nexus_shared::{Store, coord::Coordination};

/// Shared state of the API's handlers (cheap to clone).
#[derive(Clone, Debug)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Rate limits and replay memory (Redis, or in process).
    pub coordination: Coordination,
    /// Base of webhook URLs.
    pub public_url: String,
    /// Sustained webhook calls per trigger and second.
    pub webhook_rate: u32,
    /// Webhook burst per trigger.
    pub webhook_burst: u32,
}
