//! The product's rules, decided once for every storage backend. Nothing here reads or writes
//! a database or reads a clock: each operation of a backend loads what a decision needs, asks
//! the engine with the time it was given, and writes the outcome in its own transaction.
//!
//! - [`access`]: who may do what (the board, an agent within its company and its routines).
//! - [`backfill`]: the nominal fires of a past range, as the live schedule has them.
//! - [`dispatch`]: what a routine's state and its catch-up and concurrency policies make of
//!   each run of a batch.
//! - [`fires`]: which fires of the due schedule triggers are on time, prepared ahead or
//!   missed, what the catch-up policy makes of the missed ones, and each trigger's next fire.
//! - [`health`]: a routine's pause state, run timeouts, pausing itself after failures, and the
//!   events a change of runs announces.
//! - [`notify`]: which channels receive an event, and what a notification says.
//! - [`lifecycle`]: what a change of state carries along (a closed issue ends its run).
//! - [`retention`]: which finished history is old enough to delete, in which units.
//! - [`render`]: what a routine's title and description templates become for one run.
//! - [`rotation`]: what a secret rotation keeps of the secret it replaces.
//! - [`tasks`]: queued work as one type, parsed once, and what a failed attempt leads to.
//! - [`refusal`]: every refusal, with its error code, and the lifecycle rules that refuse.

pub mod access;
pub mod backfill;
pub mod dispatch;
pub mod fires;
pub mod health;
pub mod lifecycle;
pub mod notify;
pub mod refusal;
pub mod render;
pub mod retention;
pub mod rotation;
pub mod tasks;
