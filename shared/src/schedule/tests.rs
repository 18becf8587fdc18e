use chrono::{Datelike as _, NaiveDate, Timelike as _};
use proptest::prelude::*;

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("RFC 3339").to_utc()
}

fn schedule(expr: &str, zone: &str) -> Schedule {
    Schedule::new(
        CronExpression::parse(expr).expect(expr),
        TimeZone::parse(zone).expect(zone),
    )
}

fn fires(expr: &str, zone: &str, from: &str, to: &str) -> Vec<DateTime<Utc>> {
    let to = utc(to);
    schedule(expr, zone)
        .fires_after(utc(from))
        .take_while(|t| *t < to)
        .collect()
}

fn wall(t: DateTime<Utc>, zone: &str) -> String {
    TimeZone::parse(zone)
        .expect("zone")
        .wall(t)
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

#[test]
fn accepts_the_contract_dialect() {
    for ok in [
        "* * * * *",
        "*/15 * * * *",
        "0 9 * * 1-5",
        "0 9 * * MON-FRI",
        "30 2 1,15 * *",
        "0 0 * JAN,jul *",
        "0-30/10 8-18/2 * * *",
        "0 0 * * 7",
        "@hourly",
        "@DAILY",
        "@weekly",
        "@monthly",
        "@yearly",
        "  5 4 * * sun  ",
    ] {
        assert!(
            CronExpression::parse(ok).is_ok(),
            "{ok}: {:?}",
            CronExpression::parse(ok).err()
        );
    }
}

#[test]
fn refuses_everything_else_with_a_useful_message() {
    let cases = [
        ("0 0 * * * *", "must have 5 fields"),
        ("0 0 * * * * 2026", "must have 5 fields"),
        ("0 * * *", "got 4"),
        (
            "60 * * * *",
            "minute field \"60\": value 60 is out of range 0–59",
        ),
        (
            "* 24 * * *",
            "hour field \"24\": value 24 is out of range 0–23",
        ),
        (
            "* * 0 * *",
            "day-of-month field \"0\": value 0 is out of range 1–31",
        ),
        (
            "* * * 13 *",
            "month field \"13\": value 13 is out of range 1–12",
        ),
        (
            "* * * * 8",
            "day-of-week field \"8\": value 8 is out of range 0–7",
        ),
        ("* * L * *", "\"L\" is not a number"),
        ("* * * * 5#2", "the character '#' is not supported"),
        ("* * ? * *", "the character '?' is not supported"),
        ("*/0 * * * *", "step 0 is out of range"),
        ("30-10 * * * *", "runs backwards"),
        ("5/15 * * * *", "a step needs `*` or a range"),
        ("* * * FOO *", "one of JAN"),
        ("* * * * MON,", "empty list element"),
        ("@reboot", "not a supported macro"),
        ("@annually", "not a supported macro"),
        ("0 0 30 2 *", "never matches a real date"),
        ("", "must not be empty"),
    ];
    for (expr, expected) in cases {
        let err = CronExpression::parse(expr).expect_err(expr);
        assert!(
            err.contains(expected),
            "{expr:?}: {err:?} should contain {expected:?}"
        );
    }
}

#[test]
fn weekday_0_and_7_are_sunday() {
    let sunday = fires(
        "0 12 * * 0",
        "UTC",
        "2026-11-01T00:00:00Z",
        "2026-11-30T00:00:00Z",
    );
    let seven = fires(
        "0 12 * * 7",
        "UTC",
        "2026-11-01T00:00:00Z",
        "2026-11-30T00:00:00Z",
    );
    let named = fires(
        "0 12 * * SUN",
        "UTC",
        "2026-11-01T00:00:00Z",
        "2026-11-30T00:00:00Z",
    );
    assert_eq!(sunday, seven);
    assert_eq!(sunday, named);
    assert_eq!(sunday.len(), 5);
    assert!(sunday.iter().all(|t| t.weekday() == chrono::Weekday::Sun));
}

#[test]
fn day_of_month_or_day_of_week_when_both_are_restricted() {
    // The 13th, and every Friday.
    let got = fires(
        "0 9 13 * 5",
        "UTC",
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    );
    let days: Vec<u32> = got.iter().map(|t| t.day()).collect();
    assert_eq!(days, vec![6, 13, 20, 27]);
    let got = fires(
        "0 9 1 * MON",
        "UTC",
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    );
    let days: Vec<u32> = got.iter().map(|t| t.day()).collect();
    assert_eq!(days, vec![1, 2, 9, 16, 23, 30]);
    // Only one restricted: that one alone decides.
    let got = fires(
        "0 9 * * MON",
        "UTC",
        "2026-11-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    );
    assert_eq!(got.len(), 5);
}

#[test]
fn spring_forward_gap_shifts_to_the_first_valid_instant() {
    // Amsterdam 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    let got = fires(
        "30 2 * * *",
        "Europe/Amsterdam",
        "2026-03-28T00:00:00Z",
        "2026-03-31T00:00:00Z",
    );
    let walls: Vec<String> = got.iter().map(|t| wall(*t, "Europe/Amsterdam")).collect();
    assert_eq!(
        walls,
        ["2026-03-28 02:30", "2026-03-29 03:00", "2026-03-30 02:30"]
    );
    assert_eq!(got[1], utc("2026-03-29T01:00:00Z"));
    // New York 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    let got = fires(
        "30 2 * * *",
        "America/New_York",
        "2026-03-07T12:00:00Z",
        "2026-03-09T12:00:00Z",
    );
    assert_eq!(
        got,
        vec![utc("2026-03-08T07:00:00Z"), utc("2026-03-09T06:30:00Z")]
    );
    // Several times in one gap that shift to the same instant fire once, also with a real 03:00.
    let got = fires(
        "0,30 2,3 * * *",
        "America/New_York",
        "2026-03-08T05:00:00Z",
        "2026-03-08T09:00:00Z",
    );
    assert_eq!(
        got,
        vec![utc("2026-03-08T07:00:00Z"), utc("2026-03-08T07:30:00Z")]
    );
}

