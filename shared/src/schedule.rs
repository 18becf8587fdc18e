//! Cron expressions, time zones and the fire times of a schedule.
//!
//! [`CronExpression`] accepts exactly the contract's dialect: five fields (minute, hour,
//! day-of-month, month, day-of-week) with lists, ranges, steps, month and weekday names,
//! day-of-week 0–7 (0 and 7 are Sunday), and the macros `@hourly @daily @weekly @monthly
//! @yearly`. Anything else is refused with a sentence naming the field, the value and the
//! allowed range. When both day fields are restricted (neither is `*`), a day matches if either
//! matches.
//!
//! [`Schedule`] turns an expression and a [`TimeZone`] into UTC fire instants. `croner` finds the
//! matching wall-clock times (it is run on a zone-less clock); this module maps each wall-clock
//! time to instants with the contract's daylight-saving rules:
//! - a wall-clock time that does not exist (spring forward) fires once at the first valid
//!   instant after the gap; several such times that shift to the same instant fire once;
//! - a wall-clock time that happens twice (fall back) fires once, at its first occurrence;
//! - except when the hour field is `*` or a step: such patterns keep their real-time cadence, so
//!   times inside a gap are simply absent and a repeated hour fires in both passes.

use std::{fmt, str::FromStr as _};

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset as _, TimeZone as _, Utc};
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

/// A validated cron expression.
#[derive(Clone)]
pub struct CronExpression {
    /// As the user wrote it (trimmed).
    text: String,
    cron: Box<Cron>,
    /// Whether the hour field is `*` or a step (real-time cadence through DST changes).
    cadence: bool,
}

impl fmt::Debug for CronExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronExpression").field(&self.text).finish()
    }
}

impl PartialEq for CronExpression {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value the first name stands for.
    names_from: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
        names_from: 0,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
        ],
        names_from: 1,
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
        names_from: 0,
    },
];

const MACROS: [(&str, &str); 5] = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
];

/// The longest accepted expression.
pub const MAX_CRON_LEN: usize = 200;

impl CronExpression {
    /// Parses `text`.
    ///
    /// # Errors
    /// A sentence saying what is wrong: the field, the value and the allowed range.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.chars().count() > MAX_CRON_LEN {
            return Err(format!("must be at most {MAX_CRON_LEN} characters"));
        }
        let text = text.trim();
        if text.is_empty() {
            return Err("must not be empty".to_owned());
        }
        let expanded = if text.starts_with('@') {
            MACROS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(text))
                .map(|(_, fields)| *fields)
                .ok_or_else(|| {
                    format!(
                        "{text:?} is not a supported macro (use @hourly, @daily, @weekly, @monthly or @yearly)"
                    )
                })?
        } else {
            text
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            let hint = if parts.len() > 5 {
                "; seconds and years are not supported"
            } else {
                ""
            };
            return Err(format!(
                "must have 5 fields (minute hour day-of-month month day-of-week), got {}{hint}",
                parts.len()
            ));
        }
        let mut canonical = Vec::with_capacity(5);
        for (part, field) in parts.iter().zip(&FIELDS) {
            canonical.push(normalise_field(part, field)?);
        }
        let hour = parts[1];
        let cadence = hour == "*" || hour.contains('/');
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .dom_and_dow(false)
            .build();
        let cron = parser
            .parse(&canonical.join(" "))
            .map_err(|e| format!("is not a valid cron expression ({e})"))?;
        let expression = Self {
            text: text.to_owned(),
            cron: Box::new(cron),
            cadence,
        };
        // An expression that names no real date (`0 0 30 2 *`) would never fire.
        let probe = DateTime::from_timestamp(0, 0).unwrap_or_default();
        if expression.next_wall_time(probe.naive_utc()).is_none() {
            return Err("never matches a real date".to_owned());
        }
        Ok(expression)
    }

    /// The expression as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a wall-clock time matches the expression (seconds ignored).
    #[must_use]
    pub fn matches(&self, wall: NaiveDateTime) -> bool {
        let wall = Utc.from_utc_datetime(&wall.with_second(0));
        self.cron.is_time_matching(&wall).unwrap_or(false)
    }

    /// The first matching wall-clock time strictly after `wall` (within about eight years).
    fn next_wall_time(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let wall = Utc.from_utc_datetime(&wall);
        self.cron
            .find_next_occurrence(&wall, false)
            .ok()
            .map(|t| t.naive_utc())
    }
}

