//! Fire planning without a database: enumeration, the grace, the lookahead, both catch-up
//! policies, the report.

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").to_utc()
}

/// A trigger without jitter.
const NO_JITTER: (Uuid, i32) = (Uuid::nil(), 0);

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
    let fires = enumerate(&schedule, at("2026-11-29T08:00:00Z"), NO_JITTER, &window, 3);
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
    let fires = enumerate(&schedule, at("2026-11-29T10:00:00Z"), NO_JITTER, &window, 1);
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
    let fires = enumerate(&schedule, at("2026-11-29T10:00:00Z"), NO_JITTER, &window, 1);
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
    let fires = enumerate(
        &schedule,
        at("2026-11-29T10:00:00Z"),
        NO_JITTER,
        &on_the_grace,
        1,
    );
    assert_eq!((fires.on_time.len(), fires.missed_count), (1, 0));
    let past_it = FireWindow::new(
        at("2026-11-29T10:01:00.001Z"),
        TimeDelta::seconds(60),
        TimeDelta::zero(),
    );
    let fires = enumerate(
        &schedule,
        at("2026-11-29T10:00:00Z"),
        NO_JITTER,
        &past_it,
        1,
    );
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
        jitter_sec: 0,
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

#[test]
fn jitter_offsets_stay_in_their_range_and_depend_on_the_trigger_and_the_nominal_time_only() {
    let nominal = at("2026-12-07T09:00:00Z");
    let trigger = Uuid::from_u128(7);
    assert_eq!(jitter(trigger, nominal, 0), TimeDelta::zero());
    for sec in [1, 60, 3600] {
        for n in 0..500u128 {
            let offset = jitter(Uuid::from_u128(n), nominal, sec);
            assert!(offset >= TimeDelta::zero() && offset < TimeDelta::seconds(sec.into()));
        }
    }
    // The same fire always gets the same offset (no process state, no clock).
    assert_eq!(jitter(trigger, nominal, 60), jitter(trigger, nominal, 60));
    assert_eq!(
        fire_instant(trigger, nominal, 60),
        nominal + jitter(trigger, nominal, 60)
    );
    // A pinned value: the derivation (SHA-256 of id and nominal milliseconds) never changes
    // between releases, or a restart during an upgrade would move prepared fires.
    assert_eq!(
        jitter(trigger, nominal, 3600),
        TimeDelta::milliseconds(PINNED_OFFSET_MS)
    );
    // Another nominal time of the same trigger, and another trigger, get other offsets.
    assert_ne!(
        jitter(trigger, at("2026-12-08T09:00:00Z"), 3600),
        jitter(trigger, nominal, 3600)
    );
    assert_ne!(
        jitter(Uuid::from_u128(8), nominal, 3600),
        jitter(trigger, nominal, 3600)
    );
}

const PINNED_OFFSET_MS: i64 = 1_192_508;

#[test]
fn jitter_offsets_of_ten_thousand_triggers_are_uniform() {
    // Chi-square over 60 one-second bins of a 60 s jitter, 10,000 triggers with fixed ids:
    // 59 degrees of freedom, 99.9th percentile 98.3. The ids are fixed, so the statistic is
    // too: this checks the derivation spreads, not luck.
    let nominal = at("2026-12-07T09:00:00Z");
    let mut bins = [0u32; 60];
    for n in 0..10_000u128 {
        let id = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 + n * 7919);
        let offset = jitter(id, nominal, 60).num_milliseconds();
        bins[usize::try_from(offset / 1000).expect("bin")] += 1;
    }
    let expected = 10_000.0 / 60.0;
    let chi: f64 = bins
        .iter()
        .map(|&b| (f64::from(b) - expected).powi(2) / expected)
        .sum();
    assert!(chi < 98.3, "chi-square {chi:.1} over {bins:?}");
    assert!(bins.iter().all(|&b| b > 100), "{bins:?}");
}

#[test]
fn the_grace_counts_from_the_jittered_instant() {
    let schedule = Schedule::new(
        CronExpression::parse("0 10 * * *").expect("cron"),
        TimeZone::UTC,
    );
    let nominal = at("2026-11-29T10:00:00Z");
    let trigger = (Uuid::from_u128(42), 600);
    let real = fire_instant(trigger.0, nominal, trigger.1);
    assert!(real > nominal, "this trigger's offset is not zero");
    let grace = TimeDelta::seconds(60);
    // A grace after the real instant: on time (it would be missed counted from the nominal
    // time once the offset is over the grace).
    let on_time = FireWindow::new(real + grace, grace, TimeDelta::zero());
    let fires = enumerate(&schedule, nominal, trigger, &on_time, 1);
    assert_eq!((fires.on_time.len(), fires.missed_count), (1, 0));
    let late = FireWindow::new(
        real + grace + TimeDelta::milliseconds(1),
        grace,
        TimeDelta::zero(),
    );
    let fires = enumerate(&schedule, nominal, trigger, &late, 1);
    assert_eq!((fires.on_time.len(), fires.missed_count), (0, 1));
}

#[test]
fn a_jittered_fire_takes_effect_at_its_real_instant() {
    // The plan keeps the nominal time as the run's key and the real instant as when it takes
    // effect; the report counts it as prepared while that is ahead.
    let mut trigger = due(
        42,
        "0 10 * * *",
        CatchUpPolicy::SkipMissed,
        1,
        "2026-11-29T10:00:00Z",
    );
    trigger.jitter_sec = 600;
    let nominal = at("2026-11-29T10:00:00Z");
    let real = fire_instant(trigger.id, nominal, 600);
    let window = FireWindow::new(nominal, TimeDelta::seconds(60), TimeDelta::seconds(5));
    let plan = plan_fires(std::slice::from_ref(&trigger), &window);
    assert_eq!(plan.fires.scheduled_for, vec![nominal]);
    assert_eq!(plan.fires.fire_at, vec![real]);
    let inserted = [(Uuid::from_u128(1), real, false, trigger.id)];
    let mut report = FireReport::default();
    report.record(&window, &inserted);
    assert_eq!(
        (report.prepared, report.lateness.clone()),
        (1, vec![TimeDelta::zero()])
    );
    assert_eq!(
        fired_at(&window, &inserted)[&trigger.id].prepared,
        Some(real)
    );
    assert_eq!(window.effective(real), real);
}
