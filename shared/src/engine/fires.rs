//! Schedule fires decided: which fires of a batch of due triggers are on time, prepared ahead
//! or missed, what each trigger's catch-up policy makes of the missed ones, and when each
//! trigger fires next. Pure: the caller passes the time (in a [`FireWindow`]) and the due
//! triggers it loaded; each backend writes the [`FirePlan`] in its own transaction.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::{
    engine::refusal::Refusal,
    model::CatchUpPolicy,
    schedule::{CronExpression, Schedule, TimeZone},
};

/// Most fires enumerated for one trigger in one pass (a year of a per-minute schedule).
const MAX_ENUMERATED: usize = 600_000;

/// What a fire pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FireReport {
    /// Triggers handled.
    pub triggers: usize,
    /// Runs created to be dispatched (on time or caught up).
    pub dispatched: usize,
    /// Runs recording missed fires (`skipped`).
    pub skipped_runs: usize,
    /// Fires counted as missed in total.
    pub missed_fires: usize,
    /// Of `dispatched`, the fires prepared ahead of their nominal time.
    pub prepared: usize,
    /// Fire lateness of the on-time fires (handling time minus nominal time; zero for a fire
    /// prepared ahead).
    pub lateness: Vec<TimeDelta>,
}

impl FireReport {
    pub(crate) fn merge(&mut self, other: Self) {
        self.triggers += other.triggers;
        self.dispatched += other.dispatched;
        self.skipped_runs += other.skipped_runs;
        self.missed_fires += other.missed_fires;
        self.prepared += other.prepared;
        self.lateness.extend(other.lateness);
    }

    /// Counts the runs a batch inserted: `(id, fire_at, catch_up, trigger_id)` each.
    pub(crate) fn record(&mut self, window: &FireWindow, inserted: &[InsertedFire]) {
        self.dispatched += inserted.len();
        for (_, fire_at, catch_up, _) in inserted {
            if *fire_at > window.now {
                self.prepared += 1;
            }
            if !catch_up {
                self.lateness
                    .push((window.now - *fire_at).max(TimeDelta::zero()));
            }
        }
    }
}

/// A run a fire pass inserted: id, the instant its fire takes effect (nominal time plus the
/// jitter offset), catch-up flag, trigger.
pub(crate) type InsertedFire = (Uuid, DateTime<Utc>, bool, Uuid);

/// The largest `jitterSec` a schedule trigger may set.
pub const MAX_JITTER_SEC: i32 = 3600;

/// The jitter offset of the fire of `trigger` at nominal time `nominal`: in
/// `[0, jitter_sec)` seconds, at millisecond resolution, derived from the trigger id and the
/// nominal instant alone (SHA-256 of both), so every process at every time computes the same
/// offset for the same fire, and offsets spread evenly over the range. Zero when
/// `jitter_sec` is 0 (or out of range).
#[must_use]
pub fn jitter(trigger: Uuid, nominal: DateTime<Utc>, jitter_sec: i32) -> TimeDelta {
    use sha2::{Digest, Sha256};
    if jitter_sec <= 0 {
        return TimeDelta::zero();
    }
    let range = u64::from(jitter_sec.min(MAX_JITTER_SEC).unsigned_abs()) * 1000;
    let mut hash = Sha256::new();
    hash.update(trigger.as_bytes());
    hash.update(nominal.timestamp_millis().to_be_bytes());
    let digest = hash.finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let offset = u64::from_be_bytes(head) % range;
    TimeDelta::milliseconds(i64::try_from(offset).unwrap_or(0))
}

/// When the fire of `trigger` at `nominal` takes effect: `nominal` plus its jitter offset.
#[must_use]
pub fn fire_instant(trigger: Uuid, nominal: DateTime<Utc>, jitter_sec: i32) -> DateTime<Utc> {
    nominal + jitter(trigger, nominal, jitter_sec)
}

/// What a batch's fires of one trigger change on it: the latest fire that happened (at the
/// pass's now) and the earliest fire prepared ahead (at its nominal time).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fired {
    /// The pass's now, when a fire of the trigger was due by then.
    pub(crate) now: Option<DateTime<Utc>>,
    /// The nominal time of the earliest fire prepared ahead.
    pub(crate) prepared: Option<DateTime<Utc>>,
}