impl utoipa::PartialSchema for CronExpression {
    /// A string of at most [`MAX_CRON_LEN`] characters in the `cron` format: five fields or a
    /// macro, as the contract defines them. (Which expressions name a real date is beyond what a
    /// pattern can say: those that never match, such as `0 0 30 2 *`, are 422.)
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::Custom(
                "cron".to_owned(),
            )))
            .min_length(Some(1))
            .max_length(Some(MAX_CRON_LEN))
            .into()
    }
}

impl utoipa::ToSchema for CronExpression {}

impl utoipa::PartialSchema for TimeZone {
    /// One of the IANA names this build knows (exactly those [`TimeZone::parse`] accepts).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())))
            .into()
    }
}

impl utoipa::ToSchema for TimeZone {}

trait WithSecond {
    fn with_second(self, second: u32) -> Self;
}

impl WithSecond for NaiveDateTime {
    fn with_second(self, second: u32) -> Self {
        chrono::Timelike::with_second(&self, second).unwrap_or(self)
    }
}

/// Checks one field and rewrites names as numbers (croner's own name handling replaces text
/// anywhere in the expression, so it only ever sees numbers).
fn normalise_field(part: &str, field: &Field) -> Result<String, String> {
    let name = field.name;
    let mut items = Vec::new();
    for item in part.split(',') {
        if item.is_empty() {
            return Err(format!("{name} field {part:?} has an empty list element"));
        }
        if let Some(c) = item
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '*' | '-' | '/')))
        {
            return Err(format!(
                "{name} field {part:?}: the character {c:?} is not supported"
            ));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("{name} field {part:?}: step {step:?} is not a number"))?;
                if step == 0 || step > field.max {
                    return Err(format!(
                        "{name} field {part:?}: step {step} is out of range 1–{}",
                        field.max
                    ));
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let range = if range == "*" {
            "*".to_owned()
        } else if let Some((from, to)) = range.split_once('-') {
            let from = value(from, field, part)?;
            let to = value(to, field, part)?;
            if from > to {
                return Err(format!(
                    "{name} field {part:?}: range {from}-{to} runs backwards"
                ));
            }
            format!("{from}-{to}")
        } else {
            if step.is_some() {
                return Err(format!(
                    "{name} field {part:?}: a step needs `*` or a range before it, e.g. */15 or 0-30/5"
                ));
            }
            value(range, field, part)?.to_string()
        };
        items.push(match step {
            Some(step) => format!("{range}/{step}"),
            None => range,
        });
    }
    Ok(items.join(","))
}

fn value(text: &str, field: &Field, part: &str) -> Result<u32, String> {
    let name = field.name;
    if let Ok(n) = text.parse::<u32>() {
        if n < field.min || n > field.max {
            return Err(format!(
                "{name} field {part:?}: value {n} is out of range {}–{}",
                field.min, field.max
            ));
        }
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    match field.names.iter().position(|n| *n == upper) {
        Some(index) => Ok(field.names_from + u32::try_from(index).unwrap_or(0)),
        None if field.names.is_empty() => Err(format!(
            "{name} field {part:?}: {text:?} is not a number from {} to {}",
            field.min, field.max
        )),
        None => Err(format!(
            "{name} field {part:?}: {text:?} is not a number from {} to {} or one of {}",
            field.min,
            field.max,
            field.names.join(", ")
        )),
    }
}

/// An IANA time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    /// UTC.
    pub const UTC: Self = Self(chrono_tz::Tz::UTC);

    /// Parses an IANA name such as `Europe/Amsterdam`.
    ///
    /// # Errors
    /// A sentence naming the unknown zone (and the right spelling when only the case differs).
    pub fn parse(name: &str) -> Result<Self, String> {
        if let Ok(tz) = chrono_tz::Tz::from_str(name) {
            return Ok(Self(tz));
        }
        let suggestion = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(name))
            .map(|tz| format!("; did you mean {:?}?", tz.name()))
            .unwrap_or_default();
        Err(format!(
            "{name:?} is not a known IANA time zone (e.g. \"UTC\", \"Europe/Amsterdam\"){suggestion}"
        ))
    }

    /// The IANA name.
    #[must_use]
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The wall-clock time of `instant` in this zone.
    #[must_use]
    pub fn wall(self, instant: DateTime<Utc>) -> NaiveDateTime {
        instant.with_timezone(&self.0).naive_local()
    }

    /// `instant` as RFC 3339 in this zone's local time, with its offset
    /// (`2026-12-07T09:00:00+01:00`).
    #[must_use]
    pub fn local_rfc3339(self, instant: DateTime<Utc>) -> String {
        instant
            .with_timezone(&self.0)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    }
}

