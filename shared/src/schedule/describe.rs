//! A cron expression in plain language, for people reading a list of routines: "weekdays at
//! 09:00", "every 15 minutes", "on day 1 of the month at 00:00". Common shapes get a sentence;
//! anything else is described field by field, so the description is never wrong, only plainer
//! or more literal.

use super::{CronExpression, FIELDS, MACROS};

/// One field of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `*`.
    Any,
    /// `*/n`.
    Every(u32),
    /// Single values only (`1,15`), in the order written.
    Values(Vec<u32>),
    /// One range `a-b`.
    Range(u32, u32),
    /// Anything else (ranges with steps, mixed lists): shown as written.
    Other(String),
}

/// The value of `token` (a number, or a name of the field) in the field `index`.
fn value(token: &str, index: usize) -> Option<u32> {
    if let Ok(n) = token.parse() {
        return Some(n);
    }
    let field = &FIELDS[index];
    let at = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(token))?;
    Some(field.names_from + u32::try_from(at).ok()?)
}

fn part(text: &str, index: usize) -> Part {
    if text == "*" {
        return Part::Any;
    }
    if let Some(step) = text.strip_prefix("*/").and_then(|n| n.parse().ok()) {
        return Part::Every(step);
    }
    if let Some((a, b)) = text.split_once('-')
        && !text.contains(['/', ','])
        && let (Some(a), Some(b)) = (value(a, index), value(b, index))
    {
        return Part::Range(a, b);
    }
    let values: Option<Vec<u32>> = text.split(',').map(|t| value(t, index)).collect();
    match values {
        Some(values) => Part::Values(values),
        None => Part::Other(text.to_owned()),
    }
}

