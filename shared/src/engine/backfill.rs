//! Backfill: the nominal fires of a routine's schedule triggers over a past range, computed
//! exactly as the scheduler computes live fires (the same [`Schedule`], so daylight-saving
//! rules are the same), bounded, oldest first. Which of them already have a run is the
//! store's to find (the unique `(trigger_id, scheduled_for)` key of runs).

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::{
    engine::refusal::{MAX_BACKFILL_FIRES, Refusal},
    schedule::{CronExpression, Schedule, TimeZone},
};

/// A schedule trigger a backfill covers.
#[derive(Debug, Clone)]
pub struct BackfillTrigger {
    /// The trigger.
    pub id: Uuid,
    /// Its cron expression as stored.
    pub cron: String,
    /// Its time zone as stored.
    pub zone: String,
}

/// One fire to backfill: trigger, nominal time, and the zone it was computed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillFire {
    /// The trigger.
    pub trigger_id: Uuid,
    /// The nominal time (the run's `scheduledFor`).
    pub scheduled_for: DateTime<Utc>,
    /// The trigger's time zone.
    pub zone: String,
}

/// Every nominal fire of `triggers` in `[from, to)`, oldest first (ties by trigger id).
///
/// # Errors
/// [`Refusal::BackfillTooLarge`] when there are more than [`MAX_BACKFILL_FIRES`] (counting
/// stops there, so a huge range costs no more than that).
pub fn backfill_fires(
    triggers: &[BackfillTrigger],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<BackfillFire>, Refusal> {
    let mut fires = Vec::new();
    for trigger in triggers {
        let (Ok(cron), Ok(zone)) = (
            CronExpression::parse(&trigger.cron),
            TimeZone::parse(&trigger.zone),
        ) else {
            // Validated on the way in; a stored schedule that no longer parses has no fires.
            continue;
        };
        let schedule = Schedule::new(cron, zone);
        for at in schedule
            .fires_after(from - TimeDelta::milliseconds(1))
            .take_while(|at| *at < to)
        {
            if fires.len() == MAX_BACKFILL_FIRES {
                return Err(Refusal::BackfillTooLarge);
            }
            fires.push(BackfillFire {
                trigger_id: trigger.id,
                scheduled_for: at,
                zone: trigger.zone.clone(),
            });
        }
    }
    fires.sort_by_key(|f| (f.scheduled_for, f.trigger_id));
    Ok(fires)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    fn trigger(n: u128, cron: &str, zone: &str) -> BackfillTrigger {
        BackfillTrigger {
            id: Uuid::from_u128(n),
            cron: cron.to_owned(),
            zone: zone.to_owned(),
        }
    }

    #[test]
    fn the_range_is_half_open_merged_oldest_first() {
        let triggers = [
            trigger(2, "0 * * * *", "UTC"),
            trigger(1, "30 * * * *", "UTC"),
        ];
        let fires = backfill_fires(
            &triggers,
            at("2026-12-01T10:00:00Z"),
            at("2026-12-01T12:00:00Z"),
        )
        .expect("fires");
        let got: Vec<(u128, String)> = fires
            .iter()
            .map(|f| {
                (
                    f.trigger_id.as_u128(),
                    f.scheduled_for.format("%H:%M").to_string(),
                )
            })
            .collect();
        let want = [(2, "10:00"), (1, "10:30"), (2, "11:00"), (1, "11:30")];
        assert_eq!(
            got,
            want.map(|(n, t)| (n, t.to_owned())).to_vec(),
            "from included, to excluded"
        );
    }

    #[test]
    fn more_than_a_thousand_fires_are_refused_and_a_thousand_are_not() {
        let minutely = [trigger(1, "* * * * *", "UTC")];
        let from = at("2026-12-01T00:00:00Z");
        let fires = backfill_fires(&minutely, from, from + TimeDelta::minutes(1000));
        assert_eq!(fires.map(|f| f.len()), Ok(1000));
        let fires = backfill_fires(&minutely, from, from + TimeDelta::minutes(1001));
        assert_eq!(fires, Err(Refusal::BackfillTooLarge));
        // A range of centuries costs no more than the first 1,001 fires.
        let fires = backfill_fires(&minutely, at("1970-01-01T00:00:00Z"), from);
        assert_eq!(fires, Err(Refusal::BackfillTooLarge));
        // From the first instant a request can name: bounded, no overflow.
        let yearly = [trigger(1, "0 0 1 1 *", "Europe/Amsterdam")];
        let fires = backfill_fires(&yearly, at("0000-01-01T00:00:00Z"), from);
        assert_eq!(fires, Err(Refusal::BackfillTooLarge));
        let fires = backfill_fires(
            &yearly,
            at("0000-01-01T00:00:00Z"),
            at("0100-01-01T00:00:00Z"),
        );
        assert!(fires.is_ok_and(|f| f.len() <= 100));
    }

    #[test]
    fn daylight_saving_days_give_the_live_schedules_instants() {
        // Europe/Amsterdam springs forward on 2026-03-29 (02:00 → 03:00) and falls back on
        // 2026-10-25 (03:00 → 02:00): a daily 02:30 fires at 03:00 CEST, then once at the
        // first 02:30; a quarter-hourly pattern keeps its real-time cadence.
        let daily = [trigger(1, "30 2 * * *", "Europe/Amsterdam")];
        let spring = backfill_fires(
            &daily,
            at("2026-03-28T12:00:00Z"),
            at("2026-03-30T12:00:00Z"),
        )
        .expect("fires");
        let instants: Vec<_> = spring.iter().map(|f| f.scheduled_for).collect();
        assert_eq!(
            instants,
            [at("2026-03-29T01:00:00Z"), at("2026-03-30T00:30:00Z")]
        );
        let fall = backfill_fires(
            &daily,
            at("2026-10-24T12:00:00Z"),
            at("2026-10-26T12:00:00Z"),
        )
        .expect("fires");
        let instants: Vec<_> = fall.iter().map(|f| f.scheduled_for).collect();
        assert_eq!(
            instants,
            [at("2026-10-25T00:30:00Z"), at("2026-10-26T01:30:00Z")]
        );
        let quarterly = [trigger(1, "*/15 * * * *", "Europe/Amsterdam")];
        let fall = backfill_fires(
            &quarterly,
            at("2026-10-24T22:00:00Z"),
            at("2026-10-25T23:00:00Z"),
        )
        .expect("fires");
        assert_eq!(fall.len(), 100, "a fall-back day has 25 hours");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// A backfill's instants are the live schedule's: the same oracle the cron property
        /// test checks every fire against (a minute-by-minute walk of the contract's rules),
        /// over 16 hours around daylight-saving changes in many zones.
        #[test]
        fn backfilled_instants_agree_with_the_cron_oracle(
            expr in crate::schedule::tests::expression(),
            (zone, from) in crate::schedule::tests::zone_and_start(),
        ) {
            // 16 hours: at most 960 fires even for a minutely pattern, within the bound.
            let to = from + TimeDelta::hours(16);
            let triggers = [trigger(1, &expr, zone)];
            let fires = backfill_fires(&triggers, from, to).expect("within the bound");
            let got: Vec<_> = fires.iter().map(|f| f.scheduled_for).collect();
            let schedule = Schedule::new(
                CronExpression::parse(&expr).expect("expression"),
                TimeZone::parse(zone).expect("zone"),
            );
            let minute = TimeDelta::minutes(1);
            // The oracle covers (a, b]; a backfill [from, to) of minute-aligned bounds.
            let want = crate::schedule::tests::oracle(&schedule, from - minute, to - minute);
            proptest::prop_assert_eq!(got, want, "{} in {}", expr, zone);
        }
    }
}