/// A cron expression in a time zone: the fire times of a schedule trigger.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: CronExpression,
    zone: TimeZone,
}

/// How far around a wall-clock time daylight saving can move an instant (the largest shift in
/// the time-zone database is two hours; twice that is a safe margin).
const DST_MARGIN: Duration = Duration::hours(4);

impl Schedule {
    /// The schedule of `expression` in `zone`.
    #[must_use]
    pub fn new(expression: CronExpression, zone: TimeZone) -> Self {
        Self { expression, zone }
    }

    /// The expression.
    #[must_use]
    pub fn expression(&self) -> &CronExpression {
        &self.expression
    }

    /// The zone.
    #[must_use]
    pub fn zone(&self) -> TimeZone {
        self.zone
    }

    /// The first fire instant strictly after `after`, or `None` when there is none within about
    /// eight years.
    #[must_use]
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.fast_next(after).or_else(|| self.careful_next(after))
    }

    /// The fire instants strictly after `after`, in order.
    pub fn fires_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(after), move |t| self.next_after(*t))
    }

    /// The usual case: no offset change anywhere near `after` or the candidate, so a wall-clock
    /// time maps to exactly one instant with the current offset.
    fn fast_next(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = self.zone.0;
        let offset = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
        let current = offset(after);
        let wall = self.expression.next_wall_time(self.zone.wall(after))?;
        let candidate = wall - current;
        let candidate = Utc.from_utc_datetime(&candidate);
        let settled = candidate - after < Duration::days(7)
            && offset(after - DST_MARGIN) == current
            && offset(candidate + DST_MARGIN) == current;
        settled.then_some(candidate)
    }

    /// Walks the matching wall-clock times from a margin before `after`, maps each to its
    /// instants with the daylight-saving rules, and keeps the earliest instant after `after`.
    fn careful_next(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = self.zone.wall(after) - DST_MARGIN;
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        // Each step moves to a later matching wall-clock time; the bound only guards against a
        // pathological zone.
        for _ in 0..100_000 {
            let Some(next) = self.expression.next_wall_time(wall) else {
                break;
            };
            wall = next;
            if let Some((_, best_wall)) = best
                && wall > best_wall + DST_MARGIN
            {
                break;
            }
            for instant in self.instants(wall) {
                if instant > after && best.is_none_or(|(b, _)| instant < b) {
                    best = Some((instant, wall));
                }
            }
        }
        best.map(|(instant, _)| instant)
    }

    /// The instants a matching wall-clock time fires at.
    fn instants(&self, wall: NaiveDateTime) -> Vec<DateTime<Utc>> {
        let tz = self.zone.0;
        match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => vec![t.to_utc()],
            LocalResult::Ambiguous(first, second) if self.expression.cadence => {
                vec![first.to_utc(), second.to_utc()]
            }
            LocalResult::Ambiguous(first, _) => vec![first.to_utc()],
            LocalResult::None if self.expression.cadence => Vec::new(),
            LocalResult::None => self.gap_end(wall).into_iter().collect(),
        }
    }

    /// The first valid instant after the gap that `wall` falls in.
    fn gap_end(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        let tz = self.zone.0;
        let mut probe = wall;
        for _ in 0..(48 * 60) {
            probe += Duration::minutes(1);
            match tz.from_local_datetime(&probe) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => return Some(t.to_utc()),
                LocalResult::None => {}
            }
        }
        None
    }
}

mod describe;

#[cfg(test)]
pub(crate) mod tests;
