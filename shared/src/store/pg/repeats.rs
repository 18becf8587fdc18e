//! A sender's repeat of a delivery already accepted, answered from a read.
//!
//! When the group write of an acceptance wrote nothing, the call is decided again holding its
//! trigger `FOR SHARE` — needed when the answer writes (a run, a remembered signature), but a
//! cost when many repeats of deliveries arrive together: each holds the trigger row in its own
//! transaction, and concurrent share locks on one row are slow in Postgres (they become one
//! multi-transaction lock that each further locker rewrites). A repeat that remembers nothing
//! (no signature: a delivery id or a bearer call's key) writes nothing, so it is answered from
//! one plain read: the trigger as current, enabled and active, and the run the key already has.
//! A change of the trigger committed after that read is a change after the answer. Anything
//! else — a changed or inactive trigger, a key without a run — goes the locked way, which
//! gives the contract's answer for it.

use sqlx::PgPool;

use super::runs::fetch_run;
use crate::{
    model::{RoutineStatus, SigningMode},
    store::{Accepted, NewRun, StoreResult, WebhookTrigger, runs::replay},
};

/// The answer to `new`, a call `trigger` did not write because its idempotency key was taken,
/// when it can be given without holding the trigger; `None` to decide it the locked way.
pub(super) async fn answer_repeat(
    pool: &PgPool,
    trigger: &WebhookTrigger,
    new: &NewRun,
) -> StoreResult<Option<StoreResult<Accepted>>> {
    let (Some(key), None) = (&new.idempotency_key, &new.signature) else {
        return Ok(None);
    };
    let mut conn = pool.acquire().await?;
    let found = sqlx::query!(
        r#"SELECT t.enabled, r.status AS "status: RoutineStatus", t.secret_enc AS "secret_enc!",
                  t.signing_mode AS "signing_mode!: SigningMode",
                  t.replay_window_sec AS "replay_window_sec!",
                  (SELECT id FROM routine_runs
                   WHERE routine_id = t.routine_id AND idempotency_key = $2) AS existing
           FROM routine_triggers t JOIN routines r ON r.id = t.routine_id
           WHERE t.id = $1"#,
        trigger.id,
        key.as_str()
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(found) = found else {
        return Ok(None);
    };
    let usable = trigger.is_current(
        &found.secret_enc,
        found.signing_mode,
        found.replay_window_sec,
    ) && found.enabled
        && found.status == RoutineStatus::Active;
    let Some(existing) = found.existing.filter(|_| usable) else {
        return Ok(None);
    };
    let run = fetch_run(&mut conn, existing).await?;
    Ok(Some(replay(run, &new.payload)))
}