/// What each trigger that fired in a batch records. A prepared fire is not recorded as fired:
/// it is kept apart (`prepared_fire_at`) until its nominal time, so nothing of it shows before
/// then (see `TriggerRow::into_trigger`).
pub(crate) fn fired_at(window: &FireWindow, inserted: &[InsertedFire]) -> HashMap<Uuid, Fired> {
    let mut fired: HashMap<Uuid, Fired> = HashMap::new();
    for (_, fire_at, _, trigger) in inserted {
        let entry = fired.entry(*trigger).or_default();
        if *fire_at > window.now {
            entry.prepared = Some(entry.prepared.map_or(*fire_at, |p| p.min(*fire_at)));
        } else {
            entry.now = Some(window.now);
        }
    }
    fired
}

/// A schedule trigger due in a fire pass, with what its routine's catch-up policy needs.
pub(crate) struct DueTrigger {
    pub(crate) id: Uuid,
    pub(crate) company_id: Uuid,
    pub(crate) routine_id: Uuid,
    pub(crate) cron: String,
    pub(crate) zone: String,
    pub(crate) next_run_at: DateTime<Utc>,
    pub(crate) catch_up_policy: CatchUpPolicy,
    pub(crate) catch_up_cap: i32,
    pub(crate) jitter_sec: i32,
}

/// The fires of one trigger between its `next_run_at` and the horizon.
pub(crate) struct Fires {
    on_time: Vec<DateTime<Utc>>,
    missed_count: usize,
    /// The oldest missed fire.
    missed_first: Option<DateTime<Utc>>,
    /// The most recent missed fires, oldest first, at most `cap` of them.
    missed_recent: VecDeque<DateTime<Utc>>,
    /// The newest missed fire that is not in `missed_recent`.
    older_last: Option<DateTime<Utc>>,
    next: Option<DateTime<Utc>>,
}

/// A trigger's fires from `first` to the horizon, split by whether each one's real instant
/// (nominal time plus jitter) is more than the grace before now.
/// `jitter` is the trigger's id and `jitterSec`.
fn enumerate(
    schedule: &Schedule,
    first: DateTime<Utc>,
    (trigger, jitter_sec): (Uuid, i32),
    window: &FireWindow,
    cap: usize,
) -> Fires {
    let FireWindow {
        now,
        horizon,
        grace,
    } = *window;
    let mut fires = Fires {
        on_time: Vec::new(),
        missed_count: 0,
        missed_first: None,
        missed_recent: VecDeque::new(),
        older_last: None,
        next: None,
    };
    let mut at = Some(first);
    let mut seen = 0;
    while let Some(t) = at {
        if t > horizon || seen >= MAX_ENUMERATED {
            break;
        }
        seen += 1;
        if now - fire_instant(trigger, t, jitter_sec) > grace {
            fires.missed_count += 1;
            fires.missed_first.get_or_insert(t);
            fires.missed_recent.push_back(t);
            if fires.missed_recent.len() > cap {
                fires.older_last = fires.missed_recent.pop_front();
            }
        } else {
            fires.on_time.push(t);
        }
        at = schedule.next_after(t);
    }
    fires.next = if at.is_some_and(|t| t > horizon) {
        at
    } else {
        schedule.next_after(horizon)
    };
    fires
}

/// When a fire pass runs and how far it reaches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FireWindow {
    /// The clock's now.
    pub(crate) now: DateTime<Utc>,
    /// Fires up to here are handled: `now` plus the lookahead.
    pub(crate) horizon: DateTime<Utc>,
    /// A fire handled later than this after its nominal time is missed.
    pub(crate) grace: TimeDelta,
}

impl FireWindow {
    pub(crate) fn new(now: DateTime<Utc>, grace: TimeDelta, lookahead: TimeDelta) -> Self {
        Self {
            now,
            horizon: now + lookahead.max(TimeDelta::zero()),
            grace,
        }
    }

    /// When a fire takes effect: its real instant (nominal time plus jitter) if that is still
    /// ahead (a prepared fire), otherwise now.
    pub(crate) fn effective(&self, fire_at: DateTime<Utc>) -> DateTime<Utc> {
        fire_at.max(self.now)
    }
}

/// Fires missed by one trigger that one `skipped` run records.
pub(crate) struct MissedFires {
    /// Index of the trigger in the batch.
    pub(crate) trigger: usize,
    pub(crate) reason: &'static str,
    pub(crate) count: usize,
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
}

/// What a batch of due triggers comes to: the runs to insert (on time and caught up), the
/// missed fires to record, and each trigger's next fire.
#[derive(Default)]
pub(crate) struct FirePlan {
    pub(crate) report: FireReport,
    pub(crate) missed: Vec<MissedFires>,
    pub(crate) fires: NewFires,
    pub(crate) next: Vec<(Uuid, Option<DateTime<Utc>>)>,
}

