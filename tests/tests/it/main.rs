//! Black-box tests of the API against real Postgres and Redis: each test on its own database.

mod access;
mod activity;
mod agents;
mod auth;
mod console_api;
mod deploy;
mod dispatch;
mod edges;
mod events;
mod heartbeats;
mod hostile;
mod issues;
mod limits;
mod logs;
mod notifications;
mod ops;
mod pauses;
mod relay;
mod routine_access;
mod routines;
mod runs;
mod scheduler;
mod triggers;
mod validation;
mod wakeups;
mod webhooks;