#[test]
fn fall_back_fixed_times_fire_once_at_the_first_occurrence() {
    // Amsterdam 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:30 happens twice.
    let got = fires(
        "30 2 * * *",
        "Europe/Amsterdam",
        "2026-10-24T12:00:00Z",
        "2026-10-26T12:00:00Z",
    );
    assert_eq!(
        got,
        vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
    );
    // New York 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00 UTC); 01:30 happens twice.
    let got = fires(
        "30 1 * * *",
        "America/New_York",
        "2026-10-31T12:00:00Z",
        "2026-11-02T12:00:00Z",
    );
    assert_eq!(
        got,
        vec![utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]
    );
    // Hours given as a list or range follow the same rule.
    let got = fires(
        "30 1-2 * * *",
        "America/New_York",
        "2026-11-01T04:00:00Z",
        "2026-11-01T09:00:00Z",
    );
    assert_eq!(
        got,
        vec![utc("2026-11-01T05:30:00Z"), utc("2026-11-01T07:30:00Z")]
    );
}

#[test]
fn wildcard_and_step_hours_keep_real_time_cadence() {
    let day = |zone: &str, date: &str| {
        let tz = TimeZone::parse(zone).expect("zone");
        let start = NaiveDate::parse_from_str(date, "%Y-%m-%d").expect("date");
        let from =
            tz.0.from_local_datetime(&start.and_hms_opt(0, 0, 0).expect("midnight"))
                .earliest()
                .expect("start");
        let to =
            tz.0.from_local_datetime(
                &(start + Duration::days(1))
                    .and_hms_opt(0, 0, 0)
                    .expect("midnight"),
            )
            .earliest()
            .expect("end");
        (from.to_utc() - Duration::seconds(1), to.to_utc())
    };
    for zone in ["Europe/Amsterdam", "America/New_York"] {
        let (fall, spring) = if zone == "Europe/Amsterdam" {
            ("2026-10-25", "2026-03-29")
        } else {
            ("2026-11-01", "2026-03-08")
        };
        let (from, to) = day(zone, fall);
        let fall_fires: Vec<_> = schedule("*/15 * * * *", zone)
            .fires_after(from)
            .take_while(|t| *t < to)
            .collect();
        assert_eq!(fall_fires.len(), 100, "{zone} fall-back day");
        assert!(
            fall_fires
                .windows(2)
                .all(|w| w[1] - w[0] == Duration::minutes(15)),
            "{zone} cadence"
        );
        let (from, to) = day(zone, spring);
        let spring_fires: Vec<_> = schedule("*/15 * * * *", zone)
            .fires_after(from)
            .take_while(|t| *t < to)
            .collect();
        assert_eq!(spring_fires.len(), 92, "{zone} spring-forward day");
        assert!(
            spring_fires
                .windows(2)
                .all(|w| w[1] - w[0] == Duration::minutes(15)),
            "{zone} cadence"
        );
        // A step in the hour field fires a repeated hour in both passes: Amsterdam repeats
        // 02:00 (in the set), New York repeats 01:00 (not in the set).
        let (from, to) = day(zone, fall);
        let two_hourly = schedule("0 */2 * * *", zone)
            .fires_after(from)
            .take_while(|t| *t < to)
            .count();
        assert_eq!(
            two_hourly,
            if zone == "Europe/Amsterdam" { 13 } else { 12 },
            "{zone}"
        );
    }
    // `30 * * * *` fires in both passes of the repeated hour.
    let got = fires(
        "30 * * * *",
        "America/New_York",
        "2026-11-01T04:00:00Z",
        "2026-11-01T08:00:00Z",
    );
    assert_eq!(
        got,
        vec![
            utc("2026-11-01T04:30:00Z"),
            utc("2026-11-01T05:30:00Z"),
            utc("2026-11-01T06:30:00Z"),
            utc("2026-11-01T07:30:00Z")
        ]
    );
}

