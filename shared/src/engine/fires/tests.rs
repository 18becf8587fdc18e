//! Fire planning without a database: enumeration, the grace, the lookahead, both catch-up
//! policies, the report.

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

#[test]
fn an_older_epoch_is_deposed_a_newer_one_moves_the_fence_forward() {
    assert_eq!(check_epoch(6, 7), Ok(EpochCheck::Newer));
    assert_eq!(check_epoch(7, 7), Ok(EpochCheck::Current));
    assert_eq!(check_epoch(8, 7), Err(Refusal::Deposed { current: 8 }));
}
