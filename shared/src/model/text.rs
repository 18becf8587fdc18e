//! Bounded values parsed at the edge: texts with a length in characters (never U+0000) and
//! integers within a range.

use serde::Serialize;
use utoipa::ToSchema;

/// A text whose length, in characters, lies in `MIN..=MAX`; when `MIN > 0` it must also contain
/// something other than white space. It never contains U+0000 (which Postgres cannot store in
/// `text`; refused on every backend alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BoundedText<const MIN: usize, const MAX: usize>(String);

/// A name or title: 1–200 characters.
pub type Title = BoundedText<1, 200>;
/// A description: up to 10,000 characters.
pub type Description = BoundedText<0, 10_000>;
/// A heartbeat run's summary: up to 10,000 characters.
pub type Summary = BoundedText<0, 10_000>;
/// A trigger label: up to 120 characters.
pub type Label = BoundedText<0, 120>;

impl<const MIN: usize, const MAX: usize> BoundedText<MIN, MAX> {
    /// Parses `value`.
    ///
    /// # Errors
    /// A sentence saying which bound was crossed.
    pub fn parse(value: String) -> Result<Self, String> {
        let len = value.chars().count();
        if len > MAX {
            return Err(format!("must be at most {MAX} characters (got {len})"));
        }
        if value.contains('\0') {
            return Err("must not contain the character U+0000".to_owned());
        }
        if MIN > 0 && value.trim().is_empty() {
            return Err("must not be empty".to_owned());
        }
        if len < MIN {
            return Err(format!("must be at least {MIN} characters (got {len})"));
        }
        Ok(Self(value))
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The characters that do not count as content in a text that must not be blank: exactly
/// those `str::trim` removes (Unicode `White_Space`), as ranges.
const BLANK: [(char, char); 10] = [
    ('\u{9}', '\u{d}'),
    (' ', ' '),
    ('\u{85}', '\u{85}'),
    ('\u{a0}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
];

/// [`BLANK`] as the inside of a regular-expression class, every character written as `\uXXXX`
/// so that every engine reads the published pattern the same way.
fn blank_class() -> String {
    BLANK
        .iter()
        .map(|&(from, to)| {
            if from == to {
                format!("\\u{:04x}", u32::from(from))
            } else {
                format!("\\u{:04x}-\\u{:04x}", u32::from(from), u32::from(to))
            }
        })
        .collect()
}

impl<const MIN: usize, const MAX: usize> utoipa::PartialSchema for BoundedText<MIN, MAX> {
    /// A string of `MIN` to `MAX` characters without U+0000 and, when `MIN > 0`, not blank —
    /// exactly what [`BoundedText::parse`] accepts.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let pattern = if MIN > 0 {
            format!("^[^\\u0000]*[^\\u0000{}][^\\u0000]*$", blank_class())
        } else {
            "^[^\\u0000]*$".to_owned()
        };
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length((MIN > 0).then_some(MIN))
            .max_length(Some(MAX))
            .pattern(Some(pattern))
            .into()
    }
}

impl<const MIN: usize, const MAX: usize> ToSchema for BoundedText<MIN, MAX> {}

impl<const MAX: usize> Default for BoundedText<0, MAX> {
    fn default() -> Self {
        Self(String::new())
    }
}

/// An integer within `MIN..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BoundedInt<const MIN: i64, const MAX: i64>(i32);

/// `catchUpCap`: 1–100.
pub type CatchUpCap = BoundedInt<1, 100>;
/// The default `catchUpCap`.
pub const DEFAULT_CATCH_UP_CAP: CatchUpCap = BoundedInt(25);
/// The default `replayWindowSec`.
pub const DEFAULT_REPLAY_WINDOW: ReplayWindow = BoundedInt(300);
/// `replayWindowSec`: 30–86400.
pub type ReplayWindow = BoundedInt<30, 86_400>;
/// `jitterSec` of a schedule trigger: 0–3600.
pub type JitterSec = BoundedInt<0, 3600>;
/// `runTimeoutSec` of a routine: 60–2,592,000 (30 days).
pub type RunTimeout = BoundedInt<60, 2_592_000>;
/// `pauseAfterFailures` of a routine: 1–100.
pub type PauseAfterFailures = BoundedInt<1, 100>;
/// `pauseNote`: up to 500 characters.
pub type PauseNote = BoundedText<0, 500>;
/// `count` of upcoming fires: 1–100.
pub type UpcomingCount = BoundedInt<1, 100>;

impl<const MIN: i64, const MAX: i64> BoundedInt<MIN, MAX> {
    /// Parses `value`.
    ///
    /// # Errors
    /// A sentence with the allowed range.
    pub fn parse(value: i64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&value) {
            i32::try_from(value)
                .map(Self)
                .map_err(|_| format!("must be from {MIN} to {MAX}"))
        } else {
            Err(format!("must be from {MIN} to {MAX} (got {value})"))
        }
    }

    /// The value.
    #[must_use]
    pub fn get(self) -> i32 {
        self.0
    }
}

#[cfg(test)]
mod text_tests {
    use super::*;
    use crate::model::stored_payload;

    #[test]
    fn the_published_blank_class_is_exactly_what_trim_removes() {
        let listed = |c: char| BLANK.iter().any(|&(from, to)| (from..=to).contains(&c));
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            assert_eq!(c.is_whitespace(), listed(c), "{c:?}");
        }
        assert!(blank_class().starts_with("\\u0009-\\u000d\\u0020"));
    }

    #[test]
    fn bounded_texts_refuse_u0000_and_blank_and_publish_their_bounds() {
        assert!(Title::parse("a\0b".to_owned()).is_err());
        assert!(Title::parse(" \u{3000}\t".to_owned()).is_err());
        assert!(
            Title::parse("\u{feff}".to_owned()).is_ok(),
            "not White_Space"
        );
        assert!(Description::parse(String::new()).is_ok());
        let schema =
            serde_json::to_value(<Title as utoipa::PartialSchema>::schema()).expect("json");
        assert_eq!(
            (schema["minLength"].as_u64(), schema["maxLength"].as_u64()),
            (Some(1), Some(200))
        );
        let schema =
            serde_json::to_value(<Description as utoipa::PartialSchema>::schema()).expect("json");
        assert_eq!(schema["pattern"], "^[^\\u0000]*$");
        assert!(schema.get("minLength").is_none());
    }

    #[test]
    fn payloads_keep_u0000_as_u_fffd_in_strings_and_keys() {
        let payload = serde_json::json!({ "a\u{0}": ["x\u{0}y", { "b": "\u{0}" }], "n": 1 });
        let serde_json::Value::Object(payload) = payload else {
            unreachable!()
        };
        let stored = stored_payload(payload);
        assert_eq!(
            serde_json::Value::Object(stored),
            serde_json::json!({ "a\u{fffd}": ["x\u{fffd}y", { "b": "\u{fffd}" }], "n": 1 })
        );
    }
}