#[test]
fn time_zones_are_iana_names() {
    assert_eq!(
        TimeZone::parse("Europe/Amsterdam").expect("known").name(),
        "Europe/Amsterdam"
    );
    assert_eq!(TimeZone::parse("UTC").expect("known"), TimeZone::UTC);
    let err = TimeZone::parse("europe/amsterdam").expect_err("case");
    assert!(err.contains("did you mean \"Europe/Amsterdam\""), "{err}");
    assert!(TimeZone::parse("Mars/Olympus_Mons").is_err());
    assert!(TimeZone::parse("").is_err());
}

/// The fires of `schedule` in `(from, to]`, found by checking every UTC minute: an independent
/// statement of the contract's rules.
pub(crate) fn oracle(
    schedule: &Schedule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let tz = schedule.zone.0;
    let expression = &schedule.expression;
    let start = from.timestamp().div_euclid(60) * 60 + 60;
    let mut out = Vec::new();
    let mut u = DateTime::from_timestamp(start, 0).expect("instant");
    while u <= to {
        let w = schedule.zone.wall(u);
        let first_occurrence = match tz.from_local_datetime(&w) {
            LocalResult::Ambiguous(a, _) => a.to_utc() == u,
            _ => true,
        };
        let normal = expression.matches(w) && (expression.cadence || first_occurrence);
        let previous_wall = schedule.zone.wall(u - Duration::minutes(1));
        let mut skipped = previous_wall + Duration::minutes(1);
        let mut gap = false;
        while !expression.cadence && skipped < w {
            gap |= expression.matches(skipped);
            skipped += Duration::minutes(1);
        }
        if normal || gap {
            out.push(u);
        }
        u += Duration::minutes(1);
    }
    out
}

fn field(max: u32) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_owned()),
        (1..=max.min(12)).prop_map(|n| format!("*/{n}")),
        (0..=max).prop_map(|n| n.to_string()),
        (0..=max, 0..=max).prop_map(|(a, b)| format!("{},{}", a.min(b), a.max(b))),
        (0..=max, 0..=max, 1..=4u32).prop_map(|(a, b, s)| format!("{}-{}/{s}", a.min(b), a.max(b))),
    ]
}

/// Hours: often the small hours, where daylight-saving changes happen.
fn hour_field() -> impl Strategy<Value = String> {
    prop_oneof![
        field(23),
        (0..=3u32).prop_map(|n| n.to_string()),
        (0..=3u32, 0..=3u32).prop_map(|(a, b)| format!("{},{}", a.min(b), a.max(b))),
        (0..=2u32).prop_map(|a| format!("{a}-{}", a + 1)),
    ]
}

/// Minutes: often on the half hour, where Lord Howe's 30-minute change happens.
fn minute_field() -> impl Strategy<Value = String> {
    prop_oneof![
        field(59),
        Just("0,30".to_owned()),
        (0..=59u32).prop_map(|n| n.to_string())
    ]
}

