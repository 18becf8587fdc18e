//! [`Store`], the handle every role holds on a storage backend.

use std::{fmt, ops::Deref, sync::Arc};

use super::{
    PgStore,
    storage::{SchedulerStorage, Storage, WorkerStorage},
};
use crate::{clock::SharedClock, crypto::SecretKey};

/// The handle every role holds: a storage backend behind [`Storage`] (cheap to clone).
#[derive(Clone)]
pub struct Store(Arc<dyn Storage>);

impl Store {
    /// A handle on `backend`.
    #[must_use]
    pub fn new(backend: impl Storage + 'static) -> Self {
        Self(Arc::new(backend))
    }

    /// A handle on the Postgres backend over `pool` (webhook URLs on the default public URL).
    #[must_use]
    pub fn postgres(pool: sqlx::PgPool, clock: SharedClock, key: &SecretKey) -> Self {
        Self::new(PgStore::new(pool, clock, key))
    }
}

impl Store {
    /// The scheduler's interface on the same backend.
    #[must_use]
    pub fn scheduler(self) -> Arc<dyn SchedulerStorage> {
        self.0
    }

    /// A worker's interface on the same backend.
    #[must_use]
    pub fn worker(self) -> Arc<dyn WorkerStorage> {
        self.0
    }
}

impl Deref for Store {
    type Target = dyn Storage;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<PgStore> for Store {
    fn from(backend: PgStore) -> Self {
        Self::new(backend)
    }
}
