//! Schedule fires decided: which fires of a batch of due triggers are on time, prepared ahead
//! or missed, what each trigger's catch-up policy makes of the missed ones, and when each
//! trigger fires next. Pure: the caller passes the time (in a [`FireWindow`]) and the due
//! triggers it loaded; each backend writes the [`FirePlan`] in its own transaction.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::{
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    #[test]
    fn enumeration_splits_on_time_and_missed_fires_and_keeps_the_most_recent() {
        let schedule = Schedule::new(
            CronExpression::parse("*/15 * * * *").expect("cron"),
            TimeZone::UTC,
        );
        let window = FireWindow::new(
            at("2026-11-29T10:00:30Z"),
            TimeDelta::seconds(60),
            TimeDelta::zero(),
        );
        let fires = enumerate(&schedule, at("2026-11-29T08:00:00Z"), &window, 3);
        assert_eq!(fires.on_time, vec![at("2026-11-29T10:00:00Z")]);
        assert_eq!(fires.missed_count, 8);
        assert_eq!(fires.missed_first, Some(at("2026-11-29T08:00:00Z")));
        let recent: Vec<_> = fires.missed_recent.iter().copied().collect();
        assert_eq!(
            recent,
            vec![
                at("2026-11-29T09:15:00Z"),
                at("2026-11-29T09:30:00Z"),
                at("2026-11-29T09:45:00Z")
            ]
        );
        assert_eq!(fires.older_last, Some(at("2026-11-29T09:00:00Z")));
        assert_eq!(fires.next, Some(at("2026-11-29T10:15:00Z")));
    }

    #[test]
    fn a_lookahead_prepares_the_fires_up_to_its_horizon_and_none_beyond() {
        let schedule = Schedule::new(
            CronExpression::parse("* * * * *").expect("cron"),
            TimeZone::UTC,
        );
        let now = at("2026-11-29T09:59:57Z");
        // Three seconds ahead: the 10:00 fire is prepared, triggered at its nominal time.
        let window = FireWindow::new(now, TimeDelta::seconds(60), TimeDelta::seconds(3));
        let fires = enumerate(&schedule, at("2026-11-29T10:00:00Z"), &window, 1);
        assert_eq!(fires.on_time, vec![at("2026-11-29T10:00:00Z")]);
        assert_eq!(fires.missed_count, 0);
        assert_eq!(fires.next, Some(at("2026-11-29T10:01:00Z")));
        assert_eq!(
            window.effective(at("2026-11-29T10:00:00Z")),
            at("2026-11-29T10:00:00Z")
        );
        assert_eq!(window.effective(at("2026-11-29T09:59:00Z")), now);
        // A millisecond short of it: nothing, and the next fire stays where it is.
        let window = FireWindow::new(now, TimeDelta::seconds(60), TimeDelta::milliseconds(2999));
        let fires = enumerate(&schedule, at("2026-11-29T10:00:00Z"), &window, 1);
        assert!(fires.on_time.is_empty());
        assert_eq!(fires.next, Some(at("2026-11-29T10:00:00Z")));
        // A negative lookahead is none.
        let window = FireWindow::new(now, TimeDelta::seconds(60), TimeDelta::seconds(-5));
        assert_eq!(window.horizon, now);
    }

    #[test]
    fn a_report_counts_prepared_fires_with_no_lateness_and_each_trigger_fires_at_its_latest() {
        let now = at("2026-11-29T09:59:58Z");
        let window = FireWindow::new(now, TimeDelta::seconds(60), TimeDelta::seconds(5));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let inserted = vec![
            (Uuid::from_u128(10), at("2026-11-29T09:59:00Z"), false, a),
            (Uuid::from_u128(11), at("2026-11-29T10:00:00Z"), false, a),
            (Uuid::from_u128(12), at("2026-11-29T09:58:00Z"), true, b),
        ];
        let mut report = FireReport::default();
        report.record(&window, &inserted);
        assert_eq!((report.dispatched, report.prepared), (3, 1));
        assert_eq!(
            report.lateness,
            vec![TimeDelta::seconds(58), TimeDelta::zero()],
            "catch-up fires have no lateness; a prepared one is not late"
        );
        let fired = fired_at(&window, &inserted);
        assert_eq!(
            fired[&a],
            Fired {
                now: Some(now),
                prepared: Some(at("2026-11-29T10:00:00Z"))
            },
            "a prepared fire is kept apart from the fire that happened"
        );
        assert_eq!(
            fired[&b],
            Fired {
                now: Some(now),
                prepared: None
            }
        );
    }

    #[test]
    fn reports_merge_and_a_fire_at_the_pass_time_is_neither_prepared_nor_late() {
        let now = at("2026-11-29T10:00:00Z");
        let window = FireWindow::new(now, TimeDelta::seconds(60), TimeDelta::seconds(5));
        let trigger = Uuid::from_u128(1);
        let inserted = vec![(Uuid::from_u128(10), now, false, trigger)];
        let mut report = FireReport::default();
        report.record(&window, &inserted);
        assert_eq!((report.dispatched, report.prepared), (1, 0));
        assert_eq!(report.lateness, vec![TimeDelta::zero()]);
        assert_eq!(
            fired_at(&window, &inserted)[&trigger],
            Fired {
                now: Some(now),
                prepared: None
            }
        );
        let mut total = FireReport {
            triggers: 1,
            dispatched: 2,
            skipped_runs: 3,
            missed_fires: 4,
            prepared: 5,
            lateness: vec![TimeDelta::seconds(1)],
        };
        total.merge(FireReport {
            triggers: 10,
            dispatched: 20,
            skipped_runs: 30,
            missed_fires: 40,
            prepared: 50,
            lateness: vec![TimeDelta::seconds(2)],
        });
        assert_eq!(
            total,
            FireReport {
                triggers: 11,
                dispatched: 22,
                skipped_runs: 33,
                missed_fires: 44,
                prepared: 55,
                lateness: vec![TimeDelta::seconds(1), TimeDelta::seconds(2)],
            }
        );
    }

    #[test]
    fn a_fire_exactly_one_grace_late_is_on_time() {
        let schedule = Schedule::new(
            CronExpression::parse("0 10 * * *").expect("cron"),
            TimeZone::UTC,
        );
        let on_the_grace = FireWindow::new(
            at("2026-11-29T10:01:00Z"),
            TimeDelta::seconds(60),
            TimeDelta::zero(),
        );
        let fires = enumerate(&schedule, at("2026-11-29T10:00:00Z"), &on_the_grace, 1);
        assert_eq!((fires.on_time.len(), fires.missed_count), (1, 0));
        let past_it = FireWindow::new(
            at("2026-11-29T10:01:00.001Z"),
            TimeDelta::seconds(60),
            TimeDelta::zero(),
        );
        let fires = enumerate(&schedule, at("2026-11-29T10:00:00Z"), &past_it, 1);
        assert_eq!((fires.on_time.len(), fires.missed_count), (0, 1));
    }

    fn due(n: u128, cron: &str, policy: CatchUpPolicy, cap: i32, next: &str) -> DueTrigger {
        DueTrigger {
            id: Uuid::from_u128(n),
            company_id: Uuid::from_u128(100),
            routine_id: Uuid::from_u128(200 + n),
            cron: cron.to_owned(),
            zone: "Europe/Berlin".to_owned(),
            next_run_at: at(next),
            catch_up_policy: policy,
            catch_up_cap: cap,
        }
    }

    #[test]
    fn a_batch_plan_applies_each_triggers_catch_up_policy() {
        // The scheduler was away from 08:00 to 10:00:30 UTC; three quarter-hourly triggers.
        let window = FireWindow::new(
            at("2026-11-29T10:00:30Z"),
            TimeDelta::seconds(60),
            TimeDelta::zero(),
        );
        let batch = [
            due(
                1,
                "*/15 * * * *",
                CatchUpPolicy::SkipMissed,
                1,
                "2026-11-29T08:00:00Z",
            ),
            due(
                2,
                "*/15 * * * *",
                CatchUpPolicy::EnqueueMissedWithCap,
                2,
                "2026-11-29T08:00:00Z",
            ),
            due(
                3,
                "not a cron",
                CatchUpPolicy::SkipMissed,
                1,
                "2026-11-29T08:00:00Z",
            ),
        ];
        let plan = plan_fires(&batch, &window);
        assert_eq!(plan.report.triggers, 3);
        assert_eq!(
            plan.report.missed_fires, 16,
            "8 missed by each of the first two"
        );
        assert_eq!(plan.report.skipped_runs, 2);
        let missed: Vec<_> = plan
            .missed
            .iter()
            .map(|m| (m.trigger, m.reason, m.count, m.from, m.to))
            .collect();
        assert_eq!(
            missed,
            [
                (
                    0,
                    "missed_schedule",
                    8,
                    at("2026-11-29T08:00:00Z"),
                    at("2026-11-29T09:45:00Z")
                ),
                (
                    1,
                    "catch_up_cap",
                    6,
                    at("2026-11-29T08:00:00Z"),
                    at("2026-11-29T09:15:00Z")
                ),
            ]
        );
        // Runs: the first trigger's on-time fire; the second's two most recent missed fires
        // (caught up) and its on-time fire. The unparsable schedule fires nothing.
        let fires: Vec<_> = (0..plan.fires.triggers.len())
            .map(|i| {
                (
                    plan.fires.triggers[i],
                    plan.fires.scheduled_for[i],
                    plan.fires.catch_up[i],
                    plan.fires.zones[i].as_str(),
                    plan.fires.routines[i],
                )
            })
            .collect();
        let (one, two) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(
            fires,
            [
                (
                    one,
                    at("2026-11-29T10:00:00Z"),
                    false,
                    "Europe/Berlin",
                    Uuid::from_u128(201)
                ),
                (
                    two,
                    at("2026-11-29T09:30:00Z"),
                    true,
                    "Europe/Berlin",
                    Uuid::from_u128(202)
                ),
                (
                    two,
                    at("2026-11-29T09:45:00Z"),
                    true,
                    "Europe/Berlin",
                    Uuid::from_u128(202)
                ),
                (
                    two,
                    at("2026-11-29T10:00:00Z"),
                    false,
                    "Europe/Berlin",
                    Uuid::from_u128(202)
                ),
            ]
        );
        assert!(
            plan.fires
                .companies
                .iter()
                .all(|c| *c == Uuid::from_u128(100))
        );
        assert_eq!(
            plan.next,
            [
                (one, Some(at("2026-11-29T10:15:00Z"))),
                (two, Some(at("2026-11-29T10:15:00Z"))),
                (Uuid::from_u128(3), None),
            ]
        );
    }
}
