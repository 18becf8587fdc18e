//! Everything the Nexus roles (api, scheduler, worker) share: configuration, domain types,
//! the Postgres store, cryptography, the clock, coordination (Redis or in process) and telemetry.

pub mod clock;
pub mod config;
pub mod coord;
pub mod crypto;
pub mod db;
pub mod engine;
mod group;
pub mod kv;
pub mod linger;
pub mod model;
pub mod ops;
pub mod outbound;
pub mod queue;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod telemetry;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use store::Store;