pub(crate) fn expression() -> impl Strategy<Value = String> {
    let dom = prop_oneof![3 => Just("*".to_owned()), 1 => (1..=28u32).prop_map(|d| d.to_string())];
    let dow = prop_oneof![3 => Just("*".to_owned()), 1 => (0..=7u32).prop_map(|d| d.to_string()), 1 => Just("1-5".to_owned())];
    (minute_field(), hour_field(), dom, dow)
        .prop_map(|(m, h, dom, dow)| format!("{m} {h} {dom} * {dow}"))
}

/// A zone and a start shortly before or after one of its 2026 offset changes (or any day, for
/// zones without daylight saving).
pub(crate) fn zone_and_start() -> impl Strategy<Value = (&'static str, DateTime<Utc>)> {
    const CHANGES: &[(&str, &str)] = &[
        ("Europe/Amsterdam", "2026-03-29T01:00:00Z"),
        ("Europe/Amsterdam", "2026-10-25T01:00:00Z"),
        ("America/New_York", "2026-03-08T07:00:00Z"),
        ("America/New_York", "2026-11-01T06:00:00Z"),
        ("Australia/Lord_Howe", "2026-04-04T15:00:00Z"),
        ("Australia/Lord_Howe", "2026-10-03T15:30:00Z"),
        ("America/Santiago", "2026-04-05T03:00:00Z"),
        ("America/Santiago", "2026-09-06T04:00:00Z"),
        ("Pacific/Chatham", "2026-04-04T14:00:00Z"),
        ("Pacific/Chatham", "2026-09-26T14:00:00Z"),
        ("Asia/Kolkata", "2026-06-01T00:00:00Z"),
        ("UTC", "2026-06-01T00:00:00Z"),
    ];
    (0..CHANGES.len(), -30 * 60..6 * 60i64)
        .prop_map(|(i, minutes)| (CHANGES[i].0, utc(CHANGES[i].1) + Duration::minutes(minutes)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn fires_strictly_increase_match_in_the_zone_and_agree_with_the_oracle(
        expr in expression(), (zone, from) in zone_and_start()
    ) {
        let schedule = schedule(&expr, zone);
        let to = from + Duration::hours(36);
        let got: Vec<_> = schedule.fires_after(from).take_while(|t| *t <= to).collect();
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "not strictly increasing");
        for t in &got {
            let w = schedule.zone.wall(*t);
            let shifted = !schedule.expression.cadence && !schedule.expression.matches(w);
            prop_assert!(schedule.expression.matches(w) || shifted, "{t} ({w}) does not match");
            prop_assert_eq!(w.second(), 0);
        }
        prop_assert_eq!(got, oracle(&schedule, from, to), "{} in {}", expr, zone);
    }
}

#[test]
fn an_expression_is_kept_as_written_and_compared_by_its_text() {
    let daily = CronExpression::parse("  0 9 * * MON-FRI ").expect("valid");
    assert_eq!(daily.as_str(), "0 9 * * MON-FRI");
    assert_eq!(format!("{daily:?}"), "CronExpression(\"0 9 * * MON-FRI\")");
    assert_eq!(
        daily,
        CronExpression::parse("0 9 * * MON-FRI").expect("valid")
    );
    // The same fires written differently are different expressions (what the user wrote is
    // what the API shows).
    assert_ne!(daily, CronExpression::parse("0 9 * * 1-5").expect("valid"));
}

#[test]
fn the_length_limit_counts_characters_as_written() {
    let padded = |len: usize| format!("{:<len$}", "0 0 * * *");
    assert!(CronExpression::parse(&padded(MAX_CRON_LEN)).is_ok());
    let err = CronExpression::parse(&padded(MAX_CRON_LEN + 1)).expect_err("too long");
    assert_eq!(err, format!("must be at most {MAX_CRON_LEN} characters"));
}

#[test]
fn messages_name_exactly_what_is_wrong() {
    let refused = |expr: &str| CronExpression::parse(expr).expect_err(expr);
    // The hint about seconds and years is for too many fields only.
    assert_eq!(
        refused("0 * * *"),
        "must have 5 fields (minute hour day-of-month month day-of-week), got 4"
    );
    assert!(refused("0 0 * * * *").ends_with("got 6; seconds and years are not supported"));
    // A step may be as large as the field's largest value, no larger.
    assert!(CronExpression::parse("*/59 */23 * * *").is_ok());
    assert_eq!(
        refused("*/60 * * * *"),
        "minute field \"*/60\": step 60 is out of range 1–59"
    );
    // A field without names says so without offering any.
    assert_eq!(
        refused("x * * * *"),
        "minute field \"x\": \"x\" is not a number from 0 to 59"
    );
    assert_eq!(
        refused("* * * x *"),
        "month field \"x\": \"x\" is not a number from 1 to 12 or one of JAN, FEB, MAR, APR, MAY, JUN, JUL, AUG, SEP, OCT, NOV, DEC"
    );
}

#[test]
fn from_inside_a_repeated_hour_a_fixed_time_waits_for_the_next_day() {
    // New York 2026-11-01: 01:00–02:00 happens twice; the second pass starts at 06:00 UTC.
    // "30 1 * * *" fired at the first 01:30 (05:30 UTC); asked from inside the second pass,
    // the next fire is the next day's, not the second 01:30.
    let s = schedule("30 1 * * *", "America/New_York");
    for after in ["2026-11-01T06:00:00Z", "2026-11-01T06:10:00Z"] {
        assert_eq!(
            s.next_after(utc(after)),
            Some(utc("2026-11-02T06:30:00Z")),
            "{after}"
        );
    }
    // A cadence fires in both passes.
    let s = schedule("30 * * * *", "America/New_York");
    assert_eq!(
        s.next_after(utc("2026-11-01T06:00:00Z")),
        Some(utc("2026-11-01T06:30:00Z"))
    );
}

#[test]
fn a_fixed_time_months_ahead_on_a_fall_back_day_is_its_first_occurrence() {
    // From February, the next "30 1 1 11 *" in New York is 2026-11-01 01:30 EDT (05:30 UTC),
    // the first of that day's two 01:30s.
    let s = schedule("30 1 1 11 *", "America/New_York");
    assert_eq!(
        s.next_after(utc("2026-02-01T12:00:00Z")),
        Some(utc("2026-11-01T05:30:00Z"))
    );
}

#[test]
fn a_cadence_skips_the_times_a_gap_removes_without_inventing_one() {
    // New York 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC); 02:30 does not exist, and
    // an hourly ":30" does not fire at the gap's end either.
    let got = fires(
        "30 * * * *",
        "America/New_York",
        "2026-03-08T05:00:00Z",
        "2026-03-08T09:00:00Z",
    );
    assert_eq!(
        got,
        vec![
            utc("2026-03-08T05:30:00Z"),
            utc("2026-03-08T06:30:00Z"),
            utc("2026-03-08T07:30:00Z"),
            utc("2026-03-08T08:30:00Z"),
        ]
    );
}

#[test]
fn a_fixed_time_in_a_two_hour_gap_fires_at_its_end() {
    // Antarctica/Troll 2026-03-29: 01:00 (UTC+0) jumps to 03:00 (UTC+2); a daily 01:00 fires
    // when the gap ends, 03:00 local = 01:00 UTC.
    let got = fires(
        "0 1 * * *",
        "Antarctica/Troll",
        "2026-03-28T12:00:00Z",
        "2026-03-30T12:00:00Z",
    );
    assert_eq!(
        got,
        vec![utc("2026-03-29T01:00:00Z"), utc("2026-03-29T23:00:00Z")]
    );
}

#[test]
fn the_fast_path_answers_away_from_offset_changes_and_agrees_with_the_careful_one() {
    // Far from any offset change the first fire is computed with the current offset alone
    // (the common case, and what keeps a fire pass cheap); near one it declines and the
    // careful walk answers.
    let s = schedule("*/15 * * * *", "Europe/Amsterdam");
    let quiet = utc("2026-06-01T12:05:00Z");
    assert_eq!(s.fast_next(quiet), Some(utc("2026-06-01T12:15:00Z")));
    assert_eq!(s.careful_next(quiet), s.fast_next(quiet));
    let daily = schedule("0 9 * * *", "Europe/Amsterdam");
    assert_eq!(
        daily.fast_next(quiet),
        Some(utc("2026-06-02T07:00:00Z")),
        "a day ahead"
    );
    let before_the_change = utc("2026-10-25T00:20:00Z");
    assert_eq!(s.fast_next(before_the_change), None);
    assert_eq!(
        s.careful_next(before_the_change),
        Some(utc("2026-10-25T00:30:00Z"))
    );
}