/// Plans a batch of due triggers in `window`: enumerates each one's fires from its
/// `next_run_at` to the horizon and applies its catch-up policy to those later than the grace.
pub(crate) fn plan_fires(due: &[DueTrigger], window: &FireWindow) -> FirePlan {
    let mut plan = FirePlan::default();
    let mut schedules: HashMap<(&str, &str), Option<Schedule>> = HashMap::new();
    for (index, trigger) in due.iter().enumerate() {
        plan.report.triggers += 1;
        let schedule = schedules
            .entry((&trigger.cron, &trigger.zone))
            .or_insert_with(|| {
                match (
                    CronExpression::parse(&trigger.cron),
                    TimeZone::parse(&trigger.zone),
                ) {
                    (Ok(cron), Ok(zone)) => Some(Schedule::new(cron, zone)),
                    _ => None,
                }
            });
        let schedule = match schedule {
            Some(schedule) => &*schedule,
            None => {
                tracing::error!(trigger_id = %trigger.id, "stored schedule no longer parses; disabling its next fire");
                plan.next.push((trigger.id, None));
                continue;
            }
        };
        let cap = usize::try_from(trigger.catch_up_cap).unwrap_or(1).max(1);
        let enumerated = enumerate(
            schedule,
            trigger.next_run_at,
            (trigger.id, trigger.jitter_sec),
            window,
            cap,
        );
        plan.report.missed_fires += enumerated.missed_count;
        match trigger.catch_up_policy {
            CatchUpPolicy::SkipMissed => {
                if let (Some(from), Some(to)) = (
                    enumerated.missed_first,
                    enumerated.missed_recent.back().copied(),
                ) {
                    plan.missed.push(MissedFires {
                        trigger: index,
                        reason: "missed_schedule",
                        count: enumerated.missed_count,
                        from,
                        to,
                    });
                    plan.report.skipped_runs += 1;
                }
            }
            CatchUpPolicy::EnqueueMissedWithCap => {
                let older = enumerated.missed_count - enumerated.missed_recent.len();
                if let (true, Some(from), Some(to)) =
                    (older > 0, enumerated.missed_first, enumerated.older_last)
                {
                    plan.missed.push(MissedFires {
                        trigger: index,
                        reason: "catch_up_cap",
                        count: older,
                        from,
                        to,
                    });
                    plan.report.skipped_runs += 1;
                }
                for at in &enumerated.missed_recent {
                    plan.fires.push(trigger, *at, true);
                }
            }
        }
        for at in &enumerated.on_time {
            plan.fires.push(trigger, *at, false);
        }
        plan.next.push((trigger.id, enumerated.next));
    }
    plan
}

/// The runs a fire pass creates, one row per fire, inserted in one statement.
#[derive(Default)]
pub(crate) struct NewFires {
    pub(crate) companies: Vec<Uuid>,
    pub(crate) routines: Vec<Uuid>,
    pub(crate) triggers: Vec<Uuid>,
    pub(crate) scheduled_for: Vec<DateTime<Utc>>,
    /// Nominal time plus the trigger's jitter offset.
    pub(crate) fire_at: Vec<DateTime<Utc>>,
    pub(crate) catch_up: Vec<bool>,
    /// The time zone each fire was computed in (kept with the run for `{{date}}`).
    pub(crate) zones: Vec<String>,
}

impl NewFires {
    fn push(&mut self, trigger: &DueTrigger, scheduled_for: DateTime<Utc>, catch_up: bool) {
        self.companies.push(trigger.company_id);
        self.routines.push(trigger.routine_id);
        self.triggers.push(trigger.id);
        self.scheduled_for.push(scheduled_for);
        self.fire_at
            .push(fire_instant(trigger.id, scheduled_for, trigger.jitter_sec));
        self.catch_up.push(catch_up);
        self.zones.push(trigger.zone.clone());
    }
}

/// What the scheduler epoch a fire pass finds in the database means for a leader of epoch
/// `ours`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochCheck {
    /// Ours is newer: this is the first write of a new term, which moves the epoch forward.
    Newer,
    /// Ours is the epoch that writes.
    Current,
}

/// The fence of a fire pass (`check_epoch(found, ours)`): a leader whose epoch is older than the one that last wrote was
/// deposed, and writes nothing.
///
/// # Errors
/// [`Refusal::Deposed`] with the epoch found.
pub fn check_epoch(found: i64, ours: i64) -> Result<EpochCheck, Refusal> {
    match found.cmp(&ours) {
        std::cmp::Ordering::Less => Ok(EpochCheck::Newer),
        std::cmp::Ordering::Equal => Ok(EpochCheck::Current),
        std::cmp::Ordering::Greater => Err(Refusal::Deposed { current: found }),
    }
}

#[cfg(test)]
mod tests;