const WEEKDAYS: [&str; 8] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// `a`, `a and b`, `a, b and c`.
fn listed(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn name_of(names: &[&str], value: u32, first: u32) -> String {
    value
        .checked_sub(first)
        .and_then(|i| names.get(usize::try_from(i).ok()?))
        .map_or_else(|| value.to_string(), |name| (*name).to_owned())
}

fn clock(hour: u32, minute: u32) -> String {
    format!("{hour:02}:{minute:02}")
}

/// The time of day: `at 09:00`, `every 15 minutes`, `every hour at :05`…
fn time_phrase(minute: &Part, hour: &Part) -> String {
    match (minute, hour) {
        (Part::Any, Part::Any) => "every minute".to_owned(),
        (Part::Every(n), Part::Any) => format!("every {n} minutes"),
        (Part::Values(m), Part::Any) if m == &[0] => "every hour".to_owned(),
        (Part::Values(m), Part::Any) => {
            let at: Vec<String> = m.iter().map(|m| format!(":{m:02}")).collect();
            format!("every hour at {}", listed(&at))
        }
        (Part::Values(m), Part::Every(n)) if m.len() == 1 => {
            format!("every {n} hours at :{:02}", m[0])
        }
        (Part::Values(m), Part::Values(h)) if m.len() * h.len() <= 6 => {
            let mut times: Vec<(u32, u32)> = h
                .iter()
                .flat_map(|h| m.iter().map(move |m| (*h, *m)))
                .collect();
            times.sort_unstable();
            let at: Vec<String> = times.iter().map(|(h, m)| clock(*h, *m)).collect();
            format!("at {}", listed(&at))
        }
        (Part::Values(m), Part::Range(a, b)) if m.len() == 1 => {
            format!("every hour from {} to {}", clock(*a, m[0]), clock(*b, m[0]))
        }
        (Part::Every(n), Part::Range(a, b)) => {
            format!(
                "every {n} minutes from {} to {}",
                clock(*a, 0),
                clock(*b, 59)
            )
        }
        (Part::Any, Part::Range(a, b)) => {
            format!("every minute from {} to {}", clock(*a, 0), clock(*b, 59))
        }
        _ => format!(
            "at minute {} of hour {}",
            literal(minute, "*"),
            literal(hour, "*")
        ),
    }
}

/// A part as cron would write it.
fn literal(part: &Part, any: &str) -> String {
    match part {
        Part::Any => any.to_owned(),
        Part::Every(n) => format!("*/{n}"),
        Part::Values(values) => values
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        Part::Range(a, b) => format!("{a}-{b}"),
        Part::Other(text) => text.clone(),
    }
}

/// The days of the week: `on weekdays`, `on Monday and Friday`, `Monday to Thursday`.
fn weekday_phrase(part: &Part) -> String {
    let normalised = |d: u32| if d == 7 { 0 } else { d };
    match part {
        Part::Range(1, 5) => "on weekdays".to_owned(),
        Part::Range(a, b) => format!(
            "from {} to {}",
            name_of(&WEEKDAYS, *a, 0),
            name_of(&WEEKDAYS, *b, 0)
        ),
        Part::Values(days) => {
            let mut set: Vec<u32> = days.iter().map(|d| normalised(*d)).collect();
            set.sort_unstable();
            set.dedup();
            match set.as_slice() {
                [0, 6] => "on weekends".to_owned(),
                [1, 2, 3, 4, 5] => "on weekdays".to_owned(),
                _ => {
                    let names: Vec<String> =
                        set.iter().map(|d| name_of(&WEEKDAYS, *d, 0)).collect();
                    format!("on {}", listed(&names))
                }
            }
        }
        Part::Every(n) => format!("every {n} days of the week from Sunday"),
        Part::Any => String::new(),
        Part::Other(text) => format!("on days of the week {text}"),
    }
}

/// The days of the month: `on day 1 of the month`, `on days 1 and 15 of the month`.
fn month_day_phrase(part: &Part) -> String {
    match part {
        Part::Any => String::new(),
        Part::Values(days) if days.len() == 1 => format!("on day {} of the month", days[0]),
        Part::Values(days) => {
            let days: Vec<String> = days.iter().map(u32::to_string).collect();
            format!("on days {} of the month", listed(&days))
        }
        Part::Range(a, b) => format!("on days {a} to {b} of the month"),
        Part::Every(n) => format!("every {n} days of the month from day 1"),
        Part::Other(text) => format!("on days {text} of the month"),
    }
}

fn month_phrase(part: &Part) -> String {
    match part {
        Part::Any => String::new(),
        Part::Values(months) => {
            let names: Vec<String> = months.iter().map(|m| name_of(&MONTHS, *m, 1)).collect();
            format!("in {}", listed(&names))
        }
        Part::Range(a, b) => format!(
            "from {} to {}",
            name_of(&MONTHS, *a, 1),
            name_of(&MONTHS, *b, 1)
        ),
        Part::Every(n) => format!("every {n} months from January"),
        Part::Other(text) => format!("in months {text}"),
    }
}

impl CronExpression {
    /// The expression in plain language (in its own time zone, which the caller names).
    #[must_use]
    pub fn describe(&self) -> String {
        let text = self.as_str();
        let expanded = MACROS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map_or(text, |(_, fields)| *fields);
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return text.to_owned();
        };
        let parts: Vec<Part> = [minute, hour, day, month, weekday]
            .iter()
            .enumerate()
            .map(|(i, f)| part(f, i))
            .collect();
        let time = time_phrase(&parts[0], &parts[1]);
        // When both day fields are restricted, a day matches if either does.
        let days = match (&parts[2], &parts[4]) {
            (Part::Any, Part::Any) => String::new(),
            (Part::Any, weekday) => weekday_phrase(weekday),
            (day, Part::Any) => month_day_phrase(day),
            (day, weekday) => format!("{} or {}", month_day_phrase(day), weekday_phrase(weekday)),
        };
        let mut phrase = match (days.is_empty(), time.starts_with("every")) {
            (true, true) => time,
            (true, false) => format!("every day {time}"),
            (false, true) => format!("{time}, {days}"),
            (false, false) => format!("{days} {time}"),
        };
        let months = month_phrase(&parts[3]);
        if !months.is_empty() {
            phrase = format!("{phrase}, {months}");
        }
        // "weekdays at 09:00" reads better than "on weekdays at 09:00".
        phrase.replace("on weekdays", "weekdays")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(text: &str) -> String {
        CronExpression::parse(text).expect("valid").describe()
    }

    #[test]
    fn common_shapes_read_as_sentences() {
        let cases = [
            ("* * * * *", "every minute"),
            ("*/15 * * * *", "every 15 minutes"),
            ("0 * * * *", "every hour"),
            ("@hourly", "every hour"),
            ("5,35 * * * *", "every hour at :05 and :35"),
            ("30 */6 * * *", "every 6 hours at :30"),
            ("0 9 * * *", "every day at 09:00"),
            ("@daily", "every day at 00:00"),
            ("0 9 * * 1-5", "weekdays at 09:00"),
            ("0 9 * * MON-FRI", "weekdays at 09:00"),
            ("30 8 * * 1,3,5", "on Monday, Wednesday and Friday at 08:30"),
            ("0 10 * * 0,6", "on weekends at 10:00"),
            ("0 10 * * SAT,SUN", "on weekends at 10:00"),
            ("0 9,13,17 * * *", "every day at 09:00, 13:00 and 17:00"),
            ("0 0 1 * *", "on day 1 of the month at 00:00"),
            ("@yearly", "on day 1 of the month at 00:00, in January"),
            ("0 0 1,15 * *", "on days 1 and 15 of the month at 00:00"),
            (
                "*/10 9-17 * * 1-5",
                "every 10 minutes from 09:00 to 17:59, weekdays",
            ),
            ("0 9-17 * * *", "every hour from 09:00 to 17:00"),
            (
                "0 12 13 * 5",
                "on day 13 of the month or on Friday at 12:00",
            ),
            ("0 7 * 6-8 *", "every day at 07:00, from June to August"),
            ("0 7 * * 7", "on Sunday at 07:00"),
        ];
        for (expression, expected) in cases {
            assert_eq!(described(expression), expected, "{expression}");
        }
    }

    #[test]
    fn other_shapes_are_described_field_by_field() {
        assert_eq!(
            described("1-10/3 2-4/2 * * *"),
            "every day at minute 1-10/3 of hour 2-4/2"
        );
    }
}
