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

    /// Counts the runs a batch inserted: `(id, scheduled_for, catch_up, trigger_id)` each.
    pub(crate) fn record(&mut self, window: &FireWindow, inserted: &[InsertedFire]) {
        self.dispatched += inserted.len();
        for (_, scheduled_for, catch_up, _) in inserted {
            if *scheduled_for > window.now {
                self.prepared += 1;
            }
            if !catch_up {
                self.lateness
                    .push((window.now - *scheduled_for).max(TimeDelta::zero()));
            }
        }
    }
}

/// A run a fire pass inserted: id, nominal time, catch-up flag, trigger.
pub(crate) type InsertedFire = (Uuid, DateTime<Utc>, bool, Uuid);

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
    for (_, scheduled_for, _, trigger) in inserted {
        let entry = fired.entry(*trigger).or_default();
        if *scheduled_for > window.now {
            entry.prepared = Some(
                entry
                    .prepared
                    .map_or(*scheduled_for, |p| p.min(*scheduled_for)),
            );
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

fn enumerate(schedule: &Schedule, first: DateTime<Utc>, window: &FireWindow, cap: usize) -> Fires {
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
        if now - t > grace {
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

    /// When a fire takes effect: its nominal time if that is still ahead (a prepared fire),
    /// otherwise now.
    pub(crate) fn effective(&self, scheduled_for: DateTime<Utc>) -> DateTime<Utc> {
        scheduled_for.max(self.now)
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
        let enumerated = enumerate(schedule, trigger.next_run_at, window, cap);
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
